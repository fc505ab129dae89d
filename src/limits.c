/*
 * limits.c: the limits as they stand now.
 *
 * The configuration keeps limits the way the user wrote them (8G, 40%,
 * 0:8G,1:12G, unet=8G); the budget needs bytes, and a percentage of a device
 * needs that device's size, which only the driver knows. So the budget asks
 * here for a device's figures the first time it sees the device, and again
 * after every change: vramshim_set() and the control socket change settings
 * while the program runs, under one mutex, and bump a generation number
 * that the budget's hot path reads with a single relaxed load.
 */
#include "core.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

_Atomic uint32_t vs_limits_gen = 1;
static _Atomic uint32_t changes; /* vs_limits_set calls that changed something */

static pthread_mutex_t live_lock = PTHREAD_MUTEX_INITIALIZER;
static struct vs_config live;
static uint64_t ram;
/* read on hot paths without the mutex */
static _Atomic int offload_now = VS_OFFLOAD_AUTO;
static _Atomic uint32_t idle_ms_now = 1000;
static _Atomic int32_t priority_now;
static _Atomic uint32_t idle_release_now;

static void publish_locked(void)
{
    atomic_store_explicit(&offload_now, (int)live.offload, memory_order_relaxed);
    atomic_store_explicit(&idle_ms_now, live.idle_ms, memory_order_relaxed);
    atomic_store_explicit(&priority_now, live.priority, memory_order_relaxed);
    atomic_store_explicit(&idle_release_now, live.idle_release_ms, memory_order_relaxed);
}

int32_t vs_limits_priority(void)
{
    return atomic_load_explicit(&priority_now, memory_order_relaxed);
}

uint32_t vs_limits_idle_release_ms(void)
{
    return atomic_load_explicit(&idle_release_now, memory_order_relaxed);
}

enum vs_offload_mode vs_limits_offload(void)
{
    return (enum vs_offload_mode)atomic_load_explicit(&offload_now, memory_order_relaxed);
}

uint32_t vs_limits_idle_ms(void)
{
    return atomic_load_explicit(&idle_ms_now, memory_order_relaxed);
}

static uint64_t pin_bytes_locked(void)
{
    if (live.pin_limit.kind == VS_SIZE_NONE)
        return vs_default_pin_limit(ram);
    return vs_size_resolve(&live.pin_limit, ram);
}

uint32_t vs_limits_changes(void) { return atomic_load(&changes); }

/* Below this a limit refuses every allocation worth making: it is almost
 * surely a slip (0, or 0.0000001%), and is said once. */
#define USELESS_LIMIT (1ULL << 20)

void vs_limits_init(const struct vs_config *cfg, uint64_t ram_bytes)
{
    atomic_store(&changes, 0);
    pthread_mutex_lock(&live_lock);
    live = *cfg;
    ram = ram_bytes;
    publish_locked();
    uint64_t pin = pin_bytes_locked();
    pthread_mutex_unlock(&live_lock);
    if (cfg->pin_limit.kind != VS_SIZE_NONE && pin < USELESS_LIMIT)
        vs_warn("VRAMSHIM_PIN_LIMIT comes to %llu bytes: every page-locked allocation is "
                "refused and offload has no host memory",
                (unsigned long long)pin);
    atomic_fetch_add(&vs_limits_gen, 1);
}

/* fork: held across it, so the child's copy of the settings is whole (not
 * half of a set), then made anew: its holder does not exist there. */
void vs_limits_atfork_prepare(void) { pthread_mutex_lock(&live_lock); }
void vs_limits_atfork_parent(void) { pthread_mutex_unlock(&live_lock); }
void vs_limits_atfork_child(void)
{
    pthread_mutex_init(&live_lock, NULL);
}

void vs_limits_config(struct vs_config *out)
{
    pthread_mutex_lock(&live_lock);
    *out = live;
    pthread_mutex_unlock(&live_lock);
}

