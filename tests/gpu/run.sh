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
row() { rows+=("| $1 | $2 | $3 |"); [ "$2" = PASS ] || [ "$2" = SKIP ] || fails=$((fails + 1)); }

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
# 6. two programs on one GPU (issue 15): two PyTorch processes each needing
# about 60% of the device take turns; alone, as a pair without vramshim (the
# second must fail with out-of-memory), and as a pair under vramshim (both
# finish, outputs identical to alone; step times against alone)
python3 tests/gpu/torch_relief.py --alone --seed 1 --out "$out/relief-alone-a.bin" >"$out/relief-alone-a.log" 2>&1
python3 tests/gpu/torch_relief.py --alone --seed 2 --out "$out/relief-alone-b.bin" >"$out/relief-alone-b.log" 2>&1
python3 tests/gpu/torch_relief.py --out-a "$out/relief-native-a.bin" --out-b "$out/relief-native-b.bin" \
	>"$out/relief-native.log" 2>&1; n=$?
VRAMSHIM_IDLE_MS=200 LD_PRELOAD=$lib python3 tests/gpu/torch_relief.py --out-a "$out/relief-shim-a.bin" \
	--out-b "$out/relief-shim-b.bin" >"$out/relief-shim.log" 2>&1; v=$?
g() { awk -v k="$1" '$1==k {print $2}' "$2"; }
detail="alone $(g step "$out/relief-alone-a.log")/$(g step "$out/relief-alone-b.log") s a step, under vramshim $(g step_a "$out/relief-shim.log")/$(g step_b "$out/relief-shim.log") s; without vramshim: $(head -c 60 "$out/relief-native.log")"
if [ $n -eq 3 ] && [ $v -eq 0 ] && cmp -s "$out/relief-alone-a.bin" "$out/relief-shim-a.bin" &&
	cmp -s "$out/relief-alone-b.bin" "$out/relief-shim-b.bin"; then
	row "two PyTorch processes, 60% of the GPU each, taking turns" PASS "outputs identical to alone; $detail"
else
	row "two PyTorch processes, 60% of the GPU each, taking turns" FAIL "native exit $n (3: second OOM), vramshim exit $v; $detail (see relief-*.log)"
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

# 6. benchmarks, on request (they take a few minutes)
if [ "${1:-}" = "--bench" ]; then
	VRAMSHIM_BUILD=$b ROUNDS=${ROUNDS:-7} sh bench/run.sh >"$out/bench.md" 2>&1
	row "benchmarks" PASS "table in bench.md"
	ratio() { awk -v a="$1" -v b="$2" 'BEGIN{ if (b > 0) printf "%.2f", a/b; else print "?" }'; }
	# loading at bus speed (issue 14): PyTorch loading a 4 GiB
	# safetensors-style file from the page cache with mmap and .to("cuda")
	python3 tests/gpu/torch_load.py --out "$out/load-native.txt" >"$out/load-native.log" 2>&1; n=$?
	LD_PRELOAD=$lib python3 tests/gpu/torch_load.py --out "$out/load-shim.txt" >"$out/load-shim.log" 2>&1; v=$?
	t_n=$(awk '/^load_s/ {print $2}' "$out/load-native.log")
	t_v=$(awk '/^load_s/ {print $2}' "$out/load-shim.log")
	speedup=$(ratio "${t_n:-0}" "${t_v:-0}")
	detail="native ${t_n:-?} s, vramshim ${t_v:-?} s: ${speedup}x (target 3x)"
	if [ $n -eq 0 ] && [ $v -eq 0 ] && cmp -s "$out/load-native.txt" "$out/load-shim.txt" &&
		awk -v s="$speedup" 'BEGIN{exit !(s >= 3)}'; then
		row "PyTorch loading 4 GiB (mmap, .to(\"cuda\"))" PASS "tensors identical; $detail"
	else
		row "PyTorch loading 4 GiB (mmap, .to(\"cuda\"))" FAIL "native exit $n, vramshim exit $v; $detail (see load-*.log)"
	fi
	# pageable copies against pinned, and cuMemHostRegister of 4 GiB fresh memory
	BENCH_MOVE_MB=1024 BENCH_REGISTER_MB=4096 bench/bench_move >"$out/register-native.log" 2>&1
	BENCH_MOVE_MB=1024 BENCH_REGISTER_MB=4096 LD_PRELOAD=$lib bench/bench_move >"$out/register-shim.log" 2>&1
	get() { awk -v k="$1" '$1==k {print $2}' "$2"; }
	r_n=$(get register_fresh_ms "$out/register-native.log")
	r_v=$(get register_fresh_ms "$out/register-shim.log")
	speedup=$(ratio "${r_n:-0}" "${r_v:-0}")
	if awk -v s="$speedup" 'BEGIN{exit !(s >= 3)}'; then res=PASS; else res=FAIL; fi
	row "cuMemHostRegister of 4 GiB fresh memory" $res "driver ${r_n:-?} ms, prefaulted ${r_v:-?} ms: ${speedup}x (target 3x)"
	pin=$(get copy_pinned_htod "$out/register-native.log")
	p_n=$(get copy_pageable_htod "$out/register-native.log")
	p_v=$(get copy_pageable_htod "$out/register-shim.log")
	frac=$(ratio "${p_v:-0}" "${pin:-0}")
	if awk -v s="$frac" 'BEGIN{exit !(s >= 0.8)}'; then res=PASS; else res=FAIL; fi
	row "pageable host-to-device copy, 1 GiB" $res "pinned ${pin:-?} GB/s, driver ${p_n:-?}, vramshim ${p_v:-?}: ${frac} of pinned (target 0.8)"
