/*
 * maildrop.c: the mbox spool of one user: safe open, session and spool
 * locks, verification, streaming, and the wrappers of the calls that
 * write (fault injection).  Runs only as that user.  The mbox format and
 * the index are in mbox.c, the journaled update in update.c; what the
 * three files share is in mdint.h.  The on-disk rules are described next
 * to the code that implements them, and in the README "Design" section.
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
 */

#include <sys/file.h>
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

#include "maildrop.h"
#include "mdint.h"

/* md_stream output buffer: put() gets chunks this large. */
#define MD_OUT		(128 * 1024)
/*
 * Dotlock retry back-off, doubled from MIN up to MAX (milliseconds).  MDAs
 * hold the locks for milliseconds at a time, so a long sleep only lets the
 * next delivery in first: with three procmail writers a 1 s cap made QUIT
 * wait 1.6 s.  The random part keeps two waiting sessions out of step.
 */
#define MD_BACKOFF_MIN	20
#define MD_BACKOFF_MAX	200

/* Our dotlock, if we hold one: md_close() removes it on every path. */
static struct {
	int		 held;
	char		 path[sizeof(((struct maildrop *)0)->lockpath)];
	dev_t		 dev;
	ino_t		 ino;
	uint64_t	 touched;	/* md_ms() at creation or last refresh */
} md_dot;

/* Allocations of this size and more are mmap(2)ed (md_open()). */
#define MD_MMAP_MIN	(128 * 1024)

/* md_stream's input block, after room for the octet before it; its
 * output buffer (vector stores overshoot). */
static unsigned char	md_sbuf[32 + MD_BLOCK + 64];
static char		md_obuf[MD_OUT + 128];

/*
 * Fault injection (issue 4).  Every write, pwrite, fsync, ftruncate,
 * rename, unlink and link of the maildrop goes through these wrappers.  In
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
int
md_fdatasync(int fd)
{
	if (MD_FAULT())
		return -1;
	return fdatasync(fd);
}

int
md_ftruncate(int fd, uint64_t len)
{
	if (MD_FAULT())
		return -1;
	return ftruncate(fd, (off_t)len);
}

int
md_rename(const char *from, const char *to)
{
	if (MD_FAULT())
		return -1;
	return rename(from, to);
}

int
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

/* copy_file_range(2), one of the wrapped writes. */
ssize_t
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

/* Writes all n octets at off; 0 or -1 with errno. */
int
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
ssize_t
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
int
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

/* fsync(2) the spool directory after a file was created or removed. */
int
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

/* How often our dotlock is refreshed, in ms: unit tests shorten it. */
static uint64_t	md_dot_every = MD_DOTLOCK_REFRESH * 1000ULL;

#ifdef POP3D_UNIT
void	md_test_dotrefresh(uint64_t);

/* Refresh every ms milliseconds (0: at every chance). */
void
md_test_dotrefresh(uint64_t ms)
{
	md_dot_every = ms;
}
#endif

/* Refreshes our dotlock's mtime so that nobody takes it for stale. */
void
md_dot_refresh(void)
{
	struct stat	st;
	uint64_t	now;

	if (!md_dot.held)
		return;
	now = md_ms();
	if (now - md_dot.touched < md_dot_every)
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
			    "(the user needs write access to the spool "
			    "directory, e.g. group mail on root:mail 2775; "
			    "the update journal is made there too)", dir,
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

void
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
enum md_res
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
 * Open, verify, stream, close.
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

	/* Memory (issue 6: flat, whatever the mailbox): blocks of 128 KiB
	 * and more come from mmap(2) and go back to the kernel when freed
	 * (glibc would raise that threshold after the first free and keep
	 * them), and the index thread shares the main arena. */
	(void)mallopt(M_MMAP_THRESHOLD, MD_MMAP_MIN);
	(void)mallopt(M_ARENA_MAX, 1);
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
	if ((r = md_ixcheck(md->fd, md->indexed, md)) == MD_OK ||
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
enum md_res
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
