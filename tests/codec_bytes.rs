//! Byte-exact codec tests: every packet type in MQTT 5.0 and 3.1.1 (plus a 3.1 `MQIsdp` CONNECT)
//! decoded, encoded and round-tripped against hand-annotated bytes, and one negative test per
//! decoding rule asserting the exact reason code.
//!
//! Every positive case is decoded with trailing junk (`DE AD BE EF`) appended, proving the decoder
//! stops at the frame boundary, and every strict prefix of it must decode as "need more bytes".

use mqtt5_broker::protocol::{
    decode, encode, encoded_len, Ack, Auth, ConnAck, Connect, DecodeError, Disconnect, Packet,
    Properties, ProtocolVersion, Publish, QoS, ReasonCode, RetainHandling, SubAck, Subscribe,
    SubscriptionOptions, TopicSubscription, UnsubAck, Unsubscribe, Will,
};
use ProtocolVersion::{V31, V311, V5};

const JUNK: [u8; 4] = [0xDE, 0xAD, 0xBE, 0xEF];
const NO_LIMIT: u32 = u32::MAX;

fn s(x: &str) -> String {
    x.to_owned()
}

/// Decodes `bytes` + junk on a connection of `conn` and checks the packet and the bytes consumed.
fn check_decode(bytes: &[u8], conn: Option<ProtocolVersion>, expected: &Packet) {
    let mut input = bytes.to_vec();
    input.extend_from_slice(&JUNK);
    let (packet, consumed) = decode(&input, conn, NO_LIMIT)
        .unwrap_or_else(|e| panic!("decode failed: {e}"))
        .expect("a complete packet");
    assert_eq!(&packet, expected);
    assert_eq!(
        consumed,
        bytes.len(),
        "consumed must stop at the frame boundary"
    );
    for cut in 0..bytes.len() {
        assert_eq!(
            decode(&bytes[..cut], conn, NO_LIMIT),
            Ok(None),
            "prefix of {cut} bytes must need more"
        );
    }
}

/// Encodes `packet` for `version` and compares with `bytes`.
fn check_encode(bytes: &[u8], version: ProtocolVersion, packet: &Packet) {
    let mut out = vec![0x55]; // encode appends
    encode(packet, version, &mut out);
    assert_eq!(&out[1..], bytes, "encoded bytes");
    assert_eq!(encoded_len(packet, version), bytes.len(), "encoded_len");
}

/// Decode, encode and round trip.
fn check(bytes: &[u8], version: ProtocolVersion, expected: &Packet) {
    check_decode(bytes, Some(version), expected);
    check_encode(bytes, version, expected);
}

fn decode_err(bytes: &[u8], conn: Option<ProtocolVersion>) -> DecodeError {
    match decode(bytes, conn, NO_LIMIT) {
        Err(e) => e,
        other => panic!("expected an error, got {other:?}"),
    }
}

fn reason(bytes: &[u8], conn: ProtocolVersion) -> ReasonCode {
    decode_err(bytes, Some(conn)).reason_code()
}

fn ack(packet_id: u16, reason: ReasonCode) -> Ack {
    Ack {
        packet_id,
        reason,
        properties: Properties::default(),
    }
}

// ---------------------------------------------------------------------------------------------
// CONNECT
// ---------------------------------------------------------------------------------------------

#[rustfmt::skip]
const CONNECT_V5_FULL: &[u8] = &[
    0x10, 0x73,                               // CONNECT, remaining length 115
    0x00, 0x04, b'M', b'Q', b'T', b'T',       // protocol name "MQTT"
    0x05,                                     // protocol level 5
    0xEE,                                     // flags: user, password, will retain, will QoS 1, will, clean start
    0x00, 0x3C,                               // keep alive 60
    0x28,                                     // property length 40
    0x11, 0x00, 0x00, 0x00, 0x78,             //   Session Expiry Interval 120
    0x15, 0x00, 0x05, b'P', b'L', b'A', b'I', b'N', // Authentication Method "PLAIN"
    0x16, 0x00, 0x02, 0x01, 0x02,             //   Authentication Data 01 02
    0x17, 0x01,                               //   Request Problem Information 1
    0x19, 0x01,                               //   Request Response Information 1
    0x21, 0x00, 0x14,                         //   Receive Maximum 20
    0x22, 0x00, 0x0A,                         //   Topic Alias Maximum 10
    0x26, 0x00, 0x01, b'k', 0x00, 0x01, b'v', //   User Property k=v
    0x27, 0x00, 0x00, 0x10, 0x00,             //   Maximum Packet Size 4096
    0x00, 0x03, b'c', b'i', b'd',             // client id "cid"
    0x26,                                     // will property length 38
    0x01, 0x01,                               //   Payload Format Indicator 1
    0x02, 0x00, 0x00, 0x00, 0x3C,             //   Message Expiry Interval 60
    0x03, 0x00, 0x04, b't', b'e', b'x', b't', //   Content Type "text"
    0x08, 0x00, 0x04, b'r', b'e', b's', b'p', //   Response Topic "resp"
    0x09, 0x00, 0x02, 0xAB, 0xCD,             //   Correlation Data AB CD
    0x18, 0x00, 0x00, 0x00, 0x05,             //   Will Delay Interval 5
    0x26, 0x00, 0x01, b'a', 0x00, 0x01, b'b', //   User Property a=b
    0x00, 0x03, b'w', b'/', b't',             // will topic "w/t"
    0x00, 0x02, b'h', b'i',                   // will payload "hi"
    0x00, 0x04, b'u', b's', b'e', b'r',       // user name "user"
    0x00, 0x03, b'p', b'w', b'd',             // password "pwd"
];

fn connect_v5_full() -> Packet {
    Packet::Connect(Box::new(Connect {
        protocol: V5,
        bridge: false,
        clean_start: true,
        keep_alive: 60,
        properties: Properties {
            session_expiry_interval: Some(120),
            authentication_method: Some(s("PLAIN")),
            authentication_data: Some(vec![1, 2]),
            request_problem_information: Some(1),
            request_response_information: Some(1),
            receive_maximum: Some(20),
            topic_alias_maximum: Some(10),
            user_properties: vec![(s("k"), s("v"))],
            maximum_packet_size: Some(4096),
            ..Properties::default()
        },
        client_id: s("cid"),
        will: Some(Will {
            topic: s("w/t"),
            payload: b"hi".to_vec(),
            qos: QoS::AtLeastOnce,
            retain: true,
            properties: Properties {
                payload_format_indicator: Some(1),
                message_expiry_interval: Some(60),
                content_type: Some(s("text")),
                response_topic: Some(s("resp")),
                correlation_data: Some(vec![0xAB, 0xCD]),
                will_delay_interval: Some(5),
                user_properties: vec![(s("a"), s("b"))],
                ..Properties::default()
            },
        }),
        username: Some(s("user")),
        password: Some(b"pwd".to_vec()),
    }))
}

#[test]
fn connect_v5_with_every_property_and_will_properties() {
    // A CONNECT carries its own version: decoded before any version is known.
    check_decode(CONNECT_V5_FULL, None, &connect_v5_full());
    check(CONNECT_V5_FULL, V5, &connect_v5_full());
}

#[rustfmt::skip]
const CONNECT_V5_MIN: &[u8] = &[
    0x10, 0x0D,                               // CONNECT, remaining length 13
    0x00, 0x04, b'M', b'Q', b'T', b'T',       // "MQTT"
    0x05,                                     // level 5
    0x02,                                     // flags: clean start
    0x00, 0x00,                               // keep alive 0
    0x00,                                     // property length 0
    0x00, 0x00,                               // empty client id (§3.1.3.1)
];

#[test]
fn connect_v5_minimal() {
    let expected = Packet::Connect(Box::new(Connect {
        protocol: V5,
        bridge: false,
        clean_start: true,
        keep_alive: 0,
        properties: Properties::default(),
        client_id: String::new(),
        will: None,
        username: None,
        password: None,
    }));
    check_decode(CONNECT_V5_MIN, None, &expected);
    check(CONNECT_V5_MIN, V5, &expected);
}

#[test]
fn mqtt_3_1_2_9_v5_password_without_user_name_is_allowed() {
    #[rustfmt::skip]
    let bytes: &[u8] = &[
        0x10, 0x0F,                         // CONNECT, remaining length 15
        0x00, 0x04, b'M', b'Q', b'T', b'T', // "MQTT"
        0x05,                               // level 5
        0x40,                               // flags: password only
        0x00, 0x05,                         // keep alive 5
        0x00,                               // property length 0
        0x00, 0x00,                         // client id ""
        0x00, 0x00,                         // password (empty)
    ];
    let expected = Packet::Connect(Box::new(Connect {
        protocol: V5,
        bridge: false,
        clean_start: false,
        keep_alive: 5,
        properties: Properties::default(),
        client_id: String::new(),
        will: None,
        username: None,
        password: Some(Vec::new()),
    }));
    check_decode(bytes, None, &expected);
    check_encode(bytes, V5, &expected);
}

#[rustfmt::skip]
const CONNECT_V311_FULL: &[u8] = &[
    0x10, 0x23,                               // CONNECT, remaining length 35
    0x00, 0x04, b'M', b'Q', b'T', b'T',       // "MQTT"
    0x04,                                     // level 4 (3.1.1)
    0xEE,                                     // flags: user, password, will retain, will QoS 1, will, clean session
    0x00, 0x0A,                               // keep alive 10
    0x00, 0x03, b'c', b'i', b'd',             // client id "cid"
    0x00, 0x03, b'w', b'/', b't',             // will topic "w/t"
    0x00, 0x02, b'h', b'i',                   // will message "hi"
    0x00, 0x04, b'u', b's', b'e', b'r',       // user name "user"
    0x00, 0x03, b'p', b'w', b'd',             // password "pwd"
];

