//! A connection's outbound side: the outbox (control packets waiting to go, a "session has news"
//! flag, the close request) and the code that writes to the socket.
//!
//! There is no writer thread per connection. Whoever queues something for a client — its own
//! reader thread (acks, SUBACK, PINGRESP), a publisher's reader thread (after queueing into the
//! session), a takeover or a server stop (close) — then flushes the outbox on its own thread:
//! one thread at a time holds the outbox's *write turn*, coalesces everything waiting (control
//! bytes, then up to 256 session messages) into one buffer and writes it with a
//! non-blocking send. Threads that find the turn taken leave their news flagged for the holder,
//! which loops until nothing is left. A socket that would block (a client that does not read)
//! is handed with its unwritten bytes to the one shared [`writer`](super::writer) thread, which
//! finishes when the socket drains; meanwhile publishers keep queueing into the bounded session
//! queue and never wait for it.
//!
//! Reader threads defer their flushes to the end of what they read in one chunk ([`Wakes`]),
//! so a burst of publishes reaches each subscriber in one write.
//!
//! What a client is owed but has not taken (control bytes plus the unwritten part of the last
//! batch) is bounded: above [`OWED_HIGH`] its own reader thread stops reading from it
//! ([`Outbox::await_drain`]) until the outbox drains below `OWED_LOW`, as TCP itself would
//! push back; a client that takes nothing for [`NOT_READING_GRACE`] meanwhile is disconnected.
//! Only the client's own reader ever waits: publishers still just queue into the bounded
//! session queue.

use std::collections::HashMap;
use std::io;
use std::net::Shutdown;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

use super::pipe::Pipe;
use super::session::{Outgoing, Session, StoreOps};
use super::socket;
use super::stats::Stats;
use super::writer::Writer;
use crate::protocol::{self, publish, Packet, ProtocolVersion, PublishOut, QoS};

/// How many messages one round takes from the session: bounds the time the session lock is held
/// and the size of one write.
const MAX_BATCH: usize = 256;

/// Rounds a thread writes for a connection before handing the rest to the writer thread, so
/// that a publisher is never kept from its own client by a stream of other publishers' news.
const MAX_ROUNDS: usize = 4;

/// How long a closing connection whose socket is full may take to take its last bytes
/// (DISCONNECT) before it is shut down without them.
const CLOSE_GRACE: Duration = Duration::from_millis(500);

/// How long a connection the server closed keeps being read (and what arrives discarded) after
/// its last bytes went out, unless the client closes first. A client still sending when we
/// close would otherwise meet a reset on its next write and, with most client libraries, never
/// read the DISCONNECT that says why (see [`Outbox::close`]).
pub const LINGER: Duration = Duration::from_secs(1);

/// Bytes owed to a client (control packets plus the unwritten part of a batch) above which its
/// reader thread stops reading from it. 64 KiB is 16,000 PUBACKs: far more than a client that
/// reads needs in flight (the kernel's send buffer, itself up to megabytes, comes on top), and
/// small enough that a thousand clients that do not read cost 64 MiB at most.
pub const OWED_HIGH: usize = 64 * 1024;

/// The reader thread reads again once what is owed has fallen to this (or the last batch went
/// out whole): a quarter of [`OWED_HIGH`], so that it does not stop and start at every write.
const OWED_LOW: usize = 16 * 1024;

/// A client owed more than [`OWED_HIGH`] that takes nothing at all, not a byte from the
/// kernel's send queue, for this long is disconnected. A client that still sends but has not
/// read for 10 s is broken or hostile; 10 s outlasts a Wi-Fi roam and the first five TCP
/// retransmissions (0.2 + 0.4 + … + 3.2 s), and is five times the queue's stall grace.
pub const NOT_READING_GRACE: Duration = Duration::from_secs(10);

/// How often a reader thread waiting for its outbox to drain looks at it even unwoken: to
/// notice a close by another thread and a client that takes bytes from the kernel's queue.
const DRAIN_POLL: Duration = Duration::from_millis(250);

/// Why [`Outbox::await_drain`] gave up on a client.
#[derive(Debug, Clone, Copy)]
pub struct NotReading {
    /// Bytes owed (outbox plus the kernel's send queue) when it gave up.
    pub unsent: usize,
    /// How long the client had taken nothing.
    pub idle: Duration,
}

