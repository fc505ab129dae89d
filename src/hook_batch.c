/*
 * hook_batch.c: copies that name many ranges at once (the batch copies),
 * 3D copies between devices, and copies between arrays and device memory.
 *
 * The same contract as hook_copy.c: every device range a copy names is
 * touched (stamped, brought back if offloaded) before the driver is called
 * inside the move gate. Arrays are never backed by vramshim, so only the
 * device side of an array copy is touched. Where a range's exact extent
 * depends on an element size vramshim cannot see (a batch operand against
 * an array), it is touched generously: a buffer touched needlessly costs at
 * most an early bring-back, one missed would be reached while it moves.
 *
 * Batch decompression is a copy too: each operation reads srcNumBytes at
 * src and writes dst and the 32-bit count at dstActBytes, all of them
 * device memory the stream's device reaches (cuda.h). dstNumBytes is only
 * a hint and may be 0; then the rest of the buffer dst lies in is touched.
 */
#include "hooks.h"

static void touch_3d_peer(const CUDA_MEMCPY3D_PEER *p)
{
    VS_TOUCH_3D(p);
}

/* One operand of a 3D batch copy: a pointer operand's rows are rowLength
 * elements apart and its layers layerHeight rows apart (cuda.h). Elements
 * are bytes between two pointers; against an array they are the array's,
 * up to 16 bytes (four 32-bit channels). */
static void touch_operand(const CUmemcpy3DOperand *o, const CUextent3D *e, size_t elem)
{
    if (o->type != CU_MEMCPY_OPERAND_TYPE_POINTER || o->op.ptr.ptr == 0 || e->width == 0 ||
        e->height == 0 || e->depth == 0)
        return;
    size_t row = o->op.ptr.rowLength ? o->op.ptr.rowLength : e->width;
    size_t layer = o->op.ptr.layerHeight ? o->op.ptr.layerHeight : e->height;
    uint64_t elems = ((uint64_t)(e->depth - 1) * layer + (e->height - 1)) * row + e->width;
    vs_touch_range(o->op.ptr.ptr, 0, elems * elem);
}

#define PEER_3D(sfx)                                                                          \
    CUresult vs_hook_cuMemcpy3DPeer##sfx(const CUDA_MEMCPY3D_PEER *p)                        \
    {                                                                                        \
        touch_3d_peer(p);                                                                    \
        VS_GATED(vs_real.cuMemcpy3DPeer##sfx(p));                                            \
    }
#define PEER_3D_ASYNC(sfx)                                                                    \
    CUresult vs_hook_cuMemcpy3DPeerAsync##sfx(const CUDA_MEMCPY3D_PEER *p, CUstream s)       \
    {                                                                                        \
        touch_3d_peer(p);                                                                    \
        VS_GATED(vs_real.cuMemcpy3DPeerAsync##sfx(p, s));                                    \
    }
PEER_3D()
PEER_3D(_ptds)
PEER_3D_ASYNC()
PEER_3D_ASYNC(_ptsz)

#define BATCHES(sfx)                                                                          \
    CUresult vs_hook_cuMemcpyBatchAsync_v2##sfx(CUdeviceptr *dsts, CUdeviceptr *srcs,        \
                                                size_t *sizes, size_t count,                 \
                                                CUmemcpyAttributes *attrs, size_t *idxs,     \
                                                size_t n_attrs, CUstream s)                  \
    {                                                                                        \
        for (size_t i = 0; dsts && srcs && sizes && i < count; i++)                          \
            vs_touch_range(dsts[i], srcs[i], sizes[i]);                                      \
        VS_GATED(vs_real.cuMemcpyBatchAsync_v2##sfx(dsts, srcs, sizes, count, attrs, idxs,   \
                                                    n_attrs, s));                            \
    }                                                                                        \
    CUresult vs_hook_cuMemcpy3DBatchAsync_v2##sfx(size_t n, CUDA_MEMCPY3D_BATCH_OP *ops,     \
                                                  unsigned long long flags, CUstream s)      \
    {                                                                                        \
        for (size_t i = 0; ops && i < n; i++) {                                              \
            bool both = ops[i].src.type == CU_MEMCPY_OPERAND_TYPE_POINTER &&                 \
                        ops[i].dst.type == CU_MEMCPY_OPERAND_TYPE_POINTER;                   \
            touch_operand(&ops[i].src, &ops[i].extent, both ? 1 : 16);                       \
            touch_operand(&ops[i].dst, &ops[i].extent, both ? 1 : 16);                       \
        }                                                                                    \
        VS_GATED(vs_real.cuMemcpy3DBatchAsync_v2##sfx(n, ops, flags, s));                    \
    }
BATCHES()
BATCHES(_ptsz)

#define ARRAYS(sfx)                                                                           \
    CUresult vs_hook_cuMemcpyAtoD_v2##sfx(CUdeviceptr dst, CUarray src, size_t off, size_t n) \
    {                                                                                        \
        vs_touch_range(dst, 0, n);                                                           \
        VS_GATED(vs_real.cuMemcpyAtoD_v2##sfx(dst, src, off, n));                            \
    }                                                                                        \
    CUresult vs_hook_cuMemcpyDtoA_v2##sfx(CUarray dst, size_t off, CUdeviceptr src, size_t n) \
    {                                                                                        \
        vs_touch_range(src, 0, n);                                                           \
        VS_GATED(vs_real.cuMemcpyDtoA_v2##sfx(dst, off, src, n));                            \
    }
ARRAYS()
ARRAYS(_ptds)

/* How far a decompression may write from dst: the hint, or to the end of
 * the backed buffer holding dst (the output's length is the data's own). */
static size_t decompress_reach(uint64_t dst, size_t hint)
{
    struct vs_tier_view v;
    if (hint != 0 || !vs_tier_lookup(dst, &v))
        return hint;
    return v.base + v.size - dst;
}

static void touch_decompress(const CUmemDecompressParams *p, size_t count)
{
    for (size_t i = 0; p && i < count; i++) {
        uint64_t src = (uintptr_t)p[i].src, dst = (uintptr_t)p[i].dst,
                 act = (uintptr_t)p[i].dstActBytes;
        if (src)
            vs_touch_range(src, 0, p[i].srcNumBytes);
        if (dst)
            vs_touch_range(dst, 0, decompress_reach(dst, p[i].dstNumBytes));
        if (act)
            vs_touch_range(act, 0, sizeof(cuuint32_t));
    }
}

#define DECOMPRESS(sfx)                                                                       \
    CUresult vs_hook_cuMemBatchDecompressAsync##sfx(CUmemDecompressParams *p, size_t count,   \
                                                    unsigned int flags, size_t *error_index,  \
                                                    CUstream s)                               \
    {                                                                                        \
        touch_decompress(p, count);                                                          \
        VS_GATED(vs_real.cuMemBatchDecompressAsync##sfx(p, count, flags, error_index, s));   \
    }
DECOMPRESS()
DECOMPRESS(_ptsz)
