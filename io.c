/*
 * io.c: the bottom layer of the maildrop, on libc only (io.h): the
 * wrappers of the calls that write (fault injection), full reads and
 * writes, fsync of the spool directory, the millisecond clock, which
 * conn.c uses too.  lock.c and journal.c make every write-like call of
 * the maildrop through these wrappers.
 */

#include <sys/stat.h>
#include <sys/types.h>

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "io.h"

/*
 * Fault injection (issue 4).  Every write, pwrite, fsync, ftruncate,
 * rename, exchange, unlink and link of the maildrop goes through these
 * wrappers.  In a build with -DPOP3D_FAULT (and in unit tests),
 * POP3D_FAULT="kill:N" raises SIGKILL instead of the N-th such call of
 * the process (counted from 1), "enospc:N", "eio:N" and "einval:N" make
 * it fail with that errno (EINVAL: what a file system without
 * RENAME_EXCHANGE says), and "done:N" makes the call and then says EIO
 * (what NFS says of a rename or unlink whose reply was lost, done again:
 * the call did its work and failed).  Release builds call the system
 * directly and never read the environment.
 */
#if defined(POP3D_FAULT) || defined(POP3D_UNIT)
static int	io_fault_init;
static int	io_fault_kind;		/* 0, -1 kill, -2 done, or an errno */
static int	io_fault_late;		/* done: the call in progress fails */
static long	io_fault_at, io_fault_count;

void
io_fault_reset(void)
{
	io_fault_init = 0;
	io_fault_late = 0;
	io_fault_count = 0;
}

static int
io_fault(void)
{
	const char	*s, *num;
	char		*end;

	if (!io_fault_init) {
		io_fault_init = 1;
		io_fault_kind = 0;
		if ((s = getenv("POP3D_FAULT")) != NULL &&
		    (num = strchr(s, ':')) != NULL) {
			if (strncmp(s, "kill:", 5) == 0)
				io_fault_kind = -1;
			else if (strncmp(s, "enospc:", 7) == 0)
				io_fault_kind = ENOSPC;
			else if (strncmp(s, "eio:", 4) == 0)
				io_fault_kind = EIO;
			else if (strncmp(s, "einval:", 7) == 0)
				io_fault_kind = EINVAL;
			else if (strncmp(s, "done:", 5) == 0)
				io_fault_kind = -2;
			errno = 0;
			io_fault_at = strtol(num + 1, &end, 10);
			if (errno != 0 || *end != '\0' || io_fault_at < 1)
				io_fault_kind = 0;
		}
	}
	if (++io_fault_count != io_fault_at || io_fault_kind == 0)
		return 0;
	if (io_fault_kind == -1)
		(void)raise(SIGKILL);
	if (io_fault_kind == -2) {
		io_fault_late = 1;
		return 0;
	}
	errno = io_fault_kind;
	return -1;
}

/* r, what the call returned; -1 with EIO if "done" chose this call. */
static long
io_done(long r)
{
	if (!io_fault_late)
		return r;
	io_fault_late = 0;
	errno = EIO;
	return -1;
}
#define IO_FAULT()	io_fault()
#define IO_DONE(r)	io_done(r)
#else
#define IO_FAULT()	0
#define IO_DONE(r)	(r)
#endif

ssize_t
io_write(int fd, const void *p, size_t n)
{
	if (IO_FAULT())
		return -1;
	return (ssize_t)IO_DONE(write(fd, p, n));
}

static ssize_t
io_pwrite1(int fd, const void *p, size_t n, off_t off)
{
	if (IO_FAULT())
		return -1;
	return (ssize_t)IO_DONE(pwrite(fd, p, n, off));
}

/* For the spool directory. */
static int
io_fsync(int fd)
{
	if (IO_FAULT())
		return -1;
	return (int)IO_DONE(fsync(fd));
}

/* For files: their octets and what it takes to read them back (size,
 * blocks), not their times, which an update never needs. */
