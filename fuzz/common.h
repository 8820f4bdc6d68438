/*
 * fuzz/common.h: what the libFuzzer targets of pop3d share (common.c):
 * link-time wrappers (-Wl,--wrap) for read, write, vsyslog and crypt_rn,
 * the fatal exit turned into abort(), files for inputs, a growing byte
 * buffer, and the failure report.
 *
 * Each target #includes the source it tests ("../pop3d.c", "../auth.c",
 * or the maildrop's three files "../maildrop.c", "../mbox.c" and
 * "../update.c"), so that it reaches their static functions without any
 * change to them, and provides stubs for what the other files would.  The Makefile compiles the targets with
 * -D_exit=fz_exit: a fatal()/fatalx() of the code under test is a crash.
 */
#ifndef FUZZ_COMMON_H
#define FUZZ_COMMON_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/* Reads from this fd return at most fz_read_max octets (0: no limit). */
extern int	fz_read_fd;
extern size_t	fz_read_max;
/* Writes to this fd fail with EPIPE once fz_write_left octets went out
 * (fz_write_limit 0: never), as to a client that closed its side. */
extern int	fz_write_fd;
extern int	fz_write_limit;
extern size_t	fz_write_left;

/* A growing buffer for output the target inspects. */
struct fz_buf {
	unsigned char	*p;
	size_t		 len, cap;
};
void	fz_buf_add(struct fz_buf *, const void *, size_t);
void	fz_buf_free(struct fz_buf *);
/* Equal octets (either pointer may be NULL when its length is 0). */
int	fz_eq(const void *, size_t, const void *, size_t);

/* An anonymous file (memfd) holding len octets, offset 0; aborts on error. */
int	fz_memfd(const char *, const void *, size_t);
/* The whole content of fd into b (from offset 0). */
void	fz_slurp(int, struct fz_buf *);
/* A private directory under /dev/shm (else /tmp) for this process. */
const char *fz_dir(void);
/* Removes every file in fz_dir(). */
void	fz_cleandir(void);
/* Writes len octets to path (created or truncated, mode 0600). */
void	fz_write_file(const char *, const void *, size_t);

/* An invariant broke: prints what and where, then abort(). */
void	fz_fail(const char *, ...)
	    __attribute__((format(printf, 1, 2), noreturn));
#define FZ_CHECK(c, ...) do {						\
	if (!(c))							\
		fz_fail(__VA_ARGS__);					\
} while (0)

void	fz_exit(int) __attribute__((noreturn));

#endif /* FUZZ_COMMON_H */
