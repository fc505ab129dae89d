/*
 * prog_offload: buffers move to pinned host memory under pressure and come
 * back, with their addresses and bytes intact, on the test driver (1 GiB,
 * VRAM limit 128M, offload auto, idle after 0 ms so every buffer is idle).
 *
 *   1. pressure: a third buffer over the limit succeeds by moving the least
 *      recently touched one out; the counters say so;
 *      host memory for later evictions is then created ahead of need;
 *   2. the moved buffer answers cuPointerGetAttribute and
 *      cuMemGetAddressRange exactly as before, and the CPU-side bytes and a
 *      kernel reading it see the same data; a copy touching it brings it back;
 *   3. vramshim_offload while a kernel that writes the buffer is still in
 *      flight on a stream: none of its writes are lost;
 *   4. a randomized run: 4 threads, 100,000 operations in all (allocate,
 *      free, write, read, kernel, device-to-device copy, offload, prefetch,
 *      limit changes), every read checked against a shadow copy, with
 *      hostile threads (hostile.h) at the same time: a freer the run hands
 *      buffers to, stream captures and graph launches, host callbacks
 *      writing pinned memory that copies read, and the control socket's
 *      `evict` and `free`. Every phase the books are checked and every
 *      byte of every buffer. Seeded (CHECK_SEED), the seed printed.
 */
#include "check.h"
#include "fakecuda.h"
#include "hostile.h"
#include "scenario.h"

#include <errno.h>
#include <pthread.h>
#include <string.h>
#include <unistd.h>

#define M (1ULL << 20)

static struct {
    void *lib;
    CUresult (*alloc)(CUdeviceptr *, size_t);
    CUresult (*release)(CUdeviceptr);
    CUresult (*htod)(CUdeviceptr, const void *, size_t);
    CUresult (*dtoh)(void *, CUdeviceptr, size_t);
    CUresult (*dtod)(CUdeviceptr, CUdeviceptr, size_t);
    CUresult (*attr)(void *, CUpointer_attribute, CUdeviceptr);
    CUresult (*range)(CUdeviceptr *, size_t *, CUdeviceptr);
    CUresult (*launch)(CUfunction, unsigned, unsigned, unsigned, unsigned, unsigned,
                       unsigned, unsigned, CUstream, void **, void **);
    CUresult (*stream_create)(CUstream *, unsigned);
    CUresult (*stream_sync)(CUstream);
    CUresult (*set_ctx)(CUcontext);
    CUresult (*get_ctx)(CUcontext *);
    int (*offload)(uint64_t);
    int (*prefetch)(uint64_t);
    int (*set)(const char *, const char *);
    CUfunction xor_kernel;
    CUcontext ctx;
} cu;

/* xor_kernel(ptr, bytes, key): every byte of [ptr, ptr+bytes) ^= key, one
 * 64 KiB slice at a time, yielding between slices so that a move that did
 * not wait for it would catch it half done. */
static void xor_body(void **params, fakecuda_dim3 grid, fakecuda_dim3 block)
{
    (void)grid;
    (void)block;
    unsigned char *p = (unsigned char *)(uintptr_t)*(CUdeviceptr *)params[0];
    uint64_t n = *(uint64_t *)params[1];
    unsigned char key = (unsigned char)*(uint32_t *)params[2];
    for (uint64_t off = 0; off < n; off += 65536) {
        uint64_t end = off + 65536 < n ? off + 65536 : n;
        for (uint64_t i = off; i < end; i++)
            p[i] ^= key;
        sched_yield();
    }
}

