#!/bin/sh
# tools/stress-suite.sh: the test command again and again on a loaded
# machine, to find tests that pass alone and fail under load (issue 11 asks
# for the whole suite 20 times in a row with two copies at once on 2 cores).
#
#   sh tools/stress-suite.sh [-n RUNS] [-k COPIES] [-r] [-c COMMAND]
#
# Each run starts COPIES copies of COMMAND (default: sh tools/run-tests.sh,
# the README's test command) at once, each in a clean clone of this
# repository's committed HEAD in a temporary directory, and waits for all of
# them. It stops at the first run where a copy fails and keeps every log
# and that run's trees; the trees of passing runs are removed, their logs
# kept. -r reuses each copy's tree from run to run (the build is done once;
# COMMAND then runs on a built tree, as make check does). The last line is
# "passed N/N runs with K copies" or "FAILED at run I of N ...".
set -eu
runs=20
copies=2
reuse=0
cmd="sh tools/run-tests.sh"
while getopts n:k:c:r opt; do
	case "$opt" in
	n) runs=$OPTARG ;;
	k) copies=$OPTARG ;;
	c) cmd=$OPTARG ;;
	r) reuse=1 ;;
	*) echo "usage: $0 [-n RUNS] [-k COPIES] [-r] [-c COMMAND]" >&2; exit 2 ;;
	esac
done
case "$runs$copies" in *[!0-9]*) echo "$0: -n and -k take numbers" >&2; exit 2 ;; esac
[ "$runs" -ge 1 ] && [ "$copies" -ge 1 ] || { echo "$0: -n and -k must be at least 1" >&2; exit 2; }
repo=$(cd "$(dirname "$0")/.." && pwd)
[ -z "$(git -C "$repo" status --porcelain --untracked-files=no)" ] ||
	echo "stress-suite: uncommitted changes in $repo are not tested (clones take HEAD)" >&2
work=$(mktemp -d "${TMPDIR:-/tmp}/vs-stress.XXXXXX")
# mktemp makes it 0700: as root, prog_relief_more runs workers as other
# users, which must reach the build's test driver under it
chmod 0755 "$work"
mkdir "$work/logs"
echo "stress-suite: $runs runs of '$cmd' with $copies copies at once; logs in $work/logs"

tree_of() { # run copy
	if [ "$reuse" = 1 ]; then echo "$work/copy$2"; else echo "$work/run$1-copy$2"; fi
}

run=1
while [ "$run" -le "$runs" ]; do
	pids=""
	copy=1
	while [ "$copy" -le "$copies" ]; do
		tree=$(tree_of "$run" "$copy")
		[ -d "$tree" ] || git clone --quiet --no-hardlinks "$repo" "$tree"
		log=$work/logs/run$run-copy$copy.log
		(cd "$tree" && exec sh -c "$cmd") >"$log" 2>&1 &
		pids="$pids $!:$copy"
		copy=$((copy + 1))
	done
	failed=""
	for pc in $pids; do
		wait "${pc%%:*}" || failed="$failed ${pc#*:}"
	done
	if [ -n "$failed" ]; then
		for c in $failed; do
			echo "run $run, copy $c failed; its log, $work/logs/run$run-copy$c.log, ends:"
			tail -30 "$work/logs/run$run-copy$c.log"
			echo "its tree: $(tree_of "$run" "$c")"
		done
		echo "FAILED at run $run of $runs with $copies copies (passed $((run - 1))/$runs)"
		exit 1
	fi
	[ "$reuse" = 1 ] || {
		copy=1
		while [ "$copy" -le "$copies" ]; do
			rm -rf "$(tree_of "$run" "$copy")"
			copy=$((copy + 1))
		done
	}
	echo "run $run/$runs: $copies copies passed ($(date -u +%H:%M:%S), load $(cut -d' ' -f1-3 /proc/loadavg))"
	run=$((run + 1))
done
[ "$reuse" = 0 ] || rm -rf "$work"/copy*
echo "passed $runs/$runs runs with $copies copies"
