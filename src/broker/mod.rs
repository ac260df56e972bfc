//! The broker: shared state and the operations every thread uses.
//!
//! [`Broker`] is shared by `Arc` between client threads, the ticker and the web thread. It owns
//! the session registry, the subscription router, the retained store, the live-connection table
//! and the counters. Client threads call it to open and close sessions and to publish; the web
//! thread reads it for the control page and uses the same calls to act.
//!
//! Lock order (never hold two at once unless listed here, and never across I/O):
//! `sessions` → one `Session::state`; `router` and `retained` are taken alone.

pub mod connection;
pub mod error;
pub mod handle;
pub mod outbox;
pub mod packet_ids;
pub mod restore;
pub mod retain;
pub mod router;
pub mod server;
pub mod session;
mod socket;
mod stack;
pub mod stats;
pub mod sys;
pub mod ticker;
pub mod topic_tree;
pub mod view;
pub mod writer;

use std::collections::HashMap;
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use crate::config::Config;
use crate::message::Message;
use crate::protocol::{
    encoded_len, Disconnect, Packet, Properties, ProtocolVersion, QoS, ReasonCode,
};
use crate::store::{
    now_ms, DurableTicket, SessionRecord, StoreError, StoreHandle, SubscriptionRow,
};
use outbox::{Outbox, Wakes};
use retain::RetainStore;
use router::{Router, SharedGroup};
use session::{Delivery, DropReason, Durable, Inflight, LinkLimits, QueueLimits, Session};
use stats::Stats;

/// A connection the broker can reach to disconnect it (server stop, takeover, the web page).
struct LiveConn {
    stream: Arc<TcpStream>,
    outbox: Option<Arc<Outbox>>,
    client_id: Option<Arc<str>>,
    /// The keep alive in force (after any Server Keep Alive), once CONNECT is accepted.
    keep_alive: Option<u16>,
    /// The client's Maximum Packet Size, which bounds the DISCONNECT it may be sent.
    max_packet_size: u32,
    /// Connected as a bridge (the Protocol Level's bridge bit).
    bridge: bool,
    peer: SocketAddr,
    connected_at: Instant,
}

pub struct Broker {
    pub config: Arc<Config>,
    pub stats: Arc<Stats>,
    pub router: Router,
    pub retained: RetainStore,
    sessions: Mutex<HashMap<Arc<str>, Arc<Session>>>,
    conns: Mutex<HashMap<u64, LiveConn>>,
    /// Sockets accepted and not yet closed: the number `max_clients` limits.
    pub active_connections: AtomicUsize,
    next_conn_id: AtomicU64,
    pub started: Instant,
    /// The database thread's handle: history, client records, retained messages and
    /// persistent sessions go there; accounts and ACLs come from there.
    pub store: StoreHandle,
    /// Recent CONNECT times per client id, for `connect_rate_limit`.
    connect_times: Mutex<HashMap<String, Vec<Instant>>>,
    /// The writer thread, for sockets that were full.
    pub writer: Arc<writer::Writer>,
}

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

/// The window of `connect_rate_limit`.
const RATE_WINDOW: Duration = Duration::from_secs(60);

/// What a CONNECT asks of its session: the fields of [`Broker::open_session`]'s request.
pub struct OpenRequest<'a> {
    pub client_id: &'a Arc<str>,
    pub clean_start: bool,
    pub link: LinkLimits,
    pub expiry_interval: u32,
    pub username: Option<&'a str>,
}

/// What `open_session` did.
pub struct Opened {
    pub session: Arc<Session>,
    pub session_present: bool,
}

impl Broker {
    /// The broker over `store`, with the retained messages and persistent sessions it kept
    /// restored (see [`restore`]).
    pub fn with_store(
        config: Config,
        store: StoreHandle,
        writer: Arc<writer::Writer>,
    ) -> Result<Arc<Broker>, StoreError> {
        let broker = Arc::new(Broker {
            config: Arc::new(config),
            stats: Arc::new(Stats::default()),
            router: Router::new(),
            retained: RetainStore::new(),
            sessions: Mutex::new(HashMap::new()),
            conns: Mutex::new(HashMap::new()),
            active_connections: AtomicUsize::new(0),
            next_conn_id: AtomicU64::new(1),
            started: Instant::now(),
            store,
            connect_times: Mutex::new(HashMap::new()),
            writer,
        });
        let snapshot = broker.store.load()?;
        restore::restore(&broker, snapshot);
        Ok(broker)
    }

