"""Message boundaries and the hidden pseudo-message (issue 11, parts 1
and 4): every From_ line that a Debian MDA or a common MUA writes starts a
message, a body line that only looks like one does not, and only a
pseudo-message that a mail program wrote itself is hidden.

Expected values come from what the test wrote, or from tests/refmbox.py
(the documented rule, written independently of pop3d); never from the
same pop3d run.
"""

import os
import re
import shutil
import subprocess

import pytest

import refmbox
from conftest import expected_retr, login, mbox, need, stored_retr

M1 = b"From: Bank <alerts@bank.example>\nSubject: statement\n\nready\n"
M2 = b"Subject: urgent\n\nconfirm your PIN at https://evil.example/\n"
M3 = b"From: carol@example.org\nSubject: three\n\nthe last one\n"
DATE = b"Sun Dec  6 01:04:05 2026"

# (From_ line, the program that writes it).
FROM_LINES = [
	(b"From bob@example.org " + DATE, "exim4, sendmail, mutt, formail"),
	(b"From bob@example.org  " + DATE, "postfix local(8), procmail"),
	(b'From "x y"@evil.example  ' + DATE,
	    "procmail -f, postfix quote_822_local: a quoted local part"),
	(b'From "a\\"b  c"@x.example  ' + DATE,
	    "procmail -f: quote, backslash and two spaces in the local part"),
	(b"From bob@example.org Sun Dec  6 01:04:05 2026 -0500",
	    "UW c-client: numeric zone after the year"),
	(b"From  " + DATE, "an MDA given the null sender: empty sender"),
	(b"From   " + DATE, "procmail -f '': empty sender, three spaces"),
	(b"From MAILER-DAEMON  " + DATE, "postfix local(8): the null sender"),
	(b"From - " + DATE, "Thunderbird"),
	(b"From bob@example.org Sun Dec  6 01:04:05 PST 2026",
	    "zone name before the year (SysV mail)"),
	(b"From bob Fri Feb 29 23:59:59 MET DST 2008",
	    "two zone tokens before the year"),
	(b"From bob@example.org Sun Dec  6 01:04:05 2026 PST",
	    "c-client: zone name after the year"),
	(b"From bob@example.org Sun Dec  6 01:04:05 +0100 2026",
	    "c-client: numeric zone before the year"),
	(b"From bob Sun Dec  6 01:04:05 2026 remote from uucphost",
	    "UUCP rmail"),
	(b"From bob Sun Dec  6 01:04:05 remote from 2026",
	    "remote and from as the two zone tokens before the year (found "
	    "by a review: taken for a UUCP suffix only)"),
	(b"From bob Sun Dec  6 01:04:05 2026 remote from 2026",
	    "UUCP rmail, a host that looks like a year"),
	(b"From bob Sun Dec  6 01:04:05 2026 remote from uu\rcp",
	    "a CR in the host (any octets but blanks)"),
	(b"From bob Sun Dec  6 01:04:05 2026 remote from \r\r",
	    "a host that is a CR, then a CRLF line end"),
	(b"From bob@example.org Sun Dec  6 01:04 2026",
	    "old mailers: no seconds"),
	(b"From bob@example.org Wed Dec 16 01:04:05 2026", "two-digit day"),
	(b"From bob@example.org\tSun\tDec\t6\t01:04:05\t2026",
	    "RFC 4155: tabs as blanks"),
	(b"From bob@example.org " + DATE + b"  ", "trailing blanks"),
]

