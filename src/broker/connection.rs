//! A client's reader thread: read 512-byte chunks → frame → decode → handle, until the
//! connection ends; then settle the session and the will.
//!
//! One such thread serves each accepted socket (named `client-<conn id>` meanwhile; it parks for
//! the next socket afterwards, see [`readers`](super::readers)). It owns the framing
//! buffer. Whatever it sends goes through an [`Outbox`] (its own, or a subscriber's when it
//! routes a PUBLISH), flushed once per chunk it read; only a refused CONNECT, which has no
//! outbox, is written directly.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::conns::disconnect_packet;
use super::error::ConnError;
use super::handle::{self, Flow};
use super::outbox::{Outbox, LINGER, NOT_READING_GRACE};
use super::pipe::Pipe;
use super::publish::Routing;
use super::session::Session;
use super::socket;
use super::stack::StackTrim;
use super::Broker;
use crate::config::Config;
use crate::protocol::frame::FrameBuffer;
use crate::protocol::{self, Packet, ProtocolVersion, ReasonCode, Will};

/// Reads packets from the socket within a deadline.
pub struct Reader {
    /// Shared with the outbox and the connection table: one descriptor per socket.
    pipe: Arc<Pipe>,
    /// Until the connection has an outbox (the TLS handshake, CONNECT), the reader sends the
    /// TLS records its reads produce itself, waiting for room within its deadline; after, a
    /// flush of the outbox does (see [`Outbox::flush`]).
    pub(crate) own_writes: bool,
    frames: FrameBuffer,
    chunk: Chunk,
    pub version: Option<ProtocolVersion>,
    max_packet_size: u32,
    /// The read timeout currently set on the socket.
    timeout: Option<Duration>,
    /// The last read came back short of a whole chunk: the socket held no more at that moment.
    drained: bool,
}

/// Read chunks up to this size (the default one among them) live inside the [`Reader`], on its
/// thread's stack in the page that the idle `recv` touches anyway, rather than on the heap:
/// half a kilobyte less for every connection.
const INLINE_CHUNK: usize = 512;

/// The buffer each socket read goes into before the framing buffer: `inline` for a chunk of
/// up to [`INLINE_CHUNK`] bytes, else `heap` (empty, so unallocated, when not used).
struct Chunk {
    inline: [u8; INLINE_CHUNK],
    heap: Box<[u8]>,
    len: usize,
}

impl Chunk {
    fn new(size: usize) -> Chunk {
        let len = size.max(1);
        Chunk {
            inline: [0; INLINE_CHUNK],
            heap: if len > INLINE_CHUNK {
                vec![0; len].into_boxed_slice()
            } else {
                Box::default()
            },
            len,
        }
    }

    fn as_mut(&mut self) -> &mut [u8] {
        if self.heap.is_empty() {
            self.inline.get_mut(..self.len).unwrap_or_default()
        } else {
            &mut self.heap
        }
    }

    fn len(&self) -> usize {
        self.len
    }
}

/// Chunks a reader thread reads and handles without waiting before it flushes what they queued.
const READ_AHEAD_CHUNKS: usize = 16;

/// How long a write made by a reader thread itself (a CONNECT's refusal, TLS handshake
/// records) may wait for room in the socket.
const WRITE_TIMEOUT: Duration = Duration::from_secs(5);

/// How much a read may overshoot its deadline before the socket timeout is set again: saves a
/// syscall per read while keeping keep-alive closes on time.
const TIMEOUT_SLACK: Duration = Duration::from_millis(200);

impl Reader {
    pub fn new(pipe: Arc<Pipe>, chunk_size: usize, max_packet_size: u32) -> Reader {
        Reader {
            pipe,
            own_writes: true,
            frames: FrameBuffer::new(),
            chunk: Chunk::new(chunk_size),
            version: None,
            max_packet_size,
            timeout: None,
            drained: true,
        }
    }

