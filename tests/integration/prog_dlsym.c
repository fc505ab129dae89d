/*
 * prog_dlsym: a program that opens the driver itself and finds every entry
 * point with dlsym, as PyTorch does for its versioned names. The pointers
 * it gets must be vramshim's hooks, and the common scenario must add up.
 */
#define _GNU_SOURCE 1
#include "scenario.h"

#include <dlfcn.h>
#include <string.h>

static void *hooked(void *lib, const char *name)
{
    void *p = check_sym(lib, name);
    Dl_info info;
    CHECK(dladdr(p, &info) && strstr(info.dli_fname, "libvramshim"),
          "dlsym(libcuda, %s) is not vramshim's hook (%s)", name,
          info.dli_fname ? info.dli_fname : "?");
    return p;
}

int main(void)
{
    void *lib = check_libcuda();
    const struct cu_api api = {
        check_sym(lib, "cuInit"), check_sym(lib, "cuDevicePrimaryCtxRetain"),
        check_sym(lib, "cuCtxSetCurrent"), hooked(lib, "cuMemAlloc_v2"),
        hooked(lib, "cuMemAllocPitch_v2"), hooked(lib, "cuMemAllocManaged"),
        hooked(lib, "cuMemFree_v2"), hooked(lib, "cuMemAllocAsync"),
        hooked(lib, "cuMemFreeAsync"), check_sym(lib, "cuStreamCreate"),
        check_sym(lib, "cuStreamSynchronize"), hooked(lib, "cuMemHostAlloc"),
        hooked(lib, "cuMemAllocHost_v2"), hooked(lib, "cuMemFreeHost"),
        hooked(lib, "cuMemHostRegister_v2"), hooked(lib, "cuMemHostUnregister"),
        check_sym(lib, "cuMemcpyHtoD_v2"), check_sym(lib, "cuMemcpyDtoH_v2"),
        hooked(lib, "cuMemGetInfo_v2"),
    };
    /* names vramshim does not hook come back untouched */
    Dl_info info;
    void *query = check_sym(lib, "cuStreamQuery");
    CHECK(dladdr(query, &info) && strstr(info.dli_fname, "libcuda"),
          "an unhooked name must stay the driver's");
    /* so does anything that is not a driver entry point */
    CHECK(dlsym(RTLD_DEFAULT, "strlen") == (void *)strlen, "strlen");
    CHECK(dlsym(lib, "cuNoSuchThing") == NULL, "a missing name stays missing");
    /* before cuInit, the driver's own error passes through and nothing is
     * recorded */
    CUdeviceptr early;
    CHECK(api.MemAlloc(&early, 4096) == CUDA_ERROR_NOT_INITIALIZED, "alloc before cuInit");
    size_t f, t;
    CHECK(api.MemGetInfo(&f, &t) == CUDA_ERROR_NOT_INITIALIZED, "cuMemGetInfo before cuInit");
    json_t *st = stats_get();
    CHECK_EQ_U64(stats_u64(st, "counters.allocs"), 0);
    CHECK(json_array_size(json_object_get(st, "devices")) == 0, "no device seen yet");
    json_decref(st);

    scenario_run(&api, "prog_dlsym");
    printf("prog_dlsym: ok\n");
    return 0;
}
