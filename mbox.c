/*
 * mbox.c: the mbox format of the maildrop (mbox.h): From_ lines, the
 * header digest (the input of a UIDL), the index and its check against
 * a file (SIMD scans, two threads for a large mailbox), twins, the hidden
 * pseudo-message and the UIDL.  Reads a file descriptor it is given
 * through io.c; knows nothing of locks or of struct maildrop (long scans
 * call the keep-alive maildrop.c gives).  Runs only as the user.
 *
 * Message boundaries.  A message starts at the "From " line at offset 0
 * (the file must start with one: anything else is "not an mbox"), and at
 * every later line that follows an empty line ("\n\n" or "\n\r\n") and
 * parses as a real From_ line (mbox_fromline()): "From ", a sender, blanks
 * and an asctime(3) date at the END of the line: weekday, month, day,
 * hh:mm[:ss], the year, at most two time zone tokens before or after the
 * year (PST, MET DST, -0500), optionally "remote from HOST"; at most
 * MD_FROM_MAX octets with its LF.  The date is read from the end, so the
 * sender may be anything, spaces included ("x y"@example.org) or empty
 * (the null sender).  An unescaped body line "From here on" therefore does
 * not split a message.  ">From " lines are sent as stored.
 *
 * Octets and sizes.  A message's octets run from the byte after its From_
 * line to the next From_ line, minus the one empty line that separates
 * them; a file that ends in an empty line ("\n\n", "\n\r\n") loses that
 * one too.  RETR sends every octet, a bare LF as CRLF (CRLF, bare CR and
 * NUL as stored), and a message whose octets do not end in LF gets a line
 * end: LF after a final bare CR, CRLF otherwise.  The size is exactly that
 * number of octets, before dot-stuffing.
 *
 * UIDL.  SHA-256 over the From_ line and the header block (up to the first
 * empty line, at most MD_HASH_MAX octets), leaving out the fields other
 * programs rewrite or a sender could use to collide (Status, X-Status,
 * X-UID, X-Keywords, X-IMAP, X-IMAPbase, X-UIDL, Content-Length, Lines,
 * with their continuation lines).  The UIDL is the first 16 octets in hex;
 * the n-th later byte-identical twin of a message (same digest) gets "-n".
 * When twin 0 is deleted, twin 1 takes over the plain UIDL in the next
 * session: it is the same bytes, so a client that has that UIDL lost
 * nothing.  Nothing is stored anywhere.
 */

#include <sys/random.h>
#include <sys/types.h>

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <syslog.h>
#include <unistd.h>

#include <nettle/sha2.h>
#ifdef __SSE2__
#include <emmintrin.h>
#endif

#include "io.h"
#include "mbox.h"

/* Mailboxes this large are indexed by two threads, a half each (a thread
 * costs about 50 us; 2 cores index twice as fast: issue 6). */
#define MD_IX_SPLIT	(8 * 1024 * 1024)
/* Index look-ahead past the scan point: a whole From_ line.  Before the
 * scan point the buffer keeps MD_IX_HIST octets (aligned scans). */
#define MD_IX_LOOK	(MD_FROM_MAX + 8)
#define MD_IX_HIST	64
#define MD_IX_CAP	((MD_BLOCK + MD_HASH_MAX + 2 * MD_IX_LOOK + 256) & ~63)
/* Initial index size in records; it doubles from there. */
#define MD_IX_INIT	256
/* Records moved at a time when the two halves are joined (256 KiB). */
#define MD_IX_JOIN	4096
/* Records held at a time while checking a file against its index. */
#define MD_IX_CHECK	1024

static const char *const mbox_wday[] = {
	"Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"
};
static const char *const mbox_mon[] = {
	"Jan", "Feb", "Mar", "Apr", "May", "Jun",
	"Jul", "Aug", "Sep", "Oct", "Nov", "Dec"
};

/* Header fields left out of the UIDL digest (other programs rewrite them,
 * or a sender could pick them). */
static const struct {
	const char	*name;
	size_t		 len;
} mbox_skip[] = {
	{ "Status", 6 },	{ "X-Status", 8 },	{ "X-UID", 5 },
	{ "X-Keywords", 10 },	{ "X-IMAP", 6 },	{ "X-IMAPbase", 10 },
	{ "X-UIDL", 6 },	{ "Content-Length", 14 }, { "Lines", 5 },
};

#define MD_PSEUDO_SUBJECT "DON'T DELETE THIS MESSAGE -- FOLDER INTERNAL DATA"

/* Where mbox_index() splits: unit tests move it to test the join. */
static uint64_t	mbox_split_min = MD_IX_SPLIT, mbox_split_at;
static int	mbox_split_force;

#ifdef POP3D_UNIT
/* Split mailboxes of min octets or more at offset at (0: the middle);
 * min 0: back to normal. */
void
mbox_test_split(uint64_t min, uint64_t at)
{
	mbox_split_min = min > 0 ? min : MD_IX_SPLIT;
	mbox_split_at = at;
	mbox_split_force = min > 0;
}
#endif

/*
 * Parsing.  A From_ line is read from its end (as c-client does): the
 * date is a fixed run of tokens there, and the sender before it is
 * anything (a quoted local part may hold spaces; the null sender is
 * empty), so a sender never decides whether a line is a boundary.
 */

/* The token before p, after any blanks: its start (*qp: its end), or
 * NULL if there is none at or after lo. */
static const unsigned char *
mbox_prevtok(const unsigned char *lo, const unsigned char *p,
    const unsigned char **qp)
{
	while (p > lo && (p[-1] == ' ' || p[-1] == '\t'))
		p--;
	*qp = p;
	while (p > lo && p[-1] != ' ' && p[-1] != '\t')
		p--;
	return p == *qp ? NULL : p;
}

/* Is [t, q) one of the n three-letter words of list? */
static int
mbox_isword(const unsigned char *t, const unsigned char *q,
    const char *const *list, size_t n)
{
	size_t	i;

	if (q - t != 3)
		return 0;
	for (i = 0; i < n; i++)
		if (memcmp(t, list[i], 3) == 0)
			return 1;
	return 0;
}

