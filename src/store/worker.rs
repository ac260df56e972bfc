//! The `store` thread: the only owner of the broker's rusqlite `Connection`.
//!
//! It waits on two channels — durable commands (sessions, retained, users, ACL, bans, queries;
//! unbounded, the backlog is bounded where kept and retained messages are sent) and history
//! commands (messages, topics, clients; bounded, senders shed when it is full) — drains whatever is waiting (up to `max_batch`) and applies it
//! in ONE `BEGIN IMMEDIATE` transaction (group commit). Durability tickets fire, and answers are
//! sent, only after that transaction commits; queries run after the commit so they see it; then
//! the acknowledgement pumps sent with the writes run, queueing the PUBACK/PUBREC those tickets
//! allow (`AckPump`).
//!
//! When to commit: at once when the batch holds a durable write, an admin change or a flush
//! (`Normal` / `Full`); history alone waits up to `flush_interval` to gather more, and is then
//! written in slices of its least recently seen topics, one transaction each, so that durable
//! writes arriving meanwhile commit between them; in `Relaxed` mode everything waits up to the
//! window. The WAL is copied into the file by the `store-checkpoint` thread (`checkpoint.rs`).
//!
//! When the database cannot be written (disk full, read-only, I/O error, locked past the busy
//! timeout): the error is logged once (then a summary every minute, and once when it recovers),
//! the batch is rolled back, its durable writes stay in memory and are retried every
//! `retry_interval`; everyone waiting on a ticket or a flush is answered `Unavailable` at once,
//! and so is every ticket of a write that arrives while it fails (the write is still kept and
//! retried). History is shed (counted); admin changes are answered with
//! `StoreError::Unavailable`; queries still run. The channel is always read: the bound on what
//! waits here is kept where writes are sent (`StoreHandle`, `max_backlog`). The first
//! successful commit logs that writes resumed.
//!
//! Stops on `Command::Shutdown` or when every sender is gone: drains the channels, commits (a
//! few attempts), checkpoints the WAL, and returns.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Select, Sender, TryRecvError};
use rusqlite::{Connection, TransactionBehavior};

use super::checkpoint::Checkpointer;
use super::error::{is_transient, StoreError};
use super::queries::{self, MsgFields};
use super::types::{
    instant_to_ms, now_ms, ClientRecord, MessageState, SessionRecord, SubscriptionRow,
};
use super::{Shared, StoreOptions, SyncMode};
use crate::auth::{AclRule, Ban};
use crate::message::Message;
use crate::protocol::{QoS, Will};

/// A query: runs on the `store` thread with the connection and sends its own answer.
pub(crate) type Query = Box<dyn FnOnce(&Connection) + Send>;

/// A durable write (never shed).
pub(crate) enum Write {
    SetRetained {
        topic: String,
        msg: Option<Arc<Message>>,
    },
    SaveSession(Box<SessionRecord>),
    SessionDisconnected {
        client_id: String,
        at: i64,
    },
    DeleteSession(String),
    SaveSubscription {
        client_id: String,
        sub: SubscriptionRow,
    },
    RemoveSubscription {
        client_id: String,
        filter: String,
    },
    SetWill {
        client_id: String,
        will: Option<Box<Will>>,
    },
    PersistMessage {
        client_id: String,
        seq: u64,
        msg: Arc<Message>,
        qos: QoS,
        retain: bool,
    },
    MessageState {
        client_id: String,
        seq: u64,
        packet_id: Option<u16>,
        state: MessageState,
    },
    RemoveMessage {
        client_id: String,
        seq: u64,
    },
}

/// A change to accounts, rules or bans: answered after the commit.
pub(crate) enum AdminWrite {
    UserAdd {
        name: String,
        hash: String,
    },
    UserDel(String),
    UserPasswd {
        name: String,
        hash: String,
    },
    /// A stronger hash of the same password, stored only if the hash is still `old` (a password
    /// changed meanwhile stays changed).
    UserRehash {
        name: String,
        old: String,
        new: String,
    },
    AclAdd(AclRule),
    AclDel(i64),
    Ban(Ban),
    Unban(Ban),
}

/// What an admin change returns: the new rule id for `AclAdd`, else 0.
pub(crate) type AdminReply = Sender<Result<i64, StoreError>>;

impl History {
    /// Bytes this command holds while queued, for the history queue's byte bound
    /// ([`StoreOptions::history_queue_bytes`]): a message's topic and payload plus its own
    /// struct and `Arc` header. The store may hold the only reference to a message nobody
    /// subscribed to, so this is memory the queue alone keeps alive.
    pub(crate) fn weight(&self) -> usize {
        fn message(m: &Message) -> usize {
            m.size() + std::mem::size_of::<Message>() + 2 * std::mem::size_of::<usize>()
        }
        match self {
            History::Message(m) => message(m),
            History::Messages(batch) => batch
                .iter()
                .map(|m| message(m) + std::mem::size_of::<Arc<Message>>())
                .sum(),
            History::Connected(_) | History::Disconnected { .. } => 256,
        }
    }

    /// Records this command holds (what shedding it loses).
    pub(crate) fn records(&self) -> u64 {
        match self {
            History::Messages(batch) => batch.len() as u64,
            _ => 1,
        }
    }
}

/// History: shed when the queue is full.
pub(crate) enum History {
    Message(Arc<Message>),
    Messages(Vec<Arc<Message>>),
    Connected(ClientRecord),
    Disconnected {
        client_id: String,
        reason: String,
        at: i64,
    },
}

/// Why a ticket did not fire as committed.
#[derive(Debug, Clone)]
pub(crate) enum TicketFailure {
    /// The database refused this write for good (e.g. no saved session); the rest committed.
    Refused(String),
    /// The database cannot commit now (disk full, read-only, I/O error), or the backlog kept
    /// for it is full. A write that was taken stays in the backlog and may still commit later;
    /// the caller must not count on it.
    Unavailable(String),
}

/// Signalled after the commit, or as soon as the database is known not to be able to commit.
pub(crate) type Ticket = super::ticket::TicketSender;

pub(crate) enum Command {
    Write(Write, Option<Ticket>),
    Admin(AdminWrite, AdminReply),
    Query(Query),
    /// Commit everything before it, then signal.
    Flush(Ticket),
    /// The last [`super::WriteHold`] ended while the thread waited for it.
    Wake,
    /// Run once the writes before it are committed ([`super::AckPump`]).
    Pump(std::sync::Arc<dyn super::AckPump>),
    Shutdown,
}

