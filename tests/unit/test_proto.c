/*
 * test_proto.c: cmocka tests of proto.c, the protocol: the line reader fed
 * byte by byte and in one chunk, over-long lines, NUL and CR, the argument
 * rules, wrong-state and unknown commands, the bad-command limit, message
 * numbers, USER/PASS and AUTH PLAIN, failed logins, and a TRANSACTION over a
 * crafted mbox.  The client is a pipe pair: the test writes the client's
 * bytes, runs pop_authorize() or pop_transaction(), and reads the replies.
 */

#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "maildrop.h"
#include "pop3d.h"

#define GREETING	"+OK pop3d ready\r\n"
#define BYE		"+OK pop3d signing off\r\n"
#define TOOLONG		"-ERR line too long\r\n"
#define SYNTAX		"-ERR syntax error\r\n"
#define UNKNOWN		"-ERR unknown command\r\n"
#define WRONGSTATE	"-ERR command not valid in this state\r\n"
#define BADNUM		"-ERR invalid message number\r\n"
#define NOMSG		"-ERR no such message\r\n"
#define BADB64		"-ERR invalid base64 data\r\n"
#define MALFORMED	"-ERR malformed PLAIN response\r\n"
#define CANCELLED	"-ERR authentication cancelled\r\n"
/* The same in both states (RFC 2449 section 5). */
#define CAPA		"+OK capability list follows\r\nTOP\r\nUSER\r\n" \
			"UIDL\r\nRESP-CODES\r\nPIPELINING\r\n" \
			"AUTH-RESP-CODE\r\nSASL PLAIN\r\n" \
			"IMPLEMENTATION pop3d-" POP3D_VERSION "\r\n.\r\n"

/* The server's connection (64 KB: not on the stack) and the client ends. */
static struct pop_conn	 conn;
static int		 client_w = -1, client_r = -1;
static char		 out[1 << 21];

static void
h_open(int outpipe)
{
	int	 in[2], o[2];

	assert_int_equal(pipe(in), 0);
	assert_int_equal(pipe(o), 0);
	assert_true(fcntl(in[1], F_SETPIPE_SZ, 1 << 20) > 0);
	assert_true(fcntl(o[1], F_SETPIPE_SZ, outpipe) > 0);
	assert_int_equal(fcntl(o[0], F_SETFL, O_NONBLOCK), 0);
	pop_conn_init(&conn, in[0], o[1]);
	client_w = in[1];
	client_r = o[0];
}

static int
setup(void **state)
{
	(void)state;
	opt.debug = 1;
	opt.timeout = 5;
	opt.fail_delay_ms = 0;
	h_open(1 << 20);
	return 0;
}

static int
teardown(void **state)
{
	(void)state;
	(void)close(conn.in);
	(void)close(conn.out);
	if (client_w != -1)
		(void)close(client_w);
	(void)close(client_r);
	client_w = client_r = -1;
	return 0;
}

/* The client writes (all of it fits in the pipe). */
static void
feed(const char *p, size_t len)
{
	ssize_t	 n;

	while (len > 0) {
		n = write(client_w, p, len);
		assert_true(n > 0);
		p += n;
		len -= (size_t)n;
	}
}

static void
feeds(const char *s)
{
	feed(s, strlen(s));
}

static void
hangup(void)
{
	assert_int_equal(close(client_w), 0);
	client_w = -1;
}

/* What the server said so far. */
static const char *
said(void)
{
	size_t	 len = 0;
	ssize_t	 n;

	while ((n = read(client_r, out + len, sizeof(out) - 1 - len)) > 0)
		len += (size_t)n;
	out[len] = '\0';
	return out;
}

/* Runs AUTHORIZATION over a whole script followed by EOF. */
static int
authorize(const char *script, size_t len, struct pop_cred *cred)
{
	feed(script, len);
	hangup();
	return pop_authorize(&conn, cred, 1);
}

static int
authorizes(const char *script, struct pop_cred *cred)
{
	return authorize(script, strlen(script), cred);
}

/*
 * The reader.
 */

static const char script_login[] =
    "capa\r\nUSER bob\nFOO\r\nPASS sec ret \r\nSTAT\r\nLIST 1\n";
static const char said_login[] =
    GREETING CAPA "+OK\r\n" UNKNOWN;

static void
check_login(int r, const struct pop_cred *cred, const char *rest)
{
	assert_int_equal(r, 1);
	assert_string_equal(said(), said_login);
	assert_string_equal(cred->user, "bob");
	assert_string_equal(cred->pass, "sec ret ");
	assert_string_equal(cred->mech, "USER");
	assert_true(cred->when.tv_sec != 0 || cred->when.tv_nsec != 0);
	/* The pipelined commands stay in the buffer, untouched. */
	assert_int_equal(conn.ilen, strlen(rest));
	assert_memory_equal(conn.ibuf, rest, conn.ilen);
	assert_int_equal(conn.bad, 0);
}

static void
test_reader_chunk(void **state)
{
	struct pop_cred	 cred;

	(void)state;
	check_login(authorize(script_login, sizeof(script_login) - 1, &cred),
	    &cred, "STAT\r\nLIST 1\n");
}

