/*
 * driver_check: a plain driver-API program for tests/gpu/run.sh. It uses
 * cuMemAlloc, cuMemAllocAsync and its own VMM mapping, runs a kernel over
 * each buffer (PTX on a GPU; a registered host function under the test
 * driver, so CI runs the same logic), and prints a checksum of every result.
 * Under vramshim it also checks that vramshim counts exactly the device
 * bytes the program holds. Output: "checksum <hex>" and, under vramshim,
 * "bytes program=<n> vramshim=<n>". Exit 1 on any mismatch.
 */
#define __CUDA_API_VERSION_INTERNAL 1
#include <cuda.h>
#include <dlfcn.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CHECK(call)                                                         \
    do {                                                                    \
        CUresult rc_ = (call);                                              \
        if (rc_ != CUDA_SUCCESS) {                                          \
            fprintf(stderr, "driver_check: %s failed: %d\n", #call, (int)rc_); \
            exit(1);                                                        \
        }                                                                   \
    } while (0)

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

typedef struct {
    unsigned x, y, z;
} dim3_t; /* the test driver's fakecuda_dim3 */

/* The same kernel as a host function, for the test driver. */
static void scale_host(void **params, dim3_t grid, dim3_t block)
{
    const uint32_t *x = (const uint32_t *)(uintptr_t)*(CUdeviceptr *)params[0];
    uint32_t *y = (uint32_t *)(uintptr_t)*(CUdeviceptr *)params[1];
    uint32_t n = *(uint32_t *)params[2];
    uint64_t threads = (uint64_t)grid.x * block.x;
    for (uint64_t i = 0; i < threads && i < n; i++)
        y[i] = x[i] * 2 + 1;
}

static void *lib;
static void *sym(const char *name)
{
    void *p = dlsym(lib, name);
    if (!p) {
        fprintf(stderr, "driver_check: no %s\n", name);
        exit(1);
    }
    return p;
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
    lib = dlopen("libcuda.so.1", RTLD_NOW);
    if (!lib) {
        fprintf(stderr, "driver_check: %s\n", dlerror());
        return 1;
    }
    CUresult (*init)(unsigned) = sym("cuInit");
    CUresult (*retain)(CUcontext *, CUdevice) = sym("cuDevicePrimaryCtxRetain");
    CUresult (*set)(CUcontext) = sym("cuCtxSetCurrent");
    CUresult (*alloc)(CUdeviceptr *, size_t) = sym("cuMemAlloc_v2");
    CUresult (*alloc_async)(CUdeviceptr *, size_t, CUstream) = sym("cuMemAllocAsync");
    CUresult (*free_async)(CUdeviceptr, CUstream) = sym("cuMemFreeAsync");
    CUresult (*release)(CUdeviceptr) = sym("cuMemFree_v2");
    CUresult (*htod)(CUdeviceptr, const void *, size_t) = sym("cuMemcpyHtoD_v2");
    CUresult (*dtoh)(void *, CUdeviceptr, size_t) = sym("cuMemcpyDtoH_v2");
    CUresult (*launch)(CUfunction, unsigned, unsigned, unsigned, unsigned, unsigned, unsigned,
                       unsigned, CUstream, void **, void **) = sym("cuLaunchKernel");
    CUresult (*sync)(void) = sym("cuCtxSynchronize");
    CUresult (*reserve)(CUdeviceptr *, size_t, size_t, CUdeviceptr, unsigned long long) =
        sym("cuMemAddressReserve");
    CUresult (*granularity)(size_t *, const CUmemAllocationProp *, CUmemAllocationGranularity_flags) =
        sym("cuMemGetAllocationGranularity");
    CUresult (*create)(CUmemGenericAllocationHandle *, size_t, const CUmemAllocationProp *,
                       unsigned long long) = sym("cuMemCreate");
    CUresult (*map)(CUdeviceptr, size_t, size_t, CUmemGenericAllocationHandle, unsigned long long) =
        sym("cuMemMap");
    CUresult (*access)(CUdeviceptr, size_t, const CUmemAccessDesc *, size_t) = sym("cuMemSetAccess");
    CUresult (*unmap)(CUdeviceptr, size_t) = sym("cuMemUnmap");
    CUresult (*mrelease)(CUmemGenericAllocationHandle) = sym("cuMemRelease");
    CUresult (*addr_free)(CUdeviceptr, size_t) = sym("cuMemAddressFree");

    CUcontext ctx;
    CHECK(init(0));
    CHECK(retain(&ctx, 0));
    CHECK(set(ctx));

    CUfunction f;
    CUfunction (*reg)(const char *, void *, int, const size_t *) =
        (CUfunction(*)(const char *, void *, int, const size_t *))dlsym(lib, "fakecuda_register_kernel");
    if (reg) {
        size_t sizes[3] = {8, 8, 4};
        f = reg("scale", (void *)scale_host, 3, sizes);
    } else {
        CUresult (*load)(CUmodule *, const void *) = sym("cuModuleLoadData");
        CUresult (*get)(CUfunction *, CUmodule, const char *) = sym("cuModuleGetFunction");
        CUmodule mod;
        CHECK(load(&mod, scale_ptx));
        CHECK(get(&f, mod, "scale"));
    }

    /* three kinds of device memory */
    const uint32_t n = 3 << 20;
    const size_t bytes = (size_t)n * 4;
    CUmemAllocationProp prop;
    memset(&prop, 0, sizeof prop);
    prop.type = CU_MEM_ALLOCATION_TYPE_PINNED;
    prop.location.type = CU_MEM_LOCATION_TYPE_DEVICE;
    prop.location.id = 0;
    size_t gran;
    CHECK(granularity(&gran, &prop, CU_MEM_ALLOC_GRANULARITY_MINIMUM));
    size_t vmm_bytes = (bytes + gran - 1) / gran * gran;
    CUdeviceptr x, y_plain, y_async, y_vmm;
    CUmemGenericAllocationHandle h;
    CHECK(alloc(&x, bytes));
    CHECK(alloc(&y_plain, bytes));
    CHECK(alloc_async(&y_async, bytes, NULL));
    CHECK(reserve(&y_vmm, vmm_bytes, 0, 0, 0));
    CHECK(create(&h, vmm_bytes, &prop, 0));
    CHECK(map(y_vmm, vmm_bytes, 0, h, 0));
    CUmemAccessDesc rw = {.location = prop.location, .flags = CU_MEM_ACCESS_FLAGS_PROT_READWRITE};
    CHECK(access(y_vmm, vmm_bytes, &rw, 1));
    uint64_t program_bytes = 3 * (uint64_t)bytes + vmm_bytes;

    uint32_t *host = malloc(bytes);
    for (uint32_t i = 0; i < n; i++)
        host[i] = i * 2654435761u;
    CHECK(htod(x, host, bytes));
    CUdeviceptr outs[3] = {y_plain, y_async, y_vmm};
    unsigned nn = n;
    for (int k = 0; k < 3; k++) {
        void *params[3] = {&x, &outs[k], &nn};
        CHECK(launch(f, (n + 255) / 256, 1, 1, 256, 1, 1, 0, NULL, params, NULL));
    }
    CHECK(sync());
    uint64_t h64 = 1469598103934665603ULL;
    int ok = 1;
    for (int k = 0; k < 3; k++) {
        memset(host, 0, bytes);
        CHECK(dtoh(host, outs[k], bytes));
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
    CHECK(release(x));
    CHECK(release(y_plain));
    CHECK(free_async(y_async, NULL));
    CHECK(unmap(y_vmm, vmm_bytes));
    CHECK(mrelease(h));
    CHECK(addr_free(y_vmm, vmm_bytes));
    CHECK(sync());
    free(host);
    if (!ok)
        fprintf(stderr, "driver_check: MISMATCH\n");
    return ok ? 0 : 1;
}
