//! MQTT 5.0 PUBLISH and CONNECT properties through the real broker binary, byte-exact on raw
//! sockets: Message Expiry (§3.3.2.3.3), Topic Alias in both directions (§3.3.2.3.4), Maximum
//! Packet Size (§3.1.2.11.4), properties forwarded unaltered (§3.3.2.3), Payload Format
//! Indicator checking (§3.3.2.3.2), Request Response / Problem Information (§3.1.2.11.6-7).
//!
//! Every test starts its own broker on 127.0.0.1 with OS-chosen ports.

mod common;

use common::api_status;
use common::packet::{disconnect_v5, pingreq, pingresp, puback, server_disconnect, utf8};
use common::raw::*;
use common::rq5;
use common::{expect_bytes, expect_closed, hex, read_packet, send, Broker};
use rumqttc::v5::mqttbytes::QoS;
use std::time::Duration;

/// How long "nothing arrives" is watched for.
const QUIET: Duration = Duration::from_millis(700);
/// Bound on waiting for something that must arrive.
const ARRIVE: Duration = Duration::from_secs(5);

fn broker() -> Broker {
    Broker::start(&["--allow-anonymous", "--sys-interval", "0"])
}

/// QoS 1 PUBLISH on an open 5.0 connection; returns the PUBACK reason code.
fn publish_q1(s: &std::net::TcpStream, pid: u16, topic: &str, payload: &[u8], props: &[u8]) -> u8 {
    send(s, &publish(topic, payload, 1, pid, false, props));
    let ack = read_packet(s);
    assert_eq!(ack[0], 0x40, "PUBACK expected: {}", hex(&ack));
    assert_eq!(
        &ack[2..4],
        &pid.to_be_bytes(),
        "PUBACK packet id: {}",
        hex(&ack)
    );
    if ack[1] == 2 {
        0
    } else {
        ack[4]
    }
}

// ================================================================ Message Expiry

/// A persistent subscriber to `exp/t` (QoS 1) that then goes offline.
fn offline_subscriber(b: &Broker) {
    let (s, _) = open(b.mqtt, "sleeper", true, &prop_u32(SESSION_EXPIRY, 60), None);
    sub(&s, 1, "exp/t", 0x01);
    send(&s, &disconnect_v5(0));
    expect_closed(&s, ARRIVE);
}

#[test]
fn mqtt_3_3_2_5_message_expired_while_queued_for_an_offline_session_is_not_delivered() {
    let b = broker();
    offline_subscriber(&b);
    let (p, _) = open(b.mqtt, "pub", true, &[], None);
    assert_eq!(
        publish_q1(&p, 1, "exp/t", b"short", &prop_u32(MESSAGE_EXPIRY, 1)),
        0x00
    );
    std::thread::sleep(Duration::from_millis(2200));
    let (s, (present, _, _)) = open(
        b.mqtt,
        "sleeper",
        false,
        &prop_u32(SESSION_EXPIRY, 60),
        None,
    );
    assert!(present);
    expect_silence(&s, Duration::from_millis(1000), "expired queued message");
    // The session still works: a fresh message arrives.
    assert_eq!(publish_q1(&p, 2, "exp/t", b"fresh", &[]), 0x00);
    let got = next_publish(&s, true);
    assert_eq!(got.payload, b"fresh");
    assert_eq!(
        got.expiry(),
        None,
        "no Message Expiry Interval when none was sent"
    );
}

#[test]
fn mqtt_3_3_2_6_queued_message_is_delivered_with_a_decreased_expiry_interval() {
    let b = broker();
    offline_subscriber(&b);
    let (p, _) = open(b.mqtt, "pub", true, &[], None);
    assert_eq!(
        publish_q1(&p, 1, "exp/t", b"long", &prop_u32(MESSAGE_EXPIRY, 30)),
        0x00
    );
    std::thread::sleep(Duration::from_millis(2100));
    let (s, (present, _, _)) = open(
        b.mqtt,
        "sleeper",
        false,
        &prop_u32(SESSION_EXPIRY, 60),
        None,
    );
    assert!(present);
    let got = next_publish(&s, true);
    assert_eq!(got.payload, b"long");
    let left = got.expiry().expect("Message Expiry Interval forwarded");
    assert!(
        (26..=28).contains(&left),
        "30 s message waited ~2.1 s in the broker: forwarded {left}"
    );
}

