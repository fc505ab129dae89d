/*
 * hook_strided.c: 2D and 3D copies, peer copies, 16-bit and 2D memsets.
 *
 * The same contract as hook_copy.c: touch the device ranges named, then
 * hand the call to the driver inside the move gate. These matter as much
 * as the plain copies: PyTorch copies strided tensors with cudaMemcpy2D,
 * and a pageable buffer reached by any of them must be back first. A
 * strided range is touched from its first byte to its last, the pitch gaps
 * included: a buffer holding the gap is touched too, which costs at most an
 * early restore.
 */
#include "hooks.h"

void vs_touch_strided(CUmemorytype type, CUdeviceptr dev, size_t x, size_t y, size_t z,
                      size_t pitch, size_t rows, size_t w, size_t h, size_t d)
{
    if ((type != CU_MEMORYTYPE_DEVICE && type != CU_MEMORYTYPE_UNIFIED) || dev == 0 ||
        w == 0 || h == 0 || d == 0)
        return;
    uint64_t slice = (uint64_t)pitch * rows;
    vs_touch_range(dev + z * slice + y * pitch + x, 0, (d - 1) * slice + (h - 1) * pitch + w);
}

static void touch_2d(const CUDA_MEMCPY2D *p)
{
    if (p == NULL)
        return;
    vs_touch_strided(p->srcMemoryType, p->srcDevice, p->srcXInBytes, p->srcY, 0, p->srcPitch, 0,
                     p->WidthInBytes, p->Height, 1);
    vs_touch_strided(p->dstMemoryType, p->dstDevice, p->dstXInBytes, p->dstY, 0, p->dstPitch, 0,
                     p->WidthInBytes, p->Height, 1);
}

static void touch_3d(const CUDA_MEMCPY3D *p)
{
    VS_TOUCH_3D(p);
}

static void touch_2d_set(CUdeviceptr dst, size_t pitch, size_t w_bytes, size_t h)
{
    if (w_bytes && h)
        vs_touch_range(dst, 0, (h - 1) * pitch + w_bytes);
}

/* A 2D memset of `elem`-byte values: w values a row, h rows. */
#define SET_2D(name, value_t, elem)                                                           \
    CUresult vs_hook_##name(CUdeviceptr dst, size_t pitch, value_t v, size_t w, size_t h)    \
    {                                                                                        \
        touch_2d_set(dst, pitch, w * (elem), h);                                             \
        VS_GATED(vs_real.name(dst, pitch, v, w, h));                                         \
    }
#define SET_2D_ASYNC(name, value_t, elem)                                                     \
    CUresult vs_hook_##name(CUdeviceptr dst, size_t pitch, value_t v, size_t w, size_t h,    \
                            CUstream s)                                                      \
    {                                                                                        \
        touch_2d_set(dst, pitch, w * (elem), h);                                             \
        VS_GATED(vs_real.name(dst, pitch, v, w, h, s));                                      \
    }

#define SYNC_STRIDED(sfx)                                                                     \
    CUresult vs_hook_cuMemcpy2D_v2##sfx(const CUDA_MEMCPY2D *p)                              \
    {                                                                                        \
        touch_2d(p);                                                                         \
        VS_GATED(vs_real.cuMemcpy2D_v2##sfx(p));                                             \
    }                                                                                        \
    CUresult vs_hook_cuMemcpy2DUnaligned_v2##sfx(const CUDA_MEMCPY2D *p)                     \
    {                                                                                        \
        touch_2d(p);                                                                         \
        VS_GATED(vs_real.cuMemcpy2DUnaligned_v2##sfx(p));                                    \
    }                                                                                        \
    CUresult vs_hook_cuMemcpy3D_v2##sfx(const CUDA_MEMCPY3D *p)                              \
    {                                                                                        \
        touch_3d(p);                                                                         \
        VS_GATED(vs_real.cuMemcpy3D_v2##sfx(p));                                             \
    }                                                                                        \
    CUresult vs_hook_cuMemcpyPeer##sfx(CUdeviceptr dst, CUcontext dc, CUdeviceptr src,       \
                                       CUcontext sc, size_t n)                               \
    {                                                                                        \
        vs_touch_range(dst, src, n);                                                         \
        VS_GATED(vs_real.cuMemcpyPeer##sfx(dst, dc, src, sc, n));                            \
    }                                                                                        \
    CUresult vs_hook_cuMemsetD16_v2##sfx(CUdeviceptr dst, unsigned short v, size_t n)        \
    {                                                                                        \
        vs_touch_range(dst, 0, n * 2);                                                       \
        VS_GATED(vs_real.cuMemsetD16_v2##sfx(dst, v, n));                                    \
    }                                                                                        \
    SET_2D(cuMemsetD2D8_v2##sfx, unsigned char, 1)                                          \
    SET_2D(cuMemsetD2D16_v2##sfx, unsigned short, 2)                                        \
    SET_2D(cuMemsetD2D32_v2##sfx, unsigned int, 4)

#define ASYNC_STRIDED(sfx)                                                                    \
    CUresult vs_hook_cuMemcpy2DAsync_v2##sfx(const CUDA_MEMCPY2D *p, CUstream s)             \
    {                                                                                        \
        touch_2d(p);                                                                         \
        VS_GATED(vs_real.cuMemcpy2DAsync_v2##sfx(p, s));                                     \
    }                                                                                        \
    CUresult vs_hook_cuMemcpy3DAsync_v2##sfx(const CUDA_MEMCPY3D *p, CUstream s)             \
    {                                                                                        \
        touch_3d(p);                                                                         \
        VS_GATED(vs_real.cuMemcpy3DAsync_v2##sfx(p, s));                                     \
    }                                                                                        \
    CUresult vs_hook_cuMemcpyPeerAsync##sfx(CUdeviceptr dst, CUcontext dc, CUdeviceptr src,  \
                                            CUcontext sc, size_t n, CUstream s)              \
    {                                                                                        \
        vs_touch_range(dst, src, n);                                                         \
        VS_GATED(vs_real.cuMemcpyPeerAsync##sfx(dst, dc, src, sc, n, s));                    \
    }                                                                                        \
    CUresult vs_hook_cuMemsetD16Async##sfx(CUdeviceptr dst, unsigned short v, size_t n,      \
                                           CUstream s)                                       \
    {                                                                                        \
        vs_touch_range(dst, 0, n * 2);                                                       \
        VS_GATED(vs_real.cuMemsetD16Async##sfx(dst, v, n, s));                               \
    }                                                                                        \
    SET_2D_ASYNC(cuMemsetD2D8Async##sfx, unsigned char, 1)                                  \
    SET_2D_ASYNC(cuMemsetD2D16Async##sfx, unsigned short, 2)                                \
    SET_2D_ASYNC(cuMemsetD2D32Async##sfx, unsigned int, 4)

SYNC_STRIDED()
SYNC_STRIDED(_ptds)
ASYNC_STRIDED()
ASYNC_STRIDED(_ptsz)
