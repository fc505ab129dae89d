/*
 * hook_host.c: page-locked host memory the program asks the driver for.
 *
 * Counted under pinned.app in the stats, never under a device; kept in the
 * same registry because a kernel may be handed a mapped pinned pointer.
 */
#include "vramshim_internal.h"

#include <errno.h>

static void track_host(void *p, uint64_t size, enum vs_kind kind)
{
    if (vs_registry_add((uint64_t)(uintptr_t)p, size, -1, kind, vs_owner_current()) ==
        -ENOMEM)
        vs_error("out of memory for the registry: %llu pinned bytes are not "
                 "tracked",
                 (unsigned long long)size);
}

static CUresult release_host(void *p, CUresult (*release)(void *))
{
    struct vs_alloc_info removed;
    bool had = vs_registry_remove((uint64_t)(uintptr_t)p, &removed) == 0;
    CUresult rc = release(p);
    if (rc != CUDA_SUCCESS && had)
        vs_registry_restore(&removed);
    return rc;
}

CUresult vs_hook_cuMemHostAlloc(void **pp, size_t bytesize, unsigned int Flags)
{
    CUresult rc = vs_real.cuMemHostAlloc(pp, bytesize, Flags);
    if (rc == CUDA_SUCCESS)
        track_host(*pp, bytesize, VS_KIND_HOST_ALLOC);
    return rc;
}

CUresult vs_hook_cuMemAllocHost_v2(void **pp, size_t bytesize)
{
    CUresult rc = vs_real.cuMemAllocHost_v2(pp, bytesize);
    if (rc == CUDA_SUCCESS)
        track_host(*pp, bytesize, VS_KIND_HOST_ALLOC);
    return rc;
}

CUresult vs_hook_cuMemFreeHost(void *p)
{
    return release_host(p, vs_real.cuMemFreeHost);
}

CUresult vs_hook_cuMemHostRegister_v2(void *p, size_t bytesize, unsigned int Flags)
{
    CUresult rc = vs_real.cuMemHostRegister_v2(p, bytesize, Flags);
    if (rc == CUDA_SUCCESS)
        track_host(p, bytesize, VS_KIND_HOST_REGISTERED);
    return rc;
}

CUresult vs_hook_cuMemHostUnregister(void *p)
{
    return release_host(p, vs_real.cuMemHostUnregister);
}
