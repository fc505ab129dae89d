#!/bin/sh
# tool_check.sh: `vramshim run` starts a program under the library with the
# options as variables; bad usage exits 2 with a usage line.
set -u
b=${VRAMSHIM_BUILD:?run through make check}
tool=$b/tools/vramshim
prog=$b/tests/integration/prog_stats
export LD_LIBRARY_PATH=$b/tests/fakecuda/.libs
fail=0
expect() { # CODE DESCRIPTION CMD...
	want=$1; what=$2; shift 2
	"$@" >/tmp/vramshim-tool.$$ 2>&1
	got=$?
	if [ "$got" -ne "$want" ]; then
		echo "FAIL $what: exit $got, expected $want"; cat /tmp/vramshim-tool.$$; fail=1
	else
		echo "ok   $what"
	fi
}
expect 0 "--help" "$tool" --help
expect 0 "run --help" "$tool" run --help
expect 2 "no command" "$tool"
expect 2 "unknown command" "$tool" frobnicate
expect 2 "run without a program" "$tool" run
expect 2 "run with a bad size" "$tool" run --vram-limit 8Q -- true
expect 2 "run with a bad offload mode" "$tool" run --offload sometimes -- true
expect 2 "run with an unknown option" "$tool" run --colour -- true
expect 2 "run with a missing value" "$tool" run --owner
expect 127 "run of a missing program" "$tool" run -- /nonexistent/program
grep -q '^usage: vramshim' /tmp/vramshim-tool.$$ || true

out=$("$tool" run --owner tooltest --vram-limit 0:2G --offload pinned -- "$prog" 4096)
if echo "$out" | grep -qF '"name":"tooltest","device":0,"allocated":4096' &&
	echo "$out" | grep -qF '"vram_limit":[2147483648]' &&
	echo "$out" | grep -qF '"offload":"pinned"'; then
	echo "ok   run passes the options to the library"
else
	echo "FAIL run: $out"; fail=1
fi
# the program's own arguments and exit status pass through
"$tool" run -- sh -c 'exit 7' a b
[ $? -eq 7 ] && echo "ok   exit status passes through" || { echo "FAIL exit status"; fail=1; }
rm -f /tmp/vramshim-tool.$$
exit $fail
