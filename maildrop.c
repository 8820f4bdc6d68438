/*
 * maildrop.c: the mbox spool of one user: safe open, session and spool
 * locks, the index, streaming, UIDLs and the journaled update.  Runs only
 * as that user.  The on-disk rules are described here, next to the code
 * that implements them, and in the README "Design" section.
 *
 * Message boundaries.  A message starts at the "From " line at offset 0
 * (the file must start with one: anything else is "not an mbox"), and at
 * every later line that follows an empty line ("\n\n" or "\n\r\n") and
 * parses as a real From_ line: "From ", a sender without spaces, spaces,
 * and an asctime(3) date: weekday, month, day, hh:mm[:ss], optional time
 * zone tokens, a 4-digit year, optionally "remote from HOST"; at most
 * MD_FROM_MAX octets with its LF.  An unescaped body line "From here on"
 * therefore does not split a message.  ">From " lines are sent as stored.
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
 *
 * Locks.  The session lock is flock(2) on the mailbox, held for the whole
 * session: a second session gets MD_INUSE at once, and MDAs, which use
 * fcntl(2) and dotlocks, ignore it (they are independent of flock on
 * Linux local file systems; on NFS Linux emulates flock with fcntl locks,
 * so there the session lock would keep deliveries out: use a local spool).
 * The spool locks (Debian Policy 11.6: fcntl, then USER.lock made with the
 * NFS-safe link(2) technique) are held only while indexing and updating,
 * never across the client's think time, and never one while waiting for
 * the other.  A dotlock older than MD_DOTLOCK_STALE seconds or naming a
 * dead process is removed; ours is refreshed every MD_DOTLOCK_REFRESH.
 *
 * Update.  Journaled and in place (the inode stays: an MDA that opened the
 * mailbox before we locked it must not append to a file that is gone).
 * See md_compact() and md_repair() for the journal protocol.
 */

#include <sys/file.h>
#include <sys/stat.h>
#include <sys/types.h>

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <syslog.h>
#include <time.h>
#include <unistd.h>

#include <nettle/sha2.h>
#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#define MD_AVX2
#endif
#ifdef __SSE2__
#include <emmintrin.h>
#endif

#include "maildrop.h"

/* A From_ line is an address (RFC 5321: 256 octets) and a date; longer
 * lines are never message boundaries, and bound the parser's look-ahead. */
#define MD_FROM_MAX	4096
/* Header octets that go into a UIDL: enough for any real header, and a
 * bound on the work a hostile header-only message costs. */
#define MD_HASH_MAX	(64 * 1024)
/* Index read size: large reads, small enough to stay in the L2 cache. */
#define MD_IX_BLOCK	(256 * 1024)
/* Mailboxes this large are indexed by two threads, a half each (a thread
 * costs about 50 us; 2 cores index twice as fast: issue 6). */
#define MD_IX_SPLIT	(8 * 1024 * 1024)
/* Index look-ahead past the scan point: a whole From_ line.  Before the
 * scan point the buffer keeps MD_IX_HIST octets (aligned scans). */
#define MD_IX_LOOK	(MD_FROM_MAX + 8)
#define MD_IX_HIST	64
#define MD_IX_CAP	((MD_IX_BLOCK + MD_HASH_MAX + 2 * MD_IX_LOOK + 256) & ~63)
/* md_stream output buffer: put() gets chunks this large. */
#define MD_OUT		(128 * 1024)
/* Initial index size in records; it doubles from there. */
#define MD_IX_INIT	256
/*
 * Dotlock retry back-off, doubled from MIN up to MAX (milliseconds).  MDAs
 * hold the locks for milliseconds at a time, so a long sleep only lets the
 * next delivery in first: with three procmail writers a 1 s cap made QUIT
 * wait 1.6 s.  The random part keeps two waiting sessions out of step.
 */
#define MD_BACKOFF_MIN	20
#define MD_BACKOFF_MAX	200

/*
 * The journal, SPOOLDIR/.USER.pop3d-journal (the protocol: md_compact()).
 * Numbers are little-endian, 64 bits.
 *   [0, MD_JHDR)	the header: magic, dev, ino, D, F, N, L, X, J, then
 *			SHA-256 of the mailbox octets [D+N, F) (cut away by
 *			the truncate), of the extent table, and of all
 *			before it.  Written and fsynced last: a valid
 *			header means a complete journal, without hashing
 *			the data (SHA-256 runs at 1-2 GB/s).
 *   MD_JSLOT(0, 1)	two progress records, each in a block of its own:
 *			magic, sequence number, P, the first 16 octets of
 *			the header's digest, SHA-256 of all before it.  The
 *			valid one with the larger number counts (a torn
 *			write spoils one slot only); none: P = 0.
 *   MD_JTAB		the extent table: X records of s, d, len, joff.
 *   md_jdata(X)	the octets of the journaled extents, J in all (then
 *			zeros up to a whole block).
 */
#define MD_JMAGIC	"POP3DJ2\n"
#define MD_JMAGIC1	"POP3DJ1\n"	/* an older pop3d's: kept aside */
#define MD_JPMAGIC	"POP3DP2\n"
/* Room for a path derived from the mailbox's (journal, its temp, aside). */
#define MD_PATH		(sizeof(((struct maildrop *)0)->path) + 64)
#define MD_JHDR		(8 + 8 * 8 + 3 * 32)
#define MD_JHDR1	(8 + 6 * 8 + 2 * 32)
#define MD_JBLK		4096
#define MD_JSLOT(i)	((uint64_t)MD_JBLK * (1 + (i)))
#define MD_JSLOTLEN	(8 + 2 * 8 + 16 + 32)
#define MD_JTAB		((uint64_t)MD_JBLK * 3)
#define MD_JREC		32
/* joff of an extent moved within the mailbox, not through the journal. */
#define MD_JNONE	UINT64_MAX
/* Extents of a journal: one per run of kept messages, and the appended
 * mail (adjacent ones merged), so at most one more than the messages. */
#define MD_JEXT_MAX	((uint64_t)MD_MAX_MESSAGES + 1)
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
#define MD_JSHIFT	(4 * 1024 * 1024)
/* The moves start writeback every so many octets: the flushes of the
 * progress records and the last one then find most of it done. */
#define MD_WBACK	(8 * 1024 * 1024)

struct md_jhdr {
	uint64_t	 dev, ino;
	uint64_t	 d;		/* first octet rewritten */
	uint64_t	 f;		/* mailbox size when journaled */
	uint64_t	 n;		/* new tail: the new size is d + n */
	uint64_t	 l;		/* f - d - n: octets removed */
	uint64_t	 x;		/* extents in the table */
	uint64_t	 j;		/* octets of extents in the journal */
	unsigned char	 hc[32];	/* SHA-256 of mailbox [d + n, f) */
	unsigned char	 ht[32];	/* SHA-256 of the extent table */
	unsigned char	 hh[32];	/* SHA-256 of the header before it */
};

/* An extent: len octets of the mailbox move from s to d; their copy is at
 * joff in the journal, or MD_JNONE. */
struct md_ext {
	uint64_t	 s, d, len, joff;
};

/* A journal being applied. */
struct md_jstate {
	int		 fd;
	struct md_jhdr	 h;
	struct md_ext	*ext;		/* h.x extents */
	uint64_t	 p;		/* extents before it are done, on disk */
	uint64_t	 seq;		/* of the last progress record */
};

/* The index of [start, lim) being built (one of two halves, or all). */
struct md_ix {
	int		 fd;
	uint64_t	 start;		/* 0, or the second half's first octet */
	uint64_t	 stop;		/* first half: stop at a message >= this */
	uint64_t	 lim;		/* end of the indexed octets */
	int		 lead;		/* in the calling thread */
	int		 done;		/* stopped at a message >= stop */
	enum md_res	 r;
	struct md_msg	*msg;
	uint32_t	 n, cap;
	uint64_t	 cum;		/* LFs not after a CR before the scan */
	uint64_t	 cumdata;	/* the same at the last message's data */
	int		 pend;		/* the last message's digest is to do */
	int		 pseudo;	/* message 0: bit 1 X-IMAP, bit 2 subject */
};

/* Our dotlock, if we hold one: md_close() removes it on every path. */
static struct {
	int		 held;
	char		 path[sizeof(((struct maildrop *)0)->lockpath)];
	dev_t		 dev;
	ino_t		 ino;
	uint64_t	 touched;	/* md_ms() at creation or last refresh */
} md_dot;

/* One block for reading and copying; md_stream's input block, after room
 * for the octet before it; its output buffer (vector stores overshoot). */
static unsigned char	md_blk[MD_BLOCK] __attribute__((aligned(MD_JBLK)));
static unsigned char	md_sbuf[32 + MD_BLOCK + 64];
static char		md_obuf[MD_OUT + 128];

static const char *const md_wday[] = {
	"Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"
};
static const char *const md_mon[] = {
	"Jan", "Feb", "Mar", "Apr", "May", "Jun",
	"Jul", "Aug", "Sep", "Oct", "Nov", "Dec"
};

/* Header fields left out of the UIDL digest (other programs rewrite them,
 * or a sender could pick them). */
static const struct {
	const char	*name;
	size_t		 len;
} md_skip[] = {
	{ "Status", 6 },	{ "X-Status", 8 },	{ "X-UID", 5 },
	{ "X-Keywords", 10 },	{ "X-IMAP", 6 },	{ "X-IMAPbase", 10 },
	{ "X-UIDL", 6 },	{ "Content-Length", 14 }, { "Lines", 5 },
};

#define MD_PSEUDO_SUBJECT "DON'T DELETE THIS MESSAGE -- FOLDER INTERNAL DATA"

/*
 * Fault injection (issue 4).  Every write, pwrite, fsync, ftruncate,
 * rename, unlink and link of maildrop.c goes through these wrappers.  In
 * a build with -DPOP3D_FAULT (and in unit tests), POP3D_FAULT="kill:N"
 * raises SIGKILL instead of the N-th such call of the process (counted
 * from 1), "enospc:N" and "eio:N" make it fail with that errno.  Release
 * builds call the system directly and never read the environment.
 */
#if defined(POP3D_FAULT) || defined(POP3D_UNIT)
static int	md_fault_init;
static int	md_fault_kind;		/* 0, -1 kill, or an errno */
static long	md_fault_at, md_fault_count;

void	md_fault_reset(void);

/* Unit tests: read POP3D_FAULT again and count from 1. */
void
md_fault_reset(void)
{
	md_fault_init = 0;
	md_fault_count = 0;
}

static int
md_fault(void)
{
	const char	*s, *num;
	char		*end;

	if (!md_fault_init) {
		md_fault_init = 1;
		md_fault_kind = 0;
		if ((s = getenv("POP3D_FAULT")) != NULL &&
		    (num = strchr(s, ':')) != NULL) {
			if (strncmp(s, "kill:", 5) == 0)
				md_fault_kind = -1;
			else if (strncmp(s, "enospc:", 7) == 0)
				md_fault_kind = ENOSPC;
			else if (strncmp(s, "eio:", 4) == 0)
				md_fault_kind = EIO;
			errno = 0;
			md_fault_at = strtol(num + 1, &end, 10);
			if (errno != 0 || *end != '\0' || md_fault_at < 1)
				md_fault_kind = 0;
		}
	}
	if (++md_fault_count != md_fault_at || md_fault_kind == 0)
		return 0;
	if (md_fault_kind == -1)
		(void)raise(SIGKILL);
	errno = md_fault_kind;
	return -1;
}
#define MD_FAULT()	md_fault()

