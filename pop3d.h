/*
 * pop3d.h: every limit and default of pop3d, with the reason for it, and the
 * contracts between proto.c (protocol), conn.c (the client connection),
 * auth.c (root side, authentication), sandbox.c (seccomp and Landlock)
 * and maildrop.c (the mbox spool, with cache.c, lock.c, mbox.c, journal.c, io.c
 * below it: maildrop.h).
 *
 * Checklist: a limit changed here is also changed in pop3d.8 (LIMITS) and
 * the README.
 */
#ifndef POP3D_H
#define POP3D_H

#include <sys/types.h>

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <time.h>

#define POP3D_NAME	"pop3d"
#define POP3D_VERSION	"0.1"

/*
 * Protocol limits.
 */
/* RFC 2449 section 4: a command line is at most 255 octets with its CRLF. */
#define POP3_CMD_MAX		255
/* RFC 2449 section 4: a reply line is at most 512 octets with its CRLF. */
#define POP3_LINE_MAX		512
/* Input buffer: one full command plus pipelined ones; never grows. */
#define POP3_INBUF		1024
/* Output buffer for replies and streamed messages (large writes, issue 6). */
#define POP3_OUTBUF		(64 * 1024)
/* RFC 1939 section 3: an autologout timer of at least 10 minutes. */
#define POP3_TIMEOUT		600
/* An overall session limit, so a trickling client cannot hold a process. */
#define POP3_SESSION_MAX	(4 * 3600)
/* Consecutive bad commands before we disconnect (Dovecot uses 20); the
 * last one is answered "-ERR too many bad commands, closing" only. */
#define POP3_BAD_MAX		20
/* Failed logins before we disconnect. */
#define POP3_AUTH_FAIL_MAX	3
/* A failed login is answered this long after PASS, whatever the cause. */
#define POP3_FAIL_DELAY_MS	2000
/* --fail-delay's cap: a minute answers any guessing rate, and a typo
 * (seconds for ms) cannot hold a session for hours. */
#define POP3_FAIL_DELAY_MAX	60000
/* Longest user name and password accepted (both bounded by the line). */
#define POP3_USER_MAX		64
#define POP3_PASS_MAX		POP3_CMD_MAX
/* RFC 5034 section 4: the response after AUTH's "+ " is not a command
 * and may pass 255 octets (a client must not send one inline that would
 * make AUTH longer).  PLAIN's longest that can name a user, with its
 * CRLF: an authzid and authcid of POP3_USER_MAX (the authzid is empty or
 * the authcid), a password of POP3_PASS_MAX, two NULs, in base64. */
#define POP3_SASL_MAX		518	/* checked in proto.c */
/* RFC 1939 section 7: a unique-id is 1 to 70 characters 0x21..0x7E. */
#define POP3_UIDL_MAX		70

/*
 * Password file limits (auth.c).
 */
/* Longest crypt(3) hash: yescrypt with parameters and sha512-crypt with
 * rounds= stay below 200 octets; this leaves room for new ones. */
#define AUTH_HASH_MAX		256
/* Longest line: user, hash, two 10-digit ids, a mailbox path of PATH_MAX
 * and the colons; a longer line is malformed (logged, ignored), never
 * read into more memory. */
#define AUTH_LINE_MAX		(POP3_USER_MAX + AUTH_HASH_MAX + 4096 + 32)

/*
 * Mailbox limits (maildrop.c, lock.c, mbox.c, journal.c).
 */
/* A mailbox path with its NUL (PATH_MAX), and room for the paths made
 * from it (USER.lock, the journal, its temporary name, a journal kept
 * aside, a unique file for the dotlock). */
#define MD_PATH_MAX		4096
#define MD_PATH			(MD_PATH_MAX + 64)
/* Messages per mailbox; a larger one is refused with -ERR [SYS/PERM].
 * At 56 bytes a record this bounds the index at about 110 MB. */
#define MD_MAX_MESSAGES		2000000
/* How long we try to get the spool locks before -ERR [SYS/TEMP]. */
#define MD_LOCK_WAIT		30
/* liblockfile treats a dotlock older than 5 minutes as stale (Debian
 * Policy 11.6); we do the same, and refresh ours every minute. */
