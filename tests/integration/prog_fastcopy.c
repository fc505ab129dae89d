/*
 * prog_fastcopy: large pageable copies through vramshim's threaded staging,
 * byte for byte, on the test driver (staging of 4 slots of 4 MiB, 3 copy
 * threads, the default threshold of 8 MiB).
 *
 * The test driver's device memory is host memory, so what a copy left on
 * the device is read here directly, never through the path under test.
 *
 *   1. error injection on each driver call the staging makes, first (while
 *      no slot exists yet): slots that cannot be made leave fewer or none
 *      (the driver copies), failed copies and event waits come back as the
 *      driver's error, a failed event record drains the stream instead;
 *   2. every entry point (sync, async, _ptds/_ptsz, cuMemcpy/cuMemcpyAsync
 *      with unified addresses), sizes just under and over the threshold,
 *      tails smaller than a piece, unaligned starts and ends on both sides;
 *   3. the program overwrites its source as soon as an async copy returns;
 *   4. a kernel queued before the copy on the same stream (explicit and
 *      per-thread) reads the old bytes;
 *   5. a device-to-host copy after a kernel that wrote the buffer;
 *   6. pinned sources, managed and too-small destinations, invalid pointers
 *      are the driver's: not staged, the driver's answer;
 *   7. an offloaded buffer is brought back before the copy reaches it;
 *   8. a source that is a mapped file, cold and warm; a read-only mapping
 *      as a destination fails cleanly;
 *   9. 8 threads copying at once;
 *  10. the pin budget spent in the middle: one slot, then none;
 *  11. with VRAMSHIM_FAST_COPY_MIN=0 nothing is staged.
 */
#include "check.h"

#include <fcntl.h>
#include <pthread.h>
#include <semaphore.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#define M (1ULL << 20)

typedef CUresult (*htod_fn)(CUdeviceptr, const void *, size_t);
typedef CUresult (*dtoh_fn)(void *, CUdeviceptr, size_t);
typedef CUresult (*htod_async_fn)(CUdeviceptr, const void *, size_t, CUstream);
typedef CUresult (*dtoh_async_fn)(void *, CUdeviceptr, size_t, CUstream);
typedef CUresult (*copy_fn)(CUdeviceptr, CUdeviceptr, size_t);
typedef CUresult (*copy_async_fn)(CUdeviceptr, CUdeviceptr, size_t, CUstream);

static struct {
    void *lib;
    CUresult (*alloc)(CUdeviceptr *, size_t);
    CUresult (*alloc_managed)(CUdeviceptr *, size_t, unsigned);
    CUresult (*release)(CUdeviceptr);
    htod_fn htod, htod_ptds;
    dtoh_fn dtoh, dtoh_ptds;
    htod_async_fn htod_async, htod_async_ptsz;
    dtoh_async_fn dtoh_async, dtoh_async_ptsz;
    copy_fn copy, copy_ptds;
    copy_async_fn copy_async, copy_async_ptsz;
    CUresult (*launch)(CUfunction, unsigned, unsigned, unsigned, unsigned, unsigned,
                       unsigned, unsigned, CUstream, void **, void **);
    CUresult (*launch_ptsz)(CUfunction, unsigned, unsigned, unsigned, unsigned, unsigned,
                            unsigned, unsigned, CUstream, void **, void **);
    CUresult (*stream_create)(CUstream *, unsigned);
    CUresult (*stream_sync)(CUstream);
    CUresult (*stream_destroy)(CUstream);
    CUresult (*stream_sync_ptsz)(CUstream);
    CUresult (*ctx_sync)(void);
    CUresult (*host_alloc)(void **, size_t, unsigned);
    CUresult (*host_free)(void *);
    CUresult (*set_ctx)(CUcontext);
    CUresult (*get_ctx)(CUcontext *);
    int (*inject)(const char *, unsigned, unsigned, CUresult);
    void (*inject_clear)(void);
    int (*offload)(uint64_t);
    int (*set)(const char *, const char *);
    CUfunction gated_copy, fill_kernel;
    CUcontext ctx;
} cu;

/* The pattern of seed: no two 8-byte words of a buffer alike (check_fill
 * repeats every megabyte, which would hide a piece landing in the wrong
 * place); byte i depends on i and seed only. */
static void fill(unsigned char *buf, size_t n, unsigned seed)
{
    for (size_t i = 0; i < n; i++) {
        uint64_t z = ((uint64_t)seed << 40) + (i >> 3) + 0x9E3779B97F4A7C15ULL;
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
        buf[i] = (unsigned char)((z ^ (z >> 31)) >> ((i & 7) * 8));
    }
}

/* gated_copy(dst, src, n, sem): wait for sem, then copy n bytes */
static void gated_copy_body(void **params, fakecuda_dim3 grid, fakecuda_dim3 block)
{
    (void)grid;
    (void)block;
    sem_t *gate = *(sem_t **)params[3];
    if (gate)
        sem_wait(gate);
    memcpy((void *)(uintptr_t)*(CUdeviceptr *)params[0],
           (const void *)(uintptr_t)*(CUdeviceptr *)params[1], *(uint64_t *)params[2]);
}

