/*
 * fake_vmm.c: virtual memory management in the test driver.
 *
 * Reserved address space is an inaccessible anonymous mapping; a physical
 * handle is pages of its size (fake_phys.c: anonymous memory moved to its
 * one mapping, or a memfd); cuMemMap puts them over the reservation (still
 * inaccessible) and cuMemSetAccess opens them. cuMemUnmap
 * puts inaccessible memory back, so touching an unmapped address faults, as
 * on a GPU. As measured on the real driver: sizes and offsets must be
 * multiples of the 2 MiB granularity, an unmap must cover whole mappings,
 * and unmapping does not wait for running work. Handles on a host location
 * are not charged to any device. Mappings never overlap, so they are kept
 * in a tree by base, and finding the one holding an address costs log n:
 * the test driver should not be what grows when a bench holds 10^4
 * buffers (the real driver's look-ups do not grow that way either).
 *
 * Sharing: a handle created with POSIX file descriptors among its
 * requestedHandleTypes exports as a duplicate of its memfd, and importing
 * such a descriptor (in another process) makes a handle on the same pages,
 * charged to nobody (the exporter's device holds them). cuIpcGetMemHandle
 * refuses VMM memory, as the real driver does; IPC of cuMemAlloc memory is
 * not modelled (the test driver's cuMemAlloc memory is private to its
 * process) and is refused with CUDA_ERROR_NOT_SUPPORTED.
 */
#include "fake_internal.h"
#include "fake_ranges.h"

#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

/* Memory bound to a multicast object (cuMulticastBindAddr): the bound
 * allocation's pages, held open as long as the binding lasts. */
struct fk_mc_bind {
    uint64_t mc_offset, size, fd_offset;
    int fd, device;
    struct fk_mc_bind *next;
};

struct fk_handle {
    struct fk_phys mem; /* its pages (fake_phys.c) */
    uint64_t size;
    int device; /* -1: host location */
    bool exportable, imported;
    bool hw_decompress; /* made with CU_MEM_CREATE_USAGE_HW_DECOMPRESS */
    int mappings;
    bool released;
    /* a multicast object: its team, the devices added so far, and what
     * they bound (each mapping of the object reaches the bound pages) */
    bool multicast;
    unsigned int mc_team;
    uint32_t mc_added;
    struct fk_mc_bind *mc_binds;
};

#define FK_ACCESS_HOST (1u << 31)
struct fk_mapping {
    uint64_t base, size, offset; /* offset: into the handle */
    struct fk_handle *h;
    uint32_t access; /* a bit per device granted, FK_ACCESS_HOST */
    /* CU_POINTER_ATTRIBUTE_SYNC_MEMOPS, which the driver keeps per
     * allocation: here per mapping, what a VMM pointer's range is */
    bool sync_memops;
    RB_ENTRY(fk_mapping) rb;
};

FK_RANGE_TREE(mapping_tree, fk_mapping, rb)

static pthread_mutex_t vmm_lock = PTHREAD_MUTEX_INITIALIZER;
static struct mapping_tree mappings = RB_INITIALIZER(&mappings);

/* The mapping with the greatest base at or below addr (NULL: none), which
 * holds addr if any does. Caller holds vmm_lock. */
static struct fk_mapping *at_or_below(uint64_t addr)
{
    return mapping_tree_at_or_below(&mappings, addr);
}

static struct fk_mapping *holding(uint64_t addr)
{
    struct fk_mapping *m = at_or_below(addr);
    return m && addr - m->base < m->size ? m : NULL;
}

/* The first mapping whose base is at or above addr. */
static struct fk_mapping *from(uint64_t addr)
{
    struct fk_mapping key = {.base = addr};
    return RB_NFIND(mapping_tree, &mappings, &key);
}

static bool granular(uint64_t v) { return (v % FK_GRANULARITY) == 0; }

/* The handle's pages as a memfd, for a second or partial mapping, an
 * export, a binding or a dma-buf (fake_phys.c makes it on first need).
 * Caller holds vmm_lock. */
