/*
 * init.c: process-wide state, set up once.
 *
 * The library is loaded into every process that inherits LD_PRELOAD, shells
 * and `ls` included, so none of its code runs at load: the settings are
 * read, and the registry, owners and offload layer set up, by the first CUDA, NVML or vramshim_* call (so
 * the settings are those of the environment at that call). The driver is
 * opened by the first intercepted CUDA call, through vs_driver_ready:
 * every way in (exported symbols, dlsym, and cuGetProcAddress behind them)
 * goes through it, and it is the one place that orders set-up, loading the
 * driver, pairing hooks and starting the control socket. vs_init can also
 * be reached from another library's constructor (calling dlsym or a CUDA
 * entry point) as well as from the program, hence pthread_once.
 */
#include "init.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <unistd.h>

static pthread_once_t init_once = PTHREAD_ONCE_INIT;

extern char *program_invocation_short_name;

static const char *env_lookup(const char *name) { return getenv(name); }

/* Lock order: owners, then the registry, then the settings. Every other
 * lock of the library is made anew in the child. */
static void on_fork_prepare(void)
{
    vs_owner_atfork_prepare();
    vs_registry_atfork_prepare();
    vs_limits_atfork_prepare();
}
static void on_fork_parent(void)
{
    vs_limits_atfork_parent();
    vs_registry_atfork_parent();
    vs_owner_atfork_parent();
}
static void on_fork_child(void)
{
    if (!atomic_load(&vs_init_done)) /* forked by another thread mid-init */
        init_once = PTHREAD_ONCE_INIT;
    vs_log_refresh_pid();
    vs_thread_atfork_child();
    vs_real_atfork_child();
    vs_nvml_atfork_child();
    vs_ctx_atfork_child();
    vs_ipc_atfork_child();
    vs_limits_atfork_child();
    vs_budget_reset();
    vs_overhead_reset();
    vs_control_atfork_child();
    vs_registry_atfork_child();
    vs_owner_atfork_child();
    vs_offload_atfork_child();
}

/* The summary goes only to processes that used CUDA: a shell that merely
 * inherited LD_PRELOAD stays quiet. Registered by the first set-up. */
static void print_summary_at_exit(void)
{
    if (vs_real_ready() && vs_log_get_level() >= VS_LOG_INFO) {
        struct vs_config cfg;
        vs_limits_config(&cfg);
        vs_stats_print_summary(vs_log_get_fd(), &cfg);
    }
}

static void init_once_body(void)
{
    vs_state.start_ns = vs_now_ns();
    long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGESIZE);
    vs_state.ram_bytes = pages > 0 && page > 0 ? (uint64_t)pages * (uint64_t)page : 0;
    vs_log_refresh_pid();

    struct vs_config *cfg = &vs_state.cfg;
    /* what is wrong with the settings is said by the process that loads the
     * driver (vs_driver_ready), not by every shell that inherits the variables */
    vs_log_hold(true);
    vs_config_load(cfg, env_lookup);
    vs_state.disabled = cfg->disable;
    vs_limits_init(cfg, vs_state.ram_bytes);
    vs_log_hold(false);
    vs_staging_setup(cfg->fast_copy_min, cfg->copy_threads, cfg->staging_bytes);
    vs_fence_setup(cfg->fence_ms);
    vs_offload_init();
    vs_owner_init(cfg->owner[0] ? cfg->owner : program_invocation_short_name);
    if (vs_registry_init() != 0) {
        vs_error("cannot allocate the allocation registry; passing every call "
                 "through untouched");
        vs_state.disabled = true;
    }
    pthread_atfork(on_fork_prepare, on_fork_parent, on_fork_child);
    atexit(print_summary_at_exit);
    if (vs_state.disabled)
        vs_info("VRAMSHIM_DISABLE: pure pass-through");
    atomic_store_explicit(&vs_init_done, true, memory_order_release);
}

void vs_init(void) { pthread_once(&init_once, init_once_body); }

bool vs_driver_ready(bool must_load)
{
    if (VS_LIKELY(vs_real_ready()))
        return true;
    vs_init();
    if (!vs_real_load(must_load))
        return false;
    vs_hook_table_init();
    vs_log_release_held(); /* the settings' lines, now that this is a CUDA process */
    vs_control_start();
    return true;
}

/* A process that never calls CUDA runs no code of ours: no constructor, no
 * destructor (the loader reaches this pointer by a relocation alone), so the
 * library's text is never paged in (docs/PERFORMANCE.md, start-up). */
void (*vs_init_fn)(void) = vs_init;

VS_EXPORT int vramshim_owner_push(const char *name)
{
    vs_init();
    return vs_owner_push(name);
}

VS_EXPORT int vramshim_owner_pop(void)
{
    vs_init();
    return vs_owner_pop();
}

VS_EXPORT int vramshim_stats_json(char *buf, size_t len)
{
    if (buf == NULL && len > 0)
        return -EINVAL;
    vs_init();
    struct vs_config cfg;
    vs_limits_config(&cfg);
    return vs_stats_write_json(buf, len, &cfg);
}

VS_EXPORT int vramshim_set(const char *key, const char *value)
{
    vs_init();
    char why[256];
    int rc = vs_limits_set(key, value, why, sizeof why);
    if (rc != 0)
        vs_warn("vramshim_set: %s; nothing changed", why);
    else
        vs_pool_fit_limits(); /* a lowered limit: pools trim first */
    return rc;
}

VS_EXPORT int vramshim_check(void)
{
    vs_init();
    return vs_core_check() == 0 && vs_offload_check() == 0 ? 0 : -EFAULT;
}

VS_EXPORT int vramshim_offload(uint64_t dptr)
{
    if (!vs_real_ready())
        return -ENOENT;
    return vs_tier_offload(dptr);
}

VS_EXPORT int vramshim_prefetch(uint64_t dptr)
{
    if (!vs_real_ready())
        return -ENOENT;
    return vs_tier_prefetch(dptr);
}
