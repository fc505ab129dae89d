/*
 * pool.c: stream-ordered memory pools and graph memory, charged by what the
 * driver keeps in reserve for them.
 *
 * A pool hands out blocks of a reserve it grows and keeps: after a free,
 * and up to its release threshold after a synchronise, the memory stays
 * the pool's. The budget is therefore charged each pool's reserve
 * (CU_MEMPOOL_ATTR_RESERVED_MEM_CURRENT), to the pool's own location (a
 * device, or the pin limit for a host or host-NUMA pool), never the blocks
 * (their records, VS_KIND_ASYNC, are charged nothing). The same for each
 * device's graph memory (CU_GRAPH_MEM_ATTR_RESERVED_MEM_CURRENT), once the
 * program has made a memory node. Both charges go to owner 0: a pool is
 * shared by whoever allocates from it.
 *
 * The figures are read where they can change and the program cannot
 * avoid passing: a reserve grows only inside an allocation (one attribute
 * read after each; the growth is admitted beforehand from the figures last
 * read) or a graph's upload or launch; it shrinks at a synchronise, a
 * trim, a threshold change or a pool's destruction. A reserve a driver let
 * go elsewhere is over-charged until the next of these, never
 * under-charged.
 *
 * Graph memory is admitted before it is taken. At instantiation the
 * graph's allocation nodes are read (per device, each rounded up to a
 * page); an exec's first launch or upload binds that much of the device's
 * graph memory to it, and the driver keeps it bound between launches, so
 * only an unbound exec is admitted: its need less the reserve no graph
 * holds, rounded up to whole granules (the reserve is backed by physical
 * allocations). That is an upper bound: the driver may also hand it memory
 * bound to graphs that do not run at the same time. After the call the
 * reserve read back replaces the estimate. A trim that gives memory back
 * unbinds every exec on the device unless what the driver says is in use
 * still covers them all.
 *
 * vs_pool_trim gives back what pools and graph memory reserve beyond what
 * they use: the first thing done to make room, since it moves nobody's
 * data (tier.c, through vs_tier_ops.trim).
 *
 * A pool imported from another process (cuMemPoolImportFromShareableHandle)
 * is the exporter's memory: it is recorded so that it is never taken for a
 * pool of this process, and is never read, charged or trimmed; nothing can
 * be allocated from it ("Imported memory pools do not support creating new
 * allocations", cuda.h), and the pointers imported from it
 * (cuMemPoolImportPointer) are shown apart, as imported memory.
 */
#include "offload_internal.h"

#include <stdlib.h>
#include <string.h>
#include <uthash.h>

struct pool_rec {
    CUmemoryPool pool;
    int dev;              /* -1: a host or host-NUMA pool */
    uint64_t reserved;    /* as last read */
    uint64_t used;        /* as last read, plus what was handed out since */
    bool imported;        /* another process's pool: charged nothing */
    struct vs_charge charge;
    UT_hash_handle hh;
};

struct graph_mem {
    uint64_t reserved, used; /* as last read */
    uint64_t promised;       /* unused reserve launches in flight count on */
    struct vs_charge charge;
};

/* An instantiated graph with allocation nodes: what they need on each
 * device, and where its memory is bound (a launch or upload mapped it; the
 * driver keeps a graph's mappings between launches, until a trim). */
struct graph_exec {
    CUgraphExec exec;
    uint64_t need[VS_MAX_DEVICES];
    uint32_t devs, bound;
    UT_hash_handle hh;
};

/* The allocation pools hand out is not part of the driver's interface
 * (at least 256 bytes; 512 seen, rapidsai/cudf#10384): a node is counted
 * rounded up to a page, more than either. */
#define GRAPH_NODE_ROUND 4096ULL

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static struct pool_rec *pools;
static CUmemoryPool current[VS_MAX_DEVICES]; /* NULL: the device's default */
static CUmemoryPool defaults[VS_MAX_DEVICES];
static struct graph_mem graph[VS_MAX_DEVICES];
/* devices whose graph memory is read: a memory node was made for them */
static _Atomic uint32_t graph_devs;
/* any reserve charged at all: the synchronise hooks skip everything else */
static _Atomic bool anything;
/* The execs, under exec_lock alone where a launch asks (a trim holds lock
 * for driver calls); taken inside lock where both are needed. */
