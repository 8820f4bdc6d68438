"""Fixtures shared by every pytest file of pop3d.

pop3d is run the way inetd runs it: the client on fds 0 and 1, one session
per process.  One runner, Session (pipes; run_script() for a whole
script), and two transports:

  pop3.run(script)      pipes; the whole script is written at once (this is
                        also the pipelining test), then the replies are
                        parsed in order: a Transcript.  Options: the peak
                        RSS (GNU time), a sink for large output, a wrapper
                        command before pop3d.
  pop3.session()        pipes, interactive: send a line, read its Reply,
                        with deadlines (timeouts, concurrent sessions);
                        .login() logs in with login()'s lines.
  pop3.inetd()          a real TCP socket on 127.0.0.1: listens, accepts one
                        connection and starts pop3d on it as fds 0 and 1;
                        tests talk to it with poplib or a raw socket.

When the test runner is root, pop3d runs as uid/gid 65534 (nobody/nogroup,
no supplementary groups), the non-root mode of pop3d (one process that
serves the invoking uid's own mailbox); the spool, the mailboxes and the
password file are chowned to 65534 and the binary is copied under a
traversable temporary directory, so that this works from any checkout.
The switch is Popen's user=, group=, extra_groups=[] (setgroups, setregid,
setreuid in the child): unlike a preexec_fn, no Python code runs between
fork and exec, which matters because Inetd forks from a thread.

Every pop3d run through these fixtures is checked for sanitizer reports
(ASan, LSan, UBSan: the build/san binary) and for the sanitizer's exit
status, SAN_EXIT (pop3d_check()); either fails the test.  RootEnv
(test_auth_root.py, pop3d as root) is a Pop3Env with its own argv,
environment and user; tests/messages.py holds the shared mail.

Environment:
  POP3D_BIN     the binary to test (default ./pop3d of the repository;
                make check runs the suite again with build/san/pop3d)
  POP3D_STRICT  set by make check (and CI=true, as CI sets it): every skip
                is a failure, a missing tool or root included

Skips: a test that cannot run here skips (need()); under strict mode that
skip fails.  What is left out of a run by design is deselected, never
skipped: a test marked plain_pass runs only against ./pop3d, the first
pass of make check (valgrind, which does not mix with the ASan build of
the second; make install, which installs ./pop3d).

Helpers for test files: login() (the USER and PASS lines), mbox(),
parse_mbox(), expected_retr(), expected_top(), stored_retr(),
parse_replies(),
sanitizer_check(), pop3d_check(), LIMITS (every numeric #define of
pop3d.h), make_hash(), need(), shared_copy().
"""

import atexit
import fcntl
import os
import re
import select
import shutil
import socket
import subprocess
import tempfile
import threading
import time
import warnings
from pathlib import Path

import pytest

import refmbox

REPO = Path(__file__).resolve().parent.parent
ROOT = os.geteuid() == 0
NOBODY = 65534
STRICT = bool(os.environ.get("POP3D_STRICT")) or \
    os.environ.get("CI", "") not in ("", "0", "false")

FROM_LINE = b"From sender@example.org Thu Nov 26 12:00:00 2026"
USER = "alice"
# The session-lock file of USER's mailbox (lock.c), which pop3d leaves.
SESSION_LOCK = ".%s.pop3d-session" % USER
PASSWORD = "wonder land"		# a space: PASS takes the rest of the line


def _read_limits():
	"""Every numeric #define of pop3d.h, so tests follow the header."""
	vals = {}
	text = (REPO / "pop3d.h").read_text()
	for name, expr in re.findall(
	    r"^#define\s+(\w+)\s+([-()*+\w ]+?)\s*(?:/\*.*)?$", text, re.M):
		try:
			vals[name] = int(eval(expr, {}, dict(vals)))
		except Exception:
			pass
	return vals


LIMITS = _read_limits()


def need(cond, why):
	"""Skips the test when cond is false (a failure in strict mode)."""
	if not cond:
		pytest.skip("needed for this test: " + why)


class _SkipFailure(str):
	"""The text of a skip turned failure, also on the short -rf line."""

	@property
	def reprcrash(self):
		return self

	@property
	def message(self):
		return str(self)


