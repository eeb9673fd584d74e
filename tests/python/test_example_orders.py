"""examples/orders-pipeline, run as its README says: `nimbus up` on a copy of it (its
database, queue, routing key, subject and stream renamed for this run, so it can run beside
the rest of the suite), orders published to RabbitMQ's amq.topic, outcomes read in
PostgreSQL, on the built-in queue rejected-orders and from `nimbus targets`.

- validate (RabbitMQ source) puts valid orders on the event bus with the unmodified AWS SDK
  for JavaScript v3 and its role's credentials; the rule valid-orders publishes them to a
  NATS JetStream subject (a target); store (JetStream source, the stream created by its
  mapping) writes them to PostgreSQL through host_services, idempotently; summary
  (PostgreSQL change stream) keeps customer_summary.
- Invalid orders are batch item failures: after the retries they reach rejected-orders as
  Lambda's invocation records, and never the orders table.
- Orders published twice are stored once.

Needs PostgreSQL (made logical by .ci/postgres-logical under the suite's lock), RabbitMQ
(guest/guest) and NATS with JetStream on their usual local ports, and `pika` and
`psycopg[binary]` (tests/python/requirements.txt). Run:
`NIMBUS_BIN=target/debug/nimbus python3 -m pytest tests/python/test_example_orders.py -q`.
"""

import base64
import configparser
import fcntl
import json
import random
import socket
import subprocess
import tempfile
import time
import uuid
from collections import defaultdict
from decimal import Decimal

import boto3
import pika
import psycopg

from conftest import REPO_ROOT
from test_examples import Up, eventually

PG = "host=127.0.0.1 port=5432 user=postgres"
AMQP = "amqp://guest:guest@127.0.0.1:5672/%2f"
NATS = ("127.0.0.1", 4222)
EXAMPLE = REPO_ROOT / "examples" / "orders-pipeline"


def require(name, addr, hint):
    try:
        socket.create_connection(addr, timeout=3).close()
    except OSError as e:
        raise AssertionError(f"{name} is not reachable at {addr[0]}:{addr[1]} ({e}): {hint}")