static pthread_mutex_t exec_lock = PTHREAD_MUTEX_INITIALIZER;
static struct graph_exec *execs;
/* execs with memory nodes: graph launches skip the rest while 0 */
static _Atomic unsigned n_execs;

static bool dev_ok(int dev) { return dev >= 0 && dev < VS_MAX_DEVICES; }

static CUdevice cu_device(int ordinal)
{
    CUdevice d = ordinal;
    if (vs_real.cuDeviceGet)
        (void)vs_real.cuDeviceGet(&d, ordinal);
    return d;
}

static bool read_attr(CUmemoryPool pool, CUmemPool_attribute attr, uint64_t *out)
{
    cuuint64_t v = 0;
    if (vs_real.cuMemPoolGetAttribute == NULL ||
        vs_real.cuMemPoolGetAttribute(pool, attr, &v) != CUDA_SUCCESS)
        return false;
    *out = v;
    return true;
}

/* The device's totals to the registry (the stats), after any change.
 * Caller holds lock. */
static void publish_locked(int dev)
{
    uint64_t res = 0, used = 0;
    for (struct pool_rec *p = pools; p; p = p->hh.next)
        if (p->dev == dev) {
            res += p->reserved;
            used += p->used;
        }
    if (dev_ok(dev))
        vs_registry_set_reserves(dev, res, used, graph[dev].reserved, graph[dev].used);
    else
        vs_registry_set_reserves(-1, res, used, 0, 0);
}

/* The charge follows the reserve. Caller holds lock. */
static void settle_locked(struct pool_rec *p, uint64_t reserved)
{
    p->reserved = reserved;
    if (p->used > reserved)
        p->used = reserved;
    vs_budget_hold(&p->charge, reserved);
    if (reserved)
        atomic_store(&anything, true);
    publish_locked(p->dev);
}

/* Caller holds lock. */
static struct pool_rec *add_locked(CUmemoryPool pool, int dev)
{
    struct pool_rec *p = calloc(1, sizeof *p);
    if (p == NULL) {
        vs_error("out of memory: the memory pool %p is not charged", (void *)pool);
        return NULL;
    }
    p->pool = pool;
    p->dev = dev_ok(dev) ? dev : -1;
    p->charge = (struct vs_charge){.dev = p->dev, .owner = 0, .bytes = 0};
    HASH_ADD_PTR(pools, pool, p);
    return p;
}

/* The default pool of a device, asked of the driver once. Caller holds lock. */
static CUmemoryPool default_locked(int dev)
{
    if (defaults[dev] == NULL && vs_real.cuDeviceGetDefaultMemPool)
        (void)vs_real.cuDeviceGetDefaultMemPool(&defaults[dev], cu_device(dev));
    return defaults[dev];
}

/* The record of a pool; one vramshim has not seen made is a device's
 * default pool, else taken to live on `dev` (the current device). Caller
 * holds lock. */
static struct pool_rec *find_locked(CUmemoryPool pool, int dev)
{
    struct pool_rec *p;
    HASH_FIND_PTR(pools, &pool, p);
    if (p)
        return p;
    int n = 0;
    if (vs_real.cuDeviceGetCount == NULL || vs_real.cuDeviceGetCount(&n) != CUDA_SUCCESS)
        n = 0;
    for (int d = 0; d < n && d < VS_MAX_DEVICES; d++)
        if (default_locked(d) == pool)
            return add_locked(pool, d);
    vs_debug("memory pool %p was not made through vramshim; its reserve is charged to "
             "device %d",
             (void *)pool, dev);
    return add_locked(pool, dev);
}

void vs_pool_created(CUmemoryPool pool, int dev)
{
    pthread_mutex_lock(&lock);
    struct pool_rec *p;
    HASH_FIND_PTR(pools, &pool, p);
    if (p == NULL)
        (void)add_locked(pool, dev);
    pthread_mutex_unlock(&lock);
}

