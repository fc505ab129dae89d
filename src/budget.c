/*
 * budget.c: may this allocation proceed?
 *
 * Four rules, all for this process alone:
 *   - VRAM limit, per device: the bytes charged to the device stay within it;
 *   - owner limit, per owner and device: the same for one owner's bytes;
 *   - reserve, per device: the driver's free figure after the allocation
 *     stays at or above it;
 *   - pin limit: all page-locked host memory stays within it.
 *
 * A charge is taken with a compare-and-swap before the driver is called and
 * given back if the driver refuses, so threads racing for the last bytes
 * never overshoot, and nothing is locked on the way.
 *
 * The reserve needs the driver's free figure, and asking for it is a system
 * call. Between asks the figure is kept by counting: free_base is the
 * driver's answer plus what this process had settled at that moment, so
 * free memory now is about free_base - charged. That count misses other
 * processes, so it is trusted for free_query_ms only, and the driver is
 * asked again sooner whenever an allocation would come within max(64 MiB,
 * its size) of the reserve: no allocation is refused on an old figure.
 * Charges whose driver call has not returned yet are also kept in
 * `inflight`, which an ask made meanwhile leaves out of the settled part.
 */
#include "core.h"

#include <pthread.h>

#define NEAR_RESERVE_MIN (64ULL << 20)

struct dev_budget {
    _Atomic uint64_t charged;
    _Atomic uint64_t inflight;
    _Atomic uint64_t limit;    /* VS_NO_LIMIT: none */
    _Atomic uint64_t reserve;  /* 0: none */
    _Atomic uint64_t physical; /* 0: not known yet */
    _Atomic uint64_t free_base;
    _Atomic uint64_t asked_ns; /* 0: never asked */
    _Atomic uint32_t gen;      /* vs_limits_gen the figures were worked out at */
} __attribute__((aligned(64)));

static struct dev_budget devs[VS_MAX_DEVICES];
static _Atomic uint64_t owner_charged[VS_MAX_OWNERS][VS_MAX_DEVICES];
static _Atomic uint64_t owner_limit[VS_MAX_OWNERS];
static _Atomic uint32_t owner_gen[VS_MAX_OWNERS];
static _Atomic uint64_t pin_charged;
static _Atomic uint64_t pin_limit = VS_NO_LIMIT;
static _Atomic uint32_t pin_gen;
static _Atomic uint64_t ttl_ns = 100000000ULL;
static _Atomic uint64_t asks;
static pthread_mutex_t refresh_lock = PTHREAD_MUTEX_INITIALIZER;

#define LOAD(x) atomic_load_explicit(&(x), memory_order_relaxed)
#define STORE(x, v) atomic_store_explicit(&(x), (v), memory_order_relaxed)
#define ADD(x, v) atomic_fetch_add_explicit(&(x), (v), memory_order_relaxed)

static inline bool device_ok(int dev) { return dev >= 0 && dev < VS_MAX_DEVICES; }
static inline uint64_t sat_sub(uint64_t a, uint64_t b) { return a > b ? a - b : 0; }
static inline uint64_t min_u64(uint64_t a, uint64_t b) { return a < b ? a : b; }

/* Subtract without ever wrapping: a count that went wrong must not turn
 * into a limit that refuses everything. */
static void take_away(_Atomic uint64_t *counter, uint64_t bytes)
{
    uint64_t old = atomic_load_explicit(counter, memory_order_relaxed);
    while (!atomic_compare_exchange_weak_explicit(counter, &old, sat_sub(old, bytes),
                                                  memory_order_relaxed,
                                                  memory_order_relaxed))
        ;
    if (VS_UNLIKELY(old < bytes))
        vs_debug("budget: gave back %llu bytes more than were charged",
                 (unsigned long long)(bytes - old));
}

