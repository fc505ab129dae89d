/*
 * relief_workers.c: worker processes on one test device shared through
 * FAKECUDA_SHM, each under vramshim with settings of its own, in a socket
 * directory of the scenario's own, driven one command and one answer at a
 * time through pipes so that every step happens in a known order
 * (prog_relief, prog_relief_more, whose main is relief_main here). See
 * relief_workers.h for the commands.
 */
#define _GNU_SOURCE 1
#include "relief_workers.h"
#include "fakecuda.h"

#include <errno.h>
#include <grp.h>
#include <signal.h>
#include <stdarg.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define MAX_BUFS 16

/* ---- the worker ----------------------------------------------------------- */

static struct {
    CUresult (*alloc)(CUdeviceptr *, size_t);
    CUresult (*release)(CUdeviceptr);
    CUresult (*htod)(CUdeviceptr, const void *, size_t);
    CUresult (*dtoh)(void *, CUdeviceptr, size_t);
    CUresult (*launch)(CUfunction, unsigned, unsigned, unsigned, unsigned, unsigned,
                       unsigned, unsigned, CUstream, void **, void **);
    CUresult (*sync)(void);
    unsigned long long (*used)(int);
    CUfunction touch, block;
    /* the other kinds of allocation (relief for each) */
    CUresult (*managed)(CUdeviceptr *, size_t, unsigned);
    CUresult (*pitch)(CUdeviceptr *, size_t *, size_t, size_t, unsigned);
    CUresult (*async)(CUdeviceptr *, size_t, CUstream);
    CUresult (*free_async)(CUdeviceptr, CUstream);
    CUresult (*reserve)(CUdeviceptr *, size_t, size_t, CUdeviceptr, unsigned long long);
    CUresult (*create)(CUmemGenericAllocationHandle *, size_t, const CUmemAllocationProp *,
                       unsigned long long);
    CUresult (*map)(CUdeviceptr, size_t, size_t, CUmemGenericAllocationHandle,
                    unsigned long long);
    CUresult (*access)(CUdeviceptr, size_t, const CUmemAccessDesc *, size_t);
    CUresult (*unmap)(CUdeviceptr, size_t);
    CUresult (*addr_free)(CUdeviceptr, size_t);
    CUresult (*mem_release)(CUmemGenericAllocationHandle);
} cu;

enum kind { PLAIN, MANAGED, PITCH, ASYNC, VMM };
static const char *const kind_names[] = {"plain", "managed", "pitch", "async", "vmm"};

/* One buffer of `bytes` by that kind: its device address, or the error. */
static CUresult alloc_kind(enum kind k, CUdeviceptr *p, size_t bytes,
                           CUmemGenericAllocationHandle *h)
{
    size_t pitch;
    CUresult rc;
    switch (k) {
    case MANAGED:
        return cu.managed(p, bytes, CU_MEM_ATTACH_GLOBAL);
    case PITCH: /* rows of 1 MiB, a multiple of 512: the pitch is the width */
        rc = cu.pitch(p, &pitch, M, bytes / M, 4);
        CHECK(rc != CUDA_SUCCESS || pitch == M, "pitch %zu", pitch);
        return rc;
    case ASYNC:
        rc = cu.async(p, bytes, NULL);
        if (rc == CUDA_SUCCESS)
            CHECK_CU(cu.sync());
        return rc;
    case VMM: {
        CUmemAllocationProp prop = {.type = CU_MEM_ALLOCATION_TYPE_PINNED,
                                    .location = {CU_MEM_LOCATION_TYPE_DEVICE, 0}};
        rc = cu.create(h, bytes, &prop, 0);
        if (rc != CUDA_SUCCESS)
            return rc;
        CUmemAccessDesc rw = {.location = {CU_MEM_LOCATION_TYPE_DEVICE, 0},
                              .flags = CU_MEM_ACCESS_FLAGS_PROT_READWRITE};
        CHECK_CU(cu.reserve(p, bytes, 0, 0, 0));
        CHECK_CU(cu.map(*p, bytes, 0, *h, 0));
        CHECK_CU(cu.access(*p, bytes, &rw, 1));
        return CUDA_SUCCESS;
    }
    default:
        return cu.alloc(p, bytes);
    }
}

