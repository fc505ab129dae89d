/*
 * admit.c: the hooks' side of the budget.
 *
 * A hook asks here before it calls the driver. When the budget says no, the
 * program gets what a full GPU would give it, CUDA_ERROR_OUT_OF_MEMORY, and
 * the log gets one line saying which rule said no and which owners hold the
 * memory, so the user can tell a limit from a real shortage. Programs that
 * probe by allocating until they fail would flood the log, so at most one
 * such line a second is written for each rule; the next one counts those
 * left out.
 */
#include "hooks.h"

#include <stdio.h>
#include <string.h>

#define TOP_OWNERS 4

#define RULES (VS_OVER_PIN_LIMIT + 1)
static _Atomic uint64_t last_line_ns[RULES];
static _Atomic uint64_t left_out[RULES];

static bool may_log_now(enum vs_verdict rule, uint64_t *skipped)
{
    uint64_t now = vs_now_ns();
    uint64_t last = atomic_load(&last_line_ns[rule]);
    if ((last && now - last < 1000000000ULL) ||
        !atomic_compare_exchange_strong(&last_line_ns[rule], &last, now)) {
        atomic_fetch_add(&left_out[rule], 1);
        return false;
    }
    *skipped = atomic_exchange(&left_out[rule], 0);
    return true;
}

/* "main 3.0G, vae 0.8G" for the owners holding most on dev, most first. */
static void describe_owners(int dev, char *buf, size_t cap)
{
    bool shown[VS_MAX_OWNERS] = {false};
    size_t used = 0;
    buf[0] = '\0';
    for (int rank = 0; rank < TOP_OWNERS; rank++) {
        int best = -1;
        uint64_t best_held = 0;
        for (int o = 0; o < vs_owner_count() && o < VS_MAX_OWNERS; o++) {
            uint64_t held = vs_budget_owner_charged(o, dev);
            if (!shown[o] && held > best_held) {
                best = o;
                best_held = held;
            }
        }
        if (best < 0)
            break;
        shown[best] = true;
        char h[16];
        int w = snprintf(buf + used, cap - used, "%s%s %s", rank ? ", " : "",
                         vs_owner_name(best), vs_human_size(best_held, h, sizeof h));
        if (w < 0 || (size_t)w >= cap - used)
            break;
        used += (size_t)w;
    }
    if (used == 0)
        snprintf(buf, cap, "nothing");
}

static void log_refusal(const char *call, const struct vs_charge *c, uint64_t bytes,
                        enum vs_verdict v)
{
    uint64_t skipped;
    if (!may_log_now(v, &skipped))
        return;
    char size[16], lim[16], held[16], more[64] = "", owners[256];
    vs_human_size(bytes, size, sizeof size);
    if (skipped)
        snprintf(more, sizeof more, " [%llu more refusals in the last second]",
                 (unsigned long long)skipped);
    if (v == VS_OVER_PIN_LIMIT) {
        uint64_t charged, limit;
        vs_budget_pin_view(&charged, &limit);
        vs_warn("%s: %s of pinned host memory refused (CUDA_ERROR_OUT_OF_MEMORY): "
                "over the pin limit of %s, %s already pinned%s",
                call, size, vs_human_size(limit, lim, sizeof lim),
                vs_human_size(charged, held, sizeof held), more);
        return;
    }
    struct vs_budget_view view;
    vs_budget_device_view(c->dev, &view);
    describe_owners(c->dev, owners, sizeof owners);
    vs_human_size(view.charged, held, sizeof held);
    switch (v) {
    case VS_OVER_LIMIT:
        vs_warn("%s: %s on device %d refused (CUDA_ERROR_OUT_OF_MEMORY): over the "
                "VRAM limit of %s; this process holds %s: %s%s",
                call, size, c->dev, vs_human_size(view.limit, lim, sizeof lim), held,
                owners, more);
        break;
    case VS_OVER_OWNER_LIMIT: {
        char mine[16];
        vs_warn("%s: %s on device %d refused (CUDA_ERROR_OUT_OF_MEMORY): owner %s "
                "holds %s there, and its limit is %s; this process holds %s: %s%s",
                call, size, c->dev, vs_owner_name(c->owner),
                vs_human_size(vs_budget_owner_charged(c->owner, c->dev), mine,
                              sizeof mine),
                vs_human_size(vs_budget_owner_limit(c->owner), lim, sizeof lim), held,
                owners, more);
        break;
    }
    default: {
        char fr[16];
        vs_warn("%s: %s on device %d refused (CUDA_ERROR_OUT_OF_MEMORY): the device "
                "has %s free and %s must stay free (reserve); this process holds "
                "%s: %s%s",
                call, size, c->dev,
                view.est_free == VS_NO_LIMIT ? "?" : vs_human_size(view.est_free, fr, sizeof fr),
                vs_human_size(view.reserve, lim, sizeof lim), held, owners, more);
        break;
    }
    }
}