/// A write buffer above this is given back to the allocator once written, so that one burst of
/// large messages does not stay resident for the life of the connection.
const KEEP_BUFFER: usize = 64 * 1024;

pub struct Outbox {
    /// Identifies the connection, for logs and for telling a stale outbox from the live one.
    pub conn_id: u64,
    pub version: ProtocolVersion,
    /// The connection's bytes (plain or TLS), shared with its reader and the connection table.
    pipe: Arc<Pipe>,
    stats: Arc<Stats>,
    writer: Arc<Writer>,
    inner: Mutex<Inner>,
    /// The write side, locked only by the holder of the write turn.
    out: Mutex<Output>,
    /// `Inner::control` plus `Output::buf[written..]`: what the client is owed, read without a
    /// lock by its reader thread.
    owed: AtomicUsize,
    /// The reader thread waits in [`Outbox::await_drain`]: writers then wake it once what is
    /// owed falls to [`OWED_LOW`]. Read after every write, so that writers need no lock.
    reader_waits: AtomicBool,
    /// Set (and `drained` notified) by a writer that brought what is owed down to [`OWED_LOW`]
    /// while the reader waits. Never locked with `inner` or `out` held by the waiter.
    drain: Mutex<bool>,
    drained: Condvar,
}

/// Who may write now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Turn {
    Free,
    /// A thread is flushing this outbox (or, until `open`, the reader accepting the CONNECT
    /// holds it).
    Taken,
    /// The writer thread holds it: the socket was full, or a flush ran out of rounds.
    Writer,
}

struct Inner {
    /// Encoded control packets (acks, SUBACK, PINGRESP, …), in the order they were queued.
    control: Vec<u8>,
    /// The session may have something new to send.
    dirty: bool,
    /// Write what is queued, then shut the socket down.
    closing: bool,
    /// The server ended the connection ([`Outbox::close`]): once the last bytes are out only
    /// the write side is shut, and the reader thread drains the read side for [`LINGER`].
    linger: bool,
    /// A closing connection still unwritten at this time is shut down anyway.
    close_by: Option<Instant>,
    /// The socket is shut down (or failed): nothing more is written.
    closed: bool,
    turn: Turn,
}

/// What the write turn works with.
struct Output {
    session: Weak<Session>,
    aliases: Aliases,
    max_packet_size: u32,
    /// Encoded bytes; `buf[written..]` is what the socket has not taken yet.
    buf: Vec<u8>,
    written: usize,
    /// TLS only: `buf[written..written + sealed]` is sealed into records the pipe holds but
    /// the socket has not taken whole yet; counted as written once they are all sent.
    sealed: usize,
    batch: Vec<Outgoing>,
}

/// How a spell of writing ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Progress {
    /// Nothing left to write (or the connection is closed): the turn is free again.
    Done,
    /// The socket would block: the writer thread holds the turn until it is writable.
    Blocked,
    /// Out of rounds with more to write: the writer thread holds the turn and goes on.
    More,
}

impl Outbox {
    pub fn new(
        conn_id: u64,
        version: ProtocolVersion,
        pipe: Arc<Pipe>,
        stats: Arc<Stats>,
        writer: Arc<Writer>,
    ) -> Outbox {
        Outbox {
            conn_id,
            version,
            pipe,
            stats,
            writer,
            inner: Mutex::new(Inner {
                control: Vec::new(),
                dirty: false,
                closing: false,
                linger: false,
                close_by: None,
                closed: false,
                // Held by the connecting reader until `open`: nothing, not even the CONNACK,
                // reaches the client before the connection is where the broker can find it.
                turn: Turn::Taken,
            }),
            out: Mutex::new(Output {
                session: Weak::new(),
                aliases: Aliases {
                    maximum: 0,
                    map: HashMap::new(),
                },
                max_packet_size: protocol::MAX_REMAINING_LENGTH,
                buf: Vec::new(),
                written: 0,
                sealed: 0,
                batch: Vec::new(),
            }),
            owed: AtomicUsize::new(0),
            reader_waits: AtomicBool::new(false),
            drain: Mutex::new(false),
            drained: Condvar::new(),
        }
    }

