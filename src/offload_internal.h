/*
 * offload_internal.h: what the files of the offload layer share, and
 * nothing outside the layer includes (offload.h is the layer's face).
 *
 *   gate.c      the move gate's lock and the pageable counts it guards
 *   tier.c      the policy: which buffers move, when, and where
 *   chunk.c     the mechanism: moving one chunk, backing a buffer, fencing
 *   hostpool.c  page-locked host handles for pinned chunks
 *   staging.c   copy threads and staging buffers for pageable chunks
 *   touch.c     which buffers a launch names
 *   offload.c   the layer's set-up, fork handling and invariant check
 *
 * tier.c reaches chunk.c, the host pool, the staging threads and the clock
 * only through struct vs_tier_ops, so that tests/unit/test_tier.c can
 * drive the policy against fake movers and a fake clock (as jemalloc's hpa
 * hooks do). Calls go one way: tier -> (ops) chunk -> hostpool, staging ->
 * gate; touch -> tier.
 */
#ifndef VS_OFFLOAD_INTERNAL_H
#define VS_OFFLOAD_INTERNAL_H

#include "offload.h"

#ifndef __unused
#define __unused __attribute__((unused))
#endif
#include <bsd/sys/queue.h>
#include <bsd/sys/tree.h>

/* ---- hostpool.c: page-locked host handles for offloaded chunks -------- */
#define VS_HOST_CLASSES 6 /* handles of 1, 2, 4 ... 32 granules */
struct vs_host_block { /* one handle per set bit of the size in granules */
    CUmemGenericAllocationHandle h[VS_HOST_CLASSES];
    uint64_t gran;
    uint8_t mask;
};
CUresult vs_hostpool_take(uint64_t size, uint64_t gran, struct vs_host_block *out);
void vs_hostpool_give(struct vs_host_block *b);
/* Map the block's handles one after another at va, largest first. */
CUresult vs_hostpool_map(const struct vs_host_block *b, uint64_t va);
uint64_t vs_hostpool_idle_bytes(void);
/* Release idle handles until bytes are freed; returns the bytes freed. */
uint64_t vs_hostpool_trim(uint64_t bytes);
/* The process is under pressure: create full-chunk handles of this
 * granularity ahead of need, on the pool's own thread, with ctx current. */
void vs_hostpool_ahead(uint64_t gran, CUcontext ctx);
void vs_hostpool_atfork_child(void);

/* ---- staging.c: pageable <-> device copies through staging slots ------ */
/* Copy size bytes between dev_va (in ctx) and pageable host memory on the
 * copy threads, synchronously (the program's copies: vs_fastcopy). */
CUresult vs_staging_copy(CUcontext ctx, uint64_t dev_va, void *host, uint64_t size,
                         bool to_device);
/* Free the staging slots the device is done with, unless a copy is
 * running; returns bytes freed. */
uint64_t vs_staging_release(void);
void vs_staging_atfork_child(void);

/* ---- gate.c: the move gate and the tree's lock -------------------------- */
/* The locks' read side is in offload.h (the gate's fast path needs it). */
void vs_rw_write_lock(int lock);
void vs_rw_write_unlock(int lock);
void vs_rw_atfork_child(void);
void vs_gate_init(void);
void vs_gate_write_lock(void);
void vs_gate_write_unlock(void);
/* Every pageable chunk, handed over or not. */
extern _Atomic uint32_t vs_pageable_total;

/* ---- fence.c: waiting for queued work, with a deadline ------------------ */
#define VS_FENCE_MAX_CTX 16
/* Wait, at most VRAMSHIM_FENCE_MS, until every context of ctxs (NULL: the
 * calling thread's) has finished its queued work. CUDA_SUCCESS; or
 * CUDA_ERROR_NOT_READY (not within the deadline, or an earlier wait is
 * still under way), CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED (a capture is
 * under way: no synchronise), or the driver's error: nothing may move. */
CUresult vs_fence_wait(const CUcontext *ctxs, int n);
/* Around each context synchronise of vramshim's own: no capture may begin
 * meanwhile. vs_sync_enter(false): false, and nothing entered, while a
 * capture is under way; (true): waits for captures to end, at most
 * VRAMSHIM_FENCE_MS, then enters in any case (true if none was left). */
bool vs_sync_enter(bool wait);
void vs_sync_exit(void);
void vs_fence_atfork_child(void);

/* ---- reach.c: who else reaches a device's memory ------------------------ */
/* Devices (a bit each) that may reach mem_dev's memory besides itself. */
uint32_t vs_reach_mask(int mem_dev);
/* Devices that could once and may no longer. */
uint32_t vs_reach_revoked(int mem_dev);
/* The contexts that may reach mem_dev's memory (up to cap); their number. */
int vs_reach_contexts(int mem_dev, CUcontext *out, int cap);
void vs_reach_atfork_child(void);

