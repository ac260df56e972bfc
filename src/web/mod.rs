//! The `web` thread: a tiny_http server for the control page and its JSON API on `web_listen`.
//!
//! One thread, named `web`, owns everything here: it takes requests one at a time
//! ([`http::read_head`] → [`routes::handle`] → [`http::respond`]) and, between requests,
//! samples the broker's counters once a second for the live rates ([`metrics::Rates`]). It
//! reads the [`Broker`](crate::broker::Broker) and acts through the same public calls as the
//! rest of the broker ([`Server::start`]/[`Server::stop`], `disconnect_conn`, `publish_durable`,
//! the store's user/ACL/ban methods). A handler that panics costs only its request (500).
//!
//! - [`http`]: request/response types, so that no tiny_http type leaves this module's plumbing
//! - [`routes`]: every URL and its handler
//! - [`api`]: the JSON shapes (stable names, see the README)
//! - [`auth`]: the admin login: sessions, CSRF, HTTP Basic, slowing down wrong passwords
//! - [`metrics`]: rates and the Prometheus text at `/metrics`
//!
//! A request that announced a body larger than tiny_http reads ahead (1 KiB) and was answered
//! without reading it all (refused before login, or too large) is answered from a short-lived
//! `web-drain` thread ([`http::respond_detached`]), because tiny_http reads the rest of the body
//! when the request is dropped: a client that stalls mid-upload holds that thread, not `web`.
//!
//! Stops by [`Web::stop`]: a flag, then `unblock()` wakes the thread.

pub mod api;
pub mod auth;
pub mod http;
pub mod metrics;
pub mod routes;

use std::net::SocketAddr;
use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crate::broker::server::Server;
use auth::AdminAuth;
use http::Reply;
use metrics::Rates;
use routes::Ctx;

pub struct Web {
    http: Arc<tiny_http::Server>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    pub addr: SocketAddr,
}

impl Web {
    /// Sets up the admin password (see [`auth`]), binds `web_listen` and starts the thread.
    /// Logs `web page on http://ADDR:PORT/`.
    pub fn start(server: Arc<Server>) -> std::io::Result<Web> {
        let broker = server.broker().clone();
        let auth = AdminAuth::setup(broker.config.admin_password.as_deref(), &broker.store)
            .map_err(std::io::Error::other)?;
        let want = broker.config.web_listen;
        let http =
            tiny_http::Server::http(want).map_err(|e| std::io::Error::other(e.to_string()))?;
        let addr = http
            .server_addr()
            .to_ip()
            .ok_or_else(|| std::io::Error::other("not an IP listener"))?;
        let http = Arc::new(http);
        let stop = Arc::new(AtomicBool::new(false));
        let mut ctx = Ctx {
            listener_since: server.addr().map(|_| broker.started),
            server,
            auth,
            rates: Rates::default(),
        };
        let (h, flag) = (http.clone(), stop.clone());
        let thread = thread::Builder::new()
            .name("web".into())
            .spawn(move || serve(&h, &flag, &mut ctx))?;
        log::info!("web page on http://{addr}/");
        Ok(Web {
            http,
            stop,
            thread: Some(thread),
            addr,
        })
    }

    /// Stops the thread (a request being answered finishes first).
    pub fn stop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        self.http.unblock();
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

/// The thread's loop: answer requests, sample the counters every second, until `stop`.
fn serve(http: &tiny_http::Server, stop: &AtomicBool, ctx: &mut Ctx) {
    let mut next_sample = Instant::now();
    while !stop.load(Ordering::SeqCst) {
        let now = Instant::now();
        if now >= next_sample {
            ctx.rates.sample(&ctx.server.broker().stats, now);
            next_sample = now + metrics::SAMPLE_EVERY;
        }
        let wait = next_sample.saturating_duration_since(Instant::now());
        match http.recv_timeout(wait) {
            Ok(Some(mut request)) => {
                let mut req = http::read_head(&request);
                // Whether the whole body has been read (or was read by tiny_http already).
                let mut complete = req.small_body;
                let mut body = || {
                    let b = http::read_body(&mut request);
                    complete = b.is_ok();
                    b
                };
                let result = panic::catch_unwind(AssertUnwindSafe(|| {
                    routes::handle(ctx, &mut req, Instant::now(), &mut body)
                }));
                let reply = result.unwrap_or_else(|_| {
                    log::error!("web: handler for {} panicked", req.path);
                    Reply::error(500, "internal error; see the broker log")
                });
                log::debug!("web: {:?} {} → {}", req.method, req.path, reply.status);
                if complete {
                    http::respond(request, reply);
                } else {
                    http::respond_detached(request, reply);
                }
            }
            Ok(None) => {}
            Err(e) => {
                log::debug!("web: accept failed: {e}");
                thread::sleep(Duration::from_millis(20));
            }
        }
    }
}
