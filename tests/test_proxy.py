"""The PROXY protocol header (issue 14, proxy.c): --proxy-from, versions 1
and 2, the limits of the spec on both sides, the deadline, the bytes after
the header, the client's address in the log and in PAM_RHOST.

pop3d runs behind a listener of the tests on 127.0.0.1 (conftest's Inetd),
so its peer is 127.0.0.1: the "proxy".  Headers are built here from the
spec (HAProxy's proxy-protocol.txt), never taken from pop3d.  Two modes:
pop3d as root (the monitor, the pre-login child, PAM through the cwrap
stack of test_auth_root.py, whose module logs PAM_RHOST) and pop3d as an
ordinary user (one process, the password file).
"""

import os
import re
import socket
import struct
import subprocess
import tempfile
import threading
import time

import pytest

from conftest import (LIMITS, PASSWORD, REPO, ROOT, Inetd, mbox,
    parse_replies)
from test_auth_root import (MSGS, NSS_WRAPPER, PAM_WRAPPER, PW, cc, root,	# noqa: F401 (fixtures)
    tools)

SIG = b"\r\n\r\n\x00\r\nQUIT\n"
CLIENT4, CLIENT6 = "192.0.2.10", "2001:db8::10"
V1_MAX = LIMITS["PROXY_V1_MAX"]
V2_HDR = LIMITS["PROXY_V2_HDR"]
NOPROXY = "PROXY TCP4 192.0.2.66 192.0.2.1 1234 110"


def v1(proto="TCP4", src=CLIENT4, dst="192.0.2.1", sport=56324, dport=110):
	return ("PROXY %s %s %s %s %s\r\n" % (proto, src, dst, sport, dport)
	    ).encode()


def addr_block(fam, src=None):
	if fam == 1:
		return socket.inet_pton(socket.AF_INET, src or CLIENT4) + \
		    socket.inet_pton(socket.AF_INET, "192.0.2.1") + \
		    struct.pack("!HH", 56324, 110)
	if fam == 2:
		return socket.inet_pton(socket.AF_INET6, src or CLIENT6) + \
		    socket.inet_pton(socket.AF_INET6, "2001:db8::1") + \
		    struct.pack("!HH", 56324, 110)
	if fam == 3:
		return b"/run/client".ljust(108, b"\0") + \
		    b"/run/proxy".ljust(108, b"\0")
	return b""


def v2(cmd=1, fam=1, proto=1, body=None, tlv=b"", ver=2, length=None):
	"""A v2 header: body defaults to the family's address block."""
	body = (addr_block(fam) if body is None else body) + tlv
	n = len(body) if length is None else length
	return SIG + bytes([ver << 4 | cmd, fam << 4 | proto]) + \
	    struct.pack("!H", n) + body


def tlv(typ, value):
	return bytes([typ]) + struct.pack("!H", len(value)) + value


class Mode:
	"""pop3d as root (monitor and pre-login child, PAM) or as a user."""

	def __init__(self, name, env):
		self.name, self.env = name, env
		self.pw = PW if name == "root" else PASSWORD

	def listen(self, *extra, env=None, **kw):
		"""env: pop3d's environment (root mode)."""
		e = self.env
		if self.name == "user":
			return e.inetd(*extra, **kw)
		errf = tempfile.NamedTemporaryFile(prefix="pop3d-err.",
		    dir=e.base)
		d = Inetd(e.argv(*extra, **kw), e.kw(env), errf)
		e.watch(d)
		e.cleanup.append(errf.close)
		return d

	def login(self):
		return ["USER alice", "PASS " + self.pw]

	def rhosts(self):
		"""PAM_RHOST as each PAM call saw it, whole (root mode only)."""
		return sorted({ln.split(" rhost=", 1)[1] for ln in
		    self.env.pamlog.read_text().splitlines()})


@pytest.fixture(params=["root", "user"])
def mode(request, pop3d_bin):
	if request.param == "root":
		m = Mode("root", request.getfixturevalue("root"))
	else:
		m = Mode("user", request.getfixturevalue("pop3"))
		m.env.write_mbox(MSGS)
	return m


