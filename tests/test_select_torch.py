#!/usr/bin/python3
"""test_select_torch.py - `vitd prune` and `vitd entropy` against a PyTorch re-implementation
of the entropy and of greedy NOSE (../shared/docs/METHOD.md section 3).

Run by tests/run.sh with Debian's /usr/bin/python3 (it has torch); VITD names the binary
(default build/vitd). Exits non-zero when any check fails, after printing every case.

The proxy set is an IDX folder written here (random 16x16 gray images), so vitd's
preprocessing is exactly pixel / 255, normalised: the model's crop_pct is 1 and its image
size is the images' size, and the same float32 operations are easy to repeat in numpy.

Re-implemented here, independently of vitd: H(Y) = sum over channels of log(std), std with
n - 1 (torch.std's default), in float64 over float32 features; "without S" by running the
same dense torch model with the blocks of S on the removed path (y = 2x; x = y + MLP(LN2 y));
T(S) = H(full) - H(without S); the greedy loop with the signed argmin. Cases:
  (a) NOSE at the logits, a 6-block ViT, k = 3: the baseline H and every score of every step
      in `vitd prune --report` within 1e-3 relative of torch's, the same chosen blocks;
  (b) NOSE at the class feature (--measure feature) on a distilled DeiT with block 1 already
      removed (never a candidate), k = 2;
  (c) the pruned checkpoint: attention tensors of the chosen blocks gone, every other tensor
      bit-identical, the parent's metadata kept, vitd.parent_sha256 = sha256 of the parent,
      vitd.selection = the report, vitd.config's removed_blocks; torch's model built from the
      pruned tensors gives the parent's logits with those blocks removed, and so does
      `vitd logits` on it;
  (d) `vitd entropy --json`: the per-block attention and MLP entropies of the class token;
  (e) first and random through the CLI: the first k candidates; random reproducible per seed.
Tolerance: |vitd - torch| <= 1e-3 * max(|torch|, 0.01) for every H and score (the floor keeps
a score near zero from demanding an absolute precision far beyond fp32 logits).
"""

import hashlib
import json
import os
import subprocess
import sys
import tempfile

import numpy as np

# On a shared machine OpenMP threads spinning at barriers (libgomp's default) make torch and
# the vitd runs below ten times slower; set before torch loads, inherited by vitd.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
import torch  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
import torch_vit as tv  # noqa: E402

VITD = os.environ.get("VITD") or os.path.join(ROOT, "build", "vitd")
RTOL = 1e-3
FLOOR = 0.01
failures = []
worst = {"rel": 0.0}


def fail(case, msg):
    failures.append(f"{case}: {msg}")
    print(f"FAIL {case}: {msg}")


def close(case, what, got, want):
    rel = abs(got - want) / max(abs(want), FLOOR)
    worst["rel"] = max(worst["rel"], rel)
    if not rel <= RTOL:
        fail(case, f"{what}: vitd {got:.9g} torch {want:.9g} (relative {rel:.2g})")
    return rel


def vitd(*args):
    p = subprocess.run([VITD, *args], capture_output=True, text=True, timeout=300)
    if p.returncode != 0:
        raise RuntimeError(f"vitd {' '.join(args)} exited {p.returncode}: {p.stderr.strip()}")
    return p.stdout


# ---- the proxy set: an IDX folder -----------------------------------------------------------

def write_idx(folder, images, labels):
    os.makedirs(folder, exist_ok=True)
    n, h, w = images.shape
    with open(os.path.join(folder, "train-images-idx3-ubyte"), "wb") as f:
        f.write(bytes([0, 0, 8, 3]) + np.array([n, h, w], dtype=">u4").tobytes() + images.astype(np.uint8).tobytes())
    with open(os.path.join(folder, "train-labels-idx1-ubyte"), "wb") as f:
        f.write(bytes([0, 0, 8, 1]) + np.array([n], dtype=">u4").tobytes() + labels.astype(np.uint8).tobytes())


