/*
 * mdint.h: internal to maildrop.c, lock.c, mbox.c, journal.c and io.c,
 * the files of the maildrop: what they share.  pop3d.c uses maildrop.h
 * only.
 */
#ifndef MDINT_H
#define MDINT_H

#include <sys/types.h>

#include <stdint.h>

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#define MD_AVX2
#endif

#include "maildrop.h"

/* Index read size: large reads, small enough to stay in the L2 cache. */
#define MD_IX_BLOCK	(256 * 1024)
/* Room for a path derived from the mailbox's (journal, its temp, aside). */
#define MD_PATH		(sizeof(((struct maildrop *)0)->path) + 64)

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
	int		 pseudo;	/* message 0: MD_PS_* marks (mbox.c) */
	/* Checking against an index (md_ixcheck()) rather than building
	 * one: msg[] holds the last few records only, msg[0] being the
	 * k0-th message of the file; ref[i] is the file's (i + hid)-th. */
	const struct md_msg *ref;
	uint32_t	 nref, hid;
	uint32_t	 k0;
	uint32_t	 kfirst;	/* the file number of the first record */
	uint64_t	 first;		/* the offset of the first record */
	int		 started;	/* a record was added */
	int		 bad;		/* a record differs from ref */
};

/* One block for reading and copying (journal.c). */
extern unsigned char	md_blk[MD_BLOCK];

/* io.c: the wrapped calls (fault injection), reads, the clock. */
ssize_t		md_write(int, const void *, size_t);
int		md_link(const char *, const char *);
uint64_t	md_ms(void);
void		md_sleep_ms(unsigned int);
int		md_dirname(const char *, char *, size_t);
ssize_t		md_cfr(int, uint64_t *, int, uint64_t *, size_t);
int		md_fdatasync(int);
int		md_ftruncate(int, uint64_t);
int		md_rename(const char *, const char *);
int		md_unlink(const char *);
int		md_pwrite(int, const void *, size_t, uint64_t);
ssize_t		md_pread(int, void *, size_t, uint64_t);
int		md_preadx(int, void *, size_t, uint64_t);
int		md_fsyncdir(const struct maildrop *);
/* lock.c: the spool locks. */
void		md_dot_refresh(void);
void		md_dot_release(const char *);
enum md_res	md_spool_lock(const struct maildrop *);
void		md_spool_unlock(const struct maildrop *);
/* maildrop.c: verification. */
enum md_res	md_check(struct maildrop *, uint64_t *);

/* mbox.c: the index, twins, the digest of a message. */
#ifdef MD_AVX2
int		md_avx2(void);
#endif
enum md_res	md_index(int, uint64_t, int, struct md_ix *);
enum md_res	md_ixcheck(int, uint64_t, const struct maildrop *);
void		md_ix_hide(struct md_ix *, uint64_t, uint64_t *);
enum md_res	md_twins(struct maildrop *);
int		md_msghash(const struct maildrop *, const struct md_msg *,
		    unsigned char *);

/* journal.c: the journaled update, repair of an interrupted one. */
enum md_res	md_compact(struct maildrop *, uint32_t, uint64_t);
enum md_res	md_repair(struct maildrop *, int *);

#endif /* MDINT_H */
