#!/bin/sh
# bench/run.sh: every benchmark without vramshim, with vramshim preloaded but
# disabled (VRAMSHIM_DISABLE=1: same address-space layout, pure
# pass-through), with vramshim, and with vramshim enforcing limits (a VRAM
# limit of 50%, a 1 GiB reserve, an owner limit: every rule of the budget is
# checked on every allocation), interleaved, ROUNDS times (default 7).
# Prints medians and ratios as a markdown table; then the move bandwidths
# (bench_move: the bus with pinned and pageable copies, and vramshim moving
# a 1 GiB buffer to pinned and to pageable memory and back) as GB/s and as
# a fraction of the pinned copy in the same direction.
#
# "ratio" is vramshim against no vramshim, the figure users feel. "hooks" is
# vramshim against the disabled preload: the cost of the hooks alone. With
# the test driver, whose mmap-based allocation is sensitive to the address
# space layout, only "hooks" is meaningful; on a GPU both are.
#
# Last, bench_scale (with vramshim, once; best of three inside): ns per
# operation at 10, 10^3 and 10^5 live buffers side by side, with pass/fail
# against issue 13's targets. --scale runs only that.
#
# With --fake (or when no libcuda.so.1 is installed) it runs against the test
# driver. Run from the build directory.
set -eu
b=${VRAMSHIM_BUILD:-$(pwd)}
rounds=${ROUNDS:-7}
fake=0
scale_only=0
for arg in "$@"; do
	case $arg in
	--fake) fake=1 ;;
	--scale) scale_only=1 ;;
	*) echo "usage: $0 [--fake] [--scale]" >&2; exit 2 ;;
	esac
