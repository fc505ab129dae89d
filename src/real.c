/*
 * real.c: the real driver, found once.
 *
 * libcuda.so.1 is opened at run time, never linked, and only when the
 * program itself reaches the driver: the first exported hook it calls, or
 * the first dlsym result that could be a driver pointer (init.c's
 * vs_driver_ready calls here). Every name of hooks.def is resolved in
 * libcuda itself; hook_table.c pairs each real pointer with its hook.
 *
 * No lock of ours is ever held across a dynamic-linker call: the linker
 * holds its own lock while it runs constructors, which may call dlsym and
 * come back here. Threads racing to load each resolve a private table, and
 * the first to finish publishes it.
 */
#define _GNU_SOURCE 1
#include "driver.h"

#include <dlfcn.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>

struct vs_real_table vs_real;
_Atomic int vs_real_loaded;

static pthread_mutex_t publish_lock = PTHREAD_MUTEX_INITIALIZER;

/* fork: what was published stays; a lock held at the fork starts free. */
void vs_real_atfork_child(void) { pthread_mutex_init(&publish_lock, NULL); }
static __thread bool loading_here; /* recursion through the linker */

static int query_count(void)
{
    int n = 0;
    if (vs_real.cuDeviceGetCount == NULL || vs_real.cuDeviceGetCount(&n) != CUDA_SUCCESS)
        return 0;
    return n;
}

static int query_name(int dev, char *buf, size_t len)
{
    CUdevice d;
    if (vs_real.cuDeviceGet == NULL || vs_real.cuDeviceGetName == NULL ||
        vs_real.cuDeviceGet(&d, dev) != CUDA_SUCCESS ||
        vs_real.cuDeviceGetName(buf, (int)len, d) != CUDA_SUCCESS)
        return -1;
    return 0;
}

static int query_total(int dev, uint64_t *total)
{
    CUdevice d;
    size_t bytes;
    if (vs_real.cuDeviceGet == NULL || vs_real.cuDeviceTotalMem_v2 == NULL ||
        vs_real.cuDeviceGet(&d, dev) != CUDA_SUCCESS ||
        vs_real.cuDeviceTotalMem_v2(&bytes, d) != CUDA_SUCCESS)
        return -1;
    *total = bytes;
    return 0;
}

void vs_format_uuid(const CUuuid *u, char *out, size_t cap)
{
    const unsigned char *b = (const unsigned char *)u->bytes;
    snprintf(out, cap,
             "GPU-%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x",
             b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7], b[8], b[9], b[10], b[11],
             b[12], b[13], b[14], b[15]);
}

static int query_uuid(int dev, char *buf, size_t len)
{
    CUdevice d;
    CUuuid u;
    if (vs_real.cuDeviceGet == NULL || vs_real.cuDeviceGetUuid_v2 == NULL ||
        vs_real.cuDeviceGet(&d, dev) != CUDA_SUCCESS ||
        vs_real.cuDeviceGetUuid_v2(&u, d) != CUDA_SUCCESS)
        return -1;
    vs_format_uuid(&u, buf, len);
    return 0;
}

static int query_free(int dev, uint64_t *free_bytes)
{
    size_t f, t;
    if (vs_current_device() != dev || vs_real.cuMemGetInfo_v2 == NULL ||
        vs_real.cuMemGetInfo_v2(&f, &t) != CUDA_SUCCESS)
        return -1;
    *free_bytes = f;
    return 0;
}

bool vs_real_load(bool must_load)
{
    if (vs_real_ready())
        return true;
    if (loading_here)
        return false;
    loading_here = true;
    void *lib = dlopen("libcuda.so.1", RTLD_NOW | RTLD_LOCAL | (must_load ? 0 : RTLD_NOLOAD));
    if (lib == NULL) {
        loading_here = false;
        if (must_load)
            vs_error("cannot open libcuda.so.1: %s", dlerror());
        return false;
    }
    struct vs_real_table table;
    memset(&table, 0, sizeof table);
#define VS_HOOK(name, params, args) \
    table.name = (CUresult(*) params)vs_real_dlsym(lib, #name);
#define VS_REAL_ONLY(name, params, args) VS_HOOK(name, params, args)
#include "hooks.def"
#undef VS_HOOK
#undef VS_REAL_ONLY
    loading_here = false;

    pthread_mutex_lock(&publish_lock);
    if (!vs_real_loaded) {
        vs_real = table;
        static const struct vs_device_query q = {query_count, query_name, query_total,
                                                 query_free, query_uuid};
        vs_query_set(&q);
        atomic_store_explicit(&vs_real_loaded, 1, memory_order_release);
        vs_debug("driver loaded");
    }
    pthread_mutex_unlock(&publish_lock);
    return true;
}

int vs_current_device(void)
{
    CUdevice dev = -1;
    if (vs_real.cuCtxGetDevice == NULL || vs_real.cuCtxGetDevice(&dev) != CUDA_SUCCESS)
        return -1;
    return dev;
}
