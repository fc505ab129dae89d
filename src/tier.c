/*
 * tier.c: device buffers backed by virtual memory management, and the
 * policy of which of them move, when, and where.
 *
 * With offload on, a cuMemAlloc of at least one granule is not passed to
 * the driver: vramshim reserves the address range itself and maps device
 * handles into it in chunks of up to VS_CHUNK_GRANULES granules, so that a
 * chunk can move on its own (chunk.c does the moving) while every pointer
 * the program holds stays valid. Allocations smaller than a granule pass
 * through (counted, never moved): backing them would round each up to
 * 2 MiB.
 *
 * This file is the policy only: it reaches the driver, the host pool, the
 * staging threads and the clock through struct vs_tier_ops (chunk.c's in
 * the library), so tests/unit/test_tier.c runs it against fake movers.
 *
 * Where chunks go: to pinned host memory while the pin budget lasts, where
 * kernels still reach them over the bus; then, with offload auto, to
 * pageable memory, but only where nothing can reach them: the process is
 * idle (its next submission brings them all back first: vs_gate_enter), or
 * the program handed the buffer over with vramshim_offload. A buffer the
 * program shared with another process never moves (ipc.c).
 *
 * Locks, in the order they are taken:
 *   - move_lock (move_lock_take/give, the program first): one move at a time; it
 *     also guards chunk.c's scratch window and each buffer's pageable count.
 *     Frees never take it, and long requests (evict, free, make room) take
 *     it once per victim, so a program thread that queues behind one waits
 *     for one buffer's move at most;
 *   - the gate (gate.c; reader-writer, writers first): every launch, copy
 *     and memset the program submits holds the read side for the length of
 *     its driver call; a move holds the write side from its fence (a
 *     synchronise of the buffer's context) until the remap is done, so no
 *     work can reach a chunk between the last copy of its bytes and its new
 *     mapping;
 *   - the tree's lock (gate.c's VS_RW_TREE, reader-writer, the read side
 *     writing only the reader's thread slot): the tree of buffers by
 *     address, read by touch tracking, written only to add or remove a
 *     buffer;
 *   - lru_lock (mutex, held briefly, innermost of tier.c's): the order in
 *     which buffers are chosen to move, the lists of buffers with pinned
 *     or pageable chunks, and who holds each buffer (busy).
 *
 * One owner for each record's life: a buffer is in the tree from the
 * moment its registry record exists (vs_tier_publish) until its free takes
 * it out (vs_tier_free_begin), which happens before the record goes. Every
 * move or request works on a buffer it has claimed (busy, under lru_lock,
 * found in the tree or on a list); a free takes the buffer out of the tree
 * and the lists, marks it dying (a move stops between chunks), waits for
 * its claims to end, and only then is the record removed: so the record
 * says where every byte is, and the charges it gives back are the ones the
 * moves left. Frees of buffers no move holds wait for nothing.
 *
 * Choosing what moves costs O(log n) per victim, never a walk: each device
 * and owner has a tree of its movable buffers ordered by lru_key, the last
 * touch a buffer had when it was last placed there. A launch only stamps
 * last_touch_ns, and a graph launch only raises touch_epoch (every buffer's
 * effective last touch is the later of its stamp and the epoch), so the
 * launch path never reorders anything. The order catches up lazily: the
 * tree's first buffer is the least recently touched one unless it was
 * stamped since it was placed (after the epoch), in which case it is placed
 * again by its stamp and the next first is looked at; since no buffer's
 * stamp is older than its key, the first buffer that was not stamped since
 * has the oldest effective touch of all (ties: any of them). Each re-placing
 * is paid for by a touch. A list could not be kept in exact order without
 * moving buffers on the launch path, and CLOCK's referenced bit would lose
 * the order the policy promises (idle buffers first, then the least
 * recently touched); the tree keeps it exactly, for one log n.
 */
#include "offload_internal.h"

#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <unistd.h>

static int cmp_lru(const struct buffer *a, const struct buffer *b)
{
    if (a->lru_key != b->lru_key)
        return a->lru_key < b->lru_key ? -1 : 1;
    return a->base < b->base ? -1 : a->base > b->base;
}
RB_HEAD(lru_tree, buffer);
RB_GENERATE_STATIC(lru_tree, buffer, lru, cmp_lru)
TAILQ_HEAD(buffer_list, buffer);

static int cmp_buffer(const struct buffer *a, const struct buffer *b)
{
    return a->base < b->base ? -1 : a->base > b->base;
}
RB_HEAD(buffer_tree, buffer);
RB_GENERATE_STATIC(buffer_tree, buffer, rb, cmp_buffer)

/* Globals by how often they are written: what every launch reads shares
 * its line only with what is written as rarely (a buffer added, removed or
 * moved); what a launch may write has lines of its own. */
static struct buffer_tree buffers = RB_INITIALIZER(&buffers);
/* The same buffers by 2 MiB page (page_index.c), under the tree's lock:
 * a launch finds the buffer a pointer names in one probe instead of a walk
 * of the tree. Every page some buffer's span covers maps to a buffer whose
 * span covers part of it (the one holding it whole, since spans are
 * reserved at the granularity, 2 MiB, so no two buffers share a page; with
 * a smaller granularity a shared page maps to one of them and a look-up
 * it does not answer walks the tree), and no other page maps to anything.
 * vs_tier_pages_whole false: a bigger table could not be had (out of memory),
 * look-ups walk the tree from then on. */
struct vs_page_index vs_tier_pages;
bool vs_tier_pages_whole = true;
static const struct vs_tier_ops *ops = &(const struct vs_tier_ops){0};
_Alignas(64) _Atomic uint32_t vs_tier_buffers;
_Atomic uint64_t vs_tier_lowest = UINT64_MAX, vs_tier_highest;
/* Bumped when a buffer leaves the tree or a move begins or ends: the
 * per-thread caches of touched buffers are good only within one value. */
_Atomic uint64_t vs_tree_gen = 1;
/* The last graph launch: every buffer counts as touched then (a graph may
 * reach any of them). */
static _Atomic uint64_t touch_epoch;
/* When the program last submitted work (a launch, copy or memset), to the
 * millisecond: the touch that precedes every submission's gate stamps it.
 * It only decides whether the process counts as idle; safety comes from
 * the gate's check of vs_pageable_reachable, however late the stamp. */
_Alignas(64) _Atomic uint64_t vs_last_submit_ns;
struct vs_touch_cache vs_touch_caches[VS_THREAD_SHARED]; /* .bss: touched only when used */
/* move_lock, with the program first: a long request (the control socket's
 * evict or free) gives it up between victims and takes it again only once
 * no program thread waits for it, so every thread of the program that
 * queued meanwhile goes first. Among the program's threads it is a plain
 * mutex (a fair one convoys under load). */
static _Alignas(64) pthread_mutex_t move_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_mutex_t drained_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t drained = PTHREAD_COND_INITIALIZER; /* program_waiting fell to 0 */
/* Program calls waiting on vramshim's own work (move_lock, a move of the
 * buffer they free): while any does, the process is not idle. */
static _Atomic uint32_t program_waiting;
/* Frees between leaving the lists and giving up their pageable chunks'
 * reachable count: the gate waits for them rather than fail. */
static _Atomic uint32_t frees_pending;
/* Frees that waited for a move of their buffer (tests read it). */
_Atomic uint64_t vs_tier_free_waits;

static inline void tree_changed(void)
{
    atomic_fetch_add_explicit(&vs_tree_gen, 1, memory_order_release);
}

/* Guarded by lru_lock. */
static pthread_mutex_t lru_lock = PTHREAD_MUTEX_INITIALIZER;
static struct lru_tree lru[VS_MAX_DEVICES][VS_MAX_OWNERS];
static uint64_t lru_owners[VS_MAX_DEVICES][VS_MAX_OWNERS / 64]; /* trees not empty */
static struct buffer_list pinned_list = TAILQ_HEAD_INITIALIZER(pinned_list);
static struct buffer_list pageable_list = TAILQ_HEAD_INITIALIZER(pageable_list);
static struct buffer_list handed_list = TAILQ_HEAD_INITIALIZER(handed_list);

