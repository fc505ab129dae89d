/*
 * ipc.c: sharing device memory with another process (cuIpc*MemHandle).
 *
 * PyTorch's multiprocessing shares CUDA tensors with cudaIpcGetMemHandle.
 * The driver refuses that on VMM memory, which is what vramshim backs
 * buffers with, so for a backed buffer vramshim answers itself: the buffer
 * is brought back to the device and marked never to move again (tier.c),
 * and the handle the program gets names this process, the buffer and a
 * random token. The other process (also under vramshim, as PyTorch's
 * workers are: they inherit LD_PRELOAD) opens it by asking this process's
 * control socket, which sends the chunks' memory as file descriptors
 * (control.c); it imports and maps them at a fresh address, as the driver's
 * own IPC does. Only a process of the same user can ask (the socket's
 * directory and SO_PEERCRED), and only for a buffer that was shared, under
 * its token. Any other pointer or handle goes to the driver untouched.
 */
#include "hooks.h"

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>
#include <uthash.h>

#define IPC_MAGIC "vsipc1"
#define OPEN_DEADLINE_MS 10000

/* What vramshim puts in a CUipcMemHandle (64 bytes). */
struct ipc_handle {
    char magic[8];
    int32_t pid, dev;
    uint64_t base, size, token;
    uint64_t pidns; /* the pid's namespace: its socket's name (peer.c) */
};
_Static_assert(sizeof(struct ipc_handle) <= CU_IPC_HANDLE_SIZE, "fits a CUipcMemHandle");

/* A buffer of another process mapped here. */
struct opened {
    uint64_t base, span;
    uint32_t n;
    CUmemGenericAllocationHandle *handles;
    uint64_t *sizes;
    UT_hash_handle hh;
};
static pthread_mutex_t opened_lock = PTHREAD_MUTEX_INITIALIZER;
static struct opened *opened_by_base;

/* A forked child has none of the parent's mappings (they belong to its
 * context) and no lock another thread held at the fork. */
void vs_ipc_atfork_child(void)
{
    pthread_mutex_init(&opened_lock, NULL);
    opened_by_base = NULL;
}

CUresult vs_hook_cuIpcGetMemHandle(CUipcMemHandle *handle, CUdeviceptr dptr)
{
    struct vs_share sh;
    CUresult rc = handle ? vs_tier_share(dptr, "cuIpcGetMemHandle", &sh) : CUDA_ERROR_NOT_FOUND;
    if (rc == CUDA_ERROR_NOT_FOUND)
        return vs_real.cuIpcGetMemHandle(handle, dptr);
    if (rc != CUDA_SUCCESS)
        return rc;
    struct ipc_handle h = {.pid = (int32_t)getpid(), .dev = sh.dev, .base = sh.base,
                           .size = sh.size, .token = sh.token, .pidns = vs_pidns_self()};
    memcpy(h.magic, IPC_MAGIC, sizeof IPC_MAGIC);
    memset(handle, 0, sizeof *handle);
    memcpy(handle->reserved, &h, sizeof h);
    return CUDA_SUCCESS;
}

/* A dma-buf of a backed buffer's range (an RDMA NIC, another driver) names
 * the device memory mapped there when it is exported; a move would leave
 * the exporter's reader with stale pages. So the buffer comes back whole
 * first and never moves again, as one shared through cuIpcGetMemHandle:
 * the descriptor has no end vramshim can see. */
CUresult vs_hook_cuMemGetHandleForAddressRange(void *handle, CUdeviceptr dptr, size_t size,
                                               CUmemRangeHandleType handleType,
                                               unsigned long long flags)
{
    struct vs_share sh;
    CUresult rc = handle ? vs_tier_share(dptr, "cuMemGetHandleForAddressRange", &sh)
                         : CUDA_ERROR_NOT_FOUND;
    if (rc != CUDA_SUCCESS && rc != CUDA_ERROR_NOT_FOUND)
        return rc;
    return vs_real.cuMemGetHandleForAddressRange(handle, dptr, size, handleType, flags);
}

/* ---- the importer --------------------------------------------------------- */

/* The exporter's socket, checked as peer.c does: our directory, our socket,
 * a server running as us; the connect has part of the deadline. */
static int connect_to(pid_t pid, uint64_t pidns, uint64_t deadline, char *why,
                      size_t why_len)
{
    struct vs_config cfg;
    vs_limits_config(&cfg);
    char dir[VS_PATH_MAX], path[VS_PATH_MAX + 32];
    if (vs_control_dir(cfg.socket_dir, dir, sizeof dir) != 0) {
        snprintf(why, why_len, "the socket directory's name is too long");
        return -ENAMETOOLONG;
    }
    int rc = vs_dir_check(dir, NULL, why, why_len);
    if (rc != 0)
        return rc;
    vs_sock_path(dir, pid, pidns, path, sizeof path);
    uint64_t now = vs_now_ms();
    /* memory is handed only between processes of one user: no group */
    return vs_peer_connect(path, NULL, now < deadline ? (int)(deadline - now) : 1, why,
                           why_len);
}

