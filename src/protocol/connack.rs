//! CONNACK (§3.2): the server's answer to CONNECT, with its capabilities as properties.

use super::{Properties, ReasonCode};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnAck {
    pub session_present: bool,
    /// Written as a 3.1.1 return code for 3.1.1 clients ([`super::ConnectReturnCode::from_reason`]).
    pub reason: ReasonCode,
    pub properties: Properties,
}

use super::header::write_fixed_header;
use super::primitives::{write_u8, Reader};
use super::properties::{self, PropertyContext};
use super::{ConnectReturnCode, DecodeError, PacketType, ProtocolVersion};

/// Connect Acknowledge Flags: bit 0 is Session Present, bits 7–1 are reserved (MQTT-3.2.2-1).
const SESSION_PRESENT: u8 = 0b0000_0001;
const RESERVED_FLAGS: u8 = 0b1111_1110;

/// Whether `reason` may appear in a 5.0 CONNACK (§3.2.2.2).
pub fn valid_reason(reason: ReasonCode) -> bool {
    use ReasonCode as R;
    matches!(
        reason,
        R::Success
            | R::UnspecifiedError
            | R::MalformedPacket
            | R::ProtocolError
            | R::ImplementationSpecificError
            | R::UnsupportedProtocolVersion
            | R::ClientIdentifierNotValid
            | R::BadUserNameOrPassword
            | R::NotAuthorized
            | R::ServerUnavailable
            | R::ServerBusy
            | R::Banned
            | R::BadAuthenticationMethod
            | R::TopicNameInvalid
            | R::PacketTooLarge
            | R::QuotaExceeded
            | R::PayloadFormatInvalid
            | R::RetainNotSupported
            | R::QosNotSupported
            | R::UseAnotherServer
            | R::ServerMoved
            | R::ConnectionRateExceeded
    )
}

/// Decodes a CONNACK body. A 3.1.1 return code is decoded to its 5.0 reason code
/// ([`ConnectReturnCode::to_reason`]).
pub(crate) fn read(body: &[u8], version: ProtocolVersion) -> Result<ConnAck, DecodeError> {
    let mut r = Reader::new(body);
    let flags = r.u8("connect acknowledge flags")?;
    if flags & RESERVED_FLAGS != 0 {
        return Err(DecodeError::ReservedBitSet {
            what: "CONNACK flags",
        });
    }
    let code = r.u8("connect reason code")?;
    let invalid = DecodeError::InvalidReasonCode {
        packet_type: PacketType::ConnAck,
        code,
    };
    let (reason, properties) = if version.is_v5() {
        let reason = ReasonCode::from_u8(code)
            .filter(|r| valid_reason(*r))
            .ok_or(invalid)?;
        (reason, properties::read(&mut r, PropertyContext::ConnAck)?)
    } else {
        let rc = ConnectReturnCode::from_u8(code).ok_or(invalid)?;
        (rc.to_reason(), Properties::default())
    };
    if !r.is_empty() {
        return Err(DecodeError::LengthMismatch {
            packet_type: PacketType::ConnAck,
            remaining_length: body.len(),
        });
    }
    Ok(ConnAck {
        session_present: flags & SESSION_PRESENT != 0,
        reason,
        properties,
    })
}

pub(crate) fn len(c: &ConnAck, version: ProtocolVersion) -> usize {
    if version.is_v5() {
        2 + properties::len(&c.properties, PropertyContext::ConnAck)
    } else {
        2
    }
}

/// Appends the whole CONNACK; for 3.1.1 the reason is written as
/// [`ConnectReturnCode::from_reason`].
pub(crate) fn write(out: &mut Vec<u8>, c: &ConnAck, version: ProtocolVersion) {
    write_fixed_header(out, PacketType::ConnAck, 0, len(c, version));
    write_u8(
        out,
        if c.session_present {
            SESSION_PRESENT
        } else {
            0
        },
    );
    if version.is_v5() {
        write_u8(out, c.reason.code());
        properties::write(out, &c.properties, PropertyContext::ConnAck);
    } else {
        write_u8(out, ConnectReturnCode::from_reason(c.reason) as u8);
    }
}
