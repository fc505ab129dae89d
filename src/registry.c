/*
 * registry.c: every live allocation, and the counters derived from them.
 *
 * Each record sits in two indexes at once:
 *   - a uthash table keyed by base address, for the exact look-up a free
 *     makes (O(1));
 *   - a red-black tree ordered by base (BSD <sys/tree.h>, intrusive), for
 *     "which allocation contains this address" (O(log n)), which launches
 *     and copies ask of arbitrary pointers. Live ranges never overlap, so the
 *     predecessor of an address is the only candidate.
 *
 * The hot path (a hooked allocation or free) takes the write side of one
 * reader-writer lock for a few hundred nanoseconds and never allocates:
 * records come from a free list, else from the newest chunk of records,
 * carved one at a time so that a chunk's pages are touched only as records
 * are first used (a process that never allocates faults none in), and the hash
 * table starts with enough buckets for thousands of records. Refills and
 * bucket doublings happen once per thousands of allocations.
 *
 * Counters are updated under the same lock as the records, so a snapshot is
 * always consistent: per device allocated == the sum over its owners.
 */
#include "core.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

/* libbsd's tree macros mark generated helpers __unused, a BSD spelling. */
#ifndef __unused
#define __unused __attribute__((unused))
#endif
#include <bsd/sys/tree.h>

/* Start the hash table big enough that ordinary programs never rehash. */
#define HASH_INITIAL_NUM_BUCKETS 4096U
#define HASH_INITIAL_NUM_BUCKETS_LOG2 12U
#include <uthash.h>

struct vs_alloc {
    uint64_t base;
    uint64_t size;
    int16_t device;
    uint8_t kind;
    uint8_t tier;
    uint16_t owner;
    /* A mapping of a VMM handle vramshim saw made or imported: its bytes
     * are counted once, by the handle (the same handle may be mapped
     * several times), so the record itself adds nothing to the counters
     * except, for an imported one, to the device's imported bytes. */
    bool of_handle;
    uint64_t handle;
    uint64_t last_touch_ns;
    uint64_t off_pinned, off_pageable; /* bytes of it on the host now */
    UT_hash_handle hh;
    RB_ENTRY(vs_alloc) rb;
};

/* A physical handle lives, and holds its charge, until it is released and
 * its last mapping is gone: the driver frees the memory only then. */
struct vs_handle_key {
    uint64_t handle;
    uint64_t space; /* enum vs_handle_space */
};
struct vs_handle_rec {
    struct vs_handle_key key;
    struct vs_handle_info info;
    uint32_t maps;  /* records of its mappings */
    uint32_t check_maps; /* vs_registry_check's own count */
    bool released;
    UT_hash_handle hh;
};

static int cmp_base(const struct vs_alloc *a, const struct vs_alloc *b)
{
    return a->base < b->base ? -1 : a->base > b->base;
}

RB_HEAD(vs_tree, vs_alloc);
RB_GENERATE_STATIC(vs_tree, vs_alloc, rb, cmp_base)

#define RECORDS_PER_CHUNK 4096

static pthread_rwlock_t reg_lock = PTHREAD_RWLOCK_INITIALIZER;
static struct vs_alloc *by_base;        /* uthash head */
static struct vs_tree by_range = RB_INITIALIZER(&by_range);
static struct vs_alloc *free_records;   /* linked through hh.next */
/* A finger into the by-range tree: two records next to each other in
 * address order (NULL: past that end), finger_below and finger_above,
 * and, when known, the record next below finger_below (finger_prev_known).
 * An allocation whose base falls between the two is linked there without
 * the walk from the root, and then it and finger_above are the finger,
 * with the old finger_below under it. A free of finger_below leaves the
 * record under it (when known) and finger_above as the finger; a free of
 * either otherwise drops the finger; a free elsewhere keeps it. None of this walks: allocations where one was just
 * freed and allocations above the last cost the same at 10 records and
 * at 10^5 (issue 13: the walk was the one part of an allocation that grew
 * with the records), and every other shape walks as before. */
static struct vs_alloc *finger_below, *finger_above, *finger_prev;
static bool finger_set, finger_prev_known;
static struct vs_alloc *fresh, *fresh_end; /* the newest chunk's never-used records */
static struct vs_handle_rec *handles;   /* uthash head */
/* uthash frees its bucket table when the last item leaves and allocates it
 * again on the next insert; a record that never leaves keeps an alloc/free
 * pair from paying for that every time. Its key is no valid base. */
#define SENTINEL_BASE UINT64_MAX
static struct vs_alloc sentinel = {.base = SENTINEL_BASE};

