/*
 * thread.c: one slot per live thread, so that what every launch writes
 * (its count, the readers' marks of the offload layer) lands on a cache
 * line no other thread writes.
 *
 * A thread takes a free slot the first time it needs one and gives it back
 * when it exits (a key destructor); the next thread to take it carries on
 * from what it holds, so counts summed over the slots never go back. A
 * thread that exits inside a driver call (cancelled, or by pthread_exit in
 * a callback) still marks a read side there: the offload layer clears it
 * first (vs_thread_exit_marked), or a move would wait for it forever.
 * Cancellation is held off inside vramshim's own locked work
 * (vs_nocancel_begin), so a thread cannot be ended there. Past
 * VS_THREAD_SLOTS - 1 live threads, the rest share the last slot and
 * update it with atomic read-modify-writes: correct, only not free of
 * sharing. Slots live in .bss and are never touched by a process that does
 * not launch, so they cost nothing at start-up.
 *
 * Also the signal mask of vramshim's own threads.
 */
#include "core.h"

#include <pthread.h>
#include <signal.h>

void vs_thread_block_signals(void)
{
    sigset_t all;
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, NULL);
}

__thread struct vs_thread_local vs_me VS_TLS_FAST;
_Alignas(64) struct vs_thread_counts vs_thread_counts[VS_THREAD_SLOTS];
_Atomic uint32_t vs_thread_slots_used; /* one past the highest slot ever taken */
static _Atomic bool taken[VS_THREAD_SLOTS];
static pthread_key_t exit_key;
static pthread_once_t key_once = PTHREAD_ONCE_INIT;

void (*vs_thread_exit_marked)(unsigned slot);

static void give_back(void *slot_plus_one)
{
    unsigned slot = (unsigned)(uintptr_t)slot_plus_one - 1;
    /* a shared slot's threads count their marks there but keep no copy:
     * their read depths say what they hold */
    bool marked = slot < VS_THREAD_SHARED ? vs_me.marks != 0
                                          : (vs_me.reading[0] | vs_me.reading[1]) != 0;
    if (VS_UNLIKELY(marked) && vs_thread_exit_marked != NULL)
        vs_thread_exit_marked(slot);
    if (slot < VS_THREAD_SHARED)
        atomic_store_explicit(&taken[slot], false, memory_order_release);
    vs_me.slot = 0;
}

static void make_key(void)
{
    if (pthread_key_create(&exit_key, give_back) != 0)
        exit_key = (pthread_key_t)-1;
}

unsigned vs_thread_slot_slow(void)
{
    pthread_once(&key_once, make_key);
    unsigned slot = VS_THREAD_SHARED;
    /* without a key the slot could not be given back: share */
    for (unsigned i = 0; exit_key != (pthread_key_t)-1 && i < VS_THREAD_SHARED; i++) {
        bool was = false;
        if (!atomic_load_explicit(&taken[i], memory_order_relaxed) &&
            atomic_compare_exchange_strong_explicit(&taken[i], &was, true, memory_order_acquire,
                                                    memory_order_relaxed)) {
            if (pthread_setspecific(exit_key, (void *)(uintptr_t)(i + 1)) != 0) {
                atomic_store_explicit(&taken[i], false, memory_order_release);
                break;
            }
            slot = i;
            break;
        }
    }
    /* a thread on the shared slot gets the key too, only so that its exit
     * is seen (give_back) */
    if (slot == VS_THREAD_SHARED && exit_key != (pthread_key_t)-1)
        (void)pthread_setspecific(exit_key, (void *)(uintptr_t)(VS_THREAD_SHARED + 1));
    uint32_t used = atomic_load(&vs_thread_slots_used);
    while (used < slot + 1 && !atomic_compare_exchange_weak(&vs_thread_slots_used, &used, slot + 1))
        ;
    vs_me.slot = slot + 1;
    return slot;
}

void vs_nocancel_begin(void)
{
    if (vs_me.nocancel++ == 0)
        pthread_setcancelstate(PTHREAD_CANCEL_DISABLE, &vs_me.cancel_state);
}

void vs_nocancel_end(void)
{
    int was;
    if (vs_me.nocancel > 0 && --vs_me.nocancel == 0)
        pthread_setcancelstate(vs_me.cancel_state, &was);
}

uint64_t vs_thread_launches(void)
{
    uint64_t sum = 0;
    uint32_t used = atomic_load(&vs_thread_slots_used);
    for (uint32_t i = 0; i < used; i++)
        sum += atomic_load_explicit(&vs_thread_counts[i].launches, memory_order_relaxed);
    return sum;
}

/* Only the forking thread lives on in the child: every other slot is free
 * again (their counts stay, still summed). */
void vs_thread_atfork_child(void)
{
    unsigned mine = vs_me.slot ? vs_me.slot - 1 : VS_THREAD_SHARED;
    for (unsigned i = 0; i < VS_THREAD_SHARED; i++)
        if (i != mine)
            atomic_store(&taken[i], false);
}