#[test]
fn connect_v311_with_will_user_and_password() {
    let expected = Packet::Connect(Box::new(Connect {
        protocol: V311,
        bridge: false,
        clean_start: true,
        keep_alive: 10,
        properties: Properties::default(),
        client_id: s("cid"),
        will: Some(Will {
            topic: s("w/t"),
            payload: b"hi".to_vec(),
            qos: QoS::AtLeastOnce,
            retain: true,
            properties: Properties::default(),
        }),
        username: Some(s("user")),
        password: Some(b"pwd".to_vec()),
    }));
    check_decode(CONNECT_V311_FULL, None, &expected);
    check(CONNECT_V311_FULL, V311, &expected);
}

#[rustfmt::skip]
const CONNECT_V31: &[u8] = &[
    0x10, 0x12,                                         // CONNECT, remaining length 18
    0x00, 0x06, b'M', b'Q', b'I', b's', b'd', b'p',     // protocol name "MQIsdp"
    0x03,                                               // level 3 (3.1)
    0x02,                                               // flags: clean session
    0x00, 0x3C,                                         // keep alive 60
    0x00, 0x04, b'c', b'l', b'i', b'1',                 // client id "cli1"
];

#[test]
fn connect_v31_mqisdp() {
    let expected = Packet::Connect(Box::new(Connect {
        protocol: V31,
        bridge: false,
        clean_start: true,
        keep_alive: 60,
        properties: Properties::default(),
        client_id: s("cli1"),
        will: None,
        username: None,
        password: None,
    }));
    check_decode(CONNECT_V31, None, &expected);
    check(CONNECT_V31, V31, &expected);
}

// ---------------------------------------------------------------------------------------------
// CONNACK
// ---------------------------------------------------------------------------------------------

#[rustfmt::skip]
const CONNACK_V5_FULL: &[u8] = &[
    0x20, 0x44,                               // CONNACK, remaining length 68
    0x00,                                     // flags: no session present
    0x00,                                     // reason Success
    0x41,                                     // property length 65
    0x11, 0x00, 0x00, 0x00, 0x1E,             //   Session Expiry Interval 30
    0x12, 0x00, 0x03, b'a', b'b', b'c',       //   Assigned Client Identifier "abc"
    0x13, 0x00, 0x1E,                         //   Server Keep Alive 30
    0x15, 0x00, 0x01, b'M',                   //   Authentication Method "M"
    0x16, 0x00, 0x01, 0x09,                   //   Authentication Data 09
    0x1A, 0x00, 0x02, b'r', b'i',             //   Response Information "ri"
    0x1C, 0x00, 0x02, b's', b'r',             //   Server Reference "sr"
    0x1F, 0x00, 0x02, b'o', b'k',             //   Reason String "ok"
    0x21, 0x00, 0x0A,                         //   Receive Maximum 10
    0x22, 0x00, 0x05,                         //   Topic Alias Maximum 5
    0x24, 0x01,                               //   Maximum QoS 1
    0x25, 0x00,                               //   Retain Available 0
    0x26, 0x00, 0x01, b'x', 0x00, 0x01, b'y', //   User Property x=y
    0x27, 0x00, 0x01, 0x00, 0x00,             //   Maximum Packet Size 65536
    0x28, 0x01,                               //   Wildcard Subscription Available 1
    0x29, 0x00,                               //   Subscription Identifier Available 0
    0x2A, 0x01,                               //   Shared Subscription Available 1
];

#[test]
fn connack_v5_with_every_property() {
    let expected = Packet::ConnAck(ConnAck {
        session_present: false,
        reason: ReasonCode::Success,
        properties: Properties {
            session_expiry_interval: Some(30),
            assigned_client_identifier: Some(s("abc")),
            server_keep_alive: Some(30),
            authentication_method: Some(s("M")),
            authentication_data: Some(vec![9]),
            response_information: Some(s("ri")),
            server_reference: Some(s("sr")),
            reason_string: Some(s("ok")),
            receive_maximum: Some(10),
            topic_alias_maximum: Some(5),
            maximum_qos: Some(1),
            retain_available: Some(0),
            user_properties: vec![(s("x"), s("y"))],
            maximum_packet_size: Some(65536),
            wildcard_subscription_available: Some(1),
            subscription_identifier_available: Some(0),
            shared_subscription_available: Some(1),
            ..Properties::default()
        },
    });
    check(CONNACK_V5_FULL, V5, &expected);
}

#[test]
fn connack_v5_session_present_and_refusal() {
    #[rustfmt::skip]
    let present: &[u8] = &[
        0x20, 0x03, // CONNACK, remaining length 3
        0x01,       // session present
        0x00,       // Success
        0x00,       // property length 0
    ];
    check(
        present,
        V5,
        &Packet::ConnAck(ConnAck {
            session_present: true,
            reason: ReasonCode::Success,
            properties: Properties::default(),
        }),
    );
    #[rustfmt::skip]
    let refused: &[u8] = &[
        0x20, 0x03, // CONNACK, remaining length 3
        0x00,       // no session
        0x84,       // Unsupported Protocol Version
        0x00,       // property length 0
    ];
    check(
        refused,
        V5,
        &Packet::ConnAck(ConnAck {
            session_present: false,
            reason: ReasonCode::UnsupportedProtocolVersion,
            properties: Properties::default(),
        }),
    );
}

#[test]
fn connack_v311_return_codes() {
    #[rustfmt::skip]
    let accepted: &[u8] = &[
        0x20, 0x02, // CONNACK, remaining length 2
        0x01,       // session present
        0x00,       // return code 0 Connection Accepted
    ];
    check(
        accepted,
        V311,
        &Packet::ConnAck(ConnAck {
            session_present: true,
            reason: ReasonCode::Success,
            properties: Properties::default(),
        }),
    );
    #[rustfmt::skip]
    let not_authorized: &[u8] = &[
        0x20, 0x02, // CONNACK, remaining length 2
        0x00,       // no session
        0x05,       // return code 5 Not authorized
    ];
    check(
        not_authorized,
        V311,
        &Packet::ConnAck(ConnAck {
            session_present: false,
            reason: ReasonCode::NotAuthorized,
            properties: Properties::default(),
        }),
    );
    // 5.0 reasons without a 3.1.1 twin are mapped (ConnectReturnCode::from_reason); the
    // properties are dropped.
    let banned = Packet::ConnAck(ConnAck {
        session_present: false,
        reason: ReasonCode::Banned,
        properties: Properties {
            reason_string: Some(s("no")),
            ..Properties::default()
        },
    });
    check_encode(&[0x20, 0x02, 0x00, 0x05], V311, &banned);
    let busy = Packet::ConnAck(ConnAck {
        session_present: false,
        reason: ReasonCode::ServerBusy,
        properties: Properties::default(),
    });
    check_encode(&[0x20, 0x02, 0x00, 0x03], V311, &busy);
    let version = Packet::ConnAck(ConnAck {
        session_present: false,
        reason: ReasonCode::UnsupportedProtocolVersion,
        properties: Properties::default(),
    });
    check_encode(&[0x20, 0x02, 0x00, 0x01], V311, &version);
}

// ---------------------------------------------------------------------------------------------
// PUBLISH
// ---------------------------------------------------------------------------------------------

#[rustfmt::skip]
const PUBLISH_V5_FULL: &[u8] = &[
    0x3B, 0x3F,                               // PUBLISH dup, QoS 1, retain; remaining length 63
    0x00, 0x03, b'a', b'/', b'b',             // topic "a/b"
    0x00, 0x0A,                               // packet id 10
    0x32,                                     // property length 50
    0x01, 0x01,                               //   Payload Format Indicator 1
    0x02, 0x00, 0x00, 0x0E, 0x10,             //   Message Expiry Interval 3600
    0x03, 0x00, 0x04, b'j', b's', b'o', b'n', //   Content Type "json"
    0x08, 0x00, 0x05, b'r', b'e', b'p', b'l', b'y', // Response Topic "reply"
    0x09, 0x00, 0x03, 0x01, 0x02, 0x03,       //   Correlation Data 01 02 03
    0x0B, 0x05,                               //   Subscription Identifier 5
    0x0B, 0x80, 0x01,                         //   Subscription Identifier 128 (two-byte varint)
    0x23, 0x00, 0x07,                         //   Topic Alias 7
    0x26, 0x00, 0x01, b'k', 0x00, 0x01, b'v', //   User Property k=v
    0x26, 0x00, 0x01, b'k', 0x00, 0x01, b'w', //   User Property k=w (repeat, order kept)
    b'h', b'e', b'l', b'l', b'o',             // payload "hello"
];

fn publish_v5_full() -> Packet {
    Packet::Publish(Publish {
        dup: true,
        qos: QoS::AtLeastOnce,
        retain: true,
        topic: s("a/b"),
        packet_id: 10,
        properties: Properties {
            payload_format_indicator: Some(1),
            message_expiry_interval: Some(3600),
            content_type: Some(s("json")),
            response_topic: Some(s("reply")),
            correlation_data: Some(vec![1, 2, 3]),
            subscription_identifiers: vec![5, 128],
            topic_alias: Some(7),
            user_properties: vec![(s("k"), s("v")), (s("k"), s("w"))],
            ..Properties::default()
        },
        payload: b"hello".to_vec(),
    })
}

#[test]
fn publish_v5_with_every_property() {
    check(PUBLISH_V5_FULL, V5, &publish_v5_full());
}