def _strict(rep, what):
	"""In strict mode a skipped (or xfailed) report becomes a failure."""
	if not (STRICT and rep.skipped):
		return
	why = getattr(rep, "wasxfail", None)
	if why is None and isinstance(rep.longrepr, tuple):
		why = rep.longrepr[2].removeprefix("Skipped: ")
	if hasattr(rep, "wasxfail"):
		del rep.wasxfail
	rep.outcome = "failed"
	rep.longrepr = _SkipFailure("%s (a %s skip: a failure in strict mode, "
	    "POP3D_STRICT or CI)" % (why, what))


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
	_strict((yield).get_result(), "test")


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector):
	_strict((yield).get_result(), "module")


# ---------------------------------------------------------------- shared

_shared = []


@atexit.register
def _remove_shared():
	for d in _shared:
		shutil.rmtree(d, ignore_errors=True)


def shared_copy(src, mode=0o755):
	"""A copy of src (mode 0755: run, 0644: read) in a new directory
	under /tmp that every user can enter, removed at exit: what a process
	of another user (65534, the mail user) runs or reads must not be
	taken from the checkout, which may sit in a directory only its owner
	can enter (/root, a 0700 home)."""
	d = tempfile.mkdtemp(prefix="pop3d-shared.", dir="/tmp")
	os.chmod(d, 0o755)
	_shared.append(d)
	dst = os.path.join(d, os.path.basename(src))
	shutil.copyfile(src, dst)
	os.chmod(dst, mode)
	return dst


# ---------------------------------------------------------------- binary

def _binary():
	p = Path(os.environ.get("POP3D_BIN", "pop3d"))
	if not p.is_absolute():
		p = REPO / p
	return p


def pytest_configure(config):
	b = _binary()
	if os.environ.get("POP3D_BIN") and not os.access(b, os.X_OK):
		# Never a silent "no tests ran" or an all-skipped run.
		raise pytest.UsageError("POP3D_BIN=%s is not an executable" % b)
	config.addinivalue_line("markers", "plain_pass: runs only against "
	    "./pop3d (deselected when POP3D_BIN names another binary)")


def pytest_collection_modifyitems(config, items):
	"""Deselects the plain_pass tests when POP3D_BIN is another binary."""
	if _binary().resolve() == (REPO / "pop3d").resolve():
		return
	out = [i for i in items if i.get_closest_marker("plain_pass")]
	if out:
		config.hook.pytest_deselected(items=out)
		items[:] = [i for i in items if i not in out]


@pytest.fixture(scope="session")
def pop3d_bin(tmp_path_factory):
	"""Path of the pop3d binary, reachable by uid 65534 when we are root."""
	b = _binary()
	if not os.access(b, os.X_OK):
		pytest.fail("%s does not exist: run make pop3d first" % b)
	return shared_copy(b) if ROOT else str(b)


# ---------------------------------------------------------------- hashes

_hash_cache = {}


def make_hash(password, scheme="sha512"):
	"""A crypt(3) hash of password: sha512, yescrypt or bcrypt."""
	key = (password, scheme)
	if key in _hash_cache:
		return _hash_cache[key]
	mk = shutil.which("mkpasswd")	# package whois
	h = None
	if scheme == "sha512":
		if shutil.which("openssl"):
			h = subprocess.run(["openssl", "passwd", "-6", "-stdin"],
			    input=password.encode(), capture_output=True,
			    check=True).stdout.decode().strip()
		else:
			with warnings.catch_warnings():
				warnings.simplefilter("ignore")
				import crypt
			h = crypt.crypt(password, crypt.mksalt(crypt.METHOD_SHA512))
	elif scheme in ("yescrypt", "bcrypt"):
		need(mk, "mkpasswd (package whois) for %s hashes" % scheme)
		h = subprocess.run([mk, "-s", "-m", scheme],
		    input=password.encode(), capture_output=True,
		    check=True).stdout.decode().strip()
	else:
		raise ValueError(scheme)
	prefix = {"sha512": "$6$", "yescrypt": "$y$", "bcrypt": "$2"}[scheme]
	assert h.startswith(prefix), h
	_hash_cache[key] = h
	return h


# ---------------------------------------------------------------- mbox

def _lines(msg):
	return msg if isinstance(msg, bytes) else msg.encode()


