/*
 * fake_core.c: the test driver's devices, contexts, memory accounting and
 * error injection.
 *
 * The test driver behaves like the real one in host memory. Device memory
 * has a fixed size per device (FAKECUDA_MEM) and cuMemGetInfo reports what
 * is really left, across processes when FAKECUDA_SHM names a shared segment.
 * Calls before cuInit fail with CUDA_ERROR_NOT_INITIALIZED and calls that
 * need a context without one fail with CUDA_ERROR_INVALID_CONTEXT, as on a
 * GPU. Charges are rounded up to whole pages (the real driver rounds small
 * allocations into 2 MiB pages that later allocations share).
 */
#include "fake_internal.h"

#include <ctype.h>
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <semaphore.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

struct fk_global fk = {.lock = PTHREAD_MUTEX_INITIALIZER};
static pthread_once_t setup_once = PTHREAD_ONCE_INIT;
static struct fk_shared private_shared;

#define CTX_STACK_MAX 16
static __thread struct fk_ctx *ctx_stack[CTX_STACK_MAX];
static __thread int ctx_depth;

/* ---- error injection --------------------------------------------------- */
#define INJECT_SLOTS 16
struct inject {
    char name[64];
    _Atomic unsigned calls;
    unsigned skip, count;
    CUresult error;
    _Atomic bool used;
};
static struct inject injects[INJECT_SLOTS];
static _Atomic int inject_active;

/* A test control, not driver behaviour: the next call of one entry point
 * stops at its door (before any lock of this driver is taken) until the
 * test lets it go, so a test can fork or race while a caller is inside. */
static struct {
    char name[64];
    sem_t *reached, *resume;
} hold;
static _Atomic bool hold_armed;

FK_EXPORT int fakecuda_hold(const char *name, sem_t *reached, sem_t *resume)
{
    if (atomic_load(&hold_armed) || strlen(name) >= sizeof hold.name)
        return -1;
    snprintf(hold.name, sizeof hold.name, "%s", name);
    hold.reached = reached;
    hold.resume = resume;
    atomic_store(&hold_armed, true);
    return 0;
}

static void held_here(const char *name)
{
    if (strcmp(hold.name, name) != 0)
        return;
    bool armed = true;
    if (!atomic_compare_exchange_strong(&hold_armed, &armed, false))
        return; /* another thread took it */
    sem_post(hold.reached);
    while (sem_wait(hold.resume) != 0)
        ;
}

CUresult fk_injected(const char *name)
{
    if (atomic_load_explicit(&hold_armed, memory_order_acquire))
        held_here(name);
    if (atomic_load_explicit(&inject_active, memory_order_relaxed) == 0)
        return CUDA_SUCCESS;
    for (int i = 0; i < INJECT_SLOTS; i++) {
        struct inject *in = &injects[i];
        if (!in->used || strcmp(in->name, name) != 0)
            continue;
        unsigned n = atomic_fetch_add(&in->calls, 1);
        if (n >= in->skip && n < in->skip + in->count)
            return in->error;
    }
    return CUDA_SUCCESS;
}

FK_EXPORT int fakecuda_inject(const char *name, unsigned skip, unsigned count,
                              CUresult error)
{
    for (int i = 0; i < INJECT_SLOTS; i++) {
        struct inject *in = &injects[i];
        bool expected = false;
        if (atomic_compare_exchange_strong(&in->used, &expected, true)) {
            snprintf(in->name, sizeof in->name, "%s", name);
            in->calls = 0;
            in->skip = skip;
            in->count = count;
            in->error = error;
            atomic_fetch_add(&inject_active, 1);
            return 0;
        }
    }
    return -1;
}

FK_EXPORT void fakecuda_inject_clear(void)
{
    for (int i = 0; i < INJECT_SLOTS; i++)
        injects[i].used = false;
    inject_active = 0;
}

static void parse_injections(const char *spec)
{
    char buf[1024];
    snprintf(buf, sizeof buf, "%s", spec);
    char *save = NULL;
    for (char *item = strtok_r(buf, ",", &save); item;
         item = strtok_r(NULL, ",", &save)) {
        char name[64];
        unsigned skip, count;
        int err;
        if (sscanf(item, "%63[^:]:%u:%u:%d", name, &skip, &count, &err) != 4) {
            fprintf(stderr, "fakecuda: FAKECUDA_FAIL item '%s' is not "
                            "name:skip:count:error\n", item);
            continue;
        }
        fakecuda_inject(name, skip, count, (CUresult)err);
    }
}

