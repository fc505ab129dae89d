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
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
count() { # live pairs -> "vramshim driver libc" instructions
	FAKECUDA_MEM=64G LD_LIBRARY_PATH=$b/tests/fakecuda/.libs LD_PRELOAD=$b/.libs/libvramshim.so \
		valgrind --tool=callgrind --callgrind-out-file="$tmp/cg" \
		"$b/bench/bench_scale" --allocs "$1" "$size" "$2" >/dev/null 2>&1
	callgrind_annotate --inclusive=no --threshold=100 "$tmp/cg" 2>/dev/null | awk '
		function num(s) { gsub(/,/, "", s); return s + 0 }
		/\[.*libvramshim\.so/ { v += num($1) }
		/\[.*fakecuda\/\.libs\/libcuda\.so/ { d += num($1) }
		/\[.*libc\.so/ { c += num($1) }
		END { printf "%d %d %d\n", v, d, c }'
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
