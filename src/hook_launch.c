/*
 * hook_launch.c: kernel and graph launches.
 *
 * Every launch entry point, in both stream variants, passes through here so
 * that touch tracking has one place to live. Today a launch costs one
 * relaxed atomic increment on top of the driver's own work.
 */
#include "vramshim_internal.h"

#define LAUNCH_HOOKS(suffix)                                                  \
    CUresult vs_hook_cuLaunchKernel##suffix(                                  \
        CUfunction f, unsigned int gx, unsigned int gy, unsigned int gz,      \
        unsigned int bx, unsigned int by, unsigned int bz, unsigned int shm,  \
        CUstream s, void **params, void **extra)                              \
    {                                                                         \
        vs_count_launch();                                                    \
        return vs_real.cuLaunchKernel##suffix(f, gx, gy, gz, bx, by, bz, shm, \
                                              s, params, extra);              \
    }                                                                         \
    CUresult vs_hook_cuLaunchKernelEx##suffix(const CUlaunchConfig *config,   \
                                              CUfunction f, void **params,    \
                                              void **extra)                   \
    {                                                                         \
        vs_count_launch();                                                    \
        return vs_real.cuLaunchKernelEx##suffix(config, f, params, extra);    \
    }                                                                         \
    CUresult vs_hook_cuLaunchCooperativeKernel##suffix(                       \
        CUfunction f, unsigned int gx, unsigned int gy, unsigned int gz,      \
        unsigned int bx, unsigned int by, unsigned int bz, unsigned int shm,  \
        CUstream s, void **params)                                            \
    {                                                                         \
        vs_count_launch();                                                    \
        return vs_real.cuLaunchCooperativeKernel##suffix(f, gx, gy, gz, bx,   \
                                                         by, bz, shm, s,      \
                                                         params);             \
    }                                                                         \
    CUresult vs_hook_cuGraphLaunch##suffix(CUgraphExec g, CUstream s)         \
    {                                                                         \
        vs_count_launch();                                                    \
        return vs_real.cuGraphLaunch##suffix(g, s);                           \
    }

LAUNCH_HOOKS()
LAUNCH_HOOKS(_ptsz)
