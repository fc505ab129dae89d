/*
 * hostile.c: see hostile.h. Each hostile thread owns the buffers it works
 * on (the freer owns those handed to it), so the shadows stay exact while
 * moves, evictions and frees happen under everyone's feet.
 */
#include "hostile.h"
#include "scenario.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <string.h>

#define K (1ULL << 10)
#define M (1ULL << 20)
#define CAP_BUFS 2
#define CAP_BYTES (2 * M + 512 * K)
#define CB_DEVICE (2 * M)
#define CB_HOST_MAX (512 * K)

static struct {
    CUresult (*alloc)(CUdeviceptr *, size_t);
    CUresult (*release)(CUdeviceptr);
    CUresult (*htod)(CUdeviceptr, const void *, size_t);
    CUresult (*dtoh)(void *, CUdeviceptr, size_t);
    CUresult (*htod_async)(CUdeviceptr, const void *, size_t, CUstream);
    CUresult (*host_alloc)(void **, size_t, unsigned);
    CUresult (*host_free)(void *);
    CUresult (*launch)(CUfunction, unsigned, unsigned, unsigned, unsigned, unsigned,
                       unsigned, unsigned, CUstream, void **, void **);
    CUresult (*host_fn)(CUstream, CUhostFn, void *);
    CUresult (*stream_create)(CUstream *, unsigned);
    CUresult (*stream_sync)(CUstream);
    CUresult (*begin)(CUstream, CUstreamCaptureMode);
    CUresult (*end)(CUstream, CUgraph *);
    CUresult (*instantiate)(CUgraphExec *, CUgraph, unsigned long long);
    CUresult (*graph_launch)(CUgraphExec, CUstream);
    CUresult (*graph_destroy)(CUgraph);
    CUresult (*exec_destroy)(CUgraphExec);
    CUresult (*set_ctx)(CUcontext);
    int (*offload)(uint64_t);
} cu;

static struct hostile_setup setup;
static pthread_t threads[HOSTILE_N];
static pthread_barrier_t meet;
static char sock[108];

/* tickets, the freer's mailbox, the phase flag and the end, under mu */
static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cv = PTHREAD_COND_INITIALIZER;
static unsigned tickets[HOSTILE_N];
static bool phase_pending, stopping;
struct given {
    CUdeviceptr p;
    size_t n;
    unsigned char *shadow;
    struct given *next;
};
static struct given *mailbox;

/* what the test holds, to compare with the stats at a quiet point */
static _Atomic int64_t held_device, held_pinned;
static _Atomic unsigned long done[HOSTILE_N];
/* odd while a capture is under way; moves past each begin and end */
static _Atomic uint64_t capture_epoch;

static const char *const names[HOSTILE_N] = {"frees", "captures", "callback rounds",
                                             "evict/free requests"};

static void launch_xor(CUdeviceptr p, uint64_t n, uint32_t key, CUstream s)
{
    void *params[] = {&p, &n, &key};
    CHECK_CU(cu.launch(setup.xor_kernel, 1, 1, 1, 1, 1, 1, 0, s, params, NULL));
}

static void flip(unsigned char *b, size_t n, unsigned char key)
{
    for (size_t i = 0; i < n; i++)
        b[i] ^= key;
}

static CUdeviceptr alloc_filled(size_t n, unsigned char *shadow, unsigned seed)
{
    CUdeviceptr p;
    check_fill(shadow, n, seed);
    CHECK_CU(cu.alloc(&p, n));
    CHECK_CU(cu.htod(p, shadow, n));
    held_device += (int64_t)n;
    return p;
}

void hostile_account(int64_t device_bytes)
{
    held_device += device_bytes;
}

uint64_t hostile_capture_mark(void)
{
    return atomic_load(&capture_epoch);
}

bool hostile_capture_overlapped(uint64_t mark)
{
    return (mark & 1) || atomic_load(&capture_epoch) != mark;
}

