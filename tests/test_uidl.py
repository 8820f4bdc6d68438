"""UIDLs (README, "UIDL"): each one is the documented digest of its
message's From_ line and header, and a message keeps it while mail
arrives after it, whatever the last line of the file looked like.

Oracles: tests/refmbox.py's digest(), written from the README's rule
with hashlib (never from a pop3d run), and the UIDL the same message had
before the delivery.
"""

import hashlib
import os

import pytest

import refmbox
from conftest import LIMITS, login, mbox, stored_retr
from test_cache import HDR, SEALED, cdir, forge, hit, run, settle  # noqa: F401
from test_mbox_fromlines import _procmail

F = b"From a@example.org Mon Jan  1 00:00:00 2024"
G = b"From c@example.org Tue Jan  2 00:00:00 2024"
LONG = b"X-Long: " + b"a" * (64 * 1024)

# The last lines of a file whose last message has no empty line after
# its header (a header-only message), as LF lines: the CRLF variant
# turns each LF into CRLF.
TAILS = [
	(b"Subject: a", "a last line without a line end"),
	(b"Subject: a\r", "a last line that ends in a bare CR"),
	(b"Subject: a\n", "a last line with its line end"),
	(b"X: 1\nSubject: a", "two lines, the second without a line end"),
	(b"Subject: a\n\r", "a lone CR: the start of the empty line"),
	(b"Status: RO", "a left-out field without a line end"),
	(b"Subject: a\nX-UID: 7", "a left-out field last"),
	(b"Subject: a\n Status: x", "a continuation line without a line end"),
	(b"Status: RO\n more", "a left-out field's continuation last"),
	(b"", "a From_ line and nothing else"),
	(LONG[:64 * 1024 - 20], "a header just under the 64 KiB digested"),
	(LONG[:64 * 1024], "a header of exactly the 64 KiB digested"),
	(LONG, "a header over the 64 KiB digested"),
	(LONG[:64 * 1024 - 1] + b"\r", "a CR as the 64 KiBth octet"),
	(LONG[:64 * 1024 - 1], "the delivery's line end across the mark"),
	(LONG[:64 * 1024 - 3], "the empty line's CRLF across the mark"),
	(LONG[:64 * 1024 - 3] + b"\r", "a final CR, the empty line across it"),
	(LONG[:64 * 1024 - 3] + b"\n", "a line end, the empty line across it"),
	(LONG[:64 * 1024 - 2] + b"\n", "a line end up to the mark"),
]


def uidls(pop3, *extra):
	"""The UIDL listing; RETR of every message (whose stream check
	digests its header again) must send refmbox's octets."""
	vis = refmbox.visible(pop3.read_mbox())
	t = pop3.run(login() + ["UIDL"] + ["RETR %d" % (i + 1) for i in
	    range(len(vis))] + ["QUIT"], *extra)
	assert all(r.ok for r in t.replies), t
	for i, (_, octets) in enumerate(vis):
		assert t[3 + i].data == stored_retr(octets), i
	return [ln.split()[1] for ln in t[2].lines]


def file_with(tail, nl):
	return (F + nl + b"Subject: first" + nl + nl + b"first" + nl + nl +
	    F + nl + tail.replace(b"\n", nl))


def delivery(data, nl):
	"""What an appender of the README's model writes after data, in the
	file's line ends nl: a line end for a last line without one (LF
	after a bare CR), an empty line like that line's end, a message."""
	end = b"" if data.endswith(b"\n") else b"\n" if data.endswith(b"\r") \
	    else nl
	empty = b"\r\n" if (data + end).endswith(b"\r\n") else b"\n"
	return end + empty + G + nl + b"Subject: new" + nl + nl + b"new" + nl


@pytest.mark.parametrize("nl", [b"\n", b"\r\n"], ids=["lf", "crlf"])
@pytest.mark.parametrize("tail,what", TAILS, ids=[w for _, w in TAILS])
def test_uidl_kept_when_mail_is_appended(pop3, cdir, tail, what, nl):
	"""The header-only last message has refmbox's UIDL; after a delivery
	it keeps that UIDL (a client that leaves mail on the server would
	otherwise fetch it again), from the index cache and without it, and
	the delivery is a message of its own."""
	data = pop3.write_mbox(file_with(tail, nl))
	ref = refmbox.uidls(data)
	assert len(ref) == 2
	assert uidls(pop3, "--no-cache") == ref
	assert uidls(pop3, "--cache-dir", str(cdir)) == ref
	pop3.append_mbox(delivery(data, nl))
	after = refmbox.uidls(pop3.read_mbox())
	assert len(after) == 3 and after[:2] == ref
	assert uidls(pop3, "--no-cache") == after
	assert uidls(pop3, "--cache-dir", str(cdir)) == after


def test_uidls_against_reference(pop3):
	"""Header shapes a UIDL must digest as documented (every left-out
	field, in any case, with blanks before the colon and continuation
	lines; a continuation line first; CRLF; twins; headers around 64
	KiB): pop3d's UIDLs are refmbox's.  Ordinary messages are unchanged
	by the rule for a header cut short, so an upgrade keeps them."""
	skip = [b"Status: RO", b"x-status: A", b"X-UID: 9", b"X-Keywords: $x",
	    b"X-IMAP: 1 2", b"X-IMAPbase: 1 2", b"X-UIDL: planted",
	    b"Content-Length: 5", b"LINES : 3", b"status\t: O\n  folded"]
	msgs = [b"Subject: %d\n%s\nFrom: x\n\nbody\n" % (i, s)
	    for i, s in enumerate(skip)]
	msgs += [b" first line folded\nSubject: f\n\nbody\n",
	    b"Subject: crlf\r\nX-UID: 1\r\n\r\nbody\r\n",
	    b"Subject: twin\n\nbody\n", b"Subject: twin\n\nbody\n",
	    b"Subject: header only\n",
	    LONG[:64 * 1024 - 1] + b"\n\nbody\n", LONG + b"\n\nbody\n",
	    b"Subject: mixed\nX: 1\r\n\r\nbody\n"]
	for last in (b"", b"Subject: end", b"Subject: end\r\nX: y"):
		data = mbox(msgs) + (F + b"\n" + last if last else b"")
		pop3.write_mbox(data)
		ref = refmbox.uidls(data)
		assert len(set(ref)) == len(ref)
		assert uidls(pop3, "--no-cache") == ref


