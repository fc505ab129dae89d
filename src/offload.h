/*
 * offload.h: the offload layer's interface, for the hooks, the control
 * socket and init: buffers backed by virtual memory management that move
 * between the device, pinned host memory and pageable memory while their
 * addresses stay valid (tier.c decides, chunk.c moves), the move gate every
 * submission passes, and touch tracking of launches.
 *
 * May include: driver.h, core.h. What the layer's files share among
 * themselves (the buffer and chunk records, the movers, the host pool, the
 * staging threads, the gate's lock) is in offload_internal.h, which no file
 * outside the layer includes.
 */
#ifndef VS_OFFLOAD_H
#define VS_OFFLOAD_H

#include "driver.h"

#include <pthread.h>

/* ---- offload.c: the layer as a whole ----------------------------------- */
/* Set up the layer with the real movers (chunk.c), once, from vs_init. */
void vs_offload_init(void);
/* A forked child owns none of the parent's device memory. */
void vs_offload_atfork_child(void);
/* Check the layer's invariants (every buffer's chunk counts against its
 * chunks, the pageable counts against the buffers): 0, or -1 after logging
 * the first that does not hold. Takes the layer's locks: call it where no
 * move can be under way in the calling thread. */
int vs_offload_check(void);

/* ---- the fence (fence.c) and peer access (reach.c) --------------------- */
/* From vs_init: VRAMSHIM_FENCE_MS, the longest a move waits inside the
 * program's call for queued work to finish. */
void vs_fence_setup(uint32_t fence_ms);
/* The capture hooks: a stream capture begins (before the driver call) or
 * ends (or failed to begin). While any is under way no move synchronises. */
void vs_capture_begin(void);
void vs_capture_end(void);
bool vs_capture_active(void); /* any capture under way, process-wide */
/* The peer hooks: by_ctx (on device by_dev) may, or no longer may, reach
 * the memory of device mem_dev; backed buffers there get the access. */
void vs_reach_set(int mem_dev, int by_dev, CUcontext by_ctx, bool on);

/* ---- pool.c: memory pools and graph memory, charged by their reserves --- */
/* A pool the program made (cuMemPoolCreate) on device dev, or -1 for a
 * host or host-NUMA location; one it destroyed; a device's current pool
 * (cuDeviceSetMemPool). */
void vs_pool_created(CUmemoryPool pool, int dev);
void vs_pool_destroyed(CUmemoryPool pool);
void vs_pool_set_current(int dev, CUmemoryPool pool);
/* A pool imported from another process: the exporter's, never charged. */
void vs_pool_imported(CUmemoryPool pool);
/* A stream-ordered allocation of `bytes` from `pool` (NULL: the current
 * pool of dev): fills u (u->dev: where the pool lives, -1 on the host) and
 * returns how much its reserve may have to grow, from the figures last
 * read. The hook admits that much, calls the driver, then vs_pool_after
 * reads the reserve back and charges it exactly. */
struct vs_pool_use {
    void *rec;
    int dev;
};
uint64_t vs_pool_admit(CUmemoryPool pool, int dev, uint64_t bytes, struct vs_pool_use *u);
void vs_pool_after(struct vs_pool_use *u, bool ok, uint64_t bytes);
/* Read reserves again where they may have shrunk (a synchronise, a trim,
 * a threshold set): every pool, or only `pool`. One relaxed load while no
 * reserve was ever charged. */
void vs_pool_refresh(CUmemoryPool pool);
/* Trim every pool and the graph memory on dev (-1: every device) down to
 * what they use; returns the bytes of reserve given back. */
uint64_t vs_pool_trim(int dev);
/* A limit was lowered at run time: devices now over theirs trim first. */
void vs_pool_fit_limits(void);
/* Graph memory: a memory node was made for dev (from then on its graph
 * memory is read); read it again (after an instantiation, upload, launch,
 * trim). One relaxed load while no memory node was made. */
void vs_graph_mem_seen(int dev);
void vs_graph_mem_refresh(void);
/* Graph execs, admitted before they run. At instantiation, what the
 * graph's allocation nodes need on each device is recorded (each node
 * rounded up to 4 KiB); an exec's memory is bound from its first launch or
 * upload until a trim gives it back. Before a launch or upload,
 * vs_graph_exec_unbound says on which devices the exec is not bound (one
 * relaxed load while no exec has memory nodes); vs_graph_exec_take says
 * how much dev's graph memory may grow for it, in whole granules, and
 * counts the unused reserve it uses as spoken for (*counted) until
 * vs_graph_exec_untake or vs_graph_exec_ran gives it back; vs_graph_exec_ran
 * marks the exec bound where it ran and reads graph memory again. */
