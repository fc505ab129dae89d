/*
 * hook_bind.c: ranges the program binds where the device reaches them
 * outside any launch or copy vramshim sees.
 *
 * cuMulticastBindAddr binds the physical memory mapped at a range to a
 * multicast object, which other mappings (of the multicast handle) then
 * reach; a legacy texture reference (cuTexRefSetAddress*) is module state
 * that any later kernel of the module may read through, without naming
 * the address in its parameters. A move would leave the multicast object
 * with the old memory and the texture's readers with a range vramshim
 * never brings back before their launch. So a backed buffer in such a
 * range comes back to the device first and never moves again, as one
 * exported as a dma-buf (ipc.c, vs_tier_share). Other memory goes to the
 * driver untouched.
 */
#include "hooks.h"

/* Share every backed buffer in [dptr, dptr+size): a multicast binding may
 * cover several. Backed buffers start on a granule boundary (2 MiB, the
 * smallest VMM granularity), so the walk past memory that is not backed
 * steps granule by granule. CUDA_SUCCESS, or the first buffer's failure
 * (CUDA_ERROR_OUT_OF_MEMORY: it cannot come back). */
#define STEP (2ULL << 20)
static CUresult keep_resident(const char *call, uint64_t dptr, uint64_t size)
{
    uint64_t end = size ? dptr + size : dptr + 1;
    for (uint64_t at = dptr; at < end && at >= dptr;) {
        struct vs_tier_view v;
        if (!vs_tier_lookup(at, &v)) {
            at = (at / STEP + 1) * STEP;
            continue;
        }
        struct vs_share sh;
        CUresult rc = vs_tier_share(at, call, &sh);
        if (rc != CUDA_SUCCESS && rc != CUDA_ERROR_NOT_FOUND)
            return rc;
        at = ((v.base + v.size + STEP - 1) / STEP) * STEP;
    }
    return CUDA_SUCCESS;
}

CUresult vs_hook_cuMulticastBindAddr(CUmemGenericAllocationHandle mc, size_t mc_offset,
                                     CUdeviceptr memptr, size_t size, unsigned long long flags)
{
    CUresult rc = keep_resident("cuMulticastBindAddr", memptr, size);
    if (rc != CUDA_SUCCESS)
        return rc;
    return vs_real.cuMulticastBindAddr(mc, mc_offset, memptr, size, flags);
}

CUresult vs_hook_cuTexRefSetAddress_v2(size_t *byte_offset, CUtexref tex, CUdeviceptr dptr,
                                       size_t bytes)
{
    CUresult rc = keep_resident("cuTexRefSetAddress", dptr, bytes);
    if (rc != CUDA_SUCCESS)
        return rc;
    return vs_real.cuTexRefSetAddress_v2(byte_offset, tex, dptr, bytes);
}

/* A 2D binding reaches Height rows of Pitch bytes. */
CUresult vs_hook_cuTexRefSetAddress2D_v3(CUtexref tex, const CUDA_ARRAY_DESCRIPTOR *desc,
                                         CUdeviceptr dptr, size_t pitch)
{
    uint64_t rows = desc && desc->Height ? desc->Height : 1;
    CUresult rc = keep_resident("cuTexRefSetAddress2D", dptr, (uint64_t)pitch * rows);
    if (rc != CUDA_SUCCESS)
        return rc;
    return vs_real.cuTexRefSetAddress2D_v3(tex, desc, dptr, pitch);
}
