//! Publish/subscribe runs of the load generator: fan-in, fan-out, fixed-rate latency and the
//! windowed round trip. Owns the publisher threads (`bench-pub-<i>` writing, `bench-pub-<i>-r`
//! reading acks) and the subscriber threads (`bench-sub-<j>`); the main thread connects every
//! client, releases them together, then joins them and sums the subscribers' [`Tracker`]s.
//!
//! Every loop is bounded by the run deadline; publishers also stop at their message count or
//! when their sending time is up, whichever comes first.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crossbeam_channel::{bounded, Receiver, SendTimeoutError, Sender, TrySendError};
use mqtt5_broker::protocol::publish::write_out;
use mqtt5_broker::protocol::{Packet, Properties, ProtocolVersion, PublishOut, QoS};

use crate::accounting::{decode_payload, encode_payload, Stamp, Summary, Tracker};
use crate::client::{ack, Conn, ConnectOpts, Error, Writer};
use crate::procfs::{percentiles, Percentiles};

/// Bytes a publisher batches before writing when it is not rate-limited.
const FLUSH_BYTES: usize = 32 * 1024;
/// Most latency samples a subscriber keeps.
const MAX_SAMPLES: usize = 4_000_000;
/// Window of a 3.1.1 publisher at QoS ≥ 1 (3.1.1 has no Receive Maximum; 20 is both brokers'
/// default inbound limit).
const V311_WINDOW: usize = 20;

/// Nanoseconds since the generator started: the clock every payload's send time uses.
pub fn now_ns() -> u64 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    let epoch = *EPOCH.get_or_init(Instant::now);
    u64::try_from(epoch.elapsed().as_nanos()).unwrap_or(u64::MAX)
}

/// Which way topics map.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fan {
    /// Publisher `i` publishes on `<base>/p<i>`; every subscriber subscribes to `<base>/+`.
    In,
    /// Every subscriber subscribes to each publisher's exact topic `<base>/p<i>` (one publisher
    /// in practice).
    Out,
}

/// A fault injected into subscriber 0's stream before accounting (for the generator's own
/// tests): applied to the message (publisher 0, sequence 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Fault {
    Drop,
    Dup,
    Reorder,
    Corrupt,
}

/// What to run.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Where the publishers connect.
    pub endpoint: crate::transport::Endpoint,
    /// Where the subscribers connect: `endpoint`, or another broker that the first one
    /// forwards to (a bridge).
    pub sub_endpoint: crate::transport::Endpoint,
    pub version: ProtocolVersion,
    pub topic_base: String,
    pub client_prefix: String,
    pub fan: Fan,
    pub publishers: usize,
    pub subscribers: usize,
    pub qos: QoS,
    pub payload: usize,
    /// Per publisher.
    pub messages: u64,
    /// Per publisher, messages per second; `None`: as fast as the window allows.
    pub rate: Option<f64>,
    /// Publishers stop sending after this long.
    pub send_for: Duration,
    /// End-to-end window (published but not yet received by every subscriber), for round trips.
    pub e2e_window: Option<usize>,
    /// Receive Maximum the subscribers announce (5.0).
    pub sub_receive_maximum: Option<u16>,
    /// Caps a publisher's window below the broker's Receive Maximum (5.0) or `V311_WINDOW`.
    pub max_publisher_window: Option<u16>,
    /// Keep Alive every client announces (seconds).
    pub keep_alive: u16,
    /// Whole run, connects included.
    pub timeout: Duration,
    /// After the publishers finish, a subscriber that hears nothing this long stops.
    pub drain: Duration,
    pub inject: Option<Fault>,
    /// Write subscriber 0's (send time, latency) of every message here, as CSV.
    pub latency_log: Option<std::path::PathBuf>,
}

