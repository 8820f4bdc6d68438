/*
 * journal.c: the journaled UPDATE of the maildrop (journal.h): the journal
 * format, the plan of the moves, compaction in place, progress records,
 * repair of an interrupted update.  Given the open mailbox (struct
 * jnl_box), the extents to keep and a keep-alive by maildrop.c, which
 * holds the spool locks: never locks, and makes every write-like call
 * through io.c.  Runs only as the user.
 *
 * Update.  Journaled and in place (the inode stays: an MDA that opened the
 * mailbox before we locked it must not append to a file that is gone).
 * See jnl_compact() and jnl_repair() for the journal protocol.
 */

#include <sys/random.h>
#include <sys/stat.h>
#include <sys/types.h>

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <syslog.h>
#include <time.h>
#include <unistd.h>

#include <nettle/sha2.h>
#include <nettle/umac.h>

#include "io.h"
#include "journal.h"

/*
 * The journal, SPOOLDIR/.USER.pop3d-journal (the protocol: jnl_compact()).
 * Numbers are little-endian, 64 bits.
 *   [0, JNL_HDR)	the header: magic, dev, ino, D, F, N, L, X, J, then
 *			SHA-256 of the mailbox octets [D+N, F) (cut away by
 *			the truncate) and of the extent table, the digest
 *			of the journaled octets (jnl_dg), the first
 *			JNL_MARK octets at D+N (fewer if L is less: zeros
 *			after them), and SHA-256 of all before it.  Written
 *			with the rest and made durable by the same fsync:
 *			a journal whose table or data do not match their
 *			digests was never complete on disk, so the mailbox
 *			was never touched (the fsync comes before the
 *			first change of the mailbox).
 *   JNL_SLOT(0, 1)	two progress records, each in a block of its own:
 *			magic, sequence number, P, the first 16 octets of
 *			the header's digest, SHA-256 of all before it.  The
 *			valid one with the larger number counts (a torn
 *			write spoils one slot only); none: P = 0.  P = X+1:
 *			the moves and the mark are durable, the truncate
 *			may have begun (jnl_marked()).
 *   JNL_TAB		the extent table: X records of s, d, len, joff.
 *   jnl_data(X)	the octets of the journaled extents, J in all (then
 *			zeros up to a whole block).
 */
#define JNL_MAGIC	"POP3DJ5\n"
/* The previous pop3d's, and this one's when it has no key for jnl_dg:
 * the same, with SHA-256 as the digest of the journaled octets. */
#define JNL_MAGIC4	"POP3DJ4\n"
/* An older one's: no mark, no P = X+1 (the repair tells before the
 * truncate from after it by the digest of [D+N, F) alone). */
#define JNL_MAGIC3	"POP3DJ3\n"
/* An older one's: no digest of the journaled octets either, which it
 * made durable before it wrote the header.  Both applied as they were. */
#define JNL_MAGIC2	"POP3DJ2\n"
#define JNL_MAGIC1	"POP3DJ1\n"	/* an older pop3d's: left alone */
#define JNL_PMAGIC	"POP3DP2\n"
/*
 * The mark: before the truncate, the first octets of [D+N, F) are
 * overwritten with a NUL and the header's digest, which no delivery
 * begins with (an MDA writes a From_ line), so that a repair tells the
 * cut octets from mail delivered after the truncate even when that mail
 * is the same octets again.
 */
#define JNL_MARK	16
#define JNL_HDR		(8 + 8 * 8 + 4 * 32 + JNL_MARK)
#define JNL_HDR3	(8 + 8 * 8 + 4 * 32)
#define JNL_HDR2	(8 + 8 * 8 + 3 * 32)
#define JNL_HDR1	(8 + 6 * 8 + 2 * 32)
#define JNL_BLK		4096
#define JNL_SLOT(i)	((uint64_t)JNL_BLK * (1 + (i)))
#define JNL_SLOTLEN	(8 + 2 * 8 + 16 + 32)
#define JNL_TAB		((uint64_t)JNL_BLK * 3)
#define JNL_REC		32
/* joff of an extent moved within the mailbox, not through the journal. */
#define JNL_NONE	UINT64_MAX
/* Extents of a journal: one per run of kept messages, and the appended
 * mail (adjacent ones merged), so at most one more than the messages. */
#define JNL_EXT_MAX	((uint64_t)MD_MAX_MESSAGES + 1)
/*
 * Extents shifted by less than this go through the journal even when
 * their move does not overwrite their own source.  A progress record
 * frees the sources of about a shift's worth of octets before the
 * destination, and costs two flushes (milliseconds each, tens on a
 * disk that seeks); journaling costs about a millisecond per MB.  With
 * every 10th message deleted the shift is a tenth of the offset: for
 * 350 MB, 4 MiB means 40 MB journaled and 16 records (1 MiB: 16 MB and
 * 28 records).
 */
#define JNL_SHIFT	(4 * 1024 * 1024)
/* The moves start writeback every so many octets: the flushes of the
 * progress records and the last one then find most of it done. */
#define JNL_WBACK	(8 * 1024 * 1024)

struct jnl_hdr {
	uint64_t	 dev, ino;
	uint64_t	 d;		/* first octet rewritten */
	uint64_t	 f;		/* mailbox size when journaled */
	uint64_t	 n;		/* new tail: the new size is d + n */
	uint64_t	 l;		/* f - d - n: octets removed */
	uint64_t	 x;		/* extents in the table */
	uint64_t	 j;		/* octets of extents in the journal */
	unsigned char	 hc[32];	/* SHA-256 of mailbox [d + n, f) */
	unsigned char	 ht[32];	/* SHA-256 of the extent table */
	unsigned char	 hd[32];	/* digest of the journaled octets */
	unsigned char	 hm[JNL_MARK];	/* mailbox [d + n, d + n + JNL_MARK) */
	unsigned char	 hh[32];	/* SHA-256 of the header before it */
	int		 ver;		/* 5, or 4 (jnl_dg); 3, 2: older */
};

/* A journal being applied. */
struct jnl_state {
	int		 fd;
	struct jnl_hdr	 h;
	struct jnl_ext	*ext;		/* h.x extents */
	uint64_t	 p;		/* extents before it are done, on disk */
	uint64_t	 seq;		/* of the last progress record */
};

/* One block for reading and copying. */
static unsigned char	jnl_blk[MD_BLOCK] __attribute__((aligned(JNL_BLK)));

#if defined(POP3D_FAULT) || defined(POP3D_UNIT)
/* Test builds: POP3D_JSHIFT=OCTETS replaces JNL_SHIFT (0: only extents
 * that would overwrite their own source go through the journal), so that
 * small mailboxes need progress records. */
static uint64_t
jnl_shift_min(void)
{
	const char		*s = getenv("POP3D_JSHIFT");
	char			*end;
	unsigned long long	 v;

	if (s == NULL || *s < '0' || *s > '9')
		return JNL_SHIFT;
	errno = 0;
	v = strtoull(s, &end, 10);
	if (errno != 0 || *end != '\0')
		return JNL_SHIFT;
	return v;
}
#define JNL_SHIFT_NOW()	jnl_shift_min()
/* POP3D_JLOSE=1: a journal given up (jnl_compact()) keeps its name, as
 * when a crash loses its unlink. */
#define JNL_GIVEUP_UNLINK(p)	(getenv("POP3D_JLOSE") != NULL ? 0 : \
				    io_unlink(p))
#else
#define JNL_SHIFT_NOW()	JNL_SHIFT
#define JNL_GIVEUP_UNLINK(p)	io_unlink(p)
#endif

/* Starts writing [off, off + len) of fd back to disk without waiting, so
 * that the io_fdatasync() which makes it durable has less left to do. */
static void
jnl_writeback(int fd, uint64_t off, uint64_t len)
{
	(void)sync_file_range(fd, (off_t)off, (off_t)len,
	    SYNC_FILE_RANGE_WRITE);
}

/* The journal path: ".BASENAME.pop3d-journal" next to the mailbox. */
static int
jnl_path(const struct jnl_box *box, char *buf, size_t size)
{
	static const char	 sfx[] = ".pop3d-journal";
	const char		*slash = strrchr(box->path, '/');
	size_t			 dir, len;

	dir = slash == NULL ? 0 : (size_t)(slash - box->path) + 1;
	len = strlen(box->path + dir);
	if (dir + 1 + len + sizeof(sfx) > size)
		return -1;
	memcpy(buf, box->path, dir);
	buf[dir] = '.';
	memcpy(buf + dir + 1, box->path + dir, len);
	memcpy(buf + dir + 1 + len, sfx, sizeof(sfx));
	return 0;
}

