#!/bin/sh
# tests/fuzz/run.sh: build the libFuzzer targets with clang (AddressSanitizer
# and UBSan on) and run each for FUZZ_RUNS inputs (default 1,000,000, more
# than a loaded 2-core machine ran in the 20 s it used to be given; -1: no
# limit) or FUZZ_SECONDS (default 20), whichever ends first, so that its
# cost does not grow with the CPU it finds free: the request
# parser, from a seed corpus of the requests the tool sends, and the
# connecting sides' reading of answers (fuzz_answer), from answers servers
# send. A crash, a leak or a
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
"$work/fuzz_request" -runs="${FUZZ_RUNS:-1000000}" -max_total_time="${FUZZ_SECONDS:-20}" -max_len=4200 \
	-print_final_stats=1 "$work/corpus" 2>"$work/log" || { tail -40 "$work/log"; exit 1; }
tail -12 "$work/log"

jansson=$(pkg-config --cflags --libs jansson)
clang -g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined \
	-I"$src/src" -I"$src/include" -I"$src/tools" -I"$b" $cuda_inc \
	"$src/tests/fuzz/fuzz_answer.c" "$src/tools/client.c" "$src/src/protocol.c" \
	"$src/src/peer.c" "$src/src/sockdir.c" $jansson -o "$work/fuzz_answer"
mkdir -p "$work/answers"
i=0
for seed in '0{"ok":true,"size":8388608,"span":8388608,"gran":2097152,"chunk":67108864,"n":1}' \
	'0{"ok":false,"error":"no buffer shared under that base and token"}' \
	'1{"ok":true,"hello":{"pid":7,"cmd":"\u001b[2Jpython","owners":[{"name":"a\u009bb"}]}}' \
	'1{"ok":false,"error":"\u0007bell"}'; do
	printf '%s' "$seed" >"$work/answers/seed$i"
	i=$((i + 1))
done
"$work/fuzz_answer" -runs="${FUZZ_RUNS:-1000000}" -max_total_time="${FUZZ_SECONDS:-20}" -max_len=4200 \
	-print_final_stats=1 "$work/answers" 2>"$work/log-answer" ||
	{ tail -40 "$work/log-answer"; exit 1; }
tail -12 "$work/log-answer"