/* `program`: a program's call waits here (counted, see program_waiting),
 * rather than the control socket or vramshim's own threads. */
static void program_waits(void) { atomic_fetch_add(&program_waiting, 1); }

static void program_waited(void)
{
    if (atomic_fetch_sub(&program_waiting, 1) == 1) {
        pthread_mutex_lock(&drained_lock);
        pthread_cond_broadcast(&drained);
        pthread_mutex_unlock(&drained_lock);
    }
}

static void move_lock_take(bool program)
{
    vs_nocancel_begin(); /* until move_lock_give: waits inside are cancellation points */
    if (program) {
        if (pthread_mutex_trylock(&move_lock) == 0)
            return;
        program_waits();
        pthread_mutex_lock(&move_lock);
        program_waited();
        return;
    }
    pthread_mutex_lock(&drained_lock);
    while (atomic_load(&program_waiting))
        pthread_cond_wait(&drained, &drained_lock);
    pthread_mutex_unlock(&drained_lock);
    pthread_mutex_lock(&move_lock);
}

static void move_lock_give(void)
{
    pthread_mutex_unlock(&move_lock);
    vs_nocancel_end();
}

uint32_t vs_tier_waiting(void) { return atomic_load(&program_waiting); }

void vs_tier_init(const struct vs_tier_ops *movers)
{
    ops = movers;
}

bool vs_tier_wants(int dev, uint64_t size)
{
    if (vs_limits_offload() == VS_OFFLOAD_OFF)
        return false;
    uint64_t g = ops->granularity(dev);
    return g != UINT64_MAX && size >= g;
}

/* ---- the tree -------------------------------------------------------------- */

/* The buffer holding addr, or the first one after it. Caller holds the tree's lock. */
static struct buffer *find_from(uint64_t addr)
{
    struct buffer *node = RB_ROOT(&buffers), *best = NULL;
    while (node) {
        if (node->base <= addr) {
            best = node;
            node = RB_RIGHT(node, rb);
        } else {
            node = RB_LEFT(node, rb);
        }
    }
    if (best && addr - best->base < best->span)
        return best;
    struct buffer key = {.base = addr};
    return RB_NFIND(buffer_tree, &buffers, &key);
}

static inline uint64_t first_page(const struct buffer *b) { return b->base >> VS_PAGE_SHIFT; }
static inline uint64_t last_page(const struct buffer *b)
{
    return (b->base + b->span - 1) >> VS_PAGE_SHIFT;
}

/* The buffer whose span holds addr, or NULL: by the page index, walking
 * the tree only for a page shared by two buffers (never at 2 MiB
 * granularity) or when the index is not whole. Caller holds the tree's
 * lock. */
static inline struct buffer *find_holding(uint64_t addr)
{
    struct buffer *b;
    if (VS_LIKELY(vs_tier_pages_whole)) {
        b = vs_page_index_get(&vs_tier_pages, addr >> VS_PAGE_SHIFT);
        if (VS_LIKELY(b == NULL || addr - b->base < b->span)) {
#ifdef VS_DEBUG
            struct buffer *t = find_from(addr);
            VS_ASSERT(b == (t && addr - t->base < t->span ? t : NULL));
#endif
            return b;
        }
    }
    b = find_from(addr);
    return b && addr - b->base < b->span ? b : NULL;
}

static struct buffer *find_containing(uint64_t addr)
{
    struct buffer *b = find_holding(addr);
    return b && addr - b->base < b->size ? b : NULL;
}

/* Put b's pages in the index. Caller holds the tree's write side, made
 * room for them (pages_make_room) and inserted b in the tree. */
static void pages_add(struct buffer *b)
{
    for (uint64_t p = first_page(b); vs_tier_pages_whole && p <= last_page(b); p++)
        if (!vs_page_index_put(&vs_tier_pages, p, b))
            vs_tier_pages_whole = false; /* pages_make_room failed to grow it */
}

/* Take b's pages out of the index; a page b shared with a neighbour
 * (granularity under 2 MiB) goes to the neighbour. Caller holds the
 * tree's write side and took b out of the tree. */
static void pages_remove(struct buffer *b)
{
    if (!vs_tier_pages_whole)
        return;
    for (uint64_t p = first_page(b); p <= last_page(b); p++)
        vs_page_index_drop(&vs_tier_pages, p, b);
    uint64_t mask = (1ULL << VS_PAGE_SHIFT) - 1;
    if (!(b->base & mask) && !((b->base + b->span) & mask))
        return;
    uint64_t edge[2] = {first_page(b), last_page(b)};
    for (int i = 0; i < 2; i++) {
        struct buffer *o = find_from(edge[i] << VS_PAGE_SHIFT);
        if (o && o->base < (edge[i] + 1) << VS_PAGE_SHIFT)
            vs_page_index_put(&vs_tier_pages, edge[i], o); /* fits: b's pages just left */
    }
}

/* Make the index big enough for n more pages and take the tree's write
 * side; the table is allocated with the lock not held, so launches never
 * wait for an allocation. */
static void pages_make_room_and_lock(uint64_t n)
{
    struct vs_page_slot *fresh = NULL;
    uint64_t fresh_slots = 0;
    for (;;) {
        vs_rw_write_lock(VS_RW_TREE);
        if (!vs_tier_pages_whole || vs_page_index_fits(&vs_tier_pages, n))
            break;
        uint64_t want = vs_page_index_slots_for(vs_tier_pages.used + n);
        if (fresh_slots >= want) {
            vs_page_index_adopt(&vs_tier_pages, fresh, fresh_slots); /* rehash: O(pages), per doubling */
            fresh = NULL;
            break;
        }
        vs_rw_write_unlock(VS_RW_TREE);
        free(fresh);
        fresh_slots = want;
        fresh = calloc(want, sizeof *fresh);
        if (fresh == NULL) {
            vs_warn("offload: no memory for the page index of %llu pages; launches look "
                    "buffers up in the tree from now on",
                    (unsigned long long)(vs_tier_pages.used + n));
            vs_rw_write_lock(VS_RW_TREE);
            vs_tier_pages_whole = false;
            break;
        }
    }
    free(fresh); /* another thread grew it meanwhile */
}

bool vs_tier_lookup(uint64_t addr, struct vs_tier_view *out)
{
    if (atomic_load_explicit(&vs_tier_buffers, memory_order_relaxed) == 0)
        return false;
    vs_rw_read_lock(VS_RW_TREE);
    struct buffer *b = find_containing(addr);
    if (b) {
        out->base = b->base;
        out->size = b->size;
        out->dev = b->dev;
        out->ctx = b->ctx;
        out->offloaded = atomic_load(&b->n_off) > 0;
        uint8_t sm = atomic_load(&b->sync_memops);
        out->sync_memops = sm == VS_SYNC_MEMOPS_UNSET ? -1 : sm == VS_SYNC_MEMOPS_ON;
    }
    vs_rw_read_unlock(VS_RW_TREE);
    return b != NULL;
}

/* ---- the victim order and the lists ------------------------------------------ */

enum {
    LISTED = 1,    /* published and not freed */
    ON_LRU = 2,    /* in its (device, owner) tree: it may move */
    ON_PINNED = 4, /* on pinned_list: some chunk is pinned */
    ON_PAGEABLE = 8, /* on pageable_list: pageable chunks work may reach */
    ON_HANDED = 16, /* on handed_list: pageable chunks of a handed-over buffer */
    HELD = 32       /* being brought back: not a victim meanwhile */
};

static bool has_resident(const struct buffer *b)
{
    return atomic_load(&b->n_off) < b->n_chunks;
}

static inline unsigned dev_slot(int dev)
{
    return dev >= 0 && dev < VS_MAX_DEVICES ? (unsigned)dev : 0;
}

static inline unsigned owner_slot(int owner)
{
    return owner >= 0 && owner < VS_MAX_OWNERS ? (unsigned)owner : VS_MAX_OWNERS - 1;
}

static inline uint64_t stamp_of(const struct buffer *b)
{
    return atomic_load_explicit(&b->last_touch_ns, memory_order_relaxed);
}

