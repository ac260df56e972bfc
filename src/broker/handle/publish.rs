//! PUBLISH from the client (§3.3): resolve the topic alias, check the message, route it, and
//! acknowledge per QoS — exactly once for QoS 2 (§4.3.3): a PUBLISH repeated before PUBREL is
//! acknowledged again but not delivered again.

use std::sync::Arc;
use std::time::Instant;

use super::Flow;
use crate::broker::connection::Client;
use crate::broker::error::ConnError;
use crate::broker::sys;
use crate::message::Message;
use crate::protocol::{Ack, Packet, Properties, Publish, QoS, ReasonCode};

pub fn handle(client: &mut Client, mut p: Publish) -> Result<Flow, ConnError> {
    let cfg = client.cfg.clone();
    client
        .broker
        .stats
        .messages_received
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    if !p.properties.subscription_identifiers.is_empty() {
        return Err(ConnError::protocol(
            ReasonCode::ProtocolError,
            "PUBLISH from a client carries a Subscription Identifier (MQTT-3.3.4-6)",
        ));
    }
    if let Some(topic) = &p.properties.response_topic {
        if topic.contains(['+', '#']) {
            return Err(ConnError::protocol(
                ReasonCode::ProtocolError,
                "Response Topic contains a wildcard (MQTT-3.3.2-14)",
            ));
        }
    }
    resolve_topic_alias(client, &mut p, cfg.max_topic_alias)?;
    if p.retain && !cfg.retain_available {
        return Err(ConnError::protocol(
            ReasonCode::RetainNotSupported,
            "RETAIN set while Retain Available is 0 (MQTT-3.3.1-?)",
        ));
    }
    if p.topic.len() > cfg.max_topic_len {
        return Err(ConnError::protocol(
            ReasonCode::TopicNameInvalid,
            format!("topic longer than {} bytes", cfg.max_topic_len),
        ));
    }
    if p.topic.split('/').count() > cfg.max_topic_levels {
        return Err(ConnError::protocol(
            ReasonCode::TopicNameInvalid,
            format!("topic has more than {} levels", cfg.max_topic_levels),
        ));
    }
    // Refusals that cost only this message: answered in the ack (5.0) or silently dropped.
    let refusal = if p.properties.user_properties.len() > cfg.max_user_properties {
        log::info!(
            "client {}: PUBLISH to {} refused: {} user properties, limit {} (0x97)",
            client.client_id,
            p.topic,
            p.properties.user_properties.len(),
            cfg.max_user_properties
        );
        Some(ReasonCode::QuotaExceeded)
    } else if p.properties.payload_format_indicator == Some(1)
        && std::str::from_utf8(&p.payload).is_err()
    {
        Some(ReasonCode::PayloadFormatInvalid) // §3.3.2.3.2
    } else if !sys::client_may_publish(&p.topic)
        || !client.broker.store.acl().can_publish(
            client.username.as_deref(),
            &client.client_id,
            &p.topic,
        )
    {
        Some(ReasonCode::NotAuthorized)
    } else {
        None
    };
    let packet_id = p.packet_id;
    let qos = p.qos;
    if qos == QoS::ExactlyOnce {
        let mut st = client.session.state.lock();
        if st.inbound_qos2.contains(packet_id) {
            drop(st);
            // A retransmission (DUP): acknowledge again, do not deliver twice (MQTT-4.3.3-9).
            send_ack(client, qos, packet_id, ReasonCode::Success);
            return Ok(Flow::Continue);
        }
        // Only a 5.0 client was told our Receive Maximum (§3.2.2.3.3), so only it can exceed
        // it (§3.3.4: DISCONNECT 0x93). A 3.1.1 client is bounded by the packet-id space,
        // which the id set holds whole.
        if client.version.is_v5() && st.inbound_qos2.len() >= usize::from(cfg.receive_maximum) {
            return Err(ConnError::protocol(
                ReasonCode::ReceiveMaximumExceeded,
                format!(
                    "more than {} QoS 2 messages awaiting PUBREL (MQTT-3.3.4-9; \
                     --receive-maximum raises it)",
                    cfg.receive_maximum
                ),
            ));
        }
        if refusal.is_none() {
            st.inbound_qos2.insert(packet_id);
        }
    }
    let reason = match refusal {
        Some(r) => {
            log::debug!(
                "client {}: PUBLISH to {} refused: {r:?}",
                client.client_id,
                p.topic
            );
            r
        }
        None => {
            let msg = Message::from_publish(p, Some(client.client_id.clone()), Instant::now());
            let mut tickets = Vec::new();
            let matched = client.broker.publish_durable(
                Arc::new(msg),
                &mut client.scratch,
                Some(&mut tickets),
            );
            let stored = if tickets.is_empty() {
                Ok(())
            } else {
                // Subscribers need not wait for the database: only the publisher's ack does.
                let broker = client.broker.clone();
                client.scratch.flush(&broker);
                crate::broker::publish::wait_committed(tickets, &client.client_id)
            };
            match stored {
                Ok(()) if matched == 0 => ReasonCode::NoMatchingSubscribers,
                Ok(()) => ReasonCode::Success,
                Err(why) => return not_stored(client, qos, packet_id, why),
            }
        }
    };
    send_ack(client, qos, packet_id, reason);
    Ok(Flow::Continue)
}

