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
  --window N    the client's in-flight window (paho's max_inflight_messages; default 20)
  --no-retain   plain QoS 1 publishes: nothing to commit, so the client's own ceiling

Each run also prints the broker's and the client's CPU seconds and the PUBACK latency
percentiles (from paho handing a PUBLISH to its socket queue to its PUBACK; the first 5 % of
the messages left out).

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


def burst(port, messages, retain=True, window=20, timeout=120.0):
    """Returns (seconds from the first publish to the last PUBACK, PUBACK latencies in s).

    A message's latency runs from when paho hands it to its socket queue (not from the
    publish() call: paho queues what its in-flight window holds back) to its PUBACK. The first
    5 % are left out: while the caller's thread is still queueing publishes, paho's network
    thread waits for the interpreter lock, whichever broker it talks to.
    """
    done = threading.Event()
    acked = [0]
    sent = {}
    latencies = []

    def on_publish(client, userdata, mid, reason_code, properties):
        at = sent.pop(mid, None)
        if at is not None:
            latencies.append(time.perf_counter() - at)
        acked[0] += 1
        if acked[0] == messages:
            done.set()

    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="discovery-burst",
                    protocol=mqtt.MQTTv5)
    c.on_publish = on_publish
    c.max_inflight_messages = window
    # paho 2.0's internal send of one PUBLISH; without it (another paho) no latencies.
    send = getattr(c, "_send_publish", None)
    if send is not None:
        def timed_send(mid, *args, **kwargs):
            sent[mid] = time.perf_counter()
            return send(mid, *args, **kwargs)
        c._send_publish = timed_send
    c.connect("127.0.0.1", port)
    c.loop_start()
    payload = b'{"name":"sensor","state_topic":"home/sensor/state","unit_of_measurement":"C"}'
    t0 = time.perf_counter()
    for i in range(messages):
        c.publish(f"homeassistant/sensor/s{i}/config", payload, qos=1, retain=retain)
    ok = done.wait(timeout)
    took = time.perf_counter() - t0
    c.disconnect()
    c.loop_stop()
    if not ok:
        raise RuntimeError(f"only {acked[0]} of {messages} PUBACKs within {timeout} s")
    return took, latencies[len(latencies) // 20:]


def percentile_ms(sorted_values, p):
    if not sorted_values:
        return float("nan")
    return sorted_values[min(len(sorted_values) - 1, int(p * len(sorted_values)))] * 1e3


def cpu_seconds(pid):
    """User + system CPU seconds of process `pid` so far (fails if it is gone)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--messages", type=int, default=20000)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--ours", action="append")
    ap.add_argument("--mosquitto", action="store_true")
    ap.add_argument("--window", type=int, default=20)
    ap.add_argument("--no-retain", action="store_true")
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
                    broker0, client0 = cpu_seconds(proc.pid), time.process_time()
                    t, lat = burst(port, a.messages, not a.no_retain, a.window)
                    broker = cpu_seconds(proc.pid) - broker0
                    client = time.process_time() - client0
                finally:
                    proc.terminate()
                    proc.wait(timeout=30)
                times[label].append(t)
                lat.sort()
                print(f"run {run + 1} {label}: {t:.3f} s (CPU: broker {broker:.2f} s, "
                      f"client {client:.2f} s; PUBACK latency ms p50 "
                      f"{percentile_ms(lat, 0.5):.1f} p99 {percentile_ms(lat, 0.99):.1f} "
                      f"p99.9 {percentile_ms(lat, 0.999):.1f})", flush=True)
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
