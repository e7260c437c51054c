#!/usr/bin/python3
"""run_experiment.py - the paper's experiment on vitd's default model, regenerating
docs/results.md (and its charts) with one command.

    tests/experiment/run_experiment.py                 # everything (long: part b fine-tunes)
    tests/experiment/run_experiment.py --part a        # only what needs no training (minutes)

Claim under test (../shared/docs/METHOD.md section 3, Lin et al. CVPR 2024): attention layers
chosen by NOSE (greedy transfer entropy on a label-free proxy set) can be removed at less cost
than the first k or k random ones, and after dilution fine-tuning the pruned model loses little
against the dense model fine-tuned for the same budget.

For k in --ks (default 3, 4, 6) removed attention layers of the 12:
  selection  `vitd prune --strategy nose|first|random` (random with each of --seeds), the
             proxy set = --proxy-images images of the training split (no labels used);
  (a)        top-1 on the test split straight after removal (`vitd eval` on the pruned file:
             removed path y = 2x; x = y + MLP(LN2 y), no retraining);
  (b)        top-1 after `vitd finetune --remove <the same blocks> --epochs E` from the dense
             model, the same budget for every strategy, plus the dense model fine-tuned for
             the same budget (control);
  cost       parameters and MACs (`vitd inspect --json`), throughput (`vitd bench --json`,
             median images/s at --bench-batch).
Also: the per-layer entropy analysis of the dense model (`vitd entropy`).

Cost on the 2-core machine (default model, 60,000 training images at ~500 images/s): part (a)
takes a few minutes; part (b) is one fine-tuning per distinct removed set (up to 5 per k: NOSE,
first and three random draws; identical sets are trained once) plus the control, each about
2 minutes per epoch, so about 16 x E x 2 minutes (5 hours at the default E = 10).

Every result is cached in WORK/results.json as soon as it exists, so an interrupted run resumes
where it stopped and re-running only redraws the document; --fresh starts over. Results that
were not run (part b with --part a) show as "not run". Python: Debian's /usr/bin/python3
(no third-party packages needed; the charts are SVG written here).
"""

import argparse
import datetime
import json
import os
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
VITD = os.environ.get("VITD") or os.path.join(ROOT, "build", "vitd")
STRATS = ("nose", "first", "random")
COLORS = {"nose": "#d62728", "first": "#7f7f7f", "random": "#1f77b4", "dense": "#2ca02c"}


def log(msg):
    print(f"[{datetime.datetime.now():%H:%M:%S}] {msg}", flush=True)


def vitd(*args, timeout=None):
    p = subprocess.run([VITD, *map(str, args)], capture_output=True, text=True, timeout=timeout)
    if p.returncode != 0:
        raise RuntimeError(f"vitd {' '.join(map(str, args))}: exit {p.returncode}: {p.stderr.strip()[-800:]}")
    return p.stdout


def json_line(out):
    """The last line of a command's stdout that is a JSON object."""
    for line in reversed(out.strip().splitlines()):
        if line.startswith("{"):
            return json.loads(line)
    raise RuntimeError(f"no JSON in output: {out[-300:]}")


class Cache:
    def __init__(self, path, fresh):
        self.path = path
        self.d = {} if fresh or not os.path.exists(path) else json.load(open(path))

    def get(self, key):
        return self.d.get(key)

    def put(self, key, value):
        self.d[key] = value
        tmp = self.path + ".tmp"
        with open(tmp, "w") as f:
            json.dump(self.d, f, indent=1, sort_keys=True)
        os.replace(tmp, self.path)
        return value


# ---- measurements -----------------------------------------------------------------------------

def measure_model(a, cache, key, path, what):
    """top-1, parameters, MACs and throughput of a checkpoint (cached under key)."""
    r = cache.get(key)
    if r and "top1" in r and "images_per_s" in r and not (a.rebench and key not in a.rebenched):
        return r
    if r and "top1" in r:  # --rebench: only the throughput is measured again
        log(f"{key}: throughput of {what}")
        a.rebenched.add(key)
        return cache.put(key, dict(r, images_per_s=bench_ips(a, path)))
    log(f"{key}: evaluating {what}")
    r = dict(r or {})
    ins = json.loads(vitd("inspect", "--json", path))
    ev = json_line(vitd("eval", "--model", path, "--data", a.data, "--split", "test", "--json",
                        *(["--limit", a.eval_limit] if a.eval_limit else []), *threads(a)))
    r.update(path=path, removed=ins["removed"], params=ins["params"], macs=ins["macs"], top1=ev["top1"],
             top5=ev.get("top5"), eval_images=ev["images"], images_per_s=bench_ips(a, path))
    return cache.put(key, r)