static int handle_fd(struct fk_handle *h)
{
    const struct fk_mapping *m = h->mem.at ? holding(h->mem.at) : NULL;
    return fk_phys_fd(&h->mem, m && m->access);
}

FK_EXPORT CUresult cuMemGetAllocationGranularity(size_t *granularity,
                                                 const CUmemAllocationProp *prop,
                                                 CUmemAllocationGranularity_flags option)
{
    FK_ENTER("cuMemGetAllocationGranularity");
    (void)option;
    if (granularity == NULL || prop == NULL)
        return CUDA_ERROR_INVALID_VALUE;
    *granularity = FK_GRANULARITY;
    return CUDA_SUCCESS;
}

FK_EXPORT CUresult cuMemAddressReserve(CUdeviceptr *ptr, size_t size, size_t alignment,
                                       CUdeviceptr addr, unsigned long long flags)
{
    FK_ENTER("cuMemAddressReserve");
    (void)addr;
    (void)flags;
    if (ptr == NULL || size == 0 || !granular(size))
        return CUDA_ERROR_INVALID_VALUE;
    uint64_t align = alignment > FK_GRANULARITY ? alignment : FK_GRANULARITY;
    uint64_t span = size + align;
    char *p = mmap(NULL, span, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE,
                   -1, 0);
    if (p == MAP_FAILED)
        return CUDA_ERROR_OUT_OF_MEMORY;
    uint64_t start = ((uint64_t)(uintptr_t)p + align - 1) / align * align;
    uint64_t head = start - (uint64_t)(uintptr_t)p;
    if (head)
        munmap(p, head);
    munmap((char *)(uintptr_t)(start + size), span - head - size);
    *ptr = start;
    return CUDA_SUCCESS;
}

FK_EXPORT CUresult cuMemAddressFree(CUdeviceptr ptr, size_t size)
{
    FK_ENTER("cuMemAddressFree");
    if (ptr == 0 || size == 0)
        return CUDA_ERROR_INVALID_VALUE;
    munmap((void *)(uintptr_t)ptr, size);
    return CUDA_SUCCESS;
}

FK_EXPORT CUresult cuMemCreate(CUmemGenericAllocationHandle *handle, size_t size,
                               const CUmemAllocationProp *prop, unsigned long long flags)
{
    FK_ENTER("cuMemCreate");
    if (handle == NULL || prop == NULL || flags != 0 || size == 0 || !granular(size))
        return CUDA_ERROR_INVALID_VALUE;
    int device = -1;
    switch (prop->location.type) {
    case CU_MEM_LOCATION_TYPE_DEVICE:
        if (prop->location.id < 0 || prop->location.id >= fk.ndevices)
            return CUDA_ERROR_INVALID_DEVICE;
        device = prop->location.id;
        break;
    case CU_MEM_LOCATION_TYPE_HOST:
    case CU_MEM_LOCATION_TYPE_HOST_NUMA:
        break;
    default:
        return CUDA_ERROR_INVALID_VALUE;
    }
    if (device >= 0 && !fk_charge(device, size))
        return CUDA_ERROR_OUT_OF_MEMORY;
    struct fk_handle *h = calloc(1, sizeof *h);
    if (h == NULL || fk_phys_init(&h->mem, size) != 0) {
        free(h);
        if (device >= 0)
            fk_uncharge(device, size);
        return CUDA_ERROR_OUT_OF_MEMORY;
    }
    h->size = size;
    h->device = device;
    h->exportable = (prop->requestedHandleTypes & CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR) != 0;
    h->hw_decompress = (prop->allocFlags.usage & CU_MEM_CREATE_USAGE_HW_DECOMPRESS) != 0;
    *handle = (CUmemGenericAllocationHandle)(uintptr_t)h;
    return CUDA_SUCCESS;
}

