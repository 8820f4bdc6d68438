/*
 * test_maildrop.c: cmocka tests of the maildrop's files: the
 * indexer on crafted mboxes, sizes against streamed bytes, TOP,
 * dot-stuffing, UIDLs, twins, the pseudo-message, the update, the journal
 * repair (with POP3D_FAULT kills and errors in forked children), and the
 * safe open.
 */
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <nettle/sha2.h>

#include "io.h"
#include "lock.h"
#include "maildrop.h"
#include "mbox.h"
#include "mdint.h"

#define FROM1	"From alice@example.org Thu Nov 26 12:00:00 2026\n"
#define FROM2	"From bob@example.org Fri Nov 27 08:01:02 2026\n"

static char		 dir[64];
static struct pop_user	 user;

struct buf {
	char	*p;
	size_t	 len, cap;
};

static void
buf_add(struct buf *b, const void *p, size_t n)
{
	if (b->len + n + 1 > b->cap) {
		b->cap = (b->len + n + 1) * 2;
		b->p = realloc(b->p, b->cap);
		assert_non_null(b->p);
	}
	memcpy(b->p + b->len, p, n);
	b->len += n;
	b->p[b->len] = '\0';
}

static void
buf_free(struct buf *b)
{
	free(b->p);
	memset(b, 0, sizeof(*b));
}

static int
put(void *arg, const char *p, size_t n)
{
	buf_add(arg, p, n);
	return 0;
}

/* The magic of the journals this pop3d writes: POP3DJ4 without a key
 * for the digest of the journaled octets (POP3D_NOKEY). */
static const char	*jmagic;

static int
setup(void **state)
{
	(void)state;
	snprintf(dir, sizeof(dir), "/tmp/md-test.XXXXXX");
	assert_non_null(mkdtemp(dir));
	memset(&user, 0, sizeof(user));
	snprintf(user.name, sizeof(user.name), "user");
	user.uid = getuid();
	user.gid = getgid();
	snprintf(user.mailbox, sizeof(user.mailbox), "%s/user", dir);
	opt.locks = POP3_LOCK_FCNTL | POP3_LOCK_DOTLOCK;
	opt.debug = getenv("MD_TEST_DEBUG") != NULL;	/* log to stderr */
	jmagic = "POP3DJ5\n";
	mbox_test_split(0, 0);
	return 0;
}

static int
teardown(void **state)
{
	DIR		*d;
	struct dirent	*e;
	char		 p[512];

	(void)state;
	mbox_test_split(0, 0);
	lock_test_refresh(MD_DOTLOCK_REFRESH * 1000ULL);
	/* What a failed test may have left set: variables, and the
	 * session lock of a maildrop it left open (whose file goes with
	 * the directory). */
	unsetenv("POP3D_NOKEY");
	unsetenv("POP3D_JSHIFT");
	unsetenv("POP3D_JLOSE");
	lock_test_forget();
	if ((d = opendir(dir)) != NULL) {
		while ((e = readdir(d)) != NULL) {
			if (strcmp(e->d_name, ".") == 0 ||
			    strcmp(e->d_name, "..") == 0)
				continue;
			snprintf(p, sizeof(p), "%s/%s", dir, e->d_name);
			(void)unlink(p);
		}
		closedir(d);
	}
	(void)rmdir(dir);
	return 0;
}

static void
write_file(const char *path, const void *p, size_t n)
{
	int	fd;

	fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, p, n), (ssize_t)n);
	assert_int_equal(close(fd), 0);
}

static void
append_file(const char *path, const void *p, size_t n)
{
	int	fd;

	fd = open(path, O_WRONLY | O_APPEND);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, p, n), (ssize_t)n);
	assert_int_equal(close(fd), 0);
}

static void
read_file(const char *path, struct buf *b)
{
	char	tmp[65536];
	ssize_t	r;
	int	fd;

	memset(b, 0, sizeof(*b));
	buf_add(b, "", 0);
	fd = open(path, O_RDONLY);
	assert_true(fd >= 0);
	while ((r = read(fd, tmp, sizeof(tmp))) > 0)
		buf_add(b, tmp, (size_t)r);
	assert_int_equal(r, 0);
	close(fd);
}

static void
mbox(const char *s)
{
	write_file(user.mailbox, s, strlen(s));
}

/* RETR (lines < 0) or TOP of message i into b; returns md_stream's result. */
static enum md_res
stream(struct maildrop *md, uint32_t i, long lines, struct buf *b)
{
	memset(b, 0, sizeof(*b));
	buf_add(b, "", 0);
	return md_stream(md, i, lines, put, b);
}

/* Removes dot-stuffing: the "." that starts a stuffed line. */
static size_t
unstuffed_len(const struct buf *b)
{
	size_t	i, n = b->len;

	for (i = 0; i < b->len; i++)
		if (b->p[i] == '.' && (i == 0 || b->p[i - 1] == '\n'))
			n--;
	return n;
}

/* What RETR must send for octets p: LF -> CRLF, final line end added. */
static void
expect(const char *p, size_t n, struct buf *out)
{
	size_t	i;
	int	bol = 1;

	memset(out, 0, sizeof(*out));
	buf_add(out, "", 0);
	for (i = 0; i < n; i++) {
		if (bol && p[i] == '.')
			buf_add(out, ".", 1);
		bol = 0;
		if (p[i] == '\n') {
			if (i == 0 || p[i - 1] != '\r')
				buf_add(out, "\r", 1);
			bol = 1;
		}
		buf_add(out, p + i, 1);
	}
	if (n > 0 && p[n - 1] != '\n')
		buf_add(out, p[n - 1] == '\r' ? "\n" : "\r\n",
		    p[n - 1] == '\r' ? 1 : 2);
}

static void
check_msg(struct maildrop *md, uint32_t i, const char *octets, size_t n)
{
	struct buf	got, want;

	assert_true(i < md->n);
	assert_int_equal(stream(md, i, -1, &got), MD_OK);
	expect(octets, n, &want);
	assert_int_equal(got.len, want.len);
	assert_memory_equal(got.p, want.p, want.len);
	assert_int_equal(md->msg[i].size, unstuffed_len(&got));
	buf_free(&got);
	buf_free(&want);
}

static void
check_str(struct maildrop *md, uint32_t i, const char *octets)
{
	check_msg(md, i, octets, strlen(octets));
}

static void
open_ok(struct maildrop *md)
{
	assert_int_equal(md_open(md, &user), MD_OK);
}

static const char pseudo[] =
    "From MAILER-DAEMON Thu Nov 26 12:00:00 2026\n"
    "Date: Thu, 26 Nov 2026 12:00:00 +0000\n"
    "From: Mail System Internal Data <MAILER-DAEMON@x>\n"
    "Subject: DON'T DELETE THIS MESSAGE -- FOLDER INTERNAL DATA\n"
    "X-IMAP: 1234 0000000001\n\n"
    "This text is part of the internal format of your mail folder.\n\n";

static const char *const msgs[] = {
	FROM1 "Subject: m1\n\none\n\n",
	FROM2 "Subject: m2\n\ntwo\ntwo\n\n",
	FROM1 "Subject: m3\n\nthree\n\n",
	FROM2 "Subject: m4\n\nfour\n.\n\n",
	FROM1 "Subject: m5\n\nfive\n\n",
	FROM2 "Subject: m6\n\nsix\n",
};
#define NMSGS	(sizeof(msgs) / sizeof(msgs[0]))

static void
write_msgs(void)
{
	struct buf	b;
	size_t		i;

	memset(&b, 0, sizeof(b));
	for (i = 0; i < NMSGS; i++)
		buf_add(&b, msgs[i], strlen(msgs[i]));
	write_file(user.mailbox, b.p, b.len);
	buf_free(&b);
}

/*
 * Large mailboxes are indexed in two halves at once, joined at the first
 * message of the second half: the index must not depend on where.
 */
static void
same_index(const struct maildrop *a, const struct maildrop *b)
{
	uint32_t	i;

	assert_int_equal(a->n, b->n);
	assert_int_equal(a->hidden_end, b->hidden_end);
	for (i = 0; i < a->n; i++) {
		assert_int_equal(a->msg[i].from, b->msg[i].from);
		assert_int_equal(a->msg[i].data, b->msg[i].data);
		assert_int_equal(a->msg[i].end, b->msg[i].end);
		assert_int_equal(a->msg[i].size, b->msg[i].size);
		assert_int_equal(a->msg[i].twin, b->msg[i].twin);
		assert_memory_equal(a->msg[i].hash, b->msg[i].hash, 16);
	}
}

/* mbox_check() of md's file against md's index. */
static enum md_res
ixcheck(const struct maildrop *md)
{
	return mbox_check(md->fd, md->indexed, md->msg, md->n,
	    md->hidden_end != 0, lock_alive);
}

/*
 * mbox_check(), split the same way: the file passes against its own
 * index, and fails against one with any record, the count or the hidden
 * pseudo-message changed.
 */
