"""One spool shared by several front ends, with NFS's lock semantics
(issue 14): HAProxy balancing one user over two pop3d front ends that
serve the same spool directory.

This machine's kernel has no NFS client (no nfs in /proc/filesystems), so
no export is mounted: the test emulates what the Linux NFS client does to
locks instead.  fcntl(2) locks are already cross-host on NFS (NLM,
NFSv4), and the front ends here share one kernel, so the same local file
gives the same exclusion.  flock(2) is what NFS changes: the client turns
it into a whole-file byte-range lock on the server, which conflicts with
every fcntl lock by another owner, the same process's own included.
tests/flock_nfs.c, LD_PRELOADed into pop3d on both front ends (xinetd's
env attribute) and into the MDAs, does exactly that with open file
description locks; the fixture checks that it does.  (procmail, setuid,
and dotlockfile, setgid, ignore LD_PRELOAD, and never call flock:
procmail -v says "dotlocking, fcntl()".)

With the shim, a session lock that is flock on the mailbox (main before
this test) keeps pop3d's own fcntl spool lock out (no login with --lock
fcntl,dotlock) and every procmail delivery out for the whole session
(--lock dotlock): both runs below fail on it.  The hosts are those of
tests/test_proxy_hosts.py (network namespaces, 192.0.2.0/24).  The
first tests check the session lock's file on one host.
"""

import os
import re
import shutil
import subprocess
import threading
import time

import pytest

from conftest import LIMITS, NOBODY, REPO, ROOT, SESSION_LOCK, login, need
import refmbox
from test_auth_root import cc
from test_deploy import mbox
from test_proxy_hosts import (FRONT, FROMS, USERS, exe, login_lines,	# noqa: F401
    make_hosts, msg, start_haproxy)

PY = "/usr/bin/python3"
USER = "alice"
UID = USERS[USER][1]
# Two writers, ten deliveries each; each well under MD_LOCK_WAIT (30 s):
# an MDA never waits for a session, only for the moments of pop3d's spool
# locks and for the other writer's.
WRITERS, EACH, DELIVERY_MAX = 2, 10, 5.0
MDA_FROM = b"From mda@example.org Sun Dec  6 05:00:00 2026\n"
# The sanitizer build with the shim: the shim before libasan, and no
# LeakSanitizer (it cannot trace a process that changed its uid).
SAN_PRELOAD = "verify_asan_link_order=0:detect_leaks=0"

HOLD_PY = r"""
import poplib, sys
host, pw = sys.argv[1], sys.argv[2]
a = poplib.POP3(host, 110, timeout=60)
a.user('alice'); a.pass_(pw)
print('stat', *a.stat(), flush=True)
b = poplib.POP3(host, 110, timeout=60)
b.user('alice')
try:
    b.pass_(pw); print('second ok', flush=True)
except poplib.error_proto as e:
    print('second', e.args[0].decode(), flush=True)
sys.stdin.readline()
print('dele', a.dele(1).decode(), a.dele(3).decode(), flush=True)
print('quit', a.quit().decode(), flush=True)
"""

# Does a flock(2) keep an fcntl lock out?  Mode "other": another process
# (no shim) locks the file; "self": the same process, on the same fd.
PROBE_PY = r"""
import fcntl, subprocess, sys
f = open(sys.argv[1], 'r+')
fcntl.flock(f, fcntl.LOCK_EX)
try:
    if sys.argv[2] == 'self':
        fcntl.lockf(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    else:
        subprocess.run([sys.executable, '-c', 'import fcntl, sys; '
            'fcntl.lockf(open(sys.argv[1], "r+"), '
            'fcntl.LOCK_EX | fcntl.LOCK_NB)', sys.argv[1]],
            env={}, check=True, capture_output=True)
except (OSError, subprocess.CalledProcessError):
    print('kept out')
else:
    print('not kept out')
"""


LOCAL_MSGS = [b"Subject: one\n\nFirst.\n", b"Subject: two\n\nSecond.\n"]


