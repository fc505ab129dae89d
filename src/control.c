/*
 * control.c: the control socket, one per process, served by one thread.
 *
 * The thread starts when the program first reaches the CUDA driver (not in
 * every process that merely inherits LD_PRELOAD) and listens on
 * $VRAMSHIM_SOCKET_DIR/<pid>-<pid namespace>.sock (peer.c). The directory must be ours and mode
 * 0700 (the socket 0600), or shared by a group (sockdir.c: every group
 * bit, none for others; the socket 0660 and the group's). A peer whose
 * uid is neither ours nor root (SO_PEERCRED) is refused, except a member
 * of a shared directory's group, which may only read stats and ask for
 * relief. Entries in a private directory that are not ours
 * are removed (logged): one planted while the directory was open
 * must not outlive the chmod. Sockets nothing listens on (a refused
 * connect) are removed when a new server starts, and ours goes when the
 * process exits.
 *
 * "peer" and "relieve" requests (relief.c in another process on the same
 * device) are answered by control_relief.c, which also releases idle
 * buffers unasked (VRAMSHIM_IDLE_RELEASE) from this thread's loop.
 *
 * A "share" request (from ipc.c in another process of the same user) is
 * answered with file descriptors for a shared buffer's memory. Failed
 * share attempts are logged, counted in the stats and rate-limited.
 *
 * One poll loop serves up to CONN_MAX connections at once, one request
 * each (protocol.c), every connection with its own deadline for the whole
 * exchange: a slow, silent or non-reading client is cut off and costs the
 * others nothing. Nothing here blocks. An evict or free, which moves as
 * many bytes as it takes (tens of GiB on a large GPU), runs on a thread of
 * its own, one at a time: while it works, its client gets a progress line
 * every PROGRESS_MS, then the
 * answer, and the server goes on serving everyone else. Answers are built from the same
 * snapshot as vramshim_stats_json and from vs_limits_set, which take the
 * registry lock only for a snapshot and the limits mutex only for a copy,
 * so the program's CUDA calls never wait on the server for longer than a
 * hooked call takes.
 */
#define _GNU_SOURCE 1
#include "control.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#define CONN_DEADLINE_MS 2000 /* for a whole exchange: request and answer */
#define CONN_MAX 32
#define PROGRESS_MS 500 /* an evict or free reports progress at most this often */
#define ACCEPT_BACKOFF_MS 100
#define SHARE_FAILS_BURST 10 /* failed share attempts allowed at once ... */
#define SHARE_FAILS_REFILL_MS 1000 /* ... and one more each second */

static char sock_path[sizeof(((struct sockaddr_un *)0)->sun_path)];
static pid_t sock_owner_pid;
static _Atomic int started;

/* The directory the sockets are in: private or shared by a group. */
static struct vs_sockdir sockdir;

/* The directory exists (made private if not) and passes sockdir.c's
 * checks. One of ours that is not 0700 is made so, unless it was named
 * (VRAMSHIM_SOCKET_DIR) with every group bit set and none for others:
 * that one is meant to be shared. */
static int prepare_dir(const char *dir, bool named, char *why, size_t why_len)
{
    if (mkdir(dir, 0700) != 0 && errno != EEXIST) {
        int e = errno;
        snprintf(why, why_len, "%s: %s", dir, strerror(e));
        return -e;
    }
    struct stat st;
    if (lstat(dir, &st) == 0 && S_ISDIR(st.st_mode) && st.st_uid == getuid() &&
        (st.st_mode & 0777) != 0700 && !(named && (st.st_mode & 077) == 070) &&
        chmod(dir, 0700) != 0) {
        int e = errno;
        snprintf(why, why_len, "%s: chmod 0700: %s", dir, strerror(e));
        return -e;
    }
    return vs_dir_check(dir, &sockdir, why, why_len);
}