/* Up to max digits at *pp, at least min, not followed by a digit: the
 * value, or -1. */
static int
mbox_digits(const unsigned char **pp, const unsigned char *q, int min, int max)
{
	const unsigned char	*p = *pp;
	int			 v = 0, n = 0;

	while (p < q && n < max && *p >= '0' && *p <= '9') {
		v = v * 10 + (*p++ - '0');
		n++;
	}
	if (n < min || (p < q && *p >= '0' && *p <= '9'))
		return -1;
	*pp = p;
	return v;
}

/* Is [t, q) all of a number of min to max digits, at least least? */
static int
mbox_isnum(const unsigned char *t, const unsigned char *q, int min, int max,
    int least)
{
	return mbox_digits(&t, q, min, max) >= least && t == q;
}

/* Is [t, q) a time: hh:mm or hh:mm:ss (h: 1 or 2 digits)? */
static int
mbox_istime(const unsigned char *t, const unsigned char *q)
{
	if (mbox_digits(&t, q, 1, 2) < 0 || t == q || *t++ != ':' ||
	    mbox_digits(&t, q, 2, 2) < 0)
		return 0;
	if (t < q && (*t++ != ':' || mbox_digits(&t, q, 2, 2) < 0))
		return 0;
	return t == q;
}

/* Is [t, q) a time zone: +hhmm, -hhmm, or 1 to 6 letters (PST, MET)? */
static int
mbox_iszone(const unsigned char *t, const unsigned char *q)
{
	const unsigned char	*p;

	if (*t == '+' || *t == '-')
		return mbox_isnum(t + 1, q, 4, 4, 0);
	if (q - t > 6)
		return 0;
	for (p = t; p < q; p++)
		if (!((*p >= 'A' && *p <= 'Z') || (*p >= 'a' && *p <= 'z')))
			return 0;
	return 1;
}

/* Whether the octets [lo, t) of a From_ line end in its date: "DAY MON
 * DD HH:MM[:SS] [TZ [TZ]] YYYY [TZ]", at most two zone tokens in all. */
static int
mbox_fromdate(const unsigned char *lo, const unsigned char *t)
{
	const unsigned char	*q;
	int			 tz = 0;

	/* The year, maybe with a zone after it (c-client: -0500). */
	if ((t = mbox_prevtok(lo, t, &q)) == NULL)
		return 0;
	if (mbox_iszone(t, q)) {
		tz++;
		if ((t = mbox_prevtok(lo, t, &q)) == NULL)
			return 0;
	}
	if (!mbox_isnum(t, q, 4, 4, 0))
		return 0;
	/* Zones before the year, then the time. */
	for (;;) {
		if ((t = mbox_prevtok(lo, t, &q)) == NULL)
			return 0;
		if (mbox_istime(t, q))
			break;
		if (++tz > 2 || !mbox_iszone(t, q))
			return 0;
	}
	return (t = mbox_prevtok(lo, t, &q)) != NULL &&
	    mbox_isnum(t, q, 1, 2, 1) &&
	    (t = mbox_prevtok(lo, t, &q)) != NULL &&
	    mbox_isword(t, q, mbox_mon, 12) &&
	    (t = mbox_prevtok(lo, t, &q)) != NULL &&
	    mbox_isword(t, q, mbox_wday, 7);
}

/*
 * The length of the From_ line at s (with its LF) if s starts with a real
 * one, 0 otherwise: "From ", a sender (any octets, even none), blanks and
 * the date "DAY MON DD HH:MM[:SS] [TZ [TZ]] YYYY [TZ]" (at most two zone
 * tokens in all), optionally followed by "remote from HOST" (any octets
 * but blanks); blanks are spaces and tabs, one CR before the LF is the
 * line end's.  Looks at no more than n (and MD_FROM_MAX) octets.
 */
size_t
mbox_fromline(const unsigned char *s, size_t n)
{
	const unsigned char	*lo, *e, *q, *t, *r;

	if (n > MD_FROM_MAX)
		n = MD_FROM_MAX;
	if (n < 5 || memcmp(s, "From ", 5) != 0 ||
	    (e = memchr(s, '\n', n)) == NULL)
		return 0;
	lo = s + 5;
	t = e > lo && e[-1] == '\r' ? e - 1 : e;
	/* "remote from HOST" (UUCP) after the date; or, when the date does
	 * not end before it, two zone tokens "remote" "from" before the
	 * year HOST: both readings are the rule's. */
	if ((r = mbox_prevtok(lo, t, &q)) != NULL &&
	    (r = mbox_prevtok(lo, r, &q)) != NULL && q - r == 4 &&
	    memcmp(r, "from", 4) == 0 &&
	    (r = mbox_prevtok(lo, r, &q)) != NULL && q - r == 6 &&
	    memcmp(r, "remote", 6) == 0 && mbox_fromdate(lo, r))
		return (size_t)(e - s) + 1;
	return mbox_fromdate(lo, t) ? (size_t)(e - s) + 1 : 0;
}

/* The length of the field name of header line s (n octets), 0 if none. */
static size_t
mbox_fieldname(const unsigned char *s, size_t n)
{
	const unsigned char	*c;
	size_t			 l;

	if ((c = memchr(s, ':', n)) == NULL)
		return 0;
	l = (size_t)(c - s);
	while (l > 0 && (s[l - 1] == ' ' || s[l - 1] == '\t'))
		l--;
	return l;
}

static int
mbox_fieldis(const unsigned char *s, size_t n, const char *name, size_t len)
{
	return mbox_fieldname(s, n) == len &&
	    strncasecmp((const char *)s, name, len) == 0;
}

