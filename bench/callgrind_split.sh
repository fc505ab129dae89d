#!/bin/sh
# The instructions of one bench_scale run under vramshim, counted by
# callgrind and split by whose code ran them: prints "vramshim driver libc"
# (libvramshim.so, the test driver's libcuda.so.1, the C library: malloc,
# locks, system-call wrappers, called by both). Used by alloc_instr.sh and
# make_room_instr.sh, which subtract a run doing none of the operation.
# With FUNC set, a fourth figure: the inclusive instructions of vramshim's
# function of that name (all its calls).
# Usage (from the build directory): sh bench/callgrind_split.sh BENCH_SCALE_ARGS...
set -eu
b=${VRAMSHIM_BUILD:-$(pwd)}
out=$(mktemp)
trap 'rm -f "$out"' EXIT
FAKECUDA_MEM=64G LD_LIBRARY_PATH=$b/tests/fakecuda/.libs LD_PRELOAD=$b/.libs/libvramshim.so \
	valgrind --tool=callgrind --callgrind-out-file="$out" "$b/bench/bench_scale" "$@" >/dev/null 2>&1
split=$(callgrind_annotate --inclusive=no --threshold=100 "$out" 2>/dev/null | awk '
	function num(s) { gsub(/,/, "", s); return s + 0 }
	/\[.*libvramshim\.so/ { v += num($1) }
	/\[.*fakecuda\/\.libs\/libcuda\.so/ { d += num($1) }
	/\[.*libc\.so/ { c += num($1) }
	END { printf "%d %d %d\n", v, d, c }')
if [ -n "${FUNC:-}" ]; then
	split="$split $(callgrind_annotate --inclusive=yes --threshold=100 "$out" 2>/dev/null | awk -v f=":$FUNC " '
		function num(s) { gsub(/,/, "", s); return s + 0 }
		index($0, f) && / \[.*libvramshim\.so/ && num($1) > best { best = num($1) }
		END { printf "%d", best }')"
fi
echo "$split"
