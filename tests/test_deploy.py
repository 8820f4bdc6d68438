"""Deployment: the shipped launcher configurations, started for real.

xinetd (xinetd.d/pop3, xinetd.d/pop3-stunnel), openbsd-inetd
(contrib/inetd.conf), systemd (systemd/pop3d@.service through
systemd-socket-activate, which hands over the socket as pop3d.socket's
Accept=yes does) and stunnel (stunnel/pop3s.conf, stunnel/pop3-stls.conf)
each listen on a free 127.0.0.1 port with a config generated from the
shipped file (only port, user, server path and arguments changed), a pid
of their own, and are stopped afterwards.  Real clients talk to them:
poplib, curl, openssl s_client, fetchmail, mpop and getmail6.  Every
delivered message is compared byte for byte, after CRLF -> LF, with the
message as it is in the spool.

The launchers run as root, so pop3d runs in its production mode: root
parent, pre-login process as nobody, mail read as uid 2001 (the password
file's uid:gid fields; -m 1000).  Only the unprivileged inetd test runs
it as an ordinary user (one-process mode).
"""

import ctypes
import errno
import grp
import os
import poplib
import re
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from conftest import need, shared_copy

ROOT = Path(__file__).resolve().parent.parent
_bin = Path(os.environ.get("POP3D_BIN", "pop3d"))
BIN = _bin if _bin.is_absolute() else ROOT / _bin

USER = "alice"
PASSWORD = "Deploy-s3cret"
MAIL_UID = 2001			# the mail user: >= --min-uid 1000, no passwd entry
PRELOGIN = "nobody"

# poplib refuses lines over 2048 octets; pop3d sends lines of any length.
poplib._MAXLINE = 1 << 20

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0,
        reason="the launchers start pop3d as root: run as root"),
    pytest.mark.skipif(not BIN.exists(),
        reason=f"{BIN} not built (make pop3d)"),
]


# ---------------------------------------------------------------- the mail

def _from(i):
    return b"From sender%d@example.org Thu Nov 26 12:%02d:00 2026\n" % (i, i)


def _msg(subject, body, extra=b""):
    return (b"From: Sender <sender@example.org>\n"
        b"To: Alice <alice@example.org>\n"
        b"Subject: " + subject + b"\n"
        b"Message-ID: <" + subject.replace(b" ", b"-") + b"@example.org>\n"
        + extra + b"\n" + body)


# Messages as the spool holds them (From_ line and separator excluded).
CORPUS = [
    _msg(b"plain", b"Hello Alice.\n"),
    _msg(b"dots", b".\n..\n.hidden line\n...\nend .\n.\n"),
    _msg(b"from lines", b"Quoted:\n>From the archive\n\n"
        b"From here on the body goes on (no date: not a From_ line).\n"),
    _msg(b"8bit and long", "Gr\u00fc\u00dfe, \u00e9t\u00e9.\n".encode()
        + b"x" * 5000 + b"\n\ttab  \n", b"Status: RO\n"),
    _msg(b"big", b"".join(b"%06d " % i + b"abcdefghij" * 7 + b"\n"
        for i in range(4000))),
    _msg(b"plain", b"Hello Alice.\n"),
]
# The last message is a byte-identical twin of the first, From_ line too:
# UIDL must still tell them apart.
FROMS = [_from(i) for i in range(len(CORPUS) - 1)] + [_from(0)]
NEW = [_msg(b"new one", b"Arrived later.\n"),
    _msg(b"new two", b".leading dot\nbye\n")]


def mbox(msgs, froms):
    return b"".join(f + m + b"\n" for f, m in zip(froms, msgs))


def lf(data):
    return data.replace(b"\r\n", b"\n")


def pop_size(m):
    """Octets RETR sends for m before byte-stuffing."""
    return len(m.replace(b"\n", b"\r\n"))


# ---------------------------------------------------------------- the site

class Site:
    """A spool, a password file and pop3d's command line; exe is the
    pop3d binary the launchers start."""

    def __init__(self, base, exe):
        self.base = Path(base)
        self.exe = exe
        self.spool = self.base / "spool"
        self.spool.mkdir()
        os.chown(self.spool, MAIL_UID, MAIL_UID)
        self.spool.chmod(0o755)
        self.mailbox = self.spool / USER
        self.passwd = self.base / "passwd"
        h = subprocess.run(["openssl", "passwd", "-6", PASSWORD],
            check=True, capture_output=True, text=True).stdout.strip()
        self.passwd.write_text(
            f"# pop3d password file of the deployment tests\n"
            f"{USER}:{h}:{MAIL_UID}:{MAIL_UID}\n")
        self.passwd.chmod(0o600)
        self.msgs = []
        self.froms = []

    def fill(self, msgs=CORPUS, froms=FROMS):
        """A fresh mailbox (new file) holding msgs; leftovers removed."""
        for p in self.spool.iterdir():
            p.unlink()
        self.msgs = list(msgs)
        self.froms = list(froms)
        tmp = self.spool / ".new"
        tmp.write_bytes(mbox(self.msgs, self.froms))
        os.chown(tmp, MAIL_UID, MAIL_UID)
        tmp.chmod(0o600)
        tmp.rename(self.mailbox)

    def deliver(self, msgs):
        """Appends msgs as an MDA would."""
        froms = [b"From new%d@example.org Fri Nov 27 08:00:%02d 2026\n"
            % (i, i) for i in range(len(msgs))]
        with open(self.mailbox, "ab") as f:
            f.write(mbox(msgs, froms))
        self.msgs += msgs
        self.froms += froms

    def content(self):
        return self.mailbox.read_bytes()

    def args(self):
        """pop3d's options (after argv[0])."""
        return ["--spool=" + str(self.spool),
            "--auth=passwd:" + str(self.passwd),
            "--prelogin-user=" + PRELOGIN, "--min-uid=1000"]

    def server(self):
        """(program, argv after argv[0]) that a launcher starts."""
        return (str(self.exe), self.args())


