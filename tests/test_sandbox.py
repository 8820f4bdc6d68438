"""The sandboxes the kernel enforces (issue 16; sandbox.c).

What is checked, against the kernel's own view (/proc) and against an
attacker's view from inside each process:

- /proc/PID/status of the pre-login child and of the user's process shows
  "Seccomp: 2" (a filter) and "NoNewPrivs: 1" during a session: root mode
  with PAM and with the password file, and the non-root single process
  after its login.  With --no-sandbox: "Seccomp: 0".
- The exploit build (make build/exploit/pop3d, -DPOP3D_EXPLOIT; the
  build/exploit-san flavour when POP3D_BIN is the sanitizer build, so each
  build's filter is the one attacked) runs, from inside the process that
  POP3D_EXPLOIT_IN names, what a hijacked process would: open /etc/passwd,
  open another user's mailbox (outside the spool directory), connect a TCP
  socket, fork, map new memory executable or make its data executable
  (mprotect), execve /bin/sh, ptrace a process of the same uid.  Each is
  refused (the error is logged) or kills the process (SIGSYS: the root
  monitor logs "killed by signal 31" of the pre-login child; the user's
  process, which is the session's pid, and the single process end by it), and
  the table below says which.  The same attacks with --no-sandbox get
  through, or meet only the older walls (the pre-login child's empty
  chroot and rlimits), so every row can fail.
- Inside the user's process, the spool directory's other files: read
  and append to a spoolmate's mailbox (Debian's 660 of group mail, which
  the user's process keeps to make dotlocks), read a spoolmate's
  USER.lock, make a new file and write and read it back.  Landlock
  refuses each (rules on the user's own inodes only); --no-sandbox lets
  each through, as the file modes allow.
- A deliberate read after free inside each sandboxed process of the
  sanitizer build is reported by ASan in full, never a silent SIGSYS.
"""

import os
import re
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

from conftest import (NOBODY, PASSWORD, REPO, ROOT, SAN_EXIT, USER,
    Transcript, _binary, mbox, need, shared_copy)
from test_auth_root import (MAIL_GID, PRE_UID, PW, children, proc_status,
    root, tools)

# Fixtures of test_auth_root.py, used here: root (RootEnv: PAM, nss, a
# spool; each test sets the binary it runs) and tools.
__all__ = ["root", "tools"]

KILLED = "killed"
SIGSYS = int(signal.SIGSYS)
SAN = _binary().resolve() == (REPO / "build" / "san" / "pop3d").resolve()

# What each attack meets: (sandbox on, --no-sandbox).  "ok": it worked;
# KILLED: SIGSYS; else the strerror() text logged.
EACCES, ENOENT, EMFILE = os.strerror(13), os.strerror(2), os.strerror(24)
PRELOGIN = {
	# Without the filter RLIMIT_NOFILE 3 refuses a new descriptor (and
	# the chroot is empty); with it, open kills, but in the sanitizer
	# build says EACCES (its reports open files, see sandbox.c).
	"passwd": (EACCES if SAN else KILLED, EMFILE),
	"mailbox": (EACCES if SAN else KILLED, EMFILE),
	# socket() says EACCES (glibc's syslog would reconnect with it).
	"connect": (EACCES, EMFILE),
	"fork": (KILLED, os.strerror(11)),		# RLIMIT_NPROC 0
	"mmapexec": (KILLED, "ok"),
	"mprotexec": (KILLED, "ok"),
	"exec": (KILLED, ENOENT),
	"ptrace": (KILLED, "ok"),
}
USERPROC = {
	"passwd": (EACCES, "ok"),		# Landlock
	"mailbox": (EACCES, "ok"),		# Landlock
	"connect": (KILLED, "ok"),		# socket(AF_INET)
	"fork": (KILLED, "ok"),
	"mmapexec": (KILLED, "ok"),
	"mprotexec": (KILLED, "ok"),
	"exec": (KILLED, "exec ran"),
	"ptrace": (KILLED, "ok"),
}
ATTACKS = sorted(PRELOGIN)
# The spool attacks of the user's process (Spoolmate): what each file
# attack is aimed at; each meets EACCES (Landlock), or "ok" with -S.
SPOOL = {"read": "mailbox", "write": "mailbox", "create": "new",
    "readlock": "lock", "plantedlock": "planted_lock",
    "plantedjournal": "planted_journal"}


