/*
 * fake_mem.c: device and page-locked host allocations of the test driver.
 *
 * A device pointer is the address of an anonymous mapping, so a "kernel"
 * (a host function) can use it directly and a freed buffer faults when
 * touched. cuMemFree waits for all queued work first, as the real driver
 * does; cuMemFreeAsync releases in stream order.
 *
 * Allocations are found by base in a hash (frees) and by any address inside
 * them in three trees by base (every copy asks which side is the device and
 * whether the host side is pinned; launches ask whether a pointer is
 * reachable): device-side memory, the program's page-locked host memory
 * (cuMemHostAlloc and registered ranges, which registration keeps disjoint)
 * and host pools' carvings. Within each tree ranges never overlap, so the
 * greatest base at or below an address is the only range that can hold it,
 * and a look-up costs log n however many buffers a program holds.
 */
#include "fake_internal.h"
#include "fake_ranges.h"

#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <uthash.h>

/* FK_CARVED: handed out of a memory pool or graph memory, whose reserve is
 * what the device is charged (fake_pool.c); device -1 for a host pool */
enum fk_alloc_kind { FK_DEVICE, FK_MANAGED, FK_HOST, FK_REGISTERED, FK_CARVED };

struct fk_alloc {
    uint64_t base, size, charged;
    int device;
    enum fk_alloc_kind kind;
    void *from; /* FK_CARVED: the pool, told when the bytes come back */
    uint64_t file_off; /* FK_CARVED from a shareable pool: where in its file */
    bool sync_memops; /* CU_POINTER_ATTRIBUTE_SYNC_MEMOPS */
    UT_hash_handle hh;
    RB_ENTRY(fk_alloc) rb;
};

FK_RANGE_TREE(alloc_tree, fk_alloc, rb)

/* All under mem_lock. */
static struct fk_alloc *allocs;
static struct alloc_tree device_side = RB_INITIALIZER(&device_side);
static struct alloc_tree pinned_side = RB_INITIALIZER(&pinned_side);
static struct alloc_tree host_pool_side = RB_INITIALIZER(&host_pool_side);
static pthread_mutex_t mem_lock = PTHREAD_MUTEX_INITIALIZER;

static struct alloc_tree *tree_of(const struct fk_alloc *a)
{
    if (a->kind == FK_HOST || a->kind == FK_REGISTERED)
        return &pinned_side;
    return a->kind == FK_CARVED && a->device < 0 ? &host_pool_side : &device_side;
}

static void add(struct fk_alloc *a)
{
    HASH_ADD(hh, allocs, base, sizeof a->base, a);
    RB_INSERT(alloc_tree, tree_of(a), a);
}

static void drop(struct fk_alloc *a)
{
    HASH_DEL(allocs, a);
    RB_REMOVE(alloc_tree, tree_of(a), a);
}

/* The range in t that holds addr, or NULL. */
static struct fk_alloc *holding(struct alloc_tree *t, uint64_t addr)
{
    struct fk_alloc *best = alloc_tree_at_or_below(t, addr);
    return best && addr - best->base < best->size ? best : NULL;
}

static uint64_t page_round(uint64_t n) { return (n + FK_PAGE - 1) & ~(FK_PAGE - 1); }

static CUresult device_alloc_flags(CUdeviceptr *dptr, size_t bytesize,
                                   enum fk_alloc_kind kind, int map_flags)
{
    if (dptr == NULL || bytesize == 0)
        return CUDA_ERROR_INVALID_VALUE;
    FK_NEED_CTX(c);
    uint64_t charge = page_round(bytesize);
    if (!fk_charge(c->device, charge))
        return CUDA_ERROR_OUT_OF_MEMORY;
    void *p = mmap(NULL, charge, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | map_flags, -1, 0);
    if (p != MAP_FAILED)
        fk_advise_huge(p, charge);
    struct fk_alloc *a = p == MAP_FAILED ? NULL : malloc(sizeof *a);
    if (a == NULL) {
        if (p != MAP_FAILED)
            munmap(p, charge);
        fk_uncharge(c->device, charge);
        return CUDA_ERROR_OUT_OF_MEMORY;
    }
    *a = (struct fk_alloc){.base = (uint64_t)(uintptr_t)p, .size = bytesize,
                           .charged = charge, .device = c->device, .kind = kind};
    pthread_mutex_lock(&mem_lock);
    add(a);
    pthread_mutex_unlock(&mem_lock);
    *dptr = a->base;
    return CUDA_SUCCESS;
}

