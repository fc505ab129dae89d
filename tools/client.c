/*
 * client.c: see client.h. The tool trusts nothing it did not check: the
 * directory (ours, 0700, not a symlink; or shared by a group of ours,
 * closed to others), each socket (ours, or the group's there) and the
 * server behind it (our uid or root, or the uid that made the socket in a
 * shared directory), all through peer.c and sockdir.c. A request has one
 * deadline for the whole exchange and an answer has a size cap, so a
 * process that stopped answering, or one that never stops, cannot hang or
 * swell the tool. Strings in an answer are made printable before anyone
 * prints them: a server's "cmd" or owner name reaches a terminal.
 */
#define _GNU_SOURCE 1
#include "client.h"
#include "core.h"

#include <dirent.h>
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#define DEADLINE_MS 5000
/* Progress lines that say the same bytes moved for this long no longer
 * extend the wait: a job stuck in the driver would otherwise keep the tool
 * waiting for good (the server sends a line every 500 ms while it runs). */
#define STALL_MS 60000
#define ANSWER_MAX (16u << 20) /* far above any stats document */

bool client_quiet;
int client_deadline_ms = DEADLINE_MS;

const char *client_dir(void)
{
    static char dir[VS_PATH_MAX];
    if (dir[0] == '\0' && vs_control_dir(getenv("VRAMSHIM_SOCKET_DIR"), dir, sizeof dir) != 0)
        dir[0] = '\0';
    return dir;
}

bool client_parse_pid(const char *s, pid_t *out)
{
    if (s == NULL || *s == '\0' || strlen(s) > 9)
        return false;
    for (const char *p = s; *p; p++)
        if (*p < '0' || *p > '9')
            return false;
    long v = strtol(s, NULL, 10);
    if (v <= 0)
        return false;
    *out = (pid_t)v;
    return true;
}

/* A socket directory, checked (the default one once): 0 and *sd (private
 * or shared by a group), or a message on stderr and nonzero; -ENOENT when
 * nobody has made it (no process runs). */
static int dir_ok(const char *dir, struct vs_sockdir *sd)
{
    static int default_checked = 1; /* 1: not yet; 0: fine; -errno: refused */
    static struct vs_sockdir default_sd;
    bool is_default = dir == client_dir();
    if (is_default && default_checked != 1) {
        *sd = default_sd;
        return default_checked;
    }
    char why[VS_PATH_MAX + 128];
    memset(sd, 0, sizeof *sd);
    int rc = dir[0] ? vs_dir_check(dir, sd, why, sizeof why) : -ENAMETOOLONG;
    if (rc != 0 && rc != -ENOENT && !client_quiet)
        fprintf(stderr, "vramshim: refusing the socket directory: %s\n",
                dir[0] ? why : "its name is too long");
    if (is_default) {
        default_checked = rc;
        default_sd = *sd;
    }
    return rc;
}

/* pid's socket: in namespace *ns when given, else found (vs_sock_find). */
static int connect_pid(const char *dir, pid_t pid, const uint64_t *given_ns, uint64_t deadline)
{
    struct vs_sockdir sd;
    int rc = dir_ok(dir, &sd);
    if (rc != 0)
        return rc == -ENOENT ? -ENOENT : -EACCES;
    char path[VS_PATH_MAX + 48], why[VS_PATH_MAX + 128];
    uint64_t ns;
    rc = given_ns ? vs_sock_path(dir, pid, *given_ns, path, sizeof path)
                  : vs_sock_find(dir, pid, path, sizeof path, &ns);
    if (rc == -EEXIST) {
        if (!client_quiet)
            fprintf(stderr, "vramshim: pid %d runs in several other pid namespaces here; "
                        "ask from inside the one you mean\n", (int)pid);
        return -EACCES;
    }
    if (rc != 0)
        return rc;
    rc = vs_peer_connect(path, &sd, (int)(deadline - vs_now_ms()), why, sizeof why);
    if (rc == -EPERM && !client_quiet)
        fprintf(stderr, "vramshim: %s\n", why);
    return rc;
}

/* Escape what a terminal would obey: C0 controls, DEL and the C1 controls
 * (U+0080..U+009F, which include CSI). NULL when nothing needs it. */