/* Is the header line s (n octets) a field left out of the digest? */
static int
mbox_skipfield(const unsigned char *s, size_t n)
{
	size_t	i, l;

	switch (s[0]) {
	case 'S': case 's': case 'X': case 'x': case 'C': case 'c':
	case 'L': case 'l':
		break;
	default:
		return 0;
	}
	l = mbox_fieldname(s, n);
	for (i = 0; i < sizeof(mbox_skip) / sizeof(mbox_skip[0]); i++)
		if (l == mbox_skip[i].len &&
		    strncasecmp((const char *)s, mbox_skip[i].name, l) == 0)
			return 1;
	return 0;
}

/*
 * The pseudo-message marks of message 1 (MD_PS_*): UW c-client and
 * Dovecot write it themselves, from MAILER-DAEMON, with an X-IMAP or
 * X-IMAPbase field and the "FOLDER INTERNAL DATA" subject, and without
 * the fields that an MTA adds to every delivery (Received, RFC 5321
 * 4.4; Return-Path and Delivered-To at the final delivery).  Only a
 * message with all the marks and none of the MTA's fields is hidden: a
 * sender cannot plant one, as its delivery has a Received field.
 */
#define MD_PS_XIMAP	1
#define MD_PS_SUBJECT	2
#define MD_PS_DAEMON	4
#define MD_PS_MTA	8
#define MD_PS_HIDDEN	(MD_PS_XIMAP | MD_PS_SUBJECT | MD_PS_DAEMON)

static int
mbox_pseudofield(const unsigned char *s, size_t n)
{
	const unsigned char	*v, *e;
	size_t			 len = sizeof(MD_PSEUDO_SUBJECT) - 1;

	if (mbox_fieldis(s, n, "X-IMAP", 6) || mbox_fieldis(s, n, "X-IMAPbase", 10))
		return MD_PS_XIMAP;
	if (mbox_fieldis(s, n, "Received", 8) ||
	    mbox_fieldis(s, n, "Return-Path", 11) ||
	    mbox_fieldis(s, n, "Delivered-To", 12))
		return MD_PS_MTA;
	if (!mbox_fieldis(s, n, "Subject", 7))
		return 0;
	v = memchr(s, ':', n);
	v++;
	e = s + n;
	while (v < e && (*v == ' ' || *v == '\t'))
		v++;
	while (e > v && (e[-1] == '\n' || e[-1] == '\r' || e[-1] == ' ' ||
	    e[-1] == '\t'))
		e--;
	if ((size_t)(e - v) == len && memcmp(v, MD_PSEUDO_SUBJECT, len) == 0)
		return MD_PS_SUBJECT;
	return 0;
}

/*
 * For mbox_hdrhash(): a header cut short by the end of the file after
 * len octets (last: its last octet; crlf: its last line end was CRLF;
 * skip: its last line is a left-out field) gets what an appender that
 * ends the line and writes an empty line adds, as far as it falls within
 * MD_HASH_MAX: the line end, and the empty line's CR when it is a CRLF
 * that the mark cuts (mbox_hdrhash() digests such a CR as a line).
 */
static void
mbox_hdrend(struct sha256_ctx *ctx, int last, size_t len, int crlf, int skip)
{
	const char	*e;
	size_t		 n;

	if (last != '\n') {
		e = last == '\r' || !crlf ? "\n" : "\r\n";
		crlf = crlf || last == '\r';
		n = strlen(e) < MD_HASH_MAX - len ? strlen(e) : MD_HASH_MAX - len;
		if (!skip)
			sha256_update(ctx, n, (const uint8_t *)e);
		len += n;
	}
	if (crlf && len + 1 == MD_HASH_MAX)
		sha256_update(ctx, 1, (const uint8_t *)"\r");
}

/*
 * Feeds the header block at s into ctx: lines up to the first empty line,
 * at most MD_HASH_MAX octets, without the mbox_skip fields and their
 * continuation lines.  avail octets are at s; final: nothing after them
 * counts (end of the indexed file).  Returns 0, or -1 when it needs more
 * octets (ctx is then spoiled).  pseudo, if not NULL, gets the marks.
 *
 * A header that the end of the file cuts short (a header-only last
 * message) is fed as a delivery appended after it leaves it, so that its
 * UIDL stays (mbox_hdrend()): its last line ends as the line before it
 * (or the From_ line) does, with LF after a final CR, and a lone CR
 * starting its last line starts the empty line.  crlf: the From_ line
 * before s ends in CRLF.
 */
static int
mbox_hdrhash(struct sha256_ctx *ctx, const unsigned char *s, size_t avail,
    int final, int crlf, int *pseudo)
{
	const unsigned char	*nl;
	size_t			 lim = avail, pos = 0, run = 0, next;
	int			 skip = 0, cut = 0;

	if (lim >= MD_HASH_MAX) {
		lim = MD_HASH_MAX;
		final = cut = 1;
	}
	while (pos < lim) {
		if (s[pos] == '\n')
			break;
		if (s[pos] == '\r') {
			if (pos + 1 < lim) {
				if (s[pos + 1] == '\n')
					break;
			} else if (!final)
				return -1;
			else if (!cut)
				break;
		}
		nl = memchr(s + pos, '\n', lim - pos);
		if (nl == NULL && !final)
			return -1;
		next = nl != NULL ? (size_t)(nl - s) + 1 : lim;
		if (s[pos] != ' ' && s[pos] != '\t') {
			skip = mbox_skipfield(s + pos, next - pos);
			if (pseudo != NULL)
				*pseudo |= mbox_pseudofield(s + pos, next - pos);
		}
		if (nl != NULL)
			crlf = nl > s && nl[-1] == '\r';
		if (skip) {
			if (pos > run)
				sha256_update(ctx, pos - run, s + run);
			run = next;
		}
		pos = next;
	}
	/* A line that ends where the octets do may have more lines after
	 * it, unless nothing does. */
	if (pos == lim && !final)
		return -1;
	if (pos > run)
		sha256_update(ctx, pos - run, s + run);
	if (!cut && pos == lim && pos > 0)
		mbox_hdrend(ctx, s[pos - 1], pos, crlf, skip);
	return 0;
}

/*
 * The index.
 */

/*
 * Checking (ix->ref): the file number of the first record, from its
 * offset; a second half's first message must be one the index has.
 */
