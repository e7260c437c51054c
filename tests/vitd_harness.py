"""vitd_harness.py - what the over-the-wire tests of `vitd serve` share (test_server.py,
test_admin.py, soak_swap.py): the server as a process on free loopback ports, one HTTP call,
a JSON reply, fail/check with a count of checks, and the clean-up at the end.

Not a test itself (tests/run.sh runs only test_*.py). What one test needs of its own (a
store per server, the admin port, an environment without the caller's VITD_* variables)
it passes as arguments or adds in a subclass of Server.
"""

import http.client
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
VITD = os.environ.get("VITD") or os.path.join(ROOT, "build", "vitd")

SERVERS = []  # every Server started, so that cleanup() can kill what is left
checks = 0  # how many check() calls passed (read it as vitd_harness.checks)

# "listening on 127.0.0.1:8080" / "admin listening on ...", in the text or the JSON log
_LISTEN = re.compile(r"(admin )?listening on [^\s\"]*:(\d+)")


def fail(msg):
    print("FAIL:", msg)
    sys.exit(1)


def check(cond, msg):
    global checks
    checks += 1
    if not cond:
        fail(msg)


class Server:
    """A `vitd serve` process on a free loopback port (--port 0); the log says which, and
    which admin port when args ask for one (--admin-port 0). Its log is log_dir/name.log.

    env is added to the caller's environment, or, with inherit_vitd_env=False, to it
    without the VITD_* variables. With wait_ready, the constructor returns once the log says
    "ready" (else once the port is known), or at once if the process exits (check
    proc.poll()); a server not up within timeout seconds fails the test."""

    def __init__(self, name, args, log_dir, env=None, inherit_vitd_env=True, cwd=ROOT, wait_ready=True,
                 timeout=60):
        self.log_path = os.path.join(log_dir, name + ".log")
        self.log = open(self.log_path, "wb")
        e = {k: v for k, v in os.environ.items() if inherit_vitd_env or not k.startswith("VITD_")}
        e.update(env or {})
        self.proc = subprocess.Popen([VITD, "serve", "--host", "127.0.0.1", "--port", "0"] + list(args),
                                     stdout=self.log, stderr=subprocess.STDOUT, env=e, cwd=cwd)
        SERVERS.append(self)
        self.port = self.admin = None
        deadline = time.time() + timeout
        while time.time() < deadline:
            text = self.text()
            for m in _LISTEN.finditer(text):
                if m.group(1):
                    self.admin = int(m.group(2))
                elif self.port is None:
                    self.port = int(m.group(2))
            if self.proc.poll() is not None:
                return
            if self.port and (not wait_ready or '"msg":"ready"' in text or " info ready" in text):
                return
            time.sleep(0.05)
        fail(f"server {name} did not start:\n{self.text()}")

    def text(self):
        with open(self.log_path, "rb") as f:
            return f.read().decode(errors="replace")

    def stop(self, sig=signal.SIGTERM, timeout=60):
        """Sends sig and returns the exit status; a server still running after timeout
        seconds is killed and fails the test."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                fail(f"server did not stop within {timeout} s")
        return self.proc.returncode


def request(port, method, path, body=None, headers=None, timeout=60):
    """One HTTP/1.1 exchange on its own connection: (status, headers lower-cased, body)."""
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        c.request(method, path, body=body, headers=headers or {})
        r = c.getresponse()
        data = r.read()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, data
    finally:
        c.close()


def reply_json(method, path, data):
    """The reply body as JSON; a body that is not JSON fails the test."""
    try:
        return json.loads(data)
    except ValueError:
        fail(f"{method} {path}: reply is not JSON: {data[:200]!r}")


def cleanup(tmp):
    """Kills every server still running, then removes tmp (kept, and named, with KEEP_TMP
    set: the servers' logs, e.g. of a sanitizer build)."""
    for s in SERVERS:
        if s.proc.poll() is None:
            s.proc.kill()
            s.proc.wait()
    if os.environ.get("KEEP_TMP"):
        print("logs kept in", tmp)
    else:
        shutil.rmtree(tmp, ignore_errors=True)
