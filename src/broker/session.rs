//! A client's session (§4.1): its subscriptions, the queue of messages waiting for it, the
//! outbound in-flight window with packet-id allocation, inbound QoS 2 state, expiry and will.
//!
//! A session outlives connections when it is persistent. It is shared by `Arc` between the
//! connection's reader thread (acks, subscriptions), whichever thread holds the outbox's write
//! turn (takes what may be sent), every publisher's thread (enqueues) and the ticker (expiry). All of that goes through one
//! `parking_lot::Mutex` per session, held only for queue operations — never across I/O.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use super::outbox::{Outbox, Wakes};
use super::packet_ids::PacketIdSet;
use crate::auth::AclSet;
use crate::message::Message;
use crate::protocol::{ProtocolVersion, QoS, SubscriptionOptions, Will};
use crate::store::{DurableTicket, MessageState, StoreHandle};

/// Session Expiry Interval value meaning "never expires" (§3.1.2.11.2).
pub const NEVER_EXPIRES: u32 = u32::MAX;

/// A connected client that has taken nothing from its queue for this long counts as stalled:
/// its queue is then held to `max_queued_messages`. One that keeps taking messages may fall
/// behind a fast publisher by up to `max_queued_bytes` without losing any, because a thread
/// that is merely scheduled late is not a slow consumer.
pub const STALL_GRACE: Duration = Duration::from_secs(2);

/// Bytes a queued delivery costs beyond its topic and payload (the `Delivery`, its `Arc`s and
/// the queue slot), so that `max_queued_bytes` bounds real memory even for tiny messages.
const DELIVERY_OVERHEAD: usize = 96;

fn queued_size(d: &Delivery) -> usize {
    d.msg.size() + DELIVERY_OVERHEAD
}

/// One message on its way to one subscriber.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub msg: Arc<Message>,
    /// min(published QoS, granted QoS).
    pub qos: QoS,
    /// The RETAIN flag to send: set for retained messages sent at subscribe, else per Retain As
    /// Published.
    pub retain: bool,
    /// Subscription Identifiers of every matching subscription (§3.3.4).
    pub sub_ids: Vec<u32>,
    /// The shared subscription (`$share/g/f`) it was delivered through, so that it can be handed
    /// to another member if this session goes away.
    pub share: Option<Arc<str>>,
    /// Its number in the session's stored messages; 0 when it is not stored (QoS 0, or a
    /// session that is not persistent).
    pub seq: u64,
}

/// An outbound QoS 1/2 message the client has not finished acknowledging.
#[derive(Debug, Clone)]
pub enum Inflight {
    /// PUBLISH sent; waiting for PUBACK (QoS 1) or PUBREC (QoS 2).
    Publish(Delivery),
    /// PUBREC received and PUBREL sent; waiting for PUBCOMP. `seq` as in [`Delivery::seq`].
    Released { seq: u64 },
}

/// How many acknowledged QoS 1/2 messages a session remembers for the control page.
pub const RECENT_ACKNOWLEDGED: usize = 8;

/// A QoS 1/2 message the subscriber acknowledged, remembered for the control page's QoS tab
/// (the payload is not kept).
#[derive(Debug, Clone)]
pub struct Acknowledged {
    pub packet_id: u16,
    pub topic: String,
    pub qos: QoS,
    pub retain: bool,
    pub payload_len: usize,
    /// When the subscriber acknowledged it: PUBACK, PUBREC, then PUBCOMP for QoS 2.
    pub at: Instant,
    /// QoS 2: PUBCOMP received (until then only PUBREC). Always true for QoS 1.
    pub complete: bool,
}

impl Acknowledged {
    fn of(packet_id: u16, d: &Delivery, at: Instant) -> Acknowledged {
        Acknowledged::of_topic(packet_id, d, at, d.msg.topic.clone())
    }

    fn of_topic(packet_id: u16, d: &Delivery, at: Instant, topic: String) -> Acknowledged {
        Acknowledged {
            packet_id,
            topic,
            qos: d.qos,
            retain: d.retain,
            payload_len: d.msg.payload.len(),
            at,
            complete: d.qos == QoS::AtLeastOnce,
        }
    }
}

/// An in-flight entry and when it was first sent, so that a resumed session resends in the
/// original order even after packet ids wrap (MQTT-4.6.0-5).
#[derive(Debug, Clone)]
pub struct InflightEntry {
    pub order: u64,
    pub state: Inflight,
}