void vs_pool_imported(CUmemoryPool pool)
{
    pthread_mutex_lock(&lock);
    struct pool_rec *p;
    HASH_FIND_PTR(pools, &pool, p);
    if (p == NULL)
        p = add_locked(pool, -1);
    if (p) {
        /* a stale record of the same handle (a destruction not seen) held
         * a charge: it goes */
        settle_locked(p, 0);
        p->imported = true;
    }
    pthread_mutex_unlock(&lock);
}

void vs_pool_set_current(int dev, CUmemoryPool pool)
{
    if (!dev_ok(dev))
        return;
    pthread_mutex_lock(&lock);
    current[dev] = pool;
    pthread_mutex_unlock(&lock);
}

/* Re-read one pool. Caller holds lock. */
static void refresh_locked(struct pool_rec *p)
{
    uint64_t reserved, used;
    if (p->imported || !read_attr(p->pool, CU_MEMPOOL_ATTR_RESERVED_MEM_CURRENT, &reserved))
        return;
    if (read_attr(p->pool, CU_MEMPOOL_ATTR_USED_MEM_CURRENT, &used))
        p->used = used;
    settle_locked(p, reserved);
}

/* The driver releases a destroyed pool's memory once nothing of it is
 * outstanding: while something is, the record stays and is read at
 * synchronises; a handle the driver no longer answers for holds nothing. */
void vs_pool_destroyed(CUmemoryPool pool)
{
    pthread_mutex_lock(&lock);
    struct pool_rec *p;
    HASH_FIND_PTR(pools, &pool, p);
    if (p) {
        uint64_t reserved;
        if (p->imported || !read_attr(pool, CU_MEMPOOL_ATTR_RESERVED_MEM_CURRENT, &reserved))
            reserved = 0;
        settle_locked(p, reserved);
        if (reserved == 0) {
            HASH_DEL(pools, p);
            free(p);
        }
    }
    for (int d = 0; d < VS_MAX_DEVICES; d++)
        if (current[d] == pool)
            current[d] = NULL;
    pthread_mutex_unlock(&lock);
}

uint64_t vs_pool_admit(CUmemoryPool pool, int dev, uint64_t bytes, struct vs_pool_use *u)
{
    pthread_mutex_lock(&lock);
    if (pool == NULL && dev_ok(dev))
        pool = current[dev] ? current[dev] : default_locked(dev);
    struct pool_rec *p = pool ? find_locked(pool, dev) : NULL;
    if (p && p->imported)
        p = NULL; /* nothing can be allocated from it: the driver refuses */
    u->rec = p;
    u->dev = p ? p->dev : dev;
    if (p == NULL) { /* no pool to draw on (no context): the driver answers */
        pthread_mutex_unlock(&lock);
        return 0;
    }
    uint64_t free_in_reserve = p->reserved > p->used ? p->reserved - p->used : 0;
    int pool_dev = p->dev;
    pthread_mutex_unlock(&lock);
    if (bytes <= free_in_reserve)
        return 0;
    /* A device pool's reserve is backed by physical allocations, which come
     * in whole granules: admitting less lets the reserve pass the limit. */
    uint64_t growth = bytes - free_in_reserve;
    uint64_t gran = pool_dev >= 0 ? vs_chunk_ops.granularity(pool_dev) : UINT64_MAX;
    if (gran != UINT64_MAX && gran > 1)
        growth = (growth + gran - 1) / gran * gran;
    return growth;
}

void vs_pool_after(struct vs_pool_use *u, bool ok, uint64_t bytes)
{
    struct pool_rec *p = u->rec;
    if (p == NULL)
        return;
    pthread_mutex_lock(&lock);
    uint64_t reserved;
    if (ok)
        p->used += bytes;
    if (read_attr(p->pool, CU_MEMPOOL_ATTR_RESERVED_MEM_CURRENT, &reserved))
        settle_locked(p, reserved);
    pthread_mutex_unlock(&lock);
}

/* A trim gave back some of dev's graph memory: the driver may have unmapped
 * any graph not running. While what it says is in use still covers every
 * exec bound there, they all stay bound; otherwise none does, and each
 * is admitted again at its next launch. Caller holds lock. */
