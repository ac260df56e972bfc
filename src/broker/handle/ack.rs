//! PUBACK, PUBREC, PUBREL, PUBCOMP from the client: the QoS 1 and QoS 2 state machines (§4.3).
//!
//! Outbound (we published to the client): PUBACK ends QoS 1; PUBREC → we send PUBREL; PUBCOMP
//! ends QoS 2, and so does a PUBREC with a failure reason (the client refused the message). Each completion frees a slot in the client's Receive Maximum window, so the outbox
//! is marked for the flush at the end of the chunk. What the store must hear of it is sent
//! after the session's lock is released, before any packet but another PUBACK is handled and
//! before more is read from the socket: PUBACKs that come one after another in what was read
//! are completed together, under one acquisition of the session's lock ([`complete_pubacks`]). Inbound (the client published to us): PUBREL →
//! PUBCOMP, ending exactly-once.

use super::Flow;
use crate::broker::connection::Client;
use crate::broker::error::ConnError;
use crate::protocol::{Ack, Packet, Properties, ReasonCode};

fn ack(packet_id: u16, reason: ReasonCode) -> Ack {
    Ack {
        packet_id,
        reason,
        properties: Properties::default(),
    }
}

/// PUBACKs a reader collects before it completes them: bounds [`Client::pubacks`].
pub const MAX_PUBACKS: usize = 256;

/// PUBACK: collected, and completed with the others of the same read under one acquisition of
/// the session's lock ([`complete_pubacks`]) — a subscriber acknowledging every message would
/// otherwise take it once per message, against the publishers queueing into it.
pub fn puback(client: &mut Client, a: Ack) -> Result<Flow, ConnError> {
    client.pubacks.push(a.packet_id);
    if client.pubacks.len() >= MAX_PUBACKS {
        complete_pubacks(client);
    }
    Ok(Flow::Continue)
}

/// Completes the PUBACKs collected, in their order. Called before any other packet is
/// handled, before the reader reads more from its socket or flushes, and at its end: so what
/// the store must hear of them (a persistent session's message done with) is still sent before
/// the next packet is read, and the window they free is used at the flush.
pub fn complete_pubacks(client: &mut Client) {
    if client.pubacks.is_empty() {
        return;
    }
    let now = std::time::Instant::now();
    let (wake, ops) = {
        let mut st = client.session.state.lock();
        for id in client.pubacks.drain(..) {
            st.complete_qos1_at(id, now);
        }
        (st.has_sendable(), st.take_store_ops())
    };
    ops.send();
    if wake {
        client.outbox.mark();
    }
}

pub fn pubrec(client: &mut Client, a: Ack) -> Result<Flow, ConnError> {
    let (reply, wake, ops) = {
        let mut st = client.session.state.lock();
        let reply = if a.reason.is_error() {
            // The client refused the message: the exchange ends here and the id is free
            // (§4.3.3: a PUBREC with a failure code completes the flow).
            st.refuse_qos2(a.packet_id);
            None
        } else if st.mark_released(a.packet_id) {
            Some(ReasonCode::Success)
        } else {
            Some(ReasonCode::PacketIdentifierNotFound)
        };
        (reply, st.has_sendable(), st.take_store_ops())
    };
    ops.send();
    if let Some(reason) = reply {
        let reason = if client.version.is_v5() {
            reason
        } else {
            ReasonCode::Success
        };
        client
            .outbox
            .queue(&Packet::PubRel(ack(a.packet_id, reason)));
    }
    if wake {
        client.outbox.mark();
    }
    Ok(Flow::Continue)
}

pub fn pubrel(client: &mut Client, a: Ack) -> Result<Flow, ConnError> {
    let known = client.session.state.lock().inbound_qos2.remove(a.packet_id);
    let reason = if known || !client.version.is_v5() {
        ReasonCode::Success
    } else {
        ReasonCode::PacketIdentifierNotFound
    };
    client
        .outbox
        .queue(&Packet::PubComp(ack(a.packet_id, reason)));
    Ok(Flow::Continue)
}

pub fn pubcomp(client: &mut Client, a: Ack) -> Result<Flow, ConnError> {
    let (wake, ops) = {
        let mut st = client.session.state.lock();
        st.complete_qos2(a.packet_id);
        (st.has_sendable(), st.take_store_ops())
    };
    ops.send();
    if wake {
        client.outbox.mark();
    }
    Ok(Flow::Continue)
}
