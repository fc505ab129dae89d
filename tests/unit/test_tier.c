/*
 * test_tier: tier.c's policy on its own, against fake movers and a fake
 * clock (struct vs_tier_ops), so that every decision is exact and nothing
 * depends on the machine's speed: which buffer moves first, how much moves,
 * when a buffer may go to pageable memory, what a touch or a submission
 * brings back, what never moves, and what a failed fence leaves. A random
 * walk checks the layer's invariants (vs_tier_check) after every step and
 * that the fake device never holds more than its capacity.
 *
 * The fake movers keep the same books the real ones do (chunk.c): a chunk's
 * `where`, the buffer's n_off and n_pageable, the pageable counts.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <time.h>
#include <stdlib.h>
#include <string.h>
#include <pthread.h>
#include <sched.h>
#include <unistd.h>

#include "fixture.h"
#include "offload_internal.h"

#define M (1ULL << 20)
#define G2 (2 * M) /* the fake granularity */
#define SEC 1000000000ULL

/* ---- the fakes ----------------------------------------------------------- */
static uint64_t clock_ns;
static uint64_t dev_cap, dev_used; /* the program's bytes on the device */
static uint64_t pin_cap, pin_used;
static uint64_t next_va;
static bool fence_fails;
static int fences, aheads;
static uint64_t last_moved; /* the buffer the last move out was of */
static uint64_t staged;

/* A move that stops half way: the armed mover blocks until the test lets
 * it go, so that other threads can act while a move holds its buffer. A
 * move held 30 s counts as a hang (the other thread waited on it). The
 * movers log what moved, in order. */
enum { HOLD_NONE, HOLD_TO_PINNED, HOLD_TO_PAGEABLE };
static pthread_mutex_t hold_m = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t hold_c = PTHREAD_COND_INITIALIZER;
static int hold_armed;
static bool hold_reached, hold_released, hold_timed_out;
static char move_log[64];
static uint64_t move_log_base[64];
static int n_move_log;

static void logged(char what, uint64_t base)
{
    pthread_mutex_lock(&hold_m);
    if (n_move_log < 64) {
        move_log_base[n_move_log] = base;
        move_log[n_move_log++] = what;
    }
    pthread_mutex_unlock(&hold_m);
}

static void hold_here(int which)
{
    pthread_mutex_lock(&hold_m);
    if (hold_armed == which) {
        hold_armed = HOLD_NONE;
        hold_reached = true;
        pthread_cond_broadcast(&hold_c);
        struct timespec until;
        clock_gettime(CLOCK_REALTIME, &until);
        until.tv_sec += 30;
        while (!hold_released && !hold_timed_out)
            hold_timed_out = pthread_cond_timedwait(&hold_c, &hold_m, &until) == ETIMEDOUT;
    }
    pthread_mutex_unlock(&hold_m);
}

static void hold_release(void)
{
    pthread_mutex_lock(&hold_m);
    hold_released = true;
    pthread_cond_broadcast(&hold_c);
    pthread_mutex_unlock(&hold_m);
}

static bool held_now(void)
{
    pthread_mutex_lock(&hold_m);
    bool held = hold_reached && !hold_released && !hold_timed_out;
    pthread_mutex_unlock(&hold_m);
    return held;
}

/* Wait (30 s at most, then fail) until cond holds: another thread got
 * somewhere. Never a sleep standing in for an order. */
static bool eventually(bool (*cond)(void))
{
    struct timespec t0, t;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    while (!cond()) {
        clock_gettime(CLOCK_MONOTONIC, &t);
        if (t.tv_sec - t0.tv_sec > 30)
            return false;
        sched_yield();
    }
    return true;
}

static uint64_t fake_now(void) { return clock_ns; }
/* The granularity and the gap left between buffers: 2 MiB and 2 MiB, but
 * for the test of pages two buffers share. */
static uint64_t fake_gran = G2, fake_gap = G2;
static uint64_t fake_granularity(int dev) { return dev == 0 ? fake_gran : UINT64_MAX; }

static CUresult fake_back(struct buffer *b)
{
    uint64_t need = 0;
    for (uint32_t i = 0; i < b->n_chunks; i++)
        need += b->chunk[i].counted;
    if (dev_used + need > dev_cap)
        return CUDA_ERROR_OUT_OF_MEMORY;
    dev_used += need;
    b->base = next_va;
    next_va += b->span + fake_gap; /* a gap, so neighbours never touch */
    return CUDA_SUCCESS;
}

static void leave_pageable(struct buffer *b)
{
    b->n_pageable--;
    atomic_fetch_sub(&vs_pageable_total, 1);
    if (!atomic_load(&b->handed_over))
        atomic_fetch_sub(&vs_pageable_reachable, 1);
}

static void fake_unback(struct buffer *b)
{
    for (uint32_t i = 0; i < b->n_chunks; i++) {
        struct chunk *c = &b->chunk[i];
        if (c->where == CHUNK_DEVICE)
            dev_used -= c->counted;
        else if (c->where == CHUNK_PINNED)
            pin_used -= c->counted;
        else
            leave_pageable(b);
    }
}

static bool fake_fence_begin(struct buffer *b)
{
    (void)b;
    fences++;
    return !fence_fails;
}
static void fake_fence_end(struct buffer *b) { (void)b; }

static CUresult fake_device_to_pinned(struct buffer *b, struct chunk *c)
{
    hold_here(HOLD_TO_PINNED);
    if (pin_used + c->counted > pin_cap)
        return CUDA_ERROR_OUT_OF_MEMORY;
    pin_used += c->counted;
    dev_used -= c->counted;
    c->where = CHUNK_PINNED;
    last_moved = b->base;
    atomic_fetch_add(&b->n_off, 1);
    logged('o', b->base);
    return CUDA_SUCCESS;
}

static CUresult fake_pinned_to_device(struct buffer *b, struct chunk *c)
{
    if (dev_used + c->counted > dev_cap)
        return CUDA_ERROR_OUT_OF_MEMORY;
    dev_used += c->counted;
    pin_used -= c->counted;
    c->where = CHUNK_DEVICE;
    atomic_fetch_sub(&b->n_off, 1);
    logged('i', b->base);
    return CUDA_SUCCESS;
}

static CUresult fake_to_pageable(struct buffer *b, struct chunk *c)
{
    if (c->where == CHUNK_PAGEABLE)
        return CUDA_SUCCESS;
    hold_here(HOLD_TO_PAGEABLE);
    if (c->where == CHUNK_DEVICE) {
        dev_used -= c->counted;
        atomic_fetch_add(&b->n_off, 1);
    } else {
        pin_used -= c->counted;
    }
    c->where = CHUNK_PAGEABLE;
    b->n_pageable++;
    atomic_fetch_add(&vs_pageable_total, 1);
    if (!atomic_load(&b->handed_over))
        atomic_fetch_add(&vs_pageable_reachable, 1);
    logged('p', b->base);
    return CUDA_SUCCESS;
}

static CUresult fake_from_pageable(struct buffer *b, struct chunk *c, bool pinned_too)
{
    if (dev_used + c->counted <= dev_cap) {
        dev_used += c->counted;
        c->where = CHUNK_DEVICE;
        atomic_fetch_sub(&b->n_off, 1);
    } else if (pinned_too) { /* past the pin cap if need be, as chunk.c does */
        pin_used += c->counted;
        c->where = CHUNK_PINNED;
    } else {
        return CUDA_ERROR_OUT_OF_MEMORY;
    }
    leave_pageable(b);
    logged('b', b->base);
    return CUDA_SUCCESS;
}