static void graph_trimmed_locked(int dev)
{
    uint64_t bound = 0;
    struct graph_exec *e, *tmp;
    pthread_mutex_lock(&exec_lock);
    HASH_ITER(hh, execs, e, tmp)
        if (e->bound & (1u << dev))
            bound += e->need[dev];
    if (graph[dev].used < bound)
        HASH_ITER(hh, execs, e, tmp)
            e->bound &= ~(1u << dev);
    pthread_mutex_unlock(&exec_lock);
}

/* Graph memory of one device, re-read. Caller holds lock. */
static void graph_refresh_locked(int dev)
{
    cuuint64_t reserved = 0, used = 0;
    CUdevice d = cu_device(dev);
    if (vs_real.cuDeviceGetGraphMemAttribute == NULL ||
        vs_real.cuDeviceGetGraphMemAttribute(d, CU_GRAPH_MEM_ATTR_RESERVED_MEM_CURRENT,
                                             &reserved) != CUDA_SUCCESS)
        return;
    (void)vs_real.cuDeviceGetGraphMemAttribute(d, CU_GRAPH_MEM_ATTR_USED_MEM_CURRENT, &used);
    struct graph_mem *g = &graph[dev];
    bool shrank = reserved < g->reserved;
    g->reserved = reserved;
    g->used = used;
    if (shrank)
        graph_trimmed_locked(dev);
    g->charge.dev = dev;
    g->charge.owner = 0;
    vs_budget_hold(&g->charge, reserved);
    if (reserved)
        atomic_store(&anything, true);
    publish_locked(dev);
}

void vs_graph_mem_seen(int dev)
{
    if (dev_ok(dev))
        atomic_fetch_or(&graph_devs, 1u << dev);
}

void vs_graph_mem_refresh(void)
{
    uint32_t devs = atomic_load_explicit(&graph_devs, memory_order_relaxed);
    if (VS_LIKELY(devs == 0))
        return;
    pthread_mutex_lock(&lock);
    for (int d = 0; d < VS_MAX_DEVICES; d++)
        if (devs & (1u << d))
            graph_refresh_locked(d);
    pthread_mutex_unlock(&lock);
}

void vs_pool_refresh(CUmemoryPool pool)
{
    if (VS_LIKELY(!atomic_load_explicit(&anything, memory_order_relaxed)) && pool == NULL)
        return;
    pthread_mutex_lock(&lock);
    struct pool_rec *p, *tmp;
    HASH_ITER(hh, pools, p, tmp)
        if (pool == NULL || p->pool == pool)
            refresh_locked(p);
    pthread_mutex_unlock(&lock);
    if (pool == NULL)
        vs_graph_mem_refresh();
}

uint64_t vs_pool_trim(int dev)
{
    if (!atomic_load_explicit(&anything, memory_order_relaxed))
        return 0;
    uint64_t freed = 0;
    pthread_mutex_lock(&lock);
    struct pool_rec *p, *tmp;
    HASH_ITER(hh, pools, p, tmp) {
        if ((dev >= 0 && p->dev != dev) || p->reserved == 0 || p->imported)
            continue;
        uint64_t before = p->reserved, used;
        if (vs_real.cuMemPoolTrimTo && read_attr(p->pool, CU_MEMPOOL_ATTR_USED_MEM_CURRENT, &used))
            (void)vs_real.cuMemPoolTrimTo(p->pool, used);
        refresh_locked(p);
        freed += before > p->reserved ? before - p->reserved : 0;
    }
    uint32_t devs = atomic_load(&graph_devs);
    for (int d = 0; d < VS_MAX_DEVICES; d++) {
        /* not under a launch in flight that counts on the unused reserve */
        if (!(devs & (1u << d)) || (dev >= 0 && d != dev) || graph[d].reserved == 0 ||
            graph[d].promised)
            continue;
        uint64_t before = graph[d].reserved;
        if (vs_real.cuDeviceGraphMemTrim)
            (void)vs_real.cuDeviceGraphMemTrim(cu_device(d));
        graph_refresh_locked(d);
        freed += before > graph[d].reserved ? before - graph[d].reserved : 0;
    }
    pthread_mutex_unlock(&lock);
    if (freed && dev >= 0)
        vs_info("memory pools: trimmed %llu bytes of unused reserve on device %d",
                (unsigned long long)freed, dev);
    else if (freed)
        vs_info("memory pools: trimmed %llu bytes of unused reserve", (unsigned long long)freed);
    return freed;
}

