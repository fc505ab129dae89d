/*
 * fixture.h: what the unit tests need from the layers above the core,
 * which they do not link: process state set up for the core alone, and a
 * log captured in memory.
 */
#ifndef FIXTURE_H
#define FIXTURE_H

#include "core.h"

/* Defaults, owner table ("unit" as the default owner), empty registry,
 * limits from vs_state.cfg, an empty budget and no driver to ask. */
void fixture_reset(void);
/* Start capturing log lines; fixture_log() returns everything since. */
void fixture_log_capture(void);
const char *fixture_log(void);
int fixture_log_lines(void);

/* The core's clock (vs_now_ns, inline in core.h) driven by the test: a test
 * linked with -Wl,--wrap=clock_gettime says FIXTURE_CLOCK(its variable),
 * and every CLOCK_MONOTONIC_COARSE reading gives that variable's value in
 * nanoseconds; other clocks (cmocka's, the C library's) stay real. */
#define FIXTURE_CLOCK(ns_var)                                                  \
    int __real_clock_gettime(clockid_t id, struct timespec *ts);               \
    int __wrap_clock_gettime(clockid_t id, struct timespec *ts);               \
    int __wrap_clock_gettime(clockid_t id, struct timespec *ts)                \
    {                                                                          \
        if (id != CLOCK_MONOTONIC_COARSE)                                      \
            return __real_clock_gettime(id, ts);                               \
        ts->tv_sec = (time_t)((ns_var) / 1000000000ULL);                       \
        ts->tv_nsec = (long)((ns_var) % 1000000000ULL);                        \
        return 0;                                                              \
    }

#endif
