/*
 * metrics.h: the Prometheus document of every process under vramshim,
 * shared by `vramshim metrics` (printed once) and `vramshim exporter`
 * (served over HTTP).
 */
#ifndef VRAMSHIM_METRICS_H
#define VRAMSHIM_METRICS_H

#include <jansson.h>
#include <stdint.h>
#include <stdio.h>

/* The stats document of every process with a socket in the socket
 * directory or in one of its subdirectories (one per pod or container on a
 * node: see docs/DEPLOY.md), each marked with the subdirectory it came from.
 * A process that is gone or does not answer is left out. When deadline_ms
 * (CLOCK_MONOTONIC) is non-zero, no process is asked after it. */
json_t *metrics_collect(uint64_t deadline_ms);
/* Every family, in the text exposition format 0.0.4. */
void metrics_write(FILE *out, json_t *all);
/* CLOCK_MONOTONIC in milliseconds. */
uint64_t metrics_now_ms(void);

#endif