static CUresult fake_export(struct buffer *b, struct chunk *c, int *fd)
{
    (void)b;
    (void)c;
    *fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
    return *fd >= 0 ? CUDA_SUCCESS : CUDA_ERROR_UNKNOWN;
}

static void fake_ahead(uint64_t gran, CUcontext ctx)
{
    (void)gran;
    (void)ctx;
    aheads++;
}

static uint64_t fake_release_staging(void)
{
    uint64_t s = staged;
    staged = 0;
    return s;
}

/* Mappings given the buffer's settings again (chunk.c: access, SYNC_MEMOPS). */
static int refreshed;
static void fake_refresh_access(struct buffer *b)
{
    (void)b;
    refreshed++;
}

static const struct vs_tier_ops fake_ops = {
    .now = fake_now,
    .granularity = fake_granularity,
    .back = fake_back,
    .unback = fake_unback,
    .fence_begin = fake_fence_begin,
    .fence_end = fake_fence_end,
    .device_to_pinned = fake_device_to_pinned,
    .pinned_to_device = fake_pinned_to_device,
    .to_pageable = fake_to_pageable,
    .from_pageable = fake_from_pageable,
    .export_chunk = fake_export,
    .host_ahead = fake_ahead,
    .release_staging = fake_release_staging,
    .refresh_access = fake_refresh_access,
};

/* ---- helpers --------------------------------------------------------------- */
static uint64_t live[1024];
static int n_live;

static int setup(void **state)
{
    (void)state;
    fixture_reset();
    assert_int_equal(vs_limits_set("offload", "pinned", NULL, 0), 0);
    assert_int_equal(vs_limits_set("idle_ms", "1000", NULL, 0), 0);
    vs_tier_atfork_child(); /* an empty tree */
    vs_gate_init();
    vs_tier_init(&fake_ops);
    clock_ns = 100 * SEC;
    dev_cap = 1024 * M;
    dev_used = pin_used = 0;
    pin_cap = 1024 * M;
    next_va = 1ULL << 40;
    fake_gran = fake_gap = G2;
    fence_fails = false;
    fences = aheads = 0;
    last_moved = 0;
    staged = 0;
    n_live = 0;
    hold_armed = HOLD_NONE;
    hold_reached = hold_released = hold_timed_out = false;
    n_move_log = 0;
    atomic_store(&vs_tier_free_waits, 0);
    return 0;
}

/* A free as hook_mem.c makes it (the registry record would be taken out
 * between the two steps). */
static CUresult tier_free(uint64_t base)
{
    struct vs_backing *held = vs_tier_free_begin(base);
    if (held == NULL)
        return CUDA_ERROR_NOT_FOUND;
    vs_tier_free_end(held);
    return CUDA_SUCCESS;
}

static int teardown(void **state)
{
    (void)state;
    for (int i = 0; i < n_live; i++)
        assert_int_equal(tier_free(live[i]), CUDA_SUCCESS);
    assert_int_equal(vs_tier_check(), 0);
    assert_int_equal(dev_used, 0);
    assert_int_equal(pin_used, 0);
    assert_int_equal(atomic_load(&vs_tier_buffers), 0);
    return 0;
}

/* A backed buffer of `size` bytes for owner, allocated at the current time. */
static uint64_t alloc_at(uint64_t size, int owner, uint64_t when)
{
    clock_ns = when;
    CUdeviceptr p = 0;
    struct vs_backing *pending;
    assert_int_equal(vs_tier_alloc(&p, size, 0, owner, &pending), CUDA_SUCCESS);
    vs_tier_publish(pending, true);
    live[n_live++] = p;
    return p;
}

static void forget(uint64_t p)
{
    for (int i = 0; i < n_live; i++)
        if (live[i] == p) {
            live[i] = live[--n_live];
            return;
        }
}

/* The program names p in a launch at time `when`. */
static void touch_at(uint64_t p, uint64_t when)
{
    clock_ns = when;
    vs_tier_touch_words(&p, 1, 1, when);
}

static bool offloaded(uint64_t p)
{
    struct vs_tier_view v;
    assert_true(vs_tier_lookup(p, &v));
    return v.offloaded;
}

/* ---- the tests --------------------------------------------------------------- */

/* Every address of [first, end) is found in the buffer the model says, or
 * in none, by a look-up (the page index) and by a touch (stamping it). */
static void lookups_match(const uint64_t *base, const uint64_t *size, const bool *alive, int n,
                          uint64_t first, uint64_t end, uint64_t step)
{
    for (uint64_t a = first; a < end; a += step) {
        int want = -1;
        for (int i = 0; i < n; i++)
            if (alive[i] && a >= base[i] && a < base[i] + size[i])
                want = i;
        struct vs_tier_view v;
        bool found = vs_tier_lookup(a, &v);
        assert_int_equal(found, want >= 0);
        if (found)
            assert_int_equal(v.base, base[want]);
    }
    assert_int_equal(vs_tier_check(), 0);
}

/* The page index under a granularity below its 2 MiB pages: buffers packed
 * end to end share pages, each shared page names one of them, and a
 * free hands it to the neighbour; every interior pointer (and the gaps a
 * free leaves) answers as the model does, and vs_tier_check finds the
 * index exact after every free. */
static void page_index_follows_shared_pages(void **state)
{
    (void)state;
    fake_gran = 64 * 1024;
    fake_gap = 0;
    enum { N = 24 };
    uint64_t base[N], size[N];
    bool alive[N];
    uint64_t first = next_va, x = 0x2545f4914f6cdd1dULL;
    for (int i = 0; i < N; i++) {
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        size[i] = (1 + x % 80) * fake_gran; /* 64 KiB to 5 MiB */
        base[i] = alloc_at(size[i], 0, clock_ns);
        alive[i] = true;
    }
    uint64_t end = next_va + 4 * M;
    lookups_match(base, size, alive, N, first - 2 * M, end, 16 * 1024);
    for (int k = 0; k < N; k++) { /* an order that frees middles before ends */
        int i = (k * 7) % N;
        assert_null(vs_tier_free_begin(base[i] + 8)); /* not a base: no free */
        assert_int_equal(tier_free(base[i]), CUDA_SUCCESS);
        forget(base[i]);
        alive[i] = false;
        lookups_match(base, size, alive, N, first, end, 32 * 1024);
    }
}

/* At 2 MiB granularity every page belongs to one buffer: a buffer of
 * several chunks is found by its last byte, and not one byte past it. */
static void page_index_finds_interior_pointers(void **state)
{
    (void)state;
    uint64_t a = alloc_at(200 * M + 5, 0, clock_ns);
    uint64_t b = alloc_at(2 * M, 0, clock_ns);
    uint64_t base[2] = {a, b}, size[2] = {200 * M + 5, 2 * M};
    bool alive[2] = {true, true};
    lookups_match(base, size, alive, 2, a - 4 * M, b + 4 * M, 512 * 1024 - 3);
    struct vs_tier_view v;
    assert_true(vs_tier_lookup(a + 200 * M + 4, &v));
    assert_false(vs_tier_lookup(a + 200 * M + 5, &v)); /* past the size, inside the span */
}

/* Launches go through touch.c as the hooks send them: a kernel of
 * launch_params 8-byte parameters (the driver's answer, faked here), at the
 * test's clock (the link wraps clock_gettime: FIXTURE_CLOCK). */