def proxy_images(n, side, seed):
    """Random but structured gray images (a blob and a gradient), so features vary."""
    g = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:side, 0:side].astype(np.float64)
    out = np.empty((n, side, side), np.uint8)
    for i in range(n):
        cy, cx, r = g.uniform(2, side - 2), g.uniform(2, side - 2), g.uniform(2, side / 2)
        blob = 200 * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * r * r))
        grad = g.uniform(-3, 3) * xx + g.uniform(-3, 3) * yy
        noise = g.normal(0, 20, (side, side))
        out[i] = np.clip(blob + grad + noise + g.uniform(0, 60), 0, 255).astype(np.uint8)
    return out


def tensor_of(pix, c):
    """vitd's IDX evaluation path with crop_pct 1 at the image size: gray replicated to C
    channels, pixel / 255, (x - mean_c) / std_c, all float32 as in data.c; mean and std are
    the ones torch_vit's metadata gives the model (ImageNet's for 3 channels, 0.5 for 1)."""
    mean = tv.IMAGENET_MEAN if c["in_chans"] == 3 else [0.5] * c["in_chans"]
    std = tv.IMAGENET_STD if c["in_chans"] == 3 else [0.5] * c["in_chans"]
    x = pix.astype(np.float32) / np.float32(255.0)
    chans = [(x - np.float32(mean[k])) / np.float32(std[k]) for k in range(c["in_chans"])]
    return torch.from_numpy(np.stack(chans, axis=1).copy())


# ---- the torch re-implementation -------------------------------------------------------------

def forward(model, x, removed):
    """Logits, class feature, and per-block attention / MLP outputs (class token), with the
    blocks in `removed` on the removed path (besides those the model lacks)."""
    c = model.cfg
    with torch.no_grad():
        h = model.patch_embed.proj(x).flatten(2).transpose(1, 2)
        B = h.shape[0]
        prefix = [model.cls_token.expand(B, -1, -1)]
        if c["distilled"]:
            prefix.append(model.dist_token.expand(B, -1, -1))
        h = torch.cat(prefix + [h], 1) + model.pos_embed
        attn, mlp = {}, {}
        for i, blk in enumerate(model.blocks):
            if blk.removed or i in removed:
                h = 2 * h
            else:
                a = blk.attn(blk.norm1(h))
                attn[i] = a[:, 0]
                h = h + a
            m = blk.mlp(blk.norm2(h))
            mlp[i] = m[:, 0]
            h = h + m
        hn = model.norm(h)
        if c["distilled"]:
            logits = (model.head(hn[:, 0]) + model.head_dist(hn[:, 1])) / 2
        else:
            logits = model.head(hn[:, 0])
    return logits, hn[:, 0], attn, mlp


def entropy(v):
    """H = sum over channels of log(std), std across the rows (n - 1), in float64."""
    return float(torch.log(v.double().std(dim=0, unbiased=True)).sum())


def nose(model, x, k, measure):
    pick = 0 if measure == "logits" else 1
    full = entropy(forward(model, x, set())[pick])
    cand = [i for i, b in enumerate(model.blocks) if not b.removed]
    S, steps = [], []
    for _ in range(k):
        scores = {i: full - entropy(forward(model, x, set(S) | {i})[pick]) for i in cand if i not in S}
        best = min(scores, key=lambda i: (scores[i], i))
        steps.append((scores, best))
        S.append(best)
    return full, steps, S


# ---- cases ------------------------------------------------------------------------------------