/* The temporary name a journal is written under: JPATH.tmp. */
static int
jnl_tmp(const char *jpath, char *buf, size_t size)
{
	return snprintf(buf, size, "%s.tmp", jpath) >= (int)size ? -1 : 0;
}

/*
 * The spare journal: JPATH.tmp made empty by jnl_prepare() before the
 * user's sandbox, which lets no file made after it be written; each
 * journal is written there and renamed to JPATH.  path[0] 0: none.
 */
static char	jnl_spare[MD_PATH + 8];

/*
 * The spare journal at path opened (made if missing; flags: more open(2)
 * flags) and emptied, only if it is a regular file of uid with one link:
 * never another's file.  Its descriptor, or -1 (errno EPERM if refused).
 */
static int
jnl_open_spare(const char *path, uid_t uid, int flags)
{
	struct stat	st;
	int		fd;

	fd = open(path, O_RDWR | O_CREAT | O_NOFOLLOW | O_CLOEXEC | flags,
	    0600);
	if (fd != -1 && (fstat(fd, &st) == -1 || !S_ISREG(st.st_mode) ||
	    st.st_uid != uid || st.st_nlink != 1 ||
	    (st.st_size > 0 && io_ftruncate(fd, 0) == -1))) {
		(void)close(fd);
		fd = -1;
		errno = EPERM;
	}
	return fd;
}

/*
 * The journal.
 */

static void
jnl_le64(unsigned char *p, uint64_t v)
{
	int	i;

	for (i = 0; i < 8; i++)
		p[i] = (unsigned char)(v >> (8 * i));
}

static uint64_t
jnl_get64(const unsigned char *p)
{
	uint64_t	v = 0;
	int		i;

	for (i = 7; i >= 0; i--)
		v = v << 8 | p[i];
	return v;
}

static void
jnl_sha(const void *p, size_t n, unsigned char *out)
{
	struct sha256_ctx	ctx;

	sha256_init(&ctx);
	sha256_update(&ctx, n, p);
	sha256_digest(&ctx, 32, out);
}

/*
 * The digest of the journaled octets (the header's hd), by which a repair
 * tells a journal whose octets reached the disk from one that a crash tore
 * before its fsync returned (jnl_write(), jnl_complete()).  POP3DJ5:
 * UMAC-128 (RFC 4418) under a key drawn with getrandom(2) for this
 * journal alone, hd = the key, then the tag: 3.6 GB/s here against
 * SHA-256's 1.1, so that the hash thread ends before the journal's writes
 * do (BENCH.md, "Expunge on S").  A keyed universal hash is enough for
 * that: the octets (mail a sender chose) and whatever a torn write leaves
 * in their place (zeros, a freed block's old octets) are fixed before the
 * key is drawn, and two different strings get the same tag with a
 * probability of about 2^-120 (2^-30 per 32 bits of tag); no sender sees
 * the key, in the user's journal of mode 0600 (and the user can write the
 * mailbox anyway).  The nonce is fixed: each key tags one string.
 * SHA-256 (key NULL) for the previous pop3d's POP3DJ4 and POP3DJ3, for
 * the other digests, and when getrandom(2) fails (POP3DJ4 is written).
 */
struct jnl_dg {
	int			umac;
	unsigned char		key[UMAC_KEY_SIZE];
	struct sha256_ctx	sha;
	struct umac128_ctx	um;
};

static void
jnl_dg_init(struct jnl_dg *g, const unsigned char *key)
{
	static const unsigned char	nonce[UMAC_MAX_NONCE_SIZE];

	g->umac = key != NULL;
	if (!g->umac) {
		sha256_init(&g->sha);
		return;
	}
	memcpy(g->key, key, sizeof(g->key));
	umac128_set_key(&g->um, g->key);
	umac128_set_nonce(&g->um, sizeof(nonce), nonce);
}

static void
jnl_dg_update(struct jnl_dg *g, size_t n, const unsigned char *p)
{
	if (g->umac)
		umac128_update(&g->um, n, p);
	else
		sha256_update(&g->sha, n, p);
}

/* A key for jnl_dg into key (UMAC_KEY_SIZE octets): 0, or -1 when there
 * is none now (the pool not ready, or a test build's POP3D_NOKEY). */
static int
jnl_key(unsigned char *key)
{
#if defined(POP3D_FAULT) || defined(POP3D_UNIT)
	if (getenv("POP3D_NOKEY") != NULL)
		return -1;
#endif
	return getrandom(key, UMAC_KEY_SIZE, GRND_NONBLOCK) ==
	    (ssize_t)UMAC_KEY_SIZE ? 0 : -1;
}

/* The digest (32 octets): SHA-256's, or the key and the tag. */
static void
jnl_dg_out(struct jnl_dg *g, unsigned char *out)
{
	if (!g->umac) {
		sha256_digest(&g->sha, 32, out);
		return;
	}
	memcpy(out, g->key, UMAC_KEY_SIZE);
	umac128_digest(&g->um, UMAC128_DIGEST_SIZE, out + UMAC_KEY_SIZE);
}

/* Where the journaled octets start: after a table of x extents. */
static uint64_t
jnl_data(uint64_t x)
{
	return (JNL_TAB + x * JNL_REC + JNL_BLK - 1) & ~(uint64_t)(JNL_BLK - 1);
}

/* Encodes h into p (JNL_HDR octets) and sets h->hh. */
static void
jnl_encode(struct jnl_hdr *h, unsigned char *p)
{
	memcpy(p, h->ver == 5 ? JNL_MAGIC : JNL_MAGIC4, 8);
	jnl_le64(p + 8, h->dev);
	jnl_le64(p + 16, h->ino);
	jnl_le64(p + 24, h->d);
	jnl_le64(p + 32, h->f);
	jnl_le64(p + 40, h->n);
	jnl_le64(p + 48, h->l);
	jnl_le64(p + 56, h->x);
	jnl_le64(p + 64, h->j);
	memcpy(p + 72, h->hc, 32);
	memcpy(p + 104, h->ht, 32);
	memcpy(p + 136, h->hd, 32);
	memcpy(p + 168, h->hm, JNL_MARK);
	jnl_sha(p, JNL_HDR - 32, h->hh);
	memcpy(p + JNL_HDR - 32, h->hh, 32);
}

/*
 * Decodes the header of got octets at p: 0, -1 if it is not a valid one,
 * 1 if it is a valid header of an older pop3d's journal (magic POP3DJ1,
 * 88 octets and their SHA-256) or has a later pop3d's magic.  h->ver is
 * 5, or 4 (the same with SHA-256 as hd), or for the older pop3ds'
 * headers 3 (no hm) or 2 (no hd either).
 */
static int
jnl_decode(const unsigned char *p, size_t got, struct jnl_hdr *h)
{
	unsigned char	dg[32];
	size_t		len;

	if (got >= JNL_HDR1 && memcmp(p, JNL_MAGIC1, 8) == 0) {
		jnl_sha(p, JNL_HDR1 - 32, dg);
		return memcmp(dg, p + JNL_HDR1 - 32, 32) == 0 ? 1 : -1;
	}
	if (got < 8)
		return -1;
	h->ver = memcmp(p, JNL_MAGIC, 8) == 0 ? 5 :
	    memcmp(p, JNL_MAGIC4, 8) == 0 ? 4 :
	    memcmp(p, JNL_MAGIC3, 8) == 0 ? 3 :
	    memcmp(p, JNL_MAGIC2, 8) == 0 ? 2 : 0;
	/* A later pop3d's format (POP3DJ, a version, LF): not ours to
	 * judge, nor to remove (it may have begun the update). */
	if (h->ver == 0 && memcmp(p, JNL_MAGIC, 6) == 0 && p[7] == '\n')
		return 1;
	len = h->ver >= 4 ? JNL_HDR : h->ver == 3 ? JNL_HDR3 : JNL_HDR2;
	if (h->ver == 0 || got < len)
		return -1;
	jnl_sha(p, len - 32, dg);
	if (memcmp(dg, p + len - 32, 32) != 0)
		return -1;
	h->dev = jnl_get64(p + 8);
	h->ino = jnl_get64(p + 16);
	h->d = jnl_get64(p + 24);
	h->f = jnl_get64(p + 32);
	h->n = jnl_get64(p + 40);
	h->l = jnl_get64(p + 48);
	h->x = jnl_get64(p + 56);
	h->j = jnl_get64(p + 64);
	memcpy(h->hc, p + 72, 32);
	memcpy(h->ht, p + 104, 32);
	if (h->ver >= 3)
		memcpy(h->hd, p + 136, 32);
	if (h->ver >= 4)
		memcpy(h->hm, p + 168, JNL_MARK);
	memcpy(h->hh, dg, 32);
	if (h->d > h->f || h->n > h->f - h->d || h->l != h->f - h->d - h->n ||
	    h->x > JNL_EXT_MAX || h->j > h->n)
		return -1;
	return 0;
}

