/*
 * prog_binds: the entry points that reach a backed buffer outside any
 * launch or copy vramshim otherwise sees (issue 11, case 9: the last hook
 * coverage gaps), with offload auto and a pin budget smaller than one
 * buffer, so that vramshim_offload leaves a buffer pageable: its device
 * addresses map nothing until vramshim brings it back.
 *
 *   1. cuMemBatchDecompressAsync: source, destination and the count of
 *      bytes written all lie in offloaded buffers; each comes back before
 *      the driver sees the batch, and the bytes and the count are right.
 *      A backed buffer is memory the decompressor can use, as cuMemAlloc's
 *      is, and says so (IS_HW_DECOMPRESS_CAPABLE) resident or offloaded;
 *      the program's own cuMemCreate memory without the usage flag is
 *      refused as the driver refuses it.
 *   2. cuMulticastBindAddr: a bound buffer never moves again (the
 *      multicast object holds the memory that was bound), so what the
 *      program writes to the buffer is what a mapping of the object reads;
 *      an offloaded buffer comes back to be bound.
 *   3. cuTexRefSetAddress / cuTexRefSetAddress2D: a buffer bound to a
 *      legacy texture reference never moves again, and a kernel reading
 *      through the reference (not naming the buffer) reads its bytes.
 *   4. cuPointerSetAttribute(SYNC_MEMOPS): the setting stays with the
 *      buffer across moves, offloaded and back.
 *   5. a launch whose one parameter, a struct, names more offloaded
 *      buffers (WIDE) than the touch pass keeps at once (64), as
 *      PyTorch's multi-tensor kernels do: every one comes back before the
 *      kernel reads it (it read an unmapped address before).
 */
#include "check.h"

#include <errno.h>
#include <signal.h>
#include <stdint.h>
#include <string.h>
#include <unistd.h>

#include "fakecuda.h"

#define M (1ULL << 20)
#define N (8 * M) /* one chunk */

static struct {
    void *lib;
    CUresult (*alloc)(CUdeviceptr *, size_t);
    CUresult (*release)(CUdeviceptr);
    CUresult (*htod)(CUdeviceptr, const void *, size_t);
    CUresult (*dtoh)(void *, CUdeviceptr, size_t);
    CUresult (*stream_create)(CUstream *, unsigned int);
    CUresult (*stream_sync)(CUstream);
    CUresult (*ctx_sync)(void);
    CUresult (*launch)(CUfunction, unsigned, unsigned, unsigned, unsigned, unsigned, unsigned,
                       unsigned, CUstream, void **, void **);
    CUresult (*decompress)(CUmemDecompressParams *, size_t, unsigned, size_t *, CUstream);
    CUresult (*decompress_ptsz)(CUmemDecompressParams *, size_t, unsigned, size_t *, CUstream);
    CUresult (*mc_create)(CUmemGenericAllocationHandle *, const CUmulticastObjectProp *);
    CUresult (*mc_add)(CUmemGenericAllocationHandle, CUdevice);
    CUresult (*mc_bind)(CUmemGenericAllocationHandle, size_t, CUdeviceptr, size_t,
                        unsigned long long);
    CUresult (*reserve)(CUdeviceptr *, size_t, size_t, CUdeviceptr, unsigned long long);
    CUresult (*addr_free)(CUdeviceptr, size_t);
    CUresult (*mem_create)(CUmemGenericAllocationHandle *, size_t, const CUmemAllocationProp *,
                           unsigned long long);
    CUresult (*mem_release)(CUmemGenericAllocationHandle);
    CUresult (*unmap)(CUdeviceptr, size_t);
    CUresult (*map)(CUdeviceptr, size_t, size_t, CUmemGenericAllocationHandle,
                    unsigned long long);
    CUresult (*set_access)(CUdeviceptr, size_t, const CUmemAccessDesc *, size_t);
    CUresult (*mod_load)(CUmodule *, const void *);
    CUresult (*get_texref)(CUtexref *, CUmodule, const char *);
    CUresult (*tex_set)(size_t *, CUtexref, CUdeviceptr, size_t);
    CUresult (*tex_set_2d)(CUtexref, const CUDA_ARRAY_DESCRIPTOR *, CUdeviceptr, size_t);
    CUresult (*tex_get)(CUdeviceptr *, CUtexref);
    CUresult (*ptr_set)(const void *, CUpointer_attribute, CUdeviceptr);
    CUresult (*ptr_get)(void *, CUpointer_attribute, CUdeviceptr);
    CUresult (*ptr_gets)(unsigned int, CUpointer_attribute *, void **, CUdeviceptr);
    int (*offload)(uint64_t);
    int (*prefetch)(uint64_t);
    CUfunction tex_read;
} cu;

