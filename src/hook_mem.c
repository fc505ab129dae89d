/*
 * hook_mem.c: device memory the driver allocates for the program.
 *
 * Allocation: charge the budget (which may refuse with the driver's own
 * CUDA_ERROR_OUT_OF_MEMORY), call the driver, settle the charge with its
 * answer, and record the range with its owner and device. Release: take
 * the record out first, then call the driver, and put it back if the driver
 * refuses; the charge is given back only once the memory really is free.
 * In that order no other thread can be handed the same address while its
 * old record still stands, and the budget never counts memory as free
 * before the driver does.
 */
#include "hooks.h"

#include <errno.h>

/* Record the range; false when the registry has no room for it. */
static bool track(struct vs_charge *ch, CUdeviceptr base, uint64_t size,
                  enum vs_kind kind)
{
    int rc = vs_registry_add(base, size, ch->dev, kind, ch->owner);
    if (VS_UNLIKELY(rc == -ENOMEM)) {
        vs_error("out of memory for the registry: %llu bytes at 0x%llx are not "
                 "tracked or counted against the limits",
                 (unsigned long long)size, (unsigned long long)base);
        vs_budget_refund(ch); /* no record, so its release could not give it back */
    } else if (VS_UNLIKELY(rc == -EEXIST)) {
        vs_debug("0x%llx overlapped a stale record (a release vramshim did not "
                 "see); replaced",
                 (unsigned long long)base);
    }
    return rc != -ENOMEM;
}

CUresult vs_alloc_finish(struct vs_charge *ch, CUresult rc, uint64_t base, uint64_t size,
                         enum vs_kind kind)
{
    vs_budget_settle(ch, rc == CUDA_SUCCESS);
    if (rc == CUDA_SUCCESS)
        (void)track(ch, base, size, kind);
    else if (rc == CUDA_ERROR_OUT_OF_MEMORY)
        vs_registry_count_oom();
    return rc;
}

static CUresult finish(struct vs_charge *ch, CUresult rc, CUdeviceptr *dptr,
                       uint64_t size, enum vs_kind kind)
{
    return vs_alloc_finish(ch, rc, rc == CUDA_SUCCESS ? *dptr : 0, size, kind);
}

/* Charge `bytes` to the current device or return the refusal. */
#define ADMIT(call, bytes, ch)                                               \
    do {                                                                     \
        CUresult admit_rc_ = vs_admit_device(call, vs_current_device(), bytes, \
                                             ch);                            \
        if (admit_rc_ != CUDA_SUCCESS)                                       \
            return admit_rc_;                                                \
    } while (0)

/* The driver answered a release of a record taken out beforehand. */
CUresult vs_alloc_released(bool had, const struct vs_alloc_info *removed, CUresult rc)
{
    if (rc == CUDA_SUCCESS && had)
        vs_budget_release(removed);
    else if (had)
        vs_registry_restore(removed);
    return rc;
}

/* Release `base` through `call`, keeping the registry and budget in step. */
#define RELEASE(base, call)                                   \
    do {                                                      \
        struct vs_alloc_info removed;                         \
        bool had = vs_registry_remove((base), &removed) == 0; \
        return vs_alloc_released(had, &removed, (call));               \
    } while (0)

/* With offload on, a buffer of a granule or more is backed by tier.c so
 * that it can move; if the device is full even so (another process took
 * it), room is made once and the backing tried again, and then other
 * processes on the device are asked to give way (relief.c). Every kind of
 * allocation below does the same when the driver says out of memory
 * (VS_ALLOC_RETRY). */
CUresult vs_hook_cuMemAlloc_v2(CUdeviceptr *dptr, size_t bytesize)
{
    struct vs_charge ch;
    ADMIT("cuMemAlloc", bytesize, &ch);
    if (vs_tier_wants(ch.dev, bytesize)) {
        struct vs_backing *pending = NULL;
        CUresult rc = vs_tier_alloc(dptr, bytesize, ch.dev, ch.owner, &pending);
        if (rc == CUDA_ERROR_OUT_OF_MEMORY && vs_tier_make_room(ch.dev, -1, bytesize, bytesize) > 0)
            rc = vs_tier_alloc(dptr, bytesize, ch.dev, ch.owner, &pending);
        if (rc == CUDA_ERROR_OUT_OF_MEMORY && vs_relief_ask(ch.dev, bytesize, "cuMemAlloc", false))
            rc = vs_tier_alloc(dptr, bytesize, ch.dev, ch.owner, &pending);
        if (rc != CUDA_SUCCESS && rc != CUDA_ERROR_NOT_SUPPORTED)
            return finish(&ch, rc, dptr, bytesize, VS_KIND_DEVICE);
        if (rc == CUDA_SUCCESS) {
            /* recorded first, then published: a move can pick it only
             * once the registry has the record its charges follow */
            vs_budget_settle(&ch, true);
            vs_tier_publish(pending, track(&ch, *dptr, bytesize, VS_KIND_DEVICE));
            return rc;
        }
    }
    CUresult rc;
    VS_ALLOC_RETRY(rc, ch.dev, bytesize, "cuMemAlloc", vs_real.cuMemAlloc_v2(dptr, bytesize));
    return finish(&ch, rc, dptr, bytesize, VS_KIND_DEVICE);
}

