//! The MQTT 5.0 and 3.1.1 codec: bytes in, typed packets out, and back.
//!
//! This module is pure: no sockets, no threads, no clock, no globals. A connection feeds received
//! bytes to a [`frame::FrameBuffer`] and gets whole [`Packet`]s or a [`DecodeError`] that names the
//! reason code the spec requires; the broker turns packets back into bytes with [`encode`].
//!
//! One codec serves both protocol versions: every decode and encode takes the connection's
//! [`ProtocolVersion`]; CONNECT carries its own.
//!
//! Layout (one file per packet kind, each with its `read` / `write` pair):
//! `primitives` (varint, u16/u32, UTF-8 strings, binary data), `header` (fixed header),
//! `properties`, `reason`, `connect`, `connack`, `publish`, `ack` (PUBACK, PUBREC, PUBREL,
//! PUBCOMP), `subscribe`, `suback`, `unsubscribe`, `unsuback`, `disconnect`, `auth`, `frame`.

pub mod ack;
pub mod auth;
pub mod connack;
pub mod connect;
pub mod disconnect;
pub mod error;
pub mod frame;
pub mod header;
pub mod primitives;
pub mod properties;
pub mod publish;
pub mod reason;
pub mod suback;
pub mod subscribe;
pub mod topic;
pub mod unsuback;
pub mod unsubscribe;

mod codec;

pub use ack::Ack;
pub use auth::Auth;
pub use codec::{decode, encode, encoded_len};
pub use connack::ConnAck;
pub use connect::{Connect, Will};
pub use disconnect::Disconnect;
pub use error::DecodeError;
pub use properties::{Properties, PropertyId};
pub use publish::{Publish, PublishOut};
pub use reason::{ConnectReturnCode, ReasonCode};
pub use suback::SubAck;
pub use subscribe::{RetainHandling, Subscribe, SubscriptionOptions, TopicSubscription};
pub use unsuback::UnsubAck;
pub use unsubscribe::Unsubscribe;

/// The largest remaining length a variable byte integer can express (§1.5.5): 268,435,455.
pub const MAX_REMAINING_LENGTH: u32 = 268_435_455;

/// Protocol versions, by the Protocol Level byte of CONNECT (§3.1.2.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
pub enum ProtocolVersion {
    /// MQTT 3.1, protocol name `MQIsdp`; handled with 3.1.1 semantics.
    V31 = 3,
    /// MQTT 3.1.1, protocol name `MQTT`.
    V311 = 4,
    /// MQTT 5.0, protocol name `MQTT`.
    V5 = 5,
}

impl ProtocolVersion {
    pub fn is_v5(self) -> bool {
        self == ProtocolVersion::V5
    }

    /// The level byte as written in CONNECT.
    pub fn level(self) -> u8 {
        self as u8
    }

    /// A short human name for logs and the control page: "3.1", "3.1.1", "5.0".
    pub fn name(self) -> &'static str {
        match self {
            ProtocolVersion::V31 => "3.1",
            ProtocolVersion::V311 => "3.1.1",
            ProtocolVersion::V5 => "5.0",
        }
    }
}

/// Control packet types (§2.1.2), by their 4-bit wire value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum PacketType {
    Connect = 1,
    ConnAck = 2,
    Publish = 3,
    PubAck = 4,
    PubRec = 5,
    PubRel = 6,
    PubComp = 7,
    Subscribe = 8,
    SubAck = 9,
    Unsubscribe = 10,
    UnsubAck = 11,
    PingReq = 12,
    PingResp = 13,
    Disconnect = 14,
    Auth = 15,
}

impl PacketType {
    pub fn from_u8(v: u8) -> Option<PacketType> {
        use PacketType::*;
        Some(match v {
            1 => Connect,
            2 => ConnAck,
            3 => Publish,
            4 => PubAck,
            5 => PubRec,
            6 => PubRel,
            7 => PubComp,
            8 => Subscribe,
            9 => SubAck,
            10 => Unsubscribe,
            11 => UnsubAck,
            12 => PingReq,
            13 => PingResp,
            14 => Disconnect,
            15 => Auth,
            _ => return None,
        })
    }
}

/// Quality of service levels (§4.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
#[repr(u8)]
pub enum QoS {
    #[default]
    AtMostOnce = 0,
    AtLeastOnce = 1,
    ExactlyOnce = 2,
}

impl QoS {
    /// `None` for 3, which is malformed wherever a QoS appears (§3.3.1.2).
    pub fn from_u8(v: u8) -> Option<QoS> {
        match v {
            0 => Some(QoS::AtMostOnce),
            1 => Some(QoS::AtLeastOnce),
            2 => Some(QoS::ExactlyOnce),
            _ => None,
        }
    }
}

/// A decoded control packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Packet {
    Connect(Box<Connect>),
    ConnAck(ConnAck),
    Publish(Publish),
    PubAck(Ack),
    PubRec(Ack),
    PubRel(Ack),
    PubComp(Ack),
    Subscribe(Subscribe),
    SubAck(SubAck),
    Unsubscribe(Unsubscribe),
    UnsubAck(UnsubAck),
    PingReq,
    PingResp,
    Disconnect(Disconnect),
    Auth(Auth),
}

impl Packet {
    pub fn packet_type(&self) -> PacketType {
        match self {
            Packet::Connect(_) => PacketType::Connect,
            Packet::ConnAck(_) => PacketType::ConnAck,
            Packet::Publish(_) => PacketType::Publish,
            Packet::PubAck(_) => PacketType::PubAck,
            Packet::PubRec(_) => PacketType::PubRec,
            Packet::PubRel(_) => PacketType::PubRel,
            Packet::PubComp(_) => PacketType::PubComp,
            Packet::Subscribe(_) => PacketType::Subscribe,
            Packet::SubAck(_) => PacketType::SubAck,
            Packet::Unsubscribe(_) => PacketType::Unsubscribe,
            Packet::UnsubAck(_) => PacketType::UnsubAck,
            Packet::PingReq => PacketType::PingReq,
            Packet::PingResp => PacketType::PingResp,
            Packet::Disconnect(_) => PacketType::Disconnect,
            Packet::Auth(_) => PacketType::Auth,
        }
    }
}
