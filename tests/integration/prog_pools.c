/*
 * prog_pools: stream-ordered memory pools and graph memory count by what
 * the driver keeps in reserve for them (issue 12, holes 3 and 4), under a
 * 64 MiB limit per device and a 256 MiB pin limit, on two devices.
 *
 *   - a pool with a release threshold keeps its memory after the frees and
 *     a synchronise: the charge and cuMemGetInfo say so, and the slice
 *     cannot be exceeded while the pool hands its reserve out again;
 *   - an allocation that does not fit next to an unused reserve trims the
 *     pool first, before any buffer is evicted (an idle buffer stays
 *     resident) or the call refused;
 *   - a reserve's growth is admitted in whole granules;
 *   - cuMemAllocFromPoolAsync on a pool of device 1 is charged to device 1,
 *     on a host pool to the pin limit;
 *   - graph memory nodes are charged when the graph is launched and given
 *     back at cuDeviceGraphMemTrim; cuMemAllocAsync inside a stream capture
 *     is neither charged nor recorded at capture time;
 *   - a graph's memory is admitted before the launch or upload that maps
 *     it: refused past the limit, making room by offloading an idle buffer
 *     where that lets it fit, nothing admitted again for a bound graph.
 * At every quiet point what vramshim charges a device equals what the test
 * driver says the process holds there, and vramshim's own books balance.
 */
#include "check.h"

#include <stdlib.h>
#include <string.h>

#define M (1ULL << 20)
#define LIMIT (64 * M)

static struct {
    CUresult (*alloc)(CUdeviceptr *, size_t);
    CUresult (*mem_free)(CUdeviceptr);
    CUresult (*async)(CUdeviceptr *, size_t, CUstream);
    CUresult (*from_pool)(CUdeviceptr *, size_t, CUmemoryPool, CUstream);
    CUresult (*free_async)(CUdeviceptr, CUstream);
    CUresult (*sync)(CUstream);
    CUresult (*info)(size_t *, size_t *);
    CUresult (*default_pool)(CUmemoryPool *, CUdevice);
    CUresult (*pool_create)(CUmemoryPool *, const CUmemPoolProps *);
    CUresult (*pool_destroy)(CUmemoryPool);
    CUresult (*set_attr)(CUmemoryPool, CUmemPool_attribute, void *);
    CUresult (*get_attr)(CUmemoryPool, CUmemPool_attribute, void *);
    CUresult (*host_alloc)(void **, size_t, unsigned);
    CUresult (*free_host)(void *);
    CUresult (*htod)(CUdeviceptr, const void *, size_t);
    CUresult (*dtoh)(void *, CUdeviceptr, size_t);
    CUresult (*retain)(CUcontext *, CUdevice);
    CUresult (*set_ctx)(CUcontext);
    CUresult (*stream_create)(CUstream *, unsigned);
    CUresult (*begin_capture)(CUstream, CUstreamCaptureMode);
    CUresult (*end_capture)(CUstream, CUgraph *);
    CUresult (*graph_create)(CUgraph *, unsigned);
    CUresult (*add_alloc_node)(CUgraphNode *, CUgraph, const CUgraphNode *, size_t,
                               CUDA_MEM_ALLOC_NODE_PARAMS *);
    CUresult (*instantiate)(CUgraphExec *, CUgraph, unsigned long long);
    CUresult (*launch)(CUgraphExec, CUstream);
    CUresult (*upload)(CUgraphExec, CUstream);
    CUresult (*instantiate_params)(CUgraphExec *, CUgraph, CUDA_GRAPH_INSTANTIATE_PARAMS *);
    CUresult (*instantiate_v2)(CUgraphExec *, CUgraph, CUgraphNode *, char *, size_t);
    CUresult (*exec_destroy)(CUgraphExec);
    CUresult (*graph_destroy)(CUgraph);
    CUresult (*graph_trim)(CUdevice);
    unsigned long long (*fk_used)(int);
} cu;

