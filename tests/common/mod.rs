//! Shared harness for the integration tests (`mod common;` in each `tests/*.rs`).
//!
//! * [`Broker`] starts the real `mqtt5-broker` binary on 127.0.0.1 with OS-chosen
//!   ports and a database in a fresh temporary directory, waits (≤ 10 s) for its
//!   `MQTT listening on ADDR` and `web page on http://ADDR/` (or `https://`) log lines, collects
//!   everything it prints, and kills only its own child, by PID, when dropped.
//! * Raw-socket helpers ([`connect_raw`], [`send`], [`recv_exact`], [`read_packet`],
//!   [`expect_bytes`], [`expect_closed`]) for byte-level protocol tests; a byte
//!   mismatch panics with expected / received / diff in hex, matching nibbles shown
//!   as dots, in the manner of Mosquitto's own test suite.
//! * [`packet`]: a tiny, annotated builder of client packets.
//! * [`web`]: the control page's HTTP API (one request, HTTP Basic for the admin).
//! * [`procfs`]: the broker's memory, threads and descriptors, failing when it is gone.
//! * [`Broker::wait_for_log`] and [`Broker::await_db`] (a query on the broker's database file)
//!   wait for state with a deadline, for the writes no client can see acknowledged.
//!
//! Every wait is bounded. Set `BROKER_LOG_ECHO=1` to copy the broker's output to
//! the test's stderr as it arrives.
#![allow(dead_code)]

pub mod flow;
pub mod mosquitto;
pub mod procfs;
pub mod raw;
pub mod rq5;
pub mod web;

use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// How long the broker may take to log both listening lines.
pub const START_TIMEOUT: Duration = Duration::from_secs(10);
/// Default read timeout of raw sockets.
pub const IO_TIMEOUT: Duration = Duration::from_secs(5);
/// How long [`Broker::await_db`] waits for a change to reach the database file: the broker
/// commits within ~100 ms (README), so this only bounds a failure.
pub const DB_TIMEOUT: Duration = Duration::from_secs(10);

/// A running broker process owned by one test.
pub struct Broker {
    /// The (first) plain MQTT listener (from the first `MQTT listening on` log line).
    pub mqtt: SocketAddr,
    /// The web listener (from the `web page on http://…/` or `https://…/` log line).
    pub web: SocketAddr,
    /// The MQTT-over-TLS listener, when started with `--tls-listen` (from the
    /// `MQTT listening on ADDR (tls)` line).
    pub tls: Option<SocketAddr>,
    /// The MQTT-over-WebSockets listeners, when started with `--ws-listen` / `--wss-listen`
    /// (from the `MQTT listening on ADDR (ws)` / `(wss)` lines).
    pub ws: Option<SocketAddr>,
    pub wss: Option<SocketAddr>,
    child: Child,
    dir: tempfile::TempDir,
    db: PathBuf,
    args: Vec<String>,
    log: Arc<Mutex<String>>,
    /// Where the current process's output starts in `log` (after a restart).
    log_start: usize,
    readers: Vec<JoinHandle<()>>,
    status: Option<ExitStatus>,
}

impl Broker {
    /// Start the broker with a fresh database `<tempdir>/broker.db`, listening on
    /// 127.0.0.1 with OS-chosen ports, plus `extra_args` (e.g. `["--allow-anonymous"]`).
    pub fn start(extra_args: &[&str]) -> Broker {
        let dir = tempfile::tempdir().expect("create temp dir");
        let db = dir.path().join("broker.db");
        Self::spawn(dir, db, extra_args.iter().map(|s| s.to_string()).collect())
    }

    /// Start the broker on an existing database file (e.g. one kept in a
    /// `tempfile::TempDir` the test owns, to restart on the same file). The
    /// harness still gets its own temp dir for anything else.
    pub fn start_with_db(db: impl AsRef<Path>, extra_args: &[&str]) -> Broker {
        let dir = tempfile::tempdir().expect("create temp dir");
        Self::spawn(
            dir,
            db.as_ref().to_path_buf(),
            extra_args.iter().map(|s| s.to_string()).collect(),
        )
    }

    fn spawn(dir: tempfile::TempDir, db: PathBuf, args: Vec<String>) -> Broker {
        let log = Arc::new(Mutex::new(String::new()));
        let (child, readers) = spawn_child(&db, &args, &log);
        let mut b = Broker {
            mqtt: "127.0.0.1:0".parse().unwrap(),
            web: "127.0.0.1:0".parse().unwrap(),
            tls: None,
            ws: None,
            wss: None,
            child,
            dir,
            db,
            args,
            log,
            log_start: 0,
            readers,
            status: None,
        };
        b.await_listening();
        b
    }

