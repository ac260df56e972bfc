//! PUBLISH (§3.3), owned for decoding and borrowed ([`PublishOut`]) for encoding one shared
//! message to many subscribers without copying its payload.

use super::{Properties, QoS};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Publish {
    pub dup: bool,
    pub qos: QoS,
    pub retain: bool,
    /// Empty in 5.0 when a Topic Alias stands for it.
    pub topic: String,
    /// 0 for QoS 0 (no packet identifier on the wire); never 0 for QoS 1 and 2.
    pub packet_id: u16,
    pub properties: Properties,
    pub payload: Vec<u8>,
}

/// A PUBLISH to encode, borrowing the shared message. Three properties vary per subscriber and
/// replace the ones in `properties` when written.
#[derive(Debug, Clone, Copy)]
pub struct PublishOut<'a> {
    pub dup: bool,
    pub qos: QoS,
    pub retain: bool,
    /// Empty when `topic_alias` names an alias already sent on this connection.
    pub topic: &'a str,
    pub packet_id: u16,
    /// Written as they are, except Message Expiry Interval, Topic Alias and Subscription
    /// Identifiers, which are taken from the fields below instead.
    pub properties: &'a Properties,
    pub message_expiry_interval: Option<u32>,
    pub topic_alias: Option<u16>,
    pub subscription_identifiers: &'a [u32],
    pub payload: &'a [u8],
}

use super::header::{
    packet_len, write_fixed_header, PUBLISH_DUP, PUBLISH_QOS_MASK, PUBLISH_QOS_SHIFT,
    PUBLISH_RETAIN,
};
use super::primitives::{string_len, varint_len, write_string, write_u16, write_varint, Reader};
use super::properties::{self, PropertyContext, PublishOverrides};
use super::{topic, DecodeError, PacketType, ProtocolVersion};

/// Decodes a PUBLISH from its fixed-header flags and body.
///
/// Checks: non-zero Packet Identifier when QoS > 0 (MQTT-2.2.1-3, answered as a Protocol Error),
/// a UTF-8 topic without wildcards (MQTT-3.3.2-2, 0x90), a zero-length topic only in 5.0 together
/// with a Topic Alias (§3.3.2.1, else Protocol Error). The payload is the rest of the packet.
///
/// Not checked here (the broker's job): a Payload Format Indicator of 1 with a payload that is not
/// UTF-8 (0x99, §3.3.2.3.2 lets the receiver choose whether to validate), Topic Alias 0 or above
/// the maximum (0x94), a Response Topic with wildcards.
pub(crate) fn read(
    flags: u8,
    body: &[u8],
    version: ProtocolVersion,
) -> Result<Publish, DecodeError> {
    let qos = QoS::from_u8((flags & PUBLISH_QOS_MASK) >> PUBLISH_QOS_SHIFT).ok_or(
        DecodeError::InvalidQos {
            what: "PUBLISH fixed header",
        },
    )?;
    let mut r = Reader::new(body);
    let topic_name = r.string("topic name")?;
    let packet_id = if qos == QoS::AtMostOnce {
        0
    } else {
        let id = r.u16("packet identifier")?;
        if id == 0 {
            return Err(DecodeError::ZeroPacketId {
                packet_type: PacketType::Publish,
            });
        }
        id
    };
    let properties = if version.is_v5() {
        properties::read(&mut r, PropertyContext::Publish)?
    } else {
        Properties::default()
    };
    if topic_name.is_empty() {
        if !(version.is_v5() && properties.topic_alias.is_some()) {
            return Err(DecodeError::EmptyTopicName);
        }
    } else if topic::has_wildcard(topic_name) {
        return Err(DecodeError::WildcardInTopicName);
    }
    Ok(Publish {
        dup: flags & PUBLISH_DUP != 0,
        qos,
        retain: flags & PUBLISH_RETAIN != 0,
        topic: topic_name.to_owned(),
        packet_id,
        properties,
        payload: r.rest().to_vec(),
    })
}

