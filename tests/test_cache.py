"""The index cache (issue 13, cache.c): a login to a mailbox that did not
change reads the cache file instead of the mailbox, and any change, any
doubt, any bad cache is a full index as without one; the answers are the
same either way.

Oracles: the messages and sizes come from what the test wrote, through
the reference parser (refmbox.py); UIDLs are compared between runs with
and without a cache (--no-cache), and with the bytes the test wrote (the
same message, the same UIDL).  A hit is told by behaviour: the octets the
session read (rchar of /proc/PID/io, after the login's reply, when the
mailbox is open and indexed) are far fewer than the mailbox's.  Every
run is in the user's sandbox (the default).
"""

import os
import shutil
import time

import pytest

import refmbox
from conftest import LIMITS, NOBODY, ROOT, mbox, need, stored_retr
from mailsafety import fault_binary
from messages import message
# Run as root: test_auth_root's environment (fixtures root and tools).
from test_auth_root import PW, root, tools  # noqa: F401

BIG = 2000		# messages: a mailbox of about 3 MB


def pseudo():
	"""A c-client pseudo-message (hidden: not a POP3 message)."""
	return (b"From MAILER-DAEMON Mon Jan  1 00:00:00 2024\n"
	    b"Subject: DON'T DELETE THIS MESSAGE -- FOLDER INTERNAL DATA\n"
	    b"X-IMAP: 1 0000000001\n\ninternal\n\n")


def body(i):
	return b"line %d of a body to make the mailbox large\n" % i * 30


def big_mailbox():
	"""A pseudo-message, BIG messages (two pairs of twins, CRLF ones,
	one without a final newline)."""
	msgs = [message(i, body=body(i)) for i in range(1, BIG + 1)]
	msgs[5] = msgs[4]
	msgs[BIG - 2] = msgs[1]
	msgs[10] = msgs[10].replace(b"\n", b"\r\n")
	data = pseudo() + mbox(msgs)
	return data + b"From x@example.org Tue Feb  2 00:00:00 2024\n" \
	    b"Subject: last\n\nno final newline"


@pytest.fixture
def cdir(pop3):
	"""The cache directory, the user's, 0700 (--cache-dir)."""
	d = pop3.base / "cache"
	d.mkdir(mode=0o700)
	if ROOT:
		os.chown(d, NOBODY, NOBODY)
	return d


def settle():
	"""Past the second in which the mailbox last changed: pop3d trusts
	(and caches) only a ctime over a second old."""
	time.sleep(1.1)


def rchar(pid):
	with open("/proc/%d/io" % pid) as f:
		for ln in f:
			if ln.startswith("rchar:"):
				return int(ln.split()[1])
	raise AssertionError("no rchar")


def start(pop3, extra, binary=None, env=None):
	"""A session of pop3d (or binary) with the options extra, its
	environment with env."""
	argv = pop3.argv(*extra)
	kw = pop3.popen_kw()
	if binary is not None:
		argv[0] = binary
	if env:
		kw["env"] = dict(kw["env"], **env)
	return pop3.start(argv, kw)


class Answers:
	"""What a session answered: STAT, LIST sizes, UIDLs, RETR octets of
	some messages, and how much it read by the login."""

	def __init__(self, pop3, *extra, binary=None, env=None, retr=(1, 2)):
		s = start(pop3, extra, binary, env)
		s.login()
		self.logged_in = time.monotonic()
		self.read = rchar(s.proc.pid)
		self.stat = s.cmd("STAT").text
		self.sizes = [int(ln.split()[1]) for ln in s.cmd("LIST").lines]
		self.uidls = [ln.split()[1] for ln in s.cmd("UIDL").lines]
		self.retr = {}
		for i in retr:
			if i <= len(self.sizes):
				r = s.cmd("RETR %d" % i)
				assert r.ok, r
				self.retr[i] = r.data
		assert s.cmd("QUIT").ok
		s.wait()


def run(pop3, cdir, *extra, **kw):
	return Answers(pop3, "--cache-dir", str(cdir), *extra, **kw)


def check_against(data, a):
	"""The answers a against the reference parser of the octets data."""
	vis = refmbox.visible(data)
	assert a.sizes == [refmbox.size(o) for _, o in vis]
	assert a.stat.split()[1:3] == [str(len(vis)),
	    str(sum(a.sizes))]
	for i, got in a.retr.items():
		assert got == stored_retr(vis[i - 1][1])
	assert len(set(a.uidls)) == len(a.uidls)


