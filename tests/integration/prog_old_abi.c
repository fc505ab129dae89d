/*
 * prog_old_abi: the driver's old-ABI exports (32-bit device pointers and
 * sizes: cuMemAlloc, cuMemGetInfo, cuMemAllocHost, cuMemHostRegister,
 * cuIpcOpenMemHandle...), reached as ctypes reaches them, by plain-name
 * dlsym, and through cuGetProcAddress with a version before CUDA 3.2
 * (issue 12, hole 6). Under a 64 MiB VRAM limit and a 16 MiB pin limit
 * they must be refused past the limits, report the slice in 32-bit
 * figures, and come from vramshim.
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

int main(int argc, char **argv)
{
    (void)argc;
    const char *env[] = {"VRAMSHIM_VRAM_LIMIT=64M", "VRAMSHIM_PIN_LIMIT=16M",
                         "VRAMSHIM_OFFLOAD=off", "FAKECUDA_MEM=1G", NULL};
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
    CHECK_EQ_U64(t, 64 * M);
    CHECK_CU(total1(&t, 0));
    CHECK_EQ_U64(t, 64 * M);
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
    /* every old-ABI name vramshim must answer for */
    static const char *const names[] = {"cuMemAlloc", "cuMemAllocPitch", "cuMemFree",
                                        "cuMemGetInfo", "cuDeviceTotalMem", "cuMemAllocHost",
                                        "cuMemHostRegister", "cuIpcOpenMemHandle"};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        CHECK(in_vramshim(check_sym(lib, names[i])), "dlsym(%s) must give vramshim's hook",
              names[i]);
    check_invariants("at the end");
    printf("prog_old_abi: ok\n");
    return 0;
}
