/*
 * hook_peer.c: peer access between contexts.
 *
 * cuCtxEnablePeerAccess lets the current context reach the peer context's
 * cuMemAlloc memory; it does nothing for VMM mappings, which is what
 * vramshim makes of the program's buffers. So once the driver has said
 * yes, the grant is recorded (reach.c) and given to every backed buffer of
 * the peer's device with cuMemSetAccess, and disabling takes it back.
 *
 * The program's own cuMemSetAccess on a backed buffer's range would reach
 * only the chunks mapped at that moment, and be lost at the next move
 * (pinned host handles and new device handles are mapped with vramshim's
 * access). So it is kept with the buffer and applied to every chunk,
 * wherever it is, now and after each move (tier.c, chunk.c); and
 * cuMemGetAccess answers what the program set, not what a chunk happens to
 * have.
 */
#include "hooks.h"

static int device_of(CUcontext ctx)
{
    CUdevice dev = -1;
    CUcontext popped;
    if (ctx == NULL || vs_real.cuCtxPushCurrent_v2(ctx) != CUDA_SUCCESS)
        return -1;
    if (vs_real.cuCtxGetDevice(&dev) != CUDA_SUCCESS)
        dev = -1;
    vs_real.cuCtxPopCurrent_v2(&popped);
    return dev;
}

static void record(CUcontext peer, bool on)
{
    CUcontext mine = NULL;
    if (vs_real.cuCtxGetCurrent == NULL || vs_real.cuCtxGetCurrent(&mine) != CUDA_SUCCESS)
        return;
    int by = device_of(mine), of = device_of(peer);
    if (by < 0 || of < 0) {
        vs_warn("peer access: cannot tell the devices of contexts %p and %p; backed buffers "
                "keep their access", (void *)mine, (void *)peer);
        return;
    }
    vs_reach_set(of, by, mine, on);
}

CUresult vs_hook_cuCtxEnablePeerAccess(CUcontext peerContext, unsigned int Flags)
{
    CUresult rc = vs_real.cuCtxEnablePeerAccess(peerContext, Flags);
    if (rc == CUDA_SUCCESS)
        record(peerContext, true);
    return rc;
}

CUresult vs_hook_cuCtxDisablePeerAccess(CUcontext peerContext)
{
    CUresult rc = vs_real.cuCtxDisablePeerAccess(peerContext);
    if (rc == CUDA_SUCCESS)
        record(peerContext, false);
    return rc;
}

CUresult vs_hook_cuMemSetAccess(CUdeviceptr ptr, size_t size, const CUmemAccessDesc *desc,
                                size_t count)
{
    CUresult rc = vs_tier_set_access(ptr, size, desc, count);
    return rc == CUDA_ERROR_NOT_FOUND ? vs_real.cuMemSetAccess(ptr, size, desc, count) : rc;
}

CUresult vs_hook_cuMemGetAccess(unsigned long long *flags, const CUmemLocation *location,
                                CUdeviceptr ptr)
{
    if (flags == NULL || location == NULL || !vs_tier_get_access(ptr, location, flags))
        return vs_real.cuMemGetAccess(flags, location, ptr);
    return CUDA_SUCCESS;
}