def same(a, b):
	return (a.stat, a.sizes, a.uidls, a.retr) == \
	    (b.stat, b.sizes, b.uidls, b.retr)


def hit(a, data):
	return a.read < len(data) // 4


# The header of a cache file (cache.c, struct cache_hdr): offsets of the
# fields a test forges, its length, and the checksum over the file.
HDR = LIMITS["CACHE_HDR"]
IDENT = 24		# size, mtime s/ns, ctime s/ns: five 8-octet fields
SEALED = 96
SUM = 136
M64 = (1 << 64) - 1
K1, K2 = 0x9e3779b97f4a7c15, 0xc2b2ae3d27d4eb4f


def _rotl(x, r):
	return ((x << r) | (x >> (64 - r))) & M64


def _mix(h):
	h ^= h >> 33
	h = h * 0xff51afd7ed558ccd & M64
	h ^= h >> 33
	h = h * 0xc4ceb9fe1a85ec53 & M64
	return h ^ (h >> 33)


def _sum(p):
	lane = [K1, K2, ~K1 & M64, ~K2 & M64]
	i = 0
	while i + 32 <= len(p):
		for k in range(4):
			w = int.from_bytes(p[i + 8 * k:i + 8 * k + 8], "little")
			lane[k] = _rotl(lane[k] ^ w, 29) * K1 & M64
		i += 32
	for k, b in enumerate(p[i:]):
		lane[k % 4] = _rotl(lane[k % 4] ^ b, 29) * K2 & M64
	h = len(p)
	for k in range(4):
		h = _mix(h ^ lane[k]) * K1 & M64
	return _mix(h)


def forge(cache, st, sealed):
	"""The cache file cache made that of the file whose stat is st
	(size, mtime, ctime), its sealed flag set to sealed, its checksum
	right."""
	b = bytearray(cache)
	for off, v in ((32, st.st_size), (40, st.st_mtime_ns // 10**9),
	    (48, st.st_mtime_ns % 10**9), (56, st.st_ctime_ns // 10**9),
	    (64, st.st_ctime_ns % 10**9), (SEALED, sealed), (SUM, 0)):
		b[off:off + 8] = v.to_bytes(8, "little")
	s = _mix(_sum(bytes(b[:HDR])) ^ _sum(bytes(b[HDR:])))
	b[SUM:SUM + 8] = s.to_bytes(8, "little")
	return bytes(b)


def warm(pop3, cdir, data):
	"""Writes data as the mailbox, lets its ctime settle, and runs the
	session that writes the cache, then one that must hit."""
	pop3.write_mbox(data)
	settle()
	first = run(pop3, cdir)
	assert not hit(first, data)
	assert (cdir / "index").is_file()
	second = run(pop3, cdir)
	assert hit(second, data), "no hit: read %d of %d" % (second.read,
	    len(data))
	assert same(first, second)
	return second


def test_hit_same_answers(pop3, cdir):
	"""A hit reads the cache, not the mailbox, and answers what the full
	index answers: sizes and octets as the reference parser says, UIDLs
	as without a cache, twins numbered the same."""
	data = big_mailbox()
	a = warm(pop3, cdir, data)
	check_against(data, a)
	b = run(pop3, cdir, "--no-cache")
	assert not hit(b, data)
	assert same(a, b)
	assert a.uidls[5] == a.uidls[4] + "-1"
	assert a.uidls[BIG - 2] == a.uidls[1] + "-1"
	# RETR of every message from a hit is the stored octets.
	c = run(pop3, cdir, retr=range(1, BIG + 2))
	assert hit(c, data)
	check_against(data, c)


def test_no_cache_option(pop3, cdir):
	"""--no-cache writes nothing and reads the mailbox every time."""
	data = big_mailbox()
	pop3.write_mbox(data)
	settle()
	for _ in range(2):
		a = run(pop3, cdir, "--no-cache")
		assert not hit(a, data)
	assert list(cdir.iterdir()) == []
	check_against(data, a)


def young(p, data):
	"""Rewrites the mailbox in place with the same octets: a new ctime,
	the same size, inode and content."""
	with open(p, "r+b") as f:
		f.write(data)
	return time.monotonic()


def test_young_ctime_sealed(pop3, cdir):
	"""A login to a mailbox whose ctime is from the last second (mail
	just came) seals it (the spool locks held until the clock passed the
	ctime) and caches: the next login hits, at once.  A cache of a young
	identity without the seal is not trusted: the same good cache file,
	only its sealed flag forged off (checksum right), is a miss; with it
	on, a hit (the forgery itself is sound)."""
	data = big_mailbox()
	pop3.write_mbox(data)
	a = run(pop3, cdir)
	assert not hit(a, data)
	check_against(data, a)
	b = run(pop3, cdir)
	assert hit(b, data), "no hit: read %d of %d" % (b.read, len(data))
	assert same(a, b)
	good = (cdir / "index").read_bytes()
	idx = cdir / "index"
	for sealed, want in ((0, False), (1, True)):
		# The ctime must still be young at the login's fstat: timed to
		# the login, tried again when a loaded machine was slower.
		for _ in range(3):
			t = young(pop3.mailbox(), data)
			idx.write_bytes(forge(good, os.stat(pop3.mailbox()),
			    sealed))
			if ROOT:
				os.chown(idx, NOBODY, NOBODY)
			c = run(pop3, cdir)
			if c.logged_in - t < 0.9:
				break
		else:
			pytest.skip("too slow to keep the ctime young")
		assert hit(c, data) == want, (sealed, c.read)
		assert same(a, c)


def rewrite_same_size(p, data):
	"""In place, same length, mtime put back: only the ctime tells."""
	st = os.stat(p)
	new = data.replace(b"Subject: m 7\n", b"Subject: M 7\n", 1)
	with open(p, "r+b") as f:
		f.write(new)
	os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns))
	return new


