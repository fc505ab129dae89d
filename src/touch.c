/*
 * touch.c: which buffers a kernel launch can reach.
 *
 * A launch names its buffers in its parameters. The driver describes each
 * kernel's parameters (cuFuncGetParamInfo; for the CUkernel handles that
 * PyTorch casts to CUfunction, cuKernelGetParamInfo), so the first launch
 * of a function asks for its layout once and keeps it; every launch after
 * reads each parameter's 8-byte words and stamps the backed buffers they
 * point into, in one pass under the gate's and the buffer tree's read
 * sides (taken together, with one mark: gate.c), which the launch then
 * keeps the gate's of for its driver call. A word is looked up first in
 * the thread's cache of buffers it named lately, then in tier.c's index by
 * 2 MiB page; an offloaded buffer, or anything else the pass does not
 * expect, is left to tier.c's vs_tier_touch_words, which brings it back
 * with both read sides let go. Parameters passed as one packed buffer (the
 * `extra` form) are scanned whole.
 *
 * A tracked kernel launch is run whole here (vs_launch_tracked_<name>, to
 * which the hook tail-calls with its arguments unchanged): the touch, the
 * gate's read side, the driver call and the gate let go, in one frame.
 * Its common case (launch_enter, pass_words) is kept apart from every
 * other (launch_general) and measured in instructions
 * (bench/launch_instr.sh, docs/PERFORMANCE.md).
 *
 * A function handle dies with its module or library, and the driver may
 * hand the same handle to a new function with other parameters: every
 * unload (hook_module.c) bumps a generation, and a layout, remembered
 * globally or per thread, is used only in the generation it was asked in.
 *
 * A kernel whose layout the driver will not give is launched unscanned:
 * its buffers may stay in pinned host memory, which it can still reach.
 * An address a kernel reads out of device memory is never seen here, which
 * is why only pinned memory (mapped at the same address) is ever used for a
 * buffer work may still reach.
 */
#include "offload_internal.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <uthash.h>

#define MAX_PARAMS 64
#define MAX_WORDS 64 /* no fewer than MAX_PARAMS (the words-only scan counts on it) */

struct layout {
    CUfunction f;
    uint32_t gen; /* the unload generation it was asked in */
    int n;        /* -1: the driver did not say */
    bool words;   /* every parameter is one 8-byte word (most kernels) */
    uint32_t size[MAX_PARAMS];
    UT_hash_handle hh;
};

static pthread_rwlock_t layout_lock = PTHREAD_RWLOCK_INITIALIZER;
static struct layout *layouts;
/* Bumped by every module or library unload; read once per launch. Never 0
 * (the thread caches' empty entries say 0). */
static _Atomic uint32_t unload_gen = 1;

void vs_touch_forget_layouts(void)
{
    /* after 2^32 unloads it passes 0, where an empty entry (f NULL) looks
     * current for a launch of a NULL function: launched unscanned, which
     * the driver refuses anyway */
    atomic_fetch_add_explicit(&unload_gen, 1, memory_order_release);
}

static int ask_layout(CUfunction f, uint32_t *sizes)
{
    for (int kind = 0; kind < 2; kind++) {
        int n = 0;
        for (; n < MAX_PARAMS; n++) {
            size_t off = 0, size = 0;
            CUresult rc = CUDA_ERROR_NOT_SUPPORTED;
            if (kind == 0 && vs_real.cuFuncGetParamInfo)
                rc = vs_real.cuFuncGetParamInfo(f, (size_t)n, &off, &size);
            else if (kind == 1 && vs_real.cuKernelGetParamInfo)
                rc = vs_real.cuKernelGetParamInfo((CUkernel)f, (size_t)n, &off, &size);
            if (rc != CUDA_SUCCESS)
                break;
            sizes[n] = (uint32_t)size;
        }
        if (n > 0)
            return n;
    }
    return -1; /* no parameters, or no answer: nothing to scan either way */
}

/* Each thread remembers the layouts it used last, by function, so that a
 * launch usually finds its layout without the lock or the hash. Layouts are
 * never freed (a stale one is replaced in the table, not freed: another
 * thread may still be reading it), so a remembered one stays valid memory;
 * its generation says whether it still describes the handle. The entry
 * keeps the generation and the word count itself, so that the common
 * launch reads one line of its own and no layout. */
