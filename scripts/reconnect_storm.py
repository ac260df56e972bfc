#!/usr/bin/env python3
"""scripts/reconnect_storm.py — reconnect storms, side by side.

Every broker named runs for the whole measurement (one process each, on a free 127.0.0.1
port); each round runs mqtt5-bench's connections scenario (N clients connect and subscribe,
then disconnect) against each broker in turn. The clients of a round disconnect at its end, so
every round after the first is a reconnect storm on a broker that has served one before (what
scripts/bench's connections rows, on a fresh broker each run, do not show). The first round is
left out; the medians of connections/s and ours / Mosquitto are printed.

Usage: scripts/reconnect_storm.py [--clients 32] [--rounds 12] [--ours BIN]... [--mosquitto]

  --ours BIN    our broker's binary (default target/release/mqtt5-broker); give it twice to
                compare two builds (before / after) against the same Mosquitto
  --mosquitto   include Mosquitto (persistence false, set_tcp_nodelay true)

Needs target/release/mqtt5-bench (cargo build --release --bins). It starts only the brokers it
runs and stops them by PID.
"""
import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile


sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from peers import start  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--clients", type=int, default=32)
    ap.add_argument("--rounds", type=int, default=12)
    ap.add_argument("--ours", action="append")
    ap.add_argument("--mosquitto", action="store_true")
    a = ap.parse_args()
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    bench = os.path.join(root, "target/release/mqtt5-bench")
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    sides = [(f"ours:{b}", "ours", b) for b in (a.ours or [os.path.join(root, "target/release/mqtt5-broker")])]
    if a.mosquitto:
        sides.append(("mosquitto", "mosquitto", shutil.which("mosquitto") or "/usr/sbin/mosquitto"))
    tmp = tempfile.mkdtemp(prefix="reconnect-storm.", dir=os.path.join(root, "target"))
    running = []
    rates = {label: [] for label, _, _ in sides}
    try:
        for n, (label, kind, binary) in enumerate(sides):
            proc, port = start(kind, binary, tmp, n)
            running.append((label, proc, port))
        for r in range(a.rounds):
            for label, proc, port in running:
                out = subprocess.run(
                    [bench, "--port", str(port), "--scenario", "connections", "--clients",
                     str(a.clients), "--broker-pid", str(proc.pid), "--label", label],
                    capture_output=True, text=True, timeout=300)
                row = next((json.loads(l) for l in out.stdout.splitlines() if l.startswith("{")), {})
                if row.get("status") != "ok":
                    print(f"round {r + 1} {label}: FAILED {row.get('failures')}", flush=True)
                    continue
                if r > 0:
                    rates[label].append(row["connections_per_s"])
    finally:
        for _, proc, _ in running:
            proc.terminate()
            proc.wait(timeout=30)
        shutil.rmtree(tmp, ignore_errors=True)
    med = {k: statistics.median(v) for k, v in rates.items() if v}
    for label, _, _ in sides:
        if label not in med:
            print(f"{label}: no figures")
            continue
        v = rates[label]
        line = f"{label}: median {med[label]:.0f}/s ({len(v)} storms, {min(v):.0f}–{max(v):.0f})"
        if "mosquitto" in med and label != "mosquitto":
            line += f"; ours / Mosquitto {med[label] / med['mosquitto']:.2f}"
        print(line)


if __name__ == "__main__":
    sys.exit(main())
