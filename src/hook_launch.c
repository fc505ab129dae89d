/*
 * hook_launch.c: kernel and graph launches.
 *
 * Every launch entry point, in both stream variants, passes through here
 * (the multi-device cooperative launch and the legacy cuLaunch, cuLaunchGrid
 * and cuLaunchGridAsync too):
 * count it, let touch tracking see the buffers its parameters name (which
 * may bring offloaded ones back first), then call the driver inside the
 * move gate, so that no buffer it reaches is between copy and remap while
 * it is being queued; a kernel launch takes the gate's read side in the
 * same step as its touch (vs_launch_enter). With no buffer backed for
 * offload, a launch costs one plain increment of its thread's counter and
 * one relaxed load on top of the driver's own work.
 */
#include "hooks.h"

/* One kernel launch entry point: the touch of what it names and the gate's
 * read side in one step (vs_launch_enter, which counts it too), the
 * driver call, the gate let go. */
#define KERNEL_LAUNCH(name, params_, extra_, PARAMS, ARGS)                     \
    CUresult vs_hook_##name PARAMS                                            \
    {                                                                         \
        int gate_ = vs_launch_enter(f, params_, extra_);                      \
        if (gate_ < 0)                                                        \
            return CUDA_ERROR_OUT_OF_MEMORY;                                  \
        CUresult rc_ = vs_real.name ARGS;                                     \
        vs_gate_leave(gate_);                                                 \
        return rc_;                                                           \
    }

#define GRID_PARAMS                                                           \
    CUfunction f, unsigned int gx, unsigned int gy, unsigned int gz,          \
        unsigned int bx, unsigned int by, unsigned int bz, unsigned int shm,  \
        CUstream s, void **params
#define GRID_ARGS f, gx, gy, gz, bx, by, bz, shm, s, params

#define LAUNCH_HOOKS(suffix)                                                  \
    KERNEL_LAUNCH(cuLaunchKernel##suffix, params, extra,                      \
                  (GRID_PARAMS, void **extra), (GRID_ARGS, extra))            \
    KERNEL_LAUNCH(cuLaunchKernelEx##suffix, params, extra,                    \
                  (const CUlaunchConfig *config, CUfunction f, void **params, \
                   void **extra),                                             \
                  (config, f, params, extra))                                 \
    KERNEL_LAUNCH(cuLaunchCooperativeKernel##suffix, params, NULL,            \
                  (GRID_PARAMS), (GRID_ARGS))                                 \
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