/* ---- the quiet point --------------------------------------------------------- */

static void check_books(int op)
{
    char where[80];
    snprintf(where, sizeof where, "at the phase after %d operations per thread", op);
    check_invariants(where);
    json_t *st = stats_get();
    uint64_t allocated = stats_u64(st, "devices.0.allocated");
    CHECK(allocated == (uint64_t)atomic_load(&held_device),
          "%s: %llu bytes allocated, the test holds %lld", where,
          (unsigned long long)allocated, (long long)atomic_load(&held_device));
    CHECK(stats_u64(st, "devices.0.resident") + stats_u64(st, "devices.0.offloaded_pinned") +
                  stats_u64(st, "devices.0.offloaded_pageable") ==
              allocated,
          "%s: resident + offloaded != allocated", where);
    CHECK(stats_u64(st, "pinned.offload") == stats_u64(st, "devices.0.offloaded_pinned"),
          "%s: pinned.offload %llu, offloaded_pinned %llu", where,
          (unsigned long long)stats_u64(st, "pinned.offload"),
          (unsigned long long)stats_u64(st, "devices.0.offloaded_pinned"));
    CHECK(stats_u64(st, "pinned.app") == (uint64_t)atomic_load(&held_pinned),
          "%s: pinned.app %llu, the test holds %lld", where,
          (unsigned long long)stats_u64(st, "pinned.app"),
          (long long)atomic_load(&held_pinned));
    json_decref(st);
}

/* All threads meet; one checks the books while none runs. */
static void meet_and_check(int op)
{
    if (pthread_barrier_wait(&meet) == PTHREAD_BARRIER_SERIAL_THREAD) {
        check_books(op);
        pthread_mutex_lock(&mu);
        phase_pending = false;
        pthread_mutex_unlock(&mu);
    }
    pthread_barrier_wait(&meet);
}

void hostile_phase(int op)
{
    pthread_mutex_lock(&mu);
    phase_pending = true;
    pthread_cond_broadcast(&cv);
    pthread_mutex_unlock(&mu);
    meet_and_check(op);
}

void hostile_ticket(enum hostile_kind kind)
{
    pthread_mutex_lock(&mu);
    tickets[kind]++;
    pthread_cond_broadcast(&cv);
    pthread_mutex_unlock(&mu);
}

void hostile_give(CUdeviceptr p, size_t n, unsigned char *shadow)
{
    struct given *g = malloc(sizeof *g);
    CHECK(g != NULL, "malloc");
    *g = (struct given){.p = p, .n = n, .shadow = shadow};
    pthread_mutex_lock(&mu);
    g->next = mailbox;
    mailbox = g;
    tickets[HOSTILE_FREE]++;
    pthread_cond_broadcast(&cv);
    pthread_mutex_unlock(&mu);
}

/* What a hostile thread does next: meet the others (a phase), one
 * operation (a ticket), or end (false). */
enum next { NEXT_PHASE, NEXT_WORK, NEXT_END };
static enum next wait_next(enum hostile_kind kind)
{
    pthread_mutex_lock(&mu);
    while (!phase_pending && tickets[kind] == 0 && !stopping)
        pthread_cond_wait(&cv, &mu);
    enum next n = phase_pending ? NEXT_PHASE : tickets[kind] ? NEXT_WORK : NEXT_END;
    if (n == NEXT_WORK)
        tickets[kind]--;
    pthread_mutex_unlock(&mu);
    return n;
}

/* ---- the freer ----------------------------------------------------------------- */