/* ---- the records: a backed buffer and its chunks ------------------------ */
/* Where a chunk's bytes are. */
enum chunk_where {
    CHUNK_DEVICE,  /* a device handle mapped at its address */
    CHUNK_PINNED,  /* host handles mapped at its address: still reachable */
    CHUNK_PAGEABLE /* ordinary memory; the address is unmapped */
};

struct chunk {
    CUmemGenericAllocationHandle dev_handle; /* while on the device */
    struct vs_host_block host;               /* while pinned */
    void *pageable;                          /* while pageable */
    uint64_t offset, size; /* mapped bytes, whole granules */
    uint64_t counted;      /* the program's bytes among them */
    uint8_t where;
};

enum { VS_SYNC_MEMOPS_UNSET, VS_SYNC_MEMOPS_OFF, VS_SYNC_MEMOPS_ON };

struct buffer {
    RB_ENTRY(buffer) rb;
    /* tier.c's victim order and lists (under its lru_lock): while the
     * buffer may move, it sits in its (device, owner) tree ordered by
     * lru_key, the last touch it had when last placed there (touches only
     * stamp last_touch_ns; the order catches up when a victim is chosen);
     * with pinned chunks on the pinned list; with pageable chunks on the
     * pageable or the handed-over list. `lists` says which. */
    RB_ENTRY(buffer) lru;
    uint64_t lru_key;
    TAILQ_ENTRY(buffer) pinned_link, pageable_link;
    uint8_t lists;
    uint64_t base, size, span, gran;
    int dev, owner;
    CUcontext ctx;
    _Atomic uint64_t last_touch_ns;
    _Atomic uint32_t n_off;   /* chunks not on the device */
    uint32_t n_pageable;      /* of them, pageable (under move_lock) */
    _Atomic bool handed_over; /* vramshim_offload: the program will not touch it */
    _Atomic bool shared;      /* another process may map it: never moves again */
    uint64_t share_token;     /* what an importer must name (under move_lock) */
    /* The program's own cuMemSetAccess on the buffer, a bit per device:
     * those it named, and which of them it gave read-write or read-only
     * access (none: PROT_NONE). Every mapping of a chunk applies it. */
    _Atomic uint32_t app_named, app_rw, app_ro;
    /* The program's CU_POINTER_ATTRIBUTE_SYNC_MEMOPS on the buffer
     * (cuPointerSetAttribute): VS_SYNC_MEMOPS_* below. The driver keeps it
     * per allocation, and the buffer is many (its chunks, their backings
     * after each move), so every mapping of a chunk applies it. */
    _Atomic uint8_t sync_memops;
    /* Who may touch the record (tier.c, under lru_lock): `busy` counts the
     * moves and requests that hold it; a free takes the buffer out of the
     * tree, sets `dying` (moves stop between chunks) and waits until busy is
     * 0, after which nothing else ever reaches it. */
    uint32_t busy;
    uint32_t visited_pinned, visited_pageable; /* the passes over the lists that took it */
    _Atomic bool dying;
    bool fixed;          /* no registry record: never moves */
    uint32_t n_chunks;
    struct chunk chunk[];
};

/* ---- the seam between policy and mechanism ------------------------------ */
/* A mover either moves the chunk whole, updating its `where`, the buffer's
 * n_off and n_pageable (and the pageable counts), the budget and the
 * registry, or leaves all of them as they were and returns the error. */
struct vs_tier_ops {
    uint64_t (*now)(void); /* the clock, in ns */
    /* Give back what memory pools and graph memory on dev (-1: all)
     * reserve beyond their use, before anyone's buffer moves; returns the
     * bytes given back. NULL: nothing to trim. */
    uint64_t (*trim)(int dev);
    /* The device's VMM granularity; UINT64_MAX: no VMM there. */
    uint64_t (*granularity)(int dev);
    /* Reserve b->span bytes of address space at b->base and map device
     * memory for every chunk (b's sizes and chunk offsets are set). */
    CUresult (*back)(struct buffer *b);
    /* Give back everything that backs b, and its address range. */
    void (*unback)(struct buffer *b);
    /* Nothing submitted so far still runs against b; no new work can start
     * until fence_end. false: the fence failed, nothing may move. */
    bool (*fence_begin)(struct buffer *b);
    void (*fence_end)(struct buffer *b);
    /* fence_begin without waiting for the device, for chunks nothing
     * submitted can be using (pageable ones: their address is unmapped);
     * closed with fence_end. false: nothing may move. NULL: not offered. */
    bool (*hold_begin)(struct buffer *b);
    /* Before a free: wait, without a deadline as cuMemFree does, until no
     * submitted work can reach b. NULL: fence_begin and fence_end. */
    void (*drain)(struct buffer *b);
    CUresult (*device_to_pinned)(struct buffer *b, struct chunk *c);
    CUresult (*pinned_to_device)(struct buffer *b, struct chunk *c);
    CUresult (*to_pageable)(struct buffer *b, struct chunk *c);
    CUresult (*from_pageable)(struct buffer *b, struct chunk *c, bool pinned_too);
    /* A chunk's device memory as a file descriptor for another process. */
    CUresult (*export_chunk)(struct buffer *b, struct chunk *c, int *fd);
    /* Under pressure: have host memory ready for the next moves. */
    void (*host_ahead)(uint64_t gran, CUcontext ctx);
    /* Give back vramshim's staging buffers; returns the bytes freed. */
    uint64_t (*release_staging)(void);
    /* Give every device and context that may reach b's device (reach.c)
     * access to b's mapped chunks, and take it from those that no longer
     * may. Caller holds move_lock. */
    void (*refresh_access)(struct buffer *b);
};

