//! The one-shot signal behind a [`super::DurableTicket`]: the `store` thread answers it once,
//! after the commit that holds its write (or as soon as that write cannot be committed).
//!
//! Why not a crossbeam `bounded(1)` channel, as before: a publisher of retained QoS 1 messages
//! makes one ticket per message and its reader waits on the oldest one between reads. A channel
//! costs several allocations per ticket, and a receive that finds it empty spins and then calls
//! `sched_yield` up to four times before it sleeps (crossbeam's `Backoff::snooze`): 11,000 yields
//! in a burst of 20,000 messages (perf, issue 17), each of which hands the core to any other
//! runnable thread on a busy machine. This is one allocation, and a waiter sleeps on a
//! `parking_lot` condition variable at once.

use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

use super::worker::TicketFailure;

/// What the `store` thread answers.
pub(crate) type Answer = Result<(), TicketFailure>;

enum Slot {
    /// Not answered yet.
    Waiting,
    Answered(Answer),
    /// The sender went without answering (the store stopped).
    Closed,
}

struct Cell {
    slot: Mutex<Slot>,
    answered: Condvar,
}

/// The `store` thread's end; dropping it unanswered reads as the store having stopped.
pub(crate) struct TicketSender(Arc<Cell>);

/// The waiting end, inside a [`super::DurableTicket`].
#[derive(Debug, Clone)]
pub(crate) struct TicketReceiver(Arc<Cell>);

impl std::fmt::Debug for Cell {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TicketCell").finish_non_exhaustive()
    }
}

/// Why [`TicketReceiver::recv_timeout`] returned no answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum NoAnswer {
    /// Not within the timeout.
    Timeout,
    /// The sender went without answering.
    Closed,
}

pub(crate) fn oneshot() -> (TicketSender, TicketReceiver) {
    let cell = Arc::new(Cell {
        slot: Mutex::new(Slot::Waiting),
        answered: Condvar::new(),
    });
    (TicketSender(cell.clone()), TicketReceiver(cell))
}

impl TicketSender {
    /// Answers the ticket and wakes its waiter, if one sleeps.
    pub(crate) fn send(self, answer: Answer) {
        let mut slot = self.0.slot.lock();
        if matches!(*slot, Slot::Waiting) {
            *slot = Slot::Answered(answer);
        }
        drop(slot);
        self.0.answered.notify_all();
        // Drop finds the slot answered: nothing more to do.
    }
}

impl Drop for TicketSender {
    fn drop(&mut self) {
        let mut slot = self.0.slot.lock();
        if matches!(*slot, Slot::Waiting) {
            *slot = Slot::Closed;
            drop(slot);
            self.0.answered.notify_all();
        }
    }
}

impl TicketReceiver {
    /// Waits at most `timeout` (`Duration::MAX`: for ever) for the answer. The answer stays:
    /// a ticket is looked at by its publisher's reader and by the acknowledgement pump
    /// ([`super::AckPump`]) on the `store` thread, whichever comes first.
    pub(crate) fn recv_timeout(&self, timeout: Duration) -> Result<Answer, NoAnswer> {
        let deadline = Instant::now().checked_add(timeout);
        let mut slot = self.0.slot.lock();
        loop {
            match &*slot {
                Slot::Answered(answer) => return Ok(answer.clone()),
                Slot::Closed => return Err(NoAnswer::Closed),
                Slot::Waiting => {}
            }
            match deadline {
                None => self.0.answered.wait(&mut slot),
                Some(at) => {
                    if Instant::now() >= at {
                        return Err(NoAnswer::Timeout);
                    }
                    // A timed-out wait loops once more to look at the slot, then returns.
                    let _ = self.0.answered.wait_until(&mut slot, at);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answered_before_the_wait() {
        let (tx, rx) = oneshot();
        tx.send(Ok(()));
        assert!(matches!(rx.recv_timeout(Duration::ZERO), Ok(Ok(()))));
        // Kept for a second look (the reader's and the pump's).
        assert!(matches!(rx.recv_timeout(Duration::ZERO), Ok(Ok(()))));
    }

    #[test]
    fn times_out_then_gets_the_answer() {
        let (tx, rx) = oneshot();
        assert_eq!(
            rx.recv_timeout(Duration::from_millis(5)).err(),
            Some(NoAnswer::Timeout)
        );
        let t = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(20));
            tx.send(Err(TicketFailure::Refused("no".into())));
        });
        assert!(matches!(
            rx.recv_timeout(Duration::MAX),
            Ok(Err(TicketFailure::Refused(_)))
        ));
        t.join().unwrap();
    }

    #[test]
    fn a_dropped_sender_reads_as_closed() {
        let (tx, rx) = oneshot();
        let t = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(20));
            drop(tx);
        });
        assert_eq!(rx.recv_timeout(Duration::MAX).err(), Some(NoAnswer::Closed));
        t.join().unwrap();
    }
}