static void
check_index(struct maildrop *md, uint64_t at)
{
	struct md_msg	*m;
	uint64_t	 h;
	uint32_t	 k;

	assert_int_equal(ixcheck(md), MD_OK);
	if (md->n == 0)
		return;
	k = (uint32_t)(at % md->n);
	m = &md->msg[k];
	m->hash[at % 16] ^= 1;
	assert_int_equal(ixcheck(md), MD_CHANGED);
	m->hash[at % 16] ^= 1;
	m->size++;
	assert_int_equal(ixcheck(md), MD_CHANGED);
	m->size--;
	m->end--;
	assert_int_equal(ixcheck(md), MD_CHANGED);
	m->end++;
	md->n--;
	assert_int_equal(ixcheck(md), MD_CHANGED);
	md->n++;
	h = md->hidden_end;
	md->hidden_end = h != 0 ? 0 : 1;
	assert_int_equal(ixcheck(md), MD_CHANGED);
	md->hidden_end = h;
	assert_int_equal(ixcheck(md), MD_OK);
}

static void
split_all(size_t step)
{
	struct maildrop	whole, half;
	struct stat	st;
	uint64_t	at;
	uint32_t	n;

	assert_int_equal(stat(user.mailbox, &st), 0);
	mbox_test_split(0, 0);
	open_ok(&whole);
	/* Keep a copy of the index; md_close() frees it. */
	{
		struct md_msg	*copy;

		copy = calloc(whole.n + 1, sizeof(*copy));
		assert_non_null(copy);
		memcpy(copy, whole.msg, whole.n * sizeof(*copy));
		n = whole.n;
		md_close(&whole);
		whole.msg = copy;
		whole.n = n;
	}
	for (at = 1; at < (uint64_t)st.st_size; at += step) {
		mbox_test_split(1, at);
		open_ok(&half);
		same_index(&whole, &half);
		check_index(&half, at);
		md_close(&half);
	}
	mbox_test_split(0, 0);
	free(whole.msg);
}

/*
 * The indexer.
 */

static void
test_empty_missing(void **state)
{
	struct maildrop	md;

	(void)state;
	open_ok(&md);
	assert_int_equal(md.fd, -1);
	assert_int_equal(md.n, 0);
	assert_int_equal(md_update(&md), MD_OK);
	md_close(&md);
	md_close(&md);
	assert_int_equal(access(user.mailbox, F_OK), -1);

	mbox("");
	open_ok(&md);
	assert_true(md.fd >= 0);
	assert_int_equal(md.n, 0);
	md_close(&md);
}

static void
test_not_mbox(void **state)
{
	struct maildrop	md;

	(void)state;
	mbox("Subject: hello\n\nbody\n");
	assert_int_equal(md_open(&md, &user), MD_PERM);
	mbox("\n" FROM1 "\nx\n");
	assert_int_equal(md_open(&md, &user), MD_PERM);
	mbox("From");
	assert_int_equal(md_open(&md, &user), MD_PERM);
	/* Refused without a trace: no lock left behind. */
	assert_int_equal(access(user.mailbox, F_OK), 0);
	{
		char	lock[4200];

		snprintf(lock, sizeof(lock), "%s.lock", user.mailbox);
		assert_int_equal(access(lock, F_OK), -1);
	}
}

static void
test_from_edges(void **state)
{
	struct maildrop	md;

	(void)state;
	mbox(FROM1
	    "Subject: one\n\nbody\n\nFrom here on, all is well\n"
	    ">From the archive\nsee:\nFrom bob@example.org Fri Nov 27 "
	    "08:01:02 2026\n\n"
	    "From carol Thu Nov 26 12:00 +0100 2026\nSubject: tz\n\nx\n\n"
	    "From dave@example.org  Mon Jan  5 01:02:03 PST 2026\n"
	    "Subject: pst\n\ny\n\n"
	    "From eve Tue Feb 10 10:10:10 MET DST 2026\nSubject: 2tz\n\nz\n\n"
	    "From uucp!frank Wed Mar  4 04:04:04 2026 remote from gw\n"
	    "Subject: uucp\n\nw\n\n"
	    "From broken Thu, 26 Nov 2026 12:00:00 +0000\nstill w\n\n"
	    "From nobody Sat Dec 31 23:59:59 1999\n\nlast\n");
	open_ok(&md);
	assert_int_equal(md.n, 6);
	check_str(&md, 0, "Subject: one\n\nbody\n\nFrom here on, all is well\n"
	    ">From the archive\nsee:\nFrom bob@example.org Fri Nov 27 "
	    "08:01:02 2026\n");
	check_str(&md, 1, "Subject: tz\n\nx\n");
	check_str(&md, 2, "Subject: pst\n\ny\n");
	check_str(&md, 3, "Subject: 2tz\n\nz\n");
	check_str(&md, 4, "Subject: uucp\n\nw\n\n"
	    "From broken Thu, 26 Nov 2026 12:00:00 +0000\nstill w\n");
	check_str(&md, 5, "\nlast\n");
	md_close(&md);
}

static void
test_no_final_newline(void **state)
{
	struct maildrop	md;

	(void)state;
	mbox(FROM1 "Subject: a\n\nno newline");
	open_ok(&md);
	assert_int_equal(md.n, 1);
	check_str(&md, 0, "Subject: a\n\nno newline");
	assert_int_equal(md.msg[0].size, strlen("Subject: a\r\n\r\nno newline\r\n"));
	md_close(&md);

	mbox(FROM1 "Subject: a\n\nends in CR\r");
	open_ok(&md);
	check_str(&md, 0, "Subject: a\n\nends in CR\r");
	md_close(&md);

	/* One final newline is the line end, two: one is the separator. */
	mbox(FROM1 "Subject: a\n\nline\n");
	open_ok(&md);
	check_str(&md, 0, "Subject: a\n\nline\n");
	md_close(&md);
	mbox(FROM1 "Subject: a\n\nline\n\n");
	open_ok(&md);
	check_str(&md, 0, "Subject: a\n\nline\n");
	md_close(&md);

	/* Empty messages. */
	mbox(FROM1 "\n" FROM2 "\n" FROM1);
	open_ok(&md);
	assert_int_equal(md.n, 3);
	check_str(&md, 0, "");
	check_str(&md, 1, "");
	check_str(&md, 2, "");
	assert_int_equal(md.msg[0].size, 0);
	md_close(&md);
}

static void
test_crlf_cr_nul(void **state)
{
	static const char	m[] =
	    "From alice Thu Nov 26 12:00:00 2026\r\n"
	    "Subject: crlf\r\n\r\n.dot\r\nline\r\n\r\n"
	    "From bob Thu Nov 26 12:00:01 2026\r\n"
	    "Subject: cr\r\n\r\nbare\rcr\r\r\nnul\0byte\n\r\n";
	static const char	m2[] =
	    "Subject: cr\r\n\r\nbare\rcr\r\r\nnul\0byte\n";
	struct maildrop		md;

	(void)state;
	write_file(user.mailbox, m, sizeof(m) - 1);
	open_ok(&md);
	assert_int_equal(md.n, 2);
	check_str(&md, 0, "Subject: crlf\r\n\r\n.dot\r\nline\r\n");
	check_msg(&md, 1, m2, sizeof(m2) - 1);
	md_close(&md);
}

static void
test_long_line(void **state)
{
	struct maildrop	md;
	struct buf	b, got;
	size_t		n = 3 * 1024 * 1024 + 17;
	char		*line;

	(void)state;
	line = malloc(n);
	assert_non_null(line);
	memset(line, 'x', n);
	line[0] = '.';
	memset(&b, 0, sizeof(b));
	buf_add(&b, FROM1 "Subject: long\n\n", strlen(FROM1) + 15);
	buf_add(&b, line, n);
	buf_add(&b, "\r\n\n" FROM2 "Subject: after\n\n", 3 + strlen(FROM2) +
	    16);
	buf_add(&b, line, n);	/* and no final newline */
	write_file(user.mailbox, b.p, b.len);
	open_ok(&md);
	assert_int_equal(md.n, 2);
	assert_int_equal(stream(&md, 0, -1, &got), MD_OK);
	assert_int_equal(md.msg[0].size, unstuffed_len(&got));
	assert_int_equal(got.len, 15 + 2 + 1 + n + 2);
	buf_free(&got);
	assert_int_equal(stream(&md, 1, -1, &got), MD_OK);
	assert_int_equal(md.msg[1].size, 18 + n + 2);
	assert_int_equal(md.msg[1].size, unstuffed_len(&got));
	buf_free(&got);
	/* TOP n 0 of a message with a long body. */
	assert_int_equal(stream(&md, 1, 0, &got), MD_OK);
	assert_string_equal(got.p, "Subject: after\r\n\r\n");
	buf_free(&got);
	md_close(&md);
	buf_free(&b);
	free(line);
}

/* A deterministic varied corpus: every size equals the streamed bytes. */
#define P(s)	{ s, sizeof(s) - 1 }
static const struct {
	const char	*s;
	size_t		 len;
} pieces[] = {
	P("plain line\n"), P(".dot line\n"), P("..two dots\n"), P(".\n"),
	P("\n"), P("crlf line\r\n"), P("bare\rcr\n"), P("From here on\n"),
	P(">From quoted\n"), P("nul\0in line\n"),
	P("From bob Fri Nov 27 08:01:02 2026\n"),	/* not after "\n\n" */
	P("\r\n"), P("tab\tline\n"), P("=?utf-8?q?x?=\n"), P("x\r"),
};
#undef P
#define NPIECES	(sizeof(pieces) / sizeof(pieces[0]))

