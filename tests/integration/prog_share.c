/*
 * prog_share: a backed buffer shared with another process (cuIpcGetMemHandle,
 * as PyTorch's multiprocessing does) on the test driver, which refuses
 * legacy IPC on VMM memory as the real driver does.
 *
 *   1. cuIpcGetMemHandle on a pointer inside a backed buffer succeeds;
 *   2. the shared buffer never moves: vramshim_offload says -EBUSY, and
 *      pressure moves another buffer although the shared one is colder;
 *   3. a child process (under vramshim too) opens the handle, reads the
 *      parent's bytes and writes its own; the parent sees them (the same
 *      memory, not a copy); a handle with a wrong token is refused;
 *      closing unmaps;
 *   4. a pointer vramshim does not back goes to the driver untouched;
 *   5. every descriptor vramshim sends is close-on-exec already when it is
 *      sent (the driver's export lacks it, and the program execs its child
 *      meanwhile): this program defines sendmsg itself, exported with
 *      -rdynamic, so the library's call comes here first.
 */
#include "check.h"
#include "fakecuda.h"

#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#define M (1ULL << 20)

static struct check_driver d;
static CUresult (*memset8)(CUdeviceptr, unsigned char, size_t);
static CUresult (*get_handle)(CUipcMemHandle *, CUdeviceptr);
static CUresult (*open_handle)(CUdeviceptr *, CUipcMemHandle, unsigned);
static CUresult (*close_handle)(CUdeviceptr);

/* 5: the descriptors passed, and those that would have leaked into an exec */
static _Atomic unsigned fds_sent, fds_inheritable;

__attribute__((visibility("default"))) ssize_t sendmsg(int fd, const struct msghdr *msg,
                                                       int flags)
{
    static ssize_t (*next)(int, const struct msghdr *, int);
    if (next == NULL)
        next = (ssize_t(*)(int, const struct msghdr *, int))dlsym(RTLD_NEXT, "sendmsg");
    for (struct cmsghdr *c = CMSG_FIRSTHDR((struct msghdr *)msg); c != NULL;
         c = CMSG_NXTHDR((struct msghdr *)msg, c)) {
        if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS)
            continue;
        size_t n = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
        for (size_t i = 0; i < n; i++) {
            int passed;
            memcpy(&passed, CMSG_DATA(c) + i * sizeof(int), sizeof passed);
            fds_sent++;
            if (!(fcntl(passed, F_GETFD) & FD_CLOEXEC))
                fds_inheritable++;
        }
    }
    return next(fd, msg, flags);
}

static void open_driver(void)
{
    check_driver_open(&d);
    memset8 = check_sym(d.lib, "cuMemsetD8_v2");
    get_handle = check_sym(d.lib, "cuIpcGetMemHandle");
    open_handle = check_sym(d.lib, "cuIpcOpenMemHandle_v2");
    close_handle = check_sym(d.lib, "cuIpcCloseMemHandle");
}

static void to_hex(const CUipcMemHandle *h, char *out)
{
    for (size_t i = 0; i < sizeof h->reserved; i++)
        sprintf(out + 2 * i, "%02x", (unsigned char)h->reserved[i]);
}

static void from_hex(const char *in, CUipcMemHandle *h)
{
    for (size_t i = 0; i < sizeof h->reserved; i++) {
        unsigned v;
        CHECK(sscanf(in + 2 * i, "%2x", &v) == 1, "bad handle text");
        h->reserved[i] = (char)v;
    }
}

