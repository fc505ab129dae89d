/*
 * hook_copy.c: copies and memsets the program submits.
 *
 * Each one touches the device ranges it names, which stamps their buffers
 * and brings offloaded ones back first, and is handed to the driver inside
 * the move gate (see tier.c), so no chunk it writes can be half way
 * through a move. Host pointers are never looked up.
 */
#include "hooks.h"

#define H(p) ((uint64_t)(uintptr_t)(p))

#define SYNC_COPIES(sfx)                                                              \
    CUresult vs_hook_cuMemcpyHtoD_v2##sfx(CUdeviceptr dst, const void *src, size_t n) \
    {                                                                                 \
        vs_touch_range(dst, 0, n);                                                             \
        VS_GATED(vs_real.cuMemcpyHtoD_v2##sfx(dst, src, n));                             \
    }                                                                                 \
    CUresult vs_hook_cuMemcpyDtoH_v2##sfx(void *dst, CUdeviceptr src, size_t n)       \
    {                                                                                 \
        vs_touch_range(src, 0, n);                                                             \
        VS_GATED(vs_real.cuMemcpyDtoH_v2##sfx(dst, src, n));                             \
    }                                                                                 \
    CUresult vs_hook_cuMemcpyDtoD_v2##sfx(CUdeviceptr dst, CUdeviceptr src, size_t n) \
    {                                                                                 \
        vs_touch_range(dst, src, n);                                                           \
        VS_GATED(vs_real.cuMemcpyDtoD_v2##sfx(dst, src, n));                             \
    }                                                                                 \
    CUresult vs_hook_cuMemcpy##sfx(CUdeviceptr dst, CUdeviceptr src, size_t n)        \
    {                                                                                 \
        vs_touch_range(dst, src, n); /* unified addressing: either may be host memory */       \
        VS_GATED(vs_real.cuMemcpy##sfx(dst, src, n));                                    \
    }                                                                                 \
    CUresult vs_hook_cuMemsetD8_v2##sfx(CUdeviceptr dst, unsigned char v, size_t n)   \
    {                                                                                 \
        vs_touch_range(dst, 0, n);                                                             \
        VS_GATED(vs_real.cuMemsetD8_v2##sfx(dst, v, n));                                 \
    }                                                                                 \
    CUresult vs_hook_cuMemsetD32_v2##sfx(CUdeviceptr dst, unsigned int v, size_t n)   \
    {                                                                                 \
        vs_touch_range(dst, 0, n * 4);                                                         \
        VS_GATED(vs_real.cuMemsetD32_v2##sfx(dst, v, n));                                \
    }

#define ASYNC_COPIES(sfx)                                                             \
    CUresult vs_hook_cuMemcpyHtoDAsync_v2##sfx(CUdeviceptr dst, const void *src,      \
                                               size_t n, CUstream s)                  \
    {                                                                                 \
        vs_touch_range(dst, 0, n);                                                             \
        VS_GATED(vs_real.cuMemcpyHtoDAsync_v2##sfx(dst, src, n, s));                     \
    }                                                                                 \
    CUresult vs_hook_cuMemcpyDtoHAsync_v2##sfx(void *dst, CUdeviceptr src, size_t n,  \
                                               CUstream s)                            \
    {                                                                                 \
        vs_touch_range(src, 0, n);                                                             \
        VS_GATED(vs_real.cuMemcpyDtoHAsync_v2##sfx(dst, src, n, s));                     \
    }                                                                                 \
    CUresult vs_hook_cuMemcpyDtoDAsync_v2##sfx(CUdeviceptr dst, CUdeviceptr src,      \
                                               size_t n, CUstream s)                  \
    {                                                                                 \
        vs_touch_range(dst, src, n);                                                           \
        VS_GATED(vs_real.cuMemcpyDtoDAsync_v2##sfx(dst, src, n, s));                     \
    }                                                                                 \
    CUresult vs_hook_cuMemcpyAsync##sfx(CUdeviceptr dst, CUdeviceptr src, size_t n,   \
                                        CUstream s)                                   \
    {                                                                                 \
        vs_touch_range(dst, src, n);                                                           \
        VS_GATED(vs_real.cuMemcpyAsync##sfx(dst, src, n, s));                            \
    }                                                                                 \
    CUresult vs_hook_cuMemsetD8Async##sfx(CUdeviceptr dst, unsigned char v, size_t n, \
                                          CUstream s)                                 \
    {                                                                                 \
        vs_touch_range(dst, 0, n);                                                             \
        VS_GATED(vs_real.cuMemsetD8Async##sfx(dst, v, n, s));                            \
    }                                                                                 \
    CUresult vs_hook_cuMemsetD32Async##sfx(CUdeviceptr dst, unsigned int v, size_t n, \
                                           CUstream s)                                \
    {                                                                                 \
        vs_touch_range(dst, 0, n * 4);                                                         \
        VS_GATED(vs_real.cuMemsetD32Async##sfx(dst, v, n, s));                           \
    }

SYNC_COPIES()
SYNC_COPIES(_ptds)
ASYNC_COPIES()
ASYNC_COPIES(_ptsz)