static uint32_t
rnd(uint32_t *s)
{
	*s ^= *s << 13;
	*s ^= *s >> 17;
	*s ^= *s << 5;
	return *s;
}

static void
test_corpus(void **state)
{
	struct maildrop	 md;
	struct buf	 file, body[40];
	uint32_t	 seed = 12345, i, k, nmsg = 40, lines;
	size_t		 j;

	(void)state;
	memset(&file, 0, sizeof(file));
	for (i = 0; i < nmsg; i++) {
		memset(&body[i], 0, sizeof(body[i]));
		buf_add(&body[i], "", 0);
		buf_add(&body[i], "Subject: corpus\nX-N: ", 21);
		buf_add(&body[i], "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMN" + i,
		    1);
		buf_add(&body[i], "\n\n", 2);
		lines = rnd(&seed) % 60;
		for (k = 0; k < lines; k++) {
			j = rnd(&seed) % NPIECES;
			/* An empty line must not precede a real From_. */
			if (j == 10 && body[i].len > 0 &&
			    body[i].p[body[i].len - 1] == '\n' &&
			    (body[i].len < 2 || body[i].p[body[i].len - 2] ==
			    '\n' || body[i].p[body[i].len - 2] == '\r'))
				j = 0;
			buf_add(&body[i], pieces[j].s, pieces[j].len);
		}
		buf_add(&body[i], "end\n", 4);
		if (rnd(&seed) % 4 == 0 && k > 0 && body[i].len > 0) {
			/* A body ending in a very long line, cut in blocks. */
			for (k = 0; k < 40000; k++)
				buf_add(&body[i], "0123456789abcdefghijklmnopqrstuv"
				    "wxyz", 36);
			buf_add(&body[i], "\n", 1);
		}
		buf_add(&file, i % 2 ? FROM1 : FROM2,
		    strlen(i % 2 ? FROM1 : FROM2));
		if (i + 1 == nmsg) {
			/* The last one without its final newline. */
			buf_add(&file, body[i].p, body[i].len);
			buf_add(&file, "tail", 4);
			buf_add(&body[i], "tail", 4);
		} else {
			buf_add(&file, body[i].p, body[i].len);
			buf_add(&file, "\n", 1);
		}
	}
	write_file(user.mailbox, file.p, file.len);
	open_ok(&md);
	assert_int_equal(md.n, nmsg);
	for (i = 0; i < nmsg; i++)
		check_msg(&md, i, body[i].p, body[i].len);
	md_close(&md);
	split_all(file.len / 300);
	mbox_test_split(1, 0);
	open_ok(&md);
	for (i = 0; i < nmsg; i++)
		check_msg(&md, i, body[i].p, body[i].len);
	md_close(&md);
	for (i = 0; i < nmsg; i++)
		buf_free(&body[i]);
	buf_free(&file);
}

static void
test_split(void **state)
{
	struct buf	b;
	size_t		i;

	(void)state;
	write_msgs();
	split_all(1);
	mbox(FROM1 "Subject: a\n\nline\n\n\n" FROM2 "\n" FROM1 "\r\n"
	    FROM2 "x\n\nFrom here\n\n" FROM1 "\n\nFrom me\n\n");
	split_all(1);
	mbox("From a Thu Nov 26 12:00:00 2026\r\nS: 1\r\n\r\nb\r\n\r\n"
	    "From b Thu Nov 26 12:00:00 2026\r\nS: 2\r\n\r\nc\r\n\r\n");
	split_all(1);
	memset(&b, 0, sizeof(b));
	buf_add(&b, pseudo, strlen(pseudo));
	for (i = 0; i < NMSGS; i++)
		buf_add(&b, msgs[i], strlen(msgs[i]));
	write_file(user.mailbox, b.p, b.len);
	buf_free(&b);
	split_all(1);
	/* Halves of thousands of records: the join moves them in chunks
	 * (MD_IX_JOIN) and shrinks the second half as it goes. */
	memset(&b, 0, sizeof(b));
	for (i = 0; i < 20000; i++) {
		char	m[128];
		int	len;

		len = snprintf(m, sizeof(m), "%sSubject: %zu\n\nbody %zu\n\n",
		    i % 2 ? FROM1 : FROM2, i % 7000, i);
		buf_add(&b, m, (size_t)len);
	}
	write_file(user.mailbox, b.p, b.len);
	split_all(b.len / 7);
	buf_free(&b);
}

/* Random octets from a small alphabet: every CR, LF, "." position. */
static void
test_random_octets(void **state)
{
	static const char	abc[] = ".\n\r.a\0\n";
	struct maildrop		md;
	struct buf		file, body, retr, top;
	uint32_t		seed = 777;
	size_t			i, n;
	int			round;

	(void)state;
	for (round = 0; round < 20; round++) {
		memset(&body, 0, sizeof(body));
		buf_add(&body, "", 0);
		n = 1 + rnd(&seed) % (round < 10 ? 300 : 200000);
		for (i = 0; i < n; i++)
			buf_add(&body, abc + rnd(&seed) % (sizeof(abc) - 1), 1);
		buf_add(&body, "x\n", 2);
		memset(&file, 0, sizeof(file));
		buf_add(&file, FROM1, strlen(FROM1));
		buf_add(&file, body.p, body.len);
		buf_add(&file, "\n", 1);
		write_file(user.mailbox, file.p, file.len);
		open_ok(&md);
		assert_int_equal(md.n, 1);
		check_msg(&md, 0, body.p, body.len);
		assert_int_equal(stream(&md, 0, -1, &retr), MD_OK);
		assert_int_equal(stream(&md, 0, 1L << 30, &top), MD_OK);
		assert_int_equal(retr.len, top.len);
		assert_memory_equal(retr.p, top.p, top.len);
		md_close(&md);
		buf_free(&retr);
		buf_free(&top);
		buf_free(&body);
		buf_free(&file);
	}
}

static void
test_top_stuffing(void **state)
{
	struct maildrop	md;
	struct buf	b;

	(void)state;
	mbox(FROM1 "Subject: top\n.Hdr: x\n\n.one\ntwo\n..three\nfour\n");
	open_ok(&md);
	assert_int_equal(stream(&md, 0, 0, &b), MD_OK);
	assert_string_equal(b.p, "Subject: top\r\n..Hdr: x\r\n\r\n");
	buf_free(&b);
	assert_int_equal(stream(&md, 0, 1, &b), MD_OK);
	assert_string_equal(b.p, "Subject: top\r\n..Hdr: x\r\n\r\n..one\r\n");
	buf_free(&b);
	assert_int_equal(stream(&md, 0, 3, &b), MD_OK);
	assert_string_equal(b.p, "Subject: top\r\n..Hdr: x\r\n\r\n..one\r\n"
	    "two\r\n...three\r\n");
	buf_free(&b);
	assert_int_equal(stream(&md, 0, 100, &b), MD_OK);
	assert_string_equal(b.p, "Subject: top\r\n..Hdr: x\r\n\r\n..one\r\n"
	    "two\r\n...three\r\nfour\r\n");
	buf_free(&b);
	assert_int_equal(stream(&md, 0, -1, &b), MD_OK);
	assert_string_equal(b.p, "Subject: top\r\n..Hdr: x\r\n\r\n..one\r\n"
	    "two\r\n...three\r\nfour\r\n");
	buf_free(&b);
	md_close(&md);

	/* No body, no final newline; CRLF header end. */
	mbox(FROM1 "Subject: only header");
	open_ok(&md);
	assert_int_equal(stream(&md, 0, 0, &b), MD_OK);
	assert_string_equal(b.p, "Subject: only header\r\n");
	buf_free(&b);
	md_close(&md);
	mbox(FROM1 "Subject: crlf\r\n\r\nb1\r\nb2\r\n");
	open_ok(&md);
	assert_int_equal(stream(&md, 0, 1, &b), MD_OK);
	assert_string_equal(b.p, "Subject: crlf\r\n\r\nb1\r\n");
	buf_free(&b);
	md_close(&md);
}

/*
 * UIDL.
 */

static void
uidls(struct maildrop *md, char ids[][POP3_UIDL_MAX + 1])
{
	uint32_t	i;
	size_t		k;

	for (i = 0; i < md->n; i++) {
		md_uidl(md, i, ids[i], POP3_UIDL_MAX + 1);
		assert_true(strlen(ids[i]) >= 32);
		for (k = 0; ids[i][k] != '\0'; k++)
			assert_true(ids[i][k] >= 0x21 && ids[i][k] <= 0x7e);
	}
}

