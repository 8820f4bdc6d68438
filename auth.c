/*
 * auth.c: authentication (PAM, passwd:FILE), and every line of pop3d that
 * runs as root.
 *
 * Started as root (euid 0), pop3d splits into processes the way popa3d
 * and OpenSSH do (popa3d's DESIGN is the model):
 *   root monitor     hygiene, forks the pre-login child, checks its records,
 *                    has logins verified; never reads or writes the
 *                    client.  After a good login it becomes the user's
 *                    process itself (the pid inetd started stays the
 *                    session's, and no root process is left); with
 *                    --pam-session=held it verifies PAM logins itself,
 *                    holds the session, forks the user's process, waits
 *   pre-login child  the unprivileged --prelogin-user in an empty chroot:
 *                    greeting and AUTHORIZATION (pop3d.c), one record per
 *                    login to the monitor
 *   check process    short-lived, root: PAM (but a held session) or the
 *                    password file; returns only a verdict and the user,
 *                    so no hash, PAM module or password copy stays
 *   user's process   the user's uid and gid: TRANSACTION and UPDATE
 *
 * Code that runs as root, for audit (every other line of pop3d runs as
 * the pre-login user or the mail's owner):
 *   auth_main, auth_root,         the monitor: set-up, the pre-login
 *   auth_signals,                 phase and its loop, the user's phase,
 *   auth_prelogin_ids,            one cleanup
 *   auth_client_move,
 *   auth_monitor_prelogin,
 *   auth_logins, auth_monitor_user,
 *   auth_user_here, auth_log_login
 *   auth_hygiene, auth_emptydir,  fds, umask, core limit, tzset, syslog;
 *   auth_closefrom,               the chroot directory; each child's fds
 *   auth_child_fds
 *   auth_rec_check, auth_recv,    the record from the pre-login child,
 *   auth_readn, auth_wait,        treated as hostile; verdicts; children
 *   auth_forward, auth_sleep_until,
 *   auth_fwdset, auth_fork,
 *   auth_sighandler
 *   auth_verify, auth_pam,        the login check: PAM (conversation,
 *   auth_pam_conv, auth_pam_delay, authenticate, acct_mgmt, setcred,
 *   auth_pam_close, auth_user_ids, sessions, end), uid/gid rules
 *   auth_mailbox, auth_pam_acct,
 *   auth_pam_session, auth_pam_unsession
 *   auth_checked, auth_check_run, the check process and its verdict
 *   auth_pam_result,
 *   auth_passwd_result
 *   pw_check, pw_getline,         the password file, in the check process
 *   pw_parse, pw_open
 *   auth_sandbox, auth_become,    each child's preparation and drop
 *   auth_drop, auth_user_process  (until auth_drop's setresuid)
 *   auth_user_valid, auth_log_fail, auth_peer_init (and pop3d.h's
 *   pop_user_syntax, pop_after_ms)
 *                                 names, log lines, the client's address
 *   auth_proxy_monitor            the client's address from the pre-login
 *                                 child's PROXY header (proxy.c checks it)
 * auth_prelogin and auth_proxy_child run as the pre-login user, after
 * auth_sandbox.
 *
 * Started as a normal user: one process, no switch, and only the invoking
 * user is served (auth_single, auth_passwd_local, auth_pam with root = 0).
 */

#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>

#include <crypt.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <limits.h>
#include <netdb.h>
#include <nettle/memops.h>
#include <poll.h>
#include <pwd.h>
#include <security/pam_appl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <syslog.h>
#include <time.h>
#include <unistd.h>

#include "auth.h"
#include "maildrop.h"
#include "pop3d.h"

/* An AddressSanitizer build (gcc says so one way, clang another). */
#if defined(__SANITIZE_ADDRESS__)
#define POP3D_ASAN
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define POP3D_ASAN
#endif
#endif

/* Verdicts of a login check. */
enum auth_verdict {
	AUTH_OK = 1,
	AUTH_BADPASS,	/* known user, wrong password or account refused */
	AUTH_UNKNOWN,	/* no such user: never log the name */
	AUTH_ERROR	/* the backend failed (file unsafe, PAM error) */
};

/* What the check process (auth_checked) tells the monitor. */
struct auth_res {
	int32_t		 verdict;
	int32_t		 ids;			/* uid and gid given */
	uint32_t	 uid, gid;
	char		 name[POP3_USER_MAX + 1];	/* PAM_USER */
	char		 mailbox[sizeof(((struct pop_user *)0)->mailbox)];
};

/* One password-file entry, parsed. */
struct auth_pwent {
	char		 hash[AUTH_HASH_MAX + 1];
	int		 ids;
	uid_t		 uid;
	gid_t		 gid;
	char		 mailbox[sizeof(((struct pop_user *)0)->mailbox)];
};

/*
 * Unknown users are checked against this when the file has no hash to
 * borrow the cost from (yescrypt, libcrypt's default on Debian 12), so the
 * time spent does not tell them apart.  The password is not secret.
 */
#define AUTH_DUMMY_HASH	\
	"$y$j9T$SDyErDfKaZ27kfyyVk//I/$PC3.Q25.Ij.SxxCiyZ8fi4LHk0tuiKVfNJiH911QwV1"

/*
 * The pre-login child is chrooted here: created 0755 root if absent; if it
 * is unusable, a private directory from mkdtemp(3) under /tmp is used and
 * removed after the pre-login phase.
 */
#define AUTH_EMPTY_DIR		"/run/pop3d-empty"
#define AUTH_EMPTY_TMP		"/tmp/pop3d-empty.XXXXXX"

/* How long the pre-login child may take to exit after an "ok". */
#define AUTH_CHILD_EXIT_MS	5000

static struct pop_conn	 conn;		/* one per process, 66 KB: static */
static char		 auth_peer[128] = "unknown";
static int		 auth_peer_known;	/* auth_peer is an address */
static int		 auth_proxied;		/* a PROXY header is due */
static volatile sig_atomic_t auth_child;	/* the child signals go to */
static volatile sig_atomic_t auth_sig;		/* last one forwarded */

static int	auth_single(void);
static int	auth_root(void);
static void	auth_hygiene(void);
static void	auth_closefrom(int);
static int	auth_child_fds(int, int, int);
static void	auth_peer_init(int);
static void	auth_proxy_child(int);
static int	auth_proxy_monitor(int);
static int	auth_status(const struct pop_conn *);
static void	auth_log_fail(const char *, int, const char *);
static int	auth_user_valid(const char *);
static int	auth_mailbox(struct pop_user *, const char *, const char *);
static int	pw_check(const char *, const char *, const char *,
		    struct auth_pwent *, int);
static int	pw_parse(char *, unsigned long, const char *,
		    struct auth_pwent *, const char **);
static int	pw_getline(FILE *, char *, size_t);
static FILE	*pw_open(const char *, int);
static int	auth_passwd_local(const struct pop_cred *, struct pop_user *);
static int	auth_pam(const char *, const char *, struct pop_user *,
		    pam_handle_t **, int);
static int	auth_pam_conv(int, const struct pam_message **,
		    struct pam_response **, void *);
static int	auth_pam_acct(pam_handle_t *, char *, size_t);
static int	auth_pam_session(pam_handle_t *, char *, size_t);
static void	auth_pam_unsession(pam_handle_t *);
static void	auth_pam_delay(int, unsigned int, void *);
static void	auth_pam_close(pam_handle_t *);
static int	auth_user_ids(struct pop_user *, int, uid_t, gid_t);
static void	auth_emptydir(char *, size_t, int *);
static void	auth_drop(uid_t, gid_t, int, const gid_t *);
static void	auth_sandbox(const char *, uid_t, gid_t);
static void	auth_user_sandbox(const struct pop_user *);
static void	auth_prelogin(int, int, int, const char *, uid_t, gid_t,
		    pid_t) __attribute__((noreturn));
static int	auth_rec_check(const struct auth_rec *, size_t);
static int	auth_verify(const struct auth_rec *, struct pop_user *,
		    pam_handle_t **);
static int	auth_checked(const struct auth_rec *, struct pop_user *);
static void	auth_check_run(const struct auth_rec *, struct auth_res *);
static int	auth_pam_result(const struct auth_rec *,
		    const struct auth_res *, struct pop_user *);
static int	auth_passwd_result(const struct auth_rec *,
		    const struct auth_res *, struct pop_user *);
static void	auth_become(const struct pop_user *, int, int);
static void	auth_cachedir(struct pop_user *, int);
struct auth_mon;
static void	auth_signals(void);
static int	auth_prelogin_ids(uid_t *, gid_t *);
static void	auth_client_move(int *, int *);
static int	auth_monitor_prelogin(struct auth_mon *, uid_t, gid_t);
static int	auth_logins(struct auth_mon *, int);
static int	auth_monitor_user(struct auth_mon *);
static void	auth_log_login(const struct auth_mon *);
static int	auth_user_here(struct auth_mon *);
static void	auth_sig_exit(int);
static void	auth_user_process(struct auth_mon *)
		    __attribute__((noreturn));
static int	auth_wait(pid_t);
static void	auth_forward(int);
static void	auth_fwdset(sigset_t *);
static void	auth_sighandler(void (*)(int));
static pid_t	auth_fork(int);
static void	auth_sleep_until(const struct timespec *);
static ssize_t	auth_recv(int, void *, size_t, int);
static ssize_t	auth_readn(int, void *, size_t);