    /// A whole packet already in the framing buffer, without reading.
    pub fn buffered_packet(&mut self) -> Result<Option<(Packet, usize)>, ConnError> {
        let before = self.frames.buffered();
        let packet = self
            .frames
            .next_packet(self.version, self.max_packet_size)?;
        Ok(packet.map(|p| (p, before - self.frames.buffered())))
    }

    /// Reads one chunk if the socket has data now, without waiting. False when it had none,
    /// or when the last read came back short: the socket was empty then, and asking again at
    /// once would mostly cost a syscall that finds nothing (what arrives since waits for the
    /// next blocking read).
    pub fn read_ready(&mut self) -> Result<bool, ConnError> {
        if self.drained {
            return Ok(false);
        }
        match self
            .pipe
            .read_into(self.chunk.as_mut(), &mut self.frames, true)
        {
            Ok(0) => Err(ConnError::Closed),
            Ok(n) => {
                self.drained = n < self.chunk.len();
                self.send_own_records(None, || ConnError::ClosedByServer)?;
                Ok(true)
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
                ) =>
            {
                self.drained = true;
                Ok(false)
            }
            Err(e) => Err(ConnError::Io(e)),
        }
    }

    /// The next whole packet; `deadline` bounds the wait (keep-alive, connect timeout).
    pub fn next_packet(
        &mut self,
        deadline: Option<Instant>,
        timeout_error: fn() -> ConnError,
    ) -> Result<(Packet, usize), ConnError> {
        loop {
            if let Some(p) = self.buffered_packet()? {
                return Ok(p);
            }
            self.fill(deadline, timeout_error)?;
        }
    }

    /// Waits (until `deadline`) for one chunk and adds it to the framing buffer.
    pub fn fill(
        &mut self,
        deadline: Option<Instant>,
        timeout_error: fn() -> ConnError,
    ) -> Result<(), ConnError> {
        loop {
            if let Some(deadline) = deadline {
                let now = Instant::now();
                if now >= deadline {
                    return Err(timeout_error());
                }
                let left = deadline - now;
                let overshoot = self.timeout.is_none_or(|t| t > left + TIMEOUT_SLACK);
                if overshoot {
                    // A zero timeout means "none" to the OS; never ask for less than 1 ms.
                    let t = left.max(Duration::from_millis(1));
                    self.pipe.tcp().set_read_timeout(Some(t))?;
                    self.timeout = Some(t);
                }
            } else if self.timeout.is_some() {
                self.pipe.tcp().set_read_timeout(None)?;
                self.timeout = None;
            }
            match self
                .pipe
                .read_into(self.chunk.as_mut(), &mut self.frames, false)
            {
                Ok(0) => return Err(ConnError::Closed),
                Ok(n) => {
                    self.drained = n < self.chunk.len();
                    return self.send_own_records(deadline, timeout_error);
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock
                            | io::ErrorKind::TimedOut
                            | io::ErrorKind::Interrupted
                    ) => {}
                Err(e) => return Err(ConnError::Io(e)),
            }
        }
    }

