# Python cold starts (Init Duration from the log tail) with --isolation none vs auto: each
# deploy with a new env value makes a new version, so each invoke is a cold start.
# Usage (as root, from the repository root): python3 benches/sandbox-cold-start.py
import json, subprocess, sys, time, urllib.request, base64, re, os, statistics, tempfile, zipfile, io
nimbus = os.environ.get("NIMBUS", "target/debug/nimbus")
def run(mode, port, n=15):
    d = tempfile.mkdtemp()
    p = subprocess.Popen([nimbus, "serve", "--listen", f"127.0.0.1:{port}", "--data-dir", d + "/data", "--isolation", mode], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    for _ in range(100):
        try:
            urllib.request.urlopen(base + "/v1/health"); break
        except Exception: time.sleep(0.1)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z: z.writestr("app.py", "def handler(e, c):\n    return 1\n")
    code = base64.b64encode(buf.getvalue()).decode()
    inits = []
    for i in range(n):
        body = json.dumps({"config": {"runtime": "python3.11", "handler": "app.handler", "env": {"I": str(i)}}, "code_zip": code}).encode()
        urllib.request.urlopen(urllib.request.Request(base + "/v1/functions/f", data=body, method="PUT", headers={"Content-Type": "application/json"}))
        r = urllib.request.urlopen(urllib.request.Request(base + "/2015-03-31/functions/f/invocations", data=b"{}", method="POST", headers={"X-Amz-Log-Type": "Tail"}))
        tail = base64.b64decode(r.headers["X-Amz-Log-Result"]).decode()
        m = re.search(r"Init Duration: ([0-9.]+) ms", tail)
        inits.append(float(m.group(1)))
    p.terminate(); p.wait()
    return inits
for mode, port in [("none", 18981), ("auto", 18982), ("none", 18983), ("auto", 18984)]:
    v = run(mode, port)
    print(mode, "init p50 %.1f ms  min %.1f  max %.1f" % (statistics.median(v), min(v), max(v)))