static CUresult refuse(const char *call, const struct vs_charge *c, uint64_t bytes,
                       enum vs_verdict v)
{
    vs_registry_count_oom();
    log_refusal(call, c, bytes, v);
    return CUDA_ERROR_OUT_OF_MEMORY;
}

/* How many bytes must leave the device for `bytes` more to pass the rule
 * that said no: moving only that much (plus a margin) leaves the rest of
 * the program's buffers where they are. */
static uint64_t shortfall(int dev, int owner, uint64_t bytes, enum vs_verdict v)
{
    struct vs_budget_view view;
    vs_budget_device_view(dev, &view);
    uint64_t held = view.charged, cap = view.limit;
    if (v == VS_OVER_OWNER_LIMIT) {
        held = vs_budget_owner_charged(owner, dev);
        cap = vs_budget_owner_limit(owner);
    } else if (v == VS_OVER_RESERVE) {
        if (view.est_free == VS_NO_LIMIT)
            return bytes;
        held = view.reserve;
        cap = view.est_free;
    }
    return cap != VS_NO_LIMIT && held + bytes > cap ? held + bytes - cap : bytes;
}

CUresult vs_admit_device(const char *call, int dev, uint64_t bytes,
                         struct vs_charge *out)
{
    int owner = vs_owner_current();
    enum vs_verdict v = vs_budget_charge_device(dev, owner, bytes, out);
    if (VS_LIKELY(v == VS_ADMIT))
        return CUDA_SUCCESS;
    /* Under pressure, move least recently used buffers to host memory
     * rather than fail; another thread may take the room first, so try a
     * few times while something still moves. */
    for (int tries = 0; tries < 16 && v != VS_ADMIT; tries++) {
        if (vs_tier_make_room(dev, v == VS_OVER_OWNER_LIMIT ? owner : -1,
                              shortfall(dev, owner, bytes, v), bytes) == 0)
            break;
        v = vs_budget_charge_device(dev, owner, bytes, out);
    }
    /* the device itself is short: other processes on it may give way */
    if (v == VS_OVER_RESERVE &&
        vs_relief_ask(dev, shortfall(dev, owner, bytes, v), call, false) > 0)
        v = vs_budget_charge_device(dev, owner, bytes, out);
    return v == VS_ADMIT ? CUDA_SUCCESS : refuse(call, out, bytes, v);
}

CUresult vs_admit_overhead(const char *call, enum vs_overhead_space space, uint64_t handle,
                           int dev, uint64_t ctx, uint64_t bytes)
{
    if (vs_overhead_add(space, handle, dev, ctx, (int64_t)bytes, true))
        return CUDA_SUCCESS;
    for (int tries = 0; tries < 16; tries++) {
        if (vs_tier_make_room(dev, -1, shortfall(dev, 0, bytes, VS_OVER_LIMIT), bytes) == 0)
            break;
        if (vs_overhead_add(space, handle, dev, ctx, (int64_t)bytes, true))
            return CUDA_SUCCESS;
    }
    struct vs_charge c = {.dev = dev, .owner = 0, .bytes = 0};
    return refuse(call, &c, bytes, VS_OVER_LIMIT);
}

CUresult vs_admit_pinned(const char *call, uint64_t bytes, struct vs_charge *out)
{
    enum vs_verdict v = vs_budget_charge_pinned(bytes, out);
    /* vramshim's own pins yield before the program's */
    if (VS_UNLIKELY(v != VS_ADMIT) && vs_tier_yield_pins(bytes) > 0)
        v = vs_budget_charge_pinned(bytes, out);
    if (VS_UNLIKELY(v != VS_ADMIT))
        return refuse(call, out, bytes, v);
    vs_hostpool_fit_budget();
    return CUDA_SUCCESS;
}

bool vs_admit_device_short(int dev, uint64_t bytes, const char *call, int step)
{
    if (step == 0)
        return vs_tier_make_room(dev, -1, bytes, bytes) > 0;
    return step == 1 && vs_relief_ask(dev, bytes, call, false) > 0;
}
