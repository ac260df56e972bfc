//! Retained messages (MQTT 5.0 §3.3.1.3, §3.3.2.3.3) and Will Messages (§3.1.2.5, §3.1.3.2)
//! against the real broker binary: raw sockets where flags and properties matter, rumqttc
//! (5.0 and 3.1.1) as an independent client elsewhere.
//!
//! Every test starts its own broker on 127.0.0.1 with OS-chosen ports.

mod common;

use common::packet::{disconnect_v5, pingreq, pingresp, server_disconnect};
use common::{expect_bytes, expect_closed, hex, read_packet, send, Broker};
use raw::*;
use rumqttc::v5::mqttbytes::QoS;
use std::time::{Duration, Instant};

/// How long "nothing arrives" is watched for.
const QUIET: Duration = Duration::from_millis(700);
/// Bound on waiting for something that must arrive.
const ARRIVE: Duration = Duration::from_secs(5);

/// A broker with `$SYS` off, so that `retained_messages` counts only this test's messages.
fn broker() -> Broker {
    Broker::start(&["--allow-anonymous", "--sys-interval", "0"])
}

/// Publishes `payload` on `topic` at QoS 1 from a fresh raw 5.0 client and waits for PUBACK.
fn publish_q1(b: &Broker, id: &str, topic: &str, payload: &[u8], retain: bool, props: &[u8]) {
    let (s, _) = open(b.mqtt, id, true, &[], None);
    send(&s, &publish(topic, payload, 1, 7, retain, props));
    let ack = read_packet(&s);
    // Success (short form) or 0x10 No matching subscribers: both mean accepted.
    assert!(
        ack == [0x40, 0x02, 0x00, 0x07] || ack == [0x40, 0x03, 0x00, 0x07, 0x10],
        "PUBACK {}",
        hex(&ack)
    );
    send(&s, &disconnect_v5(0));
    expect_closed(&s, ARRIVE);
}

// ================================================================ retained messages

#[test]
fn mqtt_3_3_1_5_retained_message_is_stored_and_sent_to_later_subscribers_with_retain_1() {
    let b = broker();
    publish_q1(&b, "pub", "r/a", b"hello", true, &[]);

    // 5.0 raw subscriber, Retain Handling 0 (MQTT-3.3.1-9): RETAIN=1 on the copy sent at subscribe.
    let (s, _) = open(b.mqtt, "sub5", true, &[], None);
    sub(&s, 1, "r/a", 0x01);
    let p = next_publish(&s, true);
    assert_eq!(
        (p.topic.as_str(), p.payload.as_slice()),
        ("r/a", &b"hello"[..])
    );
    assert!(
        p.retain,
        "retained message sent at subscribe must have RETAIN=1"
    );
    assert_eq!(p.qos, 1);
    expect_silence(&s, QUIET, "only one retained message");

    // 3.1.1 subscriber through rumqttc (3.1.1 MQTT-3.3.1-8): also RETAIN=1.
    let mut o = rumqttc::MqttOptions::new("sub311", "127.0.0.1", b.mqtt.port());
    o.set_keep_alive(Duration::from_secs(30));
    let (c, mut conn) = rumqttc::Client::new(o, 16);
    c.subscribe("r/#", rumqttc::QoS::AtMostOnce).unwrap();
    let deadline = Instant::now() + ARRIVE;
    let got = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match conn.recv_timeout(left) {
            Ok(Ok(rumqttc::Event::Incoming(rumqttc::Packet::Publish(p)))) => break p,
            Ok(Ok(_)) => {}
            other => panic!("3.1.1 subscriber got no retained message: {other:?}"),
        }
    };
    assert_eq!(got.topic, "r/a");
    assert_eq!(&got.payload[..], b"hello");
    assert!(got.retain);
}

#[test]
fn mqtt_3_3_1_5_newer_retained_message_replaces_the_older_one() {
    let b = broker();
    publish_q1(&b, "pub1", "r/x", b"one", true, &[]);
    publish_q1(&b, "pub2", "r/x", b"two", true, &[]);
    let (s, _) = open(b.mqtt, "sub", true, &[], None);
    sub(&s, 1, "r/x", 0x00);
    let p = next_publish(&s, true);
    assert_eq!(p.payload, b"two");
    assert!(p.retain);
    expect_silence(&s, QUIET, "the replaced retained message");
    assert_eq!(api_status(b.web)["retained_messages"], 1);
}

#[test]
fn mqtt_3_3_1_8_non_retained_publish_leaves_the_retained_message_alone() {
    let b = broker();
    publish_q1(&b, "pub1", "r/k", b"kept", true, &[]);
    publish_q1(&b, "pub2", "r/k", b"live only", false, &[]);
    let (s, _) = open(b.mqtt, "sub", true, &[], None);
    sub(&s, 1, "r/k", 0x00);
    let p = next_publish(&s, true);
    assert_eq!(p.payload, b"kept");
    expect_silence(&s, QUIET, "a non-retained message is not stored");
}