static void
mbox_ix_locate(struct mbox_ix *ix, uint64_t from)
{
	uint32_t	lo = 0, hi = ix->nref, mid;

	ix->kfirst = 0;
	if (ix->start > 0) {
		while (lo < hi) {
			mid = lo + (hi - lo) / 2;
			if (ix->ref[mid].from < from)
				lo = mid + 1;
			else
				hi = mid;
		}
		if (lo < ix->nref && ix->ref[lo].from == from)
			ix->kfirst = lo + ix->nhidden;
		else
			ix->bad = 1;
	}
	ix->kheld = ix->kfirst;
}

/* Checking: compares the records held with ref's, and drops them. */
static void
mbox_ix_flush(struct mbox_ix *ix)
{
	const struct md_msg	*a, *b;
	uint32_t		 i, f;

	for (i = 0; i < ix->n && !ix->bad; i++) {
		f = ix->kheld + i;
		if (f < ix->nhidden)
			continue;	/* the hidden pseudo-message */
		if (f - ix->nhidden >= ix->nref) {
			ix->bad = 1;
			break;
		}
		a = &ix->msg[i];
		b = &ix->ref[f - ix->nhidden];
		if (a->from != b->from || a->data != b->data ||
		    a->end != b->end || a->size != b->size ||
		    memcmp(a->hash, b->hash, sizeof(a->hash)) != 0)
			ix->bad = 1;
	}
	ix->kheld += ix->n;
	ix->n = 0;
}

static enum md_res
mbox_ix_add(struct mbox_ix *ix, uint64_t from, uint64_t data, uint64_t cumdata)
{
	struct md_msg	*m;
	uint32_t	 cap;

	if (!ix->started) {
		ix->started = 1;
		ix->first = from;
		if (ix->ref != NULL)
			mbox_ix_locate(ix, from);
	}
	if (ix->n == ix->cap && ix->ref != NULL && ix->cap >= MD_IX_CHECK) {
		/* Every record held is complete: compare and drop them. */
		mbox_ix_flush(ix);
		if (ix->bad)
			return MD_CHANGED;
	}
	if (ix->n == ix->cap) {
		if (ix->n >= MD_MAX_MESSAGES) {
			pop_log(LOG_ERR, "mailbox has more than %d messages",
			    MD_MAX_MESSAGES);
			return MD_PERM;
		}
		cap = ix->cap == 0 ? MD_IX_INIT : ix->cap * 2;
		if (cap > MD_MAX_MESSAGES)
			cap = MD_MAX_MESSAGES;
		if ((m = reallocarray(ix->msg, cap, sizeof(*m))) == NULL) {
			pop_log(LOG_ERR, "index: %s", strerror(errno));
			return MD_TEMP;
		}
		ix->msg = m;
		ix->cap = cap;
	}
	m = &ix->msg[ix->n++];
	memset(m, 0, sizeof(*m));
	m->from = from;
	m->data = data;
	ix->cumdata = cumdata;
	ix->hash_due = 1;
	return MD_OK;
}

/* Sets end and size of the last message; lfs: its bare LFs. */
static void
mbox_ix_close(struct mbox_ix *ix, uint64_t end, uint64_t lfs, int last)
{
	struct md_msg	*m = &ix->msg[ix->n - 1];

	m->end = end;
	m->size = end - m->data + lfs;
	if (end > m->data && last != '\n')
		m->size += last == '\r' ? 1 : 2;
}

/* Digest of the last message, if its header is all in buf. */
static int
mbox_ix_hash(struct mbox_ix *ix, const unsigned char *buf, int64_t base,
    size_t valid, int final)
{
	struct md_msg		*m = &ix->msg[ix->n - 1];
	struct sha256_ctx	 ctx;
	unsigned char		 dg[SHA256_DIGEST_SIZE];
	size_t			 fi, di;
	int			 pseudo = 0;

	fi = (size_t)((int64_t)m->from - base);
	di = (size_t)((int64_t)m->data - base);
	sha256_init(&ctx);
	sha256_update(&ctx, di - fi, buf + fi);
	if (mbox_hdrhash(&ctx, buf + di, valid - di, final,
	    buf[di - 2] == '\r', m->from == 0 ? &pseudo : NULL) == -1)
		return -1;
	sha256_digest(&ctx, sizeof(dg), dg);
	memcpy(m->hash, dg, sizeof(m->hash));
	if (m->from == 0) {
		/* The sender, as c-client and Dovecot write it. */
		if (di - fi > 19 && memcmp(buf + fi, "From MAILER-DAEMON", 18)
		    == 0 && (buf[fi + 18] == ' ' || buf[fi + 18] == '\t'))
			pseudo |= MD_PS_DAEMON;
		ix->pseudo = pseudo;
	}
	ix->hash_due = 0;
	return 0;
}

/*
 * A line starting with "F" after an LF at buf[p]: a new message if an
 * empty line precedes it and it is a real From_ line.  cum: bare LFs
 * before p.
 */
static enum md_res
mbox_ix_cand(struct mbox_ix *ix, const unsigned char *buf, int64_t base,
    size_t valid, int eof, size_t p, uint64_t cum)
{
	uint64_t	off = (uint64_t)(base + (int64_t)p);
	size_t		len;
	int		sep;
	enum md_res	r;

	if (buf[p - 2] == '\n')
		sep = 1;
	else if (buf[p - 2] == '\r' && buf[p - 3] == '\n')
		sep = 2;
	else
		return MD_OK;
	if ((len = mbox_fromline(buf + p, valid - p)) == 0)
		return MD_OK;
	/* The octets of the message before end in the LF before the
	 * separator line, so they need no final line end.  (The second
	 * half's first message has none before it.) */
	if (ix->n > 0) {
		mbox_ix_close(ix, off - (uint64_t)sep, cum - (sep == 1) -
		    ix->cumdata, '\n');
		if (ix->hash_due && mbox_ix_hash(ix, buf, base, valid, eof) == -1)
			(void)mbox_ix_hash(ix, buf, base, valid, 1);
	}
	if (ix->stop != 0 && off >= ix->stop) {
		ix->done = 1;
		return MD_OK;
	}
	if ((r = mbox_ix_add(ix, off, off + len, cum + (buf[p + len - 2] !=
	    '\r'))) != MD_OK)
		return r;
	(void)mbox_ix_hash(ix, buf, base, valid, eof);
	return MD_OK;
}

