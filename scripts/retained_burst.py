#!/usr/bin/env python3
"""scripts/retained_burst.py — a Home Assistant discovery burst, side by side.

One paho-mqtt client (MQTT 5, its default in-flight window of 20) publishes N retained QoS 1
messages, each on its own topic, and waits for every PUBACK; the time from the first publish to
the last PUBACK is the figure. Each broker named runs on a fresh process on a free 127.0.0.1
port, alternating A B A B ... --runs times; the medians and ours / Mosquitto are printed.

Usage: scripts/retained_burst.py [--messages 20000] [--runs 3] [--ours BIN]... [--mosquitto]

  --ours BIN    our broker's binary (default target/release/mqtt5-broker); give it twice to
                compare two builds (e.g. before / after), each against the same Mosquitto runs
  --mosquitto   include Mosquitto (persistence false: it stores nothing before acking, while
                ours acknowledges a retained message only once it is committed)

It starts only the brokers it runs and stops them by PID.
"""
import argparse
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time

import paho.mqtt.client as mqtt


sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from peers import start  # noqa: E402


def burst(port, messages, timeout=120.0):
    done = threading.Event()
    acked = [0]

    def on_publish(client, userdata, mid, reason_code, properties):
        acked[0] += 1
        if acked[0] == messages:
            done.set()

    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="discovery-burst",
                    protocol=mqtt.MQTTv5)
    c.on_publish = on_publish
    c.connect("127.0.0.1", port)
    c.loop_start()
    payload = b'{"name":"sensor","state_topic":"home/sensor/state","unit_of_measurement":"C"}'
    t0 = time.perf_counter()
    for i in range(messages):
        c.publish(f"homeassistant/sensor/s{i}/config", payload, qos=1, retain=True)
    ok = done.wait(timeout)
    took = time.perf_counter() - t0
    c.disconnect()
    c.loop_stop()
    if not ok:
        raise RuntimeError(f"only {acked[0]} of {messages} PUBACKs within {timeout} s")
    return took


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--messages", type=int, default=20000)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--ours", action="append")
    ap.add_argument("--mosquitto", action="store_true")
    a = ap.parse_args()
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    ours = a.ours or [os.path.join(root, "target/release/mqtt5-broker")]
    sides = [(f"ours:{b}", "ours", b) for b in ours]
    if a.mosquitto:
        mosq = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
        sides.append(("mosquitto", "mosquitto", mosq))
    tmp = tempfile.mkdtemp(prefix="retained-burst.", dir=os.path.join(root, "target"))
    times = {label: [] for label, _, _ in sides}
    n = 0
    try:
        for run in range(a.runs):
            for label, kind, binary in sides:
                n += 1
                proc, port = start(kind, binary, tmp, n, "max_inflight_messages 20\n")
                try:
                    t = burst(port, a.messages)
                finally:
                    proc.terminate()
                    proc.wait(timeout=30)
                times[label].append(t)
                print(f"run {run + 1} {label}: {t:.3f} s", flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    med = {k: statistics.median(v) for k, v in times.items()}
    for label, _, _ in sides:
        line = f"{label}: median {med[label]:.3f} s ({min(times[label]):.3f}–{max(times[label]):.3f})"
        if "mosquitto" in med and label != "mosquitto":
            # A speed ratio: Mosquitto's time over ours (above 1: ours is faster).
            line += f"; ours / Mosquitto (speed) {med['mosquitto'] / med[label]:.2f}"
        print(line)


if __name__ == "__main__":
    sys.exit(main())
