//! Password logins, for MQTT clients and the control page alike: what makes guessing cost the
//! guesser rather than the broker. Used from the client reader threads (CONNECT) and the `web`
//! thread; every part is bounded in memory.
//!
//! - [`Backoff`]: wrong passwords are counted per source address (per /64 for IPv6); after
//!   [`FREE_FAILURES`] in a row that address waits 1 s, then 2, 4, … up to [`MAX_LOCKOUT`]
//!   before its next attempt is even checked. A success clears the count; it is forgotten after
//!   15 minutes; at most [`MAX_TRACKED`] addresses are tracked.
//! - [`Logins`] (MQTT): the backoff is checked before any hash is computed; at most
//!   [`max_verifying`] argon2 verifications run at once (each takes
//!   [`ARGON2_M_COST_KIB`](crate::auth::ARGON2_M_COST_KIB) of memory), and a CONNECT that waits
//!   longer than [`GATE_WAIT`] for its turn is refused as busy; a password verified in the last
//!   [`RECENT_TTL`] is remembered as a keyed 128-bit hash of (user, stored hash, password) —
//!   never the password — so a device that reconnects does not pay a hash each time, and a
//!   changed password (a new stored hash) never matches an old entry.

use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::hash::BuildHasher;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

use crate::auth::{dummy_hash, verify_password};

/// Wrong passwords in a row that cost nothing more.
pub const FREE_FAILURES: u32 = 3;
/// The longest wait between attempts.
pub const MAX_LOCKOUT: Duration = Duration::from_secs(60);
/// A count not added to for this long is forgotten.
const FORGET_FAILURES: Duration = Duration::from_secs(15 * 60);
/// Addresses tracked at most.
pub const MAX_TRACKED: usize = 4096;
/// The longest a CONNECT waits for a verification slot before it is refused as busy.
pub const GATE_WAIT: Duration = Duration::from_secs(2);
/// How long a verified password is remembered.
pub const RECENT_TTL: Duration = Duration::from_secs(5 * 60);
/// Verified passwords remembered at most.
const MAX_RECENT: usize = 1024;

/// The wait after `count` wrong passwords in a row.
pub fn lockout_for(count: u32) -> Duration {
    if count < FREE_FAILURES {
        return Duration::ZERO;
    }
    let exp = (count - FREE_FAILURES).min(16);
    Duration::from_secs(1u64 << exp).min(MAX_LOCKOUT)
}

/// The key failures are counted under: the address, or its /64 for IPv6.
fn ip_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => {
            let s = v6.segments();
            IpAddr::V6(std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
        }
    }
}

struct Failures {
    count: u32,
    last: Instant,
    locked_until: Instant,
}

/// Wrong-password counts per source address.
#[derive(Default)]
pub struct Backoff {
    failures: HashMap<IpAddr, Failures>,
}

impl Backoff {
    /// How long `ip` must still wait before its next attempt is checked, if at all.
    pub fn wait(&mut self, ip: IpAddr, now: Instant) -> Option<Duration> {
        let ip = ip_key(ip);
        let f = self.failures.get(&ip)?;
        if now.saturating_duration_since(f.last) >= FORGET_FAILURES {
            self.failures.remove(&ip);
            return None;
        }
        (now < f.locked_until).then(|| f.locked_until - now)
    }

    /// Counts a wrong password from `ip`: (wrong passwords in a row, the wait it now has).
    pub fn failed(&mut self, ip: IpAddr, now: Instant) -> (u32, Duration) {
        let ip = ip_key(ip);
        if self.failures.len() >= MAX_TRACKED && !self.failures.contains_key(&ip) {
            self.failures
                .retain(|_, f| now.saturating_duration_since(f.last) < FORGET_FAILURES);
            if self.failures.len() >= MAX_TRACKED {
                // Keep the ones that are locked out; forget the rest.
                self.failures.retain(|_, f| f.locked_until > now);
            }
            if self.failures.len() >= MAX_TRACKED {
                // Every one is locked out: the one whose lock ends first goes.
                if let Some(first) = self
                    .failures
                    .iter()
                    .min_by_key(|(_, f)| f.locked_until)
                    .map(|(k, _)| *k)
                {
                    self.failures.remove(&first);
                }
            }
        }
        let f = self.failures.entry(ip).or_insert(Failures {
            count: 0,
            last: now,
            locked_until: now,
        });
        f.count = f.count.saturating_add(1);
        f.last = now;
        let wait = lockout_for(f.count);
        f.locked_until = now + wait;
        (f.count, wait)
    }

