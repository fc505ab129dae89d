/*
 * fake_pool.c: stream-ordered memory pools and graph memory of the test
 * driver, as the driver API reference (Stream Ordered Memory Allocator,
 * Graph Management) and cuda.h describe them.
 *
 * A pool holds a reserve of backing memory; what cuMemAllocAsync hands out
 * is carved from it (fake_mem.c), and the device is charged the reserve,
 * not the allocations. The reserve grows, a granule (2 MiB) at a time, when
 * an allocation does not fit what is reserved and unused. A freed block
 * comes back to the pool when the stream reaches the free, and stays
 * reserved: "When more than the release threshold bytes of memory are held
 * by the memory pool, the allocator will try to release memory back to the
 * OS on the next call to stream, event or context synchronize. (default
 * 0)" (CU_MEMPOOL_ATTR_RELEASE_THRESHOLD). cuMemPoolTrimTo "releases
 * memory back to the OS until the pool contains fewer than minBytesToKeep
 * reserved bytes, or there is no more memory that the allocator can safely
 * release"; it "cannot release OS allocations that back outstanding
 * asynchronous allocations". This pool is ideal: it never fragments, so
 * what it can release is its reserve above its use rounded up to granules.
 *
 * A pool lives on a device, or on the host (CU_MEM_LOCATION_TYPE_HOST,
 * _HOST_NUMA: page-locked memory, charged to no device). Each device has a
 * default pool (cuDeviceGetDefaultMemPool) and a current one, which
 * cuMemAllocAsync uses: "the last pool provided to cuDeviceSetMemPool for
 * this device or the device's default memory pool" (cuDeviceGetMemPool).
 *
 * Graph memory: an allocation node (cuGraphAddMemAllocNode, or
 * cuMemAllocAsync during stream capture) gets a fixed address at once ("The
 * allocation's address remains fixed across instantiations and
 * launches"); the device's graph memory is taken when an instantiated
 * graph is first launched or uploaded, and the driver keeps it cached
 * until cuDeviceGraphMemTrim frees "blocks which are not in use by a graph
 * that is either currently executing or scheduled to execute". Reuse: the
 * programming guide (Graph Memory Nodes, "Physical Memory Management and
 * Sharing") lets several graphs use the same physical memory when they
 * will not run at the same time, and keeps a graph's mappings between its
 * launches. This driver reuses the least that allows: an exec's memory is
 * bound to it from its first launch or upload until it is destroyed (a
 * trim leaves it), and only memory no exec is bound to (a destroyed one's,
 * kept in the reserve until a trim) is handed to the next exec; the reserve
 * grows by whole granules when that is short. A real driver may reuse
 * more, so its reserve grows by at most as much. The device's figures are
 * CU_GRAPH_MEM_ATTR_USED_MEM_CURRENT (bound) and _RESERVED_MEM_CURRENT.
 *
 * Sharing a pool between processes (cuda.h, cuMemPoolExportToShareableHandle
 * and its siblings): a pool made with a handle type ("To create an IPC
 * capable mempool, create a mempool with a CUmemAllocationHandleType other
 * than CU_MEM_HANDLE_TYPE_NONE"; here POSIX file descriptors) exports as a
 * file descriptor, which another process turns into a pool of its own with
 * cuMemPoolImportFromShareableHandle. "Imported memory pools do not support
 * creating new allocations. As such imported memory pools may not be used
 * in cuDeviceSetMemPool or cuMemAllocFromPoolAsync calls." A block of the
 * exporter's is named by cuMemPoolExportPointer's export data ("not a
 * handle and may be shared through any IPC mechanism") and mapped by the
 * importer with cuMemPoolImportPointer, freed there with cuMemFree or
 * cuMemFreeAsync. The memory stays the exporter's: the importer's device
 * is charged nothing for it. Here the shareable pool's blocks live in a
 * memfd (its first page says which device the pool is on), the descriptor
 * is a duplicate of it, and the export data gives a block's offset and
 * size in it.
 */
#include "fake_internal.h"

#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#define POOL_MAGIC 0x706f6f6cU
#define SHARE_MAGIC 0x73686172U

/* the first page of a shareable pool's file */
struct share_header {
    unsigned magic;
    int device;
};
/* what cuMemPoolExportPointer writes into CUmemPoolPtrExportData */
struct share_data {
    unsigned magic;
    uint64_t inode, off, size;
};
_Static_assert(sizeof(struct share_data) <= sizeof(CUmemPoolPtrExportData),
               "export data must fit");

