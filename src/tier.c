/*
 * tier.c: device buffers backed by virtual memory management, and their
 * moves between device memory and page-locked host memory.
 *
 * With offload on, a cuMemAlloc of at least one granule is not passed to
 * the driver: vramshim reserves the address range itself and maps device
 * handles into it in chunks of up to VS_CHUNK_GRANULES granules. A chunk can
 * then move on its own: its bytes are copied into host handles (hostpool.c),
 * the device handle is unmapped and the host handles are mapped at the same
 * address, so every pointer the program holds stays valid and kernels keep
 * reaching the bytes over the bus. Coming back is the same dance the other
 * way. Allocations smaller than a granule pass through (counted, never
 * moved): backing them would round each up to 2 MiB.
 *
 * Locks, in the order they are taken:
 *   - move_lock (mutex): one move or free of a backed buffer at a time; it
 *     also owns the scratch window, an address range where the other side
 *     of a copy is mapped while a chunk moves;
 *   - vs_gate (reader-writer, writers first): every launch, copy and memset
 *     the program submits holds the read side for the length of its driver
 *     call; a move holds the write side from its fence (a synchronise of
 *     the buffer's context) until the remap is done, so no work can reach a
 *     chunk between the last copy of its bytes and its new mapping;
 *   - tier_lock (reader-writer): the tree of buffers by address, read by
 *     touch tracking on every launch, written only to add or remove a buffer.
 * Budget and registry are kept in step with every chunk that moves: its
 * bytes leave the device charge and join the pinned charge, and back.
 */
#include "vramshim_internal.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#ifndef __unused
#define __unused __attribute__((unused))
#endif
#include <bsd/sys/tree.h>

enum chunk_where { CHUNK_DEVICE, CHUNK_PINNED };

struct chunk {
    CUmemGenericAllocationHandle dev_handle; /* while on the device */
    struct vs_host_block host;               /* while pinned */
    uint64_t offset, size; /* mapped bytes, whole granules */
    uint64_t counted;      /* the program's bytes among them */
    uint8_t where;
};

struct buffer {
    RB_ENTRY(buffer) rb;
    uint64_t base, size, span, gran;
    int dev, owner;
    CUcontext ctx;
    _Atomic uint64_t last_touch_ns;
    _Atomic uint32_t n_off; /* chunks not on the device */
    uint32_t n_chunks;
    struct chunk chunk[];
};

static int cmp_buffer(const struct buffer *a, const struct buffer *b)
{
    return a->base < b->base ? -1 : a->base > b->base;
}
RB_HEAD(buffer_tree, buffer);
RB_GENERATE_STATIC(buffer_tree, buffer, rb, cmp_buffer)

static struct buffer_tree buffers = RB_INITIALIZER(&buffers);
static pthread_rwlock_t tier_lock = PTHREAD_RWLOCK_INITIALIZER;
static pthread_mutex_t move_lock = PTHREAD_MUTEX_INITIALIZER;
pthread_rwlock_t vs_gate;
_Atomic uint32_t vs_tier_buffers;
static _Atomic uint32_t offloaded_chunks;
static _Atomic uint64_t lowest = UINT64_MAX, highest;
static uint64_t gran_of[VS_MAX_DEVICES]; /* 0: not asked; UINT64_MAX: no VMM */
static CUdeviceptr scratch;
static uint64_t scratch_size;

