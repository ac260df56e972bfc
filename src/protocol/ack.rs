//! PUBACK, PUBREC, PUBREL, PUBCOMP (§3.4 – §3.7): one shape, four packet types.

use super::{Properties, ReasonCode};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ack {
    pub packet_id: u16,
    /// Success when absent on the wire (remaining length 2, §3.4.2.1).
    pub reason: ReasonCode,
    pub properties: Properties,
}

use super::header::{write_fixed_header, FLAGS_0010};
use super::primitives::{write_u16, write_u8, Reader};
use super::properties::{self, PropertyContext};
use super::{DecodeError, PacketType, ProtocolVersion};

/// The property context of an acknowledgement packet type.
fn context(packet_type: PacketType) -> PropertyContext {
    match packet_type {
        PacketType::PubRec => PropertyContext::PubRec,
        PacketType::PubRel => PropertyContext::PubRel,
        PacketType::PubComp => PropertyContext::PubComp,
        _ => PropertyContext::PubAck,
    }
}

/// Whether `reason` may appear in an acknowledgement of `packet_type`: PUBACK and PUBREC use
/// §3.4.2.1 / §3.5.2.1 (MQTT-3.4.2-1, MQTT-3.5.2-1), PUBREL and PUBCOMP use §3.6.2.1 / §3.7.2.1.
pub fn valid_reason(packet_type: PacketType, reason: ReasonCode) -> bool {
    use ReasonCode as R;
    match packet_type {
        PacketType::PubRel | PacketType::PubComp => {
            matches!(reason, R::Success | R::PacketIdentifierNotFound)
        }
        _ => matches!(
            reason,
            R::Success
                | R::NoMatchingSubscribers
                | R::UnspecifiedError
                | R::ImplementationSpecificError
                | R::NotAuthorized
                | R::TopicNameInvalid
                | R::PacketIdentifierInUse
                | R::QuotaExceeded
                | R::PayloadFormatInvalid
        ),
    }
}

/// Decodes the body of a PUBACK, PUBREC, PUBREL or PUBCOMP (`packet_type`).
///
/// 3.1.1: exactly a non-zero Packet Identifier. 5.0: Remaining Length 2 means reason Success and
/// no properties, 3 means a reason and no properties (§3.4.2.1, §3.4.2.2.1). A reason code not
/// listed for the packet type is treated as a Malformed Packet: the spec names no code for it,
/// and a value outside the field's defined set cannot be parsed (by analogy with §2.2.2.2).
pub(crate) fn read(
    packet_type: PacketType,
    body: &[u8],
    version: ProtocolVersion,
) -> Result<Ack, DecodeError> {
    let mut r = Reader::new(body);
    let packet_id = r.u16("packet identifier")?;
    if packet_id == 0 {
        return Err(DecodeError::ZeroPacketId { packet_type });
    }
    let mut reason = ReasonCode::Success;
    let mut properties = Properties::default();
    if version.is_v5() && !r.is_empty() {
        let code = r.u8("reason code")?;
        reason = ReasonCode::from_u8(code)
            .filter(|r| valid_reason(packet_type, *r))
            .ok_or(DecodeError::InvalidReasonCode { packet_type, code })?;
        if !r.is_empty() {
            properties = properties::read(&mut r, context(packet_type))?;
        }
    }
    if !r.is_empty() {
        return Err(DecodeError::LengthMismatch {
            packet_type,
            remaining_length: body.len(),
        });
    }
    Ok(Ack {
        packet_id,
        reason,
        properties,
    })
}

/// Remaining Length; 5.0 uses the short forms when possible (2 for Success without properties,
/// 3 for another reason without properties).
pub(crate) fn len(packet_type: PacketType, a: &Ack, version: ProtocolVersion) -> usize {
    if !version.is_v5() {
        return 2;
    }
    let ctx = context(packet_type);
    if properties::is_empty_in(&a.properties, ctx) {
        if a.reason == ReasonCode::Success {
            2
        } else {
            3
        }
    } else {
        3 + properties::len(&a.properties, ctx)
    }
}

/// Appends the whole acknowledgement packet of `packet_type`.
pub(crate) fn write(out: &mut Vec<u8>, packet_type: PacketType, a: &Ack, version: ProtocolVersion) {
    let flags = if packet_type == PacketType::PubRel {
        FLAGS_0010
    } else {
        0
    };
    let remaining = len(packet_type, a, version);
    write_fixed_header(out, packet_type, flags, remaining);
    write_u16(out, a.packet_id);
    if remaining >= 3 {
        write_u8(out, a.reason.code());
    }
    if remaining > 3 {
        properties::write(out, &a.properties, context(packet_type));
    }
}
