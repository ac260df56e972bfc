//! The SQLite store: [`Store::open`] and [`StoreHandle`], the only public surface of `store/`.
//!
//! One thread named `store` (`worker.rs`) owns the rusqlite connection. Every other thread holds a
//! [`StoreHandle`] (Clone + Send + Sync) that sends it commands over two crossbeam channels.
//! No send ever blocks, so a thread holding a broker lock can never be held up by the database:
//! - **durable** — retained messages, sessions, subscriptions, wills, kept QoS 1/2 messages,
//!   users, ACL rules, bans and queries. Never shed once taken. What waits for the database is
//!   bounded here: a kept message or a retained message (the writes that carry a payload) sent
//!   while `max_backlog` writes already wait waits for room while the database commits (at
//!   most [`BACKLOG_WAIT`]); while it fails, or after that wait, it is not taken — its ticket
//!   fails at once with [`StoreError::Unavailable`] and [`StoreStats::refused`] counts it. The small writes that
//!   keep a session's record in step (its row, subscriptions, will, a kept message's state) are
//!   always taken: they follow what clients do, and dropping one would corrupt a session.
//! - **history** — the message/topic history and the client records. Shed when full
//!   (`try_send` fails → [`StoreStats::shed`] + 1): the publish path never waits for it.
//!
//! The thread commits in batches (group commit): whatever is waiting goes into one transaction.
//!
//! # Durability
//! [`StoreHandle::persist_message`] and [`StoreHandle::set_retained`] return a [`DurableTicket`]
//! that fires once the transaction holding the write has committed — the broker sends no
//! PUBACK/PUBREC for a message a persistent session must keep before it. Many waiting
//! publishers share one commit. A publisher's reader need not wait on its tickets: with
//! [`StoreHandle::pump_acks`] the `store` thread itself queues the acks that a commit made
//! ready ([`AckPump`]), right after it. What a commit survives depends on [`SyncMode`]:
//! - `Normal` (default): WAL + `synchronous=NORMAL`; survives the process being killed
//!   (kill -9), not necessarily a power loss.
//! - `Full`: `synchronous=FULL`, an fsync per commit; survives power loss.
//! - `Relaxed { window_ms }`: tickets fire at once; the write is committed at most `window_ms`
//!   later (a kill within the window loses it).
//!
//! # Failures
//! `open` refuses a corrupt file, a read-only file, a file locked by another process and one
//! from a newer schema, with a typed [`StoreError`] — never a silent empty start. While running,
//! a database that cannot be written (disk full, `max_bytes` reached, read-only, I/O error) is
//! logged once, then summarised every minute and logged again when it recovers
//! ([`StoreStats::failing_since_ms`] says so meanwhile). Durable writes wait in memory (bounded,
//! see above) and are retried; every ticket is answered `Unavailable` at once (the write is
//! still kept and may commit later), so nobody waits on a database that cannot commit; the
//! broker keeps serving; writes resume when space returns.
//!
//! # Example
//! ```no_run
//! use mqtt5_broker::store::{Store, StoreOptions};
//! let store = Store::open("broker.db", StoreOptions::default())?;
//! let snapshot = store.load()?; // retained messages and persistent sessions
//! let acl = store.acl(); // in-memory users, rules and bans; refreshed after every change
//! # let _ = (snapshot, acl);
//! store.shutdown(); // final commit, joins the thread
//! # Ok::<(), mqtt5_broker::store::StoreError>(())
//! ```

pub mod admin;
pub mod backup;
mod checkpoint;
pub mod codec;
mod error;
mod queries;
pub mod schema;
mod ticket;
mod types;
mod web_admin;
mod worker;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam_channel::{bounded, unbounded, RecvTimeoutError, Sender, TrySendError};
use parking_lot::{Mutex, RwLock};
use rusqlite::Connection;

pub use error::StoreError;
pub use types::{
    instant_to_ms, now_ms, BanRow, ClientRecord, ClientRow, MessageRow, MessageState,
    QueuedMessageRow, SessionMessage, SessionRecord, SessionSnapshot, Snapshot, StoreStats,
    StoredMessage, SubscriptionRow, TopicRow, UserRow,
};

use crate::auth::{self, validate_pattern, AclRule, AclSet, Ban, BanKind};
use crate::message::Message;
use crate::protocol::{QoS, Will};
use ticket::{NoAnswer, TicketReceiver};
use worker::{AdminWrite, Command, History, TicketFailure, Worker, Write};

/// The longest a kept or retained message waits for room in a full backlog while the database
/// is committing (not failing) before it is refused.
pub const BACKLOG_WAIT: Duration = Duration::from_secs(5);

/// The most rows one control-page query returns.
pub const MAX_QUERY_ROWS: u32 = 1000;

