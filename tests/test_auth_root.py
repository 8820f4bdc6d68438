"""pop3d started as root (issue 3): PAM, the privilege split, the user's
process, the password file as root, logging.

Real root runs pop3d here (as inetd would), so the privilege drops are the
real ones: /proc shows the kernel's view of each process.  cwrap provides
the rest: nss_wrapper a private passwd/group (users below), pam_wrapper a
private PAM stack with pam_matrix (passwords) and a small test module
built here, pam_pop3test.so, that PAM cannot otherwise fake honestly:
acct_mgmt returns PAM_ACCT_EXPIRED for carol and PAM_NEW_AUTHTOK_REQD for
dave, auth maps the login "al" to PAM_USER "alice", and every call
(authenticate, acct_mgmt, setcred, open/close_session, and pam_end through
a data cleanup) is written to a
log with the pid and euid that made it.

Every pop3d run here is checked for sanitizer reports (the build/san binary):
its stderr, and its exit status, which a report sets to SAN_EXIT, none of
pop3d's own (without -d the reports themselves go to /dev/null).

A hostile pre-login process is simulated with an LD_PRELOAD shim that
rewrites the record pop3d's pre-login child sends (send(2) of exactly a
record's size, by a non-root process), so the real binary's root parent is
what rejects it.
"""

import base64
import os
import shutil
import signal
import socket
import stat
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from conftest import (LIMITS, REPO, ROOT, SAN_EXIT, SESSION_LOCK, Pop3Env,
    login, make_hash, mbox, need, pop3d_check)
from messages import M1
import test_session_poplib as P

LIBDIR = Path("/usr/lib/x86_64-linux-gnu")
NSS_WRAPPER = LIBDIR / "libnss_wrapper.so"
PAM_WRAPPER = LIBDIR / "libpam_wrapper.so"
PAM_MATRIX = LIBDIR / "pam_wrapper" / "pam_matrix.so"

PW = "open sesame 7"		# alice's password (a space, as PASS allows)
PRE_UID = 990			# the pre-login user "pop3d"
MAIL_GID = 8			# Debian's mail group
EMPTY_DIR = "/run/pop3d-empty"

# name, uid, gid, password (None: not in the PAM passdb)
USERS = [
	("root", 0, 0, None),
	("pop3d", PRE_UID, PRE_UID, None),
	("alice", 2001, 2001, PW),
	("bob", 2002, 2002, "bob pw"),
	("carol", 2003, 2003, "carol pw"),	# account expired
	("dave", 2004, 2004, "dave pw"),	# password must be changed
	("toor", 0, 0, "toor pw"),		# uid 0 under another name
	("low", 500, 500, "low pw"),		# below --min-uid
	("gzero", 2005, 0, "gzero pw"),		# primary group root
	("al", 2006, 2006, "al pw"),		# PAM_USER becomes alice
	("nobody", 65534, 65534, None),
]
GROUPS = [("root", 0, ""), ("mail", MAIL_GID, ""), ("staff", 50, "alice"),
    ("pop3d", PRE_UID, "")] + [(n, g, "") for n, u, g, p in USERS
    if g >= 1000 and n not in ("pop3d", "nobody")] + [("nogroup", 65534, "")]

MSGS = [M1, b"From: carol@example.org\nSubject: two\n\nSecond.\n"]

PAM_MODULE = r"""
#include <security/pam_ext.h>
#include <security/pam_modules.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const char *
logpath(int argc, const char **argv)
{
	for (int i = 0; i < argc; i++)
		if (strncmp(argv[i], "log=", 4) == 0)
			return argv[i] + 4;
	return NULL;
}

static void
note(pam_handle_t *h, const char *log, const char *what)
{
	const void *u = NULL, *rhost = NULL;
	FILE *f;

	if (log == NULL || (f = fopen(log, "a")) == NULL)
		return;
	(void)pam_get_item(h, PAM_USER, &u);
	(void)pam_get_item(h, PAM_RHOST, &rhost);
	fprintf(f, "%s user=%s pid=%ld euid=%ld rhost=%s\n", what,
	    u != NULL ? (const char *)u : "-", (long)getpid(),
	    (long)geteuid(), rhost != NULL ? (const char *)rhost : "-");
	fclose(f);
}

static void
cleanup(pam_handle_t *h, void *data, int err)
{
	(void)err;
	note(h, data, "end");
	free(data);
}

static const char *
user(pam_handle_t *h)
{
	const char *u = NULL;

	return pam_get_user(h, &u, NULL) == PAM_SUCCESS && u ? u : "";
}

int
pam_sm_authenticate(pam_handle_t *h, int flags, int argc, const char **argv)
{
	const char *log = logpath(argc, argv), *tok = NULL;

	(void)flags;
	note(h, log, "auth");
	/* sleep=N: a check that takes N seconds. */
	for (int i = 0; i < argc; i++)
		if (strncmp(argv[i], "sleep=", 6) == 0)
			(void)sleep((unsigned)atoi(argv[i] + 6));
	/* Like pam_unix: the password becomes the PAM_AUTHTOK item, which
	 * libpam keeps until pam_end(). */
	if (pam_get_authtok(h, PAM_AUTHTOK, &tok, NULL) != PAM_SUCCESS)
		return PAM_AUTH_ERR;
	if (log != NULL)
		(void)pam_set_data(h, "pop3test", strdup(log), cleanup);
	if (strcmp(user(h), "al") == 0)
		return pam_set_item(h, PAM_USER, "alice");
	return PAM_SUCCESS;
}

int
pam_sm_acct_mgmt(pam_handle_t *h, int flags, int argc, const char **argv)
{
	(void)flags;
	note(h, logpath(argc, argv), "acct");
	if (strcmp(user(h), "carol") == 0)
		return PAM_ACCT_EXPIRED;
	if (strcmp(user(h), "dave") == 0)
		return PAM_NEW_AUTHTOK_REQD;
	return PAM_SUCCESS;
}

int
pam_sm_setcred(pam_handle_t *h, int flags, int argc, const char **argv)
{
	note(h, logpath(argc, argv), (flags & PAM_DELETE_CRED) ?
	    "setcred-delete" : "setcred-establish");
	return PAM_SUCCESS;
}

int
pam_sm_open_session(pam_handle_t *h, int flags, int argc, const char **argv)
{
	(void)flags;
	note(h, logpath(argc, argv), "open");
	return PAM_SUCCESS;
}

int
pam_sm_close_session(pam_handle_t *h, int flags, int argc, const char **argv)
{
	(void)flags;
	note(h, logpath(argc, argv), "close");
	return PAM_SUCCESS;
}
"""

# The record is auth.h's struct auth_rec (compiled with -I the repository).
SHIM = r"""
#define _GNU_SOURCE
#include <sys/socket.h>
#include <dlfcn.h>
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include "auth.h"

/* POP3D_TEST_CLOCK="S:UID": the monotonic clock S seconds ahead in a
 * process once it has become UID (read at start: pop3d may clear the
 * environment). */
static long clock_skew, clock_uid = -1, clock_on;

__attribute__((constructor)) static void
clock_init(void)
{
	const char *m = getenv("POP3D_TEST_CLOCK");

	if (m != NULL && strchr(m, ':') != NULL) {
		clock_skew = atol(m);
		clock_uid = atol(strchr(m, ':') + 1);
	}
}

int
setresuid(uid_t r, uid_t e, uid_t s)
{
	static int (*real)(uid_t, uid_t, uid_t);
	int rc;

	if (real == NULL)
		real = (int (*)(uid_t, uid_t, uid_t))dlsym(RTLD_NEXT,
		    "setresuid");
	rc = real(r, e, s);
	if (rc == 0 && (long)r == clock_uid)
		clock_on = 1;
	return rc;
}

int
clock_gettime(clockid_t id, struct timespec *ts)
{
	static int (*real)(clockid_t, struct timespec *);
	int rc;

	if (real == NULL)
		real = (int (*)(clockid_t, struct timespec *))dlsym(RTLD_NEXT,
		    "clock_gettime");
	rc = real(id, ts);
	if (rc == 0 && clock_on && id == CLOCK_MONOTONIC)
		ts->tv_sec += clock_skew;
	return rc;
}

ssize_t
send(int fd, const void *buf, size_t len, int flags)
{
	static ssize_t (*real)(int, const void *, size_t, int);
	static char big[sizeof(struct auth_rec) + 4096];
	struct auth_rec *r = (struct auth_rec *)big;
	const char *m = getenv("POP3D_TEST_RECORD");
	size_t i;

	if (real == NULL)
		real = (ssize_t (*)(int, const void *, size_t, int))
		    dlsym(RTLD_NEXT, "send");
	if (m == NULL || len != sizeof(struct auth_rec) || getuid() == 0)
		return real(fd, buf, len, flags);
	memcpy(big, buf, len);
	if (strcmp(m, "short") == 0)
		len--;
	else if (strcmp(m, "long") == 0)
		len += 4096;
	else if (strcmp(m, "user-unterminated") == 0)
		memset(r->user, 'a', sizeof(r->user));
	else if (strcmp(m, "pass-unterminated") == 0)
		memset(r->pass, 'p', sizeof(r->pass));
	else if (strcmp(m, "mech") == 0)
		strcpy(r->mech, "CRAM-MD5");
	else if (strcmp(m, "ilen") == 0)
		r->ilen = POP3_INBUF + 1;
	else if (strcmp(m, "user-path") == 0)
		strcpy(r->user, "../../etc");
	else if (strcmp(m, "garbage") == 0) {
		srand(7);
		for (i = 0; i < len; i++)
			big[i] = (char)(rand() & 0xff);
	} else if (strcmp(m, "flood") == 0) {
		/* More logins than the parent allows a session. */
		for (i = 0; i < POP3_AUTH_FAIL_MAX; i++)
			(void)real(fd, big, len, flags);
	} else if (strcmp(m, "deaf") == 0)
		/* A SIGTERM the monitor forwards from here on is lost. */
		(void)signal(SIGTERM, SIG_IGN);
	return real(fd, big, len, flags);
}

ssize_t
recv(int fd, void *buf, size_t len, int flags)
{
	static ssize_t (*real)(int, void *, size_t, int);
	const char *m = getenv("POP3D_TEST_RECORD");
	ssize_t n;

	if (real == NULL)
		real = (ssize_t (*)(int, void *, size_t, int))
		    dlsym(RTLD_NEXT, "recv");
	n = real(fd, buf, len, flags);
	/* "deaf": the pre-login child lingers 3 s after its "y". */
	if (m != NULL && strcmp(m, "deaf") == 0 && getuid() != 0 &&
	    n == 1 && *(char *)buf == 'y')
		(void)sleep(3);
	return n;
}
"""


