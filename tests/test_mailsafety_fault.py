"""Crash-proof update (issue 4): kill -9, ENOSPC and EIO injected at every
write (write, pwrite, copy_file_range), fsync, ftruncate, rename, unlink
and link of the maildrop (io.c; build/fault/pop3d,
POP3D_FAULT=kind:N), one real full disk, and the order of the update's
writes and fsyncs (strace, judged by syncorder.py).

After every fault the next session, run with the binary under test, must
succeed and find the mailbox either exactly as it was before the update
(every deleted message still there) or exactly as the update leaves it
(every deleted message gone), never anything in between: each kept
message byte-identical, no fragment, no duplicate, the journal gone, the
repair logged.  Appended mail is kept in both.

The counter runs from the start of the process, so the first steps are
the spool locks of the login (dotlock: write, link, unlink; release:
unlink), then those of the update, the journal, its application and the
release of the locks.
"""

import os
import re
import shutil
import subprocess
import time

import pytest

import syncorder
from conftest import LIMITS, ROOT, USER, mbox, need, parse_mbox
from mailsafety import (DOTLOCK, JOURNAL, Run, census, describe,
    fault_binary, journals, leftovers)
from messages import message, numbered

# Steps of one update stay far below this; a run past it is a bug.
MAX_STEPS = 200
ERRTEXT = {"enospc": os.strerror(28), "eio": os.strerror(5),
    "done": os.strerror(5)}
REPAIR_LOG = re.compile(r"repaired an interrupted update|completed an "
    r"interrupted update|removed the journal of an update")


@pytest.fixture(scope="module", autouse=True)
def _fault_build():
	fault_binary()


