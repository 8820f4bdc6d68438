/*
 * maildrop.h: the mbox spool of one user (maildrop.c, the only file that
 * calls cache.c, lock.c, mbox.c, journal.c and io.c).  Runs only as that user.
 * Contracts for proto.c; see the README "Design" section for the on-disk
 * rules (message boundaries, sizes, UIDL, locking, update journal).
 */
#ifndef MAILDROP_H
#define MAILDROP_H

#include "pop3d.h"

/* Results: proto.c maps them to RFC 3206 response codes. */
enum md_res {
	MD_OK = 0,
	MD_INUSE,	/* another session holds the mailbox: [IN-USE] */
	MD_TEMP,	/* lock timeout, I/O error, disk full: [SYS/TEMP] */
	MD_PERM,	/* unsafe or unusable mailbox, too large: [SYS/PERM] */
	MD_CHANGED	/* the mailbox was rewritten under us: [SYS/TEMP] */
};

/* The maildrop of a session: opaque outside maildrop.c. */
struct maildrop;

/* A closed maildrop (NULL: out of memory); md_free() closes and frees. */
struct maildrop	*md_new(void);
void		 md_free(struct maildrop *);

/* Before the user's sandbox (sandbox.c): makes what an update writes
 * and fills rule[] (max entries) with the user's files; returns how many
 * (0: no mailbox).  md_close() removes what it made. */
size_t		md_prepare(const struct pop_user *, struct sbx_rule *, size_t);
/*
 * Opens user->mailbox safely (O_NOFOLLOW, regular file, owner, one link),
 * takes the session lock (a second session gets MD_INUSE at once), takes
 * the spool locks (fcntl, then dotlock; never waiting for one while holding
 * the other), repairs a half-done update, indexes, releases the spool
 * locks by the methods of opt.locks.  A missing mailbox is an empty one.
 */
enum md_res	md_open(struct maildrop *, const struct pop_user *);
/* Messages 0..md_count() - 1: their sizes (octets RETR sends, before
 * stuffing), and the marks of DELE (undone by RSET, acted on by UPDATE). */
uint32_t	md_count(const struct maildrop *);
uint64_t	md_size(const struct maildrop *, uint32_t);
void		md_dele(struct maildrop *, uint32_t);
void		md_undele(struct maildrop *, uint32_t);
int		md_is_deleted(const struct maildrop *, uint32_t);
/*
 * Streams message i (0-based) through put(): LF becomes CRLF, the last line
 * ends in CRLF, a line starting with "." gets one more ".".  lines < 0: the
 * whole message; else the header, the empty line and that many body lines
 * (TOP).  Does not send the terminating ".".  Never returns bytes of another
 * message than the one indexed (MD_CHANGED instead, before sending any).
 * put() returns 0 or -1 (client gone: stream stops, MD_TEMP).
 */
enum md_res	md_stream(struct maildrop *, uint32_t, long,
		    int (*)(void *, const char *, size_t), void *);
/* Writes the UIDL of message i: printable 0x21..0x7E, <= POP3_UIDL_MAX. */
void		md_uidl(const struct maildrop *, uint32_t, char *, size_t);
/*
 * UPDATE: removes exactly the deleted messages, keeps every other octet and
 * mail appended since md_open, and returns MD_OK only when the result is
 * on disk.  On any error the mailbox is as before (or completed by the next
 * session's repair): MD_TEMP or MD_CHANGED.
 */
enum md_res	md_update(struct maildrop *);
/* Releases every lock and closes; changes nothing.  Safe to call twice. */
void		md_close(struct maildrop *);

#endif /* MAILDROP_H */
