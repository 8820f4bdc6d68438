#!/usr/bin/python3
"""genmbox.py: a deterministic, seeded mbox generator for `make bench`.

Writes an mboxo spool as Debian's MDAs write it: each message starts with a
real From_ line ("From sender@example.org Thu Nov  6 12:00:00 2026", ctime
style, day padded with a space), is followed by an empty line, and every
body line starting with "From " is stored as ">From ".  Bodies contain lines
starting with "." and ">From ", 8-bit text, long lines (several KB), and
base64 attachments; message sizes are long-tailed from 500 bytes to 20 MB.

Sizes are drawn by stratified sampling of a fixed quantile curve (then
shuffled), so every mailbox of a given kind has the same size profile and
the same seed gives the same bytes on every run and every machine.

Kinds:
  tiny    3 small messages (the per-session benchmark)
  S       1,000 messages, ~15 MB
  M       20,000 messages, ~350 MB
  L       100,000 messages, ~1.7 GB
  mem1k   100 messages, the largest 1 KB (memory check)
  mem1g   the same 100 with message 50 replaced by a 1 GB one
  big4g   100 small messages and five of 900 MiB each: 4.7 GB

Usage: genmbox.py KIND OUTPUT [--seed N] [--count N]
Writes OUTPUT, OUTPUT.meta (JSON: messages, bytes, largest, seed) and
OUTPUT.idx (the offset of every From_ line, then the file size).
"""

import argparse
import base64
import bisect
import json
import os
import random
import sys

KINDS = {"tiny": 3, "S": 1000, "M": 20000, "L": 100000,
	 "mem1k": 100, "mem1g": 100, "big4g": 105}

# Quantile curve of message sizes (p, bytes), log-linear in between:
# a median of 3 KB (plain replies), a tenth above 16 KB (attachments),
# one in a thousand above 1 MB, up to 20 MB.  Mean about 17 KB.
QUANTILES = [(0.0, 500), (0.5, 3000), (0.8, 8000), (0.9, 16000),
	     (0.97, 50000), (0.99, 150000), (0.999, 900000),
	     (1.0, 20000000)]

MAXLINE_B64 = 76
WDAYS = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"]
MONTHS = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep",
	  "Oct", "Nov", "Dec"]
WORDS = ("the of and to a in is you that it he was for on are as with his "
	 "they at be this have from or one had by word but not what all were "
	 "we when your can said there use an each which she do how their if "
	 "will up other about out many then them these so some her would make "
	 "like him into time has look two more write go see number no way "
	 "could people my than first water been call who oil its now find "
	 "long down day did get come made may part over new sound take only "
	 "little work know place year live me back give most very after thing "
	 "our just name good sentence man think say great where help through "
	 "much before line right too mean old any same tell boy follow came "
	 "want show also around form three small set put end does another well "
	 "large must big even such because turn here why ask went men read "
	 "need land different home us move try kind hand picture again change "
	 "off play spell air away animal house point page letter mother answer "
	 "found study still learn should america world high every near add "
	 "food between own below country plant last school father keep tree "
	 "never start city earth eye light thought head under story saw left "
	 "server mailbox report invoice meeting schedule release patch build "
	 "kernel budget review draft attached please regards thanks tomorrow "
	 "Müller café naïve Zürich résumé déjà über Straße").split()
NAMES = ["Alice Martin", "Bob Stone", "Carol Nguyen", "Dave O'Brien",
	 "Eve Kowalski", "Frank Müller", "Grace Hopper", "Heidi Klum",
	 "Ivan Petrov", "Judy Garcia", "Mallory Smith", "Niaj Patel",
	 "Olivia Rossi", "Peggy Chen", "Rupert Jones", "Sybil Dubois",
	 "Trent Yamada", "Victor Hugo", "Walter White", "Zoë Andersen"]
DOMAINS = ["example.org", "example.com", "example.net", "mail.example.org",
	   "lists.example.com", "corp.example.net", "uni.example.edu",
	   "shop.example.com"]
MAILERS = ["Mutt/2.2.9 (2022-11-12)", "Thunderbird/115.5.0",
	   "Microsoft Outlook 16.0", "Apple Mail (2.3731.700.6)",
	   "Roundcube Webmail/1.6.5", "Evolution 3.46.4-2"]
ATTACH = [("application/pdf", "report-{}.pdf"),
	  ("image/jpeg", "IMG_{}.jpg"), ("application/zip", "backup-{}.zip"),
	  ("image/png", "screenshot-{}.png"),
	  ("application/vnd.openxmlformats-officedocument."
	   "wordprocessingml.document", "draft-{}.docx"),
	  ("application/octet-stream", "data-{}.bin")]


