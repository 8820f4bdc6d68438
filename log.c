/*
 * log.c: the bottom of the server's files: the options (opt, set once by
 * main() in pop3d.c), logging (syslog, or stderr with -d), the fatal
 * errors and pop_wipe().  Every other file may call it; it calls none.
 */

#include <sys/types.h>

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <syslog.h>
#include <unistd.h>

#include "pop3d.h"

struct pop_opts opt = {
	.spool = "/var/mail",
	.backend = POP3_AUTH_PAM,
	.passwd_file = NULL,
	.pam_service = "pop3",
	.pam_session = POP3_PAM_NO,
	.prelogin_user = "pop3d",
	.min_uid = 1000,
	.timeout = POP3_TIMEOUT,
	.fail_delay_ms = POP3_FAIL_DELAY_MS,
	.locks = POP3_LOCK_FCNTL | POP3_LOCK_DOTLOCK,
	.debug = 0,
	.sandbox = 1,
	.cache = 1,
	.cache_dir = NULL,
};

static void	pop_vlog(int, const char *, va_list)
		    __attribute__((format(printf, 2, 0)));

/*
 * Logging.
 */
static void
pop_vlog(int prio, const char *fmt, va_list ap)
{
	char	 buf[1024];

	if (opt.debug) {
		(void)vsnprintf(buf, sizeof(buf), fmt, ap);
		(void)fprintf(stderr, "%s[%ld]: %s\n", POP3D_NAME,
		    (long)getpid(), buf);
	} else
		vsyslog(prio, fmt, ap);
}

void
pop_log(int prio, const char *fmt, ...)
{
	va_list	 ap;

	va_start(ap, fmt);
	pop_vlog(prio, fmt, ap);
	va_end(ap);
}

void
fatal(const char *fmt, ...)
{
	char	 buf[512];
	va_list	 ap;
	int	 saved = errno;

	va_start(ap, fmt);
	(void)vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	pop_log(LOG_ERR, "fatal: %s: %s", buf, strerror(saved));
	_exit(POP3_EX_OSERR);
}

void
fatalx(const char *fmt, ...)
{
	char	 buf[512];
	va_list	 ap;

	va_start(ap, fmt);
	(void)vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	pop_log(LOG_ERR, "fatal: %s", buf);
	_exit(POP3_EX_SOFTWARE);
}

void
pop_wipe(void *p, size_t len)
{
	explicit_bzero(p, len);
}
