/*
 * check.c: see check.h.
 */
#define _GNU_SOURCE 1
#include "check.h"

#include <dlfcn.h>
#include <fcntl.h>
#include <malloc.h>
#include <signal.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

/* The programs allocate and free shadow copies of buffers of a few MiB all
 * the time. glibc would map each afresh and give it back at free, and
 * every page of a fresh mapping faults on first touch (12 us a page on a
 * paravirtualised machine, more than the test's own work): keep them in
 * the heap, and keep the heap. */
__attribute__((constructor)) static void check_warm_heap(void)
{
    mallopt(M_MMAP_THRESHOLD, 32 << 20);
    mallopt(M_TRIM_THRESHOLD, 1 << 30);
}

void *check_libcuda(void)
{
    void *lib = dlopen("libcuda.so.1", RTLD_NOW | RTLD_LOCAL);
    CHECK(lib != NULL, "dlopen libcuda.so.1: %s", dlerror());
    return lib;
}

void *check_sym(void *lib, const char *name)
{
    void *p = dlsym(lib, name);
    CHECK(p != NULL, "dlsym %s: %s", name, dlerror());
    return p;
}

void check_context(void *lib, int device)
{
    CUresult (*init)(unsigned) = check_sym(lib, "cuInit");
    CUresult (*retain)(CUcontext *, CUdevice) = check_sym(lib, "cuDevicePrimaryCtxRetain");
    CUresult (*set)(CUcontext) = check_sym(lib, "cuCtxSetCurrent");
    CUcontext ctx;
    CHECK_CU(init(0));
    CHECK_CU(retain(&ctx, device));
    CHECK_CU(set(ctx));
}

void check_driver_open(struct check_driver *d)
{
    d->lib = check_libcuda();
    d->alloc = check_sym(d->lib, "cuMemAlloc_v2");
    d->release = check_sym(d->lib, "cuMemFree_v2");
    d->htod = check_sym(d->lib, "cuMemcpyHtoD_v2");
    d->dtoh = check_sym(d->lib, "cuMemcpyDtoH_v2");
    d->set_ctx = check_sym(d->lib, "cuCtxSetCurrent");
    check_context(d->lib, 0);
    CUresult (*get_ctx)(CUcontext *) = check_sym(d->lib, "cuCtxGetCurrent");
    CHECK_CU(get_ctx(&d->ctx));
}

CUfunction check_kernel(void *lib, const char *name, fakecuda_kernel_fn body, int nparams,
                        const size_t *sizes)
{
    CUfunction (*reg)(const char *, fakecuda_kernel_fn, int, const size_t *) =
        check_sym(lib, "fakecuda_register_kernel");
    CUfunction f = reg(name, body, nparams, sizes);
    CHECK(f != NULL, "registering the test kernel %s", name);
    return f;
}

static void copy_body(void **params, fakecuda_dim3 grid, fakecuda_dim3 block)
{
    (void)grid;
    (void)block;
    memcpy((void *)(uintptr_t)*(CUdeviceptr *)params[0],
           (const void *)(uintptr_t)*(CUdeviceptr *)params[1], *(uint64_t *)params[2]);
}

CUfunction check_copy_kernel(void *lib)
{
    const size_t sizes[] = {8, 8, 8};
    return check_kernel(lib, "copy", copy_body, 3, sizes);
}

/* written before the alarm can fire, read by the handler */
static char watchdog_line[128];
static size_t watchdog_len;

static void watchdog_fired(int sig)
{
    (void)sig;
    if (write(2, watchdog_line, watchdog_len) < 0)
        _exit(1);
    _exit(1);
}

void check_watchdog(const char *prog, unsigned seconds)
{
    int n = snprintf(watchdog_line, sizeof watchdog_line,
                     "FAIL %s: a call hung (the watchdog fired after %u s)\n", prog, seconds);
    watchdog_len = n > 0 && (size_t)n < sizeof watchdog_line ? (size_t)n : 0;
    signal(SIGALRM, watchdog_fired);
    alarm(seconds);
}

json_t *stats_get(void)
{
    int (*stats)(char *, size_t) = (int (*)(char *, size_t))dlsym(RTLD_DEFAULT,
                                                                   "vramshim_stats_json");
    CHECK(stats != NULL, "vramshim_stats_json not found: is libvramshim preloaded?");
    size_t cap = 1 << 16;
    char *buf = malloc(cap);
    int n = stats(buf, cap);
    if (n >= (int)cap) {
        cap = (size_t)n + 1;
        buf = realloc(buf, cap);
        n = stats(buf, cap);
    }
    CHECK(n > 0 && n < (int)cap, "vramshim_stats_json returned %d", n);
    json_error_t err;
    json_t *root = json_loads(buf, 0, &err);
    CHECK(root != NULL, "stats JSON does not parse: %s at %d: %s", err.text,
          err.position, buf);
    free(buf);
    return root;
}