/* The pitch is known only afterwards: charge the width rounded up to 512
 * bytes (the texture pitch alignment of every GPU so far), then settle on
 * the pitch the driver chose. */
uint64_t vs_pitch_guess(uint64_t width, uint64_t height)
{
    uint64_t guess;
    if (__builtin_mul_overflow((width + 511) & ~511ULL, height, &guess))
        guess = 0; /* absurd; the driver will refuse it */
    return guess;
}

CUresult vs_hook_cuMemAllocPitch_v2(CUdeviceptr *dptr, size_t *pPitch,
                                    size_t WidthInBytes, size_t Height,
                                    unsigned int ElementSizeBytes)
{
    uint64_t guess = vs_pitch_guess(WidthInBytes, Height);
    struct vs_charge ch;
    ADMIT("cuMemAllocPitch", guess, &ch);
    CUresult rc;
    VS_ALLOC_RETRY(rc, ch.dev, guess, "cuMemAllocPitch",
                   vs_real.cuMemAllocPitch_v2(dptr, pPitch, WidthInBytes, Height,
                                              ElementSizeBytes));
    uint64_t size = rc == CUDA_SUCCESS ? (uint64_t)*pPitch * Height : 0;
    if (rc == CUDA_SUCCESS)
        vs_budget_resize(&ch, size);
    return finish(&ch, rc, dptr, size, VS_KIND_DEVICE);
}

/* Managed memory counts in full: the driver may make all of it resident,
 * and oversubscribed managed memory has been seen to hang a GPU. */
CUresult vs_hook_cuMemAllocManaged(CUdeviceptr *dptr, size_t bytesize,
                                   unsigned int flags)
{
    struct vs_charge ch;
    ADMIT("cuMemAllocManaged", bytesize, &ch);
    CUresult rc;
    VS_ALLOC_RETRY(rc, ch.dev, bytesize, "cuMemAllocManaged",
                   vs_real.cuMemAllocManaged(dptr, bytesize, flags));
    return finish(&ch, rc, dptr, bytesize, VS_KIND_MANAGED);
}

/* A backed buffer leaves the tier first (a move of it finishes or stops),
 * so the record taken out next says where every byte is, and its charges
 * go back exactly. */
CUresult vs_hook_cuMemFree_v2(CUdeviceptr dptr)
{
    struct vs_backing *held = vs_tier_free_begin(dptr);
    struct vs_alloc_info removed;
    bool had = vs_registry_remove(dptr, &removed) == 0;
    CUresult rc = CUDA_SUCCESS;
    if (held)
        vs_tier_free_end(held);
    else
        rc = vs_real.cuMemFree_v2(dptr);
    return vs_alloc_released(had, &removed, rc);
}

/* Stream-ordered allocations are charged by their pool's reserve
 * (pool.c), at the pool's own location, not by the bytes handed out: what
 * the reserve may have to grow is admitted first, and when that does not
 * fit, the pools (and graph memory) there are trimmed to their use before
 * anyone's buffer is evicted or the call refused. An allocation in a
 * capturing stream is a graph's memory node: nothing is charged or
 * recorded at capture; the graph's memory is charged when it runs. */
struct async_alloc {
    bool captured;
    struct vs_pool_use use;
    struct vs_charge growth; /* admitted beforehand; the reserve read back replaces it */
};

static CUresult admit_growth(const char *call, uint64_t growth, struct async_alloc *a)
{
    if (a->use.dev < 0)
        return vs_admit_pinned(call, growth, &a->growth);
    return vs_admit_device(call, a->use.dev, growth, &a->growth);
}

