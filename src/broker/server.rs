//! The MQTT listeners: blocking `std::net::TcpListener`s, each on its own acceptor thread: one
//! per address of `listen` (plain TCP, `acceptor`), of `tls_listen` (MQTT over TLS,
//! `acceptor-tls`: each socket gets a rustls `ServerConnection` in its [`Pipe`]; the handshake
//! happens on the socket's own thread, as it reads, within `connect_timeout`), of `ws_listen`
//! and `wss_listen` (MQTT over WebSockets, plain or over TLS with the TLS listeners' certificate
//! settings, `acceptor-ws` / `acceptor-wss`; the HTTP upgrade too happens on the socket's own
//! thread); one `client-<id>` thread per accepted socket, whichever listener took it (a thread
//! whose socket ended parks for the next one: [`readers`]). A socket enters the pending pool
//! ([`pending`]),
//! bounded by `max_pending_connections` and `max_pending_per_address`, until its CONNECT
//! arrives; only an accepted CONNECT takes one of the `max_clients` places (its refusal over
//! the limit is answered on the socket's own thread, see `handle::connect`).
//!
//! [`pending`]: super::pending
//! [`readers`]: super::readers
//!
//! The control page can stop and start the listeners while the process runs. Stop closes every
//! listener (each woken from `accept()` by a connection to itself), then disconnects every
//! client with DISCONNECT 0x8B (5.0) and waits, bounded, for their threads to finish. Start
//! binds them all again, on the addresses bound before (so port 0 keeps its port).

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

/// One listener while running: its kind, bound address and acceptor thread.
struct Bound {
    transport: Transport,
    addr: SocketAddr,
    thread: JoinHandle<()>,
}

struct Running {
    stop: Arc<AtomicBool>,
    /// The plain listeners first (the first is [`Server::addr`]), then TLS, ws and wss, each
    /// kind in its setting's order.
    listeners: Vec<Bound>,
}

pub struct Server {
    broker: Arc<Broker>,
    /// The TLS and wss listeners' setup (`tls_listen`, `wss_listen`), made once at start.
    tls: Option<Arc<TlsContext>>,
    running: Mutex<Option<Running>>,
    /// The addresses bound last time, in the order of [`Server::wanted`], so that a restart
    /// with port 0 keeps them.
    last_addr: Mutex<Vec<SocketAddr>>,
}

impl Server {
    /// The plain listeners only.
    pub fn new(broker: Arc<Broker>) -> Arc<Server> {
        Self::with_tls(broker, None)
    }

    /// The plain listeners and, with `tls`, the TLS listeners (and the wss ones).
    pub fn with_tls(broker: Arc<Broker>, tls: Option<Arc<TlsContext>>) -> Arc<Server> {
        Arc::new(Server {
            broker,
            tls,
            running: Mutex::new(None),
            last_addr: Mutex::new(Vec::new()),
        })
    }

    /// The bound address of the first `transport` listener while running.
    pub fn addr_of(&self, transport: Transport) -> Option<SocketAddr> {
        let running = self.running.lock();
        running
            .as_ref()?
            .listeners
            .iter()
            .find(|l| l.transport == transport)
            .map(|l| l.addr)
    }

    /// Every listener's kind and bound address while running (none when stopped): plain
    /// first, then TLS, ws and wss.
    pub fn listeners(&self) -> Vec<(Transport, SocketAddr)> {
        let running = self.running.lock();
        running.as_ref().map_or_else(Vec::new, |r| {
            r.listeners.iter().map(|l| (l.transport, l.addr)).collect()
        })
    }

    /// The first TLS listener's bound address while running.
    pub fn tls_addr(&self) -> Option<SocketAddr> {
        self.addr_of(Transport::Tls)
    }

    pub fn broker(&self) -> &Arc<Broker> {
        &self.broker
    }

    /// The first plain listener's bound address while running.
    pub fn addr(&self) -> Option<SocketAddr> {
        self.addr_of(Transport::Tcp)
    }