/* Remove what does not belong: entries of other users (logged; in a
 * shared directory the group's are its own), and sockets nothing listens
 * on any more (another member's, in a sticky directory, stays: the
 * kernel refuses, and its own next server removes it). */
static void sweep(const char *dir)
{
    DIR *d = opendir(dir);
    if (d == NULL)
        return;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
            continue;
        char path[VS_PATH_MAX + sizeof e->d_name + 2];
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        struct stat st;
        if (lstat(path, &st) == 0 && st.st_uid != getuid() && !sockdir.shared) {
            vs_warn("control socket: %s belongs to uid %u, not to us; removed", path,
                    (unsigned)st.st_uid);
            unlink(path);
            continue;
        }
        pid_t pid;
        uint64_t ns;
        /* dead only when a connect is refused: a pid this process cannot
         * see may live in another pid namespace */
        if (vs_sock_name_parse(e->d_name, &pid, &ns) && vs_sock_dead(path))
            unlink(path);
    }
    closedir(d);
}

/* ---- connections ------------------------------------------------------------ */

/* One client. Its answer is `out`; a share answer carries descriptors in
 * batches of VS_SHARE_FDS_PER_MSG: the first with the answer line's first
 * byte, each further one with one "+" after the line. */
struct conn {
    int fd; /* -1: a free slot */
    enum vs_access access; /* what the client may ask (sockdir.c) */
    uint64_t deadline;
    char in[VS_REQUEST_MAX + 1];
    size_t in_len;
    char *out;
    size_t out_len, out_off, line_len;
    int *fds, n_fds, batches_sent;
    bool on_job;          /* waits for the evict or free running (job) */
    uint64_t next_progress;
};

/* The evict or free running on its own thread, at most one. */
static struct {
    _Atomic bool running, done;
    _Atomic uint64_t moved;
    int owner;
    uint64_t want;
    bool idle_only;
    int wake[2]; /* the thread writes a byte when done */
} job = {.wake = {-1, -1}};

static struct conn conns[CONN_MAX];

static int batch_count(const struct conn *c)
{
    return (c->n_fds + VS_SHARE_FDS_PER_MSG - 1) / VS_SHARE_FDS_PER_MSG;
}

static size_t batch_offset(const struct conn *c, int batch)
{
    return batch == 0 ? 0 : c->line_len + (size_t)batch - 1;
}

static void conn_close(struct conn *c)
{
    close(c->fd);
    for (int i = 0; i < c->n_fds; i++)
        close(c->fds[i]);
    free(c->fds);
    free(c->out);
    memset(c, 0, sizeof *c);
    c->fd = -1;
}

/* Send what the socket takes now. True when the exchange is over (all
 * sent, or the client is gone), false while bytes wait for POLLOUT. */
static bool conn_flush(struct conn *c)
{
    while (c->out_off < c->out_len) {
        int batch = -1;
        size_t stop = c->out_len;
        if (c->batches_sent < batch_count(c)) {
            size_t at = batch_offset(c, c->batches_sent);
            if (c->out_off == at) {
                batch = c->batches_sent;
                if (batch + 1 < batch_count(c))
                    stop = batch_offset(c, batch + 1);
            } else {
                stop = at;
            }
        }
        union {
            char space[CMSG_SPACE(sizeof(int) * VS_SHARE_FDS_PER_MSG)];
            struct cmsghdr align;
        } ctl;
        struct iovec iov = {.iov_base = c->out + c->out_off, .iov_len = stop - c->out_off};
        struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1};
        if (batch >= 0) {
            int first = batch * VS_SHARE_FDS_PER_MSG;
            int k = c->n_fds - first < VS_SHARE_FDS_PER_MSG ? c->n_fds - first
                                                            : VS_SHARE_FDS_PER_MSG;
            memset(&ctl, 0, sizeof ctl);
            msg.msg_control = ctl.space;
            msg.msg_controllen = CMSG_SPACE(sizeof(int) * (size_t)k);
            struct cmsghdr *cm = CMSG_FIRSTHDR(&msg);
            cm->cmsg_level = SOL_SOCKET;
            cm->cmsg_type = SCM_RIGHTS;
            cm->cmsg_len = CMSG_LEN(sizeof(int) * (size_t)k);
            memcpy(CMSG_DATA(cm), c->fds + first, sizeof(int) * (size_t)k);
        }
        ssize_t w = sendmsg(c->fd, &msg, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return errno != EAGAIN;
        }
        c->out_off += (size_t)w;
        if (batch >= 0)
            c->batches_sent++; /* the descriptors went with the first byte */
    }
    return true;
}

