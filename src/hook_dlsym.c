/*
 * hook_dlsym.c: way in (c), dlsym and dlvsym.
 *
 * Static cudart finds cuGetProcAddress_v2 with dlsym on its libcuda handle,
 * and PyTorch looks up some eighty versioned names the same way. Whatever
 * the handle, a result that is a real driver pointer we hook is swapped for
 * the hook. Names not starting with "cu" are never inspected.
 */
#define _GNU_SOURCE 1
#include "vramshim_internal.h"

#include <dlfcn.h>

static void *swap_result(const char *name, void *sym)
{
    if (sym == NULL || name == NULL || name[0] != 'c' || name[1] != 'u')
        return sym;
    if (!vs_real_ready() && !vs_real_load(false))
        return sym; /* libcuda is not loaded, so this is none of its pointers */
    void *hook = vs_hook_for_real(sym);
    return hook ? hook : sym;
}

VS_EXPORT void *dlsym(void *handle, const char *name)
{
    void *sym = handle == RTLD_NEXT
                    ? vs_dl_next(__builtin_return_address(0), name, NULL)
                    : vs_real_dlsym(handle, name);
    return swap_result(name, sym);
}

VS_EXPORT void *dlvsym(void *handle, const char *name, const char *version)
{
    void *sym = handle == RTLD_NEXT
                    ? vs_dl_next(__builtin_return_address(0), name, version)
                    : vs_real_dlvsym(handle, name, version);
    return swap_result(name, sym);
}
