/*
 * cache.c: the index cache of a mailbox (cache.h): the file format, its
 * check, and its atomic write.  A cache file holds the index of one
 * mailbox as the last session made it (offsets, sizes, digests, twins,
 * the hidden pseudo-message) and the identity of the file it was made
 * from (device, inode, size, mtime, ctime, owner, a digest of the path).
 * maildrop.c uses it only when the mailbox has that identity, and only
 * when that identity was trusted (its ctime old enough, md_vstat's rule,
 * or sealed: cache_seal()), so the cache changes the speed of an open,
 * never its answer.
 * A cache file is untrusted input: every field is checked before any is
 * used, and anything wrong is a miss (README "Design", "The index
 * cache").  Calls io.c and the log only.
 *
 * The file: a header (struct cache_hdr), then n records (struct
 * cache_rec), in the byte order and sizes of this machine (the magic and
 * the version say so; another machine's file is a miss).  sum is a 64-bit
 * checksum over all of it with sum as 0: it finds a torn or damaged file.
 * It is not a MAC and need not be one: only the user (and root) can write
 * the directory, and the user can write the mailbox itself.
 */

#include <sys/stat.h>
#include <sys/types.h>
#include <sys/vfs.h>

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <syslog.h>
#include <time.h>
#include <unistd.h>

#include <linux/magic.h>
#include <nettle/sha2.h>

#include "cache.h"
#include "io.h"

#define CACHE_MAGIC	"pop3dIX\n"
#define CACHE_FILE	"index"

struct cache_hdr {
	char		magic[8];
	uint64_t	version;
	uint64_t	dev, ino, size;
	int64_t		mtime_s, mtime_ns, ctime_s, ctime_ns;
	uint64_t	uid;
	uint64_t	n;		/* records */
	uint64_t	hidden_end;	/* end of a hidden pseudo-message, or 0 */
	uint64_t	sealed;		/* 1: the identity was sealed, or 0 */
	unsigned char	path[32];
	uint64_t	sum;
};

struct cache_rec {
	uint64_t	from, data, end, size;
	unsigned char	hash[16];
	uint32_t	twin;
	uint32_t	zero;
};

_Static_assert(sizeof(struct cache_hdr) == CACHE_HDR, "no padding in the header");
_Static_assert(sizeof(struct cache_rec) == CACHE_REC, "CACHE_REC is right");
/* A record is a struct md_msg as the index holds it, with deleted and
 * the padding after it 0 (zero): read straight into the index, not
 * copied.  A change of struct md_msg fails here: a new CACHE_VERSION. */
#define CACHE_SAME(f)	(offsetof(struct cache_rec, f) == \
	offsetof(struct md_msg, f))
_Static_assert(sizeof(struct md_msg) == CACHE_REC && CACHE_SAME(from) &&
    CACHE_SAME(data) && CACHE_SAME(end) && CACHE_SAME(size) &&
    CACHE_SAME(hash) && CACHE_SAME(twin) &&
    offsetof(struct cache_rec, zero) == offsetof(struct md_msg, deleted),
    "a cache record is laid out as struct md_msg");

/*
 * The checksum: four lanes of multiply-rotate over 8-octet words, then
 * a final mix (about 1 ms for 100,000 records).  Any torn write or damage
 * changes it but with a chance of 2^-64; the length is in it too.
 */
#define CACHE_K1	0x9e3779b97f4a7c15ULL
#define CACHE_K2	0xc2b2ae3d27d4eb4fULL

static uint64_t
cache_rotl(uint64_t x, int r)
{
	return (x << r) | (x >> (64 - r));
}

static uint64_t
cache_mix(uint64_t h)
{
	h ^= h >> 33;
	h *= 0xff51afd7ed558ccdULL;
	h ^= h >> 33;
	h *= 0xc4ceb9fe1a85ec53ULL;
	return h ^ (h >> 33);
}

/* cache_sum() in parts: each part but the last a multiple of 32 octets. */
struct cache_sumst {
	uint64_t	l[4];
	uint64_t	len;
};

static void
cache_sum_init(struct cache_sumst *st)
{
	st->l[0] = CACHE_K1;
	st->l[1] = CACHE_K2;
	st->l[2] = ~CACHE_K1;
	st->l[3] = ~CACHE_K2;
	st->len = 0;
}