    /// Connects the outbox to the session it sends from, with the client's limits from CONNECT
    /// (Maximum Packet Size, Topic Alias Maximum when `topic_aliases` is on). What the session
    /// already holds goes out with [`Outbox::open`], after the CONNACK queued before.
    pub fn attach(&self, session: &Arc<Session>, topic_aliases: bool) {
        let link = session.state.lock().link;
        {
            let mut out = self.out.lock();
            out.session = Arc::downgrade(session);
            out.max_packet_size = link.max_packet_size;
            out.aliases.maximum = if topic_aliases && link.protocol.is_v5() {
                link.topic_alias_maximum
            } else {
                0
            };
        }
        self.inner.lock().dirty = true;
    }

    /// Queues a control packet; the caller flushes (now or at the end of its chunk).
    pub fn queue(&self, packet: &Packet) {
        let mut inner = self.inner.lock();
        if inner.closing {
            return;
        }
        let before = inner.control.len();
        protocol::encode(packet, self.version, &mut inner.control);
        self.owed
            .fetch_add(inner.control.len() - before, Ordering::SeqCst);
    }

    /// True when the client is owed more than [`OWED_HIGH`]: its reader thread should stop
    /// reading from it ([`Outbox::await_drain`]). One atomic load.
    pub fn owes_too_much(&self) -> bool {
        self.owed.load(Ordering::Relaxed) > OWED_HIGH
    }

    /// Blocks the client's reader thread (which must hold no lock) until what the client is
    /// owed has drained to `OWED_LOW` (or the last batch went out whole), or the connection
    /// is closing. Gives up with [`NotReading`] when the client took nothing for `grace`: not
    /// a byte from the outbox nor from the kernel's send queue.
    pub fn await_drain(&self, grace: Duration) -> Result<(), NotReading> {
        let mut drained = self.drain.lock();
        *drained = false;
        self.reader_waits.store(true, Ordering::SeqCst);
        let mut last_owed = self.owed.load(Ordering::SeqCst);
        let mut last_queued = socket::unsent(self.pipe.tcp());
        let mut since = Instant::now();
        let result = loop {
            let owed = self.owed.load(Ordering::SeqCst);
            if *drained || owed <= OWED_LOW || self.is_closing() {
                break Ok(());
            }
            let queued = socket::unsent(self.pipe.tcp());
            if owed < last_owed || queued < last_queued {
                since = Instant::now();
            }
            last_owed = owed;
            last_queued = queued;
            let idle = since.elapsed();
            if idle >= grace {
                break Err(NotReading {
                    unsent: owed + queued.unwrap_or(0),
                    idle,
                });
            }
            self.drained
                .wait_for(&mut drained, DRAIN_POLL.min(grace - idle));
        };
        self.reader_waits.store(false, Ordering::SeqCst);
        result
    }

    /// Wakes the reader thread if it waits for the outbox to drain. Called by writers once
    /// what is owed is down to [`OWED_LOW`]; costs one atomic load when nobody waits.
    fn drained_to_low(&self) {
        if self.reader_waits.load(Ordering::SeqCst) {
            *self.drain.lock() = true;
            self.drained.notify_all();
        }
    }

    /// Notes that the session may have messages for the client. True when the note is new:
    /// the caller then owes a flush (the turn holder picks up notes that are not new).
    pub fn mark(&self) -> bool {
        let mut inner = self.inner.lock();
        !std::mem::replace(&mut inner.dirty, true) && !inner.closed
    }

    /// The server ends the connection (a protocol error, takeover, the control page, a server
    /// stop): sends `last` (a DISCONNECT) after what is already queued, then shuts the write side
    /// down; a client that does not read gets 500 ms (`CLOSE_GRACE`) to take it. The read side
    /// stays open for [`LINGER`] so that a client still sending does not meet a reset before
    /// it has read why (the reader thread drains it, [`Outbox::lingers`]; the writer thread
    /// shuts it at the end in case the reader waits in a read). Later sends are ignored.
    pub fn close(self: &Arc<Self>, last: Option<&Packet>) {
        self.end(last, true);
    }

    /// The client ended the connection (DISCONNECT, end of file, a socket error): writes what is
    /// queued and shuts the socket down, without lingering.
    pub fn release(self: &Arc<Self>) {
        self.end(None, false);
    }

    fn end(self: &Arc<Self>, last: Option<&Packet>, linger: bool) {
        {
            let mut inner = self.inner.lock();
            if inner.closing {
                return;
            }
            if let Some(packet) = last {
                let before = inner.control.len();
                protocol::encode(packet, self.version, &mut inner.control);
                self.owed
                    .fetch_add(inner.control.len() - before, Ordering::SeqCst);
            }
            inner.closing = true;
            inner.linger = linger;
            inner.close_by = Some(Instant::now() + CLOSE_GRACE);
            if inner.turn == Turn::Writer {
                drop(inner);
                // The writer thread holds it: let it see the deadline.
                self.writer.nudge();
                return;
            }
        }
        self.flush();
    }

