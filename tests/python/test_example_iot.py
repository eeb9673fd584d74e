"""examples/iot-telemetry, run as its README says: `nimbus up` on a copy of the example
against the machine's PostgreSQL (made logical by .ci/postgres-logical) and Mosquitto, then
driven as a fleet of sensors would drive it.

3,000 QoS 1 readings from 10 devices across 3 minutes (by the readings' own timestamps),
with duplicates (the same device and seq published again) and malformed messages mixed in,
must end as exactly the per-device, per-minute count/sum/min/max the test computes itself,
in far fewer invocations than messages (the metrics and the mapping's counters); every
reading above the limit raises one alert per device and minute, each published exactly
once on MQTT `alerts/<device>` with `notified_at` set, and the UPDATE doing that reaches the
notify mapping only as a filtered record.

Each run has its own database (`iot_test_<hex>`) and MQTT topic prefix (the copied
nimbus.toml is rewritten), so it can run beside the rest of the suite. Dependencies:
psycopg[binary] and paho-mqtt for this process (tests/python/requirements.txt); the
functions' own are installed by `nimbus up` into target/test-python/build-cache.
Run: NIMBUS_BIN=target/debug/nimbus python3 -m pytest tests/python/test_example_iot.py -q
"""

import fcntl
import json
import os
import random
import socket
import subprocess
import tempfile
import threading
import time
import urllib.request
import uuid
from collections import Counter, defaultdict
from datetime import datetime

import paho.mqtt.client as mqtt
import psycopg
import pytest

from conftest import REPO_ROOT, free_port
from test_examples import Up

PG = "postgresql://postgres@127.0.0.1:5432"
MQTT_HOST, MQTT_PORT = "127.0.0.1", 1883
DEVICES = [f"dev-{i:02d}" for i in range(10)]
PER_DEVICE = 300              # readings per device: 3,000 in all
TEMP_LIMIT = 80.0             # the manifest's TEMP_LIMIT


def require(name, port, how):
    """Fails (never skips) when a service the example needs is not listening."""
    try:
        socket.create_connection(("127.0.0.1", port), timeout=3).close()
    except OSError as e:
        pytest.fail(f"{name} is not reachable on 127.0.0.1:{port} ({e}): {how}")


def wal_level():
    with psycopg.connect(f"{PG}/postgres", autocommit=True, connect_timeout=10) as c:
        return c.execute("SHOW wal_level").fetchone()[0]


def make_postgres_logical(wait=300):
    """`.ci/postgres-logical` under the lock the Rust tests take (tests/support/brokers.rs),
    unless the server is logical already (then the script would do nothing)."""
    if wal_level() == "logical":
        return
    path = os.path.join(tempfile.gettempdir(), "nimbus-postgres-logical.lock")
    with open(path, "w") as lock:  # not inherited by the script (O_CLOEXEC)
        deadline = time.monotonic() + wait
        while True:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if wal_level() == "logical":
                    return  # someone else did it meanwhile
                assert time.monotonic() < deadline, (
                    f"{path} stayed locked for {wait} s (a process that inherited it, e.g. a "
                    "PostgreSQL restarted under `flock FILE cmd`, holds it until it exits)")
                time.sleep(1)
        out = subprocess.run(["bash", str(REPO_ROOT / ".ci" / "postgres-logical")],
                             capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, f".ci/postgres-logical failed:\n{out.stdout}{out.stderr}"


def eventually(check, timeout=60, what="the condition", every=0.5):
    """Polls `check` until it is true; `what` (a string, or a function making one at the
    end) says what was awaited."""
    deadline = time.monotonic() + timeout
    while True:
        got = check()
        if got:
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for "
                                 f"{what() if callable(what) else what}")
        time.sleep(every)