@pytest.fixture(scope="session")
def exploit_bin():
	"""The exploit build of the flavour under test, made with make."""
	return _exploit_build("exploit-san" if SAN else "exploit")


def _exploit_build(flavour):
	target = "build/%s/pop3d" % flavour
	r = subprocess.run(["make", "-C", str(REPO), "--no-print-directory",
	    target], capture_output=True, text=True)
	if r.returncode != 0:
		pytest.fail("make %s failed:\n%s%s" % (target, r.stdout[-3000:],
		    r.stderr[-3000:]), pytrace=False)
	return shared_copy(REPO / target)


class Target:
	"""What an attack is aimed at: another user's mailbox outside the
	spool (readable to the attacker's uid, so only a sandbox stops it),
	a listening TCP socket, a process of the attacker's uid."""

	def __init__(self, base, uid):
		d = base / "elsewhere"
		d.mkdir()
		os.chmod(d, 0o755)
		self.mailbox = d / "bob"
		self.mailbox.write_bytes(mbox([b"Subject: bob's\n\nsecret\n"]))
		os.chown(self.mailbox, 2002, 2002)
		os.chmod(self.mailbox, 0o644)
		self.listener = socket.socket()
		self.listener.bind(("127.0.0.1", 0))
		self.listener.listen(4)
		self.sleeper = subprocess.Popen(["sleep", "60"], user=uid,
		    group=uid, extra_groups=[])

	def arg(self, what):
		return {"mailbox": str(self.mailbox),
		    "connect": str(self.listener.getsockname()[1]),
		    "ptrace": str(self.sleeper.pid)}.get(what, "")

	def close(self):
		self.sleeper.kill()
		self.sleeper.wait()
		self.listener.close()


class Spoolmate:
	"""Another user's files in the attacker's own spool directory: bob's
	mailbox (uid 2002, group mail, 660: Debian's), his USER.lock (644),
	the name of a file that is not there, and bob's files planted, as an
	earlier taken-over session could, under the names of the attacker's
	own USER.lock (a hard link of bob's mailbox, old: stale by age) and
	journal (a file of bob's).  gid: the group the attacker shares (mail
	in root mode; in the single process the files are 666, no group
	shared)."""

	BODY = mbox([b"Subject: bob's\n\nin the same spool\n"])

	def __init__(self, spool, gid, me):
		self.planted_lock = spool / (me + ".lock")
		self.planted_journal = spool / ("." + me + ".pop3d-journal")
		self.mailbox = spool / "bob"
		self.mailbox.write_bytes(self.BODY)
		self.lock = spool / "bob.lock"
		self.lock.write_text("4242\n")
		self.new = spool / ".planted"
		self.gid = gid
		for f, mode in ((self.mailbox, 0o660 if gid else 0o666),
		    (self.lock, 0o644)):
			os.chown(f, 2002, gid or 2002)
			os.chmod(f, mode)

	def arg(self, what):
		"""The path of the attack (planting the file it needs)."""
		if what == "plantedlock":
			os.link(self.mailbox, self.planted_lock)
			old = time.time() - 3600
			os.utime(self.mailbox, (old, old))
		elif what == "plantedjournal":
			self.planted_journal.write_bytes(self.BODY)
			os.chown(self.planted_journal, 2002, self.gid or 2002)
			os.chmod(self.planted_journal, 0o644)
		return str(getattr(self, SPOOL[what]))

	def check(self, what, got):
		"""The files as the attack's outcome says they must be."""
		ok = got == "ok"
		grown = self.mailbox.read_bytes() == self.BODY + b"!"
		assert grown == (ok and what == "write"), self.mailbox.read_bytes()
		if what == "create":
			# Landlock's MAKE_REG makes the name, open then fails.
			assert self.new.exists()
			data = self.new.read_bytes()
			assert data == (b"pop3d exploit\0" if ok else b""), data


def spool_attack(what, got, sandbox, t):
	assert got == (EACCES if sandbox else "ok"), t
	# The session went on: the attack was the only difference (a
	# journal of another owner is refused: -ERR to PASS, the end).
	ok = [True, False] if what == "plantedjournal" else [True] * 3
	assert [r.ok for r in t.replies] == ok, t


