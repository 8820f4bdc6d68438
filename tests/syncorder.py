"""The crash-consistency rule of an update, checked on an strace log.

An oracle independent of the journal's layout (issue 11, part 5): it knows
only the mailbox's path, the journal's path and the mailbox's size when
the update began, and reads every file operation of the session from

	strace -f -e trace=%desc,%file,%process,sync -o LOG pop3d ...

It follows each file descriptor to the file it names (open, openat, creat,
dup, dup2, dup3, fcntl F_DUPFD, close, close_range, execve with close on
exec, fork and clone with or without a shared table, chdir) and each name
to its file (link, rename, unlink: a file keeps its identity under a new
name), and simulates what a crash at any moment would find on disk:

  - a write, copy_file_range, ftruncate or fallocate of a file is durable
    once an fsync or fdatasync of that file has begun after it returned
    and has returned (fdatasync covers the octets and the size; any
    descriptor of the file will do); sync_file_range makes nothing
    durable (it neither flushes the disk's cache nor the metadata);
  - a name made or removed in a directory (create, link, rename, unlink)
    is durable once an fsync of that directory has begun after it and
    returned; fdatasync or fsync of the file itself does not count;
  - sync and syncfs make everything before them durable.

Rules (check()), each for whatever layout the journal has:

  undo   Before a change of octets the mailbox had when the update began
	 (a write over them, a truncate below them, the mailbox name made
	 or removed), every journal write issued before that change is
	 durable, and so is the journal's name (its directory entry).  A
	 truncate alone, the update's only change, needs no journal: a
	 crash leaves the file cut or whole.  (A repair's log begins with
	 the journal there, its name durable: check(there=True); or its
	 name not known to be durable, when the session that made it was
	 killed before its directory's fsync returned: check(there="named"),
	 and the repair's own directory fsync must come first.)
  commit The journal write that commits it (its last one before the
	 mailbox is first changed) is issued only when every earlier write
	 of that journal is durable: a journal that does not hash its data
	 is valid once its commit record is on disk, which must never be
	 before what it commits.  (A header cannot be told from a commit
	 record: header, fsync, the data in one write, fsync passes; with
	 the data in several writes it does not.)  Not checked for a journal
	 that hashes all it holds (check(hashed=True)): one a crash left
	 incomplete fails its digests and was never applied, so one fsync
	 may cover it all (undo still wants it durable before the mailbox
	 changes); the tests that pass hashed=True also damage a journal
	 and see it refused.
  name	 A journal written under another name (a temporary one) gets the
	 journal's name (rename, link) only when every write of it issued
	 before is durable: a name on disk before the octets would name an
	 incomplete journal, which a repair of a hashed journal takes for
	 one never applied and removes, while a journal it replaced may
	 have been applied in part (a repair's journal of the mail
	 appended since, renamed over the old one).
  cut	 A truncate that cuts octets the mailbox had comes after every
	 earlier write of the mailbox is durable: the octets cut may be the
	 sources of those writes, and a crash must not keep the cut and
	 lose the copies.
  ahead  A journal write or name change after the mailbox was first
	 changed (a progress record, its removal) comes after every earlier
	 change of the mailbox is durable: what it says is done is done.
  reply  The reply to QUIT (the last write to the session's standard
	 output) starts with +OK only when every change of the mailbox is
	 durable, the journal is removed and its removal is durable (a
	 journal that comes back after a crash would have the next session
	 repair a mailbox that has changed since); the mailbox is not changed
	 after it.  An update given up before any change (check(refused=True))
	 answers -ERR and changes nothing of the mailbox.
  void	 A journal's name removed before the name was durable is removed
	 only once a write of that journal after the name was made is
	 durable: a crash may keep the name and lose the removal, and what
	 it keeps must not be the journal as it was named, complete, which a
	 repair would apply.  For an update given up (check(refused=True)),
	 by the reply: a journal's name that is not durable then has its
	 removal durable, or a write of it since the name was made; a name
	 made durable is the repair's, which completes the update.  (That
	 the write spoils the journal is the unit tests' to show; this
	 checker only sees that one is on disk first.)
"""

import os
import re

CLASSES = "trace=%desc,%file,%process,sync"