int
auth_main(void)
{
	if (geteuid() == 0) {
		if (getuid() != 0)
			fatalx("pop3d must not be installed set-user-ID");
		return auth_root();
	}
	if (getuid() != geteuid() || getgid() != getegid())
		fatalx("pop3d must not be installed set-user-ID or "
		    "set-group-ID");
	return auth_single();
}

/*
 * Not root: one process, and only the invoking user's own mailbox.
 */
static int
auth_single(void)
{
	struct pop_cred	 cred;
	struct pop_user	 u;
	pam_handle_t	*pamh = NULL;
	int		 first, r, status, null;

	/* No process outside the sandbox could hold a PAM session to the
	 * end (its close, and libpam's audit record, make calls the user's
	 * filter refuses): held acts as login, and PAM ends before the
	 * sandbox. */
	if (opt.pam_session == POP3_PAM_HELD)
		opt.pam_session = POP3_PAM_LOGIN;
	/* Under inetd fd 2 may be the client: nothing but -d writes there. */
	if (!opt.debug) {
		if ((null = open("/dev/null", O_WRONLY | O_CLOEXEC)) == -1 ||
		    dup2(null, 2) == -1)
			fatal("/dev/null");
		if (null != 2)
			(void)close(null);
	}
	auth_peer_init(0);
	pop_conn_init(&conn, 0, 1);
	if (auth_proxied)
		auth_proxy_child(-1);
	for (first = 1;; first = 0) {
		if (!pop_authorize(&conn, &cred, first))
			return auth_status(&conn);
		memset(&u, 0, sizeof(u));
		if (!auth_user_valid(cred.user)) {
			auth_log_fail(cred.user, AUTH_UNKNOWN,
			    "invalid user name");
			r = AUTH_UNKNOWN;
		} else if (opt.backend == POP3_AUTH_PASSWD)
			r = auth_passwd_local(&cred, &u);
		else
			r = auth_pam(cred.user, cred.pass, &u, &pamh, 0);
		pop_wipe(cred.pass, sizeof(cred.pass));
		if (r == AUTH_OK)
			break;
		if (r == AUTH_ERROR)
			return pop_auth_error(&conn, &cred);
		if (pop_auth_failed(&conn, &cred) == -1)
			return POP3_EX_NOUSER;
	}
	pop_log(LOG_INFO, "login: user %s uid %lu mech %s from %s", u.name,
	    (unsigned long)u.uid, cred.mech, auth_peer);
	auth_pam_close(pamh);
	auth_cachedir(&u, 0);
	auth_user_sandbox(&u);
	status = pop_transaction(&conn, &u);
	return status;
}

/*
 * The exit status of a session that ended before a login: after a failed
 * login, the client gave up (pop3d.8, EXIT STATUS), by QUIT or by going
 * away.  Too many bad commands is logged with the client's address (for
 * fail2ban, as a failed login is).
 */
static int
auth_status(const struct pop_conn *c)
{
	if (c->bad >= POP3_BAD_MAX) {
		pop_log(LOG_NOTICE, "too many bad commands from %s", auth_peer);
		return POP3_EX_CLOSED;
	}
	if (c->authfail > 0)
		return POP3_EX_NOUSER;
	return c->eof ? POP3_EX_CLOSED : POP3_EX_OK;
}

/* Non-root password-file check: the entry must be ours. */
static int
auth_passwd_local(const struct pop_cred *cred, struct pop_user *u)
{
	struct auth_pwent e;
	int		  r;

	r = pw_check(opt.passwd_file, cred->user, cred->pass, &e, 0);
	switch (r) {
	case AUTH_OK:
		break;
	case AUTH_BADPASS:
		auth_log_fail(cred->user, r, "wrong password");
		return r;
	case AUTH_UNKNOWN:
		auth_log_fail(cred->user, r, "no such user");
		return r;
	default:
		auth_log_fail(cred->user, r, "password file unusable");
		return r;
	}
	if (e.ids && e.uid != getuid()) {
		auth_log_fail(cred->user, AUTH_BADPASS, "the password file "
		    "gives another uid; only the invoking user is served when "
		    "not root");
		return AUTH_BADPASS;
	}
	u->uid = getuid();
	u->gid = getgid();
	if (auth_mailbox(u, cred->user, e.mailbox) == -1) {
		/* The password was right: refused as a wrong one is. */
		auth_log_fail(cred->user, AUTH_BADPASS, "user refused");
		return AUTH_BADPASS;
	}
	return AUTH_OK;
}

/*
 * Fills u->name and u->mailbox: the password file's mailbox field, or
 * SPOOL/USER.  The name was checked by auth_user_valid().
 */
static int
auth_mailbox(struct pop_user *u, const char *user, const char *mailbox)
{
	int	n;

	if (strlen(user) >= sizeof(u->name))
		return -1;
	memcpy(u->name, user, strlen(user) + 1);
	if (mailbox != NULL && mailbox[0] != '\0')
		n = snprintf(u->mailbox, sizeof(u->mailbox), "%s", mailbox);
	else
		n = snprintf(u->mailbox, sizeof(u->mailbox), "%s/%s",
		    opt.spool, user);
	if (n < 0 || (size_t)n >= sizeof(u->mailbox)) {
		pop_log(LOG_ERR, "mailbox path of user %s too long", user);
		return -1;
	}
	return 0;
}

/*
 * A user name we serve, checked before it names a file or reaches PAM:
 * the syntax above and no leading '.' or '-' (never a hidden file, never
 * an option).  So "../x" never becomes a path.
 */
static int
auth_user_valid(const char *user)
{
	return pop_user_syntax(user, strnlen(user, POP3_USER_MAX + 1)) &&
	    user[0] != '.' && user[0] != '-';
}

/*
 * One log line per failed login; an unknown name is never logged.  A
 * login the backend could not check is a "login error", which fail2ban's
 * filter does not count (the client may have given the right password),
 * and names no user: none was found to be one.  AUTH_ERROR comes only
 * before the password is checked, or whatever it is; a refusal after a
 * right one is AUTH_BADPASS, answered as a wrong password.
 */
static void
auth_log_fail(const char *user, int verdict, const char *why)
{
	if (verdict == AUTH_ERROR)
		pop_log(LOG_ERR, "login error: UNKNOWN USER from %s: %s",
		    auth_peer, why);
	else if (verdict == AUTH_UNKNOWN || !auth_user_valid(user))
		pop_log(LOG_NOTICE, "login failed: UNKNOWN USER from %s: %s",
		    auth_peer, why);
	else
		pop_log(LOG_NOTICE, "login failed: user %s from %s: %s", user,
		    auth_peer, why);
}

/*
 * The client's address for the log: getpeername() on fd, else what
 * inetd-style launchers put in the environment, printable octets only.
 */
static void
auth_peer_init(int fd)
{
	static const char *const env[] = {
		"TCPREMOTEIP", "REMOTE_ADDR", "REMOTE_HOST"
	};
	struct sockaddr_storage ss;
	socklen_t	 len = sizeof(ss);
	char		 host[NI_MAXHOST];
	const char	*s = NULL;
	size_t		 i;

	memset(&ss, 0, sizeof(ss));
	if (getpeername(fd, (struct sockaddr *)&ss, &len) == 0) {
		auth_proxied = proxy_trusted(&ss, len);
		if (ss.ss_family == AF_UNIX)
			s = "local";
		else if (getnameinfo((struct sockaddr *)&ss, len, host,
		    sizeof(host), NULL, 0, NI_NUMERICHOST) == 0)
			s = host;
	}
	for (i = 0; s == NULL && i < sizeof(env) / sizeof(env[0]); i++)
		s = getenv(env[i]);
	if (s == NULL || *s == '\0')
		return;
	auth_peer_known = strcmp(s, "local") != 0;
	for (i = 0; i < sizeof(auth_peer) - 1 && s[i] != '\0'; i++)
		auth_peer[i] = (s[i] > 0x20 && s[i] < 0x7f) ? s[i] : '?';
	auth_peer[i] = '\0';
}

/*
 * The PROXY header (proxy.c) of a --proxy-from peer, read before the
 * greeting by the pre-login child, which sends the client's address to
 * the monitor over sp, or by the single process (sp -1).  A refused
 * header (logged) ends the session.
 */
static void
auth_proxy_child(int sp)
{
	struct proxy_addr pa;
	char		 client[INET6_ADDRSTRLEN];

	memset(&pa, 0, sizeof(pa));
	if (proxy_read(&conn, &pa, auth_peer) == -1)
		_exit(POP3_EX_CLOSED);
	if (sp == -1) {
		if (proxy_peer(&pa, sizeof(pa), auth_peer,
		    sizeof(auth_peer)) == -1)
			fatalx("PROXY address");
		return;
	}
	if (send(sp, &pa, sizeof(pa), MSG_NOSIGNAL) != sizeof(pa))
		fatal("send to monitor");
	/* The monitor logs the header; this process's own log line (too
	 * many bad commands, for fail2ban) names the client too. */
	if (proxy_client(&pa, sizeof(pa), client, sizeof(client)) == 1)
		(void)snprintf(auth_peer, sizeof(auth_peer), "%s", client);
}

/* The monitor's side: 0 (also if the child ended), -1 a bad record. */
static int
auth_proxy_monitor(int sp)
{
	struct proxy_addr pa;
	ssize_t		 n;

	n = auth_recv(sp, &pa, sizeof(pa), POP3_SESSION_MAX * 1000);
	if (n == 0 || (n > 0 && proxy_peer(&pa, (size_t)n, auth_peer,
	    sizeof(auth_peer)) == 0))
		return 0;
	pop_log(LOG_ERR, "pre-login process sent a bad PROXY address; "
	    "killing it");
	return -1;
}

