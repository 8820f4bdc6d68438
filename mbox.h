/*
 * mbox.h: the mbox format (mbox.c): From_ lines, the index, its check
 * against a file, digests, twins, UIDLs.  Reads a file descriptor it is
 * given; knows nothing of locks (long scans call the keep-alive given).
 */
#ifndef MBOX_H
#define MBOX_H

#include <sys/types.h>

#include <stdint.h>

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#define MD_AVX2
#endif

#include "maildrop.h"

/* One message of the index: a small fixed record (at most 64 bytes). */
struct md_msg {
	uint64_t	from;		/* offset of its From_ line */
	uint64_t	data;		/* first octet after the From_ line */
	uint64_t	end;		/* end of its octets (separator excluded) */
	uint64_t	size;		/* octets RETR sends, before stuffing */
	unsigned char	hash[16];	/* digest of From_ line + stable headers */
	uint32_t	twin;		/* 0, or n for the n-th identical twin */
	uint8_t		deleted;
};

/* The index of [start, lim) being built (one of two halves, or all). */
struct mbox_ix {
	int		 fd;
	uint64_t	 start;		/* 0, or the second half's first octet */
	uint64_t	 stop;		/* first half: stop at a message >= this */
	uint64_t	 lim;		/* end of the indexed octets */
	void		(*alive)(void);	/* keep-alive (the calling thread's) */
	int		 done;		/* stopped at a message >= stop */
	enum md_res	 r;
	struct md_msg	*msg;
	uint32_t	 n, cap;
	uint64_t	 cum;		/* LFs not after a CR before the scan */
	uint64_t	 cumdata;	/* the same at the last message's data */
	int		 hash_due;	/* the last message's digest is to do */
	int		 pseudo;	/* message 0: MD_PS_* marks (mbox.c) */
	/* Checking against an index (mbox_check()) rather than building
	 * one: msg[] holds the last few records only, msg[0] being the
	 * kheld-th message of the file; ref[i] is the file's
	 * (i + nhidden)-th. */
	const struct md_msg *ref;
	uint32_t	 nref, nhidden;
	uint32_t	 kheld;
	uint32_t	 kfirst;	/* the file number of the first record */
	uint64_t	 first;		/* the offset of the first record */
	int		 started;	/* a record was added */
	int		 bad;		/* a record differs from ref */
};

#ifdef MD_AVX2
int		mbox_avx2(void);
#endif
/* The length of the From_ line at s (its LF included; n octets there)
 * if s starts with one, by the rule of mbox.c's first comment; else 0. */
size_t		mbox_fromline(const unsigned char *, size_t);
/* Indexes [0, lim) of fd into ix (ix->msg: the records, ix->n). */
enum md_res	mbox_index(int, uint64_t, void (*)(void), struct mbox_ix *);
/*
 * Is [0, lim) of fd still what the index ref (nref records, after
 * nhidden hidden pseudo-messages: 0 or 1) says, message for message?
 * MD_OK, or MD_CHANGED; MD_PERM: no longer an mbox; MD_TEMP: an error.
 */
enum md_res	mbox_check(int, uint64_t, const struct md_msg *, uint32_t,
		    uint32_t, void (*)(void));
/* Drops a pseudo-message at the top from ix: *hidden = its record's end
 * (0 if none). */
void		mbox_hide(struct mbox_ix *, uint64_t, uint64_t *);
/* Numbers byte-identical twins 1, 2, ... in file order. */
enum md_res	mbox_twins(struct md_msg *, uint32_t);
/* The digest of message m of fd (indexed up to lim) as the file holds it
 * now, read through buf (MD_FROM_MAX + MD_HASH_MAX octets): 0, or -1. */
int		mbox_msghash(int, uint64_t, const struct md_msg *,
		    unsigned char *, unsigned char *);
/* The UIDL of m: printable 0x21..0x7E, <= POP3_UIDL_MAX. */
void		mbox_uidl(const struct md_msg *, char *, size_t);

/* Unit tests: split mailboxes of min octets or more at offset at (0: the
 * middle); min 0: back to normal. */
void		mbox_test_split(uint64_t, uint64_t);

#endif /* MBOX_H */
