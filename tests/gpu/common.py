"""common: what the PyTorch scripts of tests/gpu share (they import it from
their own directory, which Python puts first on the path): the sizes, the
"ok"/"FAIL" check lines, vramshim's stats read through its C API, and the
seeded stacks of Linear layers the offload and relief runs build.
"""
import ctypes
import json

GiB = 1 << 30
MiB = 1 << 20
failures = 0  # FAIL lines printed by check()


def check(cond, what):
    global failures
    print(("ok   " if cond else "FAIL ") + what, flush=True)
    failures += 0 if cond else 1


def vramshim_stats():
    """vramshim's stats document, or None in a run without vramshim."""
    try:
        fn = ctypes.CDLL(None).vramshim_stats_json
    except AttributeError:
        return None
    fn.argtypes = [ctypes.c_char_p, ctypes.c_size_t]
    buf = ctypes.create_string_buffer(1 << 20)
    n = fn(buf, len(buf))
    return json.loads(buf.value[:n].decode())


def seeded_linears(width, layers, generator):
    """layers bias-free fp32 Linear(width, width) on the GPU, their weights
    drawn from generator in order and scaled by 1/sqrt(width)."""
    import torch  # here: torch_relief's parent process never loads it
    model = torch.nn.Sequential(*[torch.nn.Linear(width, width, bias=False, device="cuda")
                                  for _ in range(layers)])
    with torch.no_grad():
        for lin in model:
            lin.weight.copy_(torch.randn(lin.weight.shape, device="cuda", generator=generator)
                             / width ** 0.5)
    return model
