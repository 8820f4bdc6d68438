"""Hostile input (issue 7): the bad-input matrix.

Every case gets a reply or a clean close, the process exits with a defined
status (pop3d.h POP3_EX_*), its peak memory stays under a bound that does
not depend on the input (or grows only with the number of messages), and
the mailbox is unchanged unless QUIT was accepted.

Peak memory is measured with GNU time (%M, the maximum RSS of pop3d
itself: Python's own memory would count in a fork from the test runner).
The bounds are generous multiples of what pop3d needs (about 2.5 MB, 8 MB
under ASan) and far below what holding one of the large inputs would take.
"""

import hashlib
import os
import random
import time

import pytest

import refmbox
from conftest import (FROM_LINE, LIMITS, NOBODY, PASSWORD, ROOT, USER,
    Transcript, expected_retr, expected_top, login, mbox, stored_retr)
from messages import M1, M2, M3, THREE

MB = 1024 * 1024
EX = {v for k, v in LIMITS.items() if k.startswith("POP3_EX_")}
OK, CLOSED = LIMITS["POP3_EX_OK"], LIMITS["POP3_EX_CLOSED"]



def _asan(path):
	with open(path, "rb") as f:
		return b"__asan_init" in f.read()


@pytest.fixture
def bound(pop3):
	"""bound(messages=0): the most KB pop3d may use for this binary:
	issue 6's 4 MiB + 64 octets a message, whatever the message sizes
	(ASan's shadow memory and quarantine need more)."""
	asan = _asan(pop3.bin)

	def f(messages=0):
		base = 64 * 1024 if asan else 4 * 1024
		per = 400 if asan else 64		# octets per indexed message
		return base + messages * per // 1024
	return f


class Result:
	"""A run_script() Outcome whose replies are parsed when asked (.t):
	.out, .err (text), .rc, .rss (KB), .elapsed."""

	def __init__(self, o):
		self.o = o
		self.cmds, self.out, self.rc = o.cmds, o.out, o.rc
		self.err = o.err.decode("utf-8", "replace")
		self.rss = o.rss
		self.elapsed = o.elapsed
		self._t = None

	@property
	def t(self):
		"""The replies as a Transcript (a ProtocolError if they are
		malformed)."""
		if self._t is None:
			self._t = self.o.transcript()
		return self._t

	def __repr__(self):
		try:
			t = repr(self.t)
		except AssertionError as e:
			t = "malformed replies: %s; stderr:\n%s" % (e,
			    self.err[-2000:])
		return "rc %s, max RSS %s KB, %.1f s\n%s" % (self.rc, self.rss,
		    self.elapsed, t)


def run(pop3, cmds, *extra, raw=None, sink=None, read=True, timeout=60,
    **kw):
	"""pop3.run() under GNU time (rss): writes raw (or the command lines)
	and closes the input, reads the output (to sink(chunk) if given)
	unless read is False, waits.  A Result."""
	return Result(pop3.run(cmds, *extra, raw=raw, sink=sink, read=read,
	    timeout=timeout, rss=True, parse=False, **kw))


def check(res, bound, rc, messages=0):
	"""The common promises: a defined exit status (the one expected), a
	greeting at least, memory under the bound."""
	assert res.rc in EX, res
	assert res.rc == rc, res
	assert res.t.greeting is not None and res.t.greeting.ok, res
	assert res.rss is not None and res.rss <= bound(messages), res
	assert "AddressSanitizer" not in res.err, res
	assert "runtime error" not in res.err, res


def digest(path):
	"""sha256 of a file, holes and all, without holding it."""
	h = hashlib.sha256()
	with open(path, "rb") as f:
		while True:
			b = f.read(4 * MB)
			if not b:
				return h.hexdigest()
			h.update(b)


# ------------------------------------------------------------ the wire

