#!/bin/sh
# Runs one test program: unit tests as they are; integration programs with
# libvramshim preloaded and the test driver found as libcuda.so.1.
set -eu
b=${VRAMSHIM_BUILD:?run through make check}
prog=$1
shift
case "$prog" in
*tests/unit/*) exec "$prog" "$@" ;;
*prog_old_driver*) fake=$b/tests/fakecuda/old/.libs ;;
*) fake=$b/tests/fakecuda/.libs ;;
esac
LD_LIBRARY_PATH=$fake${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
LD_PRELOAD=$b/.libs/libvramshim.so
case "$prog" in
*prog_asan*) # a sanitizer's runtime must come first
	LD_PRELOAD="${ASAN_RUNTIME:?} $LD_PRELOAD"
	ASAN_OPTIONS=detect_leaks=0
	export ASAN_OPTIONS
	;;
esac
export LD_LIBRARY_PATH LD_PRELOAD
# Every private test device has the same UUID, so programs run at once
# under make -j would take each other for peers on one device, and relief
# (a process short of room asking the others on its device) would move one
# test's buffers for another. Each program gets a socket directory of its
# own unless it names one.
[ -n "${VRAMSHIM_SOCKET_DIR:-}" ] && exec "$prog" "$@"
VRAMSHIM_SOCKET_DIR=$(mktemp -d "${TMPDIR:-/tmp}/vs-check.XXXXXX")
export VRAMSHIM_SOCKET_DIR
rc=0
"$prog" "$@" || rc=$?
rm -rf "$VRAMSHIM_SOCKET_DIR"
exit "$rc"
