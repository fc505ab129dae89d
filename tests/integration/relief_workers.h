/*
 * relief_workers.h: the worker processes prog_relief and prog_relief_more
 * drive on one shared test device (relief_workers.c).
 *
 * A worker is the test program again, run as `PROG worker` under vramshim.
 * Commands, one a line, each answered with one line:
 *   a MiB [plain|managed|pitch|async|vmm]  allocate by that kind and fill
 *                       (ok, or oom)
 *   t   a kernel naming each buffer; c  check every byte of every buffer;
 *   f   free the last buffer; b  a kernel that never ends;
 *   s KEY VALUE  vramshim_set; q PATH  a stats figure; u  the device's use.
 * The environment RELIEF_TEST_AS=uid:gid:group makes a worker run as that
 * user (root only).
 */
#ifndef RELIEF_WORKERS_H
#define RELIEF_WORKERS_H

#include "check.h"

#include <stdint.h>
#include <stdio.h>

#define M (1ULL << 20)

struct worker {
    pid_t pid;
    FILE *to, *from;
    char name[8];
};

/* the scenario's socket directory and shared device, and the device's
 * size for the next scenario (FAKECUDA_MEM) */
extern char sock_dir[64], shm_name[64];
extern const char *dev_mem;

/* A scenario of a relief program, by the name that runs it alone. */
struct relief_scenario {
    const char *name;
    void (*run)(void);
};
/* The relief programs' main: `PROG worker` is a worker, `PROG NAME` runs
 * that scenario alone, `PROG` runs all[0..n) in turn; then "TITLE: ok". */
int relief_main(int argc, char **argv, const struct relief_scenario *all, size_t n,
                const char *title);
/* A fresh device and socket directory for the next scenario; removed by
 * scenario_end. */
void scenario(void);
void scenario_end(void);
/* Start a worker with env (NAME=VALUE, NULL-terminated) on top of the
 * scenario's settings; it has answered "ready" on return. */
void start(struct worker *w, const char *name, const char *const *env);
/* A command, and its answer (ask), or "ok" required (ask_ok). */
char *ask(struct worker *w, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void ask_ok(struct worker *w, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
char *answer(struct worker *w);
uint64_t stat_of(struct worker *w, const char *path);
uint64_t offloaded(struct worker *w);
/* End a worker: it must exit 0. */
void stop(struct worker *w);
uint64_t now_ms(void);
/* Wait until the coarse clock the touches are stamped with moves on: every
 * touch so far is then in the past (what idle_ms=0 asks of an idle buffer). */
void wait_tick(void);

#endif