@pytest.fixture
def user(pop3):
	pop3.write_mbox(MSGS)
	return Mode("user", pop3)


def exchange(d, data, cmds, timeout=20, delay=None, family=socket.AF_INET,
    host="127.0.0.1"):
	"""Connects, sends data (all of it at once, or its octets one by one
	with delay), half-closes, reads to EOF: (greeting, replies, raw)."""
	with socket.socket(family, socket.SOCK_STREAM) as c:
		c.settimeout(timeout)
		c.connect((host, d.port))
		try:
			if delay is None:
				c.sendall(data)
			else:
				for i in range(len(data)):
					c.sendall(data[i:i + 1])
					time.sleep(delay)
			c.shutdown(socket.SHUT_WR)
		except (ConnectionResetError, BrokenPipeError, OSError):
			pass		# a refusal may close before all is sent
		out = b""
		while True:
			try:
				chunk = c.recv(65536)
			except ConnectionResetError:	# closed, input unread
				break
			if not chunk:
				break
			out += chunk
	g, r, _ = parse_replies(out, cmds)
	return g, r, out


def session(m, d, header, extra_cmds=("STAT", "QUIT")):
	cmds = m.login() + list(extra_cmds)
	data = header + b"".join(c.encode() + b"\r\n" for c in cmds)
	g, r, out = exchange(d, data, cmds)
	return g, r, out, d.wait(20)


def refused(d, data):
	"""The header is refused: nothing at all is said, status 1."""
	_, _, out = exchange(d, data, [])
	assert out == b"", out
	assert d.wait(20) == LIMITS["POP3_EX_CLOSED"], d.stderr()
	assert "PROXY header from 127.0.0.1 refused" in d.stderr(), d.stderr()


def login_lines(log):
	return re.findall(r"login: user alice uid \d+ mech \w+ from (\S+)$", log,
	    re.M)


def assert_client(m, d, client, proxy="127.0.0.1"):
	log = d.stderr()
	assert login_lines(log) == [client], log
	assert ("PROXY header from %s: client %s\n" % (proxy, client)) in log, log
	if m.name == "root":
		assert m.rhosts() == [client], m.env.pam_events()


def assert_no_client(m, d):
	log = d.stderr()
	assert login_lines(log) == ["127.0.0.1"], log
	assert ": client " not in log, log
	if m.name == "root":
		assert m.rhosts() == ["127.0.0.1"], m.env.pam_events()


# ---------------------------------------------------------------- accepted

@pytest.mark.parametrize("header,client", [
	(v1(), CLIENT4),
	(v1("TCP6", CLIENT6, "2001:db8::1"), CLIENT6),
	(v2(fam=1), CLIENT4),
	(v2(fam=2), CLIENT6),
	(v2(fam=1, tlv=tlv(0x04, b"") + tlv(0x05, b"id-1") +
	    tlv(0x20, b"\x01" + b"\0" * 4 + tlv(0x21, b"TLSv1.3"))), CLIENT4),
], ids=["v1-tcp4", "v1-tcp6", "v2-inet", "v2-inet6", "v2-tlvs"])
def test_header_names_the_client(mode, header, client):
	d = mode.listen("--proxy-from=127.0.0.1")
	g, r, out, rc = session(mode, d, header)
	assert g is not None and g.ok, out
	assert [x.ok for x in r] == [True] * 4, r
	assert r[2].text.startswith("+OK %d " % len(MSGS)), r
	assert rc == 0, d.stderr()
	assert_client(mode, d, client)


@pytest.mark.parametrize("header", [
	b"PROXY UNKNOWN\r\n",
	b"PROXY UNKNOWN ffff::1 ffff::2 1 2\r\n",
	v2(cmd=0, fam=0, proto=0),
	v2(cmd=0, fam=1),			# LOCAL: addresses ignored
	v2(fam=0, proto=0),
	v2(fam=3, proto=1),
], ids=["v1-unknown", "v1-unknown-args", "v2-local", "v2-local-inet",
    "v2-unspec", "v2-unix"])
