/*
 * bench_fence: what a move's fence costs against the cuCtxSynchronize it
 * replaced (issue 11).
 *
 * The fence (src/fence.c) hands the synchronise to a waiter thread and
 * waits for it with a deadline, so that a stream the program holds cannot
 * hang the call. Measured here, on an idle context and with a few kernels
 * queued:
 *   sync_us      cuCtxSynchronize called directly
 *   fence_us     vramshim_offload of a buffer already off the device: the
 *                fence and nothing else (needs vramshim; skipped without)
 * Each figure is the median of ROUNDS calls, in microseconds, one line
 * each: NAME VALUE.
 */
#include "bench_common.h"

#include <stdint.h>
#include <string.h>

#define ROUNDS 2001
#define QUEUED 4

static int cmp(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double median(double *v, int n)
{
    qsort(v, (size_t)n, sizeof *v, cmp);
    return v[n / 2];
}

static void spin_body(void **params, fakecuda_dim3 grid, fakecuda_dim3 block)
{
    (void)params;
    (void)grid;
    (void)block;
    for (volatile int i = 0; i < 1000; i++)
        ;
}

static double t[ROUNDS];

int main(void)
{
    void *lib = bench_open();
    CUresult (*alloc)(CUdeviceptr *, size_t) = bench_sym(lib, "cuMemAlloc_v2");
    CUresult (*sync)(void) = bench_sym(lib, "cuCtxSynchronize");
    CUresult (*launch)(CUfunction, unsigned, unsigned, unsigned, unsigned, unsigned, unsigned,
                       unsigned, CUstream, void **, void **) = bench_sym(lib, "cuLaunchKernel");
    int (*offload)(uint64_t) = (int (*)(uint64_t))dlsym(RTLD_DEFAULT, "vramshim_offload");
    CUfunction spin = bench_kernel(lib, "spin", NULL, spin_body, 0, NULL);

    for (int busy = 0; busy < 2; busy++) {
        for (int r = 0; r < ROUNDS; r++) {
            for (int q = 0; busy && q < QUEUED; q++)
                BENCH_CHECK(launch(spin, 1, 1, 1, 1, 1, 1, 0, NULL, NULL, NULL));
            double t0 = bench_now();
            BENCH_CHECK(sync());
            t[r] = (bench_now() - t0) * 1e6;
        }
        printf("sync_us%s %.2f\n", busy ? "_queued" : "", median(t, ROUNDS));
    }
    if (offload == NULL)
        return 0;
    CUdeviceptr p;
    BENCH_CHECK(alloc(&p, 2 << 20));
    if (offload(p) != 0) {
        fprintf(stderr, "vramshim_offload failed\n");
        return 1;
    }
    for (int busy = 0; busy < 2; busy++) {
        for (int r = 0; r < ROUNDS; r++) {
            for (int q = 0; busy && q < QUEUED; q++)
                BENCH_CHECK(launch(spin, 1, 1, 1, 1, 1, 1, 0, NULL, NULL, NULL));
            double t0 = bench_now();
            if (offload(p) != 0) {
                fprintf(stderr, "vramshim_offload failed\n");
                return 1;
            }
            t[r] = (bench_now() - t0) * 1e6;
        }
        printf("fence_us%s %.2f\n", busy ? "_queued" : "", median(t, ROUNDS));
    }
    return 0;
}