static void
test_reader_bytewise(void **state)
{
	struct pop_cred	 cred;
	pid_t		 pid;
	size_t		 i, len;
	int		 n, st, r;

	(void)state;
	/* Up to the end of PASS: the server reads no further. */
	len = (size_t)(strstr(script_login, "STAT") - script_login);
	if ((pid = fork()) == 0) {
		/* One octet at a time: the next once the last was read. */
		for (i = 0; i < len; i++) {
			if (write(client_w, script_login + i, 1) != 1)
				_exit(1);
			do {
				if (ioctl(client_w, FIONREAD, &n) == -1)
					_exit(1);
				if (n > 0)
					(void)usleep(100);
			} while (n > 0);
		}
		_exit(0);
	}
	assert_true(pid > 0);
	hangup();
	r = pop_authorize(&conn, &cred, 1);
	assert_int_equal(waitpid(pid, &st, 0), pid);
	assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
	check_login(r, &cred, "");
}

static void
test_quit(void **state)
{
	struct pop_cred	 cred;

	(void)state;
	assert_int_equal(authorizes("QUIT\r\nUSER x\r\n", &cred), 0);
	assert_string_equal(said(), GREETING BYE);
	assert_int_equal(conn.eof, 0);		/* QUIT, not EOF */
}

static void
test_eof(void **state)
{
	struct pop_cred	 cred;

	(void)state;
	assert_int_equal(authorizes("", &cred), 0);
	assert_string_equal(said(), GREETING);
	assert_int_equal(conn.eof, 1);
}

/* A 300-octet line ending in QUIT is one bad line; its tail never runs. */
static void
test_long_line(void **state)
{
	struct pop_cred	 cred;
	char		 line[300 + 32];

	(void)state;
	memset(line, 'x', 294);
	memcpy(line + 294, " QUIT\r\nCAPA\r\n", 13);
	assert_int_equal(authorize(line, 294 + 13, &cred), 0);
	assert_string_equal(said(), GREETING TOOLONG CAPA);
	assert_int_equal(conn.eof, 1);
	assert_int_equal(conn.bad, 0);
}

/* Longer than the whole input buffer: discarded through its LF. */
static void
test_huge_line(void **state)
{
	static char	 line[100000];
	struct pop_cred	 cred;
	size_t		 i;

	(void)state;
	for (i = 0; i + 6 < sizeof(line); i += 6)
		memcpy(line + i, "QUIT\r ", 6);
	memcpy(line + i - 6, "QUIT\r\n", 6);
	feed(line, i);
	feeds("QUIT\r\n");
	hangup();
	assert_int_equal(pop_authorize(&conn, &cred, 1), 0);
	assert_string_equal(said(), GREETING TOOLONG BYE);
	assert_int_equal(conn.eof, 0);
	assert_true(conn.ilen <= sizeof(conn.ibuf));
}

/* A huge line cut by EOF: no command runs. */
static void
test_huge_line_eof(void **state)
{
	static char	 line[5000];
	struct pop_cred	 cred;

	(void)state;
	memset(line, 'A', sizeof(line));
	memcpy(line + sizeof(line) - 4, "QUIT", 4);
	assert_int_equal(authorize(line, sizeof(line), &cred), 0);
	assert_string_equal(said(), GREETING TOOLONG);
	assert_int_equal(conn.eof, 1);
}

/* 253 octets before CRLF (255 with it) is a line; 254 is too long. */
static void
test_line_limit(void **state)
{
	char		 buf[1024];
	struct pop_cred	 cred;
	size_t		 n = 0;

	(void)state;
	memset(buf, 'Z', sizeof(buf));
	n = 253;
	memcpy(buf + n, "\r\n", 2);
	n += 2;
	memset(buf + n, 'Z', 254);
	n += 254;
	memcpy(buf + n, "\r\n", 2);
	n += 2;
	memset(buf + n, 'Z', 253);	/* bare LF: the same limit */
	n += 253;
	buf[n++] = '\n';
	memset(buf + n, 'Z', 254);
	n += 254;
	buf[n++] = '\n';
	assert_int_equal(authorize(buf, n, &cred), 0);
	assert_string_equal(said(), GREETING UNKNOWN TOOLONG UNKNOWN TOOLONG);
}

static void
test_nul(void **state)
{
	static const char s[] = "QUIT\0\r\nQU\0IT\nQUIT \0\r\nCAPA\r\n";
	struct pop_cred	 cred;

	(void)state;
	assert_int_equal(authorize(s, sizeof(s) - 1, &cred), 0);
	assert_string_equal(said(), GREETING "-ERR NUL in command line\r\n"
	    "-ERR NUL in command line\r\n-ERR NUL in command line\r\n"
	    CAPA);
	assert_int_equal(conn.eof, 1);
}

/* A CR is not a line end; one CR before LF is dropped, not two. */
static void
test_cr(void **state)
{
	struct pop_cred	 cred;

	(void)state;
	assert_int_equal(authorizes("QUIT\rCAPA\r\nCAPA\r\r\nQUIT\r", &cred),
	    0);
	assert_string_equal(said(), GREETING UNKNOWN UNKNOWN);
	assert_int_equal(conn.eof, 1);		/* never quit */
}

