/*
 * fuzz_mbox.c: libFuzzer target for the mbox indexer, the streamer, the
 * UIDLs and the update of the maildrop (maildrop.c, mbox.c, journal.c,
 * lock.c, io.c).
 *
 * Input: the mailbox file as it is (seeds are plain mbox files), except
 * that "\001P" followed by two octets a and b is replaced by a*4096 + b
 * octets of filler lines (1024 octets each, "x...x\n"), and "\001B" k by
 * the filler that takes the file to offset FZ_EDGE - 8192 + 64 * k, at
 * most 2 MB in all: so that short inputs reach the block boundaries of
 * the streamer (MD_BLOCK) and of the indexer (FZ_EDGE: where its first read
 * ends, which a From_ line or a header may straddle).
 *
 * The file is written to a private directory in /dev/shm, opened with
 * md_open() (fcntl locks only; for two inputs in three the indexer is
 * made to split the file between two threads) and, if it is an mbox,
 * checked:
 * - the index: each message starts with "From " and its From_ line ends
 *   in LF; messages are separated by exactly one empty line ("\n" or
 *   "\r\n") after an LF; the last one ends at the end of the file, less
 *   one final empty line; and every line that follows an empty line and
 *   is a From_ line by mbox_fromline() starts a message (no boundary missed
 *   at a block edge); mbox_fromline() depends on its line alone; a hidden
 *   pseudo-message is from MAILER-DAEMON, without Received, Return-Path
 *   or Delivered-To;
 * - RETR of every message is exactly its octets with a bare LF turned
 *   into CRLF, a line end added when the octets do not end in LF, then
 *   dot-stuffed; LIST's size is that length before stuffing; md_stream
 *   never says MD_CHANGED of a file nobody changed;
 * - TOP n 0, 1, 2, 1000: the header, the empty line and that many body
 *   lines of the RETR output, stuffed the same way;
 * - UIDLs: 1..POP3_UIDL_MAX octets 0x21..0x7e, unique;
 * - UPDATE with some messages deleted: md_update() succeeds, the file is
 *   the old one without exactly the deleted messages' records, and a new
 *   md_open() finds the kept messages with the same sizes and digests.
 */
/*
 * The SIMD paths: this build takes what the CPU has (AVX2 here); the
 * Makefile also builds fuzz_mbox_sse2 (-DFZ_NO_AVX2) and fuzz_mbox_scalar
 * (-DFZ_NO_AVX2 -U__SSE2__), so that each path of the indexer and the
 * streamer is fuzzed against the same reference.
 */
#ifdef FZ_NO_AVX2
#define __builtin_cpu_supports(feature)	0
#endif
#include "../maildrop.c"
#include "../cache.c"
#include "../mbox.c"
#include "../journal.c"
#include "../lock.c"
#include "../io.c"

#include "common.h"

#define FZ_PAD_MAX	(2 * 1024 * 1024 + 4096)
/* The end of mbox_index()'s first read (see its "want": the buffer less
 * the 64 octets after the data and the MD_IX_HIST before offset 0). */
#define FZ_EDGE		(MD_IX_CAP - 64 - MD_IX_HIST)

struct pop_opts opt;

#include "logstub.c"

static int
fz_put(void *arg, const char *p, size_t len)
{
	fz_buf_add(arg, p, len);
	return 0;
}

/* The input with its filler tokens expanded. */
static void
fz_expand(const uint8_t *d, size_t n, struct fz_buf *b)
{
	static char	 fill[64 * 1024];
	const uint8_t	*p, *e = d + n, *t;
	size_t		 pad, total = 0, k, len;

	if (fill[0] == '\0')
		for (k = 0; k < sizeof(fill); k++)
			fill[k] = k % 1024 == 1023 ? '\n' : 'x';
	b->len = 0;
	for (p = d; p < e; p = t) {
		if ((t = memchr(p, 1, (size_t)(e - p))) == NULL)
			t = e;
		fz_buf_add(b, p, (size_t)(t - p));
		if (t == e)
			break;
		if (e - t >= 3 && t[1] == 'B') {
			pad = FZ_EDGE - 8192 + 64 * (size_t)t[2];
			pad = pad > b->len ? pad - b->len : 0;
			len = 3;
		} else if (e - t >= 4 && t[1] == 'P') {
			pad = (size_t)t[2] * 4096 + t[3];
			len = 4;
		} else {
			fz_buf_add(b, t++, 1);
			continue;
		}
		if (pad > FZ_PAD_MAX - total)
			pad = FZ_PAD_MAX - total;
		total += pad;
		for (; pad > 0; pad -= k) {
			k = pad < sizeof(fill) ? pad : sizeof(fill);
			fz_buf_add(b, fill, k);
		}
		t += len;
	}
}