struct vs_real_table vs_real;
static size_t launch_params;
FIXTURE_CLOCK(clock_ns)
static CUresult param_info(CUfunction f, size_t i, size_t *off, size_t *size)
{
    (void)f;
    if (i >= launch_params)
        return CUDA_ERROR_INVALID_VALUE;
    *off = 8 * i;
    *size = 8;
    return CUDA_SUCCESS;
}

/* A launch of f naming words (one parameter each, as the driver says f
 * has): touched, the gate entered, then its driver call (none here) and
 * the gate let go. */
static void launch_fn(CUfunction f, const uint64_t *words, int n)
{
    vs_real.cuFuncGetParamInfo = param_info;
    launch_params = (size_t)n;
    uint64_t copy[64];
    void *params[64];
    for (int i = 0; i < n; i++) {
        copy[i] = words[i];
        params[i] = &copy[i];
    }
    int gate = vs_launch_enter(f, params, NULL);
    assert_true(gate > 0);
    vs_gate_leave(gate);
}

/* The same at now, with one function per parameter count: a layout is
 * asked once per handle. */
static void launch_words(const uint64_t *words, int n, uint64_t now)
{
    assert_int_equal(now, clock_ns);
    launch_fn((CUfunction)(uintptr_t)(0x1000 + 16 * n), words, n);
}

/* A buffer the thread's touch cache holds, moved off the device since
 * (here handed over, as vramshim_offload does): the next launch naming the
 * same word brings it back, the cache's entry being of an older tree
 * generation, never trusted. */
static void cached_buffer_moved_comes_back(void **state)
{
    (void)state;
    uint64_t a = alloc_at(8 * M, 0, clock_ns);
    CUfunction f = (CUfunction)(uintptr_t)0x7100;
    uint64_t word = a + 4096;
    launch_fn(f, &word, 1);
    launch_fn(f, &word, 1); /* now a cache hit */
    assert_int_equal(vs_tier_offload(a), 0);
    assert_true(offloaded(a));
    launch_fn(f, &word, 1);
    assert_false(offloaded(a));
    vs_tier_evict(-1, UINT64_MAX, false, NULL); /* moved by an eviction this time */
    assert_true(offloaded(a));
    launch_fn(f, &word, 1);
    assert_false(offloaded(a));
    assert_int_equal(vs_tier_check(), 0);
}

/* A function handle the driver gave again, after an unload, to a kernel
 * with more parameters: the launch reads the new kernel's layout, not the
 * one the thread cached for the handle, so buffers named only in its new
 * parameters come back before it runs. */
static void recycled_handle_uses_its_new_layout(void **state)
{
    (void)state;
    uint64_t a = alloc_at(8 * M, 0, clock_ns);
    uint64_t b = alloc_at(8 * M, 0, clock_ns);
    uint64_t c = alloc_at(8 * M, 0, clock_ns);
    CUfunction f = (CUfunction)(uintptr_t)0x7000;
    uint64_t words[3] = {a, b, c};
    launch_fn(f, words, 1); /* its layout asked: one parameter */
    launch_fn(f, words, 1); /* and found in the thread's cache */
    assert_int_equal(vs_tier_offload(b), 0);
    assert_int_equal(vs_tier_offload(c), 0);
    assert_true(offloaded(b) && offloaded(c));
    launch_fn(f, words, 1); /* the thread's touch cache current again */
    vs_touch_forget_layouts(); /* the module unloaded; f comes back with three */
    launch_fn(f, words, 3);
    assert_false(offloaded(b));
    assert_false(offloaded(c));
    assert_int_equal(vs_tier_check(), 0);
}

/* A launch's one pass (touch.c's vs_touch_launch), against what each buffer
 * should be: at 2 MiB and at 64 KiB granularity (pages shared, so some
 * words take the tree), with offloaded buffers named (they come back),
 * words in the gaps (nothing), the same words again on the same tick (the
 * thread's cache answers) and on a later tick (the cache stamps again).
 * After launches at T1 and T1 + 0.6 s, an idle-only eviction at T1 + 1.3 s
 * moves exactly the buffers the second launch did not name. */
static void launch_pass_stamps_what_it_names(void **state)
{
    (void)state;
    enum { N = 12, WORDS = 10 };
    uint64_t x = 0x9e3779b97f4a7c15ULL;
    for (int round = 0; round < 2; round++) {
        fake_gran = round == 0 ? G2 : 64 * 1024;
        fake_gap = round == 0 ? G2 : 0;
        uint64_t base[N], size[N];
        for (int i = 0; i < N; i++) {
            x ^= x << 13, x ^= x >> 7, x ^= x << 17;
            size[i] = (1 + x % 40) * fake_gran - (x % 3) * 8;
            base[i] = alloc_at(size[i], 0, clock_ns);
        }
        for (int step = 0; step < 60; step++) {
            uint64_t t1 = clock_ns + 10 * SEC;
            bool named[2][N] = {{false}};
            for (int l = 0; l < 2; l++) {
                uint64_t words[WORDS];
                for (int w = 0; w < WORDS; w++) {
                    x ^= x << 13, x ^= x >> 7, x ^= x << 17;
                    int i = (int)(x % N);
                    /* a buffer's span is its size rounded up to the
                     * granularity: a word in the tail still names it */
                    uint64_t span = (size[i] + fake_gran - 1) / fake_gran * fake_gran;
                    if (x % 5 == 0 && i + 1 < N && base[i] + span < base[i + 1]) {
                        words[w] = base[i] + span + (x >> 40) % (base[i + 1] - base[i] - span);
                        continue; /* in a gap: no buffer */
                    }
                    words[w] = base[i] + (x >> 20) % span;
                    named[l][i] = true;
                }
                clock_ns = t1 + (uint64_t)l * 600000000ULL;
                launch_words(words, WORDS, clock_ns);
                launch_words(words, WORDS, clock_ns); /* the cache's answer */
                for (int i = 0; i < N; i++)
                    if (named[l][i])
                        assert_false(offloaded(base[i]));
            }
            clock_ns = t1 + 1300000000ULL;
            vs_tier_evict(-1, UINT64_MAX, true, NULL);
            for (int i = 0; i < N; i++)
                assert_int_equal(offloaded(base[i]), !named[1][i]);
            assert_int_equal(vs_tier_check(), 0);
        }
        for (int i = 0; i < N; i++) {
            assert_int_equal(tier_free(base[i]), CUDA_SUCCESS);
            forget(base[i]);
        }
    }
}

/* The least recently touched buffer moves first, and only as much as the
 * shortfall (no margin for an allocation of 0 bytes). */
static void least_recently_touched_first(void **state)
{
    (void)state;
    uint64_t a = alloc_at(8 * M, 0, 101 * SEC);
    uint64_t b = alloc_at(8 * M, 0, 102 * SEC);
    uint64_t c = alloc_at(8 * M, 0, 103 * SEC);
    touch_at(a, 104 * SEC);
    assert_int_equal(vs_tier_make_room(0, -1, 8 * M, 0), 8 * M);
    assert_true(offloaded(b));
    assert_false(offloaded(a));
    assert_false(offloaded(c));
    assert_int_equal(pin_used, 8 * M);
    assert_int_equal(aheads, 1); /* host memory made ready for the next */
    assert_int_equal(vs_tier_check(), 0);
}

