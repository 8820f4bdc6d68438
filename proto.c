/*
 * proto.c: the POP3 protocol (RFC 1939, RFC 2449, RFC 3206, RFC 5034 SASL
 * PLAIN): the command tables and the state machine, AUTHORIZATION
 * (pop_authorize(), pop_auth_failed()) and TRANSACTION and UPDATE
 * (pop_transaction()); conn.c holds the client connection (the bounded
 * line reader, the buffered reply writer, deadlines), log.c the options,
 * logging and the fatal errors.  It makes no privileged call of its own:
 * auth.c runs the session and calls pop_authorize() before login and
 * pop_transaction() after it.
 *
 * Decisions worth knowing (also in pop3d.8):
 * - A line ends at LF; one CR before it is dropped, a bare LF is accepted.
 *   A line of more than POP3_CMD_MAX - 2 octets before its CRLF gets one
 *   "-ERR" and is discarded through its LF, no part of it executed; a line
 *   holding a NUL is void ("-ERR").  The input buffer never grows.
 * - A command is separated from its arguments by one or more spaces;
 *   trailing spaces are ignored.  PASS takes the rest of the line after
 *   exactly one space, verbatim (a password may hold or start with spaces).
 * - Message numbers are decimal digits only: no sign, no space, no junk.
 *   Leading zeros are accepted ("01" is message 1), as Dovecot does and as
 *   RFC 1939 does not forbid.  0, numbers past the message count and past
 *   2^64 are "no such message".
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

#define nitems(a)	(sizeof(a) / sizeof((a)[0]))

/*
 * What a handler tells the loop.  RES_OK: the loop replies "+OK".  RES_DONE:
 * the handler replied, success.  RES_ERR: the handler (or the loop) replied
 * "-ERR", a bad command.  RES_NEXT: a login is ready (AUTHORIZATION ends).
 * RES_QUIT: QUIT, answered.  RES_FAIL: the session is over, all was said.
 */
/* (RES_, not R_: unistd.h defines R_OK.) */
enum pop_res { RES_OK, RES_ERR, RES_DONE, RES_NEXT, RES_QUIT, RES_FAIL };
/* Argument rules, checked by the loop.  A_SASL: zero to two (AUTH). */
enum pop_arg { A_NONE, A_OPT, A_ONE, A_TWO, A_SASL, A_REST };

/* The state of one session (one per process). */
struct pop_sess {
	struct pop_conn		*c;
	/* AUTHORIZATION */
	struct pop_cred		*cred;
	int			 have_user;	/* PASS may follow */
	/* TRANSACTION */
	const struct pop_user	*user;
	struct maildrop		*md;
	uint32_t		 live;		/* messages not deleted */
	uint64_t		 live_octets;
	uint32_t		*dele;		/* deleted, for RSET */
	uint32_t		 ndele;
	uint32_t		 nretr;		/* RETR: messages, */
	uint64_t		 retr_octets;	/* and octets */
	/* how it ended, for the summary log line, and the exit status */
	const char		*end;
	int			 status;
};

struct pop_cmd {
	const char	*name;
	enum pop_arg	 arg;
	enum pop_res	(*fn)(struct pop_sess *, char *[]);
};

/* What md_stream's put() carries. */
struct pop_stream {
	struct pop_conn	*c;
	uint64_t	 bytes;		/* octets handed to us */
	int		 flushed;	/* some went to the client */
	int		 gone;		/* a write failed */
};

static enum pop_res	cmd_auth(struct pop_sess *, char *[]);
static enum pop_res	cmd_capa(struct pop_sess *, char *[]);
static enum pop_res	cmd_dele(struct pop_sess *, char *[]);
static enum pop_res	cmd_list(struct pop_sess *, char *[]);
static enum pop_res	cmd_noop(struct pop_sess *, char *[]);
static enum pop_res	cmd_pass(struct pop_sess *, char *[]);
static enum pop_res	cmd_quit_auth(struct pop_sess *, char *[]);
static enum pop_res	cmd_quit_trans(struct pop_sess *, char *[]);
static enum pop_res	cmd_retr(struct pop_sess *, char *[]);
static enum pop_res	cmd_rset(struct pop_sess *, char *[]);
static enum pop_res	cmd_stat(struct pop_sess *, char *[]);
static enum pop_res	cmd_top(struct pop_sess *, char *[]);
static enum pop_res	cmd_uidl(struct pop_sess *, char *[]);
static enum pop_res	cmd_user(struct pop_sess *, char *[]);