FK_EXPORT CUresult cuMemExportToShareableHandle(void *shareable,
                                                CUmemGenericAllocationHandle handle,
                                                CUmemAllocationHandleType type,
                                                unsigned long long flags)
{
    FK_ENTER("cuMemExportToShareableHandle");
    struct fk_handle *h = (struct fk_handle *)(uintptr_t)handle;
    if (shareable == NULL || h == NULL || flags != 0 ||
        type != CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR)
        return CUDA_ERROR_INVALID_VALUE;
    if (!h->exportable)
        return CUDA_ERROR_NOT_PERMITTED;
    pthread_mutex_lock(&vmm_lock);
    int hfd = handle_fd(h);
    int fd = hfd < 0 ? -1 : dup(hfd);
    pthread_mutex_unlock(&vmm_lock);
    if (fd < 0)
        return CUDA_ERROR_OUT_OF_MEMORY;
    *(int *)shareable = fd;
    return CUDA_SUCCESS;
}

FK_EXPORT CUresult cuMemImportFromShareableHandle(CUmemGenericAllocationHandle *handle,
                                                  void *os_handle,
                                                  CUmemAllocationHandleType type)
{
    FK_ENTER("cuMemImportFromShareableHandle");
    int fd = (int)(intptr_t)os_handle;
    struct stat st;
    if (handle == NULL || type != CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR ||
        fstat(fd, &st) != 0 || st.st_size <= 0 || !granular((uint64_t)st.st_size))
        return CUDA_ERROR_INVALID_VALUE;
    struct fk_handle *h = calloc(1, sizeof *h);
    int own = h ? fcntl(fd, F_DUPFD_CLOEXEC, 0) : -1;
    if (own < 0) {
        free(h);
        return CUDA_ERROR_OUT_OF_MEMORY;
    }
    h->size = (uint64_t)st.st_size;
    fk_phys_init_fd(&h->mem, own, h->size);
    h->device = 0;
    h->imported = true;
    *handle = (CUmemGenericAllocationHandle)(uintptr_t)h;
    return CUDA_SUCCESS;
}

/* cuda.h: "Retrieve the contents of the property structure defining
 * properties for this handle" (of cuMemCreate or an import). */
FK_EXPORT CUresult cuMemGetAllocationPropertiesFromHandle(CUmemAllocationProp *prop,
                                                          CUmemGenericAllocationHandle handle)
{
    FK_ENTER("cuMemGetAllocationPropertiesFromHandle");
    struct fk_handle *h = (struct fk_handle *)(uintptr_t)handle;
    if (prop == NULL || h == NULL)
        return CUDA_ERROR_INVALID_VALUE;
    memset(prop, 0, sizeof *prop);
    prop->type = CU_MEM_ALLOCATION_TYPE_PINNED;
    prop->location.type = h->device >= 0 ? CU_MEM_LOCATION_TYPE_DEVICE
                                         : CU_MEM_LOCATION_TYPE_HOST;
    prop->location.id = h->device >= 0 ? h->device : 0;
    prop->allocFlags.usage = h->hw_decompress ? CU_MEM_CREATE_USAGE_HW_DECOMPRESS : 0;
    return CUDA_SUCCESS;
}

/* cuda.h, Multicast Object Management: a multicast object is a handle of
 * prop->size (a multiple of the granularity) that cuMemMap maps like any
 * other; the memory behind it is what each device binds to it
 * (cuMulticastBindMem / cuMulticastBindAddr), handles with their own
 * charge, so the object itself charges no device. Released with
 * cuMemRelease. Where nothing is bound, a mapping of the object reads the
 * object's own pages (the real driver's behaviour there is not documented;
 * no test reads it). */
FK_EXPORT CUresult cuMulticastCreate(CUmemGenericAllocationHandle *mcHandle,
                                     const CUmulticastObjectProp *prop)
{
    FK_ENTER("cuMulticastCreate");
    if (mcHandle == NULL || prop == NULL || prop->size == 0 || !granular(prop->size) ||
        prop->numDevices == 0)
        return CUDA_ERROR_INVALID_VALUE;
    struct fk_handle *h = calloc(1, sizeof *h);
    int fd = h ? memfd_create("fakecuda-multicast", MFD_CLOEXEC) : -1;
    if (fd < 0 || ftruncate(fd, (off_t)prop->size) != 0) {
        if (fd >= 0)
            close(fd);
        free(h);
        return CUDA_ERROR_OUT_OF_MEMORY;
    }
    fk_phys_init_fd(&h->mem, fd, prop->size);
    h->size = prop->size;
    h->device = 0;
    h->imported = true; /* charges nothing when dropped */
    h->multicast = true;
    h->mc_team = prop->numDevices;
    *mcHandle = (CUmemGenericAllocationHandle)(uintptr_t)h;
    return CUDA_SUCCESS;
}