/* Add a line after what is still unsent (progress, then the answer). */
static void conn_append(struct conn *c, const char *text)
{
    size_t left = c->out ? c->out_len - c->out_off : 0, len = strlen(text);
    char *out = malloc(left + len + 1);
    if (out == NULL)
        return; /* a progress line lost; the answer comes with the next */
    if (left)
        memcpy(out, c->out + c->out_off, left);
    memcpy(out + left, text, len + 1);
    free(c->out);
    c->out = out;
    c->out_len = c->line_len = left + len;
    c->out_off = 0;
}

/* The answer, owned by the connection from now on (NULL: out of memory). */
static void conn_answer(struct conn *c, char *text, size_t len)
{
    static char no_memory[] = "{\"ok\":false,\"error\":\"out of memory\"}\n";
    free(c->out);
    if (text == NULL) {
        text = strdup(no_memory);
        len = text ? strlen(text) : 0;
    }
    c->out = text;
    c->out_len = len;
    c->out_off = 0;
    c->line_len = len;
}

static void reply_text(struct conn *c, const char *text)
{
    char *copy = strdup(text);
    conn_answer(c, copy, copy ? strlen(copy) : 0);
}

static void reply_error(struct conn *c, const char *why)
{
    char buf[512];
    int n = snprintf(buf, sizeof buf, "{\"ok\":false,\"error\":\"");
    for (const char *p = why; *p && n < (int)sizeof buf - 8; p++)
        if (*p != '"' && *p != '\\' && (unsigned char)*p >= 0x20 && *p != 0x7f)
            buf[n++] = *p;
    snprintf(buf + n, sizeof buf - (size_t)n, "\"}\n");
    reply_text(c, buf);
}

static void answer_stats(struct conn *c, bool hello)
{
    struct vs_config cfg;
    vs_limits_config(&cfg);
    size_t len;
    char *doc = vs_stats_json_alloc(&cfg, &len);
    if (doc == NULL)
        return reply_error(c, errno == ENOMEM ? "out of memory" : "cannot build the stats");
    const char *head = hello ? "{\"ok\":true,\"hello\":" : "{\"ok\":true,\"stats\":";
    size_t head_len = strlen(head);
    char *out = malloc(head_len + len + 3);
    if (out) {
        memcpy(out, head, head_len);
        memcpy(out + head_len, doc, len);
        memcpy(out + head_len + len, "}\n", 3);
    }
    free(doc);
    conn_answer(c, out, head_len + len + 2);
}

static void *run_job(void *arg)
{
    (void)arg;
    vs_thread_block_signals();
    vs_tier_evict(job.owner, job.want, job.idle_only, &job.moved);
    atomic_store(&job.done, true);
    ssize_t w = write(job.wake[1], "", 1);
    (void)w;
    return NULL;
}

/* evict: idle buffers (of one owner, up to some bytes); free: everything
 * that can move. Started on the job thread; progress lines and the answer
 * (how many bytes moved) follow from the poll loop (job_poll). */
