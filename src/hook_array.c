/*
 * hook_array.c: CUDA arrays and mipmapped arrays (textures, surfaces,
 * cudaMallocArray, cudaMalloc3DArray, cudaMallocMipmappedArray).
 *
 * An array is device memory with no address the program sees, so it is
 * kept in the handle table (VS_HANDLE_ARRAY), counted in
 * devices[].allocated and devices[].arrays, and charged against the VRAM
 * limit from creation to destruction.
 *
 * Its size is the driver's: its layout is opaque, and the driver reports
 * it (cuArrayGetMemoryRequirements) only for an array created with
 * CUDA_ARRAY3D_DEFERRED_MAPPING, which holds no memory of its own. So
 * before each creation vramshim creates such a twin of the same shape,
 * reads its size and destroys it. Where the driver cannot tell (before
 * CUDA 11.6, or a shape it refuses deferred), the estimate is every
 * level's elements times their bytes, rounded up to 2 MiB. Sparse and
 * deferred-mapping arrays hold nothing until cuMemMapArrayAsync maps a
 * tile pool into them, and a tile pool is a cuMemCreate handle, charged
 * there: they are passed through.
 *
 * The old ABI's cuArrayCreate / cuArray3DCreate (32-bit descriptors) are
 * charged the same way, by the shape they describe.
 *
 * Creation and destruction hold array_order across the driver call and
 * the bookkeeping, as the VMM hooks do: a handle the driver frees may come
 * back from the next creation at once.
 */
#include "hooks.h"

#include <pthread.h>

#define ESTIMATE_ROUND (2ULL << 20)

static pthread_mutex_t array_order = PTHREAD_MUTEX_INITIALIZER;

static uint64_t format_bytes(CUarray_format f)
{
    switch (f) {
    case CU_AD_FORMAT_UNSIGNED_INT8:
    case CU_AD_FORMAT_SIGNED_INT8:
        return 1;
    case CU_AD_FORMAT_UNSIGNED_INT16:
    case CU_AD_FORMAT_SIGNED_INT16:
    case CU_AD_FORMAT_HALF:
        return 2;
    default: /* 32-bit formats; packed and compressed ones are no bigger */
        return 4;
    }
}

static uint64_t half(uint64_t v) { return v > 1 ? v / 2 : 1; }

/* Every level's elements times their bytes, rounded up; 0 on overflow. */
static uint64_t estimate(const CUDA_ARRAY3D_DESCRIPTOR *d, unsigned levels)
{
    bool layered = d->Flags & CUDA_ARRAY3D_LAYERED;
    uint64_t w = d->Width ? d->Width : 1, h = d->Height ? d->Height : 1;
    uint64_t depth = d->Depth ? d->Depth : 1;
    uint64_t layers = layered ? depth : 1, z = layered ? 1 : depth;
    uint64_t elem = format_bytes(d->Format) * (d->NumChannels ? d->NumChannels : 1);
    uint64_t total = 0, level;
    for (unsigned i = 0; i < (levels ? levels : 1); i++) {
        if (__builtin_mul_overflow(w * h, z, &level) ||
            __builtin_mul_overflow(level, elem * layers, &level) ||
            __builtin_add_overflow(total, level, &total))
            return 0;
        w = half(w);
        h = half(h);
        z = half(z);
    }
    return (total + ESTIMATE_ROUND - 1) / ESTIMATE_ROUND * ESTIMATE_ROUND;
}

/* The size the driver gives a deferred-mapping twin of this shape, or 0. */
static uint64_t driver_size(const CUDA_ARRAY3D_DESCRIPTOR *d, unsigned levels, bool mipmapped,
                            int dev)
{
    CUDA_ARRAY3D_DESCRIPTOR twin = *d;
    twin.Flags |= CUDA_ARRAY3D_DEFERRED_MAPPING;
    CUDA_ARRAY_MEMORY_REQUIREMENTS req = {0};
    CUresult rc = CUDA_ERROR_NOT_SUPPORTED;
    if (mipmapped && vs_real.cuMipmappedArrayGetMemoryRequirements) {
        CUmipmappedArray m;
        if (vs_real.cuMipmappedArrayCreate(&m, &twin, levels) == CUDA_SUCCESS) {
            rc = vs_real.cuMipmappedArrayGetMemoryRequirements(&req, m, dev);
            vs_real.cuMipmappedArrayDestroy(m);
        }
    } else if (!mipmapped && vs_real.cuArrayGetMemoryRequirements && vs_real.cuArray3DCreate_v2) {
        CUarray a;
        if (vs_real.cuArray3DCreate_v2(&a, &twin) == CUDA_SUCCESS) {
            rc = vs_real.cuArrayGetMemoryRequirements(&req, a, dev);
            vs_real.cuArrayDestroy(a);
        }
    }
    return rc == CUDA_SUCCESS ? req.size : 0;
}

/* What an array of this shape will hold, charged before it is made. */
static uint64_t array_bytes(const CUDA_ARRAY3D_DESCRIPTOR *d, unsigned levels, bool mipmapped,
                            int dev)
{
    if (d->Flags & (CUDA_ARRAY3D_SPARSE | CUDA_ARRAY3D_DEFERRED_MAPPING))
        return 0;
    uint64_t bytes = dev >= 0 ? driver_size(d, levels, mipmapped, dev) : 0;
    return bytes ? bytes : estimate(d, levels);
}

static void track(uint64_t handle, struct vs_charge *ch)
{
    struct vs_handle_info info = {
        .space = VS_HANDLE_ARRAY,
        .size = ch->bytes,
        .device = ch->dev,
        .owner = ch->owner,
        .charge = *ch,
    };
    if (vs_handle_add(handle, &info) != 0) {
        vs_error("out of memory for the registry: an array of %llu bytes is not "
                 "tracked or counted against the limits",
                 (unsigned long long)ch->bytes);
        vs_budget_refund(ch);
    }
}

