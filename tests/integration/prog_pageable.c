/*
 * prog_pageable: the pageable tier on the test driver (1 GiB, VRAM limit
 * 128M, pin limit 40M, idle after 300 ms, offload auto).
 *
 * A pageable chunk's device address is unmapped: on the test driver, as on
 * a GPU, work that reaches it faults. So every check here that a buffer
 * "came back" is made by a kernel that finds the buffer's address in
 * device memory, where touch tracking cannot see it: if vramshim let the
 * launch through before the bytes were back, the test would crash.
 *
 *   1. an idle process, pin budget spent: the least recently touched buffer
 *      goes pageable; the next launch (which names another buffer) brings
 *      it back first, to the device when it fits, else to pinned memory
 *      past the pin cap; a 2D copy of another buffer does the same;
 *   2. a busy process with the pin budget spent is refused
 *      (CUDA_ERROR_OUT_OF_MEMORY), never paged out;
 *   3. a buffer handed over with vramshim_offload goes pageable and stays
 *      there through launches that do not name it; naming it (a kernel, a
 *      16-bit memset), prefetching it or launching a graph brings it back,
 *      and cuPointerGetAttributes answers for it while it is out;
 *   4. vramshim's own pins yield to the program's cuMemHostAlloc;
 *   5. a randomized run of handed-over buffers under a small pin budget,
 *      every read checked against a shadow copy, with hostile threads
 *      (hostile.h) at the same time: a freer the run hands buffers to,
 *      stream captures and graph launches, host callbacks writing pinned
 *      memory that copies read, and the control socket's `evict` and
 *      `free`. Every phase the books are checked and every byte of every
 *      buffer. Seeded (CHECK_SEED), the seed printed.
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
#define IDLE_MS 300

static struct {
    void *lib;
    CUresult (*alloc)(CUdeviceptr *, size_t);
    CUresult (*release)(CUdeviceptr);
    CUresult (*htod)(CUdeviceptr, const void *, size_t);
    CUresult (*dtoh)(void *, CUdeviceptr, size_t);
    CUresult (*attr)(void *, CUpointer_attribute, CUdeviceptr);
    CUresult (*attrs)(unsigned, CUpointer_attribute *, void **, CUdeviceptr);
    CUresult (*copy2d)(const CUDA_MEMCPY2D *);
    CUresult (*set16)(CUdeviceptr, unsigned short, size_t);
    CUresult (*launch)(CUfunction, unsigned, unsigned, unsigned, unsigned, unsigned,
                       unsigned, unsigned, CUstream, void **, void **);
    CUresult (*sync)(void);
    CUresult (*host_alloc)(void **, size_t, unsigned);
    CUresult (*host_free)(void *);
    CUresult (*set_ctx)(CUcontext);
    CUresult (*get_ctx)(CUcontext *);
    CUresult (*stream_create)(CUstream *, unsigned);
    CUresult (*stream_sync)(CUstream);
    int (*offload)(uint64_t);
    int (*prefetch)(uint64_t);
    int (*set)(const char *, const char *);
    CUfunction chase, xor_kernel;
    CUcontext ctx;
} cu;

/* chase(table, key): table holds {address, bytes}; xor every byte there. */
static void chase_body(void **params, fakecuda_dim3 grid, fakecuda_dim3 block)
{
    (void)grid;
    (void)block;
    const uint64_t *table = (const uint64_t *)(uintptr_t)*(CUdeviceptr *)params[0];
    unsigned char *p = (unsigned char *)(uintptr_t)table[0];
    unsigned char key = (unsigned char)*(uint32_t *)params[1];
    for (uint64_t i = 0; i < table[1]; i++)
        p[i] ^= key;
}

static void xor_body(void **params, fakecuda_dim3 grid, fakecuda_dim3 block)
{
    (void)grid;
    (void)block;
    unsigned char *p = (unsigned char *)(uintptr_t)*(CUdeviceptr *)params[0];
    uint64_t n = *(uint64_t *)params[1];
    unsigned char key = (unsigned char)*(uint32_t *)params[2];
    for (uint64_t i = 0; i < n; i++)
        p[i] ^= key;
}

