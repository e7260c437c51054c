#!/usr/bin/python3
"""test_admin.py - over-the-wire tests of the admin API (SERVING.md "Admin", issue 6): the
real `vitd serve` on loopback with the default model (models/fashion-vit, 12 blocks, 28x28
grey), a temporary model store, the admin token from the environment (then from a file).

  config     no token: no admin listener and the log says why; --admin-token refused;
             admin and inference on one port refused, naming both keys
  auth       missing, wrong, shorter, longer and non-Bearer tokens: 401 on every admin path,
             before the body is read; nothing changes (store, spool, jobs, versions)
  hostile    not a tar, truncated, traversal, absolute path, symlink, hard link, device,
             huge declared entry size, Content-Length over the limit, wrong media type:
             4xx naming the problem, no file written anywhere, the spool empty, inference fine
  swap       4 client threads classify without pause while a prune job on an uploaded
             Fashion-MNIST proxy tar (10 PNGs per class) runs and publishes version 2, then
             version 1 is activated again (roll back): no request fails or hangs, every
             response names (body and X-Model-Version) a version that existed
  jobs       a second prune while one runs: 409; DELETE cancels (state "cancelled", nothing
             activated, spool folder gone)
  kill -9    during a job; a restart on the same store serves a version that was active
Exits non-zero on the first failure, printing what differed.
"""

import http.client
import io
import json
import os
import socket
import subprocess
import sys
import tarfile
import tempfile
import threading
import time


HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import vitd_harness as harness  # noqa: E402
from fashion_proxy import FASHION, png, proxy_tar  # noqa: E402
from vitd_harness import ROOT, VITD, check, fail, reply_json  # noqa: E402
MODEL = os.path.join(ROOT, "models", "fashion-vit", "model.safetensors")
TMP = tempfile.mkdtemp(prefix="vitd-test-admin-")
STORE = os.path.join(TMP, "store")
SPOOL = os.path.join(STORE, ".spool")
TOKEN = "t0ken-for-the-admin-test-0123456789abcdef"
AUTH = {"Authorization": "Bearer " + TOKEN}


class Server(harness.Server):
    """A `vitd serve` (vitd_harness.Server) on free loopback ports (--port 0 --admin-port 0)
    with the default model in the test's store, its log in TMP, and none of the caller's
    VITD_* variables (the admin token comes only from env)."""

    def __init__(self, name, args=(), env=None, wait_ready=True):
        super().__init__(name, ["--admin-port", "0", "--store-dir", STORE, "--model", "fashion-vit=" + MODEL] + list(args),
                         TMP, env=env, inherit_vitd_env=False, wait_ready=wait_ready)


def request(port, method, path, body=None, headers=None, timeout=30):
    return harness.request(port, method, path, body, headers, timeout)


def admin(srv, method, path, body=None, headers=None, status=None):
    """An authorised admin call; returns (status, JSON)."""
    h = dict(AUTH)
    h.update(headers or {})
    st, hd, data = request(srv.admin, method, path, body, h)
    j = reply_json(method, path, data)
    if status is not None:
        check(st == status, f"{method} {path}: status {st}, expected {status}: {j}")
    return st, j


def upload(srv, tar_bytes, query, status=None, ctype="application/x-tar"):
    return admin(srv, "POST", "/admin/models/fashion-vit/prune?" + query, tar_bytes, {"Content-Type": ctype}, status)


def models(srv):
    return admin(srv, "GET", "/admin/models", status=200)[1]["models"][0]


def wait_job(srv, job, states, timeout=40):
    deadline = time.time() + timeout
    while time.time() < deadline:
        j = admin(srv, "GET", f"/admin/jobs/{job}", status=200)[1]
        if j["state"] in states:
            return j
        time.sleep(0.05)
    fail(f"job {job} did not reach {states} within {timeout} s: {j}")


def files_under(top):
    """Every path under top (the test's whole temporary folder but the logs)."""
    out = set()
    for d, dirs, files in os.walk(top):
        for f in dirs + files:
            p = os.path.join(d, f)
            if not p.endswith(".log"):
                out.add(p)
    return out