/* Create through `create` (which fills *out) with `bytes` charged. */
#define CREATE_CHARGED(call_name, bytes, create, out)                          \
    do {                                                                       \
        struct vs_charge ch_;                                                  \
        int dev_ = vs_current_device();                                        \
        CUresult rc_ = vs_admit_device(call_name, dev_, (bytes), &ch_);        \
        if (rc_ != CUDA_SUCCESS)                                               \
            return rc_;                                                        \
        pthread_mutex_lock(&array_order);                                      \
        rc_ = (create);                                                        \
        vs_budget_settle(&ch_, rc_ == CUDA_SUCCESS);                           \
        if (rc_ == CUDA_SUCCESS && ch_.bytes)                                  \
            track((uint64_t)(uintptr_t)*(out), &ch_);                          \
        pthread_mutex_unlock(&array_order);                                    \
        if (rc_ == CUDA_ERROR_OUT_OF_MEMORY)                                   \
            vs_registry_count_oom();                                           \
        return rc_;                                                            \
    } while (0)

CUresult vs_hook_cuArray3DCreate_v2(CUarray *pHandle, const CUDA_ARRAY3D_DESCRIPTOR *desc)
{
    if (pHandle == NULL || desc == NULL)
        return vs_real.cuArray3DCreate_v2(pHandle, desc);
    uint64_t bytes = array_bytes(desc, 1, false, vs_current_device());
    CREATE_CHARGED("cuArray3DCreate", bytes, vs_real.cuArray3DCreate_v2(pHandle, desc),
                   pHandle);
}

CUresult vs_hook_cuArrayCreate_v2(CUarray *pHandle, const CUDA_ARRAY_DESCRIPTOR *desc)
{
    if (pHandle == NULL || desc == NULL)
        return vs_real.cuArrayCreate_v2(pHandle, desc);
    CUDA_ARRAY3D_DESCRIPTOR d3 = {.Width = desc->Width, .Height = desc->Height,
                                  .Format = desc->Format, .NumChannels = desc->NumChannels};
    uint64_t bytes = array_bytes(&d3, 1, false, vs_current_device());
    CREATE_CHARGED("cuArrayCreate", bytes, vs_real.cuArrayCreate_v2(pHandle, desc), pHandle);
}

/* The old ABI's names take descriptors with 32-bit widths (cuda.h's
 * CUDA_ARRAY_DESCRIPTOR_v1, CUDA_ARRAY3D_DESCRIPTOR_v1): the same shape,
 * charged as the _v2 twin would be, created through the old entry. */
CUresult vs_hook_cuArrayCreate(CUarray *pHandle, const CUDA_ARRAY_DESCRIPTOR_v1 *desc)
{
    if (pHandle == NULL || desc == NULL)
        return vs_real.cuArrayCreate(pHandle, desc);
    CUDA_ARRAY3D_DESCRIPTOR d3 = {.Width = desc->Width, .Height = desc->Height,
                                  .Format = desc->Format, .NumChannels = desc->NumChannels};
    uint64_t bytes = array_bytes(&d3, 1, false, vs_current_device());
    CREATE_CHARGED("cuArrayCreate", bytes, vs_real.cuArrayCreate(pHandle, desc), pHandle);
}

CUresult vs_hook_cuArray3DCreate(CUarray *pHandle, const CUDA_ARRAY3D_DESCRIPTOR_v1 *desc)
{
    if (pHandle == NULL || desc == NULL)
        return vs_real.cuArray3DCreate(pHandle, desc);
    CUDA_ARRAY3D_DESCRIPTOR d3 = {.Width = desc->Width, .Height = desc->Height,
                                  .Depth = desc->Depth, .Format = desc->Format,
                                  .NumChannels = desc->NumChannels, .Flags = desc->Flags};
    uint64_t bytes = array_bytes(&d3, 1, false, vs_current_device());
    CREATE_CHARGED("cuArray3DCreate", bytes, vs_real.cuArray3DCreate(pHandle, desc), pHandle);
}

CUresult vs_hook_cuMipmappedArrayCreate(CUmipmappedArray *pHandle,
                                        const CUDA_ARRAY3D_DESCRIPTOR *desc,
                                        unsigned int numMipmapLevels)
{
    if (pHandle == NULL || desc == NULL)
        return vs_real.cuMipmappedArrayCreate(pHandle, desc, numMipmapLevels);
    uint64_t bytes = array_bytes(desc, numMipmapLevels, true, vs_current_device());
    CREATE_CHARGED("cuMipmappedArrayCreate", bytes,
                   vs_real.cuMipmappedArrayCreate(pHandle, desc, numMipmapLevels), pHandle);
}

/* Its memory is free once the driver has destroyed it. */
#define DESTROY(call, handle)                                                  \
    do {                                                                       \
        pthread_mutex_lock(&array_order);                                      \
        CUresult rc_ = (call);                                                 \
        if (rc_ == CUDA_SUCCESS)                                               \
            vs_handle_release((uint64_t)(uintptr_t)(handle), VS_HANDLE_ARRAY); \
        pthread_mutex_unlock(&array_order);                                    \
        return rc_;                                                            \
    } while (0)

CUresult vs_hook_cuArrayDestroy(CUarray hArray)
{
    DESTROY(vs_real.cuArrayDestroy(hArray), hArray);
}

CUresult vs_hook_cuMipmappedArrayDestroy(CUmipmappedArray hMipmappedArray)
{
    DESTROY(vs_real.cuMipmappedArrayDestroy(hMipmappedArray), hMipmappedArray);
}
