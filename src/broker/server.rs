//! The MQTT listeners: a blocking `std::net::TcpListener` on the `acceptor` thread (plain TCP)
//! and, with `tls_listen`, another on the `acceptor-tls` thread (MQTT over TLS: each socket gets
//! a rustls `ServerConnection` in its [`Pipe`]; the handshake happens on the socket's own
//! thread, as it reads, within `connect_timeout`); with `ws_listen` / `wss_listen`, the
//! `acceptor-ws` / `acceptor-wss` threads (MQTT over WebSockets, plain or over TLS with the TLS
//! listener's certificate settings; the HTTP upgrade too happens on the socket's own thread);
//! one `client-<id>` thread per accepted socket, whichever listener took it (a thread whose
//! socket ended parks for the next one: [`readers`]). One listener of
//! each kind for now. A socket enters the pending pool ([`pending`]),
//! bounded by `max_pending_connections` and `max_pending_per_address`, until its CONNECT
//! arrives; only an accepted CONNECT takes one of the `max_clients` places (its refusal over
//! the limit is answered on the socket's own thread, see `handle::connect`).
//!
//! [`pending`]: super::pending
//! [`readers`]: super::readers
//!
//! The control page can stop and start the listener while the process runs. Stop closes the
//! listener (woken from `accept()` by a connection to itself), then disconnects every client with
//! DISCONNECT 0x8B (5.0) and waits, bounded, for their threads to finish.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use super::pipe::Pipe;
use super::tls::TlsContext;
use super::Broker;
use crate::protocol::ReasonCode;

/// The kind of an MQTT listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Tcp,
    Tls,
    Ws,
    Wss,
}

impl Transport {
    /// As in the `MQTT listening on ADDR:PORT (tls)` log line.
    pub fn name(self) -> &'static str {
        match self {
            Transport::Tcp => "tcp",
            Transport::Tls => "tls",
            Transport::Ws => "ws",
            Transport::Wss => "wss",
        }
    }
}

/// The plain listener's address and the others', as bound last time.
type BoundBefore = (Option<SocketAddr>, Vec<(Transport, SocketAddr)>);

struct Running {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: JoinHandle<()>,
    /// The TLS, ws and wss listeners' addresses and acceptor threads, when there are any.
    extra: Vec<(Transport, SocketAddr, JoinHandle<()>)>,
}

pub struct Server {
    broker: Arc<Broker>,
    /// The TLS and wss listeners' setup (`tls_listen`, `wss_listen`), made once at start.
    tls: Option<Arc<TlsContext>>,
    running: Mutex<Option<Running>>,
    /// The addresses bound last time (plain, then the others), so that a restart with port 0
    /// keeps them.
    last_addr: Mutex<BoundBefore>,
}

impl Server {
    /// The plain listener only.
    pub fn new(broker: Arc<Broker>) -> Arc<Server> {
        Self::with_tls(broker, None)
    }

    /// The plain listener and, with `tls`, the TLS listener (and the wss one).
    pub fn with_tls(broker: Arc<Broker>, tls: Option<Arc<TlsContext>>) -> Arc<Server> {
        Arc::new(Server {
            broker,
            tls,
            running: Mutex::new(None),
            last_addr: Mutex::new((None, Vec::new())),
        })
    }

    /// The bound address of the `transport` listener while running.
    pub fn addr_of(&self, transport: Transport) -> Option<SocketAddr> {
        let running = self.running.lock();
        let r = running.as_ref()?;
        if transport == Transport::Tcp {
            return Some(r.addr);
        }
        r.extra
            .iter()
            .find(|(t, _, _)| *t == transport)
            .map(|(_, a, _)| *a)
    }

    /// The TLS listener's bound address while running.
    pub fn tls_addr(&self) -> Option<SocketAddr> {
        self.addr_of(Transport::Tls)
    }

    pub fn broker(&self) -> &Arc<Broker> {
        &self.broker
    }

    /// The bound address while running.
    pub fn addr(&self) -> Option<SocketAddr> {
        self.running.lock().as_ref().map(|r| r.addr)
    }