void vs_graph_exec_made(CUgraphExec exec, CUgraph graph);
void vs_graph_exec_gone(CUgraphExec exec);
uint32_t vs_graph_exec_unbound(CUgraphExec exec);
uint64_t vs_graph_exec_take(CUgraphExec exec, int dev, uint64_t *counted);
void vs_graph_exec_untake(int dev, uint64_t counted);
void vs_graph_exec_ran(CUgraphExec exec, uint32_t devs, const uint64_t *counted, bool ok);
void vs_pool_atfork_child(void);

/* ---- the move gate (gate.c, tier.c) ------------------------------------ */
/* Every launch, copy and memset holds the gate's read side for the length
 * of its driver call; a move holds the write side from its fence to its
 * remap. Before any of them, every pageable chunk that work may reach comes
 * back (its address is unmapped: a kernel reaching it would fault). With no
 * backed buffer the gate costs one relaxed load. */
extern _Atomic uint32_t vs_tier_buffers; /* backed buffers alive */
/* Every chunk that is pageable in a buffer not handed over: while it is not
 * zero, no work may be submitted (vs_gate_enter_slow brings them back
 * first). Raised only under the gate's write side, so it is stable while
 * the read side is held. */
extern _Atomic uint32_t vs_pageable_reachable;
/* Reader-writer locks whose read side writes only the reading thread's
 * slot (gate.c says how). */
#define VS_RW_GATE 0 /* the move gate */
#define VS_RW_TREE 1 /* tier.c's tree of buffers by address */
#define VS_RW_LOCKS 2
struct vs_readers { /* one per thread slot, its own line */
    /* lock l's readers counted in bits 32l to 32l+31 (VS_RW_MARK), so that
     * one store marks both locks */
    _Alignas(64) _Atomic uint64_t marks;
};
#define VS_RW_MARK(lock) (1ULL << (32 * (lock)))
extern struct vs_readers vs_readers[VS_THREAD_SLOTS];
struct vs_rw {
    _Alignas(64) _Atomic uint32_t writer; /* read by every reader: nothing hot beside it */
    pthread_mutex_t writing;              /* held by the writer throughout */
};
extern struct vs_rw vs_rw[VS_RW_LOCKS];
void vs_rw_read_wait(int lock);
/* A slot's own thread writes it with plain stores (it keeps a copy,
 * vs_me.marks); the shared slot's threads add and subtract atomically. */
static inline void vs_rw_mark(unsigned s, uint64_t mark)
{
    if (VS_LIKELY(s != VS_THREAD_SHARED))
        atomic_store(&vs_readers[s].marks, vs_me.marks |= mark);
    else
        atomic_fetch_add(&vs_readers[s].marks, mark);
}
static inline void vs_rw_unmark(unsigned s, uint64_t mark)
{
    if (VS_LIKELY(s != VS_THREAD_SHARED))
        atomic_store_explicit(&vs_readers[s].marks, vs_me.marks &= ~mark, memory_order_release);
    else
        atomic_fetch_sub_explicit(&vs_readers[s].marks, mark, memory_order_release);
}
static inline void vs_rw_read_lock(int lock)
{
    if (vs_me.reading[lock]++ > 0)
        return; /* nested: counted already, and the writer waits for us */
    unsigned s = vs_thread_slot();
    for (;;) {
        vs_rw_mark(s, VS_RW_MARK(lock));
        if (VS_LIKELY(atomic_load(&vs_rw[lock].writer) == 0))
            return;
        vs_rw_unmark(s, VS_RW_MARK(lock));
        vs_rw_read_wait(lock);
    }
}
static inline void vs_rw_read_unlock(int lock)
{
    if (--vs_me.reading[lock] > 0)
        return;
    vs_rw_unmark(vs_me.slot - 1, VS_RW_MARK(lock));
}
/* The gate's read side and the tree's together, in that order, with one
 * mark and one look at the writers' flags when this thread holds neither
 * (a launch that touches its buffers and then submits): true, and slot s's
 * marks are exactly the two, so vs_rw_read_unlock_tree_marked and
 * vs_gate_leave(VS_GATE_MARKED) may let them go with a store each.
 * Otherwise, or when a writer is at either, one at a time as
 * vs_rw_read_lock does: false. */
