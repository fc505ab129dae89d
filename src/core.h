/*
 * core.h: the core layer, the bottom of libvramshim (see docs/ARCHITECTURE.md,
 * "Layers"): configuration, logging, owners, the limits and the budget,
 * the allocation registry, the stats document and the control socket's
 * request format. It knows nothing of CUDA (no cuda.h: handles are plain
 * 64-bit numbers here) and nothing of how calls are intercepted, so the
 * tool and the unit tests build on it alone.
 *
 * Include rule: core <- driver <- offload <- {hooks, control} <- init. A
 * file includes the header of its own layer and those below it, never one
 * above (tests/layers.sh checks it in make check).
 */
#ifndef VS_CORE_H
#define VS_CORE_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <time.h>

#include "vramshim.h"

#define VS_EXPORT __attribute__((visibility("default")))
#define VS_LIKELY(x) __builtin_expect(!!(x), 1)
#define VS_UNLIKELY(x) __builtin_expect(!!(x), 0)

#define VS_MAX_DEVICES 16
#define VS_MAX_OWNERS 128 /* the last slot collects every owner past it */
#define VS_MAX_OWNER_LIMITS 32
#define VS_PATH_MAX 256

/* Fast copies (staging.c in the offload layer; config.c parses the settings) */
#define VS_STAGING_PIECE (4ULL << 20) /* one slot, one piece of a copy */
#define VS_STAGING_MAX (1ULL << 30)
#define VS_COPY_THREADS_MAX 64
#define VS_FAST_COPY_MIN_DEFAULT (8ULL << 20)
#define VS_STAGING_DEFAULT (64ULL << 20)

/* Debug builds (./configure --enable-debug) check invariants; VS_ASSERT
 * costs nothing otherwise. */
#ifdef VS_DEBUG
#define VS_ASSERT(cond) ((cond) ? (void)0 : vs_assert_failed(#cond, __FILE__, __LINE__))
void vs_assert_failed(const char *what, const char *file, int line) __attribute__((noreturn));
#else
#define VS_ASSERT(cond) ((void)0)
#endif

/* ---- log.c ------------------------------------------------------------ */
enum vs_log_level { VS_LOG_ERROR, VS_LOG_WARN, VS_LOG_INFO, VS_LOG_DEBUG };

void vs_log_set_level(enum vs_log_level level);
enum vs_log_level vs_log_get_level(void);
/* Send log lines to fd (default 2). The previous fd is not closed. */
void vs_log_set_fd(int fd);
int vs_log_get_fd(void);
/* Append log lines to path from now on: 0 or -errno. */
int vs_log_open_file(const char *path);
void vs_log_refresh_pid(void);
/* While held, lines are kept (single-threaded start-up only); the kept
 * lines are written by vs_log_release_held, when the driver is loaded. */
