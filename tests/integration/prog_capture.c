/*
 * prog_capture: a stream capture survives memory pressure (issue 11, case
 * 2). Synchronising a context while one of its streams captures
 * invalidates the capture, so during one vramshim must not fence:
 *
 *   1. During the capture a kernel names a buffer the program offloaded
 *      (it would be brought back, behind a synchronise) and an allocation
 *      needs room (make-room synchronises). The buffer stays in pinned
 *      memory and the allocation is refused with CUDA_ERROR_OUT_OF_MEMORY,
 *      as the driver refuses one; the capture ends with a graph.
 *   2. The graph replays under pressure: between replays other buffers
 *      push the captured ones off the device and back, and the program
 *      changes the input; every replay's output holds exactly the bytes
 *      the kernel computes from the input at that replay.
 */
#include "check.h"

#include <string.h>
#include <unistd.h>

#define M (1ULL << 20)
#define N (16 * M)
#define REPLAYS 6

static struct {
    struct check_driver d; /* lib, alloc, release, htod, dtoh, set_ctx, ctx */
    CUresult (*stream_create)(CUstream *, unsigned int);
    CUresult (*stream_sync)(CUstream);
    CUresult (*begin)(CUstream, CUstreamCaptureMode);
    CUresult (*end)(CUstream, CUgraph *);
    CUresult (*is_capturing)(CUstream, CUstreamCaptureStatus *);
    CUresult (*instantiate)(CUgraphExec *, CUgraph, unsigned long long);
    CUresult (*graph_launch)(CUgraphExec, CUstream);
    CUresult (*launch)(CUfunction, unsigned, unsigned, unsigned, unsigned, unsigned, unsigned,
                       unsigned, CUstream, void **, void **);
    int (*offload)(uint64_t);
    CUfunction mix;
} cu;

/* mix(out, a, d, n): out[i] = a[i] ^ d[i] ^ 0x5a */
static void mix_body(void **params, fakecuda_dim3 grid, fakecuda_dim3 block)
{
    (void)grid;
    (void)block;
    unsigned char *out = (unsigned char *)(uintptr_t)*(CUdeviceptr *)params[0];
    const unsigned char *a = (const unsigned char *)(uintptr_t)*(CUdeviceptr *)params[1];
    const unsigned char *d = (const unsigned char *)(uintptr_t)*(CUdeviceptr *)params[2];
    uint64_t n = *(uint64_t *)params[3];
    for (uint64_t i = 0; i < n; i++)
        out[i] = a[i] ^ d[i] ^ 0x5a;
}

static void open_driver(void)
{
    check_driver_open(&cu.d);
    cu.stream_create = check_sym(cu.d.lib, "cuStreamCreate");
    cu.stream_sync = check_sym(cu.d.lib, "cuStreamSynchronize");
    cu.begin = check_sym(cu.d.lib, "cuStreamBeginCapture_v2");
    cu.end = check_sym(cu.d.lib, "cuStreamEndCapture");
    cu.is_capturing = check_sym(cu.d.lib, "cuStreamIsCapturing");
    cu.instantiate = check_sym(cu.d.lib, "cuGraphInstantiateWithFlags");
    cu.graph_launch = check_sym(cu.d.lib, "cuGraphLaunch");
    cu.launch = check_sym(cu.d.lib, "cuLaunchKernel");
    cu.offload = check_api("vramshim_offload");
    const size_t sizes[] = {8, 8, 8, 8};
    cu.mix = check_kernel(cu.d.lib, "mix", mix_body, 4, sizes);
}

static unsigned char a_bytes[N], d_bytes[N], want[N], got[N];

static void expect_out(CUdeviceptr out, const char *when)
{
    for (size_t i = 0; i < N; i++)
        want[i] = a_bytes[i] ^ d_bytes[i] ^ 0x5a;
    CHECK_CU(cu.d.dtoh(got, out, N));
    CHECK(memcmp(got, want, N) == 0, "%s: the graph's output is wrong", when);
}

int main(int argc, char **argv)
{
    const char *env[] = {"FAKECUDA_MEM=256M",      "VRAMSHIM_VRAM_LIMIT=64M",
                         "VRAMSHIM_OFFLOAD=pinned", "VRAMSHIM_PIN_LIMIT=256M",
                         "VRAMSHIM_LOG=error",      NULL};
    check_reexec_env(argv, env);
    check_watchdog("prog_capture", 120);
    open_driver();

    CUdeviceptr a, d, out;
    check_fill(a_bytes, N, 1);
    check_fill(d_bytes, N, 2);
    CHECK_CU(cu.d.alloc(&a, N));
    CHECK_CU(cu.d.alloc(&d, N));
    CHECK_CU(cu.d.alloc(&out, N));
    CHECK_CU(cu.d.htod(a, a_bytes, N));
    CHECK_CU(cu.d.htod(d, d_bytes, N));
    CHECK(cu.offload(d) == 0, "vramshim_offload");

    /* 1: capture, with a kernel naming the offloaded buffer and an
     * allocation that needs room (32 MiB resident, d is pinned; + 40 > 64) */
    CUstream s;
    CHECK_CU(cu.stream_create(&s, 0));
    CHECK_CU(cu.begin(s, CU_STREAM_CAPTURE_MODE_GLOBAL));
    uint64_t n = N;
    void *params[] = {&out, &a, &d, &n};
    CHECK_CU(cu.launch(cu.mix, 1, 1, 1, 1, 1, 1, 0, s, params, NULL));
    CUdeviceptr big;
    CUresult rc = cu.d.alloc(&big, 40 * M);
    CHECK(rc == CUDA_ERROR_OUT_OF_MEMORY, "cuMemAlloc needing room during a capture: %d",
          (int)rc);
    CUstreamCaptureStatus status;
    CHECK_CU(cu.is_capturing(s, &status));
    CHECK(status == CU_STREAM_CAPTURE_STATUS_ACTIVE, "capture status %d after the allocation",
          (int)status);
    CUgraph graph;
    CHECK_CU(cu.end(s, &graph));
    CHECK(graph != NULL, "no graph");
    CUgraphExec exec;
    CHECK_CU(cu.instantiate(&exec, graph, 0));
    check_invariants("after the capture");

    /* 2: replays, with the captured buffers pushed around in between */
    for (int r = 0; r < REPLAYS; r++) {
        CHECK_CU(cu.graph_launch(exec, s));
        CHECK_CU(cu.stream_sync(s));
        expect_out(out, "replay");
        /* pressure: 40 MiB more than fits, so captured buffers move */
        CUdeviceptr p;
        CHECK_CU(cu.d.alloc(&p, 40 * M));
        unsigned char *fill = got;
        memset(fill, r, 40 * M > N ? N : 40 * M);
        CHECK_CU(cu.d.htod(p, fill, N));
        CHECK_CU(cu.d.release(p));
        if (r % 2)
            CHECK(cu.offload(r % 4 == 1 ? a : out) == 0, "vramshim_offload");
        check_fill(a_bytes, N, 10 + (unsigned)r); /* a new input for the next replay */
        CHECK_CU(cu.d.htod(a, a_bytes, N));
        check_invariants("between replays");
    }
    printf("capture: survived an offloaded buffer and an allocation needing room; "
           "%d replays under pressure, every byte right\n", REPLAYS);
    return 0;
}
