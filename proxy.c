/*
 * proxy.c: the PROXY protocol (HAProxy's proxy-protocol.txt, versions 1
 * and 2) that a mail proxy in front of pop3d (nginx, HAProxy) sends before
 * the client's first byte, naming the client.  It owns --proxy-from (which
 * peers may send a header), the header reader that runs in the
 * unprivileged pre-login process before the greeting, and the monitor's
 * check of the address that process reports.
 *
 * Rules (also in pop3d.8):
 * - Only a peer that --proxy-from lists is read for a header, and from it
 *   a header is mandatory (the spec: never guess).  From any other peer a
 *   PROXY line is an ordinary command (unknown: "-ERR").
 * - The exact limits of the spec: a v1 line of at most PROXY_V1_MAX octets
 *   with its CRLF; a v2 header of PROXY_V2_HDR octets plus its length, its
 *   address block at least as long as its family needs; TLVs are read and
 *   dropped, never interpreted or stored.  The whole header must arrive
 *   within PROXY_TIMEOUT seconds (or --timeout, if shorter).
 * - Reads never ask for more than the header can still hold, except that
 *   a v1 line's end is found in what one read brought: whatever came after
 *   its CRLF stays in the connection's input buffer as the client's first
 *   input (the pre-login process hands it on as it does pipelined input).
 * - A malformed, truncated or late header is logged, naming the peer and
 *   why, and the connection is closed without a greeting.
 * - The client's address becomes the peer's everywhere (log lines,
 *   PAM_RHOST); one line "PROXY header from PROXY: client CLIENT" ties the
 *   two.  v1 UNKNOWN and v2 LOCAL, UNSPEC and UNIX name no client: the
 *   peer's own address is kept.
 * Only read(2) and poll(2) on the client (and clock_gettime) are needed.
 */

#include <sys/types.h>
#include <sys/socket.h>

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <syslog.h>
#include <unistd.h>

#include "pop3d.h"

/* One entry of --proxy-from: an address and its prefix length. */
struct proxy_net {
	int		 family;		/* AF_INET or AF_INET6 */
	uint8_t		 addr[16];
	unsigned int	 bits;
};

/* A header as far as it was parsed (proxy_parse). */
struct proxy_hdr {
	size_t		 want;		/* more: read up to this many octets */
	size_t		 len;		/* done: the header's whole length */
	struct proxy_addr pa;		/* done: the client */
	const char	*why;		/* malformed: why */
};

static struct proxy_net	 proxy_nets[PROXY_NETS_MAX];
static size_t		 proxy_nnets;

static const unsigned char proxy_sig[12] = {
	0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a
};

static int	proxy_parse(const unsigned char *, size_t, struct proxy_hdr *);

/*
 * --proxy-from.
 */

/* "ADDR" or "ADDR/BITS" of len octets; the host bits must be zero. */
static int
proxy_net_parse(const char *s, size_t len, struct proxy_net *n)
{
	char		 buf[INET6_ADDRSTRLEN + 8], *slash;
	unsigned int	 max, i;

	if (len == 0 || len >= sizeof(buf))
		return -1;
	memcpy(buf, s, len);
	buf[len] = '\0';
	if ((slash = strchr(buf, '/')) != NULL)
		*slash++ = '\0';
	memset(n, 0, sizeof(*n));
	if (inet_pton(AF_INET, buf, n->addr) == 1) {
		n->family = AF_INET;
		max = 32;
	} else if (inet_pton(AF_INET6, buf, n->addr) == 1) {
		n->family = AF_INET6;
		max = 128;
	} else
		return -1;
	n->bits = max;
	if (slash != NULL) {
		if (*slash == '\0' || strlen(slash) > 3 ||
		    strspn(slash, "0123456789") != strlen(slash))
			return -1;
		for (n->bits = 0; *slash != '\0'; slash++)
			n->bits = n->bits * 10 + (unsigned int)(*slash - '0');
		if (n->bits > max)
			return -1;
	}
	for (i = n->bits; i < max; i++)
		if (n->addr[i / 8] & (0x80 >> (i % 8)))
			return -1;
	return 0;
}

int
proxy_opt(const char *arg)
{
	const char	*p = arg, *e;
	size_t		 len;

	proxy_nnets = 0;
	for (;;) {
		e = strchr(p, ',');
		len = e == NULL ? strlen(p) : (size_t)(e - p);
		if (proxy_nnets == PROXY_NETS_MAX ||
		    proxy_net_parse(p, len, &proxy_nets[proxy_nnets]) == -1)
			return -1;
		proxy_nnets++;
		if (e == NULL)
			break;
		p = e + 1;
	}
	opt.proxy = 1;
	return 0;
}

/* Do the first bits of a and b agree? */
static int
proxy_prefix(const uint8_t *a, const uint8_t *b, unsigned int bits)
{
	unsigned int	 i;

	for (i = 0; i < bits; i++)
		if ((a[i / 8] ^ b[i / 8]) & (0x80 >> (i % 8)))
			return 0;
	return 1;
}

