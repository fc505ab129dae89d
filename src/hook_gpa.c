/*
 * hook_gpa.c: way in (b), the driver's own symbol look-up.
 *
 * cudart (static or shared) and PyTorch resolve almost every driver entry
 * point through cuGetProcAddress_v2 with a base name, an ABI version and a
 * stream flag. The driver answers; when its answer is a pointer we hook, the
 * hook goes back instead. A request for "cuGetProcAddress" itself returns
 * the real look-up, which the same swap turns into this hook.
 */
#include "hooks.h"

static void swap(void **pfn)
{
    if (pfn && *pfn) {
        void *hook = vs_hook_for_real(*pfn);
        if (hook)
            *pfn = hook;
    }
}

CUresult vs_hook_cuGetProcAddress(const char *symbol, void **pfn, int cudaVersion,
                                  cuuint64_t flags)
{
    CUresult rc = vs_real.cuGetProcAddress(symbol, pfn, cudaVersion, flags);
    if (rc == CUDA_SUCCESS)
        swap(pfn);
    return rc;
}

CUresult vs_hook_cuGetProcAddress_v2(const char *symbol, void **pfn, int cudaVersion,
                                     cuuint64_t flags,
                                     CUdriverProcAddressQueryResult *symbolStatus)
{
    CUresult rc = vs_real.cuGetProcAddress_v2(symbol, pfn, cudaVersion, flags, symbolStatus);
    if (rc == CUDA_SUCCESS)
        swap(pfn);
    return rc;
}