// ================================================================ Topic Alias, inbound

#[test]
fn mqtt_3_3_2_12_inbound_topic_alias_set_then_used_alone_delivers_on_the_right_topic() {
    let b = broker();
    let (s, _) = open(b.mqtt, "sub", true, &[], None);
    sub(&s, 1, "ta/#", 0x00);
    let (p, (_, _, props)) = open(b.mqtt, "pub", true, &[], None);
    assert!(
        props.contains(&(TOPIC_ALIAS_MAXIMUM, vec![0, 10])),
        "{props:?}"
    );
    send(
        &p,
        &publish("ta/x", b"1", 0, 0, false, &prop_u16(TOPIC_ALIAS, 1)),
    );
    send(
        &p,
        &publish("", b"2", 0, 0, false, &prop_u16(TOPIC_ALIAS, 1)),
    );
    // Re-map alias 1 to another topic, then use it alone again.
    send(
        &p,
        &publish("ta/y", b"3", 0, 0, false, &prop_u16(TOPIC_ALIAS, 1)),
    );
    send(
        &p,
        &publish("", b"4", 0, 0, false, &prop_u16(TOPIC_ALIAS, 1)),
    );
    for (topic, payload) in [("ta/x", "1"), ("ta/x", "2"), ("ta/y", "3"), ("ta/y", "4")] {
        let got = next_publish(&s, true);
        assert_eq!(
            (got.topic.as_str(), got.payload.as_slice()),
            (topic, payload.as_bytes())
        );
        assert_eq!(
            got.alias(),
            None,
            "MQTT-3.1.2-27: subscriber sent no Topic Alias Maximum"
        );
    }
    send(&p, &pingreq());
    expect_bytes(&p, &pingresp());
}

#[test]
fn mqtt_3_3_2_8_topic_alias_0_is_answered_with_disconnect_0x94() {
    let b = broker();
    let (p, _) = open(b.mqtt, "pub", true, &[], None);
    send(
        &p,
        &publish("ta/x", b"x", 0, 0, false, &prop_u16(TOPIC_ALIAS, 0)),
    );
    expect_bytes(&p, &server_disconnect(0x94));
    expect_closed(&p, ARRIVE);
}

#[test]
fn mqtt_3_3_2_9_topic_alias_above_the_servers_maximum_is_answered_with_disconnect_0x94() {
    let b = Broker::start(&["--allow-anonymous", "--max-topic-alias", "2"]);
    let (p, (_, _, props)) = open(b.mqtt, "pub", true, &[], None);
    assert!(
        props.contains(&(TOPIC_ALIAS_MAXIMUM, vec![0, 2])),
        "CONNACK Topic Alias Maximum 2: {props:?}"
    );
    // Alias 2 is within the maximum (MQTT-3.3.2-12) ...
    assert_eq!(
        publish_q1(&p, 1, "ta/x", b"ok", &prop_u16(TOPIC_ALIAS, 2)),
        0x10
    );
    // ... alias 3 is not.
    send(
        &p,
        &publish("ta/x", b"x", 0, 0, false, &prop_u16(TOPIC_ALIAS, 3)),
    );
    expect_bytes(&p, &server_disconnect(0x94));
    expect_closed(&p, ARRIVE);
}

#[test]
fn mqtt_3_3_2_3_4_topic_alias_used_alone_before_being_set_is_disconnect_0x82() {
    let b = broker();
    let (p, _) = open(b.mqtt, "pub", true, &[], None);
    send(
        &p,
        &publish("", b"x", 0, 0, false, &prop_u16(TOPIC_ALIAS, 4)),
    );
    expect_bytes(&p, &server_disconnect(0x82));
    expect_closed(&p, ARRIVE);
}