int
proxy_trusted(const void *sa, size_t len)
{
	static const uint8_t mapped[12] = {
		0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff
	};
	struct sockaddr_in	 in4;
	struct sockaddr_in6	 in6;
	const uint8_t		*a;
	int			 fam;
	size_t			 i;

	if (!opt.proxy || len < sizeof(sa_family_t))
		return 0;
	fam = ((const struct sockaddr *)sa)->sa_family;
	if (fam == AF_INET && len >= sizeof(in4)) {
		memcpy(&in4, sa, sizeof(in4));
		a = (const uint8_t *)&in4.sin_addr;
	} else if (fam == AF_INET6 && len >= sizeof(in6)) {
		memcpy(&in6, sa, sizeof(in6));
		a = in6.sin6_addr.s6_addr;
		/* An IPv4 client of an IPv6 socket (xinetd's default). */
		if (memcmp(a, mapped, sizeof(mapped)) == 0) {
			fam = AF_INET;
			a += sizeof(mapped);
		}
	} else
		return 0;
	for (i = 0; i < proxy_nnets; i++)
		if (proxy_nets[i].family == fam &&
		    proxy_prefix(a, proxy_nets[i].addr, proxy_nets[i].bits))
			return 1;
	return 0;
}

/*
 * The parser: pure, on the octets read so far (fuzz/fuzz_proxy.c).
 */

/* A decimal port: 1 to 5 digits, at most 65535. */
static int
proxy_port(const char *s)
{
	size_t		 len = strlen(s);
	unsigned long	 v = 0;

	if (len == 0 || len > 5 || strspn(s, "0123456789") != len)
		return -1;
	for (; *s != '\0'; s++)
		v = v * 10 + (unsigned long)(*s - '0');
	return v > 65535 ? -1 : 0;
}

/* The v1 line of len octets, CRLF included (len <= PROXY_V1_MAX). */
static int
proxy_v1(const unsigned char *b, size_t len, struct proxy_hdr *h)
{
	char		 line[PROXY_V1_MAX + 1], *f[7], *p;
	uint8_t		 dst[16];
	size_t		 nf = 0;
	int		 fam;

	memcpy(line, b, len - 2);
	line[len - 2] = '\0';
	/* "PROXY UNKNOWN" and whatever follows it up to the CRLF. */
	if (len - 2 >= 13 && memcmp(line, "PROXY UNKNOWN", 13) == 0 &&
	    (len - 2 == 13 || line[13] == ' ')) {
		h->pa.family = 0;
		return 1;
	}
	if (memchr(line, '\0', len - 2) != NULL) {
		h->why = "v1: NUL in the line";
		return -1;
	}
	/* Fields separated by exactly one space. */
	for (p = line; nf < 7; p++) {
		f[nf++] = p;
		if ((p = strchr(p, ' ')) == NULL)
			break;
		*p = '\0';
	}
	if (nf != 6) {
		h->why = "v1: not 6 fields";
		return -1;
	}
	if (strcmp(f[1], "TCP4") == 0)
		fam = AF_INET;
	else if (strcmp(f[1], "TCP6") == 0)
		fam = AF_INET6;
	else {
		h->why = "v1: unknown protocol";
		return -1;
	}
	if (inet_pton(fam, f[2], h->pa.addr) != 1 ||
	    inet_pton(fam, f[3], dst) != 1) {
		h->why = "v1: bad address";
		return -1;
	}
	if (proxy_port(f[4]) == -1 || proxy_port(f[5]) == -1) {
		h->why = "v1: bad port";
		return -1;
	}
	h->pa.family = fam == AF_INET ? 4 : 6;
	return 1;
}

/* A v2 header, n >= PROXY_V2_HDR octets of it read. */
static int
proxy_v2(const unsigned char *b, size_t n, struct proxy_hdr *h)
{
	size_t	 len = (size_t)b[14] << 8 | b[15], need = 0;
	int	 cmd = b[12] & 0x0f, fam = b[13] >> 4;

	h->len = PROXY_V2_HDR + len;
	if (b[12] >> 4 != 2)
		h->why = "v2: unknown version";
	else if (cmd > 1)
		h->why = "v2: unknown command";
	else if (fam > 3 || (b[13] & 0x0f) > 2)
		h->why = "v2: unknown address family or protocol";
	if (h->why != NULL)
		return -1;
	if (cmd == 0)			/* LOCAL: the proxy's own connection */
		return 1;
	if (fam == 1)
		need = PROXY_V2_INET;
	else if (fam == 2)
		need = PROXY_V2_INET6;
	else if (fam == 3)
		need = PROXY_V2_UNIX;	/* only checked, never read */
	if (len < need) {
		h->why = "v2: address block too short for its family";
		return -1;
	}
	if (fam == 1 || fam == 2) {
		if (n < PROXY_V2_HDR + need) {
			h->want = PROXY_V2_HDR + need;
			return 0;
		}
		h->pa.family = fam == 1 ? 4 : 6;
		memcpy(h->pa.addr, b + PROXY_V2_HDR, fam == 1 ? 4 : 16);
	}
	return 1;
}

