"""The manual page and the shipped configurations agree with the code.

pop3d.8 is clean under mandoc -Tlint; every option of `pop3d --help` is in
pop3d.8 and the README; the exit statuses and limits of pop3d.h are in
pop3d.8; the shipped launcher files start the binary where `make install`
puts it, with the settings their comments promise.
"""

import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
_bin = Path(os.environ.get("POP3D_BIN", "pop3d"))
BIN = _bin if _bin.is_absolute() else ROOT / _bin
MAN = ROOT / "pop3d.8"

need_mandoc = pytest.mark.skipif(not shutil.which("mandoc"),
    reason="mandoc not installed (tests/packages.txt)")
need_bin = pytest.mark.skipif(not BIN.exists(),
    reason=f"{BIN} not built (make pop3d)")


def rendered():
    """pop3d.8 as plain text."""
    r = subprocess.run(["mandoc", "-Tascii", str(MAN)], check=True,
        capture_output=True, text=True)
    return re.sub(r".\x08", "", r.stdout)


def section(text, name):
    """The body of one section (NAME at the line start) of rendered()."""
    m = re.search(rf"^{name}\n(.*?)(?=^[A-Z][A-Z /]+\n)", text, re.M | re.S)
    assert m, f"no section {name}"
    return m.group(1)


def help_text():
    r = subprocess.run([str(BIN), "--help"], capture_output=True, text=True,
        timeout=10)
    assert r.returncode == 0, r.stderr
    return r.stdout


def header_defines():
    """Integer macros of pop3d.h, expressions like (4 * 3600) evaluated."""
    vals = {}
    for name, expr in re.findall(r"^#define\s+(\w+)\s+(.+?)\s*(?:/\*.*)?$",
            (ROOT / "pop3d.h").read_text(), re.M):
        expr = re.sub(r"\b[A-Z_][A-Z0-9_]+\b",
            lambda m: str(vals.get(m.group(0), "x")), expr)
        if re.fullmatch(r"[\d\s()*+\-]+", expr):
            vals[name] = eval(expr)		# digits and operators only
    return vals


@need_mandoc
def test_man_lint():
    """mandoc -Tlint finds nothing (but manuals that this machine lacks:
    which are installed is not the page's business)."""
    r = subprocess.run(["mandoc", "-Tlint", "-Wstyle", str(MAN)],
        capture_output=True, text=True)
    out = [l for l in (r.stdout + r.stderr).splitlines()
        if "referenced manual not found" not in l and "mandoc.db" not in l]
    assert out == []


@need_mandoc
def test_man_header():
    src = MAN.read_text()
    for macro in (".Dd ", ".Dt POP3D 8", ".Os"):
        assert re.search(rf"^{re.escape(macro)}", src, re.M), macro
    text = rendered()
    for sec in ("NAME", "SYNOPSIS", "DESCRIPTION", "AUTHENTICATION",
            "MAILBOX", "LOCKING", "UPDATE", "LIMITS", "FILES",
            "EXIT STATUS", "SYSLOG", "EXAMPLES", "SEE ALSO", "STANDARDS",
            "CAVEATS", "SECURITY CONSIDERATIONS"):
        assert re.search(rf"^{sec}$", text, re.M), sec
    std = re.sub(r"\s+", " ", section(text, "STANDARDS"))
    for rfc in ("RFC 1939", "RFC 2449", "RFC 3206", "RFC 5034"):
        assert rfc in std, rfc


@need_mandoc
@need_bin
def test_man_and_readme_have_every_option():
    """Every option of pop3d --help, short and long, is in pop3d.8 (and
    its default value, where --help gives one), and every long option is
    in the README."""
    help_ = help_text()
    longs = re.findall(r"--([a-z][a-z-]*)", help_)
    shorts = re.findall(r"^\s+-([A-Za-z]),", help_, re.M)
    assert len(longs) >= 11 and len(shorts) == len(longs)
    man = section(rendered(), "DESCRIPTION")
    for o in longs:
        assert f"--{o}" in man, f"--{o} not in pop3d.8"
    for o in shorts:
        assert re.search(rf"^\s+-{o}\b", man, re.M), f"-{o} not in pop3d.8"
    for d in re.findall(r"\(default ([^)]+)\)", re.sub(r"\s+", " ", help_)):
        if d != "both":
            assert f"default {d}" in re.sub(r"\s+", " ", man), d
    text = (ROOT / "README").read_text()
    for o in longs:
        assert f"--{o}" in text, f"--{o} not in README"
    # The SYNOPSIS too: each short option, alone or in a cluster
    # ([-dhSV]).
    syn = re.sub(r"\s+", " ", section(rendered(), "SYNOPSIS"))
    flags = "".join(re.findall(r"\[-([A-Za-z]+)\b", syn))
    for o in shorts:
        assert o in flags, f"-{o} not in pop3d.8's SYNOPSIS"


