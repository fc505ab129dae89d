/*
 * test_registry: the registry against a plain model. Records in, out,
 * found by any address inside them; counters per owner and device equal to
 * the model's sums after every step of a long random sequence.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>

#include "fixture.h"

static int setup(void **state)
{
    (void)state;
    fixture_reset();
    return 0;
}

static void add_find_remove(void **state)
{
    (void)state;
    assert_int_equal(vs_registry_add(0x10000, 0x1000, 0, VS_KIND_DEVICE, 0), 0);
    assert_int_equal(vs_registry_add(0x20000, 0x100, 1, VS_KIND_ASYNC, 0), 0);
    struct vs_alloc_info info;
    assert_true(vs_registry_find(0x10000, &info));
    assert_int_equal(info.base, 0x10000);
    assert_true(vs_registry_find(0x10fff, &info));
    assert_int_equal(info.size, 0x1000);
    assert_false(vs_registry_find(0x11000, &info));
    assert_false(vs_registry_find(0xffff, &info));
    assert_true(vs_registry_find(0x200ff, &info));
    assert_int_equal(info.device, 1);
    assert_int_equal(info.kind, VS_KIND_ASYNC);
    assert_int_equal(vs_registry_remove(0x10001, NULL), -ENOENT); /* not a base */
    assert_int_equal(vs_registry_remove(0x10000, &info), 0);
    assert_int_equal(info.size, 0x1000);
    assert_false(vs_registry_find(0x10000, NULL));
    assert_int_equal(vs_registry_remove(0x10000, NULL), -ENOENT);
    assert_int_equal(vs_registry_remove(UINT64_MAX, NULL), -ENOENT);
}

/* Stream-ordered blocks count for their owner; on the device, what their
 * pool reserves (and graph memory) is held, charged to owner 0, and the
 * books balance only when the budget holds exactly the reserves. */
static void pool_reserves(void **state)
{
    (void)state;
    int unet = vs_owner_intern("unet");
    assert_int_equal(vs_registry_add(0x100000, 3 << 20, 0, VS_KIND_ASYNC, unet), 0);
    struct vs_charge pool = {.dev = 0, .owner = 0, .bytes = 0};
    vs_budget_hold(&pool, 4 << 20);
    vs_registry_set_reserves(0, 4 << 20, 3 << 20, 0, 0);
    struct vs_snapshot snap;
    vs_registry_snapshot(&snap);
    assert_int_equal(snap.dev[0].allocated, 4 << 20);
    assert_int_equal(snap.dev[0].resident, 4 << 20);
    assert_int_equal(snap.dev[0].pool_reserved, 4 << 20);
    assert_int_equal(snap.owner[unet][0].allocated, 3 << 20);
    assert_int_equal(vs_core_check(), 0);
    /* graph memory joins; a reserve given back shrinks what is held */
    struct vs_charge graph = {.dev = 0, .owner = 0, .bytes = 0};
    vs_budget_hold(&graph, 2 << 20);
    vs_registry_set_reserves(0, 4 << 20, 3 << 20, 2 << 20, 2 << 20);
    assert_int_equal(vs_core_check(), 0);
    vs_budget_hold(&pool, 0); /* the driver let the reserve go: charged less */
    assert_int_equal(vs_core_check(), -1);
    vs_registry_set_reserves(0, 0, 0, 2 << 20, 2 << 20);
    assert_int_equal(vs_core_check(), 0);
    vs_registry_snapshot(&snap);
    assert_int_equal(snap.dev[0].allocated, 2 << 20);
    assert_int_equal(snap.dev[0].peak_resident, 6 << 20);
    /* the block's free gives nothing back itself */
    assert_int_equal(vs_registry_remove(0x100000, NULL), 0);
    vs_budget_hold(&graph, 0);
    vs_registry_set_reserves(0, 0, 0, 0, 0);
    assert_int_equal(vs_core_check(), 0);
    /* a host pool's reserve is pinned memory */
    struct vs_charge host = {.dev = -1, .owner = 0, .bytes = 0};
    vs_budget_hold(&host, 8 << 20);
    vs_registry_set_reserves(-1, 8 << 20, 0, 0, 0);
    assert_int_equal(vs_core_check(), 0);
    vs_registry_snapshot(&snap);
    assert_int_equal(snap.pinned.pools, 8 << 20);
    vs_budget_hold(&host, 0);
    vs_registry_set_reserves(-1, 0, 0, 0, 0);
}

