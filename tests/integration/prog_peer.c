/*
 * prog_peer: the control plane attacked from the same machine (issue 18).
 *
 * Hostile servers, forked from this program, sit where a vramshim process's
 * socket would be and answer as an attacker would; the tool and the
 * importer (cuIpcOpenMemHandle) must refuse them:
 *   1. an answer whose layout does not fit the handle (2 MiB for 8 MiB) is
 *      refused; control characters in a server's strings never reach the
 *      terminal raw; an endless or dripping answer ends at the size cap or
 *      the deadline;
 *   2. (root) a socket directory another user made first, 0777, with a
 *      socket of theirs in it: the tool and the importer refuse it and
 *      never connect; a socket planted in our directory while it was open
 *      is removed by the server that starts there, and a foreign entry is
 *      never used by the tool;
 *   4. (root) two pid namespaces' pid 1 sharing a directory keep a socket
 *      each, the tool says which namespace a process is in and does not
 *      guess between two, and a sweep removes only what refuses a connect;
 *   5. ten idle connections cost another client nothing; an accept error
 *      (no descriptors left) pauses the server, which then serves again;
 *      the importer's connect to a server that never accepts has a
 *      deadline;
 *   6. failed share attempts are counted in the stats and rate-limited.
 * The cross-user cases create a throwaway user (useradd) when run as root,
 * and are skipped with a line saying so otherwise.
 */
#include "check.h"

#include <errno.h>
#include <fcntl.h>
#include <pwd.h>
#include <signal.h>
#include <stdarg.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define M (1ULL << 20)

static struct check_driver d;
static CUresult (*get_handle)(CUipcMemHandle *, CUdeviceptr);
static CUresult (*open_handle)(CUdeviceptr *, CUipcMemHandle, unsigned);
static char tool[512];
static const char *sock_dir;

/* The handle as ipc.c lays it out: magic, pid, device, base, size, token. */
struct ipc_handle {
    char magic[8];
    int32_t pid, dev;
    uint64_t base, size, token;
};

static void open_driver(void)
{
    check_driver_open(&d);
    get_handle = check_sym(d.lib, "cuIpcGetMemHandle");
    open_handle = check_sym(d.lib, "cuIpcOpenMemHandle_v2");
}

/* The tool with a socket directory; exit code, output (stdout and stderr). */
static int run_tool(const char *dir, char *out, size_t cap, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static int run_tool(const char *dir, char *out, size_t cap, const char *fmt, ...)
{
    char args[512], cmd[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(args, sizeof args, fmt, ap);
    va_end(ap);
    /* timeout only bounds a hang of the code under test */
    snprintf(cmd, sizeof cmd, "env -u LD_PRELOAD VRAMSHIM_SOCKET_DIR=%s timeout 60 %s %s 2>&1",
             dir, tool, args);
    return check_capture(cmd, out, cap);
}

/* ---- hostile servers ---------------------------------------------------------- */

struct fake {
    pid_t pid;
    int accepted; /* read end: one byte per connection accepted */
    char path[108];
};

static void send_with_fd(int fd, const char *line, int passed)
{
    union {
        char space[CMSG_SPACE(sizeof(int))];
        struct cmsghdr align;
    } ctl;
    memset(&ctl, 0, sizeof ctl);
    struct iovec iov = {(void *)line, strlen(line)};
    struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = ctl.space,
                         .msg_controllen = sizeof ctl.space};
    struct cmsghdr *c = CMSG_FIRSTHDR(&msg);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int));
    memcpy(CMSG_DATA(c), &passed, sizeof passed);
    sendmsg(fd, &msg, MSG_NOSIGNAL);
}

