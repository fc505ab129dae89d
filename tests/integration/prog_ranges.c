/*
 * prog_ranges: what a program does to a backed buffer's address range
 * itself holds wherever vramshim moves the buffer (issue 11, the hook
 * coverage gaps), on two test devices, offload pinned.
 *
 *   1. cuMemSetAccess: the program grants device 1 access to a buffer of
 *      device 0 itself (no peer access enabled). A kernel on device 1
 *      reads it on the device, in pinned host memory (a graph launch
 *      leaves it there) and back on the device; cuMemGetAccess answers
 *      what the program set throughout. Taking the grant back faults the
 *      kernel (CUDA_ERROR_ILLEGAL_ADDRESS), as without vramshim.
 *   2. cuMemGetHandleForAddressRange: a buffer exported as a dma-buf never
 *      moves again (the reader of the descriptor would keep the old
 *      pages): vramshim_offload and the pressure of other buffers leave it
 *      on the device, and what the program writes there is what the
 *      descriptor reads.
 */
#include "check.h"

#include <errno.h>
#include <signal.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "fakecuda.h"

#define M (1ULL << 20)
#define N (8 * M)

static struct {
    void *lib;
    CUresult (*alloc)(CUdeviceptr *, size_t);
    CUresult (*htod)(CUdeviceptr, const void *, size_t);
    CUresult (*dtoh)(void *, CUdeviceptr, size_t);
    CUresult (*memset8)(CUdeviceptr, unsigned char, size_t);
    CUresult (*stream_create)(CUstream *, unsigned int);
    CUresult (*ctx_sync)(void);
    CUresult (*retain)(CUcontext *, CUdevice);
    CUresult (*set_ctx)(CUcontext);
    CUresult (*set_access)(CUdeviceptr, size_t, const CUmemAccessDesc *, size_t);
    CUresult (*get_access)(unsigned long long *, const CUmemLocation *, CUdeviceptr);
    CUresult (*range_handle)(void *, CUdeviceptr, size_t, CUmemRangeHandleType,
                             unsigned long long);
    CUresult (*graph_create)(CUgraph *, unsigned int);
    CUresult (*graph_add_kernel)(CUgraphNode *, CUgraph, const CUgraphNode *, size_t,
                                 const CUDA_KERNEL_NODE_PARAMS *);
    CUresult (*instantiate)(CUgraphExec *, CUgraph, unsigned long long);
    CUresult (*graph_launch)(CUgraphExec, CUstream);
    int (*offload)(uint64_t);
    int (*prefetch)(uint64_t);
    CUfunction copy;
} cu;

static CUcontext ctx0, ctx1;
static unsigned char want[N], got[N];

static void fault(int sig)
{
    static const char msg[] = "FAIL prog_ranges: a kernel faulted outside the driver's checks\n";
    static const char hung[] = "FAIL prog_ranges: a call hung (the watchdog fired)\n";
    if (write(2, sig == SIGALRM ? hung : msg, (sig == SIGALRM ? sizeof hung : sizeof msg) - 1))
        _exit(1);
    _exit(1);
}

static void open_driver(void)
{
    cu.lib = check_libcuda();
    check_context(cu.lib, 0);
    cu.alloc = check_sym(cu.lib, "cuMemAlloc_v2");
    cu.htod = check_sym(cu.lib, "cuMemcpyHtoD_v2");
    cu.dtoh = check_sym(cu.lib, "cuMemcpyDtoH_v2");
    cu.memset8 = check_sym(cu.lib, "cuMemsetD8_v2");
    cu.stream_create = check_sym(cu.lib, "cuStreamCreate");
    cu.ctx_sync = check_sym(cu.lib, "cuCtxSynchronize");
    cu.retain = check_sym(cu.lib, "cuDevicePrimaryCtxRetain");
    cu.set_ctx = check_sym(cu.lib, "cuCtxSetCurrent");
    cu.set_access = check_sym(cu.lib, "cuMemSetAccess");
    cu.get_access = check_sym(cu.lib, "cuMemGetAccess");
    cu.range_handle = check_sym(cu.lib, "cuMemGetHandleForAddressRange");
    cu.graph_create = check_sym(cu.lib, "cuGraphCreate");
    cu.graph_add_kernel = check_sym(cu.lib, "cuGraphAddKernelNode_v2");
    cu.instantiate = check_sym(cu.lib, "cuGraphInstantiateWithFlags");
    cu.graph_launch = check_sym(cu.lib, "cuGraphLaunch");
    cu.offload = check_api("vramshim_offload");
    cu.prefetch = check_api("vramshim_prefetch");
    cu.copy = check_copy_kernel(cu.lib);
    CHECK_CU(cu.retain(&ctx0, 0));
    CHECK_CU(cu.retain(&ctx1, 1));
}

