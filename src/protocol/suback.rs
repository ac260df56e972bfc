//! SUBACK (§3.9): one reason code per filter, in order.

use super::{Properties, ReasonCode};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubAck {
    pub packet_id: u16,
    pub properties: Properties,
    /// 3.1.1 writes GrantedQos0/1/2 as 0x00/0x01/0x02 and every failure as 0x80.
    pub reasons: Vec<ReasonCode>,
}

use super::header::write_fixed_header;
use super::primitives::{write_u16, write_u8, Reader};
use super::properties::{self, PropertyContext};
use super::{DecodeError, PacketType, ProtocolVersion};

/// Whether `reason` may appear in a 5.0 SUBACK (§3.9.3).
pub fn valid_reason(reason: ReasonCode) -> bool {
    use ReasonCode as R;
    matches!(
        reason,
        R::Success
            | R::GrantedQos1
            | R::GrantedQos2
            | R::UnspecifiedError
            | R::ImplementationSpecificError
            | R::NotAuthorized
            | R::TopicFilterInvalid
            | R::PacketIdentifierInUse
            | R::QuotaExceeded
            | R::SharedSubscriptionsNotSupported
            | R::SubscriptionIdentifiersNotSupported
            | R::WildcardSubscriptionsNotSupported
    )
}

/// The 3.1.1 return code for a reason: granted QoS as is, every failure as 0x80 (3.1.1 §3.9.3).
fn v311_code(reason: ReasonCode) -> u8 {
    match reason {
        ReasonCode::Success | ReasonCode::GrantedQos1 | ReasonCode::GrantedQos2 => reason.code(),
        _ => ReasonCode::UnspecifiedError.code(),
    }
}

pub(crate) fn read(body: &[u8], version: ProtocolVersion) -> Result<SubAck, DecodeError> {
    let packet_type = PacketType::SubAck;
    let mut r = Reader::new(body);
    let packet_id = r.u16("packet identifier")?;
    if packet_id == 0 {
        return Err(DecodeError::ZeroPacketId { packet_type });
    }
    let properties = if version.is_v5() {
        properties::read(&mut r, PropertyContext::SubAck)?
    } else {
        Properties::default()
    };
    let mut reasons = Vec::with_capacity(r.remaining());
    while !r.is_empty() {
        let code = r.u8("reason code")?;
        let reason = ReasonCode::from_u8(code)
            .filter(|reason| {
                if version.is_v5() {
                    valid_reason(*reason)
                } else {
                    v311_code(*reason) == code
                }
            })
            .ok_or(DecodeError::InvalidReasonCode { packet_type, code })?;
        reasons.push(reason);
    }
    Ok(SubAck {
        packet_id,
        properties,
        reasons,
    })
}

pub(crate) fn len(s: &SubAck, version: ProtocolVersion) -> usize {
    let mut n = 2 + s.reasons.len();
    if version.is_v5() {
        n += properties::len(&s.properties, PropertyContext::SubAck);
    }
    n
}

pub(crate) fn write(out: &mut Vec<u8>, s: &SubAck, version: ProtocolVersion) {
    write_fixed_header(out, PacketType::SubAck, 0, len(s, version));
    write_u16(out, s.packet_id);
    if version.is_v5() {
        properties::write(out, &s.properties, PropertyContext::SubAck);
        for reason in &s.reasons {
            write_u8(out, reason.code());
        }
    } else {
        for reason in &s.reasons {
            write_u8(out, v311_code(*reason));
        }
    }
}
