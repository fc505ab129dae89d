/*
 * control.c: the control socket, one per process, served by one thread.
 *
 * The thread starts when the program first reaches the CUDA driver (not in
 * every process that merely inherits LD_PRELOAD) and listens on
 * $VRAMSHIM_SOCKET_DIR/<pid>.sock. The directory must be ours and mode
 * 0700, the socket is 0600, and a peer whose uid is neither ours nor root
 * (SO_PEERCRED) is refused. Sockets left by dead processes are removed when
 * a new server starts, and ours goes when the process exits.
 *
 * A "share" request (from ipc.c in another process of the same user) is
 * answered with file descriptors for a shared buffer's memory.
 *
 * One connection at a time, one request a connection (protocol.c), with a
 * deadline: a slow or silent client is cut off, never waited for. Answers
 * are built from the same snapshot as vramshim_stats_json and from
 * vs_limits_set, which take the registry lock only for a snapshot and the
 * limits mutex only for a copy, so the program's CUDA calls never wait on
 * the server for longer than a hooked call takes.
 */
#define _GNU_SOURCE 1
#include "control.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#define REQUEST_DEADLINE_MS 2000

static char sock_path[sizeof(((struct sockaddr_un *)0)->sun_path)];
static pid_t sock_owner_pid;
static _Atomic int started;

/* The directory exists (made if not), is a directory, is ours, and no one
 * else may enter it. */
static int prepare_dir(const char *dir)
{
    if (mkdir(dir, 0700) != 0 && errno != EEXIST)
        return -errno;
    struct stat st;
    if (lstat(dir, &st) != 0)
        return -errno;
    if (!S_ISDIR(st.st_mode) || st.st_uid != getuid())
        return -EPERM;
    if ((st.st_mode & 0777) != 0700 && chmod(dir, 0700) != 0)
        return -errno;
    return 0;
}

/* Remove <pid>.sock files whose process is gone. */
static void sweep_dead(const char *dir)
{
    DIR *d = opendir(dir);
    if (d == NULL)
        return;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        char *end;
        long pid = strtol(e->d_name, &end, 10);
        if (pid <= 0 || strcmp(end, ".sock") != 0)
            continue;
        if (kill((pid_t)pid, 0) == 0 || errno != ESRCH)
            continue;
        char path[VS_PATH_MAX + sizeof e->d_name + 2];
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        unlink(path);
    }
    closedir(d);
}

