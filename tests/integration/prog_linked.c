/*
 * prog_linked: a program linked with -lcuda (the test driver), so every
 * call binds to vramshim's exported symbols. Runs the common scenario, then
 * checks what only direct calls can show: the OOM counter on an injected
 * failure, a call with no current context, a refused free, two devices.
 */
#include "scenario.h"

#include <fakecuda.h>
#include <pthread.h>

static void *no_context_alloc(void *arg)
{
    CUdeviceptr p;
    *(CUresult *)arg = cuMemAlloc_v2(&p, 4096);
    return NULL;
}

int main(int argc, char **argv)
{
    (void)argc;
    check_reexec_with(argv, "FAKECUDA_DEVICES", "2");
    const struct cu_api api = {
        cuInit, cuDevicePrimaryCtxRetain, cuCtxSetCurrent, cuMemAlloc_v2,
        cuMemAllocPitch_v2, cuMemAllocManaged, cuMemFree_v2, cuMemAllocAsync,
        cuMemFreeAsync, cuStreamCreate, cuStreamSynchronize, cuMemHostAlloc,
        cuMemAllocHost_v2, cuMemFreeHost, cuMemHostRegister_v2, cuMemHostUnregister,
        cuMemcpyHtoD_v2, cuMemcpyDtoH_v2, cuMemGetInfo_v2,
    };
    scenario_run(&api, "prog_linked");

    /* the driver's out-of-memory answer is passed on and counted */
    CUdeviceptr p;
    CHECK(fakecuda_inject("cuMemAlloc_v2", 0, 1, CUDA_ERROR_OUT_OF_MEMORY) == 0, "inject");
    CHECK(cuMemAlloc_v2(&p, 4096) == CUDA_ERROR_OUT_OF_MEMORY, "injected OOM");
    CHECK(cuMemAlloc_v2(&p, 2ULL << 40) == CUDA_ERROR_OUT_OF_MEMORY, "2 TiB must not fit");
    json_t *st = stats_get();
    CHECK_EQ_U64(stats_u64(st, "counters.oom_returned"), 2);
    CHECK_EQ_U64(stats_u64(st, "counters.allocs"), 7);
    json_decref(st);

    /* a refused free keeps the record and the counters */
    CHECK_CU(cuMemAlloc_v2(&p, 8192));
    fakecuda_inject_clear();
    CHECK(fakecuda_inject("cuMemFree_v2", 0, 1, CUDA_ERROR_LAUNCH_FAILED) == 0, "inject");
    CHECK(cuMemFree_v2(p) == CUDA_ERROR_LAUNCH_FAILED, "injected free failure");
    st = stats_get();
    check_owner(st, "prog_linked", 0, 8192, 1);
    CHECK_EQ_U64(stats_u64(st, "counters.frees"), 7);
    json_decref(st);
    CHECK_CU(cuMemFree_v2(p));

    /* no current context: the driver's error, nothing recorded */
    CUresult rc = CUDA_SUCCESS;
    pthread_t t;
    pthread_create(&t, NULL, no_context_alloc, &rc);
    pthread_join(t, NULL);
    CHECK(rc == CUDA_ERROR_INVALID_CONTEXT, "no context gave %d", (int)rc);

    /* a second device is its own column */
    CUcontext ctx1;
    CHECK_CU(cuDevicePrimaryCtxRetain(&ctx1, 1));
    CHECK_CU(cuCtxSetCurrent(ctx1));
    CUdeviceptr d1;
    CHECK_CU(cuMemAlloc_v2(&d1, 3 << 20));
    st = stats_get();
    check_owner(st, "prog_linked", 1, 3 << 20, 1);
    check_owner(st, "prog_linked", 0, 0, 0);
    CHECK_EQ_U64(stats_u64(st, "devices.1.allocated"), 3 << 20);
    CHECK_EQ_U64(stats_u64(st, "devices.0.allocated"), 0);
    CHECK(json_array_size(json_object_get(st, "devices")) == 2, "two devices listed");
    json_decref(st);
    CHECK_CU(cuMemFree_v2(d1));
    printf("prog_linked: ok\n");
    return 0;
}
