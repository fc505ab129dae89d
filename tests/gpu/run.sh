#!/bin/bash
# tests/gpu/run.sh: every GPU check in one call, ending with a summary table.
# Run from a build tree made on the development machine and carried to the
# GPU machine (it has nvcc and PyTorch but cannot install anything):
#   bash tests/gpu/run.sh [--bench]
# Each workload runs without and with vramshim; results must be identical
# byte for byte, and under vramshim the bytes it counts must equal what the
# program holds. Logs go to $OUT (or /tmp/vramshim-gpu).
set -u
cd "$(dirname "$0")/../.."
b=$(pwd)
lib=$b/.libs/libvramshim.so
out=${OUT:-/tmp/vramshim-gpu}
mkdir -p "$out"
rows=()
fails=0
row() { rows+=("| $1 | $2 | $3 |"); [ "$2" = PASS ] || fails=$((fails + 1)); }

[ -f "$lib" ] || { echo "no $lib: build first (make), then carry the tree"; exit 2; }
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader >"$out/gpu.txt" 2>&1
echo "GPU: $(cat "$out/gpu.txt")"

# 1. PyTorch under its three allocators
for mode in default expandable async; do
	case $mode in
	default) conf="" ;;
	expandable) conf="expandable_segments:True" ;;
	async) conf="backend:cudaMallocAsync" ;;
	esac
	PYTORCH_CUDA_ALLOC_CONF=$conf python3 tests/gpu/torch_check.py --out "$out/torch-$mode-native.bin" \
		>"$out/torch-$mode-native.log" 2>&1
	n=$?
	PYTORCH_CUDA_ALLOC_CONF=$conf LD_PRELOAD=$lib python3 tests/gpu/torch_check.py \
		--out "$out/torch-$mode-shim.bin" --expect-vramshim >"$out/torch-$mode-shim.log" 2>&1
	v=$?
	detail="$(grep -h 'torch memory\|vramshim devices' "$out/torch-$mode-shim.log" | tr '\n' ' ')"
	if [ $n -eq 0 ] && [ $v -eq 0 ] && cmp -s "$out/torch-$mode-native.bin" "$out/torch-$mode-shim.bin"; then
		row "PyTorch $mode allocator" PASS "outputs identical; $detail"
	else
		row "PyTorch $mode allocator" FAIL "native exit $n, vramshim exit $v; $detail (see torch-$mode-*.log)"
	fi
done

# 2. a program built by nvcc (static cudart)
mkdir -p .build-gpu
if nvcc -O2 -o .build-gpu/nvcc_check tests/gpu/nvcc_check.cu -ldl >"$out/nvcc-build.log" 2>&1; then
	.build-gpu/nvcc_check >"$out/nvcc-native.log" 2>&1; n=$?
	LD_PRELOAD=$lib .build-gpu/nvcc_check >"$out/nvcc-shim.log" 2>&1; v=$?
	if [ $n -eq 0 ] && [ $v -eq 0 ] && [ "$(grep checksum "$out/nvcc-native.log")" = "$(grep checksum "$out/nvcc-shim.log")" ]; then
		row "nvcc program (static cudart)" PASS "$(grep -h bytes "$out/nvcc-shim.log" | tr '\n' ' ')"
	else
		row "nvcc program (static cudart)" FAIL "native exit $n, vramshim exit $v (see nvcc-*.log)"
	fi
else
	row "nvcc program (static cudart)" FAIL "nvcc failed (see nvcc-build.log)"
fi

# 3. a driver-API program
tests/gpu/driver_check >"$out/driver-native.log" 2>&1; n=$?
LD_PRELOAD=$lib tests/gpu/driver_check >"$out/driver-shim.log" 2>&1; v=$?
if [ $n -eq 0 ] && [ $v -eq 0 ] && [ "$(grep checksum "$out/driver-native.log")" = "$(grep checksum "$out/driver-shim.log")" ]; then
	row "driver-API program" PASS "$(grep -h bytes "$out/driver-shim.log")"