/* The lists b belongs on, by its state now. */
static uint8_t lists_wanted(const struct buffer *b)
{
    if (!(b->lists & LISTED))
        return 0;
    uint8_t want = LISTED | (b->lists & HELD);
    if (has_resident(b) && !atomic_load(&b->shared) && !b->fixed && !(b->lists & HELD))
        want |= ON_LRU;
    if (atomic_load(&b->n_off) > b->n_pageable)
        want |= ON_PINNED;
    if (b->n_pageable)
        want |= atomic_load(&b->handed_over) ? ON_HANDED : ON_PAGEABLE;
    return want;
}

/* Put b where its state says (after a move, a hand-over, a share, a free).
 * Caller holds lru_lock. */
static void relist_locked(struct buffer *b)
{
    uint8_t want = lists_wanted(b), have = b->lists;
    unsigned d = dev_slot(b->dev), o = owner_slot(b->owner);
    if ((have ^ want) & ON_LRU) {
        if (want & ON_LRU) {
            b->lru_key = stamp_of(b);
            RB_INSERT(lru_tree, &lru[d][o], b);
            lru_owners[d][o / 64] |= 1ULL << (o % 64);
        } else {
            RB_REMOVE(lru_tree, &lru[d][o], b);
            if (RB_EMPTY(&lru[d][o]))
                lru_owners[d][o / 64] &= ~(1ULL << (o % 64));
        }
    }
    if ((have ^ want) & ON_PINNED) {
        if (want & ON_PINNED)
            TAILQ_INSERT_TAIL(&pinned_list, b, pinned_link);
        else
            TAILQ_REMOVE(&pinned_list, b, pinned_link);
    }
    if ((have ^ want) & (ON_PAGEABLE | ON_HANDED)) {
        if (have & ON_PAGEABLE)
            TAILQ_REMOVE(&pageable_list, b, pageable_link);
        else if (have & ON_HANDED)
            TAILQ_REMOVE(&handed_list, b, pageable_link);
        if (want & ON_PAGEABLE)
            TAILQ_INSERT_TAIL(&pageable_list, b, pageable_link);
        else if (want & ON_HANDED)
            TAILQ_INSERT_TAIL(&handed_list, b, pageable_link);
    }
    b->lists = want;
}

static void relist(struct buffer *b)
{
    pthread_mutex_lock(&lru_lock);
    relist_locked(b);
    pthread_mutex_unlock(&lru_lock);
}

/* Every fence a move opens is closed here: the move may have changed which
 * lists the buffer belongs on. */
static void fence_end(struct buffer *b)
{
    tree_changed(); /* what the touch caches hold of b may be stale now */
    ops->fence_end(b);
    relist(b);
}

/* Every move opens its fence here: a touch during the move looks at the
 * buffer itself, as fence_end makes it do after. */
static bool fence_begin(struct buffer *b)
{
    tree_changed();
    return ops->fence_begin(b);
}

/* ---- who holds a buffer ------------------------------------------------------ */

/* Freed buffers' waiters: a free waits on it for its buffer's claims to end. */
static pthread_cond_t unclaimed = PTHREAD_COND_INITIALIZER;

/* Claim b for a move or a request; false once its free has begun. Caller
 * holds lru_lock and found b in the tree or on a list. */
static bool claim_locked(struct buffer *b)
{
    if (!(b->lists & LISTED))
        return false;
    b->busy++;
    return true;
}

static void unclaim(struct buffer *b)
{
    pthread_mutex_lock(&lru_lock);
    if (--b->busy == 0 && !(b->lists & LISTED))
        pthread_cond_broadcast(&unclaimed);
    pthread_mutex_unlock(&lru_lock);
}

/* The buffer at base (exact), or holding addr (`containing`), claimed. */
static struct buffer *claim_at(uint64_t addr, bool containing)
{
    vs_rw_read_lock(VS_RW_TREE);
    struct buffer key = {.base = addr};
    struct buffer *b = containing ? find_containing(addr) : RB_FIND(buffer_tree, &buffers, &key);
    if (b) {
        pthread_mutex_lock(&lru_lock);
        if (!claim_locked(b))
            b = NULL;
        pthread_mutex_unlock(&lru_lock);
    }
    vs_rw_read_unlock(VS_RW_TREE);
    return b;
}

/* A pass over one of the lists, with move_lock held: the next buffer this
 * pass has not taken yet, claimed and put at the list's tail (relist takes
 * it off later if it no longer belongs). The pass ends at the first buffer
 * it took before: buffers stay on their lists throughout, so a free running
 * meanwhile finds each where its flags say. */
static _Atomic uint32_t pass_no;
#define PASS_NEXT(list, link, field, pass)                                      \
    ({                                                                        \
        pthread_mutex_lock(&lru_lock);                                        \
        struct buffer *next_ = TAILQ_FIRST(list);                             \
        if (next_ && next_->field != (pass) && claim_locked(next_)) {         \
            next_->field = (pass);                                            \
            TAILQ_REMOVE(list, next_, link);                                  \
            TAILQ_INSERT_TAIL(list, next_, link);                             \
        } else {                                                              \
            next_ = NULL;                                                     \
        }                                                                     \
        pthread_mutex_unlock(&lru_lock);                                      \
        next_;                                                                \
    })

/* The least recently touched buffer of one tree: its first, once the first
 * was not stamped since it was placed (see the top of the file). Caller
 * holds lru_lock. */
static struct buffer *lru_first(struct lru_tree *t, uint64_t epoch)
{
    for (;;) {
        struct buffer *h = RB_MIN(lru_tree, t);
        if (h == NULL)
            return NULL;
        uint64_t s = stamp_of(h);
        if (s <= h->lru_key || s <= epoch)
            return h;
        RB_REMOVE(lru_tree, t, h);
        h->lru_key = s;
        RB_INSERT(lru_tree, t, h);
    }
}

/* ---- allocation and free --------------------------------------------------- */

/* Records of freed buffers are kept for the next allocation of as many
 * chunks, so that a program that allocates and frees in a loop (a caching
 * allocator growing and trimming) costs no malloc per allocation. */
#define SPARE_CLASSES 64
#define SPARE_PER_CLASS 8
static pthread_mutex_t spare_lock = PTHREAD_MUTEX_INITIALIZER;
static struct buffer *spare[SPARE_CLASSES][SPARE_PER_CLASS];
static int n_spare[SPARE_CLASSES];

static struct buffer *record_new(uint32_t n_chunks)
{
    struct buffer *b = NULL;
    if (n_chunks <= SPARE_CLASSES) {
        pthread_mutex_lock(&spare_lock);
        if (n_spare[n_chunks - 1] > 0)
            b = spare[n_chunks - 1][--n_spare[n_chunks - 1]];
        pthread_mutex_unlock(&spare_lock);
    }
    size_t bytes = sizeof *b + n_chunks * sizeof b->chunk[0];
    if (b)
        memset(b, 0, bytes);
    else
        b = calloc(1, bytes);
    return b;
}

static void record_free(struct buffer *b)
{
    uint32_t n = b->n_chunks;
    if (n >= 1 && n <= SPARE_CLASSES) {
        pthread_mutex_lock(&spare_lock);
        bool kept = n_spare[n - 1] < SPARE_PER_CLASS;
        if (kept)
            spare[n - 1][n_spare[n - 1]++] = b;
        pthread_mutex_unlock(&spare_lock);
        if (kept)
            return;
    }
    free(b);
}

static void unback(struct buffer *b)
{
    ops->unback(b);
    record_free(b);
}