/* Test builds: POP3D_LOCK_WAIT=SECONDS (1..MD_LOCK_WAIT) shortens the
 * lock wait, so that tests of a held lock need not take 30 s. */
static int
md_lock_wait(void)
{
	const char	*s = getenv("POP3D_LOCK_WAIT");
	char		*end;
	long		 v;

	if (s == NULL)
		return MD_LOCK_WAIT;
	errno = 0;
	v = strtol(s, &end, 10);
	if (errno != 0 || *end != '\0' || v < 1 || v > MD_LOCK_WAIT)
		return MD_LOCK_WAIT;
	return (int)v;
}
#define MD_LOCKWAIT()	md_lock_wait()

/* Test builds: POP3D_JSHIFT=OCTETS replaces MD_JSHIFT (0: only extents
 * that would overwrite their own source go through the journal), so that
 * small mailboxes need progress records. */
static uint64_t
md_jshift(void)
{
	const char		*s = getenv("POP3D_JSHIFT");
	char			*end;
	unsigned long long	 v;

	if (s == NULL || *s < '0' || *s > '9')
		return MD_JSHIFT;
	errno = 0;
	v = strtoull(s, &end, 10);
	if (errno != 0 || *end != '\0')
		return MD_JSHIFT;
	return v;
}
#define MD_JSHIFTNOW()	md_jshift()
#else
#define MD_FAULT()	0
#define MD_LOCKWAIT()	MD_LOCK_WAIT
#define MD_JSHIFTNOW()	MD_JSHIFT
#endif

/* Where md_index() splits: unit tests move it to test the join. */
static uint64_t	md_split_min = MD_IX_SPLIT, md_split_at;
static int	md_split_force;

#ifdef POP3D_UNIT
void	md_test_split(uint64_t, uint64_t);

/* Split mailboxes of min octets or more at offset at (0: the middle);
 * min 0: back to normal. */
void
md_test_split(uint64_t min, uint64_t at)
{
	md_split_min = min > 0 ? min : MD_IX_SPLIT;
	md_split_at = at;
	md_split_force = min > 0;
}
#endif

static ssize_t
md_write(int fd, const void *p, size_t n)
{
	if (MD_FAULT())
		return -1;
	return write(fd, p, n);
}

static ssize_t
md_pwrite1(int fd, const void *p, size_t n, off_t off)
{
	if (MD_FAULT())
		return -1;
	return pwrite(fd, p, n, off);
}

/* For the spool directory. */
static int
md_fsync(int fd)
{
	if (MD_FAULT())
		return -1;
	return fsync(fd);
}

/* For files: their octets and what it takes to read them back (size,
 * blocks), not their times, which an update never needs. */
static int
md_fdatasync(int fd)
{
	if (MD_FAULT())
		return -1;
	return fdatasync(fd);
}

/* Starts writing [off, off + len) of fd back to disk without waiting, so
 * that the md_fdatasync() which makes it durable has less left to do. */
static void
md_writeback(int fd, uint64_t off, uint64_t len)
{
	(void)sync_file_range(fd, (off_t)off, (off_t)len,
	    SYNC_FILE_RANGE_WRITE);
}

static int
md_ftruncate(int fd, uint64_t len)
{
	if (MD_FAULT())
		return -1;
	return ftruncate(fd, (off_t)len);
}

static int
md_rename(const char *from, const char *to)
{
	if (MD_FAULT())
		return -1;
	return rename(from, to);
}

static int
md_unlink(const char *path)
{
	if (MD_FAULT())
		return -1;
	return unlink(path);
}

static int
md_link(const char *from, const char *to)
{
	if (MD_FAULT())
		return -1;
	return link(from, to);
}

/* Writes all n octets at off; 0 or -1 with errno. */
static int
md_pwrite(int fd, const void *buf, size_t n, uint64_t off)
{
	const char	*p = buf;
	ssize_t		 r;

	while (n > 0) {
		if ((r = md_pwrite1(fd, p, n, (off_t)off)) == -1) {
			if (errno == EINTR)
				continue;
			return -1;
		}
		if (r == 0) {
			errno = EIO;
			return -1;
		}
		p += r;
		n -= (size_t)r;
		off += (uint64_t)r;
	}
	return 0;
}

/* Reads up to n octets at off; fewer only at end of file.  -1 on error. */
static ssize_t
md_pread(int fd, void *buf, size_t n, uint64_t off)
{
	char	*p = buf;
	size_t	 got = 0;
	ssize_t	 r;

	while (got < n) {
		r = pread(fd, p + got, n - got, (off_t)(off + got));
		if (r == -1) {
			if (errno == EINTR)
				continue;
			return -1;
		}
		if (r == 0)
			break;
		got += (size_t)r;
	}
	return (ssize_t)got;
}

/* Reads exactly n octets at off: 0, or -1 (errno EIO at a short read). */
static int
md_preadx(int fd, void *buf, size_t n, uint64_t off)
{
	ssize_t	r;

	if ((r = md_pread(fd, buf, n, off)) == -1)
		return -1;
	if ((size_t)r != n) {
		errno = EIO;
		return -1;
	}
	return 0;
}

static uint64_t
md_ms(void)
{
	struct timespec	ts;

	if (clock_gettime(CLOCK_MONOTONIC, &ts) == -1)
		return 0;
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static void
md_sleep_ms(unsigned int ms)
{
	struct timespec	ts;

	ts.tv_sec = ms / 1000;
	ts.tv_nsec = (long)(ms % 1000) * 1000000;
	while (nanosleep(&ts, &ts) == -1 && errno == EINTR)
		;
}

/* The directory part of path ("." if none) into buf; -1 if too long. */
static int
md_dirname(const char *path, char *buf, size_t size)
{
	const char	*slash = strrchr(path, '/');
	size_t		 len;

	if (slash == NULL)
		return snprintf(buf, size, ".") >= (int)size ? -1 : 0;
	len = slash == path ? 1 : (size_t)(slash - path);
	if (len >= size)
		return -1;
	memcpy(buf, path, len);
	buf[len] = '\0';
	return 0;
}

/* The journal path: ".BASENAME.pop3d-journal" next to the mailbox. */
static int
md_jpath(const struct maildrop *md, char *buf, size_t size)
{
	const char	*slash = strrchr(md->path, '/');
	int		 r;

	if (slash == NULL)
		r = snprintf(buf, size, ".%s.pop3d-journal", md->path);
	else
		r = snprintf(buf, size, "%.*s/.%s.pop3d-journal",
		    (int)(slash - md->path), md->path, slash + 1);
	return r < 0 || (size_t)r >= size ? -1 : 0;
}

/* fsync(2) the spool directory after a file was created or removed. */
static int
md_fsyncdir(const struct maildrop *md)
{
	char	dir[MD_PATH];
	int	fd, r, e;

	if (md_dirname(md->path, dir, sizeof(dir)) == -1) {
		errno = ENAMETOOLONG;
		return -1;
	}
	if ((fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC)) == -1)
		return -1;
	r = md_fsync(fd);
	e = errno;
	if (close(fd) == -1 && r == 0)
		return -1;
	errno = e;
	return r;
}

/*
 * Spool locks.
 */

/* Refreshes our dotlock's mtime so that nobody takes it for stale. */
static void
md_dot_refresh(void)
{
	struct stat	st;
	uint64_t	now;

	if (!md_dot.held)
		return;
	now = md_ms();
	if (now - md_dot.touched < MD_DOTLOCK_REFRESH * 1000ULL)
		return;
	md_dot.touched = now;
	if (lstat(md_dot.path, &st) == -1 || st.st_dev != md_dot.dev ||
	    st.st_ino != md_dot.ino) {
		pop_log(LOG_ERR, "dotlock %s was removed by another program",
		    md_dot.path);
		return;
	}
	if (utimensat(AT_FDCWD, md_dot.path, NULL, AT_SYMLINK_NOFOLLOW) == -1)
		pop_log(LOG_ERR, "cannot refresh dotlock %s: %s", md_dot.path,
		    strerror(errno));
}

/* Removes our dotlock, unless somebody else's has replaced it. */
static void
md_dot_release(const char *path)
{
	struct stat	st;

	if (!md_dot.held || strcmp(path, md_dot.path) != 0)
		return;
	md_dot.held = 0;
	if (lstat(md_dot.path, &st) == -1 || st.st_dev != md_dot.dev ||
	    st.st_ino != md_dot.ino)
		return;
	if (md_unlink(md_dot.path) == -1)
		pop_log(LOG_ERR, "cannot remove dotlock %s: %s", md_dot.path,
		    strerror(errno));
}

enum { DOT_GOT, DOT_BUSY, DOT_TEMP, DOT_PERM };

/*
 * A busy dotlock: removes it if it is stale (older than MD_DOTLOCK_STALE,
 * or naming a process that does not exist).  Returns DOT_GOT if the lock
 * is gone (try again now), DOT_BUSY if it is live, DOT_PERM if it is not
 * a regular file (never followed, never removed).
 */
static int
md_dot_stale(const struct maildrop *md)
{
	struct stat	 st, st2;
	char		 buf[32];
	const char	*why;
	time_t		 now;
	long		 pid = 0;
	ssize_t		 r;
	int		 fd, dead = 0;

	if (lstat(md->lockpath, &st) == -1)
		return errno == ENOENT ? DOT_GOT : DOT_BUSY;
	if (!S_ISREG(st.st_mode)) {
		pop_log(LOG_ERR, "dotlock %s is not a regular file: refused",
		    md->lockpath);
		return DOT_PERM;
	}
	fd = open(md->lockpath, O_RDONLY | O_NOFOLLOW | O_NONBLOCK |
	    O_CLOEXEC);
	if (fd != -1) {
		r = read(fd, buf, sizeof(buf) - 1);
		(void)close(fd);
		if (r > 0) {
			buf[r] = '\0';
			pid = strtol(buf, NULL, 10);
		}
	}
	/* Our own pid in a lock we do not hold: left by a failed unlink. */
	if (pid > 1 && (pid == (long)getpid() || (kill((pid_t)pid, 0) == -1 &&
	    errno == ESRCH)))
		dead = 1;
	now = time(NULL);
	if (!dead && now - st.st_mtime <= MD_DOTLOCK_STALE)
		return DOT_BUSY;
	why = dead ? "its process is gone" : "too old";
	/* Still the same file?  Then it is ours to remove. */
	if (lstat(md->lockpath, &st2) == -1)
		return DOT_GOT;
	if (st2.st_dev != st.st_dev || st2.st_ino != st.st_ino ||
	    st2.st_mtime != st.st_mtime)
		return DOT_BUSY;
	if (md_unlink(md->lockpath) == -1 && errno != ENOENT) {
		pop_log(LOG_ERR, "cannot remove stale dotlock %s: %s",
		    md->lockpath, strerror(errno));
		return DOT_TEMP;
	}
	pop_log(LOG_NOTICE, "removed stale dotlock %s (%s: age %lld s, "
	    "pid %ld)", md->lockpath, why, (long long)(now - st.st_mtime),
	    pid);
	return DOT_GOT;
}

/*
 * Tries once to create the dotlock, the NFS-safe way: a unique file in
 * the same directory, link(2) it to USER.lock, and trust the link count
 * of the unique file, not link()'s return value.
 */