# Body lines after an empty line that are not From_ lines.
NOT_FROM_LINES = [
	(b"From here on we disagree", "prose"),
	(b"From bob@example.org", "a sender and no date"),
	(b"From bob@example.org Sun Dec  6 2026", "no time"),
	(b"From bob@example.org Sun Dec  6 01:04:05", "no year"),
	(b"From bob@example.org " + DATE + b" and more", "text after the date"),
	(b"From bob " + DATE + b" remote from", "remote from, no host"),
	(b"From bob Sun Dec  6 01:04:05 remote from host",
	    "remote from HOST, and no year before it"),
	(b"From bob Sun Dec  6 01:04:05 A B C 2026", "three zone tokens"),
	(b"From bob Sun Dec  6 01:04:05 MET DST 2026 PST",
	    "three zones, one after the year"),
	(b"From bob Sun Dec  6 01:04:05 2026 -0500 PST",
	    "two zones after the year"),
	(b"From bob Sun Dec  0 01:04:05 2026", "day 0"),
	(b"From bob Sun Dek  6 01:04:05 2026", "no such month"),
	(b"From bob sun Dec  6 01:04:05 2026", "lower-case weekday"),
	(b"From bob Sunday Dec  6 01:04:05 2026", "long weekday"),
	(b"From bob Sun Dec  6 1:4:05 2026", "one-digit minutes"),
	(b"From bob Sun Dec  6 01:04:05 20266", "five-digit year"),
	(b"From bob Sun Dec  6 01:04:05 LONGZONE 2026", "7-letter zone"),
	(b"From bob Sun Dec  6 01:04:05 +05 2026", "short numeric zone"),
	(b"From bob Dec  6 01:04:05 2026", "no weekday"),
	(b"From bobSun Dec  6 01:04:05 2026", "no blank before the weekday"),
	(b">From bob@example.org " + DATE, "escaped (mboxo)"),
	(b"From:bob@example.org " + DATE, "no space after From"),
]



def ok(t):
	assert t.greeting is not None and t.greeting.ok, t
	assert len(t.replies) == len(t.cmds), t
	for r in t.replies:
		assert r.ok, t
	return t


def count(t, i):
	m = re.match(r"\+OK (\d+) (\d+)(\s|$)", t[i].text)
	assert m, t
	return int(m.group(1))


def sizes(reply):
	return [int(ln.split()[1]) for ln in reply.lines]


def serve(pop3, data, n=None):
	"""Writes data, runs STAT, LIST, UIDL, RETR of every message: the
	count, each LIST size, each UIDL and each RETR are refmbox's (and the
	count n, if given); returns the RETR outputs."""
	pop3.write_mbox(data)
	ref = refmbox.visible(data)
	assert n is None or len(ref) == n, ref
	n = len(ref)
	t = ok(pop3.run(login() + ["STAT", "LIST", "UIDL"] +
	    ["RETR %d" % (i + 1) for i in range(n)] + ["QUIT"]))
	assert count(t, 2) == n, t[2]
	assert sizes(t[3]) == [refmbox.size(m) for _, m in ref]
	assert [ln.split()[1] for ln in t[4].lines] == refmbox.uidls(data)
	out = [t[5 + i].data for i in range(n)]
	for i, (_, m) in enumerate(ref):
		assert out[i] == stored_retr(m), i
	return out


@pytest.mark.parametrize("line,writer", FROM_LINES,
    ids=[w for _, w in FROM_LINES])
def test_from_line_is_a_boundary(pop3, line, writer):
	"""Between two ordinary messages: STAT 3, RETR 2 is exactly what was
	written after the line, the neighbours are untouched."""
	assert refmbox.is_from_line(line + b"\n"), writer
	data = mbox([M1, (line, M2), M3])
	r = serve(pop3, data, 3)
	assert r == [expected_retr(M1), expected_retr(M2), expected_retr(M3)]


@pytest.mark.parametrize("line,why", NOT_FROM_LINES,
    ids=[w for _, w in NOT_FROM_LINES])
def test_body_line_is_not_a_boundary(pop3, line, why):
	"""After an empty line in a body: still body text (STAT 2, RETR 1 has
	the line as written)."""
	assert not refmbox.is_from_line(line + b"\n"), why
	body = M1 + b"\n" + line + b"\nmore text\n"
	r = serve(pop3, mbox([body, M3]), 2)
	assert r == [expected_retr(body), expected_retr(M3)]


def test_from_line_not_after_empty_line(pop3):
	body = M1 + b"From bob@example.org " + DATE + b"\nmore\n"
	r = serve(pop3, mbox([body, M3]), 2)
	assert r[0] == expected_retr(body)