def check_nose(case, tmp, c, seed, k, measure, nimg=48):
    model = tv.build(c, seed=seed)
    path = os.path.join(tmp, f"{case}.safetensors")
    meta = tv.vitd_metadata(model.cfg, crop_pct=1.0)
    meta["custom.note"] = "made by test_select_torch"
    tv.save_model(path, model, metadata=meta)
    pix = proxy_images(nimg, c["img_size"], seed + 7)
    data = os.path.join(tmp, f"{case}_idx")
    write_idx(data, pix, np.arange(nimg) % 10)
    out = os.path.join(tmp, f"{case}_pruned.safetensors")
    rep = os.path.join(tmp, f"{case}_report.json")
    vitd("prune", "--model", path, "--data", data, "--images", "0", "--remove", str(k), "--strategy", "nose",
         "--measure", measure, "--batch", "5", "--out", out, "--report", rep)
    r = json.load(open(rep))
    x = tensor_of(pix, model.cfg)
    full, steps, S = nose(model, x, k, measure)
    print(f"{case}: torch H_full {full:.6f}, chosen {S}; vitd H_full {r['baseline_h']:.6f}, chosen {r['chosen']}")
    close(case, "baseline H", r["baseline_h"], full)
    if r["chosen"] != S:
        fail(case, f"chosen {r['chosen']}, torch {S}")
    if r["images"] != nimg or r["images_failed"] != 0 or r["k"] != k or r["measure"] != measure:
        fail(case, f"report header {r['images']} images, {r['images_failed']} failed, k {r['k']}, {r['measure']}")
    for s, (scores, best) in enumerate(steps):
        got = {e["block"]: e["score"] for e in r["steps"][s]["scores"]}
        if set(got) != set(scores):
            fail(case, f"step {s}: candidates {sorted(got)}, torch {sorted(scores)}")
            continue
        for i in scores:
            close(case, f"step {s} block {i}", got[i], scores[i])
        print(f"  step {s}: " + "  ".join(f"{i}:{got[i]:+.5f}/{scores[i]:+.5f}" for i in sorted(scores)))
    return model, path, out, r, x


def check_pruned(case, model, parent, out, report, x):
    chosen = report["chosen"]
    removed = sorted(set(chosen) | set(model.cfg["removed"]))
    ptens, pmeta = tv.load_safetensors(parent)
    ctens, cmeta = tv.load_safetensors(out)
    cut = {n for n in ptens if any(n.startswith(f"blocks.{b}.norm1.") or n.startswith(f"blocks.{b}.attn.")
                                   for b in removed)}
    if set(ctens) != set(ptens) - cut:
        fail(case, f"pruned tensors: extra {sorted(set(ctens) - (set(ptens) - cut))}, "
                   f"missing {sorted(set(ptens) - cut - set(ctens))}")
    for n in ctens:
        if n in ptens and not torch.equal(ctens[n], ptens[n]):
            fail(case, f"tensor {n} changed")
    if cmeta.get("custom.note") != pmeta.get("custom.note"):
        fail(case, "parent metadata key custom.note not kept")
    sha = hashlib.sha256(open(parent, "rb").read()).hexdigest()
    if cmeta.get("vitd.parent_sha256") != sha:
        fail(case, f"vitd.parent_sha256 {cmeta.get('vitd.parent_sha256')} != {sha}")
    sel = json.loads(cmeta.get("vitd.selection", "{}"))
    if sel.get("chosen") != chosen or sel.get("steps") != report["steps"]:
        fail(case, "vitd.selection is not the report")
    if cmeta.get("vitd.removed_blocks") != ",".join(map(str, removed)):
        fail(case, f"vitd.removed_blocks {cmeta.get('vitd.removed_blocks')}")
    if json.loads(cmeta["vitd.config"]).get("removed_blocks") != removed:
        fail(case, "vitd.config removed_blocks")
    # torch: the pruned tensors in a model built without those attention layers equal the
    # parent with the blocks switched to the removed path
    pruned = tv.build(dict(model.cfg, removed=removed), seed=0)
    pruned.load_state_dict({n: t for n, t in ctens.items()}, strict=True)
    want = forward(model, x, set(chosen))[0]
    with torch.no_grad():
        got = pruned(x)
    if not torch.equal(got, want):
        fail(case, f"torch pruned model differs from the parent with blocks removed by {float((got - want).abs().max()):.3g}")
    # vitd on the pruned file
    with tempfile.TemporaryDirectory() as d:
        xi, yo = os.path.join(d, "x.npy"), os.path.join(d, "y.npy")
        np.save(xi, x.numpy())
        vitd("logits", "--model", out, "--input", xi, "--output", yo)
        y = np.load(yo)
    diff = float(np.abs(y - want.numpy()).max())
    scale = float(np.abs(want.numpy()).max())
    print(f"{case}: vitd logits of the pruned file vs torch parent with {chosen} removed: max diff {diff:.3g} "
          f"(largest logit {scale:.3g})")
    if not diff <= 1e-4 * scale:
        fail(case, f"vitd logits of the pruned file differ by {diff:.3g}")


