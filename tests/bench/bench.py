#!/usr/bin/python3
"""bench.py - vitd against ONNX Runtime on the same DeiT models, side by side (run.sh calls it;
tests/bench/README.md explains what it measures).

For every model (DeiT-T/S/B, dense and with 6 of 12 attention layers removed) and batch size:
first both engines are checked against torch's logits on a check input (a fast wrong answer is
not a result), then `vitd bench --json` and ort_bench.js run alternately, ROUNDS times each,
the order flipping every round so slow drift on a shared machine hits both alike. The table
reports the medians and their ratio; every single run is listed below it.
"""

import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, HERE)
from make_models import REMOVED, SIZES  # noqa: E402

# Seconds of timed runs and warm-up runs per engine run; DeiT-B takes ~0.2 s per image here,
# so it gets fewer warm-ups and a little more time to collect a handful of batches.
TIMING = {"T": (3, 3), "S": (3, 2), "B": (5, 1)}
RTOL = 1e-4


def macs(D, removed_count):
    """METHOD.md section 5 cost model for DeiT at 224/16 (N = 197)."""
    N, n_p = 197, 196
    attn = 4 * N * D * D + 2 * N * N * D
    return 12 * 8 * N * D * D + (12 - removed_count) * attn + n_p * 768 * D + D * 1000


def last_json(text):
    for line in reversed(text.strip().splitlines()):
        try:
            j = json.loads(line)
            if isinstance(j, dict):
                return j
        except ValueError:
            continue
    try:
        return json.loads(text)
    except ValueError:
        return None


def run(cmd, timeout=600):
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return None, f"timeout after {timeout}s"
    if p.returncode != 0:
        return None, f"exit {p.returncode}: {(p.stderr or p.stdout).strip()[-300:]}"
    j = last_json(p.stdout)
    if j is None:
        return None, f"no JSON in output: {p.stdout.strip()[-200:]!r}"
    return j, ""