def test_crlf_mailbox(pop3):
	"""A CRLF file: "\\r\\n\\r\\n" separates; a CRLF body line that looks like
	a From_ line without a date does not."""
	body = M1 + b"\nFrom here on\n"
	msgs = [body, (b'From "x y"@evil.example  ' + DATE, M2),
	    (b"From bob Sun Dec  6 01:04:05 2026 -0500", M3)]
	data = mbox(msgs, nl=b"\r\n")
	r = serve(pop3, data, 3)
	assert r == [expected_retr(body, b"\r\n"), expected_retr(M2, b"\r\n"),
	    expected_retr(M3, b"\r\n")]


def test_from_line_at_the_end_of_the_file(pop3):
	"""A From_ line (with its LF) as the last line is an empty message;
	without its LF it is not a From_ line but the last line of a body."""
	line = b"From bob@example.org " + DATE
	r = serve(pop3, mbox([M1]) + line + b"\n", 2)
	assert r == [expected_retr(M1), b""]
	r = serve(pop3, mbox([M1]) + line, 1)
	assert r == [expected_retr(M1 + b"\n" + line)]


def _long_from(total):
	"""A From_ line of total octets with its LF (a long sender)."""
	head, tail = b"From ", b" " + DATE + b"\n"
	line = head + b"x" * (total - len(head) - len(tail)) + tail
	assert len(line) == total
	return line[:-1]


def test_from_line_length_limit(pop3):
	"""MD_FROM_MAX octets with the LF: a boundary; one more: body text."""
	mx = refmbox.FROM_MAX
	line = _long_from(mx)
	r = serve(pop3, mbox([M1, (line, M2), M3]), 3)
	assert r[1] == expected_retr(M2)
	line = _long_from(mx + 1)
	r = serve(pop3, mbox([M1, (line, M2), M3]), 2)
	assert r[0] == expected_retr(M1 + b"\n" + line + b"\n" + M2)


def test_first_line_length_limit(pop3):
	"""The first line: at most MD_FROM_MAX octets with its LF, or the
	file is not an mbox."""
	mx = refmbox.FROM_MAX
	pop3.write_mbox(mbox([(_long_from(mx), M1)]))
	t = ok(pop3.run(login() + ["STAT", "RETR 1", "QUIT"]))
	assert count(t, 2) == 1 and t[3].data == expected_retr(M1), t
	pop3.write_mbox(mbox([(_long_from(mx + 1), M1)]))
	t = pop3.run(login() + ["STAT", "QUIT"])
	assert t[1].err and t[1].text.startswith("-ERR [SYS/PERM]"), t


def test_fuzz_seeds_against_reference(pop3):
	"""Every plain fuzz_mbox seed: the message count and each LIST size
	are refmbox's, and each RETR is refmbox's octets."""
	d = os.path.join(os.path.dirname(__file__), "..", "fuzz", "corpus",
	    "mbox")
	for name in sorted(os.listdir(d)):
		with open(os.path.join(d, name), "rb") as f:
			data = f.read()
		if b"\x01" in data:
			continue	# filler escapes: not a plain file
		if refmbox.boundaries(data) is None:
			pop3.write_mbox(data)
			t = pop3.run(login() + ["STAT", "QUIT"])
			assert t[1].err, (name, t)
			continue
		serve(pop3, data)


# ------------------------------------------------------------ procmail

def _procmail(path, sender, msg):
	pm = shutil.which("procmail")
	need(pm, "procmail (tests/packages.txt)")
	subprocess.run([pm, "-f", sender, "-m", "DEFAULT=%s" % path,
	    "/dev/null"], input=msg, check=True, capture_output=True,
	    env={"PATH": "/usr/bin:/bin", "HOME": "/nonexistent"})


@pytest.mark.parametrize("sender", ['"x y"@evil.example',
    '"a\\"b  c"@x.example', '"  "@x.example', "", "plain@example.org"])
