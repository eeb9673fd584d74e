"""The examples of issue 15, run as their READMEs say: `nimbus up examples/NAME` (a copy of
it), then driven the way a user would drive it.

- webhook-to-queue: signed webhook POSTs (the signature computed as the README's openssl
  command does) go to the FIFO queue through the unmodified AWS SDK for JavaScript v3
  (installed from package.json at deploy) with the role's temporary credentials; bad or
  missing signatures get 401 and queue nothing; a delivery id deduplicates; the worker's
  partial batch failures follow the FIFO rule and a bad order ends in the dead-letter
  queue; the webhook's role allows nothing beyond its queue.
- thumbnailer: an image uploaded with boto3 under s3://uploads/in/ (a bucket the manifest's
  S3 trigger created) becomes a thumbnail of at most 128 px in s3://thumbnails/thumbs/,
  made by Pillow (from requirements.txt) through unmodified boto3 with the role's
  credentials; uploads elsewhere invoke nothing; the role refuses reads outside in/.

Dependency installs are cached in target/test-python/build-cache (NIMBUS_BUILD_CACHE), so
only the first run fetches from npm/PyPI. Run through tests/e2e/examples.rs, or by hand:
`cargo build -p nimbus-cli && python3 -m pytest tests/python/test_examples.py -q`.
"""

import configparser
import hashlib
import hmac
import json
import struct
import zlib
import os
import queue
import re
import shutil
import subprocess
import threading
import time
import urllib.error
import urllib.request

import boto3
import botocore.exceptions
import pytest
from botocore.config import Config

from conftest import REPO_ROOT, database_args, free_port, nimbus_bin

BUILD_CACHE = REPO_ROOT / "target" / "test-python" / "build-cache"


class Up:
    """`nimbus up` on a copy of `examples/NAME`, its data dir and output its own."""

    def __init__(self, name, tmp_path, replace=(), extra_args=()):
        """`replace`: (old, new, count) edits of the copy's nimbus.toml, each of which must
        find `old` exactly `count` times (this run's database, queue or topic names)."""
        self.project = tmp_path / name
        shutil.copytree(REPO_ROOT / "examples" / name, self.project,
                        ignore=shutil.ignore_patterns(".nimbus", "node_modules", "__pycache__"))
        manifest = self.project / "nimbus.toml"
        text = manifest.read_text()
        for old, new, count in replace:
            assert text.count(old) == count, f"{old!r} is not {count} times in {name}'s nimbus.toml"
            text = text.replace(old, new)
        manifest.write_text(text)
        self.data = tmp_path / "data"
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.env = dict(os.environ, NIMBUS_BUILD_CACHE=str(BUILD_CACHE),
                        NIMBUS_ENDPOINT=self.base,
                        NIMBUS_CREDENTIALS_FILE=str(self.data / "credentials"))
        # The suite's dummy AWS keys would win over the credentials file.
        self.env.pop("AWS_ACCESS_KEY_ID", None)
        self.env.pop("AWS_SECRET_ACCESS_KEY", None)
        self.proc = subprocess.Popen(
            [str(nimbus_bin()), "up", str(self.project), "--listen", f"127.0.0.1:{self.port}",
             "--data-dir", str(self.data), *database_args(self), *extra_args],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            env=self.env, text=True)
        self.lines = queue.Queue()
        self.printed = ""
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.proc.stdout:
            self.lines.put(line)

    def wait_for(self, *wanted, timeout=240):
        """Reads `nimbus up`'s output until each of `wanted` was printed (since the last call)."""
        seen = ""
        deadline = time.monotonic() + timeout
        while not all(w in seen for w in wanted):
            left = deadline - time.monotonic()
            try:
                line = self.lines.get(timeout=max(left, 0.01))
            except queue.Empty:
                raise AssertionError(f"nimbus up did not print {wanted}; printed:\n{self.printed}")
            seen += line
            self.printed += line
        return seen

    def cli(self, *args, stdin=None):
        out = subprocess.run([str(nimbus_bin()), *args], input=stdin, capture_output=True,
                             text=True, env=self.env, timeout=60)
        assert out.returncode == 0, f"nimbus {args}: {out.stderr}"
        return out.stdout

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def eventually(check, timeout=45, what="the condition"):
    deadline = time.monotonic() + timeout
    while True:
        got = check()
        if got:
            return got
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.25)


# --------------------------------------------------------------------------------------------
# examples/webhook-to-queue
# --------------------------------------------------------------------------------------------

SECRET = "it's a secret to everybody"


def sign(body: bytes, secret=SECRET) -> str:
    # The README's `openssl dgst -sha256 -hmac "$SECRET"` over the raw body.
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def post(url, order, signature=..., delivery_id=None):
    """POSTs `order` (a dict, or raw bytes) to the webhook: (status, JSON reply)."""
    body = order if isinstance(order, bytes) else json.dumps(order).encode()
    headers = {"content-type": "application/json"}
    if signature is ...:
        signature = sign(body)
    if signature is not None:
        headers["X-Signature"] = signature
    if delivery_id:
        headers["X-Delivery-Id"] = delivery_id
    req = urllib.request.Request(url, data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, json.loads(r.read() or b"null")
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"null")