/* Serve one connection as `mode` says. */
static void fake_answer(int fd, const char *mode)
{
    char req[4096];
    ssize_t r = recv(fd, req, sizeof req, 0);
    (void)r;
    if (strcmp(mode, "layout") == 0) {
        /* 2 MiB of the attacker's memory, announced for an 8 MiB handle */
        int mem = memfd_create("attacker", 0);
        if (mem < 0 || ftruncate(mem, 2 * M) != 0)
            _exit(12);
        unsigned char *p = mmap(NULL, 2 * M, PROT_WRITE, MAP_SHARED, mem, 0);
        if (p != MAP_FAILED)
            memset(p, 0xaa, 2 * M);
        send_with_fd(fd,
                     "{\"ok\":true,\"size\":8388608,\"span\":2097152,\"gran\":2097152,"
                     "\"chunk\":67108864,\"n\":1}\n",
                     mem);
    } else if (strcmp(mode, "escape") == 0) {
        char line[512];
        snprintf(line, sizeof line,
                 "{\"ok\":true,\"hello\":{\"pid\":%d,\"cmd\":\"\\u001b]0;owned\\u0007\\u001b[2J"
                 "\\u009b31m\",\"uptime_s\":1,\"devices\":[]},\"stats\":{\"pid\":%d,"
                 "\"cmd\":\"\\u001b[2J\",\"devices\":[],\"owners\":[{\"name\":\"\\u001b[31mred\","
                 "\"device\":0}]}}\n",
                 (int)getpid(), (int)getpid());
        send(fd, line, strlen(line), MSG_NOSIGNAL);
    } else if (strcmp(mode, "flood") == 0) { /* no newline, ever */
        static char junk[1 << 16];
        memset(junk, 'x', sizeof junk);
        send(fd, "{\"ok\":true,\"cmd\":\"", 18, MSG_NOSIGNAL);
        while (send(fd, junk, sizeof junk, MSG_NOSIGNAL) > 0)
            ;
    } else if (strcmp(mode, "drip") == 0) { /* a byte now and then, forever */
        send(fd, "{\"ok\":true,\"cmd\":\"", 18, MSG_NOSIGNAL);
        struct timespec ts = {0, 200 * 1000 * 1000};
        while (send(fd, "x", 1, MSG_NOSIGNAL) > 0)
            nanosleep(&ts, NULL);
    }
}

/* Fork a server bound to <its pid>.sock in dir, as uid when uid > 0. With
 * backlog < 0 it listens (backlog 0) and never accepts. */
static struct fake fake_start(const char *dir, const char *mode, uid_t uid, int backlog)
{
    int ready[2], acc[2];
    CHECK(pipe(ready) == 0 && pipe(acc) == 0, "pipe");
    struct fake f = {.accepted = acc[0]};
    f.pid = fork();
    CHECK(f.pid >= 0, "fork");
    if (f.pid == 0) { /* no CHECK here: its exit would run the test's atexit */
        setpgid(0, 0);
        if (uid > 0 && (setgid(uid) != 0 || setuid(uid) != 0))
            _exit(10);
        /* a failed test leaves no server behind (set after setuid, which
         * clears it) */
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        struct sockaddr_un addr = {.sun_family = AF_UNIX};
        check_sock_path(dir, getpid(), addr.sun_path, sizeof addr.sun_path);
        int l = socket(AF_UNIX, SOCK_STREAM, 0);
        if (bind(l, (struct sockaddr *)&addr, sizeof addr) != 0 ||
            chmod(addr.sun_path, 0777) != 0 || listen(l, backlog < 0 ? 0 : 16) != 0)
            _exit(11);
        if (write(ready[1], "r", 1) != 1)
            _exit(12);
        if (backlog < 0)
            pause();
        for (;;) {
            int c = accept(l, NULL, NULL);
            if (c < 0)
                continue;
            if (write(acc[1], "a", 1) != 1)
                _exit(12);
            if (fork() == 0) {
                prctl(PR_SET_PDEATHSIG, SIGKILL);
                fake_answer(c, mode);
                _exit(0);
            }
            close(c);
        }
    }
    close(acc[1]);
    close(ready[1]);
    char b;
    CHECK(read(ready[0], &b, 1) == 1, "the fake server did not start");
    close(ready[0]);
    check_sock_path(dir, f.pid, f.path, sizeof f.path);
    return f;
}