/* The slow path for 64 octets at buf[i] that hold a candidate. */
static enum md_res
mbox_ix_slow(struct mbox_ix *ix, const unsigned char *buf, int64_t base,
    size_t valid, int eof, size_t i)
{
	enum md_res	r;
	size_t		p;

	for (p = i; p < i + 64; p++) {
		if (buf[p] == 'F' && buf[p - 1] == '\n' && p < valid &&
		    ((r = mbox_ix_cand(ix, buf, base, valid, eof, p, ix->cum)) !=
		    MD_OK || ix->done))
			return r;
		if (buf[p] == '\n' && buf[p - 1] != '\r')
			ix->cum++;
	}
	return MD_OK;
}

#ifdef MD_AVX2
int
mbox_avx2(void)
{
	static int	avx2 = -1;

	if (avx2 == -1)
		avx2 = __builtin_cpu_supports("avx2") &&
		    __builtin_cpu_supports("popcnt");
	return avx2;
}

/*
 * mbox_ix_scan() with AVX2: 64-bit masks of LF, CR and "F"; the masks of
 * "after an LF" and "after a CR" are those shifted by one, carrying the
 * last bit from the block before.
 */
__attribute__((target("avx2,popcnt")))
static enum md_res
mbox_ix_scan_avx2(struct mbox_ix *ix, const unsigned char *buf, int64_t base,
    size_t valid, int eof, size_t i, size_t stop)
{
	const __m256i	lf = _mm256_set1_epi8('\n'), cr = _mm256_set1_epi8('\r');
	const __m256i	ef = _mm256_set1_epi8('F');
	__m256i		v0, v1;
	enum md_res	r;
	uint64_t	l, c, f, b, cand, cum, lcarry, ccarry;
	size_t		p;

	lcarry = buf[i - 1] == '\n';
	ccarry = buf[i - 1] == '\r';
	for (; i < stop; i += 64) {
		v0 = _mm256_loadu_si256((const __m256i *)(const void *)
		    (buf + i));
		v1 = _mm256_loadu_si256((const __m256i *)(const void *)
		    (buf + i + 32));
		l = (uint32_t)_mm256_movemask_epi8(_mm256_cmpeq_epi8(v0, lf)) |
		    (uint64_t)(uint32_t)_mm256_movemask_epi8(
		    _mm256_cmpeq_epi8(v1, lf)) << 32;
		c = (uint32_t)_mm256_movemask_epi8(_mm256_cmpeq_epi8(v0, cr)) |
		    (uint64_t)(uint32_t)_mm256_movemask_epi8(
		    _mm256_cmpeq_epi8(v1, cr)) << 32;
		f = (uint32_t)_mm256_movemask_epi8(_mm256_cmpeq_epi8(v0, ef)) |
		    (uint64_t)(uint32_t)_mm256_movemask_epi8(
		    _mm256_cmpeq_epi8(v1, ef)) << 32;
		b = l & ~(c << 1 | ccarry);
		cand = f & (l << 1 | lcarry);
		lcarry = l >> 63;
		ccarry = c >> 63;
		cum = ix->cum;
		ix->cum += (uint64_t)__builtin_popcountll(b);
		for (; cand != 0; cand &= cand - 1) {
			p = i + (size_t)__builtin_ctzll(cand);
			if (p < valid && ((r = mbox_ix_cand(ix, buf, base, valid,
			    eof, p, cum + (uint64_t)__builtin_popcountll(b &
			    ((1ULL << (p - i)) - 1)))) != MD_OK || ix->done))
				return r;
		}
	}
	return MD_OK;
}
#endif

#ifdef __SSE2__
/* The sum of the 16 byte counters of acc. */
static inline uint64_t
mbox_sse2_sum(__m128i acc)
{
	__m128i	v = _mm_sad_epu8(acc, _mm_setzero_si128());

	return (uint64_t)_mm_cvtsi128_si32(v) +
	    (uint64_t)_mm_cvtsi128_si32(_mm_unpackhi_epi64(v, v));
}
#endif

/*
 * Scans buf[i, stop) in 64-octet steps (stop - i a multiple of 64; the
 * octet before i readable): counts bare LFs and hands the blocks with an
 * LF followed by "F" to the slow path.  AVX2 or SSE2 where there is.
 */
static enum md_res
mbox_ix_scan(struct mbox_ix *ix, const unsigned char *buf, int64_t base,
    size_t valid, int eof, size_t i, size_t stop)
{
	enum md_res	r;
#ifdef MD_AVX2
	if (mbox_avx2())
		return mbox_ix_scan_avx2(ix, buf, base, valid, eof, i, stop);
#endif
#ifdef __SSE2__
	const __m128i	lf = _mm_set1_epi8('\n'), cr = _mm_set1_epi8('\r');
	const __m128i	ef = _mm_set1_epi8('F'), zero = _mm_setzero_si128();
	__m128i		acc = zero, v, w, b[4], c;
	int		k, nacc = 0;

	for (; i < stop; i += 64) {
		c = zero;
		for (k = 0; k < 4; k++) {
			v = _mm_loadu_si128((const __m128i *)(const void *)
			    (buf + i + 16 * k));
			w = _mm_loadu_si128((const __m128i *)(const void *)
			    (buf + i + 16 * k - 1));
			b[k] = _mm_andnot_si128(_mm_cmpeq_epi8(w, cr),
			    _mm_cmpeq_epi8(v, lf));
			c = _mm_or_si128(c, _mm_and_si128(
			    _mm_cmpeq_epi8(w, lf), _mm_cmpeq_epi8(v, ef)));
		}
		if (_mm_movemask_epi8(c) != 0) {
			ix->cum += mbox_sse2_sum(acc);
			acc = zero;
			nacc = 0;
			if ((r = mbox_ix_slow(ix, buf, base, valid, eof, i)) !=
			    MD_OK || ix->done)
				return r;
			continue;
		}
		/* Each lane counts at most 4 a step: flush before 255. */
		acc = _mm_sub_epi8(acc, b[0]);
		acc = _mm_sub_epi8(acc, b[1]);
		acc = _mm_sub_epi8(acc, b[2]);
		acc = _mm_sub_epi8(acc, b[3]);
		if (++nacc == 63) {
			ix->cum += mbox_sse2_sum(acc);
			acc = zero;
			nacc = 0;
		}
	}
	ix->cum += mbox_sse2_sum(acc);
#else
	for (; i < stop; i += 64)
		if ((r = mbox_ix_slow(ix, buf, base, valid, eof, i)) != MD_OK ||
		    ix->done)
			return r;
#endif
	return MD_OK;
}