def bench_ips(a, path):
    return json_line(vitd("bench", "--model", path, "--batch", a.bench_batch, "--seconds", a.bench_seconds,
                          "--json", *threads(a)))["images_per_s"]


def setkey(blocks):
    """'set-0-2-4': the cache key of a removed set, whatever order it was chosen in."""
    return "set-" + "-".join(str(b) for b in sorted(blocks))


def threads(a):
    return ["--threads", a.threads] if a.threads else []


def select(a, cache, strat, k, seed):
    key = f"select/{strat}/k{k}" + (f"/s{seed}" if strat == "random" else "")
    out = os.path.join(a.work, key.replace("/", "_") + ".safetensors")
    r = cache.get(key)
    if r and os.path.exists(out):
        return key, out, r
    rep = out.replace(".safetensors", ".report.json")
    log(f"{key}: selecting")
    args = ["prune", "--model", a.model, "--data", a.data, "--split", "train", "--images", a.proxy_images,
            "--remove", k, "--strategy", strat, "--out", out, "--report", rep, *threads(a)]
    if strat == "random":
        args += ["--seed", seed]
    vitd(*args)
    rj = json.load(open(rep))
    r = cache.put(key, {"chosen": rj["chosen"], "removed": rj["removed_blocks"], "t_chosen": rj.get("t_chosen"),
                        "baseline_h": rj.get("baseline_h"), "seconds": rj["seconds"], "steps": rj["steps"]})
    return key, out, r


def finetune(a, cache, key, removed):
    """Dilution fine-tuning of the dense model removing `removed` (None: the dense control)."""
    out = os.path.join(a.work, key.replace("/", "_") + ".safetensors")
    r = cache.get(key)
    if r and "error" not in r and os.path.exists(out):
        return out, r
    log(f"{key}: fine-tuning {a.epochs} epochs (removing {removed if removed else 'nothing: dense control'})")
    args = ["finetune", "--model", a.model, "--data", a.data, "--remove", ",".join(map(str, removed)) if removed else "none",
            "--epochs", a.epochs, "--out", out, "--seed", 0, *threads(a)]
    if a.dilution_epochs:
        args += ["--dilution-epochs", a.dilution_epochs]
    if a.train_limit:
        args += ["--limit", a.train_limit]
    t0 = time.time()
    try:
        vitd(*args)
    except RuntimeError as e:
        if removed:
            raise
        # a dense control needs `vitd finetune` to accept an empty removal list
        return None, cache.put(key, {"error": str(e)[-300:]})
    return out, cache.put(key, {"train_seconds": time.time() - t0})


# ---- the document ---------------------------------------------------------------------------------