/// What the live connection told us about itself in CONNECT, bounding what we send it.
#[derive(Debug, Clone, Copy)]
pub struct LinkLimits {
    pub protocol: ProtocolVersion,
    /// The client's Receive Maximum: at most this many unacknowledged QoS>0 PUBLISH (§4.9).
    pub receive_maximum: u16,
    /// The client's Maximum Packet Size; larger messages are dropped for it (§3.1.2.11.4).
    pub max_packet_size: u32,
    /// The client's Topic Alias Maximum for aliases we send.
    pub topic_alias_maximum: u16,
}

/// Limits on a session's queue of waiting messages (the `max_queued_*` settings).
#[derive(Debug, Clone, Copy)]
pub struct QueueLimits {
    /// 0 = no count limit.
    pub max_messages: usize,
    /// 0 = no byte limit.
    pub max_bytes: usize,
    /// Queue QoS 0 messages for an offline persistent session.
    pub queue_qos0_offline: bool,
}

/// Why a message was not queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropReason {
    QueueFull,
    OfflineQos0,
    /// The ACL no longer lets this client read the topic.
    NotAuthorized,
}

/// A subscription as the session remembers it (for resume and for the control page).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscriptionRecord {
    pub options: SubscriptionOptions,
    pub subscription_id: Option<u32>,
}

/// A will waiting for its Will Delay Interval (§3.1.3.2.2).
#[derive(Debug, Clone)]
pub struct DelayedWill {
    pub due: Instant,
    pub msg: Arc<Message>,
}

pub struct Session {
    pub client_id: Arc<str>,
    pub state: Mutex<SessionState>,
    /// Mirrors `state.durable.is_some()`, written with it under the lock
    /// ([`Session::set_durable`]) and read without it by publishers, which queue a message for a
    /// session that stores nothing in batches ([`Session::enqueue_batch`]) but store one for a
    /// persistent session before queueing it, one at a time. A stale read is safe either way:
    /// the batch checks again under the lock.
    persistent: AtomicBool,
}

/// Where a persistent session keeps its QoS 1/2 messages: the store and the session's key.
/// Nothing is sent to the store while the session's lock is held (a database that cannot
/// commit must never hold up a broker lock): changes are collected under it ([`StoreOps`]) and
/// sent once it is released. Order still holds where it matters: a kept message is sent before
/// it joins the queue (so before anyone can send, acknowledge or forget it), an
/// acknowledgement's change is sent by the reader before it reads more from the socket or
/// handles any packet but another PUBACK (a run of PUBACKs is completed together), and the
/// store never moves a message back from `released` to `inflight`.
#[derive(Clone)]
pub struct Durable {
    pub store: StoreHandle,
    pub client_id: Arc<str>,
}

/// A change to a kept message, collected under the session's lock.
#[derive(Debug, Clone, Copy)]
enum StoreOp {
    Remove {
        seq: u64,
    },
    State {
        seq: u64,
        packet_id: u16,
        state: MessageState,
    },
}

/// Changes to a session's kept messages, taken out from under its lock
/// ([`SessionState::take_store_ops`]) to be sent once it is released.
#[must_use = "send the collected store changes once the lock is released"]
#[derive(Default)]
pub struct StoreOps {
    ops: Vec<(Durable, StoreOp)>,
}

impl StoreOps {
    /// Adds `more` after what is already collected.
    pub fn append(&mut self, mut more: StoreOps) {
        self.ops.append(&mut more.ops);
    }

    /// Sends the changes, in order. Call with no broker lock held.
    pub fn send(self) {
        for (d, op) in self.ops {
            match op {
                StoreOp::Remove { seq } => d.store.remove_message(&d.client_id, seq),
                StoreOp::State {
                    seq,
                    packet_id,
                    state,
                } => d
                    .store
                    .message_state(&d.client_id, seq, Some(packet_id), state),
            }
        }
    }
}

