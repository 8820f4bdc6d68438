"""Several hosts (issue 14): real nginx (mail module) and real HAProxy in
front of pop3d backends, each a network namespace of its own.

The test makes the hosts: namespaces joined by veth pairs, addressed from
192.0.2.0/24 (RFC 5737) only inside them, removed at the end, so no packet
leaves the machine:

    client 192.0.2.2 --- 192.0.2.1 proxy 192.0.2.17 --- 192.0.2.18 backend 1
                                         192.0.2.25 --- 192.0.2.26 backend 2

The proxy runs the shipped deploy/nginx-pop3.conf or deploy/haproxy-pop3.cfg
as they are (only nginx's pid and error log moved); each backend runs
xinetd with the shipped xinetd.d/pop3 (port 110, bound to its address,
pop3d's arguments set, --proxy-from naming the proxy), in a mount
namespace whose /dev/log is a socket the test reads: its syslog.  Backends
check passwords with a password file, or (one test) with PAM: the cwrap
stack of test_auth_root.py, given to pop3d by xinetd's env attribute,
whose module logs PAM_RHOST.  Clients (poplib, curl) run in the client
namespace.  Expected mail is what the test wrote.
"""

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import pytest

from conftest import REPO, need, shared_copy
from test_deploy import BIN, mbox, xinetd_conf
from test_auth_root import MSGS, PW, RootEnv, tools	# noqa: F401
from test_fail2ban import FILTER, matched_ips

USERS = {"alice": ("Shard-one pw", 2001), "bob": ("Shard-two pw", 2002)}
CLIENT, FRONT = "192.0.2.2", "192.0.2.1"
BACK = {1: ("192.0.2.17", "192.0.2.18"), 2: ("192.0.2.25", "192.0.2.26")}
UNTRUSTED = "192.0.2.20"	# a second address of the proxy, not listed


def msg(user, i):
	return (b"From: sender%d@example.org\nTo: %s@example.org\n"
	    b"Subject: %s %d\n\nline one of %d\n.dot-started line\n\n"
	    b"From the body, not a From_ line\nend\n" % (i, user.encode(),
	    user.encode(), i, i))


FROMS = [b"From sender%d@example.org Thu Nov 26 12:%02d:00 2026\n" % (i, i)
    for i in range(4)]

CLIENT_PY = r"""
import json, poplib, sys
host, user, pw, dele = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4]
poplib._MAXLINE = 1 << 20
p = poplib.POP3(host, 110, timeout=30)
out = {"welcome": p.getwelcome().decode()}
p.user(user)
p.pass_(pw)
out["stat"] = list(p.stat())
out["list"] = [l.decode() for l in p.list()[1]]
out["retr"] = [(b"\n".join(p.retr(i + 1)[1]) + b"\n").hex()
    for i in range(out["stat"][0])]
if dele != "-":
	out["dele"] = p.dele(int(dele)).decode()
out["quit"] = p.quit().decode()
print(json.dumps(out))
"""


class Syslog:
	"""A backend's /dev/log, read as it comes, as a syslog daemon reads
	it.  A datagram socket nobody reads holds net.unix.max_dgram_qlen
	datagrams (10 by default); then syslog(3)'s send() blocks every pop3d
	that logs (in unix_wait_for_peer): read only when a test asked, the
	socket filled during curl's sessions, and the fourth one's first line
	blocked, so nginx's login never got an answer."""

	def __init__(self, path):
		self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
		self.sock.bind(str(path))
		path.chmod(0o666)
		self.sock.settimeout(0.1)
		self.lines, self.taken, self.last = [], 0, time.monotonic()
		self.lock, self.stop = threading.Lock(), False
		self.thread = threading.Thread(target=self.read, daemon=True)
		self.thread.start()

	def read(self):
		while not self.stop:
			try:
				d = self.sock.recv(4096)
			except socket.timeout:
				continue
			with self.lock:
				self.lines.append(d.decode("utf-8", "replace"))
				self.last = time.monotonic()

	def new(self):
		"""The lines not returned yet, once none came for 0.3 s."""
		while True:
			with self.lock:
				quiet = time.monotonic() - self.last
				if quiet >= 0.3:
					got = self.lines[self.taken:]
					self.taken = len(self.lines)
					return got
			time.sleep(0.3 - quiet)

	def close(self):
		self.stop = True
		self.thread.join()
		self.sock.close()


