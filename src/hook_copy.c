/*
 * hook_copy.c: copies and memsets the program submits.
 *
 * Each one touches the device ranges it names, which stamps their buffers
 * and brings offloaded ones back first, and is handed to the driver inside
 * the move gate (see tier.c), so no chunk it writes can be half way
 * through a move. A copy between device and host memory of at least
 * vs_fast_copy_min bytes is offered to the threaded staging (staging.c),
 * which takes it when the host side is pageable; below that the only cost
 * is one compare, and host pointers are never looked up.
 */
#include "hooks.h"

#define H(p) ((uint64_t)(uintptr_t)(p))

/* Inside the gate: offer a large copy to the staging, and hand it to the
 * driver when the staging passes (or for anything smaller). */
#define STAGED_OR_REAL(n, fast, real)                                          \
    do {                                                                       \
        int gate_ = vs_gate_enter();                                           \
        if (gate_ < 0)                                                         \
            return CUDA_ERROR_OUT_OF_MEMORY;                                   \
        CUresult rc_ = VS_COPY_PASS;                                           \
        if (VS_UNLIKELY((n) >= vs_fast_copy_min))                              \
            rc_ = (fast);                                                      \
        if (rc_ == VS_COPY_PASS)                                               \
            rc_ = (real);                                                      \
        vs_gate_leave(gate_);                                                  \
        return rc_;                                                            \
    } while (0)

/* cuMemcpy / cuMemcpyAsync name both sides by address (unified
 * addressing): staged only when one side is a known device range and the
 * other is host memory the driver does not know (pageable), which costs
 * one cuPointerGetAttribute on this large-copy path. */
static CUresult unified(CUdeviceptr dst, CUdeviceptr src, size_t n, CUstream s,
                        unsigned flags)
{
    struct vs_alloc_info a;
    unsigned int type;
    if (!vs_real.cuPointerGetAttribute)
        return VS_COPY_PASS;
    if (vs_registry_find(dst, &a) && !vs_kind_is_host(a.kind) && !vs_registry_find(src, &a) &&
        vs_real.cuPointerGetAttribute(&type, CU_POINTER_ATTRIBUTE_MEMORY_TYPE, src) ==
            CUDA_ERROR_INVALID_VALUE)
        return vs_fastcopy(dst, (void *)(uintptr_t)src, n, s, flags | VS_COPY_TO_DEVICE);
    if (vs_registry_find(src, &a) && !vs_kind_is_host(a.kind) && !vs_registry_find(dst, &a) &&
        vs_real.cuPointerGetAttribute(&type, CU_POINTER_ATTRIBUTE_MEMORY_TYPE, dst) ==
            CUDA_ERROR_INVALID_VALUE)
        return vs_fastcopy(src, (void *)(uintptr_t)dst, n, s, flags);
    return VS_COPY_PASS;
}

#define SYNC_COPIES(sfx, pt)                                                              \
    CUresult vs_hook_cuMemcpyHtoD_v2##sfx(CUdeviceptr dst, const void *src, size_t n) \
    {                                                                                 \
        vs_touch_range(dst, 0, n);                                                    \
        STAGED_OR_REAL(n, vs_fastcopy(dst, (void *)src, n, NULL,                      \
                                      VS_COPY_TO_DEVICE | VS_COPY_SYNC | (pt)),       \
                       vs_real.cuMemcpyHtoD_v2##sfx(dst, src, n));                    \
    }                                                                                 \
    CUresult vs_hook_cuMemcpyDtoH_v2##sfx(void *dst, CUdeviceptr src, size_t n)       \
    {                                                                                 \
        vs_touch_range(src, 0, n);                                                    \
        STAGED_OR_REAL(n, vs_fastcopy(src, dst, n, NULL, VS_COPY_SYNC | (pt)),        \
                       vs_real.cuMemcpyDtoH_v2##sfx(dst, src, n));                    \
    }                                                                                 \
    CUresult vs_hook_cuMemcpyDtoD_v2##sfx(CUdeviceptr dst, CUdeviceptr src, size_t n) \
    {                                                                                 \
        vs_touch_range(dst, src, n);                                                           \
        VS_GATED(vs_real.cuMemcpyDtoD_v2##sfx(dst, src, n));                             \
    }                                                                                 \
    CUresult vs_hook_cuMemcpy##sfx(CUdeviceptr dst, CUdeviceptr src, size_t n)        \
    {                                                                                 \
        vs_touch_range(dst, src, n); /* unified addressing: either may be host memory */ \
        STAGED_OR_REAL(n, unified(dst, src, n, NULL, VS_COPY_SYNC | (pt)),            \
                       vs_real.cuMemcpy##sfx(dst, src, n));                           \
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

#define ASYNC_COPIES(sfx, pt)                                                             \
    CUresult vs_hook_cuMemcpyHtoDAsync_v2##sfx(CUdeviceptr dst, const void *src,      \
                                               size_t n, CUstream s)                  \
    {                                                                                 \
        vs_touch_range(dst, 0, n);                                                    \
        STAGED_OR_REAL(n, vs_fastcopy(dst, (void *)src, n, s, VS_COPY_TO_DEVICE | (pt)), \
                       vs_real.cuMemcpyHtoDAsync_v2##sfx(dst, src, n, s));            \
    }                                                                                 \
    CUresult vs_hook_cuMemcpyDtoHAsync_v2##sfx(void *dst, CUdeviceptr src, size_t n,  \
                                               CUstream s)                            \
    {                                                                                 \
        vs_touch_range(src, 0, n);                                                    \
        STAGED_OR_REAL(n, vs_fastcopy(src, dst, n, s, (pt)),                          \
                       vs_real.cuMemcpyDtoHAsync_v2##sfx(dst, src, n, s));            \
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
        vs_touch_range(dst, src, n);                                                  \
        STAGED_OR_REAL(n, unified(dst, src, n, s, (pt)),                              \
                       vs_real.cuMemcpyAsync##sfx(dst, src, n, s));                   \
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

SYNC_COPIES(, 0)
SYNC_COPIES(_ptds, VS_COPY_PER_THREAD)
ASYNC_COPIES(, 0)
ASYNC_COPIES(_ptsz, VS_COPY_PER_THREAD)
