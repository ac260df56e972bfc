//! DISCONNECT from the client (§3.14): ends the connection; may change the Session Expiry
//! Interval, but never from 0 to non-zero (MQTT-3.14.2-2).

use super::Flow;
use crate::broker::connection::Client;
use crate::broker::error::ConnError;
use crate::protocol::{Disconnect, ReasonCode};

pub fn handle(client: &mut Client, d: Disconnect) -> Result<Flow, ConnError> {
    if let Some(expiry) = d.properties.session_expiry_interval {
        if client.connect_expiry == 0 && expiry != 0 {
            return Err(ConnError::protocol(
                ReasonCode::ProtocolError,
                "DISCONNECT set a Session Expiry Interval after CONNECT set 0 (MQTT-3.14.2-2)",
            ));
        }
        let capped = client.broker.cap_session_expiry(expiry);
        client.broker.set_session_expiry(&client.session, capped);
    }
    Ok(Flow::Disconnect(d.reason))
}