/// Acknowledgement pumps held at most (one per publishing connection that waits for a commit).
const MAX_PUMPS: usize = 4096;

/// How often the thread looks for other processes' changes to users, ACL and bans.
const MAINTENANCE_EVERY: Duration = Duration::from_secs(1);

/// How often history is collected from its channel while a commit is pending. Waking the
/// thread for every batch cost five times what recording it does (at 10,000 messages a second,
/// one batch each: ~15 µs of CPU per message against ~3); at this period the channel
/// ([`StoreOptions::history_capacity`], 4,096 batches) fills only above ~400,000 batches a
/// second.
const HISTORY_POLL: Duration = Duration::from_millis(10);

/// How often the log says again that the database still cannot be written (once when it starts
/// failing, once when it recovers, and this summary in between: never a line per message).
const FAILING_SUMMARY_EVERY: Duration = Duration::from_secs(60);

/// History messages a commit writes before it looks whether acknowledgements wait
/// ([`Worker::history_whole`]).
const HISTORY_SLICE: usize = 64;

/// How often expired retained and kept messages are deleted (`load` skips them anyway).
const EXPIRY_EVERY: Duration = Duration::from_secs(60);

pub(crate) struct Worker {
    conn: Connection,
    /// Copies the WAL into the file off this thread (`None`: SQLite's own checkpoints only).
    checkpointer: Option<Checkpointer>,
    durable: Receiver<Command>,
    history: Receiver<History>,
    shared: Arc<Shared>,
    opts: StoreOptions,
    max_backlog: usize,
    writes: Vec<(Write, Option<Ticket>)>,
    hist: HistoryBatch,
    admin: Vec<(AdminWrite, AdminReply)>,
    queries: Vec<Query>,
    flushes: Vec<Ticket>,
    /// Acknowledgement pumps to run once no durable write waits (each queue once).
    pumps: Vec<std::sync::Arc<dyn super::AckPump>>,
    /// When the oldest uncommitted command arrived.
    oldest: Option<Instant>,
    /// When the oldest history not yet committed arrived: history rides a commit only once it
    /// is due ([`Worker::history_due`]), not every commit a durable write forces.
    hist_since: Option<Instant>,
    /// Set while the database cannot be written: when to try again.
    retry_at: Option<Instant>,
    failed_since: Option<Instant>,
    /// While failing: when the log next says so.
    next_summary: Instant,
    stopping: bool,
    durable_open: bool,
    history_open: bool,
    data_version: i64,
    next_maintenance: Instant,
    next_expiry: Instant,
}

impl Worker {
    pub(crate) fn new(
        conn: Connection,
        checkpointer: Option<Checkpointer>,
        durable: Receiver<Command>,
        history: Receiver<History>,
        shared: Arc<Shared>,
        opts: StoreOptions,
    ) -> Worker {
        let max_backlog = super::max_backlog(&opts);
        let data_version = read_data_version(&conn).unwrap_or(0);
        Worker {
            conn,
            checkpointer,
            durable,
            history,
            shared,
            opts,
            max_backlog,
            writes: Vec::new(),
            hist: HistoryBatch::default(),
            admin: Vec::new(),
            queries: Vec::new(),
            flushes: Vec::new(),
            pumps: Vec::new(),
            oldest: None,
            hist_since: None,
            retry_at: None,
            failed_since: None,
            next_summary: Instant::now(),
            stopping: false,
            durable_open: true,
            history_open: true,
            data_version,
            next_maintenance: Instant::now() + MAINTENANCE_EVERY,
            next_expiry: Instant::now() + EXPIRY_EVERY,
        }
    }

    /// The thread's body.
    pub(crate) fn run(mut self) {
        while !self.stopping && (self.durable_open || self.history_open) {
            let deadline = self.deadline();
            self.wait_one(deadline);
            self.drain();
            if self.shared.stop.load(Ordering::Acquire) {
                self.stopping = true;
            }
            let now = Instant::now();
            if self.retry_at.is_some_and(|r| now >= r) && self.pending_writes() == 0 {
                // Nothing kept to retry with: let the next batch probe the database.
                self.retry_at = None;
            }
            if self.should_commit(Instant::now()) {
                self.wait_for_holds();
                self.commit();
            } else {
                // Nothing to commit (or the database is failing): answer from what is there.
                self.run_queries();
            }
            self.run_pumps();
            if Instant::now() >= self.next_maintenance {
                self.maintenance();
            }
        }
        self.finish();
    }

    /// Before a commit of durable writes: while publishers hold ([`super::WriteHold`]), takes
    /// the writes they still send, for at most [`StoreOptions::hold_wait`], so that they ride
    /// this commit.
    fn wait_for_holds(&mut self) {
        if self.writes.is_empty()
            || self.stopping
            || self.failing()
            || matches!(self.opts.sync, SyncMode::Relaxed { .. })
            || self.shared.holds.load(Ordering::SeqCst) == 0
        {
            return;
        }
        let until = Instant::now() + self.opts.hold_wait;
        self.shared.hold_waiting.store(true, Ordering::SeqCst);
        while self.durable_open
            && self.shared.holds.load(Ordering::SeqCst) > 0
            && self.pending() < self.opts.max_batch.max(1)
        {
            match self.durable.recv_deadline(until) {
                Ok(cmd) => self.take_durable(cmd),
                Err(crossbeam_channel::RecvTimeoutError::Timeout) => break,
                Err(crossbeam_channel::RecvTimeoutError::Disconnected) => {
                    self.durable_open = false;
                }
            }
        }
        self.shared.hold_waiting.store(false, Ordering::SeqCst);
        // Whatever the holders sent last is already in the channel.
        self.drain();
    }

    fn pending_writes(&self) -> usize {
        self.writes.len() + self.hist.weight() + self.admin.len()
    }

    fn pending(&self) -> usize {
        self.pending_writes() + self.queries.len() + self.flushes.len()
    }

    fn failing(&self) -> bool {
        self.retry_at.is_some()
    }

    /// How long the collected commands may wait before a commit.
    fn window(&self) -> Duration {
        match self.opts.sync {
            SyncMode::Relaxed { window_ms } => Duration::from_millis(window_ms),
            _ => self.opts.flush_interval,
        }
    }

