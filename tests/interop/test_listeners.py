"""Any number of MQTT listeners of each kind (issue 14): several `--tls-listen`, `--ws-listen`,
`--wss-listen` (and plain `listener` blocks) each on its own address, found through
`/api/status`'s `listeners` array (port 0 resolved), each served to a real client:
mosquitto_pub with `--cafile` over TLS, paho-mqtt over TLS and over WebSockets (ws, wss). A
Mosquitto-style config file with two `listener` blocks per protocol; stop and start from the
page API rebinding all of them; and a wss listener with `require_certificate`: paho with a
client certificate from the CA is let in, without one or with an untrusted one it is not.
Every certificate is made here with openssl, in the test's temporary directory."""

from __future__ import annotations

import base64
import json
import socket
import subprocess
import time
import urllib.error
import urllib.request

import pytest

from conftest import _start, _stop
from mqttclients import V5, V311, PahoClient, mosq_pub

ADMIN_PW = "listeners-test-pw"
WAIT = 10.0


def _openssl(*args):
    subprocess.run(["openssl", *args], check=True, capture_output=True, timeout=30)


def _key_and_csr(d, name, cn):
    _openssl(
        "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
        "-subj", f"/CN={cn}", "-keyout", str(d / f"{name}.key"), "-out", str(d / f"{name}.csr"),
    )  # fmt: skip


def _ca(d, name):
    _openssl(
        "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
        "-days", "2", "-subj", f"/CN={name}",
        "-keyout", str(d / f"{name}.key"), "-out", str(d / f"{name}.pem"),
    )  # fmt: skip


def _sign(d, ca, name, section):
    _openssl(
        "x509", "-req", "-in", str(d / f"{name}.csr"), "-CA", str(d / f"{ca}.pem"),
        "-CAkey", str(d / f"{ca}.key"), "-CAcreateserial", "-days", "2",
        "-extfile", str(d / "ext.cnf"), "-extensions", section, "-out", str(d / f"{name}.pem"),
    )  # fmt: skip


@pytest.fixture
def pki(tmp_path):
    """A CA, a server certificate for 127.0.0.1 / localhost, a client certificate from the CA
    and one from another CA: a dict of file paths (str)."""
    d = tmp_path / "pki"
    d.mkdir()
    (d / "ext.cnf").write_text(
        "[srv]\nsubjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n"
        "[cli]\nextendedKeyUsage=clientAuth\n"
    )
    _ca(d, "ca")
    _ca(d, "other-ca")
    for name, cn in [("server", "localhost"), ("client", "sensor-1"), ("intruder", "intruder")]:
        _key_and_csr(d, name, cn)
    _sign(d, "ca", "server", "srv")
    _sign(d, "ca", "client", "cli")
    _sign(d, "other-ca", "intruder", "cli")
    return {n: str(d / n) for n in [
        "ca.pem", "server.pem", "server.key", "client.pem", "client.key", "intruder.pem", "intruder.key",
    ]}  # fmt: skip


def _tls_args(pki):
    return ["--certfile", pki["server.pem"], "--keyfile", pki["server.key"]]


def _http(b, method, path):
    """`method path` on the page with the admin's Basic auth: (status, JSON body)."""
    req = urllib.request.Request(f"http://127.0.0.1:{b.web_port}{path}", method=method)
    token = base64.b64encode(f"admin:{ADMIN_PW}".encode()).decode()
    req.add_header("Authorization", f"Basic {token}")
    if method == "POST":
        req.add_header("Content-Type", "application/json")
        req.data = b"{}"
    try:
        with urllib.request.urlopen(req, timeout=WAIT) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode(errors="replace")


def _listeners(b):
    """`/api/status`'s listeners: {transport: [(host, port), ...]} in the order bound."""
    status, body = _http(b, "GET", "/api/status")
    assert status == 200, body
    out = {}
    for entry in body["listeners"]:
        host, port = entry["address"].rsplit(":", 1)
        out.setdefault(entry["transport"], []).append((host, int(port)))
    return out


def _client(kind, addr, version, pki, **kw):
    """A paho client on a listener of `kind` (tcp, tls, ws, wss), trusting the test CA."""
    ca = pki["ca.pem"] if kind in ("tls", "wss") else None
    transport = "websockets" if kind in ("ws", "wss") else "tcp"
    return PahoClient(addr, version, transport=transport, ca_certs=ca, **kw)


def _serve_each(b, listeners, pki, topic):
    """Through every listener: a paho subscriber gets what a plain-TCP client publishes, and
    (TLS) mosquitto_pub with --cafile publishes what a plain-TCP subscriber gets."""
    tcp = PahoClient(b.addr, V5)
    tcp.connect()
    try:
        assert tcp.subscribe(f"{topic}/from/#", 1) == [1]
        for kind, addrs in listeners.items():
            for i, addr in enumerate(addrs):
                version = V5 if i % 2 == 0 else V311
                c = _client(kind, addr, version, pki)
                try:
                    c.connect()
                    assert c.subscribe(f"{topic}/to/{kind}/{i}", 1) == [1]
                    tcp.publish(f"{topic}/to/{kind}/{i}", f"to {addr}".encode(), qos=1)
                    m = c.get()
                    assert (m.topic, m.payload) == (f"{topic}/to/{kind}/{i}", f"to {addr}".encode())
                    c.publish(f"{topic}/from/{kind}/{i}", b"paho", qos=1)
                    assert tcp.get().topic == f"{topic}/from/{kind}/{i}"
                finally:
                    c.close()
                if kind == "tls":
                    mosq_pub(addr, V5, f"{topic}/from/mosq/{i}", "mosquitto over tls", qos=1,
                             extra=["--cafile", pki["ca.pem"]])  # fmt: skip
                    m = tcp.get()
                    assert (m.topic, m.payload) == (f"{topic}/from/mosq/{i}", b"mosquitto over tls")
    finally:
        tcp.close()


