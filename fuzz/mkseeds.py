#!/usr/bin/python3
"""Writes the hand-made seed corpora of fuzz/corpus/TARGET/ (run once;
the files are in the repository, this says where each one comes from)."""

import base64
import os

HERE = os.path.dirname(os.path.abspath(__file__))
FROM = b"From sender@example.org Thu Nov 26 12:00:00 2026\n"


def put(target, name, data):
	d = os.path.join(HERE, "corpus", target)
	os.makedirs(d, exist_ok=True)
	with open(os.path.join(d, name), "wb") as f:
		f.write(data)


def crlf(*lines):
	return b"".join(ln + b"\r\n" for ln in lines)


# ---- fuzz_proto: 3 control octets (read size, write budget, stub flags),
# then the client's octets.
LOGIN = crlf(b"USER alice", b"PASS pw")
PLAIN = base64.b64encode(b"\0alice\0pw")
put("proto", "full", b"\0\0\0" + crlf(b"CAPA") + LOGIN + crlf(b"STAT",
    b"LIST", b"LIST 2", b"UIDL", b"UIDL 3", b"RETR 1", b"TOP 2 1",
    b"TOP 3 0", b"DELE 1", b"RSET", b"DELE 2", b"NOOP", b"CAPA", b"QUIT"))
put("proto", "plain", b"\0\0\0" + crlf(b"AUTH", b"AUTH PLAIN " + PLAIN,
    b"RETR 2", b"QUIT"))
put("proto", "plain-cont", b"\0\0\0" + crlf(b"AUTH PLAIN", PLAIN,
    b"LIST 1", b"QUIT"))
put("proto", "plain-cancel", b"\0\0\0" + crlf(b"AUTH PLAIN", b"*",
    b"AUTH PLAIN =", b"AUTH X", b"QUIT"))
put("proto", "failures", b"\0\0\0" + crlf(b"PASS x", b"USER bob",
    b"PASS x", b"USER alice", b"PASS no", b"USER alice", b"PASS pw",
    b"STAT", b"QUIT"))
put("proto", "bytewise", b"\x01\0\0" + LOGIN + crlf(b"LIST", b"QUIT"))
put("proto", "gone", b"\0\x05\0" + LOGIN + crlf(b"RETR 3", b"QUIT"))
put("proto", "open-fail", b"\0\0\x03" + LOGIN + crlf(b"STAT"))
put("proto", "update-fail", b"\0\0\x08" + LOGIN + crlf(b"DELE 1",
    b"QUIT"))
put("proto", "stream-changed", b"\0\0\x10" + LOGIN + crlf(b"RETR 4",
    b"STAT"))
put("proto", "stream-mid", b"\0\0\x20" + LOGIN + crlf(b"TOP 4 2",
    b"RETR 4", b"STAT"))
put("proto", "empty", b"\0\0\x40" + LOGIN + crlf(b"LIST", b"UIDL",
    b"RETR 1", b"QUIT"))
put("proto", "many", b"\0\0\x80" + LOGIN + crlf(b"LIST", b"UIDL",
    b"DELE 4999", b"LIST 4999", b"QUIT"))
put("proto", "numbers", b"\0\0\0" + LOGIN + crlf(b"LIST 01", b"LIST +1",
    b"LIST -1", b"LIST 0", b"LIST 1x", b"LIST 18446744073709551617",
    b"LIST 4294967297", b"TOP 1 99999999999999999999", b"RETR", b"DELE 1 2",
    b"QUIT"))
put("proto", "wire", b"\0\0\0" + b"X" * 300 + b"\r\n" + b"NO\0OP\r\n" +
    b"CAPA\rCAPA\n" + b"user alice\n" + b"pass pw\n" + b"stat\r\n" +
    b"QUIT")

# ---- fuzz_plain: one response line.
for name, s in [("plain", PLAIN), ("authzid", base64.b64encode(
    b"alice\0alice\0pw")), ("empty", b"="), ("cancel", b"*"),
    ("spaces", base64.b64encode(b"\0alice\0 a b ")),
    ("bad", b"AGFsaWNl=AHB3"), ("twonul", base64.b64encode(b"\0\0pw"))]:
	put("plain", name, s)

# ---- fuzz_mbox: mailbox files.  "\x01P" a b: a*4096+b filler octets.
M1 = b"From: bob@example.org\nSubject: one\n\nFirst.\n"
M2 = b"Subject: dots\n\n.\n..two\n.dot\nFrom here on\n>From quoted\n"
put("mbox", "three", FROM + M1 + b"\n" + FROM + M2 + b"\n" +
    b"From a Mon Jan  1 00:00 2001\nSubject: x\n\nlast")
put("mbox", "crlf", (FROM + M1 + b"\n" + FROM + M2).replace(b"\n",
    b"\r\n"))
put("mbox", "pseudo", b"From MAILER-DAEMON Thu Nov 26 12:00:00 2026\n"
    b"Subject: DON'T DELETE THIS MESSAGE -- FOLDER INTERNAL DATA\n"
    b"X-IMAP: 1 2\n\nThis text is part of the internal format.\n\n" +
    FROM + M1 + b"\n" + FROM + M1)
put("mbox", "twins", FROM + M1 + b"\n" + FROM + M1 + b"\n" + FROM + M1)
put("mbox", "binary", FROM + b"Subject: b\n\nnul\0x\nbare\rcr\r\n\xff\n"
    b"\r\n\r\nFrom x Fri Feb 29 23:59:59 MET DST 2008 remote from y\r\n"
    b"\n\n")
