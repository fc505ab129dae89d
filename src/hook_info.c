/*
 * hook_info.c: the memory figures the program reads.
 *
 * For now the driver's figures pass through untouched; each answer is kept
 * as the device's latest known free memory for the stats. (The limits work
 * makes these figures report the process's slice.)
 */
#include "vramshim_internal.h"

CUresult vs_hook_cuMemGetInfo_v2(size_t *free, size_t *total)
{
    CUresult rc = vs_real.cuMemGetInfo_v2(free, total);
    if (rc == CUDA_SUCCESS && free)
        vs_stats_note_free(vs_current_device(), *free);
    return rc;
}