def _refuses_connections(addr):
    try:
        socket.create_connection(addr, timeout=2).close()
    except OSError:
        return True
    return False


@pytest.fixture
def many_broker(tmp_path, pki):
    b = _start(
        tmp_path,
        [
            "--admin-password", ADMIN_PW,
            "--tls-listen", "127.0.0.1:0", "--tls-listen", "127.0.0.1:0",
            "--ws-listen", "127.0.0.1:0", "--ws-listen", "127.0.0.1:0",
            "--wss-listen", "127.0.0.1:0,127.0.0.1:0",
            *_tls_args(pki),
        ],
    )  # fmt: skip
    try:
        yield b
    finally:
        _stop(b)


def test_two_listeners_of_each_kind_each_serve_real_clients(many_broker, pki, topic):
    """Two TLS, two ws and two wss listeners on port 0: each logs its line, `/api/status`
    lists each with its bound port, and a real client works through each."""
    b = many_broker
    ls = _listeners(b)
    assert {k: len(v) for k, v in ls.items()} == {"tcp": 1, "tls": 2, "ws": 2, "wss": 2}, ls
    ports = [p for addrs in ls.values() for _, p in addrs]
    assert len(set(ports)) == len(ports) and 0 not in ports, ls
    log = b.log()
    for kind in ("tls", "ws", "wss"):
        for host, port in ls[kind]:
            assert f"MQTT listening on {host}:{port} ({kind})" in log, log
    assert f"MQTT listening on 127.0.0.1:{b.port}\n" in log, log
    _serve_each(b, {k: v for k, v in ls.items() if k != "tcp"}, pki, topic)


def test_stop_and_start_from_the_page_rebind_every_listener(many_broker, pki, topic):
    """`POST /api/server/stop` closes all seven listeners; `/api/server/start` binds them all
    again on the same ports (port 0 kept), and clients connect through each again."""
    b = many_broker
    before = _listeners(b)
    status, body = _http(b, "POST", "/api/server/stop")
    assert status == 200 and body["listeners"] == [], body
    for addrs in before.values():
        for addr in addrs:
            assert _refuses_connections(addr), f"{addr} still accepts after stop"
    status, body = _http(b, "POST", "/api/server/start")
    assert status == 200, body
    assert _listeners(b) == before
    _serve_each(b, before, pki, topic)


def test_mosquitto_file_with_two_listener_blocks_per_protocol(tmp_path, pki, topic):
    """A Mosquitto-style file: two plain `listener` blocks, two with a certfile (TLS), two with
    `protocol websockets` and two with both (wss), all on port 0; each serves a client."""
    tls = f"certfile {pki['server.pem']}\nkeyfile {pki['server.key']}\n"
    conf = tmp_path / "broker.conf"
    conf.write_text(
        "listener 0 127.0.0.1\n"
        "listener 0 127.0.0.1\n"
        f"listener 0 127.0.0.1\n{tls}"
        f"listener 0 127.0.0.1\n{tls}"
        "listener 0 127.0.0.1\nprotocol websockets\n"
        "listener 0 127.0.0.1\nprotocol websockets\n"
        f"listener 0 127.0.0.1\nprotocol websockets\n{tls}"
        f"listener 0 127.0.0.1\nprotocol websockets\n{tls}"
    )
    b = _start(tmp_path, ["--admin-password", ADMIN_PW, "--config", str(conf)], listen=False)
    try:
        ls = _listeners(b)
        assert {k: len(v) for k, v in ls.items()} == {"tcp": 2, "tls": 2, "ws": 2, "wss": 2}, ls
        assert ls["tcp"][0] == b.addr
        _serve_each(b, ls, pki, topic)
    finally:
        _stop(b)


def _refused(c):
    """True if `c` gets no MQTT session: the TLS handshake fails (an error from connect) or
    the connection closes before CONNACK."""
    try:
        c.connect(timeout=5)
    except (OSError, AssertionError, ValueError):
        return True
    finally:
        c.close()
    return False


@pytest.mark.parametrize("version", [V5, V311])
def test_wss_with_required_client_certificate(tmp_path, pki, topic, version):
    """`require_certificate` on a wss listener (with `cafile`): paho over websockets+TLS with a
    client certificate from the CA connects and exchanges messages; without a certificate, or
    with one from another CA, it gets no session. The broker keeps serving."""
    b = _start(
        tmp_path,
        ["--wss-listen", "127.0.0.1:0", *_tls_args(pki), "--cafile", pki["ca.pem"],
         "--require-certificate"],
    )  # fmt: skip
    try:
        ls = _listeners(b)
        (addr,) = ls["wss"]
        good = _client("wss", addr, version, pki, certfile=pki["client.pem"], keyfile=pki["client.key"])
        tcp = PahoClient(b.addr, V5)
        try:
            good.connect()
            tcp.connect()
            assert good.subscribe(f"{topic}/in", 1) == [1]
            tcp.publish(f"{topic}/in", b"to the certificate client", qos=1)
            assert good.get().payload == b"to the certificate client"
        finally:
            good.close()
            tcp.close()
        assert _refused(_client("wss", addr, version, pki)), "no certificate was let in"
        intruder = _client("wss", addr, version, pki, certfile=pki["intruder.pem"], keyfile=pki["intruder.key"])
        assert _refused(intruder), "a certificate from another CA was let in"
        again = _client("wss", addr, version, pki, certfile=pki["client.pem"], keyfile=pki["client.key"])
        try:
            again.connect()
        finally:
            again.close()
    finally:
        _stop(b)
