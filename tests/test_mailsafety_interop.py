"""Sharing the spool with Debian's mail programs (issue 4): delivery during
a session with procmail and with dotlockfile + an fcntl appender, a
mailbox rewritten under a session by a MUA, dotlocks held by others and
stale ones.  The MDAs run as the same uid as pop3d (65534 when root)."""

import os
import subprocess
import time

import pytest

from conftest import FROM_LINE, LIMITS, USER, expected_retr, mbox, parse_mbox
from mailsafety import (DOTLOCK, Run, as_nobody, census, describe,
    dotlock_append, fault_binary, mda_env, mua_rewrite, procmail_deliver,
    procmail_rc)
from messages import FOUR, message, numbered


def delivered(m):
	"""What an MDA is given: the From_ line and the message."""
	return FROM_LINE + b"\n" + m


# ------------------------------------------------------------ delivery

def deliver_during_session(pop3, deliver):
	"""Login, STAT; three deliveries while the session is open, each
	finished long before any lock timeout and while pop3d still runs;
	DELE 1, DELE 3, QUIT: the update removes exactly those two and keeps
	the new mail byte-identical after the kept messages."""
	pop3.write_mbox(FOUR)
	new = numbered(3, tag="new")
	with Run(pop3) as r:
		assert r.login().ok, r.log
		assert r.cmd("STAT").text.startswith("+OK 4 "), r.log
		for m in new:
			t0 = time.monotonic()
			deliver(pop3, delivered(m))
			took = time.monotonic() - t0
			assert took < 3, "delivery took %.1f s: it waited for " \
			    "the session" % took
			assert r.s.proc.poll() is None, "the session is gone"
		# The session still sees what it indexed at login.
		assert r.cmd("STAT").text.startswith("+OK 4 "), r.log
		assert r.cmd("RETR 4").data == expected_retr(FOUR[3])
		assert r.cmd("DELE 1").ok and r.cmd("DELE 3").ok
		q = r.cmd("QUIT")
		rc = r.close()
	assert q is not None and q.ok and rc == 0, r.log + r.stderr
	want = mbox([FOUR[1], FOUR[3]] + new)
	data = pop3.read_mbox()
	assert census(data) == census(want), describe(data)
	assert data == want
	assert pop3.spool_files() == [USER]
	# And the next session serves the new mail as delivered.
	t = pop3.run(pop3.login_cmds() + ["RETR 3", "RETR 5", "QUIT"])
	assert t[2].data == expected_retr(new[0]), t
	assert t[3].data == expected_retr(new[2]), t


def test_procmail_delivers_during_session(pop3):
	rc = procmail_rc(pop3)
	deliver_during_session(pop3, lambda p, d: procmail_deliver(p, rc, d))


def test_dotlockfile_and_fcntl_appender_deliver_during_session(pop3):
	# The appender writes the mbox record: the message and the empty
	# separator line (procmail adds that itself).
	deliver_during_session(pop3, lambda p, d: dotlock_append(p,
	    d + b"\n"))


def test_delivery_between_dele_and_quit_is_kept(pop3):
	"""Mail that procmail delivers after the DELEs, right before QUIT."""
	rc = procmail_rc(pop3)
	pop3.write_mbox(FOUR)
	late = message(9, tag="late")
	with Run(pop3) as r:
		assert r.login().ok
		for n in (1, 2, 3, 4):
			assert r.cmd("DELE %d" % n).ok
		procmail_deliver(pop3, rc, delivered(late))
		q = r.cmd("QUIT")
		r.close()
	assert q.ok, r.log + r.stderr
	assert pop3.read_mbox() == mbox([late])


# ------------------------------------------------------------ rewritten

def rewrite_during_session(pop3, original, rewritten, cmds):
	"""Login on original, a MUA rewrites the mailbox to rewritten under
	the locks, then cmds: returns (run, replies)."""
	pop3.write_mbox(original)
	reps = []
	with Run(pop3) as r:
		assert r.login().ok, r.log
		mua_rewrite(pop3, rewritten)
		for c in cmds:
			rep = r.cmd(c)
			reps.append(rep)
			if rep is None:
				break
		r.close()
	return r, reps


def test_rewritten_mailbox_nothing_deleted_at_quit(pop3):
	"""A MUA deletes message 2 while the session is open; the session
	deletes message 1: -ERR [SYS/TEMP] at QUIT and nothing deleted (the
	mailbox is as the MUA left it)."""
	gone2 = mbox([FOUR[0], FOUR[2], FOUR[3]])
	r, reps = rewrite_during_session(pop3, mbox(FOUR), gone2,
	    ["DELE 1", "QUIT"])
	assert reps[0].ok, r.log
	q = reps[1]
	assert q is not None and q.text.startswith("-ERR [SYS/TEMP]"), \
	    r.log + r.stderr
	assert r.rc == LIMITS["POP3_EX_TEMPFAIL"], r.rc
	assert "changed" in r.stderr, r.stderr
	assert pop3.read_mbox() == gone2
	assert pop3.spool_files() == [USER]