struct fk_pool {
    unsigned magic;
    int device; /* -1: a host pool */
    bool destroyed;
    uint64_t reserved, used, reserved_high, used_high, threshold;
    int reuse[3]; /* the three reuse policies: kept, not modelled */
    /* shareable (made with POSIX file descriptors) or imported: its file */
    bool shareable, imported;
    bool hw_decompress; /* made with CU_MEM_POOL_CREATE_USAGE_HW_DECOMPRESS */
    int fd;
    uint64_t file_end; /* where the next block goes in it */
    struct fk_pool *next;
};

static pthread_mutex_t pool_lock = PTHREAD_MUTEX_INITIALIZER;
static struct fk_pool default_pool[FK_MAX_DEVICES];
static struct fk_pool *current_pool[FK_MAX_DEVICES];
static struct fk_pool *created; /* pools of cuMemPoolCreate, never freed */

static struct {
    uint64_t reserved, used, reserved_high, used_high;
} graph_mem[FK_MAX_DEVICES];

static uint64_t gran_round(uint64_t n) { return (n + FK_GRANULARITY - 1) & ~(FK_GRANULARITY - 1); }
static uint64_t page_round(uint64_t n) { return (n + FK_PAGE - 1) & ~(FK_PAGE - 1); }

/* Caller holds pool_lock. */
static struct fk_pool *default_of(int dev)
{
    struct fk_pool *p = &default_pool[dev];
    if (p->magic != POOL_MAGIC)
        *p = (struct fk_pool){.magic = POOL_MAGIC, .device = dev, .reuse = {1, 1, 1}};
    return p;
}

/* Whether memory carved from `from` (a pool, or NULL: graph memory, an
 * import) can feed hardware decompression: only a pool created with
 * CU_MEM_POOL_CREATE_USAGE_HW_DECOMPRESS (cuMemBatchDecompressAsync's
 * list of allocators; the default pool is not created with it). */
bool fk_pool_hw_decompress(void *from)
{
    bool capable = false;
    pthread_mutex_lock(&pool_lock);
    for (struct fk_pool *p = created; p; p = p->next)
        if (p == from)
            capable = p->hw_decompress;
    pthread_mutex_unlock(&pool_lock);
    return capable;
}

/* A pool handle the program holds, checked: NULL when it is none. */
static struct fk_pool *pool_of(CUmemoryPool h)
{
    struct fk_pool *want = (struct fk_pool *)h, *found = NULL;
    pthread_mutex_lock(&pool_lock);
    for (int d = 0; d < fk.ndevices && !found; d++)
        if (want == &default_pool[d])
            found = default_of(d);
    for (struct fk_pool *p = created; p && !found; p = p->next)
        if (p == want && !p->destroyed)
            found = p;
    pthread_mutex_unlock(&pool_lock);
    return found;
}

static void add_created(struct fk_pool *p)
{
    pthread_mutex_lock(&pool_lock);
    p->next = created;
    created = p;
    pthread_mutex_unlock(&pool_lock);
}

/* Give back what is reserved above `keep` (and above what is in use).
 * Caller holds pool_lock. */
static void shrink_locked(struct fk_pool *p, uint64_t keep)
{
    uint64_t floor = gran_round(p->used > keep ? p->used : keep);
    if (floor >= p->reserved)
        return;
    if (p->device >= 0)
        fk_uncharge(p->device, p->reserved - floor);
    p->reserved = floor;
}

void fk_pool_returned(void *from, uint64_t bytes)
{
    struct fk_pool *p = from;
    pthread_mutex_lock(&pool_lock);
    p->used -= bytes;
    if (p->destroyed) /* its memory goes once nothing is outstanding */
        shrink_locked(p, 0);
    pthread_mutex_unlock(&pool_lock);
}

void fk_pool_sync_release(void)
{
    pthread_mutex_lock(&pool_lock);
    for (int d = 0; d < fk.ndevices; d++)
        if (default_pool[d].magic == POOL_MAGIC && default_pool[d].reserved > default_pool[d].threshold)
            shrink_locked(&default_pool[d], default_pool[d].threshold);
    for (struct fk_pool *p = created; p; p = p->next)
        if (p->reserved > p->threshold)
            shrink_locked(p, p->threshold);
    pthread_mutex_unlock(&pool_lock);
}