def append(p, data):
	new = b"\n\n" + mbox([message(9999, tag="new")])
	fd = os.open(p, os.O_WRONLY | os.O_APPEND)
	os.write(fd, new)
	os.close(fd)
	return data + new


def truncate(p, data):
	cut = data.rindex(b"\nFrom ") + 1
	os.truncate(p, cut)
	return data[:cut]


def rename_over(p, data):
	"""Another file of the same size and mtime renamed over it."""
	st = os.stat(p)
	new = rewrite_bytes(data)
	tmp = str(p) + ".new"
	with open(tmp, "wb") as f:
		f.write(new)
	os.chmod(tmp, 0o600)
	if ROOT:
		os.chown(tmp, NOBODY, NOBODY)
	os.utime(tmp, ns=(st.st_atime_ns, st.st_mtime_ns))
	os.rename(tmp, p)
	return new


def rewrite_bytes(data):
	return data.replace(b"Subject: m 3\n", b"Subject: M 3\n", 1)


def touch(p, data):
	os.utime(p)
	return data


def chmod(p, data):
	os.chmod(p, 0o640)
	os.chmod(p, 0o600)
	return data


@pytest.mark.parametrize("change", [append, rewrite_same_size, truncate,
    rename_over, touch, chmod])
def test_miss_after_change(pop3, cdir, change):
	"""After each kind of change (the new state settled, so that only
	the cache's identity decides) the login indexes in full, answers
	for the file as it is now, and its cache hits the next time."""
	data = big_mailbox()
	warm(pop3, cdir, data)
	new = change(pop3.mailbox(), data)
	settle()
	a = run(pop3, cdir)
	assert not hit(a, new)
	check_against(new, a)
	b = run(pop3, cdir)
	assert hit(b, new)
	assert same(a, b)
	assert same(a, run(pop3, cdir, "--no-cache"))


def test_other_mailbox_same_octets(pop3, cdir):
	"""The cache of one mailbox is a miss for another, even a copy with
	the same octets and times (two names of the same uid in the password
	file share the directory)."""
	data = big_mailbox()
	warm(pop3, cdir, data)
	pop3.add_user("bob", "pw bob")
	bob = pop3.mailbox("bob")
	pop3.write_mbox(data, user="bob")
	st = os.stat(pop3.mailbox())
	os.utime(bob, ns=(st.st_atime_ns, st.st_mtime_ns))
	settle()
	argv = pop3.argv("--cache-dir", str(cdir))
	s = pop3.start(argv, pop3.popen_kw())
	s.login("bob", "pw bob")
	assert rchar(s.proc.pid) >= len(data) // 4
	sizes = [int(ln.split()[1]) for ln in s.cmd("LIST").lines]
	assert s.cmd("QUIT").ok
	assert sizes == [refmbox.size(o) for _, o in refmbox.visible(data)]
	# bob's index replaced alice's: her next login is a miss, then hits.
	assert not hit(run(pop3, cdir), data)
	assert hit(run(pop3, cdir), data)


