/*
 * relief.c: asking the other processes on the same physical device to move
 * their idle buffers out when this one cannot make room by itself.
 *
 * Peers are the control sockets in the socket directory (peer.c checks
 * each: ours, a socket, served by our uid or root; in a directory shared
 * by a group, sockdir.c, also those of the group's other users). A physical device is
 * named by its UUID, never by its index, which CUDA_VISIBLE_DEVICES
 * renumbers. One ask is two rounds, each bounded in time:
 *   1. "peer" to every socket at once: which of them hold memory on that
 *      device, their priority, how long since their last submission
 *      (a tenth of VRAMSHIM_RELIEF_MS for all of them together);
 *   2. "relieve" to those of equal or lower priority, one at a time, in
 *      vs_relief_order's order (a peer that gave lately last, then lower
 *      priority, then the most idle), each with VRAMSHIM_RELIEF_MS for its
 *      move and answer (twice that for all), until the shortfall is covered.
 * A peer that does not answer in time, or dies meanwhile, is skipped. The
 * caller holds no lock of vramshim's: the peer's answer may depend on this
 * process's own server answering a request of its own (two processes asking
 * each other at once), and that server takes the tier's locks. One line
 * says whom the ask reached and what each gave.
 *
 * A peer decides what to give itself (control_relief.c): only buffers idle
 * for its own idle_ms, only to an asker whose priority is at least its own.
 */
#define _GNU_SOURCE 1
#include "core.h"

#include <dirent.h>
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

/* Deadlines (relief_ms, VRAMSHIM_RELIEF_MS): round 1, every peer together,
 * a tenth of it; round 2, each peer's move and answer, all of it, and all
 * peers together twice it. */
#define HOLD_MS 10000    /* a peer that gave is asked last for this long */
#define RETRY_MS 250     /* a futile ask for a buffer coming back is not repeated sooner */
#define ANSWER_MAX 512

/* One ask at a time in this process: a second thread that ran short waits
 * for the first ask (vramshim's own work, bounded) and then asks only for
 * what is still missing. */
static pthread_mutex_t ask_lock = PTHREAD_MUTEX_INITIALIZER;

/* Hysteresis: who gave lately, under ask_lock. */
static struct {
    pid_t pid;
    uint64_t ns, until_ms;
} held[VS_RELIEF_MAX_PEERS];

static _Atomic uint64_t futile_at_ms;

/* A child forked while another thread asked would find ask_lock held for
 * ever; it starts with no asks under way. */
static void relief_atfork_child(void) { pthread_mutex_init(&ask_lock, NULL); }
static void relief_once(void) { pthread_atfork(NULL, NULL, relief_atfork_child); }
static pthread_once_t atfork_once = PTHREAD_ONCE_INIT;

static int by_order(const void *pa, const void *pb)
{
    const struct vs_relief_peer *a = pa, *b = pb;
    if (a->eligible != b->eligible)
        return a->eligible ? -1 : 1;
    if (a->gave_lately != b->gave_lately)
        return a->gave_lately ? 1 : -1;
    if (a->priority != b->priority)
        return a->priority < b->priority ? -1 : 1;
    if (a->idle_ms != b->idle_ms)
        return a->idle_ms > b->idle_ms ? -1 : 1;
    return a->pid < b->pid ? -1 : a->pid > b->pid;
}

void vs_relief_order(struct vs_relief_peer *p, int n, int32_t my_priority)
{
    for (int i = 0; i < n; i++)
        p[i].eligible = p[i].priority <= my_priority;
    qsort(p, (size_t)n, sizeof *p, by_order);
}

static bool gave_lately(pid_t pid, uint64_t ns, uint64_t now)
{
    for (int i = 0; i < VS_RELIEF_MAX_PEERS; i++)
        if (held[i].pid == pid && held[i].ns == ns && held[i].until_ms > now)
            return true;
    return false;
}

static void note_gave(pid_t pid, uint64_t ns, uint64_t now)
{
    int slot = 0;
    for (int i = 0; i < VS_RELIEF_MAX_PEERS; i++) {
        if (held[i].pid == pid && held[i].ns == ns) {
            slot = i;
            break;
        }
        if (held[i].until_ms < held[slot].until_ms)
            slot = i; /* the oldest, or a free one */
    }
    held[slot].pid = pid;
    held[slot].ns = ns;
    held[slot].until_ms = now + HOLD_MS;
}

/* Read one answer line into buf (NUL-terminated, without the newline):
 * true when it came before the deadline. */