static unsigned long long base_used[2];
static CUcontext ctx[2];

static void on_device(int dev) { CHECK_CU(cu.set_ctx(ctx[dev])); }

static uint64_t free_now(void)
{
    size_t f, t;
    CHECK_CU(cu.info(&f, &t));
    CHECK_EQ_U64(t, LIMIT);
    return f;
}

/* What vramshim charges device dev (its slice less what it reports free)
 * equals what the test driver says the process holds there. */
static void check_books(int dev, const char *where)
{
    on_device(dev);
    uint64_t charged = LIMIT - free_now();
    uint64_t held = cu.fk_used(dev) - base_used[dev];
    CHECK(charged == held, "%s: device %d: vramshim charges %llu, the driver holds %llu", where,
          dev, (unsigned long long)charged, (unsigned long long)held);
    CHECK(held <= LIMIT, "%s: device %d holds %llu, past the limit", where, dev,
          (unsigned long long)held);
    check_invariants(where);
    on_device(0);
}

static uint64_t reserved(CUmemoryPool pool)
{
    cuuint64_t v;
    CHECK_CU(cu.get_attr(pool, CU_MEMPOOL_ATTR_RESERVED_MEM_CURRENT, &v));
    return v;
}

static void release_threshold(CUmemoryPool pool, cuuint64_t bytes)
{
    CHECK_CU(cu.set_attr(pool, CU_MEMPOOL_ATTR_RELEASE_THRESHOLD, &bytes));
}

/* A pool that keeps what it reserved counts it, after the frees too. */
static void threshold_keeps(CUmemoryPool pool)
{
    release_threshold(pool, ~0ULL);
    CUdeviceptr a, b;
    CHECK_CU(cu.async(&a, 24 * M, NULL));
    CHECK_CU(cu.async(&b, 16 * M, NULL));
    CHECK_CU(cu.free_async(a, NULL));
    CHECK_CU(cu.free_async(b, NULL));
    CHECK_CU(cu.sync(NULL));
    CHECK_EQ_U64(reserved(pool), 40 * M);
    CHECK_EQ_U64(free_now(), LIMIT - 40 * M);
    CHECK_EQ_U64(stats_now("devices.0.pools"), 40 * M);
    CHECK_EQ_U64(stats_now("devices.0.allocated"), 40 * M); /* the reserve is held memory */
    check_books(0, "a pool keeping 40 MiB after its frees");

    /* a limit lowered at run time below what the pool keeps trims it */
    int (*set)(const char *, const char *) = check_api("vramshim_set");
    CHECK(set("vram_limit", "32M") == 0, "lower the limit");
    CHECK_EQ_U64(reserved(pool), 0);
    CHECK(set("vram_limit", "64M") == 0, "the limit back");
    check_books(0, "a lowered limit trimmed the pool");
    CUdeviceptr k;
    CHECK_CU(cu.async(&k, 40 * M, NULL));
    CHECK_CU(cu.free_async(k, NULL));
    CHECK_CU(cu.sync(NULL));

    /* handing the reserve out again takes nothing more; past it, refused */
    CHECK_CU(cu.async(&a, 40 * M, NULL));
    CHECK_EQ_U64(free_now(), LIMIT - 40 * M);
    CUdeviceptr c;
    CHECK(cu.alloc(&c, 25 * M) == CUDA_ERROR_OUT_OF_MEMORY, "cuMemAlloc past the slice");
    CHECK(cu.async(&c, 25 * M, NULL) == CUDA_ERROR_OUT_OF_MEMORY, "cuMemAllocAsync past it");
    CHECK_CU(cu.async(&c, 24 * M, NULL));
    CHECK_EQ_U64(free_now(), 0);
    check_books(0, "the slice filled from the pool");
    CHECK_CU(cu.free_async(a, NULL));
    CHECK_CU(cu.free_async(c, NULL));
    CHECK_CU(cu.sync(NULL));
    CHECK_EQ_U64(free_now(), 0);
}