static int
md_dot_try(const struct maildrop *md)
{
	static unsigned int	 seq;
	char			 dir[MD_PATH], tmp[MD_PATH + 128], host[65];
	char			 pid[32];
	struct stat		 st;
	struct timespec		 ts;
	size_t			 i;
	int			 fd, r, lerr, got, plen;

	if (md_dirname(md->lockpath, dir, sizeof(dir)) == -1)
		return DOT_PERM;
	if (gethostname(host, sizeof(host)) == -1)
		(void)snprintf(host, sizeof(host), "localhost");
	host[sizeof(host) - 1] = '\0';
	for (i = 0; host[i] != '\0'; i++)
		if (host[i] == '/' || host[i] == ':')
			host[i] = '_';
	(void)clock_gettime(CLOCK_REALTIME, &ts);
	r = snprintf(tmp, sizeof(tmp), "%s/.pop3d-lk.%s.%ld.%lx.%u", dir,
	    host, (long)getpid(), (unsigned long)ts.tv_nsec, seq++);
	if (r < 0 || (size_t)r >= sizeof(tmp))
		return DOT_PERM;
	fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC,
	    0644);
	if (fd == -1) {
		if (errno == EACCES || errno == EPERM || errno == EROFS)
			pop_log(LOG_ERR, "cannot create a dotlock in %s: %s "
			    "(the spool directory must be writable for the "
			    "user, or use --lock=fcntl)", dir,
			    strerror(errno));
		else
			pop_log(LOG_ERR, "cannot create %s: %s", tmp,
			    strerror(errno));
		return DOT_TEMP;
	}
	plen = snprintf(pid, sizeof(pid), "%ld\n", (long)getpid());
	if (md_write(fd, pid, (size_t)plen) != plen) {
		pop_log(LOG_ERR, "cannot write %s: %s", tmp, strerror(errno));
		(void)close(fd);
		(void)md_unlink(tmp);
		return DOT_TEMP;
	}
	if (close(fd) == -1) {
		pop_log(LOG_ERR, "cannot write %s: %s", tmp, strerror(errno));
		(void)md_unlink(tmp);
		return DOT_TEMP;
	}
	r = md_link(tmp, md->lockpath);
	lerr = errno;
	got = lstat(tmp, &st) == 0 && st.st_nlink == 2;
	if (md_unlink(tmp) == -1)
		pop_log(LOG_ERR, "cannot remove %s: %s", tmp, strerror(errno));
	if (got) {
		md_dot.held = 1;
		memcpy(md_dot.path, md->lockpath, sizeof(md_dot.path));
		md_dot.dev = st.st_dev;
		md_dot.ino = st.st_ino;
		md_dot.touched = md_ms();
		return DOT_GOT;
	}
	if (r == -1 && lerr != EEXIST) {
		pop_log(LOG_ERR, "cannot create dotlock %s: %s", md->lockpath,
		    strerror(lerr));
		return DOT_TEMP;
	}
	return DOT_BUSY;
}

/* fcntl lock of the whole mailbox: 0, 1 if busy, -1 on error. */
static int
md_fcntl(const struct maildrop *md, short type)
{
	struct flock	fl;

	memset(&fl, 0, sizeof(fl));
	fl.l_type = type;
	fl.l_whence = SEEK_SET;
	if (type == F_WRLCK &&
	    (fcntl(md->fd, F_GETFL) & O_ACCMODE) == O_RDONLY)
		fl.l_type = F_RDLCK;
	if (fcntl(md->fd, F_SETLK, &fl) == -1) {
		if (errno == EAGAIN || errno == EACCES)
			return 1;
		return -1;
	}
	return 0;
}

static void
md_spool_unlock(const struct maildrop *md)
{
	md_dot_release(md->lockpath);
	if ((opt.locks & POP3_LOCK_FCNTL) && md->fd != -1 &&
	    md_fcntl(md, F_UNLCK) == -1)
		pop_log(LOG_ERR, "cannot unlock %s: %s", md->path,
		    strerror(errno));
}

/*
 * Takes the spool locks in Debian Policy order: fcntl, then the dotlock,
 * both without blocking.  If the dotlock is busy, the fcntl lock is given
 * back before we sleep (procmail takes them in the other order), and we
 * try again with a growing back-off for up to MD_LOCK_WAIT seconds.
 */
static enum md_res
md_spool_lock(const struct maildrop *md)
{
	uint64_t	deadline;
	unsigned int	delay = MD_BACKOFF_MIN;
	uint32_t	jit = (uint32_t)getpid() | 1;
	int		r, busy, wait = MD_LOCKWAIT();

	deadline = md_ms() + (uint64_t)wait * 1000;
	for (;;) {
		busy = 0;
		if (opt.locks & POP3_LOCK_FCNTL) {
			if ((r = md_fcntl(md, F_WRLCK)) == -1) {
				pop_log(LOG_ERR, "cannot lock %s: %s",
				    md->path, strerror(errno));
				return MD_TEMP;
			}
			busy = r;
		}
		if (!busy && (opt.locks & POP3_LOCK_DOTLOCK)) {
			r = md_dot_try(md);
			if (r == DOT_BUSY)
				r = md_dot_stale(md);
			if (r == DOT_GOT && !md_dot.held)
				r = md_dot_try(md);
			if (r != DOT_GOT) {
				if ((opt.locks & POP3_LOCK_FCNTL) &&
				    md_fcntl(md, F_UNLCK) == -1)
					pop_log(LOG_ERR, "cannot unlock %s: "
					    "%s", md->path, strerror(errno));
				if (r == DOT_TEMP)
					return MD_TEMP;
				if (r == DOT_PERM)
					return MD_PERM;
				busy = 1;
			}
		}
		if (!busy)
			return MD_OK;
		if (md_ms() >= deadline) {
			pop_log(LOG_NOTICE, "%s stays locked by another "
			    "program; gave up after %d s", md->path, wait);
			return MD_TEMP;
		}
		/* xorshift seeded by the pid: jitter, not secrecy */
		jit ^= jit << 13;
		jit ^= jit >> 17;
		jit ^= jit << 5;
		md_sleep_ms(delay / 2 + jit % (delay / 2 + 1));
		delay = delay * 2 > MD_BACKOFF_MAX ? MD_BACKOFF_MAX : delay * 2;
	}
}

/*
 * Parsing.
 */

/* Skips one or more blanks; 0 if there is none. */
static int
md_blanks(const unsigned char **pp, const unsigned char *q)
{
	const unsigned char	*p = *pp;

	if (p == q || (*p != ' ' && *p != '\t'))
		return 0;
	while (p < q && (*p == ' ' || *p == '\t'))
		p++;
	*pp = p;
	return 1;
}

static int
md_word(const unsigned char **pp, const unsigned char *q,
    const char *const *list, size_t n)
{
	size_t	i;

	if (q - *pp < 3)
		return 0;
	for (i = 0; i < n; i++)
		if (memcmp(*pp, list[i], 3) == 0) {
			*pp += 3;
			return 1;
		}
	return 0;
}

/* Up to max digits, at least min; the value, or -1. */
static int
md_digits(const unsigned char **pp, const unsigned char *q, int min, int max)
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

/*
 * The length of the From_ line at s (with its LF) if s starts with a real
 * one: "From SENDER DAY MON DD HH:MM[:SS] [TZ...] YYYY [remote from X]".
 * 0 otherwise.  Looks at no more than n (and MD_FROM_MAX) octets.
 */
static size_t
md_fromline(const unsigned char *s, size_t n)
{
	const unsigned char	*p, *q, *e, *t;
	int			 tz;

	if (n > MD_FROM_MAX)
		n = MD_FROM_MAX;
	if (n < 5 || memcmp(s, "From ", 5) != 0 ||
	    (e = memchr(s, '\n', n)) == NULL)
		return 0;
	p = s + 5;
	q = e;
	if (q > p && q[-1] == '\r')
		q--;
	while (q > p && (q[-1] == ' ' || q[-1] == '\t'))
		q--;
	/* The sender. */
	if (p == q || *p == ' ' || *p == '\t')
		return 0;
	while (p < q && *p != ' ' && *p != '\t')
		p++;
	/* The date. */
	if (!md_blanks(&p, q) || !md_word(&p, q, md_wday, 7) ||
	    !md_blanks(&p, q) || !md_word(&p, q, md_mon, 12) ||
	    !md_blanks(&p, q) || md_digits(&p, q, 1, 2) < 1 ||
	    !md_blanks(&p, q) || md_digits(&p, q, 1, 2) < 0 ||
	    p == q || *p++ != ':' || md_digits(&p, q, 2, 2) < 0)
		return 0;
	if (p < q && *p == ':' && (p++, md_digits(&p, q, 2, 2) < 0))
		return 0;
	/* Time zone tokens, then the year. */
	for (tz = 0;; tz++) {
		if (tz > 2 || !md_blanks(&p, q))
			return 0;
		t = p;
		if (md_digits(&t, q, 4, 4) >= 0 &&
		    (t == q || *t == ' ' || *t == '\t')) {
			p = t;
			break;
		}
		if (*p == '+' || *p == '-') {
			p++;
			if (md_digits(&p, q, 4, 4) < 0)
				return 0;
		} else {
			t = p;
			while (p < q && p - t < 6 &&
			    ((*p >= 'A' && *p <= 'Z') || (*p >= 'a' && *p <= 'z')))
				p++;
			if (p == t || (p < q && *p != ' ' && *p != '\t'))
				return 0;
		}
	}
	if (p < q) {
		if (!md_blanks(&p, q) || q - p < 13 ||
		    memcmp(p, "remote from ", 12) != 0)
			return 0;
	}
	return (size_t)(e - s) + 1;
}

/* The length of the field name of header line s (n octets), 0 if none. */
static size_t
md_fieldname(const unsigned char *s, size_t n)
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
md_fieldis(const unsigned char *s, size_t n, const char *name, size_t len)
{
	return md_fieldname(s, n) == len &&
	    strncasecmp((const char *)s, name, len) == 0;
}

/* Is the header line s (n octets) a field left out of the digest? */
static int
md_skipfield(const unsigned char *s, size_t n)
{
	size_t	i, l;

	switch (s[0]) {
	case 'S': case 's': case 'X': case 'x': case 'C': case 'c':
	case 'L': case 'l':
		break;
	default:
		return 0;
	}
	l = md_fieldname(s, n);
	for (i = 0; i < sizeof(md_skip) / sizeof(md_skip[0]); i++)
		if (l == md_skip[i].len &&
		    strncasecmp((const char *)s, md_skip[i].name, l) == 0)
			return 1;
	return 0;
}

/* The pseudo-message marks: bit 1 an X-IMAP(base) field, bit 2 the
 * "FOLDER INTERNAL DATA" subject. */
static int
md_pseudofield(const unsigned char *s, size_t n)
{
	const unsigned char	*v, *e;
	size_t			 len = sizeof(MD_PSEUDO_SUBJECT) - 1;

	if (md_fieldis(s, n, "X-IMAP", 6) || md_fieldis(s, n, "X-IMAPbase", 10))
		return 1;
	if (!md_fieldis(s, n, "Subject", 7))
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
		return 2;
	return 0;
}

/*
 * Feeds the header block at s into ctx: lines up to the first empty line,
 * at most MD_HASH_MAX octets, without the md_skip fields and their
 * continuation lines.  avail octets are at s; final: nothing after them
 * counts (end of the indexed file).  Returns 0, or -1 when it needs more
 * octets (ctx is then spoiled).  pseudo, if not NULL, gets the marks.
 */
