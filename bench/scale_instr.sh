#!/bin/sh
# Issue 13's scaling table in one run: for each operation whose cost could
# grow with the live buffers, the instructions vramshim adds at 10, 10^3
# and 10^5 live allocations (callgrind, which a loaded machine does not
# move) beside the nanoseconds bench_scale measures at the same sizes
# (which it does), with the ratio of the largest to the smallest size and
# pass/fail against the target (within 1.3x; a graph launch also under
# 1 us), then the start-up of a process that never calls CUDA.
#
# Instructions per operation, vramshim's own code only (libvramshim.so,
# split by callgrind_split.sh), as the difference between a run doing N
# operations and one doing none, over N, so growing the live set is not
# counted; launches as bench/launch_instr.sh counts them (the hook's
# inclusive cost less the test driver's launch). Backed buffers stop at
# bench_scale's cap of 10,000 (the test driver's descriptors); past it the
# live allocations are small ones, and launches name backed buffers only.
# Start-up: all instructions of /bin/true with vramshim preloaded, less
# those with an empty preloaded library (bench/empty_preload.c).
#
# Run from the build directory after `make -j2 all check` (or
# `make bench`): sh bench/scale_instr.sh [LEVEL...] (default 10 1000
# 100000; the nanosecond columns are always bench_scale's 10, 10^3, 10^5;
# SCALE_NS=0 leaves them out). At 10^5 it takes some 20 minutes of CPU.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
b=${VRAMSHIM_BUILD:-$(pwd)}
export VRAMSHIM_BUILD="$b"
levels=${*:-10 1000 100000}
pairs=${PAIRS:-1000}
graphs=${GRAPHS:-2000}
cycles=${CYCLES:-8}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

mine() { # bench_scale arguments -> vramshim's instructions in that run
	sh "$here/callgrind_split.sh" "$@" | cut -d' ' -f1
}
per_op() { # N, then the arguments of a run of N operations with N as "@": per operation
	n=$1
	shift
	zero=$(mine $(echo "$@" | sed 's/@/0/'))
	full=$(mine $(echo "$@" | sed "s/@/$n/"))
	echo $(((full - zero) / n))
}
launch_pair() { # live -> "one eight" (launch_instr.sh's row)
	live=$1
	[ "$live" -gt 10000 ] && live=10000
	sh "$here/launch_instr.sh" "$live" | awk -F'|' 'NR == 3 { gsub(/ /, ""); print $3, $4 }'
}

for live in $levels; do
	set -- $(launch_pair "$live")
	{
		echo "small $(per_op "$pairs" --allocs "$live" 256 @)"
		echo "backed $(per_op "$pairs" --allocs "$live" 2097152 @)"
		echo "launch1 $1"
		echo "launch8 $2"
		echo "graph $(per_op "$graphs" --graphs "$live" @)"
		echo "room $(per_op "$cycles" --make-room "$live" @)"
	} >"$tmp/instr.$live"
done

# the nanoseconds, from one ordinary bench_scale run (its own best of three)
if [ "${SCALE_NS:-1}" != 0 ]; then
	FAKECUDA_MEM=64G LD_LIBRARY_PATH="$b/tests/fakecuda/.libs" LD_PRELOAD="$b/.libs/libvramshim.so" \
		"$b/bench/bench_scale" >"$tmp/ns" 2>&1 || true
fi
touch "$tmp/ns"

# start-up: /bin/true under callgrind, vramshim against the empty library
total() { # preload -> all instructions of /bin/true
	LD_PRELOAD=$1 valgrind --tool=callgrind --callgrind-out-file="$tmp/cg.start" /bin/true \
		>/dev/null 2>&1
	callgrind_annotate "$tmp/cg.start" 2>/dev/null | awk '/PROGRAM TOTALS/ { gsub(/,/, "", $1); print $1 }'
}
empty=$b/bench/.libs/libempty_preload.so
startup=-
[ -r "$empty" ] && startup=$(($(total "$b/.libs/libvramshim.so") - $(total "$empty")))

first=${levels%% *}
last=${levels##* }
awk -v levels="$levels" -v first="$first" -v last="$last" -v tmp="$tmp" -v startup="$startup" '
	BEGIN {
		n = split(levels, lv, " ")
		for (i = 1; i <= n; i++) {
			f = tmp "/instr." lv[i]
			while ((getline line < f) > 0) { split(line, p, " "); ins[p[1], i] = p[2] }
			close(f)
		}
		# bench_scale rows, in its order
		split("small backed launch1 launch8 graph room", key, " ")
		split("alloc+free small (256 B)|alloc+free backed (2 MiB)|launch, 1 pointer|launch, 8 pointers|graph launch (empty graph)|make-room (one victim)", name, "|")
		f = tmp "/ns"
		r = 0
		while ((getline line < f) > 0) {
			if (line !~ /^\| (alloc|launch|graph|make-room)/) continue
			r++
			m = split(line, c, "|")
			for (k = 3; k <= 5; k++) { v = c[k]; gsub(/ /, "", v); ns[r, k - 2] = v }
		}
		head = "| operation |"
		sep = "| --- |"
		for (i = 1; i <= n; i++) { head = head " instructions, " lv[i] " |"; sep = sep " --- |" }
		head = head " " last " / " first " | within 1.3x | ns, 10 / 10^3 / 10^5 |"
		sep = sep " --- | --- | --- |"
		print head
		print sep
		for (r = 1; r <= 6; r++) {
			row = "| " name[r] " |"
			for (i = 1; i <= n; i++) row = row " " ins[key[r], i] " |"
			a = ins[key[r], 1]; z = ins[key[r], n]
			ratio = a > 0 ? z / a : 0
			verdict = (a > 0 && ratio <= 1.3) ? "pass" : "FAIL"
			if (key[r] == "graph")
				verdict = verdict ((ns[r, 3] != "" && ns[r, 3] + 0 < 1000) ? "; under 1 us: pass" : "; under 1 us: -")
			nsc = (ns[r, 1] != "") ? ns[r, 1] " / " ns[r, 2] " / " ns[r, 3] : "-"
			printf "%s %.2f | %s | %s |\n", row, ratio, verdict, nsc
		}
		printf "\nstart-up of /bin/true (never calls CUDA), instructions beyond an empty preloaded library: %s\n", startup
	}'
