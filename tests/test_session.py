"""The core POP3 session over pipes (issue 2): every command, the error
cases, the wire rules, and what the mailbox looks like afterwards."""

import os
import re
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from conftest import (LIMITS, NOBODY, PASSWORD, REPO, ROOT, USER, Pop3Env,
    expected_retr, expected_top, login, make_hash, mbox, sanitizer_check)

M1 = b"From: bob@example.org\nTo: alice@example.org\nSubject: one\n\nFirst.\n"
M2 = (b"From: carol@example.org\nSubject: two\n\nline 1\nline 2\nline 3\n"
    b"line 4\n")
M3 = (b"From: dave@example.org\nSubject: three\n\n.\n..two dots\n.dot\n"
    b"done.\n")
THREE = [M1, M2, M3]

# A varied corpus: every case where the size of a message is easy to get
# wrong (popa3d does).
CORPUS = [
	M1,
	M3,
	# From lines in the body: quoted (mboxo, sent as stored) and one an
	# MDA failed to quote, after an empty line but without a date.
	b"Subject: froms\n\n>From the start\n\nFrom here on, a body line.\n"
	b">>From twice\nFrom: not a separator either\n",
	# One line longer than the read block, then a short one.
	b"Subject: long\n\n" + b"x" * (LIMITS["MD_BLOCK"] + 4093) + b"\nshort\n",
	# Bare CR, NUL, a CRLF line in an LF mbox, and 8-bit octets.
	b"Subject: binary\n\nnul\x00byte\nbare\rcr\ncrlf line\r\n\xff\xfe\n",
	# Headers only: no empty line, no body.
	b"Subject: headers only\nX-Note: nothing else\n",
	# An empty body, then blank lines at the end of a body.
	b"Subject: empty body\n\n",
	b"Subject: trailing blank lines\n\nbody\n\n\n",
	# Many short lines.
	b"Subject: many lines\n\n" + b"".join(b"%d\n" % i for i in range(3000)),
	# The last message: no final newline.
	b"Subject: last\n\nno newline at the end",
]
# The same mailbox written with CRLF line ends (no bare CR in it).
CRLF_CORPUS = [M1, M3,
	b"Subject: froms\n\n>From the start\n\nFrom here on, a body line.\n",
	b"Subject: long\n\n" + b"y" * 300000 + b"\nshort\n",
	b"Subject: headers only\n",
	b"Subject: empty body\n\n",
	b"Subject: last\n\nno newline at the end"]



def ok(t, i=None):
	"""Asserts every reply of transcript t (or reply i) is +OK."""
	assert t.greeting is not None and t.greeting.ok, t
	rs = t.replies if i is None else [t.replies[i]]
	assert len(t.replies) == len(t.cmds) or i is not None, t
	for r in rs:
		assert r.ok, t
	return t


def stat(t, i):
	m = re.match(r"\+OK (\d+) (\d+)(\s|$)", t[i].text)
	assert m, t
	return int(m.group(1)), int(m.group(2))


def scan(reply):
	"""The data lines of LIST or UIDL as {n: value}."""
	out = {}
	for ln in reply.lines:
		n, v = ln.split(" ", 1)
		out[int(n)] = v
	return out


# ------------------------------------------------------------ greeting, CAPA

def test_greeting_names_the_implementation(pop3):
	t = pop3.run(["QUIT"])
	assert t.greeting.ok, t
	assert "pop3d" in t.greeting.text.lower(), t
	assert t[0].ok and t.rc == LIMITS["POP3_EX_OK"], t


def test_capa_in_both_states(pop3):
	pop3.write_mbox(THREE)
	t = ok(pop3.run(["CAPA"] + login() + ["CAPA", "QUIT"]))
	before = [c.split()[0].upper() for c in t[0].lines]
	for cap in ("TOP", "USER", "UIDL", "RESP-CODES", "PIPELINING",
	    "AUTH-RESP-CODE", "SASL", "IMPLEMENTATION"):
		assert cap in before, t
	# RFC 2449 section 5: what AUTHORIZATION offers is announced in
	# TRANSACTION too; none of these differs between the states.
	assert t[3].lines == t[0].lines, t
	for ln in t[0].lines + t[3].lines:
		assert len(ln) + 2 <= LIMITS["POP3_LINE_MAX"], ln


# ------------------------------------------------------------ every command

def test_full_session_every_command(pop3):
	data = pop3.write_mbox(THREE)
	cmds = login() + ["STAT", "LIST", "LIST 2", "UIDL", "UIDL 3",
	    "RETR 1", "TOP 2 0", "TOP 2 2", "NOOP", "DELE 1", "STAT", "LIST",
	    "RSET", "STAT", "DELE 2", "QUIT"]
	t = ok(pop3.run(cmds))
	sizes = [len(expected_retr(m)) for m in THREE]
	assert stat(t, 2) == (3, sum(sizes)), t
	assert scan(t.reply("LIST")) == {i + 1: str(s)
	    for i, s in enumerate(sizes)}, t
	assert re.fullmatch(r"\+OK 2 %d(\s.*)?" % sizes[1],
	    t.reply("LIST 2").text), t
	uidls = scan(t.reply("UIDL"))
	assert sorted(uidls) == [1, 2, 3], t
	assert t.reply("UIDL 3").text.split()[1:3] == ["3", uidls[3]], t
	assert t.reply("RETR 1").data == expected_retr(M1), t
	assert t.reply("TOP 2 0").data == expected_top(M2, 0), t
	assert t.reply("TOP 2 2").data == expected_top(M2, 2), t
	assert stat(t, 12) == (2, sizes[1] + sizes[2]), t
	assert scan(t[13]) == {2: str(sizes[1]), 3: str(sizes[2])}, t
	assert stat(t, 15) == (3, sum(sizes)), t
	assert t.rc == LIMITS["POP3_EX_OK"], t
	# Only message 2 went; the others are byte-identical.
	assert pop3.read_mbox() == mbox([M1, M3]), t
	assert data != pop3.read_mbox()


def test_quit_in_authorization_changes_nothing(pop3):
	data = pop3.write_mbox(THREE)
	t = ok(pop3.run(["USER " + USER, "QUIT"]))
	assert t.rc == LIMITS["POP3_EX_OK"], t
	assert pop3.read_mbox() == data


def test_top_counts_body_lines(pop3):
	pop3.write_mbox(THREE)
	cmds = login() + ["TOP 2 1", "TOP 2 4", "TOP 2 1000", "TOP 3 2",
	    "QUIT"]
	t = ok(pop3.run(cmds))
	assert t[2].data == expected_top(M2, 1), t
	assert t[3].data == expected_retr(M2), t	# exactly the whole body
	assert t[4].data == expected_retr(M2), t
	assert t[5].data == expected_top(M3, 2), t
	assert t[5].data.endswith(b"\r\n.\r\n..two dots\r\n"), t


def test_retr_is_dot_stuffed_on_the_wire(pop3):
	pop3.write_mbox(THREE)
	t = ok(pop3.run(login() + ["RETR 3", "QUIT"]))
	raw = t[2].raw
	assert b"\r\n..\r\n...two dots\r\n..dot\r\ndone.\r\n.\r\n" in raw, t
	assert raw.endswith(b"done.\r\n.\r\n"), t
	assert t[2].data == expected_retr(M3)