#define MD_DOTLOCK_STALE	300
#define MD_DOTLOCK_REFRESH	60
/* Read block for streaming, indexing and the update's copies: large enough for
 * full-speed reads, small enough to stay in the L2 cache and to keep the
 * memory of a session flat (issue 6: 4 MiB whatever the message size). */
#define MD_BLOCK		(256 * 1024)
/* Hostile input.  A From_ line is an address (RFC 5321: 256 octets) and a
 * date; longer lines are never message boundaries, and bound the
 * parser's look-ahead. */
#define MD_FROM_MAX		4096
/* Header octets that go into a UIDL: enough for any real header, and a
 * bound on the work a hostile header-only message costs. */
#define MD_HASH_MAX		(64 * 1024)

/*
 * Index cache limits (cache.c; README "Design", "The index cache").
 */
/* The format of a cache file: one of another version is a miss. */
#define CACHE_VERSION		3
/* Octets of the header of a cache file (struct cache_hdr) and of a record
 * (struct cache_rec: four offsets and sizes, the digest, the twin number),
 * and the longest file: a header and MD_MAX_MESSAGES records (112 MB); a
 * longer one is never read. */
#define CACHE_HDR		144
#define CACHE_REC		56
#define CACHE_MAX_BYTES		\
	(CACHE_HDR + (uint64_t)MD_MAX_MESSAGES * CACHE_REC)
/* The longest wait for the clock to pass a mailbox's ctime while the
 * spool locks are held (cache_seal(): one clock tick is 1 to 10 ms; the
 * wait is added to the UPDATE that makes the cache, and is zero when the
 * index took longer): past it, or for a file system that stamps coarser
 * times than this (whole seconds), no seal. */
#define CACHE_SEAL_NS		20000000L
/* Where the caches live: as root, a directory of root's holding one
 * directory per user (DIR/USER, made by root at login, the user's, mode
 * 0700); not root, the user's own directory (made by the user, 0700;
 * %lu: the uid).  Never the spool: nothing of ours goes there. */
#define CACHE_DIR		"/var/cache/pop3d"
#define CACHE_DIR_USER		"/var/tmp/pop3d-"

/*
 * PROXY protocol limits (proxy.c; HAProxy's proxy-protocol.txt, the spec).
 */
/* Spec 2.1: a v1 line is at most 107 octets with its CRLF. */
#define PROXY_V1_MAX		107
/* Spec 2.1: the shortest v1 line, "PROXY UNKNOWN" CRLF: the first read
 * asks for no more, so that it cannot go past any header. */
#define PROXY_V1_MIN		15
/* Spec 2.2: a v2 header is 16 octets, then a 16-bit length of addresses
 * and TLVs (at most 65535, read and skipped, never stored). */
#define PROXY_V2_HDR		16
/* Spec 2.2: address blocks of AF_INET (2 addresses, 2 ports), AF_INET6,
 * AF_UNIX (two 108-octet paths); a shorter block is malformed. */
#define PROXY_V2_INET		12
#define PROXY_V2_INET6		36
#define PROXY_V2_UNIX		216
/* A proxy sends its header at once: a peer that says nothing for this
 * long is not a proxy (and waits for a greeting it will not get). */
#define PROXY_TIMEOUT		10
/* Entries (addresses or networks) of --proxy-from. */
#define PROXY_NETS_MAX		32

/*
 * Exit statuses (sysexits.h values; pop3d.8 EXIT STATUS lists each).
 */
#define POP3_EX_OK		0	/* session ended by QUIT */
#define POP3_EX_CLOSED		1	/* EOF, timeout, too many errors */
#define POP3_EX_USAGE		64	/* bad command line */
#define POP3_EX_NOUSER		67	/* login failed, client gave up */
#define POP3_EX_SOFTWARE	70	/* internal error */
#define POP3_EX_OSERR		71	/* system error (fork, pipe, ...) */
#define POP3_EX_TEMPFAIL	75	/* mailbox in use, locked, update failed */
#define POP3_EX_CONFIG		78	/* configuration (password file, user) */