def query(database, sql, *params):
    """Rows of `sql`, on a connection of its own (so a PostgreSQL restart by another test
    only costs one poll)."""
    try:
        with psycopg.connect(f"{PG}/{database}", autocommit=True, connect_timeout=10) as c:
            return c.execute(sql, params).fetchall()
    except psycopg.OperationalError as e:
        print(f"query failed, trying again: {e}")
        time.sleep(2)
        with psycopg.connect(f"{PG}/{database}", autocommit=True, connect_timeout=10) as c:
            return c.execute(sql, params).fetchall()


class IotUp(Up):
    """`Up` (test_examples.py) on a copy of the example with this run's database and topic
    prefix, and a metrics listener of its own."""

    def __init__(self, tmp_path, database, prefix):
        self.metrics_port = free_port()
        super().__init__("iot-telemetry", tmp_path, replace=[
            ('127.0.0.1:5432/iot"', f'127.0.0.1:5432/{database}"', 3),
            ('topic = "sensors/+/telemetry"', f'topic = "{prefix}/sensors/+/telemetry"', 1),
            ('ALERT_TOPIC_PREFIX = "alerts/"', f'ALERT_TOPIC_PREFIX = "{prefix}/alerts/"', 1),
        ], extra_args=["--metrics-listen", f"127.0.0.1:{self.metrics_port}"])

    def sources(self):
        """The mappings by function, each with its `status` (`nimbus --json sources`)."""
        return {m["function"].split(":")[0]: m
                for m in json.loads(self.cli("--json", "sources"))["sources"]}

    def invocations(self, function, trigger):
        """`nimbus_invocations_total` of `function` by `trigger`, every outcome."""
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics",
                                    timeout=10) as r:
            text = r.read().decode()
        total = 0
        for line in text.splitlines():
            if (line.startswith("nimbus_invocations_total{") and f'function="{function}"' in line
                    and f'trigger="{trigger}"' in line):
                total += int(float(line.rsplit(" ", 1)[1]))
        return total

    def diagnosis(self):
        """The mappings' states and the functions' last log lines, for a failure message."""
        try:
            states = {f: m["status"] for f, m in self.sources().items()}
            logs = {f: self.cli("logs", f, "-n", "15") for f in ("aggregate", "notify")}
        except AssertionError as e:
            return f"(no diagnosis: {e})"
        return f"mappings {states}; logs {logs}"

class Subscriber:
    """An MQTT client collecting what arrives on one topic filter (QoS 1)."""

    def __init__(self, topic):
        self.messages, self.lock = [], threading.Lock()
        subscribed = threading.Event()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5,
                                  client_id=f"iot-test-sub-{uuid.uuid4().hex[:8]}")
        self.client.on_connect = lambda c, u, f, rc, p: c.subscribe(topic, qos=1)
        self.client.on_subscribe = lambda c, u, mid, rcs, p: subscribed.set()
        self.client.on_message = self._on_message
        self.client.connect(MQTT_HOST, MQTT_PORT)
        self.client.loop_start()
        assert subscribed.wait(10), f"could not subscribe to {topic}"

    def _on_message(self, client, userdata, msg):
        with self.lock:
            self.messages.append((msg.topic, json.loads(msg.payload)))

    def received(self):
        with self.lock:
            return list(self.messages)

    def close(self):
        self.client.loop_stop()
        self.client.disconnect()