/* An unused reserve goes before anyone's buffer: the idle buffer stays. */
static void trim_before_evict(CUmemoryPool pool)
{
    release_threshold(pool, ~0ULL);
    CUdeviceptr all;
    CHECK_CU(cu.async(&all, 64 * M, NULL));
    CHECK_CU(cu.free_async(all, NULL));
    CHECK_CU(cu.sync(NULL));
    CHECK_EQ_U64(reserved(pool), 64 * M);
    /* from 64 MiB of reserve, in use: none; cuMemAlloc trims it */
    CUdeviceptr idle;
    CHECK_CU(cu.alloc(&idle, 32 * M));
    CHECK_EQ_U64(reserved(pool), 0);
    static unsigned char want[4096], got[4096];
    check_fill(want, sizeof want, 7);
    CHECK_CU(cu.htod(idle, want, sizeof want));
    /* 24 MiB reserved and unused again, then 16 MiB that does not fit */
    CUdeviceptr r;
    CHECK_CU(cu.async(&r, 24 * M, NULL));
    CHECK_CU(cu.free_async(r, NULL));
    CHECK_CU(cu.sync(NULL));
    CHECK_EQ_U64(reserved(pool), 24 * M);
    uint64_t evictions = stats_now("counters.evictions");
    CUdeviceptr more;
    CHECK_CU(cu.alloc(&more, 16 * M));
    CHECK_EQ_U64(reserved(pool), 0);
    CHECK_EQ_U64(stats_now("counters.evictions"), evictions);
    CHECK_EQ_U64(stats_now("devices.0.offloaded_pinned") + stats_now("devices.0.offloaded_pageable"), 0);
    CHECK_CU(cu.dtoh(got, idle, sizeof got));
    CHECK(memcmp(got, want, sizeof got) == 0, "the idle buffer's bytes");
    check_books(0, "trimmed before evicting");
    CHECK_CU(cu.mem_free(idle));
    CHECK_CU(cu.mem_free(more));
    release_threshold(pool, 0);
    CHECK_CU(cu.sync(NULL));
    check_books(0, "back to nothing");
}

/* A pool grows by whole granules (2 MiB here): an odd-sized block that
 * needs the reserve to grow is admitted for the granule it takes, not for
 * its own size, or the reserve passes the limit. */
static void growth_in_granules(CUmemoryPool pool)
{
    release_threshold(pool, 0);
    CUdeviceptr one, odd;
    CHECK_CU(cu.alloc(&one, 1 * M));
    CUresult rc = cu.async(&odd, 63 * M, NULL); /* takes 64 MiB of reserve */
    CHECK(rc == CUDA_SUCCESS || rc == CUDA_ERROR_OUT_OF_MEMORY, "63 MiB from the pool: %d",
          (int)rc);
    if (rc == CUDA_SUCCESS)
        CHECK_CU(cu.sync(NULL));
    check_books(0, "a 63 MiB block next to 1 MiB under 64 MiB");
    if (rc == CUDA_SUCCESS)
        CHECK_CU(cu.free_async(odd, NULL));
    CHECK_CU(cu.mem_free(one));
    CHECK_CU(cu.sync(NULL));
    check_books(0, "the odd block gone");
}