/*
 * The password file: "user:hash[:uid:gid[:mailbox]]" lines, '#' comments,
 * blank lines.  A malformed line is logged with its number and ignored.
 * Returns AUTH_OK and fills *e, AUTH_BADPASS, AUTH_UNKNOWN or AUTH_ERROR.
 * Every line is read whoever asks, and an unknown user costs a hash of
 * the same kind (the last one in the file), so time tells nothing.
 * As root the file must be a root-owned regular file that group and
 * others cannot read or write; in any mode, a file others can write is
 * refused (whoever writes it chooses the passwords).
 */
static int
pw_check(const char *file, const char *user, const char *pass,
    struct auth_pwent *e, int root)
{
	static struct crypt_data cd;
	static char	 line[AUTH_LINE_MAX + 1];
	static char	 model[AUTH_HASH_MAX + 1];
	struct auth_pwent cur;
	FILE		*fp;
	const char	*name, *res;
	unsigned long	 lineno;
	size_t		 len;
	int		 found = 0, r, verdict;

	memset(e, 0, sizeof(*e));
	if ((fp = pw_open(file, root)) == NULL)
		return AUTH_ERROR;
	model[0] = '\0';
	for (lineno = 1; (r = pw_getline(fp, line, sizeof(line))) != 0;
	    lineno++) {
		if (r == -1 && ferror(fp)) {
			pop_log(LOG_ERR, "%s: %s", file, strerror(errno));
			(void)fclose(fp);
			pop_wipe(line, sizeof(line));
			pop_wipe(model, sizeof(model));
			return AUTH_ERROR;
		}
		if (r == -1) {
			pop_log(LOG_WARNING, "%s: line %lu: too long or "
			    "contains NUL, ignored", file, lineno);
			continue;
		}
		if (line[0] == '#' || line[strspn(line, " \t")] == '\0')
			continue;
		if (pw_parse(line, lineno, file, &cur, &name) == -1)
			continue;
		len = strlen(cur.hash);
		if (len < sizeof(model))
			memcpy(model, cur.hash, len + 1);
		if (!found && strcmp(name, user) == 0) {
			*e = cur;
			found = 1;
		}
	}
	pop_wipe(line, sizeof(line));
	pop_wipe(&cur, sizeof(cur));
	if (fclose(fp) == EOF)
		pop_log(LOG_WARNING, "%s: close: %s", file, strerror(errno));

	memset(&cd, 0, sizeof(cd));
	if (found) {
		res = crypt_rn(pass, e->hash, &cd, (int)sizeof(cd));
		len = strlen(e->hash);
		verdict = (res != NULL && strlen(res) == len &&
		    memeql_sec(res, e->hash, len)) ? AUTH_OK : AUTH_BADPASS;
	} else {
		(void)crypt_rn(pass, model[0] != '\0' ? model :
		    AUTH_DUMMY_HASH, &cd, (int)sizeof(cd));
		verdict = AUTH_UNKNOWN;
	}
	pop_wipe(&cd, sizeof(cd));
	pop_wipe(model, sizeof(model));
	pop_wipe(e->hash, sizeof(e->hash));
	return verdict;
}

/*
 * The password file opened for pw_check(), with the rules above on its
 * owner and mode; NULL (logged) if it is refused or unusable.
 */
static FILE *
pw_open(const char *file, int root)
{
	struct stat	 st;
	FILE		*fp;
	int		 fd;

	if ((fd = open(file, O_RDONLY | O_NONBLOCK | O_NOCTTY |
	    O_CLOEXEC)) == -1) {
		pop_log(LOG_ERR, "%s: %s", file, strerror(errno));
		return NULL;
	}
	if (fstat(fd, &st) == -1 || !S_ISREG(st.st_mode)) {
		pop_log(LOG_ERR, "%s: not a regular file", file);
		(void)close(fd);
		return NULL;
	}
	if ((root && (st.st_uid != 0 || (st.st_mode & (S_IRGRP | S_IWGRP |
	    S_IROTH | S_IWOTH)) != 0)) ||
	    (!root && (st.st_mode & (S_IWGRP | S_IWOTH)) != 0)) {
		pop_log(LOG_ERR, "%s: refused: must %s by group or others "
		    "(mode %03o, owner %lu)", file, root ? "be owned by root "
		    "and not readable or writable" : "not be writable",
		    (unsigned int)(st.st_mode & 07777),
		    (unsigned long)st.st_uid);
		(void)close(fd);
		return NULL;
	}
	if ((fp = fdopen(fd, "r")) == NULL) {
		pop_log(LOG_ERR, "%s: %s", file, strerror(errno));
		(void)close(fd);
		return NULL;
	}
	return fp;
}

/*
 * Reads one line into buf without its newline.  1: a line; 0: end of
 * file; -1: error, or a line too long or with a NUL (the rest of it is
 * skipped).  Never more than the buffer, whatever the file holds.
 */
static int
pw_getline(FILE *fp, char *buf, size_t size)
{
	size_t	n = 0;
	int	ch, bad = 0;

	while ((ch = getc(fp)) != EOF && ch != '\n') {
		if (ch == '\0' || n + 1 >= size)
			bad = 1;
		else
			buf[n++] = (char)ch;
	}
	buf[n] = '\0';
	if (ch == EOF && ferror(fp))
		return -1;
	if (ch == EOF && n == 0 && !bad)
		return 0;
	return bad ? -1 : 1;
}

/* Splits one line; -1 (logged) if it is malformed. */
static int
pw_parse(char *line, unsigned long lineno, const char *file,
    struct auth_pwent *e, const char **name)
{
	char		*f[5], *p = line, *end;
	unsigned long	 v;
	size_t		 i, n = 0;
	const char	*why = NULL;

	memset(e, 0, sizeof(*e));
	f[n++] = p;
	while (n < 5 && (p = strchr(p, ':')) != NULL) {
		*p++ = '\0';
		f[n++] = p;
	}
	if (n != 2 && n != 4 && n != 5)
		why = "wrong number of fields";
	else if (!auth_user_valid(f[0]))
		why = "invalid user name";
	else if (f[1][0] == '\0' || strlen(f[1]) > AUTH_HASH_MAX)
		why = "empty or too long hash";
	else if (n >= 4) {
		for (i = 2; i < 4 && why == NULL; i++) {
			errno = 0;
			v = strtoul(f[i], &end, 10);
			if (f[i][0] < '0' || f[i][0] > '9' || *end != '\0' ||
			    errno != 0 || v >= (unsigned long)UINT32_MAX)
				why = "uid or gid is not a number";
			else if (i == 2)
				e->uid = (uid_t)v;
			else
				e->gid = (gid_t)v;
		}
		e->ids = 1;
		if (why == NULL && n == 5 && (f[4][0] != '/' ||
		    strlen(f[4]) >= sizeof(e->mailbox)))
			why = "mailbox is not an absolute path";
		else if (why == NULL && n == 5)
			memcpy(e->mailbox, f[4], strlen(f[4]) + 1);
	}
	if (why != NULL) {
		pop_log(LOG_WARNING, "%s: line %lu: malformed (%s), ignored",
		    file, lineno, why);
		return -1;
	}
	memcpy(e->hash, f[1], strlen(f[1]) + 1);
	*name = f[0];
	return 0;
}

/*
 * PAM.  Starts a transaction for user, authenticates with pass, checks
 * the account, takes PAM_USER back (a module may change it) and resolves
 * it with getpwnam(); then runs the session stack as --pam-session says
 * (auth_pam_session).  On AUTH_OK *hp holds the handle (auth_pam_close()
 * ends it), otherwise the handle is already ended.  root = 0: only the
 * invoking user.
 */
