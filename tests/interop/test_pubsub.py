"""Publish/subscribe between paho-mqtt and mosquitto clients, MQTT 5.0 and 3.1.1,
QoS 0/1/2, same-version and cross-version (§3.3 PUBLISH, §3.8 SUBSCRIBE,
§4.3 QoS levels, §4.6 ordering, §4.7 topic filters)."""

import pytest

from mqttclients import V5, V311

CLIENTS = [
    pytest.param(("paho", V5), id="paho5"),
    pytest.param(("paho", V311), id="paho311"),
    pytest.param(("mosq", V5), id="mosq5"),
    pytest.param(("mosq", V311), id="mosq311"),
]
N = 3  # messages per case; their order must be kept (§4.6)


def _payloads(kind, tag):
    if kind == "paho":  # arbitrary bytes, including NUL and invalid UTF-8
        return [b"\x00\x01\xfe\xff" + f"{tag}-{i}".encode() for i in range(N)]
    return [f"{tag}-{i}-h\u00e9llo w\u00f6rld".encode() for i in range(N)]  # argv/stdin lines


def _publish(clients, kind, version, topic, payloads, qos):
    if kind == "paho":
        p = clients.paho_connected(version)
        for pl in payloads:
            p.publish(topic, pl, qos=qos)
        p.disconnect()
    else:
        clients.mosq_pub(version, topic, [pl.decode() for pl in payloads], qos=qos)


@pytest.mark.parametrize("qos", [0, 1, 2])
@pytest.mark.parametrize("sub", CLIENTS)
@pytest.mark.parametrize("pub", CLIENTS)
def test_publish_subscribe_matrix_3_3_and_4_3(clients, topic, pub, sub, qos):
    """Every message published at QoS q reaches a subscriber granted QoS q: exact
    payload bytes, topic, QoS q, retain 0, in publish order (§3.3.1, §4.3, §4.6)."""
    pkind, pver = pub
    skind, sver = sub
    t = f"{topic}/{pkind}{pver}/{skind}{sver}"
    payloads = _payloads(pkind, f"q{qos}")

    if skind == "paho":
        s = clients.paho_connected(sver)
        assert s.subscribe(t, qos) == [qos], "SUBACK must grant the requested QoS"
        _publish(clients, pkind, pver, t, payloads, qos)
        got = s.collect(N)
        extra = s.drain(0.3)
        assert extra == [], f"unexpected extra messages: {extra}"
    else:
        s = clients.mosq_sub(sver, t, qos, N)
        assert s.wait_subscribed() == [qos], "SUBACK must grant the requested QoS"
        _publish(clients, pkind, pver, t, payloads, qos)
        got = s.wait_done()

    assert [m.payload for m in got] == payloads
    assert [m.topic for m in got] == [t] * N
    assert [m.qos for m in got] == [qos] * N
    assert [m.retain for m in got] == [False] * N


@pytest.mark.parametrize(
    "pub_qos,sub_qos", [(2, 1), (2, 0), (1, 0), (1, 2), (0, 2)], ids=lambda v: f"q{v}"
)
def test_delivery_qos_is_minimum_of_publish_and_granted_qos_3_8_4(clients, topic, pub_qos, sub_qos):
    """The delivered QoS is min(QoS of the PUBLISH, granted QoS) (§3.8.4,
    MQTT-3.8.4-8 / §4.3 of 3.1.1)."""
    s = clients.paho_connected(V5)
    assert s.subscribe(topic, sub_qos) == [sub_qos]
    p = clients.paho_connected(V311)
    p.publish(topic, b"min-qos", qos=pub_qos)
    m = s.get()
    assert (m.payload, m.qos) == (b"min-qos", min(pub_qos, sub_qos))


def test_wildcard_topic_filters_match_per_4_7(clients, topic):
    """'+' matches exactly one level, '#' any number of levels including the parent
    (§4.7.1.2, §4.7.1.3); non-matching topics are not delivered."""
    plus = clients.paho_connected(V5)
    hash_ = clients.paho_connected(V311)
    assert plus.subscribe(f"{topic}/+/temp", 1) == [1]
    assert hash_.subscribe(f"{topic}/house/#", 1) == [1]
    pub = clients.paho_connected(V5)
    for t in [f"{topic}/kitchen/temp", f"{topic}/house", f"{topic}/house/a/b", f"{topic}/kitchen/hum", f"{topic}/a/b/temp"]:
        pub.publish(t, t.encode(), qos=1)
    got_plus = sorted(m.topic for m in plus.collect(1)) + sorted(m.topic for m in plus.drain(0.5))
    got_hash = sorted(m.topic for m in hash_.collect(2)) + sorted(m.topic for m in hash_.drain(0.5))
    assert got_plus == [f"{topic}/kitchen/temp"]
    assert got_hash == [f"{topic}/house", f"{topic}/house/a/b"]