/* Lock methods for --lock. */
#define POP3_LOCK_FCNTL		0x01
#define POP3_LOCK_DOTLOCK	0x02

enum pop_backend { POP3_AUTH_PAM, POP3_AUTH_PASSWD };

/*
 * --pam-session: whether PAM's session stack runs (README, DESIGN).  NO:
 * authenticate and acct_mgmt only (Dovecot's default); LOGIN: the session
 * opened and closed at login (Dovecot's session=yes); HELD: open while
 * the user's process runs, closed by a root monitor that waits for it.
 */
enum pop_pam_session { POP3_PAM_NO, POP3_PAM_LOGIN, POP3_PAM_HELD };

/* Options, set once by main() from the command line. */
struct pop_opts {
	const char	*spool;		/* --spool DIR: mailbox is SPOOL/USER */
	enum pop_backend backend;	/* --auth pam | passwd:FILE */
	const char	*passwd_file;	/* FILE of passwd:FILE */
	const char	*pam_service;	/* --pam-service NAME, default "pop3" */
	enum pop_pam_session pam_session; /* --pam-session, default no */
	const char	*prelogin_user;	/* --prelogin-user NAME, default pop3d */
	uid_t		 min_uid;	/* --min-uid N, default 1000 */
	int		 timeout;	/* --timeout SECONDS, default 600 */
	int		 fail_delay_ms;	/* --fail-delay MS, default 2000 */
	int		 locks;		/* --lock fcntl,dotlock (POP3_LOCK_*) */
	int		 debug;		/* -d: log to stderr, not syslog */
	int		 sandbox;	/* 0: --no-sandbox (sandbox.c) */
	int		 proxy;		/* --proxy-from given (proxy.c) */
	int		 cache;		/* 0: --no-cache (cache.c) */
	const char	*cache_dir;	/* --cache-dir DIR, or NULL: default */
};
extern struct pop_opts opt;

/*
 * Logging (log.c): syslog LOG_MAIL with ident "pop3d", or stderr with -d.
 * Never pass client data as the format.
 */
void	pop_log(int, const char *, ...)
	    __attribute__((format(printf, 2, 3)));
void	fatal(const char *, ...)
	    __attribute__((format(printf, 1, 2), noreturn));	/* + errno */
void	fatalx(const char *, ...)
	    __attribute__((format(printf, 1, 2), noreturn));

/*
 * The connection (conn.c). One per process; fixed buffers, no allocation.
 */
struct pop_conn {
	int		 in, out;		/* client fds (0 and 1) */
	size_t		 ilen;			/* bytes valid in ibuf */
	size_t		 olen;			/* bytes waiting in obuf */
	time_t		 start;			/* session start (monotonic) */
	int		 bad;			/* consecutive bad commands */
	int		 authfail;		/* failed logins so far */
	int		 eof;			/* over without QUIT: EOF, timeout,
						 * write error, bad commands */
	/* The buffers last: pop_conn_init() zeroes only what is before. */
	char		 ibuf[POP3_INBUF];	/* unread client bytes */
	char		 obuf[POP3_OUTBUF];	/* replies not yet written */
};

/* What the AUTHORIZATION state yields: a login to check. */
struct pop_cred {
	char		 user[POP3_USER_MAX + 1];
	char		 pass[POP3_PASS_MAX + 1];
	char		 mech[16];		/* "USER" or "PLAIN" */
	struct timespec	 when;			/* CLOCK_MONOTONIC at PASS/AUTH */
};

/* The logged-in user, as auth.c resolved it. */
struct pop_user {
	char		 name[POP3_USER_MAX + 1];
	uid_t		 uid;
	gid_t		 gid;
	char		 mailbox[4096];	/* absolute path of the mbox */
	char		 cache[4096];	/* its index cache's directory, made
					   ready at login, or "": none */
};