@pytest.mark.parametrize("n", [1, 2, 3, 4])
def test_rewritten_mailbox_retr_never_serves_wrong_bytes(pop3, n):
	"""After the MUA deleted message 2, RETR n sends message n exactly as
	indexed or -ERR; never another message's octets."""
	gone2 = mbox([FOUR[0], FOUR[2], FOUR[3]])
	r, reps = rewrite_during_session(pop3, mbox(FOUR), gone2,
	    ["RETR %d" % n, "QUIT"])
	rep = reps[0]
	assert rep is not None, r.log
	if rep.ok:
		assert rep.data == expected_retr(FOUR[n - 1]), (n, rep.data)
	else:
		assert "[SYS/TEMP]" in rep.text, r.log
	assert pop3.read_mbox() == gone2


def test_rewritten_mailbox_grown_by_more_mail(pop3):
	"""The MUA deletes message 2 and new mail arrives, so the file is no
	shorter than at login: RETR of the moved messages still never sends
	wrong octets; QUIT after DELE: -ERR [SYS/TEMP], nothing deleted."""
	more = numbered(3, tag="more")
	grown = mbox([FOUR[0], FOUR[2], FOUR[3]] + more)
	assert len(grown) >= len(mbox(FOUR))
	for n in (2, 3, 4):
		r, reps = rewrite_during_session(pop3, mbox(FOUR), grown,
		    ["RETR %d" % n])
		rep = reps[0]
		assert rep is not None, r.log
		assert rep.err or rep.data == expected_retr(FOUR[n - 1]), (
		    n, rep.data[:300])
	r, reps = rewrite_during_session(pop3, mbox(FOUR), grown,
	    ["DELE 1", "QUIT"])
	assert reps[1] is not None and reps[1].text.startswith(
	    "-ERR [SYS/TEMP]"), r.log + r.stderr
	assert pop3.read_mbox() == grown


def test_mua_marks_message_read_under_the_session(pop3):
	"""mutt adds "Status: RO" to message 1 (the file grows by 11 octets,
	the other messages move; Status is left out of the UIDL digest).
	RETR 1 sends message 1 whole, old or new, or -ERR; never a message
	cut short or shifted.  Then RETR 2 likewise."""
	m1 = FOUR[0]
	hdr, body = m1.split(b"\n\n", 1)
	m1r = hdr + b"\nStatus: RO\n\n" + body
	marked = mbox([m1r] + FOUR[1:])
	for n, ok in ((1, (m1, m1r)), (2, (FOUR[1],))):
		r, reps = rewrite_during_session(pop3, mbox(FOUR), marked,
		    ["RETR %d" % n])
		rep = reps[0]
		assert rep is not None, r.log
		assert rep.err or rep.data in [expected_retr(m) for m in ok], (
		    "RETR %d sent %r" % (n, rep.data[-200:]))


def test_same_headers_other_body_under_the_session(pop3):
	"""Two messages with the same From_ line and header (a script mailing
	twice in one second, no Message-ID) but different bodies.  A MUA
	deletes the first and mail arrives: RETR 1 must not send the second
	message's body as the first's."""
	hdr = b"From: cron@example.org\nSubject: report\n\n"
	a = hdr + b"first body, which is a little longer than the other\n"
	b = hdr + b"second body\n"
	c = message(3)
	more = numbered(2, tag="more")
	after = mbox([b, c] + more)
	r, reps = rewrite_during_session(pop3, mbox([a, b, c]), after,
	    ["RETR 1"])
	rep = reps[0]
	assert rep is not None, r.log
	assert rep.err or rep.data == expected_retr(a), (
	    "RETR 1 sent %r" % rep.data)


# ------------------------------------------------------------ dotlocks

def dotlockfile(pop3, *args):
	return subprocess.run(["dotlockfile"] + list(args) +
	    [str(pop3.spool / DOTLOCK)], env=mda_env(pop3), cwd=str(pop3.base),
	    capture_output=True, timeout=30, **as_nobody())


@pytest.fixture
def fault_bin():
	return fault_binary()


