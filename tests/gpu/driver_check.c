/*
 * driver_check: a plain driver-API program for tests/gpu/run.sh. It uses
 * cuMemAlloc, cuMemAllocAsync and its own VMM mapping, runs a kernel over
 * each buffer (PTX on a GPU; a registered host function under the test
 * driver, so CI runs the same logic), and prints a checksum of every result.
 * Under vramshim it also checks that vramshim counts exactly the device
 * bytes the program holds. Output: "checksum <hex>" and, under vramshim,
 * "bytes program=<n> vramshim=<n>". Exit 1 on any mismatch.
 */
#include "bench_common.h"

#include <stdint.h>
#include <string.h>

static const char scale_ptx[] =
    ".version 7.0\n.target sm_50\n.address_size 64\n"
    ".visible .entry scale(.param .u64 x, .param .u64 y, .param .u32 n)\n{\n"
    "  .reg .pred %p;\n  .reg .b32 %r<8>;\n  .reg .b64 %rd<8>;\n"
    "  ld.param.u64 %rd1, [x];\n  ld.param.u64 %rd2, [y];\n  ld.param.u32 %r1, [n];\n"
    "  mov.u32 %r2, %ctaid.x;\n  mov.u32 %r3, %ntid.x;\n  mov.u32 %r4, %tid.x;\n"
    "  mad.lo.s32 %r5, %r2, %r3, %r4;\n  setp.ge.u32 %p, %r5, %r1;\n  @%p bra DONE;\n"
    "  cvta.to.global.u64 %rd3, %rd1;\n  cvta.to.global.u64 %rd4, %rd2;\n"
    "  mul.wide.u32 %rd5, %r5, 4;\n  add.s64 %rd6, %rd3, %rd5;\n  add.s64 %rd7, %rd4, %rd5;\n"
    "  ld.global.u32 %r6, [%rd6];\n  mad.lo.s32 %r7, %r6, 2, 1;\n  st.global.u32 [%rd7], %r7;\n"
    "DONE:\n  ret;\n}\n";

/* The same kernel as a host function, for the test driver. */
static void scale_host(void **params, fakecuda_dim3 grid, fakecuda_dim3 block)
{
    const uint32_t *x = (const uint32_t *)(uintptr_t)*(CUdeviceptr *)params[0];
    uint32_t *y = (uint32_t *)(uintptr_t)*(CUdeviceptr *)params[1];
    uint32_t n = *(uint32_t *)params[2];
    uint64_t threads = (uint64_t)grid.x * block.x;
    for (uint64_t i = 0; i < threads && i < n; i++)
        y[i] = x[i] * 2 + 1;
}

static uint64_t fnv(uint64_t h, const void *data, size_t n)
{
    const unsigned char *p = data;
    for (size_t i = 0; i < n; i++)
        h = (h ^ p[i]) * 1099511628211ULL;
    return h;
}

