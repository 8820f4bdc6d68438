#!/bin/sh
# Installs the packages of tests/packages.txt that are missing.  As root it
# runs apt-get; otherwise it only lists what is missing and fails.
# Arguments: section names ("build", "test"); none means every section.
set -e
list="$(dirname "$0")/packages.txt"
want=" $* "
pkgs=$(awk -v want="$want" '
	/^# == / { sec = $3; next }
	/^#/ || NF == 0 { next }
	want == "  " || index(want, " " sec " ") { print $1 }' "$list")
missing=
for p in $pkgs; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'ok installed' ||
	    missing="$missing $p"
done
[ -z "$missing" ] && exit 0
if [ "$(id -u)" -ne 0 ]; then
	echo "missing packages:$missing (run make check as root, or apt-get install them)" >&2
	exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends $missing