static int
auth_pam(const char *user, const char *pass, struct pop_user *u,
    pam_handle_t **hp, int root)
{
	struct pam_conv	 conv = { auth_pam_conv, NULL };
	const void	*item = NULL;
	struct passwd	*pw;
	pam_handle_t	*h = NULL;
	const char	*name;
	char		 why[160];
	int		 rv, verdict = AUTH_BADPASS, known = 1;

	*hp = NULL;
	why[0] = '\0';
	conv.appdata_ptr = (void *)(uintptr_t)pass;
	if ((rv = pam_start(opt.pam_service, user, &conv, &h)) != PAM_SUCCESS) {
		pop_log(LOG_ERR, "pam_start(%s): %s", opt.pam_service,
		    pam_strerror(NULL, rv));
		return AUTH_ERROR;
	}
	/* Our fixed deadline answers failures, not PAM's own delay. */
	if ((rv = pam_set_item(h, PAM_FAIL_DELAY,
	    (const void *)(uintptr_t)auth_pam_delay)) != PAM_SUCCESS ||
	    (auth_peer_known &&
	    (rv = pam_set_item(h, PAM_RHOST, auth_peer)) != PAM_SUCCESS)) {
		pop_log(LOG_ERR, "pam_set_item: %s", pam_strerror(h, rv));
		verdict = AUTH_ERROR;
		goto fail;
	}
	if ((rv = pam_authenticate(h, PAM_DISALLOW_NULL_AUTHTOK)) !=
	    PAM_SUCCESS) {
		/* Only for the log; the reply waits for the fixed deadline. */
		known = rv != PAM_USER_UNKNOWN && getpwnam(user) != NULL;
		(void)snprintf(why, sizeof(why), "%s", pam_strerror(h, rv));
		goto fail;
	}
	if ((rv = auth_pam_acct(h, why, sizeof(why))) != PAM_SUCCESS)
		goto fail;
	if ((rv = pam_get_item(h, PAM_USER, &item)) != PAM_SUCCESS ||
	    item == NULL || !auth_user_valid(name = item)) {
		/* After the password was checked: a refused account,
		 * answered as a wrong password is (an error's [SYS/TEMP]
		 * would tell that the password was right). */
		(void)snprintf(why, sizeof(why), "PAM_USER missing or invalid");
		goto fail;
	}
	if ((pw = getpwnam(name)) == NULL) {
		(void)snprintf(why, sizeof(why), "PAM user %s has no passwd "
		    "entry", name);
		goto fail;
	}
	memset(u, 0, sizeof(*u));
	if (auth_user_ids(u, root, pw->pw_uid, pw->pw_gid) == -1 ||
	    auth_mailbox(u, name, NULL) == -1) {
		(void)snprintf(why, sizeof(why), "user refused");
		user = name;
		goto fail;
	}
	if ((rv = auth_pam_session(h, why, sizeof(why))) != PAM_SUCCESS) {
		user = name;
		goto fail;
	}
	/*
	 * A held session: no copy of the password stays in the memory the
	 * user's process is forked from (otherwise this is the check
	 * process, which ends with the check): ours are wiped, and libpam wipes the PAM_AUTHTOK item
	 * at the end of pam_authenticate() (an application may not set it;
	 * test_auth_root.py's module stores it, as pam_unix does).
	 */
	*hp = h;
	return AUTH_OK;
fail:
	if (verdict == AUTH_BADPASS && !known)
		verdict = AUTH_UNKNOWN;
	if (verdict == AUTH_ERROR && rv == PAM_SUCCESS)
		rv = PAM_SYSTEM_ERR;
	auth_log_fail(user, verdict, verdict == AUTH_ERROR &&
	    why[0] == '\0' ? "PAM error" : why);
	(void)pam_end(h, rv == PAM_SUCCESS ? PAM_AUTH_ERR : rv);
	return verdict;
}

/*
 * pam_acct_mgmt: PAM_SUCCESS, or its error with the reason for the log
 * in why.
 */
static int
auth_pam_acct(pam_handle_t *h, char *why, size_t size)
{
	int	rv;

	rv = pam_acct_mgmt(h, PAM_DISALLOW_NULL_AUTHTOK);
	if (rv == PAM_NEW_AUTHTOK_REQD)
		(void)snprintf(why, size, "password expired, must be changed "
		    "(pam_acct_mgmt: %s)", pam_strerror(h, rv));
	else if (rv == PAM_ACCT_EXPIRED)
		(void)snprintf(why, size, "account expired (pam_acct_mgmt: %s)",
		    pam_strerror(h, rv));
	else if (rv != PAM_SUCCESS)
		(void)snprintf(why, size, "account refused (pam_acct_mgmt: %s)",
		    pam_strerror(h, rv));
	return rv;
}

/*
 * The session stack as --pam-session says: nothing (no); credentials set,
 * session opened, then closed and credentials deleted at once (login); or
 * credentials set and session opened until auth_pam_close() (held).
 * PAM_SUCCESS, or the error with the reason in why (credentials set are
 * deleted again).
 */
static int
auth_pam_session(pam_handle_t *h, char *why, size_t size)
{
	int	rv;

	if (opt.pam_session == POP3_PAM_NO)
		return PAM_SUCCESS;
	if ((rv = pam_setcred(h, PAM_ESTABLISH_CRED)) != PAM_SUCCESS) {
		(void)snprintf(why, size, "pam_setcred: %s",
		    pam_strerror(h, rv));
		return rv;
	}
	if ((rv = pam_open_session(h, 0)) != PAM_SUCCESS) {
		(void)snprintf(why, size, "pam_open_session: %s",
		    pam_strerror(h, rv));
		(void)pam_setcred(h, PAM_DELETE_CRED);
		return rv;
	}
	if (opt.pam_session == POP3_PAM_LOGIN)
		auth_pam_unsession(h);
	return PAM_SUCCESS;
}

/* Closes the session and deletes the credentials auth_pam_session() set. */
static void
auth_pam_unsession(pam_handle_t *h)
{
	int	rv;

	if ((rv = pam_close_session(h, 0)) != PAM_SUCCESS)
		pop_log(LOG_WARNING, "pam_close_session: %s",
		    pam_strerror(h, rv));
	if ((rv = pam_setcred(h, PAM_DELETE_CRED)) != PAM_SUCCESS)
		pop_log(LOG_WARNING, "pam_setcred(DELETE): %s",
		    pam_strerror(h, rv));
}

/*
 * Answers every password prompt with the password; informational and
 * error messages are ignored (logged with -d); any other prompt fails the
 * conversation.
 * Some modules pass no resp for messages alone: answer nothing then.
 */
static int
auth_pam_conv(int n, const struct pam_message **msg,
    struct pam_response **resp, void *data)
{
	const char		*pass = data;
	struct pam_response	*r = NULL;
	int			 i;

	if (n <= 0 || n > PAM_MAX_NUM_MSG || pass == NULL)
		return PAM_CONV_ERR;
	if (resp != NULL && (r = calloc((size_t)n, sizeof(*r))) == NULL)
		return PAM_BUF_ERR;
	for (i = 0; i < n; i++) {
		switch (msg[i]->msg_style) {
		case PAM_PROMPT_ECHO_OFF:
			if (r == NULL || (r[i].resp = strdup(pass)) == NULL)
				goto fail;
			break;
		case PAM_ERROR_MSG:
		case PAM_TEXT_INFO:
			/* Only with -d: a module may name an unknown user. */
			if (opt.debug)
				pop_log(LOG_DEBUG, "PAM says: %.200s",
				    msg[i]->msg != NULL ? msg[i]->msg : "");
			break;
		default:
			pop_log(LOG_WARNING, "PAM asked something other than "
			    "a password (style %d); failing", msg[i]->msg_style);
			goto fail;
		}
	}
	if (resp != NULL)
		*resp = r;
	return PAM_SUCCESS;
fail:
	for (i = 0; r != NULL && i < n; i++) {
		if (r[i].resp != NULL) {
			pop_wipe(r[i].resp, strlen(r[i].resp));
			free(r[i].resp);
		}
	}
	free(r);
	return PAM_CONV_ERR;
}

/* PAM_FAIL_DELAY: PAM's own delay would add to ours; do nothing. */
static void
auth_pam_delay(int status, unsigned int usec, void *data)
{
	(void)status;
	(void)usec;
	(void)data;
}

/* Closes what auth_pam() opened (a held session too); safe with NULL. */
static void
auth_pam_close(pam_handle_t *h)
{
	int	rv;

	if (h == NULL)
		return;
	if (opt.pam_session == POP3_PAM_HELD)
		auth_pam_unsession(h);
	if ((rv = pam_end(h, PAM_SUCCESS)) != PAM_SUCCESS)
		pop_log(LOG_WARNING, "pam_end: %s", pam_strerror(NULL, rv));
}

/*
 * The uid and gid a login will run as.  As root: never uid 0, gid 0 or a
 * uid below --min-uid.  Not root: it must be the invoking user.
 */
static int
auth_user_ids(struct pop_user *u, int root, uid_t uid, gid_t gid)
{
	if (!root) {
		if (uid != getuid()) {
			pop_log(LOG_WARNING, "uid %lu is not the invoking user "
			    "(%lu); only that user is served when not root",
			    (unsigned long)uid, (unsigned long)getuid());
			return -1;
		}
		u->uid = uid;
		u->gid = getgid();
		return 0;
	}
	if (uid == 0 || gid == 0) {
		pop_log(LOG_WARNING, "uid %lu gid %lu refused: root is never "
		    "served", (unsigned long)uid, (unsigned long)gid);
		return -1;
	}
	if (uid < opt.min_uid) {
		pop_log(LOG_WARNING, "uid %lu refused: below --min-uid %lu",
		    (unsigned long)uid, (unsigned long)opt.min_uid);
		return -1;
	}
	u->uid = uid;
	u->gid = gid;
	return 0;
}

/*
 * Root from here on.
 */

/*
 * Start-up hygiene: descriptors above 2 closed (syslog reopened), the
 * standard ones open, umask 077, no core dumps, time zone loaded before
 * any chroot.
 */
static void
auth_hygiene(void)
{
	struct rlimit	 rl = { 0, 0 };
	int		 fd;

	closelog();
	auth_closefrom(3);
	/* A closed standard descriptor is /dev/null, not the next open. */
	for (fd = 0; fd <= 2; fd++)
		if (fcntl(fd, F_GETFD) == -1 &&
		    open("/dev/null", O_RDWR) != fd)
			fatal("/dev/null");
	if (!opt.debug)
		openlog(POP3D_NAME, LOG_PID | LOG_NDELAY, LOG_MAIL);
	(void)umask(077);
	if (setrlimit(RLIMIT_CORE, &rl) == -1)
		fatal("setrlimit(RLIMIT_CORE)");
	tzset();
}

/* Closes every descriptor from lowfd up. */
static void
auth_closefrom(int lowfd)
{
	int	 fd;

	if (close_range((unsigned int)lowfd, ~0U, 0) == -1)
		for (fd = lowfd; fd < 1024; fd++)
			(void)close(fd);
}

