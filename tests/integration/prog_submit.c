/*
 * prog_submit: every submission entry point issue 11 added a hook for
 * touches what it names (issue 11, case 9): a buffer the program handed
 * over (vramshim_offload, pageable: the pin limit is 1 MiB, offload auto)
 * is back on the device, with its bytes, once any of these names it:
 * cuMemcpy3DPeer(Async), cuMemcpyBatchAsync, cuMemcpy3DBatchAsync,
 * cuLaunchCooperativeKernelMultiDevice, cuMemcpyDtoA/AtoD (the test driver
 * refuses array copies, but the device side is touched first), and the
 * legacy cuLaunch/cuLaunchGrid/cuLaunchGridAsync (their parameters are
 * invisible, so they bring back every buffer, as a graph launch does).
 * Before, none of these was hooked: the buffer stayed pageable (its
 * address unmapped) while the driver was handed work that reaches it.
 */
#include "check.h"

#include <string.h>

#define M (1ULL << 20)
#define BUF (4 * M)

static struct check_driver cu;
static int (*offload)(uint64_t);
static unsigned char pattern[BUF], got[BUF];

static void add_one(void **params, fakecuda_dim3 grid, fakecuda_dim3 block)
{
    (void)grid;
    (void)block;
    unsigned char *p = (unsigned char *)(uintptr_t)*(CUdeviceptr *)params[0];
    for (uint64_t i = 0; i < BUF; i++)
        p[i]++;
}

/* x, filled with seed, handed over: pageable and unmapped. */
static void hand_over(CUdeviceptr x, unsigned seed)
{
    check_fill(pattern, BUF, seed);
    CHECK_CU(cu.htod(x, pattern, BUF));
    CHECK(offload(x) == 0, "vramshim_offload");
    json_t *s = stats_get();
    CHECK_EQ_U64(stats_u64(s, "devices.0.offloaded_pageable"), BUF);
    json_decref(s);
}

static void back(const char *what)
{
    json_t *s = stats_get();
    uint64_t left = stats_u64(s, "devices.0.offloaded_pageable");
    json_decref(s);
    CHECK(left == 0, "%s left %llu bytes pageable", what, (unsigned long long)left);
}

