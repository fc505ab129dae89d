#!/bin/sh
# Instructions vramshim adds to a tracked kernel launch, counted by
# callgrind (wall times on a shared machine are noise; these are not):
# bench_scale --launches runs 20,000 launches naming 1 or 8 random buffers
# among LIVE backed ones; per launch = inclusive cost of vramshim's
# cuLaunchKernel hook less the test driver's cuLaunchKernel inside it.
# Targets (issue 13): under 250 with 1 pointer, under 60 per extra pointer.
# With THREADS=T set, the same 20,000 launches come from T threads at once
# (bench_scale --threads; the counts are summed over the threads).
# Run from the build directory: sh bench/launch_instr.sh [LIVE...]
set -eu
b=${VRAMSHIM_BUILD:-$(pwd)}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
mode=--launches
[ -n "${THREADS:-}" ] && mode=--threads
echo "| live backed buffers | 1 pointer | 8 pointers | per extra pointer | targets (250, 60) |"
echo "| --- | --- | --- | --- | --- |"
for live in ${*:-10 10000}; do
	for p in 1 8; do
		FAKECUDA_MEM=64G LD_LIBRARY_PATH=$b/tests/fakecuda/.libs LD_PRELOAD=$b/.libs/libvramshim.so \
			valgrind --tool=callgrind --callgrind-out-file="$tmp/cg.$p" \
			"$b/bench/bench_scale" $mode "$live" "$p" ${THREADS:-} >/dev/null 2>&1
		callgrind_annotate --inclusive=yes --threshold=100 "$tmp/cg.$p" 2>/dev/null >"$tmp/an.$p"
	done
	awk -v live="$live" '
		function num(s) { gsub(/,/, "", s); return s + 0 }
		FNR == 1 { p = (FILENAME ~ /an\.1$/) ? 1 : 8 }
		# the hook, inlined parts included: its largest figure
		/:vs_hook_cuLaunchKernel( |$)/ && num($1) > hook[p] { hook[p] = num($1) }
		/fake_stream\.c:cuLaunchKernel( |$)/ && num($1) > drv[p] { drv[p] = num($1) }
		END {
			one = (hook[1] - drv[1]) / 20000; eight = (hook[8] - drv[8]) / 20000
			extra = (eight - one) / 7
			printf "| %s | %.0f | %.0f | %.0f | %s |\n", live, one, eight, extra,
				(one < 250 && extra < 60) ? "pass" : "FAIL"
		}' "$tmp/an.1" "$tmp/an.8"
done
