/*
 * lock.c: the locks of the maildrop (lock.h): the session lock, the spool
 * locks by the methods the caller gives (--lock), staleness of a dotlock,
 * and the keep-alive of ours.  Calls io.c for every write-like call and
 * the clock; knows nothing of the mbox format.
 *
 * Locks.  The session lock is a whole-file fcntl(2) write lock on
 * SPOOLDIR/.USER.pop3d-session, a file of its own that no MDA touches,
 * held for the whole session: a second session, on this host or on any
 * front end sharing the spool over NFS (NLM, NFSv4 locks), gets MD_INUSE
 * at once, and deliveries, which lock the mailbox, never wait for it.
 * Not flock(2) on the mailbox: the Linux NFS client emulates flock with
 * a whole-file fcntl lock, which would keep every MDA out for the whole
 * session, and which our own fcntl spool lock on the mailbox would
 * release (a process's fcntl locks on a file are one lock).  The kernel
 * or the NFS server drops the lock when the process dies, so the file
 * needs no staleness rule; it stays, empty, between sessions.  Only if
 * the user cannot create it (no write access to the spool directory) is
 * the session lock flock(2) on the mailbox, right on a local spool only.
 * The spool locks (Debian Policy 11.6: fcntl, then USER.lock made with the
 * NFS-safe link(2) technique) are held only while indexing and updating,
 * never across the client's think time, and never one while waiting for
 * the other.  A dotlock older than MD_DOTLOCK_STALE seconds or naming a
 * dead process (not on NFS, where the pid may be another host's) is
 * removed; ours is refreshed every MD_DOTLOCK_REFRESH.
 */

#include <sys/file.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/vfs.h>

#include <linux/magic.h>

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <syslog.h>
#include <time.h>
#include <unistd.h>

#include "io.h"
#include "lock.h"

/*
 * Dotlock retry back-off, doubled from MIN up to MAX (milliseconds).  MDAs
 * hold the locks for milliseconds at a time, so a long sleep only lets the
 * next delivery in first: with three procmail writers a 1 s cap made QUIT
 * wait 1.6 s.  The random part keeps two waiting sessions out of step.
 */
#define LOCK_BACKOFF_MIN	20
#define LOCK_BACKOFF_MAX	200

/* Our dotlock, if we hold one: lock_dot_release() removes it on every
 * path (md_close()). */
static struct {
	int		 held;
	char		 path[MD_PATH];
	dev_t		 dev;
	ino_t		 ino;
	uint64_t	 touched;	/* io_ms() at creation or last refresh */
} lock_dot;

/*
 * The unique file that is linked to USER.lock (lock_dot_try()): made once
 * per session, with our pid in it, by lock_dot_prepare() before the
 * user's sandbox (a file made after it could not be written), or at the
 * first lock; removed by lock_dot_end().  for: the lockpath it is next to.
 */
static struct {
	pid_t		 pid;		/* 0: none */
	char		 for_[MD_PATH];
	char		 path[MD_PATH + 128];
} lock_tmp;

#if defined(POP3D_FAULT) || defined(POP3D_UNIT)

/* Test builds: POP3D_LOCK_WAIT=SECONDS (1..MD_LOCK_WAIT) shortens the
 * lock wait, so that tests of a held lock need not take 30 s. */
static int
lock_wait(void)
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
#define LOCK_WAIT_NOW()	lock_wait()
#else
#define LOCK_WAIT_NOW()	MD_LOCK_WAIT
#endif

/* Session locks this process holds: fcntl locks never conflict with
 * their owner's, so a second session in one process is told here. */
static int	lock_ses_held;

/* Is the spool on NFS (lock_session() asks)?  Then a dotlock's pid may
 * be another host's process. */
static int	lock_nfs;

static int	lock_fcntl(int, short);

/* No session-lock file: flock(2) of the whole mailbox, never waiting. */
static enum md_res
lock_session_flock(int fd, const char *path, const char *why)
{
	pop_log(LOG_NOTICE, "no session-lock file (%s): session lock on %s "
	    "with flock(2), for a local spool only", why, path);
	if (flock(fd, LOCK_EX | LOCK_NB) == -1) {
		if (errno == EWOULDBLOCK)
			return MD_INUSE;
		pop_log(LOG_ERR, "flock %s: %s", path, strerror(errno));
		return MD_TEMP;
	}
	return MD_OK;
}

/*
 * The session lock (the top of the file): *sfd is the open session-lock
 * file while it is held, else -1.  fd and path are the mailbox's, uid
 * the user's (the file must be his, regular, with one link).
 */
