/*
 * hostpool.c: page-locked host memory for offloaded chunks.
 *
 * An offloaded chunk lives in host physical handles (cuMemCreate on a host
 * location) mapped at the chunk's own device address. Chunks are whole
 * multiples of the granularity up to 32 granules, so a chunk is backed by
 * one handle per set bit of its size in granules: at most six handles, of
 * sizes granule << k, mapped one after another, largest first. That wastes
 * nothing and lets six free lists serve every chunk size.
 *
 * Creating host handles is slow (1 GiB costs about 300 ms on an H100: the
 * kernel faults and pins every page), so it is kept off the eviction path:
 * handles given back are kept, up to POOL_KEEP_BYTES (2 GiB) in all, and once the
 * first eviction shows the process is under pressure a thread creates
 * full-chunk handles ahead of need, up to POOL_AHEAD_BYTES. A handle in use
 * is charged to the pin budget through its chunk. Idle handles are not
 * charged (the next eviction's charge would otherwise find them in its
 * way), but they are vramshim's own pins and yield to the program's: the
 * pool only grows inside what the budget leaves free, and gives back
 * whatever the program's own pinning now needs (vs_hostpool_trim). They are
 * reported as pinned.staging.
 */
#include "offload_internal.h"

#include <errno.h>
#include <pthread.h>
#include <string.h>

#define POOL_SLOTS 64
#define POOL_KEEP_BYTES (2ULL << 30)
#define POOL_AHEAD_BYTES (256ULL << 20)
#define FULL_CLASS (VS_HOST_CLASSES - 1) /* a whole chunk: one handle */

static pthread_mutex_t pool_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t pool_wake = PTHREAD_COND_INITIALIZER;
static CUmemGenericAllocationHandle idle[VS_HOST_CLASSES][POOL_SLOTS];
static int n_idle[VS_HOST_CLASSES];
static uint64_t idle_bytes;
static _Atomic uint64_t created_bytes;
/* Every idle handle is pool_gran << its class (the first granularity seen;
 * all devices seen so far have the same). */
static uint64_t pool_gran;
static bool filler_started, filler_asked;
static CUcontext filler_ctx; /* current on the filler while it creates */

static void idle_add(int k, CUmemGenericAllocationHandle h, uint64_t size)
{
    idle[k][n_idle[k]++] = h;
    idle_bytes += size;
    vs_registry_staging(+(int64_t)size);
}

static CUmemGenericAllocationHandle idle_take(int k, uint64_t size)
{
    idle_bytes -= size;
    vs_registry_staging(-(int64_t)size);
    return idle[k][--n_idle[k]];
}

/* What the pin budget leaves free. */
static uint64_t pin_room(void)
{
    uint64_t charged, limit;
    vs_budget_pin_view(&charged, &limit);
    return limit > charged ? limit - charged : 0;
}

static CUresult create_host(uint64_t size, CUmemGenericAllocationHandle *out)
{
    CUmemAllocationProp prop;
    memset(&prop, 0, sizeof prop);
    prop.type = CU_MEM_ALLOCATION_TYPE_PINNED;
    prop.location.type = CU_MEM_LOCATION_TYPE_HOST_NUMA;
    prop.location.id = 0;
    CUresult rc = vs_real.cuMemCreate(out, size, &prop, 0);
    if (rc != CUDA_SUCCESS) { /* a driver or system without NUMA host locations */
        prop.location.type = CU_MEM_LOCATION_TYPE_HOST;
        rc = vs_real.cuMemCreate(out, size, &prop, 0);
    }
    if (rc == CUDA_SUCCESS)
        created_bytes += size;
    return rc;
}

CUresult vs_hostpool_take(uint64_t size, uint64_t gran, struct vs_host_block *out)
{
    memset(out, 0, sizeof *out);
    uint64_t granules = size / gran;
    if (size % gran || granules == 0 || granules >= (1u << VS_HOST_CLASSES))
        return CUDA_ERROR_INVALID_VALUE;
    out->gran = gran;
    pthread_mutex_lock(&pool_lock);
    if (pool_gran == 0)
        pool_gran = gran;
    bool pooled = pool_gran == gran;
    pthread_mutex_unlock(&pool_lock);
    for (int k = VS_HOST_CLASSES - 1; k >= 0; k--) {
        if (!(granules & (1u << k)))
            continue;
        CUmemGenericAllocationHandle h = 0;
        pthread_mutex_lock(&pool_lock);
        if (pooled && n_idle[k] > 0)
            h = idle_take(k, gran << k);
        pthread_mutex_unlock(&pool_lock);
        if (h == 0) {
            CUresult rc = create_host(gran << k, &h);
            if (rc != CUDA_SUCCESS) {
                vs_hostpool_give(out);
                return rc;
            }
        }
        out->h[k] = h;
        out->mask |= (uint8_t)(1u << k);
    }
    return CUDA_SUCCESS;
}