def make_postgres_logical():
    """`.ci/postgres-logical` under the lock the Rust tests take (it may restart the
    cluster)."""
    require("PostgreSQL", ("127.0.0.1", 5432),
            "start it (pg_ctlcluster --skip-systemctl-redirect 15 main start)")
    with open(f"{tempfile.gettempdir()}/nimbus-postgres-logical.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        out = subprocess.run(["bash", str(REPO_ROOT / ".ci" / "postgres-logical")],
                             capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, f".ci/postgres-logical failed: {out.stdout}{out.stderr}"


def orders_up(tmp_path, names):
    """`Up` on a copy of the example whose broker and database names are this run's."""
    return Up("orders-pipeline", tmp_path, replace=[
        ('127.0.0.1:5432/orders"', f'127.0.0.1:5432/{names["db"]}"', 3),
        ('topic = "orders"', f'topic = "{names["queue"]}"', 1),
        ('routing_key = "orders.new"', f'routing_key = "{names["routing_key"]}"', 1),
        ('"orders.valid"', f'"{names["subject"]}"', 2),
        ('stream = "ORDERS"', f'stream = "{names["stream"]}"', 1),
    ])


def nats_delete_stream(name):
    """Deletes a JetStream stream with the NATS protocol's $JS API (best effort)."""
    try:
        with socket.create_connection(NATS, timeout=5) as s:
            s.recv(4096)  # INFO
            s.sendall(b'CONNECT {"verbose":false,"pedantic":false}\r\n'
                      b"SUB _INBOX.cleanup 1\r\n"
                      + f"PUB $JS.API.STREAM.DELETE.{name} _INBOX.cleanup 0\r\n\r\n".encode()
                      + b"PING\r\n")
            got = b""
            deadline = time.monotonic() + 5
            while b"MSG _INBOX.cleanup" not in got and time.monotonic() < deadline:
                got += s.recv(4096)
    except OSError:
        pass


# --------------------------------------------------------------------------------------------
# The orders
# --------------------------------------------------------------------------------------------

SKUS = {"sku-apple": Decimal("0.50"), "sku-bread": Decimal("2.25"),
        "sku-cheese": Decimal("7.90"), "sku-wine": Decimal("12.00"),
        "sku-free-bag": Decimal("0.00")}
CUSTOMERS = ["alice", "bob", "carol", "dave", "erin", "frank", "grace"]


def make_orders(run, rng, count=200, invalid=10, duplicates=5):
    """(valid orders, invalid orders, what to publish in order: duplicates included)."""
    def order(n):
        items = []
        for _ in range(rng.randint(1, 3)):
            sku = rng.choice(list(SKUS))
            items.append({"sku": sku, "qty": rng.randint(1, 5), "price": float(SKUS[sku])})
        total = sum(Decimal(i["qty"]) * SKUS[i["sku"]] for i in items)
        return {"id": f"o-{run}-{n}", "customer": rng.choice(CUSTOMERS), "items": items,
                "total": float(total)}

    breakers = [
        lambda o: {**o, "total": o["total"] + 1},
        lambda o: {**o, "items": [{**o["items"][0], "qty": 0}]},
        lambda o: {**o, "customer": ""},
        lambda o: {**o, "items": [{**o["items"][0], "price": -1}],
                   "total": -o["items"][0]["qty"]},
        lambda o: {**o, "items": []},
        lambda o: {**o, "items": [{"qty": 1, "price": 1}], "total": 1},
        lambda o: {**o, "items": [{**o["items"][0], "qty": 1.5}]},
    ]
    orders = [order(n) for n in range(count)]
    bad_at = sorted(rng.sample(range(count), invalid))
    for k, at in enumerate(bad_at):
        orders[at] = breakers[k % len(breakers)](orders[at])
    bad_ids = {orders[at]["id"] for at in bad_at}
    valid = [o for o in orders if o["id"] not in bad_ids]
    invalid_orders = [o for o in orders if o["id"] in bad_ids]
    # A sender's retries: valid and invalid orders published a second time.
    again = rng.sample(valid, duplicates - 1) + rng.sample(invalid_orders, 1)
    publish = orders + again
    rng.shuffle(publish)
    return valid, invalid_orders, publish


def publish(orders, routing_key):
    """As the README's publisher: amq.topic, persistent, mandatory, publisher confirms."""
    conn = pika.BlockingConnection(pika.URLParameters(AMQP))
    try:
        ch = conn.channel()
        ch.confirm_delivery()
        for o in orders:
            # Raises UnroutableError when no queue is bound (the mapping is not up).
            ch.basic_publish(
                "amq.topic", routing_key, json.dumps(o).encode(),
                properties=pika.BasicProperties(content_type="application/json",
                                                delivery_mode=2, message_id=o["id"]),
                mandatory=True)
    finally:
        conn.close()


# --------------------------------------------------------------------------------------------
# The test
# --------------------------------------------------------------------------------------------

def test_orders_flow_from_rabbitmq_to_postgres_and_the_rejects_to_their_queue(tmp_path):
    make_postgres_logical()
    require("RabbitMQ", ("127.0.0.1", 5672), "start it (rabbitmq-server, guest/guest)")
    require("NATS", NATS, "start nats-server -js")
    uid = uuid.uuid4().hex[:10]
    names = {"db": f"orders_{uid}", "queue": f"orders-{uid}",
             "routing_key": f"orders.new.{uid}", "subject": f"orders.valid.{uid}",
             "stream": f"ORDERS_{uid.upper()}"}
    db = names["db"]
    with psycopg.connect(f"{PG} dbname=test", autocommit=True) as c:
        c.execute(f"CREATE DATABASE {db}")
    up = None
    try:
        # As the README: the schema is applied with psql.
        out = subprocess.run(["psql", "-h", "127.0.0.1", "-U", "postgres", "-d", db,
                              "-v", "ON_ERROR_STOP=1", "-q", "-f", str(EXAMPLE / "schema.sql")],
                             capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        up = orders_up(tmp_path, names)
        run(up, names)
    finally:
        if up is not None:
            up.stop()
        cleanup(names)


def run(up, names):
    printed = up.wait_for("watching", timeout=600)
    for line in ("role orders-validate: created", "target valid-orders ready",
                 "rule valid-orders on bus default (event pattern) → "
                 "arn:nimbus:targets:us-east-1:000000000000:target/valid-orders",
                 f"source rabbitmq {names['queue']} @ amqp://127.0.0.1:5672/%2f → validate",
                 f"source nats {names['subject']} @ nats://127.0.0.1:4222 → store",
                 "source postgres public.orders @ ", "→ summary"):
        assert line in printed, f"{line!r} not in:\n{printed}"

    # Every mapping connected: the RabbitMQ queue is declared and bound, the JetStream
    # stream created, the replication slot made.
    def connected():
        sources = json.loads(up.cli("--json", "sources"))["sources"]
        states = {s["function"]: s["status"]["state"] for s in sources}
        return states if set(states.values()) == {"connected"} and len(states) == 3 else None
    eventually(connected, timeout=60, what="the three source mappings to connect")

    rng = random.Random(names["db"])
    valid, invalid, to_publish = make_orders(names["db"][-6:], rng)
    assert len(to_publish) == 205 and len(invalid) == 10
    started = time.monotonic()
    publish(to_publish, names["routing_key"])

    # Every valid order stored once, none of the invalid ones.
    want = {o["id"]: o for o in valid}
    with psycopg.connect(f"{PG} dbname={names['db']}", autocommit=True) as db:
        def stored():
            rows = db.execute("SELECT id, customer, total, items FROM orders").fetchall()
            return rows if len(rows) >= len(want) else None
        rows = eventually(stored, timeout=90, what=f"{len(want)} orders in the orders table")
        stored_at = time.monotonic() - started
        ids = [r[0] for r in rows]
        assert not {o["id"] for o in invalid} & set(ids), "an invalid order was stored"
        assert sorted(ids) == sorted(want), "the stored ids are not the valid ones"
        for id_, customer, total, items in rows:
            o = want[id_]
            assert (customer, total, items) == (o["customer"], Decimal(str(o["total"])),
                                                o["items"]), id_

        # The summary, as the test computes it from the valid orders.
        expected = defaultdict(lambda: [0, Decimal("0")])
        for o in valid:
            expected[o["customer"]][0] += 1
            expected[o["customer"]][1] += Decimal(str(o["total"]))
        expected = {c: (n, r) for c, (n, r) in expected.items()}

        def summary():
            got = {c: (n, r) for c, n, r in
                   db.execute("SELECT customer, orders, revenue FROM customer_summary")}
            return got if got == expected else None
        eventually(summary, timeout=60,
                   what=f"customer_summary to equal {expected} (it is "
                        f"{db.execute('SELECT customer, orders, revenue FROM customer_summary').fetchall()})")
        summarised_at = time.monotonic() - started

    # The invalid orders, after their retries, in rejected-orders as invocation records.
    creds = configparser.ConfigParser()
    creds.read(up.data / "credentials")
    sqs = boto3.client("sqs", endpoint_url=up.base, region_name="us-east-1",
                       aws_access_key_id=creds["default"]["aws_access_key_id"],
                       aws_secret_access_key=creds["default"]["aws_secret_access_key"])
    url = sqs.get_queue_url(QueueName="rejected-orders")["QueueUrl"]
    rejected, records = set(), []

    def all_rejected():
        for m in sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10,
                                     WaitTimeSeconds=1).get("Messages", []):
            record = json.loads(m["Body"])
            records.append(record)
            for msgs in record["payload"]["rmqMessagesByQueue"].values():
                for msg in msgs:
                    rejected.add(json.loads(base64.b64decode(msg["data"]))["id"])
            sqs.delete_message(QueueUrl=url, ReceiptHandle=m["ReceiptHandle"])
        return rejected >= {o["id"] for o in invalid}
    eventually(all_rejected, timeout=60, what="the invalid orders in rejected-orders")
    assert rejected == {o["id"] for o in invalid}, rejected
    for record in records:
        assert record["requestContext"]["condition"] == "RetryAttemptsExhausted", record
        assert record["requestContext"]["approximateInvokeCount"] == 3, record  # 1 + 2 retries
        assert record["requestContext"]["functionArn"].endswith(":function:validate"), record
        assert record["responseContext"]["statusCode"] == 200, record

    # The target published each validated order (duplicates may be published again).
    targets = json.loads(up.cli("--json", "targets"))["targets"]
    target = next(t for t in targets if t["name"] == "valid-orders")
    assert target["status"]["delivered"] >= len(valid), target
    print(f"\norders stored after {stored_at:.1f} s, summary after {summarised_at:.1f} s; "
          f"{len(records)} rejection records; target {target['status']}")

    # validate logged why it rejected each order.
    # Log lines are stored in batches: wait until each rejection is there.
    logs = eventually(lambda: (lambda out: out if all(
        f"rejected order {o['id']} " in out for o in invalid) else None)(
        up.cli("logs", "validate", "--grep", "rejected order")), timeout=20,
        what="a 'rejected order' log line for each invalid order")
    for o in invalid:
        assert f"rejected order {o['id']} " in logs, (o, logs)


def cleanup(names):
    """Drops what this run made on the shared services (the replication slot holds the
    database until it is dropped)."""
    with psycopg.connect(f"{PG} dbname=test", autocommit=True) as c:
        for (slot,) in c.execute("SELECT slot_name FROM pg_replication_slots WHERE database = %s",
                                 (names["db"],)).fetchall():
            c.execute("SELECT pg_drop_replication_slot(%s)", (slot,))
        c.execute(f"DROP DATABASE IF EXISTS {names['db']} WITH (FORCE)")
    nats_delete_stream(names["stream"])
    try:
        conn = pika.BlockingConnection(pika.URLParameters(AMQP))
        conn.channel().queue_delete(names["queue"])
        conn.close()
    except pika.exceptions.AMQPError:
        pass