def cc(src, out, *args):
	cc = shutil.which("cc") or shutil.which("gcc")
	need(cc, "a C compiler")
	subprocess.run([cc, "-shared", "-fPIC", "-O1", "-o", str(out),
	    str(src)] + list(args), check=True)


@pytest.fixture(scope="session")
def tools(tmp_path_factory):
	"""The cwrap libraries, the test PAM module and the record shim."""
	need(ROOT, "runs pop3d as real root (the CI does)")
	for p in (NSS_WRAPPER, PAM_WRAPPER, PAM_MATRIX):
		need(p.exists(), "%s (cwrap: tests/packages.txt)" % p)
	d = Path(tempfile.mkdtemp(prefix="pop3d-authtools.", dir="/tmp"))
	os.chmod(d, 0o755)
	(d / "pam_pop3test.c").write_text(PAM_MODULE)
	cc(d / "pam_pop3test.c", d / "pam_pop3test.so", "-lpam")
	cc(REPO / "tests" / "pam_holdfd.c", d / "pam_holdfd.so", "-lpam")
	(d / "shim.c").write_text(SHIM)
	cc(d / "shim.c", d / "shim.so", "-I", str(REPO), "-ldl")
	yield d
	shutil.rmtree(d, ignore_errors=True)


# The check of every pop3d run here, by its old name.
sanitizer_checked = pop3d_check


def proc_status(pid):
	"""/proc/pid/status as a dict of strings."""
	out = {}
	with open("/proc/%d/status" % pid) as f:
		for ln in f:
			k, _, v = ln.partition(":")
			out[k] = v.strip()
	return out


def proc_limits(pid):
	out = {}
	with open("/proc/%d/limits" % pid) as f:
		for ln in f.readlines()[1:]:
			name = ln[:26].strip()
			out[name] = ln[26:].split()[:2]
	return out


def children(pid):
	kids = []
	for d in os.listdir("/proc"):
		if not d.isdigit():
			continue
		try:
			with open("/proc/%s/stat" % d) as f:
				st = f.read()
		except OSError:
			continue
		fields = st[st.rindex(")") + 2:].split()
		if int(fields[1]) == pid and fields[0] != "Z":
			kids.append(int(d))
	return kids


def one_child(pid, timeout=5):
	"""The single live child of pid, once there is exactly one."""
	deadline = time.monotonic() + timeout
	while time.monotonic() < deadline:
		k = children(pid)
		if len(k) == 1:
			return k[0]
		time.sleep(0.02)
	raise AssertionError("pid %d has children %r" % (pid, children(pid)))


# --pam-session values: the default (no), and the one that keeps a root
# monitor (held).  "login" runs as "no" does, but for the session stack.
HELD = "--pam-session=held"
MODES = [[], ["--pam-session=login"], [HELD]]
MODE_IDS = ["no", "login", "held"]


def user_pid(s, extra):
	"""The user's process of session s (run with options extra), after
	the reply to PASS: the root monitor's one child when a PAM session is
	held, else the session's own pid, which has become the user and has
	no child (pop3d --pam-session, README DESIGN)."""
	if HELD in extra:
		return one_child(s.proc.pid)
	assert children(s.proc.pid) == [], children(s.proc.pid)
	return s.proc.pid


class RootEnv(Pop3Env):
	"""A spool, a fake user database and PAM stack, and pop3d as root:
	Pop3Env's runner with root's argv(), environment and user (kw())."""

	def __init__(self, binary, base, tools):
		self.bin = binary
		self.base = base
		self.tools = tools
		self.cleanup = []
		self.spool = base / "spool"
		self.spool.mkdir()
		os.chown(self.spool, 0, MAIL_GID)
		os.chmod(self.spool, 0o2775)		# Debian's /var/mail
		nss = base / "nss"
		nss.mkdir()
		self.nss_passwd = nss / "passwd"
		self.nss_group = nss / "group"
		self.nss_passwd.write_text("".join(
		    "%s:x:%d:%d:%s:/home/%s:/bin/sh\n" % (n, u, g, n, n)
		    for n, u, g, p in USERS))
		self.nss_group.write_text("".join(
		    "%s:x:%d:%s\n" % g for g in GROUPS))
		self.passdb = base / "passdb"
		self.passdb.write_text("".join("%s:%s:pop3\n" % (n, p)
		    for n, u, g, p in USERS if p is not None) +
		    "ghost:ghost pw:pop3\n")		# PAM only, no passwd entry
		self.pamlog = base / "pam.log"
		self.pamlog.touch()
		os.chmod(self.pamlog, 0o666)
		self.pamdir = base / "pam.d"
		self.pamdir.mkdir()
		self.write_service("pop3")
		(self.pamdir / "other").write_text(
		    "auth required pam_deny.so\naccount required pam_deny.so\n"
		    "session required pam_deny.so\n")
		for p in (base, nss, self.pamdir, self.nss_passwd, self.nss_group,
		    self.passdb):
			os.chmod(p, 0o755 if p.is_dir() else 0o644)
		self.passwd = base / "passwd"		# for --auth=passwd:FILE
		self.write_passwd(["alice:" + make_hash(PW)])
		self.write_mbox("alice", 2001, 2001, mbox(MSGS))

	def write_service(self, name, account_extra="", auth_extra=""):
		"""auth_extra: more arguments of the test module's auth line."""
		m = self.tools / "pam_pop3test.so"
		log = "log=%s" % self.pamlog
		(self.pamdir / name).write_text(
		    "auth required %s passdb=%s verbose\n"
		    "auth required %s %s %s\n"
		    "account required %s passdb=%s\n"
		    "account required %s %s\n%s"
		    "session required %s %s\n" % (PAM_MATRIX, self.passdb, m, log,
		    auth_extra, PAM_MATRIX, self.passdb, m, log, account_extra, m,
		    log))

	def write_passwd(self, lines, mode=0o600, owner=0):
		self.passwd.write_text("".join(ln + "\n" for ln in lines))
		os.chown(self.passwd, owner, 0)
		os.chmod(self.passwd, mode)

	def mailbox(self, user="alice"):
		return self.spool / user

	def write_mbox(self, user, uid, gid, data, mode=0o600):
		p = self.mailbox(user)
		p.write_bytes(data)
		os.chown(p, uid, gid)
		os.chmod(p, mode)

	def env(self, **extra):
		e = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C",
		    "LD_PRELOAD": "%s %s" % (PAM_WRAPPER, NSS_WRAPPER),
		    "PAM_WRAPPER": "1", "PAM_WRAPPER_SERVICE_DIR": str(self.pamdir),
		    # No RTLD_DEEPBIND, which the sanitizer build cannot take
		    # (pam_wrapper 1.1.4 reads the UID_ name by mistake).
		    "PAM_WRAPPER_DISABLE_DEEPBIND": "1",
		    "UID_WRAPPER_DISABLE_DEEPBIND": "1",
		    "NSS_WRAPPER_DISABLE_DEEPBIND": "1",
		    "NSS_WRAPPER_PASSWD": str(self.nss_passwd),
		    "NSS_WRAPPER_GROUP": str(self.nss_group)}
		# The sanitizer build: the wrappers come before libasan,
		# LeakSanitizer cannot trace a process that changed its uid, and
		# a report exits SAN_EXIT, none of pop3d's own statuses (ASan's
		# default, 1, is EOF's).
		e["ASAN_OPTIONS"] = ":".join(x for x in (
		    os.environ.get("ASAN_OPTIONS"), "verify_asan_link_order=0",
		    "detect_leaks=0", "exitcode=%d" % SAN_EXIT) if x)
		e["UBSAN_OPTIONS"] = ":".join(x for x in (
		    os.environ.get("UBSAN_OPTIONS"), "print_stacktrace=1",
		    "exitcode=%d" % SAN_EXIT) if x)
		e.update(extra)
		return e

	def argv(self, *extra, auth=None, fail_delay=100, debug=True):
		a = [self.bin, "-s", str(self.spool), "-u", "pop3d",
		    "--fail-delay", str(fail_delay)]
		if auth:
			a += ["-a", auth]
		if debug:
			a.append("-d")
		return a + list(extra)

	def kw(self, env=None, user=None):
		kw = {"cwd": str(self.base), "env": env or self.env()}
		if user is not None:
			kw.update(user=user, group=user, extra_groups=[])
		return kw

	def start_args(self, extra, kw):
		"""kw: argv()'s keywords, and env and user (kw()'s)."""
		pkw = self.kw(kw.pop("env", None), kw.pop("user", None))
		return self.argv(*extra, **kw), pkw

	def pam_events(self):
		return [ln.split() for ln in self.pamlog.read_text().splitlines()]