def exploit_of(what):
	"""The exploit hook's name of a spool attack."""
	return "read" if what in ("readlock", "plantedlock",
	    "plantedjournal") else what


def outcome(what, who, rc, stderr, killed_line):
	"""The attack's result as pop3d's log (or its end) shows it."""
	if what == "exec" and "exploit exec: ran" in stderr:
		return "exec ran"
	m = re.search(r"exploit %s %s: (.*)" % (who, what), stderr)
	if m:
		return m.group(1)
	if killed_line and re.search(r"killed by signal %d\b" % SIGSYS,
	    stderr):
		return KILLED
	if not killed_line and rc == -SIGSYS:
		return KILLED
	return "no result (rc %s):\n%s" % (rc, stderr)


def raw_run(argv, kw, cmds):
	"""Runs pop3d on pipes with the whole script; no sanitizer check
	(an attack's run is judged by outcome())."""
	data = "".join(c + "\r\n" for c in cmds).encode()
	t0 = time.monotonic()
	p = subprocess.run(argv, input=data, capture_output=True, timeout=60,
	    **kw)
	return Transcript(cmds, p.stdout, p.stderr, p.returncode,
	    time.monotonic() - t0)


def root_attack(root, bin_, who, what, auth, sandbox):
	"""One root-mode session with the attack in process who."""
	uid = PRE_UID if who == "prelogin" else 2001
	tgt = Target(root.base, uid)
	try:
		root.bin = bin_
		env = root.env(POP3D_EXPLOIT=what, POP3D_EXPLOIT_IN=who,
		    POP3D_EXPLOIT_ARG=tgt.arg(what))
		extra = [] if sandbox else ["--no-sandbox"]
		t = raw_run(root.argv(*extra, auth=auth), root.kw(env),
		    ["USER alice", "PASS " + PW, "QUIT"])
	finally:
		tgt.close()
	# The root monitor logs its pre-login child's death; the user's
	# process is the session's pid itself (no PAM session held).
	return outcome(what, who, t.rc, t.stderr, who == "prelogin"), t


@pytest.mark.parametrize("sandbox", [True, False], ids=["on", "off"])
@pytest.mark.parametrize("what", ATTACKS)
def test_prelogin_attacks(root, exploit_bin, what, sandbox):
	got, t = root_attack(root, exploit_bin, "prelogin", what, None,
	    sandbox)
	assert got == PRELOGIN[what][0 if sandbox else 1], t


@pytest.mark.parametrize("sandbox", [True, False], ids=["on", "off"])
@pytest.mark.parametrize("auth", ["pam", "passwd"])
@pytest.mark.parametrize("what", ATTACKS)
def test_user_process_attacks(root, exploit_bin, what, auth, sandbox):
	a = None if auth == "pam" else "passwd:%s" % root.passwd
	got, t = root_attack(root, exploit_bin, "user", what, a, sandbox)
	assert got == USERPROC[what][0 if sandbox else 1], t
	if got != KILLED and what != "exec":
		# The session went on: the attack was the only difference.
		assert [r.ok for r in t.replies] == [True] * 3, t


@pytest.mark.parametrize("sandbox", [True, False], ids=["on", "off"])
@pytest.mark.parametrize("auth", ["pam", "passwd"])
@pytest.mark.parametrize("what", sorted(SPOOL))
def test_user_process_spool_attacks(root, exploit_bin, what, auth, sandbox):
	"""alice (with her mailbox, her rules) at bob's files in /var/mail."""
	need(ROOT, "files of another uid")
	mate = Spoolmate(root.spool, MAIL_GID, "alice")
	root.bin = exploit_bin
	env = root.env(POP3D_EXPLOIT=exploit_of(what),
	    POP3D_EXPLOIT_IN="user", POP3D_EXPLOIT_ARG=mate.arg(what))
	extra = [] if sandbox else ["--no-sandbox"]
	t = raw_run(root.argv(*extra, auth=None if auth == "pam" else
	    "passwd:%s" % root.passwd), root.kw(env),
	    ["USER alice", "PASS " + PW, "QUIT"])
	got = outcome(exploit_of(what), "user", t.rc,
	    t.stderr, True)
	spool_attack(what, got, sandbox, t)
	mate.check(what, got)


