"""Helpers of tests/test_mailsafety*.py (issue 4, never lose mail).

  fault_binary()        build/fault/pop3d (make; or $POP3D_FAULT_BIN, a
                        prebuilt one), copied where uid 65534 can run it
                        (conftest's shared_copy()):
                        POP3D_FAULT=kill:N|enospc:N|eio:N|done:N hits the N-th
                        write (write, pwrite, copy_file_range), fsync,
                        ftruncate, rename, unlink or link of the maildrop
                        (io.c) in that process;
                        POP3D_LOCK_WAIT=S shortens its lock wait
  Run                   one interactive pop3d with its own binary,
                        environment and wrapper: a conftest Session
                        (checked for sanitizer reports) made handy
  msgid(), digest()      mail with unique Message-IDs (messages.py's
                        message(), which is also importable from here)
  census(), describe()  a mailbox as a multiset of (From_ line, message)
  leftovers(), journals()
                        spool files that are not the mailbox
  procmail_rc(), procmail_deliver(), dotlock_append(), mua_rewrite()
                        Debian's MDAs and a MUA on the spool, as uid 65534
"""

import collections
import hashlib
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from conftest import (NOBODY, REPO, ROOT, USER, is_multi, login, need,
    parse_mbox, shared_copy)
from messages import message  # noqa: F401 (for the test files)

HERE = Path(__file__).resolve().parent
JOURNAL = "." + USER + ".pop3d-journal"
DOTLOCK = USER + ".lock"

# ------------------------------------------------------------ binaries

_copies = {}


def fault_binary():
	"""The fault-injection build, made once per run with make (the
	Makefile's build/fault/pop3d rule), copied where every user can run
	it."""
	if "bin" in _copies:
		return _copies["bin"]
	if os.environ.get("POP3D_FAULT_BIN"):
		src = Path(os.environ["POP3D_FAULT_BIN"])
		if not os.access(src, os.X_OK):
			pytest.fail("POP3D_FAULT_BIN=%s is not an executable" % src)
	else:
		src = REPO / "build" / "fault" / "pop3d"
		r = subprocess.run(["make", "-C", str(REPO),
		    "--no-print-directory", "build/fault/pop3d"],
		    capture_output=True, text=True)
		if r.returncode != 0:
			pytest.fail("make build/fault/pop3d failed:\n" +
			    r.stdout[-3000:] + r.stderr[-3000:], pytrace=False)
	_copies["bin"] = shared_copy(src)
	return _copies["bin"]


# ------------------------------------------------------------ sessions

class Run:
	"""One interactive pop3d on pop3's spool: binary (default the one under
	test), extra environment, extra options, a wrapper command (strace);
	a conftest Session (pop3.start()) with the conveniences of these
	tests.  Use as a context manager; .log is the transcript, .rc the
	exit status (-9: killed), .stderr the -d log."""

	def __init__(self, pop3, *extra, binary=None, env=None, timeout=10,
	    wrapper=()):
		argv = pop3.argv(*extra)
		if binary is not None:
			argv[0] = binary
		kw = pop3.popen_kw()
		kw["env"] = dict(kw["env"], **(env or {}))
		if wrapper:
			# LeakSanitizer cannot work under ptrace (strace): its
			# fatal error, no report, would exit with SAN_EXIT.
			kw["env"]["ASAN_OPTIONS"] = ":".join(filter(None, [
			    kw["env"].get("ASAN_OPTIONS"), "detect_leaks=0"]))
		self.s = pop3.start(list(wrapper) + argv, kw, timeout)
		self.rc = None
		self.stderr = ""
		self.closed = False

	def __enter__(self):
		return self

	def __exit__(self, *exc):
		self.close()

	@property
	def log(self):
		return "\n".join(self.s.log)

	def greeting(self):
		return self.s.greeting()

	def cmd(self, line, timeout=None):
		"""The reply to line; None if pop3d is gone (EOF or EPIPE)."""
		try:
			self.s.send(line + "\r\n")
		except (BrokenPipeError, ConnectionResetError):
			self.s.log.append("S: <EPIPE>")
			return None
		return self.s.read_reply(is_multi(line), timeout)

	def login(self):
		"""Greeting, USER, PASS: the PASS reply (None: pop3d died)."""
		g = self.greeting()
		if g is None:
			return None
		assert g.ok, self.log
		*first, last = login()
		for c in first:
			r = self.cmd(c)
			if r is None:
				return None
			assert r.ok, self.log
		return self.cmd(last)

	def close(self, timeout=10):
		"""Closes stdin, waits for the exit, reads the log, checks
		(Session.close())."""
		if not self.closed:
			self.closed = True
			self.rc = self.s.close(timeout)
			self.stderr = self.s.stderr()
		return self.rc


# ------------------------------------------------------------ mail

def msgid(msg):
	for ln in msg.split(b"\n"):
		if ln == b"" or ln == b"\r":
			break
		if ln.lower().startswith(b"message-id:"):
			return ln.split(b":", 1)[1].strip().decode("latin-1")
	return None


def digest(data):
	return hashlib.sha256(data).hexdigest()[:16]


def census(data):
	"""The mailbox as a multiset of its messages (From_ line, octets)."""
	return collections.Counter(parse_mbox(data))