static unsigned char want[N], got[N];
static CUstream stream;

static void fault(int sig)
{
    static const char msg[] = "FAIL prog_binds: a kernel or a copy faulted outside the "
                              "driver's checks (an address vramshim had unmapped)\n";
    static const char hung[] = "FAIL prog_binds: a call hung (the watchdog fired)\n";
    if (write(2, sig == SIGALRM ? hung : msg, (sig == SIGALRM ? sizeof hung : sizeof msg) - 1))
        _exit(1);
    _exit(1);
}

/* The texture reference the kernel reads through: module state, not a
 * parameter, as a legacy texture is a global of the module's code. */
static CUtexref kernel_tex;

/* tex_read(dst, n): dst[0..n) = the texture's first n bytes */
static void tex_read_body(void **params, fakecuda_dim3 grid, fakecuda_dim3 block)
{
    (void)grid;
    (void)block;
    CUdeviceptr src = 0;
    if (cu.tex_get(&src, kernel_tex) != CUDA_SUCCESS)
        return; /* unbound: reads nothing, the caller's bytes show it */
    memcpy((void *)(uintptr_t)*(CUdeviceptr *)params[0], (const void *)(uintptr_t)src,
           *(uint64_t *)params[1]);
}

/* wide_sum(struct {CUdeviceptr p[WIDE]; CUdeviceptr out;}): out[0] = the
 * sum of every buffer's first byte. */
#define WIDE 70
struct wide_args {
    CUdeviceptr p[WIDE];
    CUdeviceptr out;
};
static void wide_sum_body(void **params, fakecuda_dim3 grid, fakecuda_dim3 block)
{
    (void)grid;
    (void)block;
    struct wide_args a;
    memcpy(&a, params[0], sizeof a);
    uint64_t sum = 0;
    for (int i = 0; i < WIDE; i++)
        sum += *(const unsigned char *)(uintptr_t)a.p[i];
    memcpy((void *)(uintptr_t)a.out, &sum, sizeof sum);
}
static CUfunction wide_sum;

