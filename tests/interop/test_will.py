"""Will messages (§3.1.2.5 Will Flag, §3.1.3.2/§3.1.3.3 Will Topic/Payload,
§3.14.2.1 DISCONNECT reason codes)."""

import pytest

from mqttclients import V5, V311, disconnect_packet, new_client_id

VERSIONS = [pytest.param(V5, id="v5"), pytest.param(V311, id="v311")]


@pytest.mark.parametrize("sub_version", VERSIONS)
@pytest.mark.parametrize("version", VERSIONS)
def test_will_published_when_socket_closed_without_disconnect_3_1_2_5(clients, topic, version, sub_version):
    """§3.1.2.5: the Will Message is published when the Network Connection is closed
    without a DISCONNECT (raw CONNECT with a will, then the socket is closed)."""
    t = f"{topic}/will"
    s = clients.mosq_sub(sub_version, t, 1, 1)
    s.wait_subscribed()
    r = clients.raw()
    r.connect(version, new_client_id("w"), will=(t, b"gone-raw", 1, False))
    r.close()  # no DISCONNECT
    (m,) = s.wait_done()
    assert (m.topic, m.payload, m.qos) == (t, b"gone-raw", 1)


@pytest.mark.parametrize("version", VERSIONS)
def test_will_published_when_paho_socket_killed_3_1_2_5(clients, topic, version):
    """§3.1.2.5: a paho client whose socket is closed under it (no DISCONNECT) has
    its will published, at the will QoS, to a subscriber of the will topic."""
    t = f"{topic}/paho-will"
    sub = clients.paho_connected(V5 if version == V311 else V311)
    assert sub.subscribe(t, 2) == [2]
    w = clients.paho(version, will=(t, b"paho-died", 2, False))
    w.connect_no_loop()
    w.kill_socket()
    m = sub.get()
    assert (m.topic, m.payload, m.qos) == (t, b"paho-died", 2)
    assert sub.drain(0.5) == [], "will must be published once"


@pytest.mark.parametrize("version", VERSIONS)
def test_will_not_published_after_normal_disconnect_3_1_2_5(clients, topic, version):
    """§3.1.2.5 / §3.14.4: on a normal DISCONNECT (reason 0x00 in 5.0) the server
    discards the Will Message without publishing it."""
    t = f"{topic}/will"
    sub = clients.paho_connected(V5)
    assert sub.subscribe(f"{topic}/#", 1) == [1]
    w = clients.paho(version, will=(t, b"should-not-appear", 1, False))
    w.connect()
    w.disconnect()
    # a sentinel from a third client, then a quiet period: the will never comes
    clients.paho_connected(V311).publish(f"{topic}/sentinel", b"s", qos=1)
    first = sub.get()
    rest = sub.drain(1.0)
    assert [m.payload for m in [first] + rest] == [b"s"]


def test_will_not_published_after_raw_disconnect_v311_3_14(clients, topic):
    """MQTT 3.1.1 §3.14.4: DISCONNECT (E0 00) makes the server discard the will."""
    t = f"{topic}/will"
    sub = clients.paho_connected(V311)
    assert sub.subscribe(t, 1) == [1]
    r = clients.raw()
    r.connect(V311, new_client_id("w"), will=(t, b"nope", 1, False))
    r.send(disconnect_packet(V311))
    r.expect_closed(timeout=5)
    assert sub.drain(1.0) == []


def test_v5_disconnect_with_will_message_reason_publishes_will_3_14_2_1(clients, topic):
    """MQTT 5 §3.14.2.1: DISCONNECT with reason code 0x04 (Disconnect with Will
    Message) closes the connection and the server publishes the will."""
    t = f"{topic}/will"
    sub = clients.paho_connected(V311)
    assert sub.subscribe(t, 1) == [1]
    r = clients.raw()
    r.connect(V5, new_client_id("w"), will=(t, b"bye-with-will", 1, False))
    r.send(disconnect_packet(V5, 0x04))
    m = sub.get()
    assert (m.topic, m.payload) == (t, b"bye-with-will")
