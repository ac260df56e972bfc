//! UNSUBSCRIBE (§3.10).

use super::Properties;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unsubscribe {
    pub packet_id: u16,
    pub properties: Properties,
    /// At least one (MQTT-3.10.3-2).
    pub filters: Vec<String>,
}

use super::header::{write_fixed_header, FLAGS_0010};
use super::primitives::{string_len, write_string, write_u16, Reader};
use super::properties::{self, PropertyContext};
use super::{DecodeError, PacketType, ProtocolVersion};

/// Decodes an UNSUBSCRIBE body: non-zero Packet Identifier, properties (5.0), then at least one
/// non-empty topic filter (MQTT-3.10.3-2: none is a Protocol Error; MQTT-4.7.3-1).
pub(crate) fn read(body: &[u8], version: ProtocolVersion) -> Result<Unsubscribe, DecodeError> {
    let packet_type = PacketType::Unsubscribe;
    let mut r = Reader::new(body);
    let packet_id = r.u16("packet identifier")?;
    if packet_id == 0 {
        return Err(DecodeError::ZeroPacketId { packet_type });
    }
    let properties = if version.is_v5() {
        properties::read(&mut r, PropertyContext::Unsubscribe)?
    } else {
        Properties::default()
    };
    let mut filters = Vec::new();
    while !r.is_empty() {
        let filter = r.string("topic filter")?;
        if filter.is_empty() {
            return Err(DecodeError::EmptyTopicFilter { packet_type });
        }
        filters.push(filter.to_owned());
    }
    if filters.is_empty() {
        return Err(DecodeError::NoTopicFilters { packet_type });
    }
    Ok(Unsubscribe {
        packet_id,
        properties,
        filters,
    })
}

pub(crate) fn len(u: &Unsubscribe, version: ProtocolVersion) -> usize {
    let mut n = 2;
    if version.is_v5() {
        n += properties::len(&u.properties, PropertyContext::Unsubscribe);
    }
    n + u.filters.iter().map(|f| string_len(f)).sum::<usize>()
}

pub(crate) fn write(out: &mut Vec<u8>, u: &Unsubscribe, version: ProtocolVersion) {
    write_fixed_header(out, PacketType::Unsubscribe, FLAGS_0010, len(u, version));
    write_u16(out, u.packet_id);
    if version.is_v5() {
        properties::write(out, &u.properties, PropertyContext::Unsubscribe);
    }
    for f in &u.filters {
        write_string(out, f);
    }
}