/* The length of the mark of h: JNL_MARK octets, fewer if fewer are cut. */
static size_t
jnl_markl(const struct jnl_hdr *h)
{
	return h->l < JNL_MARK ? (size_t)h->l : JNL_MARK;
}

/* The mark of h (jnl_markl() octets) into p: a NUL, then the header's
 * digest. */
static void
jnl_mark(const struct jnl_hdr *h, unsigned char *p)
{
	p[0] = '\0';
	memcpy(p + 1, h->hh, JNL_MARK - 1);
}

/*
 * Copies [off, off + len) of src to dst at doff (dst -1: only digests into
 * ctx).  A plain copy goes through copy_file_range(2): one copy in the
 * kernel, none through user space; read and write where it cannot.  The
 * two ranges never overlap when src and dst are the same file.
 */
static int
jnl_copy(int src, uint64_t off, uint64_t len, int dst, uint64_t doff,
    struct jnl_dg *ctx, void (*alive)(void))
{
	static int	nocfr;
	size_t		n;
	ssize_t		r;

	while (len > 0 && ctx == NULL && dst != -1 && !nocfr) {
		n = len > MD_BLOCK * 16 ? MD_BLOCK * 16 : (size_t)len;
		if ((r = io_copy_range(src, &off, dst, &doff, n)) == -1) {
			if (errno == EINTR)
				continue;
			if (errno != EXDEV && errno != ENOSYS &&
			    errno != EOPNOTSUPP && errno != EINVAL)
				return -1;
			nocfr = 1;
			break;
		}
		if (r == 0) {
			errno = EIO;	/* the source is shorter */
			return -1;
		}
		len -= (uint64_t)r;
		alive();
	}
	while (len > 0) {
		n = len > MD_BLOCK ? MD_BLOCK : (size_t)len;
		if (io_pread_exact(src, jnl_blk, n, off) == -1)
			return -1;
		if (ctx != NULL)
			jnl_dg_update(ctx, n, jnl_blk);
		if (dst != -1 && io_pwrite(dst, jnl_blk, n, doff) == -1)
			return -1;
		off += n;
		doff += n;
		len -= n;
		alive();
	}
	return 0;
}

/*
 * Moves len octets of fd from s down to d < s, where the two ranges
 * overlap: forward, a block at a time, each read before it is written
 * over (copy_file_range(2) refuses overlapping ranges).
 */
static int
jnl_shift(int fd, uint64_t s, uint64_t d, uint64_t len, void (*alive)(void))
{
	size_t	n;

	while (len > 0) {
		n = len > MD_BLOCK ? MD_BLOCK : (size_t)len;
		if (io_pread_exact(fd, jnl_blk, n, s) == -1 ||
		    io_pwrite(fd, jnl_blk, n, d) == -1)
			return -1;
		s += n;
		d += n;
		len -= n;
		alive();
	}
	return 0;
}

/* The digest (jnl_dg, under key) of [off, off + len) of fd into dg. */
static int
jnl_hashrange(int fd, uint64_t off, uint64_t len, const unsigned char *key,
    unsigned char *dg, void (*alive)(void))
{
	struct jnl_dg	ctx;

	jnl_dg_init(&ctx, key);
	if (jnl_copy(fd, off, len, -1, 0, &ctx, alive) == -1)
		return -1;
	jnl_dg_out(&ctx, dg);
	return 0;
}

/* The digests of a journal's header, in a thread of its own while the
 * journal is written (see jnl_write()). */
struct jnl_hjob {
	int			 fd;
	uint64_t		 off, len;	/* the cut octets */
	const struct jnl_ext	*ext;		/* x extents */
	uint64_t		 x;
	const unsigned char	*key;		/* of hd (jnl_dg), or NULL */
	unsigned char		 dg[32];	/* of the cut octets: hc */
	unsigned char		 dd[32];	/* of the journaled ones: hd */
	int			 err;		/* 0, or the errno of a failure */
};

/* Digests [off, off + len) of fd into ctx through buf (MD_BLOCK). */
static int
jnl_hjob_range(int fd, uint64_t off, uint64_t len, unsigned char *buf,
    struct jnl_dg *ctx)
{
	size_t	n;

	for (; len > 0; off += n, len -= n) {
		n = len > MD_BLOCK ? MD_BLOCK : (size_t)len;
		if (io_pread_exact(fd, buf, n, off) == -1)
			return -1;
		jnl_dg_update(ctx, n, buf);
	}
	return 0;
}

static void *
jnl_hjob_run(void *arg)
{
	struct jnl_hjob		*h = arg;
	struct jnl_dg		 ctx;
	unsigned char		*buf;
	uint64_t		 i;

	h->err = 0;
	/* A block of its own: jnl_blk is the other thread's. */
	if ((buf = malloc(MD_BLOCK)) == NULL) {
		h->err = errno;
		return NULL;
	}
	jnl_dg_init(&ctx, NULL);
	if (jnl_hjob_range(h->fd, h->off, h->len, buf, &ctx) == -1)
		h->err = errno;
	jnl_dg_out(&ctx, h->dg);
	/* The journaled octets as jnl_wdata() writes them: the sources of
	 * the journaled extents, in order. */
	jnl_dg_init(&ctx, h->key);
	for (i = 0; i < h->x && h->err == 0; i++)
		if (h->ext[i].joff != JNL_NONE && jnl_hjob_range(h->fd,
		    h->ext[i].s, h->ext[i].len, buf, &ctx) == -1)
			h->err = errno;
	jnl_dg_out(&ctx, h->dd);
	free(buf);
	return NULL;
}

/*
 * The digests of the cut and the journaled octets of js (key: jnl_dg's)
 * into *hj: in a thread *th of their own, on the other CPU while the
 * journal is written (SHA-256 of the cut at 1.1 GB/s here: 30 ms for a
 * tenth of 350 MB), when there are enough octets and the thread starts
 * (1); else (0) the caller runs jnl_hjob_run() after the writes.
 */
static int
jnl_hjob_start(const struct jnl_box *box, const struct jnl_state *js,
    const unsigned char *key, struct jnl_hjob *hj, pthread_t *th)
{
	sigset_t	all, old;
	int		threaded = 0;

	hj->fd = box->fd;
	hj->off = js->h.d + js->h.n;
	hj->len = js->h.l;
	hj->ext = js->ext;
	hj->x = js->h.x;
	hj->key = key;
	(void)sigfillset(&all);
	if (hj->len + js->h.j >= MD_BLOCK &&
	    pthread_sigmask(SIG_SETMASK, &all, &old) == 0) {
		threaded = pthread_create(th, NULL, jnl_hjob_run, hj) == 0;
		(void)pthread_sigmask(SIG_SETMASK, &old, NULL);
	}
	return threaded;
}

/*
 * A journal given up at its rename or after it, before its name was
 * durable (the directory's fsync failed, or the rename said it failed,
 * which may have done its work, as NFS's can when its reply is lost):
 * its magic zeroed and synced before it is unlinked, so that a crash that
 * loses the unlink, or the name the rename gave it, leaves a file no
 * repair applies (jnl_decode(): not a header; removed as never applied),
 * not the complete journal of an update answered -ERR.
 */
static int
jnl_spoil(int fd, const char *path)
{
	static const unsigned char	zero[8];
	int				w;

	/* The sync even after a write that said it failed (it may have
	 * done its work). */
	w = io_pwrite(fd, zero, sizeof(zero), 0);
	if (io_fdatasync(fd) == 0 && w == 0)
		return 0;
	pop_log(LOG_ERR, "cannot spoil journal %s: %s (its removal is "
	    "synced instead)", path, strerror(errno));
	return -1;
}

/* The journal given up by jnl_compact(), of descriptor fd: spoiled,
 * closed and removed under the name it has (moved: the rename said it
 * was done; when it said it failed and TPATH is gone, it did its work);
 * if the spoil failed, the removal synced (DIR: the spool's path). */
static void
jnl_giveup(int fd, const char *jpath, const char *tpath, int moved,
    const char *dir)
{
	const char	*path = moved ? jpath : tpath;
	int		 r, spoiled;

	spoiled = jnl_spoil(fd, path) == 0;
	(void)close(fd);
	if ((r = JNL_GIVEUP_UNLINK(path)) == -1 && !moved && errno == ENOENT)
		r = JNL_GIVEUP_UNLINK(path = jpath);
	if (r == -1)
		pop_log(LOG_ERR, "cannot remove %s: %s", path, strerror(errno));
	else if (!spoiled && io_fsyncdir(dir) == -1)
		pop_log(LOG_ERR, "journal %s: %s (if a crash loses its "
		    "removal, the next session completes the update)", path,
		    strerror(errno));
}