static void open_driver(void)
{
    cu.lib = check_libcuda();
    check_context(cu.lib, 0);
    cu.alloc = check_sym(cu.lib, "cuMemAlloc_v2");
    cu.htod = check_sym(cu.lib, "cuMemcpyHtoD_v2");
    cu.dtoh = check_sym(cu.lib, "cuMemcpyDtoH_v2");
    cu.stream_create = check_sym(cu.lib, "cuStreamCreate");
    cu.stream_sync = check_sym(cu.lib, "cuStreamSynchronize");
    cu.ctx_sync = check_sym(cu.lib, "cuCtxSynchronize");
    cu.launch = check_sym(cu.lib, "cuLaunchKernel");
    cu.decompress = check_sym(cu.lib, "cuMemBatchDecompressAsync");
    cu.decompress_ptsz = check_sym(cu.lib, "cuMemBatchDecompressAsync_ptsz");
    cu.mc_create = check_sym(cu.lib, "cuMulticastCreate");
    cu.mc_add = check_sym(cu.lib, "cuMulticastAddDevice");
    cu.mc_bind = check_sym(cu.lib, "cuMulticastBindAddr");
    cu.reserve = check_sym(cu.lib, "cuMemAddressReserve");
    cu.addr_free = check_sym(cu.lib, "cuMemAddressFree");
    cu.release = check_sym(cu.lib, "cuMemFree_v2");
    cu.mem_create = check_sym(cu.lib, "cuMemCreate");
    cu.mem_release = check_sym(cu.lib, "cuMemRelease");
    cu.unmap = check_sym(cu.lib, "cuMemUnmap");
    cu.map = check_sym(cu.lib, "cuMemMap");
    cu.set_access = check_sym(cu.lib, "cuMemSetAccess");
    cu.mod_load = check_sym(cu.lib, "cuModuleLoadData");
    cu.get_texref = check_sym(cu.lib, "cuModuleGetTexRef");
    cu.tex_set = check_sym(cu.lib, "cuTexRefSetAddress_v2");
    cu.tex_set_2d = check_sym(cu.lib, "cuTexRefSetAddress2D_v3");
    cu.tex_get = check_sym(cu.lib, "cuTexRefGetAddress_v2");
    cu.ptr_set = check_sym(cu.lib, "cuPointerSetAttribute");
    cu.ptr_get = check_sym(cu.lib, "cuPointerGetAttribute");
    cu.ptr_gets = check_sym(cu.lib, "cuPointerGetAttributes");
    cu.offload = check_api("vramshim_offload");
    cu.prefetch = check_api("vramshim_prefetch");
    const size_t sizes[] = {8, 8};
    cu.tex_read = check_kernel(cu.lib, "tex_read", tex_read_body, 2, sizes);
    const size_t wide_size[] = {sizeof(struct wide_args)};
    wide_sum = check_kernel(cu.lib, "wide_sum", wide_sum_body, 1, wide_size);
    CHECK_CU(cu.stream_create(&stream, 0));
}

static CUdeviceptr alloc_filled(unsigned seed)
{
    CUdeviceptr p;
    CHECK_CU(cu.alloc(&p, N));
    check_fill(want, N, seed);
    CHECK_CU(cu.htod(p, want, N));
    return p;
}

/* Offload p whole: to pageable memory under this test's pin budget, which
 * holds no buffer (run by hand with a larger one, to pinned memory). */
static uint64_t offloaded(void)
{
    return stats_now("devices.0.offloaded_pageable") + stats_now("devices.0.offloaded_pinned");
}

static void offload_pageable(CUdeviceptr p, const char *what)
{
    uint64_t before = offloaded();
    CHECK(cu.offload(p) == 0, "vramshim_offload of %s", what);
    CHECK_EQ_U64(offloaded(), before + N);
}

static void expect(CUdeviceptr p, unsigned seed, const char *what)
{
    check_fill(want, N, seed);
    CHECK_CU(cu.dtoh(got, p, N));
    CHECK(memcmp(got, want, N) == 0, "%s: wrong bytes", what);
}

/* ---- 1: batch decompression ------------------------------------------------------ */
static int capable_of(CUdeviceptr p, bool plural)
{
    int capable = -1;
    if (plural) {
        CUpointer_attribute a = CU_POINTER_ATTRIBUTE_IS_HW_DECOMPRESS_CAPABLE;
        void *data = &capable;
        CHECK_CU(cu.ptr_gets(1, &a, &data, p));
    } else {
        CHECK_CU(cu.ptr_get(&capable, CU_POINTER_ATTRIBUTE_IS_HW_DECOMPRESS_CAPABLE, p));
    }
    return capable;
}

/* Only some memory can feed the decompressor (cuMemAlloc's, cuMemCreate's
 * with CU_MEM_CREATE_USAGE_HW_DECOMPRESS): a buffer vramshim backs must
 * stay such memory and say so, wherever its bytes are, and the program's
 * own VMM memory gets the driver's verdict either way. */
