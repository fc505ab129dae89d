/*
 * prog_relief_more: relief (issue 15) beyond the plain cuMemAlloc and one
 * user's own socket directory, with the workers of relief_workers.c on one
 * 64 MiB test device:
 *
 *   1. kinds: for managed, pitched, stream-ordered (cuMemAllocAsync) and
 *      program-VMM (cuMemCreate) allocations, A fills the device and goes
 *      idle; B allocates by that kind past what is free and succeeds
 *      because A gave; every byte of both intact, the device never over.
 *      (A 64 MiB device, 8 MiB buffers: the shape of prog_relief's 256
 *      MiB and 32 MiB, a quarter of the bytes to fill and check.)
 *   2. group: a socket directory shared by a group (root's, 02770, group
 *      TEAM) and two workers running as two other users, both in TEAM:
 *      their sockets are the group's (0660); B gets room from A across the
 *      user boundary; a member may read A's stats and devices through the
 *      tool but not steer it (evict, set: "permission denied"); a user
 *      outside the group is refused even when the way in is opened for it;
 *      a directory open to others gets a worker no socket, and it runs on.
 *      (Needs root to be other users; skipped with a line otherwise.)
 *
 * By hand: `prog_relief_more kinds` or `prog_relief_more group`.
 */
#define _GNU_SOURCE 1
#include "relief_workers.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <grp.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#define TEAM 47300 /* the group; no name needed: the kernel knows numbers */
#define UID_A 47301
#define UID_B 47302
#define UID_STRANGER 47303

/* ---- 1. every kind of allocation asks peers -------------------------------------- */
static void kind(const char *name)
{
    /* three quarters of the device in six buffers of A; B then asks for
     * three of them. Whole granules (2 MiB) everywhere, so every kind,
     * cuMemCreate's included, takes the sizes as they are. */
    dev_mem = "64M";
    scenario();
    struct worker a, b;
    start(&a, "A", (const char *const[]){"VRAMSHIM_IDLE_MS=0", NULL});
    start(&b, "B", (const char *const[]){"VRAMSHIM_IDLE_MS=86400000", NULL});
    for (int i = 0; i < 6; i++)
        ask_ok(&a, "a 8");
    wait_tick();
    /* 16M free: the driver refuses 24M until A gives */
    char *got = ask(&b, "a 24 %s", name);
    CHECK(strcmp(got, "ok") == 0, "%s: B's allocation got %s", name, got);
    CHECK_EQ_U64(offloaded(&a), 24 * M); /* what B asked for, no more */
    CHECK_EQ_U64(stat_of(&a, "counters.relief_given"), 1);
    CHECK_EQ_U64(stat_of(&b, "counters.relief_taken"), 1);
    CHECK(strtoull(ask(&b, "u"), NULL, 10) <= 64 * M, "%s: over the device", name);
    ask_ok(&b, "c");
    /* B lets go; A reads every byte, back on the device */
    ask_ok(&b, "f");
    ask_ok(&a, "c");
    stop(&a);
    stop(&b);
    scenario_end();
    printf("relief: %s allocations: ok\n", name);
}

static void kinds(void)
{
    kind("managed");
    kind("pitch");
    kind("async");
    kind("vmm");
}

/* ---- 2. a socket directory shared by a group --------------------------------------- */

