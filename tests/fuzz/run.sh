#!/bin/sh
# tests/fuzz/run.sh: build the request parser's libFuzzer target with clang
# (AddressSanitizer and UBSan on) and run it for FUZZ_SECONDS (default 20)
# from a seed corpus of the requests the tool sends. A crash, a leak or a
# sanitizer report fails the test; without clang it is skipped (exit 77).
set -eu
src=${VRAMSHIM_SRC:?run through make check}
b=${VRAMSHIM_BUILD:?run through make check}
command -v clang >/dev/null 2>&1 || { echo "clang not found: skipped"; exit 77; }
work=$b/tests/fuzz/work
rm -rf "$work"
mkdir -p "$work/corpus"
cuda_inc=$(sed -n "s/^CUDA_CPPFLAGS = //p" "$b/Makefile")
clang -g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined \
	-I"$src/src" -I"$src/include" -I"$b" $cuda_inc \
	"$src/tests/fuzz/fuzz_request.c" "$src/src/protocol.c" -o "$work/fuzz_request"
i=0
for seed in '{"cmd":"hello"}' '{"cmd":"stats"}' '{"cmd":"free"}' \
	'{"cmd":"set","key":"vram_limit","value":"4G"}' \
	'{"cmd":"evict","owner":"unet","bytes":1073741824}'; do
	printf '%s' "$seed" >"$work/corpus/seed$i"
	i=$((i + 1))
done
"$work/fuzz_request" -max_total_time="${FUZZ_SECONDS:-20}" -max_len=4200 \
	-print_final_stats=1 "$work/corpus" 2>"$work/log" || { tail -40 "$work/log"; exit 1; }
tail -12 "$work/log"