_PID = re.compile(r"^(\d+) +(.*)$")
_DONE = re.compile(r"^(\w+)\((.*)\) += (\S+)")
_UNFIN = re.compile(r"^(\w+)\((.*?) ?<unfinished \.\.\.>$")
_RESUMED = re.compile(r"^<\.\.\. (\w+) resumed>(.*)$")

# Calls that make a descriptor this checker has no file for.
_ANON = ("pipe", "pipe2", "socket", "socketpair", "accept", "accept4",
    "eventfd", "eventfd2", "epoll_create", "epoll_create1", "memfd_create",
    "signalfd", "signalfd4", "timerfd_create", "inotify_init",
    "inotify_init1", "pidfd_open", "userfaultfd")
_GLOBAL_SYNC = ("sync", "syncfs")


class Call:
	"""One system call: pid, name, argument tokens, result (None: none),
	the log lines (1-based) where it began and returned, its text."""

	def __init__(self, pid, name, args, ret, start, end, text):
		self.pid, self.name, self.args = pid, name, args
		self.ret, self.start, self.end, self.text = ret, start, end, text

	def __repr__(self):
		return "line %d: %s" % (self.end, self.text[:160])


def split_args(s):
	"""strace's argument text as top-level tokens (quotes, brackets and
	braces kept whole)."""
	out, cur, depth, i = [], [], 0, 0
	while i < len(s):
		c = s[i]
		if c == '"':
			j = i + 1
			while j < len(s) and s[j] != '"':
				j += 2 if s[j] == "\\" else 1
			cur.append(s[i:j + 1])
			i = j + 1
			continue
		if c in "([{":
			depth += 1
		elif c in ")]}":
			depth -= 1
		if c == "," and depth == 0:
			out.append("".join(cur).strip())
			cur = []
		else:
			cur.append(c)
		i += 1
	if cur or out:
		out.append("".join(cur).strip())
	return out


def unquote(tok):
	"""The octets of an strace string token ("..." with C escapes, maybe
	followed by ... when cut), as latin-1 text."""
	m = re.match(r'^"((?:[^"\\]|\\.)*)"', tok)
	if not m:
		return tok
	b = m.group(1).encode("latin-1")
	return b.decode("unicode_escape").encode("latin-1").decode("latin-1")


def parse(path):
	"""The calls of an strace -f log in the order they returned."""
	calls, pending = [], {}
	with open(path, encoding="latin-1") as f:
		for n, ln in enumerate(f, 1):
			m = _PID.match(ln.rstrip("\n"))
			if not m:
				continue
			pid, rest = int(m.group(1)), m.group(2)
			u = _UNFIN.match(rest)
			if u:
				pending[pid] = (u.group(1), u.group(2), n)
				continue
			r = _RESUMED.match(rest)
			start = n
			if r:
				if pid not in pending:
					continue
				name, head, start = pending.pop(pid)
				tail = r.group(2)
				if head and not tail.startswith(")"):
					head += ", " if not head.endswith(
					    (",", ", ")) else ""
				rest = "%s(%s%s" % (name, head, tail)
			d = _DONE.match(rest)
			if not d:
				continue
			calls.append(Call(pid, d.group(1), split_args(d.group(2)),
			    _int(d.group(3)), start, n, rest))
	return calls


def _int(tok):
	"""An integer argument or result; [N] and [N => M] (an offset
	pointer): N; N</path> (strace -y): N; NULL, ? or anything else:
	None."""
	m = re.match(r"^\[?(-?(?:0x[0-9a-fA-F]+|\d+))", tok or "")
	return int(m.group(1), 0) if m else None


class Obj:
	"""A file (an inode): the names it has now and has ever had."""

	def __init__(self, oid, name):
		self.id = oid
		self.names = {name}
		self.ever = {name}

	def __repr__(self):
		return "/".join(sorted(self.ever))


class Event:
	"""What the checker keeps of a call: kind is write, trunc, fsync,
	fdatasync, sync (all files), create or remove (a name); obj the file
	(for create/remove: the file named); names: the file's names then;
	path, dir: the name made or removed and its directory."""

	def __init__(self, kind, call, obj=None, off=None, length=None,
	    path=None):
		self.kind, self.call, self.obj = kind, call, obj
		self.off, self.len, self.path = off, length, path
		self.names = frozenset(obj.names) if obj is not None else ()
		self.dir = os.path.dirname(path) if path else None
		self.start, self.end = call.start, call.end

	def __repr__(self):
		what = self.path or (sorted(self.names) or ["?"])[0]
		extra = ""
		if self.off is not None:
			extra += " off=%d" % self.off
		if self.len is not None:
			extra += " len=%d" % self.len
		return "line %d-%d %s %s%s" % (self.start, self.end, self.kind,
		    what, extra)


