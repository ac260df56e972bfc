//! The web thread's own request and response types, so that handlers are plain functions from
//! [`Req`] to [`Reply`] that tests can call without a socket: parsing a request head,
//! query-string decoding, and encoding a [`Reply`] with the security headers every response
//! carries. Pure: the sockets are [`conn`](super::conn)'s.

use std::net::IpAddr;
use std::sync::Arc;

use serde_json::Value;

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
    /// The body is at most [`PREREAD_BODY`] bytes (or absent): it came with the head.
    pub small_body: bool,
    /// A HEAD request (handled as GET, answered without the body).
    pub head_only: bool,
    /// It came over HTTPS (the session cookie is then `Secure`).
    pub secure: bool,
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
            head_only: false,
            secure: false,
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
    /// Instead of `body`: a database backup the connection thread makes and sends
    /// ([`super::download`]).
    pub download: Option<Arc<super::download::Backup>>,
}

impl Reply {
    pub fn new(status: u16, content_type: &'static str, body: impl Into<Vec<u8>>) -> Reply {
        Reply {
            status,
            content_type,
            body: body.into(),
            headers: Vec::new(),
            download: None,
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

/// Bodies up to this size are read with the request head; larger ones only when the handler
/// asks for them, i.e. once the request is authenticated (see [`conn`](super::conn)).
pub const PREREAD_BODY: usize = 1024;

/// Most headers one request may carry (a browser sends about 15).
const MAX_HEADERS: usize = 64;

/// Parses a request head (request line and headers, up to and including the blank line) from
/// `peer` into a [`Req`] with an empty body, and its Content-Length; `Err` is the 4xx to send.
pub fn parse_head(head: &[u8], peer: IpAddr) -> Result<(Req, usize), Reply> {
    let bad = || Reply::error(400, "malformed request");
    let mut slots = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut parsed = httparse::Request::new(&mut slots);
    // httparse (hyper's parser) rather than our own: request-line and header syntax, token
    // characters and line endings as RFC 9112 has them; obsolete line folding (a way to
    // smuggle headers) is an error for requests.
    match parsed.parse(head) {
        Ok(httparse::Status::Complete(_)) => {}
        Ok(httparse::Status::Partial) => return Err(bad()),
        Err(httparse::Error::TooManyHeaders) => {
            return Err(Reply::error(431, "too many request headers"))
        }
        Err(httparse::Error::Version) => return Err(Reply::error(505, "HTTP/1.x only")),
        Err(_) => return Err(bad()),
    }
    let (Some(method), Some(target)) = (parsed.method, parsed.path) else {
        return Err(bad());
    };
    let mut headers = Vec::with_capacity(parsed.headers.len());
    for h in parsed.headers.iter() {
        let value = std::str::from_utf8(h.value).map_err(|_| bad())?;
        headers.push((h.name.to_ascii_lowercase(), value.trim().to_owned()));
    }
    if headers.iter().any(|(n, _)| n == "transfer-encoding") {
        return Err(Reply::error(411, "send the body with a Content-Length"));
    }
    let mut lengths = headers.iter().filter(|(n, _)| n == "content-length");
    let length = match (lengths.next(), lengths.next()) {
        (None, _) => 0,
        (Some((_, v)), None) => v.parse::<usize>().map_err(|_| bad())?,
        (Some(_), Some(_)) => return Err(bad()),
    };
    let (path, query) = split_url(target);
    let req = Req {
        method: match method {
            "GET" | "HEAD" => Method::Get,
            "POST" => Method::Post,
            _ => Method::Other,
        },
        path,
        query,
        headers,
        body: Vec::new(),
        peer: Some(peer),
        small_body: length <= PREREAD_BODY,
        head_only: method == "HEAD",
        secure: false,
    };
    Ok((req, length))
}

/// `reply` as HTTP/1.1 bytes, with the headers every response carries: no caching of data, no
/// sniffing, no framing, and a Content-Security-Policy that allows only our own files (no
/// inline script, so injected markup could not run even if it reached the page). Every
/// connection carries one request: `Connection: close`. `head_only` (a HEAD request): the
/// headers without the body.
pub fn encode(reply: Reply, head_only: bool) -> Vec<u8> {
    let mut bytes = encode_head(&reply, reply.body.len() as u64);
    if !head_only {
        bytes.extend_from_slice(&reply.body);
    }
    bytes
}

/// The status line and headers of `reply` (see [`encode`]) for a body of `length` bytes that
/// the caller sends after them.
pub fn encode_head(reply: &Reply, length: u64) -> Vec<u8> {
    let mut headers: Vec<(String, String)> = vec![
        ("Content-Type".into(), reply.content_type.into()),
        ("Content-Length".into(), length.to_string()),
        ("Connection".into(), "close".into()),
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
    headers.extend(reply.headers.iter().cloned());
    let mut out = format!("HTTP/1.1 {} {}\r\n", reply.status, reason(reply.status));
    for (name, value) in headers {
        // A header value never carries a line break (it would split the response).
        if !name.contains(['\r', '\n']) && !value.contains(['\r', '\n']) {
            out.push_str(&format!("{name}: {value}\r\n"));
        }
    }
    out.push_str("\r\n");
    out.into_bytes()
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        201 => "Created",
        204 => "No Content",
        304 => "Not Modified",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        409 => "Conflict",
        411 => "Length Required",
        413 => "Content Too Large",
        415 => "Unsupported Media Type",
        422 => "Unprocessable Content",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        505 => "HTTP Version Not Supported",
        _ => "",
    }
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

    fn head(text: &str) -> Result<(Req, usize), u16> {
        let peer = IpAddr::from([127, 0, 0, 1]);
        parse_head(text.as_bytes(), peer).map_err(|r| r.status)
    }

    #[test]
    fn request_heads_parse_and_bad_ones_get_their_4xx_or_505() {
        let (req, len) =
            head("POST /api/publish?topic=a%2Fb HTTP/1.1\r\nHost: x\r\nContent-Length: 12\r\n\r\n")
                .expect("a good head");
        assert_eq!(
            (req.method, req.path.as_str(), len),
            (Method::Post, "/api/publish", 12)
        );
        assert_eq!(req.param("topic"), Some("a/b"));
        assert_eq!(req.header("host"), Some("x"));
        assert!(head("HEAD / HTTP/1.0\r\n\r\n").expect("HEAD").0.head_only);
        for (what, text, status) in [
            (
                "folded header",
                "GET / HTTP/1.1\r\nX-A: 1\r\n  folded\r\n\r\n",
                400,
            ),
            (
                "space before colon",
                "GET / HTTP/1.1\r\nX-A : 1\r\n\r\n",
                400,
            ),
            ("no version", "GET /\r\n\r\n", 400),
            ("HTTP/2", "GET / HTTP/2.0\r\n\r\n", 505),
            (
                "chunked",
                "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
                411,
            ),
            (
                "two lengths",
                "POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
                400,
            ),
            (
                "bad length",
                "POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n",
                400,
            ),
            ("cut short", "GET / HTTP/1.1\r\nHost: x\r\n", 400),
        ] {
            assert_eq!(head(text).err(), Some(status), "{what}");
        }
        let many: String = (0..=MAX_HEADERS).map(|i| format!("X-{i}: v\r\n")).collect();
        assert_eq!(
            head(&format!("GET / HTTP/1.1\r\n{many}\r\n")).err(),
            Some(431)
        );
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
