//! The control page's sockets: the `web-accept` thread accepts them, one short-lived `web-conn`
//! thread per connection reads one request (head within [`REQUEST_TIMEOUT`], at most
//! [`MAX_HEAD`] bytes; a body up to [`http::PREREAD_BODY`] with it), hands it to the `web`
//! thread over a channel and writes the answer, then closes. Everything a client can hold is
//! bounded: at most [`MAX_CONNECTIONS`] connections in all and [`MAX_PER_ADDRESS`] per address;
//! when either is full, the oldest connection still waiting for its client's request (of that
//! address, else of all) is closed to make room, so slow or idle connections cannot lock the
//! page out; if every connection is being answered, the new one is closed instead.
//!
//! A larger body is read only when the handler asks for it, i.e. once the request is
//! authenticated: the `web` thread answers [`Answer::NeedBody`], the connection thread reads
//! the body (within the same deadline, at most [`http::MAX_BODY`]) and hands the request over
//! again. A stalled upload therefore holds only its own thread, and only until the deadline.
//!
//! With HTTPS (`web_certfile`, or `web_tls_from_mqtt`; see [`super::tls`]) the listener serves
//! only TLS: the `web-conn` thread does the handshake itself, in blocking reads and writes on
//! its socket, within the same [`REQUEST_TIMEOUT`] as the request (every socket read and write
//! waits at most until the deadline, however the handshake splits them), and a handshaking
//! socket counts in the pool as a connection still sending its request. Plain HTTP sent to it
//! gets a TLS alert and the close, never a page.
//!
//! (tiny_http, used before, has no read timeout, no bound on its connection threads and no view
//! of a connection before its thread reads it, so none of this could be bounded around it.)