CUresult vs_tier_alloc(CUdeviceptr *dptr, uint64_t size, int dev, int owner,
                       struct vs_backing **pending)
{
    uint64_t gran = ops->granularity(dev);
    if (gran == UINT64_MAX)
        return CUDA_ERROR_NOT_SUPPORTED;
    if (dptr == NULL)
        return CUDA_ERROR_INVALID_VALUE;
    uint64_t span = (size + gran - 1) / gran * gran;
    uint64_t chunk_bytes = gran * VS_CHUNK_GRANULES;
    uint32_t n = (uint32_t)((span + chunk_bytes - 1) / chunk_bytes);
    struct buffer *b = record_new(n);
    if (b == NULL)
        return CUDA_ERROR_NOT_SUPPORTED; /* let the driver do it, unbacked */
    b->size = size;
    b->span = span;
    b->gran = gran;
    b->dev = dev;
    b->owner = owner;
    b->n_chunks = n;
    for (uint32_t i = 0; i < n; i++) {
        struct chunk *c = &b->chunk[i];
        c->offset = (uint64_t)i * chunk_bytes;
        c->size = span - c->offset < chunk_bytes ? span - c->offset : chunk_bytes;
        c->counted = size > c->offset ? (size - c->offset < c->size ? size - c->offset : c->size) : 0;
        c->where = CHUNK_DEVICE;
    }
    CUresult rc = ops->back(b);
    if (rc != CUDA_SUCCESS) {
        record_free(b);
        /* no address space: the driver could not have done better; anything
         * else: let it try, unbacked */
        return rc == CUDA_ERROR_OUT_OF_MEMORY ? rc : CUDA_ERROR_NOT_SUPPORTED;
    }
    atomic_store(&b->last_touch_ns, ops->now());
    *dptr = b->base;
    *pending = (struct vs_backing *)b;
    return CUDA_SUCCESS;
}

/* Only now can a move pick the buffer: the registry has its record, so
 * every move's charges and the record's split stay in step. A buffer the
 * registry could not record (out of memory) is published `fixed`: a free
 * finds it, but it never moves, since no record would follow its bytes. */
void vs_tier_publish(struct vs_backing *pending, bool recorded)
{
    struct buffer *b = (struct buffer *)pending;
    b->fixed = !recorded;
    pages_make_room_and_lock(last_page(b) - first_page(b) + 1);
    RB_INSERT(buffer_tree, &buffers, b);
    pages_add(b);
    vs_rw_write_unlock(VS_RW_TREE);
    pthread_mutex_lock(&lru_lock);
    b->lists = LISTED;
    relist_locked(b);
    pthread_mutex_unlock(&lru_lock);
    atomic_fetch_add(&vs_tier_buffers, 1);
    uint64_t lo = atomic_load(&vs_tier_lowest);
    while (b->base < lo && !atomic_compare_exchange_weak(&vs_tier_lowest, &lo, b->base))
        ;
    uint64_t hi = atomic_load(&vs_tier_highest);
    while (b->base + b->span > hi &&
           !atomic_compare_exchange_weak(&vs_tier_highest, &hi, b->base + b->span))
        ;
}

struct vs_backing *vs_tier_free_begin(uint64_t base)
{
    if (VS_LIKELY(atomic_load_explicit(&vs_tier_buffers, memory_order_relaxed) == 0))
        return NULL;
    vs_rw_read_lock(VS_RW_TREE); /* most frees are of buffers not backed */
    struct buffer *held = find_holding(base);
    bool backed = held && held->base == base;
    vs_rw_read_unlock(VS_RW_TREE);
    if (!backed)
        return NULL;
    vs_rw_write_lock(VS_RW_TREE);
    struct buffer *b = find_holding(base);
    if (b && b->base == base) {
        RB_REMOVE(buffer_tree, &buffers, b);
        pages_remove(b);
        tree_changed();
    } else {
        b = NULL;
    }
    vs_rw_write_unlock(VS_RW_TREE);
    if (b == NULL)
        return NULL; /* another thread's free of the same base came first */
    atomic_fetch_sub(&vs_tier_buffers, 1);
    atomic_store(&b->dying, true);
    pthread_mutex_lock(&lru_lock);
    atomic_fetch_add(&frees_pending, 1);
    b->lists &= (uint8_t)~LISTED;
    relist_locked(b);
    if (b->busy) { /* a move holds it: it stops at its next chunk */
        atomic_fetch_add(&vs_tier_free_waits, 1);
        program_waits();
        vs_nocancel_begin(); /* cancelled in the wait, lru_lock would stay held */
        while (b->busy)
            pthread_cond_wait(&unclaimed, &lru_lock);
        vs_nocancel_end();
        program_waited();
    }
    pthread_mutex_unlock(&lru_lock);
    /* nothing may reach a freed buffer: its pageable chunks are no reason
     * for the next submission to wait */
    if (!atomic_exchange(&b->handed_over, true) && b->n_pageable)
        atomic_fetch_sub(&vs_pageable_reachable, b->n_pageable);
    atomic_fetch_sub(&frees_pending, 1);
    return (struct vs_backing *)b;
}

void vs_tier_free_end(struct vs_backing *held)
{
    struct buffer *b = (struct buffer *)held;
    /* cuMemFree waits for the device; cuMemUnmap does not */
    if (ops->drain)
        ops->drain(b);
    else if (ops->fence_begin(b))
        ops->fence_end(b);
    unback(b);
}

/* Pageable is safe only where nothing can reach the buffer: the program
 * handed it over, or the whole process is idle (nothing submitted for
 * idle_ms, and the fence the caller holds says nothing is in flight); its
 * next submission brings every such chunk back first (vs_gate_enter).
 * Caller holds the fence. */
static bool may_go_pageable(const struct buffer *b)
{
    if (vs_limits_offload() != VS_OFFLOAD_AUTO)
        return false;
    if (atomic_load(&b->handed_over))
        return true;
    if (atomic_load(&program_waiting))
        return false; /* a program waiting on vramshim is not idle */
    uint64_t idle_ns = (uint64_t)vs_limits_idle_ms() * 1000000ULL;
    uint64_t now = ops->now(), last = atomic_load(&vs_last_submit_ns);
    return now < last || now - last >= idle_ns;
}

/* Move chunks of b out, last first, until `want` bytes moved: to pinned
 * memory while the pin budget lasts, then to pageable memory where that is
 * safe. Caller holds move_lock. Returns the bytes moved. */
static uint64_t buffer_out(struct buffer *b, uint64_t want)
{
    uint64_t moved = 0;
    bool pinned_any = false;
    if (!fence_begin(b))
        return 0;
    for (uint32_t i = b->n_chunks; i-- > 0 && moved < want && !atomic_load(&b->dying);) {
        struct chunk *c = &b->chunk[i];
        if (c->where != CHUNK_DEVICE || c->counted == 0)
            continue;
        CUresult rc = ops->device_to_pinned(b, c);
        pinned_any |= rc == CUDA_SUCCESS;
        if (rc == CUDA_ERROR_OUT_OF_MEMORY && may_go_pageable(b))
            rc = ops->to_pageable(b, c);
        if (rc != CUDA_SUCCESS)
            break;
        moved += c->counted;
    }
    fence_end(b);
    if (pinned_any) /* under pressure: have host memory ready for the next */
        ops->host_ahead(b->gran, b->ctx);
    return moved;
}

/* Give up the promise vramshim_offload made: from now on work may reach the
 * buffer again, so its pageable chunks count as reachable. Caller holds the
 * fence (raising the count needs the gate's write side). */
static void take_back(struct buffer *b)
{
    if (atomic_exchange(&b->handed_over, false) && b->n_pageable)
        atomic_fetch_add(&vs_pageable_reachable, b->n_pageable);
}

/* Bring every chunk of b back that fits on the device; pageable chunks that
 * do not fit come back to pinned memory, since work is about to reach them.
 * Caller holds move_lock. Returns true when all of b is on the device. */
static bool buffer_in(struct buffer *b)
{
    if (atomic_load(&b->n_off) == 0) {
        atomic_store(&b->handed_over, false);
        return true;
    }
    if (!fence_begin(b)) {
        /* The device is busy, or a stream captures (no synchronise then).
         * Pageable chunks still come back, to pinned memory where work
         * reaches them: their address is unmapped, so nothing queued can
         * be using them, and no wait is needed. */
        if (b->n_pageable && ops->hold_begin) {
            tree_changed();
            if (ops->hold_begin(b)) {
                take_back(b);
                for (uint32_t i = 0; i < b->n_chunks && !atomic_load(&b->dying); i++)
                    if (b->chunk[i].where == CHUNK_PAGEABLE)
                        ops->from_pageable(b, &b->chunk[i], true);
                fence_end(b);
                return false;
            }
        }
        /* the program touched it: the hand-over is over even though nothing
         * could move (its pageable chunks now stop the next submission) */
        vs_gate_write_lock();
        take_back(b);
        vs_gate_write_unlock();
        return false;
    }
    take_back(b);
    bool device_full = false;
    for (uint32_t i = 0; i < b->n_chunks && !atomic_load(&b->dying); i++) {
        struct chunk *c = &b->chunk[i];
        if (c->where == CHUNK_PAGEABLE)
            ops->from_pageable(b, c, true);
        else if (c->where == CHUNK_PINNED && !device_full)
            device_full = ops->pinned_to_device(b, c) != CUDA_SUCCESS;
    }
    fence_end(b);
    return atomic_load(&b->n_off) == 0;
}

