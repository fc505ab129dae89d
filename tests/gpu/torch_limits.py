"""torch_limits: PyTorch under VRAMSHIM_VRAM_LIMIT=4G with offload off.

Run by tests/gpu/run.sh with the library preloaded and
VRAMSHIM_VRAM_LIMIT=4G VRAMSHIM_OFFLOAD=off VRAMSHIM_PIN_LIMIT=1G. Checks,
each printed as one "ok"/"FAIL" line:
  - torch.cuda.mem_get_info reports a 4 GiB total and free within it;
  - torch.cuda.get_device_properties(0).total_memory (cudart asks
    cuDeviceTotalMem) is printed, to see which figure it shows;
  - NVML (when nvidia-ml-py is installed) reports the same slice;
  - filling memory raises torch.OutOfMemoryError at the limit, not before
    (at least 3.5 GiB was held) and not after (never more than 4 GiB);
  - after freeing, the same allocation succeeds again;
  - a pool that sizes itself from free memory, as CuPy's and JAX's do
    (JAX preallocates 75% of it), sizes itself to the slice;
  - pinned host memory stops at the 1 GiB cap, and recovers after freeing.
Exit 1 if any check fails.
"""
import sys

import torch

import common
from common import GiB, MiB, check


def stats():
    s = common.vramshim_stats()
    if s is None:
        sys.exit("torch_limits: vramshim is not preloaded")
    return s


def main():
    free, total = torch.cuda.mem_get_info()
    check(total == 4 * GiB, f"mem_get_info total {total} == 4 GiB")
    check(0 < free <= 4 * GiB, f"mem_get_info free {free} within the slice")
    props = torch.cuda.get_device_properties(0)
    print(f"get_device_properties total_memory {props.total_memory}")
    try:
        import pynvml  # nvidia-ml-py
        pynvml.nvmlInit()
        h = pynvml.nvmlDeviceGetHandleByIndex(torch.cuda.current_device())
        info = pynvml.nvmlDeviceGetMemoryInfo(h)
        check(info.total == 4 * GiB, f"NVML total {info.total} == 4 GiB")
    except ImportError:
        print("skip NVML: nvidia-ml-py is not installed")

    # fill in 256 MiB steps until PyTorch gives up
    held = []
    try:
        while True:
            held.append(torch.empty(256 * MiB, dtype=torch.uint8, device="cuda"))
    except torch.OutOfMemoryError as e:
        oom = e
    got = len(held) * 256 * MiB
    reserved = torch.cuda.memory_reserved()
    s = stats()
    resident = s["devices"][0]["resident"]
    # contexts, runtime limits and modules are charged against the limit too
    overhead = s["devices"][0].get("overhead", 0)
    print(f"overhead (contexts, limits, modules): {overhead / MiB:.0f} MiB")
    check(got + overhead >= 3.5 * GiB,
          f"held {got / GiB:.2f} GiB + {overhead / GiB:.2f} GiB overhead before the OOM")
    check(reserved <= 4 * GiB and resident <= 4 * GiB,
          f"never past the limit: reserved {reserved}, resident {resident}")
    check(s["counters"]["oom_returned"] >= 1, "vramshim counted the OOM")
    print(f"torch OOM message: {str(oom).splitlines()[0][:160]}")
    held.pop()
    held.pop()
    torch.cuda.empty_cache()
    try:
        held.append(torch.empty(256 * MiB, dtype=torch.uint8, device="cuda"))
        check(True, "recovers after freeing")
    except torch.OutOfMemoryError:
        check(False, "recovers after freeing")
    del held
    torch.cuda.empty_cache()

    # a pool that takes 75% of what mem_get_info calls free, in one block
    free, _ = torch.cuda.mem_get_info()
    pool_bytes = int(free * 0.75)
    pool = torch.empty(pool_bytes, dtype=torch.uint8, device="cuda")
    check(pool_bytes <= 3 * GiB, f"a self-sizing pool took {pool_bytes / GiB:.2f} GiB of the 4 GiB slice")
    del pool
    torch.cuda.empty_cache()

    # pinned host memory: cap 1 GiB
    pins = []
    try:
        while True:
            pins.append(torch.empty(128 * MiB, dtype=torch.uint8, pin_memory=True))
    except RuntimeError as e:
        print(f"pinned refusal: {str(e).splitlines()[0][:160]}")
    pinned = len(pins) * 128 * MiB
    app = stats()["pinned"]["app"]
    check(pinned <= 1 * GiB and app <= 1 * GiB, f"pinned {pinned}, vramshim counts {app}: within 1 GiB")
    check(pinned >= 512 * MiB, f"pinned {pinned / MiB:.0f} MiB before the cap")
    pins.clear()
    import gc
    gc.collect()
    torch.cuda.empty_cache()
    try:
        torch.cuda.synchronize()
        pins.append(torch.empty(128 * MiB, dtype=torch.uint8, pin_memory=True))
        check(True, "pinned recovers after freeing")
    except RuntimeError:
        check(False, "pinned recovers after freeing")
    return 1 if common.failures else 0


if __name__ == "__main__":
    sys.exit(main())
