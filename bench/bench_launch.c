/*
 * bench_launch: launch rate of an empty kernel, launched back to back on the
 * legacy stream, synchronised once at the end. Prints "launch <per second>".
 * On a GPU the kernel comes from PTX; with the test driver it is a
 * registered no-op host function.
 */
#include "bench_common.h"

static const char empty_ptx[] =
    ".version 7.0\n.target sm_50\n.address_size 64\n"
    ".visible .entry vramshim_empty()\n{\n\tret;\n}\n";

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
    return 0;
}