static void
test_uidl_stable(void **state)
{
	struct maildrop	md;
	char		a[4][POP3_UIDL_MAX + 1], b[4][POP3_UIDL_MAX + 1];

	(void)state;
	mbox(FROM1 "Subject: one\nMessage-ID: <1@x>\n\nbody 1\n\n"
	    FROM1 "Subject: two\nMessage-ID: <2@x>\n\nbody 2\n\n"
	    FROM2 "Subject: three\nMessage-ID: <3@x>\n\nbody 3\n\n"
	    FROM2 "Subject: four\nMessage-ID: <4@x>\n\nbody 4\n");
	open_ok(&md);
	assert_int_equal(md.n, 4);
	uidls(&md, a);
	assert_string_not_equal(a[0], a[1]);
	assert_string_not_equal(a[2], a[3]);
	md_close(&md);

	/* Another program adds Status, X-UID, X-Keywords, Content-Length. */
	mbox(FROM1 "Subject: one\nStatus: RO\nX-UID: 17\nMessage-ID: <1@x>\n"
	    "X-Keywords: $Junk\n   $Folded\nContent-Length: 7\n\nbody 1\n\n"
	    FROM1 "X-IMAPbase: 1 2\nSubject: two\nX-Status: A\n"
	    "Message-ID: <2@x>\nLines: 1\n\nbody 2\n\n"
	    FROM2 "Subject: three\nmessage-id: <3@x>\n\nbody 3\n\n"
	    FROM2 "Subject: four\nMessage-ID: <4@x>\nX-UIDL: forged\n\n"
	    "body 4\n");
	open_ok(&md);
	assert_int_equal(md.n, 4);
	uidls(&md, b);
	assert_string_equal(a[0], b[0]);
	assert_string_equal(a[1], b[1]);
	assert_string_not_equal(a[2], b[2]);	/* a real header changed */
	assert_string_equal(a[3], b[3]);
	memcpy(a[2], b[2], sizeof(a[2]));

	/* Deleting 1 and 3 leaves the others' UIDLs as they were. */
	md.msg[0].deleted = 1;
	md.msg[2].deleted = 1;
	assert_int_equal(md_update(&md), MD_OK);
	md_close(&md);
	open_ok(&md);
	assert_int_equal(md.n, 2);
	uidls(&md, b);
	assert_string_equal(a[1], b[0]);
	assert_string_equal(a[3], b[1]);
	md_close(&md);
}

static void
test_twins(void **state)
{
	struct maildrop	md;
	char		a[4][POP3_UIDL_MAX + 1];

	(void)state;
	/* Byte-identical twins; and two that differ only in X-UIDL. */
	mbox(FROM1 "Subject: twin\n\nsame\n\n"
	    FROM1 "Subject: twin\n\nsame\n\n"
	    FROM2 "Subject: x\nX-UIDL: aaa\n\nb\n\n"
	    FROM2 "Subject: x\nX-UIDL: bbb\n\nb\n");
	open_ok(&md);
	assert_int_equal(md.n, 4);
	uidls(&md, a);
	assert_int_equal(strlen(a[0]), 32);
	assert_int_equal(strlen(a[1]), 34);
	assert_memory_equal(a[0], a[1], 32);
	assert_string_equal(a[1] + 32, "-1");
	assert_int_equal(strlen(a[2]), 32);
	assert_memory_equal(a[2], a[3], 32);
	assert_string_equal(a[3] + 32, "-1");
	/* Twin 0 deleted: twin 1 takes the plain UIDL next session. */
	md.msg[0].deleted = 1;
	assert_int_equal(md_update(&md), MD_OK);
	md_close(&md);
	open_ok(&md);
	uidls(&md, a + 1);
	assert_int_equal(strlen(a[1]), 32);
	md_close(&md);
}

/*
 * mbox_twins() against a reference: twin i is the number of earlier
 * records with the same digest.  Digests from a small set, so that many
 * are twins three and more deep, and pairs that share their first 8 or 15
 * octets (the slot's key) but not the rest, so that the table is probed
 * past records that are not twins.
 */
static void
test_twins_table(void **state)
{
	static struct md_msg	m[3000];
	uint32_t		i, j, n, want;
	unsigned int		seed = 13;

	(void)state;
	for (n = 2; n <= 3000; n = n < 40 ? n + 1 : n * 3) {
		memset(m, 0, sizeof(m));
		for (i = 0; i < n; i++) {
			j = (uint32_t)rand_r(&seed) % (n / 2 + 1);
			m[i].hash[0] = (unsigned char)(j % 7);
			m[i].hash[15] = (unsigned char)j;
			m[i].hash[8] = (unsigned char)(j >> 8);
			m[i].twin = 99;
		}
		assert_int_equal(mbox_twins(m, n), MD_OK);
		for (i = 0; i < n; i++) {
			for (want = 0, j = 0; j < i; j++)
				want += memcmp(m[i].hash, m[j].hash,
				    sizeof(m[i].hash)) == 0;
			assert_int_equal(m[i].twin, want);
		}
	}
}

static void
test_pseudo(void **state)
{
	struct maildrop	md;
	struct buf	b, f;

	(void)state;
	memset(&f, 0, sizeof(f));
	buf_add(&f, pseudo, strlen(pseudo));
	buf_add(&f, FROM1 "Subject: real\n\nbody\n\n" FROM2 "Subject: 2\n\n2\n",
	    strlen(FROM1 "Subject: real\n\nbody\n\n" FROM2
	    "Subject: 2\n\n2\n"));
	write_file(user.mailbox, f.p, f.len);
	open_ok(&md);
	assert_int_equal(md.n, 2);
	assert_int_equal(md.hidden_end, strlen(pseudo));
	check_str(&md, 0, "Subject: real\n\nbody\n");
	md.msg[0].deleted = md.msg[1].deleted = 1;
	assert_int_equal(md_update(&md), MD_OK);
	md_close(&md);
	read_file(user.mailbox, &b);
	assert_int_equal(b.len, strlen(pseudo));
	assert_memory_equal(b.p, pseudo, b.len);
	buf_free(&b);
	open_ok(&md);
	assert_int_equal(md.n, 0);
	md_close(&md);
	buf_free(&f);

	/* Not at the top, or without X-IMAP: an ordinary message. */
	memset(&f, 0, sizeof(f));
	buf_add(&f, FROM1 "Subject: real\n\nbody\n\n", strlen(FROM1) + 21);
	buf_add(&f, pseudo, strlen(pseudo));
	write_file(user.mailbox, f.p, f.len);
	open_ok(&md);
	assert_int_equal(md.n, 2);
	assert_int_equal(md.hidden_end, 0);
	md_close(&md);
	buf_free(&f);
}

/*
 * The update.
 */

/* The file with the messages of mask kept (bit i: message i), + extra. */
static void
want_msgs(unsigned int keep, const char *extra, struct buf *b)
{
	size_t	i;

	memset(b, 0, sizeof(*b));
	buf_add(b, "", 0);
	for (i = 0; i < NMSGS; i++)
		if (keep & (1u << i))
			buf_add(b, msgs[i], strlen(msgs[i]));
	buf_add(b, extra, strlen(extra));
}

static void
assert_file(const struct buf *want)
{
	struct buf	got;

	read_file(user.mailbox, &got);
	assert_int_equal(got.len, want->len);
	assert_memory_equal(got.p, want->p, want->len);
	buf_free(&got);
}

static void
assert_no_journal(void)
{
	char	j[4200];

	snprintf(j, sizeof(j), "%s/.user.pop3d-journal", dir);
	assert_int_equal(access(j, F_OK), -1);
	snprintf(j, sizeof(j), "%s.lock", user.mailbox);
	assert_int_equal(access(j, F_OK), -1);
}

static void
test_update(void **state)
{
	static const unsigned int	keeps[] = {
		0x3e, 0x1f, 0x15, 0x2a, 0x00, 0x3f, 0x21, 0x1e,
	};
	struct maildrop			md;
	struct buf			want;
	struct stat			st1, st2;
	size_t				k, i;

	(void)state;
	for (k = 0; k < sizeof(keeps) / sizeof(keeps[0]); k++) {
		write_msgs();
		assert_int_equal(stat(user.mailbox, &st1), 0);
		open_ok(&md);
		assert_int_equal(md.n, NMSGS);
		for (i = 0; i < NMSGS; i++)
			md.msg[i].deleted = !(keeps[k] & (1u << i));
		assert_int_equal(md_update(&md), MD_OK);
		md_close(&md);
		want_msgs(keeps[k], "", &want);
		assert_file(&want);
		buf_free(&want);
		assert_no_journal();
		assert_int_equal(stat(user.mailbox, &st2), 0);
		assert_int_equal(st1.st_ino, st2.st_ino);
	}
}

static void
test_update_appended(void **state)
{
	static const char	more[] = FROM2 "Subject: new\n\nnew mail\n";
	struct maildrop		md;
	struct buf		want;

	(void)state;
	write_msgs();
	open_ok(&md);
	md.msg[0].deleted = md.msg[3].deleted = md.msg[5].deleted = 1;
	append_file(user.mailbox, "\n", 1);
	append_file(user.mailbox, more, strlen(more));
	assert_int_equal(md_update(&md), MD_OK);
	md_close(&md);
	want_msgs(0x16, "", &want);
	/* Message 6's record (deleted) ends with the empty line the writer
	 * added before its From_ line: that "\n" goes with it
	 * (md_appended()), and message 5 keeps its own octets. */
	buf_add(&want, more, strlen(more));
	assert_file(&want);
	buf_free(&want);

	/* Everything deleted, mail appended: the new mail stays. */
	write_msgs();
	open_ok(&md);
	for (size_t i = 0; i < NMSGS; i++)
		md.msg[i].deleted = 1;
	append_file(user.mailbox, more, strlen(more));
	assert_int_equal(md_update(&md), MD_OK);
	md_close(&md);
	want_msgs(0, more, &want);
	assert_file(&want);
	buf_free(&want);
	open_ok(&md);
	assert_int_equal(md.n, 1);
	md_close(&md);
}

