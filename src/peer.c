/*
 * peer.c: the connecting side of a control socket (the tool, and ipc.c's
 * importer) trusts nothing it did not check.
 *
 * Before a connect: the directory passes sockdir.c's checks (ours and
 * closed to everyone else, or shared by a group of ours and closed to
 * others: another user who made /tmp/vramshim-$UID first could otherwise
 * plant sockets in it), and the socket entry itself is a socket of ours
 * (or, in a shared directory, of its group). The connect has a
 * deadline, and the process that answers must run as us or as root
 * (SO_PEERCRED), or in a shared directory as the uid that made the socket:
 * a socket that passed the checks and was then swapped is still caught.
 *
 * Socket names carry the pid namespace (<pid>-<namespace inode>.sock), so
 * containers that share a directory never take each other's names, and a
 * socket is proven dead only by a refused connect, never by a pid lookup
 * that cannot see other namespaces.
 */
#define _GNU_SOURCE 1
#include "core.h"

#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

uint64_t vs_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

int vs_entry_check(const char *path, const struct vs_sockdir *sd, uid_t *maker, char *why,
                   size_t why_len)
{
    struct stat st;
    if (lstat(path, &st) != 0) {
        int e = errno;
        snprintf(why, why_len, "%s: %s", path, strerror(e));
        return -e;
    }
    /* in a shared directory only its owner, root and its group's members
     * can make entries; one of them made this one for the group */
    bool ours = st.st_uid == getuid();
    bool groups = sd && sd->shared && st.st_gid == sd->gid;
    if (!S_ISSOCK(st.st_mode) || !(ours || groups)) {
        snprintf(why, why_len, "%s is a foreign entry (%s, uid %u, gid %u); not used", path,
                 S_ISSOCK(st.st_mode) ? "socket" : "not a socket", (unsigned)st.st_uid,
                 (unsigned)st.st_gid);
        return -EPERM;
    }
    if (maker)
        *maker = st.st_uid;
    return 0;
}

int vs_peer_connect(const char *path, const struct vs_sockdir *sd, int deadline_ms, char *why,
                    size_t why_len)
{
    uid_t maker;
    int rc = vs_entry_check(path, sd, &maker, why, why_len);
    if (rc != 0)
        return rc;
    struct sockaddr_un addr = {.sun_family = AF_UNIX};
    if (strlen(path) >= sizeof addr.sun_path) {
        snprintf(why, why_len, "%s: path too long", path);
        return -ENAMETOOLONG;
    }
    strcpy(addr.sun_path, path);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        rc = -errno;
        snprintf(why, why_len, "socket: %s", strerror(-rc));
        return rc;
    }
    /* A unix stream connect waits for room in a full backlog for the send
     * timeout (unix(7)); a non-blocking one would fail at once instead. */
    if (deadline_ms < 1)
        deadline_ms = 1; /* a zero timeout would mean none */
    struct timeval tv = {deadline_ms / 1000, (deadline_ms % 1000) * 1000};
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    if (connect(fd, (struct sockaddr *)&addr, sizeof addr) != 0) {
        rc = errno == EINPROGRESS ? -ETIMEDOUT : -errno;
        snprintf(why, why_len, "%s: %s", path,
                 rc == -ETIMEDOUT || rc == -EAGAIN ? "no answer to connect in time"
                                                   : strerror(-rc));
        close(fd);
        return rc;
    }
    struct ucred cred = {.uid = (uid_t)-1};
    socklen_t len = sizeof cred;
    if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0 ||
        (cred.uid != getuid() && cred.uid != 0 && !(sd && sd->shared && cred.uid == maker))) {
        snprintf(why, why_len, "%s is served by uid %u, not by us%s; not used", path,
                 (unsigned)cred.uid, sd && sd->shared ? " nor by the uid that made it" : "");
        close(fd);
        return -EPERM;
    }
    struct timeval none = {0, 0};
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &none, sizeof none);
    return fd;
}

/* ---- socket names ------------------------------------------------------------ */

/* Processes in different pid namespaces may share a pid (two containers'
 * pid 1) and a socket directory; the namespace's inode, which the kernel
 * makes unique, tells their sockets apart. 0 when /proc cannot say. */
uint64_t vs_pidns_self(void)
{
    struct stat st;
    return stat("/proc/self/ns/pid", &st) == 0 ? (uint64_t)st.st_ino : 0;
}

int vs_sock_path(const char *dir, pid_t pid, uint64_t ns, char *out, size_t cap)
{
    int n = ns ? snprintf(out, cap, "%s/%d-%llu.sock", dir, (int)pid, (unsigned long long)ns)
               : snprintf(out, cap, "%s/%d.sock", dir, (int)pid);
    return n > 0 && (size_t)n < cap ? 0 : -ENAMETOOLONG;
}

bool vs_sock_name_parse(const char *name, pid_t *pid, uint64_t *ns)
{
    char *end;
    errno = 0;
    long p = strtol(name, &end, 10);
    if (name[0] < '1' || name[0] > '9' || p <= 0 || p > INT32_MAX || errno)
        return false;
    *ns = 0;
    if (*end == '-') {
        const char *digits = end + 1;
        unsigned long long v = strtoull(digits, &end, 10);
        if (digits[0] < '1' || digits[0] > '9' || errno)
            return false;
        *ns = v;
    }
    if (strcmp(end, ".sock") != 0)
        return false;
    *pid = (pid_t)p;
    return true;
}

bool vs_sock_dead(const char *path)
{
    struct sockaddr_un addr = {.sun_family = AF_UNIX};
    if (strlen(path) >= sizeof addr.sun_path)
        return false;
    strcpy(addr.sun_path, path);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0)
        return false;
    bool dead = connect(fd, (struct sockaddr *)&addr, sizeof addr) != 0 && errno == ECONNREFUSED;
    close(fd);
    return dead;
}

int vs_sock_find(const char *dir, pid_t pid, char *out, size_t cap, uint64_t *ns_out)
{
    DIR *d = opendir(dir);
    if (d == NULL)
        return -errno;
    uint64_t self = vs_pidns_self(), other = 0;
    int others = 0;
    bool mine = false;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        pid_t p;
        uint64_t ns;
        if (!vs_sock_name_parse(e->d_name, &p, &ns) || p != pid)
            continue;
        if (ns == self || ns == 0) /* ours, or a name without a namespace */
            mine = true, other = ns;
        else if (!mine)
            others++, other = ns;
    }
    closedir(d);
    if (!mine && others == 0)
        return -ENOENT;
    if (!mine && others > 1)
        return -EEXIST; /* that pid in several other namespaces */
    *ns_out = other;
    return vs_sock_path(dir, pid, other, out, cap);
}
