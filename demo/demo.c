/*
 * demo: a small driver-API program, unaware of vramshim, that loads "model
 * weights" and "activations" under two owners (using the optional API when
 * vramshim is there), checks its data, and prints what vramshim saw.
 * `make demo` runs it under `vramshim run --vram-limit 160M`: the program
 * sees a 160 MiB device; a fifth layer fits because vramshim moves the
 * least recently used layers to host memory, and every layer still reads
 * back intact at its old address. Under --offload off the fifth layer is
 * refused until the program frees one.
 */
#define __CUDA_API_VERSION_INTERNAL 1
#include <cuda.h>
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CHECK(call)                                                         \
    do {                                                                    \
        CUresult rc_ = (call);                                              \
        if (rc_ != CUDA_SUCCESS) {                                          \
            fprintf(stderr, "demo: %s failed with %d\n", #call, (int)rc_);  \
            exit(1);                                                        \
        }                                                                   \
    } while (0)

static void *sym(void *lib, const char *name)
{
    void *p = dlsym(lib, name);
    if (!p) {
        fprintf(stderr, "demo: no %s\n", name);
        exit(1);
    }
    return p;
}

int main(void)
{
    void *lib = dlopen("libcuda.so.1", RTLD_NOW);
    if (!lib) {
        fprintf(stderr, "demo: no CUDA driver: %s\n", dlerror());
        return 1;
    }
    CUresult (*init)(unsigned) = sym(lib, "cuInit");
    CUresult (*retain)(CUcontext *, CUdevice) = sym(lib, "cuDevicePrimaryCtxRetain");
    CUresult (*set)(CUcontext) = sym(lib, "cuCtxSetCurrent");
    CUresult (*alloc)(CUdeviceptr *, size_t) = sym(lib, "cuMemAlloc_v2");
    CUresult (*release)(CUdeviceptr) = sym(lib, "cuMemFree_v2");
    CUresult (*htod)(CUdeviceptr, const void *, size_t) = sym(lib, "cuMemcpyHtoD_v2");
    CUresult (*dtoh)(void *, CUdeviceptr, size_t) = sym(lib, "cuMemcpyDtoH_v2");
    CUresult (*host_alloc)(void **, size_t, unsigned) = sym(lib, "cuMemHostAlloc");
    CUresult (*host_free)(void *) = sym(lib, "cuMemFreeHost");
    CUresult (*mem_info)(size_t *, size_t *) = sym(lib, "cuMemGetInfo_v2");
    int (*push)(const char *) = (int (*)(const char *))dlsym(RTLD_DEFAULT, "vramshim_owner_push");
    int (*pop)(void) = (int (*)(void))dlsym(RTLD_DEFAULT, "vramshim_owner_pop");
    int (*stats)(char *, size_t) = (int (*)(char *, size_t))dlsym(RTLD_DEFAULT, "vramshim_stats_json");

    CUcontext ctx;
    CHECK(init(0));
    CHECK(retain(&ctx, 0));
    CHECK(set(ctx));

    enum { LAYERS = 4 };
    const size_t layer = 32 << 20;
    CUdeviceptr weights[LAYERS], act;
    unsigned char *staging;
    CHECK(host_alloc((void **)&staging, layer, 0));
    if (push)
        push("weights");
    for (int i = 0; i < LAYERS; i++) {
        CHECK(alloc(&weights[i], layer));
        memset(staging, 0x40 + i, layer);
        CHECK(htod(weights[i], staging, layer));
    }
    if (pop)
        pop();
    if (push)
        push("activations");
    CHECK(alloc(&act, 8 << 20));
    if (pop)
        pop();

    int ok = 1;
    for (int i = 0; i < LAYERS; i++) {
        CHECK(dtoh(staging, weights[i], layer));
        for (size_t j = 0; j < layer; j += 4093)
            ok &= staging[j] == 0x40 + i;
    }
    printf("demo: %d layers of %zu MiB loaded and read back %s\n", LAYERS, layer >> 20,
           ok ? "intact" : "CORRUPTED");

    /* the device as this process sees it, and one layer more */
    size_t free_bytes, total;
    CHECK(mem_info(&free_bytes, &total));
    printf("demo: cuMemGetInfo says %zu MiB total, %zu MiB free\n", total >> 20,
           free_bytes >> 20);
    CUdeviceptr fifth;
    CUresult rc = alloc(&fifth, layer);
    if (rc == CUDA_ERROR_OUT_OF_MEMORY) {
        printf("demo: a fifth layer gets CUDA_ERROR_OUT_OF_MEMORY; freeing layer 0 "
               "makes room\n");
        CHECK(release(weights[0]));
        CHECK(alloc(&weights[0], layer));
        printf("demo: the fifth layer fits now\n");
    } else {
        CHECK(rc);
        memset(staging, 0x7f, layer);
        CHECK(htod(fifth, staging, layer));
        int again = 1;
        for (int i = 0; i < LAYERS; i++) {
            CHECK(dtoh(staging, weights[i], layer));
            for (size_t j = 0; j < layer; j += 4093)
                again &= staging[j] == 0x40 + i;
        }
        ok &= again;
        printf("demo: a fifth layer fits%s; layers 0-3 read back %s at their old addresses\n",
               stats ? " (vramshim moved idle layers to host memory to make room)" : "",
               again ? "intact" : "CORRUPTED");
        CHECK(release(fifth));
    }
    if (stats) {
        static char buf[1 << 16];
        stats(buf, sizeof buf);
        printf("demo: what vramshim saw:\n%s\n", buf);
        fflush(stdout); /* before vramshim's exit summary on stderr */
    } else {
        printf("demo: vramshim is not loaded\n");
    }
    for (int i = 0; i < LAYERS; i++)
        CHECK(release(weights[i]));
    CHECK(release(act));
    CHECK(host_free(staging));
    return ok ? 0 : 1;
}
