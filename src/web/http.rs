//! The web thread's own request and response types, so that handlers are plain functions from
//! [`Req`] to [`Reply`] that tests can call without a socket, and no tiny_http type leaves
//! `web/`: reading a tiny_http request (body bounded by [`MAX_BODY`]), query-string decoding,
//! and writing a [`Reply`] back with the security headers every response carries.

use std::io::Read;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};

use serde_json::Value;
use tiny_http::{Header, Request, Response, StatusCode};

/// The largest request body read; a larger one is answered 413 unread.
pub const MAX_BODY: usize = 64 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Get,
    Post,
    Other,
}

/// A request as the handlers see it.
#[derive(Debug, Clone)]
pub struct Req {
    pub method: Method,
    /// The path without the query string, percent-decoding not applied (routes are ASCII).
    pub path: String,
    /// Decoded `name=value` pairs of the query string, in order.
    pub query: Vec<(String, String)>,
    /// Header names lower-cased.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// The peer's address (for the failed-login slowdown).
    pub peer: Option<IpAddr>,
    /// The body is at most [`PREREAD_BODY`] bytes (or absent): reading it cannot stall.
    pub small_body: bool,
}

impl Req {
    /// A request with no headers or body; for tests and internal use.
    pub fn new(method: Method, url: &str) -> Req {
        let (path, query) = split_url(url);
        Req {
            method,
            path,
            query,
            headers: Vec::new(),
            body: Vec::new(),
            peer: None,
            small_body: true,
        }
    }

    /// The first header named `name` (lower case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The first query parameter named `name`.
    pub fn param(&self, name: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The body as a JSON value: `Ok(Value::Null)` when empty, else it must be
    /// `application/json` and well-formed (errors are the 4xx replies to send).
    pub fn json(&self) -> Result<Value, Reply> {
        if self.body.iter().all(u8::is_ascii_whitespace) {
            return Ok(Value::Null);
        }
        let json_type = self.header("content-type").is_some_and(|t| {
            t.split(';')
                .next()
                .is_some_and(|m| m.trim().eq_ignore_ascii_case("application/json"))
        });
        if !json_type {
            return Err(Reply::error(
                415,
                "send the body as JSON with Content-Type: application/json",
            ));
        }
        serde_json::from_slice(&self.body)
            .map_err(|e| Reply::error(400, &format!("malformed JSON: {e}")))
    }
}

/// Splits `/a/b?x=1&y=%2F` into the path and decoded parameters.
pub fn split_url(url: &str) -> (String, Vec<(String, String)>) {
    let (path, query) = url.split_once('?').unwrap_or((url, ""));
    let params = query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (form_decode(k), form_decode(v))
        })
        .collect();
    (path.to_owned(), params)
}

/// `application/x-www-form-urlencoded` decoding: `+` is a space, `%XX` a byte; bytes that are
/// not UTF-8 become U+FFFD. A `%` not followed by two hex digits stays as it is.
pub fn form_decode(s: &str) -> String {
    decode_percent(s.as_bytes())
}