use std::collections::{BTreeMap, HashMap};
use std::io::{self, Read, Write};
use std::net::{IpAddr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use crossbeam_channel::{bounded, Sender};
use parking_lot::Mutex;
use rustls::{ServerConfig, ServerConnection, StreamOwned};

use super::http::{self, Reply, Req};

/// Most HTTP connections open at once.
pub const MAX_CONNECTIONS: usize = 64;
/// Most HTTP connections open at once from one address.
pub const MAX_PER_ADDRESS: usize = 8;
/// How long a client has to send its whole request (head and body).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest request head (request line and headers).
pub const MAX_HEAD: usize = 16 * 1024;
/// How long writing the answer may take.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// After the answer: how long unread request bytes are read and discarded before the close
/// (closing with them unread would reset the connection and could lose the answer).
const LINGER: Duration = Duration::from_millis(500);
/// A connection thread reads and writes only: a small stack does.
const CONN_STACK: usize = 128 * 1024;

/// A request handed to the `web` thread, with where to send the answer.
pub struct Job {
    pub req: Req,
    /// The body, when it has been read (absent, or at most [`http::PREREAD_BODY`] bytes, or
    /// asked for by the handler before).
    pub body: Option<Vec<u8>>,
    pub answer: Sender<Answer>,
}

pub enum Answer {
    Reply(Reply),
    /// The handler asked for a body not read yet: read it and hand the request over again.
    NeedBody,
}

/// What the `web` thread receives.
pub enum Work {
    Request(Job),
    Stop,
}

struct Entry {
    ip: IpAddr,
    stream: Arc<TcpStream>,
    /// Still reading the client's request (the client is the one being waited for).
    reading: bool,
}

#[derive(Default)]
struct Pool {
    /// By connection id, in accept order: the first is the oldest.
    entries: BTreeMap<u64, Entry>,
    per_ip: HashMap<IpAddr, usize>,
}

impl Pool {
    fn remove(&mut self, id: u64) {
        if let Some(e) = self.entries.remove(&id) {
            if let Some(n) = self.per_ip.get_mut(&e.ip) {
                *n -= 1;
                if *n == 0 {
                    self.per_ip.remove(&e.ip);
                }
            }
        }
    }

    fn oldest_reading(&self, ip: Option<IpAddr>) -> Option<u64> {
        self.entries
            .iter()
            .find(|(_, e)| e.reading && ip.is_none_or(|ip| e.ip == ip))
            .map(|(id, _)| *id)
    }

    /// Makes room for a connection from `ip`: `None` when there is none to make, else whether
    /// a connection was closed for it.
    fn make_room(&mut self, ip: IpAddr) -> Option<bool> {
        let full_ip = self.per_ip.get(&ip).copied().unwrap_or(0) >= MAX_PER_ADDRESS;
        let full = self.entries.len() >= MAX_CONNECTIONS;
        let victim = if full_ip {
            self.oldest_reading(Some(ip))
        } else if full {
            self.oldest_reading(None)
        } else {
            return Some(false);
        };
        let id = victim?;
        if let Some(e) = self.entries.get(&id) {
            let _ = e.stream.shutdown(Shutdown::Both);
        }
        self.remove(id);
        Some(true)
    }
}

/// The listener's shared state: the pool and what was closed to bound it.
pub struct Listener {
    pool: Mutex<Pool>,
    /// Connections closed to make room, or refused because none could be made.
    pub closed: AtomicU64,
    last_log: Mutex<Option<Instant>>,
    stop: AtomicBool,
}

impl Listener {
    pub fn new() -> Arc<Listener> {
        Arc::new(Listener {
            pool: Mutex::new(Pool::default()),
            closed: AtomicU64::new(0),
            last_log: Mutex::new(None),
            stop: AtomicBool::new(false),
        })
    }

    /// Open HTTP connections.
    pub fn open(&self) -> usize {
        self.pool.lock().entries.len()
    }

    /// Stops the accept loop (the caller then wakes it with a connection).
    pub fn stop(&self) {
        self.stop.store(true, Ordering::SeqCst);
    }

    fn count_close(&self, peer: SocketAddr, refused: bool) {
        let n = self.closed.fetch_add(1, Ordering::Relaxed) + 1;
        let mut last = self.last_log.lock();
        let now = Instant::now();
        if last.is_none_or(|t| now - t >= Duration::from_secs(10)) {
            *last = Some(now);
            log::warn!(
                "web: {} HTTP connections closed so far to stay within {MAX_CONNECTIONS} in all \
                 and {MAX_PER_ADDRESS} per address (the latest {} from {})",
                n,
                if refused {
                    "refused"
                } else {
                    "made room for a connection"
                },
                peer.ip()
            );
        }
    }
}

/// The `web-accept` thread's loop. `tls`: serve HTTPS only, each connection with the
/// configuration current when it was accepted.
pub fn accept_loop(
    listener: TcpListener,
    shared: Arc<Listener>,
    work: Sender<Work>,
    tls: Option<Arc<crate::certs::LiveConfig>>,
) {
    let mut next_id = 0u64;
    for conn in listener.incoming() {
        if shared.stop.load(Ordering::SeqCst) {
            break;
        }
        let stream = match conn {
            Ok(s) => s,
            Err(e) => {
                log::warn!("web: accept failed: {e}");
                thread::sleep(Duration::from_millis(50));
                continue;
            }
        };
        let Ok(peer) = stream.peer_addr() else {
            continue;
        };
        let stream = Arc::new(stream);
        next_id += 1;
        let id = next_id;
        {
            let mut pool = shared.pool.lock();
            // One close is enough: one of the address's own also frees a place in the pool.
            match pool.make_room(peer.ip()) {
                Some(false) => {}
                Some(true) => shared.count_close(peer, false),
                None => {
                    drop(pool);
                    let _ = stream.shutdown(Shutdown::Both);
                    shared.count_close(peer, true);
                    continue;
                }
            }
            *pool.per_ip.entry(peer.ip()).or_insert(0) += 1;
            pool.entries.insert(
                id,
                Entry {
                    ip: peer.ip(),
                    stream: stream.clone(),
                    reading: true,
                },
            );
        }
        let (s, w, tls) = (shared.clone(), work.clone(), tls.as_ref().map(|t| t.get()));
        let spawned = thread::Builder::new()
            .name("web-conn".into())
            .stack_size(CONN_STACK)
            .spawn(move || {
                serve_one(stream, tls, peer, &w, &s, id);
                s.pool.lock().remove(id);
            });
        if spawned.is_err() {
            shared.pool.lock().remove(id);
            log::warn!("web: cannot start a thread for {peer}");
        }
    }
}

/// How long one socket call may wait.
#[derive(Clone, Copy)]
enum Limit {
    /// Until this instant, whatever the number of calls (the request, the handshake, the
    /// linger): a client trickling bytes cannot outlast it.
    Until(Instant),
    /// This long for each call (writing the answer: a client that keeps reading is served).
    EachCall(Duration),
}

/// A connection's socket, shared with the pool (which may shut it down to make room), whose
/// every read and write waits at most as its [`Limit`] says.
struct Sock {
    tcp: Arc<TcpStream>,
    limit: Limit,
}

impl Sock {
    fn wait(&self) -> io::Result<Duration> {
        let wait = match self.limit {
            Limit::Until(deadline) => deadline.saturating_duration_since(Instant::now()),
            Limit::EachCall(d) => d,
        };
        if wait.is_zero() {
            return Err(io::Error::new(io::ErrorKind::TimedOut, "deadline passed"));
        }
        Ok(wait)
    }
}

impl Read for Sock {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.tcp.set_read_timeout(Some(self.wait()?))?;
        (&*self.tcp).read(buf)
    }
}

