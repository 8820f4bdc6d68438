/*
 * fuzz_proxy.c: libFuzzer target for the PROXY protocol header reader of
 * proxy.c: proxy_read() (with conn.c's wait), proxy_parse(), and the
 * monitor's proxy_peer().
 *
 * Input: byte 0 sets the octets per read(2) (0: all at once; 1: one at a
 * time), the rest is what the proxy sends.  Checked against a reference
 * reading of the spec written here (HAProxy's proxy-protocol.txt):
 * - accepted exactly when the reference accepts: a v1 line "PROXY "
 *   ... CRLF of at most 107 octets, "UNKNOWN" (anything after it) or
 *   TCP4/TCP6 with two addresses of that family and two decimal ports of
 *   at most 65535, single spaces; or a v2 header (signature, version 2,
 *   command LOCAL or PROXY, family 0..3, protocol 0..2, an address block
 *   as long as the family needs) whose 16 + length octets all arrived;
 * - the client's address is the reference's (none for UNKNOWN, LOCAL,
 *   UNSPEC and UNIX);
 * - nothing past the header is lost: the input buffer then holds exactly
 *   the octets after the header that were read, and the file offset says
 *   no other octet was read; a v2 header is never read past at all, a v1
 *   line never past its 107th octet;
 * - the monitor's check accepts what the reader produced and formats the
 *   client as inet_ntop does; any 17 octets it accepts are a record the
 *   reader can make (family 0 all zero, 4 with zeros after its 4 octets,
 *   or 6), and the address it gives parses back to the record's;
 * - fatal()/fatalx() never run.
 */
#include "../conn.c"
#include "../io.c"
#include "../log.c"
#include "../proxy.c"

#include <stdlib.h>

#include "common.h"

/* What the reference expects. */
struct fz_ref {
	int		 ok;
	size_t		 len;		/* the header's length */
	int		 family;	/* 0, 4 or 6 */
	uint8_t		 addr[16];
};

static int
fz_port(const char *s, size_t len)
{
	unsigned long	 v = 0;
	size_t		 i;

	if (len < 1 || len > 5)
		return 0;
	for (i = 0; i < len; i++) {
		if (s[i] < '0' || s[i] > '9')
			return 0;
		v = v * 10 + (unsigned long)(s[i] - '0');
	}
	return v <= 65535;
}

/* One field of s[0..len) (space separated): start and length. */
static int
fz_field(const char *s, size_t len, int k, const char **f, size_t *flen)
{
	size_t	 i, start = 0;
	int	 n = 0;

	for (i = 0; i <= len; i++)
		if (i == len || s[i] == ' ') {
			if (n == k) {
				*f = s + start;
				*flen = i - start;
				return 1;
			}
			n++;
			start = i + 1;
		}
	return 0;
}

static int
fz_nfields(const char *s, size_t len)
{
	size_t	 i;
	int	 n = 1;

	for (i = 0; i < len; i++)
		n += s[i] == ' ';
	return n;
}

static int
fz_addr(int af, const char *f, size_t flen, uint8_t *out)
{
	char	 buf[64];

	if (flen >= sizeof(buf) || memchr(f, '\0', flen) != NULL)
		return 0;
	memcpy(buf, f, flen);
	buf[flen] = '\0';
	return inet_pton(af, buf, out) == 1;
}

static void
fz_ref_v1(const uint8_t *d, size_t n, struct fz_ref *r)
{
	const char	*s = (const char *)d, *f;
	size_t		 i, len, flen;
	uint8_t		 dst[16];
	int		 af;

	for (i = 0; i < n && i < 107 && d[i] != '\n'; i++)
		;
	if (i == n || i == 107 || i < 1 || d[i - 1] != '\r')
		return;
	r->len = i + 1;
	len = i - 1;			/* without CRLF */
	if (len >= 13 && memcmp(s, "PROXY UNKNOWN", 13) == 0 &&
	    (len == 13 || s[13] == ' ')) {
		r->ok = 1;
		return;
	}
	if (fz_nfields(s, len) != 6)
		return;
	(void)fz_field(s, len, 1, &f, &flen);
	if (flen == 4 && memcmp(f, "TCP4", 4) == 0)
		af = AF_INET;
	else if (flen == 4 && memcmp(f, "TCP6", 4) == 0)
		af = AF_INET6;
	else
		return;
	(void)fz_field(s, len, 2, &f, &flen);
	if (!fz_addr(af, f, flen, r->addr))
		return;
	(void)fz_field(s, len, 3, &f, &flen);
	if (!fz_addr(af, f, flen, dst))
		return;
	(void)fz_field(s, len, 4, &f, &flen);
	if (!fz_port(f, flen))
		return;
	(void)fz_field(s, len, 5, &f, &flen);
	if (!fz_port(f, flen))
		return;
	r->family = af == AF_INET ? 4 : 6;
	r->ok = 1;
}

