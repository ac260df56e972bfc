//! The publish path: one application message to every session with a matching subscription —
//! the retained store and the history first, then each direct subscriber's queue, then one
//! member of each matching shared subscription group — and the hand-off of an ended session's
//! unfinished shared messages to the rest of its groups. It runs on the publishing thread (a
//! client's reader, the ticker for wills and `$SYS`, `web` for the page's publish) and never
//! waits on a subscriber: the router's read lock is taken alone, then each session's state alone.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::outbox::Wakes;
use super::router::{self, SharedGroup};
use super::session::{Delivery, DropReason, QueueLimits, Session};
use super::Broker;
use crate::message::Message;
use crate::protocol::{Properties, QoS};
use crate::store::DurableTicket;

/// A publishing thread's reusable routing buffers: the matched targets, and the outboxes owed a
/// flush.
#[derive(Default)]
pub struct Routing {
    targets: Vec<(Arc<Session>, Delivery)>,
    /// The matched shared subscription groups, each to give the message to one member.
    groups: Vec<SharedGroup>,
    pub wakes: Wakes,
    /// Messages for the store's history, sent after the flush: off the delivery path.
    history: Vec<Arc<Message>>,
    /// Leave the flushes to the caller: a reader thread flushes once per chunk it read.
    defer: bool,
}

impl Routing {
    /// Buffers for a reader thread, which calls [`Routing::flush`] itself.
    pub fn deferred() -> Routing {
        Routing {
            defer: true,
            ..Routing::default()
        }
    }

    /// Writes to every outbox owed a flush, then hands the history to the store.
    pub fn flush(&mut self, broker: &Broker) {
        self.wakes.flush();
        if !self.history.is_empty() {
            broker
                .store
                .record_messages(std::mem::take(&mut self.history));
        }
    }
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
        self.router
            .route(&msg, &mut scratch.targets, &mut scratch.groups);
        let limits = super::queue_limits(&cfg);
        let acl = self.delivery_acl();
        let matched = scratch.targets.len() + scratch.groups.len();
        for (session, delivery) in scratch.targets.drain(..) {
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