/// What a run measured.
#[derive(Debug, Clone, Default)]
pub struct Outcome {
    /// Per publisher.
    pub sent: Vec<u64>,
    /// Sum over subscribers of the messages meant for them.
    pub expected: u64,
    pub summary: Summary,
    /// First publish to last delivery.
    pub duration: Duration,
    /// First publish to the last publisher's last write.
    pub publish_duration: Duration,
    pub latency: Option<Percentiles>,
    /// Errors (protocol, timeouts, refused acks); any makes the run fail.
    pub errors: Vec<String>,
}

struct Shared {
    deadline: Instant,
    pubs_done: AtomicBool,
    /// Messages meant for each subscriber, known once `pubs_done`.
    expected_per_sub: AtomicU64,
    /// Set on a fatal error: everyone winds down.
    abort: AtomicBool,
}

impl Shared {
    fn over(&self) -> bool {
        self.abort.load(Ordering::Relaxed) || Instant::now() >= self.deadline
    }
}

struct PubResult {
    sent: u64,
    end: Instant,
    conn: Option<Conn>,
    errors: Vec<String>,
}

struct SubResult {
    tracker: Tracker,
    samples: Vec<u32>,
    /// (send time ns, latency µs) per message, when `plan.latency_log` asks for it.
    trace: Vec<(u64, u32)>,
    last: Option<Instant>,
    conn: Conn,
    errors: Vec<String>,
}

fn topic(base: &str, publisher: usize) -> String {
    format!("{base}/p{publisher}")
}

/// Connects every client, runs the plan and returns what it measured. Connection failures
/// before the start are returned as `Err`.
pub fn run(plan: &Plan) -> Result<Outcome, Error> {
    let connect_timeout = Duration::from_secs(10).min(plan.timeout);
    let deadline = Instant::now() + plan.timeout;
    // Subscribers first, so that nothing published is missed.
    let mut subs = Vec::with_capacity(plan.subscribers);
    for j in 0..plan.subscribers {
        let opts = ConnectOpts {
            client_id: format!("{}-s{j}", plan.client_prefix),
            version: plan.version,
            receive_maximum: plan.sub_receive_maximum,
            keep_alive: plan.keep_alive,
        };
        let mut conn = Conn::connect(&plan.sub_endpoint, &opts, connect_timeout)?;
        match plan.fan {
            Fan::In => conn.subscribe(
                &format!("{}/+", plan.topic_base),
                plan.qos,
                1,
                connect_timeout,
            )?,
            Fan::Out => {
                for i in 0..plan.publishers {
                    let id = u16::try_from(i + 1).unwrap_or(u16::MAX);
                    conn.subscribe(&topic(&plan.topic_base, i), plan.qos, id, connect_timeout)?;
                }
            }
        }
        subs.push(conn);
    }
    let mut pubs = Vec::with_capacity(plan.publishers);
    for i in 0..plan.publishers {
        let opts = ConnectOpts {
            client_id: format!("{}-p{i}", plan.client_prefix),
            version: plan.version,
            receive_maximum: None,
            keep_alive: plan.keep_alive,
        };
        pubs.push(Conn::connect(&plan.endpoint, &opts, connect_timeout)?);
    }

    let shared = Arc::new(Shared {
        deadline,
        pubs_done: AtomicBool::new(false),
        expected_per_sub: AtomicU64::new(u64::MAX),
        abort: AtomicBool::new(false),
    });
    // Dropping `go` releases every thread at once.
    let (go, go_rx) = bounded::<()>(0);
    let e2e = plan.e2e_window.map(|w| bounded::<()>(w.max(1)));

    let mut sub_handles = Vec::new();
    for (j, conn) in subs.into_iter().enumerate() {
        let (plan, shared, go_rx) = (plan.clone(), shared.clone(), go_rx.clone());
        let credit = e2e.as_ref().map(|(_, rx)| rx.clone());
        sub_handles.push(spawn(format!("bench-sub-{j}"), move || {
            subscriber(j, conn, &plan, &shared, &go_rx, credit)
        })?);
    }
    let mut pub_handles = Vec::new();
    for (i, conn) in pubs.into_iter().enumerate() {
        let (plan, shared, go_rx) = (plan.clone(), shared.clone(), go_rx.clone());
        let credit = e2e.as_ref().map(|(tx, _)| tx.clone());
        pub_handles.push(spawn(format!("bench-pub-{i}"), move || {
            publisher(i, conn, &plan, &shared, &go_rx, credit)
        })?);
    }
    drop(e2e);
    let t0 = Instant::now();
    drop(go);

    let mut out = Outcome::default();
    let mut pub_conns = Vec::new();
    let mut publish_end = t0;
    for (i, h) in pub_handles.into_iter().enumerate() {
        match h.join() {
            Ok(r) => {
                out.sent.push(r.sent);
                publish_end = publish_end.max(r.end);
                out.errors
                    .extend(r.errors.into_iter().map(|e| format!("publisher {i}: {e}")));
                pub_conns.extend(r.conn);
            }
            Err(_) => {
                out.sent.push(0);
                out.errors.push(format!("publisher {i} panicked"));
            }
        }
    }
    let per_sub: u64 = out.sent.iter().sum();
    shared.expected_per_sub.store(per_sub, Ordering::Release);
    shared.pubs_done.store(true, Ordering::Release);
    out.expected = per_sub * plan.subscribers as u64;
    out.publish_duration = publish_end.saturating_duration_since(t0);

    let mut samples = Vec::new();
    let mut last = t0;
    for (j, h) in sub_handles.into_iter().enumerate() {
        match h.join() {
            Ok(r) => {
                let s = r.tracker.summary(&out.sent);
                if let Some(c) = r.tracker.first_corrupt() {
                    out.errors
                        .push(format!("subscriber {j}: first corrupt payload: {c:?}"));
                }
                out.summary.add(&s);
                samples.extend(r.samples);
                if let (Some(path), false) = (&plan.latency_log, r.trace.is_empty()) {
                    if let Err(e) = write_trace(path, &r.trace) {
                        out.errors
                            .push(format!("latency log {}: {e}", path.display()));
                    }
                }
                if let Some(l) = r.last {
                    last = last.max(l);
                }
                out.errors
                    .extend(r.errors.into_iter().map(|e| format!("subscriber {j}: {e}")));
                r.conn.disconnect();
            }
            Err(_) => out.errors.push(format!("subscriber {j} panicked")),
        }
    }
    for c in pub_conns {
        c.disconnect();
    }
    out.duration = last.saturating_duration_since(t0);
    out.latency = percentiles(&mut samples);
    Ok(out)
}