/* A pool's reserve belongs to its own location. */
static void pools_elsewhere(void)
{
    CUmemPoolProps props;
    memset(&props, 0, sizeof props);
    props.allocType = CU_MEM_ALLOCATION_TYPE_PINNED;
    props.location.type = CU_MEM_LOCATION_TYPE_DEVICE;
    props.location.id = 1;
    CUmemoryPool on1, host;
    CHECK_CU(cu.pool_create(&on1, &props));
    props.location.type = CU_MEM_LOCATION_TYPE_HOST;
    props.location.id = 0;
    CHECK_CU(cu.pool_create(&host, &props));

    CUdeviceptr p1, ph;
    CHECK_CU(cu.from_pool(&p1, 20 * M, on1, NULL)); /* device 0 is current */
    CHECK_EQ_U64(free_now(), LIMIT);
    check_books(1, "a pool of device 1 grew");
    check_books(0, "device 0 after a pool of device 1 grew");
    CHECK_EQ_U64(stats_now("devices.1.pools"), 20 * M);

    CHECK_CU(cu.from_pool(&ph, 200 * M, host, NULL));
    CHECK_EQ_U64(free_now(), LIMIT);
    void *h;
    CHECK(cu.host_alloc(&h, 100 * M, 0) == CUDA_ERROR_OUT_OF_MEMORY,
          "a host pool's reserve counts against the pin limit");
    CHECK_EQ_U64(stats_now("pinned.pools"), 200 * M);
    CHECK_CU(cu.host_alloc(&h, 50 * M, 0));
    CHECK_CU(cu.free_host(h));
    check_books(0, "a host pool grew");

    CHECK_CU(cu.free_async(p1, NULL));
    CHECK_CU(cu.free_async(ph, NULL));
    CHECK_CU(cu.sync(NULL));
    CHECK_EQ_U64(stats_now("pinned.pools"), 0);
    CHECK_CU(cu.pool_destroy(on1));
    CHECK_CU(cu.pool_destroy(host));
    check_books(1, "pools of device 1 and the host gone");
}

/* Graph memory: charged when a graph runs, given back at the trim. */
static void graph_memory(void)
{
    CUgraph g;
    CHECK_CU(cu.graph_create(&g, 0));
    CUDA_MEM_ALLOC_NODE_PARAMS p;
    memset(&p, 0, sizeof p);
    p.poolProps.allocType = CU_MEM_ALLOCATION_TYPE_PINNED;
    p.poolProps.location.type = CU_MEM_LOCATION_TYPE_DEVICE;
    p.poolProps.location.id = 0;
    p.bytesize = 24 * M;
    CUgraphNode node;
    CHECK_CU(cu.add_alloc_node(&node, g, NULL, 0, &p));
    CUgraphExec exec;
    CHECK_CU(cu.instantiate(&exec, g, 0));
    CHECK_EQ_U64(free_now(), LIMIT);
    CHECK_CU(cu.launch(exec, NULL));
    CHECK_EQ_U64(free_now(), LIMIT - 24 * M);
    CHECK_EQ_U64(stats_now("devices.0.graph_memory"), 24 * M);
    CUdeviceptr big;
    CHECK(cu.alloc(&big, 41 * M) == CUDA_ERROR_OUT_OF_MEMORY,
          "graph memory in use leaves 40 MiB");
    check_books(0, "a graph's memory in use");
    CHECK_CU(cu.sync(NULL));
    CHECK_CU(cu.exec_destroy(exec));
    CHECK_CU(cu.graph_destroy(g));
    CHECK_EQ_U64(free_now(), LIMIT - 24 * M); /* cached for graphs until a trim */
    CHECK_CU(cu.graph_trim(0));
    CHECK_EQ_U64(stats_now("devices.0.graph_memory"), 0);
    CHECK_EQ_U64(free_now(), LIMIT);
    check_books(0, "graph memory trimmed");
}

/* A graph of one allocation node of `bytes` on device 0, instantiated. */
static CUgraphExec graph_of(size_t bytes, CUgraph *g)
{
    CHECK_CU(cu.graph_create(g, 0));
    CUDA_MEM_ALLOC_NODE_PARAMS p;
    memset(&p, 0, sizeof p);
    p.poolProps.allocType = CU_MEM_ALLOCATION_TYPE_PINNED;
    p.poolProps.location.type = CU_MEM_LOCATION_TYPE_DEVICE;
    p.bytesize = bytes;
    CUgraphNode node;
    CHECK_CU(cu.add_alloc_node(&node, *g, NULL, 0, &p));
    CUgraphExec exec;
    CHECK_CU(cu.instantiate(&exec, *g, 0));
    return exec;
}

