/*
 * prog_fence: a move's fence never waits forever inside the program's call
 * (issue 11, case 1).
 *
 *   1. A stream holds a host callback (cuLaunchHostFunc) that waits for a
 *      flag this thread sets only after its next call, a cuMemAlloc that
 *      needs room. Synchronising the context there would wait for the
 *      callback, which waits for the program: a hang. The fence gives up
 *      after VRAMSHIM_FENCE_MS and the allocation fails the way the driver
 *      fails one, CUDA_ERROR_OUT_OF_MEMORY; nothing moved, no byte lost.
 *      Once the callback has run, room is made again.
 *   2. A stream waits (cuStreamWaitValue32) for a word this thread writes
 *      after its next call, a launch naming an offloaded buffer. The
 *      buffer cannot come back without a fence, so it stays in pinned
 *      memory, where the kernel reaches it; the launch goes ahead.
 * A watchdog (alarm) fails the test if any call hangs.
 */
#include "check.h"

#include <sched.h>
#include <stdatomic.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define M (1ULL << 20)

static struct {
    struct check_driver d; /* lib, alloc, release, htod, dtoh, set_ctx, ctx */
    CUresult (*stream_create)(CUstream *, unsigned int);
    CUresult (*stream_sync)(CUstream);
    CUresult (*host_func)(CUstream, CUhostFn, void *);
    CUresult (*wait32)(CUstream, CUdeviceptr, cuuint32_t, unsigned int);
    CUresult (*host_alloc)(void **, size_t, unsigned int);
    CUresult (*launch)(CUfunction, unsigned, unsigned, unsigned, unsigned, unsigned, unsigned,
                       unsigned, CUstream, void **, void **);
    int (*offload)(uint64_t);
    CUfunction add;
} cu;

/* add(p, n, k): every byte of p[0..n) += k */
static void add_body(void **params, fakecuda_dim3 grid, fakecuda_dim3 block)
{
    (void)grid;
    (void)block;
    unsigned char *p = (unsigned char *)(uintptr_t)*(CUdeviceptr *)params[0];
    uint64_t n = *(uint64_t *)params[1];
    unsigned char k = (unsigned char)*(uint32_t *)params[2];
    for (uint64_t i = 0; i < n; i++)
        p[i] += k;
}

/* The callback a stream holds until the program lets it go. */
static void wait_for_flag(void *arg)
{
    _Atomic int *flag = arg;
    struct timespec nap = {0, 200000};
    while (!atomic_load(flag))
        nanosleep(&nap, NULL);
}

static void open_driver(void)
{
    check_driver_open(&cu.d);
    cu.stream_create = check_sym(cu.d.lib, "cuStreamCreate");
    cu.stream_sync = check_sym(cu.d.lib, "cuStreamSynchronize");
    cu.host_func = check_sym(cu.d.lib, "cuLaunchHostFunc");
    cu.wait32 = check_sym(cu.d.lib, "cuStreamWaitValue32_v2");
    cu.host_alloc = check_sym(cu.d.lib, "cuMemHostAlloc");
    cu.launch = check_sym(cu.d.lib, "cuLaunchKernel");
    cu.offload = check_api("vramshim_offload");
    const size_t sizes[] = {8, 8, 4};
    cu.add = check_kernel(cu.d.lib, "add", add_body, 3, sizes);
}

static CUdeviceptr alloc_filled(size_t n, unsigned char *shadow, unsigned seed)
{
    CUdeviceptr p;
    check_fill(shadow, n, seed);
    CHECK_CU(cu.d.alloc(&p, n));
    CHECK_CU(cu.d.htod(p, shadow, n));
    return p;
}

static double ms_since(const struct timespec *t0)
{
    struct timespec t1;
    clock_gettime(CLOCK_MONOTONIC, &t1);
    return (double)(t1.tv_sec - t0->tv_sec) * 1e3 + (double)(t1.tv_nsec - t0->tv_nsec) / 1e6;
}