def garbage(kind, good):
	"""A bad cache file made from a good one (good: its octets)."""
	if kind == "random":
		return os.urandom(len(good))
	if kind == "empty":
		return b""
	if kind == "truncated":
		return good[:len(good) // 2]
	if kind == "header-only":
		return good[:HDR]
	if kind == "longer":
		return good + bytes(56)
	if kind == "flipped":		# one octet of a digest: the checksum
		i = HDR + 56 * 7 + 32
		return good[:i] + bytes([good[i] ^ 0x10]) + good[i + 1:]
	if kind == "version":
		return good[:8] + bytes([good[8] + 1]) + good[9:]
	raise AssertionError(kind)


@pytest.mark.parametrize("kind", ["random", "empty", "truncated",
    "header-only", "longer", "flipped", "version"])
def test_garbage_cache(pop3, cdir, kind):
	"""A damaged cache is a miss with the right answers, and is
	rewritten: the next login hits."""
	data = big_mailbox()
	ref = warm(pop3, cdir, data)
	idx = cdir / "index"
	bad = garbage(kind, idx.read_bytes())
	idx.write_bytes(bad)
	if ROOT:
		os.chown(idx, NOBODY, NOBODY)
	a = run(pop3, cdir)
	assert not hit(a, data)
	assert same(a, ref)
	assert idx.read_bytes() != bad
	assert hit(run(pop3, cdir), data)


def test_symlinked_cache(pop3, cdir):
	"""A cache file that is a symbolic link (to a good cache) is not
	followed: a miss, and a regular file takes its place."""
	data = big_mailbox()
	ref = warm(pop3, cdir, data)
	idx = cdir / "index"
	os.rename(idx, cdir / "real")
	os.symlink("real", idx)
	a = run(pop3, cdir)
	assert not hit(a, data)
	assert same(a, ref)
	assert idx.is_file() and not idx.is_symlink()
	assert hit(run(pop3, cdir), data)


def test_foreign_owned_cache(pop3, cdir):
	"""A cache file of another owner (a good one, chowned, readable by
	all) is a miss."""
	need(ROOT, "root, to give the cache file to another user")
	data = big_mailbox()
	ref = warm(pop3, cdir, data)
	os.chown(cdir / "index", 0, 0)
	os.chmod(cdir / "index", 0o644)
	a = run(pop3, cdir)
	assert not hit(a, data)
	assert same(a, ref)
	assert os.stat(cdir / "index").st_uid == NOBODY
	assert hit(run(pop3, cdir), data)


def test_unusable_directory(pop3, tmp_path):
	"""A cache directory that is missing (in a directory the user cannot
	write), another user's, or writable by others: no cache, and the
	session answers as without one."""
	data = big_mailbox()
	pop3.write_mbox(data)
	settle()
	ref = run(pop3, pop3.base / "cache", "--no-cache")
	dirs = [pop3.base / "nodir" / "cache"]
	if ROOT:
		(pop3.base / "nodir").mkdir(mode=0o755)
		d = pop3.base / "rootdir"
		d.mkdir(mode=0o700)
		dirs.append(d)
	w = pop3.base / "open"
	w.mkdir()
	os.chmod(w, 0o777)
	if ROOT:
		os.chown(w, NOBODY, NOBODY)
	dirs.append(w)
	for d in dirs:
		for _ in range(2):
			a = run(pop3, d)
			assert not hit(a, data)
			assert same(a, ref)
		assert not (d / "index").exists()


def update(pop3, cdir, dele, binary=None, env=None, after=None):
	"""A session that deletes the messages dele and quits; after(path)
	runs as soon as QUIT's +OK is read."""
	s = start(pop3, ("--cache-dir", str(cdir)), binary, env)
	s.login()
	for i in dele:
		assert s.cmd("DELE %d" % i).ok
	assert s.cmd("QUIT").ok
	if after is not None:
		after(pop3.mailbox())
	s.wait()


def kept(data, new, dele):
	vis = refmbox.visible(data)
	assert [o for _, o in refmbox.visible(new)] == \
	    [o for i, (_, o) in enumerate(vis, 1) if i not in dele]


@pytest.mark.parametrize("pseudo_top", [True, False])
def test_update_then_hit(pop3, cdir, pseudo_top):
	"""After an UPDATE the next login hits (issue 13): the updating
	session cached the new file's index, sealed, and it answers what the
	reference parser and a login without a cache say (one of a pair of
	twins deleted: the other's UIDL is renumbered as a full index does).
	Without a pseudo-message the first message goes too: the new first
	one is at the top of the file."""
	data = big_mailbox()
	if not pseudo_top:
		data = data[len(pseudo()):]
	dele = (1, 3, 5, BIG)
	warm(pop3, cdir, data)
	update(pop3, cdir, dele)
	new = pop3.read_mbox()
	kept(data, new, dele)
	a = run(pop3, cdir)
	assert hit(a, new), "no hit: read %d of %d" % (a.read, len(new))
	check_against(new, a)
	b = run(pop3, cdir, "--no-cache")
	assert same(a, b)
	assert hit(run(pop3, cdir), new)


def cache_files_made(log):
	"""The cache files a session made: its strace -f -e trace=openat log's
	creations of a temporary in the cache directory."""
	with open(log) as f:
		return sum(1 for ln in f if "/cache/.index." in ln and
		    "O_CREAT" in ln and "= -1" not in ln)


@pytest.mark.parametrize("dele", [(), (1, 3, BIG)])
def test_one_cache_file_per_session(pop3, cdir, dele):
	"""A session that misses writes one cache file: at its end when it
	only reads, once for the new file when it updates (the index of the
	file before the update, which the update makes stale, is not
	written).  Counted from strace, not from pop3d; the next login hits
	and answers what the reference parser says."""
	strace = shutil.which("strace")
	need(strace, "strace (package strace)")
	data = big_mailbox()
	warm(pop3, cdir, data)
	data = append(pop3.mailbox(), data)
	settle()
	tdir = pop3.base / "trace"	# the session's user writes the log
	tdir.mkdir()
	if ROOT:
		os.chown(tdir, NOBODY, NOBODY)
	log = tdir / "log"
	argv = [strace, "-f", "-qq", "-e", "trace=openat", "-o", str(log)] + \
	    pop3.argv("--cache-dir", str(cdir))
	kw = pop3.popen_kw()
	kw["env"] = dict(kw["env"], ASAN_OPTIONS=":".join(filter(None, [
	    kw["env"].get("ASAN_OPTIONS"), "detect_leaks=0"])))
	s = pop3.start(argv, kw, 30)
	s.login()
	for i in dele:
		assert s.cmd("DELE %d" % i).ok
	assert s.cmd("QUIT").ok
	assert s.wait() == 0
	assert cache_files_made(log) == 1
	new = pop3.read_mbox()
	kept(data, new, dele)
	a = run(pop3, cdir)
	assert hit(a, new), "no hit: read %d of %d" % (a.read, len(new))
	check_against(new, a)


def test_dropped_connection_keeps_the_cache(pop3, cdir):
	"""A session that misses and whose client goes away without QUIT
	still leaves the cache of what it indexed: the next login hits."""
	data = big_mailbox()
	warm(pop3, cdir, data)
	data = append(pop3.mailbox(), data)
	settle()
	s = start(pop3, ("--cache-dir", str(cdir)))
	s.login()
	assert s.cmd("DELE 1").ok
	s.close_stdin()
	s.wait()
	assert pop3.read_mbox() == data
	a = run(pop3, cdir)
	assert hit(a, data), "no hit: read %d of %d" % (a.read, len(data))
	check_against(data, a)


def test_update_pseudo_to_top(pop3, cdir):
	"""An update that deletes the first message of a mailbox whose
	second is a pseudo-message (a MAILER-DAEMON X-IMAP message without a
	Received field) moves it to the top, where a full index hides it: the
	next login answers so, hit or not."""
	msgs = [message(i, body=body(i)) for i in range(1, BIG)]
	data = mbox(msgs[:1]) + pseudo() + mbox(msgs[1:])
	warm(pop3, cdir, data)
	assert len(refmbox.visible(data)) == BIG
	update(pop3, cdir, (1,))
	new = pop3.read_mbox()
	assert len(refmbox.visible(new)) == BIG - 2
	a = run(pop3, cdir)
	check_against(new, a)
	assert same(a, run(pop3, cdir, "--no-cache"))


def rewrite_head(p, data):
	"""rewrite_same_size() of the first 64 KiB only: fast."""
	st = os.stat(p)
	with open(p, "r+b") as f:
		head = f.read(65536)
		f.seek(0)
		f.write(head.replace(b"Subject: m 7\n", b"Subject: M 7\n", 1))
	os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns))
	return data.replace(b"Subject: m 7\n", b"Subject: M 7\n", 1)


