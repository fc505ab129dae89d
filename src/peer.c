/*
 * peer.c: the connecting side of a control socket (the tool, and ipc.c's
 * importer) trusts nothing it did not check.
 *
 * Before a connect: the directory is a real directory (not a symlink),
 * ours, and closed to everyone else (another user who made
 * /tmp/vramshim-$UID first could otherwise plant sockets in it), and the
 * socket entry itself is a socket of ours. The connect has a deadline, and
 * the process that answers must run as us or as root (SO_PEERCRED): a
 * socket that passed the checks and was then swapped is still caught.
 */
#define _GNU_SOURCE 1
#include "vramshim_internal.h"

#include <errno.h>
#include <stdio.h>
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

int vs_dir_check(const char *dir, char *why, size_t why_len)
{
    struct stat st;
    if (lstat(dir, &st) != 0) {
        int e = errno;
        snprintf(why, why_len, "%s: %s", dir, strerror(e));
        return -e;
    }
    if (S_ISLNK(st.st_mode) || !S_ISDIR(st.st_mode)) {
        snprintf(why, why_len, "%s is not a directory (a symlink or another file)", dir);
        return -ENOTDIR;
    }
    if (st.st_uid != getuid()) {
        snprintf(why, why_len, "%s belongs to uid %u, not to us (uid %u)", dir,
                 (unsigned)st.st_uid, (unsigned)getuid());
        return -EPERM;
    }
    if ((st.st_mode & 077) != 0) {
        snprintf(why, why_len, "%s is mode %03o; others may plant sockets in it (0700 needed)",
                 dir, (unsigned)(st.st_mode & 0777));
        return -EPERM;
    }
    return 0;
}

int vs_entry_check(const char *path, char *why, size_t why_len)
{
    struct stat st;
    if (lstat(path, &st) != 0) {
        int e = errno;
        snprintf(why, why_len, "%s: %s", path, strerror(e));
        return -e;
    }
    if (!S_ISSOCK(st.st_mode) || st.st_uid != getuid()) {
        snprintf(why, why_len, "%s is a foreign entry (%s, uid %u); not used", path,
                 S_ISSOCK(st.st_mode) ? "socket" : "not a socket", (unsigned)st.st_uid);
        return -EPERM;
    }
    return 0;
}

int vs_peer_connect(const char *path, int deadline_ms, char *why, size_t why_len)
{
    int rc = vs_entry_check(path, why, why_len);
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
        (cred.uid != getuid() && cred.uid != 0)) {
        snprintf(why, why_len, "%s is served by uid %u, not by us; not used", path,
                 (unsigned)cred.uid);
        close(fd);
        return -EPERM;
    }
    struct timeval none = {0, 0};
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &none, sizeof none);
    return fd;
}