struct answer {
    char line[512];
    size_t len;
    struct vs_share_answer layout;
    int fds[VS_SHARE_MAX_CHUNKS];
    int n_fds;
};

/* Read the answer line, check it against the handle, then read the
 * descriptors it announces, all by the deadline. */
static bool receive(int fd, uint64_t handle_size, uint64_t deadline, struct answer *a,
                    char *why, size_t why_len)
{
    long want = -1;
    snprintf(why, why_len, "no complete answer in time");
    for (;;) {
        char *nl = memchr(a->line, '\n', a->len);
        if (nl && want < 0) {
            *nl = '\0';
            if (vs_share_answer_parse(a->line, (size_t)(nl - a->line), &a->layout) != 0) {
                snprintf(why, why_len, "an answer that is not a share answer");
                return false;
            }
            if (vs_share_answer_check(&a->layout, handle_size, why, why_len) != 0)
                return false;
            want = (long)a->layout.n;
        }
        if (want >= 0 && a->n_fds >= want)
            return true;
        uint64_t now = vs_now_ms();
        if (now >= deadline)
            return false;
        struct pollfd p = {fd, POLLIN, 0};
        if (poll(&p, 1, (int)(deadline - now)) <= 0)
            continue;
        union {
            char space[CMSG_SPACE(sizeof(int) * VS_SHARE_FDS_PER_MSG)];
            struct cmsghdr align;
        } ctl;
        char spill[64];
        bool in_line = want < 0;
        struct iovec iov = in_line ? (struct iovec){a->line + a->len, sizeof a->line - 1 - a->len}
                                   : (struct iovec){spill, sizeof spill};
        if (iov.iov_len == 0) {
            snprintf(why, why_len, "an answer line longer than %zu bytes", sizeof a->line);
            return false;
        }
        struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = ctl.space,
                             .msg_controllen = sizeof ctl.space};
        ssize_t r = recvmsg(fd, &msg, MSG_CMSG_CLOEXEC | MSG_DONTWAIT);
        if (r == 0)
            return false;
        if (r < 0) {
            if (errno == EINTR || errno == EAGAIN)
                continue;
            return false;
        }
        if (in_line)
            a->len += (size_t)r;
        for (struct cmsghdr *c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c)) {
            if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS)
                continue;
            int k = (int)((c->cmsg_len - CMSG_LEN(0)) / sizeof(int));
            for (int i = 0; i < k; i++) {
                int got;
                memcpy(&got, CMSG_DATA(c) + i * sizeof(int), sizeof got);
                if (a->n_fds < VS_SHARE_MAX_CHUNKS)
                    a->fds[a->n_fds++] = got;
                else
                    close(got);
            }
        }
    }
}

static void unmap_opened(struct opened *o, uint32_t mapped)
{
    uint64_t off = 0;
    for (uint32_t i = 0; i < o->n; i++) {
        if (i < mapped)
            vs_real.cuMemUnmap(o->base + off, o->sizes[i]);
        if (o->handles[i])
            vs_real.cuMemRelease(o->handles[i]);
        off += o->sizes[i];
    }
    if (o->base)
        vs_real.cuMemAddressFree(o->base, o->span);
    free(o->handles);
    free(o->sizes);
    free(o);
}

/* Import the descriptors and map them one after another at a fresh range.
 * The layout was checked against the handle (vs_share_answer_check). */