static void decompress_capable(CUdeviceptr src, CUdeviceptr counts)
{
    CHECK(capable_of(src, false) == 1 && capable_of(src, true) == 1,
          "a resident backed buffer is not HW_DECOMPRESS_CAPABLE");
    offload_pageable(src, "the source, for its attribute");
    CHECK(capable_of(src, false) == 1 && capable_of(src, true) == 1,
          "an offloaded backed buffer is not HW_DECOMPRESS_CAPABLE");

    CUmemAllocationProp prop = {.type = CU_MEM_ALLOCATION_TYPE_PINNED,
                                .location = {CU_MEM_LOCATION_TYPE_DEVICE, 0}};
    CUmemGenericAllocationHandle plain, made_for;
    CHECK_CU(cu.mem_create(&plain, 2 * M, &prop, 0));
    prop.allocFlags.usage = CU_MEM_CREATE_USAGE_HW_DECOMPRESS;
    CHECK_CU(cu.mem_create(&made_for, 2 * M, &prop, 0));
    CUdeviceptr va;
    CHECK_CU(cu.reserve(&va, 4 * M, 0, 0, 0));
    CHECK_CU(cu.map(va, 2 * M, 0, plain, 0));
    CHECK_CU(cu.map(va + 2 * M, 2 * M, 0, made_for, 0));
    CUmemAccessDesc rw = {{CU_MEM_LOCATION_TYPE_DEVICE, 0}, CU_MEM_ACCESS_FLAGS_PROT_READWRITE};
    CHECK_CU(cu.set_access(va, 4 * M, &rw, 1));
    CHECK(capable_of(va, false) == 0 && capable_of(va + 2 * M, false) == 1,
          "the program's own VMM memory: capable %d and %d", capable_of(va, false),
          capable_of(va + 2 * M, false));
    CUmemDecompressParams p = {.srcNumBytes = M, .dstNumBytes = M,
                               .dstActBytes = (cuuint32_t *)(uintptr_t)(counts + 7 * M),
                               .src = (const void *)(uintptr_t)src,
                               .dst = (void *)(uintptr_t)va,
                               .algo = CU_MEM_DECOMPRESS_ALGORITHM_SNAPPY};
    size_t index = 99;
    CHECK_EQ_U64(cu.decompress(&p, 1, 0, &index, stream), CUDA_ERROR_INVALID_VALUE);
    CHECK_EQ_U64(index, 0);
    p.dst = (void *)(uintptr_t)(va + 2 * M);
    CHECK_CU(cu.decompress(&p, 1, 0, &index, stream));
    CHECK_CU(cu.stream_sync(stream));
    check_fill(want, N, 11);
    CHECK_CU(cu.dtoh(got, va + 2 * M, M));
    CHECK(memcmp(got, want, M) == 0, "decompressed into memory made for it: wrong bytes");
    CHECK_CU(cu.unmap(va, 4 * M));
    CHECK_CU(cu.mem_release(plain));
    CHECK_CU(cu.mem_release(made_for));
    CHECK_CU(cu.addr_free(va, 4 * M));
}

static void decompress(void)
{
    CUdeviceptr src = alloc_filled(11), dst = alloc_filled(12), counts = alloc_filled(13);
    CUdeviceptr src2 = alloc_filled(14), dst2 = alloc_filled(15);
    offload_pageable(src, "the source");
    offload_pageable(dst, "the destination");
    offload_pageable(counts, "the buffer the counts go to");
    offload_pageable(dst2, "the second destination");
    /* the test driver's compressed format is the identity (fake_decompress.c) */
    CUmemDecompressParams p[2];
    memset(p, 0, sizeof p);
    p[0] = (CUmemDecompressParams){.srcNumBytes = N, .dstNumBytes = 0, /* no hint */
                                   .dstActBytes = (cuuint32_t *)(uintptr_t)(counts + 3 * M),
                                   .src = (const void *)(uintptr_t)src,
                                   .dst = (void *)(uintptr_t)dst,
                                   .algo = CU_MEM_DECOMPRESS_ALGORITHM_DEFLATE};
    p[1] = (CUmemDecompressParams){.srcNumBytes = N, .dstNumBytes = N,
                                   .dstActBytes = (cuuint32_t *)(uintptr_t)(counts + 5 * M),
                                   .src = (const void *)(uintptr_t)src2,
                                   .dst = (void *)(uintptr_t)dst2,
                                   .algo = CU_MEM_DECOMPRESS_ALGORITHM_LZ4};
    size_t index = 99;
    CUresult rc = cu.decompress(p, 2, 0, &index, stream);
    CHECK(rc == CUDA_SUCCESS, "cuMemBatchDecompressAsync naming offloaded buffers: %d "
          "(operation %zu)", (int)rc, index);
    CHECK_CU(cu.stream_sync(stream));
    expect(dst, 11, "the first destination");
    expect(dst2, 14, "the second destination");
    check_fill(want, N, 13);
    uint32_t n = (uint32_t)N;
    memcpy(want + 3 * M, &n, sizeof n);
    memcpy(want + 5 * M, &n, sizeof n);
    CHECK_CU(cu.dtoh(got, counts, N));
    CHECK(memcmp(got, want, N) == 0, "the counts' buffer: the counts or its other bytes");
    CHECK_EQ_U64(offloaded(), 0);

    /* the per-thread-stream form, into a buffer offloaded again */
    offload_pageable(dst, "the destination, again");
    p[0].src = (const void *)(uintptr_t)src2;
    rc = cu.decompress_ptsz(p, 1, 0, &index, NULL);
    CHECK(rc == CUDA_SUCCESS, "cuMemBatchDecompressAsync_ptsz into an offloaded buffer: %d",
          (int)rc);
    CHECK_CU(cu.ctx_sync());
    expect(dst, 14, "the destination of the per-thread form");
    check_invariants("after decompression");
    decompress_capable(src, counts);
}