/* Stop it; the number of connections it accepted. */
static int fake_stop(struct fake *f)
{
    kill(-f->pid, SIGKILL);
    kill(f->pid, SIGKILL);
    waitpid(f->pid, NULL, 0);
    unlink(f->path);
    int n = 0;
    char b;
    fcntl(f->accepted, F_SETFL, O_NONBLOCK);
    while (read(f->accepted, &b, 1) == 1)
        n++;
    close(f->accepted);
    return n;
}

/* ---- 1: hostile answers, same user ------------------------------------------- */

static CUipcMemHandle handle_for(CUipcMemHandle real, pid_t pid)
{
    struct ipc_handle h;
    memcpy(&h, real.reserved, sizeof h);
    h.pid = (int32_t)pid;
    memcpy(real.reserved, &h, sizeof h);
    return real;
}

static void hostile_answers(CUipcMemHandle real)
{
    struct fake f = fake_start(sock_dir, "layout", 0, 16);
    CUdeviceptr p = 0;
    CUresult rc = open_handle(&p, handle_for(real, f.pid), CU_IPC_MEM_LAZY_ENABLE_PEER_ACCESS);
    CHECK(rc == CUDA_ERROR_INVALID_VALUE, "2 MiB answered for an 8 MiB handle was mapped (%d)",
          (int)rc);
    CHECK(fake_stop(&f) == 1, "the importer did not ask");

    char out[1 << 16];
    f = fake_start(sock_dir, "escape", 0, 16);
    CHECK(run_tool(sock_dir, out, sizeof out, "ls") == 0, "ls: %s", out);
    CHECK(strchr(out, '\033') == NULL && strstr(out, "\xc2\x9b") == NULL,
          "ls printed a server's control characters raw: %s", out);
    CHECK(strstr(out, "\\x1b]0;owned") != NULL, "ls does not show them escaped: %s", out);
    run_tool(sock_dir, out, sizeof out, "stats %d", (int)f.pid);
    CHECK(strchr(out, '\033') == NULL, "stats printed control characters raw: %s", out);
    fake_stop(&f);

    const char *modes[] = {"flood", "drip"};
    for (int i = 0; i < 2; i++) {
        f = fake_start(sock_dir, modes[i], 0, 16);
        int code = run_tool(sock_dir, out, sizeof out, "stats %d", (int)f.pid);
        CHECK(code == 1 && strstr(out, "no valid answer"),
              "an endless answer (%s): exit %d: %.300s", modes[i], code, out);
        fake_stop(&f);
    }
}

/* ---- 5: many clients, accept errors, connect deadline -------------------------- */

static int connect_path(const char *path)
{
    struct sockaddr_un addr = {.sun_family = AF_UNIX};
    snprintf(addr.sun_path, sizeof addr.sun_path, "%s", path);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0);
    CHECK(fd >= 0, "socket");
    if (connect(fd, (struct sockaddr *)&addr, sizeof addr) != 0) {
        close(fd);
        return -1;
    }
    return fd;
}

static void many_clients(void)
{
    char path[256], out[1 << 16];
    check_sock_path(sock_dir, getpid(), path, sizeof path);
    int idle[10];
    for (int i = 0; i < 10; i++)
        CHECK((idle[i] = connect_path(path)) >= 0, "connect %d", i);
    /* the server holds ten silent clients for 2 s each; this one is answered
     * now (the tool's deadline is 5 s, which one server at a time missed) */
    int code = run_tool(sock_dir, out, sizeof out, "stats --json %d", (int)getpid());
    CHECK(code == 0, "stats with ten idle clients: exit %d: %s", code, out);
    CHECK(run_tool(sock_dir, out, sizeof out, "ls") == 0 && strstr(out, "prog_peer"),
          "ls with ten idle clients: %s", out);
    for (int i = 0; i < 10; i++)
        close(idle[i]);
}

