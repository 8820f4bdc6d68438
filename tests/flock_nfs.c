/*
 * flock_nfs.c: an LD_PRELOAD shim that gives flock(2) what the Linux
 * NFS client gives it (fs/nfs/file.c, nfs_flock(): "We're simulating
 * flock() locks using posix locks on the server"), for the tests of a
 * shared spool on a machine that cannot mount NFS
 * (tests/test_shared_spool.py).
 *
 * On NFS a flock lock becomes a whole-file byte-range lock on the server,
 * owned by the open file: it conflicts with every fcntl(2) lock on the
 * file by another owner (an MDA's, and the same process's own, which
 * the server holds under another owner), and goes when the file is
 * closed.  Open file description locks (F_OFD_SETLK, Linux 3.15) are
 * exactly that on a local file system: owned by the open file, released
 * at its last close, and in conflict with classic fcntl locks even of
 * the same process.  LOCK_NB maps to F_OFD_SETLK, else F_OFD_SETLKW;
 * a busy lock fails with EWOULDBLOCK, as flock does.
 *
 * And fstatfs(2) says NFS (NFS_SUPER_MAGIC) for every file, as it does
 * for a spool mounted over NFS.
 *
 * Build: cc -shared -fPIC -o flock_nfs.so flock_nfs.c
 */

#define _GNU_SOURCE
#include <sys/file.h>
#include <sys/syscall.h>
#include <sys/vfs.h>

#include <linux/magic.h>

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <unistd.h>

int	flock(int, int);
int	fstatfs(int, struct statfs *);

int
flock(int fd, int op)
{
	struct flock	fl;
	int		cmd = (op & LOCK_NB) ? F_OFD_SETLK : F_OFD_SETLKW;

	memset(&fl, 0, sizeof(fl));
	fl.l_whence = SEEK_SET;		/* l_start 0, l_len 0: the whole file */
	switch (op & ~LOCK_NB) {
	case LOCK_SH:
		fl.l_type = F_RDLCK;
		break;
	case LOCK_EX:
		fl.l_type = F_WRLCK;
		break;
	case LOCK_UN:
		fl.l_type = F_UNLCK;
		cmd = F_OFD_SETLK;
		break;
	default:
		errno = EINVAL;
		return -1;
	}
	if (fcntl(fd, cmd, &fl) == -1) {
		if (errno == EAGAIN || errno == EACCES)
			errno = EWOULDBLOCK;
		return -1;
	}
	return 0;
}

int
fstatfs(int fd, struct statfs *buf)
{
	if (syscall(SYS_fstatfs, fd, buf) == -1)
		return -1;
	buf->f_type = NFS_SUPER_MAGIC;
	return 0;
}
