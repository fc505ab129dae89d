/*
 * staging.c: copies between device memory and pageable host memory at bus
 * speed, and the prefault of memory about to be pinned.
 *
 * The driver copies pageable memory with one thread through a small bounce
 * buffer (12 against 55 GB/s on an H100). Here a copy is cut into pieces of
 * PIECE bytes. Copy threads move each piece between the program's memory
 * and a page-locked staging slot with the CPU, while the calling thread
 * hands the slots to the driver, in order, as async copies on the
 * program's own stream (so the copy is ordered exactly where the program
 * put it: legacy, per-thread or explicit stream), and records an event
 * after each. A slot is refilled only after its event is reached: the
 * device is done with it. Slots are charged to the pin budget one by one
 * (pinned.staging); when none can be had the caller lets the driver copy.
 *
 * Used by the copy hooks (vs_fastcopy) and by the pageable offload tier
 * (vs_staging_copy). Host-to-device returns once every source byte is in a
 * slot (the async forms) or once the device has it (the sync forms);
 * device-to-host returns with every byte in place. See docs/ARCHITECTURE.md.
 */
#include "offload_internal.h"

#include <errno.h>
#include <pthread.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#ifndef MADV_POPULATE_READ /* Linux 5.14; older kernels answer EINVAL */
#define MADV_POPULATE_READ 22
#endif
#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23
#endif

#define PIECE VS_STAGING_PIECE
#define MAX_SLOTS (VS_STAGING_MAX >> 22)
#define PREFAULT_SLICE (16ULL << 20)
#define READ_AHEAD 4 /* pieces advised ahead of the one being filled */

uint64_t vs_fast_copy_min = UINT64_MAX;

struct slot {
    void *buf; /* page-locked, PIECE bytes; NULL: not made */
    struct vs_charge pin;
    CUevent ev;
    CUcontext ev_ctx;
    uintptr_t stream_key; /* the stream ev was last recorded on */
    bool pending;         /* ev recorded, maybe not reached yet */
    int64_t done_piece;   /* the last piece the threads finished in it */
};

enum job_kind { JOB_TO_DEVICE, JOB_FROM_DEVICE, JOB_PREFAULT };

struct job {
    enum job_kind kind;
    CUcontext ctx;
    char *host;
    uint64_t size, piece, n_pieces;
    int advice;                /* JOB_PREFAULT */
    struct slot *use[MAX_SLOTS];
    uint32_t n_use;
    uint64_t posted, next;     /* pieces below posted may be taken; next to take */
    uint32_t workers_done;
    bool stop;
    _Atomic bool logged; /* one line per copy, however many pieces fail */
    CUresult rc;
};

static pthread_mutex_t job_lock = PTHREAD_MUTEX_INITIALIZER; /* one job at a time */
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t wake = PTHREAD_COND_INITIALIZER, progress = PTHREAD_COND_INITIALIZER;
static struct job *current;
static uint64_t generation;
static struct slot slots[MAX_SLOTS];
static uint32_t n_slots = 8, n_threads = 2; /* vs_staging_setup */
static int n_workers;
static bool started;
static _Atomic bool populate_unsupported;

void vs_staging_setup(uint64_t fast_copy_min, uint32_t threads, uint64_t staging_bytes)
{
    vs_fast_copy_min = fast_copy_min ? fast_copy_min : UINT64_MAX;
    long cpus = sysconf(_SC_NPROCESSORS_ONLN); /* default: half the cores, 2 to 8 */
    n_threads = threads ? threads : cpus / 2 < 2 ? 2 : cpus / 2 > 8 ? 8 : (uint32_t)(cpus / 2);
    if (n_threads > VS_COPY_THREADS_MAX)
        n_threads = VS_COPY_THREADS_MAX;
    uint64_t s = staging_bytes / PIECE;
    n_slots = s < 1 ? 1 : s > MAX_SLOTS ? MAX_SLOTS : (uint32_t)s;
}

static uintptr_t page_down(uintptr_t p) { return p & ~(uintptr_t)(sysconf(_SC_PAGESIZE) - 1); }

/* Does this kernel have MADV_POPULATE_* (Linux 5.14)? Asked once, of a
 * page of our own: afterwards EINVAL means the range itself refuses. */