/* Graph memory is admitted before the launch or upload that maps it, like
 * any allocation: a graph that cannot fit is refused with
 * CUDA_ERROR_OUT_OF_MEMORY, one that fits once an idle buffer is offloaded
 * runs with that buffer's bytes intact, and the driver's count never
 * passes the limit. A graph already bound runs again without admitting
 * anything, after a trim too. */
static void graph_admitted(void)
{
    CUgraph too_big_g, fits_g, upload_g;
    CUgraphExec too_big = graph_of(72 * M, &too_big_g);
    CHECK(cu.launch(too_big, NULL) == CUDA_ERROR_OUT_OF_MEMORY,
          "a graph needing 72 MiB under a 64 MiB limit is refused");
    CHECK(cu.upload(too_big, NULL) == CUDA_ERROR_OUT_OF_MEMORY,
          "its upload (which maps the memory as a launch does) too");
    CUDA_GRAPH_INSTANTIATE_PARAMS ip = {.flags = CUDA_GRAPH_INSTANTIATE_FLAG_UPLOAD};
    CUgraphExec uploaded = (CUgraphExec)1;
    CHECK(cu.instantiate_params(&uploaded, too_big_g, &ip) == CUDA_ERROR_OUT_OF_MEMORY &&
              uploaded == NULL && ip.result_out == CUDA_GRAPH_INSTANTIATE_ERROR,
          "and its instantiation with an upload");
    check_books(0, "an instantiation with an upload refused");
    /* an exec made by CUDA 11's instantiation is admitted the same way */
    CUgraphExec old_exec;
    CHECK_CU(cu.instantiate_v2(&old_exec, too_big_g, NULL, NULL, 0));
    CHECK(cu.launch(old_exec, NULL) == CUDA_ERROR_OUT_OF_MEMORY,
          "a graph instantiated by cuGraphInstantiate_v2 is refused as well");
    CHECK_CU(cu.exec_destroy(old_exec));
    check_books(0, "an old-style exec refused");

    /* nodes on both devices, device 1's past its limit: refused, and what
     * was admitted on device 0 first is given back */
    CUgraph both_g;
    CHECK_CU(cu.graph_create(&both_g, 0));
    for (int d = 0; d < 2; d++) {
        CUDA_MEM_ALLOC_NODE_PARAMS np;
        memset(&np, 0, sizeof np);
        np.poolProps.allocType = CU_MEM_ALLOCATION_TYPE_PINNED;
        np.poolProps.location.type = CU_MEM_LOCATION_TYPE_DEVICE;
        np.poolProps.location.id = d;
        np.bytesize = d ? 72 * M : 8 * M;
        CUgraphNode node;
        CHECK_CU(cu.add_alloc_node(&node, both_g, NULL, 0, &np));
    }
    CUgraphExec both;
    CHECK_CU(cu.instantiate(&both, both_g, 0));
    CHECK(cu.launch(both, NULL) == CUDA_ERROR_OUT_OF_MEMORY, "a graph past device 1's limit");
    CHECK_EQ_U64(free_now(), LIMIT);
    check_books(0, "a two-device graph refused");
    check_books(1, "a two-device graph refused, device 1");
    CHECK_CU(cu.exec_destroy(both));
    CHECK_CU(cu.graph_destroy(both_g));
    check_books(0, "a graph past the limit refused");

    CUdeviceptr idle;
    CHECK_CU(cu.alloc(&idle, 40 * M));
    static unsigned char want[1 << 16], got[1 << 16];
    check_fill(want, sizeof want, 12);
    CHECK_CU(cu.htod(idle, want, sizeof want));
    CHECK_CU(cu.htod(idle + 40 * M - sizeof want, want, sizeof want));
    CUgraphExec fits = graph_of(40 * M, &fits_g);
    uint64_t evictions = stats_now("counters.evictions");
    CHECK_CU(cu.launch(fits, NULL));
    check_books(0, "a graph launched next to an idle buffer");
    CHECK(stats_now("counters.evictions") > evictions, "the idle buffer made room for the graph");
    CHECK_EQ_U64(stats_now("devices.0.graph_memory"), 40 * M);
    CHECK_CU(cu.sync(NULL));

    /* bound: launched again with the slice full, nothing is admitted */
    CUdeviceptr rest;
    CHECK_CU(cu.alloc(&rest, LIMIT - 40 * M - 2 * M));
    evictions = stats_now("counters.evictions");
    CHECK_CU(cu.launch(fits, NULL));
    CHECK_CU(cu.graph_trim(0)); /* nothing unused: the graph stays bound */
    CHECK_CU(cu.launch(fits, NULL));
    CHECK_CU(cu.sync(NULL));
    CHECK_EQ_U64(stats_now("counters.evictions"), evictions);
    check_books(0, "a bound graph launched again");

    CHECK_CU(cu.mem_free(rest));
    CUgraphExec upload = graph_of(4 * M, &upload_g);
    CHECK_CU(cu.upload(upload, NULL));
    CHECK_EQ_U64(stats_now("devices.0.graph_memory"), 44 * M);
    check_books(0, "an upload that fits");
    CHECK_CU(cu.exec_destroy(upload)); /* one exec of a graph at a time */
    ip = (CUDA_GRAPH_INSTANTIATE_PARAMS){.flags = CUDA_GRAPH_INSTANTIATE_FLAG_UPLOAD};
    CHECK_CU(cu.instantiate_params(&upload, upload_g, &ip));
    CHECK(ip.result_out == CUDA_GRAPH_INSTANTIATE_SUCCESS, "instantiated and uploaded");
    CHECK_EQ_U64(stats_now("devices.0.graph_memory"), 44 * M); /* the 4 MiB came back for it */
    check_books(0, "an instantiation with an upload that fits");

    CHECK_CU(cu.dtoh(got, idle, sizeof got));
    CHECK(memcmp(got, want, sizeof got) == 0, "the offloaded buffer's first bytes");
    CHECK_CU(cu.dtoh(got, idle + 40 * M - sizeof got, sizeof got));
    CHECK(memcmp(got, want, sizeof got) == 0, "the offloaded buffer's last bytes");
    CHECK_CU(cu.mem_free(idle));
    CUgraphExec execs[] = {too_big, fits, upload};
    CUgraph graphs[] = {too_big_g, fits_g, upload_g};
    for (int i = 0; i < 3; i++) {
        CHECK_CU(cu.exec_destroy(execs[i]));
        CHECK_CU(cu.graph_destroy(graphs[i]));
    }
    CHECK_CU(cu.graph_trim(0));
    CHECK_EQ_U64(free_now(), LIMIT);
    check_books(0, "the graphs gone");
}