static void open_driver(void)
{
    cu.lib = check_libcuda();
    check_context(cu.lib, 0);
    cu.alloc = check_sym(cu.lib, "cuMemAlloc_v2");
    cu.release = check_sym(cu.lib, "cuMemFree_v2");
    cu.htod = check_sym(cu.lib, "cuMemcpyHtoD_v2");
    cu.dtoh = check_sym(cu.lib, "cuMemcpyDtoH_v2");
    cu.dtod = check_sym(cu.lib, "cuMemcpyDtoD_v2");
    cu.attr = check_sym(cu.lib, "cuPointerGetAttribute");
    cu.range = check_sym(cu.lib, "cuMemGetAddressRange_v2");
    cu.launch = check_sym(cu.lib, "cuLaunchKernel");
    cu.stream_create = check_sym(cu.lib, "cuStreamCreate");
    cu.stream_sync = check_sym(cu.lib, "cuStreamSynchronize");
    cu.set_ctx = check_sym(cu.lib, "cuCtxSetCurrent");
    cu.get_ctx = check_sym(cu.lib, "cuCtxGetCurrent");
    CHECK_CU(cu.get_ctx(&cu.ctx));
    cu.offload = check_api("vramshim_offload");
    cu.prefetch = check_api("vramshim_prefetch");
    cu.set = check_api("vramshim_set");
    CUfunction (*reg)(const char *, fakecuda_kernel_fn, int, const size_t *) =
        check_sym(cu.lib, "fakecuda_register_kernel");
    const size_t sizes[] = {8, 8, 4};
    cu.xor_kernel = reg("xor_kernel", xor_body, 3, sizes);
}

static void launch_xor(CUdeviceptr p, uint64_t n, uint32_t key, CUstream s)
{
    void *params[] = {&p, &n, &key};
    CHECK_CU(cu.launch(cu.xor_kernel, 1, 1, 1, 1, 1, 1, 0, s, params, NULL));
}

/* ---- 1 and 2: pressure, attributes, coming back ----------------------------- */
static void pressure(void)
{
    size_t n = 64 * M;
    unsigned char *pa = malloc(n), *pb = malloc(n);
    check_fill(pa, n, 1);
    check_fill(pb, 48 * M, 2);
    CUdeviceptr a, b, c;
    CHECK_CU(cu.alloc(&a, n));
    CHECK_CU(cu.htod(a, pa, n));
    CHECK_CU(cu.alloc(&b, 48 * M));
    CHECK_CU(cu.htod(b, pb, 48 * M)); /* b is now the more recently touched */
    json_t *st = stats_get();
    CHECK_EQ_U64(stats_u64(st, "counters.evictions"), 0);
    /* the staging slots of the copies above (large pageable copies) */
    uint64_t slots = stats_u64(st, "pinned.staging");
    json_decref(st);

    CHECK_CU(cu.alloc(&c, n)); /* 176M under a 128M limit: a must move */
    st = stats_get();
    CHECK(stats_u64(st, "devices.0.resident") <= 128 * M, "resident %llu over the limit",
          (unsigned long long)stats_u64(st, "devices.0.resident"));
    CHECK_EQ_U64(stats_u64(st, "devices.0.allocated"), 176 * M);
    CHECK(stats_u64(st, "devices.0.offloaded_pinned") >= 48 * M, "nothing offloaded");
    CHECK_EQ_U64(stats_u64(st, "devices.0.offloaded_pinned") + stats_u64(st, "devices.0.resident"),
                 176 * M);
    CHECK_EQ_U64(stats_u64(st, "pinned.offload"), stats_u64(st, "devices.0.offloaded_pinned"));
    CHECK(stats_u64(st, "counters.evictions") >= 1, "no eviction counted");
    CHECK_EQ_U64(stats_u64(st, "counters.bytes_evicted"), stats_u64(st, "devices.0.offloaded_pinned"));
    json_decref(st);

    /* under pressure now: host memory for the next evictions is made ahead
     * of need, on the pool's thread (waited for with a deadline), and held
     * as vramshim's own pins inside the limit */
    uint64_t ready = 0;
    for (int tries = 0; tries < 500 && ready < 256 * M; tries++) {
        st = stats_get();
        ready = stats_u64(st, "pinned.staging") - slots;
        CHECK(ready + stats_u64(st, "pinned.offload") <= stats_u64(st, "pinned.limit"),
              "pinned memory over the limit");
        json_decref(st);
        if (ready < 256 * M)
            usleep(10000);
    }
    CHECK_EQ_U64(ready, 256 * M);

    /* a (least recently touched) moved first, and reads as before */
    unsigned mem_type = 0;
    CUdeviceptr start = 0;
    size_t size = 0;
    int ordinal = -1;
    CHECK_CU(cu.attr(&mem_type, CU_POINTER_ATTRIBUTE_MEMORY_TYPE, a + 5 * M));
    CHECK(mem_type == CU_MEMORYTYPE_DEVICE, "memory type %u", mem_type);
    CHECK_CU(cu.attr(&start, CU_POINTER_ATTRIBUTE_RANGE_START_ADDR, a + 5 * M));
    CHECK_CU(cu.attr(&size, CU_POINTER_ATTRIBUTE_RANGE_SIZE, a + 5 * M));
    CHECK_CU(cu.attr(&ordinal, CU_POINTER_ATTRIBUTE_DEVICE_ORDINAL, a + 5 * M));
    CHECK(start == a && size == n && ordinal == 0, "attributes %llx %zu %d", start, size, ordinal);
    CHECK_CU(cu.range(&start, &size, a + 63 * M));
    CHECK(start == a && size == n, "address range %llx %zu", start, size);
    /* the bytes sit at the same address in pinned host memory: the CPU of the
     * test driver sees them where the device does */
    CHECK(memcmp((void *)(uintptr_t)a, pa, n) == 0, "offloaded bytes differ");

    /* a kernel reaching it brings it back (everything is idle: room is made) */
    launch_xor(a, n, 0x5a, NULL);
    for (size_t i = 0; i < n; i++)
        pa[i] ^= 0x5a;
    check_device_bytes(cu.dtoh, a, pa, n, "after a kernel on the offloaded buffer");
    check_device_bytes(cu.dtoh, b, pb, 48 * M, "b");
    st = stats_get();
    CHECK(stats_u64(st, "counters.restores") >= 1, "nothing came back");
    CHECK(stats_u64(st, "devices.0.resident") <= 128 * M, "over the limit after coming back");
    json_decref(st);

    /* the public API: offload and prefetch one buffer */
    CHECK(cu.offload(c) == 0, "vramshim_offload");
    CHECK(cu.offload(12345) == -ENOENT, "vramshim_offload of a stranger");
    CHECK(cu.prefetch(c) == 0, "vramshim_prefetch");
    CHECK_CU(cu.release(a));
    CHECK_CU(cu.release(b));
    CHECK_CU(cu.release(c));
    st = stats_get();
    CHECK_EQ_U64(stats_u64(st, "devices.0.allocated"), 0);
    CHECK_EQ_U64(stats_u64(st, "devices.0.resident"), 0);
    CHECK_EQ_U64(stats_u64(st, "devices.0.offloaded_pinned"), 0);
    CHECK_EQ_U64(stats_u64(st, "pinned.offload"), 0);
    json_decref(st);
    free(pa);
    free(pb);
}

