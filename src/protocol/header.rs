//! The fixed header (§2.1): packet type, flags and Remaining Length.
//!
//! [`parse_fixed_header`] validates everything the fixed header alone decides: the packet type,
//! the flag bits (§2.1.3), the Remaining Length encoding (§1.5.5) and the size of the whole packet
//! against the Maximum Packet Size — all before any of the body has to be buffered.

use super::primitives::{parse_varint, write_varint, VarintError};
use super::{DecodeError, PacketType, QoS};

/// PUBLISH fixed-header flag bits (§3.3.1).
pub const PUBLISH_DUP: u8 = 0b1000;
pub const PUBLISH_QOS_MASK: u8 = 0b0110;
pub const PUBLISH_QOS_SHIFT: u8 = 1;
pub const PUBLISH_RETAIN: u8 = 0b0001;
/// The flags PUBREL, SUBSCRIBE and UNSUBSCRIBE must carry (§2.1.3).
pub const FLAGS_0010: u8 = 0b0010;

/// A parsed fixed header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FixedHeader {
    pub packet_type: PacketType,
    /// The low four bits of the first byte.
    pub flags: u8,
    pub remaining_length: u32,
    /// Bytes taken by the fixed header itself (2 to 5).
    pub header_len: usize,
}

impl FixedHeader {
    /// Header plus body.
    pub fn packet_len(&self) -> usize {
        self.header_len
            .saturating_add(usize::try_from(self.remaining_length).unwrap_or(usize::MAX))
    }
}

/// The flags a packet type must carry; `None` for PUBLISH, whose flags are data.
pub fn required_flags(packet_type: PacketType) -> Option<u8> {
    match packet_type {
        PacketType::Publish => None,
        PacketType::PubRel | PacketType::Subscribe | PacketType::Unsubscribe => Some(FLAGS_0010),
        _ => Some(0),
    }
}

fn check_flags(packet_type: PacketType, flags: u8) -> Result<(), DecodeError> {
    let invalid = DecodeError::InvalidFlags { packet_type, flags };
    match required_flags(packet_type) {
        Some(required) if flags != required => Err(invalid),
        Some(_) => Ok(()),
        None => {
            let qos = QoS::from_u8((flags & PUBLISH_QOS_MASK) >> PUBLISH_QOS_SHIFT).ok_or(
                // Both QoS bits set (MQTT-3.3.1-4).
                DecodeError::InvalidQos {
                    what: "PUBLISH fixed header",
                },
            )?;
            if qos == QoS::AtMostOnce && flags & PUBLISH_DUP != 0 {
                // DUP must be 0 for QoS 0 (MQTT-3.3.1-2).
                return Err(invalid);
            }
            Ok(())
        }
    }
}

/// Parses the fixed header at the start of `buf`.
///
/// `Ok(None)` when more bytes are needed to complete it. Errors as soon as the bytes seen so far
/// prove the packet invalid: reserved packet type 0, wrong flags, a Remaining Length that is not
/// a minimal Variable Byte Integer of at most 4 bytes, or a total packet size (header plus
/// Remaining Length) above `max_packet_size` ([`DecodeError::PacketTooLarge`]).
pub fn parse_fixed_header(
    buf: &[u8],
    max_packet_size: u32,
) -> Result<Option<FixedHeader>, DecodeError> {
    let Some(&first) = buf.first() else {
        return Ok(None);
    };
    let type_bits = first >> 4;
    let flags = first & 0x0F;
    let packet_type =
        PacketType::from_u8(type_bits).ok_or(DecodeError::InvalidPacketType(type_bits))?;
    check_flags(packet_type, flags)?;

    let rest = buf.get(1..).unwrap_or_default();
    let (remaining_length, len_bytes) = match parse_varint(rest) {
        Ok(Some(parsed)) => parsed,
        Ok(None) => return Ok(None),
        Err(VarintError::TooLong | VarintError::NotMinimal) => {
            return Err(DecodeError::MalformedVarint {
                what: "remaining length",
            })
        }
    };
    let header = FixedHeader {
        packet_type,
        flags,
        remaining_length,
        header_len: 1 + len_bytes,
    };
    let size = header.packet_len();
    if u64::try_from(size).unwrap_or(u64::MAX) > u64::from(max_packet_size) {
        return Err(DecodeError::PacketTooLarge {
            size,
            max: max_packet_size,
        });
    }
    Ok(Some(header))
}

/// Appends a fixed header.
pub fn write_fixed_header(
    out: &mut Vec<u8>,
    packet_type: PacketType,
    flags: u8,
    remaining_length: usize,
) {
    out.push(((packet_type as u8) << 4) | (flags & 0x0F));
    write_varint(out, u32::try_from(remaining_length).unwrap_or(u32::MAX));
}

/// Bytes of a whole packet with this remaining length.
pub fn packet_len(remaining_length: usize) -> usize {
    let rl = u32::try_from(remaining_length).unwrap_or(u32::MAX);
    1usize
        .saturating_add(super::primitives::varint_len(rl))
        .saturating_add(remaining_length)
}