static int
md_hdrhash(struct sha256_ctx *ctx, const unsigned char *s, size_t avail,
    int final, int *pseudo)
{
	const unsigned char	*nl;
	size_t			 lim = avail, pos = 0, run = 0, next;
	int			 skip = 0;

	if (lim >= MD_HASH_MAX) {
		lim = MD_HASH_MAX;
		final = 1;
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
		}
		nl = memchr(s + pos, '\n', lim - pos);
		if (nl == NULL && !final)
			return -1;
		next = nl != NULL ? (size_t)(nl - s) + 1 : lim;
		if (s[pos] != ' ' && s[pos] != '\t') {
			skip = md_skipfield(s + pos, next - pos);
			if (pseudo != NULL)
				*pseudo |= md_pseudofield(s + pos, next - pos);
		}
		if (skip) {
			if (pos > run)
				sha256_update(ctx, pos - run, s + run);
			run = next;
		}
		pos = next;
	}
	if (pos > run)
		sha256_update(ctx, pos - run, s + run);
	return 0;
}

/*
 * The index.
 */

static enum md_res
md_ix_add(struct md_ix *ix, uint64_t from, uint64_t data, uint64_t cumdata)
{
	struct md_msg	*m;
	uint32_t	 cap;

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
	ix->pend = 1;
	return MD_OK;
}

/* Sets end and size of the last message; lfs: its bare LFs. */
static void
md_ix_close(struct md_ix *ix, uint64_t end, uint64_t lfs, int last)
{
	struct md_msg	*m = &ix->msg[ix->n - 1];

	m->end = end;
	m->size = end - m->data + lfs;
	if (end > m->data && last != '\n')
		m->size += last == '\r' ? 1 : 2;
}

/* Digest of the last message, if its header is all in buf. */
static int
md_ix_hash(struct md_ix *ix, const unsigned char *buf, int64_t base,
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
	if (md_hdrhash(&ctx, buf + di, valid - di, final,
	    m->from == 0 ? &pseudo : NULL) == -1)
		return -1;
	sha256_digest(&ctx, sizeof(dg), dg);
	memcpy(m->hash, dg, sizeof(m->hash));
	if (m->from == 0)
		ix->pseudo = pseudo;
	ix->pend = 0;
	return 0;
}

/*
 * A line starting with "F" after an LF at buf[p]: a new message if an
 * empty line precedes it and it is a real From_ line.  cum: bare LFs
 * before p.
 */
static enum md_res
md_ix_cand(struct md_ix *ix, const unsigned char *buf, int64_t base,
    size_t valid, int eof, size_t p, uint64_t cum)
{
	uint64_t	off = (uint64_t)(base + (int64_t)p);
	size_t		len;
	int		sep;

	if (buf[p - 2] == '\n')
		sep = 1;
	else if (buf[p - 2] == '\r' && buf[p - 3] == '\n')
		sep = 2;
	else
		return MD_OK;
	if ((len = md_fromline(buf + p, valid - p)) == 0)
		return MD_OK;
	/* The octets of the message before end in the LF before the
	 * separator line, so they need no final line end.  (The second
	 * half's first message has none before it.) */
	if (ix->n > 0) {
		md_ix_close(ix, off - (uint64_t)sep, cum - (sep == 1) -
		    ix->cumdata, '\n');
		if (ix->pend && md_ix_hash(ix, buf, base, valid, eof) == -1)
			(void)md_ix_hash(ix, buf, base, valid, 1);
	}
	if (ix->stop != 0 && off >= ix->stop) {
		ix->done = 1;
		return MD_OK;
	}
	if (md_ix_add(ix, off, off + len, cum + (buf[p + len - 2] != '\r')) !=
	    MD_OK)
		return ix->n >= MD_MAX_MESSAGES ? MD_PERM : MD_TEMP;
	(void)md_ix_hash(ix, buf, base, valid, eof);
	return MD_OK;
}

/* The slow path for 64 octets at buf[i] that hold a candidate. */
static enum md_res
md_ix_slow(struct md_ix *ix, const unsigned char *buf, int64_t base,
    size_t valid, int eof, size_t i)
{
	enum md_res	r;
	size_t		p;

	for (p = i; p < i + 64; p++) {
		if (buf[p] == 'F' && buf[p - 1] == '\n' && p < valid &&
		    ((r = md_ix_cand(ix, buf, base, valid, eof, p, ix->cum)) !=
		    MD_OK || ix->done))
			return r;
		if (buf[p] == '\n' && buf[p - 1] != '\r')
			ix->cum++;
	}
	return MD_OK;
}

#ifdef MD_AVX2
static int
md_avx2(void)
{
	static int	avx2 = -1;

	if (avx2 == -1)
		avx2 = __builtin_cpu_supports("avx2") &&
		    __builtin_cpu_supports("popcnt");
	return avx2;
}

/*
 * md_ix_scan() with AVX2: 64-bit masks of LF, CR and "F"; the masks of
 * "after an LF" and "after a CR" are those shifted by one, carrying the
 * last bit from the block before.
 */
__attribute__((target("avx2,popcnt")))
static enum md_res
md_ix_scan_avx2(struct md_ix *ix, const unsigned char *buf, int64_t base,
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
			if (p < valid && ((r = md_ix_cand(ix, buf, base, valid,
			    eof, p, cum + (uint64_t)__builtin_popcountll(b &
			    ((1ULL << (p - i)) - 1)))) != MD_OK || ix->done))
				return r;
		}
	}
	return MD_OK;
}
#endif

/*
 * Scans buf[i, stop) in 64-octet steps (stop - i a multiple of 64; the
 * octet before i readable): counts bare LFs and hands the blocks with an
 * LF followed by "F" to the slow path.  AVX2 or SSE2 where there is.
 */
static enum md_res
md_ix_scan(struct md_ix *ix, const unsigned char *buf, int64_t base,
    size_t valid, int eof, size_t i, size_t stop)
{
	enum md_res	r;
#ifdef MD_AVX2
	if (md_avx2())
		return md_ix_scan_avx2(ix, buf, base, valid, eof, i, stop);
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
			v = _mm_sad_epu8(acc, zero);
			ix->cum += (uint64_t)_mm_cvtsi128_si32(v) +
			    (uint64_t)_mm_cvtsi128_si32(
			    _mm_unpackhi_epi64(v, v));
			acc = zero;
			nacc = 0;
			if ((r = md_ix_slow(ix, buf, base, valid, eof, i)) !=
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
			v = _mm_sad_epu8(acc, zero);
			ix->cum += (uint64_t)_mm_cvtsi128_si32(v) +
			    (uint64_t)_mm_cvtsi128_si32(
			    _mm_unpackhi_epi64(v, v));
			acc = zero;
			nacc = 0;
		}
	}
	v = _mm_sad_epu8(acc, zero);
	ix->cum += (uint64_t)_mm_cvtsi128_si32(v) +
	    (uint64_t)_mm_cvtsi128_si32(_mm_unpackhi_epi64(v, v));
#else
	for (; i < stop; i += 64)
		if ((r = md_ix_slow(ix, buf, base, valid, eof, i)) != MD_OK ||
		    ix->done)
			return r;
#endif
	return MD_OK;
}

/*
 * Indexes [ix->start, ix->lim) of ix->fd in one pass of large reads:
 * message boundaries, sizes and digests.  The buffer holds the octets
 * [base, base + valid); buf[i] is the scan point, 64-aligned, and the
 * MD_IX_HIST octets before it stay (the empty-line test needs 3).  The pending message's From_ line and
 * header stay in the buffer until its digest is done.  The first half of
 * two stops at the first message at or after ix->stop (the first one the
 * second half finds: the rule looks at a few octets around it only).
 */