/* Bring every pageable chunk that work may reach (with `handed_too`, every
 * pageable chunk) back to the device, or to pinned memory. */
static void restore_list(struct buffer_list *list, bool handed_too, uint32_t pass)
{
    struct buffer *b;
    while ((b = PASS_NEXT(list, pageable_link, visited_pageable, pass))) {
        if (fence_begin(b)) {
            if (handed_too)
                take_back(b);
            for (uint32_t i = 0; i < b->n_chunks && !atomic_load(&b->dying); i++)
                if (b->chunk[i].where == CHUNK_PAGEABLE)
                    ops->from_pageable(b, &b->chunk[i], true);
            fence_end(b);
        }
        unclaim(b);
    }
}

static bool restore_pageable(bool handed_too)
{
    move_lock_take(true);
    uint32_t pass = atomic_fetch_add(&pass_no, 1) + 1;
    restore_list(&pageable_list, handed_too, pass);
    if (handed_too)
        restore_list(&handed_list, true, pass);
    bool ok = atomic_load(&vs_pageable_reachable) == 0;
    move_lock_give();
    return ok;
}

bool vs_tier_restore_pageable(void)
{
    return restore_pageable(false);
}

/* The gate's slow path (offload.h has the fast one): pageable chunks work
 * may reach come back first. */
int vs_gate_enter_slow(void)
{
    for (;;) {
        vs_rw_read_lock(VS_RW_GATE);
        /* raised only under the write side: stable while we hold the read side */
        if (VS_LIKELY(atomic_load_explicit(&vs_pageable_reachable, memory_order_relaxed) == 0))
            return 1;
        vs_rw_read_unlock(VS_RW_GATE);
        if (!vs_tier_restore_pageable()) {
            if (atomic_load(&frees_pending) == 0)
                return -1;
            sched_yield(); /* what is left belongs to a buffer being freed */
        }
    }
}

/* ---- choosing what moves ------------------------------------------------------- */

/* The least recently touched buffer that may move (of dev and owner, where
 * >= 0), if idle_only only when untouched for idle_ms: idle buffers are the
 * least recently touched, so they come first; none touched after `before`
 * (a long request does not chase what the program brings back meanwhile).
 * Returned claimed. Caller holds move_lock. Out of line (one call per
 * victim, next to a move) so that bench/make_room_instr.sh can count it. */
static __attribute__((noinline)) struct buffer *pick_victim(int dev, int owner, bool idle_only,
                                                             uint64_t before)
{
    uint64_t now = ops->now(), idle_ns = (uint64_t)vs_limits_idle_ms() * 1000000ULL;
    uint64_t epoch = atomic_load_explicit(&touch_epoch, memory_order_relaxed);
    struct buffer *best = NULL;
    uint64_t best_touch = 0;
    pthread_mutex_lock(&lru_lock);
    for (unsigned d = dev >= 0 ? dev_slot(dev) : 0; d < VS_MAX_DEVICES; d++) {
        for (unsigned w = 0; w < VS_MAX_OWNERS / 64; w++) {
            uint64_t set = lru_owners[d][w];
            if (owner >= 0)
                set &= owner_slot(owner) / 64 == w ? 1ULL << (owner_slot(owner) % 64) : 0;
            for (; set; set &= set - 1) {
                struct buffer *b = lru_first(&lru[d][w * 64 + __builtin_ctzll(set)], epoch);
                if (b == NULL || (owner >= 0 && b->owner != owner))
                    continue;
                uint64_t touch = stamp_of(b) > epoch ? stamp_of(b) : epoch;
                if (best == NULL || touch < best_touch) {
                    best = b;
                    best_touch = touch;
                }
            }
        }
        if (dev >= 0)
            break;
    }
    bool idle = now > best_touch && now - best_touch >= idle_ns;
    if (best && ((idle_only && !idle) || best_touch > before || !claim_locked(best)))
        best = NULL;
    pthread_mutex_unlock(&lru_lock);
    return best;
}

/* Move one victim out, up to want bytes. Caller holds move_lock. Returns
 * the bytes moved; *stop when no other victim is worth trying (none left,
 * the pin budget is spent or the driver refused). */
static uint64_t one_victim(int dev, int owner, uint64_t want, bool idle_only, uint64_t before,
                           bool *stop)
{
    struct buffer *b = pick_victim(dev, owner, idle_only, before);
    if (b == NULL) {
        *stop = true;
        return 0;
    }
    uint64_t got = buffer_out(b, want);
    *stop = got == 0 && !atomic_load(&b->dying); /* a buffer freed meanwhile: try the next */
    unclaim(b);
    return got;
}

/* Caller holds move_lock. `spare` (being brought back) is not chosen. */
static uint64_t make_room_locked(int dev, int owner, uint64_t want, bool idle_only,
                                 struct buffer *spare)
{
    uint64_t moved = 0;
    bool stop = false;
    pthread_mutex_lock(&lru_lock);
    spare->lists |= HELD;
    relist_locked(spare);
    pthread_mutex_unlock(&lru_lock);
    while (moved < want && !stop)
        moved += one_victim(dev, owner, want - moved, idle_only, UINT64_MAX, &stop);
    pthread_mutex_lock(&lru_lock);
    spare->lists &= (uint8_t)~HELD;
    relist_locked(spare);
    pthread_mutex_unlock(&lru_lock);
    return moved;
}

/* Victims one at a time, move_lock given up between them, none touched
 * after `before`; `progress`, when given, follows the bytes moved so far. */
static uint64_t make_room(int dev, int owner, uint64_t want, bool idle_only, bool program,
                          uint64_t before, _Atomic uint64_t *progress)
{
    uint64_t moved = 0;
    bool stop = false;
    while (moved < want && !stop) {
        move_lock_take(program);
        moved += one_victim(dev, owner, want - moved, idle_only, before, &stop);
        move_lock_give();
        if (progress)
            atomic_store(progress, moved);
    }
    return moved;
}

uint64_t vs_tier_make_room(int dev, int owner, uint64_t shortfall, uint64_t bytes)
{
    /* pools and graph memory give back their unused reserve first: that
     * moves nobody's data (an owner's shortfall is not theirs: owner 0) */
    uint64_t trimmed = ops->trim && owner < 0 ? ops->trim(dev) : 0;
    if (trimmed >= shortfall)
        return trimmed;
    if (vs_limits_offload() == VS_OFFLOAD_OFF ||
        atomic_load_explicit(&vs_tier_buffers, memory_order_relaxed) == 0)
        return trimmed;
    shortfall -= trimmed;
    /* a margin, so that the next few allocations do not each stop to move */
    uint64_t margin = bytes / 8 < (64ULL << 20) ? bytes / 8 : (64ULL << 20);
    uint64_t moved = make_room(dev, owner, shortfall + margin, false, true, UINT64_MAX, NULL);
    if (moved)
        vs_info("offload: moved %llu bytes of device %d to host memory to fit %llu",
                (unsigned long long)moved, dev, (unsigned long long)bytes);
    return trimmed + moved;
}

/* ---- touch tracking ------------------------------------------------------------ */

/* What of b is off the device. Caller holds move_lock. */
static uint64_t bytes_off(const struct buffer *b)
{
    uint64_t off = 0;
    for (uint32_t i = 0; i < b->n_chunks; i++)
        if (b->chunk[i].where != CHUNK_DEVICE)
            off += b->chunk[i].counted;
    return off;
}

/* Bring the buffer at base back, making room only from buffers that have
 * been idle for idle_ms: two buffers a kernel keeps using never trade
 * places on every launch; the one that does not fit stays pinned, which
 * kernels can still reach. */