    /// At shutdown: persistent sessions of connected clients count as disconnected now (so their
    /// expiry runs from here), and everything sent to the store is committed.
    pub fn save_on_shutdown(&self) {
        let sessions: Vec<Arc<Session>> = self.sessions.lock().values().cloned().collect();
        let at = now_ms();
        for s in sessions {
            let st = s.state.lock();
            if st.durable.is_some() && st.disconnected_at.is_none() {
                self.store.session_disconnected(&s.client_id, at);
            }
        }
        if let Err(e) = self.store.flush().wait() {
            log::error!("store: final flush failed: {e}");
        }
    }

    /// True when `client_id` has connected more than `connect_rate_limit` times in the last
    /// minute (this attempt included).
    pub fn connect_rate_exceeded(&self, client_id: &str) -> bool {
        let limit = self.config.connect_rate_limit as usize;
        if limit == 0 || client_id.is_empty() {
            return false;
        }
        let now = Instant::now();
        let mut times = self.connect_times.lock();
        let list = times.entry(client_id.to_owned()).or_default();
        list.retain(|t| now.saturating_duration_since(*t) < RATE_WINDOW);
        if list.len() >= limit {
            return true;
        }
        list.push(now);
        false
    }

    /// Forgets connect times older than the rate window. Called by the ticker.
    pub fn prune_connect_times(&self, now: Instant) {
        self.connect_times.lock().retain(|_, list| {
            list.retain(|t| now.saturating_duration_since(*t) < RATE_WINDOW);
            !list.is_empty()
        });
    }

    /// The ACL snapshot to check deliveries against, or `None` when no rule exists.
    pub(crate) fn delivery_acl(&self) -> Option<Arc<crate::auth::AclSet>> {
        let acl = self.store.acl();
        acl.has_rules().then_some(acl)
    }

    pub fn queue_limits(&self) -> QueueLimits {
        QueueLimits {
            max_messages: self.config.max_queued_messages,
            max_bytes: self.config.max_queued_bytes,
            queue_qos0_offline: self.config.queue_qos0_messages,
        }
    }

    pub fn next_conn_id(&self) -> u64 {
        self.next_conn_id.fetch_add(1, Ordering::Relaxed)
    }

    // ---- live connections -------------------------------------------------------------------

    pub fn register_conn(&self, conn_id: u64, stream: Arc<TcpStream>, peer: SocketAddr) {
        self.conns.lock().insert(
            conn_id,
            LiveConn {
                stream,
                outbox: None,
                client_id: None,
                keep_alive: None,
                max_packet_size: u32::MAX,
                bridge: false,
                peer,
                connected_at: Instant::now(),
            },
        );
    }

    pub fn attach_conn(
        &self,
        conn_id: u64,
        outbox: Arc<Outbox>,
        client_id: Arc<str>,
        keep_alive: u16,
        max_packet_size: u32,
        bridge: bool,
    ) {
        if let Some(c) = self.conns.lock().get_mut(&conn_id) {
            c.outbox = Some(outbox);
            c.client_id = Some(client_id);
            c.keep_alive = Some(keep_alive);
            c.max_packet_size = max_packet_size;
            c.bridge = bridge;
        }
    }

    pub fn unregister_conn(&self, conn_id: u64) {
        self.conns.lock().remove(&conn_id);
    }

    /// Closes one connection: 5.0 clients get DISCONNECT with `reason` first. False when there
    /// is no such connection, or it is already closing.
    pub fn disconnect_conn(&self, conn_id: u64, reason: ReasonCode) -> bool {
        let conns = self.conns.lock();
        match conns.get(&conn_id) {
            Some(c) if c.outbox.as_ref().is_some_and(|o| o.is_closing()) => false,
            Some(c) => {
                close_live(c, reason);
                true
            }
            None => false,
        }
    }

    /// Closes every connection (server stop): DISCONNECT 0x8B to 5.0 clients (§4.13).
    pub fn disconnect_all(&self, reason: ReasonCode) {
        for c in self.conns.lock().values() {
            close_live(c, reason);
        }
    }

    pub fn connection_count(&self) -> usize {
        self.conns.lock().len()
    }

    // ---- sessions ---------------------------------------------------------------------------

    /// Registers a session restored at start.
    pub(crate) fn insert_session(&self, client_id: Arc<str>, session: Arc<Session>) {
        self.sessions.lock().insert(client_id, session);
    }

