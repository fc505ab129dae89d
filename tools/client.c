/*
 * client.c: see client.h. Every request has a deadline, so a process that
 * stopped answering cannot hang the tool.
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

bool client_quiet;
int client_deadline_ms = DEADLINE_MS;

static int connect_pid(const char *dir, pid_t pid)
{
    struct sockaddr_un addr = {.sun_family = AF_UNIX};
    int n = snprintf(addr.sun_path, sizeof addr.sun_path, "%s/%d.sock", dir, (int)pid);
    if (n < 0 || (size_t)n >= sizeof addr.sun_path)
        return -ENAMETOOLONG;
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    if (connect(fd, (struct sockaddr *)&addr, sizeof addr) != 0) {
        int e = errno;
        close(fd);
        return -e;
    }
    return fd;
}

json_t *client_request(pid_t pid, const char *request, int *exit_code)
{
    return client_request_in(client_dir(), pid, request, exit_code);
}

json_t *client_request_in(const char *dir, pid_t pid, const char *request, int *exit_code)
{
    int fd = connect_pid(dir, pid);
    if (fd < 0) {
        bool gone = fd == -ENOENT || fd == -ECONNREFUSED;
        if (gone && !client_quiet)
            fprintf(stderr, "vramshim: no process %d is running under vramshim (no socket in %s)\n",
                    (int)pid, dir);
        else if (!client_quiet)
            fprintf(stderr, "vramshim: cannot reach process %d: %s\n", (int)pid, strerror(-fd));
        *exit_code = gone ? EXIT_NO_PROCESS : EXIT_REFUSED;
        return NULL;
    }
    size_t len = strlen(request);
    bool sent = send(fd, request, len, MSG_NOSIGNAL) == (ssize_t)len &&
                send(fd, "\n", 1, MSG_NOSIGNAL) == 1;
    size_t cap = 1 << 16, used = 0;
    char *buf = malloc(cap);
    while (sent && buf) {
        struct pollfd p = {fd, POLLIN, 0};
        if (poll(&p, 1, client_deadline_ms) <= 0)
            break;
        if (used + 1 == cap) {
            char *bigger = realloc(buf, cap * 2);
            if (bigger == NULL)
                break;
            buf = bigger;
            cap *= 2;
        }
        ssize_t r = recv(fd, buf + used, cap - used - 1, 0);
        if (r <= 0)
            break;
        used += (size_t)r;
        if (buf[used - 1] == '\n')
            break;
    }
    close(fd);
    json_t *answer = NULL;
    if (buf && used > 0) {
        buf[used] = '\0';
        answer = json_loads(buf, 0, NULL);
    }
    free(buf);
    if (answer == NULL || !json_is_object(answer)) {
        if (!client_quiet)
            fprintf(stderr, "vramshim: process %d gave no valid answer\n", (int)pid);
        json_decref(answer);
        *exit_code = EXIT_REFUSED;
        return NULL;
    }
    return answer;
}

static int cmp_pid(const void *a, const void *b)
{
    pid_t x = *(const pid_t *)a, y = *(const pid_t *)b;
    return (x > y) - (x < y);
}

int client_list(pid_t *pids, int cap)
{
    return client_list_in(client_dir(), pids, cap);
}

int client_list_in(const char *dir, pid_t *pids, int cap)
{
    DIR *d = opendir(dir);
    if (d == NULL)
        return 0;
    int n = 0;
    struct dirent *e;
    while (n < cap && (e = readdir(d)) != NULL) {
        char *end;
        long pid = strtol(e->d_name, &end, 10);
        if (pid > 0 && strcmp(end, ".sock") == 0)
            pids[n++] = (pid_t)pid;
    }
    closedir(d);
    qsort(pids, (size_t)n, sizeof *pids, cmp_pid);
    return n;
}

bool client_ok(json_t *answer, pid_t pid)
{
    if (json_is_true(json_object_get(answer, "ok")))
        return true;
    const char *why = json_string_value(json_object_get(answer, "error"));
    fprintf(stderr, "vramshim: process %d refused: %s\n", (int)pid, why ? why : "no reason given");
    return false;
}
