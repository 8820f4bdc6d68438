/*
 * cache.h: the index cache of a mailbox (cache.c): the index of the last
 * session, kept in a file of the user's cache directory, and used only for
 * the very file it was made from (README "Design", "The index cache").
 * Calls io.c and the log only; maildrop.c calls it.
 */
#ifndef CACHE_H
#define CACHE_H

#include <sys/stat.h>

#include <stdint.h>
#include <time.h>

#include "mbox.h"

/* The mailbox an index is of: all must be equal for a cache to be used. */
struct cache_id {
	uint64_t	dev, ino, size;
	int64_t		mtime_s, mtime_ns, ctime_s, ctime_ns;
	uint64_t	uid;
	unsigned char	path[32];	/* SHA-256 of the mailbox's path */
};

/* The index a cache holds: visible messages, the hidden pseudo-message. */
struct cache_ix {
	struct md_msg	*msg;		/* malloc(3)ed; the caller frees */
	uint32_t	 n;
	uint64_t	 hidden_end;
	int		 sealed;	/* the identity was sealed (cache_seal) */
};

/* The identity of the mailbox path of uid whose fstat is st. */
void	cache_ident(struct cache_id *, const char *, uid_t,
	    const struct stat *);
/* The index in dir's cache file if it is that of id: 0 with *ix set, or
 * -1 (no cache, or one that is not used: logged once, it is rewritten). */
int	cache_load(const char *, const struct cache_id *, struct cache_ix *);
/* Writes ix as dir's cache file for id, atomically (a new file renamed
 * over the old); failures are logged and change nothing else. */
void	cache_save(const char *, const struct cache_id *,
	    const struct cache_ix *);
/* The check of a cache file's octets (len of them) against id: 0 with
 * *ix set, or -1 with *why saying what is wrong (cache_load, fuzz). */
int	cache_parse(const unsigned char *, size_t, const struct cache_id *,
	    struct cache_ix *, const char **);
/* Under the spool locks, with st the fstat of fd's file taken under them:
 * waits (at most CACHE_SEAL_NS) until any write after the locks must
 * change the file's ctime (README "The index cache"): 1, or 0 if it
 * cannot be sure.  The caller then releases the locks. */
int	cache_seal(int, const struct stat *);
/* Its rule: the nanoseconds still to wait, the coarse clock reading now,
 * for a ctime c: 0 when sealed, -1 when not within CACHE_SEAL_NS. */
int64_t	cache_sealwait(const struct timespec *, const struct timespec *);

#endif /* CACHE_H */