def test_rset_undeletes(pop3):
	data = pop3.write_mbox(THREE)
	t = ok(pop3.run(login() + ["DELE 1", "DELE 3", "RSET", "STAT",
	    "LIST", "QUIT"]))
	assert stat(t, 5)[0] == 3, t
	assert sorted(scan(t[6])) == [1, 2, 3], t
	assert pop3.read_mbox() == data


def test_noop_and_stat_with_deletions(pop3):
	pop3.write_mbox(THREE)
	sizes = [len(expected_retr(m)) for m in THREE]
	t = ok(pop3.run(login() + ["NOOP", "DELE 2", "STAT", "NOOP",
	    "QUIT"]))
	assert stat(t, 4) == (2, sizes[0] + sizes[2]), t


# ------------------------------------------------------------ errors

def test_commands_in_the_wrong_state(pop3):
	data = pop3.write_mbox(THREE)
	early = ["STAT", "LIST", "LIST 1", "RETR 1", "DELE 1", "NOOP", "RSET",
	    "TOP 1 0", "UIDL", "UIDL 1", "PASS " + PASSWORD]
	late = login()
	t = pop3.run(early + login() + late + ["STAT", "QUIT"])
	n = len(early)
	for i in range(n):
		assert t[i].err and t[i].data is None, t
	assert t[n].ok and t[n + 1].ok, t
	for i in range(n + 2, n + 4):
		assert t[i].err, t
	assert stat(t, n + 4)[0] == 3 and t[n + 5].ok, t
	assert pop3.read_mbox() == data


def test_unknown_commands(pop3):
	data = pop3.write_mbox(THREE)
	bad = ["FOO", "APOP alice 0123456789abcdef0123456789abcdef", "XTND",
	    "RETRX 1", "ST AT", "", "DELE1", "STAT\x01"]
	t = pop3.run(bad + login() + bad + ["STAT", "QUIT"])
	for i, c in enumerate(t.cmds):
		want = c in login() or c in ("STAT", "QUIT")
		assert t[i].ok == want and t[i].err != want, (c, t)
	assert pop3.read_mbox() == data


BAD_NUMBERS = ["0", "-1", "+1", "1x", "x1", "1.0", "0x1", "4", "00x",
    "4294967297", "4294967296", "18446744073709551617",
    "18446744073709551616", "36893488147419103233",
    "9" * 40, "", "\xb9"]


@pytest.mark.parametrize("verb", ["RETR", "DELE", "LIST", "UIDL", "TOP"])
def test_bad_message_numbers(pop3, verb):
	"""Never a wrong message: 2^32+1 and 2^64+1 must not wrap to 1."""
	data = pop3.write_mbox(THREE)
	cmds = login()
	for b in BAD_NUMBERS:
		c = ("%s %s" % (verb, b)).rstrip()
		if verb == "TOP":
			c += " 0" if b else ""
		if c.split() == [verb]:
			continue		# the bare verb: tested for arity
		cmds += [c, "NOOP"]
	cmds += ["STAT", "QUIT"]
	t = pop3.run(cmds)
	assert len(t) == len(cmds), t
	for i in range(2, len(cmds) - 2, 2):
		assert t[i].err and t[i].data is None, (t.cmds[i], t)
		assert t[i + 1].ok, t
	assert stat(t, len(cmds) - 2)[0] == 3, t
	assert pop3.read_mbox() == data


def test_bad_top_line_counts(pop3):
	pop3.write_mbox(THREE)
	cmds = login() + ["TOP 2 -1", "NOOP", "TOP 2 x", "NOOP", "TOP 2 1x",
	    "NOOP", "TOP 2 +1", "NOOP", "TOP 2 18446744073709551617", "QUIT"]
	t = pop3.run(cmds)
	for i in range(2, 10, 2):
		assert t[i].err and t[i].data is None, t
	# 2^64+1 lines: more than the body has, so the whole message (RFC
	# 1939), however many digits (it was an error past 2^63-1).
	assert t[10].data == expected_retr(M2), t
	assert t[11].ok, t


@pytest.mark.parametrize("count,lines", [("9223372036854775807", None),
    ("9223372036854775808", None), ("9" * 200, None), ("0" * 240 + "1", 1)])
def test_top_of_huge_line_counts(pop3, count, lines):
	"""Both sides of the largest count pop3d holds (2^63-1) and 200
	digits: the whole message; leading zeros: the count; with junk
	after the digits, an error."""
	pop3.write_mbox(THREE)
	cmds = login() + ["TOP 2 " + count, "TOP 2 " + count + "x", "QUIT"]
	t = pop3.run(cmds)
	want = expected_retr(M2) if lines is None else expected_top(M2, lines)
	assert t[2].data == want, t
	assert t[3].err and t[3].data is None, t
	assert t[4].ok, t


def test_deleted_message_is_gone_for_every_command(pop3):
	data = pop3.write_mbox(THREE)
	cmds = login() + ["DELE 2", "RETR 2", "NOOP", "DELE 2", "NOOP",
	    "LIST 2", "NOOP", "UIDL 2", "NOOP", "TOP 2 0", "NOOP", "LIST",
	    "UIDL", "RETR 3"]
	t = pop3.run(cmds)
	assert t[2].ok, t
	for i in range(3, 13, 2):
		assert t[i].err and t[i].data is None, (t.cmds[i], t)
	assert sorted(scan(t[13])) == [1, 3], t
	assert sorted(scan(t[14])) == [1, 3], t
	assert t[15].data == expected_retr(M3), t
	# EOF without QUIT: nothing is deleted.
	assert pop3.read_mbox() == data


ARITY = ["STAT 1", "RETR", "RETR 1 2", "DELE", "DELE 1 2", "LIST 1 2",
    "UIDL 1 2", "TOP", "TOP 1", "TOP 1 2 3", "NOOP x", "RSET x", "QUIT x"]


def test_arity(pop3):
	data = pop3.write_mbox(THREE)
	cmds = ["USER", "NOOP", "QUIT x", "USER " + USER, "PASS"]
	cmds += login()
	for c in ARITY:
		cmds += [c, "NOOP"]
	cmds += ["STAT", "QUIT"]
	t = pop3.run(cmds)
	assert len(t) == len(cmds), t
	for i in (0, 1, 2, 4):
		assert t[i].err, (t.cmds[i], t)
	for i in range(7, 7 + 2 * len(ARITY), 2):
		assert t[i].err and t[i].data is None, (t.cmds[i], t)
		assert t[i + 1].ok, (t.cmds[i + 1], t)
	assert stat(t, len(cmds) - 2)[0] == 3, t
	assert t.rc == LIMITS["POP3_EX_OK"], t
	assert pop3.read_mbox() == data


