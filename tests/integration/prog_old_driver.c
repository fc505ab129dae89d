/*
 * prog_old_driver: runs against a test driver without stream-ordered
 * allocation, cuLaunchKernelEx and cuKernelGetParamInfo. Those hooks turn
 * off; everything else is tracked; a call to a missing entry point through
 * vramshim's export is an error, never a crash.
 */
#include "check.h"

#include <dlfcn.h>

typedef CUresult (*gpa_fn)(const char *, void **, int, cuuint64_t,
                           CUdriverProcAddressQueryResult *);

int main(void)
{
    void *lib = check_libcuda();
    check_context(lib, 0);
    CHECK(dlsym(lib, "cuMemAllocAsync") == NULL, "the old driver has no cuMemAllocAsync");
    gpa_fn gpa = (gpa_fn)check_sym(lib, "cuGetProcAddress_v2");
    void *p = NULL;
    CUdriverProcAddressQueryResult status;
    CHECK(gpa("cuMemAllocAsync", &p, 13000, 0, &status) == CUDA_ERROR_NOT_FOUND &&
          p == NULL && status == CU_GET_PROC_ADDRESS_SYMBOL_NOT_FOUND,
          "missing entry points stay missing");

    CUresult (*alloc)(CUdeviceptr *, size_t) = NULL;
    CHECK_CU(gpa("cuMemAlloc", (void **)&alloc, 13000, 0, NULL));
    CUdeviceptr d;
    CHECK_CU(alloc(&d, 1 << 20));

    /* vramshim's own export of a name the driver lacks */
    CUresult (*exported)(CUdeviceptr *, size_t, CUstream) =
        (CUresult(*)(CUdeviceptr *, size_t, CUstream))dlsym(RTLD_DEFAULT, "cuMemAllocAsync");
    CHECK(exported != NULL, "vramshim exports cuMemAllocAsync");
    CHECK(exported(&d, 4096, NULL) == CUDA_ERROR_NOT_FOUND, "missing entry point");

    json_t *st = stats_get();
    check_owner(st, "prog_old_driver", 0, 1 << 20, 1);
    json_decref(st);
    printf("prog_old_driver: ok\n");
    return 0;
}
