/*
 * test_budget: the four rules of budget.c against a model driver whose
 * device size and free memory each test sets, and whose asks are counted.
 * Limits to the byte; percentages once the device's size is known; owners
 * per device; the reserve asked about only when the count cannot decide;
 * the pin cap held by racing threads; changes at run time; and a random
 * walk checked against a plain model of what must be charged.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fixture.h"

#define M (1ULL << 20)

/* ---- the model driver ------------------------------------------------- */
static uint64_t model_total = 1024 * M;
static bool model_total_known = true;
static uint64_t model_free = 1024 * M;
static int model_asks;

static int q_total(int dev, uint64_t *total)
{
    (void)dev;
    if (!model_total_known)
        return -1;
    *total = model_total;
    return 0;
}

static int q_free(int dev, uint64_t *free_bytes)
{
    (void)dev;
    model_asks++;
    *free_bytes = model_free;
    return 0;
}

/* Fresh state with settings as `vramshim set` would make them (pairs of
 * key and value; free_query_ms, not a run-time key, goes in the config). */
static void with_env(const char *const *pairs)
{
    fixture_reset();
    for (const char *const *p = pairs; p && *p; p += 2)
        if (strcmp(p[0], "free_query_ms") == 0)
            vs_state.cfg.free_query_ms = (uint32_t)atoi(p[1]);
    vs_limits_init(&vs_state.cfg, vs_state.ram_bytes);
    for (const char *const *p = pairs; p && *p; p += 2)
        if (strcmp(p[0], "free_query_ms") != 0) {
            char why[256];
            assert_int_equal(vs_limits_set(p[0], p[1], why, sizeof why), 0);
        }
    vs_budget_reset();
    static const struct vs_device_query q = {NULL, NULL, q_total, q_free, NULL};
    vs_query_set(&q);
    model_total = 1024 * M;
    model_total_known = true;
    model_free = 1024 * M;
    model_asks = 0;
}

static enum vs_verdict charge(int dev, int owner, uint64_t bytes, struct vs_charge *c)
{
    enum vs_verdict v = vs_budget_charge_device(dev, owner, bytes, c);
    if (v == VS_ADMIT)
        vs_budget_settle(c, true);
    return v;
}

static uint64_t charged(int dev)
{
    struct vs_budget_view v;
    vs_budget_device_view(dev, &v);
    return v.charged;
}

/* ---- tests -------------------------------------------------------------- */

static void limit_to_the_byte(void **state)
{
    (void)state;
    const char *env[] = {"vram_limit", "100M", NULL};
    with_env(env);
    struct vs_charge a, b, c;
    assert_int_equal(charge(0, 0, 60 * M, &a), VS_ADMIT);
    assert_int_equal(charge(0, 0, 40 * M + 1, &b), VS_OVER_LIMIT);
    assert_int_equal(b.bytes, 0);
    assert_int_equal(charge(0, 0, 40 * M, &b), VS_ADMIT);
    assert_int_equal(charge(0, 0, 1, &c), VS_OVER_LIMIT);
    assert_int_equal(charged(0), 100 * M);
    /* another device has its own limit */
    assert_int_equal(charge(1, 0, 100 * M, &c), VS_ADMIT);
    vs_budget_refund(&c);
    /* the driver refusing gives the charge back */
    vs_budget_refund(&b);
    assert_int_equal(vs_budget_charge_device(0, 0, 40 * M, &b), VS_ADMIT);
    vs_budget_settle(&b, false);
    assert_int_equal(b.bytes, 0);
    assert_int_equal(charged(0), 60 * M);
    /* a release by record */
    struct vs_alloc_info rec = {.size = 60 * M, .device = 0, .kind = VS_KIND_DEVICE};
    vs_budget_release(&rec);
    assert_int_equal(charged(0), 0);
    /* mappings are charged by handle, not by record */
    assert_int_equal(charge(0, 0, 10 * M, &a), VS_ADMIT);
    rec = (struct vs_alloc_info){.size = 10 * M, .device = 0, .kind = VS_KIND_VMM};
    vs_budget_release(&rec);
    assert_int_equal(charged(0), 10 * M);
    /* zero bytes and unknown devices are the driver's business */
    assert_int_equal(charge(0, 0, 0, &b), VS_ADMIT);
    assert_int_equal(b.bytes, 0);
    assert_int_equal(charge(-1, 0, 1ULL << 40, &b), VS_ADMIT);
    assert_int_equal(charge(VS_MAX_DEVICES, 0, 1ULL << 40, &b), VS_ADMIT);
}