@pytest.mark.parametrize("change", [rewrite_head, append])
def test_write_right_after_update(pop3, cdir, change):
	"""A write made as soon as QUIT's +OK is read (a rewrite of the same
	size with the mtime put back, or an append) follows the seal: the
	next login misses and answers for the file as it is."""
	data = big_mailbox()
	dele = (1, 3, BIG)
	warm(pop3, cdir, data)
	got = {}

	def write(p):
		got["tail"] = change(p, b"")	# what it appended, if anything
	update(pop3, cdir, dele, after=write)
	new = pop3.read_mbox()
	assert (b"Subject: M 7\n" in new) == (change is rewrite_head)
	kept(data, new[:len(new) - len(got["tail"])].replace(
	    b"Subject: M 7\n", b"Subject: m 7\n"), dele)
	a = run(pop3, cdir)
	assert not hit(a, new)
	check_against(new, a)
	assert same(a, run(pop3, cdir, "--no-cache"))


def test_stalled_clock_no_seal(pop3, cdir):
	"""When the clock does not pass the ctime within the wait (the fault
	build: POP3D_SEAL_STALL stops it), the update seals nothing: the next
	login is a miss, with the right answers (then it caches, the ctime
	old by then)."""
	fault = fault_binary()
	data = big_mailbox()
	dele = (1, 3, BIG)
	warm(pop3, cdir, data)
	update(pop3, cdir, dele, binary=fault,
	    env={"POP3D_SEAL_STALL": "1"})
	new = pop3.read_mbox()
	kept(data, new, dele)
	settle()
	a = run(pop3, cdir)
	assert not hit(a, new)
	check_against(new, a)
	b = run(pop3, cdir)
	assert hit(b, new)
	assert same(a, b)


