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