# Every way a command is bad, by state: (what the client sends, the reply
# lines that come before its "-ERR": the SASL continuation).  "long" has
# its LF in the input buffer, "longer" does not (it is discarded in parts).
BAD = {
	"before login": {
		"unknown": (b"BOGUS", []), "syntax": (b"USER", []),
		"state": (b"STAT", []), "handler": (b"PASS x", []),
		"long": (b"X" * 300, []), "longer": (b"NOOP " + b"x" * 3000, []),
		"nul": (b"NO\0OP", []), "sasl": (b"AUTH CRAM-MD5", []),
		"sasl cancelled": (b"AUTH PLAIN\r\n*", [b"+ "]),
		"sasl long": (b"AUTH PLAIN\r\n" + b"A" * 600, [b"+ "]),
		"sasl nul": (b"AUTH PLAIN\r\nAA\0A", [b"+ "]),
	},
	"after login": {
		"unknown": (b"BOGUS", []), "syntax": (b"LIST 1 2", []),
		"state": (b"USER " + USER.encode(), []),
		"handler": (b"RETR 9", []), "number": (b"DELE 0x1", []),
		"long": (b"X" * 300, []), "longer": (b"DELE 1 " * 500, []),
		"nul": (b"DELE\0 1", []),
	},
}
CLOSING = b"-ERR too many bad commands, closing"


def bad_script(state, n, last=None):
	"""n bad commands of every kind in turn (the last one of kind last):
	the octets to send and the reply lines each one must get (its
	"-ERR" line as None: any but the closing one)."""
	kinds = BAD[state]
	names = sorted(kinds)
	order = [names[i % len(names)] for i in range(n)]
	if last is not None:
		order[-1] = last
	data, want = b"", []
	for k in order:
		raw, pre = kinds[k]
		data += raw + b"\r\n"
		want += pre + [None]
	return data, want


def check_lines(got, want):
	"""got (reply lines) is want, None standing for any "-ERR" line but
	the closing one."""
	assert len(got) == len(want), (got, want)
	for g, w in zip(got, want):
		if w is None:
			assert g.startswith(b"-ERR ") and g != CLOSING, (g, got)
		else:
			assert g == w, (g, got)


@pytest.mark.parametrize("state,last", [(s, k) for s in BAD
    for k in sorted(BAD[s])])
def test_the_last_bad_command_gets_one_reply_saying_closing(pop3, state,
    last):
	"""POP3_BAD_MAX bad commands in one write, then more commands: each
	bad one gets exactly one reply, the last "-ERR too many bad commands,
	closing" (nothing else: a pipelining client takes each line for the
	next command's reply), then nothing; whatever kind the last one is."""
	data = pop3.write_mbox(THREE)
	n = LIMITS["POP3_BAD_MAX"]
	pre = login() if state == "after login" else []
	bad, want = bad_script(state, n, last)
	raw = b"".join(c.encode() + b"\r\n" for c in pre) + bad + \
	    b"DELE 1\r\nNOOP\r\nQUIT\r\n"
	t = pop3.run([], raw=raw)
	lines = t.out.split(b"\r\n")
	assert lines[-1] == b"", t.out[-300:]		# every line ends in CRLF
	lines = lines[1 + len(pre):-1]			# the greeting, login
	assert t.out.startswith(b"+OK") and b"-ERR" not in \
	    b"".join(t.out.split(b"\r\n")[:1 + len(pre)]), t.out[:300]
	check_lines(lines[:-1], want[:-1])
	assert lines[-1] == CLOSING, lines[-3:]
	assert t.rc == LIMITS["POP3_EX_CLOSED"], t
	assert pop3.read_mbox() == data


def test_the_last_bad_command_a_long_line_in_parts(pop3):
	"""The last bad command a line too long, whose end comes later (pop3d
	waits for input in the middle of it): still one reply, the closing
	one, and only when the line has ended."""
	pop3.write_mbox(THREE)
	n = LIMITS["POP3_BAD_MAX"]
	s = pop3.session()
	s.login()
	for i in range(n - 1):
		r = s.cmd("BOGUS")
		assert r.err and r.raw != CLOSING + b"\r\n", r
	s.send(b"X" * 3000)
	time.sleep(0.5)
	s.send(b"X" * 3000)
	time.sleep(0.5)
	s.send(b"\r\nNOOP\r\n")
	assert s.wait_eof(10) == CLOSING + b"\r\n"
	assert s.wait() == LIMITS["POP3_EX_CLOSED"], s.stderr()


@pytest.mark.parametrize("state", sorted(BAD))
def test_one_bad_command_less_keeps_the_session(pop3, state):
	"""POP3_BAD_MAX - 1 bad commands, a good one (the count starts
	again), as many bad ones again, and QUIT: every command answered."""
	pop3.write_mbox(THREE)
	n = LIMITS["POP3_BAD_MAX"]
	pre = login() if state == "after login" else []
	good = b"NOOP" if pre else b"USER " + USER.encode()
	bad, want = bad_script(state, n - 1)
	raw = b"".join(c.encode() + b"\r\n" for c in pre) + bad + good + \
	    b"\r\n" + bad + b"QUIT\r\n"
	t = pop3.run([], raw=raw)
	lines = t.out.split(b"\r\n")[1 + len(pre):-1]
	check_lines(lines[:len(want)], want)
	assert lines[len(want)].startswith(b"+OK"), lines
	check_lines(lines[len(want) + 1:-1], want)
	assert lines[-1].startswith(b"+OK") and b"signing off" in lines[-1], \
	    lines[-3:]
	# Before login the good command is USER, so the second round's
	# "PASS x" is a failed login, and QUIT then gives up (pop3d.8: 67).
	assert t.rc == LIMITS["POP3_EX_OK" if pre else "POP3_EX_NOUSER"], t


def test_good_commands_reset_the_bad_count(pop3):
	pop3.write_mbox(THREE)
	n = LIMITS["POP3_BAD_MAX"]
	cmds = login()
	for i in range(n + 5):
		cmds += ["BOGUS", "NOOP"]
	cmds += ["QUIT"]
	t = pop3.run(cmds)
	assert len(t) == len(cmds) and t[-1].ok, t


# ------------------------------------------------------------ the wire

@pytest.mark.parametrize("split", [250, 254, 255, 256, 257, 290, 1024])
def test_long_line_one_error_tail_not_run(pop3, split):
	"""A line over POP3_CMD_MAX octets: one -ERR, the rest of the line is
	never executed (its tail looks like "DELE 1" wherever the reader's
	buffer might cut it)."""
	data = pop3.write_mbox(THREE)
	long = "NOOP" + " " * (split - 4) + "DELE 1"
	if split >= 290:
		long = "X" * split + "DELE 1" + " DELE 1" * 3
	assert len(long) + 2 > LIMITS["POP3_CMD_MAX"]
	cmds = login() + [long, "LIST 1", "STAT", "QUIT"]
	t = pop3.run(cmds)
	assert len(t) == len(cmds), t
	assert t[2].err, t
	assert t[3].ok and stat(t, 4)[0] == 3 and t[5].ok, t
	assert pop3.read_mbox() == data


def test_300_octet_line(pop3):
	data = pop3.write_mbox(THREE)
	line = ("DELE 1" + " " * 300)[:298]		# 300 octets with CRLF
	t = pop3.run(login() + [line, "STAT", "QUIT"])
	assert len(t) == 5 and t[2].err and stat(t, 3)[0] == 3, t
	assert pop3.read_mbox() == data


