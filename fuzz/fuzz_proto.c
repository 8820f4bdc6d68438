/*
 * fuzz_proto.c: libFuzzer target for the line reader, the command parser
 * and the state machine of pop3d.c, run whole: pop_authorize(), the login
 * verdict, pop_auth_failed(), pop_transaction() with a stub maildrop.
 *
 * Input: byte 0: octets per read(2) (0: as many as fit, else 1..255);
 * byte 1: the client stops reading after byte1 * 97 octets of replies
 * (0: never; then writes fail with EPIPE); byte 2: the stub maildrop's
 * behaviour (FZ_* below); the rest: what the client sends.  The client's
 * octets come from a memfd, the replies go to another one.
 *
 * Checks, besides the sanitizers: the greeting comes first; every reply
 * line ends in CRLF, status lines start with "+OK" or "-ERR" (or are the
 * SASL "+ " continuation) and are at most POP3_LINE_MAX octets with their
 * CRLF, as are the lines of CAPA, LIST, UIDL and AUTH listings; data lines
 * starting with "." are stuffed; a multi-line reply ends with "." unless
 * the client went away or the stub failed a stream midway; a login that
 * reaches us is well-formed; the exit status is one pop3d.8 lists.
 */
#include "../pop3d.c"
#include "../proto.c"
#include "../conn.c"
#include "../io.c"
#include "../log.c"
#include "../mdint.h"

#include <sys/mman.h>

#include "common.h"
#include "mdstub.c"

/* Stub maildrop behaviour, byte 2 of the input. */
#define FZ_OPEN_FAIL	0x01	/* md_open fails: bits 1-2 say how */
#define FZ_UPDATE_FAIL	0x08	/* md_update returns MD_TEMP */
#define FZ_STREAM_CHG	0x10	/* message 4: MD_CHANGED before any octet */
#define FZ_STREAM_MID	0x20	/* message 4: MD_TEMP after some octets */
#define FZ_EMPTY	0x40	/* no messages */
#define FZ_MANY		0x80	/* 5000 messages: listings past the obuf */

#define FZ_NMSG		5
#define FZ_NMANY	5000

static unsigned		 fz_flags;

/* The stub messages, LF line ends; message 3 is built in fz_init(). */
static const char *fz_text[FZ_NMSG] = {
	"Subject: one\n\nbody\n",
	"Subject: dots\n\n.\n..\n.x\nend\n",
	NULL,
	"Subject: four\n\n1\n2\n3\n4\n5\n",
	"no header end\nat all\n",
};
static char	*fz_big;
static uint64_t	 fz_size[FZ_NMSG];

/* The size RETR sends: every LF becomes CRLF. */
static uint64_t
fz_msgsize(const char *s)
{
	uint64_t	 n = 0;

	for (; *s != '\0'; s++)
		n += *s == '\n' ? 2 : 1;
	return n;
}

static void
fz_init(void)
{
	size_t	 i, len = 3000 * 72 + 32;
	char	*p;

	if (fz_big != NULL)
		return;
	if ((fz_big = malloc(len)) == NULL)
		abort();
	p = fz_big + sprintf(fz_big, "Subject: big\n\n");
	for (i = 0; i < 3000; i++) {
		memset(p, i % 7 == 0 ? '.' : 'x', 70);
		p[70] = '\n';
		p += 71;
	}
	*p = '\0';
	fz_text[2] = fz_big;
	for (i = 0; i < FZ_NMSG; i++)
		fz_size[i] = fz_msgsize(fz_text[i]);
	opt.debug = 0;
	opt.fail_delay_ms = 0;
	opt.timeout = 5;
}

static const char *
fz_msgtext(uint32_t i)
{
	return fz_text[i % FZ_NMSG];
}

/*
 * The stub maildrop (maildrop.h contracts).
 */
enum md_res
md_open(struct maildrop *md, const struct pop_user *user)
{
	static const enum md_res fail[] = {
		MD_INUSE, MD_PERM, MD_TEMP, MD_CHANGED
	};
	uint32_t	 i;

	memset(md, 0, sizeof(*md));
	md->fd = -1;
	md->user = user;
	if (fz_flags & FZ_OPEN_FAIL)
		return fail[(fz_flags >> 1) & 3];
	md->n = fz_flags & FZ_EMPTY ? 0 : fz_flags & FZ_MANY ? FZ_NMANY :
	    FZ_NMSG;
	if (md->n == 0)
		return MD_OK;
	if ((md->msg = calloc(md->n, sizeof(*md->msg))) == NULL)
		abort();
	for (i = 0; i < md->n; i++) {
		md->msg[i].size = fz_size[i % FZ_NMSG];
		md->msg[i].deleted = 1;	/* pop_transaction must clear it */
	}
	return MD_OK;
}