#define LAYOUT_CACHE 64
static __thread struct {
    CUfunction f;
    const struct layout *l;
    uint32_t gen;  /* l->gen; 0: empty (unload_gen starts at 1) */
    int32_t words; /* l->n (0 for -1) when every parameter is one word, else -2 */
} recent[LAYOUT_CACHE] VS_TLS_FAST;
#define LAYOUT_SLOT(f) ((unsigned)((uintptr_t)(f) >> 4) & (LAYOUT_CACHE - 1))

/* Once per function and unload generation: the only allocation on the
 * launch path. */
static const struct layout *layout_lookup(CUfunction f, uint32_t gen)
{
    struct layout *l;
    pthread_rwlock_rdlock(&layout_lock);
    HASH_FIND_PTR(layouts, &f, l);
    pthread_rwlock_unlock(&layout_lock);
    if (VS_LIKELY(l != NULL && l->gen == gen))
        return l;
    struct layout *fresh = calloc(1, sizeof *fresh);
    if (fresh == NULL)
        return NULL;
    fresh->f = f;
    fresh->gen = gen;
    fresh->n = ask_layout(f, fresh->size);
    fresh->words = true;
    for (int i = 0; i < fresh->n; i++)
        fresh->words &= fresh->size[i] == 8;
    pthread_rwlock_wrlock(&layout_lock);
    HASH_FIND_PTR(layouts, &f, l);
    if (l == NULL || l->gen != gen) {
        struct layout *stale = NULL;
        HASH_REPLACE_PTR(layouts, f, fresh, stale);
        (void)stale; /* kept: a thread may hold it; its generation retires it */
        l = fresh;
        fresh = NULL;
    }
    pthread_rwlock_unlock(&layout_lock);
    free(fresh);
    return l;
}

static const struct layout *layout_of(CUfunction f)
{
    uint32_t gen = atomic_load_explicit(&unload_gen, memory_order_acquire);
    unsigned slot = LAYOUT_SLOT(f);
    if (VS_LIKELY(recent[slot].f == f && recent[slot].gen == gen))
        return recent[slot].l;
    const struct layout *l = layout_lookup(f, gen);
    if (l) {
        recent[slot].f = f;
        recent[slot].l = l;
        recent[slot].gen = gen;
        /* no parameters, or none the driver would describe (n -1): no
         * word to scan, the common path */
        recent[slot].words = !l->words ? -2 : l->n < 0 ? 0 : l->n;
    }
    return l;
}

/* One launch's pass over its parameters, under the gate's and the tree's
 * read sides. A word in [lowest, highest) that the thread's cache holds is
 * stamped there (a store only on a new clock tick); another is one probe
 * of tier.c's page index, a stamp, and its cache entry refilled. What the
 * pass does not expect (a page two buffers share, an offloaded or
 * handed-over buffer) is kept for vs_tier_touch_words, after the read
 * sides are let go; so is every word in range when tc is NULL (the thread
 * shares its slot, or the slow path was chosen before the pass). */
struct pass {
    uint64_t lo, width; /* [lowest, highest) */
    uint64_t now;
    struct vs_touch_cache *tc;
    const struct vs_page_slot *ix; /* the index's fields, read once */
    uint32_t ix_shift;
    int n;
    uint64_t *words; /* MAX_WORDS of them */
    bool overflow;   /* more to keep than words holds, with the read sides held */
};

/* A word in range, on the fast path (the read sides held, tc and the index
 * usable): true when it is done, false to keep it for the slow path. */