/*
 * A child's descriptors start from a known set, whatever PAM modules and
 * NSS opened in the monitor (pam_systemd's session fd, a module's
 * privileged connection): 0 and 1 the client (in and out), 2 as it is,
 * keep (unless -1) moved to 3, syslog's socket reopened (so before any
 * chroot), nothing else.  Returns keep's new number.
 */
static int
auth_child_fds(int in, int out, int keep)
{
	if (dup2(in, 0) == -1 || dup2(out, 1) == -1)
		fatal("dup2");
	closelog();
	if (keep != -1 && keep != 3 && dup2(keep, 3) == -1)
		fatal("dup2");
	auth_closefrom(keep != -1 ? 4 : 3);
	if (!opt.debug)
		openlog(POP3D_NAME, LOG_PID | LOG_NDELAY, LOG_MAIL);
	return keep != -1 ? 3 : -1;
}

/*
 * The pre-login child's chroot: AUTH_EMPTY_DIR if it is a root-owned
 * directory nobody else can write and it is empty, else a fresh private
 * one (*tmp = 1: remove it after the pre-login phase).
 */
static void
auth_emptydir(char *buf, size_t size, int *tmp)
{
	struct stat	 st;
	struct dirent	*de;
	DIR		*d;
	int		 entries = 0;

	*tmp = 0;
	if (mkdir(AUTH_EMPTY_DIR, 0755) == 0) {
		if (chmod(AUTH_EMPTY_DIR, 0755) == -1)
			fatal("chmod %s", AUTH_EMPTY_DIR);
	} else if (errno != EEXIST)
		goto fallback;
	if (lstat(AUTH_EMPTY_DIR, &st) == -1 || !S_ISDIR(st.st_mode) ||
	    st.st_uid != 0 || (st.st_mode & (S_IWGRP | S_IWOTH)) != 0) {
		pop_log(LOG_WARNING, "%s: not a root-owned directory only root "
		    "can write; using a private one", AUTH_EMPTY_DIR);
		goto fallback;
	}
	if ((d = opendir(AUTH_EMPTY_DIR)) == NULL)
		goto fallback;
	while ((de = readdir(d)) != NULL)
		if (strcmp(de->d_name, ".") != 0 &&
		    strcmp(de->d_name, "..") != 0)
			entries++;
	(void)closedir(d);
	if (entries != 0) {
		pop_log(LOG_WARNING, "%s: not empty; using a private one",
		    AUTH_EMPTY_DIR);
		goto fallback;
	}
	if ((size_t)snprintf(buf, size, "%s", AUTH_EMPTY_DIR) >= size)
		fatalx("empty dir path too long");
	return;
fallback:
	if ((size_t)snprintf(buf, size, "%s", AUTH_EMPTY_TMP) >= size)
		fatalx("empty dir path too long");
	if (mkdtemp(buf) == NULL)
		fatal("mkdtemp %s", AUTH_EMPTY_TMP);
	*tmp = 1;
}

/*
 * Becomes uid and gid for good, with the ng (0 or 1) supplementary groups
 * in groups, and no new privileges; checks that all of it holds and that
 * root cannot be regained (fatal otherwise).  Both children's drops.
 */
static void
auth_drop(uid_t uid, gid_t gid, int ng, const gid_t *groups)
{
	uid_t		 ru, eu, su;
	gid_t		 rg, eg, sg, g[2];

	if (setgroups((size_t)ng, groups) == -1)
		fatal("setgroups");
	if (setresgid(gid, gid, gid) == -1)
		fatal("setresgid %lu", (unsigned long)gid);
	if (setresuid(uid, uid, uid) == -1)
		fatal("setresuid %lu", (unsigned long)uid);
	if (setuid(0) != -1 || setgid(0) != -1)
		fatalx("could regain root after the drop");
	if (getresuid(&ru, &eu, &su) == -1 || getresgid(&rg, &eg, &sg) == -1 ||
	    ru != uid || eu != uid || su != uid || rg != gid || eg != gid ||
	    sg != gid || getgroups(2, g) != ng ||
	    (ng == 1 && g[0] != groups[0]))
		fatalx("privilege drop did not hold");
	if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) == -1)
		fatal("prctl(PR_SET_NO_NEW_PRIVS)");
}

/*
 * The pre-login child's cell: empty chroot, the unprivileged user, no
 * groups, no new privileges, no new files, processes or descriptors.
 */
static void
auth_sandbox(const char *root, uid_t uid, gid_t gid)
{
	struct rlimit	 zero = { 0, 0 }, three = { 3, 3 };

	if (chroot(root) == -1)
		fatal("chroot %s", root);
	if (chdir("/") == -1)
		fatal("chdir /");
	auth_drop(uid, gid, 0, NULL);
	/*
	 * No new descriptor: 0, 1 and 2 are taken and 3 is the limit (poll(2)
	 * needs nfds within it); the monitor socket and syslog's stay
	 * usable.  No file size but for a -d log, which may be a file.
	 */
	if (fcntl(0, F_GETFD) == -1 || fcntl(1, F_GETFD) == -1 ||
	    fcntl(2, F_GETFD) == -1)
		fatalx("descriptors 0, 1, 2 must be open");
	if (setrlimit(RLIMIT_NOFILE, &three) == -1 ||
	    setrlimit(RLIMIT_NPROC, &zero) == -1 ||
	    (!opt.debug && setrlimit(RLIMIT_FSIZE, &zero) == -1))
		fatal("setrlimit");
}

/*
 * The pre-login child: runs AUTHORIZATION, sends each login to the root
 * parent (pid mon) over sp as one struct auth_rec, and waits for the
 * verdict byte.
 */
static void
auth_prelogin(int sp, int in, int out, const char *root, uid_t uid,
    gid_t gid, pid_t mon)
{
	static struct auth_rec rec;
	struct pop_cred	 cred;
	ssize_t		 n;
	int		 first;
	char		 v;

	sp = auth_child_fds(in, out, sp);
	auth_sandbox(root, uid, gid);
	/* Killed with the monitor (kill -9 of it would leave us talking to
	 * the client until the timeout); after the drop, which clears it. */
	if (prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0) == -1)
		fatal("prctl(PR_SET_PDEATHSIG)");
	if (getppid() != mon)		/* the monitor died before that */
		_exit(POP3_EX_SOFTWARE);
	pop_conn_init(&conn, 0, 1);
	sbx_prelogin();
	if (auth_proxied)
		auth_proxy_child(sp);
	for (first = 1;; first = 0) {
		if (!pop_authorize(&conn, &cred, first))
			_exit(auth_status(&conn));
		/* Replies so far go out before anyone else talks. */
		(void)pop_flush(&conn);
		memset(&rec, 0, sizeof(rec));
		(void)snprintf(rec.user, sizeof(rec.user), "%s", cred.user);
		(void)snprintf(rec.pass, sizeof(rec.pass), "%s", cred.pass);
		(void)snprintf(rec.mech, sizeof(rec.mech), "%s", cred.mech);
		rec.ilen = (uint32_t)conn.ilen;
		memcpy(rec.ibuf, conn.ibuf, conn.ilen);
		pop_wipe(cred.pass, sizeof(cred.pass));
		n = send(sp, &rec, sizeof(rec), MSG_NOSIGNAL);
		pop_wipe(&rec, sizeof(rec));
		if (n != (ssize_t)sizeof(rec))
			fatal("send to monitor");
		if (auth_recv(sp, &v, 1, -1) != 1)
			fatalx("monitor gone");
		if (v == 'y')
			_exit(POP3_EX_OK);
		if (v == 'e')
			_exit(pop_auth_error(&conn, &cred));
		if (pop_auth_failed(&conn, &cred) == -1)
			_exit(POP3_EX_NOUSER);
	}
}

/*
 * The record as the root parent sees it: from a process a bug may have
 * handed to an attacker.  n is the size received (MSG_TRUNC: the size
 * sent).  0 if it may be used, -1 (logged) if not.
 */
static int
auth_rec_check(const struct auth_rec *r, size_t n)
{
	const char	*why = NULL;

	if (n != sizeof(*r))
		why = "wrong size";
	else if (memchr(r->user, '\0', sizeof(r->user)) == NULL ||
	    memchr(r->pass, '\0', sizeof(r->pass)) == NULL ||
	    memchr(r->mech, '\0', sizeof(r->mech)) == NULL)
		why = "unterminated field";
	else if (!pop_user_syntax(r->user, strlen(r->user)))
		why = "impossible user name";
	else if (strcmp(r->mech, "USER") != 0 && strcmp(r->mech, "PLAIN") != 0)
		why = "unknown mechanism";
	else if (r->ilen > POP3_INBUF)
		why = "pending input too long";
	if (why != NULL) {
		pop_log(LOG_ERR, "pre-login process sent a bad record (%s); "
		    "killing it", why);
		return -1;
	}
	return 0;
}

/*
 * Checks one record's login in the root parent: in the monitor itself
 * for a held PAM session (the handle stays there), else in a check
 * process.  On AUTH_OK *u is the user to become and *hp the open PAM
 * handle (or NULL).
 */
static int
auth_verify(const struct auth_rec *r, struct pop_user *u, pam_handle_t **hp)
{
	*hp = NULL;
	memset(u, 0, sizeof(*u));
	if (!auth_user_valid(r->user)) {
		auth_log_fail(r->user, AUTH_UNKNOWN, "invalid user name");
		return AUTH_UNKNOWN;
	}
	if (opt.backend == POP3_AUTH_PAM && opt.pam_session == POP3_PAM_HELD)
		return auth_pam(r->user, r->pass, u, hp, 1);
	return auth_checked(r, u);
}

