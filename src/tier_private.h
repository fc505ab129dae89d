/*
 * tier_private.h: what tier.c (which buffers move, and when) and chunk.c
 * (how one chunk moves) share. Nothing else includes it.
 */
#ifndef VS_TIER_PRIVATE_H
#define VS_TIER_PRIVATE_H

#include "vramshim_internal.h"

#ifndef __unused
#define __unused __attribute__((unused))
#endif
#include <bsd/sys/tree.h>

/* Where a chunk's bytes are. */
enum chunk_where {
    CHUNK_DEVICE,  /* a device handle mapped at its address */
    CHUNK_PINNED,  /* host handles mapped at its address: still reachable */
    CHUNK_PAGEABLE /* ordinary memory; the address is unmapped */
};

struct chunk {
    CUmemGenericAllocationHandle dev_handle; /* while on the device */
    struct vs_host_block host;               /* while pinned */
    void *pageable;                          /* while pageable */
    uint64_t offset, size; /* mapped bytes, whole granules */
    uint64_t counted;      /* the program's bytes among them */
    uint8_t where;
};

struct buffer {
    RB_ENTRY(buffer) rb;
    uint64_t base, size, span, gran;
    int dev, owner;
    CUcontext ctx;
    _Atomic uint64_t last_touch_ns;
    _Atomic uint32_t n_off;   /* chunks not on the device */
    uint32_t n_pageable;      /* of them, pageable (under move_lock) */
    _Atomic bool handed_over; /* vramshim_offload: the program will not touch it */
    _Atomic bool shared;      /* another process may map it: never moves again */
    uint64_t share_token;     /* what an importer must name (under move_lock) */
    uint32_t n_chunks;
    struct chunk chunk[];
};

/* Every chunk that is pageable in a buffer not handed over: while it is not
 * zero, no work may be submitted (vramshim_internal.h, vs_gate_enter).
 * Raised only under the gate's write side. */
extern _Atomic uint32_t vs_pageable_reachable;
/* Every pageable chunk, handed over or not. */
extern _Atomic uint32_t vs_pageable_total;

/* chunk.c. All moves run with move_lock held and the buffer fenced. */
bool vs_chunk_fence_begin(struct buffer *b);
void vs_chunk_fence_end(struct buffer *b);
CUresult vs_chunk_create_device(int dev, uint64_t size, CUmemGenericAllocationHandle *h);
CUresult vs_chunk_set_access(uint64_t va, uint64_t size, int dev, bool host_too);
/* Device -> pinned. CUDA_ERROR_OUT_OF_MEMORY when the pin budget is spent. */
CUresult vs_chunk_device_to_pinned(struct buffer *b, struct chunk *c);
/* Pinned -> device. CUDA_ERROR_OUT_OF_MEMORY when over a device limit. */
CUresult vs_chunk_pinned_to_device(struct buffer *b, struct chunk *c);
/* Device or pinned -> pageable. */
CUresult vs_chunk_to_pageable(struct buffer *b, struct chunk *c);
/* Pageable -> device (under the limits) or, failing that and when
 * `pinned_too`, pinned: past the pin cap if need be, since the caller is
 * about to let work reach it. */
CUresult vs_chunk_from_pageable(struct buffer *b, struct chunk *c, bool pinned_too);
/* Give back whatever backs the chunk (the buffer is being freed). */
void vs_chunk_release(struct buffer *b, struct chunk *c);
void vs_chunk_atfork_child(void);

#endif
