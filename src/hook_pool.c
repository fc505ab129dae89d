/*
 * hook_pool.c: memory pools and graph memory, at the points where what
 * they reserve can change (pool.c charges it).
 *
 * A pool's location is known when the program makes it (cuMemPoolCreate:
 * a device, or the host); a device's current pool when the program sets
 * it. A reserve may shrink at a synchronise (a pool above its release
 * threshold gives memory back there, per CU_MEMPOOL_ATTR_RELEASE_THRESHOLD),
 * a trim, a threshold change or a destruction; graph memory is taken when
 * an instantiated graph is uploaded or launched and given back at
 * cuDeviceGraphMemTrim. Each hook calls the driver, then has pool.c read
 * the figures again; the synchronise hooks cost one relaxed load while no
 * reserve was ever charged.
 *
 * A pool imported from another process is that process's memory: pool.c
 * never charges it, and each pointer imported from it is recorded as
 * imported memory (devices[].imported), outside `allocated` and the
 * limits, until the program frees it (cuMemFree, cuMemFreeAsync).
 *
 * Graph memory is also admitted before it is taken: the instantiate hook
 * has pool.c read the graph's allocation nodes, and vs_graph_admit (used
 * by the upload hooks here and the launch hooks in hook_launch.c) admits
 * what the exec may add, as any allocation is admitted. A launch of an
 * exec with no memory nodes, or one already bound, costs one relaxed load
 * (no exec has memory nodes) or one short lock and a hash look-up.
 */
#include "hooks.h"

#include <errno.h>

CUresult vs_hook_cuMemPoolCreate(CUmemoryPool *pool, const CUmemPoolProps *props)
{
    CUresult rc = vs_real.cuMemPoolCreate(pool, props);
    if (rc == CUDA_SUCCESS && pool && props)
        vs_pool_created(*pool, props->location.type == CU_MEM_LOCATION_TYPE_DEVICE
                                   ? props->location.id
                                   : -1);
    return rc;
}

CUresult vs_hook_cuMemPoolDestroy(CUmemoryPool pool)
{
    CUresult rc = vs_real.cuMemPoolDestroy(pool);
    if (rc == CUDA_SUCCESS)
        vs_pool_destroyed(pool);
    return rc;
}

CUresult vs_hook_cuDeviceSetMemPool(CUdevice dev, CUmemoryPool pool)
{
    CUresult rc = vs_real.cuDeviceSetMemPool(dev, pool);
    if (rc == CUDA_SUCCESS)
        vs_pool_set_current((int)dev, pool);
    return rc;
}

CUresult vs_hook_cuMemPoolTrimTo(CUmemoryPool pool, size_t keep)
{
    CUresult rc = vs_real.cuMemPoolTrimTo(pool, keep);
    if (rc == CUDA_SUCCESS)
        vs_pool_refresh(pool);
    return rc;
}

/* A lower release threshold takes effect at the next synchronise; the
 * pool is read again now anyway, so that its figures are fresh. */
CUresult vs_hook_cuMemPoolSetAttribute(CUmemoryPool pool, CUmemPool_attribute attr, void *value)
{
    CUresult rc = vs_real.cuMemPoolSetAttribute(pool, attr, value);
    if (rc == CUDA_SUCCESS && attr == CU_MEMPOOL_ATTR_RELEASE_THRESHOLD)
        vs_pool_refresh(pool);
    return rc;
}

CUresult vs_hook_cuMemPoolImportFromShareableHandle(CUmemoryPool *pool, void *handle,
                                                   CUmemAllocationHandleType type,
                                                   unsigned long long flags)
{
    CUresult rc = vs_real.cuMemPoolImportFromShareableHandle(pool, handle, type, flags);
    if (rc == CUDA_SUCCESS && pool)
        vs_pool_imported(*pool);
    return rc;
}

/* The driver knows the imported allocation's size and device; a pointer
 * it will not describe is recorded on the current device, one byte long,
 * so that its free still finds it. */
CUresult vs_hook_cuMemPoolImportPointer(CUdeviceptr *ptr, CUmemoryPool pool,
                                        CUmemPoolPtrExportData *data)
{
    CUresult rc = vs_real.cuMemPoolImportPointer(ptr, pool, data);
    if (rc != CUDA_SUCCESS || ptr == NULL)
        return rc;
    CUdeviceptr base = *ptr;
    size_t size = 0;
    int dev = -1;
    if (vs_real.cuMemGetAddressRange_v2 == NULL ||
        vs_real.cuMemGetAddressRange_v2(NULL, &size, base) != CUDA_SUCCESS)
        size = 0;
    if (vs_real.cuPointerGetAttribute == NULL ||
        vs_real.cuPointerGetAttribute(&dev, CU_POINTER_ATTRIBUTE_DEVICE_ORDINAL, base) !=
            CUDA_SUCCESS)
        dev = vs_current_device();
    if (vs_registry_add(base, size, dev, VS_KIND_IMPORTED, vs_owner_current()) == -ENOMEM)
        vs_warn("out of memory for the registry: the imported pointer 0x%llx is not shown",
                (unsigned long long)base);
    return rc;
}