/* 1: a host callback that waits for the program's next step. */
static void host_callback(void)
{
    static unsigned char a_bytes[48 * M], got[48 * M];
    CUdeviceptr a = alloc_filled(sizeof a_bytes, a_bytes, 1);
    CUstream s;
    CHECK_CU(cu.stream_create(&s, 0));
    _Atomic int flag = 0;
    CHECK_CU(cu.host_func(s, wait_for_flag, (void *)&flag));

    /* 48 + 32 > 64 MiB: room is needed, and the stream cannot drain */
    CUdeviceptr b;
    struct timespec t0;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    CUresult rc = cu.d.alloc(&b, 32 * M);
    double first = ms_since(&t0);
    CHECK(rc == CUDA_ERROR_OUT_OF_MEMORY,
          "cuMemAlloc with a stream held by the program returned %d", (int)rc);
    /* stuck still: the next call does not wait again */
    clock_gettime(CLOCK_MONOTONIC, &t0);
    rc = cu.d.alloc(&b, 32 * M);
    double second = ms_since(&t0);
    CHECK(rc == CUDA_ERROR_OUT_OF_MEMORY, "second cuMemAlloc returned %d", (int)rc);
    check_invariants("host callback: fence gave up");

    atomic_store(&flag, 1); /* the program's step: the callback returns */
    CHECK_CU(cu.stream_sync(s));
    /* the fence's own wait comes back when the stream drains; until then an
     * allocation may still be refused (the watchdog bounds this loop) */
    while ((rc = cu.d.alloc(&b, 32 * M)) == CUDA_ERROR_OUT_OF_MEMORY)
        sched_yield();
    CHECK_CU(rc);
    CHECK_CU(cu.d.dtoh(got, a, sizeof got));
    CHECK(memcmp(got, a_bytes, sizeof got) == 0, "the offloaded buffer changed");
    check_invariants("host callback: room made after");
    CHECK_CU(cu.d.release(b));
    CHECK_CU(cu.d.release(a));
    printf("fence: a held stream cost the first call %.0f ms, the next %.2f ms\n", first,
           second);
}

/* 2: a stream waiting on a value; a launch needs an offloaded buffer. */
static void wait_value(void)
{
    static unsigned char c_bytes[8 * M], got[8 * M];
    CUdeviceptr c = alloc_filled(sizeof c_bytes, c_bytes, 2);
    CHECK(cu.offload(c) == 0, "vramshim_offload");
    uint32_t *word;
    CHECK_CU(cu.host_alloc((void **)&word, 4096, CU_MEMHOSTALLOC_DEVICEMAP));
    *word = 0;
    CUstream waiting, working;
    CHECK_CU(cu.stream_create(&waiting, 0));
    CHECK_CU(cu.stream_create(&working, 0));
    CHECK_CU(cu.wait32(waiting, (CUdeviceptr)(uintptr_t)word, 1, CU_STREAM_WAIT_VALUE_GEQ));

    uint64_t n = sizeof c_bytes;
    uint32_t k = 3;
    void *params[] = {&c, &n, &k};
    CHECK_CU(cu.launch(cu.add, 1, 1, 1, 1, 1, 1, 0, working, params, NULL));
    CHECK_CU(cu.stream_sync(working));
    __atomic_store_n(word, 1, __ATOMIC_SEQ_CST); /* the program's step */
    CHECK_CU(cu.stream_sync(waiting));
    for (size_t i = 0; i < n; i++)
        c_bytes[i] += (unsigned char)k;
    CHECK_CU(cu.d.dtoh(got, c, sizeof got));
    CHECK(memcmp(got, c_bytes, sizeof got) == 0, "the kernel's writes to a pinned buffer");
    check_invariants("wait value");
    CHECK_CU(cu.d.release(c));
}

int main(int argc, char **argv)
{
    const char *env[] = {"FAKECUDA_MEM=256M",      "VRAMSHIM_VRAM_LIMIT=64M",
                         "VRAMSHIM_OFFLOAD=pinned", "VRAMSHIM_PIN_LIMIT=256M",
                         "VRAMSHIM_FENCE_MS=300",   "VRAMSHIM_LOG=error",
                         NULL};
    check_reexec_env(argv, env);
    check_watchdog("prog_fence", 120);
    open_driver();
    host_callback();
    wait_value();
    printf("fence: no call waited for the program's own later step\n");
    return 0;
}
