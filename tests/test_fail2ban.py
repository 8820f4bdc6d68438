"""contrib/fail2ban (issue 15): the filter against pop3d's real syslog lines.

pop3d runs as root, as inetd runs it, on a real TCP connection whose
client end is bound to its own loopback address (127.0.0.N, and ::1),
so the address in the log is the one getpeername() gives.  Its syslog
datagrams are caught as in test_auth_root.py's test_syslog_lines (a
private mount namespace whose /dev/log is our socket) and written as
rsyslog writes them ("TIMESTAMP HOST pop3d[PID]: MESSAGE").
fail2ban-regex then reads them with the shipped filter, in a copy of
/etc/fail2ban (the filter includes common.conf from there).

The expected matches come from what each session did (the test knows
how many logins it failed, and from which address), never from the log:
each failed login is exactly one match with its client's address, and
no line of a successful session matches.  The lines are never written
by hand: a change of pop3d's wording fails this test, not fail2ban.
"""

import base64
import os
import re
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

import pytest

from conftest import make_hash, mbox, need, sanitizer_check

ROOT = Path(__file__).resolve().parent.parent
FILTER = ROOT / "contrib/fail2ban/filter.d/pop3d.conf"
JAIL = ROOT / "contrib/fail2ban/jail.d/pop3d.conf"
MAIL_UID = 2001
PW = "f2b s3cret"
BAD = "wrong one"

pytestmark = pytest.mark.skipif(os.geteuid() != 0,
    reason="pop3d's root mode and a private /dev/log need root")


class Syslog:
	"""pop3d runs in a mount namespace whose /dev/log is our socket."""

	def __init__(self, base, binary):
		self.base = base
		self.bin = binary
		self.path = base / "log"
		self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
		self.sock.bind(str(self.path))
		self.sock.settimeout(0.3)
		self.spool = base / "spool"
		self.spool.mkdir()
		os.chown(self.spool, 0, 8)			# root:mail 2775
		os.chmod(self.spool, 0o2775)
		box = self.spool / "alice"
		box.write_bytes(mbox([b"Subject: hello\n\nbody\n"]))
		os.chown(box, MAIL_UID, MAIL_UID)
		os.chmod(box, 0o600)
		self.passwd = base / "passwd"
		self.passwd.write_text("alice:%s:%d:%d\n" % (make_hash(PW),
		    MAIL_UID, MAIL_UID))
		os.chmod(self.passwd, 0o600)

	def session(self, client, cmds, passwd=None):
		"""One session from client address (a 127.0.0.N or ::1), with
		the password file passwd (default self.passwd): the octets
		pop3d sent and the syslog lines it wrote, rsyslog style."""
		fam = socket.AF_INET6 if ":" in client else socket.AF_INET
		lst = socket.socket(fam)
		lst.bind(("::1" if fam == socket.AF_INET6 else "127.0.0.1", 0))
		lst.listen(1)
		cli = socket.socket(fam)
		cli.bind((client, 0))
		cli.connect(lst.getsockname())
		conn, _ = lst.accept()
		lst.close()
		script = ("mount -t tmpfs -o mode=755 none /dev && "
		    "mknod -m 666 /dev/null c 1 3 && ln -s %s /dev/log && "
		    "exec \"$@\"" % self.path)
		with tempfile.TemporaryFile() as err:
			p = subprocess.Popen(["unshare", "-m", "sh", "-c", script,
			    "sh", self.bin, "-s", str(self.spool), "-a",
			    "passwd:%s" % (passwd or self.passwd), "-u", "nobody",
			    "--fail-delay", "50"], stdin=conn, stdout=conn,
			    stderr=err, cwd=str(self.base))
			conn.close()
			cli.sendall(b"".join(c.encode() + b"\r\n" for c in cmds))
			cli.shutdown(socket.SHUT_WR)
			cli.settimeout(30)
			out = cli.makefile("rb").read()
			cli.close()
			p.wait(timeout=30)
			err.seek(0)
			sanitizer_check(err.read().decode("utf-8", "replace"))
		lines = []
		while True:
			try:
				d = self.sock.recv(4096).decode("utf-8", "replace")
			except socket.timeout:
				break
			# "<PRI>Mmm dd hh:mm:ss ident[pid]: msg" -> rsyslog's file line
			m = re.match(r"<\d+>(\w{3} [ \d]\d \d\d:\d\d:\d\d) (.*)$", d,
			    re.S)
			assert m, d
			lines.append("%s mailhost %s" % (m.group(1),
			    m.group(2).rstrip("\n")))
		return out, lines


@pytest.fixture
def f2b(pop3d_bin):
	need(shutil.which("fail2ban-regex") and os.path.isdir("/etc/fail2ban"),
	    "fail2ban (make deps)")
	need(shutil.which("unshare") and shutil.which("mount"), "unshare")
	base = Path(tempfile.mkdtemp(prefix="pop3d-f2b.", dir="/tmp"))
	os.chmod(base, 0o755)
	conf = base / "fail2ban"
	shutil.copytree("/etc/fail2ban", conf)
	shutil.copy(FILTER, conf / "filter.d/pop3d.conf")
	try:
		yield Syslog(base, pop3d_bin), conf
	finally:
		shutil.rmtree(base, ignore_errors=True)


def matched_ips(conf, base, lines):
	"""The client addresses fail2ban-regex finds in lines, in order."""
	log = base / "mail.log"
	log.write_text("".join(l + "\n" for l in lines))
	r = subprocess.run(["fail2ban-regex", "-o", "ip", str(log),
	    str(conf / "filter.d/pop3d.conf")], capture_output=True,
	    text=True, timeout=120)
	assert r.returncode == 0, r.stdout + r.stderr
	return r.stdout.split()


