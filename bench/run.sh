#!/bin/sh
# bench/run.sh: every benchmark with and without vramshim, interleaved,
# ROUNDS times; prints the median of each and the ratio as a markdown table.
# With --fake (or when no libcuda.so.1 is installed) it runs against the test
# driver, which measures vramshim's own overhead on top of a driver that
# costs almost nothing. Run from the build directory.
set -eu
b=${VRAMSHIM_BUILD:-$(pwd)}
rounds=${ROUNDS:-5}
fake=0
[ "${1:-}" = "--fake" ] && fake=1
ldconfig -p 2>/dev/null | grep -q 'libcuda.so.1 ' || fake=1
if [ $fake = 1 ]; then
	export LD_LIBRARY_PATH=$b/tests/fakecuda/.libs${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
	export FAKECUDA_MEM=4G
	echo "driver: test driver (tests/fakecuda)"
else
	echo "driver: $(ldconfig -p | awk '/libcuda.so.1 /{print $NF; exit}')"
fi
lib=$b/.libs/libvramshim.so
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
for r in $(seq "$rounds"); do
	"$b/bench/bench_alloc" >>"$tmp/alloc.native"
	LD_PRELOAD=$lib "$b/bench/bench_alloc" >>"$tmp/alloc.shim"
	"$b/bench/bench_launch" >>"$tmp/launch.native"
	LD_PRELOAD=$lib "$b/bench/bench_launch" >>"$tmp/launch.shim"
done
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
echo
echo "| measure | native | vramshim | ratio |"
echo "| --- | --- | --- | --- |"
for size in 2097152 67108864 1073741824; do
	n=$(awk -v s=$size '$2==s {print $3}' "$tmp/alloc.native" | median)
	v=$(awk -v s=$size '$2==s {print $3}' "$tmp/alloc.shim" | median)
	echo "| alloc+free $((size / 1048576)) MiB (ns) | $n | $v | $(awk -v a=$v -v b=$n 'BEGIN{printf "%.3f", a/b}') |"
done
n=$(awk '{print $2}' "$tmp/launch.native" | median)
v=$(awk '{print $2}' "$tmp/launch.shim" | median)
echo "| empty-kernel launches per second | $n | $v | $(awk -v a=$v -v b=$n 'BEGIN{printf "%.3f", a/b}') |"
