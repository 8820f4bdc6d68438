/*
 * lock.h: the locks of a mailbox (lock.c): the session lock, the spool
 * locks (fcntl, dotlock) taken by the methods given (POP3_LOCK_*), and
 * the keep-alive of our dotlock.  Knows nothing of the mbox format.
 */
#ifndef LOCK_H
#define LOCK_H

#include <stdint.h>

#include "maildrop.h"

/* flock(2) of the open mailbox for the whole session: MD_OK, MD_INUSE
 * when another session holds it, MD_TEMP. */
enum md_res	lock_session(int, const char *);
/* The spool locks of the mailbox fd at path, lockpath its dotlock:
 * MD_OK, MD_TEMP (busy for MD_LOCK_WAIT seconds, an error), MD_PERM. */
enum md_res	lock_spool(int, const char *, const char *, int);
void		lock_spool_release(int, const char *, const char *, int);
/* Removes our dotlock lockpath if we hold it (every path, twice). */
void		lock_dot_release(const char *);
/* Makes the unique file of the dotlock for lockpath now (before the
 * user's sandbox); lock_dot_end() removes it (md_close()). */
void		lock_dot_prepare(const char *);
void		lock_dot_end(void);
/* The keep-alive: refreshes our dotlock now and then (MD_DOTLOCK_REFRESH)
 * during long work under the spool locks. */
void		lock_alive(void);

/* Unit tests: refresh every ms milliseconds (0: at every chance). */
void		lock_test_refresh(uint64_t);

#endif /* LOCK_H */