/* fill_kernel(dst, n, seed, sem): wait for sem, then write the pattern of seed */
static void fill_body(void **params, fakecuda_dim3 grid, fakecuda_dim3 block)
{
    (void)grid;
    (void)block;
    sem_t *gate = *(sem_t **)params[3];
    if (gate)
        sem_wait(gate);
    fill((unsigned char *)(uintptr_t)*(CUdeviceptr *)params[0], *(uint64_t *)params[1],
               *(uint32_t *)params[2]);
}

static void open_driver(void)
{
    cu.lib = check_libcuda();
    check_context(cu.lib, 0);
    cu.alloc = check_sym(cu.lib, "cuMemAlloc_v2");
    cu.alloc_managed = check_sym(cu.lib, "cuMemAllocManaged");
    cu.release = check_sym(cu.lib, "cuMemFree_v2");
    cu.htod = check_sym(cu.lib, "cuMemcpyHtoD_v2");
    cu.htod_ptds = check_sym(cu.lib, "cuMemcpyHtoD_v2_ptds");
    cu.dtoh = check_sym(cu.lib, "cuMemcpyDtoH_v2");
    cu.dtoh_ptds = check_sym(cu.lib, "cuMemcpyDtoH_v2_ptds");
    cu.htod_async = check_sym(cu.lib, "cuMemcpyHtoDAsync_v2");
    cu.htod_async_ptsz = check_sym(cu.lib, "cuMemcpyHtoDAsync_v2_ptsz");
    cu.dtoh_async = check_sym(cu.lib, "cuMemcpyDtoHAsync_v2");
    cu.dtoh_async_ptsz = check_sym(cu.lib, "cuMemcpyDtoHAsync_v2_ptsz");
    cu.copy = check_sym(cu.lib, "cuMemcpy");
    cu.copy_ptds = check_sym(cu.lib, "cuMemcpy_ptds");
    cu.copy_async = check_sym(cu.lib, "cuMemcpyAsync");
    cu.copy_async_ptsz = check_sym(cu.lib, "cuMemcpyAsync_ptsz");
    cu.launch = check_sym(cu.lib, "cuLaunchKernel");
    cu.launch_ptsz = check_sym(cu.lib, "cuLaunchKernel_ptsz");
    cu.stream_create = check_sym(cu.lib, "cuStreamCreate");
    cu.stream_sync = check_sym(cu.lib, "cuStreamSynchronize");
    cu.stream_destroy = check_sym(cu.lib, "cuStreamDestroy_v2");
    cu.stream_sync_ptsz = check_sym(cu.lib, "cuStreamSynchronize_ptsz");
    cu.ctx_sync = check_sym(cu.lib, "cuCtxSynchronize");
    cu.host_alloc = check_sym(cu.lib, "cuMemHostAlloc");
    cu.host_free = check_sym(cu.lib, "cuMemFreeHost");
    cu.set_ctx = check_sym(cu.lib, "cuCtxSetCurrent");
    cu.get_ctx = check_sym(cu.lib, "cuCtxGetCurrent");
    cu.inject = check_sym(cu.lib, "fakecuda_inject");
    cu.inject_clear = check_sym(cu.lib, "fakecuda_inject_clear");
    CHECK_CU(cu.get_ctx(&cu.ctx));
    cu.offload = check_api("vramshim_offload");
    cu.set = check_api("vramshim_set");
    const size_t sizes[] = {8, 8, 8, 8};
    cu.gated_copy = check_kernel(cu.lib, "gated_copy", gated_copy_body, 4, sizes);
    const size_t fill_sizes[] = {8, 8, 4, 8};
    cu.fill_kernel = check_kernel(cu.lib, "fill_kernel", fill_body, 4, fill_sizes);
}

static void *dev_ptr(CUdeviceptr p) { return (void *)(uintptr_t)p; }

static void check_same(const void *got, const void *want, size_t n, const char *what)
{
    if (memcmp(got, want, n) == 0)
        return;
    const unsigned char *g = got, *w = want;
    size_t i = 0;
    while (i + 1 < n && g[i] == w[i]) /* the bytes may still be changing */
        i++;
    CHECK(0, "%s: byte %zu of %zu is %u, expected %u", what, i, n, g[i], w[i]);
}

/* ---- the copy under test, by entry point ---------------------------------- */
enum way { SYNC, SYNC_PTDS, ASYNC, ASYNC_PTSZ, UNIFIED, UNIFIED_PTDS, UNIFIED_ASYNC,
           UNIFIED_ASYNC_PTSZ, N_WAYS };
static const char *const way_name[N_WAYS] = {
    "HtoD/DtoH", "_ptds", "Async", "Async_ptsz", "cuMemcpy", "cuMemcpy_ptds",
    "cuMemcpyAsync", "cuMemcpyAsync_ptsz"};

static CUresult to_device(enum way w, CUdeviceptr d, const void *h, size_t n, CUstream s)
{
    CUdeviceptr hp = (CUdeviceptr)(uintptr_t)h;
    switch (w) {
    case SYNC: return cu.htod(d, h, n);
    case SYNC_PTDS: return cu.htod_ptds(d, h, n);
    case ASYNC: return cu.htod_async(d, h, n, s);
    case ASYNC_PTSZ: return cu.htod_async_ptsz(d, h, n, s);
    case UNIFIED: return cu.copy(d, hp, n);
    case UNIFIED_PTDS: return cu.copy_ptds(d, hp, n);
    case UNIFIED_ASYNC: return cu.copy_async(d, hp, n, s);
    default: return cu.copy_async_ptsz(d, hp, n, s);
    }
}

