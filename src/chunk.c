/*
 * chunk.c: the mechanism under tier.c's policy (offload_internal.h, struct
 * vs_tier_ops): backing a buffer with VMM, moving one chunk of it between
 * the three places its bytes can live, and the fence every move needs.
 *
 * Device <-> pinned: the new backing is mapped at a scratch address range,
 * the bytes are copied into it by the device, the old backing is unmapped
 * and the new one mapped at the chunk's own address. Pageable: the address
 * is left unmapped (reserved, so nobody else gets it) and the bytes sit in
 * ordinary memory; they cross the bus through staging.c. Every step that
 * can fail comes before the old backing is given up, and a failure after
 * that puts the old backing back: a move either happens whole or leaves
 * the chunk as it was.
 *
 * Budget and registry follow each chunk: device bytes are charged to the
 * device budget, pinned bytes to the pin budget, pageable bytes to neither.
 */
#include "offload_internal.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <string.h>

static CUdeviceptr scratch;
static uint64_t scratch_size;
static uint64_t gran_of[VS_MAX_DEVICES]; /* 0: not asked; UINT64_MAX: no VMM */
/* The usage flags a device chunk is created with, set with gran_of: what
 * cuMemAlloc's memory would be able to do on that device. */
static unsigned short usage_of[VS_MAX_DEVICES];

/* ---- fence --------------------------------------------------------------- */

/* The contexts whose queued work may reach b: its own, and those given
 * peer access to its device (reach.c). */
static int reaching(const struct buffer *b, CUcontext *ctxs)
{
    ctxs[0] = b->ctx;
    return 1 + vs_reach_contexts(b->dev, ctxs + 1, VS_FENCE_MAX_CTX - 1);
}

/* Fence the buffer: every piece of work submitted so far by any context
 * that can reach it is done. Holds the gate's write side until fence_end,
 * so none can be added, and leaves the buffer's context current for the
 * move's copies. The waits are bounded (fence.c): false when the work did
 * not finish in time, a stream capture is under way, or the driver failed;
 * nothing may move then, and the caller falls back. The first wait runs
 * without the gate, so that other threads keep submitting (a callback may
 * be waiting for one of them); the second, under it, only drains what
 * they queued meanwhile. */
static bool fence_begin(struct buffer *b)
{
    CUcontext ctxs[VS_FENCE_MAX_CTX];
    int n = reaching(b, ctxs);
    CUresult rc = vs_fence_wait(ctxs, n);
    if (rc == CUDA_SUCCESS) {
        vs_gate_write_lock();
        rc = vs_fence_wait(ctxs, n);
        if (rc == CUDA_SUCCESS && b->ctx)
            rc = vs_real.cuCtxPushCurrent_v2(b->ctx);
        if (rc != CUDA_SUCCESS)
            vs_gate_write_unlock();
    }
    if (rc != CUDA_SUCCESS && rc != CUDA_ERROR_NOT_READY &&
        rc != CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED)
        vs_warn("offload: synchronising device %d failed (%d); nothing moved", b->dev, (int)rc);
    return rc == CUDA_SUCCESS;
}

/* A free: cuMemFree waits for the device without a deadline, and so does
 * the free of a backed buffer (the driver's own would block as long), for
 * every context that can reach it, before its memory is unmapped. The
 * driver's cuMemFree leaves another thread's stream capture alone; a
 * context synchronise would invalidate it, so this one waits (bounded) for
 * captures to end first (fence.c). */
static void drain(struct buffer *b)
{
    CUcontext ctxs[VS_FENCE_MAX_CTX];
    int n = reaching(b, ctxs);
    if (!vs_sync_enter(true))
        vs_warn("offload: freeing 0x%llx synchronises while a stream capture is under way; "
                "the driver may invalidate it", (unsigned long long)b->base);
    vs_gate_write_lock();
    for (int i = 0; i < n; i++) {
        CUcontext popped;
        if (ctxs[i] && vs_real.cuCtxPushCurrent_v2(ctxs[i]) != CUDA_SUCCESS)
            continue;
        CUresult rc = vs_real.cuCtxSynchronize();
        if (rc != CUDA_SUCCESS)
            vs_warn("offload: synchronising before freeing 0x%llx failed (%d)",
                    (unsigned long long)b->base, (int)rc);
        if (ctxs[i])
            vs_real.cuCtxPopCurrent_v2(&popped);
    }
    vs_gate_write_unlock();
    vs_sync_exit();
}