static uint64_t resolve(const struct vs_size_spec *spec, uint64_t physical,
                        uint64_t none, bool *exact)
{
    switch (spec->kind) {
    case VS_SIZE_BYTES: return spec->bytes;
    case VS_SIZE_PERCENT:
        if (physical == 0) {
            *exact = false;
            return none;
        }
        return vs_size_resolve(spec, physical);
    default: return none;
    }
}

/* Once per device: a limit that refuses everything. Once per process: a
 * limit for a device that does not exist. */
static void warn_useless(int dev, uint64_t limit, int highest_named)
{
    static _Atomic uint32_t said_small;
    static _Atomic bool said_missing;
    uint32_t bit = dev >= 0 && dev < 32 ? 1u << dev : 0;
    if (bit && limit < USELESS_LIMIT && !(atomic_fetch_or(&said_small, bit) & bit))
        vs_warn("the VRAM limit of device %d comes to %llu bytes: every allocation on it is "
                "refused (VRAMSHIM_VRAM_LIMIT, or a set)",
                dev, (unsigned long long)limit);
    if (highest_named < 0 || atomic_load(&said_missing))
        return;
    int count = vs_query()->count ? vs_query()->count() : -1;
    if (count > 0 && highest_named >= count && !atomic_exchange(&said_missing, true))
        vs_warn("the VRAM limit names device %d, but this machine has %d device%s: that "
                "limit applies to nothing",
                highest_named, count, count == 1 ? "" : "s");
}

void vs_limits_for_device(int dev, uint64_t physical, uint64_t *limit,
                          uint64_t *reserve, bool *exact)
{
    *exact = true;
    pthread_mutex_lock(&live_lock);
    const struct vs_size_spec *spec = &live.vram_limit_all;
    if (dev >= 0 && dev < VS_MAX_DEVICES && live.vram_limit_dev[dev].kind != VS_SIZE_NONE)
        spec = &live.vram_limit_dev[dev];
    *limit = resolve(spec, physical, VS_NO_LIMIT, exact);
    *reserve = resolve(&live.reserve_vram, physical, 0, exact);
    int highest_named = -1;
    for (int i = 0; i < VS_MAX_DEVICES; i++)
        if (live.vram_limit_dev[i].kind != VS_SIZE_NONE)
            highest_named = i;
    pthread_mutex_unlock(&live_lock);
    warn_useless(dev, *limit, highest_named);
}

uint64_t vs_limits_for_owner(const char *name)
{
    uint64_t bytes = VS_NO_LIMIT;
    pthread_mutex_lock(&live_lock);
    for (int i = 0; i < live.n_owner_limits; i++)
        if (strcmp(live.owner_limits[i].name, name) == 0)
            bytes = live.owner_limits[i].bytes;
    pthread_mutex_unlock(&live_lock);
    return bytes;
}

uint64_t vs_limits_pin(void)
{
    pthread_mutex_lock(&live_lock);
    uint64_t bytes = pin_bytes_locked();
    pthread_mutex_unlock(&live_lock);
    return bytes;
}

uint32_t vs_limits_free_query_ms(void)
{
    pthread_mutex_lock(&live_lock);
    uint32_t ms = live.free_query_ms;
    pthread_mutex_unlock(&live_lock);
    return ms;
}

static bool is_none(const char *v)
{
    return strcasecmp(v, "none") == 0 || strcasecmp(v, "off") == 0;
}

static int refuse(char *why, size_t len, const char *key, const char *value,
                  const char *expected)
{
    snprintf(why, len, "%s=\"%.100s\" is not valid (expected %s)", key, value,
             expected);
    return -EINVAL;
}

static int apply(const char *key, const char *value, char *why, size_t why_len);

static int set_locked(const char *key, const char *value, char *why, size_t why_len)
{
    pthread_mutex_lock(&live_lock);
    int rc = apply(key, value, why, why_len);
    pthread_mutex_unlock(&live_lock);
    return rc;
}