#[test]
fn publish_v5_before_connect_is_decoded_as_v5() {
    check_decode(PUBLISH_V5_FULL, None, &publish_v5_full());
}

#[test]
fn publish_v5_qos0_minimal() {
    #[rustfmt::skip]
    let bytes: &[u8] = &[
        0x30, 0x04,             // PUBLISH QoS 0, remaining length 4
        0x00, 0x01, b't',       // topic "t"
        0x00,                   // property length 0
                                // empty payload
    ];
    let expected = Packet::Publish(Publish {
        dup: false,
        qos: QoS::AtMostOnce,
        retain: false,
        topic: s("t"),
        packet_id: 0,
        properties: Properties::default(),
        payload: Vec::new(),
    });
    check(bytes, V5, &expected);
}

#[test]
fn publish_v5_empty_topic_with_topic_alias() {
    #[rustfmt::skip]
    let bytes: &[u8] = &[
        0x30, 0x07,             // PUBLISH QoS 0, remaining length 7
        0x00, 0x00,             // topic "" (alias stands for it, §3.3.2.3.4)
        0x03,                   // property length 3
        0x23, 0x00, 0x01,       //   Topic Alias 1
        b'x',                   // payload "x"
    ];
    let expected = Packet::Publish(Publish {
        dup: false,
        qos: QoS::AtMostOnce,
        retain: false,
        topic: String::new(),
        packet_id: 0,
        properties: Properties {
            topic_alias: Some(1),
            ..Properties::default()
        },
        payload: b"x".to_vec(),
    });
    check(bytes, V5, &expected);
}

#[test]
fn publish_v5_topic_alias_zero_is_decoded_for_the_broker() {
    // Topic Alias 0 is answered by the broker with 0x94 (§3.3.2.3.4); the codec decodes it.
    #[rustfmt::skip]
    let bytes: &[u8] = &[
        0x30, 0x07,             // PUBLISH QoS 0, remaining length 7
        0x00, 0x01, b't',       // topic "t"
        0x03,                   // property length 3
        0x23, 0x00, 0x00,       //   Topic Alias 0
    ];
    let Packet::Publish(p) = decode(bytes, Some(V5), NO_LIMIT).unwrap().unwrap().0 else {
        panic!("not a PUBLISH");
    };
    assert_eq!(p.properties.topic_alias, Some(0));
}

#[test]
fn publish_v311_qos2_dup_retain() {
    #[rustfmt::skip]
    let bytes: &[u8] = &[
        0x3D, 0x09,                   // PUBLISH dup, QoS 2, retain; remaining length 9
        0x00, 0x03, b'a', b'/', b'b', // topic "a/b"
        0x12, 0x34,                   // packet id 0x1234
        b'p', b'l',                   // payload "pl" (no properties in 3.1.1)
    ];
    let expected = Packet::Publish(Publish {
        dup: true,
        qos: QoS::ExactlyOnce,
        retain: true,
        topic: s("a/b"),
        packet_id: 0x1234,
        properties: Properties::default(),
        payload: b"pl".to_vec(),
    });
    check(bytes, V311, &expected);
}

#[test]
fn publish_v311_qos0_empty_payload() {
    #[rustfmt::skip]
    let bytes: &[u8] = &[
        0x30, 0x03,         // PUBLISH QoS 0, remaining length 3
        0x00, 0x01, b't',   // topic "t"
    ];
    let expected = Packet::Publish(Publish {
        dup: false,
        qos: QoS::AtMostOnce,
        retain: false,
        topic: s("t"),
        packet_id: 0,
        properties: Properties::default(),
        payload: Vec::new(),
    });
    check(bytes, V311, &expected);
}

#[test]
fn publish_v311_encode_omits_properties() {
    let Packet::Publish(mut p) = publish_v5_full() else {
        unreachable!()
    };
    p.payload = b"x".to_vec();
    #[rustfmt::skip]
    let bytes: &[u8] = &[
        0x3B, 0x08,                   // PUBLISH dup, QoS 1, retain; remaining length 8
        0x00, 0x03, b'a', b'/', b'b', // topic "a/b"
        0x00, 0x0A,                   // packet id 10
        b'x',                         // payload
    ];
    check_encode(bytes, V311, &Packet::Publish(p));
}

// ---------------------------------------------------------------------------------------------
// PUBACK, PUBREC, PUBREL, PUBCOMP
// ---------------------------------------------------------------------------------------------

#[test]
fn puback_v5_short_forms_and_full_form() {
    // Remaining length 2: reason Success, no properties (§3.4.2.1).
    check(
        &[0x40, 0x02, 0x00, 0x01],
        V5,
        &Packet::PubAck(ack(1, ReasonCode::Success)),
    );
    // Remaining length 3: reason only (§3.4.2.2.1).
    #[rustfmt::skip]
    let reason_only: &[u8] = &[
        0x40, 0x03, // PUBACK, remaining length 3
        0x00, 0x02, // packet id 2
        0x10,       // No matching subscribers
    ];
    check(
        reason_only,
        V5,
        &Packet::PubAck(ack(2, ReasonCode::NoMatchingSubscribers)),
    );
    #[rustfmt::skip]
    let full: &[u8] = &[
        0x40, 0x12,                               // PUBACK, remaining length 18
        0x00, 0x03,                               // packet id 3
        0x97,                                     // Quota exceeded
        0x0E,                                     // property length 14
        0x1F, 0x00, 0x04, b'f', b'u', b'l', b'l', //   Reason String "full"
        0x26, 0x00, 0x01, b'a', 0x00, 0x01, b'b', //   User Property a=b
    ];
    check(
        full,
        V5,
        &Packet::PubAck(Ack {
            packet_id: 3,
            reason: ReasonCode::QuotaExceeded,
            properties: Properties {
                reason_string: Some(s("full")),
                user_properties: vec![(s("a"), s("b"))],
                ..Properties::default()
            },
        }),
    );
}

#[test]
fn puback_v5_long_form_with_empty_properties_is_accepted() {
    #[rustfmt::skip]
    let bytes: &[u8] = &[
        0x40, 0x04, // PUBACK, remaining length 4
        0x00, 0x01, // packet id 1
        0x00,       // Success
        0x00,       // property length 0
    ];
    check_decode(
        bytes,
        Some(V5),
        &Packet::PubAck(ack(1, ReasonCode::Success)),
    );
}

#[test]
fn pubrec_pubrel_pubcomp_v5() {
    check(
        &[0x50, 0x02, 0x00, 0x04],
        V5,
        &Packet::PubRec(ack(4, ReasonCode::Success)),
    );
    #[rustfmt::skip]
    let pubrec_err: &[u8] = &[
        0x50, 0x03, // PUBREC, remaining length 3
        0x00, 0x04, // packet id 4
        0x80,       // Unspecified error
    ];
    check(
        pubrec_err,
        V5,
        &Packet::PubRec(ack(4, ReasonCode::UnspecifiedError)),
    );
    // PUBREL carries fixed-header flags 0010 (§3.6.1).
    check(
        &[0x62, 0x02, 0x00, 0x05],
        V5,
        &Packet::PubRel(ack(5, ReasonCode::Success)),
    );
    #[rustfmt::skip]
    let pubrel_not_found: &[u8] = &[
        0x62, 0x03, // PUBREL, remaining length 3
        0x00, 0x05, // packet id 5
        0x92,       // Packet Identifier not found
    ];
    check(
        pubrel_not_found,
        V5,
        &Packet::PubRel(ack(5, ReasonCode::PacketIdentifierNotFound)),
    );
    check(
        &[0x70, 0x02, 0x00, 0x06],
        V5,
        &Packet::PubComp(ack(6, ReasonCode::Success)),
    );
    #[rustfmt::skip]
    let pubcomp_props: &[u8] = &[
        0x70, 0x08,             // PUBCOMP, remaining length 8
        0x00, 0x06,             // packet id 6
        0x00,                   // Success (written because properties follow)
        0x04,                   // property length 4
        0x1F, 0x00, 0x01, b'z', //   Reason String "z"
    ];
    check(
        pubcomp_props,
        V5,
        &Packet::PubComp(Ack {
            packet_id: 6,
            reason: ReasonCode::Success,
            properties: Properties {
                reason_string: Some(s("z")),
                ..Properties::default()
            },
        }),
    );
}

#[test]
fn acks_v311() {
    check(
        &[0x40, 0x02, 0x00, 0x01],
        V311,
        &Packet::PubAck(ack(1, ReasonCode::Success)),
    );
    check(
        &[0x50, 0x02, 0x01, 0x00],
        V311,
        &Packet::PubRec(ack(256, ReasonCode::Success)),
    );
    check(
        &[0x62, 0x02, 0xFF, 0xFF],
        V311,
        &Packet::PubRel(ack(65535, ReasonCode::Success)),
    );
    check(
        &[0x70, 0x02, 0x00, 0x07],
        V311,
        &Packet::PubComp(ack(7, ReasonCode::Success)),
    );
    // A 5.0 reason is not written to a 3.1.1 peer.
    check_encode(
        &[0x40, 0x02, 0x00, 0x01],
        V311,
        &Packet::PubAck(ack(1, ReasonCode::NotAuthorized)),
    );
}

// ---------------------------------------------------------------------------------------------
// SUBSCRIBE, SUBACK, UNSUBSCRIBE, UNSUBACK
// ---------------------------------------------------------------------------------------------