def worker_lines(up):
    """The worker's own log lines about orders, in time order."""
    out = up.cli("logs", "worker", "--grep", "order")
    return [ln for ln in out.splitlines() if re.search(r"\t(INFO|ERROR)\t", ln)]


@pytest.fixture(scope="module")
def webhook_up(tmp_path_factory):
    up = Up("webhook-to-queue", tmp_path_factory.mktemp("webhook-to-queue"))
    try:
        printed = up.wait_for(f"{up.base}/webhook", "watching")
        assert "queue orders.fifo → function worker" in printed, printed
        assert "role webhook-sender: created" in printed, printed
        # As the README: the secret is set once the server runs, before the first POST.
        assert "created secret webhook-secret" in up.cli("secret", "set", "webhook-secret",
                                                         stdin=SECRET)
        yield up
    finally:
        up.stop()


def test_webhook_signature_is_checked_and_orders_reach_the_worker(webhook_up):
    up = webhook_up
    url = f"{up.base}/webhook"
    forged = {"id": "o-forged", "customer": "c-1", "total": 1}
    body = json.dumps(forged).encode()
    assert post(url, forged, signature=None) == (401, {"message": "invalid signature"})
    assert post(url, forged, signature=sign(body, "another secret"))[0] == 401
    assert post(url, forged, signature=sign(body)[:-2] + "00")[0] == 401
    assert post(url, forged, signature=sign(body).replace("sha256=", "sha1="))[0] == 401
    # Signed, but the body changed on the way.
    assert post(url, body + b" ", signature=sign(body))[0] == 401
    # Signed but not an order.
    assert post(url, b"[1, 2]")[0] == 400

    status, sent = post(url, {"id": "o-1", "customer": "c-1", "total": 42}, delivery_id="d-1")
    assert status == 202, sent
    assert re.fullmatch(r"[0-9a-f-]{36}", sent["messageId"]), sent
    assert re.fullmatch(r"\d{20}", sent["sequenceNumber"]), sent
    # The sender retries the delivery: the queue answers with the first message.
    assert post(url, {"id": "o-1", "customer": "c-1", "total": 42, "retry": 1},
                delivery_id="d-1") == (202, sent)

    eventually(lambda: any("processed order o-1 of c-1 (receive 1)" in ln
                           for ln in worker_lines(up)), what="the worker to process o-1")
    # A later order of the same group: once it is processed, anything queued before it in
    # the group would have been too.
    assert post(url, {"id": "o-2", "customer": "c-1", "total": 7})[0] == 202
    eventually(lambda: any("processed order o-2 of c-1" in ln for ln in worker_lines(up)),
               what="the worker to process o-2")
    lines = worker_lines(up)
    assert not [ln for ln in lines if "o-forged" in ln], lines
    assert len([ln for ln in lines if "processed order o-1 " in ln]) == 1, lines
    webhook_logs = up.cli("logs", "webhook")
    assert "queued order o-1 of c-1" in webhook_logs
    assert "rejected: bad or missing X-Signature" in webhook_logs
    # The role's temporary credentials were used and never shown.
    assert SECRET not in webhook_logs


def test_a_bad_order_fails_alone_in_its_group_and_ends_in_the_dead_letter_queue(webhook_up):
    up = webhook_up
    url = f"{up.base}/webhook"
    bad = {"id": "o-bad", "customer": "c-2", "bad": True}
    for order in (bad, {"id": "o-after", "customer": "c-2"}, {"id": "o-other", "customer": "c-3"}):
        status, reply = post(url, order)
        assert status == 202, reply

    def done(lines):
        return any("processed order o-after of c-2" in ln for ln in lines)

    lines = eventually(lambda: (lambda ls: ls if done(ls) else None)(worker_lines(up)),
                       timeout=60, what="o-after to be processed")
    # Another group is not held up by the failure.
    assert any("processed order o-other of c-3 (receive 1)" in ln for ln in lines), lines
    failed = [i for i, ln in enumerate(lines) if "of c-2: order flagged as bad" in ln]
    # Received twice (max_receive_count = 2), failed twice, then dead-lettered.
    assert len(failed) == 2, lines
    after = [i for i, ln in enumerate(lines) if "processed order o-after of c-2" in ln]
    # FIFO: the group's later order is processed once, only after the bad one left the queue.
    assert len(after) == 1 and after[0] > failed[-1], lines

    dead = up.cli("--json", "queue", "receive", "orders-dlq.fifo", "-n", "10", "--wait", "2")
    bodies = [json.loads(m["body"]) for m in json.loads(dead)["messages"]]
    assert bodies == [bad], dead


