#!/bin/sh
# Installs the packages of tests/packages.txt that are missing, and unpacks
# those of its "unpack" section under build/unpack/NAME/root (dpkg-deb -x;
# the .deb is kept there) with the packages they depend on installed.  As
# root it runs apt-get (apt-get update first: a fresh machine has no package
# lists); otherwise it only lists what is missing and fails.
# Arguments: section names ("build", "test", "unpack", "bench"); none
# means every section but "bench" (make bench's own).
set -e
export DEBIAN_FRONTEND=noninteractive
top=$(cd "$(dirname "$0")/.." && pwd)
list=$top/tests/packages.txt
want=" $* "
section() {	# the packages of the wanted sections, or of section $1 only
	awk -v want="$want" -v only="$1" '
	/^# == / { sec = $3; next }
	/^#/ || NF == 0 { next }
	(only == "" && sec != "unpack" && (sec != "bench" || want != "  ") ||
	    sec == only) &&
	    (want == "  " || index(want, " " sec " ")) { print $1 }' "$list"
}
absent() {	# those of the packages $@ that are not installed
	for p in "$@"; do
		dpkg-query -W -f='${Status}' "$p" 2>/dev/null |
		    grep -q 'ok installed' || printf ' %s' "$p"
	done
}
depends() {	# Pre-Depends and Depends of the .deb $1: first alternatives
	for f in Pre-Depends Depends; do dpkg-deb -f "$1" "$f"; done |
	    tr ',' '\n' | sed 's/|.*//; s/(.*)//; s/:any//' | awk 'NF { print $1 }'
}
updated=
update() {	# as root, once: apt-get update
	[ "$(id -u)" -eq 0 ] && [ -z "$updated" ] || return 0
	apt-get update -qq
	updated=yes
}

missing=$(absent $(section ""))
[ -z "$missing" ] || update
for p in $(section unpack); do
	dir=$top/build/unpack/$p
	if [ ! -d "$dir/root" ]; then
		rm -rf "$dir"
		mkdir -p "$dir"
		(cd "$dir" && apt-get download -qq "$p") ||
		    { update; (cd "$dir" && apt-get download -qq "$p"); }
		dpkg-deb -x "$dir"/"$p"_*.deb "$dir/root.new"
		mv "$dir/root.new" "$dir/root"
	fi
	missing="$missing$(absent $(depends "$dir"/"$p"_*.deb))"
done
[ -z "$missing" ] && exit 0
if [ "$(id -u)" -ne 0 ]; then
	echo "missing packages:$missing (run make check as root, or apt-get install them)" >&2
	exit 1
fi
update
apt-get install -y -qq --no-install-recommends $missing