static void
test_changed(void **state)
{
	struct maildrop	md;
	struct buf	orig, b;
	int		fd;

	(void)state;
	/* A header rewritten: RETR of it refuses, the update deletes none. */
	write_msgs();
	read_file(user.mailbox, &orig);
	open_ok(&md);
	md.msg[1].deleted = 1;
	fd = open(user.mailbox, O_WRONLY);
	assert_true(fd >= 0);
	assert_int_equal(pwrite(fd, "X", 1, (off_t)md.msg[2].data + 9), 1);
	close(fd);
	orig.p[md.msg[2].data + 9] = 'X';
	assert_int_equal(stream(&md, 2, -1, &b), MD_CHANGED);
	assert_int_equal(b.len, 0);
	buf_free(&b);
	/* The maildrop is now known changed: nothing more is served. */
	assert_int_equal(stream(&md, 0, -1, &b), MD_CHANGED);
	assert_int_equal(b.len, 0);
	buf_free(&b);
	assert_int_equal(md_update(&md), MD_CHANGED);
	md_close(&md);
	assert_file(&orig);
	buf_free(&orig);

	/* Rewritten in place by a MUA: message 2 gone, the file longer. */
	write_msgs();
	open_ok(&md);
	md.msg[0].deleted = 1;
	fd = open(user.mailbox, O_WRONLY);
	assert_true(fd >= 0);
	{
		size_t	i;

		for (i = 0; i < NMSGS; i++)
			if (i != 2)
				assert_int_equal(write(fd, msgs[i],
				    strlen(msgs[i])), (ssize_t)strlen(msgs[i]));
		assert_int_equal(write(fd, "\n", 1), 1);
		assert_int_equal(write(fd, msgs[2], strlen(msgs[2])),
		    (ssize_t)strlen(msgs[2]));
		assert_int_equal(write(fd, msgs[2], strlen(msgs[2])),
		    (ssize_t)strlen(msgs[2]));
	}
	close(fd);
	read_file(user.mailbox, &orig);
	assert_int_equal(md_update(&md), MD_CHANGED);
	md_close(&md);
	assert_file(&orig);
	buf_free(&orig);

	/* Truncated by another program. */
	write_msgs();
	open_ok(&md);
	md.msg[0].deleted = 1;
	assert_int_equal(truncate(user.mailbox, 20), 0);
	assert_int_equal(stream(&md, 1, -1, &b), MD_CHANGED);
	buf_free(&b);
	assert_int_equal(md_update(&md), MD_CHANGED);
	md_close(&md);
	assert_no_journal();
}

/*
 * The journal: faults and kills at every step, in forked children.
 */

/* Runs an update of the messages not in keep, with POP3D_FAULT=fault.
 * Returns the child's wait status. */
static int
child_update(unsigned int keep, const char *fault)
{
	struct maildrop	md;
	pid_t		pid;
	size_t		i;
	int		status, r;

	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		if (fault != NULL)
			setenv("POP3D_FAULT", fault, 1);
		io_fault_reset();
		if (md_open(&md, &user) != MD_OK)
			_exit(2);
		for (i = 0; i < NMSGS; i++)
			md.msg[i].deleted = !(keep & (1u << i));
		r = md_update(&md);
		md_close(&md);
		_exit(r == MD_OK ? 0 : 3);
	}
	assert_int_equal(waitpid(pid, &status, 0), pid);
	return status;
}

static void
test_kill_loop(void **state)
{
	static const unsigned int	keeps[] = { 0x3e, 0x1f, 0x2a, 0x00 };
	static const char		more[] = FROM2 "Subject: late\n\nl\n";
	struct maildrop			md;
	struct buf			before, after, got;
	size_t				k;
	int				n, st, done, appended;

	(void)state;
	for (k = 0; k < sizeof(keeps) / sizeof(keeps[0]); k++) {
		for (appended = 0; appended < 2; appended++) {
			done = 0;
			for (n = 1; n < 60 && !done; n++) {
				char	f[32];

				write_msgs();
				snprintf(f, sizeof(f), "kill:%d", n);
				st = child_update(keeps[k], f);
				if (WIFEXITED(st)) {
					assert_int_equal(WEXITSTATUS(st), 0);
					done = 1;
				} else
					assert_true(WIFSIGNALED(st) &&
					    WTERMSIG(st) == SIGKILL);
				if (appended)
					append_file(user.mailbox, more,
					    strlen(more));
				/* The next session repairs. */
				open_ok(&md);
				md_close(&md);
				assert_no_journal();
				want_msgs(0x3f, appended ? more : "", &before);
				want_msgs(keeps[k], appended ? more : "",
				    &after);
				read_file(user.mailbox, &got);
				if (!(got.len == before.len &&
				    memcmp(got.p, before.p, got.len) == 0))
					assert_file(&after);
				buf_free(&got);
				buf_free(&before);
				buf_free(&after);
			}
			assert_true(done);
			assert_true(n > 5);
		}
	}
}

static void
test_error_loop(void **state)
{
	static const char *const	kinds[] = { "enospc", "eio" };
	struct maildrop			md;
	struct buf			before, after, got;
	size_t				k;
	int				n, st, done;

	(void)state;
	for (k = 0; k < 2; k++) {
		done = 0;
		for (n = 1; n < 40; n++) {
			char	f[32];

			write_msgs();
			snprintf(f, sizeof(f), "%s:%d", kinds[k], n);
			st = child_update(0x15, f);
			assert_true(WIFEXITED(st));
			want_msgs(0x3f, "", &before);
			want_msgs(0x15, "", &after);
			read_file(user.mailbox, &got);
			if (WEXITSTATUS(st) == 0) {
				assert_file(&after);
			} else if (!(got.len == before.len &&
			    memcmp(got.p, before.p, got.len) == 0)) {
				/* Half done: the journal completes it. */
				open_ok(&md);
				md_close(&md);
				assert_file(&after);
			}
			open_ok(&md);
			md_close(&md);
			assert_no_journal();
			buf_free(&got);
			buf_free(&before);
			buf_free(&after);
			done = WEXITSTATUS(st) == 0;
		}
		assert_true(done);
	}
}

/*
 * Kills an update keeping keep right after its journal is written, before
 * its fsync and the first change of the mailbox: the journal, of magic
 * jmagic, is in *jb (its path in j), the mailbox as write_msgs() made it.
 */
static void
journal_written(unsigned int keep, char *j, size_t size, struct buf *jb)
{
	int	st;

	snprintf(j, size, "%s/.user.pop3d-journal", dir);
	for (st = 1; st < 60; st++) {
		char	f[32];
		int	s;

		write_msgs();
		snprintf(f, sizeof(f), "kill:%d", st);
		s = child_update(keep, f);
		if (WIFSIGNALED(s) && access(j, F_OK) == 0) {
			read_file(j, jb);
			/* The header: its magic. */
			if (jb->len > 4096 && memcmp(jb->p, jmagic, 8) == 0)
				return;
			buf_free(jb);
		}
	}
	fail_msg("no kill left a written journal");
}

/* The next session removes the journal j as never applied: the mailbox
 * is orig, every message in it. */
static void
assert_dropped(const char *j, const struct buf *orig)
{
	struct maildrop	md;

	open_ok(&md);
	assert_int_equal(md.n, NMSGS);
	md_close(&md);
	assert_int_equal(access(j, F_OK), -1);
	assert_file(orig);
}

/* A journal that fits neither state: the mailbox stays, MD_PERM. */
static void
test_journal_bad(void **state)
{
	struct maildrop	md;
	struct buf	orig, jb;
	char		j[4200];

	(void)state;
	journal_written(0x3e, j, sizeof(j), &jb);
	buf_free(&jb);
	/* Somebody else rewrote the mailbox meanwhile. */
	mbox(FROM1 "Subject: other\n\nsomething else\n");
	read_file(user.mailbox, &orig);
	assert_int_equal(md_open(&md, &user), MD_PERM);
	assert_file(&orig);
	assert_int_equal(access(j, F_OK), -1);	/* renamed aside */
	open_ok(&md);
	assert_int_equal(md.n, 1);
	md_close(&md);
	buf_free(&orig);

	/* An incomplete journal is removed, the mailbox untouched. */
	write_msgs();
	read_file(user.mailbox, &orig);
	write_file(j, "POP3DJ5\ngarbage", 15);
	assert_dropped(j, &orig);
	buf_free(&orig);
}

static uint64_t
le64(const unsigned char *p)
{
	uint64_t	v = 0;
	int		i;

	for (i = 7; i >= 0; i--)
		v = v << 8 | p[i];
	return v;
}

/*
 * A journal whose header reached the disk but whose table or journaled
 * octets did not (one fsync covers all three: a crash before it returns
 * can keep any of them): it was never applied, the mailbox is untouched;
 * the next session removes it and keeps every message.  The octets at
 * the offsets of the format (journal.c: X at 56, the table at 12288, the
 * data at the next 4096 after it) are spoiled one at a time.
 */