def svg_bars(path, title, groups, series, ylabel, baselines):
    """Grouped bars: groups = x labels; series = [(name, color, [value|None per group],
    [(lo, hi)|None per group])]; baselines = [(label, value, color)] horizontal lines."""
    W, H, ml, mr, mt, mb = 880, 420, 70, 290, 50, 50
    vals = [v for _, _, vs, _ in series for v in vs if v is not None] + [b[1] for b in baselines if b[1] is not None]
    vals += [x for _, _, _, rs in series for r in rs if r for x in r]
    if not vals:
        vals = [0, 1]
    lo, hi = min(vals), max(vals)
    span = max(hi - lo, 1e-6)
    lo, hi = max(0.0, lo - 0.15 * span), min(100.0, hi + 0.1 * span)
    pw, ph = W - ml - mr, H - mt - mb

    def y(v):
        return mt + ph * (hi - v) / (hi - lo)
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" '
           f'font-family="sans-serif" font-size="12">', '<rect width="100%" height="100%" fill="white"/>',
           f'<text x="{(W - mr + ml) / 2}" y="24" font-size="15" text-anchor="middle">{title}</text>']
    step = 10 ** int(f"{span:e}".split("e")[1])
    while (hi - lo) / step < 4:
        step /= 2
    t = (int(lo / step) + 1) * step
    while t < hi:
        out.append(f'<line x1="{ml}" x2="{ml + pw}" y1="{y(t):.1f}" y2="{y(t):.1f}" stroke="#ddd"/>'
                   f'<text x="{ml - 6}" y="{y(t) + 4:.1f}" text-anchor="end">{t:g}</text>')
        t += step
    gw = pw / max(len(groups), 1)
    bw = gw * 0.8 / max(len(series), 1)
    for gi, g in enumerate(groups):
        out.append(f'<text x="{ml + gw * (gi + 0.5):.1f}" y="{H - mb + 18}" text-anchor="middle">{g}</text>')
        for si, (name, color, vs, rs) in enumerate(series):
            v = vs[gi]
            if v is None:
                continue
            x0 = ml + gw * gi + gw * 0.1 + bw * si
            out.append(f'<rect x="{x0:.1f}" y="{y(v):.1f}" width="{bw - 2:.1f}" height="{y(lo) - y(v):.1f}" '
                       f'fill="{color}"><title>{name} {g}: {v:.2f}</title></rect>')
            if rs[gi]:
                cx = x0 + (bw - 2) / 2
                out.append(f'<line x1="{cx:.1f}" x2="{cx:.1f}" y1="{y(rs[gi][0]):.1f}" y2="{y(rs[gi][1]):.1f}" '
                           f'stroke="black"/>')
    for bi, (label, v, color) in enumerate(baselines):
        if v is None:
            continue
        out.append(f'<line x1="{ml}" x2="{ml + pw}" y1="{y(v):.1f}" y2="{y(v):.1f}" stroke="{color}" '
                   f'stroke-dasharray="6 4" stroke-width="2"/>')
    out.append(f'<rect x="{ml}" y="{mt}" width="{pw}" height="{ph}" fill="none" stroke="#888"/>')
    out.append(f'<text transform="translate(18 {mt + ph / 2}) rotate(-90)" text-anchor="middle">{ylabel}</text>')
    out.append(f'<text x="{ml + pw / 2}" y="{H - 12}" text-anchor="middle">attention layers removed (of 12)</text>')
    ly = mt + 10
    for name, color, _, _ in series:
        out.append(f'<rect x="{W - mr + 12}" y="{ly}" width="14" height="12" fill="{color}"/>'
                   f'<text x="{W - mr + 32}" y="{ly + 10}">{name}</text>')
        ly += 20
    for label, v, color in baselines:
        if v is None:
            continue
        out.append(f'<line x1="{W - mr + 12}" x2="{W - mr + 26}" y1="{ly + 6}" y2="{ly + 6}" stroke="{color}" '
                   f'stroke-dasharray="4 3" stroke-width="2"/><text x="{W - mr + 32}" y="{ly + 10}">{label}</text>')
        ly += 20
    out.append("</svg>")
    with open(path, "w") as f:
        f.write("\n".join(out) + "\n")