#[rustfmt::skip]
const SUBSCRIBE_V5: &[u8] = &[
    0x82, 0x1C,                               // SUBSCRIBE (flags 0010), remaining length 28
    0x00, 0x0B,                               // packet id 11
    0x09,                                     // property length 9
    0x0B, 0x2A,                               //   Subscription Identifier 42
    0x26, 0x00, 0x01, b'u', 0x00, 0x01, b'p', //   User Property u=p
    0x00, 0x03, b'a', b'/', b'#',             // filter "a/#"
    0x2E,                                     //   options: retain handling 2, RAP, no local, QoS 2
    0x00, 0x01, b'+',                         // filter "+"
    0x11,                                     //   options: retain handling 1, QoS 1
    0x00, 0x03, b'x', b'/', b'y',             // filter "x/y"
    0x00,                                     //   options: all zero
];

#[test]
fn subscribe_v5_with_all_option_bits() {
    let expected = Packet::Subscribe(Subscribe {
        packet_id: 11,
        properties: Properties {
            subscription_identifiers: vec![42],
            user_properties: vec![(s("u"), s("p"))],
            ..Properties::default()
        },
        filters: vec![
            TopicSubscription {
                filter: s("a/#"),
                options: SubscriptionOptions {
                    qos: QoS::ExactlyOnce,
                    no_local: true,
                    retain_as_published: true,
                    retain_handling: RetainHandling::DoNotSend,
                },
            },
            TopicSubscription {
                filter: s("+"),
                options: SubscriptionOptions {
                    qos: QoS::AtLeastOnce,
                    no_local: false,
                    retain_as_published: false,
                    retain_handling: RetainHandling::SendAtSubscribeIfNew,
                },
            },
            TopicSubscription {
                filter: s("x/y"),
                options: SubscriptionOptions::default(),
            },
        ],
    });
    check(SUBSCRIBE_V5, V5, &expected);
}

#[test]
fn subscribe_v311() {
    #[rustfmt::skip]
    let bytes: &[u8] = &[
        0x82, 0x10,                   // SUBSCRIBE, remaining length 16
        0x00, 0x01,                   // packet id 1
        0x00, 0x01, b'a', 0x00,       // "a" QoS 0
        0x00, 0x03, b'b', b'/', b'+', 0x01, // "b/+" QoS 1
        0x00, 0x01, b'#', 0x02,       // "#" QoS 2
    ];
    let sub = |filter: &str, qos| TopicSubscription {
        filter: s(filter),
        options: SubscriptionOptions {
            qos,
            ..SubscriptionOptions::default()
        },
    };
    let expected = Packet::Subscribe(Subscribe {
        packet_id: 1,
        properties: Properties::default(),
        filters: vec![
            sub("a", QoS::AtMostOnce),
            sub("b/+", QoS::AtLeastOnce),
            sub("#", QoS::ExactlyOnce),
        ],
    });
    check(bytes, V311, &expected);
}

#[test]
fn subscribe_filter_syntax_is_left_to_the_broker() {
    // "a/#/b" is an invalid filter, answered with 0x8F per filter by the broker, not the codec.
    #[rustfmt::skip]
    let bytes: &[u8] = &[
        0x82, 0x0B,                                // SUBSCRIBE, remaining length 11
        0x00, 0x01,                                // packet id 1
        0x00,                                      // property length 0
        0x00, 0x05, b'a', b'/', b'#', b'/', b'b',  // filter "a/#/b"
        0x00,                                      // options
    ];
    assert!(matches!(
        decode(bytes, Some(V5), NO_LIMIT),
        Ok(Some((Packet::Subscribe(_), 13)))
    ));
}

#[test]
fn suback_v5_every_reason_code() {
    #[rustfmt::skip]
    let bytes: &[u8] = &[
        0x90, 0x14,                          // SUBACK, remaining length 20
        0x00, 0x0B,                          // packet id 11
        0x05,                                // property length 5
        0x1F, 0x00, 0x02, b'n', b'o',        //   Reason String "no"
        0x00, 0x01, 0x02, 0x80, 0x83, 0x87,  // granted 0/1/2, unspecified, impl. specific, not authorized
        0x8F, 0x91, 0x97, 0x9E, 0xA1, 0xA2,  // filter invalid, id in use, quota, shared/sub-id/wildcard unsupported
    ];
    use ReasonCode as R;
    let expected = Packet::SubAck(SubAck {
        packet_id: 11,
        properties: Properties {
            reason_string: Some(s("no")),
            ..Properties::default()
        },
        reasons: vec![
            R::Success,
            R::GrantedQos1,
            R::GrantedQos2,
            R::UnspecifiedError,
            R::ImplementationSpecificError,
            R::NotAuthorized,
            R::TopicFilterInvalid,
            R::PacketIdentifierInUse,
            R::QuotaExceeded,
            R::SharedSubscriptionsNotSupported,
            R::SubscriptionIdentifiersNotSupported,
            R::WildcardSubscriptionsNotSupported,
        ],
    });
    check(bytes, V5, &expected);
}

#[test]
fn suback_v311_return_codes() {
    #[rustfmt::skip]
    let bytes: &[u8] = &[
        0x90, 0x06,             // SUBACK, remaining length 6
        0x00, 0x01,             // packet id 1
        0x00, 0x01, 0x02, 0x80, // granted QoS 0, 1, 2, failure
    ];
    use ReasonCode as R;
    let expected = Packet::SubAck(SubAck {
        packet_id: 1,
        properties: Properties::default(),
        reasons: vec![
            R::Success,
            R::GrantedQos1,
            R::GrantedQos2,
            R::UnspecifiedError,
        ],
    });
    check(bytes, V311, &expected);
    // Every 5.0 failure is written as 0x80 for 3.1.1.
    let mapped = Packet::SubAck(SubAck {
        packet_id: 1,
        properties: Properties::default(),
        reasons: vec![R::GrantedQos1, R::NotAuthorized, R::TopicFilterInvalid],
    });
    check_encode(&[0x90, 0x05, 0x00, 0x01, 0x01, 0x80, 0x80], V311, &mapped);
}

#[test]
fn unsubscribe_v5_and_v311() {
    #[rustfmt::skip]
    let v5: &[u8] = &[
        0xA2, 0x12,                               // UNSUBSCRIBE (flags 0010), remaining length 18
        0x00, 0x0C,                               // packet id 12
        0x07,                                     // property length 7
        0x26, 0x00, 0x01, b'k', 0x00, 0x01, b'v', //   User Property k=v
        0x00, 0x03, b'a', b'/', b'b',             // filter "a/b"
        0x00, 0x01, b'#',                         // filter "#"
    ];
    check(
        v5,
        V5,
        &Packet::Unsubscribe(Unsubscribe {
            packet_id: 12,
            properties: Properties {
                user_properties: vec![(s("k"), s("v"))],
                ..Properties::default()
            },
            filters: vec![s("a/b"), s("#")],
        }),
    );
    #[rustfmt::skip]
    let v311: &[u8] = &[
        0xA2, 0x07,                   // UNSUBSCRIBE, remaining length 7
        0x00, 0x02,                   // packet id 2
        0x00, 0x03, b'a', b'/', b'b', // filter "a/b"
    ];
    check(
        v311,
        V311,
        &Packet::Unsubscribe(Unsubscribe {
            packet_id: 2,
            properties: Properties::default(),
            filters: vec![s("a/b")],
        }),
    );
}

#[test]
fn unsuback_v5_every_reason_code_and_v311() {
    #[rustfmt::skip]
    let v5: &[u8] = &[
        0xB0, 0x0E,                               // UNSUBACK, remaining length 14
        0x00, 0x0C,                               // packet id 12
        0x04,                                     // property length 4
        0x1F, 0x00, 0x01, b'r',                   //   Reason String "r"
        0x00, 0x11, 0x80, 0x83, 0x87, 0x8F, 0x91, // success, no subscription existed, errors
    ];
    use ReasonCode as R;
    check(
        v5,
        V5,
        &Packet::UnsubAck(UnsubAck {
            packet_id: 12,
            properties: Properties {
                reason_string: Some(s("r")),
                ..Properties::default()
            },
            reasons: vec![
                R::Success,
                R::NoSubscriptionExisted,
                R::UnspecifiedError,
                R::ImplementationSpecificError,
                R::NotAuthorized,
                R::TopicFilterInvalid,
                R::PacketIdentifierInUse,
            ],
        }),
    );
    // 3.1.1: no payload (the reasons are not written).
    let v311_packet = UnsubAck {
        packet_id: 2,
        properties: Properties::default(),
        reasons: Vec::new(),
    };
    check(
        &[0xB0, 0x02, 0x00, 0x02],
        V311,
        &Packet::UnsubAck(v311_packet),
    );
    let with_reasons = Packet::UnsubAck(UnsubAck {
        packet_id: 2,
        properties: Properties::default(),
        reasons: vec![R::Success],
    });
    check_encode(&[0xB0, 0x02, 0x00, 0x02], V311, &with_reasons);
}

// ---------------------------------------------------------------------------------------------
// PINGREQ, PINGRESP, DISCONNECT, AUTH
// ---------------------------------------------------------------------------------------------

#[test]
fn pingreq_pingresp_both_versions() {
    for v in [V5, V311] {
        check(&[0xC0, 0x00], v, &Packet::PingReq);
        check(&[0xD0, 0x00], v, &Packet::PingResp);
    }
}