def spool_entries():
    return sorted(os.listdir(SPOOL)) if os.path.isdir(SPOOL) else []


# ---- the proxy set: real Fashion-MNIST test images as PNG, class folders named by index --
# (tests/fashion_proxy.py: X, Y, png(i), proxy_tar(per_class, start, fmt))


def data_end(tar_bytes):
    """The offset just past the last entry's data (where the end-of-archive blocks begin)."""
    with tarfile.open(fileobj=io.BytesIO(tar_bytes)) as t:
        last = t.getmembers()[-1]
    return last.offset_data + (last.size + 511) // 512 * 512


def second_header(tar_bytes):
    with tarfile.open(fileobj=io.BytesIO(tar_bytes)) as t:
        return t.getmembers()[1].offset


def flip(b, at):
    return b[:at] + bytes([b[at] ^ 1]) + b[at + 1:]


def tar_of(entries):
    """A tar from (TarInfo fields, data) pairs, written by tarfile (GNU format, so any name)."""
    bio = io.BytesIO()
    with tarfile.open(fileobj=bio, mode="w", format=tarfile.GNU_FORMAT) as t:
        for fields, data in entries:
            ti = tarfile.TarInfo(fields.pop("name"))
            for k, v in fields.items():
                setattr(ti, k, v)
            if data is not None:
                ti.size = len(data)
                t.addfile(ti, io.BytesIO(data))
            else:
                t.addfile(ti)
    return bio.getvalue()


def raw_header(name, size, typeflag=b"0"):
    """One ustar header block with any size (octal, 11 digits) and a valid checksum."""
    h = bytearray(512)
    h[0:len(name)] = name
    h[100:108] = b"0000644\0"
    h[108:116] = b"0000000\0"
    h[116:124] = b"0000000\0"
    h[124:136] = b"%011o\0" % size
    h[136:148] = b"00000000000\0"
    h[156:157] = typeflag
    h[257:265] = b"ustar\x0000"
    h[148:156] = b" " * 8
    h[148:156] = b"%06o\0 " % sum(h)
    return bytes(h)


# ---- the tests -------------------------------------------------------------------------

def test_config():
    t0 = time.time()
    s = Server("notoken")
    check(s.proc.poll() is None and s.port, f"server without a token did not start:\n{s.text()}")
    check(s.admin is None, "admin listener started without a token")
    check("no admin token" in s.text() and "admin listener is not started" in s.text(),
          f"the log does not say why the admin listener is off:\n{s.text()}")
    st, _, _ = request(s.port, "GET", "/admin/models", headers=AUTH)
    check(st == 404, f"/admin/models on the inference port: {st}, expected 404")
    s.stop()

    p = subprocess.run([VITD, "serve", "--admin-token", TOKEN], capture_output=True, text=True, cwd=ROOT)
    check(p.returncode == 2 and "VITD_ADMIN_TOKEN" in p.stderr and "--admin-token" in p.stderr,
          f"--admin-token: exit {p.returncode}, {p.stderr!r}")
    p = subprocess.run([VITD, "serve", "--port", "18555", "--admin-port", "18555"], capture_output=True, text=True,
                       cwd=ROOT)
    check(p.returncode == 2 and "admin_port" in p.stderr and "port (18555)" in p.stderr,
          f"same port: exit {p.returncode}, {p.stderr!r}")
    empty = os.path.join(TMP, "empty-token")
    open(empty, "w").close()
    p = subprocess.run([VITD, "serve", "--admin-token-file", empty, "--store-dir", STORE], capture_output=True,
                       text=True, cwd=ROOT)
    check(p.returncode == 2 and "empty" in p.stderr, f"empty token file: exit {p.returncode}, {p.stderr!r}")
    print(f"ok   config ({time.time() - t0:.1f} s)")