put("mbox", "only-from", FROM)
put("mbox", "dates", FROM + b"\n\n" + b"From a Mon Jan 1 1:02 +0100 2000\n"
    b"\n\nFrom b Tue Feb 12 12:34:56 2020 x\n\nFrom c Wed Mar  3 00:00:00 "
    b"PST 1999\nStatus: RO\nX-UID: 4\n\nbody\n\n")
put("mbox", "padded", FROM + b"Subject: big\n\n" + b"\x01P\x3f\xf0" +
    b"\n\n" + FROM + b"Subject: next\n\n.x\n\x01P\x00\x40last\n")
put("mbox", "long-header", FROM + b"X-Long: " + b"\x01P\x10\x00" +
    b"\nSubject: s\n\nbody\n\n" + FROM + b"\n")
# A From_ line of 450 octets (a long bounce address) near the end of the
# indexer's first read: "\x01B" k puts it at FZ_EDGE - 8192 + 64k.
LONG = (b"From bounce+" + b"s" * 400 + b"=example.org@lists.example.org "
    b"Thu Nov 26 12:00:00 2026\n")
put("mbox", "edge-from", FROM + b"Subject: a\n\n\x01B\x7c\n\n" + LONG +
    b"Subject: b\n\nbody\n")
put("mbox", "edge-header", FROM + b"Subject: a\n\n\x01B\x7f\n\n" + LONG +
    b"Subject: b\nX-Long: " + b"h" * 500 + b"\n\nbody\n")
put("mbox", "not-mbox", b"Subject: no From_ line\n\nbody\n")
# From_ lines that MDAs and MUAs write (issue 11), and body lines that
# only look like them.
D = b"Sun Dec  6 01:04:05 2026"
put("mbox", "fromlines", FROM + M1 + b"".join(b"\n" + ln + b"\n" + M1
    for ln in (b'From "x y"@evil.example  ' + D, b"From  " + D,
    b"From b@example.org " + D + b" -0500", b"From - " + D,
    b"From b " + D + b" PST remote from h", b"From here on",
    b"From b@example.org", b"From b " + D + b" x", b"From   " + D)))
# A delivery that carries the pseudo-message marks: not hidden.
put("mbox", "planted", b"From MAILER-DAEMON Thu Nov 26 12:00:00 2026\n"
    b"Received: from evil.example by mx.example.org\n"
    b"Subject: DON'T DELETE THIS MESSAGE -- FOLDER INTERNAL DATA\n"
    b"X-IMAPbase: 1 2\n\nplanted\n\n" + FROM + M1)

# ---- fuzz_passwd: password files.
put("passwd", "typical", b"# comment\n\nalice:$6$salt$hash\n"
    b"bob:$y$j9T$x$y:1000:1000\ncarol:$2b$05$z:1001:1001:/var/mail/c:x\n"
    b"alice:second\n")
put("passwd", "malformed", b"alice\n:x\n.alice:x\n-bob:x\nbob:\n"
    b"bob:h:1\nbob:h:1:2:\nbob:h:x:1\nbob:h:1:4294967295\n"
    b"bob:h:01:002:rel/path\nbob:h:1:2:/ok\n\tx:y\n")
put("passwd", "long", b"alice:" + b"h" * 300 + b"\nbob:" + b"x" * 5000 +
    b"\nbob:h\n" + b"dave:h\0\ndave:h2")

# ---- fuzz_proxy: 1 control octet (read size), then the proxy's octets.
import struct  # noqa: E402

SIG = b"\r\n\r\n\0\r\nQUIT\n"
V4 = bytes([192, 0, 2, 10, 192, 0, 2, 1]) + struct.pack("!HH", 56324, 110)
V6 = bytes(15) + b"\x10" + bytes(15) + b"\x01" + struct.pack("!HH", 1, 2)
AFTER = b"USER alice\r\nPASS pw\r\n"
put("proxy", "v1-tcp4", b"\0PROXY TCP4 192.0.2.10 192.0.2.1 56324 110\r\n" +
    AFTER)
put("proxy", "v1-tcp6", b"\x01PROXY TCP6 2001:db8::10 2001:db8::1 1 2\r\n" +
    AFTER)
put("proxy", "v1-unknown", b"\0PROXY UNKNOWN\r\n" + AFTER)
put("proxy", "v1-107", b"\x05PROXY UNKNOWN " + b"x" * 91 + b"\r\n" + AFTER)
put("proxy", "v2-inet", b"\0" + SIG + b"\x21\x11\x00\x0c" + V4 + AFTER)
put("proxy", "v2-inet6", b"\x03" + SIG + b"\x21\x21\x00\x24" + V6 + AFTER)
put("proxy", "v2-local", b"\0" + SIG + b"\x20\x00\x00\x00" + AFTER)
put("proxy", "v2-tlv", b"\x07" + SIG + b"\x21\x11\x00\x17" + V4 +
    b"\x04\x00\x02ab\x05\x00\x03uid" + AFTER)
put("proxy", "v2-unix", b"\0" + SIG + b"\x21\x31\x00\xd8" + bytes(216) +
    AFTER)

# ---- fuzz_cache: 1 control octet (the mode, mod 3), then a cache file
# (modes 0 and 1) or a mailbox (mode 2).  Mode 2: each mbox seed, and the
# target's fixed mailbox (FZ_MBOX of fuzz_cache.c).  Modes 0 and 1:
# cache-raw and cache-forged are the cache file of FZ_MBOX that mode 2
# writes, saved by running the target on mbox-fixed with
# FUZZ_CACHE_OUT=FILE (its device and inode are another run's: mode 0
# refuses it at the header, mode 1 puts this run's in).
for name in sorted(os.listdir(os.path.join(HERE, "corpus", "mbox"))):
	with open(os.path.join(HERE, "corpus", "mbox", name), "rb") as f:
		put("cache", "mbox-" + name, b"\x02" + f.read())