uint64_t stats_u64(json_t *root, const char *path)
{
    char buf[256];
    snprintf(buf, sizeof buf, "%s", path);
    json_t *node = root;
    char *save = NULL;
    for (char *part = strtok_r(buf, ".", &save); part; part = strtok_r(NULL, ".", &save)) {
        if (json_is_array(node))
            node = json_array_get(node, (size_t)atoi(part));
        else
            node = json_object_get(node, part);
        CHECK(node != NULL, "stats have no %s", path);
    }
    CHECK(json_is_integer(node), "stats %s is not an integer", path);
    return (uint64_t)json_integer_value(node);
}

uint64_t stats_now(const char *path)
{
    json_t *st = stats_get();
    uint64_t v = stats_u64(st, path);
    json_decref(st);
    return v;
}

json_t *stats_owner(json_t *root, const char *name, int device)
{
    json_t *owners = json_object_get(root, "owners");
    size_t i;
    json_t *o;
    json_array_foreach(owners, i, o) {
        if (strcmp(json_string_value(json_object_get(o, "name")), name) == 0 &&
            json_integer_value(json_object_get(o, "device")) == device)
            return o;
    }
    return NULL;
}

void check_owner(json_t *root, const char *name, int device, uint64_t bytes,
                 uint64_t count)
{
    json_t *o = stats_owner(root, name, device);
    CHECK(o != NULL, "no owner %s on device %d", name, device);
    uint64_t got_bytes = (uint64_t)json_integer_value(json_object_get(o, "allocated"));
    uint64_t got_count = (uint64_t)json_integer_value(json_object_get(o, "allocations"));
    uint64_t resident = (uint64_t)json_integer_value(json_object_get(o, "resident"));
    CHECK(got_bytes == bytes, "owner %s device %d allocated %llu, expected %llu", name,
          device, (unsigned long long)got_bytes, (unsigned long long)bytes);
    CHECK(got_count == count, "owner %s device %d allocations %llu, expected %llu",
          name, device, (unsigned long long)got_count, (unsigned long long)count);
    CHECK(resident == bytes, "owner %s resident %llu != allocated %llu", name,
          (unsigned long long)resident, (unsigned long long)bytes);
}

void check_reexec_with(char **argv, const char *var, const char *value)
{
    const char *cur = getenv(var);
    if (cur && strcmp(cur, value) == 0)
        return;
    setenv(var, value, 1);
    execv("/proc/self/exe", argv);
    CHECK(0, "re-exec failed");
}

void check_reexec_env(char **argv, const char *const *assignments)
{
    if (getenv("CHECK_REEXECED"))
        return;
    for (const char *const *a = assignments; *a; a++) {
        char buf[512];
        snprintf(buf, sizeof buf, "%s", *a);
        char *eq = strchr(buf, '=');
        CHECK(eq != NULL, "not VAR=VALUE: %s", *a);
        *eq = '\0';
        setenv(buf, eq + 1, 1);
    }
    setenv("CHECK_REEXECED", "1", 1);
    execv("/proc/self/exe", argv);
    CHECK(0, "re-exec failed");
}

static char own_sock_dir[64];

/* Registered before the library's own exit handler, so run after it has
 * removed the socket. */
static void remove_own_sock_dir(void)
{
    rmdir(own_sock_dir);
}

const char *check_reexec_sock_dir(char **argv, const char *name, const char *const *assignments)
{
    if (getenv("CHECK_REEXECED") == NULL) {
        snprintf(own_sock_dir, sizeof own_sock_dir, "/tmp/vs-%s-XXXXXX", name);
        CHECK(mkdtemp(own_sock_dir) != NULL, "mkdtemp");
        rmdir(own_sock_dir); /* the library makes it, with its mode */
        setenv("VRAMSHIM_SOCKET_DIR", own_sock_dir, 1);
        check_reexec_env(argv, assignments);
    }
    snprintf(own_sock_dir, sizeof own_sock_dir, "%s", getenv("VRAMSHIM_SOCKET_DIR"));
    atexit(remove_own_sock_dir);
    return own_sock_dir;
}

