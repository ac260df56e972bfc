//! A minimal blocking MQTT client for the load generator, built on the crate's own codec
//! (`mqtt5_broker::protocol`) and `std::net`, over any [`crate::transport`] (tcp, tls, ws, wss):
//! connect, subscribe, read packets with a bounded wait, and a shared write half. Used by every generator thread (publisher writers and readers,
//! subscribers, connectors); each [`Conn`] is owned by one thread, a [`Writer`] may be shared.
//!
//! Every wait is bounded: connects and handshakes take a timeout, reads return after
//! [`POLL`] with `Ok(None)` so that callers can check their deadline, writes have a timeout.

use std::fmt;
use std::io::{self, Read};
use std::net::{Shutdown, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::transport::{self, Endpoint, Pipe};
use mqtt5_broker::protocol::frame::FrameBuffer;
use mqtt5_broker::protocol::{
    encode, Ack, Connect, DecodeError, Disconnect, Packet, Properties, ProtocolVersion, QoS,
    ReasonCode, Subscribe, SubscriptionOptions, TopicSubscription,
};

/// How long a read waits before returning `Ok(None)`.
pub const POLL: Duration = Duration::from_millis(50);
/// Bytes asked of the socket per read.
const READ_CHUNK: usize = 64 * 1024;
/// Largest packet the generator accepts (and announces in 5.0 CONNECT).
pub const MAX_PACKET: u32 = 4 * 1024 * 1024;

/// A generator error, with enough context to print.
#[derive(Debug)]
pub struct Error(pub String);

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<io::Error> for Error {
    fn from(e: io::Error) -> Error {
        Error(format!("i/o: {e}"))
    }
}

impl From<DecodeError> for Error {
    fn from(e: DecodeError) -> Error {
        Error(format!("malformed packet from broker: {e:?}"))
    }
}

pub type Result<T> = std::result::Result<T, Error>;

/// What a client asks for in CONNECT.
#[derive(Debug, Clone)]
pub struct ConnectOpts {
    pub client_id: String,
    pub version: ProtocolVersion,
    /// Receive Maximum announced (5.0 only); `None` leaves it out (65,535).
    pub receive_maximum: Option<u16>,
    /// Keep Alive in CONNECT, in seconds (0: none).
    pub keep_alive: u16,
}

/// The write half of a connection, shareable between a publisher's writer and reader threads.
#[derive(Clone)]
pub struct Writer {
    pipe: Arc<Pipe>,
    pub version: ProtocolVersion,
}

impl Writer {
    /// Writes `bytes` whole (one `write_all` on the socket; over ws, one binary frame).
    pub fn write_all(&self, bytes: &[u8]) -> Result<()> {
        self.pipe.write_all(bytes)
    }

    /// Encodes and writes one packet.
    pub fn send(&self, packet: &Packet) -> Result<()> {
        let mut buf = Vec::with_capacity(16);
        encode(packet, self.version, &mut buf);
        self.write_all(&buf)
    }
}

/// One connection: the read side with its framing buffer, and a [`Writer`].
pub struct Conn {
    /// The socket's read half (owned by the reading thread; no lock around its reads).
    stream: TcpStream,
    frames: FrameBuffer,
    /// Raw bytes read from the socket when the pipe has TLS or WebSocket layers.
    wire: Vec<u8>,
    pub version: ProtocolVersion,
    /// The broker's Receive Maximum (CONNACK, 5.0), 65,535 when absent or 3.1.1.
    pub broker_receive_maximum: u16,
    writer: Writer,
    /// Bytes queued by [`Conn::queue`], written before the next blocking read.
    out: Vec<u8>,
}

/// An acknowledgement packet with Success and no properties.
pub fn ack(packet_id: u16) -> Ack {
    Ack {
        packet_id,
        reason: ReasonCode::Success,
        properties: Properties::default(),
    }
}

impl Conn {
    /// Connects to `ep` (TLS and WebSocket handshakes included), sends CONNECT and waits
    /// (≤ `timeout` in all) for a successful CONNACK.
    pub fn connect(ep: &Endpoint, opts: &ConnectOpts, timeout: Duration) -> Result<Conn> {
        let deadline = Instant::now() + timeout;
        let (stream, pipe) = transport::open(ep, deadline)?;
        stream.set_read_timeout(Some(POLL))?;
        let wire = if pipe.is_plain() {
            Vec::new()
        } else {
            vec![0; READ_CHUNK]
        };
        let writer = Writer {
            pipe,
            version: opts.version,
        };
        let mut conn = Conn {
            stream,
            frames: FrameBuffer::with_capacity(READ_CHUNK),
            wire,
            version: opts.version,
            broker_receive_maximum: u16::MAX,
            writer,
            out: Vec::new(),
        };
        let mut properties = Properties::default();
        if opts.version.is_v5() {
            properties.receive_maximum = opts.receive_maximum;
            properties.maximum_packet_size = Some(MAX_PACKET);
        }
        let connect = Connect {
            protocol: opts.version,
            bridge: false,
            clean_start: true,
            keep_alive: opts.keep_alive,
            properties,
            client_id: opts.client_id.clone(),
            will: None,
            username: None,
            password: None,
        };
        conn.writer.send(&Packet::Connect(Box::new(connect)))?;
        match conn.wait_packet(deadline)? {
            Packet::ConnAck(ca) if ca.reason == ReasonCode::Success => {
                if let Some(rm) = ca.properties.receive_maximum {
                    conn.broker_receive_maximum = rm.max(1);
                }
                Ok(conn)
            }
            Packet::ConnAck(ca) => Err(Error(format!(
                "CONNACK refused {}: {:?} (0x{:02x})",
                opts.client_id,
                ca.reason,
                ca.reason.code()
            ))),
            other => Err(Error(format!(
                "expected CONNACK, got {:?}",
                other.packet_type()
            ))),
        }
    }

    /// A handle on the write half.
    pub fn writer(&self) -> Writer {
        self.writer.clone()
    }

    /// Subscribes to `filter` at `qos` and waits (≤ `timeout`) for a SUBACK granting it.
    pub fn subscribe(
        &mut self,
        filter: &str,
        qos: QoS,
        packet_id: u16,
        timeout: Duration,
    ) -> Result<()> {
        let deadline = Instant::now() + timeout;
        let sub = Subscribe {
            packet_id,
            properties: Properties::default(),
            filters: vec![TopicSubscription {
                filter: filter.to_owned(),
                options: SubscriptionOptions {
                    qos,
                    ..SubscriptionOptions::default()
                },
            }],
        };
        self.writer.send(&Packet::Subscribe(sub))?;
        match self.wait_packet(deadline)? {
            Packet::SubAck(sa) if sa.packet_id == packet_id => match sa.reasons.first() {
                Some(r) if !r.is_error() && r.code() == qos as u8 => Ok(()),
                Some(r) => Err(Error(format!(
                    "SUBACK for {filter}: {r:?} (0x{:02x}), wanted QoS {}",
                    r.code(),
                    qos as u8
                ))),
                None => Err(Error("SUBACK without a reason code".into())),
            },
            other => Err(Error(format!(
                "expected SUBACK, got {:?}",
                other.packet_type()
            ))),
        }
    }

    /// The next packet before `deadline`, or an error (timeout included).
    pub fn wait_packet(&mut self, deadline: Instant) -> Result<Packet> {
        loop {
            if let Some(p) = self.poll_packet()? {
                return Ok(p);
            }
            if Instant::now() >= deadline {
                return Err(Error("timed out waiting for the broker".into()));
            }
        }
    }

    /// Queues bytes (acknowledgements) to be written before the next blocking read.
    pub fn queue(&mut self, packet: &Packet) {
        encode(packet, self.version, &mut self.out);
    }

    /// Writes what [`Conn::queue`] collected.
    pub fn flush(&mut self) -> Result<()> {
        if !self.out.is_empty() {
            let r = self.writer.write_all(&self.out);
            self.out.clear();
            r?;
        }
        Ok(())
    }

    /// A packet already buffered, else one read of up to [`POLL`] (queued bytes are flushed
    /// first); `Ok(None)` when nothing whole arrived. A closed connection is an error.
    pub fn poll_packet(&mut self) -> Result<Option<Packet>> {
        if let Some(p) = self.frames.next_packet(Some(self.version), MAX_PACKET)? {
            return Ok(Some(p));
        }
        self.flush()?;
        if !self.writer.pipe.is_plain() {
            return match self.stream.read(&mut self.wire) {
                Ok(0) => Err(Error("connection closed by the broker".into())),
                Ok(n) => {
                    let wire = self.wire.get(..n).unwrap_or_default();
                    self.writer.pipe.take_in(wire, &mut self.frames)?;
                    Ok(self.frames.next_packet(Some(self.version), MAX_PACKET)?)
                }
                Err(e) if timed_out(&e) => Ok(None),
                Err(e) => Err(e.into()),
            };
        }
        let buf = self.frames.buffer_mut_for_read(READ_CHUNK);
        match self.stream.read(buf) {
            Ok(0) => Err(Error("connection closed by the broker".into())),
            Ok(n) => {
                self.frames.commit(n);
                Ok(self.frames.next_packet(Some(self.version), MAX_PACKET)?)
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock
                        | io::ErrorKind::TimedOut
                        | io::ErrorKind::Interrupted
                ) =>
            {
                self.frames.commit(0);
                Ok(None)
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Sends DISCONNECT (best effort) and shuts the socket down.
    pub fn disconnect(mut self) {
        let _ = self.flush();
        let _ = self.writer.send(&Packet::Disconnect(Disconnect {
            reason: ReasonCode::Success,
            properties: Properties::default(),
        }));
        self.writer.pipe.close();
        let _ = self.stream.shutdown(Shutdown::Both);
    }
}

fn timed_out(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut | io::ErrorKind::Interrupted
    )
}