/*
 * The header in b[0..n): 1 done (h->len, h->pa), 0 more is needed (up to
 * h->want octets in all), -1 malformed (h->why).
 */
static int
proxy_parse(const unsigned char *b, size_t n, struct proxy_hdr *h)
{
	const unsigned char *lf;
	size_t		 k;

	memset(h, 0, sizeof(*h));
	h->want = PROXY_V1_MIN;
	if (n == 0)
		return 0;
	if (b[0] == 'P') {
		k = n < 6 ? n : 6;
		if (memcmp(b, "PROXY ", k) != 0) {
			h->why = "not a PROXY header";
			return -1;
		}
		if ((lf = memchr(b, '\n', n < PROXY_V1_MAX ? n :
		    PROXY_V1_MAX)) == NULL) {
			if (n >= PROXY_V1_MAX) {
				h->why = "v1: no CRLF within 107 octets";
				return -1;
			}
			h->want = PROXY_V1_MAX;
			return 0;
		}
		h->len = (size_t)(lf - b) + 1;
		if (h->len < 8 || lf[-1] != '\r') {
			h->why = "v1: line does not end in CRLF";
			return -1;
		}
		return proxy_v1(b, h->len, h);
	}
	k = n < sizeof(proxy_sig) ? n : sizeof(proxy_sig);
	if (memcmp(b, proxy_sig, k) != 0) {
		h->why = "not a PROXY header";
		return -1;
	}
	if (n < PROXY_V2_HDR) {
		h->want = PROXY_V2_HDR;
		return 0;
	}
	return proxy_v2(b, n, h);
}

/*
 * The reader, in the pre-login process.
 */

/* Drops the header's len octets: those read, then the rest of its TLVs. */
static int
proxy_skip(struct pop_conn *c, size_t len, int64_t deadline)
{
	size_t	 k;
	int	 r;

	while (len > 0) {
		if (c->ilen == 0 &&
		    (r = pop_fill_to(c, len < sizeof(c->ibuf) ? len :
		    sizeof(c->ibuf), deadline)) != 1)
			return r;
		k = c->ilen < len ? c->ilen : len;
		pop_consume(c, k);
		len -= k;
	}
	return 1;
}

int
proxy_read(struct pop_conn *c, struct proxy_addr *pa, const char *peer)
{
	struct proxy_hdr h;
	int64_t		 deadline;
	int		 r;

	deadline = pop_now_ms() + (int64_t)(opt.timeout < PROXY_TIMEOUT ?
	    opt.timeout : PROXY_TIMEOUT) * 1000;
	while ((r = proxy_parse((const unsigned char *)c->ibuf, c->ilen,
	    &h)) == 0)
		if ((r = pop_fill_to(c, h.want, deadline)) != 1)
			break;
	if (r == 1)
		r = proxy_skip(c, h.len, deadline);
	if (r == 1) {
		*pa = h.pa;
		return 0;
	}
	if (r == -1 && h.why != NULL)
		pop_log(LOG_NOTICE, "PROXY header from %s refused: %s", peer,
		    h.why);
	else
		pop_log(LOG_NOTICE, "PROXY header from %s refused: %s after "
		    "%zu octets", peer, r == 0 ? "end of file" :
		    strerror(errno), c->ilen);
	return -1;
}

/*
 * The monitor's side (proxy_peer()), and the check both sides make of
 * what the pre-login process read (proxy_client()).
 */
int
proxy_client(const struct proxy_addr *pa, size_t n, char *client,
    size_t size)
{
	static const uint8_t zero[12];

	if (n != sizeof(*pa))
		return -1;
	if (pa->family == 0)
		return memcmp(pa->addr, zero, sizeof(zero)) != 0 ||
		    memcmp(pa->addr + 12, zero, 4) != 0 ? -1 : 0;
	if ((pa->family != 4 && pa->family != 6) || (pa->family == 4 &&
	    memcmp(pa->addr + 4, zero, sizeof(zero)) != 0) ||
	    inet_ntop(pa->family == 4 ? AF_INET : AF_INET6, pa->addr, client,
	    (socklen_t)size) == NULL)
		return -1;
	return 1;
}

int
proxy_peer(const struct proxy_addr *pa, size_t n, char *peer, size_t size)
{
	char	 client[INET6_ADDRSTRLEN];
	int	 r;

	if ((r = proxy_client(pa, n, client, sizeof(client))) == -1)
		return -1;
	if (r == 0) {
		pop_log(LOG_INFO, "PROXY header from %s names no client", peer);
		return 0;
	}
	pop_log(LOG_INFO, "PROXY header from %s: client %s", peer, client);
	(void)snprintf(peer, size, "%s", client);
	return 0;
}