enum md_res
lock_session(int fd, const char *path, uid_t uid, int *sfd)
{
	static const char sfx[] = ".pop3d-session";
	const char	*slash = strrchr(path, '/');
	char		 sp[MD_PATH];
	struct statfs	 sf;
	struct stat	 st;
	enum md_res	 res;
	size_t		 d, n;
	int		 r, e;

	*sfd = -1;
	if (lock_ses_held)
		return MD_INUSE;
	lock_nfs = fstatfs(fd, &sf) == 0 && sf.f_type == NFS_SUPER_MAGIC;
	d = slash == NULL ? 0 : (size_t)(slash - path) + 1;
	n = strlen(path + d);
	if (d + 1 + n + sizeof(sfx) > sizeof(sp))
		return MD_PERM;
	memcpy(sp, path, d);
	sp[d] = '.';
	memcpy(sp + d + 1, path + d, n);
	memcpy(sp + d + 1 + n, sfx, sizeof(sfx));
	*sfd = open(sp, O_RDWR | O_CREAT | O_NOFOLLOW | O_NONBLOCK |
	    O_CLOEXEC, 0600);
	if (*sfd == -1) {
		e = errno;
		if (e == EACCES || e == EPERM || e == EROFS)
			return lock_session_flock(fd, path, strerror(e));
		pop_log(LOG_ERR, "cannot open %s: %s", sp, strerror(e));
		return e == ELOOP ? MD_PERM : MD_TEMP;
	}
	if (fstat(*sfd, &st) == -1 || !S_ISREG(st.st_mode) ||
	    st.st_uid != uid || st.st_nlink != 1) {
		pop_log(LOG_ERR, "session-lock file %s refused: not a regular "
		    "file of the user with one link (remove it)", sp);
		res = MD_TEMP;
	} else if ((r = lock_fcntl(*sfd, F_WRLCK)) == 0) {
		lock_ses_held = 1;
		return MD_OK;
	} else if (r == 1)
		res = MD_INUSE;
	else {
		pop_log(LOG_ERR, "cannot lock %s: %s", sp, strerror(errno));
		res = MD_TEMP;
	}
	(void)close(*sfd);
	*sfd = -1;
	return res;
}

/* Gives the session lock back (closing the file drops it). */
void
lock_session_release(int *sfd)
{
	if (*sfd == -1)
		return;
	(void)close(*sfd);
	*sfd = -1;
	lock_ses_held = 0;
}

/*
 * Spool locks.
 */

/* How often our dotlock is refreshed, in ms: unit tests shorten it. */
static uint64_t	lock_refresh_every = MD_DOTLOCK_REFRESH * 1000ULL;

#ifdef POP3D_UNIT
void
lock_test_refresh(uint64_t ms)
{
	lock_refresh_every = ms;
}

void
lock_test_forget(void)
{
	lock_ses_held = 0;
}
#endif

/* Refreshes our dotlock's mtime so that nobody takes it for stale. */
void
lock_alive(void)
{
	struct stat	st;
	uint64_t	now;

	if (!lock_dot.held)
		return;
	now = io_ms();
	if (now - lock_dot.touched < lock_refresh_every)
		return;
	lock_dot.touched = now;
	if (lstat(lock_dot.path, &st) == -1 || st.st_dev != lock_dot.dev ||
	    st.st_ino != lock_dot.ino) {
		pop_log(LOG_ERR, "dotlock %s was removed by another program",
		    lock_dot.path);
		return;
	}
	if (utimensat(AT_FDCWD, lock_dot.path, NULL, AT_SYMLINK_NOFOLLOW) == -1)
		pop_log(LOG_ERR, "cannot refresh dotlock %s: %s", lock_dot.path,
		    strerror(errno));
}