static void handle_drop_if_unused(struct fk_handle *h)
{
    if (!h->released || h->mappings > 0)
        return;
    while (h->mc_binds) {
        struct fk_mc_bind *b = h->mc_binds;
        h->mc_binds = b->next;
        close(b->fd);
        free(b);
    }
    fk_phys_drop(&h->mem);
    if (h->device >= 0 && !h->imported)
        fk_uncharge(h->device, h->size);
    free(h);
}

FK_EXPORT CUresult cuMemRelease(CUmemGenericAllocationHandle handle)
{
    FK_ENTER("cuMemRelease");
    struct fk_handle *h = (struct fk_handle *)(uintptr_t)handle;
    if (h == NULL)
        return CUDA_ERROR_INVALID_VALUE;
    pthread_mutex_lock(&vmm_lock);
    h->released = true;
    handle_drop_if_unused(h); /* memory lives on while mapped */
    pthread_mutex_unlock(&vmm_lock);
    return CUDA_SUCCESS;
}

/* Show [mc_offset, +size) of a multicast object, backed by fd from
 * fd_offset, through its mapping m (the part of it m maps), with the access
 * m has. Caller holds vmm_lock. */
static void mc_overlay(const struct fk_mapping *m, uint64_t mc_offset, uint64_t size, int fd,
                       uint64_t fd_offset)
{
    uint64_t lo = mc_offset > m->offset ? mc_offset : m->offset;
    uint64_t hi = mc_offset + size < m->offset + m->size ? mc_offset + size
                                                        : m->offset + m->size;
    if (lo >= hi)
        return;
    mmap((void *)(uintptr_t)(m->base + (lo - m->offset)), hi - lo,
         m->access ? PROT_READ | PROT_WRITE : PROT_NONE, MAP_SHARED | MAP_FIXED, fd,
         (off_t)(fd_offset + (lo - mc_offset)));
}

/* Every mapping of the multicast object h shows [mc_offset, +size) from fd. */
static void mc_show(struct fk_handle *h, uint64_t mc_offset, uint64_t size, int fd,
                    uint64_t fd_offset)
{
    struct fk_mapping *m;
    RB_FOREACH(m, mapping_tree, &mappings)
        if (m->h == h)
            mc_overlay(m, mc_offset, size, fd, fd_offset);
}

static struct fk_handle *multicast_of(CUmemGenericAllocationHandle handle)
{
    struct fk_handle *h = (struct fk_handle *)(uintptr_t)handle;
    return h && h->multicast ? h : NULL;
}

/* cuda.h: "Associates a device to a multicast object. The added device will
 * be a part of the multicast team of size specified by
 * CUmulticastObjectProp::numDevices"; "All devices must be added to the
 * multicast team before any memory can be bound". The driver blocks a bind
 * until then; the test driver, with no other process to add them, refuses
 * it (CUDA_ERROR_NOT_PERMITTED) instead of hanging. */
FK_EXPORT CUresult cuMulticastAddDevice(CUmemGenericAllocationHandle mcHandle, CUdevice dev)
{
    FK_ENTER("cuMulticastAddDevice");
    struct fk_handle *h = multicast_of(mcHandle);
    if (h == NULL)
        return CUDA_ERROR_INVALID_VALUE;
    if (dev < 0 || dev >= fk.ndevices)
        return CUDA_ERROR_INVALID_DEVICE;
    pthread_mutex_lock(&vmm_lock);
    CUresult rc = CUDA_SUCCESS;
    if (!(h->mc_added >> dev & 1) &&
        (unsigned)__builtin_popcount(h->mc_added) >= h->mc_team)
        rc = CUDA_ERROR_INVALID_VALUE; /* the team is full */
    else
        h->mc_added |= 1u << dev;
    pthread_mutex_unlock(&vmm_lock);
    return rc;
}

