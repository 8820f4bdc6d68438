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
 * See md_update() and md_repair() for the journal protocol.
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
/* Dotlock retry back-off, doubled from MIN up to MAX (milliseconds). */
#define MD_BACKOFF_MIN	50
#define MD_BACKOFF_MAX	1000

/*
 * The journal, SPOOLDIR/.USER.pop3d-journal: a header, then at MD_JDATA
 * the new tail T of the mailbox.  Header: magic, then little-endian
 * 64-bit dev, ino, D, F, N, L, then SHA-256 of the mailbox octets
 * [D+N, F) (cut away by the truncate), SHA-256 of all before it.  T is
 * written and fsynced before the header is written (and fsynced): a valid
 * header means a complete T, without hashing T (SHA-256 runs at about
 * 1 GB/s: a third of a second per 300 MB of every update).
 */
#define MD_JMAGIC	"POP3DJ1\n"
/* Room for a path derived from the mailbox's (journal, its temp, aside). */
#define MD_PATH		(sizeof(((struct maildrop *)0)->path) + 64)
#define MD_JHDR		(8 + 6 * 8 + 2 * 32)
#define MD_JDATA	4096

struct md_jhdr {
	uint64_t	 dev, ino;
	uint64_t	 d;		/* first octet rewritten */
	uint64_t	 f;		/* mailbox size when journaled */
	uint64_t	 n;		/* length of T: new size is d + n */
	uint64_t	 l;		/* f - d - n: octets removed */
	unsigned char	 hc[32];	/* SHA-256 of mailbox [d + n, f) */
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
static unsigned char	md_blk[MD_BLOCK];
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
#else
#define MD_FAULT()	0
#define MD_LOCKWAIT()	MD_LOCK_WAIT
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

static int
md_fsync(int fd)
{
	if (MD_FAULT())
		return -1;
	return fsync(fd);
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
		md_sleep_ms(delay);
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
md_jencode(const struct md_jhdr *h, unsigned char *p)
{
	struct sha256_ctx	ctx;

	memcpy(p, MD_JMAGIC, 8);
	md_le64(p + 8, h->dev);
	md_le64(p + 16, h->ino);
	md_le64(p + 24, h->d);
	md_le64(p + 32, h->f);
	md_le64(p + 40, h->n);
	md_le64(p + 48, h->l);
	memcpy(p + 56, h->hc, 32);
	sha256_init(&ctx);
	sha256_update(&ctx, 88, p);
	sha256_digest(&ctx, 32, p + 88);
}

static int
md_jdecode(const unsigned char *p, struct md_jhdr *h)
{
	struct sha256_ctx	ctx;
	unsigned char		dg[32];

	if (memcmp(p, MD_JMAGIC, 8) != 0)
		return -1;
	sha256_init(&ctx);
	sha256_update(&ctx, 88, p);
	sha256_digest(&ctx, 32, dg);
	if (memcmp(dg, p + 88, 32) != 0)
		return -1;
	h->dev = md_get64(p + 8);
	h->ino = md_get64(p + 16);
	h->d = md_get64(p + 24);
	h->f = md_get64(p + 32);
	h->n = md_get64(p + 40);
	h->l = md_get64(p + 48);
	memcpy(h->hc, p + 56, 32);
	if (h->d > h->f || h->n > h->f - h->d || h->l != h->f - h->d - h->n)
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
 * kernel, none through user space; read and write where it cannot.
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

/* Are [a, a + len) of fd and [b, b + len) of fd2 the same octets? */
static int
md_same(int fd, uint64_t a, int fd2, uint64_t b, uint64_t len)
{
	size_t	n;

	while (len > 0) {
		n = len > MD_BLOCK ? MD_BLOCK : (size_t)len;
		if (md_preadx(fd, md_blk, n, a) == -1 ||
		    md_preadx(fd2, md_sbuf, n, b) == -1)
			return -1;
		if (memcmp(md_blk, md_sbuf, n) != 0)
			return 0;
		a += n;
		b += n;
		len -= n;
		md_dot_refresh();
	}
	return 1;
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

/*
 * Applies a journal that is on disk: T to [D, D+N) of the mailbox, fsync,
 * truncate to D+N, fsync, remove the journal, fsync the directory.  Every
 * step can be repeated: T comes from the journal, and D+N <= F.
 */
static enum md_res
md_apply(struct maildrop *md, int jfd, const struct md_jhdr *h,
    const char *jpath)
{
	if (md_copy(jfd, MD_JDATA, h->n, md->fd, h->d, NULL) == -1 ||
	    md_fsync(md->fd) == -1 ||
	    md_ftruncate(md->fd, h->d + h->n) == -1 ||
	    md_fsync(md->fd) == -1) {
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
 * Writes a journal to path (created, never there before): header h with
 * n and the hashes filled in here; T is [soff, soff + slen) of the old
 * journal sfd (if sfd != -1) followed by the mailbox extents ext[0..next).
 * Returns the open journal, or -1 (nothing left behind).
 */
struct md_ext {
	uint64_t	off, len;
};

static int
md_jwrite(struct maildrop *md, const char *path, struct md_jhdr *h,
    int sfd, uint64_t slen, const struct md_ext *ext, size_t next)
{
	unsigned char		hdr[MD_JHDR];
	uint64_t		pos = MD_JDATA;
	size_t			i;
	int			jfd, e;

	jfd = open(path, O_RDWR | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC,
	    0600);
	if (jfd == -1) {
		pop_log(LOG_ERR, "cannot create journal %s: %s", path,
		    strerror(errno));
		return -1;
	}
	if (sfd != -1) {
		if (md_copy(sfd, MD_JDATA, slen, jfd, pos, NULL) == -1)
			goto fail;
		pos += slen;
	}
	for (i = 0; i < next; i++) {
		if (md_copy(md->fd, ext[i].off, ext[i].len, jfd, pos, NULL) ==
		    -1)
			goto fail;
		pos += ext[i].len;
	}
	h->n = pos - MD_JDATA;
	h->l = h->f - h->d - h->n;
	if (md_hashrange(md->fd, h->d + h->n, h->l, h->hc) == -1)
		goto fail;
	/* T on disk first: then a valid header means a complete T. */
	md_jencode(h, hdr);
	if (md_fsync(jfd) == -1 ||
	    md_pwrite(jfd, hdr, sizeof(hdr), 0) == -1 || md_fsync(jfd) == -1)
		goto fail;
	return jfd;
fail:
	e = errno;
	pop_log(LOG_ERR, "cannot write journal %s: %s", path, strerror(e));
	(void)close(jfd);
	if (md_unlink(path) == -1)
		pop_log(LOG_ERR, "cannot remove %s: %s", path,
		    strerror(errno));
	errno = e;
	return -1;
}

/*
 * Repair (called under the spool locks, before indexing, and after a
 * failed apply).  A journal without a valid header (or shorter than its
 * T) was never applied: the mailbox is intact, the journal goes.  A
 * journal for another file (dev/ino) is renamed aside, never applied.
 * Otherwise the mailbox is in one of two states:
 *   before the truncate: size >= F and [D+N, F) still hashes to the cut
 *     part: T is (partly) written at D; mail appended since is [F, cur).
 *     With appended mail, a new journal T' = T + [F, cur), F' = cur is
 *     written to a temporary name and renamed over the old one first.
 *     Then the journal is applied (again).
 *   after the truncate: [D, D+N) is T; appended mail is [D+N, cur).  Only
 *     the fsync and the removal of the journal may be missing.
 * Anything else: the mailbox stays untouched, the journal is kept aside,
 * MD_PERM.  *done is set when an update was completed.
 */
static enum md_res
md_repair(struct maildrop *md, int *done)
{
	char		 jpath[MD_PATH], tpath[MD_PATH + 8];
	unsigned char	 hdr[MD_JHDR], dg[32];
	struct md_jhdr	 h, h2;
	struct md_ext	 ext;
	struct stat	 jst, st;
	enum md_res	 r;
	uint64_t	 appended;
	int		 jfd, tfd;

	*done = 0;
	if (md_jpath(md, jpath, sizeof(jpath)) == -1 ||
	    snprintf(tpath, sizeof(tpath), "%s.tmp", jpath) >=
	    (int)sizeof(tpath)) {
		pop_log(LOG_ERR, "mailbox path too long: %s", md->path);
		return MD_PERM;
	}
	jfd = open(jpath, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
	if (jfd == -1) {
		if (errno == ENOENT)
			return MD_OK;
		pop_log(LOG_ERR, "cannot open journal %s: %s", jpath,
		    strerror(errno));
		return errno == ELOOP ? MD_PERM : MD_TEMP;
	}
	if (fstat(jfd, &jst) == -1 || fstat(md->fd, &st) == -1) {
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
	if (md_pread(jfd, hdr, sizeof(hdr), 0) != (ssize_t)sizeof(hdr) ||
	    md_jdecode(hdr, &h) == -1 || (h.n > 0 &&
	    (jst.st_size < MD_JDATA ||
	    h.n > (uint64_t)jst.st_size - MD_JDATA))) {
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
	if (h.dev != (uint64_t)st.st_dev || h.ino != (uint64_t)st.st_ino) {
		pop_log(LOG_ERR, "journal %s is for another file than %s: "
		    "not applied", jpath, md->path);
		md_jaside(jpath);
		r = MD_OK;
		goto out;
	}
	appended = (uint64_t)st.st_size > h.f ? (uint64_t)st.st_size - h.f : 0;
	if ((uint64_t)st.st_size >= h.f &&
	    md_hashrange(md->fd, h.d + h.n, h.l, dg) == 0 &&
	    memcmp(dg, h.hc, 32) == 0) {
		if ((uint64_t)st.st_size > h.f) {
			h2 = h;
			h2.f = (uint64_t)st.st_size;
			ext.off = h.f;
			ext.len = h2.f - h.f;
			if (unlink(tpath) == -1 && errno != ENOENT) {
				pop_log(LOG_ERR, "cannot remove %s: %s", tpath,
				    strerror(errno));
				r = MD_TEMP;
				goto out;
			}
			if ((tfd = md_jwrite(md, tpath, &h2, jfd, h.n, &ext,
			    1)) == -1) {
				r = MD_TEMP;
				goto out;
			}
			if (md_rename(tpath, jpath) == -1 ||
			    md_fsyncdir(md) == -1) {
				pop_log(LOG_ERR, "cannot rename %s: %s", tpath,
				    strerror(errno));
				(void)close(tfd);
				r = MD_TEMP;
				goto out;
			}
			(void)close(jfd);
			jfd = tfd;
			h = h2;
		}
		if ((r = md_apply(md, jfd, &h, jpath)) != MD_OK)
			goto out;
		pop_log(LOG_NOTICE, "repaired an interrupted update of %s: "
		    "%llu octets from %llu rewritten, %llu removed, %llu "
		    "appended since kept", md->path, (unsigned long long)h.n,
		    (unsigned long long)h.d, (unsigned long long)h.l,
		    (unsigned long long)appended);
		*done = 1;
		goto out;
	}
	if ((uint64_t)st.st_size >= h.d + h.n &&
	    md_same(md->fd, h.d, jfd, MD_JDATA, h.n) == 1) {
		if (md_fsync(md->fd) == -1 || md_unlink(jpath) == -1 ||
		    md_fsyncdir(md) == -1) {
			pop_log(LOG_ERR, "update of %s: %s", md->path,
			    strerror(errno));
			r = MD_TEMP;
			goto out;
		}
		pop_log(LOG_NOTICE, "completed an interrupted update of %s "
		    "(already truncated to %llu octets)", md->path,
		    (unsigned long long)(h.d + h.n));
		*done = 1;
		r = MD_OK;
		goto out;
	}
	pop_log(LOG_ERR, "%s fits neither state of its update journal "
	    "(size %lld, journal D=%llu N=%llu F=%llu): left as it is",
	    md->path, (long long)st.st_size, (unsigned long long)h.d,
	    (unsigned long long)h.n, (unsigned long long)h.f);
	md_jaside(jpath);
	r = MD_PERM;
out:
	if (close(jfd) == -1 && r == MD_OK && !*done)
		r = MD_TEMP;
	return r;
}

/*
 * Open, stream, UIDL, update, close.
 */

/* Remembers the file's state at a verification (under the spool locks). */
static void
md_vstat(struct maildrop *md, const struct stat *st)
{
	md->vsize = (uint64_t)st->st_size;
	md->vctime = st->st_ctim;
	md->vmtime = st->st_mtim;
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

static enum md_res	md_verify(struct maildrop *, uint64_t *);

/*
 * Is the file still what we indexed?  Any write (an MDA's append, a MUA's
 * rewrite) changes the inode's ctime, so when size, ctime and mtime are
 * those of the last verification nothing was written.  Otherwise verify
 * [0, indexed) again under the spool locks, once per change: appended mail
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
	if ((uint64_t)st.st_size == md->vsize &&
	    st.st_ctim.tv_sec == md->vctime.tv_sec &&
	    st.st_ctim.tv_nsec == md->vctime.tv_nsec &&
	    st.st_mtim.tv_sec == md->vmtime.tv_sec &&
	    st.st_mtim.tv_nsec == md->vmtime.tv_nsec)
		return MD_OK;
	if ((r = md_spool_lock(md)) != MD_OK)
		return r == MD_PERM ? MD_TEMP : r;
	if ((r = md_verify(md, &size)) == MD_OK) {
		if (fstat(md->fd, &st) == -1) {
			pop_log(LOG_ERR, "fstat %s: %s", md->path,
			    strerror(errno));
			r = MD_TEMP;
		} else
			md_vstat(md, &st);
	}
	md_spool_unlock(md);
	if (r == MD_CHANGED)
		md->changed = 1;
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

/* Under the spool locks: is [0, indexed) still what we indexed? */
static enum md_res
md_verify(struct maildrop *md, uint64_t *size)
{
	struct md_ix	 ix;
	struct stat	 st, ls;
	enum md_res	 r;
	uint64_t	 hidden;
	uint32_t	 k;
	const char	*why = NULL;

	if (fstat(md->fd, &st) == -1) {
		pop_log(LOG_ERR, "fstat %s: %s", md->path, strerror(errno));
		return MD_TEMP;
	}
	if (lstat(md->path, &ls) == -1 || ls.st_dev != md->dev ||
	    ls.st_ino != md->ino || st.st_nlink != 1)
		why = "the file was replaced";
	else if ((uint64_t)st.st_size < md->indexed)
		why = "the file shrank";
	if (why != NULL) {
		pop_log(LOG_ERR, "%s changed under the session (%s): nothing "
		    "deleted", md->path, why);
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
	*size = (uint64_t)st.st_size;
	return MD_OK;
}

/*
 * UPDATE.  Under the spool locks, after md_verify():
 *   D = the first deleted message's From_ line, F = the size now (with
 *   mail appended since md_open), T = the kept records of [D, indexed)
 *   (each from its From_ line to the next, separators included) and then
 *   [indexed, F); N = len(T).
 *   1. Journal: T at MD_JDATA, fsync, the header, fsync, fsync the spool
 *      directory.  Any error: the journal goes, the mailbox is untouched.
 *   2. Apply: T at D, fsync, truncate to D+N, fsync, unlink the journal,
 *      fsync the directory.  MD_OK only after all of it.  An error: one
 *      md_repair() try, else the journal stays for the next session.
 * The inode, owner and mode of the mailbox never change.
 */
static enum md_res
md_compact(struct maildrop *md, uint32_t k, uint64_t size)
{
	char		 jpath[MD_PATH];
	struct md_ext	*ext;
	struct md_jhdr	 h;
	enum md_res	 r;
	uint64_t	 s, e;
	size_t		 next = 0;
	int		 jfd, done;

	if (md_jpath(md, jpath, sizeof(jpath)) == -1) {
		pop_log(LOG_ERR, "mailbox path too long: %s", md->path);
		return MD_TEMP;
	}
	memset(&h, 0, sizeof(h));
	h.dev = (uint64_t)md->dev;
	h.ino = (uint64_t)md->ino;
	h.d = md->msg[k].from;
	h.f = size;
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
		if (next > 0 && ext[next - 1].off + ext[next - 1].len == s)
			ext[next - 1].len += e - s;
		else {
			ext[next].off = s;
			ext[next++].len = e - s;
		}
	}
	if (size > md->indexed) {
		if (next > 0 && ext[next - 1].off + ext[next - 1].len ==
		    md->indexed)
			ext[next - 1].len += size - md->indexed;
		else {
			ext[next].off = md->indexed;
			ext[next++].len = size - md->indexed;
		}
	}
	jfd = md_jwrite(md, jpath, &h, -1, 0, ext, next);
	free(ext);
	if (jfd == -1)
		return MD_TEMP;
	if (md_fsyncdir(md) == -1) {
		pop_log(LOG_ERR, "fsync spool directory: %s", strerror(errno));
		(void)close(jfd);
		if (md_unlink(jpath) == -1)
			pop_log(LOG_ERR, "cannot remove %s: %s", jpath,
			    strerror(errno));
		return MD_TEMP;
	}
	r = md_apply(md, jfd, &h, jpath);
	(void)close(jfd);
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
	if ((r = md_verify(md, &size)) == MD_OK)
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
