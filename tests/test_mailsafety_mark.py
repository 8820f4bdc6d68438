"""The mark of an update (journal formats POP3DJ4 and POP3DJ5, journal.c):
the crash states its repair must take, and what it must never take for
them.

After the last move an update writes a mark (a NUL and 15 octets of the
journal header's digest) over the first octets of [D+N, F), fsyncs the
mailbox, writes the progress record P = X+1 and fsyncs the journal, then
truncates.  Here, besides the kills of test_mailsafety_fault.py:
  - machine-crash states built from a killed run: the mark's write torn
    across a page boundary, its record missing (found by a review);
  - a mail reader that rewrote the file after a kill left the record and
    the mark (found by a review: the repair cut delivered mail);
  - the repair itself killed at every step, from every committed state,
    with mail delivered before and after it;
  - a journal of a format this pop3d does not know (found by a review:
    removed as "never started", the half-moved mailbox served);
  - the repair killed or failed at every step from the mark without its
    record, with mail delivered;
  - the order on disk of a repair that follows a kill or an error of the
    update, judged by tests/syncorder.py over both sessions.
These tests read the journal's layout (its header, its record slots) to
find and build the states; what they check is the mailbox's octets
against what the test wrote.
"""

import hashlib
import os

import pytest

import syncorder
import test_mailsafety_fault as F
from conftest import mbox, parse_mbox
from mailsafety import (JOURNAL, Run, describe, fault_binary, journals,
    mua_rewrite)
from messages import message

PAGE = 4096
HDR = 216				# JNL_HDR of POP3DJ4 and POP3DJ5


def le64(b, off):
	return int.from_bytes(b[off:off + 8], "little")


def jinfo(jb):
	"""(D, F, N, X, mark, P) of a POP3DJ5 journal (P None: no record)."""
	assert jb[:8] == b"POP3DJ5\n"
	d, f, n, x = le64(jb, 24), le64(jb, 32), le64(jb, 40), le64(jb, 56)
	hh = jb[HDR - 32:HDR]
	best = None
	for off in (PAGE, 2 * PAGE):
		b = jb[off:off + 72]
		if len(b) < 72 or b[:8] != b"POP3DP2\n" or b[24:40] != hh[:16]:
			continue
		if hashlib.sha256(b[:40]).digest() != b[40:72]:
			continue
		seq, p = le64(b, 8), le64(b, 16)
		if best is None or seq > best[0]:
			best = (seq, p)
	return d, f, n, x, b"\0" + hh[:15], None if best is None else best[1]


def put_mailbox(pop3, data):
	"""The mailbox rewritten in place (the journal names its inode)."""
	with open(pop3.mailbox(), "r+b") as fh:
		fh.truncate(0)
		fh.write(data)


def scenario(at_mod, jshift):
	"""Messages 1, 2 (deleted), 3: message 3 moves down over message 2,
	its body padded so that D+N (the new size, where the mark goes) is
	at_mod past a page boundary."""
	m1, m2 = message(1), message(2)
	for k in range(0, 20000):
		m3 = message(3, body=b"".join(b"line %d of message 3\n" % i
		    for i in range(150)) + b"x" * k + b"\n")
		if len(mbox([m1, m3])) % PAGE == at_mod:
			break
	env = {} if jshift is None else {"POP3D_JSHIFT": jshift}
	return F.Scenario([m1, m2, m3], [2], env=env)


def marked_unrecorded(pop3, name, sc):
	"""The state a kill leaves after the mark's pwrite, before its record:
	(kill step, mailbox, journal octets, D+N, mark)."""
	steps, commit = F.kill_scan(pop3, name)
	after = sc.after(False)
	for k in range(commit, steps + 1):
		F.reset(pop3, sc.initial)
		res = F.fault_run(pop3, sc, "kill:%d" % k)
		assert res.killed, res
		if JOURNAL not in journals(pop3):
			continue
		jb = (pop3.spool / JOURNAL).read_bytes()
		d, f, n, x, mark, p = jinfo(jb)
		now = pop3.read_mbox()
		at = d + n
		assert at == len(after)
		if p is not None and p == x + 1:
			continue
		if now[at:at + 16] == mark and len(now) == f:
			return k, res, now, jb, at, mark
	pytest.fail("no kill left the mark without its record")


