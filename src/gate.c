/*
 * gate.c: the move gate.
 *
 * A reader-writer lock that prefers writers: every launch, copy and memset
 * holds the read side for the length of its driver call (tier.c's
 * vs_gate_enter_slow, behind offload.h's one-load fast path), and a move
 * holds the write side from its fence to its remap (chunk.c), so no work
 * can reach a chunk between the last copy of its bytes and its new mapping.
 * Writers first, so that a steady stream of launches cannot starve a move.
 *
 * The pageable counts live here because the gate guards them: they are
 * raised only under the write side, so a submitter holding the read side
 * sees them stable.
 */
#include "offload_internal.h"

#include <pthread.h>

static pthread_rwlock_t gate;
_Atomic uint32_t vs_pageable_reachable, vs_pageable_total;

void vs_gate_init(void)
{
    pthread_rwlockattr_t attr;
    pthread_rwlockattr_init(&attr);
    pthread_rwlockattr_setkind_np(&attr, PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
    pthread_rwlock_init(&gate, &attr);
    pthread_rwlockattr_destroy(&attr);
    atomic_store(&vs_pageable_reachable, 0);
    atomic_store(&vs_pageable_total, 0);
}

void vs_gate_read_lock(void) { pthread_rwlock_rdlock(&gate); }
void vs_gate_read_unlock(void) { pthread_rwlock_unlock(&gate); }
void vs_gate_write_lock(void) { pthread_rwlock_wrlock(&gate); }
void vs_gate_write_unlock(void) { pthread_rwlock_unlock(&gate); }
