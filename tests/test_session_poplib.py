"""The core session over a real TCP socket, as inetd gives it to pop3d,
driven by Python's poplib (a real client) and by raw socket writes."""

import os
import poplib
import signal
import socket
import time

import pytest

from conftest import (LIMITS, PASSWORD, USER, expected_retr, expected_top,
    login, mbox)

M1 = b"From: bob@example.org\nSubject: one\n\nFirst.\n.\n..dots\n"
M2 = b"From: carol@example.org\nSubject: two\n\n" + b"".join(
    b"line %d\n" % i for i in range(50))
BIG = b"Subject: big\n\n" + b"".join(b"%07d %s\n" % (i, b"z" * 70) for i in
    range(40000))			# about 3 MB: many socket writes
MSGS = [M1, M2, BIG]


def connect(pop3, *extra, **kw):
	d = pop3.inetd(*extra, **kw)
	c = poplib.POP3("127.0.0.1", d.port, timeout=20)
	return d, c


def lines(msg):
	"""What poplib returns for a message: un-stuffed lines without CRLF."""
	return expected_retr(msg).split(b"\r\n")[:-1]


def test_poplib_full_session(pop3):
	pop3.write_mbox(MSGS)
	d, c = connect(pop3)
	assert c.getwelcome().startswith(b"+OK")
	caps = c.capa()
	for cap in ("TOP", "USER", "UIDL", "PIPELINING", "RESP-CODES"):
		assert cap in caps, caps
	assert c.user(USER).startswith(b"+OK")
	assert c.pass_(PASSWORD).startswith(b"+OK")
	assert "UIDL" in c.capa()
	sizes = [len(expected_retr(m)) for m in MSGS]
	assert c.stat() == (3, sum(sizes))
	resp, listing, _ = c.list()
	assert resp.startswith(b"+OK")
	assert listing == [b"%d %d" % (i + 1, s) for i, s in enumerate(sizes)]
	assert c.list(2).split()[1:3] == [b"2", b"%d" % sizes[1]]
	_, uids, _ = c.uidl()
	assert [u.split()[0] for u in uids] == [b"1", b"2", b"3"]
	assert c.uidl(3).split()[1:3] == uids[2].split()
	for i, m in enumerate(MSGS):
		resp, got, octets = c.retr(i + 1)
		assert got == lines(m), i + 1
		assert octets == sizes[i]		# poplib counts un-stuffed
	resp, got, octets = c.top(2, 3)
	assert got == expected_top(M2, 3).split(b"\r\n")[:-1]
	assert c.noop().startswith(b"+OK")
	assert c.dele(1).startswith(b"+OK")
	with pytest.raises(poplib.error_proto):
		c.retr(1)
	assert c.rset().startswith(b"+OK")
	assert c.stat()[0] == 3
	assert c.dele(2).startswith(b"+OK")
	assert c.quit().startswith(b"+OK")
	assert d.wait() == LIMITS["POP3_EX_OK"]
	assert pop3.read_mbox() == mbox([M1, BIG])


def test_poplib_errors(pop3):
	data = pop3.write_mbox(MSGS)
	d, c = connect(pop3)
	with pytest.raises(poplib.error_proto, match=r"-ERR"):
		c.stat()				# not logged in
	c.user(USER)
	with pytest.raises(poplib.error_proto, match=r"^b'-ERR \[AUTH\]"):
		c.pass_("not the password")
	c.user(USER)
	c.pass_(PASSWORD)
	for bad in ("0", "4", "-1", "1x", "18446744073709551617"):
		with pytest.raises(poplib.error_proto):
			c.retr(bad)
		with pytest.raises(poplib.error_proto):
			c.dele(bad)
	with pytest.raises(poplib.error_proto):
		c.user(USER)				# wrong state
	assert c.stat()[0] == 3
	c.close()				# EOF without QUIT
	assert d.wait() == LIMITS["POP3_EX_CLOSED"]
	assert pop3.read_mbox() == data


def test_poplib_in_use(pop3):
	pop3.write_mbox(MSGS)
	d1, c1 = connect(pop3)
	c1.user(USER)
	c1.pass_(PASSWORD)
	c1.dele(3)
	d2, c2 = connect(pop3)
	c2.user(USER)
	t0 = time.monotonic()
	with pytest.raises(poplib.error_proto, match=r"\[IN-USE\]"):
		c2.pass_(PASSWORD)
	assert time.monotonic() - t0 < 10
	assert d2.wait() == LIMITS["POP3_EX_TEMPFAIL"]
	assert c1.retr(1)[1] == lines(M1)
	assert c1.quit().startswith(b"+OK")
	assert d1.wait() == 0
	assert pop3.read_mbox() == mbox([M1, M2])


def test_three_failures_close_the_connection(pop3):
	d, c = connect(pop3)
	for i in range(LIMITS["POP3_AUTH_FAIL_MAX"]):
		c.user(USER)
		with pytest.raises(poplib.error_proto, match=r"\[AUTH\]"):
			c.pass_("bad %d" % i)
	with pytest.raises((poplib.error_proto, OSError, EOFError)):
		c.user(USER)
	assert d.wait() == LIMITS["POP3_EX_NOUSER"]


