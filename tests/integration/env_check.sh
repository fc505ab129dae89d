#!/bin/sh
# env_check.sh: a bad value in any VRAMSHIM_* variable (or HAMi's memory
# limits) gives exactly one line on stderr naming the variable and the value,
# and the program runs on with that setting at its default.
set -u
b=${VRAMSHIM_BUILD:?run through make check}
prog=$b/tests/integration/prog_stats
fail=0
run() { # VAR VALUE [MORE=VALUE...]
	var=$1 value=$2
	shift 2
	env LD_LIBRARY_PATH="$b/tests/fakecuda/.libs" LD_PRELOAD="$b/.libs/libvramshim.so" \
		"$var=$value" "$@" "$prog" >"$tmp/out" 2>"$tmp/err"
}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
check() { # VAR VALUE DEFAULT-PATTERN-IN-STATS
	if ! run "$1" "$2"; then
		echo "FAIL $1=$2: the program did not run"; fail=1; return
	fi
	lines=$(wc -l <"$tmp/err")
	if [ "$lines" -ne 1 ] || ! grep -qF "$1=\"$2\"" "$tmp/err" || ! grep -q 'using the default' "$tmp/err"; then
		echo "FAIL $1=$2: expected one line naming it, got:"; cat "$tmp/err"; fail=1; return
	fi
	if [ -n "$3" ] && ! grep -qF "$3" "$tmp/out"; then
		echo "FAIL $1=$2: the stats do not show the default ($3):"; cat "$tmp/out"; fail=1; return
	fi
	echo "ok   $1=$2"
}
check VRAMSHIM_VRAM_LIMIT 12Q '"vram_limit":[null]'
check VRAMSHIM_VRAM_LIMIT 0:1G,0:2G '"vram_limit":[null]'
check VRAMSHIM_RESERVE_VRAM lots '"reserve_vram":0'
check VRAMSHIM_PIN_LIMIT 250% ''
check VRAMSHIM_OFFLOAD sometimes '"offload":"auto"'
check VRAMSHIM_IDLE_MS -3 '"idle_ms":1000'
check VRAMSHIM_IDLE_MS 1e3 '"idle_ms":1000'
check VRAMSHIM_FREE_QUERY_MS 1s ''
check VRAMSHIM_OWNER 'two words' '"name":"prog_stats"'
check VRAMSHIM_OWNER_LIMIT 'unet:8G' ''
check VRAMSHIM_SOCKET_DIR '' ''
check VRAMSHIM_LOG shouty ''
check VRAMSHIM_LOG_FILE '' ''
check VRAMSHIM_DISABLE perhaps '"allocs":1'

# good values are silent and take effect
if run VRAMSHIM_OWNER comfy && [ ! -s "$tmp/err" ] && grep -qF '"name":"comfy"' "$tmp/out"; then
	echo "ok   VRAMSHIM_OWNER=comfy"
else
	echo "FAIL VRAMSHIM_OWNER=comfy"; cat "$tmp/err" "$tmp/out"; fail=1
fi
if run VRAMSHIM_VRAM_LIMIT 0:4G && [ ! -s "$tmp/err" ] && grep -qF '"vram_limit":[4294967296]' "$tmp/out"; then
	echo "ok   VRAMSHIM_VRAM_LIMIT=0:4G"
else
	echo "FAIL VRAMSHIM_VRAM_LIMIT=0:4G"; cat "$tmp/err" "$tmp/out"; fail=1
fi
# HAMi's settings: each memory form is the limit; a bad one is one line;
# VRAMSHIM_VRAM_LIMIT wins with one line; compute limits get one line.
check CUDA_DEVICE_MEMORY_LIMIT 12Q '"vram_limit":[null]'
check CUDA_DEVICE_MEMORY_LIMIT_0 0 '"vram_limit":[null]'
if run CUDA_DEVICE_MEMORY_LIMIT 3000m && [ ! -s "$tmp/err" ] && grep -qF '"vram_limit":[3145728000]' "$tmp/out"; then
	echo "ok   CUDA_DEVICE_MEMORY_LIMIT=3000m"
else
	echo "FAIL CUDA_DEVICE_MEMORY_LIMIT=3000m"; cat "$tmp/err" "$tmp/out"; fail=1
fi
if run CUDA_DEVICE_MEMORY_LIMIT_0 2g CUDA_DEVICE_MEMORY_LIMIT=1g && [ ! -s "$tmp/err" ] &&
	grep -qF '"vram_limit":[2147483648]' "$tmp/out"; then
	echo "ok   CUDA_DEVICE_MEMORY_LIMIT_0 wins over CUDA_DEVICE_MEMORY_LIMIT"
else
	echo "FAIL CUDA_DEVICE_MEMORY_LIMIT_0=2g"; cat "$tmp/err" "$tmp/out"; fail=1
fi
if run VRAMSHIM_VRAM_LIMIT 4G CUDA_DEVICE_MEMORY_LIMIT=1g && [ "$(wc -l <"$tmp/err")" -eq 1 ] &&
	grep -q 'VRAMSHIM_VRAM_LIMIT is set and wins' "$tmp/err" &&
	grep -qF '"vram_limit":[4294967296]' "$tmp/out"; then
	echo "ok   VRAMSHIM_VRAM_LIMIT wins over CUDA_DEVICE_MEMORY_LIMIT, one line"
else
	echo "FAIL VRAMSHIM_VRAM_LIMIT against CUDA_DEVICE_MEMORY_LIMIT"; cat "$tmp/err" "$tmp/out"; fail=1