@pytest.mark.parametrize("jshift", [None, "0"], ids=["plain", "jshift0"])
@pytest.mark.parametrize("kept", ["first_page", "second_page"])
def test_torn_mark(pop3, kept, jshift):
	"""A machine crash after the mark's pwrite, before its fsync, that
	kept only the page holding one part of the mark (D+N 8 octets before
	a page boundary).  The truncate never began (no record P = X+1) and
	every octet the mark did not overwrite is as the journal says: the
	repair puts back the header's copy of the mark's octets and redoes
	the moves.  (It put back only a whole mark: the torn one made the
	mailbox fit neither state, -ERR [SYS/PERM], and the session after
	served the half updated mailbox.)"""
	sc = scenario(PAGE - 8, jshift)
	name = "mark_torn_%s" % (jshift or "plain")
	F.SCENARIOS[name] = sc
	try:
		k, res, now, jb, at, mark = marked_unrecorded(pop3, name, sc)
	finally:
		del F.SCENARIOS[name]
	orig = sc.initial
	b = (at // PAGE + 1) * PAGE		# the page boundary inside the mark
	assert at < b < at + 16
	if kept == "first_page":
		# Moves and the mark's first 8 octets on disk, not its last 8.
		crash = now[:b] + orig[b:]
	else:
		# The page of the moves' end and the mark's head lost (every
		# move page lost too): only the mark's last 8 octets on disk.
		crash = orig[:b] + now[b:]
	assert crash[at:at + 16] not in (mark, orig[at:at + 16])
	put_mailbox(pop3, crash)
	t = pop3.run(pop3.login_cmds() + ["STAT", "QUIT"])
	data = pop3.read_mbox()
	t2 = pop3.run(pop3.login_cmds() + ["STAT", "QUIT"])
	data2 = pop3.read_mbox()
	ctx = ("kill:%d, D+N=%d, kept %s\nfirst session:\n%r\n%s\n"
	    "second session:\n%r\nmailbox after it: %d octets, %d messages, "
	    "NUL at %r; journals %r" % (k, at, kept, t, t.stderr, t2,
	    len(data2), len(parse_mbox(data2)),
	    [i for i, c in enumerate(data2) if c == 0], journals(pop3)))
	assert t[1].ok, ctx
	assert data == sc.after(False), ctx


LATE2 = message(9, tag="later")


def chunks(sc):
	"""Octets an MDA (or a killed one) may append after the kill."""
	after = sc.after(False)
	return {
		"twin": sc.initial[len(after):],	# the very octets cut
		"short": b"From x",			# a killed MDA's start
		"late": mbox([F.LATE]),
	}


@pytest.mark.parametrize("what", ["twin", "short", "late"])
@pytest.mark.parametrize("name", ["first", "gaps", "jshift0", "crlf"])
def test_repair_killed_with_deliveries(pop3, name, what):
	"""Every committed state (untouched, partial, the last one before the
	truncate: moves, mark and record P = X+1 done; truncated), chosen
	octets X appended, the repair killed at every step, other mail Y
	appended after that kill, then a clean session: the mailbox must be
	exactly the update's result + X + Y."""
	if name == "jshift0":
		F.SCENARIOS[name] = F.Scenario(F.gaps(), [2, 6, 8, 10, 14, 20],
		    env={"POP3D_JSHIFT": "0"})
	if name == "crlf":
		F.SCENARIOS[name] = F.Scenario(F.six(), [2, 4], nl=b"\r\n",
		    env={"POP3D_JSHIFT": "0"})
	try:
		sc = F.SCENARIOS[name]
		phases = F.committed_states(pop3, name)
	finally:
		if name in ("jshift0", "crlf"):
			del F.SCENARIOS[name]
	x = chunks(sc)[what]
	y = mbox([LATE2])
	for ph, (k, res, st0, snap) in phases.items():
		for m in range(1, F.MAX_STEPS):
			F.restore(pop3, snap)
			pop3.append_mbox(x)
			r, pas, stat, quit = F.repair_run(pop3, "kill:%d" % m)
			pop3.append_mbox(y)
			t = pop3.run(pop3.login_cmds() + ["STAT", "QUIT"])
			want = sc.after(False) + x + y
			got = pop3.read_mbox()
			ctx = "%s (kill:%d), repair kill:%d\n%s\n%r\n%s" % (ph, k,
			    m, r.stderr, t, t.stderr)
			assert t[1].ok, ctx
			assert got == want, ctx
			assert journals(pop3) == [], ctx
			if r.rc != -9:
				break


BIG = b"".join(b"%05d a line of the deleted message\n" % i
    for i in range(200))


def test_mua_deletes_the_stale_copies_after_the_mark(pop3):
	"""A kill at the truncate (moves, mark and record P = X+1 on disk);
	an MDA delivers NEW (larger than the stale copies); a local MUA opens
	the mailbox and shows the kept messages 2, 3, 4, then stale copies of
	2, 3, 4, then NEW.  The user deletes the three copies; the MUA
	rewrites the file in place from the first changed message on (the
	mark at D+N, before it, stays): NEW moves down into [D+N, F) and the
	file is still at least F long.  [D+N, F) is not what the update left
	there: the repair leaves the file as the MUA wrote it.  (It took
	"record and mark" for "before the truncate" and cut NEW's From_ line,
	headers and the start of its body.)"""
	big = message(1, body=BIG)
	msgs = [big, message(2), message(3), message(4)]
	sc = F.Scenario(msgs, [1])
	F.SCENARIOS["mark_mua"] = sc
	try:
		phases = F.committed_states(pop3, "mark_mua")
	finally:
		del F.SCENARIOS["mark_mua"]
	k, res, st0, snap = phases["uncut"]
	F.restore(pop3, snap)
	jb = (pop3.spool / JOURNAL).read_bytes()
	v5 = jb[:8] == b"POP3DJ5\n"
	d, f, n = le64(jb, 24), le64(jb, 32), le64(jb, 40)
	new = message(5, tag="new", body=b"".join(b"new line %d\n" % i
	    for i in range(120)))
	pop3.append_mbox(mbox([new]))
	now = pop3.read_mbox()
	frm = b"\n\nFrom sender@example.org"
	dup = now.index(frm, d + n) + 2		# the stale copy of message 2
	nw = now.index(b"From: sender5@", dup)
	nw = now.rindex(b"From sender@example.org", dup, nw)	# NEW's From_
	assert dup > d + n + 16 and nw <= f
	mua = now[:dup] + now[nw:]
	assert len(mua) >= f, (len(mua), f)	# still at least F long
	mua_rewrite(pop3, mua)
	t = pop3.run(pop3.login_cmds() + ["STAT", "QUIT"])
	got = pop3.read_mbox()
	ctx = "POP3DJ5: %s\n%r\n%s\nmailbox from D+N-40: %r" % (v5, t,
	    t.stderr, got[d + n - 40:])
	# Kept as the MUA left it, the journal gone.
	assert got == mua, "not as the mail reader left it:\n" + ctx
	assert t[1].ok and journals(pop3) == [], ctx


def test_journal_of_a_newer_format_is_not_dropped(pop3):
	"""An update killed in its moves (the big message half shifted), then
	the journal's magic made a later format's ("POP3DJ6", the header's
	digest made anew): a pop3d that does not know the format refuses the
	login and keeps the journal where it is, for the pop3d that knows it;
	the next login too.  (It removed it as one "never complete", then
	renamed it aside, and the session after served the half-moved
	mailbox: found by two reviews.)"""
	name = "first"
	sc = F.SCENARIOS[name]
	phases = F.committed_states(pop3, name)
	k, res, st0, snap = phases["partial"]
	F.restore(pop3, snap)
	jp = pop3.spool / JOURNAL
	jb = bytearray(jp.read_bytes())
	jb[:8] = b"POP3DJ6\n"
	jb[HDR - 32:HDR] = hashlib.sha256(bytes(jb[:HDR - 32])).digest()
	jp.write_bytes(bytes(jb))
	half = pop3.read_mbox()
	assert half not in (sc.before(False), sc.after(False))
	for _ in range(2):
		t = pop3.run(pop3.login_cmds() + ["STAT", "QUIT"])
		ctx = "%r\n%s\njournals: %r\nmailbox: %s" % (t, t.stderr,
		    journals(pop3), describe(pop3.read_mbox()))
		assert not t[1].ok and "[SYS/PERM]" in t[1].text, ctx
		assert pop3.read_mbox() == half, ctx
		assert journals(pop3) == [JOURNAL] and \
		    jp.read_bytes() == bytes(jb), ctx


@pytest.mark.parametrize("fault", ["kill", "eio", "enospc", "done"])
@pytest.mark.parametrize("what", ["none", "twin", "short", "late"])
@pytest.mark.parametrize("jshift", [None, "0"], ids=["plain", "jshift0"])
def test_mark_without_record_repair_faults(pop3, jshift, what, fault):
	"""The mark without its record (a kill at its fsync), mail appended
	(the cut octets again, a killed MDA's "From x", a message; none),
	then the repair killed, or failed with EIO or ENOSPC, at every step,
	then a clean session: the update's result and the mail, exactly."""
	sc = scenario(PAGE - 8, jshift)
	name = "mark_faults_%s" % (jshift or "plain")
	F.SCENARIOS[name] = sc
	try:
		k, res, now, jb, at, mark = marked_unrecorded(pop3, name, sc)
		snap = F.snapshot(pop3)
	finally:
		del F.SCENARIOS[name]
	x = b"" if what == "none" else chunks(sc)[what]
	y = mbox([LATE2])
	for m in range(1, F.MAX_STEPS):
		F.restore(pop3, snap)
		pop3.append_mbox(x)
		r, pas, stat, quit = F.repair_run(pop3, "%s:%d" % (fault, m))
		pop3.append_mbox(y)
		t = pop3.run(pop3.login_cmds() + ["STAT", "QUIT"])
		got = pop3.read_mbox()
		ctx = "kill:%d, repair %s:%d\n%s\n%r\n%s" % (k, fault, m,
		    r.stderr, t, t.stderr)
		assert t[1].ok, ctx
		assert got == sc.after(False) + x + y, ctx
		assert journals(pop3) == [], ctx
		if fault == "kill" and r.rc != -9:
			break
		if fault != "kill" and m >= 40:
			break


# The order on disk of a repair that follows a kill or an error of the
# update: syncorder.check() of both in one strace log (-A).  The repair
# must not change the mailbox before what the killed or failed session
# wrote of the journal (its name, its last record) is durable, nor
# rewrite a record before the moves it counts are (found by a review:
# test_update_order_on_disk and test_repair_order_on_disk take the
# journal as durable, and a kill at its fsync, or an EIO there, made the
# repair act on a record or a name in the page cache only).

def order_violations(pop3, sc, log, q=None):
	rep = syncorder.check(log, pop3.mailbox(), pop3.spool / JOURNAL,
	    len(sc.initial), cwd=pop3.base, hashed=True)
	# -ERR to QUIT: the reply rule is not for it.
	return [v for v in rep.violations if q is None or q.ok or
	    not v.startswith("reply:")]


# Both sessions run the fault build: not again in the sanitizer pass.
@pytest.mark.plain_pass
@pytest.mark.parametrize("name", ["first", "gaps"])
def test_killed_update_then_repair_order(pop3, name):
	sc = F.SCENARIOS[name]
	steps, commit = F.kill_scan(pop3, name)
	argv, log = F.strace_wrapper(pop3)
	argv = argv[:1] + ["-A"] + argv[1:]
	bad = []
	for k in range(commit, steps + 1):
		F.reset(pop3, sc.initial)
		if log.exists():
			log.unlink()
		with Run(pop3, "--no-cache", binary=fault_binary(),
		    env=dict(sc.env, POP3D_FAULT="kill:%d" % k), wrapper=argv,
		    timeout=60) as r:
			assert r.login().ok, r.log
			for d in sc.dele:
				if r.cmd("DELE %d" % d) is None:
					break
			else:
				r.cmd("QUIT", timeout=60)
			r.close(timeout=60)
		if JOURNAL not in journals(pop3):
			break
		with Run(pop3, "--no-cache", binary=fault_binary(),
		    env=dict(sc.env), wrapper=argv, timeout=60) as r2:
			assert r2.login().ok, r2.log
			q = r2.cmd("QUIT", timeout=60)
			r2.close(timeout=60)
		assert q is not None and q.ok
		assert pop3.read_mbox() == sc.after(False)
		v = order_violations(pop3, sc, log)
		if v:
			bad.append("kill:%d, then a repair:\n  %s" % (k,
			    "\n  ".join(v)))
	assert bad == [], "\n".join(bad)


@pytest.mark.plain_pass
@pytest.mark.parametrize("name", ["first", "gaps"])
@pytest.mark.parametrize("jshift", [None, "0"], ids=["plain", "jshift0"])
@pytest.mark.parametrize("kind", ["eio", "enospc", "done"])
def test_error_then_repair_order(pop3, kind, jshift, name):
	sc = F.SCENARIOS[name]
	steps, commit = F.kill_scan(pop3, name)
	env = dict(sc.env)
	if jshift is not None:
		env["POP3D_JSHIFT"] = jshift
	argv, log = F.strace_wrapper(pop3)
	bad = []
	for n in range(commit, steps + 8):
		F.reset(pop3, sc.initial)
		if log.exists():
			log.unlink()
		with Run(pop3, "--no-cache", binary=fault_binary(),
		    env=dict(env, POP3D_FAULT="%s:%d" % (kind, n)),
		    wrapper=argv, timeout=60) as r:
			assert r.login().ok, r.log
			for d in sc.dele:
				assert r.cmd("DELE %d" % d).ok, r.log
			q = r.cmd("QUIT", timeout=60)
			r.close(timeout=60)
		v = order_violations(pop3, sc, log, q)
		if v:
			bad.append("%s:%d (QUIT %r, journals %r):\n  %s" % (
			    kind, n, q.text if q else None, journals(pop3),
			    "\n  ".join(v)))
	assert bad == [], "\n\n".join(bad)
