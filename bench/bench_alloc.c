/*
 * bench_alloc: cuMemAlloc + cuMemFree latency for 2 MiB, 64 MiB and 1 GiB.
 * Prints one line per size: "alloc_free <bytes> <ns per pair>", then
 * "mem_get_info 0 <ns per call>": what one ask of the driver for free memory
 * costs, which is what the reserve's counting saves on most allocations.
 * Run it with and without vramshim (bench/run.sh does) and compare.
 */
#include "bench_common.h"

int main(int argc, char **argv)
{
    double scale = argc > 1 ? atof(argv[1]) : 1.0;
    void *lib = bench_open();
    CUresult (*alloc)(CUdeviceptr *, size_t) = bench_sym(lib, "cuMemAlloc_v2");
    CUresult (*release)(CUdeviceptr) = bench_sym(lib, "cuMemFree_v2");
    const struct { size_t bytes; int iters; } sizes[] = {
        {2ULL << 20, 4000}, {64ULL << 20, 1000}, {1ULL << 30, 200},
    };
    for (size_t s = 0; s < 3; s++) {
        int iters = (int)(sizes[s].iters * scale);
        if (iters < 10)
            iters = 10;
        CUdeviceptr p;
        for (int i = 0; i < 5; i++) { /* warm the allocator */
            BENCH_CHECK(alloc(&p, sizes[s].bytes));
            BENCH_CHECK(release(p));
        }
        double t0 = bench_now();
        for (int i = 0; i < iters; i++) {
            BENCH_CHECK(alloc(&p, sizes[s].bytes));
            BENCH_CHECK(release(p));
        }
        double ns = (bench_now() - t0) * 1e9 / iters;
        printf("alloc_free %zu %.0f\n", sizes[s].bytes, ns);
    }
    CUresult (*info)(size_t *, size_t *) = bench_sym(lib, "cuMemGetInfo_v2");
    int iters = (int)(20000 * scale) + 10;
    size_t f, t;
    double t0 = bench_now();
    for (int i = 0; i < iters; i++)
        BENCH_CHECK(info(&f, &t));
    printf("mem_get_info 0 %.0f\n", (bench_now() - t0) * 1e9 / iters);
    return 0;
}
