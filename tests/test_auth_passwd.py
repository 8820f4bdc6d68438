"""The passwd:FILE backend (issue 2, auth.c) in the one-process mode that
pop3d uses when it is not root: hashes, the file's syntax, malformed and
hostile lines, the uid and mailbox fields, timing, and what is logged.
Root-mode checks of the file (owner, mode) are in test_auth_root.py."""

import base64
import os
import time

import pytest

from conftest import (LIMITS, NOBODY, PASSWORD, ROOT, USER, login,
    make_hash, mbox)

FAIL = "-ERR [AUTH] authentication failed"


def unchecked(t):
	"""A login the password file could not check: -ERR [SYS/TEMP], not
	[AUTH] (the password may be right), the session over (nothing
	answers the commands after it), exit status 78 (pop3d.8), and a
	"login error" line, which fail2ban's filter does not count."""
	assert t.replies[1].text.startswith("-ERR [SYS/TEMP] "), t
	assert len(t.replies) == 2, t
	assert t.rc == LIMITS["POP3_EX_CONFIG"], t
	# No name: none was found to be a user (it may be a password).
	assert "login error: UNKNOWN USER from " in t.stderr, t.stderr
	assert not [ln for ln in t.stderr.splitlines()
	    if "login error:" in ln and USER in ln], t.stderr
	assert "login failed" not in t.stderr, t.stderr
MSG = b"Subject: hi\n\nhello\n"


def uid():
	return NOBODY if ROOT else os.getuid()


def try_login(pop3, user=USER, password=PASSWORD, extra=()):
	return pop3.run(login(user, password) + ["STAT", "QUIT"], *extra)


@pytest.mark.parametrize("scheme", ["sha512", "yescrypt", "bcrypt"])
def test_hash_schemes(pop3, scheme):
	pop3.write_passwd(["%s:%s" % (USER, make_hash(PASSWORD, scheme))])
	pop3.write_mbox([MSG])
	t = try_login(pop3)
	assert t.replies[1].ok and t.replies[2].text.startswith("+OK 1 "), t
	t = try_login(pop3, password=PASSWORD + "x")
	assert t.replies[1].text == FAIL, t


def test_comments_blank_and_malformed_lines_are_skipped(pop3):
	h = make_hash(PASSWORD)
	lines = [
	    "# a comment",				# 1
	    "",						# 2
	    "   ",					# 3
	    "justaname",				# 4: one field
	    "bob:%s:1" % h,				# 5: three fields
	    "bob:%s:x:1" % h,				# 6: uid not a number
	    "bob:%s:1:-2" % h,				# 7: gid not a number
	    "../x:%s" % h,				# 8: a path as a name
	    ".hidden:%s" % h,				# 9: a dot file name
	    "bob:",					# 10: no hash
	    "bob:%s:1:2:relative/box" % h,		# 11: relative mailbox
	    "bob:%s:99999999999:2" % h,			# 12: uid too large
	    "bo b:%s" % h,				# 13: space in the name
	    "%s:%s" % (USER, h),			# 14: good
	]
	pop3.write_passwd(lines)
	t = try_login(pop3)
	assert t.replies[1].ok, t
	for n in range(4, 14):
		assert "line %d: malformed" % n in t.stderr, (n, t.stderr)
	for n in (1, 2, 3, 14):
		assert "line %d:" % n not in t.stderr, (n, t.stderr)
	assert h not in t.stderr		# no line content in the log


# Malformed lines that would let bob in with "bob pw" if they were used:
# each holds bob's hash and ids that are the invoking user's, but for
# the fault.
MALFORMED = {
	"three fields": "bob:{h}:{u}",
	"uid not a number": "bob:{h}:x{u}:{u}",
	"gid not a number": "bob:{h}:{u}:-{u}",
	"uid with a space": "bob:{h}: {u}:{u}",
	"uid with a sign": "bob:{h}:+{u}:{u}",
	"uid past 32 bits": "bob:{h}:{big}:{u}",	# {u} if truncated
	"relative mailbox": "bob:{h}:{u}:{u}:spool/bob",	# from the cwd
	"NUL": "bob:{h}\0",				# "bob:{h}" without it
}