/* Keeps a journal we must not apply or remove, under another name. */
static void
jnl_aside(const char *jpath)
{
	char	aside[MD_PATH + 32];
	int	r;

	r = snprintf(aside, sizeof(aside), "%s.%lld", jpath,
	    (long long)time(NULL));
	if (r < 0 || (size_t)r >= sizeof(aside) ||
	    io_rename(jpath, aside) == -1)
		pop_log(LOG_ERR, "cannot rename %s aside: %s", jpath,
		    strerror(errno));
	else
		pop_log(LOG_ERR, "kept the journal as %s", aside);
}

/* Writes the extent table at JNL_TAB; its digest into ht. */
static int
jnl_wtab(int jfd, const struct jnl_ext *ext, uint64_t x, unsigned char *ht)
{
	struct sha256_ctx	ctx;
	uint64_t		i, off = JNL_TAB;
	size_t			n = 0;

	sha256_init(&ctx);
	for (i = 0; i < x; i++) {
		jnl_le64(jnl_blk + n, ext[i].s);
		jnl_le64(jnl_blk + n + 8, ext[i].d);
		jnl_le64(jnl_blk + n + 16, ext[i].len);
		jnl_le64(jnl_blk + n + 24, ext[i].joff);
		n += JNL_REC;
		if (n == MD_BLOCK || i + 1 == x) {
			sha256_update(&ctx, n, jnl_blk);
			if (io_pwrite(jfd, jnl_blk, n, off) == -1)
				return -1;
			off += n;
			n = 0;
		}
	}
	sha256_digest(&ctx, 32, ht);
	return 0;
}

/*
 * Reads the extent table of h into *out and checks it against its digest
 * and the rules jnl_plan() made it by: destinations back to back from D
 * to D+N, sources in order, not before their destination and not past
 * F, an extent moved within the mailbox never overlapping its own source,
 * journaled octets back to back from jnl_data(X), J of them.  0; -1 on a
 * read error (errno); 2 if it is short or does not match its digest (not
 * complete on disk), 1 if it does but breaks the rules.
 */
static int
jnl_rtab(int jfd, const struct jnl_hdr *h, struct jnl_ext **out)
{
	struct sha256_ctx	 ctx;
	struct jnl_ext		*ext, *e;
	unsigned char		 dg[32];
	/* cppcheck-suppress duplicateAssignExpression ; two cursors at D */
	uint64_t		 i, d = h->d, s = h->d, pos, left;
	size_t			 n, k;
	ssize_t			 r;

	*out = NULL;
	if ((ext = reallocarray(NULL, h->x > 0 ? h->x : 1,
	    sizeof(*ext))) == NULL)
		return -1;
	sha256_init(&ctx);
	for (i = 0, left = h->x * JNL_REC; left > 0; left -= n) {
		n = left > MD_BLOCK ? MD_BLOCK : (size_t)left;
		if ((r = io_pread(jfd, jnl_blk, n, JNL_TAB + i * JNL_REC)) !=
		    (ssize_t)n) {
			free(ext);
			return r == -1 ? -1 : 2;
		}
		sha256_update(&ctx, n, jnl_blk);
		for (k = 0; k < n; k += JNL_REC, i++) {
			ext[i].s = jnl_get64(jnl_blk + k);
			ext[i].d = jnl_get64(jnl_blk + k + 8);
			ext[i].len = jnl_get64(jnl_blk + k + 16);
			ext[i].joff = jnl_get64(jnl_blk + k + 24);
		}
	}
	sha256_digest(&ctx, 32, dg);
	if (memcmp(dg, h->ht, 32) != 0) {
		free(ext);
		return 2;
	}
	pos = jnl_data(h->x);
	for (i = 0; i < h->x; i++) {
		e = &ext[i];
		if (e->d != d || e->s < s || e->s < d || e->s > h->f ||
		    e->len == 0 || e->len > h->f - e->s)
			break;
		if (e->joff == JNL_NONE) {
			if (e->s - e->d < e->len)
				break;
		} else if (e->joff != pos)
			break;
		else
			pos += e->len;
		d += e->len;
		s = e->s + e->len;
	}
	if (i < h->x || d != h->d + h->n || pos - jnl_data(h->x) != h->j) {
		free(ext);
		return 1;
	}
	*out = ext;
	return 0;
}

/*
 * The progress of js->h from its records: js->p, js->seq.  0, or -1 on a
 * read error (a record we cannot read may be the one that counts).
 */
static int
jnl_slots(struct jnl_state *js)
{
	unsigned char	b[JNL_SLOTLEN], dg[32];
	uint64_t	seq, p;
	ssize_t		r;
	int		i, found = 0;

	js->p = js->seq = 0;
	for (i = 0; i < 2; i++) {
		if ((r = io_pread(js->fd, b, sizeof(b), JNL_SLOT(i))) == -1)
			return -1;
		if (r != (ssize_t)sizeof(b) || memcmp(b, JNL_PMAGIC, 8) != 0 ||
		    memcmp(b + 24, js->h.hh, 16) != 0)
			continue;
		jnl_sha(b, 40, dg);
		seq = jnl_get64(b + 8);
		p = jnl_get64(b + 16);
		if (memcmp(dg, b + 40, 32) != 0 ||
		    p > js->h.x + (js->h.ver >= 4) ||
		    (found && seq <= js->seq))
			continue;
		found = 1;
		js->seq = seq;
		js->p = p;
	}
	return 0;
}

/*
 * A progress record: extents before p are done.  The mailbox is fsynced
 * first, the journal after: the record is on disk only once they are.
 * The slot of the record before it stays as it was.  Both syncs guard the
 * sources the next move overwrites (jnl_moves()): without the first, a
 * crash could keep the record and lose moves it counts as done, whose
 * sources are then gone; without the second, the overwrite could reach
 * the disk before the record, and a repair from the record before would
 * copy those extents from sources already overwritten.  Neither can cover
 * the other's file, and the record cannot be written before the mailbox
 * is durable, so no sync covers a record and the move after it.
 */
static int
jnl_progress(const struct jnl_box *box, struct jnl_state *js, uint64_t p)
{
	unsigned char	b[JNL_SLOTLEN];

	memcpy(b, JNL_PMAGIC, 8);
	jnl_le64(b + 8, js->seq + 1);
	jnl_le64(b + 16, p);
	memcpy(b + 24, js->h.hh, 16);
	jnl_sha(b, 40, b + 40);
	if (io_fdatasync(box->fd) == -1 ||
	    io_pwrite(js->fd, b, sizeof(b), JNL_SLOT((js->seq + 1) & 1)) ==
	    -1 || io_fdatasync(js->fd) == -1)
		return -1;
	js->seq++;
	js->p = p;
	return 0;
}

/*
 * Plans the moves of js->ext[0..h.x) (s and len set; destinations back
 * to back from h.d): sets each d and joff, and h.n, h.l, h.j.  An extent
 * goes through the journal when its move would overwrite its own source
 * (a shift below its length) or its shift is below JNL_SHIFT.
 */
static void
jnl_plan(struct jnl_state *js, uint64_t jshift)
{
	struct jnl_ext	*e;
	uint64_t	 i, d = js->h.d, pos = jnl_data(js->h.x);

	for (i = 0; i < js->h.x; i++) {
		e = &js->ext[i];
		e->d = d;
		if (e->s - d < e->len || e->s - d < jshift) {
			e->joff = pos;
			pos += e->len;
		} else
			e->joff = JNL_NONE;
		d += e->len;
	}
	js->h.n = d - js->h.d;
	js->h.l = js->h.f - d;
	js->h.j = pos - jnl_data(js->h.x);
}

/* Writes jnl_blk[0, fill) at *pos of the journal (see jnl_wdata()). */
static int
jnl_wblk(int jfd, int *direct, int flags, uint64_t *pos, size_t fill)
{
	size_t	n = fill;

	if (*direct) {
		/* Whole blocks: the padding is past the J octets. */
		n = (fill + JNL_BLK - 1) & ~(size_t)(JNL_BLK - 1);
		memset(jnl_blk + fill, 0, n - fill);
		if (io_pwrite(jfd, jnl_blk, n, *pos) == -1) {
			if (errno != EINVAL || *direct != 1)
				return -1;
			/* Refused at the first write: no direct I/O here. */
			if (fcntl(jfd, F_SETFL, flags) == -1)
				return -1;
			*direct = 0;
			n = fill;
		} else
			*direct = 2;
	}
	if (!*direct && io_pwrite(jfd, jnl_blk, n, *pos) == -1)
		return -1;
	*pos += fill;
	return 0;
}