/* The fence's hold (the gate's write side, the buffer's context current)
 * without its wait: for pageable chunks, whose address is unmapped, so
 * nothing queued can be reading or writing them. */
static bool hold_begin(struct buffer *b)
{
    vs_gate_write_lock();
    if (b->ctx && vs_real.cuCtxPushCurrent_v2(b->ctx) != CUDA_SUCCESS) {
        vs_gate_write_unlock();
        return false;
    }
    return true;
}

static void fence_end(struct buffer *b)
{
    CUcontext popped;
    if (b->ctx)
        vs_real.cuCtxPopCurrent_v2(&popped);
    vs_gate_write_unlock();
}

/* ---- pieces ------------------------------------------------------------------ */

/* The program's SYNC_MEMOPS on b (tier.c), given to the mapping at va, a
 * new allocation as far as the driver knows: "the region of memory that
 * ptr points to is guaranteed to always synchronize memory operations that
 * are synchronous" (driver API reference, cuPointerSetAttribute), which
 * must hold for the program's buffer wherever its bytes are. The driver
 * refusing it costs only that guarantee: logged, the move goes on. */
static void apply_sync_memops(const struct buffer *b, uint64_t va, uint64_t size, bool host)
{
    uint8_t sm = atomic_load(&b->sync_memops);
    if (sm == VS_SYNC_MEMOPS_UNSET || vs_real.cuPointerSetAttribute == NULL)
        return;
    unsigned int on = sm == VS_SYNC_MEMOPS_ON;
    /* a device chunk is one allocation; a pinned one is a host block, one
     * handle per set bit of its granules, largest first (hostpool.c) */
    uint64_t granules = host ? size / b->gran : 1, at = va;
    for (int bit = 63; bit >= 0; bit--) {
        if (!(granules >> bit & 1))
            continue;
        CUresult rc = vs_real.cuPointerSetAttribute(&on, CU_POINTER_ATTRIBUTE_SYNC_MEMOPS, at);
        if (rc != CUDA_SUCCESS)
            vs_warn("cuPointerSetAttribute: cannot give SYNC_MEMOPS=%u to 0x%llx (%d); its "
                    "synchronous copies may return early", on, (unsigned long long)at, (int)rc);
        at += (b->gran << bit);
    }
}

/* Access for the buffer's own device, every device peer access lets reach
 * it (reach.c), the host for pinned chunks when the driver allows it; none
 * for devices whose peer access was taken back. The program's own
 * cuMemSetAccess on the buffer (b->app_*, tier.c) decides for each device
 * it named other than the buffer's own, which vramshim's copies need. */
static CUresult set_access(const struct buffer *b, uint64_t va, uint64_t size, bool host_too)
{
    CUmemAccessDesc d[VS_MAX_DEVICES + 1];
    memset(d, 0, sizeof d);
    size_t n = 0;
    int dev = b->dev;
    uint32_t peers = vs_reach_mask(dev), revoked = vs_reach_revoked(dev);
    uint32_t named = atomic_load(&b->app_named), rw = atomic_load(&b->app_rw),
             ro = atomic_load(&b->app_ro);
    for (int i = 0; i < VS_MAX_DEVICES; i++) {
        if (i != dev && !((peers | revoked | named) >> i & 1))
            continue;
        d[n].location.type = CU_MEM_LOCATION_TYPE_DEVICE;
        d[n].location.id = i;
        if (i == dev)
            d[n].flags = CU_MEM_ACCESS_FLAGS_PROT_READWRITE;
        else if (named >> i & 1)
            d[n].flags = rw >> i & 1   ? CU_MEM_ACCESS_FLAGS_PROT_READWRITE
                         : ro >> i & 1 ? CU_MEM_ACCESS_FLAGS_PROT_READ
                                       : CU_MEM_ACCESS_FLAGS_PROT_NONE;
        else
            d[n].flags = peers >> i & 1 ? CU_MEM_ACCESS_FLAGS_PROT_READWRITE
                                        : CU_MEM_ACCESS_FLAGS_PROT_NONE;
        n++;
    }
    d[n].location.type = CU_MEM_LOCATION_TYPE_HOST;
    d[n].location.id = 0;
    d[n].flags = CU_MEM_ACCESS_FLAGS_PROT_READWRITE;
    CUresult rc = CUDA_ERROR_UNKNOWN;
    if (host_too)
        rc = vs_real.cuMemSetAccess(va, size, d, n + 1);
    if (rc != CUDA_SUCCESS)
        rc = vs_real.cuMemSetAccess(va, size, d, n);
    if (rc == CUDA_SUCCESS)
        apply_sync_memops(b, va, size, host_too);
    return rc;
}