#[test]
fn mqtt_3_3_2_7_subscribers_never_see_the_publishers_topic_alias_including_3_1_1() {
    let b = broker();
    let (s5, _) = open(b.mqtt, "sub5", true, &[], None);
    sub(&s5, 1, "ta/x", 0x00);
    let s3 = common::connect_raw(b.mqtt);
    send(&s3, &common::packet::connect_v311("sub311", 60, true));
    expect_bytes(&s3, &common::packet::connack_v311(false, 0));
    send(&s3, &common::packet::subscribe(false, 1, "ta/x", 0));
    expect_bytes(&s3, &[0x90, 0x03, 0x00, 0x01, 0x00]);
    let (_c, mut rq) = rq5::subscriber(b.mqtt, "subrq", "ta/x", QoS::AtMostOnce);

    let (p, _) = open(b.mqtt, "pub", true, &[], None);
    send(
        &p,
        &publish("ta/x", b"A", 0, 0, false, &prop_u16(TOPIC_ALIAS, 7)),
    );
    send(
        &p,
        &publish("", b"B", 0, 0, false, &prop_u16(TOPIC_ALIAS, 7)),
    );

    for payload in [b"A", b"B"] {
        let got = next_publish(&s5, true);
        assert_eq!(got.topic, "ta/x");
        assert_eq!(got.payload, payload);
        assert!(got.props.is_empty(), "no alias forwarded: {:?}", got.props);
        // 3.1.1: exact bytes, full topic name.
        let mut want = vec![0x30, 0x07];
        want.extend(utf8("ta/x"));
        want.extend(payload);
        expect_bytes(&s3, &want);
        let got = rq5::next_publish(&mut rq, ARRIVE).expect("rumqttc subscriber");
        assert_eq!(&got.topic[..], b"ta/x");
        assert_eq!(&got.payload[..], payload);
        assert_eq!(got.properties.and_then(|p| p.topic_alias), None);
    }
}

// ================================================================ Topic Alias, outbound

#[test]
fn mqtt_3_3_2_11_outbound_topic_alias_first_with_topic_then_alias_alone() {
    let b = broker();
    let (s, _) = open(b.mqtt, "sub", true, &prop_u16(TOPIC_ALIAS_MAXIMUM, 5), None);
    sub(&s, 1, "oa/#", 0x00);
    let (p, _) = open(b.mqtt, "pub", true, &[], None);
    send(&p, &publish("oa/t", b"1", 0, 0, false, &[]));
    send(&p, &publish("oa/t", b"2", 0, 0, false, &[]));
    send(&p, &publish("oa/u", b"3", 0, 0, false, &[]));
    send(&p, &publish("oa/u", b"4", 0, 0, false, &[]));

    let first = next_publish(&s, true);
    assert_eq!(
        (first.topic.as_str(), first.payload.as_slice()),
        ("oa/t", &b"1"[..])
    );
    let a = first
        .alias()
        .expect("first message carries topic and a Topic Alias");
    assert!(
        (1..=5).contains(&a),
        "MQTT-3.3.2-11: alias {a} within 1..=5"
    );
    let second = next_publish(&s, true);
    assert_eq!(second.payload, b"2");
    assert_eq!(
        second.topic, "",
        "second message on the same topic: empty topic name"
    );
    assert_eq!(second.alias(), Some(a));
    let third = next_publish(&s, true);
    assert_eq!(third.topic, "oa/u");
    let a2 = third.alias().expect("alias for the second topic");
    assert!((1..=5).contains(&a2) && a2 != a, "alias {a2} vs {a}");
    let fourth = next_publish(&s, true);
    assert_eq!((fourth.topic.as_str(), fourth.alias()), ("", Some(a2)));

    // MQTT-3.3.2-7: mappings do not survive the connection.
    drop(s);
    let (s, _) = open(b.mqtt, "sub", true, &prop_u16(TOPIC_ALIAS_MAXIMUM, 5), None);
    sub(&s, 1, "oa/#", 0x00);
    send(&p, &publish("oa/t", b"5", 0, 0, false, &[]));
    let got = next_publish(&s, true);
    assert_eq!(got.topic, "oa/t", "new connection: topic name sent again");
    assert_eq!(got.payload, b"5");
}

