/*
 * prog_overhead: contexts, runtime limits and modules count against the
 * VRAM limit (issue 12, hole 5). The test driver reserves 24 MiB for each
 * context (FAKECUDA_CTX_MEM), the stack of every resident thread when
 * cuCtxSetLimit raises it, and a module's globals at its load. Under a
 * 256 MiB limit vramshim's `overhead` equals what the driver holds beyond
 * the allocations after each step, cuMemGetInfo's free figure leaves it
 * out, and allocations past limit - overhead are refused; unloading and
 * destroying give it back. The program is linked with the test NVML: until
 * it initialises NVML the figures come from the device's free memory
 * (overhead_source "free-memory", "estimate" for the first context); once
 * it has, from NVML's per-process usage (nvmlDeviceGetComputeRunningProcesses,
 * "nvml"), and they still equal what the driver holds.
 */
#include "check.h"
#include "fakenvml.h"

#include <string.h>

#define M (1ULL << 20)
#define LIMIT (256 * M)
#define CTX_MEM (24 * M)
/* the test driver's resident threads: 4 multiprocessors x 2048 */
#define THREADS (4 * 2048ULL)

static unsigned long long (*held)(int);
static CUresult (*info)(size_t *, size_t *);

/* vramshim's overhead equals what the driver holds beyond `allocated`,
 * and the slice's free figure leaves both out. */
static void check_books(const char *where, uint64_t allocated, uint64_t want_overhead)
{
    json_t *st = stats_get();
    uint64_t overhead = stats_u64(st, "devices.0.overhead");
    CHECK(overhead == want_overhead, "%s: overhead %llu, expected %llu", where,
          (unsigned long long)overhead, (unsigned long long)want_overhead);
    CHECK_EQ_U64(stats_u64(st, "devices.0.allocated"), allocated);
    CHECK(held(0) == allocated + overhead, "%s: the driver holds %llu, vramshim counts %llu",
          where, held(0), (unsigned long long)(allocated + overhead));
    json_decref(st);
    size_t f, t;
    CHECK_CU(info(&f, &t));
    CHECK(f == LIMIT - allocated - overhead, "%s: cuMemGetInfo free %zu, expected %llu", where,
          f, (unsigned long long)(LIMIT - allocated - overhead));
    check_invariants(where);
}

static void check_source(const char *where, const char *want)
{
    json_t *st = stats_get();
    json_t *dev = json_array_get(json_object_get(st, "devices"), 0);
    const char *got = json_string_value(json_object_get(dev, "overhead_source"));
    CHECK(got && strcmp(got, want) == 0, "%s: overhead_source %s, expected %s", where,
          got ? got : "(none)", want);
    json_decref(st);
}