/* ---- 2: a multicast binding ------------------------------------------------------ */

/* A multicast object of one buffer's size on device 0, mapped at *va. */
static CUmemGenericAllocationHandle multicast(CUdeviceptr *va)
{
    CUmulticastObjectProp prop = {.numDevices = 1, .size = N};
    CUmemGenericAllocationHandle mc;
    CHECK_CU(cu.mc_create(&mc, &prop));
    CHECK_CU(cu.mc_add(mc, 0));
    CHECK_CU(cu.reserve(va, N, 0, 0, 0));
    CHECK_CU(cu.map(*va, N, 0, mc, 0));
    CUmemAccessDesc d = {.location = {.type = CU_MEM_LOCATION_TYPE_DEVICE, .id = 0},
                         .flags = CU_MEM_ACCESS_FLAGS_PROT_READWRITE};
    CHECK_CU(cu.set_access(*va, N, &d, 1));
    return mc;
}

static void multicast_bound(void)
{
    /* bound on the device, then asked to move */
    CUdeviceptr b = alloc_filled(21), va;
    CUmemGenericAllocationHandle mc = multicast(&va);
    CHECK_CU(cu.mc_bind(mc, 0, b, N, 0));
    int moved = cu.offload(b);
    check_fill(want, N, 22);
    CHECK_CU(cu.htod(b, want, N));
    CHECK_CU(cu.dtoh(got, va, N));
    CHECK(memcmp(got, want, N) == 0, "the multicast mapping reads other bytes than the bound "
          "buffer holds (vramshim_offload of it said %d)", moved);
    CHECK(moved == -EBUSY, "vramshim_offload of a bound buffer: %d", moved);
    CHECK_EQ_U64(offloaded(), 0);

    /* offloaded first: it comes back to be bound */
    CUdeviceptr c = alloc_filled(23), va2;
    CUmemGenericAllocationHandle mc2 = multicast(&va2);
    offload_pageable(c, "a buffer about to be bound");
    CUresult rc = cu.mc_bind(mc2, 0, c, N, 0);
    CHECK(rc == CUDA_SUCCESS, "cuMulticastBindAddr of an offloaded buffer: %d", (int)rc);
    CHECK_EQ_U64(offloaded(), 0);
    check_fill(want, N, 23);
    CHECK_CU(cu.dtoh(got, va2, N));
    CHECK(memcmp(got, want, N) == 0, "the multicast mapping of a buffer bound after coming "
          "back: wrong bytes");
    CHECK(cu.offload(c) == -EBUSY, "vramshim_offload of the second bound buffer");
    check_invariants("after the multicast bindings");
}

/* ---- 3: legacy texture references ------------------------------------------------ */