impl Write for Sock {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.tcp.set_write_timeout(Some(self.wait()?))?;
        (&*self.tcp).write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The bytes of one HTTP connection: plain, or TLS over the same socket.
enum Stream {
    Plain(Sock),
    Tls(Box<StreamOwned<ServerConnection, Sock>>),
}

impl Stream {
    fn sock(&mut self) -> &mut Sock {
        match self {
            Stream::Plain(s) => s,
            Stream::Tls(t) => &mut t.sock,
        }
    }

    fn set_limit(&mut self, limit: Limit) {
        self.sock().limit = limit;
    }

    fn is_tls(&self) -> bool {
        matches!(self, Stream::Tls(_))
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(s) => s.read(buf),
            Stream::Tls(t) => t.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(s) => s.write(buf),
            Stream::Tls(t) => t.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Stream::Plain(s) => s.flush(),
            Stream::Tls(t) => t.flush(),
        }
    }
}

/// Reads one request, has it answered, writes the answer and closes.
fn serve_one(
    tcp: Arc<TcpStream>,
    tls: Option<Arc<ServerConfig>>,
    peer: SocketAddr,
    work: &Sender<Work>,
    shared: &Listener,
    id: u64,
) {
    let deadline = Instant::now() + REQUEST_TIMEOUT;
    let sock = Sock {
        tcp: tcp.clone(),
        limit: Limit::Until(deadline),
    };
    let mut stream = match tls {
        None => Stream::Plain(sock),
        Some(config) => match ServerConnection::new(config) {
            Ok(conn) => Stream::Tls(Box::new(StreamOwned::new(conn, sock))),
            Err(e) => {
                log::warn!("web: cannot start TLS for {peer}: {e}");
                let _ = tcp.shutdown(Shutdown::Both);
                return;
            }
        },
    };
    let mut buf = Vec::with_capacity(1024);
    // With TLS, the handshake happens in the first read.
    let head_end = match read_head(&mut stream, &mut buf, peer) {
        Ok(Some(n)) => n,
        Ok(None) => {
            // Closed, timed out, shut to make room, or a failed handshake: nothing to answer.
            let _ = tcp.shutdown(Shutdown::Both);
            return;
        }
        Err(reply) => return finish(&mut stream, reply, false),
    };
    let (mut req, length) = match http::parse_head(&buf[..head_end], peer.ip()) {
        Ok(parsed) => parsed,
        Err(reply) => return finish(&mut stream, reply, false),
    };
    req.secure = stream.is_tls();
    if let Some(e) = shared.pool.lock().entries.get_mut(&id) {
        e.reading = false;
    }
    let head_only = req.head_only;
    let mut body_bytes = buf.split_off(head_end);
    if length > http::MAX_BODY {
        let reply = Reply::error(413, "request body too large");
        return finish(&mut stream, reply, head_only);
    }
    req.small_body = length <= http::PREREAD_BODY;
    let mut body = None;
    if req.small_body {
        match read_body(&mut stream, &mut body_bytes, length, peer) {
            Ok(()) => body = Some(body_bytes.clone()),
            Err(()) => return,
        }
    }
    let mut asked = false;
    loop {
        let (tx, rx) = bounded(1);
        let job = Job {
            req: req.clone(),
            body: body.take(),
            answer: tx,
        };
        if work.send(Work::Request(job)).is_err() {
            return;
        }
        match rx.recv() {
            Ok(Answer::Reply(reply)) => return finish(&mut stream, reply, head_only),
            Ok(Answer::NeedBody) if !asked => {
                asked = true;
                match read_body(&mut stream, &mut body_bytes, length, peer) {
                    Ok(()) => body = Some(std::mem::take(&mut body_bytes)),
                    Err(()) => return,
                }
            }
            // Asked twice, or the web thread is gone.
            _ => return,
        }
    }
}

