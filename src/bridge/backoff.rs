//! The delay before a bridge reconnects, from `restart_timeout BASE [CAP]`: constant BASE
//! alone, else Mosquitto's "decorrelated jitter" backoff — each delay drawn between BASE and
//! three times the previous one, never above CAP — so bridges that lost the same remote do not
//! all come back at once, and a remote that stays down costs at most one attempt per CAP. Pure:
//! the caller gives the random numbers (its thread owns the clock and the source).

use std::time::Duration;

use super::config::RestartTimeout;

/// One bridge's reconnection delays.
#[derive(Debug, Clone)]
pub struct Backoff {
    timeout: RestartTimeout,
    previous: Duration,
}

impl Backoff {
    pub fn new(timeout: RestartTimeout) -> Backoff {
        Backoff {
            timeout,
            previous: timeout.base,
        }
    }

    /// The delay before the next attempt; `random` is uniformly drawn, its place in `u32`'s
    /// range is the delay's place in the allowed range.
    pub fn next_delay(&mut self, random: u32) -> Duration {
        let Some(cap) = self.timeout.cap else {
            return self.timeout.base;
        };
        let low = self.timeout.base.as_millis() as u64;
        let high = (self.previous.as_millis() as u64)
            .saturating_mul(3)
            .max(low);
        let drawn = low + (high - low) * u64::from(random) / u64::from(u32::MAX);
        let delay = Duration::from_millis(drawn).min(cap);
        self.previous = delay;
        delay
    }

    /// The link came up: the next loss starts from BASE again.
    pub fn reset(&mut self) {
        self.previous = self.timeout.base;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn timeout(base: u64, cap: Option<u64>) -> RestartTimeout {
        RestartTimeout {
            base: Duration::from_secs(base),
            cap: cap.map(Duration::from_secs),
        }
    }

    #[test]
    fn base_alone_is_constant() {
        let mut b = Backoff::new(timeout(7, None));
        for r in [0, 1, u32::MAX, 12345] {
            assert_eq!(b.next_delay(r), Duration::from_secs(7));
        }
    }

    #[test]
    fn delays_stay_between_base_and_cap_and_grow_when_drawn_high() {
        let mut b = Backoff::new(timeout(5, Some(30)));
        // Always the top of the range: 15 s, then 30 s (45 capped) and the cap.
        let top: Vec<_> = (0..4).map(|_| b.next_delay(u32::MAX).as_secs()).collect();
        assert!(top.windows(2).all(|w| w[0] <= w[1]), "{top:?}");
        assert_eq!(*top.last().unwrap(), 30);
        // Any draw: within [BASE, CAP].
        let mut b = Backoff::new(timeout(5, Some(30)));
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for _ in 0..1000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let d = b.next_delay(x as u32);
            assert!(
                d >= Duration::from_secs(5) && d <= Duration::from_secs(30),
                "{d:?}"
            );
        }
        b.reset();
        assert_eq!(b.next_delay(0), Duration::from_secs(5));
    }
}