@pytest.mark.parametrize("state", ["before login", "after login"])
@pytest.mark.parametrize("end", ["eof", "newline, then QUIT"])
def test_megabyte_line(pop3, bound, state, end):
	"""A 1 MB line: one -ERR, nothing of it runs (it is "DELE 1 " over
	and over), the buffer does not grow."""
	data = pop3.write_mbox(THREE)
	pre = login() if state == "after login" else []
	raw = b"".join(c.encode() + b"\r\n" for c in pre) + \
	    b"DELE 1 " * (MB // 7)
	cmds = pre + ["DELE 1 ..."]
	if end != "eof":
		raw += b"\r\nQUIT\r\n"
		cmds.append("QUIT")
	res = run(pop3, cmds, raw=raw)
	check(res, bound, OK if end != "eof" else CLOSED)
	t = res.t
	assert len(t) == len(cmds), res
	assert all(r.ok for r in t.replies[:len(pre)]), res
	assert t[len(pre)].err and "too long" in t[len(pre)].text, res
	if end != "eof":
		assert t[-1].ok, res
	assert not res.t.extra, res
	assert pop3.read_mbox() == data


def test_100000_pipelined_commands(pop3, bound):
	"""100,000 commands in one write: every one answered, in order, in
	bounded memory."""
	data = pop3.write_mbox(THREE)
	cmds = ["CAPA"] + ["USER " + USER] * 30000 + ["PASS " + PASSWORD]
	mix = ["NOOP", "STAT", "LIST 2", "UIDL 3", "LIST", "RSET", "DELE 1"]
	cmds += [mix[i % len(mix)] for i in range(100000 - len(cmds) - 1)]
	cmds += ["QUIT"]
	assert len(cmds) == 100000
	res = run(pop3, cmds, timeout=120)
	check(res, bound, OK)
	t = res.t
	assert len(t) == len(cmds), res
	bad = [(c, r.text) for c, r in zip(cmds, t.replies) if not r.ok]
	assert not bad, bad[:5]
	# The last DELE 1 came after the last RSET.
	assert pop3.read_mbox() == mbox([M2, M3])


@pytest.mark.parametrize("line", [
	b"NOOP\x00", b"\x00", b"\x00\x00\x00\x00", b"\xff", b"\xff\xfe\xfd",
	b"NO\xffOP", b"LIST \xff", b"LIST 1\xff", b"DELE \x001",
	b"DELE 1\x00", b"\xffDELE 1", b"RETR 1\x00\xff"])
def test_nul_and_ff_bytes(pop3, bound, line):
	"""NUL voids a line; 0xFF is no command and no number: -ERR, and the
	session goes on, before and after login."""
	data = pop3.write_mbox(THREE)
	cmds = [line, "CAPA", "USER \xff" + USER, "CAPA", "USER " + USER,
	    line, "PASS " + PASSWORD, line, "STAT", line, "QUIT"]
	res = run(pop3, cmds)
	check(res, bound, OK)
	t = res.t
	assert len(t) == len(cmds), res
	assert [r.ok for r in t.replies] == [False, True, False, True, True,
	    False, True, False, True, False, True], res
	assert t[8].text.startswith("+OK 3 "), res
	assert pop3.read_mbox() == data


def test_cr_without_lf(pop3, bound):
	"""A CR is not a line end: "NOOP\\rNOOP" is one unknown command;
	"DELE 1\\r\\r\\n" keeps a CR in its argument and deletes nothing."""
	data = pop3.write_mbox(THREE)
	raw = b"".join(c.encode() + b"\r\n" for c in login()) + \
	    b"NOOP\rNOOP\r\nDELE 1\r\r\n\r\r\r\nSTAT\r\nDELE 2\r"
	cmds = login() + ["NOOP\rNOOP", "DELE 1\r", "\r\r", "STAT", "DELE 2\r"]
	res = run(pop3, cmds, raw=raw)
	check(res, bound, CLOSED)		# EOF without QUIT
	t = res.t
	assert len(t) == 6, res		# the last line never ended
	assert t[2].err and t[3].err and t[4].err, res
	assert t[5].text.startswith("+OK 3 "), res
	assert pop3.read_mbox() == data


def test_one_byte_writes(pop3):
	"""A session written one octet at a time: the same replies as in one
	piece, and the update of its QUIT."""
	pop3.write_mbox(THREE)
	s = pop3.session()
	assert s.greeting().ok
	for c in login() + ["STAT", "LIST", "RETR 3", "TOP 1 0", "DELE 1",
	    "QUIT"]:
		for b in (c + "\r\n").encode():
			s.send(bytes([b]))
			time.sleep(0.0005)
		r = s.read_reply(multi=c in ("LIST", "TOP 1 0") or
		    c.startswith("RETR"))
		assert r is not None and r.ok, (c, r, s.stderr())
		if c == "RETR 3":
			assert r.data == expected_retr(M3)
		if c == "TOP 1 0":
			assert r.data == expected_top(M1, 0)
	assert s.wait(10) == OK
	assert pop3.read_mbox() == mbox([M2, M3])


def test_client_closes_mid_retr(pop3, bound):
	"""The client reads part of a large RETR and goes: pop3d ends (write
	error), nothing is deleted."""
	big = b"Subject: big\n\n" + (b"y" * 99 + b"\n") * (400 * 1024)
	data = pop3.write_mbox([M1, big, M2])
	s = pop3.session()
	s.login()
	assert s.cmd("DELE 1").ok
	s.send("RETR 2\r\n")
	got = 0
	while got < 200000:
		got += len(s.readline())
	s.close_stdin()
	s.proc.stdout.close()
	rc = s.wait(15)
	assert rc == CLOSED, s.stderr()
	assert "AddressSanitizer" not in s.stderr()
	assert pop3.read_mbox() == data


def test_client_never_reads(pop3, bound):
	"""A client that sends RETR of 64 MB and never reads: pop3d blocks on
	the full pipe, gives up after the idle timeout (-t 2), does not buffer
	the message, and deletes nothing."""
	big = b"Subject: big\n\n" + (b"z" * 1023 + b"\n") * (64 * 1024)
	data = pop3.write_mbox([M1, big])
	res = run(pop3, login() + ["DELE 1", "RETR 2", "QUIT"], "-t", "2",
	    read=False, timeout=30)
	assert res.rc == CLOSED, res
	assert 2 <= res.elapsed < 15, res
	assert res.rss is not None and res.rss <= bound(), res
	assert len(res.out) < 8 * MB, res
	assert pop3.read_mbox() == data


# ------------------------------------------------------------ arguments

# (argument, what LIST/RETR/DELE make of it): a message number is decimal
# digits only, leading zeros allowed (pop3d.8); spaces separate arguments.
NUMBERS = [
	("01", True), ("0000000000000000000000001", True), ("1 ", True),
	(" 1", True), ("+1", False), ("-1", False), ("0", False), ("4", False),
	("1x", False), ("0x1", False), ("1.0", False), ("1e0", False),
	("1\t", False), ("\t1", False), ("\xd9\xa1", False), ("1 2", False),
	("4294967297", False), ("4294967296", False),
	("18446744073709551616", False), ("18446744073709551617", False),
	("99999999999999999999999999999999999999", False), ("", False),
	("-0", False), ("1-", False),
]


@pytest.mark.parametrize("verb", ["LIST", "RETR", "DELE", "UIDL"])
def test_numbers(pop3, bound, verb):
	"""Leading zeros, signs, spaces, overflow: never a wrong message, and
	a refused DELE deletes nothing (each DELE is followed by RSET)."""
	data = pop3.write_mbox(THREE)
	cmds = login()
	for a, _ in NUMBERS:
		cmds += ["%s %s" % (verb, a), "RSET"]
	cmds += ["QUIT"]
	res = run(pop3, cmds)
	check(res, bound, OK)
	t = res.t
	assert len(t) == len(cmds), res
	for k, (arg, good) in enumerate(NUMBERS):
		r = t[2 + 2 * k]
		if arg == "" and verb in ("LIST", "UIDL"):
			good = True		# no argument: the listing
		assert r.ok == good, (verb, arg, r)
		assert t[3 + 2 * k].text.startswith("+OK maildrop has 3 "), r
		if not good or arg == "":
			continue
		if verb == "LIST":
			assert r.text == "+OK 1 %d" % len(expected_retr(M1)), r
		elif verb == "RETR":
			assert r.data == expected_retr(M1), r
		elif verb == "UIDL":
			assert r.text.startswith("+OK 1 "), r
		else:
			assert r.text.startswith("+OK message 1 "), r
	assert pop3.read_mbox() == data


def test_top_line_counts(pop3, bound):
	data = pop3.write_mbox(THREE)
	args = ["-1", "+1", "1x", "0x1", "", "99999999999999999999999", "01",
	    "0", "9223372036854775807", "9223372036854775808"]
	cmds = login() + ["TOP 2 " + a for a in args] + ["QUIT"]
	res = run(pop3, cmds)
	check(res, bound, OK)
	t = res.t
	assert len(t) == len(cmds), res
	for a, r in zip(args, t.replies[2:]):
		if a in ("-1", "+1", "1x", "0x1", ""):
			assert r.err, (a, r)
		elif a == "01":
			assert r.ok and r.data == expected_top(M2, 1), (a, r)
		elif a == "0":
			assert r.ok and r.data == expected_top(M2, 0), (a, r)
		elif r.ok:		# a huge count: the whole message, or -ERR
			assert r.data == expected_retr(M2), (a, r)
	assert pop3.read_mbox() == data


@pytest.mark.parametrize("name", [
	"a" * 10000, "a" * 300, "a" * (LIMITS["POP3_USER_MAX"] + 1),
	"ali\x01ce", "alice\x1b[2J", "ali\tce", "alice\x7f", "../alice",
	"..", ".", "alice/../alice", "/etc/passwd", "../../../../etc/shadow",
	".alice", "-alice", "alice:0", "%s%s%n", "al ice", "ALICE"])
def test_user_names(pop3, bound, name):
	"""USER with 10,000 characters, control characters, "../": refused at
	USER or at PASS with the one [AUTH] reply; no file outside the spool
	is opened, nothing in the spool is created, the log never shows the
	name."""
	data = pop3.write_mbox(THREE)
	before = pop3.spool_files()
	cmds = ["USER " + name, "PASS " + PASSWORD, "STAT", "QUIT"]
	res = run(pop3, cmds)
	# A name USER takes makes PASS a failed login; QUIT then gives up:
	# pop3d.8's 67.
	check(res, bound, LIMITS["POP3_EX_NOUSER"] if res.t[0].ok else OK)
	t = res.t
	assert len(t) == 4, res
	assert t[0].err or t[1].err, res
	assert not t[1].ok and t[2].err and t[3].ok, res
	if t[0].ok:
		assert t[1].text.startswith("-ERR [AUTH]"), res
	assert pop3.spool_files() == before
	assert pop3.read_mbox() == data
	if len(name) > 3 and name != "ALICE":
		assert name not in res.err, res


def test_sasl_plain_hostile_names(pop3, bound):
	import base64
	data = pop3.write_mbox(THREE)
	cmds = []
	for cid in [b"../alice", b"alice\x01", b"a" * 200, b"", b"alice\xff"]:
		cmds.append("AUTH PLAIN " + base64.b64encode(b"\0" + cid + b"\0" +
		    PASSWORD.encode()).decode())
		cmds.append("CAPA")
	cmds.append("QUIT")
	res = run(pop3, cmds)
	check(res, bound, OK)
	assert len(res.t) == len(cmds), res
	for i in range(0, len(cmds) - 1, 2):
		assert res.t[i].err and res.t[i + 1].ok, res
	assert pop3.read_mbox() == data


# ------------------------------------------------------------ mailboxes

@pytest.mark.parametrize("box", [
	b"Subject: no From_ line\n\nbody\n",
	b"\n" + FROM_LINE + b"\n\nbody\n",
	b" " + FROM_LINE + b"\n\nbody\n",
	b"From " + b"x" * 10000 + b"\n\nbody\n",
	b"\x00" * 4096,
], ids=["header", "blank line first", "space first", "long From_",
    "zeros"])
def test_not_an_mbox(pop3, bound, box):
	"""A mailbox that does not start with a From_ line: -ERR [SYS/PERM]
	at login, a log line, and the file is left alone."""
	pop3.write_mbox(box)
	res = run(pop3, login() + ["STAT", "QUIT"])
	check(res, bound, LIMITS["POP3_EX_CONFIG"])
	assert res.t[1].text.startswith("-ERR [SYS/PERM]"), res
	assert "mbox" in res.err, res
	assert pop3.read_mbox() == box


@pytest.mark.parametrize("box", [FROM_LINE + b"\n", FROM_LINE + b"\r\n",
    FROM_LINE + b"\n\n", FROM_LINE + b"\n\n\n"],
    ids=["LF", "CRLF", "LF LF", "LF LF LF"])
def test_only_a_from_line(pop3, bound, box):
	"""A From_ line and nothing (or empty lines) after it: one message,
	whose size is what RETR sends."""
	pop3.write_mbox(box)
	res = run(pop3, login() + ["LIST 1", "RETR 1", "TOP 1 0", "DELE 1",
	    "QUIT"])
	check(res, bound, OK)
	t = res.t
	assert len(t) == 7 and all(r.ok for r in t.replies), res
	assert int(t[2].text.split()[2]) == len(t[3].data), res
	assert pop3.read_mbox() == b""


def test_from_line_without_newline(pop3, bound):
	pop3.write_mbox(FROM_LINE)
	res = run(pop3, login() + ["STAT", "QUIT"])
	assert res.rc in (OK, LIMITS["POP3_EX_CONFIG"]), res
	assert res.rss <= bound(), res
	assert res.t[1].ok or res.t[1].text.startswith("-ERR [SYS/PERM]"), res
	assert pop3.read_mbox() == FROM_LINE


class RetrCounter:
	"""Follows a session whose command before last is one large RETR,
	without holding the message: the status lines before it are kept,
	its octets counted, the last 64 KB of the stream kept for what comes
	after the message.  Data lines cannot hold "\r\n.\r\n" (a line "."
	is stuffed), so its first occurrence ends the message."""

	KEEP = 65536

	def __init__(self, before):
		self.before = before		# status lines up to RETR's
		self.lines = []
		self.buf = b""
		self.in_data = False
		self.total = 0			# octets after RETR's status line
		self.dots = 0			# "\r\n." in them, CRLF before
		self.prev = b"\r\n"
		self.tail = b"\r\n"
		self.head = b""

	def __call__(self, chunk):
		if not self.in_data:
			self.buf += chunk
			while len(self.lines) < self.before and b"\n" in self.buf:
				ln, self.buf = self.buf.split(b"\n", 1)
				self.lines.append(ln + b"\n")
			if len(self.lines) < self.before:
				return
			self.in_data = True
			chunk, self.buf = self.buf, b""
		if len(self.head) < 4096:
			self.head += chunk[:4096]
		data = self.prev + chunk
		self.dots += data.count(b"\r\n.")
		self.prev = data[-2:]
		self.total += len(chunk)
		if len(chunk) >= self.KEEP:
			self.tail = chunk[-self.KEEP:]
		else:
			self.tail = (self.tail + chunk)[-self.KEEP:]

	def finish(self):
		"""(unstuffed octets of the message, its last octets, what came
		after its final ".")."""
		pos = self.tail.find(b"\r\n.\r\n")
		assert pos >= 0, self.tail[-300:]
		stuffed = self.total - (len(self.tail) - (pos + 2))
		dots = self.dots - self.tail[pos:].count(b"\r\n.")
		return (stuffed - dots, self.tail[max(0, pos - 4096):pos + 2],
		    self.tail[pos + 5:])


def test_2gb_message(pop3, bound):
	"""One message of 2 GiB + 4 KiB (a sparse file: a line of 2 GiB of
	NULs): LIST's size is what RETR sends, counted on the fly, with
	memory that does not depend on the size; TOP sends the header."""
	head = b"Subject: huge\n\nline\n.dot\n"
	tail = b"\n.tail\nend"
	size = 2 ** 31 + 4096
	path = pop3.mailbox()
	with open(path, "wb") as f:
		f.write(FROM_LINE + b"\n" + head)
		f.seek(size - len(tail))
		f.write(tail)
	os.chmod(path, 0o600)
	if ROOT:
		os.chown(path, NOBODY, NOBODY)
	want = size - len(FROM_LINE) - 1 + (head + tail).count(b"\n") + 2
	st = os.stat(path)
	counter = RetrCounter(before=5)
	res = run(pop3, login() + ["LIST 1", "RETR 1", "TOP 1 1", "QUIT"],
	    sink=counter, timeout=240)
	assert res.rc == OK, res
	assert res.rss is not None and res.rss <= bound(), res
	lines = [ln.decode() for ln in counter.lines]
	assert lines[3] == "+OK 1 %d\r\n" % want, lines
	assert lines[4].startswith("+OK %d octets" % want), lines
	got, last, after = counter.finish()
	assert got == want, (got, want)
	assert counter.head.startswith(b"Subject: huge\r\n\r\nline\r\n..dot\r\n"
	    b"\x00\x00"), counter.head[:100]
	assert last.endswith(b"\x00\r\n..tail\r\nend\r\n"), last[-50:]
	rest = Transcript(["TOP 1 1", "QUIT"], b"+OK greeting\r\n" + after,
	    b"", res.rc, 0)
	assert len(rest) == 2, rest
	assert rest[0].ok and rest[0].data == expected_top(head, 1), rest
	assert rest[1].ok, rest
	st2 = os.stat(path)
	assert (st2.st_size, st2.st_mtime_ns, st2.st_ino) == (st.st_size,
	    st.st_mtime_ns, st.st_ino)


def test_rss_past_a_power_of_two(pop3, bound):
	"""262,145 messages (2^18 + 1), the count at which a table sized to a
	power of two would be largest for the messages it holds (the twins'
	table of the index was, for a while): a login and STAT stay under the
	memory bound, and STAT counts them all."""
	n = (1 << 18) + 1
	pop3.write_mbox([b"Subject: %d\n\n%d\n" % (i, i) for i in range(n)])
	res = run(pop3, login() + ["STAT", "QUIT"], timeout=120)
	check(res, bound, OK, messages=n)
	assert res.t[2].text.startswith("+OK %d " % n), res.t[2]


def test_200000_tiny_messages(pop3, bound):
	"""200,000 messages: STAT, LIST, UIDL of all, RETR of the last, and
	an update that deletes every 1000th; memory per message stays a small
	record."""
	n = 200000
	msgs = [b"Subject: %d\n\n%d\n" % (i, i) for i in range(n)]
	data = pop3.write_mbox(msgs)
	dele = list(range(1, n + 1, 1000))
	cmds = login() + ["STAT", "LIST", "UIDL", "RETR %d" % n] + \
	    ["DELE %d" % i for i in dele] + ["STAT", "QUIT"]
	res = run(pop3, cmds, timeout=120)
	check(res, bound, OK, messages=n)
	t = res.t
	assert len(t) == len(cmds), res
	assert all(r.ok for r in t.replies), [r for r in t.replies if
	    not r.ok][:3]
	total = sum(len(expected_retr(m)) for m in msgs)
	assert t[2].text.startswith("+OK %d %d" % (n, total)), t[2]
	lst = t[3].lines
	assert len(lst) == n
	assert lst[7] == "8 %d" % len(expected_retr(msgs[7]))
	uids = [ln.split(" ", 1)[1] for ln in t[4].lines]
	assert len(uids) == n and len(set(uids)) == n
	assert all(0 < len(u) <= 70 and all(0x21 <= ord(c) <= 0x7e for c in u)
	    for u in uids)
	assert t[5].data == expected_retr(msgs[-1])
	gone = set(i - 1 for i in dele)
	assert pop3.read_mbox() == mbox([m for i, m in enumerate(msgs)
	    if i not in gone])


def test_lines_of_10mb(pop3, bound):
	"""Lines of 10 MB: plain, starting with ".", of bare CRs, and the
	last without a newline: sizes, RETR octets and stuffing exact; memory
	does not grow with the line."""
	L = 10 * MB
	msgs = [b"Subject: long\n\n" + b"x" * L + b"\nshort\n",
	    b"Subject: dot\n\n." + b"d" * L + b"\n.\n",
	    b"Subject: cr\n\n" + b"\r" * L + b"\n",
	    b"Subject: header line of 10 MB " + b"h" * L + b"\n\nbody\n",
	    b"Subject: last\n\n" + b"e" * L]
	data = pop3.write_mbox(mbox(msgs, final_newline=False))
	cmds = login() + ["LIST"] + ["RETR %d" % (i + 1) for i in
	    range(len(msgs))] + ["TOP 4 0", "TOP 2 1", "QUIT"]
	res = run(pop3, cmds, timeout=120)
	check(res, bound, OK)
	t = res.t
	assert len(t) == len(cmds), res
	sizes = [int(ln.split()[1]) for ln in t[2].lines]
	for i, m in enumerate(msgs):
		want = expected_retr(m)
		assert sizes[i] == len(want), i
		assert t[3 + i].data == want, i
	assert t[8].data == expected_top(msgs[3], 0)
	assert t[9].data == expected_top(msgs[1], 1)
	assert pop3.read_mbox() == data


def _garbage(rnd, n):
	return rnd.randbytes(n).replace(b"From ", b"Fr0m ")


def test_binary_garbage(pop3, bound):
	"""Random octets (NUL, CR, 8-bit, "\\n\\n", lines starting with ".")
	between real From_ lines: every message is sent exactly, its size
	is what RETR sends; DELE and QUIT remove exactly the deleted ones."""
	rnd = random.Random(7)
	msgs = []
	for i in range(40):
		g = _garbage(rnd, rnd.choice([0, 1, 2, 3, 100, 5000, 70000]))
		g = g.replace(b"\n", b"\n." if i % 3 == 0 else b"\n")
		msgs.append(b"Subject: g%d\n\n" % i + g)
	# A separator only before the next From_ line: the garbage may end
	# in anything but must not end in an empty line of its own.
	msgs = [m + b"x\n" for m in msgs]
	data = pop3.write_mbox(msgs)
	cmds = login() + ["LIST"] + ["RETR %d" % (i + 1) for i in
	    range(len(msgs))] + ["DELE 2", "DELE 40", "QUIT"]
	res = run(pop3, cmds)
	check(res, bound, OK)
	t = res.t
	assert len(t) == len(cmds), res
	sizes = [int(ln.split()[1]) for ln in t[2].lines]
	assert len(sizes) == len(msgs), res
	for i, m in enumerate(msgs):
		assert t[3 + i].data == expected_retr(m), i
		assert sizes[i] == len(t[3 + i].data), i
	assert pop3.read_mbox() == mbox(msgs[:1] + msgs[2:39])


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_pure_garbage(pop3, bound, seed):
	"""A mailbox of random octets after a From_ line (From_ lines may be
	anywhere in it): a reply to every command, sizes equal RETR octets."""
	rnd = random.Random(seed)
	g = bytearray(_garbage(rnd, 300000))
	for _ in range(50):		# some boundaries and near-boundaries
		k = rnd.randrange(len(g))
		g[k:k] = rnd.choice([b"\n\n" + FROM_LINE + b"\n",
		    b"\n\nFrom x\n", b"\n\r\nFrom a Mon Jan  1 00:00 1970\r\n",
		    b"\n.\n", b"\r\n.\r\n"])
	data = pop3.write_mbox(FROM_LINE + b"\n" + bytes(g))
	res = run(pop3, login() + ["STAT", "QUIT"])
	check(res, bound, OK)
	n = int(res.t[2].text.split()[1])
	cmds = login() + ["LIST"] + ["RETR %d" % (i + 1) for i in range(n)] + \
	    ["UIDL", "QUIT"]
	res = run(pop3, cmds)
	check(res, bound, OK)
	t = res.t
	assert len(t) == len(cmds) and all(r.ok for r in t.replies), res
	sizes = [int(ln.split()[1]) for ln in t[2].lines]
	for i in range(n):
		assert sizes[i] == len(t[3 + i].data), i
	assert pop3.read_mbox() == data


def test_too_many_messages(pop3, bound):
	"""MD_MAX_MESSAGES + 1 messages: -ERR [SYS/PERM] and a log line, not
	a crash; the file stays as it is."""
	n = LIMITS["MD_MAX_MESSAGES"] + 1
	one = b"From a Mon Jan  1 00:00 2001\n\n"
	data = pop3.write_mbox(one * n)
	res = run(pop3, login() + ["STAT", "QUIT"], timeout=120)
	check(res, bound, LIMITS["POP3_EX_CONFIG"], messages=n)
	assert res.t[1].text.startswith("-ERR [SYS/PERM]"), res
	assert "more than %d messages" % LIMITS["MD_MAX_MESSAGES"] in res.err, \
	    res
	assert pop3.read_mbox() == data


def _fuzz_mailboxes():
	"""The mailboxes of the fuzz_mbox seeds and saved findings."""
	root = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..",
	    "fuzz")
	out = []
	for d in ("regress/mbox", "corpus/mbox"):
		p = os.path.join(root, d)
		if os.path.isdir(p):
			out += [os.path.join(p, n) for n in sorted(os.listdir(p))]
	return out


