/*
 * reach.c: which devices, and which contexts, can reach each device's
 * memory besides the device itself.
 *
 * cuCtxEnablePeerAccess opens a context's device to another context's
 * cuMemAlloc memory, but not to memory mapped with the VMM calls, which a
 * device reaches only once cuMemSetAccess names it (CUDA Programming
 * Guide, Virtual Memory Management, "Controlling Access Rights"). vramshim
 * backs the program's cuMemAlloc buffers with VMM, so it must grant what
 * the program's peer access promises: the peer hooks (hook_peer.c) record
 * each grant here, every mapping chunk.c makes names these devices too,
 * and buffers that exist already are given the access at once
 * (vs_tier_refresh_access). A device that lost its last grant is named
 * with no access, so that the driver takes it back.
 *
 * The fence waits for the contexts recorded here as well as the buffer's
 * own: work queued on a peer's stream may read or write the buffer.
 */
#include "offload_internal.h"

#include <pthread.h>

#define MAX_GRANTS 64

static pthread_mutex_t reach_lock = PTHREAD_MUTEX_INITIALIZER;
static struct grant {
    int mem_dev, by_dev;
    CUcontext by_ctx;
} grants[MAX_GRANTS];
static int n_grants;
/* bit j of reach_mask[i]: device j may reach device i's memory; ever_mask:
 * it could at some point (so a revocation names it) */
static _Atomic uint32_t reach_mask[VS_MAX_DEVICES], ever_mask[VS_MAX_DEVICES];

static bool valid(int dev)
{
    return dev >= 0 && dev < VS_MAX_DEVICES;
}

/* Caller holds reach_lock. */
static void recompute(int mem_dev)
{
    uint32_t m = 0;
    for (int i = 0; i < n_grants; i++)
        if (grants[i].mem_dev == mem_dev && grants[i].by_dev != mem_dev)
            m |= 1u << grants[i].by_dev;
    atomic_store(&reach_mask[mem_dev], m);
    atomic_fetch_or(&ever_mask[mem_dev], m);
}

void vs_reach_set(int mem_dev, int by_dev, CUcontext by_ctx, bool on)
{
    if (!valid(mem_dev) || !valid(by_dev))
        return;
    pthread_mutex_lock(&reach_lock);
    int found = -1;
    for (int i = 0; i < n_grants && found < 0; i++)
        if (grants[i].mem_dev == mem_dev && grants[i].by_ctx == by_ctx)
            found = i;
    if (on && found < 0) {
        if (n_grants < MAX_GRANTS)
            grants[n_grants++] = (struct grant){mem_dev, by_dev, by_ctx};
        else
            vs_warn("peer access: more than %d grants; the fence no longer waits for "
                    "every peer context", MAX_GRANTS);
    } else if (!on && found >= 0) {
        grants[found] = grants[--n_grants];
    }
    recompute(mem_dev);
    pthread_mutex_unlock(&reach_lock);
    vs_info("peer access: device %d %s device %d's memory", by_dev,
            on ? "may now reach" : "no longer reaches", mem_dev);
    vs_tier_refresh_access(mem_dev);
}

uint32_t vs_reach_mask(int mem_dev)
{
    return valid(mem_dev) ? atomic_load_explicit(&reach_mask[mem_dev], memory_order_acquire) : 0;
}

uint32_t vs_reach_revoked(int mem_dev)
{
    return valid(mem_dev) ? atomic_load(&ever_mask[mem_dev]) & ~vs_reach_mask(mem_dev) : 0;
}

int vs_reach_contexts(int mem_dev, CUcontext *out, int cap)
{
    int n = 0;
    pthread_mutex_lock(&reach_lock);
    for (int i = 0; i < n_grants && n < cap; i++)
        if (grants[i].mem_dev == mem_dev)
            out[n++] = grants[i].by_ctx;
    pthread_mutex_unlock(&reach_lock);
    return n;
}

/* The child owns none of the parent's contexts. */
void vs_reach_atfork_child(void)
{
    pthread_mutex_init(&reach_lock, NULL);
    n_grants = 0;
    for (int i = 0; i < VS_MAX_DEVICES; i++) {
        atomic_store(&reach_mask[i], 0);
        atomic_store(&ever_mask[i], 0);
    }
}