/* The margin: an eighth of the allocation, so the next few do not stop. */
static void shortfall_plus_margin(void **state)
{
    (void)state;
    for (int i = 0; i < 4; i++)
        alloc_at(8 * M, 0, (101 + i) * SEC);
    /* 1 MiB short for a 64 MiB allocation: 1 + 8 MiB must move: two buffers */
    assert_int_equal(vs_tier_make_room(0, -1, 1 * M, 64 * M), 16 * M);
    assert_true(offloaded(live[0]));
    assert_true(offloaded(live[1]));
    assert_false(offloaded(live[2]));
}

/* An owner limit moves only that owner's buffers. */
static void owner_limit_moves_the_owner(void **state)
{
    (void)state;
    uint64_t mine = alloc_at(8 * M, 1, 105 * SEC);
    uint64_t other = alloc_at(8 * M, 2, 101 * SEC); /* older, not the owner's */
    assert_int_equal(vs_tier_make_room(0, 1, 8 * M, 0), 8 * M);
    assert_true(offloaded(mine));
    assert_false(offloaded(other));
}

/* evict idle_only: only buffers untouched for idle_ms. */
static void evict_idle_only(void **state)
{
    (void)state;
    uint64_t old = alloc_at(8 * M, 0, 101 * SEC);
    uint64_t fresh = alloc_at(8 * M, 0, 110 * SEC);
    clock_ns = 110 * SEC + 999 * 1000000ULL; /* fresh: 999 ms old */
    assert_int_equal(vs_tier_evict(-1, UINT64_MAX, true, NULL), 8 * M);
    assert_true(offloaded(old));
    assert_false(offloaded(fresh));
    clock_ns = 111 * SEC; /* now 1000 ms: idle */
    assert_int_equal(vs_tier_evict(-1, UINT64_MAX, true, NULL), 8 * M);
    assert_true(offloaded(fresh));
}

/* A touch brings an offloaded buffer back, making room only from buffers
 * idle for idle_ms: two buffers a kernel keeps using never trade places. */
static void touch_brings_back_from_idle_room_only(void **state)
{
    (void)state;
    dev_cap = 16 * M;
    uint64_t a = alloc_at(8 * M, 0, 101 * SEC);
    uint64_t b = alloc_at(8 * M, 0, 101 * SEC + 1);
    assert_int_equal(vs_tier_make_room(0, -1, 8 * M, 0), 8 * M); /* a goes */
    assert_true(offloaded(a));
    uint64_t c = alloc_at(8 * M, 0, 101 * SEC + 2); /* fills the device */
    touch_at(b, 101 * SEC + 3);
    touch_at(c, 101 * SEC + 4);
    touch_at(a, 101 * SEC + 5); /* b and c are busy: a stays pinned */
    assert_true(offloaded(a));
    assert_false(offloaded(b));
    touch_at(c, 102 * SEC + 4); /* b untouched for a second now: idle */
    touch_at(a, 102 * SEC + 5);
    assert_false(offloaded(a));
    assert_true(offloaded(b));
    assert_false(offloaded(c));
    assert_int_equal(dev_used, 16 * M);
}

/* With offload auto and the pin budget spent, an idle process's buffers go
 * to pageable memory and its next submission brings them back first; a
 * busy process's do not move at all. */
static void pageable_only_when_idle(void **state)
{
    (void)state;
    assert_int_equal(vs_limits_set("offload", "auto", NULL, 0), 0);
    pin_cap = 0;
    uint64_t a = alloc_at(8 * M, 0, 101 * SEC);
    touch_at(a, 102 * SEC); /* a submission just now: busy */
    clock_ns = 102 * SEC + 500 * 1000000ULL;
    assert_int_equal(vs_tier_make_room(0, -1, 8 * M, 0), 0);
    assert_false(offloaded(a));
    clock_ns = 103 * SEC; /* nothing submitted for idle_ms */
    assert_int_equal(vs_tier_make_room(0, -1, 8 * M, 0), 8 * M);
    assert_true(offloaded(a));
    assert_int_equal(atomic_load(&vs_pageable_reachable), 1);
    assert_int_equal(dev_used, 0);
    /* the next submission, whatever it names, brings it back first */
    int gate = vs_gate_enter();
    assert_int_equal(gate, 1);
    vs_gate_leave(gate);
    assert_int_equal(atomic_load(&vs_pageable_reachable), 0);
    assert_false(offloaded(a));
    assert_int_equal(vs_tier_check(), 0);
}

/* vramshim_offload hands a buffer over: pageable even while busy, out
 * through submissions that do not name it, back when named or prefetched. */
static void handed_over_stays_out_until_named(void **state)
{
    (void)state;
    assert_int_equal(vs_limits_set("offload", "auto", NULL, 0), 0);
    pin_cap = 0;
    uint64_t a = alloc_at(8 * M, 0, 101 * SEC);
    uint64_t b = alloc_at(8 * M, 0, 101 * SEC);
    touch_at(b, 101 * SEC + 1); /* busy */
    assert_int_equal(vs_tier_offload(a), 0);
    assert_true(offloaded(a));
    assert_int_equal(atomic_load(&vs_pageable_total), 1);
    assert_int_equal(atomic_load(&vs_pageable_reachable), 0);
    int gate = vs_gate_enter(); /* a launch naming b only */
    assert_int_equal(gate, 1);
    vs_gate_leave(gate);
    touch_at(b, 101 * SEC + 2);
    assert_true(offloaded(a));
    touch_at(a, 101 * SEC + 3);
    assert_false(offloaded(a));
    assert_int_equal(atomic_load(&vs_pageable_total), 0);
    assert_int_equal(vs_tier_offload(a), 0);
    assert_int_equal(vs_tier_prefetch(a), 0);
    assert_false(offloaded(a));
    assert_int_equal(vs_tier_offload(next_va + 64 * M), -ENOENT);
}

/* A shared buffer never moves; a buffer whose fence fails does not move. */
static void what_never_moves(void **state)
{
    (void)state;
    uint64_t shared = alloc_at(8 * M, 0, 101 * SEC);
    uint64_t other = alloc_at(8 * M, 0, 102 * SEC);
    struct vs_share sh;
    assert_int_equal(vs_tier_share(shared, "test", &sh), CUDA_SUCCESS);
    assert_int_equal(sh.base, shared);
    assert_int_equal(vs_tier_offload(shared), -EBUSY);
    fence_fails = true;
    assert_int_equal(vs_tier_make_room(0, -1, 16 * M, 0), 0);
    assert_false(offloaded(other));
    fence_fails = false;
    assert_int_equal(vs_tier_make_room(0, -1, 16 * M, 0), 8 * M);
    assert_false(offloaded(shared));
    assert_true(offloaded(other));
    int fds[4];
    assert_int_equal(vs_tier_export(shared, sh.token + 1, fds, 4, &sh), -ENOENT);
    assert_int_equal(vs_tier_export(shared, sh.token, fds, 4, &sh), 1);
    close(fds[0]);
}

/* SYNC_MEMOPS stays with the buffer: answered from any address inside it,
 * while it is offloaded and after it is back, and every mapping is given
 * it again when it changes; an address that is no backed buffer is the
 * driver's. */