static int apply(const char *key, const char *value, char *why, size_t why_len)
{
    struct vs_config next = live;

    if (strcmp(key, "vram_limit") == 0) {
        if (is_none(value)) {
            next.vram_limit_all.kind = VS_SIZE_NONE;
            for (int i = 0; i < VS_MAX_DEVICES; i++)
                next.vram_limit_dev[i].kind = VS_SIZE_NONE;
        } else if (vs_parse_device_sizes(value, &next.vram_limit_all,
                                         next.vram_limit_dev)) {
            return refuse(why, why_len, key, value,
                          "a size like 8G, a percentage like 40%, per device "
                          "like 0:8G,1:12G, or none");
        }
    } else if (strcmp(key, "reserve_vram") == 0) {
        if (vs_parse_size_or_percent(value, &next.reserve_vram))
            return refuse(why, why_len, key, value,
                          "a size like 1G or a percentage like 10%");
    } else if (strcmp(key, "pin_limit") == 0) {
        if (strcasecmp(value, "default") == 0)
            next.pin_limit.kind = VS_SIZE_NONE;
        else if (vs_parse_size_or_percent(value, &next.pin_limit))
            return refuse(why, why_len, key, value,
                          "a size like 16G, a percentage of RAM like 50%, or "
                          "default");
    } else if (strcmp(key, "offload") == 0) {
        if (vs_parse_offload(value, &next.offload))
            return refuse(why, why_len, key, value, "off, pinned or auto");
    } else if (strcmp(key, "idle_ms") == 0) {
        if (vs_parse_uint32(value, 0, 86400000, &next.idle_ms))
            return refuse(why, why_len, key, value, "milliseconds from 0 to 86400000");
    } else if (strcmp(key, "priority") == 0) {
        if (vs_parse_priority(value, &next.priority))
            return refuse(why, why_len, key, value, "an integer from -1000 to 1000");
    } else if (strcmp(key, "relief_ms") == 0) {
        if (vs_parse_uint32(value, 100, 600000, &next.relief_ms))
            return refuse(why, why_len, key, value, "milliseconds from 100 to 600000");
    } else if (strcmp(key, "idle_release") == 0) {
        if (vs_parse_duration_ms(value, &next.idle_release_ms))
            return refuse(why, why_len, key, value,
                          "off, or a time like 500ms, 30s, 10m, 1h (at most 24h)");
    } else if (strcmp(key, "owner_limit") == 0) {
        if (is_none(value))
            next.n_owner_limits = 0;
        else if (vs_parse_owner_limits(value, next.owner_limits, VS_MAX_OWNER_LIMITS,
                                       &next.n_owner_limits))
            return refuse(why, why_len, key, value,
                          "owner=size pairs like unet=8G,vae=2G, or none");
    } else {
        snprintf(why, why_len,
                 "unknown setting \"%.60s\" (known: vram_limit, reserve_vram, "
                 "pin_limit, offload, idle_ms, priority, idle_release, relief_ms, "
                 "owner_limit)",
                 key);
        return -EINVAL;
    }

    live = next;
    publish_locked();
    return 0;
}

/* Parse into a copy of the live settings and swap it in whole, all under
 * the lock so that two changes at once cannot undo each other: a bad value
 * changes nothing. */
int vs_limits_set(const char *key, const char *value, char *why, size_t why_len)
{
    char scratch[8];
    if (why == NULL || why_len == 0) {
        why = scratch;
        why_len = sizeof scratch;
    }
    why[0] = '\0';
    if (key == NULL || value == NULL)
        return refuse(why, why_len, key ? key : "(null)", "(null)", "KEY=VALUE");
    int rc = set_locked(key, value, why, why_len);
    if (rc == 0) {
        atomic_fetch_add(&changes, 1);
        atomic_fetch_add(&vs_limits_gen, 1);
        vs_info("%s set to %s", key, value);
    }
    return rc;
}

