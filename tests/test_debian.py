"""The Debian package (issue 15): debian/ in the repository.

A copy of the tree (the files git knows, as they are in the work tree:
never build artifacts) is built with `dpkg-buildpackage -us -uc -b` in a
temporary directory, so the tree itself stays clean.  Then, on this
machine, as root: lintian on the .deb and the source package, the
package's fields and files, and its whole life: apt-get install ./deb,
a real POP3 session through /usr/sbin/pop3d with the installed
/etc/pam.d/pop3 and a real system user (pam_unix, /etc/shadow), the same
version installed again, a rebuilt higher version over it, remove (the
conffile stays), purge (nothing of the package stays, /var/mail is
untouched) and purge again.  `make check-debian` runs this file alone.

The package builds its own binary, so under POP3D_BIN=another binary
this file is deselected (plain_pass; the other tests cover that binary).
Where a dpkg install is impossible (not root, no dpkg-buildpackage) the
tests skip, which fails under make check (POP3D_STRICT) or CI=true.
"""

import grp
import os
import pwd
import re
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from conftest import expected_retr, mbox, need, parse_mbox, parse_replies

ROOT = Path(__file__).resolve().parent.parent
PKG = "pop3d"
TESTUSER = "pop3dpkgtest"
TESTPW = "Pkg test s3cret"
APT = ["apt-get", "-y", "-q", "-o", "DPkg::Lock::Timeout=600"]
# Not the outer make's flags (make check): the package's build is its own.
ENV = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS",
    "MFLAGS", "MAKELEVEL", "MAKEOVERRIDES")}
ENV["DEBIAN_FRONTEND"] = "noninteractive"
# The launcher files the package ships as examples, with their path in
# the package (Makefile EXAMPLES: contrib/ dropped).
EXAMPLES = {
    "xinetd.d/pop3": "xinetd.d/pop3",
    "xinetd.d/pop3-stunnel": "xinetd.d/pop3-stunnel",
    "contrib/inetd.conf": "inetd.conf",
    "stunnel/pop3s.conf": "stunnel/pop3s.conf",
    "stunnel/pop3-stls.conf": "stunnel/pop3-stls.conf",
    "contrib/fail2ban/filter.d/pop3d.conf": "fail2ban/filter.d/pop3d.conf",
    "contrib/fail2ban/jail.d/pop3d.conf": "fail2ban/jail.d/pop3d.conf",
    "deploy/nginx-pop3.conf": "deploy/nginx-pop3.conf",
    "deploy/haproxy-pop3.cfg": "deploy/haproxy-pop3.cfg",
}
EXDIR = "/usr/share/doc/pop3d/examples/"


# The package builds its own binary: not run again when POP3D_BIN names
# another (the ASan pass).
pytestmark = pytest.mark.plain_pass


def run(argv, timeout=600, check=True, **kw):
	r = subprocess.run(argv, capture_output=True, text=True,
	    timeout=timeout, env=kw.pop("env", ENV), **kw)
	if check:
		assert r.returncode == 0, (argv, r.stdout[-4000:], r.stderr[-4000:])
	return r


def copy_tree(dest):
	"""The files git knows (tracked, and new ones not ignored), as they are
	in the work tree: what a clean checkout of this tree holds."""
	r = run(["git", "-C", str(ROOT), "ls-files", "-z", "-c", "-o",
	    "--exclude-standard"])
	for name in r.stdout.split("\0"):
		src = ROOT / name
		if not name or not src.is_file():
			continue		# deleted in the work tree
		(dest / name).parent.mkdir(parents=True, exist_ok=True)
		shutil.copy2(src, dest / name)


def changelog_version(src):
	first = (src / "debian/changelog").read_text().splitlines()[0]
	return re.match(r"pop3d \(([^)]+)\)", first).group(1)


def build(base, name, bump=None, opts=""):
	"""A copy of the tree in base/name, built: the .deb path and the log.
	bump: a higher version, prepended to debian/changelog."""
	src = base / name / "pop3d"
	src.mkdir(parents=True)
	copy_tree(src)
	if bump:
		ch = src / "debian/changelog"
		ch.write_text("pop3d (%s) unstable; urgency=medium\n\n  * Test "
		    "rebuild.\n\n -- Test <test@example.org>  Sun, 06 Dec 2026 "
		    "03:00:00 +0000\n\n" % bump + ch.read_text())
	env = dict(ENV, DEB_BUILD_OPTIONS=opts)
	r = run(["dpkg-buildpackage", "-us", "-uc", "-b"], cwd=src, env=env,
	    check=False)
	log = r.stdout + r.stderr
	assert r.returncode == 0, log[-6000:]
	debs = list((base / name).glob("pop3d_*_*.deb"))
	assert len(debs) == 1, debs
	return debs[0], log, src