static void sync_memops_follows_the_buffer(void **state)
{
    (void)state;
    uint64_t a = alloc_at(8 * M, 0, 101 * SEC);
    struct vs_tier_view v;
    assert_true(vs_tier_lookup(a, &v));
    assert_int_equal(v.sync_memops, -1);
    int before = refreshed;
    assert_int_equal(vs_tier_set_sync_memops(a + M, true), CUDA_SUCCESS);
    assert_int_equal(refreshed, before + 1);
    assert_int_equal(vs_tier_offload(a), 0);
    assert_true(vs_tier_lookup(a + 7 * M, &v));
    assert_int_equal(v.sync_memops, 1);
    assert_int_equal(vs_tier_prefetch(a), 0);
    assert_false(offloaded(a));
    assert_true(vs_tier_lookup(a, &v));
    assert_int_equal(v.sync_memops, 1);
    assert_int_equal(vs_tier_set_sync_memops(a, false), CUDA_SUCCESS);
    assert_true(vs_tier_lookup(a, &v));
    assert_int_equal(v.sync_memops, 0);
    assert_int_equal(vs_tier_set_sync_memops(next_va + 64 * M, true), CUDA_ERROR_NOT_FOUND);
}

/* The program's own pinning: staging goes first, then pinned chunks come
 * back to the device where they fit. */
static void pins_yield(void **state)
{
    (void)state;
    uint64_t a = alloc_at(8 * M, 0, 101 * SEC);
    uint64_t b = alloc_at(8 * M, 0, 102 * SEC);
    assert_int_equal(vs_tier_evict(-1, UINT64_MAX, false, NULL), 16 * M);
    assert_int_equal(pin_used, 16 * M);
    staged = 4 * M;
    assert_int_equal(vs_tier_yield_pins(4 * M), 4 * M); /* staging was enough */
    assert_int_equal(pin_used, 16 * M);
    assert_int_equal(vs_tier_yield_pins(8 * M), 8 * M);
    assert_int_equal(pin_used, 8 * M);
    assert_true(offloaded(a) != offloaded(b));
}

/* A free of an offloaded buffer gives back its host memory too. */
static void free_offloaded(void **state)
{
    (void)state;
    uint64_t a = alloc_at(80 * M, 0, 101 * SEC); /* two chunks: 64M + 16M */
    assert_int_equal(vs_tier_make_room(0, -1, 16 * M, 0), 16 * M); /* the last chunk */
    assert_int_equal(pin_used, 16 * M);
    assert_int_equal(tier_free(a), CUDA_SUCCESS);
    forget(a);
    assert_int_equal(pin_used, 0);
    assert_int_equal(dev_used, 0);
    assert_int_equal(tier_free(a), CUDA_ERROR_NOT_FOUND);
}

/* An allocation not yet published (its record not yet made) is never
 * picked by a move. */
static void unpublished_never_moves(void **state)
{
    (void)state;
    CUdeviceptr p;
    struct vs_backing *pending;
    clock_ns = 90 * SEC; /* older than anything: it would be the first victim */
    assert_int_equal(vs_tier_alloc(&p, 8 * M, 0, 0, &pending), CUDA_SUCCESS);
    assert_int_equal(vs_tier_evict(-1, UINT64_MAX, false, NULL), 0);
    vs_tier_publish(pending, true);
    live[n_live++] = p;
    assert_int_equal(vs_tier_evict(-1, UINT64_MAX, false, NULL), 8 * M);
}

/* A graph launch touches every buffer at once, in O(1): each counts as
 * touched then, unless touched on its own later or allocated since. */
static void graph_launch_touches_all(void **state)
{
    (void)state;
    uint64_t a = alloc_at(8 * M, 0, 101 * SEC);
    uint64_t b = alloc_at(8 * M, 0, 102 * SEC);
    uint64_t c = alloc_at(8 * M, 0, 103 * SEC);
    clock_ns = 104 * SEC;
    vs_tier_touch_all(clock_ns);
    uint64_t d = alloc_at(8 * M, 0, 104 * SEC + 200 * 1000000ULL);
    touch_at(a, 104 * SEC + 500 * 1000000ULL);
    clock_ns = 104 * SEC + 900 * 1000000ULL; /* nothing untouched for idle_ms */
    assert_int_equal(vs_tier_evict(-1, UINT64_MAX, true, NULL), 0);
    /* b and c, touched by the graph at 104 s, go before d (104.2 s), then a */
    assert_int_equal(vs_tier_make_room(0, -1, 8 * M, 0), 8 * M);
    assert_true(last_moved == b || last_moved == c);
    clock_ns = 105 * SEC + 100 * 1000000ULL; /* b and c idle; d and a not */
    assert_int_equal(vs_tier_evict(-1, UINT64_MAX, true, NULL), 8 * M);
    assert_true(offloaded(b) && offloaded(c));
    assert_false(offloaded(d) || offloaded(a));
    assert_int_equal(vs_tier_make_room(0, -1, 8 * M, 0), 8 * M);
    assert_int_equal(last_moved, d);
    assert_false(offloaded(a));
    /* a graph launch after a buffer's own touch: the later counts */
    touch_at(d, 106 * SEC); /* d comes back */
    clock_ns = 105 * SEC + 500 * 1000000ULL; /* a thread's earlier clock */
    vs_tier_touch_all(clock_ns);
    clock_ns = 106 * SEC + 600 * 1000000ULL; /* a idle (from the graph), d not */
    assert_int_equal(vs_tier_evict(-1, UINT64_MAX, true, NULL), 8 * M);
    assert_true(offloaded(a));
    assert_false(offloaded(d));
}

/* ---- ordering: frees and moves of the same buffers (issue 11) ------------ */

static uint64_t evict_moved;
static _Atomic uint64_t evict_progress;
static void *evict_all(void *idle_only)
{
    evict_moved = vs_tier_evict(-1, UINT64_MAX, idle_only != NULL, &evict_progress);
    return NULL;
}

static uint64_t to_free;
static _Atomic bool freed;
static void *free_it(void *arg)
{
    (void)arg;
    tier_free(to_free);
    atomic_store(&freed, true);
    return NULL;
}

static bool hold_reached_now(void)
{
    pthread_mutex_lock(&hold_m);
    bool r = hold_reached;
    pthread_mutex_unlock(&hold_m);
    return r;
}
static bool free_is_waiting(void) { return atomic_load(&vs_tier_free_waits) == 1; }
static bool program_is_waiting(void) { return vs_tier_waiting() == 1; }

/* A free of a buffer no move holds waits for nothing, even while a long
 * request holds another buffer half moved; a free of the buffer being
 * moved waits, and the move stops at its next chunk (the free's charges
 * are then exactly what the books hold). Before, every free took move_lock:
 * the free of the other buffer waited for the whole request. */
static void free_waits_only_for_its_own_move(void **state)
{
    (void)state;
    uint64_t a = alloc_at(80 * M, 0, 101 * SEC); /* two chunks, oldest: the victim */
    uint64_t b = alloc_at(8 * M, 0, 102 * SEC);
    clock_ns = 103 * SEC;
    hold_armed = HOLD_TO_PINNED;
    pthread_t evictor, freer;
    pthread_create(&evictor, NULL, evict_all, NULL);
    assert_true(eventually(hold_reached_now)); /* a's last chunk is moving */
    assert_int_equal(tier_free(b), CUDA_SUCCESS);
    forget(b);
    assert_true(held_now()); /* b's free did not wait for a's move */
    to_free = a;
    atomic_store(&freed, false);
    pthread_create(&freer, NULL, free_it, NULL);
    assert_true(eventually(free_is_waiting));
    assert_false(atomic_load(&freed)); /* a's free waits for a's move */
    hold_release();
    pthread_join(freer, NULL);
    pthread_join(evictor, NULL);
    forget(a);
    assert_false(hold_timed_out);
    assert_int_equal(evict_moved, 16 * M); /* the first chunk stayed: abandoned */
    assert_int_equal(dev_used, 0);
    assert_int_equal(pin_used, 0);
    assert_int_equal(vs_tier_check(), 0);
}

