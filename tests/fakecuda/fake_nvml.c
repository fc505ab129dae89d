/*
 * fake_nvml.c: the test stand-in for libnvidia-ml.so.1.
 *
 * Just enough NVML for programs that read memory figures the way vLLM and
 * nvidia-ml-py do: init, device count, handles by index, UUIDs and memory
 * info (both versions). The figures come from the test driver's own
 * accounting, so they move with every allocation in every process sharing
 * a FAKECUDA_SHM device, and like the real NVML they need no cuInit.
 * Device order is the reverse of CUDA's unless FAKENVML_ORDER=cuda: real
 * NVML numbers by PCI bus while CUDA puts the fastest device first.
 *
 * Per-process usage (nvmlDeviceGetComputeRunningProcesses_v3): "information
 * about processes with a compute context on a device"; "The usedGpuMemory
 * field returned is all of the memory used by the application"; "To query
 * the current number of running compute processes, call this function with
 * *infoCount = 0. The return code will be NVML_ERROR_INSUFFICIENT_SIZE, or
 * NVML_SUCCESS if none are running. For this call infos is allowed to be
 * NULL." (NVML API reference). This NVML knows one process, the calling
 * one: it is listed while the test driver says it holds memory on the
 * device (allocations, contexts, modules: fakecuda_held), with that figure.
 */
#define _GNU_SOURCE 1
#include "fakecuda.h"
#include "fakenvml.h"

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#define NV_EXPORT __attribute__((visibility("default")))

enum {
    NVML_SUCCESS = 0,
    NVML_ERROR_UNINITIALIZED = 1,
    NVML_ERROR_INVALID_ARGUMENT = 2,
    NVML_ERROR_INSUFFICIENT_SIZE = 7,
    NVML_ERROR_NOT_FOUND = 6,
    NVML_ERROR_ARGUMENT_VERSION_MISMATCH = 25,
};
/* A handle points at one of these. */
struct nvmlDevice_st {
    int cuda_ordinal;
};

static struct nvmlDevice_st devices[8];
static _Atomic int init_count;

static int cuda_ordinal_of_index(int index)
{
    const char *order = getenv("FAKENVML_ORDER");
    int n = fakecuda_device_count();
    return order && strcmp(order, "cuda") == 0 ? index : n - 1 - index;
}

NV_EXPORT nvmlReturn_t nvmlInit_v2(void)
{
    init_count++;
    return NVML_SUCCESS;
}
NV_EXPORT nvmlReturn_t nvmlInit(void) { return nvmlInit_v2(); }

NV_EXPORT nvmlReturn_t nvmlShutdown(void)
{
    if (init_count == 0)
        return NVML_ERROR_UNINITIALIZED;
    init_count--;
    return NVML_SUCCESS;
}

NV_EXPORT nvmlReturn_t nvmlDeviceGetCount_v2(unsigned int *count)
{
    if (init_count == 0)
        return NVML_ERROR_UNINITIALIZED;
    if (count == NULL)
        return NVML_ERROR_INVALID_ARGUMENT;
    *count = (unsigned)fakecuda_device_count();
    return NVML_SUCCESS;
}

NV_EXPORT nvmlReturn_t nvmlDeviceGetHandleByIndex_v2(unsigned int index,
                                                     nvmlDevice_t *device)
{
    if (init_count == 0)
        return NVML_ERROR_UNINITIALIZED;
    if (device == NULL || index >= (unsigned)fakecuda_device_count())
        return NVML_ERROR_INVALID_ARGUMENT;
    devices[index].cuda_ordinal = cuda_ordinal_of_index((int)index);
    *device = &devices[index];
    return NVML_SUCCESS;
}

NV_EXPORT nvmlReturn_t nvmlDeviceGetUUID(nvmlDevice_t device, char *uuid,
                                         unsigned int length)
{
    if (init_count == 0)
        return NVML_ERROR_UNINITIALIZED;
    if (device == NULL || uuid == NULL)
        return NVML_ERROR_INVALID_ARGUMENT;
    unsigned char b[16];
    fakecuda_uuid_bytes(device->cuda_ordinal, b);
    int n = snprintf(uuid, length,
                     "GPU-%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-"
                     "%02x%02x%02x%02x%02x%02x",
                     b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7], b[8], b[9],
                     b[10], b[11], b[12], b[13], b[14], b[15]);
    return n < 0 || (unsigned)n >= length ? NVML_ERROR_INSUFFICIENT_SIZE : NVML_SUCCESS;
}