#[test]
fn mqtt_3_3_1_6_empty_retained_payload_deletes_and_is_still_delivered_to_subscribers() {
    let b = broker();
    // Existing subscriber, no Retain As Published.
    let (live, _) = open(b.mqtt, "live", true, &[], None);
    sub(&live, 1, "r/del", 0x01);

    publish_q1(&b, "pub1", "r/del", b"value", true, &[]);
    let p = next_publish(&live, true);
    assert_eq!(p.payload, b"value");
    send(&live, &common::packet::puback(p.packet_id));
    assert_eq!(api_status(b.web)["retained_messages"], 1);

    // Empty retained payload: processed normally (delivered), and deletes (MQTT-3.3.1-6, -7).
    publish_q1(&b, "pub2", "r/del", b"", true, &[]);
    let p = next_publish(&live, true);
    assert_eq!(p.topic, "r/del");
    assert!(p.payload.is_empty(), "payload {:?}", p.payload);
    assert!(
        !p.retain,
        "live delivery without Retain As Published has RETAIN=0"
    );
    send(&live, &common::packet::puback(p.packet_id));

    let (late, _) = open(b.mqtt, "late", true, &[], None);
    sub(&late, 1, "r/#", 0x01);
    expect_silence(&late, QUIET, "retained message was deleted");
    assert_eq!(api_status(b.web)["retained_messages"], 0);
}

#[test]
fn mqtt_3_3_1_9_wildcard_subscription_receives_every_matching_retained_message() {
    let b = broker();
    for (i, t) in ["w/a", "w/b", "w/c/d", "other/x", "wx"].iter().enumerate() {
        publish_q1(&b, &format!("p{i}"), t, t.as_bytes(), true, &[]);
    }
    let (s, _) = open(b.mqtt, "s1", true, &[], None);
    sub(&s, 1, "w/#", 0x00);
    let mut topics: Vec<String> = (0..3)
        .map(|_| {
            let p = next_publish(&s, true);
            assert!(p.retain);
            assert_eq!(p.payload, p.topic.as_bytes());
            p.topic
        })
        .collect();
    topics.sort();
    assert_eq!(topics, ["w/a", "w/b", "w/c/d"]);
    expect_silence(&s, QUIET, "only matching retained messages");

    let (s2, _) = open(b.mqtt, "s2", true, &[], None);
    sub(&s2, 1, "+/+", 0x00);
    let mut topics: Vec<String> = (0..3).map(|_| next_publish(&s2, true).topic).collect();
    topics.sort();
    assert_eq!(topics, ["other/x", "w/a", "w/b"]);
    expect_silence(&s2, QUIET, "only matching retained messages");
}

#[test]
fn mqtt_3_3_1_12_live_retained_publish_has_retain_0_unless_retain_as_published() {
    let b = broker();
    let (plain, _) = open(b.mqtt, "plain", true, &[], None);
    sub(&plain, 1, "r/live", 0x01);
    let (rap, _) = open(b.mqtt, "rap", true, &[], None);
    sub(&rap, 1, "r/live", 0x01 | 0x08); // Retain As Published

    publish_q1(&b, "pub", "r/live", b"now", true, &[]);
    let p = next_publish(&plain, true);
    assert_eq!(p.payload, b"now");
    assert!(
        !p.retain,
        "MQTT-3.3.1-12: RETAIN must be 0 without Retain As Published"
    );
    let p = next_publish(&rap, true);
    assert_eq!(p.payload, b"now");
    assert!(
        p.retain,
        "MQTT-3.3.1-13: RETAIN as published with Retain As Published"
    );
}

#[test]
fn mqtt_3_3_2_5_expired_retained_message_is_not_sent_to_a_new_subscriber() {
    let b = broker();
    publish_q1(
        &b,
        "pub",
        "r/exp",
        b"short-lived",
        true,
        &prop_u32(MESSAGE_EXPIRY, 1),
    );
    // Before expiry it is there.
    let (s, _) = open(b.mqtt, "early", true, &[], None);
    sub(&s, 1, "r/exp", 0x00);
    let p = next_publish(&s, true);
    assert_eq!(p.payload, b"short-lived");
    assert_eq!(p.expiry(), Some(1));

    std::thread::sleep(Duration::from_millis(2200));
    let (s2, _) = open(b.mqtt, "late", true, &[], None);
    sub(&s2, 1, "r/exp", 0x00);
    expect_silence(
        &s2,
        QUIET,
        "retained message past its Message Expiry Interval",
    );
}

#[test]
fn mqtt_3_3_2_6_retained_message_expiry_interval_is_forwarded_decreased() {
    let b = broker();
    publish_q1(
        &b,
        "pub",
        "r/dec",
        b"x",
        true,
        &prop_u32(MESSAGE_EXPIRY, 10),
    );
    std::thread::sleep(Duration::from_millis(2100));
    let (s, _) = open(b.mqtt, "sub", true, &[], None);
    sub(&s, 1, "r/dec", 0x00);
    let p = next_publish(&s, true);
    let left = p
        .expiry()
        .expect("Message Expiry Interval must be forwarded");
    assert!(
        (6..=8).contains(&left),
        "10 s retained message, subscribed ~2.1 s later: forwarded {left}"
    );
}

#[test]
fn mqtt_3_2_2_3_5_retain_unavailable_connack_says_0_and_retained_publish_gets_disconnect_0x9a() {
    let b = Broker::start(&[
        "--allow-anonymous",
        "--sys-interval",
        "0",
        "--retain-available",
        "false",
    ]);
    let (s, (_, _, props)) = open(b.mqtt, "c", true, &[], None);
    assert!(
        props.contains(&(RETAIN_AVAILABLE, vec![0])),
        "CONNACK must carry Retain Available 0: {props:?}"
    );
    // A non-retained publish is fine.
    send(&s, &publish("t", b"ok", 1, 1, false, &[]));
    assert_eq!(read_packet(&s), [0x40, 0x03, 0x00, 0x01, 0x10]); // No matching subscribers
                                                                 // §3.3.1.3: RETAIN=1 when Retain Available is 0 → DISCONNECT 0x9A.
    send(&s, &publish("t", b"bad", 0, 0, true, &[]));
    expect_bytes(&s, &server_disconnect(0x9a));
    expect_closed(&s, ARRIVE);
    assert_eq!(api_status(b.web)["retained_messages"], 0);
}

