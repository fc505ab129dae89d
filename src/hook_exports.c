/*
 * hook_exports.c: way in (a), exported symbols.
 *
 * A program linked with -lcuda binds cuMemAlloc_v2 and friends to the first
 * definition in the global scope, which is ours because LD_PRELOAD comes
 * before libcuda. Each export makes sure the driver is loaded, then hands the
 * call to the hook body (or straight to the driver under VRAMSHIM_DISABLE).
 */
#include "init.h"

static CUresult missing_entry(const char *name)
{
    vs_error("the driver has no %s; returning CUDA_ERROR_NOT_FOUND", name);
    return CUDA_ERROR_NOT_FOUND;
}

#define VS_HOOK(name, params, args)                                  \
    VS_EXPORT CUresult name params                                   \
    {                                                                \
        if (VS_UNLIKELY(!vs_real_ready()) && !vs_driver_ready(true))    \
            return CUDA_ERROR_NOT_INITIALIZED;                       \
        if (VS_UNLIKELY(vs_real.name == NULL))                       \
            return missing_entry(#name);                             \
        if (VS_UNLIKELY(vs_state.disabled))                          \
            return vs_real.name args;                                \
        return vs_hook_##name args;                                  \
    }
#define VS_REAL_ONLY(name, params, args)
#include "hooks.def"
#undef VS_HOOK
#undef VS_REAL_ONLY
