#!/bin/sh
# tools/run-tests.sh: build from a clean clone and run every test (no GPU
# needed: the tests run against the test driver in tests/fakecuda), then
# the invariant-checking tests again in a debug build (tools/check-debug.sh).
set -eu
cd "$(dirname "$0")/.."
[ -x configure ] || autoreconf -fi
[ -f Makefile ] || ./configure --quiet
make -j"$(nproc)" --quiet all
make -j"$(nproc)" check || { cat test-suite.log; exit 1; }
sh tools/check-debug.sh
