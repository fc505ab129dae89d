#!/bin/sh
# startup_check.sh: a process that inherits LD_PRELOAD and never calls CUDA
# runs none of vramshim's code (issue 13, start-up). The library has no
# initialiser or finaliser for the loader to call (it is linked without the
# C start files: src/dso_handle.c), and after a whole run of cat not one
# page of its executable mapping is resident. Either would page the text in
# (through fault-around, up to 64 KB) in every shell command.
set -u
b=${VRAMSHIM_BUILD:?run through make check}
lib=$b/.libs/libvramshim.so
fail=0
command -v readelf >/dev/null 2>&1 || { echo "no readelf: skipped"; exit 77; }
entries=$(readelf -d "$lib" | grep -E '\((INIT|FINI|INIT_ARRAY|FINI_ARRAY|PREINIT_ARRAY)\)')
if [ -n "$entries" ]; then
	echo "FAIL the loader would run code of $lib at load or exit:"
	echo "$entries"
	fail=1
else
	echo "ok   no initialiser or finaliser in the dynamic section"
fi
# the executable mapping of the library, as cat sees its own address space
text_rss=$(LD_PRELOAD=$lib cat /proc/self/smaps | awk -v lib="$lib" '
	/^[0-9a-f]+-[0-9a-f]+ / { mine = ($6 == lib && $2 ~ /x/) }
	mine && /^Rss:/ { kb += $2 }
	END { print kb + 0 }')
if [ "$text_rss" -ne 0 ]; then
	echo "FAIL $text_rss KB of the library's text resident in cat, which never called CUDA"
	fail=1
else
	echo "ok   none of the library's text resident in cat"
fi
# loaded and unloaded by a program (ctypes, a plugin loader), then fork and
# exit: the handlers it filed stay valid (it is linked -z nodelete; without
# the start files nothing would take them back at dlclose)
if command -v python3 >/dev/null 2>&1; then
	if python3 -c '
import ctypes, _ctypes, os, sys
h = ctypes.CDLL(sys.argv[1])
h.vramshim_owner_push(b"x")
_ctypes.dlclose(h._handle)
pid = os.fork()
if pid == 0:
    os._exit(0)
os.waitpid(pid, 0)
' "$lib"; then
		echo "ok   loaded by ctypes, unloaded, then fork and exit"
	else
		echo "FAIL a fork or exit after unloading the library crashed"
		fail=1
	fi
fi
# and a program that does call CUDA still gets its summary at exit
out=$(VRAMSHIM_LOG=info LD_LIBRARY_PATH="$b/tests/fakecuda/.libs" LD_PRELOAD=$lib \
	"$b/tests/integration/prog_stats" 2>&1 >/dev/null)
case "$out" in
*"summary:"*) echo "ok   the exit summary still printed (registered at set-up)" ;;
*) echo "FAIL no exit summary from a CUDA program:"; echo "$out"; fail=1 ;;
esac
exit $fail
