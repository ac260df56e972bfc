//! Property tests: every packet kind, generated valid for the connection's version, survives
//! `decode(encode(p)) == p`, and `encoded_len` equals the bytes written. Also checks the
//! fan-out encoder (`publish::write_out` / `out_len`) against the decoder.

use mqtt5_broker::protocol::properties::PropertyContext;
use mqtt5_broker::protocol::{
    ack, auth, connack, decode, disconnect, encode, encoded_len, publish, suback, unsuback, Ack,
    Auth, ConnAck, Connect, Disconnect, Packet, PacketType, Properties, PropertyId,
    ProtocolVersion, Publish, PublishOut, QoS, ReasonCode, RetainHandling, SubAck, Subscribe,
    SubscriptionOptions, TopicSubscription, UnsubAck, Unsubscribe, Will, MAX_REMAINING_LENGTH,
};
use proptest::collection::vec;
use proptest::option::of as opt;
use proptest::prelude::*;
use proptest::sample::select;

// ---------------------------------------------------------------------------------------------
// Strategies
// ---------------------------------------------------------------------------------------------

/// Short strings, non-ASCII included, never U+0000 (`\PC` excludes control characters).
fn arb_str() -> impl Strategy<Value = String> {
    "\\PC{0,6}"
}

fn arb_bytes() -> impl Strategy<Value = Vec<u8>> {
    vec(any::<u8>(), 0..8)
}

/// A valid topic name: non-empty, no wildcards.
fn arb_topic() -> impl Strategy<Value = String> {
    "[a-zA-Z0-9/_$é€ ]{1,10}"
}

/// A topic filter: non-empty; wildcard placement is the broker's business, so anything goes.
fn arb_filter() -> impl Strategy<Value = String> {
    "[a-z/+#$é]{1,10}"
}

fn arb_qos() -> impl Strategy<Value = QoS> {
    select(vec![QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce])
}

fn all_reasons() -> Vec<ReasonCode> {
    (0..=u8::MAX).filter_map(ReasonCode::from_u8).collect()
}

fn reasons_where(f: impl Fn(ReasonCode) -> bool) -> Vec<ReasonCode> {
    all_reasons().into_iter().filter(|r| f(*r)).collect()
}

/// Clears what `context` may not carry and keeps the value rules the decoder enforces.
fn restrict(p: &mut Properties, context: PropertyContext) {
    use PropertyId as P;
    let ok = |id| context.allows(id);
    macro_rules! keep {
        ($field:ident, $id:expr) => {
            if !ok($id) {
                p.$field = None;
            }
        };
    }
    keep!(payload_format_indicator, P::PayloadFormatIndicator);
    keep!(message_expiry_interval, P::MessageExpiryInterval);
    keep!(content_type, P::ContentType);
    keep!(response_topic, P::ResponseTopic);
    keep!(correlation_data, P::CorrelationData);
    keep!(session_expiry_interval, P::SessionExpiryInterval);
    keep!(assigned_client_identifier, P::AssignedClientIdentifier);
    keep!(server_keep_alive, P::ServerKeepAlive);
    keep!(authentication_method, P::AuthenticationMethod);
    keep!(authentication_data, P::AuthenticationData);
    keep!(request_problem_information, P::RequestProblemInformation);
    keep!(will_delay_interval, P::WillDelayInterval);
    keep!(request_response_information, P::RequestResponseInformation);
    keep!(response_information, P::ResponseInformation);
    keep!(server_reference, P::ServerReference);
    keep!(reason_string, P::ReasonString);
    keep!(receive_maximum, P::ReceiveMaximum);
    keep!(topic_alias_maximum, P::TopicAliasMaximum);
    keep!(topic_alias, P::TopicAlias);
    keep!(maximum_qos, P::MaximumQos);
    keep!(retain_available, P::RetainAvailable);
    keep!(maximum_packet_size, P::MaximumPacketSize);
    keep!(
        wildcard_subscription_available,
        P::WildcardSubscriptionAvailable
    );
    keep!(
        subscription_identifier_available,
        P::SubscriptionIdentifierAvailable
    );
    keep!(
        shared_subscription_available,
        P::SharedSubscriptionAvailable
    );
    match context {
        PropertyContext::Publish => {}
        PropertyContext::Subscribe => p.subscription_identifiers.truncate(1),
        _ => p.subscription_identifiers.clear(),
    }
    if context == PropertyContext::Connect && p.authentication_method.is_none() {
        p.authentication_data = None;
    }
}