/*
 * Writes the octets of the journaled extents of js to jfd, back to back
 * from jnl_data(X), with O_DIRECT where the file system allows it: only a
 * repair reads them, so they need not be copied into the page cache, nor
 * its pages dropped when the journal is removed (with 350 MB journaled,
 * and the moves copied from the mailbox rather than read back from the
 * journal, the update took a third less time).
 */
static int
jnl_wdata(const struct jnl_box *box, int jfd, const struct jnl_state *js)
{
	const struct jnl_ext	*e;
	uint64_t		 i, off, left, pos = jnl_data(js->h.x);
	size_t			 fill = 0, n;
	int			 flags, direct;

	if (js->h.j == 0)
		return 0;
	if ((flags = fcntl(jfd, F_GETFL)) == -1)
		return -1;
	direct = fcntl(jfd, F_SETFL, flags | O_DIRECT) == 0;
	for (i = 0; i < js->h.x; i++) {
		e = &js->ext[i];
		if (e->joff == JNL_NONE)
			continue;
		for (off = e->s, left = e->len; left > 0; left -= n) {
			n = left > MD_BLOCK - fill ? MD_BLOCK - fill :
			    (size_t)left;
			if (io_pread_exact(box->fd, jnl_blk + fill, n, off) == -1)
				return -1;
			fill += n;
			off += n;
			if (fill == MD_BLOCK) {
				if (jnl_wblk(jfd, &direct, flags, &pos,
				    fill) == -1)
					return -1;
				fill = 0;
			}
			box->alive();
		}
	}
	if (fill > 0 && jnl_wblk(jfd, &direct, flags, &pos, fill) == -1)
		return -1;
	if (direct && fcntl(jfd, F_SETFL, flags) == -1)
		return -1;
	if (!direct)
		jnl_writeback(jfd, jnl_data(js->h.x), js->h.j);
	return 0;
}

/* h->hm: what the mark will overwrite (no move writes there), which a
 * repair that finds the mark before the record P = X+1 puts back. */
static int
jnl_cuthead(const struct jnl_box *box, struct jnl_hdr *h)
{
	memset(h->hm, 0, JNL_MARK);
	return io_pread_exact(box->fd, h->hm, jnl_markl(h), h->d + h->n);
}

/*
 * Writes the journal of js (header fields, table planned) to path, the
 * temporary name (the spare of jnl_prepare(), emptied, or made now): the
 * journaled extents' octets, the table, the header with their digests,
 * one fsync.  The caller renames it to JPATH only then.  js->fd is then
 * the open journal, with no progress.  0, or -1 (nothing left behind).
 */
static int
jnl_write(const struct jnl_box *box, const char *path, struct jnl_state *js)
{
	unsigned char		 hdr[JNL_HDR];
	struct jnl_hjob		 hj;
	unsigned char		 key[UMAC_KEY_SIZE];
	pthread_t		 th;
	int			 jfd, e2, r, threaded;

	/* Not O_EXCL: the spare is there. */
	if ((jfd = jnl_open_spare(path, box->uid, 0)) == -1) {
		pop_log(LOG_ERR, "cannot create journal %s: %s%s", path,
		    strerror(errno), errno == EACCES ? " (nothing deleted; "
		    "the user needs write access to the spool directory, "
		    "or, in the sandbox, a repair at login used the spare "
		    "journal: the next session can update)" : "");
		return -1;
	}
	/* A key of this journal's own (jnl_dg); without one, POP3DJ4. */
	js->h.ver = jnl_key(key) == 0 ? 5 : 4;
	threaded = jnl_hjob_start(box, js, js->h.ver == 5 ? key : NULL, &hj,
	    &th);
	r = jnl_wdata(box, jfd, js) == -1 ||
	    jnl_wtab(jfd, js->ext, js->h.x, js->h.ht) == -1 ? -1 : 0;
	e2 = errno;
	if (threaded && pthread_join(th, NULL) != 0)
		fatalx("pthread_join failed");
	if (r == -1) {
		errno = e2;
		goto fail;
	}
	if (!threaded)
		(void)jnl_hjob_run(&hj);
	if (hj.err != 0) {
		errno = hj.err;
		goto fail;
	}
	memcpy(js->h.hc, hj.dg, 32);
	memcpy(js->h.hd, hj.dd, 32);
	if (jnl_cuthead(box, &js->h) == -1)
		goto fail;
	/*
	 * SYNC 1 of an update: the journal, header and all, durable before
	 * the first change of the mailbox (any later write of the mailbox
	 * may reach the disk at once, by writeback): without it a crash
	 * could leave moved octets and no journal to finish or tell them.
	 * One fsync for all, before the rename that gives the journal its
	 * name JPATH (jnl_compact(), jnl_rejournal()): a crash before it
	 * returns leaves the mailbox untouched and the journal under its
	 * temporary name, which no repair reads; and a journal under JPATH
	 * whose table or octets do not match the header's digests is one
	 * jnl_load() finds incomplete and removes.
	 */
	jnl_encode(&js->h, hdr);
	if (io_pwrite(jfd, hdr, sizeof(hdr), 0) == -1 ||
	    io_fdatasync(jfd) == -1)
		goto fail;
	js->fd = jfd;
	js->p = js->seq = 0;
	return 0;
fail:
	e2 = errno;
	pop_log(LOG_ERR, "cannot write journal %s: %s", path, strerror(e2));
	(void)close(jfd);
	if (io_unlink(path) == -1)
		pop_log(LOG_ERR, "cannot remove %s: %s", path,
		    strerror(errno));
	errno = e2;
	return -1;
}

/*
 * The moves of js from extent js->p on, in order (not yet durable: see
 * jnl_apply()).  Before a
 * destination is written over the source of an earlier extent that is
 * not done on disk and not in the journal, a progress record frees that
 * source (see jnl_compact()).  The first time, every extent is copied from
 * its source, which no earlier move has touched.  A redo (repair) starts
 * from the last record and copies a journaled extent from the journal
 * (its source may be overwritten), any other from its source, which
 * nothing before its record overwrites.
 */
static int
jnl_moves(const struct jnl_box *box, struct jnl_state *js, int redo)
{
	const struct jnl_ext	*e, *w;
	uint64_t		 j, k, o, n, wb = 0;

	for (j = k = js->p; j < js->h.x; j++) {
		e = &js->ext[j];
		/*
		 * w: the first extent in [p, j) moved within the mailbox
		 * whose source ends past e's destination: the source with
		 * the lowest offset that e could overwrite.  Sources and
		 * destinations only grow, so k only moves on.
		 */
		for (; k < j; k++) {
			w = &js->ext[k];
			if (w->joff == JNL_NONE && w->s + w->len > e->d)
				break;
		}
		if (k < j && js->ext[k].s < e->d + e->len) {
			if (jnl_progress(box, js, j) == -1)
				return -1;
			k = j;
			wb = 0;
		}
		/* In pieces, forward; writeback of the destinations (back
		 * to back) is started every JNL_WBACK octets. */
		for (o = 0; o < e->len; o += n) {
			n = e->len - o > JNL_WBACK ? JNL_WBACK : e->len - o;
			if (redo && e->joff != JNL_NONE) {
				if (jnl_copy(js->fd, e->joff + o, n, box->fd,
				    e->d + o, NULL, box->alive) == -1)
					return -1;
			} else if (e->s - e->d < e->len) {
				if (jnl_shift(box->fd, e->s + o, e->d + o, n,
				    box->alive) == -1)
					return -1;
			} else if (jnl_copy(box->fd, e->s + o, n, box->fd,
			    e->d + o, NULL, box->alive) == -1)
				return -1;
			if ((wb += n) >= JNL_WBACK) {
				jnl_writeback(box->fd, e->d + o + n - wb, wb);
				wb = 0;
			}
		}
	}
	return 0;
}

/*
 * The end of the moves of a journal of this pop3d's: the mark written at
 * D+N, then the record P = X+1, which jnl_progress() writes only once the
 * mailbox (moves and mark) is durable, and makes durable itself.
 * SYNC 3 (the mailbox, in jnl_progress()): the moves durable before the
 * truncate, which cuts the sources of the last ones (a truncate on disk
 * then means every move is), and the mark durable before the record,
 * which says it is there: a record on disk without its mark would have
 * a repair take the old octets at D+N for mail delivered after the
 * truncate, and keep them.
 * SYNC 3b (the journal, in jnl_progress()): the record durable before
 * the truncate.  A repair that finds no record P = X+1 then knows that
 * the truncate never began, and one that finds it tells the two states
 * by the mark alone: [D+N, F) still there, mark and all, or cut and
 * perhaps followed by mail delivered since, which may be the very
 * octets cut (the same message delivered again): the digest of [D+N,
 * F), all the previous pop3d had, cannot tell them apart.
 */
