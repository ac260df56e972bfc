//! The `writer` thread: one per broker, it finishes the writes that could not be done at once —
//! connections whose socket was full (a client that reads slowly or not at all) and flushes that
//! ran out of rounds while news kept coming. Every other write happens on the thread that queued
//! it (see [`outbox`](super::outbox)).
//!
//! Outboxes are handed over with [`Writer::hand_over`]; the thread `poll(2)`s their sockets for
//! room and a socket pair for new hand-overs, and gives an outbox's write turn back once it has
//! nothing left. A closing connection that stays full past its grace is shut down, and the read
//! side of one that lingers after the server closed it is shut when its linger ends (waking a
//! reader thread still waiting in a read).

use std::io::{self, Read, Write};
use std::os::unix::io::AsRawFd;
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use super::outbox::{Outbox, Progress};
use super::pipe::Pipe;
use super::socket;

/// Rounds the writer thread spends on one outbox before serving the others.
const ROUNDS: usize = 8;

/// Shared between the writer thread and every outbox.
pub struct Writer {
    handed: Mutex<Vec<Arc<Outbox>>>,
    /// Sockets whose write side the server shut, with when to shut the read side too. Weak: a
    /// socket whose reader and outbox are gone is already closed. One entry per connection the
    /// server closed in the last [`LINGER`](super::outbox::LINGER), so bounded by the close rate.
    lingering: Mutex<Vec<(Instant, Weak<Pipe>)>>,
    /// Written to (one byte) to wake the thread from `poll`.
    wake: UnixStream,
    stop: AtomicBool,
}

/// Owns the writer thread: stops it when dropped.
pub struct WriterThread {
    writer: Arc<Writer>,
    thread: Option<JoinHandle<()>>,
}

impl WriterThread {
    pub fn start() -> io::Result<WriterThread> {
        let (wake, wake_rx) = UnixStream::pair()?;
        wake.set_nonblocking(true)?;
        wake_rx.set_nonblocking(true)?;
        let writer = Arc::new(Writer {
            handed: Mutex::new(Vec::new()),
            lingering: Mutex::new(Vec::new()),
            wake,
            stop: AtomicBool::new(false),
        });
        let shared = writer.clone();
        let thread = thread::Builder::new()
            .name("writer".into())
            .stack_size(256 * 1024)
            .spawn(move || run(&shared, wake_rx))?;
        Ok(WriterThread {
            writer,
            thread: Some(thread),
        })
    }

    pub fn writer(&self) -> &Arc<Writer> {
        &self.writer
    }
}

impl Drop for WriterThread {
    fn drop(&mut self) {
        self.writer.stop.store(true, Ordering::SeqCst);
        self.writer.nudge();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Writer {
    /// Gives the thread an outbox whose write turn it now holds.
    pub fn hand_over(&self, outbox: Arc<Outbox>) {
        self.handed.lock().push(outbox);
        self.nudge();
    }

    /// Shuts `stream` (both ways) at `until`, unless it is closed by then.
    pub fn linger(&self, stream: Weak<Pipe>, until: Instant) {
        self.lingering.lock().push((until, stream));
        self.nudge();
    }

    /// Ends the lingers that are due; the nearest deadline of those left.
    fn end_lingers(&self, now: Instant) -> Option<Instant> {
        let mut lingering = self.lingering.lock();
        lingering.retain(|(until, stream)| {
            if *until > now {
                return stream.strong_count() > 0;
            }
            if let Some(stream) = stream.upgrade() {
                stream.shutdown(std::net::Shutdown::Both);
            }
            false
        });
        lingering.iter().map(|(until, _)| *until).min()
    }

    /// Wakes the thread to look at its outboxes again (a close deadline was set).
    pub fn nudge(&self) {
        // A full socket pair already holds a wake-up: nothing is lost by dropping this one.
        let _ = (&self.wake).write(&[1]);
    }
}

fn run(writer: &Writer, mut wake_rx: UnixStream) {
    let mut waiting: Vec<Arc<Outbox>> = Vec::new();
    let mut fds: Vec<libc::pollfd> = Vec::new();
    let mut again = false;
    loop {
        if writer.stop.load(Ordering::SeqCst) {
            break;
        }
        let handed = std::mem::take(&mut *writer.handed.lock());
        waiting.extend(handed);
        // Poll the wake-up socket and every waiting socket for room; without a wait when some
        // outbox ran out of rounds, or until the nearest close deadline.
        fds.clear();
        fds.push(socket::pollfd(wake_rx.as_raw_fd(), libc::POLLIN));
        fds.extend(
            waiting
                .iter()
                .map(|o| socket::pollfd(o.pipe().raw_fd(), libc::POLLOUT)),
        );
        let now = Instant::now();
        let next_linger = writer.end_lingers(now);
        let timeout = if again {
            0
        } else {
            waiting
                .iter()
                .filter_map(|o| o.close_by())
                .chain(next_linger)
                .min()
                .map_or(-1, |by| millis_until(by, now))
        };
        again = false;
        if let Err(e) = socket::poll(&mut fds, timeout) {
            if e.kind() != io::ErrorKind::Interrupted {
                log::error!("writer thread: poll failed: {e}");
                thread::sleep(Duration::from_millis(10));
            }
            continue;
        }
        if fds[0].revents != 0 {
            let mut sink = [0u8; 64];
            while matches!(wake_rx.read(&mut sink), Ok(n) if n > 0) {}
        }
        let now = Instant::now();
        let mut i = 0;
        waiting.retain(|outbox| {
            i += 1;
            // New hand-overs (fresh this round) are tried even before poll says so.
            let ready = fds.get(i).is_none_or(|f| f.revents != 0) || outbox.close_by().is_some();
            if !ready {
                return true;
            }
            match outbox.write_turn(ROUNDS) {
                Progress::Done => false,
                Progress::More => {
                    again = true;
                    true
                }
                Progress::Blocked => !outbox.abandon_if_late(now),
            }
        });
    }
    // The broker is going away: whatever is still unwritten is not going to be.
    let now = Instant::now() + Duration::from_secs(3600);
    for outbox in waiting.drain(..) {
        outbox.abandon_if_late(now);
    }
    writer.end_lingers(now);
}

fn millis_until(by: Instant, now: Instant) -> i32 {
    let ms = by.saturating_duration_since(now).as_millis() + 1;
    i32::try_from(ms).unwrap_or(i32::MAX)
}