/* RETR's octets of file[from, to) before stuffing, and stuffed: line by
 * line, so that the reference costs little per octet. */
static void
fz_expect(const unsigned char *f, uint64_t from, uint64_t to,
    struct fz_buf *plain, struct fz_buf *stuffed)
{
	const unsigned char	*p = f + from, *e = f + to, *nl;
	size_t			 n;

	plain->len = stuffed->len = 0;
	for (; p < e; p = nl + 1) {
		if (*p == '.')
			fz_buf_add(stuffed, ".", 1);
		if ((nl = memchr(p, '\n', (size_t)(e - p))) == NULL) {
			/* The last line, without an LF: one is added. */
			n = (size_t)(e - p);
			fz_buf_add(plain, p, n);
			fz_buf_add(stuffed, p, n);
			if (p[n - 1] == '\r') {
				fz_buf_add(plain, "\n", 1);
				fz_buf_add(stuffed, "\n", 1);
			} else {
				fz_buf_add(plain, "\r\n", 2);
				fz_buf_add(stuffed, "\r\n", 2);
			}
			break;
		}
		n = (size_t)(nl - p);
		fz_buf_add(plain, p, n);
		fz_buf_add(stuffed, p, n);
		if (n > 0 && p[n - 1] == '\r') {
			fz_buf_add(plain, "\n", 1);
			fz_buf_add(stuffed, "\n", 1);
		} else {
			fz_buf_add(plain, "\r\n", 2);
			fz_buf_add(stuffed, "\r\n", 2);
		}
	}
}

/* TOP's octets (stuffed) from RETR's stuffed octets r: lines end at LF;
 * the header ends at the first empty line ("\r\n"). */
static size_t
fz_top_len(const struct fz_buf *r, long lines)
{
	const unsigned char	*p = r->p, *e, *nl;
	int			 hdr = 1;
	long			 body = 0;

	if (r->len == 0)
		return 0;
	e = r->p + r->len;
	for (; p < e; p = nl + 1) {
		if (!hdr && body++ >= lines)
			break;
		if ((nl = memchr(p, '\n', (size_t)(e - p))) == NULL)
			return r->len;
		if (hdr && nl == p + 1) {
			hdr = 0;
			if (lines == 0)
				return (size_t)(nl + 1 - r->p);
		}
	}
	return (size_t)(p - r->p);
}

/* Is there a message boundary candidate at f[p]: an empty line before? */
static int
fz_after_empty(const unsigned char *f, uint64_t p)
{
	if (p < 2 || f[p - 1] != '\n')
		return 0;
	return f[p - 2] == '\n' || (p >= 3 && f[p - 2] == '\r' &&
	    f[p - 3] == '\n');
}

/*
 * mbox_fromline() at f[q], which must depend on that line alone: the same
 * length with the window cut after the line's LF (the index scan gives
 * it whatever the buffer holds).
 */
static size_t
fz_fromline(const unsigned char *f, uint64_t len, uint64_t q)
{
	const unsigned char	*nl;
	size_t			 n;

	n = mbox_fromline(f + q, (size_t)(len - q));
	nl = memchr(f + q, '\n', (size_t)(len - q));
	FZ_CHECK(nl == NULL ? n == 0 : mbox_fromline(f + q, (size_t)(nl - f -
	    q) + 1) == n, "mbox_fromline at %llu looks past its line",
	    (unsigned long long)q);
	FZ_CHECK(n == 0 || (size_t)(nl - f - q) + 1 == n, "mbox_fromline at "
	    "%llu: %zu octets, not its line", (unsigned long long)q, n);
	return n;
}

/* Is the header line [p, e) the field name (any case, blanks before the
 * colon)? */