static CUresult from_device(enum way w, void *h, CUdeviceptr d, size_t n, CUstream s)
{
    CUdeviceptr hp = (CUdeviceptr)(uintptr_t)h;
    switch (w) {
    case SYNC: return cu.dtoh(h, d, n);
    case SYNC_PTDS: return cu.dtoh_ptds(h, d, n);
    case ASYNC: return cu.dtoh_async(h, d, n, s);
    case ASYNC_PTSZ: return cu.dtoh_async_ptsz(h, d, n, s);
    case UNIFIED: return cu.copy(hp, d, n);
    case UNIFIED_PTDS: return cu.copy_ptds(hp, d, n);
    case UNIFIED_ASYNC: return cu.copy_async(hp, d, n, s);
    default: return cu.copy_async_ptsz(hp, d, n, s);
    }
}

static void sync_way(enum way w, CUstream s)
{
    if (w == ASYNC_PTSZ || w == UNIFIED_ASYNC_PTSZ)
        CHECK_CU(cu.stream_sync_ptsz(s));
    else
        CHECK_CU(cu.stream_sync(s));
}

/* ---- 1. error injection ----------------------------------------------------- */
/* vramshim's slots give way to the program's pinning: pin all of a small
 * budget once, and give it back. */
static void release_slots(void)
{
    CHECK(cu.set("pin_limit", "16M") == 0, "set pin_limit");
    void *p;
    CHECK_CU(cu.host_alloc(&p, 16 * M, 0));
    CHECK_EQ_U64(stats_now("pinned.staging"), 0);
    CHECK_CU(cu.host_free(p));
    CHECK(cu.set("pin_limit", "1G") == 0, "set pin_limit");
}

static void injected(const char *name, unsigned skip, CUresult err, CUresult want_rc,
                     bool want_staged, uint64_t want_staging)
{
    size_t n = 24 * M + 5;
    unsigned char *src = malloc(n), *back = malloc(n);
    fill(src, n, 11);
    CUdeviceptr d;
    CHECK_CU(cu.alloc(&d, n));
    memset(dev_ptr(d), 0, n);
    uint64_t before = stats_now("counters.fast_copies");
    CHECK(cu.inject(name, skip, 1000, err) == 0, "no injection slot");
    CUresult rc = cu.htod(d, src, n);
    cu.inject_clear();
    CHECK(rc == want_rc, "%s failing: the copy returned %d, expected %d", name, (int)rc,
          (int)want_rc);
    if (rc == CUDA_SUCCESS)
        check_same(dev_ptr(d), src, n, name);
    CHECK_EQ_U64(stats_now("counters.fast_copies") - before, want_staged ? 1 : 0);
    CHECK_EQ_U64(stats_now("pinned.staging"), want_staging);
    /* the next copy, both ways, is whole again */
    fill(src, n, 12);
    CHECK_CU(cu.htod(d, src, n));
    check_same(dev_ptr(d), src, n, "the copy after an injected failure");
    CHECK_CU(cu.dtoh(back, d, n));
    check_same(back, src, n, "the copy back after an injected failure");
    CHECK_CU(cu.release(d));
    free(src);
    free(back);
}

static void injected_dtoh(const char *name, CUresult err)
{
    size_t n = 20 * M;
    unsigned char *want = malloc(n), *back = malloc(n);
    CUdeviceptr d;
    CHECK_CU(cu.alloc(&d, n));
    fill(want, n, 13);
    memcpy(dev_ptr(d), want, n);
    CHECK(cu.inject(name, 1, 1000, err) == 0, "no injection slot");
    CUresult rc = cu.dtoh(back, d, n);
    cu.inject_clear();
    CHECK(rc == err, "%s failing: the copy back returned %d, expected %d", name, (int)rc,
          (int)err);
    CHECK_CU(cu.dtoh(back, d, n));
    check_same(back, want, n, "the copy back after an injected failure");
    CHECK_CU(cu.release(d));
    free(want);
    free(back);
}