    fn deadline(&self) -> Instant {
        let mut at = self.next_maintenance;
        if let Some(retry) = self.retry_at {
            at = at.min(retry);
        } else if let Some(oldest) = self.oldest {
            at = at.min(oldest + self.window());
        }
        at
    }

    /// Waits for one command from either channel, or until `deadline`. While a commit is
    /// already due (something is collected), history does not wake the thread: it waits in its
    /// channel for the next look, at most [`HISTORY_POLL`] later. Only durable commands (acks,
    /// queries, flushes) wake it at once.
    fn wait_one(&mut self, deadline: Instant) {
        // Always read: what may wait here is bounded where it is sent (`StoreHandle`), and
        // queries must be answered while the database cannot be written.
        let read_durable = self.durable_open;
        let history_waits = self.oldest.is_some();
        let deadline = if history_waits {
            deadline.min(Instant::now() + HISTORY_POLL)
        } else {
            deadline
        };
        let mut sel = Select::new();
        let d = read_durable.then(|| sel.recv(&self.durable));
        let h = (self.history_open && !history_waits).then(|| sel.recv(&self.history));
        if d.is_none() && h.is_none() {
            std::thread::sleep(deadline.saturating_duration_since(Instant::now()));
            return;
        }
        let Ok(op) = sel.select_deadline(deadline) else {
            return;
        };
        let index = op.index();
        if Some(index) == d {
            match op.recv(&self.durable) {
                Ok(cmd) => self.take_durable(cmd),
                Err(_) => self.durable_open = false,
            }
        } else {
            match op.recv(&self.history) {
                Ok(h) => self.take_history(h),
                Err(_) => self.history_open = false,
            }
        }
    }

    /// Takes whatever is already waiting, up to `max_batch` commands in the batch.
    fn drain(&mut self) {
        let cap = self.opts.max_batch.max(1);
        while self.pending() < cap {
            let mut got = false;
            if self.durable_open {
                match self.durable.try_recv() {
                    Ok(cmd) => {
                        self.take_durable(cmd);
                        got = true;
                    }
                    Err(TryRecvError::Disconnected) => self.durable_open = false,
                    Err(TryRecvError::Empty) => {}
                }
            }
            if self.history_open {
                match self.history.try_recv() {
                    Ok(h) => {
                        self.take_history(h);
                        got = true;
                    }
                    Err(TryRecvError::Disconnected) => self.history_open = false,
                    Err(TryRecvError::Empty) => {}
                }
            }
            if !got || self.stopping {
                break;
            }
        }
    }

    fn touch(&mut self) {
        if self.oldest.is_none() {
            self.oldest = Some(Instant::now());
        }
    }

    fn take_durable(&mut self, cmd: Command) {
        match cmd {
            Command::Write(w, mut ticket) => {
                self.shared.queued.fetch_sub(1, Ordering::Relaxed);
                if self.failing() {
                    // Nothing commits before the next retry: the waiting publisher is told now
                    // rather than after its timeout. The write itself is kept and retried.
                    if let Some(t) = ticket.take() {
                        t.send(Err(TicketFailure::Unavailable(self.detail())));
                    }
                }
                self.writes.push((w, ticket));
                self.touch();
            }
            Command::Admin(a, reply) => {
                // Tried with the next commit (or retry); answered Unavailable if that fails.
                self.admin.push((a, reply));
                self.touch();
            }
            Command::Query(q) => self.queries.push(q),
            Command::Wake => {}
            Command::Pump(p) => {
                // One per queue: a publisher sends one per read, and while the database fails
                // they wait here until its writes are answered.
                if self.pumps.len() < MAX_PUMPS
                    && !self.pumps.iter().any(|q| std::sync::Arc::ptr_eq(q, &p))
                {
                    self.pumps.push(p);
                }
            }
            Command::Flush(done) => {
                // History sent before the flush is already in its channel: take all of it, so
                // that the flush covers both channels.
                while let Ok(h) = self.history.try_recv() {
                    self.take_history(h);
                }
                self.flushes.push(done);
                self.touch();
            }
            Command::Shutdown => self.stopping = true,
        }
        self.shared
            .pending
            .store(self.writes.len() as u64, Ordering::Relaxed);
    }

    fn history_per_topic(&self) -> u32 {
        self.shared.history_per_topic.load(Ordering::Relaxed)
    }

    fn take_history(&mut self, h: History) {
        self.shared
            .history_queued
            .fetch_sub(h.weight(), Ordering::Relaxed);
        if self.failing() {
            self.shared.shed.fetch_add(h.records(), Ordering::Relaxed);
        } else {
            self.hist.push(h, self.history_per_topic() as usize);
            self.hist_since.get_or_insert_with(Instant::now);
            self.touch();
        }
    }

    /// Whether the history collected goes into this commit. A durable write (an acknowledgement
    /// waiting) commits at once, but its history need not: left to gather for up to the
    /// window, it is written in one transaction per window instead of in every small one a
    /// burst of acknowledged messages makes. Each of those would otherwise also write the
    /// `messages` and `topics` pages and the index, and prune every topic. History goes in when it
    /// is due, when something must see it (a flush, a query), when the batch is full, when
    /// stopping, and when nothing else is to be committed.
    fn history_due(&self, now: Instant) -> bool {
        self.stopping
            || matches!(self.opts.sync, SyncMode::Relaxed { .. })
            || !self.flushes.is_empty()
            || !self.queries.is_empty()
            || self.pending() >= self.opts.max_batch.max(1)
            || (self.writes.is_empty() && self.admin.is_empty())
            || self.hist_since.is_some_and(|t| now >= t + self.window())
    }

    /// Whether a commit writes all the history it has: when something must see it (a flush, a
    /// query, stopping) or when no acknowledgement waits on commits (`Relaxed`). Otherwise it
    /// writes [`HISTORY_SLICE`] messages at a time and stops between two slices once a durable
    /// write waits — at the first, if durable writes ride this commit — leaving the rest, in
    /// order, to the next commits: a window's history (a discovery burst's thousand new
    /// topics: 5–11 ms of writing measured) never holds acknowledgements up for longer than a
    /// slice takes, and costs extra transactions only when they would have waited.
    fn history_whole(&self) -> bool {
        self.stopping
            || !self.flushes.is_empty()
            || !self.queries.is_empty()
            || matches!(self.opts.sync, SyncMode::Relaxed { .. })
    }

