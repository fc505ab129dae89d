/*
 * touch.c: which buffers a kernel launch can reach.
 *
 * A launch names its buffers in its parameters. The driver describes each
 * kernel's parameters (cuFuncGetParamInfo; for the CUkernel handles that
 * PyTorch casts to CUfunction, cuKernelGetParamInfo), so the first launch
 * of a function asks for its layout once and keeps it; every launch after
 * reads each parameter's 8-byte words and hands them to tier.c, which stamps
 * the buffers they point into and brings offloaded ones back. Parameters
 * passed as one packed buffer (the `extra` form) are scanned whole.
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
/* Bumped by every module or library unload; read once per launch. */
static _Atomic uint32_t unload_gen;

void vs_touch_forget_layouts(void)
{
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
 * its generation says whether it still describes the handle. */
#define LAYOUT_CACHE 64
static __thread struct {
    CUfunction f;
    const struct layout *l;
} recent[LAYOUT_CACHE] VS_TLS_FAST;

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

static inline const struct layout *layout_of(CUfunction f)
{
    uint32_t gen = atomic_load_explicit(&unload_gen, memory_order_acquire);
    unsigned slot = (unsigned)((uintptr_t)f >> 4) & (LAYOUT_CACHE - 1);
    if (VS_LIKELY(recent[slot].f == f && f != NULL && recent[slot].l->gen == gen))
        return recent[slot].l;
    const struct layout *l = layout_lookup(f, gen);
    if (l) {
        recent[slot].f = f;
        recent[slot].l = l;
    }
    return l;
}

/* The words of a launch's parameters that may name a backed buffer: tier.c
 * checks them against the thread's cache and its page index in one pass. */
struct scan {
    uint64_t lo, width; /* [lowest, highest) */
    int n;
    uint64_t words[MAX_WORDS];
};

static inline void scan_word(struct scan *s, uint64_t a)
{
    if (a - s->lo >= s->width)
        return; /* most words: sizes, strides, scalars */
    if (VS_LIKELY(s->n < MAX_WORDS))
        s->words[s->n++] = a;
}

static void scan_bytes(struct scan *s, const void *p, size_t size)
{
    for (size_t k = 0; k + 8 <= size; k += 8) {
        uint64_t a;
        memcpy(&a, (const char *)p + k, 8);
        scan_word(s, a);
    }
}

void vs_touch_launch(CUfunction f, void **params, void **extra)
{
    if (VS_LIKELY(atomic_load_explicit(&vs_tier_buffers, memory_order_relaxed) == 0))
        return;
    uint64_t now = vs_now_ns();
    vs_tier_submitted(now);
    struct scan s;
    s.lo = atomic_load_explicit(&vs_tier_lowest, memory_order_relaxed);
    s.width = atomic_load_explicit(&vs_tier_highest, memory_order_relaxed) - s.lo;
    s.n = 0;
    if (params) {
        const struct layout *l = layout_of(f);
        if (VS_LIKELY(l != NULL && l->words)) {
            /* one word each, at most MAX_PARAMS == MAX_WORDS of them: the
             * layout was worked out once, no size to check per launch */
            int n = 0;
            for (int i = 0; i < l->n; i++) {
                if (VS_UNLIKELY(params[i] == NULL))
                    continue;
                uint64_t a;
                memcpy(&a, params[i], 8);
                s.words[n] = a;
                n += a - s.lo < s.width; /* most words: sizes, strides, scalars */
            }
            s.n = n;
            l = NULL;
        }
        for (int i = 0; l && i < l->n; i++) {
            if (params[i] == NULL)
                continue;
            if (VS_LIKELY(l->size[i] == 8)) { /* a pointer, most often */
                uint64_t a;
                memcpy(&a, params[i], 8);
                scan_word(&s, a);
            } else {
                scan_bytes(&s, params[i], l->size[i]);
            }
        }
    } else if (extra) {
        const void *buf = NULL;
        size_t size = 0;
        for (int i = 0; extra[i] != CU_LAUNCH_PARAM_END && i < 16; i += 2) {
            if (extra[i] == CU_LAUNCH_PARAM_BUFFER_POINTER)
                buf = extra[i + 1];
            else if (extra[i] == CU_LAUNCH_PARAM_BUFFER_SIZE && extra[i + 1])
                size = *(const size_t *)extra[i + 1];
        }
        if (buf)
            scan_bytes(&s, buf, size);
    }
    if (s.n)
        vs_tier_touch_launch(s.words, s.n, now);
}

void vs_touch_atfork_child(void)
{
    pthread_rwlock_init(&layout_lock, NULL);
}
