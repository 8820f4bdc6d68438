#!/bin/sh
# make demo: a real, scripted POP3 session with pop3d over a pipe, against a
# demo spool and password file made under build/demo.  No root and no system
# configuration needed.  Prints the transcript; exits non-zero if any reply
# was not +OK.  As root, pop3d runs as uid/gid 65534 (nobody), in the same
# one-process mode as for a normal user.
set -eu
cd "$(dirname "$0")/.."
top=$(pwd)
bin=$top/pop3d
demo=$top/build/demo
[ -x "$bin" ] || { echo "demo: $bin missing: run make pop3d" >&2; exit 1; }

# How the commands shown at the end name the files (relative to the top).
show_bin=./pop3d
show_demo=build/demo
run=
if [ "$(id -u)" -eq 0 ]; then
	run="setpriv --reuid=65534 --regid=65534 --clear-groups"
	# nobody must reach the binary and the demo files; a checkout under a
	# private directory (/root) is not reachable, so use /tmp then.
	if ! $run test -x "$bin"; then
		demo=$(mktemp -d /tmp/pop3d-demo.XXXXXX)
		chmod 755 "$demo"
		cp "$bin" "$demo/pop3d"
		bin=$demo/pop3d
		show_bin=$bin
		show_demo=$demo
	fi
fi

rm -rf "$demo/spool" "$demo/passwd" "$demo/log" "$demo/transcript"
mkdir -p "$demo/spool"
chmod 755 "$demo"

# User "demo", password "demo": a sha512-crypt hash made with
#   openssl passwd -6 -salt pop3d.demo demo
# The entry has no uid field: not run as root, pop3d serves the invoking
# user's own mailbox whatever the login name.
cat >"$demo/passwd" <<'EOF'
# pop3d password file: user:crypt-hash[:uid:gid[:mailbox]]
demo:$6$pop3d.demo$prAU/aQ8P265EAa.SXH5817tEC7peAMVUT/jsnDvyK87W9B24fSNzp1c9oIYFfF9kGuAiNamEZTavWKlt3cxS.
EOF

# Three messages, as an MDA writes them (mboxo, Debian's format).
cat >"$demo/spool/demo" <<'EOF'
From alice@example.org Thu Nov 26 12:00:00 2026
Return-Path: <alice@example.org>
From: Alice <alice@example.org>
To: demo@example.org
Subject: Welcome to pop3d
Date: Thu, 26 Nov 2026 12:00:00 +0000
Message-ID: <welcome@example.org>

Hello!

This message is served by pop3d from an mbox spool.
A line that starts with a dot is sent with one more (byte-stuffing):
.like this one
>From lines stay as the MDA stored them.

From bob@example.org Thu Nov 26 12:05:00 2026
From: Bob <bob@example.org>
To: demo@example.org
Subject: Lunch?
Date: Thu, 26 Nov 2026 12:05:00 +0000
Message-ID: <lunch@example.org>

Noon at the usual place?

From carol@example.org Thu Nov 26 12:10:00 2026
From: Carol <carol@example.org>
To: demo@example.org
Subject: Report attached
Date: Thu, 26 Nov 2026 12:10:00 +0000
Message-ID: <report@example.org>
MIME-Version: 1.0
Content-Type: multipart/mixed; boundary="b1"

--b1
Content-Type: text/plain; charset=utf-8

The report is attached.
--b1
Content-Type: text/plain; name="report.txt"
Content-Disposition: attachment; filename="report.txt"
Content-Transfer-Encoding: base64

cG9wM2QgZGVtbyByZXBvcnQK
--b1--

EOF
chmod 600 "$demo/passwd" "$demo/spool/demo"
if [ -n "$run" ]; then
	chown -R 65534:65534 "$demo"
fi

cmds='USER demo
PASS demo
STAT
LIST
UIDL
TOP 1 0
RETR 1
DELE 1
QUIT'

set -- -a "passwd:$demo/passwd" -s "$demo/spool" -d
echo "== ${run:+$run }$show_bin -a passwd:$show_demo/passwd -s $show_demo/spool -d"
status=0
printf '%s\n' "$cmds" | sed 's/$/\r/' |
    $run "$bin" "$@" >"$demo/transcript" 2>"$demo/log" || status=$?

# The transcript: each command, then its reply; multi-line replies are
# those of CAPA, RETR, TOP and of LIST/UIDL without an argument.
bad=0
awk -v cmds="$cmds" '
BEGIN { n = split(cmds, c, "\n"); i = 0; multi = 0; bad = 0 }
{
	sub(/\r$/, "")
	if (multi) { print "S:   " $0; if ($0 == ".") multi = 0; next }
	if (i > 0 && i <= n) print "C: " c[i]
	print "S: " $0
	if ($0 !~ /^\+OK/) bad++
	else if (i > 0 && i <= n) {
		k = split(c[i], w, " "); v = toupper(w[1])
		if (v == "RETR" || v == "TOP" || v == "CAPA" ||
		    ((v == "LIST" || v == "UIDL") && k == 1))
			multi = 1
	}
	i++
}
END {
	if (i != n + 1) { print "demo: " (i - 1) " replies to " n " commands"; bad++ }
	exit bad != 0
}' "$demo/transcript" || bad=1

echo "== pop3d log (-d: stderr)"
sed 's/^/   /' "$demo/log"
echo "== exit status $status"

if [ "$bad" -ne 0 ] || [ "$status" -ne 0 ]; then
	echo "demo FAILED" >&2
	exit 1
fi

cmd="${run:+$run }$show_bin -a passwd:$show_demo/passwd -s $show_demo/spool -d"
cat <<EOF
== demo OK: every reply was +OK

Talk to pop3d by hand (make demo again restores the demo mailbox):
  $cmd
then type USER demo, PASS demo, STAT, LIST, RETR 1, ... QUIT (a bare LF
ends a line too).  Or script it:
  printf 'USER demo\\r\\nPASS demo\\r\\nSTAT\\r\\nQUIT\\r\\n' |
      $cmd
Over TCP, one pop3d per connection as inetd runs it:
  systemd-socket-activate --inetd -l 127.0.0.1:1110 -a \\
      $cmd
  curl -u demo:demo pop3://127.0.0.1:1110/1
EOF
