//! A connection's byte pipe: what its reader thread reads from and what the holder of its
//! outbox's write turn (a reader thread, or the `writer` thread) writes to. Plain TCP or TLS;
//! one `Arc<Pipe>` per accepted socket, shared by the reader, the outbox, the connection table,
//! the pending pool and the writer thread's lingers, as the bare `Arc<TcpStream>` was.
//!
//! **Plain** is the socket itself: [`Pipe::read_into`] and the outbox's send are the same
//! system calls as before, with no lock and no copy beyond the framing buffer's.
//!
//! **TLS** shares one `rustls::ServerConnection` between both directions under a short lock
//! (`TlsPipe::state`, a leaf of the lock order: nothing else is taken while it is held). The
//! reader never holds it across its blocking read: it reads ciphertext from the raw socket into
//! its chunk first, then takes the lock to feed `read_tls` / `process_new_packets`, moves the
//! plaintext straight into the framing buffer, and sends what rustls produced in answer
//! (handshake messages, alerts, a KeyUpdate). The write-turn holder takes it to seal plaintext
//! (`writer()`) and send the records. Ciphertext from both sides goes into one buffer
//! (`TlsState::out`) and is sent, in order, by a non-blocking `send(2)` made *under* the lock:
//! TLS records must reach the socket in the order rustls made them (a reader's alert or
//! KeyUpdate answer overtaking, or being overtaken by, an application record kills the
//! connection), and a non-blocking send never waits, so the lock stays as short as the
//! outbox's own `out` lock, which is held across the same call. What the socket does not take
//! stays in the buffer: the write turn (and, when the socket is full, the `writer` thread,
//! polling the raw descriptor for `POLLOUT` as for a plain socket) sends it before anything
//! new; before a connection has an outbox (the handshake, a refused CONNECT) its reader sends
//! it itself, waiting for room within its deadline.
//!
//! **WebSockets** ([`super::ws`]) wrap a plain or TLS pipe: reads go through the inner pipe
//! into the WebSocket's raw buffer and come out of it as MQTT bytes; writes are framed into
//! the WebSocket's own buffer under its short lock (taken before, never after, the TLS lock)
//! and handed to the inner pipe in order.
//!
//! Back-pressure stays true: the outbox seals at most [`SEAL_CHUNK`] bytes at a time and only
//! once the previous ciphertext is all sent, and counts plaintext as written (no longer owed)
//! only once its ciphertext is in the kernel. So a TLS connection holds at most one sealed chunk
//! of ciphertext beyond what the outbox accounts for.

use std::io::{self, BufRead, Read};
use std::net::{Shutdown, TcpStream};
use std::os::unix::io::{AsRawFd, RawFd};
use std::time::Instant;

use parking_lot::Mutex;
use rustls::ServerConnection;

use super::socket;
pub use super::ws::WsPipe;
use crate::protocol::frame::FrameBuffer;

/// Most plaintext the outbox seals in one go (four full TLS records).
pub const SEAL_CHUNK: usize = 64 * 1024;

/// Every [`Pipe::transport_name`], in the order `/metrics` and `$SYS` list them (each listed,
/// with 0 when no client uses it).
pub const TRANSPORTS: &[&str] = &["tcp", "tls", "ws", "wss"];

/// A connection's bytes: plain TCP, or TLS over it.
pub enum Pipe {
    Plain(TcpStream),
    /// Boxed: a plain connection does not carry the size of rustls's state.
    Tls(Box<TlsPipe>),
    /// MQTT over WebSockets, over a plain or a TLS pipe (see [`super::ws`]).
    Ws(Box<WsPipe>),
}

/// Where a pipe's reads put the bytes they produce: the framing buffer, or (under a WebSocket)
/// the raw buffer the frames are parsed from.
pub trait Sink {
    fn put(&mut self, data: &[u8]);
}

impl Sink for FrameBuffer {
    fn put(&mut self, data: &[u8]) {
        self.extend(data);
    }
}

impl Sink for Vec<u8> {
    fn put(&mut self, data: &[u8]) {
        self.extend_from_slice(data);
    }
}

