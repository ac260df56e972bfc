//! One MQTT connection a bridge holds as a client: to the remote broker (plain TCP, or rustls
//! over it with `bridge_cafile`) or to this broker's loopback ([`crate::broker::loopback`]).
//! The bridge's own thread does everything on it: it writes ([`Conn::send`]), and when `poll(2)`
//! says the socket has bytes it reads what is there without waiting ([`Conn::read_ready`]),
//! frames and decodes it with the pure codec. No reader thread: a packet costs no hand-off
//! between threads and no extra wake-up, which at a remote's pace of one PUBACK per read was
//! most of a bridge's scheduling work. The socket stays in blocking mode for writes (within
//! `WRITE_TIMEOUT`); reads use `MSG_DONTWAIT`.

use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::os::unix::io::{AsRawFd, RawFd};
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ClientConnection};

use crate::broker::socket;
use crate::protocol::frame::FrameBuffer;
use crate::protocol::{self, Packet, ProtocolVersion, MAX_REMAINING_LENGTH};

/// How long one write may wait for room before the connection is given up.
const WRITE_TIMEOUT: Duration = Duration::from_secs(30);

/// Bytes read per call at most: one connection's burst does not keep the other waiting.
const READ_BUDGET: usize = 64 * 1024;

/// Which of its two connections a bridge event is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Remote,
    Local,
}

/// What a bridge's thread handles next: what its connections delivered, and the broker's
/// stop. `gen` tells the connection: an event of one already replaced is ignored.
#[derive(Debug)]
pub enum Event {
    /// The packets of one read, in order (never empty).
    Packets(Side, u64, Vec<Packet>),
    Closed(Side, u64, String),
    Stop,
}

/// The socket, or TLS over it.
enum Stream {
    Plain(TcpStream),
    /// Boxed: a plain connection does not carry the size of rustls's state.
    Tls(TcpStream, Box<ClientConnection>),
}

impl Stream {
    fn tcp(&self) -> &TcpStream {
        match self {
            Stream::Plain(s) | Stream::Tls(s, _) => s,
        }
    }
}

/// One connection, read and written by the bridge's thread.
pub struct Conn {
    stream: Stream,
    pub version: ProtocolVersion,
    pub side: Side,
    pub gen: u64,
    /// Packets queued by [`Conn::queue`] and not yet written, in order.
    buf: Vec<u8>,
    frames: FrameBuffer,
    chunk: Vec<u8>,
}

impl Conn {
    /// Wraps `socket` (with TLS when `tls` is given, for `host`); nothing is read until
    /// [`Conn::read_ready`].
    pub fn start(
        socket: TcpStream,
        tls: Option<(Arc<ClientConfig>, &str)>,
        version: ProtocolVersion,
        side: Side,
        gen: u64,
    ) -> io::Result<Conn> {
        socket.set_nodelay(true)?;
        socket.set_write_timeout(Some(WRITE_TIMEOUT))?;
        let stream = match tls {
            None => Stream::Plain(socket),
            Some((config, host)) => {
                let server = ServerName::try_from(host.to_owned())
                    .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
                let conn = ClientConnection::new(config, server).map_err(io::Error::other)?;
                Stream::Tls(socket, Box::new(conn))
            }
        };
        Ok(Conn {
            stream,
            version,
            side,
            gen,
            buf: Vec::new(),
            frames: FrameBuffer::new(),
            chunk: vec![0u8; 16 * 1024],
        })
    }

    /// The descriptor to `poll(2)` for `POLLIN`.
    pub fn fd(&self) -> RawFd {
        self.stream.tcp().as_raw_fd()
    }

    /// Writes one packet, after any queued ones (blocking, within `WRITE_TIMEOUT`).
    pub fn send(&mut self, packet: &Packet) -> io::Result<()> {
        self.queue(packet);
        self.flush()
    }

    /// Queues one packet for the next [`Conn::flush`]: a burst of packets is one write, not a
    /// system call (and a wake-up of the peer) each.
    pub fn queue(&mut self, packet: &Packet) {
        protocol::encode(packet, self.version, &mut self.buf);
    }

    /// Bytes queued and not yet written.
    pub fn queued(&self) -> usize {
        self.buf.len()
    }

    /// Writes what is queued (blocking, within `WRITE_TIMEOUT`).
    pub fn flush(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let written = match &mut self.stream {
            Stream::Plain(s) => (&*s).write_all(&self.buf),
            Stream::Tls(s, conn) => conn
                .writer()
                .write_all(&self.buf)
                .and_then(|()| send_tls(conn, s)),
        };
        self.buf.clear();
        written
    }

    /// Reads what the socket holds now, without waiting, and decodes the whole packets in it
    /// into `out`, in order. `Err(why)`: the connection ended (the peer closed it, a read or
    /// protocol error); the packets before the end are in `out` all the same.
    pub fn read_ready(&mut self, out: &mut Vec<Packet>) -> Result<(), String> {
        let ended = self.read_bytes();
        loop {
            match self
                .frames
                .next_packet(Some(self.version), MAX_REMAINING_LENGTH + 5)
            {
                Ok(Some(packet)) => out.push(packet),
                Ok(None) => break,
                Err(e) => return Err(e.to_string()),
            }
        }
        ended
    }

    /// Moves the socket's bytes (TLS: their plaintext) into the framing buffer, up to
    /// [`READ_BUDGET`].
    fn read_bytes(&mut self) -> Result<(), String> {
        let mut total = 0;
        while total < READ_BUDGET {
            let n = match socket::recv_nonblocking(self.stream.tcp(), &mut self.chunk) {
                Ok(0) => return Err("closed by the peer".to_owned()),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e.to_string()),
            };
            total += n;
            match &mut self.stream {
                Stream::Plain(_) => self.frames.extend(&self.chunk[..n]),
                Stream::Tls(socket, conn) => {
                    let closed = tls_read(conn, socket, &self.chunk[..n], &mut self.frames)
                        .map_err(|e| e.to_string())?;
                    // Its close_notify: what came before it is still decoded.
                    if closed {
                        return Err("closed by the peer".to_owned());
                    }
                }
            }
        }
        Ok(())
    }

    /// Closes both directions.
    pub fn close(&self) {
        let _ = self.stream.tcp().shutdown(Shutdown::Both);
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        self.close();
    }
}

/// Feeds ciphertext to rustls, moves the plaintext into `frames` and sends what rustls made in
/// answer (handshake messages, or application data held until the handshake ended). `true`:
/// the peer's close_notify came.
fn tls_read(
    conn: &mut ClientConnection,
    socket: &TcpStream,
    mut data: &[u8],
    frames: &mut FrameBuffer,
) -> io::Result<bool> {
    while !data.is_empty() {
        conn.read_tls(&mut data)?;
        let state = conn
            .process_new_packets()
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
        let mut plain = vec![0u8; state.plaintext_bytes_to_read()];
        conn.reader().read_exact(&mut plain)?;
        frames.extend(&plain);
        if state.peer_has_closed() {
            return Ok(true);
        }
    }
    send_tls(conn, socket)?;
    Ok(false)
}

/// Sends whatever rustls has made (records, handshake messages).
fn send_tls(conn: &mut ClientConnection, mut socket: &TcpStream) -> io::Result<()> {
    while conn.wants_write() {
        conn.write_tls(&mut socket)?;
    }
    Ok(())
}
