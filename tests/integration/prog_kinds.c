/*
 * prog_kinds: every kind of memory vramshim counts, mixed at random on two
 * devices, with the limits changed at run time through the control socket
 * (issue 12, "Must show"). Kinds: plain, pitched, managed, stream-ordered
 * from the default pool and from a pool of cuMemPoolCreate on each device
 * (device 0's keeps up to 32 MiB past its frees, its release threshold;
 * device 1's threshold is 0), graph memory (a graph with an allocation
 * node and a free node, instantiated and launched), CUDA arrays, VMM with
 * the early release (create, map, release at once), page-locked host
 * allocations and registrations, and module globals (overhead); the
 * contexts' own reservations are overhead too. Other steps trim a created
 * pool (cuMemPoolTrimTo) or a device's graph memory (cuDeviceGraphMemTrim).
 *
 * After every step, on each device: the test driver's own count of what
 * this process holds (fakecuda_held) equals vramshim's allocated plus
 * overhead; it never grew past the limit (an allocation that succeeded
 * left it within the limit, and no step made it grow while above one
 * lowered at run time); cuMemGetInfo's free figure is exactly what the
 * limit leaves; pinned.app equals what the program pinned and stays
 * within the pin limit. Every step either succeeds or gets
 * CUDA_ERROR_OUT_OF_MEMORY, and a plain, VMM, pinned, module or graph
 * allocation is refused exactly when it would not fit (a graph's memory
 * is admitted before its launch). At the end every byte written reads back.
 *
 * Seeded (KINDS_SEED, else the time; printed) and reproducible: the same
 * seed replays the same steps. CHECK_QUICK=1 runs a tenth of them.
 *
 * A stream-ordered free is checked twice: after cuMemFreeAsync, before the
 * stream is synchronised (a pool gives memory back only at a synchronise,
 * so the driver's count cannot move under the check), and after. Not
 * covered here (prog_pools is): a pool of the other device or the host.
 */
#define _GNU_SOURCE 1
#include "check.h"

#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#define M (1ULL << 20)
#define MAX_LIVE 96

enum kind {
    PLAIN, PITCH, MANAGED, ASYNC, POOL, GRAPH, ARRAY, VMM, HOST, REGISTERED, MODULE, NKINDS
};
static const char *kind_name[NKINDS] = {"plain", "pitch", "managed",    "async",
                                        "pool",  "graph", "array",      "vmm",
                                        "host",  "registered", "module"};

/* Device 0's created pool keeps this much past its frees. */
#define POOL0_THRESHOLD (32 * M)

struct live {
    enum kind kind;
    int dev;
    uint64_t bytes;  /* what the kind holds: device bytes, or pinned bytes */
    CUdeviceptr ptr; /* device kinds with an address */
    void *host;      /* host kinds */
    CUarray array;
    CUmodule module;
    CUgraph graph; /* GRAPH: the graph and its instance */
    CUgraphExec exec;
    size_t reserved; /* VMM: the address range */
    unsigned seed;
};