static void
test_timeout(void **state)
{
	struct pop_cred	 cred;
	struct timespec	 t0, t1;

	(void)state;
	opt.timeout = 1;
	feeds("USER bob\r\nPASS");		/* and nothing more */
	assert_int_equal(clock_gettime(CLOCK_MONOTONIC, &t0), 0);
	assert_int_equal(pop_authorize(&conn, &cred, 1), 0);
	assert_int_equal(clock_gettime(CLOCK_MONOTONIC, &t1), 0);
	assert_true(t1.tv_sec - t0.tv_sec >= 1 && t1.tv_sec - t0.tv_sec < 3);
	assert_string_equal(said(), GREETING "+OK\r\n"
	    "-ERR autologout: idle timeout\r\n");
	assert_int_equal(conn.eof, 1);
	opt.timeout = 5;
}

/*
 * Commands: names, arguments, states.
 */

static void
test_case(void **state)
{
	struct pop_cred	 cred;

	(void)state;
	assert_int_equal(authorizes("cApA\r\nuser BoB\r\npAsS x\r\n", &cred),
	    1);
	assert_string_equal(said(), GREETING CAPA "+OK\r\n");
	assert_string_equal(cred.user, "BoB");	/* names keep case */
}

static void
test_arity(void **state)
{
	struct pop_cred	 cred;

	(void)state;
	assert_int_equal(authorizes(
	    "QUIT now\r\n"		/* A_NONE with an argument */
	    "CAPA x y\r\n"
	    "USER\r\n"			/* A_ONE without */
	    "USER a b\r\n"		/* A_ONE with two */
	    "PASS\r\n"			/* A_REST without */
	    "PASS \r\n"			/* or nothing after SP */
	    "AUTH PLAIN a b\r\n"	/* AUTH: at most two */
	    " CAPA\r\n"			/* a space before the name */
	    "\r\n"			/* an empty line */
	    "CAPA\t\r\n"		/* a tab is not a space */
	    "CAPA   \r\n"		/* trailing spaces are fine */
	    "USER   bob  \r\n"		/* and several separating ones */
	    "PASS  p \r\n",		/* all after one SP, verbatim */
	    &cred), 1);
	assert_string_equal(said(), GREETING SYNTAX SYNTAX SYNTAX SYNTAX
	    SYNTAX SYNTAX SYNTAX UNKNOWN UNKNOWN UNKNOWN CAPA "+OK\r\n");
	assert_string_equal(cred.user, "bob");
	assert_string_equal(cred.pass, " p ");
}

static void
test_state(void **state)
{
	struct pop_cred	 cred;

	(void)state;
	assert_int_equal(authorizes("STAT\r\nretr 1\r\nNOOP\r\nAPOP a b\r\n"
	    "STLS\r\nPASS x\r\n", &cred), 0);
	assert_string_equal(said(), GREETING WRONGSTATE WRONGSTATE WRONGSTATE
	    UNKNOWN UNKNOWN "-ERR USER first\r\n");
}

static void
test_user_names(void **state)
{
	static const char s[] =
	    "USER aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"	/* 65 */
	    "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n"
	    "USER a\001b\r\n"
	    "USER ../etc\r\n"
	    "USER a:b\r\n"
	    "USER ..\r\n"
	    "USER b\xe4r\r\n"
	    "PASS x\r\n"		/* the last USER was refused */
	    "USER aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"	/* 64 */
	    "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n"
	    "PASS x\r\n";
	struct pop_cred	 cred;

	(void)state;
	assert_int_equal(authorize(s, sizeof(s) - 1, &cred), 1);
	assert_string_equal(said(), GREETING
	    "-ERR invalid user name\r\n-ERR invalid user name\r\n"
	    "-ERR invalid user name\r\n-ERR invalid user name\r\n"
	    "-ERR invalid user name\r\n-ERR invalid user name\r\n"
	    "-ERR USER first\r\n+OK\r\n");
	assert_int_equal(strlen(cred.user), POP3_USER_MAX);
}

/* POP3_BAD_MAX consecutive bad commands end the session; a good resets. */
static void
test_bad_limit(void **state)
{
	char		 expect[4096];
	struct pop_cred	 cred;
	int		 i;

	(void)state;
	expect[0] = '\0';
	(void)strcat(expect, GREETING);
	for (i = 0; i < POP3_BAD_MAX - 1; i++) {
		feeds("BAD\r\n");
		(void)strcat(expect, UNKNOWN);
	}
	feeds("CAPA\r\n");
	(void)strcat(expect, CAPA);
	for (i = 0; i < POP3_BAD_MAX; i++) {
		feeds(i % 2 ? "STAT\r\n" : "USER\r\n");
		if (i < POP3_BAD_MAX - 1)
			(void)strcat(expect, i % 2 ? WRONGSTATE : SYNTAX);
	}
	/* The last one's only reply. */
	(void)strcat(expect, "-ERR too many bad commands, closing\r\n");
	feeds("QUIT\r\n");
	hangup();
	assert_int_equal(pop_authorize(&conn, &cred, 1), 0);
	assert_string_equal(said(), expect);
	assert_int_equal(conn.eof, 1);
}

