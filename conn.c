/*
 * conn.c: the client connection of proto.c's state machine: deadlines on
 * CLOCK_MONOTONIC, the buffered reply writer and the bounded line reader.
 * The input buffer never grows: a line is at most POP3_CMD_MAX octets,
 * longer ones are discarded (proto.c's first comment has the rules).
 */

#include <sys/types.h>

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "io.h"
#include "pop3d.h"

/*
 * Time: CLOCK_MONOTONIC (io_ms(), the maildrop's clock too), so a clock
 * step cannot end or stretch a session.
 */
int64_t
pop_now_ms(void)
{
	return (int64_t)io_ms();
}

time_t
pop_clock(void)
{
	return (time_t)(pop_now_ms() / 1000);
}

/* The deadline of one wait: the idle timeout, within the session limit. */
static int64_t
pop_deadline(const struct pop_conn *c)
{
	int64_t	 d, max;

	d = pop_now_ms() + (int64_t)opt.timeout * 1000;
	max = ((int64_t)c->start + POP3_SESSION_MAX) * 1000;
	return d < max ? d : max;
}

/* Waits for events on fd until the deadline: 1 ready, -1 ETIMEDOUT etc. */
static int
pop_wait(int fd, short events, int64_t deadline)
{
	struct pollfd	 pfd;
	int64_t		 left;
	int		 n;

	for (;;) {
		left = deadline - pop_now_ms();
		if (left <= 0) {
			errno = ETIMEDOUT;
			return -1;
		}
		pfd.fd = fd;
		pfd.events = events;
		pfd.revents = 0;
		n = poll(&pfd, 1, left > INT_MAX ? INT_MAX : (int)left);
		if (n > 0)
			return 1;
		if (n == -1 && errno != EINTR)
			return -1;
	}
}

void
pop_conn_init(struct pop_conn *c, int in, int out)
{
	int	 fl;

	/*
	 * Every field but the two buffers, which are only read below ilen
	 * and olen: zeroing their 65 KB would fault in 17 pages of a freshly
	 * forked process for nothing.
	 */
	memset(c, 0, offsetof(struct pop_conn, ibuf));
	c->in = in;
	c->out = out;
	c->start = pop_clock();
	/*
	 * Non-blocking, so that a write to a client that does not read and
	 * a read after a spurious wake-up end at our deadline.  A terminal
	 * (a test by hand with -d) is left as it is, for the shell's sake.
	 * The user's process finds the flag already set by the pre-login
	 * child (the open file is shared) and makes no call but F_GETFL.
	 */
	if ((fl = fcntl(in, F_GETFL)) != -1 && (fl & O_NONBLOCK) == 0 &&
	    !isatty(in))
		(void)fcntl(in, F_SETFL, fl | O_NONBLOCK);
	if ((fl = fcntl(out, F_GETFL)) != -1 && (fl & O_NONBLOCK) == 0 &&
	    !isatty(out))
		(void)fcntl(out, F_SETFL, fl | O_NONBLOCK);
}

/*
 * The writer.
 */

/* Writes len octets to the client within the idle timeout; -1: gone. */
static int
pop_write(struct pop_conn *c, const char *p, size_t len)
{
	int64_t	 deadline;
	ssize_t	 n;

	if (c->eof)
		return -1;
	deadline = pop_deadline(c);
	while (len > 0) {
		n = write(c->out, p, len);
		if (n > 0) {
			p += n;
			len -= (size_t)n;
			deadline = pop_deadline(c);
			continue;
		}
		if (n == -1 && errno == EINTR)
			continue;
		if (n == -1 && errno == EAGAIN &&
		    pop_wait(c->out, POLLOUT, deadline) == 1)
			continue;
		c->eof = 1;
		return -1;
	}
	return 0;
}

int
pop_flush(struct pop_conn *c)
{
	size_t	 len = c->olen;

	if (c->eof)
		return -1;
	c->olen = 0;
	return pop_write(c, c->obuf, len);
}

/* Appends octets to the output buffer, flushing when it is full. */
int
pop_put(struct pop_conn *c, const char *p, size_t len)
{
	if (c->eof)
		return -1;
	if (len > sizeof(c->obuf) - c->olen && pop_flush(c) == -1)
		return -1;
	if (len >= sizeof(c->obuf))
		return pop_write(c, p, len);
	memcpy(c->obuf + c->olen, p, len);
	c->olen += len;
	return 0;
}

/* One reply line, CRLF added; returns the octets queued or -1. */
int
pop_reply(struct pop_conn *c, const char *fmt, ...)
{
	char	 buf[POP3_LINE_MAX];
	va_list	 ap;
	int	 n;

	va_start(ap, fmt);
	n = vsnprintf(buf, sizeof(buf) - 2, fmt, ap);
	va_end(ap);
	/* Replies are our text and numbers: longer is a bug of ours. */
	if (n < 0 || (size_t)n >= sizeof(buf) - 2)
		fatalx("reply too long");
	buf[n++] = '\r';
	buf[n++] = '\n';
	return pop_put(c, buf, (size_t)n) == -1 ? -1 : n;
}

/* The decimal digits of v, ending just before end; returns their start. */
char *
pop_utoa(char *end, uint64_t v)
{
	do {
		*--end = (char)('0' + v % 10);
		v /= 10;
	} while (v > 0);
	return end;
}

/*
 * One line "N WORD" of a LIST or UIDL listing, put together without
 * printf: a listing of 100,000 messages is 100,000 of them (issue 6).
 */
