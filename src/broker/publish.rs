//! The publish path: one application message to every session with a matching subscription —
//! the retained store and the history first, then each direct subscriber's queue, then one
//! member of each matching shared subscription group — and the hand-off of an ended session's
//! unfinished shared messages to the rest of its groups. It runs on the publishing thread (a
//! client's reader, the ticker for wills and `$SYS`, `web` for the page's publish) and never
//! waits on a subscriber: the router's read lock is taken alone, then each session's state alone.
//!
//! A reader thread queues the messages it routed to sessions that store nothing at its flush
//! ([`Routing::queue_pending`]), grouped by session: each subscriber's lock is taken once per
//! read rather than once per message, which ten publishers feeding one subscriber otherwise
//! meet on for every message. Each session's deliveries keep their publish order, and a
//! publisher's PUBACK / PUBREC is queued only after its message is. A QoS 1/2 message for a
//! persistent session is stored and then queued at once, as is a shared subscription's, after
//! whatever is pending (so order still holds): its publisher's acknowledgement waits on that
//! commit.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::outbox::Wakes;
use super::router::{self, RouteScratch, SharedGroup};
use super::session::{Delivery, DropReason, QueueLimits, Session};
use super::Broker;
use crate::message::Message;
use crate::protocol::{Properties, QoS};
use crate::store::DurableTicket;

/// A publishing thread's reusable routing buffers: the matched targets, the deliveries not yet
/// queued, and the outboxes owed a flush.
#[derive(Default)]
pub struct Routing {
    targets: Vec<(Arc<Session>, Delivery)>,
    /// The matched shared subscription groups, each to give the message to one member.
    groups: Vec<SharedGroup>,
    /// The router's buffers for one message's matches.
    route: RouteScratch,
    /// Deliveries to sessions that store nothing, routed but not yet queued, in publish order:
    /// queued at the flush (or sooner, see [`Routing::queue_pending`]) grouped by session, each
    /// session's under one acquisition of its lock and in the order they were routed.
    pending: Vec<(Arc<Session>, Delivery)>,
    pub wakes: Wakes,
    /// Messages for the store's history, sent after the flush: off the delivery path.
    history: Vec<Arc<Message>>,
    /// Leave the flushes to the caller: a reader thread flushes once per chunk it read.
    defer: bool,
}

/// Deliveries [`Routing::pending`] holds at most: past this they are queued at once, which
/// bounds what a burst of messages to many subscribers holds back (and its memory).
const MAX_PENDING: usize = 256;

impl Routing {
    /// Buffers for a reader thread, which calls [`Routing::flush`] itself.
    pub fn deferred() -> Routing {
        Routing {
            defer: true,
            ..Routing::default()
        }
    }

    /// Whether deliveries routed by this thread are still to be queued: an acknowledgement of
    /// their message must wait for [`Routing::queue_pending`] (a flush does it).
    pub fn has_pending(&self) -> bool {
        !self.pending.is_empty()
    }

    /// Queues every pending delivery: grouped by session (a stable sort keeps each session's
    /// in publish order), each group under one acquisition of its session's lock. A delivery
    /// refused for lack of room counts as dropped, as on the direct path.
    pub fn queue_pending(&mut self, broker: &Broker) {
        if self.pending.is_empty() {
            return;
        }
        let limits = broker.queue_limits();
        let acl = broker.delivery_acl();
        let dropped = queue_grouped(&mut self.pending, &limits, acl.as_deref(), &mut self.wakes);
        if dropped > 0 {
            broker
                .stats
                .dropped
                .fetch_add(dropped as u64, Ordering::Relaxed);
        }
        if self.pending.capacity() > 4 * MAX_PENDING {
            self.pending = Vec::new();
        }
    }

    /// Queues what is pending, writes to every outbox owed a flush, then hands the history to
    /// the store.
    pub fn flush(&mut self, broker: &Broker) {
        self.queue_pending(broker);
        self.wakes.flush();
        if !self.history.is_empty() {
            broker
                .store
                .record_messages(std::mem::take(&mut self.history));
        }
    }
}