@pytest.fixture
def root(pop3d_bin, tools):
	base = Path(tempfile.mkdtemp(prefix="pop3d-root.", dir="/tmp"))
	os.chmod(base, 0o755)
	env = RootEnv(pop3d_bin, base, tools)
	yield env
	env.finish()


def plain(authz, user, pw):
	return base64.b64encode(("%s\0%s\0%s" % (authz, user, pw)).encode()
	    ).decode()


# ---------------------------------------------------------------- PAM

def test_pam_login_user_pass(root):
	t = root.run(login("alice", PW) + ["STAT", "RETR 1", "QUIT"])
	assert t.rc == 0, t
	assert [r.ok for r in t.replies] == [True] * 5, t
	assert t.replies[2].text.startswith("+OK 2 "), t
	assert b"First." in t.replies[3].data
	assert "login: user alice uid 2001 mech USER" in t.stderr, t
	assert PW not in t.stderr


def test_auth_plain_initial_response_and_continuation(root):
	t = root.run(["AUTH PLAIN " + plain("", "alice", PW), "STAT", "QUIT"])
	assert [r.ok for r in t.replies] == [True] * 3, t
	assert "mech PLAIN" in t.stderr
	s = root.session()
	assert s.greeting().ok
	s.send("AUTH PLAIN\r\n")
	r = s.readline()
	assert r.startswith(b"+ "), r
	r = s.cmd(plain("alice", "alice", PW))
	assert r.ok, (r, s.stderr())
	assert s.cmd("QUIT").ok
	assert s.wait() == 0


def test_auth_plain_failures(root):
	t = root.run(["AUTH PLAIN " + plain("", "alice", "wrong"),
	    "AUTH PLAIN " + plain("bob", "alice", PW), "AUTH PLAIN !!!!",
	    "QUIT"])
	assert t.replies[0].text == "-ERR [AUTH] authentication failed", t
	assert t.replies[1].err and t.replies[2].err, t
	assert t.rc == LIMITS["POP3_EX_NOUSER"], t	# failed, then QUIT
	assert "login: user" not in t.stderr
	assert PW not in t.stderr and "wrong" not in t.stderr
	s = root.session()
	assert s.greeting().ok
	s.send("AUTH PLAIN\r\n")
	assert s.readline().startswith(b"+ ")
	assert s.cmd("*").err
	assert s.cmd("QUIT").ok
	assert s.wait() == 0
	ev = [e[0] for e in root.pam_events()]
	assert ev.count("end") == ev.count("auth") == 1, ev


def timed_failure(root, user, pw, delay):
	s = root.session(fail_delay=delay)
	assert s.greeting().ok
	assert s.cmd("USER " + user).ok
	t0 = time.monotonic()
	r = s.cmd("PASS " + pw, timeout=delay / 1000 + 10)
	el = time.monotonic() - t0
	assert s.cmd("QUIT").ok
	assert s.wait() == 0
	return r.text, el, s.stderr()


@pytest.mark.parametrize("auth", ["pam", "passwd"])
def test_unknown_user_and_wrong_password_identical(root, auth):
	a = None if auth == "pam" else "passwd:%s" % root.passwd
	res = {}
	for user, pw in (("alice", "not it"), ("nosuchuser", "x"),
	    ("ghost", "ghost pw"), ("alice", PW + "x")):
		s = root.session(auth=a, fail_delay=700)
		assert s.greeting().ok
		assert s.cmd("USER " + user).ok
		t0 = time.monotonic()
		r = s.cmd("PASS " + pw, timeout=10)
		res[(user, pw)] = (r.text, time.monotonic() - t0)
		s.send("QUIT\r\n")
		s.wait()
		log = s.stderr()
		assert pw not in log
		if user == "nosuchuser":
			assert user not in log, log
			assert "UNKNOWN USER" in log, log
	texts = {v[0] for v in res.values()}
	assert texts == {"-ERR [AUTH] authentication failed"}, res
	# The fixed deadline: 700 ms after PASS, whatever happened.
	for v in res.values():
		assert 0.69 <= v[1] < 1.2, res


@pytest.mark.parametrize("end", ["QUIT", None])
def test_one_failure_then_giving_up_is_67(root, end):
	"""As root too (the pre-login child's status is the session's): one
	failed login, then QUIT or EOF, is pop3d.8's 67."""
	t = root.run(["USER alice", "PASS bad"] + ([end] if end else []))
	assert t.replies[1].text == "-ERR [AUTH] authentication failed", t
	assert t.rc == LIMITS["POP3_EX_NOUSER"], t


def test_three_failures_disconnect(root):
	cmds = []
	for i in range(3):
		cmds += ["USER alice", "PASS bad%d" % i]
	t = root.run(cmds + login("alice", PW))
	assert [r.text for r in t.replies[1:6:2]] == [
	    "-ERR [AUTH] authentication failed"] * 3, t
	assert len(t.replies) == 6, t
	assert t.rc == LIMITS["POP3_EX_NOUSER"], t


@pytest.mark.parametrize("user,why", [
	("carol", "account expired"),
	("dave", "password expired"),
])
def test_account_refused_by_pam_acct_mgmt(root, user, why):
	t = root.run(["USER " + user, "PASS %s pw" % user, "QUIT"])
	assert t.replies[1].text == "-ERR [AUTH] authentication failed", t
	assert "user %s" % user in t.stderr and why in t.stderr, t.stderr
	assert "login: user" not in t.stderr
	ev = [e[0] for e in root.pam_events()]
	assert "open" not in ev and ev[-1] == "end", ev


def test_account_denied_by_pam_stack(root):
	root.write_service("pop3", "account requisite pam_deny.so\n")
	t = root.run(login("alice", PW) + ["QUIT"])
	assert t.replies[1].err, t
	assert "account refused" in t.stderr, t.stderr


@pytest.mark.parametrize("user,why", [
	("toor", "uid 0"),
	("low", "below --min-uid"),
	("gzero", "gid 0"),
])
def test_root_and_low_ids_refused(root, user, why):
	t = root.run(["USER " + user, "PASS %s pw" % user, "QUIT"])
	assert t.replies[1].text == "-ERR [AUTH] authentication failed", t
	assert why in t.stderr, t.stderr
	assert "login: user" not in t.stderr
	ev = [e[0] for e in root.pam_events()]
	assert "open" not in ev and ev[-1] == "end", ev


def test_min_uid_option(root):
	root.write_mbox("low", 500, 500, b"")
	t = root.run(["USER low", "PASS low pw", "STAT", "QUIT"], "-m", "500")
	assert t.replies[1].ok, t
	assert "login: user low uid 500" in t.stderr


