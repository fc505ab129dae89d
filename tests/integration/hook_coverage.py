#!/usr/bin/python3
"""hook_coverage: every driver entry point that takes a device pointer or a
stream is hooked (src/hooks.def), or is on one of the lists below with the
reason it needs no hook, or is a gap named as such (issue 11, case 9).

It reads the real cuda.h through the C preprocessor twice (the legacy and
the per-thread-default-stream names: cuMemcpy3DPeer and
cuMemcpy3DPeer_ptds), and the test driver's exported names, and fails on
any such entry point neither hooked nor listed. A name listed that the
cuda.h at hand does not declare is only reported: other CUDA versions
declare other sets.
"""
import os
import re
import subprocess
import sys

SRC = os.environ.get("VRAMSHIM_SRC", ".")
BUILD = os.environ.get("VRAMSHIM_BUILD", ".")
CPPFLAGS = os.environ.get("VRAMSHIM_CUDA_CPPFLAGS", "-I/usr/local/cuda/include").split()

# Entry points that take a CUdeviceptr or a CUstream and need no hook.
NO_HOOK = {}
def allow(reason, *names):
    for n in names:
        NO_HOOK[n] = reason

PT = lambda *names: [v for n in names for v in (n, n + "_ptsz")]
allow("orders or describes work on a stream; reaches no memory",
      *PT("cuEventRecord", "cuEventRecordWithFlags", "cuStreamWaitEvent", "cuStreamQuery",
          "cuStreamGetPriority", "cuStreamGetFlags", "cuStreamGetId",
          "cuStreamGetCtx", "cuStreamGetCtx_v2", "cuStreamGetDevice", "cuStreamGetAttribute",
          "cuStreamSetAttribute", "cuStreamCopyAttributes"),
      "cuStreamCreate", "cuStreamCreateWithPriority", "cuStreamDestroy_v2", "cuStreamGetGreenCtx",
      "cuGreenCtxStreamCreate")
allow("stream capture records the work the hooked entry points submit; the captured "
      "graph's launch is hooked (cuGraphLaunch)",
      *PT("cuStreamBeginCapture_v2", "cuStreamBeginCaptureToGraph", "cuStreamEndCapture",
          "cuStreamIsCapturing", "cuStreamGetCaptureInfo_v3",
          "cuStreamUpdateCaptureDependencies_v2"))
allow("runs host code, which reaches device memory only through hooked calls",
      *PT("cuLaunchHostFunc", "cuStreamAddCallback"))
allow("signals or waits on an external semaphore; reaches no memory",
      *PT("cuSignalExternalSemaphoresAsync", "cuWaitExternalSemaphoresAsync"))
allow("managed memory, which vramshim never backs (it passes through, counted in full)",
      *PT("cuMemPrefetchAsync_v2", "cuStreamAttachMemAsync", "cuMemPrefetchBatchAsync",
          "cuMemDiscardBatchAsync", "cuMemDiscardAndPrefetchBatchAsync"),
      "cuMemAdvise_v2", "cuMemRangeGetAttribute", "cuMemRangeGetAttributes")
allow("the program's own virtual address ranges (vramshim's reservations are never "
      "handed to the program to reserve or free)", "cuMemAddressReserve", "cuMemAddressFree")
allow("returns an address; submits no work",
      "cuMemHostGetDevicePointer_v2", "cuModuleGetGlobal_v2", "cuLibraryGetGlobal",
      "cuLibraryGetManaged", "cuGraphicsResourceGetMappedPointer_v2",
      "cuExternalMemoryGetMappedBuffer", "cuTexRefGetAddress_v2")
allow("graphics interop resources, which vramshim never backs",
      *PT("cuGraphicsMapResources", "cuGraphicsUnmapResources"))
allow("stream-ordered pool and graph memory, never backed (issue 12 counts it)",
      "cuMemPoolExportPointer", "cuGraphAddMemFreeNode",
      "cuGraphMemFreeNodeGetParams")
allow("between arrays and host memory, or into sparse arrays: no device pointer",
      *PT("cuMemcpyAtoHAsync_v2", "cuMemcpyHtoAAsync_v2", "cuMemMapArrayAsync"))

# Not hooked yet, and should be: each names device memory a backed buffer
# may hold, with what closing it needs. Listed so that a gap is visible
# here rather than forgotten; none is open now.
GAPS = {}

ARG = re.compile(r"\bCUdeviceptr\b|\bCUstream\b|CUDA_MEMCPY3D_PEER|CUDA_LAUNCH_PARAMS|"
                 r"CUDA_MEMCPY3D_BATCH_OP")


def declared():
    out = {}
    for extra in ([], ["-DCUDA_API_PER_THREAD_DEFAULT_STREAM"]):
        text = subprocess.run(["cc", "-E", "-P", *CPPFLAGS, *extra, "-"],
                              input="#include <cuda.h>\n", capture_output=True, text=True,
                              check=True).stdout
        for m in re.finditer(r"CUresult\s+(cu\w+)\s*\(([^;]*?)\)\s*;", text, re.S):
            out[m.group(1)] = m.group(2)
    return out


def main():
    decls = declared()
    hooked = set(re.findall(r"^VS_HOOK\((\w+)", open(os.path.join(SRC, "src/hooks.def")).read(),
                            re.M))
    fake = os.path.join(BUILD, "tests/fakecuda/.libs/libcuda.so.1")
    exported = set()
    if os.path.exists(fake):
        nm = subprocess.run(["nm", "-D", "--defined-only", fake], capture_output=True,
                            text=True, check=True).stdout
        exported = {line.split()[-1] for line in nm.splitlines() if line.split()[-1:] and
                    line.split()[-1].startswith("cu")}
    takes = {n for n, params in decls.items() if ARG.search(params)}
    missing = sorted(n for n in takes if n not in hooked and n not in NO_HOOK and n not in GAPS)
    fake_missing = sorted(n for n in exported & takes if n not in hooked and n not in NO_HOOK
                          and n not in GAPS)
    for n in sorted(set(NO_HOOK) | set(GAPS)):
        if n not in decls:
            print(f"note: {n} is listed but this cuda.h does not declare it")
    for n in sorted(g for g in GAPS if g in takes):
        print(f"known gap: {n}: {GAPS[n]}")
    print(f"{len(takes)} entry points take a device pointer or a stream: "
          f"{len(takes & hooked)} hooked, {len([n for n in takes if n in NO_HOOK])} need no hook, "
          f"{len([n for n in takes if n in GAPS])} known gaps; "
          f"the test driver exports {len(exported & takes)} of them")
    for n in missing:
        print(f"FAIL: {n}({' '.join(decls[n].split())}) is neither hooked nor listed")
    for n in fake_missing:
        print(f"FAIL: the test driver exports {n}, neither hooked nor listed")
    return 1 if missing or fake_missing else 0


if __name__ == "__main__":
    sys.exit(main())