static void open_driver(void)
{
    cu.lib = check_libcuda();
    check_context(cu.lib, 0);
    cu.alloc = check_sym(cu.lib, "cuMemAlloc_v2");
    cu.release = check_sym(cu.lib, "cuMemFree_v2");
    cu.htod = check_sym(cu.lib, "cuMemcpyHtoD_v2");
    cu.dtoh = check_sym(cu.lib, "cuMemcpyDtoH_v2");
    cu.attr = check_sym(cu.lib, "cuPointerGetAttribute");
    cu.attrs = check_sym(cu.lib, "cuPointerGetAttributes");
    cu.copy2d = check_sym(cu.lib, "cuMemcpy2D_v2");
    cu.set16 = check_sym(cu.lib, "cuMemsetD16_v2");
    cu.launch = check_sym(cu.lib, "cuLaunchKernel");
    cu.sync = check_sym(cu.lib, "cuCtxSynchronize");
    cu.host_alloc = check_sym(cu.lib, "cuMemHostAlloc");
    cu.host_free = check_sym(cu.lib, "cuMemFreeHost");
    cu.set_ctx = check_sym(cu.lib, "cuCtxSetCurrent");
    cu.get_ctx = check_sym(cu.lib, "cuCtxGetCurrent");
    cu.stream_create = check_sym(cu.lib, "cuStreamCreate");
    cu.stream_sync = check_sym(cu.lib, "cuStreamSynchronize");
    CHECK_CU(cu.get_ctx(&cu.ctx));
    cu.offload = check_api("vramshim_offload");
    cu.prefetch = check_api("vramshim_prefetch");
    cu.set = check_api("vramshim_set");
    CUfunction (*reg)(const char *, fakecuda_kernel_fn, int, const size_t *) =
        check_sym(cu.lib, "fakecuda_register_kernel");
    const size_t chase_sizes[] = {8, 4}, xor_sizes[] = {8, 8, 4};
    cu.chase = reg("chase", chase_body, 2, chase_sizes);
    cu.xor_kernel = reg("xor_kernel", xor_body, 3, xor_sizes);
}

static void flip(unsigned char *buf, size_t n, unsigned char key)
{
    for (size_t i = 0; i < n; i++)
        buf[i] ^= key;
}

static CUdeviceptr alloc_filled(size_t n, unsigned char *shadow, unsigned seed)
{
    CUdeviceptr p;
    check_fill(shadow, n, seed);
    CHECK_CU(cu.alloc(&p, n));
    CHECK_CU(cu.htod(p, shadow, n));
    return p;
}

static void launch_chase(CUdeviceptr table, uint32_t key)
{
    void *params[] = {&table, &key};
    CHECK_CU(cu.launch(cu.chase, 1, 1, 1, 1, 1, 1, 0, NULL, params, NULL));
}

static void launch_xor(CUdeviceptr p, uint64_t n, uint32_t key, CUstream s)
{
    void *params[] = {&p, &n, &key};
    CHECK_CU(cu.launch(cu.xor_kernel, 1, 1, 1, 1, 1, 1, 0, s, params, NULL));
}

/* Nothing submitted for longer than VRAMSHIM_IDLE_MS: the process is idle.
 * (This waits for a time to pass, the condition under test, not for
 * another thread.) */
static void become_idle(void)
{
    CHECK_CU(cu.sync());
    usleep((IDLE_MS + 50) * 1000);
}