    /// Wait for both listening lines written since the last (re)start.
    fn await_listening(&mut self) {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            let text = self.log()[self.log_start..].to_string();
            let plain: String = text
                .lines()
                .filter(|l| !l.ends_with(')'))
                .flat_map(|l| [l, "\n"])
                .collect();
            // The first plain one: `--listen` (more plain listeners log after it).
            let mqtt = plain
                .lines()
                .find(|l| l.contains("MQTT listening on "))
                .and_then(|l| last_addr_after(l, "MQTT listening on "));
            let web = last_addr_after(&text, "web page on http://")
                .or_else(|| last_addr_after(&text, "web page on https://"));
            let other = |kind: &str| {
                let suffix = format!("({kind})");
                let wanted = self.args.iter().any(|a| *a == format!("--{kind}-listen"));
                let addr = text
                    .lines()
                    .rev()
                    .find(|l| l.ends_with(&suffix))
                    .and_then(|l| last_addr_after(l, "MQTT listening on "));
                (addr, !wanted || addr.is_some())
            };
            let (tls, tls_ok) = other("tls");
            let (ws, ws_ok) = other("ws");
            let (wss, wss_ok) = other("wss");
            if let (Some(m), Some(w)) = (mqtt, web) {
                if tls_ok && ws_ok && wss_ok {
                    self.mqtt = m;
                    self.web = w;
                    self.tls = tls;
                    self.ws = ws;
                    self.wss = wss;
                    return;
                }
            }
            if let Ok(Some(st)) = self.child.try_wait() {
                self.status = Some(st);
                self.join_readers();
                panic!(
                    "broker exited with {st} before listening\n--- broker log ---\n{}",
                    self.log()
                );
            }
            if Instant::now() >= deadline {
                self.kill9();
                panic!(
                    "broker did not log both listening lines within {START_TIMEOUT:?}\n--- broker log ---\n{}",
                    self.log()
                );
            }
            thread::sleep(Duration::from_millis(10));
        }
    }

    /// Everything the broker printed so far (stdout and stderr, interleaved by line).
    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// Wait up to `timeout` until the log contains `needle`.
    pub fn wait_for_log(&self, needle: &str, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if self.log.lock().unwrap().contains(needle) {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            thread::sleep(Duration::from_millis(10));
        }
    }

    /// Waits (≤ [`DB_TIMEOUT`]) until `sql`, a query of one integer on the broker's database
    /// file, gives `want`; panics with the last answer otherwise. For "this is committed" before
    /// a `kill -9`: sessions, subscriptions, wills and QoS 0 retained messages are written in
    /// batches ("within ~100 ms", README) with no acknowledgement a client could wait for, so the
    /// file itself is the state to wait on (tables as in `schema.sql`). A read-only connection
    /// of its own, opened per call: in WAL mode it never holds up the broker's writer.
    pub fn await_db(&self, what: &str, sql: &str, want: i64) {
        use rusqlite::{Connection, OpenFlags};
        let deadline = Instant::now() + DB_TIMEOUT;
        loop {
            let got = Connection::open_with_flags(&self.db, OpenFlags::SQLITE_OPEN_READ_ONLY)
                .and_then(|c| c.query_row(sql, [], |r| r.get::<_, i64>(0)));
            // An error (busy, or no such table yet) is "not yet": the broker may be mid-commit.
            let last = match got {
                Ok(n) if n == want => return,
                Ok(n) => n.to_string(),
                Err(e) => e.to_string(),
            };
            if Instant::now() >= deadline {
                panic!(
                    "{what}: `{sql}` gave {last}, not {want}, within {DB_TIMEOUT:?}\n\
                     --- broker log ---\n{}",
                    self.log()
                );
            }
            thread::sleep(Duration::from_millis(10));
        }
    }

    /// The broker's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// `kill -HUP` to the broker (its own child, by PID): reload the config and certificates.
    pub fn sighup(&self) {
        let pid = libc::pid_t::try_from(self.pid()).expect("pid");
        // SAFETY: kill(2) with our own child's PID and a valid signal.
        assert_eq!(unsafe { libc::kill(pid, libc::SIGHUP) }, 0);
    }

    /// The database file in use.
    pub fn db_path(&self) -> &Path {
        &self.db
    }

    /// The harness's temp dir (deleted on drop), for scratch files.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Exit status once the process was reaped (by `terminate`, `kill9` or `try_exit`).
    pub fn exit_status(&self) -> Option<ExitStatus> {
        self.status
    }

    /// Non-blocking check whether the broker has exited.
    pub fn try_exit(&mut self) -> Option<ExitStatus> {
        if self.status.is_none() {
            if let Ok(Some(st)) = self.child.try_wait() {
                self.status = Some(st);
            }
        }
        self.status
    }

    /// SIGKILL (by PID, via std's `Child::kill`) and reap: a crash, for recovery tests.
    pub fn kill9(&mut self) {
        if self.status.is_none() {
            let _ = self.child.kill();
            self.status = self.child.wait().ok();
        }
        self.join_readers();
    }

    /// SIGTERM via `kill -TERM <pid>`, then wait ≤ 10 s for the exit. Panics (with
    /// the log) if the broker does not stop in time; it is SIGKILLed first.
    pub fn terminate(&mut self) -> ExitStatus {
        self.signal_and_wait("TERM")
    }

    /// SIGINT via `kill -INT <pid>` (like Ctrl-C), then wait ≤ 10 s.
    pub fn interrupt(&mut self) -> ExitStatus {
        self.signal_and_wait("INT")
    }

    fn signal_and_wait(&mut self, sig: &str) -> ExitStatus {
        if let Some(st) = self.status {
            return st;
        }
        let pid = self.pid().to_string();
        let ok = Command::new("kill")
            .args([&format!("-{sig}"), &pid])
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        assert!(ok, "kill -{sig} {pid} failed");
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(Some(st)) = self.child.try_wait() {
                self.status = Some(st);
                self.join_readers();
                return st;
            }
            if Instant::now() >= deadline {
                self.kill9();
                panic!(
                    "broker did not exit within 10 s of SIG{sig}\n--- broker log ---\n{}",
                    self.log()
                );
            }
            thread::sleep(Duration::from_millis(10));
        }
    }

    /// Stop (SIGTERM) and start again on the same database and arguments, in place:
    /// new ports, the log keeps growing. Returns the exit status of the old process.
    pub fn restart(&mut self) -> ExitStatus {
        let st = self.terminate();
        self.respawn();
        st
    }

    /// Like [`Broker::restart`] but the old process is SIGKILLed (crash recovery).
    pub fn crash_restart(&mut self) {
        self.kill9();
        self.respawn();
    }

    fn respawn(&mut self) {
        self.log
            .lock()
            .unwrap()
            .push_str("--- harness: restart ---\n");
        self.log_start = self.log.lock().unwrap().len();
        let (child, readers) = spawn_child(&self.db, &self.args, &self.log);
        self.child = child;
        self.readers = readers;
        self.status = None;
        self.await_listening();
    }

    /// Wait (bounded) for the output readers to see EOF, so the log is complete.
    fn join_readers(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(2);
        while self.readers.iter().any(|h| !h.is_finished()) && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(5));
        }
        for h in std::mem::take(&mut self.readers) {
            if h.is_finished() {
                let _ = h.join();
            }
        }
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        // Only our own child, by PID; then reap it so no zombie is left.
        if self.status.is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn spawn_child(
    db: &Path,
    args: &[String],
    log: &Arc<Mutex<String>>,
) -> (Child, Vec<JoinHandle<()>>) {
    let bin = env!("CARGO_BIN_EXE_mqtt5-broker");
    let rust_log = std::env::var("MQTT5_TEST_RUST_LOG").unwrap_or_else(|_| "info".into());
    let mut child = Command::new(bin)
        .args([
            "--listen",
            "127.0.0.1:0",
            "--web-listen",
            "127.0.0.1:0",
            "--db",
        ])
        .arg(db)
        .args(args)
        .env("RUST_LOG", rust_log)
        .env("RUST_LOG_STYLE", "never")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {bin}: {e}"));
    let echo = std::env::var_os("BROKER_LOG_ECHO").is_some();
    let out = child.stdout.take().unwrap();
    let err = child.stderr.take().unwrap();
    let readers = vec![
        spawn_reader(out, Arc::clone(log), echo),
        spawn_reader(err, Arc::clone(log), echo),
    ];
    (child, readers)
}

