/*
 * fence.c: waiting for the device to finish what was queued before a move,
 * without ever waiting forever inside the program's call.
 *
 * A move (chunk.c) must not copy a chunk's bytes while queued work may
 * still read or write them, so it waits for every context that can reach
 * the buffer to drain. A plain cuCtxSynchronize in the calling thread can
 * hang the program: a stream may hold a host callback (cuLaunchHostFunc)
 * or a cuStreamWaitValue32 that waits for something this same thread does
 * after the call vramshim is inside, or a kernel waiting for a peer the
 * program has not launched yet. So the synchronise runs on a waiter thread
 * of vramshim's own and the caller waits for it with a deadline
 * (VRAMSHIM_FENCE_MS). Past the deadline the fence fails and the caller
 * falls back as the driver would (nothing moves: an allocation that needed
 * room gets CUDA_ERROR_OUT_OF_MEMORY, a buffer that could not come back
 * stays in pinned memory, which kernels reach). The waiter stays in its
 * synchronise until the context drains; meanwhile every fence fails at
 * once, so a program whose stream waits on itself pays the deadline once,
 * not on every call.
 *
 * No synchronise while a stream capture is under way: it would invalidate
 * the capture (CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED, then
 * CUDA_ERROR_STREAM_CAPTURE_INVALIDATED at cuStreamEndCapture). The hooks
 * of cuStreamBeginCapture* / cuStreamEndCapture count captures in flight,
 * process-wide (a capture in global mode forbids unsafe calls from every
 * thread); while any is, fences fail at once. Captures and vramshim's own
 * synchronises (the waiter's, and a free's drain in chunk.c) exclude each
 * other: a capture begins only once no synchronise is in flight, and a
 * synchronise starts only while no capture is under way. Each side waits
 * for the other at most VRAMSHIM_FENCE_MS (a synchronise may be held up by
 * the program's own stream, a capture by the program's own thread), and
 * then goes ahead as it would have without vramshim: the fence fails, the
 * capture begins, a free's drain synchronises anyway (its memory may still
 * be in use: losing a capture is better than faulting).
 */
#include "offload_internal.h"

#include <errno.h>
#include <pthread.h>
#include <time.h>

static uint32_t fence_ms = 5000;
static _Atomic int captures; /* stream captures begun and not yet ended */

/* captures and synchronises excluding each other (see the header) */
static pthread_mutex_t excl_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t excl_cv; /* on CLOCK_MONOTONIC, set up in vs_fence_setup */
static int syncing;            /* vramshim's synchronises in flight, under excl_mu */

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t asked_cv = PTHREAD_COND_INITIALIZER;
static pthread_cond_t answered_cv; /* on CLOCK_MONOTONIC, set up in vs_fence_setup */
static bool started, busy;         /* busy: the waiter is inside a synchronise */
static uint64_t n_asked, n_answered;
static CUcontext want[VS_FENCE_MAX_CTX];
static int n_want;
static CUresult answer;
static _Atomic bool warned;

void vs_fence_setup(uint32_t ms)
{
    fence_ms = ms;
    pthread_condattr_t attr;
    pthread_condattr_init(&attr);
    pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    pthread_cond_init(&answered_cv, &attr);
    pthread_cond_init(&excl_cv, &attr);
    pthread_condattr_destroy(&attr);
}

static struct timespec deadline_in(uint32_t ms)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    t.tv_sec += ms / 1000;
    t.tv_nsec += (long)(ms % 1000) * 1000000L;
    if (t.tv_nsec >= 1000000000L) {
        t.tv_sec++;
        t.tv_nsec -= 1000000000L;
    }
    return t;
}

void vs_capture_begin(void)
{
    vs_nocancel_begin(); /* cancelled in the wait, excl_mu would stay held */
    pthread_mutex_lock(&excl_mu);
    atomic_fetch_add(&captures, 1); /* no synchronise starts from now on */
    struct timespec deadline = deadline_in(fence_ms);
    while (syncing > 0)
        if (pthread_cond_timedwait(&excl_cv, &excl_mu, &deadline) == ETIMEDOUT) {
            vs_warn("offload: a stream capture begins while vramshim still waits for the "
                    "device (%u ms); the driver may invalidate it", fence_ms);
            break;
        }
    pthread_mutex_unlock(&excl_mu);
    vs_nocancel_end();
}

void vs_capture_end(void)
{
    pthread_mutex_lock(&excl_mu);
    int n = atomic_load(&captures);
    if (n > 0)
        atomic_store(&captures, n - 1);
    pthread_cond_broadcast(&excl_cv);
    pthread_mutex_unlock(&excl_mu);
}

