//! Read-only views of the broker for the control page, run on the `web` thread: connected
//! clients with their username, every QoS 1/2 message still on its way to a subscriber
//! (queued, or in flight with its acknowledgement state), and the ones acknowledged last.
//!
//! Only reads; it changes nothing. It follows the broker's lock order: the connection table and
//! the session registry are each locked alone, briefly, to copy what is needed, then each
//! session's state alone — never two at once, never across I/O.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::pipe::Pipe;
use super::session::{Inflight, Session};
use super::Broker;
use crate::protocol::{ProtocolVersion, QoS};

// The broker's own records that these views hand out, so that `web` reads the broker through
// this module alone.
pub use super::router::SubEntry;
pub use super::session::Acknowledged;

/// A connected socket as the control page lists it.
#[derive(Debug, Clone)]
pub struct ClientView {
    pub conn_id: u64,
    /// Empty while the socket has not completed CONNECT.
    pub client_id: String,
    pub username: Option<String>,
    pub peer: SocketAddr,
    /// `tcp`, `tls`, … ([`Pipe::transport_name`](super::pipe::Pipe::transport_name)).
    pub transport: &'static str,
    /// The subject CN of the client's certificate (TLS with a client certificate).
    pub certificate_cn: Option<String>,
    /// `None` while the socket has not completed CONNECT.
    pub protocol: Option<ProtocolVersion>,
    /// Seconds, as in force after any Server Keep Alive; `None` before CONNECT.
    pub keep_alive: Option<u16>,
    /// Connected as a bridge (the Protocol Level's bridge bit, Mosquitto's `try_private`).
    pub bridge: bool,
    pub connected_for: Duration,
    /// (filter as subscribed, with `$share/g/` for shared ones; options).
    pub subscriptions: Vec<(String, SubEntry)>,
    /// Messages waiting in the session's queue.
    pub queued: usize,
    /// QoS 1/2 messages sent and not yet acknowledged.
    pub inflight: usize,
    /// Messages dropped for this session.
    pub dropped: u64,
}

/// Every connected client, in connection order, with its session's details.
pub fn clients(broker: &Broker) -> Vec<ClientView> {
    struct Conn {
        conn_id: u64,
        client_id: Option<Arc<str>>,
        peer: SocketAddr,
        pipe: Arc<Pipe>,
        protocol: Option<ProtocolVersion>,
        keep_alive: Option<u16>,
        bridge: bool,
        connected_for: Duration,
    }
    let mut conns: Vec<Conn> = broker
        .conns
        .lock()
        .iter()
        // Only clients: a socket still before its CONNECT is not one, and a connection the
        // server is closing (lingering for the client to read why) is gone.
        .filter(|(_, c)| c.outbox.as_ref().is_some_and(|o| !o.is_closing()))
        .map(|(id, c)| Conn {
            conn_id: *id,
            client_id: c.client_id.clone(),
            peer: c.peer,
            pipe: c.stream.clone(),
            protocol: c.outbox.as_ref().map(|o| o.version),
            keep_alive: c.keep_alive,
            bridge: c.bridge,
            connected_for: c.connected_at.elapsed(),
        })
        .collect();
    conns.sort_by_key(|c| c.conn_id);
    let sessions: Vec<Option<Arc<Session>>> = {
        let registry = broker.sessions.lock();
        conns
            .iter()
            .map(|c| {
                c.client_id
                    .as_ref()
                    .and_then(|id| registry.get(id).cloned())
            })
            .collect()
    };
    conns
        .into_iter()
        .zip(sessions)
        .map(|(c, session)| {
            let mut view = ClientView {
                conn_id: c.conn_id,
                client_id: c.client_id.as_deref().unwrap_or_default().to_owned(),
                username: None,
                peer: c.peer,
                transport: c.pipe.transport_name(),
                // After the table's lock is released: it takes the TLS state's.
                certificate_cn: c.pipe.peer_common_name(),
                protocol: c.protocol,
                keep_alive: c.keep_alive,
                bridge: c.bridge,
                connected_for: c.connected_for,
                subscriptions: Vec::new(),
                queued: 0,
                inflight: 0,
                dropped: 0,
            };
            if let Some(session) = session {
                let st = session.state.lock();
                // After a takeover the old socket lingers briefly: the session is the new one's.
                let live = st.outbox.as_ref().map(|o| o.conn_id) == Some(c.conn_id);
                if live {
                    view.username = st.username.as_deref().map(str::to_owned);
                    view.subscriptions = st
                        .subscriptions
                        .iter()
                        .map(|(f, r)| {
                            let entry = SubEntry {
                                options: r.options,
                                subscription_id: r.subscription_id,
                            };
                            (f.clone(), entry)
                        })
                        .collect();
                    view.subscriptions.sort_by(|a, b| a.0.cmp(&b.0));
                    view.queued = st.pending.len();
                    view.inflight = st.inflight.len();
                    view.dropped = st.dropped;
                }
            }
            view
        })
        .collect()
}