fn spawn_reader<R: Read + Send + 'static>(
    src: R,
    log: Arc<Mutex<String>>,
    echo: bool,
) -> JoinHandle<()> {
    thread::spawn(move || {
        let mut r = BufReader::new(src);
        let mut line = Vec::new();
        loop {
            line.clear();
            match r.read_until(b'\n', &mut line) {
                Ok(0) | Err(_) => return,
                Ok(_) => {
                    let s = String::from_utf8_lossy(&line);
                    if echo {
                        eprint!("[broker] {s}");
                    }
                    log.lock().unwrap().push_str(&s);
                }
            }
        }
    })
}

/// The address in the last log line containing `marker`, e.g.
/// `... MQTT listening on 127.0.0.1:40123` or `... web page on http://127.0.0.1:40124/`.
fn last_addr_after(log: &str, marker: &str) -> Option<SocketAddr> {
    let line = log.lines().rev().find(|l| l.contains(marker))?;
    let rest = &line[line.find(marker)? + marker.len()..];
    let token: String = rest
        .chars()
        .take_while(|c| !c.is_whitespace() && *c != '/')
        .collect();
    token.parse().ok()
}

// ---------------------------------------------------------------- raw sockets

/// TCP connection with 5 s read and write timeouts and Nagle disabled.
pub fn connect_raw(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect_timeout(&addr, IO_TIMEOUT)
        .unwrap_or_else(|e| panic!("connect to {addr}: {e}"));
    s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    s.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
    s.set_nodelay(true).unwrap();
    s
}

