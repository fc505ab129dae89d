/*
 * hook_launch.c: kernel and graph launches.
 *
 * Every launch entry point, in both stream variants, passes through here
 * (the multi-device cooperative launch and the legacy cuLaunch, cuLaunchGrid
 * and cuLaunchGridAsync too):
 * count it, let touch tracking see the buffers its parameters name (which
 * may bring offloaded ones back first), then call the driver inside the
 * move gate, so that no buffer it reaches is between copy and remap while
 * it is being queued. With no buffer backed for offload, a launch costs one
 * relaxed increment and two relaxed loads on top of the driver's own work.
 */
#include "hooks.h"

#define LAUNCH_HOOKS(suffix)                                                  \
    CUresult vs_hook_cuLaunchKernel##suffix(                                  \
        CUfunction f, unsigned int gx, unsigned int gy, unsigned int gz,      \
        unsigned int bx, unsigned int by, unsigned int bz, unsigned int shm,  \
        CUstream s, void **params, void **extra)                              \
    {                                                                         \
        vs_count_launch();                                                    \
        vs_touch_launch(f, params, extra);                                    \
        VS_GATED(vs_real.cuLaunchKernel##suffix(f, gx, gy, gz, bx, by, bz,    \
                                                shm, s, params, extra));      \
    }                                                                         \
    CUresult vs_hook_cuLaunchKernelEx##suffix(const CUlaunchConfig *config,   \
                                              CUfunction f, void **params,    \
                                              void **extra)                   \
    {                                                                         \
        vs_count_launch();                                                    \
        vs_touch_launch(f, params, extra);                                    \
        VS_GATED(vs_real.cuLaunchKernelEx##suffix(config, f, params, extra)); \
    }                                                                         \
    CUresult vs_hook_cuLaunchCooperativeKernel##suffix(                       \
        CUfunction f, unsigned int gx, unsigned int gy, unsigned int gz,      \
        unsigned int bx, unsigned int by, unsigned int bz, unsigned int shm,  \
        CUstream s, void **params)                                            \
    {                                                                         \
        vs_count_launch();                                                    \
        vs_touch_launch(f, params, NULL);                                     \
        VS_GATED(vs_real.cuLaunchCooperativeKernel##suffix(                   \
            f, gx, gy, gz, bx, by, bz, shm, s, params));                      \
    }                                                                         \
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
    for (unsigned int i = 0; list && i < n; i++) {
        vs_count_launch();
        vs_touch_launch(list[i].function, list[i].kernelParams, NULL);
    }
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
