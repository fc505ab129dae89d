/*
 * hook_memop.c: stream memory operations, the writes and waits the device
 * makes to one 32- or 64-bit word (cuStreamWriteValue*, cuStreamWaitValue*,
 * cuStreamBatchMemOp). They reach device memory like a copy does, so each
 * touches the words it names (bringing an offloaded buffer back first) and
 * is queued inside the move gate: a write queued while a move copies its
 * chunk would otherwise land in the old backing and be lost.
 */
#include "hooks.h"

#define WORD_OPS(name, type, bytes)                                                  \
    CUresult vs_hook_##name(CUstream s, CUdeviceptr addr, type v, unsigned int f)    \
    {                                                                                \
        vs_touch_range(addr, 0, bytes);                                              \
        VS_GATED(vs_real.name(s, addr, v, f));                                       \
    }                                                                                \
    CUresult vs_hook_##name##_ptsz(CUstream s, CUdeviceptr addr, type v, unsigned int f) \
    {                                                                                \
        vs_touch_range(addr, 0, bytes);                                              \
        VS_GATED(vs_real.name##_ptsz(s, addr, v, f));                                \
    }

WORD_OPS(cuStreamWriteValue32_v2, cuuint32_t, 4)
WORD_OPS(cuStreamWriteValue64_v2, cuuint64_t, 8)
WORD_OPS(cuStreamWaitValue32_v2, cuuint32_t, 4)
WORD_OPS(cuStreamWaitValue64_v2, cuuint64_t, 8)

/* Every write and wait of a batch names one word; barriers and flushes
 * name none. */
static void touch_batch(unsigned int count, const CUstreamBatchMemOpParams *p)
{
    for (unsigned int i = 0; p && i < count; i++) {
        switch (p[i].operation) {
        case CU_STREAM_MEM_OP_WRITE_VALUE_32:
        case CU_STREAM_MEM_OP_WRITE_VALUE_64:
            vs_touch_range(p[i].writeValue.address, 0, 8);
            break;
        case CU_STREAM_MEM_OP_WAIT_VALUE_32:
        case CU_STREAM_MEM_OP_WAIT_VALUE_64:
            vs_touch_range(p[i].waitValue.address, 0, 8);
            break;
        default:
            break;
        }
    }
}

CUresult vs_hook_cuStreamBatchMemOp_v2(CUstream s, unsigned int count,
                                       CUstreamBatchMemOpParams *p, unsigned int f)
{
    touch_batch(count, p);
    VS_GATED(vs_real.cuStreamBatchMemOp_v2(s, count, p, f));
}

CUresult vs_hook_cuStreamBatchMemOp_v2_ptsz(CUstream s, unsigned int count,
                                            CUstreamBatchMemOpParams *p, unsigned int f)
{
    touch_batch(count, p);
    VS_GATED(vs_real.cuStreamBatchMemOp_v2_ptsz(s, count, p, f));
}