static pthread_once_t probe_once = PTHREAD_ONCE_INIT;
static void probe_populate(void)
{
    /* any page of our own will do (populating it changes no byte); no
     * over-alignment, which would put .bss in a load segment of its own,
     * one more mapping per process, and one valgrind cannot attribute */
    static char page[1];
    if (madvise((void *)page_down((uintptr_t)page), 1, MADV_POPULATE_WRITE) != 0 &&
        errno == EINVAL)
        atomic_store(&populate_unsupported, true);
}

/* Fault [p, p+len) in without writing a byte of it: 0, or -errno when part
 * of it cannot be read (or written, for MADV_POPULATE_WRITE). */
static int populate(void *p, uint64_t len, int advice)
{
    pthread_once(&probe_once, probe_populate);
    if (atomic_load_explicit(&populate_unsupported, memory_order_relaxed))
        return 0;
    uintptr_t start = page_down((uintptr_t)p);
    if (madvise((void *)start, (uintptr_t)p + len - start, advice) == 0)
        return 0;
    return errno == EINTR || errno == EAGAIN ? 0 : -errno;
}

static void advise(char *p, uint64_t len, int advice)
{
    uintptr_t start = page_down((uintptr_t)p);
    (void)madvise((void *)start, (uintptr_t)p + len - start, advice);
}

/* ---- the copy threads ---------------------------------------------------- */
static struct slot *slot_of(const struct job *j, uint64_t p) { return j->use[p % j->n_use]; }

static CUresult wait_slot(struct slot *s)
{
    if (!s->pending)
        return CUDA_SUCCESS;
    CUresult rc = vs_real.cuEventSynchronize(s->ev);
    if (rc == CUDA_SUCCESS)
        s->pending = false;
    return rc;
}

static CUresult do_piece(struct job *j, uint64_t p)
{
    uint64_t off = p * j->piece;
    uint64_t len = j->size - off < j->piece ? j->size - off : j->piece;
    char *host = j->host + off;
    if (j->kind == JOB_PREFAULT) /* a range that refuses: the driver will say so */
        return populate(host, len, j->advice) == 0 ? CUDA_SUCCESS : CUDA_ERROR_INVALID_VALUE;
    struct slot *s = slot_of(j, p);
    CUresult rc = wait_slot(s); /* the device is done with the slot */
    if (rc != CUDA_SUCCESS)
        return rc;
    if (j->kind == JOB_TO_DEVICE) {
        if (p + READ_AHEAD < j->n_pieces) /* a file's next pieces come from disk meanwhile */
            advise(host + READ_AHEAD * j->piece,
                   j->size - off - READ_AHEAD * j->piece < j->piece
                       ? j->size - off - READ_AHEAD * j->piece
                       : j->piece,
                   MADV_WILLNEED);
        if (populate(host, len, MADV_POPULATE_READ) != 0)
            goto bad_host;
        memcpy(s->buf, host, len);
    } else {
        if (populate(host, len, MADV_POPULATE_WRITE) != 0)
            goto bad_host;
        memcpy(host, s->buf, len);
    }
    return CUDA_SUCCESS;
bad_host:
    if (!atomic_exchange(&j->logged, true))
        vs_error("fast copy: host memory at %p (%llu bytes) cannot be %s; the copy fails "
                 "with CUDA_ERROR_INVALID_VALUE",
                 (void *)host, (unsigned long long)len,
                 j->kind == JOB_TO_DEVICE ? "read" : "written");
    return CUDA_ERROR_INVALID_VALUE;
}

/* The job keeps its first error and stops: no piece is taken after it.
 * Caller holds lock. */
static void job_failed(struct job *j, CUresult rc)
{
    if (j->rc == CUDA_SUCCESS)
        j->rc = rc;
    j->stop = true;
    pthread_cond_broadcast(&wake);
}

static void run_job(struct job *j)
{
    CUresult rc = CUDA_SUCCESS;
    bool pushed = false;
    if (j->kind != JOB_PREFAULT && j->ctx) {
        rc = vs_real.cuCtxPushCurrent_v2(j->ctx);
        pushed = rc == CUDA_SUCCESS;
    }
    pthread_mutex_lock(&lock);
    if (rc != CUDA_SUCCESS)
        job_failed(j, rc);
    for (;;) {
        while (!j->stop && j->next < j->n_pieces && j->next >= j->posted)
            pthread_cond_wait(&wake, &lock);
        if (j->stop || j->next >= j->n_pieces)
            break;
        uint64_t p = j->next++;
        pthread_mutex_unlock(&lock);
        rc = do_piece(j, p);
        pthread_mutex_lock(&lock);
        if (rc != CUDA_SUCCESS) {
            job_failed(j, rc);
        } else if (j->kind != JOB_PREFAULT) {
            slot_of(j, p)->done_piece = (int64_t)p;
        }
        pthread_cond_broadcast(&progress);
    }
    j->workers_done++;
    pthread_cond_broadcast(&progress);
    pthread_mutex_unlock(&lock);
    if (pushed) {
        CUcontext popped;
        vs_real.cuCtxPopCurrent_v2(&popped);
    }
}