def check_entropy(case, tmp, model, path, x, data):
    j = json.loads(vitd("entropy", "--model", path, "--data", data, "--images", "0", "--json", "--batch", "7"))
    logits, feat, attn, mlp = forward(model, x, set())
    for b in j["blocks"]:
        i = b["block"]
        if i in attn:
            close(case, f"attention H of block {i}", b["attn"], entropy(attn[i]))
        elif b["attn"] is not None:
            fail(case, f"block {i} has no attention but vitd gives {b['attn']}")
        close(case, f"MLP H of block {i}", b["mlp"], entropy(mlp[i]))
    close(case, "feature H", j["feature"], entropy(feat))
    close(case, "logits H", j["logits"], entropy(logits))
    print(f"{case}: attention H " + " ".join(f"{b['attn']:.3f}" if b["attn"] is not None else "-" for b in j["blocks"]))


def check_fixed(case, tmp, path, depth, removed):
    out = os.path.join(tmp, "fixed.safetensors")
    rep = os.path.join(tmp, "fixed.json")
    vitd("prune", "--model", path, "--remove", "2", "--strategy", "first", "--out", out, "--report", rep)
    want = [i for i in range(depth) if i not in removed][:2]
    if json.load(open(rep))["chosen"] != want:
        fail(case, f"first: {json.load(open(rep))['chosen']} != {want}")
    picks = []
    for seed in (1, 1, 2):
        vitd("prune", "--model", path, "--remove", "3", "--strategy", "random", "--seed", str(seed), "--out", out,
             "--report", rep)
        r = json.load(open(rep))
        picks.append(r["chosen"])
        if len(set(r["chosen"])) != 3 or set(r["chosen"]) & set(removed) or r["seed"] != seed:
            fail(case, f"random seed {seed}: {r['chosen']}")
    if picks[0] != picks[1]:
        fail(case, f"random is not reproducible: {picks[0]} vs {picks[1]}")
    print(f"{case}: first {want}; random seed 1 {picks[0]}, seed 2 {picks[2]}")


def main():
    torch.set_num_threads(1)  # tiny matrices: one thread, no spinning on a shared machine
    with tempfile.TemporaryDirectory() as tmp:
        c1 = tv.cfg(img_size=16, patch_size=4, in_chans=1, embed_dim=32, depth=6, num_heads=2, num_classes=10,
                    init_std=0.15)
        model, path, out, rep, x = check_nose("vit_L6_logits", tmp, c1, seed=11, k=3, measure="logits")
        check_pruned("vit_L6_logits", model, path, out, rep, x)
        check_entropy("vit_L6_entropy", tmp, model, path, x, os.path.join(tmp, "vit_L6_logits_idx"))
        check_fixed("vit_L6_fixed", tmp, path, 6, [])
        c2 = tv.cfg(img_size=16, patch_size=4, in_chans=3, embed_dim=48, depth=5, num_heads=3, num_classes=7,
                    distilled=True, removed=(1,), init_std=0.15)
        model, path, out, rep, x = check_nose("deit_dist_rm1_feature", tmp, c2, seed=12, k=2, measure="feature")
        check_pruned("deit_dist_rm1_feature", model, path, out, rep, x)
        check_entropy("deit_dist_rm1_entropy", tmp, model, path, x, os.path.join(tmp, "deit_dist_rm1_feature_idx"))
        check_fixed("deit_dist_rm1_fixed", tmp, path, 5, [1])
    print(f"largest relative difference vitd vs torch over every H and score: {worst['rel']:.3g} (tolerance {RTOL})")
    if failures:
        print(f"{len(failures)} failures")
        return 1
    print("all selection checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