/// Writes `send_ms,latency_us` lines (send time in ms since the generator started).
fn write_trace(path: &std::path::Path, trace: &[(u64, u32)]) -> std::io::Result<()> {
    use std::io::Write;
    let mut f = std::io::BufWriter::new(std::fs::File::create(path)?);
    writeln!(f, "send_ms,latency_us")?;
    for (sent, us) in trace {
        writeln!(f, "{:.3},{us}", *sent as f64 / 1e6)?;
    }
    f.flush()
}

fn spawn<T: Send + 'static>(
    name: String,
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<JoinHandle<T>, Error> {
    thread::Builder::new()
        .name(name.clone())
        .stack_size(256 * 1024)
        .spawn(f)
        .map_err(|e| Error(format!("spawn {name}: {e}")))
}

/// Waits for the start signal (the sender being dropped), bounded by the deadline.
fn wait_go(go: &Receiver<()>, shared: &Shared) {
    let left = shared.deadline.saturating_duration_since(Instant::now());
    let _ = go.recv_timeout(left);
}

/// Encoded PUBLISH packets not yet written, and how many of the publisher's messages have
/// reached the socket.
struct Batch {
    buf: Vec<u8>,
    writer: Writer,
    /// Messages encoded (into `buf` or already written).
    queued: u64,
    /// Messages written to the socket.
    sent: u64,
}