static void *work(void *arg)
{
    (void)arg;
    vs_thread_block_signals();
    uint64_t seen = 0;
    for (;;) {
        pthread_mutex_lock(&lock);
        while (generation == seen)
            pthread_cond_wait(&wake, &lock);
        seen = generation;
        struct job *j = current;
        pthread_mutex_unlock(&lock);
        run_job(j);
    }
    return NULL;
}

static void start_workers(void)
{
    started = true;
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    for (uint32_t i = 0; i < n_threads; i++) {
        pthread_t t;
        if (pthread_create(&t, &attr, work, NULL) != 0)
            break;
        n_workers++;
    }
    pthread_attr_destroy(&attr);
    if (n_workers == 0)
        vs_warn("staging: cannot start copy threads; pageable copies go to the driver");
}

/* Hand j to the threads (job_lock held). */
static void begin(struct job *j)
{
    pthread_mutex_lock(&lock);
    current = j;
    generation++;
    pthread_cond_broadcast(&wake);
    pthread_mutex_unlock(&lock);
}

static void finish(struct job *j)
{
    pthread_mutex_lock(&lock);
    while (j->workers_done < (uint32_t)n_workers)
        pthread_cond_wait(&progress, &lock);
    current = NULL;
    pthread_mutex_unlock(&lock);
}

static void fail(struct job *j, CUresult rc)
{
    pthread_mutex_lock(&lock);
    if (j->rc == CUDA_SUCCESS)
        j->rc = rc;
    j->stop = true;
    pthread_cond_broadcast(&wake);
    pthread_mutex_unlock(&lock);
}

/* Wait until the threads finished piece `p` in its slot; false when the job stopped. */
static bool wait_done(struct job *j, int64_t p)
{
    pthread_mutex_lock(&lock);
    while (!j->stop && slot_of(j, (uint64_t)p)->done_piece != p)
        pthread_cond_wait(&progress, &lock);
    bool ok = !j->stop;
    pthread_mutex_unlock(&lock);
    return ok;
}

static void post(struct job *j, uint64_t upto)
{
    pthread_mutex_lock(&lock);
    if (upto > j->n_pieces)
        upto = j->n_pieces;
    if (upto > j->posted)
        j->posted = upto;
    pthread_cond_broadcast(&wake);
    pthread_mutex_unlock(&lock);
}

/* ---- slots ------------------------------------------------------------------ */
static bool make_slot(struct slot *s, CUcontext ctx)
{
    if (vs_budget_charge_pinned(PIECE, &s->pin) != VS_ADMIT)
        return false;
    vs_budget_settle(&s->pin, true);
    void *p = NULL;
    if (vs_real.cuMemHostAlloc(&p, PIECE, CU_MEMHOSTALLOC_PORTABLE) != CUDA_SUCCESS) {
        vs_budget_refund(&s->pin);
        s->pin.bytes = 0;
        return false;
    }
    if (vs_real.cuEventCreate(&s->ev, CU_EVENT_DISABLE_TIMING) != CUDA_SUCCESS) {
        vs_real.cuMemFreeHost(p);
        vs_budget_refund(&s->pin);
        s->pin.bytes = 0;
        return false;
    }
    s->buf = p;
    s->ev_ctx = ctx;
    s->pending = false;
    vs_registry_staging(+(int64_t)PIECE);
    return true;
}

static void free_slot(struct slot *s)
{
    vs_real.cuEventDestroy_v2(s->ev);
    vs_real.cuMemFreeHost(s->buf);
    vs_registry_staging(-(int64_t)PIECE);
    vs_budget_refund(&s->pin);
    memset(s, 0, sizeof *s);
}

/* The slots a copy on stream `key` in ctx may use now (job_lock held, ctx
 * current). A slot still in flight on another stream is left alone: that
 * stream may be waiting for something the program does later. */
