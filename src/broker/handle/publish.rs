//! PUBLISH from the client (§3.3): resolve the topic alias, check the message, route it, and
//! acknowledge per QoS — exactly once for QoS 2 (§4.3.3): a PUBLISH repeated before PUBREL is
//! acknowledged again but not delivered again.
//!
//! Group commit: a QoS 1/2 message that the store must keep (retained, or for a persistent
//! subscriber) is acknowledged only once it is committed, but its reader does not wait for
//! that commit before handling the next PUBLISH already read: the acknowledgement is owed
//! ([`AckQueue`], [`Client::acks`]) and every owed one is settled — queued, in the order the
//! PUBLISH packets came (MQTT-4.6.0-2, -3) — before the reader blocks for more bytes, before it
//! handles any other packet, and when [`MAX_OWED`] are owed. A burst of retained messages thus
//! rides a few transactions instead of one commit (and two thread wake-ups) each. While it
//! handles them the reader holds the store's commit
//! ([`crate::store::StoreHandle::hold_writes`], at most a millisecond), so that the writes of
//! one read ride one commit. The `store` thread queues the acks of that commit itself, right
//! after it ([`AckQueue`]'s pump): on a plain TCP connection the reader meanwhile only watches
//! its socket for the client's next packets, and no thread hand-off stands between the commit
//! and the ack. Failures are the reader's to answer.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use crate::broker::outbox::Outbox;
use crate::broker::publish::DURABLE_WAIT;
use crate::store::{AckPump, DurableTicket, StoreError, TicketWatch};

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
            // Nothing is owed now, and only this thread adds to the queue: it stays empty.
            send_ack(
                &client.outbox,
                client.version.is_v5(),
                qos,
                packet_id,
                ReasonCode::Success,
            );
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
                if client.acks.is_empty() {
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
    // A message still pending in the reader's routing batch (queued at the flush, see
    // `Routing::queue_pending`) is acknowledged only once it is queued for its subscribers:
    // its ack waits for the reader, whatever its commit does ([`settle_ready_acks`]).
    let routing_pending = client.scratch.has_pending();
    let owed = OwedAck {
        qos,
        packet_id,
        owed,
        since: now,
        routing_pending,
    };
    // Nothing owed before it, nothing to wait for, and the message queued for every
    // subscriber: answered at once (under the queue's lock, so that no ack the store's pump
    // queues meanwhile can be overtaken).
    if client.acks.push_or_answer(owed) >= MAX_OWED {
        settle_acks(client)?;
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
    /// Its message was still in the reader's routing batch when it was handled: the store's
    /// pump leaves it (and all after it) until the reader has queued that batch.
    routing_pending: bool,
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

/// A connection's owed PUBLISH acknowledgements, in arrival order, shared by its reader and the
/// `store` thread: the reader adds to it; whichever of the two sees the front ones ready
/// queues them, under the lock, so the acks leave in order (MQTT-4.6.0-2, -3). The store does
/// so right after a commit ([`AckPump`], sent with [`crate::store::StoreHandle::pump_acks`]),
/// so a committed ack reaches the socket without waking the reader; a failure (not stored,
/// or not within [`DURABLE_WAIT`]) is always left to the reader, which alone knows the
/// session and can end the connection.
pub struct AckQueue {
    state: Mutex<AckState>,
    outbox: Arc<Outbox>,
    v5: bool,
    /// For the log.
    client_id: Arc<str>,
}

struct AckState {
    owed: VecDeque<OwedAck>,
    /// Set when the reader refused one and ends the connection (3.1.1): no later ack may go
    /// out before it, so none goes out at all.
    closed: bool,
}

/// The front ack as far as can be told without waiting.
enum Front {
    /// Queue it with this reason.
    Ready(ReasonCode),
    /// Its writes were not stored (or not within [`DURABLE_WAIT`]): the reader refuses it.
    Failed(String),
    /// A commit still runs; wait on this (if anything) for it.
    Waiting(Option<TicketWatch>),
}

impl AckQueue {
    pub fn new(outbox: Arc<Outbox>, v5: bool, client_id: Arc<str>) -> AckQueue {
        AckQueue {
            client_id,
            state: Mutex::new(AckState {
                owed: VecDeque::new(),
                closed: false,
            }),
            outbox,
            v5,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.state.lock().owed.is_empty()
    }

    /// Queues `ack` at once when it needs no commit, its message is queued for its subscribers
    /// and nothing is owed before it, else adds it to the owed ones; returns how many are owed.
    fn push_or_answer(&self, ack: OwedAck) -> usize {
        let mut st = self.state.lock();
        if !ack.routing_pending && st.owed.is_empty() {
            if let Owed::Answer(reason) = ack.owed {
                send_ack(&self.outbox, self.v5, ack.qos, ack.packet_id, reason);
                return 0;
            }
        }
        st.owed.push_back(ack);
        st.owed.len()
    }

    /// Notes that the reader has queued its routing batch: every ack owed so far may go once
    /// its commit (if any) is done.
    fn routed(&self) {
        for ack in self.state.lock().owed.iter_mut() {
            ack.routing_pending = false;
        }
    }

    /// Queues, in order, the front acks that are ready, up to the first that is not; returns
    /// what that one is (`None`: none is owed any more) and how many were queued.
    fn take_ready(&self, st: &mut AckState) -> (Option<Front>, usize) {
        let mut queued = 0;
        while let Some(front) = st.owed.front_mut() {
            if front.routing_pending {
                // Only the reader, once it has queued its routing batch, may send this one.
                return (Some(Front::Waiting(None)), queued);
            }
            let state = match &mut front.owed {
                Owed::Answer(r) => Front::Ready(*r),
                Owed::Committed { tickets, matched } => front_state(
                    tickets,
                    *matched,
                    front.since + DURABLE_WAIT,
                    &self.client_id,
                ),
            };
            let Front::Ready(reason) = state else {
                return (Some(state), queued);
            };
            let (qos, packet_id) = (front.qos, front.packet_id);
            st.owed.pop_front();
            send_ack(&self.outbox, self.v5, qos, packet_id, reason);
            queued += 1;
        }
        (None, queued)
    }
}

impl AckPump for AckQueue {
    fn pump(&self) {
        let queued = {
            let mut st = self.state.lock();
            if st.closed {
                return;
            }
            self.take_ready(&mut st).1
        };
        if queued > 0 {
            self.outbox.flush();
        }
    }
}

/// Whether the writes of one owed ack are done, without waiting.
fn front_state(
    tickets: &mut [DurableTicket],
    matched: usize,
    deadline: Instant,
    who: &str,
) -> Front {
    for ticket in tickets {
        match ticket.wait_timeout(Duration::ZERO) {
            Ok(true) => {}
            Ok(false) if Instant::now() >= deadline => {
                return Front::Failed(format!("not committed within {DURABLE_WAIT:?}"))
            }
            Ok(false) => return Front::Waiting(ticket.watch()),
            // Answered once (the ticket is then done): the rest of its batch committed.
            Err(e @ StoreError::Refused(_)) => {
                log::warn!("client {who}: message not stored: {e}")
            }
            // Left to the reader (the pump stops here); the ticket keeps saying so however
            // often it is looked at.
            Err(e) => return Front::Failed(e.to_string()),
        }
    }
    Front::Ready(matched_reason(matched))
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
/// the store waiting idle while the reader sends the acks and reads again. The writes of this
/// read are handed over with the queue's pump ([`AckQueue`]), so acks that commit while the
/// reader is elsewhere go out from the `store` thread.
pub fn settle_ready_acks(client: &mut Client, slice: Duration) -> Result<bool, ConnError> {
    // The routed messages still pending are queued first: every owed ack must follow its
    // message into the subscribers' queues, also one the store's pump sends.
    let broker = client.broker.clone();
    client.scratch.queue_pending(&broker);
    client.acks.routed();
    // This read's writes are all sent: the commit need not wait for more of them. The pump goes
    // first, so that it rides the same commit.
    if client.write_hold.is_some() {
        let pump: Arc<dyn AckPump> = client.acks.clone();
        client.broker.store.pump_acks(pump);
        client.write_hold = None;
    }
    if client.acks.is_empty() {
        return Ok(true);
    }
    // Subscribers need not wait for the database: only the publisher's acks do.
    client.scratch.flush(&broker);
    let until = Instant::now() + slice;
    loop {
        let acks = client.acks.clone();
        let mut st = acks.state.lock();
        match acks.take_ready(&mut st).0 {
            None => return Ok(true),
            // `take_ready` queues every ready one; look again.
            Some(Front::Ready(_)) => {}
            Some(Front::Failed(why)) => {
                let Some(front) = st.owed.pop_front() else {
                    continue;
                };
                // Under the lock: nothing the pump queues may overtake the refusal, and after
                // a 3.1.1 one (the connection ends) nothing more goes out.
                let refused = not_stored(client, front.qos, front.packet_id, why);
                if refused.is_err() {
                    st.closed = true;
                }
                refused?;
            }
            Some(Front::Waiting(watch)) => {
                drop(st);
                let now = Instant::now();
                if now >= until {
                    return Ok(false);
                }
                // Woken by the answer (either way); the pump may have queued it by then.
                if let Some(watch) = watch {
                    watch.wait(until - now);
                }
            }
        }
    }
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
fn not_stored(client: &Client, qos: QoS, packet_id: u16, why: String) -> Result<(), ConnError> {
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
    send_ack(
        &client.outbox,
        true,
        qos,
        packet_id,
        ReasonCode::UnspecifiedError,
    );
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

fn send_ack(outbox: &Outbox, v5: bool, qos: QoS, packet_id: u16, reason: ReasonCode) {
    let reason = if v5 { reason } else { ReasonCode::Success };
    let ack = Ack {
        packet_id,
        reason,
        properties: Properties::default(),
    };
    match qos {
        QoS::AtMostOnce => {}
        QoS::AtLeastOnce => outbox.queue(&Packet::PubAck(ack)),
        QoS::ExactlyOnce => outbox.queue(&Packet::PubRec(ack)),
    }
}
