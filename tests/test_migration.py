"""Moving from popa3d (issue 15): what a client that leaves mail on the
server sees when the server changes, measured with Debian's real popa3d.

popa3d's binary comes from `apt-get download popa3d`, unpacked under
build/popa3d (as test_deploy.py does with openbsd-inetd: it is never
installed).  It runs as root in a private mount namespace where the
test's spool is its compiled-in /var/mail and an empty directory its
chroot, with nss_wrapper and pam_wrapper (pam_matrix) for its user and
PAM service, as bench/bench.py runs it.  pop3d reads the same mailbox.

The mailbox is the test's own: N distinct messages, T of them delivered
twice (byte-identical twins, as a retried delivery leaves them).  The
expected numbers come from that construction, not from either server.
The README's "Moving from popa3d" section quotes them.
"""

import fcntl
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from conftest import make_hash, mbox, need, sanitizer_check

ROOT = Path(__file__).resolve().parent.parent
WRAPLIB = "/usr/lib/x86_64-linux-gnu"
PAM_MATRIX = WRAPLIB + "/pam_wrapper/pam_matrix.so"
PAM_PERMIT = WRAPLIB + "/security/pam_permit.so"
MAIL_UID = 2001
USER = "mig"
PW = "migration pw"
N = 495				# distinct messages
TWINS = 5			# of them delivered twice: N + TWINS in the mailbox

pytestmark = pytest.mark.skipif(os.geteuid() != 0,
    reason="popa3d and pop3d's root mode need root")


def popa3d_binary():
	"""popa3d's binary, unpacked under build/popa3d (under a lock: make
	check's two passes run at the same time)."""
	dest = ROOT / "build" / "popa3d"
	dest.mkdir(parents=True, exist_ok=True)
	with open(dest / ".lock", "w") as lock:
		fcntl.flock(lock, fcntl.LOCK_EX)
		return _popa3d_unpacked(dest)


def _popa3d_unpacked(dest):
	binary = dest / "root" / "usr" / "sbin" / "popa3d"
	if binary.exists():
		return binary
	debs, r = [], None
	for attempt in ("download", "update", "download"):
		debs = list(dest.glob("popa3d_*.deb"))
		if debs:
			break
		r = subprocess.run(["apt-get", "-qq", attempt] + (["popa3d"]
		    if attempt == "download" else []), cwd=dest,
		    capture_output=True, text=True, timeout=300)
	need(debs, "apt-get download popa3d failed: " +
	    (r.stderr.strip()[-300:] if r else ""))
	subprocess.run(["dpkg-deb", "-x", str(debs[0]), str(dest / "root")],
	    check=True)
	return binary


