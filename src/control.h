/*
 * control.h: the control layer: the per-process control socket's server
 * (control.c), which answers the tool's requests (stats, set, evict, free)
 * and other processes' share requests.
 *
 * May include: offload.h, driver.h, core.h. Not hooks.h (a sibling layer).
 */
#ifndef VS_CONTROL_H
#define VS_CONTROL_H

#include "offload.h"

/* Start the server thread, once (the driver was just loaded). */
void vs_control_start(void);
void vs_control_atfork_child(void);

#endif