static const struct pop_cmd auth_cmds[] = {
	{ "USER", A_ONE,  cmd_user },
	{ "PASS", A_REST, cmd_pass },
	{ "AUTH", A_SASL, cmd_auth },
	{ "CAPA", A_NONE, cmd_capa },
	{ "QUIT", A_NONE, cmd_quit_auth },
};

static const struct pop_cmd trans_cmds[] = {
	{ "RETR", A_ONE,  cmd_retr },
	{ "LIST", A_OPT,  cmd_list },
	{ "UIDL", A_OPT,  cmd_uidl },
	{ "STAT", A_NONE, cmd_stat },
	{ "DELE", A_ONE,  cmd_dele },
	{ "TOP",  A_TWO,  cmd_top },
	{ "NOOP", A_NONE, cmd_noop },
	{ "RSET", A_NONE, cmd_rset },
	{ "CAPA", A_NONE, cmd_capa },
	{ "QUIT", A_NONE, cmd_quit_trans },
};

/*
 * Parsing.
 */

/*
 * A strict decimal number: digits only (leading zeros allowed), at most
 * max.  Returns 0, or -1 with errno EINVAL (not a number) or ERANGE.
 */
int
pop_number(const char *s, uint64_t max, uint64_t *np)
{
	uint64_t	 v = 0;
	unsigned	 d;

	if (*s == '\0') {
		errno = EINVAL;
		return -1;
	}
	for (; *s != '\0'; s++) {
		if (*s < '0' || *s > '9') {
			errno = EINVAL;
			return -1;
		}
		d = (unsigned)(*s - '0');
		if (v > (max - d) / 10) {
			/* Keep looking for junk: it takes precedence. */
			while (*s >= '0' && *s <= '9')
				s++;
			errno = *s == '\0' ? ERANGE : EINVAL;
			return -1;
		}
		v = v * 10 + d;
	}
	*np = v;
	return 0;
}

static const struct pop_cmd *
pop_lookup(const struct pop_cmd *cmds, size_t n, const char *name)
{
	size_t	 i;

	for (i = 0; i < n; i++)
		if (strcasecmp(cmds[i].name, name) == 0)
			return &cmds[i];
	return NULL;
}

/* Splits a command line, checks it against the table, runs it. */
static enum pop_res
pop_exec(struct pop_sess *s, const struct pop_cmd *cmds, size_t ncmds,
    const struct pop_cmd *other, size_t nother, char *line)
{
	const struct pop_cmd	*cmd;
	char			*argv[4], *p;
	int			 argc = 0, min, max;

	if ((p = strchr(line, ' ')) != NULL)
		*p++ = '\0';
	if ((cmd = pop_lookup(cmds, ncmds, line)) == NULL) {
		if (pop_lookup(other, nother, line) != NULL)
			(void)pop_reply(s->c,
			    "-ERR command not valid in this state");
		else
			(void)pop_reply(s->c, "-ERR unknown command");
		return RES_ERR;
	}
	if (cmd->arg == A_REST) {
		/* The rest after one space, verbatim (PASS). */
		if (p == NULL || *p == '\0')
			goto syntax;
		argv[0] = p;
		argv[1] = NULL;
		return cmd->fn(s, argv);
	}
	while (p != NULL) {
		while (*p == ' ')
			p++;
		if (*p == '\0')
			break;
		if (argc == 3)
			goto syntax;
		argv[argc++] = p;
		if ((p = strchr(p, ' ')) != NULL)
			*p++ = '\0';
	}
	argv[argc] = NULL;
	switch (cmd->arg) {
	case A_NONE:
		min = 0, max = 0;
		break;
	case A_OPT:
		min = 0, max = 1;
		break;
	case A_ONE:
		min = 1, max = 1;
		break;
	case A_TWO:
		min = 2, max = 2;
		break;
	case A_SASL:
		min = 0, max = 2;
		break;
	case A_REST:
	default:
		fatalx("bad argument rule");
	}
	if (argc < min || argc > max)
		goto syntax;
	return cmd->fn(s, argv);
syntax:
	(void)pop_reply(s->c, "-ERR syntax error");
	return RES_ERR;
}

