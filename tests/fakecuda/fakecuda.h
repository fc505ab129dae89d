/*
 * fakecuda.h: what test programs may ask of the test driver beyond the CUDA
 * driver API. The test driver (libcuda.so.1 built from this folder) behaves
 * like the real driver in host memory; these calls only set up a test:
 * kernels are host functions registered by name, and errors are injected.
 *
 * Programs find these with dlsym(RTLD_DEFAULT, ...) or link against the
 * test driver directly.
 *
 * Environment read by the test driver:
 *   FAKECUDA_DEVICES  number of devices (1..8, default 1)
 *   FAKECUDA_MEM      device memory per device, in bytes or with K/M/G
 *                     (default 1G)
 *   FAKECUDA_SHM      name of a shared-memory object holding the devices'
 *                     used bytes, so several processes share one "GPU"
 *   FAKECUDA_FAIL     inject errors: name:skip:count:error[,...], e.g.
 *                     cuMemAlloc_v2:3:1:2 fails the 4th cuMemAlloc_v2 with 2
 *   FAKENVML_ORDER    pci (default): the test NVML numbers devices in the
 *                     reverse of CUDA's order, as NVML's PCI order and
 *                     CUDA's fastest-first order can differ; cuda: the same
 *   FAKECUDA_CTOR_DLSYM  1: look up a few of its own names with dlsym while
 *                     being loaded (a driver's start-up code may), which
 *                     re-enters vramshim's dlsym hook during its own dlopen
 */
#ifndef FAKECUDA_H
#define FAKECUDA_H

#define __CUDA_API_VERSION_INTERNAL 1
#include <cuda.h>
#include <semaphore.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct {
    unsigned x, y, z;
} fakecuda_dim3;

/* A kernel: runs on the stream's thread with the launch's parameters
 * (already copied at launch, as the driver does). */
typedef void (*fakecuda_kernel_fn)(void **params, fakecuda_dim3 grid,
                                   fakecuda_dim3 block);

/* Register a kernel with its parameter sizes. cuModuleGetFunction finds it
 * by name; cuFuncGetParamInfo and cuKernelGetParamInfo describe it. */
CUfunction fakecuda_register_kernel(const char *name, fakecuda_kernel_fn fn,
                                    int nparams, const size_t *param_sizes);

/* Make calls number skip+1 .. skip+count of `name` fail with `error` and do
 * nothing else. Returns 0, or -1 when every slot is taken. */
int fakecuda_inject(const char *name, unsigned skip, unsigned count,
                    CUresult error);
void fakecuda_inject_clear(void);

/* The next call of `name` posts `reached`, then waits for `resume` before
 * it does anything (it holds none of this driver's locks meanwhile).
 * Returns 0, or -1 when a hold is armed already. */
int fakecuda_hold(const char *name, sem_t *reached, sem_t *resume);

/* Bytes of device memory used on `dev`, by every process sharing it. */
unsigned long long fakecuda_used(int dev);
/* Bytes of device memory this process holds on `dev` (allocations,
 * contexts, limits, module globals), whatever FAKECUDA_SHM says. */
unsigned long long fakecuda_held(int dev);
/* The devices, their size, and the 16 bytes of a device's UUID (which the
 * test NVML, libnvidia-ml.so.1 of this folder, reports too). These need no
 * cuInit. */
int fakecuda_device_count(void);
unsigned long long fakecuda_mem_size(void);
void fakecuda_uuid_bytes(int dev, unsigned char out[16]);

#ifdef __cplusplus
}
#endif
#endif