static void
cache_sum_add(struct cache_sumst *st, const unsigned char *p, size_t len)
{
	uint64_t	w;
	size_t		i, k;

	for (i = 0; i + 32 <= len; i += 32)
		for (k = 0; k < 4; k++) {
			memcpy(&w, p + i + 8 * k, 8);
			st->l[k] = cache_rotl(st->l[k] ^ w, 29) * CACHE_K1;
		}
	for (k = 0; i < len; i++, k++)
		st->l[k % 4] = cache_rotl(st->l[k % 4] ^ p[i], 29) * CACHE_K2;
	st->len += len;
}

static uint64_t
cache_sum_end(const struct cache_sumst *st)
{
	uint64_t	h = st->len;
	size_t		k;

	for (k = 0; k < 4; k++)
		h = cache_mix(h ^ st->l[k]) * CACHE_K1;
	return cache_mix(h);
}

static uint64_t
cache_sum(const unsigned char *p, size_t len)
{
	struct cache_sumst	st;

	cache_sum_init(&st);
	cache_sum_add(&st, p, len);
	return cache_sum_end(&st);
}

/* The checksum of a file whose header is h (sum: 0) and records the sum
 * of which is rsum. */
static uint64_t
cache_hdrsum(const struct cache_hdr *h, uint64_t rsum)
{
	struct cache_hdr	c = *h;

	c.sum = 0;
	return cache_mix(cache_sum((const void *)&c, sizeof(c)) ^ rsum);
}

/* The checksum of a file whose header is h and records rec. */
static uint64_t
cache_filesum(const struct cache_hdr *h, const void *rec, size_t len)
{
	return cache_hdrsum(h, cache_sum(rec, len));
}

void
cache_ident(struct cache_id *id, const char *path, uid_t uid,
    const struct stat *st)
{
	struct sha256_ctx	ctx;

	memset(id, 0, sizeof(*id));
	id->dev = (uint64_t)st->st_dev;
	id->ino = (uint64_t)st->st_ino;
	id->size = (uint64_t)st->st_size;
	id->mtime_s = st->st_mtim.tv_sec;
	id->mtime_ns = st->st_mtim.tv_nsec;
	id->ctime_s = st->st_ctim.tv_sec;
	id->ctime_ns = st->st_ctim.tv_nsec;
	id->uid = (uint64_t)uid;
	sha256_init(&ctx);
	sha256_update(&ctx, strlen(path), (const uint8_t *)path);
	sha256_digest(&ctx, sizeof(id->path), id->path);
}

/* Is the header that of a cache of id, with a length that fits? */
static const char *
cache_hdrcheck(const struct cache_hdr *h, size_t len,
    const struct cache_id *id)
{
	if (memcmp(h->magic, CACHE_MAGIC, sizeof(h->magic)) != 0 ||
	    h->version != CACHE_VERSION)
		return "not a cache file of this version";
	if (h->n > MD_MAX_MESSAGES ||
	    len != sizeof(*h) + h->n * sizeof(struct cache_rec))
		return "truncated or too long";
	if (h->dev != id->dev || h->ino != id->ino || h->uid != id->uid ||
	    memcmp(h->path, id->path, sizeof(h->path)) != 0)
		return "of another mailbox";
	if (h->size != id->size || h->mtime_s != id->mtime_s ||
	    h->mtime_ns != id->mtime_ns || h->ctime_s != id->ctime_s ||
	    h->ctime_ns != id->ctime_ns)
		return "stale";
	if (h->hidden_end > h->size || (h->n == 0 && h->hidden_end != h->size))
		return "bad pseudo-message";
	return h->sealed > 1 ? "bad seal" : NULL;
}

/*
 * Record r (the i-th) against the one before (p, or NULL) and the file
 * of size octets: a message as mbox.c's index could have made it.
 */
