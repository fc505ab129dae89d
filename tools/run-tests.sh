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
for target in check-sanitize check-tsan; do
	CHECK_QUICK=1 make --quiet "$target" || status=1
done
exit "$status"
