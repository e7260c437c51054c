#!/usr/bin/python3
"""test_server.py - over-the-wire tests of `vitd serve` (SERVING.md): the real server on a
loopback port, spoken to with http.client and raw sockets.

Servers started here (each killed at the end, whatever happens):
  main   three committed golden models at once (tests/data/golden): every endpoint, every
         inference status code, FP32 infer == `vitd logits`, BYTES infer == classify ==
         `vitd classify`, multipart, concurrency, hostile input, request ids, the JSON log;
  slow   a DeiT-T-shaped random model (tests/torch_vit.py) with a tiny queue: 503 +
         Retry-After when the queue is full, health answered fast meanwhile, SIGTERM drain;
  short-lived ones for the deadline, configuration precedence and start-up errors.
Exits non-zero on the first failure, printing what differed.
"""

import base64
import concurrent.futures as cf
import http.client
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import vitd_harness as harness  # noqa: E402
from vitd_harness import ROOT, VITD, check, fail, reply_json  # noqa: E402

GOLDEN = os.path.join(HERE, "data", "golden")
PHOTOS = [os.path.join(HERE, "data", "photos", f + ".jpg") for f in ("butterfly", "fruits", "orange", "squirrel_cls")]
TMP = tempfile.mkdtemp(prefix="vitd-test-server-")
# the model store (store_dir): never the repository's store/; each Server gets its own below
os.environ["VITD_STORE_DIR"] = os.path.join(TMP, "store")


class Server(harness.Server):
    """A `vitd serve` process (vitd_harness.Server) with its log in TMP and, unless args name
    one, a fresh store per server name, so that its models are version 1."""

    def __init__(self, name, args, env=None, cwd=ROOT, wait_ready=True):
        if "--store-dir" not in args:
            args = args + ["--store-dir", os.path.join(TMP, "store-" + name)]
        super().__init__(name, args, TMP, env=env, cwd=cwd, wait_ready=wait_ready)


def request(srv, method, path, body=None, headers=None, timeout=60):
    return harness.request(srv.port, method, path, body, headers, timeout)


def jreq(srv, method, path, obj=None, headers=None, raw=None):
    h = {"Content-Type": "application/json"}
    h.update(headers or {})
    body = raw if raw is not None else (json.dumps(obj).encode() if obj is not None else None)
    st, hd, data = request(srv, method, path, body, h)
    return st, hd, reply_json(method, path, data) if data else None


def expect_error(srv, method, path, status, body=None, headers=None, contains=None):
    st, hd, data = request(srv, method, path, body, headers)
    check(st == status, f"{method} {path}: status {st}, expected {status}: {data[:300]!r}")
    try:
        j = json.loads(data)
    except ValueError:
        fail(f"{method} {path}: error body is not JSON: {data[:200]!r}")
    check(isinstance(j, dict) and isinstance(j.get("error"), str) and j["error"], f"{method} {path}: no error message: {j}")
    check(hd.get("content-type") == "application/json", f"{method} {path}: error content type {hd.get('content-type')}")
    if status == 503:
        check(hd.get("retry-after", "").isdigit(), f"{method} {path}: 503 without Retry-After")
    if contains:
        check(contains in j["error"], f"{method} {path}: error {j['error']!r} does not mention {contains!r}")
    return j["error"]


def raw_exchange(srv, payload, read_timeout=5.0, pause=None, close_write=False):
    """Sends bytes (a list of chunks, with `pause` seconds between them) and returns what
    came back before the server closed or read_timeout passed."""
    s = socket.create_connection(("127.0.0.1", srv.port), timeout=read_timeout)
    out = b""
    try:
        for i, chunk in enumerate(payload if isinstance(payload, list) else [payload]):
            if i and pause:
                time.sleep(pause)
            try:
                s.sendall(chunk)
            except OSError:
                break
        if close_write:
            try:
                s.shutdown(socket.SHUT_WR)
            except OSError:
                pass
        while True:
            try:
                b = s.recv(65536)
            except (socket.timeout, OSError):
                break
            if not b:
                break
            out += b
    finally:
        s.close()
    return out


def alive(srv):
    st, _, j = jreq(srv, "GET", "/v2/health/live")
    check(st == 200 and j == {"live": True}, f"server not live afterwards: {st} {j}")
    st, _, _ = request(srv, "POST", "/v1/models/g/classify", open(PHOTOS[0], "rb").read(), {"Content-Type": "image/jpeg"})
    check(st == 200, f"a valid classify failed afterwards: {st}")


def multipart(files, boundary="vitdTestBoundary7MA4YWxk"):
    parts = []
    for name, data, ctype in files:
        parts.append(f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{name}\"\r\n"
                     f"Content-Type: {ctype}\r\n\r\n".encode() + data + b"\r\n")
    body = b"".join(parts) + f"--{boundary}--\r\n".encode()
    return body, {"Content-Type": f"multipart/form-data; boundary={boundary}"}


def infer_body(arr, datatype="FP32", outputs=None, id_=None, nested=False):
    if datatype == "FP32":
        data = arr.tolist() if nested else [float(v) for v in arr.ravel()]
        shape = list(arr.shape)
    else:
        data = [base64.b64encode(b).decode() for b in arr]
        shape = [len(arr)]
    j = {"inputs": [{"name": "input", "shape": shape, "datatype": datatype, "data": data}]}
    if outputs is not None:
        j["outputs"] = outputs
    if id_ is not None:
        j["id"] = id_
    return j


def run(args):
    r = subprocess.run([VITD] + args, capture_output=True, text=True)
    if r.returncode:
        fail(f"vitd {' '.join(args)}: {r.stderr}")
    return r.stdout


