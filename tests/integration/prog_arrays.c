/*
 * prog_arrays: CUDA arrays and mipmapped arrays count against the VRAM
 * limit at the size the driver gives them (issue 12, hole 2). Under a
 * 64 MiB limit the program fills its slice with arrays, a mipmapped array
 * and cuMemAlloc for the rest; past it every route is refused,
 * cuMemGetInfo reports 0 free, and vramshim's figure equals the test
 * driver's own count of what the process holds. Deferred-mapping arrays
 * hold nothing and are not charged.
 */
#include "check.h"

#include <string.h>

#define M (1ULL << 20)

int main(int argc, char **argv)
{
    (void)argc;
    const char *env[] = {"VRAMSHIM_VRAM_LIMIT=64M", "VRAMSHIM_OFFLOAD=off", "FAKECUDA_MEM=1G",
                         NULL};
    check_reexec_env(argv, env);
    void *lib = check_libcuda();
    check_context(lib, 0);
    CUresult (*create2d)(CUarray *, const CUDA_ARRAY_DESCRIPTOR *) =
        check_sym(lib, "cuArrayCreate_v2");
    CUresult (*create3d)(CUarray *, const CUDA_ARRAY3D_DESCRIPTOR *) =
        check_sym(lib, "cuArray3DCreate_v2");
    CUresult (*create_mip)(CUmipmappedArray *, const CUDA_ARRAY3D_DESCRIPTOR *, unsigned) =
        check_sym(lib, "cuMipmappedArrayCreate");
    CUresult (*destroy)(CUarray) = check_sym(lib, "cuArrayDestroy");
    CUresult (*destroy_mip)(CUmipmappedArray) = check_sym(lib, "cuMipmappedArrayDestroy");
    CUresult (*alloc)(CUdeviceptr *, size_t) = check_sym(lib, "cuMemAlloc_v2");
    CUresult (*mem_free)(CUdeviceptr) = check_sym(lib, "cuMemFree_v2");
    CUresult (*info)(size_t *, size_t *) = check_sym(lib, "cuMemGetInfo_v2");
    unsigned long long (*fk_used)(int) = check_sym(lib, "fakecuda_used");
    unsigned long long used0 = fk_used(0);

    /* 1100 x 1000 RGBA floats: 17.6 MB of texels, laid out by the driver */
    CUDA_ARRAY_DESCRIPTOR d2 = {.Width = 1100, .Height = 1000, .Format = CU_AD_FORMAT_FLOAT,
                                .NumChannels = 4};
    CUarray a[4];
    int n = 0;
    CUresult rc;
    while (n < 4 && (rc = create2d(&a[n], &d2)) == CUDA_SUCCESS)
        n++;
    CHECK(n == 3 && rc == CUDA_ERROR_OUT_OF_MEMORY,
          "%d arrays of 17.6 MB made under a 64 MiB limit (last answer %d)", n, (int)rc);
    json_t *st = stats_get();
    uint64_t held = fk_used(0) - used0;
    CHECK_EQ_U64(stats_u64(st, "devices.0.allocated"), held);
    CHECK_EQ_U64(stats_u64(st, "devices.0.arrays"), held);
    json_decref(st);
    check_invariants("three arrays");

    /* a mipmapped 3D array and the rest by cuMemAlloc fill the slice */
    CHECK_CU(destroy(a[2]));
    CUDA_ARRAY3D_DESCRIPTOR d3 = {.Width = 128, .Height = 128, .Depth = 64,
                                  .Format = CU_AD_FORMAT_UNSIGNED_INT8, .NumChannels = 4};
    CUmipmappedArray mip;
    CHECK_CU(create_mip(&mip, &d3, 4));
    CUarray vol;
    CHECK_CU(create3d(&vol, &d3));
    size_t f, t;
    CHECK_CU(info(&f, &t));
    CHECK(f > 0 && f < 64 * M, "free %zu after the arrays", f);
    CUdeviceptr rest;
    CHECK_CU(alloc(&rest, f));
    CHECK_CU(info(&f, &t));
    CHECK_EQ_U64(f, 0);
    CHECK(create3d(&a[2], &d3) == CUDA_ERROR_OUT_OF_MEMORY, "an array past the limit");
    CHECK(create_mip(&mip, &d3, 2) == CUDA_ERROR_OUT_OF_MEMORY, "a mipmapped array past it");
    CUdeviceptr one;
    CHECK(alloc(&one, 4096) == CUDA_ERROR_OUT_OF_MEMORY, "cuMemAlloc past it");
    /* deferred mapping: no memory of its own, so it fits even now */
    CUDA_ARRAY3D_DESCRIPTOR deferred = d3;
    deferred.Flags = CUDA_ARRAY3D_DEFERRED_MAPPING;
    CUarray def;
    CHECK_CU(create3d(&def, &deferred));
    st = stats_get();
    CHECK_EQ_U64(stats_u64(st, "devices.0.allocated"), fk_used(0) - used0);
    CHECK_EQ_U64(stats_u64(st, "devices.0.allocated"), 64 * M);
    json_decref(st);
    check_invariants("the slice full");

    CHECK_CU(destroy(def));
    CHECK_CU(destroy(vol));
    CHECK_CU(destroy_mip(mip));
    CHECK_CU(destroy(a[0]));
    CHECK_CU(destroy(a[1]));
    CHECK_CU(mem_free(rest));
    st = stats_get();
    CHECK_EQ_U64(stats_u64(st, "devices.0.allocated"), 0);
    CHECK_EQ_U64(stats_u64(st, "devices.0.arrays"), 0);
    CHECK_EQ_U64(fk_used(0), used0);
    json_decref(st);
    check_invariants("at the end");
    printf("prog_arrays: ok\n");
    return 0;
}