class Trace:
	"""The descriptor, name and file state of a traced session, and the
	events of its writes, syncs and names."""

	def __init__(self, calls, cwd=None):
		self.events, self.untracked = [], []
		self.byname, self.tables, self.cwd, self.parent = {}, {}, {}, {}
		self.root_cwd = cwd
		self.nobj = 0
		self.std = [self._new("<fd%d>" % i) for i in range(3)]
		for c in calls:
			if c.name in ("clone", "clone3", "fork", "vfork") and \
			    c.ret is not None and c.ret > 0:
				self.parent[c.ret] = (c.pid, "CLONE_FILES" in c.text)
		for c in calls:
			self._call(c)

	def _new(self, name):
		self.nobj += 1
		return Obj(self.nobj, name)

	def _table(self, pid):
		if pid not in self.tables:
			pp, share = self.parent.get(pid, (None, False))
			if pp in self.tables:
				t = self.tables[pp]
				self.tables[pid] = t if share else \
				    {"fds": dict(t["fds"]), "cx": set(t["cx"])}
				self.cwd[pid] = self.cwd.get(pp)
			else:
				self.tables[pid] = {"fds": {i: o for i, o in
				    enumerate(self.std)}, "cx": set()}
				self.cwd[pid] = self.root_cwd
		return self.tables[pid]

	def _fd(self, c, tok):
		fd = _int(tok)
		return self._table(c.pid)["fds"].get(fd)

	def _path(self, c, dirtok, ptok):
		p = unquote(ptok)
		if not p.startswith("/"):
			base = self.cwd.get(c.pid)
			if dirtok is not None and dirtok != "AT_FDCWD":
				o = self._fd(c, dirtok)
				base = sorted(o.names)[0] if o and o.names else None
			if base:
				p = os.path.join(base, p)
		return os.path.normpath(p)

	def _ev(self, kind, c, obj=None, off=None, length=None, path=None):
		self.events.append(Event(kind, c, obj, off, length, path))

	def _name(self, c, path, obj):
		"""path now names obj (a name made: a create event)."""
		old = self.byname.get(path)
		if old is not None and old is not obj:
			old.names.discard(path)
		self.byname[path] = obj
		obj.names.add(path)
		obj.ever.add(path)
		self._ev("create", c, obj, path=path)

	def _unname(self, c, path):
		obj = self.byname.pop(path, None)
		if obj is None:
			obj = self._new(path)
		obj.names.discard(path)
		self._ev("remove", c, obj, path=path)
		return obj

	def _open(self, c, dirtok, ptok, flags):
		path = self._path(c, dirtok, ptok)
		fl = set(flags.split("|"))
		obj = self.byname.get(path)
		if obj is None or {"O_CREAT", "O_EXCL"} <= fl:
			obj = self._new(path)
			if "O_CREAT" in fl:
				self._name(c, path, obj)
			else:
				self.byname[path] = obj
		t = self._table(c.pid)
		t["fds"][c.ret] = obj
		(t["cx"].add if "O_CLOEXEC" in fl else t["cx"].discard)(c.ret)
		if "O_TRUNC" in fl and fl & {"O_WRONLY", "O_RDWR"}:
			self._ev("trunc", c, obj, length=0)

	def _data(self, c, kind, fdtok, off=None, length=None):
		"""A write, truncate or sync through the descriptor fdtok."""
		obj = self._fd(c, fdtok)
		if obj is None:
			self.untracked.append(c)
		else:
			self._ev(kind, c, obj, off=off, length=length)

	def _dup(self, c, oldtok, new, cloexec):
		t = self._table(c.pid)
		obj = t["fds"].get(_int(oldtok))
		if obj is None:
			return
		t["fds"][new] = obj
		(t["cx"].add if cloexec else t["cx"].discard)(new)

	def _call(self, c):
		if c.ret is not None and c.ret >= 0:
			(self._fds_call(c, c.name, c.args) or
			    self._data_call(c, c.name, c.args) or
			    self._names_call(c, c.name, c.args))

	def _fds_call(self, c, n, a):
		"""Descriptors and the working directory; True if c was one."""
		t = self._table(c.pid)
		if n in ("open", "creat"):
			self._open(c, None, a[0], "O_CREAT|O_WRONLY|O_TRUNC" if
			    n == "creat" else a[1])
		elif n == "openat":
			self._open(c, a[0], a[1], a[2])
		elif n == "openat2":
			m = re.search(r"flags=([A-Z_|0-9x]+)", a[2])
			self._open(c, a[0], a[1], m.group(1) if m else "")
		elif n in _ANON:
			fds = [c.ret]
			if n in ("pipe", "pipe2", "socketpair"):
				fds = re.findall(r"\d+", a[-2 if n == "pipe2" else -1])
			for fd in fds:
				t["fds"][int(fd)] = self._new("<%s>" % n)
		elif n == "close":
			t["fds"].pop(_int(a[0]), None)
		elif n == "close_range":
			for fd in [fd for fd in t["fds"] if
			    _int(a[0]) <= fd <= _int(a[1])]:
				if "CLOSE_RANGE_CLOEXEC" in a[2]:
					t["cx"].add(fd)
				else:
					t["fds"].pop(fd)
		elif n in ("dup", "dup2", "dup3"):
			self._dup(c, a[0], c.ret, n == "dup3" and
			    "O_CLOEXEC" in a[2])
		elif n == "fcntl" and a[1] in ("F_DUPFD", "F_DUPFD_CLOEXEC"):
			self._dup(c, a[0], c.ret, a[1] == "F_DUPFD_CLOEXEC")
		elif n == "fcntl" and a[1] == "F_SETFD":
			(t["cx"].add if "FD_CLOEXEC" in a[2] else
			    t["cx"].discard)(_int(a[0]))
		elif n in ("execve", "execveat"):
			for fd in t["cx"]:
				t["fds"].pop(fd, None)
			t["cx"].clear()
		elif n == "chdir":
			self.cwd[c.pid] = self._path(c, None, a[0])
		elif n == "fchdir":
			o = self._fd(c, a[0])
			self.cwd[c.pid] = sorted(o.names)[0] if o and o.names \
			    else None
		else:
			return False
		return True

	def _data_call(self, c, n, a):
		"""Writes, truncates and syncs; True if c was one."""
		if n in ("write", "writev", "sendfile", "sendfile64"):
			self._data(c, "write", a[0], length=c.ret)
		elif n in ("pwrite64", "pwritev", "pwritev2"):
			off = _int(a[3])
			self._data(c, "write", a[0], None if off == -1 else off,
			    c.ret)
		elif n in ("copy_file_range", "splice"):
			self._data(c, "write", a[2], _int(a[3]), c.ret)
		elif n == "fallocate":
			self._data(c, "write", a[0], _int(a[2]), _int(a[3]))
		elif n == "ftruncate":
			self._data(c, "trunc", a[0], length=_int(a[1]))
		elif n == "truncate":
			obj = self.byname.get(self._path(c, None, a[0]))
			if obj is None:
				obj = self._new(self._path(c, None, a[0]))
			self._ev("trunc", c, obj, length=_int(a[1]))
		elif n in ("fsync", "fdatasync"):
			self._data(c, n, a[0])
		elif n in _GLOBAL_SYNC:
			self._ev("sync", c)
		else:
			return False
		return True

	def _names_call(self, c, n, a):
		"""Names made and removed; True if c was one."""
		if n in ("link", "linkat", "rename", "renameat", "renameat2"):
			at = n.endswith(("at", "at2"))
			old = self._path(c, a[0] if at else None, a[1 if at else 0])
			new = self._path(c, a[2] if at else None, a[3 if at else 1])
			if not n.startswith("link"):
				obj = self._unname(c, old)
			elif at and len(a) > 4 and "AT_EMPTY_PATH" in a[4]:
				obj = self._fd(c, a[0])
			else:
				obj = self.byname.get(old)
			self._name(c, new, obj or self._new(old))
		elif n == "unlink":
			self._unname(c, self._path(c, None, a[0]))
		elif n == "unlinkat" and "AT_REMOVEDIR" not in a[2]:
			self._unname(c, self._path(c, a[0], a[1]))
		else:
			return False
		return True