    /// TLS, before the connection has an outbox: sends the records the last read produced
    /// (handshake messages, an alert), waiting for room until `deadline` (or 5 s). Nothing
    /// to do for plain TCP, or once the outbox sends them.
    fn send_own_records(
        &mut self,
        deadline: Option<Instant>,
        timeout_error: fn() -> ConnError,
    ) -> Result<(), ConnError> {
        if !self.own_writes || self.pipe.is_plain() {
            return Ok(());
        }
        let deadline = deadline.unwrap_or_else(|| Instant::now() + WRITE_TIMEOUT);
        match self.pipe.flush_until(deadline) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::TimedOut => Err(timeout_error()),
            Err(e) => Err(ConnError::Io(e)),
        }
    }

    /// Writes directly: only for refusing a CONNECT, which has no outbox. A refusal the client
    /// should read (a CONNACK) is followed by a linger, as after any close by the server.
    pub fn write_and_close(&mut self, packet: Option<&Packet>, version: ProtocolVersion) {
        let Some(packet) = packet else {
            self.pipe.shutdown(Shutdown::Both);
            return;
        };
        let mut buf = Vec::new();
        protocol::encode(packet, version, &mut buf);
        let written = match &*self.pipe {
            Pipe::Plain(stream) => {
                let _ = stream.set_write_timeout(Some(WRITE_TIMEOUT));
                (&*stream).write_all(&buf).is_ok()
            }
            Pipe::Tls(_) | Pipe::Ws(_) => self
                .pipe
                .write_all_until(&buf, Instant::now() + WRITE_TIMEOUT)
                .is_ok(),
        };
        if written {
            self.pipe.shutdown(Shutdown::Write);
            self.linger(Instant::now() + LINGER);
        }
        self.pipe.shutdown(Shutdown::Both);
    }

    /// After the server's last packet and its FIN: reads and discards until the client closes
    /// or `until`. Closing a socket with unread data, or that data arriving after the close,
    /// makes the kernel answer with a reset; the client's next write then fails and most
    /// clients drop the connection without reading the DISCONNECT or CONNACK that says why.
    pub fn linger(&mut self, until: Instant) {
        loop {
            let now = Instant::now();
            if now >= until {
                return;
            }
            let left = (until - now).max(Duration::from_millis(1));
            if self.pipe.tcp().set_read_timeout(Some(left)).is_err() {
                return;
            }
            self.timeout = Some(left);
            // The raw socket, also for TLS: what arrives now is discarded unread.
            match self.pipe.tcp().read(self.chunk.as_mut()) {
                Ok(0) => return,
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                // Timed out, reset, or shut by the writer thread at the end of the linger.
                Err(_) => return,
            }
        }
    }

    pub fn pipe(&self) -> &Arc<Pipe> {
        &self.pipe
    }
}

/// The connected client, owned by its reader thread.
pub struct Client {
    pub broker: Arc<Broker>,
    pub session: Arc<Session>,
    pub outbox: Arc<Outbox>,
    pub version: ProtocolVersion,
    pub client_id: Arc<str>,
    pub peer: SocketAddr,
    pub conn_id: u64,
    /// Effective keep alive in seconds (the Server Keep Alive when we changed it); 0 = off.
    pub keep_alive: u16,
    /// Inbound topic aliases (§3.3.2.3.4), per connection.
    pub topic_aliases: HashMap<u16, String>,
    pub will: Option<Will>,
    /// The will is kept in the store with the persistent session (published after a restart).
    pub will_kept: bool,
    /// Session Expiry Interval from CONNECT, for the DISCONNECT rule MQTT-3.14.2-2.
    pub connect_expiry: u32,
    /// Reusable routing buffers, so publishing allocates nothing for them; flushed once per
    /// chunk read.
    pub scratch: Routing,
    pub username: Option<String>,
    /// Connected with the bridge bit in its Protocol Level (a Mosquitto bridge): every
    /// subscription it makes gets No Local and Retain As Published, as Mosquitto gives them, so
    /// its own messages are not sent back (no loop) and retained ones stay retained downstream.
    pub bridge: bool,
    /// Its place among `max_clients`, given back when the client ends; `None` for a bridge's
    /// own loopback session ([`super::loopback`]), which takes no place.
    pub slot: Option<super::ClientSlot>,
    /// The settings as they were when its socket was accepted ([`Broker::config`]): a config
    /// reload applies to the connections after it.
    pub cfg: Arc<Config>,
    /// PUBLISH acknowledgements waiting for their store commit, in arrival order
    /// ([`handle::publish`]).
    pub acks: Arc<handle::publish::AckQueue>,
    /// PUBACKs read but not yet completed in the session, in arrival order (at most
    /// [`handle::ack::MAX_PUBACKS`]; see [`handle::ack::complete_pubacks`]).
    pub pubacks: Vec<u16>,
    /// Held from this reader's first durable PUBLISH of a read until its acks are settled, so
    /// that the read's writes ride one commit ([`crate::store::StoreHandle::hold_writes`]).
    pub write_hold: Option<crate::store::WriteHold>,
    /// Whether this client's last QoS 1/2 PUBLISH had to be committed before its
    /// acknowledgement: the next one then takes [`Client::write_hold`] before it is routed.
    pub publishes_stored: bool,
}

