#!/bin/sh
# layers.sh ALLOW OBJ...: the call graph between the server's files, from
# nm(1) on their objects (a file uses another when it has an undefined
# symbol that the other defines), and a check that the files call only
# downward: it fails when the edges, less the known back-edges listed in
# ALLOW ("from to  issue"), form a circle, or when ALLOW lists an edge
# that is gone (then the line goes too).  make layers runs it.
allow=$1
shift
tmp=$(mktemp -d) || exit 1
trap 'rm -rf "$tmp"' EXIT
for o in "$@"; do
	f=$(basename "$o" .o)
	nm --defined-only "$o" | awk -v f="$f" \
	    '$2 ~ /^[TDBRCVW]$/ { print $3, f }' >>"$tmp/def"
	nm -u "$o" | awk -v f="$f" '{ print $2, f }' >>"$tmp/use"
done
# edges: "from to symbol", sorted
awk 'NR == FNR { def[$1] = $2; next }
    ($1 in def) && def[$1] != $2 { print $2, def[$1], $1 }' \
    "$tmp/def" "$tmp/use" | sort >"$tmp/edges"
echo "layers: calls between files (from -> to: symbols)"
awk '{ k = $1 " -> " $2; s[k] = s[k] " " $3 } END { for (k in s) print k ":" s[k] }' \
    "$tmp/edges" | sort | awk '{ l = "	" $1 " " $2 " " $3; for (i = 4; i <= NF; i++) {
	if (length(l) + length($i) > 72) { print l; l = "		" $i } else l = l " " $i }
	print l }'
awk '{ print $1, $2 }' "$tmp/edges" | sort -u >"$tmp/pairs"
grep -v '^[[:space:]]*\(#\|$\)' "$allow" | awk '{ print $1, $2 }' |
    sort -u >"$tmp/allow"
rc=0
comm -13 "$tmp/pairs" "$tmp/allow" >"$tmp/stale"
if [ -s "$tmp/stale" ]; then
	echo "layers: $allow lists edges that are gone (remove them):"
	sed 's/^/	/' "$tmp/stale"
	rc=1
fi
comm -23 "$tmp/pairs" "$tmp/allow" >"$tmp/down"
if ! tsort "$tmp/down" >/dev/null 2>"$tmp/loop"; then
	echo "layers: FAILED: a circle among the files (less the back-edges"
	echo "of $allow):"
	sed -e 's/^tsort: [^ ]*: input contains a loop:/	circle:/' \
	    -e 's/^tsort: /		/' "$tmp/loop"
	rc=1
fi
if [ $rc = 0 ]; then
	printf 'layers: ok, top to bottom: '
	tsort "$tmp/down" | tr '\n' ' '
	echo
	n=$(wc -l <"$tmp/allow")
	echo "layers: $n known back-edges ($allow)"
fi
exit $rc