/// Like [`connect_raw`], from the loopback source address `from` (e.g. 127.0.0.2): the broker
/// sees another client address.
pub fn connect_raw_from(addr: SocketAddr, from: std::net::Ipv4Addr) -> TcpStream {
    use socket2::{Domain, Protocol, SockAddr, Socket, Type};
    assert!(
        from.is_loopback(),
        "tests use loopback addresses only: {from}"
    );
    let sock = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP)).expect("socket");
    sock.bind(&SockAddr::from(SocketAddr::new(from.into(), 0)))
        .unwrap_or_else(|e| panic!("bind {from}: {e}"));
    sock.connect_timeout(&SockAddr::from(addr), IO_TIMEOUT)
        .unwrap_or_else(|e| panic!("connect to {addr} from {from}: {e}"));
    let s: TcpStream = sock.into();
    s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    s.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
    s.set_nodelay(true).unwrap();
    s
}

/// Like [`connect_raw`], with the receive buffer set to `rcvbuf` bytes before connecting (the
/// kernel doubles it and keeps a floor): a client that reads slowly or not at all then holds
/// little in its kernel, and what it is owed stays on the broker's side.
pub fn connect_raw_rcvbuf(addr: SocketAddr, rcvbuf: usize) -> TcpStream {
    use socket2::{Domain, Protocol, SockAddr, Socket, Type};
    let sock = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP)).expect("socket");
    sock.set_recv_buffer_size(rcvbuf).expect("SO_RCVBUF");
    sock.connect_timeout(&SockAddr::from(addr), IO_TIMEOUT)
        .unwrap_or_else(|e| panic!("connect to {addr}: {e}"));
    let s: TcpStream = sock.into();
    s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    s.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
    s.set_nodelay(true).unwrap();
    s
}

/// Write all bytes (panics on error).
pub fn send(stream: &TcpStream, data: &[u8]) {
    let mut s = stream;
    s.write_all(data)
        .unwrap_or_else(|e| panic!("send {}: {e}", hex(data)));
    s.flush().unwrap();
}

/// Read up to `n` bytes until the read timeout, EOF or an error; never panics.
fn recv_upto(stream: &TcpStream, n: usize) -> (Vec<u8>, Option<String>) {
    let mut s = stream;
    let mut buf = vec![0u8; n];
    let mut got = 0;
    while got < n {
        match s.read(&mut buf[got..]) {
            Ok(0) => return (buf[..got].to_vec(), Some("connection closed (EOF)".into())),
            Ok(k) => got += k,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return (buf[..got].to_vec(), Some(format!("read error: {e}"))),
        }
    }
    (buf, None)
}

/// Exactly `n` bytes; panics (showing what did arrive) on timeout or close.
pub fn recv_exact(stream: &TcpStream, n: usize) -> Vec<u8> {
    let (got, err) = recv_upto(stream, n);
    if let Some(e) = err {
        panic!("wanted {n} bytes, got {} ({e}): {}", got.len(), hex(&got));
    }
    got
}

/// One whole MQTT control packet: fixed header byte, Remaining Length varint, body.
pub fn read_packet(stream: &TcpStream) -> Vec<u8> {
    let first = recv_exact(stream, 1)[0];
    finish_packet(stream, first)
}

/// The rest of a packet whose first byte was already read.
pub fn finish_packet(s: &TcpStream, first: u8) -> Vec<u8> {
    let mut pkt = vec![first];
    let mut len = 0usize;
    for i in 0..4 {
        let b = recv_exact(s, 1)[0];
        pkt.push(b);
        len |= usize::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            break;
        }
    }
    pkt.extend(recv_exact(s, len));
    pkt
}

/// The next packet if one starts arriving within `wait`; `None` on silence. Panics if the
/// connection is closed.
pub fn try_read_packet(s: &TcpStream, wait: Duration) -> Option<Vec<u8>> {
    s.set_read_timeout(Some(wait.max(Duration::from_millis(1))))
        .unwrap();
    let mut first = [0u8; 1];
    let r = (&*s).read(&mut first);
    s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    match r {
        Ok(0) => panic!("connection closed while waiting for a packet"),
        Ok(_) => {}
        Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => return None,
        Err(e) => panic!("read error: {e}"),
    }
    Some(finish_packet(s, first[0]))
}