static uint64_t to_touch;
static void *touch_it(void *arg)
{
    (void)arg;
    vs_tier_touch_words(&to_touch, 1, 1, 150 * SEC);
    return NULL;
}

/* An eviction of everything (of the idle only, when idle_only) held at its
 * first move of kind `hold`; meanwhile a launch naming `touched`, which
 * must wait; then both let go. The moves made from then on must be
 * `want` (a letter each, as move_log has them) of bases[], in order. */
static void evict_past_waiting_launch(int hold, bool idle_only, uint64_t touched,
                                      const char *want, const uint64_t *bases)
{
    n_move_log = 0;
    hold_armed = hold;
    pthread_t evictor, launcher;
    pthread_create(&evictor, NULL, evict_all, idle_only ? (void *)1 : NULL);
    assert_true(eventually(hold_reached_now));
    to_touch = touched;
    pthread_create(&launcher, NULL, touch_it, NULL);
    assert_true(eventually(program_is_waiting));
    hold_release();
    pthread_join(launcher, NULL);
    pthread_join(evictor, NULL);
    assert_false(hold_timed_out);
    size_t n = strlen(want);
    assert_int_equal(n_move_log, n);
    assert_memory_equal(move_log, want, n);
    for (size_t i = 0; i < n; i++)
        assert_int_equal(move_log_base[i], bases[i]);
}

/* A long request (the socket's free) gives move_lock up between victims,
 * first come first served: a launch that needs an offloaded buffer back
 * goes between them, not after all of them. Before, the request held the
 * lock from its first victim to its last. */
static void long_request_lets_program_in(void **state)
{
    (void)state;
    uint64_t a = alloc_at(8 * M, 0, 101 * SEC);
    uint64_t b = alloc_at(8 * M, 0, 102 * SEC);
    uint64_t d = alloc_at(8 * M, 0, 103 * SEC);
    assert_int_equal(vs_tier_offload(d), 0);
    clock_ns = 140 * SEC;
    /* held while a is moving; then a out, d back in, then b out; d was
     * touched after the request began, so the request leaves it */
    evict_past_waiting_launch(HOLD_TO_PINNED, false, d, "oio", (const uint64_t[]){a, d, b});
    assert_int_equal(evict_moved, 16 * M);
    assert_false(offloaded(d));
}

/* A program waiting on vramshim is not idle: while a launch waits for
 * move_lock, an idle-only eviction sends nothing more to pageable memory;
 * a's other chunk goes only after the launch has had its buffer back.
 * Before, the waiting program looked idle and its buffers were paged out
 * under it (the log read "ppb"). */
static void waiting_program_is_not_idle(void **state)
{
    (void)state;
    assert_int_equal(vs_limits_set("offload", "auto", NULL, 0), 0);
    pin_cap = 0; /* every move goes pageable, when that is safe */
    uint64_t a = alloc_at(80 * M, 0, 101 * SEC); /* two chunks */
    uint64_t c = alloc_at(8 * M, 0, 102 * SEC);
    assert_int_equal(vs_tier_offload(c), 0); /* handed over: pageable */
    clock_ns = 110 * SEC; /* everything idle */
    /* held while a's last chunk goes pageable; c comes back before a's
     * other chunk goes */
    evict_past_waiting_launch(HOLD_TO_PAGEABLE, true, c, "pbp", (const uint64_t[]){a, c, a});
    assert_int_equal(evict_moved, 80 * M);
    assert_false(offloaded(c));
}

/* The victim order against a reference model over 10^5 random steps driven
 * by the fake clock: allocations (of three owners), frees, touches, graph
 * launches, shares, make-room with and without an owner, and idle-only
 * evictions. The model keeps every buffer's last touch as the test made it
 * and chooses by a whole scan, as LRU defines it: the least recently touched
 * movable buffer (resident, not shared, of the owner asked), its last touch
 * being the later of its own and the last graph launch, and for idle-only
 * none unless that one is idle. The tier must move exactly one buffer whose
 * last touch equals the model's least; where several buffers share that
 * last touch (the clock often stands still, and a graph launch touches all
 * at once) any of them is as least recently touched as the others, and
 * which one the tier takes is the one deliberate freedom; where one buffer
 * is the least, it must be that one. */
#define REF_MAX 400
static struct ref {
    uint64_t base, touch;
    int owner;
    bool resident, shared;
} ref[REF_MAX];
static int n_ref;

static uint64_t ref_touch(const struct ref *r, uint64_t epoch)
{
    return r->touch > epoch ? r->touch : epoch;
}

/* The model's choice: the least last touch among movable buffers (UINT64_MAX:
 * none), and how many have it. */
static uint64_t ref_least(int owner, uint64_t epoch, int *how_many)
{
    uint64_t least = UINT64_MAX;
    *how_many = 0;
    for (int i = 0; i < n_ref; i++) {
        if (!ref[i].resident || ref[i].shared || (owner >= 0 && ref[i].owner != owner))
            continue;
        uint64_t t = ref_touch(&ref[i], epoch);
        if (t < least) {
            least = t;
            *how_many = 0;
        }
        *how_many += t == least;
    }
    return least;
}

static struct ref *ref_of(uint64_t base)
{
    for (int i = 0; i < n_ref; i++)
        if (ref[i].base == base)
            return &ref[i];
    return NULL;
}

static void lru_matches_reference(void **state)
{
    (void)state;
    dev_cap = pin_cap = 64ULL << 30; /* no move is ever refused */
    uint64_t epoch = 0, idle_ns = 1000 * 1000000ULL, x = 0x2545f4914f6cdd1dULL;
    int picks = 0, ties = 0, idle_refusals = 0;
    n_ref = 0;
    for (int step = 0; step < 100000; step++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        /* a quarter of steps at the same instant: ties */
        if ((x >> 60) % 4)
            clock_ns += (x >> 24) % (400 * 1000000ULL);
        struct ref *pick = n_ref ? &ref[(x >> 8) % (uint64_t)n_ref] : NULL;
        int owner = (int)((x >> 44) % 4) - 1;
        switch ((x >> 3) % 16) {
        case 0:
        case 1:
        case 2:
            if (n_ref < REF_MAX) {
                CUdeviceptr p;
                struct vs_backing *pending;
                int o = (int)((x >> 50) % 3);
                assert_int_equal(vs_tier_alloc(&p, 8 * M, 0, o, &pending), CUDA_SUCCESS);
                vs_tier_publish(pending, true);
                ref[n_ref++] = (struct ref){.base = p, .touch = clock_ns, .owner = o,
                                            .resident = true};
            }
            break;
        case 3:
            if (pick) {
                assert_int_equal(tier_free(pick->base), CUDA_SUCCESS);
                *pick = ref[--n_ref];
            }
            break;
        case 4:
        case 5:
        case 6:
        case 7:
            if (pick) { /* anywhere inside it; an offloaded one comes back */
                touch_at(pick->base + (x >> 32) % (8 * M), clock_ns);
                pick->touch = clock_ns;
                pick->resident = true;
            }
            break;
        case 8:
            vs_tier_touch_all(clock_ns);
            epoch = clock_ns > epoch ? clock_ns : epoch;
            break;
        case 9:
            if (pick && (x >> 40) % 8 == 0) {
                struct vs_share sh;
                assert_int_equal(vs_tier_share(pick->base, "test", &sh), CUDA_SUCCESS);
                pick->resident = pick->shared = true;
            }
            break;
        default: {
            bool idle_only = (x >> 3) % 16 >= 13;
            int n_least;
            uint64_t least = ref_least(owner, epoch, &n_least);
            bool want = least != UINT64_MAX &&
                        (!idle_only || (clock_ns > least && clock_ns - least >= idle_ns));
            last_moved = 0;
            uint64_t moved = idle_only ? vs_tier_evict(owner, 8 * M, true, NULL)
                                       : vs_tier_make_room(0, owner, 8 * M, 0);
            if (!want) {
                idle_refusals += idle_only && least != UINT64_MAX;
                assert_int_equal(moved, 0);
                break;
            }
            assert_int_equal(moved, 8 * M);
            struct ref *r = ref_of(last_moved);
            assert_non_null(r);
            assert_true(r->resident && !r->shared);
            assert_true(owner < 0 || r->owner == owner);
            assert_int_equal(ref_touch(r, epoch), least);
            r->resident = false;
            picks++;
            ties += n_least > 1;
            break;
        }
        }
        if (step % 1000 == 0)
            assert_int_equal(vs_tier_check(), 0);
    }
    /* the walk reached every case it is meant to check */
    assert_true(picks > 10000);
    assert_true(ties > 100 && ties < picks);
    assert_true(idle_refusals > 100);
    for (int i = 0; i < n_ref; i++)
        live[n_live++] = ref[i].base;
}

