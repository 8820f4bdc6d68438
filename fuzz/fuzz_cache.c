/*
 * fuzz_cache.c: libFuzzer target for the index cache (cache.c): a cache
 * file is untrusted input.  Three modes, by the first octet of the input
 * (mod 3), the rest being:
 * 0  a cache file as it is, against a fixed mailbox (FZ_MBOX): it must
 *    never crash, and when cache_load() takes it, its index must be the
 *    full index of the mailbox (a fuzzer cannot forge the checksum, so
 *    this is mostly the header's checks);
 * 1  a cache file whose identity and checksum the target sets to those of
 *    the fixed mailbox, so that the records' checks are what is fuzzed:
 *    a cache taken must be one that the maildrop can serve without
 *    reading outside the file (offsets, sizes, twins: UIDLs unique and
 *    printable), RETR and TOP of each message then run (a record that is
 *    not the file's may give MD_CHANGED, never a crash);
 * 2  an mbox file: its full index, kept by cache_save() and read back by
 *    cache_load(), must be taken and equal (a cache never refuses an
 *    index pop3d made), and a cache with one octet changed (at the
 *    position the input chooses) is refused, or gives the same index.
 */
#include "../maildrop.c"
#include "../cache.c"
#include "../mbox.c"
#include "../journal.c"
#include "../lock.c"
#include "../io.c"

#include "common.h"

struct pop_opts opt;

/* Twins, a pseudo-message, CRLF, an empty body, no final newline. */
#define FZ_MBOX \
	"From MAILER-DAEMON Mon Jan  1 00:00:00 2024\n" \
	"Subject: DON'T DELETE THIS MESSAGE -- FOLDER INTERNAL DATA\n" \
	"X-IMAP: 1 0000000001\n" \
	"\n" \
	"internal\n" \
	"\n" \
	"From a@example.org Mon Jan  1 00:00:00 2024\n" \
	"Subject: one\n" \
	"\n" \
	"body\n" \
	".dot\n" \
	"\n" \
	"From a@example.org Mon Jan  1 00:00:00 2024\n" \
	"Subject: one\n" \
	"\n" \
	"body\n" \
	".dot\n" \
	"\n" \
	"From b@example.org Tue Feb  2 00:00:00 2024\r\n" \
	"Subject: two\r\n" \
	"\r\n" \
	"\r\n" \
	"From c@example.org Wed Mar  3 00:00:00 2024\n" \
	"Subject: three\n" \
	"\n" \
	"no final newline"

#include "logstub.c"

static int
fz_put(void *arg, const char *p, size_t len)
{
	(void)arg;
	(void)p;
	(void)len;
	return 0;
}

static char		 fz_mbox[256], fz_cache[256];
static struct pop_user	 fz_u;

static void
fz_setup(void)
{
	if (fz_mbox[0] != '\0')
		return;
	(void)snprintf(fz_mbox, sizeof(fz_mbox), "%s/mbox", fz_dir());
	(void)snprintf(fz_cache, sizeof(fz_cache), "%s/index", fz_dir());
	opt.locks = POP3_LOCK_FCNTL;
	memset(&fz_u, 0, sizeof(fz_u));
	(void)snprintf(fz_u.name, sizeof(fz_u.name), "fuzz");
	(void)snprintf(fz_u.mailbox, sizeof(fz_u.mailbox), "%s", fz_mbox);
	fz_u.uid = getuid();
	fz_u.gid = getgid();
}

/* Opens the mailbox as written, without a cache: the reference index. */
static int
fz_open(struct maildrop *md, struct cache_id *id)
{
	struct stat	st;

	if (md_open(md, &fz_u) != MD_OK)
		return -1;
	if (md->fd == -1 || fstat(md->fd, &st) == -1) {
		md_close(md);
		return -1;
	}
	cache_ident(id, fz_mbox, fz_u.uid, &st);
	return 0;
}

/* Is the index c that of md, record for record? */
static int
fz_same(const struct maildrop *md, const struct cache_ix *c)
{
	uint32_t	i;

	if (c->n != md->n || c->hidden_end != md->hidden_end)
		return 0;
	for (i = 0; i < c->n; i++)
		if (c->msg[i].from != md->msg[i].from ||
		    c->msg[i].data != md->msg[i].data ||
		    c->msg[i].end != md->msg[i].end ||
		    c->msg[i].size != md->msg[i].size ||
		    c->msg[i].twin != md->msg[i].twin ||
		    memcmp(c->msg[i].hash, md->msg[i].hash, 16) != 0)
			return 0;
	return 1;
}