fn arb_props(context: PropertyContext) -> impl Strategy<Value = Properties> {
    let a = (
        opt(0..=1u8),
        opt(any::<u32>()),
        opt(arb_str()),
        opt(arb_str()),
        opt(arb_bytes()),
        vec(1..=MAX_REMAINING_LENGTH, 0..3),
        opt(any::<u32>()),
        opt(arb_str()),
        opt(any::<u16>()),
        opt(arb_str()),
        opt(arb_bytes()),
        opt(0..=1u8),
    );
    let b = (
        opt(any::<u32>()),
        opt(0..=1u8),
        opt(arb_str()),
        opt(arb_str()),
        opt(arb_str()),
        opt(1..=u16::MAX),
        opt(any::<u16>()),
        opt(any::<u16>()),
        opt(0..=1u8),
        opt(0..=1u8),
        vec((arb_str(), arb_str()), 0..3),
        opt(1..=u32::MAX),
    );
    let c = (opt(0..=1u8), opt(0..=1u8), opt(0..=1u8));
    (a, b, c).prop_map(move |(a, b, c)| {
        let mut p = Properties {
            payload_format_indicator: a.0,
            message_expiry_interval: a.1,
            content_type: a.2,
            response_topic: a.3,
            correlation_data: a.4,
            subscription_identifiers: a.5,
            session_expiry_interval: a.6,
            assigned_client_identifier: a.7,
            server_keep_alive: a.8,
            authentication_method: a.9,
            authentication_data: a.10,
            request_problem_information: a.11,
            will_delay_interval: b.0,
            request_response_information: b.1,
            response_information: b.2,
            server_reference: b.3,
            reason_string: b.4,
            receive_maximum: b.5,
            topic_alias_maximum: b.6,
            topic_alias: b.7,
            maximum_qos: b.8,
            retain_available: b.9,
            user_properties: b.10,
            maximum_packet_size: b.11,
            wildcard_subscription_available: c.0,
            subscription_identifier_available: c.1,
            shared_subscription_available: c.2,
        };
        restrict(&mut p, context);
        p
    })
}

/// Properties for `context` in 5.0; none in 3.1.x.
fn props_for(version: ProtocolVersion, context: PropertyContext) -> BoxedStrategy<Properties> {
    if version.is_v5() {
        arb_props(context).boxed()
    } else {
        Just(Properties::default()).boxed()
    }
}

fn arb_will(version: ProtocolVersion) -> impl Strategy<Value = Will> {
    (
        arb_topic(),
        arb_bytes(),
        arb_qos(),
        any::<bool>(),
        props_for(version, PropertyContext::Will),
    )
        .prop_map(|(topic, payload, qos, retain, properties)| Will {
            topic,
            payload,
            qos,
            retain,
            properties,
        })
}

fn arb_connect(version: ProtocolVersion) -> impl Strategy<Value = Packet> {
    (
        any::<bool>(),
        any::<u16>(),
        props_for(version, PropertyContext::Connect),
        arb_str(),
        opt(arb_will(version)),
        opt(arb_str()),
        opt(arb_bytes()),
        // Bit 7 of the Protocol Level (a Mosquitto bridge, `try_private`).
        any::<bool>(),
    )
        .prop_map(
            move |(
                clean_start,
                keep_alive,
                properties,
                client_id,
                will,
                username,
                password,
                bridge,
            )| {
                // 3.1.1 MQTT-3.1.2-22: no password without a user name.
                let password = if version.is_v5() || username.is_some() {
                    password
                } else {
                    None
                };
                Packet::Connect(Box::new(Connect {
                    protocol: version,
                    bridge,
                    clean_start,
                    keep_alive,
                    properties,
                    client_id,
                    will,
                    username,
                    password,
                }))
            },
        )
}

fn arb_connack(version: ProtocolVersion) -> impl Strategy<Value = Packet> {
    let reasons = if version.is_v5() {
        reasons_where(connack::valid_reason)
    } else {
        use ReasonCode as R;
        vec![
            R::Success,
            R::UnsupportedProtocolVersion,
            R::ClientIdentifierNotValid,
            R::ServerUnavailable,
            R::BadUserNameOrPassword,
            R::NotAuthorized,
        ]
    };
    (
        any::<bool>(),
        select(reasons),
        props_for(version, PropertyContext::ConnAck),
    )
        .prop_map(|(session_present, reason, properties)| {
            Packet::ConnAck(ConnAck {
                session_present,
                reason,
                properties,
            })
        })
}

fn arb_publish(version: ProtocolVersion) -> impl Strategy<Value = Publish> {
    (
        arb_qos(),
        any::<bool>(),
        any::<bool>(),
        arb_topic(),
        any::<bool>(),
        1..=u16::MAX,
        props_for(version, PropertyContext::Publish),
        vec(any::<u8>(), 0..64),
    )
        .prop_map(
            move |(qos, dup, retain, topic, use_alias, id, mut properties, payload)| {
                // 5.0: an empty topic stands for an alias (§3.3.2.1).
                let topic = if version.is_v5() && use_alias {
                    properties.topic_alias.get_or_insert(1);
                    String::new()
                } else {
                    topic
                };
                let at_most_once = qos == QoS::AtMostOnce;
                Publish {
                    dup: dup && !at_most_once,
                    qos,
                    retain,
                    topic,
                    packet_id: if at_most_once { 0 } else { id },
                    properties,
                    payload,
                }
            },
        )
}

