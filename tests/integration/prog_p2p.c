/*
 * prog_p2p: peer access over backed buffers, on two test devices (issue
 * 11, cases 3 and 4). cuCtxEnablePeerAccess reaches cuMemAlloc memory
 * only; vramshim backs cuMemAlloc with VMM, which a device reaches only
 * when cuMemSetAccess names it, so vramshim must grant it.
 *
 *   1. Device 1 enables peer access to device 0; a kernel on device 1
 *      reads a backed buffer of device 0 (made before the grant) and one
 *      made after it, and a copy queued on device 1's stream copies
 *      device 0's buffer into device 1's (P2P). A buffer in pinned memory
 *      (read by a graph, which leaves it there) and one moved to pageable
 *      memory and back keep the access.
 *   2. The fence covers every context that can reach the buffer: a kernel
 *      queued on device 1 that will read device 0's buffer, held behind a
 *      wait on a value, keeps that buffer from moving where nothing could
 *      reach it (pageable memory); without that the kernel faults.
 *   3. Disabling peer access takes the grant back: the kernel faults
 *      (CUDA_ERROR_ILLEGAL_ADDRESS), as without vramshim.
 */
#include "check.h"

#include <signal.h>
#include <string.h>
#include <unistd.h>

#define M (1ULL << 20)
#define N (8 * M)

static struct {
    struct check_driver d; /* lib, alloc, release, htod, dtoh, set_ctx, ctx */
    CUresult (*dtod_async)(CUdeviceptr, CUdeviceptr, size_t, CUstream);
    CUresult (*stream_create)(CUstream *, unsigned int);
    CUresult (*stream_sync)(CUstream);
    CUresult (*ctx_sync)(void);
    CUresult (*retain)(CUcontext *, CUdevice);
    CUresult (*enable)(CUcontext, unsigned int);
    CUresult (*disable)(CUcontext);
    CUresult (*wait32)(CUstream, CUdeviceptr, cuuint32_t, unsigned int);
    CUresult (*host_alloc)(void **, size_t, unsigned int);
    CUresult (*launch)(CUfunction, unsigned, unsigned, unsigned, unsigned, unsigned, unsigned,
                       unsigned, CUstream, void **, void **);
    CUresult (*memset8)(CUdeviceptr, unsigned char, size_t);
    CUresult (*graph_create)(CUgraph *, unsigned int);
    CUresult (*graph_add_kernel)(CUgraphNode *, CUgraph, const CUgraphNode *, size_t,
                                 const CUDA_KERNEL_NODE_PARAMS *);
    CUresult (*instantiate)(CUgraphExec *, CUgraph, unsigned long long);
    CUresult (*graph_launch)(CUgraphExec, CUstream);
    int (*offload)(uint64_t);
    int (*prefetch)(uint64_t);
    CUfunction copy;
} cu;

static void fault(int sig)
{
    static const char msg[] = "FAIL prog_p2p: a kernel faulted reaching a buffer that moved "
                              "under queued peer work\n";
    (void)sig;
    if (write(2, msg, sizeof msg - 1) < 0)
        _exit(1);
    _exit(1);
}

static void open_driver(void)
{
    check_driver_open(&cu.d);
    cu.dtod_async = check_sym(cu.d.lib, "cuMemcpyDtoDAsync_v2");
    cu.stream_create = check_sym(cu.d.lib, "cuStreamCreate");
    cu.stream_sync = check_sym(cu.d.lib, "cuStreamSynchronize");
    cu.ctx_sync = check_sym(cu.d.lib, "cuCtxSynchronize");
    cu.retain = check_sym(cu.d.lib, "cuDevicePrimaryCtxRetain");
    cu.enable = check_sym(cu.d.lib, "cuCtxEnablePeerAccess");
    cu.disable = check_sym(cu.d.lib, "cuCtxDisablePeerAccess");
    cu.wait32 = check_sym(cu.d.lib, "cuStreamWaitValue32_v2");
    cu.host_alloc = check_sym(cu.d.lib, "cuMemHostAlloc");
    cu.launch = check_sym(cu.d.lib, "cuLaunchKernel");
    cu.memset8 = check_sym(cu.d.lib, "cuMemsetD8_v2");
    cu.graph_create = check_sym(cu.d.lib, "cuGraphCreate");
    cu.graph_add_kernel = check_sym(cu.d.lib, "cuGraphAddKernelNode_v2");
    cu.instantiate = check_sym(cu.d.lib, "cuGraphInstantiateWithFlags");
    cu.graph_launch = check_sym(cu.d.lib, "cuGraphLaunch");
    cu.offload = check_api("vramshim_offload");
    cu.prefetch = check_api("vramshim_prefetch");
    cu.copy = check_copy_kernel(cu.d.lib);
}

static CUcontext ctx0, ctx1;
static unsigned char want[N], got[N];

static CUdeviceptr alloc_filled(CUcontext ctx, unsigned seed)
{
    CUdeviceptr p;
    CHECK_CU(cu.d.set_ctx(ctx));
    CHECK_CU(cu.d.alloc(&p, N));
    check_fill(want, N, seed);
    CHECK_CU(cu.d.htod(p, want, N));
    return p;
}

/* A kernel on device 1 copies src (device 0) into dst (device 1). */
static CUresult peer_kernel(CUstream s, CUdeviceptr dst, CUdeviceptr src)
{
    uint64_t n = N;
    void *params[] = {&dst, &src, &n};
    CHECK_CU(cu.d.set_ctx(ctx1));
    CHECK_CU(cu.launch(cu.copy, 1, 1, 1, 1, 1, 1, 0, s, params, NULL));
    return cu.ctx_sync();
}