static int
cache_reccheck(const struct md_msg *r, const struct md_msg *p,
    uint64_t first, uint64_t size)
{
	uint64_t	body;
	uint32_t	zero;

	memcpy(&zero, (const unsigned char *)r + offsetof(struct cache_rec,
	    zero), sizeof(zero));
	if (zero != 0 || r->from >= r->data || r->data > r->end ||
	    r->data - r->from > MD_FROM_MAX || r->end > size)
		return -1;
	if (p == NULL ? r->from != first : r->from < p->end + 1 ||
	    r->from - p->end > 2)
		return -1;
	body = r->end - r->data;
	return r->size < body || r->size - body > body + 2 ? -1 : 0;
}

/* The last record ends at the end of the file, less one empty line. */
static int
cache_lastcheck(const struct md_msg *r, uint64_t size)
{
	return size - r->end > 2 ? -1 : 0;
}

/*
 * Twins: the n-th later record with the digest of another is its twin n
 * (mbox_twins()); a table of the last record of each digest checks that.
 * Digests are SHA-256, so a probe longer than CACHE_PROBES (at a load of
 * at most a half) is a file made to be slow: refused.
 */
#define CACHE_PROBES	64

static int
cache_twincheck(const struct md_msg *rec, uint32_t n)
{
	uint32_t	*tab, mask, i, k, j, probes;
	uint64_t	 key;
	int		 ok = 0;

	for (mask = 1; mask < 2 * n; mask <<= 1)
		;
	if ((tab = calloc(mask, sizeof(*tab))) == NULL)
		return -1;
	mask--;
	for (i = 0; i < n && ok == 0; i++) {
		memcpy(&key, rec[i].hash, sizeof(key));
		probes = 0;
		for (k = (uint32_t)cache_mix(key) & mask; tab[k] != 0;
		    k = (k + 1) & mask)
			if (memcmp(rec[tab[k] - 1].hash, rec[i].hash,
			    sizeof(rec[i].hash)) == 0 || ++probes > CACHE_PROBES)
				break;
		if (probes > CACHE_PROBES)
			ok = -1;
		j = tab[k];
		if (j == 0 ? rec[i].twin != 0 : rec[i].twin != rec[j - 1].twin + 1)
			ok = -1;
		tab[k] = i + 1;
	}
	free(tab);
	return ok;
}

/*
 * The checks of a file of header h (checked) and records m: the checksum,
 * each record, the twins.  NULL, or what is wrong.
 */
static const char *
cache_verify(const struct cache_hdr *h, const struct md_msg *m)
{
	uint32_t	i, n = (uint32_t)h->n;

	if (cache_filesum(h, m, n * sizeof(*m)) != h->sum)
		return "bad checksum";
	for (i = 0; i < n; i++)
		if (cache_reccheck(&m[i], i > 0 ? &m[i - 1] : NULL,
		    h->hidden_end, h->size) == -1)
			return "bad record";
	if (n > 0 && cache_lastcheck(&m[n - 1], h->size) == -1)
		return "bad record";
	if (n > 0 && cache_twincheck(m, n) == -1)
		return "bad twins";
	return NULL;
}

/* The index of a checked header h and its records m into ix, or NULL. */
static const char *
cache_take(const struct cache_hdr *h, struct md_msg *m, struct cache_ix *ix)
{
	const char	*why;

	if ((why = cache_verify(h, m)) != NULL) {
		free(m);
		return why;
	}
	ix->msg = m;
	ix->n = (uint32_t)h->n;
	ix->hidden_end = h->hidden_end;
	ix->sealed = (int)h->sealed;
	return NULL;
}

int
cache_parse(const unsigned char *buf, size_t len, const struct cache_id *id,
    struct cache_ix *ix, const char **why)
{
	struct cache_hdr	 h;
	struct md_msg		*m;

	memset(ix, 0, sizeof(*ix));
	*why = "truncated";
	if (len < sizeof(h))
		return -1;
	memcpy(&h, buf, sizeof(h));
	if ((*why = cache_hdrcheck(&h, len, id)) != NULL)
		return -1;
	*why = "out of memory";
	if ((m = reallocarray(NULL, h.n + 1, sizeof(*m))) == NULL)
		return -1;
	memcpy(m, buf + sizeof(h), len - sizeof(h));
	return (*why = cache_take(&h, m, ix)) == NULL ? 0 : -1;
}