/* cudaMallocAsync inside a capture is the graph's memory, not the call's. */
static void captured_alloc(void)
{
    CUstream s;
    CHECK_CU(cu.stream_create(&s, CU_STREAM_NON_BLOCKING));
    uint64_t allocs = stats_now("counters.allocs"), allocated = stats_now("devices.0.allocated");
    CHECK_CU(cu.begin_capture(s, CU_STREAM_CAPTURE_MODE_RELAXED));
    CUdeviceptr p;
    CHECK_CU(cu.async(&p, 8 * M, s));
    CHECK_EQ_U64(free_now(), LIMIT);
    CHECK_EQ_U64(stats_now("counters.allocs"), allocs);
    CHECK_EQ_U64(stats_now("devices.0.allocated"), allocated);
    CHECK_CU(cu.free_async(p, s));
    CUgraph g;
    CHECK_CU(cu.end_capture(s, &g));
    CHECK_EQ_U64(free_now(), LIMIT);
    CUgraphExec exec;
    CHECK_CU(cu.instantiate(&exec, g, 0));
    CHECK_CU(cu.launch(exec, s));
    CHECK_CU(cu.sync(s));
    CHECK_EQ_U64(free_now(), LIMIT - 8 * M);
    CHECK_EQ_U64(stats_now("devices.0.graph_memory"), 8 * M);
    check_books(0, "a captured graph's memory");
    CHECK_CU(cu.exec_destroy(exec));
    CHECK_CU(cu.graph_destroy(g));
    CHECK_CU(cu.graph_trim(0));
    CHECK_EQ_U64(free_now(), LIMIT);
    check_books(0, "the captured graph gone");
}