impl Batch {
    fn flush(&mut self) -> Result<(), String> {
        let r = self.writer.write_all(&self.buf);
        self.buf.clear();
        r.map_err(|e| format!("write: {e}"))?;
        self.sent = self.queued;
        Ok(())
    }
}

/// Takes a slot in `window`, flushing `batch` first when it would block.
fn acquire(
    window: &Sender<()>,
    batch: &mut Batch,
    shared: &Shared,
    what: &str,
) -> Result<(), String> {
    match window.try_send(()) {
        Ok(()) => return Ok(()),
        Err(TrySendError::Disconnected(())) => return Err(format!("{what} closed")),
        Err(TrySendError::Full(())) => {}
    }
    batch.flush()?;
    loop {
        if shared.over() {
            return Err(format!("{what}: no acknowledgement before the deadline"));
        }
        match window.send_timeout((), Duration::from_millis(100)) {
            Ok(()) => return Ok(()),
            Err(SendTimeoutError::Timeout(())) => {}
            Err(SendTimeoutError::Disconnected(())) => return Err(format!("{what} closed")),
        }
    }
}

fn publisher(
    id: usize,
    conn: Conn,
    plan: &Plan,
    shared: &Arc<Shared>,
    go: &Receiver<()>,
    e2e: Option<Sender<()>>,
) -> PubResult {
    let mut errors = Vec::new();
    let writer = conn.writer();
    let qos = plan.qos;
    let window_size = if plan.version.is_v5() {
        usize::from(conn.broker_receive_maximum)
    } else {
        V311_WINDOW
    };
    let window_size = plan
        .max_publisher_window
        .map_or(window_size, |cap| window_size.min(usize::from(cap)));
    let (win_tx, win_rx) = bounded::<()>(window_size.clamp(1, 65_000));
    let done = Arc::new(AtomicBool::new(false));
    let reader = {
        let (shared, done, win_rx) = (shared.clone(), done.clone(), win_rx.clone());
        spawn(format!("bench-pub-{id}-r"), move || {
            publisher_reader(conn, qos, &shared, &done, &win_rx)
        })
    };
    let reader = match reader {
        Ok(h) => h,
        Err(e) => {
            return PubResult {
                sent: 0,
                end: Instant::now(),
                conn: None,
                errors: vec![e.0],
            }
        }
    };
    wait_go(go, shared);
    let t0 = Instant::now();
    let send_until = t0 + plan.send_for;
    let topic = topic(&plan.topic_base, id);
    let publisher_id = u32::try_from(id).unwrap_or(u32::MAX);
    let props = Properties::default();
    let mut payload = Vec::with_capacity(plan.payload);
    let mut batch = Batch {
        buf: Vec::with_capacity(FLUSH_BYTES + plan.payload + 64),
        writer,
        queued: 0,
        sent: 0,
    };
    let mut packet_id: u16 = 0;
    for seq in 0..plan.messages {
        let now = Instant::now();
        if now >= send_until || shared.over() {
            break;
        }
        if let Some(rate) = plan.rate {
            let due = t0 + Duration::from_secs_f64(seq as f64 / rate);
            if due > now {
                thread::sleep(due - now);
            }
        }
        if qos != QoS::AtMostOnce {
            if let Err(e) = acquire(&win_tx, &mut batch, shared, "publish window") {
                errors.push(e);
                break;
            }
        }
        if let Some(credit) = &e2e {
            if let Err(e) = acquire(credit, &mut batch, shared, "end-to-end window") {
                errors.push(e);
                break;
            }
        }
        encode_payload(
            &mut payload,
            plan.payload,
            Stamp {
                publisher: publisher_id,
                seq,
                sent_ns: now_ns(),
            },
        );
        if qos != QoS::AtMostOnce {
            packet_id = packet_id.checked_add(1).unwrap_or(1);
        }
        write_out(
            &mut batch.buf,
            plan.version,
            &PublishOut {
                dup: false,
                qos,
                retain: false,
                topic: &topic,
                packet_id: if qos == QoS::AtMostOnce { 0 } else { packet_id },
                properties: &props,
                message_expiry_interval: None,
                topic_alias: None,
                subscription_identifiers: &[],
                payload: &payload,
            },
        );
        batch.queued += 1;
        if plan.rate.is_some() || batch.buf.len() >= FLUSH_BYTES {
            if let Err(e) = batch.flush() {
                errors.push(e);
                break;
            }
        }
    }
    if let Err(e) = batch.flush() {
        errors.push(e);
    }
    let sent = batch.sent;
    let end = Instant::now();
    done.store(true, Ordering::Release);
    let (conn, reader_errors) = match reader.join() {
        Ok((conn, errs)) => (Some(conn), errs),
        Err(_) => (None, vec!["ack reader panicked".to_owned()]),
    };
    errors.extend(reader_errors);
    if !errors.is_empty() {
        shared.abort.store(true, Ordering::Relaxed);
    }
    PubResult {
        sent,
        end,
        conn,
        errors,
    }
}