def raw_session(pop3, payload, *extra, shut=True):
	"""Writes payload in one send, half-closes, reads everything."""
	d = pop3.inetd(*extra)
	s = socket.create_connection(("127.0.0.1", d.port), timeout=20)
	s.sendall(payload)
	if shut:
		s.shutdown(socket.SHUT_WR)
	out = []
	while True:
		b = s.recv(65536)
		if not b:
			break
		out.append(b)
	s.close()
	return d, b"".join(out)


def test_pipelining_over_a_socket(pop3):
	pop3.write_mbox(MSGS)
	cmds = login() + ["STAT", "RETR 3", "LIST",
	    "RETR 1", "DELE 2", "UIDL", "QUIT"]
	payload = b"".join(c.encode() + b"\r\n" for c in cmds)
	d, out = raw_session(pop3, payload)
	from conftest import parse_replies
	g, reps, rest = parse_replies(out, cmds)
	assert g.ok and len(reps) == len(cmds) and rest == b"", (reps, rest)
	assert all(r.ok for r in reps), reps
	assert reps[3].data == expected_retr(BIG)
	assert reps[5].data == expected_retr(M1)
	assert d.wait() == 0
	assert pop3.read_mbox() == mbox([M1, BIG])


def test_client_vanishes_during_retr(pop3):
	"""A client that disconnects in the middle of a big RETR: the server
	exits, and nothing is deleted."""
	data = pop3.write_mbox(MSGS)
	d = pop3.inetd()
	s = socket.create_connection(("127.0.0.1", d.port), timeout=20)
	s.sendall(("USER %s\r\nPASS %s\r\nDELE 1\r\nRETR 3\r\n" %
	    (USER, PASSWORD)).encode())
	got = b""
	while len(got) < 100000:
		b = s.recv(65536)
		assert b, got[-300:]
		got += b
	s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\1\0\0\0\0\0\0\0")
	s.close()				# RST
	assert d.wait(20) != 0
	assert pop3.read_mbox() == data
	assert pop3.spool_files() == [USER]


def pipelined_retr_dele_quit(pop3, reset, user=USER, password=PASSWORD):
	"""Logs in over TCP, then sends RETR 1, DELE 1 and QUIT in one write;
	reset: with pop3d stopped (SIGSTOP) from before the write until the
	connection is reset (SO_LINGER 0), as a busy machine may hold it, so
	that the three wait for it with their replies unsent.  pop3d's exit
	status and what the client got after the login."""
	d = pop3.inetd()
	s = socket.create_connection(("127.0.0.1", d.port), timeout=20)
	f = s.makefile("rb")
	s.sendall(("USER %s\r\nPASS %s\r\n" % (user, password)).encode())
	for _ in range(3):
		assert f.readline().startswith(b"+OK"), "login"
	if reset:
		d.started.wait(5)
		os.kill(d.proc.pid, signal.SIGSTOP)
	s.sendall(b"RETR 1\r\nDELE 1\r\nQUIT\r\n")
	got = b""
	if reset:
		s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
		    b"\1\0\0\0\0\0\0\0")
		f.close()
		s.close()			# RST
		time.sleep(0.3)
		os.kill(d.proc.pid, signal.SIGCONT)
	else:
		got = f.read()
		f.close()
		s.close()
	return d.wait(20), got


def test_reset_before_a_pipelined_quit_deletes_nothing(pop3):
	"""RETR 1, DELE 1, QUIT pipelined, and the connection reset before
	pop3d wrote a reply: the message never reached the client, so the
	QUIT deletes nothing (the replies are written before the update, and
	their write fails); the session ends as for any failed write.  Read
	to the end, the same three delete message 1."""
	data = pop3.write_mbox(MSGS)
	rc, _ = pipelined_retr_dele_quit(pop3, True)
	assert rc == LIMITS["POP3_EX_CLOSED"]
	assert pop3.read_mbox() == data
	assert pop3.spool_files() == [USER]
	rc, got = pipelined_retr_dele_quit(pop3, False)
	assert rc == LIMITS["POP3_EX_OK"], got
	retr, _, rest = got.partition(b"\r\n.\r\n")
	assert retr.startswith(b"+OK ") and [ln[:4] for ln in
	    rest.split(b"\r\n")] == [b"+OK ", b"+OK ", b""], got
	assert pop3.read_mbox() == mbox(MSGS[1:])


def test_idle_timeout_over_socket(pop3):
	data = pop3.write_mbox(MSGS)
	d, c = connect(pop3, "-t", "2")
	c.user(USER)
	c.pass_(PASSWORD)
	c.dele(1)
	t0 = time.monotonic()
	assert d.wait(15) == LIMITS["POP3_EX_CLOSED"]
	assert 1.5 <= time.monotonic() - t0 < 10
	assert pop3.read_mbox() == data
