//! DISCONNECT (§3.14). In 3.1.1 it has no variable header.

use super::{Properties, ReasonCode};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Disconnect {
    /// Success (Normal disconnection) when absent on the wire.
    pub reason: ReasonCode,
    pub properties: Properties,
}

use super::header::write_fixed_header;
use super::primitives::{write_u8, Reader};
use super::properties::{self, PropertyContext};
use super::{DecodeError, PacketType, ProtocolVersion};

/// Whether `reason` may appear in a DISCONNECT (§3.14.2.1).
pub fn valid_reason(reason: ReasonCode) -> bool {
    use ReasonCode as R;
    matches!(
        reason,
        R::Success
            | R::DisconnectWithWillMessage
            | R::UnspecifiedError
            | R::MalformedPacket
            | R::ProtocolError
            | R::ImplementationSpecificError
            | R::NotAuthorized
            | R::ServerBusy
            | R::ServerShuttingDown
            | R::KeepAliveTimeout
            | R::SessionTakenOver
            | R::TopicFilterInvalid
            | R::TopicNameInvalid
            | R::ReceiveMaximumExceeded
            | R::TopicAliasInvalid
            | R::PacketTooLarge
            | R::MessageRateTooHigh
            | R::QuotaExceeded
            | R::AdministrativeAction
            | R::PayloadFormatInvalid
            | R::RetainNotSupported
            | R::QosNotSupported
            | R::UseAnotherServer
            | R::ServerMoved
            | R::SharedSubscriptionsNotSupported
            | R::ConnectionRateExceeded
            | R::MaximumConnectTime
            | R::SubscriptionIdentifiersNotSupported
            | R::WildcardSubscriptionsNotSupported
    )
}

/// Decodes a DISCONNECT body. 5.0: Remaining Length 0 is Normal disconnection, 1 is a reason
/// without properties (§3.14.2.1, §3.14.2.2.1). 3.1.1: the Remaining Length must be 0.
pub(crate) fn read(body: &[u8], version: ProtocolVersion) -> Result<Disconnect, DecodeError> {
    let packet_type = PacketType::Disconnect;
    let mut r = Reader::new(body);
    let mut reason = ReasonCode::Success;
    let mut properties = Properties::default();
    if version.is_v5() && !r.is_empty() {
        let code = r.u8("reason code")?;
        reason = ReasonCode::from_u8(code)
            .filter(|reason| valid_reason(*reason))
            .ok_or(DecodeError::InvalidReasonCode { packet_type, code })?;
        if !r.is_empty() {
            properties = properties::read(&mut r, PropertyContext::Disconnect)?;
        }
    }
    if !r.is_empty() {
        return Err(DecodeError::LengthMismatch {
            packet_type,
            remaining_length: body.len(),
        });
    }
    Ok(Disconnect { reason, properties })
}

/// Remaining Length: 0 for Normal disconnection without properties, else the reason and the
/// properties, their Property Length always written (2 at least); always 0 in 3.1.1.
///
/// Remaining Length 1 (reason alone, §3.14.2.2.1) is valid too, but some clients read the
/// reason only when a Property Length follows it, so it is never sent.
pub(crate) fn len(d: &Disconnect, version: ProtocolVersion) -> usize {
    if !version.is_v5() {
        return 0;
    }
    if d.reason == ReasonCode::Success
        && properties::is_empty_in(&d.properties, PropertyContext::Disconnect)
    {
        0
    } else {
        1 + properties::len(&d.properties, PropertyContext::Disconnect)
    }
}

pub(crate) fn write(out: &mut Vec<u8>, d: &Disconnect, version: ProtocolVersion) {
    let remaining = len(d, version);
    write_fixed_header(out, PacketType::Disconnect, 0, remaining);
    if remaining > 0 {
        write_u8(out, d.reason.code());
        properties::write(out, &d.properties, PropertyContext::Disconnect);
    }
}
