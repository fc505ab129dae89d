/*
 * prog_relief: processes on one device give each other room (relief).
 *
 * Every scenario runs worker processes (this program again, "worker", under
 * vramshim) on one 256 MiB test device shared through FAKECUDA_SHM, each with
 * its own settings, in a socket directory of the scenario's own. This
 * process drives them through pipes, one command and one answer at a time,
 * so every step happens in a known order (relief_workers.c). Idleness is
 * set, not waited for: idle_ms=0 makes every buffer touched before now
 * idle, 86400000 (a day, longer than any run however slow the machine)
 * none, and
 * wait_tick() waits for the coarse clock the touches are stamped with to
 * move on (a clock condition, never a sleep standing in for a handshake).
 *
 *   1. A fills the device and goes idle; B allocates past what is free and
 *      succeeds because A gave; A resumes, gets its buffers back by asking
 *      B in turn; every byte of both intact; the counters say who gave.
 *   2. priorities: a busy lower-priority process gives nothing (only idle
 *      buffers go), an idle one gives; a higher-priority process is not
 *      asked by a lower one.
 *   3. a peer that stops answering is skipped after the probe's deadline;
 *      a peer killed while it is being asked is skipped at once.
 *   4. two processes alternating over working sets that together exceed
 *      the device: both finish, bytes intact, and the bytes moved out stay
 *      within (W_P + W_Q) * (2 + elapsed / idle_ms) (no ping-pong per step).
 *   5. 8 processes with random phases: no deadlock, no lost byte, and the
 *      device's real usage never above its size.
 *   6. VRAMSHIM_IDLE_RELEASE: an idle process moves its idle buffers out
 *      unasked; set at run time, a longer one keeps them.
 *   7. the tool: `devices --json`, `top --once` and `metrics` show both
 *      processes under one UUID with the relief they gave and took.
 *
 * By hand: `prog_relief NAME` runs one scenario (fill, priorities,
 * unresponsive, alternating, crowd, release); RELIEF_TEST_LOG=info sets the workers'
 * log level, RELIEF_TEST_TIMES=1 prints how long each answer took.
 */
#define _GNU_SOURCE 1
#include "relief_workers.h"

#include <errno.h>
#include <signal.h>
#include <stdarg.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* ---- 7. what the tool shows ------------------------------------------------------ */
static void run_tool(char *out, size_t cap, const char *args)
{
    char cmd[512];
    snprintf(cmd, sizeof cmd, "env -u LD_PRELOAD VRAMSHIM_SOCKET_DIR=%s %s/tools/vramshim %s",
             sock_dir, getenv("VRAMSHIM_BUILD"), args);
    CHECK(check_capture(cmd, out, cap) == 0, "vramshim %s failed: %s", args, out);
}

/* A has given B 96M: one device, both processes, the relief on each side. */
static void tool_checks(struct worker *a, struct worker *b)
{
    static char out[1 << 16];
    run_tool(out, sizeof out, "devices --json");
    json_error_t err;
    json_t *all = json_loads(out, 0, &err);
    CHECK(json_is_array(all) && json_array_size(all) == 1, "devices: %s", out);
    json_t *d = json_array_get(all, 0);
    CHECK(strcmp(json_string_value(json_object_get(d, "uuid")),
                 "GPU-facec0da-1234-4567-89ab-cdef00112200") == 0, "devices: %s", out);
    CHECK_EQ_U64(json_integer_value(json_object_get(d, "vram_total")), 256 * M);
    json_t *procs = json_object_get(d, "processes");
    CHECK(json_array_size(procs) == 2, "devices: %s", out);
    size_t i;
    json_t *p;
    json_array_foreach(procs, i, p) {
        pid_t pid = (pid_t)json_integer_value(json_object_get(p, "pid"));
        bool is_a = pid == a->pid;
        CHECK(is_a || pid == b->pid, "devices: a stranger %d", (int)pid);
        CHECK_EQ_U64(json_integer_value(json_object_get(p, "resident")), 96 * M);
        CHECK_EQ_U64(json_integer_value(json_object_get(p, "offloaded")), is_a ? 96 * M : 0);
        CHECK_EQ_U64(json_integer_value(json_object_get(p, "relief_bytes_given")),
                     is_a ? 96 * M : 0);
        CHECK_EQ_U64(json_integer_value(json_object_get(p, "relief_bytes_taken")),
                     is_a ? 0 : 96 * M);
    }
    json_decref(all);
    run_tool(out, sizeof out, "top --once");
    char row[64];
    snprintf(row, sizeof row, "\n%-8d 0 ", (int)a->pid);
    CHECK(strstr(out, "(GPU-facec0da-1234-4567-89ab-cdef00112200)") && strstr(out, row) &&
              strstr(out, " 1/0 "),
          "top --once: %s", out);
    snprintf(row, sizeof row, "\n%-8d 0 ", (int)b->pid);
    CHECK(strstr(out, row) && strstr(out, " 0/1 "), "top --once: %s", out);
    run_tool(out, sizeof out, "metrics");
    char line[160];
    snprintf(line, sizeof line, "vramshim_relief_bytes_given_total{pid=\"%d\"", (int)a->pid);
    CHECK(strstr(out, "# TYPE vramshim_relief_taken_total counter") && strstr(out, line),
          "metrics: %s", out);
}