static inline bool vs_rw_read_lock_both(unsigned s)
{
    const uint64_t both = VS_RW_MARK(VS_RW_GATE) | VS_RW_MARK(VS_RW_TREE);
    if (VS_LIKELY(s != VS_THREAD_SHARED && vs_me.marks == 0)) {
        vs_rw_mark(s, both);
        if (VS_LIKELY((atomic_load(&vs_rw[VS_RW_GATE].writer) |
                       atomic_load(&vs_rw[VS_RW_TREE].writer)) == 0)) {
            vs_me.reading[VS_RW_GATE] = vs_me.reading[VS_RW_TREE] = 1;
            return true;
        }
        vs_rw_unmark(s, both);
    }
    vs_rw_read_lock(VS_RW_GATE);
    vs_rw_read_lock(VS_RW_TREE);
    return false;
}
static inline void vs_rw_read_unlock_tree_marked(unsigned s)
{
    vs_me.reading[VS_RW_TREE] = 0;
    vs_me.marks = VS_RW_MARK(VS_RW_GATE);
    atomic_store_explicit(&vs_readers[s].marks, VS_RW_MARK(VS_RW_GATE), memory_order_release);
}
/* -1: a pageable chunk could not come back; 1: the read side is held. */
int vs_gate_enter_slow(void);
/* 0: no gate needed; 1 (or VS_GATE_MARKED): held; -1: refuse the
 * submission with CUDA_ERROR_OUT_OF_MEMORY, nothing was submitted. */
static inline int vs_gate_enter(void)
{
    if (VS_LIKELY(atomic_load_explicit(&vs_tier_buffers, memory_order_relaxed) == 0))
        return 0;
    vs_rw_read_lock(VS_RW_GATE);
    /* raised only under the write side: stable while we hold the read side */
    if (VS_LIKELY(atomic_load_explicit(&vs_pageable_reachable, memory_order_relaxed) == 0))
        return 1;
    vs_rw_read_unlock(VS_RW_GATE);
    return vs_gate_enter_slow();
}
/* What vs_touch_launch returns when the gate's read side is the only
 * thing its thread's slot holds (vs_rw_read_lock_both's one mark, the
 * tree's let go): one store lets it go. */
#define VS_GATE_MARKED 2
/* Let go of VS_GATE_MARKED, for a caller that knows its thread's slot s
 * (vs_gate_leave reads it from TLS). */
static inline void vs_gate_leave_marked(unsigned s)
{
    vs_me.reading[VS_RW_GATE] = 0;
    vs_me.marks = 0;
    atomic_store_explicit(&vs_readers[s].marks, 0, memory_order_release);
}
static inline void vs_gate_leave(int entered)
{
    if (VS_LIKELY(entered == VS_GATE_MARKED))
        vs_gate_leave_marked(vs_me.slot - 1);
    else if (entered > 0)
        vs_rw_read_unlock(VS_RW_GATE);
}

/* ---- staging.c: the program's large pageable copies -------------------- */
/* The smallest pageable copy staged; UINT64_MAX: off. The copy hooks
 * compare against it and nothing else on their way to the driver. */
extern uint64_t vs_fast_copy_min;
/* From vs_init: VRAMSHIM_FAST_COPY_MIN (0: off), VRAMSHIM_COPY_THREADS (0:
 * half the cores, 2 to 8), VRAMSHIM_STAGING. */
void vs_staging_setup(uint64_t fast_copy_min, uint32_t threads, uint64_t staging_bytes);
#define VS_COPY_TO_DEVICE 1u
#define VS_COPY_SYNC 2u       /* the sync forms: return once the device has it */
#define VS_COPY_PER_THREAD 4u /* the _ptds/_ptsz forms: NULL names the per-thread stream */
/* vs_fastcopy's answer when the driver should copy as if vramshim were not there. */
#define VS_COPY_PASS ((CUresult)0x7fff0001)
/* A program copy of n bytes between device memory at dev and host memory
 * that may be pageable, on stream s: the driver's result, or VS_COPY_PASS
 * (host memory pinned or not all mapped, device range unknown or too short,
 * stream capturing, no staging slot). */
CUresult vs_fastcopy(uint64_t dev, void *host, uint64_t n, CUstream s, unsigned flags);
#define VS_PREFAULT_MIN (64ULL << 20) /* cuMemHostRegister ranges prefaulted */
/* Fault in [p, p+n) on the copy threads before the driver pins it. */
void vs_staging_prefault(void *p, uint64_t n, bool write);

/* ---- touch tracking (tier.c, touch.c) ---------------------------------- */
/* The program is about to use these addresses (kernel parameters: len 1;
 * a copy's range: its length): stamp them, bring offloaded ones back. */