/*
 * A bad command, already answered "-ERR": -1 when that was one too many
 * (the session is over).  That one's "-ERR" is replaced, not followed, by
 * the closing line: one command, one reply, or a pipelining client would
 * take the second line for its next command's reply.
 */
static int
pop_bad(struct pop_sess *s)
{
	if (++s->c->bad < POP3_BAD_MAX)
		return 0;
	if (pop_unreply(s->c) == 0)
		(void)pop_reply(s->c, "-ERR too many bad commands, closing");
	s->end = "bad commands";
	return -1;
}

/*
 * Reads and runs commands from one state's table until a handler ends the
 * state (RES_NEXT, RES_QUIT) or the session ends (RES_FAIL, with s->end set).
 */
static enum pop_res
pop_loop(struct pop_sess *s, const struct pop_cmd *cmds, size_t ncmds,
    const struct pop_cmd *other, size_t nother)
{
	struct pop_conn	*c = s->c;
	char		 line[POP3_CMD_MAX];
	size_t		 len;
	enum pop_res	 res;
	int		 r;

	for (;;) {
		if (c->eof) {		/* a write failed or timed out */
			s->end = "write failed";
			return RES_FAIL;
		}
		r = pop_getline(c, line, sizeof(line), &len);
		if (r == 0) {
			s->end = "eof";
			return RES_FAIL;
		}
		if (r == -1) {
			if (errno == ERANGE || errno == EILSEQ) {
				if (pop_bad(s) == -1)
					return RES_FAIL;
				continue;
			}
			if (errno == ETIMEDOUT) {
				pop_timeout(c);
				s->end = "timeout";
			} else
				s->end = "error";
			return RES_FAIL;
		}
		res = pop_exec(s, cmds, ncmds, other, nother, line);
		pop_wipe(line, len);
		switch (res) {
		case RES_OK:
			(void)pop_reply(c, "+OK");
			c->bad = 0;
			break;
		case RES_DONE:
			c->bad = 0;
			break;
		case RES_ERR:
			if (pop_bad(s) == -1)
				return RES_FAIL;
			break;
		case RES_NEXT:
		case RES_QUIT:
			c->bad = 0;
			return res;
		case RES_FAIL:
			return res;
		}
	}
}

/*
 * AUTHORIZATION.
 */

static enum pop_res
cmd_capa(struct pop_sess *s, char *argv[])
{
	struct pop_conn	*c = s->c;

	(void)argv;
	(void)pop_reply(c, "+OK capability list follows");
	/* The same in both states (RFC 2449 section 5: what AUTHORIZATION
	 * offers is announced in both). */
	(void)pop_reply(c, "TOP");
	(void)pop_reply(c, "USER");
	(void)pop_reply(c, "UIDL");
	(void)pop_reply(c, "RESP-CODES");
	(void)pop_reply(c, "PIPELINING");
	(void)pop_reply(c, "AUTH-RESP-CODE");
	(void)pop_reply(c, "SASL PLAIN");
	(void)pop_reply(c, "IMPLEMENTATION %s-%s", POP3D_NAME, POP3D_VERSION);
	(void)pop_reply(c, ".");
	return RES_DONE;
}

static enum pop_res
cmd_user(struct pop_sess *s, char *argv[])
{
	size_t	 len = strlen(argv[0]);

	s->have_user = 0;
	if (!pop_user_syntax(argv[0], len)) {
		(void)pop_reply(s->c, "-ERR invalid user name");
		return RES_ERR;
	}
	memcpy(s->cred->user, argv[0], len + 1);
	s->have_user = 1;
	/* The same reply for every name: it does not tell who exists. */
	return RES_OK;
}

static void
pop_login_time(struct pop_cred *cred)
{
	if (clock_gettime(CLOCK_MONOTONIC, &cred->when) == -1)
		fatal("clock_gettime");
}