    pub fn succeeded(&mut self, ip: IpAddr) {
        self.failures.remove(&ip_key(ip));
    }

    pub fn tracked(&self) -> usize {
        self.failures.len()
    }
}

/// What a login attempt came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Login {
    /// The password is right.
    Accepted,
    /// Wrong user or password; this address now waits this long before its next attempt.
    Refused { in_a_row: u32, wait: Duration },
    /// Not checked: the address must wait this much longer after its wrong passwords.
    Throttled(Duration),
    /// Not checked: every verification slot stayed taken for [`GATE_WAIT`].
    Busy,
}

/// At most `max` holders at once.
struct Gate {
    busy: Mutex<usize>,
    freed: Condvar,
    max: usize,
}

struct Slot<'a>(&'a Gate);

impl Gate {
    fn enter(&self, wait: Duration) -> Option<Slot<'_>> {
        let deadline = Instant::now() + wait;
        let mut busy = self.busy.lock();
        while *busy >= self.max {
            if self.freed.wait_until(&mut busy, deadline).timed_out() && *busy >= self.max {
                return None;
            }
        }
        *busy += 1;
        Some(Slot(self))
    }
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        *self.0.busy.lock() -= 1;
        self.0.freed.notify_one();
    }
}

/// Verification slots: one per core, 1 to 4 (argon2 is CPU- and memory-bound, and a Pi has
/// four cores and little memory).
pub fn max_verifying() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get().clamp(1, 4))
}

/// MQTT logins: backoff, verification slots and recently verified passwords, shared by every
/// reader thread.
pub struct Logins {
    backoff: Mutex<Backoff>,
    gate: Gate,
    recent: Mutex<HashMap<(u64, u64), Instant>>,
    keys: (RandomState, RandomState),
}

impl Default for Logins {
    fn default() -> Self {
        Logins::new(max_verifying())
    }
}

impl Logins {
    pub fn new(max_verifying: usize) -> Logins {
        Logins {
            backoff: Mutex::new(Backoff::default()),
            gate: Gate {
                busy: Mutex::new(0),
                freed: Condvar::new(),
                max: max_verifying.max(1),
            },
            recent: Mutex::new(HashMap::new()),
            keys: (RandomState::new(), RandomState::new()),
        }
    }

    /// Checks `password` for `user` (whose stored PHC hash is `stored`, `None` for no such
    /// user), from `peer`. An unknown user costs the same as a wrong password.
    pub fn check(
        &self,
        peer: IpAddr,
        user: &str,
        stored: Option<&str>,
        password: &[u8],
        now: Instant,
    ) -> Login {
        if let Some(wait) = self.backoff.lock().wait(peer, now) {
            return Login::Throttled(wait);
        }
        let key = stored.map(|hash| {
            let fields = (user, hash, password);
            (self.keys.0.hash_one(fields), self.keys.1.hash_one(fields))
        });
        if let Some(key) = key {
            if self
                .recent
                .lock()
                .get(&key)
                .is_some_and(|until| *until > now)
            {
                self.backoff.lock().succeeded(peer);
                return Login::Accepted;
            }
        }
        let Some(_slot) = self.gate.enter(GATE_WAIT) else {
            return Login::Busy;
        };
        let text = std::str::from_utf8(password).ok();
        let ok = match (stored, text) {
            (Some(hash), Some(p)) => verify_password(p, hash),
            _ => {
                let _ = verify_password(text.unwrap_or_default(), dummy_hash());
                false
            }
        };
        if !ok {
            let (in_a_row, wait) = self.backoff.lock().failed(peer, now);
            return Login::Refused { in_a_row, wait };
        }
        self.backoff.lock().succeeded(peer);
        if let Some(key) = key {
            let mut recent = self.recent.lock();
            if recent.len() >= MAX_RECENT {
                recent.retain(|_, until| *until > now);
                if recent.len() >= MAX_RECENT {
                    recent.clear();
                }
            }
            recent.insert(key, now + RECENT_TTL);
        }
        Login::Accepted
    }