static void choose_slots(struct job *j, uintptr_t key)
{
    uint64_t want = j->n_pieces < n_slots ? j->n_pieces : n_slots;
    bool may_make = true;
    j->n_use = 0;
    for (uint32_t i = 0; i < n_slots && j->n_use < want; i++) {
        struct slot *s = &slots[i];
        if (s->buf == NULL && !(may_make && (may_make = make_slot(s, j->ctx))))
            continue; /* the pin budget or the driver says no more */
        if (s->pending && (s->stream_key != key || s->ev_ctx != j->ctx)) {
            if (vs_real.cuEventQuery(s->ev) != CUDA_SUCCESS)
                continue;
            s->pending = false;
        }
        if (s->ev_ctx != j->ctx) { /* an event belongs to the context it was made in */
            CUevent ev;
            if (vs_real.cuEventCreate(&ev, CU_EVENT_DISABLE_TIMING) != CUDA_SUCCESS)
                continue;
            vs_real.cuEventDestroy_v2(s->ev);
            s->ev = ev;
            s->ev_ctx = j->ctx;
        }
        s->done_piece = -1;
        j->use[j->n_use++] = s;
    }
}

/* ---- one copy, on the caller's thread -------------------------------------- */
struct stream_ref {
    CUstream s;
    bool per_thread; /* the _ptsz/_ptds form: NULL names the per-thread stream */
    uintptr_t key;
};

static CUresult issue(const struct stream_ref *st, struct job *j, uint64_t dev, uint64_t p)
{
    struct slot *s = slot_of(j, p);
    uint64_t off = p * j->piece;
    uint64_t len = j->size - off < j->piece ? j->size - off : j->piece;
    CUresult rc;
    if (j->kind == JOB_TO_DEVICE)
        rc = st->per_thread ? vs_real.cuMemcpyHtoDAsync_v2_ptsz(dev + off, s->buf, len, st->s)
                            : vs_real.cuMemcpyHtoDAsync_v2(dev + off, s->buf, len, st->s);
    else
        rc = st->per_thread ? vs_real.cuMemcpyDtoHAsync_v2_ptsz(s->buf, dev + off, len, st->s)
                            : vs_real.cuMemcpyDtoHAsync_v2(s->buf, dev + off, len, st->s);
    if (rc != CUDA_SUCCESS)
        return rc;
    rc = st->per_thread ? vs_real.cuEventRecord_ptsz(s->ev, st->s)
                        : vs_real.cuEventRecord(s->ev, st->s);
    if (rc == CUDA_SUCCESS) {
        s->pending = true;
        s->stream_key = st->key;
        return CUDA_SUCCESS;
    }
    /* No event: the slot is free only once the stream has drained. */
    CUresult (*drain)(CUstream) = st->per_thread ? vs_real.cuStreamSynchronize_ptsz
                                                 : vs_real.cuStreamSynchronize;
    rc = drain ? drain(st->s) : rc;
    if (rc == CUDA_SUCCESS)
        s->pending = false;
    return rc;
}

static CUresult run_copy(CUcontext ctx, uint64_t dev, char *host, uint64_t size,
                         const struct stream_ref *st, bool to_device, bool sync)
{
    struct job j = {.kind = to_device ? JOB_TO_DEVICE : JOB_FROM_DEVICE, .ctx = ctx,
                    .host = host, .size = size, .piece = PIECE,
                    .n_pieces = (size + PIECE - 1) / PIECE, .rc = CUDA_SUCCESS};
    vs_nocancel_begin(); /* the waits below hold job_lock */
    pthread_mutex_lock(&job_lock);
    if (!started)
        start_workers();
    if (n_workers == 0) {
        pthread_mutex_unlock(&job_lock);
        vs_nocancel_end();
        return VS_COPY_PASS;
    }
    choose_slots(&j, st->key);
    if (j.n_use == 0) {
        pthread_mutex_unlock(&job_lock);
        vs_nocancel_end();
        return VS_COPY_PASS;
    }
    if (to_device) /* a file's first pieces are read while the threads start */
        advise(host, size < READ_AHEAD * PIECE ? size : READ_AHEAD * PIECE, MADV_WILLNEED);
    begin(&j);
    CUresult rc = CUDA_SUCCESS;
    if (to_device) {
        post(&j, j.n_use);
        for (uint64_t p = 0; p < j.n_pieces; p++) {
            if (!wait_done(&j, (int64_t)p))
                break;
            rc = issue(st, &j, dev, p);
            if (rc != CUDA_SUCCESS) {
                fail(&j, rc);
                break;
            }
            post(&j, p + j.n_use + 1); /* its slot takes the next piece once reached */
        }
    } else {
        for (uint64_t p = 0; p < j.n_pieces; p++) {
            if (p >= j.n_use && !wait_done(&j, (int64_t)(p - j.n_use)))
                break; /* the slot still holds bytes on their way to the program */
            rc = issue(st, &j, dev, p);
            if (rc != CUDA_SUCCESS) {
                fail(&j, rc);
                break;
            }
            post(&j, p + 1);
        }
    }
    finish(&j);
    rc = j.rc;
    if (rc == CUDA_SUCCESS && sync)
        for (uint32_t i = 0; i < j.n_use && rc == CUDA_SUCCESS; i++)
            rc = wait_slot(j.use[i]);
    pthread_mutex_unlock(&job_lock);
    vs_nocancel_end();
    return rc;
}

