/*
 * vramshim.h: the optional, public API of libvramshim.
 *
 * A program never needs this header: vramshim works on unmodified programs.
 * A program that wants to cooperate (name the owner of its allocations, move
 * a buffer on request, read the stats) looks these functions up with
 * dlsym(RTLD_DEFAULT, "vramshim_...") so it runs the same with or without the
 * library preloaded (Python: ctypes.CDLL(None).vramshim_owner_push).
 *
 * Every function returns 0 on success and a negative errno value on failure,
 * except vramshim_stats_json, which returns a length like snprintf.
 */
#ifndef VRAMSHIM_H
#define VRAMSHIM_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Longest owner name kept; longer names are truncated. */
#define VRAMSHIM_OWNER_NAME_MAX 47
/* Depth of the per-thread owner stack. */
#define VRAMSHIM_OWNER_STACK_MAX 16

/* Allocations this thread makes from now on belong to `name` (until pop).
 * -EINVAL for NULL or empty names, -EOVERFLOW when the stack is full. */
int vramshim_owner_push(const char *name);
/* Back to the previous owner. -ENOENT when nothing was pushed. */
int vramshim_owner_pop(void);

/* Move the buffer that contains `dptr` to host memory now / back to the
 * device now (making room by moving colder buffers). The address stays
 * valid. Offload hands the buffer over: the program promises not to reach
 * it (not even through an address stored in device memory) until it
 * prefetches it or names it in a launch, copy or memset, so with
 * VRAMSHIM_OFFLOAD=auto it may go to pageable memory once the pin budget is
 * spent. 0; -ENOENT: no allocation there; -ENOTSUP: an allocation vramshim
 * does not back (under a granule, stream-ordered, managed, pitched, or made
 * with offload off); -ENOMEM: the pin budget or the limit left part of it
 * where it was. (CUdeviceptr is an unsigned 64-bit integer in cuda.h.) */
int vramshim_offload(uint64_t dptr);
int vramshim_prefetch(uint64_t dptr);

/* Write the stats JSON (the same document as `vramshim stats --json PID`)
 * into buf, NUL-terminated and truncated to len. Returns the length of the
 * whole document, excluding the NUL: a return >= len means it was cut. */
int vramshim_stats_json(char *buf, size_t len);

/* Change one setting while the program runs, as `vramshim set` does:
 * key is vram_limit, reserve_vram, pin_limit, offload, idle_ms or
 * owner_limit, value is written as in the environment variable ("none"
 * clears vram_limit and owner_limit, "default" restores pin_limit).
 * A limit lowered below what is in use refuses new allocations until use
 * drops. Returns 0, or -EINVAL for an unknown key or a bad value, which
 * changes nothing and logs one line. */
int vramshim_set(const char *key, const char *value);

/* Check vramshim's own bookkeeping: the registry's counters against its
 * records, the budget's charges against the live allocations, every backed
 * buffer's chunks against their counts. For tests and bug reports; it
 * walks every record under vramshim's locks, so call it where no other
 * thread is allocating, freeing or moving. 0, or -EFAULT after logging the
 * first invariant that does not hold. */
int vramshim_check(void);

#ifdef __cplusplus
}
#endif
#endif