/// One whole packet whose first byte arrives within `wait` (the rest then gets up to 5 s, so a
/// packet is never cut in two by the timeout); `None` on close or timeout.
pub fn read_packet_within(s: &TcpStream, wait: Duration) -> Option<Vec<u8>> {
    let mut r = s;
    let mut read_n = |n: usize, deadline: Instant| -> Option<Vec<u8>> {
        let mut buf = vec![0u8; n];
        let mut got = 0;
        while got < n {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return None;
            }
            s.set_read_timeout(Some(left)).ok()?;
            match r.read(&mut buf[got..]) {
                Ok(0) => return None,
                Ok(k) => got += k,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => return None,
            }
        }
        Some(buf)
    };
    let mut pkt = read_n(1, Instant::now() + wait)?;
    let rest = Instant::now() + Duration::from_secs(5);
    let mut len = 0usize;
    for i in 0..4 {
        let b = read_n(1, rest)?[0];
        pkt.push(b);
        len |= usize::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            break;
        }
    }
    pkt.extend(read_n(len, rest)?);
    Some(pkt)
}

/// Read `expected.len()` bytes and compare; on mismatch (or short read) panic with
/// expected / received / diff lines in hex, where matching nibbles are dots.
pub fn expect_bytes(stream: &TcpStream, expected: &[u8]) {
    let (got, err) = recv_upto(stream, expected.len());
    if got != expected {
        panic!(
            "received bytes differ{}\n{}",
            err.map(|e| format!(" ({e})")).unwrap_or_default(),
            hex_diff(expected, &got)
        );
    }
}

/// Wait until the peer closes the connection (read returns 0, or a reset) within
/// `timeout`. Bytes that arrive first (e.g. a DISCONNECT) are returned.
pub fn expect_closed(stream: &TcpStream, timeout: Duration) -> Vec<u8> {
    let mut s = stream;
    let deadline = Instant::now() + timeout;
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    let old = s.read_timeout().ok().flatten();
    let result = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break Err(format!(
                "connection still open after {timeout:?}; received {}",
                hex(&seen)
            ));
        }
        s.set_read_timeout(Some(left.max(Duration::from_millis(1))))
            .unwrap();
        match s.read(&mut buf) {
            Ok(0) => break Ok(()),
            Ok(k) => seen.extend_from_slice(&buf[..k]),
            Err(e)
                if matches!(
                    e.kind(),
                    ErrorKind::ConnectionReset
                        | ErrorKind::ConnectionAborted
                        | ErrorKind::BrokenPipe
                ) =>
            {
                break Ok(())
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => break Err(format!("unexpected read error {e}")),
        }
    };
    let _ = s.set_read_timeout(old);
    if let Err(e) = result {
        panic!("{e}");
    }
    seen
}