@pytest.mark.parametrize("sandbox", [True, False], ids=["on", "off"])
@pytest.mark.parametrize("name", [".alice.pop3d-journal.tmp", "alice.lock"])
def test_planted_link_is_never_written(root, name, sandbox):
	"""A hard link of bob's mailbox planted (as an earlier taken-over
	session could) under the name of alice's spare journal, which pop3d
	makes empty at login, or of her USER.lock: a session with DELE and
	QUIT leaves bob's mailbox as it was, and alice's update is done."""
	need(ROOT, "files of another uid")
	mate = Spoolmate(root.spool, MAIL_GID, "alice")
	os.link(mate.mailbox, root.spool / name)
	old = time.time() - 3600
	os.utime(mate.mailbox, (old, old))	# as a USER.lock: stale by age
	before = root.mailbox().read_bytes()
	extra = [] if sandbox else ["--no-sandbox"]
	t = raw_run(root.argv(*extra), root.kw(root.env()),
	    ["USER alice", "PASS " + PW, "DELE 1", "QUIT"])
	assert mate.mailbox.read_bytes() == Spoolmate.BODY, t
	assert [r.ok for r in t.replies] == [True] * 4, t
	assert len(root.mailbox().read_bytes()) < len(before), t


@pytest.mark.parametrize("sandbox", [True, False], ids=["on", "off"])
@pytest.mark.parametrize("what", sorted(SPOOL))
def test_single_process_spool_attacks(pop3, exploit_bin, what, sandbox):
	"""The non-root mode, at another uid's 666 files in its spool."""
	need(ROOT, "files of another uid")
	pop3.write_mbox([b"Subject: one\n\nmine\n"])
	mate = Spoolmate(Path(pop3.spool), 0, USER)
	env = dict(pop3.env(), POP3D_EXPLOIT=exploit_of(what),
	    POP3D_EXPLOIT_IN="user", POP3D_EXPLOIT_ARG=mate.arg(what))
	argv = [exploit_bin] + pop3.argv()[1:] + \
	    ([] if sandbox else ["--no-sandbox"])
	kw = pop3.popen_kw()
	kw["env"] = env
	t = raw_run(argv, kw, ["USER " + USER, "PASS " + PASSWORD, "QUIT"])
	got = outcome(exploit_of(what), "user", t.rc,
	    t.stderr, False)
	spool_attack(what, got, sandbox, t)
	mate.check(what, got)


@pytest.mark.parametrize("sandbox", [True, False], ids=["on", "off"])
@pytest.mark.parametrize("what", ATTACKS)
def test_single_process_attacks(pop3, exploit_bin, what, sandbox):
	"""The non-root mode (uid 65534 when the runner is root)."""
	need(ROOT, "the other user's mailbox and the ptrace target")
	pop3.write_mbox([b"Subject: one\n\nmine\n"])
	tgt = Target(Path(pop3.base), NOBODY)
	try:
		env = dict(pop3.env(), POP3D_EXPLOIT=what, POP3D_EXPLOIT_IN="user",
		    POP3D_EXPLOIT_ARG=tgt.arg(what))
		argv = [exploit_bin] + pop3.argv()[1:] + \
		    ([] if sandbox else ["--no-sandbox"])
		kw = pop3.popen_kw()
		kw["env"] = env
		t = raw_run(argv, kw, ["USER " + USER, "PASS " + PASSWORD,
		    "QUIT"])
	finally:
		tgt.close()
	got = outcome(what, "user", t.rc, t.stderr, False)
	assert got == USERPROC[what][0 if sandbox else 1], t


def status_of(pid):
	st = proc_status(pid)
	return st["Seccomp"], st["NoNewPrivs"]


def one_child(pid, old=None):
	"""The one child of pid (other than old, a child that is ending)."""
	for _ in range(500):
		kids = [k for k in children(pid) if k != old]
		if len(kids) == 1:
			return kids[0]
		time.sleep(0.01)
	pytest.fail("no single child of %d: %r" % (pid, children(pid)))