static CUresult async_begin(const char *call, CUmemoryPool pool, uint64_t bytes, CUstream s,
                            bool per_thread, struct async_alloc *a)
{
    a->growth = (struct vs_charge){.dev = -1, .owner = 0, .bytes = 0};
    a->captured = vs_capture_active() && vs_stream_capturing(s, per_thread);
    if (a->captured)
        return CUDA_SUCCESS;
    int dev = vs_current_device();
    uint64_t growth = vs_pool_admit(pool, dev, bytes, &a->use);
    if (growth == 0)
        return CUDA_SUCCESS;
    if (a->use.dev >= 0 && vs_budget_charge_device(a->use.dev, vs_owner_current(), growth,
                                                   &a->growth) == VS_ADMIT)
        return CUDA_SUCCESS;
    if (a->use.dev < 0 && vs_budget_charge_pinned(growth, &a->growth) == VS_ADMIT)
        return CUDA_SUCCESS;
    /* trimmed first, so that the growth admitted next is worked out on
     * the reserve as it stands after the trim */
    if (vs_pool_trim(a->use.dev) > 0)
        growth = vs_pool_admit(pool, dev, bytes, &a->use);
    return growth ? admit_growth(call, growth, a) : CUDA_SUCCESS;
}

static CUresult async_end(struct async_alloc *a, CUresult rc, CUdeviceptr *dptr, uint64_t bytes)
{
    if (a->captured) {
        if (rc == CUDA_SUCCESS)
            vs_graph_mem_seen(vs_current_device());
        return rc;
    }
    vs_budget_settle(&a->growth, false);
    vs_pool_after(&a->use, rc == CUDA_SUCCESS, bytes);
    struct vs_charge none = {.dev = a->use.dev, .owner = vs_owner_current(), .bytes = 0};
    return finish(&none, rc, dptr, bytes, VS_KIND_ASYNC);
}

/* The stream-ordered family comes in legacy and per-thread-stream variants
 * that differ only in which driver entry they call. */
#define ASYNC_HOOKS(suffix, per_thread)                                        \
    CUresult vs_hook_cuMemAllocAsync##suffix(CUdeviceptr *dptr, size_t bytesize, \
                                             CUstream hStream)                 \
    {                                                                          \
        struct async_alloc a;                                                  \
        CUresult rc = async_begin("cuMemAllocAsync", NULL, bytesize, hStream,  \
                                  per_thread, &a);                             \
        if (rc != CUDA_SUCCESS)                                                \
            return rc;                                                         \
        if (a.captured || a.use.dev < 0)                                       \
            rc = vs_real.cuMemAllocAsync##suffix(dptr, bytesize, hStream);     \
        else /* the device short: this process's buffers, then the peers */    \
            VS_ALLOC_RETRY(rc, a.use.dev, bytesize, "cuMemAllocAsync",         \
                           vs_real.cuMemAllocAsync##suffix(dptr, bytesize, hStream));\
        return async_end(&a, rc, dptr, bytesize);                              \
    }                                                                          \
    CUresult vs_hook_cuMemAllocFromPoolAsync##suffix(                          \
        CUdeviceptr *dptr, size_t bytesize, CUmemoryPool pool, CUstream hStream) \
    {                                                                          \
        struct async_alloc a;                                                  \
        CUresult rc = async_begin("cuMemAllocFromPoolAsync", pool,             \
                                  bytesize, hStream, per_thread, &a);          \
        if (rc != CUDA_SUCCESS)                                                \
            return rc;                                                         \
        if (a.captured || a.use.dev < 0)                                       \
            rc = vs_real.cuMemAllocFromPoolAsync##suffix(dptr, bytesize, pool, hStream);\
        else /* the device short: this process's buffers, then the peers */    \
            VS_ALLOC_RETRY(rc, a.use.dev, bytesize, "cuMemAllocFromPoolAsync", \
                           vs_real.cuMemAllocFromPoolAsync##suffix(dptr, bytesize,\
                                                                   pool, hStream));\
        return async_end(&a, rc, dptr, bytesize);                              \
    }                                                                          \
    CUresult vs_hook_cuMemFreeAsync##suffix(CUdeviceptr dptr, CUstream hStream) \
    {                                                                          \
        RELEASE(dptr, vs_real.cuMemFreeAsync##suffix(dptr, hStream));          \
    }

ASYNC_HOOKS(, false)
ASYNC_HOOKS(_ptsz, true)