static void answer_move(struct conn *c, const struct vs_request *req)
{
    if (vs_limits_offload() == VS_OFFLOAD_OFF)
        return reply_error(c, "offload is off in this process (set offload=pinned or auto)");
    int owner = -1;
    if (req->cmd == VS_REQ_EVICT && req->has_owner) {
        for (int i = 0; i < vs_owner_count(); i++)
            if (strcmp(vs_owner_name(i), req->owner) == 0)
                owner = i;
        if (owner < 0)
            return reply_error(c, "no such owner in this process");
    }
    if (atomic_load(&job.running))
        return reply_error(c, "an evict or free is already running in this process");
    if (job.wake[0] < 0 && pipe2(job.wake, O_CLOEXEC | O_NONBLOCK) != 0)
        return reply_error(c, "cannot start the move (no pipe)");
    job.owner = owner;
    job.want = req->cmd == VS_REQ_EVICT && req->has_bytes ? req->bytes : UINT64_MAX;
    job.idle_only = req->cmd == VS_REQ_EVICT;
    atomic_store(&job.moved, 0);
    atomic_store(&job.done, false);
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    pthread_t t;
    int rc = pthread_create(&t, &attr, run_job, NULL);
    pthread_attr_destroy(&attr);
    if (rc != 0)
        return reply_error(c, "cannot start the move (no thread)");
    atomic_store(&job.running, true);
    c->on_job = true;
    c->next_progress = vs_now_ms() + PROGRESS_MS;
}

/* The job's client: a progress line when more has moved, the answer once
 * it is done. Returns when to look again (UINT64_MAX: no need). */
static uint64_t job_poll(struct conn *c, uint64_t now)
{
    char line[96];
    if (atomic_load(&job.done)) {
        char drain[16];
        while (read(job.wake[0], drain, sizeof drain) > 0)
            ;
        snprintf(line, sizeof line, "{\"ok\":true,\"moved\":%llu}\n",
                 (unsigned long long)atomic_load(&job.moved));
        conn_append(c, line);
        c->on_job = false;
        atomic_store(&job.running, false);
        c->deadline = now + CONN_DEADLINE_MS; /* to take the answer */
        return UINT64_MAX;
    }
    /* A line every PROGRESS_MS while the job runs, whether or not another
     * chunk has finished: one chunk of a large buffer, or one slowed by a
     * loaded machine, can take longer than the client waits between lines,
     * and the job itself never waits without bound (its fences end at
     * VRAMSHIM_FENCE_MS), so the client waits as long as the job is alive. */
    if (now >= c->next_progress && c->out == NULL) {
        snprintf(line, sizeof line, "{\"ok\":true,\"progress\":{\"moved\":%llu}}\n",
                 (unsigned long long)atomic_load(&job.moved));
        conn_append(c, line);
        c->next_progress = now + PROGRESS_MS;
    }
    return c->next_progress > now ? c->next_progress : now + PROGRESS_MS;
}

/* Failed share attempts: a bucket of SHARE_FAILS_BURST, refilled one a
 * second. While it is empty every share request is refused unexamined, so
 * guessing tokens goes no faster than that (and the token has 64 random
 * bits). Only the server thread touches it. */
static struct {
    uint64_t refilled_ms;
    int left;
    bool said_empty;
} share_fails = {0, SHARE_FAILS_BURST, false};

static bool share_allowed(void)
{
    uint64_t now = vs_now_ms();
    uint64_t gained = (now - share_fails.refilled_ms) / SHARE_FAILS_REFILL_MS;
    if (gained > 0) {
        share_fails.left = gained >= SHARE_FAILS_BURST ? SHARE_FAILS_BURST
                                                       : share_fails.left + (int)gained;
        if (share_fails.left > SHARE_FAILS_BURST)
            share_fails.left = SHARE_FAILS_BURST;
        share_fails.refilled_ms = now;
    }
    return share_fails.left > 0;
}