static char *escaped(const char *s)
{
    size_t extra = 0;
    for (const unsigned char *p = (const unsigned char *)s; *p; p++)
        if (*p < 0x20 || *p == 0x7f || (*p == 0xc2 && p[1] >= 0x80 && p[1] <= 0x9f))
            extra += 5;
    if (extra == 0)
        return NULL;
    char *out = malloc(strlen(s) + extra + 1), *o = out;
    if (out == NULL)
        return strdup("?");
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (*p < 0x20 || *p == 0x7f)
            o += sprintf(o, "\\x%02x", *p);
        else if (*p == 0xc2 && p[1] >= 0x80 && p[1] <= 0x9f)
            o += sprintf(o, "\\u%04x", *++p);
        else
            *o++ = (char)*p;
    }
    *o = '\0';
    return out;
}

void client_make_printable(json_t *v)
{
    if (json_is_string(v)) {
        char *e = escaped(json_string_value(v));
        if (e)
            json_string_set(v, e);
        free(e);
    } else if (json_is_array(v)) {
        for (size_t i = 0; i < json_array_size(v); i++)
            client_make_printable(json_array_get(v, i));
    } else if (json_is_object(v)) {
        const char *key;
        json_t *member;
        void *tmp;
        json_object_foreach_safe(v, tmp, key, member) {
            client_make_printable(member);
            char *e = escaped(key);
            if (e) {
                json_object_set(v, e, member);
                json_object_del(v, key);
            }
            free(e);
        }
    }
}

#define PROGRESS_HEAD "{\"ok\":true,\"progress\":"

/* The answer line, read by the deadline and up to ANSWER_MAX bytes. A long
 * evict or free sends a progress line every 500 ms while it runs: each is
 * dropped and gives the answer another client_deadline_ms, so the wait
 * lasts as long as the work goes on, until STALL_MS pass with the bytes
 * moved unchanged. */
static bool stalled; /* read_answer gave up on a job that moved nothing */

static char *read_answer(int fd, uint64_t deadline, size_t *used_out)
{
    size_t cap = 1 << 16, used = 0;
    unsigned long long last_moved = 0;
    uint64_t last_change = vs_now_ms();
    stalled = false;
    char *buf = malloc(cap);
    while (buf) {
        uint64_t now = vs_now_ms();
        if (now >= deadline)
            break;
        struct pollfd p = {fd, POLLIN, 0};
        if (poll(&p, 1, (int)(deadline - now)) <= 0)
            continue; /* the deadline ends it, not one quiet poll */
        if (used + 1 == cap) {
            if (cap >= ANSWER_MAX)
                break;
            char *bigger = realloc(buf, cap * 2);
            if (bigger == NULL)
                break;
            buf = bigger;
            cap *= 2;
        }
        ssize_t r = recv(fd, buf + used, cap - used - 1, MSG_DONTWAIT);
        if (r < 0 && (errno == EAGAIN || errno == EINTR))
            continue;
        if (r <= 0)
            break;
        used += (size_t)r;
        char *nl;
        while (used > strlen(PROGRESS_HEAD) &&
               strncmp(buf, PROGRESS_HEAD, strlen(PROGRESS_HEAD)) == 0 &&
               (nl = memchr(buf, '\n', used)) != NULL) {
            size_t line = (size_t)(nl - buf) + 1;
            const char *m = strstr(buf, "\"moved\":");
            unsigned long long moved = m && m < nl ? strtoull(m + 8, NULL, 10) : last_moved;
            uint64_t at = vs_now_ms();
            if (moved != last_moved) {
                last_moved = moved;
                last_change = at;
            }
            memmove(buf, buf + line, used - line);
            used -= line;
            if (at - last_change < STALL_MS)
                deadline = at + (uint64_t)client_deadline_ms;
            else
                stalled = true;
        }
        if (used > 0 && buf[used - 1] == '\n') {
            buf[used] = '\0';
            *used_out = used;
            return buf;
        }
    }
    free(buf);
    return NULL;
}

static json_t *request(const char *dir, pid_t pid, const uint64_t *ns, const char *request,
                       int *exit_code);

json_t *client_request(pid_t pid, const char *line, int *exit_code)
{
    return request(client_dir(), pid, NULL, line, exit_code);
}

json_t *client_request_in(const char *dir, pid_t pid, const char *line, int *exit_code)
{
    return request(dir, pid, NULL, line, exit_code);
}

json_t *client_request_ns(pid_t pid, uint64_t ns, const char *line, int *exit_code)
{
    return request(client_dir(), pid, &ns, line, exit_code);
}