static void error_injection(void)
{
    CHECK_EQ_U64(stats_now("pinned.staging"), 0);
    /* the second slot's event cannot be made: the copy runs through one */
    injected("cuEventCreate", 1, CUDA_ERROR_OUT_OF_MEMORY, CUDA_SUCCESS, true, 4 * M);
    CHECK_EQ_U64(stats_now("pinned.staging"), 16 * M); /* made by the copies after it */
    release_slots();
    /* no page-locked memory from the driver: no slot, the driver copies */
    injected("cuMemHostAlloc", 0, CUDA_ERROR_OUT_OF_MEMORY, CUDA_SUCCESS, false, 0);
    /* a piece's copy fails: the driver's error, nothing hangs */
    injected("cuMemcpyHtoDAsync_v2", 2, CUDA_ERROR_ILLEGAL_ADDRESS, CUDA_ERROR_ILLEGAL_ADDRESS,
             false, 16 * M);
    /* no event: the stream is drained before the slot is used again */
    injected("cuEventRecord", 1, CUDA_ERROR_INVALID_HANDLE, CUDA_SUCCESS, true, 16 * M);
    injected("cuEventSynchronize", 0, CUDA_ERROR_LAUNCH_FAILED, CUDA_ERROR_LAUNCH_FAILED,
             false, 16 * M);
    injected("cuCtxPushCurrent_v2", 0, CUDA_ERROR_INVALID_CONTEXT, CUDA_ERROR_INVALID_CONTEXT,
             false, 16 * M);
    /* cannot tell whether the stream is capturing: the driver copies */
    injected("cuStreamIsCapturing", 0, CUDA_ERROR_INVALID_VALUE, CUDA_SUCCESS, false, 16 * M);
    injected("cuCtxGetCurrent", 0, CUDA_ERROR_INVALID_CONTEXT, CUDA_SUCCESS, false, 16 * M);
    injected_dtoh("cuMemcpyDtoHAsync_v2", CUDA_ERROR_ILLEGAL_ADDRESS);
    injected_dtoh("cuEventSynchronize", CUDA_ERROR_LAUNCH_FAILED);
    printf("error injection: ok\n");
}

/* ---- 2. every entry point, size and alignment --------------------------------- */
static void sizes_and_alignments(void)
{
    const size_t sizes[] = {8 * M - 1, 8 * M, 8 * M + 1, 12 * M + 5, 16 * M,
                            16 * M + 4095, 29 * M + 123};
    const size_t host_offsets[] = {0, 1, 4095, 4097};
    const size_t dev_offsets[] = {0, 3};
    size_t cap = 30 * M + 8192;
    unsigned char *src = malloc(cap), *back = malloc(cap), *want = malloc(cap);
    CUdeviceptr d;
    CHECK_CU(cu.alloc(&d, cap));
    CUstream s;
    CHECK_CU(cu.stream_create(&s, 0));
    unsigned seed = 100;
    unsigned char *dev = dev_ptr(d);
    for (int w = 0; w < N_WAYS; w++) {
        CUstream ws = w == ASYNC_PTSZ || w == UNIFIED_ASYNC_PTSZ ? NULL : s;
        for (size_t si = 0; si < sizeof sizes / sizeof sizes[0]; si++) {
            size_t n = sizes[si], ho = host_offsets[(si + (size_t)w) % 4];
            size_t dof = dev_offsets[(si + (size_t)w / 2) % 2];
            char what[128];
            snprintf(what, sizeof what, "%s, %zu bytes, host +%zu, device +%zu", way_name[w],
                     n, ho, dof);
            uint64_t before = stats_now("counters.fast_copies");
            uint64_t bytes_before = stats_now("counters.fast_copy_bytes");
            /* to the device: the bytes around the range stay */
            dev[dof + n] = 0xA5;
            if (dof)
                dev[dof - 1] = 0xA5;
            fill(src + ho, n, seed++);
            CHECK_CU(to_device((enum way)w, d + dof, src + ho, n, ws));
            sync_way((enum way)w, ws);
            check_same(dev + dof, src + ho, n, what);
            CHECK(dev[dof + n] == 0xA5 && (dof == 0 || dev[dof - 1] == 0xA5),
                  "%s: wrote outside the range", what);
            /* and back: the bytes around the host range stay */
            fill(want, n, seed++);
            memcpy(dev + dof, want, n);
            back[ho + n] = 0x5A;
            if (ho)
                back[ho - 1] = 0x5A;
            CHECK_CU(from_device((enum way)w, back + ho, d + dof, n, ws));
            check_same(back + ho, want, n, what);
            CHECK(back[ho + n] == 0x5A && (ho == 0 || back[ho - 1] == 0x5A),
                  "%s: wrote outside the host range", what);
            uint64_t staged = stats_now("counters.fast_copies") - before;
            CHECK(staged == (n >= 8 * M ? 2 : 0), "%s: %llu copies staged", what,
                  (unsigned long long)staged);
            CHECK_EQ_U64(stats_now("counters.fast_copy_bytes") - bytes_before,
                         n >= 8 * M ? 2 * n : 0);
        }
    }
    CHECK_CU(cu.release(d));
    free(src);
    free(back);
    free(want);
    printf("sizes and alignments: ok\n");
}

/* ---- 3 and 4: the source is consumed; the stream's order holds -------------- */
static void gated_kernel(bool per_thread, CUstream s, CUdeviceptr dst, CUdeviceptr src,
                         uint64_t n, sem_t *gate)
{
    void *params[] = {&dst, &src, &n, &gate};
    if (per_thread)
        CHECK_CU(cu.launch_ptsz(cu.gated_copy, 1, 1, 1, 1, 1, 1, 0, s, params, NULL));
    else
        CHECK_CU(cu.launch(cu.gated_copy, 1, 1, 1, 1, 1, 1, 0, s, params, NULL));
}