static void share_refused(const struct vs_request *req, pid_t peer)
{
    vs_stats_count_share_refused();
    if (share_fails.left == SHARE_FAILS_BURST)
        share_fails.refilled_ms = vs_now_ms();
    if (share_fails.left > 0) {
        share_fails.left--;
        vs_warn("control socket: process %d asked for a shared buffer at 0x%llx with a "
                "wrong base or token; refused",
                (int)peer, (unsigned long long)req->base);
        share_fails.said_empty = false;
    } else if (!share_fails.said_empty) {
        share_fails.said_empty = true;
        vs_warn("control socket: too many failed share attempts; share requests are "
                "refused for a while");
    }
}

/* share: another process of ours maps a buffer this one shared
 * (cuIpcGetMemHandle). The answer line carries the layout; the chunks'
 * memory follows as file descriptors (conn_flush). */
static void answer_share(struct conn *c, const struct vs_request *req)
{
    struct ucred cred = {0};
    socklen_t cred_len = sizeof cred;
    getsockopt(c->fd, SOL_SOCKET, SO_PEERCRED, &cred, &cred_len);
    if (!share_allowed()) {
        share_refused(req, cred.pid);
        return reply_error(c, "too many failed share attempts; try again later");
    }
    int *fds = malloc(sizeof(int) * VS_SHARE_MAX_CHUNKS);
    if (fds == NULL)
        return reply_error(c, "out of memory");
    struct vs_share sh;
    int n = vs_tier_export(req->base, req->token, fds, VS_SHARE_MAX_CHUNKS, &sh);
    if (n < 0) {
        free(fds);
        if (n == -ENOENT) {
            share_refused(req, cred.pid);
            return reply_error(c, "no buffer shared under that base and token");
        }
        return reply_error(c, n == -E2BIG ? "buffer too large to share"
                                          : "the driver cannot export the buffer");
    }
    int batches = (n + VS_SHARE_FDS_PER_MSG - 1) / VS_SHARE_FDS_PER_MSG;
    char line[256];
    int len = snprintf(line, sizeof line,
                       "{\"ok\":true,\"size\":%llu,\"span\":%llu,\"gran\":%llu,"
                       "\"chunk\":%llu,\"n\":%d}\n",
                       (unsigned long long)sh.size, (unsigned long long)sh.span,
                       (unsigned long long)sh.gran, (unsigned long long)sh.chunk, n);
    char *out = malloc((size_t)len + (size_t)batches);
    if (out == NULL) {
        for (int i = 0; i < n; i++)
            close(fds[i]);
        free(fds);
        return reply_error(c, "out of memory");
    }
    memcpy(out, line, (size_t)len);
    memset(out + len, '+', (size_t)(batches > 0 ? batches - 1 : 0));
    conn_answer(c, out, (size_t)len + (size_t)(batches > 0 ? batches - 1 : 0));
    c->line_len = (size_t)len;
    c->fds = fds;
    c->n_fds = n;
}

static void answer(struct conn *c, size_t len)
{
    struct vs_request req;
    char why[256];
    if (vs_request_parse(c->in, len, &req, why, sizeof why) != 0)
        return reply_error(c, why);
    if (!vs_request_allowed(c->access, req.cmd))
        return reply_error(c, "permission denied: only the process's user may steer it or "
                              "share its memory (a member of the socket directory's group "
                              "may read stats and ask for relief)");
    switch (req.cmd) {
    case VS_REQ_HELLO:
    case VS_REQ_STATS:
        return answer_stats(c, req.cmd == VS_REQ_HELLO);
    case VS_REQ_SET:
        if (vs_limits_set(req.key, req.value, why, sizeof why) != 0)
            return reply_error(c, why);
        vs_pool_fit_limits();
        return reply_text(c, "{\"ok\":true}\n");
    case VS_REQ_EVICT:
    case VS_REQ_FREE:
        return answer_move(c, &req);
    case VS_REQ_SHARE:
        return answer_share(c, &req);
    case VS_REQ_PEER:
    case VS_REQ_RELIEVE: {
        struct ucred cred = {0};
        socklen_t cred_len = sizeof cred;
        getsockopt(c->fd, SOL_SOCKET, SO_PEERCRED, &cred, &cred_len);
        char line[256];
        vs_relief_answer_line(&req, cred.pid, line, sizeof line);
        return reply_text(c, line);
    }
    default:
        return reply_error(c, "unknown request");
    }
}

