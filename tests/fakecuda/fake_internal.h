/*
 * fake_internal.h: state shared by the files of the test driver.
 */
#ifndef FAKE_INTERNAL_H
#define FAKE_INTERNAL_H

#define _GNU_SOURCE 1
#include "fakecuda.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define FK_EXPORT __attribute__((visibility("default")))
#define FK_MAX_DEVICES 8
#define FK_GRANULARITY (2ULL << 20)
#define FK_PAGE 4096ULL
/* memory nodes a graph (or a stream capture) may hold in this driver */
#define FK_GRAPH_MEM_NODES 16
/* Multiprocessors and resident threads on each, as cuDeviceGetAttribute
 * reports them: a thread stack is reserved for every resident thread. */
#define FK_SM_COUNT 4
#define FK_THREADS_PER_SM 2048

struct fk_shared { /* in FAKECUDA_SHM when set, else private */
    _Atomic uint64_t used[FK_MAX_DEVICES];
};

struct fk_stream;
struct fk_ctx {
    int device;
    bool primary;
    int refcount;
    /* the context's own legacy (NULL) stream, made on first use */
    struct fk_stream *legacy;
    /* devices whose cuMemAlloc memory this context may reach
     * (cuCtxEnablePeerAccess); VMM memory ignores it (fake_vmm.c) */
    _Atomic uint32_t peer_devs;
    /* a kernel touched memory it could not reach: every later
     * synchronise answers this (CUDA_ERROR_ILLEGAL_ADDRESS is sticky) */
    _Atomic int sticky;
    /* cuCtxSetLimit's figures (stack, printf FIFO, malloc heap) and the
     * device memory the context holds for itself and for them
     * (fake_ctxmem.c), given back when it is destroyed */
    size_t limits[3];
    uint64_t held;
};

struct fk_global {
    pthread_mutex_t lock;
    bool initialized;
    int ndevices;
    uint64_t mem_size;
    /* FAKECUDA_COPY_MBPS: copies take as long as a bus of that many MiB/s
     * would (0: as fast as memmove). */
    uint64_t copy_mibps;
    struct fk_shared *shared;
    struct fk_ctx primary[FK_MAX_DEVICES];
    /* device memory held by this process alone (fakecuda_held) */
    _Atomic uint64_t mine[FK_MAX_DEVICES];
    /* FAKECUDA_CTX_MEM: what a context reserves for itself (0 by default,
     * so that tests that do not ask see only their allocations) */
    uint64_t ctx_mem;
};
extern struct fk_global fk;

void fk_setup(void); /* once, from every entry point that needs it */

/* Error injection: returns the error to fail with, or CUDA_SUCCESS. */
CUresult fk_injected(const char *name);

/* Every entry point that needs an initialised driver starts with this. */
#define FK_ENTER(name)                               \
    do {                                             \
        fk_setup();                                  \
        CUresult inj_ = fk_injected(name);           \
        if (inj_ != CUDA_SUCCESS)                    \
            return inj_;                             \
        if (!fk.initialized)                         \
            return CUDA_ERROR_NOT_INITIALIZED;       \
    } while (0)

/* Is dev an ordinal of this driver's devices? */
static inline bool fk_device_ok(int dev)
{
    return dev >= 0 && dev < fk.ndevices;
}
/* The argument checks a device query starts with, in the driver's order:
 * its out pointer (NULL: CUDA_ERROR_INVALID_VALUE), then the ordinal. */
#define FK_DEVICE_ARGS(out, dev)                     \
    do {                                             \
        if ((out) == NULL)                           \
            return CUDA_ERROR_INVALID_VALUE;         \
        if (!fk_device_ok(dev))                      \
            return CUDA_ERROR_INVALID_DEVICE;        \
    } while (0)

/* The calling thread's current context, or NULL. */
struct fk_ctx *fk_current(void);
#define FK_NEED_CTX(ctxvar)                          \
    struct fk_ctx *ctxvar = fk_current();            \
    if (ctxvar == NULL)                              \
        return CUDA_ERROR_INVALID_CONTEXT

/* Device memory accounting: charge fails with false when it does not fit. */
bool fk_charge(int dev, uint64_t bytes);
void fk_uncharge(int dev, uint64_t bytes);

/* Context memory (fake_ctxmem.c): a new context's own reservation, charged
 * on its device (false: it does not fit), and everything it holds given
 * back when it goes. */