/* A target under vramshim whose descriptors run out, then come back. */
static void accept_errors(char **argv)
{
    char log[256];
    snprintf(log, sizeof log, "%s.log", sock_dir);
    setenv("VRAMSHIM_LOG_FILE", log, 1);
    setenv("VRAMSHIM_LOG", "warn", 1);
    char *args[] = {argv[0], "target", NULL};
    FILE *to, *from;
    pid_t t = check_spawn("/proc/self/exe", args, false, &to, &from);
    unsetenv("VRAMSHIM_LOG_FILE");
    setenv("VRAMSHIM_LOG", "error", 1);
    int ready;
    CHECK(fscanf(from, "ready %d", &ready) == 1, "the target did not start");
    /* a limit at its lowest free descriptor: accept fails with EMFILE */
    int open_fds = 0;
    char fd_path[64], out[4096];
    do
        snprintf(fd_path, sizeof fd_path, "/proc/%d/fd/%d", (int)t, ++open_fds);
    while (access(fd_path, F_OK) == 0 || errno != ENOENT);
    struct rlimit old;
    CHECK(prlimit(t, RLIMIT_NOFILE, NULL, &old) == 0, "prlimit: %s", strerror(errno));
    struct rlimit low = {(rlim_t)open_fds, old.rlim_max};
    CHECK(prlimit(t, RLIMIT_NOFILE, &low, NULL) == 0, "prlimit: %s", strerror(errno));
    char path[256];
    check_sock_path(sock_dir, t, path, sizeof path);
    int c = connect_path(path);
    CHECK(c >= 0, "connect to the target");
    /* wait for the server to meet the error (its log line), not for a time */
    bool said = false;
    for (int i = 0; i < 6000 && !said; i++) {
        FILE *l = fopen(log, "r");
        char line[512];
        while (l && fgets(line, sizeof line, l))
            said = said || strstr(line, "accept failed");
        if (l)
            fclose(l);
        if (!said) {
            struct timespec ts = {0, 10 * 1000 * 1000};
            nanosleep(&ts, NULL);
        }
    }
    CHECK(said, "the server never met the accept error");
    close(c);
    CHECK(prlimit(t, RLIMIT_NOFILE, &old, NULL) == 0, "prlimit back: %s", strerror(errno));
    int code = run_tool(sock_dir, out, sizeof out, "stats --json %d", (int)t);
    CHECK(code == 0, "the server stopped after an accept error: exit %d: %s", code, out);
    fclose(to);
    waitpid(t, NULL, 0);
    fclose(from);
}

/* The importer asks a server that never accepts: it gives up in time. */
static void connect_deadline(CUipcMemHandle real)
{
    struct fake f = fake_start(sock_dir, "", 0, -1);
    int fill[8], n = 0;
    while (n < 8 && (fill[n] = connect_path(f.path)) >= 0)
        n++; /* until the backlog is full */
    CHECK(n < 8, "the backlog never filled");
    CUdeviceptr p;
    CUresult rc = open_handle(&p, handle_for(real, f.pid), 0);
    CHECK(rc == CUDA_ERROR_INVALID_VALUE, "open through a full backlog: %d", (int)rc);
    for (int i = 0; i < n; i++)
        close(fill[i]);
    fake_stop(&f);
}

/* ---- 6: failed share attempts ----------------------------------------------------- */

static void share_attempts(CUipcMemHandle real)
{
    struct ipc_handle h;
    memcpy(&h, real.reserved, sizeof h);
    char path[256], req[256], ans[512];
    check_sock_path(sock_dir, getpid(), path, sizeof path);
    int busy = 0;
    for (int i = 0; i < 30; i++) {
        int fd = connect_path(path);
        CHECK(fd >= 0, "connect");
        fcntl(fd, F_SETFL, 0);
        int n = snprintf(req, sizeof req, "{\"cmd\":\"share\",\"base\":%llu,\"token\":%llu}\n",
                         (unsigned long long)h.base, (unsigned long long)(h.token ^ (i + 1)));
        CHECK(send(fd, req, (size_t)n, MSG_NOSIGNAL) == n, "send");
        ssize_t r = recv(fd, ans, sizeof ans - 1, 0);
        CHECK(r > 0, "no answer");
        ans[r] = '\0';
        CHECK(strstr(ans, "\"ok\":false"), "a wrong token was accepted: %s", ans);
        busy += strstr(ans, "too many failed") != NULL;
        close(fd);
    }
    CHECK(busy > 0, "thirty wrong tokens in a row were all examined");
    json_t *st = stats_get();
    CHECK_EQ_U64(stats_u64(st, "counters.share_refused"), 30);
    json_decref(st);
}

