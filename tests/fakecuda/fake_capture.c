/*
 * fake_capture.c: stream capture in the test driver (driver API reference,
 * Stream Management: cuStreamBeginCapture, cuStreamEndCapture,
 * cuStreamIsCapturing, cuStreamGetCaptureInfo).
 *
 * "When a stream is in capture mode, all operations pushed into the stream
 * will not be executed, but will instead be captured into a graph, which
 * will be returned via cuStreamEndCapture." Capture may not begin on the
 * legacy stream, nor on a stream already capturing. A call that is unsafe
 * during capture (synchronising the stream or its context, querying the
 * stream) is refused with CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED and
 * invalidates the capture; work queued after that is refused with
 * CUDA_ERROR_STREAM_CAPTURE_INVALIDATED, and cuStreamEndCapture returns a
 * NULL graph with that error ("If capture was invalidated, due to a
 * violation of the rules of stream capture, then a NULL graph will be
 * returned"). The graph replays the recorded work in order
 * (cuGraphInstantiate, cuGraphLaunch in fake_stream.c).
 */
#include "fake_internal.h"

#include <stdlib.h>
#include <string.h>

static _Atomic uint64_t next_capture_id;

bool fk_capture_take(struct fk_stream *st, struct fk_op *op)
{
    pthread_mutex_lock(&st->mu);
    bool taken = st->capture == CU_STREAM_CAPTURE_STATUS_ACTIVE;
    if (taken) {
        if (st->cap_tail)
            st->cap_tail->next = op;
        else
            st->cap_head = op;
        st->cap_tail = op;
    }
    pthread_mutex_unlock(&st->mu);
    return taken;
}

bool fk_capturing(struct fk_stream *st)
{
    pthread_mutex_lock(&st->mu);
    bool active = st->capture == CU_STREAM_CAPTURE_STATUS_ACTIVE;
    pthread_mutex_unlock(&st->mu);
    return active;
}

void fk_capture_invalidate(struct fk_stream *st)
{
    pthread_mutex_lock(&st->mu);
    if (st->capture == CU_STREAM_CAPTURE_STATUS_ACTIVE)
        st->capture = CU_STREAM_CAPTURE_STATUS_INVALIDATED;
    pthread_mutex_unlock(&st->mu);
}

static bool is_legacy(CUstream s)
{
    return s == NULL || s == CU_STREAM_LEGACY || s == CU_STREAM_PER_THREAD;
}

static CUresult begin(CUstream s, CUstreamCaptureMode mode)
{
    if (is_legacy(s) || mode > CU_STREAM_CAPTURE_MODE_RELAXED)
        return CUDA_ERROR_INVALID_VALUE;
    struct fk_stream *st = fk_stream_of(s);
    pthread_mutex_lock(&st->mu);
    CUresult rc = CUDA_SUCCESS;
    if (st->capture != CU_STREAM_CAPTURE_STATUS_NONE) {
        rc = CUDA_ERROR_ILLEGAL_STATE;
    } else {
        st->capture = CU_STREAM_CAPTURE_STATUS_ACTIVE;
        st->capture_id = atomic_fetch_add(&next_capture_id, 1) + 1;
        st->cap_head = st->cap_tail = NULL;
        st->n_cap_alloc = 0;
    }
    pthread_mutex_unlock(&st->mu);
    return rc;
}

static CUresult end(CUstream s, CUgraph *graph)
{
    if (graph == NULL)
        return CUDA_ERROR_INVALID_VALUE;
    *graph = NULL;
    if (is_legacy(s))
        return CUDA_ERROR_ILLEGAL_STATE;
    struct fk_stream *st = fk_stream_of(s);
    pthread_mutex_lock(&st->mu);
    int was = st->capture;
    struct fk_op *ops = st->cap_head;
    int n_alloc = st->n_cap_alloc;
    __typeof__(st->cap_alloc) allocs;
    memcpy(allocs, st->cap_alloc, sizeof allocs);
    st->n_cap_alloc = 0;
    st->capture = CU_STREAM_CAPTURE_STATUS_NONE;
    st->cap_head = st->cap_tail = NULL;
    pthread_mutex_unlock(&st->mu);
    if (was == CU_STREAM_CAPTURE_STATUS_NONE)
        return CUDA_ERROR_ILLEGAL_STATE;
    if (was == CU_STREAM_CAPTURE_STATUS_INVALIDATED) {
        while (ops) {
            struct fk_op *next = ops->next;
            free(ops->blob);
            free(ops);
            ops = next;
        }
        return CUDA_ERROR_STREAM_CAPTURE_INVALIDATED;
    }
    *graph = fk_graph_of_ops(ops);
    for (int i = 0; *graph && i < n_alloc; i++)
        (void)fk_graph_add_alloc(*graph, allocs[i].dev, allocs[i].dptr, allocs[i].bytes, NULL);
    return *graph ? CUDA_SUCCESS : CUDA_ERROR_OUT_OF_MEMORY;
}

static CUresult status(CUstream s, CUstreamCaptureStatus *cs, cuuint64_t *id)
{
    if (cs == NULL)
        return CUDA_ERROR_INVALID_VALUE;
    if (is_legacy(s) && fk_current() == NULL) {
        *cs = CU_STREAM_CAPTURE_STATUS_NONE;
        return CUDA_SUCCESS;
    }
    struct fk_stream *st = fk_stream_of(s);
    if (st == NULL)
        return CUDA_ERROR_INVALID_VALUE;
    pthread_mutex_lock(&st->mu);
    *cs = (CUstreamCaptureStatus)st->capture;
    if (id)
        *id = st->capture_id;
    pthread_mutex_unlock(&st->mu);
    return CUDA_SUCCESS;
}

#define FK_CAPTURE_FAMILY(sfx)                                                           \
    FK_EXPORT CUresult cuStreamBeginCapture_v2##sfx(CUstream s, CUstreamCaptureMode mode) \
    {                                                                                    \
        FK_ENTER("cuStreamBeginCapture_v2" #sfx);                                        \
        return begin(s, mode);                                                           \
    }                                                                                    \
    FK_EXPORT CUresult cuStreamEndCapture##sfx(CUstream s, CUgraph *graph)               \
    {                                                                                    \
        FK_ENTER("cuStreamEndCapture" #sfx);                                             \
        return end(s, graph);                                                            \
    }                                                                                    \
    FK_EXPORT CUresult cuStreamIsCapturing##sfx(CUstream s, CUstreamCaptureStatus *cs)   \
    {                                                                                    \
        FK_ENTER("cuStreamIsCapturing" #sfx);                                            \
        return status(s, cs, NULL);                                                      \
    }                                                                                    \
    FK_EXPORT CUresult cuStreamGetCaptureInfo_v3##sfx(                                   \
        CUstream s, CUstreamCaptureStatus *cs, cuuint64_t *id, CUgraph *graph,           \
        const CUgraphNode **deps, const CUgraphEdgeData **edges, size_t *ndeps)          \
    {                                                                                    \
        FK_ENTER("cuStreamGetCaptureInfo_v3" #sfx);                                      \
        if (graph)                                                                       \
            *graph = NULL;                                                               \
        if (deps)                                                                        \
            *deps = NULL;                                                                \
        if (edges)                                                                       \
            *edges = NULL;                                                               \
        if (ndeps)                                                                       \
            *ndeps = 0;                                                                  \
        return status(s, cs, id);                                                        \
    }
FK_CAPTURE_FAMILY()
FK_CAPTURE_FAMILY(_ptsz)
