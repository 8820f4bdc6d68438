/*
 * sbxgen.c: the seccomp allowlists of sandbox.c (issue 16), compiled at
 * build time.  libseccomp turns the rules into a BPF program here, once;
 * the Makefile runs this tool to write sbx_bpf.h, and sandbox.c loads
 * the program with seccomp(2) and no libseccomp (compiling the rules
 * cost every session about 0.3 ms per process, BENCH.md "Cost of a tiny
 * session").  The program is the one libseccomp builds for this machine's
 * architecture, its check of the architecture included, with the system
 * calls in a binary tree (SCMP_FLTATR_CTL_OPTIMIZE 2): the kernel runs
 * the program for every system call number when it loads it (its cache
 * of always-allowed calls), and a chain of ~100 comparisons made that
 * cost 0.1 ms in the user's process.
 *
 * One run-time value is in the rules: the process's own pid (kill and
 * tgkill of itself).  The tool builds each program twice, with two
 * placeholder pids, and writes where they differ: sandbox.c puts
 * getpid() there.  Every other instruction must be the same in both
 * builds, or the tool fails.
 *
 *	build/sbxgen > sbx_bpf.h
 *
 * tests/unit/test_sbxbpf.c builds the filter again with the real pid and
 * compares it with what sandbox.c would load.
 */

#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/types.h>

#include <errno.h>
#include <linux/filter.h>
#include <sched.h>
#include <seccomp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* The placeholder pids: above PID_MAX_LIMIT (2^22), below 2^31. */
#define SBX_PID_A	0x3ffffffeU
#define SBX_PID_B	0x3fffffffU

/*
 * Both processes: talk to the client and the monitor, memory, time, the
 * signal mask and actions, logging (-d to stderr, or the syslog socket
 * already open), exit; the ids (harmless; the tests' LD_PRELOAD shim asks).
 * mmap and mprotect never make memory executable.
 */
static const int sbx_base[] = {
	SCMP_SYS(read), SCMP_SYS(write), SCMP_SYS(readv), SCMP_SYS(writev),
	SCMP_SYS(poll), SCMP_SYS(ppoll), SCMP_SYS(close), SCMP_SYS(sendto),
	SCMP_SYS(recvfrom), SCMP_SYS(fcntl), SCMP_SYS(fstat),
	SCMP_SYS(newfstatat), SCMP_SYS(brk), SCMP_SYS(munmap),
	SCMP_SYS(mremap), SCMP_SYS(madvise), SCMP_SYS(futex),
	SCMP_SYS(clock_gettime), SCMP_SYS(clock_nanosleep),
	SCMP_SYS(nanosleep), SCMP_SYS(gettimeofday), SCMP_SYS(getpid),
	SCMP_SYS(gettid), SCMP_SYS(getuid), SCMP_SYS(geteuid),
	SCMP_SYS(getgid), SCMP_SYS(getegid), SCMP_SYS(getrandom),
	SCMP_SYS(rt_sigreturn), SCMP_SYS(rt_sigaction),
	SCMP_SYS(rt_sigprocmask), SCMP_SYS(restart_syscall), SCMP_SYS(exit),
	SCMP_SYS(exit_group),
};

/*
 * The user's process besides: the mailbox, its locks (fcntl, flock, the
 * dotlock's link, kill(pid, 0) of its owner, fstatfs), the update journal and
 * its renames, the hash and index threads (clone with CLONE_THREAD only;
 * clone3, whose flags a filter cannot see, says ENOSYS and glibc falls
 * back to clone), gethostname (uname) for the dotlock, and a new syslog
 * connection (socket AF_UNIX, connect) if syslogd restarted.
 */
static const int sbx_user_calls[] = {
	SCMP_SYS(openat), SCMP_SYS(pread64), SCMP_SYS(pwrite64),
	SCMP_SYS(lseek), SCMP_SYS(ftruncate), SCMP_SYS(fsync),
	SCMP_SYS(fdatasync), SCMP_SYS(sync_file_range),
	SCMP_SYS(copy_file_range), SCMP_SYS(flock), SCMP_SYS(rename),
	SCMP_SYS(renameat), SCMP_SYS(renameat2), SCMP_SYS(unlink),
	SCMP_SYS(unlinkat), SCMP_SYS(link), SCMP_SYS(linkat),
	SCMP_SYS(utimensat), SCMP_SYS(lstat), SCMP_SYS(stat), SCMP_SYS(statx),
	SCMP_SYS(uname), SCMP_SYS(set_robust_list), SCMP_SYS(rseq),
	SCMP_SYS(sched_getaffinity), SCMP_SYS(sched_yield),
	SCMP_SYS(fadvise64), SCMP_SYS(connect),
	SCMP_SYS(fstatfs),
};