/* Add bytes unless the total would pass limit. */
static bool take(_Atomic uint64_t *counter, uint64_t bytes, uint64_t limit)
{
    uint64_t old = atomic_load_explicit(counter, memory_order_relaxed);
    do {
        if (old > limit || bytes > limit - old)
            return false;
    } while (!atomic_compare_exchange_weak_explicit(counter, &old, old + bytes,
                                                    memory_order_relaxed,
                                                    memory_order_relaxed));
    return true;
}

/* ---- figures in bytes, worked out again after every change ------------ */

static void refresh_device(int dev)
{
    struct dev_budget *d = &devs[dev];
    pthread_mutex_lock(&refresh_lock);
    uint32_t gen = atomic_load(&vs_limits_gen);
    if (atomic_load(&d->gen) != gen) {
        uint64_t physical = LOAD(d->physical), total;
        const struct vs_device_query *q = vs_query();
        if (physical == 0 && q->total && q->total(dev, &total) == 0) {
            physical = total;
            STORE(d->physical, total);
        }
        uint64_t limit, reserve;
        bool exact;
        vs_limits_for_device(dev, physical, &limit, &reserve, &exact);
        STORE(d->limit, limit);
        STORE(d->reserve, reserve);
        STORE(ttl_ns, (uint64_t)vs_limits_free_query_ms() * 1000000ULL);
        if (exact) /* else a percentage waits for the device's size */
            atomic_store_explicit(&d->gen, gen, memory_order_release);
    }
    pthread_mutex_unlock(&refresh_lock);
}

static inline void ensure_device(int dev)
{
    if (VS_UNLIKELY(atomic_load_explicit(&devs[dev].gen, memory_order_acquire) !=
                    LOAD(vs_limits_gen)))
        refresh_device(dev);
}

static void refresh_owner(int owner)
{
    pthread_mutex_lock(&refresh_lock);
    uint32_t gen = atomic_load(&vs_limits_gen);
    STORE(owner_limit[owner], vs_limits_for_owner(vs_owner_name(owner)));
    atomic_store_explicit(&owner_gen[owner], gen, memory_order_release);
    pthread_mutex_unlock(&refresh_lock);
}

static inline uint64_t limit_of_owner(int owner)
{
    if (VS_UNLIKELY(atomic_load_explicit(&owner_gen[owner], memory_order_acquire) !=
                    LOAD(vs_limits_gen)))
        refresh_owner(owner);
    return LOAD(owner_limit[owner]);
}

static inline uint64_t current_pin_limit(void)
{
    uint32_t gen = LOAD(vs_limits_gen);
    if (VS_UNLIKELY(atomic_load_explicit(&pin_gen, memory_order_acquire) != gen)) {
        pthread_mutex_lock(&refresh_lock);
        gen = atomic_load(&vs_limits_gen);
        STORE(pin_limit, vs_limits_pin());
        atomic_store_explicit(&pin_gen, gen, memory_order_release);
        pthread_mutex_unlock(&refresh_lock);
    }
    return LOAD(pin_limit);
}

/* ---- the reserve ------------------------------------------------------ */

static void note_free(struct dev_budget *d, uint64_t free_bytes, uint64_t now)
{
    uint64_t inflight = LOAD(d->inflight);
    uint64_t settled = sat_sub(LOAD(d->charged), inflight);
    STORE(d->free_base, free_bytes + settled);
    STORE(d->asked_ns, now ? now : 1);
    ADD(asks, 1);
}

static uint64_t estimate_free(struct dev_budget *d)
{
    return sat_sub(LOAD(d->free_base), LOAD(d->charged));
}

static bool ask_driver(int dev, uint64_t now)
{
    uint64_t free_bytes;
    const struct vs_device_query *q = vs_query();
    if (q->free_now == NULL || q->free_now(dev, &free_bytes) != 0)
        return false;
    note_free(&devs[dev], free_bytes, now);
    return true;
}

