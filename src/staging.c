/*
 * staging.c: copies between device addresses and pageable host memory.
 *
 * A plain copy from pageable memory runs at about a fifth of the bus (12
 * against 55 GB/s on an H100): the driver copies through its own small
 * bounce buffer, one piece at a time. Pageable offload does that work
 * itself: the copy is cut into pieces of STAGE_BYTES, and COPY_THREADS
 * threads each own one page-locked staging buffer; a thread copies a piece
 * between pageable memory and its staging buffer with the CPU while the
 * others' pieces cross the bus, so CPU copies and DMA overlap.
 *
 * Staging buffers are page-locked, so they are charged to the pin budget
 * and reported as pinned.staging. A thread that cannot get one (the budget
 * is spent, or the driver refuses) copies its pieces directly from the
 * pageable memory: slower, never wrong. The threads start with the first
 * pageable move, never on an allocation or launch path, and wait on a
 * condition variable between jobs.
 */
#include "offload_internal.h"

#include <pthread.h>
#include <signal.h>
#include <string.h>

#define COPY_THREADS 4
#define STAGE_BYTES (8ULL << 20)

struct job {
    CUcontext ctx;
    uint64_t dev_va;
    char *host;
    uint64_t size;
    bool to_device;
    uint64_t n_pieces;
    _Atomic uint64_t next_piece;
    uint32_t done_workers;
    CUresult rc;
};

struct worker {
    pthread_t thread;
    void *stage;          /* NULL: copy directly */
    struct vs_charge pin; /* the stage's share of the pin budget */
    bool stage_tried;
};

static pthread_mutex_t job_lock = PTHREAD_MUTEX_INITIALIZER; /* one job at a time */
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t wake = PTHREAD_COND_INITIALIZER, finished = PTHREAD_COND_INITIALIZER;
static struct job *current;
static uint64_t generation;
static struct worker workers[COPY_THREADS];
static int n_workers;
static bool started;

/* The stage is made lazily in the worker, with the job's context current. */
static void ensure_stage(struct worker *w)
{
    if (w->stage_tried)
        return;
    w->stage_tried = true;
    if (vs_budget_charge_pinned(STAGE_BYTES, &w->pin) != VS_ADMIT)
        return;
    vs_budget_settle(&w->pin, true);
    void *p = NULL;
    if (vs_real.cuMemHostAlloc &&
        vs_real.cuMemHostAlloc(&p, STAGE_BYTES, CU_MEMHOSTALLOC_PORTABLE) == CUDA_SUCCESS) {
        w->stage = p;
        vs_registry_staging(+(int64_t)STAGE_BYTES);
    } else {
        vs_budget_refund(&w->pin);
        w->pin.bytes = 0;
    }
}

static CUresult copy_piece(struct worker *w, const struct job *j, uint64_t off, uint64_t len)
{
    uint64_t va = j->dev_va + off;
    char *host = j->host + off;
    if (w->stage == NULL)
        return j->to_device ? vs_real.cuMemcpyHtoD_v2_ptds(va, host, len)
                            : vs_real.cuMemcpyDtoH_v2_ptds(host, va, len);
    if (j->to_device) {
        memcpy(w->stage, host, len);
        return vs_real.cuMemcpyHtoD_v2_ptds(va, w->stage, len);
    }
    CUresult rc = vs_real.cuMemcpyDtoH_v2_ptds(w->stage, va, len);
    if (rc == CUDA_SUCCESS)
        memcpy(host, w->stage, len);
    return rc;
}

static void run_job(struct worker *w, struct job *j)
{
    CUresult rc = CUDA_SUCCESS;
    if (j->ctx)
        rc = vs_real.cuCtxPushCurrent_v2(j->ctx);
    if (rc == CUDA_SUCCESS) {
        ensure_stage(w);
        for (;;) {
            uint64_t piece = atomic_fetch_add(&j->next_piece, 1);
            if (piece >= j->n_pieces)
                break;
            uint64_t off = piece * STAGE_BYTES;
            uint64_t len = j->size - off < STAGE_BYTES ? j->size - off : STAGE_BYTES;
            rc = copy_piece(w, j, off, len);
            if (rc != CUDA_SUCCESS) {
                atomic_store(&j->next_piece, j->n_pieces); /* the others stop too */
                break;
            }
        }
        CUcontext popped;
        if (j->ctx)
            vs_real.cuCtxPopCurrent_v2(&popped);
    }
    pthread_mutex_lock(&lock);
    if (rc != CUDA_SUCCESS && j->rc == CUDA_SUCCESS)
        j->rc = rc;
    if (++j->done_workers == (uint32_t)n_workers)
        pthread_cond_signal(&finished);
    pthread_mutex_unlock(&lock);
}