/* Bytes arrived: once a line is complete it is answered. True when the
 * connection is over. */
static bool conn_read(struct conn *c)
{
    for (;;) {
        char *nl = memchr(c->in, '\n', c->in_len);
        if (nl) {
            answer(c, (size_t)(nl - c->in));
            return c->on_job ? false : conn_flush(c);
        }
        if (c->in_len == sizeof c->in) {
            reply_error(c, "request longer than 4096 bytes");
            return conn_flush(c);
        }
        ssize_t r = recv(c->fd, c->in + c->in_len, sizeof c->in - c->in_len, MSG_DONTWAIT);
        if (r == 0)
            return true;
        if (r < 0)
            return errno != EAGAIN && errno != EINTR;
        c->in_len += (size_t)r;
    }
}

static void conn_open(int fd)
{
    struct conn *c = NULL;
    for (int i = 0; i < CONN_MAX && c == NULL; i++)
        if (conns[i].fd < 0)
            c = &conns[i];
    if (c == NULL) { /* a last word, if the socket takes it now */
        static const char busy[] = "{\"ok\":false,\"error\":\"the server is busy\"}\n";
        ssize_t w = send(fd, busy, sizeof busy - 1, MSG_NOSIGNAL | MSG_DONTWAIT);
        (void)w;
        close(fd);
        return;
    }
    c->fd = fd;
    c->deadline = vs_now_ms() + CONN_DEADLINE_MS;
    c->access = vs_peer_access(fd, &sockdir, NULL);
    if (c->access == VS_ACCESS_NONE) {
        vs_warn("control socket: refused a connection from another user%s",
                sockdir.shared ? " outside the socket directory's group" : "");
        reply_error(c, sockdir.shared ? "permission denied: not the process's user nor a "
                                        "member of the socket directory's group"
                                      : "permission denied: not the process's user");
        if (conn_flush(c))
            conn_close(c);
    }
}

/* Accept what is waiting. An error other than a lost connection (no
 * descriptors left, no memory) pauses accepting for a moment; the server
 * goes on. Returns when to accept again (0: when poll says so). */
static uint64_t accept_all(int lfd)
{
    static uint64_t last_said;
    for (;;) {
        int fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
        if (fd >= 0) {
            conn_open(fd);
            continue;
        }
        if (errno == EINTR || errno == ECONNABORTED)
            continue;
        if (errno == EAGAIN)
            return 0;
        uint64_t now = vs_now_ms();
        if (last_said == 0 || now - last_said >= 10000) {
            last_said = now;
            vs_warn("control socket: accept failed (%s); retrying", strerror(errno));
        }
        return now + ACCEPT_BACKOFF_MS;
    }
}

