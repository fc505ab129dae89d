#!/bin/sh
# tools/setup-and-demo.sh: on a fresh Debian or Ubuntu machine, install what
# the build needs, build vramshim, and run the demo under `vramshim run`.
# Without a GPU the demo runs against the test driver (tests/fakecuda).
# --run-only skips the install and build (make demo uses it).
set -eu
cd "$(dirname "$0")/.."
if [ "${1:-}" != "--run-only" ]; then
	need=""
	for pkg in autoconf automake libtool pkg-config make gcc uthash-dev libbsd-dev \
		libcmocka-dev libjansson-dev libmicrohttpd-dev clang python3-prometheus-client python3-yaml curl tmux; do
		dpkg -s "$pkg" >/dev/null 2>&1 || need="$need $pkg"
	done
	if [ -n "$need" ]; then
		echo "installing:$need"
		apt-get update -qq && apt-get install -y -qq $need >/dev/null
	fi
	[ -f /usr/local/cuda/include/cuda.h ] || {
		echo "cuda.h is not in /usr/local/cuda/include: install the CUDA toolkit headers" \
			"(or run ./configure --with-cuda=DIR yourself)" >&2
		exit 1
	}
	[ -x configure ] || autoreconf -fi
	[ -f Makefile ] || ./configure --quiet
	make -j"$(nproc)" --quiet all
	make -j"$(nproc)" --quiet demo/demo tests/fakecuda/libcuda.la
fi
if ldconfig -p 2>/dev/null | grep -q 'libcuda.so.1 ' && [ -z "${VRAMSHIM_DEMO_FAKE:-}" ]; then
	echo "== running the demo on the GPU"
else
	echo "== no GPU driver here: running the demo against the test driver"
	LD_LIBRARY_PATH=$(pwd)/tests/fakecuda/.libs${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
	export LD_LIBRARY_PATH
fi
VRAMSHIM_LOG=info ./tools/vramshim run --owner demo --vram-limit 160M -- ./demo/demo
