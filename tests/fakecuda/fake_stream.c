/*
 * fake_stream.c: streams, events, copies, memsets, kernels and graphs of
 * the test driver.
 *
 * Every stream has a thread that runs its queued work in order, later than
 * the call that queued it, so a program (or vramshim) that forgets a fence
 * reads stale bytes here just as it would on a GPU. Synchronous copies and
 * memsets go through the legacy stream and wait, which also orders them
 * after earlier legacy-stream work, as on a GPU. Kernels are host functions
 * registered by name; their parameters are copied at launch.
 *
 * Streams belong to the context current when they were made, and each
 * context has its own legacy (NULL) stream: cuCtxSynchronize "blocks until
 * the device has completed all preceding requested tasks" of the current
 * context (driver API reference, Context Management), not other contexts'.
 * A kernel that reaches memory its context cannot (another device's memory
 * without peer access, VMM memory without cuMemSetAccess for its device)
 * does not run, and the context answers CUDA_ERROR_ILLEGAL_ADDRESS from
 * then on, as the reference describes that error: "the device encountered
 * a load or store instruction on an invalid memory address. This leaves the
 * process in an inconsistent state and any further CUDA work will return
 * the same error".
 */
#include "fake_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static pthread_mutex_t streams_lock = PTHREAD_MUTEX_INITIALIZER;
static struct fk_stream *all_streams;
static struct fk_stream *legacy;

static void *stream_main(void *arg)
{
    struct fk_stream *st = arg;
    pthread_mutex_lock(&st->mu);
    for (;;) {
        while (st->head == NULL && !st->stop)
            pthread_cond_wait(&st->wake, &st->mu);
        if (st->head == NULL && st->stop)
            break;
        struct fk_op *op = st->head;
        st->head = op->next;
        if (st->head == NULL)
            st->tail = NULL;
        pthread_mutex_unlock(&st->mu);
        op->run(op);
        free(op->blob);
        free(op);
        pthread_mutex_lock(&st->mu);
        st->completed++;
        pthread_cond_broadcast(&st->done);
    }
    pthread_mutex_unlock(&st->mu);
    return NULL;
}

static struct fk_stream *stream_new(struct fk_ctx *ctx)
{
    struct fk_stream *st = calloc(1, sizeof *st);
    if (st == NULL)
        return NULL;
    st->ctx = ctx;
    pthread_mutex_init(&st->mu, NULL);
    pthread_cond_init(&st->wake, NULL);
    pthread_cond_init(&st->done, NULL);
    if (pthread_create(&st->thread, NULL, stream_main, st) != 0) {
        free(st);
        return NULL;
    }
    pthread_mutex_lock(&streams_lock);
    st->next_all = all_streams;
    all_streams = st;
    pthread_mutex_unlock(&streams_lock);
    return st;
}

struct fk_stream *fk_stream_of(CUstream s)
{
    if (s == NULL || s == CU_STREAM_LEGACY || s == CU_STREAM_PER_THREAD) {
        struct fk_ctx *c = fk_current();
        struct fk_stream **slot = c ? &c->legacy : &legacy;
        pthread_mutex_lock(&streams_lock);
        struct fk_stream *l = *slot;
        pthread_mutex_unlock(&streams_lock);
        if (l == NULL) {
            l = stream_new(c);
            pthread_mutex_lock(&streams_lock);
            if (*slot == NULL)
                *slot = l;
            else
                l = *slot; /* another thread won; its stream is used */
            pthread_mutex_unlock(&streams_lock);
        }
        return l;
    }
    return (struct fk_stream *)s;
}

struct fk_ctx *fk_stream_ctx(struct fk_stream *st)
{
    return st->ctx;
}

void fk_enqueue(struct fk_stream *st, struct fk_op *op)
{
    op->next = NULL;
    op->st = st;
    if (fk_capture_take(st, op))
        return;
    pthread_mutex_lock(&st->mu);
    if (st->tail)
        st->tail->next = op;
    else
        st->head = op;
    st->tail = op;
    st->submitted++;
    pthread_cond_signal(&st->wake);
    pthread_mutex_unlock(&st->mu);
}

void fk_stream_wait(struct fk_stream *st)
{
    pthread_mutex_lock(&st->mu);
    uint64_t target = st->submitted;
    while (st->completed < target)
        pthread_cond_wait(&st->done, &st->mu);
    pthread_mutex_unlock(&st->mu);
}

/* The context's streams, and those made with no context current. */
CUresult fk_sync_ctx(struct fk_ctx *c)
{
    pthread_mutex_lock(&streams_lock);
    struct fk_stream *list = all_streams;
    pthread_mutex_unlock(&streams_lock);
    /* "synchronizing a context with a capturing stream" is unsafe during
     * capture: the capture is invalidated and the call refused */
    bool capturing = false;
    for (struct fk_stream *st = list; st; st = st->next_all)
        if ((st->ctx == c || st->ctx == NULL) && fk_capturing(st)) {
            fk_capture_invalidate(st);
            capturing = true;
        }
    if (capturing)
        return CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED;
    for (struct fk_stream *st = list; st; st = st->next_all)
        if (st->ctx == c || st->ctx == NULL)
            fk_stream_wait(st);
    return (CUresult)atomic_load(&c->sticky);
}

void fk_sync_all(void)
{
    pthread_mutex_lock(&streams_lock);
    struct fk_stream *list = all_streams;
    pthread_mutex_unlock(&streams_lock);
    /* Streams are never unlinked (destroyed ones only stop), so the list
     * can be walked without the lock. */
    for (struct fk_stream *st = list; st; st = st->next_all)
        fk_stream_wait(st);
}

struct fk_op *fk_op_new(fk_op_fn run)
{
    struct fk_op *op = calloc(1, sizeof *op);
    if (op)
        op->run = run;
    return op;
}

struct fk_op *fk_op_clone(const struct fk_op *op)
{
    struct fk_op *o = malloc(sizeof *o);
    if (o == NULL)
        return NULL;
    *o = *op;
    o->next = NULL;
    if (op->blob) {
        o->blob = malloc(op->blob_size);
        if (o->blob == NULL) {
            free(o);
            return NULL;
        }
        memcpy(o->blob, op->blob, op->blob_size);
    }
    return o;
}

FK_EXPORT CUresult cuStreamCreate(CUstream *phStream, unsigned int Flags)
{
    FK_ENTER("cuStreamCreate");
    (void)Flags;
    if (phStream == NULL)
        return CUDA_ERROR_INVALID_VALUE;
    FK_NEED_CTX(c);
    struct fk_stream *st = stream_new(c);
    if (st == NULL)
        return CUDA_ERROR_OUT_OF_MEMORY;
    *phStream = (CUstream)st;
    return CUDA_SUCCESS;
}

FK_EXPORT CUresult cuStreamDestroy_v2(CUstream hStream)
{
    FK_ENTER("cuStreamDestroy_v2");
    if (hStream == NULL)
        return CUDA_ERROR_INVALID_HANDLE;
    struct fk_stream *st = (struct fk_stream *)hStream;
    /* Like the driver: queued work still completes. The thread then idles
     * out; the stream stays on the list so fk_sync_all never races a free. */
    fk_stream_wait(st);
    return CUDA_SUCCESS;
}

