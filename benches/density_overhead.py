#!/usr/bin/env python3
"""Nimbus's own overhead per idle instance: server RSS, threads and open fds before and
after warming N instances (one per function), and the instances' own memory as the pool
reports it (cgroup accounting). See docs/performance.md, "Memory and density".

    cargo build --release -p nimbus-cli
    python3 benches/density_overhead.py [--bin target/release/nimbus] [--n 50] [--runtime python3.11]

Prints one JSON object. Needs only the Python standard library.
"""

import argparse
import base64
import io
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import zipfile

HANDLERS = {
    "python3.11": ("app.handler", "app.py", "def handler(e, c):\n    return 1\n"),
    "nodejs20.x": ("index.handler", "index.js", "exports.handler = async () => 1;\n"),
}


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def call(base, method, path, body=None):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(base + path, data=data, method=method)
    if data is not None:
        req.add_header("content-type", "application/json")
    with urllib.request.urlopen(req, timeout=60) as r:
        raw = r.read()
        return json.loads(raw) if raw else None


def proc_figures(pid):
    status = open(f"/proc/{pid}/status").read()
    field = lambda k: int(next(l for l in status.splitlines() if l.startswith(k)).split()[1])
    kinds = {}
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            t = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        k = t.split(":")[0] if ":" in t and not t.startswith("/") else "file"
        kinds[k] = kinds.get(k, 0) + 1
    return {
        "fd_kinds": kinds,
        "rss_kb": field("VmRSS:"),
        "threads": field("Threads:"),
        "fds": len(os.listdir(f"/proc/{pid}/fd")),
    }


def settle(pid, seconds=2.0):
    """The server's figures once they stop moving (allocator, lazy thread pools)."""
    time.sleep(seconds)
    return proc_figures(pid)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default="target/release/nimbus")
    ap.add_argument("--n", type=int, default=50)
    ap.add_argument("--runtime", default="python3.11", choices=sorted(HANDLERS))
    ap.add_argument("--isolation", default="auto")
    a = ap.parse_args()
    handler, fname, src = HANDLERS[a.runtime]
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        info = zipfile.ZipInfo(fname)
        info.external_attr = 0o644 << 16  # readable by the instance's sandbox uid
        z.writestr(info, src)
    code = base64.b64encode(buf.getvalue()).decode()

    port = free_port()
    base = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryDirectory() as d:
        log = open(os.path.join(d, "server.log"), "w")
        srv = subprocess.Popen(
            [a.bin, "serve", "--listen", f"127.0.0.1:{port}", "--data-dir", os.path.join(d, "data"),
             "--auth", "off", "--idle-timeout", "3600", "--isolation", a.isolation,
             "--instance-memory-budget", "off"],
            stdout=log, stderr=subprocess.STDOUT)
        try:
            for _ in range(200):
                try:
                    call(base, "GET", "/v1/health")
                    break
                except Exception:
                    time.sleep(0.05)
            names = [f"d{i}" for i in range(a.n)]
            for n in names:
                call(base, "PUT", f"/v1/functions/{n}",
                     {"config": {"runtime": a.runtime, "handler": handler, "network": "none"},
                      "code_zip": code})
            # One warm-up instance (lazy runtime set-up, first sandbox probe), then stop it.
            call(base, "POST", f"/2015-03-31/functions/{names[0]}/invocations", {})
            call(base, "DELETE", f"/v1/functions/{names[0]}")
            names = names[1:]
            before = settle(srv.pid)
            t0 = time.monotonic()
            for n in names:
                r = call(base, "POST", f"/2015-03-31/functions/{n}/invocations", {})
                if r != 1:
                    sys.exit(f"{n}: unexpected answer {r}")
            warm_s = time.monotonic() - t0
            # One more call with the log tail: REPORT's Max Memory Used (the cgroup's peak).
            req = urllib.request.Request(
                f"{base}/2015-03-31/functions/{names[0]}/invocations", data=b"{}", method="POST")
            req.add_header("X-Amz-Log-Type", "Tail")
            with urllib.request.urlopen(req, timeout=60) as r:
                tail = base64.b64decode(r.headers["X-Amz-Log-Result"]).decode()
            report = next(l for l in tail.splitlines() if l.startswith("REPORT"))
            max_used = int(report.split("Max Memory Used: ")[1].split(" MB")[0])
            after = settle(srv.pid)
            health = call(base, "GET", "/v1/health")
            k = len(names)
            inst = health["instances"]
            if inst["count"] != k:
                sys.exit(f"expected {k} instances: {inst}")
            print(json.dumps({
                "instances": k,
                "runtime": a.runtime,
                "memory_limits": health["memory_limits"],
                "isolation": health["isolation"]["level"],
                "server_before": before,
                "server_after": after,
                "server_rss_kb_per_instance": round((after["rss_kb"] - before["rss_kb"]) / k, 1),
                "server_threads_per_instance": round((after["threads"] - before["threads"]) / k, 2),
                "server_fds_per_instance": round((after["fds"] - before["fds"]) / k, 2),
                "instance_memory_mb_each": round(inst["memory_bytes"] / k / 2**20, 1),
                "instances_per_gb_measured": round(2**30 / (inst["memory_bytes"] / k), 1),
                "report_max_memory_used_mb": max_used,
                "pool_instance_example": call(base, "GET", f"/v1/functions/{names[0]}")["pool"]["instances"][0],
                "cold_starts_s": round(warm_s, 2),
            }, indent=2))
        finally:
            srv.terminate()
            try:
                srv.wait(30)
            except subprocess.TimeoutExpired:
                srv.kill()


if __name__ == "__main__":
    sys.exit(main())
