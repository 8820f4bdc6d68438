#!/bin/sh
# profile.sh: where pop3d's time goes in one benchmark workload.
#
#	bench/profile.sh WORKLOAD [SIZE [POP3D]]
#
# WORKLOAD: open list retr expunge expunge-first expunge-last tiny; SIZE: S
# M L (default M); POP3D: the binary (default ./pop3d).  Needs a previous
# `make bench` (or bench/bench.py) run for the mailboxes, scripts and
# password file under build/bench.  Runs pop3d in non-root mode like the
# benchmark's "pop3d" row (as uid 65534 when run as root), once under
# `perf stat` (CPU time against wall time: the rest is waiting, e.g. for
# fsync) and once under `perf record`, and prints the hottest symbols.
set -eu
wl=${1:?usage: profile.sh WORKLOAD [SIZE [POP3D]]}
size=${2:-M}
bin=$(realpath "${3:-./pop3d}")
b=$(realpath build/bench)
[ "$wl" = tiny ] && size=tiny
scr=$b/script/pop3d-$wl
mbox=$b/$size.mbox
for f in "$scr" "$mbox" "$b/pop3d.passwd"; do
	[ -e "$f" ] || { echo "profile.sh: no $f: run make bench" >&2; exit 1; }
done
# The script is per mailbox size (RETR n, DELE n): rebuild it for SIZE.
n=$(sed 's/.*"messages": \([0-9]*\).*/\1/' "$mbox.meta")
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
{
	grep -E '^(USER|PASS)' "$scr"
	case $wl in
	open)		printf 'STAT\r\n' ;;
	list)		printf 'LIST\r\nUIDL\r\n' ;;
	retr)		seq 1 "$n" | sed 's/^/RETR /; s/$/\r/' ;;
	expunge)	seq 10 10 "$n" | sed 's/^/DELE /; s/$/\r/' ;;
	expunge-first)	printf 'DELE 1\r\n' ;;
	expunge-last)	printf 'DELE %d\r\n' "$n" ;;
	tiny)		grep -vE '^(USER|PASS|QUIT)' "$scr" ;;
	esac
	printf 'QUIT\r\n'
} > "$tmp/script"
spool=$b/spool-pop3d
as=""
if [ "$(id -u)" = 0 ]; then
	as="setpriv --reuid 65534 --regid 65534 --clear-groups"
fi
install_box() {
	cp "$mbox" "$spool/bench"
	[ -z "$as" ] || chown 65534:65534 "$spool/bench"
	chmod 600 "$spool/bench"
	touch -d '1 hour ago' "$spool/bench"
	sync
	sleep 1.1	# pop3d re-checks a file whose ctime is under 1 s old
}
install_box
echo "== $wl on $size: perf stat"
perf stat -e task-clock,context-switches,page-faults -o "$tmp/stat" \
    -- sh -c "$(printf '%s ' $as) \"$bin\" -d -a passwd:$b/pop3d.passwd \
    -s $spool < $tmp/script > /dev/null 2> $tmp/log"
grep -E 'task-clock|elapsed|user|sys' "$tmp/stat"
install_box
echo "== $wl on $size: perf record (cpu-clock), hottest symbols"
perf record -q -o "$tmp/data" -F 4999 -- sh -c "$(printf '%s ' $as) \
    \"$bin\" -d -a passwd:$b/pop3d.passwd -s $spool < $tmp/script \
    > /dev/null 2> $tmp/log" 2>/dev/null
perf report -i "$tmp/data" --no-children --sort dso,sym --stdio 2>/dev/null |
    grep '%' | head -20
install_box
tail -2 "$tmp/log"
