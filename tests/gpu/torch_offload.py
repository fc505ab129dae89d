"""torch_offload: three models whose weights together exceed the VRAM limit,
run in turn (tests/gpu/run.sh, issue 4).

Each model is a stack of fp32 Linear layers, its weights drawn from a CUDA
generator with a fixed seed, so every run builds the same models. The three
run in turn, twice round, on the same input; every output is written to
--out (raw bytes) so two runs can be compared byte for byte.

  --mode resident  every model stays on the device (run under vramshim with
                   a VRAM limit, vramshim moves the idle ones; without a
                   limit it is the reference)
  --mode hand      what a user does by hand: models live in pinned host
                   memory and are moved with .to("cuda") before use and
                   back after (the time vramshim is measured against)
Prints "time <seconds>" for the six forward passes and their moves.
"""
import argparse
import time

import torch

from common import seeded_linears

p = argparse.ArgumentParser()
p.add_argument("--out", required=True)
p.add_argument("--mode", choices=["resident", "hand"], default="resident")
p.add_argument("--gib", type=float, default=6.0, help="weights per model")
a = p.parse_args()

WIDTH = 8192
layer_bytes = WIDTH * WIDTH * 4
layers = max(1, int(a.gib * (1 << 30) // layer_bytes))


def build(seed):
    model = seeded_linears(WIDTH, layers, torch.Generator(device="cuda").manual_seed(seed))
    if a.mode == "hand":  # kept in pinned memory, moved in for use
        for lin in model:
            lin.host = lin.weight.data.to("cpu").pin_memory()
            lin.weight.data = lin.host
    torch.cuda.synchronize()
    return model


models = []
for seed in (1, 2, 3):
    models.append(build(seed))
    if a.mode == "hand":
        torch.cuda.empty_cache()

x = torch.randn(64, WIDTH, device="cuda", generator=torch.Generator(device="cuda").manual_seed(9))
outputs = []
torch.cuda.synchronize()
t0 = time.time()
with torch.no_grad():
    for _ in range(2):
        for m in models:
            if a.mode == "hand":
                for lin in m:
                    lin.weight.data = lin.host.to("cuda", non_blocking=True)
            y = m(x)
            outputs.append(y.cpu())
            if a.mode == "hand":
                for lin in m:  # model.to("cpu") into the same pinned memory
                    lin.host.copy_(lin.weight.data, non_blocking=True)
                    lin.weight.data = lin.host
                torch.cuda.synchronize()
torch.cuda.synchronize()
print("time %.3f" % (time.time() - t0))
print("layers per model %d, %.1f GiB each" % (layers, layers * layer_bytes / (1 << 30)))
with open(a.out, "wb") as f:
    for y in outputs:
        f.write(y.numpy().tobytes())