static inline __attribute__((always_inline)) bool
touch_word(struct vs_touch_cache *tc, const struct vs_page_slot *ix, uint32_t ix_shift,
           uint64_t now, uint64_t a)
{
    struct vs_touch_entry *e = vs_touch_at(tc, a);
    if (VS_LIKELY(a - e->base < e->span)) { /* cached: resident, still in the tree */
        if (e->stamped != now) {
            vs_buffer_touch(e->b, now);
            e->stamped = now;
        }
        return true;
    }
    struct buffer *b = vs_page_probe(ix, ix_shift, a >> VS_PAGE_SHIFT);
#ifdef VS_DEBUG
    vs_tier_check_probe(a, b);
#endif
    if (b == NULL)
        return true; /* no buffer has this page */
    uint64_t base = b->base, span = b->span;
    if (VS_UNLIKELY(a - base >= span) || VS_UNLIKELY(!vs_buffer_stamp(b, now)))
        return false; /* a page two buffers share; offloaded or handed over */
    e->base = base;
    e->span = span;
    e->b = b;
    e->stamped = now;
    return true;
}

/* A word for the slow path. A parameter struct can name more buffers than
 * words holds (PyTorch's multi-tensor kernels pass a few hundred
 * addresses in one): with no read side held the words so far go to the
 * slow path now; with them held, the pass is marked and done again
 * without them (no word is ever dropped: one left offloaded would fault). */
static inline void pass_keep(struct pass *p, uint64_t a)
{
    if (VS_UNLIKELY(p->n == MAX_WORDS)) {
        if (p->tc != NULL) {
            p->overflow = true;
            return;
        }
        vs_tier_touch_words(p->words, p->n, 1, p->now);
        p->n = 0;
    }
    p->words[p->n++] = a;
}

static void pass_word(struct pass *p, uint64_t a)
{
    if (a - p->lo >= p->width)
        return; /* most words: sizes, strides, scalars */
    if (p->tc == NULL || !touch_word(p->tc, p->ix, p->ix_shift, p->now, a))
        pass_keep(p, a);
}

static void pass_bytes(struct pass *p, const void *buf, size_t size)
{
    for (size_t k = 0; k + 8 <= size; k += 8) {
        uint64_t a;
        memcpy(&a, (const char *)buf + k, 8);
        pass_word(p, a);
    }
}

static void pass_params(struct pass *p, const struct layout *l, void **params)
{
    for (int i = 0; i < l->n; i++)
        if (params[i] != NULL)
            pass_bytes(p, params[i], l->size[i]);
}

static void pass_extra(struct pass *p, void **extra)
{
    const void *buf = NULL;
    size_t size = 0;
    for (int i = 0; extra[i] != CU_LAUNCH_PARAM_END && i < 16; i += 2) {
        if (extra[i] == CU_LAUNCH_PARAM_BUFFER_POINTER)
            buf = extra[i + 1];
        else if (extra[i] == CU_LAUNCH_PARAM_BUFFER_SIZE && extra[i + 1])
            size = *(const size_t *)extra[i + 1];
    }
    if (buf)
        pass_bytes(p, buf, size);
}

/* Every launch the common one below does not take: another parameter
 * form, a layout not in the thread's cache, the shared slot, a writer at a
 * lock, a stale touch cache, a word the pass does not expect. It counts
 * nothing (the caller did) and may be called after the common one let go
 * of what it took: a stamp given twice is the same stamp. */