/* ---- set-up ------------------------------------------------------------ */
static uint64_t parse_bytes(const char *s, uint64_t dflt)
{
    if (s == NULL || !isdigit((unsigned char)*s))
        return dflt;
    char *end;
    unsigned long long v = strtoull(s, &end, 10);
    switch (toupper((unsigned char)*end)) {
    case 'K': v <<= 10; break;
    case 'M': v <<= 20; break;
    case 'G': v <<= 30; break;
    default: break;
    }
    return v;
}

static void setup_body(void)
{
    const char *n = getenv("FAKECUDA_DEVICES");
    fk.ndevices = n ? atoi(n) : 1;
    if (fk.ndevices < 1 || fk.ndevices > FK_MAX_DEVICES)
        fk.ndevices = 1;
    fk.mem_size = parse_bytes(getenv("FAKECUDA_MEM"), 1ULL << 30);
    const char *bw = getenv("FAKECUDA_COPY_MBPS");
    fk.copy_mibps = bw ? strtoull(bw, NULL, 10) : 0;
    fk.ctx_mem = parse_bytes(getenv("FAKECUDA_CTX_MEM"), 0);
    fk.shared = &private_shared;
    const char *shm = getenv("FAKECUDA_SHM");
    if (shm && *shm) {
        int fd = shm_open(shm, O_RDWR | O_CREAT, 0600);
        if (fd >= 0 && ftruncate(fd, sizeof(struct fk_shared)) == 0) {
            void *p = mmap(NULL, sizeof(struct fk_shared), PROT_READ | PROT_WRITE,
                           MAP_SHARED, fd, 0);
            if (p != MAP_FAILED)
                fk.shared = p;
        }
        if (fd >= 0)
            close(fd);
    }
    for (int i = 0; i < FK_MAX_DEVICES; i++)
        fk.primary[i] = (struct fk_ctx){.device = i, .primary = true};
    const char *fail = getenv("FAKECUDA_FAIL");
    if (fail && *fail)
        parse_injections(fail);
}

void fk_setup(void) { pthread_once(&setup_once, setup_body); }

/* FAKECUDA_CTOR_DLSYM=1: look up a few of our own names with dlsym while
 * being loaded, as a driver whose start-up code resolves symbols would.
 * Under vramshim this re-enters its dlsym hook from inside its own dlopen. */
__attribute__((constructor)) static void load_time_lookups(void)
{
    const char *v = getenv("FAKECUDA_CTOR_DLSYM");
    if (v == NULL || strcmp(v, "1") != 0)
        return;
    void *self = dlopen("libcuda.so.1", RTLD_NOW | RTLD_NOLOAD);
    if (self == NULL)
        return;
    if (dlsym(self, "cuMemAlloc_v2") == NULL || dlsym(self, "cuGetProcAddress_v2") == NULL)
        fprintf(stderr, "fakecuda: load-time dlsym failed\n");
    dlclose(self);
}

bool fk_charge(int dev, uint64_t bytes)
{
    _Atomic uint64_t *used = &fk.shared->used[dev];
    uint64_t cur = atomic_load(used);
    do {
        if (cur + bytes > fk.mem_size || cur + bytes < cur)
            return false;
    } while (!atomic_compare_exchange_weak(used, &cur, cur + bytes));
    atomic_fetch_add(&fk.mine[dev], bytes);
    return true;
}

void fk_uncharge(int dev, uint64_t bytes)
{
    atomic_fetch_sub(&fk.shared->used[dev], bytes);
    atomic_fetch_sub(&fk.mine[dev], bytes);
}

FK_EXPORT unsigned long long fakecuda_held(int dev)
{
    fk_setup();
    if (!fk_device_ok(dev))
        return 0;
    return atomic_load(&fk.mine[dev]);
}

FK_EXPORT unsigned long long fakecuda_used(int dev)
{
    fk_setup();
    if (!fk_device_ok(dev))
        return 0;
    return atomic_load(&fk.shared->used[dev]);
}

FK_EXPORT int fakecuda_device_count(void)
{
    fk_setup();
    return fk.ndevices;
}

FK_EXPORT unsigned long long fakecuda_mem_size(void)
{
    fk_setup();
    return fk.mem_size;
}

/* Device UUIDs: fixed bytes and the ordinal last, so the test NVML can
 * give the same ones. */
FK_EXPORT void fakecuda_uuid_bytes(int dev, unsigned char out[16])
{
    static const unsigned char base[16] = {0xfa, 0xce, 0xc0, 0xda, 0x12, 0x34, 0x45, 0x67,
                                           0x89, 0xab, 0xcd, 0xef, 0x00, 0x11, 0x22, 0x00};
    memcpy(out, base, 16);
    out[15] = (unsigned char)dev;
}