int
io_fdatasync(int fd)
{
	if (IO_FAULT())
		return -1;
	return (int)IO_DONE(fdatasync(fd));
}

int
io_ftruncate(int fd, uint64_t len)
{
	if (IO_FAULT())
		return -1;
	return (int)IO_DONE(ftruncate(fd, (off_t)len));
}

int
io_rename(const char *from, const char *to)
{
	if (IO_FAULT())
		return -1;
	return (int)IO_DONE(rename(from, to));
}

int
io_exchange(const char *from, const char *to)
{
	if (IO_FAULT())
		return -1;
	return (int)IO_DONE(renameat2(AT_FDCWD, from, AT_FDCWD, to,
	    RENAME_EXCHANGE));
}

int
io_unlink(const char *path)
{
	if (IO_FAULT())
		return -1;
	return (int)IO_DONE(unlink(path));
}

/* Not a fault point: removes a file that no repair reads (a kill there
 * leaves what any kill leaves). */
int
io_cleanup(const char *path)
{
	return unlink(path);
}

int
io_link(const char *from, const char *to)
{
	if (IO_FAULT())
		return -1;
	return (int)IO_DONE(link(from, to));
}

/* copy_file_range(2), one of the wrapped writes. */
ssize_t
io_copy_range(int src, uint64_t *off, int dst, uint64_t *doff, size_t n)
{
	off_t	o = (off_t)*off, d = (off_t)*doff;
	ssize_t	r;

	if (IO_FAULT())
		return -1;
	r = (ssize_t)IO_DONE(copy_file_range(src, &o, dst, &d, n, 0));
	if (r > 0) {
		*off += (uint64_t)r;
		*doff += (uint64_t)r;
	}
	return r;
}

/* Writes all n octets at off; 0 or -1 with errno. */
int
io_pwrite(int fd, const void *buf, size_t n, uint64_t off)
{
	const char	*p = buf;
	ssize_t		 r;

	while (n > 0) {
		if ((r = io_pwrite1(fd, p, n, (off_t)off)) == -1) {
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
io_pread(int fd, void *buf, size_t n, uint64_t off)
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
io_pread_exact(int fd, void *buf, size_t n, uint64_t off)
{
	ssize_t	r;

	if ((r = io_pread(fd, buf, n, off)) == -1)
		return -1;
	if ((size_t)r != n) {
		errno = EIO;
		return -1;
	}
	return 0;
}

uint64_t
io_ms(void)
{
	struct timespec	ts;

	if (clock_gettime(CLOCK_MONOTONIC, &ts) == -1)
		return 0;
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

void
io_sleep_ms(unsigned int ms)
{
	struct timespec	ts;

	ts.tv_sec = ms / 1000;
	ts.tv_nsec = (long)(ms % 1000) * 1000000;
	while (nanosleep(&ts, &ts) == -1 && errno == EINTR)
		;
}

/* The directory part of path ("." if none) into buf; -1 if too long. */
int
io_dirname(const char *path, char *buf, size_t size)
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

/* O_PATH descriptor of a regular file of uid with at most links links. */
int
io_ours(const char *path, uid_t uid, nlink_t links)
{
	struct stat	st;
	int		fd;

	if ((fd = open(path, O_PATH | O_NOFOLLOW | O_CLOEXEC)) == -1)
		return -1;
	if (fstat(fd, &st) == -1 || !S_ISREG(st.st_mode) ||
	    st.st_uid != uid || st.st_nlink > links) {
		(void)close(fd);
		return -1;
	}
	return fd;
}

/* fsync(2) the spool directory after a file was created or removed. */
int
io_fsyncdir(const char *path)
{
	char	dir[PATH_MAX];
	int	fd, r, e;

	if (io_dirname(path, dir, sizeof(dir)) == -1) {
		errno = ENAMETOOLONG;
		return -1;
	}
	if ((fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC)) == -1)
		return -1;
	r = io_fsync(fd);
	e = errno;
	if (close(fd) == -1 && r == 0)
		return -1;
	errno = e;
	return r;
}
