/*
 * hook_ctx.c: contexts and their runtime limits, as device memory the
 * process holds beyond its allocations (the `overhead` of the stats).
 *
 * The driver says how much a context, a limit or a module takes nowhere,
 * so vramshim reads it off the device's free memory (cuMemGetInfo) right
 * before and right after the call, less whatever this process charged
 * meanwhile on other threads, and charges the difference to the device
 * (overhead.c). Measured events are serialised, so that two loads never
 * see each other's memory. cuCtxSetLimit and module loads are measured in
 * the current context. A new context is measured against a context of
 * this process on the same device current on the calling thread; the
 * first one on a device has nothing to measure against, so it is charged
 * what the device holds beyond this process's charges right after it
 * appears: exact when the process is alone on the device, and at most
 * VS_CONTEXT_MAX when others hold memory (their memory then counts as
 * this context's: the slice errs on the side of not overcommitting).
 * Memory another process takes or frees during the call itself skews
 * the reading by that much. The old ABI's cuCtxCreate / cuCtxDestroy
 * count as their _v2 twins.
 *
 * Where the program has loaded and initialised NVML and NVML lists this
 * process, the same events are measured by NVML's figure for the process
 * instead (hook_nvml.c): the event is charged what the process uses
 * beyond everything charged on the device, so other processes cannot skew
 * it, a first context needs no cap, and memory the free-memory measure
 * missed (a library's share of a context made after its load) is taken in
 * at the next event. Each device's stats say which source gave its last
 * figure (overhead_source).
 */
#include "hooks.h"

#include <pthread.h>

#define VS_CONTEXT_MAX (512ULL << 20)

static pthread_mutex_t probe_lock = PTHREAD_MUTEX_INITIALIZER;
/* Retains of each device's primary context seen, and its handle (under
 * probe_lock). */
static int primary_refs[VS_MAX_DEVICES];
static CUcontext primary_ctx[VS_MAX_DEVICES];

static bool device_ok(int dev) { return dev >= 0 && dev < VS_MAX_DEVICES; }

static uint64_t charged_on(int dev)
{
    struct vs_budget_view v;
    vs_budget_device_view(dev, &v);
    return v.charged;
}

/* Free memory of the current context's device, if that is dev. */
static bool free_here(int dev, uint64_t *free_bytes, uint64_t *total)
{
    size_t f, t;
    if (vs_real.cuMemGetInfo_v2 == NULL || vs_current_device() != dev ||
        vs_real.cuMemGetInfo_v2(&f, &t) != CUDA_SUCCESS)
        return false;
    *free_bytes = f;
    *total = t;
    return true;
}

/* Free memory of ctx's device, asked in ctx. */
static bool free_in(CUcontext ctx, int dev, uint64_t *free_bytes, uint64_t *total)
{
    if (vs_real.cuCtxPushCurrent_v2 == NULL || vs_real.cuCtxPushCurrent_v2(ctx) != CUDA_SUCCESS)
        return false;
    bool ok = free_here(dev, free_bytes, total);
    CUcontext popped;
    vs_real.cuCtxPopCurrent_v2(&popped);
    return ok;
}

void vs_probe_begin(struct vs_probe *p, int dev)
{
    pthread_mutex_lock(&probe_lock);
    p->dev = dev;
    p->charged = device_ok(dev) ? charged_on(dev) : 0;
    uint64_t total;
    p->known = device_ok(dev) && free_here(dev, &p->free, &total);
    p->nvml_known = device_ok(dev) && vs_nvml_process_used(dev, &p->nvml_used);
}