static struct {
    void *lib;
    CUcontext ctx[2];
    CUstream stream[2];
    CUmemoryPool pool[2]; /* created, one per device */
    CUmemoryPool default_pool[2];
    CUresult (*set_ctx)(CUcontext);
    CUresult (*alloc)(CUdeviceptr *, size_t);
    CUresult (*pitch)(CUdeviceptr *, size_t *, size_t, size_t, unsigned);
    CUresult (*managed)(CUdeviceptr *, size_t, unsigned);
    CUresult (*free_)(CUdeviceptr);
    CUresult (*alloc_async)(CUdeviceptr *, size_t, CUstream);
    CUresult (*alloc_pool)(CUdeviceptr *, size_t, CUmemoryPool, CUstream);
    CUresult (*free_async)(CUdeviceptr, CUstream);
    CUresult (*stream_sync)(CUstream);
    CUresult (*pool_trim)(CUmemoryPool, size_t);
    CUresult (*graph_create)(CUgraph *, unsigned);
    CUresult (*alloc_node)(CUgraphNode *, CUgraph, const CUgraphNode *, size_t,
                           CUDA_MEM_ALLOC_NODE_PARAMS *);
    CUresult (*free_node)(CUgraphNode *, CUgraph, const CUgraphNode *, size_t, CUdeviceptr);
    CUresult (*instantiate)(CUgraphExec *, CUgraph, unsigned long long);
    CUresult (*launch)(CUgraphExec, CUstream);
    CUresult (*exec_destroy)(CUgraphExec);
    CUresult (*graph_destroy)(CUgraph);
    CUresult (*graph_trim)(CUdevice);
    CUresult (*pool_attr)(CUmemoryPool, CUmemPool_attribute, void *);
    CUresult (*graph_attr)(CUdevice, CUgraphMem_attribute, void *);
    CUresult (*array_create)(CUarray *, const CUDA_ARRAY_DESCRIPTOR *);
    CUresult (*array_destroy)(CUarray);
    CUresult (*create)(CUmemGenericAllocationHandle *, size_t, const CUmemAllocationProp *,
                       unsigned long long);
    CUresult (*reserve)(CUdeviceptr *, size_t, size_t, CUdeviceptr, unsigned long long);
    CUresult (*map)(CUdeviceptr, size_t, size_t, CUmemGenericAllocationHandle,
                    unsigned long long);
    CUresult (*release)(CUmemGenericAllocationHandle);
    CUresult (*access)(CUdeviceptr, size_t, const CUmemAccessDesc *, size_t);
    CUresult (*unmap)(CUdeviceptr, size_t);
    CUresult (*addr_free)(CUdeviceptr, size_t);
    CUresult (*host_alloc)(void **, size_t, unsigned);
    CUresult (*host_free)(void *);
    CUresult (*host_register)(void *, size_t, unsigned);
    CUresult (*host_unregister)(void *);
    CUresult (*load)(CUmodule *, const void *);
    CUresult (*unload)(CUmodule);
    CUresult (*htod)(CUdeviceptr, const void *, size_t);
    CUresult (*dtoh)(void *, CUdeviceptr, size_t);
    CUresult (*info)(size_t *, size_t *);
    unsigned long long (*held)(int);
} cu;

static struct live live[MAX_LIVE];
static int n_live;
static uint64_t limit[2], pin_limit, pinned;
static char tool[512];
static int step_no;
static uint64_t rnd_state;

static uint64_t rnd(uint64_t n) { return check_rnd(&rnd_state) % n; }

static void use_device(int dev) { CHECK_CU(cu.set_ctx(cu.ctx[dev])); }

/* Bytes of the test pattern for one live entry, written where it lives. */
static void fill(struct live *l, size_t n)
{
    unsigned char *buf = malloc(n);
    check_fill(buf, n, l->seed);
    if (l->host)
        memcpy(l->host, buf, n);
    else
        CHECK_CU(cu.htod(l->ptr, buf, n));
    free(buf);
}

static void verify(struct live *l, size_t n)
{
    unsigned char *want = malloc(n);
    check_fill(want, n, l->seed);
    char what[96];
    snprintf(what, sizeof what, "%s of %llu bytes on device %d (seed of step %d)",
             kind_name[l->kind], (unsigned long long)l->bytes, l->dev, (int)l->seed);
    if (l->host)
        CHECK(memcmp(l->host, want, n) == 0, "%s: bytes changed", what);
    else
        check_device_bytes(cu.dtoh, l->ptr, want, n, what);
    free(want);
}

/* Bytes of a live entry the test writes and reads back (arrays and
 * modules hold none the test can reach by address; a graph's block is
 * freed inside the graph). */
static size_t data_bytes(const struct live *l)
{
    if (l->kind == ARRAY || l->kind == MODULE || l->kind == GRAPH)
        return 0;
    return l->bytes < 64 * 1024 ? l->bytes : 64 * 1024;
}

static void check_books(const char *what);