def describe(data):
	"""Short text of a mailbox for failure messages."""
	out = []
	for frm, m in parse_mbox(data):
		out.append("%s %s (%d octets)" % (msgid(m), digest(m), len(m)))
	return "%d octets, %d messages: %s" % (len(data), len(out),
	    ", ".join(out))


def leftovers(pop3):
	"""Files in the spool other than the mailbox."""
	return [f for f in pop3.spool_files() if f != USER]


def journals(pop3):
	"""The journal and those kept aside; not the spare (JOURNAL.tmp,
	which pop3d writes each journal to before renaming it to JOURNAL,
	and which a killed session leaves behind, empty or not: no repair
	reads it)."""
	return [f for f in pop3.spool_files() if f.startswith(JOURNAL) and
	    f != JOURNAL + ".tmp"]


# ------------------------------------------------------------ delivery

def as_nobody():
	"""Popen keywords that run a program as uid/gid 65534 when root."""
	if ROOT:
		return {"user": NOBODY, "group": NOBODY, "extra_groups": []}
	return {}


def mda_env(pop3):
	return {"PATH": "/usr/bin:/bin", "HOME": str(pop3.base), "LANG": "C",
	    "LOGNAME": USER}


def procmail_rc(pop3, locksleep=1):
	"""A procmailrc that delivers to the spool mailbox as Debian does it:
	DEFAULT, locked with DEFAULT.lock (dotlock) and fcntl by procmail.
	LOCKSLEEP: seconds between tries for a busy dotlock (default 8)."""
	need(shutil.which("procmail"), "procmail (package procmail)")
	rc = pop3.base / "procmailrc"
	rc.write_text("SHELL=/bin/sh\nDEFAULT=%s\nLOCKSLEEP=%d\n"
	    "LOGFILE=%s\n" % (pop3.mailbox(), locksleep,
	    pop3.base / "procmail.log"))
	if ROOT:
		os.chown(rc, NOBODY, NOBODY)
		log = pop3.base / "procmail.log"
		log.touch()
		os.chown(log, NOBODY, NOBODY)
	return rc


def procmail_deliver(pop3, rc, data, timeout=60):
	"""procmail -m RC < data as uid 65534 (data starts with its From_
	line); -m: the rc file only, no /var/mail, no $HOME/.procmailrc."""
	p = subprocess.run(["procmail", "-m", str(rc)], input=data,
	    capture_output=True, env=mda_env(pop3), cwd=str(pop3.base),
	    timeout=timeout, **as_nobody())
	assert p.returncode == 0, (p.returncode, p.stderr)
	return p


def dotlock_append(pop3, data, timeout=60):
	"""dotlockfile -l -p SPOOL/USER.lock, then tests/fcntl_append.py
	(fcntl lock, O_APPEND write, fsync; a copy that uid 65534 can read),
	then dotlockfile -u: Debian's liblockfile-bin with a fcntl appender,
	as uid 65534."""
	need(shutil.which("dotlockfile"), "dotlockfile (package liblockfile-bin)")
	if "append" not in _copies:
		_copies["append"] = shared_copy(HERE / "fcntl_append.py", 0o644)
	lock = str(pop3.spool / DOTLOCK)
	kw = dict(env=mda_env(pop3), cwd=str(pop3.base), capture_output=True,
	    timeout=timeout, **as_nobody())
	# -r 5 -i 1: six tries a second apart (pop3d holds the spool locks
	# only for moments); -p: the lock names the live shell.
	script = ('dotlockfile -l -r 5 -i 1 -p "$1" || exit 75; '
	    '%s %s "$2"; rc=$?; dotlockfile -u "$1"; exit $rc' % (
	    "/usr/bin/python3", _copies["append"]))
	p = subprocess.run(["sh", "-c", script, "sh", lock,
	    str(pop3.mailbox())], input=data, **kw)
	assert p.returncode == 0, (p.returncode, p.stderr)
	return p


def mua_rewrite(pop3, data):
	"""Rewrites the mailbox in place with data, as a local MUA (mutt)
	does: dotlockfile -l -p USER.lock, then the fcntl lock, truncate,
	write, fsync, unlock, dotlockfile -u; as uid 65534."""
	need(shutil.which("dotlockfile"), "dotlockfile (package liblockfile-bin)")
	script = ("import fcntl, os, sys\n"
	    "d = sys.stdin.buffer.read()\n"
	    "fd = os.open(sys.argv[1], os.O_RDWR)\n"
	    "fcntl.lockf(fd, fcntl.LOCK_EX)\n"
	    "os.ftruncate(fd, 0)\n"
	    "os.pwrite(fd, d, 0)\n"
	    "os.fsync(fd)\n"
	    "fcntl.lockf(fd, fcntl.LOCK_UN)\n")
	sh = ('dotlockfile -l -r 5 -i 1 -p "$1" || exit 75; '
	    '/usr/bin/python3 -c "$3" "$2"; rc=$?; dotlockfile -u "$1"; '
	    'exit $rc')
	p = subprocess.run(["sh", "-c", sh, "sh", str(pop3.spool / DOTLOCK),
	    str(pop3.mailbox()), script], input=data, env=mda_env(pop3),
	    cwd=str(pop3.base), capture_output=True, timeout=60, **as_nobody())
	assert p.returncode == 0, (p.returncode, p.stderr)
	assert pop3.read_mbox() == data
