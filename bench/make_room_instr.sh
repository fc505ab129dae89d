#!/bin/sh
# Instructions per make-room cycle (an allocation over the limit that moves
# one backed buffer to pinned memory, then its free) at LIVE live
# allocations (backed ones up to bench_scale's cap of 10,000, the test
# driver's descriptors permitting, then small ones), counted by callgrind
# and split by whose code ran them (callgrind_split.sh): the difference
# between a run of CYCLES cycles and one of none, divided by CYCLES. The
# last column is the choice of the victim alone (tier.c's pick_victim,
# inclusive): the part that was a walk of every buffer before issue 13.
# vramshim's total also holds its threads' work during the run (the host
# pool's refill, the fence waiter), which varies from run to run.
# Issue 13: make-room independent of n within 1.3x.
# Run from the build directory: sh bench/make_room_instr.sh [LIVE...]
set -eu
cycles=${CYCLES:-8}
echo "| live allocations | vramshim | test driver | C library | vramshim, ratio to the first | choosing the victim |"
echo "| --- | --- | --- | --- | --- | --- |"
first=
for live in ${*:-10 1000 10000 100000}; do
	set -- $(FUNC=pick_victim sh "$(dirname "$0")/callgrind_split.sh" --make-room "$live" 0) \
		$(FUNC=pick_victim sh "$(dirname "$0")/callgrind_split.sh" --make-room "$live" "$cycles")
	v=$(( ($5 - $1) / cycles ))
	pick=$(( ($8 - $4) / cycles ))
	first=${first:-$v}
	awk -v live="$live" -v n="$cycles" -v v="$v" -v first="$first" -v d0="$2" -v c0="$3" \
		-v d1="$6" -v c1="$7" -v pick="$pick" 'BEGIN {
		printf "| %s | %d | %.0f | %.0f | %.2f | %d |\n", live, v, (d1 - d0) / n, (c1 - c0) / n,
			v / first, pick }'
done