# ---------------------------------------------------------------------------------------------
def test_endpoints(s):
    st, hd, j = jreq(s, "GET", "/v2")
    check(st == 200 and j["name"] == "vitd" and "version" in j and isinstance(j["extensions"], list), f"/v2: {st} {j}")
    for p in ("/v2/health/live", "/v2/health/ready"):
        st, _, j = jreq(s, "GET", p)
        check(st == 200, f"{p}: {st}")
    st, _, _ = request(s, "HEAD", "/v2/health/live")
    check(st == 200, f"HEAD live: {st}")
    for m, shape, k in (("g", [-1, 3, 32, 32], 10), ("gray", [-1, 1, 28, 28], 10), ("dist", [-1, 3, 32, 32], 10)):
        for p in (f"/v2/models/{m}", f"/v2/models/{m}/versions/1"):
            st, _, j = jreq(s, "GET", p)
            check(st == 200 and j["name"] == m and j["versions"] == ["1"] and j["platform"], f"{p}: {st} {j}")
            check(j["inputs"][0] == {"name": "input", "datatype": "FP32", "shape": shape, "parameters": {"datatypes": ["FP32", "BYTES"]}},
                  f"{p}: inputs {j['inputs']}")
            check(j["outputs"] == [{"name": "logits", "datatype": "FP32", "shape": [-1, k]}], f"{p}: outputs {j['outputs']}")
        for p in (f"/v2/models/{m}/ready", f"/v2/models/{m}/versions/1/ready"):
            st, _, j = jreq(s, "GET", p)
            check(st == 200 and j["ready"] is True, f"{p}: {st} {j}")
    st, _, j = jreq(s, "GET", "/v2/models/dist")
    check(j["parameters"]["removed_blocks"] == [1] and j["parameters"]["distilled"] is True, f"dist metadata: {j}")
    expect_error(s, "GET", "/v2/models/nosuch", 404, contains="nosuch")
    expect_error(s, "GET", "/v2/models/nosuch/ready", 404)
    expect_error(s, "GET", "/v2/models/g/versions/2", 404)
    expect_error(s, "GET", "/v2/models/g/versions/2/ready", 404)
    expect_error(s, "GET", "/v2/models/g/versions/abc", 400)
    expect_error(s, "GET", "/v2/models/g/versions/-1", 400)
    expect_error(s, "GET", "/v2/models/bad.name", 400)
    expect_error(s, "GET", "/v2/models/..%2F..%2Fetc", 404)  # decoded to more segments: no route
    expect_error(s, "GET", "/v2/nothing/here", 404)
    expect_error(s, "GET", "/", 404)
    e = expect_error(s, "DELETE", "/v2", 405)
    st, hd, _ = request(s, "DELETE", "/v2")
    check("GET" in hd.get("allow", ""), f"405 without Allow: {hd}")
    expect_error(s, "GET", "/v2/models/g/infer", 405)
    expect_error(s, "GET", "/v1/models/g/classify", 405)
    expect_error(s, "POST", "/v2/health/ready", 405)
    expect_error(s, "PUT", "/metrics", 405)
    st, hd, data = request(s, "GET", "/metrics")
    text = data.decode()
    check(st == 200 and hd["content-type"].startswith("text/plain"), f"/metrics: {st} {hd}")
    for series in ("vitd_requests_total{", "vitd_request_duration_seconds_bucket{", "vitd_decode_seconds_bucket",
                   "vitd_queue_wait_seconds_bucket{", "vitd_inference_seconds_bucket{", "vitd_batch_size_bucket{",
                   "vitd_queue_depth{", "vitd_inflight_requests", "vitd_model_active_version{model=\"g\"} 1",
                   "vitd_model_swaps_total{", "vitd_model_ready{model=\"g\"} 1", "process_resident_memory_bytes",
                   'vitd_requests_total{endpoint="model_metadata",code="200"}'):
        check(series in text, f"/metrics lacks {series}")
    for line in text.splitlines():
        check(line.startswith("#") or len(line.split(" ")) == 2, f"/metrics: bad line {line!r}")


def test_fp32_equals_cli(s):
    """FP32 infer returns exactly what `vitd logits` computes (same input, same batch sizes)."""
    for m, f in (("g", "vit_s32_d64"), ("gray", "vit_c1_s28_p7_d48"), ("dist", "deit_s32_d32_dist_rm1")):
        x = np.load(os.path.join(GOLDEN, f + ".input.npy"))
        # 5 images: more than max_batch_size (4), so the worker splits the request in two batches
        x5 = np.concatenate([x, x * 0.5, x[:1] * -1.0]).astype(np.float32)
        xp = os.path.join(TMP, f"{m}.x.npy")
        yp = os.path.join(TMP, f"{m}.y.npy")
        for arr, nested in ((x, False), (x5, True)):
            np.save(xp, arr)
            # one CPU, so one OpenMP thread, as the server runs models this small (threads auto):
            # oneDNN's results differ in the last bits between team sizes
            cpu = str(min(os.sched_getaffinity(0)))
            r = subprocess.run(["taskset", "-c", cpu, VITD, "logits", "--model", os.path.join(GOLDEN, f + ".safetensors"),
                                "--input", xp, "--output", yp, "--batch", "4"], capture_output=True, text=True)
            check(r.returncode == 0, f"vitd logits: {r.stderr}")
            want = np.load(yp)
            st, _, j = jreq(s, "POST", f"/v2/models/{m}/infer", infer_body(arr, nested=nested, id_="req-7"))
            check(st == 200, f"{m} infer: {st} {j}")
            check(j["id"] == "req-7" and j["model_name"] == m and j["model_version"] == "1", f"{m} infer header fields: {j}")
            o = j["outputs"][0]
            check(o["name"] == "logits" and o["datatype"] == "FP32" and o["shape"] == list(want.shape), f"{m}: output {o['shape']}")
            got = np.array(o["data"], dtype=np.float32).reshape(want.shape)
            diff = float(np.abs(got - want).max())
            print(f"  FP32 infer {m} N={len(arr)}: max |server - vitd logits| = {diff:g}")
            check(np.array_equal(got, want), f"{m}: server logits differ from vitd logits by {diff}")
    # the versioned path serves the same version
    x = np.load(os.path.join(GOLDEN, "vit_s32_d64.input.npy"))
    st, _, j = jreq(s, "POST", "/v2/models/g/versions/1/infer", infer_body(x))
    check(st == 200 and j["model_version"] == "1", f"versioned infer: {st}")
    expect_error(s, "POST", "/v2/models/g/versions/9/infer", 404, json.dumps(infer_body(x)).encode())


