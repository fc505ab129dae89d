/*
 * fake_procaddr.c: cuGetProcAddress and cuGetProcAddress_v2 of the test
 * driver, answering as the real one does for cudart: a base name and the
 * CUDA version the caller was built for give the newest ABI variant not
 * newer than that version (cuMemAlloc at 12000 gives cuMemAlloc_v2, at
 * 3000 the old ABI's cuMemAlloc; cuMemHostRegister_v2 came with 6.5,
 * cuIpcOpenMemHandle_v2 with 11.0, per cuda.h's renames); the
 * per-thread-default-stream flag picks the _ptsz/_ptds variant where one
 * exists; symbolStatus may be NULL.
 *
 * This file does not include cuda.h: it only takes addresses, declared weak
 * so that a build without some entry points (the "old driver") answers
 * "not found" for them. The library is linked -Bsymbolic, so the addresses
 * are the test driver's own even when vramshim exports the same names.
 */
#include <stdint.h>
#include <string.h>

typedef int fk_result;
#define FK_SUCCESS 0
#define FK_ERROR_INVALID_VALUE 1
#define FK_ERROR_NOT_FOUND 500
#define FK_PER_THREAD 2 /* CU_GET_PROC_ADDRESS_PER_THREAD_DEFAULT_STREAM */
enum { STATUS_SUCCESS = 0, STATUS_SYMBOL_NOT_FOUND = 1, STATUS_VERSION_NOT_SUFFICIENT = 2 };

