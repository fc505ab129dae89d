/*
 * hooks.h: the hooks layer: one body per intercepted driver call
 * (hook_*.c, generated names vs_hook_<entry> from hooks.def), the budget as
 * the hooks ask it (admit.c), NVML's figures (hook_nvml.c), memory shared
 * between processes (ipc.c), and the table that pairs each real driver
 * pointer with its hook (hook_table.c).
 *
 * May include: offload.h, driver.h, core.h. Not control.h (a sibling
 * layer) and not init.h (above). The exported entry points that lead here
 * are the init layer's (hook_exports.c, hook_dlsym.c).
 */
#ifndef VS_HOOKS_H
#define VS_HOOKS_H

#include "offload.h"

/* The hook bodies, one per table entry. */
#define VS_HOOK(name, params, args) CUresult vs_hook_##name params;
#define VS_REAL_ONLY(name, params, args)
#include "hooks.def"
#undef VS_HOOK
#undef VS_REAL_ONLY

/* ---- hook_table.c: real driver pointers and their hooks ----------------- */
/* Pair every real pointer with its hook, once the driver is loaded. */
void vs_hook_table_init(void);
/* The hook that stands for a real driver pointer, or NULL. */
void *vs_hook_for_real(void *real_fn);

/* ---- the gated call, shared by every submission hook -------------------- */
/* Hand `call` to the driver inside the move gate and return its result. */
#define VS_GATED(call)                         \
    do {                                       \
        int gate_ = vs_gate_enter();           \
        if (gate_ < 0)                         \
            return CUDA_ERROR_OUT_OF_MEMORY;   \
        CUresult rc_ = (call);                 \
        vs_gate_leave(gate_);                  \
        return rc_;                            \
    } while (0)

/* ---- admit.c: the hooks' side of the budget ---------------------------- */
/* Charge before the driver call; on refusal count the OOM, log one line
 * naming the rule and the owners, and return CUDA_ERROR_OUT_OF_MEMORY. */
CUresult vs_admit_device(const char *call, int dev, uint64_t bytes,
                         struct vs_charge *out);
CUresult vs_admit_pinned(const char *call, uint64_t bytes, struct vs_charge *out);
/* Memory a call has already taken beyond allocations (a module, a raised
 * runtime limit): charged as overhead within the limit, after making room
 * if need be; else refused as an allocation would be (the caller undoes
 * the call). */
CUresult vs_admit_overhead(const char *call, enum vs_overhead_space space, uint64_t handle,
                           int dev, uint64_t ctx, uint64_t bytes);
/* The driver said out of memory for `bytes` on dev that the budget had
 * admitted: the device itself is short. Step 0 moves this process's own
 * least recently touched buffers off dev, step 1 asks the other processes
 * on it (relief.c). True when that step moved something and the driver
 * should be asked again. Call with no lock of vramshim's held. */
bool vs_admit_device_short(int dev, uint64_t bytes, const char *call, int step);
/* rc = expr (a driver allocation on dev); while it says out of memory,
 * make room here, then ask the peers, and call it again after each step
 * that moved something. */
#define VS_ALLOC_RETRY(rc, dev, bytes, call, expr)                              \
    do {                                                                        \
        (rc) = (expr);                                                          \
        for (int step_ = 0; (rc) == CUDA_ERROR_OUT_OF_MEMORY && step_ < 2; step_++) \
            if (vs_admit_device_short((dev), (bytes), (call), step_))           \
                (rc) = (expr);                                                  \
    } while (0)

/* ---- hook_pool.c: graph memory admitted before a graph runs ------------ */
/* What launching or uploading an exec may add to the graph memory of each
 * device it is not bound on, admitted like any allocation (trim, make
 * room, relief, else CUDA_ERROR_OUT_OF_MEMORY, which is what the driver
 * answers when it cannot map a graph's memory). vs_graph_admitted, after
 * the driver call, reads graph memory back and drops the estimate. */
struct vs_graph_admission {
    uint32_t devs;
    uint64_t counted[VS_MAX_DEVICES];
    struct vs_charge growth[VS_MAX_DEVICES];
};
CUresult vs_graph_admit(const char *call, CUgraphExec exec, struct vs_graph_admission *a);
void vs_graph_admitted(CUgraphExec exec, struct vs_graph_admission *a, CUresult rc);

