#!/bin/sh
# Instructions per cuMemAlloc + cuMemFree pair at LIVE live allocations,
# counted by callgrind and split by whose code ran them: vramshim
# (libvramshim.so), the test driver (libcuda.so.1 of tests/fakecuda) and
# the C library (malloc, locks, system-call wrappers; called by both).
# Each is the difference between a run with PAIRS pairs and one with none,
# divided by PAIRS, so the growing of the live set is not counted.
# Issue 13: alloc+free at 10^5 live within 1.3x of the cost at 10.
# Run from the build directory: sh bench/alloc_instr.sh SIZE [LIVE...]
set -eu
b=${VRAMSHIM_BUILD:-$(pwd)}
size=${1:-2097152}
shift || true
pairs=${PAIRS:-2000}
count() { # live pairs -> "vramshim driver libc" instructions
	sh "$(dirname "$0")/callgrind_split.sh" --allocs "$1" "$size" "$2"
}
echo "| live allocations | size | vramshim | test driver | C library | all, per pair |"
echo "| --- | --- | --- | --- | --- | --- |"
for live in ${*:-10 10000}; do
	set -- $(count "$live" 0) $(count "$live" "$pairs")
	awk -v live="$live" -v size="$size" -v n="$pairs" -v v0="$1" -v d0="$2" -v c0="$3" \
		-v v1="$4" -v d1="$5" -v c1="$6" 'BEGIN {
		v = (v1 - v0) / n; d = (d1 - d0) / n; c = (c1 - c0) / n
		printf "| %s | %s | %.0f | %.0f | %.0f | %.0f |\n", live, size, v, d, c, v + d + c }'
done