@pytest.mark.parametrize("kind", sorted(MALFORMED))
def test_malformed_line_is_not_used_for_login(pop3, kind):
	"""The user of a malformed line cannot log in with the password that
	line holds; a well-formed line next to it (before and after) works."""
	h = make_hash("bob pw")
	bad = MALFORMED[kind].format(h=h, u=uid(), big=uid() + (1 << 32))
	good = make_hash(PASSWORD)
	pop3.write_passwd(["carol:%s" % good, bad, "%s:%s" % (USER, good)])
	pop3.write_mbox([MSG])
	pop3.write_mbox([MSG, MSG], user="bob")
	pop3.write_mbox([MSG, MSG, MSG], user="carol")
	t = try_login(pop3, "bob", "bob pw")
	assert t.replies[1].text == FAIL and t.replies[2].err, t
	assert "login: user" not in t.stderr, t
	for user, n in ((USER, 1), ("carol", 3)):
		t = try_login(pop3, user)
		assert t.replies[1].ok, t
		assert t.replies[2].text.startswith("+OK %d " % n), t


def test_too_long_line_and_nul_are_malformed_and_bounded(pop3):
	h = make_hash(PASSWORD)
	huge = "bob:" + "x" * (8 << 20)		# 8 MB in one line
	nul = "carol\0:%s" % h
	limit = "d:" + "y" * (LIMITS["AUTH_LINE_MAX"] - 1)	# one too long
	pop3.write_passwd([huge, nul, limit, "%s:%s" % (USER, h)])
	t = try_login(pop3)
	assert t.replies[1].ok, t
	for n in (1, 2, 3):
		assert "line %d: too long or contains NUL" % n in t.stderr, t


def test_line_length_limit_is_exact(pop3):
	n = LIMITS["AUTH_LINE_MAX"]
	pop3.write_passwd(["#" + "x" * (n - 1), "#" + "x" * n,
	    "%s:%s" % (USER, make_hash(PASSWORD))])
	t = try_login(pop3)
	assert t.replies[1].ok, t
	assert "line 1:" not in t.stderr, t.stderr
	assert "line 2: too long" in t.stderr, t.stderr


def test_first_entry_of_a_user_wins(pop3):
	pop3.write_passwd(["%s:%s" % (USER, make_hash("first")),
	    "%s:%s" % (USER, make_hash("second"))])
	assert try_login(pop3, password="first").replies[1].ok
	assert try_login(pop3, password="second").replies[1].text == FAIL


def test_mailbox_field(pop3):
	d = pop3.base / "elsewhere"		# a dotlock can be made there
	d.mkdir(mode=0o755)
	pop3._own(d)
	other = d / "box"
	other.write_bytes(mbox([MSG, MSG, MSG]))
	pop3._own(other)
	os.chmod(other, 0o600)
	pop3.write_mbox([MSG])
	pop3.write_passwd(["%s:%s:%d:%d:%s" % (USER, make_hash(PASSWORD), uid(),
	    uid(), other)])
	t = try_login(pop3)
	assert t.replies[2].text.startswith("+OK 3 "), t


def test_uid_field_must_be_the_invoking_user(pop3):
	pop3.write_mbox([MSG])
	pop3.write_passwd(["%s:%s:%d:%d" % (USER, make_hash(PASSWORD),
	    uid() - 1, uid())])
	t = try_login(pop3)
	assert t.replies[1].text == FAIL, t
	assert "gives another uid" in t.stderr, t.stderr
	assert "login: user" not in t.stderr


def test_missing_password_file(pop3):
	t = pop3.run(login() + ["QUIT"],
	    auth="passwd:%s" % (pop3.base / "nonexistent"))
	unchecked(t)
	assert "password file unusable" in t.stderr, t.stderr


def test_password_file_that_is_a_directory(pop3):
	t = pop3.run(login() + ["QUIT"],
	    auth="passwd:%s" % pop3.base)
	unchecked(t)
	assert "not a regular file" in t.stderr, t.stderr