static CUresult device_alloc(CUdeviceptr *dptr, size_t bytesize, enum fk_alloc_kind kind)
{
    return device_alloc_flags(dptr, bytesize, kind, 0);
}

/* The old ABI's device pointers are 32 bits wide: the first 2 GiB of the
 * address space (MAP_32BIT, x86-64), else none. */
CUresult fk_device_alloc_low(CUdeviceptr *dptr, size_t bytesize)
{
#ifdef MAP_32BIT
    CUresult rc = device_alloc_flags(dptr, bytesize, FK_DEVICE, MAP_32BIT);
    if (rc == CUDA_SUCCESS && *dptr > UINT32_MAX) {
        cuMemFree_v2(*dptr);
        rc = CUDA_ERROR_OUT_OF_MEMORY;
    }
    return rc;
#else
    (void)dptr;
    (void)bytesize;
    return CUDA_ERROR_OUT_OF_MEMORY;
#endif
}

static struct fk_alloc *take(uint64_t base, bool host)
{
    pthread_mutex_lock(&mem_lock);
    struct fk_alloc *a;
    HASH_FIND(hh, allocs, &base, sizeof base, a);
    if (a && (a->kind == FK_HOST || a->kind == FK_REGISTERED) == host)
        drop(a);
    else
        a = NULL;
    pthread_mutex_unlock(&mem_lock);
    return a;
}

static void release(struct fk_alloc *a)
{
    if (a->kind != FK_REGISTERED)
        munmap((void *)(uintptr_t)a->base, a->charged);
    if (a->kind == FK_DEVICE || a->kind == FK_MANAGED)
        fk_uncharge(a->device, a->charged);
    if (a->kind == FK_CARVED && a->from)
        fk_pool_returned(a->from, a->charged);
    free(a);
}

CUresult fk_mem_carve(CUdeviceptr *dptr, uint64_t size, int dev, void *from)
{
    return fk_mem_carve_shared(dptr, size, dev, from, -1, 0);
}

CUresult fk_mem_carve_shared(CUdeviceptr *dptr, uint64_t size, int dev, void *from, int fd,
                             uint64_t off)
{
    uint64_t len = page_round(size);
    void *p = fd < 0 ? mmap(NULL, len, PROT_READ | PROT_WRITE,
                            MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0)
                     : mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, (off_t)off);
    struct fk_alloc *a = p == MAP_FAILED ? NULL : malloc(sizeof *a);
    if (a == NULL) {
        if (p != MAP_FAILED)
            munmap(p, len);
        return CUDA_ERROR_OUT_OF_MEMORY;
    }
    *a = (struct fk_alloc){.base = (uint64_t)(uintptr_t)p, .size = size, .charged = len,
                           .device = dev, .kind = FK_CARVED, .from = from, .file_off = off};
    pthread_mutex_lock(&mem_lock);
    add(a);
    pthread_mutex_unlock(&mem_lock);
    *dptr = a->base;
    return CUDA_SUCCESS;
}

bool fk_mem_is_carved(uint64_t base, void **from)
{
    pthread_mutex_lock(&mem_lock);
    struct fk_alloc *a;
    HASH_FIND(hh, allocs, &base, sizeof base, a);
    bool carved = a && a->kind == FK_CARVED;
    if (carved)
        *from = a->from;
    pthread_mutex_unlock(&mem_lock);
    return carved;
}

bool fk_mem_carved_at(uint64_t base, void **from, uint64_t *off, uint64_t *size)
{
    pthread_mutex_lock(&mem_lock);
    struct fk_alloc *a;
    HASH_FIND(hh, allocs, &base, sizeof base, a);
    bool carved = a && a->kind == FK_CARVED;
    if (carved) {
        *from = a->from;
        *off = a->file_off;
        *size = a->size;
    }
    pthread_mutex_unlock(&mem_lock);
    return carved;
}