/* ---- entry points ------------------------------------------------------------ */
static bool is_device_range(uint64_t dev, uint64_t n)
{
    struct vs_alloc_info a;
    if (!vs_registry_find(dev, &a))
        return false;
    if (a.kind != VS_KIND_DEVICE && a.kind != VS_KIND_ASYNC && a.kind != VS_KIND_VMM)
        return false; /* managed memory: the driver knows best */
    return dev + n <= a.base + a.size && dev + n > dev;
}

static bool capturing(const struct stream_ref *st)
{
    CUstreamCaptureStatus cs = CU_STREAM_CAPTURE_STATUS_NONE;
    CUresult rc = st->per_thread
                      ? (vs_real.cuStreamIsCapturing_ptsz
                             ? vs_real.cuStreamIsCapturing_ptsz(st->s, &cs)
                             : CUDA_SUCCESS)
                      : (vs_real.cuStreamIsCapturing ? vs_real.cuStreamIsCapturing(st->s, &cs)
                                                     : CUDA_SUCCESS);
    return rc != CUDA_SUCCESS || cs != CU_STREAM_CAPTURE_STATUS_NONE;
}

static uintptr_t stream_key(CUstream s, bool per_thread)
{
    if (s == CU_STREAM_PER_THREAD || (s == NULL && per_thread))
        return (uintptr_t)pthread_self() | 1; /* every thread has its own */
    if (s == NULL)
        return (uintptr_t)CU_STREAM_LEGACY;
    return (uintptr_t)s;
}

CUresult vs_fastcopy(uint64_t dev, void *host, uint64_t n, CUstream s, unsigned flags)
{
    if (!vs_real.cuEventCreate || !vs_real.cuEventRecord || !vs_real.cuEventRecord_ptsz ||
        !vs_real.cuEventSynchronize || !vs_real.cuEventQuery || !vs_real.cuMemHostAlloc ||
        !vs_real.cuMemcpyHtoDAsync_v2_ptsz || !vs_real.cuMemcpyDtoHAsync_v2_ptsz ||
        host == NULL)
        return VS_COPY_PASS;
    struct vs_alloc_info a;
    if (vs_registry_find((uint64_t)(uintptr_t)host, &a))
        return VS_COPY_PASS; /* pinned (or device) memory: the driver is at bus speed */
    if (!is_device_range(dev, n))
        return VS_COPY_PASS; /* unknown or too small: the driver gives its own answer */
    CUcontext ctx = NULL;
    if (vs_real.cuCtxGetCurrent(&ctx) != CUDA_SUCCESS || ctx == NULL)
        return VS_COPY_PASS;
    bool per_thread = flags & VS_COPY_PER_THREAD;
    struct stream_ref st = {s, per_thread, stream_key(s, per_thread)};
    if (capturing(&st))
        return VS_COPY_PASS; /* a capture records the driver's own node */
    /* Not all mapped: the driver says what it says about such a pointer. */
    uintptr_t start = page_down((uintptr_t)host);
    if (msync((void *)start, (uintptr_t)host + n - start, MS_ASYNC) != 0)
        return VS_COPY_PASS;
    uint64_t t0 = vs_now_ns();
    CUresult rc = run_copy(ctx, dev, host, n, &st, flags & VS_COPY_TO_DEVICE,
                           flags & VS_COPY_SYNC);
    if (rc == CUDA_SUCCESS)
        vs_count_fast_copy(n, vs_now_ns() - t0);
    else if (rc == VS_COPY_PASS) /* every slot busy on another stream: the driver copies */
        vs_count_fast_copy_fallback();
    return rc;
}

