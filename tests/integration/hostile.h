/*
 * hostile.h: threads that do to a randomized run what real programs' other
 * threads do (issue 11), concurrently with its own random operations:
 *
 *   - a freer, which frees buffers the run's threads hand it (ownership
 *     passes with the buffer, so no thread frees what another still uses),
 *     checking every byte of each first;
 *   - a capturer, which captures a kernel over buffers of its own on a
 *     stream (begin, launch, end), instantiates the graph and launches it;
 *   - a caller-back, which queues host callbacks (cuLaunchHostFunc) that
 *     write pinned host memory, and copies of that memory to the device
 *     behind them on the same stream;
 *   - a requester, which asks the process's own control socket for
 *     `evict` and `free`, as the tool does.
 *
 * The run's threads pace them: each draw of theirs may post a ticket to
 * one of the hostile threads, which does one operation per ticket, so the
 * amount of hostile work follows the seed, not the machine's speed. Every
 * phase, all threads (the run's and the hostile ones) meet; while none of
 * them runs, the books are checked: vramshim_check (each device's and the
 * pins' charges against the live records), and the stats against what the
 * test itself holds (device bytes and the program's pinned bytes). Then
 * every thread checks every byte of the buffers it owns. Any difference
 * fails the test.
 */
#ifndef HOSTILE_H
#define HOSTILE_H

#include "check.h"

#include <stdbool.h>

struct hostile_setup {
    void *lib;
    CUcontext ctx;
    /* xor_kernel(ptr, bytes, key): every byte of [ptr, ptr+bytes) ^= key */
    CUfunction xor_kernel;
    int run_threads; /* the randomized run's own threads */
    uint64_t seed;
};

enum hostile_kind { HOSTILE_FREE, HOSTILE_CAPTURE, HOSTILE_CALLBACK, HOSTILE_REQUEST, HOSTILE_N };

/* Start the hostile threads (their own buffers are allocated first). */
void hostile_start(const struct hostile_setup *s);
/* One operation for a hostile thread of that kind (not HOSTILE_FREE). */
void hostile_ticket(enum hostile_kind kind);
/* Hand a live buffer, and the shadow of its bytes, to the freer; both are
 * its from now on. */
void hostile_give(CUdeviceptr p, size_t n, unsigned char *shadow);
/* The run's threads' device bytes the test holds, kept by the callers:
 * add on allocation, subtract on free (not on hostile_give). */
void hostile_account(int64_t device_bytes);
/* A phase of the run: called by each of the run's threads after `op`
 * operations; returns once the books were checked. The caller then checks
 * its own buffers' bytes. */
void hostile_phase(int op);
/* Whether an allocation that failed with CUDA_ERROR_OUT_OF_MEMORY may have
 * overlapped a stream capture (during which vramshim makes no room):
 * hostile_capture_mark() before the call, hostile_capture_overlapped(mark)
 * after it. */
uint64_t hostile_capture_mark(void);
bool hostile_capture_overlapped(uint64_t mark);
/* Every ticket served, the hostile threads' buffers freed, the threads
 * joined; prints what they did. */
void hostile_stop(void);
/* A whole randomized run: hostile_start, s->run_threads threads of
 * run_main (each given its index, 0 up, as its argument) until they all
 * return, hostile_stop. */
void hostile_run(const struct hostile_setup *s, void *(*run_main)(void *));

#endif