static void stream_order(bool per_thread, bool unified)
{
    size_t n = 12 * M + 77; /* fits the staging: the call returns before the device has it */
    unsigned char *src = malloc(n), *old = malloc(n);
    CUdeviceptr d, snap;
    CHECK_CU(cu.alloc(&d, n));
    CHECK_CU(cu.alloc(&snap, n));
    fill(old, n, 21);
    memcpy(dev_ptr(d), old, n);
    CUstream s = NULL;
    if (!per_thread)
        CHECK_CU(cu.stream_create(&s, 0));
    sem_t gate;
    sem_init(&gate, 0, 0);
    /* a kernel queued first, held until after the copy returned, reads d */
    gated_kernel(per_thread, s, snap, d, n, &gate);
    fill(src, n, 22);
    uint64_t before = stats_now("counters.fast_copies");
    if (unified)
        CHECK_CU(per_thread ? cu.copy_async_ptsz(d, (CUdeviceptr)(uintptr_t)src, n, s)
                            : cu.copy_async(d, (CUdeviceptr)(uintptr_t)src, n, s));
    else
        CHECK_CU(per_thread ? cu.htod_async_ptsz(d, src, n, s) : cu.htod_async(d, src, n, s));
    CHECK_EQ_U64(stats_now("counters.fast_copies") - before, 1);
    unsigned char *want = malloc(n);
    memcpy(want, src, n);
    memset(src, 0xEE, n); /* the program reuses its buffer at once */
    sem_post(&gate);
    CHECK_CU(per_thread ? cu.stream_sync_ptsz(NULL) : cu.stream_sync(s));
    check_same(dev_ptr(snap), old, n, "the kernel queued before the copy");
    check_same(dev_ptr(d), want, n, "the copy, source overwritten after the call");
    CHECK_CU(cu.release(d));
    CHECK_CU(cu.release(snap));
    sem_destroy(&gate);
    free(src);
    free(old);
    free(want);
}

struct release_later {
    sem_t *gate;
};
static void *release_gate(void *arg)
{
    /* This delay only widens the window in which a copy that ran ahead of the
     * kernel would read the old bytes; a correct copy passes at any delay. */
    usleep(200000);
    sem_post(((struct release_later *)arg)->gate);
    return NULL;
}

/* A larger copy than the staging holds, source overwritten after return;
 * in odd rounds the stream is held by a kernel, released a little later
 * by another thread, so slots must wait for the device before refilling. */
static void overwrite_after_return(void)
{
    size_t n = 40 * M + 9;
    unsigned char *src = malloc(n), *want = malloc(n);
    CUdeviceptr d, scratch;
    CHECK_CU(cu.alloc(&d, n));
    CHECK_CU(cu.alloc(&scratch, 4096));
    CUstream s;
    CHECK_CU(cu.stream_create(&s, 0));
    for (int round = 0; round < 4; round++) {
        sem_t gate;
        sem_init(&gate, 0, 0);
        struct release_later rl = {&gate};
        pthread_t t;
        if (round % 2) {
            gated_kernel(false, s, scratch, scratch, 1, &gate);
            pthread_create(&t, NULL, release_gate, &rl);
        }
        fill(src, n, 30 + (unsigned)round);
        memcpy(want, src, n);
        CHECK_CU(cu.htod_async(d, src, n, s));
        memset(src, round, n);
        CHECK_CU(cu.stream_sync(s));
        check_same(dev_ptr(d), want, n, "source overwritten after an async copy");
        if (round % 2)
            pthread_join(t, NULL);
        sem_destroy(&gate);
    }
    CHECK_CU(cu.release(d));
    CHECK_CU(cu.release(scratch));
    free(src);
    free(want);
}

/* ---- 5. a copy back after a kernel that wrote the buffer -------------------- */
static void dtoh_after_kernel(bool per_thread)
{
    size_t n = 20 * M + 3;
    unsigned char *back = malloc(n), *want = malloc(n);
    CUdeviceptr d;
    CHECK_CU(cu.alloc(&d, n));
    memset(dev_ptr(d), 0, n);
    CUstream s = NULL;
    if (!per_thread)
        CHECK_CU(cu.stream_create(&s, 0));
    sem_t gate;
    sem_init(&gate, 0, 0);
    uint64_t nn = n;
    uint32_t seed = 41;
    sem_t *g = &gate;
    void *params[] = {&d, &nn, &seed, &g};
    if (per_thread)
        CHECK_CU(cu.launch_ptsz(cu.fill_kernel, 1, 1, 1, 1, 1, 1, 0, NULL, params, NULL));
    else
        CHECK_CU(cu.launch(cu.fill_kernel, 1, 1, 1, 1, 1, 1, 0, s, params, NULL));
    struct release_later rl = {&gate};
    pthread_t t;
    pthread_create(&t, NULL, release_gate, &rl);
    uint64_t before = stats_now("counters.fast_copies");
    CHECK_CU(per_thread ? cu.dtoh_async_ptsz(back, d, n, NULL) : cu.dtoh_async(back, d, n, s));
    /* returned with every byte: no synchronisation before reading */
    fill(want, n, 41);
    check_same(back, want, n, "the copy back after a kernel wrote the buffer");
    CHECK_EQ_U64(stats_now("counters.fast_copies") - before, 1);
    pthread_join(t, NULL);
    sem_destroy(&gate);
    CHECK_CU(cu.release(d));
    free(back);
    free(want);
}