static CUresult map_answer(const struct answer *a, struct opened **out)
{
    uint64_t span = a->layout.span, gran = a->layout.gran, chunk = a->layout.chunk;
    if (a->n_fds != (int)a->layout.n || !vs_real.cuMemImportFromShareableHandle)
        return CUDA_ERROR_INVALID_VALUE;
    struct opened *o = calloc(1, sizeof *o);
    if (o)
        o->handles = calloc((size_t)a->n_fds, sizeof *o->handles);
    if (o)
        o->sizes = calloc((size_t)a->n_fds, sizeof *o->sizes);
    if (o == NULL || o->handles == NULL || o->sizes == NULL) {
        if (o)
            unmap_opened(o, 0);
        return CUDA_ERROR_OUT_OF_MEMORY;
    }
    o->n = (uint32_t)a->n_fds;
    o->span = span;
    CUdeviceptr va = 0;
    CUresult rc = vs_real.cuMemAddressReserve(&va, span, gran, 0, 0);
    o->base = rc == CUDA_SUCCESS ? va : 0;
    CUdevice dev = 0;
    if (rc == CUDA_SUCCESS)
        rc = vs_real.cuCtxGetDevice(&dev);
    uint32_t mapped = 0;
    for (uint32_t i = 0; rc == CUDA_SUCCESS && i < o->n; i++) {
        uint64_t off = (uint64_t)i * chunk;
        o->sizes[i] = span - off < chunk ? span - off : chunk;
        rc = vs_real.cuMemImportFromShareableHandle(&o->handles[i],
                                                    (void *)(intptr_t)a->fds[i],
                                                    CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR);
        if (rc == CUDA_SUCCESS)
            rc = vs_real.cuMemMap(o->base + off, o->sizes[i], 0, o->handles[i], 0);
        if (rc == CUDA_SUCCESS)
            mapped++;
    }
    if (rc == CUDA_SUCCESS) {
        CUmemAccessDesc d;
        memset(&d, 0, sizeof d);
        d.location.type = CU_MEM_LOCATION_TYPE_DEVICE;
        d.location.id = (int)dev;
        d.flags = CU_MEM_ACCESS_FLAGS_PROT_READWRITE;
        rc = vs_real.cuMemSetAccess(o->base, span, &d, 1);
    }
    if (rc != CUDA_SUCCESS) {
        unmap_opened(o, mapped);
        return rc;
    }
    *out = o;
    return CUDA_SUCCESS;
}

CUresult vs_hook_cuIpcOpenMemHandle_v2(CUdeviceptr *pdptr, CUipcMemHandle handle,
                                       unsigned int flags)
{
    struct ipc_handle h;
    memcpy(&h, handle.reserved, sizeof h);
    if (memcmp(h.magic, IPC_MAGIC, sizeof IPC_MAGIC) != 0)
        return vs_real.cuIpcOpenMemHandle_v2(pdptr, handle, flags);
    if (pdptr == NULL)
        return CUDA_ERROR_INVALID_VALUE;
    uint64_t deadline = vs_now_ms() + OPEN_DEADLINE_MS;
    char why[256];
    int fd = connect_to((pid_t)h.pid, h.pidns, deadline, why, sizeof why);
    if (fd < 0) {
        vs_warn("cuIpcOpenMemHandle: process %d, which shared the buffer, cannot be "
                "reached: %s", (int)h.pid, why);
        return CUDA_ERROR_INVALID_VALUE;
    }
    char req[128];
    int n = snprintf(req, sizeof req, "{\"cmd\":\"share\",\"base\":%llu,\"token\":%llu}\n",
                     (unsigned long long)h.base, (unsigned long long)h.token);
    struct answer *a = calloc(1, sizeof *a);
    CUresult rc = CUDA_ERROR_INVALID_VALUE;
    struct opened *o = NULL;
    snprintf(why, sizeof why, "cannot send the request");
    if (a && send(fd, req, (size_t)n, MSG_NOSIGNAL) == n &&
        receive(fd, h.size, deadline, a, why, sizeof why))
        rc = map_answer(a, &o);
    else if (a == NULL)
        rc = CUDA_ERROR_OUT_OF_MEMORY;
    if (rc != CUDA_SUCCESS)
        vs_warn("cuIpcOpenMemHandle: process %d did not hand over its buffer at 0x%llx: %s",
                (int)h.pid, (unsigned long long)h.base,
                a == NULL ? "out of memory" : why);
    for (int i = 0; a && i < a->n_fds; i++)
        close(a->fds[i]);
    free(a);
    close(fd);
    if (rc != CUDA_SUCCESS)
        return rc;
    pthread_mutex_lock(&opened_lock);
    HASH_ADD(hh, opened_by_base, base, sizeof o->base, o);
    pthread_mutex_unlock(&opened_lock);
    *pdptr = o->base;
    return CUDA_SUCCESS;
}

CUresult vs_hook_cuIpcCloseMemHandle(CUdeviceptr dptr)
{
    uint64_t base = dptr;
    struct opened *o;
    pthread_mutex_lock(&opened_lock);
    HASH_FIND(hh, opened_by_base, &base, sizeof base, o);
    if (o)
        HASH_DEL(opened_by_base, o);
    pthread_mutex_unlock(&opened_lock);
    if (o == NULL)
        return vs_real.cuIpcCloseMemHandle(dptr);
    /* the driver's close waits for work on the mapping; so does this */
    if (vs_real.cuCtxSynchronize)
        vs_real.cuCtxSynchronize();
    unmap_opened(o, o->n);
    return CUDA_SUCCESS;
}