#[test]
fn mqtt_3_2_2_13_will_retain_is_refused_when_retain_is_unavailable() {
    let b = Broker::start(&[
        "--allow-anonymous",
        "--sys-interval",
        "0",
        "--retain-available",
        "false",
    ]);
    let s = common::connect_raw(b.mqtt);
    let will = Will {
        topic: "will/t",
        payload: b"w",
        qos: 0,
        retain: true,
        props: vec![],
    };
    send(&s, &connect("c", 60, true, &[], Some(&will)));
    let (sp, reason, _) = parse_connack(&read_packet(&s));
    assert!(!sp);
    assert_eq!(reason, 0x9a, "CONNACK Retain not supported");
    expect_closed(&s, ARRIVE);
}

// ================================================================ wills

fn will(topic: &'static str, payload: &'static [u8]) -> Will<'static> {
    Will {
        topic,
        payload,
        qos: 0,
        retain: false,
        props: vec![],
    }
}

#[test]
fn mqtt_3_1_2_8_will_is_published_when_the_connection_closes_without_disconnect() {
    let b = broker();
    let (_c, mut conn) = rq5::subscriber(b.mqtt, "watch", "will/#", QoS::AtLeastOnce);
    let (s, _) = open(b.mqtt, "dies", true, &[], Some(&will("will/dies", b"gone")));
    drop(s); // socket closed, no DISCONNECT
    let p = rq5::next_publish(&mut conn, ARRIVE).expect("will message");
    assert_eq!(&p.topic[..], b"will/dies");
    assert_eq!(&p.payload[..], b"gone");
    assert!(!p.retain);
}

#[test]
fn mqtt_3_1_2_8_v311_will_from_rumqttc_is_published_on_unclean_close() {
    let b = broker();
    let (_c, mut conn) = rq5::subscriber(b.mqtt, "watch", "will/#", QoS::AtMostOnce);
    let mut o = rumqttc::MqttOptions::new("dies311", "127.0.0.1", b.mqtt.port());
    o.set_keep_alive(Duration::from_secs(30));
    o.set_last_will(rumqttc::LastWill::new(
        "will/311",
        "bye",
        rumqttc::QoS::AtMostOnce,
        false,
    ));
    let (c311, mut conn311) = rumqttc::Client::new(o, 16);
    match conn311.recv_timeout(ARRIVE) {
        Ok(Ok(rumqttc::Event::Incoming(rumqttc::Packet::ConnAck(a)))) => {
            assert_eq!(a.code, rumqttc::ConnectReturnCode::Success)
        }
        other => panic!("3.1.1 connect: {other:?}"),
    }
    // Dropping the event loop closes the socket without DISCONNECT.
    drop(conn311);
    drop(c311);
    let p = rq5::next_publish(&mut conn, ARRIVE).expect("3.1.1 will message");
    assert_eq!(&p.topic[..], b"will/311");
    assert_eq!(&p.payload[..], b"bye");
}

#[test]
fn mqtt_3_1_2_10_no_will_after_disconnect_with_reason_0x00() {
    let b = broker();
    let (_c, mut conn) = rq5::subscriber(b.mqtt, "watch", "will/#", QoS::AtLeastOnce);
    let (s, _) = open(
        b.mqtt,
        "polite",
        true,
        &[],
        Some(&will("will/polite", b"x")),
    );
    send(&s, &disconnect_v5(0x00));
    expect_closed(&s, ARRIVE);
    assert!(
        rq5::next_publish(&mut conn, Duration::from_millis(1500)).is_none(),
        "will published after DISCONNECT 0x00"
    );
}

#[test]
fn mqtt_3_14_2_1_disconnect_with_will_message_0x04_publishes_the_will() {
    let b = broker();
    let (_c, mut conn) = rq5::subscriber(b.mqtt, "watch", "will/#", QoS::AtLeastOnce);
    let (s, _) = open(
        b.mqtt,
        "leaver",
        true,
        &[],
        Some(&will("will/leaver", b"w")),
    );
    send(&s, &disconnect_v5(0x04));
    expect_closed(&s, ARRIVE);
    let p = rq5::next_publish(&mut conn, ARRIVE).expect("will after DISCONNECT 0x04");
    assert_eq!(&p.topic[..], b"will/leaver");
    assert_eq!(&p.payload[..], b"w");
}

#[test]
fn mqtt_3_1_2_15_will_qos_1_and_will_retain_are_honoured() {
    let b = broker();
    let (live, _) = open(b.mqtt, "live", true, &[], None);
    sub(&live, 1, "will/q", 0x02); // granted QoS 2
    let w = Will {
        topic: "will/q",
        payload: b"last words",
        qos: 1,
        retain: true,
        props: vec![],
    };
    let (s, _) = open(b.mqtt, "dies", true, &[], Some(&w));
    drop(s);
    let p = next_publish(&live, true);
    assert_eq!(p.payload, b"last words");
    assert_eq!(p.qos, 1, "will QoS 1 (min of will QoS and granted QoS)");
    assert!(!p.retain, "live delivery without Retain As Published");
    send(&live, &common::packet::puback(p.packet_id));

    // Published as a retained message (MQTT-3.1.2-15): a later subscriber gets it with RETAIN=1.
    let (late, _) = open(b.mqtt, "late", true, &[], None);
    sub(&late, 1, "will/#", 0x02);
    let p = next_publish(&late, true);
    assert_eq!(
        (p.topic.as_str(), p.payload.as_slice()),
        ("will/q", &b"last words"[..])
    );
    assert!(p.retain);
    assert_eq!(p.qos, 1, "retained will keeps its QoS 1");
}