@pytest.fixture(scope="module")
def pkg():
	need(os.geteuid() == 0, "not root")
	for tool in ("dpkg-buildpackage", "dh", "apt-get", "lintian", "git"):
		need(shutil.which(tool), tool + " missing (make deps)")
	base = Path(tempfile.mkdtemp(prefix="pop3d-deb."))
	try:
		# The source package first, from an unbuilt copy, for lintian.
		s = base / "source" / "pop3d"
		s.mkdir(parents=True)
		copy_tree(s)
		run(["dpkg-source", "-b", "pop3d"], cwd=s.parent)
		dsc = list(s.parent.glob("pop3d_*.dsc"))
		deb, log, src = build(base, "build")
		yield {"base": base, "deb": deb, "log": log, "dsc": dsc[0],
		    "src": src, "version": changelog_version(src)}
	finally:
		shutil.rmtree(base, ignore_errors=True)


# ---------------------------------------------------------------- the build

def test_build_keeps_dpkg_buildflags_and_runs_unit_tests(pkg):
	"""Every flag of dpkg-buildflags (hardening=+all) is on each compile
	and the link line of pop3d; the unit tests ran and passed, every
	tests/unit/test_*.c of the tree."""
	env = dict(ENV, DEB_BUILD_MAINT_OPTIONS="hardening=+all")
	flags = {v: run(["dpkg-buildflags", "--get", v], env=env,
	    cwd=pkg["src"]).stdout.split() for v in ("CFLAGS", "CPPFLAGS",
	    "LDFLAGS")}
	lines = pkg["log"].splitlines()
	comp = [l for l in lines if re.match(r"(cc|gcc)\b.* -c -o \w+\.o ", l)]
	link = [l for l in lines if re.match(r"(cc|gcc)\b.* -o pop3d ", l)]
	# sbxgen.c is the build-time tool that writes the seccomp programs
	# (compiled and linked in one step): its line gets the flags too.
	gen = [l for l in lines if re.match(r"(cc|gcc)\b.* -o build/sbxgen ", l)]
	assert len(gen) == 1, gen
	assert len(comp) == len(list(ROOT.glob("*.c"))) - 1, comp
	comp += gen
	assert len(link) == 1, link
	for l in comp:
		for f in flags["CFLAGS"] + flags["CPPFLAGS"]:
			assert f in l.split(), (f, l)
	for f in flags["LDFLAGS"]:
		assert f in link[0].split(), (f, link[0])
	units = sorted(p.stem for p in (ROOT / "tests/unit").glob("test_*.c"))
	ran = re.findall(r"^== build/unit/(test_\w+)$", pkg["log"], re.M)
	assert sorted(ran) == units and units, ran
	assert len(re.findall(r"^\[  PASSED  \] \d+ test", pkg["log"], re.M)) \
	    == len(units)
	assert "FAILED" not in pkg["log"]


def test_build_depends_cover_the_package_list():
	"""Build-Depends names every package of tests/packages.txt's build
	section that build-essential does not bring, and libcmocka-dev (the
	unit tests) marked <!nocheck>; dpkg-checkbuilddeps accepts them."""
	ctl = (ROOT / "debian/control").read_text()
	bd = re.search(r"^Build-Depends:(.*(?:\n[ \t].*)*)", ctl, re.M).group(1)
	deps = {re.split(r"[ (<]", d.strip())[0]: d for d in bd.split(",")
	    if d.strip()}
	build, sec = [], None
	for line in (ROOT / "tests/packages.txt").read_text().splitlines():
		m = re.match(r"# == (\S+)", line)
		if m:
			sec = m.group(1)
		elif sec == "build" and line and not line.startswith("#"):
			build.append(line.split()[0])
	essential = {"gcc", "make", "libc6-dev"}
	assert build and essential <= set(build)
	for p in set(build) - essential:
		assert p in deps, p
	assert "<!nocheck>" in deps["libcmocka-dev"]
	assert deps["debhelper-compat"].replace(" ", "") == \
	    "debhelper-compat(=13)"
	if shutil.which("dpkg-checkbuilddeps"):
		run(["dpkg-checkbuilddeps"], cwd=ROOT)