/// When a committed write is durable; see the module docs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SyncMode {
    /// Commit before the ack; WAL with `synchronous=NORMAL`. Survives kill -9.
    #[default]
    Normal,
    /// Commit before the ack with `synchronous=FULL` (fsync). Survives power loss.
    Full,
    /// Ack at once; commit at most `window_ms` later.
    Relaxed { window_ms: u64 },
}

/// How the store runs. `Default` gives the documented defaults.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// History messages kept per topic (older ones pruned). Default 100.
    pub history_per_topic: u32,
    /// Topics the history keeps at most; the least recently seen are forgotten first, with
    /// their messages. Default 10,000.
    pub history_max_topics: u64,
    /// History payloads are cut to this many bytes (`payload_len` keeps the real size).
    /// Default 64 KiB.
    pub history_payload_limit: usize,
    pub sync: SyncMode,
    /// History alone waits at most this long before a commit; also the commit window of
    /// nothing else. Default 100 ms.
    pub flush_interval: Duration,
    /// Sizes the durable backlog: kept and retained messages are refused once four times this
    /// many durable writes (at least 1024) wait for the database. Default 4096.
    pub queue_capacity: usize,
    /// Capacity of the history channel (senders shed when full). Default 4096.
    pub history_capacity: usize,
    /// Bytes of messages the history channel may hold (senders shed above it). The channel's
    /// capacity counts commands, and one command is a reader's whole chunk of publishes: a
    /// QoS 1 publisher at 250,000 messages a second filled 4,096 of them with 640 MiB.
    /// Default 8 MiB.
    pub history_queue_bytes: usize,
    /// Most commands in one transaction. Default 1024.
    pub max_batch: usize,
    /// How long SQLite waits for another process's lock. Default 5 s.
    pub busy_timeout: Duration,
    /// Retry period while the database cannot be written. Default 1 s.
    pub retry_interval: Duration,
    /// How long a caller waits for an answer (queries, users, ACL). Default 30 s.
    pub reply_timeout: Duration,
    /// Largest size of the database file (`PRAGMA max_page_count`); 0 = no limit. Writes past
    /// it fail as on a full disk. Default 0.
    pub max_bytes: u64,
    /// The longest a due commit waits for [`WriteHold`]s to end. A reader handles the PUBLISH
    /// packets of one read in well under it, and it is all the delay a hold can add to other
    /// publishers' acknowledgements. Default 1 ms.
    pub hold_wait: Duration,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            history_per_topic: 100,
            history_max_topics: 10_000,
            history_payload_limit: 64 * 1024,
            sync: SyncMode::Normal,
            flush_interval: Duration::from_millis(100),
            queue_capacity: 4096,
            history_capacity: 4096,
            history_queue_bytes: 8 * 1024 * 1024,
            max_batch: 1024,
            busy_timeout: Duration::from_secs(5),
            retry_interval: Duration::from_secs(1),
            reply_timeout: Duration::from_secs(30),
            max_bytes: 0,
            hold_wait: Duration::from_millis(1),
        }
    }
}

/// How many durable writes may wait for the database before kept and retained messages are
/// refused (see the module docs).
pub(crate) fn max_backlog(opts: &StoreOptions) -> usize {
    opts.queue_capacity.max(1).saturating_mul(4).max(1024)
}

/// State shared between the handles and the `store` thread: counters and the ACL snapshot.
pub(crate) struct Shared {
    commands: AtomicU64,
    transactions: AtomicU64,
    /// Session messages stored and removed within one commit, so never written.
    settled: AtomicU64,
    shed: AtomicU64,
    /// Weight ([`History::weight`]) of what the history channel holds now.
    history_queued: AtomicUsize,
    history_queue_bytes: usize,
    failed_commits: AtomicU64,
    /// Durable writes the `store` thread holds, uncommitted.
    pending: AtomicU64,
    /// Topics in the history, as of the last commit.
    topics: AtomicU64,
    /// Topics forgotten since start to keep the history within `history_max_topics`.
    topics_forgotten: AtomicU64,
    /// Durable writes sent and not yet taken by the `store` thread.
    queued: AtomicU64,
    /// Kept and retained messages refused because the backlog was full.
    refused: AtomicU64,
    /// Since when (ms since the epoch) the database cannot be written; 0 while it can.
    failing_since: AtomicI64,
    last_error: Mutex<Option<String>>,
    acl: RwLock<Arc<AclSet>>,
    acl_generation: AtomicU64,
    /// `history_per_topic` and `history_max_topics`: from [`StoreOptions`] at start, then as a
    /// config reload sets them ([`StoreHandle::set_history_limits`]); the thread reads them for
    /// each batch.
    history_per_topic: AtomicU32,
    history_max_topics: AtomicU64,
    /// Set by `shutdown`, in case the durable channel is full (the thread checks it at least
    /// once a second).
    stop: AtomicBool,
    /// [`WriteHold`]s alive: publishers still sending writes that belong in the next commit.
    holds: AtomicUsize,
    /// Set while the thread waits for the holds to end: the last one to end wakes it.
    hold_waiting: AtomicBool,
}