static void
test_journal_torn(void **state)
{
	struct buf	 orig, jb;
	char		 j[4200];
	uint64_t	 x, at[2];
	size_t		 k;

	(void)state;
	for (k = 0; k < 2; k++) {
		journal_written(0x3e, j, sizeof(j), &jb);
		x = le64((unsigned char *)jb.p + 56);
		at[0] = 12288 + 8;			/* a destination */
		at[1] = (12288 + x * 32 + 4095) & ~(uint64_t)4095;
		assert_true(x > 0 && jb.len > at[1]);
		jb.p[at[k]] ^= 0x20;	/* a block of zeros is a torn one too */
		write_file(j, jb.p, jb.len);
		read_file(user.mailbox, &orig);
		assert_dropped(j, &orig);
		buf_free(&orig);
		buf_free(&jb);
	}
}

/* The next session completes the update of the journal jb (0x2b kept),
 * written to j. */
static void
assert_applied(const char *j, struct buf *jb)
{
	struct maildrop		 md;
	struct buf		 after;

	write_file(j, jb->p, jb->len);
	open_ok(&md);
	assert_int_equal(md.n, 4);
	md_close(&md);
	assert_no_journal();
	want_msgs(0x2b, "", &after);
	assert_file(&after);
	buf_free(&after);
}

/*
 * A journal of this pop3d's (0x2b kept) turned into one of an older
 * format: magic, the digest of the journaled octets made a SHA-256 (from
 * POP3DJ3 on), the header's digest over its first len - 32 octets at
 * len - 32, zeros after it up to this format's header (216 octets).  It
 * is still applied: the update it began is completed.
 */
static void
journal_older(const char *magic, size_t len)
{
	struct sha256_ctx	 ctx;
	struct buf		 jb;
	char			 j[4200];
	uint64_t		 x, at, n;

	journal_written(0x2b, j, sizeof(j), &jb);
	memcpy(jb.p, magic, 8);
	x = le64((unsigned char *)jb.p + 56);
	at = (12288 + x * 32 + 4095) & ~(uint64_t)4095;
	n = le64((unsigned char *)jb.p + 64);
	assert_true(n > 0 && jb.len >= at + n);
	if (len >= 200) {
		sha256_init(&ctx);
		sha256_update(&ctx, n, (unsigned char *)jb.p + at);
		sha256_digest(&ctx, 32, (unsigned char *)jb.p + 136);
	}
	sha256_init(&ctx);
	sha256_update(&ctx, len - 32, (unsigned char *)jb.p);
	sha256_digest(&ctx, 32, (unsigned char *)jb.p + len - 32);
	memset(jb.p + len, 0, 216 - len);
	assert_applied(j, &jb);
	buf_free(&jb);
}

/* The pop3d before the previous one's journal (POP3DJ2: no digest of
 * the journaled octets, which it made durable before the header). */
static void
test_journal_v2(void **state)
{
	(void)state;
	journal_older("POP3DJ2\n", 168);
}

/* An older pop3d's journal (POP3DJ3: no mark). */
static void
test_journal_v3(void **state)
{
	(void)state;
	journal_older("POP3DJ3\n", 200);
}

/* The previous pop3d's journal (POP3DJ4: the journaled octets' digest a
 * SHA-256). */
static void
test_journal_v4(void **state)
{
	(void)state;
	journal_older("POP3DJ4\n", 216);
}

/* Without a key for its digest (getrandom(2) failed), a journal of
 * POP3DJ4, which the next session applies. */
static void
test_journal_nokey(void **state)
{
	struct buf	jb;
	char		j[4200];

	(void)state;
	setenv("POP3D_NOKEY", "1", 1);
	jmagic = "POP3DJ4\n";
	journal_written(0x2b, j, sizeof(j), &jb);
	unsetenv("POP3D_NOKEY");
	assert_applied(j, &jb);
	buf_free(&jb);
}

/*
 * An update killed in its moves (no record P = X+1: the truncate never
 * began), then one octet of [D+N, F) changed by another program: the
 * mailbox is in neither state the journal knows, so it is left as it is,
 * the journal kept aside and the login refused (MD_PERM), for POP3DJ5 as
 * for POP3DJ4 (found by a review: no test held the version check).
 */
/*
 * An update that fails with the mailbox untouched leaves it untouched for
 * the next session too, whichever call failed (EIO at each in turn,
 * before the call or after it did its work: "done"), even when the
 * journal it gave up keeps its name (POP3D_JLOSE: a crash lost the
 * unlink): after a failed fsync of the directory, the journal under its
 * name was complete, and the next session applied it, deleting after a
 * -ERR; so it was after a rename that did its work and said EIO.
 */
static void
test_journal_given_up(void **state)
{
	static const char *const kinds[] = { "eio", "done" };
	struct maildrop	 md;
	struct buf	 orig, got;
	char		 f[32], j[4200];
	int		 k, n, st, named;

	(void)state;
	snprintf(j, sizeof(j), "%s/.user.pop3d-journal", dir);
	for (k = 0; k < 2; k++) {
		for (named = 0, n = 1; n < 80; n++) {
			write_msgs();
			read_file(user.mailbox, &orig);
			snprintf(f, sizeof(f), "%s:%d", kinds[k], n);
			setenv("POP3D_JLOSE", "1", 1);
			st = child_update(0x2b, f);
			unsetenv("POP3D_JLOSE");
			read_file(user.mailbox, &got);
			if (WIFEXITED(st) && WEXITSTATUS(st) == 3 &&
			    got.len == orig.len &&
			    memcmp(got.p, orig.p, got.len) == 0) {
				named += access(j, F_OK) == 0;
				open_ok(&md);
				assert_int_equal(md.n, NMSGS);
				md_close(&md);
				assert_file(&orig);
			}
			buf_free(&got);
			buf_free(&orig);
		}
		assert_true(named > 0);
	}
}

static uint64_t	jprogress(void);

static void
test_journal_cut_changed(void **state)
{
	struct maildrop	 md;
	struct buf	 orig, got, jb;
	char		 f[32], j[4200];
	int		 k, st, found;

	(void)state;
	snprintf(j, sizeof(j), "%s/.user.pop3d-journal", dir);
	for (k = 0; k < 2; k++) {
		if (k == 1)
			setenv("POP3D_NOKEY", "1", 1);
		for (found = 0, st = 1; st < 80 && !found; st++) {
			write_msgs();
			read_file(user.mailbox, &orig);
			snprintf(f, sizeof(f), "kill:%d", st);
			if (!WIFSIGNALED(child_update(0x2b, f)) ||
			    access(j, F_OK) != 0) {
				buf_free(&orig);
				continue;
			}
			read_file(user.mailbox, &got);
			read_file(j, &jb);
			/* Moves begun, the mark not written (a NUL at D+N,
			 * where mail has none). */
			found = got.len == orig.len && jb.len > 4096 &&
			    memcmp(got.p, orig.p, got.len) != 0 &&
			    memcmp(jb.p, k ? "POP3DJ4\n" : "POP3DJ5\n", 8) == 0 &&
			    jprogress() == 0 &&
			    got.p[le64((unsigned char *)jb.p + 24) +
			    le64((unsigned char *)jb.p + 40)] != '\0';
			buf_free(&jb);
			buf_free(&orig);
			if (!found) {
				buf_free(&got);
				continue;
			}
			/* The last octet: cut (message 6 is kept, 5 not). */
			got.p[got.len - 1] ^= 0x20;
			write_file(user.mailbox, got.p, got.len);
			assert_int_equal(md_open(&md, &user), MD_PERM);
			assert_file(&got);
			assert_int_equal(access(j, F_OK), -1);	/* aside */
			buf_free(&got);
		}
		assert_true(found);
		unsetenv("POP3D_NOKEY");
	}
}

/*
 * Progress records: with every extent that does not overlap its own
 * source moved within the mailbox (POP3D_JSHIFT=0), a mailbox of 40
 * messages of varied sizes needs several records.  A kill at every step
 * leaves it as before or as after, once the next session repaired it;
 * a record torn by the kill (its slot written, not fsynced) counts for
 * nothing, and the repair starts from the one before.
 */
#define MANY	40

static void
many_msg(size_t i, struct buf *b)
{
	char	line[64];
	size_t	k;

	buf_add(b, FROM1, strlen(FROM1));
	snprintf(line, sizeof(line), "Subject: m%zu\n\n", i);
	buf_add(b, line, strlen(line));
	for (k = 0; k < i * 53 % 7 * 3 + 1; k++) {
		snprintf(line, sizeof(line), "line %zu of message %zu\n", k, i);
		buf_add(b, line, strlen(line));
	}
	buf_add(b, "\n", 1);
}

/* The mailbox of the messages not deleted (all: del NULL). */
static void
many(const unsigned char *del, struct buf *b)
{
	size_t	i;

	memset(b, 0, sizeof(*b));
	buf_add(b, "", 0);
	for (i = 0; i < MANY; i++)
		if (del == NULL || !del[i])
			many_msg(i, b);
}

/* Deletes the messages i < n with del[i] set, under fault: the exit
 * status (2: not n messages). */
static int
child_update_del(const unsigned char *del, size_t n, const char *fault)
{
	struct maildrop	md;
	pid_t		pid;
	size_t		i;
	int		status, r;

	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		if (fault != NULL)
			setenv("POP3D_FAULT", fault, 1);
		io_fault_reset();
		if (md_open(&md, &user) != MD_OK || md.n != n)
			_exit(2);
		for (i = 0; i < n; i++)
			md.msg[i].deleted = del[i];
		r = md_update(&md);
		md_close(&md);
		_exit(r == MD_OK ? 0 : 3);
	}
	assert_int_equal(waitpid(pid, &status, 0), pid);
	return status;
}