/* Caller holds move_lock. */
static bool bring_back_locked(struct buffer *b, bool idle_only)
{
    if (buffer_in(b))
        return true;
    return make_room_locked(b->dev, -1, bytes_off(b), idle_only, b) > 0 && buffer_in(b);
}

/* With `ask_peers`, what does not fit is asked of other processes on the
 * device (relief.c), with no lock held, and the buffer tried once more. */
static void bring_back(uint64_t base, bool ask_peers)
{
    move_lock_take(true);
    struct buffer *b = claim_at(base, false);
    int dev = b ? b->dev : -1;
    uint64_t missing = b && !bring_back_locked(b, true) ? bytes_off(b) : 0;
    if (b)
        unclaim(b);
    move_lock_give();
    if (missing && ask_peers && vs_relief_ask(dev, missing, "a buffer coming back", true))
        bring_back(base, false);
}

/* The slow path of a touch: stamp every backed buffer one of the n words
 * (each the start of len bytes) falls in, and bring back those offloaded
 * or handed over first. It takes the tree's read side itself, and
 * bring_back takes move_lock and the gate's write side: the caller holds
 * no read side of either. */
void vs_tier_touch_words(const uint64_t *words, int n, uint64_t len, uint64_t now)
{
    vs_tier_submitted(now);
    uint64_t lo = atomic_load_explicit(&vs_tier_lowest, memory_order_relaxed);
    uint64_t hi = atomic_load_explicit(&vs_tier_highest, memory_order_relaxed);
    uint64_t gen = atomic_load_explicit(&vs_tree_gen, memory_order_acquire);
    unsigned slot = vs_thread_slot();
    struct vs_touch_cache *tc = len == 1 && slot != VS_THREAD_SHARED ? &vs_touch_caches[slot] : NULL;
    uint64_t back[8];
    int n_back = 0;
    bool locked = false;
    for (int i = 0; i < n; i++) {
        uint64_t a = words[i], span = len; /* [a, a + span): what is left of this word */
        if (a + span <= lo || a >= hi)
            continue; /* most words: sizes, strides, scalars */
    resume:;
        struct vs_touch_entry *e = tc ? vs_touch_at(tc, a) : NULL;
        if (e && VS_LIKELY(tc->gen == gen && a - e->base < e->span && e->stamped == now))
            continue; /* stamped by this thread at this tick: nothing to write */
        if (!locked) {
            vs_rw_read_lock(VS_RW_TREE);
            locked = true;
            gen = atomic_load_explicit(&vs_tree_gen, memory_order_acquire);
            if (tc && tc->gen != gen) {
                memset(tc->e, 0, sizeof tc->e);
                tc->gen = gen;
            }
        }
        if (e && a - e->base < e->span) {
            vs_buffer_stamp(e->b, now); /* resident when cached; a move since bumped gen */
            e->stamped = now;
            continue;
        }
        struct buffer *b = len == 1 ? find_holding(a) : find_from(a);
        for (; b && b->base < a + span; b = RB_NEXT(buffer_tree, &buffers, b)) {
            if (!vs_buffer_stamp(b, now)) {
                if (n_back == (int)(sizeof back / sizeof back[0])) {
                    /* full (a launch may name dozens of offloaded buffers,
                     * a copy's range hundreds): these come back now, with
                     * the read side let go, and the word goes on from b */
                    uint64_t end = a + span;
                    a = b->base > a ? b->base : a;
                    span = end - a;
                    vs_rw_read_unlock(VS_RW_TREE);
                    locked = false;
                    for (int k = 0; k < n_back; k++)
                        bring_back(back[k], true);
                    n_back = 0;
                    goto resume;
                }
                back[n_back++] = b->base;
            } else if (e && a >= b->base) {
                e->base = b->base;
                e->span = b->span;
                e->b = b;
                e->stamped = now;
            }
            if (len == 1)
                break;
        }
    }
    if (locked)
        vs_rw_read_unlock(VS_RW_TREE);
    for (int i = 0; i < n_back; i++)
        bring_back(back[i], true);
}

#ifdef VS_DEBUG
/* touch.c's probe of the page index for a, which found b, against the tree. */
void vs_tier_check_probe(uint64_t a, const struct buffer *b)
{
    VS_ASSERT(b == NULL || b == find_holding(a) || a - b->base >= b->span);
    VS_ASSERT(b != NULL || find_holding(a) == NULL);
}
#endif

void vs_tier_touch_all(uint64_t now)
{
    if (atomic_load_explicit(&vs_tier_buffers, memory_order_relaxed) == 0)
        return;
    vs_tier_submitted(now);
    /* O(1): every buffer's effective last touch is now at least the epoch */
    uint64_t epoch = atomic_load_explicit(&touch_epoch, memory_order_relaxed);
    while (now > epoch && !atomic_compare_exchange_weak_explicit(
                              &touch_epoch, &epoch, now, memory_order_relaxed,
                              memory_order_relaxed))
        ;
    /* a graph may reach even what the program handed over */
    if (atomic_load_explicit(&vs_pageable_total, memory_order_relaxed) !=
        atomic_load_explicit(&vs_pageable_reachable, memory_order_relaxed))
        restore_pageable(true);
}

/* ---- asked for: the public API and the control socket ------------------------------ */

/* -ENOTSUP: a device allocation vramshim knows but does not back (smaller
 * than a granule, stream-ordered, managed, pitched, or made with offload
 * off); -ENOENT: no allocation at all. */
static int unmovable_or_unknown(uint64_t p)
{
    struct vs_alloc_info info;
    return vs_registry_find(p, &info) && !vs_kind_is_host(info.kind) ? -ENOTSUP : -ENOENT;
}

int vs_tier_offload(uint64_t p)
{
    move_lock_take(true);
    struct buffer *b = claim_at(p, true);
    int rc = -ENOENT;
    if (b && atomic_load(&b->shared)) {
        rc = -EBUSY; /* another process may be using it */
    } else if (b) {
        /* the program promises not to touch it until a prefetch or a
         * touch vramshim sees: its chunks may go pageable */
        if (!atomic_exchange(&b->handed_over, true) && b->n_pageable)
            atomic_fetch_sub(&vs_pageable_reachable, b->n_pageable);
        relist(b);
        buffer_out(b, UINT64_MAX);
        rc = has_resident(b) ? -ENOMEM : 0;
    }
    if (b)
        unclaim(b);
    move_lock_give();
    return rc == -ENOENT ? unmovable_or_unknown(p) : rc;
}

int vs_tier_prefetch(uint64_t p)
{
    move_lock_take(true);
    struct buffer *b = claim_at(p, true);
    int rc = -ENOENT;
    if (b) { /* asked for by name: any colder buffer may make way */
        rc = bring_back_locked(b, false) ? 0 : -ENOMEM;
        unclaim(b);
    }
    move_lock_give();
    return rc == -ENOENT ? unmovable_or_unknown(p) : rc;
}

/* ---- sharing with another process ------------------------------------------------- */

/* A backed buffer is VMM memory, which the driver's legacy IPC refuses; the
 * program asked to share it, so it is brought back whole, marked never to
 * move again, and described for ipc.c, which hands out a handle that names
 * this process and a token. The importer asks this process's control
 * socket (vs_tier_export) for the chunks' memory as file descriptors. */
CUresult vs_tier_share(uint64_t dptr, const char *call, struct vs_share *out)
{
    move_lock_take(true);
    struct buffer *b = claim_at(dptr, true);
    CUresult rc = CUDA_ERROR_NOT_FOUND;
    if (b && !atomic_load(&b->shared) && !bring_back_locked(b, false)) {
        vs_warn("%s: the buffer at 0x%llx cannot come back to the device "
                "to be shared (CUDA_ERROR_OUT_OF_MEMORY)", call, (unsigned long long)b->base);
        rc = CUDA_ERROR_OUT_OF_MEMORY;
    } else if (b) {
        /* the token is all that keeps another process of ours from a
         * buffer it was not handed: 64 bits from the kernel's generator */
        uint64_t token;
        if (!atomic_load(&b->shared) &&
            getrandom(&token, sizeof token, GRND_NONBLOCK) != (ssize_t)sizeof token) {
            vs_warn("%s: no random token for 0x%llx (%s); not shared", call,
                    (unsigned long long)b->base, strerror(errno));
            rc = CUDA_ERROR_OPERATING_SYSTEM;
        } else {
            if (!atomic_load(&b->shared)) {
                b->share_token = token;
                atomic_store(&b->shared, true);
                relist(b); /* never a victim again */
            }
            *out = (struct vs_share){.base = b->base, .size = b->size, .span = b->span,
                                     .gran = b->gran, .chunk = b->gran * VS_CHUNK_GRANULES,
                                     .n_chunks = b->n_chunks, .dev = b->dev,
                                     .token = b->share_token};
            rc = CUDA_SUCCESS;
        }
    }
    if (b)
        unclaim(b);
    move_lock_give();
    return rc;
}