/// TLS over a socket: the rustls state both directions share.
pub struct TlsPipe {
    socket: TcpStream,
    /// Short: never held across a blocking call (see the module doc). A leaf lock.
    state: Mutex<TlsState>,
}

struct TlsState {
    conn: ServerConnection,
    /// The socket's descriptor, owned by the `TlsPipe` beside this state.
    fd: RawFd,
    /// Ciphertext made by rustls that the socket has not taken yet: `out[sent..]`.
    out: Vec<u8>,
    sent: usize,
    /// The peer's close_notify arrived with plaintext still to hand over: the next read ends.
    eof: bool,
}

impl Pipe {
    pub fn plain(socket: TcpStream) -> Pipe {
        Pipe::Plain(socket)
    }

    pub fn tls(socket: TcpStream, conn: ServerConnection) -> Pipe {
        let fd = socket.as_raw_fd();
        Pipe::Tls(Box::new(TlsPipe {
            socket,
            state: Mutex::new(TlsState {
                conn,
                fd,
                out: Vec::new(),
                sent: 0,
                eof: false,
            }),
        }))
    }

    /// WebSockets over `inner` (plain or TLS): the HTTP upgrade comes first, then frames.
    pub fn ws(inner: Pipe, max_frame: u64) -> Pipe {
        Pipe::Ws(Box::new(WsPipe::new(inner, max_frame)))
    }

    /// The raw socket: timeouts, shutdown, `poll`, peeking and the kernel's send queue.
    pub fn tcp(&self) -> &TcpStream {
        match self {
            Pipe::Plain(s) => s,
            Pipe::Tls(t) => &t.socket,
            Pipe::Ws(w) => w.inner().tcp(),
        }
    }

