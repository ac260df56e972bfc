//! The MQTT listener: a blocking `std::net::TcpListener` on the `acceptor` thread, one
//! `client-<id>` thread per accepted socket. A socket enters the pending pool ([`pending`]),
//! bounded by `max_pending_connections` and `max_pending_per_address`, until its CONNECT
//! arrives; only an accepted CONNECT takes one of the `max_clients` places (its refusal over
//! the limit is answered on the socket's own thread, see `handle::connect`).
//!
//! [`pending`]: super::pending
//!
//! The control page can stop and start the listener while the process runs. Stop closes the
//! listener (woken from `accept()` by a connection to itself), then disconnects every client with
//! DISCONNECT 0x8B (5.0) and waits, bounded, for their threads to finish.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream};
use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use super::connection;
use super::Broker;
use crate::protocol::ReasonCode;

/// Stack of a reader thread: decoding and routing are shallow.
const READER_STACK: usize = 256 * 1024;

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
}

impl Server {
    pub fn new(broker: Arc<Broker>) -> Arc<Server> {
        Arc::new(Server {
            broker,
            running: Mutex::new(None),
            last_addr: Mutex::new(None),
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
        let flag = stop.clone();
        let thread = thread::Builder::new()
            .name("acceptor".into())
            .spawn(move || accept_loop(listener, broker, flag))?;
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
        while (self.broker.active_connections.load(Ordering::Acquire) > 0
            || self.broker.pending_count() > 0)
            && Instant::now() < deadline
        {
            thread::sleep(Duration::from_millis(10));
        }
        log::info!("MQTT listener on {} stopped", r.addr);
    }
}

fn accept_loop(listener: TcpListener, broker: Arc<Broker>, stop: Arc<AtomicBool>) {
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
        let stream = Arc::new(stream);
        let conn_id = broker.next_conn_id();
        // Admitted before its thread starts, so that the thread's leaving always follows.
        if !broker.admit_pending(conn_id, stream.clone(), peer) {
            // Closed (dropped) unread: the pending pool is full of sockets being served.
            continue;
        }
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
            broker.leave_pending(conn_id);
            log::error!("cannot start a thread for {peer}: {e}");
        }
    }
}
