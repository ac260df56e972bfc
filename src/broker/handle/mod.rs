//! Inbound packet handlers, one file per packet kind, and the dispatcher that routes a decoded
//! packet to its handler. Handlers run on the client's reader thread.

pub mod ack;
pub mod connect;
pub mod disconnect;
pub mod publish;
pub mod subscribe;
pub mod unsubscribe;

use super::connection::Client;
use super::error::ConnError;
use crate::protocol::{Packet, ReasonCode};

/// What the connection loop does after a packet.
#[derive(Debug, PartialEq, Eq)]
pub enum Flow {
    Continue,
    /// The client sent DISCONNECT with this reason.
    Disconnect(ReasonCode),
}

/// Hands a packet from a connected client to its handler. Packets only a server sends, and a
/// second CONNECT (MQTT-3.1.0-2), are protocol errors.
pub fn dispatch(client: &mut Client, packet: Packet) -> Result<Flow, ConnError> {
    match packet {
        Packet::Publish(p) => publish::handle(client, p),
        Packet::PubAck(a) => ack::puback(client, a),
        Packet::PubRec(a) => ack::pubrec(client, a),
        Packet::PubRel(a) => ack::pubrel(client, a),
        Packet::PubComp(a) => ack::pubcomp(client, a),
        Packet::Subscribe(s) => subscribe::handle(client, s),
        Packet::Unsubscribe(u) => unsubscribe::handle(client, u),
        Packet::PingReq => {
            client.outbox.queue(&Packet::PingResp);
            Ok(Flow::Continue)
        }
        Packet::Disconnect(d) => disconnect::handle(client, d),
        Packet::Connect(_) => Err(ConnError::protocol(
            ReasonCode::ProtocolError,
            "second CONNECT (MQTT-3.1.0-2)",
        )),
        Packet::Auth(_) => Err(ConnError::protocol(
            ReasonCode::ProtocolError,
            "AUTH without an authentication method (MQTT-4.12.0-1)",
        )),
        Packet::ConnAck(_) | Packet::SubAck(_) | Packet::UnsubAck(_) | Packet::PingResp => {
            Err(ConnError::protocol(
                ReasonCode::ProtocolError,
                format!("{:?} may only be sent by a server", packet.packet_type()),
            ))
        }
    }
}