/* ---- tier.c ---------------------------------------------------------------- */
/* Read by every launch (touch.c's fast path), written rarely: every backed
 * buffer lies in [vs_tier_lowest, vs_tier_highest); vs_tree_gen is bumped
 * when a buffer leaves the tree and when a move begins or ends. */
extern _Atomic uint64_t vs_tier_lowest, vs_tier_highest, vs_tree_gen;
/* When the program last submitted work, to the millisecond: it only decides
 * whether the process counts as idle (safety is the gate's). */
extern _Atomic uint64_t vs_last_submit_ns;
static inline void vs_tier_submitted(uint64_t now)
{
    /* threads launching at once rarely write the shared line */
    if (now - atomic_load_explicit(&vs_last_submit_ns, memory_order_relaxed) > 1000000)
        atomic_store_explicit(&vs_last_submit_ns, now, memory_order_relaxed);
}
/* Each thread's recent look-ups (touch.c and tier.c fill them),
 * by the 2 MiB page of the address: buffers found resident and not handed
 * over, and the stamp this thread last gave each. Good only while
 * vs_tree_gen holds the value `gen`. While the coarse clock stays on one
 * tick a hit touches no buffer node (and a copy's touch, which takes no
 * read side for it, no lock). None for the shared thread slot. */
#define VS_TOUCH_CACHE 32
struct vs_touch_entry {
    uint64_t base, span; /* span 0: empty */
    struct buffer *b;
    uint64_t stamped;
};
struct vs_touch_cache {
    uint64_t gen; /* 0: none */
    struct vs_touch_entry e[VS_TOUCH_CACHE];
};
/* The entry of a's 2 MiB page: e[(a >> 21) % VS_TOUCH_CACHE], its byte
 * offset taken from a in two instructions (an entry is 32 bytes). */
_Static_assert(sizeof(struct vs_touch_entry) == 32 && VS_TOUCH_CACHE == 32,
               "vs_touch_at's shift and mask");
#define vs_touch_at(tc, a)                                                    \
    ((struct vs_touch_entry *)((char *)(tc)->e + (((a) >> 16) & 0x3e0)))
extern struct vs_touch_cache vs_touch_caches[VS_THREAD_SHARED];
/* Start the policy with these movers (chunk.c's in the library, fakes in
 * the unit tests). */
void vs_tier_init(const struct vs_tier_ops *ops);
/* Peer access to dev's memory changed: apply it to every backed buffer
 * there (reach.c). */
void vs_tier_refresh_access(int dev);
/* false when a pageable chunk could not come back (logged). */
bool vs_tier_restore_pageable(void);
/* 0, or -1 after logging the first broken invariant. */
int vs_tier_check(void);
/* For the unit tests: frees that waited for a move of their buffer, and
 * program calls waiting on vramshim's work now. */
extern _Atomic uint64_t vs_tier_free_waits;
uint32_t vs_tier_waiting(void);
void vs_tier_atfork_child(void);

/* ---- chunk.c: the real movers ----------------------------------------------- */
extern const struct vs_tier_ops vs_chunk_ops;
void vs_chunk_atfork_child(void);

/* A buffer the program is about to use: its last touch is now, written
 * only if that changes it (threads launching at once rarely write its
 * line). */
static inline void vs_buffer_touch(struct buffer *b, uint64_t now)
{
    if (atomic_load_explicit(&b->last_touch_ns, memory_order_relaxed) != now)
        atomic_store_explicit(&b->last_touch_ns, now, memory_order_relaxed);
}
/* The same, and whether the program may use it as it is: false when some
 * of it is not on the device, or the program handed it over. */
static inline bool vs_buffer_stamp(struct buffer *b, uint64_t now)
{
    vs_buffer_touch(b, now);
    return !atomic_load_explicit(&b->n_off, memory_order_relaxed) &&
           !atomic_load_explicit(&b->handed_over, memory_order_relaxed);
}
/* The same buffers by 2 MiB page (page_index.c): written by tier.c under
 * the tree's write side, probed by touch.c under its read side. Not to be
 * used while vs_tier_pages_whole is false (a bigger table could not be
 * had: look-ups walk the tree). */
extern struct vs_page_index vs_tier_pages;
extern bool vs_tier_pages_whole;
#ifdef VS_DEBUG
void vs_tier_check_probe(uint64_t a, const struct buffer *b);
#endif

/* ---- touch.c ----------------------------------------------------------------- */
void vs_touch_atfork_child(void);

#endif
