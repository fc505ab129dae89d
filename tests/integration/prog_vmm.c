/*
 * prog_vmm: the program's own virtual memory management, as PyTorch's
 * expandable segments use it. Each mapping counts while mapped, device
 * handles on the device, host handles as pinned memory; an unmapped address
 * faults in the test driver as on a GPU.
 */
#include "check.h"

#include <signal.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#define G (2ULL << 20)

int main(void)
{
    void *lib = check_libcuda();
    check_context(lib, 0);
    CUresult (*reserve)(CUdeviceptr *, size_t, size_t, CUdeviceptr, unsigned long long) =
        check_sym(lib, "cuMemAddressReserve");
    CUresult (*create)(CUmemGenericAllocationHandle *, size_t, const CUmemAllocationProp *,
                       unsigned long long) = check_sym(lib, "cuMemCreate");
    CUresult (*map)(CUdeviceptr, size_t, size_t, CUmemGenericAllocationHandle,
                    unsigned long long) = check_sym(lib, "cuMemMap");
    CUresult (*unmap)(CUdeviceptr, size_t) = check_sym(lib, "cuMemUnmap");
    CUresult (*release)(CUmemGenericAllocationHandle) = check_sym(lib, "cuMemRelease");
    CUresult (*access)(CUdeviceptr, size_t, const CUmemAccessDesc *, size_t) =
        check_sym(lib, "cuMemSetAccess");
    CUresult (*addr_free)(CUdeviceptr, size_t) = check_sym(lib, "cuMemAddressFree");

    CUdeviceptr va;
    CHECK_CU(reserve(&va, 16 * G, 0, 0, 0));
    CUmemAllocationProp prop;
    memset(&prop, 0, sizeof prop);
    prop.type = CU_MEM_ALLOCATION_TYPE_PINNED;
    prop.location.type = CU_MEM_LOCATION_TYPE_DEVICE;
    prop.location.id = 0;
    CUmemGenericAllocationHandle h1, h2, hh;
    CHECK_CU(create(&h1, G, &prop, 0));
    CHECK_CU(create(&h2, 2 * G, &prop, 0));
    CUmemAllocationProp host_prop = prop;
    host_prop.location.type = CU_MEM_LOCATION_TYPE_HOST_NUMA;
    host_prop.location.id = 0;
    CHECK_CU(create(&hh, G, &host_prop, 0));

    json_t *st = stats_get();
    /* physical memory is held from cuMemCreate, mapped or not */
    CHECK_EQ_U64(stats_u64(st, "devices.0.allocated"), 3 * G);
    CHECK_EQ_U64(stats_u64(st, "pinned.app"), G);
    json_decref(st);

    CUmemAccessDesc rw = {.location = {CU_MEM_LOCATION_TYPE_DEVICE, 0},
                          .flags = CU_MEM_ACCESS_FLAGS_PROT_READWRITE};
    CHECK_CU(map(va, G, 0, h1, 0));
    CHECK_CU(map(va + G, 2 * G, 0, h2, 0));
    CHECK_CU(map(va + 3 * G, G, 0, hh, 0));
    CHECK_CU(access(va, 4 * G, &rw, 1));
    memset((void *)(uintptr_t)va, 0x5a, 4 * G);
    /* released handles live on while mapped, as in PyTorch */
    CHECK_CU(release(h1));
    CHECK_CU(release(h2));
    CHECK_CU(release(hh));

    st = stats_get();
    check_owner(st, "prog_vmm", 0, 3 * G, 2);
    CHECK_EQ_U64(stats_u64(st, "pinned.app"), G);
    json_decref(st);

    /* one unmap over two mappings */
    CHECK_CU(unmap(va, 3 * G));
    CHECK(unmap(va + 3 * G, G / 2) != CUDA_SUCCESS, "a partial unmap is refused");
    st = stats_get();
    check_owner(st, "prog_vmm", 0, 0, 0);
    CHECK_EQ_U64(stats_u64(st, "pinned.app"), G);
    json_decref(st);

    pid_t pid = fork();
    if (pid == 0) {
        volatile char *p = (volatile char *)(uintptr_t)va;
        (void)p[0]; /* unmapped: must fault */
        _exit(0);
    }
    int status;
    waitpid(pid, &status, 0);
    CHECK(WIFSIGNALED(status) && WTERMSIG(status) == SIGSEGV,
          "touching an unmapped address must fault (status %d)", status);

    CHECK_CU(unmap(va + 3 * G, G));
    CHECK_CU(addr_free(va, 16 * G));
    st = stats_get();
    CHECK_EQ_U64(stats_u64(st, "pinned.app"), 0);
    CHECK_EQ_U64(stats_u64(st, "counters.allocs"), 2);
    CHECK_EQ_U64(stats_u64(st, "counters.frees"), 2);
    json_decref(st);
    printf("prog_vmm: ok\n");
    return 0;
}
