//! The load generator's byte pipe to the broker: plain TCP, TLS (rustls on the project's `ring`
//! provider, [`mqtt5_broker::certs`]), MQTT over WebSockets (tungstenite: subprotocol `mqtt`,
//! path `/mqtt`, binary frames) or both (wss). Owned by each [`crate::client::Conn`]: the
//! connection's reader thread owns the socket's read half, and a shared [`Pipe`] holds the
//! TLS / WebSocket state and the write half for whoever writes (a publisher's writer thread,
//! the reader's acknowledgements).
//!
//! TLS and WebSocket are run sans-I/O: raw bytes are read from the socket with no lock held,
//! then opened (decrypted, unframed) under the state lock; outgoing bytes are sealed under the
//! state lock and written under the socket lock, which is taken before the state lock is let
//! go, so records and frames reach the socket in the order they were made without a blocking
//! write ever holding up the reader's decryption.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use mqtt5_broker::protocol::frame::FrameBuffer;
use rustls::client::Resumption;
use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ClientConnection, RootCertStore};
use tungstenite::client::{ClientRequestBuilder, IntoClientRequest};
use tungstenite::handshake::client::ClientHandshake;
use tungstenite::handshake::HandshakeError;
use tungstenite::protocol::WebSocket;
use tungstenite::Message;

use crate::client::{Error, Result};

/// Socket write timeout: a broker that stops reading fails the run instead of hanging it.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// The WebSocket path and subprotocol of MQTT over WebSockets (MQTT 5.0 §6).
pub const WS_PATH: &str = "/mqtt";
pub const WS_SUBPROTOCOL: &str = "mqtt";

/// Where and how to connect.
#[derive(Clone)]
pub struct Endpoint {
    pub addr: SocketAddr,
    /// TLS with this client configuration (the server name is the address's IP).
    pub tls: Option<Arc<ClientConfig>>,
    /// MQTT over WebSockets (over TLS too when `tls` is set: wss).
    pub ws: bool,
}

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.name(), self.addr)
    }
}

impl Endpoint {
    /// "tcp", "tls", "ws" or "wss" (the broker's own names for its transports).
    pub fn name(&self) -> &'static str {
        match (self.tls.is_some(), self.ws) {
            (false, false) => "tcp",
            (true, false) => "tls",
            (false, true) => "ws",
            (true, true) => "wss",
        }
    }
}

/// A TLS client configuration trusting only the CA certificates in `cafile`. Session
/// resumption is off: every connection makes a full handshake, as separate client processes
/// (and the connections scenario's "handshakes per second") do.
pub fn tls_config(cafile: &Path) -> Result<Arc<ClientConfig>> {
    let mut roots = RootCertStore::empty();
    for cert in mqtt5_broker::certs::read_chain(cafile, "--cafile").map_err(Error)? {
        roots
            .add(cert)
            .map_err(|e| Error(format!("--cafile '{}': {e}", cafile.display())))?;
    }
    let mut config = ClientConfig::builder_with_provider(mqtt5_broker::certs::provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| Error(format!("TLS setup: {e}")))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.resumption = Resumption::disabled();
    Ok(Arc::new(config))
}

/// In-memory stream for tungstenite: reads what the socket brought (`WouldBlock` when all is
/// taken), writes into `out` for the pipe to seal and send.
#[derive(Debug, Default)]
struct Mem {
    inbound: Vec<u8>,
    pos: usize,
    out: Vec<u8>,
}

impl Read for Mem {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let rest = self.inbound.get(self.pos..).unwrap_or_default();
        if rest.is_empty() {
            self.inbound.clear();
            self.pos = 0;
            return Err(io::ErrorKind::WouldBlock.into());
        }
        let n = rest.len().min(buf.len());
        buf[..n].copy_from_slice(&rest[..n]);
        self.pos += n;
        Ok(n)
    }
}

impl Write for Mem {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.out.extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The TLS and WebSocket state of one connection.
#[derive(Default)]
struct Layers {
    tls: Option<ClientConnection>,
    ws: Option<WebSocket<Mem>>,
    /// Plaintext opened from TLS records, reused between reads.
    plain: Vec<u8>,
}

fn tls_err(e: rustls::Error) -> Error {
    Error(format!("TLS: {e}"))
}

fn ws_err(e: tungstenite::Error) -> Error {
    Error(format!("WebSocket: {e}"))
}

impl Layers {
    fn is_plain(&self) -> bool {
        self.tls.is_none() && self.ws.is_none()
    }

    /// Encrypts `data` into `out` (TLS records), or copies it when there is no TLS.
    fn seal(&mut self, mut data: &[u8], out: &mut Vec<u8>) -> Result<()> {
        let Some(tls) = &mut self.tls else {
            out.extend_from_slice(data);
            return Ok(());
        };
        while !data.is_empty() {
            let n = tls.writer().write(data)?;
            data = data.get(n..).unwrap_or_default();
            while tls.wants_write() {
                tls.write_tls(out)?;
            }
            if n == 0 {
                return Err(Error("TLS: the connection takes no more data".into()));
            }
        }
        while tls.wants_write() {
            tls.write_tls(out)?;
        }
        Ok(())
    }

