/*
 * sandbox.c: the sandboxes the kernel enforces (issue 16), and nothing
 * else: the seccomp allowlists of the pre-login child and of the user's
 * process (default action: kill the process; sbxgen.c has their rules
 * and compiles them at build time into sbx_bpf.h), the Landlock
 * ruleset of the user's process (best effort by ABI version), the one log
 * line that says which are on, --no-sandbox, and the test-only exploit
 * hook of the -DPOP3D_EXPLOIT build.  auth.c calls in after each identity
 * drop: sbx_prelogin() in the pre-login child, sbx_user() in the user's
 * process and in the non-root single process, before the first byte of
 * the client after login is read.
 *
 * The sanitizer build (ASan, UBSan; LSan in the non-root mode): the
 * runtime is told before the filter goes on (__sanitizer_sandbox_on_notify:
 * it caches /proc/self/maps for its reports); each thread's sigaltstack is
 * allowed; what a report tries besides (readlink and open of /proc/self,
 * isatty's ioctl, the pipe to an external symbolizer, and in the pre-login
 * child openat) fails with EACCES instead of killing, so the report is
 * printed whole, its frames as module+offset; and LeakSanitizer is turned
 * off in a sandboxed process (__lsan_is_turned_off below): its exit check
 * needs clone, ptrace and /proc, which are exactly what the sandboxes take
 * away.  tests/test_sandbox.py checks such a report from each process.
 */

#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/ptrace.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <sys/wait.h>

#include <netinet/in.h>
#include <arpa/inet.h>

#include <errno.h>
#include <fcntl.h>
#include <linux/landlock.h>
#include <sched.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <syslog.h>
#include <unistd.h>

#include "pop3d.h"

/* An AddressSanitizer build (gcc says so one way, clang another). */
#if defined(__SANITIZE_ADDRESS__)
#define SBX_ASAN
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define SBX_ASAN
#endif
#endif

#ifdef SBX_ASAN
#include <sanitizer/common_interface_defs.h>
#endif

/* The seccomp programs (sbxgen.c), those of the sanitizer build if so. */
#include "sbx_bpf.h"
#define SBX_BPF_N	(SBX_BPF_USER_N > SBX_BPF_PRELOGIN_N ? \
	SBX_BPF_USER_N : SBX_BPF_PRELOGIN_N)	/* the longer's length */

/* Landlock rights of later ABIs than linux-libc-dev 6.1 names. */
#ifndef LANDLOCK_ACCESS_FS_TRUNCATE
#define LANDLOCK_ACCESS_FS_TRUNCATE	(1ULL << 14)	/* ABI 3 */
#endif
#ifndef LANDLOCK_ACCESS_FS_IOCTL_DEV
#define LANDLOCK_ACCESS_FS_IOCTL_DEV	(1ULL << 15)	/* ABI 5 */
#endif
#define SBX_LL_NET_TCP		(3ULL)		/* ABI 4: bind, connect TCP */
#define SBX_LL_SCOPE		(3ULL)		/* ABI 6: abstract unix, signal */

/* struct landlock_ruleset_attr as ABI 6 has it (its size tells the ABI). */
struct sbx_ll_attr {
	uint64_t	fs;
	uint64_t	net;
	uint64_t	scoped;
};

/* The Landlock rights of each enum sbx_access (pop3d.h). */
#define SBX_LL_RW	(LANDLOCK_ACCESS_FS_READ_FILE | \
	LANDLOCK_ACCESS_FS_WRITE_FILE | LANDLOCK_ACCESS_FS_TRUNCATE)
#define SBX_LL_ENTRIES	(LANDLOCK_ACCESS_FS_MAKE_REG | \
	LANDLOCK_ACCESS_FS_REMOVE_FILE | LANDLOCK_ACCESS_FS_READ_DIR)
/* The index cache (cache.c): read, write a new file, exchange its name
 * with the old one's, remove the old one. */
#define SBX_LL_FILES	(LANDLOCK_ACCESS_FS_READ_FILE | \
	LANDLOCK_ACCESS_FS_WRITE_FILE | LANDLOCK_ACCESS_FS_MAKE_REG | \
	LANDLOCK_ACCESS_FS_REMOVE_FILE)

