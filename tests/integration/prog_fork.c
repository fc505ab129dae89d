/*
 * prog_fork: fork while other threads allocate. The child must not hang on
 * a lock a parent thread held, and must start with an empty registry (the
 * device memory belongs to the parent's context); the parent's counts must
 * stay exact.
 *
 * Then a fork while another thread is inside a move (held in the test
 * driver's cuMemUnmap with vramshim's move locks taken): the child's own
 * move request must not wait for the parent's thread, which does not exist
 * in the child; the parent's move then finishes with every byte intact.
 */
#include "check.h"
#include "fakecuda.h"

#include <pthread.h>
#include <semaphore.h>
#include <string.h>
#include <stdatomic.h>
#include <sys/wait.h>
#include <unistd.h>

static struct check_driver drv;
static _Atomic int stop;

static void *churn(void *arg)
{
    (void)arg;
    CHECK_CU(drv.set_ctx(drv.ctx));
    while (!stop) {
        CUdeviceptr p;
        CHECK_CU(drv.alloc(&p, 4096));
        CHECK_CU(drv.release(p));
    }
    return NULL;
}

static int (*offload)(uint64_t);
static CUdeviceptr moving;
static int moved_rc;

static void *move_one(void *arg)
{
    (void)arg;
    CHECK_CU(drv.set_ctx(drv.ctx));
    moved_rc = offload(moving);
    return NULL;
}

/* Fork while a move holds its locks, held inside the driver's unmap. */
static void fork_mid_move(CUdeviceptr buf, size_t n)
{
    int (*hold)(const char *, sem_t *, sem_t *) = check_sym(drv.lib, "fakecuda_hold");
    offload = check_api("vramshim_offload");
    unsigned char *want = malloc(n), *got = malloc(n);
    check_fill(want, n, 5);
    CHECK_CU(drv.htod(buf, want, n));
    sem_t reached, resume;
    sem_init(&reached, 0, 0);
    sem_init(&resume, 0, 0);
    CHECK(hold("cuMemUnmap", &reached, &resume) == 0, "fakecuda_hold");
    moving = buf;
    pthread_t mover;
    pthread_create(&mover, NULL, move_one, NULL);
    while (sem_wait(&reached) != 0)
        ;
    pid_t pid = fork();
    CHECK(pid >= 0, "fork");
    if (pid == 0) {
        alarm(60); /* a watchdog: a hang here is the failure */
        int rc = offload(buf); /* the child's tier is empty: unknown, at once */
        json_t *st = stats_get();
        int ok = rc != 0 && stats_u64(st, "devices.0.offloaded_pinned") == 0;
        _exit(ok ? 0 : 4);
    }
    int status;
    CHECK(waitpid(pid, &status, 0) == pid, "waitpid");
    sem_post(&resume);
    pthread_join(mover, NULL);
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0,
          "the child forked mid-move ended with status %d", status);
    CHECK(moved_rc == 0, "the parent's move returned %d", moved_rc);
    json_t *st = stats_get();
    CHECK_EQ_U64(stats_u64(st, "devices.0.offloaded_pinned"), n);
    json_decref(st);
    CHECK_CU(drv.dtoh(got, buf, n));
    CHECK(memcmp(got, want, n) == 0, "the buffer moved across the fork lost bytes");
    sem_destroy(&reached);
    sem_destroy(&resume);
    free(want);
    free(got);
}

int main(void)
{
    check_driver_open(&drv);

    CUdeviceptr keep[3];
    for (int i = 0; i < 3; i++)
        CHECK_CU(drv.alloc(&keep[i], (size_t)(i + 1) << 20));

    pthread_t t[4];
    for (int i = 0; i < 4; i++)
        pthread_create(&t[i], NULL, churn, NULL);
    for (int round = 0; round < 20; round++) {
        pid_t pid = fork();
        CHECK(pid >= 0, "fork");
        if (pid == 0) {
            json_t *st = stats_get();
            int ok = stats_u64(st, "counters.allocs") == 0 &&
                     stats_u64(st, "devices.0.allocated") == 0 &&
                     check_owner_push("child") == 0;
            _exit(ok ? 0 : 3);
        }
        int status;
        CHECK(waitpid(pid, &status, 0) == pid, "waitpid");
        CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0,
              "child %d ended with status %d", round, status);
    }
    stop = 1;
    for (int i = 0; i < 4; i++)
        pthread_join(t[i], NULL);
    json_t *st = stats_get();
    check_owner(st, "prog_fork", 0, 6 << 20, 3);
    CHECK_EQ_U64(stats_u64(st, "counters.allocs") - stats_u64(st, "counters.frees"), 3);
    json_decref(st);
    fork_mid_move(keep[2], 3 << 20);
    printf("prog_fork: ok\n");
    return 0;
}