static enum pop_res
cmd_pass(struct pop_sess *s, char *argv[])
{
	size_t	 len = strlen(argv[0]);

	if (!s->have_user) {
		(void)pop_reply(s->c, "-ERR USER first");
		return RES_ERR;
	}
	/* Cannot happen (the line is shorter); checked all the same. */
	if (len > POP3_PASS_MAX) {
		(void)pop_reply(s->c, "-ERR syntax error");
		return RES_ERR;
	}
	memcpy(s->cred->pass, argv[0], len + 1);
	(void)snprintf(s->cred->mech, sizeof(s->cred->mech), "USER");
	s->have_user = 0;
	pop_login_time(s->cred);
	return RES_NEXT;
}

_Static_assert(POP3_SASL_MAX ==
    (2 * POP3_USER_MAX + POP3_PASS_MAX + 2 + 2) / 3 * 4 + 2,
    "POP3_SASL_MAX is the base64 of pop3d.h's longest PLAIN message");

/*
 * Decodes a SASL PLAIN response (RFC 4616): base64 of authzid NUL authcid
 * NUL passwd.  "=" is an empty response (RFC 5034 section 4).  The authzid
 * must be empty or the authcid.  Fills cred; returns 0, or -1 after
 * replying "-ERR".
 */
static int
pop_plain(struct pop_sess *s, const char *b64)
{
	struct base64_decode_ctx ctx;
	uint8_t		 buf[BASE64_DECODE_LENGTH(POP3_SASL_MAX)];
	const char	*zid, *cid, *pw, *end, *why;
	size_t		 len, n = sizeof(buf), i, pad;
	int		 ok;

	len = strlen(b64);
	if (strcmp(b64, "=") == 0)
		len = 0;
	/* RFC 4648 section 4: "=" only as the last one or two octets. */
	for (pad = 0; pad < len && b64[len - 1 - pad] == '='; pad++)
		;
	ok = len % 4 == 0 && len <= POP3_SASL_MAX && pad <= 2;
	for (i = 0; ok && i < len - pad; i++)
		ok = (b64[i] >= 'A' && b64[i] <= 'Z') ||
		    (b64[i] >= 'a' && b64[i] <= 'z') ||
		    (b64[i] >= '0' && b64[i] <= '9') ||
		    b64[i] == '+' || b64[i] == '/';
	if (ok) {
		base64_decode_init(&ctx);
		ok = base64_decode_update(&ctx, &n, buf, len, b64) &&
		    base64_decode_final(&ctx);
	}
	if (!ok) {
		pop_wipe(buf, sizeof(buf));
		(void)pop_reply(s->c, "-ERR invalid base64 data");
		return -1;
	}
	/* Exactly two NULs: the fields, then the password has none. */
	zid = (const char *)buf;
	end = zid + n;
	cid = memchr(zid, '\0', n);
	pw = NULL;
	if (cid != NULL)
		pw = memchr(cid + 1, '\0', (size_t)(end - cid - 1));
	if (pw == NULL || pw + 1 == end ||
	    memchr(pw + 1, '\0', (size_t)(end - pw - 1)) != NULL) {
		pop_wipe(buf, sizeof(buf));
		(void)pop_reply(s->c, "-ERR malformed PLAIN response");
		return -1;
	}
	cid++;
	pw++;
	/* Credentials that cannot pass: [AUTH], which AUTH-RESP-CODE
	 * promises for every credential problem (RFC 3206 section 6). */
	why = !pop_user_syntax(cid, strlen(cid)) ? "invalid user name" :
	    *zid != '\0' && strcmp(zid, cid) != 0 ?
	    "invalid authorization identity" :
	    (size_t)(end - pw) > POP3_PASS_MAX ? "password too long" : NULL;
	if (why != NULL) {
		pop_wipe(buf, sizeof(buf));
		(void)pop_reply(s->c, "-ERR [AUTH] %s", why);
		return -1;
	}
	memcpy(s->cred->user, cid, strlen(cid) + 1);
	memcpy(s->cred->pass, pw, (size_t)(end - pw));
	s->cred->pass[end - pw] = '\0';
	(void)snprintf(s->cred->mech, sizeof(s->cred->mech), "PLAIN");
	pop_wipe(buf, sizeof(buf));
	return 0;
}