/* Set once a filter is on: LeakSanitizer stays out (see the top). */
static int	sbx_on;

size_t		sbx_program(int, struct sock_filter *);
static void	sbx_seccomp(int);
static int	sbx_landlock(const struct sbx_rule *, size_t, const char **);
static void	sbx_ll_rule(int, const char *, uint64_t);
static void	sbx_ll_fd(int, int, uint64_t);
#ifdef POP3D_EXPLOIT
static void	sbx_exploit(const char *);
static long	sbx_exploit_file(const char *, const char *);
#endif

/*
 * The program of one process (user: the user's process, else the
 * pre-login child) as sbxgen.c built it, with this process's pid put in
 * its places, into f (SBX_BPF_N instructions); returns its length.
 */
size_t
sbx_program(int user, struct sock_filter *f)
{
	const struct sock_filter	*prog = sbx_bpf_prelogin;
	const unsigned short		*pid = sbx_bpf_prelogin_pid;
	size_t				 n = SBX_BPF_PRELOGIN_N;
	size_t				 npid = SBX_BPF_PRELOGIN_NPID;
	size_t				 i;

	if (user) {
		prog = sbx_bpf_user;
		n = SBX_BPF_USER_N;
		pid = sbx_bpf_user_pid;
		npid = SBX_BPF_USER_NPID;
	}
	memcpy(f, prog, n * sizeof(*f));
	for (i = 0; i < npid; i++) {
		if (f[pid[i]].k != SBX_PID_PLACEHOLDER)
			fatalx("seccomp program: no pid at %u", pid[i]);
		f[pid[i]].k = (uint32_t)getpid();
	}
	return n;
}

/*
 * Loads the allowlist of one process (user: the user's process, else the
 * pre-login child): sbxgen.c's program, with seccomp(2).  Anything else
 * kills the process (SIGSYS); sbxgen.c says what each allows.
 */
static void
sbx_seccomp(int user)
{
	struct sock_filter	f[SBX_BPF_N];
	struct sock_fprog	prog;

	prog.len = (unsigned short)sbx_program(user, f);
	prog.filter = f;
	if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) == -1)
		fatal("prctl(PR_SET_NO_NEW_PRIVS)");
#ifdef SBX_ASAN
	__sanitizer_sandbox_on_notify(NULL);
#endif
	sbx_on = 1;
	if (syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, &prog) == -1)
		fatal("seccomp filter not loaded (--no-sandbox runs without "
		    "it)");
}

/* Adds the rule "the inode of fd: access" to the ruleset rs. */
static void
sbx_ll_fd(int rs, int fd, uint64_t access)
{
	struct landlock_path_beneath_attr pb;

	memset(&pb, 0, sizeof(pb));
	pb.allowed_access = access;
	pb.parent_fd = fd;
	if (syscall(SYS_landlock_add_rule, rs, LANDLOCK_RULE_PATH_BENEATH,
	    &pb, 0) == -1)
		fatal("landlock_add_rule");
}

/* Adds the rule "path: access" to the ruleset rs; a missing path is none. */
static void
sbx_ll_rule(int rs, const char *path, uint64_t access)
{
	int	fd;

	if ((fd = open(path, O_PATH | O_CLOEXEC)) == -1)
		return;
	sbx_ll_fd(rs, fd, access);
	(void)close(fd);
}

/*
 * The user's files: the n rules of the caller (maildrop.c's md_prepare():
 * the mailbox, its journals and USER.lock by inode, in the spool
 * directory only the making and removing of names, and the index cache's
 * directory), and /sys's count of
 * CPUs to read (the index and hash threads ask); nothing else on the
 * filesystem, no TCP (ABI 4), no abstract sockets and no signals out of
 * the process (ABI 6).  Returns the ABI used, 0 if the kernel has none
 * (*why says why).
 */