/* ---- synchronises: where pools release memory ------------------------- */

static CUresult synced(CUresult rc)
{
    vs_pool_refresh(NULL);
    return rc;
}

CUresult vs_hook_cuStreamSynchronize(CUstream s) { return synced(vs_real.cuStreamSynchronize(s)); }

CUresult vs_hook_cuStreamSynchronize_ptsz(CUstream s)
{
    return synced(vs_real.cuStreamSynchronize_ptsz(s));
}

CUresult vs_hook_cuCtxSynchronize(void) { return synced(vs_real.cuCtxSynchronize()); }

CUresult vs_hook_cuEventSynchronize(CUevent e) { return synced(vs_real.cuEventSynchronize(e)); }

/* ---- graph memory -------------------------------------------------------- */

CUresult vs_hook_cuGraphAddMemAllocNode(CUgraphNode *node, CUgraph graph, const CUgraphNode *deps,
                                        size_t ndeps, CUDA_MEM_ALLOC_NODE_PARAMS *p)
{
    CUresult rc = vs_real.cuGraphAddMemAllocNode(node, graph, deps, ndeps, p);
    if (rc == CUDA_SUCCESS && p && p->poolProps.location.type == CU_MEM_LOCATION_TYPE_DEVICE)
        vs_graph_mem_seen(p->poolProps.location.id);
    return rc;
}

CUresult vs_hook_cuGraphAddNode_v2(CUgraphNode *node, CUgraph graph, const CUgraphNode *deps,
                                   const CUgraphEdgeData *edges, size_t ndeps,
                                   CUgraphNodeParams *p)
{
    CUresult rc = vs_real.cuGraphAddNode_v2(node, graph, deps, edges, ndeps, p);
    if (rc == CUDA_SUCCESS && p && p->type == CU_GRAPH_NODE_TYPE_MEM_ALLOC &&
        p->alloc.poolProps.location.type == CU_MEM_LOCATION_TYPE_DEVICE)
        vs_graph_mem_seen(p->alloc.poolProps.location.id);
    return rc;
}

static CUresult graph_changed(CUresult rc)
{
    vs_graph_mem_refresh();
    return rc;
}

void vs_graph_admitted(CUgraphExec exec, struct vs_graph_admission *a, CUresult rc)
{
    if (VS_LIKELY(a->devs == 0))
        return;
    /* the reserve read back is charged before the estimate goes */
    vs_graph_exec_ran(exec, a->devs, a->counted, rc == CUDA_SUCCESS);
    for (int d = 0; d < VS_MAX_DEVICES; d++)
        if (a->devs & (1u << d))
            vs_budget_settle(&a->growth[d], false);
}

CUresult vs_graph_admit(const char *call, CUgraphExec exec, struct vs_graph_admission *a)
{
    uint32_t todo = vs_graph_exec_unbound(exec);
    a->devs = 0;
    for (int d = 0; d < VS_MAX_DEVICES && todo >> d; d++) {
        if (!(todo & (1u << d)))
            continue;
        a->devs |= 1u << d;
        a->growth[d] = (struct vs_charge){.dev = d, .owner = 0, .bytes = 0};
        uint64_t growth = vs_graph_exec_take(exec, d, &a->counted[d]);
        if (growth == 0 || vs_budget_charge_device(d, vs_owner_current(), growth,
                                                   &a->growth[d]) == VS_ADMIT)
            continue;
        /* trimmed first, so that the growth admitted next is worked out on
         * the reserve as it stands after the trim */
        vs_graph_exec_untake(d, a->counted[d]);
        (void)vs_pool_trim(d);
        growth = vs_graph_exec_take(exec, d, &a->counted[d]);
        if (growth && vs_admit_device(call, d, growth, &a->growth[d]) != CUDA_SUCCESS) {
            vs_graph_admitted(exec, a, CUDA_ERROR_OUT_OF_MEMORY);
            return CUDA_ERROR_OUT_OF_MEMORY;
        }
    }
    return CUDA_SUCCESS;
}