/*
 * The login check, as root, in a short-lived child (the check process):
 * the password file's hashes, PAM's modules and every copy of the
 * password they make stay in a process that ends with the check, never
 * in the one that becomes the user.  The child returns only a verdict
 * and the user's ids, name and mailbox (struct auth_res).  Not used for a
 * held PAM session, whose handle must stay in the monitor.
 */
static int
auth_checked(const struct auth_rec *r, struct pop_user *u)
{
	struct auth_res	 res;
	ssize_t		 n;
	pid_t		 pid;
	int		 p[2], st;
	char		 why[96];

	/* Each failure here is a "login error" line with the address. */
	if (pipe2(p, O_CLOEXEC) == -1) {
		(void)snprintf(why, sizeof(why), "pipe: %s", strerror(errno));
		auth_log_fail(r->user, AUTH_ERROR, why);
		return AUTH_ERROR;
	}
	if ((pid = auth_fork(0)) == -1) {
		(void)snprintf(why, sizeof(why), "fork of the login check "
		    "process: %s", strerror(errno));
		auth_log_fail(r->user, AUTH_ERROR, why);
		(void)close(p[0]);
		(void)close(p[1]);
		return AUTH_ERROR;
	}
	if (pid == 0) {
		(void)close(p[0]);
		auth_check_run(r, &res);
		n = write(p[1], &res, sizeof(res));
		_exit(n == (ssize_t)sizeof(res) ? 0 : POP3_EX_OSERR);
	}
	(void)close(p[1]);
	memset(&res, 0, sizeof(res));
	n = auth_readn(p[0], &res, sizeof(res));
	(void)close(p[0]);
	st = auth_wait(pid);
	if (n != (ssize_t)sizeof(res) || st != 0 || res.verdict < AUTH_OK ||
	    res.verdict > AUTH_ERROR ||
	    memchr(res.name, '\0', sizeof(res.name)) == NULL ||
	    memchr(res.mailbox, '\0', sizeof(res.mailbox)) == NULL) {
		auth_log_fail(r->user, AUTH_ERROR, "login check process "
		    "failed");
		return AUTH_ERROR;
	}
	if (opt.backend == POP3_AUTH_PAM)
		return auth_pam_result(r, &res, u);
	return auth_passwd_result(r, &res, u);
}

/* The check process's work: PAM (which logs its failures), or the file. */
static void
auth_check_run(const struct auth_rec *r, struct auth_res *res)
{
	struct auth_pwent e;
	struct pop_user	 u;
	pam_handle_t	*h;

	memset(res, 0, sizeof(*res));
	if (opt.backend == POP3_AUTH_PAM) {
		res->verdict = auth_pam(r->user, r->pass, &u, &h, 1);
		if (res->verdict == AUTH_OK) {
			auth_pam_close(h);
			res->ids = 1;
			res->uid = (uint32_t)u.uid;
			res->gid = (uint32_t)u.gid;
			memcpy(res->name, u.name, sizeof(res->name));
		}
		return;
	}
	res->verdict = pw_check(opt.passwd_file, r->user, r->pass, &e, 1);
	if (res->verdict == AUTH_OK) {
		res->ids = e.ids;
		res->uid = (uint32_t)e.uid;
		res->gid = (uint32_t)e.gid;
		memcpy(res->mailbox, e.mailbox, sizeof(res->mailbox));
	}
	pop_wipe(&e, sizeof(e));
}

/*
 * PAM's verdict from the check process, which logged any failure; the
 * user it names (PAM_USER) checked again here.
 */
static int
auth_pam_result(const struct auth_rec *r, const struct auth_res *res,
    struct pop_user *u)
{
	if (res->verdict != AUTH_OK)
		return res->verdict;
	if (!auth_user_valid(res->name) ||
	    auth_user_ids(u, 1, (uid_t)res->uid, (gid_t)res->gid) == -1 ||
	    auth_mailbox(u, res->name, NULL) == -1) {
		auth_log_fail(r->user, AUTH_BADPASS, "check process named a "
		    "user refused here");
		return AUTH_BADPASS;
	}
	return AUTH_OK;
}

/* The password file's verdict: logged, and the user's ids resolved. */
static int
auth_passwd_result(const struct auth_rec *r, const struct auth_res *res,
    struct pop_user *u)
{
	struct passwd	*pw;
	uid_t		 uid;
	gid_t		 gid;

	switch (res->verdict) {
	case AUTH_OK:
		break;
	case AUTH_BADPASS:
		auth_log_fail(r->user, res->verdict, "wrong password");
		return res->verdict;
	case AUTH_UNKNOWN:
		auth_log_fail(r->user, res->verdict, "no such user");
		return res->verdict;
	default:
		auth_log_fail(r->user, res->verdict, "password file unusable");
		return res->verdict;
	}
	if (res->ids) {
		uid = (uid_t)res->uid;
		gid = (gid_t)res->gid;
	} else if ((pw = getpwnam(r->user)) != NULL) {
		uid = pw->pw_uid;
		gid = pw->pw_gid;
	} else {
		auth_log_fail(r->user, AUTH_BADPASS, "no uid in the password "
		    "file and no system user of that name");
		return AUTH_BADPASS;
	}
	if (auth_user_ids(u, 1, uid, gid) == -1 ||
	    auth_mailbox(u, r->user, res->mailbox) == -1) {
		auth_log_fail(r->user, AUTH_BADPASS, "user refused");
		return AUTH_BADPASS;
	}
	return AUTH_OK;
}

/*
 * Becomes the user for good, in the user's process: the client (in, out)
 * on 0 and 1 and no other descriptor (auth_child_fds); the mail group as the
 * only supplementary group when the mailbox directory is group mail and
 * group-writable (Debian's 2775 /var/mail: the dotlock and the update
 * journal are created there, whatever --lock says), else none; then gid,
 * then uid; and checks that none of it can be undone.
 */
static void
auth_become(const struct pop_user *u, int in, int out)
{
	struct group	*gr;
	struct stat	 st;
	char		 dir[sizeof(u->mailbox)];
	char		*slash;
	gid_t		 mail = 0;
	int		 ng = 0;

	memcpy(dir, u->mailbox, sizeof(dir));
	dir[sizeof(dir) - 1] = '\0';
	if ((slash = strrchr(dir, '/')) != NULL) {
		if (slash == dir)
			slash++;
		*slash = '\0';
	}
	/* The cheap test first: the group database only for such a dir. */
	if (slash != NULL && stat(dir, &st) == 0 &&
	    (st.st_mode & S_IWGRP) != 0 && st.st_gid != 0 &&
	    (gr = getgrnam("mail")) != NULL && st.st_gid == gr->gr_gid) {
		mail = gr->gr_gid;
		ng = 1;
	}
	/* After the lookups (nothing they opened stays), as root (syslog). */
	(void)auth_child_fds(in, out, -1);
	auth_drop(u->uid, u->gid, ng, &mail);
}

/*
 * The directory of the user's index cache (cache.c) into u->cache, made
 * before the sandbox closes the filesystem.  As root (root = 1): DIR/USER,
 * DIR root's and writable by root alone (made 0755 if missing), USER made
 * here 0700 and given to the user (DIR must let them through: o+x);
 * root opens it only as a path (O_PATH), so that it needs no capability
 * to read another's directory (pop3d@.service grants CAP_CHOWN alone).
 * Not root: DIR itself, the user's and
 * writable by the user alone (made 0700 if missing).  Anything else (a
 * link, another owner, writable by others) is logged and means no cache;
 * the session goes on as without one.
 */
static void
auth_cachedir(struct pop_user *u, int root)
{
	struct stat	 st;
	const char	*dir = opt.cache_dir, *why = NULL;
	char		 def[sizeof(CACHE_DIR_USER) + 24];
	int		 fd, sub = -1, made;

	u->cache[0] = '\0';
	if (!opt.cache)
		return;
	if (dir == NULL)
		dir = root ? CACHE_DIR : (snprintf(def, sizeof(def), "%s%lu",
		    CACHE_DIR_USER, (unsigned long)u->uid), def);
	made = mkdir(dir, 0700) == 0;
	if ((!made && errno != EEXIST) || (fd = open(dir, O_RDONLY |
	    O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)) == -1) {
		pop_log(LOG_WARNING, "index cache %s: %s", dir,
		    strerror(errno));
		return;
	}
	/* Root's umask is 077: the users must get through to their own. */
	if (made && root)
		(void)fchmod(fd, 0755);
	if (fstat(fd, &st) == -1 || st.st_uid != (root ? 0 : u->uid) ||
	    (st.st_mode & 022) != 0)
		why = "not a directory of its own user's alone";
	else if (root && (st.st_mode & S_IXOTH) == 0)
		why = "the users cannot reach their directories in it";
	else if (root && ((mkdirat(fd, u->name, 0700) == -1 &&
	    errno != EEXIST) || (sub = openat(fd, u->name, O_PATH |
	    O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)) == -1 ||
	    fstat(sub, &st) == -1 || (st.st_uid == 0 &&
	    (fchownat(sub, "", u->uid, u->gid, AT_EMPTY_PATH) == -1 ||
	    fstat(sub, &st) == -1))))
		why = strerror(errno);
	else if (root && (st.st_uid != u->uid || (st.st_mode & 022) != 0))
		why = "the user's directory is not the user's alone";
	if (why != NULL)
		pop_log(LOG_WARNING, "index cache %s: %s: not used", dir, why);
	else if (snprintf(u->cache, sizeof(u->cache), root ? "%s/%s" : "%s",
	    dir, u->name) >= (int)sizeof(u->cache))
		u->cache[0] = '\0';
	if (sub != -1)
		(void)close(sub);
	(void)close(fd);
}