/*
 * The first message, at offset 0 of the file: buf[fi, valid) holds the
 * first octets.  MD_PERM if the file does not start with a From_ line.
 */
static enum md_res
mbox_ix_first(struct mbox_ix *ix, const unsigned char *buf, int64_t base,
    size_t valid)
{
	const unsigned char	*lf;
	size_t			 fi = (size_t)-base;	/* offset 0 */

	if (valid - fi < 5 || memcmp(buf + fi, "From ", 5) != 0 ||
	    (lf = memchr(buf + fi, '\n', valid - fi < MD_FROM_MAX ?
	    valid - fi : MD_FROM_MAX)) == NULL) {
		pop_log(LOG_ERR, "not an mbox: the file does not start with "
		    "a From_ line");
		return MD_PERM;
	}
	return mbox_ix_add(ix, 0, (uint64_t)(base + (lf - buf) + 1),
	    lf[-1] != '\r');
}

/*
 * The end of the last message at lim (buf holds [base, lim)): a final
 * empty line is a separator too.
 */
static void
mbox_ix_last(struct mbox_ix *ix, const unsigned char *buf, int64_t base,
    size_t valid)
{
	const struct md_msg	*m = &ix->msg[ix->n - 1];
	uint64_t		 end, sub = 0, lim = ix->lim;
	int			 last;

	end = lim;
#define MD_AT(o)	buf[(size_t)((int64_t)(o) - base)]
	if (lim - 1 >= m->data && MD_AT(lim - 1) == '\n') {
		if (lim - 2 >= m->data - 1 && MD_AT(lim - 2) == '\n') {
			end = lim - 1;
			sub = 1;
		} else if (lim - 3 >= m->data - 1 && MD_AT(lim - 2) == '\r' &&
		    MD_AT(lim - 3) == '\n')
			end = lim - 2;
	}
	last = end > m->data ? MD_AT(end - 1) : '\n';
#undef MD_AT
	mbox_ix_close(ix, end, ix->cum - sub - ix->cumdata, last);
	if (ix->hash_due)
		(void)mbox_ix_hash(ix, buf, base, valid, 1);
}

/* The index buffer, *cap octets.  A small mailbox gets a buffer its size
 * (history, octets, 64 for the last vector): no mmap(2) of the whole
 * block per session. */
static unsigned char *
mbox_ix_buf(const struct mbox_ix *ix, size_t *cap)
{
	*cap = MD_IX_CAP;
	if (ix->lim - ix->start < MD_IX_CAP - 2 * 64 - MD_IX_HIST)
		*cap = ((size_t)(ix->lim - ix->start) + 2 * 64 + MD_IX_HIST +
		    63) & ~(size_t)63;
	return aligned_alloc(64, *cap);
}

/*
 * Indexes [ix->start, ix->lim) of ix->fd in one pass of large reads:
 * message boundaries, sizes and digests.  The buffer holds the octets
 * [base, base + valid); buf[i] is the scan point, 64-aligned, and the
 * MD_IX_HIST octets before it stay (the empty-line test needs 3).  The
 * pending message's From_ line and header stay in the buffer until its
 * digest is done.  The first half of two stops at the first message at
 * or after ix->stop (the first one the second half finds: the rule looks
 * at a few octets around it only).
 */
static void *
mbox_ix_run(void *arg)
{
	struct mbox_ix	*ix = arg;
	unsigned char	*buf;
	enum md_res	 r = MD_OK;
	int64_t		 base;
	size_t		 valid, i = MD_IX_HIST, keep, stop, fi, want, cap;
	uint64_t	 off, lim = ix->lim;
	ssize_t		 got;
	int		 eof, first;

	if ((buf = mbox_ix_buf(ix, &cap)) == NULL) {
		pop_log(LOG_ERR, "index: %s", strerror(errno));
		ix->r = MD_TEMP;
		return NULL;
	}
	/* Before offset 0, the history is NULs. */
	first = ix->start == 0;
	base = (int64_t)ix->start - MD_IX_HIST;
	valid = base < 0 ? (size_t)-base : 0;
	memset(buf, 0, valid);
	for (;;) {
		off = (uint64_t)(base + (int64_t)valid);
		want = cap - 64 - valid;
		if (want > lim - off)
			want = (size_t)(lim - off);
		if ((got = io_pread(ix->fd, buf + valid, want, off)) == -1) {
			pop_log(LOG_ERR, "read: %s", strerror(errno));
			r = MD_TEMP;
			goto out;
		}
		if ((size_t)got != want) {
			pop_log(LOG_ERR, "mailbox shrank while indexing");
			r = MD_CHANGED;
			goto out;
		}
		valid += (size_t)got;
		eof = off + (uint64_t)got == lim;
		if (ix->alive != NULL)
			ix->alive();
		if (first) {
			first = 0;
			if ((r = mbox_ix_first(ix, buf, base, valid)) != MD_OK)
				goto out;
		}
		if (ix->hash_due)
			(void)mbox_ix_hash(ix, buf, base, valid, eof);
		if (eof) {
			memset(buf + valid, 0, 64);
			stop = i + (valid > i ? (valid - i + 63) / 64 * 64 : 0);
		} else
			stop = i + (valid - MD_IX_LOOK - i) / 64 * 64;
		if ((r = mbox_ix_scan(ix, buf, base, valid, eof, i, stop)) !=
		    MD_OK || ix->done)
			goto out;
		i = stop;
		if (eof)
			break;
		keep = i - MD_IX_HIST;
		if (ix->hash_due) {
			fi = (size_t)((int64_t)ix->msg[ix->n - 1].from - base);
			if (fi < keep)
				keep = fi;
		}
		keep &= ~(size_t)63;	/* i stays aligned */
		memmove(buf, buf + keep, valid - keep);
		base += (int64_t)keep;
		valid -= keep;
		i -= keep;
	}
	/* A second half without a message has no last one. */
	if (ix->n > 0)
		mbox_ix_last(ix, buf, base, valid);
out:
	free(buf);
	ix->r = r;
	return NULL;
}

