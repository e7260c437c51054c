#!/usr/bin/python3
"""make_models.py - the benchmark's models: random-weight DeiT-T/S/B, dense and with 6 of 12
attention layers removed, as safetensors (for vitd) and ONNX (for ONNX Runtime), plus a check
input and torch's logits for it so both engines can be verified before they are timed.

Random weights are enough: speed does not depend on the values, and correctness is checked
against torch on the same weights. A removed model shares every remaining tensor with its dense
model (torch_vit seeds per tensor name).

Files in OUT for each NAME (deit_t, deit_t_rm6, ...):
  NAME.safetensors, NAME.onnx, NAME.check.input.npy (1, 3, 224, 224), NAME.check.logits.npy
  NAME.stamp - hash of the generator sources and configuration; a model whose stamp matches is
  not regenerated (the DeiT-B export and torch forward take about a minute).
"""

import argparse
import hashlib
import json
import os
import sys
import time
import warnings

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
import torch_vit as tv  # noqa: E402

REMOVED = (0, 1, 3, 4, 6, 9)  # the official DeiT-B 50% pick (METHOD.md section 3)
SIZES = {"T": (192, 3, 100), "S": (384, 6, 101), "B": (768, 12, 102)}  # D, H, weight seed


def models(sizes):
    for s in sizes:
        D, H, seed = SIZES[s]
        base = dict(img_size=224, patch_size=16, embed_dim=D, num_heads=H, depth=12,
                    num_classes=1000)
        yield f"deit_{s.lower()}", tv.cfg(**base), seed
        yield f"deit_{s.lower()}_rm6", tv.cfg(**dict(base, removed=REMOVED)), seed


def stamp_of(c, seed):
    h = hashlib.sha256()
    for f in (os.path.join(os.path.dirname(HERE), "torch_vit.py"), os.path.abspath(__file__)):
        h.update(open(f, "rb").read())
    h.update(json.dumps([c, seed, torch.__version__], sort_keys=True, default=list).encode())
    return h.hexdigest()


def export_onnx(m, path, x):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer warnings about shape arithmetic are expected
        # The exact call PERF.md prescribes: batch is dynamic, opset 14.
        torch.onnx.export(m, torch.from_numpy(x), path, input_names=["input"],
                          output_names=["logits"],
                          dynamic_axes={"input": {0: "n"}, "logits": {0: "n"}},
                          opset_version=14)


def make(out, name, c, seed):
    files = [os.path.join(out, name + s) for s in
             (".safetensors", ".onnx", ".check.input.npy", ".check.logits.npy")]
    stamp_path = os.path.join(out, name + ".stamp")
    st = stamp_of(c, seed)
    if all(os.path.exists(f) for f in files) and os.path.exists(stamp_path) \
            and open(stamp_path).read().strip() == st:
        print(f"  {name}: cached")
        return
    t0 = time.time()
    if os.path.exists(stamp_path):
        os.remove(stamp_path)  # a half-written set must not look complete
    m = tv.build(c, seed=seed)
    x = tv.random_input(c, 1, seed=seed + 1)
    tv.save_model(files[0], m)
    export_onnx(m, files[1], x)
    np.save(files[2], x)
    np.save(files[3], tv.logits(m, x))
    with open(stamp_path, "w") as f:
        f.write(st + "\n")
    print(f"  {name}: generated in {time.time() - t0:.0f} s ({tv.params(m) / 1e6:.2f} M params)")


def main():
    ap = argparse.ArgumentParser(description="generate the benchmark models")
    ap.add_argument("--out", required=True)
    ap.add_argument("--sizes", default="T,S,B", help="comma-separated subset of T,S,B")
    a = ap.parse_args()
    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    os.makedirs(a.out, exist_ok=True)
    for name, c, seed in models([s.strip().upper() for s in a.sizes.split(",") if s.strip()]):
        make(a.out, name, c, seed)
    return 0


if __name__ == "__main__":
    sys.exit(main())