/* ---- 1 and 2: an idle process -------------------------------------------------- */
static void idle_process(void)
{
    size_t n = 64 * M;
    unsigned char *sa = malloc(n), *sb = malloc(48 * M);
    CUdeviceptr a = alloc_filled(n, sa, 1);
    CUdeviceptr b = alloc_filled(48 * M, sb, 2);
    CUdeviceptr table;
    CHECK_CU(cu.alloc(&table, 2 * M));
    uint64_t entry[2] = {a, n};
    CHECK_CU(cu.htod(table, entry, sizeof entry));

    for (int round = 0; round < 3; round++) {
        unsigned char probe[64];
        CHECK_CU(cu.dtoh(probe, b, sizeof probe)); /* a is the least recently touched */
        CHECK_CU(cu.dtoh(probe, table, sizeof probe));
        become_idle();
        /* 178M under 128M; 64M does not fit the 40M pin budget: a (the least
         * recently touched) goes pageable, since nothing is running */
        CUdeviceptr c; /* left unwritten: a copy into it would bring a back */
        CHECK_CU(cu.alloc(&c, n));
        CHECK_EQ_U64(stats_now("devices.0.offloaded_pageable"), n);
        unsigned mem_type = 0;
        CUdeviceptr start = 0;
        CHECK_CU(cu.attr(&mem_type, CU_POINTER_ATTRIBUTE_MEMORY_TYPE, a + M));
        CHECK_CU(cu.attr(&start, CU_POINTER_ATTRIBUTE_RANGE_START_ADDR, a + M));
        CHECK(mem_type == CU_MEMORYTYPE_DEVICE && start == a, "attributes of a pageable buffer");
        if (round == 0) /* room on the device: a comes back there */
            CHECK_CU(cu.release(c));
        uint32_t key = 0x21u + (unsigned)round;
        if (round < 2) {
            /* the kernel names only the table; it finds a through it */
            launch_chase(table, key);
            flip(sa, n, (unsigned char)key);
        } else {
            /* a 2D copy that names only b brings a back as well: 4 rows of
             * 16 bytes, 4096 apart */
            CUDA_MEMCPY2D c2;
            memset(&c2, 0, sizeof c2);
            c2.srcMemoryType = CU_MEMORYTYPE_DEVICE;
            c2.srcDevice = b;
            c2.srcPitch = 4096;
            c2.dstMemoryType = CU_MEMORYTYPE_HOST;
            c2.dstHost = probe;
            c2.dstPitch = 16;
            c2.WidthInBytes = 16;
            c2.Height = 4;
            CHECK_CU(cu.copy2d(&c2));
            for (int row = 0; row < 4; row++)
                CHECK(memcmp(probe + row * 16, sb + row * 4096, 16) == 0, "b, row %d", row);
        }
        CHECK_EQ_U64(stats_now("devices.0.offloaded_pageable"), 0);
        CHECK_CU(cu.sync());
        check_device_bytes(cu.dtoh, a, sa, n, "a, back from pageable memory");
        if (round == 0) {
            CHECK_EQ_U64(stats_now("devices.0.offloaded_pinned"), 0);
        } else {
            /* no room on the device: pinned, past the 40M cap, rather than
             * let the kernel fault */
            CHECK_EQ_U64(stats_now("devices.0.offloaded_pinned"), n);
            CHECK(stats_now("pinned.offload") > 40 * M, "pinned.offload within the cap?");
            CHECK_CU(cu.release(c));
            CHECK(cu.prefetch(a) == 0, "prefetch a");
        }
    }

    /* 2: busy (a launch just now), pin budget spent: refused, not paged out.
     * An hour of idle_ms keeps "just now" true however loaded the machine. */
    CHECK(cu.set("idle_ms", "3600000") == 0, "set idle_ms");
    launch_chase(table, 0x33);
    flip(sa, n, 0x33);
    CUdeviceptr d;
    CHECK(cu.alloc(&d, n) == CUDA_ERROR_OUT_OF_MEMORY, "a busy process paged out");
    CHECK(cu.set("idle_ms", "300") == 0, "set idle_ms");
    CHECK_EQ_U64(stats_now("devices.0.offloaded_pageable"), 0);
    CHECK_CU(cu.sync());
    check_device_bytes(cu.dtoh, a, sa, n, "a after the refusal");
    check_device_bytes(cu.dtoh, b, sb, 48 * M, "b after the refusal");
    CHECK_CU(cu.release(a));
    CHECK_CU(cu.release(b));
    CHECK_CU(cu.release(table));
    CHECK_EQ_U64(stats_now("devices.0.allocated"), 0);
    CHECK_EQ_U64(stats_now("pinned.offload"), 0);
    free(sa);
    free(sb);
}