/// The durability point: a QoS 1/2 message is acknowledged as received only once every copy
/// the store must keep (a persistent subscriber's, a retained one) is committed. When the
/// database cannot commit it — disk full, read-only, its backlog full, or not within
/// [`crate::broker::publish::DURABLE_WAIT`] — it is not acknowledged as received: a 5.0 client
/// gets PUBACK / PUBREC 0x80 (Unspecified error: the message was not accepted, §3.4.2.1; for
/// QoS 2 this ends the exchange and frees the packet id, §4.3.3), a 3.1.1 client, whose acks
/// carry no failure, is disconnected without one and sends the message again when it
/// reconnects. Subscribers online may already have it (QoS 1 allows the duplicate a resend
/// makes). The store logs the failure once; each refusal is only a debug line.
fn not_stored(
    client: &mut Client,
    qos: QoS,
    packet_id: u16,
    why: String,
) -> Result<Flow, ConnError> {
    log::debug!(
        "client {}: QoS {} message not acknowledged as received: {why}",
        client.client_id,
        qos as u8
    );
    client
        .broker
        .stats
        .unstored
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    if qos == QoS::ExactlyOnce {
        // A resend must be taken as new and stored, not answered from the QoS 2 state.
        client.session.state.lock().inbound_qos2.remove(packet_id);
    }
    if !client.version.is_v5() {
        return Err(ConnError::NotStored(why));
    }
    send_ack(client, qos, packet_id, ReasonCode::UnspecifiedError);
    Ok(Flow::Continue)
}

/// Topic Alias (§3.3.2.3.4): 0 or above our Topic Alias Maximum is 0x94 (MQTT-3.3.2-8, -9); an
/// alias with a topic sets the mapping; an alias alone uses it; an unknown alias alone is a
/// protocol error.
fn resolve_topic_alias(
    client: &mut Client,
    p: &mut Publish,
    maximum: u16,
) -> Result<(), ConnError> {
    let Some(alias) = p.properties.topic_alias else {
        return Ok(());
    };
    if alias == 0 || alias > maximum {
        return Err(ConnError::protocol(
            ReasonCode::TopicAliasInvalid,
            format!("topic alias {alias} outside 1..={maximum}"),
        ));
    }
    if p.topic.is_empty() {
        match client.topic_aliases.get(&alias) {
            Some(topic) => p.topic = topic.clone(),
            None => {
                return Err(ConnError::protocol(
                    ReasonCode::ProtocolError,
                    format!("topic alias {alias} used before it was set"),
                ))
            }
        }
    } else {
        client.topic_aliases.insert(alias, p.topic.clone());
    }
    Ok(())
}

fn send_ack(client: &Client, qos: QoS, packet_id: u16, reason: ReasonCode) {
    let reason = if client.version.is_v5() {
        reason
    } else {
        ReasonCode::Success
    };
    let ack = Ack {
        packet_id,
        reason,
        properties: Properties::default(),
    };
    match qos {
        QoS::AtMostOnce => {}
        QoS::AtLeastOnce => client.outbox.queue(&Packet::PubAck(ack)),
        QoS::ExactlyOnce => client.outbox.queue(&Packet::PubRec(ack)),
    }
}