def make_base():
    base = Path(tempfile.mkdtemp(prefix="pop3d-deploy-"))
    base.chmod(0o755)		# the mail user must reach the spool
    return base


@pytest.fixture(scope="module")
def exe():
    """A copy of BIN that other users can reach (the work tree may sit
    under a directory only root may enter)."""
    return Path(shared_copy(BIN))


@pytest.fixture
def site(exe):
    base = make_base()
    yield Site(base, exe)
    shutil.rmtree(base)


# ---------------------------------------------------------------- launchers

def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def listening(port, sid):
    """True when a process of session sid listens on TCP port (read from
    /proc, so that no probe connection starts a session).  Only its own
    socket counts: free_port() may give the same port to a test running
    beside this one (make check runs two passes at once)."""
    inodes = set()
    for name in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(name).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            f = line.split()
            if f[3] == "0A" and int(f[1].rsplit(":", 1)[1], 16) == port:
                inodes.add("socket:[%s]" % f[9])
    return bool(inodes & session_sockets(sid))


def session_sockets(sid):
    """The sockets ("socket:[INODE]") the processes of session sid hold."""
    out = set()
    for pid in filter(str.isdigit, os.listdir("/proc")):
        fds = "/proc/%s/fd" % pid
        try:
            if os.getsid(int(pid)) != sid:
                continue
            names = os.listdir(fds)
        except OSError:		# gone since, or not ours to read
            continue
        for fd in names:
            try:
                out.add(os.readlink(os.path.join(fds, fd)))
            except OSError:
                pass
    return out


class Daemon:
    """One launcher process, stopped by stop() (a finalizer)."""

    def __init__(self, name, argv, port, workdir, pidfile=None, logs=()):
        self.name = name
        self.pidfile = pidfile
        self.logs = [Path(p) for p in logs]
        self.out = Path(workdir) / f"{name}.out"
        with open(self.out, "wb") as out:
            self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL,
                stdout=out, stderr=subprocess.STDOUT, cwd=workdir,
                start_new_session=True)
        deadline = time.monotonic() + 15
        while not listening(port, self.proc.pid):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                pytest.fail(f"{name} did not listen on {port}:\n"
                    + self.report())
            time.sleep(0.05)
        if pidfile:
            while not (Path(pidfile).exists()
                    and Path(pidfile).read_text().strip()):
                if time.monotonic() > deadline:
                    self.stop()
                    pytest.fail(f"{name} wrote no pid file {pidfile}")
                time.sleep(0.05)
            assert int(Path(pidfile).read_text().split()[0]) == \
                self.proc.pid, f"{name}: pid file is not the launcher's"

    def report(self):
        text = ""
        for p in [self.out] + self.logs:
            if p.exists():
                text += f"--- {p.name}\n" + p.read_text(errors="replace")
        return text

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        # pop3d sessions still running (none should be) go with it.
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


@pytest.fixture
def launch():
    """launch(name, argv, port, ...) -> Daemon, stopped at teardown."""
    started = []

    def start(*a, **kw):
        d = Daemon(*a, **kw)
        started.append(d)
        return d
    yield start
    for d in reversed(started):
        d.stop()
        assert d.proc.poll() is not None, f"{d.name} still runs"


def xinetd_conf(site, port, shipped, logfile):
    """xinetd's config: a defaults block logging to logfile and the shipped
    service with only port, user, server and server_args changed.  xinetd
    refuses the service name pop3 on any port but /etc/services' 110, so a
    listed service also becomes type = UNLISTED, bound to 127.0.0.1."""
    prog, args = site.server()
    text = (ROOT / shipped).read_text()
    has = lambda k: re.search(rf"^\s*{k}\s*=", text, re.M)
    set_ = {"port": str(port), "user": "root", "server": prog,
        "server_args": " ".join(args), "bind": "127.0.0.1"}
    out = []
    for line in text.splitlines():
        m = re.match(r"\s*(#?)(\w+)\s*=", line)
        if m and m[2] in set_ and (not m[1] or m[2] == "server_args"):
            line = f"\t{m[2]}\t= {set_[m[2]]}"
        out.append(line)
        if line.strip() == "{":
            if not has("type"):
                out.append("\ttype\t= UNLISTED")
            if not has("bind"):
                out.append("\tbind\t= 127.0.0.1")
    conf = f"defaults\n{{\n\tlog_type = FILE {logfile}\n}}\n\n"
    return conf + "\n".join(out) + "\n"