#[test]
fn mqtt_3_3_2_3_4_outbound_topic_aliases_false_never_sends_an_alias() {
    let b = Broker::start(&[
        "--allow-anonymous",
        "--sys-interval",
        "0",
        "--outbound-topic-aliases",
        "false",
    ]);
    let (s, _) = open(b.mqtt, "sub", true, &prop_u16(TOPIC_ALIAS_MAXIMUM, 5), None);
    sub(&s, 1, "oa/t", 0x00);
    let (p, _) = open(b.mqtt, "pub", true, &[], None);
    for i in 0..3u8 {
        send(&p, &publish("oa/t", &[b'0' + i], 0, 0, false, &[]));
    }
    for i in 0..3u8 {
        let got = next_publish(&s, true);
        assert_eq!(
            (got.topic.as_str(), got.payload.as_slice()),
            ("oa/t", &[b'0' + i][..])
        );
        assert_eq!(got.alias(), None);
    }
}

#[test]
fn mqtt_3_1_2_27_subscriber_with_topic_alias_maximum_0_or_absent_never_gets_an_alias() {
    let b = broker();
    let (zero, _) = open(
        b.mqtt,
        "zero",
        true,
        &prop_u16(TOPIC_ALIAS_MAXIMUM, 0),
        None,
    );
    sub(&zero, 1, "oa/t", 0x00);
    let (absent, _) = open(b.mqtt, "absent", true, &[], None);
    sub(&absent, 1, "oa/t", 0x00);
    let (p, _) = open(b.mqtt, "pub", true, &[], None);
    for i in 0..3u8 {
        send(&p, &publish("oa/t", &[b'0' + i], 0, 0, false, &[]));
    }
    for s in [&zero, &absent] {
        for i in 0..3u8 {
            let got = next_publish(s, true);
            assert_eq!(
                (got.topic.as_str(), got.payload.as_slice()),
                ("oa/t", &[b'0' + i][..])
            );
            assert_eq!(got.alias(), None);
        }
    }
}

// ================================================================ Maximum Packet Size

#[test]
fn mqtt_3_1_2_24_message_above_the_clients_maximum_packet_size_is_skipped_not_fatal() {
    let b = broker();
    let (s, _) = open(
        b.mqtt,
        "small",
        true,
        &prop_u32(MAXIMUM_PACKET_SIZE, 100),
        None,
    );
    sub(&s, 1, "mps/#", 0x01);
    let (p, _) = open(b.mqtt, "pub", true, &[], None);
    let big = vec![b'x'; 500];
    // QoS 0 and QoS 1: the big one is discarded (MQTT-3.1.2-25), the next small one arrives.
    send(&p, &publish("mps/0", &big, 0, 0, false, &[]));
    send(&p, &publish("mps/0", b"small0", 0, 0, false, &[]));
    assert_eq!(publish_q1(&p, 1, "mps/1", &big, &[]), 0x00);
    assert_eq!(publish_q1(&p, 2, "mps/1", b"small1", &[]), 0x00);

    let got = read_packet(&s);
    assert!(
        got.len() <= 100,
        "packet of {} bytes > Maximum Packet Size 100",
        got.len()
    );
    let got = parse_publish(&got, true);
    assert_eq!(
        (got.topic.as_str(), got.payload.as_slice()),
        ("mps/0", &b"small0"[..])
    );
    let got = read_packet(&s);
    assert!(
        got.len() <= 100,
        "packet of {} bytes > Maximum Packet Size 100",
        got.len()
    );
    let got = parse_publish(&got, true);
    assert_eq!(
        (got.topic.as_str(), got.payload.as_slice(), got.qos),
        ("mps/1", &b"small1"[..], 1)
    );
    send(&s, &puback(got.packet_id));
    // Still connected.
    send(&s, &pingreq());
    expect_bytes(&s, &pingresp());
    assert!(api_status(b.web)["messages_dropped"].as_u64().unwrap() >= 2);
}