static void
mbox_ix_free(struct mbox_ix *ix)
{
	free(ix->msg);
	ix->msg = NULL;
	ix->n = 0;
}

/*
 * Appends b's records to ix (which has room for them), from the end a
 * chunk at a time, shrinking b as it goes: the peak is the two halves and
 * one chunk, not the halves twice (issue 6: 64 bytes a message).
 */
static void
mbox_ix_join(struct mbox_ix *ix, struct mbox_ix *b)
{
	struct md_msg	*m;
	uint32_t	 left = b->n, k;

	while (left > 0) {
		k = left > MD_IX_JOIN ? MD_IX_JOIN : left;
		left -= k;
		memcpy(ix->msg + ix->n + left, b->msg + left,
		    k * sizeof(*b->msg));
		/* Shrinking gives the tail's pages back (glibc: mremap of a
		 * large block); if it cannot, b stays as it is. */
		if (left > 0 && (m = reallocarray(b->msg, left,
		    sizeof(*m))) != NULL)
			b->msg = m;
	}
	ix->n += b->n;
}

static enum md_res	mbox_check_end(struct mbox_ix *, struct mbox_ix *, int);

/*
 * Indexes [0, lim) of fd into ix: a large mailbox in two halves at once
 * when there are two CPUs (the second in a thread, or after the first if
 * no thread can be had), joined at the first message of the second half.
 * With ref: checks [0, lim) against that index instead (mbox_check()).
 * alive: the keep-alive, called by the calling thread only.
 */
static enum md_res
mbox_ix_do(int fd, uint64_t lim, void (*alive)(void), struct mbox_ix *ix,
    const struct md_msg *ref, uint32_t nref, uint32_t nhidden)
{
	struct mbox_ix	 b;
	struct md_msg	*m;
	sigset_t	 all, old;
	pthread_t	 th;
	int		 threaded = 0, split;

	memset(ix, 0, sizeof(*ix));
	ix->fd = fd;
	ix->lim = lim;
	ix->alive = alive;
	ix->ref = ref;
	ix->nref = nref;
	ix->nhidden = nhidden;
	if (lim == 0)
		return ref != NULL ? mbox_check_end(ix, NULL, 0) : MD_OK;
	split = !(lim < mbox_split_min || lim < 2 ||
	    (!mbox_split_force && sysconf(_SC_NPROCESSORS_ONLN) < 2));
	if (!split) {
		(void)mbox_ix_run(ix);
		if (ref != NULL)
			return mbox_check_end(ix, NULL, 0);
		if (ix->r != MD_OK)
			mbox_ix_free(ix);
		return ix->r;
	}
	memset(&b, 0, sizeof(b));
	b.fd = fd;
	b.start = ix->stop = mbox_split_at > 0 && mbox_split_at < lim ?
	    mbox_split_at : lim / 2;
	b.lim = lim;
	b.ref = ix->ref;
	b.nref = ix->nref;
	b.nhidden = ix->nhidden;
	/* Signals stay with the calling thread. */
	(void)sigfillset(&all);
	if (pthread_sigmask(SIG_SETMASK, &all, &old) == 0) {
		threaded = pthread_create(&th, NULL, mbox_ix_run, &b) == 0;
		(void)pthread_sigmask(SIG_SETMASK, &old, NULL);
	}
	(void)mbox_ix_run(ix);
	if (threaded) {
		if (pthread_join(th, NULL) != 0)
			fatalx("pthread_join failed");
	} else if (ix->r == MD_OK && ix->done)
		(void)mbox_ix_run(&b);
	if (ref != NULL)
		return mbox_check_end(ix, &b, 1);
	if (ix->r == MD_OK && ix->done) {
		if (b.r != MD_OK || b.n == 0 || b.msg[0].from < ix->stop ||
		    ix->n > MD_MAX_MESSAGES - b.n) {
			if (b.r == MD_OK && b.n > 0 && b.msg[0].from >= ix->stop)
				pop_log(LOG_ERR, "mailbox has more than %d "
				    "messages", MD_MAX_MESSAGES);
			else if (b.r == MD_OK)
				pop_log(LOG_ERR, "index: the halves do not "
				    "meet");
			ix->r = b.r != MD_OK ? b.r : b.n > 0 &&
			    b.msg[0].from >= ix->stop ? MD_PERM : MD_TEMP;
		} else if ((m = reallocarray(ix->msg, ix->n + b.n,
		    sizeof(*m))) == NULL) {
			pop_log(LOG_ERR, "index: %s", strerror(errno));
			ix->r = MD_TEMP;
		} else {
			ix->msg = m;
			mbox_ix_join(ix, &b);
		}
	}
	mbox_ix_free(&b);
	if (ix->r != MD_OK)
		mbox_ix_free(ix);
	return ix->r;
}

enum md_res
mbox_index(int fd, uint64_t lim, void (*alive)(void), struct mbox_ix *ix)
{
	return mbox_ix_do(fd, lim, alive, ix, NULL, 0, 0);
}