def test_line_of_max_length_is_accepted(pop3):
	"""POP3_CMD_MAX octets with the CRLF is a valid command (a password of
	that length works); one octet more is refused."""
	n = LIMITS["POP3_CMD_MAX"] - len("PASS \r\n")
	pw = ("long password " * 40)[:n]
	pop3.write_passwd([])
	pop3.add_user(USER, pw)
	pop3.add_user("bob", pw + "x")
	pop3.write_mbox(THREE)
	t = pop3.run(["USER " + USER, "PASS " + pw, "STAT", "QUIT"])
	ok(t)
	t = pop3.run(["USER bob", "PASS " + pw + "x", "QUIT"])
	assert t[1].err and t[2].ok, t


def test_huge_line_does_not_hurt(pop3):
	data = pop3.write_mbox(THREE)
	cmds = login() + ["DELE 1" + "x" * 200000, "STAT", "QUIT"]
	t = pop3.run(cmds)
	assert len(t) == len(cmds), t
	assert t[2].err and stat(t, 3)[0] == 3 and t[4].ok, t
	assert pop3.read_mbox() == data


def test_nul_voids_the_line(pop3):
	data = pop3.write_mbox(THREE)
	cmds = login() + ["DELE 1\x00", "NOOP", "DELE\x00 1", "NOOP",
	    "DE\x00LE 2", "NOOP", "\x00", "NOOP", "STAT", "QUIT"]
	t = pop3.run(cmds)
	assert len(t) == len(cmds), t
	for i in (2, 4, 6, 8):
		assert t[i].err, t
		assert t[i + 1].ok, t
	assert stat(t, 10)[0] == 3, t
	assert pop3.read_mbox() == data


def test_nul_in_authorization(pop3):
	pop3.write_mbox(THREE)
	t = pop3.run(["USER " + USER + "\x00", "PASS " + PASSWORD,
	    "USER " + USER, "PASS " + PASSWORD + "\x00", "STAT", "QUIT"])
	assert t[0].err and t[1].err and t[2].ok, t
	assert t[3].err and not t[3].text.startswith("+OK"), t
	assert t[4].err, t			# still not logged in


def test_bare_lf(pop3):
	pop3.write_mbox(THREE)
	t = ok(pop3.run(login() + ["STAT", "RETR 1", "DELE 1", "QUIT"],
	    eol=b"\n"))
	assert t[3].data == expected_retr(M1), t
	assert pop3.read_mbox() == mbox([M2, M3])


def test_mixed_line_ends(pop3):
	pop3.write_mbox(THREE)
	raw = (b"USER " + USER.encode() + b"\n" + b"PASS " + PASSWORD.encode()
	    + b"\r\nSTAT\nNOOP\r\nQUIT\n")
	ok(pop3.run(login() + ["STAT", "NOOP", "QUIT"], raw=raw))


def test_case_insensitive_commands(pop3):
	pop3.write_mbox(THREE)
	cmds = ["capa", "user " + USER, "pAsS " + PASSWORD, "stat", "List",
	    "list 1", "Uidl", "retr 1", "Top 2 0", "dele 1", "rset", "noop",
	    "dElE 2", "quit"]
	t = ok(pop3.run(cmds))
	assert t[7].data == expected_retr(M1), t
	assert pop3.read_mbox() == mbox([M1, M3])


def test_user_name_is_case_sensitive(pop3):
	pop3.write_mbox(THREE)
	t = pop3.run(["USER " + USER.upper(), "PASS " + PASSWORD, "QUIT"])
	assert t[1].err, t


def test_pipelining_all_at_once(pop3):
	"""Every command in one write: every reply, in order."""
	pop3.write_mbox(THREE)
	cmds = (["CAPA"] + login() + ["STAT", "LIST", "UIDL", "RETR 1",
	    "TOP 2 1", "DELE 1", "LIST 1", "NOOP", "RETR 2", "RSET",
	    "RETR 3", "UIDL 2", "STAT", "QUIT"])
	t = pop3.run(cmds)
	assert len(t) == len(cmds) and not t.extra, t
	want_err = {"LIST 1"}
	for c, r in zip(cmds, t.replies):
		assert r.err if c in want_err else r.ok, (c, t)
	assert t.reply("RETR 1").data == expected_retr(M1)
	assert t.reply("RETR 2").data == expected_retr(M2)
	assert t.reply("RETR 3").data == expected_retr(M3)
	assert t.reply("TOP 2 1").data == expected_top(M2, 1)


def test_pipelining_many_rounds(pop3):
	"""More pipelined input than any input buffer holds."""
	pop3.write_mbox(THREE)
	cmds = login() + ["STAT", "RETR 3", "LIST 2", "NOOP"] * 300 + ["QUIT"]
	t = ok(pop3.run(cmds))
	assert all(r.data == expected_retr(M3) for c, r in
	    zip(cmds, t.replies) if c == "RETR 3"), t


# ------------------------------------------------------------ sizes

@pytest.mark.parametrize("corpus,nl", [(CORPUS, b"\n"), (CRLF_CORPUS,
    b"\r\n")], ids=["lf", "crlf"])
def test_sizes_equal_retr_octets(pop3, corpus, nl):
	"""LIST and STAT sizes are exactly what RETR sends (un-stuffed, before
	the final '.'), for every message of a varied corpus, and RETR sends
	the message as stored."""
	pop3.write_mbox(mbox(corpus, nl=nl, final_newline=False))
	n = len(corpus)
	cmds = login() + ["STAT", "LIST"] + ["LIST %d" % (i + 1) for i in
	    range(n)] + ["RETR %d" % (i + 1) for i in range(n)] + ["QUIT"]
	t = ok(pop3.run(cmds, timeout=60))
	count, total = stat(t, 2)
	assert count == n, t
	sizes = scan(t[3])
	assert sorted(sizes) == list(range(1, n + 1)), t
	assert sum(int(s) for s in sizes.values()) == total, t
	for i in range(n):
		r = t[4 + n + i]
		assert int(sizes[i + 1]) == len(r.data), (i + 1, t)
		assert t[4 + i].text.split()[1:3] == ["%d" % (i + 1),
		    sizes[i + 1]], t
		assert r.data == expected_retr(corpus[i], nl), (i + 1,
		    r.data[:300], expected_retr(corpus[i], nl)[:300])
		# No bare LF on the wire.
		assert re.search(rb"(?<!\r)\n", r.raw) is None, (i + 1, t)


def test_top_of_corpus(pop3):
	pop3.write_mbox(mbox(CORPUS, final_newline=False))
	idx = [2, 3, 4, 5, 7, 8, 9, 10]	# 1-based, with bodies to cut
	cmds = login() + ["TOP %d 1" % i for i in idx] + ["TOP %d 0" % i for
	    i in idx] + ["QUIT"]
	t = ok(pop3.run(cmds))
	for j, i in enumerate(idx):
		m = CORPUS[i - 1]
		assert t[2 + j].data == expected_top(m, 1), (i, t)
		assert t[2 + len(idx) + j].data == expected_top(m, 0), (i, t)


def test_body_from_line_does_not_split(pop3):
	pop3.write_mbox(mbox(CORPUS, final_newline=False))
	t = ok(pop3.run(login() + ["STAT", "RETR 3", "QUIT"]))
	assert stat(t, 2)[0] == len(CORPUS), t
	assert b"\r\n>From the start\r\n" in t[3].data, t
	assert b"\r\nFrom here on, a body line.\r\n" in t[3].data, t