/* ---- 1. fill, go idle, give, get back ------------------------------------------- */
static void fill_and_give(void)
{
    scenario();
    struct worker a, b;
    start(&a, "A", (const char *const[]){"VRAMSHIM_IDLE_MS=0", NULL});
    start(&b, "B", (const char *const[]){"VRAMSHIM_IDLE_MS=86400000", NULL});
    for (int i = 0; i < 6; i++)
        ask_ok(&a, "a 32");
    CHECK_EQ_U64(strtoull(ask(&a, "u"), NULL, 10), 192 * M);
    wait_tick();

    ask_ok(&b, "a 96"); /* 64M free: A gave the rest */
    CHECK_EQ_U64(offloaded(&a), 96 * M);
    CHECK_EQ_U64(stat_of(&a, "devices.0.resident"), 96 * M);
    CHECK_EQ_U64(stat_of(&a, "counters.relief_given"), 1);
    CHECK_EQ_U64(stat_of(&a, "counters.relief_bytes_given"), 96 * M);
    CHECK_EQ_U64(stat_of(&b, "counters.relief_taken"), 1);
    CHECK_EQ_U64(stat_of(&b, "counters.relief_bytes_taken"), 96 * M);
    CHECK_EQ_U64(strtoull(ask(&b, "u"), NULL, 10), 192 * M);
    ask_ok(&b, "c");
    tool_checks(&a, &b);

    /* A resumes and B goes idle: A's buffers come back, the last of them
     * by asking B */
    ask_ok(&a, "s idle_ms 86400000");
    ask_ok(&b, "s idle_ms 0");
    wait_tick();
    ask_ok(&a, "c");
    CHECK_EQ_U64(stat_of(&a, "devices.0.resident"), 192 * M);
    CHECK_EQ_U64(offloaded(&a), 0);
    CHECK_EQ_U64(stat_of(&a, "counters.relief_taken"), 1);
    CHECK_EQ_U64(stat_of(&b, "counters.relief_given"), 1);
    CHECK_EQ_U64(offloaded(&b), 32 * M);
    /* B's bytes, partly in host memory now: intact (reading them asks A,
     * which is busy now, and gives nothing) */
    ask_ok(&b, "c");
    CHECK_EQ_U64(stat_of(&a, "counters.relief_given"), 1);
    CHECK(strtoull(ask(&a, "u"), NULL, 10) <= 256 * M, "over the device");
    stop(&a);
    stop(&b);
    scenario_end();
    printf("relief: fill and give: ok\n");
}

/* ---- 2. priorities ----------------------------------------------------------------- */
static void priorities(void)
{
    scenario();
    struct worker low, high, mid;
    start(&low, "L", (const char *const[]){"VRAMSHIM_PRIORITY=0", "VRAMSHIM_IDLE_MS=86400000", NULL});
    start(&high, "H", (const char *const[]){"VRAMSHIM_PRIORITY=5", "VRAMSHIM_IDLE_MS=86400000", NULL});
    start(&mid, "M", (const char *const[]){"VRAMSHIM_PRIORITY=0", "VRAMSHIM_IDLE_MS=0", NULL});
    for (int i = 0; i < 6; i++)
        ask_ok(&low, "a 32");
    wait_tick();
    /* L is busy: H may ask it, but nothing of it is idle */
    CHECK(strcmp(ask(&high, "a 96"), "oom") == 0, "a busy peer gave");
    CHECK_EQ_U64(stat_of(&low, "counters.relief_given"), 0);
    CHECK_EQ_U64(stat_of(&low, "devices.0.resident"), 192 * M);
    /* L idle now: it gives */
    ask_ok(&low, "s idle_ms 0");
    wait_tick();
    ask_ok(&high, "a 96");
    CHECK_EQ_U64(stat_of(&low, "counters.relief_given"), 1);
    CHECK_EQ_U64(stat_of(&high, "counters.relief_taken"), 1);
    /* H idle too, but M's priority is below H's: only L is asked, and L
     * alone cannot cover 192M */
    ask_ok(&high, "s idle_ms 0");
    wait_tick();
    CHECK(strcmp(ask(&mid, "a 192"), "oom") == 0, "a higher-priority peer gave");
    CHECK_EQ_U64(stat_of(&high, "counters.relief_given"), 0);
    CHECK_EQ_U64(stat_of(&high, "devices.0.resident"), 96 * M);
    ask_ok(&low, "c");
    ask_ok(&high, "c");
    stop(&low);
    stop(&high);
    stop(&mid);
    scenario_end();
    printf("relief: priorities: ok\n");
}