/* ---- 3: a move while a kernel writes the buffer ------------------------------- */
static void move_under_kernel(void)
{
    size_t n = 32 * M;
    unsigned char *want = malloc(n);
    check_fill(want, n, 3);
    CUdeviceptr p;
    CUstream s;
    CHECK_CU(cu.stream_create(&s, 0));
    CHECK_CU(cu.alloc(&p, n));
    CHECK_CU(cu.htod(p, want, n));
    for (int round = 0; round < 4; round++) {
        uint32_t key = 0x11u * (unsigned)(round + 1);
        launch_xor(p, n, key, s); /* still running when the move starts */
        for (size_t i = 0; i < n; i++)
            want[i] ^= (unsigned char)key;
        CHECK(round % 2 ? cu.prefetch(p) == 0 : cu.offload(p) == 0, "move %d", round);
    }
    CHECK_CU(cu.stream_sync(s));
    check_device_bytes(cu.dtoh, p, want, n, "a kernel's writes across moves");
    CHECK_CU(cu.release(p));
    free(want);
}

/* ---- 4: the randomized run (the smallest limit, 48M, stays above what
 * the unmovable allocations, under a granule, can hold: one slot per
 * thread, 4 x 2M; above it, only moves can make room) ------------------------------------------------------- */
#define THREADS 4
#define OPS_PER_THREAD check_ops(25000)
#define SLOTS 6
/* every this many operations the threads meet, and vramshim's books are
 * checked (vramshim_check) while none of them runs */
#define PHASE_OPS 2500

struct slot {
    CUdeviceptr p;
    size_t n;
    unsigned char *shadow;
};

static _Atomic unsigned long ops_done, moves_asked, refused_in_capture;
static uint64_t run_seed;

