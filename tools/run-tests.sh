#!/bin/sh
# tools/run-tests.sh: build from a clean clone and run every test (no GPU
# needed: the tests run against the test driver in tests/fakecuda), then
# the invariant-checking tests again in a debug build (tools/check-debug.sh),
# then the library itself under ASan+UBSan, and under TSan for the threaded
# programs (CHECK_QUICK=1 runs a tenth of the randomized operations, which
# the sanitizers slow 2-10x; make check runs them all).
set -eu
cd "$(dirname "$0")/.."
[ -x configure ] || autoreconf -fi
[ -f Makefile ] || ./configure --quiet
make -j"$(nproc)" --quiet all
make -j"$(nproc)" check || { cat test-suite.log; exit 1; }
status=0
sh tools/check-debug.sh || status=1
CHECK_QUICK=1 make --quiet check-sanitize || status=1
# TSan: the programs seen clean under it so far (make check-tsan runs every
# threaded one; prog_offload's run under TSan has not been seen to finish
# on a 2-core machine within a session)
CHECK_QUICK=1 SANITIZE_PROGS="prog_threads" make --quiet check-tsan || status=1
exit "$status"
