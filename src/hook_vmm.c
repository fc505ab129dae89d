/*
 * hook_vmm.c: the program's own virtual memory management.
 *
 * PyTorch's expandable segments and JAX reserve address space and map
 * physical handles into it themselves. Physical memory is what the device
 * gives up, but only a mapping has an address a kernel can reach, so a
 * handle is remembered at cuMemCreate (size, place) and counted when mapped:
 * each mapping becomes one registry record. Handles on host locations are
 * page-locked host memory the program pinned itself.
 */
#include "vramshim_internal.h"

CUresult vs_hook_cuMemCreate(CUmemGenericAllocationHandle *handle, size_t size,
                             const CUmemAllocationProp *prop,
                             unsigned long long flags)
{
    CUresult rc = vs_real.cuMemCreate(handle, size, prop, flags);
    if (rc == CUDA_SUCCESS) {
        bool on_host = prop->location.type != CU_MEM_LOCATION_TYPE_DEVICE;
        if (vs_handle_add(*handle, size, on_host ? -1 : prop->location.id, on_host))
            vs_error("out of memory for the registry: a VMM handle of %zu bytes "
                     "is not tracked",
                     size);
    } else if (rc == CUDA_ERROR_OUT_OF_MEMORY) {
        vs_registry_count_oom();
    }
    return rc;
}

CUresult vs_hook_cuMemRelease(CUmemGenericAllocationHandle handle)
{
    CUresult rc = vs_real.cuMemRelease(handle);
    if (rc == CUDA_SUCCESS)
        vs_handle_remove(handle);
    return rc;
}

CUresult vs_hook_cuMemMap(CUdeviceptr ptr, size_t size, size_t offset,
                          CUmemGenericAllocationHandle handle,
                          unsigned long long flags)
{
    CUresult rc = vs_real.cuMemMap(ptr, size, offset, handle, flags);
    if (rc != CUDA_SUCCESS)
        return rc;
    uint64_t hsize;
    int device;
    bool on_host;
    if (!vs_handle_find(handle, &hsize, &device, &on_host)) {
        device = vs_current_device(); /* a handle made before we were loaded */
        on_host = false;
    }
    vs_registry_add(ptr, size, device, on_host ? VS_KIND_HOST_ALLOC : VS_KIND_VMM,
                    vs_owner_current());
    return rc;
}

CUresult vs_hook_cuMemUnmap(CUdeviceptr ptr, size_t size)
{
    /* The program manages this address range itself, so nobody else can map
     * it between the driver's unmap and ours. */
    CUresult rc = vs_real.cuMemUnmap(ptr, size);
    if (rc == CUDA_SUCCESS)
        vs_registry_remove_range(ptr, size);
    return rc;
}
