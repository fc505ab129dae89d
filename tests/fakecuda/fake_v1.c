/*
 * fake_v1.c: the old ABI of the test driver.
 *
 * The real libcuda still exports the names cuda.h has renamed since CUDA
 * 3.2 (cuMemAlloc -> cuMemAlloc_v2 ...), with their old prototypes (cuda.h,
 * the __CUDA_API_VERSION_INTERNAL section): CUdeviceptr_v1 and sizes are
 * unsigned int. ctypes programs reach them by plain name, and
 * cuGetProcAddress hands them out for versions before 3.2. Here device
 * allocations come from the low 2 GiB of the address space so that their
 * addresses fit 32 bits; page-locked memory, IPC and the figures are the
 * _v2 calls' (a figure past 4 GiB saturates, which nothing documents), and
 * so are arrays (32-bit descriptors) and contexts.
 */
#include "fake_internal.h"

#include <limits.h>

FK_EXPORT CUresult cuMemAlloc(CUdeviceptr_v1 *dptr, unsigned int bytesize)
{
    FK_ENTER("cuMemAlloc");
    if (dptr == NULL || bytesize == 0)
        return CUDA_ERROR_INVALID_VALUE;
    CUdeviceptr p;
    CUresult rc = fk_device_alloc_low(&p, bytesize);
    if (rc == CUDA_SUCCESS)
        *dptr = (CUdeviceptr_v1)p;
    return rc;
}

FK_EXPORT CUresult cuMemAllocPitch(CUdeviceptr_v1 *dptr, unsigned int *pPitch,
                                   unsigned int WidthInBytes, unsigned int Height,
                                   unsigned int ElementSizeBytes)
{
    FK_ENTER("cuMemAllocPitch");
    if (dptr == NULL || pPitch == NULL || WidthInBytes == 0 || Height == 0 ||
        (ElementSizeBytes != 4 && ElementSizeBytes != 8 && ElementSizeBytes != 16))
        return CUDA_ERROR_INVALID_VALUE;
    uint64_t pitch = ((uint64_t)WidthInBytes + 511) & ~511ULL;
    if (pitch * Height > UINT_MAX)
        return CUDA_ERROR_INVALID_VALUE;
    CUdeviceptr p;
    CUresult rc = fk_device_alloc_low(&p, pitch * Height);
    if (rc == CUDA_SUCCESS) {
        *dptr = (CUdeviceptr_v1)p;
        *pPitch = (unsigned int)pitch;
    }
    return rc;
}

FK_EXPORT CUresult cuMemFree(CUdeviceptr_v1 dptr)
{
    FK_ENTER("cuMemFree");
    return cuMemFree_v2(dptr);
}

static unsigned int saturate(size_t v)
{
    return v > UINT_MAX ? UINT_MAX : (unsigned int)v;
}

FK_EXPORT CUresult cuMemGetInfo(unsigned int *free_bytes, unsigned int *total)
{
    FK_ENTER("cuMemGetInfo");
    if (free_bytes == NULL || total == NULL)
        return CUDA_ERROR_INVALID_VALUE;
    size_t f, t;
    CUresult rc = cuMemGetInfo_v2(&f, &t);
    if (rc == CUDA_SUCCESS) {
        *free_bytes = saturate(f);
        *total = saturate(t);
    }
    return rc;
}

FK_EXPORT CUresult cuDeviceTotalMem(unsigned int *bytes, CUdevice dev)
{
    FK_ENTER("cuDeviceTotalMem");
    if (bytes == NULL)
        return CUDA_ERROR_INVALID_VALUE;
    size_t b;
    CUresult rc = cuDeviceTotalMem_v2(&b, dev);
    if (rc == CUDA_SUCCESS)
        *bytes = saturate(b);
    return rc;
}

FK_EXPORT CUresult cuMemAllocHost(void **pp, unsigned int bytesize)
{
    FK_ENTER("cuMemAllocHost");
    return cuMemAllocHost_v2(pp, bytesize);
}

FK_EXPORT CUresult cuMemHostRegister(void *p, size_t bytesize, unsigned int Flags)
{
    FK_ENTER("cuMemHostRegister");
    return cuMemHostRegister_v2(p, bytesize, Flags);
}

FK_EXPORT CUresult cuIpcOpenMemHandle(CUdeviceptr *pdptr, CUipcMemHandle handle,
                                      unsigned int Flags)
{
    FK_ENTER("cuIpcOpenMemHandle");
    return cuIpcOpenMemHandle_v2(pdptr, handle, Flags);
}

/* Arrays: the old descriptors (cuda.h, CUDA_ARRAY_DESCRIPTOR_v1 and
 * CUDA_ARRAY3D_DESCRIPTOR_v1) hold the same fields with unsigned int
 * widths; the array is the one the _v2 call makes of that shape. */
FK_EXPORT CUresult cuArrayCreate(CUarray *pHandle, const CUDA_ARRAY_DESCRIPTOR_v1 *d)
{
    FK_ENTER("cuArrayCreate");
    if (d == NULL)
        return CUDA_ERROR_INVALID_VALUE;
    CUDA_ARRAY_DESCRIPTOR d2 = {.Width = d->Width, .Height = d->Height, .Format = d->Format,
                                .NumChannels = d->NumChannels};
    return cuArrayCreate_v2(pHandle, &d2);
}

FK_EXPORT CUresult cuArray3DCreate(CUarray *pHandle, const CUDA_ARRAY3D_DESCRIPTOR_v1 *d)
{
    FK_ENTER("cuArray3DCreate");
    if (d == NULL)
        return CUDA_ERROR_INVALID_VALUE;
    CUDA_ARRAY3D_DESCRIPTOR d3 = {.Width = d->Width, .Height = d->Height, .Depth = d->Depth,
                                  .Format = d->Format, .NumChannels = d->NumChannels,
                                  .Flags = d->Flags};
    return cuArray3DCreate_v2(pHandle, &d3);
}

/* Contexts: cuCtxCreate (before 3.2) and cuCtxDestroy (before 4.0) have
 * the prototypes of their _v2 twins and make and destroy the same
 * contexts, with the same memory. */
FK_EXPORT CUresult cuCtxCreate(CUcontext *pctx, unsigned int flags, CUdevice dev)
{
    FK_ENTER("cuCtxCreate");
    return cuCtxCreate_v2(pctx, flags, dev);
}

FK_EXPORT CUresult cuCtxDestroy(CUcontext ctx)
{
    FK_ENTER("cuCtxDestroy");
    return cuCtxDestroy_v2(ctx);
}

/* Graph instantiation as CUDA 10 and 11 export it (cuda.h's internal
 * prototypes: an error node and a log buffer, no flags), the exec the
 * flagged call makes; nothing goes wrong here to report in either. */
#define FK_OLD_INSTANTIATE(name)                                                \
    FK_EXPORT CUresult name(CUgraphExec *phGraphExec, CUgraph hGraph,           \
                            CUgraphNode *phErrorNode, char *logBuffer, size_t bufferSize) \
    {                                                                           \
        FK_ENTER(#name);                                                        \
        if (phErrorNode)                                                        \
            *phErrorNode = NULL;                                                \
        if (logBuffer && bufferSize)                                            \
            logBuffer[0] = '\0';                                                \
        return cuGraphInstantiateWithFlags(phGraphExec, hGraph, 0);             \
    }
FK_OLD_INSTANTIATE(cuGraphInstantiate)
FK_OLD_INSTANTIATE(cuGraphInstantiate_v2)