def test_session_lock_file_is_the_users_and_stays(pop3):
	"""The session lock's file is made by the user's process: the user's
	(65534 when root), 0600, empty, next to the mailbox; it stays after
	QUIT, and the next session takes it again."""
	pop3.write_mbox(LOCAL_MSGS)
	p = pop3.spool / SESSION_LOCK
	a = pop3.session()
	assert a.login().ok, a.log
	st = os.lstat(p)
	uid = NOBODY if ROOT else os.getuid()
	assert (st.st_uid, st.st_mode & 0o170777, st.st_size) == \
	    (uid, 0o100600, 0)
	assert a.cmd("QUIT").ok and a.wait() == 0
	assert os.lstat(p).st_ino == st.st_ino
	t = pop3.run(login() + ["STAT", "QUIT"])
	assert t[2].text.startswith("+OK 2 "), t
	assert os.lstat(p).st_ino == st.st_ino


def test_session_lock_file_symlink_is_refused(pop3):
	"""A symbolic link at the session lock's name is never followed: the
	login fails, the link and its target stay as they were."""
	pop3.write_mbox(LOCAL_MSGS)
	target = pop3.base / "target"
	target.write_bytes(b"not a lock\n")
	(pop3.spool / SESSION_LOCK).symlink_to(target)
	t = pop3.run(login() + ["STAT", "QUIT"])
	assert t[1].err and "[SYS/PERM]" in t[1].text, t
	assert t.rc != 0
	assert os.readlink(pop3.spool / SESSION_LOCK) == str(target)
	assert target.read_bytes() == b"not a lock\n"


def test_session_lock_file_of_another_user_is_refused(pop3):
	"""A session lock's file of another owner (anyone who may write the
	spool directory could make one) is refused, [SYS/TEMP], and left."""
	need(ROOT, "needs root to give the file another owner")
	pop3.write_mbox(LOCAL_MSGS)
	p = pop3.spool / SESSION_LOCK
	p.write_bytes(b"")
	p.chmod(0o666)
	os.chown(p, 0, 0)
	t = pop3.run(login() + ["STAT", "QUIT"])
	assert t[1].err and "[SYS/TEMP]" in t[1].text, t
	assert t.rc == LIMITS["POP3_EX_TEMPFAIL"], t
	assert os.lstat(p).st_uid == 0



def test_spool_directory_the_user_cannot_write_still_locks(pop3):
	"""A spool directory the user cannot write (0555), --lock=fcntl: no
	session-lock file can be made, and the session lock is flock on the
	mailbox, as before (a local spool): the login works, a second
	session gets [IN-USE], and nothing is created."""
	pop3.write_mbox(LOCAL_MSGS)
	os.chmod(pop3.spool, 0o555)
	try:
		a = pop3.session("--lock=fcntl")
		assert a.login().ok, a.log
		t = pop3.run(login() + ["STAT", "QUIT"], "--lock=fcntl")
		assert t[1].err and "[IN-USE]" in t[1].text, t
		assert a.cmd("STAT").text.startswith("+OK 2 "), a.log
		assert a.cmd("QUIT").ok and a.wait() == 0
		assert sorted(p.name for p in pop3.spool.iterdir()) == [USER]
	finally:
		os.chmod(pop3.spool, 0o755)

def flock_keeps_fcntl_out(path, mode, shim=None):
	env = {"LD_PRELOAD": str(shim)} if shim else {}
	r = subprocess.run([PY, "-c", PROBE_PY, str(path), mode], env=env,
	    capture_output=True, text=True, timeout=30, check=True)
	return r.stdout.strip() == "kept out"


def build_shim(base):
	"""tests/flock_nfs.c, built; checked to turn flock into NFS's lock
	(kept out: another process's fcntl lock, and the caller's own),
	where a local flock keeps neither out."""
	so = base / "flock_nfs.so"
	cc(REPO / "tests/flock_nfs.c", so)
	so.chmod(0o755)
	f = base / "probe"
	f.write_bytes(b"x")
	for mode in ("other", "self"):
		assert not flock_keeps_fcntl_out(f, mode), mode
		assert flock_keeps_fcntl_out(f, mode, so), mode
	return so