void vs_log_hold(bool hold);
void vs_log_release_held(void);
/* "1.5G", "512.0M", "12B": for log lines and the summary. */
const char *vs_human_size(uint64_t bytes, char *buf, size_t cap);
void vs_log(enum vs_log_level level, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
#define vs_error(...) vs_log(VS_LOG_ERROR, __VA_ARGS__)
#define vs_warn(...) vs_log(VS_LOG_WARN, __VA_ARGS__)
#define vs_info(...) vs_log(VS_LOG_INFO, __VA_ARGS__)
#define vs_debug(...) vs_log(VS_LOG_DEBUG, __VA_ARGS__)

/* ---- config.c: the environment, parsed once --------------------------- */
enum vs_size_kind { VS_SIZE_NONE, VS_SIZE_BYTES, VS_SIZE_PERCENT };
struct vs_size_spec {
    enum vs_size_kind kind;
    uint64_t bytes;  /* VS_SIZE_BYTES */
    double percent;  /* VS_SIZE_PERCENT: of the device, or of RAM */
};
enum vs_offload_mode { VS_OFFLOAD_OFF, VS_OFFLOAD_PINNED, VS_OFFLOAD_AUTO };

struct vs_owner_limit {
    char name[VRAMSHIM_OWNER_NAME_MAX + 1];
    uint64_t bytes;
};

struct vs_config {
    /* VRAMSHIM_VRAM_LIMIT: one spec for every device, overridden per device */
    struct vs_size_spec vram_limit_all;
    struct vs_size_spec vram_limit_dev[VS_MAX_DEVICES];
    struct vs_size_spec reserve_vram;
    struct vs_size_spec pin_limit; /* NONE: the default formula over RAM */
    enum vs_offload_mode offload;
    uint32_t idle_ms;
    /* VRAMSHIM_FENCE_MS: the longest a move waits inside the program's call
     * for the device to finish the work already queued (chunk.c's fence) */
    uint32_t fence_ms;
    /* VRAMSHIM_PRIORITY: peers of equal or lower priority may be asked to
     * give way (relief.c); VRAMSHIM_IDLE_RELEASE: with nothing submitted
     * this long, idle buffers move out unasked (0: off) */
    int32_t priority;
    uint32_t idle_release_ms;
    /* VRAMSHIM_RELIEF_MS: how long one peer may take to move and answer;
     * finding the peers takes a tenth of it */
    uint32_t relief_ms;
    /* how long the count of free device memory is trusted between asks of
     * the driver, when a reserve is set; 0: ask before every allocation */
    uint32_t free_query_ms;
    char owner[VRAMSHIM_OWNER_NAME_MAX + 1]; /* empty: the program's name */
    struct vs_owner_limit owner_limits[VS_MAX_OWNER_LIMITS];
    int n_owner_limits;
    char socket_dir[VS_PATH_MAX];
    /* VRAMSHIM_FAST_COPY_MIN: smallest pageable copy staged (0: off);
     * VRAMSHIM_COPY_THREADS (0: the default for the machine);
     * VRAMSHIM_STAGING: page-locked bytes of staging slots */
    uint64_t fast_copy_min;
    uint32_t copy_threads;
    uint64_t staging_bytes;
    enum vs_log_level log_level;
    char log_file[VS_PATH_MAX];
    bool disable;
};

/* Where config_load reads variables from: getenv in the library, a table in
 * the unit tests. */
typedef const char *(*vs_env_fn)(const char *name);

void vs_config_defaults(struct vs_config *cfg);
/* Parse every VRAMSHIM_* variable. A bad value logs one warning naming the
 * variable and the value and leaves that setting at its default.
 * Returns the number of bad values. */
int vs_config_load(struct vs_config *cfg, vs_env_fn env);

/* The parsers behind it, 0 on success and -EINVAL on a bad value. */
int vs_parse_size(const char *s, uint64_t *out);
int vs_parse_size_or_percent(const char *s, struct vs_size_spec *out);
int vs_parse_device_sizes(const char *s, struct vs_size_spec *all,
                          struct vs_size_spec per_dev[VS_MAX_DEVICES]);
int vs_parse_owner_limits(const char *s, struct vs_owner_limit *out, int max,
                          int *n_out);
int vs_parse_offload(const char *s, enum vs_offload_mode *out);
int vs_parse_log_level(const char *s, enum vs_log_level *out);
int vs_parse_uint32(const char *s, uint32_t min, uint32_t max, uint32_t *out);
int vs_parse_bool(const char *s, bool *out);
/* VRAMSHIM_PRIORITY: an integer from -1000 to 1000. */
int vs_parse_priority(const char *s, int32_t *out);
/* VRAMSHIM_IDLE_RELEASE: "off" (0) or 500ms, 30s, 10m, 1h; at most 24 h. */
int vs_parse_duration_ms(const char *s, uint32_t *out);
/* Resolve a size spec against a whole (device total or RAM). */
uint64_t vs_size_resolve(const struct vs_size_spec *spec, uint64_t whole);
/* The default pin limit: max(40% RAM, min(90% RAM, RAM - 4G)). */
uint64_t vs_default_pin_limit(uint64_t ram);
const char *vs_offload_name(enum vs_offload_mode mode);

/* ---- owner.c: who an allocation belongs to ---------------------------- */
/* Owner ids index the registry's counters; 0 is the process default. */
void vs_owner_init(const char *default_name);
int vs_owner_intern(const char *name);
int vs_owner_current(void);
/* The thread's owner stack behind vramshim_owner_push/pop. */
int vs_owner_push(const char *name);
int vs_owner_pop(void);
const char *vs_owner_name(int id);
int vs_owner_count(void);
void vs_owner_reset_thread(void);
void vs_owner_atfork_prepare(void);
void vs_owner_atfork_parent(void);
void vs_owner_atfork_child(void);

/* ---- registry.c: every live allocation, and the counters -------------- */
enum vs_kind {
    VS_KIND_DEVICE,     /* cuMemAlloc, cuMemAllocPitch */
    VS_KIND_MANAGED,    /* cuMemAllocManaged */
    VS_KIND_ASYNC,      /* cuMemAllocAsync, cuMemAllocFromPoolAsync */
    VS_KIND_VMM,        /* the program's own cuMemCreate + cuMemMap */
    VS_KIND_HOST_ALLOC, /* cuMemHostAlloc, cuMemAllocHost */
    VS_KIND_HOST_REGISTERED, /* cuMemHostRegister */
    VS_KIND_HOST_VMM,   /* a mapping of the program's cuMemCreate on a host location */
    VS_KIND_IMPORTED,   /* a mapping of an imported or multicast handle, or a
                           pointer imported from another process's memory
                           pool: its memory, shown apart and not charged */
    VS_KIND_COUNT
};
enum vs_tier { VS_TIER_RESIDENT, VS_TIER_PINNED, VS_TIER_PAGEABLE };

static inline bool vs_kind_is_host(enum vs_kind k)
{
    return k == VS_KIND_HOST_ALLOC || k == VS_KIND_HOST_REGISTERED ||
           k == VS_KIND_HOST_VMM;
}
const char *vs_kind_name(enum vs_kind k);

/* A copy of one record, as lookups return it (records themselves stay
 * inside the registry's lock). */
struct vs_alloc_info {
    uint64_t base;
    uint64_t size;
    int device; /* -1: host memory, or no context was current */
    enum vs_kind kind;
    enum vs_tier tier;
    int owner;
    uint64_t last_touch_ns;
    uint64_t off_pinned, off_pageable; /* bytes of it offloaded, by tier */
};

struct vs_device_counts {
    uint64_t allocated, resident, offloaded_pinned, offloaded_pageable;
    uint64_t peak_resident;
    uint64_t imported; /* mapped from imported handles: not in allocated */
    uint64_t arrays;   /* CUDA arrays: inside allocated */
    /* what the device's stream-ordered pools and its graph memory hold in
     * reserve (charged) and hand out (pool.c, read from the driver) */
    uint64_t pool_reserved, pool_used, graph_reserved, graph_used;
};
struct vs_owner_counts {
    uint64_t allocated, resident, offloaded, allocations, peak;
};
struct vs_event_counts {
    uint64_t allocs, frees, oom_returned, evictions, restores;
    uint64_t bytes_evicted, bytes_restored, launches;
    /* program copies staged by vramshim, and ranges prefaulted before pinning */
    uint64_t fast_copies, fast_copy_bytes, fast_copy_ns;
    uint64_t fast_copy_fallbacks; /* offered, but no staging slot was free */
    uint64_t prefaults, prefault_bytes, prefault_ns;
};
struct vs_pinned_counts {
    uint64_t app, offload, staging;
    uint64_t pools; /* reserved by host and host-NUMA memory pools (charged) */
};

/* A consistent copy of every counter, taken under the lock. */
struct vs_snapshot {
    struct vs_device_counts dev[VS_MAX_DEVICES];
    uint32_t devices_seen; /* bit i: device i ever held an allocation */
    struct vs_owner_counts owner[VS_MAX_OWNERS][VS_MAX_DEVICES];
    int n_owners;
    struct vs_event_counts events;
    struct vs_pinned_counts pinned;
    uint64_t live_records;
};

int vs_registry_init(void);
/* 0, or -EEXIST when the range overlaps a live record, -ENOMEM when the
 * record pool cannot grow. */
int vs_registry_add(uint64_t base, uint64_t size, int device, enum vs_kind kind,
                    int owner);
/* A mapping of the program's VMM handle (cuMemMap). A handle vramshim
 * knows (vs_handle_add) gives the mapping its kind, device and owner, and
 * its bytes are counted once by the handle however often it is mapped;
 * else the mapping is counted as an allocation of `kind` on `device`.
 * Return values as vs_registry_add. */
int vs_registry_map(uint64_t base, uint64_t size, uint64_t handle, int device,
                    enum vs_kind kind, int owner);
/* Remove the record starting exactly at base. -ENOENT if none, or if it
 * is the mapping of a known handle (only vs_registry_remove_range, at
 * cuMemUnmap, takes those out). */
int vs_registry_remove(uint64_t base, struct vs_alloc_info *removed);
/* Remove every record lying inside [base, base+size); returns how many. */
int vs_registry_remove_range(uint64_t base, uint64_t size);
/* What the memory pools on dev (-1: host pools) and, on a device, its
 * graph memory now reserve and hand out, as the driver says. The reserves
 * are what the budget is charged for them (stream-ordered records are
 * charged nothing themselves); the figures are shown in the stats. */
void vs_registry_set_reserves(int dev, uint64_t pool_reserved, uint64_t pool_used,
                              uint64_t graph_reserved, uint64_t graph_used);
/* Put back a record removed by vs_registry_remove when the driver refused
 * the release: the counters end as if neither had happened. */
void vs_registry_restore(const struct vs_alloc_info *info);
/* Part of a record moved between tiers (offload): `bytes` go from one to
 * the other in its device's and owner's counters, and an eviction or a
 * restore is counted. -ENOENT if no device record starts at base. */
int vs_registry_move(uint64_t base, enum vs_tier from, enum vs_tier to, uint64_t bytes);
/* The record whose range contains addr: O(log n). */
bool vs_registry_find(uint64_t addr, struct vs_alloc_info *out);
void vs_registry_count_oom(void);
/* vramshim's own page-locked memory (staging buffers, host handles held
 * ready) grew or shrank by delta bytes: pinned.staging. */
void vs_registry_staging(int64_t delta);
void vs_registry_snapshot(struct vs_snapshot *snap);
/* Forget every record and counter (a forked child owns no device memory). */
void vs_registry_reset(void);
void vs_registry_atfork_prepare(void);
void vs_registry_atfork_parent(void);
void vs_registry_atfork_child(void);

/* ---- thread.c: per-thread slots ----------------------------------------- */
/* First thing in each thread of vramshim's own (the control server and its
 * jobs, the fence waiter, the copy and pool workers): every signal blocked
 * there, so that the program's signals reach only the program's threads. */
void vs_thread_block_signals(void);
/* What every launch writes goes to the calling thread's own slot (a cache
 * line no other thread writes); readers sum the slots. Slot
 * VS_THREAD_SHARED is shared by threads beyond the others and is updated
 * atomically. */
#define VS_THREAD_SLOTS 256
#define VS_THREAD_SHARED (VS_THREAD_SLOTS - 1)
/* A preloaded library's thread-local data sits in the static TLS block:
 * reached in two instructions, not through __tls_get_addr. */
#define VS_TLS_FAST __attribute__((tls_model("initial-exec")))
struct vs_thread_local {
    unsigned slot;         /* 0: none yet; else the slot + 1 */
    uint32_t reading[2];   /* the offload layer's read depths (gate.c) */
    uint64_t marks;        /* what this thread's reader slot holds (gate.c) */
    uint32_t nocancel;     /* vs_nocancel_begin's depth */
    int cancel_state;      /* the program's cancel state, put back at depth 0 */
};
extern __thread struct vs_thread_local vs_me VS_TLS_FAST;
struct vs_thread_counts {
    _Alignas(64) _Atomic uint64_t launches;
};
extern struct vs_thread_counts vs_thread_counts[VS_THREAD_SLOTS];
extern _Atomic uint32_t vs_thread_slots_used; /* one past the highest taken */
unsigned vs_thread_slot_slow(void);
static inline unsigned vs_thread_slot(void)
{
    unsigned s = vs_me.slot;
    return VS_LIKELY(s != 0) ? s - 1 : vs_thread_slot_slow();
}
/* Add one to a counter of the calling thread's slot. */
static inline void vs_thread_add(_Atomic uint64_t *counter, unsigned slot)
{
    if (VS_LIKELY(slot != VS_THREAD_SHARED))
        atomic_store_explicit(counter, atomic_load_explicit(counter, memory_order_relaxed) + 1,
                              memory_order_relaxed);
    else
        atomic_fetch_add_explicit(counter, 1, memory_order_relaxed);
}
uint64_t vs_thread_launches(void);
void vs_thread_atfork_child(void);
/* Set by the offload layer (gate.c): called in a thread that exits with a
 * read side still marked in its slot (cancelled, or ended by pthread_exit,
 * inside a driver call), before the slot is given back, so that no writer
 * waits for it forever. */
extern void (*vs_thread_exit_marked)(unsigned slot);
/* Around vramshim's own locked work in a program's thread (a move's locks,
 * a copy job, a wait for a capture): the thread's cancellation is held off,
 * so that pthread_cancel cannot end it at a wait inside (a condition wait,
 * a sleep) with a lock held for good. Nested; the program's own state comes
 * back at the outermost end, and a cancel asked meanwhile acts at its next
 * cancellation point. */
void vs_nocancel_begin(void);
void vs_nocancel_end(void);

/* Launches are counted in the launching thread's slot: no shared line. */
static inline void vs_count_launch(void)
{
    unsigned s = vs_thread_slot();
    vs_thread_add(&vs_thread_counts[s].launches, s);
}
/* Fast copies and prefaults are counted outside the lock too. */
void vs_count_fast_copy(uint64_t bytes, uint64_t ns);
void vs_count_prefault(uint64_t bytes, uint64_t ns);
void vs_count_fast_copy_fallback(void);

/* ---- page_index.c: what lies in each 2 MiB page ---------------------- */
/* A hash table from page number (address >> VS_PAGE_SHIFT) to a pointer,
 * open-addressed, at most half full. The caller guards it with its own
 * lock and allocates its tables (vs_page_index_adopt). */
#define VS_PAGE_SHIFT 21
#define VS_PAGE_HASH 0x9E3779B97F4A7C15ULL /* Fibonacci hashing: the top bits of key * this */
struct vs_page_slot {
    uint64_t key; /* the page; 0: empty (page 0, the first 2 MiB, is never device memory) */
    void *val;
};
struct vs_page_index {
    struct vs_page_slot *slot; /* NULL: no table yet */
    uint64_t mask;             /* slots - 1 (at most 2^32) */
    uint32_t shift;            /* 64 - log2(slots) */
    uint64_t used;
};
/* A key's first slot: the product's top bits, as Fibonacci hashing takes
 * them. Consecutive pages (a buffer's, or buffers reserved one after
 * another, as the driver hands out VMM ranges) then spread over the table
 * almost evenly: a bench of 10^4 such buffers met a collision in 0.4% of
 * its look-ups, against 29% when the home was taken from bits 32 and up
 * (and with bits from 24, the constant's run of ones put a buffer's pages
 * one slot apart: a dense run that a miss had to walk). */
static inline uint64_t vs_page_home_in(uint32_t shift, uint64_t key)
{
    return (key * VS_PAGE_HASH) >> shift;
}
static inline uint64_t vs_page_home(const struct vs_page_index *ix, uint64_t key)
{
    return vs_page_home_in(ix->shift, key);
}
/* What page maps to in a table whose shift is `shift`; NULL: nothing. A
 * caller probing many pages keeps the two in registers. */
static inline void *vs_page_probe(const struct vs_page_slot *slot, uint32_t shift, uint64_t page)
{
    uint64_t key = page;
    uint64_t i = vs_page_home_in(shift, key);
    while (VS_UNLIKELY(slot[i].key != key) && slot[i].key != 0)
        i = (i + 1) & (UINT64_MAX >> shift);
    return slot[i].val; /* NULL in an empty slot */
}
/* What page maps to; NULL: nothing. */
static inline void *vs_page_index_get(const struct vs_page_index *ix, uint64_t page)
{
    if (VS_UNLIKELY(ix->slot == NULL))
        return NULL;
    return vs_page_probe(ix->slot, ix->shift, page);
}
/* The slots (a power of two) a table needs to hold n pages. */
uint64_t vs_page_index_slots_for(uint64_t n);
/* Whether `more` pages can be put without a bigger table. */
bool vs_page_index_fits(const struct vs_page_index *ix, uint64_t more);
/* Take fresh (zeroed, `slots` of them, vs_page_index_slots_for of at
 * least what the table holds) as the table, moving the entries over and
 * freeing the old one. */
void vs_page_index_adopt(struct vs_page_index *ix, struct vs_page_slot *fresh, uint64_t slots);
/* Map page to val unless it maps to something already (true either way);
 * false: the table has no room (vs_page_index_fits said so), or page is 0. */
bool vs_page_index_put(struct vs_page_index *ix, uint64_t page, void *val);
/* Forget page if it maps to val. */
void vs_page_index_drop(struct vs_page_index *ix, uint64_t page, const void *val);
/* Empty it, keeping the table (a forked child: no allocation). */
void vs_page_index_clear(struct vs_page_index *ix);

/* ---- limits.c: the limits as they stand now ------------------------- */
/* The configuration as first read from the environment and since changed
 * at run time. Every change bumps vs_limits_gen, which tells the budget
 * (one relaxed load on its hot path) that its figures in bytes are stale. */
extern _Atomic uint32_t vs_limits_gen;
void vs_limits_init(const struct vs_config *cfg, uint64_t ram_bytes);
void vs_limits_config(struct vs_config *out);
void vs_limits_atfork_prepare(void);
void vs_limits_atfork_parent(void);
void vs_limits_atfork_child(void);
/* A device's limit and reserve in bytes, for a device of `physical` bytes
 * (0: not known, so percentages cannot be worked out yet: *exact is false).
 * VS_NO_LIMIT where there is none. */
#define VS_NO_LIMIT UINT64_MAX
void vs_limits_for_device(int dev, uint64_t physical, uint64_t *limit,
                          uint64_t *reserve, bool *exact);
uint64_t vs_limits_for_owner(const char *name);
/* How many times vs_limits_set changed a setting since vs_limits_init. */
uint32_t vs_limits_changes(void);
uint64_t vs_limits_pin(void);
uint32_t vs_limits_free_query_ms(void);
/* Read with one relaxed load each, for hot paths. */
enum vs_offload_mode vs_limits_offload(void);
uint32_t vs_limits_idle_ms(void);
int32_t vs_limits_priority(void);
uint32_t vs_limits_idle_release_ms(void); /* 0: off */
/* Change one setting: vram_limit, reserve_vram, pin_limit, offload, idle_ms,
 * owner_limit. 0, or -EINVAL (unknown key or bad value: nothing changes and
 * `why` says what was expected). */
int vs_limits_set(const char *key, const char *value, char *why, size_t why_len);

/* ---- budget.c: may this allocation proceed? --------------------------- */
/* Device memory and pinned host memory are charged before the driver is
 * asked for them, with a compare-and-swap against the limit, so threads that
 * race can never overshoot; the charge is settled once the driver answers. */
enum vs_verdict {
    VS_ADMIT,
    VS_OVER_LIMIT,       /* VRAMSHIM_VRAM_LIMIT */
    VS_OVER_OWNER_LIMIT, /* VRAMSHIM_OWNER_LIMIT */
    VS_OVER_RESERVE,     /* VRAMSHIM_RESERVE_VRAM */
    VS_OVER_PIN_LIMIT,   /* VRAMSHIM_PIN_LIMIT */
};
/* Bytes charged to the budget (budget.c) for one allocation. */
struct vs_charge {
    int dev;        /* -1: pinned host memory */
    int owner;
    uint64_t bytes; /* 0: nothing was charged */
};

enum vs_verdict vs_budget_charge_device(int dev, int owner, uint64_t bytes,
                                        struct vs_charge *out);
enum vs_verdict vs_budget_charge_pinned(uint64_t bytes, struct vs_charge *out);
/* Charge pinned bytes past the cap: only for data that must stay reachable
 * by the device and has nowhere else to go. */
void vs_budget_charge_pinned_over(uint64_t bytes, struct vs_charge *out);
/* The driver answered: keep the charge, or give it back. */
void vs_budget_settle(struct vs_charge *c, bool kept);
/* The driver allocated a different size than charged (a pitch). */
void vs_budget_resize(struct vs_charge *c, uint64_t bytes);
/* Give back a settled charge. */
void vs_budget_refund(const struct vs_charge *c);
/* Set a held charge to `bytes`, past any limit if it must: for memory the
 * driver has already reserved (a pool's or graph memory's reserve, read
 * back after the fact). */
void vs_budget_hold(struct vs_charge *c, uint64_t bytes);
/* A record left the registry: give back what it was charged. Records of
 * mappings (VS_KIND_VMM, VS_KIND_HOST_VMM) were charged by their handle,
 * stream-ordered ones (VS_KIND_ASYNC) by their pool's reserve. */
void vs_budget_release(const struct vs_alloc_info *rec);
/* The driver told the program how much is free on dev: a free ask. */
void vs_budget_note_free(int dev, uint64_t free_bytes);
/* The figures a program should see for a device: total = min(limit,
 * physical), free = what this process (and the owner) may still allocate. */
void vs_budget_slice(int dev, int owner, uint64_t drv_free, uint64_t drv_total,
                     uint64_t *free_out, uint64_t *total_out);
/* The device's total as the program should see it. */
uint64_t vs_budget_total(int dev, uint64_t physical);

struct vs_budget_view {
    uint64_t limit, reserve, charged, physical;
    uint64_t est_free; /* VS_NO_LIMIT: never asked */
};
void vs_budget_device_view(int dev, struct vs_budget_view *v);
uint64_t vs_budget_owner_charged(int owner, int dev);
uint64_t vs_budget_owner_limit(int owner);
void vs_budget_pin_view(uint64_t *charged, uint64_t *limit);
/* Memory a context or module holds (overhead.c): charged to the device
 * and to no owner, within the limit (false: it would pass it, nothing
 * charged) or past it; negative bytes give it back. */
bool vs_budget_charge_overhead(int dev, int64_t bytes, bool within_limit);
/* How many times the driver was asked for free memory. */
uint64_t vs_budget_asks(void);
void vs_budget_reset(void);

/* ---- VMM physical handles of the program (registry.c) ----------------- */
/* Keyed by the driver's CUmemGenericAllocationHandle (or CUarray,
 * CUmipmappedArray: VS_HANDLE_ARRAY, a handle that is never mapped), a
 * 64-bit number (the core does not include cuda.h). A handle holds its memory,
 * counted in the registry's counters and charged to the budget, until it
 * is released and its last mapping is gone, as the driver frees it. */
/* Handles of different driver objects live in different spaces. */
enum vs_handle_space { VS_HANDLE_VMM, VS_HANDLE_ARRAY };
struct vs_handle_info {
    enum vs_handle_space space;
    uint64_t size;
    int device; /* -1: a host location */
    int owner;
    bool on_host;
    bool imported; /* another process's memory (or multicast): not counted */
    struct vs_charge charge; /* what cuMemCreate charged to the budget */
};
/* A handle the driver made: 0, or -ENOMEM. An entry for the same number
 * (a release vramshim did not see) is dropped with its mappings and its
 * charge given back. */
int vs_handle_add(uint64_t h, const struct vs_handle_info *info);
/* The program released the handle: its memory goes, and its charge with
 * it, once it is no longer mapped. false: not a handle vramshim knows. */
bool vs_handle_release(uint64_t h, enum vs_handle_space space);

/* ---- overhead.c: device memory held beyond allocations ---------------- */
/* Contexts (with their runtime limits), modules and libraries, each keyed
 * by the driver's handle in a space of its own. Their bytes are charged to
 * the device (vs_budget_charge_overhead) while they live. */
enum vs_overhead_space { VS_OVERHEAD_CONTEXT, VS_OVERHEAD_MODULE, VS_OVERHEAD_LIBRARY };
/* Add bytes to an item, made if new (negative: give back, never below 0);
 * ctx: the context a module was loaded into. within_limit: false, and
 * nothing added, when the device's charge would pass its limit. */
bool vs_overhead_add(enum vs_overhead_space space, uint64_t handle, int dev, uint64_t ctx,
                     int64_t bytes, bool within_limit);
/* The item goes with its charge (a context takes its modules along): the
 * bytes given back. */
uint64_t vs_overhead_drop(enum vs_overhead_space space, uint64_t handle);
/* Bytes held on dev beyond allocations (stats `devices[].overhead`). */
uint64_t vs_overhead_device(int dev);
/* Where the device's last overhead figure came from (stats
 * `devices[].overhead_source`): NVML's per-process usage, the change in
 * the device's free memory around the call, or the estimate for a first
 * context with nothing to measure against. */
enum vs_overhead_source { VS_SOURCE_FREE_MEMORY, VS_SOURCE_NVML, VS_SOURCE_ESTIMATE };
void vs_overhead_set_source(int dev, enum vs_overhead_source src);
const char *vs_overhead_source_name(int dev);
void vs_overhead_reset(void);

/* ---- protocol.c: control socket requests ----------------------------- */
#define VS_REQUEST_MAX 4096
enum vs_request_cmd { VS_REQ_NONE, VS_REQ_HELLO, VS_REQ_STATS, VS_REQ_SET,
                      VS_REQ_EVICT, VS_REQ_FREE, VS_REQ_SHARE, VS_REQ_PEER,
                      VS_REQ_RELIEVE };
struct vs_request {
    enum vs_request_cmd cmd;
    char key[32];
    char value[256];
    char owner[VRAMSHIM_OWNER_NAME_MAX + 1];
    uint64_t bytes;
    uint64_t base, token; /* share: the buffer another process maps */
    /* peer, relieve: the physical device (its UUID) and the asker's priority */
    char uuid[64];
    int32_t priority;
    bool has_owner, has_bytes;
};
/* The directory the sockets live in (protocol.c, for the library and the
 * tool): configured, else $XDG_RUNTIME_DIR/vramshim, else /tmp/vramshim-$UID. */
int vs_control_dir(const char *configured, char *out, size_t cap);
/* Parse one request (without its newline): 0, or -EINVAL with `why`. */
int vs_request_parse(const char *buf, size_t len, struct vs_request *req, char *why,
                     size_t why_len);
/* A backed buffer is mapped in chunks of at most this many granules; a
 * shared buffer's chunks travel as file descriptors over the control
 * socket, VS_SHARE_FDS_PER_MSG to a message (SCM_RIGHTS allows 253), so
 * 1024 chunks of 64 MiB, 64 GiB, is the largest buffer that can be shared.
 * The share answer's layout is checked against these. */
#define VS_CHUNK_GRANULES 32
#define VS_SHARE_FDS_PER_MSG 128
#define VS_SHARE_MAX_CHUNKS 1024
/* The answer line to a share request, read strictly: a flat object of
 * "ok", "error" and, when ok, all of size, span, gran, chunk and n. */
struct vs_share_answer {
    bool ok;
    uint64_t size, span, gran, chunk, n;
    char error[256];
};
int vs_share_answer_parse(const char *buf, size_t len, struct vs_share_answer *a);
/* The answer to a peer or relieve request (relief.c reads it strictly):
 * {"ok":true,"resident":N,"idle_ms":N,"priority":P} or {"ok":true,"moved":N},
 * or {"ok":false,"error":"..."}. 0, or -EINVAL. */
struct vs_relief_answer {
    bool ok;
    uint64_t resident, idle_ms, moved;
    int32_t priority;
    char error[128];
};
int vs_relief_answer_parse(const char *buf, size_t len, struct vs_relief_answer *a);
/* Token equality in constant time. */
bool vs_equal_ct(uint64_t a, uint64_t b);
/* 0 when the layout is exactly what a buffer of handle_size is shared as;
 * else -EACCES (refused) or -EPROTO, with `why`. */
int vs_share_answer_check(const struct vs_share_answer *a, uint64_t handle_size, char *why,
                          size_t why_len);

/* ---- relief.c: asking peers on the same device for room ---------------- */
#define VS_RELIEF_MAX_PEERS 64
struct vs_relief_peer {
    pid_t pid;
    uint64_t ns; /* pid namespace */
    int32_t priority;
    uint64_t idle_ms, resident;
    bool gave_lately; /* gave within the hysteresis window: asked last */
    bool eligible;    /* set by vs_relief_order: priority at most ours */
};
/* The order peers are asked in: eligible ones first; of those, ones that
 * did not give lately first, then lower priority, then the most idle. */
void vs_relief_order(struct vs_relief_peer *p, int n, int32_t my_priority);
/* Ask peers on dev's physical device to move `want` bytes of idle buffers
 * out, within bounded time (relief_ms/10 to find them, relief_ms for any
 * one's move and answer, twice that for all of them).
 * Returns the bytes they moved. `call` names the asker in the log line;
 * `retrying` (a buffer coming back on a launch): not again within RETRY_MS
 * of an ask that got nothing. Call with no lock of vramshim's held. */
uint64_t vs_relief_ask(int dev, uint64_t want, const char *call, bool retrying);

/* ---- sockdir.c: private or group-shared socket directories ------------- */
/* A private directory is ours, 0700. A shared one has every group bit and
 * none for others, is owned by us or root, and its group is one of ours:
 * its members from other uids may read stats and ask for relief. */
struct vs_sockdir {
    bool shared;
    gid_t gid; /* shared: the group that meets there */
};
struct vs_creds {
    uid_t uid;
    gid_t gid; /* effective */
    const gid_t *groups; /* supplementary */
    int n_groups;
};
enum vs_access {
    VS_ACCESS_NONE,  /* refused */
    VS_ACCESS_GROUP, /* a member of the shared directory's group: stats, relief */
    VS_ACCESS_FULL,  /* the same user, or root: everything */
};
struct stat;
/* The mode asks to share with the group (every group bit set). */
bool vs_sockdir_wants_group(mode_t mode);
/* Judge a directory from its lstat for a process with credentials `me`:
 * 0 and *out, or -errno with `why` (pure: the unit tests inject both). */
int vs_sockdir_judge(const char *dir, const struct stat *st, const struct vs_creds *me,
                     struct vs_sockdir *out, char *why, size_t why_len);
/* What a peer with credentials `peer` may do in a process running as
 * `self` whose socket is in sd (pure). */
enum vs_access vs_sockdir_access(const struct vs_sockdir *sd, uid_t self,
                                 const struct vs_creds *peer);
/* Whether a request of that kind is answered at that access. */
bool vs_request_allowed(enum vs_access access, enum vs_request_cmd cmd);
/* vs_sockdir_judge on dir, with this process's credentials; sd may be NULL. */
int vs_dir_check(const char *dir, struct vs_sockdir *sd, char *why, size_t why_len);
/* The access of the process at the other end of a connected unix socket
 * (SO_PEERCRED, SO_PEERGROUPS); *pid (may be NULL) its pid. */
enum vs_access vs_peer_access(int fd, const struct vs_sockdir *sd, pid_t *pid);

/* ---- peer.c: the connecting side's checks ------------------------------ */
uint64_t vs_now_ms(void);
/* 0 when path is a socket a process may trust: ours or, in a
 * shared directory (sd->shared), one of its group's; else -errno with
 * `why`. *maker (may be NULL): the uid that made it. */
int vs_entry_check(const char *path, const struct vs_sockdir *sd, uid_t *maker, char *why,
                   size_t why_len);
/* Connect to the socket at path within deadline_ms, after vs_entry_check,
 * and only to a server running as us or root or, in a shared directory,
 * as the uid that made the socket: the fd, or -errno with `why`. sd NULL:
 * the same user only (what sharing memory needs). */
int vs_peer_connect(const char *path, const struct vs_sockdir *sd, int deadline_ms, char *why,
                    size_t why_len);
/* This process's pid namespace (its inode; 0 without /proc). */
uint64_t vs_pidns_self(void);
/* dir/<pid>-<ns>.sock (dir/<pid>.sock when ns is 0). */
int vs_sock_path(const char *dir, pid_t pid, uint64_t ns, char *out, size_t cap);
/* A socket's name back into pid and namespace (0: a name without one). */
bool vs_sock_name_parse(const char *name, pid_t *pid, uint64_t *ns);
/* True only when a connect to path is refused: nothing listens there. */
bool vs_sock_dead(const char *path);
/* The socket of pid in dir: the one in our namespace, else the only one;
 * 0, -ENOENT, or -EEXIST when pid is in several other namespaces. */
int vs_sock_find(const char *dir, pid_t pid, char *out, size_t cap, uint64_t *ns_out);

/* ---- stats.c ---------------------------------------------------------- */
/* What the stats ask the driver; hooks fill it in, unit tests leave it. */
struct vs_device_query {
    int (*count)(void);
    int (*name)(int dev, char *buf, size_t len);
    int (*total)(int dev, uint64_t *total);
    /* Free memory now, when the calling thread has a context on dev. */
    int (*free_now)(int dev, uint64_t *free_bytes);
    /* The device's UUID as nvidia-smi prints it ("GPU-xxxxxxxx-..."). */
    int (*uuid)(int dev, char *buf, size_t len);
};
void vs_query_set(const struct vs_device_query *q);
/* The query in use: never NULL, its members may be. */
const struct vs_device_query *vs_query(void);
/* The most recent free figure the driver gave for a device. */
void vs_stats_note_free(int dev, uint64_t free_bytes);
int vs_stats_write_json(char *buf, size_t len, const struct vs_config *cfg);
/* The document built once into a buffer sized by the pass that wrote it
 * (malloc'd, NUL-terminated, *len its length); NULL with errno set. */
char *vs_stats_json_alloc(const struct vs_config *cfg, size_t *len);
/* The same for any snprintf-like writer (returns the length it needs, or
 * -errno): retried with a larger buffer until one pass fits. */
char *vs_build_text(int (*write)(char *buf, size_t cap, void *arg), void *arg, size_t *len);
/* A share request refused (wrong base or token): counted in the stats. */
void vs_stats_count_share_refused(void);
/* Memory given to another process on request (relief), or taken from
 * peers by this one: counted in the stats. */
void vs_stats_count_relief(bool given, uint64_t bytes);
void vs_stats_print_summary(int fd, const struct vs_config *cfg);

/* ---- state.c: process-wide state and the clock ------------------------- */
struct vs_state {
    struct vs_config cfg;
    bool disabled;          /* VRAMSHIM_DISABLE=1 or a failed init */
    uint64_t start_ns;
    uint64_t ram_bytes;
};
extern struct vs_state vs_state;
/* Nothing is set up until a process first calls CUDA, NVML or vramshim's
 * API (a shell that merely inherits LD_PRELOAD pays nothing): every way in
 * calls vs_init (init.c), or, from below the init layer, vs_ensure_init,
 * which reaches it through this pointer, initialised in init.c (no code runs
 * at load: see init.c). */
extern void (*vs_init_fn)(void);
extern _Atomic bool vs_init_done;
static inline void vs_ensure_init(void)
{
    if (VS_UNLIKELY(!atomic_load_explicit(&vs_init_done, memory_order_acquire)) && vs_init_fn)
        vs_init_fn();
}
/* CLOCK_MONOTONIC_COARSE through the vDSO: no system call, good to a few
 * milliseconds, enough for idle time and touch stamps. Inline: every
 * tracked launch reads it. The unit tests drive it by wrapping
 * clock_gettime at link time (FIXTURE_CLOCK, tests/unit/fixture.h). */
static inline uint64_t vs_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

/* ---- debug.c: invariants ------------------------------------------------ */
/* What the budget should hold, worked out from the live records. */
struct vs_expected_charges {
    uint64_t dev[VS_MAX_DEVICES];
    uint64_t owner[VS_MAX_OWNERS][VS_MAX_DEVICES];
    uint64_t pin; /* the program's and offloaded bytes; vramshim's own staging
                   * comes on top */
};
/* registry.c: its counters against its records: 0, or -1 (logged). */
int vs_registry_check(struct vs_expected_charges *exp);
/* budget.c: its charges against what the records say: 0, or -1 (logged). */
int vs_budget_check(const struct vs_expected_charges *exp);
/* Both, for a caller at a quiet point (no allocation under way in any
 * thread): 0, or -1 after logging the first invariant that does not hold. */
int vs_core_check(void);

#endif