def test_unknown_user_costs_a_hash_too(pop3):
	"""With no fixed delay, an unknown user still costs a hash of the
	kind the file uses (yescrypt here), so time does not tell."""
	pop3.write_passwd(["%s:%s" % (USER, make_hash(PASSWORD, "yescrypt")),
	    "bob:%s" % make_hash("bob pw", "yescrypt")])

	def fastest(user):
		best = None
		for _ in range(5):
			s = pop3.session(fail_delay=0)
			assert s.greeting().ok
			assert s.cmd("USER " + user).ok
			t0 = time.monotonic()
			r = s.cmd("PASS wrong password")
			el = time.monotonic() - t0
			assert r.text == FAIL
			s.send("QUIT\r\n")
			s.wait()
			best = el if best is None else min(best, el)
		return best
	known, unknown = fastest(USER), fastest("nosuchuser")
	assert unknown > 0.5 * known and known > 0.5 * unknown, (known, unknown)


def test_fixed_deadline(pop3):
	for user in (USER, "nosuchuser"):
		s = pop3.session(fail_delay=600)
		assert s.greeting().ok
		assert s.cmd("USER " + user).ok
		t0 = time.monotonic()
		assert s.cmd("PASS wrong").text == FAIL
		el = time.monotonic() - t0
		assert 0.59 <= el < 1.1, (user, el)
		s.send("QUIT\r\n")
		s.wait()


def test_names_that_are_paths_never_reach_the_spool(pop3):
	"""A hidden or option-like name never names a mailbox, even if the
	spool has such a file."""
	for name in (".alice", "-alice"):
		p = pop3.spool / name
		p.write_bytes(mbox([MSG]))
		pop3._own(p)
		os.chmod(p, 0o600)
	pop3.write_passwd(["%s:%s" % (USER, make_hash(PASSWORD))])
	for name in (".alice", "-alice"):
		t = pop3.run(["USER " + name, "PASS " + PASSWORD, "QUIT"])
		assert t.replies[1].text == FAIL or t.replies[0].err, t
		assert "login: user" not in t.stderr
	plain = base64.b64encode(b"\0../spool/alice\0" + PASSWORD.encode())
	t = pop3.run(["AUTH PLAIN " + plain.decode(), "QUIT"])
	assert t.replies[0].err, t


def sasl_plain(zid, cid, pw):
	return base64.b64encode(b"\0".join([zid, cid, pw])).decode()


def continued(pop3, resp, after=("STAT", "QUIT")):
	"""AUTH PLAIN, then resp after the "+ " challenge, then after: the
	reply lines after the greeting (the parser of conftest takes no "+ "
	line) and the -d log."""
	o = pop3.run(["AUTH PLAIN", resp, *after], parse=False)
	lines = o.out.split(b"\r\n")
	assert lines[0].startswith(b"+OK ") and lines[-1] == b"", lines
	return lines[1:-1], o.err.decode()


def test_sasl_response_after_the_challenge_may_pass_255_octets(pop3):
	"""RFC 5034 section 4: a client must not send an initial response
	that would make AUTH longer than 255 octets; it waits for "+ " and
	sends it there, where it is not a command line.  The longest PLAIN
	response pop3d can take (an authzid and authcid of 64 octets, a
	password of 255: 516 octets of base64) logs in; one base64 group
	more is a line too long, and no login."""
	name = "u" * LIMITS["POP3_USER_MAX"]
	pw = ("p%d" % 7) * 200
	pw = pw[:LIMITS["POP3_PASS_MAX"]]
	pop3.write_passwd(["%s:%s" % (name, make_hash(pw))])
	pop3.write_mbox([MSG], user=name)
	resp = sasl_plain(name.encode(), name.encode(), pw.encode())
	assert len(resp) + 2 == LIMITS["POP3_SASL_MAX"]
	lines, _ = continued(pop3, resp)
	assert lines[0] == b"+ " and lines[1].startswith(b"+OK "), lines
	assert lines[2].startswith(b"+OK 1 "), lines
	over = sasl_plain(name.encode(), name.encode(), pw.encode() + b"xyz")
	assert len(over) == len(resp) + 4
	lines, err = continued(pop3, over, ("QUIT",))
	assert lines[:2] == [b"+ ", b"-ERR line too long"], lines
	assert "login" not in err, err