/* ---- one allocation of each kind ------------------------------------------ */
static CUresult make(struct live *l, enum kind k, int dev, uint64_t mib)
{
    memset(l, 0, sizeof *l);
    l->kind = k;
    l->dev = dev;
    l->seed = (unsigned)step_no;
    uint64_t size = mib * M;
    use_device(dev);
    CUresult rc = CUDA_SUCCESS;
    switch (k) {
    case PLAIN:
        rc = cu.alloc(&l->ptr, size);
        l->bytes = size;
        break;
    case PITCH: { /* rows of 1000 bytes, pitched to 1024 by the test driver */
        size_t pitch;
        rc = cu.pitch(&l->ptr, &pitch, 1000, (size_t)mib * 1024, 4);
        l->bytes = rc == CUDA_SUCCESS ? pitch * (size_t)mib * 1024 : 0;
        break;
    }
    case MANAGED:
        rc = cu.managed(&l->ptr, size, CU_MEM_ATTACH_GLOBAL);
        l->bytes = size;
        break;
    case ASYNC:
        rc = cu.alloc_async(&l->ptr, size, cu.stream[dev]);
        l->bytes = size;
        if (rc == CUDA_SUCCESS)
            CHECK_CU(cu.stream_sync(cu.stream[dev]));
        break;
    case POOL:
        rc = cu.alloc_pool(&l->ptr, size, cu.pool[dev], cu.stream[dev]);
        l->bytes = size;
        if (rc == CUDA_SUCCESS)
            CHECK_CU(cu.stream_sync(cu.stream[dev]));
        break;
    case GRAPH: { /* allocate, free, launch: the memory is the device's graph memory */
        CUDA_MEM_ALLOC_NODE_PARAMS p = {
            .poolProps = {.allocType = CU_MEM_ALLOCATION_TYPE_PINNED,
                          .location = {.type = CU_MEM_LOCATION_TYPE_DEVICE, .id = dev}},
            .bytesize = size};
        CUgraphNode alloc_node;
        CHECK_CU(cu.graph_create(&l->graph, 0));
        CHECK_CU(cu.alloc_node(&alloc_node, l->graph, NULL, 0, &p));
        CHECK_CU(cu.free_node(NULL, l->graph, &alloc_node, 1, p.dptr));
        CHECK_CU(cu.instantiate(&l->exec, l->graph, 0));
        l->bytes = size;
        rc = cu.launch(l->exec, cu.stream[dev]);
        if (rc == CUDA_SUCCESS) {
            CHECK_CU(cu.stream_sync(cu.stream[dev]));
        } else {
            CHECK_CU(cu.exec_destroy(l->exec));
            CHECK_CU(cu.graph_destroy(l->graph));
        }
        break;
    }
    case ARRAY: { /* 1 MiB rows of 4-byte texels: mib MiB */
        CUDA_ARRAY_DESCRIPTOR d = {.Width = 256 * 1024, .Height = mib,
                                   .Format = CU_AD_FORMAT_UNSIGNED_INT32, .NumChannels = 1};
        rc = cu.array_create(&l->array, &d);
        l->bytes = size;
        break;
    }
    case VMM: { /* create, map, release at once: the mapping holds it */
        size = (mib + 1) / 2 * 2 * M; /* whole 2 MiB granules */
        l->bytes = size;
        CUmemAllocationProp prop = {.type = CU_MEM_ALLOCATION_TYPE_PINNED,
                                    .location = {.type = CU_MEM_LOCATION_TYPE_DEVICE, .id = dev}};
        CUmemGenericAllocationHandle h;
        rc = cu.create(&h, size, &prop, 0);
        if (rc != CUDA_SUCCESS)
            break;
        CHECK_CU(cu.reserve(&l->ptr, size, 0, 0, 0));
        CHECK_CU(cu.map(l->ptr, size, 0, h, 0));
        CHECK_CU(cu.release(h));
        CUmemAccessDesc acc = {.location = {.type = CU_MEM_LOCATION_TYPE_DEVICE, .id = dev},
                               .flags = CU_MEM_ACCESS_FLAGS_PROT_READWRITE};
        CHECK_CU(cu.access(l->ptr, size, &acc, 1));
        l->reserved = size;
        break;
    }
    case HOST:
        rc = cu.host_alloc(&l->host, size, 0);
        l->bytes = size;
        l->dev = -1;
        break;
    case REGISTERED: {
        void *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        CHECK(p != MAP_FAILED, "mmap");
        rc = cu.host_register(p, size, 0);
        if (rc != CUDA_SUCCESS)
            munmap(p, size);
        else
            l->host = p;
        l->bytes = size;
        l->dev = -1;
        break;
    }
    case MODULE: {
        char image[64];
        snprintf(image, sizeof image, "fakecuda-module globals=%llu", (unsigned long long)size);
        rc = cu.load(&l->module, image);
        l->bytes = size;
        break;
    }
    default:
        break;
    }
    return rc;
}