    /// The listeners the settings ask for, in order, with the TLS context of the TLS ones (a
    /// TLS or wss address without a context, as with [`Server::new`], is left out).
    fn wanted(&self) -> Vec<(Transport, SocketAddr, Option<Arc<TlsContext>>)> {
        let cfg = self.broker.config();
        let kinds = [
            (Transport::Tcp, &cfg.listen),
            (Transport::Tls, &cfg.tls_listen),
            (Transport::Ws, &cfg.ws_listen),
            (Transport::Wss, &cfg.wss_listen),
        ];
        let mut wanted = Vec::new();
        for (transport, addrs) in kinds {
            let tls = match transport {
                Transport::Tls | Transport::Wss => match &self.tls {
                    Some(ctx) => Some(ctx.clone()),
                    None => continue,
                },
                Transport::Tcp | Transport::Ws => None,
            };
            wanted.extend(addrs.iter().map(|a| (transport, *a, tls.clone())));
        }
        wanted
    }

    /// Binds every listener and starts accepting; a no-op when already running. Returns the
    /// first plain listener's address. Logs `MQTT listening on ADDR:PORT` for each plain one,
    /// with the port actually bound, and `MQTT listening on ADDR:PORT (tls)` (`ws`, `wss`) for
    /// the others. If one cannot bind, none runs; the error names it.
    pub fn start(&self) -> io::Result<SocketAddr> {
        let mut running = self.running.lock();
        if let Some(addr) = running
            .as_ref()
            .and_then(|r| r.listeners.first())
            .map(|l| l.addr)
        {
            return Ok(addr);
        }
        let wanted = self.wanted();
        let last = self.last_addr.lock().clone();
        let mut bound = Vec::with_capacity(wanted.len());
        for (i, (transport, listen, tls)) in wanted.into_iter().enumerate() {
            // The same settings give the same list, so index i is this listener last time.
            let at = last.get(i).copied().unwrap_or(listen);
            let l = TcpListener::bind(at).map_err(|e| {
                let what = match transport {
                    Transport::Tcp => "MQTT".to_string(),
                    t => t.name().to_uppercase(),
                };
                io::Error::new(e.kind(), format!("{what} listener on {listen}: {e}"))
            })?;
            let a = l.local_addr()?;
            bound.push((transport, l, a, tls));
        }
        *self.last_addr.lock() = bound.iter().map(|(_, _, a, _)| *a).collect();
        let stop = Arc::new(AtomicBool::new(false));
        let mut listeners: Vec<Bound> = Vec::with_capacity(bound.len());
        for (transport, l, addr, tls) in bound {
            let broker = self.broker.clone();
            let flag = stop.clone();
            let name = match transport {
                Transport::Tcp => "acceptor".to_string(),
                t => format!("acceptor-{}", t.name()),
            };
            let spawned = thread::Builder::new()
                .name(name)
                .spawn(move || accept_loop(l, broker, flag, transport, tls));
            match spawned {
                Ok(thread) => {
                    match transport {
                        Transport::Tcp => log::info!("MQTT listening on {addr}"),
                        t => log::info!("MQTT listening on {addr} ({})", t.name()),
                    }
                    listeners.push(Bound {
                        transport,
                        addr,
                        thread,
                    });
                }
                Err(e) => {
                    for l in listeners {
                        stop_acceptor(&stop, l.addr, l.thread);
                    }
                    return Err(e);
                }
            }
        }
        let Some(first) = listeners.first().map(|l| l.addr) else {
            // `listen` is never empty (the settings refuse `off` for it).
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "no MQTT listener",
            ));
        };
        *running = Some(Running { stop, listeners });
        Ok(first)
    }

    /// Stops accepting on every listener and disconnects every client; the process keeps
    /// running.
    pub fn stop(&self) {
        let Some(r) = self.running.lock().take() else {
            return;
        };
        let addrs: Vec<String> = r.listeners.iter().map(|l| l.addr.to_string()).collect();
        for l in r.listeners {
            stop_acceptor(&r.stop, l.addr, l.thread);
        }
        self.broker.disconnect_all(ReasonCode::ServerShuttingDown);
        let deadline = Instant::now() + Duration::from_secs(5);
        while (self.broker.active_connections.load(Ordering::Acquire) > 0
            || self.broker.pending_count() > 0)
            && Instant::now() < deadline
        {
            thread::sleep(Duration::from_millis(10));
        }
        log::info!("MQTT listener on {} stopped", addrs.join(", "));
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
            Transport::Ws | Transport::Wss => {
                // Per socket: a config reload may change max_packet_size.
                let max_frame = u64::from(broker.config().max_packet_size) + super::ws::FRAME_SLACK;
                Pipe::ws(pipe, max_frame)
            }
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