@pytest.fixture(params=["fcntl,dotlock", "dotlock"])
def nfs_shared(exe, request):	# noqa: F811
	need(shutil.which("haproxy"), "haproxy (tests/packages.txt)")
	need(shutil.which("procmail"), "procmail (tests/packages.txt)")
	need(shutil.which("dotlockfile"), "dotlockfile (tests/packages.txt)")
	h = make_hosts(exe, shared_spool=True)
	try:
		h.so = build_shim(h.base)
		h.mda = h.base / "mda"
		h.mda.mkdir()
		os.chown(h.mda, UID, UID)
		h.msgs = [msg(USER, i) for i in range(4)]
		h.write_mbox(1, USER, h.msgs)
		for i in (1, 2):
			h.backend(i, extra=["--lock=" + request.param],
			    env={"LD_PRELOAD": str(h.so), "ASAN_OPTIONS":
			    SAN_PRELOAD})
		start_haproxy(h)
		yield h
	finally:
		h.close()
		shutil.rmtree(h.base, ignore_errors=True)


def mda_run(h, argv, data):
	"""argv as the user, its time taken; the shim preloaded."""
	env = {"PATH": "/usr/bin:/bin", "HOME": str(h.mda), "LANG": "C",
	    "LOGNAME": USER, "LD_PRELOAD": str(h.so)}
	t0 = time.monotonic()
	try:
		p = subprocess.run(argv, input=data, env=env, cwd=str(h.mda),
		    capture_output=True, timeout=4 * DELIVERY_MAX, user=UID,
		    group=UID, extra_groups=[])
	except subprocess.TimeoutExpired:
		return None, "timed out"
	return time.monotonic() - t0, (p.returncode, p.stderr)


def procmail(h):
	rc = h.mda / "procmailrc"
	rc.write_text("SHELL=/bin/sh\nDEFAULT=%s\nLOCKSLEEP=1\nLOGFILE=%s\n" %
	    (h.spool[1] / USER, h.mda / "procmail.log"))
	os.chown(rc, UID, UID)
	return lambda data: mda_run(h, ["procmail", "-m", str(rc)], data)


def dotlockfile(h):
	"""dotlockfile -l, then tests/fcntl_append.py (fcntl, O_APPEND), then
	dotlockfile -u: Debian Policy 11.6's two locks."""
	app = h.mda / "fcntl_append.py"
	shutil.copy(REPO / "tests/fcntl_append.py", app)
	app.chmod(0o755)
	sh = ('dotlockfile -l -r 5 -i 1 -p "$1" || exit 75; %s %s "$2"; '
	    'rc=$?; dotlockfile -u "$1"; exit $rc' % (PY, app))
	box = h.spool[1] / USER
	return lambda data: mda_run(h, ["sh", "-c", sh, "sh", str(box) +
	    ".lock", str(box)], data + b"\n")


def delivery(w, i):
	"""Delivery i of writer w: (what the MDA is given, what it appends:
	procmail the empty line that ends an mbox record; the appender is
	given it).  No From in the body (procmail would quote it)."""
	m = (b"From: writer%d@example.org\nTo: alice@example.org\nSubject: "
	    b"delivery %d-%d\n\nbody of %d-%d\n.a dot-started line\nend\n" % (
	    w, w, i, w, i))
	return MDA_FROM + m, MDA_FROM + m + b"\n"


def deliver_all(writers):
	"""Each writer delivers EACH messages in turn, all writers at once,
	and stops at its first failure; {(w, i): (seconds or None, result)}."""
	got = {}

	def one(w, deliver):
		for i in range(EACH):
			got[(w, i)] = t, res = deliver(delivery(w, i)[0])
			if t is None or t > DELIVERY_MAX or res[0] != 0:
				break
	ts = [threading.Thread(target=one, args=(w, d))
	    for w, d in enumerate(writers)]
	for t in ts:
		t.start()
	for t in ts:
		t.join()
	return got