fn hex_val(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

fn decode_percent(b: &[u8]) -> String {
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b'%' => {
                let hi = b.get(i + 1).copied().and_then(hex_val);
                let lo = b.get(i + 2).copied().and_then(hex_val);
                match (hi, lo) {
                    (Some(h), Some(l)) => {
                        out.push(h << 4 | l);
                        i += 3;
                    }
                    _ => {
                        out.push(b'%');
                        i += 1;
                    }
                }
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A response as the handlers build it.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub content_type: &'static str,
    pub body: Vec<u8>,
    pub headers: Vec<(String, String)>,
}

impl Reply {
    pub fn new(status: u16, content_type: &'static str, body: impl Into<Vec<u8>>) -> Reply {
        Reply {
            status,
            content_type,
            body: body.into(),
            headers: Vec::new(),
        }
    }

    /// 200 with a JSON body.
    pub fn json(value: &Value) -> Reply {
        Reply::json_status(200, value)
    }

    pub fn json_status(status: u16, value: &Value) -> Reply {
        Reply::new(status, "application/json", value.to_string())
    }

    /// An error: `{"error": message}`. The message is for people; it never carries a stack
    /// trace or SQL.
    pub fn error(status: u16, message: &str) -> Reply {
        Reply::json_status(status, &serde_json::json!({ "error": message }))
    }

    pub fn with_header(mut self, name: &str, value: impl Into<String>) -> Reply {
        self.headers.push((name.to_owned(), value.into()));
        self
    }

    /// The body as text (tests).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Bodies up to this size are read by tiny_http's connection thread before the request reaches
/// us; larger ones (and chunked ones) are read on the `web` thread, so they are read only for a
/// request that has already been authenticated (a stalled upload cannot hold the thread for an
/// unknown client).
pub const PREREAD_BODY: usize = 1024;

/// The request line and headers of a tiny_http request as a [`Req`] with an empty body; see
/// [`read_body`].
pub fn read_head(request: &Request) -> Req {
    let method = match request.method() {
        tiny_http::Method::Get | tiny_http::Method::Head => Method::Get,
        tiny_http::Method::Post => Method::Post,
        _ => Method::Other,
    };
    let (path, query) = split_url(request.url());
    let headers: Vec<(String, String)> = request
        .headers()
        .iter()
        .map(|h| {
            (
                h.field.as_str().as_str().to_ascii_lowercase(),
                h.value.as_str().to_owned(),
            )
        })
        .collect();
    let chunked = headers.iter().any(|(n, _)| n == "transfer-encoding");
    let small_body = !chunked && request.body_length().is_none_or(|n| n <= PREREAD_BODY);
    Req {
        method,
        path,
        query,
        headers,
        body: Vec::new(),
        peer: request.remote_addr().map(|a| a.ip()),
        small_body,
    }
}

/// Reads the body (at most [`MAX_BODY`]); `Err` is the 413/400 reply to send instead.
pub fn read_body(request: &mut Request) -> Result<Vec<u8>, Reply> {
    if request.body_length().is_some_and(|n| n > MAX_BODY) {
        return Err(Reply::error(413, "request body too large"));
    }
    let mut body = Vec::new();
    let limit = u64::try_from(MAX_BODY + 1).unwrap_or(u64::MAX);
    if request
        .as_reader()
        .take(limit)
        .read_to_end(&mut body)
        .is_err()
    {
        return Err(Reply::error(400, "cannot read the request body"));
    }
    if body.len() > MAX_BODY {
        return Err(Reply::error(413, "request body too large"));
    }
    Ok(body)
}

/// Threads answering a request whose body was left unread (see [`respond_detached`]).
static DETACHED: AtomicUsize = AtomicUsize::new(0);
/// Most of them at once.
const MAX_DETACHED: usize = 64;

/// Sends `reply` from a short-lived thread named `web-drain`, for a request whose body was not
/// (fully) read: tiny_http reads the rest of the body when the request is dropped, which for a
/// client that announced a body and stalls would be forever. That thread waits instead of the
/// `web` thread. Beyond `MAX_DETACHED` such requests at once, the request is abandoned
/// without an answer (its connection stays with the stalled client until it goes away).
pub fn respond_detached(request: Request, reply: Reply) {
    if DETACHED.fetch_add(1, Ordering::AcqRel) >= MAX_DETACHED {
        DETACHED.fetch_sub(1, Ordering::AcqRel);
        log::warn!("web: too many stalled uploads; abandoning one without an answer");
        std::mem::forget(request);
        return;
    }
    let spawned = std::thread::Builder::new()
        .name("web-drain".into())
        .spawn(move || {
            respond(request, reply);
            DETACHED.fetch_sub(1, Ordering::AcqRel);
        });
    if spawned.is_err() {
        DETACHED.fetch_sub(1, Ordering::AcqRel);
        log::warn!("web: cannot start a thread to answer a stalled upload");
    }
}

/// Sends `reply`, adding the headers every response carries: no caching of data, no sniffing,
/// no framing, and a Content-Security-Policy that allows only our own files (no inline script,
/// so injected markup could not run even if it reached the page).
pub fn respond(request: Request, reply: Reply) {
    let mut response = Response::from_data(reply.body).with_status_code(StatusCode(reply.status));
    let mut headers: Vec<(String, String)> = vec![
        ("Content-Type".into(), reply.content_type.into()),
        ("X-Content-Type-Options".into(), "nosniff".into()),
        ("X-Frame-Options".into(), "DENY".into()),
        ("Referrer-Policy".into(), "no-referrer".into()),
        (
            "Content-Security-Policy".into(),
            "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
             connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
                .into(),
        ),
    ];
    if !reply.headers.iter().any(|(n, _)| n == "Cache-Control") {
        headers.push(("Cache-Control".into(), "no-store".into()));
    }
    headers.extend(reply.headers);
    for (name, value) in headers {
        if let Ok(h) = Header::from_bytes(name.as_bytes(), value.as_bytes()) {
            response = response.with_header(h);
        }
    }
    let _ = request.respond(response);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_parameters_are_form_decoded() {
        let (path, q) = split_url("/api/messages?topic=a%2Fb+c&limit=10&x&bad=%zz%4");
        assert_eq!(path, "/api/messages");
        assert_eq!(
            q,
            vec![
                ("topic".into(), "a/b c".into()),
                ("limit".into(), "10".into()),
                ("x".into(), "".into()),
                ("bad".into(), "%zz%4".into()),
            ]
        );
        assert_eq!(form_decode("%E2%9C%93"), "✓");
        assert_eq!(form_decode("%FF"), "\u{FFFD}");
    }

    #[test]
    fn json_bodies_need_the_json_type_and_valid_syntax() {
        let mut r = Req::new(Method::Post, "/api/publish");
        assert_eq!(r.json().ok(), Some(Value::Null));
        r.body = b"{\"a\":1}".to_vec();
        assert_eq!(r.json().err().map(|e| e.status), Some(415));
        r.headers.push((
            "content-type".into(),
            "application/json; charset=utf-8".into(),
        ));
        assert_eq!(r.json().ok(), Some(serde_json::json!({"a": 1})));
        r.body = b"{\"a\":".to_vec();
        let e = r.json().err().map(|e| (e.status, e.text()));
        assert!(
            matches!(&e, Some((400, t)) if t.contains("malformed JSON")),
            "{e:?}"
        );
    }
}
