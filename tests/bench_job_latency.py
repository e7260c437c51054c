#!/usr/bin/python3
"""bench_job_latency.py - what an admin prune job costs the requests served meanwhile
(issue 6: "inference keeps its latency within a stated factor while a job runs").

For each model (bench_server.py's: the default model, and a DeiT-S-shaped one), one server
with an admin token, then per round and per concurrency (1 and 4): wrk against
POST /v1/models/M/classify for T seconds with no job, then the same while a NOSE prune job
runs on an uploaded Fashion-MNIST proxy tar (big enough that the job outlives the window;
it is cancelled afterwards and its state checked to have been "running" throughout).
The table gives medians over rounds of p50, p99 and images/s, and the factors
(with job / without). The job runs at the server's defaults: job_threads 1, job_nice 19.

    tests/bench_job_latency.py [--rounds 3] [--seconds 8] [--models fashion,deit_s] [--out FILE]
"""

import argparse
import http.client
import json
import os
import re
import statistics
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import bench_server as bs  # noqa: E402
from fashion_proxy import png, proxy_tar  # noqa: E402

TOKEN = "bench-job-latency-token-0123456789"
AUTH = {"Authorization": "Bearer " + TOKEN}


def admin(port, method, path, body=None, headers=None):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    c.request(method, path, body=body, headers=dict(AUTH, **(headers or {})))
    r = c.getresponse()
    data = r.read()
    c.close()
    return r.status, (json.loads(data) if data else None)


def job_state(port, job):
    return admin(port, "GET", f"/admin/jobs/{job}")[1]["state"]


def start_job(srv, name, tar, query):
    st, j = admin(srv.admin_port, "POST", f"/admin/models/{name}/prune?{query}", tar, {"Content-Type": "application/x-tar"})
    if st != 202:
        raise SystemExit(f"prune answered {st}: {j}")
    job = j["job"]
    for _ in range(1200):
        s = job_state(srv.admin_port, job)
        if s == "running":
            return job
        if s in ("succeeded", "failed", "cancelled"):
            raise SystemExit(f"job {job} ended ({s}) before the measurement: make the proxy set larger")
        time.sleep(0.05)
    raise SystemExit(f"job {job} did not start")


def cancel(srv, job):
    admin(srv.admin_port, "DELETE", f"/admin/jobs/{job}")
    for _ in range(1200):
        if job_state(srv.admin_port, job) in ("succeeded", "failed", "cancelled"):
            return
        time.sleep(0.05)
    raise SystemExit(f"job {job} did not stop after DELETE")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=8)
    ap.add_argument("--models", default="fashion,deit_s")
    ap.add_argument("--out", default=os.path.join(bs.OUT, "job-latency.md"))
    a = ap.parse_args()
    os.makedirs(bs.OUT, exist_ok=True)
    lua = os.path.join(bs.OUT, "post.lua")
    open(lua, "w").write(bs.WRK_LUA)
    names = a.models.split(",")
    models = bs.make_models(names)
    body = os.path.join(bs.OUT, "fashion-test0.png")
    open(body, "wb").write(png(0))
    # fashion: 5,000 images and 6 blocks keep a one-thread NOSE job busy for minutes; the
    # DeiT-S shape costs ~400x more per image, so 40 images do
    jobs = {"fashion": (proxy_tar(500), "remove=6&strategy=nose&gate=0"),
            "deit_s": (proxy_tar(4), "remove=2&strategy=nose&gate=0")}
    rows = []
    for name in names:
        slow = name != "fashion"
        secs = a.seconds * (2.5 if slow else 1)
        srv = bs.Server(name, models[name], os.path.join(bs.OUT, f"{name}-job.log"), extra=["--admin-port", "0"],
                        env={"VITD_ADMIN_TOKEN": TOKEN})
        try:
            for _ in range(200):  # the admin listener starts just after "ready"
                m = re.search(r"admin listening on [0-9.]+:(\d+)", open(os.path.join(bs.OUT, f"{name}-job.log")).read())
                if m:
                    srv.admin_port = int(m.group(1))
                    break
                time.sleep(0.05)
            bs.wrk(srv.port, name, body, "image/png", 4, 2, lua)  # warm-up
            res = {c: {k: [] for k in ("p50", "p99", "ips", "p50j", "p99j", "ipsj")} for c in (1, 4)}
            for rnd in range(a.rounds):
                for conns in (1, 4):
                    r = res[conns]
                    w = bs.wrk(srv.port, name, body, "image/png", conns, secs, lua)
                    job = start_job(srv, name, *jobs[name])
                    wj = bs.wrk(srv.port, name, body, "image/png", conns, secs, lua)
                    still = job_state(srv.admin_port, job)
                    cancel(srv, job)
                    if still != "running":
                        raise SystemExit(f"the job was {still} before the window ended: make the proxy set larger")
                    if w["errors"] + w["non2xx"] + wj["errors"] + wj["non2xx"]:
                        raise SystemExit(f"failed requests: {w} {wj}")
                    for k, src in (("p50", w["p50_us"] / 1e3), ("p99", w["p99_us"] / 1e3), ("ips", w["ips"]),
                                   ("p50j", wj["p50_us"] / 1e3), ("p99j", wj["p99_us"] / 1e3), ("ipsj", wj["ips"])):
                        r[k].append(src)
                    print(f"  round {rnd + 1} {name} c={conns}: no job p50 {r['p50'][-1]:.2f} ms p99 {r['p99'][-1]:.2f} ms "
                          f"{r['ips'][-1]:.1f} img/s; job running p50 {r['p50j'][-1]:.2f} ms p99 {r['p99j'][-1]:.2f} ms "
                          f"{r['ipsj'][-1]:.1f} img/s", flush=True)
        finally:
            srv.stop()
        med = statistics.median
        for conns in (1, 4):
            r = res[conns]
            rows.append((name, conns, med(r["p50"]), med(r["p50j"]), med([j / b for j, b in zip(r["p50j"], r["p50"])]),
                         med(r["p99"]), med(r["p99j"]), med([j / b for j, b in zip(r["p99j"], r["p99"])]),
                         med(r["ips"]), med(r["ipsj"]), med([j / b for j, b in zip(r["ipsj"], r["ips"])])))
    out = ["| model | conc. | p50 ms, no job | p50 ms, job | factor | p99 ms, no job | p99 ms, job | factor | "
           "img/s, no job | img/s, job | factor |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    out += [f"| {n} | {c} | {a1:.2f} | {b1:.2f} | {f1:.2f} | {a2:.2f} | {b2:.2f} | {f2:.2f} | {a3:.1f} | {b3:.1f} | {f3:.2f} |"
            for n, c, a1, b1, f1, a2, b2, f2, a3, b3, f3 in rows]
    out.append(f"\n{a.rounds} rounds of {a.seconds:g} s windows ({2.5 * a.seconds:g} s for deit_s), wrk -t1 closed loop, "
               f"one 28x28 Fashion-MNIST PNG per request; job: NOSE prune on an uploaded proxy tar at the server defaults (job_threads 1, job_nice 19, SCHED_IDLE, job_cpu_share 0.2), "
               f"factors are medians of per-round ratios (job / no job).")
    open(a.out, "w").write("\n".join(out) + "\n")
    print("\n".join(out))
    print(f"written to {a.out}")


if __name__ == "__main__":
    main()