pub struct SessionState {
    /// The live connection's outbox; `None` while the client is offline.
    pub outbox: Option<Arc<Outbox>>,
    pub link: LinkLimits,
    /// Filter (with `$share/g/` prefix for shared ones) → options.
    pub subscriptions: HashMap<String, SubscriptionRecord>,
    pub pending: VecDeque<Delivery>,
    pub pending_bytes: usize,
    pub inflight: BTreeMap<u16, InflightEntry>,
    /// Sending order of the next in-flight entry.
    next_order: u64,
    /// Packet ids to resend first after the session resumes (§4.4).
    pub resend: VecDeque<u16>,
    next_packet_id: u16,
    /// Inbound QoS 2 packet ids whose PUBREC was sent and PUBREL not yet received (§4.3.3);
    /// at most 8 KiB even when a client keeps all 65535 ids in flight.
    pub inbound_qos2: PacketIdSet,
    /// Seconds; [`NEVER_EXPIRES`] for never.
    pub expiry_interval: u32,
    pub disconnected_at: Option<Instant>,
    pub delayed_will: Option<DelayedWill>,
    /// Messages dropped for this session (queue full, offline QoS 0, too large, expired).
    pub dropped: u64,
    /// Set once the session has ended; enqueues after that are refused.
    pub ended: bool,
    /// The last time the client took a message or acknowledged one (see [`STALL_GRACE`]).
    pub last_progress: Instant,
    /// The username the client logged in with, for per-delivery ACL checks.
    pub username: Option<Arc<str>>,
    /// Set while the session is persistent: its QoS 1/2 messages are stored.
    pub durable: Option<Durable>,
    /// The next [`Delivery::seq`].
    pub next_seq: u64,
    /// The last [`RECENT_ACKNOWLEDGED`] acknowledged QoS 1/2 messages, oldest first.
    pub acknowledged: VecDeque<Acknowledged>,
    /// Changes to kept messages made under the lock, for the store once it is released.
    store_ops: StoreOps,
}

/// A message ready to be written to the client.
#[derive(Debug)]
pub enum Outgoing {
    Publish {
        delivery: Delivery,
        packet_id: u16,
        dup: bool,
    },
    PubRel {
        packet_id: u16,
    },
}

impl Session {
    pub fn new(client_id: Arc<str>, link: LinkLimits) -> Session {
        Session {
            client_id,
            state: Mutex::new(SessionState {
                outbox: None,
                link,
                subscriptions: HashMap::new(),
                pending: VecDeque::new(),
                pending_bytes: 0,
                inflight: BTreeMap::new(),
                next_order: 0,
                resend: VecDeque::new(),
                next_packet_id: 1,
                inbound_qos2: PacketIdSet::new(),
                expiry_interval: 0,
                disconnected_at: None,
                delayed_will: None,
                dropped: 0,
                ended: false,
                last_progress: Instant::now(),
                username: None,
                durable: None,
                next_seq: 1,
                acknowledged: VecDeque::new(),
                store_ops: StoreOps::default(),
            }),
            persistent: AtomicBool::new(false),
        }
    }

    /// Sets (or clears) where the session keeps its QoS 1/2 messages; `st` is this session's
    /// locked state. Returns what it replaces. Every change of `durable` goes through here, so
    /// that [`Session::maybe_persistent`] follows it.
    pub fn set_durable(&self, st: &mut SessionState, durable: Option<Durable>) -> Option<Durable> {
        self.persistent.store(durable.is_some(), Ordering::Relaxed);
        std::mem::replace(&mut st.durable, durable)
    }

    /// Whether the session stores its QoS 1/2 messages, read without its lock: a hint for the
    /// publish path, exact only under the lock.
    pub fn maybe_persistent(&self) -> bool {
        self.persistent.load(Ordering::Relaxed)
    }

    /// Keeps `will` (or no will) in the store with this persistent session, so a restart
    /// publishes it, when `outbox` is still the session's connection (a takeover owns the
    /// session's will from then on). Returns whether it was kept.
    pub fn keep_will(&self, outbox: &Arc<Outbox>, will: Option<&Will>) -> bool {
        let durable = {
            let st = self.state.lock();
            let live = st.outbox.as_ref().is_some_and(|o| Arc::ptr_eq(o, outbox));
            st.durable.clone().filter(|_| live)
        };
        match durable {
            Some(d) => {
                d.store.set_will(&d.client_id, will.cloned());
                true
            }
            None => false,
        }
    }

    /// Queues a delivery and writes it to the client now, if connected. Never blocks on the
    /// subscriber's socket.
    pub fn enqueue(&self, delivery: Delivery, limits: &QueueLimits) -> Result<(), DropReason> {
        let mut wakes = Wakes::default();
        let queued = self.enqueue_checked(delivery, limits, None, &mut wakes);
        wakes.flush();
        queued.map(|_| ())
    }