/* Counters, all under reg_lock except the launch and OOM counts. */
static struct vs_device_counts dev_counts[VS_MAX_DEVICES];
static uint32_t devices_seen;
static struct vs_owner_counts owner_counts[VS_MAX_OWNERS][VS_MAX_DEVICES];
static struct vs_event_counts events;
static struct vs_pinned_counts pinned;
static uint64_t live_records;
/* launches counted before the last reset (the per-thread counts only grow) */
static _Atomic uint64_t launches_before_reset;
static _Atomic uint64_t oom_count; /* counted without the lock, like launches */
/* fast copies and prefaults: count, bytes, nanoseconds */
static _Atomic uint64_t fast_copy[3], prefault[3];
static _Atomic uint64_t fast_copy_fallbacks;

/* A whole chunk from mmap: rare, never returned (the records are reused),
 * and left untouched until its records are carved. */
static int refill_records(void)
{
    size_t bytes = sizeof(struct vs_alloc) * RECORDS_PER_CHUNK;
    struct vs_alloc *chunk = mmap(NULL, bytes, PROT_READ | PROT_WRITE,
                                  MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (chunk == MAP_FAILED)
        return -ENOMEM;
    fresh = chunk;
    fresh_end = chunk + RECORDS_PER_CHUNK;
    return 0;
}

static struct vs_alloc *take_record(void)
{
    struct vs_alloc *r = free_records;
    if (r) {
        free_records = r->hh.next;
        return r;
    }
    if (fresh == fresh_end && refill_records() != 0)
        return NULL;
    return fresh++;
}

static void give_record(struct vs_alloc *r)
{
    r->hh.next = free_records;
    free_records = r;
}

/* Nothing to set up: the first record maps the first chunk (start-up of a
 * process that never calls CUDA stays free, issue 13). */
int vs_registry_init(void)
{
    return 0;
}

const char *vs_kind_name(enum vs_kind k)
{
    static const char *const names[] = {"device", "managed", "async", "vmm",
                                        "host", "registered", "host-vmm", "imported"};
    return (unsigned)k < VS_KIND_COUNT ? names[k] : "?";
}

static bool device_ok(int device)
{
    return device >= 0 && device < VS_MAX_DEVICES;
}

/* The predecessor-or-equal of addr in the tree (NULL: none), the only
 * record that can contain it. Caller holds reg_lock. */
static struct vs_alloc *at_or_below(uint64_t addr)
{
    struct vs_alloc *node = RB_ROOT(&by_range), *best = NULL;
    while (node) {
        if (node->base <= addr) {
            best = node;
            node = RB_RIGHT(node, rb);
        } else {
            node = RB_LEFT(node, rb);
        }
    }
    return best;
}

static struct vs_alloc *find_containing(uint64_t addr)
{
    struct vs_alloc *best = at_or_below(addr);
    if (best && addr - best->base < best->size)
        return best;
    return NULL;
}

/* Add (sign > 0) or take away one allocation of `size` bytes, `off` of
 * them offloaded, in the counters. Caller holds reg_lock. */
/* A stream-ordered block (`pooled`) counts for its owner only: on the
 * device, its pool's reserve stands for it (vs_registry_set_reserves). */
static void account_bytes(int device, int owner, bool host, bool pooled, uint64_t size,
                          uint64_t off_pinned, uint64_t off_pageable, int sign)
{
    if (host) {
        pinned.app += sign > 0 ? size : -size;
        return;
    }
    if (!device_ok(device))
        return;
    struct vs_device_counts *d = &dev_counts[device];
    struct vs_owner_counts *o = &owner_counts[owner][device];
    if (sign > 0) {
        if (!pooled) {
            d->allocated += size;
            d->resident += size;
            if (d->resident > d->peak_resident)
                d->peak_resident = d->resident;
        }
        o->allocated += size;
        o->resident += size;
        o->allocations++;
        if (o->allocated > o->peak)
            o->peak = o->allocated;
        devices_seen |= 1u << device;
        events.allocs++;
    } else {
        uint64_t off = off_pinned + off_pageable;
        VS_ASSERT((pooled || d->allocated >= size) && o->allocated >= size && off <= size);
        if (!pooled) {
            d->allocated -= size;
            d->resident -= size - off;
            d->offloaded_pinned -= off_pinned;
            d->offloaded_pageable -= off_pageable;
        }
        pinned.offload -= off_pinned;
        o->allocated -= size;
        o->resident -= size - off;
        o->offloaded -= off;
        o->allocations--;
        events.frees++;
    }
}

static void account_handle(const struct vs_handle_rec *h, int sign)
{
    if (h->info.imported)
        return;
    account_bytes(h->info.device, h->info.owner, h->info.on_host, false, h->info.size, 0, 0,
                  sign);
    if (h->info.space == VS_HANDLE_ARRAY && device_ok(h->info.device))
        dev_counts[h->info.device].arrays += sign > 0 ? h->info.size : -h->info.size;
}

static struct vs_handle_rec *handle_find_locked(uint64_t handle, enum vs_handle_space space)
{
    struct vs_handle_key key = {.handle = handle, .space = space};
    struct vs_handle_rec *h;
    HASH_FIND(hh, handles, &key, sizeof key, h);
    return h;
}

static void handle_unmapped_locked(uint64_t handle);

/* Imported memory (a mapping of an imported handle, or a pointer imported
 * from another process's pool) counts only in the device's imported
 * bytes: the exporter holds it. */
static void account(const struct vs_alloc *r, int sign)
{
    if (r->kind == VS_KIND_IMPORTED && device_ok(r->device))
        dev_counts[r->device].imported += sign > 0 ? r->size : -r->size;
    if (r->of_handle) {
        if (sign < 0)
            handle_unmapped_locked(r->handle);
        return;
    }
    if (r->kind == VS_KIND_IMPORTED)
        return;
    account_bytes(r->device, r->owner, vs_kind_is_host((enum vs_kind)r->kind),
                  r->kind == VS_KIND_ASYNC, r->size, r->off_pinned, r->off_pageable, sign);
}

static void fill_info(const struct vs_alloc *r, struct vs_alloc_info *out)
{
    out->base = r->base;
    out->size = r->size;
    out->device = r->device;
    out->kind = (enum vs_kind)r->kind;
    out->tier = (enum vs_tier)r->tier;
    out->owner = r->owner;
    out->last_touch_ns = r->last_touch_ns;
    out->off_pinned = r->off_pinned;
    out->off_pageable = r->off_pageable;
}

/* Take r out of the by-range tree, keeping the finger true. */
static void unlink_range(struct vs_alloc *r)
{
    RB_REMOVE(vs_tree, &by_range, r);
    if (!finger_set)
        return;
    if (r == finger_below && finger_prev_known) {
        finger_below = finger_prev; /* now next to finger_above */
        finger_prev_known = false;
    } else if (r == finger_below || r == finger_above) {
        finger_set = false;
    } else if (r == finger_prev) {
        finger_prev_known = false;
    }
}
static void drop_locked(struct vs_alloc *r)
{
    account(r, -1);
    HASH_DEL(by_base, r);
    unlink_range(r);
    give_record(r);
    live_records--;
}

/* handle: NULL for an allocation; else the VMM handle mapped at base,
 * whose record, when vramshim knows the handle, gives the mapping its
 * kind, device and owner. */
/* Link r (base and size set) into the by-range tree, in one walk from the
 * root that also finds its neighbours: NULL when linked, else a live record
 * overlapping r's range (r is then not linked). The walk is the only part
 * of an allocation that grows with the number of records (log n). */
static struct vs_alloc *link_range(struct vs_alloc *r)
{
    struct vs_alloc *parent = NULL;
    struct vs_alloc *below = NULL, *above = NULL; /* base < r's; base >= r's */
    if (finger_set && (finger_below == NULL || finger_below->base < r->base) &&
        (finger_above == NULL || r->base <= finger_above->base)) {
        /* between two neighbours: the lower has no right child, or else
         * the upper, the leftmost of that subtree, has no left one */
        below = finger_below;
        above = finger_above;
        parent = below && RB_RIGHT(below, rb) == NULL ? below : above;
        VS_ASSERT(parent == NULL ? RB_ROOT(&by_range) == NULL
                  : parent == below ? RB_RIGHT(parent, rb) == NULL
                                    : RB_LEFT(parent, rb) == NULL);
    } else {
        for (struct vs_alloc *node = RB_ROOT(&by_range); node;) {
            parent = node;
            if (node->base < r->base) {
                below = node;
                node = RB_RIGHT(node, rb);
            } else {
                above = node;
                node = RB_LEFT(node, rb);
            }
        }
    }
    if (below && r->base - below->base < below->size)
        return below;
    if (above && above->base - r->base < r->size)
        return above;
    RB_SET(r, parent, rb);
    if (parent == NULL)
        RB_ROOT(&by_range) = r;
    else if (parent == above)
        RB_LEFT(parent, rb) = r;
    else
        RB_RIGHT(parent, rb) = r;
    vs_tree_RB_INSERT_COLOR(&by_range, r);
    finger_prev = below; /* below, r, above: neighbours now */
    finger_prev_known = true;
    finger_below = r;
    finger_above = above;
    finger_set = true;
    return NULL;
}

static int add_record(uint64_t base, uint64_t size, int device,
                      enum vs_kind kind, int owner, bool undoing_free,
                      const uint64_t *handle)
{
    if (size == 0)
        size = 1; /* a zero-byte range still has an identity */
    if (owner < 0 || owner >= VS_MAX_OWNERS)
        owner = 0;
    uint64_t now = vs_now_ns();
    pthread_rwlock_wrlock(&reg_lock);
    if (by_base == NULL)
        HASH_ADD(hh, by_base, base, sizeof sentinel.base, &sentinel);
    struct vs_alloc *r = take_record();
    if (r == NULL) {
        pthread_rwlock_unlock(&reg_lock);
        return -ENOMEM;
    }
    r->base = base;
    r->size = size;
    /* A live range overlapping the new one means releases were missed (a
     * free that bypassed us): trust the driver and drop the stale ones. */
    int rc = 0;
    for (struct vs_alloc *stale; (stale = link_range(r)) != NULL;) {
        rc = -EEXIST;
        struct vs_alloc_info gone;
        fill_info(stale, &gone);
        vs_budget_release(&gone); /* its charge would otherwise stay forever */
        drop_locked(stale);
    }
    struct vs_handle_rec *h = NULL;
    if (handle) /* looked up after the stale mappings of it went */
        h = handle_find_locked(*handle, VS_HANDLE_VMM);
    if (h) {
        kind = h->info.imported ? VS_KIND_IMPORTED
             : h->info.on_host ? VS_KIND_HOST_VMM : VS_KIND_VMM;
        device = h->info.device;
        owner = h->info.owner;
    }
    r->device = (int16_t)(device_ok(device) ? device : -1);
    r->kind = (uint8_t)kind;
    r->tier = VS_TIER_RESIDENT;
    r->owner = (uint16_t)owner;
    r->last_touch_ns = now;
    r->off_pinned = r->off_pageable = 0;
    r->of_handle = h != NULL;
    r->handle = h ? h->key.handle : 0;
    if (h)
        h->maps++;
    HASH_ADD(hh, by_base, base, sizeof r->base, r);
    live_records++;
    account(r, +1);
    if (undoing_free && !r->of_handle && !vs_kind_is_host(kind) && device_ok(r->device)) {
        events.allocs--;
        events.frees--;
    }
    pthread_rwlock_unlock(&reg_lock);
    return rc;
}

int vs_registry_add(uint64_t base, uint64_t size, int device, enum vs_kind kind,
                    int owner)
{
    return add_record(base, size, device, kind, owner, false, NULL);
}

int vs_registry_map(uint64_t base, uint64_t size, uint64_t handle, int device,
                    enum vs_kind kind, int owner)
{
    return add_record(base, size, device, kind, owner, false, &handle);
}

void vs_registry_set_reserves(int dev, uint64_t pool_reserved, uint64_t pool_used,
                              uint64_t graph_reserved, uint64_t graph_used)
{
    pthread_rwlock_wrlock(&reg_lock);
    if (dev < 0) {
        pinned.pools = pool_reserved;
    } else if (device_ok(dev)) {
        struct vs_device_counts *d = &dev_counts[dev];
        /* the reserves are device memory the process holds: in allocated */
        uint64_t was = d->pool_reserved + d->graph_reserved;
        uint64_t now = pool_reserved + graph_reserved;
        d->allocated = d->allocated - was + now;
        d->resident = d->resident - was + now;
        if (d->resident > d->peak_resident)
            d->peak_resident = d->resident;
        d->pool_reserved = pool_reserved;
        d->pool_used = pool_used;
        d->graph_reserved = graph_reserved;
        d->graph_used = graph_used;
        if (pool_reserved || graph_reserved)
            devices_seen |= 1u << dev;
    }
    pthread_rwlock_unlock(&reg_lock);
}

void vs_registry_restore(const struct vs_alloc_info *info)
{
    add_record(info->base, info->size, info->device, info->kind, info->owner, true, NULL);
}

static uint64_t *tier_bytes(struct vs_alloc *r, enum vs_tier t)
{
    static uint64_t resident_scratch;
    return t == VS_TIER_PINNED ? &r->off_pinned
         : t == VS_TIER_PAGEABLE ? &r->off_pageable : &resident_scratch;
}

static uint64_t *device_tier(struct vs_device_counts *d, enum vs_tier t)
{
    return t == VS_TIER_PINNED ? &d->offloaded_pinned
         : t == VS_TIER_PAGEABLE ? &d->offloaded_pageable : &d->resident;
}

int vs_registry_move(uint64_t base, enum vs_tier from, enum vs_tier to, uint64_t bytes)
{
    if (from == to || bytes == 0)
        return 0;
    pthread_rwlock_wrlock(&reg_lock);
    struct vs_alloc *r;
    HASH_FIND(hh, by_base, &base, sizeof base, r);
    if (r == NULL || !device_ok(r->device) || vs_kind_is_host((enum vs_kind)r->kind)) {
        pthread_rwlock_unlock(&reg_lock);
        return -ENOENT;
    }
    *tier_bytes(r, from) -= bytes;
    *tier_bytes(r, to) += bytes;
    struct vs_device_counts *d = &dev_counts[r->device];
    *device_tier(d, from) -= bytes;
    *device_tier(d, to) += bytes;
    struct vs_owner_counts *o = &owner_counts[r->owner][r->device];
    if (from == VS_TIER_RESIDENT) {
        o->resident -= bytes;
        o->offloaded += bytes;
        events.evictions++;
        events.bytes_evicted += bytes;
    } else if (to == VS_TIER_RESIDENT) {
        o->resident += bytes;
        o->offloaded -= bytes;
        events.restores++;
        events.bytes_restored += bytes;
        if (d->resident > d->peak_resident)
            d->peak_resident = d->resident;
    }
    if (from == VS_TIER_PINNED)
        pinned.offload -= bytes;
    if (to == VS_TIER_PINNED)
        pinned.offload += bytes;
    r->tier = (uint8_t)(r->off_pageable ? VS_TIER_PAGEABLE
                        : r->off_pinned ? VS_TIER_PINNED : VS_TIER_RESIDENT);
    pthread_rwlock_unlock(&reg_lock);
    return 0;
}

int vs_registry_remove(uint64_t base, struct vs_alloc_info *removed)
{
    if (base == SENTINEL_BASE)
        return -ENOENT;
    pthread_rwlock_wrlock(&reg_lock);
    struct vs_alloc *r;
    HASH_FIND(hh, by_base, &base, sizeof base, r);
    /* A handle's mapping goes only at cuMemUnmap: a cuMemFree of its
     * address is the program's mistake, which the driver refuses. */
    if (r == NULL || r->of_handle) {
        pthread_rwlock_unlock(&reg_lock);
        return -ENOENT;
    }
    if (removed)
        fill_info(r, removed);
    drop_locked(r);
    pthread_rwlock_unlock(&reg_lock);
    return 0;
}

int vs_registry_remove_range(uint64_t base, uint64_t size)
{
    int n = 0;
    pthread_rwlock_wrlock(&reg_lock);
    struct vs_alloc key = {.base = base};
    struct vs_alloc *r = RB_NFIND(vs_tree, &by_range, &key);
    while (r && r->base < base + size) {
        struct vs_alloc *next = RB_NEXT(vs_tree, &by_range, r);
        if (r->base + r->size <= base + size) {
            drop_locked(r);
            n++;
        }
        r = next;
    }
    pthread_rwlock_unlock(&reg_lock);
    return n;
}

bool vs_registry_find(uint64_t addr, struct vs_alloc_info *out)
{
    pthread_rwlock_rdlock(&reg_lock);
    struct vs_alloc *r = find_containing(addr);
    if (r && out)
        fill_info(r, out);
    pthread_rwlock_unlock(&reg_lock);
    return r != NULL;
}

void vs_registry_count_oom(void)
{
    atomic_fetch_add_explicit(&oom_count, 1, memory_order_relaxed);
}

static void count3(_Atomic uint64_t *c, uint64_t bytes, uint64_t ns)
{
    atomic_fetch_add_explicit(&c[0], 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&c[1], bytes, memory_order_relaxed);
    atomic_fetch_add_explicit(&c[2], ns, memory_order_relaxed);
}
void vs_count_fast_copy(uint64_t bytes, uint64_t ns) { count3(fast_copy, bytes, ns); }
void vs_count_prefault(uint64_t bytes, uint64_t ns) { count3(prefault, bytes, ns); }
void vs_count_fast_copy_fallback(void)
{
    atomic_fetch_add_explicit(&fast_copy_fallbacks, 1, memory_order_relaxed);
}

void vs_registry_staging(int64_t delta)
{
    pthread_rwlock_wrlock(&reg_lock);
    pinned.staging += (uint64_t)delta;
    pthread_rwlock_unlock(&reg_lock);
}

void vs_registry_snapshot(struct vs_snapshot *snap)
{
    pthread_rwlock_rdlock(&reg_lock);
    memcpy(snap->dev, dev_counts, sizeof dev_counts);
    snap->devices_seen = devices_seen;
    snap->n_owners = vs_owner_count();
    memcpy(snap->owner, owner_counts, sizeof owner_counts);
    snap->events = events;
    snap->pinned = pinned;
    snap->live_records = live_records;
    pthread_rwlock_unlock(&reg_lock);
    snap->events.launches =
        vs_thread_launches() - atomic_load_explicit(&launches_before_reset, memory_order_relaxed);
    snap->events.oom_returned = atomic_load_explicit(&oom_count, memory_order_relaxed);
    snap->events.fast_copies = atomic_load_explicit(&fast_copy[0], memory_order_relaxed);
    snap->events.fast_copy_bytes = atomic_load_explicit(&fast_copy[1], memory_order_relaxed);
    snap->events.fast_copy_ns = atomic_load_explicit(&fast_copy[2], memory_order_relaxed);
    snap->events.fast_copy_fallbacks =
        atomic_load_explicit(&fast_copy_fallbacks, memory_order_relaxed);
    snap->events.prefaults = atomic_load_explicit(&prefault[0], memory_order_relaxed);
    snap->events.prefault_bytes = atomic_load_explicit(&prefault[1], memory_order_relaxed);
    snap->events.prefault_ns = atomic_load_explicit(&prefault[2], memory_order_relaxed);
}

static void reset_locked(void)
{
    finger_set = false; /* its records are going */
    struct vs_alloc *r, *tmp;
    HASH_ITER(hh, by_base, r, tmp) {
        if (r == &sentinel)
            continue;
        HASH_DEL(by_base, r);
        RB_REMOVE(vs_tree, &by_range, r);
        give_record(r);
    }
    struct vs_handle_rec *h, *htmp;
    HASH_ITER(hh, handles, h, htmp) {
        HASH_DEL(handles, h);
        free(h);
    }
    memset(dev_counts, 0, sizeof dev_counts);
    memset(owner_counts, 0, sizeof owner_counts);
    memset(&events, 0, sizeof events);
    memset(&pinned, 0, sizeof pinned);
    devices_seen = 0;
    live_records = 0;
    atomic_store(&launches_before_reset, vs_thread_launches());
    atomic_store(&oom_count, 0);
    atomic_store(&fast_copy_fallbacks, 0);
    for (int i = 0; i < 3; i++) {
        atomic_store(&fast_copy[i], 0);
        atomic_store(&prefault[i], 0);
    }
}

void vs_registry_reset(void)
{
    pthread_rwlock_wrlock(&reg_lock);
    reset_locked();
    pthread_rwlock_unlock(&reg_lock);
}

/* fork: hold the lock across it so the child never inherits a half-made
 * change, then give the child an empty registry: device memory and pinned
 * pages belong to the parent's context, not to the child. The child gets a
 * fresh lock rather than an unlock: the old one still records the parent's
 * waiting threads, which do not exist in the child. */
void vs_registry_atfork_prepare(void) { pthread_rwlock_wrlock(&reg_lock); }
void vs_registry_atfork_parent(void) { pthread_rwlock_unlock(&reg_lock); }
void vs_registry_atfork_child(void)
{
    reset_locked();
    pthread_rwlock_init(&reg_lock, NULL);
}

/* ---- invariants (debug.c asks) ------------------------------------------ */

#define BROKEN(...)                                    \
    do {                                               \
        vs_error("registry invariant: " __VA_ARGS__);  \
        ok = false;                                    \
        goto out;                                      \
    } while (0)

/* Work every counter out again from the records, compare, and fill in what
 * the budget should hold for them. */
int vs_registry_check(struct vs_expected_charges *exp)
{
    struct vs_device_counts dev[VS_MAX_DEVICES];
    static struct vs_owner_counts own[VS_MAX_OWNERS][VS_MAX_DEVICES]; /* under reg_lock */
    uint64_t app = 0, offload = 0, n = 0;
    bool ok = true;
    memset(exp, 0, sizeof *exp);
    memset(dev, 0, sizeof dev);
    pthread_rwlock_rdlock(&reg_lock);
    memset(own, 0, sizeof own);
    struct vs_handle_rec *h, *htmp;
    HASH_ITER(hh, handles, h, htmp) {
        h->check_maps = 0;
        if (h->info.imported)
            continue;
        if (h->info.on_host) {
            app += h->info.size;
        } else if (device_ok(h->info.device)) {
            dev[h->info.device].allocated += h->info.size;
            dev[h->info.device].resident += h->info.size;
            own[h->info.owner][h->info.device].allocated += h->info.size;
            own[h->info.owner][h->info.device].resident += h->info.size;
            own[h->info.owner][h->info.device].allocations++;
            if (h->info.space == VS_HANDLE_ARRAY)
                dev[h->info.device].arrays += h->info.size;
        }
    }
    struct vs_alloc *r;
    RB_FOREACH(r, vs_tree, &by_range) {
        struct vs_alloc *same;
        HASH_FIND(hh, by_base, &r->base, sizeof r->base, same);
        if (same != r)
            BROKEN("record 0x%llx is in the tree but not the table", (unsigned long long)r->base);
        n++;
        struct vs_alloc *next = RB_NEXT(vs_tree, &by_range, r);
        if (next && r->base + r->size > next->base)
            BROKEN("records 0x%llx and 0x%llx overlap", (unsigned long long)r->base,
                   (unsigned long long)next->base);
        if (r->of_handle) {
            struct vs_handle_rec *h = handle_find_locked(r->handle, VS_HANDLE_VMM);
            if (h == NULL)
                BROKEN("mapping 0x%llx of a handle vramshim no longer knows",
                       (unsigned long long)r->base);
            h->check_maps++;
        }
        if (r->kind == VS_KIND_IMPORTED && device_ok(r->device))
            dev[r->device].imported += r->size;
        if (r->of_handle || r->kind == VS_KIND_IMPORTED)
            continue;
        if (vs_kind_is_host((enum vs_kind)r->kind)) {
            app += r->size;
            exp->pin += r->size;
            continue;
        }
        if (!device_ok(r->device))
            continue;
        uint64_t off = r->off_pinned + r->off_pageable;
        if (off > r->size)
            BROKEN("record 0x%llx: %llu bytes off of %llu", (unsigned long long)r->base,
                   (unsigned long long)off, (unsigned long long)r->size);
        if (r->kind != VS_KIND_ASYNC) { /* pooled: its pool's reserve counts */
            dev[r->device].allocated += r->size;
            dev[r->device].resident += r->size - off;
            dev[r->device].offloaded_pinned += r->off_pinned;
            dev[r->device].offloaded_pageable += r->off_pageable;
        }
        own[r->owner][r->device].allocated += r->size;
        own[r->owner][r->device].resident += r->size - off;
        own[r->owner][r->device].offloaded += off;
        own[r->owner][r->device].allocations++;
        offload += r->off_pinned;
        if (r->kind == VS_KIND_DEVICE || r->kind == VS_KIND_MANAGED) {
            exp->dev[r->device] += r->size - off;
            exp->owner[r->owner][r->device] += r->size - off;
            exp->pin += r->off_pinned;
        }
    }
    if (n != live_records || HASH_COUNT(by_base) != n + (by_base ? 1 : 0))
        BROKEN("%llu records in the tree, %llu counted, %u in the table",
               (unsigned long long)n, (unsigned long long)live_records, HASH_COUNT(by_base));
    for (int d = 0; d < VS_MAX_DEVICES; d++) {
        dev[d].allocated += dev_counts[d].pool_reserved + dev_counts[d].graph_reserved;
        dev[d].resident += dev_counts[d].pool_reserved + dev_counts[d].graph_reserved;
    }
    for (int d = 0; d < VS_MAX_DEVICES; d++) {
        const struct vs_device_counts *c = &dev_counts[d];
        if (c->allocated != dev[d].allocated || c->resident != dev[d].resident ||
            c->offloaded_pinned != dev[d].offloaded_pinned ||
            c->offloaded_pageable != dev[d].offloaded_pageable ||
            c->imported != dev[d].imported || c->arrays != dev[d].arrays)
            BROKEN("device %d: counted %llu allocated, %llu resident; the records say "
                   "%llu and %llu", d, (unsigned long long)c->allocated,
                   (unsigned long long)c->resident, (unsigned long long)dev[d].allocated,
                   (unsigned long long)dev[d].resident);
        for (int o = 0; o < VS_MAX_OWNERS; o++) {
            const struct vs_owner_counts *a = &owner_counts[o][d], *b = &own[o][d];
            if (a->allocated != b->allocated || a->resident != b->resident ||
                a->offloaded != b->offloaded || a->allocations != b->allocations)
                BROKEN("owner %d on device %d: counted %llu allocated in %llu; the records "
                       "say %llu in %llu", o, d, (unsigned long long)a->allocated,
                       (unsigned long long)a->allocations, (unsigned long long)b->allocated,
                       (unsigned long long)b->allocations);
        }
    }
    /* pools and graph memory are charged by their reserves, to owner 0 */
    for (int d = 0; d < VS_MAX_DEVICES; d++) {
        exp->dev[d] += dev_counts[d].pool_reserved + dev_counts[d].graph_reserved;
        exp->owner[0][d] += dev_counts[d].pool_reserved + dev_counts[d].graph_reserved;
    }
    exp->pin += pinned.pools;
    if (pinned.app != app || pinned.offload != offload)
        BROKEN("pinned: counted %llu of the program's and %llu offloaded; the records say "
               "%llu and %llu", (unsigned long long)pinned.app,
               (unsigned long long)pinned.offload, (unsigned long long)app,
               (unsigned long long)offload);
    HASH_ITER(hh, handles, h, htmp) {
        if (h->maps != h->check_maps)
            BROKEN("handle 0x%llx: %u mappings counted, %u recorded",
                   (unsigned long long)h->key.handle, h->maps, h->check_maps);
        if (h->released && h->maps == 0)
            BROKEN("handle 0x%llx released and unmapped but still held",
                   (unsigned long long)h->key.handle);
        const struct vs_charge *c = &h->info.charge;
        if (c->dev < 0) {
            exp->pin += c->bytes;
        } else if (device_ok(c->dev)) {
            exp->dev[c->dev] += c->bytes;
            if (c->owner >= 0 && c->owner < VS_MAX_OWNERS)
                exp->owner[c->owner][c->dev] += c->bytes;
        }
    }
out:
    pthread_rwlock_unlock(&reg_lock);
    return ok ? 0 : -1;
}

/* ---- VMM handles: the program's own cuMemCreate and imports ---------- */

/* The handle's memory is gone: out of the counters, its charge given back.
 * Caller holds reg_lock. */
static void handle_free_locked(struct vs_handle_rec *h)
{
    account_handle(h, -1);
    vs_budget_refund(&h->info.charge);
    HASH_DEL(handles, h);
    free(h);
}

/* One mapping of `handle` went (its record was dropped). */
static void handle_unmapped_locked(uint64_t handle)
{
    struct vs_handle_rec *h = handle_find_locked(handle, VS_HANDLE_VMM);
    if (h == NULL)
        return;
    VS_ASSERT(h->maps > 0);
    if (h->maps > 0)
        h->maps--;
    if (h->released && h->maps == 0)
        handle_free_locked(h);
}

int vs_handle_add(uint64_t handle, const struct vs_handle_info *info)
{
    /* cuMemCreate is not a per-launch path; one malloc here is cheaper
     * than a second pool. */
    struct vs_handle_rec *rec = calloc(1, sizeof *rec);
    if (rec == NULL)
        return -ENOMEM;
    rec->key.handle = handle;
    rec->key.space = info->space;
    rec->info = *info;
    pthread_rwlock_wrlock(&reg_lock);
    struct vs_handle_rec *old = handle_find_locked(handle, info->space);
    if (old) {
        /* The driver handed out the same number again, so it freed the old
         * handle: its release and unmaps bypassed vramshim. Its mappings'
         * records go, and the last of them frees it. */
        old->released = true;
        if (old->maps == 0) {
            handle_free_locked(old);
        } else {
            struct vs_alloc *r = RB_MIN(vs_tree, &by_range);
            while (r) {
                struct vs_alloc *next = RB_NEXT(vs_tree, &by_range, r);
                if (r->of_handle && r->handle == handle)
                    drop_locked(r);
                r = next;
            }
        }
    }
    HASH_ADD(hh, handles, key, sizeof rec->key, rec);
    account_handle(rec, +1);
    pthread_rwlock_unlock(&reg_lock);
    return 0;
}

bool vs_handle_release(uint64_t handle, enum vs_handle_space space)
{
    pthread_rwlock_wrlock(&reg_lock);
    struct vs_handle_rec *h = handle_find_locked(handle, space);
    if (h && !h->released) {
        h->released = true;
        if (h->maps == 0)
            handle_free_locked(h);
    }
    pthread_rwlock_unlock(&reg_lock);
    return h != NULL;
}
