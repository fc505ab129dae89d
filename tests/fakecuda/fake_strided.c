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

/* ---- 3D peer copies, batch copies, array copies --------------------------- */

/* cuMemcpy3DPeer: a 3D copy whose sides may live in different contexts
 * (CUDA Driver API, "Memory Management"); one address space here. */
static CUresult copy3d_peer(const CUDA_MEMCPY3D_PEER *p, CUstream s, bool wait)
{
    if (p == NULL)
        return CUDA_ERROR_INVALID_VALUE;
    CUDA_MEMCPY3D q = {
        .srcXInBytes = p->srcXInBytes, .srcY = p->srcY, .srcZ = p->srcZ,
        .srcMemoryType = p->srcMemoryType, .srcHost = p->srcHost, .srcDevice = p->srcDevice,
        .srcArray = p->srcArray, .srcPitch = p->srcPitch, .srcHeight = p->srcHeight,
        .dstXInBytes = p->dstXInBytes, .dstY = p->dstY, .dstZ = p->dstZ,
        .dstMemoryType = p->dstMemoryType, .dstHost = p->dstHost, .dstDevice = p->dstDevice,
        .dstArray = p->dstArray, .dstPitch = p->dstPitch, .dstHeight = p->dstHeight,
        .WidthInBytes = p->WidthInBytes, .Height = p->Height, .Depth = p->Depth};
    return copy3d(&q, s, wait);
}

/* cuMemcpyBatchAsync: "performs a batch of memory copies asynchronously",
 * copy i of sizes[i] bytes from srcs[i] to dsts[i], in stream order; the
 * attributes are hints (CUDA 12.8+ Driver API). */
static CUresult batch(CUdeviceptr *dsts, CUdeviceptr *srcs, size_t *sizes, size_t count,
                      size_t n_attrs, CUstream s)
{
    if (count == 0 || dsts == NULL || srcs == NULL || sizes == NULL || n_attrs == 0)
        return CUDA_ERROR_INVALID_VALUE;
    for (size_t i = 0; i < count; i++) {
        CUresult rc = peer(dsts[i], srcs[i], sizes[i], s, false);
        if (rc != CUDA_SUCCESS)
            return rc;
    }
    return CUDA_SUCCESS;
}

/* cuMemcpy3DBatchAsync: pointer operands only (arrays are not modelled);
 * a pointer operand's rows are rowLength elements apart and its layers
 * layerHeight rows (elements are bytes between two pointers). */
static CUresult batch3d(size_t n, CUDA_MEMCPY3D_BATCH_OP *ops, CUstream s)
{
    if (n == 0 || ops == NULL)
        return CUDA_ERROR_INVALID_VALUE;
    for (size_t i = 0; i < n; i++) {
        const CUmemcpy3DOperand *a = &ops[i].src, *b = &ops[i].dst;
        if (a->type != CU_MEMCPY_OPERAND_TYPE_POINTER || b->type != CU_MEMCPY_OPERAND_TYPE_POINTER)
            return CUDA_ERROR_NOT_SUPPORTED;
        const CUextent3D *e = &ops[i].extent;
        uint64_t srow = a->op.ptr.rowLength ? a->op.ptr.rowLength : e->width;
        uint64_t drow = b->op.ptr.rowLength ? b->op.ptr.rowLength : e->width;
        uint64_t slayer = a->op.ptr.layerHeight ? a->op.ptr.layerHeight : e->height;
        uint64_t dlayer = b->op.ptr.layerHeight ? b->op.ptr.layerHeight : e->height;
        struct strided t = {.src = a->op.ptr.ptr, .dst = b->op.ptr.ptr, .spitch = srow,
                            .dpitch = drow, .sslice = srow * slayer, .dslice = drow * dlayer,
                            .width = e->width, .height = e->height, .depth = e->depth};
        CUresult rc = queue(&t, s, false);
        if (rc != CUDA_SUCCESS)
            return rc;
    }
    return CUDA_SUCCESS;
}

#define FK_BATCH(sfx, ptds)                                                                    \
    FK_EXPORT CUresult cuMemcpy3DPeer##ptds(const CUDA_MEMCPY3D_PEER *p)                       \
    { FK_ENTER("cuMemcpy3DPeer" #ptds); return copy3d_peer(p, NULL, true); }                   \
    FK_EXPORT CUresult cuMemcpy3DPeerAsync##sfx(const CUDA_MEMCPY3D_PEER *p, CUstream s)       \
    { FK_ENTER("cuMemcpy3DPeerAsync" #sfx); return copy3d_peer(p, s, false); }                 \
    FK_EXPORT CUresult cuMemcpyBatchAsync_v2##sfx(CUdeviceptr *d, CUdeviceptr *s_, size_t *n,  \
                                                  size_t count, CUmemcpyAttributes *attrs,     \
                                                  size_t *idxs, size_t n_attrs, CUstream s)    \
    {                                                                                          \
        FK_ENTER("cuMemcpyBatchAsync_v2" #sfx);                                                \
        (void)attrs;                                                                           \
        (void)idxs;                                                                            \
        return batch(d, s_, n, count, n_attrs, s);                                             \
    }                                                                                          \
    FK_EXPORT CUresult cuMemcpy3DBatchAsync_v2##sfx(size_t n, CUDA_MEMCPY3D_BATCH_OP *ops,     \
                                                    unsigned long long flags, CUstream s)      \
    { FK_ENTER("cuMemcpy3DBatchAsync_v2" #sfx); (void)flags; return batch3d(n, ops, s); }      \
    /* arrays are not modelled: refused as by a driver without them */                        \
    FK_EXPORT CUresult cuMemcpyAtoD_v2##ptds(CUdeviceptr d, CUarray a, size_t off, size_t n)   \
    { FK_ENTER("cuMemcpyAtoD_v2" #ptds); (void)d; (void)a; (void)off; (void)n;                 \
      return CUDA_ERROR_NOT_SUPPORTED; }                                                       \
    FK_EXPORT CUresult cuMemcpyDtoA_v2##ptds(CUarray a, size_t off, CUdeviceptr d, size_t n)   \
    { FK_ENTER("cuMemcpyDtoA_v2" #ptds); (void)d; (void)a; (void)off; (void)n;                 \
      return CUDA_ERROR_NOT_SUPPORTED; }
FK_BATCH(, )
FK_BATCH(_ptsz, _ptds)