def start_xinetd(launch, site, shipped="xinetd.d/pop3"):
    port = free_port()
    d = site.base
    log = d / "xinetd-service.log"
    conf = d / "xinetd.conf"
    conf.write_text(xinetd_conf(site, port, shipped, log))
    daemon = launch("xinetd", ["xinetd", "-dontfork", "-f", str(conf),
        "-pidfile", str(d / "xinetd.pid"), "-filelog",
        str(d / "xinetd-own.log")], port, d, pidfile=d / "xinetd.pid",
        logs=[d / "xinetd-own.log", log])
    daemon.port = port
    daemon.service_log = log
    return daemon


# ---------------------------------------------------------------- checks

def login(p):
    p.user(USER)
    p.pass_(PASSWORD)


def retr_all(p, site):
    """Lists, checks sizes and retrieves every message over p."""
    count, size = p.stat()
    assert count == len(site.msgs)
    assert size == sum(pop_size(m) for m in site.msgs)
    _, listing, _ = p.list()
    assert [l.split() for l in listing] == [
        [b"%d" % (i + 1), b"%d" % pop_size(m)]
        for i, m in enumerate(site.msgs)]
    for i, m in enumerate(site.msgs):
        _, lines, _ = p.retr(i + 1)
        assert b"\n".join(lines) + b"\n" == m, f"message {i + 1} differs"


def poplib_session(port, site, dele=(1, 3), logged_in=None):
    """Logs in, lists, retrieves all, deletes dele, quits; checks that the
    mailbox then holds exactly the other messages, in place.  logged_in()
    is called right after the login."""
    before = os.stat(site.mailbox)
    p = poplib.POP3("127.0.0.1", port, timeout=60)
    assert p.getwelcome().startswith(b"+OK")
    login(p)
    if logged_in:
        logged_in()
    retr_all(p, site)
    uidls = p.uidl()[1]
    assert len(set(u.split()[1] for u in uidls)) == len(site.msgs)
    for n in dele:
        assert p.dele(n).startswith(b"+OK")
    assert p.quit().startswith(b"+OK")
    keep = [i for i in range(len(site.msgs)) if i + 1 not in dele]
    assert site.content() == mbox([site.msgs[i] for i in keep],
        [site.froms[i] for i in keep])
    assert os.stat(site.mailbox).st_ino == before.st_ino
    site.msgs = [site.msgs[i] for i in keep]
    site.froms = [site.froms[i] for i in keep]


def wait_for(pred, what, timeout=10):
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.05)


def proc_status(pid):
    """Name, PPid, Uid, Gid, Groups, NoNewPrivs of a process, or None."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    st = {}
    for line in text.splitlines():
        k, _, v = line.partition(":")
        st[k] = v.split()
    return st


def check_privsep(launcher_pid, groups=()):
    """The session under the launcher: one pop3d, the one the launcher
    started, which has become the user's process (uid and gid 2001 in all
    slots, no supplementary group but groups, no_new_privs), with no child
    (no pre-login process left) and no root pop3d above it."""
    procs = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            st = proc_status(d.name)
            if st and st["Name"] == ["pop3d"]:
                procs[int(d.name)] = st
    tops = [p for p, st in procs.items()
        if int(st["PPid"][0]) == launcher_pid]
    assert len(tops) == 1, procs
    kids = [st for st in procs.values() if int(st["PPid"][0]) == tops[0]]
    assert kids == [], "a process under the user's: %r" % kids
    k = procs[tops[0]]
    assert k["Uid"] == [str(MAIL_UID)] * 4 and k["Gid"] == [str(MAIL_UID)] * 4
    assert k.get("Groups", []) == [str(g) for g in groups]
    assert k["NoNewPrivs"] == ["1"]


# ---------------------------------------------------------------- xinetd

def test_xinetd_session(launch, site):
    """xinetd.d/pop3: poplib logs in, lists, retrieves all messages intact,
    deletes two, quits; the mailbox is updated in place.  During the
    session, pop3d is one process, the one xinetd started, as the user.
    xinetd logs the session's PID, HOST, DURATION and EXIT status."""
    site.fill()
    x = start_xinetd(launch, site)
    poplib_session(x.port, site,
        logged_in=lambda: check_privsep(x.proc.pid))
    # A second session sees what is left.
    p = poplib.POP3("127.0.0.1", x.port, timeout=60)
    login(p)
    retr_all(p, site)
    p.quit()
    log = x.service_log
    wait_for(lambda: log.exists() and
        len(re.findall(r"EXIT: pop3\S* status=0 pid=\d+ duration=\d+",
        log.read_text())) == 2, "two EXIT status=0 lines in xinetd's log")
    assert re.search(r"START: pop3\S* pid=\d+ from=(::ffff:)?127\.0\.0\.1",
        log.read_text()), log.read_text()


def test_xinetd_debian_spool(launch, site):
    """A spool laid out as Debian's /var/mail: root:mail 2775, mailboxes
    USER:mail 0660.  The user's process keeps the mail group (and only
    it) to make its dotlock; no lock or journal is left behind, only the
    session-lock file: the user's, 0600, empty."""
    mail = grp.getgrnam("mail").gr_gid
    os.chown(site.spool, 0, mail)
    site.spool.chmod(0o2775)
    site.fill()
    os.chown(site.mailbox, MAIL_UID, mail)
    site.mailbox.chmod(0o660)
    x = start_xinetd(launch, site)
    poplib_session(x.port, site, dele=(2, 4),
        logged_in=lambda: check_privsep(x.proc.pid, groups=[mail]))
    session = "." + USER + ".pop3d-session"
    assert sorted(p.name for p in site.spool.iterdir()) == [session, USER]
    st = os.stat(site.spool / session)
    assert (st.st_uid, st.st_mode & 0o7777, st.st_size) == \
        (MAIL_UID, 0o600, 0)
    st = os.stat(site.mailbox)
    assert (st.st_uid, st.st_gid, st.st_mode & 0o7777) == \
        (MAIL_UID, mail, 0o660)


