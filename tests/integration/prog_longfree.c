/*
 * prog_longfree: `vramshim free` of more than the tool's deadline can move
 * answers truthfully (issue 11, case 10), the 70 GiB case scaled to the
 * test driver: copies run at 24 MiB/s (FAKECUDA_COPY_MBPS), so moving
 * 256 MiB out takes at least 10.7 s, twice the tool's 5 s deadline however
 * fast the machine, and one of the buffers alone takes 8 s. The server
 * reports progress while it moves, chunk by chunk; each progress line
 * gives the tool another deadline, so the tool waits as long as chunks
 * keep moving, then prints exactly what moved, and the stats and the bytes
 * agree. (Before: the tool gave up after 5 s, "gave no valid answer",
 * exit 1, while the move went on; then, with progress per buffer, it gave
 * up during the 8 s buffer.)
 *
 * Then the program frees 16 buffers while another such free runs (asked on
 * the socket directly): 8 small ones vramshim does not back and 8 backed
 * ones the free may be moving. Every free returns while the long free is
 * still moving (a free waits at most for the one chunk of its own buffer
 * in flight), and the books balance after. (Before: each free waited for
 * move_lock, which the socket's free held from its first buffer to its
 * last.)
 */
#include "check.h"

#include <pthread.h>
#include <stdatomic.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define M (1ULL << 20)
#define N 64
#define BUF (4 * M)
#define BIG (192 * M)
#define SMALL 16

static const char *sock_dir;

static char sock[108];
static _Atomic bool long_free_answered;
static char long_free_answer[4096];

/* The socket's free, asked directly (no deadline): the answer is the last
 * line before the server closes. */
static void *long_free(void *arg)
{
    (void)arg;
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    CHECK(fd >= 0, "socket");
    struct sockaddr_un a = {.sun_family = AF_UNIX};
    snprintf(a.sun_path, sizeof a.sun_path, "%s", sock);
    CHECK(connect(fd, (struct sockaddr *)&a, sizeof a) == 0, "connect %s", sock);
    CHECK(send(fd, "{\"cmd\":\"free\"}\n", 15, MSG_NOSIGNAL) == 15, "send");
    size_t used = 0;
    ssize_t r;
    while (used < sizeof long_free_answer - 1 &&
           (r = recv(fd, long_free_answer + used, sizeof long_free_answer - 1 - used, 0)) > 0)
        used += (size_t)r;
    long_free_answer[used] = '\0';
    close(fd);
    atomic_store(&long_free_answered, true);
    return NULL;
}

static void frees_during_a_long_free(struct check_driver *cu)
{
    CUdeviceptr victims[N], small[8], backed[8];
    for (int i = 0; i < N; i++)
        CHECK_CU(cu->alloc(&victims[i], BUF));
    for (int i = 0; i < 8; i++) {
        CHECK_CU(cu->alloc(&small[i], 1 * M)); /* under a granule: not backed */
        CHECK_CU(cu->alloc(&backed[i], BUF));
    }
    pthread_t t;
    pthread_create(&t, NULL, long_free, NULL);
    for (;;) { /* until the free has moved something: it is under way */
        json_t *s = stats_get();
        uint64_t off = stats_u64(s, "devices.0.offloaded_pinned");
        json_decref(s);
        if (off > 0)
            break;
        CHECK(!atomic_load(&long_free_answered), "the free ended before moving anything: %s",
              long_free_answer);
        sched_yield();
    }
    for (int i = 0; i < 8; i++) {
        CHECK_CU(cu->release(small[i]));
        CHECK_CU(cu->release(backed[i]));
    }
    json_t *mid = stats_get();
    uint64_t moved_by_then = stats_u64(mid, "devices.0.offloaded_pinned");
    json_decref(mid);
    CHECK(moved_by_then < N * BUF,
          "the program's 16 frees returned only once the socket's free had moved all %llu "
          "bytes of the other buffers",
          (unsigned long long)moved_by_then);
    pthread_join(t, NULL);
    CHECK(strstr(long_free_answer, "{\"ok\":true,\"moved\":") != NULL, "the free answered %s",
          long_free_answer);
    for (int i = 0; i < N; i++)
        CHECK_CU(cu->release(victims[i]));
    check_invariants("after frees during a long free");
    json_t *s = stats_get();
    CHECK_EQ_U64(stats_u64(s, "devices.0.allocated"), 0);
    CHECK_EQ_U64(stats_u64(s, "pinned.offload"), 0);
    json_decref(s);
}

