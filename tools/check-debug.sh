#!/bin/sh
# tools/check-debug.sh: the debug pass of the test command. Builds a copy
# of the tree in build-debug/ with ./configure --enable-debug (VS_ASSERT on
# inside the library) and runs the tests that check vramshim's invariants
# after every step: the unit tests, the layer check and the randomized
# integration runs. tools/run-tests.sh runs it after the main suite.
set -eu
cd "$(dirname "$0")/.."
top=$(pwd)
rm -rf build-debug
mkdir build-debug
# the tree as git sees it, without build products
git ls-files -co --exclude-standard -z | xargs -0 cp --parents -t build-debug
cd build-debug
autoreconf -fi >/dev/null 2>&1
./configure --quiet --enable-debug
make -j"$(nproc)" --quiet all
unit=$(ls "$top"/tests/unit/test_*.c | sed 's#.*/\(test_[a-z_]*\)\.c#tests/unit/\1#' | tr '\n' ' ')
make -j"$(nproc)" check TESTS="$unit tests/layers.sh tests/integration/prog_offload \
	tests/integration/prog_pageable tests/integration/prog_limits tests/integration/prog_vmm" ||
	{ cat test-suite.log; exit 1; }
