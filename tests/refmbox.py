"""A reference mbox parser for the tests, written from the rule that README
and pop3d.8 document (never by asking pop3d): where messages begin, what
their octets and sizes are, and which first message is the hidden
"FOLDER INTERNAL DATA" pseudo-message, and each message's UIDL.

The From_ rule: a message starts at the first line of the file (it must
start with "From " and its LF must come within MD_FROM_MAX octets) and at
every later line that follows an empty line ("\\n\\n" or "\\n\\r\\n") and
is a From_ line: "From ", a sender (any octets, none too), blanks (space,
tab) and a date at the end of the line, "Www Mmm dd hh:mm[:ss] yyyy",
with at most two time zone tokens (+hhmm, -hhmm, or 1 to 6 letters)
before or after the year, optionally followed by "remote from HOST";
a CR may come before the LF; the whole line, LF included, at most
MD_FROM_MAX octets.  This is one regular expression here (pop3d reads the
line backwards, token by token): two ways to the same rule.
"""

import hashlib
import re
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

_B = rb"[ \t]+"
_WDAY = rb"(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun)"
_MON = rb"(?:Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec)"
_DAY = rb"(?:0[1-9]|[1-9][0-9]?)"
_TIME = rb"[0-9]{1,2}:[0-9]{2}(?::[0-9]{2})?"
_ZONE = rb"(?:[+-][0-9]{4}|[A-Za-z]{1,6})"
_YEAR = rb"[0-9]{4}"
_TAIL = (rb"(?:(?:" + _B + _ZONE + rb"){0,2}" + _B + _YEAR +
    rb"|(?:" + _B + _ZONE + rb")?" + _B + _YEAR + _B + _ZONE + rb")")
FROM_RE = re.compile(
    rb"From (?:[^\n]*[ \t])?" + _WDAY + _B + _MON + _B + _DAY + _B + _TIME +
    _TAIL + rb"(?:" + _B + rb"remote" + _B + rb"from" + _B +
    rb"[^ \t\n]+)?[ \t]*\Z")


def _limit(name):
	m = re.search(rb"^#define\s+" + name.encode() + rb"\s+(\d+)",
	    (REPO / "pop3d.h").read_bytes(), re.M)
	return int(m.group(1))


FROM_MAX = _limit("MD_FROM_MAX")
HASH_MAX = 64 * 1024		# MD_HASH_MAX, checked against pop3d.h below
assert re.search(rb"^#define\s+MD_HASH_MAX\s+\(64 \* 1024\)",
    (REPO / "pop3d.h").read_bytes(), re.M)


def is_from_line(line):
	"""Is line (bytes, with its LF) a From_ line that starts a message
	after an empty line?  One CR before the LF is the line end's; any
	other is part of the line (in a HOST: any octets but blanks)."""
	if len(line) > FROM_MAX or not line.endswith(b"\n"):
		return False
	line = line[:-2] if line.endswith(b"\r\n") else line[:-1]
	return FROM_RE.match(line) is not None


def _lines(data):
	"""(offset, line with its LF) of every line; the last may lack LF."""
	out, pos = [], 0
	while pos < len(data):
		nl = data.find(b"\n", pos)
		end = len(data) if nl < 0 else nl + 1
		out.append((pos, data[pos:end]))
		pos = end
	return out


def boundaries(data):
	"""Offsets where messages start, or None if data is not an mbox."""
	if not data.startswith(b"From ") or b"\n" not in data[:FROM_MAX]:
		return None
	starts = [0]
	for off, ln in _lines(data)[1:]:
		if (data[off - 2:off] == b"\n\n" or
		    data[off - 3:off] == b"\n\r\n") and is_from_line(ln):
			starts.append(off)
	return starts


def split(data):
	"""[(from_line without its line end, octets)] of every message."""
	starts = boundaries(data)
	if starts is None:
		return None
	msgs = []
	for i, s in enumerate(starts):
		lf = data.index(b"\n", s)
		frm = data[s:lf]
		if frm.endswith(b"\r"):
			frm = frm[:-1]
		d = lf + 1
		if i + 1 < len(starts):
			n = starts[i + 1]
			end = n - (1 if data[n - 2:n] == b"\n\n" else 2)
		else:
			end = len(data)
			tail = data[d - 1:]
			if tail.endswith(b"\n\n"):
				end -= 1
			elif tail.endswith(b"\n\r\n"):
				end -= 2
		msgs.append((frm, data[d:end]))
	return msgs


def size(octets):
	"""LIST's size of a message: a bare LF counts 2, and a message that
	does not end in LF gets a line end (1 after a bare CR, else 2)."""
	n = len(octets) + len(re.findall(rb"(?<!\r)\n", octets))
	if octets and not octets.endswith(b"\n"):
		n += 1 if octets.endswith(b"\r") else 2
	return n