def mbox(messages, nl=b"\n", final_newline=True):
	"""An mbox file of messages, as an MDA writes it.

	Each message is bytes (or str) with LF line ends and without its From_
	line, or a (from_line, message) pair.  nl=b"\\r\\n" writes a CRLF mbox.
	Every message is followed by an empty separator line; with
	final_newline=False the last message ends without any newline.
	"""
	out = []
	for i, m in enumerate(messages):
		frm = FROM_LINE
		if isinstance(m, tuple):
			frm, m = m
		m = _lines(m)
		last = i == len(messages) - 1
		if nl != b"\n":
			m = m.replace(b"\n", nl)
		if last and not final_newline:
			out.append(frm + nl + m.rstrip(nl))
			break
		if not m.endswith(nl):
			m += nl
		out.append(frm + nl + m + nl)
	return b"".join(out)


def parse_mbox(data):
	"""Splits an mbox into (from_line, message) pairs, [] if it is none:
	refmbox.split(), the documented rule (a message starts at a From_ line
	at the start of the file or after an empty line; the empty line
	before it is the separator)."""
	return refmbox.split(data) or []


def expected_retr(msg, nl=b"\n"):
	"""The octets RETR must send for msg, before byte-stuffing: every line
	ends in CRLF (a CR already before the LF is not doubled), the last line
	too (a last line that ends in a bare CR gets only the LF); bare CR
	and NUL are data."""
	m = _lines(msg)
	if nl != b"\n":
		m = m.replace(b"\n", nl)
	parts = m.split(b"\n")
	last = parts.pop()		# after the last LF: b"" or an open line
	out = [p + (b"\n" if p.endswith(b"\r") else b"\r\n") for p in parts]
	if last:
		out.append(last + (b"\n" if last.endswith(b"\r") else b"\r\n"))
	return b"".join(out)


def expected_top(msg, k):
	"""TOP n k: the header, the empty line, then k body lines."""
	full = expected_retr(msg)
	lines = full.split(b"\r\n")[:-1]
	try:
		hdr = lines.index(b"")
	except ValueError:
		return full
	return b"".join(ln + b"\r\n" for ln in lines[:hdr + 1 + k])


def login(user=USER, password=PASSWORD):
	"""The command lines of a USER/PASS login."""
	return ["USER " + user, "PASS " + password]


def stored_retr(octets):
	"""The octets RETR must send (before byte-stuffing) for a message as
	the mbox stores it (refmbox.split()): a bare LF becomes CRLF, and a
	last line without LF gets a line end (after a bare CR only its LF);
	refmbox.size() octets."""
	out = re.sub(rb"(?<!\r)\n", b"\r\n", octets)
	if octets and not octets.endswith(b"\n"):
		out += b"\n" if octets.endswith(b"\r") else b"\r\n"
	return out


# ---------------------------------------------------------------- replies

MULTI = {"CAPA", "RETR", "TOP"}
MULTI_NOARG = {"LIST", "UIDL"}


def is_multi(cmd):
	"""Whether a +OK reply to cmd is multi-line (RFC 1939, RFC 2449)."""
	w = cmd.split()
	if not w:
		return False
	v = w[0].upper()
	return v in MULTI or (v in MULTI_NOARG and len(w) == 1)


class Reply:
	"""One server reply: .text (status line, no CRLF), .ok, and for a
	multi-line reply .data (un-stuffed octets, CRLF line ends, without the
	final ".") and .lines (decoded data lines)."""

	def __init__(self, status, raw, data=None):
		self.status = status
		self.text = status.decode("latin-1")
		self.raw = raw
		self.data = data

	@property
	def ok(self):
		return self.text.startswith("+OK")

	@property
	def err(self):
		return self.text.startswith("-ERR")

	@property
	def lines(self):
		if self.data is None:
			return []
		return self.data.decode("latin-1").split("\r\n")[:-1]

	def __repr__(self):
		s = self.text
		if self.data is not None:
			s += " [%d data octets]" % len(self.data)
		return "<Reply %r>" % s


class ProtocolError(AssertionError):
	pass


SAN_EXIT = 86
_SAN_RE = re.compile(r"ERROR: (Address|Leak)Sanitizer|runtime error:|"
    r"SUMMARY: UndefinedBehaviorSanitizer")