static enum pop_res
cmd_auth(struct pop_sess *s, char *argv[])
{
	char	 line[POP3_SASL_MAX];
	size_t	 len;
	int	 r;

	s->have_user = 0;
	if (argv[0] == NULL) {
		(void)pop_reply(s->c, "+OK SASL mechanisms follow");
		(void)pop_reply(s->c, "PLAIN");
		(void)pop_reply(s->c, ".");
		return RES_DONE;
	}
	if (strcasecmp(argv[0], "PLAIN") != 0) {
		(void)pop_reply(s->c, "-ERR unsupported SASL mechanism");
		return RES_ERR;
	}
	if (argv[1] != NULL) {
		if (strcmp(argv[1], "*") == 0) {
			(void)pop_reply(s->c, "-ERR authentication cancelled");
			return RES_ERR;
		}
		r = pop_plain(s, argv[1]);
		pop_wipe(argv[1], strlen(argv[1]));
		if (r == -1)
			return RES_ERR;
		pop_login_time(s->cred);
		return RES_NEXT;
	}

	/* The continuation: an empty challenge, one line of response. */
	(void)pop_reply(s->c, "+ ");
	r = pop_getline(s->c, line, sizeof(line), &len);
	if (r == 0) {
		s->end = "eof";
		return RES_FAIL;
	}
	if (r == -1) {
		if (errno == ERANGE || errno == EILSEQ)
			return RES_ERR;		/* answered */
		if (errno == ETIMEDOUT) {
			pop_timeout(s->c);
			s->end = "timeout";
		} else
			s->end = "error";
		return RES_FAIL;
	}
	if (strcmp(line, "*") == 0) {
		(void)pop_reply(s->c, "-ERR authentication cancelled");
		return RES_ERR;
	}
	r = pop_plain(s, len == 0 ? "=" : line);
	pop_wipe(line, len);
	if (r == -1)
		return RES_ERR;
	pop_login_time(s->cred);
	return RES_NEXT;
}

static enum pop_res
cmd_quit_auth(struct pop_sess *s, char *argv[])
{
	(void)argv;
	(void)pop_reply(s->c, "+OK %s signing off", POP3D_NAME);
	s->end = "quit";
	return RES_QUIT;
}

int
pop_authorize(struct pop_conn *c, struct pop_cred *cred, int greet)
{
	struct pop_sess	 s;
	enum pop_res	 res;

	memset(&s, 0, sizeof(s));
	s.c = c;
	s.cred = cred;
	pop_wipe(cred, sizeof(*cred));
	if (greet)
		(void)pop_reply(c, "+OK %s ready", POP3D_NAME);
	res = pop_loop(&s, auth_cmds, nitems(auth_cmds),
	    trans_cmds, nitems(trans_cmds));
	/* Another process may go on from here: say everything now. */
	(void)pop_flush(c);
	if (res == RES_NEXT)
		return 1;
	pop_wipe(cred, sizeof(*cred));
	if (res != RES_QUIT) {
		c->eof = 1;
		if (opt.debug)
			pop_log(LOG_DEBUG, "before login: %s", s.end);
	}
	return 0;
}

/* Until the fixed deadline of a login's answer, cred->when + fail delay. */
static void
pop_auth_deadline(const struct pop_cred *cred)
{
	struct timespec	 t = cred->when;
	int		 r;

	pop_after_ms(&t, opt.fail_delay_ms);
	while ((r = clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &t,
	    NULL)) == EINTR)
		;
	if (r != 0) {
		errno = r;
		fatal("clock_nanosleep");
	}
}

int
pop_auth_error(struct pop_conn *c, const struct pop_cred *cred)
{
	pop_auth_deadline(cred);
	(void)pop_reply(c, "-ERR [SYS/TEMP] cannot check logins now, try "
	    "again later");
	(void)pop_flush(c);
	c->eof = 1;
	return POP3_EX_CONFIG;
}

int
pop_auth_failed(struct pop_conn *c, const struct pop_cred *cred)
{
	pop_auth_deadline(cred);
	/* The same text whatever the cause: it does not tell who exists. */
	(void)pop_reply(c, "-ERR [AUTH] authentication failed");
	if (++c->authfail >= POP3_AUTH_FAIL_MAX) {
		(void)pop_flush(c);
		c->eof = 1;
		return -1;
	}
	return 0;
}