/* cuda.h, cuMulticastBindAddr: "Binds a memory allocation specified by its
 * mapped address memptr to a multicast object"; memptr, size and mcOffset
 * multiples of the granularity, "size cannot be larger than the size of the
 * allocated memory", "size + mcOffset cannot be larger than the total size
 * of the multicast object", the memory "created on one of the devices that
 * was added to the multicast team", flags zero. What is bound is the
 * physical memory mapped there when the call is made: every mapping of the
 * object then reaches those pages, whatever is later mapped at memptr. */
FK_EXPORT CUresult cuMulticastBindAddr(CUmemGenericAllocationHandle mcHandle, size_t mcOffset,
                                       CUdeviceptr memptr, size_t size, unsigned long long flags)
{
    FK_ENTER("cuMulticastBindAddr");
    struct fk_handle *h = multicast_of(mcHandle);
    if (h == NULL || flags != 0 || size == 0 || !granular(mcOffset) || !granular(memptr) ||
        !granular(size) || mcOffset + size > h->size)
        return CUDA_ERROR_INVALID_VALUE;
    struct fk_mc_bind *b = calloc(1, sizeof *b);
    if (b == NULL)
        return CUDA_ERROR_OUT_OF_MEMORY;
    pthread_mutex_lock(&vmm_lock);
    struct fk_mapping *m = holding(memptr);
    CUresult rc = CUDA_SUCCESS;
    if (m == NULL || memptr + size > m->base + m->size || m->h->multicast)
        rc = CUDA_ERROR_INVALID_VALUE; /* not one mapped allocation */
    else if (m->h->device < 0 || !(h->mc_added >> m->h->device & 1))
        rc = CUDA_ERROR_INVALID_DEVICE;
    else if ((unsigned)__builtin_popcount(h->mc_added) < h->mc_team)
        rc = CUDA_ERROR_NOT_PERMITTED;
    else if (handle_fd(m->h) < 0 || (b->fd = fcntl(m->h->mem.fd, F_DUPFD_CLOEXEC, 0)) < 0)
        rc = CUDA_ERROR_OUT_OF_MEMORY;
    if (rc == CUDA_SUCCESS) {
        b->mc_offset = mcOffset;
        b->size = size;
        b->fd_offset = m->offset + (memptr - m->base);
        b->device = m->h->device;
        b->next = h->mc_binds;
        h->mc_binds = b;
        mc_show(h, mcOffset, size, b->fd, b->fd_offset);
    }
    pthread_mutex_unlock(&vmm_lock);
    if (rc != CUDA_SUCCESS)
        free(b);
    return rc;
}

/* cuda.h: "Unbinds any memory allocations hosted on dev and bound to a
 * multicast object at mcOffset and upto a given size"; the object's
 * mappings read its own pages there again. */
FK_EXPORT CUresult cuMulticastUnbind(CUmemGenericAllocationHandle mcHandle, CUdevice dev,
                                     size_t mcOffset, size_t size)
{
    FK_ENTER("cuMulticastUnbind");
    struct fk_handle *h = multicast_of(mcHandle);
    if (h == NULL || !granular(mcOffset) || !granular(size) || mcOffset + size > h->size)
        return CUDA_ERROR_INVALID_VALUE;
    if (dev < 0 || dev >= fk.ndevices)
        return CUDA_ERROR_INVALID_DEVICE;
    pthread_mutex_lock(&vmm_lock);
    for (struct fk_mc_bind **pp = &h->mc_binds; *pp;) {
        struct fk_mc_bind *b = *pp;
        if (b->device == dev && b->mc_offset >= mcOffset &&
            b->mc_offset + b->size <= mcOffset + size) {
            *pp = b->next;
            mc_show(h, b->mc_offset, b->size, h->mem.fd, b->mc_offset);
            close(b->fd);
            free(b);
        } else {
            pp = &b->next;
        }
    }
    pthread_mutex_unlock(&vmm_lock);
    return CUDA_SUCCESS;
}