def sanitizer_check(stderr, what="pop3d"):
	"""Fails the test if pop3d's stderr holds a sanitizer report."""
	m = _SAN_RE.search(stderr)
	if m:
		pytest.fail("%s: sanitizer report:\n%s" % (what,
		    stderr[max(0, m.start() - 200):][:6000]), pytrace=False)


def _read_reply(readline, multi):
	"""Reads one reply with readline(); None at EOF before a status line."""
	st = readline()
	if not st:
		return None
	if not st.endswith(b"\r\n"):
		raise ProtocolError("status line without CRLF: %r" % st)
	status = st[:-2]
	ok = status.startswith(b"+OK")
	if not status.startswith((b"+OK", b"-ERR")):
		raise ProtocolError("not a status line: %r" % st)
	if not (multi and ok):
		return Reply(status, st)
	data = []
	raw = [st]
	while True:
		ln = readline()
		if not ln:
			raise ProtocolError("EOF inside a multi-line reply after %r"
			    % b"".join(data)[-200:])
		raw.append(ln)
		if ln == b".\r\n":
			break
		if not ln.endswith(b"\r\n"):
			raise ProtocolError("data line without CRLF: %r" % ln[-80:])
		if ln.startswith(b"."):
			if not ln.startswith(b".."):
				raise ProtocolError("line not dot-stuffed: %r" % ln[:80])
			ln = ln[1:]
		data.append(ln)
	return Reply(status, b"".join(raw), b"".join(data))


class _BufReader:
	def __init__(self, data):
		self.data = data
		self.pos = 0

	def readline(self):
		i = self.data.find(b"\n", self.pos)
		end = len(self.data) if i < 0 else i + 1
		ln = self.data[self.pos:end]
		self.pos = end
		return ln

	def rest(self):
		return self.data[self.pos:]


def parse_replies(data, cmds):
	"""Greeting and one reply per command of cmds, in order; stops at EOF.
	Returns (greeting, [Reply...], unparsed trailing octets)."""
	r = _BufReader(data)
	greeting = _read_reply(r.readline, False)
	replies = []
	if greeting is not None:
		for c in cmds:
			rep = _read_reply(r.readline, is_multi(c))
			if rep is None:
				break
			replies.append(rep)
	return greeting, replies, r.rest()


class Transcript:
	"""A scripted session: .greeting, .replies (one per answered command),
	.rc, .stderr (the -d log), .out (raw octets), .cmds."""

	def __init__(self, cmds, out, err, rc, elapsed):
		self.cmds = cmds
		self.out = out
		self.stderr = err.decode("utf-8", "replace")
		self.rc = rc
		self.elapsed = elapsed
		self.greeting, self.replies, self.extra = parse_replies(out, cmds)

	def __getitem__(self, i):
		return self.replies[i]

	def __len__(self):
		return len(self.replies)

	def reply(self, cmd):
		"""The reply to the first command equal to cmd."""
		return self.replies[self.cmds.index(cmd)]

	def __repr__(self):
		lines = ["S: " + (self.greeting.text if self.greeting else "<none>")]
		for c, r in zip(self.cmds, self.replies + [None] * len(self.cmds)):
			shown = c if len(c) < 80 else c[:60] + "...(%d)" % len(c)
			lines.append("C: " + repr(shown)[1:-1])
			if r is None:
				lines.append("S: <no reply>")
				continue
			lines.append("S: " + r.text)
			for d in r.lines[:8]:
				lines.append("S:   " + d[:100])
			if len(r.lines) > 8:
				lines.append("S:   ... (%d lines)" % len(r.lines))
		if self.extra:
			lines.append("extra output: %r" % self.extra[:200])
		lines.append("exit status %s; stderr:\n%s" % (self.rc,
		    self.stderr[-2000:]))
		return "\n".join(lines)


def _encode(cmds, eol):
	out = []
	for c in cmds:
		out.append(c if isinstance(c, bytes) else c.encode("latin-1"))
		out.append(eol)
	return b"".join(out)


def _describe(cmds, out, err, rc):
	"""A transcript of what came, or its raw tail if it does not parse."""
	try:
		return repr(Transcript(cmds, out, err, rc, None))
	except AssertionError as e:
		return "malformed replies (%s): %r\nexit status %s; stderr:\n%s" % (
		    e, out[-300:], rc, err.decode("utf-8", "replace")[-2000:])