fi

# issue 11: a CUDA graph replayed while a limit forces offload, and peer
# copies between two GPUs over backed buffers; issue 12: cudaMallocAsync in
# a 4 GiB slice, against nvidia-smi's figure for the process
python3 tests/gpu/torch_more.py --graphs "$out/graphs-native.bin" >"$out/graphs-native.log" 2>&1; n=$?
VRAMSHIM_VRAM_LIMIT=4G LD_PRELOAD=$lib python3 tests/gpu/torch_more.py --graphs "$out/graphs-shim.bin" \
	>"$out/graphs-shim.log" 2>&1; v=$?
detail="$(grep -h '^vramshim' "$out/graphs-shim.log" | tr '\n' ' ')"
if [ $n -eq 0 ] && [ $v -eq 0 ] && cmp -s "$out/graphs-native.bin" "$out/graphs-shim.bin"; then
	row "PyTorch CUDA graph replayed under a 4 GiB limit that forces offload" PASS "outputs identical; $detail"
else
	row "PyTorch CUDA graph replayed under a 4 GiB limit that forces offload" FAIL "native exit $n, vramshim exit $v; $detail (see graphs-*.log)"
fi
python3 tests/gpu/torch_more.py --peer "$out/peer-native.bin" >"$out/peer-native.log" 2>&1; n=$?
if [ $n -eq 77 ]; then
	row "two GPUs, peer copies over backed buffers" SKIP "one GPU on this machine"
else
	LD_PRELOAD=$lib python3 tests/gpu/torch_more.py --peer "$out/peer-shim.bin" >"$out/peer-shim.log" 2>&1; v=$?
	if [ $n -eq 0 ] && [ $v -eq 0 ] && cmp -s "$out/peer-native.bin" "$out/peer-shim.bin"; then
		row "two GPUs, peer copies over backed buffers" PASS "outputs identical"
	else
		row "two GPUs, peer copies over backed buffers" FAIL "native exit $n, vramshim exit $v (see peer-*.log)"
	fi
fi
PYTORCH_CUDA_ALLOC_CONF=backend:cudaMallocAsync VRAMSHIM_VRAM_LIMIT=4G VRAMSHIM_OFFLOAD=off LD_PRELOAD=$lib \
	python3 tests/gpu/torch_more.py --async-slice >"$out/async-slice.log" 2>&1; v=$?
detail="$(grep -h '^held\|^nvidia-smi against' "$out/async-slice.log" | tr '\n' ' ')"
if [ $v -eq 0 ]; then
	row "PyTorch cudaMallocAsync filling a 4 GiB slice" PASS "$detail"
else
	row "PyTorch cudaMallocAsync filling a 4 GiB slice" FAIL "$detail (see async-slice.log)"
fi

echo
echo "| check | result | detail |"
echo "| --- | --- | --- |"
printf '%s\n' "${rows[@]}"
[ -f "$out/bench.md" ] && { echo; cat "$out/bench.md"; }
exit $((fails > 0))
