/*
 * hook_info.c: the memory figures the program reads.
 *
 * A program that sizes itself from free memory (PyTorch's mem_get_info,
 * CuPy's and JAX's pools, vLLM) must size itself to its slice, so
 * cuMemGetInfo and cuDeviceTotalMem answer with total = min(limit,
 * physical) and free = what this process, and the calling thread's owner,
 * may still allocate: never more than the device really has free less the
 * reserve. With no limit and no reserve the driver's figures pass through
 * untouched. Each free figure the driver gives is also a free update of
 * the budget's count.
 */
#include "hooks.h"

CUresult vs_hook_cuMemGetInfo_v2(size_t *free, size_t *total)
{
    CUresult rc = vs_real.cuMemGetInfo_v2(free, total);
    if (rc != CUDA_SUCCESS || free == NULL || total == NULL)
        return rc;
    int dev = vs_current_device();
    vs_stats_note_free(dev, *free);
    vs_budget_note_free(dev, *free);
    uint64_t f, t;
    vs_budget_slice(dev, vs_owner_current(), *free, *total, &f, &t);
    *free = (size_t)f;
    *total = (size_t)t;
    return rc;
}

/* A CUdevice is its ordinal in every driver seen so far. */
CUresult vs_hook_cuDeviceTotalMem_v2(size_t *bytes, CUdevice dev)
{
    CUresult rc = vs_real.cuDeviceTotalMem_v2(bytes, dev);
    if (rc == CUDA_SUCCESS && bytes)
        *bytes = (size_t)vs_budget_total((int)dev, *bytes);
    return rc;
}