/// Keeps the connection table and the pending pool exact however the thread ends (a Mosquitto
/// bug class); the client's `max_clients` place is its [`ClientSlot`](super::ClientSlot).
struct ConnGuard {
    broker: Arc<Broker>,
    conn_id: u64,
}

impl Drop for ConnGuard {
    fn drop(&mut self) {
        self.broker.unregister_conn(self.conn_id);
        self.broker.leave_pending(self.conn_id);
    }
}

/// The reader thread's body for one accepted socket. The caller has already admitted it to
/// the pending pool.
pub fn run(broker: Arc<Broker>, pipe: Arc<Pipe>, peer: SocketAddr, conn_id: u64) {
    run_with(broker, pipe, peer, conn_id, false)
}

/// [`run`] for a socket the broker made itself (a bridge's local session, see
/// [`super::loopback`]): `trusted` lets its CONNECT in without a password or a `max_clients`
/// place. Never set for a socket that came from a listener.
pub(crate) fn run_with(
    broker: Arc<Broker>,
    pipe: Arc<Pipe>,
    peer: SocketAddr,
    conn_id: u64,
    trusted: bool,
) {
    let _guard = ConnGuard {
        broker: broker.clone(),
        conn_id,
    };
    let _ = pipe.tcp().set_nodelay(true);
    broker.register_conn(conn_id, pipe.clone(), peer);
    let cfg = broker.config();
    let mut reader = Reader::new(pipe, cfg.read_chunk_size, cfg.max_packet_size);
    // Used and dropped in place, never moved: each move of the 700-byte client cost a copy of
    // it in this frame, which stays on the stack under the idle `recv` for the whole connection.
    let lingers = {
        let mut opened = open(&broker, &mut reader, peer, conn_id, cfg, trusted);
        let Some(client) = opened.as_mut() else {
            return;
        };
        let result = client.run(&mut reader);
        client.finish(result)
    };
    if lingers {
        reader.linger(Instant::now() + LINGER);
    }
    reader.pipe().shutdown(Shutdown::Both);
}

/// Reads and answers the CONNECT (§3.1): the connected client, or `None` when refused. Not
/// inlined, like [`Client::finish`]: their packet-sized locals stay out of [`run`]'s frame,
/// which is on the stack for the whole connection.
#[inline(never)]
fn open(
    broker: &Arc<Broker>,
    reader: &mut Reader,
    peer: SocketAddr,
    conn_id: u64,
    cfg: Arc<Config>,
    trusted: bool,
) -> Option<Client> {
    let deadline = Instant::now() + cfg.connect_timeout;
    // The socket stays in the pending pool (not closable, as it is not waiting for its
    // client) until its CONNECT is accepted, so that sockets whose CONNECT is being checked
    // (a password verified) or refused (the refusal's linger) are bounded per address too: a
    // guesser holds at most `max_pending_per_address` threads. A refused socket leaves it when
    // its thread ends.
    let connect = match first_packet(broker, reader, deadline, conn_id) {
        Ok((Packet::Connect(c), size)) => {
            broker
                .stats
                .bytes_received
                .fetch_add(size as u64, Ordering::Relaxed);
            c
        }
        Ok((other, _)) => {
            // MQTT-3.1.0-1: the first packet must be CONNECT.
            log::info!(
                "connection from {peer} closed: {:?} before CONNECT",
                other.packet_type()
            );
            reader.write_and_close(None, ProtocolVersion::V5);
            return None;
        }
        Err(ConnError::Decode(e)) => {
            refuse_bad_connect(reader, peer, &e);
            return None;
        }
        Err(ConnError::ClosedByServer) => {
            log::info!(
                "connection from {peer} closed: no CONNECT within {:?}",
                cfg.connect_timeout
            );
            reader.write_and_close(None, ProtocolVersion::V5);
            return None;
        }
        Err(ConnError::Io(e))
            if !reader.pipe().is_plain() && e.kind() == io::ErrorKind::InvalidData =>
        {
            // A failed handshake (wrong CA, no or untrusted client certificate, plaintext on
            // the TLS port): rustls has sent its alert. A refused WebSocket upgrade or a
            // broken frame: the HTTP answer or close frame is sent.
            let what = match reader.pipe().transport_name() {
                "tls" => "TLS",
                "wss" => "WebSocket (wss)",
                _ => "WebSocket",
            };
            log::info!("{what} connection from {peer} closed: {e}");
            return None;
        }
        Err(e) => {
            log::debug!("connection from {peer} ended before CONNECT: {e}");
            return None;
        }
    };
    let client = handle::connect::accept(broker, reader, *connect, peer, conn_id, cfg, trusted)?;
    broker.leave_pending(conn_id);
    Some(client)
}

