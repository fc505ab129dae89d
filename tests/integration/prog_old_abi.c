/*
 * prog_old_abi: the driver's old-ABI exports (32-bit device pointers and
 * sizes: cuMemAlloc, cuMemGetInfo, cuMemAllocHost, cuMemHostRegister,
 * cuIpcOpenMemHandle...), reached as ctypes reaches them, by plain-name
 * dlsym, and through cuGetProcAddress with a version before CUDA 3.2
 * (issue 12, hole 6). Under a 64 MiB VRAM limit and a 16 MiB pin limit
 * they must be refused past the limits, report the slice in 32-bit
 * figures, and come from vramshim. Arrays made through the old names
 * (cuArrayCreate, cuArray3DCreate: 32-bit descriptors) are charged as
 * their _v2 twins, and a context made through cuCtxCreate holds overhead
 * (the test driver reserves 8 MiB for each context, FAKECUDA_CTX_MEM) until
 * cuCtxDestroy. The limit is 72 MiB: the primary context's 8 MiB leave a
 * 64 MiB slice.
 */
#define _GNU_SOURCE 1
#include "check.h"

#include <dlfcn.h>
#include <string.h>

#define M (1ULL << 20)

static bool in_vramshim(void *p)
{
    Dl_info info;
    return p && dladdr(p, &info) && strstr(info.dli_fname, "libvramshim");
}

/* Arrays through the old names fill the 64 MiB slice exactly, as the
 * driver holds them, and one past it is refused. */
static void old_arrays(void *lib, unsigned long long used0)
{
    CUresult (*create1)(CUarray *, const CUDA_ARRAY_DESCRIPTOR_v1 *) =
        check_sym(lib, "cuArrayCreate");
    CUresult (*create3d1)(CUarray *, const CUDA_ARRAY3D_DESCRIPTOR_v1 *) =
        check_sym(lib, "cuArray3DCreate");
    CUresult (*destroy)(CUarray) = check_sym(lib, "cuArrayDestroy");
    CUresult (*info1)(unsigned int *, unsigned int *) = check_sym(lib, "cuMemGetInfo");
    unsigned long long (*fk_used)(int) = check_sym(lib, "fakecuda_used");
    /* 4096 texels of 4 bytes a row: 16 KiB rows, 32 MiB and 48 MiB */
    CUDA_ARRAY_DESCRIPTOR_v1 d2 = {.Width = 4096, .Height = 2048,
                                   .Format = CU_AD_FORMAT_UNSIGNED_INT8, .NumChannels = 4};
    CUDA_ARRAY3D_DESCRIPTOR_v1 big = {.Width = 4096, .Height = 3072,
                                      .Format = CU_AD_FORMAT_UNSIGNED_INT8, .NumChannels = 4};
    CUDA_ARRAY3D_DESCRIPTOR_v1 rest = {.Width = 4096, .Height = 2048,
                                       .Format = CU_AD_FORMAT_UNSIGNED_INT8, .NumChannels = 4};
    CUarray a, b, c;
    CHECK_CU(create1(&a, &d2));
    json_t *st = stats_get();
    CHECK_EQ_U64(stats_u64(st, "devices.0.arrays"), 32 * M);
    CHECK_EQ_U64(stats_u64(st, "devices.0.allocated"), 32 * M);
    json_decref(st);
    CUresult rc = create3d1(&b, &big);
    CHECK(rc == CUDA_ERROR_OUT_OF_MEMORY, "a 48 MiB array by cuArray3DCreate (v1) past the "
          "limit: %d", (int)rc);
    CHECK_CU(create3d1(&c, &rest));
    unsigned int f, t;
    CHECK_CU(info1(&f, &t));
    CHECK_EQ_U64(f, 0);
    st = stats_get();
    CHECK_EQ_U64(stats_u64(st, "devices.0.arrays"), 64 * M);
    CHECK_EQ_U64(stats_u64(st, "devices.0.allocated"), fk_used(0) - used0);
    json_decref(st);
    CHECK_CU(destroy(a));
    CHECK_CU(destroy(c));
    st = stats_get();
    CHECK_EQ_U64(stats_u64(st, "devices.0.arrays"), 0);
    json_decref(st);
    CHECK_EQ_U64(fk_used(0), used0);
}

/* A context through the old cuCtxCreate holds its 8 MiB as overhead until
 * the old cuCtxDestroy. */
static void old_contexts(void *lib, unsigned long long used0)
{
    CUresult (*create1)(CUcontext *, unsigned int, CUdevice) = check_sym(lib, "cuCtxCreate");
    CUresult (*destroy1)(CUcontext) = check_sym(lib, "cuCtxDestroy");
    CUresult (*info1)(unsigned int *, unsigned int *) = check_sym(lib, "cuMemGetInfo");
    unsigned long long (*fk_used)(int) = check_sym(lib, "fakecuda_used");
    json_t *st = stats_get();
    uint64_t over0 = stats_u64(st, "devices.0.overhead");
    json_decref(st);
    CHECK_EQ_U64(over0, 8 * M);
    CUcontext ctx;
    CHECK_CU(create1(&ctx, 0, 0));
    CHECK_EQ_U64(fk_used(0), used0 + 8 * M);
    st = stats_get();
    CHECK_EQ_U64(stats_u64(st, "devices.0.overhead"), 16 * M);
    json_decref(st);
    unsigned int f, t;
    CHECK_CU(info1(&f, &t));
    CHECK_EQ_U64(f, 56 * M);
    CHECK_CU(destroy1(ctx));
    st = stats_get();
    CHECK_EQ_U64(stats_u64(st, "devices.0.overhead"), 8 * M);
    json_decref(st);
    CHECK_EQ_U64(fk_used(0), used0);
}

