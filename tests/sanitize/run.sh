#!/bin/sh
# tests/sanitize/run.sh address|thread: build libvramshim.so again with a
# sanitizer (address: ASan and UBSan; thread: TSan) and run integration
# programs with it, the sanitizer's runtime preloaded first. Any report
# fails. The library is built with VS_DEBUG too: vramshim's own invariants
# (VS_ASSERT) are checked in the same run, as ./configure --enable-debug
# would. Run by `make check-sanitize` and `make check-tsan`.
#
# Two files are built without the sanitizer: src/dl_real.c and
# src/hook_dlsym.c. The sanitizer runtimes call dlsym while they start,
# before their own interceptors work, and the library exports dlsym: that
# path must run before (and without) the runtime.
set -eu
mode=${1:?address or thread}
src=${VRAMSHIM_SRC:?run through make}
b=${VRAMSHIM_BUILD:?run through make}
cc=${CC:-gcc}
work=$b/tests/sanitize/$mode
rm -rf "$work"
mkdir -p "$work/obj"
case "$mode" in
address)
	flags="-fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer"
	runtime=$($cc -print-file-name=libasan.so)
	progs=${SANITIZE_PROGS:-"prog_linked prog_dlsym prog_gpa prog_threads prog_fork prog_launch
		prog_vmm prog_rtld_next prog_disabled prog_late_load prog_limits prog_offload
		prog_pageable prog_share prog_reserve prog_nvml prog_control prog_peer prog_stats
		prog_unload prog_faults prog_memop prog_fastcopy prog_fence prog_capture prog_p2p
		prog_vmm_life prog_old_abi prog_dlvsym prog_arrays prog_relief prog_pools prog_overhead
		prog_ranges prog_binds prog_pool_import"}
	;;
thread)
	flags="-fsanitize=thread"
	runtime=$($cc -print-file-name=libtsan.so)
	# the programs with threads of their own, or the control socket's
	progs=${SANITIZE_PROGS:-"prog_threads prog_offload prog_pageable prog_share prog_control
		prog_peer prog_fence prog_p2p"}
	;;
*) echo "usage: run.sh address|thread" >&2; exit 2 ;;
esac
[ -f "$runtime" ] || { echo "no $runtime: skipped"; exit 77; }
cuda_inc=$(sed -n "s/^CUDA_CPPFLAGS = //p" "$b/Makefile")
objs=""
for f in $(make -s -C "$b" print-lib-sources); do
	case "$f" in *.c) ;; *) continue ;; esac
	# linked here with the C start files, which define __dso_handle
	# themselves (the real build leaves them out: src/dso_handle.c)
	case "$f" in src/dso_handle.c) continue ;; esac
	extra=$flags
	case "$f" in src/dl_real.c | src/hook_dlsym.c) extra="" ;; esac
	o=$work/obj/$(basename "$f" .c).o
	$cc -std=gnu11 -g -O1 -fPIC -pthread -fvisibility=hidden -D_GNU_SOURCE -DVS_DEBUG $extra \
		-I"$src/include" -I"$src/src" -I"$b" $cuda_inc -c "$src/$f" -o "$o" &
	objs="$objs $o"
	# two at a time: the machine is shared
	[ "$(jobs -p | wc -l)" -lt 2 ] || wait -n 2>/dev/null || wait
done
wait
# the same exported versions as the real build (dlsym@GLIBC_2.2.5...: x86-64)
version_script=""
case "$($cc -dumpmachine)" in x86_64*) version_script="-Wl,--version-script=$src/src/vramshim.map" ;; esac
$cc -shared -o "$work/libvramshim.so" $objs $flags $version_script -ldl -lpthread -lrt
# a report is an error: stop at it, and say where
# handle_segv=0: prog_vmm's child must die of the fault it makes
export ASAN_OPTIONS=detect_leaks=0:halt_on_error=1:abort_on_error=0:handle_segv=0
export UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1
export TSAN_OPTIONS=halt_on_error=1:exitcode=66:second_deadlock_stack=1
export VRAMSHIM_SRC VRAMSHIM_BUILD
# `vramshim run` (prog_control) preloads this library, after the runtime
export VRAMSHIM_LIBRARY=$work/libvramshim.so
fail=0
for p in $progs; do
	log=$work/$p.log
	# a socket directory of its own, as make check gives (run-preloaded.sh):
	# the randomized runs ask their own control socket for evict and free
	sockdir=$(mktemp -d "${TMPDIR:-/tmp}/vs-sanitize.XXXXXX")
	if VRAMSHIM_SOCKET_DIR=$sockdir LD_LIBRARY_PATH=$b/tests/fakecuda/.libs \
		LD_PRELOAD="$runtime $work/libvramshim.so" "$b/tests/integration/$p" >"$log" 2>&1 &&
		! grep -q -E 'ERROR: AddressSanitizer|runtime error:|WARNING: ThreadSanitizer' "$log"; then
		rm -rf "$sockdir"
		echo "ok   $p ($mode)"
	else
		rm -rf "$sockdir"
		echo "FAIL $p ($mode):"
		tail -40 "$log"
		fail=1
	fi
done
exit $fail