def test_xinetd_bad_password(launch, site):
    """A wrong password gets -ERR [AUTH] through xinetd, nothing changes."""
    site.fill()
    x = start_xinetd(launch, site)
    before = site.content()
    p = poplib.POP3("127.0.0.1", x.port, timeout=60)
    p.user(USER)
    with pytest.raises(poplib.error_proto) as e:
        p.pass_("wrong")
    assert e.value.args[0].startswith(b"-ERR [AUTH]")
    p.quit()
    assert site.content() == before


# ---------------------------------------------------------------- inetd

def openbsd_inetd():
    """openbsd-inetd's binary, unpacked under build/unpack by
    tests/install-deps.sh (make check runs it; here only if that has not
    been done), with the libraries it needs installed: it conflicts with
    xinetd as a package, so it is not installed."""
    inetd = ROOT / "build" / "unpack" / "openbsd-inetd" / "root" / "usr" / "sbin" / "inetd"
    if not inetd.exists():
        r = subprocess.run(["sh", str(ROOT / "tests/install-deps.sh"),
            "unpack"], capture_output=True, text=True, timeout=600)
        need(r.returncode == 0 and inetd.exists(), "openbsd-inetd unpacked"
            " by tests/install-deps.sh unpack: " + r.stderr[-500:])
    r = subprocess.run(["ldd", str(inetd)], capture_output=True, text=True)
    need(r.returncode == 0 and "not found" not in r.stdout, "the libraries"
        " of openbsd-inetd (tests/install-deps.sh unpack):\n" + r.stdout)
    return inetd


def inetd_conf(site, port, user, server=None):
    """The shipped contrib/inetd.conf line with only the address:port,
    user, program and arguments changed."""
    prog, args = server or site.server()
    line = [l for l in (ROOT / "contrib/inetd.conf").read_text().splitlines()
        if l and not l.startswith("#")]
    assert len(line) == 1, "contrib/inetd.conf holds one service line"
    f = line[0].split()
    assert f[:5] == ["pop3", "stream", "tcp", "nowait", "root"], f
    f[0] = f"127.0.0.1:{port}"
    f[4] = user
    f[5] = prog
    f[7:] = args
    return "\t".join(f) + "\n"


def test_openbsd_inetd_privileged(launch, site):
    """contrib/inetd.conf under openbsd-inetd run as root: a full session
    through the production (root) mode."""
    inetd = openbsd_inetd()
    site.fill()
    port = free_port()
    conf = site.base / "inetd.conf"
    conf.write_text(inetd_conf(site, port, "root"))
    d = launch("inetd", [str(inetd), "-d", str(conf)], port, site.base)
    poplib_session(port, site, dele=(2,))
    assert d.proc.poll() is None


def test_openbsd_inetd_unprivileged(launch, site):
    """inetd run as an ordinary user (nobody) starts pop3d as that user:
    one-process mode, serving that user's own mailbox only."""
    inetd = openbsd_inetd()
    nobody = 65534
    h = subprocess.run(["openssl", "passwd", "-6", PASSWORD], check=True,
        capture_output=True, text=True).stdout.strip()
    site.passwd.write_text(f"{USER}:{h}:{nobody}:{nobody}\n")
    os.chown(site.passwd, nobody, nobody)
    os.chown(site.spool, nobody, nobody)
    site.fill()
    os.chown(site.mailbox, nobody, nobody)
    port = free_port()
    conf = site.base / "inetd.conf"
    conf.write_text(inetd_conf(site, port, "nobody",
        server=(str(site.exe), site.args())))
    conf.chmod(0o644)
    mine = site.base / "inetd"		# where nobody can reach it
    shutil.copy2(inetd, mine)
    launch("inetd-nobody", ["setpriv", f"--reuid={nobody}",
        f"--regid={nobody}", "--clear-groups", str(mine), "-d", str(conf)],
        port, site.base)
    poplib_session(port, site, dele=(1,))
    assert os.stat(site.mailbox).st_uid == nobody


# ---------------------------------------------------------------- systemd

def unit_exec_start():
    for line in (ROOT / "systemd/pop3d@.service").read_text().splitlines():
        if line.startswith("ExecStart="):
            return line[len("ExecStart="):].lstrip("-@:+!").split()
    pytest.fail("pop3d@.service has no ExecStart=")