    /// Binds the listeners and starts accepting; a no-op when already running. Logs
    /// `MQTT listening on ADDR:PORT` with the port actually bound, and for the others
    /// `MQTT listening on ADDR:PORT (tls)` (`ws`, `wss`).
    pub fn start(&self) -> io::Result<SocketAddr> {
        let mut running = self.running.lock();
        if let Some(r) = running.as_ref() {
            return Ok(r.addr);
        }
        let (last_plain, last_extra) = self.last_addr.lock().clone();
        let listener = TcpListener::bind(last_plain.unwrap_or(self.broker.config.listen))?;
        let addr = listener.local_addr()?;
        let cfg = &self.broker.config;
        let wanted = [
            (Transport::Tls, self.tls.as_ref().and_then(|c| c.listen)),
            (Transport::Ws, cfg.ws_listen),
            (Transport::Wss, cfg.wss_listen),
        ];
        let mut listeners = Vec::new();
        for (transport, listen) in wanted {
            let Some(listen) = listen else { continue };
            let tls = match transport {
                Transport::Tls | Transport::Wss => match &self.tls {
                    Some(ctx) => Some(ctx.clone()),
                    None => continue,
                },
                _ => None,
            };
            let at = last_extra
                .iter()
                .find(|(t, _)| *t == transport)
                .map_or(listen, |(_, a)| *a);
            let l = TcpListener::bind(at).map_err(|e| {
                let what = transport.name().to_uppercase();
                io::Error::new(e.kind(), format!("{what} listener on {listen}: {e}"))
            })?;
            let a = l.local_addr()?;
            listeners.push((transport, l, a, tls));
        }
        *self.last_addr.lock() = (
            Some(addr),
            listeners.iter().map(|(t, _, a, _)| (*t, *a)).collect(),
        );
        let stop = Arc::new(AtomicBool::new(false));
        let broker = self.broker.clone();
        let flag = stop.clone();
        let thread = thread::Builder::new()
            .name("acceptor".into())
            .spawn(move || accept_loop(listener, broker, flag, Transport::Tcp, None))?;
        log::info!("MQTT listening on {addr}");
        let mut extra = Vec::new();
        for (transport, l, a, tls) in listeners {
            let broker = self.broker.clone();
            let flag = stop.clone();
            let spawned = thread::Builder::new()
                .name(format!("acceptor-{}", transport.name()))
                .spawn(move || accept_loop(l, broker, flag, transport, tls));
            match spawned {
                Ok(t) => {
                    log::info!("MQTT listening on {a} ({})", transport.name());
                    extra.push((transport, a, t));
                }
                Err(e) => {
                    stop_acceptor(&stop, addr, thread);
                    for (_, a, t) in extra {
                        stop_acceptor(&stop, a, t);
                    }
                    return Err(e);
                }
            }
        }
        *running = Some(Running {
            addr,
            stop,
            thread,
            extra,
        });
        Ok(addr)
    }

    /// Stops accepting and disconnects every client; the process keeps running.
    pub fn stop(&self) {
        let Some(r) = self.running.lock().take() else {
            return;
        };
        stop_acceptor(&r.stop, r.addr, r.thread);
        for (_, addr, thread) in r.extra {
            stop_acceptor(&r.stop, addr, thread);
        }
        self.broker.disconnect_all(ReasonCode::ServerShuttingDown);
        let deadline = Instant::now() + Duration::from_secs(5);
        while (self.broker.active_connections.load(Ordering::Acquire) > 0
            || self.broker.pending_count() > 0)
            && Instant::now() < deadline
        {
            thread::sleep(Duration::from_millis(10));
        }
        log::info!("MQTT listener on {} stopped", r.addr);
    }
}

/// Stops the acceptor thread listening on `addr`: sets `stop`, wakes its `accept()` by a
/// connection to itself (the listener may be bound to 0.0.0.0), and joins it.
fn stop_acceptor(stop: &AtomicBool, addr: SocketAddr, thread: JoinHandle<()>) {
    stop.store(true, Ordering::SeqCst);
    let wake = match addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => {
            SocketAddr::new(Ipv4Addr::LOCALHOST.into(), addr.port())
        }
        IpAddr::V6(ip) if ip.is_unspecified() => {
            SocketAddr::new(Ipv6Addr::LOCALHOST.into(), addr.port())
        }
        _ => addr,
    };
    let _ = TcpStream::connect_timeout(&wake, Duration::from_secs(1));
    if thread.join().is_err() {
        log::error!("acceptor thread panicked");
    }
}

/// Accepts sockets until `stop`; each gets the pipe of `transport` (a TLS handshake and a
/// WebSocket upgrade run on the socket's own thread, as it reads).
fn accept_loop(
    listener: TcpListener,
    broker: Arc<Broker>,
    stop: Arc<AtomicBool>,
    transport: Transport,
    tls: Option<Arc<TlsContext>>,
) {
    let max_frame = u64::from(broker.config.max_packet_size) + super::ws::FRAME_SLACK;
    loop {
        // accept() gives the peer's address with the socket: no getpeername per connection.
        let conn = listener.accept();
        if stop.load(Ordering::SeqCst) {
            break;
        }
        let (stream, peer) = match conn {
            Ok(s) => s,
            Err(e) => {
                // EMFILE and friends: back off instead of spinning.
                log::warn!("accept failed: {e}");
                thread::sleep(Duration::from_millis(50));
                continue;
            }
        };
        let pipe = match &tls {
            None => Pipe::plain(stream),
            Some(ctx) => match rustls::ServerConnection::new(ctx.server_config()) {
                Ok(conn) => Pipe::tls(stream, conn),
                Err(e) => {
                    log::error!("TLS connection from {peer} dropped: {e}");
                    continue;
                }
            },
        };
        let pipe = match transport {
            Transport::Ws | Transport::Wss => Pipe::ws(pipe, max_frame),
            Transport::Tcp | Transport::Tls => pipe,
        };
        let stream = Arc::new(pipe);
        let conn_id = broker.next_conn_id();
        // Admitted before its thread starts, so that the thread's leaving always follows.
        if !broker.admit_pending(conn_id, stream.clone(), peer) {
            // Closed (dropped) unread: the pending pool is full of sockets being served.
            continue;
        }
        if let Err(e) = broker.readers.serve(broker.clone(), stream, peer, conn_id) {
            broker.leave_pending(conn_id);
            log::error!("cannot start a thread for {peer}: {e}");
        }
    }
}
