#!/usr/bin/python3
"""select_speedup.py - how much faster NOSE is with activation reuse than the naive loop.

Builds a DeiT-T-shaped model with random weights (tests/torch_vit.py: 224 px, patch 16,
width 192, 12 blocks, 3 heads, 1000 classes) and a proxy set of IMAGES structured random
224 x 224 images (an IDX folder), then runs
    vitd prune --strategy nose --remove K --images IMAGES --batch B            (reuse)
    vitd prune --strategy nose --remove K --images IMAGES --batch B --naive    (naive)
alternately, REPS times each, and reports the median wall time of the selection (the
report's "seconds": proxy decoding and checkpoint writing excluded) and the blocks each
mode computed. It also checks that both modes produced identical reports (every score).
The machine may be shared: medians of alternating runs, not best cases. On a shared machine
OpenMP threads that spin at barriers (libgomp's default) lose their CPU to other processes
and the timings become very noisy, so the runs use OMP_WAIT_POLICY=passive unless the
environment already sets a policy (printed with the results).

usage: tests/experiment/select_speedup.py [--reps 3] [--images 64] [--k 6] [--batch 8]
                                          [--threads 0] [--work DIR] [--out FILE.md]
"""

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(ROOT, "tests"))
import torch_vit as tv  # noqa: E402

VITD = os.environ.get("VITD") or os.path.join(ROOT, "build", "vitd")


def write_idx(folder, images):
    os.makedirs(folder, exist_ok=True)
    n, h, w = images.shape
    with open(os.path.join(folder, "train-images-idx3-ubyte"), "wb") as f:
        f.write(bytes([0, 0, 8, 3]) + np.array([n, h, w], dtype=">u4").tobytes() + images.tobytes())
    with open(os.path.join(folder, "train-labels-idx1-ubyte"), "wb") as f:
        f.write(bytes([0, 0, 8, 1]) + np.array([n], dtype=">u4").tobytes() + bytes(n))


def images(n, side, seed):
    g = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:side, 0:side].astype(np.float32)
    out = np.empty((n, side, side), np.uint8)
    for i in range(n):
        img = g.uniform(0, 60) + g.uniform(-0.3, 0.3) * xx + g.uniform(-0.3, 0.3) * yy
        for _ in range(4):
            cy, cx, r = g.uniform(0, side), g.uniform(0, side), g.uniform(8, side / 3)
            img = img + g.uniform(60, 160) * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * r * r))
        out[i] = np.clip(img + g.normal(0, 12, (side, side)), 0, 255).astype(np.uint8)
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--images", type=int, default=64)
    ap.add_argument("--k", type=int, default=6)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--work", default=os.path.join(ROOT, "build", "select_speedup"))
    ap.add_argument("--out", help="also write the result table (markdown) here")
    a = ap.parse_args()
    os.makedirs(a.work, exist_ok=True)
    model = os.path.join(a.work, "deit_t_random.safetensors")
    data = os.path.join(a.work, "proxy_idx")
    if not os.path.exists(model):
        m = tv.build(tv.cfg(), seed=5)  # DeiT-T shape, timm-like init
        tv.save_model(model, m, metadata=tv.vitd_metadata(m.cfg, crop_pct=1.0))
    if not os.path.exists(os.path.join(data, "train-images-idx3-ubyte")):
        write_idx(data, images(a.images, 224, 3))
    load0 = " ".join(open("/proc/loadavg").read().split()[:3])
    env = dict(os.environ)
    env.setdefault("OMP_WAIT_POLICY", "passive")
    runs = {"reuse": [], "naive": []}
    for rep in range(a.reps):
        for mode in ("reuse", "naive"):
            rpath = os.path.join(a.work, f"report_{mode}_{rep}.json")
            cmd = [VITD, "prune", "--model", model, "--data", data, "--images", str(a.images), "--remove", str(a.k),
                   "--strategy", "nose", "--batch", str(a.batch), "--threads", str(a.threads),
                   "--out", os.path.join(a.work, f"pruned_{mode}.safetensors"), "--report", rpath]
            if mode == "naive":
                cmd.append("--naive")
            before = resource.getrusage(resource.RUSAGE_CHILDREN)
            subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            r = json.load(open(rpath))
            r["cpu"] = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
            runs[mode].append(r)
            print(f"rep {rep} {mode}: {r['seconds']:.2f} s, {r['cpu']:.2f} s CPU, {r['passes']} passes, {r['blocks_run']} blocks, "
                  f"chosen {r['chosen']}", flush=True)
    same = all(r["steps"] == runs["reuse"][0]["steps"] and r["baseline_h"] == runs["reuse"][0]["baseline_h"]
               for r in runs["reuse"] + runs["naive"])
    med = {m: statistics.median(r["seconds"] for r in runs[m]) for m in runs}
    cpu = {m: statistics.median(r["cpu"] for r in runs[m]) for m in runs}
    lo = {m: min(r["seconds"] for r in runs[m]) for m in runs}
    hi = {m: max(r["seconds"] for r in runs[m]) for m in runs}
    blocks = {m: runs[m][0]["blocks_run"] for m in runs}
    passes = {m: runs[m][0]["passes"] for m in runs}
    lines = [
        f"NOSE on a DeiT-T-shaped model (12 blocks, random weights), {a.images} proxy images, k = {a.k}, "
        f"batch {a.batch}, {a.reps} alternating runs per mode (median, range), OMP_WAIT_POLICY="
        f"{env['OMP_WAIT_POLICY']}, load average before the runs {load0}; chosen {runs['reuse'][0]['chosen']}",
        "",
        "| mode | selection wall time (s) | process CPU time (s) | forward passes | blocks computed |",
        "|---|---|---|---|---|",
    ]
    for m in ("naive", "reuse"):
        lines.append(f"| {m} | {med[m]:.2f} ({lo[m]:.2f}-{hi[m]:.2f}) | {cpu[m]:.1f} | {passes[m]} | {blocks[m]} |")
    lines += ["",
              f"speed-up of activation reuse: {med['naive'] / med['reuse']:.2f}x in wall time, "
              f"{cpu['naive'] / cpu['reuse']:.2f}x in CPU time "
              f"(blocks computed: {blocks['naive'] / blocks['reuse']:.2f}x fewer); "
              f"reports identical in both modes: {'yes' if same else 'NO'}"]
    text = "\n".join(lines)
    print(text)
    if a.out:
        with open(a.out, "w") as f:
            f.write(text + "\n")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