static CUresult create_device(int dev, uint64_t size, CUmemGenericAllocationHandle *h)
{
    CUmemAllocationProp prop;
    memset(&prop, 0, sizeof prop);
    prop.type = CU_MEM_ALLOCATION_TYPE_PINNED;
    prop.location.type = CU_MEM_LOCATION_TYPE_DEVICE;
    prop.location.id = dev;
    /* cuMemAlloc's memory can feed the hardware decompressor where the
     * device has one (cuMemBatchDecompressAsync's list of allocators);
     * cuMemCreate's only with the usage flag */
    prop.allocFlags.usage = __atomic_load_n(&usage_of[dev], __ATOMIC_RELAXED);
    /* exportable, so that a buffer the program shares (cuIpcGetMemHandle)
     * can be mapped by the other process; a driver that cannot do that
     * still gets a plain handle, and one that refuses the usage flag
     * memory without it */
    prop.requestedHandleTypes = CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR;
    CUresult rc = vs_real.cuMemCreate(h, size, &prop, 0);
    if (rc != CUDA_SUCCESS && rc != CUDA_ERROR_OUT_OF_MEMORY) {
        prop.requestedHandleTypes = CU_MEM_HANDLE_TYPE_NONE;
        rc = vs_real.cuMemCreate(h, size, &prop, 0);
    }
    if (rc != CUDA_SUCCESS && rc != CUDA_ERROR_OUT_OF_MEMORY && prop.allocFlags.usage) {
        vs_info("device %d: cuMemCreate refused the decompression usage flag (%d); its "
                "backed buffers cannot feed cuMemBatchDecompressAsync", dev, (int)rc);
        __atomic_store_n(&usage_of[dev], 0, __ATOMIC_RELAXED);
        prop.allocFlags.usage = 0;
        rc = vs_real.cuMemCreate(h, size, &prop, 0);
    }
    return rc;
}

/* What cuMemAlloc's memory on dev would answer for
 * CU_POINTER_ATTRIBUTE_IS_HW_DECOMPRESS_CAPABLE. */
bool vs_chunk_hw_decompress(int dev)
{
    return dev >= 0 && dev < VS_MAX_DEVICES &&
           (__atomic_load_n(&usage_of[dev], __ATOMIC_RELAXED) &
            CU_MEM_CREATE_USAGE_HW_DECOMPRESS) != 0;
}

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

static void refund(int dev, int owner, uint64_t bytes)
{
    struct vs_charge c = {.dev = dev, .owner = owner, .bytes = bytes};
    vs_budget_refund(&c);
}

/* The new backing of a chunk is mapped at the scratch window: give the
 * device access, copy the chunk's bytes from va into it, unmap it again. */
static CUresult copy_into_scratch(const struct buffer *b, uint64_t va, uint64_t size)
{
    CUresult rc = set_access(b, scratch, size, false);
    if (rc == CUDA_SUCCESS)
        rc = vs_real.cuMemcpyDtoD_v2(scratch, va, size);
    CUresult un = vs_real.cuMemUnmap(scratch, size);
    if (un != CUDA_SUCCESS) {
        /* a window still mapped would make every later move fail: leave it
         * (its reservation is lost) and take a fresh one next time */
        vs_warn("offload: unmapping the scratch window failed (%d); a new one is reserved",
                (int)un);
        scratch = 0;
        scratch_size = 0;
        if (rc == CUDA_SUCCESS)
            rc = un;
    }
    return rc;
}