static void free_kind(enum kind k, CUdeviceptr p, size_t bytes, CUmemGenericAllocationHandle h)
{
    if (k == ASYNC) {
        CHECK_CU(cu.free_async(p, NULL));
        CHECK_CU(cu.sync());
    } else if (k == VMM) {
        CHECK_CU(cu.unmap(p, bytes));
        CHECK_CU(cu.addr_free(p, bytes));
        CHECK_CU(cu.mem_release(h));
    } else {
        CHECK_CU(cu.release(p));
    }
}

/* RELIEF_TEST_AS=uid:gid:group: the worker runs as that user, in that
 * one supplementary group, before it first reaches the driver (root
 * only: the test of a socket directory shared by a group). */
static void become(const char *as)
{
    unsigned uid, gid, group;
    CHECK(sscanf(as, "%u:%u:%u", &uid, &gid, &group) == 3, "RELIEF_TEST_AS=%s", as);
    gid_t groups[] = {(gid_t)group};
    CHECK(setgroups(1, groups) == 0 && setgid((gid_t)gid) == 0 && setuid((uid_t)uid) == 0,
          "cannot become uid %u", uid);
}

static void touch_body(void **params, fakecuda_dim3 grid, fakecuda_dim3 block)
{
    (void)grid;
    (void)block;
    volatile unsigned char *p = (unsigned char *)(uintptr_t)*(CUdeviceptr *)params[0];
    (void)*p;
}

/* Never returns: the worker running it is killed (scenario 3). */
static void block_body(void **params, fakecuda_dim3 grid, fakecuda_dim3 block)
{
    (void)params;
    (void)grid;
    (void)block;
    for (;;)
        pause();
}

static unsigned seed_of(int i) { return (unsigned)getpid() * 31u + (unsigned)i; }

