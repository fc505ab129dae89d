/*
 * hook_ptr.c: what the program is told about its own pointers.
 *
 * A buffer vramshim backs with VMM must look like the cuMemAlloc it asked
 * for, wherever its bytes are: the driver would report one chunk's mapping
 * as its range, and a chunk moved to host memory as host memory. For those
 * buffers the allocation's own figures are answered here; every other
 * pointer, and every other attribute, goes to the driver.
 *
 * The one attribute a program can set, CU_POINTER_ATTRIBUTE_SYNC_MEMOPS,
 * belongs to the allocation too: the driver would keep it for one chunk's
 * mapping and lose it at the next move. vramshim keeps it with the buffer
 * (tier.c), has every mapping of every chunk apply it (chunk.c), and
 * answers it from there.
 */
#include "hooks.h"

/* The allocation's own answer for one attribute of a backed buffer, or
 * false: the driver's answer stands. */
static bool answer(const struct vs_tier_view *v, void *data, CUpointer_attribute attribute,
                   CUdeviceptr ptr)
{
    switch (attribute) {
    case CU_POINTER_ATTRIBUTE_MEMORY_TYPE:
        *(unsigned int *)data = CU_MEMORYTYPE_DEVICE;
        return true;
    case CU_POINTER_ATTRIBUTE_DEVICE_POINTER:
        *(CUdeviceptr *)data = ptr;
        return true;
    case CU_POINTER_ATTRIBUTE_RANGE_START_ADDR:
        *(CUdeviceptr *)data = v->base;
        return true;
    case CU_POINTER_ATTRIBUTE_RANGE_SIZE:
        *(size_t *)data = v->size;
        return true;
    case CU_POINTER_ATTRIBUTE_DEVICE_ORDINAL:
        *(int *)data = v->dev;
        return true;
    case CU_POINTER_ATTRIBUTE_CONTEXT:
        if (v->ctx == NULL)
            return false;
        *(CUcontext *)data = v->ctx;
        return true;
    case CU_POINTER_ATTRIBUTE_IS_MANAGED:
        *(unsigned int *)data = 0;
        return true;
    case CU_POINTER_ATTRIBUTE_MAPPED:
        *(unsigned int *)data = 1;
        return true;
    case CU_POINTER_ATTRIBUTE_IS_HW_DECOMPRESS_CAPABLE: /* "a boolean": an int */
        *(int *)data = vs_chunk_hw_decompress(v->dev);
        return true;
    case CU_POINTER_ATTRIBUTE_SYNC_MEMOPS:
        if (v->sync_memops < 0)
            return false; /* never set: the driver's default stands */
        *(unsigned int *)data = (unsigned int)v->sync_memops;
        return true;
    default:
        return false;
    }
}

CUresult vs_hook_cuPointerGetAttribute(void *data, CUpointer_attribute attribute,
                                       CUdeviceptr ptr)
{
    struct vs_tier_view v;
    if (data != NULL && vs_tier_lookup(ptr, &v) && answer(&v, data, attribute, ptr))
        return CUDA_SUCCESS;
    return vs_real.cuPointerGetAttribute(data, attribute, ptr);
}

/* The driver fills in every attribute first (defaults where it has none,
 * e.g. for a chunk now unmapped in pageable memory); the allocation's own
 * answers then replace its figures. */
CUresult vs_hook_cuPointerGetAttributes(unsigned int n, CUpointer_attribute *attributes,
                                        void **data, CUdeviceptr ptr)
{
    CUresult rc = vs_real.cuPointerGetAttributes(n, attributes, data, ptr);
    struct vs_tier_view v;
    if (rc != CUDA_SUCCESS || !vs_tier_lookup(ptr, &v))
        return rc;
    for (unsigned int i = 0; i < n; i++)
        answer(&v, data[i], attributes[i], ptr);
    return rc;
}

/* "value will be considered as a pointer to an unsigned integer to which
 * this attribute is to be set" (driver API reference, cuPointerSetAttribute);
 * SYNC_MEMOPS is the only attribute it sets, so anything else, and every
 * pointer that is not a backed buffer, is the driver's to answer. */
CUresult vs_hook_cuPointerSetAttribute(const void *value, CUpointer_attribute attribute,
                                       CUdeviceptr ptr)
{
    if (value == NULL || attribute != CU_POINTER_ATTRIBUTE_SYNC_MEMOPS)
        return vs_real.cuPointerSetAttribute(value, attribute, ptr);
    CUresult rc = vs_tier_set_sync_memops(ptr, *(const unsigned int *)value != 0);
    if (rc == CUDA_ERROR_NOT_FOUND)
        return vs_real.cuPointerSetAttribute(value, attribute, ptr);
    return rc;
}

CUresult vs_hook_cuMemGetAddressRange_v2(CUdeviceptr *pbase, size_t *psize, CUdeviceptr dptr)
{
    struct vs_tier_view v;
    if (!vs_tier_lookup(dptr, &v))
        return vs_real.cuMemGetAddressRange_v2(pbase, psize, dptr);
    if (pbase)
        *pbase = v.base;
    if (psize)
        *psize = v.size;
    return CUDA_SUCCESS;
}
