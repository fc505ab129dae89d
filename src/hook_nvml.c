/*
 * hook_nvml.c: NVML's memory figures, as the slice makes them.
 *
 * vLLM, nvidia-ml-py and monitoring code ask NVML, not CUDA, how much
 * memory a device has; under a limit they must see the same slice that
 * cuMemGetInfo shows. NVML is reached two ways: a program linked with
 * -lnvidia-ml binds to the exports below (LD_PRELOAD comes first), and
 * ctypes and dlopen users get them from the dlsym swap. The real functions
 * are the ones dlsym found, or else those of an already loaded
 * libnvidia-ml.so.1; vramshim never loads NVML itself.
 *
 * NVML numbers devices its own way (by PCI bus), CUDA by speed and
 * CUDA_VISIBLE_DEVICES, so a device is matched to its CUDA ordinal by UUID.
 * That needs an initialised CUDA driver; until the program initialises it
 * (vramshim never does: cuInit before a fork breaks the children), or for
 * a device CUDA cannot see, NVML's figures pass through untouched.
 *
 * NVML also tells how much this process uses on a device
 * (nvmlDeviceGetComputeRunningProcesses_v3: "all of the memory used by the
 * application"), which the overhead measure prefers to the device's free
 * memory (hook_ctx.c): other processes cannot skew it. It is asked only of
 * an NVML the program loaded and initialised itself. Loading NVML here
 * would cost every CUDA program under vramshim the library's start-up,
 * and nvmlInit/nvmlShutdown are reference counted per process, so an init
 * of ours could keep the program's NVML alive past its own shutdown. A
 * process NVML does not list (a PID namespace: NVML reports the host's
 * pids) falls back to the free-memory measure.
 */
#define _GNU_SOURCE 1
#include "hooks.h"

#include <dlfcn.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

/* This file takes only the NVML lines of hooks.def. */
#define VS_HOOK(name, params, args)
#define VS_REAL_ONLY(name, params, args)

#define NVML_SUCCESS 0
#define NVML_ERROR_UNINITIALIZED 1
#define NVML_UUID_LEN 96
#define NVML_VALUE_NOT_AVAILABLE (~0ULL)
/* processes read in one call; past this many on one device, NVML is not
 * used and the free-memory measure stands */
#define NVML_MAX_PROCS 256

/* nvml.h's nvmlProcessInfo_t, as _v3 fills it */
typedef struct {
    unsigned int pid;
    unsigned long long usedGpuMemory;
    unsigned int gpuInstanceId, computeInstanceId;
} nvml_process_t;
typedef nvmlReturn_t (*procs_fn)(nvmlDevice_t, unsigned int *, nvml_process_t *);
typedef nvmlReturn_t (*by_uuid_fn)(const char *, nvmlDevice_t *);

typedef nvmlReturn_t (*uuid_fn)(nvmlDevice_t, char *, unsigned int);

static struct {
#define VS_NVML_HOOK(name, params, args) _Atomic(nvmlReturn_t(*) params) name;
#include "hooks.def"
#undef VS_NVML_HOOK
    _Atomic(uuid_fn) uuid;
} nvml_real;

/* The library that defines `fn`, asked for a name of its own. */
static void *sibling(void *fn, const char *name)
{
    Dl_info info;
    if (fn == NULL || dladdr(fn, &info) == 0 || info.dli_fname == NULL)
        return NULL;
    void *lib = dlopen(info.dli_fname, RTLD_NOW | RTLD_NOLOAD | RTLD_LOCAL);
    if (lib == NULL)
        return NULL;
    void *sym = vs_real_dlsym(lib, name);
    dlclose(lib);
    return sym;
}

/* An export was called before any dlsym told us where NVML is. */
static void *loaded_nvml(const char *name)
{
    void *lib = dlopen("libnvidia-ml.so.1", RTLD_NOW | RTLD_NOLOAD | RTLD_LOCAL);
    if (lib == NULL)
        return NULL;
    void *sym = vs_real_dlsym(lib, name);
    dlclose(lib);
    return sym;
}

static uuid_fn uuid_of(void *any_real)
{
    uuid_fn f = atomic_load(&nvml_real.uuid);
    if (f == NULL) {
        f = (uuid_fn)sibling(any_real, "nvmlDeviceGetUUID");
        if (f)
            atomic_store(&nvml_real.uuid, f);
    }
    return f;
}

/* ---- NVML device -> CUDA ordinal, cached by handle -------------------- */

static pthread_mutex_t map_lock = PTHREAD_MUTEX_INITIALIZER;
static struct {
    nvmlDevice_t handle;
    int ordinal;
} known[VS_MAX_DEVICES];
static int n_known;