/* ---- initialisation and devices --------------------------------------- */
FK_EXPORT CUresult cuInit(unsigned int flags)
{
    fk_setup();
    CUresult inj = fk_injected("cuInit");
    if (inj != CUDA_SUCCESS)
        return inj;
    if (flags != 0)
        return CUDA_ERROR_INVALID_VALUE;
    fk.initialized = true;
    return CUDA_SUCCESS;
}

FK_EXPORT CUresult cuDriverGetVersion(int *version)
{
    if (version == NULL)
        return CUDA_ERROR_INVALID_VALUE;
    *version = 13000;
    return CUDA_SUCCESS;
}

FK_EXPORT CUresult cuDeviceGetCount(int *count)
{
    FK_ENTER("cuDeviceGetCount");
    if (count == NULL)
        return CUDA_ERROR_INVALID_VALUE;
    *count = fk.ndevices;
    return CUDA_SUCCESS;
}

FK_EXPORT CUresult cuDeviceGet(CUdevice *device, int ordinal)
{
    FK_ENTER("cuDeviceGet");
    FK_DEVICE_ARGS(device, ordinal);
    *device = ordinal;
    return CUDA_SUCCESS;
}

FK_EXPORT CUresult cuDeviceGetName(char *name, int len, CUdevice dev)
{
    FK_ENTER("cuDeviceGetName");
    if (name == NULL || len <= 0)
        return CUDA_ERROR_INVALID_VALUE;
    if (!fk_device_ok(dev))
        return CUDA_ERROR_INVALID_DEVICE;
    snprintf(name, (size_t)len, "fakecuda device %d", dev);
    return CUDA_SUCCESS;
}

FK_EXPORT CUresult cuDeviceGetUuid_v2(CUuuid *uuid, CUdevice dev)
{
    FK_ENTER("cuDeviceGetUuid_v2");
    FK_DEVICE_ARGS(uuid, dev);
    fakecuda_uuid_bytes(dev, (unsigned char *)uuid->bytes);
    return CUDA_SUCCESS;
}

FK_EXPORT CUresult cuDeviceGetUuid(CUuuid *uuid, CUdevice dev)
{
    return cuDeviceGetUuid_v2(uuid, dev);
}

FK_EXPORT CUresult cuDeviceTotalMem_v2(size_t *bytes, CUdevice dev)
{
    FK_ENTER("cuDeviceTotalMem_v2");
    FK_DEVICE_ARGS(bytes, dev);
    *bytes = fk.mem_size;
    return CUDA_SUCCESS;
}

FK_EXPORT CUresult cuDeviceGetAttribute(int *pi, CUdevice_attribute attrib, CUdevice dev)
{
    FK_ENTER("cuDeviceGetAttribute");
    FK_DEVICE_ARGS(pi, dev);
    switch (attrib) {
    case CU_DEVICE_ATTRIBUTE_VIRTUAL_MEMORY_MANAGEMENT_SUPPORTED:
    case CU_DEVICE_ATTRIBUTE_UNIFIED_ADDRESSING:
    case CU_DEVICE_ATTRIBUTE_MEMORY_POOLS_SUPPORTED:
    case CU_DEVICE_ATTRIBUTE_CONCURRENT_MANAGED_ACCESS:
        *pi = 1;
        break;
    case CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR: *pi = 9; break;
    case CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR: *pi = 0; break;
    case CU_DEVICE_ATTRIBUTE_PAGEABLE_MEMORY_ACCESS: *pi = 0; break;
    /* batch decompression is modelled (fake_decompress.c), every
     * algorithm reading the identity format */
    case CU_DEVICE_ATTRIBUTE_MEM_DECOMPRESS_ALGORITHM_MASK:
        *pi = CU_MEM_DECOMPRESS_ALGORITHM_DEFLATE | CU_MEM_DECOMPRESS_ALGORITHM_SNAPPY |
              CU_MEM_DECOMPRESS_ALGORITHM_LZ4;
        break;
    /* the resident threads a stack is reserved for (fake_ctxmem.c) */
    case CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT: *pi = FK_SM_COUNT; break;
    case CU_DEVICE_ATTRIBUTE_MAX_THREADS_PER_MULTIPROCESSOR: *pi = FK_THREADS_PER_SM; break;
    default: *pi = 0; break;
    }
    return CUDA_SUCCESS;
}

/* ---- contexts ---------------------------------------------------------- */
struct fk_ctx *fk_current(void)
{
    return ctx_depth > 0 ? ctx_stack[ctx_depth - 1] : NULL;
}

