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
 * kernel faults and pins every page), so handles given back are kept, up to
 * POOL_KEEP_BYTES in all, for the next eviction. Handles kept idle here are
 * not charged to the pin budget; a handle in use is, through its chunk.
 */
#include "vramshim_internal.h"

#include <errno.h>
#include <pthread.h>
#include <string.h>

#define POOL_SLOTS 64
#define POOL_KEEP_BYTES (512ULL << 20)

static pthread_mutex_t pool_lock = PTHREAD_MUTEX_INITIALIZER;
static CUmemGenericAllocationHandle idle[VS_HOST_CLASSES][POOL_SLOTS];
static int n_idle[VS_HOST_CLASSES];
static uint64_t idle_bytes;
static _Atomic uint64_t created_bytes;

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
    for (int k = VS_HOST_CLASSES - 1; k >= 0; k--) {
        if (!(granules & (1u << k)))
            continue;
        CUmemGenericAllocationHandle h = 0;
        pthread_mutex_lock(&pool_lock);
        if (n_idle[k] > 0) {
            h = idle[k][--n_idle[k]];
            idle_bytes -= gran << k;
        }
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
        if (n_idle[k] < POOL_SLOTS && idle_bytes + size <= POOL_KEEP_BYTES) {
            idle[k][n_idle[k]++] = b->h[k];
            idle_bytes += size;
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

/* A forked child inherits handles its driver cannot use. */
void vs_hostpool_atfork_child(void)
{
    pthread_mutex_init(&pool_lock, NULL);
    memset(n_idle, 0, sizeof n_idle);
    idle_bytes = 0;
    created_bytes = 0;
}
