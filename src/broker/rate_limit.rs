//! The connect rate limiter (`connect_rate_limit`): each client id's CONNECT times in the last
//! minute. Checked by reader threads at CONNECT and pruned by the ticker; its lock
//! (`Broker::connect_times`) is taken alone.

use std::time::{Duration, Instant};

use super::Broker;

/// The window of `connect_rate_limit`.
const RATE_WINDOW: Duration = Duration::from_secs(60);

impl Broker {
    /// True when `client_id` has connected more than `connect_rate_limit` times in the last
    /// minute (this attempt included).
    pub fn connect_rate_exceeded(&self, client_id: &str) -> bool {
        let limit = self.config().connect_rate_limit as usize;
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
}