/*
 * TRANSACTION and UPDATE.
 */

/*
 * A message number argument: 0 and the 0-based index, or -1 after the
 * reply.  Deleted messages are refused.
 */
static int
pop_msgnum(struct pop_sess *s, const char *arg, uint32_t *ip)
{
	uint64_t	 n;

	if (pop_number(arg, UINT64_MAX, &n) == -1) {
		if (errno == EINVAL) {
			(void)pop_reply(s->c, "-ERR invalid message number");
			return -1;
		}
		n = 0;			/* past 2^64: no such message */
	}
	if (n == 0 || n > md_count(s->md)) {
		(void)pop_reply(s->c, "-ERR no such message");
		return -1;
	}
	if (md_is_deleted(s->md, (uint32_t)(n - 1))) {
		(void)pop_reply(s->c, "-ERR message %llu is deleted",
		    (unsigned long long)n);
		return -1;
	}
	*ip = (uint32_t)(n - 1);
	return 0;
}

static enum pop_res
cmd_stat(struct pop_sess *s, char *argv[])
{
	(void)argv;
	(void)pop_reply(s->c, "+OK %lu %llu", (unsigned long)s->live,
	    (unsigned long long)s->live_octets);
	return RES_DONE;
}

static enum pop_res
cmd_list(struct pop_sess *s, char *argv[])
{
	char		 num[24], *d;
	uint32_t	 i;

	if (argv[0] != NULL) {
		if (pop_msgnum(s, argv[0], &i) == -1)
			return RES_ERR;
		(void)pop_reply(s->c, "+OK %lu %llu", (unsigned long)i + 1,
		    (unsigned long long)md_size(s->md, i));
		return RES_DONE;
	}
	(void)pop_reply(s->c, "+OK %lu messages (%llu octets)",
	    (unsigned long)s->live, (unsigned long long)s->live_octets);
	for (i = 0; i < md_count(s->md) && !s->c->eof; i++)
		if (!md_is_deleted(s->md, i)) {
			d = pop_utoa(num + sizeof(num), md_size(s->md, i));
			pop_item(s->c, i + 1, d, (size_t)(num + sizeof(num) -
			    d));
		}
	(void)pop_reply(s->c, ".");
	return RES_DONE;
}

static enum pop_res
cmd_uidl(struct pop_sess *s, char *argv[])
{
	char		 uid[POP3_UIDL_MAX + 1];
	uint32_t	 i;

	if (argv[0] != NULL) {
		if (pop_msgnum(s, argv[0], &i) == -1)
			return RES_ERR;
		md_uidl(s->md, i, uid, sizeof(uid));
		(void)pop_reply(s->c, "+OK %lu %s", (unsigned long)i + 1, uid);
		return RES_DONE;
	}
	(void)pop_reply(s->c, "+OK unique-id listing follows");
	for (i = 0; i < md_count(s->md) && !s->c->eof; i++)
		if (!md_is_deleted(s->md, i)) {
			md_uidl(s->md, i, uid, sizeof(uid));
			pop_item(s->c, i + 1, uid, strlen(uid));
		}
	(void)pop_reply(s->c, ".");
	return RES_DONE;
}

static int
pop_stream_put(void *arg, const char *p, size_t len)
{
	struct pop_stream	*st = arg;

	if (len > sizeof(st->c->obuf) - st->c->olen ||
	    len >= sizeof(st->c->obuf))
		st->flushed = 1;	/* pop_put() will write */
	if (pop_put(st->c, p, len) == -1) {
		st->gone = 1;
		return -1;
	}
	st->bytes += len;
	return 0;
}

/*
 * Sends "+OK ..." (already formatted in ok), message i (lines < 0: all,
 * else TOP) and the final ".".  If the message cannot be read (MD_CHANGED:
 * the mailbox was rewritten under us; MD_TEMP: an I/O error) while none of
 * it has left the buffer, the "+OK" and what followed it are taken back and
 * "-ERR [SYS/TEMP]" sent; if part of it was already written, the connection
 * is closed without the final ".", so that the client cannot take a partial
 * message for a whole one.  Either way the session ends.
 */