bool fk_mem_lookup(uint64_t addr, uint64_t *base, uint64_t *size, int *dev,
                   bool *managed)
{
    pthread_mutex_lock(&mem_lock);
    struct fk_alloc *a = holding(&device_side, addr);
    if (a) {
        *base = a->base;
        *size = a->size;
        *dev = a->device;
        *managed = a->kind == FK_MANAGED;
    }
    pthread_mutex_unlock(&mem_lock);
    return a != NULL;
}

bool fk_host_pinned(uint64_t addr)
{
    pthread_mutex_lock(&mem_lock);
    bool found = holding(&pinned_side, addr) || holding(&host_pool_side, addr);
    pthread_mutex_unlock(&mem_lock);
    return found;
}

static bool is_device(uint64_t addr)
{
    uint64_t base, size;
    int dev;
    bool flag;
    return fk_mem_lookup(addr, &base, &size, &dev, &flag) ||
           (fk_vmm_lookup(addr, &base, &size, &dev, &flag) && !flag);
}

bool fk_device_range(uint64_t addr, uint64_t n)
{
    uint64_t base, size;
    int dev;
    bool flag;
    if (fk_mem_lookup(addr, &base, &size, &dev, &flag))
        return addr + n <= base + size;
    /* VMM: a range may cross mappings, each of which must be there */
    for (uint64_t at = addr; at < addr + n; at = base + size)
        if (!fk_vmm_lookup(at, &base, &size, &dev, &flag))
            return false;
    return true;
}

/* cuMemBatchDecompressAsync (driver API reference): memory "capable of
 * usage with the hardware decompress feature" is what cuMemAlloc gives,
 * cuMemCreate with CU_MEM_CREATE_USAGE_HW_DECOMPRESS, and a pool created
 * with CU_MEM_POOL_CREATE_USAGE_HW_DECOMPRESS; every byte of [addr, +n)
 * must be such memory. */
bool fk_hw_decompress_range(uint64_t addr, uint64_t n)
{
    pthread_mutex_lock(&mem_lock);
    struct fk_alloc *a = holding(&device_side, addr);
    bool found = a != NULL, inside = a && addr + n <= a->base + a->size;
    enum fk_alloc_kind kind = a ? a->kind : FK_DEVICE;
    void *from = a ? a->from : NULL;
    pthread_mutex_unlock(&mem_lock);
    if (found)
        return inside && (kind == FK_DEVICE || (kind == FK_CARVED && fk_pool_hw_decompress(from)));
    for (uint64_t at = addr, end; at < addr + n; at = end)
        if (!fk_vmm_hw_decompress(at, &end))
            return false;
    return true;
}

enum fk_host_side fk_host_side(uint64_t dst, uint64_t src)
{
    if (is_device(dst) && !is_device(src))
        return fk_host_pinned(src) ? FK_PINNED_TO_DEVICE : FK_PAGEABLE_TO_DEVICE;
    if (is_device(src) && !is_device(dst))
        return fk_host_pinned(dst) ? FK_DEVICE_TO_PINNED : FK_DEVICE_TO_PAGEABLE;
    return FK_NO_HOST_SIDE;
}

FK_EXPORT CUresult cuMemAlloc_v2(CUdeviceptr *dptr, size_t bytesize)
{
    FK_ENTER("cuMemAlloc_v2");
    return device_alloc(dptr, bytesize, FK_DEVICE);
}

FK_EXPORT CUresult cuMemAllocPitch_v2(CUdeviceptr *dptr, size_t *pPitch,
                                      size_t WidthInBytes, size_t Height,
                                      unsigned int ElementSizeBytes)
{
    FK_ENTER("cuMemAllocPitch_v2");
    if (pPitch == NULL || WidthInBytes == 0 || Height == 0 ||
        (ElementSizeBytes != 4 && ElementSizeBytes != 8 && ElementSizeBytes != 16))
        return CUDA_ERROR_INVALID_VALUE;
    size_t pitch = (WidthInBytes + 511) & ~(size_t)511;
    CUresult rc = device_alloc(dptr, pitch * Height, FK_DEVICE);
    if (rc == CUDA_SUCCESS)
        *pPitch = pitch;
    return rc;
}