static void unmake(struct live *l)
{
    if (l->dev >= 0)
        use_device(l->dev);
    size_t n = data_bytes(l);
    if (n)
        verify(l, n);
    switch (l->kind) {
    case PLAIN:
    case PITCH:
    case MANAGED:
        CHECK_CU(cu.free_(l->ptr));
        break;
    case ASYNC:
    case POOL: /* the books hold between the free and the stream reaching it */
        CHECK_CU(cu.free_async(l->ptr, cu.stream[l->dev]));
        check_books("a free on its way");
        use_device(l->dev);
        CHECK_CU(cu.stream_sync(cu.stream[l->dev]));
        break;
    case GRAPH: /* its memory stays cached for graphs until a trim */
        CHECK_CU(cu.exec_destroy(l->exec));
        CHECK_CU(cu.graph_destroy(l->graph));
        break;
    case ARRAY:
        CHECK_CU(cu.array_destroy(l->array));
        break;
    case VMM: /* the last mapping going frees the released handle */
        CHECK_CU(cu.unmap(l->ptr, l->reserved));
        CHECK_CU(cu.addr_free(l->ptr, l->reserved));
        break;
    case HOST:
        CHECK_CU(cu.host_free(l->host));
        break;
    case REGISTERED:
        CHECK_CU(cu.host_unregister(l->host));
        munmap(l->host, l->bytes);
        break;
    case MODULE:
        CHECK_CU(cu.unload(l->module));
        break;
    default:
        break;
    }
}

/* What a device's pools and graph memory keep unused, by the driver's own
 * figures: vramshim trims it (cuMemPoolTrimTo, cuDeviceGraphMemTrim) before
 * it refuses an allocation. The test driver's pools never fragment: they
 * keep their use rounded up to 2 MiB granules. */
static uint64_t spare(int dev)
{
    uint64_t total = 0;
    for (int i = 0; i < 3; i++) {
        cuuint64_t reserved, used;
        if (i < 2) {
            CUmemoryPool pool = i ? cu.pool[dev] : cu.default_pool[dev];
            CHECK_CU(cu.pool_attr(pool, CU_MEMPOOL_ATTR_RESERVED_MEM_CURRENT, &reserved));
            CHECK_CU(cu.pool_attr(pool, CU_MEMPOOL_ATTR_USED_MEM_CURRENT, &used));
        } else {
            CHECK_CU(cu.graph_attr(dev, CU_GRAPH_MEM_ATTR_RESERVED_MEM_CURRENT, &reserved));
            CHECK_CU(cu.graph_attr(dev, CU_GRAPH_MEM_ATTR_USED_MEM_CURRENT, &used));
        }
        used = (used + 2 * M - 1) / (2 * M) * (2 * M);
        total += reserved > used ? reserved - used : 0;
    }
    return total;
}

/* ---- the books ------------------------------------------------------------- */
static uint64_t held_before[2];

static void check_books(const char *what)
{
    json_t *st = stats_get();
    for (int d = 0; d < 2; d++) {
        uint64_t held = cu.held(d), alloc = 0, over = 0;
        char path[64];
        snprintf(path, sizeof path, "devices.%d.allocated", d);
        alloc = stats_u64(st, path);
        snprintf(path, sizeof path, "devices.%d.overhead", d);
        over = stats_u64(st, path);
        CHECK(held == alloc + over,
              "step %d (%s), device %d: the driver holds %llu, vramshim counts %llu allocated "
              "+ %llu overhead",
              step_no, what, d, (unsigned long long)held, (unsigned long long)alloc,
              (unsigned long long)over);
        CHECK(held <= limit[d] || held <= held_before[d],
              "step %d (%s), device %d: holds %llu, over the limit of %llu (held %llu before)",
              step_no, what, d, (unsigned long long)held, (unsigned long long)limit[d],
              (unsigned long long)held_before[d]);
        size_t f, t;
        use_device(d);
        CHECK_CU(cu.info(&f, &t));
        uint64_t room = held < limit[d] ? limit[d] - held : 0;
        CHECK(f == room, "step %d (%s), device %d: cuMemGetInfo free %zu, the limit leaves %llu",
              step_no, what, d, f, (unsigned long long)room);
        held_before[d] = held;
    }
    CHECK(stats_u64(st, "pinned.app") == pinned, "step %d (%s): pinned.app %llu, pinned %llu",
          step_no, what, (unsigned long long)stats_u64(st, "pinned.app"),
          (unsigned long long)pinned);
    json_decref(st);
    check_invariants(what);
}