void
pop_item(struct pop_conn *c, uint32_t n, const char *w, size_t wlen)
{
	char	 line[POP3_LINE_MAX], num[12];
	char	*d = pop_utoa(num + sizeof(num), n);
	size_t	 len = (size_t)(num + sizeof(num) - d);

	if (wlen > sizeof(line) - len - 3)
		fatalx("reply too long");
	memcpy(line, d, len);
	line[len++] = ' ';
	memcpy(line + len, w, wlen);
	len += wlen;
	line[len++] = '\r';
	line[len++] = '\n';
	(void)pop_put(c, line, len);
}

/*
 * Takes back the last reply line queued, while it is still in the buffer
 * (a line is queued whole, pop_put): 0, or -1 if none is.
 */
int
pop_unreply(struct pop_conn *c)
{
	size_t	 n;

	if (c->eof || c->olen == 0)
		return -1;
	for (n = c->olen - 1; n > 0 && c->obuf[n - 1] != '\n'; n--)
		;
	c->olen = n;
	return 0;
}

/* A last word before closing: one try, never waits for the client. */
static void
pop_bye(struct pop_conn *c, const char *msg)
{
	if (!c->eof && c->olen == 0)
		(void)!write(c->out, msg, strlen(msg));
	c->eof = 1;
}

/* The last words to a client whose wait timed out: the idle timeout, or
 * the session's limit. */
void
pop_timeout(struct pop_conn *c)
{
	pop_bye(c, pop_clock() - c->start >= POP3_SESSION_MAX ?
	    "-ERR autologout: session time limit\r\n" :
	    "-ERR autologout: idle timeout\r\n");
}

/*
 * The reader.
 */

/* Drops n octets from the front of the input buffer, wiping the tail. */
void
pop_consume(struct pop_conn *c, size_t n)
{
	memmove(c->ibuf, c->ibuf + n, c->ilen - n);
	c->ilen -= n;
	pop_wipe(c->ibuf + c->ilen, n);
}

/* Is input waiting?  Then replies can wait too (PIPELINING). */
static int
pop_input_ready(const struct pop_conn *c)
{
	struct pollfd	 pfd;

	pfd.fd = c->in;
	pfd.events = POLLIN;
	pfd.revents = 0;
	return poll(&pfd, 1, 0) > 0;
}

/* Reads more input, c->ibuf then holding at most want octets: 1 read, 0
 * EOF, -1 errno (ETIMEDOUT...). */
int
pop_fill_to(struct pop_conn *c, size_t want, int64_t deadline)
{
	ssize_t	 n;

	for (;;) {
		if (pop_wait(c->in, POLLIN, deadline) == -1)
			return -1;
		n = read(c->in, c->ibuf + c->ilen, want - c->ilen);
		if (n > 0) {
			c->ilen += (size_t)n;
			return 1;
		}
		if (n == 0)
			return 0;
		if (errno != EINTR && errno != EAGAIN)
			return -1;
	}
}

/* Reads more input: 1 read, 0 EOF, -1 errno (ETIMEDOUT, EPIPE...). */
static int
pop_fill(struct pop_conn *c, int64_t deadline)
{
	if (c->olen > 0 && !pop_input_ready(c) && pop_flush(c) == -1) {
		errno = EPIPE;
		return -1;
	}
	return pop_fill_to(c, sizeof(c->ibuf), deadline);
}

/*
 * Reads one command line into line[POP3_CMD_MAX], NUL-terminated, without
 * its CRLF or LF.  Returns 1 with *lenp set, 0 at EOF (a partial last line
 * is dropped, answered if it was too long), -1 with errno: ERANGE (line too long) and EILSEQ (a NUL in
 * the line) after replying "-ERR" to it; ETIMEDOUT; others from read(2).
 * Whatever follows the line stays in c->ibuf.
 */
int
pop_getline(struct pop_conn *c, char *line, size_t size, size_t *lenp)
{
	int64_t	 deadline;
	char	*lf;
	size_t	 n, len;
	int	 r;

	deadline = pop_deadline(c);
	for (;;) {
		if ((lf = memchr(c->ibuf, '\n', c->ilen)) != NULL) {
			n = (size_t)(lf - c->ibuf);
			len = n;
			if (len > 0 && c->ibuf[len - 1] == '\r')
				len--;
			if (len > size - 2) {
				pop_consume(c, n + 1);
				(void)pop_reply(c, "-ERR line too long");
				errno = ERANGE;
				return -1;
			}
			memcpy(line, c->ibuf, len);
			line[len] = '\0';
			pop_consume(c, n + 1);
			if (memchr(line, '\0', len) != NULL) {
				pop_wipe(line, len);
				(void)pop_reply(c, "-ERR NUL in command line");
				errno = EILSEQ;
				return -1;
			}
			*lenp = len;
			return 1;
		}
		/* size - 2 octets, a CR and the LF are the most a line may
		 * be. */
		if (c->ilen >= size)
			break;
		if ((r = pop_fill(c, deadline)) != 1)
			return r;
	}

	/*
	 * Too long: discarded through the next LF, then answered, so that
	 * the reply is the last line queued when proto.c counts the bad
	 * command (pop_unreply); at end of file it is answered all the same.
	 */
	for (;;) {
		pop_consume(c, c->ilen);
		if ((r = pop_fill(c, deadline)) != 1) {
			if (r == 0)
				(void)pop_reply(c, "-ERR line too long");
			return r;
		}
		if ((lf = memchr(c->ibuf, '\n', c->ilen)) != NULL) {
			pop_consume(c, (size_t)(lf - c->ibuf) + 1);
			(void)pop_reply(c, "-ERR line too long");
			errno = ERANGE;
			return -1;
		}
	}
}
