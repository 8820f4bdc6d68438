/*
 * maildrop.c: the mbox spool of one user (maildrop.h): safe open,
 * verification, streaming (RETR, TOP), UIDLs, the marks of DELE and the
 * update.  Runs only as that user.  The only file that calls the five
 * below it, none of which calls another but io.c:
 *   cache.c    the index cache: a file of the last session's index,
 *              used only for the very file it was made from;
 *   lock.c     the session lock and the spool locks (fcntl, dotlock),
 *              by the methods of opt.locks, which this file passes;
 *   mbox.c     the mbox format: From_ lines, the index and its check,
 *              digests, twins, UIDLs; given a keep-alive (lock_alive);
 *   journal.c  the journaled update and its repair, given the open
 *              mailbox, the extents to keep and the keep-alive; the
 *              spool locks are taken here around it;
 *   io.c       the wrappers of every write-like call (fault injection),
 *              full reads and writes, the clock.
 * struct maildrop (mdint.h) is opaque outside this file.  The on-disk
 * rules are described next to the code that implements them, and in the
 * README "Design" section.
 */

#include <sys/stat.h>
#include <sys/types.h>

#include <errno.h>
#include <fcntl.h>
#include <malloc.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <syslog.h>
#include <time.h>
#include <unistd.h>

#include "cache.h"
#include "io.h"
#include "journal.h"
#include "lock.h"
#include "maildrop.h"
#include "mbox.h"
#include "mdint.h"

/* md_stream output buffer: put() gets chunks this large. */
#define MD_OUT		(128 * 1024)

/* Rules md_prepare() makes at most: spool directory, USER.lock,
 * journal, spare journal, index cache directory. */
#define MD_RULES	5
_Static_assert(MD_RULES <= SBX_RULES_MAX, "md_prepare()'s rules fit");

/* Allocations of this size and more are mmap(2)ed (md_open()). */
#define MD_MMAP_MIN	(128 * 1024)

/* md_stream's input block, after room for the octet before it; its
 * output buffer (vector stores overshoot). */
static unsigned char	md_sbuf[32 + MD_BLOCK + 64];
static char		md_obuf[MD_OUT + 128];

/* mbox_msghash() reads through md_sbuf, before the stream uses it. */
_Static_assert(sizeof(md_sbuf) >= MD_FROM_MAX + MD_HASH_MAX,
    "md_sbuf holds a From_ line and a header");

/* The spool locks of md, by the methods of --lock. */
static enum md_res
md_lock(const struct maildrop *md)
{
	return lock_spool(md->fd, md->path, md->lockpath, opt.locks);
}

static void
md_unlock(const struct maildrop *md)
{
	lock_spool_release(md->fd, md->path, md->lockpath, opt.locks);
}

static enum md_res	md_revalidate(struct maildrop *, uint64_t *);

/* The mailbox as the journal sees it. */
static void
md_box(const struct maildrop *md, struct jnl_box *box)
{
	box->fd = md->fd;
	box->path = md->path;
	box->dev = md->dev;
	box->ino = md->ino;
	box->uid = md->user->uid;
	box->alive = lock_alive;
}

/*
 * Open, verify, stream, close.
 */

/*
 * Remembers the file's state at a verification (under the spool locks):
 * any later write changes its size, ctime or mtime.  But file times come
 * from a coarse clock (a tick of milliseconds; a second on some file
 * systems), and a write in the same tick as the recorded ctime may leave
 * all three as they were: a ctime less than a second before now is
 * recorded as one that no stat equals, so the next md_revalidate() verifies.
 */
static void
md_vstat(struct maildrop *md, const struct stat *st)
{
	struct timespec	now;

	md->vsize = (uint64_t)st->st_size;
	md->vctime = st->st_ctim;
	md->vmtime = st->st_mtim;
	if (clock_gettime(CLOCK_REALTIME, &now) == -1 ||
	    now.tv_sec - 1 < st->st_ctim.tv_sec ||
	    (now.tv_sec - 1 == st->st_ctim.tv_sec &&
	    now.tv_nsec < st->st_ctim.tv_nsec))
		md->vctime.tv_nsec = -1;	/* not trusted */
}