/// Signals that a write has committed. Dropping it is fine (the write still happens).
#[derive(Debug)]
#[must_use = "wait on the ticket, or drop it explicitly if the ack does not depend on it"]
pub struct DurableTicket {
    rx: Option<TicketReceiver>,
    done: bool,
}

impl DurableTicket {
    fn ready() -> DurableTicket {
        DurableTicket {
            rx: None,
            done: true,
        }
    }

    fn pending(rx: TicketReceiver) -> DurableTicket {
        DurableTicket {
            rx: Some(rx),
            done: false,
        }
    }

    /// Blocks until the write has committed. `Err(Closed)` if the store stopped without
    /// committing it; `Err(Refused)` if the database refused this write (e.g. a kept message
    /// for a session that was never saved) — the rest of its batch committed;
    /// `Err(Unavailable)` as soon as the database is known not to be able to commit it now
    /// (it may still commit later: nothing may be promised on it).
    pub fn wait(mut self) -> Result<(), StoreError> {
        self.wait_timeout(Duration::MAX).map(|_| ())
    }

    /// Waits at most `timeout`: `Ok(true)` committed, `Ok(false)` not yet; errors as
    /// [`DurableTicket::wait`].
    pub fn wait_timeout(&mut self, timeout: Duration) -> Result<bool, StoreError> {
        if self.done {
            return Ok(true);
        }
        let Some(rx) = &self.rx else {
            return Ok(true);
        };
        match rx.recv_timeout(timeout) {
            Ok(Ok(())) => {
                self.done = true;
                Ok(true)
            }
            Ok(Err(TicketFailure::Refused(why))) => {
                self.done = true;
                Err(StoreError::Refused(why))
            }
            // Not `done`: looked at again, it still says so (a reader and the store's ack
            // pump may both look; neither may take a failure for a commit).
            Ok(Err(TicketFailure::Unavailable(detail))) => Err(StoreError::Unavailable { detail }),
            Err(NoAnswer::Timeout) => Ok(false),
            Err(NoAnswer::Closed) => Err(StoreError::Closed),
        }
    }

    /// Non-blocking check.
    pub fn is_committed(&mut self) -> bool {
        matches!(self.wait_timeout(Duration::ZERO), Ok(true))
    }

    /// Something to wait on for this ticket's answer without holding the ticket (which may sit
    /// in a queue that another thread looks at meanwhile); `None` once it is answered.
    pub fn watch(&self) -> Option<TicketWatch> {
        match &self.rx {
            Some(rx) if !self.done => Some(TicketWatch(rx.clone())),
            _ => None,
        }
    }
}

/// See [`DurableTicket::watch`].
#[derive(Debug)]
pub struct TicketWatch(TicketReceiver);

impl TicketWatch {
    /// Waits at most `timeout` for the ticket to be answered (either way); true once it is.
    pub fn wait(&self, timeout: Duration) -> bool {
        !matches!(self.0.recv_timeout(timeout), Err(NoAnswer::Timeout))
    }
}

/// Queues a publisher's acknowledgements once their writes are committed: given to
/// [`StoreHandle::pump_acks`], it runs on the `store` thread right after the commit that ends
/// the writes sent before it, so that an acknowledgement goes from the commit to the socket
/// without waking the publisher's reader thread. It must not block: it takes only what is
/// ready, in order, and leaves anything else (a failure, a commit still running) to its owner.
pub trait AckPump: Send + Sync {
    fn pump(&self);
}

/// Brings a history that holds more than `max` topics (the setting was lowered since the file
/// was written) within it at once; returns how many topics it holds.
fn forget_over_bound(conn: &Connection, max: u64) -> rusqlite::Result<u64> {
    let topics = queries::topic_count(conn)?;
    if topics <= max {
        return Ok(topics);
    }
    queries::history_forget(conn, topics - max)?;
    log::info!(
        "store: topic history held {topics} topics, above history_max_topics ({max}); the {} \
         least recently seen were forgotten",
        topics - max
    );
    Ok(max)
}

/// Opens the database and starts the `store` thread.
pub struct Store;

