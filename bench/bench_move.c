/*
 * bench_move: how fast buffers move, against the bus itself.
 *
 * Reference figures first (no vramshim needed): a device-to-host and a
 * host-to-device copy of SIZE bytes from page-locked memory (the bus), and
 * from ordinary pageable memory. Then, when vramshim is loaded, one SIZE
 * buffer moved out with vramshim_offload and back with vramshim_prefetch:
 * to pinned memory when the pin budget holds it, to pageable memory when
 * run with a small VRAMSHIM_PIN_LIMIT (bench/run.sh runs it both ways).
 * Then loading: cuMemHostRegister of 1 GiB (BENCH_REGISTER_MB) of fresh memory (under
 * vramshim it is prefaulted first by the copy threads; its time is printed
 * as register_fresh_ms), and a host-to-device copy from a mapped file of
 * SIZE bytes, cold (its pages dropped with posix_fadvise(DONTNEED) before
 * each round) and warm. The copy_pageable_* and file_* rows go through
 * vramshim's fast copies when it is loaded, through the driver otherwise.
 * Each figure is the best of ROUNDS, in GB/s, one line each:
 *   NAME GBPS
 * and the moved buffer is checked byte for byte after every round trip.
 */
#include "bench_common.h"

#include <fcntl.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#define ROUNDS 5

static CUresult (*alloc)(CUdeviceptr *, size_t);
static CUresult (*release)(CUdeviceptr);
static CUresult (*htod)(CUdeviceptr, const void *, size_t);
static CUresult (*dtoh)(void *, CUdeviceptr, size_t);
static CUresult (*host_alloc)(void **, size_t, unsigned);
static CUresult (*host_free)(void *);
static CUresult (*ctx_sync)(void);

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

/* cuMemHostRegister of `size` bytes never touched before: the driver (or
 * vramshim's prefault) faults every page in. */
static void register_fresh(void *lib, size_t size)
{
    CUresult (*reg)(void *, size_t, unsigned) = bench_sym(lib, "cuMemHostRegister_v2");
    CUresult (*unreg)(void *) = bench_sym(lib, "cuMemHostUnregister");
    double best = 1e9;
    for (int r = 0; r < ROUNDS; r++) {
        void *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (p == MAP_FAILED)
            return;
        double t0 = bench_now();
        CUresult rc = reg(p, size, 0);
        double t1 = bench_now();
        if (rc == CUDA_SUCCESS)
            unreg(p);
        munmap(p, size);
        if (rc != CUDA_SUCCESS) {
            fprintf(stderr, "cuMemHostRegister: %d\n", (int)rc);
            return;
        }
        best = t1 - t0 < best ? t1 - t0 : best;
    }
    printf("register_fresh_ms %.1f\n", best * 1e3);
}

/* A model file read with mmap and copied to the device, as PyTorch loads
 * safetensors: cold (pages dropped first) and warm. */
static void mapped_file(CUdeviceptr dev, const unsigned char *want, size_t size)
{
    char path[] = "/tmp/bench_move-XXXXXX";
    int fd = mkstemp(path);
    if (fd < 0)
        return;
    unlink(path);
    if (write(fd, want, size) != (ssize_t)size || fsync(fd) != 0) {
        close(fd);
        return;
    }
    const unsigned char *map = mmap(NULL, size, PROT_READ, MAP_SHARED, fd, 0);
    if (map == MAP_FAILED) {
        close(fd);
        return;
    }
    for (int warm = 0; warm < 2; warm++) {
        double best = 1e9;
        for (int r = 0; r < ROUNDS; r++) {
            if (!warm) /* out of the page cache and out of this mapping */
                posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
            double t0 = bench_now();
            BENCH_CHECK(htod(dev, map, size));
            double t1 = bench_now();
            best = t1 - t0 < best ? t1 - t0 : best;
        }
        printf("file_%s_htod %.2f\n", warm ? "warm" : "cold", gbps(size, best));
    }
    munmap((void *)map, size);
    close(fd);
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
    ctx_sync = bench_sym(lib, "cuCtxSynchronize");

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
            BENCH_CHECK(ctx_sync());
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
    register_fresh(lib, (size_t)(getenv("BENCH_REGISTER_MB") ? atol(getenv("BENCH_REGISTER_MB"))
                                                             : 1024) << 20);
    mapped_file(dev, want, size);
    BENCH_CHECK(dtoh(pageable, dev, size));
    if (memcmp(pageable, want, size) != 0) {
        fprintf(stderr, "the file's bytes did not arrive\n");
        return 1;
    }
    BENCH_CHECK(release(dev));
    free(want);
    free(pageable);
    return 0;
}