def test_shared_spool_in_use_and_deliveries_under_nfs_locks(nfs_shared):
	"""Through HAProxy (round robin), alice's first session holds on one
	front end; her second, on the other, gets -ERR [IN-USE].  While the
	first is held, 20 deliveries by procmail and by dotlockfile with an
	fcntl appender, two writers at once, each finish within DELIVERY_MAX
	seconds and succeed.  After DELE 1, DELE 3, QUIT the shared mailbox
	is the two kept messages and then every delivery, each byte-exact as
	the test gave it, each writer's in its order (refmbox splits the
	file)."""
	h = nfs_shared
	py = h.base / "hold.py"
	py.write_text(HOLD_PY)
	c = subprocess.Popen(["ip", "netns", "exec", h.ns["c"], PY, str(py),
	    FRONT, USERS[USER][0]], stdin=subprocess.PIPE,
	    stdout=subprocess.PIPE, stderr=subprocess.PIPE)
	try:
		first = c.stdout.readline().decode()
		assert first == "stat %d %d\n" % (len(h.msgs), sum(len(
		    m.replace(b"\n", b"\r\n")) for m in h.msgs)), (first,
		    h.report())
		second = c.stdout.readline().decode()
		assert re.match(r"second -ERR \[IN-USE\]", second), second
		got = deliver_all([procmail(h), dotlockfile(h)])
		slow = {k: v for k, v in got.items() if v[0] is None or
		    v[0] > DELIVERY_MAX or v[1][0] != 0}
		assert not slow, slow
		assert len(got) == WRITERS * EACH
		c.stdin.write(b"go\n")
		c.stdin.flush()
		out = c.stdout.read().decode()
		assert c.wait(30) == 0, c.stderr.read().decode()
	finally:
		if c.poll() is None:
			c.kill()
			c.wait()
	assert re.match(r"dele \+OK.* \+OK.*\nquit \+OK", out), out
	assert [len(login_lines(h.syslog(i))) for i in (1, 2)] == [1, 1]
	data = (h.spool[1] / USER).read_bytes()
	kept = mbox([h.msgs[1], h.msgs[3]], [FROMS[1], FROMS[3]])
	assert data.startswith(kept), data[:400]
	order = []
	for frm, octets in refmbox.split(data)[2:]:
		s = re.search(rb"^Subject: delivery (\d)-(\d+)$", octets, re.M)
		assert frm + b"\n" == MDA_FROM and s, octets[:200]
		order.append((int(s.group(1)), int(s.group(2))))
	assert sorted(order) == sorted(got)
	for w in range(WRITERS):
		assert [i for v, i in order if v == w] == list(range(EACH))
	assert data == kept + b"".join(delivery(w, i)[1] for w, i in order)
	st = os.lstat(h.spool[1] / SESSION_LOCK)
	assert (st.st_uid, st.st_mode & 0o7777, st.st_size) == (UID, 0o600, 0)


def test_dotlock_of_another_host_is_not_taken_for_stale(nfs_shared):
	"""On NFS a dotlock's pid may be a live process of another host: a
	fresh USER.lock naming a pid that does not exist here (as a live
	MDA's on another host) is left alone, and the login waits for it;
	when its owner removes it, the login goes on (well within
	MD_LOCK_WAIT)."""
	h = nfs_shared
	gone = subprocess.Popen(["true"])
	gone.wait()
	lock = h.spool[1] / (USER + ".lock")
	lock.write_text("%d\n" % gone.pid)
	os.chown(lock, UID, UID)
	ino = lock.stat().st_ino
	got = {}
	t = threading.Thread(target=lambda: got.update(h.poplib(USER)))
	t0 = time.monotonic()
	t.start()
	time.sleep(3)
	held = lock.exists() and lock.stat().st_ino == ino
	lock.unlink(missing_ok=True)
	t.join(60)
	assert held, "pop3d removed a live dotlock of another host"
	assert got["stat"][0] == len(h.msgs), got
	assert time.monotonic() - t0 < LIMITS["MD_LOCK_WAIT"]
	assert [bytes.fromhex(x) for x in got["retr"]] == h.msgs
