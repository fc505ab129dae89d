#!/bin/sh
# A tracked launch from 1 to 8 threads at once (issue 13: per-launch CPU
# flat within 5%). Two figures per thread count, for LIVE backed buffers
# (default 1000) and launches naming 1 or 8 random ones:
# - instructions vramshim adds per launch (launch_instr.sh with THREADS
#   set; callgrind runs the threads one at a time, so this shows added work
#   such as retries, not cache-line contention);
# - process CPU time per launch with vramshim and without it (the test
#   driver alone), the least of RUNS runs (default 5) of bench_scale
#   --threads: contention shows here, and so does the machine's load.
# Run from the build directory: sh bench/launch_threads.sh [LIVE]
set -eu
b=${VRAMSHIM_BUILD:-$(pwd)}
live=${1:-1000}
runs=${RUNS:-5}
least_cpu() { # preload pointers threads -> least CPU ns per launch
	best=
	i=0
	while [ "$i" -lt "$runs" ]; do
		ns=$(FAKECUDA_MEM=64G LD_LIBRARY_PATH=$b/tests/fakecuda/.libs LD_PRELOAD=$1 \
			"$b/bench/bench_scale" --threads "$live" "$2" "$3" | awk '{ print $6 }')
		if [ -z "$best" ] || [ "$ns" -lt "$best" ]; then best=$ns; fi
		i=$((i + 1))
	done
	echo "$best"
}
echo "| threads | instructions, 1 pointer | instructions, 8 pointers | CPU ns per launch, 1 pointer: with / without / added | 8 pointers: with / without / added |"
echo "| --- | --- | --- | --- | --- |"
for t in 1 2 4 8; do
	set -- $(THREADS=$t sh "$(dirname "$0")/launch_instr.sh" "$live" | awk -F'|' 'NR == 3 { print $3, $4 }')
	w1=$(least_cpu "$b/.libs/libvramshim.so" 1 "$t"); n1=$(least_cpu "" 1 "$t")
	w8=$(least_cpu "$b/.libs/libvramshim.so" 8 "$t"); n8=$(least_cpu "" 8 "$t")
	echo "| $t | $1 | $2 | $w1 / $n1 / $((w1 - n1)) | $w8 / $n8 / $((w8 - n8)) |"
done