def test_postrm_purge_under_dpkg_root(tmp_path):
	"""Our lines of postrm under DPKG_ROOT (dpkg working on another root,
	as when a chroot is made): remove leaves the pre-login chroot
	directory and the index caches of that root; purge removes them,
	and nothing of this machine's own (a file put in its cache
	directory, its chroot directory)."""
	need(os.geteuid() == 0, "root (this machine's /var/cache, /run)")
	root = tmp_path / "root"
	empty, cache = root / "run/pop3d-empty", root / "var/cache/pop3d"
	empty.mkdir(parents=True)
	(cache / "alice").mkdir(parents=True)
	(cache / "alice/index").write_bytes(b"an index")
	real, real_empty = Path("/var/cache/pop3d"), Path("/run/pop3d-empty")
	made = [d for d in (real, real_empty) if not d.exists()]
	for d in made:
		d.mkdir(0o700 if d == real else 0o755)
	marker = real / ".pop3d-test-dpkg-root"
	marker.write_bytes(b"")
	try:
		env = dict(ENV, DPKG_ROOT=str(root))
		script = str(ROOT / "debian/pop3d.postrm")
		run(["sh", script, "remove"], env=env)
		assert empty.is_dir() and (cache / "alice/index").exists()
		run(["sh", script, "purge"], env=env)
		assert not empty.exists() and not cache.exists()
		assert (root / "run").is_dir() and (root / "var/cache").is_dir()
		assert marker.exists() and real_empty.is_dir()
	finally:
		marker.unlink(missing_ok=True)
		for d in made:
			if d.exists():
				d.rmdir()


def test_lintian_clean(pkg, tmp_path):
	"""lintian reports no error and no warning on the .deb and the source
	package (info, pedantic and experimental tags are shown, not fatal).
	Its TMPDIR is the test's: lintian 2.116 leaves a database file
	(mldbm-elf-*) in it."""
	r = run(["lintian", "-I", "-E", "--pedantic", "--fail-on",
	    "error,warning", str(pkg["deb"]), str(pkg["dsc"])], check=False,
	    env=dict(ENV, TMPDIR=str(tmp_path)))
	tags = [l for l in r.stdout.splitlines() if re.match(r"[EW]: ", l)]
	assert r.returncode == 0 and not tags, r.stdout + r.stderr


def deb_field(deb, field):
	return run(["dpkg-deb", "-f", str(deb), field]).stdout.strip()


def relations(text):
	return {re.split(r"[ (]", r.strip())[0] for r in text.split(",")
	    if r.strip()}


def test_fields_as_debians_pop3_servers(pkg):
	"""Provides pop3-server, and conflicts with (and replaces) the other
	providers, as Debian's popa3d does: its fields from the archive
	(apt-cache), not from this package, are the reference."""
	r = run(["apt-cache", "show", "popa3d"], check=False)
	need(r.returncode == 0, "apt-cache knows no popa3d (apt-get update)")
	ref = r.stdout.split("\n\n")[0]

	def field(text, name):
		m = re.search(r"^%s: (.*)$" % name, text, re.M)
		return relations(m.group(1)) if m else set()
	assert "pop3-server" in field(ref, "Provides")
	for f in ("Provides", "Conflicts", "Replaces"):
		want = field(ref, f) & {"pop3-server"}
		assert want <= relations(deb_field(pkg["deb"], f)), f
	assert "pop3-server" in relations(deb_field(pkg["deb"], "Replaces"))
	# nettle shared: a libnettle security update reaches pop3d.
	assert re.search(r"\blibnettle\d", deb_field(pkg["deb"], "Depends"))


def deb_files(deb):
	"""The package's regular files (paths), from its data archive."""
	out = run(["dpkg-deb", "-c", str(deb)]).stdout
	return {l.split(None, 5)[5][1:] for l in out.splitlines()
	    if l.startswith("-")}