FK_EXPORT CUresult cuMemAllocManaged(CUdeviceptr *dptr, size_t bytesize,
                                     unsigned int flags)
{
    FK_ENTER("cuMemAllocManaged");
    if (flags != CU_MEM_ATTACH_GLOBAL && flags != CU_MEM_ATTACH_HOST)
        return CUDA_ERROR_INVALID_VALUE;
    return device_alloc(dptr, bytesize, FK_MANAGED);
}

FK_EXPORT CUresult cuMemFree_v2(CUdeviceptr dptr)
{
    FK_ENTER("cuMemFree_v2");
    if (dptr == 0)
        return CUDA_SUCCESS;
    fk_sync_all(); /* the real cuMemFree waits for the device */
    struct fk_alloc *a = take(dptr, false);
    if (a == NULL)
        return CUDA_ERROR_INVALID_VALUE;
    release(a);
    return CUDA_SUCCESS;
}

/* ---- stream-ordered allocation: fake_pool.c ---------------------------- */
static void run_free(struct fk_op *op) { release(op->ptr); }

/* cuMemFreeAsync: the bytes go back to their pool when the stream reaches
 * the free. `st` is not capturing (fake_pool.c sees to that). */
CUresult fk_mem_free_async(CUdeviceptr dptr, struct fk_stream *st)
{
    struct fk_alloc *a = take(dptr, false);
    if (a == NULL)
        return CUDA_ERROR_INVALID_VALUE;
    struct fk_op *op = calloc(1, sizeof *op);
    if (op == NULL) {
        release(a); /* still correct: nothing can use it after the free */
        return CUDA_SUCCESS;
    }
    op->run = run_free;
    op->ptr = a;
    fk_enqueue(st, op);
    return CUDA_SUCCESS;
}