bool vs_sync_enter(bool wait)
{
    vs_nocancel_begin();
    pthread_mutex_lock(&excl_mu);
    struct timespec deadline = deadline_in(wait ? fence_ms : 0);
    while (atomic_load(&captures) > 0)
        if (!wait || pthread_cond_timedwait(&excl_cv, &excl_mu, &deadline) == ETIMEDOUT)
            break;
    bool quiet = atomic_load(&captures) == 0;
    if (quiet || wait)
        syncing++;
    pthread_mutex_unlock(&excl_mu);
    vs_nocancel_end();
    return quiet;
}

void vs_sync_exit(void)
{
    pthread_mutex_lock(&excl_mu);
    syncing--;
    pthread_cond_broadcast(&excl_cv);
    pthread_mutex_unlock(&excl_mu);
}

bool vs_capture_active(void)
{
    return atomic_load(&captures) > 0;
}

static void *waiter_main(void *arg)
{
    (void)arg;
    vs_thread_block_signals();
    pthread_mutex_lock(&mu);
    for (;;) {
        while (n_answered == n_asked)
            pthread_cond_wait(&asked_cv, &mu);
        uint64_t id = n_asked;
        CUcontext ctx[VS_FENCE_MAX_CTX];
        int n = n_want;
        for (int i = 0; i < n; i++)
            ctx[i] = want[i];
        pthread_mutex_unlock(&mu);
        CUresult rc = CUDA_SUCCESS;
        if (vs_sync_enter(false)) {
            for (int i = 0; i < n && rc == CUDA_SUCCESS; i++) {
                CUcontext popped;
                rc = ctx[i] ? vs_real.cuCtxPushCurrent_v2(ctx[i]) : CUDA_SUCCESS;
                if (rc == CUDA_SUCCESS)
                    rc = vs_real.cuCtxSynchronize();
                if (ctx[i])
                    vs_real.cuCtxPopCurrent_v2(&popped);
            }
            vs_sync_exit();
        } else {
            rc = CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED; /* one began since the ask */
        }
        pthread_mutex_lock(&mu);
        n_answered = id;
        answer = rc;
        busy = false;
        pthread_cond_broadcast(&answered_cv);
    }
    return NULL;
}

/* Caller holds mu. */
static bool start_waiter(void)
{
    if (started)
        return true;
    pthread_t t;
    if (pthread_create(&t, NULL, waiter_main, NULL) != 0)
        return false;
    pthread_detach(t);
    started = true;
    return true;
}

CUresult vs_fence_wait(const CUcontext *ctxs, int n)
{
    if (vs_capture_active())
        return CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED;
    if (n > VS_FENCE_MAX_CTX)
        n = VS_FENCE_MAX_CTX;
    pthread_mutex_lock(&mu);
    if (busy) { /* an earlier fence's synchronise has not come back */
        pthread_mutex_unlock(&mu);
        return CUDA_ERROR_NOT_READY;
    }
    if (!start_waiter()) {
        pthread_mutex_unlock(&mu);
        vs_warn("offload: no thread to wait for the device on; nothing moves");
        return CUDA_ERROR_OUT_OF_MEMORY;
    }
    for (int i = 0; i < n; i++)
        want[i] = ctxs[i];
    n_want = n;
    uint64_t id = ++n_asked;
    busy = true;
    pthread_cond_signal(&asked_cv);
    struct timespec deadline = deadline_in(fence_ms);
    while (n_answered < id)
        if (pthread_cond_timedwait(&answered_cv, &mu, &deadline) == ETIMEDOUT)
            break;
    CUresult rc = n_answered >= id ? answer : CUDA_ERROR_NOT_READY;
    pthread_mutex_unlock(&mu);
    if (rc == CUDA_ERROR_NOT_READY) {
        /* once at warn: a program that waits on itself would say it on
         * every call until its stream drains */
        if (!atomic_exchange(&warned, true))
            vs_warn("offload: queued work did not finish within %u ms "
                    "(VRAMSHIM_FENCE_MS); nothing moves until it does", fence_ms);
        else
            vs_debug("offload: the device is still busy; nothing moved");
    }
    return rc;
}

/* The waiter thread is not the child's; nothing it was asked survives. */
void vs_fence_atfork_child(void)
{
    pthread_mutex_init(&mu, NULL);
    pthread_cond_init(&asked_cv, NULL);
    vs_fence_setup(fence_ms);
    started = busy = false;
    n_asked = n_answered = 0;
    atomic_store(&captures, 0);
    pthread_mutex_init(&excl_mu, NULL);
    syncing = 0;
}