/* ---- 3: handed over ------------------------------------------------------------ */
static void handed_over(void)
{
    size_t n = 64 * M;
    unsigned char *sh = malloc(n), *so = malloc(4 * M);
    CUdeviceptr h = alloc_filled(n, sh, 5);
    CUdeviceptr other = alloc_filled(4 * M, so, 6);
    CHECK(cu.offload(h) == 0, "vramshim_offload");
    CHECK_EQ_U64(stats_now("devices.0.offloaded_pageable"), n);

    launch_xor(other, 4 * M, 0x44, NULL); /* does not name h: h stays out */
    flip(so, 4 * M, 0x44);
    CHECK_CU(cu.sync());
    CHECK_EQ_U64(stats_now("devices.0.offloaded_pageable"), n);
    check_device_bytes(cu.dtoh, other, so, 4 * M, "other");

    launch_xor(h, n, 0x55, NULL); /* names h: h comes back first */
    flip(sh, n, 0x55);
    CHECK_EQ_U64(stats_now("devices.0.offloaded_pageable"), 0);
    check_device_bytes(cu.dtoh, h, sh, n, "h after a kernel named it");

    CHECK(cu.offload(h) == 0, "vramshim_offload again");
    CHECK_EQ_U64(stats_now("devices.0.offloaded_pageable"), n);
    /* its address is unmapped; the program still sees its allocation */
    unsigned mem_type = 0;
    CUdeviceptr start = 0;
    size_t size = 0;
    int ordinal = -1;
    CUpointer_attribute which[] = {CU_POINTER_ATTRIBUTE_MEMORY_TYPE,
                                   CU_POINTER_ATTRIBUTE_RANGE_START_ADDR,
                                   CU_POINTER_ATTRIBUTE_RANGE_SIZE,
                                   CU_POINTER_ATTRIBUTE_DEVICE_ORDINAL};
    void *answers[] = {&mem_type, &start, &size, &ordinal};
    CHECK_CU(cu.attrs(4, which, answers, h + 3 * M));
    CHECK(mem_type == CU_MEMORYTYPE_DEVICE && start == h && size == n && ordinal == 0,
          "cuPointerGetAttributes on a pageable buffer: %u %llx %zu %d", mem_type,
          (unsigned long long)start, size, ordinal);
    /* a 16-bit memset of part of it is a touch: it comes back first */
    CHECK_CU(cu.set16(h + 2 * M, 0xbeef, 1024));
    for (size_t i = 0; i < 1024; i++) {
        sh[2 * M + 2 * i] = 0xef;
        sh[2 * M + 2 * i + 1] = 0xbe;
    }
    CHECK_EQ_U64(stats_now("devices.0.offloaded_pageable"), 0);
    check_device_bytes(cu.dtoh, h, sh, n, "h after a 16-bit memset");
    CHECK(cu.offload(h) == 0, "vramshim_offload once more");
    CHECK(cu.prefetch(h) == 0, "vramshim_prefetch");
    CHECK_EQ_U64(stats_now("devices.0.offloaded_pageable"), 0);
    check_device_bytes(cu.dtoh, h, sh, n, "h after a prefetch");

    /* a graph may reach anything: even a handed-over buffer comes back */
    CHECK(cu.offload(h) == 0, "vramshim_offload a third time");
    CUresult (*graph_create)(CUgraph *, unsigned) = check_sym(cu.lib, "cuGraphCreate");
    CUresult (*add_node)(CUgraphNode *, CUgraph, const CUgraphNode *, size_t,
                         const CUDA_KERNEL_NODE_PARAMS *) =
        check_sym(cu.lib, "cuGraphAddKernelNode_v2");
    CUresult (*instantiate)(CUgraphExec *, CUgraph, unsigned long long) =
        check_sym(cu.lib, "cuGraphInstantiateWithFlags");
    CUresult (*graph_launch)(CUgraphExec, CUstream) = check_sym(cu.lib, "cuGraphLaunch");
    CUgraph g;
    CUgraphExec ge;
    uint64_t bytes = n;
    uint32_t key = 0x66;
    void *params[] = {&h, &bytes, &key};
    CUDA_KERNEL_NODE_PARAMS kp;
    memset(&kp, 0, sizeof kp);
    kp.func = cu.xor_kernel;
    kp.gridDimX = kp.gridDimY = kp.gridDimZ = 1;
    kp.blockDimX = kp.blockDimY = kp.blockDimZ = 1;
    kp.kernelParams = params;
    CHECK_CU(graph_create(&g, 0));
    CHECK_CU(add_node(NULL, g, NULL, 0, &kp));
    CHECK_CU(instantiate(&ge, g, 0));
    CHECK_CU(graph_launch(ge, NULL));
    flip(sh, n, 0x66);
    CHECK_EQ_U64(stats_now("devices.0.offloaded_pageable"), 0);
    check_device_bytes(cu.dtoh, h, sh, n, "h after a graph launch");
    CHECK_CU(cu.release(h));
    CHECK_CU(cu.release(other));
    free(sh);
    free(so);
}