def test_systemd_units_verify(tmp_path):
    """systemd-analyze verify accepts pop3d.socket and pop3d@.service
    (ExecStart= pointed at the built binary, as it is not installed)."""
    need(shutil.which("systemd-analyze"), "systemd-analyze (package systemd)")
    sock = (ROOT / "systemd/pop3d.socket").read_text()
    assert re.search(r"^ListenStream=110$", sock, re.M)
    assert re.search(r"^Accept=yes$", sock, re.M)
    svc = (ROOT / "systemd/pop3d@.service").read_text()
    for want in ("StandardInput=socket", "StandardOutput=socket",
            "StandardError=journal", "ProtectSystem=strict",
            "ReadWritePaths=/var/mail"):
        assert re.search(f"^{want}$", svc, re.M), want
    assert unit_exec_start()[0] == "/usr/local/sbin/pop3d"
    (tmp_path / "pop3d.socket").write_text(sock)
    (tmp_path / "pop3d@.service").write_text(svc.replace(
        "ExecStart=/usr/local/sbin/pop3d", f"ExecStart={BIN}"))
    r = subprocess.run(["systemd-analyze", "verify", "--man=no",
        "pop3d.socket", "pop3d@.service"], cwd=tmp_path,
        capture_output=True, text=True)
    out = (r.stdout + r.stderr).strip()
    assert r.returncode == 0 and not out, out


def test_systemd_socket_activation(launch, site):
    """pop3d@.service's command started the way pop3d.socket's Accept=yes
    starts it (a connected socket on stdin and stdout), by
    systemd-socket-activate --inetd: one full session."""
    need(shutil.which("systemd-socket-activate"),
        "systemd-socket-activate (package systemd)")
    argv = unit_exec_start()
    prog, args = site.server()
    site.fill()
    port = free_port()
    launch("systemd-socket-activate", ["systemd-socket-activate", "--inetd",
        "--accept", f"--listen=127.0.0.1:{port}", prog] + args + argv[1:],
        port, site.base)
    poplib_session(port, site, dele=(len(site.msgs),))


def unit_setting(name):
    """The words of pop3d@.service's setting name=: one line, an allow
    list (what this reading of it knows: no "~" deny list, no reset)."""
    lines = [line.split("=", 1)[1].split() for line in
        (ROOT / "systemd/pop3d@.service").read_text().splitlines()
        if line.startswith(name + "=")]
    assert len(lines) == 1 and lines[0], f"pop3d@.service: {name}= {lines}"
    assert not [w for w in lines[0] if w.startswith("~")], lines
    return lines[0]


def syscall_sets():
    """systemd's named system call sets ({"@name": [member, ...]}), as
    systemd-analyze syscall-filter lists them."""
    sets, cur = {}, None
    out = subprocess.run(["systemd-analyze", "syscall-filter"],
        check=True, capture_output=True, text=True).stdout
    for line in out.splitlines():
        if line.startswith("@"):
            cur = sets.setdefault(line.strip(), [])
        elif cur is not None and line.strip() and \
                not line.strip().startswith("#"):
            cur.append(line.strip())
    return sets


def expand_filter(words, sets):
    """The system calls an allow-list of names and @sets lets through."""
    out, todo = set(), list(words)
    while todo:
        w = todo.pop()
        if w.startswith("@"):
            assert w in sets, f"systemd knows no set {w}"
            todo += [m for m in sets[w] if m not in out]
        out.add(w)
    return sorted(c for c in out if not c.startswith("@"))


def landlock_abi():
    """The kernel's Landlock ABI version, 0 without it (x86_64's
    landlock_create_ruleset, 444, asked for its version)."""
    if os.uname().machine != "x86_64":
        return 0
    libc = ctypes.CDLL(None, use_errno=True)
    return max(0, libc.syscall(444, None, ctypes.c_size_t(0),
        ctypes.c_uint32(1)))


@pytest.fixture(scope="module")
def sysfilter():
    """tests/sysfilter.c built (libseccomp, a build dependency)."""
    cc = shutil.which("cc") or shutil.which("gcc")
    need(cc, "a C compiler")
    d = make_base()
    out = d / "sysfilter"
    subprocess.run([cc, "-O1", "-o", str(out), str(ROOT / "tests/sysfilter.c"),
        "-lseccomp"], check=True)
    yield out
    shutil.rmtree(d)


def test_systemd_unit_sandbox(launch, site, sysfilter):
    """pop3d@.service's limits around pop3d as the socket starts it: the
    system calls of its SystemCallFilter= (expanded by systemd-analyze;
    any other fails with its SystemCallErrorNumber=), the capabilities
    of its CapabilityBoundingSet=, umask 077.  Sessions work, with
    pop3d's own sandboxes on (the filter let no seccomp() through: every
    session ended before its greeting), and the index cache works under
    them as root: the first session gives the user a directory of their
    own in the cache directory (no CAP_CHOWN: none), and a later session
    that misses (mail came) writes it anew (no CAP_DAC_READ_SEARCH: root
    could not open that directory again; found by a review of the
    package)."""
    need(shutil.which("systemd-analyze") and
        shutil.which("systemd-socket-activate"), "systemd (package systemd)")
    need(shutil.which("setpriv"), "setpriv (package util-linux)")
    calls = expand_filter(unit_setting("SystemCallFilter"), syscall_sets())
    errno_name = unit_setting("SystemCallErrorNumber")[0]
    caps = [c.lower().replace("cap_", "")
        for c in unit_setting("CapabilityBoundingSet")]
    listfile = site.base / "syscalls"
    listfile.write_text("\n".join(calls) + "\n")
    cache = site.base / "cache"
    cache.mkdir(mode=0o755)
    prog, args = site.server()
    site.fill()
    port = free_port()
    # -d: pop3d's log to the launcher's output, to see its sandboxes.
    daemon = launch("systemd-socket-activate", ["systemd-socket-activate",
        "--inetd", "--accept", f"--listen=127.0.0.1:{port}", "sh", "-c",
        'umask 077 && exec "$@"', "sh", "setpriv", "--bounding-set=-all,"
        + ",".join("+" + c for c in caps), "--inh-caps=-all",
        str(sysfilter), str(listfile), str(getattr(errno, errno_name)),
        prog] + args + ["--cache-dir=" + str(cache), "-d"], port, site.base)
    poplib_session(port, site, dele=(1,))
    # Landlock too, where the kernel has it (the filter refused its calls,
    # and pop3d ran with seccomp alone).
    if landlock_abi() > 0:
        assert re.search(r"sandbox: seccomp, Landlock ABI \d+",
            daemon.out.read_text()), daemon.report()
    udir = cache / USER
    st = udir.stat()
    assert (st.st_uid, st.st_mode & 0o777) == (MAIL_UID, 0o700), st
    index = [p for p in udir.iterdir()]
    assert len(index) == 1 and index[0].stat().st_uid == MAIL_UID, index
    before = index[0].stat()
    site.deliver([_msg(b"late", b"delivered between the sessions\n")])
    poplib_session(port, site, dele=())
    after = index[0].stat()
    assert (after.st_ino, after.st_mtime_ns) != (before.st_ino,
        before.st_mtime_ns), "the cache was not written again"