static int
fz_isfield(const unsigned char *p, const unsigned char *e, const char *name)
{
	size_t	l = strlen(name);

	if ((size_t)(e - p) <= l || strncasecmp((const char *)p, name, l) != 0)
		return 0;
	for (p += l; p < e && (*p == ' ' || *p == '\t'); p++)
		continue;
	return p < e && *p == ':';
}

/*
 * A hidden pseudo-message (the file's first message, up to end): written
 * by a mail program, so from MAILER-DAEMON and with none of the fields an
 * MTA adds to a delivery in the header octets that pop3d reads.
 */
static void
fz_check_hidden(const unsigned char *f, uint64_t end)
{
	const unsigned char	*p, *e, *nl, *next;

	FZ_CHECK(end > 19 && memcmp(f, "From MAILER-DAEMON", 18) == 0 &&
	    (f[18] == ' ' || f[18] == '\t'), "hidden, not from MAILER-DAEMON");
	p = memchr(f, '\n', (size_t)end);
	FZ_CHECK(p != NULL, "hidden, no From_ line");
	p++;
	e = (uint64_t)(f + end - p) > MD_HASH_MAX ? p + MD_HASH_MAX : f + end;
	for (; p < e && *p != '\n' && !(*p == '\r' && p + 1 < e &&
	    p[1] == '\n'); p = next) {
		nl = memchr(p, '\n', (size_t)(e - p));
		next = nl != NULL ? nl + 1 : e;
		FZ_CHECK(!fz_isfield(p, next, "Received") &&
		    !fz_isfield(p, next, "Return-Path") &&
		    !fz_isfield(p, next, "Delivered-To"), "hidden, but has a "
		    "field an MTA adds");
	}
}

static void
fz_check_index(const struct maildrop *md, const unsigned char *f,
    uint64_t len)
{
	const struct md_msg	*m;
	const unsigned char	*nl;
	uint64_t		 p, q, gap, next;
	uint32_t		 i;

	FZ_CHECK(md->indexed == len, "indexed %llu of %llu",
	    (unsigned long long)md->indexed, (unsigned long long)len);
	FZ_CHECK(md->hidden_end <= len, "hidden_end past the end");
	for (i = 0; i < md->n; i++) {
		m = &md->msg[i];
		FZ_CHECK(m->from < m->data && m->data <= m->end &&
		    m->end <= len, "message %u: from %llu data %llu end %llu",
		    i, (unsigned long long)m->from,
		    (unsigned long long)m->data, (unsigned long long)m->end);
		FZ_CHECK(m->data - m->from >= 6 &&
		    memcmp(f + m->from, "From ", 5) == 0 &&
		    f[m->data - 1] == '\n' &&
		    memchr(f + m->from, '\n', m->data - m->from - 1) == NULL,
		    "message %u: bad From_ line", i);
		if (i == 0)
			FZ_CHECK(m->from == md->hidden_end, "message 1 at %llu, "
			    "hidden_end %llu", (unsigned long long)m->from,
			    (unsigned long long)md->hidden_end);
		else
			FZ_CHECK(mbox_fromline(f + m->from, len - m->from) ==
			    m->data - m->from, "message %u: From_ line not "
			    "valid", i);
		next = i + 1 < md->n ? md->msg[i + 1].from : len;
		gap = next - m->end;
		if (i + 1 < md->n)
			FZ_CHECK((gap == 1 && f[m->end] == '\n') ||
			    (gap == 2 && f[m->end] == '\r' &&
			    f[m->end + 1] == '\n'), "message %u: separator "
			    "of %llu octets", i, (unsigned long long)gap);
		else
			FZ_CHECK(gap == 0 || (gap == 1 && f[m->end] == '\n') ||
			    (gap == 2 && f[m->end] == '\r' &&
			    f[m->end + 1] == '\n'), "last message: %llu "
			    "octets after it", (unsigned long long)gap);
		if (gap > 0)
			FZ_CHECK(m->end > m->from && f[m->end - 1] == '\n',
			    "message %u: separator not after an LF", i);
		/* No boundary missed inside the message: every LF. */
		for (p = m->data; p < m->end; p = (uint64_t)(nl - f) + 1) {
			if ((nl = memchr(f + p, '\n', m->end - p)) == NULL)
				break;
			q = (uint64_t)(nl - f) + 1;
			if (q < len && f[q] == 'F' && fz_after_empty(f, q) &&
			    fz_fromline(f, len, q) > 0 && q < m->end)
				fz_fail("message %u: missed a From_ line at "
				    "%llu", i, (unsigned long long)q);
		}
	}
	/* The hidden pseudo-message is message 1 of the file. */
	if (md->hidden_end > 0)
		fz_check_hidden(f, md->hidden_end);
}