static int
jnl_marked(const struct jnl_box *box, struct jnl_state *js)
{
	unsigned char	mk[JNL_MARK];

	jnl_mark(&js->h, mk);
	if (io_pwrite(box->fd, mk, jnl_markl(&js->h), js->h.d + js->h.n) == -1)
		return -1;
	return jnl_progress(box, js, js->h.x + 1);
}

/*
 * Applies a journal that is on disk, from its progress on: the moves, the
 * mark and its record (an older pop3d's journal: an fsync), truncate to
 * D+N, fsync, remove the journal, fsync the directory.  Every step can be
 * repeated: D+N <= F, and the truncate comes after all moves are durable.
 */
static enum md_res
jnl_apply(const struct jnl_box *box, struct jnl_state *js, int redo,
    const char *jpath)
{
	int	r = 0;

	/* With P = X+1 (a repair) all before the truncate is durable. */
	if (js->p <= js->h.x) {
		r = jnl_moves(box, js, redo);
		if (r == 0)
			r = js->h.ver >= 4 ? jnl_marked(box, js) :
			    io_fdatasync(box->fd);
	}
	/*
	 * SYNC 4: the truncate durable before the journal's removal is: a
	 * removal on disk without it would leave the mailbox with its moves
	 * done and its old tail after them, duplicates, and no journal.
	 */
	if (r == -1 || io_ftruncate(box->fd, js->h.d + js->h.n) == -1 ||
	    io_fdatasync(box->fd) == -1) {
		pop_log(LOG_ERR, "update of %s: %s", box->path,
		    strerror(errno));
		return MD_TEMP;
	}
	/*
	 * SYNC 5: the removal durable before +OK (MD_OK).  Lost in a crash
	 * after the reply, the journal would come back under a mailbox that
	 * may have changed since (a mail reader that rewrites it in place,
	 * a later truncate-only update, neither syncing this directory):
	 * the next repair would judge it against the wrong octets.
	 */
	if (io_unlink(jpath) == -1 || io_fsyncdir(box->path) == -1) {
		pop_log(LOG_ERR, "update of %s: journal %s: %s", box->path,
		    jpath, strerror(errno));
		return MD_TEMP;
	}
	return MD_OK;
}

/* Removes a journal that was never complete on disk: the mailbox was
 * never touched. */
static enum md_res
jnl_drop(const struct jnl_box *box, const char *jpath)
{
	if (io_unlink(jpath) == -1 || io_fsyncdir(box->path) == -1) {
		pop_log(LOG_ERR, "cannot remove journal %s: %s", jpath,
		    strerror(errno));
		return MD_TEMP;
	}
	pop_log(LOG_NOTICE, "removed the journal of an update of %s "
	    "that never started", box->path);
	return MD_OK;
}

/*
 * Whether the table and journaled octets of js (open, its header read,
 * of a file of size) are complete on disk: 0 yes, 2 no (short or not
 * matching their digests), 1 the table breaks the rules, -1 a read error.
 * A JNL_MAGIC2 journal's octets were durable before its header: only its
 * size is checked.
 */
static int
jnl_complete(const struct jnl_box *box, struct jnl_state *js, uint64_t size)
{
	unsigned char	dg[32];
	int		v;

	/* jnl_rtab() sets js->ext exactly when it gives 0 (said again for
	 * clang's analyzer, which loses that in jnl_repair()). */
	if ((v = jnl_rtab(js->fd, &js->h, &js->ext)) != 0 || js->ext == NULL)
		return v != 0 ? v : -1;
	if (js->h.j > 0 && size < jnl_data(js->h.x) + js->h.j)
		return 2;
	if (js->h.ver == 2)
		return 0;
	if (jnl_hashrange(js->fd, jnl_data(js->h.x), js->h.j,
	    js->h.ver == 5 ? js->h.hd : NULL, dg, box->alive) == -1)
		return -1;
	return memcmp(dg, js->h.hd, 32) == 0 ? 0 : 2;
}

/*
 * Opens the journal jpath and reads it into js (js->fd stays open for the
 * caller to close, -1 if there is none): *act is set when it is a valid
 * journal of this mailbox (*st), to be acted on.  Otherwise the result is
 * final: no journal (MD_OK), one never applied or never complete (removed:
 * MD_OK), one for another file (kept aside: MD_OK), an older pop3d's or a
 * damaged one (kept aside: MD_PERM), or an error.
 */
static enum md_res
jnl_load(const struct jnl_box *box, const char *jpath, struct jnl_state *js,
    struct stat *st, int *act)
{
	unsigned char	 hdr[JNL_HDR];
	struct stat	 jst;
	ssize_t		 got;
	int		 v;