/* Over-long and NUL lines count as bad commands too. */
static void
test_bad_limit_lines(void **state)
{
	char		 line[400];
	struct pop_cred	 cred;
	int		 i;

	(void)state;
	memset(line, 'x', sizeof(line) - 1);
	line[sizeof(line) - 1] = '\n';
	for (i = 0; i < POP3_BAD_MAX; i++)
		if (i % 2)
			feed(line, sizeof(line));
		else
			feed("\0\n", 2);
	feeds("QUIT\r\n");
	hangup();
	assert_int_equal(pop_authorize(&conn, &cred, 1), 0);
	assert_non_null(strstr(said(), "-ERR too many bad commands"));
	assert_null(strstr(out, BYE));
}

/*
 * AUTH PLAIN (RFC 5034, RFC 4616).
 */

static void
test_auth_list(void **state)
{
	struct pop_cred	 cred;

	(void)state;
	assert_int_equal(authorizes("AUTH\r\nAUTH CRAM-MD5\r\n"
	    "AUTH CRAM-MD5 abcd\r\n", &cred), 0);
	assert_string_equal(said(), GREETING "+OK SASL mechanisms follow\r\n"
	    "PLAIN\r\n.\r\n-ERR unsupported SASL mechanism\r\n"
	    "-ERR unsupported SASL mechanism\r\n");
}

static void
test_auth_initial(void **state)
{
	struct pop_cred	 cred;

	(void)state;
	assert_int_equal(authorizes("auth plain AHVzZXIAcGFzcw==\r\nNOOP\r\n",
	    &cred), 1);
	assert_string_equal(said(), GREETING);
	assert_string_equal(cred.user, "user");
	assert_string_equal(cred.pass, "pass");
	assert_string_equal(cred.mech, "PLAIN");
	assert_true(cred.when.tv_sec != 0 || cred.when.tv_nsec != 0);
	assert_int_equal(conn.ilen, 6);
}

static void
test_auth_continuation(void **state)
{
	struct pop_cred	 cred;

	(void)state;
	assert_int_equal(authorizes("AUTH PLAIN\r\n"
	    "AHVzZXIAcGFzcyB3b3JkIA==\r\n", &cred), 1);
	assert_string_equal(said(), GREETING "+ \r\n");
	assert_string_equal(cred.user, "user");
	assert_string_equal(cred.pass, "pass word ");
}

static void
test_auth_authzid(void **state)
{
	struct pop_cred	 cred;

	(void)state;
	assert_int_equal(authorizes(
	    "AUTH PLAIN b3RoZXIAdXNlcgBwYXNz\r\n"	/* other\0user\0pass */
	    "AUTH PLAIN dXNlcgB1c2VyAHBhc3M=\r\n",	/* user\0user\0pass */
	    &cred), 1);
	assert_string_equal(said(), GREETING
	    "-ERR [AUTH] invalid authorization identity\r\n");
	assert_string_equal(cred.user, "user");
	assert_string_equal(cred.pass, "pass");
}

static void
test_auth_errors(void **state)
{
	struct pop_cred	 cred;

	(void)state;
	assert_int_equal(authorizes(
	    "AUTH PLAIN *\r\n"				/* cancel */
	    "AUTH PLAIN\r\n*\r\n"			/* cancel */
	    "AUTH PLAIN =\r\n"				/* empty */
	    "AUTH PLAIN\r\n\r\n"			/* empty */
	    "AUTH PLAIN AHVz!XIAcGFzcw==\r\n"		/* not base64 */
	    "AUTH PLAIN AHVzZXIAcGFzcw\r\n"		/* no padding */
	    "AUTH PLAIN AHVzZXIAcGFzcw=x\r\n"		/* junk after = */
	    "AUTH PLAIN AH=zZXIAcGFzcw==\r\n"		/* = inside */
	    "AUTH PLAIN AGFsaWNlAHB3A===\r\n"		/* three = (fuzz) */
	    "AUTH PLAIN\r\nAHVzZXIA cGFzcw==\r\n"	/* a space */
	    "AUTH PLAIN dXNlcnBhc3M=\r\n"		/* no NUL */
	    "AUTH PLAIN AHVzZXJwYXNz\r\n"		/* one NUL */
	    "AUTH PLAIN AHVzZXIAcGEAc3M=\r\n"		/* three NULs */
	    "AUTH PLAIN AHVzZXIA\r\n"			/* no password */
	    "AUTH PLAIN AABwYXNz\r\n"			/* empty user */
	    "AUTH PLAIN AHVzIGVyAHBhc3M=\r\n"		/* space in user */
	    "PASS x\r\n",				/* no USER left */
	    &cred), 0);
	assert_string_equal(said(), GREETING CANCELLED "+ \r\n" CANCELLED
	    MALFORMED "+ \r\n" MALFORMED BADB64 BADB64 BADB64 BADB64 BADB64
	    "+ \r\n" BADB64 MALFORMED MALFORMED MALFORMED MALFORMED
	    "-ERR [AUTH] invalid user name\r\n"
	    "-ERR [AUTH] invalid user name\r\n"
	    "-ERR USER first\r\n");
	assert_int_equal(conn.bad, 17);
}