def faulted_login(pop3, cdir, fault):
	"""A cache made, one message appended, then a login and QUIT of the
	fault build with POP3D_FAULT=fault (--lock fcntl: the write-like
	calls are the cache's only).  The old cache's octets, the new
	mailbox's, the answers without a cache, and the wait status."""
	data = big_mailbox()
	warm(pop3, cdir, data)
	old = (cdir / "index").read_bytes()
	new = append(pop3.mailbox(), data)
	settle()
	ref = run(pop3, cdir, "--no-cache")
	argv = pop3.argv("--cache-dir", str(cdir), "--lock", "fcntl")
	argv[0] = fault_binary()
	kw = pop3.popen_kw()
	kw["env"] = dict(kw["env"], POP3D_FAULT=fault)
	s = pop3.start(argv, kw)
	assert s.greeting().ok
	s.send("USER alice\r\nPASS wonder land\r\nQUIT\r\n")
	s.wait_eof(10)
	return old, new, ref, s.wait()


@pytest.mark.parametrize("step", range(1, 7))
def test_crash_while_writing(pop3, cdir, step):
	"""kill -9 at each write-like call of a login that replaces the
	cache (the fault build; with --lock fcntl they are the temporary's
	unlink, its records in two writes of at most 1,024, its header, the
	exchange of its name with the old one's): the cache file is the old
	one whole, or a new one whole; the next session answers right, and
	the one after hits.  The temporary a killed session left is gone
	once the next session has written the cache (it has the same name:
	one per mailbox, not per pid)."""
	old, new, ref, st = faulted_login(pop3, cdir, "kill:%d" % step)
	assert (st == -9) == (step <= 5)
	if step > 5:
		# Not killed: the old file went with the temporary name.
		assert sorted(os.listdir(cdir)) == ["index"]
	now = (cdir / "index").read_bytes()
	a = run(pop3, cdir)
	assert now == old or hit(a, new), "a torn cache file"
	assert same(a, ref)
	check_against(new, a)
	assert sorted(os.listdir(cdir)) == ["index"], "a temporary left"
	b = run(pop3, cdir)
	assert same(b, ref)
	assert hit(b, new)