static int
fz_strcmp(const void *a, const void *b)
{
	return strcmp(a, b);
}

static void
fz_check_uidls(const struct maildrop *md)
{
	static char	 (*ids)[POP3_UIDL_MAX + 1];
	static uint32_t	 cap;
	uint32_t	 i;
	size_t		 k, n;

	if (md->n > cap) {
		free(ids);
		cap = md->n;
		if ((ids = calloc(cap, sizeof(*ids))) == NULL)
			abort();
	}
	for (i = 0; i < md->n; i++) {
		md_uidl(md, i, ids[i], sizeof(ids[i]));
		n = strlen(ids[i]);
		FZ_CHECK(n >= 1 && n <= POP3_UIDL_MAX, "UIDL of %zu", n);
		for (k = 0; k < n; k++)
			FZ_CHECK(ids[i][k] >= 0x21 && ids[i][k] <= 0x7e,
			    "UIDL octet %#x", (unsigned char)ids[i][k]);
	}
	qsort(ids, md->n, sizeof(*ids), fz_strcmp);
	for (i = 1; i < md->n; i++)
		FZ_CHECK(strcmp(ids[i - 1], ids[i]) != 0, "UIDL %s twice",
		    ids[i]);
}

static const char *fz_mbox, *fz_dirname;

static void
fz_paths(void)
{
	static char	 path[256];

	if (fz_mbox != NULL)
		return;
	fz_dirname = fz_dir();
	(void)snprintf(path, sizeof(path), "%s/mbox", fz_dirname);
	fz_mbox = path;
	opt.locks = POP3_LOCK_FCNTL;
	opt.debug = 0;
}