/// The first packet, read within `deadline`, telling the pending pool while the thread waits
/// for the client (only then may the socket be closed to make room for another).
fn first_packet(
    broker: &Broker,
    reader: &mut Reader,
    deadline: Instant,
    conn_id: u64,
) -> Result<(Packet, usize), ConnError> {
    loop {
        if let Some(p) = reader.buffered_packet()? {
            return Ok(p);
        }
        broker.pending_waiting(conn_id, true);
        let filled = reader.fill(Some(deadline), || ConnError::ClosedByServer);
        broker.pending_waiting(conn_id, false);
        filled?;
    }
}

/// A CONNECT that failed to decode: answer with CONNACK when the version is known (MQTT-3.1.4-1,
/// 3.2.2.2), then close.
fn refuse_bad_connect(reader: &mut Reader, peer: SocketAddr, e: &protocol::DecodeError) {
    log::info!("connection from {peer} refused: bad CONNECT: {e}");
    let reason = e.reason_code();
    let version = e.connect_version();
    let reply = match version {
        // An invalid protocol name gets no CONNACK (MQTT-3.1.2-1).
        None => None,
        // 5.0 may answer a bad CONNECT with its reason code before closing (§4.13.1).
        Some(v) if v.is_v5() => Some((v, handle::connect::connack_refusal(reason))),
        // 3.1.1 only answers an unacceptable protocol level (MQTT-3.1.2-2); any other
        // malformed CONNECT is just closed (MQTT-3.1.2-3, 3.1.4-1).
        Some(v) if reason == ReasonCode::UnsupportedProtocolVersion => {
            Some((v, handle::connect::connack_refusal(reason)))
        }
        Some(_) => None,
    };
    match reply {
        Some((v, packet)) => reader.write_and_close(Some(&packet), v),
        None => reader.write_and_close(None, ProtocolVersion::V5),
    }
}

/// How the connection ended.
enum Ending {
    /// DISCONNECT received with this reason.
    Disconnect(ReasonCode),
    Error(ConnError),
}

impl Client {
    /// Handles packets until the connection ends. The loop itself keeps a small frame: it is
    /// where the thread waits, and what lies below it on the stack is given back while it does.
    fn run(&mut self, reader: &mut Reader) -> Ending {
        let keep_alive = Duration::from_millis(u64::from(self.keep_alive) * 1500);
        let mut stack = StackTrim::new();
        let mut deadline = None;
        loop {
            match self.handle_buffered(reader) {
                // Keep Alive counts from the last whole packet (MQTT-3.1.2-24): bytes of an
                // unfinished one do not extend it.
                Ok(handled) if handled > 0 || deadline.is_none() => {
                    deadline = (self.keep_alive > 0).then(|| Instant::now() + keep_alive);
                }
                Ok(_) => {}
                Err(ending) => return ending,
            }
            // Everything read so far is handled: write it out before waiting again.
            self.flush();
            if self.outbox.owes_too_much() {
                // Back-pressure: read nothing more until the client has taken what it is owed.
                if let Err(stuck) = self.outbox.await_drain(NOT_READING_GRACE) {
                    self.broker
                        .stats
                        .not_reading_disconnects
                        .fetch_add(1, Ordering::Relaxed);
                    return Ending::Error(ConnError::NotReading {
                        unsent: stuck.unsent,
                        idle: stuck.idle,
                    });
                }
                // The client cannot be blamed for silence while it was not being read.
                if deadline.is_some() {
                    deadline = Some(Instant::now() + keep_alive);
                }
            }
            stack.trim();
            if let Err(e) = reader.fill(deadline, || ConnError::KeepAliveTimeout) {
                // The client answering our close (FIN after DISCONNECT) is still our close.
                if matches!(e, ConnError::Closed) && self.outbox.is_closing() {
                    return Ending::Error(ConnError::ClosedByServer);
                }
                return Ending::Error(e);
            }
        }
    }