void vs_tier_init(void)
{
    pthread_rwlockattr_t attr;
    pthread_rwlockattr_init(&attr);
    /* a steady stream of launches must not starve a move */
    pthread_rwlockattr_setkind_np(&attr, PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
    pthread_rwlock_init(&vs_gate, &attr);
    pthread_rwlockattr_destroy(&attr);
}

static uint64_t granularity(int dev)
{
    if (dev < 0 || dev >= VS_MAX_DEVICES)
        return UINT64_MAX;
    uint64_t g = __atomic_load_n(&gran_of[dev], __ATOMIC_RELAXED);
    if (VS_LIKELY(g != 0))
        return g;
    CUmemAllocationProp prop;
    memset(&prop, 0, sizeof prop);
    prop.type = CU_MEM_ALLOCATION_TYPE_PINNED;
    prop.location.type = CU_MEM_LOCATION_TYPE_DEVICE;
    prop.location.id = dev;
    size_t got = 0;
    g = UINT64_MAX;
    if (vs_real.cuMemGetAllocationGranularity && vs_real.cuMemAddressReserve &&
        vs_real.cuMemSetAccess && vs_real.cuCtxSynchronize &&
        vs_real.cuMemGetAllocationGranularity(&got, &prop,
                                              CU_MEM_ALLOC_GRANULARITY_MINIMUM) ==
            CUDA_SUCCESS &&
        got > 0)
        g = got;
    else
        vs_info("device %d: no virtual memory management; allocations pass through "
                "and are never offloaded", dev);
    __atomic_store_n(&gran_of[dev], g, __ATOMIC_RELAXED);
    return g;
}

bool vs_tier_wants(int dev, uint64_t size)
{
    if (vs_limits_offload() == VS_OFFLOAD_OFF)
        return false;
    uint64_t g = granularity(dev);
    return g != UINT64_MAX && size >= g;
}

static CUresult set_access(uint64_t va, uint64_t size, int dev, bool host_too)
{
    CUmemAccessDesc d[2];
    memset(d, 0, sizeof d);
    d[0].location.type = CU_MEM_LOCATION_TYPE_DEVICE;
    d[0].location.id = dev;
    d[0].flags = CU_MEM_ACCESS_FLAGS_PROT_READWRITE;
    d[1].location.type = CU_MEM_LOCATION_TYPE_HOST;
    d[1].location.id = 0;
    d[1].flags = CU_MEM_ACCESS_FLAGS_PROT_READWRITE;
    if (host_too && vs_real.cuMemSetAccess(va, size, d, 2) == CUDA_SUCCESS)
        return CUDA_SUCCESS;
    return vs_real.cuMemSetAccess(va, size, d, 1);
}

static CUresult create_device(int dev, uint64_t size, CUmemGenericAllocationHandle *h)
{
    CUmemAllocationProp prop;
    memset(&prop, 0, sizeof prop);
    prop.type = CU_MEM_ALLOCATION_TYPE_PINNED;
    prop.location.type = CU_MEM_LOCATION_TYPE_DEVICE;
    prop.location.id = dev;
    return vs_real.cuMemCreate(h, size, &prop, 0);
}

/* ---- the tree -------------------------------------------------------------- */

/* The buffer holding addr, or the first one after it. Caller holds tier_lock. */
static struct buffer *find_from(uint64_t addr)
{
    struct buffer *node = RB_ROOT(&buffers), *best = NULL;
    while (node) {
        if (node->base <= addr) {
            best = node;
            node = RB_RIGHT(node, rb);
        } else {
            node = RB_LEFT(node, rb);
        }
    }
    if (best && addr - best->base < best->span)
        return best;
    struct buffer key = {.base = addr};
    return RB_NFIND(buffer_tree, &buffers, &key);
}

static struct buffer *find_containing(uint64_t addr)
{
    struct buffer *b = find_from(addr);
    return b && addr >= b->base && addr - b->base < b->size ? b : NULL;
}

bool vs_tier_lookup(uint64_t addr, struct vs_tier_view *out)
{
    if (atomic_load_explicit(&vs_tier_buffers, memory_order_relaxed) == 0)
        return false;
    pthread_rwlock_rdlock(&tier_lock);
    struct buffer *b = find_containing(addr);
    if (b) {
        out->base = b->base;
        out->size = b->size;
        out->dev = b->dev;
        out->ctx = b->ctx;
        out->offloaded = atomic_load(&b->n_off) > 0;
    }
    pthread_rwlock_unlock(&tier_lock);
    return b != NULL;
}

/* ---- allocation and free --------------------------------------------------- */

static void unback(struct buffer *b)
{
    for (uint32_t i = 0; i < b->n_chunks; i++) {
        struct chunk *c = &b->chunk[i];
        if (c->where == CHUNK_DEVICE && c->dev_handle) {
            vs_real.cuMemUnmap(b->base + c->offset, c->size);
            vs_real.cuMemRelease(c->dev_handle);
        } else if (c->where == CHUNK_PINNED) {
            vs_real.cuMemUnmap(b->base + c->offset, c->size);
            vs_hostpool_give(&c->host);
        }
    }
    vs_real.cuMemAddressFree(b->base, b->span);
    free(b);
}

CUresult vs_tier_alloc(CUdeviceptr *dptr, uint64_t size, int dev, int owner)
{
    uint64_t gran = granularity(dev);
    if (gran == UINT64_MAX)
        return CUDA_ERROR_NOT_SUPPORTED;
    if (dptr == NULL)
        return CUDA_ERROR_INVALID_VALUE;
    uint64_t span = (size + gran - 1) / gran * gran;
    uint64_t chunk_bytes = gran * VS_CHUNK_GRANULES;
    uint32_t n = (uint32_t)((span + chunk_bytes - 1) / chunk_bytes);
    struct buffer *b = calloc(1, sizeof *b + n * sizeof b->chunk[0]);
    if (b == NULL)
        return CUDA_ERROR_NOT_SUPPORTED; /* let the driver do it, unbacked */
    b->size = size;
    b->span = span;
    b->gran = gran;
    b->dev = dev;
    b->owner = owner;
    b->n_chunks = n;
    if (vs_real.cuCtxGetCurrent)
        vs_real.cuCtxGetCurrent(&b->ctx);
    CUdeviceptr va = 0;
    CUresult rc = vs_real.cuMemAddressReserve(&va, span, gran, 0, 0);
    b->base = va;
    if (rc != CUDA_SUCCESS) {
        free(b);
        return rc == CUDA_ERROR_OUT_OF_MEMORY ? rc : CUDA_ERROR_NOT_SUPPORTED;
    }
    for (uint32_t i = 0; i < n; i++) {
        struct chunk *c = &b->chunk[i];
        c->offset = (uint64_t)i * chunk_bytes;
        c->size = span - c->offset < chunk_bytes ? span - c->offset : chunk_bytes;
        c->counted = size > c->offset ? (size - c->offset < c->size ? size - c->offset : c->size) : 0;
        c->where = CHUNK_DEVICE;
        rc = create_device(dev, c->size, &c->dev_handle);
        if (rc == CUDA_SUCCESS) {
            rc = vs_real.cuMemMap(b->base + c->offset, c->size, 0, c->dev_handle, 0);
            if (rc != CUDA_SUCCESS) {
                vs_real.cuMemRelease(c->dev_handle);
            }
        }
        if (rc != CUDA_SUCCESS) {
            c->dev_handle = 0;
            unback(b);
            return rc;
        }
    }
    rc = set_access(b->base, span, dev, false);
    if (rc != CUDA_SUCCESS) {
        unback(b);
        return rc;
    }
    atomic_store(&b->last_touch_ns, vs_now_ns());
    pthread_rwlock_wrlock(&tier_lock);
    RB_INSERT(buffer_tree, &buffers, b);
    pthread_rwlock_unlock(&tier_lock);
    atomic_fetch_add(&vs_tier_buffers, 1);
    uint64_t lo = atomic_load(&lowest);
    while (b->base < lo && !atomic_compare_exchange_weak(&lowest, &lo, b->base))
        ;
    uint64_t hi = atomic_load(&highest);
    while (b->base + b->span > hi && !atomic_compare_exchange_weak(&highest, &hi, b->base + b->span))
        ;
    *dptr = b->base;
    return CUDA_SUCCESS;
}

/* Fence the buffer's context: every piece of work submitted so far is done.
 * Holds the gate's write side until fence_end, so none can be added. */
static bool fence_begin(struct buffer *b)
{
    pthread_rwlock_wrlock(&vs_gate);
    if (b->ctx && vs_real.cuCtxPushCurrent_v2(b->ctx) != CUDA_SUCCESS) {
        pthread_rwlock_unlock(&vs_gate);
        return false;
    }
    CUresult rc = vs_real.cuCtxSynchronize();
    if (rc != CUDA_SUCCESS) {
        vs_warn("offload: synchronising device %d failed (%d); nothing moved", b->dev, (int)rc);
        CUcontext popped;
        if (b->ctx)
            vs_real.cuCtxPopCurrent_v2(&popped);
        pthread_rwlock_unlock(&vs_gate);
        return false;
    }
    return true;
}

static void fence_end(struct buffer *b)
{
    CUcontext popped;
    if (b->ctx)
        vs_real.cuCtxPopCurrent_v2(&popped);
    pthread_rwlock_unlock(&vs_gate);
}

CUresult vs_tier_free(uint64_t base)
{
    if (VS_LIKELY(atomic_load_explicit(&vs_tier_buffers, memory_order_relaxed) == 0))
        return CUDA_ERROR_NOT_FOUND;
    pthread_mutex_lock(&move_lock);
    pthread_rwlock_wrlock(&tier_lock);
    struct buffer key = {.base = base};
    struct buffer *b = RB_FIND(buffer_tree, &buffers, &key);
    if (b)
        RB_REMOVE(buffer_tree, &buffers, b);
    pthread_rwlock_unlock(&tier_lock);
    if (b == NULL) {
        pthread_mutex_unlock(&move_lock);
        return CUDA_ERROR_NOT_FOUND;
    }
    atomic_fetch_sub(&vs_tier_buffers, 1);
    atomic_fetch_sub(&offloaded_chunks, atomic_load(&b->n_off));
    /* cuMemFree waits for the device; cuMemUnmap does not */
    if (fence_begin(b))
        fence_end(b);
    unback(b);
    pthread_mutex_unlock(&move_lock);
    return CUDA_SUCCESS;
}

/* ---- moving one chunk -------------------------------------------------------- */

static CUresult ensure_scratch(uint64_t size)
{
    if (scratch_size >= size)
        return CUDA_SUCCESS;
    if (scratch)
        vs_real.cuMemAddressFree(scratch, scratch_size);
    scratch = 0;
    scratch_size = 0;
    CUresult rc = vs_real.cuMemAddressReserve(&scratch, size, 0, 0, 0);
    if (rc == CUDA_SUCCESS)
        scratch_size = size;
    return rc;
}

static void charge_back(int dev, int owner, uint64_t bytes)
{
    struct vs_charge c = {.dev = dev, .owner = owner, .bytes = bytes};
    vs_budget_refund(&c);
}

/* The new backing of a chunk is mapped at the scratch window: give the
 * device access, copy the chunk's bytes from va into it, unmap it again. */
static CUresult copy_into_scratch(const struct buffer *b, uint64_t va, uint64_t size)
{
    CUresult rc = set_access(scratch, size, b->dev, false);
    if (rc == CUDA_SUCCESS)
        rc = vs_real.cuMemcpyDtoD_v2(scratch, va, size);
    vs_real.cuMemUnmap(scratch, size);
    return rc;
}

/* Device -> pinned host. Caller holds move_lock and the fence. */
static CUresult chunk_out(struct buffer *b, struct chunk *c)
{
    struct vs_charge pin;
    if (vs_budget_charge_pinned(c->counted, &pin) != VS_ADMIT)
        return CUDA_ERROR_OUT_OF_MEMORY;
    vs_budget_settle(&pin, true);
    struct vs_host_block hb;
    uint64_t va = b->base + c->offset;
    CUresult rc = ensure_scratch(c->size);
    if (rc == CUDA_SUCCESS)
        rc = vs_hostpool_take(c->size, b->gran, &hb);
    if (rc != CUDA_SUCCESS) {
        vs_budget_refund(&pin);
        return rc;
    }
    rc = vs_hostpool_map(&hb, scratch);
    if (rc == CUDA_SUCCESS)
        rc = copy_into_scratch(b, va, c->size);
    if (rc == CUDA_SUCCESS)
        rc = vs_real.cuMemUnmap(va, c->size);
    if (rc == CUDA_SUCCESS) {
        rc = vs_hostpool_map(&hb, va);
        if (rc == CUDA_SUCCESS)
            rc = set_access(va, c->size, b->dev, true);
        if (rc != CUDA_SUCCESS) { /* put the device handle back: nothing lost */
            vs_real.cuMemUnmap(va, c->size);
            vs_real.cuMemMap(va, c->size, 0, c->dev_handle, 0);
            set_access(va, c->size, b->dev, false);
        }
    }
    if (rc != CUDA_SUCCESS) {
        vs_warn("offload: moving %llu bytes at 0x%llx to host memory failed (%d); it stays",
                (unsigned long long)c->size, (unsigned long long)va, (int)rc);
        vs_hostpool_give(&hb);
        vs_budget_refund(&pin);
        return rc;
    }
    vs_real.cuMemRelease(c->dev_handle);
    c->dev_handle = 0;
    c->host = hb;
    c->where = CHUNK_PINNED;
    charge_back(b->dev, b->owner, c->counted);
    vs_registry_move(b->base, VS_TIER_RESIDENT, VS_TIER_PINNED, c->counted);
    atomic_fetch_add(&b->n_off, 1);
    atomic_fetch_add(&offloaded_chunks, 1);
    return CUDA_SUCCESS;
}

/* Pinned host -> device. Caller holds move_lock and the fence. */
static CUresult chunk_in(struct buffer *b, struct chunk *c)
{
    struct vs_charge ch;
    if (vs_budget_charge_device(b->dev, b->owner, c->counted, &ch) != VS_ADMIT)
        return CUDA_ERROR_OUT_OF_MEMORY;
    CUmemGenericAllocationHandle h = 0;
    uint64_t va = b->base + c->offset;
    CUresult rc = ensure_scratch(c->size);
    if (rc == CUDA_SUCCESS)
        rc = create_device(b->dev, c->size, &h);
    vs_budget_settle(&ch, rc == CUDA_SUCCESS);
    if (rc != CUDA_SUCCESS)
        return rc;
    rc = vs_real.cuMemMap(scratch, c->size, 0, h, 0);
    if (rc == CUDA_SUCCESS)
        rc = copy_into_scratch(b, va, c->size);
    if (rc == CUDA_SUCCESS)
        rc = vs_real.cuMemUnmap(va, c->size);
    if (rc == CUDA_SUCCESS) {
        rc = vs_real.cuMemMap(va, c->size, 0, h, 0);
        if (rc == CUDA_SUCCESS)
            rc = set_access(va, c->size, b->dev, false);
        if (rc != CUDA_SUCCESS) { /* the host copy is still whole: map it again */
            vs_real.cuMemUnmap(va, c->size);
            vs_hostpool_map(&c->host, va);
            set_access(va, c->size, b->dev, true);
        }
    }
    if (rc != CUDA_SUCCESS) {
        vs_real.cuMemRelease(h);
        charge_back(b->dev, b->owner, c->counted);
        return rc;
    }
    vs_hostpool_give(&c->host);
    c->dev_handle = h;
    c->where = CHUNK_DEVICE;
    charge_back(-1, b->owner, c->counted);
    vs_registry_move(b->base, VS_TIER_PINNED, VS_TIER_RESIDENT, c->counted);
    atomic_fetch_sub(&b->n_off, 1);
    atomic_fetch_sub(&offloaded_chunks, 1);
    return CUDA_SUCCESS;
}

/* Move chunks of b out, last first, until `want` bytes moved. Caller holds
 * move_lock. Returns the bytes moved. */
static uint64_t buffer_out(struct buffer *b, uint64_t want)
{
    uint64_t moved = 0;
    if (!fence_begin(b))
        return 0;
    for (uint32_t i = b->n_chunks; i-- > 0 && moved < want;) {
        struct chunk *c = &b->chunk[i];
        if (c->where != CHUNK_DEVICE || c->counted == 0)
            continue;
        if (chunk_out(b, c) != CUDA_SUCCESS)
            break;
        moved += c->counted;
    }
    fence_end(b);
    return moved;
}

/* Bring every chunk of b back that fits. Caller holds move_lock.
 * Returns true when all of it is on the device. */
static bool buffer_in(struct buffer *b)
{
    if (atomic_load(&b->n_off) == 0)
        return true;
    if (!fence_begin(b))
        return false;
    for (uint32_t i = 0; i < b->n_chunks; i++) {
        struct chunk *c = &b->chunk[i];
        if (c->where == CHUNK_PINNED && chunk_in(b, c) != CUDA_SUCCESS)
            break;
    }
    fence_end(b);
    return atomic_load(&b->n_off) == 0;
}

/* ---- choosing what moves ------------------------------------------------------- */

static bool has_resident(const struct buffer *b)
{
    return atomic_load(&b->n_off) < b->n_chunks;
}

/* The least recently touched buffer that may move: idle ones first (untouched
 * for idle_ms), then the rest unless idle_only. Caller holds move_lock. */
static struct buffer *pick_victim(int dev, int owner, bool idle_only, const struct buffer *spare,
                                  uint64_t now, uint64_t idle_ns)
{
    struct buffer *best = NULL;
    bool best_idle = false;
    uint64_t best_touch = 0;
    pthread_rwlock_rdlock(&tier_lock);
    struct buffer *b;
    RB_FOREACH(b, buffer_tree, &buffers) {
        if (b == spare || (dev >= 0 && b->dev != dev) || (owner >= 0 && b->owner != owner) ||
            !has_resident(b))
            continue;
        uint64_t touch = atomic_load(&b->last_touch_ns);
        bool idle = now > touch && now - touch >= idle_ns;
        if (idle_only && !idle)
            continue;
        if (best == NULL || (idle && !best_idle) || (idle == best_idle && touch < best_touch)) {
            best = b;
            best_idle = idle;
            best_touch = touch;
        }
    }
    pthread_rwlock_unlock(&tier_lock);
    return best;
}

/* Caller holds move_lock. */
static uint64_t make_room_locked(int dev, int owner, uint64_t want, bool idle_only,
                                 const struct buffer *spare)
{
    uint64_t moved = 0, now = vs_now_ns();
    uint64_t idle_ns = (uint64_t)vs_limits_idle_ms() * 1000000ULL;
    while (moved < want) {
        struct buffer *b = pick_victim(dev, owner, idle_only, spare, now, idle_ns);
        if (b == NULL)
            break;
        uint64_t got = buffer_out(b, want - moved);
        if (got == 0)
            break; /* the pin budget is spent or the driver refused */
        moved += got;
    }
    return moved;
}

uint64_t vs_tier_make_room(int dev, int owner, uint64_t bytes)
{
    if (vs_limits_offload() == VS_OFFLOAD_OFF ||
        atomic_load_explicit(&vs_tier_buffers, memory_order_relaxed) == 0)
        return 0;
    /* a margin, so that the next few allocations do not each stop to move */
    uint64_t margin = bytes / 8 < (64ULL << 20) ? bytes / 8 : (64ULL << 20);
    pthread_mutex_lock(&move_lock);
    uint64_t moved = make_room_locked(dev, owner, bytes + margin, false, NULL);
    pthread_mutex_unlock(&move_lock);
    if (moved)
        vs_info("offload: moved %llu bytes of device %d to host memory to fit %llu",
                (unsigned long long)moved, dev, (unsigned long long)bytes);
    return moved;
}

/* ---- touch tracking ------------------------------------------------------------ */

/* Bring the buffer at base back, making room only from buffers that have
 * been idle for idle_ms: two buffers a kernel keeps using never trade
 * places on every launch; the one that does not fit stays pinned, which
 * kernels can still reach. */
/* Caller holds move_lock. */
static bool bring_back_locked(struct buffer *b, bool idle_only)
{
    if (buffer_in(b))
        return true;
    uint64_t missing = 0;
    for (uint32_t i = 0; i < b->n_chunks; i++)
        if (b->chunk[i].where != CHUNK_DEVICE)
            missing += b->chunk[i].counted;
    return make_room_locked(b->dev, -1, missing, idle_only, b) > 0 && buffer_in(b);
}

static void bring_back(uint64_t base)
{
    pthread_mutex_lock(&move_lock);
    pthread_rwlock_rdlock(&tier_lock);
    struct buffer key = {.base = base};
    struct buffer *b = RB_FIND(buffer_tree, &buffers, &key);
    pthread_rwlock_unlock(&tier_lock);
    if (b)
        bring_back_locked(b, true);
    pthread_mutex_unlock(&move_lock);
}

void vs_tier_touch_words(const uint64_t *words, int n, uint64_t len, uint64_t now)
{
    uint64_t lo = atomic_load_explicit(&lowest, memory_order_relaxed);
    uint64_t hi = atomic_load_explicit(&highest, memory_order_relaxed);
    uint64_t back[8];
    int n_back = 0;
    bool locked = false;
    for (int i = 0; i < n; i++) {
        uint64_t a = words[i];
        if (a + len <= lo || a >= hi)
            continue; /* most words: sizes, strides, scalars */
        if (!locked) {
            pthread_rwlock_rdlock(&tier_lock);
            locked = true;
        }
        for (struct buffer *b = find_from(a); b && b->base < a + len;
             b = RB_NEXT(buffer_tree, &buffers, b)) {
            if (atomic_load_explicit(&b->last_touch_ns, memory_order_relaxed) != now)
                atomic_store_explicit(&b->last_touch_ns, now, memory_order_relaxed);
            if (atomic_load_explicit(&b->n_off, memory_order_relaxed) && n_back < 8)
                back[n_back++] = b->base;
            if (len == 1)
                break;
        }
    }
    if (locked)
        pthread_rwlock_unlock(&tier_lock);
    for (int i = 0; i < n_back; i++)
        bring_back(back[i]);
}

void vs_tier_touch_all(uint64_t now)
{
    if (atomic_load_explicit(&vs_tier_buffers, memory_order_relaxed) == 0)
        return;
    pthread_rwlock_rdlock(&tier_lock);
    struct buffer *b;
    RB_FOREACH(b, buffer_tree, &buffers)
        atomic_store_explicit(&b->last_touch_ns, now, memory_order_relaxed);
    pthread_rwlock_unlock(&tier_lock);
}

/* ---- asked for: the public API and the control socket ------------------------------ */

/* -ENOTSUP: a device allocation vramshim knows but does not back (smaller
 * than a granule, stream-ordered, managed, pitched, or made with offload
 * off); -ENOENT: no allocation at all. */
static int unmovable_or_unknown(uint64_t p)
{
    struct vs_alloc_info info;
    return vs_registry_find(p, &info) && !vs_kind_is_host(info.kind) ? -ENOTSUP : -ENOENT;
}

int vs_tier_offload(uint64_t p)
{
    pthread_mutex_lock(&move_lock);
    pthread_rwlock_rdlock(&tier_lock);
    struct buffer *b = find_containing(p);
    pthread_rwlock_unlock(&tier_lock);
    int rc = -ENOENT;
    if (b) {
        buffer_out(b, UINT64_MAX);
        rc = has_resident(b) ? -ENOMEM : 0;
    }
    pthread_mutex_unlock(&move_lock);
    return rc == -ENOENT ? unmovable_or_unknown(p) : rc;
}

int vs_tier_prefetch(uint64_t p)
{
    pthread_mutex_lock(&move_lock);
    pthread_rwlock_rdlock(&tier_lock);
    struct buffer *b = find_containing(p);
    pthread_rwlock_unlock(&tier_lock);
    int rc = -ENOENT;
    if (b) /* asked for by name: any colder buffer may make way */
        rc = bring_back_locked(b, false) ? 0 : -ENOMEM;
    pthread_mutex_unlock(&move_lock);
    return rc == -ENOENT ? unmovable_or_unknown(p) : rc;
}

uint64_t vs_tier_evict(int owner, uint64_t bytes, bool idle_only)
{
    pthread_mutex_lock(&move_lock);
    uint64_t moved = make_room_locked(-1, owner, bytes, idle_only, NULL);
    pthread_mutex_unlock(&move_lock);
    return moved;
}

/* A forked child owns none of the parent's device memory. */
void vs_tier_atfork_child(void)
{
    pthread_mutex_init(&move_lock, NULL);
    pthread_rwlock_init(&tier_lock, NULL);
    vs_tier_init();
    RB_INIT(&buffers); /* the records leak: they describe the parent's memory */
    atomic_store(&vs_tier_buffers, 0);
    atomic_store(&offloaded_chunks, 0);
    atomic_store(&lowest, UINT64_MAX);
    atomic_store(&highest, 0);
    scratch = 0;
    scratch_size = 0;
    memset(gran_of, 0, sizeof gran_of);
}
