//! What a bridge's thread tells the rest of the broker about its link: its state (connecting,
//! up since, down since and why), and counts of what it forwarded and dropped. Shared by `Arc`
//! between the bridge thread (the only writer) and readers (logs, the page); counters are
//! atomics, the state a short leaf lock.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

use parking_lot::Mutex;

/// The link's state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkState {
    /// Trying the remote's addresses.
    Connecting,
    /// Connected to `address` since `since`.
    Up { since: SystemTime, address: String },
    /// Not connected since `since`, because of `why` (also the last failed attempt's reason:
    /// a refused password shows here).
    Down { since: SystemTime, why: String },
    /// Not running: stopped, or `start_type once` after its one link ended.
    Stopped { since: SystemTime, why: String },
}

/// One bridge's status.
#[derive(Debug)]
pub struct BridgeStatus {
    pub name: String,
    state: Mutex<LinkState>,
    /// Messages published here that came from the remote broker.
    pub forwarded_in: AtomicU64,
    /// Messages published on the remote broker that came from here.
    pub forwarded_out: AtomicU64,
    /// Messages the other side refused (an error reason in its acknowledgement) or that no
    /// `topic` line mapped.
    pub dropped: AtomicU64,
}

impl BridgeStatus {
    pub fn new(name: &str) -> BridgeStatus {
        BridgeStatus {
            name: name.to_owned(),
            state: Mutex::new(LinkState::Connecting),
            forwarded_in: AtomicU64::new(0),
            forwarded_out: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
        }
    }

    pub fn state(&self) -> LinkState {
        self.state.lock().clone()
    }

    pub fn set(&self, state: LinkState) {
        *self.state.lock() = state;
    }

    /// Down because of `why`, keeping the time it went down when it already was.
    pub fn down(&self, why: &str) {
        let mut state = self.state.lock();
        let since = match &*state {
            LinkState::Down { since, .. } => *since,
            _ => SystemTime::now(),
        };
        *state = LinkState::Down {
            since,
            why: why.to_owned(),
        };
    }

    pub fn count(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// A bridge's status at one moment, with its local session's backlog: what the page, the API,
/// `/metrics` and `$SYS` show.
#[derive(Debug, Clone)]
pub struct BridgeSnapshot {
    pub name: String,
    /// `connecting`, `up`, `down` or `stopped`.
    pub state: &'static str,
    /// The remote address while up.
    pub address: Option<String>,
    /// Since when it is up, down or stopped (milliseconds since the Unix epoch).
    pub since_ms: Option<i64>,
    /// Why it is down or stopped.
    pub why: Option<String>,
    pub running: bool,
    /// The bridge's client id here (what ACL rules name, as username and client id).
    pub local_client_id: String,
    /// Messages for the remote waiting in the local session (queued and in flight).
    pub queued: usize,
    /// Messages the local session dropped (queue full, QoS 0 shed first, expired).
    pub queue_dropped: u64,
    pub forwarded_in: u64,
    pub forwarded_out: u64,
    pub dropped: u64,
}

fn ms(t: SystemTime) -> i64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

impl BridgeStatus {
    /// This status with the backlog of the local session (`None`: no session yet).
    pub fn snapshot(
        &self,
        running: bool,
        local_client_id: String,
        backlog: Option<(usize, u64)>,
    ) -> BridgeSnapshot {
        let (state, address, since, why) = match self.state() {
            LinkState::Connecting => ("connecting", None, None, None),
            LinkState::Up { since, address } => ("up", Some(address), Some(ms(since)), None),
            LinkState::Down { since, why } => ("down", None, Some(ms(since)), Some(why)),
            LinkState::Stopped { since, why } => ("stopped", None, Some(ms(since)), Some(why)),
        };
        let (queued, queue_dropped) = backlog.unwrap_or((0, 0));
        BridgeSnapshot {
            name: self.name.clone(),
            state,
            address,
            since_ms: since,
            why,
            running,
            local_client_id,
            queued,
            queue_dropped,
            forwarded_in: self.forwarded_in.load(Ordering::Relaxed),
            forwarded_out: self.forwarded_out.load(Ordering::Relaxed),
            dropped: self.dropped.load(Ordering::Relaxed),
        }
    }
}