/// Queues `pending` (emptied) grouped by session, each session's deliveries in their order
/// and under one acquisition of its lock ([`Session::enqueue_batch`]). Returns how many were
/// refused for lack of room.
fn queue_grouped(
    pending: &mut Vec<(Arc<Session>, Delivery)>,
    limits: &QueueLimits,
    acl: Option<&crate::auth::AclSet>,
    wakes: &mut Wakes,
) -> usize {
    // Usually all for one session (fan-in): sort only when there are several. The sort is
    // stable, so each session's deliveries keep their order.
    let first = pending.first().map(|(s, _)| Arc::as_ptr(s));
    if pending.iter().any(|(s, _)| Some(Arc::as_ptr(s)) != first) {
        pending.sort_by_key(|(s, _)| Arc::as_ptr(s) as usize);
    }
    let mut dropped = 0;
    let mut rest = pending.drain(..).peekable();
    while let Some((session, first)) = rest.next() {
        let mut run = std::iter::once(first).chain(std::iter::from_fn(|| {
            rest.next_if(|(s, _)| Arc::ptr_eq(s, &session))
                .map(|(_, d)| d)
        }));
        dropped += session.enqueue_batch(&mut run, limits, acl, wakes);
    }
    dropped
}

impl Broker {
    /// Delivers an application message to every matching subscription and updates the retained
    /// store. Never waits on a subscriber. Returns the number of sessions it matched, whether or
    /// not their queues had room.
    pub fn publish(&self, msg: Arc<Message>, scratch: &mut Routing) -> usize {
        self.publish_durable(msg, scratch, None)
    }