NV_EXPORT nvmlReturn_t nvmlDeviceGetHandleByUUID(const char *uuid, nvmlDevice_t *device)
{
    if (init_count == 0)
        return NVML_ERROR_UNINITIALIZED;
    if (uuid == NULL || device == NULL)
        return NVML_ERROR_INVALID_ARGUMENT;
    int n = fakecuda_device_count();
    for (int i = 0; i < n; i++) {
        char text[96];
        devices[i].cuda_ordinal = cuda_ordinal_of_index(i);
        if (nvmlDeviceGetUUID(&devices[i], text, sizeof text) == NVML_SUCCESS &&
            strcasecmp(text, uuid) == 0) {
            *device = &devices[i];
            return NVML_SUCCESS;
        }
    }
    return NVML_ERROR_NOT_FOUND;
}

NV_EXPORT nvmlReturn_t nvmlDeviceGetComputeRunningProcesses_v3(nvmlDevice_t device,
                                                               unsigned int *infoCount,
                                                               nvmlProcessInfo_t *infos)
{
    if (init_count == 0)
        return NVML_ERROR_UNINITIALIZED;
    if (device == NULL || infoCount == NULL)
        return NVML_ERROR_INVALID_ARGUMENT;
    unsigned long long mine = fakecuda_held(device->cuda_ordinal);
    unsigned running = mine > 0;
    if (*infoCount < running) {
        *infoCount = running;
        return NVML_ERROR_INSUFFICIENT_SIZE;
    }
    *infoCount = running;
    if (running) {
        if (infos == NULL)
            return NVML_ERROR_INVALID_ARGUMENT;
        infos[0] = (nvmlProcessInfo_t){.pid = (unsigned)getpid(), .usedGpuMemory = mine,
                                       .gpuInstanceId = ~0u, .computeInstanceId = ~0u};
    }
    return NVML_SUCCESS;
}

/* The driver keeps a little memory for itself, reported as reserved. */
static void figures(nvmlDevice_t device, unsigned long long *total,
                    unsigned long long *reserved, unsigned long long *used)
{
    *total = fakecuda_mem_size();
    *reserved = *total / 64;
    *used = fakecuda_used(device->cuda_ordinal);
    if (*used > *total - *reserved)
        *used = *total - *reserved;
}

NV_EXPORT nvmlReturn_t nvmlDeviceGetMemoryInfo(nvmlDevice_t device, nvmlMemory_t *memory)
{
    if (init_count == 0)
        return NVML_ERROR_UNINITIALIZED;
    if (device == NULL || memory == NULL)
        return NVML_ERROR_INVALID_ARGUMENT;
    unsigned long long total, reserved, used;
    figures(device, &total, &reserved, &used);
    memory->total = total;
    memory->free = total - reserved - used;
    memory->used = reserved + used; /* version 1 counts reserved as used */
    return NVML_SUCCESS;
}

NV_EXPORT nvmlReturn_t nvmlDeviceGetMemoryInfo_v2(nvmlDevice_t device,
                                                  nvmlMemory_v2_t *memory)
{
    if (init_count == 0)
        return NVML_ERROR_UNINITIALIZED;
    if (device == NULL || memory == NULL)
        return NVML_ERROR_INVALID_ARGUMENT;
    if (memory->version != NVML_MEMORY_V2)
        return NVML_ERROR_ARGUMENT_VERSION_MISMATCH;
    unsigned long long total, reserved, used;
    figures(device, &total, &reserved, &used);
    memory->total = total;
    memory->reserved = reserved;
    memory->used = used;
    memory->free = total - reserved - used;
    return NVML_SUCCESS;
}

NV_EXPORT const char *nvmlErrorString(nvmlReturn_t result)
{
    return result == NVML_SUCCESS ? "Success" : "fake NVML error";
}
