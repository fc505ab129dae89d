/*
 * page_index.c: which object lies in each 2 MiB page of the address space,
 * as a hash table a launch can consult in a few instructions.
 *
 * tier.c keeps its backed buffers in a tree by address; finding the buffer
 * a kernel parameter points into costs a walk of log n heap nodes, each a
 * likely cache miss once there are thousands. Backed buffers are VMM
 * ranges reserved at the device's granularity (2 MiB on every GPU so far,
 * gpu-facts.md), so one 2 MiB page belongs to one buffer, and a table from
 * page number to buffer answers in one probe. The table is open-addressed
 * with linear probing and kept at most half full, so a probe sequence is
 * short and a miss (a scalar that happens to lie in range) ends at the
 * first empty slot; a deletion shifts the entries after it back instead of
 * leaving a tombstone, so the table never fills with dead slots.
 *
 * The table knows nothing of buffers or locks: the caller says what a
 * page maps to and holds whatever lock guards the table. It never
 * allocates on its own: the caller allocates a bigger table (outside its
 * lock if it likes) and hands it over with vs_page_index_adopt.
 */
#include "core.h"

#include <stdlib.h>
#include <string.h>

#define MIN_SLOTS 64

uint64_t vs_page_index_slots_for(uint64_t n)
{
    if (n <= MIN_SLOTS / 2)
        return MIN_SLOTS;
    return 1ULL << (64 - __builtin_clzll(2 * n - 1)); /* the power of two >= 2n */
}

bool vs_page_index_fits(const struct vs_page_index *ix, uint64_t more)
{
    return ix->slot != NULL && vs_page_index_slots_for(ix->used + more) <= ix->mask + 1;
}

static void insert_new(struct vs_page_index *ix, uint64_t key, void *val)
{
    uint64_t i = vs_page_home(ix, key);
    while (ix->slot[i].key != 0)
        i = (i + 1) & ix->mask;
    ix->slot[i].key = key;
    ix->slot[i].val = val;
    ix->used++;
}

void vs_page_index_adopt(struct vs_page_index *ix, struct vs_page_slot *fresh, uint64_t slots)
{
    struct vs_page_slot *old = ix->slot;
    uint64_t old_slots = old ? ix->mask + 1 : 0;
    ix->slot = fresh;
    ix->mask = slots - 1;
    ix->shift = (uint32_t)__builtin_clzll(slots) + 1; /* slots is a power of two */
    ix->used = 0;
    for (uint64_t i = 0; i < old_slots; i++)
        if (old[i].key != 0)
            insert_new(ix, old[i].key, old[i].val);
    free(old);
}

bool vs_page_index_put(struct vs_page_index *ix, uint64_t page, void *val)
{
    if (VS_UNLIKELY(page == 0))
        return false; /* the key that means empty: no device memory lies there */
    if (vs_page_index_get(ix, page) != NULL)
        return true; /* shared with a neighbour: the first one keeps it */
    if (!vs_page_index_fits(ix, 1))
        return false;
    insert_new(ix, page, val);
    return true;
}

void vs_page_index_drop(struct vs_page_index *ix, uint64_t page, const void *val)
{
    if (ix->slot == NULL)
        return;
    uint64_t key = page, i = vs_page_home(ix, key);
    for (; ix->slot[i].key != key; i = (i + 1) & ix->mask)
        if (ix->slot[i].key == 0)
            return;
    if (ix->slot[i].val != val)
        return;
    /* Shift back every later entry of the run that may live at i: one
     * whose home is not cyclically within (i, j]. */
    for (uint64_t j = i;;) {
        j = (j + 1) & ix->mask;
        if (ix->slot[j].key == 0)
            break;
        uint64_t home = vs_page_home(ix, ix->slot[j].key);
        bool stays = i <= j ? (i < home && home <= j) : (i < home || home <= j);
        if (!stays) {
            ix->slot[i] = ix->slot[j];
            i = j;
        }
    }
    ix->slot[i].key = 0;
    ix->slot[i].val = NULL;
    ix->used--;
}

void vs_page_index_clear(struct vs_page_index *ix)
{
    if (ix->slot)
        memset(ix->slot, 0, (ix->mask + 1) * sizeof ix->slot[0]);
    ix->used = 0;
}