@pytest.mark.parametrize("fault", ["eio", "enospc", "einval", "done"])
def test_exchange_fails(pop3, cdir, fault):
	"""The exchange that puts a new cache in the old one's place fails
	(the 5th write-like call of test_crash_while_writing; EINVAL is what
	a file system that cannot exchange says): the new one is renamed
	over the old one, no temporary is left, the session ends well, the
	next one answers right and hits.  With done, the exchange said EIO
	and did its work: the new one stays (a rename after it had put the
	old one back)."""
	old, new, ref, st = faulted_login(pop3, cdir, fault + ":5")
	assert st == 0
	assert sorted(os.listdir(cdir)) == ["index"]
	assert (cdir / "index").read_bytes() != old
	a = run(pop3, cdir)
	assert hit(a, new)
	assert same(a, ref)
	check_against(new, a)


def test_default_directory(pop3):
	"""Without --cache-dir (not root): the user's own /var/tmp/pop3d-UID,
	made 0700; the session works whatever another run left there."""
	data = big_mailbox()
	pop3.write_mbox(data)
	settle()
	ref = Answers(pop3, "--no-cache")
	for _ in range(2):
		assert same(Answers(pop3), ref)
	uid = NOBODY if ROOT else os.getuid()
	st = os.lstat("/var/tmp/pop3d-%d" % uid)
	assert st.st_uid == uid and st.st_mode & 0o7777 == 0o700


# ------------------------------------------------ run as root: DIR/USER

def root_session(root, cache):
	"""alice's login as root with --cache-dir cache: the octets her
	process read by the login, and LIST's sizes.  Without a PAM session
	held, the root process becomes her process: its rchar counts root's
	few reads too (the record, the user database), far below a quarter
	of the mailbox."""
	s = root.session("--cache-dir", str(cache))
	s.login("alice", PW)
	read = rchar(s.proc.pid)
	sizes = [int(ln.split()[1]) for ln in s.cmd("LIST").lines]
	assert s.cmd("QUIT").ok
	s.wait()
	return read, sizes


def test_root_makes_the_users_directory(root):
	"""As root: DIR made 0755 root's if missing, DIR/alice made 0700 and
	given to alice at login; her cache there hits the next time."""
	data = big_mailbox()
	root.write_mbox("alice", 2001, 2001, data)
	settle()
	cache = root.base / "cache"
	want = [refmbox.size(o) for _, o in refmbox.visible(data)]
	read, sizes = root_session(root, cache)
	assert sizes == want and read >= len(data) // 4
	st = os.lstat(cache)
	assert (st.st_uid, st.st_mode & 0o7777) == (0, 0o755)
	st = os.lstat(cache / "alice")
	assert (st.st_uid, st.st_gid, st.st_mode & 0o7777) == \
	    (2001, 2001, 0o700)
	assert os.stat(cache / "alice" / "index").st_uid == 2001
	read, sizes = root_session(root, cache)
	assert sizes == want and read < len(data) // 4


@pytest.mark.parametrize("bad", ["base-writable", "base-users",
    "base-unsearchable", "user-dir-other", "user-dir-link",
    "user-dir-writable"])
def test_root_refuses_unsafe_directories(root, bad):
	"""As root: a DIR writable by others, not root's, or that the users
	cannot get through, a DIR/alice of another user, a link, or writable
	by others: no cache (nothing written, nothing given to alice), and
	the login works."""
	data = big_mailbox()
	root.write_mbox("alice", 2001, 2001, data)
	cache = root.base / "cache"
	cache.mkdir(mode=0o755)
	elsewhere = root.base / "elsewhere"
	elsewhere.mkdir(mode=0o700)
	user = cache / "alice"
	if bad == "base-writable":
		os.chmod(cache, 0o777)
	elif bad == "base-unsearchable":
		os.chmod(cache, 0o700)
	elif bad == "base-users":
		os.chown(cache, 2001, 2001)
	elif bad == "user-dir-link":
		os.symlink(elsewhere, user)
	else:
		user.mkdir(mode=0o700 if bad == "user-dir-other" else 0o777)
		os.chmod(user, 0o700 if bad == "user-dir-other" else 0o777)
		os.chown(user, 2002 if bad == "user-dir-other" else 2001, 2001)
	settle()
	want = [refmbox.size(o) for _, o in refmbox.visible(data)]
	for _ in range(2):
		read, sizes = root_session(root, cache)
		assert sizes == want and read >= len(data) // 4
	assert os.stat(elsewhere).st_uid == 0
	assert list(elsewhere.iterdir()) == []
	if bad.startswith("base"):
		assert not user.exists()
	elif bad != "user-dir-link":
		assert not (user / "index").exists()