def run(*argv, check=True, **kw):
	return subprocess.run(argv, check=check, capture_output=True,
	    timeout=60, **kw)


class Hosts:
	"""The namespaces, links, backends and the proxy of one test."""

	def __init__(self, base, exe, shared_spool):
		self.base, self.exe = base, exe
		tag = "p14x%d" % (os.getpid() % 100000)
		self.ns = {r: "%s%s" % (tag, r) for r in ("c", "p", "b1", "b2")}
		self.procs, self.logs = [], {}
		self.made = []
		for ns in self.ns.values():
			run("ip", "netns", "add", ns)
			self.made.append(ns)
			self.ip(ns, "link", "set", "lo", "up")
		self.link("c", CLIENT, "p", FRONT, 29)
		for i, (p, b) in BACK.items():
			self.link("p", p, "b%d" % i, b, 29)
		self.ip(self.ns["p"], "addr", "add", UNTRUSTED + "/29", "dev",
		    "v" + self.ns["p"] + "b1")
		self.passwd = base / "passwd"
		self.passwd.write_text("".join("%s:%s:%d:%d\n" % (u, run(
		    "openssl", "passwd", "-6", pw, text=True).stdout.strip(), uid,
		    uid) for u, (pw, uid) in USERS.items()))
		self.passwd.chmod(0o600)
		self.spool = {}
		for i in (1, 2):
			d = base / ("spool" if shared_spool else "spool%d" % i)
			if not d.exists():
				d.mkdir()
				d.chmod(0o1777)
			self.spool[i] = d

	def ip(self, ns, *argv):
		run("ip", "-n", ns, *argv)

	def link(self, r1, a1, r2, a2, bits):
		n1, n2 = self.ns[r1], self.ns[r2]
		v1, v2 = "v" + n1 + r2, "v" + n2 + r1
		run("ip", "link", "add", v1[:15], "netns", n1, "type", "veth",
		    "peer", "name", v2[:15], "netns", n2)
		for ns, v, a in ((n1, v1, a1), (n2, v2, a2)):
			self.ip(ns, "addr", "add", "%s/%d" % (a, bits), "dev", v[:15])
			self.ip(ns, "link", "set", v[:15], "up")

	def write_mbox(self, i, user, msgs):
		uid = USERS[user][1]
		p = self.spool[i] / user
		p.write_bytes(mbox(msgs, FROMS[:len(msgs)]))
		os.chown(p, uid, uid)
		p.chmod(0o600)

	def start(self, role, argv, port=None, addr=None, syslog=None):
		"""argv in namespace role, its own session; waits for it to listen
		on addr:port.  syslog: a path that becomes its /dev/log."""
		pre = ["ip", "netns", "exec", self.ns[role]]
		if syslog:
			pre += ["unshare", "-m", "sh", "-c", "mount -t tmpfs -o "
			    "mode=755 none /dev && mknod -m 666 /dev/null c 1 3 && "
			    "ln -s %s /dev/log && exec \"$@\"" % syslog, "sh"]
		out = open(self.base / ("%s-%s.out" % (role, Path(argv[0]).name)),
		    "wb")
		p = subprocess.Popen(pre + argv, stdin=subprocess.DEVNULL,
		    stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
		out.close()
		self.procs.append(p)
		deadline = time.monotonic() + 15
		while port and not self.listening(role, addr, port):
			if p.poll() is not None or time.monotonic() > deadline:
				pytest.fail("%s did not listen on %s:%d: %s" % (argv[0],
				    addr, port, self.report()))
			time.sleep(0.05)
		return p

	def listening(self, role, addr, port):
		r = run("ip", "netns", "exec", self.ns[role], "ss", "-Hltn",
		    "src", "%s:%d" % (addr, port), check=False, text=True)
		return r.stdout.strip() != ""

	def backend(self, i, extra=(), auth=None, env=None):
		"""xinetd with the shipped xinetd.d/pop3 on backend i; auth:
		pop3d's options for another spool and login check; env: pop3d's
		environment (xinetd's env attribute)."""
		d = self.base / ("b%d" % i)
		d.mkdir()
		d.chmod(0o755)
		sock = d / "log"
		self.logs[i] = Syslog(sock)
		args = (auth or ["--spool=" + str(self.spool[i]), "--auth=passwd:" +
		    str(self.passwd), "--prelogin-user=nobody"]) + [
		    "--min-uid=1000", "--proxy-from=" + BACK[i][0]] + list(extra)

		class Site:
			def server(_):
				return (str(self.exe), args)
		conf = xinetd_conf(Site(), 110, "xinetd.d/pop3",
		    d / "xinetd-service.log")
		conf = conf.replace("bind\t= 127.0.0.1", "bind\t= " + BACK[i][1])
		assert "bind\t= " + BACK[i][1] in conf
		if env:
			conf = conf.replace("\tbind\t=", "\tenv\t= %s\n\tbind\t=" %
			    " ".join("%s=%s" % kv for kv in env.items()), 1)
		(d / "xinetd.conf").write_text(conf)
		self.start("b%d" % i, ["xinetd", "-dontfork", "-f",
		    str(d / "xinetd.conf"), "-pidfile", str(d / "xinetd.pid"),
		    "-filelog", str(d / "xinetd-own.log")], 110, BACK[i][1],
		    syslog=sock)

	def syslog(self, i):
		"""The syslog lines backend i sent since the last call."""
		return self.logs[i].new()

	def client(self, *argv, role="c"):
		return run("ip", "netns", "exec", self.ns[role], *argv,
		    check=False)

	def poplib(self, user, dele="-", pw=None):
		py = self.base / "client.py"
		py.write_text(CLIENT_PY)
		r = self.client("/usr/bin/python3", str(py), FRONT, user,
		    pw or USERS[user][0], str(dele))
		assert r.returncode == 0, r.stderr.decode() + self.report()
		return json.loads(r.stdout)

	def report(self):
		text = ""
		for p in sorted(self.base.glob("**/*.out")) + sorted(
		    self.base.glob("**/*.log")):
			if p.is_file():
				text += "\n--- %s\n%s" % (p.name, p.read_text(
				    errors="replace")[-2000:])
		return text

	def close(self):
		for p in self.procs:
			if p.poll() is None:
				os.killpg(p.pid, signal.SIGTERM)
				try:
					p.wait(10)
				except subprocess.TimeoutExpired:
					os.killpg(p.pid, signal.SIGKILL)
					p.wait(10)
			try:
				os.killpg(p.pid, signal.SIGKILL)
			except ProcessLookupError:
				pass
		for ns in self.made:
			r = run("ip", "netns", "pids", ns, check=False, text=True)
			for pid in r.stdout.split():
				try:
					os.kill(int(pid), signal.SIGKILL)
				except ProcessLookupError:
					pass
			run("ip", "netns", "del", ns, check=False)
		for s in self.logs.values():
			s.close()


@pytest.fixture(scope="module")
def exe():
	need(os.geteuid() == 0, "network namespaces and launchers need root")
	need(BIN.exists(), "%s (make pop3d)" % BIN)
	for prog in ("ip", "xinetd", "unshare", "curl", "ss"):
		need(shutil.which(prog), "%s (tests/packages.txt)" % prog)
	return Path(shared_copy(BIN))


def make_hosts(exe, shared_spool):
	base = Path(tempfile.mkdtemp(prefix="pop3d-hosts-"))
	base.chmod(0o755)
	try:
		return Hosts(base, exe, shared_spool)
	except BaseException:
		shutil.rmtree(base, ignore_errors=True)
		raise


def start_nginx(h):
	n = h.base / "nginx"
	n.mkdir()
	h.start("p", ["nginx", "-c", str(REPO / "deploy/nginx-pop3.conf"),
	    "-e", str(n / "error.log"), "-g", "daemon off; pid %s; "
	    "error_log %s info;" % (n / "nginx.pid", n / "error.log")],
	    110, FRONT)


def start_haproxy(h):
	h.start("p", ["haproxy", "-db", "-f",
	    str(REPO / "deploy/haproxy-pop3.cfg")], 110, FRONT)


def need_nginx():
	need(shutil.which("nginx") and
	    Path("/usr/lib/nginx/modules/ngx_mail_module.so").exists(),
	    "nginx with its mail module (nginx-light, libnginx-mod-mail)")


@pytest.fixture
def shards(exe):
	need_nginx()
	h = make_hosts(exe, shared_spool=False)
	try:
		h.msgs = {"alice": [msg("alice", i) for i in range(3)],
		    "bob": [msg("bob", i) for i in range(2)]}
		h.write_mbox(1, "alice", h.msgs["alice"])
		h.write_mbox(2, "bob", h.msgs["bob"])
		h.backend(1)
		h.backend(2)
		start_nginx(h)
		yield h
	finally:
		h.close()
		shutil.rmtree(h.base, ignore_errors=True)


@pytest.fixture
def pam_shard(exe, tools):
	"""Backend 1 logs in with PAM: test_auth_root.py's stack (cwrap's
	pam_wrapper and nss_wrapper, its module that logs PAM_RHOST), through
	xinetd's env attribute."""
	need_nginx()
	h = make_hosts(exe, shared_spool=False)
	try:
		d = h.base / "pam"
		d.mkdir()
		h.pam = RootEnv(str(exe), d, tools)
		env = h.pam.env()
		env["LD_PRELOAD"] = env["LD_PRELOAD"].replace(" ", ":")
		h.backend(1, auth=["--spool=" + str(h.pam.spool),
		    "--prelogin-user=pop3d"], env=env)
		start_nginx(h)
		yield h
	finally:
		h.close()
		shutil.rmtree(h.base, ignore_errors=True)


def login_lines(lines):
	return [ln for ln in lines if "login: user" in ln]


def proxied(lines, proxy, client=CLIENT):
	"""The login lines name the client, and the line of each PROXY header
	names both."""
	heads = [ln for ln in lines if "PROXY header" in ln]
	logins = login_lines(lines)
	return logins and all(ln.endswith(" from " + client) for ln in logins) \
	    and heads and all(ln.endswith("PROXY header from %s: client %s" %
	    (proxy, client)) for ln in heads)


def test_nginx_routes_each_user_to_its_shard(shards):
	"""poplib through nginx: alice's mail from backend 1, bob's from
	backend 2, byte-exact; DELE and QUIT change only that shard's
	mailbox; each backend's syslog names the client's address, with the
	proxy's, and sees only its own user."""
	h = shards
	a = h.poplib("alice", dele=2)
	assert a["welcome"].startswith("+OK")
	want = h.msgs["alice"]
	assert a["stat"] == [len(want), sum(len(m.replace(b"\n", b"\r\n"))
	    for m in want)]
	assert a["list"] == ["%d %d" % (i + 1, len(m.replace(b"\n", b"\r\n")))
	    for i, m in enumerate(want)]
	assert [bytes.fromhex(x) for x in a["retr"]] == want
	assert a["dele"].startswith("+OK") and a["quit"].startswith("+OK")
	assert (h.spool[1] / "alice").read_bytes() == mbox(
	    [want[0], want[2]], [FROMS[0], FROMS[2]])
	b = h.poplib("bob")
	assert [bytes.fromhex(x) for x in b["retr"]] == h.msgs["bob"]
	assert not (h.spool[2] / "alice").exists()
	assert not (h.spool[1] / "bob").exists()
	s1, s2 = h.syslog(1), h.syslog(2)
	l1, l2 = login_lines(s1), login_lines(s2)
	assert len(l1) == 1 and "user alice uid 2001" in l1[0], l1
	assert len(l2) == 1 and "user bob uid 2002" in l2[0], l2
	assert proxied(s1, BACK[1][0]) and proxied(s2, BACK[2][0]), (s1, s2)


def test_curl_through_nginx(shards):
	"""curl (libcurl's POP3) through nginx: LIST, RETR of each message
	(CRLF, as sent), then -X 'DELE 1' -I: curl sends DELE 1 and reads its
	one-line +OK (its trace shows both; without -I it would wait for a
	multi-line answer until --max-time), and QUITs when it closes the
	connection at exit (not in the trace, which ends "left intact").
	Only QUIT commits a deletion (a dropped connection deletes nothing),
	so message 1 gone from bob's shard, message 2 byte-exact, is the
	proof it came through nginx.  A LIST session started right after
	sees only message 2.  (This DELE once timed out after curl's
	--max-time 30 s: the test's syslog socket was then read only when
	the test asked; see Syslog.)"""
	h = shards
	url = "pop3://%s/" % FRONT
	auth = "bob:" + USERS["bob"][0]
	want = h.msgs["bob"]

	def curl(name, *argv):
		trace = h.base / ("curl-%s.trace" % name)
		r = h.client("curl", "-sS", "--max-time", "30", "--trace-ascii",
		    str(trace), "-u", auth, *argv)
		return r, trace.read_text(errors="replace")
	r, t = curl("list", url)
	assert r.returncode == 0, r.stderr
	assert r.stdout.decode().splitlines() == ["%d %d" % (i + 1, len(
	    m.replace(b"\n", b"\r\n"))) for i, m in enumerate(want)]
	for i, m in enumerate(want):
		r, t = curl("retr%d" % (i + 1), url + str(i + 1))
		assert r.returncode == 0, r.stderr
		assert r.stdout == m.replace(b"\n", b"\r\n"), i
	assert (h.spool[2] / "bob").read_bytes() == mbox(want, FROMS[:2])
	r, t = curl("dele", "-X", "DELE 1", "-I", url)
	assert r.returncode == 0, (r.stderr, t, h.report())
	assert re.search(r"=> Send header.*\n0000: DELE 1\n<= Recv header.*\n"
	    r"0000: \+OK", t), t
	r, t2 = curl("relist", url)
	assert r.returncode == 0, (r.stderr, t2, h.report())
	assert r.stdout.decode().splitlines() == ["1 %d" % len(
	    want[1].replace(b"\n", b"\r\n"))], (t, t2)
	assert (h.spool[2] / "bob").read_bytes() == mbox(want[1:], FROMS[1:2])
	got = h.syslog(2)
	assert len(login_lines(got)) == len(want) + 3, got
	assert proxied(got, BACK[2][0]), got


def fail2ban_ips(h, lines):
	"""The addresses the shipped fail2ban filter finds in syslog lines
	(written as rsyslog writes them)."""
	need(shutil.which("fail2ban-regex") and os.path.isdir("/etc/fail2ban"),
	    "fail2ban (tests/packages.txt)")
	conf = h.base / "fail2ban"
	shutil.copytree("/etc/fail2ban", conf)
	shutil.copy(FILTER, conf / "filter.d/pop3d.conf")
	out = []
	for d in lines:
		m = re.match(r"<\d+>(\w{3} [ \d]\d \d\d:\d\d:\d\d) (.*)$", d,
		    re.S)
		assert m, d
		out.append("%s backend %s" % (m.group(1), m.group(2).rstrip()))
	return matched_ips(conf, h.base, out)


def test_wrong_password_through_nginx(shards):
	"""The backend checks the password: nginx relays its refusal, and the
	backend logs the client's address, which the shipped fail2ban filter
	finds (not the proxy's)."""
	h = shards
	r = h.client("curl", "-sS", "--max-time", "30", "-u", "alice:wrong",
	    "pop3://%s/" % FRONT)
	assert r.returncode != 0
	got = h.syslog(1)
	assert fail2ban_ips(h, got) == [CLIENT], got
	assert any(ln.endswith("login failed: user alice from %s: wrong "
	    "password" % CLIENT) for ln in got), got
	assert any(ln.endswith("PROXY header from %s: client %s" % (BACK[1][0],
	    CLIENT)) for ln in got), got
	assert (h.spool[1] / "alice").read_bytes() == mbox(h.msgs["alice"],
	    FROMS[:3])


def test_proxy_header_from_an_untrusted_peer_is_a_command(shards):
	"""A PROXY line from an address --proxy-from does not list (the proxy
	host's second address) is an unknown command after the greeting; the
	session then goes on, logged with the real peer."""
	h = shards
	py = h.base / "raw.py"
	py.write_text(
	    "import socket\n"
	    "s = socket.create_connection(('%s', 110), 10, ('%s', 0))\n"
	    "s.sendall(b'PROXY TCP4 198.51.100.7 %s 1234 110\\r\\n"
	    "USER alice\\r\\nPASS %s\\r\\nSTAT\\r\\nQUIT\\r\\n')\n"
	    "out = b''\n"
	    "while True:\n"
	    "    c = s.recv(4096)\n"
	    "    if not c: break\n"
	    "    out += c\n"
	    "print(out.decode())\n" % (BACK[1][1], UNTRUSTED, BACK[1][1],
	    USERS["alice"][0]))
	r = h.client("/usr/bin/python3", str(py), role="p")
	assert r.returncode == 0, r.stderr
	lines = r.stdout.decode().splitlines()
	assert lines[0].startswith("+OK") and lines[1].startswith("-ERR"), lines
	assert [ln[:3] for ln in lines[2:6]] == ["+OK"] * 4, lines
	log = h.syslog(1)
	got = login_lines(log)
	assert len(got) == 1 and got[0].endswith("from " + UNTRUSTED), got
	assert "198.51.100.7" not in "".join(log) and \
	    not any("PROXY header" in ln for ln in log), log


@pytest.fixture
def shared(exe):
	need(shutil.which("haproxy"), "haproxy (tests/packages.txt)")
	h = make_hosts(exe, shared_spool=True)
	try:
		h.msgs = {"alice": [msg("alice", i) for i in range(4)]}
		h.write_mbox(1, "alice", h.msgs["alice"])
		h.backend(1)
		h.backend(2)
		start_haproxy(h)
		yield h
	finally:
		h.close()
		shutil.rmtree(h.base, ignore_errors=True)


def test_haproxy_balances_over_a_shared_spool(shared):
	"""poplib through HAProxy (send-proxy-v2, round robin): two sessions
	in turn reach the two backends, each byte-exact against what the test
	wrote, each logged with the client's address; the DELE of the first
	is seen by the second."""
	h = shared
	want = h.msgs["alice"]
	a = h.poplib("alice", dele=1)
	assert [bytes.fromhex(x) for x in a["retr"]] == want
	b = h.poplib("alice")
	assert [bytes.fromhex(x) for x in b["retr"]] == want[1:]
	assert (h.spool[1] / "alice").read_bytes() == mbox(want[1:], FROMS[1:4])
	s1, s2 = h.syslog(1), h.syslog(2)
	assert len(login_lines(s1)) == 1 and len(login_lines(s2)) == 1, (s1, s2)
	assert proxied(s1, BACK[1][0]) and proxied(s2, BACK[2][0]), (s1, s2)


def test_second_session_through_the_other_front_end_is_in_use(shared):
	"""While alice's session through HAProxy holds her mailbox on one
	backend, the next one (round robin: the other backend, the same
	spool) gets -ERR [IN-USE]; nothing changes."""
	h = shared
	py = h.base / "two.py"
	py.write_text(
	    "import poplib, sys\n"
	    "a = poplib.POP3('%s', 110, timeout=30)\n"
	    "a.user('alice'); a.pass_(sys.argv[1]); a.stat()\n"
	    "b = poplib.POP3('%s', 110, timeout=30)\n"
	    "b.user('alice')\n"
	    "try:\n"
	    "    b.pass_(sys.argv[1]); print('second: ok')\n"
	    "except poplib.error_proto as e:\n"
	    "    print('second:', e.args[0].decode())\n"
	    "print('first:', a.quit().decode())\n" % (FRONT, FRONT))
	before = (h.spool[1] / "alice").read_bytes()
	r = h.client("/usr/bin/python3", str(py), USERS["alice"][0])
	assert r.returncode == 0, r.stderr.decode()
	out = r.stdout.decode()
	assert re.search(r"^second: -ERR \[IN-USE\]", out, re.M), out
	assert re.search(r"^first: \+OK", out, re.M), out
	assert (h.spool[1] / "alice").read_bytes() == before
	assert len(login_lines(h.syslog(1))) == 1
	assert len(login_lines(h.syslog(2))) == 1


def test_pam_rhost_is_the_clients_namespace_address(pam_shard):
	"""Through nginx to a backend that logs in with PAM: every PAM call of
	the session saw PAM_RHOST = the client's namespace address (the
	module's log, whole), not the proxy's; the mail is what the test
	wrote."""
	h = pam_shard
	a = h.poplib("alice", pw=PW)
	assert [bytes.fromhex(x) for x in a["retr"]] == MSGS
	ev = h.pam.pamlog.read_text().splitlines()
	# pop3d's default --pam-session=no: no session stack.
	assert [e.split()[0] for e in ev] == ["auth", "acct", "end"], ev
	assert {e.split(" rhost=", 1)[1] for e in ev} == {CLIENT}, ev
	assert proxied(h.syslog(1), BACK[1][0]), h.syslog(1)
