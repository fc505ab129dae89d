/*
 * prog_unload: a function handle that dies with its module and comes back
 * for another function. Touch tracking reads a launch's parameters by the
 * layout it remembers for the handle; after cuModuleUnload the test driver
 * hands the dead handle of an eight-pointer kernel to a one-pointer kernel
 * (as the real driver may: it reuses its objects' memory), and that launch
 * passes a parameter array whose single pointer ends just before an
 * inaccessible page. Reading it with the stale eight-parameter layout
 * faults (SIGSEGV, as before vramshim forgot layouts at unloads); with the
 * layout asked again the kernel runs and the buffer holds its bytes. The
 * same for cuLibraryUnload and the library's kernels.
 */
#include "check.h"

#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#define M (1ULL << 20)

static void wide_body(void **params, fakecuda_dim3 grid, fakecuda_dim3 block)
{
    (void)grid, (void)block;
    for (int i = 0; i < 8; i++)
        ((unsigned char *)(uintptr_t)*(CUdeviceptr *)params[i])[i] = 0x11;
}

static void narrow_body(void **params, fakecuda_dim3 grid, fakecuda_dim3 block)
{
    (void)grid, (void)block;
    memset((void *)(uintptr_t)*(CUdeviceptr *)params[0], 0x5a, 4096);
}

typedef CUresult (*launch_fn)(CUfunction, unsigned, unsigned, unsigned, unsigned, unsigned,
                              unsigned, unsigned, CUstream, void **, void **);

/* A one-element parameter array whose element ends where the page ends;
 * the next page cannot be read. */
static void **guarded_params(CUdeviceptr *arg)
{
    long page = sysconf(_SC_PAGESIZE);
    char *two = mmap(NULL, 2 * (size_t)page, PROT_READ | PROT_WRITE,
                     MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    CHECK(two != MAP_FAILED, "mmap");
    CHECK(mprotect(two + page, (size_t)page, PROT_NONE) == 0, "mprotect");
    void **params = (void **)(two + page - sizeof(void *));
    params[0] = arg;
    return params;
}

int main(int argc, char **argv)
{
    const char *env[] = {"FAKECUDA_MEM=256M", "VRAMSHIM_OFFLOAD=pinned", "VRAMSHIM_LOG=error",
                         NULL};
    check_reexec_env(argv, env);
    void *lib = check_libcuda();
    check_context(lib, 0);
    size_t ptrs[8];
    for (int i = 0; i < 8; i++)
        ptrs[i] = sizeof(CUdeviceptr);
    check_kernel(lib, "wide", wide_body, 8, ptrs);
    check_kernel(lib, "narrow", narrow_body, 1, ptrs);
    CUresult (*mod_load)(CUmodule *, const void *) = check_sym(lib, "cuModuleLoadData");
    CUresult (*mod_get)(CUfunction *, CUmodule, const char *) =
        check_sym(lib, "cuModuleGetFunction");
    CUresult (*mod_unload)(CUmodule) = check_sym(lib, "cuModuleUnload");
    CUresult (*lib_load)(CUlibrary *, const void *, CUjit_option *, void **, unsigned,
                         CUlibraryOption *, void **, unsigned) =
        check_sym(lib, "cuLibraryLoadData");
    CUresult (*lib_get)(CUkernel *, CUlibrary, const char *) = check_sym(lib, "cuLibraryGetKernel");
    CUresult (*lib_unload)(CUlibrary) = check_sym(lib, "cuLibraryUnload");
    CUresult (*alloc)(CUdeviceptr *, size_t) = check_sym(lib, "cuMemAlloc_v2");
    CUresult (*dtoh)(void *, CUdeviceptr, size_t) = check_sym(lib, "cuMemcpyDtoH_v2");
    CUresult (*sync)(void) = check_sym(lib, "cuCtxSynchronize");
    launch_fn launch = check_sym(lib, "cuLaunchKernel");

    CUdeviceptr buf; /* backed (offload on, a granule or more): launches are scanned */
    CHECK_CU(alloc(&buf, 4 * M));
    void *wide_params[8];
    for (int i = 0; i < 8; i++)
        wide_params[i] = &buf;
    unsigned char got[4096];

    for (int round = 0; round < 2; round++) {
        const char *how = round == 0 ? "module" : "library";
        CUfunction wide, narrow;
        CUmodule m = NULL;
        CUlibrary l = NULL;
        if (round == 0) {
            CHECK_CU(mod_load(&m, "image"));
            CHECK_CU(mod_get(&wide, m, "wide"));
        } else {
            CHECK_CU(lib_load(&l, "image", NULL, NULL, 0, NULL, NULL, 0));
            CHECK_CU(lib_get((CUkernel *)&wide, l, "wide"));
        }
        CHECK_CU(launch(wide, 1, 1, 1, 1, 1, 1, 0, NULL, wide_params, NULL));
        CHECK_CU(sync());
        if (round == 0) {
            CHECK_CU(mod_unload(m));
            CHECK_CU(mod_load(&m, "image"));
            CHECK_CU(mod_get(&narrow, m, "narrow"));
        } else {
            CHECK_CU(lib_unload(l));
            CHECK_CU(lib_load(&l, "image", NULL, NULL, 0, NULL, NULL, 0));
            CHECK_CU(lib_get((CUkernel *)&narrow, l, "narrow"));
        }
        CHECK(narrow == wide, "%s: the test driver did not recycle the handle", how);
        CHECK_CU(launch(narrow, 1, 1, 1, 1, 1, 1, 0, NULL, guarded_params(&buf), NULL));
        CHECK_CU(sync());
        CHECK_CU(dtoh(got, buf, sizeof got));
        for (size_t i = 0; i < sizeof got; i++)
            CHECK(got[i] == 0x5a, "%s: byte %zu is 0x%02x after the recycled handle's launch",
                  how, i, got[i]);
        if (round == 0)
            CHECK_CU(mod_unload(m));
        else
            CHECK_CU(lib_unload(l));
    }
    printf("unload: ok\n");
    return 0;
}
