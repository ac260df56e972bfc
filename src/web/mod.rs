//! The `web` thread: a tiny_http server for the control page and its JSON API.
//!
//! So far it serves the status (`GET /api/status`) and a page that shows it; the five tabs,
//! the controls and the admin login arrive with the control-page issue. Nothing here changes
//! broker state yet, so nothing here needs a login yet.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::thread::{self, JoinHandle};

use serde_json::json;
use tiny_http::{Header, Method, Request, Response};

use crate::broker::server::Server;
use crate::broker::stats::Stats;

pub struct Web {
    http: Arc<tiny_http::Server>,
    thread: Option<JoinHandle<()>>,
    pub addr: SocketAddr,
}

impl Web {
    /// Binds `web_listen` and starts the thread. Logs `web page on http://ADDR:PORT/`.
    pub fn start(server: Arc<Server>) -> std::io::Result<Web> {
        let want = server.broker().config.web_listen;
        let http =
            tiny_http::Server::http(want).map_err(|e| std::io::Error::other(e.to_string()))?;
        let addr = http
            .server_addr()
            .to_ip()
            .ok_or_else(|| std::io::Error::other("not an IP listener"))?;
        let http = Arc::new(http);
        let h = http.clone();
        let thread = thread::Builder::new().name("web".into()).spawn(move || {
            for request in h.incoming_requests() {
                handle(&server, request);
            }
        })?;
        log::info!("web page on http://{addr}/");
        Ok(Web {
            http,
            thread: Some(thread),
            addr,
        })
    }

    pub fn stop(&mut self) {
        self.http.unblock();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A response with a Content-Type header.
fn typed(body: String, content_type: &str) -> Response<std::io::Cursor<Vec<u8>>> {
    let response = Response::from_string(body);
    match Header::from_bytes(&b"Content-Type"[..], content_type.as_bytes()) {
        Ok(h) => response.with_header(h),
        Err(()) => response,
    }
}

fn handle(server: &Server, request: Request) {
    let path = request.url().split('?').next().unwrap_or("").to_owned();
    let response = match (request.method(), path.as_str()) {
        (Method::Get, "/api/status") => {
            let body = status(server).to_string();
            typed(body, "application/json")
        }
        (Method::Get, "/") => typed(
            include_str!("../../assets/index.html").to_owned(),
            "text/html; charset=utf-8",
        ),
        _ => Response::from_string("not found\n").with_status_code(404),
    };
    let _ = request.respond(response);
}

fn status(server: &Server) -> serde_json::Value {
    let b = server.broker();
    let s = &b.stats;
    json!({
        "running": server.addr().is_some(),
        "mqtt_address": server.addr().map(|a| a.to_string()),
        "uptime_seconds": b.started.elapsed().as_secs(),
        "clients_connected": b.connection_count(),
        "sessions": b.session_count(),
        "subscriptions": b.router.len(),
        "retained_messages": b.retained.len(),
        "messages_received": Stats::get(&s.messages_received),
        "messages_sent": Stats::get(&s.messages_sent),
        "messages_dropped": s.dropped.load(Ordering::Relaxed),
        "bytes_received": Stats::get(&s.bytes_received),
        "bytes_sent": Stats::get(&s.bytes_sent),
        "version": crate::broker::sys::VERSION,
    })
}
