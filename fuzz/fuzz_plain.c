/*
 * fuzz_plain.c: libFuzzer target for the SASL PLAIN decoder of pop3d.c,
 * pop_plain() (RFC 4616 in base64, RFC 5034).
 *
 * Input: the response line as the client sends it (up to the first NUL,
 * which the line reader would refuse).  Checks, besides the sanitizers:
 * a refusal is exactly one "-ERR" line and leaves no login; an accepted
 * response is what an independent strict base64 decoder makes of it:
 * [authzid] NUL authcid NUL passwd, authzid empty or equal to authcid, a
 * user name pop3d accepts, a password of 1..POP3_PASS_MAX octets without
 * NUL; and every response that decoder finds valid is accepted.
 */
#include "../pop3d.c"
#include "../proto.c"
#include "../conn.c"
#include "../io.c"
#include "../log.c"
#include "../mdint.h"

#include "common.h"
#include "mdstub.c"

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

/* The maildrop is never reached from here. */
enum md_res
md_open(struct maildrop *md, const struct pop_user *u)
{
	(void)md;
	(void)u;
	abort();
}

enum md_res
md_stream(struct maildrop *md, uint32_t i, long l,
    int (*put)(void *, const char *, size_t), void *arg)
{
	(void)md;
	(void)i;
	(void)l;
	(void)put;
	(void)arg;
	abort();
}

void
md_uidl(const struct maildrop *md, uint32_t i, char *b, size_t n)
{
	(void)md;
	(void)i;
	(void)b;
	(void)n;
	abort();
}

enum md_res
md_update(struct maildrop *md)
{
	(void)md;
	abort();
}

void
md_close(struct maildrop *md)
{
	(void)md;
	abort();
}

static int
fz_b64val(int ch)
{
	if (ch >= 'A' && ch <= 'Z')
		return ch - 'A';
	if (ch >= 'a' && ch <= 'z')
		return ch - 'a' + 26;
	if (ch >= '0' && ch <= '9')
		return ch - '0' + 52;
	if (ch == '+')
		return 62;
	if (ch == '/')
		return 63;
	return -1;
}

/*
 * RFC 4648 section 4, strict: groups of 4, "=" only as the padding of the
 * last group; canonical: 1 if the padding bits are zero, else 0 (still
 * decoded).  Returns the decoded length, or -1.
 */
static long
fz_b64(const char *s, size_t len, unsigned char *out, int *canon)
{
	size_t	 i, o = 0, pad = 0;
	int	 v[4], k;

	*canon = 1;
	if (len % 4 != 0)
		return -1;
	for (i = 0; i < len; i += 4) {
		for (k = 0; k < 4; k++) {
			if (s[i + k] == '=' && i + 4 == len && k >= 2 &&
			    (k == 3 || s[i + 3] == '=')) {
				v[k] = 0;
				pad++;
			} else if ((v[k] = fz_b64val((unsigned char)s[i + k])) ==
			    -1)
				return -1;
		}
		out[o++] = (unsigned char)(v[0] << 2 | v[1] >> 4);
		if (pad < 2)
			out[o++] = (unsigned char)((v[1] & 15) << 4 | v[2] >> 2);
		if (pad < 1)
			out[o++] = (unsigned char)((v[2] & 3) << 6 | v[3]);
	}
	if ((pad == 2 && (v[1] & 15) != 0) || (pad == 1 && (v[2] & 3) != 0))
		*canon = 0;
	return (long)o;
}

int	LLVMFuzzerTestOneInput(const uint8_t *, size_t);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static struct pop_conn	 c;
	static struct pop_cred	 cred;
	static unsigned char	 dec[2048];
	static char		 in[2048];
	struct pop_sess		 s;
	const char		*zid, *cid, *pw;
	size_t			 len, plen;
	long			 n;
	int			 r, canon, valid = 0;

	len = strnlen((const char *)data, size);
	if (len >= sizeof(in))
		return 0;
	memcpy(in, data, len);
	in[len] = '\0';

	memset(&c, 0, sizeof(c));
	c.in = c.out = -1;
	memset(&cred, 0, sizeof(cred));
	memset(&s, 0, sizeof(s));
	s.c = &c;
	s.cred = &cred;
	opt.debug = 0;

	r = pop_plain(&s, in);

	/* What a strict decoder makes of it. */
	n = len <= POP3_SASL_MAX && strcmp(in, "=") != 0 ?
	    fz_b64(in, len, dec, &canon) : len == 1 ? 0 : -1;
	if (n == 0)
		canon = 1;
	zid = (const char *)dec;
	cid = n > 0 ? memchr(dec, '\0', (size_t)n) : NULL;
	pw = cid != NULL ? memchr(cid + 1, '\0', (size_t)(zid + n - cid - 1)) :
	    NULL;
	if (pw != NULL) {
		cid++;
		pw++;
		plen = (size_t)(zid + n - pw);
		valid = memchr(pw, '\0', plen) == NULL && plen > 0 &&
		    plen <= POP3_PASS_MAX &&
		    pop_user_syntax(cid, strlen(cid)) &&
		    (*zid == '\0' || strcmp(zid, cid) == 0);
	}

	if (r == -1) {
		FZ_CHECK(c.olen >= 6 && memcmp(c.obuf, "-ERR ", 5) == 0 &&
		    memchr(c.obuf, '\n', c.olen) == c.obuf + c.olen - 1,
		    "refusal is not one -ERR line: %.*s", (int)c.olen, c.obuf);
		FZ_CHECK(cred.user[0] == '\0' && cred.pass[0] == '\0',
		    "refused, but a login was filled in");
		FZ_CHECK(!(valid && canon), "valid PLAIN response refused: "
		    "%s", in);
		return 0;
	}
	FZ_CHECK(r == 0, "pop_plain returned %d", r);
	FZ_CHECK(c.olen == 0, "accepted with a reply: %.*s", (int)c.olen,
	    c.obuf);
	FZ_CHECK(strcmp(cred.mech, "PLAIN") == 0, "mech %s", cred.mech);
	FZ_CHECK(valid, "accepted what a strict decoder refuses: %s", in);
	FZ_CHECK(strcmp(cred.user, cid) == 0, "user %s, not %s", cred.user,
	    cid);
	FZ_CHECK(strlen(cred.pass) == plen && memcmp(cred.pass, pw, plen) == 0,
	    "password differs");
	return 0;
}