/*
 * Waits for pid; its exit status, POP3_EX_CLOSED if a signal that ends a
 * session (one of those we forward, from us or not, or SIGPIPE) ended it,
 * else POP3_EX_SOFTWARE if it was killed.  The
 * child stops being the one signals go to while it is still a zombie, so
 * its pid cannot be anyone else's yet.
 */
static int
auth_wait(pid_t pid)
{
	siginfo_t	 si;
	sigset_t	 fwd;
	int		 st;

	memset(&si, 0, sizeof(si));
	while (waitid(P_PID, (id_t)pid, &si, WEXITED | WNOWAIT) == -1)
		if (errno != EINTR)
			fatal("waitid");
	if (auth_child == pid)
		auth_child = 0;
	while (waitpid(pid, &st, 0) == -1)
		if (errno != EINTR)
			fatal("waitpid");
	if (WIFEXITED(st))
		return WEXITSTATUS(st);
	/* One of the signals that end a session, whether we forwarded it or
	 * it came to the child itself (systemd's stop sends SIGTERM to every
	 * process of the service at once). */
	auth_fwdset(&fwd);
	if (WIFSIGNALED(st) && sigismember(&fwd, WTERMSIG(st)) == 1) {
		if (WTERMSIG(st) == auth_sig)
			pop_log(LOG_INFO, "session ended by signal %d",
			    WTERMSIG(st));
		else
			pop_log(LOG_INFO, "process %ld ended by signal %d",
			    (long)pid, WTERMSIG(st));
		return POP3_EX_CLOSED;
	}
	if (WIFSIGNALED(st) && WTERMSIG(st) != SIGKILL)
		pop_log(LOG_ERR, "process %ld killed by signal %d", (long)pid,
		    WTERMSIG(st));
	return WIFSIGNALED(st) && WTERMSIG(st) == SIGPIPE ?
	    POP3_EX_CLOSED : POP3_EX_SOFTWARE;
}

/* SIGTERM, SIGHUP, SIGINT to the root parent go to the current child. */
static void
auth_forward(int sig)
{
	int	saved = errno;

	auth_sig = sig;
	if (auth_child > 0)
		(void)kill((pid_t)auth_child, sig);
	errno = saved;
}

/* Sleeps until t, or until a signal for the session comes. */
static void
auth_sleep_until(const struct timespec *t)
{
	while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, t, NULL) ==
	    EINTR && auth_sig == 0)
		continue;
}

/*
 * Receives one datagram from fd, waiting at most ms (-1: no limit).
 * Returns the size sent (MSG_TRUNC: even if larger than size), 0 at end
 * of file, -1 on error or timeout.
 */
static ssize_t
auth_recv(int fd, void *buf, size_t size, int ms)
{
	struct pollfd	 pfd = { fd, POLLIN, 0 };
	ssize_t		 n;

	for (;;) {
		if (ms >= 0) {
			n = poll(&pfd, 1, ms);
			if (n == -1 && errno == EINTR)
				continue;
			if (n <= 0)
				return -1;
		}
		n = recv(fd, buf, size, MSG_TRUNC);
		if (n == -1 && errno == EINTR)
			continue;
		return n;
	}
}

/* Reads up to size bytes from a pipe, until end of file; -1 on error. */
static ssize_t
auth_readn(int fd, void *buf, size_t size)
{
	size_t	 got = 0;
	ssize_t	 n;

	while (got < size) {
		n = read(fd, (char *)buf + got, size - got);
		if (n == -1 && errno == EINTR)
			continue;
		if (n == -1)
			return -1;
		if (n == 0)
			break;
		got += (size_t)n;
	}
	return (ssize_t)got;
}

/* fn handles SIGTERM, SIGHUP and SIGINT, none blocked while it runs. */
static void
auth_sighandler(void (*fn)(int))
{
	struct sigaction sa;

	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = fn;
	if (sigemptyset(&sa.sa_mask) == -1 ||
	    sigaction(SIGTERM, &sa, NULL) == -1 ||
	    sigaction(SIGHUP, &sa, NULL) == -1 ||
	    sigaction(SIGINT, &sa, NULL) == -1)
		fatal("sigaction");
}

/* The signals the monitor forwards: SIGTERM, SIGHUP, SIGINT. */
static void
auth_fwdset(sigset_t *set)
{
	if (sigemptyset(set) == -1 || sigaddset(set, SIGTERM) == -1 ||
	    sigaddset(set, SIGHUP) == -1 || sigaddset(set, SIGINT) == -1)
		fatal("sigaddset");
}

/*
 * fork(2) with SIGTERM, SIGHUP and SIGINT held until both sides know
 * their part: the child starts with the default actions of a session,
 * and the parent forwards to the new child (forward) from its first
 * instant, so no signal is lost between fork and "auth_child = pid", nor
 * sent to the pid of a child already reaped.  A child that signals go to
 * is not started once one came (-1, EINTR): it would never hear of it.
 */
static pid_t
auth_fork(int forward)
{
	sigset_t	 set, old;
	pid_t		 pid;
	int		 saved;

	auth_fwdset(&set);
	if (pthread_sigmask(SIG_BLOCK, &set, &old) != 0)
		fatalx("pthread_sigmask");
	if (forward && auth_sig != 0) {
		pid = -1;
		saved = EINTR;
	} else {
		pid = fork();
		saved = errno;
	}
	if (pid == 0) {
		auth_child = 0;
		if (signal(SIGTERM, SIG_DFL) == SIG_ERR ||
		    signal(SIGHUP, SIG_DFL) == SIG_ERR ||
		    signal(SIGINT, SIG_DFL) == SIG_ERR)
			fatal("signal");
	} else if (pid > 0 && forward)
		auth_child = pid;
	if (pthread_sigmask(SIG_SETMASK, &old, NULL) != 0)
		fatalx("pthread_sigmask");
	errno = saved;
	return pid;
}

/*
 * What the monitor holds across its phases: the client's private
 * descriptors, the chroot of the pre-login child, and after a good login
 * the record, the user and the open PAM handle.  One per process,
 * static in auth_root().
 */
struct auth_mon {
	struct auth_rec	 rec;
	struct pop_user	 u;
	pam_handle_t	*pamh;
	char		 empty[64];
	int		 tmp;		/* empty is ours to remove */
	int		 in, out;	/* the client */
	time_t		 start;		/* the session's, pop_clock() */
};

/* The monitor's phases end with an exit status, or with one of these. */
#define AUTH_LOGGED_IN	(-1)	/* a good login: the user's process next */
#define AUTH_SIGNALLED	(-2)	/* a signal before the session began */
#define AUTH_CHILD_GONE	(-3)	/* the pre-login child ended by itself */

/*
 * Root: the monitor.  Forks the pre-login child, checks its logins, and
 * on success becomes the user's process itself, or, holding a PAM
 * session, forks it and waits for it.  Every way out of the session but
 * the user's process passes the one cleanup at the end.
 */
static int
auth_root(void)
{
	static struct auth_mon m;
	uid_t		 pre_uid;
	gid_t		 pre_gid;
	int		 status;

	m.start = pop_clock();
	auth_hygiene();
	auth_signals();
	if (auth_prelogin_ids(&pre_uid, &pre_gid) == -1)
		return POP3_EX_CONFIG;
	auth_peer_init(0);
	auth_emptydir(m.empty, sizeof(m.empty), &m.tmp);
	auth_client_move(&m.in, &m.out);
	status = auth_monitor_prelogin(&m, pre_uid, pre_gid);
	if (m.tmp)
		(void)rmdir(m.empty);
	if (status == AUTH_LOGGED_IN && m.pamh == NULL)
		status = auth_user_here(&m);
	else if (status == AUTH_LOGGED_IN)
		status = auth_monitor_user(&m);
	if (status == AUTH_SIGNALLED) {
		pop_log(LOG_INFO, "signal %d before the session began",
		    (int)auth_sig);
		status = POP3_EX_CLOSED;
	}
	pop_wipe(&m.rec, sizeof(m.rec));
	auth_pam_close(m.pamh);
	return status;
}

/*
 * SIGTERM, SIGHUP, SIGINT forwarded from the start, none left blocked by
 * whoever ran us; SIGPIPE ignored.
 */
static void
auth_signals(void)
{
	struct sigaction sa;

	auth_sighandler(auth_forward);
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = SIG_IGN;
	if (sigaction(SIGPIPE, &sa, NULL) == -1)
		fatal("sigaction");
	auth_fwdset(&sa.sa_mask);
	if (pthread_sigmask(SIG_UNBLOCK, &sa.sa_mask, NULL) != 0)
		fatalx("pthread_sigmask");
}

/* The --prelogin-user's uid and gid; -1 (logged) if it is unusable. */
static int
auth_prelogin_ids(uid_t *uid, gid_t *gid)
{
	struct passwd	*pw;

	if ((pw = getpwnam(opt.prelogin_user)) == NULL) {
		pop_log(LOG_ERR, "pre-login user %s does not exist (create it: "
		    "see pop3d(8))", opt.prelogin_user);
		return -1;
	}
	if (pw->pw_uid == 0 || pw->pw_gid == 0) {
		pop_log(LOG_ERR, "pre-login user %s must not have uid or gid 0",
		    opt.prelogin_user);
		return -1;
	}
	*uid = pw->pw_uid;
	*gid = pw->pw_gid;
	return 0;
}