# ---------------------------------------------------------------- stunnel

@pytest.fixture(scope="module")
def cert():
    """A self-signed certificate for 127.0.0.1 (clients verify it)."""
    d = make_base()
    key, crt = d / "key.pem", d / "cert.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec",
        "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-days", "2",
        "-subj", "/CN=localhost", "-addext",
        "subjectAltName=IP:127.0.0.1,DNS:localhost",
        "-keyout", str(key), "-out", str(crt)], check=True,
        capture_output=True)
    key.chmod(0o600)
    yield crt, key
    shutil.rmtree(d)


def stunnel_conf(shipped, port, cert, workdir, exec_server=None,
        connect=None):
    """The shipped stunnel config with accept, cert, key and exec/execArgs
    (or connect) changed, a pid file and a log file of its own."""
    crt, key = cert
    out = []
    for line in (ROOT / shipped).read_text().splitlines():
        key_ = line.split("=")[0].strip()
        val = None
        if key_ == "accept":
            val = f"127.0.0.1:{port}"
        elif key_ == "cert":
            val = str(crt)
        elif key_ == "key":
            val = str(key)
        elif key_ == "exec":
            val = exec_server[0]
        elif key_ == "execArgs":
            val = " ".join(["pop3d"] + exec_server[1])
        elif key_ == "connect":
            val = connect
        elif key_ == "syslog":
            val = "no"
        if val is not None:
            line = f"{key_} = {val}"
        out.append(line)
        if key_ == "foreground":
            out.append(f"pid = {workdir / 'stunnel.pid'}")
            out.append(f"output = {workdir / 'stunnel.log'}")
    return "\n".join(out) + "\n"


def start_stunnel(launch, shipped, cert, workdir, **kw):
    port = free_port()
    conf = workdir / "stunnel.conf"
    conf.write_text(stunnel_conf(shipped, port, cert, workdir, **kw))
    if re.search(r"^setuid\s*=", conf.read_text(), re.M):
        # stunnel drops to its user (pop3-stls.conf) and then writes
        # its pid file and log.
        shutil.chown(workdir, "stunnel4")
    d = launch("stunnel", ["stunnel4", str(conf)], port, workdir,
        pidfile=workdir / "stunnel.pid", logs=[workdir / "stunnel.log"])
    d.port = port
    return d


def tls_context(cert):
    """Verifies the server against the test certificate."""
    return ssl.create_default_context(cafile=str(cert[0]))


def make_workdir(site):
    w = site.base / "work"
    w.mkdir(exist_ok=True)
    return w