#[test]
fn mqtt_3_1_2_14_will_retain_0_is_published_as_a_non_retained_message() {
    let b = broker();
    let (live, _) = open(b.mqtt, "live", true, &[], None);
    sub(&live, 1, "will/n", 0x00);
    let (s, _) = open(b.mqtt, "dies", true, &[], Some(&will("will/n", b"x")));
    drop(s);
    assert_eq!(next_publish(&live, true).payload, b"x");
    let (late, _) = open(b.mqtt, "late", true, &[], None);
    sub(&late, 1, "will/#", 0x00);
    expect_silence(&late, QUIET, "a non-retained will is not stored");
}

#[test]
fn mqtt_3_1_3_2_will_properties_are_forwarded_with_the_will_message() {
    let b = broker();
    let (live, _) = open(b.mqtt, "live", true, &[], None);
    sub(&live, 1, "will/props", 0x00);
    let mut props = Vec::new();
    props.extend(prop_u8(PAYLOAD_FORMAT, 1));
    props.extend(prop_str(CONTENT_TYPE, "application/json"));
    props.extend(prop_str(RESPONSE_TOPIC, "reply/here"));
    props.extend(prop_bin(CORRELATION_DATA, &[0xde, 0xad, 0x00, 0xbe]));
    props.extend(prop_pair("k", "v1"));
    props.extend(prop_pair("a", "b"));
    props.extend(prop_pair("k", "v1"));
    let w = Will {
        topic: "will/props",
        payload: b"{\"gone\":true}",
        qos: 0,
        retain: false,
        props,
    };
    let (s, _) = open(b.mqtt, "dies", true, &[], Some(&w));
    drop(s);
    let p = next_publish(&live, true);
    assert_eq!(p.payload, b"{\"gone\":true}");
    assert_eq!(p.prop(PAYLOAD_FORMAT), Some(&[1u8][..]));
    assert_eq!(
        p.prop(CONTENT_TYPE),
        Some(&common::packet::utf8("application/json")[..])
    );
    assert_eq!(
        p.prop(RESPONSE_TOPIC),
        Some(&common::packet::utf8("reply/here")[..])
    );
    assert_eq!(
        p.prop(CORRELATION_DATA),
        Some(&common::packet::binary(&[0xde, 0xad, 0x00, 0xbe])[..])
    );
    let up: Vec<(String, String)> = [("k", "v1"), ("a", "b"), ("k", "v1")]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    assert_eq!(p.user_properties(), up, "user properties in order");
    assert_eq!(p.prop(WILL_DELAY), None);
}

/// A QoS 0 will on `will/delayed` with Will Delay Interval `delay` seconds.
fn delayed_will(delay: u32) -> Will<'static> {
    Will {
        topic: "will/delayed",
        payload: b"late",
        qos: 0,
        retain: false,
        props: prop_u32(WILL_DELAY, delay),
    }
}

#[test]
fn mqtt_3_1_3_2_2_will_delay_interval_delays_the_will() {
    let b = broker();
    let (live, _) = open(b.mqtt, "live", true, &[], None);
    sub(&live, 1, "will/#", 0x00);
    let (s, _) = open(
        b.mqtt,
        "delayed",
        true,
        &prop_u32(SESSION_EXPIRY, 10),
        Some(&delayed_will(2)),
    );
    let closed = Instant::now();
    drop(s);
    let p = try_read_packet(&live, Duration::from_secs(6)).expect("will within 6 s");
    let after = closed.elapsed();
    assert_eq!(parse_publish(&p, true).payload, b"late");
    assert!(
        after >= Duration::from_millis(1900) && after <= Duration::from_millis(4500),
        "Will Delay Interval 2 s: will arrived after {after:?}"
    );
}

#[test]
fn mqtt_3_1_3_2_3_delayed_will_message_expiry_counts_from_publication_not_from_disconnect() {
    // §3.1.3.2.3: the will's Message Expiry Interval "is sent as the Publication Expiry Interval
    // when the Server publishes the Will Message" — the clock starts at publication, after the
    // Will Delay Interval, so a will with delay 2 s and expiry 2 s must still be delivered.
    let b = broker();
    let (live, _) = open(b.mqtt, "live", true, &[], None);
    sub(&live, 1, "will/#", 0x00);
    let mut w = delayed_will(2);
    w.props.extend(prop_u32(MESSAGE_EXPIRY, 2));
    let (s, _) = open(b.mqtt, "exp", true, &prop_u32(SESSION_EXPIRY, 10), Some(&w));
    drop(s);
    let p = try_read_packet(&live, Duration::from_secs(5))
        .expect("will with Will Delay 2 s and Message Expiry 2 s must be published");
    let p = parse_publish(&p, true);
    assert_eq!(p.payload, b"late");
    let left = p.expiry().expect("Message Expiry Interval forwarded");
    assert!((1..=2).contains(&left), "forwarded expiry {left}");
}