static void expect(CUdeviceptr p, unsigned seed, const char *what)
{
    check_fill(want, N, seed);
    CHECK_CU(cu.d.dtoh(got, p, N));
    CHECK(memcmp(got, want, N) == 0, "%s: wrong bytes", what);
}

int main(int argc, char **argv)
{
    const char *env[] = {"FAKECUDA_DEVICES=2",  "FAKECUDA_MEM=256M", "VRAMSHIM_OFFLOAD=auto",
                         "VRAMSHIM_PIN_LIMIT=12M", "VRAMSHIM_IDLE_MS=0", "VRAMSHIM_FENCE_MS=300",
                         "VRAMSHIM_FAST_COPY_MIN=0", "VRAMSHIM_LOG=error", NULL};
    check_reexec_env(argv, env);
    signal(SIGSEGV, fault);
    signal(SIGBUS, fault);
    check_watchdog("prog_p2p", 120);
    open_driver();
    CHECK_CU(cu.retain(&ctx0, 0));
    CHECK_CU(cu.retain(&ctx1, 1));

    /* 1: peer kernel and P2P copy */
    CUdeviceptr a = alloc_filled(ctx0, 1); /* before the grant */
    CUdeviceptr b = alloc_filled(ctx1, 2);
    CHECK_CU(cu.d.set_ctx(ctx1));
    CHECK_CU(cu.enable(ctx0, 0));
    CUdeviceptr a2 = alloc_filled(ctx0, 3); /* after it */
    CUstream s1;
    CHECK_CU(cu.d.set_ctx(ctx1));
    CHECK_CU(cu.stream_create(&s1, 0));
    CHECK_CU(peer_kernel(s1, b, a));
    expect(b, 1, "peer kernel reading a buffer backed before the grant");
    CHECK_CU(peer_kernel(s1, b, a2));
    expect(b, 3, "peer kernel reading a buffer backed after the grant");
    CHECK_CU(cu.d.set_ctx(ctx1));
    CHECK_CU(cu.dtod_async(b, a, N, s1));
    CHECK_CU(cu.stream_sync(s1));
    expect(b, 1, "P2P copy on device 1's stream");
    /* in pinned memory (8 of 12 MiB of pin budget): a graph launch does not bring
     * it back, so device 1's kernel reads the host handles' mapping */
    CHECK_CU(cu.d.set_ctx(ctx0));
    CHECK(cu.offload(a) == 0, "vramshim_offload to pinned memory");
    json_t *st = stats_get();
    CHECK_EQ_U64(stats_u64(st, "devices.0.offloaded_pinned"), N);
    json_decref(st);
    CHECK_CU(cu.d.set_ctx(ctx1));
    CHECK_CU(cu.memset8(b, 0, N));
    CUgraph g;
    CUgraphExec exec;
    uint64_t n = N;
    void *gparams[] = {&b, &a, &n};
    CUDA_KERNEL_NODE_PARAMS node = {.func = cu.copy, .gridDimX = 1, .gridDimY = 1,
                                    .gridDimZ = 1, .blockDimX = 1, .blockDimY = 1,
                                    .blockDimZ = 1, .kernelParams = gparams};
    CHECK_CU(cu.graph_create(&g, 0));
    CHECK_CU(cu.graph_add_kernel(NULL, g, NULL, 0, &node));
    CHECK_CU(cu.instantiate(&exec, g, 0));
    CHECK_CU(cu.graph_launch(exec, s1));
    CHECK_CU(cu.ctx_sync());
    expect(b, 1, "peer graph kernel reading a buffer in pinned memory");
    /* to pageable memory (the pin budget is spent) and back */
    CHECK_CU(cu.d.set_ctx(ctx0));
    CHECK(cu.offload(a2) == 0, "vramshim_offload to pageable memory");
    CHECK(cu.prefetch(a2) == 0, "vramshim_prefetch");
    CHECK_CU(peer_kernel(s1, b, a2));
    expect(b, 3, "peer kernel after a round trip through pageable memory");
    check_invariants("peer access");

    /* 2: the fence waits for device 1's queued work on a2; it cannot (the
     * work waits on a word), so a2 does not move */
    uint32_t *word;
    CHECK_CU(cu.host_alloc((void **)&word, 4096, CU_MEMHOSTALLOC_DEVICEMAP));
    *word = 0;
    CHECK_CU(cu.d.set_ctx(ctx1));
    CHECK_CU(cu.wait32(s1, (CUdeviceptr)(uintptr_t)word, 1, CU_STREAM_WAIT_VALUE_GEQ));
    void *params[] = {&b, &a2, &n};
    CHECK_CU(cu.launch(cu.copy, 1, 1, 1, 1, 1, 1, 0, s1, params, NULL));
    CHECK_CU(cu.d.set_ctx(ctx0));
    int rc = cu.offload(a2); /* a holds the pin budget: a2 could only go pageable */
    CHECK(rc == -12, "vramshim_offload of a buffer a peer's queued kernel reads: %d", rc);
    __atomic_store_n(word, 1, __ATOMIC_SEQ_CST);
    CHECK_CU(cu.d.set_ctx(ctx1));
    CHECK_CU(cu.stream_sync(s1));
    expect(b, 3, "the queued peer kernel");
    check_invariants("peer fence");

    /* 3: taking the grant back */
    CHECK_CU(cu.d.set_ctx(ctx1));
    CHECK_CU(cu.disable(ctx0));
    CUresult r = peer_kernel(s1, b, a);
    CHECK(r == CUDA_ERROR_ILLEGAL_ADDRESS, "peer kernel after the grant was taken back: %d",
          (int)r);
    printf("p2p: peer kernels and a P2P copy over backed buffers, before and after moves; "
           "queued peer work fenced; the grant taken back\n");
    return 0;
}