static void *random_ops(void *arg)
{
    uint64_t seed = run_seed ^ 0x9e3779b97f4a7c15ULL * ((uintptr_t)arg + 1);
    CHECK_CU(cu.set_ctx(cu.ctx));
    CUstream s;
    CHECK_CU(cu.stream_create(&s, 0));
    struct slot slots[SLOTS] = {0};
    unsigned char tmp[8192];
    /* counts only operations carried out: a skipped draw draws again */
    int checked_at = 0;
    for (int op = 0; op < OPS_PER_THREAD;) {
        if (op % PHASE_OPS == 0 && op != checked_at) {
            checked_at = op;
            CHECK_CU(cu.stream_sync(s));
            hostile_phase(op);
            for (int i = 0; i < SLOTS; i++)
                if (slots[i].p)
                    check_device_bytes(cu.dtoh, slots[i].p, slots[i].shadow, slots[i].n,
                                       "a whole buffer after a phase");
        }
        struct slot *sl = &slots[check_rnd(&seed) % SLOTS];
        unsigned kind = (unsigned)(check_rnd(&seed) % 100);
        if (sl->p == 0) { /* allocate 2 to 4 MiB; slot 0 sometimes under a granule */
            size_t n = (2 + check_rnd(&seed) % 3) * M - (sl == slots ? (check_rnd(&seed) % 2) * 4096 : 0);
            uint64_t mark = hostile_capture_mark();
            CUresult rc = cu.alloc(&sl->p, n);
            /* while a stream captures, vramshim makes no room (it cannot
             * synchronise): refused, as the driver refuses one */
            if (rc == CUDA_ERROR_OUT_OF_MEMORY && hostile_capture_overlapped(mark)) {
                sl->p = 0;
                refused_in_capture++;
                continue;
            }
            CHECK_CU(rc);
            sl->n = n;
            hostile_account((int64_t)n);
            sl->shadow = malloc(sl->n);
            check_fill(sl->shadow, sl->n, (unsigned)op);
            CHECK_CU(cu.htod(sl->p, sl->shadow, sl->n));
        } else if (kind < 4) { /* free, after checking everything, or give it to the freer */
            CHECK_CU(cu.stream_sync(s));
            if (kind < 2) {
                hostile_give(sl->p, sl->n, sl->shadow);
            } else {
                check_device_bytes(cu.dtoh, sl->p, sl->shadow, sl->n, "whole buffer before free");
                CHECK_CU(cu.release(sl->p));
                hostile_account(-(int64_t)sl->n);
                free(sl->shadow);
            }
            sl->p = 0;
        } else if (kind < 30) { /* write a small range */
            size_t len = 1 + check_rnd(&seed) % sizeof tmp, off = check_rnd(&seed) % (sl->n - len);
            for (size_t i = 0; i < len; i++)
                tmp[i] = (unsigned char)check_rnd(&seed);
            CHECK_CU(cu.stream_sync(s));
            CHECK_CU(cu.htod(sl->p + off, tmp, len));
            memcpy(sl->shadow + off, tmp, len);
        } else if (kind < 55) { /* read a small range */
            size_t len = 1 + check_rnd(&seed) % sizeof tmp, off = check_rnd(&seed) % (sl->n - len);
            CHECK_CU(cu.stream_sync(s));
            CHECK_CU(cu.dtoh(tmp, sl->p + off, len));
            CHECK(memcmp(tmp, sl->shadow + off, len) == 0, "read of %zu at %zu", len, off);
        } else if (kind < 70) { /* kernel on a range, asynchronous */
            size_t len = 1 + check_rnd(&seed) % (256 * 1024), off = check_rnd(&seed) % (sl->n - len);
            uint32_t key = (uint32_t)(check_rnd(&seed) % 255 + 1);
            launch_xor(sl->p + off, len, key, s);
            for (size_t i = 0; i < len; i++)
                sl->shadow[off + i] ^= (unsigned char)key;
        } else if (kind < 78) { /* device-to-device copy between two slots */
            struct slot *o = &slots[check_rnd(&seed) % SLOTS];
            if (o->p == 0 || o == sl)
                continue;
            size_t len = 1 + check_rnd(&seed) % (64 * 1024);
            if (len > o->n || len > sl->n)
                continue;
            size_t so = check_rnd(&seed) % (o->n - len + 1), d = check_rnd(&seed) % (sl->n - len + 1);
            CHECK_CU(cu.stream_sync(s));
            CHECK_CU(cu.dtod(sl->p + d, o->p + so, len));
            memmove(sl->shadow + d, o->shadow + so, len);
        } else if (kind < 82) { /* offload now (a kernel may still be running) */
            int rc = cu.offload(sl->p);
            CHECK(rc == 0 || rc == -ENOMEM || (rc == -ENOTSUP && sl->n < 2 * M), "offload: %d", rc);
            moves_asked++;
        } else if (kind < 85) {
            int rc = cu.prefetch(sl->p);
            CHECK(rc == 0 || rc == -ENOMEM || (rc == -ENOTSUP && sl->n < 2 * M), "prefetch: %d", rc);
            moves_asked++;
        } else if (kind < 89) { /* work for the hostile threads */
            static const enum hostile_kind kinds[] = {HOSTILE_CAPTURE, HOSTILE_CAPTURE,
                                                      HOSTILE_CALLBACK, HOSTILE_CALLBACK};
            if (kind == 85 && check_rnd(&seed) % 8 == 0)
                hostile_ticket(HOSTILE_REQUEST);
            else if (kind != 85)
                hostile_ticket(kinds[kind - 85]);
        } else if (kind < 98) { /* read a small range */
            size_t len = 1 + check_rnd(&seed) % sizeof tmp, off = check_rnd(&seed) % (sl->n - len);
            CHECK_CU(cu.stream_sync(s));
            CHECK_CU(cu.dtoh(tmp, sl->p + off, len));
            CHECK(memcmp(tmp, sl->shadow + off, len) == 0, "read of %zu at %zu", len, off);
        } else { /* change the limit under everyone's feet */
            static const char *const limits[] = {"48M", "64M", "56M", "96M"};
            CHECK(cu.set("vram_limit", limits[check_rnd(&seed) % 4]) == 0, "set");
        }
        ops_done++;
        op++;
    }
    CHECK_CU(cu.stream_sync(s));
    for (int i = 0; i < SLOTS; i++) {
        if (slots[i].p == 0)
            continue;
        check_device_bytes(cu.dtoh, slots[i].p, slots[i].shadow, slots[i].n, "at the end");
        CHECK_CU(cu.release(slots[i].p));
        hostile_account(-(int64_t)slots[i].n);
        free(slots[i].shadow);
    }
    return NULL;
}