/* Sets the fds (in, out) O_NONBLOCK unless a tty; starts the session clock
 * (start: pop_clock(), which the root monitor reads at its own start, so
 * that the user's process counts the session limit from there). */
void	pop_conn_init(struct pop_conn *, int, int);
time_t	pop_clock(void);
/*
 * Sends the greeting, then runs the AUTHORIZATION state until the client
 * gives a complete login (USER+PASS or AUTH PLAIN).  Returns 1 with *cred
 * filled, 0 when the session is over (QUIT, EOF, timeout, too many bad
 * commands: everything was already said to the client).  Called again after
 * a failed login, it does not repeat the greeting (greet = 0).
 */
int	pop_authorize(struct pop_conn *, struct pop_cred *, int greet);
/*
 * A login failed: waits until cred->when + opt.fail_delay_ms, sends
 * "-ERR [AUTH] ...", counts it. Returns 0 if the client may try again,
 * -1 if that was the last allowed failure (the session is over).
 */
int	pop_auth_failed(struct pop_conn *, const struct pop_cred *);
/*
 * A login the backend could not check (an unusable password file, a PAM
 * error: the log says which): at the same deadline, "-ERR [SYS/TEMP]"
 * (not [AUTH]: the password may be right), and the session is over.
 * Returns its exit status, POP3_EX_CONFIG.
 */
int	pop_auth_error(struct pop_conn *, const struct pop_cred *);
/*
 * The user is known: opens and locks the maildrop, replies to PASS/AUTH
 * ("+OK" or "-ERR [IN-USE]"/"-ERR [SYS/TEMP]"), runs TRANSACTION and, on
 * QUIT, UPDATE.  Returns the process exit status (POP3_EX_*).
 */
int	pop_transaction(struct pop_conn *, const struct pop_user *);
/*
 * A user name the parser (proto.c) accepts at all: len octets of the C
 * string s, 1..POP3_USER_MAX octets 0x21..0x7e, no '/' or ':', not "." or
 * "..".  No account can have another name; the monitor (auth.c) refuses
 * any other in a record from the pre-login process (it is not ours then).
 * Inline here, the one copy, so that the fuzz targets see it too.
 */
static inline int
pop_user_syntax(const char *s, size_t len)
{
	size_t	 i;

	if (len == 0 || len > POP3_USER_MAX)
		return 0;
	if (strcmp(s, ".") == 0 || strcmp(s, "..") == 0)
		return 0;
	for (i = 0; i < len; i++)
		if (s[i] <= ' ' || s[i] >= 0x7f || s[i] == '/' || s[i] == ':')
			return 0;
	return 1;
}

/* *t moved ms milliseconds on: the fixed deadline of a failed login. */
static inline void
pop_after_ms(struct timespec *t, int ms)
{
	t->tv_sec += ms / 1000;
	t->tv_nsec += (long)(ms % 1000) * 1000000L;
	if (t->tv_nsec >= 1000000000L) {
		t->tv_sec++;
		t->tv_nsec -= 1000000000L;
	}
}

/* proto.c: a strict decimal number (main()'s options use it too). */
int	pop_number(const char *, uint64_t, uint64_t *);
/*
 * conn.c: the client connection.
 */
/* Writes out buffered replies; -1 on error (the client is gone). */
int	pop_flush(struct pop_conn *);
/* Queues len octets of reply; -1 if the client is gone. */
int	pop_put(struct pop_conn *, const char *, size_t);
/* Queues one reply line, CRLF added; the octets queued or -1. */
int	pop_reply(struct pop_conn *, const char *, ...)
	    __attribute__((format(printf, 2, 3)));
/* Queues "N WORD" of a LIST or UIDL listing (no printf). */
void	pop_item(struct pop_conn *, uint32_t, const char *, size_t);
/* The decimal digits of a number, ending just before end: their start. */
char	*pop_utoa(char *, uint64_t);
/* Takes back the last reply line still queued: 0, or -1 if none is. */
int	pop_unreply(struct pop_conn *);
/* After a wait timed out (ETIMEDOUT): "-ERR autologout" saying which
 * limit, one try that never waits; the session is over. */