def test_internal_data_pseudo_message_hidden_and_kept(pop3):
	pseudo = (b"From MAILER-DAEMON Thu Nov 26 12:00:00 2026",
	    b"Date: Thu, 26 Nov 2026 12:00:00 +0000\n"
	    b"From: Mail System Internal Data <MAILER-DAEMON@example.org>\n"
	    b"Subject: DON'T DELETE THIS MESSAGE -- FOLDER INTERNAL DATA\n"
	    b"Message-ID: <1764158400@example.org>\n"
	    b"X-IMAP: 1764158400 0000000003\nStatus: RO\n\n"
	    b"This text is part of the internal format of your mail folder, "
	    b"and is not\na real message.  It is created automatically by the "
	    b"mail system software.\n")
	pop3.write_mbox(mbox([pseudo] + THREE))
	t = ok(pop3.run(login() + ["STAT", "RETR 1", "DELE 1", "DELE 2",
	    "DELE 3", "QUIT"]))
	assert stat(t, 2)[0] == 3, t
	assert t[3].data == expected_retr(M1), t
	assert pop3.read_mbox() == mbox([pseudo]), t


# ------------------------------------------------------------ the update

def test_dele_quit_keeps_the_rest_byte_identical(pop3):
	msgs = [(b"From a%d@example.org Thu Nov 26 12:%02d:00 2026" % (i, i),
	    b"Subject: %d\n\nbody %d\n" % (i, i)) for i in range(8)]
	before = pop3.write_mbox(msgs)
	st = os.stat(pop3.mailbox())
	t = ok(pop3.run(login() + ["DELE 1", "DELE 4", "DELE 5", "DELE 8",
	    "QUIT"]))
	assert t.rc == LIMITS["POP3_EX_OK"], t
	assert pop3.read_mbox() == mbox([msgs[1], msgs[2], msgs[5], msgs[6]])
	after = os.stat(pop3.mailbox())
	assert (after.st_uid, after.st_gid, after.st_mode) == (st.st_uid,
	    st.st_gid, st.st_mode)
	assert pop3.spool_files() == [USER], "lock or journal left behind"
	assert before != pop3.read_mbox()


def test_dele_quit_varied_corpus(pop3):
	data = mbox(CORPUS, final_newline=False)
	pop3.write_mbox(data)
	ok(pop3.run(login() + ["DELE 2", "DELE 4", "DELE 6", "QUIT"]))
	keep = [m for i, m in enumerate(CORPUS) if i + 1 not in (2, 4, 6)]
	assert pop3.read_mbox() == mbox(keep, final_newline=False)


def test_crlf_mbox_update(pop3):
	pop3.write_mbox(mbox(CRLF_CORPUS, nl=b"\r\n"))
	ok(pop3.run(login() + ["DELE 1", "DELE 3", "QUIT"]))
	keep = [m for i, m in enumerate(CRLF_CORPUS) if i + 1 not in (1, 3)]
	assert pop3.read_mbox() == mbox(keep, nl=b"\r\n")


def test_eof_without_quit_deletes_nothing(pop3):
	data = pop3.write_mbox(THREE)
	t = pop3.run(login() + ["DELE 1", "DELE 2", "DELE 3"])
	assert len(t) == 5 and all(r.ok for r in t.replies), t
	assert t.rc == LIMITS["POP3_EX_CLOSED"], t
	assert pop3.read_mbox() == data
	assert pop3.spool_files() == [USER]


def test_delete_all_leaves_an_empty_file(pop3):
	pop3.write_mbox(THREE)
	t = ok(pop3.run(login() + ["DELE 1", "DELE 2", "DELE 3", "QUIT"]))
	assert pop3.mailbox().exists(), "the mailbox was removed"
	assert pop3.read_mbox() == b""
	t = ok(pop3.run(login() + ["STAT", "QUIT"]))
	assert stat(t, 2) == (0, 0), t


def test_missing_mailbox_is_empty_and_not_created(pop3):
	t = ok(pop3.run(login() + ["STAT", "LIST", "UIDL", "QUIT"]))
	assert stat(t, 2) == (0, 0), t
	assert t[3].lines == [] and t[4].lines == [], t
	assert not pop3.mailbox().exists()
	assert pop3.spool_files() == [], "something was created in the spool"
	t = pop3.run(login() + ["RETR 1", "DELE 1", "LIST 1", "QUIT"])
	assert t[2].err and t[3].err and t[4].err and t[5].ok, t
	assert not pop3.mailbox().exists()


def test_empty_mailbox(pop3):
	pop3.write_mbox(b"")
	t = ok(pop3.run(login() + ["STAT", "LIST", "QUIT"]))
	assert stat(t, 2) == (0, 0) and t[3].lines == [], t
	assert pop3.read_mbox() == b""


def test_mail_appended_after_login_is_kept(pop3):
	pop3.write_mbox(THREE)
	new = b"Subject: arrived during the session\n\nhello\n"
	s = pop3.session()
	s.login()
	assert s.cmd("STAT").text.startswith("+OK 3 "), s.log
	assert s.cmd("DELE 1").ok and s.cmd("DELE 3").ok
	pop3.append_mbox(mbox([new]))
	# The session still shows what it indexed at login.
	assert s.cmd("STAT").text.startswith("+OK 1 "), s.log
	r = s.cmd("QUIT")
	assert r.ok, (r, s.stderr())
	assert s.wait() == LIMITS["POP3_EX_OK"]
	assert pop3.read_mbox() == mbox([M2, new])
	t = ok(pop3.run(login() + ["STAT", "RETR 2", "QUIT"]))
	assert stat(t, 2)[0] == 2 and t[3].data == expected_retr(new), t


def test_mailbox_mode_and_owner_kept(pop3):
	pop3.write_mbox(THREE, mode=0o660)
	st = os.stat(pop3.mailbox())
	ok(pop3.run(login() + ["DELE 2", "QUIT"]))
	after = os.stat(pop3.mailbox())
	assert (after.st_mode, after.st_uid, after.st_gid) == (st.st_mode,
	    st.st_uid, st.st_gid)


# ------------------------------------------------------------ UIDL

def uidl_map(pop3):
	t = ok(pop3.run(login() + ["UIDL", "QUIT"]))
	return scan(t[2])


def test_uidl_format_and_unique(pop3):
	twins = [M1, M2, M2, M2, M3]		# byte-identical, From_ line too
	pop3.write_mbox(twins)
	u = uidl_map(pop3)
	assert sorted(u) == [1, 2, 3, 4, 5]
	assert len(set(u.values())) == 5, u
	for v in u.values():
		assert 1 <= len(v) <= LIMITS["POP3_UIDL_MAX"], v
		assert all(0x21 <= ord(c) <= 0x7e for c in v), v
	cmds = login() + ["UIDL %d" % i for i in range(1, 6)] + ["QUIT"]
	t = ok(pop3.run(cmds))
	for i in range(1, 6):
		assert t[1 + i].text.split()[1:3] == [str(i), u[i]], t


def test_uidl_stable_across_sessions_and_deletions(pop3):
	msgs = [b"Subject: %d\n\nbody\n" % i for i in range(6)]
	pop3.write_mbox(msgs)
	u1 = uidl_map(pop3)
	assert uidl_map(pop3) == u1
	ok(pop3.run(login() + ["DELE 1", "DELE 4", "QUIT"]))
	u2 = uidl_map(pop3)
	assert list(u2.values()) == [u1[2], u1[3], u1[5], u1[6]]


