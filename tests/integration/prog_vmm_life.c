/*
 * prog_vmm_life: a VMM handle's charge follows its physical memory, which
 * the driver frees only once the handle is released and its last mapping
 * is gone (issue 12, hole 1). Under a 64 MiB VRAM limit and a 16 MiB pin
 * limit the program uses NCCL's idiom (create, map, release at once) until
 * it is refused, and checks what it got against the limit, cuMemGetInfo
 * and the test driver's own count of the device memory it holds. Then:
 * a handle mapped twice counts once; an imported handle and a multicast
 * object are shown apart (devices[].imported) and charged to nobody.
 */
#include "check.h"

#include <dlfcn.h>
#include <string.h>
#include <unistd.h>

#define M (1ULL << 20)

static CUresult (*reserve)(CUdeviceptr *, size_t, size_t, CUdeviceptr, unsigned long long);
static CUresult (*create)(CUmemGenericAllocationHandle *, size_t, const CUmemAllocationProp *,
                          unsigned long long);
static CUresult (*map)(CUdeviceptr, size_t, size_t, CUmemGenericAllocationHandle,
                       unsigned long long);
static CUresult (*unmap)(CUdeviceptr, size_t);
static CUresult (*release)(CUmemGenericAllocationHandle);
static CUresult (*set_access)(CUdeviceptr, size_t, const CUmemAccessDesc *, size_t);
static CUresult (*info)(size_t *, size_t *);
static unsigned long long (*fk_used)(int);

static CUmemAllocationProp prop_at(CUmemLocationType type)
{
    CUmemAllocationProp p;
    memset(&p, 0, sizeof p);
    p.type = CU_MEM_ALLOCATION_TYPE_PINNED;
    p.location.type = type;
    p.location.id = 0;
    p.requestedHandleTypes = CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR;
    return p;
}

/* create, map, open, release at once; the memory lives on behind the map */
static CUresult map_released(CUdeviceptr at, size_t size, CUmemLocationType where)
{
    CUmemAllocationProp p = prop_at(where);
    CUmemGenericAllocationHandle h;
    CUresult rc = create(&h, size, &p, 0);
    if (rc != CUDA_SUCCESS)
        return rc;
    CHECK_CU(map(at, size, 0, h, 0));
    CUmemAccessDesc rw = {.location = {CU_MEM_LOCATION_TYPE_DEVICE, 0},
                          .flags = CU_MEM_ACCESS_FLAGS_PROT_READWRITE};
    CHECK_CU(set_access(at, size, &rw, 1));
    memset((void *)(uintptr_t)at, 0x6b, size);
    CHECK_CU(release(h));
    return CUDA_SUCCESS;
}

