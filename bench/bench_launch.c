/*
 * bench_launch: launch rate of an empty kernel, launched back to back on the
 * legacy stream, synchronised once at the end. Prints "launch <per second>".
 * Then the same with a kernel that takes a pointer and a size, handed one
 * of eight 64 MiB buffers in turn: with vramshim every launch is scanned
 * for addresses (touch tracking) and passes the move gate. Prints
 * "launch_touch <per second>". On a GPU the kernels come from PTX; with
 * the test driver they are registered no-op host functions.
 */
#include "bench_common.h"

static const char empty_ptx[] =
    ".version 7.0\n.target sm_50\n.address_size 64\n"
    ".visible .entry vramshim_empty()\n{\n\tret;\n}\n"
    ".visible .entry vramshim_touch(.param .u64 p, .param .u64 n)\n{\n\tret;\n}\n";

static void noop(void **params, fakecuda_dim3 grid, fakecuda_dim3 block)
{
    (void)params;
    (void)grid;
    (void)block;
}

int main(int argc, char **argv)
{
    long n = argc > 1 ? atol(argv[1]) : 200000;
    void *lib = bench_open();
    CUresult (*launch)(CUfunction, unsigned, unsigned, unsigned, unsigned, unsigned,
                       unsigned, unsigned, CUstream, void **, void **) =
        bench_sym(lib, "cuLaunchKernel");
    CUresult (*sync)(void) = bench_sym(lib, "cuCtxSynchronize");
    CUfunction f = bench_kernel(lib, "vramshim_empty", empty_ptx, noop, 0, NULL);
    for (int i = 0; i < 1000; i++)
        BENCH_CHECK(launch(f, 1, 1, 1, 1, 1, 1, 0, NULL, NULL, NULL));
    BENCH_CHECK(sync());
    double t0 = bench_now();
    for (long i = 0; i < n; i++)
        BENCH_CHECK(launch(f, 1, 1, 1, 1, 1, 1, 0, NULL, NULL, NULL));
    BENCH_CHECK(sync());
    double dt = bench_now() - t0;
    printf("launch %.0f\n", (double)n / dt);

    CUresult (*alloc)(CUdeviceptr *, size_t) = bench_sym(lib, "cuMemAlloc_v2");
    const size_t sizes[] = {8, 8};
    CUfunction g = bench_kernel(lib, "vramshim_touch", empty_ptx, noop, 2, sizes);
    CUdeviceptr buf[8];
    uint64_t bytes = 64 << 20;
    for (int i = 0; i < 8; i++)
        BENCH_CHECK(alloc(&buf[i], bytes));
    t0 = bench_now();
    for (long i = 0; i < n; i++) {
        void *params[] = {&buf[i & 7], &bytes};
        BENCH_CHECK(launch(g, 1, 1, 1, 1, 1, 1, 0, NULL, params, NULL));
    }
    BENCH_CHECK(sync());
    dt = bench_now() - t0;
    printf("launch_touch %.0f\n", (double)n / dt);
    return 0;
}