else
	row "driver-API program" FAIL "native exit $n, vramshim exit $v (see driver-*.log)"
fi

# 4. limits: PyTorch in a 4 GiB slice with a 1 GiB pin cap, offload off
VRAMSHIM_VRAM_LIMIT=4G VRAMSHIM_OFFLOAD=off VRAMSHIM_PIN_LIMIT=1G LD_PRELOAD=$lib \
	python3 tests/gpu/torch_limits.py >"$out/torch-limits.log" 2>&1
v=$?
detail="$(grep -c '^ok' "$out/torch-limits.log") ok, $(grep -c '^FAIL' "$out/torch-limits.log") failed"
if [ $v -eq 0 ]; then
	row "PyTorch in a 4 GiB slice, 1 GiB pin cap" PASS "$detail; $(grep -h 'held\|self-sizing' "$out/torch-limits.log" | tr '\n' ' ')"
else
	row "PyTorch in a 4 GiB slice, 1 GiB pin cap" FAIL "$detail (see torch-limits.log)"
fi

# 5. offload (issue 4): three 6 GiB models in turn under an 8 GiB limit,
# against the run without a limit and against moving them by hand
python3 tests/gpu/torch_offload.py --out "$out/offload-native.bin" >"$out/offload-native.log" 2>&1; n=$?
VRAMSHIM_VRAM_LIMIT=8G LD_PRELOAD=$lib python3 tests/gpu/torch_offload.py \
	--out "$out/offload-shim.bin" >"$out/offload-shim.log" 2>&1; v=$?
python3 tests/gpu/torch_offload.py --mode hand --out "$out/offload-hand.bin" >"$out/offload-hand.log" 2>&1
t_shim=$(awk '/^time/ {print $2}' "$out/offload-shim.log")
t_hand=$(awk '/^time/ {print $2}' "$out/offload-hand.log")
detail="time under vramshim ${t_shim:-?} s, by hand ${t_hand:-?} s"
if [ $n -eq 0 ] && [ $v -eq 0 ] && cmp -s "$out/offload-native.bin" "$out/offload-shim.bin"; then
	row "PyTorch, three 6 GiB models under an 8 GiB limit" PASS "outputs identical; $detail"
else
	row "PyTorch, three 6 GiB models under an 8 GiB limit" FAIL "native exit $n, vramshim exit $v; $detail (see offload-*.log)"
fi
if nvcc -O2 -o .build-gpu/nvcc_moves tests/gpu/nvcc_moves.cu -ldl -lpthread >"$out/moves-build.log" 2>&1; then
	.build-gpu/nvcc_moves >"$out/moves-native.log" 2>&1; n=$?
	VRAMSHIM_VRAM_LIMIT=1G LD_PRELOAD=$lib .build-gpu/nvcc_moves >"$out/moves-shim.log" 2>&1; v=$?
	if [ $n -eq 0 ] && [ $v -eq 0 ] && [ "$(grep checksum "$out/moves-native.log")" = "$(grep checksum "$out/moves-shim.log")" ]; then
		row "nvcc program, buffers moving under running kernels" PASS "$(grep -h checksum "$out/moves-shim.log")"
	else
		row "nvcc program, buffers moving under running kernels" FAIL "native exit $n, vramshim exit $v (see moves-*.log)"
	fi
else
	row "nvcc program, buffers moving under running kernels" FAIL "nvcc failed (see moves-build.log)"
fi

# 6. benchmarks, on request (they take about a minute)
if [ "${1:-}" = "--bench" ]; then
	VRAMSHIM_BUILD=$b ROUNDS=${ROUNDS:-7} sh bench/run.sh >"$out/bench.md" 2>&1
	row "benchmarks" PASS "table in bench.md"
fi

echo
echo "| check | result | detail |"
echo "| --- | --- | --- |"
printf '%s\n' "${rows[@]}"
[ -f "$out/bench.md" ] && { echo; cat "$out/bench.md"; }
exit $((fails > 0))