/*
 * The end of a check: the records left, the halves' meeting point, the
 * count, the pseudo-message.  Frees both.
 */
static enum md_res
mbox_check_end(struct mbox_ix *ix, struct mbox_ix *b, int split)
{
	enum md_res	r = ix->r;
	uint32_t	total;

	if (r == MD_OK) {
		mbox_ix_flush(ix);
		total = ix->kheld;
		if (split && ix->done) {
			if (b->r != MD_OK)
				r = b->r;
			else if (!b->started || b->first < ix->stop) {
				pop_log(LOG_ERR, "index: the halves do not "
				    "meet");
				r = MD_TEMP;
			} else {
				mbox_ix_flush(b);
				if (b->bad || b->kfirst != ix->kheld)
					ix->bad = 1;
				total = b->kheld;
			}
		}
		if (r == MD_OK && (ix->bad || total != ix->nref + ix->nhidden ||
		    (ix->pseudo == MD_PS_HIDDEN) != (ix->nhidden == 1)))
			r = MD_CHANGED;
	}
	mbox_ix_free(ix);
	if (split)
		mbox_ix_free(b);
	return r;
}

/*
 * Is [0, lim) of fd still what the index ref says, message for message
 * (offsets, sizes, digests, the hidden pseudo-message)?  MD_OK, or
 * MD_CHANGED; MD_PERM: no longer an mbox; MD_TEMP: an error.  Holds a
 * few records at a time, not a second index (issue 6: 64 bytes a
 * message, even when mail arrives during a session).  An empty index
 * (ref NULL) is checked against mbox_noref: checking, with no record.
 */
static const struct md_msg	mbox_noref;

enum md_res
mbox_check(int fd, uint64_t lim, const struct md_msg *ref, uint32_t nref,
    uint32_t nhidden, void (*alive)(void))
{
	struct mbox_ix	ix;

	return mbox_ix_do(fd, lim, alive, &ix, ref != NULL ? ref : &mbox_noref,
	    nref, nhidden);
}

/* A pseudo-message at the top is hidden: *hidden = its record's end. */
void
mbox_hide(struct mbox_ix *ix, uint64_t lim, uint64_t *hidden)
{
	*hidden = 0;
	if (ix->n == 0 || ix->pseudo != MD_PS_HIDDEN)
		return;
	*hidden = ix->n > 1 ? ix->msg[1].from : lim;
	memmove(ix->msg, ix->msg + 1, (ix->n - 1) * sizeof(ix->msg[0]));
	ix->n--;
}

/*
 * Numbers byte-identical twins 1, 2, ... in file order, in one pass: a
 * table holds, per digest, the last message seen with it (open
 * addressing, 3 slots for 2 messages: 6 bytes a message, below the 8 of
 * the sort it replaces, which took 4 ms of a 55 ms open of 20,000
 * messages).  A sender chooses the bytes that are digested, and so could
 * make digests share the bits that pick a slot (2^15 tries a message for
 * 20,000 messages), to make the table a list: the slot comes from the
 * digest's first 64 bits times a random odd multiplier of this call
 * (getrandom(2)), whose high bits no sender can aim at.
 */
enum md_res
mbox_twins(struct md_msg *msg, uint32_t n)
{
	uint64_t	 mul = 0x9e3779b97f4a7c15ULL, key;
	uint32_t	*last, i, j, k, m;

	if (n < 2)
		return MD_OK;
	m = n + n / 2;
	if ((last = calloc(m, sizeof(*last))) == NULL) {
		pop_log(LOG_ERR, "index: %s", strerror(errno));
		return MD_TEMP;
	}
	if (getrandom(&key, sizeof(key), GRND_NONBLOCK) == (ssize_t)sizeof(key))
		mul = key;		/* else the fixed one: still right */
	mul |= 1;
	for (i = 0; i < n; i++) {
		memcpy(&key, msg[i].hash, sizeof(key));
		k = (uint32_t)(((key * mul) >> 32) * m >> 32);
		while ((j = last[k]) != 0 && memcmp(msg[j - 1].hash,
		    msg[i].hash, sizeof(msg[i].hash)) != 0)
			k = k + 1 < m ? k + 1 : 0;
		msg[i].twin = j != 0 ? msg[j - 1].twin + 1 : 0;
		last[k] = i + 1;
	}
	free(last);
	return MD_OK;
}

/* The digest of message m as the file holds it now (stream check). */
int
mbox_msghash(int fd, uint64_t lim, const struct md_msg *m,
    unsigned char *buf, unsigned char *out)
{
	struct sha256_ctx	ctx;
	unsigned char		dg[SHA256_DIGEST_SIZE];
	uint64_t		hlen, flen = m->data - m->from;

	hlen = lim - m->data;
	if (hlen > MD_HASH_MAX)
		hlen = MD_HASH_MAX;
	if (flen > MD_FROM_MAX || io_pread_exact(fd, buf, flen + hlen,
	    m->from) == -1)
		return -1;
	sha256_init(&ctx);
	sha256_update(&ctx, flen, buf);
	(void)mbox_hdrhash(&ctx, buf + flen, hlen, 1, buf[flen - 2] == '\r',
	    NULL);
	sha256_digest(&ctx, sizeof(dg), dg);
	memcpy(out, dg, 16);
	return 0;
}

void
mbox_uidl(const struct md_msg *m, char *buf, size_t size)
{
	static const char	 hex[] = "0123456789abcdef";
	char			 id[2 * sizeof(m->hash) + 16];
	size_t			 k;

	if (size == 0)
		return;
	for (k = 0; k < sizeof(m->hash); k++) {
		id[2 * k] = hex[m->hash[k] >> 4];
		id[2 * k + 1] = hex[m->hash[k] & 15];
	}
	id[2 * k] = '\0';
	if (m->twin > 0)
		(void)snprintf(id + 2 * k, sizeof(id) - 2 * k, "-%u",
		    (unsigned int)m->twin);
	k = strlen(id);
	if (k >= size)
		k = size - 1;
	memcpy(buf, id, k);
	buf[k] = '\0';
}