static void never_wraps(void **state)
{
    (void)state;
    const char *env[] = {"vram_limit", "100M", NULL};
    with_env(env);
    struct vs_charge a;
    assert_int_equal(charge(0, 0, 10 * M, &a), VS_ADMIT);
    struct vs_alloc_info rec = {.size = 50 * M, .device = 0, .kind = VS_KIND_DEVICE};
    vs_budget_release(&rec); /* more than was charged: a count gone wrong */
    assert_int_equal(charged(0), 0);
    assert_int_equal(charge(0, 0, 100 * M, &a), VS_ADMIT);
    assert_int_equal(charge(0, 0, UINT64_MAX, &a), VS_OVER_LIMIT);
}

static void percent_waits_for_the_size(void **state)
{
    (void)state;
    const char *env[] = {"vram_limit", "25%", NULL};
    with_env(env);
    model_total_known = false;
    struct vs_charge a;
    assert_int_equal(charge(0, 0, 512 * M, &a), VS_ADMIT); /* size unknown: no limit */
    vs_budget_refund(&a);
    model_total_known = true;
    assert_int_equal(charge(0, 0, 256 * M + 1, &a), VS_OVER_LIMIT);
    assert_int_equal(charge(0, 0, 256 * M, &a), VS_ADMIT);
    assert_int_equal(vs_budget_total(0, 1024 * M), 256 * M);
}

static void owners_per_device(void **state)
{
    (void)state;
    const char *env[] = {"owner_limit", "unet=64M,vae=8M", NULL};
    with_env(env);
    int unet = vs_owner_intern("unet"), vae = vs_owner_intern("vae");
    int other = vs_owner_intern("text");
    struct vs_charge c;
    assert_int_equal(charge(0, unet, 64 * M, &c), VS_ADMIT);
    assert_int_equal(charge(0, unet, 1, &c), VS_OVER_OWNER_LIMIT);
    assert_int_equal(charged(0), 64 * M); /* the device charge was undone */
    assert_int_equal(charge(1, unet, 64 * M, &c), VS_ADMIT);
    assert_int_equal(charge(0, vae, 8 * M, &c), VS_ADMIT);
    assert_int_equal(charge(0, vae, 1, &c), VS_OVER_OWNER_LIMIT);
    assert_int_equal(charge(0, other, 512 * M, &c), VS_ADMIT);
    assert_int_equal(vs_budget_owner_charged(unet, 0), 64 * M);
    assert_int_equal(vs_budget_owner_charged(unet, 1), 64 * M);
    /* the slice seen by an owner */
    uint64_t f, t;
    vs_budget_slice(0, vae, 500 * M, 1024 * M, &f, &t);
    assert_int_equal(f, 0);
    vs_budget_slice(1, unet, 500 * M, 1024 * M, &f, &t);
    assert_int_equal(f, 0);
    vs_budget_slice(1, vae, 500 * M, 1024 * M, &f, &t);
    assert_int_equal(f, 8 * M);
    /* a limit set later applies to an owner already known */
    char why[128];
    assert_int_equal(vs_limits_set("owner_limit", "text=1G", why, sizeof why), 0);
    assert_int_equal(charge(0, other, 512 * M + 1, &c), VS_OVER_OWNER_LIMIT);
    assert_int_equal(charge(0, unet, 1, &c), VS_ADMIT); /* unet's limit is gone */
}

static void slice_figures(void **state)
{
    (void)state;
    with_env(NULL);
    uint64_t f, t;
    vs_budget_slice(0, 0, 300 * M, 1024 * M, &f, &t); /* nothing set: untouched */
    assert_int_equal(f, 300 * M);
    assert_int_equal(t, 1024 * M);
    char why[128];
    assert_int_equal(vs_limits_set("vram_limit", "256M", why, sizeof why), 0);
    struct vs_charge c;
    assert_int_equal(charge(0, 0, 100 * M, &c), VS_ADMIT);
    vs_budget_slice(0, 0, 900 * M, 1024 * M, &f, &t);
    assert_int_equal(f, 156 * M);
    assert_int_equal(t, 256 * M);
    vs_budget_slice(0, 0, 50 * M, 1024 * M, &f, &t); /* others took the device */
    assert_int_equal(f, 50 * M);
    assert_int_equal(vs_limits_set("reserve_vram", "40M", why, sizeof why), 0);
    vs_budget_slice(0, 0, 50 * M, 1024 * M, &f, &t);
    assert_int_equal(f, 10 * M);
    vs_budget_slice(0, 0, 30 * M, 1024 * M, &f, &t);
    assert_int_equal(f, 0); /* never negative */
    assert_int_equal(vs_limits_set("vram_limit", "2G", why, sizeof why), 0);
    vs_budget_slice(0, 0, 900 * M, 1024 * M, &f, &t);
    assert_int_equal(t, 1024 * M); /* never more than the device */
    assert_int_equal(f, 860 * M);
}

