//! The session registry: client id → [`Session`], and a session's life in it — opened (new,
//! resumed, or taking over a live one) by a CONNECT, detached when its connection closes, ended
//! when it expires, is replaced or has expiry 0 — with a persistent session's record kept in
//! step in the store. Runs on reader threads, the ticker (expiry), `web` (shutdown) and main.
//! Locks: `Broker::sessions` → one session's state (see the lock order in `lib.rs`). Nothing is
//! sent to the store while either is held: what it must hear is collected and sent after.

use std::sync::Arc;
use std::time::Instant;

use super::conns::disconnect_packet;
use super::outbox::Outbox;
use super::publish::Routing;
use super::session::{Delivery, Durable, Inflight, LinkLimits, Session, SessionState};
use super::Broker;
use crate::protocol::Packet;
use crate::protocol::ReasonCode;
use crate::store::{now_ms, SessionRecord, SubscriptionRow};

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
    /// At shutdown: persistent sessions of connected clients count as disconnected now (so their
    /// expiry runs from here), and everything sent to the store is committed.
    pub fn save_on_shutdown(&self) {
        let sessions: Vec<Arc<Session>> = self.sessions.lock().values().cloned().collect();
        let at = now_ms();
        for s in sessions {
            let live = {
                let st = s.state.lock();
                st.durable.is_some() && st.disconnected_at.is_none()
            };
            if live {
                self.store.session_disconnected(&s.client_id, at);
            }
        }
        if let Err(e) = self.store.flush().wait() {
            log::error!("store: final flush failed: {e}");
        }
    }

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
        // The store hears of it once the registry and the session are unlocked, in this order.
        let mut writes: Vec<SessionWrite> = Vec::new();
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
                    writes.push(SessionWrite::Save(Box::new(session_record(client_id, &st))));
                } else if st.durable.is_some() {
                    writes.push(SessionWrite::Delete);
                    forget_seqs(&mut st);
                }
                let _ = s.set_durable(&mut st, durable);
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
                    if old.set_durable(&mut st, None).is_some() {
                        writes.push(SessionWrite::Delete);
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
                        writes.push(SessionWrite::Save(Box::new(session_record(client_id, &st))));
                    }
                    let _ = s.set_durable(&mut st, durable);
                    st.outbox = Some(outbox.clone());
                }
                sessions.insert(client_id.clone(), s.clone());
                s
            }
        };
        drop(sessions);
        for w in writes {
            match w {
                SessionWrite::Save(rec) => self.store.save_session(*rec),
                SessionWrite::Delete => self.store.delete_session(client_id),
            }
        }
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
        let record = {
            let mut st = session.state.lock();
            st.expiry_interval = expiry_interval;
            (expiry_interval > 0 && st.durable.is_some())
                .then(|| session_record(&session.client_id, &st))
        };
        if let Some(rec) = record {
            self.store.save_session(rec);
        }
    }

    /// Detaches a closed connection from its session. Returns true when the connection was
    /// still the session's live one (false after a takeover). A session with expiry 0 ends now.
    pub fn close_session_link(&self, session: &Arc<Session>, outbox: &Arc<Outbox>) -> bool {
        let (current, expiry, stored) = {
            let mut st = session.state.lock();
            let current = st.outbox.as_ref().is_some_and(|o| Arc::ptr_eq(o, outbox));
            if current {
                st.outbox = None;
                st.disconnected_at = Some(Instant::now());
            }
            let stored = current && st.expiry_interval > 0 && st.durable.is_some();
            (current, st.expiry_interval, stored)
        };
        if stored {
            self.store
                .session_disconnected(&session.client_id, now_ms());
        }
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
        let (subs, handoff, will, stored) = {
            let mut st = session.state.lock();
            if st.ended {
                return;
            }
            st.ended = true;
            let stored = session.set_durable(&mut st, None).is_some();
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
            (subs, handoff, st.delayed_will.take(), stored)
        };
        if stored {
            self.store.delete_session(&session.client_id);
        }
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
}

/// A change to a session's record, collected under the registry's lock and sent after it.
enum SessionWrite {
    Save(Box<SessionRecord>),
    Delete,
}

/// The store's record of a persistent session: its settings and every subscription. Saving it
/// clears the stored will; the connection that owns the will keeps it with
/// [`Session::keep_will`] after the session is saved.
fn session_record(client_id: &str, st: &SessionState) -> SessionRecord {
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
fn forget_seqs(st: &mut SessionState) {
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
