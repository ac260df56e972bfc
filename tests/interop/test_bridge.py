"""A real Mosquitto bridging to the broker under test (Debian's /usr/sbin/mosquitto, 2.0.x).

Mosquitto's bridge, with its default `try_private true`, sets bit 7 of the CONNECT Protocol
Level (0x84 for 3.1.1) and expects the remote broker to treat it as a bridge: what it publishes
is not sent back to it, retained messages keep RETAIN. It also sets a will and publishes its
state on `$SYS/broker/connection/<id>/state` (`notifications true`). A 5.0 bridge sends no bit
and asks for No Local and Retain As Published in its SUBSCRIBE instead.

Each test starts its own mosquitto (never as a service, never on 1883: a free 127.0.0.1 port
found by binding port 0) from a config file in tmp_path, and stops it by its PID.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import time
import uuid
from pathlib import Path

import pytest

from mqttclients import QUIET, V5, V311, WAIT, PahoClient

MOSQUITTO = Path("/usr/sbin/mosquitto")
PROBE_EVERY = 0.25  # seconds between probe messages while waiting for the bridge


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _mosquitto_version() -> tuple[int, ...]:
    r = subprocess.run([str(MOSQUITTO), "-h"], capture_output=True, timeout=10)
    m = re.search(rb"mosquitto version (\d+)\.(\d+)\.(\d+)", r.stdout + r.stderr)
    assert m, f"cannot read the version from `mosquitto -h`: {r.stdout!r}"
    return tuple(int(x) for x in m.groups())


class Mosquitto:
    """A mosquitto process with one bridge connection ("ours") to the broker under test."""

    def __init__(self, tmp_path: Path, remote, remote_id: str, protocol: str | None):
        self.port = _free_port()
        self.remote_id = remote_id
        self.log_path = tmp_path / "mosquitto.log"
        conf = tmp_path / "mosquitto.conf"
        lines = [
            f"listener {self.port} 127.0.0.1",
            "allow_anonymous true",
            "persistence false",
            "log_dest stdout",
            "log_type all",
            "connection ours",
            f"address {remote[0]}:{remote[1]}",
            f"remote_clientid {remote_id}",
            # Retry at once should a first attempt fail (the default backs off up to 30 s).
            "restart_timeout 1",
            "topic out/# out 1",
            "topic in/# in 1",
            "topic both/# both 1",
        ]
        if protocol:
            lines.append(f"bridge_protocol_version {protocol}")
        conf.write_text("\n".join(lines) + "\n")
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                [str(MOSQUITTO), "-c", str(conf)],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        self._wait_listening()

    @property
    def addr(self):
        return ("127.0.0.1", self.port)

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError as e:
            return f"(cannot read the mosquitto log: {e})"

    def _wait_listening(self):
        deadline = time.monotonic() + WAIT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                pytest.fail(f"mosquitto exited with {self.proc.returncode}:\n{self.log()}")
            try:
                socket.create_connection(self.addr, timeout=1).close()
                return
            except OSError:
                time.sleep(0.05)
        self.stop()
        pytest.fail(f"mosquitto not listening on {self.addr} within {WAIT}s:\n{self.log()}")

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()  # SIGTERM to this PID only
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)


@pytest.fixture
def bridged(broker, tmp_path):
    """Starts mosquitto bridged to `broker`: call with the bridge_protocol_version (None for
    the default, 3.1.1 with try_private). Clients made with `client()` are closed at teardown,
    then mosquitto is stopped by its PID."""
    if not (MOSQUITTO.is_file() and os.access(MOSQUITTO, os.X_OK)):
        pytest.fail(f"{MOSQUITTO} not installed (scripts/test installs Debian's mosquitto)")
    made: list = []

    def start(protocol: str | None) -> Mosquitto:
        m = Mosquitto(tmp_path, broker.addr, f"bridge{uuid.uuid4().hex[:10]}", protocol)
        made.append(m)
        return m

    def client(addr, version) -> PahoClient:
        c = PahoClient(addr, version)
        made.append(c)
        c.connect()
        return c

    start.client = client
    yield start
    for x in reversed(made):
        if isinstance(x, Mosquitto):
            x.stop()
        else:
            x.close()


def _await_flow(pub: PahoClient, sub: PahoClient, topic: str, what: str, m: Mosquitto, broker):
    """Publishes probes on `topic` until `sub` receives one: the bridge is connected and its
    subscriptions are in place. Bounded by WAIT; leaves no probe behind in `sub`'s queue."""
    deadline = time.monotonic() + WAIT
    n = 0
    while time.monotonic() < deadline:
        n += 1
        pub.publish(topic, f"probe {n}".encode(), qos=1)
        got = sub.drain(PROBE_EVERY)
        if any(x.topic == topic for x in got):
            # Probes still on their way arrive within a quiet period; drop them.
            rest = sub.drain(QUIET)
            assert all(x.topic == topic for x in got + rest), f"{what}: unexpected {got + rest}"
            return
    pytest.fail(
        f"{what}: no probe crossed the bridge within {WAIT}s\n--- mosquitto ---\n{m.log()}"
        f"\n--- ours ---\n{broker.log()[-5000:]}"
    )


