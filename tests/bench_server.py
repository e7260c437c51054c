#!/usr/bin/python3
"""bench_server.py - load benchmark of `vitd serve` (make bench-server).

For each model: images/s and p50/p99 latency of POST /v1/models/M/classify (one encoded image
per request, closed loop, wrk) at concurrency 1, 4 and 16, beside the engine alone
(`vitd bench --batch B --json`, no HTTP, no decoding) at the batch the server can form at that
concurrency, B = min(concurrency, max_batch_size), run with one thread or all CPUs and with
OpenMP threads that spin 1,000 iterations or sleep at once; the best of the four is the
reference. Rounds alternate server and engine runs, and the table shows medians over rounds (the machines
are shared: single runs are noise).

Models (random weights, tests/torch_vit.py; generated once into build/bench-server/):
  fashion  the default model's shape (engine/train.c preset "fashion"): 28x28 gray, patch 7,
           width 64, 4 heads, MLP 256, 12 blocks, 10 classes; models/fashion-vit/model.safetensors
           itself is used when it exists;
  deit_s   DeiT-S: 224x224 RGB, patch 16, width 384, 6 heads, 12 blocks, 1000 classes.
Request bodies: a 28x28 PNG for fashion, plus a row of multipart requests of 8 such images at
concurrency 2 (the HTTP cost shared by 8 images); for deit_s a 256x256 JPEG (an image a client
has already scaled), plus a row with the 493x356 butterfly photo at concurrency 16, where
decoding and resizing cost more.

Options: --rounds R (3), --seconds T per server run (8; 2.5 T for deit_s), --models
fashion,deit_s, --out FILE.
"""

import argparse
import json
import os
import re
import resource
import signal
import statistics
import subprocess
import sys
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
BUILD = os.environ.get("BUILD", "build")
VITD = os.path.join(ROOT, BUILD, "vitd")
OUT = os.path.join(ROOT, BUILD, "bench-server")
MAX_BATCH = 8

WRK_LUA = """
wrk.method = "POST"
local f = assert(io.open(os.getenv("VITD_BENCH_BODY"), "rb"))
wrk.body = f:read("*a")
f:close()
wrk.headers["Content-Type"] = os.getenv("VITD_BENCH_CTYPE")
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format('{"requests": %d, "duration_us": %d, "errors": %d, "non2xx": %d, "p50_us": %d, "p99_us": %d}\\n',
    summary.requests, summary.duration, e.connect + e.read + e.write + e.timeout, e.status,
    latency:percentile(50), latency:percentile(99)))
end
"""


def make_inputs():
    from PIL import Image
    photo = os.path.join(HERE, "data", "photos", "butterfly.jpg")
    im = Image.open(photo).convert("RGB")
    p28 = os.path.join(OUT, "fashion28.png")
    im.convert("L").resize((28, 28), Image.BICUBIC).save(p28)
    j256 = os.path.join(OUT, "photo256.jpg")
    im.resize((256, 256), Image.BICUBIC).save(j256, quality=90)
    # 8 images in one multipart request: the HTTP cost per image divided by 8
    mp8 = os.path.join(OUT, "fashion28x8.multipart")
    png = open(p28, "rb").read()
    with open(mp8, "wb") as f:
        for i in range(8):
            f.write(b"--vitdbench\r\nContent-Disposition: form-data; name=\"file\"; filename=\"%d.png\"\r\n"
                    b"Content-Type: image/png\r\n\r\n" % i + png + b"\r\n")
        f.write(b"--vitdbench--\r\n")
    # (body, Content-Type, description, images per request, concurrency of the extra row)
    return {"fashion": [(p28, "image/png", "28x28 PNG", 1, None),
                        (mp8, "multipart/form-data; boundary=vitdbench", "8 x 28x28 PNG multipart", 8, 2)],
            "deit_s": [(j256, "image/jpeg", "256x256 JPEG", 1, None), (photo, "image/jpeg", "493x356 JPEG", 1, 16)]}


def make_models(names):
    sys.path.insert(0, HERE)
    import torch_vit as tv
    shapes = {"fashion": dict(img_size=28, patch_size=7, in_chans=1, embed_dim=64, num_heads=4, depth=12, mlp_dim=256,
                              num_classes=10),
              "deit_s": dict(img_size=224, patch_size=16, embed_dim=384, num_heads=6, depth=12, num_classes=1000)}
    paths = {}
    for n in names:
        if n == "fashion" and os.path.exists(os.path.join(ROOT, "models", "fashion-vit", "model.safetensors")):
            paths[n] = os.path.join(ROOT, "models", "fashion-vit", "model.safetensors")
            continue
        p = os.path.join(OUT, n + ".safetensors")
        if not os.path.exists(p):
            tv.save_model(p, tv.build(tv.cfg(**shapes[n]), seed=11))
        paths[n] = p
    return paths


SPINCOUNT = "1000"  # vitd serve's default gomp_spincount (and every other vitd command's)


