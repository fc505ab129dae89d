/*
 * prog_launch: every launch entry point, both stream variants and graphs,
 * is counted once per call, and the kernels still do their work.
 */
#include "check.h"

#include <dlfcn.h>
#include <string.h>

static void add_one(void **params, fakecuda_dim3 grid, fakecuda_dim3 block)
{
    unsigned *buf = (unsigned *)(uintptr_t)*(CUdeviceptr *)params[0];
    unsigned n = *(unsigned *)params[1];
    (void)grid;
    (void)block;
    for (unsigned i = 0; i < n; i++)
        buf[i] += 1;
}

typedef CUresult (*gpa_fn)(const char *, void **, int, cuuint64_t,
                           CUdriverProcAddressQueryResult *);

int main(void)
{
    void *lib = check_libcuda();
    check_context(lib, 0);
    gpa_fn gpa = (gpa_fn)check_sym(lib, "cuGetProcAddress_v2");
    size_t sizes[2] = {sizeof(CUdeviceptr), sizeof(unsigned)};
    CUfunction f = check_kernel(lib, "add_one", add_one, 2, sizes);

    CUresult (*alloc)(CUdeviceptr *, size_t) = check_sym(lib, "cuMemAlloc_v2");
    CUresult (*memset32)(CUdeviceptr, unsigned, size_t) = check_sym(lib, "cuMemsetD32_v2");
    CUresult (*dtoh)(void *, CUdeviceptr, size_t) = check_sym(lib, "cuMemcpyDtoH_v2");
    CUresult (*sync)(void) = check_sym(lib, "cuCtxSynchronize");
    enum { N = 1024 };
    CUdeviceptr buf;
    CHECK_CU(alloc(&buf, N * sizeof(unsigned)));
    CHECK_CU(memset32(buf, 0, N));
    unsigned n = N;
    void *params[2] = {&buf, &n};

    CUresult (*launch)(CUfunction, unsigned, unsigned, unsigned, unsigned, unsigned,
                       unsigned, unsigned, CUstream, void **, void **) = NULL;
    CUresult (*launch_pt)(CUfunction, unsigned, unsigned, unsigned, unsigned, unsigned,
                          unsigned, unsigned, CUstream, void **, void **) = NULL;
    CUresult (*launch_ex)(const CUlaunchConfig *, CUfunction, void **, void **) =
        check_sym(lib, "cuLaunchKernelEx");
    CUresult (*coop)(CUfunction, unsigned, unsigned, unsigned, unsigned, unsigned,
                     unsigned, unsigned, CUstream, void **) = NULL;
    CHECK_CU(gpa("cuLaunchKernel", (void **)&launch, 13000, 0, NULL));
    CHECK_CU(gpa("cuLaunchKernel", (void **)&launch_pt, 13000,
                 CU_GET_PROC_ADDRESS_PER_THREAD_DEFAULT_STREAM, NULL));
    CHECK_CU(gpa("cuLaunchCooperativeKernel", (void **)&coop, 13000, 0, NULL));

    CHECK_CU(launch(f, 1, 1, 1, 32, 1, 1, 0, NULL, params, NULL));
    CHECK_CU(launch_pt(f, 1, 1, 1, 32, 1, 1, 0, CU_STREAM_PER_THREAD, params, NULL));
    CUlaunchConfig cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.gridDimX = cfg.gridDimY = cfg.gridDimZ = 1;
    cfg.blockDimX = 32;
    cfg.blockDimY = cfg.blockDimZ = 1;
    CHECK_CU(launch_ex(&cfg, f, params, NULL));
    CHECK_CU(coop(f, 1, 1, 1, 32, 1, 1, 0, NULL, params));

    /* a graph of two kernel nodes is one graph launch */
    CUresult (*graph_create)(CUgraph *, unsigned) = check_sym(lib, "cuGraphCreate");
    CUresult (*add_node)(CUgraphNode *, CUgraph, const CUgraphNode *, size_t,
                         const CUDA_KERNEL_NODE_PARAMS *) = check_sym(lib, "cuGraphAddKernelNode_v2");
    CUresult (*instantiate)(CUgraphExec *, CUgraph, unsigned long long) =
        check_sym(lib, "cuGraphInstantiateWithFlags");
    CUresult (*graph_launch)(CUgraphExec, CUstream) = check_sym(lib, "cuGraphLaunch");
    CUgraph g;
    CUgraphExec ge;
    CHECK_CU(graph_create(&g, 0));
    CUDA_KERNEL_NODE_PARAMS kp;
    memset(&kp, 0, sizeof kp);
    kp.func = f;
    kp.gridDimX = kp.gridDimY = kp.gridDimZ = 1;
    kp.blockDimX = kp.blockDimY = kp.blockDimZ = 1;
    kp.kernelParams = params;
    CHECK_CU(add_node(NULL, g, NULL, 0, &kp));
    CHECK_CU(add_node(NULL, g, NULL, 0, &kp));
    CHECK_CU(instantiate(&ge, g, 0));
    CHECK_CU(graph_launch(ge, NULL));

    /* a refused launch is still a call the program made */
    CHECK(launch(f, 0, 1, 1, 1, 1, 1, 0, NULL, params, NULL) == CUDA_ERROR_INVALID_VALUE,
          "zero grid");

    CHECK_CU(sync());
    unsigned host[N];
    CHECK_CU(dtoh(host, buf, sizeof host));
    for (int i = 0; i < N; i++)
        CHECK(host[i] == 6, "element %d is %u, expected 6", i, host[i]);
    json_t *st = stats_get();
    CHECK_EQ_U64(stats_u64(st, "counters.launches"), 6);
    json_decref(st);
    printf("prog_launch: ok\n");
    return 0;
}