static void *freer(void *arg)
{
    (void)arg;
    CHECK_CU(cu.set_ctx(setup.ctx));
    for (enum next n; (n = wait_next(HOSTILE_FREE)) != NEXT_END;) {
        if (n == NEXT_PHASE) {
            meet_and_check(-1);
            /* the buffers waiting to be freed are the freer's: every byte */
            pthread_mutex_lock(&mu);
            for (struct given *g = mailbox; g; g = g->next)
                check_device_bytes(cu.dtoh, g->p, g->shadow, g->n, "a buffer given to the freer");
            pthread_mutex_unlock(&mu);
            continue;
        }
        pthread_mutex_lock(&mu);
        struct given *g = mailbox;
        mailbox = g->next;
        pthread_mutex_unlock(&mu);
        check_device_bytes(cu.dtoh, g->p, g->shadow, g->n, "a buffer about to be freed");
        CHECK_CU(cu.release(g->p));
        held_device -= (int64_t)g->n;
        free(g->shadow);
        free(g);
        done[HOSTILE_FREE]++;
    }
    return NULL;
}

/* ---- the capturer -------------------------------------------------------------- */

static void *capturer(void *arg)
{
    (void)arg;
    uint64_t rnd = setup.seed ^ 0xc0ffee;
    CHECK_CU(cu.set_ctx(setup.ctx));
    CUstream s;
    /* non-blocking: no implicit ordering with the legacy stream, which the
     * run's synchronous copies use (a capture may not depend on it) */
    CHECK_CU(cu.stream_create(&s, CU_STREAM_NON_BLOCKING));
    CUdeviceptr buf[CAP_BUFS];
    unsigned char *shadow[CAP_BUFS];
    for (int i = 0; i < CAP_BUFS; i++) {
        shadow[i] = malloc(CAP_BYTES);
        buf[i] = alloc_filled(CAP_BYTES, shadow[i], 40u + (unsigned)i);
    }
    for (enum next n; (n = wait_next(HOSTILE_CAPTURE)) != NEXT_END;) {
        if (n == NEXT_PHASE) {
            meet_and_check(-1);
            for (int i = 0; i < CAP_BUFS; i++)
                check_device_bytes(cu.dtoh, buf[i], shadow[i], CAP_BYTES, "a captured buffer");
            continue;
        }
        int i = (int)(check_rnd(&rnd) % CAP_BUFS);
        size_t len = 1 + check_rnd(&rnd) % (256 * K), off = check_rnd(&rnd) % (CAP_BYTES - len);
        uint32_t key = (uint32_t)(check_rnd(&rnd) % 255 + 1);
        if (check_rnd(&rnd) % 4 == 0) { /* the captured kernel names a buffer that is out */
            int rc = cu.offload(buf[i]);
            CHECK(rc == 0 || rc == -ENOMEM || rc == -EBUSY, "offload before a capture: %d", rc);
        }
        CUstreamCaptureMode mode = check_rnd(&rnd) % 2 ? CU_STREAM_CAPTURE_MODE_RELAXED
                                                       : CU_STREAM_CAPTURE_MODE_THREAD_LOCAL;
        capture_epoch++; /* odd: under way */
        CHECK_CU(cu.begin(s, mode));
        launch_xor(buf[i] + off, len, key, s);
        CUgraph g = NULL;
        CUresult rc = cu.end(s, &g);
        capture_epoch++;
        CHECK(rc == CUDA_SUCCESS && g != NULL, "a capture under pressure ended with %d", (int)rc);
        CUgraphExec ge;
        CHECK_CU(cu.instantiate(&ge, g, 0));
        /* the recorded kernel ran nowhere yet: the bytes are as they were */
        int replays = 1 + (int)(check_rnd(&rnd) % 2);
        for (int r = 0; r < replays; r++) {
            CHECK_CU(cu.graph_launch(ge, s));
            flip(shadow[i] + off, len, (unsigned char)key);
        }
        CHECK_CU(cu.stream_sync(s));
        CHECK_CU(cu.exec_destroy(ge));
        CHECK_CU(cu.graph_destroy(g));
        done[HOSTILE_CAPTURE]++;
    }
    for (int i = 0; i < CAP_BUFS; i++) {
        check_device_bytes(cu.dtoh, buf[i], shadow[i], CAP_BYTES, "a captured buffer at the end");
        CHECK_CU(cu.release(buf[i]));
        held_device -= (int64_t)CAP_BYTES;
        free(shadow[i]);
    }
    return NULL;
}