void vs_hostpool_give(struct vs_host_block *b)
{
    for (int k = 0; k < VS_HOST_CLASSES; k++) {
        if (!(b->mask & (1u << k)))
            continue;
        uint64_t size = b->gran << k;
        bool kept = false;
        pthread_mutex_lock(&pool_lock);
        if (b->gran == pool_gran && n_idle[k] < POOL_SLOTS &&
            idle_bytes + size <= POOL_KEEP_BYTES &&
            idle_bytes + size <= pin_room()) {
            idle_add(k, b->h[k], size);
            kept = true;
        }
        pthread_mutex_unlock(&pool_lock);
        if (!kept) {
            vs_real.cuMemRelease(b->h[k]);
            created_bytes -= size;
        }
    }
    memset(b, 0, sizeof *b);
}

CUresult vs_hostpool_map(const struct vs_host_block *b, uint64_t va)
{
    uint64_t off = 0;
    for (int k = VS_HOST_CLASSES - 1; k >= 0; k--) {
        if (!(b->mask & (1u << k)))
            continue;
        CUresult rc = vs_real.cuMemMap(va + off, b->gran << k, 0, b->h[k], 0);
        if (rc != CUDA_SUCCESS) {
            if (off)
                vs_real.cuMemUnmap(va, off);
            return rc;
        }
        off += b->gran << k;
    }
    return CUDA_SUCCESS;
}

uint64_t vs_hostpool_idle_bytes(void)
{
    pthread_mutex_lock(&pool_lock);
    uint64_t b = idle_bytes;
    pthread_mutex_unlock(&pool_lock);
    return b;
}

/* Release idle handles, smallest first, until at least `bytes` are freed
 * or none is left. Returns the bytes released. */
uint64_t vs_hostpool_trim(uint64_t bytes)
{
    uint64_t freed = 0;
    for (int k = 0; k < VS_HOST_CLASSES && freed < bytes; k++) {
        for (;;) {
            CUmemGenericAllocationHandle h = 0;
            pthread_mutex_lock(&pool_lock);
            uint64_t size = pool_gran << k;
            if (n_idle[k] > 0 && freed < bytes)
                h = idle_take(k, size);
            pthread_mutex_unlock(&pool_lock);
            if (h == 0)
                break;
            vs_real.cuMemRelease(h);
            created_bytes -= size;
            freed += size;
        }
    }
    return freed;
}

/* Pinned memory the program itself now holds must fit with the pool's:
 * give back idle handles until both do. */
void vs_hostpool_fit_budget(void)
{
    if (VS_LIKELY(__atomic_load_n(&idle_bytes, __ATOMIC_RELAXED) == 0))
        return;
    pthread_mutex_lock(&pool_lock);
    uint64_t room = pin_room(), have = idle_bytes;
    pthread_mutex_unlock(&pool_lock);
    if (have > room)
        vs_hostpool_trim(have - room);
}

static void *fill(void *arg)
{
    (void)arg;
    vs_thread_block_signals();
    pthread_mutex_lock(&pool_lock);
    for (;;) {
        while (!filler_asked)
            pthread_cond_wait(&pool_wake, &pool_lock);
        filler_asked = false;
        for (;;) {
            uint64_t size = pool_gran << FULL_CLASS;
            if (idle_bytes + size > POOL_AHEAD_BYTES || n_idle[FULL_CLASS] >= POOL_SLOTS ||
                idle_bytes + size > pin_room())
                break;
            CUcontext ctx = filler_ctx, popped;
            pthread_mutex_unlock(&pool_lock);
            CUmemGenericAllocationHandle h = 0;
            CUresult rc = CUDA_SUCCESS;
            if (ctx)
                rc = vs_real.cuCtxPushCurrent_v2(ctx);
            if (rc == CUDA_SUCCESS) {
                rc = create_host(size, &h);
                if (ctx)
                    vs_real.cuCtxPopCurrent_v2(&popped);
            }
            pthread_mutex_lock(&pool_lock);
            if (rc != CUDA_SUCCESS)
                break; /* the system is short of pinnable memory: evictions will say so */
            if (n_idle[FULL_CLASS] < POOL_SLOTS && idle_bytes + size <= pin_room()) {
                idle_add(FULL_CLASS, h, size);
            } else {
                pthread_mutex_unlock(&pool_lock);
                vs_real.cuMemRelease(h);
                created_bytes -= size;
                pthread_mutex_lock(&pool_lock);
                break;
            }
        }
    }
    return NULL;
}

void vs_hostpool_ahead(uint64_t gran, CUcontext ctx)
{
    pthread_mutex_lock(&pool_lock);
    filler_ctx = ctx;
    if (pool_gran == 0)
        pool_gran = gran;
    bool start = !filler_started && pool_gran == gran;
    filler_started |= start;
    filler_asked = pool_gran == gran;
    pthread_cond_signal(&pool_wake);
    pthread_mutex_unlock(&pool_lock);
    if (!start)
        return;
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    pthread_t t;
    if (pthread_create(&t, &attr, fill, NULL) != 0)
        vs_warn("offload: cannot start the host memory thread; evictions create "
                "their own host memory");
    pthread_attr_destroy(&attr);
}

/* A forked child inherits handles its driver cannot use. */
void vs_hostpool_atfork_child(void)
{
    pthread_mutex_init(&pool_lock, NULL);
    pthread_cond_init(&pool_wake, NULL);
    pool_gran = 0;
    filler_started = filler_asked = false;
    filler_ctx = NULL;
    memset(n_idle, 0, sizeof n_idle);
    idle_bytes = 0;
    created_bytes = 0;
}