static void *
md_ix_run(void *arg)
{
	struct md_ix	*ix = arg;
	unsigned char	*buf;
	const unsigned char *lf;
	struct md_msg	*m;
	enum md_res	 r = MD_OK;
	int64_t		 base;
	size_t		 valid, i = MD_IX_HIST, keep, stop, fi, want;
	uint64_t	 end, sub, off, lim = ix->lim;
	ssize_t		 got;
	int		 eof, first, last;

	if ((buf = aligned_alloc(64, MD_IX_CAP)) == NULL) {
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
		want = MD_IX_CAP - 64 - valid;
		if (want > lim - off)
			want = (size_t)(lim - off);
		if ((got = md_pread(ix->fd, buf + valid, want, off)) == -1) {
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
		if (ix->lead)
			md_dot_refresh();
		if (first) {
			first = 0;
			fi = (size_t)-base;	/* offset 0 */
			if (valid - fi < 5 || memcmp(buf + fi, "From ", 5) != 0 ||
			    (lf = memchr(buf + fi, '\n', valid - fi < MD_FROM_MAX ?
			    valid - fi : MD_FROM_MAX)) == NULL) {
				pop_log(LOG_ERR, "not an mbox: the file does "
				    "not start with a From_ line");
				r = MD_PERM;
				goto out;
			}
			if ((r = md_ix_add(ix, 0, (uint64_t)(base + (lf - buf) +
			    1), lf[-1] != '\r')) != MD_OK)
				goto out;
		}
		if (ix->pend)
			(void)md_ix_hash(ix, buf, base, valid, eof);
		if (eof) {
			memset(buf + valid, 0, 64);
			stop = i + (valid > i ? (valid - i + 63) / 64 * 64 : 0);
		} else
			stop = i + (valid - MD_IX_LOOK - i) / 64 * 64;
		if ((r = md_ix_scan(ix, buf, base, valid, eof, i, stop)) !=
		    MD_OK || ix->done)
			goto out;
		i = stop;
		if (eof)
			break;
		keep = i - MD_IX_HIST;
		if (ix->pend) {
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
	if (ix->n == 0)
		goto out;	/* a second half without a message */
	/* The last message: a final empty line is a separator too. */
	m = &ix->msg[ix->n - 1];
	end = lim;
	sub = 0;
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
	md_ix_close(ix, end, ix->cum - sub - ix->cumdata, last);
	if (ix->pend)
		(void)md_ix_hash(ix, buf, base, valid, 1);
out:
	free(buf);
	ix->r = r;
	return NULL;
}

static void
md_ix_free(struct md_ix *ix)
{
	free(ix->msg);
	ix->msg = NULL;
	ix->n = 0;
}

/*
 * Indexes [0, lim) of fd into ix: a large mailbox in two halves at once
 * when there are two CPUs (the second in a thread, or after the first if
 * no thread can be had), joined at the first message of the second half.
 */
static enum md_res
md_index(int fd, uint64_t lim, int lead, struct md_ix *ix)
{
	struct md_ix	 b;
	struct md_msg	*m;
	sigset_t	 all, old;
	pthread_t	 th;
	int		 threaded = 0;

	memset(ix, 0, sizeof(*ix));
	ix->fd = fd;
	ix->lim = lim;
	ix->lead = lead;
	if (lim == 0)
		return MD_OK;
	if (lim < md_split_min || lim < 2 ||
	    (!md_split_force && sysconf(_SC_NPROCESSORS_ONLN) < 2)) {
		(void)md_ix_run(ix);
		if (ix->r != MD_OK)
			md_ix_free(ix);
		return ix->r;
	}
	memset(&b, 0, sizeof(b));
	b.fd = fd;
	b.start = ix->stop = md_split_at > 0 && md_split_at < lim ?
	    md_split_at : lim / 2;
	b.lim = lim;
	/* Signals stay with the calling thread. */
	(void)sigfillset(&all);
	if (pthread_sigmask(SIG_SETMASK, &all, &old) == 0) {
		threaded = pthread_create(&th, NULL, md_ix_run, &b) == 0;
		(void)pthread_sigmask(SIG_SETMASK, &old, NULL);
	}
	(void)md_ix_run(ix);
	if (threaded) {
		if (pthread_join(th, NULL) != 0)
			fatalx("pthread_join failed");
	} else if (ix->r == MD_OK && ix->done)
		(void)md_ix_run(&b);
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
			memcpy(m + ix->n, b.msg, b.n * sizeof(*m));
			ix->msg = m;
			ix->n += b.n;
		}
	}
	md_ix_free(&b);
	if (ix->r != MD_OK)
		md_ix_free(ix);
	return ix->r;
}

/* A pseudo-message at the top is hidden: *hidden = its record's end. */
static void
md_ix_hide(struct md_ix *ix, uint64_t lim, uint64_t *hidden)
{
	*hidden = 0;
	if (ix->n == 0 || ix->pseudo != 3)
		return;
	*hidden = ix->n > 1 ? ix->msg[1].from : lim;
	memmove(ix->msg, ix->msg + 1, (ix->n - 1) * sizeof(ix->msg[0]));
	ix->n--;
}

static int
md_twincmp(const void *a, const void *b, void *arg)
{
	const struct md_msg	*msg = arg;
	uint32_t		 i = *(const uint32_t *)a;
	uint32_t		 j = *(const uint32_t *)b;
	int			 c;

	if ((c = memcmp(msg[i].hash, msg[j].hash, sizeof(msg[i].hash))) != 0)
		return c;
	return i < j ? -1 : i > j;
}

/* Numbers byte-identical twins 1, 2, ... in file order. */
static enum md_res
md_twins(struct maildrop *md)
{
	uint32_t	*ord, i, t;

	if (md->n < 2)
		return MD_OK;
	if ((ord = reallocarray(NULL, md->n, sizeof(*ord))) == NULL) {
		pop_log(LOG_ERR, "index: %s", strerror(errno));
		return MD_TEMP;
	}
	for (i = 0; i < md->n; i++)
		ord[i] = i;
	qsort_r(ord, md->n, sizeof(*ord), md_twincmp, md->msg);
	for (i = 1, t = 0; i < md->n; i++) {
		if (memcmp(md->msg[ord[i]].hash, md->msg[ord[i - 1]].hash,
		    sizeof(md->msg[0].hash)) == 0)
			md->msg[ord[i]].twin = ++t;
		else
			t = 0;
	}
	free(ord);
	return MD_OK;
}

/*
 * The journal.
 */

static void
md_le64(unsigned char *p, uint64_t v)
{
	int	i;

	for (i = 0; i < 8; i++)
		p[i] = (unsigned char)(v >> (8 * i));
}

static uint64_t
md_get64(const unsigned char *p)
{
	uint64_t	v = 0;
	int		i;

	for (i = 7; i >= 0; i--)
		v = v << 8 | p[i];
	return v;
}

static void
md_sha(const void *p, size_t n, unsigned char *out)
{
	struct sha256_ctx	ctx;

	sha256_init(&ctx);
	sha256_update(&ctx, n, p);
	sha256_digest(&ctx, 32, out);
}

/* Where the journaled octets start: after a table of x extents. */
static uint64_t
md_jdata(uint64_t x)
{
	return (MD_JTAB + x * MD_JREC + MD_JBLK - 1) & ~(uint64_t)(MD_JBLK - 1);
}

/* Encodes h into p (MD_JHDR octets) and sets h->hh. */
static void
md_jencode(struct md_jhdr *h, unsigned char *p)
{
	memcpy(p, MD_JMAGIC, 8);
	md_le64(p + 8, h->dev);
	md_le64(p + 16, h->ino);
	md_le64(p + 24, h->d);
	md_le64(p + 32, h->f);
	md_le64(p + 40, h->n);
	md_le64(p + 48, h->l);
	md_le64(p + 56, h->x);
	md_le64(p + 64, h->j);
	memcpy(p + 72, h->hc, 32);
	memcpy(p + 104, h->ht, 32);
	md_sha(p, 136, h->hh);
	memcpy(p + 136, h->hh, 32);
}

/*
 * Decodes the header of got octets at p: 0, -1 if it is not a valid one,
 * 1 if it is a valid header of an older pop3d's journal (magic POP3DJ1,
 * 88 octets and their SHA-256).
 */
static int
md_jdecode(const unsigned char *p, size_t got, struct md_jhdr *h)
{
	unsigned char	dg[32];

	if (got >= MD_JHDR1 && memcmp(p, MD_JMAGIC1, 8) == 0) {
		md_sha(p, MD_JHDR1 - 32, dg);
		return memcmp(dg, p + MD_JHDR1 - 32, 32) == 0 ? 1 : -1;
	}
	if (got < MD_JHDR || memcmp(p, MD_JMAGIC, 8) != 0)
		return -1;
	md_sha(p, 136, dg);
	if (memcmp(dg, p + 136, 32) != 0)
		return -1;
	h->dev = md_get64(p + 8);
	h->ino = md_get64(p + 16);
	h->d = md_get64(p + 24);
	h->f = md_get64(p + 32);
	h->n = md_get64(p + 40);
	h->l = md_get64(p + 48);
	h->x = md_get64(p + 56);
	h->j = md_get64(p + 64);
	memcpy(h->hc, p + 72, 32);
	memcpy(h->ht, p + 104, 32);
	memcpy(h->hh, dg, 32);
	if (h->d > h->f || h->n > h->f - h->d || h->l != h->f - h->d - h->n ||
	    h->x > MD_JEXT_MAX || h->j > h->n)
		return -1;
	return 0;
}

/* copy_file_range(2), one of the wrapped writes. */
static ssize_t
md_cfr(int src, uint64_t *off, int dst, uint64_t *doff, size_t n)
{
	off_t	o = (off_t)*off, d = (off_t)*doff;
	ssize_t	r;

	if (MD_FAULT())
		return -1;
	r = copy_file_range(src, &o, dst, &d, n, 0);
	if (r > 0) {
		*off += (uint64_t)r;
		*doff += (uint64_t)r;
	}
	return r;
}

/*
 * Copies [off, off + len) of src to dst at doff (dst -1: only hashes into
 * ctx).  A plain copy goes through copy_file_range(2): one copy in the
 * kernel, none through user space; read and write where it cannot.  The
 * two ranges never overlap when src and dst are the same file.
 */
static int
md_copy(int src, uint64_t off, uint64_t len, int dst, uint64_t doff,
    struct sha256_ctx *ctx)
{
	static int	nocfr;
	size_t		n;
	ssize_t		r;

	while (len > 0 && ctx == NULL && dst != -1 && !nocfr) {
		n = len > MD_BLOCK * 16 ? MD_BLOCK * 16 : (size_t)len;
		if ((r = md_cfr(src, &off, dst, &doff, n)) == -1) {
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
		md_dot_refresh();
	}
	while (len > 0) {
		n = len > MD_BLOCK ? MD_BLOCK : (size_t)len;
		if (md_preadx(src, md_blk, n, off) == -1)
			return -1;
		if (ctx != NULL)
			sha256_update(ctx, n, md_blk);
		if (dst != -1 && md_pwrite(dst, md_blk, n, doff) == -1)
			return -1;
		off += n;
		doff += n;
		len -= n;
		md_dot_refresh();
	}
	return 0;
}

/*
 * Moves len octets of fd from s down to d < s, where the two ranges
 * overlap: forward, a block at a time, each read before it is written
 * over (copy_file_range(2) refuses overlapping ranges).
 */
static int
md_shift(int fd, uint64_t s, uint64_t d, uint64_t len)
{
	size_t	n;

	while (len > 0) {
		n = len > MD_BLOCK ? MD_BLOCK : (size_t)len;
		if (md_preadx(fd, md_blk, n, s) == -1 ||
		    md_pwrite(fd, md_blk, n, d) == -1)
			return -1;
		s += n;
		d += n;
		len -= n;
		md_dot_refresh();
	}
	return 0;
}

static int
md_hashrange(int fd, uint64_t off, uint64_t len, unsigned char *dg)
{
	struct sha256_ctx	ctx;

	sha256_init(&ctx);
	if (md_copy(fd, off, len, -1, 0, &ctx) == -1)
		return -1;
	sha256_digest(&ctx, 32, dg);
	return 0;
}

/* md_hashrange() in a thread of its own (see md_jwrite()). */
struct md_hjob {
	int		 fd;
	uint64_t	 off, len;
	unsigned char	 dg[32];
	int		 err;		/* 0, or the errno of a failure */
};

static void *
md_hjob_run(void *arg)
{
	struct md_hjob		*h = arg;
	struct sha256_ctx	 ctx;
	unsigned char		*buf;
	uint64_t		 off = h->off, len = h->len;
	size_t			 n;

	h->err = 0;
	/* Reads of MD_IX_BLOCK: as fast, and less memory than MD_BLOCK. */
	if ((buf = malloc(MD_IX_BLOCK)) == NULL) {
		h->err = errno;
		return NULL;
	}
	sha256_init(&ctx);
	for (; len > 0; off += n, len -= n) {
		n = len > MD_IX_BLOCK ? MD_IX_BLOCK : (size_t)len;
		if (md_preadx(h->fd, buf, n, off) == -1) {
			h->err = errno;
			break;
		}
		sha256_update(&ctx, n, buf);
	}
	sha256_digest(&ctx, 32, h->dg);
	free(buf);
	return NULL;
}

/* Keeps a journal we must not apply or remove, under another name. */
static void
md_jaside(const char *jpath)
{
	char	aside[MD_PATH + 32];
	int	r;

	r = snprintf(aside, sizeof(aside), "%s.%lld", jpath,
	    (long long)time(NULL));
	if (r < 0 || (size_t)r >= sizeof(aside) ||
	    md_rename(jpath, aside) == -1)
		pop_log(LOG_ERR, "cannot rename %s aside: %s", jpath,
		    strerror(errno));
	else
		pop_log(LOG_ERR, "kept the journal as %s", aside);
}

/* Writes the extent table at MD_JTAB; its digest into ht. */
static int
md_jwtab(int jfd, const struct md_ext *ext, uint64_t x, unsigned char *ht)
{
	struct sha256_ctx	ctx;
	uint64_t		i, off = MD_JTAB;
	size_t			n = 0;

	sha256_init(&ctx);
	for (i = 0; i < x; i++) {
		md_le64(md_blk + n, ext[i].s);
		md_le64(md_blk + n + 8, ext[i].d);
		md_le64(md_blk + n + 16, ext[i].len);
		md_le64(md_blk + n + 24, ext[i].joff);
		n += MD_JREC;
		if (n == MD_BLOCK || i + 1 == x) {
			sha256_update(&ctx, n, md_blk);
			if (md_pwrite(jfd, md_blk, n, off) == -1)
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
 * and the rules md_jplan() made it by: destinations back to back from D
 * to D+N, sources in order, not before their destination and not past
 * F, an extent moved within the mailbox never overlapping its own source,
 * journaled octets back to back from md_jdata(X), J of them.  0; -1 on a
 * read error (errno); 1 if the table is not valid.
 */
static int
md_jrtab(int jfd, const struct md_jhdr *h, struct md_ext **out)
{
	struct sha256_ctx	 ctx;
	struct md_ext		*ext, *e;
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
	for (i = 0, left = h->x * MD_JREC; left > 0; left -= n) {
		n = left > MD_BLOCK ? MD_BLOCK : (size_t)left;
		if ((r = md_pread(jfd, md_blk, n, MD_JTAB + i * MD_JREC)) !=
		    (ssize_t)n) {
			free(ext);
			return r == -1 ? -1 : 1;
		}
		sha256_update(&ctx, n, md_blk);
		for (k = 0; k < n; k += MD_JREC, i++) {
			ext[i].s = md_get64(md_blk + k);
			ext[i].d = md_get64(md_blk + k + 8);
			ext[i].len = md_get64(md_blk + k + 16);
			ext[i].joff = md_get64(md_blk + k + 24);
		}
	}
	sha256_digest(&ctx, 32, dg);
	pos = md_jdata(h->x);
	for (i = 0; i < h->x && memcmp(dg, h->ht, 32) == 0; i++) {
		e = &ext[i];
		if (e->d != d || e->s < s || e->s < d || e->s > h->f ||
		    e->len == 0 || e->len > h->f - e->s)
			break;
		if (e->joff == MD_JNONE) {
			if (e->s - e->d < e->len)
				break;
		} else if (e->joff != pos)
			break;
		else
			pos += e->len;
		d += e->len;
		s = e->s + e->len;
	}
	if (memcmp(dg, h->ht, 32) != 0 || i < h->x || d != h->d + h->n ||
	    pos - md_jdata(h->x) != h->j) {
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
md_jslots(struct md_jstate *js)
{
	unsigned char	b[MD_JSLOTLEN], dg[32];
	uint64_t	seq, p;
	ssize_t		r;
	int		i, found = 0;

	js->p = js->seq = 0;
	for (i = 0; i < 2; i++) {
		if ((r = md_pread(js->fd, b, sizeof(b), MD_JSLOT(i))) == -1)
			return -1;
		if (r != (ssize_t)sizeof(b) || memcmp(b, MD_JPMAGIC, 8) != 0 ||
		    memcmp(b + 24, js->h.hh, 16) != 0)
			continue;
		md_sha(b, 40, dg);
		seq = md_get64(b + 8);
		p = md_get64(b + 16);
		if (memcmp(dg, b + 40, 32) != 0 || p > js->h.x ||
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
 * The slot of the record before it stays as it was.
 */
static int
md_jprogress(struct maildrop *md, struct md_jstate *js, uint64_t p)
{
	unsigned char	b[MD_JSLOTLEN];

	memcpy(b, MD_JPMAGIC, 8);
	md_le64(b + 8, js->seq + 1);
	md_le64(b + 16, p);
	memcpy(b + 24, js->h.hh, 16);
	md_sha(b, 40, b + 40);
	if (md_fdatasync(md->fd) == -1 ||
	    md_pwrite(js->fd, b, sizeof(b), MD_JSLOT((js->seq + 1) & 1)) ==
	    -1 || md_fdatasync(js->fd) == -1)
		return -1;
	js->seq++;
	js->p = p;
	return 0;
}

/*
 * Plans the moves of js->ext[0..h.x) (s and len set; destinations back
 * to back from h.d): sets each d and joff, and h.n, h.l, h.j.  An extent
 * goes through the journal when its move would overwrite its own source
 * (a shift below its length) or its shift is below MD_JSHIFT.
 */
static void
md_jplan(struct md_jstate *js, uint64_t jshift)
{
	struct md_ext	*e;
	uint64_t	 i, d = js->h.d, pos = md_jdata(js->h.x);

	for (i = 0; i < js->h.x; i++) {
		e = &js->ext[i];
		e->d = d;
		if (e->s - d < e->len || e->s - d < jshift) {
			e->joff = pos;
			pos += e->len;
		} else
			e->joff = MD_JNONE;
		d += e->len;
	}
	js->h.n = d - js->h.d;
	js->h.l = js->h.f - d;
	js->h.j = pos - md_jdata(js->h.x);
}

/* Writes md_blk[0, fill) at *pos of the journal (see md_jwdata()). */
static int
md_jwblk(int jfd, int *direct, int flags, uint64_t *pos, size_t fill)
{
	size_t	n = fill;

	if (*direct) {
		/* Whole blocks: the padding is past the J octets. */
		n = (fill + MD_JBLK - 1) & ~(size_t)(MD_JBLK - 1);
		memset(md_blk + fill, 0, n - fill);
		if (md_pwrite(jfd, md_blk, n, *pos) == -1) {
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
	if (!*direct && md_pwrite(jfd, md_blk, n, *pos) == -1)
		return -1;
	*pos += fill;
	return 0;
}

/*
 * Writes the octets of the journaled extents of js to jfd, back to back
 * from md_jdata(X), with O_DIRECT where the file system allows it: only a
 * repair reads them, so they need not be copied into the page cache, nor
 * its pages dropped when the journal is removed (with 350 MB journaled,
 * and the moves copied from the mailbox rather than read back from the
 * journal, the update took a third less time).
 */
static int
md_jwdata(struct maildrop *md, int jfd, const struct md_jstate *js)
{
	const struct md_ext	*e;
	uint64_t		 i, off, left, pos = md_jdata(js->h.x);
	size_t			 fill = 0, n;
	int			 flags, direct;

	if (js->h.j == 0)
		return 0;
	if ((flags = fcntl(jfd, F_GETFL)) == -1)
		return -1;
	direct = fcntl(jfd, F_SETFL, flags | O_DIRECT) == 0;
	for (i = 0; i < js->h.x; i++) {
		e = &js->ext[i];
		if (e->joff == MD_JNONE)
			continue;
		for (off = e->s, left = e->len; left > 0; left -= n) {
			n = left > MD_BLOCK - fill ? MD_BLOCK - fill :
			    (size_t)left;
			if (md_preadx(md->fd, md_blk + fill, n, off) == -1)
				return -1;
			fill += n;
			off += n;
			if (fill == MD_BLOCK) {
				if (md_jwblk(jfd, &direct, flags, &pos,
				    fill) == -1)
					return -1;
				fill = 0;
			}
			md_dot_refresh();
		}
	}
	if (fill > 0 && md_jwblk(jfd, &direct, flags, &pos, fill) == -1)
		return -1;
	if (direct && fcntl(jfd, F_SETFL, flags) == -1)
		return -1;
	if (!direct)
		md_writeback(jfd, md_jdata(js->h.x), js->h.j);
	return 0;
}

/*
 * Writes the journal of js (header fields, table planned) to path,
 * created, never there before: the journaled extents' octets, the table,
 * fsync, the header, fsync.  js->fd is then the open journal, with no
 * progress.  0, or -1 (nothing left behind).
 */
static int
md_jwrite(struct maildrop *md, const char *path, struct md_jstate *js)
{
	unsigned char		 hdr[MD_JHDR];
	struct md_hjob		 hj;
	sigset_t		 all, old;
	pthread_t		 th;
	int			 jfd, e2, r, threaded = 0;

	jfd = open(path, O_RDWR | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC,
	    0600);
	if (jfd == -1) {
		pop_log(LOG_ERR, "cannot create journal %s: %s", path,
		    strerror(errno));
		return -1;
	}
	/* The digest of the cut octets (SHA-256 at 1-2 GB/s: 40 ms for a
	 * tenth of 350 MB) on the other CPU while the journal is written. */
	hj.fd = md->fd;
	hj.off = js->h.d + js->h.n;
	hj.len = js->h.l;
	(void)sigfillset(&all);
	if (hj.len >= MD_BLOCK &&
	    pthread_sigmask(SIG_SETMASK, &all, &old) == 0) {
		threaded = pthread_create(&th, NULL, md_hjob_run, &hj) == 0;
		(void)pthread_sigmask(SIG_SETMASK, &old, NULL);
	}
	r = md_jwdata(md, jfd, js) == -1 ||
	    md_jwtab(jfd, js->ext, js->h.x, js->h.ht) == -1 ? -1 : 0;
	e2 = errno;
	if (threaded && pthread_join(th, NULL) != 0)
		fatalx("pthread_join failed");
	if (r == -1) {
		errno = e2;
		goto fail;
	}
	if (!threaded)
		(void)md_hjob_run(&hj);
	if (hj.err != 0) {
		errno = hj.err;
		goto fail;
	}
	memcpy(js->h.hc, hj.dg, 32);
	/* All of it on disk first: then a valid header means a complete
	 * journal. */
	md_jencode(&js->h, hdr);
	if (md_fdatasync(jfd) == -1 ||
	    md_pwrite(jfd, hdr, sizeof(hdr), 0) == -1 ||
	    md_fdatasync(jfd) == -1)
		goto fail;
	js->fd = jfd;
	js->p = js->seq = 0;
	return 0;
fail:
	e2 = errno;
	pop_log(LOG_ERR, "cannot write journal %s: %s", path, strerror(e2));
	(void)close(jfd);
	if (md_unlink(path) == -1)
		pop_log(LOG_ERR, "cannot remove %s: %s", path,
		    strerror(errno));
	errno = e2;
	return -1;
}

/*
 * The moves of js from extent js->p on, in order, then a progress record
 * of all: every kept octet is then at its place and on disk.  Before a
 * destination is written over the source of an earlier extent that is
 * not done on disk and not in the journal, a progress record frees that
 * source (see md_compact()).  The first time, every extent is copied from
 * its source, which no earlier move has touched.  A redo (repair) starts
 * from the last record and copies a journaled extent from the journal
 * (its source may be overwritten), any other from its source, which
 * nothing before its record overwrites.
 */
static int
md_moves(struct maildrop *md, struct md_jstate *js, int redo)
{
	const struct md_ext	*e, *w;
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
			if (w->joff == MD_JNONE && w->s + w->len > e->d)
				break;
		}
		if (k < j && js->ext[k].s < e->d + e->len) {
			if (md_jprogress(md, js, j) == -1)
				return -1;
			k = j;
			wb = 0;
		}
		/* In pieces, forward; writeback of the destinations (back
		 * to back) is started every MD_WBACK octets. */
		for (o = 0; o < e->len; o += n) {
			n = e->len - o > MD_WBACK ? MD_WBACK : e->len - o;
			if (redo && e->joff != MD_JNONE) {
				if (md_copy(js->fd, e->joff + o, n, md->fd,
				    e->d + o, NULL) == -1)
					return -1;
			} else if (e->s - e->d < e->len) {
				if (md_shift(md->fd, e->s + o, e->d + o, n) ==
				    -1)
					return -1;
			} else if (md_copy(md->fd, e->s + o, n, md->fd,
			    e->d + o, NULL) == -1)
				return -1;
			if ((wb += n) >= MD_WBACK) {
				md_writeback(md->fd, e->d + o + n - wb, wb);
				wb = 0;
			}
		}
	}
	if (js->p < js->h.x && md_jprogress(md, js, js->h.x) == -1)
		return -1;
	return 0;
}

/*
 * Applies a journal that is on disk, from its progress on: the moves,
 * truncate to D+N, fsync, remove the journal, fsync the directory.
 * Every step can be repeated: D+N <= F, and the truncate comes after the
 * record that all moves are done.
 */
static enum md_res
md_apply(struct maildrop *md, struct md_jstate *js, int redo,
    const char *jpath)
{
	if (md_moves(md, js, redo) == -1 ||
	    md_ftruncate(md->fd, js->h.d + js->h.n) == -1 ||
	    md_fdatasync(md->fd) == -1) {
		pop_log(LOG_ERR, "update of %s: %s", md->path,
		    strerror(errno));
		return MD_TEMP;
	}
	if (md_unlink(jpath) == -1 || md_fsyncdir(md) == -1) {
		pop_log(LOG_ERR, "update of %s: journal %s: %s", md->path,
		    jpath, strerror(errno));
		return MD_TEMP;
	}
	return MD_OK;
}

/*
 * Repair (called under the spool locks, before indexing, and after a
 * failed apply).  A journal without a valid header was never applied:
 * the mailbox is intact, the journal goes.  A journal for another file
 * (dev/ino) is renamed aside, never applied.  Otherwise the mailbox is in
 * one of two states:
 *   before the truncate: size >= F and [D+N, F) still hashes to the cut
 *     part (no move ever writes there).  The moves are done again from
 *     the last progress record.  Mail appended since is [F, cur): it is
 *     then moved to D+N by a journal of its own (one extent, F' = cur,
 *     D' = D+N), written to a temporary name and renamed over the old
 *     one, which is done by then.  Then the truncate.
 *   after the truncate: the last progress record says all moves are done
 *     and the file is at least D+N long (appended mail is [D+N, cur)).
 *     Only the fsync and the removal of the journal may be missing.
 * Anything else: the mailbox stays untouched, the journal is kept aside,
 * MD_PERM.  *done is set when an update was completed.
 */
static enum md_res
md_repair(struct maildrop *md, int *done)
{
	char		 jpath[MD_PATH], tpath[MD_PATH + 8];
	unsigned char	 hdr[MD_JHDR], dg[32];
	struct md_jstate js, js2;
	struct md_ext	 ext;
	struct stat	 jst, st;
	enum md_res	 r;
	uint64_t	 appended, redone;
	ssize_t		 got;
	int		 v;

	*done = 0;
	if (md_jpath(md, jpath, sizeof(jpath)) == -1 ||
	    snprintf(tpath, sizeof(tpath), "%s.tmp", jpath) >=
	    (int)sizeof(tpath)) {
		pop_log(LOG_ERR, "mailbox path too long: %s", md->path);
		return MD_PERM;
	}
	memset(&js, 0, sizeof(js));
	js.fd = open(jpath, O_RDWR | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
	if (js.fd == -1) {
		if (errno == ENOENT)
			return MD_OK;
		pop_log(LOG_ERR, "cannot open journal %s: %s", jpath,
		    strerror(errno));
		return errno == ELOOP ? MD_PERM : MD_TEMP;
	}
	if (fstat(js.fd, &jst) == -1 || fstat(md->fd, &st) == -1) {
		pop_log(LOG_ERR, "fstat: %s", strerror(errno));
		r = MD_TEMP;
		goto out;
	}
	if (!S_ISREG(jst.st_mode) || jst.st_uid != md->user->uid ||
	    jst.st_nlink != 1) {
		pop_log(LOG_ERR, "journal %s is not a regular file of the "
		    "user with one link: refused", jpath);
		r = MD_PERM;
		goto out;
	}
	if ((got = md_pread(js.fd, hdr, sizeof(hdr), 0)) == -1) {
		pop_log(LOG_ERR, "read %s: %s", jpath, strerror(errno));
		r = MD_TEMP;
		goto out;
	}
	if ((v = md_jdecode(hdr, (size_t)got, &js.h)) == 1) {
		pop_log(LOG_ERR, "journal %s is an older pop3d's: complete "
		    "the update with that version", jpath);
		md_jaside(jpath);
		r = MD_PERM;
		goto out;
	}
	if (v == -1) {
		/* Never applied: the mailbox is as it was. */
		if (md_unlink(jpath) == -1 || md_fsyncdir(md) == -1) {
			pop_log(LOG_ERR, "cannot remove journal %s: %s", jpath,
			    strerror(errno));
			r = MD_TEMP;
			goto out;
		}
		pop_log(LOG_NOTICE, "removed the journal of an update of %s "
		    "that never started", md->path);
		r = MD_OK;
		goto out;
	}
	if (js.h.dev != (uint64_t)st.st_dev || js.h.ino != (uint64_t)st.st_ino) {
		pop_log(LOG_ERR, "journal %s is for another file than %s: "
		    "not applied", jpath, md->path);
		md_jaside(jpath);
		r = MD_OK;
		goto out;
	}
	if ((v = md_jrtab(js.fd, &js.h, &js.ext)) == -1 ||
	    md_jslots(&js) == -1) {
		pop_log(LOG_ERR, "read %s: %s", jpath, strerror(errno));
		r = MD_TEMP;
		goto out;
	}
	if (v == 1 || (js.h.j > 0 &&
	    (uint64_t)jst.st_size < md_jdata(js.h.x) + js.h.j)) {
		pop_log(LOG_ERR, "journal %s is damaged: %s left as it is",
		    jpath, md->path);
		md_jaside(jpath);
		r = MD_PERM;
		goto out;
	}
	redone = js.h.x - js.p;
	appended = (uint64_t)st.st_size > js.h.f ?
	    (uint64_t)st.st_size - js.h.f : 0;
	if ((uint64_t)st.st_size >= js.h.f &&
	    md_hashrange(md->fd, js.h.d + js.h.n, js.h.l, dg) == -1) {
		pop_log(LOG_ERR, "read %s: %s", md->path, strerror(errno));
		r = MD_TEMP;
		goto out;
	}
	if ((uint64_t)st.st_size >= js.h.f && memcmp(dg, js.h.hc, 32) == 0) {
		if (md_moves(md, &js, 1) == -1) {
			pop_log(LOG_ERR, "update of %s: %s", md->path,
			    strerror(errno));
			r = MD_TEMP;
			goto out;
		}
		if (appended > 0) {
			/* [D+N, F) is cut away, the new mail follows it. */
			memset(&js2, 0, sizeof(js2));
			js2.h = js.h;
			js2.h.d = js.h.d + js.h.n;
			js2.h.f = (uint64_t)st.st_size;
			js2.h.x = 1;
			js2.ext = &ext;
			ext.s = js.h.f;
			ext.len = appended;
			md_jplan(&js2, MD_JSHIFTNOW());
			if (unlink(tpath) == -1 && errno != ENOENT) {
				pop_log(LOG_ERR, "cannot remove %s: %s", tpath,
				    strerror(errno));
				r = MD_TEMP;
				goto out;
			}
			if (md_jwrite(md, tpath, &js2) == -1) {
				r = MD_TEMP;
				goto out;
			}
			if (md_rename(tpath, jpath) == -1 ||
			    md_fsyncdir(md) == -1) {
				pop_log(LOG_ERR, "cannot rename %s: %s", tpath,
				    strerror(errno));
				(void)close(js2.fd);
				r = MD_TEMP;
				goto out;
			}
			r = md_apply(md, &js2, 0, jpath);
			(void)close(js2.fd);
		} else
			r = md_apply(md, &js, 1, jpath);
		if (r != MD_OK)
			goto out;
		pop_log(LOG_NOTICE, "repaired an interrupted update of %s: "
		    "%llu of %llu moves redone from %llu, %llu octets "
		    "removed, %llu appended since kept", md->path,
		    (unsigned long long)redone, (unsigned long long)js.h.x,
		    (unsigned long long)js.h.d, (unsigned long long)js.h.l,
		    (unsigned long long)appended);
		*done = 1;
		goto out;
	}
	if (js.p == js.h.x && (uint64_t)st.st_size >= js.h.d + js.h.n) {
		if (md_fdatasync(md->fd) == -1 || md_unlink(jpath) == -1 ||
		    md_fsyncdir(md) == -1) {
			pop_log(LOG_ERR, "update of %s: %s", md->path,
			    strerror(errno));
			r = MD_TEMP;
			goto out;
		}
		pop_log(LOG_NOTICE, "completed an interrupted update of %s "
		    "(already truncated to %llu octets)", md->path,
		    (unsigned long long)(js.h.d + js.h.n));
		*done = 1;
		r = MD_OK;
		goto out;
	}
	pop_log(LOG_ERR, "%s fits neither state of its update journal "
	    "(size %lld, journal D=%llu N=%llu F=%llu, %llu of %llu moves "
	    "done): left as it is", md->path, (long long)st.st_size,
	    (unsigned long long)js.h.d, (unsigned long long)js.h.n,
	    (unsigned long long)js.h.f, (unsigned long long)js.p,
	    (unsigned long long)js.h.x);
	md_jaside(jpath);
	r = MD_PERM;
out:
	free(js.ext);
	if (close(js.fd) == -1 && r == MD_OK && !*done)
		r = MD_TEMP;
	return r;
}

/*
 * Open, stream, UIDL, update, close.
 */

/*
 * Remembers the file's state at a verification (under the spool locks):
 * any later write changes its size, ctime or mtime.  But file times come
 * from a coarse clock (a tick of milliseconds; a second on some file
 * systems), and a write in the same tick as the recorded ctime may leave
 * all three as they were: a ctime less than a second before now is
 * recorded as one that no stat equals, so the next md_check() verifies.
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

enum md_res
md_open(struct maildrop *md, const struct pop_user *user)
{
	struct md_ix	ix;
	struct stat	st;
	enum md_res	r;
	int		done, e;

	memset(md, 0, sizeof(*md));
	md->fd = -1;
	md->user = user;
	if (snprintf(md->path, sizeof(md->path), "%s", user->mailbox) >=
	    (int)sizeof(md->path) ||
	    snprintf(md->lockpath, sizeof(md->lockpath), "%s.lock",
	    user->mailbox) >= (int)sizeof(md->lockpath)) {
		pop_log(LOG_ERR, "mailbox path too long");
		return MD_PERM;
	}
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
	if (!S_ISREG(st.st_mode) || st.st_uid != user->uid ||
	    st.st_nlink != 1) {
		pop_log(LOG_ERR, "mailbox %s refused: %s", md->path,
		    !S_ISREG(st.st_mode) ? "not a regular file" :
		    st.st_uid != user->uid ? "not owned by the user" :
		    "it has more than one link");
		r = MD_PERM;
		goto fail;
	}
	if (flock(md->fd, LOCK_EX | LOCK_NB) == -1) {
		if (errno == EWOULDBLOCK) {
			r = MD_INUSE;
			goto fail;
		}
		pop_log(LOG_ERR, "flock %s: %s", md->path, strerror(errno));
		r = MD_TEMP;
		goto fail;
	}
	if ((r = md_spool_lock(md)) != MD_OK)
		goto fail;
	if ((r = md_repair(md, &done)) != MD_OK) {
		md_spool_unlock(md);
		goto fail;
	}
	if (fstat(md->fd, &st) == -1) {
		pop_log(LOG_ERR, "fstat %s: %s", md->path, strerror(errno));
		md_spool_unlock(md);
		r = MD_TEMP;
		goto fail;
	}
	md->dev = st.st_dev;
	md->ino = st.st_ino;
	md->indexed = (uint64_t)st.st_size;
	md_vstat(md, &st);
	r = md_index(md->fd, md->indexed, 1, &ix);
	md_spool_unlock(md);
	if (r != MD_OK) {
		pop_log(LOG_ERR, "cannot index %s", md->path);
		goto fail;
	}
	md_ix_hide(&ix, md->indexed, &md->hidden_end);
	md->msg = ix.msg;
	md->n = ix.n;
	if ((r = md_twins(md)) != MD_OK)
		goto fail;
	return MD_OK;
fail:
	md_close(md);
	return r;
}

static enum md_res	md_check(struct maildrop *, uint64_t *);

/*
 * Is the file still what we indexed?  Without the spool locks when size,
 * ctime and mtime are those of the last verification (nothing was
 * written); else md_check() under them, once per change: appended mail
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
	if ((r = md_spool_lock(md)) != MD_OK)
		return r == MD_PERM ? MD_TEMP : r;
	r = md_check(md, &size);
	md_spool_unlock(md);
	return r;
}

/* The digest of message m as the file holds it now (stream check). */
static int
md_msghash(const struct maildrop *md, const struct md_msg *m,
    unsigned char *out)
{
	struct sha256_ctx	ctx;
	unsigned char		dg[SHA256_DIGEST_SIZE];
	uint64_t		hlen, flen = m->data - m->from;

	hlen = md->indexed - m->data;
	if (hlen > MD_HASH_MAX)
		hlen = MD_HASH_MAX;
	if (flen > MD_FROM_MAX || md_preadx(md->fd, md_blk, flen + hlen,
	    m->from) == -1)
		return -1;
	sha256_init(&ctx);
	sha256_update(&ctx, flen, md_blk);
	(void)md_hdrhash(&ctx, md_blk + flen, hlen, 1, NULL);
	sha256_digest(&ctx, sizeof(dg), dg);
	memcpy(out, dg, 16);
	return 0;
}

struct md_out {
	int	(*put)(void *, const char *, size_t);
	void	 *arg;
	size_t	  len;
	int	  err;
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

enum md_res
md_stream(struct maildrop *md, uint32_t i, long lines,
    int (*put)(void *, const char *, size_t), void *arg)
{
	const struct md_msg	*m;
	const unsigned char	*p, *q, *nl, *seg;
	struct md_out		 o;
	enum md_res		 r;
	unsigned char		 dg[16];
	unsigned char		*d = md_sbuf + 32;
	uint64_t		 off;
	size_t			 n, llen = 0;
	long			 body = 0;
	int			 bol = 1, cr = 0, hdr = 1, prev = '\n';
#ifdef MD_AVX2
	size_t			 c;
#endif

	if (i >= md->n || md->fd == -1)
		return MD_TEMP;
	m = &md->msg[i];
	if ((r = md_current(md)) != MD_OK)
		return r;
	if (md_msghash(md, m, dg) == -1) {
		pop_log(LOG_ERR, "read %s: %s", md->path, strerror(errno));
		return MD_TEMP;
	}
	if (memcmp(dg, m->hash, sizeof(dg)) != 0) {
		pop_log(LOG_ERR, "%s was rewritten under the session: message "
		    "%u changed", md->path, i + 1);
		return MD_CHANGED;
	}
	o.put = put;
	o.arg = arg;
	o.len = 0;
	o.err = 0;
	for (off = m->data; off < m->end && !o.err; off += n) {
		n = m->end - off > MD_BLOCK ? MD_BLOCK : (size_t)(m->end - off);
		if (md_preadx(md->fd, d, n, off) == -1) {
			pop_log(LOG_ERR, "read %s: %s", md->path,
			    strerror(errno));
			return MD_TEMP;
		}
		d[-1] = (unsigned char)prev;
		prev = d[n - 1];
		p = d;
		q = d + n;
#ifdef MD_AVX2
		/* RETR: the bulk in vectors, the rest of the block below. */
		if (lines < 0 && md_avx2()) {
			while (q - p >= 32 && !o.err) {
				c = (MD_OUT - o.len) / 2;
				if (c > (size_t)(q - p))
					c = (size_t)(q - p);
				c &= ~(size_t)31;
				if (c == 0) {
					md_flush(&o);
					continue;
				}
				o.len += md_conv_avx2(p, c, md_obuf + o.len);
				p += c;
			}
			if (p > d) {
				bol = p[-1] == '\n';
				cr = p[-1] == '\r';
			}
		}
#endif
		while (p < q) {
			if (bol && *p == '.')
				md_emit(&o, ".", 1);
			seg = p;
			nl = memchr(p, '\n', (size_t)(q - p));
			p = nl != NULL ? nl : q;
			if (p > seg) {
				md_emit(&o, seg, (size_t)(p - seg));
				cr = p[-1] == '\r';
				llen += (size_t)(p - seg);
				bol = 0;
			}
			if (nl == NULL)
				break;
			md_emit(&o, cr ? "\n" : "\r\n", cr ? 1 : 2);
			p++;
			/* TOP: the header, its empty line, lines more. */
			if (lines >= 0) {
				if (!hdr) {
					if (++body >= lines)
						goto done;
				} else if (llen == 0 || (llen == 1 && cr)) {
					hdr = 0;
					if (lines == 0)
						goto done;
				}
			}
			bol = 1;
			cr = 0;
			llen = 0;
		}
	}
	if (!bol)
		md_emit(&o, cr ? "\n" : "\r\n", cr ? 1 : 2);
done:
	md_flush(&o);
	if (o.err)
		return MD_TEMP;
	/* Written while we read?  The caller then withholds the final ".". */
	return md_current(md);
}

void
md_uidl(const struct maildrop *md, uint32_t i, char *buf, size_t size)
{
	static const char	 hex[] = "0123456789abcdef";
	const struct md_msg	*m;
	char			 id[2 * sizeof(m->hash) + 16];
	size_t			 k;

	if (size == 0)
		return;
	if (i >= md->n) {
		buf[0] = '\0';
		return;
	}
	m = &md->msg[i];
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

/*
 * Under the spool locks: is [0, indexed) of the file (st, as it was
 * before) still what we indexed?  Indexes it again and compares.
 */
static enum md_res
md_verify(struct maildrop *md, const struct stat *st)
{
	struct md_ix	 ix;
	enum md_res	 r;
	uint64_t	 hidden;
	uint32_t	 k;
	const char	*why = NULL;

	if ((uint64_t)st->st_size < md->indexed) {
		pop_log(LOG_ERR, "%s changed under the session (the file "
		    "shrank): nothing deleted", md->path);
		return MD_CHANGED;
	}
	if ((r = md_index(md->fd, md->indexed, 1, &ix)) != MD_OK) {
		if (r == MD_TEMP)
			return r;
		pop_log(LOG_ERR, "%s changed under the session (no longer an "
		    "mbox): nothing deleted", md->path);
		return MD_CHANGED;
	}
	md_ix_hide(&ix, md->indexed, &hidden);
	if (hidden != md->hidden_end || ix.n != md->n)
		why = "messages added or removed";
	for (k = 0; why == NULL && k < md->n; k++)
		if (ix.msg[k].from != md->msg[k].from ||
		    ix.msg[k].data != md->msg[k].data ||
		    ix.msg[k].end != md->msg[k].end ||
		    ix.msg[k].size != md->msg[k].size ||
		    memcmp(ix.msg[k].hash, md->msg[k].hash,
		    sizeof(ix.msg[k].hash)) != 0)
			why = "a message was rewritten";
	free(ix.msg);
	if (why != NULL) {
		pop_log(LOG_ERR, "%s changed under the session (%s): nothing "
		    "deleted", md->path, why);
		return MD_CHANGED;
	}
	return MD_OK;
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
md_check(struct maildrop *md, uint64_t *size)
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

/* Adds len octets of the mailbox at s to the extents of js (merged with
 * the last one when adjacent). */
static void
md_addext(struct md_jstate *js, uint64_t s, uint64_t len)
{
	struct md_ext	*e;

	if (js->h.x > 0) {
		e = &js->ext[js->h.x - 1];
		if (e->s + e->len == s) {
			e->len += len;
			return;
		}
	}
	e = &js->ext[js->h.x++];
	e->s = s;
	e->len = len;
}

/*
 * UPDATE.  Under the spool locks, after md_check():
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
 *   1. Journal: the octets of each extent of (a), and of each extent
 *      shifted by less than MD_JSHIFT; the extent table; fsync; the
 *      header; fsync; fsync the spool directory.  An error: the journal
 *      goes, the mailbox is untouched.
 *   2. The moves, in order, each from its source (none has been touched
 *      yet).  Before a destination is written over the source of an
 *      earlier extent that is not journaled and not yet on disk at its
 *      destination (b), a progress record: fsync the mailbox, write "the
 *      extents before j are done" with the next sequence number into the
 *      older of two checksummed slots, fsync the journal.  So from the
 *      last record on, every extent has its octets in the journal or
 *      intact at its source, and a repair does the moves again from
 *      there.  After the last move, a record of all of them.
 *   3. Truncate to D+N, fsync, unlink the journal, fsync the directory.
 *      No destination lies in the octets [D+N, F) that the truncate cuts
 *      away, so their digest in the header tells before from after.
 *   MD_OK only after all of it.  An error in 2 or 3: one md_repair()
 *   try, else the journal stays for the next session.
 * With every 10th message deleted, shifts grow along the file: a record
 * is needed about every tenth of the offset, each flushing only what was
 * written since (writeback is started after each move).  "fsync" is
 * fdatasync(2) for files: the octets and the size, not the times.  The
 * mailbox keeps its inode, owner and mode.
 */
static enum md_res
md_compact(struct maildrop *md, uint32_t k, uint64_t size)
{
	char		 jpath[MD_PATH];
	struct md_jstate js;
	enum md_res	 r;
	uint64_t	 s, e;
	int		 done;

	if (md_jpath(md, jpath, sizeof(jpath)) == -1) {
		pop_log(LOG_ERR, "mailbox path too long: %s", md->path);
		return MD_TEMP;
	}
	memset(&js, 0, sizeof(js));
	js.h.dev = (uint64_t)md->dev;
	js.h.ino = (uint64_t)md->ino;
	js.h.d = md->msg[k].from;
	js.h.f = size;
	if ((js.ext = reallocarray(NULL, (size_t)(md->n - k) + 1,
	    sizeof(*js.ext))) == NULL) {
		pop_log(LOG_ERR, "update: %s", strerror(errno));
		return MD_TEMP;
	}
	for (; k < md->n; k++) {
		if (md->msg[k].deleted)
			continue;
		s = md->msg[k].from;
		e = k + 1 < md->n ? md->msg[k + 1].from : md->indexed;
		md_addext(&js, s, e - s);
	}
	if (size > md->indexed)
		md_addext(&js, md->indexed, size - md->indexed);
	if (js.h.x == 0) {
		/* Nothing to move: the truncate alone, which a crash does
		 * or does not undo, whole. */
		free(js.ext);
		if (md_ftruncate(md->fd, js.h.d) == -1 ||
		    md_fdatasync(md->fd) == -1) {
			pop_log(LOG_ERR, "update of %s: %s", md->path,
			    strerror(errno));
			return MD_TEMP;
		}
		return MD_OK;
	}
	md_jplan(&js, MD_JSHIFTNOW());
	if (md_jwrite(md, jpath, &js) == -1) {
		free(js.ext);
		return MD_TEMP;
	}
	if (md_fsyncdir(md) == -1) {
		pop_log(LOG_ERR, "fsync spool directory: %s", strerror(errno));
		(void)close(js.fd);
		free(js.ext);
		if (md_unlink(jpath) == -1)
			pop_log(LOG_ERR, "cannot remove %s: %s", jpath,
			    strerror(errno));
		return MD_TEMP;
	}
	r = md_apply(md, &js, 0, jpath);
	(void)close(js.fd);
	free(js.ext);
	if (r == MD_OK)
		return MD_OK;
	if (md_repair(md, &done) == MD_OK && done)
		return MD_OK;
	pop_log(LOG_ERR, "update of %s left to the next session's repair",
	    md->path);
	return MD_TEMP;
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
	if ((r = md_spool_lock(md)) != MD_OK)
		return r == MD_PERM ? MD_TEMP : r;
	if ((r = md_check(md, &size)) == MD_OK)
		r = md_compact(md, k, size);
	md_spool_unlock(md);
	return r;
}

/* Safe on every path, twice, and from a fatal path. */
void
md_close(struct maildrop *md)
{
	md_dot_release(md->lockpath);
	if (md->fd != -1) {
		(void)close(md->fd);
		md->fd = -1;
	}
	free(md->msg);
	md->msg = NULL;
	md->n = 0;
}
