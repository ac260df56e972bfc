//! Decoding errors, each mapped to the MQTT 5.0 reason code the spec names for it (§4.13, §2.4).
//!
//! The broker answers a decode error with CONNACK (while connecting) or DISCONNECT carrying
//! [`DecodeError::reason_code`] and then closes the connection; a 3.1.1 connection is simply
//! closed (3.1.1 §4.8). Two variants need special handling by the broker:
//! [`DecodeError::InvalidProtocolName`] (close without CONNACK, MQTT-3.1.2-1) and
//! [`DecodeError::UnsupportedProtocolVersion`] (return code 0x01 in the 3.1.1 format, then
//! close, MQTT-3.1.2-2). A CONNECT that fails after its Protocol
//! Level was read is wrapped in [`DecodeError::InConnect`], so that
//! [`DecodeError::connect_version`] tells the broker which CONNACK format to answer in.

use std::fmt;

use super::properties::PropertyContext;
use super::{PacketType, PropertyId, ProtocolVersion, ReasonCode};

/// Why bytes could not be decoded into a packet.
///
/// `what` fields name the field being read (e.g. `"topic name"`) for logs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DecodeError {
    /// A field runs past the end of its packet or of its Property Length (0x81).
    Truncated { what: &'static str },
    /// A Variable Byte Integer longer than 4 bytes or not in its minimal form (0x81, §1.5.5,
    /// MQTT-1.5.5-1).
    MalformedVarint { what: &'static str },
    /// The whole packet (fixed header included) exceeds the Maximum Packet Size (0x95, §3.1.2.11.4).
    PacketTooLarge { size: usize, max: u32 },
    /// The reserved packet type 0, or AUTH (15) on a 3.1.1 connection (0x81, §2.1.2).
    InvalidPacketType(u8),
    /// Fixed-header flags other than those required for the packet type (0x81, §2.1.3,
    /// MQTT-2.1.3-1), including PUBLISH with QoS 0 and DUP 1 (MQTT-3.3.1-2).
    InvalidFlags { packet_type: PacketType, flags: u8 },
    /// A QoS field with the value 3: PUBLISH (MQTT-3.3.1-4), Will QoS (MQTT-3.1.2-12), 3.1.1
    /// SUBSCRIBE requested QoS (3.1.1 MQTT-3.8.3-4) (0x81).
    InvalidQos { what: &'static str },
    /// A reserved bit that must be 0 is 1: CONNECT flags bit 0 (MQTT-3.1.2-3), CONNACK flags bits
    /// 7–1 (MQTT-3.2.2-1), Subscription Options bits 7–6 (MQTT-3.8.3-5) (0x81).
    ReservedBitSet { what: &'static str },
    /// Will QoS or Will Retain set while the Will Flag is 0 (0x81, MQTT-3.1.2-11, MQTT-3.1.2-13).
    InvalidWillFlags,
    /// 3.1.1: Password Flag 1 with User Name Flag 0 (0x81, 3.1.1 MQTT-3.1.2-22).
    PasswordWithoutUsername,
    /// Ill-formed UTF-8, a surrogate, or U+0000 in a UTF-8 Encoded String (0x81, MQTT-1.5.4-1,
    /// MQTT-1.5.4-2).
    InvalidUtf8 { what: &'static str },
    /// A Property Identifier this version of the spec does not define (0x81, §2.2.2.2).
    UnknownProperty { id: u32 },
    /// A property the packet kind may not carry (0x81, §2.2.2.2: "A Control Packet which contains
    /// an Identifier which is not valid for its packet type ... is a Malformed Packet").
    InvalidProperty {
        id: PropertyId,
        context: PropertyContext,
    },
    /// A property included more than once where the spec allows one (0x82, e.g. §3.1.2.11.2).
    DuplicateProperty {
        id: PropertyId,
        context: PropertyContext,
    },
    /// A property value the spec forbids: a value other than 0 or 1 for the boolean-like
    /// properties, Receive Maximum 0, Maximum Packet Size 0, Subscription Identifier 0 (0x82).
    InvalidPropertyValue { id: PropertyId, value: u32 },
    /// Authentication Data without Authentication Method in CONNECT (0x82, §3.1.2.11.10).
    AuthDataWithoutMethod,
    /// A Packet Identifier of 0 where a non-zero one is required (0x82, MQTT-2.2.1-3).
    ZeroPacketId { packet_type: PacketType },
    /// Bytes left over after the last field, or a Remaining Length the packet kind cannot have
    /// (0x81).
    LengthMismatch {
        packet_type: PacketType,
        remaining_length: usize,
    },
    /// A reason code not defined for the packet type (0x81).
    InvalidReasonCode { packet_type: PacketType, code: u8 },
    /// A PUBLISH or Will topic containing `+` or `#` (0x90, MQTT-3.3.2-2).
    WildcardInTopicName,
    /// A zero-length topic name: 5.0 PUBLISH without a Topic Alias (0x82, §3.3.2.1), a 3.1.1
    /// PUBLISH (3.1.1 MQTT-4.7.3-1), or a Will Topic.
    EmptyTopicName,
    /// A zero-length topic filter in SUBSCRIBE / UNSUBSCRIBE (0x82, MQTT-4.7.3-1).
    EmptyTopicFilter { packet_type: PacketType },
    /// SUBSCRIBE / UNSUBSCRIBE without any topic filter (0x82, MQTT-3.8.3-2, MQTT-3.10.3-2).
    NoTopicFilters { packet_type: PacketType },
    /// 5.0 Subscription Options with Maximum QoS 3 (0x82, §3.8.3.1).
    InvalidSubscriptionQos,
    /// 5.0 Subscription Options with Retain Handling 3 (0x82, §3.8.3.1).
    InvalidRetainHandling,
    /// CONNECT whose Protocol Name is neither `MQTT` nor `MQIsdp`. The Server closes the connection
    /// without CONNACK (MQTT-3.1.2-1); `reason_code` reports 0x82 for logs only.
    InvalidProtocolName(String),
    /// CONNECT with a Protocol Level this server does not speak, or one that does not match its
    /// Protocol Name; the level byte as sent. Answer return code 0x01 in the 3.1.1 format, then
    /// close (MQTT-3.1.2-2).
    UnsupportedProtocolVersion(u8),
    /// An error in a CONNECT after its Protocol Name and Level were read: the broker answers in
    /// the format of `version` (§4.13, MQTT-3.2.2-8 for 5.0).
    InConnect {
        version: ProtocolVersion,
        cause: Box<DecodeError>,
    },
}

impl DecodeError {
    /// The reason code to put in the CONNACK or DISCONNECT that answers this error.
    pub fn reason_code(&self) -> ReasonCode {
        use DecodeError as E;
        match self {
            E::Truncated { .. }
            | E::MalformedVarint { .. }
            | E::InvalidPacketType(_)
            | E::InvalidFlags { .. }
            | E::InvalidQos { .. }
            | E::ReservedBitSet { .. }
            | E::InvalidWillFlags
            | E::PasswordWithoutUsername
            | E::InvalidUtf8 { .. }
            | E::UnknownProperty { .. }
            | E::InvalidProperty { .. }
            | E::LengthMismatch { .. }
            | E::InvalidReasonCode { .. } => ReasonCode::MalformedPacket,
            E::DuplicateProperty { .. }
            | E::InvalidPropertyValue { .. }
            | E::AuthDataWithoutMethod
            | E::ZeroPacketId { .. }
            | E::EmptyTopicName
            | E::EmptyTopicFilter { .. }
            | E::NoTopicFilters { .. }
            | E::InvalidSubscriptionQos
            | E::InvalidRetainHandling
            | E::InvalidProtocolName(_) => ReasonCode::ProtocolError,
            E::PacketTooLarge { .. } => ReasonCode::PacketTooLarge,
            E::WildcardInTopicName => ReasonCode::TopicNameInvalid,
            E::UnsupportedProtocolVersion(_) => ReasonCode::UnsupportedProtocolVersion,
            E::InConnect { cause, .. } => cause.reason_code(),
        }
    }

    /// For an error in a CONNECT, the version whose CONNACK format the broker should answer in;
    /// `None` when no CONNACK is to be sent (invalid protocol name, MQTT-3.1.2-1; a CONNECT too
    /// short or too large to tell) and for errors outside CONNECT.
    ///
    /// * [`DecodeError::InConnect`]: the version the CONNECT named.
    /// * [`DecodeError::UnsupportedProtocolVersion`]: 3.1.1 (return code 0x01), whatever the
    ///   level — MQTT-3.1.2-2. The 3.1.1 CONNACK is the one every client of a level we do not
    ///   speak can read (3.1 and 3.1.1 clients, and Mosquitto does the same); 5.0 only says the
    ///   server MAY send 0x84 (§3.1.2.2), which a 3.1.1-shaped client cannot parse.
    pub fn connect_version(&self) -> Option<ProtocolVersion> {
        match self {
            DecodeError::InConnect { version, .. } => Some(*version),
            DecodeError::UnsupportedProtocolVersion(_) => Some(ProtocolVersion::V311),
            _ => None,
        }
    }

    /// The error itself, or for [`DecodeError::InConnect`] the error it wraps.
    pub fn cause(&self) -> &DecodeError {
        match self {
            DecodeError::InConnect { cause, .. } => cause.cause(),
            other => other,
        }
    }

    /// Wraps an error raised while decoding the body of a CONNECT of `version`.
    pub(crate) fn in_connect(self, version: ProtocolVersion) -> DecodeError {
        match self {
            already @ DecodeError::InConnect { .. } => already,
            cause => DecodeError::InConnect {
                version,
                cause: Box::new(cause),
            },
        }
    }
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use DecodeError as E;
        match self {
            E::Truncated { what } => write!(f, "malformed packet: {what} runs past the end"),
            E::MalformedVarint { what } => {
                write!(
                    f,
                    "malformed packet: invalid variable byte integer in {what}"
                )
            }
            E::PacketTooLarge { size, max } => {
                write!(f, "packet of {size} bytes exceeds the maximum of {max}")
            }
            E::InvalidPacketType(t) => write!(f, "malformed packet: invalid packet type {t}"),
            E::InvalidFlags { packet_type, flags } => write!(
                f,
                "malformed packet: invalid fixed header flags {flags:#06b} for {packet_type:?}"
            ),
            E::InvalidQos { what } => write!(f, "malformed packet: QoS 3 in {what}"),
            E::ReservedBitSet { what } => write!(f, "malformed packet: reserved bit set in {what}"),
            E::InvalidWillFlags => write!(
                f,
                "malformed packet: Will QoS or Will Retain set without the Will Flag"
            ),
            E::PasswordWithoutUsername => {
                write!(
                    f,
                    "malformed packet: password flag set without user name flag"
                )
            }
            E::InvalidUtf8 { what } => write!(f, "malformed packet: invalid UTF-8 in {what}"),
            E::UnknownProperty { id } => {
                write!(f, "malformed packet: unknown property identifier {id:#04x}")
            }
            E::InvalidProperty { id, context } => write!(
                f,
                "malformed packet: property {id:?} is not allowed in {}",
                context.name()
            ),
            E::DuplicateProperty { id, context } => write!(
                f,
                "protocol error: property {id:?} included more than once in {}",
                context.name()
            ),
            E::InvalidPropertyValue { id, value } => {
                write!(
                    f,
                    "protocol error: invalid value {value} for property {id:?}"
                )
            }
            E::AuthDataWithoutMethod => write!(
                f,
                "protocol error: Authentication Data without Authentication Method"
            ),
            E::ZeroPacketId { packet_type } => {
                write!(f, "protocol error: packet identifier 0 in {packet_type:?}")
            }
            E::LengthMismatch {
                packet_type,
                remaining_length,
            } => write!(
                f,
                "malformed packet: fields of {packet_type:?} do not fill its remaining length \
                 {remaining_length}"
            ),
            E::InvalidReasonCode { packet_type, code } => write!(
                f,
                "malformed packet: reason code {code:#04x} is not valid in {packet_type:?}"
            ),
            E::WildcardInTopicName => write!(f, "topic name contains a wildcard"),
            E::EmptyTopicName => write!(f, "protocol error: empty topic name"),
            E::EmptyTopicFilter { packet_type } => {
                write!(f, "protocol error: empty topic filter in {packet_type:?}")
            }
            E::NoTopicFilters { packet_type } => {
                write!(f, "protocol error: {packet_type:?} without topic filters")
            }
            E::InvalidSubscriptionQos => {
                write!(f, "protocol error: subscription Maximum QoS 3")
            }
            E::InvalidRetainHandling => write!(f, "protocol error: Retain Handling 3"),
            E::InvalidProtocolName(name) => write!(f, "invalid protocol name {name:?}"),
            E::UnsupportedProtocolVersion(level) => {
                write!(f, "unsupported protocol level {level}")
            }
            E::InConnect { version, cause } => {
                write!(f, "in MQTT {} CONNECT: {cause}", version.name())
            }
        }
    }
}

impl std::error::Error for DecodeError {}
