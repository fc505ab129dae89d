/*
 * prog_disabled: VRAMSHIM_DISABLE=1 is pure pass-through. dlsym gives the
 * driver's own pointers and nothing is counted, yet the program runs.
 */
#define _GNU_SOURCE 1
#include "check.h"

#include <dlfcn.h>
#include <string.h>

int main(int argc, char **argv)
{
    (void)argc;
    check_reexec_with(argv, "VRAMSHIM_DISABLE", "1");
    void *lib = check_libcuda();
    check_context(lib, 0);
    CUresult (*alloc)(CUdeviceptr *, size_t) = check_sym(lib, "cuMemAlloc_v2");
    Dl_info info;
    CHECK(dladdr((void *)alloc, &info) && strstr(info.dli_fname, "libcuda"),
          "disabled: dlsym must give the driver's pointer, got %s", info.dli_fname);
    CUdeviceptr d;
    CHECK_CU(alloc(&d, 1 << 20));
    /* the exported symbol passes through as well */
    CUresult (*exported)(CUdeviceptr *, size_t) =
        (CUresult(*)(CUdeviceptr *, size_t))dlsym(RTLD_DEFAULT, "cuMemAlloc_v2");
    CHECK_CU(exported(&d, 1 << 20));
    json_t *st = stats_get();
    CHECK_EQ_U64(stats_u64(st, "counters.allocs"), 0);
    json_decref(st);
    printf("prog_disabled: ok\n");
    return 0;
}
