"""Retained messages (§3.3.1.3 RETAIN)."""

import pytest

from mqttclients import V5, V311

VERSIONS = [pytest.param(V5, id="v5"), pytest.param(V311, id="v311")]


@pytest.mark.parametrize("sub_version", VERSIONS)
@pytest.mark.parametrize("pub_version", VERSIONS)
def test_retained_message_delivered_to_later_subscriber_and_cleared_3_3_1_3(
    clients, topic, pub_version, sub_version
):
    """§3.3.1.3: a retained PUBLISH is stored and sent, with RETAIN=1, to a client
    that subscribes later; only the last retained message per topic is kept; a
    retained PUBLISH with a zero-byte payload is forwarded to current subscribers
    as normal and removes the retained message, so a new subscriber then receives
    nothing."""
    t = f"{topic}/state"
    clients.mosq_pub(pub_version, t, "first", qos=1, retain=True)
    clients.mosq_pub(pub_version, t, "second", qos=1, retain=True)

    later = clients.paho_connected(sub_version)
    assert later.subscribe(t, 1) == [1]
    m = later.get()
    assert (m.topic, m.payload, m.retain) == (t, b"second", True)
    assert later.drain(0.5) == [], "only the last retained message per topic is kept"

    # mosquitto_sub as a second late subscriber, in the other protocol version
    other = V311 if sub_version == V5 else V5
    s = clients.mosq_sub(other, t, 1, 1)
    s.wait_subscribed()
    (m2,) = s.wait_done()
    assert (m2.payload, m2.retain) == (b"second", True)

    # clear it: zero-byte retained publish is forwarded to the existing subscriber
    p = clients.paho_connected(pub_version)
    p.publish(t, b"", qos=1, retain=True)
    m3 = later.get()
    assert (m3.topic, m3.payload) == (t, b"")
    p.disconnect()

    fresh = clients.paho_connected(sub_version)
    assert fresh.subscribe(t, 1) == [1]
    assert fresh.drain(1.0) == [], "retained message must be gone after the empty retained publish"


def test_non_retained_publish_is_not_stored_3_3_1_3(clients, topic):
    """§3.3.1.3: a PUBLISH with RETAIN=0 is not stored, so a later subscriber gets
    nothing, and it does not replace an existing retained message."""
    t = f"{topic}/x"
    clients.mosq_pub(V5, t, "kept", qos=1, retain=True)
    clients.mosq_pub(V5, t, "transient", qos=1, retain=False)
    c = clients.paho_connected(V311)
    assert c.subscribe(t, 1) == [1]
    got = [c.get()] + c.drain(0.5)
    assert [(m.payload, m.retain) for m in got] == [(b"kept", True)]
    c.disconnect()
    t2 = f"{topic}/never-retained"
    clients.mosq_pub(V311, t2, "transient", qos=1)
    d = clients.paho_connected(V5)
    assert d.subscribe(t2, 1) == [1]
    assert d.drain(0.7) == []
