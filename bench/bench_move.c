/*
 * bench_move: how fast buffers move, against the bus itself.
 *
 * Reference figures first (no vramshim needed): a device-to-host and a
 * host-to-device copy of SIZE bytes from page-locked memory (the bus), and
 * from ordinary pageable memory. Then, when vramshim is loaded, one SIZE
 * buffer moved out with vramshim_offload and back with vramshim_prefetch:
 * to pinned memory when the pin budget holds it, to pageable memory when
 * run with a small VRAMSHIM_PIN_LIMIT (bench/run.sh runs it both ways).
 * Each figure is the best of ROUNDS, in GB/s, one line each:
 *   NAME GBPS
 * and the moved buffer is checked byte for byte after every round trip.
 */
#include "bench_common.h"

#include <string.h>

#define ROUNDS 5

static CUresult (*alloc)(CUdeviceptr *, size_t);
static CUresult (*release)(CUdeviceptr);
static CUresult (*htod)(CUdeviceptr, const void *, size_t);
static CUresult (*dtoh)(void *, CUdeviceptr, size_t);
static CUresult (*host_alloc)(void **, size_t, unsigned);
static CUresult (*host_free)(void *);
static CUresult (*sync)(void);

static double gbps(size_t bytes, double seconds)
{
    return (double)bytes / seconds / 1e9;
}

static void copies(const char *kind, void *host, CUdeviceptr dev, size_t size)
{
    double best_out = 1e9, best_in = 1e9;
    for (int r = 0; r < ROUNDS; r++) {
        double t0 = bench_now();
        BENCH_CHECK(dtoh(host, dev, size));
        double t1 = bench_now();
        BENCH_CHECK(htod(dev, host, size));
        double t2 = bench_now();
        best_out = t1 - t0 < best_out ? t1 - t0 : best_out;
        best_in = t2 - t1 < best_in ? t2 - t1 : best_in;
    }
    printf("copy_%s_dtoh %.2f\ncopy_%s_htod %.2f\n", kind, gbps(size, best_out), kind,
           gbps(size, best_in));
}

int main(void)
{
    size_t size = (size_t)(getenv("BENCH_MOVE_MB") ? atol(getenv("BENCH_MOVE_MB")) : 1024) << 20;
    void *lib = bench_open();
    alloc = bench_sym(lib, "cuMemAlloc_v2");
    release = bench_sym(lib, "cuMemFree_v2");
    htod = bench_sym(lib, "cuMemcpyHtoD_v2");
    dtoh = bench_sym(lib, "cuMemcpyDtoH_v2");
    host_alloc = bench_sym(lib, "cuMemHostAlloc");
    host_free = bench_sym(lib, "cuMemFreeHost");
    sync = bench_sym(lib, "cuCtxSynchronize");

    CUdeviceptr dev;
    BENCH_CHECK(alloc(&dev, size));
    unsigned char *want = malloc(size), *pageable = malloc(size), *pinned = NULL;
    if (want == NULL || pageable == NULL) {
        fprintf(stderr, "out of host memory\n");
        return 1;
    }
    for (size_t i = 0; i < size; i++)
        want[i] = (unsigned char)(i * 7 + (i >> 20));
    memcpy(pageable, want, size);
    BENCH_CHECK(htod(dev, want, size));
    copies("pageable", pageable, dev, size);
    if (host_alloc((void **)&pinned, size, 0) == CUDA_SUCCESS) {
        copies("pinned", pinned, dev, size);
        BENCH_CHECK(host_free(pinned));
    }

    int (*offload)(CUdeviceptr) = (int (*)(CUdeviceptr))dlsym(RTLD_DEFAULT, "vramshim_offload");
    int (*prefetch)(CUdeviceptr) = (int (*)(CUdeviceptr))dlsym(RTLD_DEFAULT, "vramshim_prefetch");
    if (offload && prefetch) {
        const char *tier = getenv("BENCH_MOVE_TIER") ? getenv("BENCH_MOVE_TIER") : "pinned";
        double best_out = 1e9, best_in = 1e9;
        for (int r = 0; r < ROUNDS; r++) {
            BENCH_CHECK(sync());
            double t0 = bench_now();
            int rc_out = offload(dev);
            double t1 = bench_now();
            int rc_in = prefetch(dev);
            double t2 = bench_now();
            if (rc_out != 0 || rc_in != 0) {
                fprintf(stderr, "vramshim_offload %d, vramshim_prefetch %d\n", rc_out, rc_in);
                return 1;
            }
            best_out = t1 - t0 < best_out ? t1 - t0 : best_out;
            best_in = t2 - t1 < best_in ? t2 - t1 : best_in;
        }
        BENCH_CHECK(dtoh(pageable, dev, size));
        if (memcmp(pageable, want, size) != 0) {
            fprintf(stderr, "the buffer changed across moves\n");
            return 1;
        }
        printf("move_%s_out %.2f\nmove_%s_in %.2f\n", tier, gbps(size, best_out), tier,
               gbps(size, best_in));
    }
    BENCH_CHECK(release(dev));
    free(want);
    free(pageable);
    return 0;
}
