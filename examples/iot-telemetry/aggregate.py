"""Folds batches of sensor telemetry (MQTT `sensors/<device>/telemetry`) into PostgreSQL.

Each invocation gets up to a few hundred MQTT messages (the source mapping batches them),
each a JSON object {"device": "d-1", "seq": 17, "ts": 1764900000123, "temp": 21.5}: `seq`
is the device's own message counter and `ts` its clock in epoch milliseconds. In ONE
transaction (one SQL statement) per batch the function

- inserts the readings, `ON CONFLICT DO NOTHING RETURNING`: a message the broker delivers
  again (MQTT QoS 1 is at least once, and a failed batch is retried) inserts nothing;
- folds only the rows that were really inserted into `readings_minute` (count, sum, min,
  max per device and minute of the reading's own timestamp) with an upsert;
- raises an alert (`alerts`, at most one per device, minute and reason) for a reading above
  TEMP_LIMIT; an INSERT there invokes `notify` through a PostgreSQL source.

So a batch is counted entirely or not at all, and never twice. A malformed message (not
JSON, a missing or mistyped field) is skipped with a log line: retrying it could never
make it valid, and failing the batch for it would hold up every good reading behind it.
A database error fails the whole batch (nothing of it was committed), which the mapping
retries (maximum_retry_attempts) and then hands to its on-failure queue.
"""

import math
import os
import re
import time

import psycopg
from psycopg import errors

DATABASE_URL = os.environ["DATABASE_URL"]
TEMP_LIMIT = float(os.environ.get("TEMP_LIMIT", "80"))
# A device id is one MQTT topic level that is safe in `alerts/<device>` too.
DEVICE = re.compile(r"[A-Za-z0-9_.:-]{1,64}")
# Readings from before 2000 or after 2100 are a device with a broken clock.
TS_RANGE = (946_684_800_000, 4_102_444_800_000)

FOLD = """
WITH batch AS (
    SELECT * FROM unnest(%(device)s::text[], %(seq)s::bigint[], %(ts)s::bigint[],
                         %(temp)s::float8[]) AS b(device, seq, ts_ms, temp)
), inserted AS (
    INSERT INTO readings (device, seq, ts, temp)
    SELECT device, seq, timestamptz 'epoch' + ts_ms * interval '1 millisecond', temp
    FROM batch ORDER BY device, seq
    ON CONFLICT (device, seq) DO NOTHING
    RETURNING device, date_trunc('minute', ts) AS minute, temp
), folded AS (
    INSERT INTO readings_minute AS m (device, minute, n, sum, min, max)
    SELECT device, minute, count(*), sum(temp), min(temp), max(temp)
    FROM inserted GROUP BY device, minute ORDER BY device, minute
    ON CONFLICT (device, minute) DO UPDATE
        SET n = m.n + excluded.n, sum = m.sum + excluded.sum,
            min = least(m.min, excluded.min), max = greatest(m.max, excluded.max)
    RETURNING 1
), raised AS (
    INSERT INTO alerts (device, minute, temp, reason)
    SELECT DISTINCT ON (device, minute) device, minute, temp, 'temp_above_limit'
    FROM inserted WHERE temp > %(limit)s ORDER BY device, minute, temp DESC
    ON CONFLICT (device, minute, reason) DO NOTHING
    RETURNING device, minute, temp
)
SELECT (SELECT count(*) FROM inserted), (SELECT count(*) FROM folded),
       (SELECT coalesce(json_agg(raised), '[]') FROM raised)
"""

_conn = None


def connection():
    """The instance's connection, opened at the first batch and reused by the next ones."""
    global _conn
    if _conn is None or _conn.closed:
        # UTC: the minute of a reading does not depend on the server's time zone.
        _conn = psycopg.connect(DATABASE_URL, autocommit=True, connect_timeout=10,
                                application_name="iot-aggregate", options="-c TimeZone=UTC")
    return _conn


def number(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def parse(record):
    """(device, seq, ts_ms, temp) of one MQTT record, or ValueError saying what is wrong."""
    if record.get("payloadEncoding") != "json":
        raise ValueError("the payload is not JSON")
    payload = record.get("payload")
    if not isinstance(payload, dict):
        raise ValueError("the payload is not a JSON object")
    # sensors/<device>/telemetry: the device is the level before the last one. A device may
    # only publish on its own topic (broker ACLs), so the topic is what identifies it.
    levels = record.get("topic", "").split("/")
    device = levels[-2] if len(levels) >= 2 else ""
    if not DEVICE.fullmatch(device):
        raise ValueError(f"no valid device id in the topic {record.get('topic')!r}")
    if payload.get("device", device) != device:
        raise ValueError(f"device {payload.get('device')!r} published on {device}'s topic")
    seq, ts, temp = payload.get("seq"), payload.get("ts"), payload.get("temp")
    if not (isinstance(seq, int) and not isinstance(seq, bool) and 0 <= seq < 2**63):
        raise ValueError(f"seq {seq!r} is not a non-negative integer")
    if not (number(ts) and TS_RANGE[0] <= ts < TS_RANGE[1]):
        raise ValueError(f"ts {ts!r} is not a time in epoch milliseconds")
    if not number(temp):
        raise ValueError(f"temp {temp!r} is not a number")
    return device, seq, int(ts), float(temp)


def fold(readings):
    """Runs FOLD in one transaction: (new readings, minute rows touched, alerts raised)."""
    params = {
        "device": [r[0] for r in readings], "seq": [r[1] for r in readings],
        "ts": [r[2] for r in readings], "temp": [r[3] for r in readings], "limit": TEMP_LIMIT,
    }
    for attempt in (1, 2, 3):
        conn = connection()
        try:
            with conn.transaction():
                return conn.execute(FOLD, params).fetchone()
        except (errors.DeadlockDetected, errors.SerializationFailure) as e:
            # Concurrent batches (the mapping runs up to 4) updating the same minute rows.
            if attempt == 3:
                raise
            print(f"retrying the batch's transaction after: {e}")
            time.sleep(0.1 * attempt)
        except psycopg.OperationalError:
            # The connection is gone (server restart, network): the next batch reconnects,
            # and the mapping retries this one.
            conn.close()
            raise


def handler(event, context):
    records = event.get("Records", [])
    readings, seen, malformed = [], set(), 0
    for record in records:
        try:
            reading = parse(record)
        except ValueError as e:
            malformed += 1
            print(f"skipping malformed message {record.get('eventID')} on "
                  f"{record.get('topic')}: {e}")
            continue
        if reading[:2] not in seen:  # the same message twice in one batch
            seen.add(reading[:2])
            readings.append(reading)
    new = minutes = 0
    alerts = []
    if readings:
        new, minutes, alerts = fold(readings)
    for alert in alerts:
        print(f"alert: {alert['device']} at {float(alert['temp'])} in the minute "
              f"{alert['minute']}")
    duplicates = len(records) - malformed - new
    print(f"batch of {len(records)}: {new} new readings, {duplicates} duplicates, "
          f"{malformed} malformed, {minutes} minute rows updated, {len(alerts)} alerts")
    return {"records": len(records), "new": new, "malformed": malformed, "alerts": len(alerts)}