static __attribute__((noinline)) int launch_general(unsigned slot, CUfunction f, void **params,
                                                    void **extra, uint64_t now)
{
    const struct layout *l = NULL;
    if (params) {
        l = layout_of(f);
        if (VS_UNLIKELY(l == NULL))
            return vs_gate_enter(); /* no memory for its layout: unscanned */
    } else if (extra == NULL) {
        return vs_gate_enter();
    }
    /* the pass's state in locals: the common case below keeps it in
     * registers; the other forms get it in a struct pass */
    const uint64_t lo = atomic_load_explicit(&vs_tier_lowest, memory_order_relaxed);
    const uint64_t width = atomic_load_explicit(&vs_tier_highest, memory_order_relaxed) - lo;
    struct vs_touch_cache *tc = NULL;
    const struct vs_page_slot *ix = NULL;
    uint32_t ix_shift = 0;
    bool marked = false;
    if (VS_LIKELY(slot != VS_THREAD_SHARED)) {
        marked = vs_rw_read_lock_both(slot);
        /* a buffer that left the tree or began moving since bumped it; a
         * move that begins now bumps it, then waits at the gate for us */
        uint64_t gen = atomic_load_explicit(&vs_tree_gen, memory_order_acquire);
        tc = &vs_touch_caches[slot];
        if (VS_UNLIKELY(tc->gen != gen)) {
            memset(tc->e, 0, sizeof tc->e); /* only this thread uses it */
            tc->gen = gen;
        }
        ix = vs_tier_pages.slot;
        ix_shift = vs_tier_pages.shift;
        /* vs_pageable_reachable is raised only under the gate's write
         * side: stable while we read */
        if (VS_UNLIKELY(atomic_load_explicit(&vs_pageable_reachable, memory_order_relaxed) != 0 ||
                        !vs_tier_pages_whole || ix == NULL)) {
            vs_rw_read_unlock(VS_RW_TREE);
            vs_rw_read_unlock(VS_RW_GATE);
            tc = NULL;
        }
    }
    /* the common case took pass_words already: here every form goes
     * through one struct pass */
    uint64_t kept[MAX_WORDS];
    struct pass p = {.lo = lo, .width = width, .now = now, .tc = tc, .ix = ix,
                     .ix_shift = ix_shift, .n = 0, .words = kept};
    if (params)
        pass_params(&p, l, params);
    else
        pass_extra(&p, extra);
    if (VS_UNLIKELY(p.overflow)) { /* again, holding nothing */
        vs_rw_read_unlock(VS_RW_TREE);
        vs_rw_read_unlock(VS_RW_GATE);
        tc = NULL;
        p = (struct pass){.lo = lo, .width = width, .now = now, .words = kept};
        if (params)
            pass_params(&p, l, params);
        else
            pass_extra(&p, extra);
    }
    const int n_kept = p.n;
    if (VS_LIKELY(tc != NULL)) {
        if (VS_LIKELY(n_kept == 0 && marked)) {
            vs_rw_read_unlock_tree_marked(slot);
            return VS_GATE_MARKED;
        }
        vs_rw_read_unlock(VS_RW_TREE);
        if (n_kept == 0)
            return 1; /* the gate's read side is held */
        vs_rw_read_unlock(VS_RW_GATE);
    }
    /* offloaded ones come back (bring_back takes move_lock: no read side
     * may be held), then the gate as for any submission */
    if (n_kept)
        vs_tier_touch_words(kept, n_kept, 1, now);
    return vs_gate_enter();
}

/* The common launch's pass, holding both read sides by one mark: n
 * parameters of one word each. true: every word in range named a buffer
 * found resident and not handed over, and is stamped; false: something
 * else (a writer waits, the touch cache or the index is not usable, a word
 * the pass does not expect), for launch_general. A function of its own,
 * with nothing else live, so that the loop keeps all its state in
 * registers (inlined beside the driver call's eleven arguments, it
 * spilled four values per word). */
static __attribute__((noinline)) bool pass_words(void **params, int n, struct vs_touch_cache *tc,
                                                 uint64_t now)
{
    /* vs_pageable_reachable is raised only under the gate's write side:
     * stable once no writer is seen */
    if (VS_UNLIKELY((atomic_load(&vs_rw[VS_RW_GATE].writer) |
                     atomic_load(&vs_rw[VS_RW_TREE].writer)) != 0 ||
                    tc->gen != atomic_load_explicit(&vs_tree_gen, memory_order_acquire) ||
                    atomic_load_explicit(&vs_pageable_reachable, memory_order_relaxed) != 0))
        return false;
    /* the index and the range only now, after the writers' flags: read
     * before, a weakly ordered CPU could answer them from before a writer
     * that replaced (and freed) the table */
    const struct vs_page_slot *ix = vs_tier_pages.slot;
    const uint32_t ix_shift = vs_tier_pages.shift;
    if (VS_UNLIKELY(!vs_tier_pages_whole || ix == NULL))
        return false;
    const uint64_t lo = atomic_load_explicit(&vs_tier_lowest, memory_order_relaxed);
    const uint64_t width = atomic_load_explicit(&vs_tier_highest, memory_order_relaxed) - lo;
    for (int i = 0; i < n; i++) {
        if (VS_UNLIKELY(params[i] == NULL))
            continue;
        uint64_t a;
        memcpy(&a, params[i], 8);
        if (a - lo >= width)
            continue; /* most words: sizes, strides, scalars */
        if (VS_UNLIKELY(!touch_word(tc, ix, ix_shift, now, a)))
            return false;
    }
    return true;
}