/* Map a device handle, or a block of host handles, at va with the access
 * each needs; nothing stays mapped when it fails. */
static CUresult map_device(const struct buffer *b, uint64_t va, uint64_t size,
                           CUmemGenericAllocationHandle h)
{
    CUresult rc = vs_real.cuMemMap(va, size, 0, h, 0);
    if (rc == CUDA_SUCCESS && (rc = set_access(b, va, size, false)) != CUDA_SUCCESS)
        vs_real.cuMemUnmap(va, size);
    return rc;
}

static CUresult map_host(const struct buffer *b, uint64_t va, uint64_t size,
                         const struct vs_host_block *hb)
{
    CUresult rc = vs_hostpool_map(hb, va);
    if (rc == CUDA_SUCCESS && (rc = set_access(b, va, size, true)) != CUDA_SUCCESS)
        vs_real.cuMemUnmap(va, size);
    return rc;
}

/* A move unmapped the chunk's address and could not map its new backing
 * there. Both backings hold its bytes: map one of them again, the old one
 * first, a few times each (a failure may be passing). Returns 0 when the
 * old one is mapped, 1 the new one, -1 neither (logged: the address stays
 * unreachable; the chunk keeps its old backing, which holds the bytes). */
#define REMAP_TRIES 3
static int remap_either(const struct buffer *b, uint64_t va, uint64_t size, bool old_on_device,
                        CUmemGenericAllocationHandle dev_h, const struct vs_host_block *hb)
{
    for (int t = 0; t < REMAP_TRIES; t++) {
        vs_real.cuMemUnmap(va, size); /* whatever half of a mapping is left */
        CUresult old = old_on_device ? map_device(b, va, size, dev_h) : map_host(b, va, size, hb);
        if (old == CUDA_SUCCESS)
            return 0;
        CUresult new = old_on_device ? map_host(b, va, size, hb) : map_device(b, va, size, dev_h);
        if (new == CUDA_SUCCESS)
            return 1;
    }
    vs_error("offload: neither copy of %llu bytes at 0x%llx can be mapped there again; "
             "the bytes stay in their old place, but the address is unreachable",
             (unsigned long long)size, (unsigned long long)va);
    return -1;
}

static void moved_off(struct buffer *b)
{
    VS_ASSERT(atomic_load(&b->n_off) < b->n_chunks);
    atomic_fetch_add(&b->n_off, 1);
}

static void moved_on(struct buffer *b)
{
    VS_ASSERT(atomic_load(&b->n_off) > b->n_pageable);
    atomic_fetch_sub(&b->n_off, 1);
}

static void became_pageable(struct buffer *b)
{
    b->n_pageable++;
    atomic_fetch_add(&vs_pageable_total, 1);
    if (!b->handed_over)
        atomic_fetch_add(&vs_pageable_reachable, 1);
}

static void left_pageable(struct buffer *b, struct chunk *c)
{
    munmap(c->pageable, c->size);
    c->pageable = NULL;
    b->n_pageable--;
    atomic_fetch_sub(&vs_pageable_total, 1);
    if (!b->handed_over)
        atomic_fetch_sub(&vs_pageable_reachable, 1);
}

/* ---- device <-> pinned ---------------------------------------------------------- */