/*
 * The sanitizer build's (see sandbox.c): each thread's alternate signal
 * stack; and what its reports try and can do without: EACCES, not SIGSYS.
 */
static const int sbx_san_calls[] = {
	SCMP_SYS(sigaltstack),
};
static const int sbx_san_refused[] = {
	SCMP_SYS(readlink), SCMP_SYS(open), SCMP_SYS(ioctl), SCMP_SYS(pipe2),
	SCMP_SYS(pipe),
};

#define nitems(a)	(sizeof(a) / sizeof((a)[0]))

/* A program: at most BPF_MAXINSNS instructions, as the kernel takes. */
struct sbx_prog {
	struct sock_filter	f[BPF_MAXINSNS];
	size_t			n;
};

int	sbx_build(int, int, uint32_t, struct sbx_prog *);

/* One rule, or -1 (a filter with a hole is not made). */
static int
sbx_add(scmp_filter_ctx ctx, uint32_t action, int sys, unsigned int n,
    const struct scmp_arg_cmp *cmp)
{
	int	r;

	if ((r = seccomp_rule_add_array(ctx, action, sys, n, cmp)) != 0) {
		(void)fprintf(stderr, "sbxgen: rule for syscall %d: %s\n", sys,
		    strerror(-r));
		return -1;
	}
	return 0;
}

/* The rules of one process (user: the user's process). */
static int
sbx_rules(scmp_filter_ctx ctx, int user, int san, uint32_t pid)
{
	const struct scmp_arg_cmp noexec[] = {
		SCMP_A2(SCMP_CMP_MASKED_EQ, PROT_EXEC, 0) };
	const struct scmp_arg_cmp self[] = { SCMP_A0(SCMP_CMP_EQ, pid) };
	const struct scmp_arg_cmp sig0[] = { SCMP_A1(SCMP_CMP_EQ, 0) };
	const struct scmp_arg_cmp unix_[] = { SCMP_A0(SCMP_CMP_EQ, AF_UNIX) };
	const struct scmp_arg_cmp thread[] = {
		SCMP_A0(SCMP_CMP_MASKED_EQ, CLONE_THREAD, CLONE_THREAD) };
	size_t	i;
	int	r = 0;

	for (i = 0; i < nitems(sbx_base); i++)
		r |= sbx_add(ctx, SCMP_ACT_ALLOW, sbx_base[i], 0, NULL);
	r |= sbx_add(ctx, SCMP_ACT_ALLOW, SCMP_SYS(mmap), 1, noexec);
	r |= sbx_add(ctx, SCMP_ACT_ALLOW, SCMP_SYS(mprotect), 1, noexec);
	r |= sbx_add(ctx, SCMP_ACT_ALLOW, SCMP_SYS(tgkill), 1, self);
	r |= sbx_add(ctx, SCMP_ACT_ALLOW, SCMP_SYS(kill), 1, self);
	if (user) {
		for (i = 0; i < nitems(sbx_user_calls); i++)
			r |= sbx_add(ctx, SCMP_ACT_ALLOW, sbx_user_calls[i],
			    0, NULL);
		r |= sbx_add(ctx, SCMP_ACT_ALLOW, SCMP_SYS(kill), 1, sig0);
		r |= sbx_add(ctx, SCMP_ACT_ALLOW, SCMP_SYS(socket), 1, unix_);
		r |= sbx_add(ctx, SCMP_ACT_ALLOW, SCMP_SYS(clone), 1, thread);
		r |= sbx_add(ctx, SCMP_ACT_ERRNO(ENOSYS), SCMP_SYS(clone3), 0,
		    NULL);
	} else {
		r |= sbx_add(ctx, SCMP_ACT_ERRNO(EACCES), SCMP_SYS(socket), 0,
		    NULL);
		if (san)
			r |= sbx_add(ctx, SCMP_ACT_ERRNO(EACCES),
			    SCMP_SYS(openat), 0, NULL);
	}
	for (i = 0; san && i < nitems(sbx_san_calls); i++)
		r |= sbx_add(ctx, SCMP_ACT_ALLOW, sbx_san_calls[i], 0, NULL);
	for (i = 0; san && i < nitems(sbx_san_refused); i++)
		r |= sbx_add(ctx, SCMP_ACT_ERRNO(EACCES), sbx_san_refused[i],
		    0, NULL);
	return r;
}

