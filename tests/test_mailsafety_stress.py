"""Stress (issue 4): procmail writers and overlapping POP3 sessions on one
mailbox; two sessions started at the same moment."""

import random
import threading
import time

import pytest

from conftest import (FROM_LINE, PASSWORD, USER, expected_retr, mbox,
    parse_mbox)
from mailsafety import Run, digest, msgid, procmail_deliver, procmail_rc
from messages import message, numbered

WRITERS = 3
PER_WRITER = 200
SESSIONS = 50
SESSION_THREADS = 3


def stress_message(w, i, rnd):
	"""Message i of writer w: a unique Message-ID, 1 to 79 body lines
	(procmail adds no separator after a message ending in an empty line),
	sometimes lines that need dot-stuffing or look like headers."""
	lines = [b"writer %d message %d line %d %s" % (w, i, k,
	    b"x" * rnd.randrange(0, 80)) for k in range(rnd.randrange(1, 80))]
	if rnd.random() < 0.2:
		lines.insert(0, b".starts with a dot")
	if rnd.random() < 0.1:
		lines.append(b">From quoted")
	body = b"".join(ln + b"\n" for ln in lines)
	return message(i, tag="w%d" % w, body=body)


class Session:
	"""What one POP3 session did."""

	def __init__(self, k):
		self.k = k
		self.login = None	# reply text to PASS
		self.retrieved = {}	# Message-ID -> digest of RETR data
		self.deleted = []	# Message-IDs given to DELE
		self.quit = None	# reply text to QUIT
		self.log = ""


