/*
 * stats.c: the stats document of the contract (interface.md) and the
 * summary printed at exit with VRAMSHIM_LOG=info.
 *
 * Both are built from one registry snapshot, so every figure in a document
 * is consistent with every other. Writing goes through a small appender
 * that keeps counting past the end of the buffer, which gives
 * vramshim_stats_json its snprintf-like return value.
 */
#include "core.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static _Atomic uint64_t last_free[VS_MAX_DEVICES];
static _Atomic uint32_t last_free_known;


void vs_stats_note_free(int dev, uint64_t free_bytes)
{
    if (dev < 0 || dev >= VS_MAX_DEVICES)
        return;
    last_free[dev] = free_bytes;
    atomic_fetch_or(&last_free_known, 1u << dev);
}

struct out {
    char *buf;
    size_t cap, len;
};

static void put(struct out *o, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static void put(struct out *o, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    size_t room = o->len < o->cap ? o->cap - o->len : 0;
    int n = vsnprintf(room ? o->buf + o->len : NULL, room, fmt, ap);
    va_end(ap);
    if (n > 0)
        o->len += (size_t)n;
}

static void put_json_string(struct out *o, const char *s)
{
    put(o, "\"");
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (*p == '"' || *p == '\\')
            put(o, "\\%c", *p);
        else if (*p < 0x20)
            put(o, "\\u%04x", *p);
        else
            put(o, "%c", *p);
    }
    put(o, "\"");
}

