"""torch_relief: two PyTorch processes on one GPU, each needing about 60% of
it, taking turns at inference (tests/gpu/run.sh, issue 15).

  --alone --seed S   one model alone: N steps, outputs to --out
  (default)          two workers (this script, --worker), seeds 1 and 2,
                     started one after the other, then N steps each in turn;
                     outputs to --out-a and --out-b
A worker builds a stack of fp32 Linear layers holding --frac of the device
(weights drawn from a CUDA generator with its seed, so every run builds the
same model), prints "ready" (or "oom" if the device cannot hold it), then
runs one forward pass per "step" line, appending the output's bytes to its
file and printing "ok SECONDS". The pair prints "second: oom" and exits 3
when the second worker cannot build its model (what happens without
vramshim), else "step_a MEDIAN" and "step_b MEDIAN".
"""
import argparse
import statistics
import subprocess
import sys
import time

from common import seeded_linears

p = argparse.ArgumentParser()
p.add_argument("--worker", action="store_true")
p.add_argument("--alone", action="store_true")
p.add_argument("--seed", type=int, default=1)
p.add_argument("--frac", type=float, default=0.6)
p.add_argument("--steps", type=int, default=4)
p.add_argument("--out")
p.add_argument("--out-a")
p.add_argument("--out-b")
a = p.parse_args()

WIDTH = 8192


def worker(seed, frac, out):
    import torch
    total = torch.cuda.mem_get_info()[1]
    layers = max(1, int(total * frac) // (WIDTH * WIDTH * 4))
    try:
        g = torch.Generator(device="cuda").manual_seed(seed)
        model = seeded_linears(WIDTH, layers, g)
        x = torch.randn(64, WIDTH, device="cuda", generator=g)
        torch.cuda.synchronize()
    except torch.cuda.OutOfMemoryError:
        print("oom", flush=True)
        return 0
    print("ready", flush=True)
    with open(out, "wb") as f:
        for line in sys.stdin:
            if line.strip() != "step":
                continue
            t0 = time.time()
            with torch.no_grad():
                y = model(x)
            f.write(y.cpu().numpy().tobytes())
            print("ok %.3f" % (time.time() - t0), flush=True)
    return 0


def spawn(seed, out):
    w = subprocess.Popen([sys.executable, __file__, "--worker", "--seed", str(seed),
                          "--frac", str(a.frac), "--out", out],
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    return w, w.stdout.readline().strip()


def step(w):
    w.stdin.write("step\n")
    w.stdin.flush()
    line = w.stdout.readline().split()
    if not line or line[0] != "ok":
        sys.exit("a worker failed: %r" % line)
    return float(line[1])


if a.worker:
    sys.exit(worker(a.seed, a.frac, a.out))
if a.alone:
    w, state = spawn(a.seed, a.out)
    if state != "ready":
        sys.exit("alone: %s" % state)
    times = [step(w) for _ in range(a.steps)]
    w.stdin.close()
    w.wait()
    print("step %.3f" % statistics.median(times))
    sys.exit(0)
wa, sa = spawn(1, a.out_a)
if sa != "ready":
    sys.exit("first: %s" % sa)
wb, sb = spawn(2, a.out_b)
if sb != "ready":
    print("second: %s" % sb)
    wa.stdin.close()
    wa.wait()
    sys.exit(3)
ta, tb = [], []
for _ in range(a.steps):
    ta.append(step(wa))
    tb.append(step(wb))
for w in (wa, wb):
    w.stdin.close()
    w.wait()
print("step_a %.3f" % statistics.median(ta))
print("step_b %.3f" % statistics.median(tb))