/* The sequence number of the journal's newest progress record (0: none;
 * checksums not checked) and the offset of its slot. */
static uint64_t
jseq(off_t *slot)
{
	struct buf	jb;
	char		j[4200];
	uint64_t	seq, best = 0;
	size_t		i, off;

	snprintf(j, sizeof(j), "%s/.user.pop3d-journal", dir);
	if (access(j, F_OK) == -1)
		return 0;
	read_file(j, &jb);
	for (i = 0; i < 2; i++) {
		off = 4096 * (i + 1);
		if (jb.len < off + 72 || memcmp(jb.p + off, "POP3DP2\n", 8) != 0)
			continue;
		seq = le64((unsigned char *)jb.p + off + 8);
		if (seq > best) {
			best = seq;
			*slot = (off_t)off;
		}
	}
	buf_free(&jb);
	return best;
}

static void
test_progress(void **state)
{
	static const char *const	pats[] = { "every3", "first3" };
	unsigned char			del[MANY];
	struct maildrop			md;
	struct buf			before, after, got;
	uint64_t			seq, prev, maxseq;
	size_t				p, i, ndel;
	off_t				slot = 0;
	int				n, st, done, torn;
	char				f[32], j[4200];

	(void)state;
	snprintf(j, sizeof(j), "%s/.user.pop3d-journal", dir);
	setenv("POP3D_JSHIFT", "0", 1);
	for (p = 0; p < sizeof(pats) / sizeof(pats[0]); p++) {
		for (i = ndel = 0; i < MANY; i++) {
			del[i] = p == 0 ? i % 3 == 0 :
			    i < 3 || (i >= 5 && (i - 5) % 4 == 0);
			ndel += del[i];
		}
		many(NULL, &before);
		many(del, &after);
		for (torn = 0; torn < 2; torn++) {
			done = 0;
			prev = maxseq = 0;
			for (n = 1; n < 200 && !done; n++) {
				write_file(user.mailbox, before.p, before.len);
				snprintf(f, sizeof(f), "kill:%d", n);
				st = child_update_del(del, MANY, f);
				if (WIFEXITED(st)) {
					assert_int_equal(WEXITSTATUS(st), 0);
					done = 1;
				} else
					assert_true(WIFSIGNALED(st) &&
					    WTERMSIG(st) == SIGKILL);
				seq = jseq(&slot);
				if (seq > maxseq)
					maxseq = seq;
				/* Killed at the fsync of a new record: tear
				 * it; the repair uses the one before. */
				if (torn && seq > prev) {
					int	fd = open(j, O_WRONLY);

					assert_true(fd >= 0);
					assert_int_equal(pwrite(fd, "X", 1,
					    slot + 50), 1);
					close(fd);
				}
				prev = seq;
				open_ok(&md);
				assert_true(md.n == MANY || md.n == MANY - ndel);
				md_close(&md);
				assert_no_journal();
				read_file(user.mailbox, &got);
				if (!(got.len == before.len &&
				    memcmp(got.p, before.p, got.len) == 0))
					assert_file(&after);
				else
					assert_true(seq == 0);
				buf_free(&got);
			}
			assert_true(done);
			assert_true(maxseq >= 4);
		}
		buf_free(&before);
		buf_free(&after);
	}
	unsetenv("POP3D_JSHIFT");
}

/* Two messages of the same length: the second, moved over the first,
 * is shifted by exactly its length (moved within the mailbox, not
 * through the journal, with POP3D_JSHIFT=0), and the mark at D+N lies
 * on its source. */
#define TWO_A	FROM1 "Subject: aa\n\nfirst\n\n"
#define TWO_B	FROM1 "Subject: bb\n\nother\n\n"

/* The P of the journal's newest valid-looking progress record; 0: none. */
static uint64_t
jprogress(void)
{
	off_t		slot = 0;
	struct buf	jb;
	uint64_t	p;
	char		j[4200];

	if (jseq(&slot) == 0)
		return 0;
	snprintf(j, sizeof(j), "%s/.user.pop3d-journal", dir);
	read_file(j, &jb);
	p = le64((unsigned char *)jb.p + slot + 16);
	buf_free(&jb);
	return p;
}

/*
 * A crash that kept the mark (written before the record P = X+1) and
 * lost the move it follows (both wait for the same fsync, and the disk
 * may keep either): the mailbox is as before but for the mark, over the
 * source of that move.  The repair puts back the octets the mark
 * overwrote (the header keeps them), then redoes the move: the update is
 * done.  And a kill after the truncate, with the mailbox rewritten
 * shorter since: the journal (its record P = X+1 says the truncate
 * began, no mark is there) goes, the mailbox stays as it is.
 */
static void
test_journal_mark(void **state)
{
	const size_t	 la = strlen(TWO_A), lb = strlen(TWO_B);
	struct maildrop	 md;
	struct buf	 got, want, before;
	char		 f[32], j[4200];
	static const unsigned char two[] = { 1, 0 };
	uint32_t	 left;
	int		 n, st, marked = 0, cut = 0;

	(void)state;
	assert_int_equal(la, lb);
	snprintf(j, sizeof(j), "%s/.user.pop3d-journal", dir);
	setenv("POP3D_JSHIFT", "0", 1);
	memset(&want, 0, sizeof(want));
	buf_add(&want, TWO_B, lb);
	memset(&before, 0, sizeof(before));
	buf_add(&before, TWO_A TWO_B, la + lb);
	for (n = 1; n < 100; n++) {
		mbox(TWO_A TWO_B);
		snprintf(f, sizeof(f), "kill:%d", n);
		st = child_update_del(two, 2, f);
		if (WIFEXITED(st)) {
			assert_int_equal(WEXITSTATUS(st), 0);
			break;
		}
		read_file(user.mailbox, &got);
		if (access(j, F_OK) == 0 && got.len == la + lb &&
		    got.p[lb] == '\0' && jprogress() == 0) {
			/* The mark without its record: undo the move. */
			marked++;
			memcpy(got.p, TWO_A, la);
			assert_true(memcmp(got.p + lb + 16, TWO_B + 16,
			    lb - 16) == 0);
			write_file(user.mailbox, got.p, got.len);
		} else if (access(j, F_OK) == 0 && got.len == lb &&
		    jprogress() == 2) {
			/* Truncated, the journal left: a mail reader
			 * rewrites the mailbox shorter. */
			cut++;
			buf_free(&got);
			mbox(FROM1 "\nx\n");
			read_file(user.mailbox, &got);
			open_ok(&md);
			assert_int_equal(md.n, 1);
			md_close(&md);
			assert_no_journal();
			assert_file(&got);
			buf_free(&got);
			continue;
		}
		buf_free(&got);
		/* Killed before its journal was complete: as before. */
		open_ok(&md);
		left = md.n;
		md_close(&md);
		assert_no_journal();
		assert_true(left == 1 || left == 2);
		if (left == 2) {
			assert_int_equal(marked + cut, 0);
			assert_file(&before);
		} else
			assert_file(&want);
	}
	unsetenv("POP3D_JSHIFT");
	assert_true(n < 100);
	assert_true(marked > 0 && cut > 0);
	buf_free(&want);
	buf_free(&before);
}

/*
 * A journal that does not match its digests although a progress record
 * was written after it (so it was complete once and the mailbox has been
 * changed since): damaged, never taken for one that was never complete:
 * kept aside, the mailbox left as it is, MD_PERM.
 */
static void
test_journal_damaged_after_progress(void **state)
{
	unsigned char	del[MANY];
	struct maildrop	md;
	struct buf	before, jb, now;
	off_t		slot = 0;
	uint64_t	x;
	size_t		i;
	int		n, fd;
	char		f[32], j[4200];

	(void)state;
	snprintf(j, sizeof(j), "%s/.user.pop3d-journal", dir);
	setenv("POP3D_JSHIFT", "0", 1);
	for (i = 0; i < MANY; i++)
		del[i] = i % 3 == 0;
	many(NULL, &before);
	for (n = 1; n < 200; n++) {
		write_file(user.mailbox, before.p, before.len);
		snprintf(f, sizeof(f), "kill:%d", n);
		assert_true(WIFSIGNALED(child_update_del(del, MANY, f)));
		if (jseq(&slot) > 0)
			break;
		open_ok(&md);	/* repairs: the next try starts as before */
		md_close(&md);
	}
	unsetenv("POP3D_JSHIFT");
	assert_true(n < 200);
	read_file(j, &jb);
	x = le64((unsigned char *)jb.p + 56);
	assert_true(le64((unsigned char *)jb.p + 64) > 0);	/* J */
	fd = open(j, O_WRONLY);
	assert_true(fd >= 0);
	/* The first octet of the journaled data. */
	assert_int_equal(pwrite(fd, "X", 1,
	    (off_t)((12288 + x * 32 + 4095) & ~(uint64_t)4095)), 1);
	close(fd);
	read_file(user.mailbox, &now);
	assert_int_equal(md_open(&md, &user), MD_PERM);
	assert_file(&now);
	assert_int_equal(access(j, F_OK), -1);	/* renamed aside */
	buf_free(&now);
	buf_free(&jb);
	buf_free(&before);
}

