/*
 * hook_table.c: which hook stands for which real driver pointer.
 *
 * cuGetProcAddress (hook_gpa.c) and dlsym (hook_dlsym.c) hand the program
 * whatever the driver answers, except that a pointer to an entry point we
 * hook is swapped for the hook. Swapping by the pointer's identity leaves
 * version and per-thread-stream resolution to the driver. The pairs are
 * made once, from hooks.def, as soon as the driver is loaded (or by the
 * first swap, whichever comes first); an entry point the driver lacks is
 * logged then.
 */
#include "hooks.h"

#include <pthread.h>

struct swap_pair {
    void *real;
    void *hook;
};

#define VS_HOOK(name, params, args) +1
#define VS_REAL_ONLY(name, params, args)
enum { N_HOOKS = 0
#include "hooks.def"
};
#undef VS_HOOK
#undef VS_REAL_ONLY

static struct swap_pair pairs[N_HOOKS];
static int n_pairs;
static pthread_once_t pairs_once = PTHREAD_ONCE_INIT;

static void make_pairs(void)
{
#define VS_HOOK(name, params, args)                                        \
    if (vs_real.name) {                                                    \
        pairs[n_pairs].real = (void *)vs_real.name;                        \
        pairs[n_pairs].hook = (void *)vs_hook_##name;                      \
        n_pairs++;                                                         \
    } else {                                                               \
        vs_info("the driver has no %s: that entry point is not hooked", #name); \
    }
#define VS_REAL_ONLY(name, params, args)
#include "hooks.def"
#undef VS_HOOK
#undef VS_REAL_ONLY
    vs_debug("%d of %d entry points hooked", n_pairs, (int)N_HOOKS);
}

void vs_hook_table_init(void)
{
    if (vs_real_ready())
        pthread_once(&pairs_once, make_pairs);
}

void *vs_hook_for_real(void *real_fn)
{
    if (!vs_real_ready() || vs_state.disabled)
        return NULL;
    pthread_once(&pairs_once, make_pairs);
    for (int i = 0; i < n_pairs; i++)
        if (pairs[i].real == real_fn)
            return pairs[i].hook;
    return NULL;
}