/* ---- 6. what stays the driver's ---------------------------------------------- */
static void not_staged(void)
{
    size_t n = 16 * M;
    uint64_t before = stats_now("counters.fast_copies");
    CUdeviceptr d, small, managed;
    CHECK_CU(cu.alloc(&d, n));
    CHECK_CU(cu.alloc(&small, M)); /* below a granule: plain device memory */
    /* pinned source and destination: the driver is at bus speed already */
    unsigned char *pinned;
    CHECK_CU(cu.host_alloc((void **)&pinned, n, 0));
    fill(pinned, n, 51);
    CHECK_CU(cu.htod(d, pinned, n));
    check_same(dev_ptr(d), pinned, n, "from pinned memory");
    memset(pinned, 0, n);
    CHECK_CU(cu.dtoh(pinned, d, n));
    unsigned char *want = malloc(n);
    fill(want, n, 51);
    check_same(pinned, want, n, "to pinned memory");
    CHECK_CU(cu.host_free(pinned));
    /* managed memory */
    CHECK_CU(cu.alloc_managed(&managed, n, CU_MEM_ATTACH_GLOBAL));
    CHECK_CU(cu.htod(managed, want, n));
    check_same(dev_ptr(managed), want, n, "to managed memory");
    CHECK_CU(cu.release(managed));
    /* a destination too small, a pointer that is no device memory: the
     * driver's own answer, and nothing written */
    memset(dev_ptr(small), 0x77, M);
    CHECK(cu.htod(small, want, n) == CUDA_ERROR_INVALID_VALUE, "too small accepted");
    CHECK(cu.htod_async(small, want, n, NULL) == CUDA_ERROR_INVALID_VALUE, "too small accepted");
    CHECK(cu.dtoh(want, small, n) == CUDA_ERROR_INVALID_VALUE, "too small accepted");
    CHECK(((unsigned char *)dev_ptr(small))[0] == 0x77, "a refused copy wrote");
    CHECK(cu.htod(0, want, n) == CUDA_ERROR_INVALID_VALUE, "NULL accepted");
    CHECK(cu.htod(d, NULL, n) == CUDA_ERROR_INVALID_VALUE, "NULL source accepted");
    CHECK(cu.dtoh(NULL, d, n) == CUDA_ERROR_INVALID_VALUE, "NULL destination accepted");
    CHECK_EQ_U64(stats_now("counters.fast_copies"), before);
    CHECK_CU(cu.release(d));
    CHECK_CU(cu.release(small));
    free(want);
    printf("the driver's copies: ok\n");
}

/* ---- 7. an offloaded buffer ---------------------------------------------------- */
static void offloaded_destination(void)
{
    size_t n = 24 * M;
    unsigned char *src = malloc(n), *back = malloc(n);
    CUdeviceptr d;
    CHECK_CU(cu.alloc(&d, n));
    fill(src, n, 61);
    CHECK_CU(cu.htod(d, src, n));
    CHECK(cu.offload(d) == 0, "vramshim_offload refused");
    CHECK(stats_now("devices.0.offloaded_pinned") + stats_now("devices.0.offloaded_pageable") >= n,
          "not offloaded");
    uint64_t restores = stats_now("counters.restores"), before = stats_now("counters.fast_copies");
    fill(src, n, 62);
    CHECK_CU(cu.htod(d, src, n));
    CHECK(stats_now("counters.restores") > restores, "not brought back before the copy");
    check_same(dev_ptr(d), src, n, "a copy to an offloaded buffer");
    CHECK(cu.offload(d) == 0, "vramshim_offload refused");
    CHECK_CU(cu.dtoh(back, d, n));
    check_same(back, src, n, "a copy from an offloaded buffer");
    CHECK_EQ_U64(stats_now("counters.fast_copies") - before, 2);
    CHECK_CU(cu.release(d));
    free(src);
    free(back);
    printf("offloaded buffers: ok\n");
}

/* ---- 8. a mapped file ------------------------------------------------------------ */
static void mapped_file(void)
{
    size_t n = 36 * M + 4321;
    char path[] = "/tmp/vramshim-fastcopy-XXXXXX";
    int fd = mkstemp(path);
    CHECK(fd >= 0, "mkstemp");
    unlink(path);
    unsigned char *want = malloc(n);
    fill(want, n, 71);
    CHECK(write(fd, want, n) == (ssize_t)n, "write");
    CHECK(fsync(fd) == 0, "fsync");
    unsigned char *map = mmap(NULL, n, PROT_READ, MAP_PRIVATE, fd, 0);
    CHECK(map != MAP_FAILED, "mmap");
    CUdeviceptr d;
    CHECK_CU(cu.alloc(&d, n));
    uint64_t before = stats_now("counters.fast_copies");
    for (int warm = 0; warm < 2; warm++) {
        if (!warm) /* cold: its pages leave the page cache first */
            posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
        memset(dev_ptr(d), 0, n);
        CHECK_CU(cu.htod(d, map + 1, n - 1));
        check_same(dev_ptr(d), want + 1, n - 1, warm ? "a warm mapped file" : "a cold mapped file");
    }
    CHECK_EQ_U64(stats_now("counters.fast_copies") - before, 2);
    /* a read-only mapping cannot take a copy back: an error, not a crash */
    CHECK(cu.dtoh(map, d, n) == CUDA_ERROR_INVALID_VALUE, "copied into a read-only mapping");
    check_same(map, want, n, "the read-only mapping");
    munmap(map, n);
    close(fd);
    CHECK_CU(cu.release(d));
    free(want);
    printf("mapped file: ok\n");
}