static void *work(void *arg)
{
    struct worker *w = arg;
    sigset_t all;
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, NULL); /* the program's signals are its own */
    uint64_t seen = 0;
    for (;;) {
        pthread_mutex_lock(&lock);
        while (generation == seen)
            pthread_cond_wait(&wake, &lock);
        seen = generation;
        struct job *j = current;
        pthread_mutex_unlock(&lock);
        run_job(w, j);
    }
    return NULL;
}

static void start_workers(void)
{
    started = true;
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    for (int i = 0; i < COPY_THREADS; i++) {
        if (pthread_create(&workers[i].thread, &attr, work, &workers[i]) != 0)
            break;
        n_workers++;
    }
    pthread_attr_destroy(&attr);
    if (n_workers == 0)
        vs_warn("offload: cannot start copy threads; pageable copies run unstaged");
}

CUresult vs_staging_copy(CUcontext ctx, uint64_t dev_va, void *host, uint64_t size,
                         bool to_device)
{
    if (size == 0)
        return CUDA_SUCCESS;
    if (!vs_real.cuMemcpyHtoD_v2_ptds || !vs_real.cuMemcpyDtoH_v2_ptds)
        return CUDA_ERROR_NOT_SUPPORTED;
    pthread_mutex_lock(&job_lock);
    if (!started)
        start_workers();
    struct job j = {.ctx = ctx, .dev_va = dev_va, .host = host, .size = size,
                    .to_device = to_device,
                    .n_pieces = (size + STAGE_BYTES - 1) / STAGE_BYTES,
                    .rc = CUDA_SUCCESS};
    CUresult rc;
    if (n_workers == 0) { /* the caller has its context current */
        rc = to_device ? vs_real.cuMemcpyHtoD_v2_ptds(dev_va, host, size)
                       : vs_real.cuMemcpyDtoH_v2_ptds(host, dev_va, size);
    } else {
        pthread_mutex_lock(&lock);
        current = &j;
        generation++;
        pthread_cond_broadcast(&wake);
        while (j.done_workers < (uint32_t)n_workers)
            pthread_cond_wait(&finished, &lock);
        current = NULL;
        pthread_mutex_unlock(&lock);
        rc = j.rc;
    }
    pthread_mutex_unlock(&job_lock);
    return rc;
}

/* Give the staging buffers back to the pin budget (the program's own pins
 * come first); they are made again by the next pageable move. */
uint64_t vs_staging_release(void)
{
    uint64_t freed = 0;
    if (pthread_mutex_trylock(&job_lock) != 0)
        return 0; /* a copy is running: its stages are in use */
    for (int i = 0; i < n_workers; i++) {
        struct worker *w = &workers[i];
        if (w->stage) {
            vs_real.cuMemFreeHost(w->stage);
            vs_registry_staging(-(int64_t)STAGE_BYTES);
            vs_budget_refund(&w->pin);
            freed += STAGE_BYTES;
        }
        w->stage = NULL;
        w->pin.bytes = 0;
        w->stage_tried = false;
    }
    pthread_mutex_unlock(&job_lock);
    return freed;
}

/* The threads are gone in a forked child; its staging buffers are not its own. */
void vs_staging_atfork_child(void)
{
    pthread_mutex_init(&job_lock, NULL);
    pthread_mutex_init(&lock, NULL);
    pthread_cond_init(&wake, NULL);
    pthread_cond_init(&finished, NULL);
    memset(workers, 0, sizeof workers);
    n_workers = 0;
    started = false;
    current = NULL;
    generation = 0;
}
