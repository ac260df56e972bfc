//! Broker-wide counters: lock-free, bumped by every thread, read by `$SYS`, the status API and
//! the control page.

use std::sync::atomic::{AtomicU64, Ordering};

#[derive(Debug, Default)]
pub struct Stats {
    pub messages_received: AtomicU64,
    pub messages_sent: AtomicU64,
    pub bytes_received: AtomicU64,
    pub bytes_sent: AtomicU64,
    pub publish_received: AtomicU64,
    /// Messages not delivered to a subscriber: queue full, offline QoS 0, too large, expired.
    pub dropped: AtomicU64,
    pub clients_connected: AtomicU64,
    /// Connections accepted since start.
    pub clients_total: AtomicU64,
    /// Highest number of clients connected at once.
    pub clients_maximum: AtomicU64,
    /// Sockets closed before their CONNECT to make room in the pending pool.
    pub pending_closed: AtomicU64,
    /// Clients disconnected because they took nothing of what they were owed for the grace.
    pub not_reading_disconnects: AtomicU64,
    /// QoS 1/2 messages not acknowledged as received because the database could not store them
    /// (PUBACK / PUBREC 0x80, or a 3.1.1 publisher disconnected).
    pub unstored: AtomicU64,
}

impl Stats {
    pub fn client_connected(&self) {
        let now = self.clients_connected.fetch_add(1, Ordering::Relaxed) + 1;
        self.clients_total.fetch_add(1, Ordering::Relaxed);
        self.clients_maximum.fetch_max(now, Ordering::Relaxed);
    }

    pub fn client_disconnected(&self) {
        self.clients_connected.fetch_sub(1, Ordering::Relaxed);
    }

    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}