/// Where a QoS 1/2 message is on its way to one subscriber.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QosState {
    /// In the session's queue, not sent yet.
    Queued,
    /// PUBLISH sent (QoS 1), waiting for PUBACK.
    AwaitingPuback,
    /// PUBLISH sent (QoS 2), waiting for PUBREC.
    AwaitingPubrec,
    /// PUBREL sent, waiting for PUBCOMP.
    AwaitingPubcomp,
}

impl QosState {
    pub fn as_str(self) -> &'static str {
        match self {
            QosState::Queued => "queued",
            QosState::AwaitingPuback => "awaiting PUBACK",
            QosState::AwaitingPubrec => "awaiting PUBREC",
            QosState::AwaitingPubcomp => "awaiting PUBCOMP",
        }
    }
}

/// One QoS 1/2 message for one subscriber, still in memory.
#[derive(Debug, Clone)]
pub struct QosView {
    pub client_id: Arc<str>,
    /// The subscriber is connected.
    pub online: bool,
    /// The session is persistent (its messages are also in the database).
    pub persistent: bool,
    pub packet_id: Option<u16>,
    /// `None` once only the PUBREL is left (the message itself has been delivered).
    pub topic: Option<String>,
    pub qos: QoS,
    pub retain: bool,
    pub payload_len: usize,
    /// How long ago the broker received it; `None` once only the PUBREL is left.
    pub age: Option<Duration>,
    pub state: QosState,
}

/// The QoS 1/2 messages of every session (in flight first, then queued, per session by client
/// id): at most `limit` of them from `offset`, and how many there are in all.
pub fn qos_messages(broker: &Broker, offset: usize, limit: usize) -> (Vec<QosView>, usize) {
    let mut sessions: Vec<Arc<Session>> = broker.sessions.lock().values().cloned().collect();
    sessions.sort_by(|a, b| a.client_id.cmp(&b.client_id));
    let now = Instant::now();
    let mut out = Vec::new();
    let mut total = 0usize;
    let mut keep = |view: &dyn Fn() -> QosView, total: &mut usize| {
        if *total >= offset && out.len() < limit {
            out.push(view());
        }
        *total += 1;
    };
    for s in sessions {
        let st = s.state.lock();
        let online = st.outbox.is_some();
        let persistent = st.durable.is_some();
        let mut inflight: Vec<_> = st.inflight.iter().collect();
        inflight.sort_by_key(|(_, e)| e.order);
        for (packet_id, entry) in inflight {
            let view = || match &entry.state {
                Inflight::Publish(d) => QosView {
                    client_id: s.client_id.clone(),
                    online,
                    persistent,
                    packet_id: Some(*packet_id),
                    topic: Some(d.msg.topic.clone()),
                    qos: d.qos,
                    retain: d.retain,
                    payload_len: d.msg.payload.len(),
                    age: Some(now.saturating_duration_since(d.msg.received)),
                    state: if d.qos == QoS::ExactlyOnce {
                        QosState::AwaitingPubrec
                    } else {
                        QosState::AwaitingPuback
                    },
                },
                Inflight::Released { .. } => QosView {
                    client_id: s.client_id.clone(),
                    online,
                    persistent,
                    packet_id: Some(*packet_id),
                    topic: None,
                    qos: QoS::ExactlyOnce,
                    retain: false,
                    payload_len: 0,
                    age: None,
                    state: QosState::AwaitingPubcomp,
                },
            };
            keep(&view, &mut total);
        }
        for d in st.pending.iter().filter(|d| d.qos != QoS::AtMostOnce) {
            let view = || QosView {
                client_id: s.client_id.clone(),
                online,
                persistent,
                packet_id: None,
                topic: Some(d.msg.topic.clone()),
                qos: d.qos,
                retain: d.retain,
                payload_len: d.msg.payload.len(),
                age: Some(now.saturating_duration_since(d.msg.received)),
                state: QosState::Queued,
            };
            keep(&view, &mut total);
        }
    }
    (out, total)
}

/// The QoS 1/2 messages subscribers acknowledged most recently (the last few per session),
/// newest first, at most `limit`.
pub fn acknowledged(broker: &Broker, limit: usize) -> Vec<(Arc<str>, Acknowledged)> {
    let sessions: Vec<Arc<Session>> = broker.sessions.lock().values().cloned().collect();
    let mut out: Vec<(Arc<str>, Acknowledged)> = Vec::new();
    for s in sessions {
        let st = s.state.lock();
        out.extend(
            st.acknowledged
                .iter()
                .map(|a| (s.client_id.clone(), a.clone())),
        );
    }
    out.sort_by_key(|(_, a)| std::cmp::Reverse(a.at));
    out.truncate(limit);
    out
}

/// What the session of `client_id` holds for its client: messages waiting (queued, and sent
/// but not yet acknowledged) and messages it dropped; `None` without such a session. For a
/// bridge, its local session: the backlog for the remote broker.
pub fn session_backlog(broker: &Broker, client_id: &str) -> Option<(usize, u64)> {
    let session = broker.sessions.lock().get(client_id).cloned()?;
    let st = session.state.lock();
    Some((st.pending.len() + st.inflight.len(), st.dropped))
}