/// Space-separated hex: `20 02 00 00`.
pub fn hex(b: &[u8]) -> String {
    b.iter()
        .map(|x| format!("{x:02x}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Three aligned lines: expected, received, and a diff where each nibble that
/// matches is `.`, a differing one shows the received nibble, a missing byte is
/// `__` and a surplus received byte is shown as received.
pub fn hex_diff(expected: &[u8], received: &[u8]) -> String {
    let n = expected.len().max(received.len());
    let mut diff = Vec::with_capacity(n);
    for i in 0..n {
        diff.push(match (expected.get(i), received.get(i)) {
            (Some(e), Some(r)) => {
                let (eh, el) = (e >> 4, e & 0xf);
                let (rh, rl) = (r >> 4, r & 0xf);
                let c = |a: u8, b: u8| {
                    if a == b {
                        '.'
                    } else {
                        char::from_digit(b as u32, 16).unwrap()
                    }
                };
                format!("{}{}", c(eh, rh), c(el, rl))
            }
            (Some(_), None) => "__".to_string(),
            (None, Some(r)) => format!("{r:02x}"),
            (None, None) => unreachable!(),
        });
    }
    format!(
        "expected ({:>3} B): {}\nreceived ({:>3} B): {}\ndiff             : {}",
        expected.len(),
        hex(expected),
        received.len(),
        hex(received),
        diff.join(" ")
    )
}

// ------------------------------------------------------------ packet builder

/// Client packets built by hand, byte by byte, for protocol tests. Section
/// numbers refer to the MQTT 5.0 spec (3.1.1 where marked).
/// The never-reading flooder's unit (the bounded issue, repeated per transport): 1,000 QoS 1
/// PUBLISH (5.0, ids 1..=1000, 16-byte payloads) on `topic`, one buffer to write over and over.
pub fn qos1_flood_burst(topic: &str) -> Vec<u8> {
    (1..=1000u16)
        .flat_map(|id| packet::publish(true, topic, &[b'x'; 16], 1, Some(id), false, false))
        .collect()
}

/// The verdict on a never-reading flooder whose disconnect logs `gone`: logged once with the
/// not-reading reason, counted once in `/api/status`, and the broker's RSS (`peak_kb`) within
/// `limit_kb` of where it was idle.
pub fn assert_cut_as_not_reading(
    log: &str,
    gone: &str,
    status: &serde_json::Value,
    (idle_kb, peak_kb, limit_kb): (u64, u64, u64),
) {
    let line = log.lines().find(|l| l.contains(gone)).unwrap_or_default();
    assert!(
        line.contains(": not reading (") && line.contains("bytes unsent for 10s)"),
        "logged reason: {line:?}"
    );
    assert_eq!(log.matches(gone).count(), 1, "logged once");
    assert_eq!(status["clients_not_reading_disconnected"].as_u64(), Some(1));
    assert!(
        peak_kb < idle_kb + limit_kb,
        "broker RSS grew from {idle_kb} kB to {peak_kb} kB"
    );
}

pub mod packet {
    /// Variable Byte Integer (§1.5.5): 7 bits per byte, high bit = "more follows".
    /// 0..=127 → 1 byte, ..=16_383 → 2, ..=2_097_151 → 3, ..=268_435_455 → 4.
    pub fn varint(mut n: u32) -> Vec<u8> {
        assert!(n <= 268_435_455, "varint out of range: {n}");
        let mut out = Vec::with_capacity(4);
        loop {
            let mut b = (n % 128) as u8;
            n /= 128;
            if n > 0 {
                b |= 0x80;
            }
            out.push(b);
            if n == 0 {
                return out;
            }
        }
    }

    /// UTF-8 Encoded String (§1.5.4): u16 big-endian length, then the bytes.
    pub fn utf8(s: &str) -> Vec<u8> {
        binary(s.as_bytes())
    }

    /// Binary Data (§1.5.6): u16 big-endian length, then the bytes.
    pub fn binary(b: &[u8]) -> Vec<u8> {
        let len = u16::try_from(b.len()).expect("at most 65535 bytes");
        let mut v = len.to_be_bytes().to_vec();
        v.extend_from_slice(b);
        v
    }

    /// A property block (§2.2.2): Property Length varint, then the properties.
    pub fn properties(props: &[u8]) -> Vec<u8> {
        let mut v = varint(props.len() as u32);
        v.extend_from_slice(props);
        v
    }

    /// Fixed header (§2.1.1: type << 4 | flags) + Remaining Length + body.
    pub fn fixed(first: u8, body: &[u8]) -> Vec<u8> {
        let mut v = vec![first];
        v.extend(varint(body.len() as u32));
        v.extend_from_slice(body);
        v
    }

    /// Connect Flags byte (§3.1.2.3) bit 1.
    const CLEAN: u8 = 0x02;

    /// MQTT 5.0 CONNECT (§3.1): protocol name "MQTT", level 5, Clean Start flag,
    /// Keep Alive, empty properties, client id; no will, user name or password.
    pub fn connect_v5(client_id: &str, keep_alive: u16, clean_start: bool) -> Vec<u8> {
        let mut body = utf8("MQTT"); // 00 04 'M' 'Q' 'T' 'T'
        body.push(5); // Protocol Version
        body.push(if clean_start { CLEAN } else { 0 }); // Connect Flags
        body.extend(keep_alive.to_be_bytes()); // Keep Alive (seconds)
        body.extend(properties(&[])); // Property Length 0
        body.extend(utf8(client_id)); // Payload: Client Identifier
        fixed(0x10, &body)
    }

    /// MQTT 5.0 CONNECT with a will (§3.1.2.5–§3.1.2.7, §3.1.3.2–§3.1.3.4) and the
    /// given raw CONNECT properties (e.g. Session Expiry Interval `11 00 00 00 3c`).
    #[allow(clippy::too_many_arguments)]
    pub fn connect_v5_will(
        client_id: &str,
        keep_alive: u16,
        clean_start: bool,
        will_topic: &str,
        will_payload: &[u8],
        will_qos: u8,
        will_retain: bool,
        connect_props: &[u8],
    ) -> Vec<u8> {
        // Will Flag bit 2, Will QoS bits 4-3, Will Retain bit 5
        let mut flags = (if clean_start { CLEAN } else { 0 }) | 0x04 | (will_qos << 3);
        if will_retain {
            flags |= 0x20;
        }
        let mut body = utf8("MQTT");
        body.push(5);
        body.push(flags);
        body.extend(keep_alive.to_be_bytes());
        body.extend(properties(connect_props));
        body.extend(utf8(client_id));
        body.extend(properties(&[])); // Will Properties
        body.extend(utf8(will_topic));
        body.extend(binary(will_payload));
        fixed(0x10, &body)
    }

    /// MQTT 3.1.1 CONNECT (3.1.1 §3.1): protocol level 4, Clean Session flag, Keep
    /// Alive, client id; no properties exist in 3.1.1.
    pub fn connect_v311(client_id: &str, keep_alive: u16, clean_session: bool) -> Vec<u8> {
        let mut body = utf8("MQTT");
        body.push(4);
        body.push(if clean_session { CLEAN } else { 0 });
        body.extend(keep_alive.to_be_bytes());
        body.extend(utf8(client_id));
        fixed(0x10, &body)
    }

    /// MQTT 3.1.1 CONNECT as a Mosquitto bridge sends it with `try_private true`: protocol
    /// level 4 with bit 7 set (0x84), otherwise as [`connect_v311`].
    pub fn connect_v311_bridge(client_id: &str, keep_alive: u16, clean_session: bool) -> Vec<u8> {
        let mut body = utf8("MQTT");
        body.push(0x80 | 4);
        body.push(if clean_session { CLEAN } else { 0 });
        body.extend(keep_alive.to_be_bytes());
        body.extend(utf8(client_id));
        fixed(0x10, &body)
    }

    /// MQTT 3.1.1 CONNACK the broker must send (3.1.1 §3.2): `20 02 sp rc`.
    pub fn connack_v311(session_present: bool, return_code: u8) -> Vec<u8> {
        vec![0x20, 0x02, session_present as u8, return_code]
    }

    /// PUBLISH (§3.3). `qos` > 0 needs a packet id; `v5` adds an empty property
    /// block. Flags: DUP bit 3, QoS bits 2–1, RETAIN bit 0.
    pub fn publish(
        v5: bool,
        topic: &str,
        payload: &[u8],
        qos: u8,
        packet_id: Option<u16>,
        retain: bool,
        dup: bool,
    ) -> Vec<u8> {
        let first = 0x30 | ((dup as u8) << 3) | (qos << 1) | retain as u8;
        let mut body = utf8(topic);
        if qos > 0 {
            body.extend(packet_id.expect("QoS > 0 needs a packet id").to_be_bytes());
        }
        if v5 {
            body.extend(properties(&[]));
        }
        body.extend_from_slice(payload);
        fixed(first, &body)
    }

    /// SUBSCRIBE (§3.8) to one filter. Fixed header flags must be 0010. In 5.0 the
    /// options byte also holds No Local (bit 2), Retain As Published (bit 3) and
    /// Retain Handling (bits 4–5): all 0 here.
    pub fn subscribe(v5: bool, packet_id: u16, filter: &str, qos: u8) -> Vec<u8> {
        let mut body = packet_id.to_be_bytes().to_vec();
        if v5 {
            body.extend(properties(&[]));
        }
        body.extend(utf8(filter));
        body.push(qos);
        fixed(0x82, &body)
    }

    /// UNSUBSCRIBE (§3.10), one filter. Fixed header flags 0010.
    pub fn unsubscribe(v5: bool, packet_id: u16, filter: &str) -> Vec<u8> {
        let mut body = packet_id.to_be_bytes().to_vec();
        if v5 {
            body.extend(properties(&[]));
        }
        body.extend(utf8(filter));
        fixed(0xa2, &body)
    }

    /// PUBACK / PUBREC / PUBCOMP with just a packet id (reason Success, §3.4.2.1).
    pub fn puback(packet_id: u16) -> Vec<u8> {
        fixed(0x40, &packet_id.to_be_bytes())
    }
    pub fn pubrec(packet_id: u16) -> Vec<u8> {
        fixed(0x50, &packet_id.to_be_bytes())
    }
    /// PUBREL: fixed header flags must be 0010 (§3.6.1).
    pub fn pubrel(packet_id: u16) -> Vec<u8> {
        fixed(0x62, &packet_id.to_be_bytes())
    }
    pub fn pubcomp(packet_id: u16) -> Vec<u8> {
        fixed(0x70, &packet_id.to_be_bytes())
    }

    /// PINGREQ (§3.12): `c0 00`.
    pub fn pingreq() -> Vec<u8> {
        vec![0xc0, 0x00]
    }

    /// PINGRESP the broker must answer with (§3.13): `d0 00`.
    pub fn pingresp() -> Vec<u8> {
        vec![0xd0, 0x00]
    }

    /// MQTT 5.0 DISCONNECT (§3.14) with a reason code and no properties. Reason
    /// 0x00 uses the short form `e0 00` (§3.14.2.1 allows omitting it); any other
    /// reason is `e0 01 rc` (Property Length omitted, meaning 0).
    pub fn disconnect_v5(reason: u8) -> Vec<u8> {
        if reason == 0 {
            vec![0xe0, 0x00]
        } else {
            vec![0xe0, 0x01, reason]
        }
    }

    /// The DISCONNECT the broker sends a 5.0 client for `reason` (§3.14): the reason code, then
    /// its name from the spec's table (§2.4) as Reason String (0x1F), so that clients which
    /// read the reason only from a DISCONNECT with properties (paho-mqtt before 2.2) see it.
    pub fn server_disconnect(reason: u8) -> Vec<u8> {
        let name = match reason {
            0x81 => "Malformed Packet",
            0x82 => "Protocol Error",
            0x87 => "Not authorized",
            0x8B => "Server shutting down",
            0x8D => "Keep Alive timeout",
            0x8E => "Session taken over",
            0x90 => "Topic Name invalid",
            0x93 => "Receive Maximum exceeded",
            0x94 => "Topic Alias invalid",
            0x95 => "Packet too large",
            0x97 => "Quota exceeded",
            0x98 => "Administrative action",
            0x9A => "Retain not supported",
            other => panic!("server_disconnect: add the §2.4 name of 0x{other:02x}"),
        };
        let mut props = vec![0x1f];
        props.extend(utf8(name));
        let mut body = vec![reason];
        body.extend(properties(&props));
        fixed(0xe0, &body)
    }

    /// MQTT 3.1.1 DISCONNECT: `e0 00`.
    pub fn disconnect_v311() -> Vec<u8> {
        vec![0xe0, 0x00]
    }
}

/// `GET /api/status` on the broker's web listener, as JSON.
pub fn api_status(web: std::net::SocketAddr) -> serde_json::Value {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect_timeout(&web, std::time::Duration::from_secs(5))
        .expect("connect to web listener");
    s.set_read_timeout(Some(std::time::Duration::from_secs(5)))
        .unwrap();
    s.write_all(b"GET /api/status HTTP/1.0\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).expect("read /api/status");
    let body = text.split("\r\n\r\n").nth(1).expect("HTTP body");
    serde_json::from_str(body).unwrap_or_else(|e| panic!("bad JSON {e}: {body}"))
}

/// The value of the Prometheus sample `name` (no labels) in `GET /metrics` on the broker's web
/// listener, as `admin` with `admin_password` (`--admin-password`); a panic when it is missing.
pub fn metric(web: std::net::SocketAddr, admin_password: &str, name: &str) -> f64 {
    use base64ct::Encoding;
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect_timeout(&web, std::time::Duration::from_secs(5))
        .expect("connect to web listener");
    s.set_read_timeout(Some(std::time::Duration::from_secs(5)))
        .unwrap();
    let auth = base64ct::Base64::encode_string(format!("admin:{admin_password}").as_bytes());
    let request = format!(
        "GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\nAuthorization: Basic {auth}\r\n\
         Connection: close\r\n\r\n"
    );
    s.write_all(request.as_bytes()).unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).expect("read /metrics");
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no sample {name} in /metrics: {text}"))
}

/// Runs `mqtt5-broker --db DB ARGS...` (an admin subcommand such as `user add` or `backup`)
/// with `stdin` when given (the password), and returns what it printed; killed (our own
/// child, by its handle) and a panic when it does not finish within `limit`.
pub fn run_admin(
    db: &Path,
    args: &[&str],
    stdin: Option<&str>,
    limit: Duration,
) -> std::process::Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_mqtt5-broker"))
        .arg("--db")
        .arg(db)
        .args(args)
        .env("RUST_LOG", "warn")
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the admin command");
    if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
        pipe.write_all(text.as_bytes())
            .expect("write the admin command's stdin");
        // Dropped here: EOF after the text.
    }
    let deadline = Instant::now() + limit;
    while child
        .try_wait()
        .expect("wait for the admin command")
        .is_none()
    {
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("admin command {args:?} did not finish within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    child
        .wait_with_output()
        .expect("read the admin command's output")
}

/// Whether the peer has closed `s` (EOF or reset), without waiting.
pub fn closed_by_peer(s: &TcpStream) -> bool {
    s.set_nonblocking(true).expect("nonblocking");
    let mut b = [0u8; 1];
    let closed = match s.peek(&mut b) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => e.kind() != std::io::ErrorKind::WouldBlock,
    };
    s.set_nonblocking(false).expect("blocking");
    closed
}