/* The limits, through the control socket (the tool's `set`). */
static void set_limits(uint64_t l0, uint64_t l1, uint64_t pin)
{
    char cmd[1024], out[1024];
    snprintf(cmd, sizeof cmd, "%s set %d vram_limit=0:%lluM,1:%lluM pin_limit=%lluM 2>&1", tool,
             (int)getpid(), (unsigned long long)(l0 / M), (unsigned long long)(l1 / M),
             (unsigned long long)(pin / M));
    CHECK(check_capture(cmd, out, sizeof out) == 0, "%s: %s", cmd, out);
    limit[0] = l0;
    limit[1] = l1;
    pin_limit = pin;
}

/* `vramshim metrics` and `top --once` show the same overhead, arrays and
 * imported figures as the stats, per device. */
static void tool_figures(void)
{
    json_t *st = stats_get();
    char cmd[2048], out[8192], want[512] = "";
    size_t used = 0;
    static const char *fields[] = {"overhead", "arrays", "imported", "allocated"};
    for (int d = 0; d < 2; d++)
        for (int f = 0; f < 4; f++) {
            char path[64];
            snprintf(path, sizeof path, "devices.%d.%s", d, fields[f]);
            used += (size_t)snprintf(want + used, sizeof want - used,
                                     " vramshim_device_%s_bytes:%d=%llu", fields[f], d,
                                     (unsigned long long)stats_u64(st, path));
        }
    snprintf(cmd, sizeof cmd,
             "%s metrics | /usr/bin/python3 %s/tests/integration/parse_metrics.py --devices %d%s "
             "2>&1",
             tool, getenv("VRAMSHIM_SRC") ? getenv("VRAMSHIM_SRC") : ".", (int)getpid(), want);
    CHECK(check_capture(cmd, out, sizeof out) == 0, "%s: %s", cmd, out);
    snprintf(cmd, sizeof cmd, "%s top --once 2>&1", tool);
    CHECK(check_capture(cmd, out, sizeof out) == 0, "top --once: %s", out);
    char row[64];
    snprintf(row, sizeof row, "%-8d dev 0: overhead ", (int)getpid());
    CHECK(strstr(out, row) != NULL, "top --once shows no overhead row: %s", out);
    json_decref(st);
}