def test_dotlock_held_login_waits_then_temp(pop3, fault_bin):
	"""dotlockfile -l holds USER.lock (no pid, fresh: valid for 5
	minutes): pop3d tries for the lock wait (POP3D_LOCK_WAIT=2 s in the
	test build; MD_LOCK_WAIT in a release) and answers PASS with -ERR
	[SYS/TEMP]; the lock is left alone."""
	data = pop3.write_mbox(FOUR)
	assert dotlockfile(pop3, "-l", "-r", "0").returncode == 0
	lock = pop3.spool / DOTLOCK
	content = lock.read_bytes()
	t0 = time.monotonic()
	with Run(pop3, binary=fault_bin, env={"POP3D_LOCK_WAIT": "2"},
	    timeout=60) as r:
		rep = r.login()
		took = time.monotonic() - t0
		r.close()
	assert rep is not None and rep.text.startswith("-ERR [SYS/TEMP]"), \
	    r.log + r.stderr
	assert 1.5 <= took < 10, took
	assert r.rc == LIMITS["POP3_EX_TEMPFAIL"], r.rc
	assert "locked" in r.stderr, r.stderr
	assert lock.read_bytes() == content, "someone else's lock touched"
	assert pop3.read_mbox() == data
	assert dotlockfile(pop3, "-u").returncode == 0


def test_dotlock_held_login_succeeds_when_released(pop3):
	"""The release build: dotlockfile -l holds the lock, dotlockfile -u
	gives it back after 2 s: the login waited and succeeds."""
	pop3.write_mbox(FOUR)
	assert dotlockfile(pop3, "-l", "-r", "0").returncode == 0
	p = subprocess.Popen(["sh", "-c", "sleep 2; exec dotlockfile -u "
	    "\"$0\"", str(pop3.spool / DOTLOCK)])
	t0 = time.monotonic()
	try:
		t = pop3.run(pop3.login_cmds() + ["STAT", "DELE 1", "QUIT"])
	finally:
		p.wait(10)
	took = time.monotonic() - t0
	assert t[1].ok and t[2].text.startswith("+OK 4 "), t
	assert 1.5 <= took < LIMITS["MD_LOCK_WAIT"], took
	assert t[4].ok, t
	assert pop3.read_mbox() == mbox(FOUR[1:])


def test_dotlock_held_at_quit_waits(pop3):
	"""The lock is taken between login and QUIT and given back 2 s
	later: the update waits for it and succeeds."""
	pop3.write_mbox(FOUR)
	with Run(pop3) as r:
		assert r.login().ok
		assert r.cmd("DELE 2").ok
		assert dotlockfile(pop3, "-l", "-r", "0").returncode == 0
		p = subprocess.Popen(["sh", "-c", "sleep 2; exec dotlockfile "
		    "-u \"$0\"", str(pop3.spool / DOTLOCK)])
		t0 = time.monotonic()
		q = r.cmd("QUIT", timeout=60)
		took = time.monotonic() - t0
		p.wait(10)
		r.close()
	assert q.ok, r.log + r.stderr
	assert 1.5 <= took < LIMITS["MD_LOCK_WAIT"], took
	assert pop3.read_mbox() == mbox([FOUR[0]] + FOUR[2:])


def test_stale_dotlock_old_mtime_removed_and_logged(pop3):
	"""A dotlock without a pid, older than MD_DOTLOCK_STALE: removed at
	once, logged, the session goes on."""
	pop3.write_mbox(FOUR)
	assert dotlockfile(pop3, "-l", "-r", "0").returncode == 0
	lock = pop3.spool / DOTLOCK
	old = time.time() - LIMITS["MD_DOTLOCK_STALE"] - 100
	os.utime(lock, (old, old))
	t0 = time.monotonic()
	t = pop3.run(pop3.login_cmds() + ["DELE 1", "QUIT"])
	assert time.monotonic() - t0 < 5
	assert t[1].ok and t[3].ok, t
	assert "stale dotlock" in t.stderr and "too old" in t.stderr, t.stderr
	assert pop3.spool_files() == [USER]
	assert pop3.read_mbox() == mbox(FOUR[1:])


def test_stale_dotlock_dead_pid_removed_and_logged(pop3):
	"""dotlockfile -p run by a shell that has exited: the lock names a
	dead process, fresh mtime: removed at once and logged."""
	pop3.write_mbox(FOUR)
	p = subprocess.run(["sh", "-c", 'dotlockfile -l -r 0 -p "$0"; '
	    'echo $$', str(pop3.spool / DOTLOCK)], env=mda_env(pop3),
	    cwd=str(pop3.base), capture_output=True, text=True, **as_nobody())
	assert p.returncode == 0, p.stderr
	pid = int(p.stdout.strip())
	lock = pop3.spool / DOTLOCK
	assert lock.read_text().strip() == str(pid)
	t0 = time.monotonic()
	t = pop3.run(pop3.login_cmds() + ["DELE 1", "QUIT"])
	assert time.monotonic() - t0 < 5
	assert t[1].ok and t[3].ok, t
	assert "stale dotlock" in t.stderr and "pid %d" % pid in t.stderr, \
	    t.stderr
	assert pop3.spool_files() == [USER]


