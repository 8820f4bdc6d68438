/*
 * journal.h: the journaled update of a mailbox (journal.c): the journal
 * format, the plan of the moves, applying it, the repair of an
 * interrupted one.  Given the open mailbox, the extents to keep and a
 * keep-alive; never locks (the caller holds the spool locks).
 */
#ifndef JOURNAL_H
#define JOURNAL_H

#include <sys/types.h>

#include <stdint.h>

#include "maildrop.h"

/* The mailbox a journal is for. */
struct jnl_box {
	int		 fd;
	const char	*path;		/* its journal is next to it */
	dev_t		 dev;
	ino_t		 ino;
	uid_t		 uid;		/* owner of the mailbox and journal */
	void		(*alive)(void);	/* keep-alive, called now and then */
};

/* An extent: len octets of the mailbox move from s to d; their copy is at
 * joff in the journal, or JNL_NONE. */
struct jnl_ext {
	uint64_t	 s, d, len, joff;
};

/*
 * Compacts the mailbox of size f in place: keeps [0, d) and the x
 * extents (s and len set, in file order, from d on), through a journal.
 * MD_OK only when all of it is on disk; else MD_TEMP.
 */
enum md_res	jnl_compact(const struct jnl_box *, uint64_t, uint64_t,
		    struct jnl_ext *, uint64_t);
/* Repairs an interrupted update, if its journal is there; *done is set
 * when one was completed.  MD_OK, MD_TEMP or MD_PERM. */
enum md_res	jnl_repair(const struct jnl_box *, int *);

/* Before the user's sandbox: the spare journal the next journal is
 * written to (fd[1]), and an O_PATH descriptor of a journal of the user
 * there now (fd[0]); -1 each if none.  jnl_end() removes the spare. */
void		jnl_prepare(const struct jnl_box *, int *);
void		jnl_end(void);

#endif /* JOURNAL_H */