@need_mandoc
def test_man_exit_status_matches_header():
    """EXIT STATUS lists exactly the POP3_EX_* codes of pop3d.h."""
    codes = sorted({v for k, v in header_defines().items()
        if k.startswith("POP3_EX_")})
    listed = sorted(int(n) for n in re.findall(r"^     (\d+)\s",
        section(rendered(), "EXIT STATUS"), re.M))
    assert codes and listed == codes


@need_mandoc
def test_man_limits_match_header():
    """Each limit of pop3d.h has its row in LIMITS, with today's value."""
    h = header_defines()
    rows = {
        "Command line": f"{h['POP3_CMD_MAX']} octets",
        "Reply line": f"{h['POP3_LINE_MAX']} octets",
        "SASL response": f"{h['POP3_SASL_MAX']} octets",
        "User name": f"{h['POP3_USER_MAX']} octets",
        "Unique-id": f"{h['POP3_UIDL_MAX']} characters",
        "Idle timeout": f"{h['POP3_TIMEOUT']} s",
        "Session length": f"{h['POP3_SESSION_MAX'] // 3600} hours",
        "Bad commands in a row": f"{h['POP3_BAD_MAX']}",
        "Failed logins per session": f"{h['POP3_AUTH_FAIL_MAX']}",
        "Failed login answer": f"{h['POP3_FAIL_DELAY_MS']} ms",
        "Password file hash": f"{h['AUTH_HASH_MAX']} octets",
        "Messages per mailbox": f"{h['MD_MAX_MESSAGES']:,}",
        "Wait for spool locks": f"{h['MD_LOCK_WAIT']} s",
        "Stale dotlock": f"{h['MD_DOTLOCK_STALE']} s",
        "Dotlock refresh": f"{h['MD_DOTLOCK_REFRESH']} s",
    }
    assert h["POP3_SESSION_MAX"] % 3600 == 0
    limits = section(rendered(), "LIMITS")
    for label, value in rows.items():
        m = re.search(rf"^\s+{re.escape(label)}(?:, with CRLF)?\s+(.*)$",
            limits, re.M)
        assert m, f"no LIMITS row {label}"
        assert re.match(rf"{re.escape(value)}(\s|$)", m.group(1)), \
            f"{label}: {m.group(1)!r}, pop3d.h says {value}"


def sbin():
    """Where make install puts pop3d: the Makefile's default PREFIX."""
    mk = (ROOT / "Makefile").read_text()
    prefix = re.search(r"^PREFIX\s*\?=\s*(\S+)", mk, re.M).group(1)
    assert re.search(r"^SBINDIR\s*\?=\s*\$\(PREFIX\)/sbin$", mk, re.M)
    return f"{prefix}/sbin/pop3d"


def xinetd_attrs(name):
    attrs = {}
    for line in (ROOT / name).read_text().splitlines():
        m = re.match(r"\s*(\w+)\s*=\s*(.*?)\s*$", line)
        if m:
            attrs[m[1]] = m[2]
    return attrs