/* The common launch, kept to as few instructions as it can be (issue 13's
 * target is 250 with one pointer): the thread's own slot, holding no read
 * side; a layout in the thread's cache whose parameters are all one word;
 * no writer at either lock; the thread's touch cache and the page index
 * current; every word in range found resident and not handed over (a
 * cache entry is filled only for such a buffer, and every hand-over or
 * move bumps vs_tree_gen after it begins, so a hit needs no second look).
 * It takes the gate's and the tree's read sides with one mark, lets the
 * tree's go with one store and returns VS_GATE_MARKED. Anything else is
 * let go and left to launch_general. */
static inline __attribute__((always_inline)) int launch_enter(unsigned slot, CUfunction f,
                                                              void **params, void **extra)
{
    uint64_t now = vs_now_ns();
    vs_tier_submitted(now);
    vs_thread_add(&vs_thread_counts[slot].launches, slot);
    if (VS_UNLIKELY(slot == VS_THREAD_SHARED))
        return launch_general(slot, f, params, extra, now);
    const unsigned ls = LAYOUT_SLOT(f);
    const int n = recent[ls].words;
    if (VS_UNLIKELY(params == NULL || vs_me.marks != 0 || recent[ls].f != f || n < 0 ||
                    recent[ls].gen != atomic_load_explicit(&unload_gen, memory_order_acquire)))
        return launch_general(slot, f, params, extra, now);
    const uint64_t both = VS_RW_MARK(VS_RW_GATE) | VS_RW_MARK(VS_RW_TREE);
    /* as vs_rw_read_lock_both leaves them: depth 1 on both, as the release
     * paths below and vs_gate_leave expect (a driver call from a signal
     * handler that interrupts a hooked call is not supported: the driver's
     * own calls are not async-signal-safe either) */
    vs_me.reading[VS_RW_GATE] = vs_me.reading[VS_RW_TREE] = 1;
    vs_me.marks = both;
    atomic_store(&vs_readers[slot].marks, both); /* seq_cst: then the writers' flags */
    if (VS_UNLIKELY(!pass_words(params, n, &vs_touch_caches[slot], now)))
        goto general;
    vs_rw_read_unlock_tree_marked(slot); /* the gate's read side kept */
    return VS_GATE_MARKED;
general:
    vs_me.reading[VS_RW_GATE] = vs_me.reading[VS_RW_TREE] = 0;
    vs_me.marks = 0;
    atomic_store_explicit(&vs_readers[slot].marks, 0, memory_order_release);
    /* the clock read again, not kept across the pass: the common case
     * spills nothing for this one */
    return launch_general(slot, f, params, extra, vs_now_ns());
}

int vs_touch_launch(CUfunction f, void **params, void **extra)
{
    return launch_enter(vs_thread_slot(), f, params, extra);
}

/* A tracked kernel launch whole (hook_launch.c hands it over unchanged):
 * the touch and the gate's read side, the driver call, the gate let go. */
#define TRACKED_LAUNCH(name, PARAMS, ARGS, params_, extra_)                   \
    CUresult vs_launch_tracked_##name PARAMS                                  \
    {                                                                         \
        unsigned slot_ = vs_thread_slot();                                    \
        int gate_ = launch_enter(slot_, f, params_, extra_);                  \
        if (VS_UNLIKELY(gate_ < 0))                                           \
            return CUDA_ERROR_OUT_OF_MEMORY;                                  \
        CUresult rc_ = vs_real.name ARGS;                                     \
        if (VS_LIKELY(gate_ == VS_GATE_MARKED)) /* vs_gate_leave, slot known */ \
            vs_gate_leave_marked(slot_);                                      \
        else                                                                  \
            vs_gate_leave(gate_);                                             \
        return rc_;                                                           \
    }
VS_KERNEL_LAUNCHES(TRACKED_LAUNCH)

void vs_touch_atfork_child(void)
{
    pthread_rwlock_init(&layout_lock, NULL);
}