int main(void)
{
    void *lib = bench_open();
    CUresult (*alloc)(CUdeviceptr *, size_t) = bench_sym(lib, "cuMemAlloc_v2");
    CUresult (*alloc_async)(CUdeviceptr *, size_t, CUstream) = bench_sym(lib, "cuMemAllocAsync");
    CUresult (*free_async)(CUdeviceptr, CUstream) = bench_sym(lib, "cuMemFreeAsync");
    CUresult (*release)(CUdeviceptr) = bench_sym(lib, "cuMemFree_v2");
    CUresult (*htod)(CUdeviceptr, const void *, size_t) = bench_sym(lib, "cuMemcpyHtoD_v2");
    CUresult (*dtoh)(void *, CUdeviceptr, size_t) = bench_sym(lib, "cuMemcpyDtoH_v2");
    CUresult (*launch)(CUfunction, unsigned, unsigned, unsigned, unsigned, unsigned, unsigned,
                       unsigned, CUstream, void **, void **) = bench_sym(lib, "cuLaunchKernel");
    CUresult (*sync)(void) = bench_sym(lib, "cuCtxSynchronize");
    CUresult (*reserve)(CUdeviceptr *, size_t, size_t, CUdeviceptr, unsigned long long) =
        bench_sym(lib, "cuMemAddressReserve");
    CUresult (*granularity)(size_t *, const CUmemAllocationProp *, CUmemAllocationGranularity_flags) =
        bench_sym(lib, "cuMemGetAllocationGranularity");
    CUresult (*create)(CUmemGenericAllocationHandle *, size_t, const CUmemAllocationProp *,
                       unsigned long long) = bench_sym(lib, "cuMemCreate");
    CUresult (*map)(CUdeviceptr, size_t, size_t, CUmemGenericAllocationHandle, unsigned long long) =
        bench_sym(lib, "cuMemMap");
    CUresult (*access)(CUdeviceptr, size_t, const CUmemAccessDesc *, size_t) = bench_sym(lib, "cuMemSetAccess");
    CUresult (*unmap)(CUdeviceptr, size_t) = bench_sym(lib, "cuMemUnmap");
    CUresult (*mrelease)(CUmemGenericAllocationHandle) = bench_sym(lib, "cuMemRelease");
    CUresult (*addr_free)(CUdeviceptr, size_t) = bench_sym(lib, "cuMemAddressFree");

    const size_t param_sizes[3] = {8, 8, 4};
    CUfunction f = bench_kernel(lib, "scale", scale_ptx, scale_host, 3, param_sizes);

    /* three kinds of device memory */
    const uint32_t n = 3 << 20;
    const size_t bytes = (size_t)n * 4;
    CUmemAllocationProp prop;
    memset(&prop, 0, sizeof prop);
    prop.type = CU_MEM_ALLOCATION_TYPE_PINNED;
    prop.location.type = CU_MEM_LOCATION_TYPE_DEVICE;
    prop.location.id = 0;
    size_t gran;
    BENCH_CHECK(granularity(&gran, &prop, CU_MEM_ALLOC_GRANULARITY_MINIMUM));
    size_t vmm_bytes = (bytes + gran - 1) / gran * gran;
    CUdeviceptr x, y_plain, y_async, y_vmm;
    CUmemGenericAllocationHandle h;
    BENCH_CHECK(alloc(&x, bytes));
    BENCH_CHECK(alloc(&y_plain, bytes));
    BENCH_CHECK(alloc_async(&y_async, bytes, NULL));
    BENCH_CHECK(reserve(&y_vmm, vmm_bytes, 0, 0, 0));
    BENCH_CHECK(create(&h, vmm_bytes, &prop, 0));
    BENCH_CHECK(map(y_vmm, vmm_bytes, 0, h, 0));
    CUmemAccessDesc rw = {.location = prop.location, .flags = CU_MEM_ACCESS_FLAGS_PROT_READWRITE};
    BENCH_CHECK(access(y_vmm, vmm_bytes, &rw, 1));
    uint64_t program_bytes = 3 * (uint64_t)bytes + vmm_bytes;

    uint32_t *host = malloc(bytes);
    for (uint32_t i = 0; i < n; i++)
        host[i] = i * 2654435761u;
    BENCH_CHECK(htod(x, host, bytes));
    CUdeviceptr outs[3] = {y_plain, y_async, y_vmm};
    unsigned nn = n;
    for (int k = 0; k < 3; k++) {
        void *params[3] = {&x, &outs[k], &nn};
        BENCH_CHECK(launch(f, (n + 255) / 256, 1, 1, 256, 1, 1, 0, NULL, params, NULL));
    }
    BENCH_CHECK(sync());
    uint64_t h64 = 1469598103934665603ULL;
    int ok = 1;
    for (int k = 0; k < 3; k++) {
        memset(host, 0, bytes);
        BENCH_CHECK(dtoh(host, outs[k], bytes));
        for (uint32_t i = 0; i < n; i++)
            ok &= host[i] == (i * 2654435761u) * 2 + 1;
        h64 = fnv(h64, host, bytes);
    }
    printf("checksum %016llx\n", (unsigned long long)h64);

    int (*stats)(char *, size_t) = (int (*)(char *, size_t))dlsym(RTLD_DEFAULT, "vramshim_stats_json");
    if (stats) {
        static char buf[1 << 16];
        stats(buf, sizeof buf);
        const char *p = strstr(buf, "\"allocated\":");
        unsigned long long counted = p ? strtoull(p + 12, NULL, 10) : 0;
        printf("bytes program=%llu vramshim=%llu\n", (unsigned long long)program_bytes, counted);
        ok &= counted == program_bytes;
    }
    BENCH_CHECK(release(x));
    BENCH_CHECK(release(y_plain));
    BENCH_CHECK(free_async(y_async, NULL));
    BENCH_CHECK(unmap(y_vmm, vmm_bytes));
    BENCH_CHECK(mrelease(h));
    BENCH_CHECK(addr_free(y_vmm, vmm_bytes));
    BENCH_CHECK(sync());
    free(host);
    if (!ok)
        fprintf(stderr, "driver_check: MISMATCH\n");
    return ok ? 0 : 1;
}