def test_procmail_deliveries(pop3, tmp_path, sender):
	"""Three real procmail deliveries, the middle one from sender: three
	messages, each exactly what was piped in."""
	m = tmp_path / "mbox"
	for s, msg in (("alerts@bank.example", M1), (sender, M2),
	    ("carol@example.org", M3)):
		_procmail(m, s, msg)
	data = m.read_bytes()
	r = serve(pop3, data, 3)
	assert r == [expected_retr(M1), expected_retr(M2), expected_retr(M3)]
	ok(pop3.run(login() + ["DELE 1", "QUIT"]))
	assert refmbox.visible(pop3.read_mbox()) == refmbox.visible(data)[1:]


# ------------------------------------------------------------ pseudo-message

PSEUDO_UW = (b"Date: Sun, 06 Dec 2026 01:04:05 +0000\n"
    b"From: Mail System Internal Data <MAILER-DAEMON@example.org>\n"
    b"Subject: DON'T DELETE THIS MESSAGE -- FOLDER INTERNAL DATA\n"
    b"Message-ID: <1796519045@example.org>\n"
    b"X-IMAP: 1796519045 0000000003\nStatus: RO\n\n"
    b"This text is part of the internal format of your mail folder, "
    b"and is not\na real message.  It is created automatically by the "
    b"mail system software.\n")
PSEUDO_DOVECOT = PSEUDO_UW.replace(b"X-IMAP: ", b"X-IMAPbase: ")
DAEMON = b"From MAILER-DAEMON " + DATE


@pytest.mark.parametrize("frm,pseudo", [(DAEMON, PSEUDO_UW),
    (b"From MAILER-DAEMON  " + DATE, PSEUDO_DOVECOT)], ids=["uw", "dovecot"])
def test_pseudo_message_written_by_a_mail_program_is_hidden(pop3, frm,
    pseudo):
	data = mbox([(frm, pseudo), M1, M3])
	r = serve(pop3, data, 2)
	assert r == [expected_retr(M1), expected_retr(M3)]
	ok(pop3.run(login() + ["DELE 1", "DELE 2", "QUIT"]))
	assert pop3.read_mbox() == mbox([(frm, pseudo)])


@pytest.mark.parametrize("at,hidden", [(64 * 1024 - 100, True),
    (64 * 1024, False)], ids=["x-imap-within", "x-imap-past"])
def test_pseudo_message_marks_within_the_first_64k(pop3, at, hidden):
	"""The marks are looked for in the first 64 KiB of the header (the
	octets a UIDL is made from; found undocumented by a review of the
	parser): an X-IMAP field that begins 100 octets before that makes
	the message the hidden one, one that begins just past it does not
	(listed), as the reference parser says."""
	head = PSEUDO_UW.split(b"\n\n")[0].replace(b"X-IMAP: 1796519045 "
	    b"0000000003\n", b"")
	pad = at - len(head) - 1 - len(b"X-Long: \n")
	pseudo = head + b"\nX-Long: " + b"a" * pad + (b"\nX-IMAP: 1 2\n\n"
	    b"data\n")
	assert pseudo.index(b"X-IMAP: ") == at
	data = mbox([(DAEMON, pseudo), M1])
	assert len(refmbox.visible(data)) == (1 if hidden else 2)
	pop3.write_mbox(data)
	t = ok(pop3.run(login() + ["STAT", "QUIT"]))
	assert t[2].text.startswith("+OK %d " % (1 if hidden else 2)), t


def test_remote_from_needs_a_host(pop3):
	"""A date followed by "remote from" and nothing else is no From_ line
	(the host is missing; the reference parser took the CR of a CRLF line
	for one: found by a review), LF or CRLF: one message."""
	for nl in (b"\n", b"\r\n"):
		line = b"From bob@example.org " + DATE + b" remote from " + nl
		assert not refmbox.is_from_line(line)
		data = mbox([M1]) + b"\n" + line + b"Subject: x\n\nbody\n"
		assert len(refmbox.visible(data)) == 1
		pop3.write_mbox(data)
		t = ok(pop3.run(login() + ["STAT", "QUIT"]))
		assert t[2].text.startswith("+OK 1 "), t