#[test]
fn mqtt_3_1_2_25_skipped_oversized_message_does_not_use_up_the_topic_alias_mapping() {
    // A message discarded for the client's Maximum Packet Size is never sent, so the Topic Alias
    // mapping it would have set up never reaches the client; the next message on that topic must
    // still carry the topic name (§3.3.2.3.4: an alias alone needs a mapping the receiver has).
    let b = broker();
    let mut props = prop_u32(MAXIMUM_PACKET_SIZE, 100);
    props.extend(prop_u16(TOPIC_ALIAS_MAXIMUM, 5));
    let (s, _) = open(b.mqtt, "small", true, &props, None);
    sub(&s, 1, "mix/t", 0x00);
    let (p, _) = open(b.mqtt, "pub", true, &[], None);
    send(&p, &publish("mix/t", &[b'x'; 500], 0, 0, false, &[]));
    send(&p, &publish("mix/t", b"small", 0, 0, false, &[]));
    let got = next_publish(&s, true);
    assert_eq!(got.payload, b"small");
    assert_eq!(
        got.topic,
        "mix/t",
        "first PUBLISH the client receives on this topic must name it (alias {:?})",
        got.alias()
    );
}

// ================================================================ forwarded unaltered

fn rich_properties() -> Vec<u8> {
    let mut props = Vec::new();
    props.extend(prop_u8(PAYLOAD_FORMAT, 1));
    props.extend(prop_str(CONTENT_TYPE, "text/plain; charset=utf-8"));
    props.extend(prop_str(RESPONSE_TOPIC, "reply/to/me"));
    props.extend(prop_bin(CORRELATION_DATA, &[0x00, 0x01, 0x02, 0xff]));
    props.extend(prop_pair("k", "v1"));
    props.extend(prop_pair("a", "b"));
    props.extend(prop_pair("k", "v2"));
    props.extend(prop_pair("k", "v1"));
    props
}

const RICH_USER_PROPERTIES: [(&str, &str); 4] = [("k", "v1"), ("a", "b"), ("k", "v2"), ("k", "v1")];

#[test]
fn mqtt_3_3_2_4_and_15_to_20_publish_properties_are_forwarded_unaltered() {
    let b = broker();
    let (s, _) = open(b.mqtt, "sub", true, &[], None);
    sub(&s, 1, "fwd/t", 0x00);
    let (_c, mut rq) = rq5::subscriber(b.mqtt, "subrq", "fwd/t", QoS::AtMostOnce);
    let (p, _) = open(b.mqtt, "pub", true, &[], None);
    send(
        &p,
        &publish("fwd/t", "héllo".as_bytes(), 0, 0, false, &rich_properties()),
    );

    let got = next_publish(&s, true);
    assert_eq!(got.payload, "héllo".as_bytes());
    assert_eq!(got.prop(PAYLOAD_FORMAT), Some(&[1u8][..]), "MQTT-3.3.2-4");
    assert_eq!(
        got.prop(CONTENT_TYPE),
        Some(&utf8("text/plain; charset=utf-8")[..]),
        "MQTT-3.3.2-20"
    );
    assert_eq!(
        got.prop(RESPONSE_TOPIC),
        Some(&utf8("reply/to/me")[..]),
        "MQTT-3.3.2-15"
    );
    assert_eq!(
        got.prop(CORRELATION_DATA),
        Some(&common::packet::binary(&[0x00, 0x01, 0x02, 0xff])[..]),
        "MQTT-3.3.2-16"
    );
    let want: Vec<(String, String)> = RICH_USER_PROPERTIES
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    assert_eq!(
        got.user_properties(),
        want,
        "MQTT-3.3.2-17/18: all, in order"
    );
    assert_eq!(
        got.props.len(),
        8,
        "nothing added or removed: {:?}",
        got.props
    );

    // The same seen by an independent decoder.
    let got = rq5::next_publish(&mut rq, ARRIVE).expect("rumqttc subscriber");
    let props = got.properties.expect("properties");
    assert_eq!(props.payload_format_indicator, Some(1));
    assert_eq!(
        props.content_type.as_deref(),
        Some("text/plain; charset=utf-8")
    );
    assert_eq!(props.response_topic.as_deref(), Some("reply/to/me"));
    assert_eq!(
        props.correlation_data.as_deref(),
        Some(&[0x00, 0x01, 0x02, 0xff][..])
    );
    assert_eq!(props.user_properties, want);
}