def test_the_webhooks_role_allows_only_its_queue(webhook_up):
    """Pointing the webhook at another queue (the manifest's QUEUE_NAME, redeployed by
    `nimbus up`) fails with SQS's AccessDenied: the role names orders.fifo alone."""
    up = webhook_up
    manifest = up.project / "nimbus.toml"
    text = manifest.read_text()
    assert 'QUEUE_NAME = "orders.fifo"' in text
    manifest.write_text(text.replace('QUEUE_NAME = "orders.fifo"',
                                     'QUEUE_NAME = "orders-dlq.fifo"'))
    up.wait_for("deployed webhook")
    status, reply = post(f"{up.base}/webhook", {"id": "o-x", "customer": "c-9"})
    assert status == 502, reply
    # The function's log lines are stored in batches: wait for them.
    logs = eventually(lambda: (lambda out: out if "orders-dlq.fifo" in out else None)(
        up.cli("logs", "webhook", "--grep", "AccessDenied")), timeout=20,
        what="the webhook's AccessDenied log line naming orders-dlq.fifo")
    assert "orders-dlq.fifo" in logs, logs
    dead = up.cli("--json", "queue", "receive", "orders-dlq.fifo", "-n", "10", "--wait", "1")
    assert json.loads(dead)["messages"] == [] or all(
        "o-x" not in m["body"] for m in json.loads(dead)["messages"]), dead


# --------------------------------------------------------------------------------------------
# examples/thumbnailer
# --------------------------------------------------------------------------------------------

def png(width, height) -> bytes:
    """An RGB PNG of a gradient, written with zlib (no imaging library in the test venv)."""
    rows = b"".join(
        b"\x00" + b"".join(bytes((x % 256, y % 256, (x + y) % 256)) for x in range(width))
        for y in range(height))

    def chunk(kind, data):
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
            + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))


def png_size(data: bytes):
    assert data[:8] == b"\x89PNG\r\n\x1a\n", data[:16]
    return struct.unpack(">II", data[16:24])


def test_uploads_become_thumbnails_within_the_role(tmp_path):
    up = Up("thumbnailer", tmp_path)
    try:
        # The first deploy installs Pillow and boto3 from PyPI (cached afterwards).
        printed = up.wait_for("S3 API on http://", "watching", timeout=600)
        assert "role thumbnailer: created" in printed, printed
        assert "bucket uploads created" in printed, printed
        assert "s3 trigger: bucket uploads (s3:ObjectCreated:* on in/*) → thumbnailer" in printed
        s3_url = "http://" + re.search(r"S3 API on http://([0-9.:]+)", printed).group(1)
        creds = configparser.ConfigParser()
        creds.read(up.data / "credentials")
        s3 = boto3.client(
            "s3", endpoint_url=s3_url, region_name="us-east-1",
            aws_access_key_id=creds["default"]["aws_access_key_id"],
            aws_secret_access_key=creds["default"]["aws_secret_access_key"],
            config=Config(s3={"addressing_style": "path"}))
        # As the README: the thumbnails' bucket is made once.
        s3.create_bucket(Bucket="thumbnails")

        s3.put_object(Bucket="uploads", Key="in/cat photo.png", Body=png(600, 400),
                      ContentType="image/png")
        s3.put_object(Bucket="uploads", Key="elsewhere/dog.png", Body=png(300, 300))
        s3.put_object(Bucket="uploads", Key="in/notes.txt", Body=b"not an image")

        def thumb():
            try:
                return s3.get_object(Bucket="thumbnails", Key="thumbs/cat photo.png")
            except botocore.exceptions.ClientError:
                return None

        got = eventually(thumb, timeout=120, what="the thumbnail of in/cat photo.png")
        assert got["ContentType"] == "image/png"
        assert got["Metadata"] == {"source": "s3://uploads/in/cat photo.png"}
        assert png_size(got["Body"].read()) == (128, 85)

        logs = eventually(lambda: (lambda t: "notes.txt: not an image" in t and t)(
            up.cli("logs", "thumbnailer")), timeout=60, what="the skipped text file")
        assert "-> s3://thumbnails/thumbs/cat photo.png (128x85)" in logs, logs
        # Only in/ triggers the function.
        keys = [o["Key"] for o in s3.list_objects_v2(Bucket="thumbnails").get("Contents", [])]
        assert keys == ["thumbs/cat photo.png"], keys
        assert "elsewhere/dog.png" not in logs

        # The role reads in/ only: an event naming another key gets S3's AccessDenied.
        s3.put_object(Bucket="uploads", Key="private/secret.png", Body=png(10, 10))
        event = {"Records": [{"s3": {"bucket": {"name": "uploads"},
                                     "object": {"key": "private/secret.png"}}}]}
        out = subprocess.run([str(nimbus_bin()), "invoke", "thumbnailer", "--data",
                              json.dumps(event)], capture_output=True, text=True, env=up.env,
                             timeout=60)
        assert out.returncode != 0 and "AccessDenied" in out.stdout + out.stderr, out
    finally:
        up.stop()