    /// [`Broker::publish`], collecting in `tickets` the store commits the publisher's
    /// acknowledgement must wait for: the message kept for each persistent session it reached,
    /// and a QoS 1/2 retained message (the durability point; see the README).
    pub fn publish_durable(
        &self,
        msg: Arc<Message>,
        scratch: &mut Routing,
        mut tickets: Option<&mut Vec<DurableTicket>>,
    ) -> usize {
        // $SYS is regenerated every interval: neither history nor worth keeping.
        let sys = msg.topic.starts_with("$SYS/");
        // One read of the current settings per message (a config reload may change them).
        let cfg = self.config();
        if cfg.history_per_topic > 0 && !sys {
            scratch.history.push(msg.clone());
        }
        if msg.retain {
            self.retained.set(&msg);
        }
        if msg.retain && !sys {
            let kept = (!msg.payload.is_empty()).then_some(&msg);
            let ticket = self.store.set_retained(&msg.topic, kept);
            if let (Some(t), true) = (tickets.as_deref_mut(), msg.qos != QoS::AtMostOnce) {
                t.push(ticket);
            }
        }
        scratch.targets.clear();
        scratch.groups.clear();
        self.router.route(
            &msg,
            &mut scratch.targets,
            &mut scratch.groups,
            &mut scratch.route,
        );
        let matched = scratch.targets.len() + scratch.groups.len();
        // A session that stores nothing gets the message with the rest of this thread's batch
        // (`Routing::queue_pending`); one that stores QoS 1/2 messages, and every shared
        // group, gets it now, its store write first: the publisher's acknowledgement waits on
        // that commit. Whatever is pending goes first, to keep each session's order.
        let batched = |session: &Session, delivery: &Delivery| {
            delivery.qos == QoS::AtMostOnce || !session.maybe_persistent()
        };
        let now = !scratch.groups.is_empty() || !scratch.targets.iter().all(|(s, d)| batched(s, d));
        if now {
            scratch.queue_pending(self);
        }
        let limits = super::queue_limits(&cfg);
        let acl = if now { self.delivery_acl() } else { None };
        for (session, delivery) in scratch.targets.drain(..) {
            if batched(&session, &delivery) {
                scratch.pending.push((session, delivery));
                continue;
            }
            match session.enqueue_checked(delivery, &limits, acl.as_deref(), &mut scratch.wakes) {
                Ok(Some(ticket)) => {
                    if let Some(t) = tickets.as_deref_mut() {
                        t.push(ticket);
                    }
                }
                Ok(None) => {}
                Err(DropReason::NotAuthorized) => {}
                Err(DropReason::QueueFull) | Err(DropReason::OfflineQos0) => {
                    self.stats.dropped.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        if scratch.pending.len() >= MAX_PENDING {
            scratch.queue_pending(self);
        }
        for group in scratch.groups.drain(..) {
            let delivered = self.deliver_shared(
                &group,
                |entry| router::delivery_for(&msg, entry, Some(group.share.clone())),
                &limits,
                acl.as_deref(),
                &mut scratch.wakes,
            );
            if let (Some(ticket), Some(t)) = (delivered, tickets.as_deref_mut()) {
                t.push(ticket);
            }
        }
        if !scratch.defer {
            scratch.flush(self);
        }
        matched
    }

    /// Gives a message to one member of a shared subscription group (§4.8.2), chosen as
    /// [`SharedGroup::offer`] says: a member whose queue is full or whom the ACL does not let
    /// read the topic passes it to the next. `delivery` makes the message's delivery through a
    /// member's subscription. Returns the store ticket of the member that took it, if it keeps
    /// it; a message no member could take is dropped (counted at the first member that had no
    /// room).
    fn deliver_shared(
        &self,
        group: &SharedGroup,
        delivery: impl Fn(&router::SubEntry) -> Delivery,
        limits: &QueueLimits,
        acl: Option<&crate::auth::AclSet>,
        wakes: &mut Wakes,
    ) -> Option<DurableTicket> {
        let mut no_room: Option<Arc<Session>> = None;
        let taken = group.offer(|session, entry| {
            match session.offer_shared(delivery(entry), limits, acl, wakes) {
                Ok(ticket) => Some(ticket),
                Err(DropReason::NotAuthorized) => None,
                Err(DropReason::QueueFull | DropReason::OfflineQos0) => {
                    no_room.get_or_insert_with(|| session.clone());
                    None
                }
            }
        });
        match taken {
            Some(ticket) => ticket,
            None => {
                if let Some(session) = no_room {
                    session.count_drop();
                    self.stats.dropped.fetch_add(1, Ordering::Relaxed);
                }
                None
            }
        }
    }

    /// Gives the shared-subscription messages an ended session had not finished to the other
    /// members of their groups, each chosen like any routing pick (round robin, online first,
    /// passed on by a member with a full queue or that the ACL does not let read the topic). A
    /// persistent member keeps what it takes in the store, and the hand-off waits (at most
    /// [`DURABLE_WAIT`]) for that commit: the ended session's copy is gone, so until then the
    /// message would be lost by a crash although its publisher was acknowledged long ago.
    pub(super) fn hand_off(&self, ended: &Arc<Session>, handoff: Vec<Delivery>) {
        let limits = self.queue_limits();
        let acl = self.delivery_acl();
        let mut groups: HashMap<Arc<str>, Option<SharedGroup>> = HashMap::new();
        let mut wakes = Wakes::default();
        let mut tickets = Vec::new();
        for d in handoff {
            let Some(share) = d.share.clone() else {
                continue;
            };
            let group = groups.entry(share.clone()).or_insert_with(|| {
                match crate::protocol::topic::parse_shared(&share) {
                    Some(Ok((_, inner))) => self.router.share_group(inner, &share, ended),
                    _ => None,
                }
            });
            let Some(group) = group else {
                continue;
            };
            group.start = self.router.next_round();
            let delivery = |entry: &router::SubEntry| {
                let mut delivery = router::delivery_for(&d.msg, entry, Some(share.clone()));
                // Never more than the QoS it was on its way with.
                delivery.qos = delivery.qos.min(d.qos);
                delivery
            };
            tickets.extend(self.deliver_shared(
                group,
                delivery,
                &limits,
                acl.as_deref(),
                &mut wakes,
            ));
        }
        wakes.flush();
        if let Err(why) = wait_committed(tickets, &ended.client_id) {
            log::debug!(
                "client {}: the shared messages handed to other members are kept in memory \
                 only: {why}",
                ended.client_id
            );
        }
    }

    /// [`Broker::publish_durable`] for one message published outside a reader thread (the
    /// control page's admin), with routing buffers of its own.
    pub fn publish_alone(&self, msg: Arc<Message>, tickets: &mut Vec<DurableTicket>) -> usize {
        self.publish_durable(msg, &mut Routing::default(), Some(tickets))
    }

    /// Publishes a message made by the broker itself ($SYS, the control page).
    pub fn publish_internal(&self, topic: &str, payload: Vec<u8>, retain: bool) {
        let msg = Arc::new(Message {
            topic: topic.to_owned(),
            payload,
            qos: crate::protocol::QoS::AtMostOnce,
            retain,
            properties: Properties::default(),
            publisher: None,
            received: Instant::now(),
        });
        self.publish(msg, &mut Routing::default());
    }
}

/// The longest anything waits for the database to commit what must survive a crash (a
/// publisher's acknowledgement, a shared-subscription hand-off). A database known not to be
/// able to commit (disk full, read-only, its backlog full) answers at once instead.
pub const DURABLE_WAIT: Duration = Duration::from_secs(5);

/// Waits for `tickets` to commit, at most [`DURABLE_WAIT`] in all. `Err(why)` when a write is
/// not durable — the database cannot commit now, or did not within the wait — so that what
/// needed it must not be acknowledged as stored; the write may still commit later. A write the
/// database refused for good (a kept message for a session deleted meanwhile) never will: it
/// is logged here, for `who`, and does not hold up the rest.
pub(crate) fn wait_committed(tickets: Vec<DurableTicket>, who: &str) -> Result<(), String> {
    wait_committed_until(tickets, who, Instant::now() + DURABLE_WAIT)
}

/// [`wait_committed`] with the deadline given: several waits in a row share one.
pub(crate) fn wait_committed_until(
    tickets: Vec<DurableTicket>,
    who: &str,
    deadline: Instant,
) -> Result<(), String> {
    for mut ticket in tickets {
        let left = deadline.saturating_duration_since(Instant::now());
        match ticket.wait_timeout(left) {
            Ok(true) => {}
            Ok(false) => return Err(format!("not committed within {DURABLE_WAIT:?}")),
            Err(e @ crate::store::StoreError::Refused(_)) => {
                log::warn!("client {who}: message not stored: {e}");
            }
            Err(e) => return Err(e.to_string()),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::broker::session::LinkLimits;
    use crate::protocol::ProtocolVersion;

    fn session(id: &str) -> Arc<Session> {
        Arc::new(Session::new(
            id.into(),
            LinkLimits {
                protocol: ProtocolVersion::V5,
                receive_maximum: 10,
                max_packet_size: 1 << 20,
                topic_alias_maximum: 0,
            },
        ))
    }

    /// A delivery whose payload is its number, to read the order back from the queue.
    fn delivery(n: u8, qos: QoS) -> Delivery {
        crate::broker::session::test_delivery(vec![n], qos)
    }

    fn queued(s: &Session) -> Vec<u8> {
        s.state
            .lock()
            .pending
            .iter()
            .map(|d| d.msg.payload[0])
            .collect()
    }

    const UNLIMITED: QueueLimits = QueueLimits {
        max_messages: 0,
        max_bytes: 0,
        queue_qos0_offline: true,
    };

    #[test]
    fn mqtt_4_6_grouped_queueing_keeps_each_sessions_order_across_interleaved_sessions() {
        let (a, b, c) = (session("a"), session("b"), session("c"));
        let mut pending = Vec::new();
        // Interleaved as several publishes matching several sessions leave them.
        for (n, s) in [
            (1, &a),
            (2, &b),
            (3, &a),
            (4, &c),
            (5, &b),
            (6, &a),
            (7, &c),
            (8, &b),
        ] {
            pending.push((s.clone(), delivery(n, QoS::AtLeastOnce)));
        }
        let mut wakes = Wakes::default();
        let refused = queue_grouped(&mut pending, &UNLIMITED, None, &mut wakes);
        assert_eq!(refused, 0);
        assert!(pending.is_empty());
        assert_eq!(queued(&a), [1, 3, 6]);
        assert_eq!(queued(&b), [2, 5, 8]);
        assert_eq!(queued(&c), [4, 7]);
    }

    #[test]
    fn grouped_queueing_of_one_session_keeps_publish_order() {
        let a = session("a");
        let mut pending: Vec<_> = (0..50)
            .map(|n| (a.clone(), delivery(n, QoS::AtMostOnce)))
            .collect();
        let refused = queue_grouped(&mut pending, &UNLIMITED, None, &mut Wakes::default());
        assert_eq!(refused, 0);
        assert_eq!(queued(&a), (0..50).collect::<Vec<u8>>());
    }

    #[test]
    fn grouped_queueing_stores_a_qos1_message_for_a_session_that_became_persistent_in_between() {
        let dir = tempfile::tempdir().unwrap();
        let store = crate::store::Store::open(dir.path().join("t.db"), Default::default()).unwrap();
        let a = session("a");
        // Routed while the session stored nothing; it is persistent by the time it is queued.
        let mut pending = vec![
            (a.clone(), delivery(1, QoS::AtMostOnce)),
            (a.clone(), delivery(2, QoS::AtLeastOnce)),
            (a.clone(), delivery(3, QoS::AtMostOnce)),
        ];
        {
            let mut st = a.state.lock();
            let durable = crate::broker::session::Durable {
                store: store.clone(),
                client_id: "a".into(),
            };
            let _ = a.set_durable(&mut st, Some(durable));
        }
        assert!(a.maybe_persistent());
        let refused = queue_grouped(&mut pending, &UNLIMITED, None, &mut Wakes::default());
        assert_eq!(refused, 0);
        assert_eq!(queued(&a), [1, 2, 3]);
        let seqs: Vec<u64> = a.state.lock().pending.iter().map(|d| d.seq).collect();
        // The QoS 1 message was numbered for the store; QoS 0 ones are never stored.
        assert_eq!(seqs, [0, 1, 0]);
    }

    #[test]
    fn grouped_queueing_into_a_full_queue_sheds_qos0_first_and_counts_every_drop() {
        let (a, b) = (session("a"), session("b"));
        let limits = QueueLimits {
            max_messages: 3,
            ..UNLIMITED
        };
        let mut pending = vec![
            (a.clone(), delivery(1, QoS::AtMostOnce)),
            (b.clone(), delivery(1, QoS::AtLeastOnce)),
            (a.clone(), delivery(2, QoS::AtLeastOnce)),
            (a.clone(), delivery(3, QoS::AtLeastOnce)),
            // Full: the QoS 0 message at the head is shed to make room (a drop).
            (a.clone(), delivery(4, QoS::AtLeastOnce)),
            // Full of QoS 1: refused (a drop), as is a QoS 0 one.
            (a.clone(), delivery(5, QoS::AtLeastOnce)),
            (a.clone(), delivery(6, QoS::AtMostOnce)),
            (b.clone(), delivery(2, QoS::AtLeastOnce)),
        ];
        let refused = queue_grouped(&mut pending, &limits, None, &mut Wakes::default());
        // Refused outright: 5 and 6 (the shed QoS 0 one was queued, then dropped).
        assert_eq!(refused, 2);
        assert_eq!(queued(&a), [2, 3, 4]);
        assert_eq!(queued(&b), [1, 2]);
        assert_eq!(a.state.lock().dropped, 3);
        assert_eq!(b.state.lock().dropped, 0);
    }
}