def test_auth(srv, good_tar):
    t0 = time.time()
    before, listing = files_under(TMP), models(srv)
    paths = [("GET", "/admin/models", None), ("POST", "/admin/models/fashion-vit/prune?remove=2", good_tar),
             ("GET", "/admin/jobs/1", None), ("DELETE", "/admin/jobs/1", None),
             ("POST", "/admin/models/fashion-vit/versions/1/activate", None), ("GET", "/admin/nowhere", None),
             ("POST", "/admin/models/nope/prune?remove=2", good_tar)]
    bad = [{}, {"Authorization": "Bearer wrong"}, {"Authorization": "Bearer " + TOKEN[:-1]},
           {"Authorization": "Bearer " + TOKEN + "x"}, {"Authorization": "Basic " + TOKEN},
           {"Authorization": "Bearer "}, {"Authorization": TOKEN}]
    for method, path, body in paths:
        for h in bad:
            hh = dict(h)
            if body is not None:
                hh["Content-Type"] = "application/x-tar"
            st, hd, data = request(srv.admin, method, path, body, hh)
            check(st == 401, f"{method} {path} with {h}: status {st}, expected 401: {data[:200]!r}")
            check("bearer" in hd.get("www-authenticate", "").lower(), f"{method} {path}: 401 without WWW-Authenticate")
            check(json.loads(data).get("error"), f"{method} {path}: 401 without an error message")
    # the 401 comes before the body: headers announcing 100 MB, no body byte sent
    with socket.create_connection(("127.0.0.1", srv.admin), timeout=5) as sk:
        sk.sendall(b"POST /admin/models/fashion-vit/prune?remove=2 HTTP/1.1\r\nHost: x\r\n"
                   b"Content-Type: application/x-tar\r\nContent-Length: 100000000\r\nAuthorization: Bearer no\r\n\r\n")
        reply = sk.recv(4096)
    check(reply.startswith(b"HTTP/1.1 401"), f"401 before the body: got {reply[:80]!r}")
    check(files_under(TMP) == before, f"a refused call changed files: {files_under(TMP) ^ before}")
    check(models(srv) == listing, "a refused call changed the model listing")
    check(admin(srv, "GET", "/admin/jobs/1")[0] == 404, "a refused prune created a job")
    print(f"ok   auth: {len(paths) * len(bad)} refused calls ({time.time() - t0:.1f} s)")


def classify_ok(srv):
    st, hd, data = request(srv.port, "POST", "/v1/models/fashion-vit/classify", png(0), {"Content-Type": "image/png"})
    check(st == 200, f"classify after a hostile upload: {st} {data[:200]!r}")
    return json.loads(data)["version"]


