/*
 * io.h: the bottom layer of the maildrop (io.c), on libc only: the
 * wrappers of every call that writes (fault injection), full reads and
 * writes, fsync of a directory, the millisecond clock (conn.c's too).
 */
#ifndef IO_H
#define IO_H

#include <sys/types.h>

#include <stdint.h>

/* The wrapped calls: the system's, or an injected fault (io.c). */
ssize_t		io_write(int, const void *, size_t);
int		io_fdatasync(int);
int		io_ftruncate(int, uint64_t);
int		io_rename(const char *, const char *);
/* Swaps two names at once (renameat2 RENAME_EXCHANGE): 0, or -1 with
 * errno (ENOENT: one is missing; EINVAL: the file system cannot). */
int		io_exchange(const char *, const char *);
int		io_unlink(const char *);
int		io_link(const char *, const char *);
/* unlink(2) that is never a fault point: temporary files no repair
 * reads (the dotlock's unique file, the spare journal). */
int		io_cleanup(const char *);
ssize_t		io_copy_range(int, uint64_t *, int, uint64_t *, size_t);
/* Writes all n octets at off: 0, or -1 with errno. */
int		io_pwrite(int, const void *, size_t, uint64_t);
/* Reads up to n octets at off (fewer only at end of file), or -1. */
ssize_t		io_pread(int, void *, size_t, uint64_t);
/* Reads exactly n octets at off: 0, or -1 (errno EIO at a short read). */
int		io_pread_exact(int, void *, size_t, uint64_t);
/* fsync(2) of the directory that holds path, after a file was created
 * or removed there. */
int		io_fsyncdir(const char *);
/* The directory part of path ("." if none) into buf; -1 if too long. */
int		io_dirname(const char *, char *, size_t);
/* O_PATH descriptor of path when it is a regular file (not a symbolic
 * link) of uid with at most links links, else -1: what may get a rule of
 * the user's sandbox (maildrop.c's md_prepare()). */
int		io_ours(const char *, uid_t, nlink_t);
/* CLOCK_MONOTONIC in milliseconds (0 if the clock fails). */
uint64_t	io_ms(void);
void		io_sleep_ms(unsigned int);

/* Unit tests: read POP3D_FAULT again and count from 1 (defined in the
 * unit and fault builds only). */
void		io_fault_reset(void);

#endif /* IO_H */