/* ---- the caller-back ----------------------------------------------------------- */

struct fill {
    unsigned char *host;
    size_t len;
    unsigned seed;
    unsigned long calls;
};

/* A host callback: the program's own code on the stream's thread, writing
 * pinned memory that a copy queued behind it reads. */
static void fill_cb(void *arg)
{
    struct fill *f = arg;
    check_fill(f->host, f->len, f->seed);
    f->calls++;
}

static void *caller_back(void *arg)
{
    (void)arg;
    uint64_t rnd = setup.seed ^ 0xca11;
    CHECK_CU(cu.set_ctx(setup.ctx));
    CUstream s;
    CHECK_CU(cu.stream_create(&s, CU_STREAM_NON_BLOCKING));
    unsigned char *shadow = malloc(CB_DEVICE), *want = malloc(CB_HOST_MAX);
    CUdeviceptr dev = alloc_filled(CB_DEVICE, shadow, 50);
    size_t host_n = 0;
    void *host = NULL;
    struct fill f = {0};
    for (enum next n; (n = wait_next(HOSTILE_CALLBACK)) != NEXT_END;) {
        if (n == NEXT_PHASE) {
            meet_and_check(-1);
            check_device_bytes(cu.dtoh, dev, shadow, CB_DEVICE, "the callbacks' buffer");
            continue;
        }
        if (host == NULL || check_rnd(&rnd) % 8 == 0) { /* new pins, another size */
            if (host) {
                CHECK_CU(cu.host_free(host));
                held_pinned -= (int64_t)host_n;
            }
            host_n = (1 + check_rnd(&rnd) % (CB_HOST_MAX / (64 * K))) * 64 * K;
            CHECK_CU(cu.host_alloc(&host, host_n, 0));
            held_pinned += (int64_t)host_n;
        }
        f.host = host;
        f.len = 1 + check_rnd(&rnd) % host_n;
        f.seed = (unsigned)check_rnd(&rnd);
        size_t off = check_rnd(&rnd) % (CB_DEVICE - f.len);
        uint32_t key = (uint32_t)(check_rnd(&rnd) % 255 + 1);
        unsigned long calls = f.calls;
        CHECK_CU(cu.host_fn(s, fill_cb, &f));
        CHECK_CU(cu.htod_async(dev + off, host, f.len, s));
        launch_xor(dev + off, f.len, key, s);
        CHECK_CU(cu.stream_sync(s));
        CHECK(f.calls == calls + 1, "the host callback ran %lu times", f.calls - calls);
        check_fill(want, f.len, f.seed);
        CHECK(memcmp(host, want, f.len) == 0, "the callback's bytes in pinned memory");
        memcpy(shadow + off, want, f.len);
        flip(shadow + off, f.len, (unsigned char)key);
        done[HOSTILE_CALLBACK]++;
    }
    check_device_bytes(cu.dtoh, dev, shadow, CB_DEVICE, "the callbacks' buffer at the end");
    CHECK_CU(cu.release(dev));
    held_device -= (int64_t)CB_DEVICE;
    if (host) {
        CHECK_CU(cu.host_free(host));
        held_pinned -= (int64_t)host_n;
    }
    free(shadow);
    free(want);
    return NULL;
}

/* ---- the requester ------------------------------------------------------------- */