/* base name, first CUDA version, symbol, 1 for the per-thread variant */
#define FK_PROC_TABLE(E)                                                     \
    E("cuInit", 2000, cuInit, 0)                                             \
    E("cuDriverGetVersion", 2020, cuDriverGetVersion, 0)                     \
    E("cuGetErrorName", 6000, cuGetErrorName, 0)                             \
    E("cuDeviceGet", 2000, cuDeviceGet, 0)                                   \
    E("cuDeviceGetCount", 2000, cuDeviceGetCount, 0)                         \
    E("cuDeviceGetName", 2000, cuDeviceGetName, 0)                           \
    E("cuDeviceTotalMem", 2000, cuDeviceTotalMem, 0)                         \
    E("cuDeviceTotalMem", 3020, cuDeviceTotalMem_v2, 0)                      \
    E("cuDeviceGetAttribute", 2000, cuDeviceGetAttribute, 0)                 \
    E("cuDevicePrimaryCtxRetain", 7000, cuDevicePrimaryCtxRetain, 0)         \
    E("cuDevicePrimaryCtxRelease", 11000, cuDevicePrimaryCtxRelease_v2, 0)   \
    E("cuCtxCreate", 2000, cuCtxCreate, 0)                                   \
    E("cuCtxCreate", 3020, cuCtxCreate_v2, 0)                                \
    E("cuCtxDestroy", 2000, cuCtxDestroy, 0)                                 \
    E("cuCtxDestroy", 4000, cuCtxDestroy_v2, 0)                              \
    E("cuArrayCreate", 2000, cuArrayCreate, 0)                               \
    E("cuArrayCreate", 3020, cuArrayCreate_v2, 0)                            \
    E("cuArray3DCreate", 2000, cuArray3DCreate, 0)                           \
    E("cuArray3DCreate", 3020, cuArray3DCreate_v2, 0)                        \
    E("cuCtxSetCurrent", 4000, cuCtxSetCurrent, 0)                           \
    E("cuCtxGetCurrent", 4000, cuCtxGetCurrent, 0)                           \
    E("cuCtxPushCurrent", 4000, cuCtxPushCurrent_v2, 0)                      \
    E("cuCtxPopCurrent", 4000, cuCtxPopCurrent_v2, 0)                        \
    E("cuCtxGetDevice", 2000, cuCtxGetDevice, 0)                             \
    E("cuCtxSynchronize", 2000, cuCtxSynchronize, 0)                         \
    E("cuCtxSetLimit", 3010, cuCtxSetLimit, 0)                               \
    E("cuCtxGetLimit", 3010, cuCtxGetLimit, 0)                               \
    E("cuMemGetInfo", 2000, cuMemGetInfo, 0)                                 \
    E("cuMemGetInfo", 3020, cuMemGetInfo_v2, 0)                              \
    E("cuMemAlloc", 2000, cuMemAlloc, 0)                                     \
    E("cuMemAlloc", 3020, cuMemAlloc_v2, 0)                                  \
    E("cuMemAllocPitch", 2000, cuMemAllocPitch, 0)                           \
    E("cuMemAllocPitch", 3020, cuMemAllocPitch_v2, 0)                        \
    E("cuMemFree", 2000, cuMemFree, 0)                                       \
    E("cuMemFree", 3020, cuMemFree_v2, 0)                                    \
    E("cuMemAllocManaged", 6000, cuMemAllocManaged, 0)                       \
    E("cuMemAllocAsync", 11020, cuMemAllocAsync, 0)                          \
    E("cuMemAllocAsync", 11020, cuMemAllocAsync_ptsz, 1)                     \
    E("cuMemAllocFromPoolAsync", 11020, cuMemAllocFromPoolAsync, 0)          \
    E("cuMemPoolExportToShareableHandle", 11020, cuMemPoolExportToShareableHandle, 0) \
    E("cuMemPoolImportFromShareableHandle", 11020, cuMemPoolImportFromShareableHandle, 0) \
    E("cuMemPoolExportPointer", 11020, cuMemPoolExportPointer, 0)            \
    E("cuMemPoolImportPointer", 11020, cuMemPoolImportPointer, 0)            \
    E("cuMemAllocFromPoolAsync", 11020, cuMemAllocFromPoolAsync_ptsz, 1)     \
    E("cuMemFreeAsync", 11020, cuMemFreeAsync, 0)                            \
    E("cuMemFreeAsync", 11020, cuMemFreeAsync_ptsz, 1)                       \
    E("cuDeviceGetDefaultMemPool", 11020, cuDeviceGetDefaultMemPool, 0)      \
    E("cuDeviceGetMemPool", 11020, cuDeviceGetMemPool, 0)                    \
    E("cuDeviceSetMemPool", 11020, cuDeviceSetMemPool, 0)                    \
    E("cuMemPoolCreate", 11020, cuMemPoolCreate, 0)                          \
    E("cuMemPoolDestroy", 11020, cuMemPoolDestroy, 0)                        \
    E("cuMemPoolTrimTo", 11020, cuMemPoolTrimTo, 0)                          \
    E("cuMemPoolGetAttribute", 11020, cuMemPoolGetAttribute, 0)              \
    E("cuMemPoolSetAttribute", 11020, cuMemPoolSetAttribute, 0)              \
    E("cuMemHostAlloc", 2020, cuMemHostAlloc, 0)                             \
    E("cuMemAllocHost", 2000, cuMemAllocHost, 0)                             \
    E("cuMemAllocHost", 3020, cuMemAllocHost_v2, 0)                          \
    E("cuMemFreeHost", 2000, cuMemFreeHost, 0)                               \
    E("cuMemHostRegister", 4000, cuMemHostRegister, 0)                       \
    E("cuMemHostRegister", 6050, cuMemHostRegister_v2, 0)                    \
    E("cuMemHostUnregister", 4000, cuMemHostUnregister, 0)                   \
    E("cuPointerGetAttribute", 4000, cuPointerGetAttribute, 0)               \
    E("cuMemGetAddressRange", 3020, cuMemGetAddressRange_v2, 0)              \
    E("cuMemcpyHtoD", 3020, cuMemcpyHtoD_v2, 0)                              \
    E("cuMemcpyHtoD", 7000, cuMemcpyHtoD_v2_ptds, 1)                         \
    E("cuMemcpyDtoH", 3020, cuMemcpyDtoH_v2, 0)                              \
    E("cuMemcpyDtoH", 7000, cuMemcpyDtoH_v2_ptds, 1)                         \
    E("cuMemcpyDtoD", 3020, cuMemcpyDtoD_v2, 0)                              \
    E("cuMemcpyDtoD", 7000, cuMemcpyDtoD_v2_ptds, 1)                         \
    E("cuMemcpy", 4000, cuMemcpy, 0)                                         \
    E("cuMemcpy", 7000, cuMemcpy_ptds, 1)                                    \
    E("cuMemsetD8", 3020, cuMemsetD8_v2, 0)                                  \
    E("cuMemsetD8", 7000, cuMemsetD8_v2_ptds, 1)                             \
    E("cuMemsetD32", 3020, cuMemsetD32_v2, 0)                                \
    E("cuMemsetD32", 7000, cuMemsetD32_v2_ptds, 1)                           \
    E("cuMemcpyHtoDAsync", 3020, cuMemcpyHtoDAsync_v2, 0)                    \
    E("cuMemcpyHtoDAsync", 7000, cuMemcpyHtoDAsync_v2_ptsz, 1)               \
    E("cuMemcpyDtoHAsync", 3020, cuMemcpyDtoHAsync_v2, 0)                    \
    E("cuMemcpyDtoHAsync", 7000, cuMemcpyDtoHAsync_v2_ptsz, 1)               \
    E("cuMemcpyDtoDAsync", 3020, cuMemcpyDtoDAsync_v2, 0)                    \
    E("cuMemcpyDtoDAsync", 7000, cuMemcpyDtoDAsync_v2_ptsz, 1)               \
    E("cuMemcpyAsync", 4000, cuMemcpyAsync, 0)                               \
    E("cuMemcpyAsync", 7000, cuMemcpyAsync_ptsz, 1)                          \
    E("cuMemsetD8Async", 3020, cuMemsetD8Async, 0)                           \
    E("cuMemsetD8Async", 7000, cuMemsetD8Async_ptsz, 1)                      \
    E("cuMemcpy2D", 3020, cuMemcpy2D_v2, 0)                                  \
    E("cuMemcpy2D", 7000, cuMemcpy2D_v2_ptds, 1)                             \
    E("cuMemcpy2DUnaligned", 3020, cuMemcpy2DUnaligned_v2, 0)                \
    E("cuMemcpy2DUnaligned", 7000, cuMemcpy2DUnaligned_v2_ptds, 1)           \
    E("cuMemcpy3D", 3020, cuMemcpy3D_v2, 0)                                  \
    E("cuMemcpy3D", 7000, cuMemcpy3D_v2_ptds, 1)                             \
    E("cuMemsetD16", 3020, cuMemsetD16_v2, 0)                                \
    E("cuMemsetD16", 7000, cuMemsetD16_v2_ptds, 1)                           \
    E("cuMemsetD2D8", 3020, cuMemsetD2D8_v2, 0)                              \
    E("cuMemsetD2D8", 7000, cuMemsetD2D8_v2_ptds, 1)                         \
    E("cuMemsetD2D16", 3020, cuMemsetD2D16_v2, 0)                            \
    E("cuMemsetD2D16", 7000, cuMemsetD2D16_v2_ptds, 1)                       \
    E("cuMemsetD2D32", 3020, cuMemsetD2D32_v2, 0)                            \
    E("cuMemsetD2D32", 7000, cuMemsetD2D32_v2_ptds, 1)                       \
    E("cuMemcpyPeer", 4000, cuMemcpyPeer, 0)                                 \
    E("cuMemcpyPeer", 7000, cuMemcpyPeer_ptds, 1)                            \
    E("cuMemcpy2DAsync", 3020, cuMemcpy2DAsync_v2, 0)                        \
    E("cuMemcpy2DAsync", 7000, cuMemcpy2DAsync_v2_ptsz, 1)                   \
    E("cuMemcpy3DAsync", 3020, cuMemcpy3DAsync_v2, 0)                        \
    E("cuMemcpy3DPeer", 4000, cuMemcpy3DPeer, 0)                             \
    E("cuMemcpy3DPeer", 7000, cuMemcpy3DPeer_ptds, 1)                        \
    E("cuMemcpy3DPeerAsync", 4000, cuMemcpy3DPeerAsync, 0)                   \
    E("cuMemcpy3DPeerAsync", 7000, cuMemcpy3DPeerAsync_ptsz, 1)              \
    E("cuMemcpyBatchAsync", 13000, cuMemcpyBatchAsync_v2, 0)                 \
    E("cuMemcpyBatchAsync", 13000, cuMemcpyBatchAsync_v2_ptsz, 1)            \
    E("cuMemcpy3DBatchAsync", 13000, cuMemcpy3DBatchAsync_v2, 0)             \
    E("cuMemcpy3DBatchAsync", 13000, cuMemcpy3DBatchAsync_v2_ptsz, 1)        \
    E("cuLaunchCooperativeKernelMultiDevice", 9000, cuLaunchCooperativeKernelMultiDevice, 0) \
    E("cuMemcpy3DAsync", 7000, cuMemcpy3DAsync_v2_ptsz, 1)                   \
    E("cuMemcpyPeerAsync", 4000, cuMemcpyPeerAsync, 0)                       \
    E("cuMemcpyPeerAsync", 7000, cuMemcpyPeerAsync_ptsz, 1)                  \
    E("cuMemsetD16Async", 3020, cuMemsetD16Async, 0)                         \
    E("cuMemsetD16Async", 7000, cuMemsetD16Async_ptsz, 1)                    \
    E("cuMemsetD2D8Async", 3020, cuMemsetD2D8Async, 0)                       \
    E("cuMemsetD2D8Async", 7000, cuMemsetD2D8Async_ptsz, 1)                  \
    E("cuMemsetD2D16Async", 3020, cuMemsetD2D16Async, 0)                     \
    E("cuMemsetD2D16Async", 7000, cuMemsetD2D16Async_ptsz, 1)                \
    E("cuMemsetD2D32Async", 3020, cuMemsetD2D32Async, 0)                     \
    E("cuMemsetD2D32Async", 7000, cuMemsetD2D32Async_ptsz, 1)                \
    E("cuPointerGetAttributes", 7000, cuPointerGetAttributes, 0)             \
    E("cuMemsetD32Async", 3020, cuMemsetD32Async, 0)                         \
    E("cuMemsetD32Async", 7000, cuMemsetD32Async_ptsz, 1)                    \
    E("cuStreamCreate", 2000, cuStreamCreate, 0)                             \
    E("cuStreamDestroy", 4000, cuStreamDestroy_v2, 0)                        \
    E("cuStreamSynchronize", 2000, cuStreamSynchronize, 0)                   \
    E("cuStreamSynchronize", 7000, cuStreamSynchronize_ptsz, 1)              \
    E("cuStreamQuery", 2000, cuStreamQuery, 0)                               \
    E("cuStreamBeginCapture", 10010, cuStreamBeginCapture_v2, 0)             \
    E("cuStreamBeginCapture", 10010, cuStreamBeginCapture_v2_ptsz, 1)        \
    E("cuStreamEndCapture", 10000, cuStreamEndCapture, 0)                    \
    E("cuStreamEndCapture", 10000, cuStreamEndCapture_ptsz, 1)               \
    E("cuStreamGetCaptureInfo", 12030, cuStreamGetCaptureInfo_v3, 0)         \
    E("cuStreamGetCaptureInfo", 12030, cuStreamGetCaptureInfo_v3_ptsz, 1)    \
    E("cuCtxEnablePeerAccess", 4000, cuCtxEnablePeerAccess, 0)               \
    E("cuCtxDisablePeerAccess", 4000, cuCtxDisablePeerAccess, 0)             \
    E("cuDeviceCanAccessPeer", 4000, cuDeviceCanAccessPeer, 0)               \
    E("cuStreamIsCapturing", 10000, cuStreamIsCapturing, 0)                  \
    E("cuStreamIsCapturing", 10000, cuStreamIsCapturing_ptsz, 1)             \
    E("cuStreamQuery", 7000, cuStreamQuery_ptsz, 1)                          \
    E("cuEventCreate", 2000, cuEventCreate, 0)                               \
    E("cuEventDestroy", 4000, cuEventDestroy_v2, 0)                          \
    E("cuEventRecord", 2000, cuEventRecord, 0)                               \
    E("cuEventRecord", 7000, cuEventRecord_ptsz, 1)                          \
    E("cuEventSynchronize", 2000, cuEventSynchronize, 0)                     \
    E("cuEventQuery", 2000, cuEventQuery, 0)                                 \
    E("cuModuleLoadData", 2000, cuModuleLoadData, 0)                         \
    E("cuModuleLoadDataEx", 2010, cuModuleLoadDataEx, 0)                     \
    E("cuModuleUnload", 2000, cuModuleUnload, 0)                             \
    E("cuModuleGetFunction", 2000, cuModuleGetFunction, 0)                   \
    E("cuLibraryLoadData", 12000, cuLibraryLoadData, 0)                      \
    E("cuLibraryGetKernel", 12000, cuLibraryGetKernel, 0)                    \
    E("cuLibraryUnload", 12000, cuLibraryUnload, 0)                          \
    E("cuFuncGetParamInfo", 12040, cuFuncGetParamInfo, 0)                    \
    E("cuKernelGetParamInfo", 12040, cuKernelGetParamInfo, 0)                \
    E("cuLaunchKernel", 4000, cuLaunchKernel, 0)                             \
    E("cuLaunchKernel", 7000, cuLaunchKernel_ptsz, 1)                        \
    E("cuLaunchKernelEx", 11060, cuLaunchKernelEx, 0)                        \
    E("cuLaunchKernelEx", 11060, cuLaunchKernelEx_ptsz, 1)                   \
    E("cuLaunchCooperativeKernel", 9000, cuLaunchCooperativeKernel, 0)       \
    E("cuLaunchCooperativeKernel", 9000, cuLaunchCooperativeKernel_ptsz, 1)  \
    E("cuStreamWriteValue32", 11070, cuStreamWriteValue32_v2, 0)             \
    E("cuStreamWriteValue32", 11070, cuStreamWriteValue32_v2_ptsz, 1)        \
    E("cuStreamWriteValue64", 11070, cuStreamWriteValue64_v2, 0)             \
    E("cuStreamWriteValue64", 11070, cuStreamWriteValue64_v2_ptsz, 1)        \
    E("cuStreamWaitValue32", 11070, cuStreamWaitValue32_v2, 0)               \
    E("cuStreamWaitValue32", 11070, cuStreamWaitValue32_v2_ptsz, 1)          \
    E("cuStreamWaitValue64", 11070, cuStreamWaitValue64_v2, 0)               \
    E("cuStreamWaitValue64", 11070, cuStreamWaitValue64_v2_ptsz, 1)          \
    E("cuStreamBatchMemOp", 11070, cuStreamBatchMemOp_v2, 0)                 \
    E("cuStreamBatchMemOp", 11070, cuStreamBatchMemOp_v2_ptsz, 1)            \
    E("cuLaunchHostFunc", 10000, cuLaunchHostFunc, 0)                        \
    E("cuLaunchHostFunc", 10000, cuLaunchHostFunc_ptsz, 1)                   \
    E("cuGraphCreate", 10000, cuGraphCreate, 0)                              \
    E("cuGraphAddKernelNode", 12000, cuGraphAddKernelNode_v2, 0)             \
    E("cuGraphInstantiateWithFlags", 11040, cuGraphInstantiateWithFlags, 0)  \
    E("cuGraphInstantiate", 10000, cuGraphInstantiate, 0)                    \
    E("cuGraphInstantiate", 11000, cuGraphInstantiate_v2, 0)                 \
    E("cuGraphInstantiate", 12000, cuGraphInstantiateWithFlags, 0)           \
    E("cuGraphLaunch", 10000, cuGraphLaunch, 0)                              \
    E("cuGraphLaunch", 10000, cuGraphLaunch_ptsz, 1)                         \
    E("cuGraphUpload", 11010, cuGraphUpload, 0)                              \
    E("cuGraphUpload", 11010, cuGraphUpload_ptsz, 1)                         \
    E("cuGraphAddMemAllocNode", 11040, cuGraphAddMemAllocNode, 0)            \
    E("cuGraphAddMemFreeNode", 11040, cuGraphAddMemFreeNode, 0)              \
    E("cuGraphAddNode", 12030, cuGraphAddNode_v2, 0)                         \
    E("cuDeviceGraphMemTrim", 11040, cuDeviceGraphMemTrim, 0)                \
    E("cuDeviceGetGraphMemAttribute", 11040, cuDeviceGetGraphMemAttribute, 0) \
    E("cuGraphDestroy", 10000, cuGraphDestroy, 0)                            \
    E("cuGraphExecDestroy", 10000, cuGraphExecDestroy, 0)                    \
    E("cuMemGetAllocationGranularity", 10020, cuMemGetAllocationGranularity, 0) \
    E("cuMemAddressReserve", 10020, cuMemAddressReserve, 0)                  \
    E("cuMemAddressFree", 10020, cuMemAddressFree, 0)                        \
    E("cuMemCreate", 10020, cuMemCreate, 0)                                  \
    E("cuMemRelease", 10020, cuMemRelease, 0)                                \
    E("cuMemMap", 10020, cuMemMap, 0)                                        \
    E("cuMemUnmap", 10020, cuMemUnmap, 0)                                    \
    E("cuMemExportToShareableHandle", 10020, cuMemExportToShareableHandle, 0)\
    E("cuMemImportFromShareableHandle", 10020, cuMemImportFromShareableHandle, 0)\
    E("cuIpcGetMemHandle", 4010, cuIpcGetMemHandle, 0)                       \
    E("cuIpcOpenMemHandle", 4010, cuIpcOpenMemHandle, 0)                     \
    E("cuIpcOpenMemHandle", 11000, cuIpcOpenMemHandle_v2, 0)                 \
    E("cuIpcCloseMemHandle", 4010, cuIpcCloseMemHandle, 0)                   \
    E("cuMemSetAccess", 10020, cuMemSetAccess, 0)                            \
    E("cuMemGetAccess", 10020, cuMemGetAccess, 0)                            \
    E("cuMemGetHandleForAddressRange", 11070, cuMemGetHandleForAddressRange, 0)

