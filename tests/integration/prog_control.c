/*
 * prog_control: the control socket and the tool, end to end.
 *
 * This program starts itself again as a "target" under `vramshim run
 * --vram-limit 256M` (a driver-API program that allocates 64M as owner unet
 * and 32M as itself, then takes commands on stdin), and drives the real tool
 * against it: ls, stats --json with fields equal to what the target did,
 * set (which the target then obeys, moving buffers to host memory), evict
 * and free (which move them and say how much), top (once, and live in a tmux terminal until q), and bad usage
 * of each. Then it speaks to the socket directly:
 * the directory and socket modes, malformed, oversized and silent requests
 * (an error or a closed connection, never a change), and, when run as root,
 * a client of another uid, which is refused.
 */
#include "check.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define M (1ULL << 20)

static char sock_dir[] = "/tmp/vramshim-ctl-XXXXXX";
static char tool[512];

/* ---- the target ---------------------------------------------------------- */
static int target(void)
{
    void *lib = check_libcuda();
    check_context(lib, 0);
    CUresult (*alloc)(CUdeviceptr *, size_t) = check_sym(lib, "cuMemAlloc_v2");
    CUdeviceptr a, b, c;
    CHECK(check_owner_push("unet") == 0, "push");
    CHECK_CU(alloc(&a, 64 * M));
    check_owner_pop();
    CHECK_CU(alloc(&b, 32 * M));
    /* a model's weights loaded from pageable memory: one fast copy */
    CUresult (*htod)(CUdeviceptr, const void *, size_t) = check_sym(lib, "cuMemcpyHtoD_v2");
    unsigned char *weights = calloc(1, 16 * M);
    CHECK_CU(htod(b, weights, 16 * M));
    free(weights);
    printf("ready %d\n", (int)getpid());
    fflush(stdout);
    char line[64];
    while (fgets(line, sizeof line, stdin)) {
        if (strncmp(line, "alloc ", 6) == 0) {
            CUresult rc = alloc(&c, strtoull(line + 6, NULL, 10) * M);
            printf("%d\n", (int)rc);
            fflush(stdout);
        }
    }
    return 0;
}

/* ---- the tester ---------------------------------------------------------- */
static FILE *to_target, *from_target;
static pid_t target_pid;

static void start_target(void)
{
    char self[512];
    ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
    CHECK(n > 0, "readlink");
    self[n] = '\0'; /* /proc/self/exe would be the tool once it runs */
    char *args[] = {tool, "run", "--vram-limit", "256M", "--", self, "target", NULL};
    check_spawn(tool, args, false, &to_target, &from_target);
    CHECK(fscanf(from_target, "ready %d", &target_pid) == 1, "the target did not start");
}

static int target_alloc(int mib)
{
    fprintf(to_target, "alloc %d\n", mib);
    fflush(to_target);
    int rc;
    CHECK(fscanf(from_target, "%d", &rc) == 1, "the target died");
    return rc;
}