/* ---- 3. a peer that does not answer, a peer killed while asked ---------------- */
static bool log_says(const char *path, const char *what)
{
    FILE *f = fopen(path, "r");
    if (f == NULL)
        return false;
    char line[512];
    bool found = false;
    while (!found && fgets(line, sizeof line, f))
        found = strstr(line, what) != NULL;
    fclose(f);
    return found;
}

static void unresponsive(void)
{
    /* stopped: the probe's deadline (a tenth of 2 s) passes, B moves on */
    scenario();
    struct worker a, b;
    start(&a, "A", (const char *const[]){"VRAMSHIM_IDLE_MS=0", NULL});
    start(&b, "B", (const char *const[]){"VRAMSHIM_IDLE_MS=86400000", "VRAMSHIM_RELIEF_MS=2000", NULL});
    for (int i = 0; i < 6; i++)
        ask_ok(&a, "a 32");
    wait_tick();
    kill(a.pid, SIGSTOP);
    uint64_t t0 = now_ms();
    CHECK(strcmp(ask(&b, "a 96"), "oom") == 0, "a stopped peer gave");
    uint64_t took = now_ms() - t0;
    CHECK(took < 20000, "a stopped peer held the asker %llu ms", (unsigned long long)took);
    kill(a.pid, SIGCONT);
    ask_ok(&b, "s relief_ms 60000");
    ask_ok(&b, "a 96"); /* answering again: it gives */
    ask_ok(&a, "c");
    ask_ok(&b, "c");
    stop(&a);
    stop(&b);
    scenario_end();

    /* killed while it is being asked: its move waits on a kernel that
     * never ends, B's log says it asked, then it dies */
    scenario();
    char log[128];
    snprintf(log, sizeof log, "%s/b.log", sock_dir);
    char log_env[160];
    snprintf(log_env, sizeof log_env, "VRAMSHIM_LOG_FILE=%s", log);
    start(&a, "A", (const char *const[]){"VRAMSHIM_IDLE_MS=0", NULL});
    start(&b, "B",
          (const char *const[]){"VRAMSHIM_IDLE_MS=86400000", "VRAMSHIM_LOG=debug", log_env, NULL});
    for (int i = 0; i < 6; i++)
        ask_ok(&a, "a 32");
    ask_ok(&a, "b");
    wait_tick();
    fprintf(b.to, "a 96\n");
    fflush(b.to);
    char asking[64];
    snprintf(asking, sizeof asking, "relief: asking process %d", (int)a.pid);
    uint64_t give_up = now_ms() + 30000;
    while (!log_says(log, asking)) {
        CHECK(now_ms() < give_up, "B never asked A");
        usleep(1000); /* polling the log for a line: the condition is checked */
    }
    kill(a.pid, SIGKILL);
    t0 = now_ms();
    CHECK(strcmp(answer(&b), "oom") == 0, "a dead peer gave");
    took = now_ms() - t0;
    /* far below the minute B would give a live peer */
    CHECK(took < 20000, "a killed peer held the asker %llu ms", (unsigned long long)took);
    ask_ok(&b, "c");
    int status;
    waitpid(a.pid, &status, 0);
    fclose(a.to);
    fclose(a.from);
    stop(&b);
    scenario_end();
    printf("relief: unresponsive and killed peers: ok\n");
}