/* Entry points an "old driver" build leaves out. A weak reference alone is
 * not enough: the dynamic linker would satisfy it with vramshim's export of
 * the same name. */
#ifdef FAKECUDA_NO_ASYNC_ALLOC
#define HAS_ASYNC 0
#else
#define HAS_ASYNC 1
#endif
#ifdef FAKECUDA_NO_LAUNCH_EX
#define HAS_LAUNCH_EX 0
#else
#define HAS_LAUNCH_EX 1
#endif
#ifdef FAKECUDA_NO_KERNEL_PARAM_INFO
#define HAS_KPARAM 0
#else
#define HAS_KPARAM 1
#endif
static int present(const char *base)
{
    if (!HAS_ASYNC && (strcmp(base, "cuMemAllocAsync") == 0 ||
                       strcmp(base, "cuMemAllocFromPoolAsync") == 0 ||
                       strcmp(base, "cuMemFreeAsync") == 0 ||
                       strcmp(base, "cuDeviceGetDefaultMemPool") == 0))
        return 0;
    if (!HAS_LAUNCH_EX && strcmp(base, "cuLaunchKernelEx") == 0)
        return 0;
    if (!HAS_KPARAM && strcmp(base, "cuKernelGetParamInfo") == 0)
        return 0;
    return 1;
}