static CUdeviceptr alloc_filled(CUcontext ctx, unsigned seed)
{
    CUdeviceptr p;
    CHECK_CU(cu.set_ctx(ctx));
    CHECK_CU(cu.alloc(&p, N));
    check_fill(want, N, seed);
    CHECK_CU(cu.htod(p, want, N));
    return p;
}

/* A kernel on device 1 copies src into dst, launched in a graph (which
 * leaves an offloaded buffer where it is); the context's verdict. */
static CUresult peer_copy(CUstream s1, CUdeviceptr dst, CUdeviceptr src)
{
    CHECK_CU(cu.set_ctx(ctx1));
    CHECK_CU(cu.memset8(dst, 0, N));
    uint64_t n = N;
    void *params[] = {&dst, &src, &n};
    CUDA_KERNEL_NODE_PARAMS node = {.func = cu.copy, .gridDimX = 1, .gridDimY = 1,
                                    .gridDimZ = 1, .blockDimX = 1, .blockDimY = 1,
                                    .blockDimZ = 1, .kernelParams = params};
    CUgraph g;
    CUgraphExec exec;
    CHECK_CU(cu.graph_create(&g, 0));
    CHECK_CU(cu.graph_add_kernel(NULL, g, NULL, 0, &node));
    CHECK_CU(cu.instantiate(&exec, g, 0));
    CHECK_CU(cu.graph_launch(exec, s1));
    return cu.ctx_sync();
}

static void expect(CUdeviceptr p, unsigned seed, const char *what)
{
    check_fill(want, N, seed);
    CHECK_CU(cu.dtoh(got, p, N));
    CHECK(memcmp(got, want, N) == 0, "%s: wrong bytes", what);
}

static unsigned long long access_of(CUdeviceptr p, int dev)
{
    CUmemLocation loc = {.type = CU_MEM_LOCATION_TYPE_DEVICE, .id = dev};
    unsigned long long flags = 99;
    CHECK_CU(cu.get_access(&flags, &loc, p));
    return flags;
}

static void grant(CUdeviceptr p, int dev, CUmemAccess_flags flags)
{
    CUmemAccessDesc d = {.location = {.type = CU_MEM_LOCATION_TYPE_DEVICE, .id = dev},
                         .flags = flags};
    CHECK_CU(cu.set_access(p, N, &d, 1));
}