/* A random walk of allocations, frees, touches, make-room, evictions,
 * hand-overs and prefetches with the clock driven by the test: after every
 * step the layer's invariants hold and the device holds no more than its
 * capacity. */
static void random_walk(void **state)
{
    (void)state;
    assert_int_equal(vs_limits_set("offload", "auto", NULL, 0), 0);
    dev_cap = 96 * M;
    pin_cap = 48 * M;
    uint64_t x = 0x9e3779b97f4a7c15ULL;
    for (int step = 0; step < 20000; step++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        clock_ns += (x >> 40) % (300 * 1000000ULL);
        uint64_t pick = n_live ? live[(x >> 8) % (uint64_t)n_live] : 0;
        switch (x % 8) {
        case 0:
        case 1:
            if (n_live < 40) {
                uint64_t size = ((x >> 20) % 40 + 1) * M;
                CUdeviceptr p;
                struct vs_backing *pending;
                if (vs_tier_alloc(&p, size, 0, (int)(x >> 50) % 3, &pending) == CUDA_SUCCESS) {
                    vs_tier_publish(pending, true);
                    live[n_live++] = p;
                } else
                    vs_tier_make_room(0, -1, size, size);
            }
            break;
        case 2:
            if (pick) {
                assert_int_equal(tier_free(pick), CUDA_SUCCESS);
                forget(pick);
            }
            break;
        case 3:
            if (pick)
                touch_at(pick + (x >> 30) % M, clock_ns);
            break;
        case 4:
            vs_tier_make_room(0, (int)(x >> 50) % 4 - 1, ((x >> 20) % 32) * M, 8 * M);
            break;
        case 5:
            if (pick)
                vs_tier_offload(pick);
            break;
        case 6:
            if (pick)
                vs_tier_prefetch(pick);
            break;
        default: {
            int gate = vs_gate_enter();
            assert_int_not_equal(gate, -1);
            assert_int_equal(atomic_load(&vs_pageable_reachable), 0);
            vs_gate_leave(gate);
            break;
        }
        }
        assert_true(dev_used <= dev_cap);
        assert_int_equal(vs_tier_check(), 0);
    }
}

/* ---- gate.c's per-thread reader-writer locks, and per-thread counts ------ */
/* A writer moves `pair` from (k, k) to (k+1, k+1) in two steps under the
 * write side; readers, some nesting the read side, must never see the two
 * apart, and every reader's and the writer's rounds must finish (a reader
 * stepping back for the writer while nested would deadlock). More threads
 * than there are private slots, so the shared slot's atomic path runs too
 * (each thread gives its slot back on exit: VS_THREAD_SLOTS per wave). */
#define RW_READERS 6
#define RW_ROUNDS 20000
static uint64_t pair[2];
static _Atomic int rw_seen_apart;
static _Atomic bool rw_stop;

static void *rw_reader(void *arg)
{
    bool nest = (uintptr_t)arg & 1;
    for (int i = 0; i < RW_ROUNDS && !atomic_load(&rw_stop); i++) {
        vs_rw_read_lock(VS_RW_TREE);
        if (nest)
            vs_rw_read_lock(VS_RW_TREE);
        uint64_t a = __atomic_load_n(&pair[0], __ATOMIC_RELAXED);
        uint64_t b = __atomic_load_n(&pair[1], __ATOMIC_RELAXED);
        if (a != b)
            atomic_fetch_add(&rw_seen_apart, 1);
        if (nest)
            vs_rw_read_unlock(VS_RW_TREE);
        vs_rw_read_unlock(VS_RW_TREE);
        vs_count_launch();
    }
    return NULL;
}

static void *rw_writer(void *arg)
{
    (void)arg;
    for (int i = 0; i < RW_ROUNDS / 10; i++) {
        vs_rw_write_lock(VS_RW_TREE);
        __atomic_store_n(&pair[0], pair[0] + 1, __ATOMIC_RELAXED);
        sched_yield(); /* let readers try to come in between */
        __atomic_store_n(&pair[1], pair[1] + 1, __ATOMIC_RELAXED);
        vs_rw_write_unlock(VS_RW_TREE);
    }
    return NULL;
}

static void readers_never_see_a_write_half_done(void **state)
{
    (void)state;
    uint64_t before = vs_thread_launches();
    pthread_t w, r[RW_READERS];
    assert_int_equal(pthread_create(&w, NULL, rw_writer, NULL), 0);
    for (uintptr_t i = 0; i < RW_READERS; i++)
        assert_int_equal(pthread_create(&r[i], NULL, rw_reader, (void *)i), 0);
    pthread_join(w, NULL);
    for (int i = 0; i < RW_READERS; i++)
        pthread_join(r[i], NULL);
    assert_int_equal(atomic_load(&rw_seen_apart), 0);
    assert_int_equal(pair[0], RW_ROUNDS / 10);
    assert_int_equal(pair[1], RW_ROUNDS / 10);
    /* the readers' slots went back on exit; their counts stayed */
    assert_int_equal(vs_thread_launches() - before, (uint64_t)RW_READERS * RW_ROUNDS);
}

static pthread_barrier_t all_alive;
static _Atomic int shared_users;

static void *count_some(void *arg)
{
    for (int i = 0; i < 100; i++)
        vs_count_launch();
    if (vs_thread_slot() == VS_THREAD_SHARED)
        atomic_fetch_add(&shared_users, 1);
    pthread_barrier_wait(&all_alive); /* nobody gives a slot back before all took one */
    return arg;
}

/* More live threads than private slots: the rest share the last one,
 * atomically, and no launch is lost. */
static void launch_counts_survive_slot_sharing(void **state)
{
    (void)state;
    uint64_t before = vs_thread_launches();
    enum { N = VS_THREAD_SLOTS + 16 };
    static pthread_t t[N];
    pthread_barrier_init(&all_alive, NULL, N);
    for (int i = 0; i < N; i++)
        assert_int_equal(pthread_create(&t[i], NULL, count_some, NULL), 0);
    for (int i = 0; i < N; i++)
        pthread_join(t[i], NULL);
    pthread_barrier_destroy(&all_alive);
    assert_true(atomic_load(&shared_users) >= 16);
    assert_int_equal(vs_thread_launches() - before, (uint64_t)N * 100);
}