static json_t *request(const char *dir, pid_t pid, const uint64_t *ns, const char *request,
                       int *exit_code)
{
    uint64_t deadline = vs_now_ms() + (uint64_t)client_deadline_ms;
    int fd = connect_pid(dir, pid, ns, deadline);
    if (fd < 0) {
        bool gone = fd == -ENOENT || fd == -ECONNREFUSED;
        if (gone && !client_quiet)
            fprintf(stderr, "vramshim: no process %d is running under vramshim (no socket in %s)\n",
                    (int)pid, dir);
        else if (fd != -EPERM && fd != -EACCES && !client_quiet)
            fprintf(stderr, "vramshim: cannot reach process %d: %s\n", (int)pid, strerror(-fd));
        *exit_code = gone ? EXIT_NO_PROCESS : EXIT_REFUSED;
        return NULL;
    }
    size_t len = strlen(request), used = 0;
    bool sent = send(fd, request, len, MSG_NOSIGNAL) == (ssize_t)len &&
                send(fd, "\n", 1, MSG_NOSIGNAL) == 1;
    char *buf = sent ? read_answer(fd, deadline, &used) : NULL;
    close(fd);
    json_t *answer = buf ? json_loads(buf, 0, NULL) : NULL;
    free(buf);
    if (answer == NULL || !json_is_object(answer)) {
        if (!client_quiet && stalled)
            fprintf(stderr, "vramshim: process %d moved nothing for %d s; stopped waiting "
                    "(the move may still go on)\n", (int)pid, STALL_MS / 1000);
        else if (!client_quiet)
            fprintf(stderr, "vramshim: process %d gave no valid answer\n", (int)pid);
        json_decref(answer);
        *exit_code = EXIT_REFUSED;
        return NULL;
    }
    client_make_printable(answer);
    return answer;
}

static int list_all_in(const char *dir, pid_t *pids, uint64_t *ns, int cap)
{
    struct vs_sockdir sd;
    if (dir_ok(dir, &sd) != 0)
        return 0;
    DIR *d = opendir(dir);
    if (d == NULL)
        return 0;
    int n = 0;
    struct dirent *e;
    while (n < cap && (e = readdir(d)) != NULL) {
        if (!vs_sock_name_parse(e->d_name, &pids[n], &ns[n]))
            continue;
        char path[VS_PATH_MAX + sizeof e->d_name + 2], why[VS_PATH_MAX + 128];
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        if (vs_entry_check(path, &sd, NULL, why, sizeof why) == -EPERM) {
            if (!client_quiet)
                fprintf(stderr, "vramshim: %s\n", why);
        } else {
            n++;
        }
    }
    closedir(d);
    /* by pid, then namespace: a simple insertion sort keeps the pairs */
    for (int i = 1; i < n; i++)
        for (int j = i; j > 0 && (pids[j - 1] > pids[j] ||
                                  (pids[j - 1] == pids[j] && ns[j - 1] > ns[j])); j--) {
            pid_t p = pids[j];
            pids[j] = pids[j - 1];
            pids[j - 1] = p;
            uint64_t x = ns[j];
            ns[j] = ns[j - 1];
            ns[j - 1] = x;
        }
    return n;
}

int client_list_all(pid_t *pids, uint64_t *ns, int cap)
{
    return list_all_in(client_dir(), pids, ns, cap);
}

int client_list_in(const char *dir, pid_t *pids, int cap)
{
    uint64_t ns[1024];
    pid_t all[1024];
    int n_all = list_all_in(dir, all, ns, cap < 1024 ? cap : 1024), n = 0;
    for (int i = 0; i < n_all; i++)
        if (n == 0 || pids[n - 1] != all[i]) /* one pid in several namespaces */
            pids[n++] = all[i];
    return n;
}

int client_list(pid_t *pids, int cap)
{
    return client_list_in(client_dir(), pids, cap);
}

bool client_pidns_foreign(uint64_t ns) { return ns != 0 && ns != vs_pidns_self(); }

bool client_ok(json_t *answer, pid_t pid)
{
    if (json_is_true(json_object_get(answer, "ok")))
        return true;
    const char *why = json_string_value(json_object_get(answer, "error"));
    fprintf(stderr, "vramshim: process %d refused: %s\n", (int)pid, why ? why : "no reason given");
    return false;
}