def test_cache_of_the_old_digest_is_not_used(pop3, cdir):
	"""A cache file of the format before the digest of a header cut short
	(version 2) holds that message's old digest: it must be a miss, or
	the session would list the old UIDL and refuse the RETR of the
	message as "rewritten" (its stream check digests by the new rule)."""
	n = 400
	data = pop3.write_mbox(mbox([b"Subject: %d\n\n%s" % (i, b"body\n" * 200)
	    for i in range(n)]) + F + b"\nSubject: a")
	settle()
	run(pop3, cdir)
	good = run(pop3, cdir)
	assert hit(good, data) and good.uidls == refmbox.uidls(data)
	idx = cdir / "index"
	b = bytearray(idx.read_bytes())
	old = hashlib.sha256(F + b"\nSubject: a").digest()[:16]
	at = HDR + 56 * n + 32
	assert bytes(b[at:at + 16]) != old
	b[at:at + 16] = old
	b[8] = 2
	st = os.stat(pop3.mailbox())
	idx.write_bytes(forge(bytes(b), st, b[SEALED]))
	a = run(pop3, cdir, retr=(n + 1,))
	assert not hit(a, data)
	assert a.uidls == refmbox.uidls(data)
	assert a.retr[n + 1] == stored_retr(refmbox.visible(data)[n][1])


def test_procmail_joins_a_header_without_line_end(pop3):
	"""What README and pop3d.8 say of an appender that writes no line
	end or no empty line: procmail puts its From_ line right after the
	last octet, so the delivery joins the header (no message of its own,
	a new UIDL); after an empty line it is a message of its own and the
	header-only message keeps its UIDL."""
	for tail, joined in ((b"Subject: a", True), (b"Subject: a\n", True),
	    (b"Subject: a\n\n", False)):
		data = pop3.write_mbox(file_with(tail, b"\n"))
		before = uidls(pop3, "--no-cache")
		_procmail(str(pop3.mailbox()), "bob@example.org",
		    b"Subject: new\n\nnew\n")
		after = uidls(pop3, "--no-cache")
		grown = pop3.read_mbox()
		assert grown.startswith(data) and len(grown) > len(data)
		assert after == refmbox.uidls(grown)
		if joined:
			assert len(after) == 2 and after[1] != before[1]
		else:
			assert len(after) == 3 and after[:2] == before


@pytest.mark.parametrize("shift", [0, 1])
def test_header_line_ending_where_a_read_ends(pop3, shift):
	"""The index reads a mailbox in blocks of MD_BLOCK + MD_HASH_MAX and a
	little more; a header that runs past the end of a read and has a line
	end exactly there was digested without its later lines (a UIDL other
	than the documented one, and RETR refused as "cannot read": the
	stream check digests the whole header).  A header of 2-octet lines
	across every offset within 4 KiB of that end, both parities: the
	UIDLs are refmbox's and every RETR sends the stored octets."""
	end = LIMITS["MD_BLOCK"] + LIMITS["MD_HASH_MAX"] + \
	    2 * LIMITS["MD_FROM_MAX"]		# about where the first read ends
	msg = b"Subject: %05d\n\n" + b"x" * 70 + b"\n"
	n = (end - 16 * 1024) // len(mbox([msg % 0]))
	head = mbox([msg % i for i in range(n)])
	data = head + F + b"\n" + b"X: " + b"a" * shift + b"\n" + \
	    b"b\n" * (16 * 1024) + b"Subject: after\n\nbody\n"
	assert len(head) < end - 8 * 1024 and len(data) > end + 8 * 1024
	pop3.write_mbox(data)
	vis = refmbox.visible(data)
	t = pop3.run(login() + ["UIDL", "RETR %d" % len(vis), "QUIT"],
	    "--no-cache")
	assert all(r.ok for r in t.replies), t
	assert [ln.split()[1] for ln in t[2].lines] == refmbox.uidls(data)
	assert t[3].data == stored_retr(vis[-1][1])


def test_twin_of_a_hidden_pseudo_message(pop3):
	"""A copy of the hidden pseudo-message later in the file (a mailbox
	and its backup put together; the copy differs only in a left-out
	field, so it has the same digest) is an ordinary message, and the
	first of its digest that a client sees: no "-1" (found by a review:
	refmbox counted the hidden one)."""
	p = (b"From MAILER-DAEMON Mon Jan  1 00:00:00 2024\nDate: x\n"
	    b"From: Mail System Internal Data <MAILER-DAEMON@h>\n"
	    b"Subject: DON'T DELETE THIS MESSAGE -- FOLDER INTERNAL DATA\n"
	    b"X-IMAP: 1 2\n\nbody\n\n")
	data = p + p.replace(b"X-IMAP: 1 2", b"X-IMAPbase: 1 3") + F + \
	    b"\nSubject: x\n\nb\n"
	pop3.write_mbox(data)
	ref = refmbox.uidls(data)
	assert len(ref) == 2 and "-" not in ref[0]
	assert uidls(pop3, "--no-cache") == ref