/* Is dir a directory of uid that no one else may write (not a link)? */
static int
cache_dirok(const char *dir, uint64_t uid)
{
	struct stat	st;

	return lstat(dir, &st) == 0 && S_ISDIR(st.st_mode) &&
	    (uint64_t)st.st_uid == uid && (st.st_mode & 022) == 0 ? 0 : -1;
}

/* dir/name into buf; -1 if too long. */
static int
cache_path(char *buf, size_t size, const char *dir, const char *name)
{
	int	n = snprintf(buf, size, "%s/%s", dir, name);

	return n < 0 || (size_t)n >= size ? -1 : 0;
}

/*
 * The cache file fd (st: its fstat) as the index of id into ix: its
 * records read straight into the array the maildrop keeps.  0, or -1
 * with *why set (NULL: only stale, the usual miss, not worth a word).
 */
static int
cache_read(int fd, const struct stat *st, const struct cache_id *id,
    struct cache_ix *ix, const char **why)
{
	struct cache_hdr	 h;
	struct md_msg		*m;
	size_t			 len = (size_t)st->st_size;

	*why = "not a regular file of the user with one link";
	if (!S_ISREG(st->st_mode) || (uint64_t)st->st_uid != id->uid ||
	    st->st_nlink != 1)
		return -1;
	*why = "too long";
	if ((uint64_t)st->st_size > CACHE_MAX_BYTES)
		return -1;
	*why = "truncated";
	if (len < sizeof(h) || io_pread_exact(fd, &h, sizeof(h), 0) == -1)
		return -1;
	if ((*why = cache_hdrcheck(&h, len, id)) != NULL) {
		if (strcmp(*why, "stale") == 0)
			*why = NULL;	/* the records are not read */
		return -1;
	}
	*why = "out of memory";
	if ((m = reallocarray(NULL, h.n + 1, sizeof(*m))) == NULL)
		return -1;
	if (io_pread_exact(fd, m, len - sizeof(h), sizeof(h)) == -1) {
		*why = "read error";
		free(m);
		return -1;
	}
	return (*why = cache_take(&h, m, ix)) == NULL ? 0 : -1;
}

int
cache_load(const char *dir, const struct cache_id *id, struct cache_ix *ix)
{
	struct stat	 st;
	const char	*why = NULL;
	char		 path[MD_PATH];
	int		 fd, r = -1;

	memset(ix, 0, sizeof(*ix));
	if (cache_dirok(dir, id->uid) == -1 ||
	    cache_path(path, sizeof(path), dir, CACHE_FILE) == -1)
		return -1;
	if ((fd = open(path, O_RDONLY | O_NOFOLLOW | O_NONBLOCK |
	    O_CLOEXEC)) == -1) {
		if (errno != ENOENT)
			pop_log(LOG_WARNING, "index cache %s not used: %s",
			    path, errno == ELOOP ? "a symbolic link" :
			    strerror(errno));
		return -1;
	}
	if (fstat(fd, &st) == -1)
		why = strerror(errno);
	else
		r = cache_read(fd, &st, id, ix, &why);
	(void)close(fd);
	if (r == -1 && why != NULL)
		pop_log(LOG_WARNING, "index cache %s not used: %s", path, why);
	return r;
}

/* The magic, the version and the identity id into h. */
static void
cache_stamp(struct cache_hdr *h, const struct cache_id *id)
{
	memcpy(h->magic, CACHE_MAGIC, sizeof(h->magic));
	h->version = CACHE_VERSION;
	h->dev = id->dev;
	h->ino = id->ino;
	h->size = id->size;
	h->mtime_s = id->mtime_s;
	h->mtime_ns = id->mtime_ns;
	h->ctime_s = id->ctime_s;
	h->ctime_ns = id->ctime_ns;
	h->uid = id->uid;
	memcpy(h->path, id->path, sizeof(h->path));
}

/* Records written at a time: a multiple of 4 (4 records are 7 of
 * cache_sum()'s 32-octet blocks), so that memory does not grow with the
 * mailbox (an index of 2,000,000 messages is 112 MB). */
#define CACHE_CHUNK	1024
static struct cache_rec	cache_buf[CACHE_CHUNK];

/*
 * Writes the records of ix to fd after the header, a chunk at a time,
 * then the header h (its sum made on the way): 0, or -1 (errno).
 */