@pytest.mark.parametrize("sandbox", [True, False], ids=["on", "off"])
@pytest.mark.parametrize("auth", ["pam", "passwd"])
def test_proc_status_of_both_processes(root, auth, sandbox):
	a = None if auth == "pam" else "passwd:%s" % root.passwd
	s = root.session(*([] if sandbox else ["--no-sandbox"]), auth=a)
	assert s.greeting().ok
	pre = one_child(s.proc.pid)
	want = "2" if sandbox else "0"
	assert status_of(pre) == (want, "1"), s.stderr()
	assert s.cmd("USER alice").ok
	assert s.cmd("PASS " + PW).ok, s.stderr()
	# The root process became the user's: no root process is left.
	user = s.proc.pid
	assert children(user) == [], children(user)
	assert proc_status(user)["Uid"].split()[0] == "2001"
	assert status_of(user) == (want, "1"), s.stderr()
	assert s.cmd("STAT").ok
	assert s.cmd("QUIT").ok
	assert s.wait() == 0
	assert ("sandbox: seccomp, Landlock ABI" in s.stderr()) == sandbox


@pytest.mark.parametrize("sandbox", [True, False], ids=["on", "off"])
def test_proc_status_of_the_single_process(pop3, sandbox):
	pop3.write_mbox([b"Subject: one\n\nmine\n"])
	s = pop3.session(*([] if sandbox else ["--no-sandbox"]))
	assert s.greeting().ok
	pid = s.proc.pid
	assert status_of(pid)[0] == "0"		# no filter before the login
	assert s.cmd("USER " + USER).ok
	assert s.cmd("PASS " + PASSWORD).ok
	st = status_of(pid)
	assert st[0] == ("2" if sandbox else "0"), s.stderr()
	if sandbox:
		assert st[1] == "1", s.stderr()
	assert s.cmd("QUIT").ok
	assert s.wait() == 0


@pytest.fixture
def permit_service():
	"""A PAM service of the system's own libpam (Debian's links libaudit,
	whose records need a netlink socket), pam_permit only: its name."""
	need(ROOT, "root, to write a PAM service in /etc/pam.d")
	name = "pop3d-test-%d" % os.getpid()
	svc = Path("/etc/pam.d") / name
	svc.write_text("auth required pam_permit.so\n"
	    "account required pam_permit.so\n"
	    "session required pam_permit.so\n")
	try:
		yield name
	finally:
		svc.unlink()


@pytest.mark.parametrize("mode", ["no", "login", "held"])
def test_single_process_pam_ends_before_the_sandbox(pop3, permit_service,
    mode):
	"""Not root, PAM (the system's libpam, not the wrapper): the session
	ends well whatever --pam-session says.  Held acts as login there, as
	nothing outside the user's filter could close a session at the end:
	closing it inside (libpam's audit record opens a netlink socket) was
	a SIGSYS after QUIT's reply."""
	import pwd
	me = pwd.getpwuid(NOBODY if ROOT else os.getuid()).pw_name
	pop3.write_mbox([b"Subject: one\n\nmine\n"], user=me)
	t = pop3.run(["USER " + me, "PASS anything", "STAT", "QUIT"],
	    "-P", permit_service, "--pam-session=" + mode, auth="pam")
	assert [r.ok for r in t.replies] == [True] * 4, t
	assert t.replies[2].text.startswith("+OK 1 "), t
	assert t.rc == 0, t
	assert "sandbox: seccomp, Landlock ABI" in t.stderr, t.stderr


@pytest.mark.parametrize("who", ["prelogin", "user"])
def test_asan_report_from_inside_the_sandbox(root, who):
	"""The sanitizer build's filter keeps ASan's reports whole: a read
	after free in a sandboxed process is reported with its stacks (frames
	as module+offset: the filter refuses the opens that symbolize) and ends
	the process with ASan's exit status, not SIGSYS."""
	bin_ = _exploit_build("exploit-san")
	root.bin = bin_
	env = root.env(POP3D_EXPLOIT="asan", POP3D_EXPLOIT_IN=who,
	    ASAN_OPTIONS="exitcode=%d:verify_asan_link_order=0:detect_leaks=0" %
	    SAN_EXIT)
	t = raw_run(root.argv(), root.kw(env), ["USER alice", "PASS " + PW,
	    "QUIT"])
	assert "ERROR: AddressSanitizer: heap-use-after-free" in t.stderr, t
	assert "freed by thread T0 here:" in t.stderr, t
	assert re.search(r"#0 0x[0-9a-f]+ .*pop3d\+0x", t.stderr), t
	assert "SUMMARY: AddressSanitizer" in t.stderr, t
	assert "signal %d" % SIGSYS not in t.stderr, t
	assert t.rc == SAN_EXIT, t
