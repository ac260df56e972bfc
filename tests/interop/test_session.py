"""Persistent sessions: subscriptions and QoS 1/2 messages kept while the client is
offline (3.1.1 §3.1.2.4 Clean Session; 5.0 §3.1.2.4 Clean Start, §3.1.2.11.2
Session Expiry Interval; §4.1 Session State)."""

import pytest

from mqttclients import V5, V311, new_client_id


@pytest.mark.parametrize("version", [pytest.param(V5, id="v5"), pytest.param(V311, id="v311")])
def test_offline_messages_delivered_on_resumed_session_4_1(clients, topic, version):
    """A client with a persistent session (CleanSession=0 / Clean Start=0 with
    Session Expiry > 0) subscribes at QoS 1, disconnects; QoS 1 messages published
    meanwhile are delivered when it reconnects, with Session Present=1 in the
    CONNACK (§3.2.2.2), without subscribing again."""
    t = f"{topic}/offline"
    cid = new_client_id("s")
    kw = {"session_expiry": 300} if version == V5 else {}
    a = clients.paho(version, client_id=cid, clean=False, **kw)
    a.connect()
    assert a.subscribe(t, 1) == [1]
    a.disconnect()

    clients.mosq_pub(V311 if version == V5 else V5, t, ["off-1", "off-2", "off-3"], qos=1)

    b = clients.paho(version, client_id=cid, clean=False, **kw)
    flags, _rc, _props = b.connect()
    assert flags.session_present, "CONNACK must report Session Present=1 for a resumed session"
    got = b.collect(3) + b.drain(0.5)
    assert [m.payload for m in got] == [b"off-1", b"off-2", b"off-3"]
    assert {m.qos for m in got} == {1}
    b.disconnect()

    # clean start discards the session: nothing queued, Session Present=0
    c = clients.paho(version, client_id=cid, clean=True)
    flags, _rc, _props = c.connect()
    assert not flags.session_present