/* The command line, spaces between arguments, read once per document. */
static void read_cmdline(char *buf, size_t cap)
{
    buf[0] = '\0';
    int fd = open("/proc/self/cmdline", O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return;
    ssize_t n = read(fd, buf, cap - 1);
    close(fd);
    if (n <= 0)
        return;
    buf[n] = '\0';
    for (ssize_t i = 0; i < n - 1; i++)
        if (buf[i] == '\0')
            buf[i] = ' ';
}

static int device_count(const struct vs_snapshot *s)
{
    int n = vs_query()->count ? vs_query()->count() : 0;
    for (int i = 0; i < VS_MAX_DEVICES; i++)
        if ((s->devices_seen & (1u << i)) && i + 1 > n)
            n = i + 1;
    return n > VS_MAX_DEVICES ? VS_MAX_DEVICES : n;
}

static void put_opt_u64(struct out *o, bool known, uint64_t v)
{
    if (known)
        put(o, "%llu", (unsigned long long)v);
    else
        put(o, "null");
}

static uint64_t pin_limit_bytes(const struct vs_config *cfg)
{
    if (cfg->pin_limit.kind == VS_SIZE_NONE)
        return vs_default_pin_limit(vs_state.ram_bytes);
    return vs_size_resolve(&cfg->pin_limit, vs_state.ram_bytes);
}

static void put_config(struct out *o, const struct vs_config *cfg, int ndev)
{
    put(o, "\"config\":{\"vram_limit\":[");
    for (int i = 0; i < ndev; i++) {
        const struct vs_size_spec *spec = cfg->vram_limit_dev[i].kind != VS_SIZE_NONE
                                              ? &cfg->vram_limit_dev[i]
                                              : &cfg->vram_limit_all;
        uint64_t total = 0;
        bool known = spec->kind == VS_SIZE_BYTES ||
                     (spec->kind == VS_SIZE_PERCENT && vs_query()->total &&
                      vs_query()->total(i, &total) == 0);
        put(o, "%s", i ? "," : "");
        put_opt_u64(o, known, vs_size_resolve(spec, total));
    }
    put(o, "],\"reserve_vram\":");
    if (cfg->reserve_vram.kind == VS_SIZE_PERCENT)
        put(o, "\"%g%%\"", cfg->reserve_vram.percent);
    else
        put(o, "%llu", (unsigned long long)cfg->reserve_vram.bytes);
    put(o, ",\"pin_limit\":%llu,\"offload\":\"%s\",\"idle_ms\":%u,\"priority\":%d,"
           "\"idle_release_ms\":%u,\"relief_ms\":%u}",
        (unsigned long long)pin_limit_bytes(cfg), vs_offload_name(cfg->offload),
        cfg->idle_ms, (int)cfg->priority, cfg->idle_release_ms, cfg->relief_ms);
}

static void put_devices(struct out *o, const struct vs_snapshot *s, int ndev)
{
    put(o, "\"devices\":[");
    for (int i = 0; i < ndev; i++) {
        const struct vs_device_counts *d = &s->dev[i];
        char name[128] = "unknown";
        if (vs_query()->name)
            vs_query()->name(i, name, sizeof name);
        uint64_t total = 0;
        bool has_total = vs_query()->total && vs_query()->total(i, &total) == 0;
        char uuid[64];
        bool has_uuid = vs_query()->uuid && vs_query()->uuid(i, uuid, sizeof uuid) == 0;
        put(o, "%s{\"index\":%d,\"name\":", i ? "," : "", i);
        put_json_string(o, name);
        put(o, ",\"uuid\":");
        if (has_uuid)
            put_json_string(o, uuid);
        else
            put(o, "null");
        put(o, ",\"vram_total\":");
        put_opt_u64(o, has_total, total);
        uint64_t free_bytes = 0;
        if (vs_query()->free_now && vs_query()->free_now(i, &free_bytes) == 0)
            vs_stats_note_free(i, free_bytes);
        put(o, ",\"vram_free\":");
        put_opt_u64(o, (last_free_known >> i) & 1u, last_free[i]);
        put(o,
            ",\"allocated\":%llu,\"resident\":%llu,\"offloaded_pinned\":%llu,"
            "\"offloaded_pageable\":%llu,\"peak_resident\":%llu,\"imported\":%llu,\"arrays\":%llu,"
            "\"pools\":%llu,\"pools_used\":%llu,\"graph_memory\":%llu,\"graph_memory_used\":%llu,"
            "\"overhead\":%llu,\"overhead_source\":\"%s\"}",
            (unsigned long long)d->allocated, (unsigned long long)d->resident,
            (unsigned long long)d->offloaded_pinned,
            (unsigned long long)d->offloaded_pageable,
            (unsigned long long)d->peak_resident, (unsigned long long)d->imported,
            (unsigned long long)d->arrays, (unsigned long long)d->pool_reserved,
            (unsigned long long)d->pool_used, (unsigned long long)d->graph_reserved,
            (unsigned long long)d->graph_used, (unsigned long long)vs_overhead_device(i),
            vs_overhead_source_name(i));
    }
    put(o, "]");
}

/* One entry per (owner, device) that ever held memory on that device. */
static void put_owners(struct out *o, const struct vs_snapshot *s)
{
    put(o, "\"owners\":[");
    bool first = true;
    for (int id = 0; id < s->n_owners && id < VS_MAX_OWNERS; id++) {
        for (int dev = 0; dev < VS_MAX_DEVICES; dev++) {
            const struct vs_owner_counts *c = &s->owner[id][dev];
            if (c->peak == 0 && c->allocations == 0)
                continue;
            put(o, "%s{\"name\":", first ? "" : ",");
            put_json_string(o, vs_owner_name(id));
            put(o,
                ",\"device\":%d,\"allocated\":%llu,\"resident\":%llu,"
                "\"offloaded\":%llu,\"allocations\":%llu,\"peak\":%llu}",
                dev, (unsigned long long)c->allocated,
                (unsigned long long)c->resident,
                (unsigned long long)c->offloaded,
                (unsigned long long)c->allocations,
                (unsigned long long)c->peak);
            first = false;
        }
    }
    put(o, "]");
}

static _Atomic uint64_t share_refused;

void vs_stats_count_share_refused(void) { atomic_fetch_add(&share_refused, 1); }

/* relief: [0] given, [1] taken; times and bytes */
static _Atomic uint64_t relief_times[2], relief_bytes[2];

void vs_stats_count_relief(bool given, uint64_t bytes)
{
    atomic_fetch_add(&relief_times[!given], 1);
    atomic_fetch_add(&relief_bytes[!given], bytes);
}

int vs_stats_write_json(char *buf, size_t len, const struct vs_config *cfg)
{
    struct vs_snapshot *s = malloc(sizeof *s);
    if (s == NULL)
        return -ENOMEM;
    vs_registry_snapshot(s);
    int ndev = device_count(s);
    struct out o = {.buf = buf, .cap = len, .len = 0};
    if (len > 0)
        buf[0] = '\0';

    char cmd[512];
    read_cmdline(cmd, sizeof cmd);
    double uptime = (double)(vs_now_ns() - vs_state.start_ns) / 1e9;
    put(&o, "{\"pid\":%d,\"cmd\":", (int)getpid());
    put_json_string(&o, cmd);
    put(&o, ",\"uptime_s\":%.3f,", uptime);
    put_config(&o, cfg, ndev);
    put(&o, ",");
    put_devices(&o, s, ndev);
    put(&o, ",\"pinned\":{\"limit\":%llu,\"app\":%llu,\"offload\":%llu,"
            "\"staging\":%llu,\"pools\":%llu},",
        (unsigned long long)pin_limit_bytes(cfg),
        (unsigned long long)s->pinned.app, (unsigned long long)s->pinned.offload,
        (unsigned long long)s->pinned.staging, (unsigned long long)s->pinned.pools);
    put_owners(&o, s);
    const struct vs_event_counts *e = &s->events;
    put(&o,
        ",\"counters\":{\"allocs\":%llu,\"frees\":%llu,\"oom_returned\":%llu,"
        "\"evictions\":%llu,\"restores\":%llu,\"bytes_evicted\":%llu,"
        "\"bytes_restored\":%llu,\"launches\":%llu,\"free_queries\":%llu,"
        "\"share_refused\":%llu,"
        "\"relief_given\":%llu,\"relief_taken\":%llu,\"relief_bytes_given\":%llu,"
        "\"relief_bytes_taken\":%llu,"
        "\"fast_copies\":%llu,\"fast_copy_bytes\":%llu,\"fast_copy_ns\":%llu,"
        "\"fast_copy_fallbacks\":%llu,"
        "\"prefaults\":%llu,\"prefault_bytes\":%llu,\"prefault_ns\":%llu}}",
        (unsigned long long)e->allocs, (unsigned long long)e->frees,
        (unsigned long long)e->oom_returned, (unsigned long long)e->evictions,
        (unsigned long long)e->restores, (unsigned long long)e->bytes_evicted,
        (unsigned long long)e->bytes_restored, (unsigned long long)e->launches,
        (unsigned long long)vs_budget_asks(), (unsigned long long)atomic_load(&share_refused),
        (unsigned long long)atomic_load(&relief_times[0]),
        (unsigned long long)atomic_load(&relief_times[1]),
        (unsigned long long)atomic_load(&relief_bytes[0]),
        (unsigned long long)atomic_load(&relief_bytes[1]),
        (unsigned long long)e->fast_copies,
        (unsigned long long)e->fast_copy_bytes, (unsigned long long)e->fast_copy_ns,
        (unsigned long long)e->fast_copy_fallbacks,
        (unsigned long long)e->prefaults, (unsigned long long)e->prefault_bytes,
        (unsigned long long)e->prefault_ns);
    free(s);
    if (len > 0 && o.len >= len)
        buf[len - 1] = '\0';
    return o.len > (size_t)INT32_MAX ? INT32_MAX : (int)o.len;
}

/* bytes per nanosecond is GB/s (10^9 bytes a second) */
static double gb_per_s(uint64_t bytes, uint64_t ns) { return ns ? (double)bytes / (double)ns : 0; }

void vs_stats_print_summary(int fd, const struct vs_config *cfg)
{
    struct vs_snapshot *s = malloc(sizeof *s);
    if (s == NULL)
        return;
    vs_registry_snapshot(s);
    char a[16], b[16], c[16];
    dprintf(fd, "vramshim[%d] summary: %llu allocs, %llu frees, %llu launches, "
                "%llu OOM returned\n",
            (int)getpid(), (unsigned long long)s->events.allocs,
            (unsigned long long)s->events.frees,
            (unsigned long long)s->events.launches,
            (unsigned long long)s->events.oom_returned);
    if (s->events.evictions || s->events.restores)
        dprintf(fd, "  offload: %llu evictions (%s), %llu restores (%s)\n",
                (unsigned long long)s->events.evictions,
                vs_human_size(s->events.bytes_evicted, a, sizeof a),
                (unsigned long long)s->events.restores,
                vs_human_size(s->events.bytes_restored, b, sizeof b));
    if (s->events.fast_copies)
        dprintf(fd, "  loaded: %llu fast copies, %s at %.1f GB/s\n",
                (unsigned long long)s->events.fast_copies,
                vs_human_size(s->events.fast_copy_bytes, a, sizeof a),
                gb_per_s(s->events.fast_copy_bytes, s->events.fast_copy_ns));
    if (s->events.prefaults)
        dprintf(fd, "  prefaulted before pinning: %llu ranges, %s at %.1f GB/s\n",
                (unsigned long long)s->events.prefaults,
                vs_human_size(s->events.prefault_bytes, a, sizeof a),
                gb_per_s(s->events.prefault_bytes, s->events.prefault_ns));
    for (int i = 0; i < device_count(s); i++)
        dprintf(fd, "  device %d: allocated %s, resident %s, peak %s\n", i,
                vs_human_size(s->dev[i].allocated, a, sizeof a),
                vs_human_size(s->dev[i].resident, b, sizeof b),
                vs_human_size(s->dev[i].peak_resident, c, sizeof c));
    dprintf(fd, "  pinned host: app %s, limit %s\n",
            vs_human_size(s->pinned.app, a, sizeof a),
            vs_human_size(pin_limit_bytes(cfg), b, sizeof b));
    for (int id = 0; id < s->n_owners && id < VS_MAX_OWNERS; id++)
        for (int dev = 0; dev < VS_MAX_DEVICES; dev++) {
            const struct vs_owner_counts *o = &s->owner[id][dev];
            if (o->peak == 0)
                continue;
            dprintf(fd, "  owner %-20s device %d: allocated %s in %llu, peak %s\n",
                    vs_owner_name(id), dev, vs_human_size(o->allocated, a, sizeof a),
                    (unsigned long long)o->allocations,
                    vs_human_size(o->peak, b, sizeof b));
        }
    free(s);
}

char *vs_build_text(int (*write)(char *buf, size_t cap, void *arg), void *arg, size_t *len)
{
    size_t cap = 1 << 14;
    /* the document can grow between passes (owners, devices); each retry
     * asks for more than the last pass needed, and a few must do */
    for (int attempt = 0; attempt < 8; attempt++) {
        char *buf = malloc(cap);
        if (buf == NULL)
            return NULL;
        int n = write(buf, cap, arg);
        if (n < 0) {
            free(buf);
            errno = -n;
            return NULL;
        }
        if ((size_t)n < cap) {
            *len = (size_t)n;
            return buf;
        }
        free(buf);
        cap = (size_t)n + (size_t)n / 4 + 1;
    }
    errno = EAGAIN;
    return NULL;
}

static int write_stats(char *buf, size_t cap, void *cfg)
{
    return vs_stats_write_json(buf, cap, cfg);
}

char *vs_stats_json_alloc(const struct vs_config *cfg, size_t *len)
{
    return vs_build_text(write_stats, (void *)cfg, len);
}