static void *serve(void *arg)
{
    int lfd = (int)(intptr_t)arg;
    vs_thread_block_signals();
    for (int i = 0; i < CONN_MAX; i++)
        conns[i].fd = -1;
    uint64_t accept_at = 0, idle_tick_at = 0;
    struct pollfd p[CONN_MAX + 2];
    struct conn *who[CONN_MAX + 2];
    for (;;) {
        uint64_t now = vs_now_ms(), wake = UINT64_MAX;
        if (now >= idle_tick_at)
            idle_tick_at = vs_relief_idle_tick(now);
        wake = idle_tick_at;
        int n = 0;
        bool job_has_client = false;
        for (int i = 0; i < CONN_MAX; i++)
            job_has_client |= conns[i].fd >= 0 && conns[i].on_job;
        if (atomic_load(&job.running) && !job_has_client && atomic_load(&job.done)) {
            char drain[16]; /* its client left: the next may start */
            while (read(job.wake[0], drain, sizeof drain) > 0)
                ;
            atomic_store(&job.running, false);
        }
        if (atomic_load(&job.running) && !atomic_load(&job.done)) {
            p[n] = (struct pollfd){job.wake[0], POLLIN, 0};
            who[n++] = NULL;
        }
        if (accept_at <= now) {
            accept_at = 0;
            p[n] = (struct pollfd){lfd, POLLIN, 0};
            who[n++] = NULL;
        } else if (accept_at < wake) {
            wake = accept_at;
        }
        for (int i = 0; i < CONN_MAX; i++) {
            struct conn *c = &conns[i];
            if (c->fd < 0)
                continue;
            if (c->on_job) { /* no deadline while it moves: progress instead */
                uint64_t next = job_poll(c, now);
                if (next < wake)
                    wake = next;
                p[n] = (struct pollfd){c->fd, c->out ? POLLOUT : 0, 0};
                who[n++] = c;
                continue;
            }
            if (now >= c->deadline) { /* cut off, with a reason if it still reads */
                if (c->out == NULL)
                    reply_error(c, "no complete request line in time");
                conn_flush(c);
                conn_close(c);
                continue;
            }
            if (c->deadline < wake)
                wake = c->deadline;
            p[n] = (struct pollfd){c->fd, c->out ? POLLOUT : POLLIN, 0};
            who[n++] = c;
        }
        int timeout = wake == UINT64_MAX ? -1 : wake > now ? (int)(wake - now) : 0;
        if (poll(p, (nfds_t)n, timeout) <= 0)
            continue;
        for (int i = 0; i < n; i++) {
            if (p[i].revents == 0)
                continue;
            if (who[i] == NULL) {
                if (p[i].fd == lfd)
                    accept_at = accept_all(lfd);
                continue; /* the job's wake: job_poll answers next time round */
            }
            struct conn *c = who[i];
            if (c->on_job) { /* a progress line may go, or the client is gone */
                if (p[i].revents & (POLLHUP | POLLERR)) {
                    conn_close(c);
                } else if (c->out && conn_flush(c)) {
                    if (c->out_off < c->out_len) { /* could not send: gone */
                        conn_close(c);
                    } else {
                        free(c->out);
                        c->out = NULL;
                        c->out_len = c->out_off = 0;
                    }
                }
                continue;
            }
            bool over = c->out ? conn_flush(c) : conn_read(c);
            if (over)
                conn_close(c);
        }
    }
    return NULL;
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
    char dir[VS_PATH_MAX], why[VS_PATH_MAX + 200];
    int rc = vs_control_dir(cfg.socket_dir, dir, sizeof dir);
    if (rc != 0) {
        vs_warn("control socket: the socket directory's name is too long; no socket");
        return;
    }
    rc = prepare_dir(dir, cfg.socket_dir[0] != '\0', why, sizeof why);
    if (rc != 0) {
        vs_warn("control socket: cannot use the directory: %s; no socket", why);
        return;
    }
    sweep(dir);
    struct sockaddr_un addr = {.sun_family = AF_UNIX};
    if (vs_sock_path(dir, getpid(), vs_pidns_self(), addr.sun_path, sizeof addr.sun_path) != 0) {
        vs_warn("control socket: the path under %s is too long; no socket", dir);
        return;
    }
    int lfd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (lfd < 0)
        return;
    if (vs_sock_dead(addr.sun_path))
        unlink(addr.sun_path); /* a previous process with our pid and namespace */
    /* in a shared directory the group may connect: the socket is its */
    if (bind(lfd, (struct sockaddr *)&addr, sizeof addr) != 0 ||
        (sockdir.shared && chown(addr.sun_path, (uid_t)-1, sockdir.gid) != 0) ||
        chmod(addr.sun_path, sockdir.shared ? 0660 : 0600) != 0 || listen(lfd, 64) != 0) {
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
