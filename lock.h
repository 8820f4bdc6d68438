/*
 * lock.h: the locks of a mailbox (lock.c): the session lock, the spool
 * locks (fcntl, dotlock) taken by the methods given (POP3_LOCK_*), and
 * the keep-alive of our dotlock.  Knows nothing of the mbox format.
 */
#ifndef LOCK_H
#define LOCK_H

#include <sys/types.h>

#include <stdint.h>

#include "maildrop.h"

/* The session lock of the mailbox fd at path, of the user uid, held for
 * the whole session (lock.c's first comment): MD_OK with the int the
 * open session-lock file (-1: flock(2) on the mailbox), MD_INUSE when
 * another session holds it, on any host sharing the spool, MD_TEMP,
 * MD_PERM.  lock_session_release() gives it back (every path, twice). */
enum md_res	lock_session(int, const char *, uid_t, int *);
void		lock_session_release(int *);
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

/* Unit tests: refresh every ms milliseconds (0: at every chance); forget
 * the session lock of a maildrop a failed test left open. */
void		lock_test_refresh(uint64_t);
void		lock_test_forget(void);

#endif /* LOCK_H */
