"""Publishes each new alert to MQTT `alerts/<device>`, once.

Invoked by a PostgreSQL source on the table `alerts` (logical decoding): each record is a
change in DynamoDB Streams form; the mapping's filter lets only INSERTs through, so the
UPDATE below that sets `notified_at` (a MODIFY) does not invoke the function again.

At least once in, once out: the source delivers a change again when a batch failed or
Nimbus restarted before acknowledging it, so the function locks the alert's row, skips it
when `notified_at` is already set, publishes with QoS 1 (waiting for the broker's PUBACK)
and only then sets `notified_at` in the same transaction. A failure before the commit
(the broker is down, the database went away) fails the batch, which is retried; the
notified alerts of that batch are skipped the second time. Only a crash between the
PUBACK and the commit can publish an alert twice.
"""

import json
import os
import time
import uuid
from urllib.parse import urlsplit

import paho.mqtt.client as mqtt
import psycopg

DATABASE_URL = os.environ["DATABASE_URL"]
MQTT_URL = urlsplit(os.environ.get("MQTT_URL", "mqtt://127.0.0.1:1883"))
TOPIC_PREFIX = os.environ.get("ALERT_TOPIC_PREFIX", "alerts/")

_conn = None
_mqtt = None


def connection():
    """The instance's database connection, reused across invocations."""
    global _conn
    if _conn is None or _conn.closed:
        _conn = psycopg.connect(DATABASE_URL, autocommit=True, connect_timeout=10,
                                application_name="iot-notify", options="-c TimeZone=UTC")
    return _conn


def broker():
    """The instance's MQTT client: connected once, its network loop on a thread of its own
    (which also reconnects it when the connection drops)."""
    global _mqtt
    if _mqtt is None:
        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2,
                             client_id=f"iot-notify-{uuid.uuid4().hex[:12]}",
                             protocol=mqtt.MQTTv5)
        if MQTT_URL.username:
            client.username_pw_set(MQTT_URL.username, MQTT_URL.password)
        client.connect(MQTT_URL.hostname or "127.0.0.1", MQTT_URL.port or 1883, keepalive=30)
        client.loop_start()
        _mqtt = client
    deadline = time.monotonic() + 10
    while not _mqtt.is_connected():
        if time.monotonic() > deadline:
            raise RuntimeError(f"cannot connect to the MQTT broker {MQTT_URL.netloc}")
        time.sleep(0.05)
    return _mqtt


def publish(topic, message):
    info = broker().publish(topic, json.dumps(message), qos=1)
    info.wait_for_publish(timeout=10)  # raises when it could not be sent
    if not info.is_published():
        raise RuntimeError(f"no PUBACK for {topic} within 10 s")


def notify(alert_id):
    """Publishes alert `alert_id` unless it was already: True when it published."""
    conn = connection()
    with conn.transaction():
        row = conn.execute(
            "SELECT device, minute, temp, reason, created_at FROM alerts"
            " WHERE id = %s AND notified_at IS NULL FOR UPDATE", (alert_id,)).fetchone()
        if row is None:
            return False  # already notified (a redelivered change), or deleted
        device, minute, temp, reason, created_at = row
        publish(f"{TOPIC_PREFIX}{device}", {
            "alert": alert_id, "device": device, "minute": minute.isoformat(), "temp": temp,
            "reason": reason, "created_at": created_at.isoformat(),
        })
        conn.execute("UPDATE alerts SET notified_at = now() WHERE id = %s", (alert_id,))
    print(f"notified alert {alert_id}: {device} {reason} at {temp} in the minute "
          f"{minute.isoformat()}")
    return True


def handler(event, context):
    sent = skipped = 0
    for record in event.get("Records", []):
        if record.get("eventName") != "INSERT":
            continue  # the mapping's filter already keeps only INSERTs
        alert_id = int(record["dynamodb"]["Keys"]["id"]["N"])
        try:
            if notify(alert_id):
                sent += 1
            else:
                skipped += 1
                print(f"alert {alert_id} was already notified: skipped")
        except psycopg.OperationalError:
            _conn.close()  # the connection is gone: the next batch reconnects
            raise
    return {"notified": sent, "skipped": skipped}