/*
 * Builds the program of one process (user: the user's process, else the
 * pre-login child; san: the sanitizer build's) for the pid into *p.
 * Anything not allowed kills the process (SIGSYS), so a violation is a
 * crash the monitor logs, never a silent success; socket in the
 * pre-login child says EACCES (glibc's syslog reconnects with it).
 * Returns 0, or -1 after a message.
 */
int
sbx_build(int user, int san, uint32_t pid, struct sbx_prog *p)
{
	scmp_filter_ctx	 ctx;
	FILE		*f;
	size_t		 len;
	int		 r = -1;

	if ((ctx = seccomp_init(SCMP_ACT_KILL_PROCESS)) == NULL) {
		(void)fprintf(stderr, "sbxgen: seccomp_init failed\n");
		return -1;
	}
	if ((r = seccomp_attr_set(ctx, SCMP_FLTATR_CTL_OPTIMIZE, 2)) != 0) {
		(void)fprintf(stderr, "sbxgen: binary tree: %s\n", strerror(-r));
		f = NULL;
		r = -1;
	} else if ((f = tmpfile()) == NULL)
		perror("sbxgen: tmpfile");
	else if (sbx_rules(ctx, user, san, pid) == 0 &&
	    seccomp_export_bpf(ctx, fileno(f)) == 0) {
		rewind(f);
		len = fread(p->f, 1, sizeof(p->f), f);
		p->n = len / sizeof(p->f[0]);
		if (len == 0 || len % sizeof(p->f[0]) != 0 ||
		    len == sizeof(p->f))
			(void)fprintf(stderr, "sbxgen: exported %zu bytes\n", len);
		else
			r = 0;
	}
	if (f != NULL)
		(void)fclose(f);
	seccomp_release(ctx);
	return r;
}

#ifndef SBX_NO_MAIN
/* Writes one program and the places of its pid, or fails. */
static int
sbx_emit(const char *name, const char *uname, int user, int san)
{
	static struct sbx_prog	a, b;
	size_t			i, slots = 0;

	if (sbx_build(user, san, SBX_PID_A, &a) == -1 ||
	    sbx_build(user, san, SBX_PID_B, &b) == -1)
		return -1;
	if (a.n != b.n) {
		(void)fprintf(stderr, "sbxgen: %s: the pid changes the length\n",
		    name);
		return -1;
	}
	(void)printf("static const struct sock_filter %s[] = {\n", name);
	for (i = 0; i < a.n; i++)
		(void)printf("\t{ 0x%02x, %u, %u, 0x%08x },\n", a.f[i].code,
		    a.f[i].jt, a.f[i].jf, a.f[i].k);
	(void)printf("};\nstatic const unsigned short %s_pid[] = {", name);
	for (i = 0; i < a.n; i++) {
		if (memcmp(&a.f[i], &b.f[i], sizeof(a.f[i])) == 0)
			continue;
		if (a.f[i].code != b.f[i].code || a.f[i].jt != b.f[i].jt ||
		    a.f[i].jf != b.f[i].jf || a.f[i].k != SBX_PID_A ||
		    b.f[i].k != SBX_PID_B) {
			(void)fprintf(stderr, "sbxgen: %s: the pid changes "
			    "instruction %zu\n", name, i);
			return -1;
		}
		(void)printf(" %zu,", i);
		slots++;
	}
	(void)printf(" };\n#define %s_N %zu\n#define %s_NPID %zu\n", uname, a.n,
	    uname, slots);
	if (slots == 0) {
		(void)fprintf(stderr, "sbxgen: %s: no pid found\n", name);
		return -1;
	}
	return 0;
}

int
main(void)
{
	(void)printf("/* sbx_bpf.h: made by sbxgen.c (make); do not edit. */\n"
	    "#define SBX_PID_PLACEHOLDER 0x%08xU\n#ifdef SBX_ASAN\n",
	    SBX_PID_A);
	if (sbx_emit("sbx_bpf_prelogin", "SBX_BPF_PRELOGIN", 0, 1) == -1 ||
	    sbx_emit("sbx_bpf_user", "SBX_BPF_USER", 1, 1) == -1)
		return 1;
	(void)printf("#else\n");
	if (sbx_emit("sbx_bpf_prelogin", "SBX_BPF_PRELOGIN", 0, 0) == -1 ||
	    sbx_emit("sbx_bpf_user", "SBX_BPF_USER", 1, 0) == -1)
		return 1;
	(void)printf("#endif\n");
	return fflush(stdout) == 0 && !ferror(stdout) ? 0 : 1;
}
#endif
