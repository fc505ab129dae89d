/*
 * fake_array.c: CUDA arrays and mipmapped arrays in the test driver.
 *
 * As cuda.h documents them: cuArrayCreate / cuArray3DCreate /
 * cuMipmappedArrayCreate take device memory in the current context's
 * device (CUDA_ERROR_OUT_OF_MEMORY when it is full) until cuArrayDestroy /
 * cuMipmappedArrayDestroy; an array created with
 * CUDA_ARRAY3D_DEFERRED_MAPPING (or CUDA_ARRAY3D_SPARSE) holds none until
 * a tile pool is mapped into it, and only such an array answers
 * cuArrayGetMemoryRequirements ("If the CUDA array is not allocated with
 * flag CUDA_ARRAY3D_DEFERRED_MAPPING CUDA_ERROR_INVALID_VALUE will be
 * returned"). The real layout is opaque; this driver lays each row of
 * each level out at a 512-byte pitch and rounds the whole up to 64 KiB,
 * so a caller that guesses the size instead of asking is seen to be off.
 * Arrays hold no host memory here: nothing in the tests reads their texels.
 */
#include "fake_internal.h"

#include <stdlib.h>

#define ROW_PITCH 512ULL
#define ARRAY_ROUND (64ULL << 10)

struct fk_array {
    uint64_t size;
    int device;
    bool charged;
};

unsigned fk_format_bytes(CUarray_format f)
{
    switch (f) {
    case CU_AD_FORMAT_UNSIGNED_INT8:
    case CU_AD_FORMAT_SIGNED_INT8:
        return 1;
    case CU_AD_FORMAT_UNSIGNED_INT16:
    case CU_AD_FORMAT_SIGNED_INT16:
    case CU_AD_FORMAT_HALF:
        return 2;
    case CU_AD_FORMAT_UNSIGNED_INT32:
    case CU_AD_FORMAT_SIGNED_INT32:
    case CU_AD_FORMAT_FLOAT:
        return 4;
    default:
        return 0;
    }
}

/* An array of another format (packed, compressed) is laid out with 4 bytes
 * a channel, no less than any of them needs. */
static uint64_t elem_bytes(CUarray_format f)
{
    unsigned b = fk_format_bytes(f);
    return b ? b : 4;
}

static uint64_t shape_bytes(const CUDA_ARRAY3D_DESCRIPTOR *d, unsigned levels)
{
    bool layered = d->Flags & CUDA_ARRAY3D_LAYERED;
    uint64_t w = d->Width, h = d->Height ? d->Height : 1, depth = d->Depth ? d->Depth : 1;
    uint64_t layers = layered ? depth : 1, z = layered ? 1 : depth, total = 0;
    uint64_t elem = elem_bytes(d->Format) * d->NumChannels;
    for (unsigned i = 0; i < levels; i++) {
        uint64_t row = (w * elem + ROW_PITCH - 1) / ROW_PITCH * ROW_PITCH;
        total += row * h * z * layers;
        w = w > 1 ? w / 2 : 1;
        h = h > 1 ? h / 2 : 1;
        z = z > 1 ? z / 2 : 1;
    }
    return (total + ARRAY_ROUND - 1) / ARRAY_ROUND * ARRAY_ROUND;
}

static CUresult create(void **out, const CUDA_ARRAY3D_DESCRIPTOR *d, unsigned levels)
{
    if (out == NULL || d == NULL || d->Width == 0 || levels == 0 ||
        (d->NumChannels != 1 && d->NumChannels != 2 && d->NumChannels != 4))
        return CUDA_ERROR_INVALID_VALUE;
    FK_NEED_CTX(c);
    struct fk_array *a = calloc(1, sizeof *a);
    if (a == NULL)
        return CUDA_ERROR_OUT_OF_MEMORY;
    a->size = shape_bytes(d, levels);
    a->device = c->device;
    a->charged = !(d->Flags & (CUDA_ARRAY3D_DEFERRED_MAPPING | CUDA_ARRAY3D_SPARSE));
    if (a->charged && !fk_charge(a->device, a->size)) {
        free(a);
        return CUDA_ERROR_OUT_OF_MEMORY;
    }
    *out = a;
    return CUDA_SUCCESS;
}

static CUresult destroy(void *h)
{
    struct fk_array *a = h;
    if (a == NULL)
        return CUDA_ERROR_INVALID_HANDLE;
    if (a->charged)
        fk_uncharge(a->device, a->size);
    free(a);
    return CUDA_SUCCESS;
}

static CUresult requirements(CUDA_ARRAY_MEMORY_REQUIREMENTS *req, void *h, CUdevice dev)
{
    struct fk_array *a = h;
    if (req == NULL || a == NULL || a->charged || dev != a->device)
        return CUDA_ERROR_INVALID_VALUE;
    req->size = a->size;
    req->alignment = ARRAY_ROUND;
    return CUDA_SUCCESS;
}

FK_EXPORT CUresult cuArray3DCreate_v2(CUarray *pHandle, const CUDA_ARRAY3D_DESCRIPTOR *d)
{
    FK_ENTER("cuArray3DCreate_v2");
    return create((void **)pHandle, d, 1);
}

FK_EXPORT CUresult cuArrayCreate_v2(CUarray *pHandle, const CUDA_ARRAY_DESCRIPTOR *d)
{
    FK_ENTER("cuArrayCreate_v2");
    if (d == NULL)
        return CUDA_ERROR_INVALID_VALUE;
    CUDA_ARRAY3D_DESCRIPTOR d3 = {.Width = d->Width, .Height = d->Height,
                                  .Format = d->Format, .NumChannels = d->NumChannels};
    return create((void **)pHandle, &d3, 1);
}

FK_EXPORT CUresult cuMipmappedArrayCreate(CUmipmappedArray *pHandle,
                                          const CUDA_ARRAY3D_DESCRIPTOR *d, unsigned int levels)
{
    FK_ENTER("cuMipmappedArrayCreate");
    return create((void **)pHandle, d, levels);
}

FK_EXPORT CUresult cuArrayDestroy(CUarray hArray)
{
    FK_ENTER("cuArrayDestroy");
    return destroy(hArray);
}

FK_EXPORT CUresult cuMipmappedArrayDestroy(CUmipmappedArray hMipmappedArray)
{
    FK_ENTER("cuMipmappedArrayDestroy");
    return destroy(hMipmappedArray);
}

FK_EXPORT CUresult cuArrayGetMemoryRequirements(CUDA_ARRAY_MEMORY_REQUIREMENTS *req,
                                                CUarray array, CUdevice device)
{
    FK_ENTER("cuArrayGetMemoryRequirements");
    return requirements(req, array, device);
}

FK_EXPORT CUresult cuMipmappedArrayGetMemoryRequirements(CUDA_ARRAY_MEMORY_REQUIREMENTS *req,
                                                         CUmipmappedArray mipmap,
                                                         CUdevice device)
{
    FK_ENTER("cuMipmappedArrayGetMemoryRequirements");
    return requirements(req, mipmap, device);
}
