/*
 * driver.h: the driver layer, above the core: the real libcuda, found once
 * (real.c), and the C library's own dlsym (dl_real.c). Everything that
 * calls the driver goes through the vs_real table declared here, generated
 * from hooks.def.
 *
 * May include: core.h. Never calls up: making the first driver call ready
 * (loading, then starting the control socket) is init.c's vs_driver_ready.
 */
#ifndef VS_DRIVER_H
#define VS_DRIVER_H

/* Plain names (cuMemAlloc_v2, cuGetProcAddress with four arguments...)
 * rather than cuda.h's version-renaming macros: we define the real symbols. */
#define __CUDA_API_VERSION_INTERNAL 1
#include <cuda.h>

#include "core.h"

/* ---- real.c: the real driver ------------------------------------------ */
struct vs_real_table {
#define VS_HOOK(name, params, args) CUresult (*name) params;
#define VS_REAL_ONLY(name, params, args) CUresult (*name) params;
#include "hooks.def"
#undef VS_HOOK
#undef VS_REAL_ONLY
};
extern struct vs_real_table vs_real;
extern _Atomic int vs_real_loaded;

/* Open libcuda and resolve every entry, once. `must_load` false: only if a
 * libcuda is already in the process. Returns true when the table is ready.
 * Callers outside init.c use vs_driver_ready (init.h) instead. */
bool vs_real_load(bool must_load);
static inline bool vs_real_ready(void)
{
    return VS_LIKELY(atomic_load_explicit(&vs_real_loaded, memory_order_acquire));
}
/* Device of the calling thread's current context, -1 if none. */
int vs_current_device(void);
/* A forked child: the table's lock is made anew. */
void vs_real_atfork_child(void);
/* A CUDA UUID as nvidia-smi prints it ("GPU-xxxxxxxx-..."); a cap of 41
 * bytes or more holds it. */
void vs_format_uuid(const CUuuid *u, char *out, size_t cap);

/* ---- dl_real.c: the C library's own dlsym and dlvsym ------------------ */
void *vs_real_dlsym(void *handle, const char *name);
void *vs_real_dlvsym(void *handle, const char *name, const char *version);
/* dlsym(RTLD_NEXT, name) as seen from the object that holds `caller`. */
void *vs_dl_next(const void *caller, const char *name, const char *version);
/* libc's dlsym and dlvsym themselves, for the RTLD_NEXT jump. */
void *vs_libc_dlsym(void);
void *vs_libc_dlvsym(void);

#endif