#[test]
fn mqtt_3_3_1_10_and_11_retain_handling_1_sends_only_for_new_subscriptions_and_2_never() {
    let b = broker();
    publish_q1(&b, "pub", "r/rh", b"kept", true, &[]);
    let (s, _) = open(b.mqtt, "rh1", true, &[], None);
    sub(&s, 1, "r/rh", 0x10); // Retain Handling 1, new subscription: sent
    assert_eq!(next_publish(&s, true).payload, b"kept");
    sub(&s, 2, "r/rh", 0x10); // existing subscription: not sent
    expect_silence(&s, QUIET, "Retain Handling 1 on an existing subscription");
    let (s2, _) = open(b.mqtt, "rh2", true, &[], None);
    sub(&s2, 1, "r/rh", 0x20); // Retain Handling 2: never
    expect_silence(&s2, QUIET, "Retain Handling 2");
}

#[test]
fn mqtt_3_1_3_9_reconnecting_within_the_will_delay_cancels_the_will() {
    let b = broker();
    let (live, _) = open(b.mqtt, "live", true, &[], None);
    sub(&live, 1, "will/#", 0x00);
    let (s, _) = open(
        b.mqtt,
        "back",
        true,
        &prop_u32(SESSION_EXPIRY, 10),
        Some(&delayed_will(2)),
    );
    drop(s);
    std::thread::sleep(Duration::from_millis(300));
    // Same client id, Clean Start 0: the session resumes before the delay has passed.
    let (s2, (present, _, _)) = open(b.mqtt, "back", false, &prop_u32(SESSION_EXPIRY, 10), None);
    assert!(present, "session must be resumed");
    expect_silence(&live, Duration::from_millis(3500), "cancelled will");
    send(&s2, &pingreq());
    expect_bytes(&s2, &pingresp());
}

#[test]
fn mqtt_3_1_3_2_2_will_delay_longer_than_session_expiry_publishes_when_the_session_ends() {
    let b = broker();
    let (live, _) = open(b.mqtt, "live", true, &[], None);
    sub(&live, 1, "will/#", 0x00);
    let (s, _) = open(
        b.mqtt,
        "short",
        true,
        &prop_u32(SESSION_EXPIRY, 2),
        Some(&delayed_will(30)),
    );
    let closed = Instant::now();
    drop(s);
    let p = try_read_packet(&live, Duration::from_secs(7)).expect("will when the session ends");
    let after = closed.elapsed();
    assert_eq!(parse_publish(&p, true).payload, b"late");
    assert!(
        after >= Duration::from_millis(1900) && after <= Duration::from_millis(5000),
        "session expiry 2 s < will delay 30 s: will arrived after {after:?}"
    );
}

#[test]
fn mqtt_3_1_3_2_2_will_delay_with_session_expiry_0_publishes_at_once() {
    let b = broker();
    let (live, _) = open(b.mqtt, "live", true, &[], None);
    sub(&live, 1, "will/#", 0x00);
    let (s, _) = open(b.mqtt, "zero", true, &[], Some(&delayed_will(30)));
    let closed = Instant::now();
    drop(s);
    let p = try_read_packet(&live, ARRIVE).expect("will when the session ends at close");
    assert_eq!(parse_publish(&p, true).payload, b"late");
    assert!(closed.elapsed() < Duration::from_millis(1500));
}

#[test]
fn mqtt_3_1_2_22_keep_alive_timeout_publishes_the_will() {
    let b = broker();
    let (live, _) = open(b.mqtt, "live", true, &[], None);
    sub(&live, 1, "will/#", 0x00);
    let s = common::connect_raw(b.mqtt);
    send(
        &s,
        &connect(
            "sleepy",
            1,
            true,
            &[],
            Some(&will("will/sleepy", b"timeout")),
        ),
    );
    assert_eq!(parse_connack(&read_packet(&s)).1, 0);
    let start = Instant::now();
    // Send nothing: the broker must close after 1.5 × Keep Alive, DISCONNECT 0x8D first.
    let seen = expect_closed(&s, Duration::from_secs(5));
    assert_eq!(
        seen,
        server_disconnect(0x8d),
        "DISCONNECT Keep Alive timeout"
    );
    assert!(
        start.elapsed() >= Duration::from_millis(1300),
        "{:?}",
        start.elapsed()
    );
    let p = next_publish(&live, true);
    assert_eq!(
        (p.topic.as_str(), p.payload.as_slice()),
        ("will/sleepy", &b"timeout"[..])
    );
}

#[test]
fn mqtt_3_1_4_3_takeover_with_clean_start_1_publishes_the_old_connections_will() {
    let b = broker();
    let (live, _) = open(b.mqtt, "live", true, &[], None);
    sub(&live, 1, "will/#", 0x00);
    let (old, _) = open(b.mqtt, "twin", true, &[], Some(&will("will/twin", b"old")));
    let (new, (present, _, _)) = open(b.mqtt, "twin", true, &[], None);
    assert!(!present);
    let seen = expect_closed(&old, ARRIVE);
    assert_eq!(
        seen,
        server_disconnect(0x8e),
        "old connection: DISCONNECT Session taken over"
    );
    let p = next_publish(&live, true);
    assert_eq!(
        (p.topic.as_str(), p.payload.as_slice()),
        ("will/twin", &b"old"[..])
    );
    expect_silence(&live, QUIET, "exactly one will");
    send(&new, &pingreq());
    expect_bytes(&new, &pingresp());
}

