//! The reader threads' cache: a thread per client, as the design card has it, but a thread
//! whose client has ended parks here for the next accepted socket instead of exiting.
//!
//! Profiled under a connection storm, the `acceptor` thread spent about a third of its time in
//! `clone3` (kernel stack, task struct) and the guard page's `mprotect`, and each ending client
//! thread a sizeable share in the `munmap` of its stack (with a TLB shoot-down on every core).
//! A parked thread costs neither: the acceptor hands it the socket with a condition-variable
//! wake-up. When a socket takes the last parked thread, the thread that took it first starts
//! one spare ahead, so that the next socket of a storm finds a thread waiting and the clone
//! happens off the acceptor, in parallel with it.
//!
//! Bounds: at most [`MAX_IDLE`] threads park (one over the bound exits at once), and a parked
//! thread exits after [`IDLE_EXIT`] without a socket. A thread only ever serves a socket the
//! acceptor admitted to the pending pool, so the threads serving sockets stay bounded by
//! `max_pending_connections` + `max_clients` as before; parked ones are named `reader-idle`,
//! not `client-<id>`, and hold no socket.
//!
//! Its lock is a leaf: nothing else is taken while it is held.

use std::collections::VecDeque;
use std::ffi::CString;
use std::io;
use std::net::SocketAddr;
use std::panic::{self, AssertUnwindSafe};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use parking_lot::{Condvar, Mutex};

use super::connection;
use super::pipe::Pipe;
use super::stack;
use super::Broker;

/// Parked threads kept at most: enough to absorb the churn of a reconnect storm, few enough
/// that their stacks (a few pages each once trimmed) do not matter.
pub const MAX_IDLE: usize = 32;

/// A parked thread without a socket for this long exits.
pub const IDLE_EXIT: Duration = Duration::from_secs(30);

/// Stack of a reader thread: decoding and routing are shallow.
pub(super) const READER_STACK: usize = 256 * 1024;

/// The name of a parked thread (a serving one is `client-<conn id>`).
const IDLE_NAME: &str = "reader-idle";

/// An accepted socket, admitted to the pending pool, waiting for its thread.
struct Job {
    broker: Arc<Broker>,
    stream: Arc<Pipe>,
    peer: SocketAddr,
    conn_id: u64,
}

#[derive(Default)]
struct State {
    /// Threads parked or on their way to park, each of which will take one job: always at
    /// least `jobs.len()`.
    idle: usize,
    jobs: VecDeque<Job>,
}

#[derive(Default)]
pub struct ReaderPool {
    state: Mutex<State>,
    wake: Condvar,
}

impl ReaderPool {
    /// Serves `stream` on a parked thread, or on a new one when none is parked. On an error
    /// (no thread could be started) the socket is dropped and the caller takes it out of the
    /// pending pool.
    pub fn serve(
        self: &Arc<Self>,
        broker: Arc<Broker>,
        stream: Arc<Pipe>,
        peer: SocketAddr,
        conn_id: u64,
    ) -> io::Result<()> {
        let job = Job {
            broker,
            stream,
            peer,
            conn_id,
        };
        {
            let mut st = self.state.lock();
            if st.idle > st.jobs.len() {
                st.jobs.push_back(job);
                drop(st);
                self.wake.notify_one();
                return Ok(());
            }
        }
        self.spawn(Some(job))
    }

    /// Starts a thread that serves `first` (or, without one, parks at once) and then parks.
    fn spawn(self: &Arc<Self>, first: Option<Job>) -> io::Result<()> {
        let pool = self.clone();
        thread::Builder::new()
            .name(match &first {
                Some(job) => format!("client-{}", job.conn_id),
                None => IDLE_NAME.into(),
            })
            .stack_size(READER_STACK)
            .spawn(move || pool.thread_main(first))
            .map(drop)
    }

    fn thread_main(self: Arc<Self>, first: Option<Job>) {
        // A thread started for a socket already bears its name.
        let (mut job, mut named) = match first {
            Some(j) => (Some(j), true),
            // A spare, counted in `idle` by the thread that started it.
            None => (self.wait_for_job(), false),
        };
        while let Some(j) = job {
            if !named {
                set_thread_name(&format!("client-{}", j.conn_id));
            }
            self.run(j);
            job = self.park();
            named = false;
        }
    }

    /// Serves one socket, whatever becomes of it (a panic is logged, the thread lives on).
    fn run(self: &Arc<Self>, job: Job) {
        let Job {
            broker,
            stream,
            peer,
            conn_id,
        } = job;
        let result = panic::catch_unwind(AssertUnwindSafe(|| {
            connection::run(broker, stream, peer, conn_id)
        }));
        if result.is_err() {
            log::error!("connection {conn_id} from {peer}: handler panicked; connection dropped");
        }
    }

    /// Parks until a job comes (`Some`) or [`IDLE_EXIT`] passes, or returns `None` at once
    /// when [`MAX_IDLE`] threads are parked already.
    fn park(self: &Arc<Self>) -> Option<Job> {
        {
            let mut st = self.state.lock();
            if st.idle - st.jobs.len() >= MAX_IDLE {
                return None;
            }
            st.idle += 1;
        }
        set_thread_name(IDLE_NAME);
        // What the last client's deepest packet touched is not kept while parked.
        stack::trim_now();
        self.wait_for_job()
    }

    /// The wait of a thread counted in `idle`.
    fn wait_for_job(self: &Arc<Self>) -> Option<Job> {
        let mut st = self.state.lock();
        loop {
            if let Some(job) = st.jobs.pop_front() {
                st.idle -= 1;
                // The last parked thread is taken: start the next socket's thread now, on this
                // thread, rather than on the acceptor when that socket comes.
                let spare = st.idle == st.jobs.len();
                if spare {
                    st.idle += 1;
                }
                drop(st);
                if spare && self.spawn(None).is_err() {
                    self.state.lock().idle -= 1;
                }
                return Some(job);
            }
            if self.wake.wait_for(&mut st, IDLE_EXIT).timed_out() && st.jobs.is_empty() {
                st.idle -= 1;
                return None;
            }
        }
    }
}

/// Renames the calling thread (as `/proc/PID/task/TID/comm` and debuggers show it; at most 15
/// bytes are kept).
fn set_thread_name(name: &str) {
    #[cfg(target_os = "linux")]
    if let Ok(c) = CString::new(name) {
        // SAFETY: PR_SET_NAME reads a NUL-terminated string of which it keeps 15 bytes; `c`
        // outlives the call.
        unsafe {
            libc::prctl(libc::PR_SET_NAME, c.as_ptr() as libc::c_ulong, 0, 0, 0);
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = name;
}