	*act = 0;
	js->fd = open(jpath, O_RDWR | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
	if (js->fd == -1) {
		if (errno == ENOENT)
			return MD_OK;
		pop_log(LOG_ERR, "cannot open journal %s: %s", jpath,
		    strerror(errno));
		return errno == ELOOP ? MD_PERM : MD_TEMP;
	}
	if (fstat(js->fd, &jst) == -1 || fstat(box->fd, st) == -1) {
		pop_log(LOG_ERR, "fstat: %s", strerror(errno));
		return MD_TEMP;
	}
	if (!S_ISREG(jst.st_mode) || jst.st_uid != box->uid ||
	    jst.st_nlink != 1) {
		pop_log(LOG_ERR, "journal %s is not a regular file of the "
		    "user with one link: refused", jpath);
		return MD_PERM;
	}
	if ((got = io_pread(js->fd, hdr, sizeof(hdr), 0)) == -1) {
		pop_log(LOG_ERR, "read %s: %s", jpath, strerror(errno));
		return MD_TEMP;
	}
	/* Kept where it is, and every login refused: renamed aside, it
	 * would let the next session serve a half updated mailbox, and the
	 * pop3d that knows it would not find it. */
	if ((v = jnl_decode(hdr, (size_t)got, &js->h)) == 1) {
		pop_log(LOG_ERR, "journal %s is an older or a later "
		    "pop3d's: logins refused until the update is completed "
		    "with that version, or the journal is moved away (the "
		    "mailbox is then served as it is, perhaps half updated)",
		    jpath);
		return MD_PERM;
	}
	if (v == -1)
		return jnl_drop(box, jpath);	/* never applied */
	if (js->h.dev != (uint64_t)st->st_dev ||
	    js->h.ino != (uint64_t)st->st_ino) {
		pop_log(LOG_ERR, "journal %s is for another file than %s: "
		    "not applied", jpath, box->path);
		jnl_aside(jpath);
		return MD_OK;
	}
	if (jnl_slots(js) == -1 ||
	    (v = jnl_complete(box, js, (uint64_t)jst.st_size)) == -1) {
		pop_log(LOG_ERR, "read %s: %s", jpath, strerror(errno));
		return MD_TEMP;
	}
	/* Not complete on disk: its sync never returned, so the mailbox
	 * was never touched (unless a progress record says otherwise: the
	 * journal was damaged since). */
	if (v == 2 && js->h.ver > 2 && js->seq == 0)
		return jnl_drop(box, jpath);
	if (v != 0) {
		pop_log(LOG_ERR, "journal %s is damaged: %s left as it is",
		    jpath, box->path);
		jnl_aside(jpath);
		return MD_PERM;
	}
	*act = 1;
	return MD_OK;
}

/*
 * Before the truncate, with mail appended since at [F, size): that mail
 * is moved to D+N by a journal of its own (one extent, F' = size, D' =
 * D+N: [D+N, F) is cut away, the new mail follows it), written to tpath
 * and renamed over jpath, whose moves are done by then; then applied.
 */
static enum md_res
jnl_rejournal(const struct jnl_box *box, const struct jnl_state *js,
    uint64_t size, const char *jpath, const char *tpath)
{
	struct jnl_state js2;
	struct jnl_ext	 ext;
	enum md_res	 r;

	memset(&js2, 0, sizeof(js2));
	js2.h = js->h;
	js2.h.d = js->h.d + js->h.n;
	js2.h.f = size;
	js2.h.x = 1;
	js2.ext = &ext;
	ext.s = js->h.f;
	ext.len = size - js->h.f;
	jnl_plan(&js2, JNL_SHIFT_NOW());
	/* The moves of js durable before js2 replaces it (the rename). */
	if (io_fdatasync(box->fd) == -1) {
		pop_log(LOG_ERR, "update of %s: %s", box->path,
		    strerror(errno));
		return MD_TEMP;
	}
	if (jnl_write(box, tpath, &js2) == -1)
		return MD_TEMP;
	if (io_rename(tpath, jpath) == -1 || io_fsyncdir(box->path) == -1) {
		pop_log(LOG_ERR, "cannot rename %s: %s", tpath,
		    strerror(errno));
		(void)close(js2.fd);
		return MD_TEMP;
	}
	r = jnl_apply(box, &js2, 0, jpath);
	(void)close(js2.fd);
	return r;
}

/*
 * Whether the m octets got at D+N are the mark of h, or (torn: a crash
 * kept part of its write, or of the write that put the old octets back)
 * each octet the mark's or the old one's: 2 the mark, 1 torn, 0 neither.
 */
static int
jnl_marks(const struct jnl_hdr *h, const unsigned char *got, size_t m)
{
	unsigned char	mk[JNL_MARK];
	size_t		i;

	jnl_mark(h, mk);
	if (memcmp(got, mk, m) == 0)
		return 2;
	if (memcmp(got, h->hm, m) == 0)
		return 0;
	for (i = 0; i < m; i++)
		if (got[i] != mk[i] && got[i] != h->hm[i])
			return 0;
	return 1;
}

/* Whether [D+N, F) of the mailbox, with the mark's octets as they were
 * (h->hm), hashes to h->hc: 1, 0, -1 on a read error. */
static int
jnl_cutmatch(const struct jnl_box *box, const struct jnl_hdr *h, size_t m)
{
	struct jnl_dg	ctx;
	unsigned char	dg[32];

	jnl_dg_init(&ctx, NULL);
	jnl_dg_update(&ctx, m, h->hm);
	if (jnl_copy(box->fd, h->d + h->n + m, h->l - m, -1, 0, &ctx,
	    box->alive) == -1)
		return -1;
	jnl_dg_out(&ctx, dg);
	return memcmp(dg, h->hc, 32) == 0;
}

/*
 * Before a repair acts on the journal js: what it read of it durable.  A
 * session killed before its journal's fsync (after a progress record) or
 * its directory's (after the rename) left them in the page cache only; a
 * crash after the repair changed the mailbox would keep the change and
 * lose them.  The mailbox is synced first (what the records say is done
 * is on disk, as jnl_progress() does before one), the record that counts
 * (if any) is written again as read (after an fsync that failed, its page
 * may be clean and still not on disk; only it: the other slot may be a
 * hole of the sparse journal, which a write would need a block for, and
 * a full spool must not stop a repair that needs none), then the journal
 * and the directory are synced.
 */
static int
jnl_settle(const struct jnl_box *box, const struct jnl_state *js)
{
	unsigned char	b[JNL_SLOTLEN];
	const uint64_t	at = JNL_SLOT(js->seq & 1);

	if (io_fdatasync(box->fd) == -1)
		return -1;
	if (js->seq > 0 && (io_pread_exact(js->fd, b, sizeof(b), at) == -1 ||
	    io_pwrite(js->fd, b, sizeof(b), at) == -1))
		return -1;
	return io_fdatasync(js->fd) == -1 || io_fsyncdir(box->path) == -1 ?
	    -1 : 0;
}

/*
 * Which state of its update the mailbox (of size) is in, by the journal
 * js: 1 before the truncate, 0 after it, -2 neither; -1 on an error
 * (logged).  The octets at D+N are compared with the mark (and with the
 * mark's old octets), and [D+N, F) checked against its digest as it was
 * before the mark.  Before the record that says the mark is there, a
 * mark, whole or torn (a crash may have kept it, or part of it, and lost
 * moves), is replaced by the octets it overwrote, which the redone moves
 * may read.  With the record and no mark, or a mark but [D+N, F) not as
 * the update left it (another program rewrote the file since): after
 * the truncate, nothing of the update left to do, the file left as it is.
 */
static int
jnl_state(const struct jnl_box *box, const struct jnl_state *js,
    uint64_t size)
{
	unsigned char	 got[JNL_MARK];
	const size_t	 m = jnl_markl(&js->h);
	const uint64_t	 at = js->h.d + js->h.n;
	int		 mark = 0, v;

	if (js->h.ver >= 4 && size >= at + m) {
		if (io_pread_exact(box->fd, got, m, at) == -1)
			goto err;
		mark = jnl_marks(&js->h, got, m);
	}
	if (js->h.ver >= 4 && js->p > js->h.x) {
		if (mark != 2 || size < js->h.f)
			return 0;
		if ((v = jnl_cutmatch(box, &js->h, m)) == -1)
			goto err;
		return v;
	}
	if (mark != 0 && io_pwrite(box->fd, js->h.hm, m, at) == -1)
		goto err;
	if (size >= js->h.f) {
		if ((v = jnl_cutmatch(box, &js->h, 0)) == -1)
			goto err;
		if (v)
			return 1;
	}
	/* This pop3d's journal without the record P = X+1: the truncate
	 * never began.  The previous pop3d's: a truncate on disk means the
	 * moves are (its last record says so, for a POP3DJ2 journal). */
	if (js->h.ver >= 4 || (js->p != js->h.x && js->h.ver == 2) ||
	    size < at)
		return -2;
	return 0;
err:
	pop_log(LOG_ERR, "update of %s: %s", box->path, strerror(errno));
	return -1;
}

/*
 * Repair (called under the spool locks, before indexing, and after a
 * failed apply).  A journal without a valid header, or whose table or
 * journaled octets do not match its digests, was never complete on disk,
 * never applied: the mailbox is intact, the journal goes.  A journal for
 * another file (dev/ino) is renamed aside, never applied (jnl_load()).
 * Otherwise the mailbox is in one of two states (jnl_state()):
 *   before the truncate: no record P = X+1, or the record and the mark
 *     at D+N (size >= F), and [D+N, F) hashing to the cut part as it was
 *     before the mark (no move ever writes there).  The moves are done
 *     again from the last progress record (none with P = X+1); a mark
 *     found without its record, whole or torn by a crash, is first
 *     replaced by the octets it overwrote.  Mail
 *     appended since is [F, cur): it is then moved to D+N by a journal
 *     of its own (jnl_rejournal()).  Then the truncate.
 *   after the truncate: the record P = X+1 and no mark at D+N.  Mail
 *     appended since is [D+N, cur), whatever its octets, and the moves
 *     are on disk: only the removal of the journal may be missing.
 *     Doing it again is harmless, and so is a journal that a crash
 *     brought back over a mailbox changed since: the mark is gone.  The
 *     record and the mark, but [D+N, F) not what the update left there:
 *     another program (a mail reader) rewrote the file since; the same.
 * The previous pop3d's journal (POP3DJ3, no mark) is told by the digest
 * of [D+N, F) alone: before the truncate if it matches, after it if it
 * does not and the file is at least D+N long.
 * Anything else: the mailbox stays untouched, the journal is kept aside,
 * MD_PERM.  *done is set when an update was completed.
 */
enum md_res
jnl_repair(const struct jnl_box *box, int *done)
{
	char		 jpath[MD_PATH], tpath[MD_PATH + 8];
	struct jnl_state js;
	struct stat	 st;
	enum md_res	 r;
	uint64_t	 appended, redone;
	int		 act, state;

	*done = 0;
	if (jnl_path(box, jpath, sizeof(jpath)) == -1 ||
	    jnl_tmp(jpath, tpath, sizeof(tpath)) == -1) {
		pop_log(LOG_ERR, "mailbox path too long: %s", box->path);
		return MD_PERM;
	}
	memset(&js, 0, sizeof(js));
	if ((r = jnl_load(box, jpath, &js, &st, &act)) != MD_OK || !act)
		goto out;
	if (jnl_settle(box, &js) == -1) {
		pop_log(LOG_ERR, "update of %s: journal %s: %s", box->path,
		    jpath, strerror(errno));
		r = MD_TEMP;
		goto out;
	}
	redone = js.p < js.h.x ? js.h.x - js.p : 0;
	appended = (uint64_t)st.st_size > js.h.f ?
	    (uint64_t)st.st_size - js.h.f : 0;
	if ((state = jnl_state(box, &js, (uint64_t)st.st_size)) == -1) {
		r = MD_TEMP;
		goto out;
	}
	if (state == 1) {
		if (jnl_moves(box, &js, 1) == -1) {
			pop_log(LOG_ERR, "update of %s: %s", box->path,
			    strerror(errno));
			r = MD_TEMP;
		} else if (appended > 0)
			r = jnl_rejournal(box, &js, (uint64_t)st.st_size,
			    jpath, tpath);
		else
			r = jnl_apply(box, &js, 1, jpath);
		if (r != MD_OK)
			goto out;
		pop_log(LOG_NOTICE, "repaired an interrupted update of %s: "
		    "%llu of %llu moves redone from %llu, %llu octets "
		    "removed, %llu appended since kept", box->path,
		    (unsigned long long)redone, (unsigned long long)js.h.x,
		    (unsigned long long)js.h.d, (unsigned long long)js.h.l,
		    (unsigned long long)appended);
		*done = 1;
		goto out;
	}
	if (state == 0) {
		if (io_fdatasync(box->fd) == -1 || io_unlink(jpath) == -1 ||
		    io_fsyncdir(box->path) == -1) {
			pop_log(LOG_ERR, "update of %s: %s", box->path,
			    strerror(errno));
			r = MD_TEMP;
			goto out;
		}
		pop_log(LOG_NOTICE, "completed an interrupted update of %s "
		    "(already truncated to %llu octets)", box->path,
		    (unsigned long long)(js.h.d + js.h.n));
		*done = 1;
		goto out;
	}
	pop_log(LOG_ERR, "%s fits neither state of its update journal "
	    "(size %lld, journal D=%llu N=%llu F=%llu, %llu of %llu moves "
	    "done): left as it is", box->path, (long long)st.st_size,
	    (unsigned long long)js.h.d, (unsigned long long)js.h.n,
	    (unsigned long long)js.h.f, (unsigned long long)js.p,
	    (unsigned long long)js.h.x);
	jnl_aside(jpath);
	r = MD_PERM;
out:
	free(js.ext);
	if (js.fd != -1 && close(js.fd) == -1 && r == MD_OK && !*done)
		r = MD_TEMP;
	return r;
}

/*
 * UPDATE.  Under the spool locks, after md_revalidate() (maildrop.c,
 *   which makes the extents):
 *   D = the first deleted message's From_ line, F = the size now (with
 *   mail appended since md_open).  The kept records after D (each from
 *   its From_ line to the next, separators included), then [indexed, F),
 *   make the extents: runs of adjacent octets, in file order; extent j
 *   moves len_j octets from s_j to d_j, the destinations back to back
 *   from D: the new tail, N octets.  So d_j <= s_j and d_{j+1} = d_j +
 *   len_j <= s_{j+1}: writing extent j's destination never touches the
 *   source of a later extent.  It can overwrite (a) its own source, when
 *   its shift s_j - d_j is below len_j, and (b) sources of earlier
 *   extents that lie in [d_j, s_j).
 *   0. No extent (nothing kept after D, nothing appended): truncate to D,
 *      fsync; a crash leaves the file cut there or whole.
 *   1. Journal, written to JPATH.tmp: the octets of each extent of (a),
 *      and of each extent shifted by less than JNL_SHIFT; the extent
 *      table; the header with the digests of both; fsync (sync 1,
 *      jnl_write()); renamed to JPATH; fsync the spool directory (sync
 *      2, below).  An error: the journal goes, the mailbox is untouched.
 *      (No repair reads JPATH.tmp; it is the spare journal that
 *      jnl_prepare() makes before the user's sandbox.)
 *   2. The moves, in order, each from its source (none has been touched
 *      yet).  Before a destination is written over the source of an
 *      earlier extent that is not journaled and not yet on disk at its
 *      destination (b), a progress record: fsync the mailbox, write "the
 *      extents before j are done" with the next sequence number into the
 *      older of two checksummed slots, fsync the journal.  So from the
 *      last record on, every extent has its octets in the journal or
 *      intact at its source, and a repair does the moves again from
 *      there.
 *   3. The mark (a NUL and the header's digest) written over the first
 *      octets of [D+N, F), which no move writes to; fsync the mailbox;
 *      the record P = X+1 ("moves and mark durable"); fsync the journal
 *      (syncs 3 and 3b, jnl_marked()); truncate to D+N, fsync, unlink
 *      the journal, fsync the directory (syncs 4 and 5, jnl_apply()).
 *      Without the record the truncate never began; with it, the mark
 *      tells before from after, whatever mail was delivered since.
 *   MD_OK only after all of it.  An error in 2 or 3: one jnl_repair()
 *   try, else the journal stays for the next session.  Six syncs, and
 *   two per progress record; each one's reason is next to it, and in
 *   BENCH.md ("Syncs per update").
 * With every 10th message deleted, shifts grow along the file: a record
 * is needed about every tenth of the offset, each flushing only what was
 * written since (writeback is started after each move).  "fsync" is
 * fdatasync(2) for files: the octets and the size, not the times.  The
 * mailbox keeps its inode, owner and mode.
 */
enum md_res
jnl_compact(const struct jnl_box *box, uint64_t d, uint64_t f,
    struct jnl_ext *ext, uint64_t x)
{
	char		 jpath[MD_PATH], tpath[MD_PATH + 8];
	struct jnl_state js;
	enum md_res	 r;
	int		 done, moved;

