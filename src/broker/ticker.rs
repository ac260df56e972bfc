//! The `ticker` thread: the broker's clock. Four times a second it publishes delayed wills that
//! are due and ends expired sessions; every `sys_interval` it publishes `$SYS`; every
//! [`TRIM_EVERY`] it gives freed heap memory back to the system (see [`release_free_heap`]).

use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crossbeam_channel::{bounded, RecvTimeoutError, Sender};

use super::{sys, Broker};

const TICK: Duration = Duration::from_millis(250);

/// How often the ticker looks at how much freed memory the allocator holds.
pub const TRIM_EVERY: Duration = Duration::from_secs(5);

/// Freed heap above this is given back to the system.
const TRIM_ABOVE: usize = 4 * 1024 * 1024;

/// Stops the ticker when dropped or when `stop` is called.
pub struct Ticker {
    stop: Option<Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Ticker {
    pub fn start(broker: Arc<Broker>) -> std::io::Result<Ticker> {
        let (tx, rx) = bounded::<()>(1);
        let thread = thread::Builder::new()
            .name("ticker".into())
            .spawn(move || {
                let mut next_sys = Instant::now();
                let mut next_trim = Instant::now() + TRIM_EVERY;
                while let Err(RecvTimeoutError::Timeout) = rx.recv_timeout(TICK) {
                    let now = Instant::now();
                    broker.expire(now);
                    broker.prune_connect_times(now);
                    // Read each tick: a config reload may change it.
                    let sys_interval = broker.config().sys_interval;
                    if !sys_interval.is_zero() && now >= next_sys {
                        sys::publish(&broker);
                        next_sys = now + sys_interval;
                    }
                    if now >= next_trim {
                        release_free_heap();
                        next_trim = now + TRIM_EVERY;
                    }
                }
            })?;
        Ok(Ticker {
            stop: Some(tx),
            thread: Some(thread),
        })
    }

    pub fn stop(&mut self) {
        self.stop.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Ticker {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Gives the heap memory that is free but still held by the allocator back to the system, when
/// there is more than `TRIM_ABOVE` of it.
///
/// Why: glibc returns freed memory on its own only from the top of a heap. A burst (300,000
/// distinct topics passing through the history batches, a slow subscriber's backlog) leaves
/// freed chunks under live ones, and the process kept ~130 MiB resident for good after such a
/// burst; `malloc_trim` releases the free pages inside the heap too (11 MiB after). Looking
/// costs one `mallinfo2` walk of the free lists every few seconds.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
pub fn release_free_heap() {
    // SAFETY: both only read or adjust the allocator's own state under its locks.
    let free = unsafe { libc::mallinfo2() }.fordblks;
    if free > TRIM_ABOVE {
        unsafe { libc::malloc_trim(0) };
    }
}

/// Other allocators return memory on their own.
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub fn release_free_heap() {}