static int worker(void)
{
    if (getenv("RELIEF_TEST_AS"))
        become(getenv("RELIEF_TEST_AS"));
    void *lib = check_libcuda();
    check_context(lib, 0);
    cu.alloc = check_sym(lib, "cuMemAlloc_v2");
    cu.release = check_sym(lib, "cuMemFree_v2");
    cu.htod = check_sym(lib, "cuMemcpyHtoD_v2");
    cu.dtoh = check_sym(lib, "cuMemcpyDtoH_v2");
    cu.launch = check_sym(lib, "cuLaunchKernel");
    cu.sync = check_sym(lib, "cuCtxSynchronize");
    cu.used = check_sym(lib, "fakecuda_used");
    cu.managed = check_sym(lib, "cuMemAllocManaged");
    cu.pitch = check_sym(lib, "cuMemAllocPitch_v2");
    cu.async = check_sym(lib, "cuMemAllocAsync");
    cu.free_async = check_sym(lib, "cuMemFreeAsync");
    cu.reserve = check_sym(lib, "cuMemAddressReserve");
    cu.create = check_sym(lib, "cuMemCreate");
    cu.map = check_sym(lib, "cuMemMap");
    cu.access = check_sym(lib, "cuMemSetAccess");
    cu.unmap = check_sym(lib, "cuMemUnmap");
    cu.addr_free = check_sym(lib, "cuMemAddressFree");
    cu.mem_release = check_sym(lib, "cuMemRelease");
    CUfunction (*reg)(const char *, fakecuda_kernel_fn, int, const size_t *) =
        check_sym(lib, "fakecuda_register_kernel");
    cu.touch = reg("touch", touch_body, 1, (const size_t[]){8});
    cu.block = reg("block", block_body, 1, (const size_t[]){8});
    int (*set)(const char *, const char *) = check_api("vramshim_set");

    CUdeviceptr buf[MAX_BUFS];
    size_t size[MAX_BUFS];
    enum kind kinds[MAX_BUFS];
    CUmemGenericAllocationHandle handle[MAX_BUFS];
    int n = 0;
    char line[256];
    printf("ready\n");
    fflush(stdout);
    while (fgets(line, sizeof line, stdin)) {
        char key[64], value[64];
        if (line[0] == 'a') { /* a MiB [kind]: allocate and fill */
            size_t bytes = strtoull(line + 2, NULL, 10) * M;
            CHECK(n < MAX_BUFS, "too many buffers");
            char name[16] = "plain";
            sscanf(line + 2, "%*u %15s", name);
            kinds[n] = PLAIN;
            for (int k = 0; k <= VMM; k++)
                if (strcmp(name, kind_names[k]) == 0)
                    kinds[n] = (enum kind)k;
            CUresult rc = alloc_kind(kinds[n], &buf[n], bytes, &handle[n]);
            if (rc == CUDA_SUCCESS) {
                unsigned char *host = malloc(bytes);
                check_fill(host, bytes, seed_of(n));
                CHECK_CU(cu.htod(buf[n], host, bytes));
                free(host);
                size[n++] = bytes;
            }
            CHECK(rc == CUDA_SUCCESS || rc == CUDA_ERROR_OUT_OF_MEMORY, "alloc: %d", (int)rc);
            printf("%s\n", rc == CUDA_SUCCESS ? "ok" : "oom");
        } else if (line[0] == 't') { /* a kernel naming each buffer */
            for (int i = 0; i < n; i++) {
                void *params[] = {&buf[i]};
                CHECK_CU(cu.launch(cu.touch, 1, 1, 1, 1, 1, 1, 0, NULL, params, NULL));
            }
            CHECK_CU(cu.sync());
            printf("ok\n");
        } else if (line[0] == 'c') { /* every byte of every buffer */
            for (int i = 0; i < n; i++) {
                unsigned char *want = malloc(size[i]);
                check_fill(want, size[i], seed_of(i));
                check_device_bytes(cu.dtoh, buf[i], want, size[i], "a worker's buffer");
                free(want);
            }
            printf("ok\n");
        } else if (line[0] == 'f') { /* free the last buffer */
            CHECK(n > 0, "nothing to free");
            n--;
            free_kind(kinds[n], buf[n], size[n], handle[n]);
            printf("ok\n");
        } else if (line[0] == 'b') { /* a kernel that never ends */
            void *params[] = {&buf[0]};
            CHECK_CU(cu.launch(cu.block, 1, 1, 1, 1, 1, 1, 0, NULL, params, NULL));
            printf("ok\n");
        } else if (sscanf(line, "s %63s %63s", key, value) == 2) {
            printf("%s\n", set(key, value) == 0 ? "ok" : "no");
        } else if (sscanf(line, "q %63s", key) == 1) {
            json_t *st = stats_get();
            printf("%llu\n", (unsigned long long)stats_u64(st, key));
            json_decref(st);
        } else if (line[0] == 'u') {
            printf("%llu\n", cu.used(0));
        } else {
            CHECK(false, "unknown command %s", line);
        }
        fflush(stdout);
    }
    return 0;
}

/* ---- driving the workers --------------------------------------------------- */

/* this program, which the workers run again */
static char self_path[4096];
char sock_dir[64], shm_name[64];
const char *dev_mem = "256M";
static int scenario_no;

/* A fresh device (of dev_mem) and socket directory for the next scenario. */
void scenario(void)
{
    scenario_no++;
    snprintf(shm_name, sizeof shm_name, "/vramshim-relief-%d-%d", (int)getpid(), scenario_no);
    snprintf(sock_dir, sizeof sock_dir, "/tmp/vs-relief-XXXXXX");
    CHECK(mkdtemp(sock_dir) != NULL, "mkdtemp");
}