# The engine alone under four settings, the server compared with the best of them: one
# thread or all CPUs, and OpenMP threads that spin 1,000 iterations before they sleep (what
# vitd serve and vitd bench use) or sleep at once (GOMP_SPINCOUNT=0, often best when other
# processes share the CPUs).
ENGINE_SETTINGS = [("t1/spin1000", 1, {"GOMP_SPINCOUNT": SPINCOUNT}), ("all/spin1000", 0, {"GOMP_SPINCOUNT": SPINCOUNT}),
                   ("t1/spin0", 1, {"GOMP_SPINCOUNT": "0"}), ("all/spin0", 0, {"GOMP_SPINCOUNT": "0"})]


def engine(model, batch, seconds, threads, wait_env):
    """`vitd bench` images/s with `threads` OpenMP threads (0: all CPUs) and the wait setting."""
    env = dict(os.environ)
    env.pop("GOMP_SPINCOUNT", None)
    env.pop("OMP_WAIT_POLICY", None)
    env.update(wait_env)
    ru0, t0 = resource.getrusage(resource.RUSAGE_CHILDREN), time.time()
    r = subprocess.run([VITD, "bench", "--model", model, "--batch", str(batch), "--seconds", str(seconds),
                        "--threads", str(threads), "--reps", "3", "--json"], capture_output=True, text=True, check=True, env=env)
    ru1, t1 = resource.getrusage(resource.RUSAGE_CHILDREN), time.time()
    cpu_frac = (ru1.ru_utime + ru1.ru_stime - ru0.ru_utime - ru0.ru_stime) / (t1 - t0)
    ips = json.loads(r.stdout)["images_per_s"]
    return ips, ips / max(cpu_frac, 1e-9)  # images/s, images per CPU-second