static void counters_and_peaks(void **state)
{
    (void)state;
    int unet = vs_owner_intern("unet");
    assert_int_equal(vs_registry_add(0x1000000, 100, 0, VS_KIND_DEVICE, unet), 0);
    assert_int_equal(vs_registry_add(0x2000000, 50, 0, VS_KIND_DEVICE, 0), 0);
    assert_int_equal(vs_registry_add(0x3000000, 4096, -1, VS_KIND_HOST_ALLOC, 0), 0);
    assert_int_equal(vs_registry_add(0x4000000, 10, 2, VS_KIND_MANAGED, unet), 0);
    struct vs_snapshot *s = malloc(sizeof *s);
    vs_registry_snapshot(s);
    assert_int_equal(s->dev[0].allocated, 150);
    assert_int_equal(s->dev[2].allocated, 10);
    assert_int_equal(s->devices_seen, 0x5);
    assert_int_equal(s->owner[unet][0].allocated, 100);
    assert_int_equal(s->owner[unet][2].allocations, 1);
    assert_int_equal(s->pinned.app, 4096);
    assert_int_equal(s->events.allocs, 3); /* host memory is not a device alloc */
    struct vs_alloc_info gone;
    assert_int_equal(vs_registry_remove(0x1000000, &gone), 0);
    vs_registry_snapshot(s);
    assert_int_equal(s->dev[0].allocated, 50);
    assert_int_equal(s->dev[0].peak_resident, 150);
    assert_int_equal(s->owner[unet][0].peak, 100);
    assert_int_equal(s->events.frees, 1);
    /* a refused free puts everything back as it was */
    vs_registry_restore(&gone);
    vs_registry_snapshot(s);
    assert_int_equal(s->dev[0].allocated, 150);
    assert_int_equal(s->events.allocs, 3);
    assert_int_equal(s->events.frees, 0);
    assert_int_equal(vs_registry_remove(0x3000000, NULL), 0);
    vs_registry_snapshot(s);
    assert_int_equal(s->pinned.app, 0);
    free(s);
}

static void overlap_replaces_stale(void **state)
{
    (void)state;
    assert_int_equal(vs_registry_add(0x100000, 0x10000, 0, VS_KIND_DEVICE, 0), 0);
    /* the driver handed out an address inside a live record: that record
     * was released behind our back */
    assert_int_equal(vs_registry_add(0x108000, 0x100, 0, VS_KIND_DEVICE, 0), -EEXIST);
    assert_false(vs_registry_find(0x100000, NULL));
    assert_true(vs_registry_find(0x108000, NULL));
    /* and one that starts below a live record and runs into it */
    assert_int_equal(vs_registry_add(0x107000, 0x2000, 0, VS_KIND_DEVICE, 0), -EEXIST);
    struct vs_snapshot *s = malloc(sizeof *s);
    vs_registry_snapshot(s);
    assert_int_equal(s->dev[0].allocated, 0x2000);
    assert_int_equal(s->live_records, 1);
    /* one new range over several stale ones drops them all */
    for (int i = 0; i < 4; i++)
        assert_int_equal(vs_registry_add(0x200000 + (uint64_t)i * 0x1000, 0x800, 1,
                                         VS_KIND_DEVICE, 0), 0);
    assert_int_equal(vs_registry_add(0x200400, 0x2800, 1, VS_KIND_DEVICE, 0), -EEXIST);
    vs_registry_snapshot(s);
    assert_int_equal(s->dev[1].allocated, 0x2800 + 0x800);
    assert_int_equal(s->live_records, 3);
    assert_false(vs_registry_find(0x200000, NULL));
    assert_true(vs_registry_find(0x203000, NULL)); /* past the new range: kept */
    free(s);
}