def test_package_contents(pkg):
	"""The binary, the manual, the PAM file (the one conffile), the
	systemd units and the examples, each example the repository's file
	with the installed path of the binary."""
	files = deb_files(pkg["deb"])
	for f in ("/usr/sbin/pop3d", "/usr/share/man/man8/pop3d.8.gz",
	    "/etc/pam.d/pop3", "/lib/systemd/system/pop3d.socket",
	    "/lib/systemd/system/pop3d@.service"):
		assert f in files, f
	for f in EXAMPLES.values():
		assert EXDIR + f in files, f
	with tempfile.TemporaryDirectory() as d:
		run(["dpkg-deb", "-x", str(pkg["deb"]), d])
		run(["dpkg-deb", "-e", str(pkg["deb"]), d + "/DEBIAN"])
		conf = Path(d, "DEBIAN/conffiles").read_text().split()
		assert conf == ["/etc/pam.d/pop3"], conf
		assert Path(d, "etc/pam.d/pop3").read_bytes() == \
		    (ROOT / "pam.d/pop3").read_bytes()
		for repo, inst in EXAMPLES.items():
			want = (ROOT / repo).read_text().replace(
			    "/usr/local/sbin/pop3d", "/usr/sbin/pop3d")
			assert Path(d + EXDIR + inst).read_text() == want, repo
		man = run(["zcat", d + "/usr/share/man/man8/pop3d.8.gz"]).stdout
		assert man == (ROOT / "pop3d.8").read_text().replace(
		    "/usr/local/sbin/pop3d", "/usr/sbin/pop3d")
		svc = Path(d, "lib/systemd/system/pop3d@.service").read_text()
		assert re.search(r"^ExecStart=/usr/sbin/pop3d$", svc, re.M)
		# The README, naming the installed binary in its launcher
		# examples (found by a review of the package).
		readme = run(["zcat", d + "/usr/share/doc/pop3d/README.gz"]).stdout
		assert "/usr/local/sbin" not in readme
		assert readme == (ROOT / "README").read_text().replace(
		    "/usr/local/sbin/pop3d", "/usr/sbin/pop3d")
		for path in files:
			p = Path(d + path)
			if p.suffix != ".gz" and path != "/usr/sbin/pop3d":
				assert b"/usr/local" not in p.read_bytes(), path


# ---------------------------------------------------------------- its life

def tree_state(top):
	"""Every entry under top, with what an install could change."""
	out = {}
	for d, dirs, files in os.walk(top):
		for n in [""] + dirs + files:
			p = os.path.join(d, n) if n else d
			st = os.lstat(p)
			out[p] = (st.st_mode, st.st_uid, st.st_gid, st.st_size,
			    st.st_mtime_ns)
	return out


def listening_110():
	r = run(["ss", "-Hltn", "sport", "=", ":110"], check=False)
	return r.stdout


def dpkg_status():
	r = run(["dpkg-query", "-W", "-f", "${Status} ${Version}", PKG],
	    check=False)
	return r.stdout.strip() if r.returncode == 0 else ""


def session(spool, cmds):
	"""One POP3 session through the installed binary, started as root as
	inetd starts it: PAM service pop3, the pop3d pre-login user."""
	data = b"".join(c.encode() + b"\r\n" for c in cmds)
	p = subprocess.run(["/usr/sbin/pop3d", "-s", str(spool),
	    "--fail-delay", "100"], input=data, capture_output=True,
	    timeout=60)
	greeting, replies, _ = parse_replies(p.stdout, cmds)
	return p.returncode, greeting, replies


MSGS = [b"From: a@example.org\nSubject: one\n\nfirst body\n",
    b"From: b@example.org\nSubject: two\n\nsecond\nbody\n"]


def check_session(spool):
	"""A wrong password is refused; the right one reads both messages as
	written, DELE 1 and QUIT leave the second one, byte for byte."""
	box = spool / TESTUSER
	u = pwd.getpwnam(TESTUSER)
	box.write_bytes(mbox(MSGS))
	os.chown(box, u.pw_uid, u.pw_gid)
	os.chmod(box, 0o600)
	rc, g, rep = session(spool, ["USER " + TESTUSER, "PASS wrong", "QUIT"])
	assert g and g.ok and rep[1].text.startswith("-ERR [AUTH]"), rep
	cmds = ["USER " + TESTUSER, "PASS " + TESTPW, "STAT", "RETR 1",
	    "RETR 2", "DELE 1", "QUIT"]
	rc, g, rep = session(spool, cmds)
	assert len(rep) == len(cmds) and all(r.ok for r in rep), rep
	want = [expected_retr(m) for m in MSGS]
	assert rep[2].text == "+OK 2 %d" % sum(map(len, want)), rep[2]
	assert [rep[3].data, rep[4].data] == want
	assert rc == 0
	assert parse_mbox(box.read_bytes()) == parse_mbox(mbox(MSGS[1:]))


def apt(*args, check=True):
	"""apt-get, waiting for the dpkg lock (another install may hold it)."""
	return run(APT + list(args), timeout=900, check=check)