/* Run the tool; its exit code, and its output in out. */
static int run_tool(char *out, size_t cap, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int run_tool(char *out, size_t cap, const char *fmt, ...)
{
    char args[1024], cmd[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(args, sizeof args, fmt, ap);
    va_end(ap);
    snprintf(cmd, sizeof cmd, "%s %s 2>&1", tool, args);
    return check_capture(cmd, out, cap);
}

static json_t *tool_stats(void)
{
    static char out[1 << 16];
    int code = run_tool(out, sizeof out, "stats --json %d", target_pid);
    CHECK(code == 0, "stats --json exit %d: %s", code, out);
    json_error_t err;
    json_t *st = json_loads(out, 0, &err);
    CHECK(st != NULL, "stats --json is not JSON (%s): %s", err.text, out);
    return st;
}

static void tool_commands(void)
{
    char out[1 << 16];
    /* ls lists the target */
    CHECK(run_tool(out, sizeof out, "ls") == 0, "ls: %s", out);
    char pid_text[32];
    snprintf(pid_text, sizeof pid_text, "\n%d ", target_pid);
    CHECK(strstr(out, pid_text) != NULL, "ls does not list %d: %s", target_pid, out);
    CHECK(run_tool(out, sizeof out, "ls --json") == 0, "ls --json");
    json_t *all = json_loads(out, 0, NULL);
    CHECK(json_is_array(all) && json_array_size(all) == 1, "ls --json: %s", out);
    CHECK_EQ_U64(json_integer_value(json_object_get(json_array_get(all, 0), "pid")), target_pid);
    json_decref(all);

    /* stats equal what the target did */
    json_t *st = tool_stats();
    CHECK_EQ_U64(stats_u64(st, "pid"), target_pid);
    CHECK_EQ_U64(stats_u64(st, "devices.0.allocated"), 96 * M);
    CHECK_EQ_U64(stats_u64(st, "counters.allocs"), 2);
    CHECK_EQ_U64(stats_u64(st, "counters.fast_copies"), 1);
    CHECK_EQ_U64(stats_u64(st, "counters.fast_copy_bytes"), 16 * M);
    CHECK_EQ_U64(stats_u64(st, "config.vram_limit.0"), 256 * M);
    check_owner(st, "unet", 0, 64 * M, 1);
    check_owner(st, "prog_control", 0, 32 * M, 1);
    json_decref(st);
    CHECK(run_tool(out, sizeof out, "stats %d", target_pid) == 0, "stats");
    CHECK(strstr(out, "owner unet") != NULL, "stats does not show unet: %s", out);

    /* metrics: parsed by the Prometheus client library's own parser */
    CHECK(run_tool(out, sizeof out, "metrics") == 0, "metrics: %s", out);
    CHECK(strstr(out, "# TYPE vramshim_allocs_total counter") != NULL, "metrics: %s", out);
    /* the target's fast copy: its sample line (after its labels) holds 16M */
    char sample[128];
    snprintf(sample, sizeof sample, "vramshim_fast_copy_bytes_total{pid=\"%d\",", target_pid);
    const char *line = strstr(out, sample);
    CHECK(line != NULL, "metrics, fast copies: %s", out);
    const char *eol = strchr(line, '\n');
    CHECK(eol && eol - line > 9 && strncmp(eol - 9, " 16777216", 9) == 0,
          "metrics, fast copy bytes: %.200s", line);
    snprintf(sample, sizeof sample, "vramshim_fast_copy_seconds_total{pid=\"%d\",", target_pid);
    CHECK(strstr(out, sample) != NULL, "metrics, fast copy time: %s", out);
    if (system("/usr/bin/python3 -c 'import prometheus_client' 2>/dev/null") == 0) {
        char cmd[1024];
        snprintf(cmd, sizeof cmd,
                 "%s metrics | /usr/bin/python3 %s/tests/integration/parse_metrics.py %d %llu unet %llu",
                 tool, getenv("VRAMSHIM_SRC"), target_pid, 96 * M, 64 * M);
        int rc = system(cmd);
        CHECK(rc == 0, "the Prometheus parser rejected the metrics (%d)", rc);
    } else {
        printf("skip the Prometheus parser: python3-prometheus-client is not installed\n");
    }

    /* set: the target obeys */
    CHECK(target_alloc(64) == CUDA_SUCCESS, "64M fits under 256M");
    CHECK(run_tool(out, sizeof out, "set %d vram_limit=128M idle_ms=500", target_pid) == 0,
          "set: %s", out);
    /* 160M held under a 128M limit: the next allocation moves buffers out */
    CHECK(target_alloc(1) == CUDA_SUCCESS, "the lowered limit is met by offload");
    st = tool_stats();
    CHECK_EQ_U64(stats_u64(st, "config.vram_limit.0"), 128 * M);
    CHECK_EQ_U64(stats_u64(st, "config.idle_ms"), 500);
    CHECK(stats_u64(st, "devices.0.resident") <= 128 * M, "resident over the new limit");
    CHECK(stats_u64(st, "devices.0.offloaded_pinned") >= 32 * M, "nothing moved");
    json_decref(st);
    CHECK(run_tool(out, sizeof out, "set %d vram_limit=12Q", target_pid) == 1,
          "a bad value is the target's refusal: %s", out);
    CHECK(strstr(out, "vram_limit") != NULL, "the refusal does not say why: %s", out);
    st = tool_stats();
    CHECK_EQ_U64(stats_u64(st, "config.vram_limit.0"), 128 * M); /* unchanged */
    json_decref(st);
    CHECK(run_tool(out, sizeof out, "set %d vram_limit=none", target_pid) == 0, "set none");
    CHECK(target_alloc(1) == CUDA_SUCCESS, "no limit any more");

    /* evict and free move the target's buffers and say how much */
    CHECK(run_tool(out, sizeof out, "free %d", target_pid) == 0, "free: %s", out);
    CHECK(strstr(out, "moved") != NULL, "free: %s", out);
    st = tool_stats();
    /* everything of a granule or more is on the host; the two 1M ones stay */
    CHECK_EQ_U64(stats_u64(st, "devices.0.resident"), 2 * M);
    CHECK_EQ_U64(stats_u64(st, "devices.0.offloaded_pinned"), 160 * M);
    json_decref(st);
    CHECK(target_alloc(64) == CUDA_SUCCESS, "64M more");
    CHECK(run_tool(out, sizeof out, "set %d idle_ms=0", target_pid) == 0, "set idle_ms");
    CHECK(run_tool(out, sizeof out, "evict %d --owner unet --bytes 1G", target_pid) == 0,
          "evict --owner: %s", out);
    CHECK(strstr(out, "moved 0.0 MiB") != NULL, "unet was already on the host: %s", out);
    /* a chunk (64M here) is the least that moves */
    CHECK(run_tool(out, sizeof out, "evict %d --bytes 2M", target_pid) == 0, "evict: %s", out);
    CHECK(strstr(out, "(67108864 bytes)") != NULL, "evict --bytes 2M: %s", out);
    CHECK(run_tool(out, sizeof out, "evict %d", target_pid) == 0, "evict: %s", out);
    CHECK(strstr(out, "(0 bytes)") != NULL, "nothing was left to move: %s", out);
    CHECK(run_tool(out, sizeof out, "evict %d --owner nobody", target_pid) == 1,
          "an unknown owner is refused: %s", out);
    CHECK(run_tool(out, sizeof out, "set %d offload=off", target_pid) == 0, "set offload");
    CHECK(run_tool(out, sizeof out, "free %d", target_pid) == 1, "free with offload off: %s", out);
    CHECK(strstr(out, "offload is off") != NULL, "free with offload off: %s", out);

    /* bad usage: 2 with a usage line; no such process: 3 */
    const char *usage2[] = {"stats", "stats abc", "stats --json", "stats 1 2", "ls --bogus",
                            "set", "set 1", "set abc x=1", "set 1 novalue", "set 1 =1",
                            "evict", "evict 1 --bytes lots", "evict 1 --owner", "free",
                            "free 1 2", "stats -5", "metrics extra", "top extra",
                            "top --interval 0", "top --interval", "devices extra",
                            "devices --jsn"};
    for (size_t i = 0; i < sizeof usage2 / sizeof usage2[0]; i++) {
        int code = run_tool(out, sizeof out, "%s", usage2[i]);
        CHECK(code == 2 && strstr(out, "usage: vramshim"), "'%s' exit %d: %s", usage2[i], code, out);
    }
    const char *absent[] = {"stats 999999", "set 999999 idle_ms=1", "evict 999999", "free 999999"};
    for (size_t i = 0; i < sizeof absent / sizeof absent[0]; i++) {
        int code = run_tool(out, sizeof out, "%s", absent[i]);
        CHECK(code == 3, "'%s' exit %d: %s", absent[i], code, out);
    }
    const char *helps[] = {"ls --help", "stats --help", "set --help", "evict --help",
                           "free --help", "metrics --help", "top --help", "devices --help"};
    for (size_t i = 0; i < sizeof helps / sizeof helps[0]; i++)
        CHECK(run_tool(out, sizeof out, "%s", helps[i]) == 0 && strstr(out, "usage: vramshim"),
              "'%s'", helps[i]);
}

/* ---- top, drawn in a real terminal ------------------------------------------ */
/* Run a shell command (with the tool's socket directory, without the
 * preload) and return its output. */
static int shell(char *out, size_t cap, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int shell(char *out, size_t cap, const char *fmt, ...)
{
    char cmd[2048], line[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    snprintf(cmd, sizeof cmd, "env -u LD_PRELOAD sh -c '%s' 2>&1", line);
    return check_capture(cmd, out, cap);
}

/* Capture the tmux pane until it shows `want`; false after ten seconds. */
static bool pane_shows(const char *want, char *pane, size_t cap)
{
    for (int i = 0; i < 200; i++) {
        shell(pane, cap, "tmux -L vramshim-check capture-pane -p -t top");
        if (strstr(pane, want) != NULL)
            return true;
        struct timespec ts = {0, 50 * 1000 * 1000}; /* a frame is redrawn each second */
        nanosleep(&ts, NULL);
    }
    return false;
}

static void top_checks(void)
{
    char out[1 << 14], row[128];
    /* the one-frame form, as scripts read it */
    CHECK(run_tool(out, sizeof out, "top --once") == 0, "top --once: %s", out);
    snprintf(row, sizeof row, "\n%d ", target_pid);
    CHECK(strstr(out, row) && strstr(out, "96.0M") && strstr(out, "256.0M") &&
              strstr(out, "unet 64.0M, prog_control 32.0M"),
          "top --once: %s", out);
    snprintf(row, sizeof row, "\n%-8d loaded 16.0M in 1 fast copies, ", target_pid);
    CHECK(strstr(out, row) && strstr(out, " GB/s"), "top --once, fast copies: %s", out);
    if (shell(out, sizeof out, "tmux -V") != 0) {
        printf("skip top in tmux: tmux is not installed\n");
        return;
    }
    /* the live form: a shell in a 140x30 terminal runs top, then says how it
     * ended and whether the terminal is back in canonical mode */
    shell(out, sizeof out, "tmux -L vramshim-check kill-server");
    CHECK(shell(out, sizeof out,
                "tmux -L vramshim-check -f /dev/null new-session -d -s top -x 140 -y 30 "
                "\"VRAMSHIM_SOCKET_DIR=%s %s top; echo top-exit=\\$?; stty -a; echo stty-done; sleep 600\"",
                sock_dir, tool) == 0,
          "tmux: %s", out);
    char pane[1 << 14];
    CHECK(pane_shows("(q quits)", pane, sizeof pane), "top did not draw: %s", pane);
    CHECK(pane_shows("unet 64.0M, prog_control 32.0M", pane, sizeof pane), "top: %s", pane);
    CHECK(strstr(pane, row + 1) != NULL, "top does not show pid %d: %s", target_pid, pane);
    CHECK(strstr(pane, "EVICT/S") && strstr(pane, "OFFLOADED"), "top's columns: %s", pane);
    shell(out, sizeof out, "tmux -L vramshim-check send-keys -t top q");
    CHECK(pane_shows("top-exit=0", pane, sizeof pane), "q did not quit top: %s", pane);
    /* stty's lines come after: wait for them, not only for the exit line */
    CHECK(pane_shows("stty-done", pane, sizeof pane), "stty did not run: %s", pane);
    CHECK(strstr(pane, " icanon") && strstr(pane, " echo"), "top left the terminal raw: %s", pane);
    shell(out, sizeof out, "tmux -L vramshim-check kill-server");
}

/* ---- the socket itself ----------------------------------------------------- */
static char sock_path[108];

static int connect_socket(void)
{
    struct sockaddr_un addr = {.sun_family = AF_UNIX};
    memcpy(addr.sun_path, sock_path, sizeof addr.sun_path);
    int fd = socket(AF_UNIX, SOCK_STREAM, 0);
    CHECK(fd >= 0, "socket");
    if (connect(fd, (struct sockaddr *)&addr, sizeof addr) != 0) {
        int e = errno;
        close(fd);
        return -e;
    }
    return fd;
}

/* Send raw bytes, read the whole answer until the server closes. */
static void raw(const void *req, size_t len, char *out, size_t cap)
{
    int fd = connect_socket();
    CHECK(fd >= 0, "connect: %s", strerror(-fd));
    if (len)
        CHECK(send(fd, req, len, MSG_NOSIGNAL) == (ssize_t)len, "send");
    size_t used = 0;
    ssize_t r;
    while (used + 1 < cap && (r = recv(fd, out + used, cap - 1 - used, 0)) > 0)
        used += (size_t)r;
    out[used] = '\0';
    close(fd);
}

static void socket_checks(void)
{
    check_sock_path(sock_dir, target_pid, sock_path, sizeof sock_path);
    struct stat st;
    CHECK(stat(sock_dir, &st) == 0 && (st.st_mode & 0777) == 0700, "directory mode %o",
          st.st_mode & 0777);
    CHECK(stat(sock_path, &st) == 0 && S_ISSOCK(st.st_mode) && (st.st_mode & 0777) == 0600,
          "socket mode %o", st.st_mode & 0777);

    char out[4096];
    const char *bad[] = {"garbage\n", "{\"cmd\":\"reboot\"}\n", "{\"cmd\":\"set\"}\n",
                         "{\"cmd\":\"stats\",\"x\":1}\n", "\n"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        raw(bad[i], strlen(bad[i]), out, sizeof out);
        CHECK(strstr(out, "\"ok\":false") != NULL, "'%s' answered: %s", bad[i], out);
    }
    char big[6000];
    memset(big, 'x', sizeof big);
    raw(big, sizeof big, out, sizeof out); /* no newline within the limit */
    CHECK(out[0] == '\0' || strstr(out, "\"ok\":false"), "oversized answered: %s", out);
    raw(NULL, 0, out, sizeof out); /* silent: cut off at the deadline */
    CHECK(strstr(out, "\"ok\":false") != NULL, "a silent client: %s", out);
    /* still serving, nothing changed */
    json_t *s = tool_stats();
    CHECK(json_is_null(json_array_get(json_object_get(json_object_get(s, "config"), "vram_limit"), 0)),
          "a bad request changed the limit");
    json_decref(s);

    if (getuid() != 0) {
        printf("skip another uid: not root\n");
        return;
    }
    /* Another user: open the way in (as root), then connect as nobody. */
    chmod(sock_dir, 0755);
    chmod(sock_path, 0666);
    pid_t child = fork();
    if (child == 0) {
        if (setgid(65534) != 0 || setuid(65534) != 0)
            _exit(10);
        int fd = connect_socket();
        if (fd < 0)
            _exit(11);
        const char req[] = "{\"cmd\":\"set\",\"key\":\"vram_limit\",\"value\":\"1M\"}\n";
        send(fd, req, sizeof req - 1, MSG_NOSIGNAL);
        char ans[512] = "";
        ssize_t r = recv(fd, ans, sizeof ans - 1, 0);
        _exit(r > 0 && strstr(ans, "permission denied") ? 0 : 12);
    }
    int status;
    waitpid(child, &status, 0);
    chmod(sock_dir, 0700);
    chmod(sock_path, 0600);
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0, "another uid was not refused (%d)",
          WEXITSTATUS(status));
    s = tool_stats();
    CHECK(json_is_null(json_array_get(json_object_get(json_object_get(s, "config"), "vram_limit"), 0)),
          "another uid changed the limit");
    json_decref(s);
}

int main(int argc, char **argv)
{
    if (argc > 1 && strcmp(argv[1], "target") == 0)
        return target();
    if (getenv("CHECK_REEXECED") == NULL) {
        CHECK(mkdtemp(sock_dir) != NULL, "mkdtemp");
        rmdir(sock_dir); /* the library makes it, with its mode */
        char var[128];
        snprintf(var, sizeof var, "VRAMSHIM_SOCKET_DIR=%s", sock_dir);
        const char *env[] = {var, NULL};
        check_reexec_env(argv, env);
    }
    snprintf(sock_dir, sizeof sock_dir, "%s", getenv("VRAMSHIM_SOCKET_DIR"));
    snprintf(tool, sizeof tool, "%s/tools/vramshim", getenv("VRAMSHIM_BUILD"));
    start_target();
    top_checks();
    tool_commands();
    socket_checks();
    fclose(to_target);
    int status;
    waitpid(-1, &status, 0);
    CHECK(access(sock_path, F_OK) != 0, "the socket outlived its process");
    rmdir(sock_dir);
    printf("control: ok\n");
    return 0;
}