    /// Decodes and handles every whole packet buffered, reading on while the client keeps
    /// sending (up to [`READ_AHEAD_CHUNKS`]), so that a burst reaches each subscriber in a few
    /// large writes rather than many small ones. The number of packets handled, or how the
    /// connection ended.
    #[inline(never)]
    fn handle_buffered(&mut self, reader: &mut Reader) -> Result<usize, Ending> {
        let mut chunks = 0;
        let mut handled = 0;
        // How long the next wait for a commit lasts before the socket is looked at again.
        let mut slice = handle::publish::OVERLAP_SLICE;
        loop {
            // Closed by another thread (takeover, the page, a server stop) or by the last
            // packet handled: nothing more read is acted on.
            if self.outbox.is_closing() {
                return Err(Ending::Error(ConnError::ClosedByServer));
            }
            let mut buffered = reader.buffered_packet();
            if !matches!(buffered, Ok(Some((Packet::PubAck(_), _)))) {
                // Before anything else is handled or read: the PUBACKs collected so far.
                handle::ack::complete_pubacks(self);
            }
            while matches!(buffered, Ok(None))
                && chunks < READ_AHEAD_CHUNKS
                && !self.outbox.owes_too_much()
            {
                match reader.read_ready() {
                    Ok(true) => {
                        chunks += 1;
                        buffered = reader.buffered_packet();
                    }
                    Ok(false) => break,
                    Err(e) => buffered = Err(e),
                }
            }
            let (packet, size) = match buffered {
                Ok(Some(p)) => p,
                // Nothing more to read now: what is owed is answered before the wait. While the
                // oldest owed ack's commit runs, what the client sends meanwhile is read and
                // handled (overlapping the store), then the acks ready by then go out.
                Ok(None) if self.acks.is_empty() || self.outbox.owes_too_much() => {
                    return self.settle_acks().map(|()| handled)
                }
                Ok(None) => {
                    if self.outbox.is_closing() {
                        return Ok(handled);
                    }
                    // On a plain socket the reader waits for the client's next bytes rather than
                    // for the commit: the store queues the acks as it commits them. (With TLS
                    // or WebSocket, bytes may wait decoded where poll(2) does not see them; and
                    // after READ_AHEAD_CHUNKS nothing more is read here.)
                    let watch_socket = reader.pipe.is_plain() && chunks < READ_AHEAD_CHUNKS;
                    let wait = if watch_socket { Duration::ZERO } else { slice };
                    match handle::publish::settle_ready_acks(self, wait) {
                        Ok(true) => return Ok(handled),
                        Ok(false) => {
                            self.flush();
                            if watch_socket {
                                let ms = i32::try_from(slice.as_millis().max(1)).unwrap_or(5);
                                let mut fds = [socket::pollfd(reader.pipe.raw_fd(), libc::POLLIN)];
                                // An error or a timeout only means: look again.
                                let _ = socket::poll(&mut fds, ms);
                            }
                            // Look at the socket again even after a short read.
                            reader.drained = false;
                            // Each look that finds nothing doubles the next wait: a slow commit
                            // costs a few wake-ups, and what arrives meanwhile waits at most
                            // OVERLAP_SLICE_MAX.
                            slice = (slice * 2).min(handle::publish::OVERLAP_SLICE_MAX);
                            continue;
                        }
                        Err(e) => return Err(Ending::Error(e)),
                    }
                }
                Err(e) => {
                    // Acks for what was stored still go out ahead of the connection's end.
                    self.settle_acks_before(&e);
                    return Err(Ending::Error(e));
                }
            };
            // Answers to any other packet must not overtake the owed PUBLISH acks, and what it
            // does (a subscription, a DISCONNECT) comes after the messages published before it
            // are queued.
            if !matches!(packet, Packet::Publish(_)) {
                self.scratch.queue_pending(&self.broker);
                self.settle_acks()?;
            }
            handled += 1;
            slice = handle::publish::OVERLAP_SLICE;
            self.broker
                .stats
                .bytes_received
                .fetch_add(size as u64, Ordering::Relaxed);
            match handle::dispatch(self, packet) {
                Ok(Flow::Continue) => {}
                Ok(Flow::Disconnect(reason)) => return Err(Ending::Disconnect(reason)),
                Err(e) => {
                    self.settle_acks_before(&e);
                    return Err(Ending::Error(e));
                }
            }
        }
    }