def _expand(data):
	"""fuzz_mbox's filler tokens (fuzz/FUZZING.md), near enough: "\x01P a
	b" is a*4096+b octets of 1 KB lines, "\x01B k" fills up to about the
	end of the indexer's first read."""
	fill = (b"x" * 1023 + b"\n") * 2048
	out = bytearray()
	i = 0
	while i < len(data):
		if data[i] == 1 and data[i + 1:i + 2] == b"P" and i + 3 < len(data):
			out += fill[:data[i + 2] * 4096 + data[i + 3]]
			i += 4
		elif data[i] == 1 and data[i + 1:i + 2] == b"B" and \
		    i + 2 < len(data):
			want = 336000 - 8192 + 64 * data[i + 2]
			out += fill[:max(0, want - len(out))]
			i += 3
		else:
			out.append(data[i])
			i += 1
	return bytes(out)


@pytest.mark.parametrize("path", _fuzz_mailboxes(),
    ids=lambda p: os.path.basename(p))
def test_fuzz_mailboxes(pop3, bound, path):
	"""The fuzz_mbox seeds and findings (filler escapes expanded first),
	served by the real binary and checked against tests/refmbox.py: the
	message count, the total, each LIST size and each RETR are refmbox's
	and each TOP 0 starts its RETR; -ERR [SYS/PERM] for what refmbox
	finds is not an mbox."""
	with open(path, "rb") as f:
		data = pop3.write_mbox(_expand(f.read()))
	ref = refmbox.visible(data)
	if ref is None:
		res = run(pop3, login() + ["STAT", "QUIT"])
		check(res, bound, LIMITS["POP3_EX_CONFIG"])
		assert res.t[1].text.startswith("-ERR [SYS/PERM]"), res
		return
	n = len(ref)
	want = [refmbox.size(m) for _, m in ref]
	cmds = login() + ["STAT", "LIST"] + \
	    ["RETR %d" % (i + 1) for i in range(n)] + \
	    ["TOP %d 0" % (i + 1) for i in range(n)] + ["UIDL", "QUIT"]
	res = run(pop3, cmds)
	check(res, bound, OK)
	t = res.t
	assert len(t) == len(cmds) and all(r.ok for r in t.replies), res
	assert t[2].text.split()[1:3] == [str(n), str(sum(want))], res
	sizes = [int(ln.split()[1]) for ln in t[3].lines]
	assert sizes == want, res
	for i, (_, m) in enumerate(ref):
		assert t[4 + i].data == stored_retr(m), i
		assert sizes[i] == len(t[4 + i].data), i
		assert t[4 + i].data.startswith(t[4 + n + i].data), i
	assert pop3.read_mbox() == data


# ------------------------------------------------------------ limits

def test_limits_are_named():
	"""issue 7: the limits live in pop3d.h (and pop3d.8 documents them)."""
	for name in ("POP3_CMD_MAX", "POP3_LINE_MAX", "POP3_INBUF",
	    "POP3_AUTH_FAIL_MAX", "POP3_BAD_MAX", "POP3_TIMEOUT",
	    "POP3_SESSION_MAX", "MD_MAX_MESSAGES", "POP3_USER_MAX",
	    "POP3_UIDL_MAX"):
		assert name in LIMITS, name
	assert LIMITS["POP3_CMD_MAX"] == 255
	assert LIMITS["POP3_TIMEOUT"] >= 600
	assert LIMITS["POP3_SESSION_MAX"] > LIMITS["POP3_TIMEOUT"]