FK_EXPORT CUresult cuMemMap(CUdeviceptr ptr, size_t size, size_t offset,
                            CUmemGenericAllocationHandle handle, unsigned long long flags)
{
    FK_ENTER("cuMemMap");
    struct fk_handle *h = (struct fk_handle *)(uintptr_t)handle;
    if (h == NULL || ptr == 0 || flags != 0 || !granular(ptr) || !granular(size) ||
        !granular(offset) || offset + size > h->size)
        return CUDA_ERROR_INVALID_VALUE;
    struct fk_mapping *m = malloc(sizeof *m);
    if (m == NULL)
        return CUDA_ERROR_OUT_OF_MEMORY;
    pthread_mutex_lock(&vmm_lock);
    struct fk_mapping *o = at_or_below(ptr + size - 1); /* the last that could overlap */
    if (o && ptr < o->base + o->size) {
        pthread_mutex_unlock(&vmm_lock);
        free(m);
        return CUDA_ERROR_INVALID_VALUE; /* already mapped */
    }
    bool moved = fk_phys_movable(&h->mem, size, offset) && fk_phys_map(&h->mem, ptr) == 0;
    int fd = moved ? -1 : handle_fd(h);
    void *p = moved ? NULL
        : fd < 0 ? MAP_FAILED
                 : mmap((void *)(uintptr_t)ptr, size, PROT_NONE, MAP_SHARED | MAP_FIXED, fd,
                        (off_t)offset);
    if (p == MAP_FAILED) {
        pthread_mutex_unlock(&vmm_lock);
        free(m);
        return CUDA_ERROR_INVALID_VALUE;
    }
    *m = (struct fk_mapping){.base = ptr, .size = size, .offset = offset, .h = h};
    for (struct fk_mc_bind *b = h->mc_binds; b; b = b->next)
        mc_overlay(m, b->mc_offset, b->size, b->fd, b->fd_offset);
    RB_INSERT(mapping_tree, &mappings, m);
    h->mappings++;
    pthread_mutex_unlock(&vmm_lock);
    return CUDA_SUCCESS;
}

FK_EXPORT CUresult cuMemUnmap(CUdeviceptr ptr, size_t size)
{
    FK_ENTER("cuMemUnmap");
    if (ptr == 0 || size == 0)
        return CUDA_ERROR_INVALID_VALUE;
    pthread_mutex_lock(&vmm_lock);
    /* Every mapping touched must lie wholly inside the range: only the
     * ones holding its first and its last byte can stick out. */
    struct fk_mapping *first = holding(ptr), *last = holding(ptr + size - 1);
    if ((first && first->base < ptr) || (last && last->base + last->size > ptr + size)) {
        pthread_mutex_unlock(&vmm_lock);
        return CUDA_ERROR_INVALID_VALUE;
    }
    /* anonymous pages leave before the reservation takes their place */
    for (struct fk_mapping *m = from(ptr); m && m->base < ptr + size;
         m = RB_NEXT(mapping_tree, &mappings, m))
        if (fk_phys_mapped_at(&m->h->mem, m->base))
            fk_phys_unmap(&m->h->mem, !m->h->released);
    mmap((void *)(uintptr_t)ptr, size, PROT_NONE,
         MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED | MAP_NORESERVE, -1, 0);
    for (struct fk_mapping *m = from(ptr), *next; m && m->base < ptr + size; m = next) {
        next = RB_NEXT(mapping_tree, &mappings, m);
        RB_REMOVE(mapping_tree, &mappings, m);
        m->h->mappings--;
        handle_drop_if_unused(m->h);
        free(m);
    }
    pthread_mutex_unlock(&vmm_lock);
    return CUDA_SUCCESS;
}