@pytest.mark.parametrize("min_uid", [None, 1500])
def test_min_uid_both_sides(root, min_uid):
	"""--min-uid M (default 1000): uid M is served, uid M - 1 refused with
	the failed-login reply; ids from the password file, so any uid."""
	m = 1000 if min_uid is None else min_uid
	hashes = make_hash("pw")
	root.write_passwd(["u%d:%s:%d:%d" % (u, hashes, u, u)
	    for u in (m - 1, m)])
	for u in (m - 1, m):
		root.write_mbox("u%d" % u, u, u, mbox(MSGS))
	extra = [] if min_uid is None else ["--min-uid", str(min_uid)]
	a = "passwd:%s" % root.passwd
	t = root.run(["USER u%d" % m, "PASS pw", "STAT", "QUIT"], *extra,
	    auth=a)
	assert t.replies[1].ok and t.replies[2].text.startswith("+OK 2 "), t
	assert t.rc == 0, t
	t = root.run(["USER u%d" % (m - 1), "PASS pw", "STAT", "QUIT"], *extra,
	    auth=a)
	assert t.replies[1].text == "-ERR [AUTH] authentication failed", t
	assert t.replies[2].err and t.replies[3].ok, t	# still AUTHORIZATION


@pytest.mark.parametrize("extra", MODES, ids=MODE_IDS)
def test_pam_user_changed_by_module_is_used(root, extra):
	"""Also when the check process reports it (PAM_USER, not the login)."""
	s = root.session(*extra)
	assert s.greeting().ok
	assert s.cmd("USER al").ok
	r = s.cmd("PASS al pw")
	assert r.ok, (r, s.stderr())
	assert s.cmd("STAT").text.startswith("+OK 2 ")	# alice's mailbox
	st = proc_status(user_pid(s, extra))
	assert st["Uid"].split() == ["2001"] * 4, st
	assert s.cmd("QUIT").ok
	assert s.wait() == 0
	assert "login: user alice uid 2001" in s.stderr()


def test_pam_user_without_passwd_entry_refused(root):
	t = root.run(["USER ghost", "PASS ghost pw", "QUIT"])
	assert t.replies[1].err, t
	assert "UNKNOWN USER" in t.stderr or "no passwd entry" in t.stderr


def test_pam_service_option(root):
	root.write_service("popmail")
	(root.pamdir / "pop3").unlink()
	# pam_matrix's account check wants the service named in its passdb.
	root.passdb.write_text(root.passdb.read_text().replace(":pop3\n",
	    ":popmail\n"))
	t = root.run(login("alice", PW) + ["QUIT"], "-P", "popmail")
	assert t.replies[1].ok, t
	t = root.run(login("alice", PW) + ["QUIT"])
	assert t.replies[1].err, t


# ---------------------------------------------------------------- PAM sessions
# The test module logs every PAM call with the pid and euid that made it:
# an oracle of its own, apart from pop3d's log.

SESSION_CALLS = ["auth", "acct", "setcred-establish", "open", "close",
    "setcred-delete", "end"]


def session_tree(pid):
	"""pid and all its live descendants, from /proc."""
	out, todo = [], [pid]
	while todo:
		p = todo.pop()
		out.append(p)
		todo += children(p)
	return sorted(out)


def check_process_calls(root, pid, names):
	"""The PAM calls so far are names, all made by one root process that
	is neither the session's pid nor one of its live processes now: the
	short-lived check process."""
	ev = root.pam_events()
	assert [e[0] for e in ev] == names, ev
	pids = {int(e[2][4:]) for e in ev}
	assert len(pids) == 1 and not pids & set(session_tree(pid)), \
	    (ev, session_tree(pid))
	assert {e[3] for e in ev} == {"euid=0"}, ev
	assert all(e[1] == "user=alice" for e in ev), ev


def alone_as_the_user(pid):
	"""The session is one process, pid, as the user, and the process
	above it is the test (no root pop3d is left)."""
	assert session_tree(pid) == [pid], session_tree(pid)
	st = proc_status(pid)
	assert st["Uid"].split() == ["2001"] * 4, st
	assert int(st["PPid"]) == os.getpid(), st


def test_pam_default_no_session_and_no_root_process(root):
	"""By default: authenticate and acct_mgmt only, in a root process
	that ends with the check; before the login two processes (the root
	one inetd started and the pre-login child), after it one, the user's,
	which is the pid inetd started."""
	s = root.session()
	assert s.greeting().ok
	pid = s.proc.pid
	pre = one_child(pid)
	assert session_tree(pid) == sorted([pid, pre])
	assert proc_status(pid)["Uid"].split() == ["0"] * 4
	assert proc_status(pre)["Uid"].split()[0] == str(PRE_UID)
	assert s.cmd("USER alice").ok
	assert s.cmd("PASS " + PW).ok, s.stderr()
	check_process_calls(root, pid, ["auth", "acct", "end"])
	alone_as_the_user(pid)
	assert s.cmd("STAT").ok
	alone_as_the_user(pid)
	assert s.cmd("QUIT").ok
	assert s.wait() == 0, s.stderr()
	assert [e[0] for e in root.pam_events()] == ["auth", "acct", "end"]


def test_pam_session_login_opens_and_closes_before_the_transaction(root):
	"""--pam-session=login: the session stack opened and closed in the
	check process, all of it done when the reply to PASS (the first one
	of the user's process) comes; then one process, as by default."""
	s = root.session("--pam-session=login")
	s.login("alice", PW)
	pid = s.proc.pid
	check_process_calls(root, pid, SESSION_CALLS)
	alone_as_the_user(pid)
	assert s.cmd("STAT").ok
	assert s.cmd("QUIT").ok
	assert s.wait() == 0, s.stderr()
	assert [e[0] for e in root.pam_events()] == SESSION_CALLS


@pytest.mark.parametrize("end", ["QUIT", "drop"])
def test_pam_session_held_until_the_session_ends(root, end):
	"""--pam-session=held: the root pid inetd started authenticates,
	opens the session and keeps it open while its one child, the user's
	process, runs; it closes it when that ends, by QUIT or by the client
	going away."""
	s = root.session(HELD)
	s.login("alice", PW)
	pid = s.proc.pid
	c = one_child(pid)
	assert session_tree(pid) == sorted([pid, c])
	assert proc_status(pid)["Uid"].split()[1] == "0"
	assert proc_status(c)["Uid"].split() == ["2001"] * 4
	assert s.cmd("STAT").ok
	ev = root.pam_events()
	assert [e[0] for e in ev] == SESSION_CALLS[:4], ev
	assert {e[2] for e in ev} == {"pid=%d" % pid}, ev
	if end == "QUIT":
		assert s.cmd("QUIT").ok
		assert s.wait() == 0, s.stderr()
	else:
		s.close_stdin()
		assert s.wait() == LIMITS["POP3_EX_CLOSED"], s.stderr()
	ev = root.pam_events()
	assert [e[0] for e in ev] == SESSION_CALLS, ev
	assert {e[2] for e in ev} == {"pid=%d" % pid}, ev
	assert {e[3] for e in ev} == {"euid=0"}, ev


@pytest.mark.parametrize("arg", ["bogus", "", "yes", "HELD"])
def test_pam_session_option_refuses_other_values(root, arg):
	t = root.run(["QUIT"], "--pam-session=" + arg)
	assert t.rc == LIMITS["POP3_EX_USAGE"], t
	assert "invalid PAM session mode" in t.stderr, t.stderr
	assert t.replies == [], t


# ---------------------------------------------------------------- processes

def test_prelogin_process_is_sandboxed(root):
	s = root.session(debug=False)
	assert s.greeting().ok
	pid = s.proc.pid
	c = one_child(pid)
	st = proc_status(c)
	assert st["Uid"].split() == [str(PRE_UID)] * 4, st
	assert st["Gid"].split() == [str(PRE_UID)] * 4, st
	assert st["Groups"] == "", st
	assert st["NoNewPrivs"] == "1", st
	assert int(st["CapEff"], 16) == 0 and int(st["CapPrm"], 16) == 0, st
	rootdir = os.readlink("/proc/%d/root" % c)
	assert rootdir == EMPTY_DIR or rootdir.startswith("/tmp/pop3d-empty."), \
	    rootdir
	assert os.listdir("/proc/%d/root" % c) == []
	assert os.readlink("/proc/%d/cwd" % c) == rootdir
	lim = proc_limits(c)
	assert lim["Max open files"] == ["3", "3"], lim
	assert lim["Max processes"] == ["0", "0"], lim
	assert lim["Max file size"] == ["0", "0"], lim
	assert lim["Max core file size"] == ["0", "0"], lim
	# The root parent is out of the client's reach meanwhile.
	pst = proc_status(pid)
	assert pst["Uid"].split()[1] == "0"
	for fd in (0, 1, 2):
		assert os.readlink("/proc/%d/fd/%d" % (pid, fd)) == "/dev/null"
	assert s.cmd("QUIT").ok
	assert s.wait() == 0


