/*
 * prog_threads: 16 threads, each under its own owner, allocate and free at
 * random at once while the main thread keeps reading the stats. Every
 * snapshot must be consistent, and at the end each owner must hold exactly
 * what its thread kept.
 */
#include "check.h"

#include <dlfcn.h>
#include <pthread.h>
#include <stdatomic.h>
#include <string.h>

#define THREADS 16
#define OPS 3000
#define SLOTS 64

static struct check_driver drv;
static _Atomic int running;

struct worker {
    int id;
    uint64_t kept_bytes, kept_count;
};

static void *work(void *arg)
{
    struct worker *w = arg;
    char name[32];
    snprintf(name, sizeof name, "t%02d", w->id);
    CHECK_CU(drv.set_ctx(drv.ctx));
    CHECK(check_owner_push(name) == 0, "push");
    CUdeviceptr ptr[SLOTS] = {0};
    size_t size[SLOTS] = {0};
    unsigned seed = (unsigned)w->id * 7919u + 1;
    for (int i = 0; i < OPS; i++) {
        int k = rand_r(&seed) % SLOTS;
        if (ptr[k]) {
            CHECK_CU(drv.release(ptr[k]));
            ptr[k] = 0;
        } else {
            size[k] = 1 + (size_t)(rand_r(&seed) % (256 * 1024));
            CHECK_CU(drv.alloc(&ptr[k], size[k]));
        }
    }
    for (int k = 0; k < SLOTS; k++) {
        if (ptr[k]) {
            w->kept_bytes += size[k];
            w->kept_count++;
        }
    }
    CHECK(check_owner_pop() == 0, "pop");
    return NULL;
}

int main(void)
{
    check_driver_open(&drv);

    pthread_t t[THREADS];
    struct worker w[THREADS];
    running = 1;
    for (int i = 0; i < THREADS; i++) {
        w[i] = (struct worker){.id = i};
        pthread_create(&t[i], NULL, work, &w[i]);
    }
    /* snapshots taken mid-flight add up */
    for (int n = 0; n < 50; n++) {
        json_t *st = stats_get();
        uint64_t sum = 0;
        size_t i;
        json_t *o;
        json_array_foreach(json_object_get(st, "owners"), i, o)
            sum += (uint64_t)json_integer_value(json_object_get(o, "allocated"));
        CHECK_EQ_U64(sum, stats_u64(st, "devices.0.allocated"));
        json_decref(st);
    }
    uint64_t total = 0, count = 0;
    for (int i = 0; i < THREADS; i++) {
        pthread_join(t[i], NULL);
        total += w[i].kept_bytes;
        count += w[i].kept_count;
    }
    json_t *st = stats_get();
    for (int i = 0; i < THREADS; i++) {
        char name[32];
        snprintf(name, sizeof name, "t%02d", i);
        check_owner(st, name, 0, w[i].kept_bytes, w[i].kept_count);
    }
    CHECK_EQ_U64(stats_u64(st, "devices.0.allocated"), total);
    CHECK_EQ_U64(stats_u64(st, "counters.allocs") - stats_u64(st, "counters.frees"), count);
    json_decref(st);
    printf("prog_threads: ok, %llu live allocations\n", (unsigned long long)count);
    return 0;
}
