"""Connection life cycle: CONNECT/CONNACK (§3.1, §3.2), PINGREQ/PINGRESP (§3.12,
§3.13) and DISCONNECT (§3.14), in MQTT 5.0 and 3.1.1."""

import threading
import time

import pytest

from mqttclients import PINGREQ, PINGRESP, V5, V311, disconnect_packet, new_client_id

VERSIONS = [pytest.param(V5, id="v5"), pytest.param(V311, id="v311")]


@pytest.mark.parametrize("version", VERSIONS)
def test_raw_connect_ping_disconnect_3_1_3_12_3_14(clients, version):
    """CONNECT gets a successful CONNACK (§3.2.2), PINGREQ gets exactly PINGRESP
    D0 00 (§3.12.4, MQTT-3.12.4-1), and after DISCONNECT the server closes the
    connection (§3.14.4)."""
    r = clients.raw()
    body = r.connect(version, new_client_id("r"), keepalive=30, clean=True)
    if version == V311:
        # §3.2.2.2: clean session => session present 0; §3.2.2.3: return code 0
        assert body == b"\x00\x00", f"v3.1.1 CONNACK body {body.hex()}"
    else:
        assert body[0] == 0, "session present must be 0 with clean start (MQTT-3.2.2-2)"
    for _ in range(3):
        r.send(PINGREQ)
        first, rest = r.read_packet()
        assert bytes([first]) + bytes([len(rest)]) + rest == PINGRESP
    r.send(disconnect_packet(version))
    r.expect_closed(timeout=5)


@pytest.mark.parametrize("version", VERSIONS)
def test_paho_connect_keepalive_ping_disconnect_3_1_2_10(clients, version):
    """paho with Keep Alive 1 s sends PINGREQ by itself and the broker answers with
    PINGRESP (§3.1.2.10, §3.12); the connection stays up past 1.5 x keep alive;
    a normal DISCONNECT then ends it without error."""
    seen = threading.Event()
    c = clients.paho(version, keepalive=1)
    orig = c.c.on_log

    def on_log(cl, u, lvl, s):
        orig(cl, u, lvl, s)
        if "Received PINGRESP" in s:
            seen.set()

    c.c.on_log = on_log
    c.connect()
    assert seen.wait(5), f"no PINGRESP within 5 s; paho log: {c.log_lines[-10:]}"
    time.sleep(1.6)
    assert not c.disconnected.is_set(), f"connection dropped: {c.disconnect_rc}"
    c.disconnect()
    assert not c.disconnect_rc.is_failure, f"disconnect reason {c.disconnect_rc}"


def test_v5_empty_client_id_gets_assigned_identifier_3_2_2_3_7(clients):
    """MQTT 5: a CONNECT with a zero-length Client Identifier is accepted and the
    CONNACK carries an Assigned Client Identifier (§3.1.3.1, §3.2.2.3.7)."""
    c = clients.paho(V5, client_id="")
    _flags, rc, props = c.connect()
    assigned = getattr(props, "AssignedClientIdentifier", None)
    assert assigned, f"no Assigned Client Identifier in CONNACK properties: {props}"
    c.disconnect()


def test_v311_empty_client_id_with_clean_session_accepted_3_1_3_1(clients):
    """MQTT 3.1.1: a zero-byte ClientId with CleanSession=1 is accepted (§3.1.3.1,
    MQTT-3.1.3-6)."""
    r = clients.raw()
    body = r.connect(V311, "", clean=True)
    assert body == b"\x00\x00"
    r.send(PINGREQ)
    first, rest = r.read_packet()
    assert (first, rest) == (0xD0, b"")


@pytest.mark.parametrize("version", [pytest.param("5", id="v5"), pytest.param("311", id="v311")])
def test_mosquitto_pub_connects_past_200_idle_sockets_issue_12(broker, version):
    """200 TCP connections from 20 loopback addresses that never send CONNECT (more than
    max_clients, 20, and than max_pending_connections, 100): mosquitto_pub still connects
    and publishes at once, since idle sockets are not clients and the oldest make room."""
    import socket
    import subprocess

    idle = []
    try:
        for i in range(200):
            s = socket.socket()
            s.bind((f"127.0.12.{1 + i // 10}", 0))
            s.settimeout(5)
            s.connect(broker.addr)
            idle.append(s)
        t = time.monotonic()
        r = subprocess.run(
            ["mosquitto_pub", "-h", broker.host, "-p", str(broker.port), "-V", version,
             "-i", f"pub-{version}", "-t", "issue12/idle", "-m", "x", "-q", "1"],
            capture_output=True, text=True, timeout=10,
        )  # fmt: skip
        took = time.monotonic() - t
        assert r.returncode == 0, f"mosquitto_pub: {r.returncode} {r.stderr}"
        assert took < 2, f"mosquitto_pub took {took:.2f}s"
    finally:
        for s in idle:
            s.close()
