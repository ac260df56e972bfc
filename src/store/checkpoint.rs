//! The `store-checkpoint` thread: copies committed pages from the WAL into the database file.
//!
//! SQLite's automatic checkpoint runs inside the commit that crosses its threshold, on the
//! committing thread: one small commit in a few hundred copied the whole WAL (1,000 pages) and
//! synced twice — 7–9 ms measured, during which every acknowledgement waiting on the `store`
//! thread waited too. This thread does the copying on a connection of its own, with PASSIVE
//! checkpoints (they never block the writer and never wait on a lock), once every [`COMMITS`]
//! commits that came within [`STREAM`], and at most every [`INTERVAL`]: in a stream of small
//! commits, where a stall holds up the acknowledgements queued behind it. Commits further apart
//! leave the checkpoints to SQLite as before: a quiet broker (a Raspberry Pi's SD card) is not
//! made to copy and sync its hot pages more often than it did. It reads and writes no rows: the
//! `store` thread still owns every read and write of data.
//!
//! The `store` connection keeps SQLite's automatic checkpoint at its default threshold: only a
//! checkpoint run right after the writer's own commit lets the next one start the WAL over, so
//! that bounds the WAL as before — but it now finds most frames already copied and has little
//! left to do. If this thread cannot open its connection the store runs as before.

use std::path::Path;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{bounded, Receiver, RecvTimeoutError, Sender, TrySendError};
use rusqlite::{Connection, OpenFlags};

/// Commits between two checkpoints: a small commit writes about 8 pages, so this thread has
/// copied most of the WAL when the store's own checkpoint comes due at 1,000.
pub(crate) const COMMITS: u32 = 32;

/// [`COMMITS`] commits within this time are a stream.
pub(crate) const STREAM: Duration = Duration::from_secs(1);

/// Least time between two checkpoints.
pub(crate) const INTERVAL: Duration = Duration::from_millis(50);

/// The handle the `store` thread keeps: tells the thread that something was committed.
pub(crate) struct Checkpointer {
    /// Holds at most one "committed since" mark: the thread needs no count.
    tx: Option<Sender<()>>,
    thread: Option<JoinHandle<()>>,
    /// Commits since the thread was last told, and when the first of them came.
    commits: u32,
    since: Instant,
}

impl Checkpointer {
    /// Opens the second connection and starts the thread; `None` (logged) if either fails.
    pub(crate) fn start(path: &Path, full_sync: bool) -> Option<Checkpointer> {
        let started = open(path, full_sync)
            .map_err(|e| e.to_string())
            .and_then(|conn| {
                let (tx, rx) = bounded(1);
                std::thread::Builder::new()
                    .name("store-checkpoint".into())
                    .spawn(move || run(&conn, &rx))
                    .map(|thread| (tx, thread))
                    .map_err(|e| e.to_string())
            });
        match started {
            Ok((tx, thread)) => Some(Checkpointer {
                tx: Some(tx),
                thread: Some(thread),
                commits: 0,
                since: Instant::now(),
            }),
            Err(e) => {
                log::warn!(
                    "store: no checkpoint thread ({e}); commits run SQLite's checkpoints themselves"
                );
                None
            }
        }
    }

    /// After each commit: every [`COMMITS`]th one tells the thread, if they came as a stream.
    /// Never blocks.
    pub(crate) fn committed(&mut self) {
        if self.commits == 0 {
            self.since = Instant::now();
        }
        self.commits += 1;
        if self.commits < COMMITS {
            return;
        }
        self.commits = 0;
        if self.since.elapsed() > STREAM {
            return;
        }
        if let Some(tx) = &self.tx {
            match tx.try_send(()) {
                Ok(()) | Err(TrySendError::Full(())) | Err(TrySendError::Disconnected(())) => {}
            }
        }
    }

    /// Stops the thread and waits for it (before the store's final checkpoint).
    pub(crate) fn stop(&mut self) {
        self.tx.take();
        if let Some(t) = self.thread.take() {
            if t.join().is_err() {
                log::error!("store: the checkpoint thread panicked");
            }
        }
    }
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        self.stop();
    }
}

fn open(path: &Path, full_sync: bool) -> rusqlite::Result<Connection> {
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = Connection::open_with_flags(path, flags)?;
    // The checkpoint's syncs follow this connection's setting: the same as the store's.
    conn.pragma_update(
        None,
        "synchronous",
        if full_sync { "FULL" } else { "NORMAL" },
    )?;
    Ok(conn)
}

fn run(conn: &Connection, rx: &Receiver<()>) {
    let mut last = Instant::now();
    let mut failing = false;
    while rx.recv().is_ok() {
        // Commits that come on while waiting ride this checkpoint.
        let due = last + INTERVAL;
        loop {
            match rx.recv_deadline(due) {
                Ok(()) => {}
                Err(RecvTimeoutError::Timeout) => break,
                Err(RecvTimeoutError::Disconnected) => return,
            }
        }
        let result = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| {
            Ok((r.get::<_, i64>(1)?, r.get::<_, i64>(2)?))
        });
        last = Instant::now();
        match result {
            Ok((frames, copied)) => {
                if failing {
                    failing = false;
                    log::info!("store: checkpoints work again");
                }
                log::trace!("store: checkpoint: {copied} of {frames} WAL frames in the file");
            }
            // Nothing is lost: the frames stay in the WAL, and the next checkpoint (this one's
            // or the store's own) copies them.
            Err(e) if !failing => {
                failing = true;
                log::warn!("store: a checkpoint failed: {e}; retrying with the next commits");
            }
            Err(_) => {}
        }
    }
}