/* fork: the cache stays good (the same devices); the lock starts free. */
void vs_nvml_atfork_child(void) { pthread_mutex_init(&map_lock, NULL); }

static int ordinal_by_uuid(const char *nvml_uuid)
{
    int count = 0;
    if (vs_real.cuDeviceGetCount == NULL || vs_real.cuDeviceGet == NULL ||
        vs_real.cuDeviceGetUuid_v2 == NULL || vs_real.cuDeviceGetCount(&count) != CUDA_SUCCESS)
        return -1;
    for (int i = 0; i < count && i < VS_MAX_DEVICES; i++) {
        CUdevice d;
        CUuuid u;
        char text[NVML_UUID_LEN];
        if (vs_real.cuDeviceGet(&d, i) != CUDA_SUCCESS ||
            vs_real.cuDeviceGetUuid_v2(&u, d) != CUDA_SUCCESS)
            continue;
        vs_format_uuid(&u, text, sizeof text);
        if (strcasecmp(text, nvml_uuid) == 0)
            return i;
    }
    return -1;
}

static int cuda_ordinal(nvmlDevice_t device, void *any_real)
{
    if (!vs_real_ready())
        return -1;
    pthread_mutex_lock(&map_lock);
    for (int i = 0; i < n_known; i++)
        if (known[i].handle == device) {
            int ordinal = known[i].ordinal;
            pthread_mutex_unlock(&map_lock);
            return ordinal;
        }
    pthread_mutex_unlock(&map_lock);

    uuid_fn uuid = uuid_of(any_real);
    char text[NVML_UUID_LEN];
    if (uuid == NULL || uuid(device, text, sizeof text) != NVML_SUCCESS)
        return -1;
    int ordinal = ordinal_by_uuid(text);
    if (ordinal < 0)
        return -1; /* not visible to CUDA, or CUDA not initialised: ask again later */
    pthread_mutex_lock(&map_lock);
    if (n_known < VS_MAX_DEVICES)
        known[n_known++] = (typeof(known[0])){device, ordinal};
    pthread_mutex_unlock(&map_lock);
    return ordinal;
}

/* ---- the figures ------------------------------------------------------ */

static bool slice(nvmlDevice_t device, void *real, unsigned long long *total,
                  unsigned long long *free)
{
    int ordinal = cuda_ordinal(device, real);
    if (ordinal < 0)
        return false;
    uint64_t f, t;
    vs_budget_slice(ordinal, vs_owner_current(), *free, *total, &f, &t);
    if (f == *free && t == *total)
        return false;
    *free = f;
    *total = t;
    return true;
}

static nvmlReturn_t get_info(nvmlDevice_t device, nvmlMemory_t *memory)
{
    nvmlReturn_t rc = atomic_load(&nvml_real.nvmlDeviceGetMemoryInfo)(device, memory);
    if (rc == NVML_SUCCESS && memory &&
        slice(device, (void *)atomic_load(&nvml_real.nvmlDeviceGetMemoryInfo),
              &memory->total, &memory->free))
        memory->used = memory->total - memory->free;
    return rc;
}

static nvmlReturn_t get_info_v2(nvmlDevice_t device, nvmlMemory_v2_t *memory)
{
    nvmlReturn_t rc = atomic_load(&nvml_real.nvmlDeviceGetMemoryInfo_v2)(device, memory);
    if (rc == NVML_SUCCESS && memory &&
        slice(device, (void *)atomic_load(&nvml_real.nvmlDeviceGetMemoryInfo_v2),
              &memory->total, &memory->free)) {
        unsigned long long taken = memory->total - memory->free;
        if (memory->reserved > taken)
            memory->reserved = taken;
        memory->used = taken - memory->reserved;
    }
    return rc;
}