	if (jnl_path(box, jpath, sizeof(jpath)) == -1 ||
	    jnl_tmp(jpath, tpath, sizeof(tpath)) == -1) {
		pop_log(LOG_ERR, "mailbox path too long: %s", box->path);
		return MD_TEMP;
	}
	if (x == 0) {
		/* Nothing to move: the truncate alone, which a crash does
		 * or does not undo, whole. */
		if (io_ftruncate(box->fd, d) == -1 ||
		    io_fdatasync(box->fd) == -1) {
			pop_log(LOG_ERR, "update of %s: %s", box->path,
			    strerror(errno));
			return MD_TEMP;
		}
		return MD_OK;
	}
	memset(&js, 0, sizeof(js));
	js.h.dev = (uint64_t)box->dev;
	js.h.ino = (uint64_t)box->ino;
	js.h.d = d;
	js.h.f = f;
	js.h.x = x;
	js.ext = ext;
	jnl_plan(&js, JNL_SHIFT_NOW());
	if (jnl_write(box, tpath, &js) == -1)
		return MD_TEMP;
	/*
	 * The name JPATH only for a journal whose octets are durable (sync
	 * 1 came first): a repair takes a journal under JPATH that does not
	 * match its digests for one never applied and removes it, true
	 * only if no rename gave the name before the octets were on disk
	 * (jnl_rejournal()'s rename replaces a journal that was applied).
	 * SYNC 2: the journal's name (the rename) durable before the first
	 * change of the mailbox (which writeback may put on disk at once):
	 * the fsync of the journal makes its octets durable, not its
	 * directory entry, and a crash that kept moved octets but lost the
	 * name would leave them with no journal to finish them.
	 */
	moved = io_rename(tpath, jpath) == 0;
	if (!moved || io_fsyncdir(box->path) == -1) {
		pop_log(LOG_ERR, "journal %s: %s (nothing deleted: check the "
		    "spool's file system)", jpath, strerror(errno));
		jnl_giveup(js.fd, jpath, tpath, moved, box->path);
		return MD_TEMP;
	}
	r = jnl_apply(box, &js, 0, jpath);
	(void)close(js.fd);
	if (r == MD_OK)
		return MD_OK;
	if (jnl_repair(box, &done) == MD_OK && done)
		return MD_OK;
	pop_log(LOG_ERR, "update of %s left to the next session's repair",
	    box->path);
	return MD_TEMP;
}

/*
 * Before the user's sandbox: the spare journal made (or an old one of the
 * user emptied) for jnl_write(); fd[0] an O_PATH descriptor of a journal
 * of the user that is there now (repaired later), fd[1] a descriptor of
 * the spare; -1 each where there is none.
 */
void
jnl_prepare(const struct jnl_box *box, int *fd)
{
	char		jpath[MD_PATH];
	int		i;

	fd[0] = fd[1] = -1;
	if (jnl_path(box, jpath, sizeof(jpath)) == -1 ||
	    jnl_tmp(jpath, jnl_spare, sizeof(jnl_spare)) == -1) {
		jnl_spare[0] = '\0';
		return;
	}
	fd[0] = io_ours(jpath, box->uid, 1);
	/* Not the user's own file with one link (planted: another's file,
	 * a symbolic link)?  Then its name goes, never the file, and the
	 * spare is made anew. */
	for (i = 0; i < 2 && fd[1] == -1; i++) {
		if (i == 1 && io_cleanup(jnl_spare) == -1)
			break;
		fd[1] = jnl_open_spare(jnl_spare, box->uid, O_NONBLOCK |
		    (i == 1 ? O_EXCL : 0));
	}
}

/*
 * Removes the spare journal if it is there: unused, or made again after
 * a repair's journal took it (a file the sandbox did not let us write):
 * io_cleanup(), no repair reads the spare.
 */
void
jnl_end(void)
{
	if (jnl_spare[0] == '\0')
		return;
	if (io_cleanup(jnl_spare) == -1 && errno != ENOENT)
		pop_log(LOG_ERR, "cannot remove %s: %s", jnl_spare,
		    strerror(errno));
	jnl_spare[0] = '\0';
}
