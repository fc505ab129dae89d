/*
 * prog_gpa: a program that resolves the driver the way cudart does: one
 * dlsym for cuGetProcAddress_v2, then base names with ABI versions, both
 * stream flags and a NULL status. Hooks must come back for hooked names (the
 * per-thread variants their own), the driver's answer for the rest.
 */
#define _GNU_SOURCE 1
#include "scenario.h"

#include <dlfcn.h>
#include <string.h>

typedef CUresult (*gpa_fn)(const char *, void **, int, cuuint64_t,
                           CUdriverProcAddressQueryResult *);
static gpa_fn gpa;

static bool in_vramshim(void *p)
{
    Dl_info info;
    return p && dladdr(p, &info) && strstr(info.dli_fname, "libvramshim");
}

static void *get(const char *base, int version, cuuint64_t flags)
{
    void *p = NULL;
    CHECK_CU(gpa(base, &p, version, flags, NULL));
    CHECK(p != NULL, "%s resolved to NULL", base);
    return p;
}

#define PT CU_GET_PROC_ADDRESS_PER_THREAD_DEFAULT_STREAM

int main(void)
{
    void *lib = check_libcuda();
    gpa = (gpa_fn)check_sym(lib, "cuGetProcAddress_v2");
    CHECK(in_vramshim((void *)gpa), "dlsym(cuGetProcAddress_v2) must give the hook");

    /* asking the look-up for itself gives the hook again, per version */
    CHECK(get("cuGetProcAddress", 13000, 0) == (void *)gpa, "self look-up, v2");
    void *v1 = get("cuGetProcAddress", 11030, 0);
    CHECK(in_vramshim(v1) && v1 != (void *)gpa, "self look-up, v1 hook");

    /* per-thread variants are distinct hooks; unhooked names pass through */
    void *async_legacy = get("cuMemAllocAsync", 13000, 0);
    void *async_pt = get("cuMemAllocAsync", 13000, PT);
    CHECK(in_vramshim(async_legacy) && in_vramshim(async_pt), "async hooks");
    CHECK(async_legacy != async_pt, "the _ptsz variant has its own hook");
    void *launch_legacy = get("cuLaunchKernel", 13000, 0);
    void *launch_pt = get("cuLaunchKernel", 13000, PT);
    CHECK(in_vramshim(launch_legacy) && in_vramshim(launch_pt) &&
          launch_legacy != launch_pt, "launch hooks");
    CHECK(!in_vramshim(get("cuStreamQuery", 13000, PT)), "unhooked stays the driver's");
    CHECK(get("cuMemAlloc", 13000, 0) == get("cuMemAlloc", 3020, PT),
          "cuMemAlloc has no per-thread variant: the same hook");

    /* the driver's refusals pass through, status and all */
    CUdriverProcAddressQueryResult status = 99;
    void *p = (void *)1;
    CHECK(gpa("cuMemAllocAsync", &p, 11000, 0, &status) == CUDA_ERROR_NOT_FOUND,
          "too old a version");
    CHECK(status == CU_GET_PROC_ADDRESS_VERSION_NOT_SUFFICIENT && p == NULL, "status %d", status);
    CHECK(gpa("cuNoSuchThing", &p, 13000, 0, &status) == CUDA_ERROR_NOT_FOUND, "no symbol");
    CHECK(status == CU_GET_PROC_ADDRESS_SYMBOL_NOT_FOUND, "status %d", status);

    const struct cu_api api = {
        get("cuInit", 13000, 0), get("cuDevicePrimaryCtxRetain", 13000, 0),
        get("cuCtxSetCurrent", 13000, 0), get("cuMemAlloc", 13000, 0),
        get("cuMemAllocPitch", 13000, 0), get("cuMemAllocManaged", 13000, 0),
        get("cuMemFree", 13000, 0), async_pt, get("cuMemFreeAsync", 13000, PT),
        get("cuStreamCreate", 13000, 0), get("cuStreamSynchronize", 13000, PT),
        get("cuMemHostAlloc", 13000, 0), get("cuMemAllocHost", 13000, 0),
        get("cuMemFreeHost", 13000, 0), get("cuMemHostRegister", 13000, 0),
        get("cuMemHostUnregister", 13000, 0), get("cuMemcpyHtoD", 13000, PT),
        get("cuMemcpyDtoH", 13000, PT), get("cuMemGetInfo", 13000, 0),
    };
    CHECK(in_vramshim((void *)api.MemAlloc) && in_vramshim((void *)api.MemGetInfo) &&
          in_vramshim((void *)api.MemHostRegister), "memory hooks");
    scenario_run(&api, "prog_gpa");
    printf("prog_gpa: ok\n");
    return 0;
}
