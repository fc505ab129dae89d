/*
 * sockdir.c: what a socket directory is, and who may do what through it.
 *
 * A directory is either private (ours, mode 0700: only this user's
 * processes and root meet there) or shared by a group: every group bit set
 * (rwx, typically 2770 or 3770), no bit for others, owned by us or by root,
 * and its group one of ours. Anyone who can make an entry in a shared
 * directory is therefore its owner, root or a member of its group, so its
 * sockets are trusted as far as a member is: a member from another uid may
 * read stats and ask for relief (VS_ACCESS_GROUP), never steer the process
 * (set, evict, free) nor map its memory (share), which stays with the same
 * user and root (VS_ACCESS_FULL), as before. Anything else (open to
 * others, sticky or not; owned by another user; a group we are not in) is
 * refused with a reason.
 *
 * The judgements are pure functions of a stat and credentials, so the unit
 * tests cover every case without a second user; the wrappers read this
 * process's credentials and the peer's (SO_PEERCRED, SO_PEERGROUPS).
 */
#define _GNU_SOURCE 1
#include "core.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#define GROUPS_ON_STACK 64

static bool in_groups(gid_t g, const struct vs_creds *who)
{
    if (who->gid == g)
        return true;
    for (int i = 0; i < who->n_groups; i++)
        if (who->groups[i] == g)
            return true;
    return false;
}

bool vs_sockdir_wants_group(mode_t mode) { return (mode & 0070) == 0070; }

int vs_sockdir_judge(const char *dir, const struct stat *st, const struct vs_creds *me,
                     struct vs_sockdir *out, char *why, size_t why_len)
{
    memset(out, 0, sizeof *out);
    if (S_ISLNK(st->st_mode) || !S_ISDIR(st->st_mode)) {
        snprintf(why, why_len, "%s is not a directory (a symlink or another file)", dir);
        return -ENOTDIR;
    }
    unsigned mode = (unsigned)(st->st_mode & 07777);
    if (!vs_sockdir_wants_group(st->st_mode)) {
        if (st->st_uid != me->uid) {
            snprintf(why, why_len, "%s belongs to uid %u, not to us (uid %u)", dir,
                     (unsigned)st->st_uid, (unsigned)me->uid);
            return -EPERM;
        }
        if ((mode & 077) != 0) {
            snprintf(why, why_len,
                     "%s is mode %04o; others may plant sockets in it (0700 needed, or "
                     "rwx for its group and nothing for others to share it)",
                     dir, mode);
            return -EPERM;
        }
        return 0;
    }
    if (st->st_uid != me->uid && st->st_uid != 0) {
        snprintf(why, why_len,
                 "%s belongs to uid %u, neither us (uid %u) nor root; a shared socket "
                 "directory must be made by root or by us",
                 dir, (unsigned)st->st_uid, (unsigned)me->uid);
        return -EPERM;
    }
    if ((mode & 07) != 0) {
        snprintf(why, why_len,
                 "%s is mode %04o; a shared socket directory must be closed to others "
                 "(2770 or 3770: its group is who may meet there)",
                 dir, mode);
        return -EPERM;
    }
    if (me->uid != 0 && !in_groups(st->st_gid, me)) {
        snprintf(why, why_len, "%s is shared by group %u, which we (uid %u) are not in", dir,
                 (unsigned)st->st_gid, (unsigned)me->uid);
        return -EPERM;
    }
    out->shared = true;
    out->gid = st->st_gid;
    return 0;
}

enum vs_access vs_sockdir_access(const struct vs_sockdir *sd, uid_t self,
                                 const struct vs_creds *peer)
{
    if (peer->uid == self || peer->uid == 0)
        return VS_ACCESS_FULL;
    if (sd && sd->shared && in_groups(sd->gid, peer))
        return VS_ACCESS_GROUP;
    return VS_ACCESS_NONE;
}

bool vs_request_allowed(enum vs_access access, enum vs_request_cmd cmd)
{
    if (access == VS_ACCESS_FULL)
        return true;
    if (access == VS_ACCESS_NONE)
        return false;
    return cmd == VS_REQ_HELLO || cmd == VS_REQ_STATS || cmd == VS_REQ_PEER ||
           cmd == VS_REQ_RELIEVE;
}

int vs_dir_check(const char *dir, struct vs_sockdir *sd, char *why, size_t why_len)
{
    struct vs_sockdir ignored;
    struct stat st;
    if (lstat(dir, &st) != 0) {
        int e = errno;
        snprintf(why, why_len, "%s: %s", dir, strerror(e));
        return -e;
    }
    gid_t stack[GROUPS_ON_STACK], *groups = stack;
    int n = getgroups(GROUPS_ON_STACK, stack);
    if (n < 0 && errno == EINVAL) { /* more than fit on the stack */
        int want = getgroups(0, NULL);
        groups = want > 0 ? malloc(sizeof(gid_t) * (size_t)want) : NULL;
        n = groups ? getgroups(want, groups) : -1;
    }
    struct vs_creds me = {.uid = getuid(), .gid = getegid(), .groups = groups,
                          .n_groups = n > 0 ? n : 0};
    int rc = vs_sockdir_judge(dir, &st, &me, sd ? sd : &ignored, why, why_len);
    if (groups != stack)
        free(groups);
    return rc;
}

enum vs_access vs_peer_access(int fd, const struct vs_sockdir *sd, pid_t *pid)
{
    struct ucred cred;
    socklen_t len = sizeof cred;
    if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0)
        return VS_ACCESS_NONE;
    if (pid)
        *pid = cred.pid;
    struct vs_creds peer = {.uid = cred.uid, .gid = cred.gid};
    gid_t stack[GROUPS_ON_STACK], *groups = stack;
    /* the peer's supplementary groups as they were at its connect
     * (socket(7), Linux 4.13); without them only its primary group counts */
    socklen_t glen = sizeof stack;
    if (sd && sd->shared && cred.uid != getuid() && cred.uid != 0) {
        int r = getsockopt(fd, SOL_SOCKET, SO_PEERGROUPS, groups, &glen);
        if (r != 0 && errno == ERANGE && (groups = malloc(glen)) != NULL)
            r = getsockopt(fd, SOL_SOCKET, SO_PEERGROUPS, groups, &glen);
        if (r == 0 && groups)
            peer.groups = groups, peer.n_groups = (int)(glen / sizeof(gid_t));
    }
    enum vs_access a = vs_sockdir_access(sd, getuid(), &peer);
    if (groups != stack)
        free(groups);
    return a;
}