static void remove_range(void **state)
{
    (void)state;
    for (int i = 0; i < 8; i++)
        assert_int_equal(vs_registry_add(0x1000000 + (uint64_t)i * 0x1000, 0x1000, 0,
                                         VS_KIND_VMM, 0), 0);
    assert_int_equal(vs_registry_remove_range(0x1002000, 0x3000), 3);
    assert_true(vs_registry_find(0x1001fff, NULL));
    assert_false(vs_registry_find(0x1002000, NULL));
    assert_false(vs_registry_find(0x1004fff, NULL));
    assert_true(vs_registry_find(0x1005000, NULL));
    /* a range cutting a record in half leaves it */
    assert_int_equal(vs_registry_remove_range(0x1005800, 0x1000), 0);
}

/* Thousands of random operations against a model: every counter and every
 * containment answer must agree with it. */
#define MODEL_SLOTS 2048
static void random_against_model(void **state)
{
    (void)state;
    struct { uint64_t base, size; int dev, owner; bool live; } m[MODEL_SLOTS];
    memset(m, 0, sizeof m);
    int owners[4] = {0, vs_owner_intern("a"), vs_owner_intern("b"), vs_owner_intern("c")};
    unsigned seed = 42;
    struct vs_snapshot *s = malloc(sizeof *s);
    for (int step = 0; step < 60000; step++) {
        int k = rand_r(&seed) % MODEL_SLOTS;
        /* each slot owns a disjoint 1 MiB window of address space */
        uint64_t window = 0x100000000ULL + (uint64_t)k * 0x100000;
        if (m[k].live) {
            assert_int_equal(vs_registry_remove(m[k].base, NULL), 0);
            m[k].live = false;
        } else {
            m[k].size = 1 + (uint64_t)(rand_r(&seed) % 0x80000);
            m[k].base = window + (uint64_t)(rand_r(&seed) % 0x1000) * 16;
            m[k].dev = rand_r(&seed) % 3;
            m[k].owner = owners[rand_r(&seed) % 4];
            m[k].live = true;
            assert_int_equal(vs_registry_add(m[k].base, m[k].size, m[k].dev,
                                             VS_KIND_DEVICE, m[k].owner), 0);
        }
        /* probe an address in some window */
        int j = rand_r(&seed) % MODEL_SLOTS;
        uint64_t probe = 0x100000000ULL + (uint64_t)j * 0x100000 +
                         (uint64_t)(rand_r(&seed) % 0x100000);
        bool want = m[j].live && probe >= m[j].base && probe < m[j].base + m[j].size;
        struct vs_alloc_info info;
        assert_int_equal(vs_registry_find(probe, &info), want);
        if (want)
            assert_int_equal(info.base, m[j].base);
        if (step % 5000 == 0) {
            uint64_t dev_sum[3] = {0}, own_sum[4][3];
            memset(own_sum, 0, sizeof own_sum);
            for (int i = 0; i < MODEL_SLOTS; i++) {
                if (!m[i].live)
                    continue;
                dev_sum[m[i].dev] += m[i].size;
                for (int o = 0; o < 4; o++)
                    if (owners[o] == m[i].owner)
                        own_sum[o][m[i].dev] += m[i].size;
            }
            vs_registry_snapshot(s);
            for (int d = 0; d < 3; d++) {
                assert_int_equal(s->dev[d].allocated, dev_sum[d]);
                for (int o = 0; o < 4; o++)
                    assert_int_equal(s->owner[owners[o]][d].allocated, own_sum[o][d]);
            }
        }
    }
    free(s);
}

static void owners_overflow(void **state)
{
    (void)state;
    char name[32];
    int last = 0;
    for (int i = 0; i < VS_MAX_OWNERS + 10; i++) {
        snprintf(name, sizeof name, "owner%d", i);
        last = vs_owner_intern(name);
    }
    assert_int_equal(last, VS_MAX_OWNERS - 1);
    assert_string_equal(vs_owner_name(last), "(other)");
    assert_int_equal(vs_owner_intern("owner0"), 1); /* interned ids are stable */
}