    pub fn session_count(&self) -> usize {
        self.sessions.lock().len()
    }

    /// Attaches a new connection to the client's session: takes over a live one (the old
    /// connection gets DISCONNECT 0x8E, MQTT-3.1.4-3), resumes a stored one when Clean Start is
    /// 0, or starts afresh (MQTT-3.1.2-4). The outbox is attached last, so whatever the session
    /// held is sent after the CONNACK that `connack(session_present)` builds. A persistent
    /// session is saved to the store; one that stops being persistent is deleted from it.
    pub fn open_session(
        &self,
        request: OpenRequest<'_>,
        outbox: &Arc<Outbox>,
        connack: impl FnOnce(bool) -> Packet,
    ) -> Opened {
        let OpenRequest {
            client_id,
            clean_start,
            link,
            expiry_interval,
            username,
        } = request;
        let mut sessions = self.sessions.lock();
        // CONNACK is queued while the registry is locked, before the outbox joins the session,
        // so a takeover racing this CONNECT always finds it queued: the first packet a client
        // gets is its CONNACK (MQTT-3.2.0-1), never a bare DISCONNECT 0x8E.
        let present = !clean_start && sessions.contains_key(client_id);
        outbox.queue(&connack(present));
        let existing = sessions.get(client_id).cloned();
        let mut old_outbox = None;
        let mut session_present = false;
        let mut to_end = None;
        let username: Option<Arc<str>> = username.map(Arc::from);
        let durable = (expiry_interval > 0).then(|| Durable {
            store: self.store.clone(),
            client_id: client_id.clone(),
        });
        let session = match existing {
            Some(s) if !clean_start => {
                let mut st = s.state.lock();
                old_outbox = st.outbox.take().map(|o| (o, st.link.max_packet_size));
                // A resumed session cancels a will still waiting for its delay (§3.1.3.2.2).
                st.delayed_will = None;
                st.link = link;
                st.expiry_interval = expiry_interval;
                st.disconnected_at = None;
                st.last_progress = Instant::now();
                st.username = username;
                if durable.is_some() {
                    self.store.save_session(session_record(client_id, &st));
                } else if st.durable.is_some() {
                    self.store.delete_session(client_id);
                    forget_seqs(&mut st);
                }
                st.durable = durable;
                st.schedule_resend();
                st.outbox = Some(outbox.clone());
                session_present = true;
                drop(st);
                s
            }
            other => {
                if let Some(old) = other {
                    let mut st = old.state.lock();
                    old_outbox = st.outbox.take().map(|o| (o, st.link.max_packet_size));
                    if st.durable.take().is_some() {
                        self.store.delete_session(client_id);
                    }
                    drop(st);
                    to_end = Some(old);
                }
                let s = Arc::new(Session::new(client_id.clone(), link));
                {
                    let mut st = s.state.lock();
                    st.expiry_interval = expiry_interval;
                    st.username = username;
                    if durable.is_some() {
                        self.store.save_session(session_record(client_id, &st));
                    }
                    st.durable = durable;
                    st.outbox = Some(outbox.clone());
                }
                sessions.insert(client_id.clone(), s.clone());
                s
            }
        };
        drop(sessions);
        // End the replaced session before its connection closes, so that the old reader sees
        // it ended (and publishes its will) rather than taken over by a resume (cancelled).
        if let Some(old) = to_end {
            self.end_session(&old, true);
        }
        if let Some((old, max_packet_size)) = old_outbox {
            let reason = (old.version.is_v5())
                .then(|| disconnect_packet(ReasonCode::SessionTakenOver, max_packet_size));
            old.close(reason.as_ref());
        }
        Opened {
            session,
            session_present,
        }
    }

    /// Changes the Session Expiry Interval at DISCONNECT (§3.14.2.2.2), keeping the store in
    /// step: a session that stays persistent is saved with the new interval.
    pub fn set_session_expiry(&self, session: &Arc<Session>, expiry_interval: u32) {
        let mut st = session.state.lock();
        st.expiry_interval = expiry_interval;
        if expiry_interval > 0 && st.durable.is_some() {
            self.store
                .save_session(session_record(&session.client_id, &st));
        }
    }