/* The stream a synchronise or a query names; asking during its capture
 * invalidates the capture (CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED). */
static CUresult waitable_stream(CUstream h, struct fk_stream **st)
{
    *st = fk_stream_of(h);
    if (*st == NULL)
        return CUDA_ERROR_INVALID_HANDLE;
    if (fk_capturing(*st)) {
        fk_capture_invalidate(*st);
        return CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED;
    }
    return CUDA_SUCCESS;
}

#define FK_SYNC_FAMILY(suffix)                                                 \
    FK_EXPORT CUresult cuStreamSynchronize##suffix(CUstream hStream)           \
    {                                                                          \
        FK_ENTER("cuStreamSynchronize" #suffix);                               \
        struct fk_stream *st;                                                  \
        CUresult rc = waitable_stream(hStream, &st);                           \
        if (rc != CUDA_SUCCESS)                                                \
            return rc;                                                         \
        fk_stream_wait(st);                                                    \
        fk_pool_sync_release();                                                \
        return st->ctx ? (CUresult)atomic_load(&st->ctx->sticky) : CUDA_SUCCESS; \
    }                                                                          \
    FK_EXPORT CUresult cuStreamQuery##suffix(CUstream hStream)                 \
    {                                                                          \
        FK_ENTER("cuStreamQuery" #suffix);                                     \
        struct fk_stream *st;                                                  \
        CUresult rc = waitable_stream(hStream, &st);                           \
        if (rc != CUDA_SUCCESS)                                                \
            return rc;                                                         \
        pthread_mutex_lock(&st->mu);                                           \
        bool idle = st->completed == st->submitted;                            \
        pthread_mutex_unlock(&st->mu);                                         \
        return idle ? CUDA_SUCCESS : CUDA_ERROR_NOT_READY;                     \
    }
FK_SYNC_FAMILY()
FK_SYNC_FAMILY(_ptsz)


/* ---- events ------------------------------------------------------------ */
struct fk_event {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    uint64_t recorded, reached;
};

FK_EXPORT CUresult cuEventCreate(CUevent *phEvent, unsigned int Flags)
{
    FK_ENTER("cuEventCreate");
    (void)Flags;
    if (phEvent == NULL)
        return CUDA_ERROR_INVALID_VALUE;
    struct fk_event *e = calloc(1, sizeof *e);
    if (e == NULL)
        return CUDA_ERROR_OUT_OF_MEMORY;
    pthread_mutex_init(&e->mu, NULL);
    pthread_cond_init(&e->cv, NULL);
    *phEvent = (CUevent)e;
    return CUDA_SUCCESS;
}

FK_EXPORT CUresult cuEventDestroy_v2(CUevent hEvent)
{
    FK_ENTER("cuEventDestroy_v2");
    if (hEvent == NULL)
        return CUDA_ERROR_INVALID_HANDLE;
    struct fk_event *e = (struct fk_event *)hEvent;
    pthread_mutex_lock(&e->mu);
    while (e->reached < e->recorded) /* a queued record still points here */
        pthread_cond_wait(&e->cv, &e->mu);
    pthread_mutex_unlock(&e->mu);
    free(e);
    return CUDA_SUCCESS;
}

static void run_event(struct fk_op *op)
{
    struct fk_event *e = op->ptr;
    pthread_mutex_lock(&e->mu);
    if (op->a > e->reached)
        e->reached = op->a;
    pthread_cond_broadcast(&e->cv);
    pthread_mutex_unlock(&e->mu);
}

#define FK_EVENT_FAMILY(suffix)                                                \
    FK_EXPORT CUresult cuEventRecord##suffix(CUevent hEvent, CUstream hStream) \
    {                                                                          \
        FK_ENTER("cuEventRecord" #suffix);                                     \
        struct fk_event *e = (struct fk_event *)hEvent;                        \
        struct fk_stream *st = fk_stream_of(hStream);                          \
        if (e == NULL || st == NULL)                                           \
            return CUDA_ERROR_INVALID_HANDLE;                                  \
        struct fk_op *op = fk_op_new(run_event);                                  \
        if (op == NULL)                                                        \
            return CUDA_ERROR_OUT_OF_MEMORY;                                   \
        pthread_mutex_lock(&e->mu);                                            \
        op->a = ++e->recorded;                                                 \
        pthread_mutex_unlock(&e->mu);                                          \
        op->ptr = e;                                                           \
        fk_enqueue(st, op);                                                    \
        return CUDA_SUCCESS;                                                   \
    }
FK_EVENT_FAMILY()
FK_EVENT_FAMILY(_ptsz)

FK_EXPORT CUresult cuEventSynchronize(CUevent hEvent)
{
    FK_ENTER("cuEventSynchronize");
    struct fk_event *e = (struct fk_event *)hEvent;
    if (e == NULL)
        return CUDA_ERROR_INVALID_HANDLE;
    pthread_mutex_lock(&e->mu);
    uint64_t target = e->recorded;
    while (e->reached < target)
        pthread_cond_wait(&e->cv, &e->mu);
    pthread_mutex_unlock(&e->mu);
    fk_pool_sync_release();
    return CUDA_SUCCESS;
}

FK_EXPORT CUresult cuEventQuery(CUevent hEvent)
{
    FK_ENTER("cuEventQuery");
    struct fk_event *e = (struct fk_event *)hEvent;
    if (e == NULL)
        return CUDA_ERROR_INVALID_HANDLE;
    pthread_mutex_lock(&e->mu);
    bool done = e->reached >= e->recorded;
    pthread_mutex_unlock(&e->mu);
    return done ? CUDA_SUCCESS : CUDA_ERROR_NOT_READY;
}

/* ---- copies and memsets ------------------------------------------------ */
/* A copy from pageable memory reads the op's own blob (op->b is 0).
 * A real copy takes its size over the bus's bandwidth (PCIe 4.0 x16 moves
 * about 25 GB/s, so 70 GiB of device memory takes seconds to move out);
 * FAKECUDA_COPY_MBPS scales that down to what a test can allocate. */
static void run_copy(struct fk_op *op)
{
    const void *src = op->blob ? op->blob : (const void *)(uintptr_t)op->b;
    memmove((void *)(uintptr_t)op->a, src, op->c);
    if (fk.copy_mibps) {
        uint64_t ns = op->c * 1000000000ULL / (fk.copy_mibps << 20);
        struct timespec t = {(time_t)(ns / 1000000000ULL), (long)(ns % 1000000000ULL)};
        while (nanosleep(&t, &t) != 0)
            ;
    }
}

static void run_memset(struct fk_op *op)
{
    unsigned char *dst = (unsigned char *)(uintptr_t)op->a;
    size_t n = op->c, elem = op->d;
    if (elem == 1) {
        memset(dst, (int)op->b, n);
        return;
    }
    for (size_t i = 0; i < n; i++)
        memcpy(dst + i * elem, &op->b, elem);
}

CUresult fk_queue_op(CUstream s, struct fk_op *op, bool wait)
{
    struct fk_stream *st = fk_stream_of(s);
    if (st == NULL) {
        free(op->blob);
        free(op);
        return CUDA_ERROR_INVALID_HANDLE;
    }
    pthread_mutex_lock(&st->mu);
    int capture = st->capture;
    pthread_mutex_unlock(&st->mu);
    if (capture == CU_STREAM_CAPTURE_STATUS_INVALIDATED) {
        free(op->blob);
        free(op);
        return CUDA_ERROR_STREAM_CAPTURE_INVALIDATED;
    }
    fk_enqueue(st, op);
    if (wait && capture == CU_STREAM_CAPTURE_STATUS_NONE)
        fk_stream_wait(st);
    return CUDA_SUCCESS;
}

/* Pageable host memory, as NVIDIA's "API synchronization behavior" page of
 * the driver API documents it: a copy from pageable memory to the device
 * returns once the source has been copied to staging memory (the transfer
 * itself may still be queued), so the program may overwrite its buffer at
 * once; an async copy from the device to pageable memory returns only once
 * the copy has completed. Pinned memory is read or written when the
 * stream gets there. */
enum { ON_DEVICE_DST = 1, ON_DEVICE_SRC = 2 };
/* `on_device`: the sides the entry point says are device memory (none for
 * the unified cuMemcpy); a copy that runs off the end of its allocation, or
 * names no device memory there, is CUDA_ERROR_INVALID_VALUE, as the driver
 * answers rather than write past an allocation. */
static CUresult copy(uint64_t dst, uint64_t src, size_t n, CUstream s, bool wait,
                     int on_device)
{
    if (n == 0)
        return CUDA_SUCCESS;
    if (dst == 0 || src == 0)
        return CUDA_ERROR_INVALID_VALUE;
    if (((on_device & ON_DEVICE_DST) && !fk_device_range(dst, n)) ||
        ((on_device & ON_DEVICE_SRC) && !fk_device_range(src, n)))
        return CUDA_ERROR_INVALID_VALUE;
    /* VMM memory is reached only by the devices cuMemSetAccess named, peer
     * access or not (CUDA Programming Guide, Virtual Memory Management,
     * "Controlling Access Rights"): a copy queued on another device's
     * stream is refused */
    struct fk_stream *st = fk_stream_of(s);
    struct fk_ctx *sc = st ? st->ctx : NULL;
    if (sc && (fk_vmm_reachable(dst, sc->device) == 0 ||
               fk_vmm_reachable(src, sc->device) == 0))
        return CUDA_ERROR_INVALID_VALUE;
    struct fk_op *op = fk_op_new(run_copy);
    if (op == NULL)
        return CUDA_ERROR_OUT_OF_MEMORY;
    switch (fk_host_side(dst, src)) {
    case FK_PAGEABLE_TO_DEVICE:
        op->blob = malloc(n);
        if (op->blob == NULL) {
            free(op);
            return CUDA_ERROR_OUT_OF_MEMORY;
        }
        memcpy(op->blob, (const void *)(uintptr_t)src, n);
        op->blob_size = n;
        src = 0;
        break;
    case FK_DEVICE_TO_PAGEABLE:
        wait = true;
        break;
    default:
        break;
    }
    op->a = dst;
    op->b = src;
    op->c = n;
    return fk_queue_op(s, op, wait);
}

static CUresult fill(uint64_t dst, uint32_t value, size_t elem, size_t n,
                     CUstream s, bool wait)
{
    if (dst == 0)
        return CUDA_ERROR_INVALID_VALUE;
    struct fk_op *op = fk_op_new(run_memset);
    if (op == NULL)
        return CUDA_ERROR_OUT_OF_MEMORY;
    op->a = dst;
    op->b = value;
    op->c = n;
    op->d = elem;
    return fk_queue_op(s, op, wait);
}

#define H(p) ((uint64_t)(uintptr_t)(p))
#define FK_COPY_SYNC(suffix)                                                   \
    FK_EXPORT CUresult cuMemcpyHtoD_v2##suffix(CUdeviceptr d, const void *h, size_t n) \
    { FK_ENTER("cuMemcpyHtoD_v2" #suffix); return copy(d, H(h), n, NULL, true, ON_DEVICE_DST); } \
    FK_EXPORT CUresult cuMemcpyDtoH_v2##suffix(void *h, CUdeviceptr d, size_t n) \
    { FK_ENTER("cuMemcpyDtoH_v2" #suffix); return copy(H(h), d, n, NULL, true, ON_DEVICE_SRC); } \
    FK_EXPORT CUresult cuMemcpyDtoD_v2##suffix(CUdeviceptr d, CUdeviceptr s, size_t n) \
    { FK_ENTER("cuMemcpyDtoD_v2" #suffix); return copy(d, s, n, NULL, true, ON_DEVICE_DST | ON_DEVICE_SRC); } \
    FK_EXPORT CUresult cuMemcpy##suffix(CUdeviceptr d, CUdeviceptr s, size_t n) \
    { FK_ENTER("cuMemcpy" #suffix); return copy(d, s, n, NULL, true, 0); }        \
    FK_EXPORT CUresult cuMemsetD8_v2##suffix(CUdeviceptr d, unsigned char v, size_t n) \
    { FK_ENTER("cuMemsetD8_v2" #suffix); return fill(d, v, 1, n, NULL, true); } \
    FK_EXPORT CUresult cuMemsetD32_v2##suffix(CUdeviceptr d, unsigned int v, size_t n) \
    { FK_ENTER("cuMemsetD32_v2" #suffix); return fill(d, v, 4, n, NULL, true); }
#define FK_COPY_ASYNC(suffix)                                                  \
    FK_EXPORT CUresult cuMemcpyHtoDAsync_v2##suffix(CUdeviceptr d, const void *h, size_t n, CUstream s) \
    { FK_ENTER("cuMemcpyHtoDAsync_v2" #suffix); return copy(d, H(h), n, s, false, ON_DEVICE_DST); } \
    FK_EXPORT CUresult cuMemcpyDtoHAsync_v2##suffix(void *h, CUdeviceptr d, size_t n, CUstream s) \
    { FK_ENTER("cuMemcpyDtoHAsync_v2" #suffix); return copy(H(h), d, n, s, false, ON_DEVICE_SRC); } \
    FK_EXPORT CUresult cuMemcpyDtoDAsync_v2##suffix(CUdeviceptr d, CUdeviceptr src, size_t n, CUstream s) \
    { FK_ENTER("cuMemcpyDtoDAsync_v2" #suffix); return copy(d, src, n, s, false, ON_DEVICE_DST | ON_DEVICE_SRC); } \
    FK_EXPORT CUresult cuMemcpyAsync##suffix(CUdeviceptr d, CUdeviceptr src, size_t n, CUstream s) \
    { FK_ENTER("cuMemcpyAsync" #suffix); return copy(d, src, n, s, false, 0); }   \
    FK_EXPORT CUresult cuMemsetD8Async##suffix(CUdeviceptr d, unsigned char v, size_t n, CUstream s) \
    { FK_ENTER("cuMemsetD8Async" #suffix); return fill(d, v, 1, n, s, false); } \
    FK_EXPORT CUresult cuMemsetD32Async##suffix(CUdeviceptr d, unsigned int v, size_t n, CUstream s) \
    { FK_ENTER("cuMemsetD32Async" #suffix); return fill(d, v, 4, n, s, false); }
FK_COPY_SYNC()
FK_COPY_SYNC(_ptds)
FK_COPY_ASYNC()
FK_COPY_ASYNC(_ptsz)

/* ---- kernels ----------------------------------------------------------- */
#define FK_MAX_PARAMS 32
struct fk_kernel {
    char name[64];
    fakecuda_kernel_fn fn;
    int nparams;
    size_t sizes[FK_MAX_PARAMS], offsets[FK_MAX_PARAMS];
    struct fk_kernel *next;
};
static struct fk_kernel *kernels;
static pthread_mutex_t kernels_lock = PTHREAD_MUTEX_INITIALIZER;

FK_EXPORT CUfunction fakecuda_register_kernel(const char *name, fakecuda_kernel_fn fn,
                                              int nparams, const size_t *param_sizes)
{
    if (name == NULL || fn == NULL || nparams < 0 || nparams > FK_MAX_PARAMS)
        return NULL;
    struct fk_kernel *k = calloc(1, sizeof *k);
    if (k == NULL)
        return NULL;
    snprintf(k->name, sizeof k->name, "%s", name);
    k->fn = fn;
    k->nparams = nparams;
    size_t off = 0;
    for (int i = 0; i < nparams; i++) {
        size_t sz = param_sizes[i], align = sz >= 8 ? 8 : sz;
        if (align)
            off = (off + align - 1) / align * align;
        k->sizes[i] = sz;
        k->offsets[i] = off;
        off += sz;
    }
    pthread_mutex_lock(&kernels_lock);
    k->next = kernels;
    kernels = k;
    pthread_mutex_unlock(&kernels_lock);
    return (CUfunction)k;
}

/* Modules. A CUfunction is the driver's own object for a function of a
 * loaded module, and it dies with the module: "cuModuleUnload ... unloads
 * a module hmod from the current context. Attempting to unload a module
 * which was obtained from the Library Management API ... will return
 * CUDA_ERROR_NOT_PERMITTED" (driver API reference, Module Management), and
 * a handle used after its module is unloaded is invalid. The driver reuses
 * the memory of dead objects for new ones, so a new module's function can
 * come back with the very handle a dead one had; the test driver makes
 * that certain by reusing dead function objects last-in first-out. */
struct fk_module {
    struct fk_kernel *funcs; /* instances handed out, linked through next */
    int globals_dev;         /* its globals' device memory (fake_ctxmem.c) */
    uint64_t globals;
    struct fk_ctx *ctx;      /* loaded into (NULL: a library) */
    struct fk_module *next_loaded;
};
/* Modules loaded, so that a destroyed context takes its modules' memory
 * with it ("cuCtxDestroy ... Destroys the CUDA context ... and frees all
 * resources associated with it", driver API reference). */
static struct fk_module *loaded;
static struct fk_kernel *dead_funcs;

FK_EXPORT CUresult cuModuleLoadData(CUmodule *module, const void *image)
{
    FK_ENTER("cuModuleLoadData");
    if (module == NULL || image == NULL)
        return CUDA_ERROR_INVALID_VALUE;
    struct fk_module *m = calloc(1, sizeof *m);
    if (m == NULL)
        return CUDA_ERROR_OUT_OF_MEMORY;
    CUresult rc = fk_module_mem_take(image, &m->globals_dev, &m->globals);
    if (rc != CUDA_SUCCESS) {
        free(m);
        return rc;
    }
    m->ctx = fk_current();
    pthread_mutex_lock(&kernels_lock);
    m->next_loaded = loaded;
    loaded = m;
    pthread_mutex_unlock(&kernels_lock);
    *module = (CUmodule)m;
    return CUDA_SUCCESS;
}

void fk_modules_ctx_gone(struct fk_ctx *c)
{
    pthread_mutex_lock(&kernels_lock);
    for (struct fk_module *m = loaded; m; m = m->next_loaded)
        if (m->ctx == c && m->globals) {
            fk_uncharge(m->globals_dev, m->globals);
            m->globals = 0;
        }
    pthread_mutex_unlock(&kernels_lock);
}

/* JIT options change nothing the test driver models. */
FK_EXPORT CUresult cuModuleLoadDataEx(CUmodule *module, const void *image, unsigned int n,
                                      CUjit_option *options, void **values)
{
    FK_ENTER("cuModuleLoadDataEx");
    if (n && (options == NULL || values == NULL))
        return CUDA_ERROR_INVALID_VALUE;
    return cuModuleLoadData(module, image);
}

FK_EXPORT CUresult cuModuleUnload(CUmodule hmod)
{
    FK_ENTER("cuModuleUnload");
    if (hmod == NULL)
        return CUDA_ERROR_INVALID_HANDLE;
    struct fk_module *m = (struct fk_module *)hmod;
    pthread_mutex_lock(&kernels_lock);
    while (m->funcs) {
        struct fk_kernel *f = m->funcs;
        m->funcs = f->next;
        memset(f, 0, sizeof *f); /* a launch of a dead handle finds nothing */
        f->next = dead_funcs;
        dead_funcs = f;
    }
    for (struct fk_module **pp = &loaded; *pp; pp = &(*pp)->next_loaded)
        if (*pp == m) {
            *pp = m->next_loaded;
            break;
        }
    pthread_mutex_unlock(&kernels_lock);
    if (m->globals)
        fk_uncharge(m->globals_dev, m->globals);
    free(m);
    return CUDA_SUCCESS;
}

FK_EXPORT CUresult cuModuleGetFunction(CUfunction *hfunc, CUmodule hmod, const char *name)
{
    FK_ENTER("cuModuleGetFunction");
    if (hfunc == NULL || name == NULL || hmod == NULL)
        return CUDA_ERROR_INVALID_VALUE;
    struct fk_module *m = (struct fk_module *)hmod;
    pthread_mutex_lock(&kernels_lock);
    struct fk_kernel *k = kernels;
    while (k && strcmp(k->name, name) != 0)
        k = k->next;
    struct fk_kernel *f = NULL;
    if (k) { /* this module's own object for the function */
        f = dead_funcs ? dead_funcs : malloc(sizeof *f);
        if (f == dead_funcs && f)
            dead_funcs = f->next;
        if (f) {
            *f = *k;
            f->next = m->funcs;
            m->funcs = f;
        }
    }
    pthread_mutex_unlock(&kernels_lock);
    if (k == NULL)
        return CUDA_ERROR_NOT_FOUND;
    if (f == NULL)
        return CUDA_ERROR_OUT_OF_MEMORY;
    *hfunc = (CUfunction)f;
    return CUDA_SUCCESS;
}

/* Libraries (context-independent loading, CUDA 12.0): a CUkernel is, like
 * a CUfunction, the driver's object for one function, and cuLibraryUnload
 * ends every kernel of the library (driver API reference, Library
 * Management). The test driver shares the module code: the same objects,
 * the same last-in first-out reuse. */
FK_EXPORT CUresult cuLibraryLoadData(CUlibrary *library, const void *code, CUjit_option *jo,
                                     void **jv, unsigned int nj, CUlibraryOption *lo,
                                     void **lv, unsigned int nl)
{
    FK_ENTER("cuLibraryLoadData");
    (void)jo, (void)jv, (void)nj, (void)lo, (void)lv, (void)nl;
    CUresult rc = cuModuleLoadData((CUmodule *)library, code);
    if (rc == CUDA_SUCCESS) /* context-independent: outlives any context */
        ((struct fk_module *)*library)->ctx = NULL;
    return rc;
}

FK_EXPORT CUresult cuLibraryGetKernel(CUkernel *kernel, CUlibrary library, const char *name)
{
    FK_ENTER("cuLibraryGetKernel");
    return cuModuleGetFunction((CUfunction *)kernel, (CUmodule)library, name);
}

FK_EXPORT CUresult cuLibraryUnload(CUlibrary library)
{
    FK_ENTER("cuLibraryUnload");
    return cuModuleUnload((CUmodule)library);
}

static CUresult param_info(struct fk_kernel *k, size_t index, size_t *offset,
                           size_t *size)
{
    if (k == NULL)
        return CUDA_ERROR_INVALID_HANDLE;
    if (index >= (size_t)k->nparams)
        return CUDA_ERROR_INVALID_VALUE;
    if (offset)
        *offset = k->offsets[index];
    if (size)
        *size = k->sizes[index];
    return CUDA_SUCCESS;
}

FK_EXPORT CUresult cuFuncGetParamInfo(CUfunction func, size_t index, size_t *offset,
                                      size_t *size)
{
    FK_ENTER("cuFuncGetParamInfo");
    return param_info((struct fk_kernel *)func, index, offset, size);
}

#ifndef FAKECUDA_NO_KERNEL_PARAM_INFO
FK_EXPORT CUresult cuKernelGetParamInfo(CUkernel kernel, size_t index, size_t *offset,
                                        size_t *size)
{
    FK_ENTER("cuKernelGetParamInfo");
    return param_info((struct fk_kernel *)kernel, index, offset, size);
}
#endif

/* The parameter values were copied at launch; a pointer among them that
 * the stream's context cannot reach faults the context instead of running. */
static void run_kernel(struct fk_op *op)
{
    struct fk_kernel *k = op->ptr;
    struct fk_ctx *c = op->st ? op->st->ctx : NULL;
    char *values = op->blob;
    void *args[FK_MAX_PARAMS];
    for (int i = 0; i < k->nparams; i++) {
        args[i] = values + k->offsets[i];
        uint64_t word;
        if (c && k->sizes[i] == 8 && (memcpy(&word, args[i], 8), !fk_reachable(c, word))) {
            fprintf(stderr, "fakecuda: kernel %s on device %d reaches 0x%llx, which that "
                            "device may not access: CUDA_ERROR_ILLEGAL_ADDRESS\n",
                    k->name, c->device, (unsigned long long)word);
            atomic_store(&c->sticky, CUDA_ERROR_ILLEGAL_ADDRESS);
        }
    }
    if (c && atomic_load(&c->sticky) != CUDA_SUCCESS)
        return;
    fakecuda_dim3 grid = {(unsigned)(op->a >> 32), (unsigned)op->a, (unsigned)op->b};
    fakecuda_dim3 block = {(unsigned)(op->c >> 32), (unsigned)op->c, (unsigned)op->d};
    k->fn(args, grid, block);
}

/* Copy the parameter values now, as the driver does at launch. */
static CUresult launch(struct fk_kernel *k, unsigned gx, unsigned gy, unsigned gz,
                       unsigned bx, unsigned by, unsigned bz, CUstream s,
                       void **params, void **extra)
{
    if (k == NULL)
        return CUDA_ERROR_INVALID_HANDLE;
    if (gx == 0 || gy == 0 || gz == 0 || bx == 0 || by == 0 || bz == 0)
        return CUDA_ERROR_INVALID_VALUE;
    if (extra != NULL || (k->nparams > 0 && params == NULL))
        return CUDA_ERROR_INVALID_VALUE; /* only kernelParams is faked */
    size_t total = 0;
    for (int i = 0; i < k->nparams; i++)
        total = k->offsets[i] + k->sizes[i];
    struct fk_op *op = fk_op_new(run_kernel);
    char *values = op ? malloc(total + 1) : NULL;
    if (values == NULL) {
        free(op);
        return CUDA_ERROR_OUT_OF_MEMORY;
    }
    for (int i = 0; i < k->nparams; i++)
        memcpy(values + k->offsets[i], params[i], k->sizes[i]);
    op->blob = values;
    op->blob_size = total + 1;
    op->ptr = k;
    op->a = (uint64_t)gx << 32 | gy;
    op->b = gz;
    op->c = (uint64_t)bx << 32 | by;
    op->d = bz;
    return fk_queue_op(s, op, false);
}

#define FK_LAUNCH_FAMILY(suffix)                                               \
    FK_EXPORT CUresult cuLaunchKernel##suffix(                                 \
        CUfunction f, unsigned gx, unsigned gy, unsigned gz, unsigned bx,      \
        unsigned by, unsigned bz, unsigned shm, CUstream s, void **params,     \
        void **extra)                                                          \
    {                                                                          \
        FK_ENTER("cuLaunchKernel" #suffix);                                    \
        (void)shm;                                                             \
        return launch((struct fk_kernel *)f, gx, gy, gz, bx, by, bz, s, params, extra); \
    }                                                                          \
    FK_EXPORT CUresult cuLaunchCooperativeKernel##suffix(                      \
        CUfunction f, unsigned gx, unsigned gy, unsigned gz, unsigned bx,      \
        unsigned by, unsigned bz, unsigned shm, CUstream s, void **params)     \
    {                                                                          \
        FK_ENTER("cuLaunchCooperativeKernel" #suffix);                         \
        (void)shm;                                                             \
        return launch((struct fk_kernel *)f, gx, gy, gz, bx, by, bz, s, params, NULL); \
    }                                                                          \
    FK_EXPORT CUresult cuLaunchHostFunc##suffix(CUstream s, CUhostFn fn, void *data) \
    {                                                                          \
        FK_ENTER("cuLaunchHostFunc" #suffix);                                  \
        if (fn == NULL)                                                        \
            return CUDA_ERROR_INVALID_VALUE;                                   \
        struct fk_op *op = fk_op_new(run_host_fn);                                \
        if (op == NULL)                                                        \
            return CUDA_ERROR_OUT_OF_MEMORY;                                   \
        op->ptr = (void *)fn;                                                  \
        op->a = (uint64_t)(uintptr_t)data;                                     \
        return fk_queue_op(s, op, false);                                         \
    }

static void run_host_fn(struct fk_op *op)
{
    ((CUhostFn)op->ptr)((void *)(uintptr_t)op->a);
}

FK_LAUNCH_FAMILY()
FK_LAUNCH_FAMILY(_ptsz)

#ifndef FAKECUDA_NO_LAUNCH_EX
#define FK_LAUNCH_EX(suffix)                                                   \
    FK_EXPORT CUresult cuLaunchKernelEx##suffix(const CUlaunchConfig *c, CUfunction f, \
                                                void **params, void **extra)   \
    {                                                                          \
        FK_ENTER("cuLaunchKernelEx" #suffix);                                  \
        if (c == NULL)                                                         \
            return CUDA_ERROR_INVALID_VALUE;                                   \
        return launch((struct fk_kernel *)f, c->gridDimX, c->gridDimY,         \
                      c->gridDimZ, c->blockDimX, c->blockDimY, c->blockDimZ,   \
                      c->hStream, params, extra);                              \
    }
FK_LAUNCH_EX()
FK_LAUNCH_EX(_ptsz)

/* cuLaunchCooperativeKernelMultiDevice (deprecated since CUDA 11.3): one
 * launch per device, each with its own function, grid, stream and
 * parameters (CUDA_LAUNCH_PARAMS); queued here one after the other. */
FK_EXPORT CUresult cuLaunchCooperativeKernelMultiDevice(CUDA_LAUNCH_PARAMS *list, unsigned n,
                                                        unsigned flags)
{
    FK_ENTER("cuLaunchCooperativeKernelMultiDevice");
    (void)flags;
    if (list == NULL || n == 0)
        return CUDA_ERROR_INVALID_VALUE;
    for (unsigned i = 0; i < n; i++) {
        const CUDA_LAUNCH_PARAMS *l = &list[i];
        CUresult rc = launch((struct fk_kernel *)l->function, l->gridDimX, l->gridDimY,
                             l->gridDimZ, l->blockDimX, l->blockDimY, l->blockDimZ, l->hStream,
                             l->kernelParams, NULL);
        if (rc != CUDA_SUCCESS)
            return rc;
    }
    return CUDA_SUCCESS;
}

/* cuLaunch, cuLaunchGrid, cuLaunchGridAsync (deprecated since CUDA 4.0)
 * take their parameters from cuParamSet* calls, which the test driver
 * does not model: it refuses them, as a driver that dropped them would. */
FK_EXPORT CUresult cuLaunch(CUfunction f)
{
    FK_ENTER("cuLaunch");
    (void)f;
    return CUDA_ERROR_NOT_SUPPORTED;
}
FK_EXPORT CUresult cuLaunchGrid(CUfunction f, int w, int h)
{
    FK_ENTER("cuLaunchGrid");
    (void)f, (void)w, (void)h;
    return CUDA_ERROR_NOT_SUPPORTED;
}
FK_EXPORT CUresult cuLaunchGridAsync(CUfunction f, int w, int h, CUstream s)
{
    FK_ENTER("cuLaunchGridAsync");
    (void)f, (void)w, (void)h, (void)s;
    return CUDA_ERROR_NOT_SUPPORTED;
}
#endif

/* ---- graphs: a list of kernel nodes run in order ----------------------- */
/* Every node handle points at a node that opens with its type, so that
 * cuGraphNodeGetType can tell one from the handle alone. The nodes a
 * stream capture recorded are ops run in order, not nodes: only their
 * allocations are (cuGraphGetNodes lists kernel and memory nodes). */
struct fk_graph_node {
    CUgraphNodeType type; /* CU_GRAPH_NODE_TYPE_KERNEL */
    struct fk_kernel *k;
    unsigned grid[3], block[3];
    void *values[FK_MAX_PARAMS];
    char storage[256];
};
struct fk_mem_node {
    CUgraphNodeType type; /* CU_GRAPH_NODE_TYPE_MEM_ALLOC or _MEM_FREE */
    CUDA_MEM_ALLOC_NODE_PARAMS alloc; /* a free node: alloc.dptr only */
};
struct fk_graph {
    int n;
    struct fk_graph_node nodes[16];
    struct fk_op *ops; /* what a stream capture recorded, in order */
    int n_mem;
    struct fk_mem_node mem[2 * FK_GRAPH_MEM_NODES];
    /* an exec's graph memory (fake_pool.c), per device: what its
     * allocation nodes take, mapped from its first launch or upload */
    uint64_t mem_bytes[FK_MAX_DEVICES];
    bool mapped;
};

static struct fk_mem_node *add_mem_node(struct fk_graph *g, CUgraphNodeType type)
{
    if (g->n_mem >= (int)(sizeof g->mem / sizeof g->mem[0]))
        return NULL;
    struct fk_mem_node *m = &g->mem[g->n_mem++];
    memset(m, 0, sizeof *m);
    m->type = type;
    return m;
}

bool fk_graph_add_alloc(CUgraph graph, int dev, CUdeviceptr dptr, size_t bytesize,
                        CUgraphNode *node)
{
    struct fk_graph *g = (struct fk_graph *)graph;
    struct fk_mem_node *m = add_mem_node(g, CU_GRAPH_NODE_TYPE_MEM_ALLOC);
    if (m == NULL)
        return false;
    m->alloc.poolProps.allocType = CU_MEM_ALLOCATION_TYPE_PINNED;
    m->alloc.poolProps.location.type = CU_MEM_LOCATION_TYPE_DEVICE;
    m->alloc.poolProps.location.id = dev;
    m->alloc.bytesize = bytesize;
    m->alloc.dptr = dptr;
    g->mem_bytes[dev] += (bytesize + FK_PAGE - 1) & ~(FK_PAGE - 1);
    if (node)
        *node = (CUgraphNode)m;
    return true;
}

/* All of an exec's devices, or none. */
static CUresult map_graph_mem(struct fk_graph *g)
{
    if (g->mapped)
        return CUDA_SUCCESS;
    for (int d = 0; d < fk.ndevices; d++)
        if (g->mem_bytes[d] && !fk_graph_mem_map(d, g->mem_bytes[d])) {
            while (d-- > 0)
                if (g->mem_bytes[d])
                    fk_graph_mem_unmap(d, g->mem_bytes[d]);
            return CUDA_ERROR_OUT_OF_MEMORY;
        }
    g->mapped = true;
    return CUDA_SUCCESS;
}

/* An allocation node: its address now, its memory when the graph runs. */
static CUresult add_alloc_node(CUgraphNode *node, struct fk_graph *g, const CUmemPoolProps *props,
                               size_t bytesize, CUdeviceptr *dptr)
{
    if (g == NULL || bytesize == 0 || props->location.type != CU_MEM_LOCATION_TYPE_DEVICE ||
        props->location.id < 0 || props->location.id >= fk.ndevices)
        return CUDA_ERROR_INVALID_VALUE;
    if (g->n_mem >= (int)(sizeof g->mem / sizeof g->mem[0]))
        return CUDA_ERROR_OUT_OF_MEMORY; /* this driver's graphs hold so many */
    CUresult rc = fk_mem_carve(dptr, bytesize, props->location.id, NULL);
    if (rc != CUDA_SUCCESS)
        return rc;
    (void)fk_graph_add_alloc((CUgraph)g, props->location.id, *dptr, bytesize, node);
    return CUDA_SUCCESS;
}

FK_EXPORT CUresult cuGraphAddMemAllocNode(CUgraphNode *node, CUgraph hGraph,
                                          const CUgraphNode *deps, size_t ndeps,
                                          CUDA_MEM_ALLOC_NODE_PARAMS *p)
{
    FK_ENTER("cuGraphAddMemAllocNode");
    (void)deps;
    (void)ndeps;
    if (p == NULL)
        return CUDA_ERROR_INVALID_VALUE;
    return add_alloc_node(node, (struct fk_graph *)hGraph, &p->poolProps, p->bytesize, &p->dptr);
}

/* A free node: the memory stays the graph's until its exec goes. */
FK_EXPORT CUresult cuGraphAddMemFreeNode(CUgraphNode *node, CUgraph hGraph,
                                         const CUgraphNode *deps, size_t ndeps,
                                         CUdeviceptr dptr)
{
    FK_ENTER("cuGraphAddMemFreeNode");
    (void)deps;
    (void)ndeps;
    if (hGraph == NULL || dptr == 0)
        return CUDA_ERROR_INVALID_VALUE;
    struct fk_mem_node *m = add_mem_node((struct fk_graph *)hGraph, CU_GRAPH_NODE_TYPE_MEM_FREE);
    if (m == NULL)
        return CUDA_ERROR_OUT_OF_MEMORY;
    m->alloc.dptr = dptr;
    if (node)
        *node = (CUgraphNode)m;
    return CUDA_SUCCESS;
}

/* "If nodes is NULL, this function will return the number of nodes in
 * numNodes. Otherwise, numNodes entries will be filled in. If numNodes is
 * higher than the actual number of nodes, the remaining entries in nodes
 * will be set to NULL, and the number of nodes actually obtained will be
 * returned in numNodes." (cuGraphGetNodes) */
FK_EXPORT CUresult cuGraphGetNodes(CUgraph hGraph, CUgraphNode *nodes, size_t *numNodes)
{
    FK_ENTER("cuGraphGetNodes");
    struct fk_graph *g = (struct fk_graph *)hGraph;
    if (g == NULL || numNodes == NULL)
        return CUDA_ERROR_INVALID_VALUE;
    size_t total = (size_t)g->n + (size_t)g->n_mem;
    if (nodes == NULL) {
        *numNodes = total;
        return CUDA_SUCCESS;
    }
    size_t got = 0;
    for (int i = 0; i < g->n && got < *numNodes; i++)
        nodes[got++] = (CUgraphNode)&g->nodes[i];
    for (int i = 0; i < g->n_mem && got < *numNodes; i++)
        nodes[got++] = (CUgraphNode)&g->mem[i];
    for (size_t i = got; i < *numNodes; i++)
        nodes[i] = NULL;
    *numNodes = got;
    return CUDA_SUCCESS;
}

FK_EXPORT CUresult cuGraphNodeGetType(CUgraphNode hNode, CUgraphNodeType *type)
{
    FK_ENTER("cuGraphNodeGetType");
    if (hNode == NULL || type == NULL)
        return CUDA_ERROR_INVALID_VALUE;
    *type = *(const CUgraphNodeType *)hNode;
    return CUDA_SUCCESS;
}

/* The parameters the node was made with, its address filled in. */
FK_EXPORT CUresult cuGraphMemAllocNodeGetParams(CUgraphNode hNode,
                                                CUDA_MEM_ALLOC_NODE_PARAMS *params_out)
{
    FK_ENTER("cuGraphMemAllocNodeGetParams");
    if (hNode == NULL || params_out == NULL ||
        *(const CUgraphNodeType *)hNode != CU_GRAPH_NODE_TYPE_MEM_ALLOC)
        return CUDA_ERROR_INVALID_VALUE;
    *params_out = ((const struct fk_mem_node *)hNode)->alloc;
    return CUDA_SUCCESS;
}

/* The generic form: memory nodes only (kernel nodes come through
 * cuGraphAddKernelNode in this driver). */
FK_EXPORT CUresult cuGraphAddNode_v2(CUgraphNode *node, CUgraph hGraph, const CUgraphNode *deps,
                                     const CUgraphEdgeData *edges, size_t ndeps,
                                     CUgraphNodeParams *p)
{
    FK_ENTER("cuGraphAddNode_v2");
    (void)deps;
    (void)edges;
    (void)ndeps;
    if (p == NULL)
        return CUDA_ERROR_INVALID_VALUE;
    if (p->type == CU_GRAPH_NODE_TYPE_MEM_ALLOC)
        return add_alloc_node(node, (struct fk_graph *)hGraph, &p->alloc.poolProps,
                              p->alloc.bytesize, &p->alloc.dptr);
    if (p->type == CU_GRAPH_NODE_TYPE_MEM_FREE)
        return cuGraphAddMemFreeNode(node, hGraph, NULL, 0, p->free.dptr);
    return CUDA_ERROR_NOT_SUPPORTED;
}

static void free_ops(struct fk_op *op)
{
    while (op) {
        struct fk_op *next = op->next;
        free(op->blob);
        free(op);
        op = next;
    }
}

/* A deep copy of a list of ops (NULL when memory runs out). */
static bool clone_ops(const struct fk_op *from, struct fk_op **to)
{
    struct fk_op **tail = to;
    *to = NULL;
    for (; from; from = from->next) {
        if ((*tail = fk_op_clone(from)) == NULL) {
            free_ops(*to);
            *to = NULL;
            return false;
        }
        tail = &(*tail)->next;
    }
    return true;
}

/* The graph stream capture made of what it recorded (fake_capture.c). */
CUgraph fk_graph_of_ops(struct fk_op *ops)
{
    struct fk_graph *g = calloc(1, sizeof *g);
    if (g == NULL) {
        free_ops(ops);
        return NULL;
    }
    g->ops = ops;
    return (CUgraph)g;
}

FK_EXPORT CUresult cuGraphCreate(CUgraph *phGraph, unsigned int flags)
{
    FK_ENTER("cuGraphCreate");
    if (phGraph == NULL || flags != 0)
        return CUDA_ERROR_INVALID_VALUE;
    struct fk_graph *g = calloc(1, sizeof *g);
    if (g == NULL)
        return CUDA_ERROR_OUT_OF_MEMORY;
    *phGraph = (CUgraph)g;
    return CUDA_SUCCESS;
}

FK_EXPORT CUresult cuGraphAddKernelNode_v2(CUgraphNode *phGraphNode, CUgraph hGraph,
                                           const CUgraphNode *deps, size_t ndeps,
                                           const CUDA_KERNEL_NODE_PARAMS *p)
{
    FK_ENTER("cuGraphAddKernelNode_v2");
    (void)deps;
    (void)ndeps;
    struct fk_graph *g = (struct fk_graph *)hGraph;
    if (g == NULL || p == NULL || g->n >= 16)
        return CUDA_ERROR_INVALID_VALUE;
    struct fk_kernel *k = (struct fk_kernel *)p->func;
    if (k == NULL || p->extra)
        return CUDA_ERROR_INVALID_VALUE;
    struct fk_graph_node *node = &g->nodes[g->n];
    node->type = CU_GRAPH_NODE_TYPE_KERNEL;
    node->k = k;
    node->grid[0] = p->gridDimX; node->grid[1] = p->gridDimY; node->grid[2] = p->gridDimZ;
    node->block[0] = p->blockDimX; node->block[1] = p->blockDimY; node->block[2] = p->blockDimZ;
    for (int i = 0; i < k->nparams; i++) {
        if (k->offsets[i] + k->sizes[i] > sizeof node->storage)
            return CUDA_ERROR_INVALID_VALUE;
        memcpy(node->storage + k->offsets[i], p->kernelParams[i], k->sizes[i]);
        node->values[i] = node->storage + k->offsets[i];
    }
    if (phGraphNode)
        *phGraphNode = (CUgraphNode)node;
    g->n++;
    return CUDA_SUCCESS;
}

static CUresult instantiate(CUgraphExec *phGraphExec, CUgraph hGraph)
{
    if (phGraphExec == NULL || hGraph == NULL)
        return CUDA_ERROR_INVALID_VALUE;
    struct fk_graph *copy = malloc(sizeof *copy);
    if (copy == NULL)
        return CUDA_ERROR_OUT_OF_MEMORY;
    memcpy(copy, hGraph, sizeof *copy);
    copy->mapped = false;
    if (!clone_ops(((struct fk_graph *)hGraph)->ops, &copy->ops)) {
        free(copy);
        return CUDA_ERROR_OUT_OF_MEMORY;
    }
    for (int n = 0; n < copy->n; n++) /* re-point values at the copy */
        for (int i = 0; i < copy->nodes[n].k->nparams; i++)
            copy->nodes[n].values[i] = copy->nodes[n].storage + copy->nodes[n].k->offsets[i];
    *phGraphExec = (CUgraphExec)copy;
    return CUDA_SUCCESS;
}

FK_EXPORT CUresult cuGraphInstantiateWithFlags(CUgraphExec *phGraphExec, CUgraph hGraph,
                                               unsigned long long flags)
{
    FK_ENTER("cuGraphInstantiateWithFlags");
    (void)flags;
    return instantiate(phGraphExec, hGraph);
}

/* CUDA_GRAPH_INSTANTIATE_FLAG_UPLOAD "will perform an upload of the graph
 * into hUploadStream once the graph has been instantiated"; the upload maps
 * the exec's memory (here, at once): when it cannot, the instantiation
 * fails and no exec is left. */
#define FK_INSTANTIATE_PARAMS(suffix)                                          \
    FK_EXPORT CUresult cuGraphInstantiateWithParams##suffix(                   \
        CUgraphExec *phGraphExec, CUgraph hGraph, CUDA_GRAPH_INSTANTIATE_PARAMS *p) \
    {                                                                          \
        FK_ENTER("cuGraphInstantiateWithParams" #suffix);                      \
        if (p == NULL)                                                         \
            return CUDA_ERROR_INVALID_VALUE;                                   \
        p->hErrNode_out = NULL;                                                \
        CUresult rc = instantiate(phGraphExec, hGraph);                        \
        if (rc == CUDA_SUCCESS && (p->flags & CUDA_GRAPH_INSTANTIATE_FLAG_UPLOAD)) { \
            rc = fk_stream_of(p->hUploadStream) ? map_graph_mem((struct fk_graph *)*phGraphExec) \
                                                : CUDA_ERROR_INVALID_HANDLE;   \
            if (rc != CUDA_SUCCESS) {                                          \
                (void)cuGraphExecDestroy(*phGraphExec);                        \
                *phGraphExec = NULL;                                           \
            }                                                                  \
        }                                                                      \
        p->result_out = rc == CUDA_SUCCESS ? CUDA_GRAPH_INSTANTIATE_SUCCESS    \
                                           : CUDA_GRAPH_INSTANTIATE_ERROR;     \
        return rc;                                                             \
    }

FK_EXPORT CUresult cuGraphDestroy(CUgraph hGraph)
{
    FK_ENTER("cuGraphDestroy");
    if (hGraph)
        free_ops(((struct fk_graph *)hGraph)->ops);
    free(hGraph);
    return CUDA_SUCCESS;
}

FK_EXPORT CUresult cuGraphExecDestroy(CUgraphExec hGraphExec)
{
    FK_ENTER("cuGraphExecDestroy");
    fk_sync_all();
    struct fk_graph *g = (struct fk_graph *)hGraphExec;
    for (int d = 0; g && g->mapped && d < fk.ndevices; d++)
        if (g->mem_bytes[d])
            fk_graph_mem_unmap(d, g->mem_bytes[d]);
    if (hGraphExec)
        free_ops(((struct fk_graph *)hGraphExec)->ops);
    free(hGraphExec);
    return CUDA_SUCCESS;
}

FK_INSTANTIATE_PARAMS()
FK_INSTANTIATE_PARAMS(_ptsz)

#define FK_GRAPH_LAUNCH(suffix)                                                \
    FK_EXPORT CUresult cuGraphLaunch##suffix(CUgraphExec hGraphExec, CUstream s) \
    {                                                                          \
        FK_ENTER("cuGraphLaunch" #suffix);                                     \
        struct fk_graph *g = (struct fk_graph *)hGraphExec;                    \
        if (g == NULL)                                                         \
            return CUDA_ERROR_INVALID_HANDLE;                                  \
        CUresult mrc = map_graph_mem(g);                                       \
        if (mrc != CUDA_SUCCESS)                                               \
            return mrc;                                                        \
        for (int n = 0; n < g->n; n++) {                                       \
            struct fk_graph_node *node = &g->nodes[n];                         \
            CUresult rc = launch(node->k, node->grid[0], node->grid[1],        \
                                 node->grid[2], node->block[0], node->block[1], \
                                 node->block[2], s, node->values, NULL);       \
            if (rc != CUDA_SUCCESS)                                            \
                return rc;                                                     \
        }                                                                      \
        for (const struct fk_op *op = g->ops; op; op = op->next) {             \
            struct fk_op *run = fk_op_clone(op);                               \
            if (run == NULL)                                                   \
                return CUDA_ERROR_OUT_OF_MEMORY;                               \
            CUresult rc = fk_queue_op(s, run, false);                          \
            if (rc != CUDA_SUCCESS)                                            \
                return rc;                                                     \
        }                                                                      \
        return CUDA_SUCCESS;                                                   \
    }
FK_GRAPH_LAUNCH()
FK_GRAPH_LAUNCH(_ptsz)

/* cuGraphUpload: the exec's memory is mapped ahead of its launch. */
#define FK_GRAPH_UPLOAD(suffix)                                                \
    FK_EXPORT CUresult cuGraphUpload##suffix(CUgraphExec hGraphExec, CUstream s) \
    {                                                                          \
        FK_ENTER("cuGraphUpload" #suffix);                                     \
        if (hGraphExec == NULL || fk_stream_of(s) == NULL)                     \
            return CUDA_ERROR_INVALID_HANDLE;                                  \
        return map_graph_mem((struct fk_graph *)hGraphExec);                   \
    }
FK_GRAPH_UPLOAD()
FK_GRAPH_UPLOAD(_ptsz)