def test_live_pid_dotlock_is_not_stale(pop3, fault_bin):
	"""A fresh dotlock naming a live process (dotlockfile -p from this
	test, alive) is respected: pop3d gives up, the lock stays."""
	pop3.write_mbox(FOUR)
	lock = pop3.spool / DOTLOCK
	lock.write_text("%d\n" % os.getpid())
	if os.geteuid() == 0:
		os.chown(lock, 65534, 65534)
	with Run(pop3, binary=fault_bin, env={"POP3D_LOCK_WAIT": "2"},
	    timeout=60) as r:
		rep = r.login()
		r.close()
	assert rep is not None and rep.text.startswith("-ERR [SYS/TEMP]"), \
	    r.log + r.stderr
	assert lock.exists()
	lock.unlink()


# ------------------------------------------- a deleted last message's end

SEP_A = FROM_LINE + b"\nSubject: a\nMessage-ID: <a@x>\n\nbody a\n\n"
SEP_B = FROM_LINE + b"\nSubject: b\nMessage-ID: <b@x>\n\nbody b\n"
SEP_C = b"From: c\nSubject: c\nMessage-ID: <c@x>\n\nbody c\n\n"


@pytest.mark.parametrize("b_end,sep", [
    (b"\n", b"\n"), (b"\n", b"\r\n"), (b"", b"\n\n"), (b"\n\n", b"\n")],
    ids=["lf", "crlf", "no-lf", "extra-empty-line"])
def test_deleted_last_message_takes_its_end_along(pop3, b_end, sep):
	"""The last message B does not end with an empty line at login (or
	ends with one and the writer adds another); a writer appends mail
	that first ends B's record (its line end, an empty line), then its
	From_ line.  Deleting B deletes B's record as the reference parser
	of the file sees it, so the message before it keeps its own octets
	and the new mail its own: no empty line glued onto A."""
	pop3.write_mbox(SEP_A + SEP_B[:-1] + b_end)
	with Run(pop3) as r:
		assert r.login().ok, r.log
		pop3.append_mbox(sep + FROM_LINE + b"\n" + SEP_C)
		ref = parse_mbox(pop3.read_mbox())	# what the writers wrote
		assert len(ref) == 3, ref
		assert r.cmd("DELE 2").ok, r.log
		assert r.cmd("QUIT").ok, r.log
	assert parse_mbox(pop3.read_mbox()) == [ref[0], ref[2]], \
	    pop3.read_mbox()


@pytest.mark.parametrize("dele", ["2", "1 2"], ids=["a-kept", "all-deleted"])
@pytest.mark.parametrize("b_end,sep", [(b"", b"\n"), (b"\n", b"\n" * 12),
    (b"", b"\r\n" * 9), (b"\n", b"\n\r"), (b"", b"\r")],
    ids=["one-lf", "twelve-lf", "nine-crlf", "lf-cr", "cr"])
def test_deleted_last_message_takes_any_line_ends_along(pop3, dele, b_end,
    sep):
	"""B, the last message, ends without a line end (or with one), and
	the writer appends a line end only (or a dozen) before its From_
	line.  Deleting B takes those CR and LF octets along, however many:
	A keeps its own octets (it gained them), and when B and A are both
	deleted the mailbox begins with the new From_ line (it began with a
	line end, and every later login was -ERR [SYS/PERM]: found by a
	review of the parser).  The next session sees what the reference
	parser sees."""
	pop3.write_mbox(SEP_A + SEP_B[:-1] + b_end)
	with Run(pop3) as r:
		assert r.login().ok, r.log
		pop3.append_mbox(sep + FROM_LINE + b"\n" + SEP_C)
		for n in dele.split():
			assert r.cmd("DELE " + n).ok, r.log
		assert r.cmd("QUIT").ok, r.log
	want = (SEP_A if dele == "2" else b"") + FROM_LINE + b"\n" + SEP_C
	assert pop3.read_mbox() == want
	t = pop3.run(pop3.login_cmds() + ["STAT", "QUIT"])
	assert t[1].ok and t[2].text.startswith("+OK %d " % len(
	    parse_mbox(want))), t


@pytest.mark.parametrize("b_end,appended", [
    (b"", b"\nFrom here on, not a From_ line\n"),
    (b"\n", b"\n\nno From_ line after the empty lines\n")],
    ids=["not-a-from-line", "no-from-line"])
def test_appended_octets_kept_when_not_a_record_end(pop3, b_end, appended):
	"""The other side: no From_ line follows the CR and LF octets the
	appended mail begins with.  Deleting B keeps every appended octet:
	nothing a writer added is dropped."""
	pop3.write_mbox(SEP_A + SEP_B[:-1] + b_end)
	with Run(pop3) as r:
		assert r.login().ok, r.log
		pop3.append_mbox(appended)
		assert r.cmd("DELE 2").ok, r.log
		assert r.cmd("QUIT").ok, r.log
	assert pop3.read_mbox() == SEP_A + appended