def classify_cli(model, images, k):
    out = json.loads(run(["classify", "--model", model, "--top-k", str(k), "--json"] + images))
    return [[(p["index"], p["label"], p["score"]) for p in e["predictions"]] for e in out]


def test_bytes_and_classify(s):
    imgs = [open(p, "rb").read() for p in PHOTOS[:3]]
    k = 3
    # multipart with several images
    body, h = multipart([(os.path.basename(p), d, "image/jpeg") for p, d in zip(PHOTOS, imgs)])
    st, _, j = jreq(s, "POST", f"/v1/models/g/classify?top_k={k}", headers=h, raw=body)
    check(st == 200 and j["model"] == "g" and j["version"] == "1" and len(j["predictions"]) == 3, f"multipart: {st} {j}")
    mp = [[(p["index"], p["label"], p["score"]) for p in row] for row in j["predictions"]]
    for row in mp:
        check(len(row) == k and all(row[i][2] >= row[i + 1][2] for i in range(k - 1)), f"not best first: {row}")
    # each image alone, raw body
    for i, d in enumerate(imgs):
        st, _, j1 = jreq(s, "POST", f"/v1/models/g/classify?top_k={k}", headers={"Content-Type": "image/jpeg"}, raw=d)
        one = [(p["index"], p["label"], p["score"]) for p in j1["predictions"][0]]
        check(st == 200 and [x[:2] for x in one] == [x[:2] for x in mp[i]], f"single vs multipart image {i}: {one} {mp[i]}")
        check(all(abs(a[2] - b[2]) < 1e-6 for a, b in zip(one, mp[i])), f"scores single vs multipart: {one} {mp[i]}")
    # the command line agrees
    cli = classify_cli(os.path.join(GOLDEN, "vit_s32_d64.safetensors"), PHOTOS[:3], k)
    for i in range(3):
        check([x[:2] for x in cli[i]] == [x[:2] for x in mp[i]], f"vitd classify vs server image {i}: {cli[i]} {mp[i]}")
        check(all(abs(a[2] - b[2]) < 2e-6 for a, b in zip(cli[i], mp[i])), f"scores vitd classify vs server: {cli[i]} {mp[i]}")
    # BYTES infer with the classification extension == classify
    st, _, j = jreq(s, "POST", "/v2/models/g/infer", infer_body(imgs, "BYTES", outputs=[{"name": "logits", "parameters": {"classification": k}}]))
    check(st == 200, f"BYTES classification: {st} {j}")
    o = j["outputs"][0]
    check(o["datatype"] == "BYTES" and o["shape"] == [3, k], f"BYTES classification output: {o['shape']} {o['datatype']}")
    for i in range(3):
        row = []
        for t in o["data"][i * k:(i + 1) * k]:
            score, idx, label = t.split(":", 2)
            row.append((int(idx), label, float(score)))
        check([x[:2] for x in row] == [x[:2] for x in mp[i]], f"BYTES infer vs classify image {i}: {row} {mp[i]}")
        check(all(np.float32(a[2]) == np.float32(b[2]) for a, b in zip(row, mp[i])), f"BYTES scores vs classify: {row} {mp[i]}")
    # BYTES infer without the extension: logits whose softmax ranks the same
    st, _, j = jreq(s, "POST", "/v2/models/g/infer", infer_body(imgs, "BYTES"))
    y = np.array(j["outputs"][0]["data"], dtype=np.float64).reshape(3, 10)
    p = np.exp(y - y.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    for i in range(3):
        order = list(np.argsort(-p[i], kind="stable")[:k])
        check(order == [x[0] for x in mp[i]], f"BYTES logits ranking: {order} {mp[i]}")
    # PNG, no Content-Type (sniffed), octet-stream, gray model
    png = os.path.join(TMP, "b.png")
    subprocess.run(["/usr/bin/python3", "-c", f"from PIL import Image; Image.open({PHOTOS[0]!r}).save({png!r})"], check=True)
    for ctype in ("image/png", None, "application/octet-stream"):
        st, _, j = jreq(s, "POST", "/v1/models/g/classify?top_k=2", headers={"Content-Type": ctype} if ctype else {"Content-Type": ""}, raw=open(png, "rb").read())
        check(st == 200 and [x["index"] for x in j["predictions"][0]] == [x[0] for x in mp[0][:2]], f"PNG ({ctype}): {st} {j}")
    st, _, j = jreq(s, "POST", "/v1/models/gray/classify", headers={"Content-Type": "image/jpeg"}, raw=imgs[0])
    check(st == 200 and len(j["predictions"][0]) == 5, f"gray model classify: {st} {j}")
    st, _, j = jreq(s, "POST", "/v1/models/g/classify?top_k=1000", headers={"Content-Type": "image/jpeg"}, raw=imgs[0])
    check(st == 200 and len(j["predictions"][0]) == 10, "top_k is capped at the class count")


def test_errors(s):
    img = open(PHOTOS[0], "rb").read()
    J = {"Content-Type": "application/json"}
    x = np.load(os.path.join(GOLDEN, "vit_s32_d64.input.npy"))
    good = infer_body(x)

    def infer_err(obj_or_raw, status, contains=None, headers=None):
        raw = obj_or_raw if isinstance(obj_or_raw, bytes) else json.dumps(obj_or_raw).encode()
        return expect_error(s, "POST", "/v2/models/g/infer", status, raw, headers or J, contains)

    infer_err(b"{bad json", 400, "malformed JSON")
    infer_err(b"", 400)
    infer_err(b"[1, 2, 3]", 400)
    infer_err(b'{"inputs": [], "inputs": []}', 400)  # duplicate key
    infer_err(b"[" * 5000 + b"]" * 5000, 400)  # deeper than jansson's limit
    infer_err({"inputs": []}, 400, "one tensor")
    infer_err({"inputs": [good["inputs"][0], good["inputs"][0]]}, 400)
    infer_err({"inputs": [dict(good["inputs"][0], name="pixels")]}, 400, "input")
    infer_err({"inputs": [dict(good["inputs"][0], datatype="INT8")]}, 400, "datatype")
    infer_err({"inputs": [dict(good["inputs"][0], shape=[2, 3, 16, 16])]}, 400, "shape")
    infer_err({"inputs": [dict(good["inputs"][0], data=good["inputs"][0]["data"][:-1])]}, 400, "values")
    infer_err({"inputs": [dict(good["inputs"][0], data=["x"] * len(good["inputs"][0]["data"]))]}, 400)
    infer_err({"inputs": [dict(good["inputs"][0], data=[1e39] * len(good["inputs"][0]["data"]))]}, 400, "float32")
    infer_err({"inputs": [{"name": "input", "shape": [2, 3, 32, 32], "datatype": "FP32"}]}, 400)
    infer_err(dict(good, id=5), 400, "id")
    infer_err(dict(good, outputs=[{"name": "probs"}]), 400, "output")
    infer_err(dict(good, outputs=[{"name": "logits", "parameters": {"classification": 0}}]), 400, "classification")
    infer_err(dict(good, outputs=[{"name": "logits", "parameters": {"classification": "3"}}]), 400, "classification")
    infer_err({"inputs": [{"name": "input", "shape": [1], "datatype": "BYTES", "data": ["!!notbase64!!"]}]}, 400, "base64")
    infer_err({"inputs": [{"name": "input", "shape": [1], "datatype": "BYTES", "data": [base64.b64encode(b"GIF89a garbage").decode()]}]}, 400, "decode")
    infer_err({"inputs": [{"name": "input", "shape": [2], "datatype": "BYTES", "data": [base64.b64encode(img).decode()]}]}, 400)
    infer_err({"inputs": [{"name": "input", "shape": [9, 3, 32, 32], "datatype": "FP32", "data": [0.0] * (9 * 3 * 32 * 32)}]}, 413, "limit")
    infer_err({"inputs": [{"name": "input", "shape": [9], "datatype": "BYTES", "data": ["AAAA"] * 9}]}, 413)
    infer_err(b"[" + b"0," * 200000 + b"0]", 413, "too many")
    infer_err(json.dumps(good).encode(), 415, None, {"Content-Type": "text/plain"})
    infer_err(json.dumps(good).encode(), 415, "binary", {"Content-Type": "application/octet-stream"})
    expect_error(s, "POST", "/v2/models/nosuch/infer", 404, json.dumps(good).encode(), J)
    expect_error(s, "POST", "/v2/models/bad!name/infer", 400, json.dumps(good).encode(), J)

    C = "/v1/models/g/classify"
    expect_error(s, "POST", C, 400, b"", {"Content-Type": "image/jpeg"})
    expect_error(s, "POST", C, 400, b"\x00garbage bytes, not an image" * 10, {"Content-Type": "image/jpeg"}, "decode")
    expect_error(s, "POST", C, 400, img[: len(img) // 3], {"Content-Type": "image/jpeg"})  # truncated JPEG
    expect_error(s, "POST", C, 415, img, {"Content-Type": "text/plain"})
    expect_error(s, "POST", C, 415, b"a=1", {"Content-Type": "application/x-www-form-urlencoded"})
    expect_error(s, "POST", C + "?top_k=0", 400, img, {"Content-Type": "image/jpeg"}, "top_k")
    expect_error(s, "POST", C + "?top_k=abc", 400, img, {"Content-Type": "image/jpeg"}, "top_k")
    expect_error(s, "POST", "/v1/models/nosuch/classify", 404, img, {"Content-Type": "image/jpeg"})
    # 4000x2000 = 8 Mpx, over the 4 Mpx limit: 413 from the header, before any pixel is decoded
    big = os.path.join(TMP, "big.png")
    subprocess.run(["/usr/bin/python3", "-c", f"from PIL import Image; Image.new('RGB', (4000, 2000)).save({big!r})"], check=True)
    expect_error(s, "POST", C, 413, open(big, "rb").read(), {"Content-Type": "image/png"}, "pixel")
    # multipart: too many files, a broken one, none, truncated
    body, h = multipart([("a.jpg", img, "image/jpeg")] * 9)
    expect_error(s, "POST", C, 413, body, h)
    body, h = multipart([("a.jpg", img, "image/jpeg"), ("b.jpg", b"nope", "image/jpeg")])
    expect_error(s, "POST", C, 400, body, h, "b.jpg")
    expect_error(s, "POST", C, 400, b"--x\r\nContent-Disposition: form-data; name=\"t\"\r\n\r\nhello\r\n--x--\r\n",
                 {"Content-Type": "multipart/form-data; boundary=x"}, "file part")
    body, h = multipart([("a.jpg", img, "image/jpeg")])
    expect_error(s, "POST", C, 400, body[: len(body) // 2], h, "multipart")
    expect_error(s, "POST", C, 400, body, {"Content-Type": "multipart/form-data"}, "boundary")
    expect_error(s, "POST", C, 400, b"no delimiter here", h)
    # declared sizes: over the body limit, absurd, malformed
    for cl in (b"2000001", b"1000000000000", b"99999999999999999999"):
        out = raw_exchange(s, b"POST /v1/models/g/classify HTTP/1.1\r\nHost: x\r\nContent-Type: image/jpeg\r\nContent-Length: " + cl + b"\r\n\r\n")
        check(out.startswith(b"HTTP/1.1 413"), f"Content-Length {cl}: {out[:200]!r}")
        # past 2^64 libmicrohttpd answers by itself (an HTML body); below it the reply is ours
        check(b'"error"' in out or len(cl) > 19, f"Content-Length {cl}: not a JSON error: {out[:300]!r}")
    out = raw_exchange(s, b"POST /v1/models/g/classify HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n")
    check(out.startswith(b"HTTP/1.1 400"), f"malformed Content-Length: {out[:100]!r}")
    alive(s)


def test_hostile(s):
    """Garbage, truncated bodies, chunked bodies past the limit, slow clients, idle clients:
    the server stays up and answers the next request."""
    img = open(PHOTOS[0], "rb").read()
    rnd = np.random.default_rng(1)
    for n in (1, 100, 5000, 70000):
        raw_exchange(s, rnd.integers(0, 256, n, dtype=np.uint8).tobytes(), read_timeout=1, close_write=True)
    out = raw_exchange(s, b"GET /v2 HTTP/1.1\r\nHost: x\r\n" + b"X-Long: " + b"a" * 100000 + b"\r\n\r\n", read_timeout=2)
    check(out[:12] in (b"HTTP/1.1 431", b""), f"huge header: {out[:100]!r}")
    raw_exchange(s, b"\r\n\r\n\r\n", read_timeout=1, close_write=True)
    raw_exchange(s, b"GET /v2 HTTP/9.9\r\n\r\n", read_timeout=1, close_write=True)
    raw_exchange(s, b"POST /v2/models/g/infer HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 7\r\n\r\n{}", read_timeout=1, close_write=True)
    raw_exchange(s, b"POST /v2/models/g/infer HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n{}", read_timeout=1, close_write=True)
    # truncated: declares 100000 bytes, sends 10, closes
    raw_exchange(s, b"POST /v1/models/g/classify HTTP/1.1\r\nHost: x\r\nContent-Type: image/jpeg\r\nContent-Length: 100000\r\n\r\n" + img[:10],
                 read_timeout=0.5, close_write=True)
    # truncated JSON body on infer, then the connection closed
    raw_exchange(s, b"POST /v2/models/g/infer HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\n\r\n{\"inputs\": [", read_timeout=0.5, close_write=True)
    # chunked body past the 2 MB limit: the connection is dropped
    chunk = b"%x\r\n" % 65536 + b"z" * 65536 + b"\r\n"
    out = raw_exchange(s, [b"POST /v1/models/g/classify HTTP/1.1\r\nHost: x\r\nContent-Type: image/jpeg\r\nTransfer-Encoding: chunked\r\n\r\n"] + [chunk] * 40,
                       read_timeout=5)
    check(b" 200 " not in out[:20], f"chunked over the limit was answered 200: {out[:100]!r}")
    # a valid chunked upload is answered
    body = b"".join(b"%x\r\n" % len(img[i:i + 4096]) + img[i:i + 4096] + b"\r\n" for i in range(0, len(img), 4096)) + b"0\r\n\r\n"
    out = raw_exchange(s, b"POST /v1/models/g/classify HTTP/1.1\r\nHost: x\r\nContent-Type: image/jpeg\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n" + body)
    check(out.startswith(b"HTTP/1.1 200") and b'"predictions"' in out, f"chunked upload: {out[:200]!r}")
    # slow client: the request trickles in over ~1.5 s, then is answered
    req = b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    out = raw_exchange(s, [req[i:i + 4] for i in range(0, len(req), 4)], pause=0.1)
    check(out.startswith(b"HTTP/1.1 200"), f"slow client: {out[:100]!r}")
    # garbage JSON and bodies to every endpoint
    for m, p in (("GET", "/v2"), ("GET", "/v2/health/live"), ("GET", "/v2/health/ready"), ("GET", "/v2/models/g"),
                 ("GET", "/v2/models/g/ready"), ("POST", "/v2/models/g/infer"), ("POST", "/v2/models/g/versions/1/infer"),
                 ("POST", "/v1/models/g/classify"), ("GET", "/metrics"), ("POST", "/v2"), ("POST", "/metrics")):
        for body in (b"{]", b"\xff\xfe\x00garbage", b'{"inputs": [{"name": "input", "shape": [1, 3, 32, 32], "datatype": "FP32", "data": [1, 2,'):
            st, _, data = request(s, m, p, body, {"Content-Type": "application/json"})
            check(st in (200, 400, 405, 415), f"{m} {p} with garbage: {st}")
            check(st == 200 or b'"error"' in data, f"{m} {p}: error without JSON: {data[:100]!r}")
    # idle connection: closed by the server after idle_timeout_s (3 s here)
    t0 = time.time()
    c = socket.create_connection(("127.0.0.1", s.port), timeout=15)
    got = c.recv(10)
    c.close()
    dt = time.time() - t0
    check(got == b"" and 2 <= dt <= 10, f"idle connection: recv {got!r} after {dt:.1f} s (idle_timeout_s 3)")
    alive(s)


def test_concurrency(s):
    """More concurrent clients than HTTP threads (2): all answered, each result right."""
    imgs = [open(p, "rb").read() for p in PHOTOS]
    ref = []
    for d in imgs:
        st, _, j = jreq(s, "POST", "/v1/models/g/classify?top_k=10", headers={"Content-Type": "image/jpeg"}, raw=d)
        ref.append(j["predictions"][0])
    x = np.load(os.path.join(GOLDEN, "deit_s32_d32_dist_rm1.input.npy"))
    st, _, j = jreq(s, "POST", "/v2/models/dist/infer", infer_body(x))
    ref_fp32 = np.array(j["outputs"][0]["data"], dtype=np.float32)

    def client(i):
        out = []
        c = http.client.HTTPConnection("127.0.0.1", s.port, timeout=60)  # keep-alive
        for r in range(8):
            if (i + r) % 3 == 2:
                c.request("POST", "/v2/models/dist/infer", body=json.dumps(infer_body(x)), headers={"Content-Type": "application/json"})
                resp = c.getresponse()
                j = json.loads(resp.read())
                y = np.array(j["outputs"][0]["data"], dtype=np.float32)
                out.append((resp.status, float(np.abs(y - ref_fp32).max())))
            else:
                k = (i + r) % len(imgs)
                c.request("POST", "/v1/models/g/classify?top_k=10", body=imgs[k], headers={"Content-Type": "image/jpeg", "X-Request-Id": f"c{i}-{r}"})
                resp = c.getresponse()
                rid = resp.getheader("X-Request-Id")
                j = json.loads(resp.read())
                p = j["predictions"][0]
                same = [e["index"] for e in p] == [e["index"] for e in ref[k]]
                d = max(abs(a["score"] - b["score"]) for a, b in zip(p, ref[k]))
                out.append((resp.status, 0.0 if same and d < 1e-5 and rid == f"c{i}-{r}" else 1.0))
        c.close()
        return out

    t0 = time.time()
    with cf.ThreadPoolExecutor(16) as ex:
        results = [r for rs in ex.map(client, range(16)) for r in rs]
    dt = time.time() - t0
    bad = [r for r in results if r[0] != 200 or r[1] > 1e-5]
    print(f"  concurrency: 16 clients x 8 requests in {dt:.2f} s, {len(bad)} wrong")
    check(not bad, f"concurrent requests answered wrongly: {bad[:5]}")
    st, _, data = request(s, "GET", "/metrics")
    batches = [l for l in data.decode().splitlines() if l.startswith('vitd_batch_size_count{model="g"}')]
    print("  " + batches[0])


def test_request_ids_and_log(s):
    st, hd, _ = request(s, "GET", "/v2/health/live", headers={"X-Request-Id": "trace-abc.123"})
    check(hd.get("x-request-id") == "trace-abc.123", f"X-Request-Id not echoed: {hd}")
    st, hd, _ = request(s, "GET", "/v2/health/live")
    gen = hd.get("x-request-id", "")
    check(len(gen) == 16, f"generated request id: {gen!r}")
    st, hd, _ = request(s, "GET", "/v2/health/live", headers={"X-Request-Id": "bad id with spaces"})
    check(hd.get("x-request-id") != "bad id with spaces" and len(hd.get("x-request-id", "")) == 16, "unsafe id echoed")
    time.sleep(0.2)
    lines = [json.loads(l) for l in s.text().splitlines() if l.startswith("{")]
    check(len(lines) > 50, "the JSON log has too few lines")
    acc = [l for l in lines if l.get("msg") == "access"]
    ids = {l["id"] for l in acc}
    check("trace-abc.123" in ids and gen in ids, "request ids missing from the access log")
    for l in acc:
        for k in ("ts", "id", "method", "path", "status", "ms"):
            check(k in l, f"access line without {k}: {l}")
    inf = [l for l in acc if l["path"] == "/v1/models/g/classify" and l["status"] == 200]
    check(inf and all("model" in l and "version" in l and "queue_ms" in l and "infer_ms" in l for l in inf),
          f"inference access lines lack model/version/timings: {inf[:1]}")


def test_saturation_and_drain():
    """A slow model and a tiny queue: 503 + Retry-After when full, health fast meanwhile;
    SIGTERM finishes the requests in flight and exits 0."""
    sys.path.insert(0, HERE)
    import torch_vit as tv
    c = tv.cfg(img_size=224, patch_size=16, embed_dim=192, num_heads=3, depth=12, num_classes=100)
    path = os.path.join(TMP, "deit_t.safetensors")
    tv.save_model(path, tv.build(c, seed=5))
    s = Server("slow", ["--model", f"slow={path}", "--max-batch-size", "2", "--max-queue-images", "3", "--max-images-per-request", "2", "--http-threads", "2",
                        "--drain-timeout-s", "30"])
    img = open(PHOTOS[0], "rb").read()

    def one(_):
        t = time.time()
        st, hd, data = request(s, "POST", "/v1/models/slow/classify", img, {"Content-Type": "image/jpeg"})
        return st, hd.get("retry-after"), data, time.time() - t

    # 12 clients send back to back for 2 s: far more than the worker can take
    stop_at = time.time() + 2.0

    def loop(_):
        out = []
        while time.time() < stop_at:
            out.append(one(0))
        return out

    health = []
    with cf.ThreadPoolExecutor(12) as ex:
        futs = [ex.submit(loop, i) for i in range(12)]
        time.sleep(0.2)
        while time.time() < stop_at - 0.1:
            # curl in its own process times the probes (this process's client threads hold the GIL)
            probe = subprocess.run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code} %{time_total}\n",
                                    f"http://127.0.0.1:{s.port}/v2/health/ready", "-o", "/dev/null",
                                    f"http://127.0.0.1:{s.port}/metrics"], capture_output=True, text=True).stdout.split()
            health.append((max(float(probe[1]), float(probe[3])), int(probe[0]), int(probe[2])))
            time.sleep(0.02)
        res = [r for f in futs for r in f.result()]
    full = [r for r in res if r[0] == 503]
    ok = [r for r in res if r[0] == 200]
    check(len(ok) + len(full) == len(res), f"statuses under load: {[r[0] for r in res]}")
    check(full and all(r[1] and r[1].isdigit() for r in full), "no 503 with Retry-After while the queue was full")
    check(all(b"queue full" in r[2] for r in full), f"503 reason: {full[0][2][:200]!r}")
    check(ok, "no request served under load")
    worst = max(h[0] for h in health) if health else 0
    med = sorted(h[0] for h in health)[len(health) // 2] if health else 0
    print(f"  saturation: {len(ok)} served, {len(full)} x 503; health+metrics while busy: {len(health)} probes, "
          f"median {med * 1e3:.1f} ms, worst {worst * 1e3:.1f} ms")
    check(health and all(h[1] == 200 and h[2] == 200 for h in health), f"health/metrics not 200 while busy: {[h[1:] for h in health]}")
    check(med < 0.05 and worst < 1.0, f"health too slow while the queue was full: median {med:.3f} s, worst {worst:.3f} s")
    # the server's own view (access log): time from request to reply of each probe
    srv_ms = sorted(float(l.split(" ms=")[1].split()[0]) for l in s.text().splitlines()
                    if " access " in l and ("path=/v2/health/ready " in l or "path=/metrics " in l))
    print(f"  server-side health/metrics time while busy: median {srv_ms[len(srv_ms) // 2]:.3f} ms, worst {srv_ms[-1]:.3f} ms")
    check(srv_ms[-1] < 100, f"a health or metrics request took {srv_ms[-1]} ms inside the server")

    check(s.stop() == 0, "slow server exit status")

    # drain: requests in flight when SIGTERM arrives all complete; then exit 0
    s = Server("drain", ["--model", f"slow={path}", "--max-batch-size", "4", "--max-images-per-request", "8",
                         "--drain-timeout-s", "30"])
    body, h = multipart([(f"{i}.jpg", img, "image/jpeg") for i in range(8)])

    def eight(_):
        st, hd, data = request(s, "POST", "/v1/models/slow/classify", body, h)
        return st, data

    keep = http.client.HTTPConnection("127.0.0.1", s.port, timeout=30)
    keep.request("GET", "/v2/health/ready")
    keep.getresponse().read()
    with cf.ThreadPoolExecutor(4) as ex:
        futs = [ex.submit(eight, i) for i in range(4)]
        # SIGTERM once the server has received all four (and this /metrics request)
        for _ in range(500):
            st, _, data = request(s, "GET", "/metrics")
            if int(re.search(rb"vitd_inflight_requests (\d+)", data).group(1)) >= 5:
                break
            time.sleep(0.01)
        t0 = time.time()
        s.proc.send_signal(signal.SIGTERM)
        time.sleep(0.05)
        keep.request("GET", "/v2/health/ready")
        r = keep.getresponse()
        ready_during = r.status
        r.read()
        keep.close()
        # new connections are refused while the drain runs
        try:
            c = socket.create_connection(("127.0.0.1", s.port), timeout=2)
            c.sendall(b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\n\r\n")
            refused = c.recv(100) == b""
            c.close()
        except OSError:
            refused = True
        check(refused or s.proc.poll() is not None, "a new connection was served during the drain")
        res = [f.result() for f in futs]
    rc = s.proc.wait(30)
    dt = time.time() - t0
    print(f"  drain: in-flight statuses {[r[0] for r in res]}, readiness during drain {ready_during}, exit {rc} after {dt:.2f} s")
    check(all(r[0] == 200 for r in res), f"in-flight requests failed during the drain: {[r[0] for r in res]}")
    check(ready_during == 503, f"readiness during the drain: {ready_during}")
    check(rc == 0, f"exit status after SIGTERM: {rc}")
    try:
        socket.create_connection(("127.0.0.1", s.port), timeout=1).close()
        fail("the port still accepts connections after exit")
    except OSError:
        pass


def test_deadline():
    g = os.path.join(GOLDEN, "vit_s32_d64.safetensors")
    s = Server("deadline", ["--model", f"g={g}", "--request-timeout-ms", "1"])
    img = open(PHOTOS[1], "rb").read()
    expect_error(s, "POST", "/v1/models/g/classify", 503, img, {"Content-Type": "image/jpeg"}, "deadline")
    check(s.stop() == 0, "deadline server exit status")


def test_connection_limits():
    """max_connections: connections past it wait (not served) until one closes;
    max_connections_per_ip: connections past it are closed at once."""
    g = os.path.join(GOLDEN, "vit_s32_d64.safetensors")
    s = Server("conns", ["--model", f"g={g}", "--http-threads", "1", "--max-connections", "3"])
    idle = [socket.create_connection(("127.0.0.1", s.port), timeout=5) for _ in range(3)]
    time.sleep(0.2)
    extra = socket.create_connection(("127.0.0.1", s.port), timeout=0.8)
    extra.sendall(b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    try:
        got = extra.recv(100)
    except socket.timeout:
        got = None
    check(got is None, f"a connection past max_connections was served at once: {got!r}")
    idle[0].close()
    extra.settimeout(5)
    got = extra.recv(100)
    check(got.startswith(b"HTTP/1.1 200"), f"the waiting connection was not served after one closed: {got!r}")
    for c in idle[1:] + [extra]:
        c.close()
    check(s.stop() == 0, "conns server exit status")

    s = Server("perip", ["--model", f"g={g}", "--max-connections-per-ip", "2"])
    held = [socket.create_connection(("127.0.0.1", s.port), timeout=5) for _ in range(2)]
    time.sleep(0.2)
    out = raw_exchange(s, b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\n\r\n", read_timeout=3)
    check(out == b"", f"a third connection from one address was served: {out[:60]!r}")
    held[0].close()
    time.sleep(0.2)
    out = raw_exchange(s, b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", read_timeout=3)
    check(out.startswith(b"HTTP/1.1 200"), f"per-address cap not released: {out[:60]!r}")
    held[1].close()
    check(s.stop() == 0, "perip server exit status")


def test_config():
    g = os.path.join(GOLDEN, "vit_s32_d64.safetensors")
    cfg = os.path.join(TMP, "vitd.json")

    def start(env, extra):
        s = Server("cfg", ["--config", cfg, "--model", f"g={g}"] + extra, env=env)
        text = s.text()
        check(s.stop() == 0, f"config server exit: {text}")
        return text

    json.dump({"max_batch_size": 3, "log_format": "json", "models": {"x": "/nonexistent"}}, open(cfg, "w"))
    check("1..3" in start({}, []), "config file value not used")
    check("1..5" in start({"VITD_MAX_BATCH_SIZE": "5"}, []), "environment does not override the file")
    check("1..6" in start({"VITD_MAX_BATCH_SIZE": "5"}, ["--max-batch-size", "6"]), "flag does not override the environment")

    def bad(args, env, key):
        r = subprocess.run([VITD, "serve"] + args, capture_output=True, text=True, env=dict(os.environ, **env), cwd=TMP, timeout=30)
        check(r.returncode == 2 and key in r.stderr, f"invalid config {args} {env}: rc {r.returncode}, {r.stderr!r} should name {key}")

    json.dump({"max_batch_size": 3, "no_such_key": 1}, open(cfg, "w"))
    bad(["--config", cfg], {}, "no_such_key")
    json.dump({"port": "8080"}, open(cfg, "w"))
    bad(["--config", cfg], {}, "port")
    open(cfg, "w").write("{not json")
    bad(["--config", cfg], {}, cfg)
    bad(["--max-batch-size", "0"], {}, "max_batch_size")
    bad(["--max-batch-size", "x"], {}, "max_batch_size")
    bad([], {"VITD_PORT": "http"}, "VITD_PORT")
    bad([], {"VITD_LOG_FORMAT": "xml"}, "log_format")
    bad(["--model", "bad/name=x"], {}, "model name")
    bad(["--frobnicate", "1"], {}, "--frobnicate")
    bad(["--config", os.path.join(TMP, "missing.json")], {}, "missing.json")
    # the default model is served when none is named: until it exists, start-up fails naming it
    r = subprocess.run([VITD, "serve", "--port", "0"], capture_output=True, text=True, cwd=TMP, timeout=30)
    check(r.returncode == 1 and "models/fashion-vit/model.safetensors" in r.stderr, f"missing default model: {r.returncode} {r.stderr!r}")
    # a broken checkpoint stops start-up naming it
    broken = os.path.join(TMP, "broken.safetensors")
    open(broken, "wb").write(b"\x10\x00\x00\x00\x00\x00\x00\x00{}garbage")
    r = subprocess.run([VITD, "serve", "--port", "0", "--model", f"b={broken}"], capture_output=True, text=True, cwd=TMP, timeout=30)
    check(r.returncode == 1 and "broken.safetensors" in r.stderr, f"broken model: {r.returncode} {r.stderr!r}")
    # VITD_MODELS names several models
    s = Server("envmodels", [], env={"VITD_MODELS": f"a={g},b={os.path.join(GOLDEN, 'vit_c1_s28_p7_d48.safetensors')}"})
    st, _, j = jreq(s, "GET", "/v2/models/b")
    check(st == 200 and j["inputs"][0]["shape"] == [-1, 1, 28, 28], f"VITD_MODELS: {st}")
    check(s.stop() == 0, "exit status")


def test_store_restart():
    """The model store (server/srv_store.h): what is active, under its store number, survives a
    restart with the same --store-dir; a changed checkpoint is imported as a new version."""
    store = os.path.join(TMP, "store-restart")
    src = os.path.join(TMP, "restart.safetensors")
    shutil.copy(os.path.join(GOLDEN, "vit_s32_d64.safetensors"), src)
    x = np.zeros((1, 3, 32, 32), np.float32)

    def served():
        s = Server("restart", ["--model", f"g={src}", "--store-dir", store])
        st, _, j = jreq(s, "GET", "/v2/models/g")
        st2, _, k = jreq(s, "POST", "/v2/models/g/infer", infer_body(x))
        check(st == 200 and st2 == 200, f"restart server: {st} {st2} {s.text()}")
        check(s.stop() == 0, "restart server exit status")
        return j["version"], j["versions"], k["model_version"], j["parameters"]["removed_blocks"]

    check(served() == ("1", ["1"], "1", []), "first start: version 1")
    check(served() == ("1", ["1"], "1", []), "restart with the same checkpoint: version 1")
    # a new checkpoint deployed at the same path (written beside it, renamed over it)
    shutil.copy(os.path.join(GOLDEN, "vit_s32_d48_rm02.safetensors"), src + ".new")
    os.rename(src + ".new", src)
    check(served() == ("2", ["2"], "2", [0, 2]), "changed checkpoint: version 2")
    check(served() == ("2", ["2"], "2", [0, 2]), "restart: still version 2")
    check(sorted(os.listdir(os.path.join(store, "g"))) == ["1", "2", "state.json"], f"store: {os.listdir(os.path.join(store, 'g'))}")
    # the active version recorded in the store (as an admin roll back leaves it) is what a
    # restart serves, with its number
    sp = os.path.join(store, "g", "state.json")
    state = json.load(open(sp))
    check(state["active"] == 2 and state["next"] == 3, f"state.json: {state}")
    state["active"] = 1
    json.dump(state, open(sp, "w"))
    check(served() == ("1", ["1"], "1", []), "restart after activating version 1 in the store")


def main():
    t0 = time.time()
    try:
        models = [f"g={os.path.join(GOLDEN, 'vit_s32_d64.safetensors')}", f"gray={os.path.join(GOLDEN, 'vit_c1_s28_p7_d48.safetensors')}",
                  f"dist={os.path.join(GOLDEN, 'deit_s32_d32_dist_rm1.safetensors')}"]
        args = [a for m in models for a in ("--model", m)] + [
            "--max-batch-size", "4", "--max-images-per-request", "8", "--max-body-bytes", "2000000",
            "--max-image-pixels", "4000000", "--http-threads", "2", "--idle-timeout-s", "3", "--log-format", "json"]
        s = Server("main", args)
        for name, fn in (("endpoints", test_endpoints), ("fp32 == vitd logits", test_fp32_equals_cli),
                         ("bytes == classify", test_bytes_and_classify), ("errors", test_errors),
                         ("hostile clients", test_hostile), ("concurrency", test_concurrency),
                         ("request ids and log", test_request_ids_and_log)):
            t = time.time()
            fn(s)
            print(f"ok   {name} ({time.time() - t:.1f} s)")
        check(s.proc.poll() is None, "the main server died")
        check(s.stop() == 0, "main server exit status after SIGTERM")
        for name, fn in (("queue full, health, drain", test_saturation_and_drain), ("deadline", test_deadline),
                         ("connection limits", test_connection_limits), ("configuration", test_config),
                         ("model store across restarts", test_store_restart)):
            t = time.time()
            fn()
            print(f"ok   {name} ({time.time() - t:.1f} s)")
    finally:
        harness.cleanup(TMP)
    print(f"test_server: {harness.checks} checks passed in {time.time() - t0:.1f} s")


if __name__ == "__main__":
    main()