    /// Addresses currently tracked for wrong passwords (for the page and `/metrics`).
    pub fn tracked_addresses(&self) -> usize {
        self.backoff.lock().tracked()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::hash_password;

    const A: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 0, 1));
    const B: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 0, 2));

    #[test]
    fn lockout_grows_exponentially_and_is_capped() {
        assert_eq!(lockout_for(1), Duration::ZERO);
        assert_eq!(lockout_for(2), Duration::ZERO);
        assert_eq!(lockout_for(3), Duration::from_secs(1));
        assert_eq!(lockout_for(4), Duration::from_secs(2));
        assert_eq!(lockout_for(6), Duration::from_secs(8));
        assert_eq!(lockout_for(9), MAX_LOCKOUT);
        assert_eq!(lockout_for(u32::MAX), MAX_LOCKOUT);
    }

    #[test]
    fn wrong_passwords_throttle_only_their_own_address() {
        let logins = Logins::new(2);
        let hash = hash_password("right").unwrap();
        let t0 = Instant::now();
        for n in 1..=3 {
            assert!(matches!(
                logins.check(A, "u", Some(&hash), b"wrong", t0),
                Login::Refused { in_a_row, .. } if in_a_row == n
            ));
        }
        // The fourth attempt within the second is not checked at all, even with the right one.
        assert!(matches!(
            logins.check(A, "u", Some(&hash), b"right", t0),
            Login::Throttled(_)
        ));
        assert_eq!(
            logins.check(B, "u", Some(&hash), b"right", t0),
            Login::Accepted
        );
        let later = t0 + Duration::from_secs(1);
        assert_eq!(
            logins.check(A, "u", Some(&hash), b"right", later),
            Login::Accepted
        );
        assert_eq!(logins.tracked_addresses(), 0, "a success clears the count");
    }

    #[test]
    fn a_remembered_password_is_keyed_by_the_stored_hash() {
        let logins = Logins::new(1);
        let old = hash_password("pw").unwrap();
        let now = Instant::now();
        assert_eq!(
            logins.check(A, "u", Some(&old), b"pw", now),
            Login::Accepted
        );
        // A hash that cannot verify anything: only the remembered entry can accept it.
        let bogus = "$argon2id$v=19$m=8,t=1,p=1$c2FsdHNhbHQ$AAAAAAAAAAAAAAAAAAAAAA";
        assert!(matches!(
            logins.check(A, "u", Some(bogus), b"pw", now),
            Login::Refused { .. }
        ));
        // The same stored hash and password: accepted from memory, without the slot.
        let _held = logins.gate.enter(Duration::ZERO).expect("the only slot");
        assert_eq!(
            logins.check(B, "u", Some(&old), b"pw", now),
            Login::Accepted
        );
        assert_eq!(
            logins.check(B, "u", Some(&old), b"pw", now + RECENT_TTL),
            Login::Busy,
            "expired, so it needs a slot, and the only one is held"
        );
        assert!(matches!(
            logins.check(B, "u", Some(&old), b"other", now),
            Login::Busy
        ));
    }

    #[test]
    fn backoff_tracks_a_bounded_number_of_addresses() {
        let mut b = Backoff::default();
        let now = Instant::now();
        for i in 0..(MAX_TRACKED as u32 + 100) {
            let ip = IpAddr::V4(std::net::Ipv4Addr::from(0x7f00_0000 + i));
            for _ in 0..FREE_FAILURES {
                b.failed(ip, now);
            }
        }
        assert!(b.tracked() <= MAX_TRACKED, "{}", b.tracked());
    }
}