int vs_tier_export(uint64_t base, uint64_t token, int *fds, uint32_t cap, struct vs_share *out)
{
    move_lock_take(false);
    struct buffer *b = claim_at(base, false);
    int rc = 0;
    if (b == NULL || !atomic_load(&b->shared) || !vs_equal_ct(b->share_token, token))
        rc = -ENOENT;
    else if (b->n_chunks > cap)
        rc = -E2BIG;
    for (uint32_t i = 0; rc == 0 && i < b->n_chunks; i++) {
        int fd = -1;
        CUresult cr = ops->export_chunk(b, &b->chunk[i], &fd);
        if (cr != CUDA_SUCCESS) {
            vs_warn("sharing 0x%llx: the driver cannot export its memory (%d)",
                    (unsigned long long)base, (int)cr);
            while (i-- > 0)
                close(fds[i]);
            rc = -EIO;
            break;
        }
        fds[i] = fd;
    }
    if (rc == 0) {
        *out = (struct vs_share){.base = b->base, .size = b->size, .span = b->span,
                                 .gran = b->gran, .chunk = b->gran * VS_CHUNK_GRANULES,
                                 .n_chunks = b->n_chunks, .dev = b->dev, .token = token};
        rc = (int)b->n_chunks;
    }
    if (b)
        unclaim(b);
    move_lock_give();
    return rc;
}

/* vramshim's own pins yield to the program's: free the staging buffers,
 * then move pinned chunks back to the device where they fit, or to
 * pageable memory where that is safe, until `bytes` of the pin budget are
 * free again. Returns the bytes freed. */
uint64_t vs_tier_yield_pins(uint64_t bytes)
{
    uint64_t freed = ops->release_staging();
    if (freed >= bytes || vs_limits_offload() == VS_OFFLOAD_OFF)
        return freed;
    /* one buffer per turn of move_lock: a long yield does not hold up the
     * program's other threads; the buffers it did not reach stay first */
    uint32_t pass = atomic_fetch_add(&pass_no, 1) + 1;
    for (;;) {
        move_lock_take(true);
        struct buffer *b =
            freed < bytes ? PASS_NEXT(&pinned_list, pinned_link, visited_pinned, pass) : NULL;
        if (b && fence_begin(b)) {
            for (uint32_t k = 0; k < b->n_chunks && freed < bytes && !atomic_load(&b->dying); k++) {
                struct chunk *c = &b->chunk[k];
                if (c->where != CHUNK_PINNED)
                    continue;
                if (ops->pinned_to_device(b, c) == CUDA_SUCCESS ||
                    (may_go_pageable(b) && ops->to_pageable(b, c) == CUDA_SUCCESS))
                    freed += c->counted;
            }
            fence_end(b);
        }
        move_lock_give();
        if (b == NULL)
            break;
        unclaim(b);
    }
    return freed;
}

CUresult vs_tier_set_access(uint64_t ptr, uint64_t size, const CUmemAccessDesc *desc,
                            size_t count)
{
    if (desc == NULL || count == 0 || size == 0)
        return CUDA_ERROR_INVALID_VALUE;
    uint32_t named = 0, rw = 0, ro = 0;
    for (size_t i = 0; i < count; i++) {
        const CUmemAccessDesc *d = &desc[i];
        if (d->flags != CU_MEM_ACCESS_FLAGS_PROT_NONE &&
            d->flags != CU_MEM_ACCESS_FLAGS_PROT_READ &&
            d->flags != CU_MEM_ACCESS_FLAGS_PROT_READWRITE)
            return CUDA_ERROR_INVALID_VALUE;
        if (d->location.type != CU_MEM_LOCATION_TYPE_DEVICE)
            continue; /* host access to device memory: vramshim's own choice per chunk */
        if (d->location.id < 0 || d->location.id >= VS_MAX_DEVICES)
            return CUDA_ERROR_INVALID_DEVICE;
        uint32_t bit = 1u << d->location.id;
        named |= bit;
        rw = (rw & ~bit) | (d->flags == CU_MEM_ACCESS_FLAGS_PROT_READWRITE ? bit : 0);
        ro = (ro & ~bit) | (d->flags == CU_MEM_ACCESS_FLAGS_PROT_READ ? bit : 0);
    }
    /* under move_lock, as a peer grant (vs_tier_refresh_access): no move
     * is between its unmap and its new mapping */
    move_lock_take(true);
    struct buffer *b = claim_at(ptr, true);
    if (b == NULL) {
        move_lock_give();
        return CUDA_ERROR_NOT_FOUND;
    }
    if (ptr + size > b->base + b->span)
        vs_info("cuMemSetAccess: 0x%llx+%llu runs past the buffer at 0x%llx; "
                "applied to the whole buffer", (unsigned long long)ptr,
                (unsigned long long)size, (unsigned long long)b->base);
    uint32_t keep = ~named;
    atomic_store(&b->app_rw, (atomic_load(&b->app_rw) & keep) | rw);
    atomic_store(&b->app_ro, (atomic_load(&b->app_ro) & keep) | ro);
    atomic_fetch_or(&b->app_named, named);
    if (ops->refresh_access)
        ops->refresh_access(b);
    unclaim(b);
    move_lock_give();
    return CUDA_SUCCESS;
}

CUresult vs_tier_set_sync_memops(uint64_t ptr, bool on)
{
    /* under move_lock, as cuMemSetAccess: no move is between its unmap and
     * its new mapping, and every later mapping applies the new setting */
    move_lock_take(true);
    struct buffer *b = claim_at(ptr, true);
    if (b == NULL) {
        move_lock_give();
        return CUDA_ERROR_NOT_FOUND;
    }
    atomic_store(&b->sync_memops, on ? VS_SYNC_MEMOPS_ON : VS_SYNC_MEMOPS_OFF);
    if (ops->refresh_access)
        ops->refresh_access(b);
    unclaim(b);
    move_lock_give();
    return CUDA_SUCCESS;
}

bool vs_tier_get_access(uint64_t ptr, const CUmemLocation *location, unsigned long long *flags)
{
    struct buffer *b = claim_at(ptr, true);
    if (b == NULL)
        return false;
    unsigned long long f = CU_MEM_ACCESS_FLAGS_PROT_NONE;
    int id = location->id;
    if (location->type == CU_MEM_LOCATION_TYPE_DEVICE && id >= 0 && id < VS_MAX_DEVICES) {
        uint32_t bit = 1u << id;
        if (id == b->dev)
            f = CU_MEM_ACCESS_FLAGS_PROT_READWRITE;
        else if (atomic_load(&b->app_named) & bit)
            f = atomic_load(&b->app_rw) & bit   ? CU_MEM_ACCESS_FLAGS_PROT_READWRITE
                : atomic_load(&b->app_ro) & bit ? CU_MEM_ACCESS_FLAGS_PROT_READ
                                                : CU_MEM_ACCESS_FLAGS_PROT_NONE;
        else if (vs_reach_mask(b->dev) & bit)
            f = CU_MEM_ACCESS_FLAGS_PROT_READWRITE;
    }
    *flags = f;
    unclaim(b);
    return true;
}

void vs_tier_refresh_access(int dev)
{
    if (ops->refresh_access == NULL)
        return;
    /* under move_lock: no move is between its unmap and its new mapping,
     * and every later one maps with the new access (chunk.c) */
    move_lock_take(true);
    vs_rw_read_lock(VS_RW_TREE);
    struct buffer *b;
    RB_FOREACH(b, buffer_tree, &buffers)
        if (b->dev == dev)
            ops->refresh_access(b);
    vs_rw_read_unlock(VS_RW_TREE);
    move_lock_give();
}

