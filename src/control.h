/*
 * control.h: the control layer: the per-process control socket's server
 * (control.c), which answers the tool's requests (stats, set, evict, free)
 * and other processes' share and relief requests (control_relief.c).
 *
 * May include: offload.h, driver.h, core.h. Not hooks.h (a sibling layer).
 */
#ifndef VS_CONTROL_H
#define VS_CONTROL_H

#include "offload.h"

/* Start the server thread, once (the driver was just loaded). */
void vs_control_start(void);
void vs_control_atfork_child(void);

/* control_relief.c: the answer line (newline included) to a peer or
 * relieve request from process `asker`. */
void vs_relief_answer_line(const struct vs_request *req, pid_t asker, char *out, size_t cap);
/* Voluntary release (VRAMSHIM_IDLE_RELEASE), looked at by the server
 * thread: returns when to look again (vs_now_ms). */
uint64_t vs_relief_idle_tick(uint64_t now_ms);

#endif
