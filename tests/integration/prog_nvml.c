/*
 * prog_nvml: NVML shows the same slice as cuMemGetInfo. Two test devices of
 * 1 GiB with limits 0:256M,1:512M; the test NVML numbers them in reverse,
 * as NVML's PCI order may differ from CUDA's, so NVML device 0 is CUDA
 * device 1. NVML is reached both ways programs reach it: linked
 * (-lnvidia-ml binds to vramshim's exports) and through dlopen + dlsym (as
 * ctypes in nvidia-ml-py does). Before the program initialises CUDA the
 * figures pass through, since vramshim cannot yet tell which device is
 * which.
 */
#include "check.h"
#include "fakenvml.h"

#include <dlfcn.h>
#include <string.h>

#define M (1ULL << 20)

/* linked (fakenvml.h): nvmlDeviceGetMemoryInfo binds to libvramshim's export */

static int (*dl_info)(nvmlDevice_t, nvmlMemory_t *);
static int (*dl_info_v2)(nvmlDevice_t, nvmlMemory_v2_t *);

/* Both ways in, both versions, agree on total and free. */
static void check_nvml(nvmlDevice_t dev, uint64_t total, uint64_t free_bytes)
{
    nvmlMemory_t a, b;
    nvmlMemory_v2_t c = {.version = NVML_MEMORY_V2};
    CHECK(nvmlDeviceGetMemoryInfo(dev, &a) == 0, "linked nvmlDeviceGetMemoryInfo");
    CHECK(dl_info(dev, &b) == 0, "dlsym'd nvmlDeviceGetMemoryInfo");
    CHECK(dl_info_v2(dev, &c) == 0, "dlsym'd nvmlDeviceGetMemoryInfo_v2");
    CHECK_EQ_U64(a.total, total);
    CHECK_EQ_U64(a.free, free_bytes);
    CHECK_EQ_U64(a.used, total - free_bytes);
    CHECK(memcmp(&a, &b, sizeof a) == 0, "the two ways in disagree");
    CHECK_EQ_U64(c.total, total);
    CHECK_EQ_U64(c.free, free_bytes);
    CHECK_EQ_U64(c.used + c.reserved + c.free, c.total);
}

int main(int argc, char **argv)
{
    (void)argc;
    const char *env[] = {"FAKECUDA_DEVICES=2", "FAKECUDA_MEM=1G",
                         "VRAMSHIM_VRAM_LIMIT=0:256M,1:512M", NULL};
    check_reexec_env(argv, env);

    void *nvml = dlopen("libnvidia-ml.so.1", RTLD_NOW | RTLD_LOCAL);
    CHECK(nvml != NULL, "dlopen libnvidia-ml.so.1: %s", dlerror());
    dl_info = check_sym(nvml, "nvmlDeviceGetMemoryInfo");
    dl_info_v2 = check_sym(nvml, "nvmlDeviceGetMemoryInfo_v2");
    CHECK((void *)dl_info == dlsym(RTLD_DEFAULT, "nvmlDeviceGetMemoryInfo"),
          "dlsym did not hand out vramshim's nvmlDeviceGetMemoryInfo");
    CHECK(nvmlInit_v2() == 0, "nvmlInit_v2");
    nvmlDevice_t nv0, nv1;
    CHECK(nvmlDeviceGetHandleByIndex_v2(0, &nv0) == 0, "handle 0");
    CHECK(nvmlDeviceGetHandleByIndex_v2(1, &nv1) == 0, "handle 1");

    /* no CUDA yet: the driver's own figures (1/64 kept by the driver) */
    check_nvml(nv0, 1024 * M, 1008 * M);

    void *lib = check_libcuda();
    check_context(lib, 1);
    CUresult (*alloc)(CUdeviceptr *, size_t) = check_sym(lib, "cuMemAlloc_v2");
    CUresult (*release)(CUdeviceptr) = check_sym(lib, "cuMemFree_v2");
    CUresult (*info)(size_t *, size_t *) = check_sym(lib, "cuMemGetInfo_v2");
    CUdeviceptr p;
    CHECK_CU(alloc(&p, 100 * M)); /* on CUDA device 1 */

    size_t f, t;
    CHECK_CU(info(&f, &t));
    CHECK_EQ_U64(t, 512 * M);
    CHECK_EQ_U64(f, 412 * M);
    check_nvml(nv0, 512 * M, 412 * M); /* NVML 0 is CUDA 1 */
    check_nvml(nv1, 256 * M, 256 * M); /* NVML 1 is CUDA 0, untouched */

    int (*set)(const char *, const char *) = check_api("vramshim_set");
    CHECK(set("vram_limit", "none") == 0, "clear the limit");
    check_nvml(nv0, 1024 * M, 1008 * M - 100 * M); /* passes through again */
    CHECK_CU(release(p));
    printf("nvml: ok\n");
    return 0;
}