def fleet(rng, base_ms):
    """The messages to publish, in order: (device, bytes), with duplicates and malformed
    ones mixed in; and the unique readings {(device, seq): (ts_ms, temp)}."""
    readings = {}
    messages = []
    for seq in range(1, PER_DEVICE + 1):
        for device in DEVICES:
            # 300 readings 0.6 s apart: three whole minutes from base_ms.
            ts = base_ms + (seq - 1) * 600 + rng.randrange(600)
            temp = rng.randrange(60, 140) / 4     # 15.0 to 34.75, exact in binary
            readings[(device, seq)] = (ts, temp)
            messages.append((device, {"device": device, "seq": seq, "ts": ts, "temp": temp}))
    # Readings above the limit, and one exactly at it (not above: no alert).
    for i in rng.sample(range(len(messages)), 8):
        device, body = messages[i]
        body["temp"] = rng.randrange(324, 380) / 4  # 81.0 to 94.75
        readings[(device, body["seq"])] = (body["ts"], body["temp"])
    device, body = messages[rng.randrange(len(messages))]
    if body["temp"] <= TEMP_LIMIT:
        body["temp"] = TEMP_LIMIT
        readings[(device, body["seq"])] = (body["ts"], body["temp"])
    out = [(device, json.dumps(body).encode()) for device, body in messages]
    # A device (or the broker) sending a reading again, sooner or later.
    for i in sorted(rng.sample(range(len(messages)), 25), reverse=True):
        device, payload = out[i]
        out.insert(rng.randrange(i + 1, len(out) + 1), (device, payload))
    # Malformed messages, mixed in all along.
    ts = base_ms + 1000
    bad = [
        ("dev-03", b"not json at all"),
        ("dev-04", json.dumps({"device": "dev-04", "seq": 9001}).encode()),
        ("dev-05", json.dumps({"device": "dev-05", "seq": "7", "ts": ts, "temp": 20}).encode()),
        ("dev-06", json.dumps({"device": "dev-99", "seq": 9002, "ts": ts, "temp": 20}).encode()),
        ("dev-07", json.dumps({"device": "dev-07", "seq": 9003, "ts": ts, "temp": "hot"}).encode()),
        ("dev-08", b"[1, 2, 3]"),
    ]
    for k, message in enumerate(bad):
        out.insert((k + 1) * len(out) // (len(bad) + 1), message)
    return out, readings, len(bad)


def expected_minutes(readings):
    """{(device, minute as epoch ms): (n, sum, min, max)}, each reading counted once."""
    groups = defaultdict(list)
    for (device, _seq), (ts, temp) in readings.items():
        groups[(device, ts // 60_000 * 60_000)].append(temp)
    return {k: (len(v), sum(v), min(v), max(v)) for k, v in groups.items()}


def epoch_ms(t: datetime) -> int:
    return round(t.timestamp() * 1000)


def publish_all(prefix, messages, rate=1000):
    """Publishes with QoS 1 at about `rate` messages a second, as a fleet of sensors would;
    waits for every PUBACK.

    Paced because Mosquitto keeps at most `max_queued_messages` (default 1,000) messages
    for a session beyond the ones in flight (the mapping's Receive Maximum, here 500 x 4)
    and drops the others, PUBACK given: an unpaced burst of 3,031 messages at cold
    functions measurably lost 31 (the README says to raise the limit for bursts)."""
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5,
                         client_id=f"iot-test-pub-{uuid.uuid4().hex[:8]}")
    client.max_queued_messages_set(0)
    client.max_inflight_messages_set(100)
    client.connect(MQTT_HOST, MQTT_PORT)
    client.loop_start()
    sent = []
    start = time.monotonic()
    try:
        for i, (device, payload) in enumerate(messages):
            sent.append(client.publish(f"{prefix}/sensors/{device}/telemetry", payload, qos=1))
            if i % 100 == 99:
                time.sleep(max(0.0, start + (i + 1) / rate - time.monotonic()))
        for info in sent:
            info.wait_for_publish(timeout=30)
        assert all(info.is_published() for info in sent), "the broker did not acknowledge all"
    finally:
        client.loop_stop()
        client.disconnect()
    return time.monotonic() - start


@pytest.fixture
def database():
    require("PostgreSQL", 5432, "start it: pg_ctlcluster --skip-systemctl-redirect 15 main start")
    make_postgres_logical()
    name = f"iot_test_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(f"{PG}/postgres", autocommit=True) as admin:
        admin.execute(f"CREATE DATABASE {name}")
    try:
        # As the README: psql -f schema.sql.
        out = subprocess.run(["psql", "-h", "127.0.0.1", "-U", "postgres", "-d", name, "-q",
                              "-v", "ON_ERROR_STOP=1", "-f",
                              str(REPO_ROOT / "examples" / "iot-telemetry" / "schema.sql")],
                             capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        yield name
    finally:
        with psycopg.connect(f"{PG}/postgres", autocommit=True) as admin:
            # Deleting the mapping drops its slot; this catches one a failed run left.
            admin.execute("SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots"
                          " WHERE database = %s AND NOT active", (name,))
            admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@pytest.fixture
def iot_up(database, tmp_path):
    require("Mosquitto", MQTT_PORT, "start it: mosquitto -d -c /etc/mosquitto/mosquitto.conf")
    prefix = f"iot-test-{uuid.uuid4().hex[:8]}"
    up = IotUp(tmp_path, database, prefix)
    try:
        printed = up.wait_for("watching")
        assert "mqtt" in printed and "postgres" in printed, printed
        eventually(lambda: all(m["status"]["state"] == "connected"
                               for m in up.sources().values()) and len(up.sources()) == 2,
                   timeout=60, what=lambda: f"both mappings to be connected: {up.diagnosis()}")
        up.prefix, up.database = prefix, database
        yield up
        # As the README's last step: deleting the mappings drops the replication slot.
        for m in up.sources().values():
            up.cli("sources", "rm", m["uuid"])
    finally:
        up.stop()


def test_telemetry_is_folded_per_minute_and_alerts_are_notified_once(iot_up):
    up = iot_up
    rng = random.Random(16)
    # Three whole minutes, ten minutes ago: the readings' own clock decides their minute.
    base_ms = (int(time.time()) // 60 - 10) * 60_000
    messages, readings, malformed = fleet(rng, base_ms)
    want = expected_minutes(readings)
    assert len({m for _d, m in want}) == 3
    want_alerts = {(d, ts // 60_000 * 60_000) for (d, _s), (ts, t) in readings.items()
                   if t > TEMP_LIMIT}
    assert len(want_alerts) >= 5

    alerts_sub = Subscriber(f"{up.prefix}/alerts/#")
    try:
        # The fleet comes online: one reading each, and the functions' first cold starts.
        publish_all(up.prefix, messages[:len(DEVICES)])
        eventually(lambda: up.sources()["aggregate"]["status"]["records"] >= len(DEVICES),
                   timeout=60, what=lambda: f"the first readings to be taken; {up.diagnosis()}")
        took = publish_all(up.prefix, messages[len(DEVICES):])
        print(f"published {len(messages)} messages, the last {len(messages) - len(DEVICES)} "
              f"in {took:.1f} s")

        def sql(text, *params):
            return query(up.database, text, *params)

        got = {}

        def folded():
            got.clear()
            got.update({(d, epoch_ms(m)): (n, s, lo, hi) for d, m, n, s, lo, hi in sql(
                "SELECT device, minute, n, sum, min, max FROM readings_minute")})
            return got == want

        def differences():
            diff = {k: (got.get(k), v) for k, v in want.items() if got.get(k) != v}
            records = up.sources()["aggregate"]["status"]["records"]
            lost = (f"the mapping took {records} records of the {len(messages)} published "
                    "(did Mosquitto drop some? max_queued_messages); " if records < len(messages)
                    else "")
            return (f"readings_minute to match: {lost}{len(diff)} of {len(want)} rows differ "
                    f"(got, want): {dict(list(diff.items())[:5])}; unexpected rows "
                    f"{[k for k in got if k not in want][:5]}; {up.diagnosis()}")
        started = time.monotonic()
        eventually(folded, timeout=120, what=differences)
        print(f"readings_minute matched {time.monotonic() - started:.1f} s after publishing")
        assert sql("SELECT count(*) FROM readings")[0][0] == len(readings)

        # Batching: thousands of messages, a few invocations.
        invocations = up.invocations("aggregate", "mqtt")
        telemetry = up.sources()["aggregate"]["status"]
        print(f"aggregate: {invocations} invocations, mapping status {telemetry}")
        assert 1 <= invocations <= len(messages) // 20, invocations
        assert telemetry["batches"] == invocations, telemetry
        assert telemetry["records"] >= len(messages), telemetry
        assert telemetry["failed_records"] == 0 and telemetry["dead_lettered"] == 0, telemetry

        # The malformed messages were skipped, each with a log line, and stopped nothing.
        # Log lines are stored in batches: wait until every skip is there.
        def skipped_lines():
            out = up.cli("logs", "aggregate", "--grep", "skipping malformed message")
            lines = [ln for ln in out.splitlines() if "skipping malformed message" in ln]
            return (out, lines) if len(lines) >= malformed else None
        logs, skipped = eventually(skipped_lines, timeout=20,
                                   what=f"{malformed} 'skipping malformed message' log lines")
        assert len(skipped) >= malformed, logs
        for reason in ["the payload is not JSON", "ts None is not a time",
                       "seq '7' is not a non-negative integer",
                       "device 'dev-99' published on dev-06's topic",
                       "temp 'hot' is not a number", "the payload is not a JSON object"]:
            assert reason in logs, (reason, logs)

        # One alert per device and minute with a reading above the limit.
        rows = sql("SELECT id, device, minute, temp, reason, notified_at FROM alerts"
                   " ORDER BY id")
        assert {(d, epoch_ms(m)) for _i, d, m, _t, _r, _n in rows} == want_alerts, rows
        assert len(rows) == len(want_alerts)
        assert all(t > TEMP_LIMIT and r == "temp_above_limit" for _i, _d, _m, t, r, _n in rows)

        # Each published once on MQTT, then marked notified.
        def notified():
            return (sql("SELECT count(*) FROM alerts WHERE notified_at IS NULL")[0][0] == 0
                    and len(alerts_sub.received()) >= len(rows))
        eventually(notified, timeout=60, what=lambda: f"every alert to be notified: "
                   f"{len(alerts_sub.received())} of {len(rows)} received; {up.diagnosis()}")
        # The notify mapping saw its own UPDATEs (MODIFY) and filtered them out.
        eventually(lambda: up.sources()["notify"]["status"]["filtered"] == len(rows),
                   timeout=30, what=f"the notify mapping to filter {len(rows)} MODIFY records")
        time.sleep(2)  # a duplicate would have arrived by now
        received = alerts_sub.received()
        per_alert = Counter(body["alert"] for _topic, body in received)
        assert per_alert == Counter({i: 1 for i, *_ in rows}), received
        by_id = {i: (d, m, t) for i, d, m, t, _r, _n in rows}
        for topic, body in received:
            device, minute, temp = by_id[body["alert"]]
            assert topic == f"{up.prefix}/alerts/{device}", (topic, body)
            assert (body["device"], body["temp"], body["reason"]) == (
                device, temp, "temp_above_limit"), body
            assert datetime.fromisoformat(body["minute"]) == minute, body
        status = up.sources()["notify"]["status"]
        assert status["failed_records"] == 0, status
        assert up.invocations("notify", "postgres") == status["batches"] >= 1

        # The PostgreSQL source delivers a change again after a failed batch or a restart:
        # replaying the INSERT changes of the alerts publishes nothing more.
        replay = {"Records": [{"eventName": "INSERT", "eventSource": "nimbus:postgres",
                               "dynamodb": {"Keys": {"id": {"N": str(i)}}}}
                              for i, *_ in rows]}
        reply = json.loads(up.cli("invoke", "notify", "--data", json.dumps(replay)))
        assert reply == {"notified": 0, "skipped": len(rows)}, reply
        time.sleep(1)
        assert len(alerts_sub.received()) == len(rows), alerts_sub.received()
    finally:
        alerts_sub.close()
