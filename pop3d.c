/*
 * pop3d.c: main(): the command line (the options in opt, log.c), then
 * auth.c runs the session (auth_main()), which calls the protocol
 * (proto.c).  The top of the server's files.
 */

#include <sys/types.h>

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <limits.h>
#include <nettle/base64.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <syslog.h>
#include <time.h>
#include <unistd.h>

#include "maildrop.h"
#include "pop3d.h"

#ifdef POP3D_UNIT
/* Unit builds rename main (-Dmain=pop3d_main): give it a prototype. */
int	main(int, char *[]);
#endif

/*
 * main: options, then auth.c runs the session.
 */

static void
usage(void)
{
	(void)printf(
"usage: %s [options]\n"
"  -s, --spool=DIR            mailbox is DIR/USER (default /var/mail)\n"
"  -a, --auth=pam|passwd:FILE authentication backend (default pam)\n"
"  -t, --timeout=SECONDS      idle timeout (default %d)\n"
"  -l, --lock=LIST            comma list of fcntl,dotlock (default both)\n"
"  -P, --pam-service=NAME     PAM service (default pop3)\n"
"  -p, --pam-session=no|login|held\n"
"                             PAM session stack: none (default), opened\n"
"                             and closed at login, or held open by a root\n"
"                             process until the session ends\n"
"  -u, --prelogin-user=NAME   unprivileged user for the pre-login process\n"
"                             (default pop3d)\n"
"  -m, --min-uid=UID          lowest uid served (default 1000)\n"
"  -f, --fail-delay=MS        failed login answered MS after PASS\n"
"                             (default %d)\n"
"  -x, --proxy-from=LIST      comma list of proxy addresses or networks\n"
"                             (ADDR/BITS) that must send a PROXY header\n"
"                             (v1 or v2) naming the client (default none)\n"
"  -c, --cache-dir=DIR        index caches in DIR/USER as root (default\n"
"                             %s); not root, in DIR, the\n"
"                             user's own (default %sUID)\n"
"  -C, --no-cache             no index cache: every login indexes\n"
"  -d, --debug                log to stderr instead of syslog\n"
"  -S, --no-sandbox           no seccomp filters and no Landlock ruleset\n"
"                             (for debugging; default: both on)\n"
"  -V, --version              print the version and exit\n"
"  -h, --help                 print this help and exit\n",
	    POP3D_NAME, POP3_TIMEOUT, POP3_FAIL_DELAY_MS, CACHE_DIR,
	    CACHE_DIR_USER);
}

static void	badopt(const char *, const char *)
		    __attribute__((noreturn));

static void
badopt(const char *what, const char *arg)
{
	(void)fprintf(stderr, "%s: invalid %s: %s\n", POP3D_NAME, what, arg);
	(void)fprintf(stderr, "Try '%s --help'.\n", POP3D_NAME);
	exit(POP3_EX_USAGE);
}

static uint64_t
optnum(const char *what, const char *arg, uint64_t min, uint64_t max)
{
	uint64_t	 n;

	if (pop_number(arg, max, &n) == -1 || n < min)
		badopt(what, arg);
	return n;
}

static int
optlocks(const char *arg)
{
	const char	*p = arg, *e;
	size_t		 len;
	int		 locks = 0;

	for (;;) {
		e = strchr(p, ',');
		len = e == NULL ? strlen(p) : (size_t)(e - p);
		if (len == 5 && strncmp(p, "fcntl", 5) == 0)
			locks |= POP3_LOCK_FCNTL;
		else if (len == 7 && strncmp(p, "dotlock", 7) == 0)
			locks |= POP3_LOCK_DOTLOCK;
		else
			badopt("lock method list", arg);
		if (e == NULL)
			return locks;
		p = e + 1;
	}
}

/* --auth: pam, or passwd:FILE. */
static void
optauth(const char *arg)
{
	if (strcmp(arg, "pam") == 0) {
		opt.backend = POP3_AUTH_PAM;
		opt.passwd_file = NULL;
	} else if (strncmp(arg, "passwd:", 7) == 0 && arg[7] != '\0') {
		opt.backend = POP3_AUTH_PASSWD;
		opt.passwd_file = arg + 7;
	} else
		badopt("authentication backend", arg);
}