/* ---- graph execs ---------------------------------------------------------- */

/* What the allocation nodes of graph need, per device. Child graphs hold
 * none: "If childGraph contains allocation nodes, free nodes, or
 * conditional nodes, this call will return an error"
 * (cuGraphAddChildGraphNode). False: the driver could not say. */
static bool graph_needs(CUgraph graph, struct graph_exec *e)
{
    size_t n = 0;
    if (vs_real.cuGraphGetNodes == NULL || vs_real.cuGraphNodeGetType == NULL ||
        vs_real.cuGraphMemAllocNodeGetParams == NULL ||
        vs_real.cuGraphGetNodes(graph, NULL, &n) != CUDA_SUCCESS)
        return false;
    if (n == 0)
        return true;
    CUgraphNode *nodes = calloc(n, sizeof *nodes);
    if (nodes == NULL)
        return false;
    bool ok = vs_real.cuGraphGetNodes(graph, nodes, &n) == CUDA_SUCCESS;
    for (size_t i = 0; ok && i < n; i++) {
        CUgraphNodeType type;
        CUDA_MEM_ALLOC_NODE_PARAMS p;
        if (nodes[i] == NULL || vs_real.cuGraphNodeGetType(nodes[i], &type) != CUDA_SUCCESS ||
            type != CU_GRAPH_NODE_TYPE_MEM_ALLOC)
            continue;
        ok = vs_real.cuGraphMemAllocNodeGetParams(nodes[i], &p) == CUDA_SUCCESS;
        int d = p.poolProps.location.id;
        if (!ok || p.poolProps.location.type != CU_MEM_LOCATION_TYPE_DEVICE || !dev_ok(d))
            continue;
        e->need[d] += (p.bytesize + GRAPH_NODE_ROUND - 1) / GRAPH_NODE_ROUND * GRAPH_NODE_ROUND;
        e->devs |= 1u << d;
    }
    free(nodes);
    return ok;
}

void vs_graph_exec_made(CUgraphExec exec, CUgraph graph)
{
    struct graph_exec *e = calloc(1, sizeof *e);
    if (e == NULL || !graph_needs(graph, e)) {
        vs_info("graph %p: its memory nodes could not be read; its graph memory is "
                "charged after it runs, not admitted before",
                (void *)graph);
        free(e);
        return;
    }
    e->exec = exec;
    pthread_mutex_lock(&lock);
    pthread_mutex_lock(&exec_lock);
    struct graph_exec *old;
    HASH_FIND_PTR(execs, &exec, old);
    if (old) { /* a handle the driver reused: the old exec is gone */
        HASH_DEL(execs, old);
        free(old);
        atomic_fetch_sub(&n_execs, 1);
    }
    if (e->devs) {
        HASH_ADD_PTR(execs, exec, e);
        atomic_fetch_add(&n_execs, 1);
    }
    pthread_mutex_unlock(&exec_lock);
    if (e->devs) {
        atomic_fetch_or(&graph_devs, e->devs);
        for (int d = 0; d < VS_MAX_DEVICES; d++)
            if (e->devs & (1u << d))
                graph_refresh_locked(d);
    } else {
        free(e);
    }
    pthread_mutex_unlock(&lock);
}

void vs_graph_exec_gone(CUgraphExec exec)
{
    if (atomic_load_explicit(&n_execs, memory_order_relaxed) == 0)
        return;
    pthread_mutex_lock(&exec_lock);
    struct graph_exec *e;
    HASH_FIND_PTR(execs, &exec, e);
    if (e) {
        HASH_DEL(execs, e);
        free(e);
        atomic_fetch_sub(&n_execs, 1);
    }
    pthread_mutex_unlock(&exec_lock);
}