static CUresult device_to_pinned(struct buffer *b, struct chunk *c)
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
    else if (vs_real.cuMemUnmap(scratch, c->size) != CUDA_SUCCESS)
        scratch = scratch_size = 0; /* a part may be mapped: take a fresh window */
    if (rc == CUDA_SUCCESS)
        rc = vs_real.cuMemUnmap(va, c->size);
    if (rc == CUDA_SUCCESS) {
        rc = map_host(b, va, c->size, &hb);
        if (rc != CUDA_SUCCESS) {
            int mapped = remap_either(b, va, c->size, true, c->dev_handle, &hb);
            if (mapped == 1)
                rc = CUDA_SUCCESS; /* the move happened after all */
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
    refund(b->dev, b->owner, c->counted);
    vs_registry_move(b->base, VS_TIER_RESIDENT, VS_TIER_PINNED, c->counted);
    moved_off(b);
    return CUDA_SUCCESS;
}

static CUresult pinned_to_device(struct buffer *b, struct chunk *c)
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
        rc = map_device(b, va, c->size, h);
        if (rc != CUDA_SUCCESS) {
            int mapped = remap_either(b, va, c->size, false, h, &c->host);
            if (mapped == 1)
                rc = CUDA_SUCCESS; /* the move happened after all */
        }
    }
    if (rc != CUDA_SUCCESS) {
        vs_real.cuMemRelease(h);
        refund(b->dev, b->owner, c->counted);
        return rc;
    }
    refund(-1, b->owner, c->counted); /* before the pool keeps the handles */
    vs_hostpool_give(&c->host);
    c->dev_handle = h;
    c->where = CHUNK_DEVICE;
    vs_registry_move(b->base, VS_TIER_PINNED, VS_TIER_RESIDENT, c->counted);
    moved_on(b);
    return CUDA_SUCCESS;
}

/* ---- pageable ------------------------------------------------------------------- */

