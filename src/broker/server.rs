//! The MQTT listener: a blocking `std::net::TcpListener` on the `acceptor` thread, one
//! `client-<id>` thread per accepted socket, at most `max_clients` at once.
//!
//! The control page can stop and start the listener while the process runs. Stop closes the
//! listener (woken from `accept()` by a connection to itself), then disconnects every client with
//! DISCONNECT 0x8B (5.0) and waits, bounded, for their threads to finish.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream};
use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use super::connection::{self, Reader};
use super::error::ConnError;
use super::handle::connect::connack_refusal;
use super::Broker;
use crate::protocol::{Packet, ReasonCode};

/// Stack of a reader thread: decoding and routing are shallow.
const READER_STACK: usize = 256 * 1024;
/// How many over-limit connections may be answered at once; beyond that they are just closed.
const MAX_REJECTING: usize = 16;
/// How long an over-limit connection has to send its CONNECT before it is closed unanswered.
const REJECT_WAIT: Duration = Duration::from_secs(2);

struct Running {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: JoinHandle<()>,
}

pub struct Server {
    broker: Arc<Broker>,
    running: Mutex<Option<Running>>,
    /// The address bound last time, so that a restart with port 0 keeps its port.
    last_addr: Mutex<Option<SocketAddr>>,
    rejecting: Arc<AtomicUsize>,
}

impl Server {
    pub fn new(broker: Arc<Broker>) -> Arc<Server> {
        Arc::new(Server {
            broker,
            running: Mutex::new(None),
            last_addr: Mutex::new(None),
            rejecting: Arc::new(AtomicUsize::new(0)),
        })
    }

    pub fn broker(&self) -> &Arc<Broker> {
        &self.broker
    }

    /// The bound address while running.
    pub fn addr(&self) -> Option<SocketAddr> {
        self.running.lock().as_ref().map(|r| r.addr)
    }

    /// Binds the listener and starts accepting; a no-op when already running. Logs
    /// `MQTT listening on ADDR:PORT` with the port actually bound.
    pub fn start(&self) -> io::Result<SocketAddr> {
        let mut running = self.running.lock();
        if let Some(r) = running.as_ref() {
            return Ok(r.addr);
        }
        let want = (*self.last_addr.lock()).unwrap_or(self.broker.config.listen);
        let listener = TcpListener::bind(want)?;
        let addr = listener.local_addr()?;
        *self.last_addr.lock() = Some(addr);
        let stop = Arc::new(AtomicBool::new(false));
        let broker = self.broker.clone();
        let rejecting = self.rejecting.clone();
        let flag = stop.clone();
        let thread = thread::Builder::new()
            .name("acceptor".into())
            .spawn(move || accept_loop(listener, broker, flag, rejecting))?;
        log::info!("MQTT listening on {addr}");
        *running = Some(Running { addr, stop, thread });
        Ok(addr)
    }

    /// Stops accepting and disconnects every client; the process keeps running.
    pub fn stop(&self) {
        let Some(r) = self.running.lock().take() else {
            return;
        };
        r.stop.store(true, Ordering::SeqCst);
        // Wake accept(): connect to ourselves (the listener may be bound to 0.0.0.0).
        let wake = match r.addr.ip() {
            IpAddr::V4(ip) if ip.is_unspecified() => {
                SocketAddr::new(Ipv4Addr::LOCALHOST.into(), r.addr.port())
            }
            IpAddr::V6(ip) if ip.is_unspecified() => {
                SocketAddr::new(Ipv6Addr::LOCALHOST.into(), r.addr.port())
            }
            _ => r.addr,
        };
        let _ = TcpStream::connect_timeout(&wake, Duration::from_secs(1));
        if r.thread.join().is_err() {
            log::error!("acceptor thread panicked");
        }
        self.broker.disconnect_all(ReasonCode::ServerShuttingDown);
        let deadline = Instant::now() + Duration::from_secs(5);
        while self.broker.active_connections.load(Ordering::Acquire) > 0
            && Instant::now() < deadline
        {
            thread::sleep(Duration::from_millis(10));
        }
        log::info!("MQTT listener on {} stopped", r.addr);
    }
}

fn accept_loop(
    listener: TcpListener,
    broker: Arc<Broker>,
    stop: Arc<AtomicBool>,
    rejecting: Arc<AtomicUsize>,
) {
    for conn in listener.incoming() {
        if stop.load(Ordering::SeqCst) {
            break;
        }
        let stream = match conn {
            Ok(s) => s,
            Err(e) => {
                // EMFILE and friends: back off instead of spinning.
                log::warn!("accept failed: {e}");
                thread::sleep(Duration::from_millis(50));
                continue;
            }
        };
        let Ok(peer) = stream.peer_addr() else {
            continue;
        };
        let active = broker.active_connections.fetch_add(1, Ordering::AcqRel);
        if active >= broker.config.max_clients {
            broker.active_connections.fetch_sub(1, Ordering::AcqRel);
            reject(stream, peer, &rejecting, broker.config.max_clients);
            continue;
        }
        let conn_id = broker.next_conn_id();
        let b = broker.clone();
        let spawned = thread::Builder::new()
            .name(format!("client-{conn_id}"))
            .stack_size(READER_STACK)
            .spawn(move || {
                let result = panic::catch_unwind(AssertUnwindSafe(|| {
                    connection::run(b, stream, peer, conn_id)
                }));
                if result.is_err() {
                    log::error!(
                        "connection {conn_id} from {peer}: handler panicked; connection dropped"
                    );
                }
            });
        if let Err(e) = spawned {
            broker.active_connections.fetch_sub(1, Ordering::AcqRel);
            log::error!("cannot start a thread for {peer}: {e}");
        }
    }
}

/// Answers a connection over `max_clients` with CONNACK 0x97 Quota exceeded (5.0) or 0x03 Server
/// unavailable (3.1.1) once its CONNECT arrives, then closes it.
fn reject(stream: TcpStream, peer: SocketAddr, rejecting: &Arc<AtomicUsize>, max: usize) {
    if rejecting.fetch_add(1, Ordering::AcqRel) >= MAX_REJECTING {
        rejecting.fetch_sub(1, Ordering::AcqRel);
        log::warn!(
            "connection from {peer} closed: max_clients ({max}) reached; \
             --max-clients raises it"
        );
        return;
    }
    let counter = rejecting.clone();
    let spawned = thread::Builder::new()
        .name("reject".into())
        .stack_size(READER_STACK)
        .spawn(move || {
            let mut reader = Reader::new(Arc::new(stream), 512, 64 * 1024);
            let deadline = Instant::now() + REJECT_WAIT;
            match reader.next_packet(Some(deadline), || ConnError::ClosedByServer) {
                Ok((Packet::Connect(c), _)) => {
                    log::warn!(
                        "client {:?} from {peer} (MQTT {}) refused: max_clients ({max}) \
                         reached; --max-clients raises it",
                        c.client_id,
                        c.protocol.name()
                    );
                    reader.write_and_close(
                        Some(&connack_refusal(ReasonCode::QuotaExceeded)),
                        c.protocol,
                    );
                }
                _ => reader.write_and_close(None, crate::protocol::ProtocolVersion::V5),
            }
            counter.fetch_sub(1, Ordering::AcqRel);
        });
    if spawned.is_err() {
        rejecting.fetch_sub(1, Ordering::AcqRel);
    }
}
