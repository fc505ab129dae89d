/*
 * check.h: helpers for the integration programs, which run under
 * LD_PRELOAD=libvramshim.so with the test driver as libcuda.so.1 and compare
 * what vramshim reports (its stats JSON, read with jansson) with what the
 * program itself did.
 */
#ifndef CHECK_H
#define CHECK_H

#define __CUDA_API_VERSION_INTERNAL 1
#include <cuda.h>
#include <fakecuda.h>
#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/types.h>

#define CHECK(cond, ...)                                                    \
    do {                                                                    \
        if (!(cond)) {                                                      \
            fprintf(stderr, "FAIL %s:%d: %s: ", __FILE__, __LINE__, #cond); \
            fprintf(stderr, __VA_ARGS__);                                   \
            fprintf(stderr, "\n");                                          \
            exit(1);                                                        \
        }                                                                   \
    } while (0)

#define CHECK_CU(call)                                                      \
    do {                                                                    \
        CUresult rc_ = (call);                                              \
        CHECK(rc_ == CUDA_SUCCESS, "%s returned %d", #call, (int)rc_);      \
    } while (0)

#define CHECK_EQ_U64(got, want)                                             \
    do {                                                                    \
        unsigned long long g_ = (got), w_ = (want);                         \
        CHECK(g_ == w_, "%s = %llu, expected %llu", #got, g_, w_);          \
    } while (0)

/* dlopen("libcuda.so.1") and dlsym of one name, failing the test if absent. */
void *check_libcuda(void);
void *check_sym(void *lib, const char *name);

/* cuInit + primary context of device 0 made current, through `lib`. */
void check_context(void *lib, int device);

/* What the multi-threaded programs share: the driver, its allocation entry
 * points, and a context each thread can make current. */
struct check_driver {
    void *lib;
    CUresult (*alloc)(CUdeviceptr *, size_t);
    CUresult (*release)(CUdeviceptr);
    CUresult (*htod)(CUdeviceptr, const void *, size_t);
    CUresult (*dtoh)(void *, CUdeviceptr, size_t);
    CUresult (*set_ctx)(CUcontext);
    CUcontext ctx;
};
void check_driver_open(struct check_driver *d);

/* A kernel of the test driver (fakecuda_register_kernel): body runs on the
 * stream's thread with the launch's parameters, whose sizes are given. */
CUfunction check_kernel(void *lib, const char *name, fakecuda_kernel_fn body, int nparams,
                        const size_t *sizes);

/* copy(dst, src, n): n bytes from src to dst, on the device. */
CUfunction check_copy_kernel(void *lib);

/* A hang is the failure the liveness tests look for: if this process still
 * runs `seconds` from now, it prints "FAIL <prog>: a call hung" and exits.
 * The bound is far above any run, so it never depends on the machine's
 * speed; it only turns a hang into a failure. */
void check_watchdog(const char *prog, unsigned seconds);

/* The stats document, parsed. Fails the test if vramshim is not loaded. */
json_t *stats_get(void);
/* A number by dotted path: "counters.allocs", "devices.0.allocated". */
uint64_t stats_u64(json_t *root, const char *path);
/* The same number in a fresh stats document. */
uint64_t stats_now(const char *path);
/* The owners[] entry for (name, device), or NULL. */
json_t *stats_owner(json_t *root, const char *name, int device);
/* Check owner (name, device) holds `bytes` in `count` live allocations. */
void check_owner(json_t *root, const char *name, int device, uint64_t bytes,
                 uint64_t count);

/* Re-run this program with var=value set (once), for tests that need a
 * variable set before the library loads. */
void check_reexec_with(char **argv, const char *var, const char *value);

/* Re-run this program once with every "VAR=VALUE" of the NULL-ended list
 * set (CHECK_REEXECED marks the second run). */
void check_reexec_env(char **argv, const char *const *assignments);

/* Run a shell command line: its exit status (-1 when it did not exit),
 * and its output in out (at most cap-1 bytes, NUL-terminated). */
int check_capture(const char *cmd, char *out, size_t cap);

/* check_reexec_env with a socket directory of the run's own as well
 * (VRAMSHIM_SOCKET_DIR=/tmp/vs-NAME-XXXXXX, a fresh name the library
 * makes); in the re-run, returns that directory, removed at exit. */
const char *check_reexec_sock_dir(char **argv, const char *name, const char *const *assignments);

/* Start path with argv, its stdin and stdout piped to *to and *from;
 * without LD_PRELOAD when no_preload. Returns its pid. */
pid_t check_spawn(const char *path, char *const argv[], bool no_preload, FILE **to,
                  FILE **from);

/* The test pattern of `seed`: every byte depends on its offset, so a
 * misplaced or stale chunk shows. */
void check_fill(unsigned char *buf, size_t n, unsigned seed);
/* How many operations a randomized test runs: n, or n/10 with
 * CHECK_QUICK=1 (the sanitizer runs of the test command, where everything is 2-10x
 * slower; never the default). */
int check_ops(int n);
/* xorshift64: the randomized tests' reproducible draws. */
uint64_t check_rnd(uint64_t *state);
/* Read n bytes at p with dtoh and fail at the first that differs from want. */
void check_device_bytes(CUresult (*dtoh)(void *, CUdeviceptr, size_t), CUdeviceptr p,
                        const unsigned char *want, size_t n, const char *what);

/* The control socket of pid in dir: <pid>-<pid namespace inode>.sock. */
void check_sock_path(const char *dir, pid_t pid, char *out, size_t cap);

/* A function of vramshim's public API, failing the test if absent. */
void *check_api(const char *name);
/* vramshim_check: vramshim's own books balance (registry, budget, offload);
 * call where no other thread is allocating, freeing or moving. */
void check_invariants(const char *where);
/* Threads of a randomized run meet at `phase` (a barrier for all of them)
 * after `op` operations each; one checks the invariants while the others
 * wait, then all go on. */
#include <pthread.h>
void check_phase(pthread_barrier_t *phase, int op);

int check_owner_push(const char *name);
int check_owner_pop(void);

#endif
