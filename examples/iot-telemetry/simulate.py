#!/usr/bin/env python3
"""A fleet of simulated temperature sensors publishing to MQTT.

    python3 -m pip install paho-mqtt
    python3 simulate.py --devices 20 --rate 50 --seconds 30

Each device publishes `rate` readings a second on `sensors/<device>/telemetry` with QoS 1:
{"device": "sim-07", "seq": 1764900000123, "ts": 1764900000123, "temp": 23.4}. `seq`
counts the device's messages from a start taken from the clock, so a second run never
reuses the first run's numbers (the function stores each (device, seq) once). The
temperature wanders around a per-device baseline and, with probability --spike, jumps
above the alert limit.
"""

import argparse
import json
import random
import time

import paho.mqtt.client as mqtt


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=1883)
    p.add_argument("--prefix", default="sensors", help="topic prefix (default: sensors)")
    p.add_argument("--devices", type=int, default=10)
    p.add_argument("--rate", type=float, default=10, help="readings per device per second")
    p.add_argument("--seconds", type=float, default=10)
    p.add_argument("--spike", type=float, default=0.002,
                   help="probability that a reading is a spike above 80 (default 0.002)")
    args = p.parse_args()

    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    client.max_queued_messages_set(0)
    client.max_inflight_messages_set(100)
    client.connect(args.host, args.port)
    client.loop_start()

    devices = [f"sim-{i:02d}" for i in range(args.devices)]
    temp = {d: random.uniform(18, 30) for d in devices}
    seq = {d: int(time.time() * 1000) for d in devices}
    interval = 1 / args.rate
    start = time.monotonic()
    sent, spikes, pending = 0, 0, []
    while time.monotonic() - start < args.seconds:
        tick = time.monotonic()
        for d in devices:
            temp[d] += random.gauss(0, 0.3)
            reading = round(temp[d], 2)
            if random.random() < args.spike:
                reading = round(random.uniform(81, 95), 2)
                spikes += 1
            seq[d] += 1
            body = {"device": d, "seq": seq[d], "ts": int(time.time() * 1000), "temp": reading}
            pending.append(client.publish(f"{args.prefix}/{d}/telemetry", json.dumps(body), qos=1))
            sent += 1
        time.sleep(max(0.0, interval - (time.monotonic() - tick)))
    took = time.monotonic() - start
    for info in pending:
        info.wait_for_publish(timeout=30)
    acked = sum(info.is_published() for info in pending)
    client.loop_stop()
    client.disconnect()
    print(f"published {sent} readings from {len(devices)} devices in {took:.1f} s "
          f"({sent / took:.0f}/s), {acked} acknowledged by the broker, {spikes} spikes")


if __name__ == "__main__":
    main()
