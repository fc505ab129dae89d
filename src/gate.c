/*
 * gate.c: the move gate, and the reader-writer locks whose read side runs
 * on every launch.
 *
 * Two locks have a read side on the launch path: the gate (every launch,
 * copy and memset holds it for the length of its driver call; a move holds
 * the write side from its fence to its remap, so no work can reach a chunk
 * between the last copy of its bytes and its new mapping) and the tree of
 * backed buffers (read by touch tracking, written to add or remove one).
 * A pthread rwlock's read side is an atomic read-modify-write on the lock's
 * own line, shared by every launching thread; here a reader marks only its
 * thread's slot (core.h's vs_thread_slot) and then looks at the writer's
 * flag, and the rare writer raises its flag and waits until no slot is
 * marked. The mark is a sequentially consistent store and the look a
 * sequentially consistent load on each side (Dekker's pattern): either the
 * reader sees the flag and steps back, or the writer sees the mark and
 * waits. A slot counts both locks' readers in one word (offload.h's
 * VS_RW_MARK), so a kernel launch, which touches its buffers under the
 * tree's read side and then submits under the gate's, takes both with one
 * store and one look at the two flags (vs_rw_read_lock_both), and lets
 * each go with one store. Writers first, as before: a reader that sees the flag steps back
 * and queues behind the writer's mutex, so a steady stream of launches
 * cannot starve a move. A thread's nested read (its own depth, in TLS)
 * never steps back, so holding the read side twice cannot deadlock. A
 * thread that ends inside a driver call with its mark set has it cleared
 * as it exits (thread.c calls exit_marked), or every writer after would
 * wait for it forever.
 *
 * The pageable counts live here because the gate guards them: they are
 * raised only under the write side, so a submitter holding the read side
 * sees them stable.
 */
#include "offload_internal.h"

#include <pthread.h>
#include <sched.h>
#include <time.h>

_Alignas(64) struct vs_readers vs_readers[VS_THREAD_SLOTS];
struct vs_rw vs_rw[VS_RW_LOCKS] = {[VS_RW_GATE] = {.writing = PTHREAD_MUTEX_INITIALIZER},
                                   [VS_RW_TREE] = {.writing = PTHREAD_MUTEX_INITIALIZER}};
_Atomic uint32_t vs_pageable_reachable, vs_pageable_total;

/* The thread is gone and cannot be between its touch and its submission
 * any more: nothing it marked needs protecting. */
static void exit_marked(unsigned slot)
{
    vs_warn("a thread ended inside a driver call holding the move gate (slot %u); its hold is "
            "let go",
            slot);
    if (slot == VS_THREAD_SHARED) { /* counted among other threads' marks */
        for (int l = 0; l < VS_RW_LOCKS; l++)
            if (vs_me.reading[l] > 0)
                atomic_fetch_sub_explicit(&vs_readers[slot].marks, VS_RW_MARK(l),
                                          memory_order_release);
    } else {
        atomic_store_explicit(&vs_readers[slot].marks, 0, memory_order_release);
    }
    vs_me.reading[VS_RW_GATE] = vs_me.reading[VS_RW_TREE] = 0;
    vs_me.marks = 0;
}

void vs_gate_init(void)
{
    vs_thread_exit_marked = exit_marked;
    atomic_store(&vs_pageable_reachable, 0);
    atomic_store(&vs_pageable_total, 0);
}

void vs_rw_read_wait(int lock)
{
    /* the writer holds its mutex until it is done */
    pthread_mutex_lock(&vs_rw[lock].writing);
    pthread_mutex_unlock(&vs_rw[lock].writing);
}

void vs_rw_write_lock(int lock)
{
    vs_nocancel_begin(); /* the sleep below is a cancellation point */
    pthread_mutex_lock(&vs_rw[lock].writing);
    atomic_store(&vs_rw[lock].writer, 1);
    uint32_t used = atomic_load(&vs_thread_slots_used);
    for (uint32_t i = 0; i < used; i++)
        for (unsigned spins = 0; (uint32_t)(atomic_load(&vs_readers[i].marks) >> (32 * lock)) != 0;
             spins++) {
            /* readers hold it for one driver call: usually gone at once */
            if (spins < 64)
                sched_yield();
            else
                nanosleep(&(struct timespec){0, 20000}, NULL);
        }
}

void vs_rw_write_unlock(int lock)
{
    atomic_store_explicit(&vs_rw[lock].writer, 0, memory_order_release);
    pthread_mutex_unlock(&vs_rw[lock].writing);
    vs_nocancel_end();
}

void vs_gate_write_lock(void) { vs_rw_write_lock(VS_RW_GATE); }
void vs_gate_write_unlock(void) { vs_rw_write_unlock(VS_RW_GATE); }

/* Only the forking thread lives on, and it holds neither lock's read side. */
void vs_rw_atfork_child(void)
{
    for (int l = 0; l < VS_RW_LOCKS; l++) {
        pthread_mutex_init(&vs_rw[l].writing, NULL);
        atomic_store(&vs_rw[l].writer, 0);
        vs_me.reading[l] = 0;
    }
    vs_me.marks = 0;
    for (unsigned i = 0; i < atomic_load(&vs_thread_slots_used); i++)
        atomic_store(&vs_readers[i].marks, 0);
}