int	LLVMFuzzerTestOneInput(const uint8_t *, size_t);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static struct fz_buf	 file, out, plain, stuffed, want, now;
	static struct maildrop	 md, md2;
	static struct pop_user	 u;
	struct md_msg		*keep;
	enum md_res		 r;
	uint64_t		 s, e, hidden;
	uint32_t		 i, nk, nd;
	size_t			 tl;
	static const long	 tops[] = { 0, 1, 2, 1000 };
	unsigned		 t;
	int			 fd, shift = 0;

	fz_paths();
	/* Nothing of an earlier run (journal, aside) may stay. */
	fz_cleandir();
	fz_expand(data, size, &file);
	fz_write_file(fz_mbox, file.p, file.len);
	/*
	 * The indexer splits large mailboxes between two threads and joins
	 * the halves: split every mailbox here, at the middle (size % 3 ==
	 * 1) or at an offset the input chooses (size % 3 == 2).
	 */
	if (size % 3 == 0 || file.len < 2)
		mbox_test_split(0, 0);
	else
		mbox_test_split(1, size % 3 == 1 ? 0 : 1 + ((uint64_t)data[0] *
		    65599 + data[size - 1] * 257 + size) % (file.len - 1));
	memset(&u, 0, sizeof(u));
	(void)snprintf(u.name, sizeof(u.name), "fuzz");
	(void)snprintf(u.mailbox, sizeof(u.mailbox), "%s", fz_mbox);
	u.uid = getuid();
	u.gid = getgid();

	r = md_open(&md, &u);
	if (r != MD_OK) {
		FZ_CHECK(r == MD_PERM, "md_open: %d", r);
		FZ_CHECK(file.len > 0, "empty file refused");
		return 0;
	}
	if (file.len == 0) {
		FZ_CHECK(md.n == 0, "empty file with messages");
		md_close(&md);
		return 0;
	}
	FZ_CHECK(md.n > 0 || md.hidden_end > 0, "an mbox without messages");
	fz_check_index(&md, file.p, file.len);
	fz_check_uidls(&md);

	for (i = 0; i < md.n; i++) {
		fz_expect(file.p, md.msg[i].data, md.msg[i].end, &plain,
		    &stuffed);
		FZ_CHECK(md.msg[i].size == plain.len, "message %u: size %llu, "
		    "RETR sends %zu", i, (unsigned long long)md.msg[i].size,
		    plain.len);
		out.len = 0;
		r = md_stream(&md, i, -1, fz_put, &out);
		FZ_CHECK(r == MD_OK, "md_stream(%u): %d", i, r);
		FZ_CHECK(fz_eq(out.p, out.len, stuffed.p, stuffed.len),
		    "message %u: RETR sends %zu octets, not the %zu expected",
		    i, out.len, stuffed.len);
		for (t = 0; t < sizeof(tops) / sizeof(tops[0]); t++) {
			tl = fz_top_len(&stuffed, tops[t]);
			out.len = 0;
			r = md_stream(&md, i, tops[t], fz_put, &out);
			FZ_CHECK(r == MD_OK, "TOP %u %ld: %d", i + 1, tops[t],
			    r);
			FZ_CHECK(fz_eq(out.p, out.len, stuffed.p, tl),
			    "TOP %u %ld: %zu octets, expected %zu", i + 1,
			    tops[t], out.len, tl);
		}
	}

	/* UPDATE: delete some messages, chosen by the input. */
	for (i = 0, nd = 0; i < md.n; i++) {
		md.msg[i].deleted = (data[(i * 7) % size] + i) % 3 == 0;
		nd += md.msg[i].deleted;
	}
	if (nd == 0) {
		md_close(&md);
		return 0;
	}
	want.len = 0;
	if ((keep = calloc(md.n, sizeof(*keep))) == NULL)
		abort();
	for (i = 0, nk = 0; i < md.n; i++) {
		if (md.msg[i].deleted)
			continue;
		keep[nk++] = md.msg[i];
	}
	/* Expected file: all before the first deleted message, then the
	 * records (From_ line to the next From_ line) of the kept ones. */
	for (i = 0; !md.msg[i].deleted; i++)
		;
	fz_buf_add(&want, file.p, md.msg[i].from);
	for (; i < md.n; i++) {
		if (md.msg[i].deleted)
			continue;
		s = md.msg[i].from;
		e = i + 1 < md.n ? md.msg[i + 1].from : file.len;
		fz_buf_add(&want, file.p + s, e - s);
	}
	hidden = md.hidden_end;
	r = md_update(&md);
	FZ_CHECK(r == MD_OK, "md_update: %d", r);
	md_close(&md);
	if ((fd = open(fz_mbox, O_RDONLY | O_CLOEXEC)) == -1)
		abort();
	fz_slurp(fd, &now);
	(void)close(fd);
	FZ_CHECK(fz_eq(now.p, now.len, want.p, want.len),
	    "after UPDATE: %zu octets, expected %zu", now.len, want.len);

	r = md_open(&md2, &u);
	if (now.len == 0 || r != MD_OK) {
		/* Only the first message's From_ line may be lax: another
		 * one that becomes the first stays a valid one. */
		FZ_CHECK(now.len == 0 && r == MD_OK && md2.n == 0,
		    "after UPDATE: md_open %d, %zu octets", r, now.len);
		md_close(&md2);
		free(keep);
		return 0;
	}
	/*
	 * A kept message that becomes the first one and looks like the
	 * "FOLDER INTERNAL DATA" pseudo-message is hidden from now on: the
	 * documented rule (only the first message can be one), so allowed.
	 */
	if (md2.hidden_end > 0 && hidden == 0 && nk > 0 &&
	    md2.n == nk - 1)
		shift = 1;
	FZ_CHECK(md2.n + (uint32_t)shift == nk, "after UPDATE: %u messages, "
	    "kept %u", md2.n, nk);
	for (i = 0; i < md2.n; i++)
		FZ_CHECK(md2.msg[i].size == keep[i + shift].size &&
		    memcmp(md2.msg[i].hash, keep[i + shift].hash,
		    sizeof(keep[i].hash)) == 0, "after UPDATE: message %u "
		    "changed size or digest", i);
	md_close(&md2);
	free(keep);
	return 0;
}