static int
cache_write(int fd, struct cache_hdr *h, const struct cache_ix *ix)
{
	struct cache_sumst	 st;
	struct cache_rec	*r;
	uint32_t		 i, k, n;

	cache_sum_init(&st);
	for (i = 0; i < ix->n; i += n) {
		n = ix->n - i;
		if (n > CACHE_CHUNK)
			n = CACHE_CHUNK;
		memset(cache_buf, 0, (size_t)n * sizeof(*r));
		for (k = 0; k < n; k++) {
			r = &cache_buf[k];
			r->from = ix->msg[i + k].from;
			r->data = ix->msg[i + k].data;
			r->end = ix->msg[i + k].end;
			r->size = ix->msg[i + k].size;
			memcpy(r->hash, ix->msg[i + k].hash, sizeof(r->hash));
			r->twin = ix->msg[i + k].twin;
		}
		cache_sum_add(&st, (const void *)cache_buf,
		    (size_t)n * sizeof(*r));
		if (io_pwrite(fd, cache_buf, (size_t)n * sizeof(*r),
		    sizeof(*h) + (uint64_t)i * sizeof(*r)) == -1)
			return -1;
	}
	h->sum = cache_hdrsum(h, cache_sum_end(&st));
	return io_pwrite(fd, h, sizeof(*h), 0);
}

/*
 * The temporary's name: ".index." and the first 8 octets of the digest of
 * the mailbox's path, in hex.  One name per mailbox, so that the sessions
 * that write it are those of one mailbox, which its session lock keeps
 * apart, and a temporary a killed session left is removed by the next
 * session of that mailbox that writes the cache (a name of the pid would
 * stay until that pid came again: one more file each time).
 */
static void
cache_tmpname(char *name, size_t len, const struct cache_id *id)
{
	size_t	i, n;

	n = (size_t)snprintf(name, len, ".%s.", CACHE_FILE);
	for (i = 0; i < 8 && n + 2 < len; i++, n += 2)
		(void)snprintf(name + n, len - n, "%02x", id->path[i]);
}

/*
 * A new file under a name of this mailbox (cache_tmpname()), written
 * whole, then put in the old one's place at once: a reader sees the old
 * file or the new one, never half of one, and a failure keeps the old
 * one.  No fsync: a cache lost in a crash is only a miss, and one torn
 * by it fails its checksum (and the length in its header).  The names
 * are exchanged (the old file then goes under the temporary name), not
 * renamed over: ext4 starts writing out a file that a rename puts in
 * place of another (auto_da_alloc, for programs that skip the fsync),
 * 0.6 to 2 ms of a session for a cache that need not be durable; an
 * exchange, or a rename to a free name, does not.  Where the exchange
 * fails (no old file, a file system that cannot, an old name Landlock
 * does not let us move: a symbolic link), a rename, which replaces the
 * old one or fails whole; not when the exchange said it failed and did
 * its work (the new file under PATH: cache_ours()), which the rename
 * would undo.
 */
static int
cache_ours(const char *path, const struct stat *st)
{
	struct stat	now;

	return lstat(path, &now) == 0 && now.st_dev == st->st_dev &&
	    now.st_ino == st->st_ino;
}

void
cache_save(const char *dir, const struct cache_id *id,
    const struct cache_ix *ix)
{
	struct cache_hdr h;
	struct stat	 st;
	char		 path[MD_PATH], tmp[MD_PATH], name[32];
	int		 fd, ok;

	cache_tmpname(name, sizeof(name), id);
	if (cache_dirok(dir, id->uid) == -1 ||
	    cache_path(path, sizeof(path), dir, CACHE_FILE) == -1 ||
	    cache_path(tmp, sizeof(tmp), dir, name) == -1)
		return;
	memset(&h, 0, sizeof(h));
	cache_stamp(&h, id);
	h.n = ix->n;
	h.hidden_end = ix->hidden_end;
	h.sealed = ix->sealed != 0;
	/* One left by a killed session of this mailbox goes first. */
	(void)io_unlink(tmp);
	if ((fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW |
	    O_CLOEXEC, 0600)) == -1) {
		pop_log(LOG_WARNING, "index cache %s: %s", tmp,
		    strerror(errno));
		return;
	}
	ok = cache_write(fd, &h, ix) == 0 && fstat(fd, &st) == 0;
	if (close(fd) == -1)
		ok = 0;
	if (ok && (io_exchange(tmp, path) == 0 || cache_ours(path, &st))) {
		(void)io_cleanup(tmp);
		return;
	}
	if (!ok || io_rename(tmp, path) == -1) {
		pop_log(LOG_WARNING, "index cache %s: %s", path,
		    strerror(errno));
		(void)io_unlink(tmp);
	}
}