/* Carve bytesize out of p, growing its reserve when it must. */
static CUresult alloc_from(struct fk_pool *p, CUdeviceptr *dptr, size_t bytesize)
{
    if (dptr == NULL || bytesize == 0)
        return CUDA_ERROR_INVALID_VALUE;
    uint64_t need = page_round(bytesize);
    pthread_mutex_lock(&pool_lock);
    uint64_t off = p->file_end;
    if (p->shareable && ftruncate(p->fd, (off_t)(off + need)) != 0) {
        pthread_mutex_unlock(&pool_lock);
        return CUDA_ERROR_OUT_OF_MEMORY;
    }
    p->file_end += p->shareable ? need : 0;
    uint64_t grow = p->used + need > p->reserved ? gran_round(p->used + need - p->reserved) : 0;
    if (grow && p->device >= 0 && !fk_charge(p->device, grow)) {
        pthread_mutex_unlock(&pool_lock);
        return CUDA_ERROR_OUT_OF_MEMORY;
    }
    p->reserved += grow;
    p->used += need;
    if (p->reserved > p->reserved_high)
        p->reserved_high = p->reserved;
    if (p->used > p->used_high)
        p->used_high = p->used;
    pthread_mutex_unlock(&pool_lock);
    CUresult rc = fk_mem_carve_shared(dptr, bytesize, p->device, p, p->shareable ? p->fd : -1,
                                      off);
    if (rc != CUDA_SUCCESS)
        fk_pool_returned(p, need);
    return rc;
}

/* cuMemAllocAsync in a capturing stream adds an allocation node: an address
 * now, graph memory once the graph runs (cuStreamBeginCapture: work in a
 * capturing stream "will not be executed, but will instead be captured into
 * a graph"). */
static CUresult alloc_captured(struct fk_stream *st, CUdeviceptr *dptr, size_t bytesize)
{
    if (dptr == NULL || bytesize == 0)
        return CUDA_ERROR_INVALID_VALUE;
    int dev = st->ctx ? st->ctx->device : 0;
    pthread_mutex_lock(&st->mu);
    bool room = st->n_cap_alloc < FK_GRAPH_MEM_NODES;
    pthread_mutex_unlock(&st->mu);
    if (!room) /* this driver's graphs hold so many memory nodes */
        return CUDA_ERROR_OUT_OF_MEMORY;
    CUresult rc = fk_mem_carve(dptr, bytesize, dev, NULL);
    if (rc == CUDA_SUCCESS) {
        pthread_mutex_lock(&st->mu);
        int i = st->n_cap_alloc++;
        st->cap_alloc[i].dptr = *dptr;
        st->cap_alloc[i].bytes = bytesize;
        st->cap_alloc[i].dev = dev;
        pthread_mutex_unlock(&st->mu);
    }
    return rc;
}

/* unused in the "old driver" build, which lacks the stream-ordered calls */
__attribute__((unused)) static CUresult alloc_async(CUdeviceptr *dptr, size_t bytesize,
                                                    CUmemoryPool pool, CUstream hStream,
                                                    bool current)
{
    struct fk_stream *st = fk_stream_of(hStream);
    if (st == NULL)
        return CUDA_ERROR_INVALID_HANDLE;
    if (fk_capturing(st))
        return alloc_captured(st, dptr, bytesize);
    struct fk_pool *p;
    if (current) {
        FK_NEED_CTX(c);
        pthread_mutex_lock(&pool_lock);
        p = current_pool[c->device] ? current_pool[c->device] : default_of(c->device);
        pthread_mutex_unlock(&pool_lock);
    } else if ((p = pool_of(pool)) == NULL || p->imported) {
        return CUDA_ERROR_INVALID_VALUE;
    }
    return alloc_from(p, dptr, bytesize);
}

__attribute__((unused)) static CUresult free_async(CUdeviceptr dptr, CUstream hStream)
{
    struct fk_stream *st = fk_stream_of(hStream);
    if (st == NULL)
        return CUDA_ERROR_INVALID_HANDLE;
    if (fk_capturing(st)) {
        /* a free node: graph memory stays the graph's; a free of any other
         * memory inside a capture is not modelled by this driver */
        void *from;
        return fk_mem_is_carved(dptr, &from) && from == NULL ? CUDA_SUCCESS
                                                             : CUDA_ERROR_NOT_SUPPORTED;
    }
    return fk_mem_free_async(dptr, st);
}

