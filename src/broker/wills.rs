//! Wills and session expiry: what happens to a session once its connection is gone. A will
//! becomes an application message ([`will_message`]); at the end of a connection it is dropped,
//! published, or kept in the session for its Will Delay Interval (`Client::settle_will`, on
//! the reader thread); the ticker publishes delayed wills that came due and ends sessions whose
//! expiry interval has run out ([`Broker::expire`]). A session that ends first publishes its
//! waiting will at once (`Broker::end_session`); a restart restores kept wills (`restore`).
//! Locks: the registry only to copy its sessions out, then each session's state alone.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::connection::Client;
use super::publish::Routing;
use super::session::{self, DelayedWill, Session};
use super::Broker;
use crate::message::Message;
use crate::protocol::Will;

impl Broker {
    /// Sessions whose expiry interval has run out since they went offline, and delayed wills
    /// now due. Called by the ticker.
    pub fn expire(&self, now: Instant) {
        let sessions: Vec<Arc<Session>> = self.sessions.lock().values().cloned().collect();
        for s in sessions {
            let (expired, will, stored) = {
                let mut st = s.state.lock();
                let will = match &st.delayed_will {
                    Some(w) if w.due <= now => st.delayed_will.take(),
                    _ => None,
                };
                let stored = st.durable.clone().filter(|_| will.is_some());
                let expired = st.outbox.is_none()
                    && st.expiry_interval != session::NEVER_EXPIRES
                    && st.disconnected_at.is_some_and(|at| {
                        now.saturating_duration_since(at)
                            >= Duration::from_secs(u64::from(st.expiry_interval))
                    });
                (expired, will, stored)
            };
            // With the session unlocked: the database must never hold up the ticker.
            if let Some(d) = stored {
                d.store.set_will(&d.client_id, None);
            }
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
        match self.config().persistent_client_expiration {
            Some(limit) => {
                let limit = u32::try_from(limit.as_secs()).unwrap_or(session::NEVER_EXPIRES - 1);
                requested.min(limit)
            }
            None => requested,
        }
    }
}

impl Client {
    /// What becomes of the will when the connection ended (`publish_will` unless it ended with
    /// DISCONNECT 0x00): dropped when the ACL no longer allows its topic; kept in the session
    /// while its Will Delay Interval runs (§3.1.3.2.2); cancelled when a connection resuming the
    /// session took over; otherwise returned, for the caller to publish once the session is
    /// settled. A persistent session's stored will is updated to match.
    pub(super) fn settle_will(&mut self, publish_will: bool, now: Instant) -> Option<Arc<Message>> {
        let will = if publish_will { self.will.take() } else { None };
        // The ACL may have changed since CONNECT checked the will topic.
        let will = will.filter(|w| {
            let allowed = self.broker.store.acl().can_publish(
                self.username.as_deref(),
                &self.client_id,
                &w.topic,
            );
            if !allowed {
                log::info!(
                    "client {}: will on {} dropped: the ACL no longer allows it",
                    self.client_id,
                    w.topic
                );
            }
            allowed
        });
        let will_delay = will
            .as_ref()
            .and_then(|w| w.properties.will_delay_interval)
            .unwrap_or(0);
        // A will that waits for its delay stays in the store until published.
        let kept = if self.will_kept && will_delay > 0 {
            will.clone()
        } else {
            None
        };
        let will_msg = will.map(|w| Arc::new(will_message(w, &self.client_id, now)));
        // A delayed will waits in the session unless the session ends first (§3.1.3.2.2).
        let mut will_now = will_msg;
        if will_delay > 0 {
            let mut st = self.session.state.lock();
            let is_live = st
                .outbox
                .as_ref()
                .is_some_and(|o| Arc::ptr_eq(o, &self.outbox));
            if is_live && st.expiry_interval > 0 {
                let delay = will_delay.min(st.expiry_interval);
                if let Some(msg) = will_now.take() {
                    st.delayed_will = Some(DelayedWill {
                        due: now + Duration::from_secs(u64::from(delay)),
                        msg,
                    });
                }
            } else if !is_live && !st.ended {
                // Taken over by a connection that resumed the session: the will is cancelled.
                will_now = None;
            }
        }
        if self.will_kept {
            let owed = kept.as_ref().filter(|_| will_now.is_none());
            self.session.keep_will(&self.outbox, owed);
        }
        will_now
    }
}

/// The application message a will becomes (§3.1.3.2), with its properties forwarded
/// (MQTT-3.1.3-9) less the Will Delay Interval, which only the broker reads.
pub fn will_message(will: Will, client_id: &Arc<str>, now: Instant) -> Message {
    let mut properties = will.properties;
    properties.will_delay_interval = None;
    Message {
        topic: will.topic,
        payload: will.payload,
        qos: will.qos,
        retain: will.retain,
        properties,
        publisher: Some(client_id.clone()),
        received: now,
    }
}