int main(int argc, char **argv)
{
    (void)argc;
    const char *env[] = {"VRAMSHIM_VRAM_LIMIT=256M", "VRAMSHIM_OFFLOAD=off", "FAKECUDA_MEM=2G",
                         "FAKECUDA_CTX_MEM=24M", NULL};
    check_reexec_env(argv, env);
    void *lib = check_libcuda();
    held = check_sym(lib, "fakecuda_held");
    info = check_sym(lib, "cuMemGetInfo_v2");
    CUresult (*set_limit)(CUlimit, size_t) = check_sym(lib, "cuCtxSetLimit");
    CUresult (*get_limit)(size_t *, CUlimit) = check_sym(lib, "cuCtxGetLimit");
    CUresult (*load)(CUmodule *, const void *) = check_sym(lib, "cuModuleLoadData");
    CUresult (*load_ex)(CUmodule *, const void *, unsigned, CUjit_option *, void **) =
        check_sym(lib, "cuModuleLoadDataEx");
    CUresult (*unload)(CUmodule) = check_sym(lib, "cuModuleUnload");
    CUresult (*lib_load)(CUlibrary *, const void *, CUjit_option *, void **, unsigned,
                         CUlibraryOption *, void **, unsigned) = check_sym(lib, "cuLibraryLoadData");
    CUresult (*lib_unload)(CUlibrary) = check_sym(lib, "cuLibraryUnload");
    CUresult (*create)(CUcontext *, unsigned, CUdevice) = check_sym(lib, "cuCtxCreate_v2");
    CUresult (*destroy)(CUcontext) = check_sym(lib, "cuCtxDestroy_v2");
    CUresult (*set_ctx)(CUcontext) = check_sym(lib, "cuCtxSetCurrent");
    CUresult (*alloc)(CUdeviceptr *, size_t) = check_sym(lib, "cuMemAlloc_v2");
    CUresult (*mem_free)(CUdeviceptr) = check_sym(lib, "cuMemFree_v2");

    check_context(lib, 0); /* the primary context: 24 MiB */
    CUcontext primary;
    CUresult (*get_ctx)(CUcontext *) = check_sym(lib, "cuCtxGetCurrent");
    CHECK_CU(get_ctx(&primary));
    uint64_t over = CTX_MEM;
    check_books("primary context", 0, over);
    check_source("primary context", "estimate");

    /* a 16 KiB stack for each of 8192 threads: 15 KiB x 8192 more */
    CHECK_CU(set_limit(CU_LIMIT_STACK_SIZE, 16 * 1024));
    size_t stack;
    CHECK_CU(get_limit(&stack, CU_LIMIT_STACK_SIZE));
    over += (stack - 1024) * THREADS;
    check_books("stack raised", 0, over);
    check_source("stack raised", "free-memory");
    CHECK_CU(set_limit(CU_LIMIT_MALLOC_HEAP_SIZE, 40 * M)); /* 8 MiB by default */
    over += 32 * M;
    check_books("heap raised", 0, over);
    CHECK_CU(set_limit(CU_LIMIT_MALLOC_HEAP_SIZE, 16 * M));
    over -= 24 * M;
    check_books("heap lowered", 0, over);

    /* modules and a library with globals */
    CUmodule mod, mod2;
    CHECK_CU(load(&mod, "fakecuda-module globals=8388608"));
    CHECK_CU(load_ex(&mod2, "fakecuda-module globals=2097152", 0, NULL, NULL));
    CUlibrary libr;
    CHECK_CU(lib_load(&libr, "fakecuda-module globals=4194304", NULL, NULL, 0, NULL, NULL, 0));
    over += 14 * M;
    check_books("modules loaded", 0, over);

    /* the slice is what is left: exactly that much fits, a page more does not */
    uint64_t room = LIMIT - over;
    CUdeviceptr big, one;
    CHECK_CU(alloc(&big, room));
    CHECK(alloc(&one, 4096) == CUDA_ERROR_OUT_OF_MEMORY,
          "a page past limit - overhead (%llu bytes of overhead) was admitted",
          (unsigned long long)over);
    check_books("slice full", room, over);
    CHECK_CU(mem_free(big));

    /* a second context on the same device, measured against the first;
     * a module loaded into it goes with it */
    CUcontext second;
    CHECK_CU(create(&second, 0, 0));
    CUmodule in_second;
    CHECK_CU(load(&in_second, "fakecuda-module globals=6291456"));
    check_books("second context", 0, over + CTX_MEM + 6 * M);
    CHECK_CU(destroy(second));
    CHECK_CU(set_ctx(primary));
    check_books("second context destroyed", 0, over);

    CHECK_CU(unload(mod));
    CHECK_CU(unload(mod2));
    CHECK_CU(lib_unload(libr));
    over -= 14 * M;
    check_books("modules unloaded", 0, over);
    CHECK_CU(set_limit(CU_LIMIT_STACK_SIZE, 1024));
    check_books("stack back to 1 KiB", 0, CTX_MEM + 8 * M);
    /* a raise past the limit is undone and refused, and so is a module */
    CHECK(set_limit(CU_LIMIT_MALLOC_HEAP_SIZE, LIMIT) == CUDA_ERROR_OUT_OF_MEMORY,
          "a heap as large as the limit was admitted");
    size_t heap;
    CHECK_CU(get_limit(&heap, CU_LIMIT_MALLOC_HEAP_SIZE));
    CHECK_EQ_U64(heap, 16 * M);
    CHECK(load(&mod, "fakecuda-module globals=268435456") == CUDA_ERROR_OUT_OF_MEMORY,
          "a module as large as the limit was admitted");
    check_books("refused", 0, CTX_MEM + 8 * M);
    check_source("refused", "free-memory");

    /* NVML, loaded and initialised by the program, becomes the source */
    CHECK(nvmlInit_v2() == 0, "nvmlInit_v2");
    CUcontext third;
    CHECK_CU(create(&third, 0, 0));
    check_source("a context with NVML", "nvml");
    check_books("a context with NVML", 0, 2 * CTX_MEM + 8 * M);
    CHECK_CU(destroy(third));
    CHECK_CU(set_ctx(primary));
    check_books("that context destroyed", 0, CTX_MEM + 8 * M);
    CHECK_CU(set_limit(CU_LIMIT_MALLOC_HEAP_SIZE, 24 * M));
    check_source("heap raised with NVML", "nvml");
    check_books("heap raised with NVML", 0, CTX_MEM + 16 * M);
    CHECK_CU(load(&mod, "fakecuda-module globals=4194304"));
    check_books("module with NVML", 0, CTX_MEM + 20 * M);
    CHECK_CU(unload(mod));
    check_books("module unloaded with NVML", 0, CTX_MEM + 16 * M);
    CHECK(nvmlShutdown() == 0, "nvmlShutdown");
    printf("prog_overhead: ok\n");
    return 0;
}