/// The fields of a PUBLISH to encode, shared by [`Publish`] and [`PublishOut`].
struct Parts<'a> {
    dup: bool,
    qos: QoS,
    retain: bool,
    topic: &'a str,
    packet_id: u16,
    properties: &'a Properties,
    overrides: Option<PublishOverrides<'a>>,
    payload: &'a [u8],
}

impl Parts<'_> {
    fn flags(&self) -> u8 {
        let mut flags = (self.qos as u8) << PUBLISH_QOS_SHIFT;
        // DUP must be 0 for QoS 0 (MQTT-3.3.1-2): never written.
        if self.dup && self.qos != QoS::AtMostOnce {
            flags |= PUBLISH_DUP;
        }
        if self.retain {
            flags |= PUBLISH_RETAIN;
        }
        flags
    }

    /// (remaining length, properties body length) — the latter only meaningful in 5.0.
    fn lengths(&self, version: ProtocolVersion) -> (usize, usize) {
        let mut n = string_len(self.topic);
        if self.qos != QoS::AtMostOnce {
            n += 2;
        }
        let mut props = 0;
        if version.is_v5() {
            props = properties::body_len(
                self.properties,
                PropertyContext::Publish,
                self.overrides.as_ref(),
            );
            n += varint_len(u32::try_from(props).unwrap_or(u32::MAX)) + props;
        }
        (n.saturating_add(self.payload.len()), props)
    }

    fn write(&self, out: &mut Vec<u8>, version: ProtocolVersion) {
        let (remaining, props) = self.lengths(version);
        out.reserve(packet_len(remaining));
        write_fixed_header(out, PacketType::Publish, self.flags(), remaining);
        write_string(out, self.topic);
        if self.qos != QoS::AtMostOnce {
            write_u16(out, self.packet_id);
        }
        if version.is_v5() {
            write_varint(out, u32::try_from(props).unwrap_or(u32::MAX));
            properties::write_body(
                out,
                self.properties,
                PropertyContext::Publish,
                self.overrides.as_ref(),
            );
        }
        out.extend_from_slice(self.payload);
    }
}

impl<'a> From<&'a Publish> for Parts<'a> {
    fn from(p: &'a Publish) -> Parts<'a> {
        Parts {
            dup: p.dup,
            qos: p.qos,
            retain: p.retain,
            topic: &p.topic,
            packet_id: p.packet_id,
            properties: &p.properties,
            overrides: None,
            payload: &p.payload,
        }
    }
}

impl<'a> From<&PublishOut<'a>> for Parts<'a> {
    fn from(p: &PublishOut<'a>) -> Parts<'a> {
        Parts {
            dup: p.dup,
            qos: p.qos,
            retain: p.retain,
            topic: p.topic,
            packet_id: p.packet_id,
            properties: p.properties,
            overrides: Some(PublishOverrides {
                message_expiry_interval: p.message_expiry_interval,
                topic_alias: p.topic_alias,
                subscription_identifiers: p.subscription_identifiers,
            }),
            payload: p.payload,
        }
    }
}

/// Remaining Length of a PUBLISH.
pub(crate) fn len(p: &Publish, version: ProtocolVersion) -> usize {
    Parts::from(p).lengths(version).0
}

/// Appends the whole PUBLISH packet. The DUP flag is written only for QoS > 0 and the Packet
/// Identifier only for QoS > 0; 3.1.1 omits the properties.
pub(crate) fn write(out: &mut Vec<u8>, p: &Publish, version: ProtocolVersion) {
    Parts::from(p).write(out, version);
}

/// Appends a PUBLISH for one subscriber: the shared message with this subscriber's Message Expiry
/// Interval, Topic Alias and Subscription Identifiers. Allocates nothing beyond growing `out`
/// (reserved once for the whole packet).
pub fn write_out(out: &mut Vec<u8>, version: ProtocolVersion, p: &PublishOut<'_>) {
    Parts::from(p).write(out, version);
}

/// Total bytes (fixed header included) [`write_out`] appends for `p`.
pub fn out_len(version: ProtocolVersion, p: &PublishOut<'_>) -> usize {
    packet_len(Parts::from(p).lengths(version).0)
}