/* A thread that ends inside a driver call (cancelled there, or by
 * pthread_exit in a callback the call ran) with the gate's read side held,
 * as a launch holds it: its slot's mark is let go as it exits, so the next
 * move does not wait for it forever. */
static unsigned exiting_slot;
static void *exit_holding_gate(void *arg)
{
    exiting_slot = vs_thread_slot();
    vs_rw_read_lock(VS_RW_GATE);
    vs_rw_read_lock(VS_RW_TREE);
    pthread_exit(arg);
}

static void thread_ending_in_a_call_lets_the_gate_go(void **state)
{
    (void)state;
    fixture_log_capture();
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, exit_holding_gate, NULL), 0);
    assert_int_equal(pthread_join(t, NULL), 0);
    assert_int_equal(atomic_load(&vs_readers[exiting_slot].marks), 0);
    assert_non_null(strstr(fixture_log(), "ended inside a driver call holding the move gate"));
    vs_rw_write_lock(VS_RW_GATE); /* returns: nothing left marked */
    vs_rw_write_unlock(VS_RW_GATE);
}

/* The same on the shared slot (every private slot taken), whose threads
 * count their marks there among each other's. */
static pthread_barrier_t slots_full;
static void *hold_a_slot(void *arg)
{
    (void)vs_thread_slot();
    pthread_barrier_wait(&slots_full); /* every slot taken */
    pthread_barrier_wait(&slots_full); /* the check is done */
    return arg;
}

static void shared_thread_ending_in_a_call_lets_the_gate_go(void **state)
{
    (void)state;
    enum { HOLDERS = VS_THREAD_SHARED };
    static pthread_t holders[HOLDERS];
    pthread_barrier_init(&slots_full, NULL, HOLDERS + 1);
    for (int i = 0; i < HOLDERS; i++)
        assert_int_equal(pthread_create(&holders[i], NULL, hold_a_slot, NULL), 0);
    pthread_barrier_wait(&slots_full);
    uint64_t before = atomic_load(&vs_readers[VS_THREAD_SHARED].marks);
    fixture_log_capture();
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, exit_holding_gate, NULL), 0);
    assert_int_equal(pthread_join(t, NULL), 0);
    assert_int_equal(exiting_slot, VS_THREAD_SHARED);
    assert_int_equal(atomic_load(&vs_readers[VS_THREAD_SHARED].marks), before);
    assert_non_null(strstr(fixture_log(), "ended inside a driver call holding the move gate"));
    pthread_barrier_wait(&slots_full);
    for (int i = 0; i < HOLDERS; i++)
        pthread_join(holders[i], NULL);
    pthread_barrier_destroy(&slots_full);
    vs_rw_write_lock(VS_RW_GATE); /* returns: nothing left marked */
    vs_rw_write_unlock(VS_RW_GATE);
}

/* A program thread cancelled while vramshim works inside its call, holding
 * a move's lock (here the gate's write side, with a wait inside it, as
 * the fence waits): the cancel acts only once vramshim's locks are let go,
 * at the program's next cancellation point, never at a wait inside. */
static pthread_barrier_t cancel_set;
static _Atomic bool writer_done;
static void *write_then_test_cancel(void *arg)
{
    pthread_barrier_wait(&cancel_set); /* the cancel is asked now */
    pthread_barrier_wait(&cancel_set);
    vs_rw_write_lock(VS_RW_GATE);
    nanosleep(&(struct timespec){0, 1}, NULL); /* a cancellation point inside */
    vs_rw_write_unlock(VS_RW_GATE);
    atomic_store(&writer_done, true);
    pthread_testcancel(); /* the program's next one */
    return arg;
}

static void cancel_inside_a_wait_leaves_no_lock(void **state)
{
    (void)state;
    atomic_store(&writer_done, false);
    pthread_barrier_init(&cancel_set, NULL, 2);
    pthread_t w;
    assert_int_equal(pthread_create(&w, NULL, write_then_test_cancel, NULL), 0);
    pthread_barrier_wait(&cancel_set);
    assert_int_equal(pthread_cancel(w), 0); /* pending: barriers are no cancellation point */
    pthread_barrier_wait(&cancel_set);
    void *ret = NULL;
    assert_int_equal(pthread_join(w, &ret), 0);
    pthread_barrier_destroy(&cancel_set);
    assert_ptr_equal(ret, PTHREAD_CANCELED);
    assert_true(atomic_load(&writer_done)); /* not ended inside */
    assert_int_equal(atomic_load(&vs_rw[VS_RW_GATE].writer), 0);
    assert_int_equal(pthread_mutex_trylock(&vs_rw[VS_RW_GATE].writing), 0);
    pthread_mutex_unlock(&vs_rw[VS_RW_GATE].writing);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(readers_never_see_a_write_half_done),
        cmocka_unit_test(launch_counts_survive_slot_sharing),
        cmocka_unit_test_setup_teardown(thread_ending_in_a_call_lets_the_gate_go, setup, teardown),
        cmocka_unit_test_setup_teardown(shared_thread_ending_in_a_call_lets_the_gate_go, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(cancel_inside_a_wait_leaves_no_lock, setup, teardown),
        cmocka_unit_test_setup_teardown(least_recently_touched_first, setup, teardown),
        cmocka_unit_test_setup_teardown(launch_pass_stamps_what_it_names, setup, teardown),
        cmocka_unit_test_setup_teardown(shortfall_plus_margin, setup, teardown),
        cmocka_unit_test_setup_teardown(owner_limit_moves_the_owner, setup, teardown),
        cmocka_unit_test_setup_teardown(evict_idle_only, setup, teardown),
        cmocka_unit_test_setup_teardown(touch_brings_back_from_idle_room_only, setup, teardown),
        cmocka_unit_test_setup_teardown(pageable_only_when_idle, setup, teardown),
        cmocka_unit_test_setup_teardown(handed_over_stays_out_until_named, setup, teardown),
        cmocka_unit_test_setup_teardown(recycled_handle_uses_its_new_layout, setup, teardown),
        cmocka_unit_test_setup_teardown(cached_buffer_moved_comes_back, setup, teardown),
        cmocka_unit_test_setup_teardown(what_never_moves, setup, teardown),
        cmocka_unit_test_setup_teardown(sync_memops_follows_the_buffer, setup, teardown),
        cmocka_unit_test_setup_teardown(pins_yield, setup, teardown),
        cmocka_unit_test_setup_teardown(free_offloaded, setup, teardown),
        cmocka_unit_test_setup_teardown(unpublished_never_moves, setup, teardown),
        cmocka_unit_test_setup_teardown(random_walk, setup, teardown),
        cmocka_unit_test_setup_teardown(graph_launch_touches_all, setup, teardown),
        cmocka_unit_test_setup_teardown(lru_matches_reference, setup, teardown),
        cmocka_unit_test_setup_teardown(page_index_follows_shared_pages, setup, teardown),
        cmocka_unit_test_setup_teardown(page_index_finds_interior_pointers, setup, teardown),
        cmocka_unit_test_setup_teardown(free_waits_only_for_its_own_move, setup, teardown),
        cmocka_unit_test_setup_teardown(long_request_lets_program_in, setup, teardown),
        cmocka_unit_test_setup_teardown(waiting_program_is_not_idle, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