/* A kernel copies the texture's bytes to out; out's bytes afterwards. */
static void read_through(CUtexref tex, CUdeviceptr out)
{
    kernel_tex = tex;
    uint64_t n = N;
    void *params[] = {&out, &n};
    CHECK_CU(cu.launch(cu.tex_read, 1, 1, 1, 1, 1, 1, 0, stream, params, NULL));
    CHECK_CU(cu.stream_sync(stream));
    CHECK_CU(cu.dtoh(got, out, N));
}

static void texture(void)
{
    CUmodule mod;
    CUtexref t1, t2;
    CHECK_CU(cu.mod_load(&mod, "image"));
    CHECK_CU(cu.get_texref(&t1, mod, "tex1d"));
    CHECK_CU(cu.get_texref(&t2, mod, "tex2d"));
    CUdeviceptr out = alloc_filled(30);

    /* 2D, bound on the device, then asked to move */
    CUdeviceptr b = alloc_filled(31);
    CUDA_ARRAY_DESCRIPTOR desc = {.Width = 1024, .Height = N / 4096,
                                  .Format = CU_AD_FORMAT_UNSIGNED_INT32, .NumChannels = 1};
    CHECK_CU(cu.tex_set_2d(t2, &desc, b, 4096));
    int moved = cu.offload(b);
    read_through(t2, out);
    check_fill(want, N, 31);
    CHECK(memcmp(got, want, N) == 0, "a kernel reading through a 2D texture reference: wrong "
          "bytes (vramshim_offload of its buffer said %d)", moved);
    CHECK(moved == -EBUSY, "vramshim_offload of a buffer bound to a texture: %d", moved);

    /* 1D, offloaded first: it comes back to be bound */
    CUdeviceptr c = alloc_filled(32);
    offload_pageable(c, "a buffer about to be bound to a texture");
    size_t offset = 99;
    CUresult rc = cu.tex_set(&offset, t1, c, N);
    CHECK(rc == CUDA_SUCCESS, "cuTexRefSetAddress of an offloaded buffer: %d", (int)rc);
    CHECK(offset == 0, "a buffer's texture offset: %zu", offset);
    CHECK(cu.offload(c) == -EBUSY, "vramshim_offload of a buffer bound to a 1D texture");
    read_through(t1, out);
    check_fill(want, N, 32);
    CHECK(memcmp(got, want, N) == 0, "a kernel reading through a 1D texture reference: wrong "
          "bytes");
    CHECK_EQ_U64(offloaded(), 0);
    check_invariants("after the texture bindings");
}

/* ---- 4: SYNC_MEMOPS --------------------------------------------------------------- */
static unsigned int sync_memops(CUdeviceptr p)
{
    unsigned int v = 99;
    CHECK_CU(cu.ptr_get(&v, CU_POINTER_ATTRIBUTE_SYNC_MEMOPS, p));
    return v;
}