@pytest.mark.parametrize("extra", MODES, ids=MODE_IDS)
def test_user_process_runs_as_the_user(root, extra):
	s = root.session(*extra)
	assert s.greeting().ok
	client_fds = {os.readlink("/proc/self/fd/%d" % f.fileno())
	    for f in (s.proc.stdin, s.proc.stdout)}	# our ends of the pipes
	assert s.cmd("USER alice").ok
	assert s.cmd("PASS " + PW).ok
	pid = s.proc.pid
	c = user_pid(s, extra)
	st = proc_status(c)
	assert st["Uid"].split() == ["2001"] * 4, st
	assert st["Gid"].split() == ["2001"] * 4, st
	# Only the mail group (the spool is root:mail 2775), never staff or 0.
	assert st["Groups"].split() == [str(MAIL_GID)], st
	assert st["NoNewPrivs"] == "1", st
	for cap in ("CapInh", "CapPrm", "CapEff", "CapAmb"):
		assert int(st[cap], 16) == 0, st
	assert os.readlink("/proc/%d/root" % c) == "/"
	# The user's process has the client; the root parent does not.
	assert {os.readlink("/proc/%d/fd/%d" % (c, fd)) for fd in (0, 1)} == \
	    client_fds
	if c != pid:
		pfds = {os.readlink("/proc/%d/fd/%s" % (pid, fd))
		    for fd in os.listdir("/proc/%d/fd" % pid)}
		assert not pfds & client_fds, pfds
		assert proc_status(pid)["Uid"].split()[1] == "0"
	assert s.cmd("STAT").ok
	assert s.cmd("QUIT").ok
	assert s.wait() == 0


def fd_links(pid):
	"""{fd: what it points at} of a process, from /proc."""
	d = "/proc/%d/fd" % pid
	return {int(fd): os.readlink("%s/%s" % (d, fd)) for fd in os.listdir(d)}


@pytest.mark.parametrize("extra", MODES, ids=MODE_IDS)
@pytest.mark.parametrize("debug", [True, False])
def test_children_hold_no_descriptor_pam_opened(root, debug, extra):
	"""A PAM module (tests/pam_holdfd.c) that opens a root-only 0600 file
	in authenticate, acct_mgmt and open_session and keeps it open, as
	pam_systemd or an LDAP module keeps its descriptor: the monitor holds
	the file (--pam-session=held), the pre-login child (after a failed
	login) and the user's process do not; by default no process left
	holds it.  Each child has exactly the descriptors it owns: the
	client on 0 and 1, 2 (stderr with -d, else /dev/null), the pre-login
	child its socket to the monitor, the user's process its mailbox, and
	without -d a syslog socket."""
	secret = root.base / "root-only"
	secret.write_text("root's secret\n")
	os.chmod(secret, 0o600)
	hold = "%s file=%s" % (root.tools / "pam_holdfd.so", secret)
	svc = root.pamdir / "pop3"
	svc.write_text("".join("%s required %s\n" % (kind, hold) for kind in
	    ("auth", "account", "session")) + svc.read_text())
	s = root.session(*extra, debug=debug)
	assert s.greeting().ok
	client = {os.readlink("/proc/self/fd/%d" % f.fileno())
	    for f in (s.proc.stdin, s.proc.stdout)}	# our ends of the pipes
	null = "/dev/null"
	err = s.errfile.name if debug else null

	def check(pid, extra_sockets, files=()):
		fds = fd_links(pid)
		assert str(secret) not in fds.values(), fds
		assert {fds.get(0), fds.get(1)} == client, fds
		assert fds.get(2) == err, fds
		rest = [fds[fd] for fd in sorted(fds) if fd > 2]
		for f in files:
			rest.remove(f)
		# Sockets only: the monitor's and (without -d) syslog's.
		assert all(x.startswith("socket:[") for x in rest), fds
		assert len(rest) - extra_sockets in ((0,) if debug else (0, 1)), \
		    fds
		return fds

	assert s.cmd("USER alice").ok
	r = s.cmd("PASS wrong", timeout=10)		# PAM ran: authenticate
	assert r.text == "-ERR [AUTH] authentication failed", (r, s.stderr())
	pre = one_child(s.proc.pid)
	assert proc_status(pre)["Uid"].split()[0] == str(PRE_UID)
	check(pre, 1)
	assert s.cmd("USER alice").ok
	assert s.cmd("PASS " + PW).ok, s.stderr()
	c = user_pid(s, extra)
	assert c != pre and proc_status(c)["Uid"].split() == ["2001"] * 4
	if c != s.proc.pid:
		# The module did hold the file, in the monitor (three times).
		mon = list(fd_links(s.proc.pid).values())
		assert mon.count(str(secret)) >= 3, mon
	# Otherwise the login passing shows that it held it (it fails when
	# it cannot), in a process that is gone.
	# The mailbox and the session lock's file (lock.c) are its own.
	check(c, 0, [str(root.mailbox()), str(root.spool / SESSION_LOCK)])
	assert s.cmd("STAT").ok
	assert s.cmd("QUIT").ok
	assert s.wait() == 0, s.stderr()


def test_no_mail_group_when_the_spool_does_not_need_it(root):
	os.chown(root.spool, 0, 0)
	os.chmod(root.spool, 0o755)
	s = root.session("--lock", "fcntl")
	s.login("alice", PW)
	st = proc_status(user_pid(s, []))
	assert st["Groups"] == "", st
	assert s.cmd("QUIT").ok
	assert s.wait() == 0


def test_fcntl_only_on_a_debian_spool_can_still_update(root):
	"""--lock=fcntl on root:mail 2775: no dotlock, but the update journal
	is still created in the spool, so the mail group stays and DELE of the
	first message (a move that needs the journal) works."""
	before = root.mailbox().read_bytes()
	s = root.session("--lock", "fcntl", HELD)
	s.login("alice", PW)
	st = proc_status(user_pid(s, [HELD]))
	assert st["Groups"].split() == [str(MAIL_GID)], st
	n = int(s.cmd("STAT").text.split()[1])
	assert n >= 2
	assert s.cmd("DELE 1").ok
	q = s.cmd("QUIT")
	assert q.ok, (q, s.stderr())
	assert s.wait() == 0
	after = root.mailbox().read_bytes()
	assert len(after) < len(before) and before.endswith(after), \
	    "only the first message removed"
	assert not list(root.spool.glob(".*journal*"))


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP,
    signal.SIGINT], ids=["TERM", "HUP", "INT"])
@pytest.mark.parametrize("extra", MODES, ids=MODE_IDS)
def test_signal_to_the_session_pid_ends_the_session_and_pam(root, extra,
    sig):
	"""SIGTERM, SIGHUP or SIGINT to the pid inetd started, once the
	user's session runs: status 1 in every mode; a held PAM session is
	closed, the others were closed at login."""
	s = root.session(*extra)
	s.login("alice", PW)
	c = user_pid(s, extra)
	os.kill(s.proc.pid, sig)
	assert s.wait(10) == LIMITS["POP3_EX_CLOSED"], s.stderr()
	assert not os.path.exists("/proc/%d/status" % c) or \
	    proc_status(c)["State"].startswith("Z")
	ev = [e[0] for e in root.pam_events()]
	assert ev.count("open") == ev.count("close"), ev
	assert ev[-1] == "end" and ev.count("end") == 1, ev
	if HELD in extra:
		assert "session ended by signal %d" % sig in s.stderr(), \
		    s.stderr()
		assert ev[-3:] == ["close", "setcred-delete", "end"], ev


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP,
    signal.SIGINT], ids=["TERM", "HUP", "INT"])
def test_signal_to_the_prelogin_child_ends_the_session(root, sig):
	"""SIGTERM, SIGHUP or SIGINT sent to the pre-login child itself, not
	through the monitor: status 1, as for the pid inetd started, not an
	internal error (70); and with the monitor signalled at the same time,
	as systemd's stop signals every process of a service, 20 rounds."""
	s = root.session()
	assert s.greeting().ok
	os.kill(one_child(s.proc.pid), sig)
	assert s.wait(10) == LIMITS["POP3_EX_CLOSED"], s.stderr()
	for i in range(20):
		s = root.session()
		assert s.greeting().ok
		k = one_child(s.proc.pid)
		os.kill(k, sig)
		os.kill(s.proc.pid, sig)
		assert s.wait(10) == LIMITS["POP3_EX_CLOSED"], (i, s.stderr())