/* ---- hook_mem.c: the allocation hooks' common steps, for other families */
/* The driver answered an allocation charged as ch: settle, record, count. */
CUresult vs_alloc_finish(struct vs_charge *ch, CUresult rc, uint64_t base, uint64_t size,
                         enum vs_kind kind);
/* The driver answered the release of a record removed beforehand. */
CUresult vs_alloc_released(bool had, const struct vs_alloc_info *removed, CUresult rc);
/* What a pitched allocation is charged before the driver picks the pitch. */
uint64_t vs_pitch_guess(uint64_t width, uint64_t height);

/* ---- hook_strided.c: one side of a strided copy ------------------------- */
/* Touch the side (its memory type, base, first byte at x, y rows and z
 * layers in, pitch bytes a row, rows a layer; w bytes by h rows by d
 * layers) when it is device memory: from its first byte to its last, the
 * pitch gaps included. Host memory and arrays are not touched. */
void vs_touch_strided(CUmemorytype type, CUdeviceptr dev, size_t x, size_t y, size_t z,
                      size_t pitch, size_t rows, size_t w, size_t h, size_t d);
/* Both sides of a 3D copy: p is a CUDA_MEMCPY3D or a CUDA_MEMCPY3D_PEER
 * (cuda.h names their fields alike), or NULL. */
#define VS_TOUCH_3D(p)                                                                        \
    do {                                                                                      \
        if ((p) == NULL)                                                                      \
            break;                                                                            \
        vs_touch_strided((p)->srcMemoryType, (p)->srcDevice, (p)->srcXInBytes, (p)->srcY,     \
                         (p)->srcZ, (p)->srcPitch, (p)->srcHeight, (p)->WidthInBytes,         \
                         (p)->Height, (p)->Depth);                                            \
        vs_touch_strided((p)->dstMemoryType, (p)->dstDevice, (p)->dstXInBytes, (p)->dstY,     \
                         (p)->dstZ, (p)->dstPitch, (p)->dstHeight, (p)->WidthInBytes,         \
                         (p)->Height, (p)->Depth);                                            \
    } while (0)

/* ---- hook_capture.c ------------------------------------------------------ */
/* Is stream s capturing (per_thread: the _ptsz entry points' streams)? */
bool vs_stream_capturing(CUstream s, bool per_thread);

/* ---- hook_ctx.c: device memory a call takes beyond allocations -------- */
/* The device's free memory and this process's charge there, read before
 * a call (in the current context, when it is on dev). Measured calls are
 * serialised: begin takes a lock that end lets go. */
struct vs_probe {
    int dev;
    bool known;      /* free was read */
    bool nvml_known; /* NVML's figure for this process was read */
    uint64_t free, charged, nvml_used;
};
void vs_probe_begin(struct vs_probe *p, int dev);
/* After the call: the bytes it took (negative: gave back), read in `in`
 * (NULL: the current context); 0 when rc is not CUDA_SUCCESS. Without a
 * reading before, only a new context is charged (what the device holds
 * beyond this process's charges, at most VS_CONTEXT_MAX). */
int64_t vs_probe_end(struct vs_probe *p, CUresult rc, CUcontext in, bool new_context);

/* ---- hook_nvml.c: NVML's memory figures ------------------------------ */
/* The few NVML types needed, as nvml.h lays them out (its ABI is stable). */
typedef int nvmlReturn_t;
typedef struct nvmlDevice_st *nvmlDevice_t;
typedef struct {
    unsigned long long total, free, used;
} nvmlMemory_t;
typedef struct {
    unsigned int version;
    unsigned long long total, reserved, free, used;
} nvmlMemory_v2_t;
/* dlsym found `sym` for an nvml* name: the hook to hand out instead. */
void *vs_nvml_swap(const char *name, void *sym);
/* What NVML says this process uses on CUDA device `ordinal`
 * (nvmlDeviceGetComputeRunningProcesses_v3), when the program has loaded
 * and initialised NVML and NVML lists this process; else false. */
bool vs_nvml_process_used(int ordinal, uint64_t *used);

/* ---- fork: the hooks' own locks and tables, made anew in the child ------ */
void vs_ipc_atfork_child(void);
void vs_nvml_atfork_child(void);
void vs_ctx_atfork_child(void);

#endif