# A delivery that carries the marks: what an MTA adds to it, or its sender.
PLANTED = [
	(DAEMON, b"Received: from evil.example by mx.example.org; " +
	    DATE + b"\n" + PSEUDO_UW, "received"),
	(DAEMON, b"Return-Path: <>\n" + PSEUDO_UW, "return-path"),
	(DAEMON, b"Delivered-To: alice@example.org\n" + PSEUDO_DOVECOT,
	    "delivered-to"),
	(DAEMON, PSEUDO_UW.replace(b"\nStatus: RO\n",
	    b"\nReceived: by mx.example.org\nStatus: RO\n"), "received-last"),
	(b'From "x y"@evil.example  ' + DATE, PSEUDO_UW, "sender"),
	(b"From MAILER-DAEMON@evil.example " + DATE, PSEUDO_UW,
	    "sender-domain"),
	(DAEMON, PSEUDO_UW.replace(b"Subject: DON'T", b"Subject:\rDON'T"),
	    "subject-after-a-cr"),
]


@pytest.mark.parametrize("frm,pseudo,why", PLANTED,
    ids=[w for _, _, w in PLANTED])
def test_planted_pseudo_message_is_an_ordinary_message(pop3, frm, pseudo,
    why):
	"""Into an empty mailbox: listed, retrievable and deletable."""
	data = mbox([(frm, pseudo), M1])
	r = serve(pop3, data, 2)
	assert r == [expected_retr(pseudo), expected_retr(M1)], why
	ok(pop3.run(login() + ["DELE 1", "QUIT"]))
	assert pop3.read_mbox() == mbox([M1]), why


def test_planted_pseudo_message_through_procmail(pop3, tmp_path):
	"""The issue's attack: a delivery with the marks from an outside
	sender, with the Received field its MTA adds, is message 1."""
	m = tmp_path / "mbox"
	planted = b"Received: from evil.example by mx.example.org\n" + PSEUDO_UW
	_procmail(m, "MAILER-DAEMON", planted)
	_procmail(m, "alerts@bank.example", M1)
	r = serve(pop3, m.read_bytes(), 2)
	assert r == [expected_retr(planted), expected_retr(M1)]


def _variants():
	"""From_ lines and near misses: the tokens of real ones, dropped,
	doubled, swapped, cut or changed one at a time (a fixed seed)."""
	import random
	rnd = random.Random(11)
	toks = [b"Sun", b"Dec", b"6", b"01:04:05", b"PST", b"2026", b"-0500",
	    b"remote", b"from", b"uucp", b"MET", b"DST", b"01:04", b"31", b"0",
	    b"Mon", b"Jan", b'"x', b'y"@e', b"-", b"24:61", b"20266", b"+01",
	    b"ABCDEFG", b"\r"]
	base = [ln.split(b" ", 1)[1].split() for ln, _ in FROM_LINES]
	out = []
	for _ in range(600):
		t = list(rnd.choice(base))
		for _ in range(rnd.randint(1, 2)):
			k = rnd.randrange(len(t) + 1)
			op = rnd.randrange(4)
			if op == 0 and t:
				del t[min(k, len(t) - 1)]
			elif op == 1:
				t.insert(k, rnd.choice(toks))
			elif op == 2 and len(t) > 1:
				i = min(k, len(t) - 2)
				t[i], t[i + 1] = t[i + 1], t[i]
			elif t:
				t[min(k, len(t) - 1)] = rnd.choice(toks)
		sep = rnd.choice([b" ", b"  ", b"\t"])
		out.append(b"From " + sep.join(t))
	return out


def test_variants_against_reference(pop3):
	"""600 lines near the rule, each after an empty line: pop3d's count,
	LIST sizes and RETR octets are refmbox's (two implementations of the
	documented rule, one regular expression and one token walk)."""
	lines = _variants()
	data = mbox([M1] + [b"Subject: %d\n\nbody\n\n%s\nafter\n" % (i, ln)
	    for i, ln in enumerate(lines)])
	split = sum(refmbox.is_from_line(ln + b"\n") for ln in lines)
	assert 50 < split < 550, split	# both sides are exercised
	serve(pop3, data, 1 + len(lines) + split)