@pytest.mark.parametrize("cut", [0, 1, 37], ids=["first-line", "second",
    "later"])
def test_header_longer_than_the_uidl_digest(pop3, cut):
	"""A header over 64 KiB (MD_HASH_MAX, the octets a UIDL digests)
	whose line crosses that mark: UIDL, then RETR, whose re-check
	digests the header again, sends the message as written (a change
	reverted in 0f9dbe4 made the two digests differ there: "maildrop
	changed", the session ended; found by a review)."""
	hdr = b"Subject: x\n" * cut + b"X-Long: " + b"a" * 70000 + b"\n"
	msg = hdr + b"\nbody\n"
	pop3.write_mbox([b"Subject: first\n\nfirst\n", msg])
	t = ok(pop3.run(login() + ["UIDL 2", "RETR 2", "TOP 2 0", "QUIT"]))
	assert t[3].data == expected_retr(msg)
	assert t[4].data == expected_top(msg, 0)


def test_uidl_kept_when_status_headers_rewritten(pop3):
	msgs = [b"From: x@example.org\nSubject: %d\n\nbody %d\n" % (i, i)
	    for i in range(3)]
	pop3.write_mbox(msgs)
	u1 = uidl_map(pop3)
	extra = (b"Status: RO\nX-Status: A\nX-UID: 17\nX-Keywords: $Seen\n"
	    b"Content-Length: 7\n")
	pop3.write_mbox([m.replace(b"\n\n", b"\n" + extra + b"\n", 1)
	    for m in msgs])
	assert uidl_map(pop3) == u1
	extra2 = (b"Status: O\nX-Status: \nX-UID: 18\nX-Keywords: Junk\n"
	    b"Content-Length: 8\n")
	pop3.write_mbox([m.replace(b"\n\n", b"\n" + extra2 + b"\n", 1)
	    for m in msgs])
	assert uidl_map(pop3) == u1


def test_uidl_ignores_x_uidl_header(pop3):
	pop3.write_mbox([M1, M2])
	u = uidl_map(pop3)
	spoof = b"X-UIDL: %s\nSubject: spoof\n\nbody\n" % u[1].encode()
	own = b"X-UIDL: chosen-by-sender\nSubject: x\n\nbody\n"
	pop3.write_mbox([M1, M2, spoof, own])
	u2 = uidl_map(pop3)
	assert u2[1] == u[1] and u2[2] == u[2]
	assert len(set(u2.values())) == 4, u2
	assert u2[4] != "chosen-by-sender"


def test_uidl_differs_for_same_message_delivered_twice(pop3):
	"""The same message delivered twice (From_ lines a second apart)."""
	a = (b"From sender@example.org Thu Nov 26 12:00:00 2026", M1)
	b = (b"From sender@example.org Thu Nov 26 12:00:01 2026", M1)
	pop3.write_mbox([a, b])
	u = uidl_map(pop3)
	assert u[1] != u[2]


# ------------------------------------------------------------ sessions

def test_second_session_gets_in_use(pop3):
	pop3.write_mbox(THREE)
	a = pop3.session()
	a.login()
	assert a.cmd("DELE 1").ok
	t0 = time.monotonic()
	t = pop3.run(login() + ["STAT", "DELE 2", "QUIT"])
	assert time.monotonic() - t0 < 10, "IN-USE was not prompt"
	assert t[1].err and "[IN-USE]" in t[1].text, t
	assert not any(r.ok for r in t.replies[2:]), t
	assert t.rc == LIMITS["POP3_EX_TEMPFAIL"], t
	# The first session is unharmed.
	assert a.cmd("STAT").text.startswith("+OK 2 "), a.log
	assert a.cmd("RETR 2").data == expected_retr(M2)
	assert a.cmd("QUIT").ok
	assert a.wait() == 0
	assert pop3.read_mbox() == mbox([M2, M3])


def test_killed_session_does_not_block_the_next(pop3):
	data = pop3.write_mbox(THREE)
	a = pop3.session()
	a.login()
	assert a.cmd("DELE 1").ok
	a.kill()
	t = ok(pop3.run(login() + ["STAT", "QUIT"]))
	assert stat(t, 2)[0] == 3, t
	assert pop3.read_mbox() == data


def test_idle_timeout_closes_without_update(pop3):
	data = pop3.write_mbox(THREE)
	s = pop3.session("-t", "2")
	s.login()
	assert s.cmd("DELE 1").ok
	t0 = time.monotonic()
	s.wait_eof(15)
	took = time.monotonic() - t0
	assert 1.5 <= took < 10, took
	assert s.wait() == LIMITS["POP3_EX_CLOSED"], s.stderr()
	assert pop3.read_mbox() == data
	assert pop3.spool_files() == [USER]


def test_idle_timeout_in_authorization(pop3):
	s = pop3.session("--timeout=2")
	assert s.greeting().ok
	assert s.cmd("USER " + USER).ok
	t0 = time.monotonic()
	s.wait_eof(15)
	assert 1.5 <= time.monotonic() - t0 < 10
	assert s.wait() == LIMITS["POP3_EX_CLOSED"]


@pytest.mark.parametrize("state", ["before login", "after login"])
@pytest.mark.parametrize("secs", [1, 2])
def test_idle_timeout_is_the_option_to_the_tenth(pop3, state, secs):
	"""--timeout=S (1, the lowest allowed, and 2): "-ERR autologout: idle
	timeout" and the close come S seconds after the last reply, not half
	or twice that (the window is [S - 0.05, 1.8 S), from the command)."""
	pop3.write_mbox(THREE)
	s = pop3.session("--timeout=%d" % secs)
	if state == "after login":
		s.login()
	else:
		assert s.greeting().ok
	# Before the command: pop3d's idle time starts after its reply, so a
	# test process slow to wake cannot shorten what is measured.
	t0 = time.monotonic()
	assert s.cmd("NOOP" if state == "after login" else "CAPA").ok
	r = s.read_reply(timeout=4 * secs + 5)
	took = time.monotonic() - t0
	assert r is not None and r.text == "-ERR autologout: idle timeout", r
	assert secs - 0.05 <= took < 1.8 * secs, took
	assert s.wait_eof(5) == b""
	assert s.wait() == LIMITS["POP3_EX_CLOSED"], s.stderr()


@pytest.mark.parametrize("value,rc", [("0", "POP3_EX_USAGE"),
    ("1", "POP3_EX_OK"), (str(LIMITS["POP3_SESSION_MAX"]), "POP3_EX_OK"),
    (str(LIMITS["POP3_SESSION_MAX"] + 1), "POP3_EX_USAGE")])
def test_timeout_option_limits_both_sides(pop3, value, rc):
	"""--timeout takes 1 to POP3_SESSION_MAX seconds."""
	t = pop3.run(["QUIT"], "--timeout=" + value)
	assert t.rc == LIMITS[rc], t
	if rc == "POP3_EX_OK":
		assert t.greeting.ok and t[0].ok, t
	else:
		assert t.out == b"" and t.stderr.strip(), t