# ---------------------------------------------------------------- the runner

TIME = "/usr/bin/time"		# GNU time: the peak RSS of pop3d itself


def pop3d_check(stderr, rc, what="pop3d"):
	"""Fails on a sanitizer report in pop3d's stderr (with -d every
	process of the session writes there) or on the sanitizer's exit
	status, SAN_EXIT (without -d reports go to /dev/null; a monitor exits
	with its child's status)."""
	if isinstance(stderr, bytes):
		stderr = stderr.decode("utf-8", "replace")
	sanitizer_check(stderr, what)
	if rc == SAN_EXIT:
		pytest.fail("%s exited %d, the sanitizer's status:\n%s" %
		    (what, rc, stderr[-3000:]), pytrace=False)


class _Pop3d:
	"""What Session and Inetd share: pop3d's stderr in errfile (a named
	temporary file), the end of the process and its check."""

	proc = None
	errraw = None
	checked = False

	def stderr_bytes(self):
		"""pop3d's stderr so far (all of it after kill())."""
		if self.errraw is not None:
			return self.errraw
		self.errfile.flush()
		with open(self.errfile.name, "rb") as f:
			return f.read()

	def stderr(self):
		return self.stderr_bytes().decode("utf-8", "replace")

	def kill(self):
		"""Ends pop3d if it still runs; keeps its stderr, closes the file
		(a fixture may remove the directory next)."""
		if self.proc is not None and self.proc.poll() is None:
			self.proc.kill()
			self.proc.wait()
		if self.errraw is None:
			self.errraw = self.stderr_bytes()
			self.errfile.close()

	def check(self):
		"""pop3d_check() of the ended process, once."""
		if self.checked:
			return
		self.checked = True
		pop3d_check(self.stderr(), self.proc.returncode if self.proc
		    else None)