#[test]
fn mqtt_3_1_3_2_2_takeover_with_clean_start_1_ends_the_session_so_a_delayed_will_goes_now() {
    // The old session ends (Clean Start 1), which comes before its 20 s Will Delay Interval, so
    // its will is published at once. Repeated, as the outcome may depend on thread timing.
    let b = broker();
    let (live, _) = open(b.mqtt, "live", true, &[], None);
    sub(&live, 1, "will/#", 0x00);
    for round in 0..20 {
        let id = format!("twin{round}");
        let w = Will {
            topic: "will/delayed",
            payload: id.as_bytes(),
            qos: 0,
            retain: false,
            props: prop_u32(WILL_DELAY, 20),
        };
        let (old, _) = open(b.mqtt, &id, true, &prop_u32(SESSION_EXPIRY, 30), Some(&w));
        let (new, _) = open(b.mqtt, &id, true, &[], None);
        expect_closed(&old, ARRIVE);
        let p = try_read_packet(&live, Duration::from_secs(2)).unwrap_or_else(|| {
            panic!("round {round}: no will within 2 s of a Clean Start 1 takeover")
        });
        assert_eq!(parse_publish(&p, true).payload, id.as_bytes());
        send(&new, &disconnect_v5(0));
        expect_closed(&new, ARRIVE);
    }
}
// ------------------------------------------------------------------ local helpers

/// Byte-level MQTT 5.0 builders and parsers on top of `common` (kept local to this file).
#[allow(dead_code)]
mod raw {
    use super::common::packet::{binary, fixed, properties, utf8};
    use super::common::{self, hex, recv_exact, send, IO_TIMEOUT};
    use std::io::{ErrorKind, Read};
    use std::net::{SocketAddr, TcpStream};
    use std::time::Duration;

    // Property identifiers (§2.2.2.2).
    pub const PAYLOAD_FORMAT: u8 = 0x01;
    pub const MESSAGE_EXPIRY: u8 = 0x02;
    pub const CONTENT_TYPE: u8 = 0x03;
    pub const RESPONSE_TOPIC: u8 = 0x08;
    pub const CORRELATION_DATA: u8 = 0x09;
    pub const SESSION_EXPIRY: u8 = 0x11;
    pub const REQUEST_PROBLEM_INFO: u8 = 0x17;
    pub const WILL_DELAY: u8 = 0x18;
    pub const REQUEST_RESPONSE_INFO: u8 = 0x19;
    pub const RESPONSE_INFO: u8 = 0x1A;
    pub const REASON_STRING: u8 = 0x1F;
    pub const TOPIC_ALIAS_MAXIMUM: u8 = 0x22;
    pub const TOPIC_ALIAS: u8 = 0x23;
    pub const RETAIN_AVAILABLE: u8 = 0x25;
    pub const USER_PROPERTY: u8 = 0x26;
    pub const MAXIMUM_PACKET_SIZE: u8 = 0x27;

    pub fn prop_u8(id: u8, v: u8) -> Vec<u8> {
        vec![id, v]
    }
    pub fn prop_u16(id: u8, v: u16) -> Vec<u8> {
        let mut p = vec![id];
        p.extend(v.to_be_bytes());
        p
    }
    pub fn prop_u32(id: u8, v: u32) -> Vec<u8> {
        let mut p = vec![id];
        p.extend(v.to_be_bytes());
        p
    }
    pub fn prop_str(id: u8, s: &str) -> Vec<u8> {
        let mut p = vec![id];
        p.extend(utf8(s));
        p
    }
    pub fn prop_bin(id: u8, b: &[u8]) -> Vec<u8> {
        let mut p = vec![id];
        p.extend(binary(b));
        p
    }
    pub fn prop_pair(k: &str, v: &str) -> Vec<u8> {
        let mut p = vec![USER_PROPERTY];
        p.extend(utf8(k));
        p.extend(utf8(v));
        p
    }

