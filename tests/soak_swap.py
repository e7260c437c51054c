#!/usr/bin/python3
"""soak_swap.py - hot-swap soak (issue 6; not part of `make test`: it takes minutes).

Starts `vitd serve` on the default model with a temporary store and an admin token, builds
a second version with one admin prune job (a tar of real Fashion-MNIST images), then swaps
the active version back and forth --swaps times (POST .../versions/{v}/activate) while
--clients threads send classify requests without pause. It reports and checks:
  - zero failed or hung requests, every response naming a version that existed;
  - resident memory (VmRSS of the server) after the last swap within 10% of after the first
    (a version that is swapped out must be freed once its last request releases it);
  - swap latency (median, p99) and request latency during the soak.
Exit status 0 when every check holds.

    tests/soak_swap.py [--swaps 200] [--clients 4] [--keep-store]
"""

import argparse
import http.client
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from fashion_proxy import png, proxy_tar  # noqa: E402
from vitd_harness import SERVERS, Server, request  # noqa: E402
TOKEN = "soak-token-0123456789abcdef"
MODEL = "fashion-vit"


def rss_kb(pid):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def call(port, method, path, body=None, headers=None):
    st, _, data = request(port, method, path, body, headers)
    return st, data


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--swaps", type=int, default=200)
    ap.add_argument("--clients", type=int, default=4)
    ap.add_argument("--keep-store", action="store_true")
    a = ap.parse_args()

    tmp = tempfile.mkdtemp(prefix="vitd-soak-")
    try:
        srv = Server("server", ["--admin-port", "0", "--store-dir", os.path.join(tmp, "store"), "--access-log", "false"],
                     tmp, env={"VITD_ADMIN_TOKEN": TOKEN})
        proc = srv.proc
        if proc.poll() is not None or not srv.admin:
            sys.exit(f"soak_swap: server exited:\n{srv.text()}")
        port, aport = srv.port, srv.admin
        auth = {"Authorization": f"Bearer {TOKEN}"}
        body = proxy_tar(10)
        st, data = call(aport, "POST", f"/admin/models/{MODEL}/prune?remove=2&strategy=nose&images=64&gate=0", body,
                        dict(auth, **{"Content-Type": "application/x-tar"}))
        if st != 202:
            sys.exit(f"soak_swap: prune answered {st}: {data!r}")
        job = json.loads(data)["job"]
        for _ in range(600):
            st, data = call(aport, "GET", f"/admin/jobs/{job}", headers=auth)
            j = json.loads(data)
            if j["state"] in ("succeeded", "failed", "cancelled"):
                break
            time.sleep(0.2)
        if j["state"] != "succeeded" or not j.get("activated"):
            sys.exit(f"soak_swap: the prune job did not publish: {j}")
        v_new = j["version"]
        st, data = call(aport, "GET", "/admin/models", headers=auth)
        versions = sorted(v["version"] for m in json.loads(data)["models"] if m["name"] == MODEL for v in m["versions"])
        v_old = [v for v in versions if v != v_new][0]
        print(f"versions {versions}: swapping between {v_old} and {v_new} {a.swaps} times "
              f"under {a.clients} clients")

        stop = threading.Event()
        stats = {"ok": 0, "fail": [], "versions": set(), "lat": []}
        lock = threading.Lock()
        img = png(0)

        def client():
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            while not stop.is_set():
                t0 = time.time()
                try:
                    c.request("POST", f"/v1/models/{MODEL}/classify", body=img, headers={"Content-Type": "image/png"})
                    r = c.getresponse()
                    d = r.read()
                    ok = r.status == 200
                    ver = int(json.loads(d).get("version")) if ok else None
                except Exception as e:  # a hung or dropped request is a failure
                    ok, d, ver = False, repr(e).encode(), None
                    c.close()
                    c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
                with lock:
                    if ok:
                        stats["ok"] += 1
                        stats["versions"].add(ver)
                        stats["lat"].append(time.time() - t0)
                    else:
                        stats["fail"].append(d[:200])

        threads = [threading.Thread(target=client) for _ in range(a.clients)]
        for t in threads:
            t.start()
        time.sleep(2)  # steady load (every thread's buffers allocated) before the first swap
        swap_s, rss = [], {}
        for i in range(a.swaps):
            v = v_old if i % 2 == 0 else v_new
            t0 = time.time()
            st, data = call(aport, "POST", f"/admin/models/{MODEL}/versions/{v}/activate", b"", auth)
            swap_s.append(time.time() - t0)
            if st != 200:
                stop.set()
                sys.exit(f"soak_swap: activate {v} answered {st}: {data!r}")
            if i == 0:
                time.sleep(0.5)
                rss["first"] = rss_kb(proc.pid)
            if (i + 1) % 20 == 0:  # sampled as the first and last: 0.5 s after the swap
                time.sleep(0.5)
                rss.setdefault("series", []).append((i + 1, rss_kb(proc.pid)))
        time.sleep(0.5)
        rss["last"] = rss_kb(proc.pid)
        stop.set()
        for t in threads:
            t.join(60)
        hung = sum(t.is_alive() for t in threads)
        lat = sorted(stats["lat"])
        p = lambda q: 1e3 * lat[min(len(lat) - 1, int(q * len(lat)))] if lat else float("nan")
        growth = (rss["last"] - rss["first"]) / rss["first"]
        print(f"swaps {a.swaps}: activate median {1e3 * statistics.median(swap_s):.1f} ms, "
              f"p99 {1e3 * sorted(swap_s)[int(0.99 * (len(swap_s) - 1))]:.1f} ms")
        print(f"requests: {stats['ok']} answered, {len(stats['fail'])} failed, {hung} clients hung; "
              f"latency p50 {p(0.5):.1f} ms, p99 {p(0.99):.1f} ms; versions seen {sorted(stats['versions'])}")
        print("RSS every 20 swaps (MiB): " + ", ".join(f"{n}: {kb / 1024:.1f}" for n, kb in rss["series"]))
        print(f"RSS after the first swap {rss['first'] / 1024:.1f} MiB, after swap {a.swaps} "
              f"{rss['last'] / 1024:.1f} MiB ({100 * growth:+.1f}%)")
        bad = []
        if stats["fail"]:
            bad.append(f"{len(stats['fail'])} requests failed, e.g. {stats['fail'][:3]}")
        if hung:
            bad.append(f"{hung} clients hung")
        if not stats["versions"] <= set(versions):
            bad.append(f"responses named versions {sorted(stats['versions'])}, stored {versions}")
        if abs(growth) > 0.10:
            bad.append(f"RSS changed by {100 * growth:+.1f}% (limit 10%)")
        print("soak_swap: " + ("FAIL: " + "; ".join(bad) if bad else "all checks passed"))
        sys.exit(1 if bad else 0)
    finally:
        for started in SERVERS:  # the one server, also when it did not start
            if started.proc.poll() is None:
                started.proc.send_signal(signal.SIGTERM)
                try:
                    started.proc.wait(30)
                except subprocess.TimeoutExpired:
                    started.proc.kill()
        if not a.keep_store:
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            print(f"store and log kept in {tmp}")


if __name__ == "__main__":
    main()