/* ---- 1 and 2 across users ------------------------------------------------------ */

static char other_user[32];
static void remove_user(void)
{
    char cmd[128];
    snprintf(cmd, sizeof cmd, "userdel -f %s >/dev/null 2>&1", other_user);
    if (system(cmd) != 0)
        fprintf(stderr, "could not remove the user %s\n", other_user);
}

static uid_t make_user(void)
{
    snprintf(other_user, sizeof other_user, "vsq%d", (int)getpid());
    char cmd[256];
    snprintf(cmd, sizeof cmd,
             "useradd --system --no-create-home --shell /usr/sbin/nologin %s 2>&1", other_user);
    if (system(cmd) != 0)
        return 0;
    atexit(remove_user);
    struct passwd *pw = getpwnam(other_user);
    CHECK(pw != NULL, "getpwnam %s", other_user);
    return pw->pw_uid;
}

/* The throwaway user, made at the first cross-user case; 0: skip them. */
static uid_t other_uid(void)
{
    static uid_t uid = (uid_t)-1;
    if (uid != (uid_t)-1)
        return uid;
    uid = 0;
    if (getuid() != 0)
        printf("skip the cross-user cases: not root (they need a second user)\n");
    else if (system("command -v useradd >/dev/null 2>&1") != 0)
        printf("skip the cross-user cases: no useradd\n");
    else
        CHECK((uid = make_user()) > 0, "useradd failed");
    return uid;
}

static void squatted_dir(char **argv, CUipcMemHandle real, uid_t uid)
{

    /* 1: the directory taken first by another user, open to all */
    char squat[256], out[1 << 16];
    snprintf(squat, sizeof squat, "%s-squat", sock_dir);
    CHECK(mkdir(squat, 0777) == 0 && chown(squat, uid, uid) == 0 && chmod(squat, 0777) == 0,
          "mkdir %s", squat);
    struct fake f = fake_start(squat, "layout", uid, 16);
    int code = run_tool(squat, out, sizeof out, "stats %d", (int)f.pid);
    CHECK(code == 1 && strstr(out, "refusing the socket directory"),
          "the tool used another user's directory: exit %d: %s", code, out);
    run_tool(squat, out, sizeof out, "ls");
    CHECK(strstr(out, "refusing the socket directory"), "ls: %s", out);
    /* the importer, in a process whose socket directory is the squatted one */
    char hex[2 * CU_IPC_HANDLE_SIZE + 1];
    CUipcMemHandle forged = handle_for(real, f.pid);
    for (size_t i = 0; i < sizeof forged.reserved; i++)
        sprintf(hex + 2 * i, "%02x", (unsigned char)forged.reserved[i]);
    pid_t child = fork();
    if (child == 0) {
        setenv("VRAMSHIM_SOCKET_DIR", squat, 1);
        char *args[] = {argv[0], "import", hex, NULL};
        execv("/proc/self/exe", args);
        _exit(127);
    }
    int status;
    waitpid(child, &status, 0);
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0,
          "the importer mapped memory from another user's directory (status %d)", status);
    CHECK(fake_stop(&f) == 0, "someone connected to another user's socket");
    rmdir(squat);
}