# A body of about 1.4 MB: the journal and its application copy it in
# several MD_BLOCK pieces, so a fault can fall between two of them.
BIG_BODY = b"".join(b"%07d a line of the big message, to be copied\n" % i
    for i in range(1400000 // 48))
ODD_BODY = (b"crlf line\r\nnul\x00 and bare\rcr\n\n\nblank lines above\n"
    b">From a quoted From_ line\n.\n")


def gaps():
	"""24 messages, 2, 7 and 15 of them big: with 2, 6, 8, 10, 14 and 20
	deleted and POP3D_JSHIFT at 1 MiB (the test build's stand-in for
	MD_JSHIFT), the update moves extents through the journal (shifted by
	less than their length) and within the mailbox (shifted by more than
	1 MiB), and writes progress records before three of the moves: kills
	fall before, between and after them."""
	msgs = numbered(24)
	for i in (2, 7, 15):
		msgs[i - 1] = message(i, body=BIG_BODY)
	return msgs


def six(big=False):
	msgs = numbered(6)
	msgs[2] = message(3, body=ODD_BODY)
	if big:
		msgs[1] = message(2, body=BIG_BODY)
	return msgs


class Scenario:
	"""A mailbox, the messages a session deletes, mail appended during
	the session (after PASS, before DELE)."""

	def __init__(self, msgs, dele, append=None, final_newline=True,
	    env=None, nl=b"\n"):
		self.msgs = msgs
		self.nl = nl
		self.dele = dele
		self.append = append
		self.fnl = final_newline
		self.env = env or {}

	@property
	def initial(self):
		return mbox(self.msgs, nl=self.nl, final_newline=self.fnl)

	def kept(self):
		return [m for i, m in enumerate(self.msgs, 1)
		    if i not in self.dele]

	def before(self, appended):
		if appended:
			return mbox(self.msgs + [self.append], nl=self.nl)
		return self.initial

	def after(self, appended):
		kept = self.kept()
		if appended:
			return mbox(kept + [self.append], nl=self.nl)
		# A deleted last message leaves a whole record at the end.
		fnl = self.fnl or len(self.msgs) in self.dele
		return mbox(kept, nl=self.nl, final_newline=fnl) if kept else b""


SCENARIOS = {
	"first": Scenario(six(big=True), [1]),
	"last": Scenario(six(), [6]),
	"every_other": Scenario(six(), [1, 3, 5]),
	"all": Scenario(six(), [1, 2, 3, 4, 5, 6]),
	"appended": Scenario(six(), [2, 4], append=message(7, tag="new")),
	"no_final_newline": Scenario(six(), [2, 5], final_newline=False),
	"gaps": Scenario(gaps(), [2, 6, 8, 10, 14, 20],
	    env={"POP3D_JSHIFT": str(1 << 20)}),
}


class FaultRun:
	"""What one session under POP3D_FAULT did."""

	def __init__(self, fault, run, pas, quit, appended):
		self.fault = fault
		self.rc = run.rc
		self.log = run.log
		self.stderr = run.stderr
		self.pas = pas
		self.quit = quit
		self.appended = appended

	@property
	def killed(self):
		return self.rc == -9

	def __repr__(self):
		return "POP3D_FAULT=%s: exit %s\n%s\nstderr:\n%s" % (self.fault,
		    self.rc, self.log, self.stderr[-3000:])


def reset(pop3, data):
	"""A spool with only the mailbox, holding data (rewritten in place:
	the inode stays, as a journal kept by restore() names it)."""
	for f in pop3.spool_files():
		if f != USER:
			os.unlink(pop3.spool / f)
	pop3.write_mbox(data)
	return os.stat(pop3.mailbox())


def fault_run(pop3, sc, fault, wrapper=()):
	"""Login, (append), DELE each of sc.dele, QUIT under POP3D_FAULT
	(under wrapper: strace).  Without the index cache: its writes (a
	young ctime is sealed and cached at the login) would be steps of
	their own, failures that pop3d ignores; test_cache.py kills them."""
	appended = False
	quit = None
	with Run(pop3, "--no-cache", binary=fault_binary(), env=dict(sc.env,
	    POP3D_FAULT=fault), timeout=60, wrapper=wrapper) as r:
		pas = r.login()
		if pas is not None and pas.ok:
			if sc.append is not None:
				pop3.append_mbox(mbox([sc.append]))
				appended = True
			for n in sc.dele:
				d = r.cmd("DELE %d" % n)
				if d is None:
					break
				assert d.ok, r.log
			else:
				quit = r.cmd("QUIT", timeout=60)
		r.close(timeout=60)
	return FaultRun(fault, r, pas, quit, appended)


def state(data, sc, appended):
	if data == sc.before(appended):
		return "before"
	if data == sc.after(appended):
		return "after"
	return "partial"


def next_session(pop3, sc, res, st0):
	"""The next session (binary under test) after res; checks everything
	the issue asks and returns "before" or "after"."""
	was_journal = bool(journals(pop3))
	was_lock = DOTLOCK in pop3.spool_files()
	now = pop3.read_mbox()
	t = pop3.run(pop3.login_cmds() + ["STAT", "QUIT"])
	data = pop3.read_mbox()
	before = sc.before(res.appended)
	after = sc.after(res.appended)
	ctx = "%r\nmailbox after the fault: %s\nnext session:\n%r" % (res,
	    describe(now), t)
	assert len(t) == 4 and t[1].ok, "the next session failed:\n" + ctx
	# No fragment, no duplicate, nothing lost: the multiset of messages
	# is one of the two, then the octets are.
	c = census(data)
	assert c in (census(before), census(after)), (
	    "mailbox is %s\nbefore: %s\nafter: %s\n%s" % (describe(data),
	    describe(before), describe(after), ctx))
	assert data in (before, after), "same messages, other octets:\n" + ctx
	n = len(parse_mbox(data))
	assert t[2].text.startswith("+OK %d " % n), ctx
	assert t[3].ok and t.rc == 0, ctx
	# The journal and our dotlock are gone; a temporary lock file of a
	# killed link() step may stay (liblockfile leaves those too).
	left = [f for f in leftovers(pop3) if not f.startswith(".pop3d-lk.")]
	assert left == [], "left in the spool: %r\n%s" % (left, ctx)
	if was_journal:
		assert REPAIR_LOG.search(t.stderr), "repair not logged:\n" + ctx
	if was_lock:
		assert "stale dotlock" in t.stderr, "stale lock not logged:\n" + ctx
	# Same file: inode, owner and mode kept.
	st = os.stat(pop3.mailbox())
	assert (st.st_ino, st.st_uid, st.st_mode) == (st0.st_ino, st0.st_uid,
	    st0.st_mode), ctx
	return "before" if data == before else "after"


_scan = {}


def kill_scan(pop3, name):
	"""kill:N for N = 1, 2, ... until a run is not killed.  Returns
	(steps, commit): the number of fault points of the whole session and
	the first N whose kill leaves the update done (the journal is
	committed from there on)."""
	if name in _scan:
		return _scan[name]
	sc = SCENARIOS[name]
	outcomes = []
	for n in range(1, MAX_STEPS):
		st0 = reset(pop3, sc.initial)
		res = fault_run(pop3, sc, "kill:%d" % n)
		if not res.killed:
			assert res.quit is not None and res.quit.ok and \
			    res.rc == 0, res
			assert pop3.read_mbox() == sc.after(res.appended), res
			assert journals(pop3) == [], res
			break
		assert res.quit is None or not res.quit.ok, \
		    "+OK before the update was done:\n%r" % res
		outcomes.append(next_session(pop3, sc, res, st0))
	else:
		pytest.fail("still killed after %d steps" % MAX_STEPS)
	assert outcomes and outcomes[0] == "before", outcomes
	commit = outcomes.index("after") + 1 if "after" in outcomes else n
	# Once the journal is committed, every later kill finds it done.
	assert all(o == "after" for o in outcomes[commit - 1:]), outcomes
	assert all(o == "before" for o in outcomes[:commit - 1]), outcomes
	_scan[name] = (n - 1, commit)
	return _scan[name]


@pytest.mark.parametrize("name", list(SCENARIOS))
def test_kill_at_every_step(pop3, name):
	steps, commit = kill_scan(pop3, name)
	assert commit <= steps


@pytest.mark.parametrize("kind", ["enospc", "eio", "done"])
@pytest.mark.parametrize("name", list(SCENARIOS))
def test_error_at_every_step(pop3, name, kind):
	"""ENOSPC/EIO at step N (the steps of the kill scan), or EIO after
	the call did its work (done; a lock taken all the same, a journal
	renamed all the same: test_journal_given_up, then removed under the
	name it has).  Expected:
	  N < commit (locks, writing the journal): -ERR [SYS/TEMP] and the
	    mailbox exactly as before, no journal; or, when the failed call
	    is one pop3d may ignore (removing a lock file), +OK and the
	    update done.  A failed login lock: -ERR [SYS/TEMP] to PASS.
	  N = commit, commit+1 (fsync of the journal, then of the spool
	    directory: a kill there finds the journal committed, an error
	    makes pop3d remove it): either.
	  N > commit+1 (applying the committed journal): the update is done,
	    at once (+OK: pop3d repairs in the same session), or by the next
	    session (-ERR [SYS/TEMP], the journal left for its repair), or
	    done but not known to be on disk (-ERR [SYS/TEMP] after the
	    journal was removed: the directory fsync failed).
	"""
	steps, commit = kill_scan(pop3, name)
	sc = SCENARIOS[name]
	seen = set()
	for n in range(1, steps + 1):
		st0 = reset(pop3, sc.initial)
		res = fault_run(pop3, sc, "%s:%d" % (kind, n))
		assert not res.killed, res
		now = state(pop3.read_mbox(), sc, res.appended)
		jl = bool(journals(pop3))
		if res.pas is None or not res.pas.ok:
			assert res.pas is not None and "[SYS/TEMP]" in \
			    res.pas.text, res
			assert now == "before" and not jl, res
			outcome = "login"
		else:
			assert res.quit is not None, res
			if res.quit.ok:
				assert now == "after" and not jl, res
				outcome = "ok"
			else:
				assert res.quit.text.startswith(
				    "-ERR [SYS/TEMP]"), res
				# Never a half-done mailbox without its journal.
				assert jl or now != "partial", res
				outcome = ("temp-journal" if jl else "temp" if
				    now == "before" else "temp-done")
		final = next_session(pop3, sc, res, st0)
		if n < commit:
			# done: a truncate that did its work and said EIO (the
			# update was a truncate alone) is done, not known to be
			# on disk, like one after the commit.
			assert outcome in ("login", "temp", "ok") or (kind ==
			    "done" and outcome == "temp-done"), res
			if outcome == "ok" and kind != "done":
				assert "cannot remove" in res.stderr, res
			assert final == ("after" if outcome in ("ok", "temp-done")
			    else "before"), res
		elif n > commit + 1:
			assert final == "after", res
			assert outcome in ("ok", "temp-journal", "temp-done"), res
		seen.add(outcome)
	# An -ERR that left the mailbox as it was; with done, where every
	# call of a truncate alone does its work, an -ERR at all.
	assert "temp" in seen or (kind == "done" and seen & {"temp-done",
	    "temp-journal"}), seen


def snapshot(pop3):
	"""Every file of the spool: a state to go back to."""
	return {f: (pop3.spool / f).read_bytes() for f in pop3.spool_files()}


def restore(pop3, snap):
	"""The spool as snap had it.  The mailbox is rewritten in place: the
	journal names its inode."""
	for f in pop3.spool_files():
		if f not in snap:
			os.unlink(pop3.spool / f)
	for f, data in snap.items():
		p = pop3.spool / f
		if f == USER:
			with open(p, "r+b") as fh:
				fh.truncate(0)
				fh.write(data)
			continue
		p.write_bytes(data)
		os.chmod(p, 0o600)
		if ROOT:
			os.chown(p, 65534, 65534)


def committed_states(pop3, name):
	"""For each state a kill leaves a committed journal in (mailbox
	untouched, partly rewritten, truncated), the first kill step that
	leaves it: {phase: (k, run, stat of the mailbox, snapshot)}."""
	sc = SCENARIOS[name]
	steps, commit = kill_scan(pop3, name)
	phases = {}
	for k in range(commit, steps + 1):
		st0 = reset(pop3, sc.initial)
		res = fault_run(pop3, sc, "kill:%d" % k)
		assert res.killed, res
		if not journals(pop3):
			break		# the journal was removed: done
		now = pop3.read_mbox()
		ph = ("untouched" if now == sc.before(False) else "truncated"
		    if now == sc.after(False) else "partial")
		if ph not in phases:
			phases[ph] = (k, res, st0, snapshot(pop3))
		elif ph == "partial":
			# The last state before the truncate, kept too.
			phases["uncut"] = (k, res, st0, snapshot(pop3))
	want = ["truncated", "untouched", "partial", "uncut"]
	assert sorted(phases) == sorted(want), phases
	return phases


LATE = message(8, tag="late")


def repair_run(pop3, fault):
	"""A session that only logs in (and repairs), STAT, QUIT; also QUIT's
	reply (None: killed at the session's end, where it writes the index
	cache of what it indexed)."""
	with Run(pop3, binary=fault_binary(), env={"POP3D_FAULT": fault}) as r:
		pas = r.login()
		stat = quit = None
		if pas is not None and pas.ok:
			stat = r.cmd("STAT")
			assert stat is not None, r.log
			quit = r.cmd("QUIT")
		r.close()
	return r, pas, stat, quit


@pytest.mark.parametrize("name", ["first", "gaps"])
def test_kill_during_repair_with_mail_delivered(pop3, name):
	"""An update killed after its journal was committed (the mailbox
	untouched, half rewritten: the big message is copied in several
	blocks, and truncated), a message delivered before the next session,
	whose repair is then killed at every step in turn (the repair
	completes the moves, then writes a journal of its own that moves the
	delivered mail and renames it over the old one).  Every session that
	gets to index finds the update done and the new message kept; so
	does the session after each kill.
	"gaps": the repair starts from progress records.  ("all" has no
	journal: with nothing to move, the update is a truncate alone.)"""
	sc = SCENARIOS[name]
	sc2 = Scenario(sc.msgs + [LATE], sc.dele)
	for ph, (k, res, st0, snap) in committed_states(pop3, name).items():
		for m in range(1, MAX_STEPS):
			restore(pop3, snap)
			pop3.append_mbox(mbox([LATE]))
			r, pas, stat, quit = repair_run(pop3, "kill:%d" % m)
			ctx = "%s journal, kill:%d, repair kill:%d\n%s\n%s" % (
			    ph, k, m, r.log, r.stderr)
			# A session never indexes a half-done update.
			if pas is not None:
				assert pas.ok, ctx
				assert (quit is not None and quit.ok and
				    r.rc == 0) or (quit is None and
				    r.rc == -9), ctx
				assert pop3.read_mbox() == sc2.after(False), ctx
				assert stat.text.startswith("+OK %d " % (
				    len(sc2.kept()))), ctx
			else:
				assert r.rc == -9, ctx
			assert next_session(pop3, sc2, res, st0) == "after", ctx
			if r.rc != -9:
				break
		else:
			pytest.fail("repair still killed after %d steps" %
			    MAX_STEPS)


TWIN = message(2, tag="twin")


@pytest.mark.parametrize("more", [[], [LATE]], ids=["twin", "twin+late"])
def test_same_mail_delivered_after_the_truncate(pop3, more):
	"""An update killed after its truncate, before its journal was
	removed; then an MDA delivers the very octets the truncate cut away
	(the same message again: a message and its twin, the second of them
	deleted and the first moved over it), alone or followed by another
	message.  The next session keeps all of it: that mail is not what
	the update cut, whatever its octets (found by a review that tried to
	lose mail: the repair told the two by the digest of the cut octets
	and truncated the delivery away)."""
	sc = Scenario([message(1), TWIN, TWIN], [2])
	SCENARIOS["twin"] = sc
	try:
		steps, commit = kill_scan(pop3, "twin")
	finally:
		del SCENARIOS["twin"]
	after = sc.after(False)
	delivered = mbox([TWIN] + more)
	# The premise: the delivery begins with the octets cut away.
	assert delivered.startswith(sc.initial[len(after):])
	tried = 0
	for k in range(commit, steps + 1):
		reset(pop3, sc.initial)
		res = fault_run(pop3, sc, "kill:%d" % k)
		assert res.killed, res
		if not journals(pop3) or pop3.read_mbox() != after:
			continue
		tried += 1
		pop3.append_mbox(delivered)
		want = after + delivered
		assert parse_mbox(want) == parse_mbox(mbox([message(1), TWIN,
		    TWIN] + more))
		t = pop3.run(pop3.login_cmds() + ["STAT", "QUIT"])
		ctx = "kill:%d\n%r\n%s" % (k, t, t.stderr)
		assert pop3.read_mbox() == want, ctx
		assert t[2].text.startswith("+OK %d " % (3 + len(more))), ctx
		assert journals(pop3) == [], ctx
		assert REPAIR_LOG.search(t.stderr), ctx
	# The kills at the truncate's fsync, the removal and its fsync.
	assert tried >= 2, (steps, commit)


@pytest.mark.parametrize("kind", ["enospc", "eio", "done"])
def test_dotlock_file_not_written_before_the_sandbox(pop3, kind):
	"""The session's dotlock file, made and written before the user's
	sandbox, fails its write (the first write-like call): the lock is
	made again inside the sandbox, where Landlock lets the name be made
	and refuses the write.  Whatever the login answers, no such file is
	left in the spool, the mailbox is as the test wrote it, and the next
	session works."""
	data = pop3.write_mbox(six())
	with Run(pop3, "--no-cache", binary=fault_binary(),
	    env={"POP3D_FAULT": "%s:1" % kind}) as r:
		pas = r.login()
		if pas is not None and pas.ok:
			assert r.cmd("STAT") is not None
		r.cmd("QUIT")
		r.close()
	assert ERRTEXT[kind] in r.stderr, r.stderr
	left = [f for f in pop3.spool_files() if f.startswith(".pop3d-lk.")]
	assert left == [], (left, r.stderr)
	assert pop3.read_mbox() == data
	t = pop3.run(pop3.login_cmds() + ["STAT", "QUIT"])
	assert t[1].ok and t[2].text.startswith("+OK 6 "), t


@pytest.mark.parametrize("kind", ["enospc", "eio", "done"])
def test_error_during_repair(pop3, kind):
	"""The same repairs (journal committed, mail delivered since) fail at
	step M with ENOSPC/EIO: PASS gets -ERR [SYS/TEMP] and the journal
	stays (or the repair is done and only the directory fsync after
	removing the journal failed), or the session goes on with the update
	done; the session after that finds the update done."""
	sc = SCENARIOS["first"]
	sc2 = Scenario(sc.msgs + [LATE], sc.dele)
	for ph, (k, res, st0, snap) in committed_states(pop3, "first").items():
		for m in range(1, MAX_STEPS):
			restore(pop3, snap)
			pop3.append_mbox(mbox([LATE]))
			r, pas, stat, quit = repair_run(pop3, "%s:%d" % (kind, m))
			ctx = "%s journal, kill:%d, repair %s:%d\n%s\n%s" % (
			    ph, k, kind, m, r.log, r.stderr)
			assert pas is not None, ctx
			if pas.ok:
				assert quit is not None and quit.ok, ctx
				assert pop3.read_mbox() == sc2.after(False), ctx
				assert stat.text.startswith("+OK %d " % (
				    len(sc2.kept()))), ctx
			else:
				assert "[SYS/TEMP]" in pas.text, ctx
				assert journals(pop3) or pop3.read_mbox() == \
				    sc2.after(False), ctx
			assert next_session(pop3, sc2, res, st0) == "after", ctx
			if pas.ok and ERRTEXT[kind] not in r.stderr:
				break	# step m is past the session's last one
		else:
			pytest.fail("repair still failing after %d steps" %
			    MAX_STEPS)


# ------------------------------------------------------------ a real full disk

def _mount_tmpfs(path, size):
	if not ROOT:
		pytest.skip("mounting a tmpfs needs root")
	opts = "size=%d,mode=0755" % size
	opts += ",uid=%d,gid=%d" % (65534, 65534)
	r = subprocess.run(["mount", "-t", "tmpfs", "-o", opts, "tmpfs",
	    str(path)], capture_output=True, text=True)
	if r.returncode != 0:
		pytest.skip("mount -t tmpfs is not permitted here: %s" %
		    r.stderr.strip())


def _fill(path):
	"""Writes path until the file system is full."""
	with open(path, "wb", buffering=0) as f:
		for chunk in (65536, 4096, 1):
			buf = b"\0" * chunk
			while True:
				try:
					f.write(buf)
				except OSError as e:
					if e.errno != 28:
						raise
					break


def test_full_spool_repair_after_truncate(pop3, request):
	"""An update killed after its truncate (only the journal's removal
	left), then a spool with no free block: the next login completes
	the update (the removal needs no space) and serves the mailbox.  (A
	repair that first wrote both record slots again needed a block for
	the one that is a hole of the sparse journal: ENOSPC at every login;
	found by a review.)"""
	spool = pop3.spool
	_mount_tmpfs(spool, 8 << 20)
	request.addfinalizer(lambda: subprocess.run(["umount", "-l",
	    str(spool)], check=False))
	sc = SCENARIOS["every_other"]
	steps, commit = kill_scan(pop3, "every_other")
	for k in range(commit, steps + 1):
		reset(pop3, sc.initial)
		res = fault_run(pop3, sc, "kill:%d" % k)
		assert res.killed, res
		if not journals(pop3):
			pytest.fail("no kill left the update truncated with its "
			    "journal")
		if pop3.read_mbox() == sc.after(False):
			break
	for f in pop3.spool_files():
		if f not in (USER, JOURNAL):
			os.unlink(spool / f)
	# Filled twice: the file system frees blocks a moment after.
	_fill(spool / "filler")
	time.sleep(1)
	_fill(spool / "filler2")
	t = pop3.run(pop3.login_cmds() + ["STAT", "QUIT"], "-l", "fcntl")
	ctx = "kill:%d\n%r\n%s" % (k, t, t.stderr)
	assert t[1].ok and t[2].text.startswith("+OK %d " % len(sc.kept())), \
	    ctx
	assert pop3.read_mbox() == sc.after(False), ctx
	assert journals(pop3) == [], ctx


@pytest.mark.parametrize("locks", ["fcntl,dotlock", "fcntl"])
def test_real_full_disk(pop3, request, locks):
	"""The spool is a 1 MB tmpfs.  After login and DELE 1 it is filled
	(with dotlocks: all but one page, the one our dotlock takes, so the
	journal is what cannot be written).  QUIT: -ERR [SYS/TEMP], the
	mailbox byte-identical, no journal; once there is room, the same
	update succeeds."""
	spool = pop3.spool
	_mount_tmpfs(spool, 1 << 20)
	request.addfinalizer(lambda: subprocess.run(["umount", "-l",
	    str(spool)], check=False))
	msgs = six()
	data = pop3.write_mbox(msgs)
	st0 = os.stat(pop3.mailbox())
	filler = spool / "filler"
	reserve = spool / "reserve"
	with Run(pop3, "-l", locks) as r:
		assert r.login().ok, r.log
		assert r.cmd("DELE 1").ok
		if "dotlock" in locks:
			reserve.write_bytes(b"r" * 4096)
		_fill(filler)
		if "dotlock" in locks:
			reserve.unlink()
		q = r.cmd("QUIT", timeout=60)
		rc = r.close()
	ctx = "%s\n%s" % (r.log, r.stderr)
	assert q is not None and q.text.startswith("-ERR [SYS/TEMP]"), ctx
	assert rc == LIMITS["POP3_EX_TEMPFAIL"], ctx
	assert "journal" in r.stderr and "No space left" in r.stderr, ctx
	assert pop3.read_mbox() == data
	assert [f for f in pop3.spool_files() if f not in (USER, "filler")] \
	    == [], pop3.spool_files()
	st = os.stat(pop3.mailbox())
	assert (st.st_ino, st.st_mode) == (st0.st_ino, st0.st_mode)
	filler.unlink()
	t = pop3.run(pop3.login_cmds() + ["DELE 1", "QUIT"], "-l", locks)
	assert t[3].ok, t
	assert pop3.read_mbox() == mbox(msgs[1:])



# ------------------------------------------------------------ order on disk

def tenth():
	"""250 messages of 1 to 37 kB, three of them big: with every 10th
	deleted the extents shift by more and more along the file, some by
	less than their length (moved through the journal), some by more
	(copied within the mailbox, with POP3D_JSHIFT=0 after progress
	records)."""
	msgs = []
	for i in range(1, 251):
		body = b"".join(b"line %d of message %d\n" % (k, i)
		    for k in range((i * 37) % 1400 + 50))
		msgs.append(message(i, body=BIG_BODY if i in (3, 101, 202) else
		    body))
	return msgs


ORDER_SHAPES = {
	"first": SCENARIOS["first"],
	"tenth": Scenario(tenth(), list(range(10, 251, 10))),
	"all": SCENARIOS["all"],
	"last": SCENARIOS["last"],
	"appended": SCENARIOS["appended"],
	"crlf": Scenario(gaps(), [2, 6, 8, 10, 14, 20], nl=b"\r\n"),
}
# The binary under test; the fault build (no fault) with POP3D_JSHIFT=0:
# only extents that would overwrite their own source are journaled, the
# others are copied within the mailbox after progress records.
ORDER_MODES = {"plain": None, "jshift0": {"POP3D_JSHIFT": "0"}}


def strace_wrapper(pop3):
	"""The strace command line that logs a session for syncorder.check(),
	and the log's path (in a directory the session's user can write)."""
	strace = shutil.which("strace")
	need(strace, "strace (package strace)")
	tdir = pop3.base / "trace"
	tdir.mkdir()
	if ROOT:
		os.chown(tdir, 65534, 65534)
	log = tdir / "log"
	return [strace, "-f", "-qq", "-s", "64", "-o", str(log), "-e",
	    syncorder.CLASSES], log


@pytest.mark.parametrize("mode", list(ORDER_MODES))
@pytest.mark.parametrize("name", list(ORDER_SHAPES))
def test_update_order_on_disk(pop3, name, mode):
	"""strace of the update: no octet the mailbox had is overwritten or
	cut before every journal write issued before it and the journal's
	directory entry are on disk (the journal hashes all it holds, one
	fsync may cover it: test_incomplete_journal_dropped); no octet cut
	before every write of the mailbox before it is on disk; a progress
	record or the removal of the journal only once the mailbox changes
	before it are;
	+OK to QUIT only once every change of the mailbox and the journal's
	removal are (syncorder.check(), which knows nothing of the journal's
	layout).  The mailbox keeps its name and inode: it is never renamed,
	replaced or unlinked."""
	sc = ORDER_SHAPES[name]
	env = ORDER_MODES[mode]
	reset(pop3, sc.initial)
	argv, log = strace_wrapper(pop3)
	with Run(pop3, binary=fault_binary() if env else None, env=env,
	    wrapper=argv, timeout=60) as r:
		assert r.login().ok, r.log
		if sc.append is not None:
			pop3.append_mbox(mbox([sc.append], nl=sc.nl))
		for n in sc.dele:
			assert r.cmd("DELE %d" % n).ok, r.log
		q = r.cmd("QUIT", timeout=60)
		r.close(timeout=60)
	assert q is not None and q.ok, r.log + r.stderr
	appended = sc.append is not None
	before, after = sc.before(appended), sc.after(appended)
	assert pop3.read_mbox() == after
	rep = syncorder.check(log, pop3.mailbox(), pop3.spool / JOURNAL,
	    len(before), cwd=pop3.base, hashed=True)
	ctx = "%s\nevents:\n%s" % ("\n".join(rep.violations),
	    rep.timeline())
	assert rep.violations == [], ctx
	# The checker saw the update: octets the mailbox had were changed;
	# where the new mailbox is not a prefix of the old one, written
	# over, after a journal.
	assert rep.guarded and rep.reply is not None, ctx
	if not before.startswith(after):
		assert any(e.kind == "write" for e in rep.guarded), ctx
		assert rep.journal, ctx
	if mode == "jshift0" and name == "tenth":
		# Progress records: journal writes between mailbox writes.
		m0 = rep.guarded[0].start
		assert len([e for e in rep.journal if e.kind == "write" and
		    e.start > m0]) >= 2, ctx
	assert not any(e.kind in ("create", "remove") for e in rep.mailbox), ctx


def test_repair_order_on_disk(pop3):
	"""strace of a repair that finds an update killed in its moves and
	mail delivered since: the moves are redone, the new mail is moved by
	a journal of its own that replaces the old one.  The same rules as
	test_update_order_on_disk hold for it (the new journal's writes and
	its name come only once the redone moves are on disk: "ahead"), and
	the mailbox ends as the update leaves it, with the new mail."""
	argv, log = strace_wrapper(pop3)
	sc = ORDER_SHAPES["tenth"]
	for n in range(1, MAX_STEPS):
		reset(pop3, sc.initial)
		res = fault_run(pop3, sc, "kill:%d" % n)
		assert res.killed, "no kill fell in the moves: %r" % res
		now = pop3.read_mbox()
		if journals(pop3) and now != sc.initial and \
		    len(now) >= len(sc.initial):
			break
	new = message(251, tag="new")
	pop3.append_mbox(mbox([new]))
	size0 = len(pop3.read_mbox())
	with Run(pop3, wrapper=argv, timeout=60) as r:
		assert r.login().ok, r.log
		q = r.cmd("QUIT", timeout=60)
		r.close(timeout=60)
	assert q is not None and q.ok, r.log + r.stderr
	assert pop3.read_mbox() == mbox(sc.kept() + [new])
	assert re.search(r"repaired an interrupted update .* [1-9]\d* "
	    r"appended since kept", r.stderr), r.stderr
	rep = syncorder.check(log, pop3.mailbox(), pop3.spool / JOURNAL,
	    size0, cwd=pop3.base, hashed=True, there=True)
	ctx = "%s\nevents:\n%s" % ("\n".join(rep.violations),
	    rep.timeline())
	assert rep.violations == [], ctx
	assert rep.guarded and any(e.kind == "create" for e in rep.jn), ctx


def _octets(w):
	"""The octets of a write event of an strace -xx log."""
	return syncorder.unquote(w.call.args[1]).encode("latin-1")


def test_repair_settles_what_it_read(pop3):
	"""A repair acts on what a killed session left, maybe not on disk: a
	progress record written without its fsync (or after one that failed:
	its page may be clean and still not on disk), the journal's name
	before its directory's fsync returned.  Before its first change of
	the mailbox it writes that record again, the octets the killed
	session wrote where it wrote them, and makes it durable; and it
	syncs the directory (syncorder's undo rule with there="named").  So
	a crash after the change cannot keep the change and lose what led
	to it.  Kills in turn, each session and its repair under strace
	(-xx: the octets written), until both cases came."""
	sc = SCENARIOS["gaps"]
	records = named = 0
	for n in range(1, MAX_STEPS):
		reset(pop3, sc.initial)
		shutil.rmtree(pop3.base / "trace", ignore_errors=True)
		argv, log = strace_wrapper(pop3)
		argv[argv.index("-s") + 1:argv.index("-s") + 2] = ["256", "-xx"]
		if not fault_run(pop3, sc, "kill:%d" % n, wrapper=argv).killed:
			break		# the session ended: no kill left
		if JOURNAL not in journals(pop3):
			continue
		now = pop3.read_mbox()
		rep0 = syncorder.check(log, pop3.mailbox(), pop3.spool / JOURNAL,
		    len(sc.initial), cwd=pop3.base, hashed=True)
		made = [e for e in rep0.jn if e.kind == "create" and
		    e.path == rep0.jpath]
		there = True if made and rep0.name_durable(made[-1],
		    float("inf")) else "named"
		recs = [w for w in rep0.jw if w.kind == "write" and
		    rep0.guarded and w.start > rep0.guarded[0].end]
		log.rename(log.with_name("killed"))
		t = pop3.run(pop3.login_cmds() + ["QUIT"], wrapper=argv)
		assert t[-1].ok and pop3.read_mbox() == sc.after(False), \
		    "kill:%d\n%r" % (n, t)
		rep = syncorder.check(log, pop3.mailbox(), pop3.spool / JOURNAL,
		    len(now), cwd=pop3.base, hashed=True, there=there)
		ctx = "kill:%d (there=%r)\n%s\nevents:\n%s" % (n, there,
		    "\n".join(rep.violations), rep.timeline())
		assert rep.violations == [], ctx
		if not rep.guarded:
			continue	# nothing left to redo
		named += there == "named"
		if recs:
			first, last = rep.guarded[0].start, recs[-1]
			again = [w for w in rep.jw if w.kind == "write" and
			    w.start < first and w.off == last.off and
			    _octets(w) == _octets(last) and w.len == last.len]
			assert again and rep.durable(again[0], first), \
			    "%s\nthe killed session's last record: %r" % (ctx, last)
			records += 1
		if records and named:
			break
	assert records and named, "kill:1 to kill:%d: %d repairs after a " \
	    "progress record, %d of a journal whose name was not durable" % (
	    n, records, named)


@pytest.mark.parametrize("kind", ["eio", "done"])
def test_given_up_order_on_disk(pop3, kind):
	"""strace of updates with EIO injected at each write-like call in
	turn (before the call, or after it did its work: "done"), up to the
	one that fails the directory's fsync after the journal's rename, or
	the rename itself: every update that did not change the mailbox
	answers -ERR, and by that reply a journal whose name was never
	durable has its removal durable or a write of it since the rename
	(syncorder's void rule: a crash that keeps the name and loses the
	removal must not leave the complete journal, which the next session
	would apply to an update the client was told failed); the next
	session leaves the mailbox as it was.  That the write makes it a
	journal no repair applies is the unit test test_journal_given_up."""
	sc = SCENARIOS["first"]
	seen = False
	for n in range(1, MAX_STEPS):
		reset(pop3, sc.initial)
		shutil.rmtree(pop3.base / "trace", ignore_errors=True)
		argv, log = strace_wrapper(pop3)
		with Run(pop3, "--no-cache", binary=fault_binary(), env=dict(
		    sc.env, POP3D_FAULT="%s:%d" % (kind, n)), wrapper=argv,
		    timeout=60) as r:
			pas, q = r.login(), None
			if pas is not None and pas.ok:
				for d in sc.dele:
					assert r.cmd("DELE %d" % d).ok, r.log
				q = r.cmd("QUIT", timeout=60)
			r.close(timeout=60)
		if not (pas is not None and pas.ok):
			continue	# the fault fell in the login
		assert q is not None, r.log + r.stderr
		rep = syncorder.check(log, pop3.mailbox(), pop3.spool / JOURNAL,
		    len(sc.initial), cwd=pop3.base, hashed=True, refused=True)
		if rep.mailbox:
			continue	# the update changed the mailbox
		ctx = "%s:%d\n%s\nevents:\n%s" % (kind, n, "\n".join(
		    rep.violations), rep.timeline())
		assert rep.violations == [] and pop3.read_mbox() == sc.initial, \
		    ctx
		if any(e.kind == "create" and e.path == rep.jpath and
		    not rep.name_durable(e, rep.reply.start) for e in rep.jn):
			t = pop3.run(pop3.login_cmds() + ["STAT", "QUIT"])
			assert t[-1].ok and pop3.read_mbox() == sc.initial, \
			    "%s\nnext session:\n%r" % (ctx, t)
			seen = True
			break
	assert seen, "no fault fell between the journal's rename and the " \
	    "first change of the mailbox (%s:1 to %s:%d)" % (kind, kind, n)


def test_given_up_spoil_fails_order_on_disk(pop3):
	"""The directory's fsync after the journal's rename fails, and so
	does the spoil's fdatasync (strace injects EIO into the first fsync
	and the second fdatasync of the session: the journal's own comes
	first): the removal of the journal, the only thing left that keeps
	a crash from bringing it back complete, is synced before the -ERR
	(syncorder's void rule at the reply); the mailbox as it was."""
	sc = SCENARIOS["first"]
	reset(pop3, sc.initial)
	argv, log = strace_wrapper(pop3)
	argv[1:1] = ["-e", "inject=fsync:error=EIO:when=1", "-e",
	    "inject=fdatasync:error=EIO:when=2"]
	# -S: strace injects an error by making the call one no seccomp
	# filter allows (the process is killed by SIGSYS).
	with Run(pop3, "--no-cache", "-S", wrapper=argv, timeout=60) as r:
		assert r.login().ok, r.log
		for d in sc.dele:
			assert r.cmd("DELE %d" % d).ok, r.log
		q = r.cmd("QUIT", timeout=60)
		r.close(timeout=60)
	assert q is not None and not q.ok, r.log + r.stderr
	rep = syncorder.check(log, pop3.mailbox(), pop3.spool / JOURNAL,
	    len(sc.initial), cwd=pop3.base, hashed=True, refused=True)
	ctx = "%s\nevents:\n%s" % ("\n".join(rep.violations), rep.timeline())
	# The two injected calls were the ones meant: the journal was named
	# and never by a directory fsync that returned before its removal.
	made = [e for e in rep.jn if e.kind == "create" and
	    e.path == rep.jpath]
	assert made and not rep.name_durable(made[0], rep.jn[-1].start), ctx
	assert rep.violations == [] and pop3.read_mbox() == sc.initial, ctx
	assert journals(pop3) == [], ctx


# The checker itself, on logs written here: a good update, and for each
# rule orders that break it.  /s/box had 100 octets; /s/.j is the journal.
GOOD = """\
100 openat(AT_FDCWD, "/s/box", O_RDWR|O_CLOEXEC) = 3
100 openat(AT_FDCWD, "/s/.j", O_RDWR|O_CREAT|O_EXCL|O_CLOEXEC, 0600) = 4
100 pwrite64(4, "data"..., 4096, 4096) = 4096
100 pwrite64(4, "table", 5, 8192) = 5
100 fdatasync(4) = 0
100 pwrite64(4, "head, with a comma) = 1", 23, 0) = 23
100 fdatasync(4) = 0
100 openat(AT_FDCWD, "/s", O_RDONLY|O_CLOEXEC|O_DIRECTORY) = 5
100 fsync(5) = 0
100 close(5) = 0
100 copy_file_range(3, [60], 3, [10 => 30], 20, 0) = 20
100 fdatasync(3) = 0
100 pwrite64(4, "record", 6, 12288) = 6
100 fdatasync(4) = 0
100 ftruncate(3, 30) = 0
100 fdatasync(3) = 0
100 unlink("/s/.j") = 0
100 openat(AT_FDCWD, "/s", O_RDONLY|O_CLOEXEC|O_DIRECTORY) = 5
100 fsync(5) = 0
100 close(5) = 0
100 close(4) = 0
100 write(1, "+OK bye\\r\\n", 9) = 9
"""


HASHED = "".join(ln + "\n" for i, ln in
    enumerate(GOOD.splitlines(), 1) if i not in (5, 13, 14))


def _lines(log, *idx):
	return "\n".join(log.splitlines()[i - 1] for i in idx)


def _edit(drop=(), put=None, base=GOOD):
	"""base (GOOD) without the lines numbered in drop, with {line: text}
	put in place of lines."""
	ls = base.splitlines()
	for i, t in (put or {}).items():
		ls[i - 1] = t
	return "\n".join(ln for i, ln in enumerate(ls, 1) if i not in drop)


# An update given up after the journal's rename because the directory's
# fsync failed: the journal spoiled (a write, synced) before its unlink.
GIVEN_UP = """\
100 openat(AT_FDCWD, "/s/box", O_RDWR|O_CLOEXEC) = 3
100 openat(AT_FDCWD, "/s/.t", O_RDWR|O_CREAT|O_EXCL|O_CLOEXEC, 0600) = 4
100 pwrite64(4, "data"..., 4096, 4096) = 4096
100 pwrite64(4, "head", 23, 0) = 23
100 fdatasync(4) = 0
100 rename("/s/.t", "/s/.j") = 0
100 openat(AT_FDCWD, "/s", O_RDONLY|O_CLOEXEC|O_DIRECTORY) = 5
100 fsync(5) = -1 EIO (Input/output error)
100 close(5) = 0
100 pwrite64(4, "\\0\\0\\0\\0\\0\\0\\0\\0", 8, 0) = 8
100 fdatasync(4) = 0
100 close(4) = 0
100 unlink("/s/.j") = 0
100 write(1, "-ERR [SYS/TEMP] no\\r\\n", 20) = 20
"""


# A repair that redoes the moves of a journal left by a killed session:
# the record it read written again and synced, the directory synced.
REPAIR = "\n".join([_lines(GOOD, 1),
    '100 openat(AT_FDCWD, "/s/.j", O_RDWR|O_CLOEXEC) = 4',
    "100 fdatasync(3) = 0", '100 pwrite64(4, "record", 6, 4096) = 6',
    _lines(GOOD, 5, 8, 9, 10, 11, 12, 15, 16, 17, 18, 19, 20, 22)]) + "\n"


RULE_CASES = {
	"good": (GOOD, None),
	"no_sync_before_commit": (_edit(drop=[5]), "commit"),
	"commit_before_data": (_edit(drop=[6], put={3: _lines(GOOD, 6, 3)}),
	    "commit"),
	"no_dir_fsync": (_edit(drop=[9]), "undo"),
	# fsync of the journal itself does not make its name durable.
	"file_fsync_for_dir": (_edit(put={9: "100 fsync(4) = 0"}), "undo"),
	# sync_file_range starts writeback, it makes nothing durable.
	"writeback_for_sync": (_edit(put={7: "100 sync_file_range(4, 0, 0, "
	    "SYNC_FILE_RANGE_WRITE) = 0"}), "undo"),
	"record_before_mailbox_sync": (_edit(drop=[12]), "ahead"),
	"record_not_synced": (_edit(drop=[14]), "undo"),
	"no_final_sync": (_edit(drop=[16]), "reply"),
	"unlink_not_synced": (_edit(drop=[19]), "reply"),
	"journal_left": (_edit(drop=[17]), "reply"),
	"not_ok": (_edit(put={22: '100 write(1, "-ERR no\\r\\n", 9) = 9'}),
	    "reply"),
	# The same through a dup and a syncfs: good.
	"dup_and_syncfs": (_edit(put={12: "100 dup(3) = 7\n"
	    "100 fdatasync(7) = 0", 14: "100 syncfs(4) = 0"}), None),
	# A sync that began before the write returned (another thread) does
	# not cover it.
	"sync_overlaps_write": (_edit(drop=[3, 5], put={4: "\n".join([
	    '100 pwrite64(4, "table", 5, 8192) = 5',
	    '101 pwrite64(4, "data"..., 4096, 4096 <unfinished ...>',
	    "100 fdatasync(4 <unfinished ...>",
	    "101 <... pwrite64 resumed>) = 4096",
	    "100 <... fdatasync resumed>) = 0"])}).replace(
	    "100 openat(AT_FDCWD, \"/s/.j\"", "100 clone3({flags=CLONE_VM|"
	    "CLONE_FILES|CLONE_THREAD}, 88) = 101\n100 openat(AT_FDCWD, "
	    "\"/s/.j\"", 1), "commit"),
	# The mailbox written by a child with a copy of the table: good; a
	# descriptor the checker cannot follow: a failure, never a pass.
	"forked_child": (_edit(put={11: "100 clone(child_stack=NULL, "
	    "flags=SIGCHLD) = 200\n200 pwrite64(3, \"x\", 20, 10) = 20",
	    12: "200 fdatasync(3) = 0"}), None),
	"unknown_fd": (_edit(put={11: '100 pwrite64(9, "x", 20, 10) = 20'}),
	    "descriptor"),
	"no_journal": ('100 openat(AT_FDCWD, "/s/box", O_RDWR) = 3\n'
	    '100 pwrite64(3, "x", 20, 10) = 20\n100 fdatasync(3) = 0\n'
	    '100 write(1, "+OK\\r\\n", 5) = 5\n', "undo"),
	"lone_truncate": ('100 openat(AT_FDCWD, "/s/box", O_RDWR) = 3\n'
	    "100 ftruncate(3, 40) = 0\n100 fdatasync(3) = 0\n"
	    '100 write(1, "+OK\\r\\n", 5) = 5\n', None),
	# A journal made under another name and renamed: its new name must
	# be durable too.
	"renamed_unsynced": (_edit(put={2: '100 openat(AT_FDCWD, "/s/.t", '
	    "O_RDWR|O_CREAT|O_EXCL|O_CLOEXEC, 0600) = 4", 10: "100 close(5) = 0\n"
	    '100 rename("/s/.t", "/s/.j") = 0'}), "undo"),
	"renamed_synced": (_edit(put={2: '100 openat(AT_FDCWD, "/s/.t", '
	    "O_RDWR|O_CREAT|O_EXCL|O_CLOEXEC, 0600) = 4", 8:
	    '100 rename("/s/.t", "/s/.j") = 0\n100 openat(AT_FDCWD, "/s", '
	    "O_RDONLY|O_CLOEXEC|O_DIRECTORY) = 5"}), None),
	# Renamed to the journal's name before its octets are durable: a
	# crash could leave that name on an incomplete journal.
	"renamed_before_sync": (_edit(put={2: '100 openat(AT_FDCWD, "/s/.t", '
	    "O_RDWR|O_CREAT|O_EXCL|O_CLOEXEC, 0600) = 4", 7:
	    '100 rename("/s/.t", "/s/.j") = 0\n100 fdatasync(4) = 0'}),
	    "name: the"),
	"hashed_renamed_before_sync": (HASHED.replace(
	    '"/s/.j", O_RDWR|O_CREAT|O_EXCL', '"/s/.t", O_RDWR|O_CREAT').replace(
	    "100 fdatasync(4) = 0\n", '100 rename("/s/.t", "/s/.j") = 0\n'
	    "100 fdatasync(4) = 0\n"), "name: the", True),
	"hashed_renamed": (HASHED.replace('"/s/.j", O_RDWR|O_CREAT|O_EXCL',
	    '"/s/.t", O_RDWR|O_CREAT').replace("100 fdatasync(4) = 0\n",
	    '100 fdatasync(4) = 0\n100 rename("/s/.t", "/s/.j") = 0\n'), None,
	    True),
	# pop3d's order (journal.c): a journal that hashes its data, one
	# fsync for it; no progress record, the moves durable before the
	# truncate.  Good only for a hashed journal.
	"one_sync_hashed": (HASHED, None, True),
	"one_sync_unhashed": (HASHED, "commit"),
	"cut_before_moves_durable": (_edit(drop=[12, 13, 14]), "cut"),
	"hashed_no_sync": (HASHED.replace("100 fdatasync(4) = 0\n", ""),
	    "undo", True),
	"hashed_no_cut_sync": (HASHED.replace("100 fdatasync(3) = 0\n", "",
	    1), "cut", True),
	"given_up": (GIVEN_UP, None, True, True),
	# The journal's name durable after all (the fsync did not fail):
	# its removal needs no spoil.
	"given_up_name_durable": (_edit(drop=[10, 11], put={8:
	    "100 fsync(5) = 0"}, base=GIVEN_UP), None, True, True),
	"given_up_unsynced": (_edit(drop=[11], base=GIVEN_UP), "void", True,
	    True),
	"given_up_unspoiled": (_edit(drop=[10, 11], base=GIVEN_UP), "void",
	    True, True),
	"given_up_ok": (_edit(put={14: '100 write(1, "+OK\\r\\n", 5) = 5'},
	    base=GIVEN_UP), "reply: an update given up", True, True),
	"given_up_changed": (_edit(put={9: "100 close(5) = 0\n"
	    '100 pwrite64(3, "x", 20, 10) = 20'}, base=GIVEN_UP),
	    "reply: an update given up", True, True),
	# Neither spoiled nor removed: the complete journal stands.
	"given_up_left": (_edit(drop=[10, 11, 13], base=GIVEN_UP), "void",
	    True, True),
	# Removed, and the removal durable before the reply: no spoil needed.
	"given_up_removal_synced": (_edit(drop=[10, 11], put={13:
	    _lines(GIVEN_UP, 13, 7) + "\n100 fsync(5) = 0"}, base=GIVEN_UP),
	    None, True, True),
	# -ERR before the spoil is durable.
	"given_up_reply_first": (_edit(drop=[14], put={9: _lines(GIVEN_UP, 9,
	    14)}, base=GIVEN_UP), "void", True, True),
	# A repair of a journal whose name a killed session made and may not
	# have made durable: its own directory fsync before the moves.
	"repair_named": (REPAIR, None, True, False, "named"),
	"repair_named_no_dir_fsync": (_edit(drop=[6, 7, 8], base=REPAIR),
	    "undo", True, False, "named"),
	"repair_there_no_dir_fsync": (_edit(drop=[6, 7, 8], base=REPAIR),
	    None, True, False, True),
}


@pytest.mark.parametrize("case", list(RULE_CASES))
def test_syncorder_rules(tmp_path, case):
	"""syncorder.check() on hand-written logs: passes the good order and
	its equivalents, names the broken rule of every other."""
	text, rule, hashed, refused, there = (RULE_CASES[case] +
	    (False, False, False))[:5]
	log = tmp_path / "log"
	log.write_text(text + "\n")
	rep = syncorder.check(log, "/s/box", "/s/.j", 100, hashed=hashed,
	    refused=refused, there=there)
	got = "\n".join(rep.violations)
	if rule is None:
		assert got == "", got + "\n" + rep.timeline()
		assert (rep.jn if refused else rep.guarded) and \
		    rep.reply is not None
	else:
		assert rule in got, (got, rep.timeline())