/// Reads a publisher's acknowledgements: frees a window slot per PUBACK / PUBCOMP (or refused
/// PUBREC) and answers PUBREC with PUBREL. Ends when the writer is done and nothing is in flight.
fn publisher_reader(
    mut conn: Conn,
    qos: QoS,
    shared: &Shared,
    done: &AtomicBool,
    window: &Receiver<()>,
) -> (Conn, Vec<String>) {
    let mut errors = Vec::new();
    let release = |window: &Receiver<()>, errors: &mut Vec<String>, what: &str, id: u16| {
        if window.try_recv().is_err() {
            errors.push(format!("{what} {id} with nothing in flight"));
        }
    };
    loop {
        if done.load(Ordering::Acquire) && window.is_empty() {
            break;
        }
        if shared.over() {
            if !window.is_empty() {
                errors.push(format!(
                    "{} messages still unacknowledged at the deadline",
                    window.len()
                ));
            }
            break;
        }
        match conn.poll_packet() {
            Ok(Some(Packet::PubAck(a))) => {
                if qos != QoS::AtLeastOnce {
                    errors.push(format!("PUBACK {} at QoS {}", a.packet_id, qos as u8));
                }
                if a.reason.is_error() {
                    errors.push(format!("PUBACK {}: {:?}", a.packet_id, a.reason));
                }
                release(window, &mut errors, "PUBACK", a.packet_id);
            }
            Ok(Some(Packet::PubRec(a))) => {
                if a.reason.is_error() {
                    errors.push(format!("PUBREC {}: {:?}", a.packet_id, a.reason));
                    release(window, &mut errors, "PUBREC", a.packet_id);
                } else {
                    // Written with the others before the next blocking read (poll_packet).
                    conn.queue(&Packet::PubRel(ack(a.packet_id)));
                }
            }
            Ok(Some(Packet::PubComp(a))) => release(window, &mut errors, "PUBCOMP", a.packet_id),
            Ok(Some(Packet::Disconnect(d))) => {
                errors.push(format!("DISCONNECT from broker: {:?}", d.reason));
                break;
            }
            Ok(Some(_)) | Ok(None) => {}
            Err(e) => {
                errors.push(e.0);
                break;
            }
        }
    }
    if !errors.is_empty() {
        shared.abort.store(true, Ordering::Relaxed);
    }
    (conn, errors)
}

/// Applies `plan.inject` to subscriber 0's stream: returns the payloads to account for this
/// arrival, in order.
struct Injector {
    fault: Option<Fault>,
    held: Option<Vec<u8>>,
    done: bool,
}

