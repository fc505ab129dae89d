/*
 * init.h: the init layer, the top of libvramshim: process set-up (init.c)
 * and the ways a program's call comes in: exported driver symbols
 * (hook_exports.c) and dlsym (hook_dlsym.c). The third way in,
 * cuGetProcAddress, is a hook body (hook_gpa.c) reached through one of
 * these two.
 *
 * May include every other layer's header.
 */
#ifndef VS_INIT_H
#define VS_INIT_H

#include "control.h"
#include "hooks.h"

/* Set up the process-wide state, once; cheap enough for every process
 * that inherits LD_PRELOAD. */
void vs_init(void);
/* The first driver call: set up, open the driver (`must_load` false: only
 * if libcuda is already in the process), start the control socket. True
 * when the real table is ready. */
bool vs_driver_ready(bool must_load);

/* hook_dlsym.c: the non-RTLD_NEXT paths of the exported dlsym and dlvsym
 * (the exports themselves are assembly on x86-64). */
void *vs_dlsym_body(void *handle, const char *name);
void *vs_dlvsym_body(void *handle, const char *name, const char *version);

#endif