FK_EXPORT CUresult cuMemSetAccess(CUdeviceptr ptr, size_t size,
                                  const CUmemAccessDesc *desc, size_t count)
{
    FK_ENTER("cuMemSetAccess");
    if (ptr == 0 || size == 0 || desc == NULL || count == 0)
        return CUDA_ERROR_INVALID_VALUE;
    uint32_t grant = 0, revoke = 0;
    for (size_t i = 0; i < count; i++) {
        uint32_t bit;
        if (desc[i].location.type == CU_MEM_LOCATION_TYPE_DEVICE) {
            if (desc[i].location.id < 0 || desc[i].location.id >= fk.ndevices)
                return CUDA_ERROR_INVALID_DEVICE;
            bit = 1u << desc[i].location.id;
        } else if (desc[i].location.type == CU_MEM_LOCATION_TYPE_HOST ||
                   desc[i].location.type == CU_MEM_LOCATION_TYPE_HOST_NUMA) {
            bit = FK_ACCESS_HOST;
        } else {
            return CUDA_ERROR_INVALID_VALUE;
        }
        if (desc[i].flags == CU_MEM_ACCESS_FLAGS_PROT_NONE)
            revoke |= bit;
        else
            grant |= bit;
    }
    pthread_mutex_lock(&vmm_lock);
    uint32_t any = grant;
    for (struct fk_mapping *m = from(ptr); m && m->base < ptr + size;
         m = RB_NEXT(mapping_tree, &mappings, m))
        if (m->base + m->size <= ptr + size) {
            m->access = (m->access | grant) & ~revoke;
            any |= m->access;
        }
    int prot = any ? PROT_READ | PROT_WRITE : PROT_NONE;
    int rc = mprotect((void *)(uintptr_t)ptr, size, prot);
    pthread_mutex_unlock(&vmm_lock);
    return rc == 0 ? CUDA_SUCCESS : CUDA_ERROR_INVALID_VALUE;
}

/* cuMemGetHandleForAddressRange (driver API reference): a dma-buf file
 * descriptor for device memory; a range from cuMemAddressReserve must be
 * fully mapped, and dptr and size aligned to the host page size. Only
 * CU_MEM_RANGE_HANDLE_TYPE_DMA_BUF_FD exists. Here the range must lie in
 * one mapping of device memory, and the descriptor is its memfd: a
 * reader maps it at offset (dptr - base + the mapping's offset into its
 * handle) and sees the device's bytes for as long as that memory backs
 * the range. cuMemAlloc memory (not VMM here) is refused with
 * CUDA_ERROR_NOT_SUPPORTED, as its IPC is. */
FK_EXPORT CUresult cuMemGetHandleForAddressRange(void *handle, CUdeviceptr dptr, size_t size,
                                                 CUmemRangeHandleType type,
                                                 unsigned long long flags)
{
    FK_ENTER("cuMemGetHandleForAddressRange");
    long page = sysconf(_SC_PAGESIZE);
    if (handle == NULL || size == 0 || type != CU_MEM_RANGE_HANDLE_TYPE_DMA_BUF_FD ||
        dptr % (uint64_t)page || size % (size_t)page)
        return CUDA_ERROR_INVALID_VALUE;
    (void)flags;
    CUresult rc = CUDA_ERROR_NOT_SUPPORTED;
    pthread_mutex_lock(&vmm_lock);
    struct fk_mapping *m = holding(dptr);
    if (m) {
        rc = CUDA_ERROR_INVALID_VALUE;
        if (dptr + size <= m->base + m->size && m->h->device >= 0) {
            int hfd = handle_fd(m->h);
            int fd = hfd < 0 ? -1 : dup(hfd);
            if (fd >= 0) {
                *(int *)handle = fd;
                rc = CUDA_SUCCESS;
            }
        }
    }
    pthread_mutex_unlock(&vmm_lock);
    return rc;
}

/* "Get the access flags set for the given location and ptr" (driver API
 * reference, cuMemGetAccess): what cuMemSetAccess gave the mapping at ptr;
 * an address no mapping holds is CUDA_ERROR_INVALID_VALUE. */