uint64_t vs_tier_evict(int owner, uint64_t bytes, bool idle_only, _Atomic uint64_t *progress)
{
    /* a request: it does not chase what the program brings back meanwhile */
    return make_room(-1, owner, bytes, idle_only, false, ops->now(), progress);
}

/* relief (control_relief.c): another process on the device asks for room */
uint64_t vs_tier_give(int dev, uint64_t bytes)
{
    uint64_t trimmed = ops->trim ? ops->trim(dev) : 0;
    if (trimmed >= bytes)
        return trimmed;
    if (vs_limits_offload() == VS_OFFLOAD_OFF ||
        atomic_load_explicit(&vs_tier_buffers, memory_order_relaxed) == 0)
        return trimmed;
    bytes -= trimmed;
    /* a request, one victim at a time (the program's threads go between),
     * not chasing what the program brings back meanwhile */
    return trimmed + make_room(dev, -1, bytes, true, false, ops->now(), NULL);
}

uint64_t vs_tier_last_submit_ns(void)
{
    return atomic_load_explicit(&vs_last_submit_ns, memory_order_relaxed);
}

/* ---- invariants ------------------------------------------------------------------ */

#define BROKEN(...)                                   \
    do {                                              \
        vs_error("offload invariant: " __VA_ARGS__);  \
        ok = false;                                   \
        goto out;                                     \
    } while (0)

int vs_tier_check(void)
{
    bool ok = true;
    uint32_t n_buffers = 0, pageable = 0, reachable = 0;
    uint32_t on[5] = {0}; /* buffers that say they are in a tree, on each list */
    uint64_t distinct_pages = 0, prev_page = UINT64_MAX;
    move_lock_take(false);
    vs_rw_read_lock(VS_RW_TREE);
    pthread_mutex_lock(&lru_lock);
    struct buffer *b;
    RB_FOREACH(b, buffer_tree, &buffers) {
        uint32_t off = 0, pg = 0;
        uint64_t counted = 0;
        for (uint32_t i = 0; i < b->n_chunks; i++) {
            const struct chunk *c = &b->chunk[i];
            off += c->where != CHUNK_DEVICE;
            pg += c->where == CHUNK_PAGEABLE;
            counted += c->counted;
            if (c->offset + c->size > b->span)
                BROKEN("buffer 0x%llx: chunk %u ends past the span",
                       (unsigned long long)b->base, i);
        }
        if (off != atomic_load(&b->n_off) || pg != b->n_pageable)
            BROKEN("buffer 0x%llx: %u chunks off and %u pageable, counted %u and %u",
                   (unsigned long long)b->base, off, pg, atomic_load(&b->n_off), b->n_pageable);
        if (counted != b->size)
            BROKEN("buffer 0x%llx: chunks count %llu bytes of %llu", (unsigned long long)b->base,
                   (unsigned long long)counted, (unsigned long long)b->size);
        if (atomic_load(&b->shared) && off)
            BROKEN("shared buffer 0x%llx has chunks off the device", (unsigned long long)b->base);
        if (b->base < atomic_load(&vs_tier_lowest) ||
            b->base + b->span > atomic_load(&vs_tier_highest))
            BROKEN("buffer 0x%llx lies outside [lowest, highest)", (unsigned long long)b->base);
        for (uint64_t p = first_page(b); vs_tier_pages_whole && p <= last_page(b); p++) {
            const struct buffer *o = vs_page_index_get(&vs_tier_pages, p);
            if (o == NULL || o->base >> VS_PAGE_SHIFT > p || last_page(o) < p ||
                RB_FIND(buffer_tree, &buffers, (struct buffer *)o) != o)
                BROKEN("page 0x%llx of buffer 0x%llx: the index names %s",
                       (unsigned long long)p, (unsigned long long)b->base,
                       o ? "a buffer not on it" : "nothing");
            distinct_pages += p != prev_page;
            prev_page = p;
        }
        if (b->lists != lists_wanted(b) || !(b->lists & LISTED))
            BROKEN("buffer 0x%llx is on lists 0x%x, should be on 0x%x",
                   (unsigned long long)b->base, b->lists, lists_wanted(b));
        on[0] += !!(b->lists & ON_LRU);
        on[1] += !!(b->lists & ON_PINNED);
        on[2] += !!(b->lists & ON_PAGEABLE);
        on[3] += !!(b->lists & ON_HANDED);
        n_buffers++;
        pageable += pg;
        reachable += atomic_load(&b->handed_over) ? 0 : pg;
    }
    if (vs_tier_pages_whole && distinct_pages != vs_tier_pages.used)
        BROKEN("%llu pages in the index, %llu covered by buffers",
               (unsigned long long)vs_tier_pages.used, (unsigned long long)distinct_pages);
    if (n_buffers != atomic_load(&vs_tier_buffers))
        BROKEN("%u buffers in the tree, %u counted", n_buffers, atomic_load(&vs_tier_buffers));
    if (pageable != atomic_load(&vs_pageable_total) ||
        reachable != atomic_load(&vs_pageable_reachable))
        BROKEN("%u pageable chunks (%u reachable), counted %u (%u)", pageable, reachable,
               atomic_load(&vs_pageable_total), atomic_load(&vs_pageable_reachable));
    uint32_t in[5] = {0};
    for (unsigned d = 0; d < VS_MAX_DEVICES; d++)
        for (unsigned o = 0; o < VS_MAX_OWNERS; o++) {
            bool bit = lru_owners[d][o / 64] >> (o % 64) & 1;
            if (bit == RB_EMPTY(&lru[d][o]))
                BROKEN("the victim tree of device %u, owner %u is %sempty, marked otherwise", d,
                       o, bit ? "" : "not ");
            RB_FOREACH(b, lru_tree, &lru[d][o]) {
                if (dev_slot(b->dev) != d || owner_slot(b->owner) != o || !(b->lists & ON_LRU))
                    BROKEN("buffer 0x%llx is in the wrong victim tree",
                           (unsigned long long)b->base);
                in[0]++;
            }
        }
    TAILQ_FOREACH(b, &pinned_list, pinned_link)
        in[1]++;
    TAILQ_FOREACH(b, &pageable_list, pageable_link)
        in[2]++;
    TAILQ_FOREACH(b, &handed_list, pageable_link)
        in[3]++;
    if (memcmp(in, on, sizeof in))
        BROKEN("%u/%u/%u/%u buffers in the victim trees and the pinned, pageable and handed "
               "lists; %u/%u/%u/%u say so", in[0], in[1], in[2], in[3], on[0], on[1], on[2],
               on[3]);
out:
    pthread_mutex_unlock(&lru_lock);
    vs_rw_read_unlock(VS_RW_TREE);
    move_lock_give();
    return ok ? 0 : -1;
}

/* A forked child owns none of the parent's device memory. */
void vs_tier_atfork_child(void)
{
    pthread_mutex_init(&spare_lock, NULL);
    pthread_mutex_init(&move_lock, NULL);
    tree_changed(); /* the caches' buffers were the parent's */
    pthread_mutex_init(&drained_lock, NULL);
    pthread_cond_init(&drained, NULL);
    atomic_store(&program_waiting, 0);
    pthread_cond_init(&unclaimed, NULL);
    RB_INIT(&buffers); /* the records leak: they describe the parent's memory */
    vs_page_index_clear(&vs_tier_pages);
    vs_tier_pages_whole = true;
    atomic_store(&vs_tier_buffers, 0);
    atomic_store(&vs_tier_lowest, UINT64_MAX);
    atomic_store(&vs_tier_highest, 0);
    atomic_store(&vs_last_submit_ns, 0);
    atomic_store(&touch_epoch, 0);
    pthread_mutex_init(&lru_lock, NULL);
    memset(lru, 0, sizeof lru);
    memset(lru_owners, 0, sizeof lru_owners);
    TAILQ_INIT(&pinned_list);
    TAILQ_INIT(&pageable_list);
    TAILQ_INIT(&handed_list);
}