static void attribute(void)
{
    CUdeviceptr p = alloc_filled(41), small;
    CHECK(sync_memops(p) == 0, "SYNC_MEMOPS of a new buffer: %u", sync_memops(p));
    unsigned int one = 1, zero = 0;
    CHECK_CU(cu.ptr_set(&one, CU_POINTER_ATTRIBUTE_SYNC_MEMOPS, p + M));
    CHECK(sync_memops(p + 7 * M) == 1, "SYNC_MEMOPS set: %u", sync_memops(p + 7 * M));
    offload_pageable(p, "a buffer with SYNC_MEMOPS");
    CUresult rc = CUDA_SUCCESS;
    unsigned int v = 99;
    rc = cu.ptr_get(&v, CU_POINTER_ATTRIBUTE_SYNC_MEMOPS, p);
    CHECK(rc == CUDA_SUCCESS && v == 1, "SYNC_MEMOPS of the buffer offloaded: %d, %u", (int)rc,
          v);
    CHECK(cu.prefetch(p) == 0, "vramshim_prefetch");
    v = 99;
    rc = cu.ptr_get(&v, CU_POINTER_ATTRIBUTE_SYNC_MEMOPS, p);
    CHECK(rc == CUDA_SUCCESS && v == 1, "SYNC_MEMOPS of the buffer back on the device: %d, %u "
          "(the setting stayed with the old memory)", (int)rc, v);
    CUpointer_attribute attrs[2] = {CU_POINTER_ATTRIBUTE_RANGE_SIZE,
                                    CU_POINTER_ATTRIBUTE_SYNC_MEMOPS};
    size_t range = 0;
    v = 99;
    void *data[2] = {&range, &v};
    CHECK_CU(cu.ptr_gets(2, attrs, data, p + 2 * M));
    CHECK(range == N && v == 1, "cuPointerGetAttributes: range %zu, SYNC_MEMOPS %u", range, v);
    CHECK_CU(cu.ptr_set(&zero, CU_POINTER_ATTRIBUTE_SYNC_MEMOPS, p));
    CHECK(sync_memops(p) == 0, "SYNC_MEMOPS cleared");
    expect(p, 41, "the buffer with SYNC_MEMOPS");
    /* what vramshim does not back is the driver's */
    CHECK_CU(cu.alloc(&small, 4096));
    CHECK_CU(cu.ptr_set(&one, CU_POINTER_ATTRIBUTE_SYNC_MEMOPS, small));
    CHECK(sync_memops(small) == 1, "SYNC_MEMOPS of a buffer vramshim does not back");
    rc = cu.ptr_set(&one, CU_POINTER_ATTRIBUTE_BUFFER_ID, p);
    CHECK(rc == CUDA_ERROR_INVALID_VALUE, "setting an attribute that cannot be set: %d",
          (int)rc);
    check_invariants("after SYNC_MEMOPS");
}

/* ---- 5: a launch naming more buffers than one pass keeps ---------------------- */
static void wide_launch(void)
{
    struct wide_args a;
    uint64_t want_sum = 0;
    for (int i = 0; i < WIDE; i++) {
        CHECK_CU(cu.alloc(&a.p[i], 2 * M));
        unsigned char first = (unsigned char)(i * 7 + 1);
        CHECK_CU(cu.htod(a.p[i], &first, 1));
        want_sum += first;
    }
    CHECK_CU(cu.alloc(&a.out, 2 * M));
    uint64_t before = offloaded();
    for (int i = 0; i < WIDE; i++)
        CHECK(cu.offload(a.p[i]) == 0, "vramshim_offload of buffer %d", i);
    CHECK_EQ_U64(offloaded(), before + WIDE * 2 * M);
    void *params[] = {&a};
    CHECK_CU(cu.launch(wide_sum, 1, 1, 1, 1, 1, 1, 0, stream, params, NULL));
    CHECK_CU(cu.stream_sync(stream));
    uint64_t sum = 0;
    CHECK_CU(cu.dtoh(&sum, a.out, sizeof sum));
    CHECK_EQ_U64(sum, want_sum);
    CHECK_EQ_U64(offloaded(), before);
    for (int i = 0; i < WIDE; i++)
        CHECK_CU(cu.release(a.p[i]));
    CHECK_CU(cu.release(a.out));
    check_invariants("after a wide launch");
}

int main(int argc, char **argv)
{
    const char *env[] = {"FAKECUDA_MEM=256M",    "VRAMSHIM_OFFLOAD=auto",
                         "VRAMSHIM_PIN_LIMIT=4M", "VRAMSHIM_LOG=error", NULL};
    check_reexec_env(argv, env);
    signal(SIGALRM, fault);
    signal(SIGSEGV, fault);
    signal(SIGBUS, fault);
    alarm(120);
    open_driver();
    /* one case when named (prog_binds texture), else all */
    const char *only = argc > 1 ? argv[1] : NULL;
    static const struct {
        const char *name;
        void (*run)(void);
    } cases[] = {{"decompress", decompress}, {"multicast", multicast_bound},
                 {"texture", texture},       {"attribute", attribute},
                 {"wide", wide_launch}};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        if (only == NULL || strcmp(only, cases[i].name) == 0)
            cases[i].run();
    printf("binds: decompression into offloaded buffers, multicast and texture bindings "
           "kept on the device, SYNC_MEMOPS across moves\n");
    return 0;
}