/* The tool as another user in TEAM: its exit status, its output in out. */
static int tool_as(uid_t uid, char *out, size_t cap, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static int tool_as(uid_t uid, char *out, size_t cap, const char *fmt, ...)
{
    char args[128], cmd[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(args, sizeof args, fmt, ap);
    va_end(ap);
    snprintf(cmd, sizeof cmd,
             "setpriv --reuid=%u --regid=%u --groups=%u env -u LD_PRELOAD "
             "VRAMSHIM_SOCKET_DIR=%s %s/tools/vramshim %s 2>&1",
             (unsigned)uid, (unsigned)uid, TEAM, sock_dir, getenv("VRAMSHIM_BUILD"), args);
    return check_capture(cmd, out, cap);
}

/* One request to the socket at path from a process running as uid (in no
 * group but its own): the answer line, or "" when it could not connect. */
static void raw_as(uid_t uid, const char *path, const char *request, char *out, size_t cap)
{
    int fds[2];
    CHECK(pipe(fds) == 0, "pipe");
    pid_t child = fork();
    CHECK(child >= 0, "fork");
    if (child == 0) {
        close(fds[0]);
        if (setgroups(0, NULL) != 0 || setgid((gid_t)uid) != 0 || setuid(uid) != 0)
            _exit(10);
        struct sockaddr_un addr = {.sun_family = AF_UNIX};
        snprintf(addr.sun_path, sizeof addr.sun_path, "%s", path);
        int fd = socket(AF_UNIX, SOCK_STREAM, 0);
        if (fd < 0 || connect(fd, (struct sockaddr *)&addr, sizeof addr) != 0)
            _exit(0);
        /* a server that refuses answers at once and closes: the send may
         * fail, the answer is still there to read */
        ssize_t sent = send(fd, request, strlen(request), MSG_NOSIGNAL);
        (void)sent;
        char ans[512];
        ssize_t r = recv(fd, ans, sizeof ans, 0);
        if (r > 0 && write(fds[1], ans, (size_t)r) != r)
            _exit(12);
        _exit(0);
    }
    close(fds[1]);
    size_t n = 0;
    ssize_t r;
    while (n < cap - 1 && (r = read(fds[0], out + n, cap - 1 - n)) > 0)
        n += (size_t)r;
    out[n] = '\0';
    close(fds[0]);
    int status;
    CHECK(waitpid(child, &status, 0) == child && WIFEXITED(status) &&
              WEXITSTATUS(status) == 0,
          "the request as uid %u failed (status %d)", (unsigned)uid, status);
}

static void group_dir(void)
{
    if (getuid() != 0) {
        printf("relief: group directory: skipped (not root: it needs other users)\n");
        return;
    }
    dev_mem = "64M"; /* as in kinds: a quarter of prog_relief's device */
    scenario();
    CHECK(chown(sock_dir, 0, TEAM) == 0 && chmod(sock_dir, 02770) == 0, "chown %s", sock_dir);
    /* the test device's shared segment, open to the workers' users */
    int shm = shm_open(shm_name, O_RDWR | O_CREAT, 0666);
    CHECK(shm >= 0 && fchmod(shm, 0666) == 0, "shm_open %s", shm_name);
    close(shm);
    char as_a[64], as_b[64];
    snprintf(as_a, sizeof as_a, "RELIEF_TEST_AS=%u:%u:%u", UID_A, UID_A, TEAM);
    snprintf(as_b, sizeof as_b, "RELIEF_TEST_AS=%u:%u:%u", UID_B, UID_B, TEAM);
    struct worker a, b;
    start(&a, "A", (const char *const[]){as_a, "VRAMSHIM_IDLE_MS=0", NULL});
    start(&b, "B", (const char *const[]){as_b, "VRAMSHIM_IDLE_MS=86400000", NULL});
    for (int i = 0; i < 6; i++)
        ask_ok(&a, "a 8");
    wait_tick();

    /* each socket is its maker's and the group's */
    char path_a[128], path_b[128];
    check_sock_path(sock_dir, a.pid, path_a, sizeof path_a);
    check_sock_path(sock_dir, b.pid, path_b, sizeof path_b);
    struct stat st;
    CHECK(lstat(path_a, &st) == 0 && S_ISSOCK(st.st_mode) && st.st_uid == UID_A &&
              st.st_gid == TEAM && (st.st_mode & 0777) == 0660,
          "A's socket: uid %u gid %u mode %o", (unsigned)st.st_uid, (unsigned)st.st_gid,
          (unsigned)(st.st_mode & 0777));
    CHECK(lstat(path_b, &st) == 0 && st.st_uid == UID_B && st.st_gid == TEAM,
          "B's socket");

    /* B, another user, gets room from A */
    ask_ok(&b, "a 24");
    CHECK_EQ_U64(offloaded(&a), 24 * M);
    CHECK_EQ_U64(stat_of(&a, "counters.relief_bytes_given"), 24 * M);
    CHECK_EQ_U64(stat_of(&b, "counters.relief_bytes_taken"), 24 * M);
    CHECK(strtoull(ask(&b, "u"), NULL, 10) <= 64 * M, "over the device");
    ask_ok(&b, "c");

    /* a member reads; it does not steer */
    static char out[1 << 16];
    int code = tool_as(UID_B, out, sizeof out, "devices --json");
    char pid_a[32];
    snprintf(pid_a, sizeof pid_a, "\"pid\":%d,", (int)a.pid);
    CHECK(code == 0 && strstr(out, pid_a), "devices as a member: %d %s", code, out);
    code = tool_as(UID_B, out, sizeof out, "stats --json %d", (int)a.pid);
    CHECK(code == 0 && strstr(out, "relief_bytes_given"), "stats as a member: %d %s", code,
          out);
    code = tool_as(UID_B, out, sizeof out, "evict %d", (int)a.pid);
    CHECK(code != 0 && strstr(out, "permission denied"), "evict as a member: %d %s", code, out);
    code = tool_as(UID_B, out, sizeof out, "set %d vram_limit=1M", (int)a.pid);
    CHECK(code != 0 && strstr(out, "permission denied"), "set as a member: %d %s", code, out);
    CHECK_EQ_U64(offloaded(&a), 24 * M); /* nothing more moved */

    /* a user outside the group: the directory keeps it out; with the way
     * in opened (as root), A's server refuses it all the same */
    char ans[512];
    raw_as(UID_STRANGER, path_a, "{\"cmd\":\"stats\"}\n", ans, sizeof ans);
    CHECK(ans[0] == '\0', "a stranger reached A's socket: %s", ans);
    CHECK(chmod(sock_dir, 02771) == 0 && chmod(path_a, 0666) == 0, "chmod");
    raw_as(UID_STRANGER, path_a, "{\"cmd\":\"stats\"}\n", ans, sizeof ans);
    CHECK(strstr(ans, "permission denied") && strstr(ans, "group"), "a stranger: %s", ans);
    raw_as(UID_STRANGER, path_a, "{\"cmd\":\"relieve\",\"uuid\":\"x\",\"priority\":0,"
           "\"bytes\":1}\n", ans, sizeof ans);
    CHECK(strstr(ans, "permission denied"), "a stranger asked for relief: %s", ans);
    CHECK(chmod(sock_dir, 02770) == 0 && chmod(path_a, 0660) == 0, "chmod");

    ask_ok(&b, "f");
    ask_ok(&a, "c");
    stop(&a);
    stop(&b);

    /* open to others: a worker starts with no socket, and runs */
    CHECK(chmod(sock_dir, 02777) == 0, "chmod");
    struct worker c;
    start(&c, "C", (const char *const[]){as_a, NULL});
    ask_ok(&c, "a 8");
    ask_ok(&c, "c");
    char path_c[128];
    check_sock_path(sock_dir, c.pid, path_c, sizeof path_c);
    CHECK(lstat(path_c, &st) != 0 && errno == ENOENT, "a socket in a directory open to all");
    stop(&c);
    scenario_end();
    printf("relief: group directory: ok\n");
}

int main(int argc, char **argv)
{
    static const struct relief_scenario all[] = {{"kinds", kinds}, {"group", group_dir}};
    return relief_main(argc, argv, all, sizeof all / sizeof all[0], "relief more");
}