fn arb_ack(version: ProtocolVersion, packet_type: PacketType) -> impl Strategy<Value = Ack> {
    let context = match packet_type {
        PacketType::PubAck => PropertyContext::PubAck,
        PacketType::PubRec => PropertyContext::PubRec,
        PacketType::PubRel => PropertyContext::PubRel,
        _ => PropertyContext::PubComp,
    };
    let reasons = if version.is_v5() {
        reasons_where(|r| ack::valid_reason(packet_type, r))
    } else {
        vec![ReasonCode::Success]
    };
    (1..=u16::MAX, select(reasons), props_for(version, context)).prop_map(
        |(packet_id, reason, properties)| Ack {
            packet_id,
            reason,
            properties,
        },
    )
}

fn arb_options(version: ProtocolVersion) -> impl Strategy<Value = SubscriptionOptions> {
    (
        arb_qos(),
        any::<bool>(),
        any::<bool>(),
        select(vec![
            RetainHandling::SendAtSubscribe,
            RetainHandling::SendAtSubscribeIfNew,
            RetainHandling::DoNotSend,
        ]),
    )
        .prop_map(
            move |(qos, no_local, retain_as_published, retain_handling)| {
                if version.is_v5() {
                    SubscriptionOptions {
                        qos,
                        no_local,
                        retain_as_published,
                        retain_handling,
                    }
                } else {
                    SubscriptionOptions {
                        qos,
                        ..SubscriptionOptions::default()
                    }
                }
            },
        )
}

fn arb_subscribe(version: ProtocolVersion) -> impl Strategy<Value = Packet> {
    (
        1..=u16::MAX,
        props_for(version, PropertyContext::Subscribe),
        vec(
            (arb_filter(), arb_options(version))
                .prop_map(|(filter, options)| TopicSubscription { filter, options }),
            1..4,
        ),
    )
        .prop_map(|(packet_id, properties, filters)| {
            Packet::Subscribe(Subscribe {
                packet_id,
                properties,
                filters,
            })
        })
}

fn arb_suback(version: ProtocolVersion) -> impl Strategy<Value = Packet> {
    let reasons = if version.is_v5() {
        reasons_where(suback::valid_reason)
    } else {
        use ReasonCode as R;
        vec![
            R::Success,
            R::GrantedQos1,
            R::GrantedQos2,
            R::UnspecifiedError,
        ]
    };
    (
        1..=u16::MAX,
        props_for(version, PropertyContext::SubAck),
        vec(select(reasons), 1..5),
    )
        .prop_map(|(packet_id, properties, reasons)| {
            Packet::SubAck(SubAck {
                packet_id,
                properties,
                reasons,
            })
        })
}

fn arb_unsubscribe(version: ProtocolVersion) -> impl Strategy<Value = Packet> {
    (
        1..=u16::MAX,
        props_for(version, PropertyContext::Unsubscribe),
        vec(arb_filter(), 1..4),
    )
        .prop_map(|(packet_id, properties, filters)| {
            Packet::Unsubscribe(Unsubscribe {
                packet_id,
                properties,
                filters,
            })
        })
}

fn arb_unsuback(version: ProtocolVersion) -> impl Strategy<Value = Packet> {
    let n = if version.is_v5() { 0..5 } else { 0..1 };
    (
        1..=u16::MAX,
        props_for(version, PropertyContext::UnsubAck),
        vec(select(reasons_where(unsuback::valid_reason)), n),
    )
        .prop_map(|(packet_id, properties, reasons)| {
            Packet::UnsubAck(UnsubAck {
                packet_id,
                properties,
                reasons,
            })
        })
}

fn arb_disconnect(version: ProtocolVersion) -> impl Strategy<Value = Packet> {
    let reasons = if version.is_v5() {
        reasons_where(disconnect::valid_reason)
    } else {
        vec![ReasonCode::Success]
    };
    (
        select(reasons),
        props_for(version, PropertyContext::Disconnect),
    )
        .prop_map(|(reason, properties)| Packet::Disconnect(Disconnect { reason, properties }))
}

fn arb_auth() -> impl Strategy<Value = Packet> {
    (
        select(reasons_where(auth::valid_reason)),
        arb_props(PropertyContext::Auth),
    )
        .prop_map(|(reason, properties)| Packet::Auth(Auth { reason, properties }))
}

