//! The connection table: every accepted socket from its reader thread's start to its end, with
//! what the control page lists of it and what a server stop, a takeover or the page needs to
//! close it. Reader threads register, attach and unregister their socket; the `web` thread and
//! a server stop close through it. Its lock (`Broker::conns`) comes first in the lock order: a
//! close made under it takes the outbox's locks and may write the DISCONNECT (see `lib.rs`).

use std::net::{Shutdown, SocketAddr};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use super::outbox::Outbox;
use super::pipe::{Pipe, TRANSPORTS};
use super::Broker;
use crate::protocol::{encoded_len, Disconnect, Packet, Properties, ProtocolVersion, ReasonCode};

/// A connection the broker can reach to disconnect it (server stop, takeover, the web page).
pub(super) struct LiveConn {
    pub(super) stream: Arc<Pipe>,
    pub(super) outbox: Option<Arc<Outbox>>,
    pub(super) client_id: Option<Arc<str>>,
    /// The keep alive in force (after any Server Keep Alive), once CONNECT is accepted.
    pub(super) keep_alive: Option<u16>,
    /// The client's Maximum Packet Size, which bounds the DISCONNECT it may be sent.
    pub(super) max_packet_size: u32,
    /// Connected as a bridge (the Protocol Level's bridge bit).
    pub(super) bridge: bool,
    pub(super) peer: SocketAddr,
    pub(super) connected_at: Instant,
}

impl Broker {
    pub fn next_conn_id(&self) -> u64 {
        self.next_conn_id.fetch_add(1, Ordering::Relaxed)
    }

    pub fn register_conn(&self, conn_id: u64, stream: Arc<Pipe>, peer: SocketAddr) {
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

    /// Connected clients: connections whose CONNECT was accepted (pending sockets are not
    /// clients, see [`pending`](super::pending)).
    pub fn connection_count(&self) -> usize {
        self.conns
            .lock()
            .values()
            .filter(|c| c.outbox.is_some())
            .count()
    }

    /// Connected clients per transport (`tcp`, `tls`, …: every one of [`TRANSPORTS`], 0 when
    /// none), counted as [`Broker::connection_count`] counts them.
    pub fn connection_count_by_transport(&self) -> Vec<(&'static str, usize)> {
        let mut counts: Vec<(&'static str, usize)> = TRANSPORTS.iter().map(|&t| (t, 0)).collect();
        for c in self.conns.lock().values().filter(|c| c.outbox.is_some()) {
            let name = c.stream.transport_name();
            if let Some(slot) = counts.iter_mut().find(|(t, _)| *t == name) {
                slot.1 += 1;
            }
        }
        counts
    }
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
            c.stream.shutdown(Shutdown::Both);
        }
    }
}