/* Called with this allocation already charged. */
static bool reserve_holds(int dev, uint64_t bytes, uint64_t reserve)
{
    struct dev_budget *d = &devs[dev];
    uint64_t now = vs_now_ns();
    uint64_t asked = LOAD(d->asked_ns);
    uint64_t est = estimate_free(d);
    uint64_t near = bytes > NEAR_RESERVE_MIN ? bytes : NEAR_RESERVE_MIN;
    bool stale = asked == 0 || now - asked >= LOAD(ttl_ns);
    if (stale || est < reserve || est - reserve < near) {
        if (ask_driver(dev, now))
            est = estimate_free(d);
        else if (asked == 0)
            return true; /* no figure at all (no context on dev): cannot judge */
    }
    return est >= reserve;
}

/* ---- charges ---------------------------------------------------------- */

enum vs_verdict vs_budget_charge_device(int dev, int owner, uint64_t bytes,
                                        struct vs_charge *out)
{
    if (owner < 0 || owner >= VS_MAX_OWNERS)
        owner = 0;
    out->dev = dev;
    out->owner = owner;
    out->bytes = 0;
    if (!device_ok(dev) || bytes == 0)
        return VS_ADMIT; /* the driver will answer for it */
    struct dev_budget *d = &devs[dev];
    ensure_device(dev);
    if (!take(&d->charged, bytes, LOAD(d->limit)))
        return VS_OVER_LIMIT;
    uint64_t olimit = limit_of_owner(owner);
    if (olimit == VS_NO_LIMIT) {
        ADD(owner_charged[owner][dev], bytes); /* most owners have no limit */
    } else if (!take(&owner_charged[owner][dev], bytes, olimit)) {
        take_away(&d->charged, bytes);
        return VS_OVER_OWNER_LIMIT;
    }
    ADD(d->inflight, bytes);
    out->bytes = bytes;
    uint64_t reserve = LOAD(d->reserve);
    if (reserve && !reserve_holds(dev, bytes, reserve)) {
        vs_budget_settle(out, false);
        out->bytes = 0;
        return VS_OVER_RESERVE;
    }
    return VS_ADMIT;
}

enum vs_verdict vs_budget_charge_pinned(uint64_t bytes, struct vs_charge *out)
{
    out->dev = -1;
    out->owner = 0;
    out->bytes = 0;
    if (bytes == 0)
        return VS_ADMIT;
    if (!take(&pin_charged, bytes, current_pin_limit()))
        return VS_OVER_PIN_LIMIT;
    out->bytes = bytes;
    return VS_ADMIT;
}

void vs_budget_charge_pinned_over(uint64_t bytes, struct vs_charge *out)
{
    out->dev = -1;
    out->owner = 0;
    out->bytes = bytes;
    ADD(pin_charged, bytes);
}

void vs_budget_refund(const struct vs_charge *c)
{
    if (c->bytes == 0)
        return;
    if (c->dev < 0) {
        take_away(&pin_charged, c->bytes);
    } else if (device_ok(c->dev)) {
        take_away(&devs[c->dev].charged, c->bytes);
        take_away(&owner_charged[c->owner][c->dev], c->bytes);
    }
}

void vs_budget_hold(struct vs_charge *c, uint64_t bytes)
{
    if (bytes > c->bytes) {
        uint64_t more = bytes - c->bytes;
        if (c->dev < 0) {
            ADD(pin_charged, more);
        } else if (device_ok(c->dev)) {
            ensure_device(c->dev); /* the limit it is held against */
            ADD(devs[c->dev].charged, more);
            ADD(owner_charged[c->owner][c->dev], more);
        }
    } else if (bytes < c->bytes) {
        struct vs_charge less = *c;
        less.bytes = c->bytes - bytes;
        vs_budget_refund(&less);
    }
    c->bytes = bytes;
}

void vs_budget_settle(struct vs_charge *c, bool kept)
{
    if (c->bytes == 0)
        return;
    if (device_ok(c->dev)) /* added exactly once by the charge: cannot wrap */
        atomic_fetch_sub_explicit(&devs[c->dev].inflight, c->bytes, memory_order_relaxed);
    if (!kept) {
        vs_budget_refund(c);
        c->bytes = 0;
    }
}

