/*
 * hook_host.c: page-locked host memory the program asks the driver for.
 *
 * Charged against VRAMSHIM_PIN_LIMIT before the driver pins anything, so
 * the total never passes the cap, not even for a moment. Counted under
 * pinned.app in the stats, never under a device; kept in the same registry
 * because a kernel may be handed a mapped pinned pointer. A large range
 * about to be registered is faulted in first by the copy threads
 * (staging.c), so the driver's single-threaded walk finds it present.
 */
#include "hooks.h"

#include <errno.h>

static CUresult finish(struct vs_charge *ch, CUresult rc, void *p, uint64_t size,
                       enum vs_kind kind)
{
    vs_budget_settle(ch, rc == CUDA_SUCCESS);
    if (rc != CUDA_SUCCESS)
        return rc;
    if (vs_registry_add((uint64_t)(uintptr_t)p, size, -1, kind, vs_owner_current()) ==
        -ENOMEM) {
        vs_error("out of memory for the registry: %llu pinned bytes are not "
                 "tracked or counted against the pin limit",
                 (unsigned long long)size);
        vs_budget_refund(ch);
    }
    return rc;
}

static CUresult release_host(void *p, CUresult (*release)(void *))
{
    struct vs_alloc_info removed;
    bool had = vs_registry_remove((uint64_t)(uintptr_t)p, &removed) == 0;
    CUresult rc = release(p);
    if (rc == CUDA_SUCCESS && had)
        vs_budget_release(&removed);
    else if (had)
        vs_registry_restore(&removed);
    return rc;
}

CUresult vs_hook_cuMemHostAlloc(void **pp, size_t bytesize, unsigned int Flags)
{
    struct vs_charge ch;
    CUresult rc = vs_admit_pinned("cuMemHostAlloc", bytesize, &ch);
    if (rc != CUDA_SUCCESS)
        return rc;
    rc = vs_real.cuMemHostAlloc(pp, bytesize, Flags);
    return finish(&ch, rc, rc == CUDA_SUCCESS ? *pp : NULL, bytesize,
                  VS_KIND_HOST_ALLOC);
}

CUresult vs_hook_cuMemAllocHost_v2(void **pp, size_t bytesize)
{
    struct vs_charge ch;
    CUresult rc = vs_admit_pinned("cuMemAllocHost", bytesize, &ch);
    if (rc != CUDA_SUCCESS)
        return rc;
    rc = vs_real.cuMemAllocHost_v2(pp, bytesize);
    return finish(&ch, rc, rc == CUDA_SUCCESS ? *pp : NULL, bytesize,
                  VS_KIND_HOST_ALLOC);
}

CUresult vs_hook_cuMemFreeHost(void *p)
{
    return release_host(p, vs_real.cuMemFreeHost);
}

CUresult vs_hook_cuMemHostRegister_v2(void *p, size_t bytesize, unsigned int Flags)
{
    struct vs_charge ch;
    CUresult rc = vs_admit_pinned("cuMemHostRegister", bytesize, &ch);
    if (rc != CUDA_SUCCESS)
        return rc;
    if (bytesize >= VS_PREFAULT_MIN && p && !(Flags & CU_MEMHOSTREGISTER_IOMEMORY))
        vs_staging_prefault(p, bytesize, !(Flags & CU_MEMHOSTREGISTER_READ_ONLY));
    rc = vs_real.cuMemHostRegister_v2(p, bytesize, Flags);
    return finish(&ch, rc, p, bytesize, VS_KIND_HOST_REGISTERED);
}

CUresult vs_hook_cuMemHostUnregister(void *p)
{
    return release_host(p, vs_real.cuMemHostUnregister);
}
