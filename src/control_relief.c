/*
 * control_relief.c: this process's side of relief, served by the control
 * socket's thread: what it tells another process that looks for room on a
 * physical device ("peer"), what it gives when asked ("relieve"), and the
 * voluntary release of idle buffers (VRAMSHIM_IDLE_RELEASE).
 *
 * It gives only buffers idle for its own idle_ms (tier.c picks them, least
 * recently touched first, and moves them by its own policy: pinned, then
 * pageable where the process is idle), and only to an asker whose priority
 * is at least its own. A buffer that came back was touched as it came, so
 * it stays on the device for at least idle_ms before it can be given again:
 * that is the minimum stay that keeps two alternating processes from
 * trading the same buffers on every step.
 */
#include "control.h"

#include <stdio.h>
#include <string.h>

/* The ordinal of the device whose UUID is uuid, or -1. */
static int device_of(const char *uuid)
{
    const struct vs_device_query *q = vs_query();
    int n = q->count ? q->count() : 0;
    for (int d = 0; d < n && d < VS_MAX_DEVICES; d++) {
        char mine[64];
        if (q->uuid && q->uuid(d, mine, sizeof mine) == 0 && strcmp(mine, uuid) == 0)
            return d;
    }
    return -1;
}

static uint64_t idle_since_ms(void)
{
    uint64_t last = vs_tier_last_submit_ns();
    return (last > vs_state.start_ns ? last : vs_state.start_ns) / 1000000ULL;
}

void vs_relief_answer_line(const struct vs_request *req, pid_t asker, char *out, size_t cap)
{
    int dev = device_of(req->uuid);
    int32_t mine = vs_limits_priority();
    if (req->cmd == VS_REQ_PEER) {
        /* with offload off nothing can be given: say nothing is held */
        struct vs_budget_view view = {0};
        if (dev >= 0 && vs_limits_offload() != VS_OFFLOAD_OFF)
            vs_budget_device_view(dev, &view);
        uint64_t now = vs_now_ns() / 1000000ULL, since = idle_since_ms();
        snprintf(out, cap, "{\"ok\":true,\"resident\":%llu,\"idle_ms\":%llu,\"priority\":%d}\n",
                 (unsigned long long)view.charged,
                 (unsigned long long)(now > since ? now - since : 0), (int)mine);
        return;
    }
    if (req->priority < mine) {
        snprintf(out, cap,
                 "{\"ok\":false,\"error\":\"priority %d is below ours (%d)\"}\n",
                 (int)req->priority, (int)mine);
        return;
    }
    uint64_t moved = dev >= 0 && vs_limits_offload() != VS_OFFLOAD_OFF
                         ? vs_tier_give(dev, req->bytes)
                         : 0;
    if (moved) {
        char h[16];
        vs_stats_count_relief(true, moved);
        vs_info("relief: gave %s of device %d to process %d", vs_human_size(moved, h, sizeof h),
                dev, (int)asker);
    }
    snprintf(out, cap, "{\"ok\":true,\"moved\":%llu}\n", (unsigned long long)moved);
}

/* Voluntary release: the last idle stretch released, so that one stretch
 * releases once (what comes back later stays until the next stretch). */
static uint64_t released_for;

uint64_t vs_relief_idle_tick(uint64_t now_ms)
{
    uint32_t after = vs_limits_idle_release_ms();
    if (after == 0)
        return now_ms + 1000; /* off; a `set` may turn it on */
    /* buffers are idle only after idle_ms: no use looking before */
    uint32_t idle = vs_limits_idle_ms();
    uint64_t since = idle_since_ms(), due = since + (after > idle ? after : idle);
    if (released_for == since || atomic_load(&vs_tier_buffers) == 0)
        return now_ms + (after < 1000 ? after : 1000);
    if (now_ms < due)
        return due < now_ms + 1000 ? due : now_ms + 1000;
    uint64_t moved = vs_tier_evict(-1, UINT64_MAX, true, NULL);
    uint64_t next = now_ms + (after < 1000 ? after : 1000);
    if (moved == 0) /* touched within the clock's last tick: not idle yet */
        return next > now_ms + 50 ? next : now_ms + 50;
    released_for = since;
    char h[16];
    vs_info("idle release: nothing submitted for %llu ms; moved %s of idle buffers out",
            (unsigned long long)(now_ms - since), vs_human_size(moved, h, sizeof h));
    return next;
}