impl Store {
    /// Opens (creating and migrating as needed) the database at `path`, repairs what a crash left
    /// (clients marked connected, sessions without a disconnect time, expired rows), loads the
    /// ACL snapshot and spawns the thread named `store`.
    pub fn open(path: impl AsRef<Path>, opts: StoreOptions) -> Result<StoreHandle, StoreError> {
        let path = path.as_ref().to_path_buf();
        let mut conn = schema::open(
            &path,
            schema::OpenOptions {
                busy_timeout: opts.busy_timeout,
                full_sync: opts.sync == SyncMode::Full,
                max_bytes: opts.max_bytes,
            },
        )?;
        let repairs = schema::repair_at_start(&mut conn, now_ms())
            .map_err(|e| error::open_error(&path, e))?;
        if repairs.clients_reset + repairs.sessions_expired + repairs.retained_expired > 0 {
            log::info!(
                "store: {} clients were left connected by the last run (reset); {} sessions \
                 and {} retained messages expired while stopped",
                repairs.clients_reset,
                repairs.sessions_expired,
                repairs.retained_expired
            );
        }
        let acl = queries::acl_set(&conn).map_err(|e| error::open_error(&path, e))?;
        let topics = forget_over_bound(&conn, opts.history_max_topics)
            .map_err(|e| error::open_error(&path, e))?;
        let shared = Arc::new(Shared {
            commands: AtomicU64::new(0),
            transactions: AtomicU64::new(0),
            settled: AtomicU64::new(0),
            shed: AtomicU64::new(0),
            history_queued: AtomicUsize::new(0),
            history_queue_bytes: opts.history_queue_bytes.max(1),
            failed_commits: AtomicU64::new(0),
            pending: AtomicU64::new(0),
            topics: AtomicU64::new(topics),
            topics_forgotten: AtomicU64::new(0),
            queued: AtomicU64::new(0),
            refused: AtomicU64::new(0),
            failing_since: AtomicI64::new(0),
            last_error: Mutex::new(None),
            acl: RwLock::new(Arc::new(acl)),
            acl_generation: AtomicU64::new(1),
            history_per_topic: AtomicU32::new(opts.history_per_topic),
            history_max_topics: AtomicU64::new(opts.history_max_topics),
            stop: AtomicBool::new(false),
            holds: AtomicUsize::new(0),
            hold_waiting: AtomicBool::new(false),
        });
        // Unbounded so that a send never blocks; `max_backlog` bounds what it holds.
        let (durable_tx, durable_rx) = unbounded();
        let max_backlog = max_backlog(&opts) as u64;
        let (history_tx, history_rx) = bounded(opts.history_capacity.max(1));
        let relaxed = matches!(opts.sync, SyncMode::Relaxed { .. });
        let reply_timeout = opts.reply_timeout;
        let checkpointer = checkpoint::Checkpointer::start(&path, opts.sync == SyncMode::Full);
        let worker = Worker::new(
            conn,
            checkpointer,
            durable_rx,
            history_rx,
            shared.clone(),
            opts,
        );
        let thread = std::thread::Builder::new()
            .name("store".into())
            .spawn(move || worker.run())
            .map_err(StoreError::Spawn)?;
        log::info!("store: database {} open", path.display());
        Ok(StoreHandle {
            inner: Arc::new(Inner {
                durable: durable_tx,
                history: history_tx,
                shared,
                thread: Mutex::new(Some(thread)),
                path,
                relaxed,
                reply_timeout,
                max_backlog,
            }),
        })
    }
}

struct Inner {
    durable: Sender<Command>,
    history: Sender<History>,
    shared: Arc<Shared>,
    thread: Mutex<Option<JoinHandle<()>>>,
    path: PathBuf,
    relaxed: bool,
    reply_timeout: Duration,
    max_backlog: u64,
}

impl Inner {
    fn shutdown(&self) {
        let Some(thread) = self.thread.lock().take() else {
            return;
        };
        self.shared.stop.store(true, Ordering::Release);
        let _ = self.durable.try_send(Command::Shutdown);
        if thread.join().is_err() {
            log::error!("store: the store thread panicked");
        }
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// The way to the `store` thread. Cheap to clone; every method may be called from any thread.
#[derive(Clone)]
pub struct StoreHandle {
    inner: Arc<Inner>,
}

/// See [`StoreHandle::hold_writes`]; ends when dropped.
pub struct WriteHold {
    inner: Arc<Inner>,
}

impl Drop for WriteHold {
    fn drop(&mut self) {
        let shared = &self.inner.shared;
        // SeqCst on both sides: either the thread sees the count fall, or this sees it wait.
        if shared.holds.fetch_sub(1, Ordering::SeqCst) == 1
            && shared.hold_waiting.load(Ordering::SeqCst)
        {
            let _ = self.inner.durable.send(Command::Wake);
        }
    }
}

impl std::fmt::Debug for WriteHold {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WriteHold").finish_non_exhaustive()
    }
}

impl std::fmt::Debug for StoreHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreHandle")
            .field("path", &self.inner.path)
            .finish_non_exhaustive()
    }
}