    /// [`handle::publish::settle_acks`], unless the connection is being closed (nothing more
    /// goes out then).
    fn settle_acks(&mut self) -> Result<(), Ending> {
        if self.outbox.is_closing() {
            return Ok(());
        }
        handle::publish::settle_acks(self).map_err(Ending::Error)
    }

    /// Settles the owed acks ahead of the connection ending with `e`, unless `e` is that one
    /// of them was not stored: no later one may then be acknowledged before it.
    fn settle_acks_before(&mut self, e: &ConnError) {
        if !matches!(e, ConnError::NotStored(_)) {
            let _ = self.settle_acks();
        }
    }

    /// Writes what handling the packets read so far queued: subscribers' news first, then the
    /// client's own acks.
    pub fn flush(&mut self) {
        handle::ack::complete_pubacks(self);
        self.scratch.flush(&self.broker);
        self.outbox.flush();
    }

    /// Settles the session and the will after the connection ended, and logs it once. True
    /// when the server ended the connection: the caller then lingers ([`Reader::linger`]).
    #[inline(never)]
    fn finish(&mut self, ending: Ending) -> bool {
        handle::ack::complete_pubacks(self);
        self.scratch.flush(&self.broker);
        let now = Instant::now();
        let (publish_will, why) = match &ending {
            Ending::Disconnect(ReasonCode::Success) => (false, "client disconnected".to_owned()),
            Ending::Disconnect(r) => (true, format!("client disconnected with {r:?}")),
            Ending::Error(e) => (true, e.to_string()),
        };
        match &ending {
            // The client ended it: nothing of ours is left for it to read.
            Ending::Disconnect(_) | Ending::Error(ConnError::Closed | ConnError::Io(_)) => {
                self.outbox.release()
            }
            Ending::Error(e) => {
                let max_packet_size = self.session.state.lock().link.max_packet_size;
                let last = e
                    .reason_code()
                    .filter(|_| self.version.is_v5())
                    .map(|r| disconnect_packet(r, max_packet_size));
                self.outbox.close(last.as_ref());
            }
        }
        // Gone from the control page now, not after the linger.
        self.broker.unregister_conn(self.conn_id);
        let will_now = self.settle_will(publish_will, now);
        self.broker.close_session_link(&self.session, &self.outbox);
        self.broker.stats.client_disconnected();
        self.broker
            .store
            .client_disconnected(&self.client_id, &why, crate::store::now_ms());
        if let Some(msg) = will_now {
            self.broker.publish(msg, &mut self.scratch);
            self.scratch.flush(&self.broker);
        }
        log::info!(
            "client {} disconnected from {} (MQTT {}): {}",
            self.client_id,
            self.peer,
            self.version.name(),
            why
        );
        self.outbox.lingers()
    }
}