static void randomized(void)
{
    CHECK(cu.set("vram_limit", "56M") == 0, "set");
    /* a touched buffer comes back by moving only buffers idle this long */
    CHECK(cu.set("idle_ms", "500") == 0, "set");
    run_seed = scenario_seed(0x6f66666c6f6164);
    struct hostile_setup h = {.lib = cu.lib, .ctx = cu.ctx, .xor_kernel = cu.xor_kernel,
                              .run_threads = THREADS, .seed = run_seed};
    hostile_run(&h, random_ops);
    check_invariants("after the randomized run");
    json_t *st = stats_get();
    printf("randomized: %lu operations (%lu allocations refused during a capture), "
           "%llu evictions, %llu restores, 0 mismatches\n",
           (unsigned long)ops_done, (unsigned long)refused_in_capture,
           (unsigned long long)stats_u64(st, "counters.evictions"),
           (unsigned long long)stats_u64(st, "counters.restores"));
    CHECK_EQ_U64(ops_done, THREADS * OPS_PER_THREAD);
    /* about one operation in fifteen evicts: 1,000 of 100,000, 100 of the
     * 10,000 a CHECK_QUICK run makes */
    CHECK(stats_u64(st, "counters.evictions") > (uint64_t)THREADS * OPS_PER_THREAD / 100,
          "too few evictions to mean anything");
    CHECK_EQ_U64(stats_u64(st, "devices.0.allocated"), 0);
    CHECK_EQ_U64(stats_u64(st, "devices.0.offloaded_pinned"), 0);
    CHECK_EQ_U64(stats_u64(st, "pinned.offload"), 0);
    json_decref(st);
}

int main(int argc, char **argv)
{
    const char *env[] = {"FAKECUDA_MEM=1G", "VRAMSHIM_VRAM_LIMIT=128M", "VRAMSHIM_IDLE_MS=0",
                         "VRAMSHIM_OFFLOAD=auto", "VRAMSHIM_LOG=error", NULL};
    check_reexec_env(argv, env);
    open_driver();
    pressure();
    check_invariants("after the pressure phase");
    move_under_kernel();
    check_invariants("after moves under a kernel");
    randomized();
    printf("offload: ok\n");
    return 0;
}