fn check_name(what: &str, name: &str) -> Result<(), StoreError> {
    if name.is_empty() {
        return Err(StoreError::Invalid(format!("the {what} is empty")));
    }
    if name.chars().any(char::is_control) {
        return Err(StoreError::Invalid(format!(
            "the {what} {name:?} contains control characters"
        )));
    }
    Ok(())
}

fn limit(n: u32) -> u32 {
    n.min(MAX_QUERY_ROWS)
}

impl StoreHandle {
    /// The database file.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// Flushes (final commit) and joins the `store` thread. Later calls on any clone fail with
    /// [`StoreError::Closed`] (or are ignored, for fire-and-forget writes). Idempotent.
    pub fn shutdown(&self) {
        self.inner.shutdown();
    }

    // ------------------------------------------------------------ sending

    /// Durable writes waiting for the database: sent and not taken, and taken and uncommitted.
    fn backlog(&self) -> u64 {
        let s = &self.inner.shared;
        s.queued.load(Ordering::Relaxed) + s.pending.load(Ordering::Relaxed)
    }

    fn write(&self, w: Write) {
        self.inner.shared.queued.fetch_add(1, Ordering::Relaxed);
        if self.inner.durable.send(Command::Write(w, None)).is_err() {
            self.inner.shared.queued.fetch_sub(1, Ordering::Relaxed);
            log::debug!("store: write after shutdown ignored");
        }
    }

    /// Sends a write that carries a message. While the backlog is full it waits for room — a
    /// database that is merely behind slows the sender (the caller holds no broker lock) — but
    /// not while the database is failing, nor longer than [`BACKLOG_WAIT`]: then the ticket
    /// fails at once and the write is not kept (the caller must not acknowledge what needed it).
    /// Asks the `store` thread to let the writes sent while the hold lives ride one commit: a
    /// commit that is due waits (at most [`StoreOptions::hold_wait`]) until every hold has ended.
    /// A reader thread holds while it handles the PUBLISH packets of one read, so that a burst
    /// of retained QoS 1 messages commits once per read, and its acknowledgements wait for one
    /// commit, instead of the first message committing alone while the rest queue behind it.
    pub fn hold_writes(&self) -> WriteHold {
        self.inner.shared.holds.fetch_add(1, Ordering::SeqCst);
        WriteHold {
            inner: self.inner.clone(),
        }
    }