int64_t vs_probe_end(struct vs_probe *p, CUresult rc, CUcontext in, bool new_context)
{
    int64_t bytes = 0;
    uint64_t after, total, nvml_used;
    if (rc == CUDA_SUCCESS && device_ok(p->dev) && p->nvml_known &&
        vs_nvml_process_used(p->dev, &nvml_used)) {
        /* what NVML says this process took across the call, less what other
         * threads of it were charged meanwhile (theirs, and possibly only
         * admitted, not yet taken): other processes do not show in it */
        uint64_t mine = charged_on(p->dev) - p->charged;
        bytes = (int64_t)(nvml_used - p->nvml_used) - (int64_t)mine;
        vs_overhead_set_source(p->dev, VS_SOURCE_NVML);
    } else if (rc == CUDA_SUCCESS && device_ok(p->dev) &&
               (in ? free_in(in, p->dev, &after, &total) : free_here(p->dev, &after, &total))) {
        /* what other threads of this process took meanwhile is theirs */
        uint64_t mine = charged_on(p->dev) - p->charged;
        if (p->known) {
            bytes = (int64_t)(p->free - after) - (int64_t)mine;
            vs_overhead_set_source(p->dev, VS_SOURCE_FREE_MEMORY);
        } else if (new_context) {
            vs_overhead_set_source(p->dev, VS_SOURCE_ESTIMATE);
            uint64_t used = total - after, ours = p->charged + mine;
            bytes = used > ours ? (int64_t)(used - ours) : 0;
            if (bytes > (int64_t)VS_CONTEXT_MAX)
                bytes = (int64_t)VS_CONTEXT_MAX;
        }
    }
    pthread_mutex_unlock(&probe_lock);
    return bytes;
}

/* A forked child has no context of the parent's (CUDA cannot be used in
 * it), and a thread of the parent may have held the lock at the fork. */
void vs_ctx_atfork_child(void)
{
    pthread_mutex_init(&probe_lock, NULL);
    for (int d = 0; d < VS_MAX_DEVICES; d++) {
        primary_refs[d] = 0;
        primary_ctx[d] = NULL;
    }
}

/* ---- contexts ---------------------------------------------------------- */

static CUresult created(CUresult rc, struct vs_probe *p, CUcontext *pctx)
{
    /* a new context is current on the calling thread */
    int64_t bytes = vs_probe_end(p, rc, NULL, true);
    if (rc == CUDA_SUCCESS && bytes > 0)
        vs_overhead_add(VS_OVERHEAD_CONTEXT, (uint64_t)(uintptr_t)*pctx, p->dev, 0, bytes, false);
    return rc;
}

CUresult vs_hook_cuCtxCreate_v2(CUcontext *pctx, unsigned int flags, CUdevice dev)
{
    struct vs_probe p;
    vs_probe_begin(&p, (int)dev);
    return created(vs_real.cuCtxCreate_v2(pctx, flags, dev), &p, pctx);
}

CUresult vs_hook_cuCtxCreate_v3(CUcontext *pctx, CUexecAffinityParam *params, int n,
                                unsigned int flags, CUdevice dev)
{
    struct vs_probe p;
    vs_probe_begin(&p, (int)dev);
    return created(vs_real.cuCtxCreate_v3(pctx, params, n, flags, dev), &p, pctx);
}

CUresult vs_hook_cuCtxCreate_v4(CUcontext *pctx, CUctxCreateParams *params, unsigned int flags,
                                CUdevice dev)
{
    struct vs_probe p;
    vs_probe_begin(&p, (int)dev);
    return created(vs_real.cuCtxCreate_v4(pctx, params, flags, dev), &p, pctx);
}

/* The old ABI's name (cuda.h: cuCtxCreate(CUcontext *, unsigned int,
 * CUdevice), before CUDA 3.2) makes a context just the same. */
CUresult vs_hook_cuCtxCreate(CUcontext *pctx, unsigned int flags, CUdevice dev)
{
    struct vs_probe p;
    vs_probe_begin(&p, (int)dev);
    return created(vs_real.cuCtxCreate(pctx, flags, dev), &p, pctx);
}

/* The driver unloads the context's modules with it. */
static CUresult destroyed(CUresult rc, CUcontext ctx)
{
    if (rc == CUDA_SUCCESS)
        vs_overhead_drop(VS_OVERHEAD_CONTEXT, (uint64_t)(uintptr_t)ctx);
    return rc;
}

CUresult vs_hook_cuCtxDestroy_v2(CUcontext ctx)
{
    return destroyed(vs_real.cuCtxDestroy_v2(ctx), ctx);
}