static void *requester(void *arg)
{
    (void)arg;
    uint64_t rnd = setup.seed ^ 0x50c4;
    for (enum next n; (n = wait_next(HOSTILE_REQUEST)) != NEXT_END;) {
        if (n == NEXT_PHASE) {
            meet_and_check(-1);
            continue;
        }
        const char *line = check_rnd(&rnd) % 2 ? "{\"cmd\":\"free\"}\n" : "{\"cmd\":\"evict\"}\n";
        char answer[512];
        scenario_ask(sock, line, answer, sizeof answer);
        CHECK(strncmp(answer, "{\"ok\":true,\"moved\":", 19) == 0, "%s answered %s", line,
              answer);
        done[HOSTILE_REQUEST]++;
    }
    return NULL;
}

/* ---- start and stop ------------------------------------------------------------ */

void hostile_start(const struct hostile_setup *s)
{
    setup = *s;
    void *lib = s->lib;
    cu.alloc = check_sym(lib, "cuMemAlloc_v2");
    cu.release = check_sym(lib, "cuMemFree_v2");
    cu.htod = check_sym(lib, "cuMemcpyHtoD_v2");
    cu.dtoh = check_sym(lib, "cuMemcpyDtoH_v2");
    cu.htod_async = check_sym(lib, "cuMemcpyHtoDAsync_v2");
    cu.host_alloc = check_sym(lib, "cuMemHostAlloc");
    cu.host_free = check_sym(lib, "cuMemFreeHost");
    cu.launch = check_sym(lib, "cuLaunchKernel");
    cu.host_fn = check_sym(lib, "cuLaunchHostFunc");
    cu.stream_create = check_sym(lib, "cuStreamCreate");
    cu.stream_sync = check_sym(lib, "cuStreamSynchronize");
    cu.begin = check_sym(lib, "cuStreamBeginCapture_v2");
    cu.end = check_sym(lib, "cuStreamEndCapture");
    cu.instantiate = check_sym(lib, "cuGraphInstantiateWithFlags");
    cu.graph_launch = check_sym(lib, "cuGraphLaunch");
    cu.graph_destroy = check_sym(lib, "cuGraphDestroy");
    cu.exec_destroy = check_sym(lib, "cuGraphExecDestroy");
    cu.set_ctx = check_sym(lib, "cuCtxSetCurrent");
    cu.offload = check_api("vramshim_offload");
    scenario_own_socket(sock, sizeof sock);
    held_device = held_pinned = 0;
    stopping = phase_pending = false;
    pthread_barrier_init(&meet, NULL, (unsigned)(s->run_threads + HOSTILE_N));
    void *(*const mains[HOSTILE_N])(void *) = {freer, capturer, caller_back, requester};
    for (int k = 0; k < HOSTILE_N; k++)
        CHECK(pthread_create(&threads[k], NULL, mains[k], NULL) == 0, "thread");
}

void hostile_stop(void)
{
    pthread_mutex_lock(&mu);
    stopping = true;
    pthread_cond_broadcast(&cv);
    pthread_mutex_unlock(&mu);
    for (int k = 0; k < HOSTILE_N; k++)
        pthread_join(threads[k], NULL);
    pthread_barrier_destroy(&meet);
    CHECK(mailbox == NULL, "buffers left in the freer's mailbox");
    CHECK(atomic_load(&held_device) == 0, "the test still holds %lld device bytes",
          (long long)atomic_load(&held_device));
    printf("hostile threads (seed %llu):", (unsigned long long)setup.seed);
    for (int k = 0; k < HOSTILE_N; k++)
        printf(" %lu %s%s", (unsigned long)done[k], names[k], k + 1 < HOSTILE_N ? "," : "\n");
}

void hostile_run(const struct hostile_setup *s, void *(*run_main)(void *))
{
    hostile_start(s);
    pthread_t *t = calloc((size_t)s->run_threads, sizeof *t);
    CHECK(t != NULL, "calloc");
    for (uintptr_t i = 0; i < (uintptr_t)s->run_threads; i++)
        CHECK(pthread_create(&t[i], NULL, run_main, (void *)i) == 0, "thread");
    for (int i = 0; i < s->run_threads; i++)
        pthread_join(t[i], NULL);
    free(t);
    hostile_stop();
}