def test_prelogin_child_ends_with_a_killed_monitor(root):
	"""kill -9 of the pid inetd started, at the greeting: the pre-login
	child goes with it (within 2 s) and the client's connection ends,
	instead of the child talking to the client until the timeout."""
	s = root.session()
	assert s.greeting().ok
	k = one_child(s.proc.pid)
	os.kill(s.proc.pid, signal.SIGKILL)
	s.wait(10)
	deadline = time.monotonic() + 2
	while os.path.exists("/proc/%d/status" % k) and \
	    not proc_status(k)["State"].startswith("Z"):
		assert time.monotonic() < deadline, proc_status(k)
		time.sleep(0.02)
	assert s.readline(timeout=5) == b""


@pytest.mark.parametrize("extra", MODES, ids=MODE_IDS)
def test_signal_to_the_prelogin_child_during_the_check(root, extra):
	"""SIGTERM to the pre-login child alone while a good login is checked
	(the test module takes 2 s): the session ends with status 1 and no
	user's process starts, rather than 70; every PAM session opened is
	closed."""
	root.write_service("pop3", auth_extra="sleep=2")
	s = root.session(*extra)
	assert s.greeting().ok and s.cmd("USER alice").ok
	s.send("PASS %s\r\n" % PW)
	wait_for_pam(root, "auth")
	pre = [k for k in children(s.proc.pid)
	    if proc_status(k)["Uid"].split()[0] != "0"]
	assert len(pre) == 1, pre
	os.kill(pre[0], signal.SIGTERM)
	assert s.wait(10) == LIMITS["POP3_EX_CLOSED"], s.stderr()
	assert "login: user alice" not in s.stderr(), s.stderr()
	ev = [e[0] for e in root.pam_events()]
	assert ev.count("open") == ev.count("close"), ev


@pytest.mark.parametrize("extra", MODES, ids=MODE_IDS)
def test_session_limit_counts_from_the_start_not_the_login(root, extra):
	"""POP3_SESSION_MAX holds for the whole session: the user's process
	counts it from the start the monitor took, not from the login.  The
	shim puts the user's clock POP3_SESSION_MAX - 3 s ahead once it has
	become alice (uid 2001): a session kept busy (NOOP every 0.25 s,
	idle timeout 10 s) ends 3 s after the login, with an autologout
	reply that names the session's limit, not the idle timeout; it
	answers every NOOP until then.  Counted from the login, it
	would run on."""
	skew = LIMITS["POP3_SESSION_MAX"] - 3
	env = root.env(LD_PRELOAD="%s %s %s" % (root.tools / "shim.so",
	    PAM_WRAPPER, NSS_WRAPPER), POP3D_TEST_CLOCK="%d:2001" % skew)
	s = root.session("-t", "10", *extra, env=env)
	s.login("alice", PW)
	t0 = time.monotonic()
	while time.monotonic() - t0 < 9:
		try:
			r = s.cmd("NOOP")
		except BrokenPipeError:		# it said why and left
			r = s.read_reply(timeout=5)
		if r is None or not r.ok:
			break
		time.sleep(0.25)
	took = time.monotonic() - t0
	assert r is not None and \
	    r.text == "-ERR autologout: session time limit", \
	    (took, r, s.stderr())
	assert 1.5 <= took < 6, (took, s.stderr())
	assert s.wait(10) == LIMITS["POP3_EX_CLOSED"], s.stderr()


def wait_for_pam(root, event, timeout=10):
	"""Waits until the test PAM module has logged event."""
	deadline = time.monotonic() + timeout
	while event not in [e[0] for e in root.pam_events()]:
		assert time.monotonic() < deadline, root.pam_events()
		time.sleep(0.01)


@pytest.mark.parametrize("extra", MODES, ids=MODE_IDS)
def test_sigterm_at_any_moment_of_the_login_ends_the_session(root, extra):
	"""SIGTERM to the monitor at the greeting, or while the login passes
	from the pre-login child to the user's process (the reply to PASS is
	on its way), ends everything with status 1: no process is left
	waiting for a client that is gone, and every PAM session opened is
	closed.  Before the fix a signal between fork and the monitor's note
	of the new child was lost, or went to the reaped pre-login child."""
	for i in range(60):
		s = root.session(*extra)
		assert s.greeting().ok
		if i % 4:
			assert s.cmd("USER alice").ok
			s.send("PASS %s\r\n" % PW)
			# 0 to 3 ms after PASS.
			t = time.monotonic() + (i % 30) * 0.0001
			while time.monotonic() < t:
				pass
		os.kill(s.proc.pid, signal.SIGTERM)
		try:
			rc = s.wait(10)
		except subprocess.TimeoutExpired:
			raise AssertionError("monitor still runs after SIGTERM "
			    "(round %d): %r" % (i, s.stderr()))
		assert rc == LIMITS["POP3_EX_CLOSED"], (i, s.stderr())
		assert "killed by signal" not in s.stderr(), s.stderr()
	ev = [e[0] for e in root.pam_events()]
	assert ev.count("open") == ev.count("close"), ev
	assert ev.count("auth") == ev.count("end"), ev


@pytest.mark.parametrize("extra", MODES, ids=MODE_IDS)
def test_sigterm_between_the_two_children_is_kept(root, extra):
	"""The shim makes the pre-login child ignore SIGTERM once it has sent
	its login record, and linger 3 s after the "y": a SIGTERM to the
	monitor in that time reaches no child that acts on it.  The monitor
	must remember it, start no session and close PAM, not serve the
	client."""
	env = root.env(LD_PRELOAD="%s %s %s" % (root.tools / "shim.so",
	    PAM_WRAPPER, NSS_WRAPPER), POP3D_TEST_RECORD="deaf")
	s = root.session(*extra, env=env)
	assert s.greeting().ok
	assert s.cmd("USER alice").ok
	s.send("PASS %s\r\n" % PW)
	# The record is sent (the child is deaf) and the check is done.
	wait_for_pam(root, "open" if HELD in extra else "end")
	os.kill(s.proc.pid, signal.SIGTERM)
	assert s.wait(10) == LIMITS["POP3_EX_CLOSED"], s.stderr()
	assert s.wait_eof(5) == b"", "no reply to PASS"
	assert "signal 15 before the session began" in s.stderr(), s.stderr()
	ev = [e[0] for e in root.pam_events()]
	assert ev.count("open") == ev.count("close"), ev
	assert ev[-1] == "end", ev


def test_sigterm_during_the_failed_login_delay_ends_at_once(root):
	"""A wrong password waits 20 s for its answer; SIGTERM in that time
	ends the session then, not 20 s later, with status 1."""
	s = root.session(fail_delay=20000)
	assert s.greeting().ok
	assert s.cmd("USER alice").ok
	s.send("PASS wrong\r\n")
	wait_for_pam(root, "end")	# the failed transaction is over
	os.kill(s.proc.pid, signal.SIGTERM)
	assert s.wait(10) == LIMITS["POP3_EX_CLOSED"], s.stderr()
	assert s.wait_eof(5) == b"", "no reply to PASS"
	assert "Broken pipe" not in s.stderr(), s.stderr()


def test_missing_prelogin_user_is_a_config_error(root):
	t = root.run(["QUIT"], "-u", "nosuchprelogin")
	assert t.rc == LIMITS["POP3_EX_CONFIG"], t
	assert "nosuchprelogin" in t.stderr


# ---------------------------------------------------------------- records

@pytest.mark.parametrize("mode,why", [
	("short", "wrong size"),
	("long", "wrong size"),
	("garbage", "bad record"),
	("user-unterminated", "unterminated"),
	("pass-unterminated", "unterminated"),
	("mech", "unknown mechanism"),
	("ilen", "pending input"),
	("user-path", "impossible user name"),
	("flood", "misbehaved"),
])
def test_hostile_record_is_rejected(root, mode, why):
	env = root.env(LD_PRELOAD="%s %s %s" % (root.tools / "shim.so",
	    PAM_WRAPPER, NSS_WRAPPER), POP3D_TEST_RECORD=mode)
	pw = "wrong" if mode == "flood" else PW
	t = root.run(["USER alice", "PASS " + pw, "STAT"], env=env)
	assert t.rc == LIMITS["POP3_EX_SOFTWARE"], t
	assert why in t.stderr, t.stderr
	assert "login: user" not in t.stderr
	if mode == "flood":
		# The child's one login failed; the parent killed it at the
		# record past the session's limit.
		assert t.replies[1].err, t
	else:
		assert len(t.replies) == 1, t	# +OK to USER, then nothing
	assert "open" not in [e[0] for e in root.pam_events()]