/*
 * The seal (README "The index cache").  A cache is trusted when its
 * identity's ctime was over a second old at the fstat (md_vstat()), or
 * when it is sealed: the session that took the fstat under the spool
 * locks held them until the clock that stamps ctimes had passed that
 * ctime C.  Each writer that takes the locks writes after they are
 * released, and the kernel stamps its ctime from its coarse realtime
 * clock, truncated to the file system's granularity g; with multigrain
 * timestamps (Linux 6.13) a stamp may come from the fine clock, never
 * below the coarse one.  g divides 10^9 and C's nanoseconds (C is a
 * truncated stamp), so g <= G = gcd(ns, 10^9): once the coarse clock
 * reads C + G, any later stamp is C + G or more, and any write after the
 * locks changes the identity.  Only for a local file system of this
 * kernel's clock (not NFS, SMB or FUSE: the server's clock stamps), and
 * not for whole seconds (ns 0: G is a second, too long to wait).  Like
 * the one-second rule, it assumes the realtime clock is not set back.
 */

int64_t
cache_sealwait(const struct timespec *c, const struct timespec *now)
{
	int64_t	a = c->tv_nsec, b = 1000000000, t, w;

	while (a != 0) {
		t = b % a;
		b = a;
		a = t;
	}
	if (b > CACHE_SEAL_NS)
		return -1;
	w = ((int64_t)c->tv_sec - now->tv_sec) * 1000000000 +
	    (c->tv_nsec - now->tv_nsec) + b;
	if (w > CACHE_SEAL_NS)
		return -1;
	return w > 0 ? w : 0;
}

static int
cache_localfs(int fd)
{
	struct statfs	sf;

	if (fstatfs(fd, &sf) == -1)
		return 0;
	switch (sf.f_type) {
	case EXT4_SUPER_MAGIC:		/* also ext2 and ext3 */
	case XFS_SUPER_MAGIC:
	case BTRFS_SUPER_MAGIC:
	case F2FS_SUPER_MAGIC:
	case TMPFS_MAGIC:
		return 1;
	default:
		return 0;
	}
}

#if defined(POP3D_FAULT) || defined(POP3D_UNIT)
/* Test builds: POP3D_SEAL_STALL=1 stops the coarse clock at the ctime c,
 * as if it did not tick: no seal can be made. */
static int
cache_coarse(struct timespec *now, const struct timespec *c)
{
	if (getenv("POP3D_SEAL_STALL") == NULL)
		return clock_gettime(CLOCK_REALTIME_COARSE, now);
	*now = *c;
	return 0;
}
#else
#define cache_coarse(now, c)	clock_gettime(CLOCK_REALTIME_COARSE, now)
#endif

int
cache_seal(int fd, const struct stat *st)
{
	struct timespec	now, ts;
	int64_t		w;
	uint64_t	start = io_ms();

	if (!cache_localfs(fd))
		return 0;
	for (;;) {
		if (cache_coarse(&now, &st->st_ctim) == -1 ||
		    (w = cache_sealwait(&st->st_ctim, &now)) == -1)
			return 0;
		if (w == 0)
			return 1;
		/* The coarse clock moves at its ticks: poll it (sleeps of w,
		 * at most a ms; the timer slack makes a short one about 50
		 * us), and give up when it has stopped (or a test stopped
		 * it).  Its next tick cannot be told from a reading: one
		 * resolution after it, or two (here the coarse clock reads
		 * 3.9 to 7.9 ms behind the fine one, at HZ 250). */
		if ((io_ms() - start) * 1000000 > CACHE_SEAL_NS)
			return 0;
		ts.tv_sec = 0;
		ts.tv_nsec = w < 1000000 ? (long)w : 1000000;
		(void)nanosleep(&ts, NULL);
	}
}