#define FK_ASYNC_FAMILY(suffix)                                                \
    FK_EXPORT CUresult cuMemAllocAsync##suffix(CUdeviceptr *dptr, size_t bytesize, \
                                               CUstream hStream)               \
    {                                                                          \
        FK_ENTER("cuMemAllocAsync" #suffix);                                   \
        return alloc_async(dptr, bytesize, NULL, hStream, true);               \
    }                                                                          \
    FK_EXPORT CUresult cuMemAllocFromPoolAsync##suffix(                        \
        CUdeviceptr *dptr, size_t bytesize, CUmemoryPool pool, CUstream hStream) \
    {                                                                          \
        FK_ENTER("cuMemAllocFromPoolAsync" #suffix);                           \
        if (pool == NULL)                                                      \
            return CUDA_ERROR_INVALID_HANDLE;                                  \
        return alloc_async(dptr, bytesize, pool, hStream, false);              \
    }                                                                          \
    FK_EXPORT CUresult cuMemFreeAsync##suffix(CUdeviceptr dptr, CUstream hStream) \
    {                                                                          \
        FK_ENTER("cuMemFreeAsync" #suffix);                                    \
        return free_async(dptr, hStream);                                      \
    }

#ifndef FAKECUDA_NO_ASYNC_ALLOC /* the "old driver" build lacks these */
FK_ASYNC_FAMILY()
FK_ASYNC_FAMILY(_ptsz)
#endif

/* ---- the pools themselves ---------------------------------------------- */

FK_EXPORT CUresult cuDeviceGetDefaultMemPool(CUmemoryPool *pool, CUdevice dev)
{
    FK_ENTER("cuDeviceGetDefaultMemPool");
    FK_DEVICE_ARGS(pool, dev);
    pthread_mutex_lock(&pool_lock);
    *pool = (CUmemoryPool)default_of(dev);
    pthread_mutex_unlock(&pool_lock);
    return CUDA_SUCCESS;
}

FK_EXPORT CUresult cuDeviceGetMemPool(CUmemoryPool *pool, CUdevice dev)
{
    FK_ENTER("cuDeviceGetMemPool");
    FK_DEVICE_ARGS(pool, dev);
    pthread_mutex_lock(&pool_lock);
    *pool = (CUmemoryPool)(current_pool[dev] ? current_pool[dev] : default_of(dev));
    pthread_mutex_unlock(&pool_lock);
    return CUDA_SUCCESS;
}

/* "The pool must be local to the specified device" */
FK_EXPORT CUresult cuDeviceSetMemPool(CUdevice dev, CUmemoryPool pool)
{
    FK_ENTER("cuDeviceSetMemPool");
    if (!fk_device_ok(dev))
        return CUDA_ERROR_INVALID_DEVICE;
    struct fk_pool *p = pool_of(pool);
    if (p == NULL || p->device != dev || p->imported)
        return CUDA_ERROR_INVALID_VALUE;
    pthread_mutex_lock(&pool_lock);
    current_pool[dev] = p;
    pthread_mutex_unlock(&pool_lock);
    return CUDA_SUCCESS;
}

FK_EXPORT CUresult cuMemPoolCreate(CUmemoryPool *pool, const CUmemPoolProps *props)
{
    FK_ENTER("cuMemPoolCreate");
    if (pool == NULL || props == NULL || props->allocType != CU_MEM_ALLOCATION_TYPE_PINNED)
        return CUDA_ERROR_INVALID_VALUE;
    int dev;
    switch (props->location.type) {
    case CU_MEM_LOCATION_TYPE_DEVICE:
        if (!fk_device_ok(props->location.id))
            return CUDA_ERROR_INVALID_DEVICE;
        dev = props->location.id;
        break;
    case CU_MEM_LOCATION_TYPE_HOST:
    case CU_MEM_LOCATION_TYPE_HOST_NUMA:
        dev = -1;
        break;
    default:
        return CUDA_ERROR_INVALID_VALUE;
    }
    if (props->handleTypes != CU_MEM_HANDLE_TYPE_NONE &&
        props->handleTypes != CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR)
        return CUDA_ERROR_NOT_SUPPORTED; /* the others are not modelled */
    struct fk_pool *p = calloc(1, sizeof *p);
    if (p == NULL)
        return CUDA_ERROR_OUT_OF_MEMORY;
    *p = (struct fk_pool){.magic = POOL_MAGIC, .device = dev, .reuse = {1, 1, 1}, .fd = -1,
                          .hw_decompress =
                              (props->usage & CU_MEM_POOL_CREATE_USAGE_HW_DECOMPRESS) != 0};
    if (props->handleTypes == CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR) {
        struct share_header h = {.magic = SHARE_MAGIC, .device = dev};
        p->shareable = true;
        p->file_end = FK_PAGE;
        p->fd = memfd_create("fakecuda-pool", MFD_CLOEXEC);
        if (p->fd < 0 || pwrite(p->fd, &h, sizeof h, 0) != (ssize_t)sizeof h) {
            if (p->fd >= 0)
                close(p->fd);
            free(p);
            return CUDA_ERROR_OUT_OF_MEMORY;
        }
    }
    add_created(p);
    *pool = (CUmemoryPool)p;
    return CUDA_SUCCESS;
}

FK_EXPORT CUresult cuMemPoolExportToShareableHandle(void *handle_out, CUmemoryPool pool,
                                                    CUmemAllocationHandleType type,
                                                    unsigned long long flags)
{
    FK_ENTER("cuMemPoolExportToShareableHandle");
    struct fk_pool *p = pool_of(pool);
    if (handle_out == NULL || p == NULL || !p->shareable || flags != 0 ||
        type != CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR)
        return CUDA_ERROR_INVALID_VALUE;
    int fd = dup(p->fd);
    if (fd < 0)
        return CUDA_ERROR_OUT_OF_MEMORY;
    *(int *)handle_out = fd;
    return CUDA_SUCCESS;
}

/* The descriptor is passed as the handle itself, cast to a pointer, as
 * for cuMemImportFromShareableHandle. */
FK_EXPORT CUresult cuMemPoolImportFromShareableHandle(CUmemoryPool *pool_out, void *handle,
                                                      CUmemAllocationHandleType type,
                                                      unsigned long long flags)
{
    FK_ENTER("cuMemPoolImportFromShareableHandle");
    int fd = (int)(intptr_t)handle;
    struct share_header h;
    if (pool_out == NULL || flags != 0 || type != CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR ||
        pread(fd, &h, sizeof h, 0) != (ssize_t)sizeof h || h.magic != SHARE_MAGIC ||
        !fk_device_ok(h.device))
        return CUDA_ERROR_INVALID_VALUE;
    struct fk_pool *p = calloc(1, sizeof *p);
    if (p == NULL)
        return CUDA_ERROR_OUT_OF_MEMORY;
    *p = (struct fk_pool){.magic = POOL_MAGIC, .device = h.device, .reuse = {1, 1, 1},
                          .imported = true, .fd = fcntl(fd, F_DUPFD_CLOEXEC, 0)};
    if (p->fd < 0) {
        free(p);
        return CUDA_ERROR_OUT_OF_MEMORY;
    }
    add_created(p);
    *pool_out = (CUmemoryPool)p;
    return CUDA_SUCCESS;
}

static uint64_t inode_of(int fd)
{
    struct stat st;
    return fstat(fd, &st) == 0 ? (uint64_t)st.st_ino : 0;
}

FK_EXPORT CUresult cuMemPoolExportPointer(CUmemPoolPtrExportData *out, CUdeviceptr ptr)
{
    FK_ENTER("cuMemPoolExportPointer");
    void *from;
    uint64_t off, size;
    if (out == NULL || !fk_mem_carved_at(ptr, &from, &off, &size) || from == NULL)
        return CUDA_ERROR_INVALID_VALUE;
    struct fk_pool *p = from;
    if (!p->shareable)
        return CUDA_ERROR_INVALID_VALUE; /* "from an already shared memory pool" */
    struct share_data d = {.magic = SHARE_MAGIC, .inode = inode_of(p->fd), .off = off,
                           .size = size};
    memset(out, 0, sizeof *out);
    memcpy(out->reserved, &d, sizeof d);
    return CUDA_SUCCESS;
}

FK_EXPORT CUresult cuMemPoolImportPointer(CUdeviceptr *ptr_out, CUmemoryPool pool,
                                          CUmemPoolPtrExportData *data)
{
    FK_ENTER("cuMemPoolImportPointer");
    struct fk_pool *p = pool_of(pool);
    struct share_data d;
    if (ptr_out == NULL || data == NULL || p == NULL || !p->imported)
        return CUDA_ERROR_INVALID_VALUE;
    memcpy(&d, data->reserved, sizeof d);
    if (d.magic != SHARE_MAGIC || d.inode != inode_of(p->fd) || d.size == 0)
        return CUDA_ERROR_INVALID_VALUE;
    /* the exporter's memory: carved from no pool here, charged nothing */
    return fk_mem_carve_shared(ptr_out, d.size, p->device, NULL, p->fd, d.off);
}

/* "If any pointers obtained from this pool haven't been freed or the pool
 * has free operations that haven't completed when cuMemPoolDestroy is
 * invoked, the function will return immediately and the resources
 * associated with the pool will be released automatically once there are
 * no more outstanding allocations." Destroying a device's current pool
 * makes its default pool current again. */
FK_EXPORT CUresult cuMemPoolDestroy(CUmemoryPool pool)
{
    FK_ENTER("cuMemPoolDestroy");
    struct fk_pool *p = pool_of(pool);
    if (p == NULL || (p->device >= 0 && p == &default_pool[p->device]))
        return CUDA_ERROR_INVALID_VALUE;
    pthread_mutex_lock(&pool_lock);
    p->destroyed = true;
    if (p->device >= 0 && current_pool[p->device] == p)
        current_pool[p->device] = NULL;
    shrink_locked(p, 0);
    pthread_mutex_unlock(&pool_lock);
    return CUDA_SUCCESS;
}

FK_EXPORT CUresult cuMemPoolTrimTo(CUmemoryPool pool, size_t minBytesToKeep)
{
    FK_ENTER("cuMemPoolTrimTo");
    struct fk_pool *p = pool_of(pool);
    if (p == NULL)
        return CUDA_ERROR_INVALID_VALUE;
    pthread_mutex_lock(&pool_lock);
    if (p->reserved > minBytesToKeep) /* else "a no-op" */
        shrink_locked(p, minBytesToKeep);
    pthread_mutex_unlock(&pool_lock);
    return CUDA_SUCCESS;
}

static cuuint64_t *u64_attr(struct fk_pool *p, CUmemPool_attribute attr)
{
    switch (attr) {
    case CU_MEMPOOL_ATTR_RELEASE_THRESHOLD: return &p->threshold;
    case CU_MEMPOOL_ATTR_RESERVED_MEM_CURRENT: return &p->reserved;
    case CU_MEMPOOL_ATTR_RESERVED_MEM_HIGH: return &p->reserved_high;
    case CU_MEMPOOL_ATTR_USED_MEM_CURRENT: return &p->used;
    case CU_MEMPOOL_ATTR_USED_MEM_HIGH: return &p->used_high;
    default: return NULL;
    }
}

static int *int_attr(struct fk_pool *p, CUmemPool_attribute attr)
{
    switch (attr) {
    case CU_MEMPOOL_ATTR_REUSE_FOLLOW_EVENT_DEPENDENCIES: return &p->reuse[0];
    case CU_MEMPOOL_ATTR_REUSE_ALLOW_OPPORTUNISTIC: return &p->reuse[1];
    case CU_MEMPOOL_ATTR_REUSE_ALLOW_INTERNAL_DEPENDENCIES: return &p->reuse[2];
    default: return NULL;
    }
}

FK_EXPORT CUresult cuMemPoolGetAttribute(CUmemoryPool pool, CUmemPool_attribute attr,
                                         void *value)
{
    FK_ENTER("cuMemPoolGetAttribute");
    struct fk_pool *p = pool_of(pool);
    if (p == NULL || value == NULL)
        return CUDA_ERROR_INVALID_VALUE;
    CUresult rc = CUDA_SUCCESS;
    pthread_mutex_lock(&pool_lock);
    cuuint64_t *u = u64_attr(p, attr);
    int *i = int_attr(p, attr);
    if (u)
        *(cuuint64_t *)value = *u;
    else if (i)
        *(int *)value = *i;
    else
        rc = CUDA_ERROR_INVALID_VALUE;
    pthread_mutex_unlock(&pool_lock);
    return rc;
}

/* The high watermarks can only be reset to zero; the current figures are
 * not settable. */
FK_EXPORT CUresult cuMemPoolSetAttribute(CUmemoryPool pool, CUmemPool_attribute attr,
                                         void *value)
{
    FK_ENTER("cuMemPoolSetAttribute");
    struct fk_pool *p = pool_of(pool);
    if (p == NULL || value == NULL)
        return CUDA_ERROR_INVALID_VALUE;
    CUresult rc = CUDA_SUCCESS;
    pthread_mutex_lock(&pool_lock);
    if (attr == CU_MEMPOOL_ATTR_RELEASE_THRESHOLD)
        p->threshold = *(cuuint64_t *)value;
    else if ((attr == CU_MEMPOOL_ATTR_RESERVED_MEM_HIGH ||
              attr == CU_MEMPOOL_ATTR_USED_MEM_HIGH) && *(cuuint64_t *)value == 0)
        *u64_attr(p, attr) = attr == CU_MEMPOOL_ATTR_USED_MEM_HIGH ? p->used : p->reserved;
    else if (int_attr(p, attr))
        *int_attr(p, attr) = *(int *)value != 0;
    else
        rc = CUDA_ERROR_INVALID_VALUE;
    pthread_mutex_unlock(&pool_lock);
    return rc;
}

/* ---- graph memory ------------------------------------------------------ */

bool fk_graph_mem_map(int dev, uint64_t bytes)
{
    bool ok = true;
    pthread_mutex_lock(&pool_lock);
    uint64_t used = graph_mem[dev].used + bytes;
    if (used > graph_mem[dev].reserved) {
        uint64_t grow = gran_round(used - graph_mem[dev].reserved);
        ok = fk_charge(dev, grow);
        if (ok)
            graph_mem[dev].reserved += grow;
    }
    if (ok) {
        graph_mem[dev].used = used;
        if (used > graph_mem[dev].used_high)
            graph_mem[dev].used_high = used;
        if (graph_mem[dev].reserved > graph_mem[dev].reserved_high)
            graph_mem[dev].reserved_high = graph_mem[dev].reserved;
    }
    pthread_mutex_unlock(&pool_lock);
    return ok;
}

void fk_graph_mem_unmap(int dev, uint64_t bytes)
{
    pthread_mutex_lock(&pool_lock);
    graph_mem[dev].used -= bytes;
    pthread_mutex_unlock(&pool_lock);
}

FK_EXPORT CUresult cuDeviceGraphMemTrim(CUdevice dev)
{
    FK_ENTER("cuDeviceGraphMemTrim");
    if (!fk_device_ok(dev))
        return CUDA_ERROR_INVALID_DEVICE;
    pthread_mutex_lock(&pool_lock);
    uint64_t keep = gran_round(graph_mem[dev].used);
    if (keep < graph_mem[dev].reserved) {
        fk_uncharge(dev, graph_mem[dev].reserved - keep);
        graph_mem[dev].reserved = keep;
    }
    pthread_mutex_unlock(&pool_lock);
    return CUDA_SUCCESS;
}

FK_EXPORT CUresult cuDeviceGetGraphMemAttribute(CUdevice dev, CUgraphMem_attribute attr,
                                                void *value)
{
    FK_ENTER("cuDeviceGetGraphMemAttribute");
    if (!fk_device_ok(dev))
        return CUDA_ERROR_INVALID_DEVICE;
    if (value == NULL)
        return CUDA_ERROR_INVALID_VALUE;
    CUresult rc = CUDA_SUCCESS;
    pthread_mutex_lock(&pool_lock);
    switch (attr) {
    case CU_GRAPH_MEM_ATTR_USED_MEM_CURRENT: *(cuuint64_t *)value = graph_mem[dev].used; break;
    case CU_GRAPH_MEM_ATTR_USED_MEM_HIGH: *(cuuint64_t *)value = graph_mem[dev].used_high; break;
    case CU_GRAPH_MEM_ATTR_RESERVED_MEM_CURRENT: *(cuuint64_t *)value = graph_mem[dev].reserved; break;
    case CU_GRAPH_MEM_ATTR_RESERVED_MEM_HIGH: *(cuuint64_t *)value = graph_mem[dev].reserved_high; break;
    default: rc = CUDA_ERROR_INVALID_VALUE;
    }
    pthread_mutex_unlock(&pool_lock);
    return rc;
}