    /// Queues a delivery, refusing a message the client may not read under `acl`, and storing
    /// a QoS 1/2 message of a persistent session: the ticket fires once it is committed. The
    /// connection's outbox joins `wakes` when it is owed a flush. A refused message counts as
    /// dropped for this session.
    pub fn enqueue_checked(
        &self,
        delivery: Delivery,
        limits: &QueueLimits,
        acl: Option<&AclSet>,
        wakes: &mut Wakes,
    ) -> Result<Option<DurableTicket>, DropReason> {
        self.enqueue_or_refuse(delivery, limits, acl, wakes, true)
    }

    /// [`Session::enqueue_checked`] for one member of a shared subscription group: a refusal is
    /// not counted here, because the message is offered to the next member (§4.8.2).
    pub fn offer_shared(
        &self,
        delivery: Delivery,
        limits: &QueueLimits,
        acl: Option<&AclSet>,
        wakes: &mut Wakes,
    ) -> Result<Option<DurableTicket>, DropReason> {
        self.enqueue_or_refuse(delivery, limits, acl, wakes, false)
    }

    /// Counts a message this session should have had and did not get (no member of its shared
    /// subscription group could take it).
    pub fn count_drop(&self) {
        self.state.lock().count_refusal(DropReason::QueueFull);
    }

    /// True while a connection is attached.
    pub fn is_online(&self) -> bool {
        self.state.lock().outbox.is_some()
    }

    /// Queues `deliveries`, in their order, taking the session's lock once for all of them
    /// rather than once each: ten publishers' reader threads feeding one subscriber otherwise
    /// meet on it for every message. Each is checked and admitted as by
    /// [`Session::enqueue_checked`] (ACL, queue limits, QoS 0 shed first, refusals counted for
    /// the session). Meant for sessions that store nothing; should the session have become
    /// persistent since the caller looked ([`Session::maybe_persistent`]), a QoS 1/2 delivery is
    /// stored and then queued as `enqueue_checked` does, with the lock released, and the rest
    /// follow it in order. Its ticket is not waited for: the message was routed while the
    /// session kept nothing, like one queued just before the session was resumed as persistent.
    /// Returns how many were refused for lack of room (not those the ACL keeps from it).
    pub fn enqueue_batch(
        &self,
        deliveries: &mut impl Iterator<Item = Delivery>,
        limits: &QueueLimits,
        acl: Option<&AclSet>,
        wakes: &mut Wakes,
    ) -> usize {
        let mut refused = 0;
        loop {
            let mut store_first = None;
            let outbox = {
                let mut st = self.state.lock();
                let mut queued = false;
                for delivery in deliveries.by_ref() {
                    if let Some(acl) = acl {
                        if !acl.can_read(
                            st.username.as_deref(),
                            &self.client_id,
                            &delivery.msg.topic,
                        ) {
                            continue;
                        }
                    }
                    if st.durable.is_some() && delivery.qos != QoS::AtMostOnce && !st.ended {
                        store_first = Some(delivery);
                        break;
                    }
                    match st.admit(delivery, limits) {
                        Ok(()) => queued = true,
                        Err(why) => {
                            st.count_refusal(why);
                            refused += 1;
                        }
                    }
                }
                st.outbox.clone().filter(|_| queued)
            };
            if let Some(outbox) = outbox {
                wakes.mark(outbox);
            }
            let Some(delivery) = store_first else {
                return refused;
            };
            match self.enqueue_or_refuse(delivery, limits, acl, wakes, true) {
                Ok(ticket) => drop(ticket),
                Err(DropReason::NotAuthorized) => {}
                Err(DropReason::QueueFull | DropReason::OfflineQos0) => refused += 1,
            }
        }
    }