static void reserve_asks_only_when_needed(void **state)
{
    (void)state;
    const char *env[] = {"reserve_vram", "256M", "free_query_ms", "60000", NULL};
    with_env(env);
    struct vs_charge c[8];
    assert_int_equal(charge(0, 0, 64 * M, &c[0]), VS_ADMIT);
    assert_int_equal(model_asks, 1); /* the first one must ask */
    model_free -= 64 * M;
    assert_int_equal(charge(0, 0, 64 * M, &c[1]), VS_ADMIT);
    model_free -= 64 * M;
    assert_int_equal(model_asks, 1); /* far from the reserve: counted */
    model_free -= 500 * M; /* another process: 396M left */
    assert_int_equal(charge(0, 0, 64 * M, &c[2]), VS_ADMIT); /* not known yet */
    model_free -= 64 * M;                                    /* 332M */
    assert_int_equal(model_asks, 1);
    /* by the count 352M would stay free, within 480M of the reserve: asks */
    assert_int_equal(charge(0, 0, 480 * M, &c[3]), VS_OVER_RESERVE);
    assert_int_equal(model_asks, 2);
    assert_int_equal(charge(0, 0, 76 * M, &c[3]), VS_ADMIT); /* exactly the reserve */
    model_free -= 76 * M;
    assert_int_equal(charge(0, 0, 1, &c[4]), VS_OVER_RESERVE);
    int asks = model_asks;
    model_free += 500 * M; /* the other process leaves */
    assert_int_equal(charge(0, 0, 1, &c[4]), VS_ADMIT); /* asks before refusing */
    assert_int_equal(model_asks, asks + 1);

    /* free_query_ms=0: every charge under a reserve asks */
    const char *env0[] = {"reserve_vram", "256M", "free_query_ms", "0", NULL};
    with_env(env0);
    for (int i = 0; i < 5; i++)
        assert_int_equal(charge(0, 0, M, &c[0]), VS_ADMIT);
    assert_int_equal(model_asks, 5);

    /* no reserve: never asks */
    const char *none[] = {"vram_limit", "1G", NULL};
    with_env(none);
    for (int i = 0; i < 5; i++)
        assert_int_equal(charge(0, 0, M, &c[0]), VS_ADMIT);
    assert_int_equal(model_asks, 0);

    /* a percentage of the device */
    const char *pct[] = {"reserve_vram", "50%", "free_query_ms", "0", NULL};
    with_env(pct);
    assert_int_equal(charge(0, 0, 512 * M + 1, &c[0]), VS_OVER_RESERVE);
    assert_int_equal(charge(0, 0, 512 * M, &c[0]), VS_ADMIT);
}

/* An allocation whose driver call is still running is not yet in the
 * driver's free figure, and an ask made meanwhile must not count it free. */
static void ask_during_inflight(void **state)
{
    (void)state;
    const char *env[] = {"reserve_vram", "256M", "free_query_ms", "0", NULL};
    with_env(env);
    struct vs_charge a, b;
    assert_int_equal(vs_budget_charge_device(0, 0, 500 * M, &a), VS_ADMIT);
    /* a's driver call has not returned: the driver still says 1024M free */
    assert_int_equal(vs_budget_charge_device(0, 0, 300 * M, &b), VS_OVER_RESERVE);
    assert_int_equal(vs_budget_charge_device(0, 0, 268 * M, &b), VS_ADMIT);
    vs_budget_settle(&a, true);
    vs_budget_settle(&b, true);
    model_free = 1024 * M - 768 * M;
    struct vs_charge c;
    assert_int_equal(vs_budget_charge_device(0, 0, 1, &c), VS_OVER_RESERVE);
}

/* ---- the pin cap, raced ------------------------------------------------ */
static _Atomic uint64_t pinned_now, pinned_peak;

static void *pin_racer(void *arg)
{
    unsigned seed = (unsigned)(uintptr_t)arg;
    struct vs_charge held[64];
    int n = 0;
    for (int i = 0; i < 20000; i++) {
        if (n < 64 && rand_r(&seed) % 2) {
            uint64_t bytes = 1 + rand_r(&seed) % (8 * M);
            if (vs_budget_charge_pinned(bytes, &held[n]) == VS_ADMIT) {
                uint64_t now = atomic_fetch_add(&pinned_now, bytes) + bytes;
                uint64_t peak = atomic_load(&pinned_peak);
                while (now > peak && !atomic_compare_exchange_weak(&pinned_peak, &peak, now))
                    ;
                n++;
            }
        } else if (n > 0) {
            n--;
            atomic_fetch_sub(&pinned_now, held[n].bytes);
            vs_budget_refund(&held[n]);
        }
    }
    while (n > 0) {
        n--;
        atomic_fetch_sub(&pinned_now, held[n].bytes);
        vs_budget_refund(&held[n]);
    }
    return NULL;
}