static void owner_stack(void **state)
{
    (void)state;
    assert_int_equal(vs_owner_current(), 0);
    assert_int_equal(vs_owner_pop(), -ENOENT);
    assert_int_equal(vs_owner_push(NULL), -EINVAL);
    assert_int_equal(vs_owner_push(""), -EINVAL);
    assert_int_equal(vs_owner_push("unet"), 0);
    int unet = vs_owner_current();
    assert_string_equal(vs_owner_name(unet), "unet");
    assert_int_equal(vs_owner_push("vae"), 0);
    assert_string_equal(vs_owner_name(vs_owner_current()), "vae");
    assert_int_equal(vs_owner_pop(), 0);
    assert_int_equal(vs_owner_current(), unet);
    assert_int_equal(vs_owner_pop(), 0);
    assert_int_equal(vs_owner_current(), 0);
    for (int i = 0; i < VRAMSHIM_OWNER_STACK_MAX; i++)
        assert_int_equal(vs_owner_push("deep"), 0);
    assert_int_equal(vs_owner_push("deeper"), -EOVERFLOW);
    for (int i = 0; i < VRAMSHIM_OWNER_STACK_MAX; i++)
        assert_int_equal(vs_owner_pop(), 0);
    /* names are truncated, not refused */
    char longname[100];
    memset(longname, 'x', sizeof longname - 1);
    longname[99] = '\0';
    assert_int_equal(vs_owner_push(longname), 0);
    assert_int_equal(strlen(vs_owner_name(vs_owner_current())), VRAMSHIM_OWNER_NAME_MAX);
    assert_int_equal(vs_owner_pop(), 0);
}

/* Records are carved from a chunk only as they are first used, and reused
 * after a free: 10,000 live records cross two chunk boundaries, every one
 * is found at its own base, and a second round reuses the freed ones. */
static void records_carved_and_reused(void **state)
{
    (void)state;
    for (int round = 0; round < 2; round++) {
        for (uint64_t i = 0; i < 10000; i++)
            assert_int_equal(vs_registry_add(0x100000000ULL + i * 0x1000, 0x800, 0,
                                             VS_KIND_DEVICE, 0), 0);
        struct vs_snapshot snap;
        vs_registry_snapshot(&snap);
        assert_int_equal(snap.live_records, 10000);
        struct vs_alloc_info info;
        for (uint64_t i = 0; i < 10000; i++) {
            assert_true(vs_registry_find(0x100000000ULL + i * 0x1000 + 0x7ff, &info));
            assert_int_equal(info.base, 0x100000000ULL + i * 0x1000);
            assert_int_equal(info.size, 0x800);
        }
        for (uint64_t i = 0; i < 10000; i++)
            assert_int_equal(vs_registry_remove(0x100000000ULL + i * 0x1000, NULL), 0);
        vs_registry_snapshot(&snap);
        assert_int_equal(snap.live_records, 0);
    }
}

/* Ranges thrown at random into a small space, so that new ones often
 * overlap live ones: the one walk that links a record must find every
 * stale neighbour (the one below that runs into it, every one above that
 * starts inside it) and nothing else, as a plain list of ranges does. */
#define OVERLAP_MODEL 512
static void overlaps_against_model(void **state)
{
    (void)state;
    struct { uint64_t base, size; } m[OVERLAP_MODEL];
    int n = 0;
    unsigned seed = 7;
    const uint64_t space = 0x700000000ULL;
    struct vs_snapshot *s = malloc(sizeof *s);
    for (int step = 0; step < 40000; step++) {
        if (n > 0 && rand_r(&seed) % 3 == 0) { /* free one */
            int k = rand_r(&seed) % n;
            assert_int_equal(vs_registry_remove(m[k].base, NULL), 0);
            m[k] = m[--n];
        } else {
            uint64_t base = space + (uint64_t)(rand_r(&seed) % 0x4000) * 16;
            uint64_t size = 1 + (uint64_t)(rand_r(&seed) % (step % 2 ? 0x40 : 0x2000));
            bool overlap = false;
            for (int k = 0; k < n;) {
                if (m[k].base < base + size && base < m[k].base + m[k].size) {
                    overlap = true;
                    m[k] = m[--n];
                } else {
                    k++;
                }
            }
            assert_true(n < OVERLAP_MODEL);
            assert_int_equal(vs_registry_add(base, size, 0, VS_KIND_DEVICE, 0),
                             overlap ? -EEXIST : 0);
            m[n].base = base;
            m[n].size = size;
            n++;
        }
        /* every address of a few probes answers as the model does */
        for (int p = 0; p < 4; p++) {
            uint64_t probe = space + (uint64_t)(rand_r(&seed) % 0x42000);
            int want = -1;
            for (int k = 0; k < n; k++)
                if (probe - m[k].base < m[k].size)
                    want = k;
            struct vs_alloc_info info;
            assert_int_equal(vs_registry_find(probe, &info), want >= 0);
            if (want >= 0)
                assert_int_equal(info.base, m[want].base);
        }
        if (step % 1000 == 0) {
            uint64_t sum = 0;
            for (int k = 0; k < n; k++)
                sum += m[k].size;
            vs_registry_snapshot(s);
            assert_int_equal(s->live_records, (uint64_t)n);
            assert_int_equal(s->dev[0].allocated, sum);
        }
    }
    free(s);
}

