//! The `ticker` thread: the broker's clock. Four times a second it publishes delayed wills that
//! are due and ends expired sessions; every `sys_interval` it publishes `$SYS`.

use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crossbeam_channel::{bounded, RecvTimeoutError, Sender};

use super::{sys, Broker};

const TICK: Duration = Duration::from_millis(250);

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
                let sys_interval = broker.config.sys_interval;
                let mut next_sys = Instant::now();
                while let Err(RecvTimeoutError::Timeout) = rx.recv_timeout(TICK) {
                    let now = Instant::now();
                    broker.expire(now);
                    broker.prune_connect_times(now);
                    if !sys_interval.is_zero() && now >= next_sys {
                        sys::publish(&broker);
                        next_sys = now + sys_interval;
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
