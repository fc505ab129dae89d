/*
 * fake_strided.c: the test driver's 2D and 3D copies, peer copies, 16-bit
 * and 2D memsets.
 *
 * Like every other piece of work they run on the stream's thread, so a
 * caller that does not wait sees them later. A copy is described by its
 * rows: each row is `width` bytes, rows `pitch` apart, slices `slice`
 * apart. Arrays are not modelled: a copy naming one is refused with
 * CUDA_ERROR_NOT_SUPPORTED, as a driver without array support would.
 */
#include "fake_internal.h"

#include <stdlib.h>
#include <string.h>

struct strided {
    uint64_t dst, src; /* src unused by a memset */
    uint64_t dpitch, spitch, dslice, sslice;
    uint64_t width, height, depth;
    uint32_t value, elem; /* elem 0: a copy */
};

static void run_strided(struct fk_op *op)
{
    const struct strided *t = op->blob;
    for (uint64_t z = 0; z < t->depth; z++) {
        for (uint64_t y = 0; y < t->height; y++) {
            unsigned char *d = (unsigned char *)(uintptr_t)(t->dst + z * t->dslice + y * t->dpitch);
            if (t->elem == 0) {
                memmove(d, (const void *)(uintptr_t)(t->src + z * t->sslice + y * t->spitch),
                        t->width);
            } else if (t->elem == 1) {
                memset(d, (int)t->value, t->width);
            } else {
                for (uint64_t i = 0; i < t->width; i++)
                    memcpy(d + i * t->elem, &t->value, t->elem);
            }
        }
    }
}

static CUresult queue(const struct strided *t, CUstream s, bool wait)
{
    if (t->width == 0 || t->height == 0 || t->depth == 0)
        return CUDA_SUCCESS;
    if (t->dst == 0 || (t->elem == 0 && t->src == 0))
        return CUDA_ERROR_INVALID_VALUE;
    struct fk_op *op = fk_op_new(run_strided);
    struct strided *copy = malloc(sizeof *copy);
    if (op == NULL || copy == NULL) {
        free(op);
        free(copy);
        return CUDA_ERROR_OUT_OF_MEMORY;
    }
    *copy = *t;
    op->blob = copy;
    op->blob_size = sizeof *copy;
    return fk_queue_op(s, op, wait);
}

/* The address of one side of a copy, or 0 for an array. */
static uint64_t side(CUmemorytype type, const void *host, CUdeviceptr dev)
{
    switch (type) {
    case CU_MEMORYTYPE_HOST:
        return (uint64_t)(uintptr_t)host;
    case CU_MEMORYTYPE_DEVICE:
    case CU_MEMORYTYPE_UNIFIED:
        return dev;
    default:
        return 0;
    }
}

static CUresult copy2d(const CUDA_MEMCPY2D *p, CUstream s, bool wait)
{
    if (p == NULL)
        return CUDA_ERROR_INVALID_VALUE;
    if (p->srcMemoryType == CU_MEMORYTYPE_ARRAY || p->dstMemoryType == CU_MEMORYTYPE_ARRAY)
        return CUDA_ERROR_NOT_SUPPORTED;
    if ((p->srcPitch && p->srcPitch < p->WidthInBytes) ||
        (p->dstPitch && p->dstPitch < p->WidthInBytes))
        return CUDA_ERROR_INVALID_VALUE;
    uint64_t src = side(p->srcMemoryType, p->srcHost, p->srcDevice);
    uint64_t dst = side(p->dstMemoryType, p->dstHost, p->dstDevice);
    struct strided t = {
        .src = src ? src + p->srcY * p->srcPitch + p->srcXInBytes : 0,
        .dst = dst ? dst + p->dstY * p->dstPitch + p->dstXInBytes : 0,
        .spitch = p->srcPitch, .dpitch = p->dstPitch,
        .width = p->WidthInBytes, .height = p->Height, .depth = 1};
    return queue(&t, s, wait);
}

static CUresult copy3d(const CUDA_MEMCPY3D *p, CUstream s, bool wait)
{
    if (p == NULL)
        return CUDA_ERROR_INVALID_VALUE;
    if (p->srcMemoryType == CU_MEMORYTYPE_ARRAY || p->dstMemoryType == CU_MEMORYTYPE_ARRAY)
        return CUDA_ERROR_NOT_SUPPORTED;
    uint64_t sslice = p->srcPitch * p->srcHeight, dslice = p->dstPitch * p->dstHeight;
    uint64_t src = side(p->srcMemoryType, p->srcHost, p->srcDevice);
    uint64_t dst = side(p->dstMemoryType, p->dstHost, p->dstDevice);
    struct strided t = {
        .src = src ? src + p->srcZ * sslice + p->srcY * p->srcPitch + p->srcXInBytes : 0,
        .dst = dst ? dst + p->dstZ * dslice + p->dstY * p->dstPitch + p->dstXInBytes : 0,
        .spitch = p->srcPitch, .dpitch = p->dstPitch, .sslice = sslice, .dslice = dslice,
        .width = p->WidthInBytes, .height = p->Height, .depth = p->Depth};
    return queue(&t, s, wait);
}