/* Size, ctime and mtime as at the last verification? */
static int
md_vsame(const struct maildrop *md, const struct stat *st)
{
	return (uint64_t)st->st_size == md->vsize &&
	    st->st_ctim.tv_sec == md->vctime.tv_sec &&
	    st->st_ctim.tv_nsec == md->vctime.tv_nsec &&
	    st->st_mtim.tv_sec == md->vmtime.tv_sec &&
	    st->st_mtim.tv_nsec == md->vmtime.tv_nsec;
}

/*
 * Opens md->path safely: O_NOFOLLOW (read-only if the user may not write
 * it), a regular file of the user with one link.  MD_OK with md->fd -1
 * if there is no mailbox.
 */
static enum md_res
md_openfile(struct maildrop *md)
{
	struct stat	st;
	enum md_res	r;
	int		e;

	md->fd = open(md->path, O_RDWR | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
	if (md->fd == -1 && errno == EACCES)
		md->fd = open(md->path, O_RDONLY | O_NOFOLLOW | O_NONBLOCK |
		    O_CLOEXEC);
	if (md->fd == -1) {
		e = errno;
		if (e == ENOENT)
			return MD_OK;
		if (e == ELOOP)
			pop_log(LOG_ERR, "mailbox %s is a symbolic link: "
			    "refused", md->path);
		else
			pop_log(LOG_ERR, "cannot open %s: %s", md->path,
			    strerror(e));
		return e == ELOOP || e == EACCES || e == EISDIR ||
		    e == ENOTDIR || e == ENXIO || e == EPERM ? MD_PERM : MD_TEMP;
	}
	if (fstat(md->fd, &st) == -1) {
		pop_log(LOG_ERR, "fstat %s: %s", md->path, strerror(errno));
		r = MD_TEMP;
		goto fail;
	}
	if (!S_ISREG(st.st_mode) || st.st_uid != md->user->uid ||
	    st.st_nlink != 1) {
		pop_log(LOG_ERR, "mailbox %s refused: %s", md->path,
		    !S_ISREG(st.st_mode) ? "not a regular file" :
		    st.st_uid != md->user->uid ? "not owned by the user" :
		    "it has more than one link");
		r = MD_PERM;
		goto fail;
	}
	return MD_OK;
fail:
	(void)close(md->fd);
	md->fd = -1;
	return r;
}

/*
 * The index cache (cache.c): used and kept only for a file whose identity
 * was trusted at the fstat under the spool locks: its ctime was old
 * enough (md_vstat()), or the session that took it sealed it (cache_seal():
 * it held the locks until the clock had passed that ctime).  A later
 * write, in any clock tick, then changes size, mtime or ctime, and the
 * cache of another identity is a miss.  1 and the maildrop indexed from
 * the cache of the file (st, *id), or 0.
 */
static int
md_cached(struct maildrop *md, const struct stat *st, struct cache_id *id)
{
	struct cache_ix	c;

	if (md->user->cache[0] == '\0')
		return 0;
	cache_ident(id, md->path, md->user->uid, st);
	if (st->st_size == 0 || cache_load(md->user->cache, id, &c) == -1)
		return 0;
	if (md->vctime.tv_nsec == -1 && !c.sealed) {
		free(c.msg);
		return 0;
	}
	md->vctime = st->st_ctim;	/* old, or sealed: trusted */
	md->msg = c.msg;
	md->n = c.n;
	md->hidden_end = c.hidden_end;
	return 1;
}

/* Under the spool locks, after an index of the file whose fstat is st
 * (index: its result): a young ctime sealed for the cache?  1 if so. */
static int
md_seal(struct maildrop *md, const struct stat *st, enum md_res index)
{
	if (md->user->cache[0] == '\0' || md->vctime.tv_nsec != -1 ||
	    index != MD_OK || !cache_seal(md->fd, st))
		return 0;
	md->vctime = st->st_ctim;
	return 1;
}

/*
 * After an index that md_cached() did not give: kept for next time
 * (sealed: md_seal() trusted its identity), at the end of the session
 * (md_close()), so that a session which updates the file writes the
 * cache once: md_update() drops this one, which the update makes stale,
 * and md_renew() keeps the new file's.
 */
static void
md_keep(struct maildrop *md, const struct cache_id *id, int sealed)
{
	md->keep = md->user->cache[0] != '\0' &&
	    md->vctime.tv_nsec != -1 && md->indexed != 0;
	md->keep_id = *id;
	md->keep_sealed = sealed;
}

/* The cache md_keep() left to keep, written (md_close()). */
static void
md_kept(struct maildrop *md)
{
	struct cache_ix	c;

	if (!md->keep || md->msg == NULL)
		return;
	md->keep = 0;
	c.msg = md->msg;
	c.n = md->n;
	c.hidden_end = md->hidden_end;
	c.sealed = md->keep_sealed;
	cache_save(md->user->cache, &md->keep_id, &c);
}

/* The session md_prepare() opened for md_open(): set, the mailbox's fd
 * (-1: none), the session-lock file's (-1: none, or flock(2) on the
 * mailbox) and the result. */
static struct {
	int		 set;
	int		 fd;
	int		 sfd;
	enum md_res	 r;
} md_pre;

/* Opens md->path (md_openfile()) and takes the session lock (lock.c:
 * the session-lock file's, made if missing, or flock(2) on the mailbox). */
static enum md_res
md_opensession(struct maildrop *md)
{
	enum md_res	r;

	if ((r = md_openfile(md)) != MD_OK || md->fd == -1)
		return r;
	if ((r = lock_session(md->fd, md->path, md->user->uid, &md->sfd)) !=
	    MD_OK) {
		(void)close(md->fd);
		md->fd = -1;
	}
	return r;
}

/*
 * Before the user's sandbox, which lets the process open only files that
 * have a rule of their own when it is made: opens the mailbox and takes
 * the session lock for md_open() (only the session that holds it makes
 * or empties a file; its file .USER.pop3d-session is opened now, so it
 * needs no rule), then rules for a journal and USER.lock that are
 * there now (repaired; read for the dead-pid check), the spare journal
 * and the dotlock's unique file made now, in the spool directory
 * only making and removing names (link, rename, unlink), and the index
 * cache's directory (cache.c).  Each inode must
 * be the user's (the journal with one link, USER.lock with up to two:
 * ours with its unique name), so that no name planted in the spool
 * earlier gets another user's file a rule.
 */
size_t
md_prepare(const struct pop_user *user, struct sbx_rule *rule, size_t max)
{
	char		 dir[MD_PATH];
	struct maildrop	 md;
	struct jnl_box	 box;
	size_t		 n = 0;
	int		 fd[2], i;

	memset(&md, 0, sizeof(md));
	md.fd = md.sfd = -1;
	md.user = user;
	md_pre.set = 1;
	if (max < MD_RULES ||
	    snprintf(md.path, sizeof(md.path), "%s", user->mailbox) >=
	    (int)sizeof(md.path) ||
	    snprintf(md.lockpath, sizeof(md.lockpath), "%s.lock",
	    user->mailbox) >= (int)sizeof(md.lockpath) ||
	    io_dirname(user->mailbox, dir, sizeof(dir)) == -1) {
		md_pre.set = 0;
		return 0;
	}
	md_pre.r = md_opensession(&md);
	md_pre.fd = md.fd;
	md_pre.sfd = md.sfd;
	if (md_pre.r != MD_OK || md.fd == -1)
		return 0;
	if ((fd[0] = open(dir, O_PATH | O_DIRECTORY | O_CLOEXEC)) != -1) {
		rule[n].fd = fd[0];
		rule[n++].access = SBX_ENTRIES;
	}
	if ((fd[0] = io_ours(md.lockpath, user->uid, 2)) != -1) {
		rule[n].fd = fd[0];
		rule[n++].access = SBX_READ;
	}
	if (opt.locks & POP3_LOCK_DOTLOCK)
		lock_dot_prepare(md.lockpath);
	memset(&box, 0, sizeof(box));
	box.path = user->mailbox;
	box.uid = user->uid;
	jnl_prepare(&box, fd);
	for (i = 0; i < 2; i++)
		if (fd[i] != -1) {
			rule[n].fd = fd[i];
			rule[n++].access = SBX_RW;
		}
	if (user->cache[0] != '\0' && (fd[0] = open(user->cache, O_PATH |
	    O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)) != -1) {
		rule[n].fd = fd[0];
		rule[n++].access = SBX_FILES;
	}
	return n;
}

enum md_res
md_open(struct maildrop *md, const struct pop_user *user)
{
	struct cache_id	id;
	struct mbox_ix	ix;
	struct jnl_box	box;
	struct stat	st;
	enum md_res	r;
	int		done, sealed;

	/* Memory (issue 6: flat, whatever the mailbox): blocks of 128 KiB
	 * and more come from mmap(2) and go back to the kernel when freed
	 * (glibc would raise that threshold after the first free and keep
	 * them), and the index thread shares the main arena. */
	(void)mallopt(M_MMAP_THRESHOLD, MD_MMAP_MIN);
	(void)mallopt(M_ARENA_MAX, 1);
	memset(md, 0, sizeof(*md));
	md->fd = -1;
	md->sfd = -1;
	md->user = user;
	if (snprintf(md->path, sizeof(md->path), "%s", user->mailbox) >=
	    (int)sizeof(md->path) ||
	    snprintf(md->lockpath, sizeof(md->lockpath), "%s.lock",
	    user->mailbox) >= (int)sizeof(md->lockpath)) {
		pop_log(LOG_ERR, "mailbox path too long");
		return MD_PERM;
	}
	if (md_pre.set) {
		md_pre.set = 0;
		md->fd = md_pre.fd;
		md->sfd = md_pre.sfd;
		r = md_pre.r;
	} else
		r = md_opensession(md);
	if (r != MD_OK || md->fd == -1)
		return r;
	if ((r = md_lock(md)) != MD_OK)
		goto fail;
	md_box(md, &box);
	if ((r = jnl_repair(&box, &done)) != MD_OK) {
		md_unlock(md);
		goto fail;
	}
	if (fstat(md->fd, &st) == -1) {
		pop_log(LOG_ERR, "fstat %s: %s", md->path, strerror(errno));
		md_unlock(md);
		r = MD_TEMP;
		goto fail;
	}
	md->dev = st.st_dev;
	md->ino = st.st_ino;
	md->indexed = (uint64_t)st.st_size;
	md_vstat(md, &st);
	if (md_cached(md, &st, &id)) {
		md_unlock(md);
		return MD_OK;
	}
	r = mbox_index(md->fd, md->indexed, lock_alive, &ix);
	sealed = md_seal(md, &st, r);
	md_unlock(md);
	if (r != MD_OK) {
		pop_log(LOG_ERR, "cannot index %s", md->path);
		goto fail;
	}
	mbox_hide(&ix, md->indexed, &md->hidden_end);
	md->msg = ix.msg;
	md->n = ix.n;
	if ((r = mbox_twins(md->msg, md->n)) != MD_OK)
		goto fail;
	md_keep(md, &id, sealed);
	return MD_OK;
fail:
	md_close(md);
	return r;
}

/*
 * Is the file still what we indexed?  Without the spool locks when size,
 * ctime and mtime are those of the last verification (nothing was
 * written); else md_revalidate() under them, once per change: appended mail
 * passes, a rewrite marks the maildrop changed for good (RETR, TOP and the
 * update refuse from then on).
 */
static enum md_res
md_current(struct maildrop *md)
{
	struct stat	st;
	enum md_res	r;
	uint64_t	size;

	if (md->changed)
		return MD_CHANGED;
	if (fstat(md->fd, &st) == -1) {
		pop_log(LOG_ERR, "fstat %s: %s", md->path, strerror(errno));
		return MD_TEMP;
	}
	if (md_vsame(md, &st))
		return MD_OK;
	if ((r = md_lock(md)) != MD_OK)
		return r == MD_PERM ? MD_TEMP : r;
	r = md_revalidate(md, &size);
	md_unlock(md);
	return r;
}

/* The output of md_stream(), and where its conversion stands. */
struct md_out {
	int	(*put)(void *, const char *, size_t);
	void	 *arg;
	size_t	  len;		/* octets in md_obuf */
	int	  err;		/* put() failed */
	long	  lines;	/* TOP's body lines, or < 0: RETR */
	long	  body;		/* body lines sent */
	size_t	  llen;		/* octets of the line so far */
	int	  bol;		/* at the start of a line */
	int	  cr;		/* the last octet was a CR */
	int	  hdr;		/* in the header */
};

static void
md_flush(struct md_out *o)
{
	if (o->len > 0 && !o->err && o->put(o->arg, md_obuf, o->len) == -1)
		o->err = 1;
	o->len = 0;
}

static void
md_emit(struct md_out *o, const void *buf, size_t n)
{
	const char	*p = buf;
	size_t		 k;

	while (n > 0 && !o->err) {
		if (o->len == MD_OUT)
			md_flush(o);
		k = MD_OUT - o->len;
		if (k > n)
			k = n;
		memcpy(md_obuf + o->len, p, k);
		o->len += k;
		p += k;
		n -= k;
	}
}

#ifdef MD_AVX2
/*
 * RETR's conversion, 32 octets at a time, of n (a multiple of 32) octets
 * at p into out: CR before a bare LF, "." before a "." that starts a
 * line.  p[-1] is the octet before (LF at the start of a message), and
 * up to 32 octets after p + n are readable.  out needs room for 2n + 32.
 * Each chunk is stored whole; at an insertion the rest of the chunk is
 * stored again one further on.  Returns the octets written.
 */
__attribute__((target("avx2,popcnt")))
static size_t
md_conv_avx2(const unsigned char *p, size_t n, char *out)
{
	const __m256i	lf = _mm256_set1_epi8('\n'), cr = _mm256_set1_epi8('\r');
	const __m256i	dot = _mm256_set1_epi8('.');
	__m256i		v, w;
	uint32_t	bare, ins;
	size_t		i, o = 0, x, k;

	for (i = 0; i < n; i += 32) {
		v = _mm256_loadu_si256((const __m256i *)(const void *)(p + i));
		w = _mm256_loadu_si256((const __m256i *)(const void *)
		    (p + i - 1));
		bare = (uint32_t)_mm256_movemask_epi8(_mm256_andnot_si256(
		    _mm256_cmpeq_epi8(w, cr), _mm256_cmpeq_epi8(v, lf)));
		ins = bare | (uint32_t)_mm256_movemask_epi8(_mm256_and_si256(
		    _mm256_cmpeq_epi8(w, lf), _mm256_cmpeq_epi8(v, dot)));
		_mm256_storeu_si256((__m256i *)(void *)(out + o), v);
		for (x = 0; ins != 0; ins &= ins - 1) {
			k = (size_t)__builtin_ctz(ins);
			out[o + k + x] = (bare >> k) & 1 ? '\r' : '.';
			x++;
			_mm256_storeu_si256((__m256i *)(void *)(out + o + k + x),
			    _mm256_loadu_si256((const __m256i *)(const void *)
			    (p + i + k)));
		}
		o += 32 + x;
	}
	return o;
}
#endif

#ifdef MD_AVX2
/* RETR: the bulk of [p, q) in vectors; returns where the rest starts. */
static const unsigned char *
md_conv_bulk(struct md_out *o, const unsigned char *p, const unsigned char *q)
{
	const unsigned char	*d = p;
	size_t			 c;

	while (q - p >= 32 && !o->err) {
		c = (MD_OUT - o->len) / 2;
		if (c > (size_t)(q - p))
			c = (size_t)(q - p);
		c &= ~(size_t)31;
		if (c == 0) {
			md_flush(o);
			continue;
		}
		o->len += md_conv_avx2(p, c, md_obuf + o->len);
		p += c;
	}
	if (p > d) {
		o->bol = p[-1] == '\n';
		o->cr = p[-1] == '\r';
	}
	return p;
}
#endif

/*
 * Converts [p, q) line by line: CRLF for a bare LF, "." before a line
 * that starts with one.  Returns 1 when TOP has sent all it sends.
 */
static int
md_conv_lines(struct md_out *o, const unsigned char *p,
    const unsigned char *q)
{
	const unsigned char	*nl, *seg;

	while (p < q) {
		if (o->bol && *p == '.')
			md_emit(o, ".", 1);
		seg = p;
		nl = memchr(p, '\n', (size_t)(q - p));
		p = nl != NULL ? nl : q;
		if (p > seg) {
			md_emit(o, seg, (size_t)(p - seg));
			o->cr = p[-1] == '\r';
			o->llen += (size_t)(p - seg);
			o->bol = 0;
		}
		if (nl == NULL)
			break;
		md_emit(o, o->cr ? "\n" : "\r\n", o->cr ? 1 : 2);
		p++;
		/* TOP: the header, its empty line, lines more. */
		if (o->lines >= 0) {
			if (!o->hdr) {
				if (++o->body >= o->lines)
					return 1;
			} else if (o->llen == 0 || (o->llen == 1 && o->cr)) {
				o->hdr = 0;
				if (o->lines == 0)
					return 1;
			}
		}
		o->bol = 1;
		o->cr = 0;
		o->llen = 0;
	}
	return 0;
}

enum md_res
md_stream(struct maildrop *md, uint32_t i, long lines,
    int (*put)(void *, const char *, size_t), void *arg)
{
	const struct md_msg	*m;
	const unsigned char	*p;
	struct md_out		 o;
	enum md_res		 r;
	unsigned char		 dg[16];
	unsigned char		*d = md_sbuf + 32;
	uint64_t		 off;
	size_t			 n;
	int			 prev = '\n', top = 0;

	if (i >= md->n || md->fd == -1)
		return MD_TEMP;
	m = &md->msg[i];
	if ((r = md_current(md)) != MD_OK)
		return r;
	if (mbox_msghash(md->fd, md->indexed, m, md_sbuf, dg) == -1) {
		pop_log(LOG_ERR, "read %s: %s", md->path, strerror(errno));
		return MD_TEMP;
	}
	if (memcmp(dg, m->hash, sizeof(dg)) != 0) {
		pop_log(LOG_ERR, "%s was rewritten under the session: message "
		    "%u changed", md->path, i + 1);
		return MD_CHANGED;
	}
	memset(&o, 0, sizeof(o));
	o.put = put;
	o.arg = arg;
	o.lines = lines;
	o.bol = o.hdr = 1;
	for (off = m->data; off < m->end && !o.err && !top; off += n) {
		n = m->end - off > MD_BLOCK ? MD_BLOCK : (size_t)(m->end - off);
		if (io_pread_exact(md->fd, d, n, off) == -1) {
			pop_log(LOG_ERR, "read %s: %s", md->path,
			    strerror(errno));
			return MD_TEMP;
		}
		d[-1] = (unsigned char)prev;
		prev = d[n - 1];
		p = d;
#ifdef MD_AVX2
		if (lines < 0 && mbox_avx2())
			p = md_conv_bulk(&o, p, d + n);
#endif
		top = md_conv_lines(&o, p, d + n);
	}
	if (!o.bol && !top)
		md_emit(&o, o.cr ? "\n" : "\r\n", o.cr ? 1 : 2);
	md_flush(&o);
	if (o.err)
		return MD_TEMP;
	/* Written while we read?  The caller then withholds the final ".". */
	return md_current(md);
}

/*
 * Under the spool locks: is [0, indexed) of the file (st, as it was
 * before) still what we indexed?  Indexes it again and compares.
 */
static enum md_res
md_verify(struct maildrop *md, const struct stat *st)
{
	enum md_res	 r;

	if ((uint64_t)st->st_size < md->indexed) {
		pop_log(LOG_ERR, "%s changed under the session (the file "
		    "shrank): nothing deleted", md->path);
		return MD_CHANGED;
	}
	if ((r = mbox_check(md->fd, md->indexed, md->msg, md->n,
	    md->hidden_end != 0, lock_alive)) == MD_OK ||
	    r == MD_TEMP)
		return r;
	pop_log(LOG_ERR, "%s changed under the session (%s): nothing deleted",
	    md->path, r == MD_PERM ? "no longer an mbox" :
	    "messages rewritten, added or removed");
	return MD_CHANGED;
}

/*
 * Under the spool locks: is the index still that of the file, and how
 * long is the file now (*size)?  The same inode must still be at the
 * path, with one link.  If its size, ctime and mtime are those recorded
 * at the last verification, nothing was written since: the index stands,
 * without reading the file.  Otherwise md_verify(), and the new state is
 * recorded.  MD_CHANGED marks the maildrop changed for good.
 */
static enum md_res
md_revalidate(struct maildrop *md, uint64_t *size)
{
	struct stat	st, ls;
	enum md_res	r;

	if (fstat(md->fd, &st) == -1) {
		pop_log(LOG_ERR, "fstat %s: %s", md->path, strerror(errno));
		return MD_TEMP;
	}
	if (lstat(md->path, &ls) == -1 || ls.st_dev != md->dev ||
	    ls.st_ino != md->ino || st.st_nlink != 1) {
		pop_log(LOG_ERR, "%s changed under the session (the file was "
		    "replaced): nothing deleted", md->path);
		md->changed = 1;
		return MD_CHANGED;
	}
	if (!md_vsame(md, &st)) {
		if ((r = md_verify(md, &st)) != MD_OK) {
			if (r == MD_CHANGED)
				md->changed = 1;
			return r;
		}
		md_vstat(md, &st);
	}
	*size = (uint64_t)st.st_size;
	return MD_OK;
}

/* Safe on every path, twice, and from a fatal path. */
void
md_close(struct maildrop *md)
{
	md_kept(md);
	lock_dot_release(md->lockpath);
	lock_session_release(&md->sfd);
	lock_dot_end();
	jnl_end();
	if (md->fd != -1) {
		(void)close(md->fd);
		md->fd = -1;
	}
	free(md->msg);
	md->msg = NULL;
	md->n = 0;
}

/* Adds len octets at s to the *x extents of ext (merged with the last
 * one when adjacent). */
static void
md_addext(struct jnl_ext *ext, uint64_t *x, uint64_t s, uint64_t len)
{
	struct jnl_ext	*e;

	if (*x > 0) {
		e = &ext[*x - 1];
		if (e->s + e->len == s) {
			e->len += len;
			return;
		}
	}
	e = &ext[(*x)++];
	e->s = s;
	e->len = len;
}

/*
 * Where the mail appended since md_open() starts, when the last message
 * is deleted: a writer may first end that message's record (its line end,
 * the empty line before a From_ line: "\n", "\r\n", "\n\n" ...).  Those
 * CR and LF octets, however many, are that message's and go with it when
 * a From_ line follows them (the rule of mbox_fromline()): so the message
 * kept before it keeps its own octets, and a mailbox left with only the
 * new mail begins with its From_ line (it began with a line end, which
 * no pop3d would open again).  Otherwise md->indexed: all of it kept.
 */
static uint64_t
md_appended(const struct maildrop *md, uint64_t size)
{
	unsigned char	 b[MD_FROM_MAX];
	uint64_t	 at = md->indexed;
	size_t		 n, i;

	for (;;) {
		n = size - at < sizeof(b) ? (size_t)(size - at) : sizeof(b);
		if (n == 0 || io_pread(md->fd, b, n, at) != (ssize_t)n)
			return md->indexed;
		for (i = 0; i < n && (b[i] == '\n' || b[i] == '\r'); i++)
			;
		at += i;
		if (i < n)
			break;
	}
	if (at == md->indexed)
		return md->indexed;
	n = size - at < sizeof(b) ? (size_t)(size - at) : sizeof(b);
	if (io_pread(md->fd, b, n, at) != (ssize_t)n ||
	    mbox_fromline(b, n) == 0)
		return md->indexed;
	return at;
}

/*
 * Under the spool locks, after md_revalidate(): the update of a file of
 * size octets from message k (the first deleted) on.  The extents to
 * keep: each kept record after it (from its From_ line to the next,
 * separators included), then the mail appended since md_open(); the
 * journal moves them (journal.c, jnl_compact()).
 */
static enum md_res
md_compact(struct maildrop *md, uint32_t k, uint64_t size)
{
	struct jnl_box	 box;
	struct jnl_ext	*ext;
	enum md_res	 r;
	uint64_t	 x = 0, s, e, d = md->msg[k].from;

	if ((ext = reallocarray(NULL, (size_t)(md->n - k) + 1,
	    sizeof(*ext))) == NULL) {
		pop_log(LOG_ERR, "update: %s", strerror(errno));
		return MD_TEMP;
	}
	for (; k < md->n; k++) {
		if (md->msg[k].deleted)
			continue;
		s = md->msg[k].from;
		e = k + 1 < md->n ? md->msg[k + 1].from : md->indexed;
		md_addext(ext, &x, s, e - s);
	}
	if (size > md->indexed) {
		s = md->msg[md->n - 1].deleted ? md_appended(md, size) :
		    md->indexed;
		md_addext(ext, &x, s, size - s);
	}
	md_box(md, &box);
	r = jnl_compact(&box, d, size, ext, x);
	free(ext);
	return r;
}

/*
 * Would a full index of the file hide its first message (a pseudo-message
 * moved to the top by an update)?  Indexes that message alone and checks
 * it is md->msg[0] as made by md_renew(); 1 (or an error): no cache.
 */
static int
md_newtop(const struct maildrop *md)
{
	struct mbox_ix	ix;
	uint64_t	lim = md->n > 1 ? md->msg[1].from : md->indexed;
	uint64_t	hidden;
	int		bad;

	if (mbox_index(md->fd, lim, lock_alive, &ix) != MD_OK)
		return 1;
	mbox_hide(&ix, lim, &hidden);
	bad = hidden != 0 || ix.n != 1 || ix.msg[0].from != md->msg[0].from ||
	    ix.msg[0].data != md->msg[0].data ||
	    ix.msg[0].end != md->msg[0].end ||
	    ix.msg[0].size != md->msg[0].size || memcmp(ix.msg[0].hash,
	    md->msg[0].hash, sizeof(ix.msg[0].hash)) != 0;
	free(ix.msg);
	return bad;
}

/*
 * After md_compact(), under the spool locks (issue 13: the next login
 * hits): the index of the file as it now is, made from the session's
 * (each kept message moved up by the deleted octets before it, with the
 * same octets, sizes and digests; twins numbered again, as an index of
 * the new file numbers them), sealed (cache_seal()) and kept.  The
 * session's index is that of the new file from then on.  Not when mail
 * came since md_open() (it is not indexed).
 */
static void
md_renew(struct maildrop *md, uint64_t size)
{
	struct cache_id	 id;
	struct cache_ix	 c;
	struct stat	 st;
	struct md_msg	*m;
	uint64_t	 gone = 0, e;
	uint32_t	 i, n = 0, top = 0;

	if (md->user->cache[0] == '\0' || size != md->indexed)
		return;
	for (i = 0; i < md->n; i++) {
		e = i + 1 < md->n ? md->msg[i + 1].from : md->indexed;
		if (md->msg[i].deleted) {
			gone += e - md->msg[i].from;
			top += n == 0;
			continue;
		}
		m = &md->msg[n++];
		*m = md->msg[i];
		m->from -= gone;
		m->data -= gone;
		m->end -= gone;
		m->twin = 0;
	}
	md->n = n;
	md->indexed -= gone;
	if (md->indexed == 0 || fstat(md->fd, &st) == -1 ||
	    (uint64_t)st.st_size != md->indexed ||
	    mbox_twins(md->msg, n) != MD_OK ||
	    (n > 0 && top > 0 && md->hidden_end == 0 && md_newtop(md)) ||
	    !cache_seal(md->fd, &st))
		return;
	cache_ident(&id, md->path, md->user->uid, &st);
	c.msg = md->msg;
	c.n = n;
	c.hidden_end = md->hidden_end;
	c.sealed = 1;
	cache_save(md->user->cache, &id, &c);
}

enum md_res
md_update(struct maildrop *md)
{
	enum md_res	r;
	uint64_t	size;
	uint32_t	k;

	for (k = 0; k < md->n && !md->msg[k].deleted; k++)
		;
	if (k == md->n || md->fd == -1)
		return MD_OK;
	if ((fcntl(md->fd, F_GETFL) & O_ACCMODE) == O_RDONLY) {
		pop_log(LOG_ERR, "%s is not writable: nothing deleted",
		    md->path);
		return MD_TEMP;
	}
	if (md->changed) {
		pop_log(LOG_ERR, "%s changed under the session: nothing "
		    "deleted", md->path);
		return MD_CHANGED;
	}
	if ((r = md_lock(md)) != MD_OK)
		return r == MD_PERM ? MD_TEMP : r;
	md->keep = 0;		/* of the file before the update */
	if ((r = md_revalidate(md, &size)) == MD_OK &&
	    (r = md_compact(md, k, size)) == MD_OK)
		md_renew(md, size);
	md_unlock(md);
	return r;
}

void
md_uidl(const struct maildrop *md, uint32_t i, char *buf, size_t size)
{
	if (i >= md->n) {
		if (size > 0)
			buf[0] = '\0';
		return;
	}
	mbox_uidl(&md->msg[i], buf, size);
}

struct maildrop *
md_new(void)
{
	struct maildrop	*md;

	if ((md = calloc(1, sizeof(*md))) != NULL)
		md->fd = md->sfd = -1;
	return md;
}

void
md_free(struct maildrop *md)
{
	if (md == NULL)
		return;
	md_close(md);
	free(md);
}

uint32_t
md_count(const struct maildrop *md)
{
	return md->n;
}

uint64_t
md_size(const struct maildrop *md, uint32_t i)
{
	return md->msg[i].size;
}

void
md_dele(struct maildrop *md, uint32_t i)
{
	md->msg[i].deleted = 1;
}

void
md_undele(struct maildrop *md, uint32_t i)
{
	md->msg[i].deleted = 0;
}

int
md_is_deleted(const struct maildrop *md, uint32_t i)
{
	return md->msg[i].deleted;
}
