/*
 * prog_fork: fork while other threads allocate. The child must not hang on
 * a lock a parent thread held, and must start with an empty registry (the
 * device memory belongs to the parent's context); the parent's counts must
 * stay exact.
 */
#include "check.h"

#include <pthread.h>
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
    printf("prog_fork: ok\n");
    return 0;
}
