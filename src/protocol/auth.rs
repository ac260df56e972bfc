//! AUTH (§3.15), 5.0 only: enhanced authentication exchange.

use super::{Properties, ReasonCode};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Auth {
    /// Success when absent on the wire.
    pub reason: ReasonCode,
    pub properties: Properties,
}

use super::header::write_fixed_header;
use super::primitives::{write_u8, Reader};
use super::properties::{self, PropertyContext};
use super::{DecodeError, PacketType};

/// Whether `reason` may appear in an AUTH (§3.15.2.1, MQTT-3.15.2-1).
pub fn valid_reason(reason: ReasonCode) -> bool {
    matches!(
        reason,
        ReasonCode::Success | ReasonCode::ContinueAuthentication | ReasonCode::ReAuthenticate
    )
}

/// Decodes an AUTH body (5.0 only; the codec rejects packet type 15 on 3.1.1 connections).
/// Remaining Length 0 is Success without properties (§3.15.2.1); a lone reason byte is accepted
/// as a reason without properties, as for DISCONNECT.
pub(crate) fn read(body: &[u8]) -> Result<Auth, DecodeError> {
    let packet_type = PacketType::Auth;
    let mut r = Reader::new(body);
    let mut reason = ReasonCode::Success;
    let mut properties = Properties::default();
    if !r.is_empty() {
        let code = r.u8("reason code")?;
        reason = ReasonCode::from_u8(code)
            .filter(|reason| valid_reason(*reason))
            .ok_or(DecodeError::InvalidReasonCode { packet_type, code })?;
        if !r.is_empty() {
            properties = properties::read(&mut r, PropertyContext::Auth)?;
        }
    }
    if !r.is_empty() {
        return Err(DecodeError::LengthMismatch {
            packet_type,
            remaining_length: body.len(),
        });
    }
    Ok(Auth { reason, properties })
}

/// Remaining Length: 0 for Success without properties, else reason and properties.
pub(crate) fn len(a: &Auth) -> usize {
    if a.reason == ReasonCode::Success
        && properties::is_empty_in(&a.properties, PropertyContext::Auth)
    {
        0
    } else {
        1 + properties::len(&a.properties, PropertyContext::Auth)
    }
}

pub(crate) fn write(out: &mut Vec<u8>, a: &Auth) {
    let remaining = len(a);
    write_fixed_header(out, PacketType::Auth, 0, remaining);
    if remaining > 0 {
        write_u8(out, a.reason.code());
        properties::write(out, &a.properties, PropertyContext::Auth);
    }
}
