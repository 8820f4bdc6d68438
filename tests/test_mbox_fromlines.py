"""The hidden pseudo-message (issue 11, part 4): only a pseudo-message
that a mail program wrote itself is hidden.

Expected values come from what the test wrote, never from the same pop3d
run.
"""

import re
import shutil
import subprocess

import pytest

from conftest import USER, PASSWORD, expected_retr, mbox, need

M1 = b"From: Bank <alerts@bank.example>\nSubject: statement\n\nready\n"
M2 = b"Subject: urgent\n\nconfirm your PIN at https://evil.example/\n"
M3 = b"From: carol@example.org\nSubject: three\n\nthe last one\n"
DATE = b"Sun Dec  6 01:04:05 2026"


def login():
	return ["USER " + USER, "PASS " + PASSWORD]


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


def serve(pop3, data, n):
	"""Writes data, runs STAT, RETR 1..n: checks STAT against n; returns
	the RETR outputs."""
	pop3.write_mbox(data)
	t = ok(pop3.run(login() + ["STAT"] +
	    ["RETR %d" % (i + 1) for i in range(n)] + ["QUIT"]))
	assert count(t, 2) == n, t
	return [t[3 + i].data for i in range(n)]


def _procmail(path, sender, msg):
	pm = shutil.which("procmail")
	need(pm, "procmail (tests/packages.txt)")
	subprocess.run([pm, "-f", sender, "-m", "DEFAULT=%s" % path,
	    "/dev/null"], input=msg, check=True, capture_output=True,
	    env={"PATH": "/usr/bin:/bin", "HOME": "/nonexistent"})


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