def test_spool_lock_held_by_mda_is_waited_for(pop3):
	"""An MDA holding the fcntl lock delays the login; no error."""
	import fcntl
	import threading
	pop3.write_mbox(THREE)
	fd = os.open(pop3.mailbox(), os.O_RDWR)
	fcntl.lockf(fd, fcntl.LOCK_EX)
	threading.Timer(1.5, lambda: os.close(fd)).start()
	t0 = time.monotonic()
	t = ok(pop3.run(login() + ["STAT", "QUIT"]))
	assert time.monotonic() - t0 >= 1.2, t
	assert stat(t, 2)[0] == 3


def test_dotlock_held_by_mda_is_waited_for(pop3):
	import threading
	pop3.write_mbox(THREE)
	lock = pop3.spool / (USER + ".lock")
	lock.write_bytes(b"")
	threading.Timer(1.5, lock.unlink).start()
	t0 = time.monotonic()
	t = ok(pop3.run(login() + ["STAT", "QUIT"]))
	assert time.monotonic() - t0 >= 1.2, t
	assert not lock.exists()


def test_lock_fcntl_only_ignores_dotlock(pop3):
	pop3.write_mbox(THREE)
	lock = pop3.spool / (USER + ".lock")
	lock.write_bytes(b"")
	try:
		t0 = time.monotonic()
		t = ok(pop3.run(login() + ["DELE 1", "QUIT"], "-l", "fcntl"))
		assert time.monotonic() - t0 < 1.0, t
		assert pop3.read_mbox() == mbox([M2, M3])
		assert lock.exists(), "someone else's dotlock was removed"
	finally:
		lock.unlink()


# ------------------------------------------------------------ logins

def test_failed_login_same_reply_for_unknown_user_and_bad_password(pop3):
	pop3.write_mbox(THREE)
	bad = "Xyzzy-wrong-pw-42"
	t = pop3.run(["USER nosuchuser", "PASS " + PASSWORD, "USER " + USER,
	    "PASS " + bad, "QUIT"])
	assert t[0].ok and t[2].ok, t		# USER does not tell either
	assert t[1].err and t[1].text.startswith("-ERR [AUTH]"), t
	assert t[3].text == t[1].text, t
	assert t[4].ok, t
	assert PASSWORD not in t.stderr and bad not in t.stderr, t


def test_failed_login_then_success(pop3):
	pop3.write_mbox(THREE)
	t = ok(pop3.run(["USER " + USER, "PASS bad"] + login() + ["STAT",
	    "QUIT"]), 3)
	assert t[1].err and t[3].ok and stat(t, 4)[0] == 3, t


def test_disconnect_after_three_failures(pop3):
	data = pop3.write_mbox(THREE)
	n = LIMITS["POP3_AUTH_FAIL_MAX"]
	cmds = ["USER " + USER, "PASS bad"] * n + login() + ["STAT", "QUIT"]
	t = pop3.run(cmds)
	assert len(t) == 2 * n, t
	assert all(t[2 * i + 1].text.startswith("-ERR [AUTH]")
	    for i in range(n)), t
	assert t.rc == LIMITS["POP3_EX_NOUSER"], t
	assert pop3.read_mbox() == data


@pytest.mark.parametrize("fails,end,rc", [
    (1, "QUIT", "POP3_EX_NOUSER"), (1, None, "POP3_EX_NOUSER"),
    (0, "QUIT", "POP3_EX_OK"), (0, None, "POP3_EX_CLOSED")])
def test_exit_status_before_a_login(pop3, fails, end, rc):
	"""pop3d.8, EXIT STATUS: a client that failed a login and then
	gave up (QUIT, or going away) is 67, one that never tried is 0 after
	QUIT and 1 when it went away."""
	pop3.write_mbox(THREE)
	cmds = ["USER " + USER, "PASS bad"] * fails + ([end] if end else [])
	t = pop3.run(cmds)
	assert all(r.err for r in t.replies[1:2 * fails:2]), t
	assert t.rc == LIMITS[rc], t


def test_failed_login_answered_at_a_fixed_deadline(pop3):
	"""Unknown user and wrong password: same reply, same time."""
	delay = 1.0
	pop3.add_user("yes", "pw", "yescrypt")
	times = {}
	for who, pw in (("nosuchuser", "x"), (USER, "wrong"), (USER,
	    "wrong" * 40), ("yes", "wrong")):
		s = pop3.session(fail_delay=int(delay * 1000))
		assert s.greeting().ok
		assert s.cmd("USER " + who).ok
		t0 = time.monotonic()
		r = s.cmd("PASS " + pw, timeout=10)
		times[(who, pw)] = time.monotonic() - t0
		assert r.text.startswith("-ERR [AUTH]"), r
		s.kill()
	for k, v in times.items():
		assert delay - 0.05 <= v < delay + 0.5, times


def test_default_fail_delay(pop3):
	s = pop3.session(fail_delay=False)
	assert s.greeting().ok
	assert s.cmd("USER nosuchuser").ok
	t0 = time.monotonic()
	r = s.cmd("PASS x")
	took = time.monotonic() - t0
	assert r.err
	want = LIMITS["POP3_FAIL_DELAY_MS"] / 1000
	assert want - 0.05 <= took < want + 0.5, took


@pytest.mark.parametrize("scheme", ["yescrypt", "sha512", "bcrypt"])
def test_hash_schemes(pop3, scheme):
	pop3.write_passwd([])
	pop3.add_user("bob", "b0b's password", scheme)
	pop3.write_mbox(THREE, user="bob")
	t = ok(pop3.run(["USER bob", "PASS b0b's password", "STAT", "QUIT"]))
	assert stat(t, 2)[0] == 3, t
	t = pop3.run(["USER bob", "PASS b0b's passwore", "QUIT"])
	assert t[1].text.startswith("-ERR [AUTH]") and t[2].ok, t


def test_password_file_comments_and_malformed_lines(pop3):
	good = "%s:%s" % (USER, make_hash(PASSWORD))
	lines = ["# pop3d users", "", "   ", "# carol:" + make_hash("c"),
	    "garbage without a colon", "bob:" + make_hash("b0b"), good]
	bad_lineno = 5
	pop3.write_passwd(lines)
	pop3.write_mbox(THREE)
	pop3.write_mbox([M1], user="bob")
	t = ok(pop3.run(login() + ["STAT", "QUIT"]))
	t = ok(pop3.run(["USER bob", "PASS b0b", "STAT", "QUIT"]))
	assert stat(t, 2)[0] == 1
	assert any(re.search(r"(?<![\d.])%d(?!\d)" % bad_lineno, ln) and
	    ("passwd" in ln or "line" in ln.lower())
	    for ln in t.stderr.splitlines()), \
	    "malformed line %d not logged: %s" % (bad_lineno, t.stderr)
	t = pop3.run(["USER carol", "PASS c", "QUIT"])
	assert t[1].err, t
	t = pop3.run(["USER garbage without a colon", "PASS x", "QUIT"])
	assert t[1].err, t


def test_password_with_spaces_and_colons(pop3):
	pop3.write_passwd([])
	pw = "a: b  c"
	pop3.add_user("bob", pw)
	pop3.write_mbox([M1], user="bob")
	t = ok(pop3.run(["USER bob", "PASS " + pw, "STAT", "QUIT"]))
	t = pop3.run(["USER bob", "PASS a: b c", "QUIT"])
	assert t[1].err, t


