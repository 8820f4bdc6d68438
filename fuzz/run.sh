#!/bin/sh
# fuzz/run.sh NAME SECONDS [check]: runs the libFuzzer target
# build/fuzz/fuzz_NAME (make builds it) from the repository root: first
# every saved finding of fuzz/regress/BASE/ once (BASE: NAME without a
# _variant suffix), then SECONDS of fuzzing from the seeds of
# fuzz/corpus/BASE/ and the working corpus build/fuzz/corpus/NAME/ (kept
# between runs, never committed).  With "check" (make check) the working
# corpus starts empty each time: libFuzzer runs all of a corpus before it
# looks at the clock, and a grown one would take minutes.
# Prints one summary line; a crash or broken invariant leaves its input in
# build/fuzz/artifacts/NAME/ and fails.  Log: build/log/fuzz-NAME.log.
set -u
name=$1
secs=$2
base=${name%%_*}
bin=build/fuzz/fuzz_$name
work=build/fuzz/corpus/$name
if [ "${3:-}" = check ]; then
	work=build/fuzz/check/$name
	rm -rf "$work"
fi
art=build/fuzz/artifacts/$name
log=build/log/fuzz-$name.log
case $base in
proto)	maxlen=8192 ;;
mbox)	maxlen=16384 ;;
cache)	maxlen=16384 ;;
passwd)	maxlen=16384 ;;
plain)	maxlen=1024 ;;
proxy)	maxlen=66000 ;;
*)	echo "fuzz/run.sh: unknown target $name" >&2; exit 2 ;;
esac
mkdir -p "$work" "$art" build/log
: > "$log"

if [ -d "fuzz/regress/$base" ] && [ -n "$(ls -A "fuzz/regress/$base")" ]; then
	if ! "$bin" fuzz/regress/"$base"/* >> "$log" 2>&1; then
		echo "fuzz_$name: FAILED on a saved regression input (see $log)"
		grep -m 5 'invariant broken\|ERROR\|runtime error\|Running:' "$log"
		exit 1
	fi
fi

dict=
[ -f "fuzz/$base.dict" ] && dict=-dict=fuzz/$base.dict
"$bin" -max_total_time="$secs" -max_len="$maxlen" -timeout=20 \
    -print_final_stats=1 $dict -artifact_prefix="$art/" \
    "$work" "fuzz/corpus/$base" >> "$log" 2>&1
rc=$?
runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
took=$(sed -n 's/^Done [0-9]* runs in \([0-9]*\) second.*/\1/p' "$log" |
    tail -n 1)
files=$(ls "$work" | wc -l)
if [ $rc -ne 0 ]; then
	echo "fuzz_$name: FAILED after ${runs:-?} executions (see $log):"
	grep -m 5 'invariant broken\|ERROR:\|runtime error\|Test unit written' \
	    "$log"
	exit 1
fi
echo "fuzz_$name: ok, ${runs:-?} executions in ${took:-?} s, corpus $files files"