/* Offload: pageable chunks of a backed buffer, with ctx pushed for the copy. */
CUresult vs_staging_copy(CUcontext ctx, uint64_t dev_va, void *host, uint64_t size,
                         bool to_device)
{
    if (size == 0)
        return CUDA_SUCCESS;
    if (!vs_real.cuMemcpyHtoD_v2_ptds || !vs_real.cuMemcpyDtoH_v2_ptds)
        return CUDA_ERROR_NOT_SUPPORTED;
    CUresult rc = ctx ? vs_real.cuCtxPushCurrent_v2(ctx) : CUDA_SUCCESS;
    if (rc != CUDA_SUCCESS)
        return rc;
    rc = VS_COPY_PASS;
    if (vs_real.cuEventCreate && vs_real.cuEventRecord_ptsz && vs_real.cuEventSynchronize &&
        vs_real.cuEventQuery && vs_real.cuMemHostAlloc) {
        struct stream_ref st = {NULL, true, stream_key(NULL, true)};
        rc = run_copy(ctx, dev_va, host, size, &st, to_device, true);
    }
    if (rc == VS_COPY_PASS) /* no staging: slower, never wrong */
        rc = to_device ? vs_real.cuMemcpyHtoD_v2_ptds(dev_va, host, size)
                       : vs_real.cuMemcpyDtoH_v2_ptds(host, dev_va, size);
    if (ctx) {
        CUcontext popped;
        vs_real.cuCtxPopCurrent_v2(&popped);
    }
    return rc;
}

/* Before the driver pins [p, p+n): fault it in on the copy threads, slice by
 * slice, so the driver's own single-threaded walk finds every page present. */
void vs_staging_prefault(void *p, uint64_t n, bool write)
{
    if (n < VS_PREFAULT_MIN || vs_fast_copy_min == UINT64_MAX)
        return;
    pthread_once(&probe_once, probe_populate);
    if (atomic_load_explicit(&populate_unsupported, memory_order_relaxed))
        return; /* the driver faults the pages in, as before */
    struct job j = {.kind = JOB_PREFAULT, .host = p, .size = n, .piece = PREFAULT_SLICE,
                    .n_pieces = (n + PREFAULT_SLICE - 1) / PREFAULT_SLICE,
                    .advice = write ? MADV_POPULATE_WRITE : MADV_POPULATE_READ,
                    .rc = CUDA_SUCCESS};
    uint64_t t0 = vs_now_ns();
    vs_nocancel_begin();
    pthread_mutex_lock(&job_lock);
    if (!started)
        start_workers();
    if (n_workers > 0) {
        begin(&j);
        post(&j, j.n_pieces);
        finish(&j);
    }
    pthread_mutex_unlock(&job_lock);
    vs_nocancel_end();
    if (n_workers > 0 && j.rc == CUDA_SUCCESS)
        vs_count_prefault(n, vs_now_ns() - t0);
}

/* Give the staging slots back to the pin budget (the program's own pins come
 * first); they are made again by the next copy. A slot the device may still
 * be reading or writing is kept. */
uint64_t vs_staging_release(void)
{
    uint64_t freed = 0;
    if (pthread_mutex_trylock(&job_lock) != 0)
        return 0; /* a copy is running: its slots are in use */
    for (uint32_t i = 0; i < MAX_SLOTS; i++) {
        struct slot *s = &slots[i];
        if (s->buf == NULL)
            continue;
        if (s->pending && vs_real.cuEventQuery(s->ev) != CUDA_SUCCESS)
            continue;
        free_slot(s);
        freed += PIECE;
    }
    pthread_mutex_unlock(&job_lock);
    return freed;
}

/* The threads are gone in a forked child; its staging slots are not its own. */
void vs_staging_atfork_child(void)
{
    pthread_mutex_init(&job_lock, NULL);
    pthread_mutex_init(&lock, NULL);
    pthread_cond_init(&wake, NULL);
    pthread_cond_init(&progress, NULL);
    memset(slots, 0, sizeof slots);
    probe_once = (pthread_once_t)PTHREAD_ONCE_INIT;
    n_workers = 0;
    started = false;
    current = NULL;
    generation = 0;
}
