#!/bin/sh
# tools/run-tests.sh: build from a clean clone and run every test (no GPU
# needed: the tests run against the test driver in tests/fakecuda; the unit
# tests link the core with its invariants checked), then the library itself
# under ASan+UBSan with its invariants checked (VS_DEBUG), and under TSan
# for the threaded programs (CHECK_QUICK=1 runs a tenth of the randomized
# operations, which the sanitizers slow 2-10x; make check runs them all).
# tools/check-debug.sh, a whole second build with --enable-debug, is not
# part of it: the two passes above cover what it checked, in less time.
set -eu
cd "$(dirname "$0")/.."
[ -x configure ] || autoreconf -fi
[ -f Makefile ] || ./configure --quiet
make -j"$(nproc)" --quiet all
make -j"$(nproc)" check || { cat test-suite.log; exit 1; }
status=0
CHECK_QUICK=1 make --quiet check-sanitize || status=1
# TSan: the threaded programs that finish under it in a few minutes on 2
# cores and whose checks do not lean on timing (make check-tsan runs every
# threaded one; prog_offload and prog_pageable were seen clean under it on
# 2026-12-01 but take 10+ minutes of CPU; prog_fence and prog_p2p were seen
# clean once and failed once, their checks assuming a queued kernel or a
# stuck stream is still where it was when TSan slows everything 5-15x)
CHECK_QUICK=1 SANITIZE_PROGS="prog_threads prog_share prog_peer" make --quiet check-tsan || status=1
exit "$status"