def _exactly(c: PahoClient, topic: str, payload: bytes, who: str):
    """`c` gets the message once, and nothing else within a quiet period (no loop)."""
    first = c.get()
    got = [first] + c.drain(QUIET)
    assert [(m.topic, m.payload) for m in got] == [(topic, payload)], f"{who}: {got}"
    return first


@pytest.mark.parametrize(
    "protocol, version, tagged",
    [
        pytest.param(None, "3.1.1", True, id="v311-try-private"),
        pytest.param("mqttv50", "5.0", False, id="v5"),
    ],
)
def test_mosquitto_bridge_out_in_both_and_retained(broker, bridged, protocol, version, tagged):
    """Mosquitto bridged to us with `topic out/# out 1`, `in/# in 1`, `both/# both 1`:
    out/ reaches our subscribers, in/ reaches Mosquitto's, both/ goes both ways and arrives
    exactly once on each side (no loop), and a retained message stays retained across the
    bridge either way (a late subscriber gets it with RETAIN 1). The 3.1.1 bridge connects with the bridge bit (level 0x84) and is logged as
    a bridge; the 5.0 one asks for No Local / Retain As Published itself."""
    if protocol == "mqttv50" and _mosquitto_version() < (2, 0, 0):
        pytest.skip("bridge_protocol_version mqttv50 needs mosquitto 2.0")
    m = bridged(protocol)
    ours = bridged.client(broker.addr, V5)
    theirs = bridged.client(m.addr, V311)
    assert ours.subscribe("out/#", 1) == [1]
    assert ours.subscribe("both/#", 1) == [1]
    assert theirs.subscribe("in/#", 1) == [1]
    assert theirs.subscribe("both/#", 1) == [1]
    ours_pub = bridged.client(broker.addr, V311)
    theirs_pub = bridged.client(m.addr, V311)

    _await_flow(theirs_pub, ours, "out/probe", "out", m, broker)
    _await_flow(ours_pub, theirs, "in/probe", "in", m, broker)
    if broker.log_path:  # our own broker, not an external one
        line = next(x for x in broker.log().splitlines() if f"client {m.remote_id} connected from " in x)
        assert f"(MQTT {version}" in line, line
        assert ("(MQTT 3.1.1, bridge," in line) == tagged, line

    theirs_pub.publish("out/x", b"to-ours", qos=1)
    _exactly(ours, "out/x", b"to-ours", "ours, out/x")
    ours_pub.publish("in/x", b"to-theirs", qos=1)
    _exactly(theirs, "in/x", b"to-theirs", "mosquitto, in/x")

    theirs_pub.publish("both/m", b"from-theirs", qos=1)
    _exactly(ours, "both/m", b"from-theirs", "ours, both/m")
    _exactly(theirs, "both/m", b"from-theirs", "mosquitto, both/m (sent back by us would loop)")
    ours_pub.publish("both/o", b"from-ours", qos=1)
    _exactly(theirs, "both/o", b"from-ours", "mosquitto, both/o")
    _exactly(ours, "both/o", b"from-ours", "ours, both/o (sent back by mosquitto would loop)")

    theirs_pub.publish("out/r", b"kept", qos=1, retain=True)
    _exactly(ours, "out/r", b"kept", "ours, out/r")
    late = bridged.client(broker.addr, V311)
    assert late.subscribe("out/r", 1) == [1]
    r = _exactly(late, "out/r", b"kept", "late subscriber on ours")
    assert r.retain, "the retained message published to mosquitto is retained here"

    # And the other way: only with RETAIN as published on our side does Mosquitto store it.
    ours_pub.publish("in/r", b"kept-here", qos=1, retain=True)
    _exactly(theirs, "in/r", b"kept-here", "mosquitto, in/r")
    late_theirs = bridged.client(m.addr, V311)
    assert late_theirs.subscribe("in/r", 1) == [1]
    r = _exactly(late_theirs, "in/r", b"kept-here", "late subscriber on mosquitto")
    assert r.retain, "the retained message published to us is retained on mosquitto"
