/*
 * hook_vmm.c: the program's own virtual memory management.
 *
 * PyTorch's expandable segments, NCCL and JAX reserve address space and map
 * physical handles into it themselves. Physical memory is taken at
 * cuMemCreate, so that is where the budget is charged (device locations
 * against the VRAM limit, host locations against the pin limit), and the
 * driver frees it only once the handle is released AND its last mapping is
 * gone: create, map, release at once is the common idiom, and the memory
 * lives on behind the mapping. The registry keeps a count of mappings per
 * handle and gives the charge back then (vs_handle_release, cuMemUnmap's
 * records). A handle mapped twice counts once. Imported and multicast
 * handles are another process's (or already counted) memory: their
 * mappings are shown apart (`imported`) and charged to nobody.
 *
 * These calls take vmm_order across the driver call and the bookkeeping
 * after it: once the driver frees a handle it may hand the same number to
 * the next cuMemCreate, and without the order that thread's new entry
 * could be taken for the old one. They are not per-launch paths, and the
 * driver never waits in them for work the program submits later.
 */
#include "hooks.h"

#include <pthread.h>

static pthread_mutex_t vmm_order = PTHREAD_MUTEX_INITIALIZER;

static void track_handle(CUmemGenericAllocationHandle h, const struct vs_handle_info *info)
{
    if (vs_handle_add(h, info) != 0) {
        vs_error("out of memory for the registry: a VMM handle of %llu bytes is "
                 "not tracked or counted against the limits",
                 (unsigned long long)info->size);
        vs_budget_refund(&info->charge);
    }
}

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
    pthread_mutex_lock(&vmm_order);
    rc = vs_real.cuMemCreate(handle, size, prop, flags);
    /* the device is short: room here, then from the peers, with vmm_order
     * let go (a failed create left nothing to order, and a peer's answer
     * may wait for this process's own server) */
    for (int step = 0; rc == CUDA_ERROR_OUT_OF_MEMORY && !on_host && step < 2; step++) {
        pthread_mutex_unlock(&vmm_order);
        bool moved = vs_admit_device_short(prop->location.id, size, "cuMemCreate", step);
        pthread_mutex_lock(&vmm_order);
        if (moved)
            rc = vs_real.cuMemCreate(handle, size, prop, flags);
    }
    vs_budget_settle(&ch, rc == CUDA_SUCCESS);
    if (rc == CUDA_SUCCESS) {
        struct vs_handle_info info = {
            .size = size,
            .device = on_host ? -1 : prop->location.id,
            .owner = ch.owner,
            .on_host = on_host,
            .charge = ch,
        };
        track_handle(*handle, &info);
    }
    pthread_mutex_unlock(&vmm_order);
    if (rc == CUDA_ERROR_OUT_OF_MEMORY)
        vs_registry_count_oom();
    return rc;
}

/* Where an imported handle's memory lives, as the driver tells it; else
 * the current device. */
static int handle_device(CUmemGenericAllocationHandle h)
{
    CUmemAllocationProp prop = {0};
    if (vs_real.cuMemGetAllocationPropertiesFromHandle &&
        vs_real.cuMemGetAllocationPropertiesFromHandle(&prop, h) == CUDA_SUCCESS)
        return prop.location.type == CU_MEM_LOCATION_TYPE_DEVICE ? prop.location.id : -1;
    return vs_current_device();
}

/* Memory that is not this process's own to charge: shown, never counted. */
static void track_foreign(CUmemGenericAllocationHandle h)
{
    int dev = handle_device(h);
    struct vs_handle_info info = {
        .device = dev,
        .owner = vs_owner_current(),
        .on_host = dev < 0,
        .imported = true,
        .charge = {.dev = dev},
    };
    track_handle(h, &info);
}

CUresult vs_hook_cuMemImportFromShareableHandle(CUmemGenericAllocationHandle *handle,
                                                void *os_handle,
                                                CUmemAllocationHandleType type)
{
    pthread_mutex_lock(&vmm_order);
    CUresult rc = vs_real.cuMemImportFromShareableHandle(handle, os_handle, type);
    if (rc == CUDA_SUCCESS && handle)
        track_foreign(*handle);
    pthread_mutex_unlock(&vmm_order);
    return rc;
}

/* A multicast object's memory is what each device binds to it, handles the
 * program created (and vramshim charged) itself. */
CUresult vs_hook_cuMulticastCreate(CUmemGenericAllocationHandle *mcHandle,
                                   const CUmulticastObjectProp *prop)
{
    pthread_mutex_lock(&vmm_order);
    CUresult rc = vs_real.cuMulticastCreate(mcHandle, prop);
    if (rc == CUDA_SUCCESS && mcHandle)
        track_foreign(*mcHandle);
    pthread_mutex_unlock(&vmm_order);
    return rc;
}

CUresult vs_hook_cuMemRelease(CUmemGenericAllocationHandle handle)
{
    pthread_mutex_lock(&vmm_order);
    CUresult rc = vs_real.cuMemRelease(handle);
    if (rc == CUDA_SUCCESS)
        vs_handle_release(handle, VS_HANDLE_VMM);
    pthread_mutex_unlock(&vmm_order);
    return rc;
}

CUresult vs_hook_cuMemMap(CUdeviceptr ptr, size_t size, size_t offset,
                          CUmemGenericAllocationHandle handle,
                          unsigned long long flags)
{
    pthread_mutex_lock(&vmm_order);
    CUresult rc = vs_real.cuMemMap(ptr, size, offset, handle, flags);
    /* A handle made before vramshim was loaded counts by its mapping. */
    if (rc == CUDA_SUCCESS)
        vs_registry_map(ptr, size, handle, vs_current_device(), VS_KIND_VMM,
                        vs_owner_current());
    pthread_mutex_unlock(&vmm_order);
    return rc;
}

CUresult vs_hook_cuMemUnmap(CUdeviceptr ptr, size_t size)
{
    /* The program manages this address range itself, so nobody else can map
     * it between the driver's unmap and ours. */
    pthread_mutex_lock(&vmm_order);
    CUresult rc = vs_real.cuMemUnmap(ptr, size);
    if (rc == CUDA_SUCCESS)
        vs_registry_remove_range(ptr, size);
    pthread_mutex_unlock(&vmm_order);
    return rc;
}