def plain(user, pw):
	return base64.b64encode(("\0%s\0%s" % (user, pw)).encode()).decode()


def has_ipv6():
	try:
		with socket.socket(socket.AF_INET6) as s:
			s.bind(("::1", 0))
		return True
	except OSError:
		return False


def test_failed_logins_match_once_each_with_the_address(f2b):
	"""Wrong password, unknown user, a failed AUTH PLAIN, the three
	failures that end a session, over IPv4 and IPv6: one match per
	failure, each with its client's address and no other."""
	sl, conf = f2b
	cases = [
	    ("127.0.0.11", ["USER alice", "PASS " + BAD, "QUIT"], 1),
	    ("127.0.0.12", ["USER nosuch", "PASS " + PW, "QUIT"], 1),
	    ("127.0.0.13", ["AUTH PLAIN " + plain("alice", BAD), "QUIT"], 1),
	    ("127.0.0.14", ["AUTH PLAIN " + plain("ghost", PW), "QUIT"], 1),
	    ("127.0.0.15", ["USER alice", "PASS " + BAD, "USER x-y", "PASS a",
		"AUTH PLAIN " + plain("alice", BAD)], 3),
	]
	if has_ipv6():
		cases.append(("::1", ["USER alice", "PASS " + BAD, "QUIT"], 1))
	for addr, cmds, fails in cases:
		out, lines = sl.session(addr, cmds)
		# The replies say the logins failed, as the test intended.
		assert out.count(b"-ERR [AUTH]") == fails, (addr, out)
		got = matched_ips(conf, sl.base, lines)
		assert got == [addr] * fails, (addr, got, lines)


def test_too_many_bad_commands_lines_naming_the_client_match(f2b):
	"""A client that sends nothing but bad commands until pop3d closes
	the session: pop3d logs it with the client's address, and every line
	of that session that names the address is a match with it."""
	sl, conf = f2b
	addr = "127.0.0.21"
	out, lines = sl.session(addr, ["XYZZY"] * 40)
	assert b"-ERR too many bad commands" in out, out
	naming = [l for l in lines if re.search(r"\b%s\b" % re.escape(addr), l)]
	assert naming, lines
	assert matched_ips(conf, sl.base, lines) == [addr] * len(naming), lines


def test_successful_sessions_never_match(f2b):
	"""A login with the right password (USER/PASS and AUTH PLAIN), RETR
	and QUIT, and a session that gives up before logging in: their
	lines, the login line with the address included, match nothing."""
	sl, conf = f2b
	all_lines = []
	for addr, cmds in (
	    ("127.0.0.31", ["USER alice", "PASS " + PW, "STAT", "RETR 1",
		"QUIT"]),
	    ("127.0.0.32", ["AUTH PLAIN " + plain("alice", PW), "LIST",
		"QUIT"]),
	    ("127.0.0.33", ["CAPA", "QUIT"])):
		out, lines = sl.session(addr, cmds)
		assert b"-ERR" not in out, out
		all_lines += lines
	# The oracle has something to refuse: the address is in the log.
	assert any("from 127.0.0.31" in l for l in all_lines), all_lines
	assert any("session end" in l for l in all_lines), all_lines
	assert matched_ips(conf, sl.base, all_lines) == [], all_lines


def test_login_errors_never_match(f2b):
	"""The right password against a password file pop3d refuses (others
	may read it): -ERR [SYS/TEMP], a "login error" line with the address,
	and no match: a broken backend bans nobody."""
	sl, conf = f2b
	bad = sl.base / "passwd.readable"
	shutil.copy(sl.passwd, bad)
	os.chmod(bad, 0o644)
	addr = "127.0.0.41"
	out, lines = sl.session(addr, ["USER alice", "PASS " + PW, "QUIT"],
	    passwd=bad)
	assert b"-ERR [SYS/TEMP]" in out and b"-ERR [AUTH]" not in out, out
	# The oracle has something to refuse: the address is in the log.
	assert any("from %s" % addr in l for l in lines), lines
	assert matched_ips(conf, sl.base, lines) == [], lines


def test_jail_example(f2b):
	"""The jail example loads in fail2ban's configuration test once the
	administrator enables it, with the pop3d filter; as shipped it is
	disabled (nothing is banned until the administrator says so)."""
	sl, conf = f2b
	need(shutil.which("fail2ban-client"), "fail2ban-client")
	shutil.copy(JAIL, conf / "jail.d/pop3d.conf")
	# Only our jail: Debian's default sshd jail wants /var/log/auth.log.
	for f in (conf / "jail.d").iterdir():
		if f.name != "pop3d.conf":
			f.unlink()
	log = sl.base / "mail.log"
	log.write_text("")

	def dump():
		r = subprocess.run(["fail2ban-client", "-c", str(conf), "-d"],
		    capture_output=True, text=True, timeout=120)
		return r.stdout + r.stderr
	assert "'add', 'pop3d'" not in dump()
	(conf / "jail.d/pop3d.local").write_text(
	    "[pop3d]\nenabled = true\nlogpath = %s\n" % log)
	r = subprocess.run(["fail2ban-client", "-c", str(conf), "-t"],
	    capture_output=True, text=True, timeout=120)
	assert r.returncode == 0, r.stdout + r.stderr
	d = dump()
	assert "'add', 'pop3d'" in d, d
	assert "login failed: (?:user" in d and str(log) in d, d