def message(i):
	return (b"Received: from mx.example.net by mail.example.org; "
	    b"Thu, 26 Nov 2026 %02d:%02d:00 +0000\n"
	    b"From: Sender %d <s%d@example.net>\nTo: mig@example.org\n"
	    b"Subject: report %d\nDate: Thu, 26 Nov 2026 %02d:%02d:00 +0000\n"
	    b"Message-ID: <%d.mig@example.net>\n\nBody of message %d.\n" % (
		i // 60 % 24, i % 60, i, i, i, i // 60 % 24, i % 60, i, i))


def from_line(i):
	return b"From s%d@example.net Thu Nov 26 %02d:%02d:%02d 2026" % (
	    i, i // 60 % 24, i % 60, i % 60)


def migration_mbox():
	"""N messages; every 99th is followed by its byte-identical twin."""
	msgs = []
	for i in range(N):
		msgs.append((from_line(i), message(i)))
		if i % 99 == 0:
			msgs.append((from_line(i), message(i)))
	assert len(msgs) == N + TWINS
	return mbox(msgs)


def uidl_list(out):
	"""The UIDL listing of a transcript: [(number, uid), ...]."""
	m = re.search(rb"\r\n\+OK[^\r]*\r\n((?:\d+ \S+\r\n)*)\.\r\n", out)
	assert m, out[-500:]
	return [tuple(l.split(b" ")) for l in m.group(1).splitlines()]


@pytest.fixture
def site(pop3d_bin):
	need(os.path.exists(PAM_MATRIX) and shutil.which("unshare"),
	    "pam_wrapper, unshare")
	popa3d = popa3d_binary()
	base = Path(tempfile.mkdtemp(prefix="pop3d-mig.", dir="/tmp"))
	os.chmod(base, 0o755)
	spool = base / "spool"
	spool.mkdir()
	os.chown(spool, 0, 8)
	os.chmod(spool, 0o2775)
	box = spool / USER
	box.write_bytes(migration_mbox())
	os.chown(box, MAIL_UID, MAIL_UID)
	os.chmod(box, 0o600)
	# popa3d waits for a mailbox written in the last second to settle.
	os.utime(box, (1_700_000_000, 1_700_000_000))
	try:
		yield base, spool, popa3d, pop3d_bin
	finally:
		shutil.rmtree(base, ignore_errors=True)


def run_popa3d(base, spool, popa3d, cmds):
	w = base / "wrap"
	(w / "pam.d").mkdir(parents=True)
	(w / "passwd").write_text("root:x:0:0::/root:/bin/sh\n"
	    "popa3d:x:60001:60001::/var/lib/popa3d:/usr/sbin/nologin\n"
	    "%s:x:%d:%d::/nonexistent:/bin/sh\n" % (USER, MAIL_UID, MAIL_UID))
	(w / "group").write_text("root:x:0:\nmail:x:8:\npopa3d:x:60001:\n"
	    "%s:x:%d:\n" % (USER, MAIL_UID))
	(w / "passdb").write_text("%s:%s:popa3d\n" % (USER, PW))
	os.chmod(w / "passdb", 0o600)
	(w / "pam.d/popa3d").write_text(
	    "auth required %s passdb=%s\naccount required %s passdb=%s\n"
	    "session required %s\n" % (PAM_MATRIX, w / "passdb", PAM_MATRIX,
	    w / "passdb", PAM_PERMIT))
	env = dict(os.environ, LD_PRELOAD="%s/libpam_wrapper.so "
	    "%s/libnss_wrapper.so" % (WRAPLIB, WRAPLIB), PAM_WRAPPER="1",
	    PAM_WRAPPER_SERVICE_DIR=str(w / "pam.d"),
	    NSS_WRAPPER_PASSWD=str(w / "passwd"),
	    NSS_WRAPPER_GROUP=str(w / "group"))
	env.pop("POP3D_BIN", None)
	# Its compiled-in chroot (/var/lib/popa3d) and spool (/var/mail),
	# both ours inside the namespace only.
	script = ("mount -t tmpfs none /var/lib && mkdir -m 755 "
	    "/var/lib/popa3d && mount --bind %s /var/mail && exec %s" % (
		spool, popa3d))
	p = subprocess.run(["unshare", "-m", "--propagation", "private", "sh",
	    "-c", script], input=b"".join(c.encode() + b"\r\n" for c in cmds),
	    capture_output=True, env=env, timeout=60)
	assert p.returncode == 0, p
	return p.stdout


def run_pop3d(base, spool, binary, cmds):
	pw = base / "pop3d.passwd"
	pw.write_text("%s:%s:%d:%d\n" % (USER, make_hash(PW), MAIL_UID,
	    MAIL_UID))
	os.chmod(pw, 0o600)
	p = subprocess.run([binary, "-d", "-s", str(spool), "-a",
	    "passwd:%s" % pw, "-u", "nobody"], input=b"".join(
	    c.encode() + b"\r\n" for c in cmds), capture_output=True,
	    timeout=60)
	sanitizer_check(p.stderr.decode("utf-8", "replace"))
	assert p.returncode == 0, p
	return p.stdout


def test_popa3d_migration_uidls(site):
	"""The same mailbox through popa3d, then pop3d: popa3d gives each
	twin pair one UIDL (N distinct for N + TWINS messages, against RFC
	1939's unique-id), pop3d N + TWINS distinct; none of pop3d's is one
	of popa3d's, so a client that leaves mail on the server and
	remembers popa3d's UIDLs downloads every message once more."""
	base, spool, popa3d, binary = site
	before = (spool / USER).read_bytes()
	cmds = ["USER " + USER, "PASS " + PW, "UIDL", "QUIT"]
	old = uidl_list(run_popa3d(base, spool, popa3d, cmds))
	new = uidl_list(run_pop3d(base, spool, binary, cmds))
	assert (spool / USER).read_bytes() == before	# neither wrote
	total = N + TWINS
	assert [int(n) for n, _ in old] == list(range(1, total + 1))
	assert [int(n) for n, _ in new] == list(range(1, total + 1))
	old_ids = [u for _, u in old]
	new_ids = [u for _, u in new]
	assert len(set(old_ids)) == N, len(set(old_ids))
	assert len(set(new_ids)) == total
	redownloaded = [u for u in new_ids if u not in set(old_ids)]
	assert len(redownloaded) == total
	# Which ones popa3d merged: exactly each twin with its original.
	twins = [i for i in range(1, total) if old_ids[i] == old_ids[i - 1]]
	assert len(twins) == TWINS and all(new_ids[i] != new_ids[i - 1]
	    for i in twins)


def test_popa3d_uidl_is_the_headers_only(site):
	"""Why pop3d offers no popa3d UIDL mode: popa3d gives one UIDL to a
	message, the same headers with another body, the same with a Status
	field a mail reader added, and the same after another From_ line;
	RFC 1939 wants a unique-id unique in the maildrop, and pop3d's four
	are distinct."""
	base, spool, popa3d, binary = site
	m = message(7)
	other = (b"From s7@example.net Fri Nov 27 09:00:00 2026", m)
	box = spool / USER
	box.write_bytes(mbox([(from_line(7), m),
	    (from_line(7), m.replace(b"Body of message 7.", b"Other text.")),
	    (from_line(7), m.replace(b"\n\n", b"\nStatus: RO\n\n", 1)),
	    other]))
	os.utime(box, (1_700_000_000, 1_700_000_000))
	cmds = ["USER " + USER, "PASS " + PW, "UIDL", "QUIT"]
	old = [u for _, u in uidl_list(run_popa3d(base, spool, popa3d, cmds))]
	new = [u for _, u in uidl_list(run_pop3d(base, spool, binary, cmds))]
	assert len(old) == len(new) == 4
	assert len(set(old)) == 1, old
	assert len(set(new)) == 4, new
