"""MQTT over WebSockets (issue 14, MQTT 5.0 §6) with paho-mqtt's own WebSocket transport
(`transport="websockets"`), over ws and over wss (TLS with a self-signed certificate made here
by openssl), in MQTT 5.0 and 3.1.1, against the plain TCP listener and each other."""

from __future__ import annotations

import re
import subprocess

import pytest

from conftest import _start, _stop
from mqttclients import V5, V311, PahoClient

LISTEN_RE = r"MQTT listening on (\S+):(\d+) \({}\)"


@pytest.fixture
def cert(tmp_path):
    """A self-signed certificate for 127.0.0.1 / localhost: (certfile, keyfile)."""
    cf, kf = tmp_path / "server.pem", tmp_path / "server.key"
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
            "-nodes", "-days", "2", "-subj", "/CN=localhost",
            "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1",
            "-keyout", str(kf), "-out", str(cf),
        ],
        check=True,
        capture_output=True,
        timeout=30,
    )  # fmt: skip
    return cf, kf


@pytest.fixture
def ws_broker(tmp_path, cert):
    cf, kf = cert
    b = _start(
        tmp_path,
        ["--ws-listen", "127.0.0.1:0", "--wss-listen", "127.0.0.1:0", "--certfile", str(cf), "--keyfile", str(kf)],
    )
    try:
        ports = {}
        for kind in ("ws", "wss"):
            m = re.search(LISTEN_RE.format(kind), b.log())
            assert m, f"no ({kind}) listening line:\n{b.log()}"
            ports[kind] = int(m.group(2))
        b.ws_port, b.wss_port = ports["ws"], ports["wss"]
        yield b
    finally:
        _stop(b)


def _client(b, cert, kind, version, **kw):
    if kind == "tcp":
        return PahoClient(b.addr, version, **kw)
    port = b.ws_port if kind == "ws" else b.wss_port
    ca = str(cert[0]) if kind == "wss" else None
    return PahoClient((b.host, port), version, transport="websockets", ca_certs=ca, **kw)


@pytest.mark.parametrize("version", [V5, V311])
@pytest.mark.parametrize("kind", ["ws", "wss"])
def test_paho_over_websockets_pubsub_both_ways(ws_broker, cert, topic, kind, version):
    """A paho client over ws/wss subscribes (QoS 1) and gets what a TCP client publishes, and
    publishes (QoS 1) what the TCP client gets."""
    ws = _client(ws_broker, cert, kind, version)
    tcp = _client(ws_broker, cert, "tcp", version)
    try:
        ws.connect()
        tcp.connect()
        assert ws.subscribe(f"{topic}/to-ws", 1) == [1]
        assert tcp.subscribe(f"{topic}/to-tcp", 1) == [1]
        big = bytes(range(256)) * 400  # 100 KiB: several frames and TLS records
        tcp.publish(f"{topic}/to-ws", b"hello " + kind.encode(), qos=1)
        tcp.publish(f"{topic}/to-ws", big, qos=1)
        m = ws.get()
        assert (m.topic, m.payload, m.qos) == (f"{topic}/to-ws", b"hello " + kind.encode(), 1)
        assert ws.get().payload == big
        ws.publish(f"{topic}/to-tcp", b"from " + kind.encode(), qos=1)
        m = tcp.get()
        assert (m.topic, m.payload) == (f"{topic}/to-tcp", b"from " + kind.encode())
    finally:
        ws.close()
        tcp.close()


@pytest.mark.parametrize("kind", ["ws", "wss"])
def test_paho_over_websockets_will_on_dropped_connection(ws_broker, cert, topic, kind):
    """A ws/wss client whose connection drops without DISCONNECT has its will published."""
    watcher = _client(ws_broker, cert, "tcp", V5)
    dying = _client(ws_broker, cert, kind, V5, will=(f"{topic}/will", b"gone", 1, False))
    try:
        watcher.connect()
        assert watcher.subscribe(f"{topic}/will", 1) == [1]
        dying.connect_no_loop()
        dying.c.socket().close()
        m = watcher.get()
        assert (m.topic, m.payload) == (f"{topic}/will", b"gone")
    finally:
        watcher.close()
        dying.close()