class Bench:
    def __init__(self, a):
        self.a = a
        self.vitd = os.path.join(a.build, "vitd")
        self.node = [a.node, os.path.join(HERE, "ort_bench.js")]
        self.runs = []  # (model, batch, engine, round, images_per_s or None, note, other CPUs)
        self.problems = []
        self.skip = set()  # (model, engine) pairs that failed their check
        p = subprocess.run([self.vitd, "bench", "--help"], capture_output=True, text=True)
        self.vitd_help = p.stdout + p.stderr

    def path(self, name, ext):
        return os.path.join(self.a.models, name + ext)

    # -- correctness first -----------------------------------------------------------------
    def check(self, name):
        """Runs both engines on the check input; an engine that disagrees with torch is
        reported and not timed on this model (a fast wrong answer is not a result)."""
        j, err = run(self.node + ["--model", self.path(name, ".onnx"), "--check",
                                  self.path(name, ".check.input.npy"), "--expect",
                                  self.path(name, ".check.logits.npy"),
                                  "--threads", str(self.a.threads), "--rtol", str(RTOL)])
        if j is None or j.get("check") != "ok":
            self.problems.append(f"{name}: ONNX Runtime check failed: {j or err}")
            self.skip.add((name, "ort"))
        else:
            print(f"  {name}: ORT == torch (max|diff| {j['max_abs_diff']:.2e}, "
                  f"max|logit| {j['max_abs_logit']:.2f})")
        with tempfile.TemporaryDirectory() as d:
            out = os.path.join(d, "y.npy")
            p = subprocess.run([self.vitd, "logits", "--model", self.path(name, ".safetensors"),
                                "--input", self.path(name, ".check.input.npy"),
                                "--output", out], capture_output=True, text=True)
            if p.returncode != 0:
                self.problems.append(f"{name}: vitd logits failed: {p.stderr.strip()[-300:]}")
                self.skip.add((name, "vitd"))
                return
            y = np.load(out)
        ref = np.load(self.path(name, ".check.logits.npy"))
        d = float(np.abs(y - ref).max()) if y.shape == ref.shape else float("inf")
        m = float(np.abs(ref).max())
        if not d <= RTOL * m:
            self.problems.append(f"{name}: vitd disagrees with torch (max|diff| {d:.3g}, "
                                 f"max|logit| {m:.3g})")
            self.skip.add((name, "vitd"))
            return
        print(f"  {name}: vitd == torch (max|diff| {d:.2e})")

    # -- timing ----------------------------------------------------------------------------
    def once(self, engine, name, size, batch, rnd):
        seconds, warm = TIMING[size]
        if self.a.seconds:
            seconds = self.a.seconds
        if engine == "vitd":
            cmd = [self.vitd, "bench", "--model", self.path(name, ".safetensors"),
                   "--batch", str(batch), "--seconds", str(seconds), "--json"]
            # Options vitd bench has beyond the minimum: pin the same thread count as ORT's,
            # time one stretch (images / elapsed, as ort_bench.js does) rather than a median of
            # sub-runs, and the same number of warm-up passes.
            if "--threads" in self.vitd_help:
                cmd += ["--threads", str(self.a.threads)]
            if "--reps" in self.vitd_help:
                cmd += ["--reps", "1"]
            if "--warmup" in self.vitd_help:
                cmd += ["--warmup", str(warm)]
        else:
            cmd = self.node + ["--model", self.path(name, ".onnx"), "--batch", str(batch),
                               "--seconds", str(seconds), "--warmup", str(warm),
                               "--threads", str(self.a.threads)]
        watch = OtherCpu()
        j, err = run(cmd)
        other = watch.cpus()
        ips = j.get("images_per_s") if j else None
        if not isinstance(ips, (int, float)) or ips <= 0:
            ips = None
            err = err or f"no images_per_s in {j}"
        if engine == "vitd" and j and "threads" in j and j["threads"] != self.a.threads:
            err = f"vitd used {j['threads']} threads, ORT {self.a.threads}"
        self.runs.append((name, batch, engine, rnd, ips, err, other))
        print(f"    {engine:<4} {name:<11} b{batch} round {rnd}: "
              + (f"{ips:8.2f} img/s" if ips else f"FAILED {err}")
              + f"  (others {other:.2f} CPUs)"
              + (f"  ({err})" if ips and err else ""), flush=True)

    def time_all(self, names):
        for name, size in names:
            for batch in self.a.batches:
                for r in range(self.a.rounds):
                    order = ("vitd", "ort") if r % 2 == 0 else ("ort", "vitd")
                    for engine in order:
                        if (name, engine) not in self.skip:
                            self.once(engine, name, size, batch, r + 1)

    def median(self, name, batch, engine):
        v = [ips for n, b, e, _, ips, _, _ in self.runs
             if (n, b, e) == (name, batch, engine) and ips]
        return statistics.median(v) if v else None

    # -- report ----------------------------------------------------------------------------
    def report(self, names):
        f2 = lambda v: "-" if v is None else f"{v:.2f}"  # noqa: E731
        lines = ["# vitd vs ONNX Runtime", ""]
        lines += [f"{datetime.datetime.now().isoformat(timespec='seconds')}, "
                  f"{cpu_model()}, {self.a.threads} threads for both engines, "
                  f"onnxruntime-node {self.a.ort_version}, vitd {git_rev()}, "
                  f"median of {self.a.rounds} alternating runs each.", ""]
        others = [o for *_, o in self.runs]
        mean_o = statistics.mean(others) if others else 0.0
        lines += [f"Other processes used {mean_o:.2f} CPUs on average during the timed runs "
                  f"(max {max(others, default=0):.2f}; per run below)."]
        if mean_o > 0.25:
            lines += ["", "**Warning: other processes were busy on this machine during the "
                          "runs; both engines measured their neighbours too, and the figures "
                          "are not representative. Re-run on an idle machine.**"]
        lines += [""]
        lines += ["| model | removed | batch | vitd img/s | ORT img/s | vitd/ORT | vitd GFLOP/s |",
                  "|---|---|---|---|---|---|---|"]
        for name, size in names:
            D = SIZES[size][0]
            k = len(REMOVED) if name.endswith("_rm6") else 0
            rm = ",".join(map(str, REMOVED)) if k else "-"
            for batch in self.a.batches:
                v, o = self.median(name, batch, "vitd"), self.median(name, batch, "ort")
                ratio = f"{v / o:.2f}" if v and o else "-"
                gf = f"{v * 2 * macs(D, k) / 1e9:.1f}" if v else "-"
                lines.append(f"| DeiT-{size} | {rm} | {batch} | {f2(v)} | {f2(o)} | {ratio} | {gf} |")
        # What removing 6 attention layers buys each engine, next to the MAC-count bound.
        lines += ["", "Speed-up from removing 6 of 12 attention layers (rm6 / dense img/s):", "",
                  "| model | batch | vitd | ORT | MAC bound |", "|---|---|---|---|---|"]
        sizes = sorted({s for _, s in names}, key="TSB".index)
        for size in sizes:
            D = SIZES[size][0]
            bound = macs(D, 0) / macs(D, len(REMOVED))
            dn, cn = f"deit_{size.lower()}", f"deit_{size.lower()}_rm6"
            for batch in self.a.batches:
                sp = []
                for e in ("vitd", "ort"):
                    a, b = self.median(dn, batch, e), self.median(cn, batch, e)
                    sp.append(f"{b / a:.3f}" if a and b else "-")
                lines.append(f"| DeiT-{size} | {batch} | {sp[0]} | {sp[1]} | {bound:.3f} |")
        lines += ["", "Every run: images/s (CPUs used by other processes meanwhile):", "",
                  "| model | batch | engine | runs |",
                  "|---|---|---|---|"]
        for name, size in names:
            for batch in self.a.batches:
                for e in ("vitd", "ort"):
                    v = [(f"{ips:.2f}" if ips else "fail") + f" ({o:.1f})"
                         for n, b, en, _, ips, _, o in self.runs
                         if (n, b, en) == (name, batch, e)]
                    lines.append(f"| {name} | {batch} | {e} | {' '.join(v) or 'not run'} |")
        if self.problems:
            lines += ["", "Problems:", ""] + [f"- {p}" for p in self.problems]
        return "\n".join(lines) + "\n"