int main(int argc, char **argv)
{
    (void)argc;
    const char *env[] = {"VRAMSHIM_VRAM_LIMIT=64M", "VRAMSHIM_PIN_LIMIT=256M",
                         "VRAMSHIM_FAST_COPY_MIN=0", "FAKECUDA_DEVICES=2", "FAKECUDA_MEM=1G",
                         NULL};
    check_reexec_env(argv, env);
    void *lib = check_libcuda();
#define SYM(field, name) cu.field = check_sym(lib, name)
    SYM(alloc, "cuMemAlloc_v2");
    SYM(mem_free, "cuMemFree_v2");
    SYM(async, "cuMemAllocAsync");
    SYM(from_pool, "cuMemAllocFromPoolAsync");
    SYM(free_async, "cuMemFreeAsync");
    SYM(sync, "cuStreamSynchronize");
    SYM(info, "cuMemGetInfo_v2");
    SYM(default_pool, "cuDeviceGetDefaultMemPool");
    SYM(pool_create, "cuMemPoolCreate");
    SYM(pool_destroy, "cuMemPoolDestroy");
    SYM(set_attr, "cuMemPoolSetAttribute");
    SYM(get_attr, "cuMemPoolGetAttribute");
    SYM(host_alloc, "cuMemHostAlloc");
    SYM(free_host, "cuMemFreeHost");
    SYM(htod, "cuMemcpyHtoD_v2");
    SYM(dtoh, "cuMemcpyDtoH_v2");
    SYM(retain, "cuDevicePrimaryCtxRetain");
    SYM(set_ctx, "cuCtxSetCurrent");
    SYM(stream_create, "cuStreamCreate");
    SYM(begin_capture, "cuStreamBeginCapture_v2");
    SYM(end_capture, "cuStreamEndCapture");
    SYM(graph_create, "cuGraphCreate");
    SYM(add_alloc_node, "cuGraphAddMemAllocNode");
    SYM(instantiate, "cuGraphInstantiateWithFlags");
    SYM(launch, "cuGraphLaunch");
    SYM(upload, "cuGraphUpload");
    SYM(instantiate_params, "cuGraphInstantiateWithParams");
    SYM(instantiate_v2, "cuGraphInstantiate_v2");
    SYM(exec_destroy, "cuGraphExecDestroy");
    SYM(graph_destroy, "cuGraphDestroy");
    SYM(graph_trim, "cuDeviceGraphMemTrim");
    SYM(fk_used, "fakecuda_used");
#undef SYM
    check_context(lib, 0);
    CHECK_CU(cu.retain(&ctx[1], 1));
    CHECK_CU(cu.retain(&ctx[0], 0));
    base_used[0] = cu.fk_used(0);
    base_used[1] = cu.fk_used(1);
    CUmemoryPool pool;
    CHECK_CU(cu.default_pool(&pool, 0));

    /* PROG_POOLS_ONLY=name runs one part (each starts from nothing) */
    const char *only = getenv("PROG_POOLS_ONLY");
#define PART(name, call)                                  \
    if (only == NULL || strcmp(only, name) == 0)          \
        call
    PART("threshold", threshold_keeps(pool));
    PART("trim", trim_before_evict(pool));
    PART("granules", growth_in_granules(pool));
    PART("elsewhere", pools_elsewhere());
    PART("graph", graph_memory());
    PART("capture", captured_alloc());
    PART("graph_admitted", graph_admitted());
#undef PART
    printf("prog_pools: ok\n");
    return 0;
}
