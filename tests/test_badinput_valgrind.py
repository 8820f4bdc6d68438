"""valgrind memcheck of whole sessions (issue 7): no invalid read or
write, no use of uninitialised memory, no leak, over every command of a
session with an update, and over a failed login, SASL PLAIN and the
protocol's error paths.  pop3d runs in its non-root mode (the conftest
fixtures), without its sandboxes (-S: valgrind cannot run them).  Only in the pass against ./pop3d (plain_pass): valgrind and
the ASan build of the other pass do not mix."""

import os
import re
import shutil
import subprocess

import pytest

from conftest import (LIMITS, NOBODY, PASSWORD, ROOT, USER, login, mbox,
    need)
from messages import M1

pytestmark = pytest.mark.plain_pass

M2 = b"Subject: two\n\nline 1\nline 2\n.dot\n"
M3 = b"Subject: three\n\n" + b"x" * 200000 + b"\nno final newline"


def _asan(path):
	with open(path, "rb") as f:
		return b"__asan_init" in f.read()


def valgrind(pop3, cmds, **kw):
	need(shutil.which("valgrind"), "valgrind (package valgrind)")
	need(not _asan(pop3.bin), "a build without ASan (valgrind)")
	d = pop3.base / "vg"
	d.mkdir(exist_ok=True)
	if ROOT:
		os.chown(d, NOBODY, NOBODY)
	log = d / "memcheck.log"
	vg = [shutil.which("valgrind"), "--tool=memcheck", "--error-exitcode=99",
	    "--leak-check=full", "--show-leak-kinds=all",
	    "--errors-for-leak-kinds=definite,indirect,possible",
	    "--track-origins=yes", "--log-file=%s" % log]
	# -S (--no-sandbox): valgrind emulates neither seccomp nor Landlock
	# (seccomp_init fails under it), and a filter would bind valgrind's
	# own system calls too.
	p = subprocess.run(vg + pop3.argv(**kw) + ["-S"], input=b"".join(c.encode() + b"\r\n"
	    for c in cmds), capture_output=True, timeout=240,
	    **pop3.popen_kw())
	text = log.read_text()
	return p, text


def clean(p, text, rc):
	"""valgrind's verdict: exit status rc (not 99), no error, no leak."""
	assert p.returncode == rc, (p.returncode, text[-4000:],
	    p.stderr.decode()[-2000:])
	m = re.search(r"ERROR SUMMARY: (\d+) errors", text)
	assert m and m.group(1) == "0", text[-4000:]
	for kind in ("definitely lost", "indirectly lost", "possibly lost"):
		m = re.search(kind + r": ([\d,]+) bytes", text)
		assert m is None or m.group(1) == "0", text[-4000:]


def test_full_session_under_valgrind(pop3):
	data = pop3.write_mbox([M1, M2, M3])
	cmds = ["CAPA", *login(), "STAT", "LIST",
	    "LIST 2", "UIDL", "UIDL 3", "RETR 1", "RETR 3", "TOP 2 1", "TOP 3 0",
	    "DELE 1", "RSET", "DELE 2", "NOOP", "CAPA", "QUIT"]
	p, text = valgrind(pop3, cmds)
	clean(p, text, LIMITS["POP3_EX_OK"])
	out = p.stdout
	assert out.count(b"\r\n+OK") == len(cmds), out[-500:]
	assert pop3.read_mbox() == mbox([M1, M3]), "update not done"
	assert len(data) > len(pop3.read_mbox())


def test_error_paths_under_valgrind(pop3):
	"""A failed login, SASL PLAIN, bad commands, a long line, a NUL, and
	an end without QUIT."""
	import base64
	data = pop3.write_mbox([M1, M2])
	plain = base64.b64encode(b"\0" + USER.encode() + b"\0" +
	    PASSWORD.encode()).decode()
	cmds = ["USER " + USER, "PASS wrong", "AUTH", "AUTH PLAIN", "*",
	    "AUTH PLAIN " + plain, "BOGUS", "LIST 0", "LIST 99999999999999999999",
	    "RETR 1x", "TOP 1", "X" * 1000, "NO\0OP", "DELE 1", "STAT"]
	p, text = valgrind(pop3, cmds)
	clean(p, text, LIMITS["POP3_EX_CLOSED"])
	assert b"-ERR [AUTH]" in p.stdout
	assert pop3.read_mbox() == data
