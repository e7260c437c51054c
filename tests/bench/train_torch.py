#!/usr/bin/python3
"""train_torch.py - the PyTorch side of vitd's training-throughput comparison.

Trains tests/torch_vit.py's ViT (timm's architecture) with the same recipe as `vitd train`
(AdamW with decoupled weight decay on matrices only, cross-entropy with label smoothing 0.1,
gradient clipping 1.0) on batches of the same shape, with Debian's PyTorch limited to the
same number of threads, and prints images/s (median over repetitions, after a warm-up).

    train_torch.py --arch fashion --batch 128 --threads 2 [--steps 20] [--reps 3]
    train_torch.py ... --fashion DIR --steps 200   # real Fashion-MNIST batches: loss curve

--arch takes the same presets/keys as vitd (fashion, or key=value: img, patch, chans, dim,
depth, heads, mlp, classes). Used by tests/bench/train_bench.sh; not part of `make test`.
"""

import argparse
import gzip
import os
import statistics
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import torch_vit as tv  # noqa: E402

PRESETS = {"fashion": dict(img=28, patch=7, chans=1, dim=64, depth=12, heads=4, mlp=256, classes=10)}


def parse_arch(spec):
    a = dict(PRESETS["fashion"])
    for tok in spec.split(","):
        if "=" in tok:
            k, v = tok.split("=")
            a[k] = int(v)
        else:
            a.update(PRESETS[tok])
    return tv.cfg(img_size=a["img"], patch_size=a["patch"], in_chans=a["chans"], embed_dim=a["dim"],
                  depth=a["depth"], num_heads=a["heads"], mlp_dim=a["mlp"], num_classes=a["classes"])


def idx(path):
    with gzip.open(path) if path.endswith(".gz") else open(path, "rb") as f:
        b = f.read()
    nd = b[3]
    dims = np.frombuffer(b[4:4 + 4 * nd], ">u4")
    return np.frombuffer(b[4 + 4 * nd:], np.uint8).reshape(dims)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--arch", default="fashion")
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--fashion", default=None)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    c = parse_arch(a.arch)
    model = tv.VisionTransformer(c).train()
    for n, p in model.named_parameters():  # timm-like initialisation
        with torch.no_grad():
            if n.endswith("norm1.weight") or n.endswith("norm2.weight") or n == "norm.weight":
                p.fill_(1.0)
            elif p.dim() >= 2 and "patch_embed" not in n:
                torch.nn.init.trunc_normal_(p, std=0.02)
            elif "patch_embed" not in n:
                p.zero_()
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2 and n not in ("pos_embed", "cls_token")]
    no_decay = [p for n, p in model.named_parameters() if not (p.dim() >= 2 and n not in ("pos_embed", "cls_token"))]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.05}, {"params": no_decay, "weight_decay": 0.0}],
                            lr=a.lr)
    B, S, C = a.batch, c["img_size"], c["in_chans"]
    g = np.random.default_rng(0)
    if a.fashion:
        xs = idx(os.path.join(a.fashion, "train-images-idx3-ubyte.gz")).astype(np.float32) / 255.0
        ys = idx(os.path.join(a.fashion, "train-labels-idx1-ubyte.gz")).astype(np.int64)
        xs = (xs - 0.286) / 0.353
    x = torch.from_numpy(g.standard_normal((B, C, S, S)).astype(np.float32))
    y = torch.from_numpy(g.integers(0, c["num_classes"], B))

    def step(i):
        nonlocal x, y
        if a.fashion:
            sel = g.integers(0, len(xs), B)
            x = torch.from_numpy(xs[sel][:, None])
            y = torch.from_numpy(ys[sel])
        opt.zero_grad()
        loss = F.cross_entropy(model(x), y, label_smoothing=0.1)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        for gr in opt.param_groups:  # linear warm-up over the run's first 10%
            gr["lr"] = a.lr * min(1.0, (i + 1) / max(1, a.steps // 10))
        opt.step()
        return loss.item()

    if a.fashion:
        t0 = time.time()
        for i in range(a.steps):
            loss = step(i)
            if (i + 1) % max(1, a.steps // 10) == 0:
                print(f"step {i + 1}: loss {loss:.4f} ({B * (i + 1) / (time.time() - t0):.1f} img/s)", flush=True)
        return 0
    for i in range(3):
        step(i)
    ips = []
    for r in range(a.reps):
        t0 = time.time()
        for i in range(a.steps):
            step(i)
        ips.append(B * a.steps / (time.time() - t0))
    print(f"pytorch {torch.__version__} threads {a.threads} batch {B} arch {a.arch}: "
          f"{statistics.median(ips):.1f} images/s (median of {a.reps}: {', '.join(f'{v:.1f}' for v in ips)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