def test_hostile(srv, good_tar):
    t0 = time.time()
    escape = os.path.join(TMP, "escape")
    os.makedirs(escape)
    before, listing = files_under(TMP), models(srv)
    img = png(1)
    with open(os.path.join(HERE, "data", "photos", "butterfly.jpg"), "rb") as f:
        jpeg = f.read()
    cases = [
        ("not a tar (a JPEG)", jpeg, 400, "not a tar"),
        ("not a tar (JSON)", b'{"images": []}', 400, "not a tar"),
        ("truncated mid-entry", good_tar[:len(good_tar) // 2 + 100], 400, None),
        ("truncated before the end blocks", good_tar[:data_end(good_tar)], 400, None),
        ("traversal ../", tar_of([({"name": "../escape/x.png"}, img)]), 400, ".."),
        ("traversal inside", tar_of([({"name": "0/../../escape/y.png"}, img)]), 400, ".."),
        ("absolute path", tar_of([({"name": escape + "/abs.png"}, img)]), 400, "absolute"),
        ("symlink", tar_of([({"name": "0/link.png", "type": tarfile.SYMTYPE, "linkname": escape + "/t.png"}, None),
                            ({"name": "0/link.png"}, img)]), 400, "link"),
        ("hard link", tar_of([({"name": "0/a.png"}, img),
                              ({"name": "0/b.png", "type": tarfile.LNKTYPE, "linkname": "0/a.png"}, None)]), 400, "link"),
        ("character device", tar_of([({"name": "0/dev.png", "type": tarfile.CHRTYPE, "devmajor": 1, "devminor": 3},
                                      None)]), 400, None),
        ("fifo", tar_of([({"name": "0/fifo.png", "type": tarfile.FIFOTYPE}, None)]), 400, None),
        ("huge declared entry", raw_header(b"0/big.png", 8 * 2**30 - 1) + img, 413, None),
        ("bad checksum (second header)", flip(good_tar, second_header(good_tar) + 5), 400, "checksum"),
        ("no image at all", tar_of([({"name": "0/readme.txt"}, b"hello")]), 400, None),
    ]
    for what, body, status, needle in cases:
        st, j = upload(srv, body, "remove=2&images=64&gate=0")
        check(st == status, f"hostile archive '{what}': status {st}, expected {status}: {j}")
        if os.environ.get("VERBOSE"):
            print(f"     {what}: {st} {j.get('error')}")
        check(isinstance(j.get("error"), str) and j["error"], f"hostile archive '{what}': no error message")
        if needle:
            check(needle in j["error"], f"hostile archive '{what}': error {j['error']!r} does not mention {needle!r}")
        check(spool_entries() == [], f"hostile archive '{what}': spool not emptied: {spool_entries()}")
        check(files_under(TMP) == before, f"hostile archive '{what}': files changed: {files_under(TMP) ^ before}")
        classify_ok(srv)
    # refused before the body: over the archive limit, the wrong media type, bad parameters
    with socket.create_connection(("127.0.0.1", srv.admin), timeout=5) as sk:
        sk.sendall(b"POST /admin/models/fashion-vit/prune?remove=2 HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-tar"
                   b"\r\nContent-Length: 4294967296\r\nAuthorization: Bearer " + TOKEN.encode() + b"\r\n\r\n")
        reply = sk.recv(4096)
    check(reply.startswith(b"HTTP/1.1 413"), f"Content-Length over the archive limit: {reply[:80]!r}")
    for query, ctype, status in [("remove=2", "image/png", 415), ("remove=2", "multipart/form-data; boundary=x", 415),
                                 ("", "application/x-tar", 400), ("remove=0", "application/x-tar", 400),
                                 ("remove=13", "application/x-tar", 400), ("remove=2&strategy=best", "application/x-tar", 400),
                                 ("remove=2&gate=1.5", "application/x-tar", 400), ("remove=2&bogus=1", "application/x-tar", 400),
                                 ("remove=2&images=-1", "application/x-tar", 400)]:
        st, j = upload(srv, good_tar, query, ctype=ctype)
        check(st == status, f"prune?{query} ({ctype}): {st}, expected {status}: {j}")
    st, j = admin(srv, "POST", "/admin/models/nope/prune?remove=2", good_tar, {"Content-Type": "application/x-tar"})
    check(st == 404 and "nope" in j["error"], f"prune of an unknown model: {st} {j}")
    check(admin(srv, "GET", "/admin/jobs/999")[0] == 404, "unknown job is not 404")
    check(admin(srv, "GET", "/admin/jobs/x")[0] == 404, "malformed job id is not 404")
    check(admin(srv, "DELETE", "/admin/jobs/999")[0] == 404, "cancel of an unknown job is not 404")
    check(admin(srv, "POST", "/admin/models/fashion-vit/versions/99/activate")[0] == 404, "unknown version is not 404")
    check(admin(srv, "POST", "/admin/models/nope/versions/1/activate")[0] == 404, "unknown model is not 404")
    st, hd, _ = request(srv.admin, "PUT", "/admin/models", None, AUTH)
    check(st == 405 and "GET" in hd.get("allow", ""), f"PUT /admin/models: {st} {hd}")
    check(admin(srv, "GET", "/admin/jobs/1")[0] == 404, "a refused upload created a job")
    check(files_under(TMP) == before, f"refused calls changed files: {files_under(TMP) ^ before}")
    check(models(srv) == listing, "refused calls changed the model listing")
    print(f"ok   hostile archives: {len(cases)} refused, nothing written, serving unaffected ({time.time() - t0:.1f} s)")


class Clients:
    """n threads classifying without pause; every outcome recorded."""

    def __init__(self, srv, n=4):
        self.srv, self.stop_flag, self.lock = srv, threading.Event(), threading.Lock()
        self.results, self.errors = [], []
        self.body = png(0)
        self.threads = [threading.Thread(target=self.run, daemon=True) for _ in range(n)]
        for t in self.threads:
            t.start()

    def run(self):
        while not self.stop_flag.is_set():
            t = time.time()
            try:
                st, hd, data = request(self.srv.port, "POST", "/v1/models/fashion-vit/classify", self.body,
                                       {"Content-Type": "image/png"}, timeout=10)
                j = json.loads(data) if st == 200 else None
                with self.lock:
                    self.results.append((st, j and j["version"], hd.get("x-model-version"), time.time() - t, time.time()))
            except Exception as e:  # a hang (timeout) or a dropped connection
                with self.lock:
                    self.errors.append(f"{type(e).__name__}: {e}")

    def versions_since(self, t):
        with self.lock:
            return {r[1] for r in self.results if r[4] > t and r[0] == 200}

    def wait_version(self, v, since, timeout=10):
        deadline = time.time() + timeout
        while time.time() < deadline:
            if v in self.versions_since(since):
                return
            time.sleep(0.02)
        fail(f"no classify reply from version {v} within {timeout} s after the swap")

    def stop(self):
        self.stop_flag.set()
        for t in self.threads:
            t.join(30)
        check(not any(t.is_alive() for t in self.threads), "a client thread hung")


def test_swap(srv, good_tar):
    t0 = time.time()
    cl = Clients(srv)
    while len(cl.results) < 20 and time.time() - t0 < 10:
        time.sleep(0.01)
    st, j = upload(srv, good_tar, "remove=2&images=64&gate=0&seed=1&strategy=nose", status=202)
    job = j["job"]
    check(j.get("images") == 100 and j.get("classes") == 10, f"upload stats: {j}")
    j = wait_job(srv, job, ("succeeded", "failed", "cancelled"))
    removed = j["removed_blocks"]
    check(j["state"] == "succeeded", f"prune job: {j.get('state')}: {j.get('error')}")
    check(j["activated"] is True and j["version"] == 2 and j["parent_version"] == 1, f"prune job result: {j}")
    check(len(j["removed_blocks"]) == 2 and len(j["steps"]) == 2 and j["progress"] == 1, f"prune job report: {j}")
    check(j["check"]["images"] >= 1 and 0 <= j["check"]["agreement"] <= 1, f"prune job check: {j['check']}")
    # 4 clients kept the workers busy: the job paused to stay within job_cpu_share (0.2)
    check(j.get("paused_seconds", 0) > 0, f"the job never paused for inference: {j.get('paused_seconds')}")
    m = models(srv)
    check(m["active"] == 2 and m["serving"] == 2, f"after the job: active {m['active']}, serving {m['serving']}")
    v2 = [v for v in m["versions"] if v["version"] == 2]
    check(v2 and v2[0]["active"] and v2[0]["parent"] == 1 and v2[0]["origin"] == "prune", f"version 2 listing: {v2}")
    check(v2[0]["removed_blocks"] == sorted(j["removed_blocks"]), f"listed removed blocks {v2[0]['removed_blocks']} "
          f"!= the job's {j['removed_blocks']}")
    check(v2[0]["bytes"] < [v for v in m["versions"] if v["version"] == 1][0]["bytes"], "version 2 is not smaller")
    check(v2[0].get("check", {}).get("agreement") == j["check"]["agreement"], f"gate results not listed: {v2[0]}")
    t_swap = time.time()
    cl.wait_version("2", t_swap)
    check(spool_entries() == [], f"spool not emptied after the job: {spool_entries()}")
    # roll back
    t_back = time.time()
    st, j = admin(srv, "POST", "/admin/models/fashion-vit/versions/1/activate", status=200)
    m = models(srv)
    check(m["active"] == 1 and m["serving"] == 1, f"after the roll back: active {m['active']}, serving {m['serving']}")
    cl.wait_version("1", time.time())
    time.sleep(0.3)
    cl.stop()
    existed = {str(v["version"]) for v in m["versions"]}
    res = cl.results
    bad = [r for r in res if r[0] != 200]
    check(not cl.errors, f"{len(cl.errors)} requests failed or hung: {cl.errors[:5]}")
    check(not bad, f"{len(bad)} of {len(res)} requests failed: {bad[:5]}")
    check(all(r[1] in existed for r in res), f"a reply named a version that never existed: {set(r[1] for r in res)}")
    check(all(r[1] == r[2] for r in res), "X-Model-Version differs from the version in the body")
    check({r[1] for r in res} == {"1", "2"}, f"versions served: {set(r[1] for r in res)}")
    check(not [r for r in res if r[4] > t_back + 1 and r[1] != "1"], "version 2 still served 1 s after the roll back")
    slowest = max(r[3] for r in res)
    # the OIP reply names the version too, in the body and the header
    body = json.dumps({"inputs": [{"name": "input", "datatype": "BYTES", "shape": [1],
                                   "data": [__import__("base64").b64encode(png(2)).decode()]}]})
    st, hd, data = request(srv.port, "POST", "/v2/models/fashion-vit/infer", body, {"Content-Type": "application/json"})
    check(st == 200 and json.loads(data)["model_version"] == "1" == hd.get("x-model-version"),
          f"v2 infer version: {st} {hd.get('x-model-version')} {data[:120]!r}")
    print(f"ok   swap under load: {len(res)} classify requests from 4 clients, 0 failed, versions {sorted({r[1] for r in res})},"
          f" slowest {slowest * 1e3:.0f} ms; prune -> version 2 (blocks {removed} removed) -> roll back to 1 ({time.time() - t0:.1f} s)")


def test_conflict_cancel(srv, good_tar, big_tar):
    t0 = time.time()
    # sent chunked (no Content-Length) in odd-sized pieces: streamed into the spool all the same
    pieces = (big_tar[i:i + 7001] for i in range(0, len(big_tar), 7001))
    c = http.client.HTTPConnection("127.0.0.1", srv.admin, timeout=30)
    c.request("POST", "/admin/models/fashion-vit/prune?remove=4&gate=0&seed=2", body=pieces,
              headers=dict(AUTH, **{"Content-Type": "application/x-tar"}), encode_chunked=True)
    r = c.getresponse()
    j = json.loads(r.read())
    c.close()
    check(r.status == 202 and j.get("images") == 600, f"chunked upload: {r.status} {j}")
    job = j["job"]
    st, j = upload(srv, good_tar, "remove=2&images=64&gate=0")
    check(st == 409, f"a second prune while one runs: {st}, expected 409: {j}")
    check(admin(srv, "GET", f"/admin/jobs/{job}")[1]["state"] in ("queued", "running"), "the long job ended too soon")
    st, j = admin(srv, "DELETE", f"/admin/jobs/{job}", status=200)
    j = wait_job(srv, job, ("succeeded", "failed", "cancelled"), timeout=20)
    check(j["state"] == "cancelled", f"cancelled job ended {j['state']}")
    m = models(srv)
    check(m["active"] == 1 and m["serving"] == 1 and len(m["versions"]) == 2, f"a cancelled job changed the store: {m}")
    deadline = time.time() + 5
    while spool_entries() and time.time() < deadline:
        time.sleep(0.05)
    check(spool_entries() == [], f"the cancelled job's spool folder is left: {spool_entries()}")
    classify_ok(srv)
    print(f"ok   409 while a job runs, DELETE cancels ({time.time() - t0:.1f} s)")


def test_kill9(srv, big_tar):
    t0 = time.time()
    was_active = {1, 2}  # every version that has been active in this store
    st, j = upload(srv, big_tar, "remove=4&gate=0&seed=3", status=202)
    job = j["job"]
    deadline = time.time() + 10
    while time.time() < deadline:
        j = admin(srv, "GET", f"/admin/jobs/{job}", status=200)[1]
        if j["state"] != "queued" and j["steps"]:
            break
        time.sleep(0.02)
    check(j["state"] == "running", f"job to kill is {j['state']}")
    srv.proc.kill()
    srv.proc.wait()
    token_file = os.path.join(TMP, "token")
    with open(token_file, "w") as f:
        f.write(TOKEN + "\n")
    os.chmod(token_file, 0o600)
    s2 = Server("restart", env={"VITD_ADMIN_TOKEN_FILE": token_file})
    check(s2.proc.poll() is None and s2.admin, f"restart after kill -9 failed:\n{s2.text()}")
    m = models(s2)
    check(m["active"] in was_active and m["serving"] == m["active"], f"after kill -9: active {m['active']}, "
          f"serving {m['serving']}, expected one of {was_active}")
    v = classify_ok(s2)
    check(v == str(m["active"]), f"after kill -9 classify served version {v}, active {m['active']}")
    check(spool_entries() == [], f"spool leftovers after the restart: {spool_entries()}")
    left = [f for f in os.listdir(os.path.join(STORE, "fashion-vit")) if f.startswith(".tmp")]
    check(not left, f"store leftovers after the restart: {left}")
    check(admin(s2, "GET", f"/admin/jobs/{job}")[0] == 404, "the killed job is known to the new process")
    # kill -9 in the middle of an upload: the next start removes the half-written spool folder
    with socket.create_connection(("127.0.0.1", s2.admin), timeout=5) as sk:
        sk.sendall(b"POST /admin/models/fashion-vit/prune?remove=2 HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-tar"
                   b"\r\nContent-Length: %d\r\nAuthorization: Bearer %s\r\n\r\n" % (len(big_tar), TOKEN.encode()))
        sk.sendall(big_tar[:len(big_tar) // 2])
        deadline = time.time() + 5
        while time.time() < deadline and not any(os.listdir(os.path.join(SPOOL, d)) for d in spool_entries()):
            time.sleep(0.02)
        check(spool_entries(), "the half upload did not reach the spool")
        s2.proc.kill()
        s2.proc.wait()
    s3 = Server("restart2", env={"VITD_ADMIN_TOKEN": TOKEN})
    check(s3.proc.poll() is None and s3.admin, f"restart after kill -9 mid-upload failed:\n{s3.text()}")
    check(spool_entries() == [], f"spool leftovers after the second restart: {spool_entries()}")
    check("left in" in s3.text(), "the restart does not log the upload folder it removed")
    check(models(s3)["active"] == m["active"] and classify_ok(s3) == str(m["active"]), "second restart serves another version")
    rc = s3.stop()
    check(rc == 0 and "stopped" in s3.text(), f"SIGTERM with both listeners: exit {rc}\n{s3.text()[-2000:]}")
    print(f"ok   kill -9 during a job: restart serves version {m['active']} ({time.time() - t0:.1f} s)")


def main():
    t_all = time.time()
    if not os.path.exists(MODEL) or not os.path.exists(FASHION):
        fail(f"needs {MODEL} and {FASHION}")
    try:
        good_tar = proxy_tar(10)
        big_tar = proxy_tar(60, start=2000, fmt=tarfile.PAX_FORMAT)
        test_config()
        srv = Server("main", env={"VITD_ADMIN_TOKEN": TOKEN})
        check(srv.proc.poll() is None and srv.admin and srv.admin != srv.port, f"server did not start:\n{srv.text()}")
        check(TOKEN not in srv.text(), "the token appears in the log")
        test_auth(srv, good_tar)
        test_hostile(srv, good_tar)
        test_swap(srv, good_tar)
        test_conflict_cancel(srv, good_tar, big_tar)
        test_kill9(srv, big_tar)
        print(f"test_admin: {harness.checks} checks passed in {time.time() - t_all:.1f} s")
    finally:
        harness.cleanup(TMP)


if __name__ == "__main__":
    main()