static void set_current(struct fk_ctx *c)
{
    if (c == NULL) {
        if (ctx_depth > 0)
            ctx_depth--;
        return;
    }
    if (ctx_depth == 0)
        ctx_depth = 1;
    ctx_stack[ctx_depth - 1] = c;
}

FK_EXPORT CUresult cuDevicePrimaryCtxRetain(CUcontext *pctx, CUdevice dev)
{
    FK_ENTER("cuDevicePrimaryCtxRetain");
    FK_DEVICE_ARGS(pctx, dev);
    pthread_mutex_lock(&fk.lock);
    bool fits = fk.primary[dev].refcount > 0 || fk_ctx_mem_take(&fk.primary[dev]);
    if (fits)
        fk.primary[dev].refcount++;
    pthread_mutex_unlock(&fk.lock);
    if (!fits)
        return CUDA_ERROR_OUT_OF_MEMORY;
    *pctx = (CUcontext)&fk.primary[dev];
    return CUDA_SUCCESS;
}

FK_EXPORT CUresult cuDevicePrimaryCtxRelease_v2(CUdevice dev)
{
    FK_ENTER("cuDevicePrimaryCtxRelease_v2");
    if (!fk_device_ok(dev))
        return CUDA_ERROR_INVALID_DEVICE;
    pthread_mutex_lock(&fk.lock);
    if (fk.primary[dev].refcount > 0 && --fk.primary[dev].refcount == 0)
        fk_ctx_mem_give_back(&fk.primary[dev]); /* the last release destroys it */
    pthread_mutex_unlock(&fk.lock);
    return CUDA_SUCCESS;
}

FK_EXPORT CUresult cuCtxCreate_v2(CUcontext *pctx, unsigned int flags, CUdevice dev)
{
    (void)flags;
    FK_ENTER("cuCtxCreate_v2");
    FK_DEVICE_ARGS(pctx, dev);
    struct fk_ctx *c = calloc(1, sizeof *c);
    if (c == NULL)
        return CUDA_ERROR_OUT_OF_MEMORY;
    c->device = dev;
    c->refcount = 1;
    if (!fk_ctx_mem_take(c)) {
        free(c);
        return CUDA_ERROR_OUT_OF_MEMORY;
    }
    if (ctx_depth < CTX_STACK_MAX)
        ctx_stack[ctx_depth++] = c;
    *pctx = (CUcontext)c;
    return CUDA_SUCCESS;
}

FK_EXPORT CUresult cuCtxDestroy_v2(CUcontext ctx)
{
    FK_ENTER("cuCtxDestroy_v2");
    struct fk_ctx *c = (struct fk_ctx *)ctx;
    if (c == NULL || c->primary)
        return CUDA_ERROR_INVALID_CONTEXT;
    fk_sync_all();
    for (int i = 0; i < ctx_depth; i++)
        if (ctx_stack[i] == c)
            ctx_stack[i] = NULL;
    while (ctx_depth > 0 && ctx_stack[ctx_depth - 1] == NULL)
        ctx_depth--;
    fk_modules_ctx_gone(c);
    fk_ctx_mem_give_back(c);
    free(c);
    return CUDA_SUCCESS;
}

FK_EXPORT CUresult cuCtxSetCurrent(CUcontext ctx)
{
    FK_ENTER("cuCtxSetCurrent");
    set_current((struct fk_ctx *)ctx);
    return CUDA_SUCCESS;
}

FK_EXPORT CUresult cuCtxGetCurrent(CUcontext *pctx)
{
    FK_ENTER("cuCtxGetCurrent");
    if (pctx == NULL)
        return CUDA_ERROR_INVALID_VALUE;
    *pctx = (CUcontext)fk_current();
    return CUDA_SUCCESS;
}

FK_EXPORT CUresult cuCtxPushCurrent_v2(CUcontext ctx)
{
    FK_ENTER("cuCtxPushCurrent_v2");
    if (ctx == NULL)
        return CUDA_ERROR_INVALID_CONTEXT;
    if (ctx_depth >= CTX_STACK_MAX)
        return CUDA_ERROR_INVALID_VALUE;
    ctx_stack[ctx_depth++] = (struct fk_ctx *)ctx;
    return CUDA_SUCCESS;
}

FK_EXPORT CUresult cuCtxPopCurrent_v2(CUcontext *pctx)
{
    FK_ENTER("cuCtxPopCurrent_v2");
    if (ctx_depth == 0)
        return CUDA_ERROR_INVALID_CONTEXT;
    struct fk_ctx *c = ctx_stack[--ctx_depth];
    if (pctx)
        *pctx = (CUcontext)c;
    return CUDA_SUCCESS;
}