/* ---- 1: the program's own access grant ------------------------------------------ */
static void access_grant(void)
{
    CUdeviceptr a = alloc_filled(ctx0, 1), b = alloc_filled(ctx1, 2);
    CUstream s1;
    CHECK_CU(cu.set_ctx(ctx1));
    CHECK_CU(cu.stream_create(&s1, 0));
    CHECK(access_of(a, 1) == CU_MEM_ACCESS_FLAGS_PROT_NONE, "device 1 reaches a ungranted");
    grant(a, 1, CU_MEM_ACCESS_FLAGS_PROT_READWRITE);
    CHECK(access_of(a, 1) == CU_MEM_ACCESS_FLAGS_PROT_READWRITE, "the grant is not seen");
    CHECK(access_of(a, 0) == CU_MEM_ACCESS_FLAGS_PROT_READWRITE, "a's own device");
    CHECK_CU(peer_copy(s1, b, a));
    expect(b, 1, "device 1 reading a on the device");

    CHECK_CU(cu.set_ctx(ctx0));
    CHECK(cu.offload(a) == 0, "vramshim_offload");
    CHECK_EQ_U64(stats_now("devices.0.offloaded_pinned"), N);
    CHECK(access_of(a + 3 * M, 1) == CU_MEM_ACCESS_FLAGS_PROT_READWRITE,
          "cuMemGetAccess of a in pinned memory");
    CUresult rc = peer_copy(s1, b, a);
    CHECK(rc == CUDA_SUCCESS, "device 1 reading a in pinned host memory: %d (the program's "
          "grant did not follow the buffer)", (int)rc);
    CHECK_EQ_U64(stats_now("devices.0.offloaded_pinned"), N);
    expect(b, 1, "device 1 reading a in pinned memory");

    CHECK_CU(cu.set_ctx(ctx0));
    CHECK(cu.prefetch(a) == 0, "vramshim_prefetch");
    CHECK_EQ_U64(stats_now("devices.0.offloaded_pinned"), 0);
    rc = peer_copy(s1, b, a);
    CHECK(rc == CUDA_SUCCESS, "device 1 reading a back on the device: %d (the program's "
          "grant was not applied again)", (int)rc);
    expect(b, 1, "device 1 reading a back on the device");
    check_invariants("after the program's grant");

    /* taken back: device 1's kernel faults, as it would without vramshim */
    grant(a, 1, CU_MEM_ACCESS_FLAGS_PROT_NONE);
    CHECK(access_of(a, 1) == CU_MEM_ACCESS_FLAGS_PROT_NONE, "the revocation is not seen");
    rc = peer_copy(s1, b, a);
    CHECK(rc == CUDA_ERROR_ILLEGAL_ADDRESS, "device 1 reading a after the grant was taken "
          "back: %d", (int)rc);
}

/* ---- 2: a dma-buf of the range --------------------------------------------------- */
static void exported(void)
{
    CUdeviceptr e = alloc_filled(ctx0, 7); /* one chunk: the descriptor covers it all */
    CHECK_CU(cu.set_ctx(ctx0));
    CHECK(cu.offload(e) == 0, "vramshim_offload before the export");
    int fd = -1;
    CHECK_CU(cu.range_handle(&fd, e, N, CU_MEM_RANGE_HANDLE_TYPE_DMA_BUF_FD, 0));
    CHECK(fd >= 0, "no descriptor");
    CHECK_EQ_U64(stats_now("devices.0.offloaded_pinned"), 0); /* it came back to be exported */
    int rc = cu.offload(e);
    CHECK(rc == -EBUSY, "vramshim_offload of an exported buffer: %d", rc);
    CHECK_EQ_U64(stats_now("devices.0.offloaded_pinned"), 0);
    /* the program writes; the descriptor's reader sees it */
    check_fill(want, N, 8);
    CHECK_CU(cu.htod(e, want, N));
    const unsigned char *seen = mmap(NULL, N, PROT_READ, MAP_SHARED, fd, 0);
    CHECK(seen != MAP_FAILED, "mmap of the descriptor");
    CHECK(memcmp(seen, want, N) == 0, "the dma-buf reads other bytes than the buffer holds");
    munmap((void *)seen, N);
    close(fd);
    check_invariants("after the export");
}

int main(int argc, char **argv)
{
    const char *env[] = {"FAKECUDA_DEVICES=2",      "FAKECUDA_MEM=256M",
                         "VRAMSHIM_OFFLOAD=pinned",  "VRAMSHIM_PIN_LIMIT=64M",
                         "VRAMSHIM_LOG=error",       NULL};
    check_reexec_env(argv, env);
    signal(SIGALRM, fault);
    signal(SIGSEGV, fault);
    signal(SIGBUS, fault);
    alarm(120);
    open_driver();
    exported();
    access_grant(); /* last: it ends with device 1's context faulted */
    printf("ranges: the program's access grant held in pinned memory and back; an exported "
           "buffer stayed on the device\n");
    return 0;
}