def test_credential_errors_to_auth_carry_the_auth_code(pop3):
	"""CAPA lists AUTH-RESP-CODE, which promises [AUTH] on every -ERR
	that the credentials caused (RFC 3206 section 6).  To AUTH PLAIN: a
	user name pop3d never takes (empty, a '/', 65 octets), an authzid
	other than the authcid, a password one octet longer than
	POP3_PASS_MAX (one of POP3_PASS_MAX logs in); the session goes on
	after each.  A response that is not PLAIN's form is no credential:
	no [AUTH]."""
	pmax = LIMITS["POP3_PASS_MAX"]
	pw = "q" * pmax
	pop3.write_passwd(["%s:%s" % (USER, make_hash(pw))])
	pop3.write_mbox([MSG])
	t = pop3.run(["CAPA", "QUIT"])
	assert "AUTH-RESP-CODE" in t[0].lines, t
	me, bad = USER.encode(), []
	for zid, cid, p in [(b"", b"", b"x"), (b"", b"al/ice", b"x"),
	    (b"", b"a" * (LIMITS["POP3_USER_MAX"] + 1), b"x"),
	    (b"other", me, pw.encode()), (b"", me, pw.encode() + b"q")]:
		lines, err = continued(pop3, sasl_plain(zid, cid, p),
		    ("CAPA", "QUIT"))
		if not (lines[0] == b"+ " and lines[1].startswith(b"-ERR [AUTH] ") and
		    lines[2].startswith(b"+OK ") and "login:" not in err):
			bad.append((zid, cid[:8], len(p), lines[:3]))
	assert bad == [], bad
	lines, _ = continued(pop3, base64.b64encode(b"\0" + me).decode(),
	    ("QUIT",))
	assert lines[1] == b"-ERR malformed PLAIN response", lines
	lines, _ = continued(pop3, sasl_plain(b"", me, pw.encode()))
	assert lines[1].startswith(b"+OK ") and lines[2].startswith(b"+OK 1 ")


def test_sasl_long_password_the_way_the_rfc_says(pop3):
	"""A 200-octet password: too long for AUTH PLAIN inline (the line
	would pass 255 octets), so sent after "+ "; it logs in, as USER and
	PASS with the same password do."""
	pw = "q" * 200
	pop3.write_passwd(["%s:%s" % (USER, make_hash(pw))])
	pop3.write_mbox([MSG])
	resp = sasl_plain(b"", USER.encode(), pw.encode())
	assert len("AUTH PLAIN " + resp) + 2 > LIMITS["POP3_CMD_MAX"]
	lines, _ = continued(pop3, resp)
	assert lines[0] == b"+ " and lines[1].startswith(b"+OK "), lines
	assert lines[2].startswith(b"+OK 1 "), lines
	t = pop3.run(["USER " + USER, "PASS " + pw, "STAT", "QUIT"])
	assert t.replies[1].ok and t.replies[2].text.startswith("+OK 1 "), t


def test_log_has_the_summary_and_never_the_password(pop3):
	pop3.write_mbox([MSG, MSG])
	secret = "S3cret-typed-as-user"
	t = pop3.run(["USER " + secret, "PASS x", *login(), "RETR 1",
	    "DELE 2", "QUIT"])
	assert t.replies[3].ok, t
	assert "login: user %s uid %d mech USER" % (USER, uid()) in t.stderr
	assert "UNKNOWN USER" in t.stderr
	assert secret not in t.stderr and PASSWORD not in t.stderr, t.stderr
	assert "retrieved 1" in t.stderr and "deleted 1" in t.stderr, t.stderr
	# What is left is what the test left: 2 written, 1 deleted (with the
	# index cache on, the update renews the session's index; with -C
	# it does not).
	assert "deleted 1, left 1" in t.stderr, t.stderr


def test_log_summary_counts_without_the_cache(pop3):
	pop3.write_mbox([MSG, MSG, MSG])
	t = pop3.run([*login(), "DELE 1", "QUIT"], "-C")
	assert t.replies[-1].ok, t
	assert "deleted 1, left 2" in t.stderr, t.stderr


@pytest.mark.parametrize("mode", [0o620, 0o602, 0o666])
def test_password_file_others_can_write_is_refused(pop3, mode):
	pop3.write_passwd(["%s:%s" % (USER, make_hash(PASSWORD))])
	os.chmod(pop3.passwd, mode)
	t = try_login(pop3)
	unchecked(t)
	assert "must not be writable by group or others" in t.stderr, t.stderr


def test_password_file_others_can_read_is_accepted_when_not_root(pop3):
	pop3.write_passwd(["%s:%s" % (USER, make_hash(PASSWORD))])
	os.chmod(pop3.passwd, 0o644)
	assert try_login(pop3).replies[1].ok
