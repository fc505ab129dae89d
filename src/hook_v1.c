/*
 * hook_v1.c: the old ABI's entry points.
 *
 * The driver still exports the names cuda.h renames (cuMemAlloc for
 * cuMemAlloc_v2, cuMemGetInfo for cuMemGetInfo_v2...), with the ABI they
 * had before CUDA 3.2: 32-bit device pointers and sizes. A program reaches
 * them by plain-name dlsym (ctypes) or by cuGetProcAddress with an old
 * version. Each answers here as its ABI expects and counts as its _v2 twin:
 *   - device allocations call the driver's own old entry (only it can give
 *     an address that fits 32 bits) and are charged and recorded like any
 *     other; they are never backed for offload, whose addresses would not
 *     fit;
 *   - page-locked memory, IPC and the memory figures have the same meaning
 *     in both ABIs and go through the _v2 hooks; a figure past 4 GiB reads
 *     4 GiB - 1, as much as the old ABI can say.
 */
#include "hooks.h"

#include <limits.h>

CUresult vs_hook_cuMemAlloc(CUdeviceptr_v1 *dptr, unsigned int bytesize)
{
    struct vs_charge ch;
    CUresult rc = vs_admit_device("cuMemAlloc", vs_current_device(), bytesize, &ch);
    if (rc != CUDA_SUCCESS)
        return rc;
    rc = vs_real.cuMemAlloc(dptr, bytesize);
    return vs_alloc_finish(&ch, rc, rc == CUDA_SUCCESS ? *dptr : 0, bytesize,
                           VS_KIND_DEVICE);
}

CUresult vs_hook_cuMemAllocPitch(CUdeviceptr_v1 *dptr, unsigned int *pPitch,
                                 unsigned int WidthInBytes, unsigned int Height,
                                 unsigned int ElementSizeBytes)
{
    struct vs_charge ch;
    CUresult rc = vs_admit_device("cuMemAllocPitch", vs_current_device(),
                                  vs_pitch_guess(WidthInBytes, Height), &ch);
    if (rc != CUDA_SUCCESS)
        return rc;
    rc = vs_real.cuMemAllocPitch(dptr, pPitch, WidthInBytes, Height, ElementSizeBytes);
    uint64_t size = rc == CUDA_SUCCESS ? (uint64_t)*pPitch * Height : 0;
    if (rc == CUDA_SUCCESS)
        vs_budget_resize(&ch, size);
    return vs_alloc_finish(&ch, rc, rc == CUDA_SUCCESS ? *dptr : 0, size, VS_KIND_DEVICE);
}

CUresult vs_hook_cuMemFree(CUdeviceptr_v1 dptr)
{
    struct vs_alloc_info removed;
    bool had = vs_registry_remove(dptr, &removed) == 0;
    return vs_alloc_released(had, &removed, vs_real.cuMemFree(dptr));
}

static unsigned int saturate(size_t v)
{
    return v > UINT_MAX ? UINT_MAX : (unsigned int)v;
}

CUresult vs_hook_cuMemGetInfo(unsigned int *free, unsigned int *total)
{
    if (free == NULL || total == NULL)
        return vs_real.cuMemGetInfo(free, total);
    size_t f, t;
    CUresult rc = vs_hook_cuMemGetInfo_v2(&f, &t);
    if (rc == CUDA_SUCCESS) {
        *free = saturate(f);
        *total = saturate(t);
    }
    return rc;
}

CUresult vs_hook_cuDeviceTotalMem(unsigned int *bytes, CUdevice dev)
{
    if (bytes == NULL)
        return vs_real.cuDeviceTotalMem(bytes, dev);
    size_t b;
    CUresult rc = vs_hook_cuDeviceTotalMem_v2(&b, dev);
    if (rc == CUDA_SUCCESS)
        *bytes = saturate(b);
    return rc;
}

CUresult vs_hook_cuMemAllocHost(void **pp, unsigned int bytesize)
{
    return vs_hook_cuMemAllocHost_v2(pp, bytesize);
}

CUresult vs_hook_cuMemHostRegister(void *p, size_t bytesize, unsigned int Flags)
{
    return vs_hook_cuMemHostRegister_v2(p, bytesize, Flags);
}

CUresult vs_hook_cuIpcOpenMemHandle(CUdeviceptr *pdptr, CUipcMemHandle handle,
                                    unsigned int Flags)
{
    return vs_hook_cuIpcOpenMemHandle_v2(pdptr, handle, Flags);
}