uint32_t vs_graph_exec_unbound(CUgraphExec exec)
{
    if (VS_LIKELY(atomic_load_explicit(&n_execs, memory_order_relaxed) == 0))
        return 0;
    pthread_mutex_lock(&exec_lock);
    struct graph_exec *e;
    HASH_FIND_PTR(execs, &exec, e);
    uint32_t devs = e ? e->devs & ~e->bound : 0;
    pthread_mutex_unlock(&exec_lock);
    return devs;
}

/* The exec's need on dev, less the reserve no graph holds and no other
 * launch counts on; the rest is growth. Conservative: the driver may also
 * reuse memory bound to graphs that do not run at the same time. */
uint64_t vs_graph_exec_take(CUgraphExec exec, int dev, uint64_t *counted)
{
    *counted = 0;
    if (!dev_ok(dev))
        return 0;
    pthread_mutex_lock(&lock);
    pthread_mutex_lock(&exec_lock);
    struct graph_exec *e;
    HASH_FIND_PTR(execs, &exec, e);
    uint64_t need = e ? e->need[dev] : 0;
    pthread_mutex_unlock(&exec_lock);
    struct graph_mem *g = &graph[dev];
    uint64_t taken = g->used + g->promised;
    uint64_t spare = g->reserved > taken ? g->reserved - taken : 0;
    *counted = need < spare ? need : spare;
    g->promised += *counted;
    pthread_mutex_unlock(&lock);
    uint64_t growth = need - *counted;
    uint64_t gran = growth ? vs_chunk_ops.granularity(dev) : UINT64_MAX;
    if (gran != UINT64_MAX && gran > 1)
        growth = (growth + gran - 1) / gran * gran;
    return growth;
}

void vs_graph_exec_untake(int dev, uint64_t counted)
{
    if (!dev_ok(dev) || counted == 0)
        return;
    pthread_mutex_lock(&lock);
    graph[dev].promised -= counted < graph[dev].promised ? counted : graph[dev].promised;
    pthread_mutex_unlock(&lock);
}

void vs_graph_exec_ran(CUgraphExec exec, uint32_t devs, const uint64_t *counted, bool ok)
{
    pthread_mutex_lock(&lock);
    if (ok) {
        pthread_mutex_lock(&exec_lock);
        struct graph_exec *e;
        HASH_FIND_PTR(execs, &exec, e);
        if (e)
            e->bound |= devs;
        pthread_mutex_unlock(&exec_lock);
    }
    for (int d = 0; d < VS_MAX_DEVICES; d++) {
        if (!(devs & (1u << d)))
            continue;
        graph[d].promised -= counted[d] < graph[d].promised ? counted[d] : graph[d].promised;
        graph_refresh_locked(d);
    }
    pthread_mutex_unlock(&lock);
}

void vs_pool_fit_limits(void)
{
    if (!atomic_load_explicit(&anything, memory_order_relaxed))
        return;
    for (int d = 0; d < VS_MAX_DEVICES; d++) {
        struct vs_budget_view v;
        vs_budget_device_view(d, &v);
        if (v.limit != VS_NO_LIMIT && v.charged > v.limit)
            (void)vs_pool_trim(d);
    }
}

/* A forked child holds none of the parent's pools. */
void vs_pool_atfork_child(void)
{
    pthread_mutex_init(&lock, NULL);
    struct pool_rec *p, *tmp;
    HASH_ITER(hh, pools, p, tmp) {
        HASH_DEL(pools, p);
        free(p);
    }
    memset(current, 0, sizeof current);
    memset(defaults, 0, sizeof defaults);
    memset(graph, 0, sizeof graph);
    pthread_mutex_init(&exec_lock, NULL);
    struct graph_exec *e, *etmp;
    HASH_ITER(hh, execs, e, etmp) {
        HASH_DEL(execs, e);
        free(e);
    }
    atomic_store(&n_execs, 0);
    atomic_store(&graph_devs, 0);
    atomic_store(&anything, false);
}
