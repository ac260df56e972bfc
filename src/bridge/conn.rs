//! One MQTT connection a bridge holds as a client: to the remote broker (plain TCP, or rustls
//! over it with `bridge_cafile`) or to this broker's loopback ([`crate::broker::loopback`]).
//! Writes are made by the bridge's own thread ([`Conn::send`]); a `bridge-NAME-read` thread
//! per connection reads, frames and decodes with the pure codec and hands each packet to the
//! bridge thread's channel, ending with one [`Event::Closed`]. A TLS connection's rustls state
//! is shared by both under a short lock that is never held across the blocking read.

use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use crossbeam_channel::Sender;
use parking_lot::Mutex;
use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ClientConnection};

use crate::protocol::frame::FrameBuffer;
use crate::protocol::{self, Packet, ProtocolVersion, MAX_REMAINING_LENGTH};

/// How long one write may wait for room before the connection is given up.
const WRITE_TIMEOUT: Duration = Duration::from_secs(30);

/// Stack of a reader thread: framing and decoding are shallow.
const READER_STACK: usize = 256 * 1024;

/// Which of its two connections a bridge event is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Remote,
    Local,
}

/// What the reader threads (and the broker, to stop a bridge) tell a bridge's thread. `gen`
/// tells the connection: a late event from one already replaced is ignored.
#[derive(Debug)]
pub enum Event {
    Packet(Side, u64, Box<Packet>),
    Closed(Side, u64, String),
    Stop,
}

/// The socket, or TLS over it.
enum Stream {
    Plain(TcpStream),
    /// Boxed: a plain connection does not carry the size of rustls's state.
    Tls(TcpStream, Box<Mutex<ClientConnection>>),
}

impl Stream {
    fn tcp(&self) -> &TcpStream {
        match self {
            Stream::Plain(s) | Stream::Tls(s, _) => s,
        }
    }
}

/// A connection's writing end.
pub struct Conn {
    stream: Arc<Stream>,
    pub version: ProtocolVersion,
    pub side: Side,
    pub gen: u64,
    /// Packets queued by [`Conn::queue`] and not yet written, in order.
    buf: Vec<u8>,
}

impl Conn {
    /// Starts reading `socket` (with TLS when `tls` is given, for `host`) on a new thread that
    /// sends to `events`.
    pub fn start(
        socket: TcpStream,
        tls: Option<(Arc<ClientConfig>, &str)>,
        version: ProtocolVersion,
        side: Side,
        gen: u64,
        name: &str,
        events: Sender<Event>,
    ) -> io::Result<Conn> {
        socket.set_nodelay(true)?;
        socket.set_write_timeout(Some(WRITE_TIMEOUT))?;
        let stream = match tls {
            None => Stream::Plain(socket),
            Some((config, host)) => {
                let server = ServerName::try_from(host.to_owned())
                    .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
                let conn = ClientConnection::new(config, server).map_err(io::Error::other)?;
                Stream::Tls(socket, Box::new(Mutex::new(conn)))
            }
        };
        let stream = Arc::new(stream);
        let reading = stream.clone();
        thread::Builder::new()
            .name(format!("bridge-{name}-read"))
            .stack_size(READER_STACK)
            .spawn(move || read_loop(&reading, version, side, gen, &events))?;
        Ok(Conn {
            stream,
            version,
            side,
            gen,
            buf: Vec::new(),
        })
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
        let written = match &*self.stream {
            Stream::Plain(s) => (&*s).write_all(&self.buf),
            Stream::Tls(s, conn) => {
                let mut conn = conn.lock();
                conn.writer()
                    .write_all(&self.buf)
                    .and_then(|()| send_tls(&mut conn, s))
            }
        };
        self.buf.clear();
        written
    }

    /// Closes both directions: the reader thread ends with [`Event::Closed`].
    pub fn close(&self) {
        let _ = self.stream.tcp().shutdown(Shutdown::Both);
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        self.close();
    }
}

/// Sends whatever rustls has made (records, handshake messages); under its lock, so that
/// records reach the socket in the order they were made.
fn send_tls(conn: &mut ClientConnection, mut socket: &TcpStream) -> io::Result<()> {
    while conn.wants_write() {
        conn.write_tls(&mut socket)?;
    }
    Ok(())
}

fn read_loop(
    stream: &Stream,
    version: ProtocolVersion,
    side: Side,
    gen: u64,
    events: &Sender<Event>,
) {
    let why = match read_packets(stream, version, side, gen, events) {
        Ok(()) => "closed by the peer".to_owned(),
        Err(e) => e.to_string(),
    };
    let _ = stream.tcp().shutdown(Shutdown::Both);
    let _ = events.send(Event::Closed(side, gen, why));
}

fn read_packets(
    stream: &Stream,
    version: ProtocolVersion,
    side: Side,
    gen: u64,
    events: &Sender<Event>,
) -> io::Result<()> {
    let mut frames = FrameBuffer::new();
    let mut chunk = vec![0u8; 16 * 1024];
    let mut peer_closed = false;
    while !peer_closed {
        let n = stream.tcp().read(&mut chunk)?;
        if n == 0 {
            return Ok(());
        }
        match stream {
            Stream::Plain(_) => frames.extend(&chunk[..n]),
            Stream::Tls(socket, conn) => {
                let mut conn = conn.lock();
                let mut data = &chunk[..n];
                while !data.is_empty() {
                    conn.read_tls(&mut data)?;
                    let state = conn
                        .process_new_packets()
                        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
                    let mut plain = vec![0u8; state.plaintext_bytes_to_read()];
                    conn.reader().read_exact(&mut plain)?;
                    frames.extend(&plain);
                    // Its close_notify: what came before it is still handed over below.
                    if state.peer_has_closed() {
                        peer_closed = true;
                        break;
                    }
                }
                if !peer_closed {
                    send_tls(&mut conn, socket)?;
                }
            }
        }
        loop {
            let packet = frames
                .next_packet(Some(version), MAX_REMAINING_LENGTH + 5)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
            let Some(packet) = packet else { break };
            if events
                .send(Event::Packet(side, gen, Box::new(packet)))
                .is_err()
            {
                return Ok(());
            }
        }
    }
    Ok(())
}