void vs_budget_resize(struct vs_charge *c, uint64_t bytes)
{
    if (c->bytes == 0 || !device_ok(c->dev) || bytes == c->bytes)
        return;
    if (bytes > c->bytes) {
        ADD(devs[c->dev].charged, bytes - c->bytes);
        ADD(owner_charged[c->owner][c->dev], bytes - c->bytes);
    } else {
        take_away(&devs[c->dev].charged, c->bytes - bytes);
        take_away(&owner_charged[c->owner][c->dev], c->bytes - bytes);
    }
    c->bytes = bytes;
}

#define BROKEN(...)                                  \
    do {                                             \
        vs_error("budget invariant: " __VA_ARGS__);  \
        return -1;                                   \
    } while (0)

int vs_budget_check(const struct vs_expected_charges *exp)
{
    for (int d = 0; d < VS_MAX_DEVICES; d++) {
        uint64_t charged = LOAD(devs[d].charged), limit = LOAD(devs[d].limit);
        if (LOAD(devs[d].inflight))
            BROKEN("device %d: %llu bytes still in flight at a quiet point", d,
                   (unsigned long long)LOAD(devs[d].inflight));
        if (charged != exp->dev[d])
            BROKEN("device %d: %llu bytes charged, the live records hold %llu", d,
                   (unsigned long long)charged, (unsigned long long)exp->dev[d]);
        /* a limit lowered at run time may sit below what is already held,
         * and contexts are charged past it (overhead.c) */
        if (charged > limit && vs_limits_changes() == 0 &&
            charged - vs_overhead_device(d) > limit)
            BROKEN("device %d: %llu bytes charged over the limit of %llu", d,
                   (unsigned long long)charged, (unsigned long long)limit);
        for (int o = 0; o < VS_MAX_OWNERS; o++)
            if (LOAD(owner_charged[o][d]) != exp->owner[o][d])
                BROKEN("owner %d on device %d: %llu bytes charged, its records hold %llu", o,
                       d, (unsigned long long)LOAD(owner_charged[o][d]),
                       (unsigned long long)exp->owner[o][d]);
    }
    /* vramshim's own staging buffers are charged too, so only a floor */
    if (LOAD(pin_charged) < exp->pin)
        BROKEN("%llu pinned bytes charged, the live records hold %llu",
               (unsigned long long)LOAD(pin_charged), (unsigned long long)exp->pin);
    return 0;
}

void vs_budget_release(const struct vs_alloc_info *rec)
{
    struct vs_charge c = {.dev = rec->device, .owner = rec->owner, .bytes = rec->size};
    switch (rec->kind) {
    case VS_KIND_DEVICE:
    case VS_KIND_MANAGED:
        /* an offloaded part holds pinned memory, or nothing, instead */
        c.bytes = rec->size - rec->off_pinned - rec->off_pageable;
        if (device_ok(rec->device))
            vs_budget_refund(&c);
        if (rec->off_pinned) {
            struct vs_charge pin = {.dev = -1, .owner = rec->owner, .bytes = rec->off_pinned};
            vs_budget_refund(&pin);
        }
        break;
    case VS_KIND_HOST_ALLOC:
    case VS_KIND_HOST_REGISTERED:
        c.dev = -1;
        vs_budget_refund(&c);
        break;
    default: /* mappings: charged through their handle */
        break;
    }
}

/* ---- the figures a program reads -------------------------------------- */

void vs_budget_note_free(int dev, uint64_t free_bytes)
{
    if (device_ok(dev))
        note_free(&devs[dev], free_bytes, vs_now_ns());
}

static void note_physical(int dev, uint64_t physical)
{
    uint64_t expected = 0;
    if (physical)
        atomic_compare_exchange_strong(&devs[dev].physical, &expected, physical);
}