void	pop_timeout(struct pop_conn *);
/* Reads one line of at most size octets with its CRLF into line[size]
 * (a command: POP3_CMD_MAX; conn.c says how). */
int	pop_getline(struct pop_conn *, char *, size_t, size_t *);
/* Wipes secrets (explicit_bzero), the portable way. */
void	pop_wipe(void *, size_t);

/* For proxy.c: time on CLOCK_MONOTONIC in ms; a read into c->ibuf that
 * leaves it at most want octets, within a deadline (1 read, 0 EOF, -1
 * errno, ETIMEDOUT); dropping n octets from its front (wiped). */
int64_t	pop_now_ms(void);
int	pop_fill_to(struct pop_conn *, size_t, int64_t);
void	pop_consume(struct pop_conn *, size_t);

/*
 * proxy.c: the PROXY protocol header (v1 and v2) that a trusted proxy
 * sends before the client's bytes.
 */
/* The client's address as the pre-login process read it; sent to the
 * monitor as is, which trusts none of it (proxy_peer).  family 0: the
 * header named no client (v1 UNKNOWN, v2 LOCAL, UNSPEC or UNIX). */
struct proxy_addr {
	uint8_t		 family;		/* 0, 4 or 6 */
	uint8_t		 addr[16];
	uint16_t	 port;
};
/* --proxy-from LIST: comma list of addresses and networks (ADDR/BITS);
 * 0, or -1 if it is not one. */
int	proxy_opt(const char *);
/* Is this peer (getpeername) one that --proxy-from lists? */
int	proxy_trusted(const void *, size_t);
/* Reads the header from c->in within PROXY_TIMEOUT; bytes after it stay
 * in c->ibuf.  0 with *pa set, or -1 after a log line naming peer. */
int	proxy_read(struct pop_conn *, struct proxy_addr *, const char *);
/* The monitor's check of what the pre-login process sent (n octets):
 * -1 if it is not a struct proxy_addr it could have made, else 0 after a
 * log line naming the proxy (peer) and the client, which then replaces
 * the proxy in peer[size]. */
int	proxy_peer(const struct proxy_addr *, size_t, char *, size_t);
/* The same check, quiet: 1 and the client's address in client[size]
 * (INET6_ADDRSTRLEN), 0 if pa names no client, or -1. */
int	proxy_client(const struct proxy_addr *, size_t, char *, size_t);

/*
 * auth.c: everything that runs as root, and credential checks.
 * Runs the whole session after option parsing; returns the exit status.
 */
int	auth_main(void);

/*
 * sandbox.c: seccomp and Landlock, after each identity drop (unless
 * --no-sandbox).  sbx_prelogin: the pre-login child; sbx_user: the user's
 * process or the non-root single process, before it reads the client
 * after login.  A sandbox that cannot be set up is fatal, but for
 * Landlock, which is used where the kernel has it.
 */
void	sbx_prelogin(void);

/*
 * One Landlock rule of the user's process: fd, a file or directory opened
 * (O_PATH will do) before the ruleset, and what may be done with it.
 * Rules attach to inodes, so a file made after the ruleset has none of
 * its own (README, DESIGN: Sandboxes).
 */
enum sbx_access {
	SBX_READ,	/* read the file */
	SBX_RW,		/* read, write and truncate the file */
	SBX_ENTRIES,	/* make and remove regular files in the directory,
			 * open it (fsync, list); open none of its files */
	SBX_FILES	/* make, remove, read and write regular files
			 * beneath the directory (rename too); no listing,
			 * no truncate: the index cache (cache.c) */
};
struct sbx_rule {
	int		 fd;
	enum sbx_access	 access;
};
/* Rules the user's files may need: the spool directory, the journal
 * and spare journal, USER.lock, the index cache's directory (maildrop.c's
 * md_prepare(); the mailbox needs none, it is open already), and room
 * for three more. */
#define SBX_RULES_MAX	8
/* Takes the n rules (and closes their fds), sandbox on or off. */
void	sbx_user(struct sbx_rule *, size_t);

#endif /* POP3D_H */