    fn enqueue_or_refuse(
        &self,
        mut delivery: Delivery,
        limits: &QueueLimits,
        acl: Option<&AclSet>,
        wakes: &mut Wakes,
        count_refusal: bool,
    ) -> Result<Option<DurableTicket>, DropReason> {
        // A QoS 1/2 message for a persistent session is numbered under the lock, sent to the
        // store with the lock released, and only then queued: so it reaches the store before
        // anything can send, acknowledge or forget it.
        let mut kept = None;
        {
            let mut st = self.state.lock();
            if let Some(acl) = acl {
                if !acl.can_read(st.username.as_deref(), &self.client_id, &delivery.msg.topic) {
                    return Err(DropReason::NotAuthorized);
                }
            }
            if let (Some(d), QoS::AtLeastOnce | QoS::ExactlyOnce) = (&st.durable, delivery.qos) {
                if !st.ended {
                    kept = Some(d.clone());
                    delivery.seq = st.next_seq;
                    st.next_seq += 1;
                }
            }
            if kept.is_none() {
                return match st.admit(delivery, limits) {
                    Ok(()) => {
                        let outbox = st.outbox.clone();
                        drop(st);
                        if let Some(outbox) = outbox {
                            wakes.mark(outbox);
                        }
                        Ok(None)
                    }
                    Err(why) => {
                        if count_refusal {
                            st.count_refusal(why);
                        }
                        Err(why)
                    }
                };
            }
        }
        let d = kept;
        let ticket = d.as_ref().map(|d| {
            d.store.persist_message(
                &d.client_id,
                delivery.seq,
                &delivery.msg,
                delivery.qos,
                delivery.retain,
            )
        });
        let seq = delivery.seq;
        let (queued, outbox) = {
            let mut st = self.state.lock();
            let queued = st.admit(delivery, limits);
            if let Err(why) = queued {
                if count_refusal {
                    st.count_refusal(why);
                }
            }
            (queued, st.outbox.clone())
        };
        match queued {
            Ok(()) => {
                if let Some(outbox) = outbox {
                    wakes.mark(outbox);
                }
                Ok(ticket)
            }
            Err(why) => {
                if let Some(d) = d {
                    d.store.remove_message(&d.client_id, seq);
                }
                Err(why)
            }
        }
    }
}

impl SessionState {
    /// Notes for the store that a kept message is done with (acknowledged, dropped or expired).
    fn forget(&mut self, seq: u64) {
        if let (Some(d), true) = (&self.durable, seq != 0) {
            let d = d.clone();
            self.store_ops.ops.push((d, StoreOp::Remove { seq }));
        }
    }

    fn record_state(&mut self, seq: u64, packet_id: u16, state: MessageState) {
        if let (Some(d), true) = (&self.durable, seq != 0) {
            let d = d.clone();
            self.store_ops.ops.push((
                d,
                StoreOp::State {
                    seq,
                    packet_id,
                    state,
                },
            ));
        }
    }

    /// The store changes collected under the lock: send them ([`StoreOps::send`]) once it is
    /// released.
    pub fn take_store_ops(&mut self) -> StoreOps {
        std::mem::take(&mut self.store_ops)
    }

    /// Appends to the queue within the limits: QoS 0 is shed first (§4.9 leaves the policy to us).
    /// A refused message counts as dropped.
    pub fn push(&mut self, delivery: Delivery, limits: &QueueLimits) -> Result<(), DropReason> {
        let pushed = self.admit(delivery, limits);
        if let Err(why) = pushed {
            self.count_refusal(why);
        }
        pushed
    }

    /// Counts a message refused for lack of room (a session that ended counts nothing more, and
    /// one the ACL kept from a message never should have had it).
    fn count_refusal(&mut self, why: DropReason) {
        if !self.ended && why != DropReason::NotAuthorized {
            self.dropped += 1;
        }
    }

    /// [`SessionState::push`] without counting a refusal of `delivery` itself (queued QoS 0
    /// messages it sheds do count): the caller decides whether it was dropped.
    fn admit(&mut self, delivery: Delivery, limits: &QueueLimits) -> Result<(), DropReason> {
        if self.ended {
            return Err(DropReason::QueueFull);
        }
        let qos0 = delivery.qos == QoS::AtMostOnce;
        if qos0 && self.outbox.is_none() && !limits.queue_qos0_offline {
            return Err(DropReason::OfflineQos0);
        }
        let size = queued_size(&delivery);
        while self.over_limit(size, limits) {
            if qos0 {
                return Err(DropReason::QueueFull);
            }
            // Make room for a QoS>0 message by shedding the oldest QoS 0 one, if any.
            match self.pending.iter().position(|d| d.qos == QoS::AtMostOnce) {
                Some(i) => {
                    if let Some(old) = self.pending.remove(i) {
                        self.pending_bytes -= queued_size(&old);
                    }
                    self.dropped += 1;
                }
                None => return Err(DropReason::QueueFull),
            }
        }
        self.pending_bytes += size;
        self.pending.push_back(delivery);
        Ok(())
    }