static void
fz_ref_v2(const uint8_t *d, size_t n, struct fz_ref *r)
{
	static const size_t need[4] = { 0, 12, 36, 216 };
	size_t	 len;
	int	 fam;

	if (n < 16 || memcmp(d, "\r\n\r\n\0\r\nQUIT\n", 12) != 0 ||
	    d[12] >> 4 != 2 || (d[12] & 15) > 1 || d[13] >> 4 > 3 ||
	    (d[13] & 15) > 2)
		return;
	len = (size_t)d[14] * 256 + d[15];
	fam = d[13] >> 4;
	if ((d[12] & 15) == 1 && len < need[fam])
		return;
	if (n < 16 + len)
		return;
	r->len = 16 + len;
	r->ok = 1;
	if ((d[12] & 15) == 1 && (fam == 1 || fam == 2)) {
		r->family = fam == 1 ? 4 : 6;
		memcpy(r->addr, d + 16, fam == 1 ? 4 : 16);
	}
}

static void
fz_monitor(const struct proxy_addr *pa, const struct fz_ref *r)
{
	char	 rhost[128] = "192.0.2.1";
	char	 want[INET6_ADDRSTRLEN];

	FZ_CHECK(proxy_peer(pa, sizeof(*pa), rhost, sizeof(rhost)) == 0,
	    "the monitor refused the reader's address");
	if (r->family == 0) {
		FZ_CHECK(strcmp(rhost, "192.0.2.1") == 0, "rhost changed");
		return;
	}
	FZ_CHECK(inet_ntop(r->family == 4 ? AF_INET : AF_INET6, r->addr,
	    want, sizeof(want)) != NULL, "inet_ntop");
	FZ_CHECK(strcmp(rhost, want) == 0, "rhost %s, want %s", rhost, want);
}

static void
fz_raw_monitor(const uint8_t *d, size_t n)
{
	struct proxy_addr pa;
	char	 rhost[128] = "p";
	uint8_t	 a[16];

	if (n < sizeof(pa))
		return;
	memcpy(&pa, d, sizeof(pa));
	if (proxy_peer(&pa, sizeof(pa), rhost, sizeof(rhost)) == -1)
		return;
	/* Only what the reader can make: family 0 (all zero), 4 (zero
	 * after the 4 octets) or 6. */
	FZ_CHECK(pa.family == 0 || pa.family == 4 || pa.family == 6,
	    "family %d accepted", pa.family);
	for (size_t i = pa.family == 0 ? 0 : 4; pa.family != 6 && i < 16; i++)
		FZ_CHECK(pa.addr[i] == 0, "junk after the address accepted");
	if (pa.family == 0) {
		FZ_CHECK(strcmp(rhost, "p") == 0, "rhost changed by family 0");
		return;
	}
	FZ_CHECK(inet_pton(pa.family == 4 ? AF_INET : AF_INET6, rhost, a) == 1 &&
	    memcmp(a, pa.addr, pa.family == 4 ? 4 : 16) == 0, "rhost %s",
	    rhost);
}

int	LLVMFuzzerTestOneInput(const uint8_t *, size_t);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static struct pop_conn c;
	struct proxy_addr pa;
	struct fz_ref	 r;
	off_t		 off;
	int		 fd, rv;

	if (size < 1)
		return 0;
	fz_raw_monitor(data + 1, size - 1);
	memset(&r, 0, sizeof(r));
	if (size > 1 && data[1] == 'P' && size >= 7 &&
	    memcmp(data + 1, "PROXY ", 6) == 0)
		fz_ref_v1(data + 1, size - 1, &r);
	else
		fz_ref_v2(data + 1, size - 1, &r);

	fd = fz_memfd("proxy", data + 1, size - 1);
	fz_read_fd = fd;
	fz_read_max = data[0];
	opt.timeout = POP3_TIMEOUT;
	memset(&c, 0, offsetof(struct pop_conn, ibuf));
	c.in = fd;
	c.out = -1;
	memset(&pa, 0, sizeof(pa));
	rv = proxy_read(&c, &pa, "192.0.2.1");
	off = lseek(fd, 0, SEEK_CUR);
	(void)close(fd);
	fz_read_fd = -1;

	FZ_CHECK((rv == 0) == r.ok, "reader %s, reference %s",
	    rv == 0 ? "accepts" : "refuses", r.ok ? "accepts" : "refuses");
	FZ_CHECK(off >= 0 && (size_t)off <= size - 1, "offset");
	if (!r.ok)
		return 0;
	FZ_CHECK((size_t)off == r.len + c.ilen, "read %lld, header %zu, "
	    "buffered %zu", (long long)off, r.len, c.ilen);
	FZ_CHECK(fz_eq(c.ibuf, c.ilen, data + 1 + r.len, c.ilen),
	    "the octets after the header are not the buffer's");
	if (data[1] != 'P')
		FZ_CHECK(c.ilen == 0, "read past a v2 header");
	else
		FZ_CHECK((size_t)off <= PROXY_V1_MAX, "read past 107 octets");
	FZ_CHECK(pa.family == r.family && (r.family == 0 ||
	    memcmp(pa.addr, r.addr, r.family == 4 ? 4 : 16) == 0),
	    "address differs from the reference");
	fz_monitor(&pa, &r);
	return 0;
}