class Server:
    def __init__(self, name, model, log, extra=(), env=None):
        self.log = open(log, "wb")
        self.proc = subprocess.Popen([VITD, "serve", "--model", f"{name}={model}", "--host", "127.0.0.1", "--port", "0",
                                      "--max-batch-size", str(MAX_BATCH), "--access-log", "false", "--max-queue-images", "256",
                                      "--store-dir", os.path.join(OUT, "store"), *extra],
                                     stdout=self.log, stderr=subprocess.STDOUT, env=dict(os.environ, **(env or {})))
        self.port = self.admin_port = None
        for _ in range(1200):
            text = open(log).read()
            m = re.search(r"(?<!admin )listening on [0-9.]+:(\d+)", text)
            if m:
                self.port = int(m.group(1))
            m = re.search(r"admin listening on [0-9.]+:(\d+)", text)
            if m:
                self.admin_port = int(m.group(1))
            if self.port and " info ready" in text:
                return
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        raise SystemExit(f"server did not start:\n{open(log).read()}")

    def cpu_seconds(self):
        st = open(f"/proc/{self.proc.pid}/stat").read().rsplit(")", 1)[1].split()
        return (int(st[11]) + int(st[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime

    def batch_stats(self, name):
        text = urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics").read().decode()
        s = float(re.search(r'vitd_batch_size_sum\{model="%s"\} (\S+)' % name, text).group(1))
        c = float(re.search(r'vitd_batch_size_count\{model="%s"\} (\S+)' % name, text).group(1))
        return s, c

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def wrk(port, name, body, ctype, conns, seconds, lua):
    env = dict(os.environ, VITD_BENCH_BODY=body, VITD_BENCH_CTYPE=ctype)
    r = subprocess.run(["wrk", "-t1", f"-c{conns}", f"-d{max(1, int(round(seconds)))}s", "--timeout", "30s", "-s", lua,
                        f"http://127.0.0.1:{port}/v1/models/{name}/classify"], capture_output=True, text=True, env=env)
    line = [l for l in r.stdout.splitlines() if l.startswith("{")]
    if not line:
        raise SystemExit(f"wrk failed: {r.stdout}\n{r.stderr}")
    j = json.loads(line[-1])
    j["ips"] = j["requests"] / (j["duration_us"] / 1e6)
    return j


def load_avg():
    return float(open("/proc/loadavg").read().split()[0])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=8)
    ap.add_argument("--models", default="fashion,deit_s")
    ap.add_argument("--out", default=os.path.join(OUT, "results.md"))
    a = ap.parse_args()
    os.makedirs(OUT, exist_ok=True)
    lua = os.path.join(OUT, "post.lua")
    open(lua, "w").write(WRK_LUA)
    names = a.models.split(",")
    models = make_models(names)
    inputs = make_inputs()
    rows = []
    loads = []
    for name in names:
        cases = [(c, inputs[name][0]) for c in (1, 4, 16)] + [(x[4], x) for x in inputs[name][1:]]
        res = {i: {"srv": [], "p50": [], "p99": [], "eng": [], "batch": [], "err": 0} for i in range(len(cases))}
        # A closed-loop run ends with up to one batch in flight, which wrk does not count: runs
        # must span many batches (a DeiT-S batch of 8 takes ~0.15-0.6 s here), so the slow
        # model runs 2.5x longer.
        slow = name != "fashion"
        secs = a.seconds * (2.5 if slow else 1)
        esecs = 6.0 if slow else 3.0
        srv = Server(name, models[name], os.path.join(OUT, f"{name}.log"))
        try:
            # warm the connection path, the allocator and the batch pattern once
            wrk(srv.port, name, cases[0][1][0], cases[0][1][1], 16, 2, lua)
            for rnd in range(a.rounds):
                for i, (conns, (body, ctype, what, per_req, _)) in enumerate(cases):
                    loads.append(load_avg())
                    b0, c0 = srv.batch_stats(name), srv.cpu_seconds()
                    w = wrk(srv.port, name, body, ctype, conns, secs, lua)
                    w["ips"] *= per_req  # images/s
                    b1, c1 = srv.batch_stats(name), srv.cpu_seconds()
                    srv_eff = w["ips"] / max((c1 - c0) / (w["duration_us"] / 1e6), 1e-9)
                    B = min(conns * per_req, MAX_BATCH)
                    es = {k: engine(models[name], B, esecs, t, v) for k, t, v in ENGINE_SETTINGS}
                    best = max(es, key=lambda k: es[k][0])
                    e, e_eff = es[best]
                    r = res[i]
                    for k, v in es.items():
                        r.setdefault(k, []).append(v[0])
                    r.setdefault("eff", []).append(srv_eff / e_eff)
                    es = {k: v[0] for k, v in es.items()}
                    r["srv"].append(w["ips"])
                    r["p50"].append(w["p50_us"] / 1e3)
                    r["p99"].append(w["p99_us"] / 1e3)
                    r["eng"].append(e)
                    r["batch"].append((b1[0] - b0[0]) / max(1.0, b1[1] - b0[1]))
                    r["err"] += w["errors"] + w["non2xx"]
                    print(f"  round {rnd + 1} {name} c={conns} {what}: server {w['ips']:.1f} img/s "
                          f"(p50 {w['p50_us'] / 1e3:.1f} ms, p99 {w['p99_us'] / 1e3:.1f} ms, mean batch {r['batch'][-1]:.2f}), "
                          f"engine batch {B} best {e:.1f} img/s ({', '.join(f'{k} {v:.1f}' for k, v in es.items())}), "
                          f"ratio {w['ips'] / e:.2f}, per CPU-second {r['eff'][-1]:.2f}", flush=True)
        finally:
            srv.stop()
        for i, (conns, (body, ctype, what, per_req, _)) in enumerate(cases):
            r = res[i]
            med = statistics.median
            ratios = [s / e for s, e in zip(r["srv"], r["eng"])]
            rows.append((name, what, conns, med(r["srv"]), min(r["srv"]), max(r["srv"]), med(r["p50"]), med(r["p99"]),
                         med(r["batch"]), min(conns * per_req, MAX_BATCH), med(r["eng"]), min(r["eng"]), max(r["eng"]),
                         " / ".join(f"{med(r[k]):.1f}" for k, _, _ in ENGINE_SETTINGS), med(ratios), med(r["eff"]), r["err"]))
    head = ("| model | request | conc. | server img/s (median, min-max) | p50 ms | p99 ms | mean batch | engine batch | "
            "engine img/s, best setting (median, min-max) | engine " + " / ".join(k for k, _, _ in ENGINE_SETTINGS) +
            " | server/engine | per CPU-second | errors |\n"
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|\n")
    body = "".join(f"| {n} | {w} | {c} | {s:.1f} ({lo:.1f}-{hi:.1f}) | {p50:.1f} | {p99:.1f} | {mb:.2f} | {B} | "
                   f"{e:.1f} ({elo:.1f}-{ehi:.1f}) | {ev} | {ra:.2f} | {ef:.2f} | {err} |\n"
                   for n, w, c, s, lo, hi, p50, p99, mb, B, e, elo, ehi, ev, ra, ef, err in rows)
    note = (f"\n{a.rounds} rounds, {a.seconds:g} s per server run ({a.seconds * 2.5:g} s for deit_s), wrk -t1 closed loop, "
            f"after a warm-up run; max_batch_size {MAX_BATCH}, "
            f"max_queue_delay_us 0, gomp_spincount {SPINCOUNT}, threads and instances auto (fashion: 2 workers of 1 thread; deit_s: 1 worker of 2 threads). Engine: "
            f"vitd bench --batch B --json (3 s, 6 s for deit_s) with 1 thread or all CPUs, GOMP_SPINCOUNT={SPINCOUNT} "
            f"or 0; server/engine is the median over rounds of the server against the best of the four in that "
            f"round. Per CPU-second: the server's images per CPU-second of its whole process (HTTP "
            f"threads included, wrk excluded) over the best engine setting's images per CPU-second of vitd bench, i.e. "
            f"the ratio with the CPU share other work took away divided out. "
            f"Load average during the runs: median {statistics.median(loads):.2f}, "
            f"max {max(loads):.2f} (2 CPUs; above ~2 other work shared the machine).\n")
    text = head + body + note
    print("\n" + text)
    with open(a.out, "w") as f:
        f.write(text)
    print("written to", a.out)


if __name__ == "__main__":
    main()