/* ---- 4. two processes alternating ---------------------------------------------- */
static void alternating(void)
{
    /* small buffers: every move is real work on a loaded test machine */
    dev_mem = "64M";
    scenario();
    const uint64_t idle_ms = 1000, ws = 48 * M; /* each; together 1.5 times the device */
    struct worker p, q;
    start(&p, "P", (const char *const[]){"VRAMSHIM_IDLE_MS=1000", NULL});
    start(&q, "Q", (const char *const[]){"VRAMSHIM_IDLE_MS=1000", NULL});
    uint64_t t0 = now_ms();
    for (int i = 0; i < 3; i++)
        ask_ok(&p, "a 16");
    for (int i = 0; i < 3; i++)
        ask_ok(&q, "a 16");
    int steps = check_ops(40);
    for (int s = 0; s < steps; s++) {
        ask_ok(&p, "t");
        ask_ok(&q, "t");
    }
    ask_ok(&p, "c");
    ask_ok(&q, "c");
    uint64_t elapsed = now_ms() - t0;
    uint64_t moved = stat_of(&p, "counters.bytes_evicted") + stat_of(&q, "counters.bytes_evicted");
    /* a buffer moves out only after idle_ms untouched (its own process's
     * making room, or a peer's relief), and every step touches it again:
     * at most once per idle_ms each, plus once while they are allocated */
    uint64_t bound = 2 * ws * (2 + elapsed / idle_ms);
    printf("relief: alternating: %d steps in %llu ms, %llu MiB moved out (bound %llu MiB, "
           "ping-pong would be %llu MiB), relief given %llu+%llu MiB\n",
           steps, (unsigned long long)elapsed, (unsigned long long)(moved / M),
           (unsigned long long)(bound / M), (unsigned long long)(2 * steps * ws / M),
           (unsigned long long)(stat_of(&p, "counters.relief_bytes_given") / M),
           (unsigned long long)(stat_of(&q, "counters.relief_bytes_given") / M));
    CHECK(moved <= bound, "moved %llu bytes, bound %llu", (unsigned long long)moved,
          (unsigned long long)bound);
    CHECK(strtoull(ask(&p, "u"), NULL, 10) <= 64 * M, "over the device");
    stop(&p);
    stop(&q);
    scenario_end();
    dev_mem = "256M";
    printf("relief: alternating: ok\n");
}

/* ---- 5. eight processes, random phases -------------------------------------------- */
static void crowd(void)
{
    dev_mem = "128M";
    scenario();
    enum { N = 8 };
    struct worker w[N];
    int held[N] = {0};
    for (int i = 0; i < N; i++) {
        char name[8], prio[32];
        snprintf(name, sizeof name, "W%d", i);
        snprintf(prio, sizeof prio, "VRAMSHIM_PRIORITY=%d", i % 3);
        start(&w[i], name, (const char *const[]){"VRAMSHIM_IDLE_MS=0", prio, NULL});
    }
    uint64_t rnd = 0x9e3779b97f4a7c15ULL;
    int steps = check_ops(120);
    for (int s = 0; s < steps; s++) {
        int i = (int)(check_rnd(&rnd) % N);
        switch (check_rnd(&rnd) % 4) {
        case 0:
            if (held[i] < 4)
                held[i] += strcmp(ask(&w[i], "a 8"), "ok") == 0;
            break;
        case 1:
            ask_ok(&w[i], "t");
            break;
        case 2:
            ask_ok(&w[i], "c");
            break;
        default:
            if (held[i] > 0) {
                ask_ok(&w[i], "f");
                held[i]--;
            }
            break;
        }
        wait_tick();
        CHECK(strtoull(ask(&w[i], "u"), NULL, 10) <= 128 * M, "over the device");
    }
    for (int i = 0; i < N; i++) {
        ask_ok(&w[i], "c");
        stop(&w[i]);
    }
    scenario_end();
    dev_mem = "256M";
    printf("relief: 8 processes, %d steps: ok\n", steps);
}

/* ---- 6. voluntary release -------------------------------------------------------- */
static void idle_release(void)
{
    scenario();
    struct worker a;
    start(&a, "A", (const char *const[]){"VRAMSHIM_IDLE_MS=0", "VRAMSHIM_IDLE_RELEASE=1ms", NULL});
    for (int i = 0; i < 3; i++)
        ask_ok(&a, "a 32");
    /* the release comes on its own, from the server thread: wait for it */
    uint64_t give_up = now_ms() + 60000;
    while (offloaded(&a) != 96 * M) {
        CHECK(now_ms() < give_up, "nothing released after a minute idle");
        usleep(10000);
    }
    CHECK_EQ_U64(stat_of(&a, "devices.0.resident"), 0);
    CHECK_EQ_U64(stat_of(&a, "counters.relief_given"), 0); /* nobody asked */
    /* changed at run time: with an hour to go, what comes back stays */
    ask_ok(&a, "s idle_release 1h");
    ask_ok(&a, "c");
    CHECK_EQ_U64(stat_of(&a, "devices.0.resident"), 96 * M);
    ask_ok(&a, "s idle_release off");
    ask_ok(&a, "c");
    CHECK_EQ_U64(offloaded(&a), 0);
    stop(&a);
    scenario_end();
    printf("relief: idle release: ok\n");
}

int main(int argc, char **argv)
{
    static const struct relief_scenario all[] = {
        {"fill", fill_and_give}, {"priorities", priorities}, {"unresponsive", unresponsive},
        {"alternating", alternating}, {"crowd", crowd}, {"release", idle_release},
    };
    return relief_main(argc, argv, all, sizeof all / sizeof all[0], "relief");
}