def test_shipped_xinetd():
    """xinetd.d/pop3: port 110, one pop3d per connection started as root
    from where make install puts it, with limits and the log fields."""
    a = xinetd_attrs("xinetd.d/pop3")
    assert a["port"] == "110" and a["socket_type"] == "stream"
    assert a["protocol"] == "tcp" and a["wait"] == "no"
    assert a["user"] == "root" and a["server"] == sbin()
    assert a["disable"] == "no"
    assert int(a["instances"]) > int(a["per_source"]) > 0
    assert re.fullmatch(r"\d+ \d+", a["cps"])
    assert a["log_on_success"].split() == ["PID", "HOST", "DURATION", "EXIT"]
    assert a["log_on_failure"].split() == ["HOST"]
    b = xinetd_attrs("xinetd.d/pop3-stunnel")
    assert b["bind"] == "127.0.0.1" and b["server"] == sbin()
    assert b["type"] == "UNLISTED" and b["user"] == "root"


def test_shipped_paths():
    """Every launcher file names the installed binary."""
    want = sbin()
    inetd = [l for l in (ROOT / "contrib/inetd.conf").read_text()
        .splitlines() if l and not l.startswith("#")]
    assert inetd[0].split()[5:7] == [want, "pop3d"]
    svc = (ROOT / "systemd/pop3d@.service").read_text()
    assert re.search(rf"^ExecStart={re.escape(want)}$", svc, re.M)
    s = (ROOT / "stunnel/pop3s.conf").read_text()
    assert re.search(rf"^exec = {re.escape(want)}$", s, re.M)
    assert re.search(r"^accept = 995$", s, re.M)
    s = (ROOT / "stunnel/pop3-stls.conf").read_text()
    assert re.search(r"^protocol = pop3$", s, re.M)
    assert re.search(r"^accept = 110$", s, re.M)
    assert re.search(r"^connect = 127\.0\.0\.1:1110$", s, re.M)
    assert xinetd_attrs("xinetd.d/pop3-stunnel")["port"] == "1110"


@need_mandoc
def test_man_xinetd_example_matches_shipped():
    """The xinetd example in pop3d.8 says what xinetd.d/pop3 says."""
    ex = section(rendered(), "EXAMPLES")
    block = re.search(r"service pop3\n\s*\{\n(.*?)\n\s*\}", ex, re.S)
    assert block
    shipped = xinetd_attrs("xinetd.d/pop3")
    for line in block.group(1).splitlines():
        k, v = (x.strip() for x in line.split("=", 1))
        assert shipped.get(k) == re.sub(r"\s+", " ", v), k


@need_bin
@pytest.mark.plain_pass		# it installs ./pop3d
def test_make_install_destdir_unprivileged():
    """make install DESTDIR=... works as an ordinary user and puts the
    binary, the manual and the PAM file where the Makefile says, with
    explicit modes; make uninstall removes them again."""
    dest = Path(tempfile.mkdtemp(prefix="pop3d-install-"))
    try:
        dest.chmod(0o755)
        # A copy of what make install reads, in case the work tree sits
        # where an ordinary user may not enter; -o pop3d: install what is
        # built, never rebuild it.
        src = dest / "src"
        (src / "pam.d").mkdir(parents=True)
        for f in ("Makefile", "pop3d", "pop3d.8", "pam.d/pop3"):
            shutil.copy2(ROOT / f, src / f)
        make = ["make", "-s", "-C", str(src), "-o", "pop3d"]
        pre = []
        if os.geteuid() == 0:
            subprocess.run(["chown", "-R", "65534:65534", str(dest)],
                check=True)
            pre = ["setpriv", "--reuid=65534", "--regid=65534",
                "--clear-groups"]
        r = subprocess.run(pre + make + ["install", f"DESTDIR={dest}"],
            capture_output=True, text=True, timeout=120, cwd=dest)
        assert r.returncode == 0, r.stdout + r.stderr
        want = {"usr/local/sbin/pop3d": 0o755,
            "usr/local/share/man/man8/pop3d.8": 0o644,
            "etc/pam.d/pop3": 0o644}
        for path, mode in want.items():
            st = os.stat(dest / path)
            assert st.st_mode & 0o7777 == mode, path
        assert (dest / "usr/local/share/man/man8/pop3d.8").read_bytes() == \
            MAN.read_bytes()
        r = subprocess.run(pre + make + ["uninstall", f"DESTDIR={dest}"],
            capture_output=True, text=True, timeout=120, cwd=dest)
        assert r.returncode == 0, r.stdout + r.stderr
        assert not any((dest / p).exists() for p in want)
    finally:
        shutil.rmtree(dest)

