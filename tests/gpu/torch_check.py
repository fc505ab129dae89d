"""torch_check: a small, deterministic PyTorch workload for tests/gpu/run.sh.

Runs a few layers forward and backward on fixed inputs under whatever
allocator PYTORCH_CUDA_ALLOC_CONF selects and writes the output bytes to
--out. Under vramshim (--expect-vramshim) it also compares the device bytes
vramshim counts with what PyTorch says it holds: memory_reserved() for the
caching allocator (plain and expandable segments), memory_allocated() for
the cudaMallocAsync backend, which allocates each tensor from the driver.
Exit 1 on a mismatch.
"""
import argparse
import os
import sys

import torch

from common import vramshim_stats


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--expect-vramshim", action="store_true")
    args = ap.parse_args()
    torch.manual_seed(1234)
    torch.backends.cudnn.deterministic = True
    torch.backends.cuda.matmul.allow_tf32 = False
    dev = torch.device("cuda")
    model = torch.nn.Sequential(
        torch.nn.Linear(1024, 4096), torch.nn.GELU(),
        torch.nn.Linear(4096, 4096), torch.nn.GELU(),
        torch.nn.Linear(4096, 1024),
    ).to(dev)
    x = torch.randn(512, 1024, device=dev)
    out = model(x)
    out.sum().backward()
    keep = [torch.empty(n << 20, dtype=torch.uint8, device=dev) for n in (1, 3, 17, 64)]
    torch.cuda.synchronize()
    result = torch.cat([out.flatten(), model[0].weight.grad.flatten()]).cpu()
    with open(args.out, "wb") as f:
        f.write(result.numpy().tobytes())

    conf = os.environ.get("PYTORCH_CUDA_ALLOC_CONF", "")
    if "cudaMallocAsync" in conf:
        mine, what = torch.cuda.memory_allocated(), "memory_allocated"
    else:
        mine, what = torch.cuda.memory_reserved(), "memory_reserved"
    print(f"torch {what} = {mine}")
    stats = vramshim_stats()
    if stats is None:
        if args.expect_vramshim:
            print("vramshim is not loaded")
            return 1
        return 0
    counted = stats["devices"][0]["allocated"]
    print(f"vramshim devices[0].allocated = {counted}")
    print(f"vramshim counters = {stats['counters']}")
    del keep
    return 0 if counted == mine else 1


if __name__ == "__main__":
    sys.exit(main())