static void planted_socket(char **argv, uid_t uid)
{
    char out[1 << 16];
    int code;
    struct fake f;

    /* 2: our directory, open for a while; another user planted a socket
     * named after a live process (ours) */
    char open_dir[64];
    snprintf(open_dir, sizeof open_dir, "%s-open", sock_dir);
    CHECK(mkdir(open_dir, 0700) == 0 && chmod(open_dir, 0777) == 0, "mkdir %s", open_dir);
    char planted[108];
    f = fake_start(open_dir, "escape", uid, 16);
    check_sock_path(open_dir, getpid(), planted, sizeof planted);
    CHECK(rename(f.path, planted) == 0, "rename"); /* a name whose pid is alive */
    pid_t t;
    {
        setenv("VRAMSHIM_SOCKET_DIR", open_dir, 1);
        char *args[] = {argv[0], "target", NULL};
        FILE *to, *from;
        t = check_spawn("/proc/self/exe", args, false, &to, &from);
        setenv("VRAMSHIM_SOCKET_DIR", sock_dir, 1);
        int ready;
        CHECK(fscanf(from, "ready %d", &ready) == 1, "the target did not start");
        struct stat st;
        CHECK(stat(open_dir, &st) == 0 && (st.st_mode & 0777) == 0700, "mode %o",
              st.st_mode & 0777);
        CHECK(lstat(planted, &st) != 0 && errno == ENOENT,
              "the planted socket survived the server's start");
        /* a foreign entry that is there anyway (root put it back) is not used */
        int l = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0);
        struct sockaddr_un addr = {.sun_family = AF_UNIX};
        snprintf(addr.sun_path, sizeof addr.sun_path, "%s", planted);
        CHECK(bind(l, (struct sockaddr *)&addr, sizeof addr) == 0 && listen(l, 4) == 0 &&
                  chown(planted, uid, uid) == 0,
              "bind %s", planted);
        code = run_tool(open_dir, out, sizeof out, "stats %d", (int)getpid());
        CHECK(code == 1 && strstr(out, "foreign entry"), "a foreign socket was used: %d %s", code,
              out);
        CHECK(run_tool(open_dir, out, sizeof out, "ls") == 0 && strstr(out, "foreign entry"),
              "ls: %s", out);
        int c = accept(l, NULL, NULL);
        CHECK(c < 0 && errno == EAGAIN, "the tool connected to a foreign entry");
        close(l);
        unlink(planted);
        fclose(to);
        waitpid(t, NULL, 0);
        fclose(from);
    }
    fake_stop(&f);
    rmdir(open_dir);
}

/* ---- 4: pid namespaces sharing a directory --------------------------------------- */

/* The names in dir that start with prefix. */
static int entries(const char *dir, const char *prefix, char *names, size_t cap)
{
    char cmd[512];
    snprintf(cmd, sizeof cmd, "ls %s | grep '^%s'", dir, prefix);
    check_capture(cmd, names, cap);
    int n = 0;
    for (const char *p = names; (p = strchr(p, '\n')); p++)
        n++;
    return n;
}

static void pid_namespaces(char **argv)
{
    if (getuid() != 0 || system("unshare --pid --fork true 2>/dev/null") != 0) {
        printf("skip pid namespaces: unshare --pid does not work here\n");
        return;
    }
    char dir[64], names[4096], out[1 << 16];
    snprintf(dir, sizeof dir, "%s-ns", sock_dir);
    CHECK(mkdir(dir, 0700) == 0, "mkdir %s", dir);
    setenv("VRAMSHIM_SOCKET_DIR", dir, 1);
    /* two containers, each with its pid 1, and one process out here */
    FILE *to[3], *from[3];
    pid_t pid[3];
    for (int i = 0; i < 3; i++) {
        char *ns_args[] = {"unshare", "--pid", "--fork", argv[0], "target", NULL};
        char *host_args[] = {argv[0], "target", NULL};
        pid[i] = i < 2 ? check_spawn("/usr/bin/unshare", ns_args, false, &to[i], &from[i])
                       : check_spawn("/proc/self/exe", host_args, false, &to[i], &from[i]);
        int ready;
        CHECK(fscanf(from[i], "ready %d", &ready) == 1, "target %d did not start", i);
        CHECK(i == 2 || ready == 1, "not pid 1 in its namespace: %d", ready);
    }
    setenv("VRAMSHIM_SOCKET_DIR", sock_dir, 1);
    /* both pid 1 keep their sockets: neither took the other's name, and the
     * third's sweep did not take a pid it cannot see for dead */
    CHECK(entries(dir, "1[-.]", names, sizeof names) == 2, "pid 1's sockets: %s", names);
    int code = run_tool(dir, out, sizeof out, "stats 1");
    CHECK(code == 1 && strstr(out, "several other pid namespaces"),
          "stats 1 picked one of two namespaces: %d %s", code, out);
    CHECK(run_tool(dir, out, sizeof out, "ls") == 0 && strstr(out, "[pid namespace "),
          "ls does not show the other namespace: %s", out);
    for (int i = 0; i < 3; i++) {
        fclose(to[i]);
        waitpid(pid[i], NULL, 0);
        fclose(from[i]);
    }
    CHECK(entries(dir, "", names, sizeof names) == 0, "sockets left behind: %s", names);
    rmdir(dir);
}