static enum pop_res
pop_send_msg(struct pop_sess *s, uint32_t i, long lines, const char *ok)
{
	struct pop_conn		*c = s->c;
	struct pop_stream	 st;
	enum md_res		 r;
	size_t			 mark;

	/* Room for the "+OK" line, so that a flush cannot take it away. */
	if (sizeof(c->obuf) - c->olen < POP3_LINE_MAX && pop_flush(c) == -1)
		goto gone;
	mark = c->olen;
	if (pop_reply(c, "%s", ok) == -1)
		goto gone;
	memset(&st, 0, sizeof(st));
	st.c = c;
	r = md_stream(s->md, i, lines, pop_stream_put, &st);
	if (r == MD_OK) {
		(void)pop_reply(c, ".");
		return RES_DONE;
	}
	if (st.gone)
		goto gone;
	if (!st.flushed) {
		c->olen = mark;
		(void)pop_reply(c, "-ERR [SYS/TEMP] cannot read message %lu, "
		    "try again later", (unsigned long)i + 1);
	} else
		c->olen = 0;	/* the rest of a partial message: dropped */
	pop_log(LOG_ERR, "user %s: message %lu: %s", s->user->name,
	    (unsigned long)i + 1, r == MD_CHANGED ? "maildrop changed" :
	    "read error");
	(void)pop_flush(c);
	c->eof = 1;
	s->end = r == MD_CHANGED ? "maildrop changed" : "read error";
	s->status = POP3_EX_TEMPFAIL;
	return RES_FAIL;
gone:
	c->eof = 1;
	s->end = "write failed";
	return RES_FAIL;
}

static enum pop_res
cmd_retr(struct pop_sess *s, char *argv[])
{
	char		 ok[64];
	uint32_t	 i;
	enum pop_res	 res;

	if (pop_msgnum(s, argv[0], &i) == -1)
		return RES_ERR;
	(void)snprintf(ok, sizeof(ok), "+OK %llu octets",
	    (unsigned long long)md_size(s->md, i));
	if ((res = pop_send_msg(s, i, -1, ok)) == RES_DONE) {
		s->nretr++;
		s->retr_octets += md_size(s->md, i);
	}
	return res;
}

static enum pop_res
cmd_top(struct pop_sess *s, char *argv[])
{
	uint64_t	 k;
	uint32_t	 i;

	if (pop_msgnum(s, argv[0], &i) == -1)
		return RES_ERR;
	/* More lines than any body has is the whole message (RFC 1939),
	 * however many digits ask for it. */
	if (pop_number(argv[1], LONG_MAX, &k) == -1) {
		if (errno != ERANGE) {
			(void)pop_reply(s->c, "-ERR invalid line count");
			return RES_ERR;
		}
		k = LONG_MAX;
	}
	return pop_send_msg(s, i, (long)k, "+OK top of message follows");
}

static enum pop_res
cmd_dele(struct pop_sess *s, char *argv[])
{
	uint32_t	 i;

	if (pop_msgnum(s, argv[0], &i) == -1)
		return RES_ERR;
	md_dele(s->md, i);
	s->dele[s->ndele++] = i;
	s->live--;
	s->live_octets -= md_size(s->md, i);
	(void)pop_reply(s->c, "+OK message %lu deleted", (unsigned long)i + 1);
	return RES_DONE;
}

static enum pop_res
cmd_noop(struct pop_sess *s, char *argv[])
{
	(void)s;
	(void)argv;
	return RES_OK;
}

static enum pop_res
cmd_rset(struct pop_sess *s, char *argv[])
{
	uint32_t	 i;

	(void)argv;
	/* Only what was deleted: a client repeating RSET costs nothing. */
	while (s->ndele > 0) {
		i = s->dele[--s->ndele];
		md_undele(s->md, i);
		s->live++;
		s->live_octets += md_size(s->md, i);
	}
	(void)pop_reply(s->c, "+OK maildrop has %lu messages (%llu octets)",
	    (unsigned long)s->live, (unsigned long long)s->live_octets);
	return RES_DONE;
}