FK_EXPORT CUresult cuMemGetAccess(unsigned long long *flags, const CUmemLocation *location,
                                  CUdeviceptr ptr)
{
    FK_ENTER("cuMemGetAccess");
    if (flags == NULL || location == NULL)
        return CUDA_ERROR_INVALID_VALUE;
    uint32_t bit;
    if (location->type == CU_MEM_LOCATION_TYPE_DEVICE) {
        if (location->id < 0 || location->id >= fk.ndevices)
            return CUDA_ERROR_INVALID_DEVICE;
        bit = 1u << location->id;
    } else if (location->type == CU_MEM_LOCATION_TYPE_HOST ||
               location->type == CU_MEM_LOCATION_TYPE_HOST_NUMA) {
        bit = FK_ACCESS_HOST;
    } else {
        return CUDA_ERROR_INVALID_VALUE;
    }
    CUresult rc = CUDA_ERROR_INVALID_VALUE;
    pthread_mutex_lock(&vmm_lock);
    struct fk_mapping *m = holding(ptr);
    if (m) {
        *flags = m->access & bit ? CU_MEM_ACCESS_FLAGS_PROT_READWRITE
                                 : CU_MEM_ACCESS_FLAGS_PROT_NONE;
        rc = CUDA_SUCCESS;
    }
    pthread_mutex_unlock(&vmm_lock);
    return rc;
}

int fk_vmm_reachable(uint64_t addr, int dev)
{
    int r = -1;
    pthread_mutex_lock(&vmm_lock);
    struct fk_mapping *m = holding(addr);
    if (m)
        r = dev >= 0 && dev < 31 && (m->access >> dev & 1);
    pthread_mutex_unlock(&vmm_lock);
    return r;
}

bool fk_vmm_lookup(uint64_t addr, uint64_t *base, uint64_t *size, int *dev,
                   bool *on_host)
{
    bool found = false;
    pthread_mutex_lock(&vmm_lock);
    struct fk_mapping *m = holding(addr);
    if (m) {
        *base = m->base;
        *size = m->size;
        *dev = m->h->device;
        *on_host = m->h->device < 0;
        found = true;
    }
    pthread_mutex_unlock(&vmm_lock);
    return found;
}

/* Whether the mapping holding addr maps memory made for hardware
 * decompression; *end: where that mapping ends. */
bool fk_vmm_hw_decompress(uint64_t addr, uint64_t *end)
{
    pthread_mutex_lock(&vmm_lock);
    struct fk_mapping *m = holding(addr);
    bool capable = m && m->h->hw_decompress;
    if (m)
        *end = m->base + m->size;
    pthread_mutex_unlock(&vmm_lock);
    return capable;
}

bool fk_vmm_sync_memops(uint64_t addr, int set, bool *value)
{
    pthread_mutex_lock(&vmm_lock);
    struct fk_mapping *m = holding(addr);
    if (m && set >= 0)
        m->sync_memops = set;
    if (m)
        *value = m->sync_memops;
    pthread_mutex_unlock(&vmm_lock);
    return m != NULL;
}

/* ---- legacy IPC ----------------------------------------------------------- */

FK_EXPORT CUresult cuIpcGetMemHandle(CUipcMemHandle *handle, CUdeviceptr dptr)
{
    FK_ENTER("cuIpcGetMemHandle");
    uint64_t base, size;
    int dev;
    bool on_host;
    if (handle == NULL)
        return CUDA_ERROR_INVALID_VALUE;
    if (fk_vmm_lookup(dptr, &base, &size, &dev, &on_host))
        return CUDA_ERROR_INVALID_VALUE; /* as measured: VMM memory cannot */
    return CUDA_ERROR_NOT_SUPPORTED;
}

FK_EXPORT CUresult cuIpcOpenMemHandle_v2(CUdeviceptr *pdptr, CUipcMemHandle handle,
                                         unsigned int flags)
{
    FK_ENTER("cuIpcOpenMemHandle_v2");
    (void)handle;
    (void)flags;
    if (pdptr == NULL)
        return CUDA_ERROR_INVALID_VALUE;
    return CUDA_ERROR_INVALID_VALUE; /* it never hands one out */
}

FK_EXPORT CUresult cuIpcCloseMemHandle(CUdeviceptr dptr)
{
    FK_ENTER("cuIpcCloseMemHandle");
    (void)dptr;
    return CUDA_ERROR_INVALID_VALUE;
}