/* A too long continuation line: one -ERR, the AUTH is over. */
static void
test_auth_long(void **state)
{
	char		 line[600];
	struct pop_cred	 cred;

	(void)state;
	memset(line, 'A', sizeof(line));
	feeds("AUTH PLAIN\r\n");
	feed(line, sizeof(line));
	feeds("\r\nQUIT\r\n");
	hangup();
	assert_int_equal(pop_authorize(&conn, &cred, 1), 0);
	assert_string_equal(said(), GREETING "+ \r\n" TOOLONG BYE);
}

/*
 * Failed logins.
 */

static void
test_auth_failed(void **state)
{
	struct pop_cred	 cred;
	struct timespec	 t1;
	long		 ms;
	int		 i;

	(void)state;
	opt.fail_delay_ms = 200;
	feeds("USER a\r\nPASS b\r\nUSER a\r\nPASS b\r\nPASS c\r\nUSER a\r\n"
	    "PASS b\r\nQUIT\r\n");
	for (i = 0; i < POP3_AUTH_FAIL_MAX; i++) {
		assert_int_equal(pop_authorize(&conn, &cred, i == 0), 1);
		assert_int_equal(pop_auth_failed(&conn, &cred),
		    i + 1 < POP3_AUTH_FAIL_MAX ? 0 : -1);
		assert_int_equal(clock_gettime(CLOCK_MONOTONIC, &t1), 0);
		ms = (t1.tv_sec - cred.when.tv_sec) * 1000 +
		    (t1.tv_nsec - cred.when.tv_nsec) / 1000000;
		assert_true(ms >= 200 && ms < 1000);
	}
	assert_int_equal(pop_flush(&conn), -1);	/* the session is over */
	assert_string_equal(said(), GREETING
	    "+OK\r\n-ERR [AUTH] authentication failed\r\n"
	    "+OK\r\n-ERR [AUTH] authentication failed\r\n"
	    "-ERR USER first\r\n"			/* PASS c */
	    "+OK\r\n-ERR [AUTH] authentication failed\r\n");
	opt.fail_delay_ms = 0;
}

/*
 * TRANSACTION over a crafted mbox (the real maildrop.c).
 */

#define M1	"From alice@example.org Thu Nov 21 10:00:00 2024\n" \
		"Subject: one\n\nbody one\n.dot line\n"
#define M2	"From bob@example.org Thu Nov 21 10:01:00 2024\n" \
		"Subject: two\n\nbody two\nline 2\nline 3\n"
#define M3	"From carol@example.org Thu Nov 21 10:02:00 2024\n" \
		"Subject: three\n\nthree\n"
#define MBOX	M1 "\n" M2 "\n" M3
/* What RETR sends of each, before stuffing: 37, 42 and 25 octets. */
#define R1	"Subject: one\r\n\r\nbody one\r\n.dot line\r\n"
#define R2	"Subject: two\r\n\r\nbody two\r\nline 2\r\nline 3\r\n"
#define R3	"Subject: three\r\n\r\nthree\r\n"
#define OPENED	"+OK maildrop has 3 messages (104 octets)\r\n"

static char		 tmpdir[64];
static struct pop_user	 user;

static void
write_mbox(const char *data, size_t len)
{
	int	 fd;

	fd = open(user.mailbox, O_WRONLY | O_CREAT | O_TRUNC, 0600);
	assert_true(fd != -1);
	assert_int_equal(write(fd, data, len), (ssize_t)len);
	assert_int_equal(close(fd), 0);
}

static char *
read_mbox(void)
{
	static char	 buf[1 << 20];
	ssize_t		 n;
	int		 fd;

	fd = open(user.mailbox, O_RDONLY);
	assert_true(fd != -1);
	n = read(fd, buf, sizeof(buf) - 1);
	assert_true(n >= 0);
	buf[n] = '\0';
	assert_int_equal(close(fd), 0);
	return buf;
}

static int
setup_mbox(void **state)
{
	(void)setup(state);
	(void)snprintf(tmpdir, sizeof(tmpdir), "/tmp/test_proto.XXXXXX");
	assert_non_null(mkdtemp(tmpdir));
	memset(&user, 0, sizeof(user));
	(void)snprintf(user.name, sizeof(user.name), "user");
	user.uid = getuid();
	user.gid = getgid();
	(void)snprintf(user.mailbox, sizeof(user.mailbox), "%s/user", tmpdir);
	write_mbox(MBOX, sizeof(MBOX) - 1);
	return 0;
}

static int
teardown_mbox(void **state)
{
	char	 cmd[128];

	(void)teardown(state);
	(void)snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tmpdir);
	assert_int_equal(system(cmd), 0);
	return 0;
}

static int
transact(const char *script)
{
	feeds(script);
	hangup();
	return pop_transaction(&conn, &user);
}

