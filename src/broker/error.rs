//! Why a connection ends, and the one place that maps it to a reason code (MQTT 5.0 §4.13).
//!
//! Every handler returns `Result<_, ConnError>`; the connection loop logs the error once and, for
//! 5.0 clients, sends DISCONNECT with [`ConnError::reason_code`] before closing. 3.1.1 clients are
//! simply closed (3.1.1 has no server DISCONNECT).

use std::fmt;
use std::io;
use std::time::Duration;

use crate::protocol::{DecodeError, ReasonCode};

#[derive(Debug)]
pub enum ConnError {
    /// The socket failed or was reset.
    Io(io::Error),
    /// The client closed the connection without DISCONNECT.
    Closed,
    /// The bytes were not a valid packet.
    Decode(DecodeError),
    /// A valid packet broke a protocol rule; `detail` says which, for the log and the Reason
    /// String.
    Protocol { reason: ReasonCode, detail: String },
    /// No packet within 1.5 × Keep Alive (MQTT-3.1.2-22).
    KeepAliveTimeout,
    /// Closed by the broker: takeover, server stop or the control page.
    ClosedByServer,
    /// The client was owed more than the outbox's bound and took nothing of it for the grace
    /// (see [`outbox`](super::outbox)): `unsent` bytes, nothing taken for `idle`.
    NotReading { unsent: usize, idle: Duration },
    /// A 3.1.1 client's QoS 1/2 message could not be stored (3.1.1 has no failure ack): closed
    /// without acknowledging it, so that the client sends it again.
    NotStored(String),
}

impl ConnError {
    pub fn protocol(reason: ReasonCode, detail: impl Into<String>) -> ConnError {
        ConnError::Protocol {
            reason,
            detail: detail.into(),
        }
    }

    /// The DISCONNECT reason code to send a 5.0 client; `None` when nothing should be sent.
    pub fn reason_code(&self) -> Option<ReasonCode> {
        match self {
            ConnError::Io(_)
            | ConnError::Closed
            | ConnError::ClosedByServer
            | ConnError::NotStored(_) => None,
            ConnError::Decode(e) => Some(e.reason_code()),
            ConnError::Protocol { reason, .. } => Some(*reason),
            ConnError::KeepAliveTimeout => Some(ReasonCode::KeepAliveTimeout),
            // "An implementation or administrative imposed limit has been exceeded" (§3.14.2.1):
            // the bound on what a connection may be owed. Likely never read, but it says why.
            ConnError::NotReading { .. } => Some(ReasonCode::QuotaExceeded),
        }
    }
}

impl fmt::Display for ConnError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConnError::Io(e) => write!(f, "socket error: {e}"),
            ConnError::Closed => write!(f, "connection closed by client"),
            ConnError::Decode(e) => write!(f, "bad packet: {e}"),
            ConnError::Protocol { reason, detail } => {
                write!(f, "protocol error ({reason:?}): {detail}")
            }
            ConnError::KeepAliveTimeout => write!(f, "keep alive timeout"),
            ConnError::ClosedByServer => write!(f, "closed by server"),
            ConnError::NotReading { unsent, idle } => write!(
                f,
                "not reading ({unsent} bytes unsent for {}s)",
                idle.as_secs()
            ),
            ConnError::NotStored(why) => write!(
                f,
                "a QoS 1/2 message could not be stored ({why}); closed without acknowledging it"
            ),
        }
    }
}

impl std::error::Error for ConnError {}

impl From<DecodeError> for ConnError {
    fn from(e: DecodeError) -> Self {
        ConnError::Decode(e)
    }
}

impl From<io::Error> for ConnError {
    fn from(e: io::Error) -> Self {
        ConnError::Io(e)
    }
}
