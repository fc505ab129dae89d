/*
 * hook_mem.c: device memory the driver allocates for the program.
 *
 * Allocation: call the driver, and on success record the range with its
 * owner and device. Release: take the record out first, then call the
 * driver, and put it back if the driver refuses. In that order no other
 * thread can be handed the same address while its old record still stands.
 */
#include "vramshim_internal.h"

#include <errno.h>

static void track(CUdeviceptr base, uint64_t size, enum vs_kind kind)
{
    int rc = vs_registry_add(base, size, vs_current_device(), kind,
                             vs_owner_current());
    if (VS_UNLIKELY(rc == -ENOMEM))
        vs_error("out of memory for the registry: %llu bytes at 0x%llx are not "
                 "tracked",
                 (unsigned long long)size, (unsigned long long)base);
    else if (VS_UNLIKELY(rc == -EEXIST))
        vs_debug("0x%llx overlapped a stale record (a release vramshim did not "
                 "see); replaced",
                 (unsigned long long)base);
}

static void note_failure(CUresult rc)
{
    if (rc == CUDA_ERROR_OUT_OF_MEMORY)
        vs_registry_count_oom();
}

/* Release `base` through `release`, keeping the registry in step. */
#define RELEASE(base, call)                                   \
    do {                                                      \
        struct vs_alloc_info removed;                         \
        bool had = vs_registry_remove((base), &removed) == 0; \
        CUresult rc_ = (call);                                \
        if (rc_ != CUDA_SUCCESS && had)                       \
            vs_registry_restore(&removed);                    \
        return rc_;                                           \
    } while (0)

CUresult vs_hook_cuMemAlloc_v2(CUdeviceptr *dptr, size_t bytesize)
{
    CUresult rc = vs_real.cuMemAlloc_v2(dptr, bytesize);
    if (rc == CUDA_SUCCESS)
        track(*dptr, bytesize, VS_KIND_DEVICE);
    else
        note_failure(rc);
    return rc;
}

CUresult vs_hook_cuMemAllocPitch_v2(CUdeviceptr *dptr, size_t *pPitch,
                                    size_t WidthInBytes, size_t Height,
                                    unsigned int ElementSizeBytes)
{
    CUresult rc = vs_real.cuMemAllocPitch_v2(dptr, pPitch, WidthInBytes, Height,
                                             ElementSizeBytes);
    if (rc == CUDA_SUCCESS)
        track(*dptr, (uint64_t)*pPitch * Height, VS_KIND_DEVICE);
    else
        note_failure(rc);
    return rc;
}

CUresult vs_hook_cuMemAllocManaged(CUdeviceptr *dptr, size_t bytesize,
                                   unsigned int flags)
{
    CUresult rc = vs_real.cuMemAllocManaged(dptr, bytesize, flags);
    if (rc == CUDA_SUCCESS)
        track(*dptr, bytesize, VS_KIND_MANAGED);
    else
        note_failure(rc);
    return rc;
}

CUresult vs_hook_cuMemFree_v2(CUdeviceptr dptr)
{
    RELEASE(dptr, vs_real.cuMemFree_v2(dptr));
}

/* The stream-ordered family comes in legacy and per-thread-stream variants
 * that differ only in which driver entry they call. */
#define ASYNC_HOOKS(suffix)                                                    \
    CUresult vs_hook_cuMemAllocAsync##suffix(CUdeviceptr *dptr, size_t bytesize, \
                                             CUstream hStream)                 \
    {                                                                          \
        CUresult rc = vs_real.cuMemAllocAsync##suffix(dptr, bytesize, hStream); \
        if (rc == CUDA_SUCCESS)                                                \
            track(*dptr, bytesize, VS_KIND_ASYNC);                             \
        else                                                                   \
            note_failure(rc);                                                  \
        return rc;                                                             \
    }                                                                          \
    CUresult vs_hook_cuMemAllocFromPoolAsync##suffix(                          \
        CUdeviceptr *dptr, size_t bytesize, CUmemoryPool pool, CUstream hStream) \
    {                                                                          \
        CUresult rc = vs_real.cuMemAllocFromPoolAsync##suffix(dptr, bytesize,  \
                                                              pool, hStream);  \
        if (rc == CUDA_SUCCESS)                                                \
            track(*dptr, bytesize, VS_KIND_ASYNC);                             \
        else                                                                   \
            note_failure(rc);                                                  \
        return rc;                                                             \
    }                                                                          \
    CUresult vs_hook_cuMemFreeAsync##suffix(CUdeviceptr dptr, CUstream hStream) \
    {                                                                          \
        RELEASE(dptr, vs_real.cuMemFreeAsync##suffix(dptr, hStream));          \
    }

ASYNC_HOOKS()
ASYNC_HOOKS(_ptsz)
