"""torch_load: PyTorch loading a safetensors-style file, as most programs do.

Writes (once) a 4 GiB file of float16 tensors under --dir: an 8-byte header
length, a JSON header naming each tensor's dtype, shape and byte range, and
the tensors' bytes, as the safetensors format lays them out. Then reads it
the usual way: mmap the file, a tensor over each byte range (torch.frombuffer)
and .to("cuda"), timed from the page cache (the file is read once before
timing). Prints "load_s SECONDS" and "load_gbps GB/s", and writes a digest
of every tensor's bytes on the device to --out, so runs with and without
vramshim can be compared byte for byte.
"""
import argparse
import hashlib
import json
import mmap
import os
import struct
import time

import torch


def write_file(path, total, n):
    each = total // n
    header = {}
    off = 0
    for i in range(n):
        header[f"layer{i}.weight"] = {"dtype": "F16", "shape": [each // 2],
                                      "data_offsets": [off, off + each]}
        off += each
    blob = json.dumps(header).encode()
    blob += b" " * (-len(blob) % 8)
    gen = torch.Generator().manual_seed(1234)
    with open(path + ".tmp", "wb") as f:
        f.write(struct.pack("<Q", len(blob)))
        f.write(blob)
        for i in range(n):
            t = torch.randn(each // 2, generator=gen, dtype=torch.float32).to(torch.float16)
            f.write(t.numpy().tobytes())
    os.replace(path + ".tmp", path)


def load(path):
    with open(path, "rb") as f:
        mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    hlen = struct.unpack("<Q", mm[:8])[0]
    header = json.loads(mm[8:8 + hlen])
    base = 8 + hlen
    mv = memoryview(mm)
    tensors = {}
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for name, meta in header.items():
        a, b = meta["data_offsets"]
        host = torch.frombuffer(mv[base + a:base + b], dtype=torch.float16)
        tensors[name] = host.to("cuda")
    torch.cuda.synchronize()
    nbytes = sum(m["data_offsets"][1] - m["data_offsets"][0] for m in header.values())
    return tensors, time.perf_counter() - t0, nbytes


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--dir", default="/tmp")
    ap.add_argument("--gib", type=int, default=4)
    ap.add_argument("--tensors", type=int, default=64)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    path = os.path.join(args.dir, f"vramshim-load-{args.gib}g.safetensors")
    if not os.path.exists(path):
        write_file(path, args.gib << 30, args.tensors)
    with open(path, "rb") as f:  # into the page cache: the figure is a warm load
        while f.read(64 << 20):
            pass
    torch.zeros(1, device="cuda")  # the context exists before timing
    tensors, seconds, nbytes = load(path)
    digest = hashlib.sha256()
    for name in sorted(tensors):
        digest.update(name.encode())
        digest.update(tensors[name].cpu().numpy().tobytes())
    with open(args.out, "w") as f:
        f.write(digest.hexdigest() + "\n")
    print(f"load_s {seconds:.3f}")
    print(f"load_gbps {nbytes / seconds / 1e9:.2f}")
    return 0 if all(t.is_cuda for t in tensors.values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