int main(int argc, char **argv)
{
    (void)argc;
    const char *env[] = {"VRAMSHIM_VRAM_LIMIT=72M", "VRAMSHIM_PIN_LIMIT=16M",
                         "VRAMSHIM_OFFLOAD=off", "FAKECUDA_MEM=1G", "FAKECUDA_CTX_MEM=8M",
                         NULL};
    check_reexec_env(argv, env);
    void *lib = check_libcuda();
    check_context(lib, 0);

    CUresult (*alloc1)(CUdeviceptr_v1 *, unsigned int) = check_sym(lib, "cuMemAlloc");
    CUresult (*free1)(CUdeviceptr_v1) = check_sym(lib, "cuMemFree");
    CUresult (*info1)(unsigned int *, unsigned int *) = check_sym(lib, "cuMemGetInfo");
    CUresult (*total1)(unsigned int *, CUdevice) = check_sym(lib, "cuDeviceTotalMem");
    CUresult (*host1)(void **, unsigned int) = check_sym(lib, "cuMemAllocHost");
    CUresult (*free_host)(void *) = check_sym(lib, "cuMemFreeHost");
    CUresult (*reg)(void *, size_t, unsigned int) = check_sym(lib, "cuMemHostRegister");
    unsigned long long (*fk_used)(int) = check_sym(lib, "fakecuda_used");
    CUresult (*gpa)(const char *, void **, int, cuuint64_t, CUdriverProcAddressQueryResult *) =
        check_sym(lib, "cuGetProcAddress_v2");
    unsigned long long used0 = fk_used(0);

    CUdeviceptr_v1 a, b, c;
    CHECK_CU(alloc1(&a, 32 * M));
    CHECK_CU(alloc1(&b, 32 * M));
    CUresult rc = alloc1(&c, 32 * M);
    CHECK(rc == CUDA_ERROR_OUT_OF_MEMORY, "a third 32 MiB by cuMemAlloc (v1): %d", (int)rc);
    /* the look-up of an old version hands out the same hook */
    void *p = NULL;
    CHECK_CU(gpa("cuMemAlloc", &p, 3000, 0, NULL));
    CHECK(p == (void *)alloc1, "cuGetProcAddress(cuMemAlloc, 3000) gave %p, not the hook", p);
    unsigned int f, t;
    CHECK_CU(info1(&f, &t));
    CHECK_EQ_U64(f, 0);
    CHECK_EQ_U64(t, 72 * M);
    CHECK_CU(total1(&t, 0));
    CHECK_EQ_U64(t, 72 * M);
    json_t *st = stats_get();
    CHECK_EQ_U64(stats_u64(st, "devices.0.allocated"), 64 * M);
    CHECK_EQ_U64(stats_u64(st, "devices.0.allocated"), fk_used(0) - used0);
    json_decref(st);
    CHECK_CU(free1(b));
    CHECK_CU(info1(&f, &t));
    CHECK_EQ_U64(f, 32 * M);
    CHECK_CU(free1(a));
    CHECK_EQ_U64(fk_used(0), used0);

    void *h1, *h2, *h3;
    CHECK_CU(host1(&h1, 8 * M));
    CHECK_CU(host1(&h2, 8 * M));
    rc = host1(&h3, 8 * M);
    CHECK(rc == CUDA_ERROR_OUT_OF_MEMORY, "a third 8 MiB by cuMemAllocHost (v1): %d", (int)rc);
    CHECK_CU(free_host(h2));
    static char buf[16 << 20] __attribute__((aligned(4096)));
    rc = reg(buf, sizeof buf, 0);
    CHECK(rc == CUDA_ERROR_OUT_OF_MEMORY, "16 MiB by cuMemHostRegister past the pin limit: %d",
          (int)rc);
    st = stats_get();
    CHECK_EQ_U64(stats_u64(st, "pinned.app"), 8 * M);
    json_decref(st);
    CHECK_CU(free_host(h1));
    old_arrays(lib, used0);
    old_contexts(lib, used0);
    /* every old-ABI name vramshim must answer for */
    static const char *const names[] = {"cuMemAlloc", "cuMemAllocPitch", "cuMemFree",
                                        "cuMemGetInfo", "cuDeviceTotalMem", "cuMemAllocHost",
                                        "cuMemHostRegister", "cuIpcOpenMemHandle",
                                        "cuArrayCreate", "cuArray3DCreate", "cuCtxCreate",
                                        "cuCtxDestroy"};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        CHECK(in_vramshim(check_sym(lib, names[i])), "dlsym(%s) must give vramshim's hook",
              names[i]);
    check_invariants("at the end");
    printf("prog_old_abi: ok\n");
    return 0;
}