    /// True when the server ended the connection: the reader thread then drains the socket for
    /// [`LINGER`] before it lets go of it.
    pub fn lingers(&self) -> bool {
        self.inner.lock().linger
    }

    pub fn is_closing(&self) -> bool {
        self.inner.lock().closing
    }

    /// Writes whatever is waiting, on this thread, unless another holds the write turn (it
    /// will see the news) or the connection is closed.
    pub fn flush(self: &Arc<Self>) {
        // TLS records its reader made (a handshake or KeyUpdate answer) still waiting for room.
        // Asked before `inner` is taken, which is never held with another lock.
        let records = self.pipe.has_unsent();
        {
            let mut inner = self.inner.lock();
            let idle = !inner.dirty && inner.control.is_empty() && !inner.closing && !records;
            if inner.turn != Turn::Free || inner.closed || idle {
                return;
            }
            inner.turn = Turn::Taken;
        }
        self.write_held_turn();
    }

    /// Ends the hold a new outbox starts with: writes the CONNACK and whatever the session
    /// already held. Called once, by the reader that accepted the CONNECT, after the connection
    /// is registered (so a client that has its CONNACK can be found, banned or disconnected).
    pub fn open(self: &Arc<Self>) {
        self.write_held_turn();
    }

    fn write_held_turn(self: &Arc<Self>) {
        match self.write_turn(MAX_ROUNDS) {
            Progress::Done => {}
            Progress::Blocked | Progress::More => self.writer.hand_over(self.clone()),
        }
    }

    /// Writes for up to `rounds` rounds while holding the turn. On `Blocked` or `More` the
    /// turn has passed to the writer thread, which must then call this again. What the store
    /// must hear of the messages sent (a QoS 2 message's packet id, a message dropped) is sent
    /// once the outbox's and the session's locks are released.
    pub(super) fn write_turn(&self, rounds: usize) -> Progress {
        let mut ops = StoreOps::default();
        let progress = self.write_rounds(rounds, &mut ops);
        ops.send();
        progress
    }

    fn write_rounds(&self, rounds: usize, ops: &mut StoreOps) -> Progress {
        let mut out = self.out.lock();
        for _ in 0..rounds {
            // Bytes of the last batch still unwritten (the socket was full): take nothing more
            // from the session until the client has them, so that its backlog stays in the
            // session queue, where `max_queued_bytes`, QoS 0 shedding and the stall grace apply.
            let backlog = out.written < out.buf.len();
            let (take, closing) = {
                let mut inner = self.inner.lock();
                out.buf.append(&mut inner.control);
                let take = inner.dirty && !inner.closing && !backlog;
                if !backlog {
                    inner.dirty = false;
                }
                (take, inner.closing)
            };
            let more = take && self.take_from_session(&mut out, ops);
            match self.write_some(&mut out) {
                Ok(true) => {}
                Ok(false) => {
                    let mut inner = self.inner.lock();
                    inner.dirty |= more;
                    inner.turn = Turn::Writer;
                    return Progress::Blocked;
                }
                Err(e) => {
                    log::debug!("conn {}: write failed: {e}", self.conn_id);
                    self.shut(&mut out, false);
                    return Progress::Done;
                }
            }
            let mut inner = self.inner.lock();
            inner.dirty |= more;
            if !inner.dirty && inner.control.is_empty() {
                if closing || inner.closing {
                    let linger = inner.linger;
                    drop(inner);
                    self.shut(&mut out, linger);
                } else {
                    inner.turn = Turn::Free;
                }
                return Progress::Done;
            }
        }
        self.inner.lock().turn = Turn::Writer;
        Progress::More
    }

    /// Gives up on a closing connection whose client did not take its last bytes in time.
    /// True when it was shut down.
    pub(super) fn abandon_if_late(&self, now: Instant) -> bool {
        let late = self.inner.lock().close_by.is_some_and(|by| now >= by);
        if late {
            self.shut(&mut self.out.lock(), false);
        }
        late
    }

    /// When the writer thread should look at this outbox again even if the socket stays full.
    pub(super) fn close_by(&self) -> Option<Instant> {
        self.inner.lock().close_by
    }

