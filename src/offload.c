/*
 * offload.c: the offload layer as init.c sees it: set-up with the real
 * movers, the fork handler, and the invariant check. Kept apart from
 * tier.c so that the unit tests can run tier.c's policy without chunk.c.
 */
#include "offload_internal.h"

void vs_offload_init(void)
{
    vs_gate_init();
    vs_tier_init(&vs_chunk_ops);
}

void vs_offload_atfork_child(void)
{
    vs_tier_atfork_child();
    vs_chunk_atfork_child();
    vs_rw_atfork_child();
    vs_gate_init();
    vs_touch_atfork_child();
    vs_hostpool_atfork_child();
    vs_staging_atfork_child();
    vs_fence_atfork_child();
    vs_reach_atfork_child();
    vs_pool_atfork_child();
}

int vs_offload_check(void)
{
    return vs_tier_check();
}