/// Reads until the blank line ending the head: its length (the end of `\r\n\r\n`), `None` when
/// the client closed, failed the handshake or missed the deadline, or the 4xx to answer.
fn read_head(
    stream: &mut Stream,
    buf: &mut Vec<u8>,
    peer: SocketAddr,
) -> Result<Option<usize>, Reply> {
    let mut chunk = [0u8; 2048];
    let mut searched = 0;
    loop {
        if let Some(p) = buf[searched..].windows(4).position(|w| w == b"\r\n\r\n") {
            return Ok(Some(searched + p + 4));
        }
        searched = buf.len().saturating_sub(3);
        if buf.len() > MAX_HEAD {
            return Err(Reply::error(431, "request head too large"));
        }
        match read_some(stream, &mut chunk, peer) {
            Some(n) => buf.extend_from_slice(&chunk[..n]),
            None => return Ok(None),
        }
    }
}

/// Reads until `body` holds `length` bytes (any excess is dropped); `Err` when the client
/// closed or missed the deadline.
fn read_body(
    stream: &mut Stream,
    body: &mut Vec<u8>,
    length: usize,
    peer: SocketAddr,
) -> Result<(), ()> {
    let mut chunk = [0u8; 4096];
    while body.len() < length {
        let n = read_some(stream, &mut chunk, peer).ok_or(())?;
        body.extend_from_slice(&chunk[..n]);
    }
    body.truncate(length);
    Ok(())
}

/// One read within the stream's limit: the bytes read, or `None` at EOF, error or the deadline.
fn read_some(stream: &mut Stream, chunk: &mut [u8], peer: SocketAddr) -> Option<usize> {
    loop {
        match stream.read(chunk) {
            Ok(0) => return None,
            Ok(n) => return Some(n),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => {
                if stream.is_tls() && e.kind() == io::ErrorKind::InvalidData {
                    log::debug!("web: TLS with {peer} failed: {e}");
                }
                return None;
            }
        }
    }
}

/// Writes the answer (each write may wait [`WRITE_TIMEOUT`]), then closes: our side first
/// (after TLS's close_notify), then the rest after reading and discarding what the client still
/// sends (an unread body) for at most [`LINGER`].
fn finish(stream: &mut Stream, mut reply: Reply, head_only: bool) {
    stream.set_limit(Limit::EachCall(WRITE_TIMEOUT));
    let mut written = match reply.download.take() {
        Some(backup) => backup.send(stream, head_only),
        None => stream.write_all(&http::encode(reply, head_only)),
    }
    .and_then(|()| stream.flush());
    if let (Ok(()), Stream::Tls(t)) = (&written, &mut *stream) {
        t.conn.send_close_notify();
        written = t.flush();
    }
    let sock = stream.sock();
    if written.is_ok() {
        let _ = sock.tcp.shutdown(Shutdown::Write);
        sock.limit = Limit::Until(Instant::now() + LINGER);
        // Raw bytes: after close_notify nothing more of the client's is read as TLS.
        let mut sink = [0u8; 4096];
        while matches!(sock.read(&mut sink), Ok(n) if n > 0) {}
    }
    let _ = sock.tcp.shutdown(Shutdown::Both);
}