int main(int argc, char **argv)
{
    const char *env[] = {"VRAMSHIM_OFFLOAD=auto", "VRAMSHIM_PIN_LIMIT=1M", NULL};
    check_reexec_env(argv, env);
    (void)argc;
    check_driver_open(&cu);
    offload = check_api("vramshim_offload");
    CUresult (*p3d)(const CUDA_MEMCPY3D_PEER *) = check_sym(cu.lib, "cuMemcpy3DPeer");
    CUresult (*p3d_async)(const CUDA_MEMCPY3D_PEER *, CUstream) =
        check_sym(cu.lib, "cuMemcpy3DPeerAsync");
    CUresult (*batch)(CUdeviceptr *, CUdeviceptr *, size_t *, size_t, CUmemcpyAttributes *,
                      size_t *, size_t, CUstream) = check_sym(cu.lib, "cuMemcpyBatchAsync_v2");
    CUresult (*batch3d)(size_t, CUDA_MEMCPY3D_BATCH_OP *, unsigned long long, CUstream) =
        check_sym(cu.lib, "cuMemcpy3DBatchAsync_v2");
    CUresult (*multi)(CUDA_LAUNCH_PARAMS *, unsigned, unsigned) =
        check_sym(cu.lib, "cuLaunchCooperativeKernelMultiDevice");
    CUresult (*dtoa)(CUarray, size_t, CUdeviceptr, size_t) = check_sym(cu.lib, "cuMemcpyDtoA_v2");
    CUresult (*atod)(CUdeviceptr, CUarray, size_t, size_t) = check_sym(cu.lib, "cuMemcpyAtoD_v2");
    CUresult (*launch)(CUfunction) = check_sym(cu.lib, "cuLaunch");
    CUresult (*grid)(CUfunction, int, int) = check_sym(cu.lib, "cuLaunchGrid");
    CUresult (*grid_async)(CUfunction, int, int, CUstream) = check_sym(cu.lib, "cuLaunchGridAsync");
    CUresult (*sync)(void) = check_sym(cu.lib, "cuCtxSynchronize");
    size_t sizes[] = {sizeof(CUdeviceptr)};
    CUfunction add = check_kernel(cu.lib, "add_one", add_one, 1, sizes);

    CUdeviceptr x, y;
    CHECK_CU(cu.alloc(&x, BUF));
    CHECK_CU(cu.alloc(&y, BUF));
    unsigned char ys[BUF];
    check_fill(ys, BUF, 99);
    CHECK_CU(cu.htod(y, ys, BUF));

    /* 3D peer copies: x (handed over) is the destination, then the source */
    CUDA_MEMCPY3D_PEER p = {.srcMemoryType = CU_MEMORYTYPE_DEVICE, .srcDevice = y,
                            .srcPitch = BUF, .srcHeight = 1,
                            .dstMemoryType = CU_MEMORYTYPE_DEVICE, .dstDevice = x,
                            .dstPitch = BUF, .dstHeight = 1,
                            .WidthInBytes = BUF, .Height = 1, .Depth = 1};
    hand_over(x, 1);
    CHECK_CU(p3d(&p));
    back("cuMemcpy3DPeer");
    check_device_bytes(cu.dtoh, x, ys, BUF, "x after cuMemcpy3DPeer");
    hand_over(x, 2);
    p.srcDevice = x;
    p.dstDevice = y;
    CHECK_CU(p3d_async(&p, NULL));
    CHECK_CU(sync());
    back("cuMemcpy3DPeerAsync");
    check_device_bytes(cu.dtoh, y, pattern, BUF, "y after cuMemcpy3DPeerAsync");

    /* a batch of two copies, x's halves swapped into y */
    hand_over(x, 3);
    CUdeviceptr dsts[2] = {y, y + BUF / 2}, srcs[2] = {x + BUF / 2, x};
    size_t lens[2] = {BUF / 2, BUF / 2}, idx = 0;
    CUmemcpyAttributes attr = {.srcAccessOrder = CU_MEMCPY_SRC_ACCESS_ORDER_STREAM};
    CHECK_CU(batch(dsts, srcs, lens, 2, &attr, &idx, 1, NULL));
    CHECK_CU(sync());
    back("cuMemcpyBatchAsync");
    memcpy(got, pattern + BUF / 2, BUF / 2);
    memcpy(got + BUF / 2, pattern, BUF / 2);
    check_device_bytes(cu.dtoh, y, got, BUF, "y after cuMemcpyBatchAsync");

    /* a 3D batch: y -> x as 1024 rows of 4 KiB */
    hand_over(x, 4);
    CUDA_MEMCPY3D_BATCH_OP op = {0};
    op.src.type = op.dst.type = CU_MEMCPY_OPERAND_TYPE_POINTER;
    op.src.op.ptr.ptr = y;
    op.dst.op.ptr.ptr = x;
    op.extent = (CUextent3D){.width = 4096, .height = BUF / 4096, .depth = 1};
    CHECK_CU(batch3d(1, &op, 0, NULL));
    CHECK_CU(sync());
    back("cuMemcpy3DBatchAsync");
    check_device_bytes(cu.dtoh, x, got, BUF, "x after cuMemcpy3DBatchAsync");

    /* a multi-device cooperative launch (one device here) naming x */
    hand_over(x, 5);
    void *params[] = {&x};
    CUDA_LAUNCH_PARAMS l = {.function = add, .gridDimX = 1, .gridDimY = 1, .gridDimZ = 1,
                            .blockDimX = 1, .blockDimY = 1, .blockDimZ = 1,
                            .kernelParams = params};
    CHECK_CU(multi(&l, 1, 0));
    CHECK_CU(sync());
    back("cuLaunchCooperativeKernelMultiDevice");
    for (size_t i = 0; i < BUF; i++)
        pattern[i]++;
    check_device_bytes(cu.dtoh, x, pattern, BUF, "x after the cooperative launch");

    /* array copies: refused by the test driver, the device side touched */
    hand_over(x, 6);
    CHECK(dtoa(NULL, 0, x, BUF) == CUDA_ERROR_NOT_SUPPORTED, "cuMemcpyDtoA");
    back("cuMemcpyDtoA");
    hand_over(x, 7);
    CHECK(atod(x, NULL, 0, BUF) == CUDA_ERROR_NOT_SUPPORTED, "cuMemcpyAtoD");
    back("cuMemcpyAtoD");

    /* the legacy launches: every buffer counts as touched */
    hand_over(x, 8);
    CHECK(launch(add) == CUDA_ERROR_NOT_SUPPORTED, "cuLaunch");
    back("cuLaunch");
    hand_over(x, 9);
    CHECK(grid(add, 1, 1) == CUDA_ERROR_NOT_SUPPORTED, "cuLaunchGrid");
    back("cuLaunchGrid");
    hand_over(x, 10);
    CHECK(grid_async(add, 1, 1, NULL) == CUDA_ERROR_NOT_SUPPORTED, "cuLaunchGridAsync");
    back("cuLaunchGridAsync");
    check_device_bytes(cu.dtoh, x, pattern, BUF, "x after the legacy launches");

    CHECK_CU(cu.release(x));
    CHECK_CU(cu.release(y));
    check_invariants("after every submission");
    printf("prog_submit: 3D peer, batch, 3D batch, multi-device, array and legacy launches "
           "each brought a handed-over buffer back\n");
    return 0;
}