static bool peer_allowed(int fd)
{
    struct ucred cred;
    socklen_t len = sizeof cred;
    if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0)
        return false;
    return cred.uid == getuid() || cred.uid == 0;
}

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static void send_all(int fd, const char *buf, size_t len)
{
    uint64_t deadline = now_ms() + REQUEST_DEADLINE_MS;
    while (len > 0) {
        ssize_t w = send(fd, buf, len, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (w > 0) {
            buf += w;
            len -= (size_t)w;
            continue;
        }
        if (w < 0 && errno != EAGAIN && errno != EINTR)
            return;
        uint64_t now = now_ms();
        if (now >= deadline)
            return; /* a client that does not read is cut off */
        struct pollfd p = {fd, POLLOUT, 0};
        poll(&p, 1, (int)(deadline - now));
    }
}

static void reply_error(int fd, const char *why)
{
    char buf[512];
    int n = snprintf(buf, sizeof buf, "{\"ok\":false,\"error\":\"");
    for (const char *p = why; *p && n < (int)sizeof buf - 8; p++)
        if (*p != '"' && *p != '\\' && (unsigned char)*p >= 0x20)
            buf[n++] = *p;
    n += snprintf(buf + n, sizeof buf - (size_t)n, "\"}\n");
    send_all(fd, buf, (size_t)n);
}

/* Read one line within the deadline: its length, or -1. */
static ssize_t read_request(int fd, char *buf, size_t cap)
{
    uint64_t deadline = now_ms() + REQUEST_DEADLINE_MS;
    size_t len = 0;
    for (;;) {
        char *nl = memchr(buf, '\n', len);
        if (nl)
            return nl - buf;
        if (len == cap)
            return -1; /* too long */
        uint64_t now = now_ms();
        if (now >= deadline)
            return -1;
        struct pollfd p = {fd, POLLIN, 0};
        if (poll(&p, 1, (int)(deadline - now)) <= 0)
            continue;
        ssize_t r = recv(fd, buf + len, cap - len, MSG_DONTWAIT);
        if (r == 0)
            return -1;
        if (r < 0) {
            if (errno == EAGAIN || errno == EINTR)
                continue;
            return -1;
        }
        len += (size_t)r;
    }
}

static void answer_stats(int fd, bool hello)
{
    struct vs_config cfg;
    vs_limits_config(&cfg);
    size_t cap = 1 << 16;
    char *doc = malloc(cap);
    if (doc == NULL)
        return reply_error(fd, "out of memory");
    int n = vs_stats_write_json(doc, cap, &cfg);
    if (n >= (int)cap) {
        cap = (size_t)n + 1;
        char *bigger = realloc(doc, cap);
        if (bigger == NULL) {
            free(doc);
            return reply_error(fd, "out of memory");
        }
        doc = bigger;
        n = vs_stats_write_json(doc, cap, &cfg);
    }
    const char *head = hello ? "{\"ok\":true,\"hello\":" : "{\"ok\":true,\"stats\":";
    send_all(fd, head, strlen(head));
    send_all(fd, doc, (size_t)n);
    send_all(fd, "}\n", 2);
    free(doc);
}

/* evict: idle buffers (of one owner, up to some bytes); free: everything
 * that can move. The answer says how many bytes moved. */
static void answer_move(int fd, const struct vs_request *req)
{
    if (vs_limits_offload() == VS_OFFLOAD_OFF)
        return reply_error(fd, "offload is off in this process (set offload=pinned or auto)");
    int owner = -1;
    if (req->cmd == VS_REQ_EVICT && req->has_owner) {
        for (int i = 0; i < vs_owner_count(); i++)
            if (strcmp(vs_owner_name(i), req->owner) == 0)
                owner = i;
        if (owner < 0)
            return reply_error(fd, "no such owner in this process");
    }
    uint64_t want = req->cmd == VS_REQ_EVICT && req->has_bytes ? req->bytes : UINT64_MAX;
    uint64_t moved = vs_tier_evict(owner, want, req->cmd == VS_REQ_EVICT);
    char line[64];
    int n = snprintf(line, sizeof line, "{\"ok\":true,\"moved\":%llu}\n", (unsigned long long)moved);
    send_all(fd, line, (size_t)n);
}

/* Send bytes with file descriptors attached, within the deadline. */
static bool send_fds(int fd, const char *buf, size_t len, const int *fds, int n)
{
    union {
        char space[CMSG_SPACE(sizeof(int) * VS_SHARE_FDS_PER_MSG)];
        struct cmsghdr align;
    } ctl;
    struct iovec iov = {.iov_base = (void *)buf, .iov_len = len};
    struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1};
    if (n > 0) {
        memset(&ctl, 0, sizeof ctl);
        msg.msg_control = ctl.space;
        msg.msg_controllen = CMSG_SPACE(sizeof(int) * (size_t)n);
        struct cmsghdr *c = CMSG_FIRSTHDR(&msg);
        c->cmsg_level = SOL_SOCKET;
        c->cmsg_type = SCM_RIGHTS;
        c->cmsg_len = CMSG_LEN(sizeof(int) * (size_t)n);
        memcpy(CMSG_DATA(c), fds, sizeof(int) * (size_t)n);
    }
    uint64_t deadline = now_ms() + REQUEST_DEADLINE_MS;
    for (;;) {
        ssize_t w = sendmsg(fd, &msg, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (w == (ssize_t)len)
            return true;
        if (w >= 0) { /* the descriptors went with the first bytes */
            send_all(fd, buf + w, len - (size_t)w);
            return true;
        }
        uint64_t now = now_ms();
        if ((errno != EAGAIN && errno != EINTR) || now >= deadline)
            return false;
        struct pollfd p = {fd, POLLOUT, 0};
        poll(&p, 1, (int)(deadline - now));
    }
}

/* share: another process of ours maps a buffer this one shared
 * (cuIpcGetMemHandle). The answer line carries the layout; the chunks'
 * memory follows as file descriptors, VS_SHARE_FDS_PER_MSG at a time. */
static void answer_share(int fd, const struct vs_request *req)
{
    int fds[VS_SHARE_MAX_CHUNKS];
    struct vs_share sh;
    int n = vs_tier_export(req->base, req->token, fds, VS_SHARE_MAX_CHUNKS, &sh);
    if (n == -ENOENT)
        return reply_error(fd, "no buffer shared under that base and token");
    if (n < 0)
        return reply_error(fd, n == -E2BIG ? "buffer too large to share"
                                           : "the driver cannot export the buffer");
    char line[256];
    int len = snprintf(line, sizeof line,
                       "{\"ok\":true,\"size\":%llu,\"span\":%llu,\"gran\":%llu,"
                       "\"chunk\":%llu,\"n\":%d}\n",
                       (unsigned long long)sh.size, (unsigned long long)sh.span,
                       (unsigned long long)sh.gran, (unsigned long long)sh.chunk, n);
    int first = n < VS_SHARE_FDS_PER_MSG ? n : VS_SHARE_FDS_PER_MSG;
    bool ok = send_fds(fd, line, (size_t)len, fds, first);
    for (int sent = first; ok && sent < n;) {
        int batch = n - sent < VS_SHARE_FDS_PER_MSG ? n - sent : VS_SHARE_FDS_PER_MSG;
        ok = send_fds(fd, "+", 1, fds + sent, batch);
        sent += batch;
    }
    for (int i = 0; i < n; i++)
        close(fds[i]);
}

static void serve_one(int fd)
{
    if (!peer_allowed(fd)) {
        reply_error(fd, "permission denied: not the process's user");
        vs_warn("control socket: refused a connection from another user");
        return;
    }
    char buf[VS_REQUEST_MAX + 1];
    ssize_t len = read_request(fd, buf, sizeof buf);
    if (len < 0)
        return reply_error(fd, "no complete request line in time, or longer than 4096 bytes");
    struct vs_request req;
    char why[256];
    if (vs_request_parse(buf, (size_t)len, &req, why, sizeof why) != 0)
        return reply_error(fd, why);
    switch (req.cmd) {
    case VS_REQ_HELLO:
    case VS_REQ_STATS:
        return answer_stats(fd, req.cmd == VS_REQ_HELLO);
    case VS_REQ_SET:
        if (vs_limits_set(req.key, req.value, why, sizeof why) != 0)
            return reply_error(fd, why);
        send_all(fd, "{\"ok\":true}\n", 12);
        return;
    case VS_REQ_EVICT:
    case VS_REQ_FREE:
        return answer_move(fd, &req);
    case VS_REQ_SHARE:
        return answer_share(fd, &req);
    default:
        return reply_error(fd, "unknown request");
    }
}

static void *serve(void *arg)
{
    int lfd = (int)(intptr_t)arg;
    sigset_t all;
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, NULL); /* the program's signals are its own */
    for (;;) {
        int fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EINTR || errno == ECONNABORTED)
                continue;
            vs_error("control socket: accept failed (%s); the server stops", strerror(errno));
            return NULL;
        }
        serve_one(fd);
        close(fd);
    }
}