enum md_res
md_stream(struct maildrop *md, uint32_t i, long lines,
    int (*put)(void *, const char *, size_t), void *arg)
{
	static char	 out[512 * 1024];
	const char	*s, *e;
	size_t		 len = 0, n, k;
	long		 body = 0;
	int		 hdr = 1;

	FZ_CHECK(md->msg != NULL && i < md->n, "md_stream(%u) of %u", i,
	    md->n);
	FZ_CHECK(!md->msg[i].deleted, "md_stream of deleted message %u", i);
	if (i == 3 && (fz_flags & FZ_STREAM_CHG))
		return MD_CHANGED;
	for (s = fz_msgtext(i); *s != '\0'; s = e + 1) {
		if (lines >= 0 && !hdr && body++ >= lines)
			break;
		e = strchr(s, '\n');
		if (*s == '.')
			out[len++] = '.';
		memcpy(out + len, s, (size_t)(e - s));
		len += (size_t)(e - s);
		out[len++] = '\r';
		out[len++] = '\n';
		if (e == s && hdr) {
			hdr = 0;
			if (lines == 0)
				break;
		}
	}
	/* Chunks as maildrop.c makes them: up to 128 KB, some small. */
	for (k = 0; k < len; k += n) {
		n = len - k;
		if (n > 128 * 1024)
			n = 128 * 1024;
		if ((i == 1 || i == 3) && n > 7)
			n = 7;
		if (i == 3 && (fz_flags & FZ_STREAM_MID) && k > 0)
			return MD_TEMP;
		if (put(arg, out + k, n) == -1)
			return MD_TEMP;
	}
	return MD_OK;
}

void
md_uidl(const struct maildrop *md, uint32_t i, char *buf, size_t size)
{
	FZ_CHECK(i < md->n && !md->msg[i].deleted, "md_uidl(%u)", i);
	FZ_CHECK(size > POP3_UIDL_MAX, "md_uidl buffer of %zu", size);
	(void)snprintf(buf, size, "uid-%u", i);
}

enum md_res
md_update(struct maildrop *md)
{
	uint32_t	 i, d = 0;

	for (i = 0; i < md->n; i++)
		d += md->msg[i].deleted;
	FZ_CHECK(d > 0, "md_update without a deleted message");
	return fz_flags & FZ_UPDATE_FAIL ? MD_TEMP : MD_OK;
}

void
md_close(struct maildrop *md)
{
	free(md->msg);
	md->msg = NULL;
	md->n = 0;
}

int
auth_main(void)
{
	abort();
}

/* main() is never run: --proxy-from is proxy.c's (fuzz_proxy). */
int
proxy_opt(const char *arg)
{
	(void)arg;
	abort();
}

/*
 * The reply checker.
 */

/* Does the status line s (without CRLF) open a multi-line reply?  *data:
 * its lines are message data (RETR, TOP), of any length. */
static int
fz_multi(const char *s, size_t len, int *data)
{
	const char	*p = s + 4, *e = s + len;

	*data = 0;
	if (len < 4 || memcmp(s, "+OK ", 4) != 0)
		return 0;
	if (memmem(s, len, "follow", 6) != NULL) {
		*data = len == 26 && memcmp(s, "+OK top of message follows",
		    26) == 0;
		return 1;
	}
	if (p == e || *p < '0' || *p > '9')
		return 0;
	while (p < e && *p >= '0' && *p <= '9')
		p++;
	if ((size_t)(e - p) == 7 && memcmp(p, " octets", 7) == 0) {
		*data = 1;		/* RETR */
		return 1;
	}
	return (size_t)(e - p) >= 11 && memcmp(p, " messages (", 11) == 0;
}