/* An older pop3d's journal is kept where it is, never applied or removed:
 * logins are refused until an administrator acts. */
static void
test_journal_v1(void **state)
{
	unsigned char		 h[120];
	struct maildrop		 md;
	struct buf		 orig;
	struct sha256_ctx	 ctx;
	char			 j[4200];

	(void)state;
	write_msgs();
	read_file(user.mailbox, &orig);
	memset(h, 0, sizeof(h));
	memcpy(h, "POP3DJ1\n", 8);
	sha256_init(&ctx);
	sha256_update(&ctx, 88, h);
	sha256_digest(&ctx, 32, h + 88);
	snprintf(j, sizeof(j), "%s/.user.pop3d-journal", dir);
	write_file(j, h, sizeof(h));
	assert_int_equal(md_open(&md, &user), MD_PERM);
	assert_file(&orig);
	/* Kept where it is: the next login is refused too. */
	assert_int_equal(access(j, F_OK), 0);
	assert_int_equal(md_open(&md, &user), MD_PERM);
	assert_int_equal(unlink(j), 0);
	open_ok(&md);
	assert_int_equal(md.n, NMSGS);
	md_close(&md);
	buf_free(&orig);
}

/*
 * Safe open and locks.
 */

static void
test_unsafe(void **state)
{
	struct maildrop	md;
	char		p[4200];

	(void)state;
	write_msgs();
	/* Symlinked mailbox. */
	snprintf(p, sizeof(p), "%s/real", dir);
	assert_int_equal(rename(user.mailbox, p), 0);
	assert_int_equal(symlink(p, user.mailbox), 0);
	assert_int_equal(md_open(&md, &user), MD_PERM);
	assert_int_equal(unlink(user.mailbox), 0);
	/* Hard-linked mailbox. */
	assert_int_equal(link(p, user.mailbox), 0);
	assert_int_equal(md_open(&md, &user), MD_PERM);
	assert_int_equal(unlink(p), 0);
	open_ok(&md);
	md_close(&md);
	/* A directory. */
	assert_int_equal(unlink(user.mailbox), 0);
	assert_int_equal(mkdir(user.mailbox, 0700), 0);
	assert_int_equal(md_open(&md, &user), MD_PERM);
	assert_int_equal(rmdir(user.mailbox), 0);
	/* Symlinked dotlock: refused, never followed nor removed. */
	write_msgs();
	snprintf(p, sizeof(p), "%s.lock", user.mailbox);
	assert_int_equal(symlink("/nonexistent", p), 0);
	assert_int_equal(md_open(&md, &user), MD_PERM);
	assert_int_equal(unlink(p), 0);
	/* A journal that is a symlink. */
	snprintf(p, sizeof(p), "%s/.user.pop3d-journal", dir);
	assert_int_equal(symlink(user.mailbox, p), 0);
	assert_int_equal(md_open(&md, &user), MD_PERM);
	assert_int_equal(unlink(p), 0);
	/* Another owner is tested by pytest (needs root). */
	open_ok(&md);
	assert_int_equal(md.n, NMSGS);
	md_close(&md);
}

static void
test_inuse(void **state)
{
	struct maildrop	md, md2;

	(void)state;
	write_msgs();
	open_ok(&md);
	assert_int_equal(md_open(&md2, &user), MD_INUSE);
	md_close(&md2);
	md.msg[0].deleted = 1;
	assert_int_equal(md_update(&md), MD_OK);
	md_close(&md);
	open_ok(&md2);
	assert_int_equal(md2.n, NMSGS - 1);
	md_close(&md2);
}

static void
test_stale_dotlock(void **state)
{
	struct maildrop	md;
	struct timespec	old[2];
	char		p[4200];
	pid_t		pid;
	int		st;

	(void)state;
	write_msgs();
	snprintf(p, sizeof(p), "%s.lock", user.mailbox);
	/* Too old. */
	write_file(p, "1\n", 2);
	old[0].tv_sec = old[1].tv_sec = time(NULL) - MD_DOTLOCK_STALE - 10;
	old[0].tv_nsec = old[1].tv_nsec = 0;
	assert_int_equal(utimensat(AT_FDCWD, p, old, 0), 0);
	open_ok(&md);
	md_close(&md);
	assert_int_equal(access(p, F_OK), -1);
	/* Its process is gone. */
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0)
		_exit(0);
	assert_int_equal(waitpid(pid, &st, 0), pid);
	{
		char	s[32];

		snprintf(s, sizeof(s), "%ld\n", (long)pid);
		write_file(p, s, strlen(s));
	}
	open_ok(&md);
	md_close(&md);
	assert_int_equal(access(p, F_OK), -1);
	/* fcntl only: the dotlock is not looked at. */
	write_file(p, "1\n", 2);
	opt.locks = POP3_LOCK_FCNTL;
	open_ok(&md);
	md_close(&md);
	assert_int_equal(access(p, F_OK), 0);
	assert_int_equal(unlink(p), 0);
}

static time_t
mtime_of(const char *p)
{
	struct stat	st;

	assert_int_equal(lstat(p, &st), 0);
	return st.st_mtime;
}

static void
backdate(const char *p, time_t ago)
{
	struct timespec	t[2];

	t[0].tv_sec = t[1].tv_sec = time(NULL) - ago;
	t[0].tv_nsec = t[1].tv_nsec = 0;
	assert_int_equal(utimensat(AT_FDCWD, p, t, AT_SYMLINK_NOFOLLOW), 0);
}

/*
 * A long index or update keeps its dotlock fresh (MD_DOTLOCK_REFRESH),
 * so that an MDA never takes it for stale (MD_DOTLOCK_STALE) and breaks
 * it; a dotlock somebody else put in its place is neither touched nor
 * removed.
 */
static void
test_dotlock_refresh(void **state)
{
	static const char	m[] = FROM1 "S: x\n\n0123456789\n\n";
	struct maildrop		md;
	struct mbox_ix		ix;
	struct buf		b;
	char			p[4200];

	(void)state;
	/* A mailbox of several index blocks. */
	memset(&b, 0, sizeof(b));
	while (b.len < 4 * MD_BLOCK)
		buf_add(&b, m, sizeof(m) - 1);
	write_file(user.mailbox, b.p, b.len);
	buf_free(&b);
	snprintf(p, sizeof(p), "%s.lock", user.mailbox);
	open_ok(&md);
	assert_int_equal(access(p, F_OK), -1);
	assert_int_equal(lock_spool(md.fd, md.path, md.lockpath, opt.locks), MD_OK);
	assert_int_equal(access(p, F_OK), 0);
	/* Not yet due: left alone. */
	backdate(p, MD_DOTLOCK_STALE - 10);
	lock_alive();
	assert_true(mtime_of(p) <= time(NULL) - MD_DOTLOCK_STALE + 10);
	/* Due: its mtime is now. */
	lock_test_refresh(0);
	lock_alive();
	assert_true(mtime_of(p) >= time(NULL) - 2);
	/* The index refreshes it as it reads. */
	backdate(p, MD_DOTLOCK_STALE - 10);
	assert_int_equal(mbox_index(md.fd, md.indexed, lock_alive, &ix), MD_OK);
	assert_int_equal(ix.n, md.n);
	free(ix.msg);
	assert_true(mtime_of(p) >= time(NULL) - 2);
	/* Replaced by another program's (a new inode: made before ours
	 * goes): not touched, not removed. */
	{
		char	q[128];

		snprintf(q, sizeof(q), "%s/other.lock", dir);
		write_file(q, "1\n", 2);
		assert_int_equal(rename(q, p), 0);
	}
	backdate(p, 100);
	lock_alive();
	assert_true(mtime_of(p) <= time(NULL) - 99);
	lock_test_refresh(MD_DOTLOCK_REFRESH * 1000ULL);
	lock_spool_release(md.fd, md.path, md.lockpath, opt.locks);
	assert_int_equal(access(p, F_OK), 0);
	assert_int_equal(unlink(p), 0);
	md_close(&md);
}

int
main(void)
{
	const struct CMUnitTest	tests[] = {
#define T(f)	cmocka_unit_test_setup_teardown(f, setup, teardown)
		T(test_empty_missing),
		T(test_not_mbox),
		T(test_from_edges),
		T(test_no_final_newline),
		T(test_crlf_cr_nul),
		T(test_long_line),
		T(test_corpus),
		T(test_split),
		T(test_random_octets),
		T(test_top_stuffing),
		T(test_uidl_stable),
		T(test_twins),
		T(test_twins_table),
		T(test_pseudo),
		T(test_update),
		T(test_update_appended),
		T(test_changed),
		T(test_kill_loop),
		T(test_error_loop),
		T(test_journal_bad),
		T(test_journal_torn),
		T(test_journal_v2),
		T(test_journal_v3),
		T(test_journal_v4),
		T(test_journal_nokey),
		T(test_journal_cut_changed),
		T(test_journal_given_up),
		T(test_journal_mark),
		T(test_journal_damaged_after_progress),
		T(test_progress),
		T(test_journal_v1),
		T(test_unsafe),
		T(test_inuse),
		T(test_stale_dotlock),
		T(test_dotlock_refresh),
#undef T
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
