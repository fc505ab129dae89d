/*
 * prog_freerace: the program's frees race every kind of move, and the books
 * balance afterwards to the byte (issue 11, case 5).
 *
 * Under a 64 MiB VRAM limit and a 48 MiB pin limit (offload pinned), four
 * threads run at once for a number of rounds:
 *   - an allocator that keeps allocating 8 MiB buffers (make room moves
 *     the least recently touched ones to pinned memory) and fills them;
 *   - a freer that frees whichever buffers it finds, checking the bytes of
 *     one in four first (they must be the allocator's, wherever they were);
 *   - the control socket asked for `free` and `evict` over and over (moves
 *     of every buffer, made on the server's thread);
 *   - cuMemHostAlloc of 16 MiB and its free, which the pin budget fits only
 *     when vramshim's offloaded chunks yield (they move back to the device).
 * After each of 4 rounds, with every buffer freed: vramshim_check passes, and the
 * stats say nothing is allocated, resident, offloaded or pinned. A move that
 * picked a buffer whose record a free had already taken out used to leave
 * its charge behind.
 */
#include "check.h"
#include "scenario.h"

#include <pthread.h>
#include <stdatomic.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#define M (1ULL << 20)
#define BUF (8 * M)
#define SLOTS 16

static struct check_driver cu;
static CUresult (*host_alloc)(void **, size_t, unsigned);
static CUresult (*host_free)(void *);

static pthread_mutex_t pool_lock = PTHREAD_MUTEX_INITIALIZER;
static CUdeviceptr pool[SLOTS];
static unsigned seeds[SLOTS];
static _Atomic bool round_over;
static char sock[108];

static void *allocator(void *arg)
{
    uint64_t rnd = (uint64_t)(uintptr_t)arg;
    unsigned char *pattern = malloc(BUF);
    CHECK(pattern, "malloc");
    CHECK_CU(cu.set_ctx(cu.ctx));
    for (int i = 0; i < check_ops(40); i++) {
        int slot = (int)(check_rnd(&rnd) % SLOTS);
        pthread_mutex_lock(&pool_lock);
        bool empty = pool[slot] == 0;
        pthread_mutex_unlock(&pool_lock);
        if (!empty)
            continue;
        CUdeviceptr p;
        CUresult rc = cu.alloc(&p, BUF);
        if (rc == CUDA_ERROR_OUT_OF_MEMORY)
            continue; /* everything else resident and the pins full: fair */
        CHECK_CU(rc);
        unsigned seed = (unsigned)check_rnd(&rnd);
        check_fill(pattern, BUF, seed);
        CHECK_CU(cu.htod(p, pattern, BUF));
        pthread_mutex_lock(&pool_lock);
        if (pool[slot] == 0) {
            pool[slot] = p;
            seeds[slot] = seed;
            p = 0;
        }
        pthread_mutex_unlock(&pool_lock);
        if (p)
            CHECK_CU(cu.release(p));
    }
    free(pattern);
    atomic_store(&round_over, true);
    return NULL;
}

static void *freer(void *arg)
{
    uint64_t rnd = (uint64_t)(uintptr_t)arg;
    unsigned char *want = malloc(BUF);
    CHECK(want, "malloc");
    CHECK_CU(cu.set_ctx(cu.ctx));
    while (!atomic_load(&round_over)) {
        int slot = (int)(check_rnd(&rnd) % SLOTS);
        pthread_mutex_lock(&pool_lock);
        CUdeviceptr p = pool[slot];
        unsigned seed = seeds[slot];
        pool[slot] = 0;
        pthread_mutex_unlock(&pool_lock);
        if (p == 0) {
            sched_yield();
            continue;
        }
        if (check_rnd(&rnd) % 4 == 0) {
            check_fill(want, BUF, seed);
            check_device_bytes(cu.dtoh, p, want, BUF, "a buffer about to be freed");
        }
        CHECK_CU(cu.release(p));
    }
    free(want);
    return NULL;
}