def test_missing_password_file(pop3):
	pop3.passwd.unlink()
	t = pop3.run(login() + ["QUIT"])
	assert t[1].err, t			# no login, and a log line says why
	assert str(pop3.passwd) in t.stderr, t


# ------------------------------------------------------------ command line

OPTIONS = ["--spool", "--auth", "--timeout", "--lock", "--pam-service",
    "--prelogin-user", "--min-uid", "--fail-delay", "--debug",
    "--version", "--help"]


def run_bin(pop3d_bin, *args):
	p = subprocess.run([pop3d_bin] + list(args), stdin=subprocess.DEVNULL,
	    capture_output=True, timeout=10, env=Pop3Env.env())
	sanitizer_check(p.stderr.decode("utf-8", "replace"))
	return p


@pytest.mark.parametrize("args", [["--bogus"], ["-x"], ["-t"],
    ["-t", "abc"], ["-t", "10x"], ["--timeout=-5"], ["-a", "nosuch"],
    ["--auth=passwd"], ["-l", "flock"], ["--lock=fcntl,nosuch"],
    ["--fail-delay=abc"], ["-m", "abc"], ["extra-argument"],
    ["-s"]])
def test_bad_option_exits_64(pop3d_bin, args):
	p = run_bin(pop3d_bin, *args)
	assert p.returncode == LIMITS["POP3_EX_USAGE"], p
	assert p.stderr.strip(), "no message on stderr"
	assert p.stdout == b"", "usage text went to the client"


@pytest.mark.parametrize("flag", ["--help", "-h"])
def test_help(pop3d_bin, flag):
	p = run_bin(pop3d_bin, flag)
	assert p.returncode == 0, p
	text = (p.stdout + p.stderr).decode()
	for o in OPTIONS:
		assert o in text, o
	for short in ("-s", "-a", "-t", "-l", "-P", "-u", "-m", "-f", "-d",
	    "-V", "-h"):
		assert re.search(r"(^|\s)%s\b" % short, text), short
	assert "600" in text and "/var/mail" in text, text


@pytest.mark.parametrize("flag", ["--version", "-V"])
def test_version(pop3d_bin, flag):
	p = run_bin(pop3d_bin, flag)
	assert p.returncode == 0, p
	text = (p.stdout + p.stderr).decode()
	hdr = (REPO / "pop3d.h").read_text()
	ver = re.search(r'POP3D_VERSION\s+"([^"]+)"', hdr).group(1)
	assert "pop3d" in text and ver in text, text


def test_short_and_long_options_together(pop3):
	pop3.write_mbox(THREE)
	argv_extra = ["--timeout", "30", "-l", "fcntl,dotlock", "-m", "0",
	    "-P", "pop3", "-u", "nobody"]
	t = ok(pop3.run(login() + ["STAT", "QUIT"], *argv_extra))
	assert stat(t, 2)[0] == 3


def test_readme_shows_the_help_text(pop3d_bin):
	"""The README's COMMAND LINE block is --help, word for word, and the
	README starts with the two set-up commands."""
	readme = (REPO / "README").read_text()
	p = run_bin(pop3d_bin, "--help")
	help_lines = p.stdout.decode().rstrip("\n").split("\n")
	block = [ln[4:] for ln in readme.split("\n") if ln.startswith("    ")]
	start = block.index(help_lines[0])
	assert block[start:start + len(help_lines)] == help_lines
	head = [ln.split()[:2] for ln in readme.split("\n")[:5] if ln.strip()]
	assert ["make", "demo"] in head and ["make", "check"] in head, head


# ------------------------------------------------------------ make demo

# make runs ./pop3d or builds its own (not POP3D_BIN): the first pass only.
@pytest.mark.plain_pass
def test_make_demo_runs_green():
	p = subprocess.run(["make", "demo"], cwd=REPO, capture_output=True,
	    timeout=300)
	out = p.stdout.decode("utf-8", "replace")
	# As root in a checkout that nobody can reach, demo.sh works in /tmp.
	for d in set(re.findall(r"(/tmp/pop3d-demo\.\w+)/", out)):
		shutil.rmtree(d, ignore_errors=True)
	assert p.returncode == 0, out + p.stderr.decode("utf-8", "replace")
	for c in ("USER demo", "PASS demo", "STAT", "LIST", "UIDL", "TOP 1 0",
	    "RETR 1", "DELE 1", "QUIT"):
		assert "C: " + c in out, out
	assert "-ERR" not in out, out
	assert out.count("S: +OK") >= 10, out


def user_tree(tmp_path):
	"""A copy of the checkout that a normal user owns; as root, that user
	is 65534.  Returns (top, popen keywords)."""
	os.chmod(tmp_path, 0o755)
	src = tmp_path / "src"
	shutil.copytree(REPO, src, symlinks=True, ignore=shutil.ignore_patterns(
	    ".git", "build", "__pycache__", ".pytest_cache"))
	kw = {"env": {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
	    "HOME": str(tmp_path)}}
	if ROOT:
		for p in [tmp_path] + list(tmp_path.rglob("*")):
			os.lchown(p, NOBODY, NOBODY)
		kw.update(user=NOBODY, group=NOBODY, extra_groups=[])
	return src, kw


@pytest.mark.plain_pass
def test_make_demo_as_non_root():
	"""make demo needs no root (as root, it runs as 65534 in a copy)."""
	tmp = tempfile.mkdtemp(prefix="pop3d-demo-user.", dir="/tmp")
	try:
		src, kw = user_tree(Path(tmp))
		p = subprocess.run(["make", "-C", str(src), "demo"],
		    capture_output=True, timeout=300, **kw)
		out = p.stdout.decode("utf-8", "replace")
		assert p.returncode == 0, out + p.stderr.decode()
		assert "== demo OK" in out and "setpriv" not in out, out
	finally:
		shutil.rmtree(tmp, ignore_errors=True)


@pytest.mark.plain_pass
def test_make_install_as_non_root():
	"""make install DESTDIR=... and make uninstall work for a normal user
	(as root: uid 65534 in a copy of the tree, so nothing of the checkout
	changes)."""
	tmp = tempfile.mkdtemp(prefix="pop3d-install.", dir="/tmp")
	try:
		install_as_user(Path(tmp))
	finally:
		shutil.rmtree(tmp, ignore_errors=True)


def install_as_user(tmp_path):
	src, kw = user_tree(tmp_path)
	dest = tmp_path / "dest"

	def make(*args):
		return subprocess.run(["make", "-C", str(src)] + list(args) +
		    ["DESTDIR=%s" % dest, "PREFIX=/usr"], capture_output=True,
		    timeout=300, **kw)

	p = make("install")
	assert p.returncode == 0, p.stdout.decode() + p.stderr.decode()
	want = {"usr/sbin/pop3d": 0o755, "usr/share/man/man8/pop3d.8": 0o644,
	    "etc/pam.d/pop3": 0o644}
	for f, mode in want.items():
		st = (dest / f).stat()
		assert st.st_mode & 0o7777 == mode, (f, oct(st.st_mode))
	p = subprocess.run([str(dest / "usr/sbin/pop3d"), "--version"],
	    capture_output=True, timeout=10)
	assert p.returncode == 0, p
	p = make("uninstall")
	assert p.returncode == 0, p.stdout.decode() + p.stderr.decode()
	for f in want:
		assert not (dest / f).exists(), f