#[test]
fn disconnect_v5_forms() {
    let normal = Packet::Disconnect(Disconnect {
        reason: ReasonCode::Success,
        properties: Properties::default(),
    });
    check(&[0xE0, 0x00], V5, &normal);
    let with_will = Packet::Disconnect(Disconnect {
        reason: ReasonCode::DisconnectWithWillMessage,
        properties: Properties::default(),
    });
    // §3.14.2.2.1: the Property Length may be omitted (Remaining Length 1); decoded either way.
    check_decode(&[0xE0, 0x01, 0x04], Some(V5), &with_will);
    // Written with the Property Length (Remaining Length 2), which paho-mqtt before 2.2 and
    // other readers that expect it after the reason also read.
    #[rustfmt::skip]
    check(&[
        0xE0, 0x02, // DISCONNECT, remaining length 2
        0x04,       // Disconnect with Will Message
        0x00,       // property length 0 (§3.14.2.2.1)
    ], V5, &with_will);
    #[rustfmt::skip]
    let full: &[u8] = &[
        0xE0, 0x1A,                               // DISCONNECT, remaining length 26
        0x8E,                                     // Session taken over
        0x18,                                     // property length 24
        0x11, 0x00, 0x00, 0x00, 0x00,             //   Session Expiry Interval 0
        0x1C, 0x00, 0x03, b's', b'r', b'v',       //   Server Reference "srv"
        0x1F, 0x00, 0x03, b'b', b'y', b'e',       //   Reason String "bye"
        0x26, 0x00, 0x01, b'k', 0x00, 0x01, b'v', //   User Property k=v
    ];
    check(
        full,
        V5,
        &Packet::Disconnect(Disconnect {
            reason: ReasonCode::SessionTakenOver,
            properties: Properties {
                session_expiry_interval: Some(0),
                server_reference: Some(s("srv")),
                reason_string: Some(s("bye")),
                user_properties: vec![(s("k"), s("v"))],
                ..Properties::default()
            },
        }),
    );
}

#[test]
fn disconnect_v311() {
    let normal = Packet::Disconnect(Disconnect {
        reason: ReasonCode::Success,
        properties: Properties::default(),
    });
    check(&[0xE0, 0x00], V311, &normal);
    // Reason and properties are not written to a 3.1.1 peer.
    check_encode(
        &[0xE0, 0x00],
        V311,
        &Packet::Disconnect(Disconnect {
            reason: ReasonCode::ServerShuttingDown,
            properties: Properties::default(),
        }),
    );
}

#[test]
fn auth_v5_forms() {
    check(
        &[0xF0, 0x00],
        V5,
        &Packet::Auth(Auth {
            reason: ReasonCode::Success,
            properties: Properties::default(),
        }),
    );
    #[rustfmt::skip]
    let full: &[u8] = &[
        0xF0, 0x1E,                                     // AUTH, remaining length 30
        0x18,                                           // Continue authentication
        0x1C,                                           // property length 28
        0x15, 0x00, 0x05, b'S', b'C', b'R', b'A', b'M', //   Authentication Method "SCRAM"
        0x16, 0x00, 0x03, 0x01, 0x02, 0x03,             //   Authentication Data 01 02 03
        0x1F, 0x00, 0x04, b'm', b'o', b'r', b'e',       //   Reason String "more"
        0x26, 0x00, 0x01, b'k', 0x00, 0x01, b'v',       //   User Property k=v
    ];
    check(
        full,
        V5,
        &Packet::Auth(Auth {
            reason: ReasonCode::ContinueAuthentication,
            properties: Properties {
                authentication_method: Some(s("SCRAM")),
                authentication_data: Some(vec![1, 2, 3]),
                reason_string: Some(s("more")),
                user_properties: vec![(s("k"), s("v"))],
                ..Properties::default()
            },
        }),
    );
    // A lone reason byte is accepted on decode.
    check_decode(
        &[0xF0, 0x01, 0x19],
        Some(V5),
        &Packet::Auth(Auth {
            reason: ReasonCode::ReAuthenticate,
            properties: Properties::default(),
        }),
    );
}

#[test]
fn auth_is_not_written_to_v311() {
    let auth = Packet::Auth(Auth {
        reason: ReasonCode::ContinueAuthentication,
        properties: Properties::default(),
    });
    check_encode(&[], V311, &auth);
}

// ---------------------------------------------------------------------------------------------
// Negative tests: fixed header (§2.1)
// ---------------------------------------------------------------------------------------------

#[test]
fn mqtt_2_1_2_reserved_packet_type_0_is_malformed() {
    // Rejected from the first byte alone.
    assert_eq!(
        decode_err(&[0x00], Some(V5)),
        DecodeError::InvalidPacketType(0)
    );
    assert_eq!(reason(&[0x00, 0x00], V5), ReasonCode::MalformedPacket);
    assert_eq!(reason(&[0x00, 0x00], V311), ReasonCode::MalformedPacket);
}

#[test]
fn auth_packet_type_on_v311_is_malformed() {
    assert_eq!(reason(&[0xF0, 0x00], V311), ReasonCode::MalformedPacket);
    assert_eq!(reason(&[0xF0, 0x00], V31), ReasonCode::MalformedPacket);
}

#[test]
fn mqtt_1_5_5_remaining_length_over_four_bytes_is_malformed_immediately() {
    // Four continuation bytes: the error is known before a fifth byte arrives.
    let e = decode_err(&[0x30, 0xFF, 0xFF, 0xFF, 0xFF], Some(V5));
    assert!(matches!(e, DecodeError::MalformedVarint { .. }), "{e:?}");
    assert_eq!(e.reason_code(), ReasonCode::MalformedPacket);
    assert_eq!(
        reason(&[0x30, 0x80, 0x80, 0x80, 0x80, 0x01], V5),
        ReasonCode::MalformedPacket
    );
}

#[test]
fn mqtt_1_5_5_1_non_minimal_remaining_length_is_malformed() {
    // 0x80 0x00 encodes 0 in two bytes.
    assert_eq!(reason(&[0xC0, 0x80, 0x00], V5), ReasonCode::MalformedPacket);
    assert_eq!(
        reason(&[0x30, 0x85, 0x80, 0x00], V311),
        ReasonCode::MalformedPacket
    );
}

#[test]
fn mqtt_3_1_2_24_packet_too_large_is_rejected_from_the_header_alone() {
    // Remaining length 200 claimed, only the fixed header present, limit 100.
    let e = decode(&[0x30, 0xC8, 0x01], Some(V5), 100).unwrap_err();
    assert_eq!(
        e,
        DecodeError::PacketTooLarge {
            size: 203,
            max: 100
        }
    );
    assert_eq!(e.reason_code(), ReasonCode::PacketTooLarge);
    // Exactly at the limit is fine (and needs more bytes here).
    assert_eq!(decode(&[0x30, 0x62], Some(V5), 100), Ok(None));
    assert!(decode(&[0x30, 0x63], Some(V5), 100).is_err());
    // The maximum remaining length with a small limit.
    let e = decode(&[0x30, 0xFF, 0xFF, 0xFF, 0x7F], Some(V5), 1024).unwrap_err();
    assert_eq!(e.reason_code(), ReasonCode::PacketTooLarge);
}

#[test]
fn mqtt_2_1_3_1_wrong_fixed_header_flags_are_malformed() {
    let cases: &[&[u8]] = &[
        &[0x11, 0x00],             // CONNECT with flags 0001
        &[0x21, 0x00],             // CONNACK
        &[0x41, 0x02, 0x00, 0x01], // PUBACK
        &[0x52, 0x02, 0x00, 0x01], // PUBREC with 0010
        &[0x60, 0x02, 0x00, 0x01], // PUBREL without 0010
        &[0x63, 0x02, 0x00, 0x01], // PUBREL 0011
        &[0x72, 0x02, 0x00, 0x01], // PUBCOMP
        &[0x80, 0x00],             // SUBSCRIBE without 0010
        &[0x83, 0x00],             // SUBSCRIBE 0011
        &[0x92, 0x00],             // SUBACK
        &[0xA0, 0x00],             // UNSUBSCRIBE without 0010
        &[0xB8, 0x00],             // UNSUBACK
        &[0xC1, 0x00],             // PINGREQ
        &[0xD4, 0x00],             // PINGRESP
        &[0xE2, 0x00],             // DISCONNECT
        &[0xF1, 0x00],             // AUTH
    ];
    for bytes in cases {
        let e = decode_err(bytes, Some(V5));
        assert!(
            matches!(e, DecodeError::InvalidFlags { .. }),
            "{bytes:02X?}: {e:?}"
        );
        assert_eq!(e.reason_code(), ReasonCode::MalformedPacket);
        // Known from the first byte.
        assert!(decode(&bytes[..1], Some(V5), NO_LIMIT).is_err());
    }
}

#[test]
fn mqtt_3_3_1_4_publish_qos3_is_malformed() {
    assert_eq!(
        reason(&[0x36, 0x03, 0x00, 0x01, b't'], V5),
        ReasonCode::MalformedPacket
    );
    assert_eq!(reason(&[0x36], V311), ReasonCode::MalformedPacket);
}

#[test]
fn mqtt_3_3_1_2_publish_qos0_with_dup_is_malformed() {
    assert_eq!(
        reason(&[0x38, 0x04, 0x00, 0x01, b't', 0x00], V5),
        ReasonCode::MalformedPacket
    );
}

// ---------------------------------------------------------------------------------------------
// Negative tests: data representations (§1.5)
// ---------------------------------------------------------------------------------------------

/// A 5.0 QoS 0 PUBLISH whose topic is the given bytes.
fn publish_with_topic(topic: &[u8]) -> Vec<u8> {
    let mut v = vec![0x30, u8::try_from(topic.len() + 3).unwrap(), 0x00];
    v.push(u8::try_from(topic.len()).unwrap());
    v.extend_from_slice(topic);
    v.push(0x00); // property length
    v
}