void vs_tier_touch_words(const uint64_t *words, int n, uint64_t len, uint64_t now);
/* A copy or memset names [a, a+n) (and [b, b+n) when b). */
static inline void vs_touch_range(uint64_t a, uint64_t b, size_t n)
{
    if (VS_LIKELY(atomic_load_explicit(&vs_tier_buffers, memory_order_relaxed) == 0))
        return;
    uint64_t words[2] = {a, b};
    vs_tier_touch_words(words, b ? 2 : 1, n ? n : 1, vs_now_ns());
}
/* A graph launch: a graph may reach any buffer. */
void vs_tier_touch_all(uint64_t now);
/* A kernel launch names its buffers in its parameters: count the launch,
 * stamp them, bring offloaded ones back, and enter the gate, whose read
 * side it takes together with the buffer tree's. Returns what
 * vs_gate_enter returns. */
int vs_touch_launch(CUfunction f, void **params, void **extra);
/* The launch is counted too (vs_count_launch), where the thread's slot is
 * at hand. */
static inline int vs_launch_enter(CUfunction f, void **params, void **extra)
{
    if (VS_LIKELY(atomic_load_explicit(&vs_tier_buffers, memory_order_relaxed) == 0)) {
        vs_count_launch();
        return 0;
    }
    return vs_touch_launch(f, params, extra);
}
/* The kernel launch entry points, each with the name of the parameter
 * holding its kernel parameters and of the one holding `extra` (NULL where
 * it has none). Their hooks (hook_launch.c) pass a launch straight to the
 * driver while no buffer is backed, and otherwise hand it, arguments
 * unchanged, to vs_launch_tracked_<name> (touch.c): the touch, the gate's
 * read side, the driver call and the gate let go, in one function, so that
 * a tracked launch pays for one frame, not three (issue 13 counts its
 * instructions). */
#define VS_GRID_PARAMS                                                        \
    CUfunction f, unsigned int gx, unsigned int gy, unsigned int gz,          \
        unsigned int bx, unsigned int by, unsigned int bz, unsigned int shm,  \
        CUstream s, void **params
#define VS_GRID_ARGS f, gx, gy, gz, bx, by, bz, shm, s, params
#define VS_EX_PARAMS const CUlaunchConfig *config, CUfunction f, void **params, void **extra
#define VS_KERNEL_LAUNCHES(X)                                                           \
    X(cuLaunchKernel, (VS_GRID_PARAMS, void **extra), (VS_GRID_ARGS, extra), params, extra) \
    X(cuLaunchKernel_ptsz, (VS_GRID_PARAMS, void **extra), (VS_GRID_ARGS, extra), params,   \
      extra)                                                                            \
    X(cuLaunchKernelEx, (VS_EX_PARAMS), (config, f, params, extra), params, extra)      \
    X(cuLaunchKernelEx_ptsz, (VS_EX_PARAMS), (config, f, params, extra), params, extra) \
    X(cuLaunchCooperativeKernel, (VS_GRID_PARAMS), (VS_GRID_ARGS), params, NULL)       \
    X(cuLaunchCooperativeKernel_ptsz, (VS_GRID_PARAMS), (VS_GRID_ARGS), params, NULL)
#define VS_DECLARE_TRACKED(name, PARAMS, ARGS, params_, extra_) CUresult vs_launch_tracked_##name PARAMS;
VS_KERNEL_LAUNCHES(VS_DECLARE_TRACKED)
#undef VS_DECLARE_TRACKED
/* A module or library was unloaded: its function handles may come back for
 * other functions, so no parameter layout known so far may be trusted. */
void vs_touch_forget_layouts(void);

/* ---- backed buffers (tier.c) ------------------------------------------- */
struct vs_tier_view {
    uint64_t base, size;
    int dev;
    CUcontext ctx;
    bool offloaded;
    int sync_memops; /* the program's CU_POINTER_ATTRIBUTE_SYNC_MEMOPS: 0, 1; -1: never set */
};
/* Should an allocation of size on dev be backed (offload on, VMM there,
 * at least one granule)? */
bool vs_tier_wants(int dev, uint64_t size);
/* Back an allocation with VMM. CUDA_ERROR_NOT_SUPPORTED: pass it through.
 * On success the buffer is not yet one a move can pick: the caller records
 * it in the registry, then publishes it. */
struct vs_backing; /* opaque: a backed buffer not yet published */
CUresult vs_tier_alloc(CUdeviceptr *dptr, uint64_t size, int dev, int owner,
                       struct vs_backing **pending);
