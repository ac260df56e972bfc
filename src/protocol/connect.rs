//! CONNECT (§3.1): the first packet of every connection; also MQTT 3.1's `MQIsdp` form.

use super::{Properties, ProtocolVersion, QoS};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Connect {
    /// From the Protocol Name and Protocol Level fields.
    pub protocol: ProtocolVersion,
    /// Bit 7 of the Protocol Level: not in any MQTT spec, but set by Mosquitto bridges
    /// (`try_private`) so that the broker they connect to can treat them as a bridge (their own
    /// messages not sent back, retain kept as published).
    pub bridge: bool,
    /// Clean Start (5.0) / Clean Session (3.1.1).
    pub clean_start: bool,
    /// Seconds; 0 turns keep-alive off.
    pub keep_alive: u16,
    pub properties: Properties,
    /// May be empty (§3.1.3.1).
    pub client_id: String,
    pub will: Option<Will>,
    pub username: Option<String>,
    pub password: Option<Vec<u8>>,
}

/// The Will Message carried in CONNECT (§3.1.3.2 – 3.1.3.4).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Will {
    pub topic: String,
    pub payload: Vec<u8>,
    pub qos: QoS,
    pub retain: bool,
    /// Will Properties (5.0 only): Will Delay Interval, Payload Format Indicator, Message Expiry,
    /// Content Type, Response Topic, Correlation Data, User Properties.
    pub properties: Properties,
}

use super::header::write_fixed_header;
use super::primitives::write_u8;
use super::primitives::{binary_len, string_len, write_binary, write_string, write_u16, Reader};
use super::properties::{self, PropertyContext};
use super::{topic, DecodeError, PacketType};

/// Protocol Name of MQTT 3.1.1 and 5.0 (§3.1.2.1).
pub const PROTOCOL_NAME: &str = "MQTT";
/// Protocol Name of MQTT 3.1.
pub const PROTOCOL_NAME_V31: &str = "MQIsdp";

/// Connect Flags bits (§3.1.2.3).
const FLAG_RESERVED: u8 = 0b0000_0001;
const FLAG_CLEAN_START: u8 = 0b0000_0010;
const FLAG_WILL: u8 = 0b0000_0100;
const FLAG_WILL_QOS_MASK: u8 = 0b0001_1000;
const FLAG_WILL_QOS_SHIFT: u8 = 3;
const FLAG_WILL_RETAIN: u8 = 0b0010_0000;
const FLAG_PASSWORD: u8 = 0b0100_0000;
const FLAG_USERNAME: u8 = 0b1000_0000;

/// The bridge bit Mosquitto ORs into the Protocol Level (`try_private`).
const LEVEL_BRIDGE: u8 = 0b1000_0000;

impl Connect {
    /// The Protocol Name this connection's version writes.
    pub fn protocol_name(version: ProtocolVersion) -> &'static str {
        match version {
            ProtocolVersion::V31 => PROTOCOL_NAME_V31,
            ProtocolVersion::V311 | ProtocolVersion::V5 => PROTOCOL_NAME,
        }
    }
}

/// Reads the Protocol Name and Level and picks the version (§3.1.2.1, §3.1.2.2), with the
/// bridge bit ([`LEVEL_BRIDGE`]) taken off the level. An unsupported level is reported as sent,
/// bridge bit included, so that the log shows the byte the client wrote.
fn read_version(r: &mut Reader<'_>) -> Result<(ProtocolVersion, bool), DecodeError> {
    let name = r.string("protocol name")?;
    let sent = r.u8("protocol level")?;
    let known_name = name == PROTOCOL_NAME || name == PROTOCOL_NAME_V31;
    if !known_name {
        return Err(DecodeError::InvalidProtocolName(name.to_owned()));
    }
    let bridge = sent & LEVEL_BRIDGE != 0;
    let level = sent & !LEVEL_BRIDGE;
    let version = [
        ProtocolVersion::V31,
        ProtocolVersion::V311,
        ProtocolVersion::V5,
    ]
    .into_iter()
    .find(|v| v.level() == level)
    .ok_or(DecodeError::UnsupportedProtocolVersion(sent))?;
    if name != Connect::protocol_name(version) {
        return Err(DecodeError::UnsupportedProtocolVersion(sent));
    }
    Ok((version, bridge))
}

/// Decodes the body of a CONNECT (fixed-header flags already checked). Errors after the Protocol
/// Level are wrapped in [`DecodeError::InConnect`].
pub(crate) fn read(body: &[u8]) -> Result<Connect, DecodeError> {
    let mut r = Reader::new(body);
    let (version, bridge) = read_version(&mut r)?;
    read_rest(&mut r, version, bridge, body.len()).map_err(|e| e.in_connect(version))
}

