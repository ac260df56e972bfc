"""QoS 2 exactly-once delivery (§4.3.3)."""

import pytest

from mqttclients import V5, V311, new_client_id, publish_packet, pubrel_packet

VERSIONS = [pytest.param(V5, id="v5"), pytest.param(V311, id="v311")]


@pytest.mark.parametrize("version", VERSIONS)
def test_qos2_duplicate_publish_before_pubrel_delivered_once_4_3_3(clients, topic, version):
    """§4.3.3: until it receives PUBREL, the receiver acknowledges every PUBLISH with
    the same Packet Identifier with PUBREC and must not deliver it again. The
    publisher here resends the PUBLISH with DUP=1 (as after a lost PUBREC), then
    PUBREL; the subscriber gets the message exactly once, and the flow completes
    with PUBCOMP for the same packet id."""
    t = f"{topic}/dup"
    sub = clients.paho_connected(V5)
    assert sub.subscribe(t, 2) == [2]
    r = clients.raw()
    r.connect(version, new_client_id("q"))
    pid = 0x1234
    r.send(publish_packet(version, t, b"exactly-once", qos=2, pid=pid))
    first, body = r.read_packet()
    assert first == 0x50 and body[:2] == pid.to_bytes(2, "big"), f"expected PUBREC, got {first:#04x} {body.hex()}"
    r.send(publish_packet(version, t, b"exactly-once", qos=2, pid=pid, dup=True))
    first, body = r.read_packet()
    assert first == 0x50 and body[:2] == pid.to_bytes(2, "big"), f"expected 2nd PUBREC, got {first:#04x} {body.hex()}"
    if len(body) > 2:
        assert body[2] < 0x80, f"PUBREC reason code {body[2]:#04x}"
    r.send(pubrel_packet(pid))
    first, body = r.read_packet()
    assert first == 0x70 and body[:2] == pid.to_bytes(2, "big"), f"expected PUBCOMP, got {first:#04x} {body.hex()}"
    got = [sub.get()] + sub.drain(1.0)
    assert [(m.payload, m.qos) for m in got] == [(b"exactly-once", 2)]


@pytest.mark.parametrize(
    "pub_version,sub_version",
    [(V5, V5), (V311, V5), (V5, V311), (V311, V311)],
    ids=["5to5", "311to5", "5to311", "311to311"],
)
def test_qos2_stream_each_message_exactly_once_4_3_3(clients, topic, pub_version, sub_version):
    """§4.3.3 / §4.6: 50 QoS 2 messages from one publisher (several in flight at
    once) reach each of two QoS 2 subscribers exactly once, in order."""
    n = 50
    t = f"{topic}/stream"
    subs = [clients.paho_connected(sub_version), clients.paho_connected(sub_version)]
    for s in subs:
        assert s.subscribe(t, 2) == [2]
    p = clients.paho_connected(pub_version)
    infos = [p.c.publish(t, f"m{i}".encode(), qos=2) for i in range(n)]
    for info in infos:
        info.wait_for_publish(timeout=10)
        assert info.is_published()
    want = [f"m{i}".encode() for i in range(n)]
    for s in subs:
        got = s.collect(n) + s.drain(0.5)
        assert [m.payload for m in got] == want
        assert {m.qos for m in got} == {2}