#[test]
fn mqtt_3_3_2_3_2_payload_format_1_with_invalid_utf8_is_puback_0x99_and_not_delivered() {
    let b = broker();
    let (s, _) = open(b.mqtt, "sub", true, &[], None);
    sub(&s, 1, "pfi/t", 0x01);
    let (p, _) = open(b.mqtt, "pub", true, &[], None);
    let pfi = prop_u8(PAYLOAD_FORMAT, 1);
    assert_eq!(publish_q1(&p, 1, "pfi/t", &[0xff, 0xfe, 0x80], &pfi), 0x99);
    assert_eq!(publish_q1(&p, 2, "pfi/t", "ok ✓".as_bytes(), &pfi), 0x00);
    let got = next_publish(&s, true);
    assert_eq!(
        got.payload,
        "ok ✓".as_bytes(),
        "the invalid message must not be delivered"
    );
    send(&s, &puback(got.packet_id));
    expect_silence(&s, QUIET, "nothing else");
}

// ================================================================ Request Response / Problem Information

#[test]
fn mqtt_3_1_2_28_request_response_information_1_gets_response_information_and_0_none() {
    let b = broker();
    let (_s, (_, _, props)) = open(
        b.mqtt,
        "asks",
        true,
        &prop_u8(REQUEST_RESPONSE_INFO, 1),
        None,
    );
    let info = props
        .iter()
        .find(|(id, _)| *id == RESPONSE_INFO)
        .map(|(_, v)| v.clone())
        .expect("CONNACK Response Information");
    assert!(
        info.len() > 2,
        "non-empty Response Information: {}",
        hex(&info)
    );
    assert!(std::str::from_utf8(&info[2..]).is_ok());
    for req in [Some(0u8), None] {
        let props_in = req
            .map(|v| prop_u8(REQUEST_RESPONSE_INFO, v))
            .unwrap_or_default();
        let (_s, (_, _, props)) = open(b.mqtt, "nope", true, &props_in, None);
        assert!(
            !props.iter().any(|(id, _)| *id == RESPONSE_INFO),
            "MQTT-3.1.2-28 (request {req:?}): {props:?}"
        );
    }
}

#[test]
fn mqtt_3_1_2_29_request_problem_information_0_means_no_reason_string_on_acks() {
    let b = broker();
    let (s, _) = open(
        b.mqtt,
        "quiet",
        true,
        &prop_u8(REQUEST_PROBLEM_INFO, 0),
        None,
    );
    let no_problem_props = |pkt: &[u8], props_from: usize| {
        if pkt.len() > props_from {
            let (props, _) = props_at(&pkt[props_from..]);
            assert!(
                !props
                    .iter()
                    .any(|(id, _)| *id == REASON_STRING || *id == USER_PROPERTY),
                "Reason String / User Property despite Request Problem Information 0: {}",
                hex(pkt)
            );
        }
    };
    // PUBACK 0x10 (no subscribers) and 0x99 (bad UTF-8): fixed header, id, reason, props.
    send(&s, &publish("rpi/t", b"x", 1, 1, false, &[]));
    let ack = read_packet(&s);
    assert_eq!(&ack[..3], &[0x40, ack[1], 0x00]);
    assert_eq!(ack.get(4), Some(&0x10));
    no_problem_props(&ack, 5);
    send(
        &s,
        &publish("rpi/t", &[0xff], 1, 2, false, &prop_u8(PAYLOAD_FORMAT, 1)),
    );
    let ack = read_packet(&s);
    assert_eq!(ack.get(4), Some(&0x99));
    no_problem_props(&ack, 5);
    // SUBACK 0x8F (invalid filter): fixed header, id, props, reasons.
    send(&s, &subscribe(3, "a/#/b", 0x00));
    let ack = read_packet(&s);
    assert_eq!(ack[0], 0x90);
    assert_eq!(*ack.last().unwrap(), 0x8f);
    no_problem_props(&ack, 4);
    // UNSUBACK 0x11 (no subscription existed).
    send(
        &s,
        &common::packet::unsubscribe(true, 4, "never/subscribed"),
    );
    let ack = read_packet(&s);
    assert_eq!(ack[0], 0xb0);
    assert_eq!(*ack.last().unwrap(), 0x11);
    no_problem_props(&ack, 4);
}
