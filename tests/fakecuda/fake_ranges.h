/*
 * fake_ranges.h: red-black trees (bsd/sys/tree.h) of address ranges that
 * never overlap, ordered by their uint64_t `base`, as the test driver keeps
 * its allocations (fake_mem.c) and VMM mappings (fake_vmm.c). Since ranges
 * are disjoint, the one with the greatest base at or below an address is
 * the only one that can hold it: a look-up costs log n.
 */
#ifndef FAKE_RANGES_H
#define FAKE_RANGES_H

#ifndef __unused
#define __unused __attribute__((unused)) /* what bsd/sys/tree.h's generated functions use */
#endif
#include <bsd/sys/tree.h>
#include <stdint.h>

/* The tree type `struct name` of `struct type` nodes linked by their
 * RB_ENTRY `field`, its static RB_* functions, and
 * name_at_or_below(tree, addr): the node with the greatest base at or below
 * addr, or NULL. */
#define FK_RANGE_TREE(name, type, field)                                          \
    static int name##_cmp(const struct type *a, const struct type *b)             \
    {                                                                             \
        return a->base < b->base ? -1 : a->base > b->base;                        \
    }                                                                             \
    RB_HEAD(name, type);                                                          \
    RB_GENERATE_STATIC(name, type, field, name##_cmp)                             \
    static struct type *name##_at_or_below(struct name *t, uint64_t addr)         \
    {                                                                             \
        struct type *node = RB_ROOT(t), *best = NULL;                             \
        while (node) {                                                            \
            if (node->base <= addr) {                                             \
                best = node;                                                      \
                node = RB_RIGHT(node, field);                                     \
            } else {                                                              \
                node = RB_LEFT(node, field);                                      \
            }                                                                     \
        }                                                                         \
        return best;                                                              \
    }

#endif