#[test]
fn mqtt_1_5_4_1_ill_formed_utf8_is_malformed() {
    for topic in [
        &[0xFF][..],               // never valid
        &[0xC0, 0x80],             // overlong U+0000
        &[0xED, 0xA0, 0x80],       // surrogate U+D800
        &[0xED, 0xBF, 0xBF],       // surrogate U+DFFF
        &[0xE2, 0x82],             // truncated sequence
        &[0xF4, 0x90, 0x80, 0x80], // above U+10FFFF
    ] {
        let e = decode_err(&publish_with_topic(topic), Some(V5));
        assert!(
            matches!(e, DecodeError::InvalidUtf8 { .. }),
            "{topic:02X?}: {e:?}"
        );
        assert_eq!(e.reason_code(), ReasonCode::MalformedPacket);
    }
}

#[test]
fn mqtt_1_5_4_2_null_character_is_malformed() {
    assert_eq!(
        reason(&publish_with_topic(b"a\0b"), V5),
        ReasonCode::MalformedPacket
    );
    // Also inside a property string (User Property in a PUBACK).
    #[rustfmt::skip]
    let bytes: &[u8] = &[
        0x40, 0x0B, 0x00, 0x01, 0x00, 0x07,
        0x26, 0x00, 0x01, 0x00, 0x00, 0x01, b'v', // User Property name "\0"
    ];
    assert_eq!(reason(bytes, V5), ReasonCode::MalformedPacket);
}

#[test]
fn mqtt_1_5_4_3_bom_is_kept_not_stripped() {
    let topic = "\u{FEFF}t".as_bytes();
    let (packet, _) = decode(&publish_with_topic(topic), Some(V5), NO_LIMIT)
        .unwrap()
        .unwrap();
    let Packet::Publish(p) = packet else { panic!() };
    assert_eq!(p.topic, "\u{FEFF}t");
}

#[test]
fn string_length_past_end_of_packet_is_malformed() {
    // Topic length 9 but only 1 byte follows within the remaining length.
    let e = decode_err(&[0x30, 0x03, 0x00, 0x09, b't'], Some(V5));
    assert!(matches!(e, DecodeError::Truncated { .. }), "{e:?}");
    assert_eq!(e.reason_code(), ReasonCode::MalformedPacket);
}

// ---------------------------------------------------------------------------------------------
// Negative tests: properties (§2.2.2)
// ---------------------------------------------------------------------------------------------

/// A 5.0 PUBACK (id 1, reason 0x10) with the given property bytes.
fn puback_with_props(props: &[u8]) -> Vec<u8> {
    let mut v = vec![
        0x40,
        u8::try_from(props.len() + 4).unwrap(),
        0x00,
        0x01,
        0x10,
    ];
    v.push(u8::try_from(props.len()).unwrap());
    v.extend_from_slice(props);
    v
}

/// A 5.0 CONNECT (no will, empty client id) with the given property bytes.
fn connect_with_props(props: &[u8]) -> Vec<u8> {
    let mut v = vec![0x10, u8::try_from(props.len() + 13).unwrap()];
    v.extend_from_slice(&[0x00, 0x04, b'M', b'Q', b'T', b'T', 0x05, 0x02, 0x00, 0x00]);
    v.push(u8::try_from(props.len()).unwrap());
    v.extend_from_slice(props);
    v.extend_from_slice(&[0x00, 0x00]);
    v
}

/// A 5.0 QoS 0 PUBLISH to "t" with the given property bytes.
fn publish_with_props(props: &[u8]) -> Vec<u8> {
    let mut v = vec![
        0x30,
        u8::try_from(props.len() + 4).unwrap(),
        0x00,
        0x01,
        b't',
    ];
    v.push(u8::try_from(props.len()).unwrap());
    v.extend_from_slice(props);
    v
}

#[test]
fn mqtt_2_2_2_2_property_not_valid_for_packet_type_is_malformed() {
    let cases: Vec<Vec<u8>> = vec![
        connect_with_props(&[0x23, 0x00, 0x01]), // Topic Alias in CONNECT
        connect_with_props(&[0x18, 0x00, 0x00, 0x00, 0x01]), // Will Delay in CONNECT properties
        connect_with_props(&[0x24, 0x01]),       // Maximum QoS in CONNECT
        publish_with_props(&[0x1F, 0x00, 0x01, b'x']), // Reason String in PUBLISH
        publish_with_props(&[0x11, 0x00, 0x00, 0x00, 0x01]), // Session Expiry in PUBLISH
        puback_with_props(&[0x0B, 0x01]),        // Subscription Identifier in PUBACK
        puback_with_props(&[0x15, 0x00, 0x01, b'm']), // Authentication Method in PUBACK
    ];
    for bytes in cases {
        let e = decode_err(&bytes, Some(V5));
        assert!(
            matches!(e.cause(), DecodeError::InvalidProperty { .. }),
            "{bytes:02X?}: {e:?}"
        );
        assert_eq!(e.reason_code(), ReasonCode::MalformedPacket);
    }
}

#[test]
fn mqtt_2_2_2_2_unknown_property_is_malformed_not_skipped() {
    for id in [0x00u8, 0x04, 0x7F] {
        let e = decode_err(&puback_with_props(&[id, 0x00]), Some(V5));
        assert!(matches!(e, DecodeError::UnknownProperty { .. }), "{e:?}");
        assert_eq!(e.reason_code(), ReasonCode::MalformedPacket);
    }
    // A multi-byte identifier is read as a varint and is unknown too.
    let e = decode_err(&puback_with_props(&[0x80, 0x01, 0x00]), Some(V5));
    assert_eq!(e, DecodeError::UnknownProperty { id: 128 });
}

#[test]
fn duplicate_property_is_a_protocol_error() {
    let cases: Vec<Vec<u8>> = vec![
        // Session Expiry Interval twice in CONNECT (§3.1.2.11.2)
        connect_with_props(&[0x11, 0, 0, 0, 1, 0x11, 0, 0, 0, 2]),
        // Reason String twice in PUBACK (§3.4.2.2.2)
        puback_with_props(&[0x1F, 0, 1, b'a', 0x1F, 0, 1, b'b']),
        // Topic Alias twice in PUBLISH (§3.3.2.3.4)
        publish_with_props(&[0x23, 0, 1, 0x23, 0, 1]),
    ];
    for bytes in cases {
        let e = decode_err(&bytes, Some(V5));
        assert!(
            matches!(e.cause(), DecodeError::DuplicateProperty { .. }),
            "{bytes:02X?}: {e:?}"
        );
        assert_eq!(e.reason_code(), ReasonCode::ProtocolError);
    }
}

#[test]
fn mqtt_3_8_2_1_2_subscription_identifier_twice_in_subscribe_is_a_protocol_error() {
    #[rustfmt::skip]
    let bytes: &[u8] = &[
        0x82, 0x0A, 0x00, 0x01,
        0x04, 0x0B, 0x01, 0x0B, 0x02, // two Subscription Identifiers
        0x00, 0x01, b'a', 0x00,
    ];
    assert_eq!(reason(bytes, V5), ReasonCode::ProtocolError);
}

#[test]
fn user_property_may_repeat_everywhere() {
    let up = [0x26, 0, 1, b'a', 0, 1, b'b'];
    let twice: Vec<u8> = up.iter().chain(up.iter()).copied().collect();
    assert!(decode(&puback_with_props(&twice), Some(V5), NO_LIMIT).is_ok());
    assert!(decode(&connect_with_props(&twice), Some(V5), NO_LIMIT).is_ok());
}

#[test]
fn property_values_outside_their_range_are_protocol_errors() {
    let cases: Vec<Vec<u8>> = vec![
        publish_with_props(&[0x01, 0x02]), // Payload Format Indicator 2
        connect_with_props(&[0x17, 0x02]), // Request Problem Information 2
        connect_with_props(&[0x19, 0x02]), // Request Response Information 2
        connect_with_props(&[0x21, 0x00, 0x00]), // Receive Maximum 0 (§3.1.2.11.3)
        connect_with_props(&[0x27, 0x00, 0x00, 0x00, 0x00]), // Maximum Packet Size 0 (§3.1.2.11.4)
        publish_with_props(&[0x0B, 0x00]), // Subscription Identifier 0 (§3.3.2.3.8)
    ];
    for bytes in cases {
        let e = decode_err(&bytes, Some(V5));
        assert!(
            matches!(e.cause(), DecodeError::InvalidPropertyValue { .. }),
            "{bytes:02X?}: {e:?}"
        );
        assert_eq!(e.reason_code(), ReasonCode::ProtocolError);
    }
    // CONNACK booleans: Maximum QoS, Retain / Wildcard / Subscription Identifier / Shared
    // Subscription Available must be 0 or 1 (§3.2.2.3).
    for id in [0x24u8, 0x25, 0x28, 0x29, 0x2A] {
        let bytes = [0x20, 0x05, 0x00, 0x00, 0x02, id, 0x02];
        assert_eq!(reason(&bytes, V5), ReasonCode::ProtocolError, "{id:#04x}");
    }
}

#[test]
fn property_length_must_match_the_properties() {
    // Property length 5 runs past the end of the packet.
    assert_eq!(
        reason(&[0x40, 0x05, 0x00, 0x01, 0x10, 0x05, 0x1F], V5),
        ReasonCode::MalformedPacket
    );
    // Property length 2 cuts a Reason String in half.
    assert_eq!(
        reason(
            &[0x40, 0x08, 0x00, 0x01, 0x10, 0x02, 0x1F, 0x00, 0x01, b'x'],
            V5
        ),
        ReasonCode::MalformedPacket
    );
    // Property length shorter than a fixed-size value.
    assert_eq!(
        reason(&publish_with_props(&[0x02, 0x00, 0x00]), V5),
        ReasonCode::MalformedPacket
    );
    // Non-minimal property length varint.
    assert_eq!(
        reason(&[0x40, 0x05, 0x00, 0x01, 0x10, 0x80, 0x00], V5),
        ReasonCode::MalformedPacket
    );
}