def test_stunnel_implicit_tls(launch, site, cert):
    """stunnel/pop3s.conf (exec pop3d): poplib.POP3_SSL and
    curl --ssl-reqd pop3s:// retrieve messages; the certificate is
    verified."""
    site.fill()
    s = start_stunnel(launch, "stunnel/pop3s.conf", cert,
        make_workdir(site), exec_server=site.server())
    p = poplib.POP3_SSL("127.0.0.1", s.port, context=tls_context(cert),
        timeout=60)
    login(p)
    retr_all(p, site)
    p.quit()
    r = subprocess.run(["curl", "-sS", "--ssl-reqd", "--cacert",
        str(cert[0]), "-u", f"{USER}:{PASSWORD}",
        f"pop3s://127.0.0.1:{s.port}/2"], capture_output=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert lf(r.stdout) == site.msgs[1]


def test_stunnel_stls(launch, site, cert):
    """stunnel/pop3-stls.conf (protocol = pop3, STLS on the public port)
    in front of xinetd.d/pop3-stunnel: poplib stls() then login and
    retrieve; openssl s_client -starttls pop3 as the README shows; a
    client that does not start TLS gets nothing."""
    site.fill()
    backend = start_xinetd(launch, site, shipped="xinetd.d/pop3-stunnel")
    s = start_stunnel(launch, "stunnel/pop3-stls.conf", cert,
        make_workdir(site), connect=f"127.0.0.1:{backend.port}")
    p = poplib.POP3("127.0.0.1", s.port, timeout=60)
    assert p.getwelcome().startswith(b"+OK")
    p.stls(tls_context(cert))
    login(p)
    retr_all(p, site)
    p.quit()
    r = subprocess.run(["openssl", "s_client", "-starttls", "pop3",
        "-connect", f"127.0.0.1:{s.port}", "-CAfile", str(cert[0]),
        "-verify_return_error", "-quiet", "-crlf"],
        input=f"USER {USER}\nPASS {PASSWORD}\nLIST 1\nQUIT\n".encode(),
        capture_output=True, timeout=60)
    lines = r.stdout.decode(errors="replace").splitlines()
    assert lines[-2:] == [f"+OK 1 {pop_size(site.msgs[0])}",
        lines[-1]] and lines[-1].startswith("+OK"), r.stdout + r.stderr
    # No STLS, no POP3: the password is never read in clear text.
    with socket.create_connection(("127.0.0.1", s.port), 30) as c:
        f = c.makefile("rwb")
        assert f.readline().startswith(b"+OK")
        f.write(b"USER " + USER.encode() + b"\r\n")
        f.flush()
        try:
            assert f.readline() == b""
        except ConnectionResetError:
            pass


# ---------------------------------------------------------------- clients

@pytest.fixture(scope="module")
def xinetd_site(exe):
    """One xinetd with the shipped xinetd.d/pop3 for the client tests."""
    base = make_base()
    s = Site(base, exe)
    s.fill()
    started = []

    def start(*a, **kw):
        d = Daemon(*a, **kw)
        started.append(d)
        return d
    x = start_xinetd(start, s)
    yield x, s
    for d in started:
        d.stop()
        assert d.proc.poll() is not None
    shutil.rmtree(base)


@pytest.fixture
def pop(xinetd_site, tmp_path):
    """(port, site) with a fresh mailbox holding CORPUS."""
    x, s = xinetd_site
    s.fill()
    return x.port, s


def deliver_script(tmp_path):
    """An MDA that stores each message in DIR/0001, DIR/0002, ..."""
    out = tmp_path / "delivered"
    out.mkdir()
    mda = tmp_path / "mda"
    mda.write_text('#!/bin/sh\nn=$(ls "$1" | wc -l)\n'
        'exec cat > "$1/$(printf %04d $((n + 1)))"\n')
    mda.chmod(0o755)
    return mda, out


def delivered(out):
    return [p.read_bytes() for p in sorted(out.iterdir())]


def fetchmail(port, tmp_path, mda, out, keep):
    rc = tmp_path / "fetchmailrc"
    rc.write_text(
        "set no syslog\n"
        "set invisible\n"
        f"poll 127.0.0.1 service {port} protocol pop3 uidl\n"
        f'  user "{USER}" there with password "{PASSWORD}" is root here\n'
        f'  no rewrite mda "{mda} {out}"\n'
        # fetchmail 6.4 sends STLS even when CAPA does not offer it;
        # sslproto "" stops that (pop3d's TLS comes from stunnel).
        '  sslproto ""\n'
        + ("  keep\n" if keep else "  no keep fetchall\n"))
    rc.chmod(0o600)
    env = dict(os.environ, FETCHMAILHOME=str(tmp_path), HOME=str(tmp_path))
    return subprocess.run(["fetchmail", "-f", str(rc), "-i",
        str(tmp_path / "fetchids"), "--nodetach"], env=env,
        capture_output=True, text=True, timeout=120)


def test_fetchmail_delete(pop, tmp_path):
    """fetchmail --mda retrieves and deletes all; a second run finds none."""
    port, s = pop
    mda, out = deliver_script(tmp_path)
    r = fetchmail(port, tmp_path, mda, out, keep=False)
    assert r.returncode == 0, r.stdout + r.stderr
    assert delivered(out) == s.msgs
    assert s.content() == b""
    r = fetchmail(port, tmp_path, mda, out, keep=False)
    assert r.returncode == 1, r.stdout + r.stderr	# 1: no mail
    assert len(delivered(out)) == len(s.msgs)


def test_fetchmail_keep_uidl(pop, tmp_path):
    """fetchmail keep + uidl: the next run fetches only new messages."""
    port, s = pop
    mda, out = deliver_script(tmp_path)
    before = s.content()
    r = fetchmail(port, tmp_path, mda, out, keep=True)
    assert r.returncode == 0, r.stdout + r.stderr
    assert delivered(out) == s.msgs
    assert s.content() == before
    s.deliver(NEW)
    r = fetchmail(port, tmp_path, mda, out, keep=True)
    assert r.returncode == 0, r.stdout + r.stderr
    assert delivered(out) == s.msgs
    r = fetchmail(port, tmp_path, mda, out, keep=True)
    assert r.returncode == 1, r.stdout + r.stderr
    assert delivered(out) == s.msgs


def read_mbox(path):
    """Messages of an mbox written by mpop (mboxrd: >From quoting)."""
    data = Path(path).read_bytes()
    parts = re.split(rb"(?:^|\n\n)From [^\n]*\n", data)
    assert parts[0] == b""
    msgs = []
    for i, m in enumerate(parts[1:]):
        if i == len(parts) - 2:
            assert m.endswith(b"\n\n")
            m = m[:-1]
        m = re.sub(rb"(?m)^>(>*From )", rb"\1", m + b"\n")[:-1]
        msgs.append(m + b"\n" if not m.endswith(b"\n") else m)
    return msgs


def mpop(port, tmp_path, box, keep, only_new):
    return subprocess.run(["mpop", "--host=127.0.0.1", f"--port={port}",
        "--tls=off", "--auth=user", f"--user={USER}",
        f"--passwordeval=echo {PASSWORD}", f"--delivery=mbox,{box}",
        "--received-header=off", f"--uidls-file={tmp_path / 'uidls'}",
        f"--keep={'on' if keep else 'off'}",
        f"--only-new={'on' if only_new else 'off'}", "--half-quiet"],
        capture_output=True, text=True, timeout=120,
        env=dict(os.environ, HOME=str(tmp_path)))


def test_mpop_all(pop, tmp_path):
    """mpop retrieves all messages into an mbox and deletes them."""
    port, s = pop
    box = tmp_path / "mbox"
    r = mpop(port, tmp_path, box, keep=False, only_new=False)
    assert r.returncode == 0, r.stdout + r.stderr
    assert read_mbox(box) == s.msgs
    assert s.content() == b""


def test_mpop_only_new(pop, tmp_path):
    """mpop --only-new (UIDL) across runs: the second run gets only the
    messages that arrived since."""
    port, s = pop
    box = tmp_path / "mbox"
    r = mpop(port, tmp_path, box, keep=True, only_new=True)
    assert r.returncode == 0, r.stdout + r.stderr
    assert read_mbox(box) == s.msgs
    s.deliver(NEW)
    r = mpop(port, tmp_path, box, keep=True, only_new=True)
    assert r.returncode == 0, r.stdout + r.stderr
    assert read_mbox(box) == s.msgs
    r = mpop(port, tmp_path, box, keep=True, only_new=True)
    assert r.returncode == 0, r.stdout + r.stderr
    assert read_mbox(box) == s.msgs


def curl(port, path="", *extra):
    r = subprocess.run(["curl", "-sS", "-u", f"{USER}:{PASSWORD}",
        *extra, f"pop3://127.0.0.1:{port}/{path}"], capture_output=True,
        timeout=60)
    assert r.returncode == 0, r.stderr
    return r.stdout


def test_curl(pop):
    """curl pop3://: LIST, RETR of every message, -X UIDL, -X 'TOP 1 0'."""
    port, s = pop
    assert curl(port).decode().splitlines() == [
        f"{i + 1} {pop_size(m)}" for i, m in enumerate(s.msgs)]
    for i, m in enumerate(s.msgs):
        assert lf(curl(port, str(i + 1))) == m, f"message {i + 1}"
    uidl = [l.split() for l in curl(port, "", "-X", "UIDL").splitlines()]
    assert [u[0] for u in uidl] == [b"%d" % (i + 1)
        for i in range(len(s.msgs))]
    ids = [u[1] for u in uidl]
    assert len(set(ids)) == len(ids)
    assert all(re.fullmatch(rb"[\x21-\x7e]{1,70}", u) for u in ids)
    assert lf(curl(port, "", "-X", "TOP 1 0")) == \
        s.msgs[0].split(b"\n\n")[0] + b"\n\n"
    assert s.content() == mbox(s.msgs, s.froms)


def test_getmail(pop):
    """getmail6 (SimplePOP3Retriever, Maildir, delete) retrieves all; a
    second run finds none.  getmail runs as a user (nobody): it refuses to
    deliver as root."""
    port, s = pop
    nobody = 65534
    home = make_base()
    maildir = home / "Maildir"
    for sub in ("cur", "new", "tmp"):
        (maildir / sub).mkdir(parents=True)
    rc = home / "getmailrc"
    rc.write_text(
        "[retriever]\ntype = SimplePOP3Retriever\nserver = 127.0.0.1\n"
        f"port = {port}\nusername = {USER}\npassword = {PASSWORD}\n"
        f"[destination]\ntype = Maildir\npath = {maildir}/\n"
        "[options]\ndelete = true\nread_all = true\n"
        "delivered_to = false\nreceived = false\nverbose = 0\n")
    subprocess.run(["chown", "-R", f"{nobody}:{nobody}", str(home)],
        check=True)

    def run():
        r = subprocess.run(["setpriv", f"--reuid={nobody}",
            f"--regid={nobody}", "--clear-groups", "getmail",
            f"--getmaildir={home}", f"--rcfile={rc}"], capture_output=True,
            text=True, timeout=120, env=dict(os.environ, HOME=str(home)),
            cwd=home)
        assert r.returncode == 0, r.stdout + r.stderr
    try:
        run()
        # getmail writes a Return-Path: header of its own, from the
        # message's (here absent) Return-Path: or Sender: header.
        rp = b"Return-Path: <unknown>\n"
        got = [p.read_bytes() for p in (maildir / "new").iterdir()]
        assert all(m.startswith(rp) for m in got)
        got = [m[len(rp):] for m in got]
        assert sorted(got) == sorted(s.msgs)
        assert s.content() == b""
        run()
        assert len(list((maildir / "new").iterdir())) == len(s.msgs)
    finally:
        shutil.rmtree(home)