    fn over_limit(&self, extra_bytes: usize, limits: &QueueLimits) -> bool {
        let over_bytes = limits.max_bytes != 0
            && !self.pending.is_empty()
            && self.pending_bytes + extra_bytes > limits.max_bytes;
        let over_count = limits.max_messages != 0
            && self.pending.len() >= limits.max_messages
            && (self.outbox.is_none() || self.last_progress.elapsed() >= STALL_GRACE);
        over_bytes || over_count
    }

    /// The next free packet id, skipping ids still in flight (MQTT-2.2.1-3).
    fn allocate_packet_id(&mut self) -> Option<u16> {
        for _ in 0..=u16::MAX {
            let id = self.next_packet_id;
            self.next_packet_id = if id == u16::MAX { 1 } else { id + 1 };
            if !self.inflight.contains_key(&id) {
                return Some(id);
            }
        }
        None
    }

    fn window(&self) -> usize {
        usize::from(self.link.receive_maximum.max(1))
    }

    /// Moves what may be sent now into `out`: resends first, then queued messages while the
    /// client's Receive Maximum allows (MQTT-4.9.0-2). Expired messages are dropped here.
    pub fn take_sendable(&mut self, now: Instant, max_batch: usize, out: &mut Vec<Outgoing>) {
        let before = out.len();
        self.take_into(now, max_batch, out);
        if out.len() > before {
            self.last_progress = now;
        }
    }

    fn take_into(&mut self, now: Instant, max_batch: usize, out: &mut Vec<Outgoing>) {
        // The send quota starts afresh with each connection (§4.9), so resends count against it.
        while out.len() < max_batch && self.on_wire() < self.window() {
            let Some(id) = self.resend.pop_front() else {
                break;
            };
            match self.inflight.get(&id).map(|e| &e.state) {
                Some(Inflight::Publish(d)) => out.push(Outgoing::Publish {
                    delivery: d.clone(),
                    packet_id: id,
                    dup: true,
                }),
                Some(Inflight::Released { .. }) => out.push(Outgoing::PubRel { packet_id: id }),
                None => {}
            }
        }
        while out.len() < max_batch {
            let Some(front) = self.pending.front() else {
                break;
            };
            if front.qos != QoS::AtMostOnce && self.on_wire() >= self.window() {
                break;
            }
            let Some(delivery) = self.pending.pop_front() else {
                break;
            };
            self.pending_bytes -= queued_size(&delivery);
            if delivery.msg.remaining_expiry(now).is_err() {
                self.dropped += 1;
                self.forget(delivery.seq);
                continue;
            }
            if delivery.qos == QoS::AtMostOnce {
                out.push(Outgoing::Publish {
                    delivery,
                    packet_id: 0,
                    dup: false,
                });
                continue;
            }
            let Some(id) = self.allocate_packet_id() else {
                // Cannot happen while the window is below 65,535; keep the message for later.
                self.pending_bytes += queued_size(&delivery);
                self.pending.push_front(delivery);
                break;
            };
            // A stored QoS 2 message keeps its packet id across a restart, so that the client
            // can recognise the resend (§4.3.3); a QoS 1 one may simply be sent again.
            if delivery.qos == QoS::ExactlyOnce {
                self.record_state(delivery.seq, id, MessageState::Inflight);
            }
            let order = self.next_order;
            self.next_order += 1;
            self.inflight.insert(
                id,
                InflightEntry {
                    order,
                    state: Inflight::Publish(delivery.clone()),
                },
            );
            out.push(Outgoing::Publish {
                delivery,
                packet_id: id,
                dup: false,
            });
        }
    }

    /// Forgets an in-flight message that could not be sent (too large for the client): the spec
    /// says to behave as if sending it had completed (MQTT-3.1.2-25).
    pub fn discard_inflight(&mut self, packet_id: u16) {
        if let Some(e) = self.inflight.remove(&packet_id) {
            self.forget(e.seq());
        }
        self.dropped += 1;
    }

    /// Queues every in-flight message for resending, in packet-id order of sending, when a
    /// session resumes on a new connection (MQTT-4.4.0-1).
    pub fn schedule_resend(&mut self) {
        let mut ids: Vec<(u64, u16)> = self.inflight.iter().map(|(id, e)| (e.order, *id)).collect();
        ids.sort_unstable();
        self.resend = ids.into_iter().map(|(_, id)| id).collect();
    }