class Report:
	"""What check() found: violations (text), and what it judged, which
	shows that it saw the update (a checker that saw nothing must not
	pass): guarded, the changes of octets the mailbox had; mailbox, every
	change of the mailbox; journal, the journal's writes and names;
	reply, the last write to standard output."""

	# The journal's name when the log begins with it there, made durable
	# by the session that wrote it (check(there=True): a repair).
	THERE = "the journal there before the log"

	def __init__(self, trace, mailbox, journal, size0, there=False,
	    refused=False):
		self.trace = trace
		self.violations = []
		ev = trace.events
		self.syncs = [e for e in ev if e.kind in ("fsync", "fdatasync",
		    "sync")]
		jobjs = {e.obj for e in ev if e.obj is not None and
		    journal in e.obj.ever}
		self.mailbox = [e for e in ev if (e.kind in ("write", "trunc") and
		    mailbox in e.names) or (e.kind in ("create", "remove") and
		    e.path == mailbox)]
		self.jw = [e for e in ev if e.kind in ("write", "trunc") and
		    e.obj in jobjs]
		self.jn = [e for e in ev if e.kind in ("create", "remove") and
		    e.obj in jobjs]
		self.journal = self.jw + self.jn
		self.jpath = journal
		self.there = there
		self.refused_mode = refused
		self.guarded = []
		kept = size0
		for e in self.mailbox:
			if e.kind == "trunc":
				if e.len < kept:
					self.guarded.append(e)
				kept = min(kept, e.len)
			elif e.kind != "write" or e.off is None or e.off < kept:
				self.guarded.append(e)
		out = [e for e in ev if e.kind == "write" and e.obj is trace.std[1]]
		self.reply = out[-1] if out else None

	def timeline(self):
		keep = set(map(id, self.mailbox + self.journal + self.syncs))
		if self.reply is not None:
			keep.add(id(self.reply))
		return "\n".join(repr(e) for e in self.trace.events if id(e) in
		    keep)

	def durable(self, w, t):
		"""w, a write or truncate, is on disk at log line t."""
		return any(s.start > w.end and s.end < t and (s.kind == "sync" or
		    s.obj is w.obj) for s in self.syncs)

	def name_durable(self, e, t):
		"""The name e made or removed is on disk at log line t."""
		if e is self.THERE and self.there != "named":
			return True
		if e is self.THERE:
			return any(s.end < t and (s.kind == "sync" or (s.kind ==
			    "fsync" and os.path.dirname(self.jpath) in s.names))
			    for s in self.syncs)
		return any(s.start > e.end and s.end < t and (s.kind == "sync" or
		    (s.kind == "fsync" and e.dir in s.names)) for s in self.syncs)

	def journal_named(self, t):
		"""The create of the journal's name that stands at line t."""
		last = self.THERE if self.there else None
		for e in self.jn:
			if e.end < t and e.path == self.jpath:
				last = e if e.kind == "create" else None
		return last

	def bad(self, text, *ev):
		self.violations.append(text % ev)

	def undo(self):
		for m in self.guarded:
			before = [w for w in self.jw if w.end < m.start]
			for w in before:
				if not self.durable(w, m.start):
					self.bad("undo: mailbox change %r while the journal "
					    "write %r is not durable", m, w)
			if m.kind == "trunc" and not before and \
			    len(self.guarded) == 1:
				continue	# a lone truncate: cut or whole
			j = self.journal_named(m.start)
			if j is None:
				self.bad("undo: mailbox change %r with no journal", m)
			elif not self.name_durable(j, m.start):
				self.bad("undo: mailbox change %r while the journal's "
				    "name (%r) is not durable: no directory fsync "
				    "after it", m, j)

	def commit(self):
		for jo in {w.obj for w in self.jw}:
			mine = [w for w in self.jw if w.obj is jo]
			first = [m for m in self.guarded if m.start > mine[0].end]
			if not first:
				continue
			pre = [w for w in mine if w.start < first[0].start]
			for w in pre[:-1]:
				if not self.durable(w, pre[-1].start):
					self.bad("commit: journal write %r (its last before "
					    "the mailbox is changed) issued while its "
					    "earlier write %r is not durable", pre[-1], w)

	def named(self):
		for e in self.jn:
			if e.kind != "create" or e.path != self.jpath:
				continue
			for w in self.jw:
				if w.obj is e.obj and w.end < e.start and \
				    not self.durable(w, e.start):
					self.bad("name: the journal's name given by %r "
					    "while its write %r is not durable", e, w)

	def cut(self):
		for t in self.guarded:
			if t.kind != "trunc":
				continue
			for m in self.mailbox:
				if m.end < t.start and m.kind == "write" and \
				    not self.durable(m, t.start):
					self.bad("cut: truncate %r while the mailbox write "
					    "%r is not durable", t, m)

	def ahead(self):
		if not self.guarded:
			return
		for x in self.journal:
			if x.start <= self.guarded[0].start:
				continue
			for m in self.mailbox:
				if m.end < x.start and m.kind in ("write", "trunc") \
				    and not self.durable(m, x.start):
					self.bad("ahead: journal %s %r while the mailbox "
					    "change %r is not durable", x.kind, x, m)

	def void(self):
		end = self.reply.start if self.reply is not None else \
		    float("inf")
		for e in self.jn:
			if e.kind != "create" or e.path != self.jpath:
				continue
			rm = [x for x in self.jn if x.kind == "remove" and
			    x.obj is e.obj and x.start > e.end]
			t = end if self.refused_mode else rm[0].start if rm else None
			if t is None or self.name_durable(e, t):
				continue
			if self.refused_mode and rm and rm[0].end < t and \
			    self.name_durable(rm[0], t):
				continue
			if not any(w.obj is e.obj and w.start > e.end and
			    self.durable(w, t) for w in self.jw):
				self.bad("void: the journal's name %r, not durable, %s",
				    e, "stands at the reply %r with neither its removal "
				    "nor a write of it since durable" % self.reply if
				    self.refused_mode else "removed by %r before a write "
				    "of it since is durable" % rm[0])

	def refused(self):
		r = self.reply
		if r is None or not unquote(r.call.args[1]).startswith("-ERR"):
			self.bad("reply: an update given up answered %r, not -ERR",
			    r)
		for m in self.mailbox:
			self.bad("reply: an update given up changed the mailbox: %r",
			    m)

	def replied(self):
		r = self.reply
		if r is None:
			self.bad("reply: no write to standard output")
			return
		if not unquote(r.call.args[1]).startswith("+OK"):
			self.bad("reply: the last reply is not +OK: %r", r)
		for m in self.mailbox:
			if m.end < r.start and m.kind in ("write", "trunc") and \
			    not self.durable(m, r.start):
				self.bad("reply: %r before the mailbox change %r is "
				    "durable", r, m)
			if m.start > r.start:
				self.bad("reply: mailbox change %r after the reply %r",
				    m, r)
		for e in self.jn:
			if e.end < r.start and not self.name_durable(e, r.start):
				self.bad("reply: %r before the journal's %s %r is "
				    "durable", r, e.kind, e)
		if self.journal_named(r.start) is not None:
			self.bad("reply: %r while the journal is still there", r)


def check(log, mailbox, journal, size0, cwd=None, hashed=False,
    there=False, refused=False):
	"""Checks the rules of this module's docstring on the strace log of a
	session whose update began with a mailbox of size0 octets: a Report.
	cwd: the session's working directory, for relative paths; hashed:
	the journal holds digests of all its octets (no commit rule); there:
	the journal was there, durable, when the log began (a repair), or
	"named": there, its name maybe not on disk;
	refused: the update was given up before it changed the mailbox."""
	tr = Trace(parse(log), cwd)
	rep = Report(tr, os.path.normpath(mailbox), os.path.normpath(journal),
	    size0, there, refused)
	for c in tr.untracked:
		rep.bad("a file operation on a descriptor the checker does not "
		    "know (its tracking is incomplete): %r", c)
	rep.undo()
	if not hashed:
		rep.commit()
	rep.named()
	rep.cut()
	rep.ahead()
	rep.void()
	if refused:
		rep.refused()
	else:
		rep.replied()
	return rep