/* The exports, and what the swap hands out. */
#define VS_NVML_HOOK(name, params, args)                                      \
    VS_EXPORT nvmlReturn_t name params                                        \
    {                                                                         \
        vs_ensure_init();                                                     \
        if (atomic_load(&nvml_real.name) == NULL) {                           \
            void *found = loaded_nvml(#name);                                 \
            if (found == NULL || found == (void *)name)                       \
                return NVML_ERROR_UNINITIALIZED;                              \
            atomic_store(&nvml_real.name, (nvmlReturn_t(*) params)found);     \
        }                                                                     \
        if (VS_UNLIKELY(vs_state.disabled))                                   \
            return atomic_load(&nvml_real.name) args;                         \
        return NVML_BODY_##name args;                                         \
    }
#define NVML_BODY_nvmlDeviceGetMemoryInfo get_info
#define NVML_BODY_nvmlDeviceGetMemoryInfo_v2 get_info_v2
#include "hooks.def"
#undef VS_NVML_HOOK

/* ---- this process's usage, for the overhead ----------------------------- */

/* The program's NVML, held open for one query (NULL: not loaded). Nothing
 * of it is cached across queries: the program may shut NVML down and
 * unload it between two CUDA events, and vramshim asks on those events,
 * not when the program calls NVML. dladdr of a pointer into an unloaded
 * library finds nothing, so a stale nvml_real entry is harmless here. */
static void *hold_nvml(void)
{
    void *known = (void *)atomic_load(&nvml_real.nvmlDeviceGetMemoryInfo);
    if (known == NULL)
        known = (void *)atomic_load(&nvml_real.nvmlDeviceGetMemoryInfo_v2);
    Dl_info info;
    if (known && dladdr(known, &info) != 0 && info.dli_fname != NULL) {
        void *lib = dlopen(info.dli_fname, RTLD_NOW | RTLD_NOLOAD | RTLD_LOCAL);
        if (lib)
            return lib;
    }
    return dlopen("libnvidia-ml.so.1", RTLD_NOW | RTLD_NOLOAD | RTLD_LOCAL);
}

/* NVML lists host pids: in a child PID namespace getpid() may name another
 * process of the host. True when this process's pid is the host's (one
 * NSpid field, or a kernel too old to say: no namespaces to speak of). */
static bool pid_is_hosts(void)
{
    static _Atomic int answer; /* 0: not asked yet; 1: yes; 2: no */
    int a = atomic_load(&answer);
    if (a == 0) {
        a = 1;
        FILE *f = fopen("/proc/self/status", "re");
        char line[256];
        while (f && fgets(line, sizeof line, f))
            if (strncmp(line, "NSpid:", 6) == 0) {
                unsigned long first, second;
                a = sscanf(line + 6, "%lu %lu", &first, &second) == 2 ? 2 : 1;
                break;
            }
        if (f)
            fclose(f);
        atomic_store(&answer, a);
    }
    return a == 1;
}

bool vs_nvml_process_used(int ordinal, uint64_t *used)
{
    if (!pid_is_hosts())
        return false;
    void *lib = hold_nvml();
    if (lib == NULL)
        return false; /* the program has not loaded NVML */
    procs_fn procs = (procs_fn)vs_real_dlsym(lib, "nvmlDeviceGetComputeRunningProcesses_v3");
    by_uuid_fn by_uuid = (by_uuid_fn)vs_real_dlsym(lib, "nvmlDeviceGetHandleByUUID");
    bool found = false;
    CUdevice d;
    CUuuid u;
    char text[NVML_UUID_LEN];
    nvmlDevice_t device;
    nvml_process_t infos[NVML_MAX_PROCS];
    unsigned int n = NVML_MAX_PROCS;
    if (procs && by_uuid && vs_real.cuDeviceGet && vs_real.cuDeviceGetUuid_v2 &&
        vs_real.cuDeviceGet(&d, ordinal) == CUDA_SUCCESS &&
        vs_real.cuDeviceGetUuid_v2(&u, d) == CUDA_SUCCESS) {
        vs_format_uuid(&u, text, sizeof text);
        /* by_uuid fails while the program has not initialised NVML */
        if (by_uuid(text, &device) == NVML_SUCCESS && procs(device, &n, infos) == NVML_SUCCESS) {
            unsigned int me = (unsigned int)getpid();
            for (unsigned int i = 0; i < n && i < NVML_MAX_PROCS && !found; i++)
                if (infos[i].pid == me && infos[i].usedGpuMemory != NVML_VALUE_NOT_AVAILABLE) {
                    *used = infos[i].usedGpuMemory;
                    found = true;
                }
        }
    }
    dlclose(lib);
    return found;
}

void *vs_nvml_swap(const char *name, void *sym)
{
    vs_ensure_init();
    if (vs_state.disabled)
        return sym;
#define VS_NVML_HOOK(hook, params, args)                                       \
    if (strcmp(name, #hook) == 0) {                                           \
        if (sym == (void *)hook)                                              \
            return sym;                                                       \
        nvmlReturn_t(*expected) params = NULL;                                \
        atomic_compare_exchange_strong(&nvml_real.hook, &expected,            \
                                       (nvmlReturn_t(*) params)sym);          \
        return (void *)hook;                                                  \
    }
#include "hooks.def"
#undef VS_NVML_HOOK
    return sym;
}
