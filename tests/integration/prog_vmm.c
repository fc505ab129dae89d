/*
 * prog_vmm: the program's own virtual memory management, as PyTorch's
 * expandable segments use it. Each mapping counts while mapped, device
 * handles on the device, host handles as pinned memory; an unmapped address
 * faults in the test driver as on a GPU.
 *
 * Then a handle's bytes as the driver keeps them (the test driver moves a
 * handle's pages to its one mapping and turns them into a shared file when
 * a second mapping, a partial one or an export needs them, fake_phys.c):
 * they survive unmapping and mapping elsewhere, the old address faults
 * while the handle lives, two mappings at once show the same bytes both
 * ways, a mapping of part of it shows that part, an export shows them.
 */
#include "check.h"

#include <signal.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#define G (2ULL << 20)

/* Does reading addr kill the process with SIGSEGV (tried in a child)? */
static bool faults(uint64_t addr)
{
    pid_t pid = fork();
    CHECK(pid >= 0, "fork");
    if (pid == 0) {
        (void)*(volatile char *)(uintptr_t)addr;
        _exit(0);
    }
    int status;
    CHECK(waitpid(pid, &status, 0) == pid, "waitpid");
    return WIFSIGNALED(status) && WTERMSIG(status) == SIGSEGV;
}

/* The driver's VMM calls, looked up once. */
static struct {
    CUresult (*reserve)(CUdeviceptr *, size_t, size_t, CUdeviceptr, unsigned long long);
    CUresult (*create)(CUmemGenericAllocationHandle *, size_t, const CUmemAllocationProp *,
                       unsigned long long);
    CUresult (*map)(CUdeviceptr, size_t, size_t, CUmemGenericAllocationHandle, unsigned long long);
    CUresult (*unmap)(CUdeviceptr, size_t);
    CUresult (*release)(CUmemGenericAllocationHandle);
    CUresult (*access)(CUdeviceptr, size_t, const CUmemAccessDesc *, size_t);
    CUresult (*export_fd)(void *, CUmemGenericAllocationHandle, CUmemAllocationHandleType,
                          unsigned long long);
    CUresult (*addr_free)(CUdeviceptr, size_t);
} vmm;

static void load_vmm(void *lib)
{
    vmm.reserve = check_sym(lib, "cuMemAddressReserve");
    vmm.create = check_sym(lib, "cuMemCreate");
    vmm.map = check_sym(lib, "cuMemMap");
    vmm.unmap = check_sym(lib, "cuMemUnmap");
    vmm.release = check_sym(lib, "cuMemRelease");
    vmm.access = check_sym(lib, "cuMemSetAccess");
    vmm.export_fd = check_sym(lib, "cuMemExportToShareableHandle");
    vmm.addr_free = check_sym(lib, "cuMemAddressFree");
}

static void pages(void)
{
    const size_t n = 2 * G;
    CUdeviceptr va;
    CHECK_CU(vmm.reserve(&va, 4 * n, 0, 0, 0));
    CUmemAllocationProp prop;
    memset(&prop, 0, sizeof prop);
    prop.type = CU_MEM_ALLOCATION_TYPE_PINNED;
    prop.location.type = CU_MEM_LOCATION_TYPE_DEVICE;
    prop.requestedHandleTypes = CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR;
    CUmemAccessDesc rw = {.location = {CU_MEM_LOCATION_TYPE_DEVICE, 0},
                          .flags = CU_MEM_ACCESS_FLAGS_PROT_READWRITE};
    unsigned char *want = malloc(n);
    check_fill(want, n, 7);
    CUmemGenericAllocationHandle h;
    CHECK_CU(vmm.create(&h, n, &prop, 0));

    /* mapped, written, unmapped: the old address faults, the bytes wait */
    CHECK_CU(vmm.map(va, n, 0, h, 0));
    CHECK_CU(vmm.access(va, n, &rw, 1));
    memcpy((void *)(uintptr_t)va, want, n);
    CHECK_CU(vmm.unmap(va, n));
    CHECK(faults(va) && faults(va + n - 1), "an unmapped address of a live handle reads");
    /* twice over, at other addresses */
    for (int round = 1; round <= 2; round++) {
        CUdeviceptr at = va + (uint64_t)round * n;
        CHECK_CU(vmm.map(at, n, 0, h, 0));
        CHECK_CU(vmm.access(at, n, &rw, 1));
        CHECK(memcmp((void *)(uintptr_t)at, want, n) == 0, "bytes lost mapping it again");
        if (round == 1)
            CHECK_CU(vmm.unmap(at, n));
    }
    /* a second mapping at once, and a mapping of its second half */
    CUdeviceptr one = va + 2 * n, two = va, half = va + n;
    CHECK_CU(vmm.map(two, n, 0, h, 0));
    CHECK_CU(vmm.access(two, n, &rw, 1));
    CHECK(memcmp((void *)(uintptr_t)two, want, n) == 0, "a second mapping differs");
    memset((char *)(uintptr_t)two + 5, 0xa5, 100);
    memset(want + 5, 0xa5, 100);
    ((unsigned char *)(uintptr_t)one)[n - 1] ^= 0xff;
    want[n - 1] ^= 0xff;
    CHECK(memcmp((void *)(uintptr_t)one, want, n) == 0, "a write through the second mapping "
          "is not seen through the first");
    CHECK(memcmp((void *)(uintptr_t)two, want, n) == 0, "a write through the first mapping "
          "is not seen through the second");
    CHECK_CU(vmm.map(half, G, G, h, 0));
    CHECK_CU(vmm.access(half, G, &rw, 1));
    CHECK(memcmp((void *)(uintptr_t)half, want + G, G) == 0, "a partial mapping differs");
    /* an export reaches the same pages */
    int fd = -1;
    CHECK_CU(vmm.export_fd(&fd, h, CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR, 0));
    void *seen = mmap(NULL, n, PROT_READ, MAP_SHARED, fd, 0);
    CHECK(seen != MAP_FAILED, "mmap of the exported handle");
    CHECK(memcmp(seen, want, n) == 0, "the exported handle differs");
    munmap(seen, n);
    close(fd);
    CHECK_CU(vmm.release(h));
    CHECK_CU(vmm.unmap(two, n));
    CHECK_CU(vmm.unmap(half, G));
    CHECK_CU(vmm.unmap(one, n));
    CHECK(faults(one) && faults(two) && faults(half), "an unmapped address reads");

    /* a handle that was never mapped and one unmapped untouched keep zeros
     * or what was written, whichever way they are then mapped */
    CUmemGenericAllocationHandle fresh;
    CHECK_CU(vmm.create(&fresh, n, &prop, 0));
    CHECK_CU(vmm.map(va, n, 0, fresh, 0));
    CHECK_CU(vmm.unmap(va, n));
    CHECK_CU(vmm.map(va + n, G, G, fresh, 0));
    CHECK_CU(vmm.access(va + n, G, &rw, 1));
    memset((void *)(uintptr_t)(va + n), 0x3c, G);
    CHECK_CU(vmm.map(va + 2 * n, n, 0, fresh, 0));
    CHECK_CU(vmm.access(va + 2 * n, n, &rw, 1));
    const unsigned char *f = (const unsigned char *)(uintptr_t)(va + 2 * n);
    CHECK(f[0] == 0 && f[G - 1] == 0 && f[G] == 0x3c && f[n - 1] == 0x3c,
          "a handle mapped in parts shows %u %u %u %u", f[0], f[G - 1], f[G], f[n - 1]);
    CHECK_CU(vmm.release(fresh));
    CHECK_CU(vmm.unmap(va + n, G));
    CHECK_CU(vmm.unmap(va + 2 * n, n));
    CHECK_CU(vmm.addr_free(va, 4 * n));
    free(want);
}

