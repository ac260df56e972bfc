//! UNSUBACK (§3.11).

use super::{Properties, ReasonCode};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnsubAck {
    pub packet_id: u16,
    pub properties: Properties,
    /// 5.0 only; a 3.1.1 UNSUBACK has no payload, so these are not written and decode empty.
    pub reasons: Vec<ReasonCode>,
}

use super::header::write_fixed_header;
use super::primitives::{write_u16, write_u8, Reader};
use super::properties::{self, PropertyContext};
use super::{DecodeError, PacketType, ProtocolVersion};

/// Whether `reason` may appear in a 5.0 UNSUBACK (§3.11.3).
pub fn valid_reason(reason: ReasonCode) -> bool {
    use ReasonCode as R;
    matches!(
        reason,
        R::Success
            | R::NoSubscriptionExisted
            | R::UnspecifiedError
            | R::ImplementationSpecificError
            | R::NotAuthorized
            | R::TopicFilterInvalid
            | R::PacketIdentifierInUse
    )
}

/// Decodes an UNSUBACK body; a 3.1.1 UNSUBACK is exactly a Packet Identifier.
pub(crate) fn read(body: &[u8], version: ProtocolVersion) -> Result<UnsubAck, DecodeError> {
    let packet_type = PacketType::UnsubAck;
    let mut r = Reader::new(body);
    let packet_id = r.u16("packet identifier")?;
    if packet_id == 0 {
        return Err(DecodeError::ZeroPacketId { packet_type });
    }
    let mut properties = Properties::default();
    let mut reasons = Vec::new();
    if version.is_v5() {
        properties = properties::read(&mut r, PropertyContext::UnsubAck)?;
        reasons.reserve(r.remaining());
        while !r.is_empty() {
            let code = r.u8("reason code")?;
            let reason = ReasonCode::from_u8(code)
                .filter(|reason| valid_reason(*reason))
                .ok_or(DecodeError::InvalidReasonCode { packet_type, code })?;
            reasons.push(reason);
        }
    } else if !r.is_empty() {
        return Err(DecodeError::LengthMismatch {
            packet_type,
            remaining_length: body.len(),
        });
    }
    Ok(UnsubAck {
        packet_id,
        properties,
        reasons,
    })
}

pub(crate) fn len(u: &UnsubAck, version: ProtocolVersion) -> usize {
    if version.is_v5() {
        2 + properties::len(&u.properties, PropertyContext::UnsubAck) + u.reasons.len()
    } else {
        2
    }
}

pub(crate) fn write(out: &mut Vec<u8>, u: &UnsubAck, version: ProtocolVersion) {
    write_fixed_header(out, PacketType::UnsubAck, 0, len(u, version));
    write_u16(out, u.packet_id);
    if version.is_v5() {
        properties::write(out, &u.properties, PropertyContext::UnsubAck);
        for reason in &u.reasons {
            write_u8(out, reason.code());
        }
    }
}
