/*
 * hook_capture.c: stream capture begins and ends.
 *
 * Synchronising a context while one of its streams captures invalidates
 * the capture (torch.compile's "reduce-overhead", vLLM's decode graphs,
 * any cudaStreamBeginCapture user), so the move fence (fence.c) must know
 * when one is under way. The count goes up before the driver is asked, so
 * that no fence starts a synchronise after the capture has begun; it comes
 * down once the stream says it no longer captures (cuStreamEndCapture ends
 * an invalidated capture too, with an error).
 */
#include "hooks.h"

bool vs_stream_capturing(CUstream s, bool per_thread)
{
    CUstreamCaptureStatus st = CU_STREAM_CAPTURE_STATUS_NONE;
    CUresult (*is)(CUstream, CUstreamCaptureStatus *) =
        per_thread && vs_real.cuStreamIsCapturing_ptsz ? vs_real.cuStreamIsCapturing_ptsz
                                                       : vs_real.cuStreamIsCapturing;
    return is && is(s, &st) == CUDA_SUCCESS && st != CU_STREAM_CAPTURE_STATUS_NONE;
}

#define BEGIN(call)                           \
    do {                                      \
        vs_capture_begin();                   \
        CUresult rc_ = (call);                \
        if (rc_ != CUDA_SUCCESS)              \
            vs_capture_end();                 \
        return rc_;                           \
    } while (0)

CUresult vs_hook_cuStreamBeginCapture_v2(CUstream hStream, CUstreamCaptureMode mode)
{
    BEGIN(vs_real.cuStreamBeginCapture_v2(hStream, mode));
}

CUresult vs_hook_cuStreamBeginCapture_v2_ptsz(CUstream hStream, CUstreamCaptureMode mode)
{
    BEGIN(vs_real.cuStreamBeginCapture_v2_ptsz(hStream, mode));
}

CUresult vs_hook_cuStreamBeginCaptureToGraph(CUstream hStream, CUgraph hGraph,
                                             const CUgraphNode *deps,
                                             const CUgraphEdgeData *edges, size_t n,
                                             CUstreamCaptureMode mode)
{
    BEGIN(vs_real.cuStreamBeginCaptureToGraph(hStream, hGraph, deps, edges, n, mode));
}

CUresult vs_hook_cuStreamBeginCaptureToGraph_ptsz(CUstream hStream, CUgraph hGraph,
                                                  const CUgraphNode *deps,
                                                  const CUgraphEdgeData *edges, size_t n,
                                                  CUstreamCaptureMode mode)
{
    BEGIN(vs_real.cuStreamBeginCaptureToGraph_ptsz(hStream, hGraph, deps, edges, n, mode));
}

static CUresult end(CUresult (*real)(CUstream, CUgraph *), CUstream s, CUgraph *g,
                    bool per_thread)
{
    bool was = vs_stream_capturing(s, per_thread);
    CUresult rc = real(s, g);
    if (was && !vs_stream_capturing(s, per_thread))
        vs_capture_end();
    return rc;
}

CUresult vs_hook_cuStreamEndCapture(CUstream hStream, CUgraph *phGraph)
{
    return end(vs_real.cuStreamEndCapture, hStream, phGraph, false);
}

CUresult vs_hook_cuStreamEndCapture_ptsz(CUstream hStream, CUgraph *phGraph)
{
    return end(vs_real.cuStreamEndCapture_ptsz, hStream, phGraph, true);
}