    /// Opens TLS records from `wire` into `self.plain` (appending); without TLS, copies.
    fn unseal(&mut self, mut wire: &[u8]) -> Result<()> {
        let Some(tls) = &mut self.tls else {
            self.plain.extend_from_slice(wire);
            return Ok(());
        };
        while !wire.is_empty() {
            let n = tls.read_tls(&mut wire)?;
            let state = tls.process_new_packets().map_err(tls_err)?;
            let want = state.plaintext_bytes_to_read();
            if want > 0 {
                let start = self.plain.len();
                self.plain.resize(start + want, 0);
                tls.reader().read_exact(&mut self.plain[start..])?;
            }
            if n == 0 {
                break;
            }
        }
        Ok(())
    }

    /// Takes bytes the socket brought and puts the MQTT bytes in them into `frames`.
    fn open(&mut self, wire: &[u8], frames: &mut FrameBuffer) -> Result<()> {
        self.plain.clear();
        self.unseal(wire)?;
        let Some(ws) = &mut self.ws else {
            frames.extend(&self.plain);
            return Ok(());
        };
        ws.get_mut().inbound.extend_from_slice(&self.plain);
        loop {
            match ws.read() {
                Ok(Message::Binary(b)) => frames.extend(&b),
                Ok(Message::Text(_)) => {
                    return Err(Error(
                        "WebSocket: text frame from the broker (MQTT needs binary)".into(),
                    ))
                }
                Ok(Message::Close(c)) => {
                    return Err(Error(format!(
                        "WebSocket closed by the broker: {}",
                        c.map_or_else(
                            || "no status".to_owned(),
                            |c| format!("{} {}", c.code, c.reason)
                        )
                    )))
                }
                // Pings are answered by tungstenite (the pong leaves with `pending`).
                Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_)) => {}
                Err(tungstenite::Error::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => return Err(ws_err(e)),
            }
        }
        Ok(())
    }

    /// Wire bytes the layers want to send on their own (pongs, TLS alerts or key updates).
    fn pending(&mut self, out: &mut Vec<u8>) -> Result<()> {
        if let Some(ws) = &mut self.ws {
            match ws.flush() {
                Ok(()) => {}
                Err(tungstenite::Error::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(ws_err(e)),
            }
            let frames = std::mem::take(&mut ws.get_mut().out);
            self.seal(&frames, out)?;
        }
        if let Some(tls) = &mut self.tls {
            while tls.wants_write() {
                tls.write_tls(out)?;
            }
        }
        Ok(())
    }

    /// MQTT bytes → wire bytes: one binary WebSocket frame (when ws), in TLS records (when tls).
    fn encode(&mut self, bytes: &[u8], out: &mut Vec<u8>) -> Result<()> {
        match &mut self.ws {
            Some(ws) => {
                ws.send(Message::binary(bytes.to_vec())).map_err(ws_err)?;
                let frames = std::mem::take(&mut ws.get_mut().out);
                self.seal(&frames, out)
            }
            None => self.seal(bytes, out),
        }
    }
}

/// The shared half of a connection: its layers and the socket's write half.
pub struct Pipe {
    layers: Mutex<Layers>,
    sock: Mutex<TcpStream>,
    plain: bool,
}

fn lock<T>(m: &Mutex<T>) -> Result<MutexGuard<'_, T>> {
    m.lock().map_err(|_| Error("pipe lock poisoned".into()))
}

impl Pipe {
    /// Whether bytes go to the socket as they are (no TLS, no WebSocket).
    pub fn is_plain(&self) -> bool {
        self.plain
    }

    /// Writes MQTT bytes (sealed and framed as the transport needs), whole.
    pub fn write_all(&self, bytes: &[u8]) -> Result<()> {
        if bytes.is_empty() {
            return Ok(());
        }
        if self.plain {
            lock(&self.sock)?.write_all(bytes)?;
            return Ok(());
        }
        let mut layers = lock(&self.layers)?;
        let mut wire = Vec::with_capacity(bytes.len() + 64);
        layers.encode(bytes, &mut wire)?;
        let mut sock = lock(&self.sock)?;
        drop(layers);
        sock.write_all(&wire)?;
        Ok(())
    }

    /// Takes `wire` bytes read from the socket, appends the MQTT bytes in them to `frames` and
    /// sends whatever the layers answer (pongs, TLS messages).
    pub fn take_in(&self, wire: &[u8], frames: &mut FrameBuffer) -> Result<()> {
        let mut layers = lock(&self.layers)?;
        layers.open(wire, frames)?;
        let mut out = Vec::new();
        layers.pending(&mut out)?;
        if !out.is_empty() {
            let mut sock = lock(&self.sock)?;
            drop(layers);
            sock.write_all(&out)?;
        }
        Ok(())
    }

