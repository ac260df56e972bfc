//! SUBSCRIBE (§3.8) and its subscription options.

use super::{Properties, QoS};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscribe {
    pub packet_id: u16,
    pub properties: Properties,
    /// At least one (§3.8.3-2 / MQTT-3.8.3-3).
    pub filters: Vec<TopicSubscription>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicSubscription {
    pub filter: String,
    pub options: SubscriptionOptions,
}

/// The Subscription Options byte (§3.8.3.1). For 3.1.1 only `qos` is on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SubscriptionOptions {
    pub qos: QoS,
    pub no_local: bool,
    pub retain_as_published: bool,
    pub retain_handling: RetainHandling,
}

/// When retained messages are sent for a new subscription (§3.8.3.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[repr(u8)]
pub enum RetainHandling {
    #[default]
    SendAtSubscribe = 0,
    SendAtSubscribeIfNew = 1,
    DoNotSend = 2,
}

use super::header::{write_fixed_header, FLAGS_0010};
use super::primitives::{string_len, write_string, write_u16, write_u8, Reader};
use super::properties::{self, PropertyContext};
use super::{DecodeError, PacketType, ProtocolVersion};

/// Subscription Options bits (§3.8.3.1).
const OPT_QOS_MASK: u8 = 0b0000_0011;
const OPT_NO_LOCAL: u8 = 0b0000_0100;
const OPT_RETAIN_AS_PUBLISHED: u8 = 0b0000_1000;
const OPT_RETAIN_HANDLING_MASK: u8 = 0b0011_0000;
const OPT_RETAIN_HANDLING_SHIFT: u8 = 4;
const OPT_RESERVED_V5: u8 = 0b1100_0000;
/// In 3.1.1 only the two QoS bits of the Requested QoS byte are defined (3.1.1 §3.8.3).
const OPT_RESERVED_V311: u8 = !OPT_QOS_MASK;

impl RetainHandling {
    pub fn from_u8(v: u8) -> Option<RetainHandling> {
        match v {
            0 => Some(RetainHandling::SendAtSubscribe),
            1 => Some(RetainHandling::SendAtSubscribeIfNew),
            2 => Some(RetainHandling::DoNotSend),
            _ => None,
        }
    }
}

impl SubscriptionOptions {
    /// Decodes the options byte. 5.0: reserved bits 7–6 must be 0 (Malformed, MQTT-3.8.3-5);
    /// Maximum QoS 3 and Retain Handling 3 are Protocol Errors (§3.8.3.1). 3.1.1: bits 7–2 must be
    /// 0 and QoS 3 is malformed (3.1.1 MQTT-3.8.3-4).
    pub fn from_byte(b: u8, version: ProtocolVersion) -> Result<SubscriptionOptions, DecodeError> {
        if !version.is_v5() {
            if b & OPT_RESERVED_V311 != 0 {
                return Err(DecodeError::ReservedBitSet {
                    what: "SUBSCRIBE requested QoS",
                });
            }
            let qos = QoS::from_u8(b & OPT_QOS_MASK).ok_or(DecodeError::InvalidQos {
                what: "SUBSCRIBE requested QoS",
            })?;
            return Ok(SubscriptionOptions {
                qos,
                ..SubscriptionOptions::default()
            });
        }
        if b & OPT_RESERVED_V5 != 0 {
            return Err(DecodeError::ReservedBitSet {
                what: "Subscription Options",
            });
        }
        let qos = QoS::from_u8(b & OPT_QOS_MASK).ok_or(DecodeError::InvalidSubscriptionQos)?;
        let retain_handling =
            RetainHandling::from_u8((b & OPT_RETAIN_HANDLING_MASK) >> OPT_RETAIN_HANDLING_SHIFT)
                .ok_or(DecodeError::InvalidRetainHandling)?;
        Ok(SubscriptionOptions {
            qos,
            no_local: b & OPT_NO_LOCAL != 0,
            retain_as_published: b & OPT_RETAIN_AS_PUBLISHED != 0,
            retain_handling,
        })
    }

    /// The options byte; 3.1.1 writes only the QoS.
    pub fn to_byte(self, version: ProtocolVersion) -> u8 {
        let mut b = self.qos as u8;
        if version.is_v5() {
            if self.no_local {
                b |= OPT_NO_LOCAL;
            }
            if self.retain_as_published {
                b |= OPT_RETAIN_AS_PUBLISHED;
            }
            b |= (self.retain_handling as u8) << OPT_RETAIN_HANDLING_SHIFT;
        }
        b
    }
}

/// Decodes a SUBSCRIBE body: non-zero Packet Identifier (MQTT-2.2.1-3), properties (5.0), then at
/// least one (filter, options) pair (MQTT-3.8.3-2; none is a Protocol Error). Filters must be
/// non-empty UTF-8 strings (MQTT-4.7.3-1); wildcard placement and `$share` syntax are left to the
/// broker, which answers 0x8F per filter.
pub(crate) fn read(body: &[u8], version: ProtocolVersion) -> Result<Subscribe, DecodeError> {
    let packet_type = PacketType::Subscribe;
    let mut r = Reader::new(body);
    let packet_id = r.u16("packet identifier")?;
    if packet_id == 0 {
        return Err(DecodeError::ZeroPacketId { packet_type });
    }
    let properties = if version.is_v5() {
        properties::read(&mut r, PropertyContext::Subscribe)?
    } else {
        Properties::default()
    };
    let mut filters = Vec::new();
    while !r.is_empty() {
        let filter = r.string("topic filter")?;
        if filter.is_empty() {
            return Err(DecodeError::EmptyTopicFilter { packet_type });
        }
        let options = SubscriptionOptions::from_byte(r.u8("subscription options")?, version)?;
        filters.push(TopicSubscription {
            filter: filter.to_owned(),
            options,
        });
    }
    if filters.is_empty() {
        return Err(DecodeError::NoTopicFilters { packet_type });
    }
    Ok(Subscribe {
        packet_id,
        properties,
        filters,
    })
}

pub(crate) fn len(s: &Subscribe, version: ProtocolVersion) -> usize {
    let mut n = 2;
    if version.is_v5() {
        n += properties::len(&s.properties, PropertyContext::Subscribe);
    }
    for f in &s.filters {
        n += string_len(&f.filter) + 1;
    }
    n
}

pub(crate) fn write(out: &mut Vec<u8>, s: &Subscribe, version: ProtocolVersion) {
    write_fixed_header(out, PacketType::Subscribe, FLAGS_0010, len(s, version));
    write_u16(out, s.packet_id);
    if version.is_v5() {
        properties::write(out, &s.properties, PropertyContext::Subscribe);
    }
    for f in &s.filters {
        write_string(out, &f.filter);
        write_u8(out, f.options.to_byte(version));
    }
}