bool fk_ctx_mem_take(struct fk_ctx *c);
void fk_ctx_mem_give_back(struct fk_ctx *c);
/* Module globals (fake_ctxmem.c): what an image declares, charged to the
 * current context's device at load. */
CUresult fk_module_mem_take(const void *image, int *dev, uint64_t *bytes);
/* A context was destroyed: its modules' globals go (fake_stream.c). */
void fk_modules_ctx_gone(struct fk_ctx *c);

/* Device allocations made by cuMemAlloc and friends (fake_mem.c). */
bool fk_mem_lookup(uint64_t addr, uint64_t *base, uint64_t *size, int *dev,
                   bool *managed);
/* Memory pools and graph memory (fake_pool.c): an allocation carved out of
 * `from` (a pool, or a graph's memory: NULL), charged nothing itself; a
 * pool's reserve is what the device is charged. fk_pool_returned: the
 * stream reached the free of `bytes` carved from `from`. */
CUresult fk_mem_carve(CUdeviceptr *dptr, uint64_t size, int dev, void *from);
bool fk_mem_is_carved(uint64_t base, void **from);
/* The same, carved from pages of a shareable pool's file (fd at off) that
 * another process may map too; fd < 0: private pages. An allocation
 * carved so: its pool, its offset in that file, its size. */
CUresult fk_mem_carve_shared(CUdeviceptr *dptr, uint64_t size, int dev, void *from, int fd,
                             uint64_t off);
bool fk_mem_carved_at(uint64_t base, void **from, uint64_t *off, uint64_t *size);
void fk_pool_returned(void *from, uint64_t bytes);
CUresult fk_mem_free_async(CUdeviceptr dptr, struct fk_stream *st);
/* A synchronise (stream, event, context) returned: pools above their
 * release threshold give memory back. */
void fk_pool_sync_release(void);
/* Graph memory of a device (fake_pool.c): a graph exec's allocations are
 * mapped at its first launch or upload (false: the device is full) and
 * unmapped when it is destroyed. */
bool fk_graph_mem_map(int dev, uint64_t bytes);
void fk_graph_mem_unmap(int dev, uint64_t bytes);
/* An allocation node of graph g (cuGraphAddMemAllocNode, cuGraphAddNode,
 * or a stream capture's cuMemAllocAsync): false when the graph is full. */
bool fk_graph_add_alloc(CUgraph g, int dev, CUdeviceptr dptr, size_t bytesize,
                        CUgraphNode *node);
/* Bytes of one channel of an array format (fake_array.c); 0 for the
 * formats whose element is not whole channels (packed, compressed). */
unsigned fk_format_bytes(CUarray_format f);
/* A device allocation whose address fits the old ABI's 32 bits (fake_v1.c). */
CUresult fk_device_alloc_low(CUdeviceptr *dptr, size_t bytesize);
/* Is addr inside page-locked host memory (cuMemHostAlloc, cuMemHostRegister)? */
bool fk_host_pinned(uint64_t addr);
/* Is all of [addr, addr+n) device memory: one cuMemAlloc allocation, or
 * VMM mappings end to end? */
bool fk_device_range(uint64_t addr, uint64_t n);
/* Which way a copy between dst and src crosses the bus, by what each is. */
enum fk_host_side { FK_NO_HOST_SIDE, FK_PINNED_TO_DEVICE, FK_PAGEABLE_TO_DEVICE,
                    FK_DEVICE_TO_PINNED, FK_DEVICE_TO_PAGEABLE };
enum fk_host_side fk_host_side(uint64_t dst, uint64_t src);
/* VMM mappings (fake_vmm.c). */
/* Memory made for hardware decompression (fake_mem.c, fake_vmm.c,
 * fake_pool.c): every byte of [addr, +n); the mapping holding addr (and
 * where it ends); memory carved from a pool. */
bool fk_hw_decompress_range(uint64_t addr, uint64_t n);
bool fk_vmm_hw_decompress(uint64_t addr, uint64_t *end);
bool fk_pool_hw_decompress(void *from);
bool fk_vmm_lookup(uint64_t addr, uint64_t *base, uint64_t *size, int *dev,
                   bool *on_host);
/* The pages of a VMM physical handle (fake_phys.c): anonymous memory
 * moved to each mapping (fd < 0), or a memfd any number of mappings share.
 * Calls are made under fake_vmm.c's lock. */