class OtherCpu:
    """CPU used by other processes while a run was going: all busy CPU time (/proc/stat)
    minus what our own children used, per second of wall time (in CPUs). The load average
    cannot tell our two busy threads from a neighbour's; this can. A run sharing the machine
    measures the neighbours as much as the engine, so the report flags it."""

    def __init__(self):
        self.t0, self.busy0, self.own0 = time.monotonic(), busy_seconds(), own_seconds()

    def cpus(self):
        wall = time.monotonic() - self.t0
        other = (busy_seconds() - self.busy0) - (own_seconds() - self.own0)
        return max(0.0, other / wall) if wall > 0 else 0.0


def busy_seconds():
    try:
        f = [int(v) for v in open("/proc/stat").readline().split()[1:9]]
    except (OSError, ValueError):
        return 0.0
    user, nice, system, _idle, _iowait, irq, softirq, steal = f
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def own_seconds():
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def cpu_model():
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def git_rev():
    try:
        return subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"],
                              capture_output=True, text=True).stdout.strip() or "?"
    except OSError:
        return "?"


def main():
    ap = argparse.ArgumentParser(description="vitd vs ONNX Runtime")
    ap.add_argument("--build", default="build")
    ap.add_argument("--models", required=True, help="folder made by make_models.py")
    ap.add_argument("--sizes", default="T,S,B")
    ap.add_argument("--batches", default="1,8")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=0, help="override the per-size timing")
    ap.add_argument("--threads", type=int, required=True)
    ap.add_argument("--node", default="node")
    ap.add_argument("--ort-version", default="?")
    ap.add_argument("--out", required=True, help="results.md to write")
    a = ap.parse_args()
    a.batches = [int(b) for b in a.batches.split(",")]
    sizes = [s.strip().upper() for s in a.sizes.split(",") if s.strip()]
    names = [(f"deit_{s.lower()}{v}", s) for s in sizes for v in ("", "_rm6")]

    b = Bench(a)
    print("checking both engines against torch:", flush=True)
    for n, _ in names:
        b.check(n)
    print("timing:", flush=True)
    b.time_all(names)
    text = b.report(names)
    with open(a.out, "w") as f:
        f.write(text)
    print()
    print(text)
    print(f"(written to {a.out})")
    return 1 if b.problems or any(r[4] is None for r in b.runs) else 0


if __name__ == "__main__":
    sys.exit(main())