/*
 * The client moves to private descriptors (*in, *out) that only the
 * children use; 0, 1 (and 2 without -d) become /dev/null, so nothing that
 * runs here, PAM modules included, can talk to the client.
 */
static void
auth_client_move(int *in, int *out)
{
	int	null;

	if ((*in = fcntl(0, F_DUPFD_CLOEXEC, 3)) == -1 ||
	    (*out = fcntl(1, F_DUPFD_CLOEXEC, 3)) == -1)
		fatal("client descriptors");
	if ((null = open("/dev/null", O_RDWR | O_CLOEXEC)) == -1)
		fatal("/dev/null");
	if (dup2(null, 0) == -1 || dup2(null, 1) == -1 ||
	    (!opt.debug && dup2(null, 2) == -1) || close(null) == -1)
		fatal("dup2 /dev/null");
}

/*
 * The pre-login phase: forks the pre-login child, answers its logins, and
 * reaps it.  AUTH_LOGGED_IN (m->rec, m->u and m->pamh hold the login),
 * AUTH_SIGNALLED, or the session's exit status.
 */
static int
auth_monitor_prelogin(struct auth_mon *m, uid_t uid, gid_t gid)
{
	const pid_t	 mon = getpid();
	pid_t		 pid;
	int		 sp[2], r, status;
	char		 v;

	if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sp) == -1)
		fatal("socketpair");
	if ((pid = auth_fork(1)) == -1 && errno != EINTR)
		fatal("fork");
	if (pid == -1)
		return AUTH_SIGNALLED;
	if (pid == 0) {
		(void)close(sp[0]);
		auth_prelogin(sp[1], m->in, m->out, m->empty, uid, gid, mon);
	}
	if (close(sp[1]) == -1)
		fatal("close");
	if (auth_proxied && auth_proxy_monitor(sp[0]) == -1)
		r = POP3_EX_SOFTWARE;
	else
		r = auth_logins(m, sp[0]);
	/* The pre-login child ends before the user's process talks. */
	/* (A child that is gone already, signalled, cannot take the "y".) */
	if (r == AUTH_LOGGED_IN && send(sp[0], "y", 1, MSG_NOSIGNAL) == 1 &&
	    auth_recv(sp[0], &v, 1, AUTH_CHILD_EXIT_MS) != 0)
		pop_log(LOG_WARNING, "pre-login process did not end; killing "
		    "it");
	if (r != AUTH_CHILD_GONE)
		(void)kill(pid, SIGKILL);
	status = auth_wait(pid);
	(void)close(sp[0]);
	if (r == AUTH_CHILD_GONE)
		return status;
	if (r != AUTH_LOGGED_IN)
		return r;
	if (auth_sig != 0)
		return AUTH_SIGNALLED;
	/* A signal that ends a session, sent to the child itself while the
	 * login was checked: the session ends so, before the user's. */
	if (status == POP3_EX_CLOSED)
		return POP3_EX_CLOSED;
	if (status != POP3_EX_OK) {
		pop_log(LOG_ERR, "pre-login process ended with status %d",
		    status);
		return POP3_EX_SOFTWARE;
	}
	return AUTH_LOGGED_IN;
}

/*
 * Answers the pre-login child's records on sp, each after the fixed
 * deadline of a failure, until a good login (AUTH_LOGGED_IN), its end
 * (AUTH_CHILD_GONE: QUIT, EOF, timeout, or the last failure), a signal
 * (AUTH_SIGNALLED) or a record that shows it is not ours
 * (POP3_EX_SOFTWARE).
 */
static int
auth_logins(struct auth_mon *m, int sp)
{
	struct timespec	 t;
	ssize_t		 n;
	int		 fails, r;

	for (fails = 0;; fails++) {
		memset(&m->rec, 0, sizeof(m->rec));
		n = auth_recv(sp, &m->rec, sizeof(m->rec),
		    POP3_SESSION_MAX * 1000);
		if (n == 0)
			return AUTH_CHILD_GONE;
		(void)clock_gettime(CLOCK_MONOTONIC, &t);
		if (n < 0 || auth_rec_check(&m->rec, (size_t)n) == -1 ||
		    fails >= POP3_AUTH_FAIL_MAX) {
			if (n < 0 || fails >= POP3_AUTH_FAIL_MAX)
				pop_log(LOG_ERR, "pre-login process misbehaved; "
				    "killing it");
			pop_wipe(&m->rec, sizeof(m->rec));
			return POP3_EX_SOFTWARE;
		}
		r = auth_verify(&m->rec, &m->u, &m->pamh);
		pop_wipe(m->rec.pass, sizeof(m->rec.pass));
		if (auth_sig != 0)
			return AUTH_SIGNALLED;
		if (r == AUTH_OK)
			return AUTH_LOGGED_IN;
		/* Our own deadline too: a subverted child gets no speed. */
		pop_after_ms(&t, opt.fail_delay_ms);
		auth_sleep_until(&t);
		if (auth_sig != 0)
			return AUTH_SIGNALLED;
		/* "e": the login could not be checked (pop_auth_error()). */
		if (send(sp, r == AUTH_ERROR ? "e" : "n", 1, MSG_NOSIGNAL) != 1)
			pop_log(LOG_ERR, "verdict to pre-login: %s",
			    strerror(errno));
	}
}

/* The one log line of a good login. */
static void
auth_log_login(const struct auth_mon *m)
{
	pop_log(LOG_INFO, "login: user %s uid %lu mech %s from %s", m->u.name,
	    (unsigned long)m->u.uid, m->rec.mech, auth_peer);
}

/*
 * No PAM session to hold: the monitor, the pid that inetd or systemd
 * started and waits for, becomes the user's process itself, so no root
 * process stays (popa3d's two processes).  A signal already forwarded
 * ends the session here (AUTH_SIGNALLED); from the drop on, SIGTERM,
 * SIGHUP and SIGINT end it with status 1, as the monitor's would.
 */
static int
auth_user_here(struct auth_mon *m)
{
	sigset_t	 set, old;

	auth_log_login(m);
	auth_fwdset(&set);
	if (pthread_sigmask(SIG_BLOCK, &set, &old) != 0)
		fatalx("pthread_sigmask");
	if (auth_sig != 0) {
		(void)pthread_sigmask(SIG_SETMASK, &old, NULL);
		return AUTH_SIGNALLED;
	}
	auth_sighandler(auth_sig_exit);
	if (pthread_sigmask(SIG_SETMASK, &old, NULL) != 0)
		fatalx("pthread_sigmask");
	auth_user_process(m);
}

/*
 * SIGTERM, SIGHUP, SIGINT in the user's process that the monitor became:
 * status 1 (POP3_EX_CLOSED), as a monitor reports a session it ended by
 * a signal.  Nothing else is safe in a handler; the update journal makes
 * an exit at any point safe for the mailbox.
 */
static void
auth_sig_exit(int sig)
{
	(void)sig;
	_exit(POP3_EX_CLOSED);
}

/*
 * The user's phase of a held PAM session: forks the user's process
 * (auth_user_process) with the login of m and waits for it; its exit
 * status, or AUTH_SIGNALLED.
 */
static int
auth_monitor_user(struct auth_mon *m)
{
	pid_t		 pid;

	auth_log_login(m);
	if ((pid = auth_fork(1)) == -1) {
		if (errno == EINTR)
			return AUTH_SIGNALLED;
		pop_log(LOG_ERR, "fork: %s", strerror(errno));
		return POP3_EX_OSERR;
	}
	if (pid == 0)
		auth_user_process(m);
	pop_wipe(&m->rec, sizeof(m->rec));
	if (close(m->in) == -1 || close(m->out) == -1)
		pop_log(LOG_WARNING, "close: %s", strerror(errno));
	return auth_wait(pid);
}

/* The user's sandbox, with the rules of the user's files (maildrop.c). */
static void
auth_user_sandbox(const struct pop_user *u)
{
	struct sbx_rule	rule[SBX_RULES_MAX];

	sbx_user(rule, md_prepare(u, rule, SBX_RULES_MAX));
}

/*
 * The user's process: becomes the user, takes the client and what the
 * client pipelined after the login, and runs TRANSACTION and UPDATE.
 */
static void
auth_user_process(struct auth_mon *m)
{
	int	status;

	auth_cachedir(&m->u, 1);
	auth_become(&m->u, m->in, m->out);
	pop_conn_init(&conn, 0, 1);
	conn.start = m->start;		/* the limit counts from there */
	memcpy(conn.ibuf, m->rec.ibuf, m->rec.ilen);
	conn.ilen = m->rec.ilen;
	pop_wipe(&m->rec, sizeof(m->rec));
	auth_user_sandbox(&m->u);
	status = pop_transaction(&conn, &m->u);
	/*
	 * _exit: the monitor's atexit handlers and library destructors
	 * (PAM's modules, libaudit...) are the monitor's business, and
	 * running them here cost a tenth of the session's page faults.
	 * Under ASan, exit() lets LeakSanitizer check this process (main()
	 * would only have returned the status).
	 */
#ifndef POP3D_ASAN
	_exit(status);
#else
	exit(status);
#endif
}