/* ---- page-locked host memory ------------------------------------------ */
static CUresult host_alloc(void **pp, size_t bytesize)
{
    if (pp == NULL || bytesize == 0)
        return CUDA_ERROR_INVALID_VALUE;
    uint64_t len = page_round(bytesize);
    void *p = mmap(NULL, len, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (p != MAP_FAILED)
        fk_advise_huge(p, len);
    struct fk_alloc *a = p == MAP_FAILED ? NULL : malloc(sizeof *a);
    if (a == NULL) {
        if (p != MAP_FAILED)
            munmap(p, len);
        return CUDA_ERROR_OUT_OF_MEMORY;
    }
    *a = (struct fk_alloc){.base = (uint64_t)(uintptr_t)p, .size = bytesize,
                           .charged = len, .device = -1, .kind = FK_HOST};
    pthread_mutex_lock(&mem_lock);
    add(a);
    pthread_mutex_unlock(&mem_lock);
    *pp = p;
    return CUDA_SUCCESS;
}

FK_EXPORT CUresult cuMemHostAlloc(void **pp, size_t bytesize, unsigned int Flags)
{
    FK_ENTER("cuMemHostAlloc");
    if (Flags & ~(unsigned)(CU_MEMHOSTALLOC_PORTABLE | CU_MEMHOSTALLOC_DEVICEMAP |
                            CU_MEMHOSTALLOC_WRITECOMBINED))
        return CUDA_ERROR_INVALID_VALUE;
    return host_alloc(pp, bytesize);
}

FK_EXPORT CUresult cuMemAllocHost_v2(void **pp, size_t bytesize)
{
    FK_ENTER("cuMemAllocHost_v2");
    return host_alloc(pp, bytesize);
}

FK_EXPORT CUresult cuMemFreeHost(void *p)
{
    FK_ENTER("cuMemFreeHost");
    struct fk_alloc *a = take((uint64_t)(uintptr_t)p, true);
    if (a == NULL || a->kind != FK_HOST) {
        if (a) { /* a registered range is not freed this way: put it back */
            pthread_mutex_lock(&mem_lock);
            add(a);
            pthread_mutex_unlock(&mem_lock);
        }
        return CUDA_ERROR_INVALID_VALUE;
    }
    release(a);
    return CUDA_SUCCESS;
}

FK_EXPORT CUresult cuMemHostRegister_v2(void *p, size_t bytesize, unsigned int Flags)
{
    FK_ENTER("cuMemHostRegister_v2");
    (void)Flags;
    if (p == NULL || bytesize == 0)
        return CUDA_ERROR_INVALID_VALUE;
    uint64_t base = (uint64_t)(uintptr_t)p;
    pthread_mutex_lock(&mem_lock);
    /* overlapping a pinned range: the one holding base, or one starting inside */
    struct fk_alloc key = {.base = base};
    struct fk_alloc *next = RB_NFIND(alloc_tree, &pinned_side, &key);
    if (holding(&pinned_side, base) || (next && next->base < base + bytesize)) {
        pthread_mutex_unlock(&mem_lock);
        return CUDA_ERROR_HOST_MEMORY_ALREADY_REGISTERED;
    }
    struct fk_alloc *a = malloc(sizeof *a);
    if (a == NULL) {
        pthread_mutex_unlock(&mem_lock);
        return CUDA_ERROR_OUT_OF_MEMORY;
    }
    *a = (struct fk_alloc){.base = base, .size = bytesize, .charged = 0,
                           .device = -1, .kind = FK_REGISTERED};
    add(a);
    pthread_mutex_unlock(&mem_lock);
    return CUDA_SUCCESS;
}

FK_EXPORT CUresult cuMemHostUnregister(void *p)
{
    FK_ENTER("cuMemHostUnregister");
    struct fk_alloc *a = take((uint64_t)(uintptr_t)p, true);
    if (a == NULL || a->kind != FK_REGISTERED) {
        if (a) {
            pthread_mutex_lock(&mem_lock);
            add(a);
            pthread_mutex_unlock(&mem_lock);
        }
        return CUDA_ERROR_HOST_MEMORY_NOT_REGISTERED;
    }
    release(a);
    return CUDA_SUCCESS;
}

/* ---- what a pointer is ------------------------------------------------- */
/* CU_POINTER_ATTRIBUTE_SYNC_MEMOPS, kept per allocation: "When set, the
 * region of memory that ptr points to is guaranteed to always synchronize
 * memory operations that are synchronous" (driver API reference,
 * cuPointerSetAttribute). The test driver's synchronous copies always
 * finish before they return, so the flag changes no behaviour here; it is
 * what cuPointerGetAttribute answers (0 until set: querying P2P_TOKENS
 * "has a side effect of setting" it, so it starts unset). A device
 * allocation or a VMM mapping holds it; set >= 0 sets it. */
static bool sync_memops(uint64_t addr, int set, bool *value)
{
    pthread_mutex_lock(&mem_lock);
    struct fk_alloc *a = holding(&device_side, addr);
    if (a && set >= 0)
        a->sync_memops = set;
    if (a)
        *value = a->sync_memops;
    pthread_mutex_unlock(&mem_lock);
    return a != NULL || fk_vmm_sync_memops(addr, set, value);
}

FK_EXPORT CUresult cuPointerSetAttribute(const void *value, CUpointer_attribute attribute,
                                         CUdeviceptr ptr)
{
    FK_ENTER("cuPointerSetAttribute");
    bool now;
    if (value == NULL || attribute != CU_POINTER_ATTRIBUTE_SYNC_MEMOPS) /* the only one */
        return CUDA_ERROR_INVALID_VALUE;
    return sync_memops(ptr, *(const unsigned int *)value != 0, &now) ? CUDA_SUCCESS
                                                                    : CUDA_ERROR_INVALID_VALUE;
}

static CUresult get_attribute(void *data, CUpointer_attribute attribute, CUdeviceptr ptr)
{
    if (data == NULL)
        return CUDA_ERROR_INVALID_VALUE;
    uint64_t base, size;
    int dev;
    bool managed = false, on_host = false;
    if (!fk_mem_lookup(ptr, &base, &size, &dev, &managed) &&
        !fk_vmm_lookup(ptr, &base, &size, &dev, &on_host))
        return CUDA_ERROR_INVALID_VALUE;
    switch (attribute) {
    case CU_POINTER_ATTRIBUTE_MEMORY_TYPE:
        *(unsigned int *)data = on_host ? CU_MEMORYTYPE_HOST : CU_MEMORYTYPE_DEVICE;
        return CUDA_SUCCESS;
    case CU_POINTER_ATTRIBUTE_DEVICE_POINTER:
        *(CUdeviceptr *)data = ptr;
        return CUDA_SUCCESS;
    case CU_POINTER_ATTRIBUTE_RANGE_START_ADDR:
        *(CUdeviceptr *)data = base;
        return CUDA_SUCCESS;
    case CU_POINTER_ATTRIBUTE_RANGE_SIZE:
        *(size_t *)data = size;
        return CUDA_SUCCESS;
    case CU_POINTER_ATTRIBUTE_DEVICE_ORDINAL:
        *(int *)data = dev;
        return CUDA_SUCCESS;
    case CU_POINTER_ATTRIBUTE_IS_MANAGED:
        *(unsigned int *)data = managed;
        return CUDA_SUCCESS;
    case CU_POINTER_ATTRIBUTE_IS_HW_DECOMPRESS_CAPABLE:
        *(int *)data = fk_hw_decompress_range(ptr, 1);
        return CUDA_SUCCESS;
    case CU_POINTER_ATTRIBUTE_SYNC_MEMOPS: {
        bool on = false;
        sync_memops(ptr, -1, &on);
        *(unsigned int *)data = on;
        return CUDA_SUCCESS;
    }
    default:
        return CUDA_ERROR_INVALID_VALUE;
    }
}

FK_EXPORT CUresult cuPointerGetAttribute(void *data, CUpointer_attribute attribute,
                                         CUdeviceptr ptr)
{
    FK_ENTER("cuPointerGetAttribute");
    return get_attribute(data, attribute, ptr);
}

static size_t attribute_size(CUpointer_attribute a)
{
    switch (a) {
    case CU_POINTER_ATTRIBUTE_CONTEXT:
    case CU_POINTER_ATTRIBUTE_DEVICE_POINTER:
    case CU_POINTER_ATTRIBUTE_HOST_POINTER:
    case CU_POINTER_ATTRIBUTE_RANGE_START_ADDR:
    case CU_POINTER_ATTRIBUTE_RANGE_SIZE:
    case CU_POINTER_ATTRIBUTE_BUFFER_ID:
        return 8;
    default:
        return 4;
    }
}

/* Unlike the singular form, the driver answers for any pointer: attributes
 * it cannot give are left at their zero defaults and the call succeeds. */
FK_EXPORT CUresult cuPointerGetAttributes(unsigned int n, CUpointer_attribute *attributes,
                                          void **data, CUdeviceptr ptr)
{
    FK_ENTER("cuPointerGetAttributes");
    if (n && (attributes == NULL || data == NULL))
        return CUDA_ERROR_INVALID_VALUE;
    for (unsigned int i = 0; i < n; i++) {
        if (data[i] == NULL)
            return CUDA_ERROR_INVALID_VALUE;
        memset(data[i], 0, attribute_size(attributes[i]));
        get_attribute(data[i], attributes[i], ptr);
    }
    return CUDA_SUCCESS;
}

FK_EXPORT CUresult cuMemGetAddressRange_v2(CUdeviceptr *pbase, size_t *psize,
                                           CUdeviceptr dptr)
{
    FK_ENTER("cuMemGetAddressRange_v2");
    uint64_t base, size;
    int dev;
    bool flag;
    if (!fk_mem_lookup(dptr, &base, &size, &dev, &flag) &&
        !fk_vmm_lookup(dptr, &base, &size, &dev, &flag))
        return CUDA_ERROR_NOT_FOUND;
    if (pbase)
        *pbase = base;
    if (psize)
        *psize = size;
    return CUDA_SUCCESS;
}