class Session(_Pop3d):
	"""pop3d on pipes: argv, Popen keywords kw, stderr to errfile.  The
	one runner of the tests: interactive (send a line, read its Reply,
	with deadlines) or a whole script at once (script()); close() or
	kill() ends it, check() fails on a sanitizer report or status."""

	def __init__(self, argv, kw, errfile, timeout=10):
		self.errfile = errfile
		self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE,
		    stdout=subprocess.PIPE, stderr=errfile, **kw)
		self.fd = self.proc.stdout.fileno()
		self.buf = bytearray()
		self.pos = 0
		self.eof = False
		self.timeout = timeout
		self.log = []

	def _fill(self, deadline):
		left = deadline - time.monotonic()
		if left <= 0:
			raise TimeoutError("no reply from pop3d; so far:\n" +
			    "\n".join(self.log))
		r, _, _ = select.select([self.fd], [], [], left)
		if not r:
			raise TimeoutError("no reply from pop3d; so far:\n" +
			    "\n".join(self.log))
		chunk = os.read(self.fd, 65536)
		if not chunk:
			self.eof = True
		if self.pos > 1 << 20:
			del self.buf[:self.pos]
			self.pos = 0
		self.buf += chunk

	def readline(self, timeout=None):
		deadline = time.monotonic() + (timeout or self.timeout)
		while True:
			i = self.buf.find(b"\n", self.pos)
			if i >= 0 or self.eof:
				break
			self._fill(deadline)
		end = len(self.buf) if i < 0 else i + 1
		ln = bytes(self.buf[self.pos:end])
		self.pos = end
		return ln

	def read_reply(self, multi=False, timeout=None):
		"""The next reply, or None at EOF."""
		deadline = time.monotonic() + (timeout or self.timeout)
		rep = _read_reply(lambda: self.readline(
		    max(0.001, deadline - time.monotonic())), multi)
		self.log.append("S: " + (rep.text if rep else "<EOF>"))
		return rep

	def greeting(self):
		return self.read_reply()

	def send(self, data):
		if isinstance(data, str):
			data = data.encode("latin-1")
		self.log.append("C: " + repr(data[:80]))
		self.proc.stdin.write(data)
		self.proc.stdin.flush()

	def cmd(self, line, timeout=None):
		"""Sends one command line (CRLF added) and returns its Reply."""
		self.send(line + "\r\n")
		return self.read_reply(is_multi(line), timeout)

	def login(self, user=USER, password=PASSWORD):
		"""The greeting and login(): each reply +OK; the last one."""
		g = self.greeting()
		assert g is not None and g.ok, g
		for c in login(user, password):
			r = self.cmd(c)
			assert r is not None and r.ok, (c, r, self.stderr())
		return r

	def close_stdin(self):
		try:
			self.proc.stdin.close()
		except BrokenPipeError:
			pass

	def wait_eof(self, timeout):
		"""Waits for the server to close its side; returns what came."""
		deadline = time.monotonic() + timeout
		while not self.eof:
			self._fill(deadline)
		out = bytes(self.buf[self.pos:])
		self.buf, self.pos = bytearray(), 0
		return out

	def wait(self, timeout=10):
		return self.proc.wait(timeout)

	def close(self, timeout=10):
		"""Closes stdin, waits for the exit (kills pop3d at the
		deadline), keeps the log, checks: the exit status (-9: killed)."""
		self.close_stdin()
		try:
			self.proc.wait(timeout)
		except subprocess.TimeoutExpired:
			pass
		self.kill()
		self.proc.stdout.close()
		self.check()
		return self.proc.returncode

	def script(self, data, timeout, sink=None, read=True, cmds=()):
		"""Writes data from a thread and closes the input; reads the
		output to EOF (handing each chunk to sink(chunk) if given, else
		keeping it; with read=False only what is left in the pipe after
		the exit); waits for the exit.  The output; pytest.fail() with
		the transcript of cmds if pop3d still runs after timeout s."""
		p = self.proc

		def writer():
			try:
				for i in range(0, len(data), 1 << 20):
					p.stdin.write(data[i:i + (1 << 20)])
				p.stdin.close()
			except (BrokenPipeError, OSError):
				pass
		th = threading.Thread(target=writer, daemon=True)
		th.start()
		try:
			fcntl.fcntl(self.fd, 1031, 1 << 20)	# F_SETPIPE_SZ
		except OSError:
			pass
		out = bytearray()
		deadline = time.monotonic() + timeout
		try:
			while read:
				left = deadline - time.monotonic()
				if left <= 0:
					raise TimeoutError
				r, _, _ = select.select([self.fd], [], [], left)
				if not r:
					continue
				chunk = os.read(self.fd, 1 << 20)
				if not chunk:
					break
				if sink is not None:
					sink(chunk)
				else:
					out += chunk
			p.wait(max(0.1, deadline - time.monotonic()))
		except (TimeoutError, subprocess.TimeoutExpired):
			self.kill()
			out += p.stdout.read()
			pytest.fail("pop3d still running after %ss:\n%s" % (timeout,
			    _describe(cmds, bytes(out), self.stderr_bytes(),
			    None)), pytrace=False)
		if not read:
			out += p.stdout.read()
		p.stdout.close()
		th.join(10)
		return bytes(out)


class Outcome:
	"""What run_script() collected: .cmds, .out, .err (octets), .rc,
	.elapsed, .rss (KB, with rss= only)."""

	def __init__(self, cmds, out, err, rc, elapsed, rss):
		self.cmds, self.out, self.err = cmds, out, err
		self.rc, self.elapsed, self.rss = rc, elapsed, rss

	def transcript(self):
		t = Transcript(self.cmds, self.out, self.err, self.rc,
		    self.elapsed)
		t.rss = self.rss
		return t


def run_script(argv, kw, errfile, cmds, raw=None, eol=b"\r\n", timeout=30,
    sink=None, read=True, rss=None):
	"""Runs pop3d (argv, Popen keywords kw, stderr to errfile) on the
	command lines cmds (or the octets raw; cmds then only name the
	replies), written at once, with Session.script(); checks it
	(pop3d_check()).  rss: a file for GNU time's peak RSS of pop3d
	(with a small ASan quarantine, which would count as pop3d's).
	An Outcome."""
	data = raw if raw is not None else _encode(cmds, eol)
	cmds = [c.decode("latin-1") if isinstance(c, bytes) else c
	    for c in cmds]
	if rss is not None:
		need(os.access(TIME, os.X_OK), "GNU time (package time)")
		argv = [TIME, "-q", "-f", "%M", "-o", str(rss)] + list(argv)
		env = dict(kw["env"])
		env["ASAN_OPTIONS"] = ":".join(filter(None, [
		    env.get("ASAN_OPTIONS"), "quarantine_size_mb=16"]))
		kw = dict(kw, env=env)
	t0 = time.monotonic()
	s = Session(argv, kw, errfile)
	out = s.script(data, timeout, sink, read, cmds)
	elapsed = time.monotonic() - t0
	s.kill()
	s.check()
	kb = None
	if rss is not None and os.path.exists(rss):
		with open(rss) as f:
			words = f.read().split()
		if words and words[-1].isdigit():
			kb = int(words[-1])
	return Outcome(cmds, out, s.stderr_bytes(), s.proc.returncode, elapsed,
	    kb)