#[test]
fn authentication_data_without_method_is_a_protocol_error() {
    let e = decode_err(&connect_with_props(&[0x16, 0x00, 0x01, 0x01]), None);
    assert_eq!(e.cause(), &DecodeError::AuthDataWithoutMethod);
    assert_eq!(e.reason_code(), ReasonCode::ProtocolError);
}

// ---------------------------------------------------------------------------------------------
// Negative tests: CONNECT (§3.1)
// ---------------------------------------------------------------------------------------------

/// A CONNECT with the given protocol name, level, flags and payload bytes (no properties for
/// levels other than 5).
fn connect_raw(name: &[u8], level: u8, flags: u8, payload: &[u8]) -> Vec<u8> {
    let mut body = vec![0x00, u8::try_from(name.len()).unwrap()];
    body.extend_from_slice(name);
    body.extend_from_slice(&[level, flags, 0x00, 0x3C]);
    if level == 5 {
        body.push(0x00);
    }
    body.extend_from_slice(payload);
    let mut v = vec![0x10, u8::try_from(body.len()).unwrap()];
    v.extend(body);
    v
}

const CID: &[u8] = &[0x00, 0x01, b'c'];

#[test]
fn mqtt_3_1_2_1_invalid_protocol_name_gets_no_connack() {
    let e = decode_err(&connect_raw(b"MQTX", 4, 0x02, CID), None);
    assert_eq!(e, DecodeError::InvalidProtocolName(s("MQTX")));
    assert_eq!(e.connect_version(), None);
    let e = decode_err(&connect_raw(b"mqtt", 5, 0x02, CID), None);
    assert!(matches!(e, DecodeError::InvalidProtocolName(_)));
}

#[test]
fn mqtt_3_1_2_2_unsupported_protocol_level_is_answered_in_3_1_1_form() {
    // Whatever the level, the refusal is the 3.1.1 CONNACK a client of any level can read.
    for level in [6u8, 0x7F, 0x86] {
        let e = decode_err(&connect_raw(b"MQTT", level, 0x02, CID), None);
        assert_eq!(e, DecodeError::UnsupportedProtocolVersion(level));
        assert_eq!(e.reason_code(), ReasonCode::UnsupportedProtocolVersion);
        assert_eq!(e.connect_version(), Some(V311));
    }
    let e = decode_err(&connect_raw(b"MQTT", 2, 0x02, CID), None);
    assert_eq!(e, DecodeError::UnsupportedProtocolVersion(2));
    assert_eq!(e.connect_version(), Some(V311));
    // Name and level that do not belong together.
    let e = decode_err(&connect_raw(b"MQTT", 3, 0x02, CID), None);
    assert_eq!(e, DecodeError::UnsupportedProtocolVersion(3));
    let e = decode_err(&connect_raw(b"MQIsdp", 4, 0x02, CID), None);
    assert_eq!(e, DecodeError::UnsupportedProtocolVersion(4));
}

#[test]
fn mqtt_3_1_2_3_connect_reserved_flag_is_malformed() {
    for level in [5u8, 4, 3] {
        let name: &[u8] = if level == 3 { b"MQIsdp" } else { b"MQTT" };
        let e = decode_err(&connect_raw(name, level, 0x03, CID), None);
        assert!(
            matches!(e.cause(), DecodeError::ReservedBitSet { .. }),
            "{e:?}"
        );
        assert_eq!(e.reason_code(), ReasonCode::MalformedPacket);
        // The version is known, so the broker can answer in the right format.
        assert_eq!(e.connect_version().map(|v| v.level()), Some(level));
    }
}

#[test]
fn mqtt_3_1_2_11_will_qos_without_will_flag_is_malformed() {
    for flags in [0x0A, 0x12] {
        // Will QoS 1 / 2 with Will Flag 0.
        let e = decode_err(&connect_raw(b"MQTT", 5, flags, CID), None);
        assert_eq!(e.cause(), &DecodeError::InvalidWillFlags);
        assert_eq!(e.reason_code(), ReasonCode::MalformedPacket);
    }
}

#[test]
fn mqtt_3_1_2_13_will_retain_without_will_flag_is_malformed() {
    let e = decode_err(&connect_raw(b"MQTT", 4, 0x22, CID), None);
    assert_eq!(e.cause(), &DecodeError::InvalidWillFlags);
    assert_eq!(e.reason_code(), ReasonCode::MalformedPacket);
}

#[test]
fn mqtt_3_1_2_12_will_qos_3_is_malformed() {
    let will: &[u8] = &[0x00, 0x01, b'c', 0x00, 0x00, 0x01, b't', 0x00, 0x00];
    let e = decode_err(&connect_raw(b"MQTT", 5, 0x1E, will), None);
    assert!(matches!(e.cause(), DecodeError::InvalidQos { .. }), "{e:?}");
    assert_eq!(e.reason_code(), ReasonCode::MalformedPacket);
}

#[test]
fn mqtt_3_1_2_22_v311_password_without_user_name_is_malformed() {
    let payload: &[u8] = &[0x00, 0x01, b'c', 0x00, 0x01, b'p'];
    let e = decode_err(&connect_raw(b"MQTT", 4, 0x42, payload), None);
    assert_eq!(e.cause(), &DecodeError::PasswordWithoutUsername);
    assert_eq!(e.reason_code(), ReasonCode::MalformedPacket);
    assert_eq!(e.connect_version(), Some(V311));
}

#[test]
fn user_name_and_password_presence_must_match_the_flags() {
    // User Name Flag set, but the payload ends after the client id.
    let e = decode_err(&connect_raw(b"MQTT", 5, 0x82, CID), None);
    assert!(matches!(e.cause(), DecodeError::Truncated { .. }), "{e:?}");
    assert_eq!(e.reason_code(), ReasonCode::MalformedPacket);
    // A user name present without its flag: trailing bytes.
    let payload: &[u8] = &[0x00, 0x01, b'c', 0x00, 0x01, b'u'];
    let e = decode_err(&connect_raw(b"MQTT", 4, 0x02, payload), None);
    assert!(
        matches!(e.cause(), DecodeError::LengthMismatch { .. }),
        "{e:?}"
    );
    assert_eq!(e.reason_code(), ReasonCode::MalformedPacket);
}

#[test]
fn will_topic_with_wildcard_is_topic_name_invalid() {
    let will: &[u8] = &[0x00, 0x01, b'c', 0x00, 0x01, b'#', 0x00, 0x00];
    let e = decode_err(&connect_raw(b"MQTT", 4, 0x06, will), None);
    assert_eq!(e.reason_code(), ReasonCode::TopicNameInvalid);
}

// ---------------------------------------------------------------------------------------------
// Negative tests: CONNACK (§3.2)
// ---------------------------------------------------------------------------------------------

#[test]
fn mqtt_3_2_2_1_connack_reserved_flags_are_malformed() {
    assert_eq!(
        reason(&[0x20, 0x03, 0x02, 0x00, 0x00], V5),
        ReasonCode::MalformedPacket
    );
    assert_eq!(
        reason(&[0x20, 0x02, 0x80, 0x00], V311),
        ReasonCode::MalformedPacket
    );
}

#[test]
fn connack_invalid_reason_codes_are_malformed() {
    // 0x10 (No matching subscribers) is not a CONNACK reason code; 0x06 is no 3.1.1 return code.
    assert_eq!(
        reason(&[0x20, 0x03, 0x00, 0x10, 0x00], V5),
        ReasonCode::MalformedPacket
    );
    assert_eq!(
        reason(&[0x20, 0x02, 0x00, 0x06], V311),
        ReasonCode::MalformedPacket
    );
}

#[test]
fn connack_trailing_bytes_are_malformed() {
    assert_eq!(
        reason(&[0x20, 0x04, 0x00, 0x00, 0x00, 0x00], V5),
        ReasonCode::MalformedPacket
    );
    assert_eq!(
        reason(&[0x20, 0x03, 0x00, 0x00, 0x00], V311),
        ReasonCode::MalformedPacket
    );
}

// ---------------------------------------------------------------------------------------------
// Negative tests: PUBLISH (§3.3)
// ---------------------------------------------------------------------------------------------

#[test]
fn mqtt_2_2_1_3_publish_qos1_packet_id_zero_is_a_protocol_error() {
    #[rustfmt::skip]
    let bytes: &[u8] = &[0x32, 0x06, 0x00, 0x01, b't', 0x00, 0x00, 0x00];
    let e = decode_err(bytes, Some(V5));
    assert!(matches!(e, DecodeError::ZeroPacketId { .. }));
    assert_eq!(e.reason_code(), ReasonCode::ProtocolError);
    assert_eq!(
        reason(&[0x34, 0x05, 0x00, 0x01, b't', 0x00, 0x00], V311),
        ReasonCode::ProtocolError
    );
}

#[test]
fn mqtt_3_3_2_2_publish_topic_with_wildcard_is_topic_name_invalid() {
    for topic in [&b"a/+"[..], b"#", b"a/#", b"+"] {
        let e = decode_err(&publish_with_topic(topic), Some(V5));
        assert_eq!(e, DecodeError::WildcardInTopicName);
        assert_eq!(e.reason_code(), ReasonCode::TopicNameInvalid);
    }
}

#[test]
fn mqtt_3_3_2_1_empty_topic_without_alias_is_a_protocol_error() {
    let e = decode_err(&publish_with_topic(b""), Some(V5));
    assert_eq!(e, DecodeError::EmptyTopicName);
    assert_eq!(e.reason_code(), ReasonCode::ProtocolError);
}