    /// The transport's name on the page, in the API and in per-listener counts: one of
    /// [`TRANSPORTS`].
    pub fn transport_name(&self) -> &'static str {
        match self {
            Pipe::Plain(_) => "tcp",
            Pipe::Tls(_) => "tls",
            Pipe::Ws(w) if w.inner().is_tls() => "wss",
            Pipe::Ws(_) => "ws",
        }
    }

    /// Plain TCP: the outbox writes straight to the socket, with nothing held in the pipe.
    pub fn is_plain(&self) -> bool {
        matches!(self, Pipe::Plain(_))
    }

    pub fn raw_fd(&self) -> RawFd {
        self.tcp().as_raw_fd()
    }

    pub fn shutdown(&self, how: Shutdown) {
        let _ = self.tcp().shutdown(how);
    }

    /// Encrypted: TLS, or WebSockets over TLS.
    pub fn is_tls(&self) -> bool {
        match self {
            Pipe::Plain(_) => false,
            Pipe::Tls(_) => true,
            Pipe::Ws(w) => w.inner().is_tls(),
        }
    }

    /// Reads once from the socket into `chunk` — waiting for bytes unless `nonblocking` — and
    /// appends the plaintext to `frames`. The number of bytes read from the socket (`0`: the
    /// peer closed: end of file, or a TLS close_notify). For TLS the plaintext may be less than
    /// that, or nothing (handshake records); what rustls answers is sent before returning.
    pub fn read_into(
        &self,
        chunk: &mut [u8],
        frames: &mut FrameBuffer,
        nonblocking: bool,
    ) -> io::Result<usize> {
        match self {
            Pipe::Ws(w) => w.read_into(chunk, frames, nonblocking),
            _ => self.read_raw(chunk, frames, nonblocking),
        }
    }

    /// [`Pipe::read_into`] for what is under a WebSocket: the bytes (TLS: the plaintext) go
    /// to `sink` as they are.
    pub(super) fn read_raw(
        &self,
        chunk: &mut [u8],
        sink: &mut impl Sink,
        nonblocking: bool,
    ) -> io::Result<usize> {
        match self {
            Pipe::Plain(s) => {
                let n = if nonblocking {
                    socket::recv_nonblocking(s, chunk)?
                } else {
                    (&*s).read(chunk)?
                };
                sink.put(&chunk[..n]);
                Ok(n)
            }
            Pipe::Tls(t) => t.read_into(chunk, sink, nonblocking),
            Pipe::Ws(w) => w.inner().read_raw(chunk, sink, nonblocking),
        }
    }

    /// Sends what the pipe holds without blocking: true when nothing is left (always true for
    /// plain TCP). For the outbox, before it seals more.
    pub fn flush_nonblocking(&self) -> io::Result<bool> {
        match self {
            Pipe::Plain(_) => Ok(true),
            Pipe::Tls(t) => t.flush_nonblocking(),
            Pipe::Ws(w) => w.flush_nonblocking(),
        }
    }

    /// Seals (TLS records) or frames (WebSocket binary frame) up to [`SEAL_CHUNK`] bytes of
    /// `plain` and sends what the socket takes now: how many bytes of `plain` were taken.
    /// Not for plain TCP, which the outbox writes itself.
    pub fn seal(&self, plain: &[u8]) -> io::Result<usize> {
        match self {
            Pipe::Plain(s) => socket::send_nonblocking(s, plain),
            Pipe::Tls(t) => t.seal(plain),
            Pipe::Ws(w) => w.seal(plain),
        }
    }

    /// TLS ciphertext is waiting for room in the socket (always false for plain TCP).
    pub fn has_unsent(&self) -> bool {
        match self {
            Pipe::Plain(_) => false,
            Pipe::Tls(t) => {
                let st = t.state.lock();
                st.sent < st.out.len()
            }
            Pipe::Ws(w) => w.has_unsent(),
        }
    }

    /// Writes `data` whole, waiting for room until `deadline`: only for a connection that has
    /// no outbox (a refused CONNECT). TLS: sealed, then followed by close_notify.
    pub fn write_all_until(&self, data: &[u8], deadline: Instant) -> io::Result<()> {
        match self {
            Pipe::Plain(s) => {
                let mut done = 0;
                while done < data.len() {
                    match socket::send_nonblocking(s, &data[done..]) {
                        Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                        Ok(n) => done += n,
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                            wait_writable(s, deadline)?
                        }
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(e) => return Err(e),
                    }
                }
                Ok(())
            }
            Pipe::Tls(t) => {
                let mut done = 0;
                while done < data.len() {
                    if !t.send_pending()? {
                        wait_writable(&t.socket, deadline)?;
                        continue;
                    }
                    done += t.seal(&data[done..])?;
                }
                t.close_notify();
                t.flush_until(deadline)
            }
            Pipe::Ws(w) => w.write_all_until(data, deadline),
        }
    }

    /// Sends what rustls still holds, waiting for room until `deadline`: for a reader whose
    /// connection has no outbox yet (the handshake). Nothing to do for plain TCP.
    pub fn flush_until(&self, deadline: Instant) -> io::Result<()> {
        match self {
            Pipe::Plain(_) => Ok(()),
            Pipe::Tls(t) => t.flush_until(deadline),
            Pipe::Ws(w) => w.flush_until(deadline),
        }
    }

    /// Queues a TLS close_notify and sends what the socket takes now (before the server shuts
    /// its write side after its last packet). Nothing for plain TCP.
    pub fn close_notify(&self) {
        match self {
            Pipe::Plain(_) => {}
            Pipe::Tls(t) => t.close_notify(),
            Pipe::Ws(w) => w.close_normal(),
        }
    }

    /// The client certificate's subject CN, once the handshake is done; `None` for plain TCP,
    /// without a certificate, or without a usable CN.
    pub fn peer_common_name(&self) -> Option<String> {
        match self {
            Pipe::Plain(_) => None,
            Pipe::Tls(t) => {
                let st = t.state.lock();
                let cert = st.conn.peer_certificates()?.first()?;
                super::tls::subject_common_name(cert.as_ref())
            }
            Pipe::Ws(w) => w.inner().peer_common_name(),
        }
    }
}