def test_pipelined_commands_reach_the_user_process(root):
	t = root.run(login("alice", PW) + ["STAT", "LIST", "UIDL",
	    "NOOP", "QUIT"])
	assert [r.ok for r in t.replies] == [True] * 7, t
	assert t.rc == 0


# ---------------------------------------------------------------- passwd:FILE

def test_passwd_file_as_root(root):
	other = root.base / "elsewhere"		# bob may make dotlocks there
	other.mkdir(mode=0o755)
	os.chown(other, 2002, 2002)
	(other / "box").write_bytes(mbox(MSGS))
	os.chown(other / "box", 2002, 2002)
	os.chmod(other / "box", 0o600)
	root.write_passwd([
	    "# alice: uid and gid from the system (getpwnam)",
	    "alice:" + make_hash(PW, "yescrypt"),
	    "bob:%s:2002:2002:%s" % (make_hash("bob pw"), other / "box"),
	    "toor:%s:0:0" % make_hash("toor pw"),
	    "low:%s:500:500" % make_hash("low pw"),
	])
	a = "passwd:%s" % root.passwd
	t = root.run(login("alice", PW) + ["STAT", "QUIT"], auth=a)
	assert t.replies[1].ok and t.replies[2].text.startswith("+OK 2 "), t
	assert "login: user alice uid 2001" in t.stderr
	t = root.run(["USER bob", "PASS bob pw", "STAT", "QUIT"], auth=a)
	assert t.replies[1].ok and t.replies[2].text.startswith("+OK 2 "), t
	for u, why in (("toor", "uid 0"), ("low", "below --min-uid")):
		t = root.run(["USER " + u, "PASS %s pw" % u, "QUIT"], auth=a)
		assert t.replies[1].err and why in t.stderr, t
	assert "open" not in [e[0] for e in root.pam_events()]


@pytest.mark.parametrize("mode,owner", [
	(0o640, 0), (0o604, 0), (0o620, 0), (0o600, 2001)])
def test_unsafe_passwd_file_refused_as_root(root, mode, owner):
	root.write_passwd(["alice:" + make_hash(PW)], mode=mode, owner=owner)
	t = root.run(login("alice", PW) + ["QUIT"],
	    auth="passwd:%s" % root.passwd)
	# The right password, a file that cannot be trusted: [SYS/TEMP], not
	# [AUTH], the session over with pop3d.8's 78, a "login error" line
	# (fail2ban's filter counts "login failed" lines only).
	assert t.replies[1].text.startswith("-ERR [SYS/TEMP] "), t
	assert len(t.replies) == 2, t
	assert t.rc == LIMITS["POP3_EX_CONFIG"], t
	assert "login error: UNKNOWN USER from " in t.stderr, t.stderr
	assert not [ln for ln in t.stderr.splitlines()
	    if "login error:" in ln and "alice" in ln], t.stderr
	assert "login failed" not in t.stderr, t.stderr
	assert "must be owned by root" in t.stderr, t.stderr


# A PAM module that, once the password and the account are checked,
# renames the login "al" to a PAM_USER pop3d refuses (as a directory's
# canonical name, "DOMAIN\\al", would be).
RENAME_TO_REFUSED = r"""
#include <security/pam_modules.h>
#include <string.h>
int pam_sm_authenticate(pam_handle_t *h, int f, int c, const char **v)
{ (void)h; (void)f; (void)c; (void)v; return PAM_SUCCESS; }
int pam_sm_acct_mgmt(pam_handle_t *h, int f, int c, const char **v)
{
	const char *u = NULL;
	(void)f; (void)c; (void)v;
	if (pam_get_user(h, &u, NULL) == PAM_SUCCESS && u != NULL &&
	    strcmp(u, "al") == 0)
		return pam_set_item(h, PAM_USER, "-al");
	return PAM_SUCCESS;
}
int pam_sm_open_session(pam_handle_t *h, int f, int c, const char **v)
{ (void)h; (void)f; (void)c; (void)v; return PAM_SUCCESS; }
int pam_sm_close_session(pam_handle_t *h, int f, int c, const char **v)
{ (void)h; (void)f; (void)c; (void)v; return PAM_SUCCESS; }
"""


@pytest.mark.parametrize("extra", [[], [HELD]], ids=["no", "held"])
def test_refused_account_answers_as_a_wrong_password(root, extra):
	"""An account PAM accepts under a name pop3d refuses (PAM_USER "-al")
	is refused (pop3d.8: [AUTH]), with the reply, exit status and log
	line of a wrong password: a [SYS/TEMP] there would tell that the
	password was right, in a line fail2ban does not count."""
	src = root.base / "rename.c"
	src.write_text(RENAME_TO_REFUSED)
	cc(src, root.base / "rename.so", "-lpam")
	mod = root.base / "rename.so"
	(root.pamdir / "pop3").write_text(
	    "auth required %s passdb=%s\nauth required %s\n"
	    "account required %s passdb=%s\naccount required %s\n"
	    "session required %s\n" % (PAM_MATRIX, root.passdb, mod,
	    PAM_MATRIX, root.passdb, mod, mod))
	right = root.run(login("al", "al pw") + ["QUIT"], *extra)
	wrong = root.run(login("al", "nope") + ["QUIT"], *extra)
	for t in (right, wrong):
		assert t.replies[1].text == "-ERR [AUTH] authentication failed", t
		assert t.rc == LIMITS["POP3_EX_NOUSER"], t
		assert "login failed: user al from " in t.stderr, t.stderr
		assert "login error" not in t.stderr, t.stderr
	assert "PAM_USER missing or invalid" in right.stderr, right.stderr


CRASHING = r"""
#include <security/pam_modules.h>
#include <stdlib.h>
int pam_sm_authenticate(pam_handle_t *h, int f, int c, const char **v)
{ (void)h; (void)f; (void)c; (void)v; abort(); }
int pam_sm_acct_mgmt(pam_handle_t *h, int f, int c, const char **v)
{ (void)h; (void)f; (void)c; (void)v; return PAM_SUCCESS; }
"""


def test_crashing_pam_module_is_a_login_error(root):
	"""A PAM module that crashes kills the check process, not the
	session's monitor: the login could not be checked, so -ERR
	[SYS/TEMP], the session over with 78, and a "login error" line."""
	src = root.base / "crash.c"
	src.write_text(CRASHING)
	cc(src, root.base / "crash.so", "-lpam")
	(root.pamdir / "pop3").write_text("auth required %s\n"
	    "account required %s\n" % ((root.base / "crash.so",) * 2))
	t = root.run(login("alice", PW) + ["QUIT"])
	assert t.replies[1].text.startswith("-ERR [SYS/TEMP] "), t
	assert len(t.replies) == 2, t
	assert t.rc == LIMITS["POP3_EX_CONFIG"], t
	assert [ln for ln in t.stderr.splitlines() if "login error: UNKNOWN "
	    "USER from " in ln and "login check process failed" in ln], \
	    t.stderr


def test_passwd_hashes_never_reach_the_monitor(root):
	"""The file is read in a short-lived child: the monitor never opens
	it (its open descriptors during the session show no such file)."""
	a = "passwd:%s" % root.passwd
	s = root.session(auth=a)
	s.login("alice", PW)
	pid = s.proc.pid
	fds = [os.readlink("/proc/%d/fd/%s" % (pid, fd))
	    for fd in os.listdir("/proc/%d/fd" % pid)]
	assert str(root.passwd) not in fds
	with open("/proc/%d/maps" % pid) as f:
		assert str(root.passwd) not in f.read()
	assert s.cmd("QUIT").ok
	assert s.wait() == 0


# ---------------------------------------------------------------- logging

def test_login_line_has_the_client_address(root):
	d = root.inetd()
	with socket.create_connection(("127.0.0.1", d.port), timeout=10) as c:
		f = c.makefile("rwb")
		assert f.readline().startswith(b"+OK")
		for ln in (b"USER alice", ("PASS " + PW).encode(), b"QUIT"):
			f.write(ln + b"\r\n")
			f.flush()
			assert f.readline().startswith(b"+OK")
	assert d.wait() == 0
	assert "login: user alice uid 2001 mech USER from 127.0.0.1" in \
	    d.stderr(), d.stderr()
	ev = root.pam_events()
	assert ev and all(e[4] == "rhost=127.0.0.1" for e in ev), ev


def test_reset_before_a_pipelined_quit_deletes_nothing_here_too(root):
	"""test_session_poplib.py's test in root mode, where the user's process
	is the pid inetd started: RETR 1, DELE 1, QUIT pipelined and the
	connection reset before a reply was written delete nothing; read to
	the end, they delete message 1."""
	data = root.mailbox().read_bytes()
	rc, _ = P.pipelined_retr_dele_quit(root, True, "alice", PW)
	assert rc == LIMITS["POP3_EX_CLOSED"]
	assert root.mailbox().read_bytes() == data
	rc, got = P.pipelined_retr_dele_quit(root, False, "alice", PW)
	assert rc == 0 and got.startswith(b"+OK "), got
	assert root.mailbox().read_bytes() == mbox(MSGS[1:])