/* One request to this process's own control socket; the answer (its last
 * line, after any progress lines) must be ok. */
static void ask(const char *line)
{
    char last[4096];
    scenario_ask(sock, line, last, sizeof last);
    CHECK(strncmp(last, "{\"ok\":true,\"moved\":", 19) == 0, "%s answered %s", line, last);
}

static void *requester(void *arg)
{
    (void)arg;
    for (int i = 0; !atomic_load(&round_over); i++)
        ask(i % 2 ? "{\"cmd\":\"free\"}\n" : "{\"cmd\":\"evict\"}\n");
    return NULL;
}

static void *pinner(void *arg)
{
    (void)arg;
    CHECK_CU(cu.set_ctx(cu.ctx));
    while (!atomic_load(&round_over)) {
        void *h;
        CUresult rc = host_alloc(&h, 16 * M, 0);
        if (rc == CUDA_ERROR_OUT_OF_MEMORY)
            continue; /* the device was full too: nothing could yield */
        CHECK_CU(rc);
        memset(h, 0x5a, 4096);
        CHECK_CU(host_free(h));
    }
    return NULL;
}

static void books_empty(int round)
{
    char where[64];
    snprintf(where, sizeof where, "after round %d", round);
    check_invariants(where);
    json_t *s = stats_get();
    CHECK_EQ_U64(stats_u64(s, "devices.0.allocated"), 0);
    CHECK_EQ_U64(stats_u64(s, "devices.0.resident"), 0);
    CHECK_EQ_U64(stats_u64(s, "devices.0.offloaded_pinned"), 0);
    CHECK_EQ_U64(stats_u64(s, "devices.0.offloaded_pageable"), 0);
    CHECK_EQ_U64(stats_u64(s, "pinned.app"), 0);
    CHECK_EQ_U64(stats_u64(s, "pinned.offload"), 0);
    json_decref(s);
    /* and the whole slice is there again: 64 MiB of 8 MiB buffers fit */
    CUdeviceptr p[8];
    for (int i = 0; i < 8; i++)
        CHECK_CU(cu.alloc(&p[i], BUF));
    s = stats_get();
    CHECK_EQ_U64(stats_u64(s, "devices.0.resident"), 64 * M);
    json_decref(s);
    for (int i = 0; i < 8; i++)
        CHECK_CU(cu.release(p[i]));
}

int main(int argc, char **argv)
{
    (void)argc;
    const char *env[] = {"VRAMSHIM_VRAM_LIMIT=64M", "VRAMSHIM_PIN_LIMIT=48M",
                         "VRAMSHIM_OFFLOAD=pinned", NULL};
    const char *sock_dir = check_reexec_sock_dir(argv, "freerace", env);
    check_driver_open(&cu);
    host_alloc = check_sym(cu.lib, "cuMemHostAlloc");
    host_free = check_sym(cu.lib, "cuMemFreeHost");
    check_sock_path(sock_dir, getpid(), sock, sizeof sock);
    for (int round = 0; round < 4; round++) {
        atomic_store(&round_over, false);
        pthread_t t[4];
        pthread_create(&t[0], NULL, allocator, (void *)(uintptr_t)(round * 4 + 1));
        pthread_create(&t[1], NULL, freer, (void *)(uintptr_t)(round * 4 + 2));
        pthread_create(&t[2], NULL, requester, NULL);
        pthread_create(&t[3], NULL, pinner, NULL);
        for (int i = 0; i < 4; i++)
            pthread_join(t[i], NULL);
        for (int i = 0; i < SLOTS; i++)
            if (pool[i]) {
                CHECK_CU(cu.release(pool[i]));
                pool[i] = 0;
            }
        books_empty(round);
    }
    printf("prog_freerace: 4 rounds of frees racing make-room, socket free/evict and "
           "pins yielding; books balanced after each\n");
    return 0;
}