static int
sbx_landlock(const struct sbx_rule *rule, size_t n, const char **why)
{
	static const uint64_t ll[] = { LANDLOCK_ACCESS_FS_READ_FILE,
		SBX_LL_RW, SBX_LL_ENTRIES, SBX_LL_FILES };
	struct sbx_ll_attr a;
	size_t		 i, size = sizeof(a.fs);
	long		 abi;
	int		 rs;

	abi = syscall(SYS_landlock_create_ruleset, NULL, 0,
	    LANDLOCK_CREATE_RULESET_VERSION);
	if (abi < 1) {
		/* EPERM: a seccomp filter around pop3d refuses it (a
		 * service manager's). */
		*why = errno == EOPNOTSUPP ? "disabled at boot" :
		    errno == ENOSYS ? "not in this kernel" : strerror(errno);
		return 0;
	}
	memset(&a, 0, sizeof(a));
	a.fs = (LANDLOCK_ACCESS_FS_MAKE_SYM << 1) - 1;	/* ABI 1 */
	if (abi >= 2)
		a.fs |= LANDLOCK_ACCESS_FS_REFER;
	if (abi >= 3)
		a.fs |= LANDLOCK_ACCESS_FS_TRUNCATE;
	if (abi >= 5)
		a.fs |= LANDLOCK_ACCESS_FS_IOCTL_DEV;
	if (abi >= 4) {
		a.net = SBX_LL_NET_TCP;
		size = offsetof(struct sbx_ll_attr, scoped);
	}
	if (abi >= 6) {
		a.scoped = SBX_LL_SCOPE;
		size = sizeof(a);
	}
	if ((rs = (int)syscall(SYS_landlock_create_ruleset, &a, size, 0)) ==
	    -1)
		fatal("landlock_create_ruleset");
	for (i = 0; i < n; i++)
		sbx_ll_fd(rs, rule[i].fd, ll[rule[i].access] & a.fs);
	sbx_ll_rule(rs, "/sys/devices/system/cpu/online",
	    LANDLOCK_ACCESS_FS_READ_FILE);
	if (syscall(SYS_landlock_restrict_self, rs, 0) == -1)
		fatal("landlock_restrict_self");
	(void)close(rs);
	return (int)abi;
}

/* The pre-login child, after its chroot and identity drop. */
void
sbx_prelogin(void)
{
	if (opt.sandbox)
		sbx_seccomp(0);
#ifdef POP3D_EXPLOIT
	sbx_exploit("prelogin");
#endif
}

/*
 * The user's process (and the non-root single process), after its
 * identity drop and before it reads the client after login: Landlock
 * with the n rules, then seccomp; logs once what is on.
 */
void
sbx_user(struct sbx_rule *rule, size_t n)
{
	const char	*why = NULL;
	size_t		 i;
	int		 abi;

	if (!opt.sandbox) {
		pop_log(LOG_INFO, "sandbox: off (--no-sandbox)");
	} else {
		if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) == -1)
			fatal("prctl(PR_SET_NO_NEW_PRIVS)");
		abi = sbx_landlock(rule, n, &why);
		if (abi > 0)
			pop_log(LOG_INFO, "sandbox: seccomp, Landlock ABI %d",
			    abi);
		else
			pop_log(LOG_INFO, "sandbox: seccomp; no Landlock "
			    "(%s)", why);
		sbx_seccomp(1);
	}
	for (i = 0; i < n; i++)
		(void)close(rule[i].fd);
#ifdef POP3D_EXPLOIT
	sbx_exploit("user");
#endif
}

#ifdef SBX_ASAN
int	__lsan_is_turned_off(void);

/* LeakSanitizer's exit check cannot run inside the filter (see the top). */
int
__lsan_is_turned_off(void)
{
	return sbx_on;
}
#endif

#ifdef POP3D_EXPLOIT
/*
 * The test-only exploit hook (tests/test_sandbox.py): in the process
 * named by POP3D_EXPLOIT_IN ("prelogin" or "user"), tries what
 * POP3D_EXPLOIT names (passwd, mailbox, connect, fork, mmapexec,
 * mprotexec, exec, ptrace, asan, and read, write, create: see
 * sbx_exploit_file()), as a hijacked process would, and logs
 * "exploit WHO WHAT: ok" or the error; a killed process logs nothing.
 * POP3D_EXPLOIT_ARG: the file path, TCP port or pid of the attack.
 */