struct fk_phys {
    int fd;     /* memfd, or -1 while the pages are anonymous */
    uint64_t size;
    char *park; /* anonymous and unmapped: where the pages wait */
    uint64_t at; /* anonymous and mapped: the one address they are at */
};
int fk_phys_init(struct fk_phys *p, uint64_t size); /* -1: no memory */
/* Memory of this size is faulted in 2 MiB at a time where it can be. */
void fk_advise_huge(void *p, uint64_t len);
void fk_phys_init_fd(struct fk_phys *p, int fd, uint64_t size);
/* Can a mapping of [offset, +size) of it take the anonymous pages? */
bool fk_phys_movable(const struct fk_phys *p, uint64_t size, uint64_t offset);
/* Move the anonymous pages to va (still inaccessible); -1: failed. */
int fk_phys_map(struct fk_phys *p, uint64_t va);
bool fk_phys_mapped_at(const struct fk_phys *p, uint64_t va);
/* Its mapping goes: park the pages (keep), or let them go with it. */
void fk_phys_unmap(struct fk_phys *p, bool keep);
/* Its memfd, made now with the same bytes if it had none (its one mapping,
 * if any, replaced by the memfd's with the access it had); -1: failed. */
int fk_phys_fd(struct fk_phys *p, bool accessible);
void fk_phys_drop(struct fk_phys *p);
/* CU_POINTER_ATTRIBUTE_SYNC_MEMOPS of the VMM mapping holding addr: set
 * to `set` unless it is -1; its value in *value. false: no mapping there. */
bool fk_vmm_sync_memops(uint64_t addr, int set, bool *value);
/* Can work of device dev reach a VMM mapping holding addr? -1: addr is not
 * VMM memory; 0: no (cuMemSetAccess never granted dev); 1: yes. */
int fk_vmm_reachable(uint64_t addr, int dev);
/* Can work of context c reach addr (VMM access, peer access for another
 * device's cuMemAlloc memory)? Host and unknown addresses: yes. */
bool fk_reachable(struct fk_ctx *c, uint64_t addr);

/* Streams (fake_stream.c). */
struct fk_op;
typedef void (*fk_op_fn)(struct fk_op *op);
struct fk_op {
    fk_op_fn run;
    struct fk_op *next;
    uint64_t a, b, c, d; /* arguments, by op */
    void *ptr;
    void *blob;          /* freed after run */
    size_t blob_size;    /* so that a captured op can be cloned for replay */
    struct fk_stream *st; /* the stream it runs on (set when queued) */
};
struct fk_stream {
    pthread_mutex_t mu;
    pthread_cond_t wake, done;
    struct fk_op *head, *tail;
    uint64_t submitted, completed;
    pthread_t thread;
    bool stop;
    struct fk_ctx *ctx;
    struct fk_stream *next_all;
    /* stream capture (fake_capture.c), under mu */
    int capture; /* CU_STREAM_CAPTURE_STATUS_NONE, _ACTIVE or _INVALIDATED */
    uint64_t capture_id;
    struct fk_op *cap_head, *cap_tail;
    /* what cuMemAllocAsync took in the capture: the graph's allocation nodes */
    struct {
        CUdeviceptr dptr;
        size_t bytes;
        int dev;
    } cap_alloc[FK_GRAPH_MEM_NODES];
    int n_cap_alloc;
};
struct fk_stream *fk_stream_of(CUstream s);
/* Queue op on the stream; its thread runs it later. */
void fk_enqueue(struct fk_stream *st, struct fk_op *op);
struct fk_op *fk_op_new(fk_op_fn run);
/* Queue op on stream s (NULL: the default stream); wait for it when asked. */
CUresult fk_queue_op(CUstream s, struct fk_op *op, bool wait);
void fk_stream_wait(struct fk_stream *st);
void fk_sync_all(void);
/* The context a stream belongs to (NULL: made with none current). */
struct fk_ctx *fk_stream_ctx(struct fk_stream *st);
/* cuCtxSynchronize: wait for the streams of c only. */
CUresult fk_sync_ctx(struct fk_ctx *c);
/* Stream capture (fake_capture.c). */
bool fk_capture_take(struct fk_stream *st, struct fk_op *op); /* true: recorded, not run */
bool fk_capturing(struct fk_stream *st);
void fk_capture_invalidate(struct fk_stream *st);
struct fk_op *fk_op_clone(const struct fk_op *op);
CUgraph fk_graph_of_ops(struct fk_op *ops);

#endif
