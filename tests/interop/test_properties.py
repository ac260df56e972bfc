"""MQTT 5 PUBLISH properties forwarded by the server (§3.3.2.3)."""

from mqttclients import V5, V311, publish_props

USER_PROPS = [("k1", "v1"), ("unit", "celsius"), ("k1", "v2")]  # duplicate key, order matters


def test_user_properties_and_content_type_forwarded_paho_to_paho_3_3_2_3(clients, topic):
    """§3.3.2.3.7: the server sends all User Properties unaltered and in order
    (duplicates allowed); §3.3.2.3.9: Content Type forwarded unaltered;
    §3.3.2.3.2: Payload Format Indicator forwarded unaltered."""
    t = f"{topic}/props"
    sub = clients.paho_connected(V5)
    assert sub.subscribe(t, 1) == [1]
    pub = clients.paho_connected(V5)
    pub.publish(
        t, b'{"t":21.5}', qos=1,
        properties=publish_props(user_properties=USER_PROPS, content_type="application/json", payload_format=1),
    )  # fmt: skip
    m = sub.get()
    assert m.payload == b'{"t":21.5}'
    assert m.user_properties == USER_PROPS
    assert m.content_type == "application/json"
    assert m.payload_format == 1


def test_user_properties_and_content_type_forwarded_to_mosquitto_sub_3_3_2_3(clients, topic):
    """§3.3.2.3.7 / §3.3.2.3.9 with mosquitto_sub -V 5 as the receiver (QoS 2)."""
    t = f"{topic}/props"
    s = clients.mosq_sub(V5, t, 2, 1)
    s.wait_subscribed()
    pub = clients.paho_connected(V5)
    pub.publish(t, b"hello", qos=2, properties=publish_props(user_properties=USER_PROPS, content_type="text/plain"))
    (m,) = s.wait_done()
    assert m.payload == b"hello"
    assert m.user_properties == USER_PROPS
    assert m.content_type == "text/plain"


def test_properties_from_mosquitto_pub_reach_paho_3_3_2_3(clients, topic):
    """mosquitto_pub -D publish user-property/content-type: forwarded unaltered to a
    paho MQTT 5 subscriber (§3.3.2.3.7, §3.3.2.3.9)."""
    t = f"{topic}/props"
    sub = clients.paho_connected(V5)
    assert sub.subscribe(t, 1) == [1]
    clients.mosq_pub(
        V5, t, "from-mosquitto", qos=1,
        props=[("user-property", "a", "1"), ("user-property", "b", "2"), ("content-type", "text/csv")],
    )  # fmt: skip
    m = sub.get()
    assert m.payload == b"from-mosquitto"
    assert m.user_properties == [("a", "1"), ("b", "2")]
    assert m.content_type == "text/csv"


def test_response_topic_and_correlation_data_forwarded_3_3_2_3_5(clients, topic):
    """§3.3.2.3.5 Response Topic and §3.3.2.3.6 Correlation Data: the server sends
    them unaltered to all subscribers (request/response)."""
    t = f"{topic}/req"
    sub = clients.paho_connected(V5)
    assert sub.subscribe(t, 0) == [0]
    pub = clients.paho_connected(V5)
    pub.publish(t, b"ask", qos=0, properties=publish_props(response_topic=f"{topic}/resp", correlation_data=b"\x00id-7"))
    m = sub.get()
    assert (m.response_topic, m.correlation_data) == (f"{topic}/resp", b"\x00id-7")


def test_v5_publish_with_properties_reaches_v311_subscriber_payload_intact(clients, topic):
    """Cross-version: a 5.0 PUBLISH with properties is delivered to a 3.1.1
    subscriber with the same payload (3.1.1 has no properties to carry)."""
    t = f"{topic}/props"
    s = clients.mosq_sub(V311, t, 1, 1)
    s.wait_subscribed()
    pub = clients.paho_connected(V5)
    pub.publish(t, b"plain", qos=1, properties=publish_props(user_properties=USER_PROPS, content_type="x/y"))
    (m,) = s.wait_done()
    assert (m.payload, m.qos) == (b"plain", 1)
    assert m.user_properties == [] and m.content_type is None