int main(int argc, char **argv)
{
    (void)argc;
    const char *env[] = {"FAKECUDA_COPY_MBPS=24", "VRAMSHIM_OFFLOAD=pinned",
                         "VRAMSHIM_PIN_LIMIT=1G", NULL};
    sock_dir = check_reexec_sock_dir(argv, "longfree", env);
    struct check_driver cu;
    check_driver_open(&cu);
    CUresult (*memset32)(CUdeviceptr, unsigned, size_t) = check_sym(cu.lib, "cuMemsetD32_v2");
    /* one buffer of 192 MiB takes 8 s to move by itself, longer than the
     * tool's deadline: progress must come per chunk, not per buffer
     * (before: no progress line for 8 s, "gave no valid answer"); then 16
     * of 4 MiB, 256 MiB in all */
    CUdeviceptr p[1 + SMALL];
    size_t size[1 + SMALL];
    for (int i = 0; i <= SMALL; i++) { /* memsets are not slowed: only copies cross the bus */
        size[i] = i == 0 ? BIG : BUF;
        CHECK_CU(cu.alloc(&p[i], size[i]));
        CHECK_CU(memset32(p[i], 0x10000u + (unsigned)i, size[i] / 4));
    }
    char tool[512], pid[16];
    snprintf(tool, sizeof tool, "%s/tools/vramshim", getenv("VRAMSHIM_BUILD"));
    snprintf(pid, sizeof pid, "%d", (int)getpid());
    char *const targv[] = {tool, "free", pid, NULL};
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    FILE *to, *from;
    pid_t child = check_spawn(tool, targv, true, &to, &from);
    fclose(to);
    char line[256] = "";
    char *got = fgets(line, sizeof line, from);
    fclose(from);
    int status;
    CHECK(waitpid(child, &status, 0) == child, "waitpid");
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double took = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0,
          "vramshim free exited %d (printed: %s)", WEXITSTATUS(status), got ? line : "nothing");
    char want[128];
    snprintf(want, sizeof want, "%s: moved 256.0 MiB (%llu bytes) to host memory\n", pid,
             (unsigned long long)(BIG + SMALL * BUF));
    CHECK(strcmp(line, want) == 0, "printed %s, expected %s", line, want);
    json_t *s = stats_get();
    CHECK_EQ_U64(stats_u64(s, "devices.0.resident"), 0);
    CHECK_EQ_U64(stats_u64(s, "devices.0.offloaded_pinned"), BIG + SMALL * BUF);
    json_decref(s);
    for (int i = 0; i <= SMALL; i++) { /* a word at each end of each buffer */
        uint32_t w[2];
        CHECK_CU(cu.dtoh(&w[0], p[i], 4));
        CHECK_CU(cu.dtoh(&w[1], p[i] + size[i] - 4, 4));
        CHECK(w[0] == 0x10000u + (unsigned)i && w[1] == w[0], "buffer %d reads %x %x", i, w[0],
              w[1]);
        CHECK_CU(cu.release(p[i]));
    }
    check_invariants("after the long free");
    check_sock_path(sock_dir, getpid(), sock, sizeof sock);
    frees_during_a_long_free(&cu);
    printf("prog_longfree: vramshim free of 256 MiB at 24 MiB/s took %.1f s and answered %s"
           "prog_longfree: 16 frees returned while another such free was moving\n",
           took, line);
    return 0;
}