static bool read_line(int fd, char *buf, size_t *len, uint64_t deadline_ms)
{
    for (;;) {
        char *nl = memchr(buf, '\n', *len);
        if (nl) {
            *nl = '\0';
            *len = (size_t)(nl - buf);
            return true;
        }
        uint64_t now = vs_now_ms();
        if (*len >= ANSWER_MAX - 1)
            return false;
        /* past the deadline, what has already arrived still counts */
        struct pollfd p = {fd, POLLIN, 0};
        int r = poll(&p, 1, now >= deadline_ms ? 0 : (int)(deadline_ms - now));
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            return false;
        ssize_t got = recv(fd, buf + *len, ANSWER_MAX - 1 - *len, MSG_DONTWAIT);
        if (got < 0 && (errno == EINTR || errno == EAGAIN))
            continue;
        if (got <= 0)
            return false; /* gone: killed, or closed on us */
        *len += (size_t)got;
        buf[*len] = '\0';
    }
}

static bool send_line(int fd, const char *line)
{
    size_t n = strlen(line);
    return send(fd, line, n, MSG_NOSIGNAL | MSG_DONTWAIT) == (ssize_t)n;
}

/* Round 1: every socket but ours, all at once. Fills peers with those on
 * the device; returns how many. */
static int probe(const char *dir, const struct vs_sockdir *sd, const char *uuid,
                 uint32_t probe_ms, struct vs_relief_peer *peers)
{
    DIR *d = opendir(dir);
    if (d == NULL)
        return 0;
    int fds[VS_RELIEF_MAX_PEERS], n = 0;
    struct vs_relief_peer cand[VS_RELIEF_MAX_PEERS];
    uint64_t self_ns = vs_pidns_self();
    char line[160];
    snprintf(line, sizeof line, "{\"cmd\":\"peer\",\"uuid\":\"%s\",\"priority\":%d}\n", uuid,
             (int)vs_limits_priority());
    struct dirent *e;
    uint64_t deadline = vs_now_ms() + probe_ms;
    while ((e = readdir(d)) != NULL && n < VS_RELIEF_MAX_PEERS) {
        pid_t pid;
        uint64_t ns;
        if (!vs_sock_name_parse(e->d_name, &pid, &ns) ||
            (pid == getpid() && (ns == self_ns || ns == 0)))
            continue;
        char path[VS_PATH_MAX + 280], why[256];
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        int fd = vs_peer_connect(path, sd, (int)probe_ms / 4, why, sizeof why);
        if (fd < 0)
            continue; /* gone (refused), or not ours: not a peer */
        if (!send_line(fd, line)) {
            close(fd);
            continue;
        }
        memset(&cand[n], 0, sizeof cand[n]);
        cand[n].pid = pid;
        cand[n].ns = ns;
        fds[n++] = fd;
    }
    closedir(d);
    char *buf = malloc(ANSWER_MAX); /* the program's thread may have a small stack */
    int found = 0;
    for (int i = 0; i < n; i++) {
        /* in turn, one deadline for all: the socket buffers hold the answers
         * of those read later */
        size_t len = 0;
        bool got = buf && read_line(fds[i], buf, &len, deadline);
        close(fds[i]);
        struct vs_relief_answer a;
        if (!got || vs_relief_answer_parse(buf, len, &a) != 0 || !a.ok ||
            a.resident == 0)
            continue;
        cand[i].priority = a.priority;
        cand[i].idle_ms = a.idle_ms;
        cand[i].resident = a.resident;
        peers[found++] = cand[i];
    }
    free(buf);
    return found;
}

/* Round 2, one peer: the bytes it moved; *why says why none. */
static uint64_t relieve(const char *dir, const struct vs_sockdir *sd,
                        const struct vs_relief_peer *p, const char *uuid,
                        uint64_t want, uint64_t deadline, uint32_t relief_ms,
                        const char **why)
{
    uint64_t now = vs_now_ms();
    if (now >= deadline)
        return *why = "not asked: out of time", 0;
    if (deadline - now > relief_ms)
        deadline = now + relief_ms;
    char path[VS_PATH_MAX + 64], err[256];
    if (vs_sock_path(dir, p->pid, p->ns, path, sizeof path) != 0)
        return *why = "no path", 0;
    int fd = vs_peer_connect(path, sd, (int)(deadline - now), err, sizeof err);
    if (fd < 0)
        return *why = "gone", 0;
    vs_debug("relief: asking process %d for %llu bytes", (int)p->pid, (unsigned long long)want);
    char line[224], buf[ANSWER_MAX];
    snprintf(line, sizeof line,
             "{\"cmd\":\"relieve\",\"uuid\":\"%s\",\"priority\":%d,\"bytes\":%llu}\n", uuid,
             (int)vs_limits_priority(), (unsigned long long)want);
    size_t len = 0;
    struct vs_relief_answer a;
    bool got = send_line(fd, line) && read_line(fd, buf, &len, deadline);
    close(fd);
    if (!got)
        return *why = "no answer in time", 0;
    if (vs_relief_answer_parse(buf, len, &a) != 0)
        return *why = "a malformed answer", 0;
    if (!a.ok)
        return *why = "refused", 0;
    if (a.moved == 0)
        *why = "nothing idle";
    return a.moved;
}

