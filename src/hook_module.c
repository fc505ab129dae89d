/*
 * hook_module.c: module and library unloads.
 *
 * A function handle (CUfunction, or a CUkernel that PyTorch casts to one)
 * dies with its module or library, and the driver may hand the same
 * handle to a new function with fewer parameters. Touch tracking reads
 * each launch's parameters by the layout it remembers for the handle, so
 * every unload makes it ask again (touch.c), before the driver can reuse
 * anything: a stale layout would read past the new parameter array.
 */
#include "hooks.h"

CUresult vs_hook_cuModuleUnload(CUmodule hmod)
{
    vs_touch_forget_layouts();
    return vs_real.cuModuleUnload(hmod);
}

CUresult vs_hook_cuLibraryUnload(CUlibrary library)
{
    vs_touch_forget_layouts();
    return vs_real.cuLibraryUnload(library);
}