fi
if run CUDA_DEVICE_SM_LIMIT 50 GPU_CORE_UTILIZATION_POLICY=force && [ "$(wc -l <"$tmp/err")" -eq 1 ] &&
	grep -qF 'CUDA_DEVICE_SM_LIMIT="50"' "$tmp/err" && grep -qF 'GPU_CORE_UTILIZATION_POLICY="force"' "$tmp/err"; then
	echo "ok   CUDA_DEVICE_SM_LIMIT: one line, not enforced"
else
	echo "FAIL CUDA_DEVICE_SM_LIMIT"; cat "$tmp/err"; fail=1
fi

# the log file receives the lines instead of stderr
if env LD_LIBRARY_PATH="$b/tests/fakecuda/.libs" LD_PRELOAD="$b/.libs/libvramshim.so" \
	VRAMSHIM_LOG_FILE="$tmp/log" VRAMSHIM_OFFLOAD=bad "$prog" >/dev/null 2>"$tmp/err" &&
	[ ! -s "$tmp/err" ] && grep -qF 'VRAMSHIM_OFFLOAD="bad"' "$tmp/log"; then
	echo "ok   VRAMSHIM_LOG_FILE"
else
	echo "FAIL VRAMSHIM_LOG_FILE"; fail=1
fi
# a log file that is not a regular file is refused with one line, and the
# log stays on stderr: a FIFO without a reader must not block the
# constructor (timeout only bounds a hang), a symlink is not followed
mkfifo "$tmp/fifo"
printf 'rc\n' >"$tmp/victim"
ln -s "$tmp/victim" "$tmp/link"
for target in fifo link; do
	timeout 60 env LD_LIBRARY_PATH="$b/tests/fakecuda/.libs" LD_PRELOAD="$b/.libs/libvramshim.so" \
		VRAMSHIM_LOG_FILE="$tmp/$target" "$prog" >/dev/null 2>"$tmp/err"
	rc=$?
	if [ "$rc" -eq 0 ] && [ "$(wc -l <"$tmp/err")" -eq 1 ] && grep -qF "VRAMSHIM_LOG_FILE=\"$tmp/$target\"" "$tmp/err" &&
		[ "$(cat "$tmp/victim")" = rc ]; then
		echo "ok   VRAMSHIM_LOG_FILE=$target refused"
	else
		echo "FAIL VRAMSHIM_LOG_FILE=$target (exit $rc):"; cat "$tmp/err"; fail=1
	fi
done
# settings that refuse everything, or name what is not there: one line each
warns() { # VAR VALUE PATTERN: exactly one line, matching
	run "$1" "$2"
	if [ "$(wc -l <"$tmp/err")" -ge 1 ] && [ "$(grep -c "$3" "$tmp/err")" -eq 1 ]; then
		echo "ok   $1=$2 warned"
	else
		echo "FAIL $1=$2: expected one line matching '$3', got:"; cat "$tmp/err"; fail=1
	fi
}
warns VRAMSHIM_VRAM_LIMIT 0 'VRAM limit of device 0 comes to 0 bytes'
warns VRAMSHIM_VRAM_LIMIT 0.0000001% 'VRAM limit of device 0 comes to 1 bytes'
warns VRAMSHIM_VRAM_LIMIT 15:1G 'names device 15, but this machine has 1 device'
warns VRAMSHIM_PIN_LIMIT 0 'PIN_LIMIT comes to 0 bytes'
check VRAMSHIM_SOCKET_DIR 'relative/dir' ''
# keywords in any case
if run VRAMSHIM_OFFLOAD PINNED && [ ! -s "$tmp/err" ] && grep -qF '"offload":"pinned"' "$tmp/out"; then
	echo "ok   VRAMSHIM_OFFLOAD=PINNED"
else
	echo "FAIL VRAMSHIM_OFFLOAD=PINNED"; cat "$tmp/err"; fail=1
fi
# a bad value is said once in a process tree: by the program that loads
# CUDA, not by the shells in between
env LD_LIBRARY_PATH="$b/tests/fakecuda/.libs" LD_PRELOAD="$b/.libs/libvramshim.so" \
	VRAMSHIM_OFFLOAD=bad sh -c "sh -c '$prog >/dev/null'" 2>"$tmp/err"
if [ "$(wc -l <"$tmp/err")" -eq 1 ] && grep -qF 'VRAMSHIM_OFFLOAD="bad"' "$tmp/err"; then
	echo "ok   a bad value said once per process tree"
else
	echo "FAIL a bad value in a process tree:"; cat "$tmp/err"; fail=1
fi
# VRAMSHIM_LOG=info: a summary at exit, naming the owner and the bytes
if env LD_LIBRARY_PATH="$b/tests/fakecuda/.libs" LD_PRELOAD="$b/.libs/libvramshim.so" \
	VRAMSHIM_LOG=info VRAMSHIM_OWNER=summ "$prog" 3145728 >/dev/null 2>"$tmp/err" &&
	grep -q 'summary: 1 allocs, 0 frees' "$tmp/err" && grep -q 'owner summ .*device 0: allocated 3.0M in 1' "$tmp/err"; then
	echo "ok   VRAMSHIM_LOG=info summary"
else
	echo "FAIL VRAMSHIM_LOG=info summary:"; cat "$tmp/err"; fail=1
fi
# a process that never uses CUDA is left alone: no driver loaded, no output
if out=$(env LD_PRELOAD="$b/.libs/libvramshim.so" VRAMSHIM_LOG=info sh -c 'echo hello' 2>&1) && [ "$out" = hello ]; then
	echo "ok   non-CUDA process untouched"
else
	echo "FAIL non-CUDA process printed: $out"; fail=1
fi
exit $fail