    fn detail(&self) -> String {
        self.shared
            .last_error
            .lock()
            .clone()
            .unwrap_or_else(|| "the database is not writable".into())
    }

    fn unavailable(&self) -> StoreError {
        StoreError::Unavailable {
            detail: self.detail(),
        }
    }

    fn should_commit(&self, now: Instant) -> bool {
        if self.pending_writes() == 0 && self.flushes.is_empty() {
            return false;
        }
        if let Some(retry) = self.retry_at {
            return now >= retry;
        }
        // Flushes, and queries (which must see what was sent before them), commit at once.
        if self.pending() >= self.opts.max_batch.max(1)
            || !self.flushes.is_empty()
            || !self.queries.is_empty()
        {
            return true;
        }
        let aged = self.oldest.is_some_and(|t| now >= t + self.window());
        match self.opts.sync {
            SyncMode::Relaxed { .. } => aged || !self.admin.is_empty(),
            SyncMode::Normal | SyncMode::Full => {
                !self.writes.is_empty() || !self.admin.is_empty() || aged
            }
        }
    }

    /// One transaction for everything collected; see the module docs for failures.
    fn commit(&mut self) {
        let mut admin_results = Vec::with_capacity(self.admin.len());
        let mut refused: Vec<(usize, String)> = Vec::new();
        let payload_limit = self.opts.history_payload_limit;
        let keep = self.history_per_topic();
        let mut topics = TopicBound {
            kept: self.shared.topics.load(Ordering::Relaxed),
            max: self.shared.history_max_topics.load(Ordering::Relaxed),
            forgotten: 0,
        };
        let with_history = self.history_due(Instant::now());
        let mut hist = if with_history {
            std::mem::take(&mut self.hist)
        } else {
            HistoryBatch::default()
        };
        hist.sort_by_seq();
        let whole = self.history_whole();
        let acks_ride = !self.writes.is_empty() || !self.admin.is_empty();
        let durable = &self.durable;
        // After each slice: stop if acknowledgements wait on this commit or on the next.
        let stop = |written: usize| {
            !whole && written >= HISTORY_SLICE && (acks_ride || !durable.is_empty())
        };
        let mut history_written = 0;
        let result = (|| -> rusqlite::Result<(usize, usize)> {
            let tx = self
                .conn
                .transaction_with_behavior(TransactionBehavior::Immediate)?;
            let mut dropped = 0;
            let settled = settled_in_batch(&self.writes);
            for (i, (w, _)) in self.writes.iter().enumerate() {
                if is_settled(w, &settled) {
                    continue;
                }
                if let Err(e) = apply_write(&tx, w) {
                    if is_transient(&e) {
                        return Err(e);
                    }
                    dropped += 1;
                    let why = format!("dropping {}: {e}", describe(w));
                    log::warn!("store: {why}");
                    refused.push((i, why));
                }
            }
            if with_history {
                let applied = hist.apply(&tx, payload_limit, keep, &mut topics, stop)?;
                dropped += applied.dropped;
                history_written = applied.topics;
            }
            for (a, _) in &self.admin {
                match apply_admin(&tx, a) {
                    Err(AdminFailure::Db(e)) if is_transient(&e) => return Err(e),
                    Err(AdminFailure::Db(e)) => {
                        admin_results.push(Err(StoreError::Sqlite {
                            context: "changing users, ACL or bans",
                            detail: e.to_string(),
                        }));
                    }
                    Err(AdminFailure::Refused(e)) => admin_results.push(Err(e)),
                    Ok(v) => admin_results.push(Ok(v)),
                }
            }
            tx.commit()?;
            Ok((dropped, settled.len()))
        })();
        match result {
            Ok((dropped, settled)) => {
                self.shared
                    .settled
                    .fetch_add(settled as u64, Ordering::Relaxed);
                self.shared.topics.store(topics.kept, Ordering::Relaxed);
                self.shared
                    .topics_forgotten
                    .fetch_add(topics.forgotten, Ordering::Relaxed);
                let rest = hist.unapplied(history_written);
                if rest.held > 0 {
                    self.hist = rest;
                }
                self.committed(admin_results, &refused, dropped, hist.weight())
            }
            Err(e) => {
                self.shared
                    .shed
                    .fetch_add(hist.records() as u64, Ordering::Relaxed);
                self.failed(&e);
            }
        }
        self.run_queries();
    }

    fn committed(
        &mut self,
        admin_results: Vec<Result<i64, StoreError>>,
        refused: &[(usize, String)],
        dropped: usize,
        history: usize,
    ) {
        let n = (self.writes.len() + self.admin.len() + history).saturating_sub(dropped);
        self.shared.commands.fetch_add(n as u64, Ordering::Relaxed);
        self.shared.transactions.fetch_add(1, Ordering::Relaxed);
        if let Some(c) = &mut self.checkpointer {
            c.committed();
        }
        if let Some(since) = self.failed_since.take() {
            log::info!(
                "store: writes resumed after {:.1} s; {} kept writes saved",
                since.elapsed().as_secs_f64(),
                self.writes.len()
            );
            *self.shared.last_error.lock() = None;
            self.shared.failing_since.store(0, Ordering::Relaxed);
        }
        self.retry_at = None;
        let mut refused = refused.iter().peekable();
        for (i, (_, ticket)) in self.writes.drain(..).enumerate() {
            let result = match refused.peek() {
                Some((j, why)) if *j == i => {
                    refused.next();
                    Err(TicketFailure::Refused(why.clone()))
                }
                _ => Ok(()),
            };
            if let Some(t) = ticket {
                t.send(result);
            }
        }
        if self.hist.records() == 0 {
            // Also gives back what a batch of many topics left allocated.
            self.hist.clear();
            self.hist_since = None;
        }
        // Reload before answering, so a caller sees its change in `StoreHandle::acl` at once.
        if !self.admin.is_empty() {
            self.reload_acl();
        }
        for ((_, reply), result) in self.admin.drain(..).zip(admin_results) {
            let _ = reply.send(result);
        }
        for done in self.flushes.drain(..) {
            done.send(Ok(()));
        }
        // History left for its own commit keeps its deadline.
        self.oldest = self.hist_since;
        self.shared.pending.store(0, Ordering::Relaxed);
    }