def test_header_without_a_client_keeps_the_peer(mode, header):
	d = mode.listen("--proxy-from=127.0.0.0/8")
	g, r, out, rc = session(mode, d, header)
	assert g is not None and g.ok and [x.ok for x in r] == [True] * 4, out
	assert rc == 0
	assert_no_client(mode, d)


def test_header_in_single_octets(user):
	"""A header that trickles in octet by octet is read the same."""
	d = user.listen("--proxy-from=127.0.0.1")
	cmds = user.login() + ["QUIT"]
	data = v1() + b"".join(c.encode() + b"\r\n" for c in cmds)
	g, r, out = exchange(d, data, cmds, delay=0.002)
	assert g is not None and g.ok and [x.ok for x in r] == [True] * 3, out
	assert d.wait(20) == 0
	assert_client(user, d, CLIENT4)


def test_ipv4_client_of_an_ipv6_socket_is_trusted(user, pop3d_bin):
	"""xinetd listens on IPv6 by default: an IPv4 proxy is then
	::ffff:127.0.0.1, and --proxy-from=127.0.0.1 still names it."""
	e = user.env

	class Inetd6(Inetd):
		def __init__(self, argv, kw, errfile):
			self.argv, self.kw, self.errfile = argv, kw, errfile
			self.sock = socket.socket(socket.AF_INET6)
			self.sock.setsockopt(socket.IPPROTO_IPV6,
			    socket.IPV6_V6ONLY, 0)
			self.sock.bind(("::", 0))
			self.sock.listen(1)
			self.port = self.sock.getsockname()[1]
			self.proc, self.errtext, self.error = None, None, None
			self.started = threading.Event()
			self.thread = threading.Thread(target=self._serve,
			    daemon=True)
			self.thread.start()

	errf = tempfile.NamedTemporaryFile(prefix="pop3d-err.", dir=e.base)
	d = Inetd6(e.argv("--proxy-from=127.0.0.1"), e.popen_kw(), errf)
	e.cleanup += [d.kill, errf.close]
	g, r, out, rc = session(user, d, v1())
	assert g is not None and g.ok and rc == 0, out
	assert_client(user, d, CLIENT4, "::ffff:127.0.0.1")


# ---------------------------------------------------------------- after it

@pytest.mark.parametrize("header", [v1(), v2(fam=1),
    v2(fam=1, tlv=tlv(0x04, b"\xee" * (65535 - 12 - 3)))],
    ids=["v1", "v2", "v2-65535"])
def test_bytes_after_the_header_are_the_clients(mode, header):
	"""Header, login and commands in one write: nothing after the header
	is lost or taken for it; in root mode the commands after PASS reach
	the user's process (the pre-login child hands them on).  The largest
	v2 length, 65535, is read and skipped whole."""
	d = mode.listen("--proxy-from=127.0.0.1")
	cmds = mode.login() + ["STAT", "LIST", "RETR 2", "QUIT"]
	data = header + b"".join(c.encode() + b"\r\n" for c in cmds)
	g, r, out = exchange(d, data, cmds)
	assert g is not None and g.ok, out
	assert [x.ok for x in r] == [True] * 6, r
	sizes = [len(m.replace(b"\n", b"\r\n")) for m in MSGS]
	assert r[2].text == "+OK %d %d" % (len(MSGS), sum(sizes)), r
	assert r[3].lines == ["%d %d" % (i + 1, s) for i, s in
	    enumerate(sizes)], r
	assert r[4].data == MSGS[1].replace(b"\n", b"\r\n"), r
	assert d.wait(20) == 0, d.stderr()
	assert_client(mode, d, CLIENT4)


def test_too_many_bad_commands_names_the_client(mode):
	"""A client behind the proxy that sends only bad commands: the log
	line fail2ban's filter reads ("too many bad commands from ADDRESS")
	names the header's client, not the proxy, in both modes (as root the
	pre-login child writes it; it once named the proxy there, and a ban
	would have cut off every client behind it)."""
	d = mode.listen("--proxy-from=127.0.0.1")
	cmds = ["XYZZY"] * LIMITS["POP3_BAD_MAX"]
	data = v1() + b"".join(c.encode() + b"\r\n" for c in cmds)
	g, r, out = exchange(d, data, cmds)
	assert g is not None and g.ok, out
	assert all(not x.ok for x in r), r
	d.wait(20)
	got = re.findall(r"too many bad commands from (\S+)", d.stderr())
	assert got == [CLIENT4], d.stderr()


