/*
 * prog_nvml_unload: a program that shuts NVML down and unloads it, then
 * goes on with CUDA. vramshim reads NVML's per-process figure on CUDA
 * events (a context, a module load) when the program has NVML, for the
 * overhead; it must hold nothing of NVML across those events. (Before: it
 * cached NVML's function pointers at the first event and called them,
 * unmapped, at the next one: SIGSEGV in cuCtxCreate.)
 */
#include "check.h"

#include <dlfcn.h>

typedef int (*nvml_void_fn)(void);

int main(void)
{
    void *cu = dlopen("libcuda.so.1", RTLD_NOW);
    CHECK(cu != NULL, "dlopen libcuda.so.1: %s", dlerror());
    CUresult (*init)(unsigned) = (CUresult(*)(unsigned))dlsym(cu, "cuInit");
    CUresult (*ctx_create)(CUcontext *, unsigned, CUdevice) =
        (CUresult(*)(CUcontext *, unsigned, CUdevice))dlsym(cu, "cuCtxCreate_v2");
    CUresult (*ctx_destroy)(CUcontext) = (CUresult(*)(CUcontext))dlsym(cu, "cuCtxDestroy_v2");
    CHECK(init && ctx_create && ctx_destroy, "driver entry points");
    CHECK_CU(init(0));

    void *nvml = dlopen("libnvidia-ml.so.1", RTLD_NOW | RTLD_LOCAL);
    CHECK(nvml != NULL, "dlopen libnvidia-ml.so.1: %s", dlerror());
    nvml_void_fn nvml_init = (nvml_void_fn)dlsym(nvml, "nvmlInit_v2");
    nvml_void_fn nvml_shutdown = (nvml_void_fn)dlsym(nvml, "nvmlShutdown");
    CHECK(nvml_init && nvml_shutdown, "NVML entry points");
    CHECK(nvml_init() == 0, "nvmlInit_v2");
    CUcontext first, second;
    CHECK_CU(ctx_create(&first, 0, 0)); /* measured through NVML */
    CHECK(nvml_shutdown() == 0, "nvmlShutdown");
    CHECK(dlclose(nvml) == 0, "dlclose NVML");
    CHECK(dlopen("libnvidia-ml.so.1", RTLD_NOW | RTLD_NOLOAD) == NULL, "NVML still mapped");
    CHECK_CU(ctx_create(&second, 0, 0)); /* measured without it */
    CHECK_CU(ctx_destroy(second));
    CHECK_CU(ctx_destroy(first));
    printf("nvml_unload: ok\n");
    return 0;
}