FK_EXPORT CUresult cuCtxGetDevice(CUdevice *device)
{
    FK_ENTER("cuCtxGetDevice");
    if (device == NULL)
        return CUDA_ERROR_INVALID_VALUE;
    FK_NEED_CTX(c);
    *device = c->device;
    return CUDA_SUCCESS;
}

FK_EXPORT CUresult cuCtxSynchronize(void)
{
    FK_ENTER("cuCtxSynchronize");
    FK_NEED_CTX(c);
    CUresult rc = fk_sync_ctx(c);
    fk_pool_sync_release();
    return rc;
}

/* ---- peer access -------------------------------------------------------
 * Driver API reference, Peer Context Memory Access: cuCtxEnablePeerAccess
 * makes "all allocations from peerContext ... immediately accessible by the
 * current context"; access is one way; enabling it twice is
 * CUDA_ERROR_PEER_ACCESS_ALREADY_ENABLED, disabling what was never enabled
 * CUDA_ERROR_PEER_ACCESS_NOT_ENABLED, Flags must be 0. It covers the
 * cuMemAlloc family only: VMM memory is reached by the devices
 * cuMemSetAccess names (fake_vmm.c). Every pair of test devices can peer. */
FK_EXPORT CUresult cuDeviceCanAccessPeer(int *can, CUdevice dev, CUdevice peer)
{
    FK_ENTER("cuDeviceCanAccessPeer");
    if (can == NULL)
        return CUDA_ERROR_INVALID_VALUE;
    if (!fk_device_ok(dev) || !fk_device_ok(peer))
        return CUDA_ERROR_INVALID_DEVICE;
    *can = dev != peer;
    return CUDA_SUCCESS;
}

static CUresult peer_access(CUcontext peer_ctx, bool on)
{
    FK_NEED_CTX(c);
    struct fk_ctx *p = (struct fk_ctx *)peer_ctx;
    if (p == NULL)
        return CUDA_ERROR_INVALID_CONTEXT;
    if (p->device == c->device)
        return on ? CUDA_ERROR_PEER_ACCESS_UNSUPPORTED : CUDA_ERROR_PEER_ACCESS_NOT_ENABLED;
    uint32_t bit = 1u << p->device;
    uint32_t was = on ? atomic_fetch_or(&c->peer_devs, bit) : atomic_fetch_and(&c->peer_devs, ~bit);
    if (on && (was & bit))
        return CUDA_ERROR_PEER_ACCESS_ALREADY_ENABLED;
    if (!on && !(was & bit))
        return CUDA_ERROR_PEER_ACCESS_NOT_ENABLED;
    return CUDA_SUCCESS;
}

FK_EXPORT CUresult cuCtxEnablePeerAccess(CUcontext peer, unsigned int flags)
{
    FK_ENTER("cuCtxEnablePeerAccess");
    if (flags != 0)
        return CUDA_ERROR_INVALID_VALUE;
    return peer_access(peer, true);
}

FK_EXPORT CUresult cuCtxDisablePeerAccess(CUcontext peer)
{
    FK_ENTER("cuCtxDisablePeerAccess");
    return peer_access(peer, false);
}

bool fk_reachable(struct fk_ctx *c, uint64_t addr)
{
    int vmm = fk_vmm_reachable(addr, c->device);
    if (vmm >= 0)
        return vmm == 1;
    uint64_t base, size;
    int dev;
    bool managed;
    if (!fk_mem_lookup(addr, &base, &size, &dev, &managed) || managed || dev == c->device)
        return true;
    return (atomic_load(&c->peer_devs) >> dev) & 1;
}

FK_EXPORT CUresult cuMemGetInfo_v2(size_t *free_bytes, size_t *total)
{
    FK_ENTER("cuMemGetInfo_v2");
    if (free_bytes == NULL || total == NULL)
        return CUDA_ERROR_INVALID_VALUE;
    FK_NEED_CTX(c);
    uint64_t used = atomic_load(&fk.shared->used[c->device]);
    *total = fk.mem_size;
    *free_bytes = used < fk.mem_size ? fk.mem_size - used : 0;
    return CUDA_SUCCESS;
}

FK_EXPORT CUresult cuGetErrorName(CUresult error, const char **pstr)
{
    static char buf[32];
    if (pstr == NULL)
        return CUDA_ERROR_INVALID_VALUE;
    snprintf(buf, sizeof buf, "CUDA_ERROR_%d", (int)error);
    *pstr = error == CUDA_SUCCESS ? "CUDA_SUCCESS" : buf;
    return CUDA_SUCCESS;
}