/// Any packet valid on a connection of `version`.
pub fn arb_packet(version: ProtocolVersion) -> BoxedStrategy<Packet> {
    let common = prop_oneof![
        arb_connect(version),
        arb_connack(version),
        arb_publish(version).prop_map(Packet::Publish),
        arb_ack(version, PacketType::PubAck).prop_map(Packet::PubAck),
        arb_ack(version, PacketType::PubRec).prop_map(Packet::PubRec),
        arb_ack(version, PacketType::PubRel).prop_map(Packet::PubRel),
        arb_ack(version, PacketType::PubComp).prop_map(Packet::PubComp),
        arb_subscribe(version),
        arb_suback(version),
        arb_unsubscribe(version),
        arb_unsuback(version),
        Just(Packet::PingReq),
        Just(Packet::PingResp),
        arb_disconnect(version),
    ];
    if version.is_v5() {
        prop_oneof![13 => common, 1 => arb_auth()].boxed()
    } else {
        common.boxed()
    }
}

// ---------------------------------------------------------------------------------------------
// Properties
// ---------------------------------------------------------------------------------------------

fn round_trip(packet: &Packet, version: ProtocolVersion) -> Result<(), TestCaseError> {
    let mut out = vec![0xAA, 0xBB]; // encode appends
    encode(packet, version, &mut out);
    let written = out.len() - 2;
    prop_assert_eq!(encoded_len(packet, version), written);
    let decoded = decode(&out[2..], Some(version), u32::MAX);
    prop_assert_eq!(decoded, Ok(Some((packet.clone(), written))));
    // Followed by more bytes, it still consumes exactly itself.
    out.extend_from_slice(&[0xC0, 0x00]);
    let (_, consumed) = decode(&out[2..], Some(version), u32::MAX)
        .map_err(|e| TestCaseError::fail(e.to_string()))?
        .ok_or_else(|| TestCaseError::fail("need more"))?;
    prop_assert_eq!(consumed, written);
    // Not a byte less will do.
    prop_assert_eq!(
        decode(&out[2..1 + written], Some(version), u32::MAX),
        Ok(None)
    );
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn v5_packets_round_trip(packet in arb_packet(ProtocolVersion::V5)) {
        round_trip(&packet, ProtocolVersion::V5)?;
    }

    #[test]
    fn v311_packets_round_trip(packet in arb_packet(ProtocolVersion::V311)) {
        round_trip(&packet, ProtocolVersion::V311)?;
    }

    #[test]
    fn v31_packets_round_trip(packet in arb_packet(ProtocolVersion::V31)) {
        round_trip(&packet, ProtocolVersion::V31)?;
    }

    #[test]
    fn connect_is_decoded_without_a_known_version(
        packet in prop_oneof![
            arb_connect(ProtocolVersion::V5),
            arb_connect(ProtocolVersion::V311),
            arb_connect(ProtocolVersion::V31),
        ]
    ) {
        let mut out = Vec::new();
        encode(&packet, ProtocolVersion::V5, &mut out);
        prop_assert_eq!(decode(&out, None, u32::MAX), Ok(Some((packet, out.len()))));
    }

    /// The fan-out encoder writes what the decoder reads back, with the per-subscriber Message
    /// Expiry Interval, Topic Alias and Subscription Identifiers in place of the shared ones.
    #[test]
    fn publish_out_matches_decoder(
        version in select(vec![ProtocolVersion::V5, ProtocolVersion::V311]),
        base in arb_publish(ProtocolVersion::V5),
        expiry in opt(any::<u32>()),
        alias in opt(1..=u16::MAX),
        sub_ids in vec(1..=MAX_REMAINING_LENGTH, 0..3),
    ) {
        let topic = if base.topic.is_empty() && alias.is_none() { "t" } else { &base.topic };
        let topic = if version.is_v5() || !topic.is_empty() { topic } else { "t" };
        let out_packet = PublishOut {
            dup: base.dup,
            qos: base.qos,
            retain: base.retain,
            topic,
            packet_id: base.packet_id,
            properties: &base.properties,
            message_expiry_interval: expiry,
            topic_alias: alias,
            subscription_identifiers: &sub_ids,
            payload: &base.payload,
        };
        let mut out = vec![0x01];
        publish::write_out(&mut out, version, &out_packet);
        prop_assert_eq!(publish::out_len(version, &out_packet), out.len() - 1);
        let mut expected = base.clone();
        expected.topic = topic.to_owned();
        if version.is_v5() {
            expected.properties.message_expiry_interval = expiry;
            expected.properties.topic_alias = alias;
            expected.properties.subscription_identifiers = sub_ids.clone();
        } else {
            expected.properties = Properties::default();
        }
        let decoded = decode(&out[1..], Some(version), u32::MAX);
        prop_assert_eq!(decoded, Ok(Some((Packet::Publish(expected), out.len() - 1))));
    }
}
