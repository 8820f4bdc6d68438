/*
 * logstub.c: log.c's functions for the targets that do not link log.c
 * (fuzz_mbox.c, fuzz_passwd.c, fuzz_cache.c, which #include it after
 * common.h): log lines go to stderr only when FUZZ_LOG is set (to
 * reproduce a finding), and fatal()/fatalx() are crashes (fz_exit).
 */

void
pop_log(int prio, const char *fmt, ...)
{
	va_list	 ap;

	(void)prio;
	if (getenv("FUZZ_LOG") == NULL)
		return;
	va_start(ap, fmt);
	(void)vfprintf(stderr, fmt, ap);
	va_end(ap);
	(void)fputc('\n', stderr);
}

void
fatal(const char *fmt, ...)
{
	(void)fmt;
	fz_exit(POP3_EX_OSERR);
}

void
fatalx(const char *fmt, ...)
{
	(void)fmt;
	fz_exit(POP3_EX_SOFTWARE);
}

void
pop_wipe(void *p, size_t len)
{
	explicit_bzero(p, len);
}