/* ---- 4: vramshim's pins yield to the program's ---------------------------------- */
static void pins_yield(void)
{
    size_t n = 32 * M;
    unsigned char *s = malloc(n);
    CHECK(cu.set("pin_limit", "100M") == 0, "set pin_limit");
    CUdeviceptr p = alloc_filled(n, s, 7);
    CHECK(cu.offload(p) == 0, "offload");
    CHECK_EQ_U64(stats_now("devices.0.offloaded_pinned"), n);
    /* 32M offloaded + staging, 80M more asked for: over 100M unless
     * vramshim gives its own pins up; the device has room for p */
    void *mine = NULL;
    CHECK_CU(cu.host_alloc(&mine, 80 * M, 0));
    memset(mine, 0x77, 80 * M);
    CHECK_EQ_U64(stats_now("pinned.app"), 80 * M);
    CHECK_EQ_U64(stats_now("devices.0.offloaded_pinned"), 0);
    CHECK(stats_now("pinned.app") + stats_now("pinned.offload") + stats_now("pinned.staging") <= 100 * M,
          "pinned memory over the cap");
    check_device_bytes(cu.dtoh, p, s, n, "p after its pins yielded");
    CHECK_CU(cu.host_free(mine));
    CHECK_CU(cu.release(p));
    CHECK(cu.set("pin_limit", "40M") == 0, "set pin_limit");
    free(s);
}

/* ---- 5: randomized, handed-over buffers under a small pin budget ----------------- */
#define THREADS 4
#define OPS_PER_THREAD check_ops(5000)
#define SLOTS 4
#define PHASE_OPS 1000 /* the threads meet and vramshim's books are checked */

static _Atomic unsigned long ops_done;
static uint64_t run_seed;