done
ldconfig -p 2>/dev/null | grep -q 'libcuda.so.1 ' || fake=1
if [ $fake = 1 ]; then
	export LD_LIBRARY_PATH=$b/tests/fakecuda/.libs${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
	export FAKECUDA_MEM=4G
	# bench_scale backs 10,000 buffers of 2 MiB
	scale_mem=64G
	echo "driver: test driver (tests/fakecuda), $(nproc) cores"
else
	echo "driver: $(ldconfig -p | awk '/libcuda.so.1 /{print $NF; exit}')"
fi
lib=$b/.libs/libvramshim.so
scale() {
	echo
	echo "live buffers: ns per operation, best of 3"
	FAKECUDA_MEM=${scale_mem:-${FAKECUDA_MEM:-}} LD_PRELOAD=$lib "$b/bench/bench_scale"
}
if [ $scale_only = 1 ]; then
	scale
	exit 0
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
for r in $(seq "$rounds"); do
	for bench in alloc launch; do
		"$b/bench/bench_$bench" >>"$tmp/$bench.native"
		VRAMSHIM_DISABLE=1 LD_PRELOAD=$lib "$b/bench/bench_$bench" >>"$tmp/$bench.off"
		LD_PRELOAD=$lib "$b/bench/bench_$bench" >>"$tmp/$bench.shim"
		VRAMSHIM_VRAM_LIMIT=50% VRAMSHIM_RESERVE_VRAM=1G VRAMSHIM_OWNER_LIMIT=bench_$bench=3G \
			LD_PRELOAD=$lib "$b/bench/bench_$bench" >>"$tmp/$bench.limits"
	done
done
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN{printf "%.3f", a/b}'; }
echo
echo "| measure | native | preloaded, disabled | vramshim | vramshim, limits on | ratio | ratio, limits on | hooks | hooks, limits on |"
echo "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"
line() { # name
	echo "| $1 | $native | $off | $shim | $limits | $(ratio $shim $native) | $(ratio $limits $native) | $(ratio $shim $off) | $(ratio $limits $off) |"
}
for size in 2097152 67108864 1073741824; do
	for v in native off shim limits; do
		eval "$v=\$(awk -v s=$size '\$2==s {print \$3}' \"$tmp/alloc.$v\" | median)"
	done
	line "alloc+free $((size / 1048576)) MiB, ns"
done
for v in native off shim limits; do
	eval "$v=\$(awk '\$1==\"mem_get_info\" {print \$3}' \"$tmp/alloc.$v\" | median)"
done
line "cuMemGetInfo (one ask of the driver), ns"
for v in native off shim limits; do
	eval "$v=\$(awk '\$1==\"launch\" {print \$2}' \"$tmp/launch.$v\" | median)"
done
line "empty-kernel launches per second"
for v in native off shim limits; do
	eval "$v=\$(awk '\$1==\"launch_touch\" {print \$2}' \"$tmp/launch.$v\" | median)"
done
line "launches naming one of 8 backed buffers, per second"

# ---- moves: one run each (bench_move takes the best of 5 inside) ----------
"$b/bench/bench_move" >"$tmp/move.native"
LD_PRELOAD=$lib "$b/bench/bench_move" >"$tmp/move.shim"
VRAMSHIM_OFFLOAD=pinned LD_PRELOAD=$lib "$b/bench/bench_move" >"$tmp/move.pinned"
VRAMSHIM_OFFLOAD=auto VRAMSHIM_PIN_LIMIT=256M BENCH_MOVE_TIER=pageable VRAMSHIM_LOG=error \
	LD_PRELOAD=$lib "$b/bench/bench_move" >"$tmp/move.pageable"
get() { awk -v k="$1" '$1==k {print $2}' "$tmp/move.$2"; }
frac() { awk -v a="$1" -v b="$2" 'BEGIN{ if (b > 0) printf "%.2f", a/b; else print "-" }'; }
out=$(get copy_pinned_dtoh native)
in=$(get copy_pinned_htod native)
echo
echo "| move (1 GiB) | GB/s | fraction of the pinned copy |"
echo "| --- | --- | --- |"
echo "| pinned copy, device to host (the bus) | $out | 1.00 |"
echo "| pinned copy, host to device (the bus) | $in | 1.00 |"
echo "| pageable copy, device to host | $(get copy_pageable_dtoh native) | $(frac "$(get copy_pageable_dtoh native)" "$out") |"
echo "| pageable copy, host to device | $(get copy_pageable_htod native) | $(frac "$(get copy_pageable_htod native)" "$in") |"
for tier in pinned pageable; do
	echo "| vramshim offload to $tier | $(get move_${tier}_out $tier) | $(frac "$(get move_${tier}_out $tier)" "$out") |"
	echo "| vramshim bring-back from $tier | $(get move_${tier}_in $tier) | $(frac "$(get move_${tier}_in $tier)" "$in") |"
done

# ---- loading: vramshim's fast copies against the driver's pageable copy ----
echo
echo "| loading (${BENCH_MOVE_MB:-1024} MiB) | driver alone | vramshim | driver, fraction of pinned | vramshim, fraction of pinned |"
echo "| --- | --- | --- | --- | --- |"
for dir in htod dtoh; do
	pin=$(get copy_pinned_$dir native)
	d=$(get copy_pageable_$dir native)
	v=$(get copy_pageable_$dir shim)
	echo "| pageable copy, $dir, GB/s | $d | $v | $(frac "$d" "$pin") | $(frac "$v" "$pin") |"
done
for temp in cold warm; do
	d=$(get file_${temp}_htod native)
	v=$(get file_${temp}_htod shim)
	echo "| mapped file, $temp, htod, GB/s | $d | $v | $(frac "$d" "$in") | $(frac "$v" "$in") |"
done
d=$(get register_fresh_ms native)
v=$(get register_fresh_ms shim)
echo "| cuMemHostRegister of 1 GiB fresh memory, ms (vramshim: prefaulted) | $d | $v | - | speed-up $(frac "$d" "$v") |"

# ---- the move fence against the synchronise it replaced ------------------
VRAMSHIM_OFFLOAD=pinned LD_PRELOAD=$lib "$b/bench/bench_fence" >"$tmp/fence"
fence() { awk -v k="$1" '$1==k {print $2}' "$tmp/fence"; }
echo
echo "| median of 2001, microseconds | idle context | 4 kernels queued |"
echo "| --- | --- | --- |"
echo "| cuCtxSynchronize | $(fence sync_us) | $(fence sync_us_queued) |"
echo "| a move's fence (waiter thread, deadline) | $(fence fence_us) | $(fence fence_us_queued) |"
scale
