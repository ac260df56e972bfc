//! Start-up: puts back what the store kept — retained messages, and persistent sessions with
//! their subscriptions and their QoS 1/2 messages (queued, in flight, or released) — so that a
//! restart, even after `kill -9`, looks to clients like a broker that never went away.
//!
//! A restored session is offline: its expiry counts from when its client went away (or, if the
//! broker stopped while it was connected, from the stop). Messages come back with the QoS and
//! RETAIN flag they were to be delivered with and their remaining Message Expiry Interval; a
//! QoS 2 message that was in flight keeps its packet id, so the client recognises the resend.
//! A kept will (its client was connected when the broker stopped, or it was waiting for its
//! Will Delay Interval) is published once its delay, counted again from the start, has passed
//! — unless the client comes back first, or sooner if the session expires first (§3.1.3.2.2).
//! Not kept: Subscription Identifiers on queued messages, inbound QoS 2 state.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::router::SubEntry;
use super::session::{DelayedWill, Delivery, Durable, LinkLimits, Session, SubscriptionRecord};
use super::wills::will_message;
use super::Broker;
use crate::protocol::topic::parse_shared;
use crate::store::{now_ms, MessageState, SessionSnapshot, Snapshot};

pub fn restore(broker: &Broker, snapshot: Snapshot) {
    let now = Instant::now();
    let wall = now_ms();
    let mut retained = 0usize;
    for stored in snapshot.retained {
        if let Some(msg) = stored.into_message(now, wall) {
            broker.retained.set(&Arc::new(msg));
            retained += 1;
        }
    }
    let (mut sessions, mut messages) = (0usize, 0usize);
    for snap in snapshot.sessions {
        messages += snap.messages.len();
        restore_session(broker, snap, now, wall);
        sessions += 1;
    }
    if retained + sessions > 0 {
        log::info!(
            "restored {retained} retained messages and {sessions} persistent sessions \
             holding {messages} messages"
        );
    }
}

fn restore_session(broker: &Broker, snap: SessionSnapshot, now: Instant, wall: i64) {
    let client_id: Arc<str> = Arc::from(snap.record.client_id.as_str());
    let link = LinkLimits {
        protocol: snap.record.protocol_version,
        receive_maximum: broker.config().max_inflight_messages,
        max_packet_size: u32::MAX,
        topic_alias_maximum: 0,
    };
    let session = Arc::new(Session::new(client_id.clone(), link));
    {
        let mut st = session.state.lock();
        st.expiry_interval = snap.record.expiry_interval;
        // The instant the client went away, so the ticker's expiry check works unchanged.
        let gone_for = match snap.remaining_expiry(wall) {
            None => Duration::ZERO,
            Some(left) => {
                Duration::from_secs(u64::from(snap.record.expiry_interval)).saturating_sub(left)
            }
        };
        st.disconnected_at = Some(now.checked_sub(gone_for).unwrap_or(now));
        let durable = Durable {
            store: broker.store.clone(),
            client_id: client_id.clone(),
        };
        let _ = session.set_durable(&mut st, Some(durable));
        if let Some(will) = snap.record.will.clone() {
            let delay = will.properties.will_delay_interval.unwrap_or(0);
            st.delayed_will = Some(DelayedWill {
                due: now + Duration::from_secs(u64::from(delay.min(st.expiry_interval))),
                msg: Arc::new(will_message(will, &client_id, now)),
            });
        }
        for sub in &snap.record.subscriptions {
            let (share, inner) = match parse_shared(&sub.filter) {
                None => (None, sub.filter.as_str()),
                Some(Ok((_, inner))) => (Some(Arc::<str>::from(sub.filter.as_str())), inner),
                Some(Err(_)) => continue,
            };
            let entry = SubEntry {
                options: sub.options,
                subscription_id: sub.subscription_id,
            };
            broker.router.subscribe(&session, share, inner, entry);
            st.subscriptions.insert(
                sub.filter.clone(),
                SubscriptionRecord {
                    options: sub.options,
                    subscription_id: sub.subscription_id,
                },
            );
        }
        let next_seq = snap.next_seq();
        let mut expired = Vec::new();
        for mut m in snap.messages {
            let seq = m.seq;
            let (qos, retain) = (m.message.qos, m.message.retain);
            if m.state != MessageState::Queued {
                // Sent already: the Message Expiry Interval no longer applies (§3.3.2.3.3).
                m.message.expiry_at = None;
            }
            let Some(msg) = m.message.into_message(now, wall) else {
                expired.push(seq);
                continue;
            };
            let delivery = Delivery {
                msg: Arc::new(msg),
                qos,
                retain,
                sub_ids: Vec::new(),
                share: None,
                seq,
            };
            let inflight = match (m.state, m.packet_id) {
                (MessageState::Inflight, Some(id)) if id != 0 => Some((id, false)),
                (MessageState::Released, Some(id)) if id != 0 => Some((id, true)),
                _ => None,
            };
            st.restore(delivery, inflight);
        }
        st.next_seq = st.next_seq.max(next_seq);
        drop(st);
        for seq in expired {
            broker.store.remove_message(&client_id, seq);
        }
    }
    broker.insert_session(client_id, session);
}