static void
sbx_exploit(const char *who)
{
	const char		*in = getenv("POP3D_EXPLOIT_IN");
	const char		*what = getenv("POP3D_EXPLOIT");
	const char		*arg = getenv("POP3D_EXPLOIT_ARG");
	struct sockaddr_in	 sin;
	volatile size_t		 past = 1;
	char			*p;
	uintptr_t		 addr;
	long			 r = -1;
	int			 st;

	if (in == NULL || what == NULL || strcmp(in, who) != 0)
		return;
	errno = 0;
	if (arg != NULL && (strcmp(what, "read") == 0 ||
	    strcmp(what, "write") == 0 || strcmp(what, "create") == 0))
		r = sbx_exploit_file(what, arg);
	else if (strcmp(what, "passwd") == 0)
		r = open("/etc/passwd", O_RDONLY | O_CLOEXEC);
	else if (strcmp(what, "mailbox") == 0 && arg != NULL)
		r = open(arg, O_RDONLY | O_CLOEXEC);
	else if (strcmp(what, "connect") == 0 && arg != NULL) {
		r = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
		memset(&sin, 0, sizeof(sin));
		sin.sin_family = AF_INET;
		sin.sin_port = htons((uint16_t)atoi(arg));
		sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
		if (r != -1)
			r = connect((int)r, (struct sockaddr *)&sin,
			    sizeof(sin));
	} else if (strcmp(what, "fork") == 0) {
		if ((r = fork()) == 0)
			_exit(0);
	} else if (strcmp(what, "mmapexec") == 0)
		r = mmap(NULL, 4096, PROT_READ | PROT_EXEC, MAP_PRIVATE |
		    MAP_ANONYMOUS, -1, 0) == MAP_FAILED ? -1 : 0;
	else if (strcmp(what, "mprotexec") == 0)
		r = mprotect((void *)((uintptr_t)&sbx_on & ~(uintptr_t)4095),
		    4096, PROT_READ | PROT_WRITE | PROT_EXEC);
	else if (strcmp(what, "exec") == 0)
		r = execl("/bin/sh", "sh", "-c", "echo exploit exec: ran >&2",
		    (char *)NULL);
	else if (strcmp(what, "ptrace") == 0 && arg != NULL) {
		r = ptrace(PTRACE_ATTACH, (pid_t)atoi(arg), NULL, NULL);
		if (r == 0) {
			(void)waitpid((pid_t)atoi(arg), &st, __WALL);
			(void)ptrace(PTRACE_DETACH, (pid_t)atoi(arg), NULL,
			    NULL);
		}
	} else if (strcmp(what, "asan") == 0) {
		/* A read after free, through an address gcc does not track. */
		p = calloc(8, 1);
		addr = (uintptr_t)p + past;
		free(p);
		r = p != NULL ? *(volatile char *)addr : -1;
	}
	pop_log(LOG_NOTICE, "exploit %s %s: %s", who, what,
	    r >= 0 ? "ok" : strerror(errno));
}

/*
 * The file attacks of the exploit hook on path: read its first octet,
 * append an octet to it ("write"), or make it and write and read it back
 * ("create").  0 when all of it worked, else -1 with errno.
 */
static long
sbx_exploit_file(const char *what, const char *path)
{
	static const char	 mark[] = "pop3d exploit";
	char			 buf[sizeof(mark)];
	ssize_t			 n = -1;
	int			 fd, e;

	if (strcmp(what, "read") == 0)
		fd = open(path, O_RDONLY | O_CLOEXEC);
	else if (strcmp(what, "write") == 0)
		fd = open(path, O_WRONLY | O_APPEND | O_CLOEXEC);
	else
		fd = open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	if (fd == -1)
		return -1;
	if (strcmp(what, "read") == 0)
		n = read(fd, buf, 1) == 1 ? 0 : -1;
	else if (strcmp(what, "write") == 0)
		n = write(fd, "!", 1) == 1 ? 0 : -1;
	else if (write(fd, mark, sizeof(mark)) == (ssize_t)sizeof(mark) &&
	    pread(fd, buf, sizeof(buf), 0) == (ssize_t)sizeof(buf)) {
		n = memcmp(buf, mark, sizeof(mark)) == 0 ? 0 : -1;
		errno = n == 0 ? 0 : EIO;
	}
	e = errno;
	(void)close(fd);
	errno = e;
	return (long)n;
}
#endif