/* ---- 9. 8 threads at once ----------------------------------------------------------- */
static void *copier(void *arg)
{
    unsigned id = (unsigned)(uintptr_t)arg;
    CHECK_CU(cu.set_ctx(cu.ctx));
    size_t n = 9 * M + id * 4097;
    unsigned char *src = malloc(n + 1), *back = malloc(n + 1);
    CUdeviceptr d;
    CHECK_CU(cu.alloc(&d, n));
    CUstream s;
    CHECK_CU(cu.stream_create(&s, 0));
    for (unsigned round = 0; round < 5; round++) {
        fill(src + (id & 1), n, 1000 + id * 10 + round);
        if (round % 2)
            CHECK_CU(cu.htod_async(d, src + (id & 1), n, s));
        else
            CHECK_CU(cu.htod_ptds(d, src + (id & 1), n));
        memset(back, 0, n + 1);
        if (round % 2)
            CHECK_CU(cu.dtoh_async(back + 1, d, n, s));
        else
            CHECK_CU(cu.dtoh_ptds(back + 1, d, n));
        check_same(back + 1, src + (id & 1), n, "a copy among 8 threads");
    }
    CHECK_CU(cu.release(d));
    free(src);
    free(back);
    return NULL;
}

static void eight_threads(void)
{
    uint64_t before = stats_now("counters.fast_copies");
    uint64_t fallbacks_before = stats_now("counters.fast_copy_fallbacks");
    pthread_t t[8];
    for (unsigned i = 0; i < 8; i++)
        pthread_create(&t[i], NULL, copier, (void *)(uintptr_t)i);
    for (int i = 0; i < 8; i++)
        pthread_join(t[i], NULL);
    /* A slot still in flight on another thread's stream is left alone, so a
     * copy may find none free and go to the driver: counted apart. The first
     * copy of all always finds the slots idle. */
    uint64_t staged = stats_now("counters.fast_copies") - before;
    uint64_t fallen = stats_now("counters.fast_copy_fallbacks") - fallbacks_before;
    CHECK_EQ_U64(staged + fallen, 8 * 5 * 2);
    CHECK(staged >= 1, "no copy among 8 threads was staged");
    printf("8 threads: ok (%llu staged, %llu to the driver)\n", (unsigned long long)staged,
           (unsigned long long)fallen);
}

/* ---- 9b. every slot in flight on another stream --------------------------------- */
/* A stream held by a kernel keeps all four slots; a copy on another stream
 * must not wait for them (that stream may wait for something the program
 * does later): the driver copies it, counted as a fallback. */
static void busy_slots(void)
{
    size_t n = 16 * M, m = 9 * M + 3;
    unsigned char *src = malloc(n), *other = malloc(m);
    CUdeviceptr d, snap, e;
    CHECK_CU(cu.alloc(&d, n));
    CHECK_CU(cu.alloc(&snap, n));
    CHECK_CU(cu.alloc(&e, m));
    CUstream held, free_s;
    CHECK_CU(cu.stream_create(&held, CU_STREAM_NON_BLOCKING));
    CHECK_CU(cu.stream_create(&free_s, CU_STREAM_NON_BLOCKING));
    sem_t gate;
    sem_init(&gate, 0, 0);
    gated_kernel(false, held, snap, d, n, &gate);
    uint64_t staged = stats_now("counters.fast_copies");
    uint64_t fallen = stats_now("counters.fast_copy_fallbacks");
    fill(src, n, 71);
    CHECK_CU(cu.htod_async(d, src, n, held)); /* four pieces, four slots, all held */
    fill(other, m, 72);
    CHECK_CU(cu.htod_async(e, other, m, free_s));
    CHECK_CU(cu.stream_sync(free_s)); /* returns while `held` is still held */
    check_same(dev_ptr(e), other, m, "a copy while every slot is held");
    CHECK_EQ_U64(stats_now("counters.fast_copies") - staged, 1);
    CHECK_EQ_U64(stats_now("counters.fast_copy_fallbacks") - fallen, 1);
    sem_post(&gate);
    CHECK_CU(cu.stream_sync(held));
    check_same(dev_ptr(d), src, n, "the copy that held the slots");
    CHECK_CU(cu.stream_destroy(held));
    CHECK_CU(cu.stream_destroy(free_s));
    CHECK_CU(cu.release(d));
    CHECK_CU(cu.release(snap));
    CHECK_CU(cu.release(e));
    sem_destroy(&gate);
    free(src);
    free(other);
    printf("busy slots: ok\n");
}