static void
test_trans_basic(void **state)
{
	char	 uid[3][POP3_UIDL_MAX + 1];
	char	 expect[4096];
	int	 i;

	(void)state;
	assert_int_equal(transact("STAT\r\nLIST\r\nLIST 2\r\nRETR 1\r\n"
	    "TOP 2 1\r\nTOP 2 0\r\nTOP 3 9223372036854775807\r\nNOOP\r\n"
	    "UIDL\r\nCAPA\r\nQUIT\r\n"), POP3_EX_OK);
	said();
	/* The UIDLs are maildrop.c's business: take them from the reply. */
	for (i = 0; i < 3; i++) {
		char	 pat[16], *p, *e;

		(void)snprintf(pat, sizeof(pat), "\r\n%d ", i + 1);
		p = strstr(strstr(out, "+OK unique-id"), pat);
		assert_non_null(p);
		p += strlen(pat);
		e = strstr(p, "\r\n");
		assert_non_null(e);
		assert_true(e - p > 0 && e - p <= POP3_UIDL_MAX);
		memcpy(uid[i], p, (size_t)(e - p));
		uid[i][e - p] = '\0';
	}
	(void)snprintf(expect, sizeof(expect), OPENED
	    "+OK 3 104\r\n"
	    "+OK 3 messages (104 octets)\r\n1 37\r\n2 42\r\n3 25\r\n.\r\n"
	    "+OK 2 42\r\n"
	    "+OK 37 octets\r\nSubject: one\r\n\r\nbody one\r\n..dot line\r\n"
	    ".\r\n"
	    "+OK top of message follows\r\nSubject: two\r\n\r\nbody two\r\n"
	    ".\r\n"
	    "+OK top of message follows\r\nSubject: two\r\n\r\n.\r\n"
	    "+OK top of message follows\r\n" R3 ".\r\n"
	    "+OK\r\n"
	    "+OK unique-id listing follows\r\n1 %s\r\n2 %s\r\n3 %s\r\n.\r\n"
	    CAPA
	    "+OK pop3d signing off (3 messages left)\r\n",
	    uid[0], uid[1], uid[2]);
	assert_string_equal(out, expect);
	assert_string_equal(read_mbox(), MBOX);
}

static void
test_trans_numbers(void **state)
{
	(void)state;
	assert_int_equal(transact(
	    "LIST 0\r\n"
	    "LIST -1\r\n"
	    "LIST +1\r\n"
	    "LIST 1x\r\n"
	    "LIST 0x1\r\n"
	    "LIST 4\r\n"
	    "LIST 4294967297\r\n"
	    "LIST 18446744073709551615\r\n"
	    "LIST 18446744073709551616\r\n"
	    "LIST 18446744073709551617\r\n"
	    "LIST 99999999999999999999999\r\n"
	    "LIST 99999999999999999999999x\r\n"
	    "LIST 1 2\r\n"
	    "LIST 01\r\n"
	    "LIST 0000000000000000000000000000003\r\n"
	    "LIST   2  \r\n"
	    "RETR\r\n"
	    "RETR 1 1\r\n"
	    "TOP 1\r\n"
	    "TOP 1 -1\r\n"
	    "TOP 1 +1\r\n"
	    "TOP 1 1x\r\n"
	    "TOP 1 9223372036854775808x\r\n"
	    "TOP 0 1\r\n"
	    "UIDL 0\r\n"
	    "DELE 00\r\n"
	    "QUIT\r\n"), POP3_EX_OK);
	assert_string_equal(said(), OPENED
	    NOMSG BADNUM BADNUM BADNUM BADNUM NOMSG NOMSG NOMSG NOMSG NOMSG
	    NOMSG BADNUM SYNTAX "+OK 1 37\r\n" "+OK 3 25\r\n" "+OK 2 42\r\n"
	    SYNTAX SYNTAX SYNTAX
	    "-ERR invalid line count\r\n" "-ERR invalid line count\r\n"
	    "-ERR invalid line count\r\n" "-ERR invalid line count\r\n"
	    NOMSG NOMSG NOMSG
	    "+OK pop3d signing off (3 messages left)\r\n");
	assert_string_equal(read_mbox(), MBOX);
}

static void
test_trans_dele(void **state)
{
	(void)state;
	assert_int_equal(transact(
	    "DELE 2\r\n"
	    "DELE 2\r\n"
	    "RETR 2\r\n"
	    "LIST 2\r\n"
	    "TOP 2 0\r\n"
	    "UIDL 2\r\n"
	    "STAT\r\n"
	    "LIST\r\n"
	    "RSET\r\n"
	    "RSET\r\n"
	    "STAT\r\n"
	    "DELE 1\r\n"
	    "DELE 3\r\n"
	    "RSET\r\n"
	    "DELE 2\r\n"
	    "user x\r\n"
	    "PASS x\r\n"
	    "AUTH\r\n"
	    "QUIT\r\n"), POP3_EX_OK);
	assert_string_equal(said(), OPENED
	    "+OK message 2 deleted\r\n"
	    "-ERR message 2 is deleted\r\n"
	    "-ERR message 2 is deleted\r\n"
	    "-ERR message 2 is deleted\r\n"
	    "-ERR message 2 is deleted\r\n"
	    "-ERR message 2 is deleted\r\n"
	    "+OK 2 62\r\n"
	    "+OK 2 messages (62 octets)\r\n1 37\r\n3 25\r\n.\r\n"
	    "+OK maildrop has 3 messages (104 octets)\r\n"
	    "+OK maildrop has 3 messages (104 octets)\r\n"
	    "+OK 3 104\r\n"
	    "+OK message 1 deleted\r\n"
	    "+OK message 3 deleted\r\n"
	    "+OK maildrop has 3 messages (104 octets)\r\n"
	    "+OK message 2 deleted\r\n"
	    WRONGSTATE WRONGSTATE WRONGSTATE
	    "+OK pop3d signing off (2 messages left)\r\n");
	assert_string_equal(read_mbox(), M1 "\n" M3);
}