/* Mode 1: a cache taken is served like an index: nothing out of bounds. */
static void
fz_serve(struct maildrop *md, struct cache_ix *c)
{
	char		 id[POP3_UIDL_MAX + 1], prev[POP3_UIDL_MAX + 1];
	uint32_t	 i, j;
	enum md_res	 r;
	struct stat	 st;

	free(md->msg);
	md->msg = c->msg;
	md->n = c->n;
	md->hidden_end = c->hidden_end;
	c->msg = NULL;
	/* As if the file had been verified (its ctime trusted): the stream
	 * then reads at the records' offsets without checking them first. */
	FZ_CHECK(fstat(md->fd, &st) == 0, "fstat");
	md->vsize = (uint64_t)st.st_size;
	md->vctime = st.st_ctim;
	md->vmtime = st.st_mtim;
	for (i = 0; i < md->n; i++) {
		FZ_CHECK(md->msg[i].end <= md->indexed, "record past the end");
		md_uidl(md, i, id, sizeof(id));
		FZ_CHECK(strlen(id) >= 1 && strlen(id) <= POP3_UIDL_MAX,
		    "UIDL length");
		for (j = 0; j < i; j++) {
			md_uidl(md, j, prev, sizeof(prev));
			FZ_CHECK(strcmp(id, prev) != 0, "UIDL %s twice", id);
		}
		r = md_stream(md, i, -1, fz_put, NULL);
		FZ_CHECK(r == MD_OK || r == MD_CHANGED, "RETR: %d", r);
		r = md_stream(md, i, 1, fz_put, NULL);
		FZ_CHECK(r == MD_OK || r == MD_CHANGED, "TOP: %d", r);
		md->changed = 0;
	}
}

/* Mode 1: the header of d (n octets) made that of id, checksum right. */
static void
fz_forge(unsigned char *d, size_t n, const struct cache_id *id)
{
	struct cache_hdr	h;

	if (n < sizeof(h))
		return;
	memcpy(&h, d, sizeof(h));
	cache_stamp(&h, id);
	h.n = (n - sizeof(h)) / sizeof(struct cache_rec);
	h.hidden_end %= id->size + 1;
	h.sum = cache_filesum(&h, d + sizeof(h), n - sizeof(h));
	memcpy(d, &h, sizeof(h));
}

/* Modes 0 and 1: the input as the cache of the fixed mailbox. */
static void
fz_foreign(const uint8_t *data, size_t size, int forge)
{
	static struct fz_buf	 b;
	static struct maildrop	 md;
	struct cache_id		 id;
	struct cache_ix		 c;
	size_t			 n = size;

	if (forge && size >= sizeof(struct cache_hdr))
		n -= (size - sizeof(struct cache_hdr)) %
		    sizeof(struct cache_rec);
	fz_write_file(fz_mbox, FZ_MBOX, sizeof(FZ_MBOX) - 1);
	FZ_CHECK(fz_open(&md, &id) == 0, "the fixed mailbox does not open");
	b.len = 0;
	fz_buf_add(&b, data, n);
	if (forge)
		fz_forge(b.p, b.len, &id);
	fz_write_file(fz_cache, b.p, b.len);
	if (cache_load(fz_dir(), &id, &c) == 0) {
		if (!forge)
			FZ_CHECK(fz_same(&md, &c), "a cache taken is not the "
			    "index");
		else
			fz_serve(&md, &c);
		free(c.msg);
	}
	md_close(&md);
}

/* Mode 2: the input as a mailbox; its cache round trip. */
static void
fz_roundtrip(const uint8_t *data, size_t size)
{
	static struct fz_buf	 b;
	static struct maildrop	 md;
	struct cache_id		 id;
	struct cache_ix		 c;
	size_t			 at;
	int			 fd;

	fz_write_file(fz_mbox, data, size);
	if (size == 0 || fz_open(&md, &id) == -1)
		return;
	c.msg = md.msg;
	c.n = md.n;
	c.hidden_end = md.hidden_end;
	cache_save(fz_dir(), &id, &c);
	FZ_CHECK(cache_load(fz_dir(), &id, &c) == 0, "a cache pop3d wrote "
	    "is refused");
	FZ_CHECK(fz_same(&md, &c), "a cache read back is not the index");
	free(c.msg);
	/* One octet changed: refused, or (a byte the checks skip) equal. */
	fd = open(fz_cache, O_RDONLY);
	FZ_CHECK(fd != -1, "cache file: %s", strerror(errno));
	fz_slurp(fd, &b);
	(void)close(fd);
	FZ_CHECK(b.len > 0, "an empty cache file");
	/* The seeds of modes 0 and 1 (fuzz/mkseeds.py) are such files. */
	if (getenv("FUZZ_CACHE_OUT") != NULL)
		fz_write_file(getenv("FUZZ_CACHE_OUT"), b.p, b.len);
	at = (size_t)(data[size - 1] * 257 + data[0]) % b.len;
	b.p[at] ^= (unsigned char)(1 + data[size / 2] % 255);
	fz_write_file(fz_cache, b.p, b.len);
	if (cache_load(fz_dir(), &id, &c) == 0) {
		FZ_CHECK(fz_same(&md, &c), "a changed cache taken, not the "
		    "index");
		free(c.msg);
	}
	md_close(&md);
}

int	LLVMFuzzerTestOneInput(const uint8_t *, size_t);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	fz_setup();
	fz_cleandir();
	if (size < 1)
		return 0;
	switch (data[0] % 3) {
	case 0:
		fz_foreign(data + 1, size - 1, 0);
		break;
	case 1:
		fz_foreign(data + 1, size - 1, 1);
		break;
	default:
		fz_roundtrip(data + 1, size - 1);
		break;
	}
	return 0;
}
