//! PUBLISH from the client (§3.3): resolve the topic alias, check the message, route it, and
//! acknowledge per QoS — exactly once for QoS 2 (§4.3.3): a PUBLISH repeated before PUBREL is
//! acknowledged again but not delivered again.
//!
//! Group commit: a QoS 1/2 message that the store must keep (retained, or for a persistent
//! subscriber) is acknowledged only once it is committed, but its reader does not wait for
//! that commit before handling the next PUBLISH already read: the acknowledgement is owed
//! ([`Client::owed_acks`]) and every owed one is settled — waited for and queued, in the order
//! the PUBLISH packets came (MQTT-4.6.0-2, -3) — before the reader waits for more bytes,
//! before it handles any other packet, and when [`MAX_OWED`] are owed. A burst of retained
//! messages thus rides a few transactions instead of one commit (and two thread wake-ups)
//! each. While it handles them the reader holds the store's commit
//! ([`crate::store::StoreHandle::hold_writes`], at most a millisecond), so that the writes of
//! one read ride one commit and the reader waits once, not once per commit that raced it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::broker::publish::DURABLE_WAIT;
use crate::store::{DurableTicket, StoreError};

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
    // One clock reading serves the message's arrival time and its owed ack's deadline.
    let now = Instant::now();
    if qos == QoS::ExactlyOnce {
        let mut st = client.session.state.lock();
        if st.inbound_qos2.contains(packet_id) {
            drop(st);
            // The first copy's fate (stored or not) is settled before the repeat is answered.
            settle_acks(client)?;
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
    let owed = match refusal {
        Some(r) => {
            log::debug!(
                "client {}: PUBLISH to {} refused: {r:?}",
                client.client_id,
                p.topic
            );
            Owed::Answer(r)
        }
        None => {
            let msg = Message::from_publish(p, Some(client.client_id.clone()), now);
            // The hold is two SeqCst atomics on a counter every publisher shares: taken ahead
            // only when this client's last QoS 1/2 message needed a commit (a durable stream),
            // so a stream that stores nothing keeps the publish path free of it.
            if qos != QoS::AtMostOnce && client.write_hold.is_none() && client.publishes_stored {
                client.write_hold = Some(client.broker.store.hold_writes());
            }
            let mut tickets = Vec::new();
            let matched = client.broker.publish_durable(
                Arc::new(msg),
                &mut client.scratch,
                Some(&mut tickets),
            );
            if qos != QoS::AtMostOnce {
                client.publishes_stored = !tickets.is_empty();
            }
            if tickets.is_empty() {
                if client.owed_acks.is_empty() {
                    // Nothing of this read waits for a commit: none to hold back.
                    client.write_hold = None;
                }
                Owed::Answer(matched_reason(matched))
            } else {
                if client.write_hold.is_none() {
                    // The first of a stream: its write may already be committing, the rest of
                    // this read ride the next commit.
                    client.write_hold = Some(client.broker.store.hold_writes());
                }
                Owed::Committed { tickets, matched }
            }
        }
    };
    if qos == QoS::AtMostOnce {
        return Ok(Flow::Continue);
    }
    match owed {
        // Nothing owed before it, nothing to wait for, and the message queued for every
        // subscriber: answered at once. A message still pending in the reader's routing batch
        // (queued at the flush, see `Routing::queue_pending`) is acknowledged only after it is
        // queued, like one waiting for its commit.
        Owed::Answer(reason) if client.owed_acks.is_empty() && !client.scratch.has_pending() => {
            send_ack(client, qos, packet_id, reason)
        }
        owed => {
            client.owed_acks.push_back(OwedAck {
                qos,
                packet_id,
                owed,
                since: now,
            });
            if client.owed_acks.len() >= MAX_OWED {
                settle_acks(client)?;
            }
        }
    }
    Ok(Flow::Continue)
}

/// Acknowledgements owed at most before the reader waits for their commits: bounds what it
/// holds (the client's Receive Maximum bounds it too, for 5.0).
pub const MAX_OWED: usize = 256;

/// A QoS 1/2 PUBLISH handled whose acknowledgement is not queued yet.
pub struct OwedAck {
    qos: QoS,
    packet_id: u16,
    owed: Owed,
    /// When it was handled: its commit is waited for at most [`DURABLE_WAIT`] from here.
    since: Instant,
}

/// How long a reader with nothing more to read waits for the oldest owed acknowledgement's
/// commit before it looks at its socket again ([`settle_ready_acks`]); doubled after each look
/// that finds nothing, up to [`OVERLAP_SLICE_MAX`].
pub const OVERLAP_SLICE: Duration = Duration::from_micros(200);

/// The longest wait between two looks at the socket while a commit runs: what a client sends
/// during a slow commit (a stalled disk) is read within this.
pub const OVERLAP_SLICE_MAX: Duration = Duration::from_millis(5);

enum Owed {
    /// Known already (a refusal, or nothing to keep), held back behind earlier owed ones.
    Answer(ReasonCode),
    /// Once these store writes commit.
    Committed {
        tickets: Vec<DurableTicket>,
        matched: usize,
    },
}

fn matched_reason(matched: usize) -> ReasonCode {
    if matched == 0 {
        ReasonCode::NoMatchingSubscribers
    } else {
        ReasonCode::Success
    }
}

/// Waits for the commits of every owed acknowledgement (each at most [`DURABLE_WAIT`] from
/// when it was handled) and queues them in order; one not stored is refused as `not_stored`
/// says (for 3.1.1 the connection ends: the rest are dropped, and the client sends them again).
pub fn settle_acks(client: &mut Client) -> Result<(), ConnError> {
    // Bounded: each round settles every ack whose deadline has passed.
    while !settle_ready_acks(client, DURABLE_WAIT)? {}
    Ok(())
}

/// Queues, in order, the owed acknowledgements whose commits are done, waiting at most `slice`
/// for the oldest one still committing. True when none is owed any more. With a short slice a
/// reader overlaps the store: while one commit runs it reads and hands over what the client sent
/// meanwhile, which then rides the next commit, started as soon as this one ends, instead of
/// the store waiting idle while the reader sends the acks and reads again.
pub fn settle_ready_acks(client: &mut Client, slice: Duration) -> Result<bool, ConnError> {
    // This read's writes are all sent: the commit need not wait for more of them.
    client.write_hold = None;
    if client.owed_acks.is_empty() {
        return Ok(true);
    }
    // Subscribers need not wait for the database: only the publisher's acks do. The flush
    // also queues the routed messages still pending, which every owed ack must follow.
    let broker = client.broker.clone();
    client.scratch.flush(&broker);
    let until = Instant::now() + slice;
    while let Some(front) = client.owed_acks.front_mut() {
        let (qos, packet_id) = (front.qos, front.packet_id);
        let reason = match &mut front.owed {
            Owed::Answer(r) => Ok(*r),
            Owed::Committed { tickets, matched } => {
                let deadline = front.since + DURABLE_WAIT;
                match committed(tickets, &client.client_id, until.min(deadline), deadline) {
                    Some(Ok(())) => Ok(matched_reason(*matched)),
                    Some(Err(why)) => Err(why),
                    None => return Ok(false),
                }
            }
        };
        client.owed_acks.pop_front();
        match reason {
            Ok(r) => send_ack(client, qos, packet_id, r),
            Err(why) => not_stored(client, qos, packet_id, why)?,
        }
    }
    Ok(true)
}

/// Whether every ticket has committed, waiting until `until`: `None` while one has not and
/// `deadline` has not passed; `Err(why)` when one failed or `deadline` passed.
fn committed(
    tickets: &mut [DurableTicket],
    who: &str,
    until: Instant,
    deadline: Instant,
) -> Option<Result<(), String>> {
    for ticket in tickets {
        match ticket.wait_timeout(until.saturating_duration_since(Instant::now())) {
            Ok(true) => {}
            Ok(false) if Instant::now() >= deadline => {
                return Some(Err(format!("not committed within {DURABLE_WAIT:?}")))
            }
            Ok(false) => return None,
            // Answered once (the ticket is then done): the rest of its batch committed.
            Err(e @ StoreError::Refused(_)) => log::warn!("client {who}: message not stored: {e}"),
            Err(e) => return Some(Err(e.to_string())),
        }
    }
    Some(Ok(()))
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
fn not_stored(client: &mut Client, qos: QoS, packet_id: u16, why: String) -> Result<(), ConnError> {
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
    Ok(())
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