def write_doc(a, cache, ks, seeds, entropy_table):
    dense = cache.get("dense")
    ctrl = cache.get("b/dense")
    ctrl_err = (cache.get("finetune/dense") or {}).get("error")
    depth = len(entropy_table["blocks"]) if entropy_table else 12
    docs = os.path.dirname(os.path.abspath(a.out))
    stem = os.path.splitext(os.path.basename(a.out))[0]
    chart = os.path.join(docs, f"{stem}_top1.svg")
    echart = f"{stem}_entropy.svg"

    def top1(key):
        """key = part/strategy/k[/seed]: the measurement of the set that selection chose."""
        part, sel_key = key.split("/", 1)
        sel = cache.get(f"select/{sel_key}")
        r = cache.get(f"{part}/{setkey(sel['chosen'])}") if sel else None
        return None if not r or "top1" not in r else 100 * r["top1"]

    def cost(strat_key):
        sel = cache.get(f"select/{strat_key}")
        return (cache.get(f"a/{setkey(sel['chosen'])}") or {}) if sel else {}

    def rnd(part, k):
        vs = [top1(f"{part}/random/k{k}/s{s}") for s in seeds]
        vs = [v for v in vs if v is not None]
        return (statistics.mean(vs), (min(vs), max(vs)), vs) if vs else (None, None, [])

    commit = subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    L = []
    L.append("# Removing attention layers from vitd's default model: NOSE vs first-k vs random\n")
    L.append(f"Generated by `tests/experiment/run_experiment.py {' '.join(sys.argv[1:])}` on "
             f"{datetime.date.today()} (commit {commit}); every number below comes from the `vitd` command line "
             f"(`prune`, `eval`, `finetune`, `bench`, `inspect`, `entropy`). Cached results: "
             f"`{os.path.relpath(a.cache, ROOT)}`.\n")
    L.append(f"- model: `{os.path.relpath(a.model, ROOT) if os.path.isabs(a.model) else a.model}`; data: `{a.data}`; "
             f"top-1 on the test split{f' (first {a.eval_limit} images)' if a.eval_limit else ''}.")
    L.append(f"- selection proxy set: {a.proxy_images} training images (a seeded sample, labels unused); "
             f"NOSE measures H at the logits.")
    L.append(f"- (a) straight after removal: the removed path `y = 2x; x = y + MLP(LN2 y)`, no retraining.")
    lim = f" --limit {a.train_limit}` (the first {a.train_limit} training images" if a.train_limit else "` (all training images"
    L.append(f"- (b) after dilution fine-tuning: `vitd finetune --epochs {a.epochs}{lim}) from the dense model, "
             f"the same budget for every strategy; the control is the dense model fine-tuned for the same budget "
             f"(`--remove none`).")
    L.append(f"- random: seeds {', '.join(map(str, seeds))} (mean, and the range in brackets).")
    L.append(f"- throughput: `vitd bench --batch {a.bench_batch}`, median images/s; the machine may be shared.\n")
    if dense:
        L.append(f"Dense model: top-1 **{100 * dense['top1']:.2f}%**, {dense['params'] / 1e6:.3f} M parameters, "
                 f"{dense['macs'] / 1e6:.2f} M MACs per image, {dense['images_per_s']:.0f} images/s.\n")
    L.append(f"![top-1 by strategy]({stem}_top1.svg)\n")

    for part, title in (("a", "(a) Top-1 (%) straight after removal"), ("b", "(b) Top-1 (%) after dilution fine-tuning")):
        L.append(f"## {title}\n")
        L.append("| removed k | nose | first | random (mean [range]) | nose blocks | first blocks | params (M) | MACs (M) | images/s (nose) |")
        L.append("|---|---|---|---|---|---|---|---|---|")
        for k in ks:
            n, f = top1(f"{part}/nose/k{k}"), top1(f"{part}/first/k{k}")
            m, rg, vs = rnd(part, k)
            sel_n, sel_f = cache.get(f"select/nose/k{k}") or {}, cache.get(f"select/first/k{k}") or {}
            cst = cost(f"nose/k{k}")
            rtxt = "not run" if m is None else f"{m:.2f} [{rg[0]:.2f}-{rg[1]:.2f}]"
            L.append(f"| {k} | {'not run' if n is None else f'{n:.2f}'} | {'not run' if f is None else f'{f:.2f}'} | "
                     f"{rtxt} | {sel_n.get('chosen', '')} | {sel_f.get('chosen', '')} | "
                     f"{cst['params'] / 1e6:.3f} | {cst['macs'] / 1e6:.2f} | {cst['images_per_s']:.0f} |"
                     if cst else
                     f"| {k} | {'not run' if n is None else f'{n:.2f}'} | {'not run' if f is None else f'{f:.2f}'} | "
                     f"{rtxt} | {sel_n.get('chosen', '')} | {sel_f.get('chosen', '')} | | | |")
        if part == "b" and not any(top1(f"b/{st}/k{k}") is not None for st in ("nose", "first") for k in ks):
            L.append("\nPart (b) has not been run for this version of the document: "
                     "`tests/experiment/run_experiment.py --part b` runs it (and keeps part (a)'s cached "
                     "results); it costs one fine-tuning per distinct removed set plus the control.")
        if part == "b":
            if ctrl and "top1" in ctrl:
                L.append(f"\nDense control (fine-tuned {a.epochs} epochs, nothing removed): top-1 **{100 * ctrl['top1']:.2f}%**.")
            elif ctrl_err:
                L.append(f"\nDense control: not available (`vitd finetune --remove none` failed: "
                         f"`{ctrl_err.split(': ')[-1]}`).")
            else:
                L.append("\nDense control: not run.")
        L.append("")

    L.append("## Random draws\n")
    L.append("| k | seed | blocks | top-1 (a) | top-1 (b) |")
    L.append("|---|---|---|---|---|")
    for k in ks:
        for s in seeds:
            sel = cache.get(f"select/random/k{k}/s{s}") or {}
            ta, tb = top1(f"a/random/k{k}/s{s}"), top1(f"b/random/k{k}/s{s}")
            L.append(f"| {k} | {s} | {sel.get('chosen', '')} | {'not run' if ta is None else f'{ta:.2f}'} | "
                     f"{'not run' if tb is None else f'{tb:.2f}'} |")
    L.append("")

    L.append("## What NOSE saw\n")
    kmax = max(ks)
    sel = cache.get(f"select/nose/k{kmax}")
    if sel:
        L.append(f"Greedy transfer-entropy scores T(S + {{i}}) = H(full) - H(without S + {{i}}) at the logits, "
                 f"k = {kmax} (baseline H = {sel['baseline_h']:.3f}); lower means removing block i loses less; "
                 f"the chosen block of each step is in bold. The sets are nested: k = {', '.join(map(str, ks))} "
                 f"take the first k choices.\n")
        L.append("| step | " + " | ".join(str(i) for i in range(depth)) + " |")
        L.append("|---|" + "---|" * depth)
        for st in sel["steps"]:
            sc = {e["block"]: e["score"] for e in st["scores"]}
            cells = []
            for i in range(depth):
                if i not in sc:
                    cells.append("-")
                else:
                    cells.append(f"**{sc[i]:.3f}**" if i == st["chosen"] else f"{sc[i]:.3f}")
            L.append(f"| {st['step']} | " + " | ".join(cells) + " |")
        L.append("")
    if entropy_table:
        L.append(f"Per-layer entropy of the dense model on the proxy set (class token, before the residual add; "
                 f"`vitd entropy`):\n\n![per-layer entropy]({echart})\n")
        L.append("| block | " + " | ".join(str(b["block"]) for b in entropy_table["blocks"]) + " |")
        L.append("|---|" + "---|" * len(entropy_table["blocks"]))
        for what in ("attn", "mlp"):
            L.append(f"| {'attention' if what == 'attn' else 'MLP'} H | " +
                     " | ".join("-" if b[what] is None else f"{b[what]:.1f}" for b in entropy_table["blocks"]) + " |")
        L.append("")

    L.append("## Findings\n")
    found = []
    for part, name in (("a", "straight after removal"), ("b", "after fine-tuning")):
        for k in ks:
            n, f = top1(f"{part}/nose/k{k}"), top1(f"{part}/first/k{k}")
            m, rg, _ = rnd(part, k)
            if n is None:
                continue
            bits = []
            if f is not None:
                bits.append(f"{'beats' if n > f else 'does not beat'} first-k ({n:.2f} vs {f:.2f})")
            if m is not None:
                bits.append(f"{'beats' if n > m else 'does not beat'} random ({n:.2f} vs mean {m:.2f}, best draw {rg[1]:.2f})")
            if part == "b" and ctrl and "top1" in ctrl:
                d = 100 * ctrl['top1'] - n
                bits.append(f"loses {d:.2f} points against the dense control" if d >= 0 else
                            f"gains {-d:.2f} points over the dense control")
            elif part == "a" and dense:
                bits.append(f"loses {100 * dense['top1'] - n:.2f} points against the dense model")
            found.append(f"- k = {k}, {name}: NOSE " + "; ".join(bits) + ".")
    L += found or ["- nothing measured yet."]
    L.append("\nThe findings above are computed from the tables by the script; they state what was measured on this "
             "model and data set, whichever way it went.\n")
    with open(a.out, "w") as fh:
        fh.write("\n".join(L) + "\n")

    groups = [f"k={k}" for k in ks]
    series = []
    for part, shade in (("a", ""), ("b", " + finetune")):
        if not any(top1(f"{part}/nose/k{k}") is not None for k in ks):
            continue
        for s in STRATS:
            if s == "random":
                vals = [rnd(part, k)[0] for k in ks]
                rngs = [rnd(part, k)[1] for k in ks]
            else:
                vals = [top1(f"{part}/{s}/k{k}") for k in ks]
                rngs = [None] * len(ks)
            color = COLORS[s] if part == "a" else {"nose": "#ff9896", "first": "#c7c7c7", "random": "#aec7e8"}[s]
            series.append((f"{s}{' (mean, range)' if s == 'random' else ''}{shade}", color, vals, rngs))
    base = [(f"dense ({100 * dense['top1']:.2f})" if dense else "dense", 100 * dense["top1"] if dense else None,
             COLORS["dense"])]
    if ctrl and "top1" in ctrl:
        base.append((f"dense + finetune ({100 * ctrl['top1']:.2f})", 100 * ctrl["top1"], "#98df8a"))
    svg_bars(chart, "Top-1 after removing k attention layers", groups, series, "top-1 (%)", base)
    log(f"wrote {a.out} and {chart}")