def header(octets):
	"""The header lines of a message, up to the first empty line."""
	out = []
	for _, ln in _lines(octets):
		if ln in (b"\n", b"\r\n"):
			break
		out.append(ln)
	return out


_SUBJ = b"DON'T DELETE THIS MESSAGE -- FOLDER INTERNAL DATA"


def is_pseudo(frm, octets):
	"""The hidden pseudo-message (only ever the first of the file): from
	MAILER-DAEMON, with X-IMAP or X-IMAPbase and the FOLDER INTERNAL DATA
	subject, without Received, Return-Path or Delivered-To: the fields
	as far as they lie in the first HASH_MAX octets of the header (a
	line cut there is read up to the cut)."""
	names, subj, at = set(), False, 0
	for ln in header(octets):
		if at >= HASH_MAX:
			break
		ln, at = ln[:HASH_MAX - at], at + len(ln)
		if ln[:1] in (b" ", b"\t") or b":" not in ln:
			continue
		name, val = ln.split(b":", 1)
		name = name.rstrip(b" \t").lower()
		names.add(name)
		if name == b"subject" and \
		    val.lstrip(b" \t").rstrip(b" \t\r\n") == _SUBJ:
			subj = True
	return (re.match(rb"From MAILER-DAEMON[ \t]", frm) is not None and
	    subj and bool(names & {b"x-imap", b"x-imapbase"}) and
	    not names & {b"received", b"return-path", b"delivered-to"})


def visible(data):
	"""The messages a POP3 client sees: split() less a hidden first one."""
	msgs = split(data)
	if msgs and is_pseudo(*msgs[0]):
		msgs = msgs[1:]
	return msgs


# The fields a UIDL leaves out (README, "UIDL"), with their continuations.
SKIP = {b"status", b"x-status", b"x-uid", b"x-keywords", b"x-imap",
    b"x-imapbase", b"x-uidl", b"content-length", b"lines"}


def _skipped(ln):
	return b":" in ln and \
	    ln.split(b":", 1)[0].rstrip(b" \t").lower() in SKIP


def digest(data, start):
	"""The 16 octets of a UIDL of the message at offset start of data:
	SHA-256 over its From_ line (line end included) and its header, up
	to the first empty line and at most HASH_MAX octets (a line cut at
	the mark counts up to the mark), less the SKIP fields.  A header cut
	short by the end of the file (a last message with no empty line) is
	taken as a delivery appended after it leaves it, one that ends the
	last line and writes an empty line: a last line without a line end
	gets one (LF after a CR; else CRLF when the line before it, or the
	From_ line, ends in CRLF; else LF), the empty line ends the header
	(CRLF after a CRLF, else LF), and a lone CR starting the last line
	starts the empty line; all as far as HASH_MAX reaches."""
	lf = data.index(b"\n", start)
	h = hashlib.sha256(data[start:lf + 1])
	rest = data[lf + 1:]
	cut = len(rest) >= HASH_MAX
	rest = rest[:HASH_MAX]
	crlf = data[lf - 1:lf] == b"\r"
	skip, last = False, None
	for _, ln in _lines(rest):
		if ln in (b"\n", b"\r\n") or (ln == b"\r" and not cut):
			return h.digest()[:16]
		if ln[:1] not in (b" ", b"\t"):
			skip = _skipped(ln)
		if not skip:
			h.update(ln)
		if ln.endswith(b"\n"):
			crlf = ln.endswith(b"\r\n")
		last = ln
	if cut or last is None:
		return h.digest()[:16]
	# What the delivery adds, as far as it lies within HASH_MAX: the
	# line end, then the empty line, whose CR is a line of its own when
	# the mark falls between it and its LF.
	n = len(rest)
	if not last.endswith(b"\n"):
		e = b"\n" if last.endswith(b"\r") or not crlf else b"\r\n"
		crlf = crlf or last.endswith(b"\r")
		e = e[:HASH_MAX - n]
		if not skip:
			h.update(e)
		n += len(e)
	if crlf and n + 1 == HASH_MAX:
		h.update(b"\r")
	return h.digest()[:16]


def uidls(data):
	"""The UIDL of every message a client sees: the digest in hex, and
	"-N" for the Nth earlier one of them with the same digest (a hidden
	pseudo-message is not one of them)."""
	starts = boundaries(data)
	if starts is None:
		return None
	msgs = split(data)
	if msgs and is_pseudo(*msgs[0]):
		starts = starts[1:]
	seen, out = {}, []
	for s in starts:
		d = digest(data, s)
		n = seen.get(d, 0)
		seen[d] = n + 1
		out.append(d.hex() + ("-%d" % n if n else ""))
	return out
