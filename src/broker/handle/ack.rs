//! PUBACK, PUBREC, PUBREL, PUBCOMP from the client: the QoS 1 and QoS 2 state machines (§4.3).
//!
//! Outbound (we published to the client): PUBACK ends QoS 1; PUBREC → we send PUBREL; PUBCOMP
//! ends QoS 2, and so does a PUBREC with a failure reason (the client refused the message). Each completion frees a slot in the client's Receive Maximum window, so the outbox
//! is marked for the flush at the end of the chunk. What the store must hear of it is sent
//! after the session's lock is released and before the next packet is read. Inbound (the client published to us): PUBREL → PUBCOMP, ending exactly-once.

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

pub fn puback(client: &mut Client, a: Ack) -> Result<Flow, ConnError> {
    let (wake, ops) = {
        let mut st = client.session.state.lock();
        st.complete_qos1(a.packet_id);
        (st.has_sendable(), st.take_store_ops())
    };
    ops.send();
    if wake {
        client.outbox.mark();
    }
    Ok(Flow::Continue)
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