static void *random_ops(void *arg)
{
    uint64_t seed = run_seed ^ 0x2545f4914f6cdd1dULL * ((uintptr_t)arg + 1);
    CHECK_CU(cu.set_ctx(cu.ctx));
    CUstream s;
    CHECK_CU(cu.stream_create(&s, 0));
    CUdeviceptr p[SLOTS];
    size_t n[SLOTS];
    unsigned char *shadow[SLOTS], tmp[4096];
    for (int i = 0; i < SLOTS; i++) {
        n[i] = (2 + check_rnd(&seed) % 3) * M;
        shadow[i] = malloc(n[i]);
        p[i] = alloc_filled(n[i], shadow[i], (unsigned)i);
        hostile_account((int64_t)n[i]);
    }
    for (int op = 0; op < OPS_PER_THREAD; op++) {
        if (op && op % PHASE_OPS == 0) {
            CHECK_CU(cu.stream_sync(s));
            hostile_phase(op);
            for (int k = 0; k < SLOTS; k++)
                check_device_bytes(cu.dtoh, p[k], shadow[k], n[k], "a whole buffer after a phase");
        }
        int i = (int)(check_rnd(&seed) % SLOTS);
        unsigned kind = (unsigned)(check_rnd(&seed) % 100);
        if (kind < 2) { /* give it to the freer, and take a new one */
            CHECK_CU(cu.stream_sync(s));
            hostile_give(p[i], n[i], shadow[i]);
            n[i] = (2 + check_rnd(&seed) % 3) * M;
            shadow[i] = malloc(n[i]);
            p[i] = alloc_filled(n[i], shadow[i], (unsigned)op);
            hostile_account((int64_t)n[i]);
        } else if (kind < 6) { /* work for the hostile threads */
            static const enum hostile_kind kinds[] = {HOSTILE_CAPTURE, HOSTILE_CALLBACK,
                                                      HOSTILE_CALLBACK};
            if (kind == 2 && check_rnd(&seed) % 4 == 0)
                hostile_ticket(HOSTILE_REQUEST);
            else if (kind != 2)
                hostile_ticket(kinds[kind - 3]);
        } else if (kind < 25) { /* hand it over (a kernel may still be running on it) */
            int rc = cu.offload(p[i]);
            CHECK(rc == 0 || rc == -ENOMEM, "offload: %d", rc);
        } else if (kind < 35) {
            int rc = cu.prefetch(p[i]);
            CHECK(rc == 0 || rc == -ENOMEM, "prefetch: %d", rc);
        } else if (kind < 60) { /* kernel naming it */
            size_t len = 1 + check_rnd(&seed) % (64 * 1024), off = check_rnd(&seed) % (n[i] - len);
            uint32_t key = (uint32_t)(check_rnd(&seed) % 255 + 1);
            launch_xor(p[i] + off, len, key, s);
            flip(shadow[i] + off, len, (unsigned char)key);
        } else if (kind < 80) { /* write */
            size_t len = 1 + check_rnd(&seed) % sizeof tmp, off = check_rnd(&seed) % (n[i] - len);
            for (size_t k = 0; k < len; k++)
                tmp[k] = (unsigned char)check_rnd(&seed);
            CHECK_CU(cu.stream_sync(s));
            CHECK_CU(cu.htod(p[i] + off, tmp, len));
            memcpy(shadow[i] + off, tmp, len);
        } else { /* read */
            size_t len = 1 + check_rnd(&seed) % sizeof tmp, off = check_rnd(&seed) % (n[i] - len);
            CHECK_CU(cu.stream_sync(s));
            CHECK_CU(cu.dtoh(tmp, p[i] + off, len));
            CHECK(memcmp(tmp, shadow[i] + off, len) == 0, "read of %zu at %zu", len, off);
        }
        ops_done++;
    }
    CHECK_CU(cu.stream_sync(s));
    for (int i = 0; i < SLOTS; i++) {
        check_device_bytes(cu.dtoh, p[i], shadow[i], n[i], "at the end");
        CHECK_CU(cu.release(p[i]));
        hostile_account(-(int64_t)n[i]);
        free(shadow[i]);
    }
    return NULL;
}

static void randomized(void)
{
    CHECK(cu.set("pin_limit", "36M") == 0, "set pin_limit");
    run_seed = scenario_seed(0x7061676561626c65);
    struct hostile_setup h = {.lib = cu.lib, .ctx = cu.ctx, .xor_kernel = cu.xor_kernel,
                              .run_threads = THREADS, .seed = run_seed};
    hostile_run(&h, random_ops);
    check_invariants("after the randomized run");
    json_t *st = stats_get();
    printf("randomized: %lu operations, %llu evictions, %llu restores, 0 mismatches\n",
           (unsigned long)ops_done, (unsigned long long)stats_u64(st, "counters.evictions"),
           (unsigned long long)stats_u64(st, "counters.restores"));
    CHECK_EQ_U64(ops_done, THREADS * OPS_PER_THREAD);
    CHECK_EQ_U64(stats_u64(st, "devices.0.allocated"), 0);
    CHECK_EQ_U64(stats_u64(st, "devices.0.offloaded_pageable"), 0);
    json_decref(st);
}

int main(int argc, char **argv)
{
    const char *env[] = {"FAKECUDA_MEM=1G", "VRAMSHIM_VRAM_LIMIT=128M", "VRAMSHIM_PIN_LIMIT=40M",
                         "VRAMSHIM_IDLE_MS=300", "VRAMSHIM_OFFLOAD=auto", "VRAMSHIM_LOG=error",
                         NULL};
    check_reexec_env(argv, env);
    open_driver();
    idle_process();
    check_invariants("after the idle process");
    handed_over();
    check_invariants("after the handed-over buffers");
    pins_yield();
    check_invariants("after pins yielded");
    randomized();
    printf("pageable: ok\n");
    return 0;
}
