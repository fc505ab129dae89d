/*
 * state.c: the process-wide state and the driver questions (the clock,
 * vs_now_ns, is inline in core.h),
 * shared by every module. The core asks the driver (device count, sizes,
 * free memory) only through vs_query(), which the hooks fill in once the
 * driver is loaded and the unit tests fill with a model.
 */
#include "core.h"

#include <time.h>

struct vs_state vs_state;

/* Weak: init.c's initialised definition wins in the shim (no constructor
 * has to run for it); the core alone (tool, unit tests) keeps it NULL. */
__attribute__((weak)) void (*vs_init_fn)(void);
_Atomic bool vs_init_done;

static struct vs_device_query query;

void vs_query_set(const struct vs_device_query *q) { query = *q; }
const struct vs_device_query *vs_query(void) { return &query; }