static void open_driver(void)
{
    cu.lib = check_libcuda();
    void *l = cu.lib;
    cu.set_ctx = check_sym(l, "cuCtxSetCurrent");
    cu.alloc = check_sym(l, "cuMemAlloc_v2");
    cu.pitch = check_sym(l, "cuMemAllocPitch_v2");
    cu.managed = check_sym(l, "cuMemAllocManaged");
    cu.free_ = check_sym(l, "cuMemFree_v2");
    cu.alloc_async = check_sym(l, "cuMemAllocAsync");
    cu.alloc_pool = check_sym(l, "cuMemAllocFromPoolAsync");
    cu.free_async = check_sym(l, "cuMemFreeAsync");
    cu.stream_sync = check_sym(l, "cuStreamSynchronize");
    cu.pool_trim = check_sym(l, "cuMemPoolTrimTo");
    cu.graph_create = check_sym(l, "cuGraphCreate");
    cu.alloc_node = check_sym(l, "cuGraphAddMemAllocNode");
    cu.free_node = check_sym(l, "cuGraphAddMemFreeNode");
    cu.instantiate = check_sym(l, "cuGraphInstantiateWithFlags");
    cu.launch = check_sym(l, "cuGraphLaunch");
    cu.exec_destroy = check_sym(l, "cuGraphExecDestroy");
    cu.graph_destroy = check_sym(l, "cuGraphDestroy");
    cu.graph_trim = check_sym(l, "cuDeviceGraphMemTrim");
    cu.pool_attr = check_sym(l, "cuMemPoolGetAttribute");
    cu.graph_attr = check_sym(l, "cuDeviceGetGraphMemAttribute");
    cu.array_create = check_sym(l, "cuArrayCreate_v2");
    cu.array_destroy = check_sym(l, "cuArrayDestroy");
    cu.create = check_sym(l, "cuMemCreate");
    cu.reserve = check_sym(l, "cuMemAddressReserve");
    cu.map = check_sym(l, "cuMemMap");
    cu.release = check_sym(l, "cuMemRelease");
    cu.access = check_sym(l, "cuMemSetAccess");
    cu.unmap = check_sym(l, "cuMemUnmap");
    cu.addr_free = check_sym(l, "cuMemAddressFree");
    cu.host_alloc = check_sym(l, "cuMemHostAlloc");
    cu.host_free = check_sym(l, "cuMemFreeHost");
    cu.host_register = check_sym(l, "cuMemHostRegister_v2");
    cu.host_unregister = check_sym(l, "cuMemHostUnregister");
    cu.load = check_sym(l, "cuModuleLoadData");
    cu.unload = check_sym(l, "cuModuleUnload");
    cu.htod = check_sym(l, "cuMemcpyHtoD_v2");
    cu.dtoh = check_sym(l, "cuMemcpyDtoH_v2");
    cu.info = check_sym(l, "cuMemGetInfo_v2");
    cu.held = check_sym(l, "fakecuda_held");
    CUresult (*retain)(CUcontext *, CUdevice) = check_sym(l, "cuDevicePrimaryCtxRetain");
    CUresult (*stream_create)(CUstream *, unsigned) = check_sym(l, "cuStreamCreate");
    CUresult (*default_pool)(CUmemoryPool *, CUdevice) = check_sym(l, "cuDeviceGetDefaultMemPool");
    CUresult (*pool_create)(CUmemoryPool *, const CUmemPoolProps *) =
        check_sym(l, "cuMemPoolCreate");
    CUresult (*pool_set)(CUmemoryPool, CUmemPool_attribute, void *) =
        check_sym(l, "cuMemPoolSetAttribute");
    CUresult (*init)(unsigned) = check_sym(l, "cuInit");
    CHECK_CU(init(0));
    for (int d = 0; d < 2; d++) {
        CHECK_CU(retain(&cu.ctx[d], d));
        use_device(d);
        CHECK_CU(stream_create(&cu.stream[d], 0));
        CUmemPoolProps props = {.allocType = CU_MEM_ALLOCATION_TYPE_PINNED,
                                .location = {.type = CU_MEM_LOCATION_TYPE_DEVICE, .id = d}};
        CHECK_CU(default_pool(&cu.default_pool[d], d));
        CHECK_CU(pool_create(&cu.pool[d], &props));
        cuuint64_t threshold = d == 0 ? POOL0_THRESHOLD : 0;
        CHECK_CU(pool_set(cu.pool[d], CU_MEMPOOL_ATTR_RELEASE_THRESHOLD, &threshold));
    }
}