void start(struct worker *w, const char *name, const char *const *env)
{
    snprintf(w->name, sizeof w->name, "%s", name);
    setenv("FAKECUDA_SHM", shm_name, 1);
    setenv("FAKECUDA_MEM", dev_mem, 1);
    setenv("VRAMSHIM_SOCKET_DIR", sock_dir, 1);
    setenv("VRAMSHIM_LOG", getenv("RELIEF_TEST_LOG") ? getenv("RELIEF_TEST_LOG") : "warn", 1);
    setenv("VRAMSHIM_OFFLOAD", "pinned", 1);
    /* a loaded test machine moves slowly: peers get a minute, except where
     * a scenario times a peer that does not answer */
    setenv("VRAMSHIM_RELIEF_MS", "60000", 1);
    for (const char *const *e = env; e && *e; e++) {
        char var[64];
        const char *eq = strchr(*e, '=');
        snprintf(var, sizeof var, "%.*s", (int)(eq - *e), *e);
        setenv(var, eq + 1, 1);
    }
    char *args[] = {self_path, "worker", NULL};
    w->pid = check_spawn(self_path, args, false, &w->to, &w->from);
    for (const char *const *e = env; e && *e; e++) {
        char var[64];
        snprintf(var, sizeof var, "%.*s", (int)(strchr(*e, '=') - *e), *e);
        unsetenv(var);
    }
    char line[32];
    CHECK(fgets(line, sizeof line, w->from) && strcmp(line, "ready\n") == 0,
          "worker %s did not start", name);
}

static void send_cmd(struct worker *w, const char *fmt, va_list ap)
{
    vfprintf(w->to, fmt, ap);
    fputc('\n', w->to);
    fflush(w->to);
}

char *answer(struct worker *w)
{
    static char line[128];
    uint64_t t0 = now_ms();
    CHECK(fgets(line, sizeof line, w->from) != NULL, "worker %s died", w->name);
    line[strcspn(line, "\n")] = '\0';
    if (getenv("RELIEF_TEST_TIMES"))
        fprintf(stderr, "%s: %s after %llu ms\n", w->name, line,
                (unsigned long long)(now_ms() - t0));
    return line;
}

char *ask(struct worker *w, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    send_cmd(w, fmt, ap);
    va_end(ap);
    return answer(w);
}

void ask_ok(struct worker *w, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    send_cmd(w, fmt, ap);
    va_end(ap);
    char *got = answer(w);
    CHECK(strcmp(got, "ok") == 0, "worker %s answered %s", w->name, got);
}

uint64_t stat_of(struct worker *w, const char *path)
{
    return strtoull(ask(w, "q %s", path), NULL, 10);
}

uint64_t offloaded(struct worker *w)
{
    return stat_of(w, "devices.0.offloaded_pinned") + stat_of(w, "devices.0.offloaded_pageable");
}

void stop(struct worker *w)
{
    fclose(w->to);
    int status;
    CHECK(waitpid(w->pid, &status, 0) == w->pid, "waitpid");
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0, "worker %s failed (status %d)",
          w->name, status);
    fclose(w->from);
}

void scenario_end(void)
{
    shm_unlink(shm_name);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", sock_dir);
    CHECK(system(cmd) == 0, "rm");
}

static uint64_t coarse_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* Every touch so far is stamped at or before now (the workers answered
 * after making them): once the coarse clock moves on, they are all in the
 * past, which is what idle_ms=0 asks of an idle buffer. */
void wait_tick(void)
{
    uint64_t t0 = coarse_ns();
    while (coarse_ns() <= t0)
        sched_yield();
}

int relief_main(int argc, char **argv, const struct relief_scenario *all, size_t n,
                const char *title)
{
    if (argc > 1 && strcmp(argv[1], "worker") == 0)
        return worker();
    ssize_t len = readlink("/proc/self/exe", self_path, sizeof self_path - 1);
    CHECK(len > 0, "readlink");
    self_path[len] = '\0';
    const char *only = argc > 1 ? argv[1] : NULL;
    for (size_t i = 0; i < n; i++)
        if (only == NULL || strcmp(only, all[i].name) == 0)
            all[i].run();
    printf("%s: ok\n", title);
    return 0;
}