# ---------------------------------------------------------------- limits

def test_v1_line_of_107_octets_is_accepted(user):
	h = b"PROXY UNKNOWN " + b"x" * (V1_MAX - 16) + b"\r\n"
	assert len(h) == V1_MAX == 107
	d = user.listen("--proxy-from=127.0.0.1")
	g, r, out, rc = session(user, d, h)
	assert g is not None and g.ok and rc == 0, out


def test_v1_line_of_108_octets_is_refused(user):
	h = b"PROXY UNKNOWN " + b"x" * (V1_MAX - 15) + b"\r\n"
	assert len(h) == 108
	refused(user.listen("--proxy-from=127.0.0.1"), h + b"USER alice\r\n")


def test_longest_real_v1_line_is_accepted(user):
	h = v1("TCP6", "ffff:" * 7 + "ffff", "ffff:" * 7 + "fffe", 65535,
	    65535)
	d = user.listen("--proxy-from=127.0.0.1")
	g, r, out, rc = session(user, d, h)
	assert g is not None and g.ok and rc == 0, out
	assert_client(user, d, "ffff:" * 7 + "ffff")


@pytest.mark.parametrize("fam,short", [(1, 11), (2, 35), (3, 215)])
def test_v2_address_block_shorter_than_its_family_is_refused(user, fam,
    short):
	body = addr_block(fam)[:short]
	refused(user.listen("--proxy-from=127.0.0.1"), v2(fam=fam, body=body))


def test_v2_port_65535_and_v1_port_65535_accepted_65536_refused(user):
	d = user.listen("--proxy-from=127.0.0.1")
	g, r, out, rc = session(user, d, v1(sport=65535, dport=0))
	assert g is not None and g.ok and rc == 0, out
	refused(user.listen("--proxy-from=127.0.0.1"), v1(sport=65536))


@pytest.mark.parametrize("data,why", [
	(b"USER alice\r\n", "not a PROXY header"),
	(b"PROXY TCP4 192.0.2.10 192.0.2.1 1 2\n", "CRLF"),
	(b"PROXY TCP4 192.0.2.10  192.0.2.1 1 2\r\n", "fields"),
	(b"PROXY TCP4 192.0.2.10 192.0.2.1 1 2 3\r\n", "fields"),
	(b"PROXY TCP5 192.0.2.10 192.0.2.1 1 2\r\n", "protocol"),
	(b"PROXY TCP4 2001:db8::1 192.0.2.1 1 2\r\n", "address"),
	(b"PROXY TCP6 192.0.2.10 2001:db8::1 1 2\r\n", "address"),
	(b"PROXY TCP4 192.0.2.256 192.0.2.1 1 2\r\n", "address"),
	(b"PROXY TCP4 192.0.2.10 192.0.2.1 -1 2\r\n", "port"),
	(b"PROXY TCP4 192.0.2.10 192.0.2.1 1 123456\r\n", "port"),
	(b"PROXY TCP4 192.0.\x002.10 192.0.2.1 1 2\r\n", "NUL"),
	(b"proxy TCP4 192.0.2.10 192.0.2.1 1 2\r\n", "not a PROXY header"),
	(SIG[:11] + b"X" + bytes(4), "not a PROXY header"),
	(v2(ver=1), "version"),
	(v2(ver=3), "version"),
	(v2(cmd=2), "command"),
	(v2(fam=4), "family"),
	(v2(proto=3), "family"),
], ids=["no-header", "lf", "two-spaces", "seven-fields", "tcp5",
    "v6-in-tcp4", "v4-in-tcp6", "octet-256", "negative-port", "long-port",
    "nul", "lowercase", "bad-sig", "v2-version-1", "v2-version-3",
    "v2-command-2", "v2-family-4", "v2-protocol-3"])
def test_malformed_header_is_refused_before_the_greeting(user, data, why):
	d = user.listen("--proxy-from=127.0.0.1")
	refused(d, data + b"USER alice\r\n")
	assert why in d.stderr(), d.stderr()


