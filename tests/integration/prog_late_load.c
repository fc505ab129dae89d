/*
 * prog_late_load: the first driver call goes through vramshim's exported
 * symbol before anything has loaded libcuda, so vramshim opens the driver
 * itself, and the driver's load-time dlsym calls (FAKECUDA_CTOR_DLSYM=1)
 * re-enter vramshim's dlsym hook from inside that dlopen. Nothing may hang
 * or crash, the driver's answer must come back, and once the program loads
 * the driver itself everything is tracked as usual.
 */
#define _GNU_SOURCE 1
#include "check.h"

#include <dlfcn.h>

int main(int argc, char **argv)
{
    (void)argc;
    check_reexec_with(argv, "FAKECUDA_CTOR_DLSYM", "1");
    CHECK(dlopen("libcuda.so.1", RTLD_NOW | RTLD_NOLOAD) == NULL,
          "libcuda must not be loaded yet");
    CUresult (*alloc)(CUdeviceptr *, size_t) =
        (CUresult(*)(CUdeviceptr *, size_t))dlsym(RTLD_DEFAULT, "cuMemAlloc_v2");
    CHECK(alloc != NULL, "vramshim exports cuMemAlloc_v2");
    CUdeviceptr d;
    CHECK(alloc(&d, 4096) == CUDA_ERROR_NOT_INITIALIZED, "no cuInit yet: the driver's answer");

    void *lib = check_libcuda();
    check_context(lib, 0);
    CHECK_CU(alloc(&d, 1 << 20));
    json_t *st = stats_get();
    check_owner(st, "prog_late_load", 0, 1 << 20, 1);
    json_decref(st);
    printf("prog_late_load: ok\n");
    return 0;
}