/* The other process: open, check, write, close. */
static int child(const char *hex)
{
    open_driver();
    CUipcMemHandle h;
    from_hex(hex, &h);
    CUipcMemHandle forged = h;
    forged.reserved[32] ^= 1; /* the token */
    CUdeviceptr p;
    CHECK(open_handle(&p, forged, CU_IPC_MEM_LAZY_ENABLE_PEER_ACCESS) ==
              CUDA_ERROR_INVALID_VALUE,
          "a handle with a wrong token was opened");
    CHECK_CU(open_handle(&p, h, CU_IPC_MEM_LAZY_ENABLE_PEER_ACCESS));
    size_t n = 64 * M;
    unsigned char *want = malloc(n), *got = malloc(n);
    check_fill(want, n, 1);
    CHECK_CU(d.dtoh(got, p, n));
    CHECK(memcmp(got, want, n) == 0, "the child does not see the parent's bytes");
    check_fill(want, M, 2);
    CHECK_CU(d.htod(p, want, M));
    CHECK_CU(close_handle(p));
    /* only the shared buffer was mapped here: nothing is charged to us */
    json_t *st = stats_get();
    CHECK_EQ_U64(stats_u64(st, "devices.0.allocated"), 0);
    json_decref(st);
    free(want);
    free(got);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc > 2 && strcmp(argv[1], "child") == 0)
        return child(argv[2]);
    static char sock_dir[] = "/tmp/vramshim-share-XXXXXX";
    char var[128] = "VRAMSHIM_SOCKET_DIR=";
    if (getenv("CHECK_REEXECED") == NULL) {
        /* the test runs in a child; the directory is removed once every
         * process that had a socket in it has gone (and so has its socket) */
        CHECK(mkdtemp(sock_dir) != NULL, "mkdtemp");
        rmdir(sock_dir); /* the library makes it, with its mode */
        strcat(var, sock_dir);
        pid_t test = fork();
        CHECK(test >= 0, "fork");
        if (test > 0) {
            int status;
            CHECK(waitpid(test, &status, 0) == test, "waitpid");
            CHECK(rmdir(sock_dir) == 0, "%s: %s (a socket outlived its process?)", sock_dir,
                  strerror(errno));
            return WIFEXITED(status) ? WEXITSTATUS(status) : 1;
        }
    }
    const char *env[] = {"FAKECUDA_MEM=1G", "VRAMSHIM_VRAM_LIMIT=128M",
                         "VRAMSHIM_OFFLOAD=auto", "VRAMSHIM_LOG=error", var, NULL};
    check_reexec_env(argv, env);
    open_driver();
    int (*offload)(uint64_t) = check_api("vramshim_offload");

    /* 1 */
    size_t n = 64 * M;
    unsigned char *want = malloc(n), *got = malloc(n);
    check_fill(want, n, 1);
    CUdeviceptr s, t, u, small;
    CHECK_CU(d.alloc(&s, n));
    CHECK_CU(d.htod(s, want, n));
    CUipcMemHandle h;
    CHECK_CU(get_handle(&h, s + 4096));

    /* 2: s is the coldest, yet t (48M) moves */
    CHECK(offload(s) == -EBUSY, "a shared buffer was offloaded");
    CHECK_CU(d.alloc(&t, 48 * M));
    CHECK_CU(memset8(t, 0x3c, 48 * M));
    CHECK_CU(d.alloc(&u, 32 * M));
    json_t *st = stats_get();
    CHECK_EQ_U64(stats_u64(st, "devices.0.offloaded_pinned"), 48 * M);
    json_decref(st);

    /* 3 */
    char hex[2 * CU_IPC_HANDLE_SIZE + 1];
    to_hex(&h, hex);
    pid_t pid = fork();
    CHECK(pid >= 0, "fork");
    if (pid == 0) {
        char *args[] = {argv[0], "child", hex, NULL};
        execv("/proc/self/exe", args);
        _exit(127);
    }
    int status;
    CHECK(waitpid(pid, &status, 0) == pid, "waitpid");
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0, "the child failed (status %d)", status);
    /* 5: the child took the buffer's chunks (64M: at least one) */
    CHECK(fds_sent > 0, "no descriptor went through sendmsg");
    CHECK(fds_inheritable == 0, "%u of %u descriptors sent were not close-on-exec",
          (unsigned)fds_inheritable, (unsigned)fds_sent);
    check_fill(want, M, 2); /* the child's write */
    CHECK_CU(d.dtoh(got, s, n));
    CHECK(memcmp(got, want, n) == 0, "the parent does not see the child's write");

    /* 4 */
    CHECK_CU(d.alloc(&small, M));
    CHECK(get_handle(&h, small) == CUDA_ERROR_NOT_SUPPORTED,
          "an unbacked pointer did not reach the driver");

    CHECK_CU(d.release(small));
    CHECK_CU(d.release(u));
    CHECK_CU(d.release(t));
    CHECK_CU(d.release(s));
    free(want);
    free(got);
    printf("share: ok\n");
    return 0;
}