pid_t check_spawn(const char *path, char *const argv[], bool no_preload, FILE **to,
                  FILE **from)
{
    int down[2], up[2];
    /* close-on-exec: a later child must not hold this one's stdin open */
    CHECK(pipe2(down, O_CLOEXEC) == 0 && pipe2(up, O_CLOEXEC) == 0, "pipe");
    pid_t child = fork();
    CHECK(child >= 0, "fork");
    if (child == 0) {
        dup2(down[0], 0);
        dup2(up[1], 1);
        close(down[1]);
        close(up[0]);
        if (no_preload)
            unsetenv("LD_PRELOAD");
        execv(path, argv);
        _exit(127);
    }
    close(down[0]);
    close(up[1]);
    *to = fdopen(down[1], "w");
    *from = fdopen(up[0], "r");
    return child;
}

void *check_api(const char *name)
{
    void *fn = dlsym(RTLD_DEFAULT, name);
    CHECK(fn != NULL, "%s not found: is libvramshim preloaded?", name);
    return fn;
}

void check_invariants(const char *where)
{
    int (*check)(void) = (int (*)(void))check_api("vramshim_check");
    CHECK(check() == 0, "vramshim's invariants do not hold %s (its log says which)", where);
}

void check_phase(pthread_barrier_t *phase, int op)
{
    if (pthread_barrier_wait(phase) == PTHREAD_BARRIER_SERIAL_THREAD) {
        char where[64];
        snprintf(where, sizeof where, "after %d operations per thread", op);
        check_invariants(where);
    }
    pthread_barrier_wait(phase);
}

int check_owner_push(const char *name)
{
    int (*push)(const char *) = (int (*)(const char *))dlsym(RTLD_DEFAULT,
                                                            "vramshim_owner_push");
    CHECK(push != NULL, "vramshim_owner_push not found");
    return push(name);
}

int check_owner_pop(void)
{
    int (*pop)(void) = (int (*)(void))dlsym(RTLD_DEFAULT, "vramshim_owner_pop");
    CHECK(pop != NULL, "vramshim_owner_pop not found");
    return pop();
}

void check_fill(unsigned char *buf, size_t n, unsigned seed)
{
    /* byte i is seed * 131 + 7i + i / 4096 (mod 256): within each 4 KiB
     * page a row of 256 bytes repeats (7 * 4096 and 7 * 256 are 0 mod
     * 256), so rows are copied, not bytes computed one by one */
    unsigned char row[256];
    for (size_t page = 0; page * 4096 < n; page++) {
        for (unsigned j = 0; j < sizeof row; j++)
            row[j] = (unsigned char)(seed * 131 + page + 7 * j);
        size_t end = n - page * 4096 < 4096 ? n : page * 4096 + 4096;
        for (size_t off = page * 4096; off < end; off += sizeof row)
            memcpy(buf + off, row, end - off < sizeof row ? end - off : sizeof row);
    }
}

uint64_t check_rnd(uint64_t *s)
{
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return *s;
}

void check_device_bytes(CUresult (*dtoh)(void *, CUdeviceptr, size_t), CUdeviceptr p,
                        const unsigned char *want, size_t n, const char *what)
{
    unsigned char *got = malloc(n);
    CHECK(got != NULL, "malloc");
    CHECK_CU(dtoh(got, p, n));
    size_t bad = memcmp(got, want, n) == 0 ? n : 0;
    while (bad < n && got[bad] == want[bad])
        bad++;
    CHECK(bad == n, "%s: byte %zu is %u, expected %u", what, bad, got[bad], want[bad]);
    free(got);
}

int check_capture(const char *cmd, char *out, size_t cap)
{
    FILE *p = popen(cmd, "r");
    CHECK(p != NULL, "popen");
    size_t n = fread(out, 1, cap - 1, p);
    out[n] = '\0';
    int status = pclose(p);
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

void check_sock_path(const char *dir, pid_t pid, char *out, size_t cap)
{
    char ns_path[64];
    struct stat st;
    snprintf(ns_path, sizeof ns_path, "/proc/%d/ns/pid", (int)pid);
    CHECK(stat(ns_path, &st) == 0, "stat %s", ns_path);
    snprintf(out, cap, "%s/%d-%llu.sock", dir, (int)pid, (unsigned long long)st.st_ino);
}

int check_ops(int n)
{
    const char *quick = getenv("CHECK_QUICK");
    return quick && strcmp(quick, "1") == 0 ? n / 10 : n;
}