def one_session(pop3, k, rnd):
	s = Session(k)
	with Run(pop3, timeout=60) as r:
		rep = r.login()
		s.login = rep.text if rep else None
		if rep is None or not rep.ok:
			r.close()
			s.log = r.log + r.stderr
			return s
		st = r.cmd("STAT")
		n = int(st.text.split()[1])
		# Retrieve up to 40 (all, or a random choice), then delete
		# what was retrieved.
		want = list(range(1, n + 1))
		if n > 40 or (n and rnd.random() < 0.3):
			want = sorted(rnd.sample(want, min(40, n // 2 + 1)))
		for i in want:
			rep = r.cmd("RETR %d" % i)
			assert rep is not None and rep.ok, r.log
			mid = msgid(rep.data.replace(b"\r\n", b"\n"))
			assert mid not in s.retrieved, (mid, r.log)
			s.retrieved[mid] = digest(rep.data)
			assert r.cmd("DELE %d" % i).ok
			s.deleted.append(mid)
		q = r.cmd("QUIT", timeout=60)
		s.quit = q.text if q else None
		r.close(timeout=60)
		s.log = r.log + r.stderr
	return s


def test_procmail_writers_and_overlapping_sessions(pop3):
	"""3 procmail writers deliver 200 messages each while 50 sessions,
	started one after another by 3 threads (up to 3 overlap; the losers
	get [IN-USE]; every third waits for the others to end), retrieve
	and delete.  At the end every delivered
	message was retrieved by exactly one session whose QUIT succeeded
	and is gone, or is still in the mailbox exactly once; all octets as
	delivered (Message-ID and a hash of the octets)."""
	rc = procmail_rc(pop3, locksleep=1)
	pop3.write_mbox(b"")
	rnd = random.Random(4)
	msgs = {}
	work = []
	for w in range(WRITERS):
		mine = []
		for i in range(PER_WRITER):
			m = stress_message(w, i, rnd)
			msgs[msgid(m)] = m
			mine.append(m)
		work.append(mine)
	errors = []
	done = threading.Event()
	lock = threading.Lock()

	total = WRITERS * PER_WRITER
	delivered = [0]

	def writer(mine):
		try:
			for m in mine:
				procmail_deliver(pop3, rc, FROM_LINE + b"\n" + m)
				with lock:
					delivered[0] += 1
		except BaseException as e:	# reported by the main thread
			errors.append(e)

	sessions = []
	counter = iter(range(SESSIONS))
	started = [threading.Event() for _ in range(SESSIONS)]
	ended = [threading.Event() for _ in range(SESSIONS)]

	def reader(seed):
		r = random.Random(seed)
		try:
			while True:
				with lock:
					k = next(counter, None)
				if k is None:
					return
				# Session k starts after session k-1 started and
				# once k/50 of the mail is delivered, so that
				# the sessions span the deliveries; every third
				# one also waits until all before it ended, so
				# that some get in whatever the speed of the
				# machine; the others overlap (up to 3 at once).
				while (delivered[0] < k * total // SESSIONS and
				    not done.is_set() or k > 0 and
				    not started[k - 1].is_set() or k % 3 == 0 and
				    not all(e.is_set() for e in ended[:k])) and \
				    not errors:
					time.sleep(0.005)
				started[k].set()
				try:
					sessions.append(one_session(pop3, k, r))
				finally:
					ended[k].set()
		except BaseException as e:
			errors.append(e)

	t0 = time.monotonic()
	ws = [threading.Thread(target=writer, args=(m,)) for m in work]
	rs = [threading.Thread(target=reader, args=(i,))
	    for i in range(SESSION_THREADS)]
	for t in ws + rs:
		t.start()
	for t in ws:
		t.join(120)
	done.set()
	for t in rs:
		t.join(120)
	took = time.monotonic() - t0
	if errors:
		raise errors[0]
	assert not any(t.is_alive() for t in ws + rs), "threads hang"

	ok = [s for s in sessions if s.login and s.login.startswith("+OK")]
	inuse = [s for s in sessions if s.login and "[IN-USE]" in s.login]
	print("stress: %.1f s, %d sessions in, %d [IN-USE]" % (took, len(ok),
	    len(inuse)))
	other = [s for s in sessions if s not in ok and s not in inuse]
	assert other == [], [(s.login, s.log) for s in other]
	assert len(sessions) == SESSIONS
	# Every session that logged in ended its update with +OK.
	bad = [s for s in ok if not (s.quit and s.quit.startswith("+OK"))]
	assert bad == [], [(s.quit, s.log[-2000:]) for s in bad]

	# Every retrieval sent the octets delivered.
	for s in ok:
		for mid, d in s.retrieved.items():
			assert mid in msgs, (mid, s.log[-2000:])
			assert d == digest(expected_retr(msgs[mid])), (mid,
			    s.log[-2000:])
	deleted_by = {}
	for s in ok:
		for mid in s.deleted:
			deleted_by.setdefault(mid, []).append(s.k)
	left = {}
	for frm, m in parse_mbox(pop3.read_mbox()):
		mid = msgid(m)
		assert mid in msgs, "unknown message in the mailbox: %r" % m[:200]
		assert m == msgs[mid], "changed octets: %s" % mid
		left[mid] = left.get(mid, 0) + 1
	for mid in msgs:
		d = deleted_by.get(mid, [])
		assert len(d) <= 1, "%s deleted by sessions %r" % (mid, d)
		if d:
			assert mid not in left, "%s deleted by %r and still " \
			    "there" % (mid, d)
		else:
			assert left.get(mid) == 1, "%s: lost (%r)" % (mid,
			    left.get(mid))
	assert pop3.spool_files() == [USER]
	# The test meant something: sessions got in (at least every third)
	# and deleted mail, and some overlapped.  (Most overlapping ones get
	# [IN-USE]: a session waits for the spool locks at login and QUIT
	# while three procmails keep taking them.)
	assert len(ok) >= SESSIONS // 3 and len(deleted_by) >= 100, (len(ok),
	    len(inuse), len(deleted_by))
	print("stress: %d retrieved and deleted, %d left, %.1f s" % (
	    len(deleted_by), len(left), took))


@pytest.mark.parametrize("round_", range(5))
def test_two_sessions_at_the_same_moment(pop3, round_):
	"""Two pop3d get PASS at the same moment: exactly one +OK, the other
	-ERR [IN-USE] at once; the winner's update then works."""
	pop3.write_mbox(numbered(3))
	a, b = Run(pop3), Run(pop3)
	try:
		for r in (a, b):
			assert r.greeting().ok
			assert r.cmd("USER " + USER).ok
		line = ("PASS " + PASSWORD + "\r\n").encode()
		a.s.proc.stdin.write(line)
		b.s.proc.stdin.write(line)
		a.s.proc.stdin.flush()
		b.s.proc.stdin.flush()
		ra, rb = a.s.read_reply(), b.s.read_reply()
		texts = sorted([ra.text, rb.text])
		assert texts[0].startswith("+OK") and texts[1].startswith(
		    "-ERR [IN-USE]"), texts
		win = a if ra.ok else b
		assert win.cmd("DELE 2").ok and win.cmd("QUIT").ok
	finally:
		a.close()
		b.close()
	assert pop3.read_mbox() == mbox([message(1), message(3)])
