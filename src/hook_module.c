/*
 * hook_module.c: modules and libraries, loaded and unloaded.
 *
 * A module holds its code, constants and __device__ globals in device
 * memory from its load to its unload; the driver states no size for it, so
 * each load is measured on the device's free memory (hook_ctx.c) and
 * charged as overhead to the device of the current context. A library
 * (cuLibraryLoad*) is context-independent: it is measured likewise when a
 * context is current at its load (what it takes in contexts made or first
 * used later is not seen), and charged until its unload. A context takes
 * its modules with it (overhead.c).
 *
 * A function handle (CUfunction, or a CUkernel that PyTorch casts to one)
 * dies with its module or library, and the driver may hand the same
 * handle to a new function with fewer parameters. Touch tracking reads
 * each launch's parameters by the layout it remembers for the handle, so
 * every unload makes it ask again (touch.c), before the driver can reuse
 * anything: a stale layout would read past the new parameter array.
 */
#include "hooks.h"

/* The load is measured around `call`; space says what the handle is. One
 * that passes the VRAM limit is unloaded again and answered
 * CUDA_ERROR_OUT_OF_MEMORY, as the driver answers one past the device. */
#define MEASURED_LOAD(space, handle_ptr, call, undo)                                \
    do {                                                                            \
        CUcontext ctx_ = NULL;                                                      \
        if (vs_real.cuCtxGetCurrent == NULL || vs_real.cuCtxGetCurrent(&ctx_) ||    \
            ctx_ == NULL)                                                           \
            return (call);                                                          \
        struct vs_probe p_;                                                         \
        vs_probe_begin(&p_, vs_current_device());                                   \
        CUresult rc_ = (call);                                                      \
        int64_t bytes_ = vs_probe_end(&p_, rc_, NULL, false);                       \
        /* the call's name: the hook's, less its "vs_hook_" */                      \
        if (rc_ == CUDA_SUCCESS && bytes_ > 0 &&                                    \
            vs_admit_overhead(__func__ + 8, space, (uint64_t)(uintptr_t) * (handle_ptr), \
                              p_.dev, (uint64_t)(uintptr_t)ctx_,                    \
                              (uint64_t)bytes_) != CUDA_SUCCESS) {                  \
            undo(*(handle_ptr));                                                    \
            return CUDA_ERROR_OUT_OF_MEMORY;                                        \
        }                                                                           \
        return rc_;                                                                 \
    } while (0)

CUresult vs_hook_cuModuleLoad(CUmodule *module, const char *fname)
{
    MEASURED_LOAD(VS_OVERHEAD_MODULE, module, vs_real.cuModuleLoad(module, fname),
                  vs_real.cuModuleUnload);
}

CUresult vs_hook_cuModuleLoadData(CUmodule *module, const void *image)
{
    MEASURED_LOAD(VS_OVERHEAD_MODULE, module, vs_real.cuModuleLoadData(module, image),
                  vs_real.cuModuleUnload);
}

CUresult vs_hook_cuModuleLoadDataEx(CUmodule *module, const void *image, unsigned int n,
                                    CUjit_option *options, void **values)
{
    MEASURED_LOAD(VS_OVERHEAD_MODULE, module,
                  vs_real.cuModuleLoadDataEx(module, image, n, options, values),
                  vs_real.cuModuleUnload);
}

CUresult vs_hook_cuModuleLoadFatBinary(CUmodule *module, const void *fat)
{
    MEASURED_LOAD(VS_OVERHEAD_MODULE, module, vs_real.cuModuleLoadFatBinary(module, fat),
                  vs_real.cuModuleUnload);
}

CUresult vs_hook_cuLibraryLoadData(CUlibrary *library, const void *code, CUjit_option *jo,
                                   void **jv, unsigned int nj, CUlibraryOption *lo, void **lv,
                                   unsigned int nl)
{
    MEASURED_LOAD(VS_OVERHEAD_LIBRARY, library,
                  vs_real.cuLibraryLoadData(library, code, jo, jv, nj, lo, lv, nl),
                  vs_real.cuLibraryUnload);
}

CUresult vs_hook_cuLibraryLoadFromFile(CUlibrary *library, const char *file, CUjit_option *jo,
                                       void **jv, unsigned int nj, CUlibraryOption *lo,
                                       void **lv, unsigned int nl)
{
    MEASURED_LOAD(VS_OVERHEAD_LIBRARY, library,
                  vs_real.cuLibraryLoadFromFile(library, file, jo, jv, nj, lo, lv, nl),
                  vs_real.cuLibraryUnload);
}

/* The driver answered an unload: what it let go is no longer overhead. */
static CUresult unloaded(enum vs_overhead_space space, const void *handle, CUresult rc)
{
    if (rc == CUDA_SUCCESS)
        vs_overhead_drop(space, (uint64_t)(uintptr_t)handle);
    return rc;
}

CUresult vs_hook_cuModuleUnload(CUmodule hmod)
{
    vs_touch_forget_layouts();
    return unloaded(VS_OVERHEAD_MODULE, hmod, vs_real.cuModuleUnload(hmod));
}

CUresult vs_hook_cuLibraryUnload(CUlibrary library)
{
    vs_touch_forget_layouts();
    return unloaded(VS_OVERHEAD_LIBRARY, library, vs_real.cuLibraryUnload(library));
}
