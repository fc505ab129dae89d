/*
 * state.c: the process-wide state and the clock, shared by every module.
 */
#include "vramshim_internal.h"

#include <time.h>

struct vs_state vs_state;

uint64_t vs_now_ns(void)
{
    struct timespec ts;
    /* vDSO: no system call, good to a few milliseconds, enough for idle time */
    clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}