    fn failed(&mut self, e: &rusqlite::Error) {
        self.shared.failed_commits.fetch_add(1, Ordering::Relaxed);
        let detail = e.to_string();
        if self.failed_since.is_none() {
            log::error!(
                "store: cannot write the database ({detail}); keeping up to {} durable writes in \
                 memory and retrying every {:?}; until it recovers, QoS 1/2 messages that must be \
                 stored are not acknowledged as received and history is dropped",
                self.max_backlog,
                self.opts.retry_interval
            );
            self.failed_since = Some(Instant::now());
            self.next_summary = Instant::now() + FAILING_SUMMARY_EVERY;
            self.shared
                .failing_since
                .store(now_ms().max(1), Ordering::Relaxed);
        }
        *self.shared.last_error.lock() = Some(detail.clone());
        // Whoever waits for one of these commits is told now; the writes stay for the retry.
        for (_, ticket) in &mut self.writes {
            if let Some(t) = ticket.take() {
                t.send(Err(TicketFailure::Unavailable(detail.clone())));
            }
        }
        for done in self.flushes.drain(..) {
            done.send(Err(TicketFailure::Unavailable(detail.clone())));
        }
        self.retry_at = Some(Instant::now() + self.opts.retry_interval);
        self.shared
            .shed
            .fetch_add(self.hist.records() as u64, Ordering::Relaxed);
        self.hist.clear();
        self.hist_since = None;
        for (_, reply) in std::mem::take(&mut self.admin) {
            let _ = reply.send(Err(self.unavailable()));
        }
        self.shared
            .pending
            .store(self.writes.len() as u64, Ordering::Relaxed);
        if self.writes.is_empty() && self.flushes.is_empty() {
            self.oldest = None;
        }
    }

    /// Runs the acknowledgement pumps once every durable write taken is answered: committed, or
    /// (while the database fails) answered `Unavailable` and kept for the retry. A pump left
    /// out (over [`MAX_PUMPS`]) costs only time: its reader takes the acks itself.
    fn run_pumps(&mut self) {
        if self.pumps.is_empty() || self.writes.iter().any(|(_, t)| t.is_some()) {
            return;
        }
        for p in self.pumps.drain(..) {
            p.pump();
        }
    }

    fn run_queries(&mut self) {
        for q in self.queries.drain(..) {
            q(&self.conn);
        }
    }

    fn reload_acl(&mut self) {
        match queries::acl_set(&self.conn) {
            Ok(set) => {
                *self.shared.acl.write() = Arc::new(set);
                self.shared.acl_generation.fetch_add(1, Ordering::Release);
            }
            Err(e) => log::warn!("store: cannot reload users, ACL and bans: {e}"),
        }
    }

    fn maintenance(&mut self) {
        self.next_maintenance = Instant::now() + MAINTENANCE_EVERY;
        if let Some(since) = self.failed_since {
            if Instant::now() >= self.next_summary {
                self.next_summary = Instant::now() + FAILING_SUMMARY_EVERY;
                log::warn!(
                    "store: the database still cannot be written after {} s ({}); {} durable \
                     writes waiting, {} refused, {} history records dropped so far",
                    since.elapsed().as_secs(),
                    self.detail(),
                    self.writes.len() as u64 + self.shared.queued.load(Ordering::Relaxed),
                    self.shared.refused.load(Ordering::Relaxed),
                    self.shared.shed.load(Ordering::Relaxed)
                );
            }
        }
        // Another process (the admin command line) committed: reload what it may have changed.
        if let Ok(v) = read_data_version(&self.conn) {
            if v != self.data_version {
                self.data_version = v;
                self.reload_acl();
            }
        }
        if !self.failing() && Instant::now() >= self.next_expiry {
            self.next_expiry = Instant::now() + EXPIRY_EVERY;
            if let Err(e) = queries::expired_delete(&self.conn, now_ms()) {
                log::debug!("store: expiry cleanup failed: {e}");
            }
        }
    }

    fn finish(&mut self) {
        // Whatever history is left is written whole.
        self.stopping = true;
        // Whatever is still queued belongs to the final commit.
        while let Ok(cmd) = self.durable.try_recv() {
            if let Command::Write(w, t) = cmd {
                self.shared.queued.fetch_sub(1, Ordering::Relaxed);
                self.writes.push((w, t));
            } else {
                self.take_durable(cmd);
            }
        }
        while let Ok(h) = self.history.try_recv() {
            self.hist.push(h, self.history_per_topic() as usize);
        }
        self.retry_at = None;
        for attempt in 0..3 {
            if self.pending_writes() == 0 && self.flushes.is_empty() {
                break;
            }
            if attempt > 0 {
                std::thread::sleep(Duration::from_millis(100));
                self.retry_at = None;
            }
            self.commit();
        }
        self.run_queries();
        for p in self.pumps.drain(..) {
            p.pump();
        }
        if !self.writes.is_empty() {
            log::error!(
                "store: {} durable writes could not be saved at shutdown: {}",
                self.writes.len(),
                self.shared.last_error.lock().clone().unwrap_or_default()
            );
        }
        if let Some(mut c) = self.checkpointer.take() {
            c.stop();
        }
        if let Err(e) = self
            .conn
            .execute_batch("PRAGMA optimize; PRAGMA wal_checkpoint(TRUNCATE);")
        {
            log::debug!("store: final checkpoint: {e}");
        }
        log::debug!("store: stopped");
    }
}

fn read_data_version(conn: &Connection) -> rusqlite::Result<i64> {
    conn.pragma_query_value(None, "data_version", |r| r.get(0))
}

fn describe(w: &Write) -> String {
    match w {
        Write::SetRetained { topic, .. } => format!("the retained message of {topic:?}"),
        Write::SaveSession(r) => format!("the session of {:?}", r.client_id),
        Write::SessionDisconnected { client_id, .. } => {
            format!("the disconnect time of session {client_id:?}")
        }
        Write::DeleteSession(c) => format!("the deletion of session {c:?}"),
        Write::SaveSubscription { client_id, sub } => {
            format!("subscription {:?} of {client_id:?}", sub.filter)
        }
        Write::RemoveSubscription { client_id, filter } => {
            format!("the removal of subscription {filter:?} of {client_id:?}")
        }
        Write::SetWill { client_id, .. } => format!("the will of {client_id:?}"),
        Write::PersistMessage { client_id, seq, .. } => {
            format!("message {seq} for {client_id:?} (is its session saved first?)")
        }
        Write::MessageState { client_id, seq, .. } => {
            format!("the state of message {seq} for {client_id:?}")
        }
        Write::RemoveMessage { client_id, seq } => {
            format!("the removal of message {seq} for {client_id:?}")
        }
    }
}