static CUresult to_pageable(struct buffer *b, struct chunk *c)
{
    if (c->where == CHUNK_PAGEABLE)
        return CUDA_SUCCESS;
    uint64_t va = b->base + c->offset;
    void *host = mmap(NULL, c->size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (host == MAP_FAILED)
        return CUDA_ERROR_OUT_OF_MEMORY;
    /* huge pages where the kernel offers them on request: the copy then
     * faults once per 2 MiB, not once per 4 KiB page (12 us each on a
     * paravirtualised host); the chunk is whole granules, all written */
    madvise(host, c->size, MADV_HUGEPAGE);
    CUresult rc = vs_staging_copy(b->ctx, va, host, c->size, false);
    if (rc == CUDA_SUCCESS)
        rc = vs_real.cuMemUnmap(va, c->size);
    if (rc != CUDA_SUCCESS) {
        vs_warn("offload: moving %llu bytes at 0x%llx to pageable memory failed (%d); it stays",
                (unsigned long long)c->size, (unsigned long long)va, (int)rc);
        munmap(host, c->size);
        return rc;
    }
    enum vs_tier from = c->where == CHUNK_DEVICE ? VS_TIER_RESIDENT : VS_TIER_PINNED;
    if (c->where == CHUNK_DEVICE) {
        vs_real.cuMemRelease(c->dev_handle);
        c->dev_handle = 0;
        refund(b->dev, b->owner, c->counted);
        moved_off(b);
    } else {
        refund(-1, b->owner, c->counted);
        vs_hostpool_give(&c->host);
    }
    c->pageable = host;
    c->where = CHUNK_PAGEABLE;
    vs_registry_move(b->base, from, VS_TIER_PAGEABLE, c->counted);
    became_pageable(b);
    return CUDA_SUCCESS;
}

static CUresult pageable_to_device(struct buffer *b, struct chunk *c)
{
    struct vs_charge ch;
    if (vs_budget_charge_device(b->dev, b->owner, c->counted, &ch) != VS_ADMIT)
        return CUDA_ERROR_OUT_OF_MEMORY;
    uint64_t va = b->base + c->offset;
    CUmemGenericAllocationHandle h = 0;
    CUresult rc = create_device(b->dev, c->size, &h);
    vs_budget_settle(&ch, rc == CUDA_SUCCESS);
    if (rc != CUDA_SUCCESS)
        return rc;
    /* nothing can reach va while it is pageable: map it in place */
    rc = vs_real.cuMemMap(va, c->size, 0, h, 0);
    if (rc == CUDA_SUCCESS) {
        rc = set_access(b, va, c->size, false);
        if (rc == CUDA_SUCCESS)
            rc = vs_staging_copy(b->ctx, va, c->pageable, c->size, true);
        if (rc != CUDA_SUCCESS)
            vs_real.cuMemUnmap(va, c->size);
    }
    if (rc != CUDA_SUCCESS) {
        vs_real.cuMemRelease(h);
        refund(b->dev, b->owner, c->counted);
        return rc;
    }
    c->dev_handle = h;
    c->where = CHUNK_DEVICE;
    left_pageable(b, c);
    moved_on(b);
    vs_registry_move(b->base, VS_TIER_PAGEABLE, VS_TIER_RESIDENT, c->counted);
    return CUDA_SUCCESS;
}

static CUresult pageable_to_pinned(struct buffer *b, struct chunk *c)
{
    struct vs_charge pin;
    if (vs_budget_charge_pinned(c->counted, &pin) != VS_ADMIT) {
        vs_warn("offload: %llu bytes at 0x%llx come back from pageable memory past the "
                "pin limit: work is about to reach them and the device has no room",
                (unsigned long long)c->counted, (unsigned long long)(b->base + c->offset));
        vs_budget_charge_pinned_over(c->counted, &pin);
    }
    vs_budget_settle(&pin, true);
    uint64_t va = b->base + c->offset;
    struct vs_host_block hb;
    CUresult rc = vs_hostpool_take(c->size, b->gran, &hb);
    if (rc == CUDA_SUCCESS) {
        rc = vs_hostpool_map(&hb, va);
        if (rc == CUDA_SUCCESS) {
            rc = set_access(b, va, c->size, true);
            if (rc == CUDA_SUCCESS)
                rc = vs_staging_copy(b->ctx, va, c->pageable, c->size, true);
            if (rc != CUDA_SUCCESS)
                vs_real.cuMemUnmap(va, c->size);
        }
        if (rc != CUDA_SUCCESS)
            vs_hostpool_give(&hb);
    }
    if (rc != CUDA_SUCCESS) {
        vs_budget_refund(&pin);
        return rc;
    }
    c->host = hb;
    c->where = CHUNK_PINNED;
    left_pageable(b, c);
    vs_registry_move(b->base, VS_TIER_PAGEABLE, VS_TIER_PINNED, c->counted);
    return CUDA_SUCCESS;
}

static CUresult from_pageable(struct buffer *b, struct chunk *c, bool pinned_too)
{
    CUresult rc = pageable_to_device(b, c);
    if (rc != CUDA_SUCCESS && pinned_too)
        rc = pageable_to_pinned(b, c);
    if (rc != CUDA_SUCCESS)
        vs_error("offload: %llu bytes at 0x%llx cannot come back from pageable memory "
                 "(%d); work that reaches them is refused",
                 (unsigned long long)c->size, (unsigned long long)(b->base + c->offset),
                 (int)rc);
    return rc;
}

/* ---- release --------------------------------------------------------------------- */

static void release(struct buffer *b, struct chunk *c)
{
    uint64_t va = b->base + c->offset;
    switch (c->where) {
    case CHUNK_DEVICE:
        if (c->dev_handle) {
            vs_real.cuMemUnmap(va, c->size);
            vs_real.cuMemRelease(c->dev_handle);
        }
        break;
    case CHUNK_PINNED:
        vs_real.cuMemUnmap(va, c->size);
        vs_hostpool_give(&c->host);
        break;
    case CHUNK_PAGEABLE:
        left_pageable(b, c);
        break;
    }
}

/* ---- backing a buffer ------------------------------------------------------------ */

static uint64_t granularity(int dev)
{
    if (dev < 0 || dev >= VS_MAX_DEVICES)
        return UINT64_MAX;
    uint64_t g = __atomic_load_n(&gran_of[dev], __ATOMIC_ACQUIRE);
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
    CUdevice d;
    int algorithms = 0;
    if (g != UINT64_MAX && vs_real.cuDeviceGet && vs_real.cuDeviceGetAttribute &&
        vs_real.cuDeviceGet(&d, dev) == CUDA_SUCCESS &&
        vs_real.cuDeviceGetAttribute(&algorithms, CU_DEVICE_ATTRIBUTE_MEM_DECOMPRESS_ALGORITHM_MASK,
                                     d) == CUDA_SUCCESS &&
        algorithms != 0)
        __atomic_store_n(&usage_of[dev], CU_MEM_CREATE_USAGE_HW_DECOMPRESS, __ATOMIC_RELAXED);
    /* release: whoever sees the granularity sees the usage */
    __atomic_store_n(&gran_of[dev], g, __ATOMIC_RELEASE);
    return g;
}

static void unback(struct buffer *b)
{
    for (uint32_t i = 0; i < b->n_chunks; i++)
        release(b, &b->chunk[i]);
    vs_real.cuMemAddressFree(b->base, b->span);
}

static CUresult back(struct buffer *b)
{
    if (vs_real.cuCtxGetCurrent)
        vs_real.cuCtxGetCurrent(&b->ctx);
    CUdeviceptr va = 0;
    CUresult rc = vs_real.cuMemAddressReserve(&va, b->span, b->gran, 0, 0);
    if (rc != CUDA_SUCCESS)
        return rc;
    b->base = va;
    for (uint32_t i = 0; i < b->n_chunks; i++) {
        struct chunk *c = &b->chunk[i];
        rc = create_device(b->dev, c->size, &c->dev_handle);
        if (rc == CUDA_SUCCESS) {
            rc = vs_real.cuMemMap(b->base + c->offset, c->size, 0, c->dev_handle, 0);
            if (rc != CUDA_SUCCESS)
                vs_real.cuMemRelease(c->dev_handle);
        }
        if (rc != CUDA_SUCCESS) {
            c->dev_handle = 0; /* unback releases the chunks before it */
            unback(b);
            return rc;
        }
    }
    rc = set_access(b, b->base, b->span, false);
    if (rc != CUDA_SUCCESS)
        unback(b);
    return rc;
}

/* Peer access to b's device, or the program's own grant on b, changed:
 * every mapped chunk gets the access set_access gives now (pageable chunks
 * are mapped later, with it). */
static void refresh_access(struct buffer *b)
{
    for (uint32_t i = 0; i < b->n_chunks; i++) {
        const struct chunk *c = &b->chunk[i];
        if (c->where == CHUNK_PAGEABLE)
            continue;
        CUresult rc = set_access(b, b->base + c->offset, c->size, c->where == CHUNK_PINNED);
        if (rc != CUDA_SUCCESS)
            vs_warn("access: cannot set the access of 0x%llx (%d); peers may not reach it",
                    (unsigned long long)(b->base + c->offset), (int)rc);
    }
}

static CUresult export_chunk(struct buffer *b, struct chunk *c, int *fd)
{
    if (vs_real.cuMemExportToShareableHandle == NULL)
        return CUDA_ERROR_NOT_SUPPORTED;
    CUresult rc = vs_real.cuMemExportToShareableHandle(fd, c->dev_handle,
                                                       CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR, 0);
    /* the driver's descriptor lacks O_CLOEXEC: set it before anything else,
     * so an exec elsewhere in the program does not carry it off */
    if (rc == CUDA_SUCCESS)
        fcntl(*fd, F_SETFD, FD_CLOEXEC);
    return rc;
}

const struct vs_tier_ops vs_chunk_ops = {
    .now = vs_now_ns,
    .trim = vs_pool_trim,
    .granularity = granularity,
    .back = back,
    .unback = unback,
    .fence_begin = fence_begin,
    .fence_end = fence_end,
    .hold_begin = hold_begin,
    .drain = drain,
    .device_to_pinned = device_to_pinned,
    .pinned_to_device = pinned_to_device,
    .to_pageable = to_pageable,
    .from_pageable = from_pageable,
    .export_chunk = export_chunk,
    .host_ahead = vs_hostpool_ahead,
    .release_staging = vs_staging_release,
    .refresh_access = refresh_access,
};

void vs_chunk_atfork_child(void)
{
    scratch = 0;
    scratch_size = 0;
    memset(gran_of, 0, sizeof gran_of);
    memset(usage_of, 0, sizeof usage_of);
}