#define DECLARE(base, ver, sym, ptds) extern void sym(void) __attribute__((weak));
FK_PROC_TABLE(DECLARE)

struct entry {
    const char *base;
    int version;
    int per_thread;
    void (*fn)(void);
};

#define ROW(base, ver, sym, ptds) {base, ver, ptds, sym},
static const struct entry table[] = {FK_PROC_TABLE(ROW)};


fk_result cuGetProcAddress(const char *, void **, int, uint64_t);
fk_result cuGetProcAddress_v2(const char *, void **, int, uint64_t, int *);

/* The look-up's own entry: v1 up to CUDA 11.x, v2 (with status) from 12.0. */
static const struct entry self_rows[] = {
    {"cuGetProcAddress", 11030, 0, (void (*)(void))cuGetProcAddress},
    {"cuGetProcAddress", 12000, 0, (void (*)(void))cuGetProcAddress_v2},
};

static fk_result lookup(const char *symbol, void **pfn, int version,
                        uint64_t flags, int *status)
{
    if (symbol == NULL || pfn == NULL)
        return FK_ERROR_INVALID_VALUE;
    int want_pt = (flags & FK_PER_THREAD) != 0;
    const struct entry *best = NULL, *legacy = NULL;
    int named = 0;
    size_t n_table = sizeof table / sizeof table[0];
    for (size_t i = 0; i < n_table + 2; i++) {
        const struct entry *e = i < n_table ? &table[i] : &self_rows[i - n_table];
        if (strcmp(e->base, symbol) != 0 || e->fn == NULL || !present(e->base))
            continue;
        named = 1;
        if (e->version > version)
            continue;
        const struct entry **slot = e->per_thread ? &best : &legacy;
        if (*slot == NULL || e->version >= (*slot)->version)
            *slot = e;
    }
    const struct entry *pick = want_pt && best ? best : legacy;
    *pfn = pick ? (void *)pick->fn : NULL;
    *status = pick ? STATUS_SUCCESS
                   : named ? STATUS_VERSION_NOT_SUFFICIENT : STATUS_SYMBOL_NOT_FOUND;
    return pick ? FK_SUCCESS : FK_ERROR_NOT_FOUND;
}

__attribute__((visibility("default"))) fk_result
cuGetProcAddress_v2(const char *symbol, void **pfn, int version, uint64_t flags,
                    int *symbolStatus)
{
    int status;
    fk_result rc = lookup(symbol, pfn, version, flags, &status);
    if (symbolStatus)
        *symbolStatus = status;
    return rc;
}

__attribute__((visibility("default"))) fk_result
cuGetProcAddress(const char *symbol, void **pfn, int version, uint64_t flags)
{
    int status;
    return lookup(symbol, pfn, version, flags, &status);
}