fn fields(msg: &Message, qos: QoS, retain: bool) -> MsgFields<'_> {
    let stored_at = instant_to_ms(msg.received);
    MsgFields {
        topic: &msg.topic,
        payload: &msg.payload,
        qos,
        retain,
        properties: &msg.properties,
        publisher: msg.publisher.as_deref(),
        stored_at,
        expiry_at: super::types::expiry_at(stored_at, msg.properties.message_expiry_interval),
    }
}

/// The session messages that are both stored and removed within one batch: acknowledged by
/// their subscriber before the commit that would have kept them (an online persistent session,
/// such as a bridge's, usually acknowledges within the same group commit). Their insert and
/// state changes need not be written at all: the batch is one transaction, so no crash can
/// see the row between them. The removal is still applied, so a row an earlier commit kept for
/// the same key (a message stored again) is gone as it would have been.
fn settled_in_batch(writes: &[(Write, Option<Ticket>)]) -> HashSet<(&str, u64)> {
    let mut stored = HashSet::new();
    let mut settled = HashSet::new();
    for (w, _) in writes {
        match w {
            Write::PersistMessage { client_id, seq, .. } => {
                stored.insert((client_id.as_str(), *seq));
            }
            Write::RemoveMessage { client_id, seq } => {
                let key = (client_id.as_str(), *seq);
                if stored.contains(&key) {
                    settled.insert(key);
                }
            }
            _ => {}
        }
    }
    settled
}

/// Whether `w` is the insert or a state change of a [`settled_in_batch`] message.
fn is_settled(w: &Write, settled: &HashSet<(&str, u64)>) -> bool {
    match w {
        Write::PersistMessage { client_id, seq, .. }
        | Write::MessageState { client_id, seq, .. } => {
            settled.contains(&(client_id.as_str(), *seq))
        }
        _ => false,
    }
}

fn apply_write(conn: &Connection, w: &Write) -> rusqlite::Result<()> {
    match w {
        Write::SetRetained { topic, msg: None } => queries::retained_clear(conn, topic),
        Write::SetRetained {
            topic,
            msg: Some(msg),
        } => {
            let mut f = fields(msg, msg.qos, true);
            f.topic = topic;
            queries::retained_set(conn, &f)
        }
        Write::SaveSession(rec) => queries::session_save(conn, rec, now_ms()),
        Write::SessionDisconnected { client_id, at } => {
            queries::session_disconnected(conn, client_id, *at)
        }
        Write::DeleteSession(client_id) => queries::session_delete(conn, client_id),
        Write::SaveSubscription { client_id, sub } => {
            queries::subscription_save(conn, client_id, sub)
        }
        Write::RemoveSubscription { client_id, filter } => {
            queries::subscription_remove(conn, client_id, filter)
        }
        Write::SetWill { client_id, will } => queries::will_set(conn, client_id, will.as_deref()),
        Write::PersistMessage {
            client_id,
            seq,
            msg,
            qos,
            retain,
        } => queries::message_persist(conn, client_id, *seq, &fields(msg, *qos, *retain)),
        Write::MessageState {
            client_id,
            seq,
            packet_id,
            state,
        } => queries::message_state(conn, client_id, *seq, *packet_id, *state),
        Write::RemoveMessage { client_id, seq } => queries::message_remove(conn, client_id, *seq),
    }
}

/// The history gathered for the next commit. Per topic only the newest `keep` messages are held
/// (older ones would be pruned in the same transaction anyway) with the topic's count and
/// times; client records are kept in order. So a fast publisher costs the database `keep` rows
/// per topic and commit, not a row per message.
#[derive(Default)]
struct HistoryBatch {
    /// Topic → its place in `batches`.
    topics: HashMap<Arc<str>, usize>,
    batches: Vec<(Arc<str>, TopicBatch)>,
    /// The place in `batches` of the last message's topic: the next message, usually of the
    /// same topic in a reader's batch, is matched to it without hashing the name.
    last: Option<usize>,
    clients: Vec<History>,
    /// Messages taken since the last commit, superseded ones included.
    messages: usize,
    /// Arrival counter for [`TopicBatch::seq`]; unlike `messages` it never goes back when a
    /// slice is taken, so the topics left keep their order before the ones still to come.
    arrivals: usize,
    /// Messages held in `topics`.
    held: usize,
}

/// The history's count of topics within one transaction, and its bound: the least recently
/// seen topics beyond `max` are forgotten in the transaction that adds new ones. Published to
/// [`Shared`] only once that transaction commits.
struct TopicBound {
    kept: u64,
    max: u64,
    forgotten: u64,
}

/// A topic's share of one history batch.
struct TopicBatch {
    recent: VecDeque<Arc<Message>>,
    count: u64,
    first: i64,
    last: i64,
    /// Arrival order of the topic's newest message in the batch ([`HistoryBatch::messages`]).
    seq: usize,
}

/// One reading of both clocks, to turn the arrival [`Instant`]s of a batch of messages into
/// wall-clock milliseconds without reading the clocks again for each.
struct BatchClock {
    now: Instant,
    wall_ms: i64,
}

impl BatchClock {
    fn now() -> BatchClock {
        BatchClock {
            now: Instant::now(),
            wall_ms: now_ms(),
        }
    }

    /// The wall-clock time (ms) at which `at` happened: as [`instant_to_ms`], with this
    /// reading's now.
    fn wall_ms(&self, at: Instant) -> i64 {
        let age = self.now.saturating_duration_since(at).as_millis();
        self.wall_ms
            .saturating_sub(i64::try_from(age).unwrap_or(i64::MAX))
    }
}

/// Held messages that weigh as one command towards `max_batch`: the batch commits early once
/// it holds `max_batch` × this many, which bounds its memory.
const MESSAGES_PER_COMMAND: usize = 8;

impl HistoryBatch {
    fn push(&mut self, h: History, keep: usize) {
        match h {
            History::Message(msg) => self.push_message(msg, keep, &BatchClock::now()),
            History::Messages(batch) => {
                // One clock reading for the whole batch (a reader's flush) rather than two per
                // message; a message's wall time is still its own arrival, to the millisecond.
                let clock = BatchClock::now();
                for msg in batch {
                    self.push_message(msg, keep, &clock);
                }
            }
            other => self.clients.push(other),
        }
    }

