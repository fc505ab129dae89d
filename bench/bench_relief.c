/*
 * bench_relief: the time to make room through a peer: one process asks
 * another on the same device for room, the other moves its idle buffers to
 * host memory and answers, the first allocates. Run under vramshim.
 *
 * A holder process (this program again, "hold") fills what is free on the
 * device with 64 MiB buffers, then goes idle (VRAMSHIM_IDLE_MS=0). This process then allocates SIZE (BENCH_RELIEF_MB, default 512):
 * the allocation fails, the holder is asked, gives, and the allocation is
 * made. Timed: that cuMemAlloc, less the same allocation when the device
 * has room (the baseline). The holder then takes its buffers back (the
 * room is free again) and the next round starts. Prints, best
 * of ROUNDS:
 *   relief_ms N          for SIZE
 *   relief_ms_per_gib N
 * With the test driver it makes its own shared device (FAKECUDA_SHM, the
 * device SIZE + 256 MiB) and socket directory; on a GPU the holder fills
 * the real device (host memory must hold SIZE pinned).
 */
#define _GNU_SOURCE 1
#include "bench_common.h"
#include "check.h"

#include <signal.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#define ROUNDS 5
#define PIECE (64ULL << 20)

static CUresult (*alloc)(CUdeviceptr *, size_t);
static CUresult (*release)(CUdeviceptr);
static CUresult (*dtoh)(void *, CUdeviceptr, size_t);

static int holder(void)
{
    void *lib = bench_open();
    alloc = bench_sym(lib, "cuMemAlloc_v2");
    dtoh = bench_sym(lib, "cuMemcpyDtoH_v2");
    int (*set)(const char *, const char *) = check_api("vramshim_set");
    CUresult (*mem_info)(size_t *, size_t *) = bench_sym(lib, "cuMemGetInfo_v2");
    size_t free_bytes, total;
    BENCH_CHECK(mem_info(&free_bytes, &total));
    /* what is free, no more: past it vramshim would move the holder's own
     * buffers out to make room for the next */
    static CUdeviceptr held[1 << 16];
    int n = 0;
    while (n < (int)(free_bytes / PIECE) && n < (1 << 16))
        BENCH_CHECK(alloc(&held[n++], PIECE));
    printf("%d\n", n);
    fflush(stdout);
    char line[64], byte;
    while (fgets(line, sizeof line, stdin)) {
        /* "back": touch every buffer (a one-byte copy each) so it comes
         * back, asking the other process; then idle again */
        set("idle_ms", "60000");
        for (int i = 0; i < n; i++)
            BENCH_CHECK(dtoh(&byte, held[i], 1));
        set("idle_ms", "0");
        printf("ok\n");
        fflush(stdout);
    }
    return 0;
}

/* The holder's touches are stamped with the coarse clock; idle_ms=0 makes
 * them idle once it has moved on. */
static void wait_tick(void)
{
    struct timespec a, b;
    clock_gettime(CLOCK_MONOTONIC_COARSE, &a);
    do
        clock_gettime(CLOCK_MONOTONIC_COARSE, &b);
    while (b.tv_sec == a.tv_sec && b.tv_nsec == a.tv_nsec);
}

int main(int argc, char **argv)
{
    if (argc > 1 && strcmp(argv[1], "hold") == 0)
        return holder();
    const char *mb = getenv("BENCH_RELIEF_MB");
    uint64_t size = (mb ? strtoull(mb, NULL, 10) : 512) << 20;
    if (getenv("CHECK_REEXECED") == NULL) {
        static char dir[] = "/tmp/vs-bench-relief-XXXXXX";
        char mem[64], shm[64], sock[64];
        CHECK(mkdtemp(dir) != NULL, "mkdtemp");
        snprintf(mem, sizeof mem, "FAKECUDA_MEM=%lluM",
                 (unsigned long long)((size >> 20) + 256));
        snprintf(shm, sizeof shm, "FAKECUDA_SHM=/vs-bench-relief-%d", (int)getpid());
        snprintf(sock, sizeof sock, "VRAMSHIM_SOCKET_DIR=%s", dir);
        const char *env[] = {mem, shm, sock, "VRAMSHIM_IDLE_MS=60000",
                             "VRAMSHIM_RELIEF_MS=600000", NULL};
        check_reexec_env(argv, env);
    }
    void *lib = bench_open();
    alloc = bench_sym(lib, "cuMemAlloc_v2");
    release = bench_sym(lib, "cuMemFree_v2");
    int (*set)(const char *, const char *) = check_api("vramshim_set");

    /* the baseline: the same allocation with room on the device */
    double base = 1e9;
    for (int r = 0; r < ROUNDS; r++) {
        CUdeviceptr p;
        double t0 = bench_now();
        BENCH_CHECK(alloc(&p, size));
        double t = bench_now() - t0;
        base = t < base ? t : base;
        BENCH_CHECK(release(p));
    }

    setenv("VRAMSHIM_IDLE_MS", "0", 1);
    FILE *to, *from;
    char *args[] = {argv[0], "hold", NULL};
    pid_t pid = check_spawn("/proc/self/exe", args, false, &to, &from);
    unsetenv("VRAMSHIM_IDLE_MS");
    char line[64];
    CHECK(fgets(line, sizeof line, from) && atoi(line) > 0, "the holder allocated nothing");
    double best = 1e9;
    for (int r = 0; r < ROUNDS; r++) {
        wait_tick();
        CUdeviceptr p;
        double t0 = bench_now();
        BENCH_CHECK(alloc(&p, size));
        double t = bench_now() - t0;
        best = t < best ? t : best;
        BENCH_CHECK(release(p));
        set("idle_ms", "0");
        fprintf(to, "back\n");
        fflush(to);
        CHECK(fgets(line, sizeof line, from) && strcmp(line, "ok\n") == 0, "holder");
        set("idle_ms", "60000");
    }
    fclose(to);
    waitpid(pid, NULL, 0);
    fclose(from);
    double ms = (best - base) * 1e3;
    printf("relief_ms %.1f\n", ms);
    printf("relief_ms_per_gib %.1f\n", ms / ((double)size / (1ULL << 30)));
    shm_unlink(getenv("FAKECUDA_SHM"));
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", getenv("VRAMSHIM_SOCKET_DIR"));
    return system(cmd) == 0 ? 0 : 1;
}
