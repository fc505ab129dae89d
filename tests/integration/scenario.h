/*
 * scenario.h: one allocation scenario, run through whichever way in a test
 * program uses (exported symbols, dlsym, cuGetProcAddress), so the three
 * paths are held to the same expectations.
 */
#ifndef SCENARIO_H
#define SCENARIO_H

#include "check.h"

struct cu_api {
    CUresult (*Init)(unsigned int);
    CUresult (*DevicePrimaryCtxRetain)(CUcontext *, CUdevice);
    CUresult (*CtxSetCurrent)(CUcontext);
    CUresult (*MemAlloc)(CUdeviceptr *, size_t);
    CUresult (*MemAllocPitch)(CUdeviceptr *, size_t *, size_t, size_t, unsigned int);
    CUresult (*MemAllocManaged)(CUdeviceptr *, size_t, unsigned int);
    CUresult (*MemFree)(CUdeviceptr);
    CUresult (*MemAllocAsync)(CUdeviceptr *, size_t, CUstream);
    CUresult (*MemFreeAsync)(CUdeviceptr, CUstream);
    CUresult (*StreamCreate)(CUstream *, unsigned int);
    CUresult (*StreamSynchronize)(CUstream);
    CUresult (*MemHostAlloc)(void **, size_t, unsigned int);
    CUresult (*MemAllocHost)(void **, size_t);
    CUresult (*MemFreeHost)(void *);
    CUresult (*MemHostRegister)(void *, size_t, unsigned int);
    CUresult (*MemHostUnregister)(void *);
    CUresult (*MemcpyHtoD)(CUdeviceptr, const void *, size_t);
    CUresult (*MemcpyDtoH)(void *, CUdeviceptr, size_t);
    CUresult (*MemGetInfo)(size_t *, size_t *);
};

/* Allocate every kind, check the stats after each step, free, check again.
 * `owner` is the name the default owner should have. */
void scenario_run(const struct cu_api *api, const char *owner);

/* The seed of a randomized run: CHECK_SEED when set, else `dflt`; printed,
 * so that a failure's draws can be made again. */
uint64_t scenario_seed(uint64_t dflt);

/* This process's own control socket (in VRAMSHIM_SOCKET_DIR), as the tool
 * finds it. */
void scenario_own_socket(char *out, size_t cap);
/* One request to the control socket at `sock`, as the tool sends it: the
 * last line of the answer (progress lines may come before it) goes to
 * `answer`, without its newline. Fails the test if none comes. */
void scenario_ask(const char *sock, const char *line, char *answer, size_t cap);

#endif