    pub(super) fn pipe(&self) -> &Pipe {
        &self.pipe
    }

    /// Shuts the socket down for good; the reader thread sees end of file and ends. With
    /// `linger`, everything was written: only the write side is shut (the client reads our FIN
    /// after the DISCONNECT), and the writer thread shuts the read side after [`LINGER`] if
    /// the reader has not finished draining it by then.
    fn shut(&self, out: &mut Output, linger: bool) {
        if linger {
            // TLS: close_notify before our FIN, as the last record.
            self.pipe.close_notify();
            self.pipe.shutdown(Shutdown::Write);
            self.writer
                .linger(Arc::downgrade(&self.pipe), Instant::now() + LINGER);
        } else {
            self.pipe.shutdown(Shutdown::Both);
        }
        out.buf = Vec::new();
        out.written = 0;
        out.sealed = 0;
        {
            let mut inner = self.inner.lock();
            inner.closed = true;
            inner.closing = true;
            inner.control = Vec::new();
            inner.turn = Turn::Free;
            self.owed.store(0, Ordering::SeqCst);
        }
        self.drained_to_low();
    }

    /// Moves a batch of sendable messages from the session into the buffer, if this outbox is
    /// still the session's connection. True when the session has more it could send now.
    fn take_from_session(&self, out: &mut Output, ops: &mut StoreOps) -> bool {
        let Some(session) = out.session.upgrade() else {
            return false;
        };
        let mut batch = std::mem::take(&mut out.batch);
        let more = {
            let mut st = session.state.lock();
            let live = st
                .outbox
                .as_ref()
                .is_some_and(|o| o.conn_id == self.conn_id);
            if !live {
                return false;
            }
            st.take_sendable(Instant::now(), MAX_BATCH, &mut batch);
            ops.append(st.take_store_ops());
            st.has_sendable()
        };
        if !batch.is_empty() {
            let before = out.buf.len();
            self.encode_batch(&session, &mut batch, out, ops);
            self.owed
                .fetch_add(out.buf.len() - before, Ordering::SeqCst);
        }
        out.batch = batch;
        more
    }

