/*
 * mdint.h: internal to maildrop.c (and the white-box tests of
 * tests/unit and fuzz/): the maildrop of a session.  pop3d.c uses
 * maildrop.h only, where it is opaque.
 */
#ifndef MDINT_H
#define MDINT_H

#include <sys/types.h>

#include <stdint.h>
#include <time.h>

#include "cache.h"
#include "maildrop.h"
#include "mbox.h"

struct maildrop {
	int		 fd;		/* the mbox, or -1 when it does not exist */
	int		 sfd;		/* the session-lock file (lock.c), or -1 */
	char		 path[MD_PATH_MAX];
	char		 lockpath[MD_PATH_MAX + 8];
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
	int		 keep;		/* the index to keep at the end (md_keep()): */
	int		 keep_sealed;	/* its identity keep_id, and sealed */
	struct cache_id	 keep_id;
	const struct pop_user *user;
};

#endif /* MDINT_H */