uint64_t vs_relief_ask(int dev, uint64_t want, const char *call, bool retrying)
{
    if (want == 0 || vs_state.disabled || vs_query()->uuid == NULL)
        return 0;
    uint64_t now = vs_now_ms();
    if (retrying && now - atomic_load(&futile_at_ms) < RETRY_MS)
        return 0;
    char uuid[64];
    if (vs_query()->uuid(dev, uuid, sizeof uuid) != 0)
        return 0;
    struct vs_config *cfg = malloc(sizeof *cfg);
    if (cfg == NULL)
        return 0;
    vs_limits_config(cfg);
    char dir[VS_PATH_MAX];
    int rc = vs_control_dir(cfg->socket_dir, dir, sizeof dir);
    uint32_t relief_ms = cfg->relief_ms, probe_ms = relief_ms / 10 ? relief_ms / 10 : 1;
    free(cfg);
    char why[256];
    struct vs_sockdir sd;
    if (rc != 0 || vs_dir_check(dir, &sd, why, sizeof why) != 0)
        return 0;

    pthread_once(&atfork_once, relief_once);
    pthread_mutex_lock(&ask_lock);
    struct vs_relief_peer *peers = calloc(VS_RELIEF_MAX_PEERS, sizeof *peers);
    if (peers == NULL) {
        pthread_mutex_unlock(&ask_lock);
        return 0;
    }
    int n = probe(dir, &sd, uuid, probe_ms, peers);
    now = vs_now_ms();
    for (int i = 0; i < n; i++)
        peers[i].gave_lately = gave_lately(peers[i].pid, peers[i].ns, now);
    int32_t mine = vs_limits_priority();
    vs_relief_order(peers, n, mine);

    uint64_t got = 0, deadline = vs_now_ms() + 2ULL * relief_ms;
    char said[1024];
    size_t used = 0;
    said[0] = '\0';
    for (int i = 0; i < n; i++) {
        char amount[16], part[96];
        const char *whynot = NULL;
        uint64_t moved = 0;
        if (got >= want)
            break;
        if (!peers[i].eligible) {
            snprintf(part, sizeof part, "%s%d (priority %d above ours, not asked)",
                     used ? ", " : "", (int)peers[i].pid, (int)peers[i].priority);
        } else {
            moved = relieve(dir, &sd, &peers[i], uuid, want - got, deadline, relief_ms,
                            &whynot);
            if (moved)
                snprintf(part, sizeof part, "%s%d (gave %s)", used ? ", " : "",
                         (int)peers[i].pid, vs_human_size(moved, amount, sizeof amount));
            else
                snprintf(part, sizeof part, "%s%d (%s)", used ? ", " : "", (int)peers[i].pid,
                         whynot ? whynot : "nothing");
        }
        if (moved) {
            got += moved;
            note_gave(peers[i].pid, peers[i].ns, vs_now_ms());
        }
        if (used + strlen(part) < sizeof said - 4) {
            memcpy(said + used, part, strlen(part) + 1);
            used += strlen(part);
        } else if (used < sizeof said - 4) {
            memcpy(said + used, "...", 4);
            used += 3;
        }
    }
    free(peers);
    pthread_mutex_unlock(&ask_lock);

    if (got)
        vs_stats_count_relief(false, got);
    else
        atomic_store(&futile_at_ms, vs_now_ms());
    if (n > 0) {
        char w[16], g[16];
        vs_human_size(want, w, sizeof w);
        vs_human_size(got, g, sizeof g);
        if (got >= want)
            vs_info("relief: %s short on device %d (%s) for %s; asked %s: got %s", w, dev,
                    uuid, call, said, g);
        else
            vs_warn("relief: %s short on device %d (%s) for %s; asked %s: got %s", w, dev,
                    uuid, call, said, g);
    }
    return got;
}