static CUresult set2d(CUdeviceptr d, size_t pitch, uint32_t v, uint32_t elem, size_t w,
                      size_t h, CUstream s, bool wait)
{
    struct strided t = {.dst = d, .dpitch = pitch, .value = v, .elem = elem,
                        .width = w, .height = h, .depth = 1};
    return queue(&t, s, wait);
}

static CUresult peer(CUdeviceptr d, CUdeviceptr src, size_t n, CUstream s, bool wait)
{
    struct strided t = {.dst = d, .src = src, .width = n, .height = 1, .depth = 1};
    return queue(&t, s, wait);
}

#define FK_STRIDED_SYNC(sfx)                                                                   \
    FK_EXPORT CUresult cuMemcpy2D_v2##sfx(const CUDA_MEMCPY2D *p)                              \
    { FK_ENTER("cuMemcpy2D_v2" #sfx); return copy2d(p, NULL, true); }                          \
    FK_EXPORT CUresult cuMemcpy2DUnaligned_v2##sfx(const CUDA_MEMCPY2D *p)                     \
    { FK_ENTER("cuMemcpy2DUnaligned_v2" #sfx); return copy2d(p, NULL, true); }                 \
    FK_EXPORT CUresult cuMemcpy3D_v2##sfx(const CUDA_MEMCPY3D *p)                              \
    { FK_ENTER("cuMemcpy3D_v2" #sfx); return copy3d(p, NULL, true); }                          \
    FK_EXPORT CUresult cuMemcpyPeer##sfx(CUdeviceptr d, CUcontext dc, CUdeviceptr s,           \
                                         CUcontext sc, size_t n)                               \
    { FK_ENTER("cuMemcpyPeer" #sfx); (void)dc; (void)sc; return peer(d, s, n, NULL, true); }   \
    FK_EXPORT CUresult cuMemsetD16_v2##sfx(CUdeviceptr d, unsigned short v, size_t n)          \
    { FK_ENTER("cuMemsetD16_v2" #sfx); return set2d(d, 0, v, 2, n, 1, NULL, true); }           \
    FK_EXPORT CUresult cuMemsetD2D8_v2##sfx(CUdeviceptr d, size_t p, unsigned char v,          \
                                            size_t w, size_t h)                                \
    { FK_ENTER("cuMemsetD2D8_v2" #sfx); return set2d(d, p, v, 1, w, h, NULL, true); }          \
    FK_EXPORT CUresult cuMemsetD2D16_v2##sfx(CUdeviceptr d, size_t p, unsigned short v,        \
                                             size_t w, size_t h)                               \
    { FK_ENTER("cuMemsetD2D16_v2" #sfx); return set2d(d, p, v, 2, w, h, NULL, true); }         \
    FK_EXPORT CUresult cuMemsetD2D32_v2##sfx(CUdeviceptr d, size_t p, unsigned int v,          \
                                             size_t w, size_t h)                               \
    { FK_ENTER("cuMemsetD2D32_v2" #sfx); return set2d(d, p, v, 4, w, h, NULL, true); }
#define FK_STRIDED_ASYNC(sfx)                                                                  \
    FK_EXPORT CUresult cuMemcpy2DAsync_v2##sfx(const CUDA_MEMCPY2D *p, CUstream s)             \
    { FK_ENTER("cuMemcpy2DAsync_v2" #sfx); return copy2d(p, s, false); }                       \
    FK_EXPORT CUresult cuMemcpy3DAsync_v2##sfx(const CUDA_MEMCPY3D *p, CUstream s)             \
    { FK_ENTER("cuMemcpy3DAsync_v2" #sfx); return copy3d(p, s, false); }                       \
    FK_EXPORT CUresult cuMemcpyPeerAsync##sfx(CUdeviceptr d, CUcontext dc, CUdeviceptr src,    \
                                              CUcontext sc, size_t n, CUstream s)              \
    { FK_ENTER("cuMemcpyPeerAsync" #sfx); (void)dc; (void)sc; return peer(d, src, n, s, false); } \
    FK_EXPORT CUresult cuMemsetD16Async##sfx(CUdeviceptr d, unsigned short v, size_t n,        \
                                             CUstream s)                                       \
    { FK_ENTER("cuMemsetD16Async" #sfx); return set2d(d, 0, v, 2, n, 1, s, false); }           \
    FK_EXPORT CUresult cuMemsetD2D8Async##sfx(CUdeviceptr d, size_t p, unsigned char v,        \
                                              size_t w, size_t h, CUstream s)                  \
    { FK_ENTER("cuMemsetD2D8Async" #sfx); return set2d(d, p, v, 1, w, h, s, false); }          \
    FK_EXPORT CUresult cuMemsetD2D16Async##sfx(CUdeviceptr d, size_t p, unsigned short v,      \
                                               size_t w, size_t h, CUstream s)                 \
    { FK_ENTER("cuMemsetD2D16Async" #sfx); return set2d(d, p, v, 2, w, h, s, false); }         \
    FK_EXPORT CUresult cuMemsetD2D32Async##sfx(CUdeviceptr d, size_t p, unsigned int v,        \
                                               size_t w, size_t h, CUstream s)                 \
    { FK_ENTER("cuMemsetD2D32Async" #sfx); return set2d(d, p, v, 4, w, h, s, false); }
FK_STRIDED_SYNC()
FK_STRIDED_SYNC(_ptds)
FK_STRIDED_ASYNC()
FK_STRIDED_ASYNC(_ptsz)