void vs_budget_slice(int dev, int owner, uint64_t drv_free, uint64_t drv_total,
                     uint64_t *free_out, uint64_t *total_out)
{
    *free_out = drv_free;
    *total_out = drv_total;
    if (!device_ok(dev))
        return;
    if (owner < 0 || owner >= VS_MAX_OWNERS)
        owner = 0;
    struct dev_budget *d = &devs[dev];
    ensure_device(dev);
    uint64_t limit = LOAD(d->limit);
    uint64_t total = min_u64(limit, drv_total);
    uint64_t room = sat_sub(drv_free, LOAD(d->reserve));
    if (limit != VS_NO_LIMIT)
        room = min_u64(room, sat_sub(limit, LOAD(d->charged)));
    uint64_t olimit = limit_of_owner(owner);
    if (olimit != VS_NO_LIMIT)
        room = min_u64(room, sat_sub(olimit, LOAD(owner_charged[owner][dev])));
    *free_out = min_u64(room, total);
    *total_out = total;
}

uint64_t vs_budget_total(int dev, uint64_t physical)
{
    if (!device_ok(dev))
        return physical;
    note_physical(dev, physical);
    ensure_device(dev);
    return min_u64(LOAD(devs[dev].limit), physical);
}

/* ---- views, for the log and the stats --------------------------------- */

void vs_budget_device_view(int dev, struct vs_budget_view *v)
{
    if (!device_ok(dev)) {
        *v = (struct vs_budget_view){VS_NO_LIMIT, 0, 0, 0, VS_NO_LIMIT};
        return;
    }
    struct dev_budget *d = &devs[dev];
    ensure_device(dev);
    v->limit = LOAD(d->limit);
    v->reserve = LOAD(d->reserve);
    v->charged = LOAD(d->charged);
    v->physical = LOAD(d->physical);
    v->est_free = LOAD(d->asked_ns) ? estimate_free(d) : VS_NO_LIMIT;
}

uint64_t vs_budget_owner_charged(int owner, int dev)
{
    if (owner < 0 || owner >= VS_MAX_OWNERS || !device_ok(dev))
        return 0;
    return LOAD(owner_charged[owner][dev]);
}

uint64_t vs_budget_owner_limit(int owner)
{
    if (owner < 0 || owner >= VS_MAX_OWNERS)
        return VS_NO_LIMIT;
    return limit_of_owner(owner);
}

void vs_budget_pin_view(uint64_t *charged, uint64_t *limit)
{
    *charged = LOAD(pin_charged);
    *limit = current_pin_limit();
}

bool vs_budget_charge_overhead(int dev, int64_t bytes, bool within_limit)
{
    if (!device_ok(dev))
        return true;
    if (bytes < 0) {
        take_away(&devs[dev].charged, (uint64_t)-bytes);
        return true;
    }
    if (!within_limit) {
        ADD(devs[dev].charged, (uint64_t)bytes);
        return true;
    }
    ensure_device(dev);
    return take(&devs[dev].charged, (uint64_t)bytes, LOAD(devs[dev].limit));
}

uint64_t vs_budget_asks(void) { return LOAD(asks); }

/* A forked child holds no device memory, and a lock another thread held at
 * the fork would never be released in it. */
void vs_budget_reset(void)
{
    pthread_mutex_init(&refresh_lock, NULL);
    for (int i = 0; i < VS_MAX_DEVICES; i++) {
        STORE(devs[i].charged, 0);
        STORE(devs[i].inflight, 0);
        STORE(devs[i].asked_ns, 0);
        STORE(devs[i].physical, 0);
        STORE(devs[i].gen, 0);
    }
    for (int o = 0; o < VS_MAX_OWNERS; o++) {
        STORE(owner_gen[o], 0);
        for (int i = 0; i < VS_MAX_DEVICES; i++)
            STORE(owner_charged[o][i], 0);
    }
    STORE(pin_charged, 0);
    STORE(pin_gen, 0);
    STORE(asks, 0);
}
