/*
 * debug.c: the core's invariants, checked across modules: the registry's
 * counters against its records, and the budget's charges against what the
 * live records hold (registry.c's header promises the first; budget.c's
 * charge-before-call scheme relies on the second). The unit tests and the
 * randomized integration runs call the checks after every step
 * (vramshim_check, include/vramshim.h); debug builds (--enable-debug) also
 * stop on VS_ASSERT inside the modules.
 */
#include "core.h"

#include <stdio.h>
#include <stdlib.h>

int vs_core_check(void)
{
    struct vs_expected_charges *exp = malloc(sizeof *exp);
    if (exp == NULL)
        return -1;
    int rc = vs_registry_check(exp);
    /* contexts and modules are charged to their device, not to an owner */
    for (int d = 0; d < VS_MAX_DEVICES; d++)
        exp->dev[d] += vs_overhead_device(d);
    if (rc == 0)
        rc = vs_budget_check(exp);
    free(exp);
    return rc;
}

#ifdef VS_DEBUG
void vs_assert_failed(const char *what, const char *file, int line)
{
    vs_error("assertion failed at %s:%d: %s", file, line, what);
    abort();
}
#endif
