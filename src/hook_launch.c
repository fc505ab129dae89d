/*
 * hook_launch.c: kernel and graph launches.
 *
 * Every launch entry point, in both stream variants, passes through here
 * (the multi-device cooperative launch and the legacy cuLaunch, cuLaunchGrid
 * and cuLaunchGridAsync too):
 * count it, let touch tracking see the buffers its parameters name (which
 * may bring offloaded ones back first), then call the driver inside the
 * move gate, so that no buffer it reaches is between copy and remap while
 * it is being queued. A kernel launch under tracking is run whole by
 * touch.c (vs_launch_tracked_<name>), which takes the gate's read side in
 * the same step as its touch. With no buffer backed for offload, a launch
 * costs one plain increment of its thread's counter and one relaxed load on
 * top of the driver's own work.
 */
#include "hooks.h"

/* One kernel launch entry point: with no buffer backed, counted and
 * passed on; otherwise handed whole to touch.c. Every way out is a tail
 * call, and nothing on the way calls a function, so the hook keeps no
 * frame and copies none of the driver's eleven arguments (a thread's first
 * launch, which must be given its slot, goes through first_<name>). */
#define KERNEL_LAUNCH(name, PARAMS, ARGS, params_, extra_)                    \
    static __attribute__((noinline)) CUresult first_##name PARAMS             \
    {                                                                         \
        vs_count_launch();                                                    \
        return vs_real.name ARGS;                                             \
    }                                                                         \
    CUresult vs_hook_##name PARAMS                                            \
    {                                                                         \
        if (VS_UNLIKELY(atomic_load_explicit(&vs_tier_buffers, memory_order_relaxed) != 0)) \
            return vs_launch_tracked_##name ARGS;                             \
        unsigned s_ = vs_me.slot; /* the slot + 1; 0: none yet */             \
        if (VS_UNLIKELY(s_ == 0))                                             \
            return first_##name ARGS;                                         \
        vs_thread_add(&vs_thread_counts[s_ - 1].launches, s_ - 1);            \
        return vs_real.name ARGS;                                             \
    }
VS_KERNEL_LAUNCHES(KERNEL_LAUNCH)

#define LAUNCH_HOOKS(suffix)                                                  \
    /* A graph may reach any buffer: all of them count as touched. Its     \
     * memory nodes may take graph memory at the launch: admitted first    \
     * (hook_pool.c), read back after (pool.c). */                           \
    CUresult vs_hook_cuGraphLaunch##suffix(CUgraphExec g, CUstream s)         \
    {                                                                         \
        vs_count_launch();                                                    \
        struct vs_graph_admission a_;                                         \
        CUresult rc_ = vs_graph_admit("cuGraphLaunch", g, &a_);               \
        if (rc_ != CUDA_SUCCESS)                                              \
            return rc_;                                                       \
        vs_tier_touch_all(vs_now_ns());                                       \
        int gate_ = vs_gate_enter();                                          \
        if (gate_ < 0) {                                                      \
            vs_graph_admitted(g, &a_, CUDA_ERROR_OUT_OF_MEMORY);              \
            return CUDA_ERROR_OUT_OF_MEMORY;                                  \
        }                                                                     \
        rc_ = vs_real.cuGraphLaunch##suffix(g, s);                            \
        vs_gate_leave(gate_);                                                 \
        vs_graph_admitted(g, &a_, rc_);                                       \
        vs_graph_mem_refresh();                                               \
        return rc_;                                                           \
    }

LAUNCH_HOOKS()
LAUNCH_HOOKS(_ptsz)

/* One launch per device, each with its own parameters and stream: every
 * launch's buffers are touched before any of them is queued. */
CUresult vs_hook_cuLaunchCooperativeKernelMultiDevice(CUDA_LAUNCH_PARAMS *list, unsigned int n,
                                                      unsigned int flags)
{
    for (unsigned int i = 0; list && i < n; i++) /* each counted, the gate entered once below */
        vs_gate_leave(vs_launch_enter(list[i].function, list[i].kernelParams, NULL));
    VS_GATED(vs_real.cuLaunchCooperativeKernelMultiDevice(list, n, flags));
}

/* The legacy launches take their parameters from earlier cuParamSet*
 * calls, which vramshim does not see: like a graph, they may reach any
 * buffer, so all of them count as touched. */
CUresult vs_hook_cuLaunch(CUfunction f)
{
    vs_count_launch();
    vs_tier_touch_all(vs_now_ns());
    VS_GATED(vs_real.cuLaunch(f));
}

CUresult vs_hook_cuLaunchGrid(CUfunction f, int w, int h)
{
    vs_count_launch();
    vs_tier_touch_all(vs_now_ns());
    VS_GATED(vs_real.cuLaunchGrid(f, w, h));
}

CUresult vs_hook_cuLaunchGridAsync(CUfunction f, int w, int h, CUstream s)
{
    vs_count_launch();
    vs_tier_touch_all(vs_now_ns());
    VS_GATED(vs_real.cuLaunchGridAsync(f, w, h, s));
}