CUresult vs_hook_cuGraphExecDestroy(CUgraphExec exec)
{
    CUresult rc = vs_real.cuGraphExecDestroy(exec);
    if (rc == CUDA_SUCCESS)
        vs_graph_exec_gone(exec);
    return graph_changed(rc);
}

/* The graph's allocation nodes are read while the graph is at hand. */
CUresult vs_hook_cuGraphInstantiateWithFlags(CUgraphExec *exec, CUgraph graph,
                                             unsigned long long flags)
{
    CUresult rc = vs_real.cuGraphInstantiateWithFlags(exec, graph, flags);
    if (rc == CUDA_SUCCESS && exec)
        vs_graph_exec_made(*exec, graph);
    return graph_changed(rc);
}

/* The same for CUDA 10 and 11's instantiation (error node, log buffer). */
#define OLD_INSTANTIATE_HOOK(name)                                            \
    CUresult vs_hook_##name(CUgraphExec *exec, CUgraph graph, CUgraphNode *error_node, \
                            char *log, size_t log_size)                       \
    {                                                                         \
        CUresult rc = vs_real.name(exec, graph, error_node, log, log_size);   \
        if (rc == CUDA_SUCCESS && exec)                                       \
            vs_graph_exec_made(*exec, graph);                                 \
        return graph_changed(rc);                                             \
    }
OLD_INSTANTIATE_HOOK(cuGraphInstantiate)
OLD_INSTANTIATE_HOOK(cuGraphInstantiate_v2)

#define UPLOAD_HOOK(suffix)                                                   \
    CUresult vs_hook_cuGraphUpload##suffix(CUgraphExec exec, CUstream s)      \
    {                                                                         \
        struct vs_graph_admission a;                                          \
        CUresult rc = vs_graph_admit("cuGraphUpload", exec, &a);              \
        if (rc != CUDA_SUCCESS)                                               \
            return rc;                                                        \
        rc = vs_real.cuGraphUpload##suffix(exec, s);                          \
        vs_graph_admitted(exec, &a, rc);                                      \
        return graph_changed(rc);                                             \
    }
UPLOAD_HOOK()
UPLOAD_HOOK(_ptsz)

/* CUDA_GRAPH_INSTANTIATE_FLAG_UPLOAD "will perform an upload of the graph
 * into hUploadStream once the graph has been instantiated": that upload
 * maps the graph's memory, so it is made apart, admitted as any upload.
 * Refused, the new exec is destroyed and the call answers as the driver
 * does when it cannot map the memory. */
#define INSTANTIATE_PARAMS_HOOK(suffix)                                       \
    CUresult vs_hook_cuGraphInstantiateWithParams##suffix(                    \
        CUgraphExec *exec, CUgraph graph, CUDA_GRAPH_INSTANTIATE_PARAMS *p)   \
    {                                                                         \
        if (exec == NULL || p == NULL || !(p->flags & CUDA_GRAPH_INSTANTIATE_FLAG_UPLOAD)) { \
            CUresult rc = vs_real.cuGraphInstantiateWithParams##suffix(exec, graph, p); \
            if (rc == CUDA_SUCCESS && exec)                                   \
                vs_graph_exec_made(*exec, graph);                             \
            return graph_changed(rc);                                         \
        }                                                                     \
        CUDA_GRAPH_INSTANTIATE_PARAMS mine = *p;                              \
        mine.flags &= ~(cuuint64_t)CUDA_GRAPH_INSTANTIATE_FLAG_UPLOAD;        \
        CUresult rc = vs_real.cuGraphInstantiateWithParams##suffix(exec, graph, &mine); \
        p->hErrNode_out = mine.hErrNode_out;                                  \
        p->result_out = mine.result_out;                                      \
        if (rc != CUDA_SUCCESS)                                               \
            return rc;                                                        \
        vs_graph_exec_made(*exec, graph);                                     \
        rc = vs_hook_cuGraphUpload##suffix(*exec, p->hUploadStream);          \
        if (rc != CUDA_SUCCESS) {                                             \
            (void)vs_hook_cuGraphExecDestroy(*exec);                          \
            *exec = NULL;                                                     \
            p->result_out = CUDA_GRAPH_INSTANTIATE_ERROR;                     \
        }                                                                     \
        return rc;                                                            \
    }
INSTANTIATE_PARAMS_HOOK()
INSTANTIATE_PARAMS_HOOK(_ptsz)

CUresult vs_hook_cuDeviceGraphMemTrim(CUdevice dev)
{
    return graph_changed(vs_real.cuDeviceGraphMemTrim(dev));
}