def dpkg(*args):
	"""dpkg, waiting for its lock as apt-get does."""
	deadline = time.time() + 600
	while True:
		r = run(["dpkg"] + list(args), check=False)
		if "lock" not in r.stderr or time.time() > deadline:
			assert r.returncode == 0, (args, r.stdout, r.stderr)
			return r
		time.sleep(2)


def install(deb, *extra):
	return apt("install", *extra, str(deb))


@pytest.fixture
def machine(pkg):
	"""A real user with a password (pam_unix), a private spool, and the
	machine put back afterwards: package purged, users removed that the
	test made."""
	need(shutil.which("useradd") and shutil.which("chpasswd"), "passwd")
	assert dpkg_status() == "", "pop3d is installed already: " + \
	    dpkg_status()
	had_pop3d = name_exists("pop3d")
	run(["useradd", "--no-create-home", "--shell", "/usr/sbin/nologin",
	    TESTUSER])
	run(["chpasswd"], input="%s:%s\n" % (TESTUSER, TESTPW))
	spool = Path(tempfile.mkdtemp(prefix="pop3d-debspool."))
	os.chown(spool, 0, grp.getgrnam("mail").gr_gid)
	os.chmod(spool, 0o2775)
	try:
		yield spool
	finally:
		apt("purge", PKG, check=False)
		run(["userdel", TESTUSER], check=False)
		if not had_pop3d and name_exists("pop3d"):
			run(["userdel", "pop3d"], check=False)
			run(["groupdel", "pop3d"], check=False)
		shutil.rmtree(spool, ignore_errors=True)


FAKE_SYSTEMCTL = """#!/bin/sh
# systemctl for test_socket_across_upgrade_and_remove: logs each call;
# pop3d.socket is enabled and active when the file STATE says enabled.
echo "$*" >> LOG
verb=
for a in "$@"; do
	case $a in -*) ;; *) verb=$a; break;; esac
done
state=$(cat STATE)
case $verb in
is-enabled) echo "$state"; [ "$state" = enabled ];;
is-active) [ "$state" = enabled ] && echo active && exit 0
	echo inactive; exit 3;;
esac
exit 0
"""


def service_manager_run(fake, argv):
	"""argv run where the maintainer scripts find systemd running
	(/run/systemd/system, in a private mount namespace) and systemctl is
	fake/systemctl; deb-systemd-invoke is the system's (a policy-rc.d
	that forbids actions is hidden)."""
	need(os.path.exists("/usr/bin/systemctl"), "systemctl (package systemd)")
	made = not os.path.exists("/run/systemd")
	if made:
		os.mkdir("/run/systemd")
	# The fake in systemctl's place: apt runs dpkg with a PATH of its own.
	script = ('mount -t tmpfs tmpfs /run/systemd && mkdir /run/systemd/system'
	    ' && mount --bind %s/systemctl /usr/bin/systemctl'
	    ' && { [ ! -e /usr/sbin/policy-rc.d ] || mount --bind /dev/null '
	    '/usr/sbin/policy-rc.d; } && exec "$@"' % fake)
	try:
		return run(["unshare", "-m", "--propagation", "private", "sh",
		    "-c", script, "sh"] + argv, timeout=900)
	finally:
		if made:
			os.rmdir("/run/systemd")


def test_socket_across_upgrade_and_remove(pkg, machine, tmp_path):
	"""What the maintainer scripts ask of systemd (through the system's
	deb-systemd-invoke): an install starts nothing (pop3d.socket is not
	enabled); once the administrator has enabled it, an upgrade restarts
	it, never leaving it stopped; removing the package stops it, so that
	nothing listens on port 110 for a program that is gone (found by a
	review of the package: the upgrade only stopped it, the removal left
	it listening)."""
	need(shutil.which("unshare") and shutil.which("deb-systemd-invoke"),
	    "unshare, deb-systemd-invoke (util-linux, init-system-helpers)")
	fake = tmp_path / "bin"
	fake.mkdir()
	log, state = tmp_path / "log", tmp_path / "state"
	(fake / "systemctl").write_text(FAKE_SYSTEMCTL.replace("LOG",
	    str(log)).replace("STATE", str(state)))
	(fake / "systemctl").chmod(0o755)

	def step(argv, enabled):
		state.write_text("enabled\n" if enabled else "disabled\n")
		log.write_text("")
		r = service_manager_run(fake, argv)
		step.log = log.read_text() + r.stdout[-3000:] + r.stderr[-3000:]
		acts = []
		for line in log.read_text().splitlines():
			w = [a for a in line.split() if not a.startswith("-")]
			if "pop3d.socket" in w and w[0] in ("start", "stop",
			    "restart", "try-restart", "reload-or-restart"):
				acts.append(w[0])
		return acts

	assert step(APT + ["install", str(pkg["deb"])], False) == [], step.log
	newer = "%s+test2" % pkg["version"]
	deb2, _, _ = build(pkg["base"], "upgrade2", bump=newer,
	    opts="nocheck")
	assert step(APT + ["install", str(deb2)], True) == ["restart"], \
	    step.log
	assert dpkg_status() == "install ok installed " + newer
	assert step(APT + ["remove", PKG], True) == ["stop"], step.log
	step(APT + ["purge", PKG], False)
	assert dpkg_status() == "" or "not-installed" in dpkg_status()