int main(int argc, char **argv)
{
    (void)argc;
    const char *env[] = {"VRAMSHIM_VRAM_LIMIT=64M", "VRAMSHIM_PIN_LIMIT=16M",
                         "VRAMSHIM_OFFLOAD=off", "FAKECUDA_MEM=1G", NULL};
    check_reexec_env(argv, env);
    void *lib = check_libcuda();
    check_context(lib, 0);
    reserve = check_sym(lib, "cuMemAddressReserve");
    create = check_sym(lib, "cuMemCreate");
    map = check_sym(lib, "cuMemMap");
    unmap = check_sym(lib, "cuMemUnmap");
    release = check_sym(lib, "cuMemRelease");
    set_access = check_sym(lib, "cuMemSetAccess");
    info = check_sym(lib, "cuMemGetInfo_v2");
    fk_used = check_sym(lib, "fakecuda_used");
    CUresult (*export_fd)(void *, CUmemGenericAllocationHandle, CUmemAllocationHandleType,
                          unsigned long long) = check_sym(lib, "cuMemExportToShareableHandle");
    CUresult (*import_fd)(CUmemGenericAllocationHandle *, void *, CUmemAllocationHandleType) =
        check_sym(lib, "cuMemImportFromShareableHandle");
    CUresult (*mc_create)(CUmemGenericAllocationHandle *, const CUmulticastObjectProp *) =
        check_sym(lib, "cuMulticastCreate");

    unsigned long long used0 = fk_used(0);
    CUdeviceptr va;
    CHECK_CU(reserve(&va, 256 * M, 0, 0, 0));

    /* device: 32 MiB at a time, each released as soon as it is mapped */
    int got = 0;
    CUresult rc;
    while ((rc = map_released(va + (CUdeviceptr)got * 32 * M, 32 * M,
                              CU_MEM_LOCATION_TYPE_DEVICE)) == CUDA_SUCCESS && got < 4)
        got++;
    CHECK(got == 2 && rc == CUDA_ERROR_OUT_OF_MEMORY,
          "%d handles of 32 MiB held under a 64 MiB limit (last answer %d)", got, (int)rc);
    size_t free_b, total_b;
    CHECK_CU(info(&free_b, &total_b));
    CHECK_EQ_U64(free_b, 0);
    CHECK_EQ_U64(total_b, 64 * M);
    json_t *st = stats_get();
    CHECK_EQ_U64(stats_u64(st, "devices.0.allocated"), fk_used(0) - used0);
    CHECK_EQ_U64(stats_u64(st, "devices.0.allocated"), 64 * M);
    json_decref(st);
    check_invariants("two released handles still mapped");

    /* host: 8 MiB at a time under the 16 MiB pin limit */
    CUdeviceptr hva = va + 128 * M;
    int host_got = 0;
    while ((rc = map_released(hva + (CUdeviceptr)host_got * 8 * M, 8 * M,
                              CU_MEM_LOCATION_TYPE_HOST_NUMA)) == CUDA_SUCCESS &&
           host_got < 4)
        host_got++;
    CHECK(host_got == 2 && rc == CUDA_ERROR_OUT_OF_MEMORY,
          "%d host handles of 8 MiB held under a 16 MiB pin limit (last answer %d)",
          host_got, (int)rc);
    st = stats_get();
    CHECK_EQ_U64(stats_u64(st, "pinned.app"), 16 * M);
    json_decref(st);

    /* the last mapping gone, the charge comes back: room for one more */
    CHECK_CU(unmap(va + 32 * M, 32 * M));
    CHECK_CU(unmap(hva + 8 * M, 8 * M));
    st = stats_get();
    CHECK_EQ_U64(stats_u64(st, "devices.0.allocated"), 32 * M);
    CHECK_EQ_U64(stats_u64(st, "devices.0.allocated"), fk_used(0) - used0);
    CHECK_EQ_U64(stats_u64(st, "pinned.app"), 8 * M);
    json_decref(st);
    CHECK_CU(map_released(va + 32 * M, 32 * M, CU_MEM_LOCATION_TYPE_DEVICE));
    CHECK_CU(map_released(hva + 8 * M, 8 * M, CU_MEM_LOCATION_TYPE_HOST_NUMA));
    CHECK_CU(unmap(va, 64 * M));
    CHECK_CU(unmap(hva, 16 * M));
    check_invariants("everything unmapped");

    /* one handle mapped twice counts once, until both mappings go */
    CUmemAllocationProp dp = prop_at(CU_MEM_LOCATION_TYPE_DEVICE);
    CUmemGenericAllocationHandle h, imp, mc;
    CHECK_CU(create(&h, 32 * M, &dp, 0));
    CHECK_CU(map(va, 32 * M, 0, h, 0));
    CHECK_CU(map(va + 32 * M, 32 * M, 0, h, 0));
    st = stats_get();
    CHECK_EQ_U64(stats_u64(st, "devices.0.allocated"), 32 * M);
    CHECK_EQ_U64(stats_u64(st, "devices.0.allocated"), fk_used(0) - used0);
    check_owner(st, "prog_vmm_life", 0, 32 * M, 1);
    json_decref(st);
    /* cuMemFree of a mapping is refused by the driver and changes nothing */
    CUresult (*mem_free)(CUdeviceptr) = check_sym(lib, "cuMemFree_v2");
    CHECK(mem_free(va) != CUDA_SUCCESS, "cuMemFree of a VMM mapping must be refused");
    st = stats_get();
    check_owner(st, "prog_vmm_life", 0, 32 * M, 1);
    json_decref(st);
    check_invariants("a refused cuMemFree of a mapping");
    CHECK_CU(release(h));
    CHECK_CU(unmap(va, 32 * M));
    st = stats_get();
    CHECK_EQ_U64(stats_u64(st, "devices.0.allocated"), 32 * M);
    json_decref(st);

    /* an imported handle: another process's memory, shown apart */
    CHECK_CU(create(&h, 32 * M, &dp, 0));
    int fd = -1;
    CHECK_CU(export_fd(&fd, h, CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR, 0));
    CHECK_CU(import_fd(&imp, (void *)(intptr_t)fd, CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR));
    close(fd);
    CHECK_CU(map(va + 64 * M, 32 * M, 0, imp, 0));
    CHECK_CU(release(imp));
    /* a multicast object: its memory is the handles bound to it */
    CUmulticastObjectProp mp;
    memset(&mp, 0, sizeof mp);
    mp.numDevices = 1;
    mp.size = 2 * M;
    mp.handleTypes = CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR;
    CHECK_CU(mc_create(&mc, &mp));
    CHECK_CU(map(va + 96 * M, 2 * M, 0, mc, 0));
    st = stats_get();
    CHECK_EQ_U64(stats_u64(st, "devices.0.allocated"), 64 * M);
    CHECK_EQ_U64(stats_u64(st, "devices.0.allocated"), fk_used(0) - used0);
    CHECK_EQ_U64(stats_u64(st, "devices.0.imported"), 34 * M);
    check_owner(st, "prog_vmm_life", 0, 64 * M, 2);
    json_decref(st);
    CHECK_CU(info(&free_b, &total_b));
    CHECK_EQ_U64(free_b, 0); /* the imported bytes took none of the slice */
    check_invariants("imported and multicast mappings");
    CHECK_CU(unmap(va + 64 * M, 34 * M));
    CHECK_CU(release(mc));
    CHECK_CU(unmap(va + 32 * M, 32 * M));
    CHECK_CU(release(h));
    st = stats_get();
    CHECK_EQ_U64(stats_u64(st, "devices.0.allocated"), 0);
    CHECK_EQ_U64(stats_u64(st, "devices.0.imported"), 0);
    CHECK_EQ_U64(fk_used(0), used0);
    json_decref(st);
    check_invariants("at the end");
    printf("prog_vmm_life: ok\n");
    return 0;
}