static void
fz_check_replies(const unsigned char *out, size_t len, int cut)
{
	const char	*s = (const char *)out, *e = s + len, *nl;
	size_t		 n, lines = 0;
	int		 multi = 0, data = 0;

	for (; s < e; s = nl + 1, lines++) {
		if ((nl = memchr(s, '\n', (size_t)(e - s))) == NULL) {
			FZ_CHECK(cut, "reply without a line end at the end: "
			    "%.*s", (int)(e - s), s);
			return;
		}
		n = (size_t)(nl - s) + 1;
		FZ_CHECK(n >= 2 && nl[-1] == '\r', "line %zu not CRLF: %.*s",
		    lines, (int)n, s);
		n -= 2;
		if (lines == 0)
			FZ_CHECK(n >= 4 && memcmp(s, "+OK ", 4) == 0,
			    "greeting: %.*s", (int)n, s);
		if (multi) {
			if (n == 1 && s[0] == '.') {
				multi = 0;
				continue;
			}
			FZ_CHECK(n == 0 || s[0] != '.' || (n >= 2 &&
			    s[1] == '.'), "data line not stuffed: %.*s",
			    (int)n, s);
			FZ_CHECK(data || n + 2 <= POP3_LINE_MAX,
			    "listing line of %zu octets", n + 2);
			continue;
		}
		FZ_CHECK(n + 2 <= POP3_LINE_MAX, "reply of %zu octets", n + 2);
		FZ_CHECK((n >= 3 && memcmp(s, "+OK", 3) == 0 &&
		    (n == 3 || s[3] == ' ')) ||
		    (n >= 4 && memcmp(s, "-ERR", 4) == 0 &&
		    (n == 4 || s[4] == ' ')) ||
		    (n == 2 && memcmp(s, "+ ", 2) == 0),
		    "not a status line: %.*s", (int)n, s);
		multi = fz_multi(s, n, &data);
	}
	FZ_CHECK(cut || !multi, "multi-line reply without its \".\"");
}

int	LLVMFuzzerTestOneInput(const uint8_t *, size_t);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static struct pop_conn	 c;
	static struct pop_cred	 cred;
	static struct pop_user	 u;
	static struct fz_buf	 out;
	int			 in, ofd, first, status = -1, cut;

	if (size < 3)
		return 0;
	fz_init();
	fz_flags = data[2];
	in = fz_memfd("client", data + 3, size - 3);
	ofd = fz_memfd("replies", "", 0);
	fz_read_fd = in;
	fz_read_max = data[0];
	fz_write_fd = ofd;
	fz_write_limit = data[1] != 0;
	fz_write_left = (size_t)data[1] * 97;

	pop_conn_init(&c, in, ofd);
	for (first = 1;; first = 0) {
		if (!pop_authorize(&c, &cred, first)) {
			FZ_CHECK(cred.user[0] == '\0' && cred.pass[0] == '\0',
			    "credentials left after the session");
			status = c.eof ? POP3_EX_CLOSED : POP3_EX_OK;
			break;
		}
		FZ_CHECK(memchr(cred.user, '\0', sizeof(cred.user)) != NULL &&
		    memchr(cred.pass, '\0', sizeof(cred.pass)) != NULL &&
		    pop_user_syntax(cred.user, strlen(cred.user)),
		    "bad login record");
		FZ_CHECK(strcmp(cred.mech, "USER") == 0 ||
		    strcmp(cred.mech, "PLAIN") == 0, "mech %s", cred.mech);
		if (strcmp(cred.user, "alice") == 0 &&
		    strcmp(cred.pass, "pw") == 0)
			break;
		if (pop_auth_failed(&c, &cred) == -1) {
			status = POP3_EX_NOUSER;
			break;
		}
	}
	if (status == -1) {
		memset(&u, 0, sizeof(u));
		(void)snprintf(u.name, sizeof(u.name), "%s", cred.user);
		(void)snprintf(u.mailbox, sizeof(u.mailbox), "/nonexistent");
		u.uid = 1000;
		u.gid = 1000;
		status = pop_transaction(&c, &u);
	}
	FZ_CHECK(status == POP3_EX_OK || status == POP3_EX_CLOSED ||
	    status == POP3_EX_NOUSER || status == POP3_EX_TEMPFAIL ||
	    status == POP3_EX_CONFIG, "exit status %d", status);

	fz_slurp(ofd, &out);
	cut = fz_write_limit || (fz_flags & FZ_STREAM_MID);
	fz_check_replies(out.p, out.len, cut);
	fz_read_fd = fz_write_fd = -1;
	(void)close(in);
	(void)close(ofd);
	return 0;
}