@pytest.mark.parametrize("data", [v1()[:-1], v1()[:20], b"PRO", SIG[:7],
    v2()[:V2_HDR - 1], v2()[:V2_HDR], v2()[:V2_HDR + 11],
    v2(tlv=tlv(4, b"x" * 500))[:-1]],
    ids=["v1-no-lf", "v1-half", "v1-3", "v2-sig", "v2-15", "v2-16",
    "v2-27", "v2-tlv-short"])
def test_truncated_header_is_refused(mode, data):
	d = mode.listen("--proxy-from=127.0.0.1")
	refused(d, data)
	assert "end of file" in d.stderr(), d.stderr()
	if mode.name == "root":
		assert not mode.env.pamlog.exists() or \
		    mode.env.pam_events() == []


def test_silent_proxy_is_closed_at_the_deadline(user):
	d = user.listen("--proxy-from=127.0.0.1", "--timeout=3")
	t0 = time.monotonic()
	with socket.create_connection(("127.0.0.1", d.port), timeout=20) as c:
		out = c.recv(100)
	took = time.monotonic() - t0
	assert out == b"" and 2.9 <= took < 5.5, (out, took)
	assert d.wait(20) == LIMITS["POP3_EX_CLOSED"]
	assert "refused" in d.stderr() and "timed out" in d.stderr()


def test_header_just_inside_the_deadline_is_accepted(user):
	d = user.listen("--proxy-from=127.0.0.1", "--timeout=2")
	with socket.create_connection(("127.0.0.1", d.port), timeout=20) as c:
		time.sleep(1.0)
		c.sendall(v1() + b"QUIT\r\n")
		out = c.recv(100)
	assert out.startswith(b"+OK"), out
	assert d.wait(20) == 0


# ---------------------------------------------------------------- trust

@pytest.mark.parametrize("opt", [None, "--proxy-from=192.0.2.0/24",
    "--proxy-from=127.0.0.2", "--proxy-from=::1,128.0.0.0/1"])
def test_proxy_line_from_an_untrusted_peer_is_a_bad_command(mode, opt):
	d = mode.listen(*([opt] if opt else []))
	cmds = [NOPROXY] + mode.login() + ["QUIT"]
	g, r, out = exchange(d, b"".join(c.encode() + b"\r\n" for c in cmds),
	    cmds)
	assert g is not None and g.ok, out
	assert r[0].err and [x.ok for x in r[1:]] == [True] * 3, r
	assert d.wait(20) == 0
	assert_no_client(mode, d)


@pytest.mark.parametrize("opt", ["127.0.0.1", "127.0.0.0/8", "0.0.0.0/0",
    "192.0.2.1,127.0.0.1", "127.0.0.1/32", "::/0,127.0.0.0/31"])
def test_listed_peer_must_send_a_header(user, opt):
	"""Each form that names 127.0.0.1: a header is then read (and its
	absence refused)."""
	d = user.listen("--proxy-from=" + opt)
	refused(d, b"USER alice\r\n")


@pytest.mark.parametrize("arg,ok", [
	("192.0.2.1", True), ("192.0.2.0/24", True), ("2001:db8::/32", True),
	("0.0.0.0/0", True), ("::/0", True), ("192.0.2.1/32", True),
	("2001:db8::1/128", True), (",".join(["192.0.2.1"] * 32), True),
	("", False), ("192.0.2.1/33", False), ("2001:db8::/129", False),
	("192.0.2.1/24", False), ("192.0.2.0/", False), ("192.0.2.0/x", False),
	("192.0.2.1,", False), (",192.0.2.1", False), ("host.example", False),
	("192.0.2.0/0024", False), (",".join(["192.0.2.1"] * 33), False),
])
def test_proxy_from_option(pop3d_bin, arg, ok):
	p = subprocess.run([pop3d_bin, "--proxy-from=" + arg, "-V"],
	    capture_output=True, timeout=10)
	assert p.returncode == (0 if ok else LIMITS["POP3_EX_USAGE"]), p
	if not ok:
		assert b"invalid proxy address list" in p.stderr, p.stderr