int main(int argc, char **argv)
{
    (void)argc;
    const char *env[] = {"FAKECUDA_DEVICES=2", "FAKECUDA_MEM=2G", "FAKECUDA_CTX_MEM=8M",
                         "VRAMSHIM_VRAM_LIMIT=0:256M,1:192M", "VRAMSHIM_PIN_LIMIT=96M",
                         "VRAMSHIM_OFFLOAD=off", "VRAMSHIM_LOG=error", NULL};
    check_reexec_env(argv, env);
    const char *s = getenv("KINDS_SEED");
    uint64_t seed = s ? strtoull(s, NULL, 0) : (uint64_t)time(NULL);
    if (seed == 0)
        seed = 1;
    rnd_state = seed;
    printf("prog_kinds: KINDS_SEED=%llu\n", (unsigned long long)seed);
    fflush(stdout);
    snprintf(tool, sizeof tool, "%s/tools/vramshim", getenv("VRAMSHIM_BUILD"));
    limit[0] = 256 * M;
    limit[1] = 192 * M;
    pin_limit = 96 * M;
    open_driver();
    check_books("contexts");

    int steps = check_ops(1500);
    unsigned counts[NKINDS][2] = {{0}}; /* successes and refusals by kind */
    for (step_no = 1; step_no <= steps; step_no++) {
        uint64_t r = rnd(100);
        if (r < 4) { /* new limits, now lower, now higher */
            set_limits((48 + rnd(240)) * M, (48 + rnd(240)) * M, (16 + rnd(96)) * M);
            check_books("limits set");
            continue;
        }
        if (r < 7) { /* give back what a created pool or graph memory keeps */
            int dev = (int)rnd(2);
            use_device(dev);
            if (r < 6)
                CHECK_CU(cu.pool_trim(cu.pool[dev], (size_t)rnd(POOL0_THRESHOLD / M + 1) * M));
            else
                CHECK_CU(cu.graph_trim(dev));
            check_books(r < 6 ? "pool trimmed" : "graph memory trimmed");
            continue;
        }
        if (n_live > 0 && (r < 40 || n_live == MAX_LIVE)) {
            int i = (int)rnd((uint64_t)n_live);
            struct live *l = &live[i];
            if (l->dev < 0)
                pinned -= l->bytes;
            unmake(l);
            live[i] = live[--n_live];
            check_books("free");
            continue;
        }
        enum kind k = (enum kind)rnd(NKINDS);
        int dev = (int)rnd(2);
        uint64_t mib = 1 + rnd(k == MODULE ? 4 : 24);
        bool pins = k == HOST || k == REGISTERED;
        uint64_t before = pins ? pinned : cu.held(dev) - spare(dev);
        uint64_t cap = pins ? pin_limit : limit[dev];
        /* a graph takes its memory from the unused graph reserve when that
         * holds it (nothing grows: it runs even over a lowered limit);
         * else, once the unused reserve is trimmed, the granules its need
         * adds to what graph memory uses */
        uint64_t graph_growth = 0;
        bool from_reserve = false;
        if (k == GRAPH) {
            cuuint64_t used, reserved;
            CHECK_CU(cu.graph_attr(dev, CU_GRAPH_MEM_ATTR_USED_MEM_CURRENT, &used));
            CHECK_CU(cu.graph_attr(dev, CU_GRAPH_MEM_ATTR_RESERVED_MEM_CURRENT, &reserved));
            if (used + mib * M > reserved)
                graph_growth = (used + mib * M + 2 * M - 1) / (2 * M) * (2 * M) -
                               (used + 2 * M - 1) / (2 * M) * (2 * M);
            else
                from_reserve = true;
        }
        struct live *l = &live[n_live];
        CUresult rc = make(l, k, dev, mib);
        CHECK(rc == CUDA_SUCCESS || rc == CUDA_ERROR_OUT_OF_MEMORY,
              "step %d: %s of %llu MiB on device %d returned %d", step_no, kind_name[k],
              (unsigned long long)mib, dev, (int)rc);
        bool fits = k == GRAPH ? from_reserve || before + graph_growth <= cap
                               : before + l->bytes <= cap;
        if (k == PLAIN || k == VMM || k == HOST || k == REGISTERED || k == MODULE || k == GRAPH)
            CHECK((rc == CUDA_SUCCESS) == fits,
                  "step %d: %s of %llu bytes with %llu held under %llu: %d", step_no,
                  kind_name[k], (unsigned long long)l->bytes, (unsigned long long)before,
                  (unsigned long long)cap, (int)rc);
        counts[k][rc != CUDA_SUCCESS]++;
        if (rc == CUDA_SUCCESS) {
            if (l->dev < 0)
                pinned += l->bytes;
            size_t n = data_bytes(l);
            if (n)
                fill(l, n);
            n_live++;
        }
        check_books(kind_name[k]);
    }
    tool_figures();
    while (n_live > 0) {
        struct live *l = &live[--n_live];
        if (l->dev < 0)
            pinned -= l->bytes;
        unmake(l);
    }
    check_books("everything freed");
    for (int k = 0; k < NKINDS; k++) {
        printf("  %-10s %4u made, %4u refused\n", kind_name[k], counts[k][0], counts[k][1]);
        /* a full run tries each kind about 85 times; a quick one may try a kind
         * too few times to say */
        CHECK(counts[k][0] + counts[k][1] < 20 || counts[k][0] > 0,
              "no %s allocation succeeded: the run tested nothing of it", kind_name[k]);
    }
    printf("prog_kinds: ok, %d steps\n", steps);
    return 0;
}