/* EOF without QUIT: no UPDATE. */
static void
test_trans_eof(void **state)
{
	(void)state;
	assert_int_equal(transact("DELE 1\r\nDELE 2\r\nDELE 3\r\n"),
	    POP3_EX_CLOSED);
	assert_string_equal(said(), OPENED "+OK message 1 deleted\r\n"
	    "+OK message 2 deleted\r\n+OK message 3 deleted\r\n");
	assert_string_equal(read_mbox(), MBOX);
}

static void
test_trans_empty(void **state)
{
	(void)state;
	assert_int_equal(unlink(user.mailbox), 0);
	assert_int_equal(transact("STAT\r\nLIST\r\nUIDL\r\nLIST 1\r\n"
	    "RETR 1\r\nDELE 1\r\nRSET\r\nQUIT\r\n"), POP3_EX_OK);
	assert_string_equal(said(), "+OK maildrop has 0 messages (0 octets)\r\n"
	    "+OK 0 0\r\n+OK 0 messages (0 octets)\r\n.\r\n"
	    "+OK unique-id listing follows\r\n.\r\n" NOMSG NOMSG NOMSG
	    "+OK maildrop has 0 messages (0 octets)\r\n"
	    "+OK pop3d signing off (0 messages left)\r\n");
}

/* Pipelined commands after PASS, handed over in the buffer. */
static void
test_trans_pipelined(void **state)
{
	struct pop_cred	 cred;

	(void)state;
	feeds("USER user\r\nPASS x\r\nSTAT\r\nDELE 1\r\nQUIT\r\n");
	hangup();
	assert_int_equal(pop_authorize(&conn, &cred, 1), 1);
	assert_int_equal(pop_transaction(&conn, &user), POP3_EX_OK);
	assert_string_equal(said(), GREETING "+OK\r\n" OPENED "+OK 3 104\r\n"
	    "+OK message 1 deleted\r\n"
	    "+OK pop3d signing off (2 messages left)\r\n");
	assert_string_equal(read_mbox(), M2 "\n" M3);
}

/* A client that never reads: the session times out, memory is fixed. */
static void
test_trans_stalled(void **state)
{
	static char	 big[300000];
	size_t		 n;

	(void)state;
	(void)teardown(state);
	h_open(4096);
	opt.timeout = 1;
	n = (size_t)snprintf(big, sizeof(big), "From a@b Thu Nov 21 10:00:00 "
	    "2024\nSubject: big\n\n");
	memset(big + n, 'x', sizeof(big) - n);
	for (; n < sizeof(big); n += 100)
		big[n] = '\n';
	big[sizeof(big) - 1] = '\n';
	write_mbox(big, sizeof(big));
	assert_int_equal(transact("RETR 1\r\n"), POP3_EX_CLOSED);
	assert_int_equal(conn.eof, 1);
	opt.timeout = 5;
}

/* A second session: [IN-USE], and nothing changes. */
static void
test_trans_inuse(void **state)
{
	struct maildrop	*md;

	(void)state;
	assert_non_null(md = md_new());
	assert_int_equal(md_open(md, &user), MD_OK);
	assert_int_equal(transact("DELE 1\r\nQUIT\r\n"), POP3_EX_TEMPFAIL);
	md_free(md);
	assert_string_equal(said(),
	    "-ERR [IN-USE] maildrop is in use by another session\r\n");
	assert_string_equal(read_mbox(), MBOX);
}

/* An unsafe mailbox (a symbolic link): [SYS/PERM]. */
static void
test_trans_perm(void **state)
{
	char	 real[sizeof(user.mailbox) + 8];

	(void)state;
	(void)snprintf(real, sizeof(real), "%s.real", user.mailbox);
	assert_int_equal(rename(user.mailbox, real), 0);
	assert_int_equal(symlink(real, user.mailbox), 0);
	assert_int_equal(transact("STAT\r\n"), POP3_EX_CONFIG);
	assert_string_equal(said(), "-ERR [SYS/PERM] cannot open maildrop\r\n");
}

/* The mailbox shrinks under the session: RETR takes its +OK back. */
static void
test_trans_changed(void **state)
{
	pid_t	 pid;
	int	 n, st, r;

	(void)state;
	if ((pid = fork()) == 0) {
		if (write(client_w, "STAT\r\n", 6) != 6)
			_exit(1);
		do {		/* read: the session is open */
			if (ioctl(client_w, FIONREAD, &n) == -1)
				_exit(1);
			if (n > 0)
				(void)usleep(1000);
		} while (n > 0);
		if (truncate(user.mailbox, 10) == -1 ||
		    write(client_w, "RETR 1\r\nSTAT\r\n", 14) != 14)
			_exit(1);
		_exit(0);
	}
	assert_true(pid > 0);
	hangup();
	r = pop_transaction(&conn, &user);
	assert_int_equal(waitpid(pid, &st, 0), pid);
	assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
	assert_int_equal(r, POP3_EX_TEMPFAIL);
	assert_string_equal(said(), OPENED "+OK 3 104\r\n"
	    "-ERR [SYS/TEMP] cannot read message 1, try again later\r\n");
}