class Inetd(_Pop3d):
	"""Listens on 127.0.0.1:0, accepts one connection and starts pop3d on
	it as fds 0 and 1 (inetd's nowait mode)."""

	def __init__(self, argv, kw, errfile):
		self.argv, self.kw, self.errfile = argv, kw, errfile
		self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
		self.sock.bind(("127.0.0.1", 0))
		self.sock.listen(1)
		self.port = self.sock.getsockname()[1]
		self.started = threading.Event()
		self.error = None
		self.thread = threading.Thread(target=self._serve, daemon=True)
		self.thread.start()

	def _serve(self):
		try:
			self.sock.settimeout(30)
			conn, _ = self.sock.accept()
			with conn:
				self.proc = subprocess.Popen(self.argv, stdin=conn,
				    stdout=conn, stderr=self.errfile, **self.kw)
		except Exception as e:		# reported by wait()
			self.error = e
		finally:
			self.sock.close()
			self.started.set()

	def wait(self, timeout=10):
		if not self.started.wait(timeout):
			raise TimeoutError("nobody connected")
		if self.error:
			raise self.error
		return self.proc.wait(timeout)

	def kill(self):
		"""As Session.kill()."""
		self.started.wait(5)
		_Pop3d.kill(self)


class Pop3Env:
	"""A spool, a password file and ways to run pop3d on them: run()
	(a script at once: a Transcript), session() (interactive), inetd()
	(a TCP socket), all on run_script() and Session, each checked for
	sanitizer reports.  A subclass changes argv(), popen_kw() and
	start_args() (RootEnv of test_auth_root.py)."""

	def __init__(self, binary, base):
		self.bin = binary
		self.base = Path(base)
		self.spool = self.base / "spool"
		self.passwd = self.base / "passwd"
		self.spool.mkdir(mode=0o755)
		self._own(self.spool)
		self.users = []
		self.cleanup = []
		self.fail_delay = 100
		self.add_user(USER, PASSWORD)

	# --- files
	def _own(self, path):
		if ROOT:
			os.chown(path, NOBODY, NOBODY)

	def add_user(self, name, password, scheme="sha512", fields="",
	    raw=None):
		"""Appends a password-file line (raw: the line as given)."""
		line = raw if raw is not None else "%s:%s%s" % (name,
		    make_hash(password, scheme), fields)
		self.users.append(line)
		self.write_passwd(self.users)

	def write_passwd(self, lines):
		self.users = list(lines)
		self.passwd.write_text("".join(ln + "\n" for ln in lines))
		os.chmod(self.passwd, 0o600)
		self._own(self.passwd)

	def mailbox(self, user=USER):
		return self.spool / user

	def write_mbox(self, data, user=USER, mode=0o600):
		"""Writes a mailbox (bytes, or a list of messages for mbox())."""
		if not isinstance(data, bytes):
			data = mbox(data)
		p = self.mailbox(user)
		p.write_bytes(data)
		os.chmod(p, mode)
		self._own(p)
		return data

	def read_mbox(self, user=USER):
		return self.mailbox(user).read_bytes()

	def append_mbox(self, data, user=USER):
		"""Appends as an MDA does: fcntl-locked, O_APPEND."""
		fd = os.open(self.mailbox(user), os.O_WRONLY | os.O_APPEND)
		try:
			fcntl.lockf(fd, fcntl.LOCK_EX)
			os.write(fd, data)
			os.fsync(fd)
			fcntl.lockf(fd, fcntl.LOCK_UN)
		finally:
			os.close(fd)

	def spool_files(self):
		"""The spool's files, but the session-lock file, which stays
		between sessions by design (lock.c; test_session.py checks
		it)."""
		return sorted(p.name for p in self.spool.iterdir()
		    if p.name != SESSION_LOCK)

	# --- running
	def argv(self, *extra, fail_delay=None, auth=None):
		a = [self.bin, "-a", auth or "passwd:%s" % self.passwd,
		    "-s", str(self.spool), "-d"]
		fd = self.fail_delay if fail_delay is None else fail_delay
		if fd is not False:
			a += ["--fail-delay", str(fd)]
		return a + list(extra)

	def popen_kw(self, as_root=False):
		kw = {"cwd": str(self.base), "env": self.env()}
		if ROOT and not as_root:
			kw.update(user=NOBODY, group=NOBODY, extra_groups=[])
		return kw

	def start_args(self, extra, kw):
		"""(argv, Popen keywords) of a run: extra options, and kw,
		argv()'s keywords and as_root (popen_kw()'s)."""
		as_root = kw.pop("as_root", False)
		return self.argv(*extra, **kw), self.popen_kw(as_root)

	@staticmethod
	def env():
		"""pop3d's environment; with the sanitizer build, a report gets
		an exit status of its own (ASan's default, 1, is EOF's)."""
		e = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C",
		    "ASAN_OPTIONS": "exitcode=%d" % SAN_EXIT,
		    "UBSAN_OPTIONS": "exitcode=%d:print_stacktrace=1" % SAN_EXIT}
		for k in ("ASAN_OPTIONS", "UBSAN_OPTIONS", "LSAN_OPTIONS"):
			if k in os.environ:
				e[k] = os.environ[k]
		return e

	def errfile(self):
		return tempfile.NamedTemporaryFile(prefix="pop3d-err.",
		    dir=self.base)

	def _rss_file(self):
		"""A new file name for GNU time, in a directory pop3d's user
		can write."""
		d = self.base / "rss"
		if not d.exists():
			d.mkdir()
			self._own(d)
		self._runs = getattr(self, "_runs", 0) + 1
		return d / ("rss.%d" % self._runs)

	def run(self, cmds, *extra, eol=b"\r\n", raw=None, timeout=30,
	    sink=None, read=True, rss=False, wrapper=(), parse=True, **kw):
		"""Writes all of cmds at once, closes the input, reads everything:
		a Transcript (an Outcome with parse=False: the replies are not
		read yet).  raw: octets to send instead of cmds (cmds are then
		only used to parse the replies); sink, read: see Session.script();
		rss: measure pop3d's peak RSS (.rss, KB); wrapper: a command
		before pop3d's argv.  kw: start_args()'s."""
		argv, pkw = self.start_args(extra, kw)
		o = run_script(list(wrapper) + argv, pkw, self.errfile(), cmds,
		    raw, eol, timeout, sink, read,
		    self._rss_file() if rss else None)
		return o.transcript() if parse else o

	login_cmds = staticmethod(login)

	def start(self, argv, kw, timeout=10):
		"""A Session of argv and Popen keywords kw, ended and checked
		at the end of the test."""
		s = Session(argv, kw, self.errfile(), timeout)
		self.watch(s)
		return s

	def session(self, *extra, **kw):
		return self.start(*self.start_args(extra, kw))

	def inetd(self, *extra, **kw):
		argv, pkw = self.start_args(extra, kw)
		d = Inetd(argv, pkw, self.errfile())
		self.watch(d)
		return d

	def watch(self, s):
		"""At the end of the test, s (a Session or Inetd) is ended and
		checked (pop3d_check())."""
		self.cleanup += [s.kill, s.check]

	def finish(self):
		"""The end of the test: every watched pop3d ended and checked,
		the directory removed; the first failure raised."""
		errors = []
		for f in self.cleanup:
			try:
				f()
			except BaseException as e:	# pytest.fail() too
				errors.append(e)
		shutil.rmtree(self.base, ignore_errors=True)
		if errors:
			raise errors[0]


@pytest.fixture
def pop3(pop3d_bin):
	"""A fresh spool with user alice (password PASSWORD, sha512-crypt)
	and no mailbox yet; pop3 runs as 65534 when we are root."""
	base = tempfile.mkdtemp(prefix="pop3d-test.", dir="/tmp")
	os.chmod(base, 0o755)
	env = Pop3Env(pop3d_bin, base)
	yield env
	env.finish()
