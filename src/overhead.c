/*
 * overhead.c: device memory the process holds beyond its allocations.
 *
 * A context reserves memory for itself, and more for its runtime limits
 * (cuCtxSetLimit: a stack for every resident thread, the device malloc
 * heap, the printf FIFO); a module or library holds its code, constants
 * and __device__ globals. None of it passes through an allocation hook, yet
 * the driver has taken it, so slices that add up to the card would
 * overcommit it. Each such object is an item here, keyed by the driver's
 * handle in a space of its own, with the bytes the hooks measured for it
 * (hook_ctx.c says how). Its bytes are charged to its device's budget,
 * past the limit if need be (the driver took them already), and to no
 * owner; they are given back when the object goes. A context takes its
 * modules with it, as the driver unloads them when it is destroyed. Each
 * device also keeps where its last figure came from (NVML, free memory,
 * or an estimate), for the stats.
 */
#include "core.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <uthash.h>

struct item_key {
    enum vs_overhead_space space;
    uint64_t handle;
};
struct item {
    struct item_key key;
    int dev;
    uint64_t ctx; /* a module's context (0: none) */
    uint64_t bytes;
    UT_hash_handle hh;
};

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static struct item *items;
static _Atomic uint64_t per_device[VS_MAX_DEVICES];
static _Atomic int source[VS_MAX_DEVICES]; /* enum vs_overhead_source */

static inline bool device_ok(int dev) { return dev >= 0 && dev < VS_MAX_DEVICES; }

static struct item *find(enum vs_overhead_space space, uint64_t handle)
{
    struct item_key k;
    memset(&k, 0, sizeof k); /* the key is hashed byte by byte, padding too */
    k.space = space;
    k.handle = handle;
    struct item *it;
    HASH_FIND(hh, items, &k, sizeof k, it);
    return it;
}

/* Under lock: change an item's bytes and its device's charge alike
 * (false: the charge would pass the limit and nothing changed). */
static bool set_bytes(struct item *it, uint64_t bytes, bool within_limit)
{
    if (bytes == it->bytes)
        return true;
    int64_t delta = bytes > it->bytes ? (int64_t)(bytes - it->bytes)
                                      : -(int64_t)(it->bytes - bytes);
    if (!vs_budget_charge_overhead(it->dev, delta, within_limit))
        return false;
    atomic_fetch_add(&per_device[it->dev], (uint64_t)delta);
    it->bytes = bytes;
    return true;
}

static void drop(struct item *it)
{
    set_bytes(it, 0, false);
    HASH_DEL(items, it);
    free(it);
}

bool vs_overhead_add(enum vs_overhead_space space, uint64_t handle, int dev, uint64_t ctx,
                     int64_t bytes, bool within_limit)
{
    if (!device_ok(dev) || bytes == 0)
        return true;
    pthread_mutex_lock(&lock);
    struct item *it = find(space, handle);
    if (it == NULL && bytes > 0) {
        it = calloc(1, sizeof *it);
        if (it == NULL) {
            pthread_mutex_unlock(&lock);
            vs_warn("overhead: out of memory, %lld bytes on device %d not counted",
                    (long long)bytes, dev);
            return true;
        }
        it->key.space = space;
        it->key.handle = handle;
        it->dev = dev;
        it->ctx = ctx;
        HASH_ADD(hh, items, key, sizeof it->key, it);
    }
    bool ok = true;
    if (it) {
        uint64_t now = bytes > 0 ? it->bytes + (uint64_t)bytes
                                 : (it->bytes > (uint64_t)-bytes ? it->bytes - (uint64_t)-bytes : 0);
        ok = set_bytes(it, now, within_limit);
        if (it->bytes == 0) { /* new and refused, or given back in full */
            HASH_DEL(items, it);
            free(it);
        }
    }
    pthread_mutex_unlock(&lock);
    return ok;
}

uint64_t vs_overhead_drop(enum vs_overhead_space space, uint64_t handle)
{
    uint64_t gone = 0;
    pthread_mutex_lock(&lock);
    struct item *it = find(space, handle);
    if (it) {
        gone = it->bytes;
        drop(it);
    }
    if (space == VS_OVERHEAD_CONTEXT) {
        struct item *m, *tmp;
        HASH_ITER(hh, items, m, tmp)
            if (m->key.space == VS_OVERHEAD_MODULE && m->ctx == handle) {
                gone += m->bytes;
                drop(m);
            }
    }
    pthread_mutex_unlock(&lock);
    return gone;
}

uint64_t vs_overhead_device(int dev)
{
    return device_ok(dev) ? atomic_load(&per_device[dev]) : 0;
}

void vs_overhead_set_source(int dev, enum vs_overhead_source src)
{
    if (device_ok(dev))
        atomic_store(&source[dev], (int)src);
}

const char *vs_overhead_source_name(int dev)
{
    switch (device_ok(dev) ? atomic_load(&source[dev]) : VS_SOURCE_FREE_MEMORY) {
    case VS_SOURCE_NVML: return "nvml";
    case VS_SOURCE_ESTIMATE: return "estimate";
    default: return "free-memory";
    }
}

/* A forked child holds no device memory (vs_budget_reset gave back its
 * charges), and the lock may have been held by a thread that is gone. */
void vs_overhead_reset(void)
{
    pthread_mutex_init(&lock, NULL);
    struct item *it, *tmp;
    HASH_ITER(hh, items, it, tmp) {
        HASH_DEL(items, it);
        free(it);
    }
    for (int d = 0; d < VS_MAX_DEVICES; d++) {
        atomic_store(&per_device[d], 0);
        atomic_store(&source[d], VS_SOURCE_FREE_MEMORY);
    }
}