fn read_rest(
    r: &mut Reader<'_>,
    protocol: ProtocolVersion,
    bridge: bool,
    remaining_length: usize,
) -> Result<Connect, DecodeError> {
    let flags = r.u8("connect flags")?;
    if flags & FLAG_RESERVED != 0 {
        // MQTT-3.1.2-3.
        return Err(DecodeError::ReservedBitSet {
            what: "CONNECT flags",
        });
    }
    let will_flag = flags & FLAG_WILL != 0;
    let will_qos = QoS::from_u8((flags & FLAG_WILL_QOS_MASK) >> FLAG_WILL_QOS_SHIFT)
        .ok_or(DecodeError::InvalidQos { what: "Will QoS" })?; // MQTT-3.1.2-12
    let will_retain = flags & FLAG_WILL_RETAIN != 0;
    if !will_flag && (will_qos != QoS::AtMostOnce || will_retain) {
        // MQTT-3.1.2-11, MQTT-3.1.2-13.
        return Err(DecodeError::InvalidWillFlags);
    }
    let has_username = flags & FLAG_USERNAME != 0;
    let has_password = flags & FLAG_PASSWORD != 0;
    if !protocol.is_v5() && has_password && !has_username {
        // 3.1.1 MQTT-3.1.2-22; allowed in 5.0 (§3.1.2.9).
        return Err(DecodeError::PasswordWithoutUsername);
    }
    let keep_alive = r.u16("keep alive")?;
    let properties = if protocol.is_v5() {
        properties::read(r, PropertyContext::Connect)?
    } else {
        Properties::default()
    };
    if properties.authentication_data.is_some() && properties.authentication_method.is_none() {
        // §3.1.2.11.10.
        return Err(DecodeError::AuthDataWithoutMethod);
    }
    let client_id = r.string("client identifier")?.to_owned();
    let will = if will_flag {
        let will_properties = if protocol.is_v5() {
            properties::read(r, PropertyContext::Will)?
        } else {
            Properties::default()
        };
        let will_topic = r.string("will topic")?;
        check_topic_name(will_topic)?;
        let payload = r.binary("will payload")?.to_vec();
        Some(Will {
            topic: will_topic.to_owned(),
            payload,
            qos: will_qos,
            retain: will_retain,
            properties: will_properties,
        })
    } else {
        None
    };
    let username = if has_username {
        Some(r.string("user name")?.to_owned())
    } else {
        None
    };
    let password = if has_password {
        Some(r.binary("password")?.to_vec())
    } else {
        None
    };
    if !r.is_empty() {
        return Err(DecodeError::LengthMismatch {
            packet_type: PacketType::Connect,
            remaining_length,
        });
    }
    Ok(Connect {
        protocol,
        bridge,
        clean_start: flags & FLAG_CLEAN_START != 0,
        keep_alive,
        properties,
        client_id,
        will,
        username,
        password,
    })
}

/// A Will Topic is a Topic Name (§3.1.3.3): non-empty (MQTT-4.7.3-1) and without wildcards
/// (MQTT-3.3.2-2 by analogy; answered with 0x90 like a PUBLISH topic).
pub(crate) fn check_topic_name(name: &str) -> Result<(), DecodeError> {
    if name.is_empty() {
        return Err(DecodeError::EmptyTopicName);
    }
    if topic::has_wildcard(name) {
        return Err(DecodeError::WildcardInTopicName);
    }
    Ok(())
}

/// Remaining Length of the CONNECT. The packet carries its own version (`c.protocol`).
pub(crate) fn len(c: &Connect) -> usize {
    let v5 = c.protocol.is_v5();
    let mut n = string_len(Connect::protocol_name(c.protocol)) + 1 + 1 + 2;
    if v5 {
        n += properties::len(&c.properties, PropertyContext::Connect);
    }
    n += string_len(&c.client_id);
    if let Some(will) = &c.will {
        if v5 {
            n += properties::len(&will.properties, PropertyContext::Will);
        }
        n += string_len(&will.topic) + binary_len(&will.payload);
    }
    if let Some(username) = &c.username {
        n += string_len(username);
    }
    if let Some(password) = &c.password {
        n += binary_len(password);
    }
    n
}

