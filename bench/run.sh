#!/bin/sh
# bench/run.sh: every benchmark without vramshim, with vramshim preloaded but
# disabled (VRAMSHIM_DISABLE=1: same address-space layout, pure
# pass-through), and with vramshim, interleaved, ROUNDS times (default 7).
# Prints medians and ratios as a markdown table.
#
# "ratio" is vramshim against no vramshim, the figure users feel. "hooks" is
# vramshim against the disabled preload: the cost of the hooks alone. With
# the test driver, whose mmap-based allocation is sensitive to the address
# space layout, only "hooks" is meaningful; on a GPU both are.
#
# With --fake (or when no libcuda.so.1 is installed) it runs against the test
# driver. Run from the build directory.
set -eu
b=${VRAMSHIM_BUILD:-$(pwd)}
rounds=${ROUNDS:-7}
fake=0
[ "${1:-}" = "--fake" ] && fake=1
ldconfig -p 2>/dev/null | grep -q 'libcuda.so.1 ' || fake=1
if [ $fake = 1 ]; then
	export LD_LIBRARY_PATH=$b/tests/fakecuda/.libs${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
	export FAKECUDA_MEM=4G
	echo "driver: test driver (tests/fakecuda), $(nproc) cores"
else
	echo "driver: $(ldconfig -p | awk '/libcuda.so.1 /{print $NF; exit}')"
fi
lib=$b/.libs/libvramshim.so
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
for r in $(seq "$rounds"); do
	for bench in alloc launch; do
		"$b/bench/bench_$bench" >>"$tmp/$bench.native"
		VRAMSHIM_DISABLE=1 LD_PRELOAD=$lib "$b/bench/bench_$bench" >>"$tmp/$bench.off"
		LD_PRELOAD=$lib "$b/bench/bench_$bench" >>"$tmp/$bench.shim"
	done
done
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN{printf "%.3f", a/b}'; }
echo
echo "| measure | native | preloaded, disabled | vramshim | ratio | hooks |"
echo "| --- | --- | --- | --- | --- | --- |"
for size in 2097152 67108864 1073741824; do
	for v in native off shim; do
		eval "$v=\$(awk -v s=$size '\$2==s {print \$3}' \"$tmp/alloc.$v\" | median)"
	done
	echo "| alloc+free $((size / 1048576)) MiB, ns | $native | $off | $shim | $(ratio $shim $native) | $(ratio $shim $off) |"
done
for v in native off shim; do
	eval "$v=\$(awk '{print \$2}' \"$tmp/launch.$v\" | median)"
done
echo "| empty-kernel launches per second | $native | $off | $shim | $(ratio $shim $native) | $(ratio $shim $off) |"