#[test]
fn mqtt_4_7_3_1_v311_empty_topic_is_rejected() {
    assert_eq!(
        reason(&[0x30, 0x02, 0x00, 0x00], V311),
        ReasonCode::ProtocolError
    );
}

// ---------------------------------------------------------------------------------------------
// Negative tests: PUBACK, PUBREC, PUBREL, PUBCOMP (§3.4 – §3.7)
// ---------------------------------------------------------------------------------------------

#[test]
fn mqtt_3_4_2_1_ack_reason_not_valid_for_the_packet_type_is_malformed() {
    let cases: &[&[u8]] = &[
        &[0x40, 0x03, 0x00, 0x01, 0x92], // PUBACK with Packet Identifier not found
        &[0x50, 0x03, 0x00, 0x01, 0x01], // PUBREC with Granted QoS 1
        &[0x62, 0x03, 0x00, 0x01, 0x10], // PUBREL with No matching subscribers
        &[0x70, 0x03, 0x00, 0x01, 0x80], // PUBCOMP with Unspecified error
        &[0x40, 0x03, 0x00, 0x01, 0x05], // undefined code
    ];
    for bytes in cases {
        let e = decode_err(bytes, Some(V5));
        assert!(matches!(e, DecodeError::InvalidReasonCode { .. }), "{e:?}");
        assert_eq!(e.reason_code(), ReasonCode::MalformedPacket);
    }
}

#[test]
fn ack_packet_id_zero_is_a_protocol_error() {
    assert_eq!(
        reason(&[0x40, 0x02, 0x00, 0x00], V5),
        ReasonCode::ProtocolError
    );
    assert_eq!(
        reason(&[0x62, 0x02, 0x00, 0x00], V311),
        ReasonCode::ProtocolError
    );
}

#[test]
fn ack_lengths_must_match() {
    // 3.1.1 PUBACK with a third byte.
    assert_eq!(
        reason(&[0x40, 0x03, 0x00, 0x01, 0x00], V311),
        ReasonCode::MalformedPacket
    );
    // Remaining length 1.
    assert_eq!(reason(&[0x40, 0x01, 0x00], V5), ReasonCode::MalformedPacket);
    // 5.0 PUBACK with a byte after its (empty) properties.
    assert_eq!(
        reason(&[0x40, 0x05, 0x00, 0x01, 0x00, 0x00, 0x00], V5),
        ReasonCode::MalformedPacket
    );
}

// ---------------------------------------------------------------------------------------------
// Negative tests: SUBSCRIBE, SUBACK, UNSUBSCRIBE, UNSUBACK (§3.8 – §3.11)
// ---------------------------------------------------------------------------------------------

/// A SUBSCRIBE (id 1) with one filter "a" and the given options byte.
fn subscribe_with_options(version: ProtocolVersion, options: u8) -> Vec<u8> {
    if version.is_v5() {
        vec![0x82, 0x07, 0x00, 0x01, 0x00, 0x00, 0x01, b'a', options]
    } else {
        vec![0x82, 0x06, 0x00, 0x01, 0x00, 0x01, b'a', options]
    }
}

#[test]
fn mqtt_3_8_3_5_subscription_options_reserved_bits_are_malformed() {
    for options in [0x40u8, 0x80, 0xC0] {
        let e = decode_err(&subscribe_with_options(V5, options), Some(V5));
        assert!(matches!(e, DecodeError::ReservedBitSet { .. }));
        assert_eq!(e.reason_code(), ReasonCode::MalformedPacket);
    }
}

#[test]
fn mqtt_3_8_3_1_retain_handling_3_is_a_protocol_error() {
    let e = decode_err(&subscribe_with_options(V5, 0x30), Some(V5));
    assert_eq!(e, DecodeError::InvalidRetainHandling);
    assert_eq!(e.reason_code(), ReasonCode::ProtocolError);
}

#[test]
fn mqtt_3_8_3_1_subscription_maximum_qos_3_is_a_protocol_error() {
    // §3.8.3.1: "It is a Protocol Error if the Maximum QoS field has the value 3."
    let e = decode_err(&subscribe_with_options(V5, 0x03), Some(V5));
    assert_eq!(e, DecodeError::InvalidSubscriptionQos);
    assert_eq!(e.reason_code(), ReasonCode::ProtocolError);
}

#[test]
fn v311_mqtt_3_8_3_4_requested_qos_reserved_bits_and_qos_3_are_malformed() {
    for options in [0x04u8, 0x08, 0x80, 0x03] {
        let e = decode_err(&subscribe_with_options(V311, options), Some(V311));
        assert_eq!(
            e.reason_code(),
            ReasonCode::MalformedPacket,
            "{options:#04x}"
        );
    }
}

#[test]
fn mqtt_3_8_3_2_subscribe_without_filters_is_a_protocol_error() {
    let e = decode_err(&[0x82, 0x03, 0x00, 0x01, 0x00], Some(V5));
    assert!(matches!(e, DecodeError::NoTopicFilters { .. }));
    assert_eq!(e.reason_code(), ReasonCode::ProtocolError);
    // 3.1.1 MQTT-3.8.3-3: a protocol violation.
    assert_eq!(
        reason(&[0x82, 0x02, 0x00, 0x01], V311),
        ReasonCode::ProtocolError
    );
}

#[test]
fn subscribe_packet_id_zero_is_a_protocol_error() {
    assert_eq!(
        reason(&[0x82, 0x06, 0x00, 0x00, 0x00, 0x01, b'a', 0x00], V311),
        ReasonCode::ProtocolError
    );
}

#[test]
fn mqtt_4_7_3_1_empty_topic_filter_is_a_protocol_error() {
    assert_eq!(
        reason(&[0x82, 0x06, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00], V5),
        ReasonCode::ProtocolError
    );
    assert_eq!(
        reason(&[0xA2, 0x05, 0x00, 0x01, 0x00, 0x00, 0x00], V5),
        ReasonCode::ProtocolError
    );
}

#[test]
fn subscribe_filter_without_options_byte_is_malformed() {
    assert_eq!(
        reason(&[0x82, 0x06, 0x00, 0x01, 0x00, 0x00, 0x01, b'a'], V5),
        ReasonCode::MalformedPacket
    );
}

#[test]
fn suback_invalid_reason_codes_are_malformed() {
    // 0x10 in 5.0; 0x87 in 3.1.1 (only 0, 1, 2, 0x80 exist there).
    assert_eq!(
        reason(&[0x90, 0x04, 0x00, 0x01, 0x00, 0x10], V5),
        ReasonCode::MalformedPacket
    );
    assert_eq!(
        reason(&[0x90, 0x03, 0x00, 0x01, 0x87], V311),
        ReasonCode::MalformedPacket
    );
}

#[test]
fn mqtt_3_10_3_2_unsubscribe_without_filters_is_a_protocol_error() {
    assert_eq!(
        reason(&[0xA2, 0x03, 0x00, 0x01, 0x00], V5),
        ReasonCode::ProtocolError
    );
    assert_eq!(
        reason(&[0xA2, 0x02, 0x00, 0x01], V311),
        ReasonCode::ProtocolError
    );
}

#[test]
fn unsuback_invalid_forms_are_malformed() {
    // 3.1.1 UNSUBACK has no payload.
    assert_eq!(
        reason(&[0xB0, 0x03, 0x00, 0x01, 0x00], V311),
        ReasonCode::MalformedPacket
    );
    // 0x01 is no UNSUBACK reason code.
    assert_eq!(
        reason(&[0xB0, 0x04, 0x00, 0x01, 0x00, 0x01], V5),
        ReasonCode::MalformedPacket
    );
}

// ---------------------------------------------------------------------------------------------
// Negative tests: PINGREQ, PINGRESP, DISCONNECT, AUTH (§3.12 – §3.15)
// ---------------------------------------------------------------------------------------------

#[test]
fn ping_with_a_body_is_malformed() {
    for v in [V5, V311] {
        assert_eq!(reason(&[0xC0, 0x01, 0x00], v), ReasonCode::MalformedPacket);
        assert_eq!(reason(&[0xD0, 0x01, 0x00], v), ReasonCode::MalformedPacket);
    }
}

#[test]
fn disconnect_invalid_forms_are_malformed() {
    // 3.1.1 DISCONNECT must be empty.
    assert_eq!(
        reason(&[0xE0, 0x01, 0x00], V311),
        ReasonCode::MalformedPacket
    );
    // 0x01 is no DISCONNECT reason code.
    assert_eq!(reason(&[0xE0, 0x01, 0x01], V5), ReasonCode::MalformedPacket);
    // Property not allowed in DISCONNECT (Topic Alias).
    assert_eq!(
        reason(&[0xE0, 0x05, 0x00, 0x03, 0x23, 0x00, 0x01], V5),
        ReasonCode::MalformedPacket
    );
    // Trailing byte after the properties.
    assert_eq!(
        reason(&[0xE0, 0x03, 0x00, 0x00, 0x00], V5),
        ReasonCode::MalformedPacket
    );
}

#[test]
fn mqtt_3_15_2_1_auth_invalid_reason_is_malformed() {
    assert_eq!(
        reason(&[0xF0, 0x02, 0x01, 0x00], V5),
        ReasonCode::MalformedPacket
    );
    assert_eq!(reason(&[0xF0, 0x01, 0x80], V5), ReasonCode::MalformedPacket);
    // A property AUTH may not carry (Session Expiry Interval).
    assert_eq!(
        reason(&[0xF0, 0x07, 0x18, 0x05, 0x11, 0x00, 0x00, 0x00, 0x00], V5),
        ReasonCode::MalformedPacket
    );
}