    /// Sends `buf[written..]` without blocking. `Ok(true)`: all of it went; `Ok(false)`: the
    /// socket is full and the rest is still in `buf`.
    fn write_some(&self, out: &mut Output) -> io::Result<bool> {
        let stream = match &*self.pipe {
            Pipe::Plain(stream) => stream,
            pipe => return self.write_some_sealed(pipe, out),
        };
        while out.written < out.buf.len() {
            match socket::send_nonblocking(stream, &out.buf[out.written..]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => {
                    out.written += n;
                    self.taken(n);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Self::written_all(out);
        Ok(true)
    }

    /// [`Outbox::write_some`] over TLS or WebSockets: first the records or frames still
    /// waiting in the pipe, then the next [`SEAL_CHUNK`](super::pipe::SEAL_CHUNK) of `buf`
    /// sealed (framed) and sent, and so on. Plaintext counts as taken (no longer owed) once all
    /// its records are in the kernel, so back-pressure sees what the client really has not taken.
    fn write_some_sealed(&self, tls: &Pipe, out: &mut Output) -> io::Result<bool> {
        loop {
            if !tls.flush_nonblocking()? {
                return Ok(false);
            }
            if out.sealed > 0 {
                out.written += out.sealed;
                self.taken(std::mem::take(&mut out.sealed));
            }
            if out.written >= out.buf.len() {
                break;
            }
            out.sealed = tls.seal(&out.buf[out.written..])?;
        }
        Self::written_all(out);
        Ok(true)
    }

    /// `n` bytes of what is owed went out (for TLS: their plaintext).
    #[inline]
    fn taken(&self, n: usize) {
        self.stats.bytes_sent.fetch_add(n as u64, Ordering::Relaxed);
        if self.owed.fetch_sub(n, Ordering::SeqCst).saturating_sub(n) <= OWED_LOW {
            self.drained_to_low();
        }
    }

    #[inline]
    fn written_all(out: &mut Output) {
        out.written = 0;
        if out.buf.capacity() > KEEP_BUFFER {
            out.buf = Vec::new();
        } else {
            out.buf.clear();
        }
    }

    fn encode_batch(
        &self,
        session: &Session,
        batch: &mut Vec<Outgoing>,
        out: &mut Output,
        ops: &mut StoreOps,
    ) {
        let now = Instant::now();
        let version = self.version;
        let max_packet_size = out.max_packet_size;
        let Output { aliases, buf, .. } = out;
        let mut too_large: Vec<u16> = Vec::new();
        let mut sent = 0u64;
        for item in batch.drain(..) {
            match item {
                Outgoing::PubRel { packet_id } => {
                    let rel = Packet::PubRel(protocol::Ack {
                        packet_id,
                        reason: protocol::ReasonCode::Success,
                        properties: Default::default(),
                    });
                    protocol::encode(&rel, version, buf);
                }
                Outgoing::Publish {
                    delivery,
                    packet_id,
                    dup,
                } => {
                    let msg = &delivery.msg;
                    let expiry = match msg.remaining_expiry(now) {
                        Ok(e) => e,
                        // Expired while in flight: it was sent once already, so resend as is.
                        Err(_) => Some(1),
                    };
                    let full = PublishOut {
                        dup,
                        qos: delivery.qos,
                        retain: delivery.retain,
                        topic: &msg.topic,
                        packet_id,
                        properties: &msg.properties,
                        message_expiry_interval: expiry,
                        topic_alias: None,
                        subscription_identifiers: &delivery.sub_ids,
                        payload: &msg.payload,
                    };
                    let fits = |out: &PublishOut| {
                        u32::try_from(publish::out_len(version, out))
                            .is_ok_and(|l| l <= max_packet_size)
                    };
                    let (topic, topic_alias, new_alias) = aliases.choose(&msg.topic);
                    let aliased = PublishOut {
                        topic,
                        topic_alias,
                        ..full
                    };
                    // A new alias is recorded only with a packet that goes out; if the alias
                    // property is what makes it too large, send it without one.
                    let packet = if fits(&aliased) {
                        if let (true, Some(alias)) = (new_alias, topic_alias) {
                            aliases.commit(&msg.topic, alias);
                        }
                        aliased
                    } else {
                        full
                    };
                    if !fits(&packet) {
                        // MQTT-3.1.2-24: never send a packet above the client's maximum.
                        self.stats.dropped.fetch_add(1, Ordering::Relaxed);
                        if delivery.qos != QoS::AtMostOnce {
                            too_large.push(packet_id);
                        }
                        continue;
                    }
                    publish::write_out(buf, version, &packet);
                    sent += 1;
                }
            }
        }
        self.stats.messages_sent.fetch_add(sent, Ordering::Relaxed);
        if !too_large.is_empty() {
            let mut st = session.state.lock();
            for id in too_large {
                st.discard_inflight(id);
            }
            ops.append(st.take_store_ops());
        }
    }
}

/// Outbound topic aliases of one connection (§3.3.2.3.4): the first `maximum` distinct topics
/// get an alias; later messages on them carry only the alias. Per connection, so an alias never
/// leaks from one client to another.
struct Aliases {
    maximum: u16,
    map: HashMap<String, u16>,
}

impl Aliases {
    /// (topic to write, alias to write, whether the alias is new) for `topic`, without
    /// recording anything: the caller commits a new alias only once the packet is really sent.
    fn choose<'a>(&self, topic: &'a str) -> (&'a str, Option<u16>, bool) {
        if self.maximum == 0 {
            return (topic, None, false);
        }
        if let Some(&alias) = self.map.get(topic) {
            return ("", Some(alias), false);
        }
        match u16::try_from(self.map.len() + 1) {
            Ok(alias) if alias <= self.maximum => (topic, Some(alias), true),
            _ => (topic, None, false),
        }
    }

    fn commit(&mut self, topic: &str, alias: u16) {
        self.map.insert(topic.to_owned(), alias);
    }
}

/// Outboxes owed a flush, collected while a reader thread works through one chunk and flushed
/// before it reads again (or when dropped), so that each gets one write for the whole chunk.
#[derive(Default)]
pub struct Wakes(Vec<Arc<Outbox>>);

impl Wakes {
    /// Notes that `outbox`'s session has news; remembers it when the flush is owed here.
    pub fn mark(&mut self, outbox: Arc<Outbox>) {
        if outbox.mark() {
            self.0.push(outbox);
        }
    }

    pub fn flush(&mut self) {
        for outbox in self.0.drain(..) {
            outbox.flush();
        }
    }
}

impl Drop for Wakes {
    fn drop(&mut self) {
        self.flush();
    }
}
