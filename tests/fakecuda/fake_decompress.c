/*
 * fake_decompress.c: batch decompression in the test driver
 * (cuMemBatchDecompressAsync and its per-thread-stream form, CUDA 12.8).
 *
 * From cuda.h: the batch is "a single unit of work and processed according
 * to stream semantics"; each operation reads srcNumBytes at src, writes
 * dst, and records the bytes written "as a 32-bit unsigned integer in the
 * memory at" dstActBytes; src, dst and dstActBytes "must all be accessible
 * from the device associated with the context where stream was created"
 * and be memory the hardware decompressor can use (cuMemAlloc,
 * cuMemCreate with CU_MEM_CREATE_USAGE_HW_DECOMPRESS, a pool made for it);
 * the padding "must be zeroed"; flags
 * "Must be 0"; errorIndex names the operation an error belongs to,
 * SIZE_MAX for the call as a whole.
 *
 * The test driver's compressed format is the identity: decompressing
 * copies srcNumBytes bytes to dst and records srcNumBytes. Every algorithm
 * reads it (no test depends on a real codec; what vramshim must get right
 * is where the bytes land). Each range must be memory the stream's device
 * reaches, through an allocation or VMM mappings end to end, and every
 * byte of it memory made for the decompressor (fk_hw_decompress_range: a
 * cuMemAlloc, a handle or a pool created with the usage flag); otherwise
 * CUDA_ERROR_INVALID_VALUE, the operation's index in errorIndex (the
 * reference names no code for it; INVALID_VALUE is the driver's for an
 * argument it cannot use).
 */
#include "fake_internal.h"

#include <stdlib.h>
#include <string.h>

static void run_decompress(struct fk_op *op)
{
    const CUmemDecompressParams *p = op->blob;
    for (uint64_t i = 0; i < op->a; i++) {
        memmove(p[i].dst, p[i].src, p[i].srcNumBytes);
        __atomic_store_n(p[i].dstActBytes, (cuuint32_t)p[i].srcNumBytes, __ATOMIC_SEQ_CST);
    }
}

static bool zeroed(const unsigned char *b, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (b[i])
            return false;
    return true;
}

/* Device memory the stream's context reaches and the decompressor can
 * use, n bytes of it. */
static bool usable(struct fk_ctx *c, const void *p, uint64_t n)
{
    uint64_t a = (uintptr_t)p;
    return a != 0 && fk_device_range(a, n) && (c == NULL || fk_reachable(c, a)) &&
           fk_hw_decompress_range(a, n);
}

static CUresult decompress(CUmemDecompressParams *p, size_t count, unsigned flags,
                           size_t *error_index, CUstream s)
{
    if (error_index)
        *error_index = SIZE_MAX;
    if (p == NULL || count == 0 || flags != 0)
        return CUDA_ERROR_INVALID_VALUE;
    struct fk_stream *st = fk_stream_of(s);
    struct fk_ctx *c = st ? fk_stream_ctx(st) : NULL;
    for (size_t i = 0; i < count; i++) {
        const CUmemDecompressParams *o = &p[i];
        bool algo = o->algo == CU_MEM_DECOMPRESS_ALGORITHM_DEFLATE ||
                    o->algo == CU_MEM_DECOMPRESS_ALGORITHM_SNAPPY ||
                    o->algo == CU_MEM_DECOMPRESS_ALGORITHM_LZ4;
        uint64_t out = o->srcNumBytes; /* the identity format's output */
        if (!algo || o->srcNumBytes == 0 || out > UINT32_MAX ||
            !zeroed(o->padding, sizeof o->padding) || !usable(c, o->src, o->srcNumBytes) ||
            !usable(c, o->dst, out) ||
            !usable(c, o->dstActBytes, sizeof(cuuint32_t))) {
            if (error_index)
                *error_index = i;
            return CUDA_ERROR_INVALID_VALUE;
        }
    }
    struct fk_op *op = fk_op_new(run_decompress);
    void *copy = op ? malloc(count * sizeof *p) : NULL;
    if (copy == NULL) {
        free(op);
        return CUDA_ERROR_OUT_OF_MEMORY;
    }
    memcpy(copy, p, count * sizeof *p); /* the call's array may go once it returns */
    op->blob = copy;
    op->blob_size = count * sizeof *p;
    op->a = count;
    return fk_queue_op(s, op, false);
}

FK_EXPORT CUresult cuMemBatchDecompressAsync(CUmemDecompressParams *paramsArray, size_t count,
                                             unsigned int flags, size_t *errorIndex,
                                             CUstream stream)
{
    FK_ENTER("cuMemBatchDecompressAsync");
    return decompress(paramsArray, count, flags, errorIndex, stream);
}

FK_EXPORT CUresult cuMemBatchDecompressAsync_ptsz(CUmemDecompressParams *paramsArray,
                                                  size_t count, unsigned int flags,
                                                  size_t *errorIndex, CUstream stream)
{
    FK_ENTER("cuMemBatchDecompressAsync_ptsz");
    return decompress(paramsArray, count, flags, errorIndex, stream);
}