static enum pop_res
cmd_quit_trans(struct pop_sess *s, char *argv[])
{
	enum md_res	 r;

	(void)argv;
	s->end = "quit";
	if (s->ndele == 0) {
		(void)pop_reply(s->c, "+OK %s signing off (%lu messages left)",
		    POP3D_NAME, (unsigned long)md_count(s->md));
		return RES_QUIT;
	}
	/* UPDATE, but only while the client can still be written to: the
	 * replies of commands it sent with the QUIT (a RETR, the DELE) wait
	 * in the buffer, and a connection reset before them means that it
	 * never got the message it deletes. */
	if (pop_flush(s->c) == -1) {
		s->end = "write failed";
		return RES_FAIL;
	}
	if ((r = md_update(s->md)) == MD_OK) {
		(void)pop_reply(s->c, "+OK %s signing off (%lu messages left)",
		    POP3D_NAME, (unsigned long)s->live);
		return RES_QUIT;
	}
	pop_log(LOG_ERR, "user %s: update failed (%s)", s->user->name,
	    r == MD_CHANGED ? "maildrop changed" : "error");
	(void)pop_reply(s->c, "-ERR [SYS/TEMP] cannot update maildrop, "
	    "try again later");
	s->ndele = 0;
	s->end = "update failed";
	s->status = POP3_EX_TEMPFAIL;
	return RES_QUIT;
}

int
pop_transaction(struct pop_conn *c, const struct pop_user *user)
{
	struct maildrop	*md;
	struct pop_sess	 s;
	enum md_res	 r;
	enum pop_res	 res;
	uint32_t	 i, n;

	memset(&s, 0, sizeof(s));
	s.c = c;
	s.user = user;
	s.status = POP3_EX_CLOSED;

	if ((md = md_new()) == NULL)
		r = MD_TEMP;
	else
		r = md_open(md, user);
	if (r != MD_OK) {
		md_free(md);
		switch (r) {
		case MD_INUSE:
			(void)pop_reply(c, "-ERR [IN-USE] maildrop is in use "
			    "by another session");
			s.end = "in use";
			s.status = POP3_EX_TEMPFAIL;
			break;
		case MD_PERM:
			(void)pop_reply(c, "-ERR [SYS/PERM] cannot open "
			    "maildrop");
			s.end = "maildrop refused";
			s.status = POP3_EX_CONFIG;
			break;
		default:
			(void)pop_reply(c, "-ERR [SYS/TEMP] cannot open "
			    "maildrop, try again later");
			s.end = "maildrop unavailable";
			s.status = POP3_EX_TEMPFAIL;
			break;
		}
		(void)pop_flush(c);
		pop_log(LOG_NOTICE, "user %s: session end: %s", user->name,
		    s.end);
		return s.status;
	}
	s.md = md;
	if (md_count(md) > 0 && (s.dele = reallocarray(NULL, md_count(md),
	    sizeof(*s.dele))) == NULL) {
		md_free(md);
		(void)pop_reply(c, "-ERR [SYS/TEMP] out of memory");
		(void)pop_flush(c);
		pop_log(LOG_ERR, "user %s: out of memory", user->name);
		return POP3_EX_TEMPFAIL;
	}
	for (i = 0; i < md_count(md); i++) {
		md_undele(md, i);
		s.live_octets += md_size(md, i);
	}
	s.live = md_count(md);
	(void)pop_reply(c, "+OK maildrop has %lu messages (%llu octets)",
	    (unsigned long)s.live, (unsigned long long)s.live_octets);

	res = pop_loop(&s, trans_cmds, nitems(trans_cmds),
	    auth_cmds, nitems(auth_cmds));
	if (res == RES_QUIT && s.status == POP3_EX_CLOSED)
		s.status = POP3_EX_OK;
	/* Only a successful UPDATE deleted anything (s.ndele is then), and
	 * left the session's live messages (its index may be renewed to
	 * the new file's: md_count() is not the count before). */
	if (res != RES_QUIT)
		s.ndele = 0;
	n = s.ndele > 0 ? s.live : md_count(md);
	md_free(md);
	(void)pop_flush(c);
	pop_log(LOG_INFO, "user %s: session end: %s; retrieved %lu "
	    "(%llu octets), deleted %lu, left %lu", user->name, s.end,
	    (unsigned long)s.nretr, (unsigned long long)s.retr_octets,
	    (unsigned long)s.ndele, (unsigned long)n);
	free(s.dele);
	return s.status;
}