    /// A will for [`connect`].
    pub struct Will<'a> {
        pub topic: &'a str,
        pub payload: &'a [u8],
        pub qos: u8,
        pub retain: bool,
        pub props: Vec<u8>,
    }

    /// MQTT 5.0 CONNECT (§3.1) with raw CONNECT properties and an optional will.
    pub fn connect(
        client_id: &str,
        keep_alive: u16,
        clean_start: bool,
        props: &[u8],
        will: Option<&Will>,
    ) -> Vec<u8> {
        let mut flags = if clean_start { 0x02 } else { 0 };
        if let Some(w) = will {
            flags |= 0x04 | (w.qos << 3) | if w.retain { 0x20 } else { 0 };
        }
        let mut body = utf8("MQTT");
        body.push(5);
        body.push(flags);
        body.extend(keep_alive.to_be_bytes());
        body.extend(properties(props));
        body.extend(utf8(client_id));
        if let Some(w) = will {
            body.extend(properties(&w.props));
            body.extend(utf8(w.topic));
            body.extend(binary(w.payload));
        }
        fixed(0x10, &body)
    }

    /// MQTT 5.0 PUBLISH (§3.3) with raw properties.
    pub fn publish(
        topic: &str,
        payload: &[u8],
        qos: u8,
        packet_id: u16,
        retain: bool,
        props: &[u8],
    ) -> Vec<u8> {
        let mut body = utf8(topic);
        if qos > 0 {
            body.extend(packet_id.to_be_bytes());
        }
        body.extend(properties(props));
        body.extend_from_slice(payload);
        fixed(0x30 | (qos << 1) | retain as u8, &body)
    }

    /// MQTT 5.0 SUBSCRIBE (§3.8) to one filter with a full Subscription Options byte:
    /// QoS bits 0-1, No Local bit 2, Retain As Published bit 3, Retain Handling bits 4-5.
    pub fn subscribe(packet_id: u16, filter: &str, options: u8) -> Vec<u8> {
        let mut body = packet_id.to_be_bytes().to_vec();
        body.extend(properties(&[]));
        body.extend(utf8(filter));
        body.push(options);
        fixed(0x82, &body)
    }

    /// (value, bytes used) of a Variable Byte Integer at the start of `b`.
    pub fn varint_at(b: &[u8]) -> (u32, usize) {
        let mut v = 0u32;
        for (i, byte) in b.iter().enumerate().take(4) {
            v |= u32::from(byte & 0x7f) << (7 * i);
            if byte & 0x80 == 0 {
                return (v, i + 1);
            }
        }
        panic!("bad varint {}", hex(b));
    }

    /// Splits a property block body into (identifier, raw value) in wire order.
    pub fn parse_props(mut b: &[u8]) -> Vec<(u8, Vec<u8>)> {
        let mut out = Vec::new();
        while !b.is_empty() {
            let id = b[0];
            b = &b[1..];
            let n = match id {
                0x01 | 0x17 | 0x19 | 0x24 | 0x25 | 0x28 | 0x29 | 0x2A => 1,
                0x13 | 0x21 | 0x22 | 0x23 => 2,
                0x02 | 0x11 | 0x18 | 0x27 => 4,
                0x0B => varint_at(b).1,
                0x03 | 0x08 | 0x09 | 0x12 | 0x15 | 0x16 | 0x1A | 0x1C | 0x1F => {
                    2 + usize::from(u16::from_be_bytes([b[0], b[1]]))
                }
                0x26 => {
                    let k = 2 + usize::from(u16::from_be_bytes([b[0], b[1]]));
                    k + 2 + usize::from(u16::from_be_bytes([b[k], b[k + 1]]))
                }
                other => panic!("unknown property id {other:#04x} in {}", hex(b)),
            };
            out.push((id, b[..n].to_vec()));
            b = &b[n..];
        }
        out
    }

    /// Reads a property block (length + body) at the start of `b`: (properties, bytes used).
    pub fn props_at(b: &[u8]) -> (Vec<(u8, Vec<u8>)>, usize) {
        let (len, used) = varint_at(b);
        let end = used + len as usize;
        (parse_props(&b[used..end]), end)
    }

    /// A decoded PUBLISH as a subscriber receives it.
    #[derive(Debug)]
    pub struct Pub {
        pub qos: u8,
        pub retain: bool,
        pub dup: bool,
        pub topic: String,
        pub packet_id: u16,
        pub props: Vec<(u8, Vec<u8>)>,
        pub payload: Vec<u8>,
    }

    impl Pub {
        pub fn prop(&self, id: u8) -> Option<&[u8]> {
            self.props
                .iter()
                .find(|(i, _)| *i == id)
                .map(|(_, v)| v.as_slice())
        }
        pub fn expiry(&self) -> Option<u32> {
            self.prop(MESSAGE_EXPIRY)
                .map(|v| u32::from_be_bytes([v[0], v[1], v[2], v[3]]))
        }
        pub fn alias(&self) -> Option<u16> {
            self.prop(TOPIC_ALIAS)
                .map(|v| u16::from_be_bytes([v[0], v[1]]))
        }
        pub fn user_properties(&self) -> Vec<(String, String)> {
            self.props
                .iter()
                .filter(|(i, _)| *i == USER_PROPERTY)
                .map(|(_, v)| {
                    let k = usize::from(u16::from_be_bytes([v[0], v[1]]));
                    let key = String::from_utf8(v[2..2 + k].to_vec()).unwrap();
                    let val = String::from_utf8(v[2 + k + 2..].to_vec()).unwrap();
                    (key, val)
                })
                .collect()
        }
    }

    /// Decodes a whole PUBLISH packet (as returned by `read_packet`).
    pub fn parse_publish(pkt: &[u8], v5: bool) -> Pub {
        assert_eq!(pkt[0] >> 4, 3, "expected PUBLISH, got {}", hex(pkt));
        let flags = pkt[0] & 0x0f;
        let (_, used) = varint_at(&pkt[1..]);
        let body = &pkt[1 + used..];
        let tlen = usize::from(u16::from_be_bytes([body[0], body[1]]));
        let topic = String::from_utf8(body[2..2 + tlen].to_vec()).unwrap();
        let mut i = 2 + tlen;
        let qos = (flags >> 1) & 3;
        let mut packet_id = 0;
        if qos > 0 {
            packet_id = u16::from_be_bytes([body[i], body[i + 1]]);
            i += 2;
        }
        let mut props = Vec::new();
        if v5 {
            let (p, used) = props_at(&body[i..]);
            props = p;
            i += used;
        }
        Pub {
            qos,
            retain: flags & 1 != 0,
            dup: flags & 8 != 0,
            topic,
            packet_id,
            props,
            payload: body[i..].to_vec(),
        }
    }

    /// The next packet if one starts arriving within `wait`; `None` on silence. Panics if the
    /// connection is closed.
    pub fn try_read_packet(s: &TcpStream, wait: Duration) -> Option<Vec<u8>> {
        s.set_read_timeout(Some(wait.max(Duration::from_millis(1))))
            .unwrap();
        let mut first = [0u8; 1];
        let r = (&*s).read(&mut first);
        s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        match r {
            Ok(0) => panic!("connection closed while waiting for a packet"),
            Ok(_) => {}
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                return None
            }
            Err(e) => panic!("read error: {e}"),
        }
        let mut pkt = first.to_vec();
        let mut len = 0usize;
        for i in 0..4 {
            let b = recv_exact(s, 1)[0];
            pkt.push(b);
            len |= usize::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                break;
            }
        }
        pkt.extend(recv_exact(s, len));
        Some(pkt)
    }

    /// Asserts that nothing arrives within `wait`.
    pub fn expect_silence(s: &TcpStream, wait: Duration, what: &str) {
        if let Some(p) = try_read_packet(s, wait) {
            panic!("{what}: expected nothing, received {}", hex(&p));
        }
    }

    /// Reads the next packet and decodes it as a PUBLISH (5.0 unless `v5` is false).
    pub fn next_publish(s: &TcpStream, v5: bool) -> Pub {
        parse_publish(&common::read_packet(s), v5)
    }

    /// Properties as (identifier, raw value) in wire order.
    pub type Props = Vec<(u8, Vec<u8>)>;
    /// (session present, reason code, properties) of a 5.0 CONNACK.
    pub type ConnAck = (bool, u8, Props);

    /// Decodes a 5.0 CONNACK.
    pub fn parse_connack(pkt: &[u8]) -> ConnAck {
        assert_eq!(pkt[0], 0x20, "expected CONNACK, got {}", hex(pkt));
        let (_, used) = varint_at(&pkt[1..]);
        let body = &pkt[1 + used..];
        let (props, _) = props_at(&body[2..]);
        (body[0] & 1 == 1, body[1], props)
    }

    /// Connects a 5.0 client and checks CONNACK Success; returns the socket and the CONNACK.
    pub fn open(
        addr: SocketAddr,
        client_id: &str,
        clean_start: bool,
        props: &[u8],
        will: Option<&Will>,
    ) -> (TcpStream, ConnAck) {
        let s = common::connect_raw(addr);
        send(&s, &connect(client_id, 60, clean_start, props, will));
        let ack = parse_connack(&common::read_packet(&s));
        assert_eq!(ack.1, 0x00, "CONNACK reason for {client_id}");
        (s, ack)
    }

    /// SUBSCRIBE to one filter and check the SUBACK grants the requested QoS.
    pub fn sub(s: &TcpStream, packet_id: u16, filter: &str, options: u8) {
        send(s, &subscribe(packet_id, filter, options));
        let ack = common::read_packet(s);
        let mut want = vec![0x90, 0x04];
        want.extend(packet_id.to_be_bytes());
        want.extend([0x00, options & 3]);
        assert_eq!(ack, want, "SUBACK for {filter}: {}", hex(&ack));
    }
}