def test_help_names_the_option(pop3d_bin):
	p = subprocess.run([pop3d_bin, "--help"], capture_output=True,
	    timeout=10)
	assert b"--proxy-from=LIST" in p.stdout, p.stdout


def test_limits_are_the_specs():
	assert (V1_MAX, V2_HDR) == (107, 16)
	assert (LIMITS["PROXY_V2_INET"], LIMITS["PROXY_V2_INET6"],
	    LIMITS["PROXY_V2_UNIX"]) == (12, 36, 216)
	assert len(b"PROXY UNKNOWN\r\n") == LIMITS["PROXY_V1_MIN"]


# ------------------------------------------------- a hostile pre-login child

# The pre-login child sends the monitor the client's address as a struct
# proxy_addr (pop3d.h).  This shim rewrites that record as a hijacked
# child could (send(2) of exactly a record's size, by a non-root process):
# POP3D_TEST_PROXY names how; "none" sends it as it is.
FORGE = r"""
#define _GNU_SOURCE
#include <sys/socket.h>
#include <dlfcn.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "pop3d.h"

ssize_t
send(int fd, const void *buf, size_t len, int flags)
{
	static ssize_t (*real)(int, const void *, size_t, int);
	static char big[sizeof(struct proxy_addr) + 64];
	struct proxy_addr *pa = (struct proxy_addr *)big;
	const char *m = getenv("POP3D_TEST_PROXY");

	if (real == NULL)
		real = (ssize_t (*)(int, const void *, size_t, int))
		    dlsym(RTLD_NEXT, "send");
	if (m == NULL || len != sizeof(*pa) || getuid() == 0)
		return real(fd, buf, len, flags);
	memcpy(big, buf, len);
	if (strcmp(m, "short") == 0)
		len--;
	else if (strcmp(m, "long") == 0)
		len += 64;
	else if (strcmp(m, "family") == 0)
		pa->family = 5;
	else if (strcmp(m, "v4-tail") == 0)
		pa->addr[15] = 1;
	else if (strcmp(m, "v0-addr") == 0) {
		pa->family = 0;
		pa->addr[0] = 192;
	}
	return real(fd, big, len, flags) == -1 ? -1 : (ssize_t)sizeof(*pa);
}
"""


@pytest.fixture(scope="module")
def forge(tools):	# noqa: F811
	src = tools / "proxy_forge.c"
	src.write_text(FORGE)
	cc(src, tools / "proxy_forge.so", "-I", str(REPO), "-ldl")
	return tools / "proxy_forge.so"


def forged_session(root, forge, how):	# noqa: F811
	m = Mode("root", root)
	env = root.env(LD_PRELOAD="%s %s %s" % (forge, PAM_WRAPPER,
	    NSS_WRAPPER), POP3D_TEST_PROXY=how)
	d = m.listen("--proxy-from=127.0.0.1", env=env)
	return m, d, session(m, d, v1())


def test_unforged_record_through_the_shim_names_the_client(root, forge):	# noqa: F811
	"""The control: the shim loaded, the record sent as made."""
	m, d, (g, r, out, rc) = forged_session(root, forge, "none")
	assert g is not None and g.ok and [x.ok for x in r] == [True] * 4, out
	assert rc == 0, d.stderr()
	assert_client(m, d, CLIENT4)


@pytest.mark.parametrize("how", ["short", "long", "family", "v4-tail",
    "v0-addr"])
def test_forged_record_is_refused_by_the_monitor(root, forge, how):	# noqa: F811
	"""A record the pre-login child could not have made from a header
	(wrong size, an unknown family, octets after an IPv4 address, an
	address with family 0): the root monitor ends the session with status
	EX_SOFTWARE before any login; PAM never starts, so no forged
	PAM_RHOST reaches it, and no login is logged."""
	m, d, (g, r, out, rc) = forged_session(root, forge, how)
	assert rc == LIMITS["POP3_EX_SOFTWARE"], (rc, d.stderr())
	assert not any(x is not None and x.ok for x in r[1:]), out
	assert root.pam_events() == []
	assert login_lines(d.stderr()) == [], d.stderr()