impl TlsPipe {
    fn read_into(
        &self,
        chunk: &mut [u8],
        frames: &mut impl Sink,
        nonblocking: bool,
    ) -> io::Result<usize> {
        if self.state.lock().eof {
            return Ok(0);
        }
        // Without the lock: this may wait for as long as the client is silent.
        let n = if nonblocking {
            socket::recv_nonblocking(&self.socket, chunk)?
        } else {
            (&self.socket).read(chunk)?
        };
        if n == 0 {
            return Ok(0);
        }
        let mut st = self.state.lock();
        let mut input = &chunk[..n];
        let mut closed = false;
        let mut plaintext = 0;
        while !input.is_empty() && !closed {
            // Each call takes what fits in rustls's buffer; the plaintext is drained after
            // each, so its "plaintext buffer full" cannot happen.
            if st.conn.read_tls(&mut input)? == 0 {
                // A close_notify came before these bytes: they are ignored.
                closed = true;
            }
            let processed = st.conn.process_new_packets();
            loop {
                match st.conn.reader().into_first_chunk() {
                    Ok([]) => {
                        closed = true;
                        break;
                    }
                    Ok(data) => {
                        frames.put(data);
                        let len = data.len();
                        plaintext += len;
                        st.conn.reader().consume(len);
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) => return Err(e),
                }
            }
            if let Err(e) = processed {
                // rustls queued an alert saying why: send it before the connection ends.
                st.send_some()?;
                return Err(io::Error::new(io::ErrorKind::InvalidData, e));
            }
        }
        st.send_some()?;
        if closed {
            if plaintext == 0 {
                return Ok(0);
            }
            st.eof = true;
        }
        Ok(n)
    }

    /// Sends waiting ciphertext without blocking: true when none is left.
    pub(super) fn send_pending(&self) -> io::Result<bool> {
        self.state.lock().send_some()
    }

    /// Seals up to [`SEAL_CHUNK`] bytes of `plain` into records and sends what the socket
    /// takes now: how many plaintext bytes were sealed.
    pub(super) fn seal(&self, plain: &[u8]) -> io::Result<usize> {
        let plain = &plain[..plain.len().min(SEAL_CHUNK)];
        let mut st = self.state.lock();
        let n = io::Write::write(&mut st.conn.writer(), plain)?;
        if n == 0 && !plain.is_empty() {
            return Err(io::ErrorKind::WriteZero.into());
        }
        st.send_some()?;
        Ok(n)
    }

    /// Sends waiting ciphertext without blocking: true when none is left. For the outbox.
    pub(super) fn flush_nonblocking(&self) -> io::Result<bool> {
        self.send_pending()
    }

    pub(super) fn close_notify(&self) {
        let mut st = self.state.lock();
        st.conn.send_close_notify();
        let _ = st.send_some();
    }

    fn flush_until(&self, deadline: Instant) -> io::Result<()> {
        while !self.send_pending()? {
            wait_writable(&self.socket, deadline)?;
        }
        Ok(())
    }
}

impl TlsState {
    /// Moves what rustls made into `out` and sends as much of `out` as the socket takes now.
    /// True when nothing is left unsent.
    fn send_some(&mut self) -> io::Result<bool> {
        while self.conn.wants_write() {
            self.conn.write_tls(&mut self.out)?;
        }
        while self.sent < self.out.len() {
            match socket::send_fd(self.fd, &self.out[self.sent..]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => self.sent += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        self.sent = 0;
        empty_send_buffer(&mut self.out);
        Ok(true)
    }
}

/// Empties a send buffer that has been sent whole, giving its memory back when a burst grew it
/// past two seal chunks (an idle connection keeps no large buffer).
pub(super) fn empty_send_buffer(out: &mut Vec<u8>) {
    if out.capacity() > 2 * SEAL_CHUNK {
        *out = Vec::new();
    } else {
        out.clear();
    }
}

/// Waits until `socket` has room for writing, or fails with `TimedOut` at `deadline`.
pub(super) fn wait_writable(socket: &TcpStream, deadline: Instant) -> io::Result<()> {
    let now = Instant::now();
    if now >= deadline {
        return Err(io::ErrorKind::TimedOut.into());
    }
    let ms = (deadline - now).as_millis().clamp(1, i32::MAX as u128);
    let mut fds = [socket::pollfd(socket.as_raw_fd(), libc::POLLOUT)];
    match socket::poll(&mut fds, i32::try_from(ms).unwrap_or(i32::MAX)) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::Interrupted => Ok(()),
        Err(e) => Err(e),
    }
}