/// An independent 5.0 client (rumqttc) that subscribed to `filter` and saw its SUBACK.
#[allow(dead_code)]
mod rq5 {
    use rumqttc::v5::mqttbytes::v5::{Packet, Publish, SubscribeReasonCode};
    use rumqttc::v5::mqttbytes::QoS;
    use rumqttc::v5::{Client, Connection, Event, MqttOptions};
    use std::net::SocketAddr;
    use std::time::{Duration, Instant};

    pub fn options(addr: SocketAddr, id: &str) -> MqttOptions {
        let mut o = MqttOptions::new(id, addr.ip().to_string(), addr.port());
        o.set_keep_alive(Duration::from_secs(30));
        o
    }

    /// Polls until CONNACK Success (≤ 5 s).
    pub fn connect(o: MqttOptions) -> (Client, Connection) {
        let (client, mut conn) = Client::new(o, 64);
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match conn.recv_timeout(left) {
                Ok(Ok(Event::Incoming(Packet::ConnAck(ack)))) => {
                    assert_eq!(
                        ack.code,
                        rumqttc::v5::mqttbytes::v5::ConnectReturnCode::Success
                    );
                    return (client, conn);
                }
                Ok(Ok(_)) => {}
                other => panic!("rumqttc connect failed: {other:?}"),
            }
        }
    }

    /// Connects and subscribes; returns after SUBACK (≤ 5 s).
    pub fn subscriber(addr: SocketAddr, id: &str, filter: &str, qos: QoS) -> (Client, Connection) {
        let (client, mut conn) = connect(options(addr, id));
        client.subscribe(filter, qos).unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match conn.recv_timeout(left) {
                Ok(Ok(Event::Incoming(Packet::SubAck(ack)))) => {
                    assert!(
                        ack.return_codes
                            .iter()
                            .all(|c| matches!(c, SubscribeReasonCode::Success(_))),
                        "{ack:?}"
                    );
                    return (client, conn);
                }
                Ok(Ok(_)) => {}
                other => panic!("rumqttc subscribe failed: {other:?}"),
            }
        }
    }

    /// The next PUBLISH within `wait`, or `None`.
    pub fn next_publish(conn: &mut Connection, wait: Duration) -> Option<Publish> {
        let deadline = Instant::now() + wait;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return None;
            }
            match conn.recv_timeout(left) {
                Ok(Ok(Event::Incoming(Packet::Publish(p)))) => return Some(p),
                Ok(Ok(_)) => {}
                Ok(Err(e)) => panic!("rumqttc connection error: {e:?}"),
                Err(_) => return None,
            }
        }
    }
}

/// `GET /api/status` on the broker's web listener, as JSON.
#[allow(dead_code)]
fn api_status(web: std::net::SocketAddr) -> serde_json::Value {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect_timeout(&web, std::time::Duration::from_secs(5))
        .expect("connect to web listener");
    s.set_read_timeout(Some(std::time::Duration::from_secs(5)))
        .unwrap();
    s.write_all(b"GET /api/status HTTP/1.0\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).expect("read /api/status");
    let body = text.split("\r\n\r\n").nth(1).expect("HTTP body");
    serde_json::from_str(body).unwrap_or_else(|e| panic!("bad JSON {e}: {body}"))
}