def name_exists(name):
	try:
		pwd.getpwnam(name)
		return True
	except KeyError:
		return False


def test_install_session_upgrade_remove_purge(pkg, machine, tmp_path):
	"""The package's whole life on this machine, each step checked."""
	spool = machine
	mail_before = tree_state("/var/mail")
	listen_before = listening_110()
	files = deb_files(pkg["deb"])

	install(pkg["deb"])
	assert dpkg_status() == "install ok installed " + pkg["version"]
	u = pwd.getpwnam("pop3d")
	assert u.pw_uid < 1000 and u.pw_shell == "/usr/sbin/nologin", u
	assert not os.path.exists(u.pw_dir), u
	# Nothing enabled, started or listening.
	assert listening_110() == listen_before
	assert not os.path.lexists(
	    "/etc/systemd/system/sockets.target.wants/pop3d.socket")
	assert run(["deb-systemd-helper", "is-enabled", "pop3d.socket"],
	    check=False).returncode != 0
	check_session(spool)

	# The same version again; the user is kept, not made twice.
	install(pkg["deb"], "--reinstall")
	assert pwd.getpwnam("pop3d").pw_uid == u.pw_uid
	# A rebuilt, higher version over an administrator's edit of the
	# PAM file: the edit stays (the packaged file did not change).
	newer = "%s+test1" % pkg["version"]
	deb2, log2, _ = build(pkg["base"], "upgrade", bump=newer,
	    opts="nocheck")
	assert "== build/unit/" not in log2	# nocheck skips the unit tests
	pam = Path("/etc/pam.d/pop3")
	edited = pam.read_text() + "# local edit\n"
	pam.write_text(edited)
	install(deb2)
	assert dpkg_status() == "install ok installed " + newer
	assert pam.read_text() == edited
	assert pwd.getpwnam("pop3d").pw_uid == u.pw_uid
	check_session(spool)
	# The sessions as root kept the user's index cache.
	assert os.path.isdir("/var/cache/pop3d/" + TESTUSER)

	apt("remove", PKG)
	assert not os.path.exists("/usr/sbin/pop3d")
	assert pam.read_text() == edited		# remove keeps conffiles
	assert dpkg_status().startswith("deinstall ok config-files")

	apt("purge", PKG)
	assert dpkg_status() == "" or "not-installed" in dpkg_status()
	left = [f for f in files if os.path.lexists(f)]
	assert not left, left
	assert not os.path.lexists("/usr/share/doc/pop3d")	# its directories
	assert not list(Path("/var/lib/dpkg/info").glob("pop3d.*"))
	assert not [p for p in Path("/var/lib/systemd").glob(
	    "deb-systemd-helper-*/**/*pop3d*")]
	assert not os.path.exists("/run/pop3d-empty")
	assert not os.path.exists("/var/cache/pop3d")	# the index caches
	dpkg("--purge", PKG)				# again: nothing to do
	assert tree_state("/var/mail") == mail_before
	assert listening_110() == listen_before
	# The system user stays, as Debian's packages leave theirs.
	assert pwd.getpwnam("pop3d").pw_uid == u.pw_uid

	# Installed again after the purge: the same user, a fresh conffile.
	install(pkg["deb"])
	assert pwd.getpwnam("pop3d").pw_uid == u.pw_uid
	assert pam.read_bytes() == (ROOT / "pam.d/pop3").read_bytes()
	check_session(spool)
	apt("purge", PKG)
	assert not [f for f in files if os.path.lexists(f)]
	assert tree_state("/var/mail") == mail_before