static void remove_socket(void)
{
    if (sock_path[0] && sock_owner_pid == getpid())
        unlink(sock_path);
}

void vs_control_start(void)
{
    if (vs_state.disabled || atomic_exchange(&started, 1))
        return;
    struct vs_config cfg;
    vs_limits_config(&cfg);
    char dir[VS_PATH_MAX];
    int rc = vs_control_dir(cfg.socket_dir, dir, sizeof dir);
    if (rc == 0)
        rc = prepare_dir(dir);
    if (rc != 0) {
        vs_warn("control socket: cannot use the directory %s (%s); no socket",
                dir, strerror(-rc));
        return;
    }
    sweep_dead(dir);
    struct sockaddr_un addr = {.sun_family = AF_UNIX};
    int n = snprintf(addr.sun_path, sizeof addr.sun_path, "%s/%d.sock", dir, (int)getpid());
    if (n < 0 || (size_t)n >= sizeof addr.sun_path) {
        vs_warn("control socket: the path under %s is too long; no socket", dir);
        return;
    }
    int lfd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (lfd < 0)
        return;
    unlink(addr.sun_path); /* a previous process with our pid */
    if (bind(lfd, (struct sockaddr *)&addr, sizeof addr) != 0 ||
        chmod(addr.sun_path, 0600) != 0 || listen(lfd, 8) != 0) {
        vs_warn("control socket: cannot listen on %s (%s); no socket", addr.sun_path,
                strerror(errno));
        close(lfd);
        return;
    }
    memcpy(sock_path, addr.sun_path, sizeof sock_path);
    sock_owner_pid = getpid();
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    pthread_t t;
    if (pthread_create(&t, &attr, serve, (void *)(intptr_t)lfd) != 0) {
        remove_socket();
        close(lfd);
        vs_warn("control socket: cannot start its thread; no socket");
    } else {
        atexit(remove_socket);
        vs_debug("control socket: %s", sock_path);
    }
    pthread_attr_destroy(&attr);
}

/* A forked child has no server thread; it does not own the parent's socket
 * either (remove_socket checks the pid). */
void vs_control_atfork_child(void) { atomic_store(&started, 0); }