    fn push_message(&mut self, msg: Arc<Message>, keep: usize, clock: &BatchClock) {
        self.messages += 1;
        self.arrivals += 1;
        let at = clock.wall_ms(msg.received);
        // A reader's batch is mostly one message after another of the same topic.
        let same = self
            .last
            .filter(|&i| self.batches.get(i).is_some_and(|(t, _)| **t == *msg.topic));
        let i = match same {
            Some(i) => i,
            None => match self.topics.get(msg.topic.as_str()) {
                Some(&i) => i,
                None => {
                    let topic: Arc<str> = Arc::from(msg.topic.as_str());
                    let i = self.batches.len();
                    self.topics.insert(topic.clone(), i);
                    let fresh = TopicBatch {
                        recent: VecDeque::new(),
                        seq: 0,
                        count: 0,
                        first: at,
                        last: at,
                    };
                    self.batches.push((topic, fresh));
                    i
                }
            },
        };
        self.last = Some(i);
        let Some((_, b)) = self.batches.get_mut(i) else {
            return;
        };
        b.count += 1;
        b.first = b.first.min(at);
        b.last = b.last.max(at);
        b.seq = self.arrivals;
        b.recent.push_back(msg);
        self.held += 1;
        if b.recent.len() > keep.max(1) {
            b.recent.pop_front();
            self.held -= 1;
        }
    }

    /// What the batch counts for against `max_batch`.
    fn weight(&self) -> usize {
        self.clients.len() + self.held.div_ceil(MESSAGES_PER_COMMAND)
    }

    /// Records taken since the last commit (for the shed count when they cannot be written).
    fn records(&self) -> usize {
        self.clients.len() + self.messages
    }

    fn clear(&mut self) {
        // A batch of many topics leaves a large table behind: give it back rather than keep it
        // for the life of the process.
        if self.topics.capacity() > 1024 {
            self.topics = HashMap::new();
        } else {
            self.topics.clear();
        }
        if self.batches.capacity() > 1024 {
            self.batches = Vec::new();
        } else {
            self.batches.clear();
        }
        self.last = None;
        self.clients.clear();
        self.messages = 0;
        self.arrivals = 0;
        self.held = 0;
    }

    /// Puts the topics in the order [`HistoryBatch::apply`] writes them: the one seen longest
    /// ago first (so that new topics get rowids in the order they were last seen: the bound
    /// forgets by (last_seen, rowid), and many topics share a millisecond).
    fn sort_by_seq(&mut self) {
        self.batches.sort_unstable_by_key(|(_, b)| b.seq);
        self.last = None;
        self.topics.clear();
    }

    /// What is left of a sorted batch once its client records and first `applied` topics are
    /// written: the rest, still in order, and still ahead of whatever arrives later.
    fn unapplied(&mut self, applied: usize) -> HistoryBatch {
        let batches = self.batches.split_off(applied.min(self.batches.len()));
        let messages = batches.iter().map(|(_, b)| b.count).sum::<u64>();
        let messages = usize::try_from(messages)
            .unwrap_or(usize::MAX)
            .min(self.messages);
        let held: usize = batches.iter().map(|(_, b)| b.recent.len()).sum();
        self.messages -= messages;
        self.held -= held;
        let mut rest = HistoryBatch {
            topics: HashMap::new(),
            batches,
            last: None,
            clients: Vec::new(),
            messages,
            arrivals: self.arrivals,
            held,
        };
        // Found again by name when more of its messages arrive.
        for (i, (topic, _)) in rest.batches.iter().enumerate() {
            rest.topics.insert(topic.clone(), i);
        }
        rest
    }

    /// Writes the batch: client records in their order, then per topic its newest messages,
    /// its row in `topics` (once) and the prune (once), topic after topic until `stop`, asked
    /// with the messages written so far before each topic, says to stop. Returns what it wrote
    /// and how many records were refused; a transient error aborts the transaction for a retry.
    fn apply(
        &self,
        conn: &Connection,
        payload_limit: usize,
        keep: u32,
        topics: &mut TopicBound,
        stop: impl Fn(usize) -> bool,
    ) -> rusqlite::Result<Applied> {
        let mut dropped = 0;
        let mut refused = |written: rusqlite::Result<()>| -> rusqlite::Result<()> {
            if let Err(e) = written {
                if is_transient(&e) {
                    return Err(e);
                }
                dropped += 1;
                log::warn!("store: dropping a history record: {e}");
            }
            Ok(())
        };
        for h in &self.clients {
            refused(match h {
                History::Connected(rec) => queries::client_connected(conn, rec),
                History::Disconnected {
                    client_id,
                    reason,
                    at,
                } => queries::client_disconnected(conn, client_id, reason, *at),
                History::Message(_) | History::Messages(_) => Ok(()),
            })?;
        }
        // In the order of `sort_by_seq`, which the caller ran.
        let mut applied = Applied {
            dropped: 0,
            topics: 0,
            messages: 0,
        };
        for (topic, b) in &self.batches {
            if stop(applied.messages) {
                break;
            }
            applied.topics += 1;
            applied.messages += b.recent.len();
            for msg in &b.recent {
                let fields = fields(msg, msg.qos, msg.retain);
                refused(queries::history_message(conn, &fields, payload_limit))?;
            }
            let (new, recorded) = queries::topic_seen(conn, topic, b.count, b.first, b.last)?;
            if new {
                topics.kept += 1;
            }
            // Every row a topic holds was counted when written, so a topic that has seen no
            // more than `keep` messages holds nothing to prune: a burst of new topics (a
            // discovery burst, a quiet sensor) skips a DELETE per topic.
            if recorded > u64::from(keep) {
                queries::history_prune(conn, topic, keep)?;
            }
        }
        if topics.kept > topics.max {
            let excess = topics.kept - topics.max;
            queries::history_forget(conn, excess)?;
            topics.kept -= excess;
            topics.forgotten += excess;
        }
        applied.dropped = dropped;
        Ok(applied)
    }
}

/// What [`HistoryBatch::apply`] wrote.
struct Applied {
    /// Records refused (not transient: they are not retried).
    dropped: usize,
    /// Topics written, the first ones of the sorted batch.
    topics: usize,
    messages: usize,
}

