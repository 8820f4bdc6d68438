/*
 * fuzz/common.c: see common.h.
 */
#include <sys/mman.h>
#include <sys/stat.h>

#include <crypt.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common.h"

int	fz_read_fd = -1;
size_t	fz_read_max;
int	fz_write_fd = -1;
int	fz_write_limit;
size_t	fz_write_left;

ssize_t	__real_read(int, void *, size_t);
ssize_t	__real_write(int, const void *, size_t);
ssize_t	__wrap_read(int, void *, size_t);
ssize_t	__wrap_write(int, const void *, size_t);
void	__wrap_vsyslog(int, const char *, va_list);
char	*__real_crypt_rn(const char *, const char *, void *, int);
char	*__wrap_crypt_rn(const char *, const char *, void *, int);

ssize_t
__wrap_read(int fd, void *buf, size_t n)
{
	if (fd == fz_read_fd && fz_read_max > 0 && n > fz_read_max)
		n = fz_read_max;
	return __real_read(fd, buf, n);
}

ssize_t
__wrap_write(int fd, const void *buf, size_t n)
{
	if (fd == fz_write_fd && fz_write_limit) {
		if (fz_write_left == 0) {
			errno = EPIPE;
			return -1;
		}
		if (n > fz_write_left)
			n = fz_write_left;
		fz_write_left -= n;
	}
	return __real_write(fd, buf, n);
}

/* Nobody wants a fuzzer's log lines in syslog (the targets run with
 * opt.debug = 0); the format is still checked by the compiler. */
void
__wrap_vsyslog(int prio, const char *fmt, va_list ap)
{
	(void)prio;
	(void)fmt;
	(void)ap;
}

/*
 * crypt(3) stand-in: fast and deterministic, as a password-file line may
 * name any hash (bcrypt with cost 31 takes days).  The password "secret"
 * matches every hash; others never do.
 */
char *
__wrap_crypt_rn(const char *phrase, const char *setting, void *data,
    int size)
{
	(void)data;
	(void)size;
	if (phrase == NULL || setting == NULL)
		return NULL;
	if (strcmp(phrase, "secret") == 0)
		return (char *)(uintptr_t)setting;
	return (char *)(uintptr_t)"*0";
}

void
fz_exit(int status)
{
	fprintf(stderr, "fuzz: the code under test called _exit(%d) "
	    "(fatal/fatalx)\n", status);
	abort();
}

void
fz_fail(const char *fmt, ...)
{
	va_list	 ap;

	fprintf(stderr, "fuzz: invariant broken: ");
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fprintf(stderr, "\n");
	abort();
}

void
fz_buf_add(struct fz_buf *b, const void *p, size_t n)
{
	size_t	 cap;

	if (n > SIZE_MAX / 2 - b->len)
		abort();
	if (b->len + n > b->cap) {
		cap = b->cap == 0 ? 4096 : b->cap;
		while (cap < b->len + n)
			cap *= 2;
		if ((b->p = realloc(b->p, cap)) == NULL)
			abort();
		b->cap = cap;
	}
	if (n > 0)
		memcpy(b->p + b->len, p, n);
	b->len += n;
}

int
fz_eq(const void *a, size_t alen, const void *b, size_t blen)
{
	return alen == blen && (alen == 0 || memcmp(a, b, alen) == 0);
}

void
fz_buf_free(struct fz_buf *b)
{
	free(b->p);
	b->p = NULL;
	b->len = b->cap = 0;
}

int
fz_memfd(const char *name, const void *p, size_t len)
{
	const char	*s = p;
	ssize_t		 n;
	int		 fd;

	if ((fd = memfd_create(name, MFD_CLOEXEC)) == -1) {
		perror("memfd_create");
		abort();
	}
	/* A memfd is mode 0777; the password-file reader refuses that. */
	if (fchmod(fd, 0600) == -1)
		abort();
	while (len > 0) {
		if ((n = __real_write(fd, s, len)) <= 0) {
			perror("write memfd");
			abort();
		}
		s += n;
		len -= (size_t)n;
	}
	if (lseek(fd, 0, SEEK_SET) == -1)
		abort();
	return fd;
}

void
fz_slurp(int fd, struct fz_buf *b)
{
	char	 buf[65536];
	off_t	 off = 0;
	ssize_t	 n;

	b->len = 0;
	while ((n = pread(fd, buf, sizeof(buf), off)) > 0) {
		fz_buf_add(b, buf, (size_t)n);
		off += n;
	}
	if (n == -1) {
		perror("pread");
		abort();
	}
}

void
fz_cleandir(void)
{
	char		 path[512];
	struct dirent	*de;
	DIR		*d;
	const char	*dir = fz_dir();

	if ((d = opendir(dir)) == NULL)
		abort();
	while ((de = readdir(d)) != NULL) {
		if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
			continue;
		(void)snprintf(path, sizeof(path), "%s/%s", dir, de->d_name);
		if (unlink(path) == -1)
			abort();
	}
	(void)closedir(d);
}

/* Removes fz_dir() and the files a target left in it, at exit. */
static void
fz_rmdir(void)
{
	fz_cleandir();
	(void)rmdir(fz_dir());
}

/* Removes the directories of earlier processes that crashed (a crash
 * skips atexit). */
static void
fz_rmstale(const char *parent)
{
	char		 path[512], file[1024];
	struct dirent	*de, *fe;
	DIR		*d, *fd;
	char		*end;
	long		 pid;

	if ((d = opendir(parent)) == NULL)
		return;
	while ((de = readdir(d)) != NULL) {
		if (strncmp(de->d_name, "pop3d-fuzz.", 11) != 0)
			continue;
		pid = strtol(de->d_name + 11, &end, 10);
		if (*end != '\0' || pid <= 0 || kill((pid_t)pid, 0) == 0 ||
		    errno != ESRCH)
			continue;
		(void)snprintf(path, sizeof(path), "%s/%s", parent, de->d_name);
		if ((fd = opendir(path)) == NULL)
			continue;
		while ((fe = readdir(fd)) != NULL) {
			(void)snprintf(file, sizeof(file), "%s/%s", path,
			    fe->d_name);
			(void)unlink(file);
		}
		(void)closedir(fd);
		(void)rmdir(path);
	}
	(void)closedir(d);
}

const char *
fz_dir(void)
{
	static char	 dir[128];

	if (dir[0] != '\0')
		return dir;
	fz_rmstale("/dev/shm");
	fz_rmstale("/tmp");
	(void)snprintf(dir, sizeof(dir), "/dev/shm/pop3d-fuzz.%ld",
	    (long)getpid());
	if (mkdir(dir, 0700) == -1 && errno != EEXIST) {
		(void)snprintf(dir, sizeof(dir), "/tmp/pop3d-fuzz.%ld",
		    (long)getpid());
		if (mkdir(dir, 0700) == -1 && errno != EEXIST) {
			perror(dir);
			abort();
		}
	}
	if (atexit(fz_rmdir) != 0)
		abort();
	return dir;
}

void
fz_write_file(const char *path, const void *p, size_t len)
{
	const char	*s = p;
	ssize_t		 n;
	int		 fd;

	if ((fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC,
	    0600)) == -1) {
		perror(path);
		abort();
	}
	while (len > 0) {
		if ((n = __real_write(fd, s, len)) <= 0) {
			perror(path);
			abort();
		}
		s += n;
		len -= (size_t)n;
	}
	if (close(fd) == -1)
		abort();
}