int main(void)
{
    void *lib = check_libcuda();
    check_context(lib, 0);
    load_vmm(lib);
    CUdeviceptr va;
    CHECK_CU(vmm.reserve(&va, 16 * G, 0, 0, 0));
    CUmemAllocationProp prop;
    memset(&prop, 0, sizeof prop);
    prop.type = CU_MEM_ALLOCATION_TYPE_PINNED;
    prop.location.type = CU_MEM_LOCATION_TYPE_DEVICE;
    prop.location.id = 0;
    CUmemGenericAllocationHandle h1, h2, hh;
    CHECK_CU(vmm.create(&h1, G, &prop, 0));
    CHECK_CU(vmm.create(&h2, 2 * G, &prop, 0));
    CUmemAllocationProp host_prop = prop;
    host_prop.location.type = CU_MEM_LOCATION_TYPE_HOST_NUMA;
    host_prop.location.id = 0;
    CHECK_CU(vmm.create(&hh, G, &host_prop, 0));

    json_t *st = stats_get();
    /* physical memory is held from cuMemCreate, mapped or not */
    CHECK_EQ_U64(stats_u64(st, "devices.0.allocated"), 3 * G);
    CHECK_EQ_U64(stats_u64(st, "pinned.app"), G);
    json_decref(st);

    CUmemAccessDesc rw = {.location = {CU_MEM_LOCATION_TYPE_DEVICE, 0},
                          .flags = CU_MEM_ACCESS_FLAGS_PROT_READWRITE};
    CHECK_CU(vmm.map(va, G, 0, h1, 0));
    CHECK_CU(vmm.map(va + G, 2 * G, 0, h2, 0));
    CHECK_CU(vmm.map(va + 3 * G, G, 0, hh, 0));
    CHECK_CU(vmm.access(va, 4 * G, &rw, 1));
    memset((void *)(uintptr_t)va, 0x5a, 4 * G);
    /* released handles live on while mapped, as in PyTorch */
    CHECK_CU(vmm.release(h1));
    CHECK_CU(vmm.release(h2));
    CHECK_CU(vmm.release(hh));

    st = stats_get();
    check_owner(st, "prog_vmm", 0, 3 * G, 2);
    CHECK_EQ_U64(stats_u64(st, "pinned.app"), G);
    json_decref(st);

    /* one unmap over two mappings */
    CHECK_CU(vmm.unmap(va, 3 * G));
    CHECK(vmm.unmap(va + 3 * G, G / 2) != CUDA_SUCCESS, "a partial unmap is refused");
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

    CHECK_CU(vmm.unmap(va + 3 * G, G));
    CHECK_CU(vmm.addr_free(va, 16 * G));
    st = stats_get();
    CHECK_EQ_U64(stats_u64(st, "pinned.app"), 0);
    CHECK_EQ_U64(stats_u64(st, "counters.allocs"), 2);
    CHECK_EQ_U64(stats_u64(st, "counters.frees"), 2);
    json_decref(st);
    pages();
    printf("prog_vmm: ok\n");
    return 0;
}