impl Injector {
    fn apply(&mut self, payload: Vec<u8>, size: usize) -> Vec<Vec<u8>> {
        let Some(fault) = self.fault.filter(|_| !self.done) else {
            return vec![payload];
        };
        let stamp = decode_payload(&payload, size).ok();
        let target = stamp.is_some_and(|s| s.publisher == 0 && s.seq == 1);
        if let Some(held) = self.held.take() {
            // Reorder: the held message goes after the next one from publisher 0.
            if stamp.is_some_and(|s| s.publisher == 0) {
                self.done = true;
                return vec![payload, held];
            }
            self.held = Some(held);
            return vec![payload];
        }
        if !target {
            return vec![payload];
        }
        match fault {
            Fault::Drop => {
                self.done = true;
                vec![]
            }
            Fault::Dup => {
                self.done = true;
                vec![payload.clone(), payload]
            }
            Fault::Reorder => {
                self.held = Some(payload);
                vec![]
            }
            Fault::Corrupt => {
                self.done = true;
                let mut p = payload;
                if let Some(b) = p.last_mut() {
                    *b ^= 0x5a;
                }
                vec![p]
            }
        }
    }
}

fn subscriber(
    index: usize,
    mut conn: Conn,
    plan: &Plan,
    shared: &Shared,
    go: &Receiver<()>,
    credit: Option<Receiver<()>>,
) -> SubResult {
    let mut tracker = Tracker::new(plan.publishers, plan.payload);
    let mut samples = Vec::new();
    let mut trace = Vec::new();
    let tracing = index == 0 && plan.latency_log.is_some();
    let mut errors = Vec::new();
    let mut last = None;
    let mut injector = Injector {
        fault: plan.inject.filter(|_| index == 0),
        held: None,
        done: false,
    };
    wait_go(go, shared);
    let mut last_activity = Instant::now();
    let mut expected = u64::MAX;
    loop {
        match conn.poll_packet() {
            Ok(Some(Packet::Publish(p))) => {
                let now_ns = now_ns();
                let now = Instant::now();
                if p.qos != plan.qos {
                    errors.push(format!(
                        "delivered at QoS {} instead of {}",
                        p.qos as u8, plan.qos as u8
                    ));
                }
                match p.qos {
                    QoS::AtMostOnce => {}
                    QoS::AtLeastOnce => conn.queue(&Packet::PubAck(ack(p.packet_id))),
                    QoS::ExactlyOnce => conn.queue(&Packet::PubRec(ack(p.packet_id))),
                }
                for payload in injector.apply(p.payload, plan.payload) {
                    let (_, stamp) = tracker.record_payload(&payload);
                    if let Some(s) = stamp {
                        if samples.len() < MAX_SAMPLES {
                            let us = now_ns.saturating_sub(s.sent_ns) / 1000;
                            let us = u32::try_from(us).unwrap_or(u32::MAX);
                            samples.push(us);
                            if tracing {
                                trace.push((s.sent_ns, us));
                            }
                        }
                    }
                }
                if let Some(c) = &credit {
                    let _ = c.try_recv();
                }
                last = Some(now);
                last_activity = now;
            }
            Ok(Some(Packet::PubRel(a))) => conn.queue(&Packet::PubComp(ack(a.packet_id))),
            Ok(Some(Packet::Disconnect(d))) => {
                errors.push(format!("DISCONNECT from broker: {:?}", d.reason));
                break;
            }
            Ok(Some(_)) | Ok(None) => {}
            Err(e) => {
                errors.push(e.0);
                break;
            }
        }
        if expected == u64::MAX && shared.pubs_done.load(Ordering::Acquire) {
            expected = shared.expected_per_sub.load(Ordering::Acquire);
            last_activity = last_activity.max(Instant::now());
        }
        if expected != u64::MAX {
            if tracker.unique() >= expected {
                break;
            }
            if last_activity.elapsed() >= plan.drain {
                break;
            }
        }
        if shared.abort.load(Ordering::Relaxed) {
            break;
        }
        if Instant::now() >= shared.deadline {
            errors.push("run deadline reached while receiving".to_owned());
            break;
        }
    }
    if let Err(e) = conn.flush() {
        errors.push(format!("flush acks: {e}"));
    }
    SubResult {
        tracker,
        samples,
        trace,
        last,
        conn,
        errors,
    }
}