/* Threads adding and removing records at once, each in its own address
 * window, while another takes snapshots: every snapshot is consistent
 * (a device's bytes are the sum of its owners'), and at the end every
 * record and byte is gone and each pair was counted. */
#define THREADS 6
#define PAIRS 20000
static atomic_bool snapshots_stop;
static atomic_int snapshot_faults;

static void *pairs_thread(void *arg)
{
    int t = (int)(intptr_t)arg;
    uint64_t window = 0x800000000ULL + (uint64_t)t * 0x10000000ULL;
    for (int i = 0; i < PAIRS; i++) {
        uint64_t base = window + (uint64_t)(i % 4096) * 0x10000;
        uint64_t size = 0x100 + (uint64_t)(i % 7) * 0x100;
        if (vs_registry_add(base, size, t % 2, VS_KIND_DEVICE, 0) != 0 ||
            !vs_registry_find(base + size - 1, NULL) || vs_registry_remove(base, NULL) != 0)
            atomic_fetch_add(&snapshot_faults, 1);
    }
    return NULL;
}

static void *snapshots_thread(void *arg)
{
    (void)arg;
    struct vs_snapshot *s = malloc(sizeof *s);
    while (!atomic_load(&snapshots_stop)) {
        vs_registry_snapshot(s);
        for (int d = 0; d < 2; d++) {
            uint64_t owners = 0;
            for (int o = 0; o < VS_MAX_OWNERS; o++)
                owners += s->owner[o][d].allocated;
            if (owners != s->dev[d].allocated || s->live_records > THREADS)
                atomic_fetch_add(&snapshot_faults, 1);
        }
    }
    free(s);
    return NULL;
}

static void threads_add_and_remove(void **state)
{
    (void)state;
    struct vs_snapshot *s = malloc(sizeof *s);
    vs_registry_snapshot(s);
    uint64_t allocs = s->events.allocs, frees = s->events.frees;
    pthread_t th[THREADS], snap;
    atomic_store(&snapshots_stop, false);
    atomic_store(&snapshot_faults, 0);
    assert_int_equal(pthread_create(&snap, NULL, snapshots_thread, NULL), 0);
    for (int t = 0; t < THREADS; t++)
        assert_int_equal(pthread_create(&th[t], NULL, pairs_thread, (void *)(intptr_t)t), 0);
    for (int t = 0; t < THREADS; t++)
        pthread_join(th[t], NULL);
    atomic_store(&snapshots_stop, true);
    pthread_join(snap, NULL);
    assert_int_equal(atomic_load(&snapshot_faults), 0);
    vs_registry_snapshot(s);
    assert_int_equal(s->live_records, 0);
    assert_int_equal(s->dev[0].allocated + s->dev[1].allocated, 0);
    assert_int_equal(s->events.allocs - allocs, (uint64_t)THREADS * PAIRS);
    assert_int_equal(s->events.frees - frees, (uint64_t)THREADS * PAIRS);
    free(s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(add_find_remove, setup),
        cmocka_unit_test_setup(records_carved_and_reused, setup),
        cmocka_unit_test_setup(counters_and_peaks, setup),
        cmocka_unit_test_setup(pool_reserves, setup),
        cmocka_unit_test_setup(overlap_replaces_stale, setup),
        cmocka_unit_test_setup(overlaps_against_model, setup),
        cmocka_unit_test_setup(threads_add_and_remove, setup),
        cmocka_unit_test_setup(remove_range, setup),
        cmocka_unit_test_setup(random_against_model, setup),
        cmocka_unit_test_setup(owner_stack, setup),
        cmocka_unit_test_setup(owners_overflow, setup),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