static void pin_cap_raced(void **state)
{
    (void)state;
    const char *env[] = {"pin_limit", "64M", NULL};
    with_env(env);
    pinned_now = pinned_peak = 0;
    pthread_t t[8];
    for (uintptr_t i = 0; i < 8; i++)
        pthread_create(&t[i], NULL, pin_racer, (void *)(i + 1));
    for (int i = 0; i < 8; i++)
        pthread_join(t[i], NULL);
    uint64_t c, limit;
    vs_budget_pin_view(&c, &limit);
    assert_int_equal(limit, 64 * M);
    assert_int_equal(c, 0);
    assert_true(pinned_peak <= 64 * M);
    assert_true(pinned_peak > 32 * M); /* the racers did fill it */
}

static void set_bad_input_changes_nothing(void **state)
{
    (void)state;
    const char *env[] = {"vram_limit", "1G", NULL};
    with_env(env);
    uint32_t gen = atomic_load(&vs_limits_gen);
    struct vs_config before, after;
    vs_limits_config(&before);
    const char *bad[][2] = {{"vram_limit", "12Q"}, {"vram_limit", ""}, {"vram_limit", "0:1G,0:2G"},
                            {"reserve_vram", "-1"}, {"pin_limit", "250%"},
                            {"offload", "sometimes"}, {"idle_ms", "1e3"},
                            {"owner_limit", "unet:8G"}, {"vram", "1G"}, {"", "1G"}};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char why[256] = "";
        assert_int_equal(vs_limits_set(bad[i][0], bad[i][1], why, sizeof why), -EINVAL);
        assert_true(strlen(why) > 0);
    }
    assert_int_equal(vs_limits_set(NULL, "1G", NULL, 0), -EINVAL);
    assert_int_equal(vs_limits_set("vram_limit", NULL, NULL, 0), -EINVAL);
    vs_limits_config(&after);
    assert_memory_equal(&before, &after, sizeof before);
    assert_int_equal(atomic_load(&vs_limits_gen), gen);

    char why[64];
    assert_int_equal(vs_limits_set("offload", "pinned", why, sizeof why), 0);
    assert_int_equal(vs_limits_set("idle_ms", "250", why, sizeof why), 0);
    vs_limits_config(&after);
    assert_int_equal(after.offload, VS_OFFLOAD_PINNED);
    assert_int_equal(after.idle_ms, 250);
    assert_true(atomic_load(&vs_limits_gen) > gen);
}

/* A random walk of charges, settles, refunds and limit changes against a
 * model: the charge always equals what the model holds, and a charge is
 * admitted exactly when the model says it fits. */
static void random_walk(void **state)
{
    (void)state;
    with_env(NULL);
    unsigned seed = 7;
    uint64_t limit = VS_NO_LIMIT, held_total = 0;
    struct vs_charge held[256];
    int n = 0;
    for (int step = 0; step < 100000; step++) {
        int op = rand_r(&seed) % 10;
        if (op < 5 && n < 256) {
            uint64_t bytes = 1 + rand_r(&seed) % (64 * M);
            bool fits = limit == VS_NO_LIMIT || held_total + bytes <= limit;
            struct vs_charge c;
            enum vs_verdict v = vs_budget_charge_device(0, 0, bytes, &c);
            assert_int_equal(v == VS_ADMIT, fits);
            if (v == VS_ADMIT) {
                bool driver_ok = rand_r(&seed) % 8 != 0;
                vs_budget_settle(&c, driver_ok);
                if (driver_ok) {
                    held[n++] = c;
                    held_total += bytes;
                }
            }
        } else if (op < 9 && n > 0) {
            int i = rand_r(&seed) % n;
            vs_budget_refund(&held[i]);
            held_total -= held[i].bytes;
            held[i] = held[--n];
        } else {
            char value[32], why[128];
            limit = (uint64_t)(rand_r(&seed) % 4096) * M;
            snprintf(value, sizeof value, "%lluM", (unsigned long long)(limit / M));
            assert_int_equal(vs_limits_set("vram_limit", value, why, sizeof why), 0);
        }
        assert_int_equal(charged(0), held_total);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(limit_to_the_byte),
        cmocka_unit_test(never_wraps),
        cmocka_unit_test(percent_waits_for_the_size),
        cmocka_unit_test(owners_per_device),
        cmocka_unit_test(slice_figures),
        cmocka_unit_test(reserve_asks_only_when_needed),
        cmocka_unit_test(ask_during_inflight),
        cmocka_unit_test(pin_cap_raced),
        cmocka_unit_test(set_bad_input_changes_nothing),
        cmocka_unit_test(random_walk),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