    /// Detaches a closed connection from its session. Returns true when the connection was
    /// still the session's live one (false after a takeover). A session with expiry 0 ends now.
    pub fn close_session_link(&self, session: &Arc<Session>, outbox: &Arc<Outbox>) -> bool {
        let (current, expiry) = {
            let mut st = session.state.lock();
            let current = st.outbox.as_ref().is_some_and(|o| Arc::ptr_eq(o, outbox));
            if current {
                st.outbox = None;
                st.disconnected_at = Some(Instant::now());
                if st.expiry_interval > 0 && st.durable.is_some() {
                    self.store
                        .session_disconnected(&session.client_id, now_ms());
                }
            }
            (current, st.expiry_interval)
        };
        if current && expiry == 0 {
            self.end_session(session, false);
        }
        current
    }

    /// Ends a session: its subscriptions go, a pending will is published (the session ending
    /// comes before the will delay, §3.1.3.2.2), and messages it received through shared
    /// subscriptions and had not finished are handed to another member of the group (see
    /// `hand_off`: it waits for the store when a persistent member takes them).
    pub fn end_session(&self, session: &Arc<Session>, replaced: bool) {
        {
            let mut sessions = self.sessions.lock();
            if !replaced
                && sessions
                    .get(&session.client_id)
                    .is_some_and(|s| Arc::ptr_eq(s, session))
            {
                sessions.remove(&session.client_id);
            }
        }
        let (subs, handoff, will) = {
            let mut st = session.state.lock();
            if st.ended {
                return;
            }
            st.ended = true;
            if st.durable.take().is_some() {
                self.store.delete_session(&session.client_id);
            }
            let subs: Vec<String> = st.subscriptions.drain().map(|(f, _)| f).collect();
            let mut handoff: Vec<Delivery> = Vec::new();
            for d in st.pending.drain(..) {
                if d.share.is_some() {
                    handoff.push(d);
                }
            }
            // An unacknowledged QoS 1 message goes to another member; a QoS 2 one already sent
            // must not (MQTT-4.8.2-5).
            for (_, entry) in std::mem::take(&mut st.inflight) {
                if let Inflight::Publish(d) = entry.state {
                    if d.share.is_some() && d.qos == crate::protocol::QoS::AtLeastOnce {
                        handoff.push(d);
                    }
                }
            }
            st.pending_bytes = 0;
            st.resend.clear();
            (subs, handoff, st.delayed_will.take())
        };
        for full in &subs {
            match crate::protocol::topic::parse_shared(full) {
                Some(Ok((_, inner))) => {
                    let share: Arc<str> = Arc::from(full.as_str());
                    self.router.unsubscribe(session, Some(share), inner);
                }
                _ => {
                    self.router.unsubscribe(session, None, full);
                }
            }
        }
        if !handoff.is_empty() {
            self.hand_off(session, handoff);
        }
        if let Some(will) = will {
            let msg = Arc::new(will.msg.received_at(Instant::now()));
            self.publish(msg, &mut Routing::default());
        }
    }

    /// Gives the shared-subscription messages an ended session had not finished to the other
    /// members of their groups, each chosen like any routing pick (round robin, online first,
    /// passed on by a member with a full queue or that the ACL does not let read the topic). A
    /// persistent member keeps what it takes in the store, and the hand-off waits (at most
    /// [`DURABLE_WAIT`]) for that commit: the ended session's copy is gone, so until then the
    /// message would be lost by a crash although its publisher was acknowledged long ago.
    fn hand_off(&self, ended: &Arc<Session>, handoff: Vec<Delivery>) {
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
        if !wait_committed(tickets, &ended.client_id) {
            log::warn!(
                "client {}: the database did not commit the shared messages handed to other \
                 members within {DURABLE_WAIT:?}; they are kept in memory",
                ended.client_id
            );
        }
    }

    /// Sessions whose expiry interval has run out since they went offline, and delayed wills
    /// now due. Called by the ticker.
    pub fn expire(&self, now: Instant) {
        let sessions: Vec<Arc<Session>> = self.sessions.lock().values().cloned().collect();
        for s in sessions {
            let (expired, will) = {
                let mut st = s.state.lock();
                let will = match &st.delayed_will {
                    Some(w) if w.due <= now => st.delayed_will.take(),
                    _ => None,
                };
                if let (Some(_), Some(d)) = (&will, &st.durable) {
                    d.store.set_will(&d.client_id, None);
                }
                let expired = st.outbox.is_none()
                    && st.expiry_interval != session::NEVER_EXPIRES
                    && st.disconnected_at.is_some_and(|at| {
                        now.saturating_duration_since(at)
                            >= Duration::from_secs(u64::from(st.expiry_interval))
                    });
                (expired, will)
            };
            if let Some(will) = will {
                self.publish(Arc::new(will.msg.received_at(now)), &mut Routing::default());
            }
            if expired {
                log::info!("session {} expired", s.client_id);
                self.end_session(&s, false);
            }
        }
    }