    /// In-flight entries sent on the current connection: those not still waiting to be resent.
    fn on_wire(&self) -> usize {
        if self.resend.is_empty() {
            return self.inflight.len();
        }
        let waiting = self
            .resend
            .iter()
            .filter(|id| self.inflight.contains_key(id))
            .count();
        self.inflight.len() - waiting
    }

    /// True when there is something the client could be sent now.
    pub fn has_sendable(&self) -> bool {
        let room = self.on_wire() < self.window();
        (room && !self.resend.is_empty())
            || self
                .pending
                .front()
                .is_some_and(|d| d.qos == QoS::AtMostOnce || room)
    }

    /// PUBACK: completes an outbound QoS 1 message. True when it was one.
    pub fn complete_qos1(&mut self, packet_id: u16) -> bool {
        self.complete_qos1_at(packet_id, Instant::now())
    }

    /// [`SessionState::complete_qos1`] with the time read once for a batch of PUBACKs.
    pub fn complete_qos1_at(&mut self, packet_id: u16, now: Instant) -> bool {
        let qos1 = matches!(
            self.inflight.get(&packet_id).map(|e| &e.state),
            Some(Inflight::Publish(d)) if d.qos == QoS::AtLeastOnce
        );
        if !qos1 {
            return false;
        }
        let Some(InflightEntry {
            state: Inflight::Publish(d),
            ..
        }) = self.inflight.remove(&packet_id)
        else {
            return false;
        };
        self.forget(d.seq);
        self.remember(packet_id, &d, now);
        self.last_progress = now;
        true
    }

    fn remember(&mut self, packet_id: u16, d: &Delivery, at: Instant) {
        // Once full, the oldest entry's topic buffer takes the new topic: a subscriber acking
        // every message otherwise allocates a topic copy and frees another for each.
        let oldest = (self.acknowledged.len() >= RECENT_ACKNOWLEDGED)
            .then(|| self.acknowledged.pop_front())
            .flatten();
        let done = match oldest {
            Some(mut old) => {
                old.topic.clear();
                old.topic.push_str(&d.msg.topic);
                Acknowledged::of_topic(packet_id, d, at, old.topic)
            }
            None => Acknowledged::of(packet_id, d, at),
        };
        self.acknowledged.push_back(done);
    }

    /// PUBREC: an outbound QoS 2 message was received; from now on only PUBREL is resent.
    /// False when no such PUBLISH is in flight.
    pub fn mark_released(&mut self, packet_id: u16) -> bool {
        let now = Instant::now();
        let Some(e) = self.inflight.get_mut(&packet_id) else {
            return false;
        };
        let Inflight::Publish(d) = &e.state else {
            return false;
        };
        let seq = d.seq;
        let Inflight::Publish(d) = std::mem::replace(&mut e.state, Inflight::Released { seq })
        else {
            return false;
        };
        self.record_state(seq, packet_id, MessageState::Released);
        self.remember(packet_id, &d, now);
        self.last_progress = now;
        true
    }

    /// PUBREC with a failure reason: the client refused an outbound QoS 2 message, which ends
    /// its delivery (§4.3.3, §4.13). Like PUBCOMP, the id is freed and the stored message goes;
    /// no PUBREL stage is recorded, so a restart does not resume it. False when no such
    /// PUBLISH is in flight.
    pub fn refuse_qos2(&mut self, packet_id: u16) -> bool {
        let seq = match self.inflight.get(&packet_id).map(|e| &e.state) {
            Some(Inflight::Publish(d)) if d.qos == QoS::ExactlyOnce => d.seq,
            _ => return false,
        };
        self.inflight.remove(&packet_id);
        self.forget(seq);
        self.last_progress = Instant::now();
        true
    }

    /// PUBCOMP: completes an outbound QoS 2 message.
    pub fn complete_qos2(&mut self, packet_id: u16) -> bool {
        let seq = match self.inflight.get(&packet_id).map(|e| &e.state) {
            Some(Inflight::Released { seq }) => *seq,
            _ => return false,
        };
        self.inflight.remove(&packet_id);
        self.forget(seq);
        let now = Instant::now();
        if let Some(a) = self
            .acknowledged
            .iter_mut()
            .rev()
            .find(|a| a.packet_id == packet_id && !a.complete)
        {
            a.complete = true;
            a.at = now;
        }
        self.last_progress = now;
        true
    }