# ---- main -------------------------------------------------------------------------------------------

def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=os.path.join(ROOT, "models", "fashion-vit"))
    ap.add_argument("--data", default="fashion-mnist")
    ap.add_argument("--part", choices=("a", "b", "all"), default="all")
    ap.add_argument("--ks", default="3,4,6")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--proxy-images", type=int, default=512)
    ap.add_argument("--epochs", type=int, default=10, help="fine-tuning budget of part (b)")
    ap.add_argument("--dilution-epochs", type=int, default=0, help="0: vitd finetune's default")
    ap.add_argument("--eval-limit", type=int, default=0, help="evaluate on the first N test images (0: all)")
    ap.add_argument("--train-limit", type=int, default=0, help="fine-tune on the first N training images (0: all)")
    ap.add_argument("--bench-batch", type=int, default=64)
    ap.add_argument("--bench-seconds", type=float, default=3)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--work", default=os.path.join(ROOT, "build", "experiment"))
    ap.add_argument("--out", default=os.path.join(ROOT, "docs", "results.md"))
    ap.add_argument("--fresh", action="store_true", help="ignore cached results")
    ap.add_argument("--rebench", action="store_true", help="measure every model's throughput again (idle machine)")
    a = ap.parse_args()
    a.rebenched = set()
    ks = [int(k) for k in a.ks.split(",")]
    seeds = [int(s) for s in a.seeds.split(",")]
    os.makedirs(a.work, exist_ok=True)
    os.makedirs(os.path.dirname(os.path.abspath(a.out)), exist_ok=True)
    a.cache = os.path.join(a.work, "results.json")
    if not os.path.exists(a.model):
        sys.exit(f"run_experiment: no model at {a.model} (train the default model first: issue 3)")
    cache = Cache(a.cache, a.fresh)
    if cache.get("model") not in (None, a.model):
        sys.exit(f"run_experiment: {a.cache} holds results for {cache.get('model')}; use --fresh or another --work")
    cache.put("model", a.model)

    measure_model(a, cache, "dense", a.model, "the dense model")
    stem = os.path.splitext(os.path.basename(a.out))[0]
    epath = os.path.join(os.path.dirname(os.path.abspath(a.out)), f"{stem}_entropy.svg")
    entropy_table = cache.get("entropy")
    if not entropy_table or not os.path.exists(epath):
        log("per-layer entropy of the dense model")
        entropy_table = cache.put("entropy", json.loads(vitd("entropy", "--model", a.model, "--data", a.data, "--split",
                                                             "train", "--images", a.proxy_images, "--json", "--plot",
                                                             epath, *threads(a))))
    # Strategies often pick the same set (random draws, or first-k = NOSE): every removed set
    # is evaluated and fine-tuned once, and the strategies refer to it (setkey).
    sets = {}
    for k in ks:
        for s in STRATS:
            for seed in (seeds if s == "random" else [None]):
                key, path, sel = select(a, cache, s, k, seed)
                sets.setdefault(setkey(sel["chosen"]), (path, sel["chosen"]))
    if a.part in ("a", "all"):
        for sk, (path, chosen) in sets.items():
            measure_model(a, cache, f"a/{sk}", path, f"blocks {chosen} straight after removal")
    if a.part in ("b", "all"):
        out, r = finetune(a, cache, "finetune/dense", None)
        if out:
            measure_model(a, cache, "b/dense", out, "the dense control")
        for sk, (path, chosen) in sets.items():
            out, _ = finetune(a, cache, f"finetune/{sk}", chosen)
            measure_model(a, cache, f"b/{sk}", out, f"blocks {chosen} after fine-tuning")
    write_doc(a, cache, ks, seeds, entropy_table)


if __name__ == "__main__":
    main()