/// Appends the whole CONNECT packet, in the version the packet names.
pub(crate) fn write(out: &mut Vec<u8>, c: &Connect) {
    let v5 = c.protocol.is_v5();
    write_fixed_header(out, PacketType::Connect, 0, len(c));
    write_string(out, Connect::protocol_name(c.protocol));
    let bridge = if c.bridge { LEVEL_BRIDGE } else { 0 };
    write_u8(out, c.protocol.level() | bridge);
    let mut flags = 0;
    if c.clean_start {
        flags |= FLAG_CLEAN_START;
    }
    if let Some(will) = &c.will {
        flags |= FLAG_WILL | ((will.qos as u8) << FLAG_WILL_QOS_SHIFT);
        if will.retain {
            flags |= FLAG_WILL_RETAIN;
        }
    }
    if c.username.is_some() {
        flags |= FLAG_USERNAME;
    }
    if c.password.is_some() {
        flags |= FLAG_PASSWORD;
    }
    write_u8(out, flags);
    write_u16(out, c.keep_alive);
    if v5 {
        properties::write(out, &c.properties, PropertyContext::Connect);
    }
    write_string(out, &c.client_id);
    if let Some(will) = &c.will {
        if v5 {
            properties::write(out, &will.properties, PropertyContext::Will);
        }
        write_string(out, &will.topic);
        write_binary(out, &will.payload);
    }
    if let Some(username) = &c.username {
        write_string(out, username);
    }
    if let Some(password) = &c.password {
        write_binary(out, password);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{encode, ConnAck, Packet};

    /// A CONNECT body: Protocol Name, the level byte as given, Clean Start, Keep Alive 30, an
    /// empty property block for 5.0, client id "c".
    fn body(name: &str, level: u8, v5: bool) -> Vec<u8> {
        let mut b = Vec::new();
        write_string(&mut b, name);
        b.push(level);
        b.push(FLAG_CLEAN_START);
        write_u16(&mut b, 30);
        if v5 {
            b.push(0);
        }
        write_string(&mut b, "c");
        b
    }

    #[test]
    fn bridge_bit_is_a_flag_on_the_supported_levels() {
        for (name, sent, version, v5) in [
            (PROTOCOL_NAME_V31, 0x83, ProtocolVersion::V31, false),
            (PROTOCOL_NAME, 0x84, ProtocolVersion::V311, false),
            (PROTOCOL_NAME, 0x85, ProtocolVersion::V5, true),
        ] {
            let c = read(&body(name, sent, v5)).expect("bridge CONNECT decodes");
            assert_eq!((c.protocol, c.bridge), (version, true), "level {sent:#04x}");
            let plain = read(&body(name, sent & !LEVEL_BRIDGE, v5)).expect("plain CONNECT");
            assert_eq!((plain.protocol, plain.bridge), (version, false));
        }
    }

    #[test]
    fn bridge_bit_round_trips_through_write() {
        for (protocol, bridge) in [
            (ProtocolVersion::V31, true),
            (ProtocolVersion::V311, true),
            (ProtocolVersion::V311, false),
            (ProtocolVersion::V5, true),
        ] {
            let c = Connect {
                protocol,
                bridge,
                clean_start: true,
                keep_alive: 60,
                properties: Properties::default(),
                client_id: "bridge-1".into(),
                will: None,
                username: None,
                password: None,
            };
            let mut out = Vec::new();
            write(&mut out, &c);
            let name_len = string_len(Connect::protocol_name(protocol));
            let level = out[2 + name_len];
            assert_eq!(level & LEVEL_BRIDGE != 0, bridge, "level byte {level:#04x}");
            // Fixed header: one type byte and a one-byte Remaining Length here.
            assert_eq!(read(&out[2..]), Ok(c));
        }
    }

    #[test]
    fn mqtt_3_1_2_2_unknown_level_is_unsupported_and_answered_in_3_1_1_form() {
        for (name, sent, v5) in [
            (PROTOCOL_NAME, 0x7F, false),
            (PROTOCOL_NAME, 6, true),
            (PROTOCOL_NAME, 2, false),
            (PROTOCOL_NAME, 3, false),
            (PROTOCOL_NAME, 0x86, false),
            (PROTOCOL_NAME, 0x80, false),
            (PROTOCOL_NAME, 0x83, false),
            (PROTOCOL_NAME_V31, 4, false),
            (PROTOCOL_NAME_V31, 0x84, false),
            (PROTOCOL_NAME_V31, 5, true),
        ] {
            let e = read(&body(name, sent, v5)).expect_err("unsupported level");
            assert_eq!(
                e,
                DecodeError::UnsupportedProtocolVersion(sent),
                "{name} {sent:#04x}"
            );
            let version = e.connect_version().expect("a CONNACK is due");
            let refusal = Packet::ConnAck(ConnAck {
                session_present: false,
                reason: e.reason_code(),
                properties: Properties::default(),
            });
            let mut out = Vec::new();
            encode(&refusal, version, &mut out);
            assert_eq!(out, [0x20, 0x02, 0x00, 0x01], "{name} {sent:#04x}");
        }
    }
}
