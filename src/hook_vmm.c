/*
 * hook_vmm.c: the program's own virtual memory management.
 *
 * PyTorch's expandable segments and JAX reserve address space and map
 * physical handles into it themselves. Physical memory is taken at
 * cuMemCreate, so that is where the budget is charged (device locations
 * against the VRAM limit, host locations against the pin limit) and
 * cuMemRelease gives it back. Only a mapping has an address a kernel can
 * reach, so the registry counts mappings: each becomes one record.
 */
#include "hooks.h"

CUresult vs_hook_cuMemCreate(CUmemGenericAllocationHandle *handle, size_t size,
                             const CUmemAllocationProp *prop,
                             unsigned long long flags)
{
    if (prop == NULL || handle == NULL)
        return vs_real.cuMemCreate(handle, size, prop, flags);
    bool on_host = prop->location.type != CU_MEM_LOCATION_TYPE_DEVICE;
    struct vs_charge ch;
    CUresult rc = on_host ? vs_admit_pinned("cuMemCreate", size, &ch)
                          : vs_admit_device("cuMemCreate", prop->location.id, size, &ch);
    if (rc != CUDA_SUCCESS)
        return rc;
    rc = vs_real.cuMemCreate(handle, size, prop, flags);
    vs_budget_settle(&ch, rc == CUDA_SUCCESS);
    if (rc == CUDA_ERROR_OUT_OF_MEMORY)
        vs_registry_count_oom();
    if (rc != CUDA_SUCCESS)
        return rc;

    struct vs_handle_info info = {
        .size = size,
        .device = on_host ? -1 : prop->location.id,
        .owner = ch.owner,
        .on_host = on_host,
        .charge = ch,
    }, stale;
    bool had_stale;
    if (vs_handle_add(*handle, &info, &stale, &had_stale) != 0) {
        vs_error("out of memory for the registry: a VMM handle of %zu bytes is "
                 "not tracked or counted against the limits",
                 size);
        vs_budget_refund(&ch);
    } else if (had_stale) {
        vs_budget_refund(&stale.charge);
    }
    return rc;
}

CUresult vs_hook_cuMemRelease(CUmemGenericAllocationHandle handle)
{
    CUresult rc = vs_real.cuMemRelease(handle);
    struct vs_handle_info info;
    if (rc == CUDA_SUCCESS && vs_handle_remove(handle, &info))
        vs_budget_refund(&info.charge);
    return rc;
}

CUresult vs_hook_cuMemMap(CUdeviceptr ptr, size_t size, size_t offset,
                          CUmemGenericAllocationHandle handle,
                          unsigned long long flags)
{
    CUresult rc = vs_real.cuMemMap(ptr, size, offset, handle, flags);
    if (rc != CUDA_SUCCESS)
        return rc;
    struct vs_handle_info info;
    if (!vs_handle_find(handle, &info)) { /* made before we were loaded */
        info.device = vs_current_device();
        info.on_host = false;
        info.owner = vs_owner_current();
    }
    vs_registry_add(ptr, size, info.device,
                    info.on_host ? VS_KIND_HOST_VMM : VS_KIND_VMM, info.owner);
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