/*
 * maildrop.c's fault injection (unit builds): POP3D_FAULT=eio:N fails its
 * N-th write-like call.  The first N that fails the update (md_open()
 * fails on some, survives others): -ERR [SYS/TEMP], and the mailbox is
 * as it was.
 */
void	io_fault_reset(void);

static void
test_trans_update_fails(void **state)
{
	char	 fault[32];
	int	 n, r;

	for (n = 1; n < 50; n++) {
		(void)teardown(state);
		h_open(1 << 20);
		write_mbox(MBOX, sizeof(MBOX) - 1);
		(void)snprintf(fault, sizeof(fault), "eio:%d", n);
		assert_int_equal(setenv("POP3D_FAULT", fault, 1), 0);
		io_fault_reset();
		r = transact("DELE 1\r\nQUIT\r\n");
		assert_int_equal(unsetenv("POP3D_FAULT"), 0);
		io_fault_reset();
		if (strstr(said(), "cannot update") != NULL)
			break;
	}
	assert_string_equal(out, OPENED "+OK message 1 deleted\r\n"
	    "-ERR [SYS/TEMP] cannot update maildrop, try again later\r\n");
	assert_int_equal(r, POP3_EX_TEMPFAIL);
	assert_string_equal(read_mbox(), MBOX);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_reader_chunk, setup,
		    teardown),
		cmocka_unit_test_setup_teardown(test_reader_bytewise, setup,
		    teardown),
		cmocka_unit_test_setup_teardown(test_quit, setup, teardown),
		cmocka_unit_test_setup_teardown(test_eof, setup, teardown),
		cmocka_unit_test_setup_teardown(test_long_line, setup,
		    teardown),
		cmocka_unit_test_setup_teardown(test_huge_line, setup,
		    teardown),
		cmocka_unit_test_setup_teardown(test_huge_line_eof, setup,
		    teardown),
		cmocka_unit_test_setup_teardown(test_line_limit, setup,
		    teardown),
		cmocka_unit_test_setup_teardown(test_nul, setup, teardown),
		cmocka_unit_test_setup_teardown(test_cr, setup, teardown),
		cmocka_unit_test_setup_teardown(test_timeout, setup, teardown),
		cmocka_unit_test_setup_teardown(test_case, setup, teardown),
		cmocka_unit_test_setup_teardown(test_arity, setup, teardown),
		cmocka_unit_test_setup_teardown(test_state, setup, teardown),
		cmocka_unit_test_setup_teardown(test_user_names, setup,
		    teardown),
		cmocka_unit_test_setup_teardown(test_bad_limit, setup,
		    teardown),
		cmocka_unit_test_setup_teardown(test_bad_limit_lines, setup,
		    teardown),
		cmocka_unit_test_setup_teardown(test_auth_list, setup,
		    teardown),
		cmocka_unit_test_setup_teardown(test_auth_initial, setup,
		    teardown),
		cmocka_unit_test_setup_teardown(test_auth_continuation, setup,
		    teardown),
		cmocka_unit_test_setup_teardown(test_auth_authzid, setup,
		    teardown),
		cmocka_unit_test_setup_teardown(test_auth_errors, setup,
		    teardown),
		cmocka_unit_test_setup_teardown(test_auth_long, setup,
		    teardown),
		cmocka_unit_test_setup_teardown(test_auth_failed, setup,
		    teardown),
		cmocka_unit_test_setup_teardown(test_trans_basic, setup_mbox,
		    teardown_mbox),
		cmocka_unit_test_setup_teardown(test_trans_numbers, setup_mbox,
		    teardown_mbox),
		cmocka_unit_test_setup_teardown(test_trans_dele, setup_mbox,
		    teardown_mbox),
		cmocka_unit_test_setup_teardown(test_trans_eof, setup_mbox,
		    teardown_mbox),
		cmocka_unit_test_setup_teardown(test_trans_empty, setup_mbox,
		    teardown_mbox),
		cmocka_unit_test_setup_teardown(test_trans_pipelined,
		    setup_mbox, teardown_mbox),
		cmocka_unit_test_setup_teardown(test_trans_stalled, setup_mbox,
		    teardown_mbox),
		cmocka_unit_test_setup_teardown(test_trans_inuse, setup_mbox,
		    teardown_mbox),
		cmocka_unit_test_setup_teardown(test_trans_perm, setup_mbox,
		    teardown_mbox),
		cmocka_unit_test_setup_teardown(test_trans_changed, setup_mbox,
		    teardown_mbox),
		cmocka_unit_test_setup_teardown(test_trans_update_fails,
		    setup_mbox, teardown_mbox),
	};

	/* A write to a closed pipe is an error, not a signal. */
	(void)signal(SIGPIPE, SIG_IGN);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