/* ---- the helpers' roles --------------------------------------------------------- */

static int target(void)
{
    open_driver();
    CUdeviceptr p;
    CHECK_CU(d.alloc(&p, M)); /* reaches the driver: the control socket starts */
    printf("ready %d\n", (int)getpid());
    fflush(stdout);
    char line[64];
    while (fgets(line, sizeof line, stdin))
        ;
    return 0;
}

static int import(const char *hex)
{
    open_driver();
    CUipcMemHandle h;
    for (size_t i = 0; i < sizeof h.reserved; i++) {
        unsigned v;
        CHECK(sscanf(hex + 2 * i, "%2x", &v) == 1, "bad handle text");
        h.reserved[i] = (char)v;
    }
    CUdeviceptr p;
    CUresult rc = open_handle(&p, h, 0);
    CHECK(rc == CUDA_ERROR_INVALID_VALUE, "opened through another user's directory (%d)", (int)rc);
    return 0;
}

static char top_dir[] = "/tmp/vramshim-peer-XXXXXX";

static void remove_dirs(void)
{
    char cmd[256];
    snprintf(cmd, sizeof cmd, "rm -rf %s", top_dir);
    if (system(cmd) != 0)
        fprintf(stderr, "could not remove %s\n", top_dir);
}

int main(int argc, char **argv)
{
    if (argc > 1 && strcmp(argv[1], "target") == 0)
        return target();
    if (argc > 2 && strcmp(argv[1], "import") == 0)
        return import(argv[2]);
    if (getenv("CHECK_REEXECED") == NULL) {
        /* run the test in a child, so the directory goes after its sockets */
        CHECK(mkdtemp(top_dir) != NULL, "mkdtemp");
        chmod(top_dir, 0711); /* the other user reaches its own directory inside */
        pid_t child = fork();
        if (child == 0) {
            char var[128];
            snprintf(var, sizeof var, "VRAMSHIM_SOCKET_DIR=%s/s", top_dir);
            const char *env[] = {"FAKECUDA_MEM=1G", "VRAMSHIM_OFFLOAD=auto",
                                 "VRAMSHIM_LOG=error", var, NULL};
            check_reexec_env(argv, env);
        }
        int status;
        waitpid(child, &status, 0);
        remove_dirs();
        return WIFEXITED(status) ? WEXITSTATUS(status) : 1;
    }
    sock_dir = getenv("VRAMSHIM_SOCKET_DIR");
    snprintf(tool, sizeof tool, "%s/tools/vramshim", getenv("VRAMSHIM_BUILD"));
    open_driver();
    CUdeviceptr buf;
    CHECK_CU(d.alloc(&buf, 8 * M));
    CUipcMemHandle real;
    CHECK_CU(get_handle(&real, buf)); /* the server starts: the directory is made */

    /* PEER_ONLY=<part> runs one part (to see each fail on its own) */
    const char *only = getenv("PEER_ONLY");
#define PART(name, call)                                 \
    if (only == NULL || strcmp(only, name) == 0) {       \
        call;                                            \
        printf("ok   %s\n", name);                       \
    }
    PART("hostile_answers", hostile_answers(real));
    PART("many_clients", many_clients());
    PART("accept_errors", accept_errors(argv));
    PART("connect_deadline", connect_deadline(real));
    PART("pid_namespaces", pid_namespaces(argv));
    if (other_uid() > 0) {
        PART("squatted_dir", squatted_dir(argv, real, other_uid()));
        PART("planted_socket", planted_socket(argv, other_uid()));
    }
    /* last: it leaves share requests refused for a while */
    PART("share_attempts", share_attempts(real));
    CHECK_CU(d.release(buf));
    printf("peer: ok\n");
    return 0;
}
