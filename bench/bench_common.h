/*
 * bench_common.h: shared by the benchmarks and tests/gpu/driver_check, which
 * reach the driver through dlopen + dlsym like most real programs and so run
 * the same with the real driver, the test driver, with vramshim preloaded or
 * without.
 */
#ifndef BENCH_COMMON_H
#define BENCH_COMMON_H

#include <fakecuda.h> /* cuda.h, plus the kernel types of the test driver */
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#define BENCH_CHECK(call)                                                   \
    do {                                                                    \
        CUresult rc_ = (call);                                              \
        if (rc_ != CUDA_SUCCESS) {                                          \
            fprintf(stderr, "%s failed: %d\n", #call, (int)rc_);            \
            exit(1);                                                        \
        }                                                                   \
    } while (0)

static inline double bench_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static inline void *bench_sym(void *lib, const char *name)
{
    void *p = dlsym(lib, name);
    if (p == NULL) {
        fprintf(stderr, "no %s in the driver\n", name);
        exit(1);
    }
    return p;
}

static inline void *bench_open(void)
{
    void *lib = dlopen("libcuda.so.1", RTLD_NOW);
    if (lib == NULL) {
        fprintf(stderr, "cannot open libcuda.so.1: %s\n", dlerror());
        exit(1);
    }
    CUresult (*init)(unsigned) = bench_sym(lib, "cuInit");
    CUresult (*retain)(CUcontext *, CUdevice) = bench_sym(lib, "cuDevicePrimaryCtxRetain");
    CUresult (*set)(CUcontext) = bench_sym(lib, "cuCtxSetCurrent");
    CUcontext ctx;
    BENCH_CHECK(init(0));
    BENCH_CHECK(retain(&ctx, 0));
    BENCH_CHECK(set(ctx));
    return lib;
}

/* A kernel named `name`: on a GPU compiled from `ptx`; with the test driver
 * (which has fakecuda_register_kernel) the host function `host` instead. */
static inline CUfunction bench_kernel(void *lib, const char *name, const char *ptx,
                                      fakecuda_kernel_fn host, int nparams,
                                      const size_t *param_sizes)
{
    CUfunction f = NULL;
    CUfunction (*reg)(const char *, fakecuda_kernel_fn, int, const size_t *) =
        (CUfunction(*)(const char *, fakecuda_kernel_fn, int, const size_t *))dlsym(
            lib, "fakecuda_register_kernel");
    if (reg) {
        f = reg(name, host, nparams, param_sizes);
        if (f == NULL) {
            fprintf(stderr, "cannot register kernel %s\n", name);
            exit(1);
        }
        return f;
    }
    CUresult (*load)(CUmodule *, const void *) = bench_sym(lib, "cuModuleLoadData");
    CUresult (*get)(CUfunction *, CUmodule, const char *) = bench_sym(lib, "cuModuleGetFunction");
    CUmodule mod;
    BENCH_CHECK(load(&mod, ptx));
    BENCH_CHECK(get(&f, mod, name));
    return f;
}

#endif