/* The old ABI's name (before CUDA 4.0) */
CUresult vs_hook_cuCtxDestroy(CUcontext ctx) { return destroyed(vs_real.cuCtxDestroy(ctx), ctx); }

/* The first retain makes the primary context; it lives until the last
 * release or a reset. It is not current after the retain, so it is asked
 * for its free memory by being pushed for a moment. */
CUresult vs_hook_cuDevicePrimaryCtxRetain(CUcontext *pctx, CUdevice dev)
{
    if (!device_ok((int)dev))
        return vs_real.cuDevicePrimaryCtxRetain(pctx, dev);
    struct vs_probe p;
    vs_probe_begin(&p, (int)dev);
    CUresult rc = vs_real.cuDevicePrimaryCtxRetain(pctx, dev);
    bool first = rc == CUDA_SUCCESS && primary_refs[dev]++ == 0;
    if (first)
        primary_ctx[dev] = *pctx;
    int64_t bytes = vs_probe_end(&p, first ? rc : CUDA_ERROR_UNKNOWN, *pctx, true);
    if (bytes > 0)
        vs_overhead_add(VS_OVERHEAD_CONTEXT, (uint64_t)(uintptr_t)*pctx, (int)dev, 0, bytes,
                        false);
    return rc;
}

/* A reset destroys the context's state (its next use makes it anew, and
 * the next retain measures it again). */
static void primary_gone(CUdevice dev, bool reset)
{
    pthread_mutex_lock(&probe_lock);
    CUcontext ctx = primary_ctx[dev];
    bool last = ctx && (reset || (primary_refs[dev] > 0 && --primary_refs[dev] == 0));
    if (reset)
        primary_refs[dev] = 0;
    pthread_mutex_unlock(&probe_lock);
    if (last)
        vs_overhead_drop(VS_OVERHEAD_CONTEXT, (uint64_t)(uintptr_t)ctx);
}

CUresult vs_hook_cuDevicePrimaryCtxRelease_v2(CUdevice dev)
{
    CUresult rc = vs_real.cuDevicePrimaryCtxRelease_v2(dev);
    if (rc == CUDA_SUCCESS && device_ok((int)dev))
        primary_gone(dev, false);
    return rc;
}

CUresult vs_hook_cuDevicePrimaryCtxReset_v2(CUdevice dev)
{
    CUresult rc = vs_real.cuDevicePrimaryCtxReset_v2(dev);
    if (rc == CUDA_SUCCESS && device_ok((int)dev))
        primary_gone(dev, true);
    return rc;
}

/* ---- runtime limits ---------------------------------------------------- */

/* Stack, malloc heap and printf FIFO are reserved when set; lowering one
 * gives memory back, so the change is kept with its sign. A raise past the
 * VRAM limit is undone and answered CUDA_ERROR_OUT_OF_MEMORY, as the
 * driver answers one past the device. */
CUresult vs_hook_cuCtxSetLimit(CUlimit limit, size_t value)
{
    CUcontext ctx = NULL;
    size_t old;
    if (vs_real.cuCtxGetCurrent == NULL || vs_real.cuCtxGetCurrent(&ctx) != CUDA_SUCCESS ||
        ctx == NULL || vs_real.cuCtxGetLimit == NULL ||
        vs_real.cuCtxGetLimit(&old, limit) != CUDA_SUCCESS)
        return vs_real.cuCtxSetLimit(limit, value);
    struct vs_probe p;
    vs_probe_begin(&p, vs_current_device());
    CUresult rc = vs_real.cuCtxSetLimit(limit, value);
    int64_t bytes = vs_probe_end(&p, rc, NULL, false);
    uint64_t key = (uint64_t)(uintptr_t)ctx;
    if (bytes < 0)
        vs_overhead_add(VS_OVERHEAD_CONTEXT, key, p.dev, 0, bytes, false);
    else if (bytes > 0 &&
             vs_admit_overhead("cuCtxSetLimit", VS_OVERHEAD_CONTEXT, key, p.dev, 0,
                               (uint64_t)bytes) != CUDA_SUCCESS) {
        vs_real.cuCtxSetLimit(limit, old);
        return CUDA_ERROR_OUT_OF_MEMORY;
    }
    return rc;
}
