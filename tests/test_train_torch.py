#!/usr/bin/python3
"""test_train_torch.py - vitd's training gradients against PyTorch autograd.

For a few small models (dense; a removed block plus a block diluted at lambda = 0.5; distilled
with two blocks at lambda = 0.5; one block at lambda = 0), this writes the checkpoint
(tests/torch_vit.py's writer, vitd metadata), a batch of inputs and labels, and PyTorch's loss
and the gradient of every parameter (cross-entropy with label smoothing 0.1, mean over the
batch) into a temporary folder, then runs `build/tests/test_train --fixture DIR`, which loads
the same checkpoint into vitd's training model and compares every gradient on both back ends
(oneDNN and the C reference): relative error (max |diff| / max |PyTorch gradient|) <= 1e-3.

Dilution (../shared/docs/METHOD.md section 4) is added here to a subclass of torch_vit's
Block; torch_vit.py itself stays the serving reference.
"""

import os
import subprocess
import sys
import tempfile

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import torch_vit as tv  # noqa: E402

BUILD = os.environ.get("BUILD", "build")
HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def dilute(model, blocks, lam):
    """Makes blocks compute h = (2 - lam) x + lam Attn(LN1 x); x = h + MLP(LN2 h)."""
    for i in blocks:
        b = model.blocks[i]
        assert not b.removed

        def fwd(x, b=b):
            h = (2 - lam) * x + lam * b.attn(b.norm1(x))
            return h + b.mlp(b.norm2(h))
        b.forward = fwd


CASES = [
    # name, config, seed, diluted blocks, lambda
    ("dense", dict(img_size=16, patch_size=4, in_chans=3, embed_dim=32, depth=3, num_heads=2,
                   num_classes=7, init_std=0.1), 11, (), 1.0),
    ("removed1_dilute0", dict(img_size=16, patch_size=4, in_chans=1, embed_dim=24, depth=3,
                              num_heads=3, mlp_dim=40, num_classes=5, removed=(1,), init_std=0.1),
     12, (0,), 0.5),
    ("distilled_dilute02", dict(img_size=12, patch_size=4, in_chans=2, embed_dim=16, depth=3,
                                num_heads=2, num_classes=6, distilled=True, init_std=0.15),
     13, (0, 2), 0.5),
    ("lambda0", dict(img_size=8, patch_size=4, in_chans=1, embed_dim=16, depth=2, num_heads=2,
                     num_classes=4, init_std=0.15), 14, (1,), 0.0),
]


def run_case(tmp, name, c, seed, blocks, lam, batch=4, smoothing=0.1):
    d = os.path.join(tmp, name)
    os.makedirs(d)
    c = tv.cfg(**c)
    model = tv.build(c, seed=seed)
    tv.save_model(os.path.join(d, "model.safetensors"), model)
    dilute(model, blocks, lam)
    g = np.random.default_rng(seed)
    x = g.standard_normal((batch, c["in_chans"], c["img_size"], c["img_size"])).astype(np.float32)
    y = g.integers(0, c["num_classes"], size=batch)
    model.zero_grad()
    logits = model(torch.from_numpy(x))
    loss = F.cross_entropy(logits, torch.from_numpy(y), label_smoothing=smoothing)
    loss.backward()
    grads = {n: p.grad.detach().clone() for n, p in model.named_parameters()}
    if lam == 0.0:
        # PyTorch still differentiates through lam * Attn (zero); vitd skips it: both give 0
        for i in blocks:
            for n in list(grads):
                if n.startswith(f"blocks.{i}.norm1") or n.startswith(f"blocks.{i}.attn"):
                    assert torch.count_nonzero(grads[n]) == 0
    mask = sum(1 << i for i in blocks)
    tv.save_safetensors(os.path.join(d, "grads.safetensors"), grads,
                        {"lambda": repr(lam), "dilute": str(mask), "smoothing": repr(smoothing),
                         "loss": repr(loss.item())})
    np.save(os.path.join(d, "input.npy"), x)
    np.save(os.path.join(d, "labels.npy"), y.astype(np.float32))
    exe = os.path.join(ROOT, BUILD, "tests", "test_train")
    r = subprocess.run([exe, "--fixture", d], capture_output=True, text=True)
    print(f"{name}: lambda {lam} on blocks {list(blocks)}, removed {list(c['removed'])}, "
          f"distilled {c['distilled']}")
    print(r.stdout.rstrip())
    if r.returncode != 0:
        print(r.stderr.rstrip())
    return r.returncode == 0


def main():
    torch.set_num_threads(1)
    ok = True
    with tempfile.TemporaryDirectory() as tmp:
        for case in CASES:
            ok &= run_case(tmp, *case)
    print("test_train_torch:", "ok" if ok else "FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