    fn write_with_ticket(&self, w: Write) -> DurableTicket {
        let (tx, rx) = ticket::oneshot();
        let shared = &self.inner.shared;
        let deadline = std::time::Instant::now() + BACKLOG_WAIT;
        while self.backlog() >= self.inner.max_backlog {
            let failing = shared.failing_since.load(Ordering::Relaxed) != 0;
            if failing || std::time::Instant::now() >= deadline {
                shared.refused.fetch_add(1, Ordering::Relaxed);
                let detail = format!(
                    "{} durable writes already wait for the database ({})",
                    self.backlog(),
                    shared
                        .last_error
                        .lock()
                        .clone()
                        .unwrap_or_else(|| "it is slow".into())
                );
                tx.send(Err(TicketFailure::Unavailable(detail)));
                return DurableTicket::pending(rx);
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        self.inner.shared.queued.fetch_add(1, Ordering::Relaxed);
        let ticket = if self.inner.relaxed {
            DurableTicket::ready()
        } else {
            DurableTicket::pending(rx)
        };
        if self
            .inner
            .durable
            .send(Command::Write(w, Some(tx)))
            .is_err()
        {
            self.inner.shared.queued.fetch_sub(1, Ordering::Relaxed);
            log::debug!("store: write after shutdown ignored");
            // The sender went with the command: a pending ticket reports Closed.
        }
        ticket
    }

    fn history(&self, h: History) {
        let shared = &self.inner.shared;
        let weight = h.weight();
        // Counted before the send, so that the store thread's subtraction never comes first.
        let queued = shared.history_queued.fetch_add(weight, Ordering::Relaxed);
        if queued + weight > shared.history_queue_bytes && queued > 0 {
            shared.history_queued.fetch_sub(weight, Ordering::Relaxed);
            shared.shed.fetch_add(h.records(), Ordering::Relaxed);
            return;
        }
        match self.inner.history.try_send(h) {
            Ok(()) => {}
            Err(TrySendError::Full(h)) => {
                shared.history_queued.fetch_sub(weight, Ordering::Relaxed);
                shared.shed.fetch_add(h.records(), Ordering::Relaxed);
            }
            Err(TrySendError::Disconnected(_)) => {
                shared.history_queued.fetch_sub(weight, Ordering::Relaxed);
            }
        }
    }

    /// Runs `f` on the `store` thread and waits for its answer.
    fn call<T: Send + 'static>(
        &self,
        what: &'static str,
        f: impl FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let (tx, rx) = bounded(1);
        let query: worker::Query = Box::new(move |conn| {
            let _ = tx.send(f(conn));
        });
        self.inner
            .durable
            .send(Command::Query(query))
            .map_err(|_| StoreError::Closed)?;
        match rx.recv_timeout(self.inner.reply_timeout) {
            Ok(r) => r,
            Err(RecvTimeoutError::Timeout) => Err(StoreError::Timeout { what }),
            Err(RecvTimeoutError::Disconnected) => Err(StoreError::Closed),
        }
    }

    fn admin(&self, what: &'static str, a: AdminWrite) -> Result<i64, StoreError> {
        let (tx, rx) = bounded(1);
        self.inner
            .durable
            .send(Command::Admin(a, tx))
            .map_err(|_| StoreError::Closed)?;
        match rx.recv_timeout(self.inner.reply_timeout) {
            Ok(r) => r,
            Err(RecvTimeoutError::Timeout) => Err(StoreError::Timeout { what }),
            Err(RecvTimeoutError::Disconnected) => Err(StoreError::Closed),
        }
    }

    // ------------------------------------------------------------ history (shed when full)

    /// Adds a published message to the history of its topic. Never blocks.
    pub fn record_message(&self, msg: &Arc<Message>) {
        self.history(History::Message(msg.clone()));
    }

    /// Adds published messages to their topics' history, in order, as one command: a reader
    /// thread sends what it published per chunk read. Never blocks.
    pub fn record_messages(&self, batch: Vec<Arc<Message>>) {
        if !batch.is_empty() {
            self.history(History::Messages(batch));
        }
    }

    /// Records a client's connection. Never blocks.
    pub fn client_connected(&self, rec: ClientRecord) {
        self.history(History::Connected(rec));
    }

    /// Records a client's disconnection (`reason` as shown on the page). Never blocks.
    pub fn client_disconnected(&self, client_id: &str, reason: &str, at: i64) {
        self.history(History::Disconnected {
            client_id: client_id.to_owned(),
            reason: reason.to_owned(),
            at,
        });
    }

    // ------------------------------------------------------------ durable (never shed)

    /// Stores (`Some`) or clears (`None`) the retained message of `topic`.
    pub fn set_retained(&self, topic: &str, msg: Option<&Arc<Message>>) -> DurableTicket {
        self.write_with_ticket(Write::SetRetained {
            topic: topic.to_owned(),
            msg: msg.cloned(),
        })
    }

    /// Creates or updates a persistent session: its row, its whole subscription set and its will.
    /// The session's kept messages stay. Marks it connected (`disconnected_at` NULL).
    pub fn save_session(&self, rec: SessionRecord) {
        self.write(Write::SaveSession(Box::new(rec)));
    }

    /// The client of a persistent session went away at `at`; its expiry counts from there.
    pub fn session_disconnected(&self, client_id: &str, at: i64) {
        self.write(Write::SessionDisconnected {
            client_id: client_id.to_owned(),
            at,
        });
    }

    /// Deletes a session with its subscriptions, will and kept messages (clean start, expiry,
    /// or a session that stopped being persistent).
    pub fn delete_session(&self, client_id: &str) {
        self.write(Write::DeleteSession(client_id.to_owned()));
    }

    /// Adds or replaces one subscription of a saved session.
    pub fn save_subscription(&self, client_id: &str, sub: SubscriptionRow) {
        self.write(Write::SaveSubscription {
            client_id: client_id.to_owned(),
            sub,
        });
    }

    /// Removes one subscription of a saved session.
    pub fn remove_subscription(&self, client_id: &str, filter: &str) {
        self.write(Write::RemoveSubscription {
            client_id: client_id.to_owned(),
            filter: filter.to_owned(),
        });
    }

    /// Sets or clears the will of a saved session (e.g. cleared once published).
    pub fn set_will(&self, client_id: &str, will: Option<Will>) {
        self.write(Write::SetWill {
            client_id: client_id.to_owned(),
            will: will.map(Box::new),
        });
    }

    /// Keeps a QoS 1/2 message for a saved persistent session, state `queued`. `seq` is the
    /// session's own increasing number (see [`SessionSnapshot::next_seq`]); `qos` and `retain`
    /// are as delivered to this subscriber. Wait on the ticket before PUBACK/PUBREC.
    pub fn persist_message(
        &self,
        client_id: &str,
        seq: u64,
        msg: &Arc<Message>,
        qos: QoS,
        retain: bool,
    ) -> DurableTicket {
        self.write_with_ticket(Write::PersistMessage {
            client_id: client_id.to_owned(),
            seq,
            msg: msg.clone(),
            qos,
            retain,
        })
    }

    /// Moves a kept message along the QoS flow (sent with `packet_id`, or released).
    pub fn message_state(
        &self,
        client_id: &str,
        seq: u64,
        packet_id: Option<u16>,
        state: MessageState,
    ) {
        self.write(Write::MessageState {
            client_id: client_id.to_owned(),
            seq,
            packet_id,
            state,
        });
    }

    /// Forgets a kept message (PUBACK / PUBCOMP received, or dropped).
    pub fn remove_message(&self, client_id: &str, seq: u64) {
        self.write(Write::RemoveMessage {
            client_id: client_id.to_owned(),
            seq,
        });
    }

    /// Runs `pump` on the `store` thread once the durable writes sent before it are committed
    /// (and their tickets answered), or answered as failed. Never blocks.
    pub fn pump_acks(&self, pump: Arc<dyn AckPump>) {
        let _ = self.inner.durable.send(Command::Pump(pump));
    }

    /// A ticket that fires once everything this thread sent before it — durable and history —
    /// has committed (in every mode). History that was shed is not waited for.
    pub fn flush(&self) -> DurableTicket {
        let (tx, rx) = ticket::oneshot();
        let _ = self.inner.durable.send(Command::Flush(tx));
        DurableTicket::pending(rx)
    }

    // ------------------------------------------------------------ load and queries

    /// Unexpired retained messages and persistent sessions (with subscriptions, will and kept
    /// messages in `seq` order), for the broker's start.
    pub fn load(&self) -> Result<Snapshot, StoreError> {
        self.call("load", |c| {
            queries::load(c, now_ms()).map_err(|e| error::sql_error("loading the snapshot", e))
        })
    }

    /// Known topics, most recently used first.
    pub fn topics(&self, offset: u32, limit_rows: u32) -> Result<Vec<TopicRow>, StoreError> {
        let n = limit(limit_rows);
        self.call("topics", move |c| {
            queries::topics(c, offset, n).map_err(|e| error::sql_error("listing topics", e))
        })
    }

    /// The newest history messages of `topic`, newest first (at most [`MAX_QUERY_ROWS`]).
    pub fn messages(&self, topic: &str, limit_rows: u32) -> Result<Vec<MessageRow>, StoreError> {
        let n = limit(limit_rows);
        let topic = topic.to_owned();
        self.call("messages", move |c| {
            queries::messages(c, &topic, n).map_err(|e| error::sql_error("listing messages", e))
        })
    }

    /// Messages kept for persistent sessions, newest first.
    pub fn qos_messages(&self, limit_rows: u32) -> Result<Vec<QueuedMessageRow>, StoreError> {
        let n = limit(limit_rows);
        self.call("qos_messages", move |c| {
            queries::qos_messages(c, n).map_err(|e| error::sql_error("listing kept messages", e))
        })
    }

    /// Known clients, connected first, then by last connection.
    pub fn clients(&self, offset: u32, limit_rows: u32) -> Result<Vec<ClientRow>, StoreError> {
        let n = limit(limit_rows);
        self.call("clients", move |c| {
            queries::clients(c, offset, n).map_err(|e| error::sql_error("listing clients", e))
        })
    }

    /// Counters and the file size; does not ask the `store` thread.
    pub fn stats(&self) -> StoreStats {
        let s = &self.inner.shared;
        let size = |p: &Path| std::fs::metadata(p).map_or(0, |m| m.len());
        let mut wal = self.inner.path.clone().into_os_string();
        wal.push("-wal");
        StoreStats {
            commands: s.commands.load(Ordering::Relaxed),
            transactions: s.transactions.load(Ordering::Relaxed),
            settled: s.settled.load(Ordering::Relaxed),
            shed: s.shed.load(Ordering::Relaxed),
            failed_commits: s.failed_commits.load(Ordering::Relaxed),
            history_topics: s.topics.load(Ordering::Relaxed),
            history_topics_forgotten: s.topics_forgotten.load(Ordering::Relaxed),
            pending: s.pending.load(Ordering::Relaxed) + s.queued.load(Ordering::Relaxed),
            held: s.pending.load(Ordering::Relaxed),
            refused: s.refused.load(Ordering::Relaxed),
            failing_since_ms: match s.failing_since.load(Ordering::Relaxed) {
                0 => None,
                at => Some(at),
            },
            db_bytes: size(&self.inner.path) + size(Path::new(&wal)),
            last_error: s.last_error.lock().clone(),
        }
    }

    // ------------------------------------------------------------ users, ACL, bans

    /// The in-memory snapshot of users, ACL rules and bans. Cheap (an `Arc` clone); refreshed
    /// by the `store` thread after every change through a handle, and within about a second of
    /// a change made by another process (the admin command line).
    pub fn acl(&self) -> Arc<AclSet> {
        self.inner.shared.acl.read().clone()
    }

    /// New history bounds (a config reload): messages kept per topic from the next message
    /// recorded (older rows of a topic go at its next message), topics kept from the next
    /// commit (the least recently seen forgotten first).
    pub fn set_history_limits(&self, per_topic: u32, max_topics: u64) {
        let shared = &self.inner.shared;
        shared.history_per_topic.store(per_topic, Ordering::Relaxed);
        shared
            .history_max_topics
            .store(max_topics, Ordering::Relaxed);
    }

    /// Increases each time [`StoreHandle::acl`] changes, to refresh a cached copy.
    pub fn acl_generation(&self) -> u64 {
        self.inner.shared.acl_generation.load(Ordering::Acquire)
    }

    /// Adds an account. The password is hashed on this thread (a few ms).
    pub fn user_add(&self, name: &str, password: &str) -> Result<(), StoreError> {
        check_name("user name", name)?;
        let hash = auth::hash_password(password)?;
        self.admin(
            "user_add",
            AdminWrite::UserAdd {
                name: name.to_owned(),
                hash,
            },
        )
        .map(drop)
    }

    /// Deletes an account.
    pub fn user_del(&self, name: &str) -> Result<(), StoreError> {
        self.admin("user_del", AdminWrite::UserDel(name.to_owned()))
            .map(drop)
    }

    /// Changes an account's password (hashed on this thread).
    pub fn user_passwd(&self, name: &str, password: &str) -> Result<(), StoreError> {
        let hash = auth::hash_password(password)?;
        self.admin(
            "user_passwd",
            AdminWrite::UserPasswd {
                name: name.to_owned(),
                hash,
            },
        )
        .map(drop)
    }

    /// Stores `new`, a stronger hash of `name`'s password, unless the stored hash is no longer
    /// `old`. Does not wait: a login is never held up by the database, and a rehash that the
    /// database cannot take now (its queue full) is tried again at a later login.
    pub fn user_rehash(&self, name: &str, old: &str, new: String) {
        let (tx, _rx) = bounded(1);
        let write = AdminWrite::UserRehash {
            name: name.to_owned(),
            old: old.to_owned(),
            new,
        };
        if self
            .inner
            .durable
            .try_send(Command::Admin(write, tx))
            .is_err()
        {
            log::debug!("store: busy; the password hash of {name} is upgraded at a later login");
        }
    }

    /// Accounts by name.
    pub fn user_list(&self) -> Result<Vec<UserRow>, StoreError> {
        self.call("user_list", |c| {
            queries::user_list(c).map_err(|e| error::sql_error("listing users", e))
        })
    }

    /// The stored PHC hash of `name`.
    pub fn user_hash(&self, name: &str) -> Result<Option<String>, StoreError> {
        let name = name.to_owned();
        self.call("user_hash", move |c| {
            queries::user_hash(c, &name).map_err(|e| error::sql_error("reading a user", e))
        })
    }

    /// Adds a rule (its `id` is ignored); returns the new id.
    pub fn acl_add(&self, rule: AclRule) -> Result<i64, StoreError> {
        check_rule(&rule)?;
        self.admin("acl_add", AdminWrite::AclAdd(rule))
    }

    /// Deletes a rule by id.
    pub fn acl_del(&self, id: i64) -> Result<(), StoreError> {
        self.admin("acl_del", AdminWrite::AclDel(id)).map(drop)
    }

    /// Rules by id.
    pub fn acl_list(&self) -> Result<Vec<AclRule>, StoreError> {
        self.call("acl_list", |c| {
            queries::acl_list(c).map_err(|e| error::sql_error("listing ACL rules", e))
        })
    }

    /// Bans a client id or a username (no error if already banned). The broker should also
    /// disconnect a matching live client.
    pub fn ban(&self, kind: BanKind, value: &str) -> Result<(), StoreError> {
        check_name(kind.as_str(), value)?;
        let ban = Ban {
            kind,
            value: value.to_owned(),
        };
        self.admin("ban", AdminWrite::Ban(ban)).map(drop)
    }

    /// Lifts a ban.
    pub fn unban(&self, kind: BanKind, value: &str) -> Result<(), StoreError> {
        let ban = Ban {
            kind,
            value: value.to_owned(),
        };
        self.admin("unban", AdminWrite::Unban(ban)).map(drop)
    }

    /// Bans with their creation time.
    pub fn bans(&self) -> Result<Vec<BanRow>, StoreError> {
        self.call("bans", |c| {
            queries::ban_list(c).map_err(|e| error::sql_error("listing bans", e))
        })
    }
}

/// Checks a rule before it is stored.
pub(crate) fn check_rule(rule: &AclRule) -> Result<(), StoreError> {
    if let Some(u) = &rule.username {
        check_name("user name", u)?;
    }
    validate_pattern(&rule.pattern).map_err(StoreError::Invalid)
}