/* Removes our dotlock, unless somebody else's has replaced it. */
void
lock_dot_release(const char *path)
{
	struct stat	st;

	if (!lock_dot.held || strcmp(path, lock_dot.path) != 0)
		return;
	lock_dot.held = 0;
	if (lstat(lock_dot.path, &st) == -1 || st.st_dev != lock_dot.dev ||
	    st.st_ino != lock_dot.ino)
		return;
	if (io_unlink(lock_dot.path) == -1)
		pop_log(LOG_ERR, "cannot remove dotlock %s: %s", lock_dot.path,
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
lock_dot_stale(const char *lockpath)
{
	struct stat	 st, st2;
	char		 buf[32];
	const char	*why;
	time_t		 now;
	long		 pid = 0;
	ssize_t		 r;
	int		 fd, dead = 0;

	if (lstat(lockpath, &st) == -1)
		return errno == ENOENT ? DOT_GOT : DOT_BUSY;
	if (!S_ISREG(st.st_mode)) {
		pop_log(LOG_ERR, "dotlock %s is not a regular file: refused",
		    lockpath);
		return DOT_PERM;
	}
	fd = open(lockpath, O_RDONLY | O_NOFOLLOW | O_NONBLOCK |
	    O_CLOEXEC);
	if (fd != -1) {
		r = read(fd, buf, sizeof(buf) - 1);
		(void)close(fd);
		if (r > 0) {
			buf[r] = '\0';
			pid = strtol(buf, NULL, 10);
		}
	}
	/* Our own pid in a lock we do not hold: left by a failed unlink.  On
	 * NFS the pid may be another host's: the age alone decides. */
	if (!lock_nfs && pid > 1 && (pid == (long)getpid() ||
	    (kill((pid_t)pid, 0) == -1 && errno == ESRCH)))
		dead = 1;
	now = time(NULL);
	if (!dead && now - st.st_mtime <= MD_DOTLOCK_STALE)
		return DOT_BUSY;
	why = dead ? "its process is gone" : "too old";
	/* Still the same file?  Then it is ours to remove. */
	if (lstat(lockpath, &st2) == -1)
		return DOT_GOT;
	if (st2.st_dev != st.st_dev || st2.st_ino != st.st_ino ||
	    st2.st_mtime != st.st_mtime)
		return DOT_BUSY;
	if (io_unlink(lockpath) == -1 && errno != ENOENT) {
		pop_log(LOG_ERR, "cannot remove stale dotlock %s: %s",
		    lockpath, strerror(errno));
		return DOT_TEMP;
	}
	pop_log(LOG_NOTICE, "removed stale dotlock %s (%s: age %lld s, "
	    "pid %ld)", lockpath, why, (long long)(now - st.st_mtime),
	    pid);
	return DOT_GOT;
}

/*
 * Makes lock_tmp for lockpath: a unique name in its directory, our pid
 * in it.  DOT_GOT, or DOT_TEMP / DOT_PERM after a log line.
 */
static int
lock_dot_mktemp(const char *lockpath)
{
	static unsigned int	 seq;
	char			 dir[MD_PATH], host[65], pid[32];
	struct timespec		 ts;
	size_t			 i;
	int			 fd, r, e, plen;

	if (io_dirname(lockpath, dir, sizeof(dir)) == -1 ||
	    strlen(lockpath) >= sizeof(lock_tmp.for_))
		return DOT_PERM;
	if (gethostname(host, sizeof(host)) == -1)
		(void)snprintf(host, sizeof(host), "localhost");
	host[sizeof(host) - 1] = '\0';
	for (i = 0; host[i] != '\0'; i++)
		if (host[i] == '/' || host[i] == ':')
			host[i] = '_';
	(void)clock_gettime(CLOCK_REALTIME, &ts);
	r = snprintf(lock_tmp.path, sizeof(lock_tmp.path),
	    "%s/.pop3d-lk.%s.%ld.%lx.%u", dir, host, (long)getpid(),
	    (unsigned long)ts.tv_nsec, seq++);
	if (r < 0 || (size_t)r >= sizeof(lock_tmp.path))
		return DOT_PERM;
	fd = open(lock_tmp.path, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW |
	    O_CLOEXEC, 0644);
	if (fd == -1) {
		/* In the user's sandbox (a dotlock not prepared before it)
		 * Landlock may let the name be made and refuse the write:
		 * the name, ours alone, goes again. */
		e = errno;
		(void)io_cleanup(lock_tmp.path);
		errno = e;
		if (errno == EACCES || errno == EPERM || errno == EROFS)
			pop_log(LOG_ERR, "cannot create a dotlock in %s: %s "
			    "(the user needs write access to the spool "
			    "directory, e.g. group mail on root:mail 2775; "
			    "the update journal is made there too)", dir,
			    strerror(errno));
		else
			pop_log(LOG_ERR, "cannot create %s: %s", lock_tmp.path,
			    strerror(errno));
		return DOT_TEMP;
	}
	plen = snprintf(pid, sizeof(pid), "%ld\n", (long)getpid());
	if (io_write(fd, pid, (size_t)plen) != plen) {
		e = errno;
		(void)close(fd);
		errno = e;
		fd = -1;
	}
	if (fd == -1 || close(fd) == -1) {
		pop_log(LOG_ERR, "cannot write %s: %s", lock_tmp.path,
		    strerror(errno));
		(void)io_unlink(lock_tmp.path);
		return DOT_TEMP;
	}
	lock_tmp.pid = getpid();
	memcpy(lock_tmp.for_, lockpath, strlen(lockpath) + 1);
	return DOT_GOT;
}

/* Removes lock_tmp, if this process made it (io_cleanup()). */
void
lock_dot_end(void)
{
	if (lock_tmp.pid != getpid())
		return;
	lock_tmp.pid = 0;
	if (io_cleanup(lock_tmp.path) == -1 && errno != ENOENT)
		pop_log(LOG_ERR, "cannot remove %s: %s", lock_tmp.path,
		    strerror(errno));
}

void
lock_dot_prepare(const char *lockpath)
{
	if (lock_tmp.pid == getpid() && strcmp(lock_tmp.for_, lockpath) == 0)
		return;
	lock_dot_end();
	(void)lock_dot_mktemp(lockpath);
}

/*
 * Tries once to create the dotlock, the NFS-safe way: the unique file
 * lock_tmp in the same directory, link(2) it to USER.lock, and trust the
 * link count of the unique file, not link()'s return value.  The unique
 * file stays for the next time (lock_dot_end()).
 */
static int
lock_dot_try(const char *lockpath)
{
	struct stat	 st;
	int		 r, lerr, got;

	if (lock_tmp.pid != getpid() || strcmp(lock_tmp.for_, lockpath) != 0) {
		lock_dot_end();
		if ((r = lock_dot_mktemp(lockpath)) != DOT_GOT)
			return r;
	}
	r = io_link(lock_tmp.path, lockpath);
	lerr = errno;
	got = lstat(lock_tmp.path, &st) == 0 && st.st_nlink == 2;
	if (got) {
		lock_dot.held = 1;
		memcpy(lock_dot.path, lockpath, sizeof(lock_dot.path));
		lock_dot.dev = st.st_dev;
		lock_dot.ino = st.st_ino;
		lock_dot.touched = io_ms();
		return DOT_GOT;
	}
	if (r == -1 && lerr != EEXIST) {
		pop_log(LOG_ERR, "cannot create dotlock %s: %s", lockpath,
		    strerror(lerr));
		return DOT_TEMP;
	}
	return DOT_BUSY;
}

/* fcntl lock of the whole file: 0, 1 if busy, -1 on error. */
static int
lock_fcntl(int fd, short type)
{
	struct flock	fl;

	memset(&fl, 0, sizeof(fl));
	fl.l_type = type;
	fl.l_whence = SEEK_SET;
	if (type == F_WRLCK &&
	    (fcntl(fd, F_GETFL) & O_ACCMODE) == O_RDONLY)
		fl.l_type = F_RDLCK;
	if (fcntl(fd, F_SETLK, &fl) == -1) {
		if (errno == EAGAIN || errno == EACCES)
			return 1;
		return -1;
	}
	return 0;
}

void
lock_spool_release(int fd, const char *path, const char *lockpath,
    int methods)
{
	lock_dot_release(lockpath);
	if ((methods & POP3_LOCK_FCNTL) && fd != -1 &&
	    lock_fcntl(fd, F_UNLCK) == -1)
		pop_log(LOG_ERR, "cannot unlock %s: %s", path,
		    strerror(errno));
}

/*
 * Takes the spool locks in Debian Policy order: fcntl, then the dotlock,
 * both without blocking.  If the dotlock is busy, the fcntl lock is given
 * back before we sleep (procmail takes them in the other order), and we
 * try again with a growing back-off for up to MD_LOCK_WAIT seconds.
 */
enum md_res
lock_spool(int fd, const char *path, const char *lockpath, int methods)
{
	uint64_t	deadline;
	unsigned int	delay = LOCK_BACKOFF_MIN;
	uint32_t	jit = (uint32_t)getpid() | 1;
	int		r, busy, wait = LOCK_WAIT_NOW();

	deadline = io_ms() + (uint64_t)wait * 1000;
	for (;;) {
		busy = 0;
		if (methods & POP3_LOCK_FCNTL) {
			if ((r = lock_fcntl(fd, F_WRLCK)) == -1) {
				pop_log(LOG_ERR, "cannot lock %s: %s",
				    path, strerror(errno));
				return MD_TEMP;
			}
			busy = r;
		}
		if (!busy && (methods & POP3_LOCK_DOTLOCK)) {
			r = lock_dot_try(lockpath);
			if (r == DOT_BUSY)
				r = lock_dot_stale(lockpath);
			if (r == DOT_GOT && !lock_dot.held)
				r = lock_dot_try(lockpath);
			if (r != DOT_GOT) {
				if ((methods & POP3_LOCK_FCNTL) &&
				    lock_fcntl(fd, F_UNLCK) == -1)
					pop_log(LOG_ERR, "cannot unlock %s: "
					    "%s", path, strerror(errno));
				if (r == DOT_TEMP)
					return MD_TEMP;
				if (r == DOT_PERM)
					return MD_PERM;
				busy = 1;
			}
		}
		if (!busy)
			return MD_OK;
		if (io_ms() >= deadline) {
			pop_log(LOG_NOTICE, "%s stays locked by another "
			    "program; gave up after %d s", path, wait);
			return MD_TEMP;
		}
		/* xorshift seeded by the pid: jitter, not secrecy */
		jit ^= jit << 13;
		jit ^= jit >> 17;
		jit ^= jit << 5;
		io_sleep_ms(delay / 2 + jit % (delay / 2 + 1));
		delay = delay * 2 > LOCK_BACKOFF_MAX ? LOCK_BACKOFF_MAX : delay * 2;
	}
}
