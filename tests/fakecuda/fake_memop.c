/*
 * fake_memop.c: stream memory operations of the test driver: writes of a
 * 32- or 64-bit value to device memory, and waits until a value there
 * meets a condition, queued on a stream like any other work (driver API
 * reference, Stream Memory Operations: cuStreamWriteValue32_v2,
 * cuStreamWaitValue32_v2, their 64-bit forms and cuStreamBatchMemOp_v2,
 * versions 11.7 and later). A wait holds its stream, and only its stream,
 * until another stream or the host writes the value; the test driver polls
 * the location from the stream's thread.
 */
#include "fake_internal.h"

#include <sched.h>
#include <string.h>
#include <time.h>

static bool wait_done(uint64_t now, uint64_t value, unsigned flags, bool wide)
{
    if (!wide) {
        now = (uint32_t)now;
        value = (uint32_t)value;
    }
    switch (flags & 0xf) {
    case CU_STREAM_WAIT_VALUE_GEQ:
        return wide ? (int64_t)(now - value) >= 0 : (int32_t)(uint32_t)(now - value) >= 0;
    case CU_STREAM_WAIT_VALUE_EQ:
        return now == value;
    case CU_STREAM_WAIT_VALUE_AND:
        return (now & value) != 0;
    case CU_STREAM_WAIT_VALUE_NOR:
        return (wide ? ~(now | value) : (uint32_t) ~(now | value)) != 0;
    default:
        return true;
    }
}

/* op: a = address, b = value, c = flags, d = 1 for 64 bits */
static void run_write(struct fk_op *op)
{
    if (op->d)
        __atomic_store_n((uint64_t *)(uintptr_t)op->a, op->b, __ATOMIC_SEQ_CST);
    else
        __atomic_store_n((uint32_t *)(uintptr_t)op->a, (uint32_t)op->b, __ATOMIC_SEQ_CST);
}

static void run_wait(struct fk_op *op)
{
    struct timespec nap = {0, 100000}; /* 0.1 ms between looks */
    for (;;) {
        uint64_t now = op->d ? __atomic_load_n((uint64_t *)(uintptr_t)op->a, __ATOMIC_SEQ_CST)
                             : __atomic_load_n((uint32_t *)(uintptr_t)op->a, __ATOMIC_SEQ_CST);
        if (wait_done(now, op->b, (unsigned)op->c, op->d))
            return;
        nanosleep(&nap, NULL);
    }
}

static CUresult memop(CUstream s, CUdeviceptr addr, uint64_t value, unsigned flags, bool wide,
                      bool wait)
{
    if (addr == 0 || addr % (wide ? 8 : 4) != 0)
        return CUDA_ERROR_INVALID_VALUE;
    struct fk_op *op = fk_op_new(wait ? run_wait : run_write);
    if (op == NULL)
        return CUDA_ERROR_OUT_OF_MEMORY;
    op->a = addr;
    op->b = value;
    op->c = flags;
    op->d = wide;
    return fk_queue_op(s, op, false);
}

static CUresult batch(CUstream s, unsigned count, CUstreamBatchMemOpParams *p, unsigned flags)
{
    (void)flags;
    if (count > 0 && p == NULL)
        return CUDA_ERROR_INVALID_VALUE;
    for (unsigned i = 0; i < count; i++) {
        CUresult rc = CUDA_SUCCESS;
        switch (p[i].operation) {
        case CU_STREAM_MEM_OP_WRITE_VALUE_32:
        case CU_STREAM_MEM_OP_WRITE_VALUE_64:
            rc = memop(s, p[i].writeValue.address, p[i].writeValue.value64,
                       p[i].writeValue.flags,
                       p[i].operation == CU_STREAM_MEM_OP_WRITE_VALUE_64, false);
            break;
        case CU_STREAM_MEM_OP_WAIT_VALUE_32:
        case CU_STREAM_MEM_OP_WAIT_VALUE_64:
            rc = memop(s, p[i].waitValue.address, p[i].waitValue.value64,
                       p[i].waitValue.flags,
                       p[i].operation == CU_STREAM_MEM_OP_WAIT_VALUE_64, true);
            break;
        default: /* barriers and remote-write flushes: nothing to do here */
            break;
        }
        if (rc != CUDA_SUCCESS)
            return rc;
    }
    return CUDA_SUCCESS;
}

/* One write or wait entry point: `value_t` is the width its prototype takes. */
#define FK_MEMOP_ENTRY(name, suffix, value_t, wide, wait)                                   \
    FK_EXPORT CUresult name##suffix(CUstream s, CUdeviceptr addr, value_t v, unsigned f) \
    {                                                                                      \
        FK_ENTER(#name #suffix);                                                           \
        return memop(s, addr, v, f, wide, wait);                                           \
    }

#define FK_MEMOP_FAMILY(suffix)                                                   \
    FK_MEMOP_ENTRY(cuStreamWriteValue32_v2, suffix, cuuint32_t, false, false)     \
    FK_MEMOP_ENTRY(cuStreamWriteValue64_v2, suffix, cuuint64_t, true, false)      \
    FK_MEMOP_ENTRY(cuStreamWaitValue32_v2, suffix, cuuint32_t, false, true)       \
    FK_MEMOP_ENTRY(cuStreamWaitValue64_v2, suffix, cuuint64_t, true, true)        \
    FK_EXPORT CUresult cuStreamBatchMemOp_v2##suffix(CUstream s, unsigned count,  \
                                                     CUstreamBatchMemOpParams *p, \
                                                     unsigned f)                  \
    {                                                                             \
        FK_ENTER("cuStreamBatchMemOp_v2" #suffix);                                \
        return batch(s, count, p, f);                                             \
    }

FK_MEMOP_FAMILY()
FK_MEMOP_FAMILY(_ptsz)