    /// Best effort: a WebSocket close frame (normal closure) and a TLS close_notify.
    pub fn close(&self) {
        let Ok(mut layers) = lock(&self.layers) else {
            return;
        };
        if layers.is_plain() {
            return;
        }
        if let Some(ws) = &mut layers.ws {
            let _ = ws.close(None);
        }
        let mut out = Vec::new();
        let _ = layers.pending(&mut out);
        if let Some(tls) = &mut layers.tls {
            tls.send_close_notify();
            while tls.wants_write() {
                if tls.write_tls(&mut out).is_err() {
                    break;
                }
            }
        }
        if let Ok(mut sock) = lock(&self.sock) {
            let _ = sock.write_all(&out);
        }
    }
}

fn timed_out(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut | io::ErrorKind::Interrupted
    )
}

/// Sets the read timeout to what is left before `deadline` (an error once it has passed).
fn wait_until(stream: &TcpStream, deadline: Instant, what: &str) -> Result<()> {
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        return Err(Error(format!("{what} timed out")));
    }
    stream.set_read_timeout(Some(left.max(Duration::from_millis(1))))?;
    Ok(())
}

/// Connects to `ep` and makes the TLS and WebSocket handshakes before `deadline`. Returns the
/// socket (for reading; its read timeout is left to the caller) and the shared pipe.
pub fn open(ep: &Endpoint, deadline: Instant) -> Result<(TcpStream, Arc<Pipe>)> {
    let addr = ep.addr;
    let left = deadline.saturating_duration_since(Instant::now());
    let mut stream = TcpStream::connect_timeout(&addr, left.max(Duration::from_millis(1)))
        .map_err(|e| Error(format!("connect to {addr}: {e}")))?;
    stream.set_nodelay(true)?;
    stream.set_write_timeout(Some(WRITE_TIMEOUT))?;
    let mut layers = Layers::default();
    if let Some(config) = &ep.tls {
        let name = ServerName::IpAddress(addr.ip().into());
        let mut tls = ClientConnection::new(config.clone(), name).map_err(tls_err)?;
        while tls.is_handshaking() {
            wait_until(&stream, deadline, "TLS handshake")?;
            match tls.complete_io(&mut stream) {
                Ok(_) => {}
                Err(e) if timed_out(&e) => {}
                Err(e) => return Err(Error(format!("TLS handshake with {addr}: {e}"))),
            }
        }
        layers.tls = Some(tls);
    }
    if ep.ws {
        let scheme = if ep.tls.is_some() { "wss" } else { "ws" };
        let uri = format!("{scheme}://{addr}{WS_PATH}")
            .parse()
            .map_err(|e| Error(format!("WebSocket URI: {e}")))?;
        let request = ClientRequestBuilder::new(uri)
            .with_sub_protocol(WS_SUBPROTOCOL)
            .into_client_request()
            .map_err(ws_err)?;
        let mut round = ClientHandshake::start(Mem::default(), request, None)
            .map_err(ws_err)?
            .handshake();
        let mut buf = vec![0u8; 16 * 1024];
        let ws = loop {
            let mut mid = match round {
                Ok((ws, _response)) => break ws,
                Err(HandshakeError::Failure(e)) => {
                    return Err(Error(format!("WebSocket handshake with {addr}: {e}")))
                }
                Err(HandshakeError::Interrupted(mid)) => mid,
            };
            let mem = mid.get_mut().get_mut();
            let request_bytes = std::mem::take(&mut mem.out);
            if !request_bytes.is_empty() {
                let mut wire = Vec::new();
                layers.seal(&request_bytes, &mut wire)?;
                stream.write_all(&wire)?;
            }
            wait_until(&stream, deadline, "WebSocket handshake")?;
            match stream.read(&mut buf) {
                Ok(0) => {
                    return Err(Error(format!(
                        "WebSocket handshake with {addr}: connection closed"
                    )))
                }
                Ok(n) => {
                    layers.plain.clear();
                    layers.unseal(&buf[..n])?;
                    let plain = std::mem::take(&mut layers.plain);
                    mid.get_mut().get_mut().inbound.extend_from_slice(&plain);
                    layers.plain = plain;
                }
                Err(e) if timed_out(&e) => {}
                Err(e) => return Err(e.into()),
            }
            round = mid.handshake();
        };
        layers.ws = Some(ws);
    }
    let plain = layers.is_plain();
    let pipe = Pipe {
        layers: Mutex::new(layers),
        sock: Mutex::new(stream.try_clone()?),
        plain,
    };
    Ok((stream, Arc::new(pipe)))
}