/* ---- 10. the pin budget spent in the middle ----------------------------------------- */
static void pin_budget(void)
{
    size_t n = 24 * M + 1;
    unsigned char *src = malloc(n);
    CUdeviceptr d;
    CHECK_CU(cu.alloc(&d, n));
    CHECK_EQ_U64(stats_now("pinned.app"), 0);
    CHECK(stats_now("pinned.staging") == 16 * M, "staging %llu",
          (unsigned long long)stats_now("pinned.staging"));
    /* the program pins 60 of 64M: vramshim's slots give way, one fits after */
    CHECK(cu.set("pin_limit", "64M") == 0, "set pin_limit");
    void *pins;
    CHECK_CU(cu.host_alloc(&pins, 60 * M, 0));
    uint64_t before = stats_now("counters.fast_copies");
    fill(src, n, 81);
    CHECK_CU(cu.htod(d, src, n));
    check_same(dev_ptr(d), src, n, "a copy through one slot");
    CHECK_EQ_U64(stats_now("counters.fast_copies") - before, 1);
    CHECK_EQ_U64(stats_now("pinned.staging"), 4 * M);
    /* the last 4M go to the program too: no slot, the driver copies */
    void *more;
    CHECK_CU(cu.host_alloc(&more, 4 * M, 0));
    CHECK_EQ_U64(stats_now("pinned.staging"), 0);
    fill(src, n, 82);
    CHECK_CU(cu.htod(d, src, n));
    check_same(dev_ptr(d), src, n, "a copy with no pin budget left");
    CHECK_EQ_U64(stats_now("counters.fast_copies") - before, 1);
    CHECK_CU(cu.host_free(pins));
    CHECK_CU(cu.host_free(more));
    CHECK(cu.set("pin_limit", "1G") == 0, "set pin_limit");
    CHECK_CU(cu.htod(d, src, n));
    CHECK_EQ_U64(stats_now("counters.fast_copies") - before, 2);
    CHECK_CU(cu.release(d));
    free(src);
    printf("pin budget: ok\n");
}

/* ---- 12. prefault before pinning ----------------------------------------------- */
static CUresult (*host_register)(void *, size_t, unsigned);
static CUresult (*host_unregister)(void *);

static void register_range(bool want_prefault)
{
    if (!host_register) {
        host_register = check_sym(cu.lib, "cuMemHostRegister_v2");
        host_unregister = check_sym(cu.lib, "cuMemHostUnregister");
    }
    size_t n = 80 * M;
    unsigned char *p = mmap(NULL, n, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    CHECK(p != MAP_FAILED, "mmap");
    p[12345] = 7; /* the program's bytes stay as they are */
    uint64_t before = stats_now("counters.prefaults"), bytes = stats_now("counters.prefault_bytes");
    CHECK_CU(host_register(p, n, 0));
    CHECK_EQ_U64(stats_now("counters.prefaults") - before, want_prefault ? 1 : 0);
    CHECK_EQ_U64(stats_now("counters.prefault_bytes") - bytes, want_prefault ? n : 0);
    CHECK(p[12345] == 7 && p[0] == 0 && p[n - 1] == 0, "prefault wrote the program's bytes");
    CHECK_CU(host_unregister(p));
    /* smaller than 64M: the driver alone */
    before = stats_now("counters.prefaults");
    CHECK_CU(host_register(p, 32 * M, 0));
    CHECK_EQ_U64(stats_now("counters.prefaults"), before);
    CHECK_CU(host_unregister(p));
    munmap(p, n);
}

/* ---- 11. turned off ------------------------------------------------------------------ */
static void turned_off(void)
{
    size_t n = 32 * M;
    unsigned char *src = malloc(n), *back = malloc(n);
    CUdeviceptr d;
    CHECK_CU(cu.alloc(&d, n));
    fill(src, n, 91);
    CHECK_CU(cu.htod(d, src, n));
    CHECK_CU(cu.dtoh(back, d, n));
    check_same(back, src, n, "a copy with fast copies off");
    CHECK_EQ_U64(stats_now("counters.fast_copies"), 0);
    CHECK_EQ_U64(stats_now("pinned.staging"), 0);
    register_range(false);
    printf("off: ok\n");
}

int main(int argc, char **argv)
{
    const char *const env[] = {"FAKECUDA_MEM=2G", "VRAMSHIM_STAGING=16M",
                               "VRAMSHIM_COPY_THREADS=3", "VRAMSHIM_PIN_LIMIT=1G", NULL};
    check_reexec_env(argv, env);
    open_driver();
    if (argc > 1 && strcmp(argv[1], "off") == 0) {
        turned_off();
        return 0;
    }
    error_injection();
    sizes_and_alignments();
    stream_order(false, false);
    stream_order(true, false);
    stream_order(false, true);
    stream_order(true, true);
    overwrite_after_return();
    printf("stream order and source reuse: ok\n");
    dtoh_after_kernel(false);
    dtoh_after_kernel(true);
    printf("copy back after a kernel: ok\n");
    not_staged();
    mapped_file();
    eight_threads();
    busy_slots();
    pin_budget();
    register_range(true);
    printf("prefault: ok\n");
    offloaded_destination(); /* last: offload may hold host memory ahead of need */

    /* the same program with VRAMSHIM_FAST_COPY_MIN=0 */
    setenv("VRAMSHIM_FAST_COPY_MIN", "0", 1);
    pid_t pid = fork();
    if (pid == 0) {
        char *args[] = {argv[0], "off", NULL};
        execv("/proc/self/exe", args);
        _exit(127);
    }
    int status;
    CHECK(waitpid(pid, &status, 0) == pid && WIFEXITED(status) && WEXITSTATUS(status) == 0,
          "the run with VRAMSHIM_FAST_COPY_MIN=0 failed");
    printf("fastcopy: ok\n");
    return 0;
}
