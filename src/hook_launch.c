/*
 * hook_launch.c: kernel and graph launches.
 *
 * Every launch entry point, in both stream variants, passes through here:
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
    /* A graph may reach any buffer: all of them count as touched. */         \
    CUresult vs_hook_cuGraphLaunch##suffix(CUgraphExec g, CUstream s)         \
    {                                                                         \
        vs_count_launch();                                                    \
        vs_tier_touch_all(vs_now_ns());                                       \
        VS_GATED(vs_real.cuGraphLaunch##suffix(g, s));                        \
    }

LAUNCH_HOOKS()
LAUNCH_HOOKS(_ptsz)