/* --pam-session: no, login or held. */
static enum pop_pam_session
optsession(const char *arg)
{
	if (strcmp(arg, "no") == 0)
		return POP3_PAM_NO;
	if (strcmp(arg, "login") == 0)
		return POP3_PAM_LOGIN;
	if (strcmp(arg, "held") != 0)
		badopt("PAM session mode", arg);
	return POP3_PAM_HELD;
}

/* An option that takes a value: sets opt; 0 if ch is not one of them. */
static int
optvalue(int ch, const char *arg)
{
	switch (ch) {
	case 's':
		if (*arg == '\0')
			badopt("spool directory", arg);
		opt.spool = arg;
		break;
	case 'a':
		optauth(arg);
		break;
	case 't':
		opt.timeout = (int)optnum("timeout", arg, 1,
		    POP3_SESSION_MAX);
		break;
	case 'l':
		opt.locks = optlocks(arg);
		break;
	case 'P':
		if (*arg == '\0')
			badopt("PAM service", arg);
		opt.pam_service = arg;
		break;
	case 'p':
		opt.pam_session = optsession(arg);
		break;
	case 'u':
		if (*arg == '\0')
			badopt("pre-login user", arg);
		opt.prelogin_user = arg;
		break;
	case 'm':
		opt.min_uid = (uid_t)optnum("minimum uid", arg, 0,
		    (uid_t)-2);
		break;
	case 'f':
		opt.fail_delay_ms = (int)optnum("fail delay", arg,
		    0, POP3_FAIL_DELAY_MAX);
		break;
	case 'x':
		if (proxy_opt(arg) == -1)
			badopt("proxy address list", arg);
		break;
	case 'c':
		if (*arg != '/')
			badopt("cache directory (not absolute)",
			    arg);
		opt.cache_dir = arg;
		break;
	default:
		return 0;
	}
	return 1;
}

int
main(int argc, char *argv[])
{
	static const struct option longopts[] = {
		{ "spool", required_argument, NULL, 's' },
		{ "auth", required_argument, NULL, 'a' },
		{ "timeout", required_argument, NULL, 't' },
		{ "lock", required_argument, NULL, 'l' },
		{ "pam-service", required_argument, NULL, 'P' },
		{ "pam-session", required_argument, NULL, 'p' },
		{ "prelogin-user", required_argument, NULL, 'u' },
		{ "min-uid", required_argument, NULL, 'm' },
		{ "fail-delay", required_argument, NULL, 'f' },
		{ "proxy-from", required_argument, NULL, 'x' },
		{ "cache-dir", required_argument, NULL, 'c' },
		{ "no-cache", no_argument, NULL, 'C' },
		{ "debug", no_argument, NULL, 'd' },
		{ "no-sandbox", no_argument, NULL, 'S' },
		{ "version", no_argument, NULL, 'V' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	int	 ch;

	while ((ch = getopt_long(argc, argv, "s:a:t:l:P:p:u:m:f:x:c:CdSVh", longopts,
	    NULL)) != -1) {
		if (optvalue(ch, optarg))
			continue;
		switch (ch) {
		case 'C':
			opt.cache = 0;
			break;
		case 'd':
			opt.debug = 1;
			break;
		case 'S':
			opt.sandbox = 0;
			break;
		case 'V':
			(void)printf("%s %s\n", POP3D_NAME, POP3D_VERSION);
			exit(POP3_EX_OK);
		case 'h':
			usage();
			exit(POP3_EX_OK);
		default:	/* getopt_long said what was wrong */
			(void)fprintf(stderr, "Try '%s --help'.\n",
			    POP3D_NAME);
			exit(POP3_EX_USAGE);
		}
	}
	if (optind != argc)
		badopt("argument", argv[optind]);

	/* A client gone mid-write is a write error, not a signal. */
	if (signal(SIGPIPE, SIG_IGN) == SIG_ERR)
		fatal("signal");
	if (!opt.debug)
		openlog(POP3D_NAME, LOG_PID | LOG_NDELAY, LOG_MAIL);
	return auth_main();
}