def test_client_address_from_the_environment(root):
	t = root.run(["USER nosuch", "PASS x", "QUIT"],
	    env=root.env(TCPREMOTEIP="192.0.2.7"))
	assert "UNKNOWN USER from 192.0.2.7" in t.stderr, t.stderr
	ev = root.pam_events()
	assert ev and all(e[4] == "rhost=192.0.2.7" for e in ev), ev


def test_password_typed_as_user_name_is_not_logged(root):
	secret = "Tr0ub4dor&3"
	t = root.run(["USER " + secret, "PASS alice", *login("alice", PW),
	    "QUIT"])
	assert t.replies[3].ok, t
	assert secret not in t.stderr and PW not in t.stderr, t.stderr
	assert "UNKNOWN USER" in t.stderr


def test_syslog_lines(root, tmp_path):
	"""Without -d, every process logs through syslog(3), the chrooted
	pre-login one included: run pop3d in a private mount namespace whose
	/dev/log is our socket."""
	need(shutil.which("unshare") and shutil.which("mount"), "unshare")
	sock_path = tmp_path / "log"
	srv = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
	srv.bind(str(sock_path))
	srv.settimeout(0.2)
	script = ("mount -t tmpfs -o mode=755 none /dev && "
	    "mknod -m 666 /dev/null c 1 3 && ln -s %s /dev/log && exec \"$@\"" %
	    sock_path)
	cmds = ["USER nosuch", "PASS " + PW + "!", *login("alice", PW),
	    "STAT", "RETR 1", "DELE 2", "QUIT"]
	t = root.run(cmds, debug=False, wrapper=["unshare", "-m", "sh", "-c",
	    script, "sh"])
	got = []
	while True:
		try:
			got.append(srv.recv(4096).decode("utf-8", "replace"))
		except socket.timeout:
			break
	srv.close()
	assert t.rc == 0, (t, got)
	log = "\n".join(got)
	assert got and all(int(g[1:g.index(">")]) // 8 == 2 for g in got), \
	    got				# LOG_MAIL
	assert "pop3d[" in log
	assert "UNKNOWN USER" in log and "nosuch" not in log, log
	assert "login: user alice uid 2001" in log, log
	assert "retrieved 1" in log and "deleted 1" in log, log
	assert PW not in log, log


# ---------------------------------------------------------------- not root

def test_non_root_pam_serves_only_the_invoking_user(root):
	"""Started as alice (not root): one process, PAM checks alice's own
	password; another user's correct password is refused."""
	t = root.run(login("alice", PW) + ["STAT", "QUIT"], "-l",
	    "fcntl", user=2001)		# not in the mail group: no dotlocks
	assert t.replies[1].ok, t
	assert t.rc == 0, t
	t = root.run(["USER bob", "PASS bob pw", "QUIT"], user=2001)
	assert t.replies[1].text == "-ERR [AUTH] authentication failed", t
	assert "not the invoking user" in t.stderr, t.stderr
	assert "login: user" not in t.stderr


# ---------------------------------------------------------------- the spool

def spool_state(*paths):
	out = []
	for p in paths:
		st = os.lstat(p)
		data = None if stat.S_ISLNK(st.st_mode) else Path(p).read_bytes()
		out.append((str(p), st.st_mode, st.st_uid, st.st_nlink,
		    st.st_mtime_ns, st.st_size, data,
		    os.readlink(p) if stat.S_ISLNK(st.st_mode) else None))
	return out


def refused_login(root):
	s = root.session()
	assert s.greeting().ok
	assert s.cmd("USER alice").ok
	r = s.cmd("PASS " + PW, timeout=LIMITS["MD_LOCK_WAIT"] + 15)
	if r is not None and r.ok:
		# Whatever happens, nothing may be read: no message is shown.
		st = s.cmd("STAT")
		assert st.text.startswith("+OK 0 ") or st.err, st
	try:
		s.send("QUIT\r\n")
	except BrokenPipeError:		# pop3d ended the session itself
		pass
	s.wait(LIMITS["MD_LOCK_WAIT"] + 15)
	return r, s.stderr()


def victim(root, owner=2001):
	v = root.base / "victim"
	v.write_bytes(mbox([b"Subject: secret\n\nnot alice's mail\n"]))
	os.chown(v, owner, owner)
	os.chmod(v, 0o600)
	return v


def test_symlinked_mailbox_refused(root):
	v = victim(root)
	root.mailbox().unlink()
	root.mailbox().symlink_to(v)
	before = spool_state(v, root.mailbox())
	r, log = refused_login(root)
	assert r is not None and r.text.startswith("-ERR [SYS/PERM]"), (r, log)
	assert spool_state(v, root.mailbox()) == before
	assert "symbolic link" in log, log


def test_foreign_owned_mailbox_refused(root):
	os.chown(root.mailbox(), 2002, 2002)
	os.chmod(root.mailbox(), 0o644)		# readable: still not served
	before = spool_state(root.mailbox())
	r, log = refused_login(root)
	assert r is not None and r.text.startswith("-ERR [SYS/PERM]"), (r, log)
	assert spool_state(root.mailbox()) == before
	assert "not owned by the user" in log, log


def test_hard_linked_mailbox_refused(root):
	link = root.base / "other-name"
	os.link(root.mailbox(), link)
	before = spool_state(root.mailbox(), link)
	r, log = refused_login(root)
	assert r is not None and r.text.startswith("-ERR [SYS/PERM]"), (r, log)
	assert spool_state(root.mailbox(), link) == before
	assert "more than one link" in log, log


def test_symlinked_dotlock_is_not_followed(root):
	v = victim(root, owner=0)
	lock = root.spool / "alice.lock"
	lock.symlink_to(v)
	box = spool_state(root.mailbox())
	before = spool_state(v, lock)
	r, log = refused_login(root)
	assert r is not None and r.text.startswith("-ERR [SYS/PERM]"), (r, log)
	assert spool_state(v, lock) == before	# link and target untouched
	assert spool_state(root.mailbox()) == box
	assert "not a regular file" in log, log


def memory_holds(pid, needle, records=()):
	"""Whether any readable mapping of process pid contains needle, apart
	from copies inside one of records (byte strings that contain needle).
	Read in chunks that overlap by the longest record; mappings of over
	1 GiB are ASan's shadow and allocator reserves, not data."""
	keep = max([len(needle)] + [len(r) for r in records]) - 1
	with open("/proc/%d/maps" % pid) as maps, \
	    open("/proc/%d/mem" % pid, "rb", 0) as mem:
		for line in maps:
			addr, perms = line.split()[:2]
			if "r" not in perms or "[vvar]" in line or \
			    "[vsyscall]" in line:
				continue
			lo, hi = (int(x, 16) for x in addr.split("-"))
			if hi - lo > 1 << 30:
				continue
			tail = b""
			for off in range(lo, hi, 1 << 24):
				try:
					mem.seek(off)
					data = tail + mem.read(min(1 << 24, hi - off))
				except OSError:
					break
				tail = data[-keep:] if keep else b""
				for r in records:
					data = data.replace(r, b"")
				if needle in data:
					return True
	return False


@pytest.mark.parametrize("extra", MODES, ids=MODE_IDS)
@pytest.mark.parametrize("auth", ["pam", "passwd"])
def test_no_password_in_memory_after_login(root, auth, extra):
	"""After login neither the root monitor (a held session) nor the
	user's process keeps the password anywhere in its memory (PAM's copy
	included)."""
	a = "passwd:%s" % root.passwd if auth == "passwd" else None
	s = root.session(*extra, auth=a) if a else root.session(*extra)
	s.login("alice", PW)
	pid = s.proc.pid
	child = one_child(pid) if a is None and HELD in extra else \
	    user_pid(s, [])
	assert s.cmd("STAT").ok
	needle = PW.encode()
	# pam_matrix compares with its cleartext database: the line it read
	# ("alice:password:pop3") and parsed in place ("alice\0password\0pop3")
	# stays on its stack.  Those copies are the test module's own, not
	# ones that pop3d or libpam kept from the client.
	records = (b"alice\0" + needle + b"\0pop3", needle + b":po")
	assert not memory_holds(pid, needle, records), \
	    "root monitor holds the password"
	assert not memory_holds(child, needle, records), \
	    "user process holds the password"
	assert s.cmd("QUIT").ok
	assert s.wait() == 0