/* `recorded`: the registry holds its record (else it never moves). */
void vs_tier_publish(struct vs_backing *pending, bool recorded);
/* A free, in two steps around taking the registry record out. Begin: the
 * backed buffer at base leaves the tree, and any move of it finishes or is
 * abandoned first (NULL: base is not a backed buffer); from then on the
 * record says where every byte is. End: give its memory back. A free of a
 * buffer nothing moves waits for nothing. */
struct vs_backing *vs_tier_free_begin(uint64_t base);
void vs_tier_free_end(struct vs_backing *held);
bool vs_tier_lookup(uint64_t addr, struct vs_tier_view *out);
/* Whether a backed buffer on dev can feed the hardware decompressor, as
 * cuMemAlloc's memory could (chunk.c creates device chunks with the usage
 * flag where the device has one): the buffer's answer to
 * CU_POINTER_ATTRIBUTE_IS_HW_DECOMPRESS_CAPABLE, wherever its bytes are. */
bool vs_chunk_hw_decompress(int dev);
/* The program's cuMemSetAccess on the backed buffer holding ptr: its
 * device locations are kept with the buffer and applied to every chunk,
 * wherever it is, now and after each move. CUDA_ERROR_NOT_FOUND: not a
 * backed buffer (the driver's call stands); CUDA_ERROR_INVALID_VALUE /
 * _INVALID_DEVICE for a description the driver would refuse. */
CUresult vs_tier_set_access(uint64_t ptr, uint64_t size, const CUmemAccessDesc *desc,
                            size_t count);
/* cuMemGetAccess for a backed buffer: what the program set for location,
 * read-write for its own device and for devices peer access lets reach
 * it. false: not a backed buffer. */
bool vs_tier_get_access(uint64_t ptr, const CUmemLocation *location, unsigned long long *flags);
/* The program's cuPointerSetAttribute(CU_POINTER_ATTRIBUTE_SYNC_MEMOPS) on
 * the backed buffer holding ptr: kept with the buffer, applied to every
 * chunk mapped now and to every later mapping (a move's new backing).
 * CUDA_ERROR_NOT_FOUND: not a backed buffer. */
CUresult vs_tier_set_sync_memops(uint64_t ptr, bool on);

/* ---- what moves, when asked (tier.c) ----------------------------------- */
/* An allocation of `bytes` is `shortfall` bytes short: move least recently
 * touched buffers (of owner, when >= 0) off dev until the shortfall plus a
 * margin (an eighth of bytes, at most 64 MiB) has moved. Returns the bytes
 * moved. */
uint64_t vs_tier_make_room(int dev, int owner, uint64_t shortfall, uint64_t bytes);
/* vramshim_offload / vramshim_prefetch: 0 or -errno. */
int vs_tier_offload(uint64_t p);
int vs_tier_prefetch(uint64_t p);
/* Move buffers (of owner, when >= 0; only idle ones when idle_only) until
 * bytes have moved, one at a time (the program's threads go between), none
 * touched since the request began. Returns the bytes moved; `progress`,
 * when given, follows them as they move. */
uint64_t vs_tier_evict(int owner, uint64_t bytes, bool idle_only, _Atomic uint64_t *progress);
/* Another process on the device asks for room (relief): move buffers of
 * dev idle for idle_ms, one at a time, until bytes have moved. Returns the
 * bytes moved. */
uint64_t vs_tier_give(int dev, uint64_t bytes);
/* When the program last submitted work (vs_now_ns; 0: never). */
uint64_t vs_tier_last_submit_ns(void);
/* Free `bytes` of the pin budget for the program's own pinning. */
uint64_t vs_tier_yield_pins(uint64_t bytes);
/* Give back idle host handles the pin budget no longer has room for
 * (hostpool.c): after the program pinned memory itself. */
void vs_hostpool_fit_budget(void);

/* ---- sharing with another process (tier.c) ----------------------------- */
/* A buffer shared with another process: what an importer needs. */
struct vs_share {
    uint64_t base, size, span, gran, chunk, token;
    uint32_t n_chunks;
    int dev;
};
/* Mark the backed buffer holding dptr shared (brought back, never moved
 * again): for another process, or for anything else that reaches its
 * device memory where vramshim cannot see (a dma-buf, a multicast binding,
 * a texture reference). `call` names the program's call in log lines.
 * CUDA_ERROR_NOT_FOUND: not a backed buffer. */
CUresult vs_tier_share(uint64_t dptr, const char *call, struct vs_share *out);
/* Export the chunks of the shared buffer at base (token must match) as
 * file descriptors, in order: their number, or -ENOENT, -E2BIG, -EIO. */
int vs_tier_export(uint64_t base, uint64_t token, int *fds, uint32_t cap, struct vs_share *out);

#endif
