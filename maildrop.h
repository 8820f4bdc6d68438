/*
 * maildrop.h: the mbox spool of one user (maildrop.c).  Runs only as that
 * user.  Contracts for pop3d.c; see the README "Design" section for the
 * on-disk rules (message boundaries, sizes, UIDL, locking, update journal).
 */
#ifndef MAILDROP_H
#define MAILDROP_H

#include "pop3d.h"

/* Results: pop3d.c maps them to RFC 3206 response codes. */
enum md_res {
	MD_OK = 0,
	MD_INUSE,	/* another session holds the mailbox: [IN-USE] */
	MD_TEMP,	/* lock timeout, I/O error, disk full: [SYS/TEMP] */
	MD_PERM,	/* unsafe or unusable mailbox, too large: [SYS/PERM] */
	MD_CHANGED	/* the mailbox was rewritten under us: [SYS/TEMP] */
};

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

struct maildrop {
	int		 fd;		/* the mbox, or -1 when it does not exist */
	char		 path[4096];
	char		 lockpath[4096 + 8];
	dev_t		 dev;
	ino_t		 ino;
	uint64_t	 indexed;	/* octets covered by the index */
	struct md_msg	*msg;		/* visible messages, 1..n are msg[0..n-1] */
	uint32_t	 n;
	uint64_t	 hidden_end;	/* end of a hidden pseudo-message, or 0 */
	uint64_t	 vsize;		/* size, ctime and mtime when the index */
	struct timespec	 vctime;	/* was last verified: a change to any */
	struct timespec	 vmtime;	/* of them means verify again */
	int		 changed;	/* rewritten under us: serve and delete
					   nothing more */
	const struct pop_user *user;
};

/*
 * Opens user->mailbox safely (O_NOFOLLOW, regular file, owner, one link),
 * takes the session lock (a second session gets MD_INUSE at once), takes
 * the spool locks (fcntl, then dotlock; never waiting for one while holding
 * the other), repairs a half-done update, indexes, releases the spool
 * locks.  A missing mailbox is an empty one (md->fd = -1, n = 0).
 */
enum md_res	md_open(struct maildrop *, const struct pop_user *);
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
