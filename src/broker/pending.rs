//! The pending pool: accepted sockets that have not yet sent a whole CONNECT. They are not
//! clients (`max_clients` counts only connections whose CONNECT was accepted), but each holds a
//! descriptor and a reader thread, so they have bounds of their own: `max_pending_connections`
//! in all and `max_pending_per_address` per source address. The `acceptor` thread admits a
//! socket here; when the pool, or the new socket's address, is at its bound, the oldest pending
//! socket that is waiting on its client (of that address, else of the pool) is shut down, so a
//! new client always gets through and idle sockets cannot lock real clients out; when none at
//! the bound is idle (all are being read, checked or refused), the new socket is closed
//! instead, so the bounds always hold. The socket's reader thread marks when it waits for the
//! client and leaves the pool once its CONNECT is accepted (or the thread ends): a CONNECT
//! whose password is being verified, or whose refusal lingers, still holds its place. Closes
//! are counted and logged at most once per `LOG_EVERY`.
//!
//! Its lock (`Broker::pending`) is a leaf: nothing else is taken while it is held.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, Shutdown, SocketAddr, TcpStream};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::pipe::Pipe;
use super::Broker;

/// At most one log line about closed pending sockets per this long (a flood closes thousands).
const LOG_EVERY: Duration = Duration::from_secs(10);

struct Entry {
    ip: IpAddr,
    stream: Arc<Pipe>,
    /// Since when the reader thread has been waiting for bytes from the client; `None` while it
    /// has not started yet or is handling what it read (the broker, not the client, is behind).
    waiting_since: Option<Instant>,
}

/// The pool itself, under `Broker::pending`.
#[derive(Default)]
pub(super) struct Pending {
    /// By connection id, which the acceptor hands out in accept order: the first is the oldest.
    entries: BTreeMap<u64, Entry>,
    per_ip: HashMap<IpAddr, usize>,
    /// Closes not yet logged, and when the last line was written.
    unlogged: u64,
    last_log: Option<Instant>,
}

impl Pending {
    fn remove(&mut self, conn_id: u64) -> Option<Entry> {
        let e = self.entries.remove(&conn_id)?;
        if let Some(n) = self.per_ip.get_mut(&e.ip) {
            *n -= 1;
            if *n == 0 {
                self.per_ip.remove(&e.ip);
            }
        }
        Some(e)
    }

    /// The oldest socket (of `ip`, when given) whose client the broker is waiting for: its
    /// reader is blocked in a read and the kernel holds nothing unread for it. A socket whose
    /// bytes have arrived but are not yet read is the broker's backlog, never closed for it.
    fn oldest_idle(&self, ip: Option<IpAddr>) -> Option<u64> {
        self.entries
            .iter()
            .filter(|(_, e)| ip.is_none_or(|ip| e.ip == ip))
            .filter(|(_, e)| e.waiting_since.is_some() && !has_unread(e.stream.tcp()))
            .map(|(id, _)| *id)
            .next()
    }
}

/// Whether the kernel holds bytes for `stream` that its reader has not taken yet.
fn has_unread(stream: &TcpStream) -> bool {
    let mut byte = [0u8; 1];
    matches!(super::socket::peek_nonblocking(stream, &mut byte), Ok(n) if n > 0)
}

impl Broker {
    /// Admits a freshly accepted socket to the pending pool, first closing the oldest idle
    /// pending socket of its address when that address is at `max_pending_per_address`, or else
    /// of the whole pool when the pool is at `max_pending_connections`. When no socket at the
    /// bound is idle (each is being read, or its CONNECT checked or refused), the new socket is
    /// refused instead: `false`, and the caller closes it. The bounds are never exceeded.
    pub fn admit_pending(&self, conn_id: u64, stream: Arc<Pipe>, peer: SocketAddr) -> bool {
        let cfg = self.config();
        let ip = peer.ip();
        let mut pool = self.pending.lock();
        let address_full =
            pool.per_ip.get(&ip).copied().unwrap_or(0) >= cfg.max_pending_per_address;
        let bound = if address_full {
            Some((
                "max_pending_per_address",
                cfg.max_pending_per_address,
                Some(ip),
            ))
        } else if pool.entries.len() >= cfg.max_pending_connections {
            Some(("max_pending_connections", cfg.max_pending_connections, None))
        } else {
            None
        };
        if let Some((setting, bound, of)) = bound {
            // A socket of this address makes room within its address; the pool's own bound
            // then still holds, as the pool shrinks by one for the one it gains.
            let victim = pool.oldest_idle(of).and_then(|id| pool.remove(id));
            let closed_ip = match &victim {
                Some(old) => {
                    // Wakes its reader thread, which ends as for a client that went away.
                    old.stream.shutdown(Shutdown::Both);
                    old.ip
                }
                None => ip,
            };
            self.stats.pending_closed.fetch_add(1, Ordering::Relaxed);
            pool.unlogged += 1;
            let now = Instant::now();
            if pool.last_log.is_none_or(|t| now - t >= LOG_EVERY) {
                log::warn!(
                    "closed {} connection(s) that sent no CONNECT to make room for new ones \
                     ({setting} {bound} reached, latest from {closed_ip}); --{} raises it",
                    pool.unlogged,
                    setting.replace('_', "-")
                );
                pool.unlogged = 0;
                pool.last_log = Some(now);
            }
            if victim.is_none() {
                // Every socket at the bound is busy: the new one is the one closed.
                return false;
            }
        }
        *pool.per_ip.entry(ip).or_insert(0) += 1;
        pool.entries.insert(
            conn_id,
            Entry {
                ip,
                stream,
                waiting_since: None,
            },
        );
        true
    }

    /// The reader thread of a pending socket starts (`true`) or stops (`false`) waiting for
    /// its client's bytes.
    pub fn pending_waiting(&self, conn_id: u64, waiting: bool) {
        if let Some(e) = self.pending.lock().entries.get_mut(&conn_id) {
            e.waiting_since = waiting.then(Instant::now);
        }
    }

    /// The socket leaves the pending pool: its CONNECT was decoded, or its thread ends.
    pub fn leave_pending(&self, conn_id: u64) {
        self.pending.lock().remove(conn_id);
    }

    /// Sockets accepted that have not yet sent a whole CONNECT.
    pub fn pending_count(&self) -> usize {
        self.pending.lock().entries.len()
    }
}
