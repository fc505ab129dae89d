/*
 * fake_ctxmem.c: device memory a program holds without allocating it:
 * contexts, their runtime limits, and modules' globals.
 *
 * What the real driver is documented or seen to do:
 *   - a context takes device memory of its own when it is created: the
 *     free figure cuMemGetInfo gives drops by hundreds of MiB at the first
 *     CUDA call of a process (nvidia-smi shows it per process), and
 *     cuCtxCreate can fail with CUDA_ERROR_OUT_OF_MEMORY. Its size is not
 *     documented; FAKECUDA_CTX_MEM sets it here (0 by default);
 *   - cuCtxSetLimit (driver API reference, Context Management): "The
 *     driver is free to modify the requested value ... The application can
 *     use cuCtxGetLimit() to find out exactly what the limit has been set
 *     to"; CU_LIMIT_STACK_SIZE is "the stack size in bytes of each GPU
 *     thread", and the device reserves it for every thread that can be
 *     resident (multiprocessors x resident threads each: the CUDA
 *     programming guide's note on stack size); CU_LIMIT_MALLOC_HEAP_SIZE
 *     and CU_LIMIT_PRINTF_FIFO_SIZE are sizes in bytes of buffers the
 *     context keeps on the device. Defaults: 1 KiB, 8 MiB, 1 MiB, part of
 *     the context's own reservation; raising one takes the difference
 *     from the device (CUDA_ERROR_OUT_OF_MEMORY when it does not fit),
 *     lowering one gives it back;
 *   - a module's __device__ and __constant__ variables live in device
 *     memory from cuModuleLoad* to cuModuleUnload (cuModuleGetGlobal
 *     returns their device address). A test image declares them as the
 *     text "fakecuda-module globals=<bytes>"; any other image has none.
 *     A library (cuLibraryLoad*) is loaded into contexts as they use it;
 *     the test driver charges its globals to the current context's device.
 */
#include "fake_internal.h"

#include <stdlib.h>
#include <string.h>

enum { LIM_STACK, LIM_FIFO, LIM_HEAP };
static const size_t limit_default[3] = {1024, 1ULL << 20, 8ULL << 20};
#define IMAGE_TAG "fakecuda-module globals="

static int limit_slot(CUlimit limit)
{
    switch (limit) {
    case CU_LIMIT_STACK_SIZE: return LIM_STACK;
    case CU_LIMIT_PRINTF_FIFO_SIZE: return LIM_FIFO;
    case CU_LIMIT_MALLOC_HEAP_SIZE: return LIM_HEAP;
    default: return -1;
    }
}

/* Device bytes that a limit's value holds beyond the context's own. */
static uint64_t limit_bytes(int slot, size_t value)
{
    uint64_t extra = value > limit_default[slot] ? value - limit_default[slot] : 0;
    return slot == LIM_STACK ? extra * FK_SM_COUNT * FK_THREADS_PER_SM : extra;
}

bool fk_ctx_mem_take(struct fk_ctx *c)
{
    for (int i = 0; i < 3; i++)
        c->limits[i] = limit_default[i];
    if (fk.ctx_mem && !fk_charge(c->device, fk.ctx_mem))
        return false;
    c->held = fk.ctx_mem;
    return true;
}

void fk_ctx_mem_give_back(struct fk_ctx *c)
{
    if (c->held)
        fk_uncharge(c->device, c->held);
    c->held = 0;
}

FK_EXPORT CUresult cuCtxSetLimit(CUlimit limit, size_t value)
{
    FK_ENTER("cuCtxSetLimit");
    FK_NEED_CTX(c);
    int slot = limit_slot(limit);
    if (slot < 0)
        return CUDA_ERROR_UNSUPPORTED_LIMIT;
    if (slot == LIM_STACK) /* rounded up to whole 16 bytes, as the driver may */
        value = (value + 15) & ~(size_t)15;
    pthread_mutex_lock(&fk.lock);
    uint64_t was = limit_bytes(slot, c->limits[slot]), now = limit_bytes(slot, value);
    bool fits = now <= was || fk_charge(c->device, now - was);
    if (fits) {
        if (now < was)
            fk_uncharge(c->device, was - now);
        c->held = c->held + now - was;
        c->limits[slot] = value;
    }
    pthread_mutex_unlock(&fk.lock);
    return fits ? CUDA_SUCCESS : CUDA_ERROR_OUT_OF_MEMORY;
}

FK_EXPORT CUresult cuCtxGetLimit(size_t *value, CUlimit limit)
{
    FK_ENTER("cuCtxGetLimit");
    if (value == NULL)
        return CUDA_ERROR_INVALID_VALUE;
    FK_NEED_CTX(c);
    int slot = limit_slot(limit);
    if (slot < 0)
        return CUDA_ERROR_UNSUPPORTED_LIMIT;
    *value = c->limits[slot] ? c->limits[slot] : limit_default[slot];
    return CUDA_SUCCESS;
}

CUresult fk_module_mem_take(const void *image, int *dev, uint64_t *bytes)
{
    *dev = -1;
    *bytes = 0;
    if (strncmp(image, IMAGE_TAG, strlen(IMAGE_TAG)) != 0)
        return CUDA_SUCCESS;
    uint64_t want = strtoull((const char *)image + strlen(IMAGE_TAG), NULL, 10);
    want = (want + FK_PAGE - 1) / FK_PAGE * FK_PAGE;
    struct fk_ctx *c = fk_current();
    if (c == NULL)
        return CUDA_ERROR_INVALID_CONTEXT;
    if (want && !fk_charge(c->device, want))
        return CUDA_ERROR_OUT_OF_MEMORY;
    *dev = c->device;
    *bytes = want;
    return CUDA_SUCCESS;
}