    /// Puts a message restored from the store back where it was: queued, or in flight with its
    /// packet id (resent when the client returns).
    pub fn restore(&mut self, delivery: Delivery, inflight: Option<(u16, bool)>) {
        self.next_seq = self.next_seq.max(delivery.seq + 1);
        match inflight {
            None => {
                self.pending_bytes += queued_size(&delivery);
                self.pending.push_back(delivery);
            }
            Some((packet_id, released)) => {
                let state = if released {
                    Inflight::Released { seq: delivery.seq }
                } else {
                    Inflight::Publish(delivery)
                };
                let order = self.next_order;
                self.next_order += 1;
                self.inflight
                    .insert(packet_id, InflightEntry { order, state });
            }
        }
    }
}

impl InflightEntry {
    fn seq(&self) -> u64 {
        match &self.state {
            Inflight::Publish(d) => d.seq,
            Inflight::Released { seq } => *seq,
        }
    }
}

/// A delivery of a message on topic `t` carrying `payload`, for the unit tests of the queue and
/// of the publish path.
#[cfg(test)]
pub(crate) fn test_delivery(payload: Vec<u8>, qos: QoS) -> Delivery {
    Delivery {
        msg: Arc::new(Message {
            topic: "t".into(),
            payload,
            qos,
            retain: false,
            properties: crate::protocol::Properties::default(),
            publisher: None,
            received: Instant::now(),
        }),
        qos,
        retain: false,
        sub_ids: Vec::new(),
        share: None,
        seq: 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn link() -> LinkLimits {
        LinkLimits {
            protocol: ProtocolVersion::V5,
            receive_maximum: 2,
            max_packet_size: 1 << 20,
            topic_alias_maximum: 0,
        }
    }

    fn delivery(qos: QoS) -> Delivery {
        test_delivery(vec![0; 9], qos)
    }

    const LIMITS: QueueLimits = QueueLimits {
        max_messages: 3,
        max_bytes: 0,
        queue_qos0_offline: false,
    };

    #[test]
    fn mqtt_4_9_inflight_never_exceeds_receive_maximum() {
        let s = Session::new("c".into(), link());
        let mut st = s.state.lock();
        for _ in 0..3 {
            st.outbox = None;
            st.push(delivery(QoS::AtLeastOnce), &LIMITS).unwrap();
        }
        let mut out = Vec::new();
        st.take_sendable(Instant::now(), 100, &mut out);
        assert_eq!(out.len(), 2);
        assert_eq!(st.inflight.len(), 2);
        assert!(!st.has_sendable());
        st.inflight.remove(&1);
        assert!(st.has_sendable());
    }

    #[test]
    fn full_queue_sheds_qos0_before_qos1() {
        let s = Session::new("c".into(), link());
        let mut st = s.state.lock();
        let limits = QueueLimits {
            queue_qos0_offline: true,
            ..LIMITS
        };
        st.push(delivery(QoS::AtMostOnce), &limits).unwrap();
        st.push(delivery(QoS::AtLeastOnce), &limits).unwrap();
        st.push(delivery(QoS::AtLeastOnce), &limits).unwrap();
        assert_eq!(
            st.push(delivery(QoS::AtMostOnce), &limits),
            Err(DropReason::QueueFull)
        );
        st.push(delivery(QoS::ExactlyOnce), &limits).unwrap();
        assert!(st.pending.iter().all(|d| d.qos != QoS::AtMostOnce));
        assert_eq!(
            st.push(delivery(QoS::AtLeastOnce), &limits),
            Err(DropReason::QueueFull)
        );
        assert_eq!(st.dropped, 3);
    }

    #[test]
    fn packet_ids_skip_ids_in_flight_and_never_use_zero() {
        let s = Session::new("c".into(), link());
        let mut st = s.state.lock();
        st.next_packet_id = u16::MAX;
        st.inflight.insert(
            1,
            InflightEntry {
                order: 0,
                state: Inflight::Released { seq: 0 },
            },
        );
        assert_eq!(st.allocate_packet_id(), Some(u16::MAX));
        assert_eq!(st.allocate_packet_id(), Some(2));
    }
}