    /// The Session Expiry Interval we grant: the client's, capped by
    /// `persistent_client_expiration` when that is set.
    pub fn cap_session_expiry(&self, requested: u32) -> u32 {
        match self.config.persistent_client_expiration {
            Some(limit) => {
                let limit = u32::try_from(limit.as_secs()).unwrap_or(session::NEVER_EXPIRES - 1);
                requested.min(limit)
            }
            None => requested,
        }
    }

    // ---- publishing -------------------------------------------------------------------------

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
        if self.config.history_per_topic > 0 && !sys {
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
        let limits = self.queue_limits();
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
/// publisher's acknowledgement, a shared-subscription hand-off).
pub const DURABLE_WAIT: Duration = Duration::from_secs(5);

/// Waits for `tickets` to commit, at most [`DURABLE_WAIT`] in all; false when the database did
/// not commit in time (the caller logs that). A write the database refused is logged here,
/// for `who`.
pub(crate) fn wait_committed(tickets: Vec<DurableTicket>, who: &str) -> bool {
    let deadline = Instant::now() + DURABLE_WAIT;
    for mut ticket in tickets {
        let left = deadline.saturating_duration_since(Instant::now());
        match ticket.wait_timeout(left) {
            Ok(true) => {}
            Ok(false) => return false,
            Err(e) => log::warn!("client {who}: message not stored: {e}"),
        }
    }
    true
}

/// A DISCONNECT carrying `reason`, for a 5.0 client whose Maximum Packet Size is
/// `max_packet_size`. The reason's name goes with it as Reason String when the packet still
/// fits (MQTT-3.14.2-3): besides telling a person why, it makes the reason readable to
/// paho-mqtt before 2.2 (Home Assistant's and most deployed scripts' client), which reads the
/// reason code only from a DISCONNECT whose Remaining Length is above 2, i.e. one carrying
/// properties, and otherwise reports "Normal disconnection".
pub fn disconnect_packet(reason: ReasonCode, max_packet_size: u32) -> Packet {
    let with_text = Packet::Disconnect(Disconnect {
        reason,
        properties: Properties {
            reason_string: Some(reason.name().to_owned()),
            ..Properties::default()
        },
    });
    let fits = u32::try_from(encoded_len(&with_text, ProtocolVersion::V5))
        .is_ok_and(|n| n <= max_packet_size);
    if fits {
        with_text
    } else {
        Packet::Disconnect(Disconnect {
            reason,
            properties: Properties::default(),
        })
    }
}

fn close_live(c: &LiveConn, reason: ReasonCode) {
    match &c.outbox {
        Some(outbox) => {
            let last = outbox
                .version
                .is_v5()
                .then(|| disconnect_packet(reason, c.max_packet_size));
            outbox.close(last.as_ref());
        }
        None => {
            let _ = c.stream.shutdown(Shutdown::Both);
        }
    }
}

/// The store's record of a persistent session: its settings and every subscription. Saving it
/// clears the stored will; the connection that owns the will keeps it with
/// [`Session::keep_will`] after the session is saved.
fn session_record(client_id: &str, st: &session::SessionState) -> SessionRecord {
    SessionRecord {
        client_id: client_id.to_owned(),
        expiry_interval: st.expiry_interval,
        protocol_version: st.link.protocol,
        subscriptions: st
            .subscriptions
            .iter()
            .map(|(filter, r)| SubscriptionRow {
                filter: filter.clone(),
                options: r.options,
                subscription_id: r.subscription_id,
            })
            .collect(),
        will: None,
    }
}

/// A session stopped being persistent: its messages are no longer stored.
fn forget_seqs(st: &mut session::SessionState) {
    for d in st.pending.iter_mut() {
        d.seq = 0;
    }
    for e in st.inflight.values_mut() {
        match &mut e.state {
            Inflight::Publish(d) => d.seq = 0,
            Inflight::Released { seq } => *seq = 0,
        }
    }
}
