#!/usr/bin/python3
"""gen_golden.py - writes the committed golden fixtures in tests/data/golden/.

For every case: NAME.safetensors (the checkpoint, vitd metadata included), NAME.input.npy
(float32 (2, C, S, S), standard normal) and NAME.logits.npy (PyTorch fp32 logits of
tests/torch_vit.py), plus manifest.json describing every case. test_golden.py runs vitd on them.

The cases are tiny (the folder stays under 2 MB) yet each exercises one thing a loader or a
kernel can get wrong: a head width other than 64, an MLP ratio other than 4, removed blocks,
the distillation token, one input channel, a patch size that does not divide 16, weights stored
as F16 or BF16. Weights use a larger init_std than timm's 0.02 where that keeps attention far
from uniform, so a wrong softmax scale or head split changes the logits by far more than the
tolerance.

Deterministic: every tensor and input comes from seeded generators, so re-running this script
reproduces the same bytes (`--check` verifies that against the committed files without
writing). Run it with Debian's /usr/bin/python3 (the one that has torch).
"""

import argparse
import hashlib
import json
import os
import sys
import tempfile

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import torch_vit as tv  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "data", "golden")

# name -> (config overrides, weight seed, stored dtype)
CASES = {
    # The reference shape: Dh = 32, 16 patches + cls.
    "vit_s32_d64": (dict(img_size=32, patch_size=8, embed_dim=64, depth=3, num_heads=2,
                         num_classes=10, init_std=0.1), 1, "F32"),
    # Blocks 0 and 2 removed: y = 2x, then the MLP; Dh = 24.
    "vit_s32_d48_rm02": (dict(img_size=32, patch_size=8, embed_dim=48, depth=4, num_heads=2,
                              num_classes=10, removed=(0, 2), init_std=0.1), 2, "F32"),
    # Distilled: tokens [cls, dist, patches], mean of two heads; one removed block; MLP ratio 3.
    "deit_s32_d32_dist_rm1": (dict(img_size=32, patch_size=8, embed_dim=32, depth=3,
                                   num_heads=2, mlp_dim=96, num_classes=10, distilled=True,
                                   removed=(1,), init_std=0.15), 3, "F32"),
    # One channel, P = 7, Dh = 16.
    "vit_c1_s28_p7_d48": (dict(img_size=28, patch_size=7, in_chans=1, embed_dim=48, depth=3,
                               num_heads=3, num_classes=10, init_std=0.1), 4, "F32"),
    # Stored as F16 (logits from the F16-rounded weights); Dh = 16, MLP ratio 2.
    "vit_s32_d64_f16": (dict(img_size=32, patch_size=8, embed_dim=64, depth=2, num_heads=4,
                             mlp_dim=128, num_classes=10, init_std=0.1), 5, "F16"),
    # Stored as BF16, one removed block.
    "vit_s16_d32_bf16_rm1": (dict(img_size=16, patch_size=4, embed_dim=32, depth=2,
                                  num_heads=2, num_classes=7, removed=(1,), init_std=0.15),
                             6, "BF16"),
}
BATCH = 2


def generate(out):
    os.makedirs(out, exist_ok=True)
    manifest = {}
    for i, (name, (over, seed, dtype)) in enumerate(CASES.items()):
        c = tv.cfg(**over)
        # Round the weights as stored, so torch computes with exactly the values vitd loads.
        m = tv.round_weights(tv.build(c, seed=seed), dtype)
        x = tv.random_input(c, BATCH, seed=100 + i)
        y = tv.logits(m, x)
        tv.save_model(os.path.join(out, name + ".safetensors"), m, dtype=dtype)
        np.save(os.path.join(out, name + ".input.npy"), x)
        np.save(os.path.join(out, name + ".logits.npy"), y)
        manifest[name] = {"config": {k: (list(v) if isinstance(v, tuple) else v)
                                     for k, v in c.items()},
                          "seed": seed, "dtype": dtype, "params": tv.params(m)}
    with open(os.path.join(out, "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=1, sort_keys=True)
        f.write("\n")


def digest(folder):
    return {f: hashlib.sha256(open(os.path.join(folder, f), "rb").read()).hexdigest()
            for f in sorted(os.listdir(folder))}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--check", action="store_true",
                    help="regenerate into a temporary folder and compare with the committed one")
    ap.add_argument("--out", default=OUT)
    a = ap.parse_args()
    if a.check:
        with tempfile.TemporaryDirectory() as d:
            generate(d)
            new, old = digest(d), digest(a.out)
        if new != old:
            diff = sorted(set(new.items()) ^ set(old.items()))
            print("golden fixtures differ from a fresh generation:",
                  sorted({f for f, _ in diff}))
            return 1
        print(f"golden fixtures reproduce byte for byte ({len(new)} files)")
        return 0
    generate(a.out)
    total = sum(os.path.getsize(os.path.join(a.out, f)) for f in os.listdir(a.out))
    print(f"wrote {len(CASES)} cases to {a.out}: {total} bytes")
    return 0


if __name__ == "__main__":
    torch.set_num_threads(1)  # one thread: the same summation order on every machine
    sys.exit(main())
