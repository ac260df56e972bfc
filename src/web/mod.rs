//! The control page and its JSON API on `web_listen`: the `web-accept` thread and a short-lived
//! `web-conn` thread per HTTP connection ([`conn`]: every connection bounded in time, in number
//! and per address), and the `web` thread that answers the requests they hand over.
//!
//! The `web` thread owns everything else here: it takes requests one at a time
//! ([`routes::handle`]) and, between requests, samples the broker's counters once a second for
//! the live rates ([`metrics::Rates`]). It reads the [`Broker`](crate::broker::Broker) and acts
//! through the same public calls as the rest of the broker ([`Server::start`]/[`Server::stop`],
//! `disconnect_conn`, `publish_durable`, the store's user/ACL/ban methods). A handler that
//! panics costs only its request (500).
//!
//! - [`conn`]: the sockets: accepting, reading a request, writing the answer, the bounds
//! - [`http`]: request/response types and their wire format, so handlers need no socket
//! - [`routes`]: every URL and its handler
//! - [`api`]: the JSON shapes (stable names, see the README)
//! - [`auth`]: the admin login: sessions, CSRF, HTTP Basic, slowing down wrong passwords
//! - [`metrics`]: rates and the Prometheus text at `/metrics`
//! - [`download`]: the database backup download, made and sent on the connection's thread
//! - [`tls`]: HTTPS: the page's certificate and key, read at start
//!
//! Stops by [`Web::stop`]: a flag and a connection to itself end the accept loop, then a stop
//! message ends the `web` thread.

pub mod api;
pub mod auth;
pub mod conn;
pub mod download;
pub mod http;
pub mod metrics;
pub mod routes;
pub mod tls;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream};
use std::panic::{self, AssertUnwindSafe};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crossbeam_channel::{bounded, Receiver, RecvTimeoutError, Sender};

use crate::broker::server::Server;
use auth::AdminAuth;
use conn::{Answer, Job, Work};
use http::Reply;
use metrics::Rates;
use routes::Ctx;

pub struct Web {
    listener: Arc<conn::Listener>,
    work: Sender<Work>,
    acceptor: Option<JoinHandle<()>>,
    thread: Option<JoinHandle<()>>,
    pub addr: SocketAddr,
}

impl Web {
    /// Sets up the admin password (see [`auth`]), binds `web_listen` and starts the threads.
    /// With `tls` (from [`tls::load`]) the page is served over HTTPS only. Logs
    /// `web page on http://ADDR:PORT/` (or `https://`).
    pub fn start(
        server: Arc<Server>,
        tls: Option<Arc<crate::certs::LiveConfig>>,
        reloader: Arc<crate::reload::Reloader>,
    ) -> std::io::Result<Web> {
        let broker = server.broker().clone();
        let auth = AdminAuth::setup(broker.config().admin_password.as_deref(), &broker.store)
            .map_err(std::io::Error::other)?;
        let tcp = TcpListener::bind(broker.config().web_listen)?;
        let addr = tcp.local_addr()?;
        let listener = conn::Listener::new();
        // Each connection has at most one request waiting: the channel never blocks a sender
        // for long.
        let (work, jobs) = bounded(conn::MAX_CONNECTIONS);
        let mut ctx = Ctx {
            listener_since: server.addr().map(|_| broker.started),
            server,
            auth,
            rates: Rates::default(),
            http: listener.clone(),
            reloader,
            backups: download::Slot::default(),
        };
        let thread = thread::Builder::new()
            .name("web".into())
            .spawn(move || serve(&jobs, &mut ctx))?;
        let (l, w) = (listener.clone(), work.clone());
        let scheme = if tls.is_some() { "https" } else { "http" };
        let acceptor = thread::Builder::new()
            .name("web-accept".into())
            .spawn(move || conn::accept_loop(tcp, l, w, tls))?;
        log::info!("web page on {scheme}://{addr}/");
        Ok(Web {
            listener,
            work,
            acceptor: Some(acceptor),
            thread: Some(thread),
            addr,
        })
    }

    /// Stops the threads (a request being answered finishes first).
    pub fn stop(&mut self) {
        self.listener.stop();
        if let Some(t) = self.acceptor.take() {
            // Wake accept(): connect to ourselves (the listener may be bound to 0.0.0.0).
            let wake = match self.addr.ip() {
                IpAddr::V4(ip) if ip.is_unspecified() => {
                    SocketAddr::new(Ipv4Addr::LOCALHOST.into(), self.addr.port())
                }
                IpAddr::V6(ip) if ip.is_unspecified() => {
                    SocketAddr::new(Ipv6Addr::LOCALHOST.into(), self.addr.port())
                }
                _ => self.addr,
            };
            let _ = TcpStream::connect_timeout(&wake, Duration::from_secs(1));
            let _ = t.join();
        }
        let _ = self.work.send(Work::Stop);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Web {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The `web` thread's loop: answer requests, sample the counters every second, until told to
/// stop.
fn serve(jobs: &Receiver<Work>, ctx: &mut Ctx) {
    let mut next_sample = Instant::now();
    loop {
        let now = Instant::now();
        if now >= next_sample {
            ctx.rates.sample(&ctx.server.broker().stats, now);
            next_sample = now + metrics::SAMPLE_EVERY;
        }
        let wait = next_sample.saturating_duration_since(Instant::now());
        let job = match jobs.recv_timeout(wait) {
            Ok(Work::Request(job)) => job,
            Ok(Work::Stop) | Err(RecvTimeoutError::Disconnected) => return,
            Err(RecvTimeoutError::Timeout) => continue,
        };
        let Job {
            mut req,
            mut body,
            answer,
        } = job;
        let mut needs_body = false;
        let mut source = || match body.take() {
            Some(b) => Ok(b),
            None => {
                needs_body = true;
                Err(Reply::error(503, "the body is being read"))
            }
        };
        let result = panic::catch_unwind(AssertUnwindSafe(|| {
            routes::handle(ctx, &mut req, Instant::now(), &mut source)
        }));
        let reply = result.unwrap_or_else(|_| {
            log::error!("web: handler for {} panicked", req.path);
            Reply::error(500, "internal error; see the broker log")
        });
        log::debug!("web: {:?} {} → {}", req.method, req.path, reply.status);
        let _ = answer.send(if needs_body {
            Answer::NeedBody
        } else {
            Answer::Reply(reply)
        });
    }
}