def quantile(p):
	"""Message size at quantile p of the curve (log-linear)."""
	for (p0, x0), (p1, x1) in zip(QUANTILES, QUANTILES[1:]):
		if p <= p1:
			t = (p - p0) / (p1 - p0)
			return int(x0 * (x1 / x0) ** t)
	return QUANTILES[-1][1]


def mboxo_escape(line):
	"""mboxo: a body line starting with "From " is stored as ">From "."""
	return ">" + line if line.startswith("From ") else line


class Gen:
	def __init__(self, seed):
		self.rng = random.Random(seed)
		self.seed = seed
		self.t = 1704067200		# 2024-01-01 00:00:00 UTC
		self._text_pool()
		self._long_pool()
		self._b64_pool()

	def words(self, n):
		r = self.rng
		return " ".join(r.choice(WORDS) for _ in range(n))

	def _text_pool(self):
		"""About 4 MB of wrapped text lines with the special cases in
		their real proportions; messages take slices of it."""
		r = self.rng
		lines = []
		while len(lines) < 60000:
			x = r.random()
			if x < 0.002:
				lines.append(".")	# would end a message unstuffed
			elif x < 0.007:
				lines.append("." + self.words(r.randint(1, 8)))
			elif x < 0.008:
				lines.append(".." + self.words(r.randint(1, 5)))
			elif x < 0.011:
				# An unescaped "From " line: the MDA escapes it.
				lines.append("From " + self.words(r.randint(2, 9)))
			elif x < 0.013:
				# Already quoted ">From ": mboxo stores it as is.
				lines.append(">From " + self.words(r.randint(2, 9)))
			elif x < 0.06:
				lines.append("> " + self.words(r.randint(3, 12)))
			elif x < 0.14:
				lines.append("")
			elif x < 0.141:
				lines.append("-- ")
			elif x < 0.142:
				lines.append("From: " + r.choice(NAMES))
			else:
				n = r.randint(4, 14)
				lines.append(self.words(n))
		lines = [mboxo_escape(l) + "\n" for l in lines]
		text = "".join(lines).encode("utf-8")
		self.text = text
		# Offsets of line starts, for slicing whole lines.
		offs = [0]
		pos = 0
		while True:
			pos = text.find(b"\n", pos) + 1
			if pos == 0 or pos >= len(text):
				break
			offs.append(pos)
		self.text_offs = offs

	def _long_pool(self):
		"""One 128 KB line of words: long lines are slices of it."""
		self.long = self.words(24000).encode("utf-8")[:131072]

	def _b64_pool(self):
		"""64 MB of base64 lines (76 columns) from seeded random bytes."""
		raw = self.rng.randbytes(48 * 1024 * 1024)
		self.b64 = base64.encodebytes(raw)	# 76-column lines
		self.b64_lines = len(self.b64) // (MAXLINE_B64 + 1)

	def text_body(self, size):
		"""Whole lines of the text pool, about size bytes."""
		out = []
		r = self.rng
		while size > 0:
			i = r.randrange(len(self.text_offs) - 1)
			start = self.text_offs[i]
			end = start + size
			j = bisect.bisect_left(self.text_offs, end)
			if j >= len(self.text_offs):
				j = len(self.text_offs) - 1
			chunk = self.text[start:self.text_offs[j]]
			if not chunk:
				chunk = self.text[start:]
			out.append(chunk)
			size -= len(chunk)
		return b"".join(out)

	def long_line(self, size):
		r = self.rng
		size = min(size, len(self.long) - 1)
		start = self.long.find(b" ", r.randrange(len(self.long) - size)) + 1
		line = self.long[start:start + size]
		return b"<p>" + line + b"</p>\n"

	def b64_body(self, size):
		"""size bytes (rounded to whole lines) of base64 lines."""
		r = self.rng
		per = MAXLINE_B64 + 1
		want = max(1, size // per)
		out = []
		while want > 0:
			n = min(want, self.b64_lines)
			i = r.randrange(self.b64_lines - n + 1)
			out.append(self.b64[i * per:(i + n) * per])
			want -= n
		return b"".join(out)

	def dates(self):
		"""From_ date (ctime, UTC) and the RFC 5322 Date of one message."""
		t = self.t
		days, secs = divmod(t, 86400)
		# Civil date from days since 1970-01-01 (Howard Hinnant).
		z = days + 719468
		era = z // 146097
		doe = z - era * 146097
		yoe = (doe - doe // 1460 + doe // 36524 - doe // 146096) // 365
		y = yoe + era * 400
		doy = doe - (365 * yoe + yoe // 4 - yoe // 100)
		mp = (5 * doy + 2) // 153
		d = doy - (153 * mp + 2) // 5 + 1
		m = mp + 3 if mp < 10 else mp - 9
		y += m <= 2
		wd = WDAYS[(days + 3) % 7]	# 1970-01-01 was a Thursday
		hh, mm, ss = secs // 3600, secs // 60 % 60, secs % 60
		ctime = "%s %s %2d %02d:%02d:%02d %d" % (wd, MONTHS[m - 1], d,
		    hh, mm, ss, y)
		rfc = "%s, %d %s %d %02d:%02d:%02d +0000" % (wd, d,
		    MONTHS[m - 1], y, hh, mm, ss)
		return ctime, rfc

	def headers(self, idx, ctype, extra=()):
		r = self.rng
		self.t += r.randint(1, 1800)
		ctime, rfc = self.dates()
		name = r.choice(NAMES)
		local = name.split()[0].lower().replace("ö", "o").replace(
		    "ë", "e")
		dom = r.choice(DOMAINS)
		sender = "%s@%s" % (local, dom)
		ip = "192.0.2.%d" % r.randint(1, 254)
		qid = "%X" % r.getrandbits(40)
		h = ["From %s %s" % (sender, ctime),
		     "Return-Path: <%s>" % sender,
		     "Delivered-To: bench@example.org",
		     "Received: from mx%d.%s (mx%d.%s [%s])\n"
		     "\tby mail.example.org (Postfix) with ESMTPS id %s\n"
		     "\tfor <bench@example.org>; %s" % (r.randint(1, 4), dom,
		     r.randint(1, 4), dom, ip, qid, rfc)]
		for _ in range(r.randint(0, 3)):
			h.append("Received: from [198.51.100.%d] (helo=client)\n"
			    "\tby smtp.%s with esmtpsa (TLS1.3) id %X; %s" %
			    (r.randint(1, 254), dom, r.getrandbits(48), rfc))
		if r.random() < 0.4:
			sig = base64.b64encode(r.randbytes(256)).decode()
			h.append("DKIM-Signature: v=1; a=rsa-sha256; c=relaxed/"
			    "relaxed; d=%s; s=sel1;\n\th=from:to:subject:date:"
			    "message-id; bh=%s;\n\tb=%s\n\t %s" % (dom, sig[:44],
			    sig[:172], sig[172:]))
		h.append("Message-ID: <%d.%012x@%s>" % (idx, r.getrandbits(48),
		    dom))
		h.append("Date: " + rfc)
		h.append('From: "%s" <%s>' % (name, sender))
		if r.random() < 0.05:
			to = ",\n\t".join("%s%d@%s" % (r.choice(NAMES).split()[0]
			    .lower(), i, r.choice(DOMAINS))
			    for i in range(r.randint(10, 60)))
			h.append("To: bench@example.org,\n\t" + to)
		else:
			h.append("To: Bench User <bench@example.org>")
		if r.random() < 0.2:
			h.append("Cc: %s <%s@%s>" % (r.choice(NAMES), "cc",
			    r.choice(DOMAINS)))
		subj = self.words(r.randint(2, 9))
		if r.random() < 0.1:
			subj = "=?UTF-8?B?%s?=" % base64.b64encode(
			    subj.encode()).decode()
		elif r.random() < 0.3:
			subj = "Re: " + subj
		h.append("Subject: " + subj)
		h.append("MIME-Version: 1.0")
		h.append("Content-Type: " + ctype)
		h.extend(extra)
		h.append(("User-Agent: " if r.random() < 0.5 else "X-Mailer: ")
		    + r.choice(MAILERS))
		if r.random() < 0.3:
			h.append("Status: RO")
		return ("\n".join(h) + "\n\n").encode("utf-8")

	def small_message(self, idx, size):
		"""A message of at most size bytes (>= 500) with the essential
		headers only: the memory check's "largest is 1 KB" mailbox."""
		r = self.rng
		self.t += r.randint(1, 1800)
		ctime, rfc = self.dates()
		name = r.choice(NAMES)
		sender = "%s@example.org" % name.split()[0].lower()
		hdr = ("From %s %s\nMessage-ID: <%d.%08x@example.org>\n"
		    "Date: %s\nFrom: %s\nTo: bench@example.org\n"
		    "Subject: note %d\n\n" % (sender, ctime, idx,
		    r.getrandbits(32), rfc, sender, idx)).encode()
		body = self.text_body(size - len(hdr) - 80)
		while len(hdr) + len(body) + 1 > size and b"\n" in body[:-1]:
			body = body[:body.rstrip(b"\n").rfind(b"\n") + 1]
		return [hdr, body, b"\n"]

	def message(self, idx, size):
		"""One message of about size bytes, with its trailing
		empty line, as a list of byte strings."""
		r = self.rng
		if size <= 12000 and r.random() < 0.9:
			hdr = self.headers(idx, "text/plain; charset=UTF-8",
			    ["Content-Transfer-Encoding: 8bit"])
			want = max(40, size - len(hdr))
			if r.random() < 0.03:
				body = self.text_body(want // 3) + \
				    self.long_line(max(2048, want // 2))
			else:
				body = self.text_body(want)
			return [hdr, body, b"\n"]
		bnd = "=_b%016x" % r.getrandbits(64)
		hdr = self.headers(idx, 'multipart/mixed;\n\tboundary="%s"' % bnd)
		parts = [b"This is a multi-part message in MIME format.\n\n"]
		txt = min(max(200, size // 10), r.randint(300, 6000))
		parts.append(("--%s\nContent-Type: text/plain; charset=UTF-8\n"
		    "Content-Transfer-Encoding: 8bit\n\n" % bnd).encode())
		parts.append(self.text_body(txt))
		used = len(hdr) + sum(len(p) for p in parts)
		if r.random() < 0.15:
			parts.append(("\n--%s\nContent-Type: text/html; "
			    "charset=UTF-8\n\n" % bnd).encode())
			parts.append(self.long_line(r.randint(2048, 16384)))
			used += len(parts[-1]) + len(parts[-2])
		ctype, fname = r.choice(ATTACH)
		fname = fname.format(idx)
		ah = ("\n--%s\nContent-Type: %s; name=\"%s\"\n"
		    "Content-Disposition: attachment; filename=\"%s\"\n"
		    "Content-Transfer-Encoding: base64\n\n" % (bnd, ctype, fname,
		    fname)).encode()
		parts.append(ah)
		used += len(ah)
		parts.append(self.b64_body(max(77, size - used - 40)))
		parts.append(("\n--%s--\n" % bnd).encode())
		return [hdr] + parts + [b"\n"]


def sizes_for(kind, n, rng):
	if kind == "tiny":
		return [900, 1400, 2200]
	if kind in ("mem1k", "mem1g"):
		s = [500 + (i * 37) % 525 for i in range(n)]
		if kind == "mem1g":
			s[49] = 1 << 30
		return s
	if kind == "big4g":
		s = [500 + (i * 37) % 525 for i in range(n)]
		for k in range(5):
			s[10 + k * 20] = 900 << 20
		return s
	s = [quantile((i + 0.5) / n) for i in range(n)]
	rng.shuffle(s)
	return s


def main():
	ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
	ap.add_argument("kind", choices=sorted(KINDS))
	ap.add_argument("output")
	ap.add_argument("--seed", type=int, default=6)
	ap.add_argument("--count", type=int, help="override message count")
	a = ap.parse_args()
	n = a.count or KINDS[a.kind]
	g = Gen(a.seed)
	sizes = sizes_for(a.kind, n, random.Random(a.seed * 7919 + n))
	tmp = a.output + ".tmp"
	total = largest = 0
	offs = []
	with open(tmp, "wb", buffering=8 << 20) as f:
		for i, sz in enumerate(sizes):
			if a.kind in ("mem1k", "mem1g", "big4g") and sz < 1024:
				m = g.small_message(i + 1, sz)
			else:
				m = g.message(i + 1, sz)
			offs.append(total)
			ln = 0
			for chunk in m:
				f.write(chunk)
				ln += len(chunk)
			total += ln
			largest = max(largest, ln)
	os.replace(tmp, a.output)
	meta = {"kind": a.kind, "seed": a.seed, "messages": n, "bytes": total,
		"largest": largest}
	with open(a.output + ".meta", "w") as f:
		json.dump(meta, f)
		f.write("\n")
	# Offsets of every From_ line, then the file size: message i is
	# [offs[i], offs[i+1]) with its trailing empty line.
	with open(a.output + ".idx", "w") as f:
		f.write("".join("%d\n" % o for o in offs + [total]))
	print("%s: %d messages, %d bytes, largest %d" % (a.output, n, total,
	    largest), file=sys.stderr)


if __name__ == "__main__":
	main()