pub(crate) enum AdminFailure {
    Db(rusqlite::Error),
    Refused(StoreError),
}

impl From<rusqlite::Error> for AdminFailure {
    fn from(e: rusqlite::Error) -> Self {
        AdminFailure::Db(e)
    }
}

/// Applies one change to users, rules or bans; shared with the admin command line.
pub(crate) fn apply_admin(conn: &Connection, a: &AdminWrite) -> Result<i64, AdminFailure> {
    let now = now_ms();
    let refuse = |e| Err(AdminFailure::Refused(e));
    match a {
        AdminWrite::UserAdd { name, hash } => {
            if !queries::user_add(conn, name, hash, now)? {
                return refuse(StoreError::UserExists(name.clone()));
            }
        }
        AdminWrite::UserDel(name) => {
            if !queries::user_del(conn, name)? {
                return refuse(StoreError::NoSuchUser(name.clone()));
            }
        }
        AdminWrite::UserPasswd { name, hash } => {
            if !queries::user_passwd(conn, name, hash)? {
                return refuse(StoreError::NoSuchUser(name.clone()));
            }
        }
        AdminWrite::UserRehash { name, old, new } => {
            queries::user_rehash(conn, name, old, new)?;
        }
        AdminWrite::AclAdd(rule) => return Ok(queries::acl_add(conn, rule, now)?),
        AdminWrite::AclDel(id) => {
            if !queries::acl_del(conn, *id)? {
                return refuse(StoreError::NoSuchRule(*id));
            }
        }
        AdminWrite::Ban(ban) => {
            queries::ban_add(conn, ban, now)?;
        }
        AdminWrite::Unban(ban) => {
            if !queries::ban_remove(conn, ban)? {
                return refuse(StoreError::NotBanned {
                    kind: ban.kind.as_str(),
                    value: ban.value.clone(),
                });
            }
        }
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::Properties;

    fn message(topic: &str, payload: &str) -> History {
        History::Message(Arc::new(Message {
            topic: topic.into(),
            payload: payload.as_bytes().to_vec(),
            qos: QoS::AtMostOnce,
            retain: false,
            properties: Properties::default(),
            publisher: None,
            received: Instant::now(),
        }))
    }

    fn batch(pushes: &[(&str, &str)]) -> HistoryBatch {
        let mut b = HistoryBatch::default();
        for (topic, payload) in pushes {
            b.push(message(topic, payload), 10);
        }
        b
    }

    fn topics(b: &HistoryBatch) -> Vec<String> {
        let mut order: Vec<_> = b.batches.iter().collect();
        order.sort_by_key(|(_, t)| t.seq);
        order.iter().map(|(t, _)| t.to_string()).collect()
    }

    fn migrated() -> Connection {
        let mut conn = Connection::open_in_memory().unwrap();
        super::super::schema::migrate(&mut conn, std::path::Path::new(":memory:")).unwrap();
        conn
    }

    fn rows(conn: &Connection) -> Vec<(String, String)> {
        let mut st = conn
            .prepare("SELECT topic, CAST(payload AS TEXT) FROM messages ORDER BY id")
            .unwrap();
        st.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .map(Result::unwrap)
            .collect()
    }

    #[test]
    fn what_a_partial_write_leaves_is_the_topics_seen_last_in_order_and_no_client_records() {
        let mut b = batch(&[
            ("a", "a1"),
            ("b", "b1"),
            ("a", "a2"),
            ("c", "c1"),
            ("c", "c2"),
            ("d", "d1"),
        ]);
        b.push(
            History::Disconnected {
                client_id: "x".into(),
                reason: "normal".into(),
                at: 1,
            },
            10,
        );
        b.sort_by_seq();
        assert_eq!(topics(&b), ["b", "a", "c", "d"]);
        let mut rest = b.unapplied(2);
        assert_eq!(topics(&b), ["b", "a"]);
        assert_eq!((b.held, b.messages, b.clients.len()), (3, 3, 1));
        assert_eq!(topics(&rest), ["c", "d"]);
        assert_eq!((rest.held, rest.messages, rest.clients.len()), (3, 3, 0));
        // What arrives later is found under its topic, and a topic written already comes
        // back after the ones left.
        rest.push(message("c", "c3"), 10);
        rest.push(message("a", "a3"), 10);
        assert_eq!(rest.batches.len(), 3, "c found again, a new");
        rest.sort_by_seq();
        assert_eq!(topics(&rest), ["d", "c", "a"]);
        assert_eq!((rest.held, rest.messages), (5, 5));
        let nothing = rest.unapplied(3);
        assert_eq!((nothing.held, nothing.messages), (0, 0));
    }

    #[test]
    fn history_written_in_slices_keeps_every_message_in_arrival_order_per_topic() {
        let mut conn = migrated();
        let mut bound = TopicBound {
            kept: 0,
            max: 100,
            forgotten: 0,
        };
        let mut b = batch(&[("a", "a1"), ("b", "b1"), ("a", "a2"), ("c", "c1")]);
        // One topic per slice; a arrives again after its first slice was written.
        let mut round = 0;
        while b.held > 0 {
            b.sort_by_seq();
            let tx = conn.transaction().unwrap();
            let applied = b.apply(&tx, 1024, 10, &mut bound, |n| n > 0).unwrap();
            tx.commit().unwrap();
            assert_eq!((applied.topics, applied.dropped), (1, 0));
            b = b.unapplied(applied.topics);
            if round == 0 {
                b.push(message("a", "a3"), 10);
                b.push(message("b", "b2"), 10);
            }
            round += 1;
        }
        assert_eq!(round, 4, "b; then c, a (a3 joined a1 and a2), b again");
        let all = rows(&conn);
        assert_eq!(all.len(), 6, "{all:?}");
        for topic in ["a", "b", "c"] {
            let mine: Vec<&str> = all
                .iter()
                .filter(|(t, _)| t == topic)
                .map(|(_, p)| p.as_str())
                .collect();
            let mut sorted = mine.clone();
            sorted.sort_unstable();
            assert_eq!(mine, sorted, "topic {topic}: {all:?}");
        }
        let counts: Vec<(String, i64)> = conn
            .prepare("SELECT topic, message_count FROM topics ORDER BY topic")
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        assert_eq!(
            counts,
            [("a".into(), 3), ("b".into(), 2), ("c".into(), 1)],
            "each message counted once"
        );
        assert_eq!(bound.kept, 3);
    }
}
