//! Durability against the real broker binary (issue 4, README "Durability"): `kill -9` while
//! QoS 1 / QoS 2 messages flow to offline persistent sessions (5.0 Session Expiry > 0 with Clean
//! Start 0, and 3.1.1 Clean Session 0), a restart on the same file, and then every message the
//! publishers got a PUBACK / PUBREC for is delivered — none lost with the default settings, no
//! QoS 2 message twice, in publish order. Also: retained messages (QoS 0 / 1 / 2, and a cleared
//! one) across `kill -9` and a clean stop; subscriptions that still route after a restart;
//! Session Expiry counted across a restart (§3.1.2.11.2); `--sync full` and `--sync relaxed`.
//!
//! Raw sockets (the `common` harness) throughout, so that exactly which acknowledgements arrived
//! before the kill is known: an ack read from the socket after the kill was still sent by the
//! broker before it died, so it counts. Every loop is bounded in time and in count.

mod common;

use common::flow::{body_start, read_varint, u16_at};
use common::*;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::{self, Read};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

/// Upper bound for one expected event.
const WAIT: Duration = Duration::from_secs(5);
/// How long "nothing (more) arrives" is watched for.
const QUIET: Duration = Duration::from_millis(500);
/// Messages per publisher in the kill test (two publishers, 5.0 and 3.1.1: 2,000 in all, half
/// QoS 1 and half QoS 2).
const N_PER_PUBLISHER: u32 = 1000;
/// The broker is killed once this many publishes (of both publishers) are acknowledged.
const KILL_AFTER_ACKS: usize = 600;
/// Unacknowledged QoS>0 publishes a publisher keeps in flight.
const WINDOW: usize = 16;
/// Session Expiry Interval 3600 s (CONNECT property 0x11).
const EXPIRY_3600: [u8; 5] = [0x11, 0x00, 0x00, 0x0e, 0x10];
/// Session Expiry Interval 2 s.
const EXPIRY_2: [u8; 5] = [0x11, 0x00, 0x00, 0x00, 0x02];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum V {
    V5,
    V311,
}

impl V {
    fn v5(self) -> bool {
        self == V::V5
    }
}

// --------------------------------------------------------------------- packets

/// CONNECT, keep alive 60 s, anonymous; the properties only for 5.0.
fn connect_pkt(v: V, client_id: &str, clean: bool, props: &[u8]) -> Vec<u8> {
    let mut body = packet::utf8("MQTT");
    body.push(if v.v5() { 5 } else { 4 });
    body.push(if clean { 0x02 } else { 0 });
    body.extend(60u16.to_be_bytes());
    if v.v5() {
        body.extend(packet::properties(props));
    }
    body.extend(packet::utf8(client_id));
    packet::fixed(0x10, &body)
}

/// Connects (CONNACK Success asserted); returns the socket and Session Present.
fn connect(
    addr: SocketAddr,
    v: V,
    client_id: &str,
    clean: bool,
    props: &[u8],
) -> (TcpStream, bool) {
    let s = connect_raw(addr);
    send(&s, &connect_pkt(v, client_id, clean, props));
    let ack = read_packet(&s);
    assert_eq!(ack[0], 0x20, "expected CONNACK, got {}", hex(&ack));
    let i = body_start(&ack);
    assert_eq!(ack[i + 1], 0, "{v:?} {client_id}: CONNACK {}", hex(&ack));
    (s, ack[i] & 1 == 1)
}

fn disconnect(s: &TcpStream, v: V) {
    send(
        s,
        &if v.v5() {
            packet::disconnect_v5(0)
        } else {
            packet::disconnect_v311()
        },
    );
    expect_closed(s, WAIT);
}

/// SUBSCRIBE to (filter, QoS) pairs; the SUBACK must grant each QoS.
fn subscribe(s: &TcpStream, v: V, packet_id: u16, filters: &[(&str, u8)]) {
    let mut body = packet_id.to_be_bytes().to_vec();
    if v.v5() {
        body.extend(packet::properties(&[]));
    }
    for (f, q) in filters {
        body.extend(packet::utf8(f));
        body.push(*q);
    }
    send(s, &packet::fixed(0x82, &body));
    let pkt = read_packet(s);
    assert_eq!(pkt[0], 0x90, "expected SUBACK, got {}", hex(&pkt));
    let mut i = body_start(&pkt) + 2;
    if v.v5() {
        let (plen, n) = read_varint(&pkt[i..]);
        i += n + plen;
    }
    let want: Vec<u8> = filters.iter().map(|(_, q)| *q).collect();
    assert_eq!(pkt[i..].to_vec(), want, "SUBACK codes: {}", hex(&pkt));
}

/// (first byte, packet id, reason) of an acknowledgement; a missing reason is 0x00.
fn parse_ack(pkt: &[u8]) -> (u8, u16, u8) {
    let i = body_start(pkt);
    let reason = if pkt.len() - i >= 3 { pkt[i + 2] } else { 0 };
    (pkt[0], u16_at(pkt, i), reason)
}

/// Publishes and completes the flow (QoS 1: PUBACK; QoS 2: PUBREC, PUBREL, PUBCOMP); returns
/// the reason of the PUBACK / PUBREC (0 for 3.1.1). Nothing else may arrive on this connection.
fn publish_acked(
    s: &TcpStream,
    v: V,
    topic: &str,
    payload: &[u8],
    qos: u8,
    retain: bool,
    packet_id: u16,
) -> u8 {
    send(
        s,
        &packet::publish(v.v5(), topic, payload, qos, Some(packet_id), retain, false),
    );
    let pkt = read_packet(s);
    let (first, id, reason) = parse_ack(&pkt);
    let want = if qos == 1 { 0x40 } else { 0x50 };
    assert_eq!((first, id), (want, packet_id), "ack: {}", hex(&pkt));
    if qos == 2 && reason < 0x80 {
        send(s, &packet::pubrel(packet_id));
        let comp = read_packet(s);
        assert_eq!(parse_ack(&comp).0, 0x70, "PUBCOMP: {}", hex(&comp));
    }
    reason
}

/// One packet, or an error (EOF, reset, timeout) instead of a panic: the publishers see the
/// broker die.
fn read_packet_io(s: &TcpStream) -> io::Result<Vec<u8>> {
    fn exact(mut s: &TcpStream, n: usize) -> io::Result<Vec<u8>> {
        let mut buf = vec![0u8; n];
        s.read_exact(&mut buf)?;
        Ok(buf)
    }
    let mut pkt = exact(s, 1)?;
    let mut len = 0usize;
    for i in 0..4 {
        let b = exact(s, 1)?[0];
        pkt.push(b);
        len |= usize::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            break;
        }
    }
    pkt.extend(exact(s, len)?);
    Ok(pkt)
}

/// A PUBLISH as received.
#[derive(Debug, Clone)]
struct Pub {
    topic: String,
    payload: String,
    qos: u8,
    retain: bool,
    dup: bool,
}

/// The subscriber's side of the flows: a PUBLISH is acknowledged (PUBACK / PUBREC) and returned;
/// a PUBREL is answered with PUBCOMP. `None` when nothing arrives within `timeout`.
fn next_publish(s: &TcpStream, v: V, timeout: Duration) -> Option<Pub> {
    let deadline = Instant::now() + timeout;
    for _ in 0..100_000 {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return None;
        }
        let pkt = try_read_packet(s, left)?;
        match pkt[0] >> 4 {
            3 => {
                let qos = (pkt[0] >> 1) & 3;
                let mut i = body_start(&pkt);
                let tlen = usize::from(u16_at(&pkt, i));
                i += 2;
                let topic = String::from_utf8(pkt[i..i + tlen].to_vec()).unwrap();
                i += tlen;
                if qos > 0 {
                    let id = u16_at(&pkt, i);
                    i += 2;
                    send(
                        s,
                        &if qos == 1 {
                            packet::puback(id)
                        } else {
                            packet::pubrec(id)
                        },
                    );
                }
                if v.v5() {
                    let (plen, n) = read_varint(&pkt[i..]);
                    i += n + plen;
                }
                return Some(Pub {
                    topic,
                    payload: String::from_utf8_lossy(&pkt[i..]).into_owned(),
                    qos,
                    retain: pkt[0] & 1 == 1,
                    dup: pkt[0] & 0x08 != 0,
                });
            }
            6 => send(s, &packet::pubcomp(u16_at(&pkt, body_start(&pkt)))),
            _ => panic!("{v:?}: expected PUBLISH or PUBREL, got {}", hex(&pkt)),
        }
    }
    panic!("100,000 packets without a PUBLISH");
}

/// Every message until nothing arrives for `QUIET`, within `limit`.
fn drain(s: &TcpStream, v: V, limit: Duration) -> Vec<Pub> {
    let deadline = Instant::now() + limit;
    let mut got = Vec::new();
    while Instant::now() < deadline {
        match next_publish(s, v, QUIET) {
            Some(p) => got.push(p),
            None => break,
        }
    }
    got
}

// -------------------------------------------------------- publishers (kill test)

/// What a publisher saw before the broker died.
#[derive(Debug, Default)]
struct Outcome {
    /// Sequence numbers whose PUBACK (QoS 1) or PUBREC (QoS 2) with a success reason arrived.
    acked: Vec<u32>,
    /// Sequence numbers sent (acknowledged or not).
    sent: u32,
    /// Acknowledgements with a failure reason (must stay empty).
    refused: Vec<(u32, u8)>,
    /// How the stream ended.
    end: String,
}

fn topic_of(seq: u32) -> (&'static str, u8) {
    if seq.is_multiple_of(2) {
        ("dur/q1", 1)
    } else {
        ("dur/q2", 2)
    }
}

fn payload_of(prefix: &str, seq: u32) -> String {
    format!("{prefix}:{seq:05}")
}

/// Publishes `n` messages (even sequence numbers QoS 1 on dur/q1, odd ones QoS 2 on dur/q2) with
/// up to [`WINDOW`] in flight, until done or the connection breaks; counts acks in `counter`.
/// Never panics after the CONNACK: the broker is killed under it.
fn publish_stream(
    addr: SocketAddr,
    v: V,
    prefix: &str,
    n: u32,
    counter: Arc<AtomicUsize>,
) -> Outcome {
    let (s, _) = connect(addr, v, prefix, true, &[]);
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut out = Outcome::default();
    let mut in_flight: HashMap<u16, u32> = HashMap::new();
    let mut next = 0u32;
    let deadline = Instant::now() + Duration::from_secs(120);
    out.end = loop {
        if Instant::now() > deadline {
            break "publisher time limit".into();
        }
        while in_flight.len() < WINDOW && next < n {
            let (topic, qos) = topic_of(next);
            let id = u16::try_from(next + 1).unwrap();
            let pkt = packet::publish(
                v.v5(),
                topic,
                payload_of(prefix, next).as_bytes(),
                qos,
                Some(id),
                false,
                false,
            );
            if let Err(e) = (&s).write_all_io(&pkt) {
                return finish(
                    out,
                    format!("write error: {e}"),
                    &s,
                    &mut in_flight,
                    &counter,
                );
            }
            in_flight.insert(id, next);
            next += 1;
            out.sent = next;
        }
        if in_flight.is_empty() {
            break "all acknowledged".into();
        }
        match read_packet_io(&s) {
            Ok(pkt) => {
                if let Err(e) = on_ack(&s, &pkt, &mut out, &mut in_flight, &counter) {
                    break e;
                }
            }
            Err(e) => break format!("read: {e}"),
        }
    };
    out
}

/// Reads what is left on the socket after a write failed (acks the broker sent before dying).
fn finish(
    mut out: Outcome,
    why: String,
    s: &TcpStream,
    in_flight: &mut HashMap<u16, u32>,
    counter: &AtomicUsize,
) -> Outcome {
    for _ in 0..10_000 {
        match read_packet_io(s) {
            Ok(pkt) => {
                if on_ack(s, &pkt, &mut out, in_flight, counter).is_err() {
                    break;
                }
            }
            Err(_) => break,
        }
    }
    out.end = why;
    out
}

fn on_ack(
    s: &TcpStream,
    pkt: &[u8],
    out: &mut Outcome,
    in_flight: &mut HashMap<u16, u32>,
    counter: &AtomicUsize,
) -> Result<(), String> {
    let (first, id, reason) = parse_ack(pkt);
    let Some(&seq) = in_flight.get(&id) else {
        return Err(format!("ack for unknown packet id: {}", hex(pkt)));
    };
    match first {
        0x40 | 0x50 => {
            if reason < 0x80 {
                out.acked.push(seq);
                counter.fetch_add(1, Ordering::SeqCst);
            } else {
                out.refused.push((seq, reason));
            }
            if first == 0x40 || reason >= 0x80 {
                in_flight.remove(&id);
            } else {
                // PUBREC: release; the packet id stays in use until PUBCOMP.
                let _ = s.write_all_io(&packet::pubrel(id));
            }
        }
        0x70 => {
            in_flight.remove(&id);
        }
        _ => return Err(format!("unexpected packet {}", hex(pkt))),
    }
    Ok(())
}

/// `write_all` returning the error instead of panicking (the harness's `send` panics).
trait WriteIo {
    fn write_all_io(self, data: &[u8]) -> io::Result<()>;
}

impl WriteIo for &TcpStream {
    fn write_all_io(mut self, data: &[u8]) -> io::Result<()> {
        io::Write::write_all(&mut self, data)
    }
}

// ------------------------------------------------------------------- kill test

/// The offline persistent sessions of the kill test: (version, client id, CONNECT properties).
const SUBSCRIBERS: [(V, &str, &[u8]); 2] = [
    (V::V5, "dur-sub-v5", &EXPIRY_3600),
    (V::V311, "dur-sub-v311", &[]),
];

/// `'a', 'b'` for an SQL `IN (…)` list of client ids (the tests' own, no quotes in them).
fn sql_list(ids: &[&str]) -> String {
    ids.iter()
        .map(|id| format!("'{id}'"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Waits until the persistent sessions `ids` are in the database file as offline
/// (`disconnected_at` set). Going offline is the last write a connection makes for its session,
/// on the same in-order channel as its subscriptions and its will (or the clearing of it), so
/// once it is committed all of those are too — the state a `kill -9` must find. There is no
/// acknowledgement for these writes ("within ~100 ms", README), so the file is what to wait on.
fn await_offline_on_disk(b: &Broker, ids: &[&str]) {
    b.await_db(
        &format!("sessions {ids:?} offline on disk"),
        &format!(
            "SELECT count(*) FROM sessions WHERE disconnected_at IS NOT NULL AND client_id IN ({})",
            sql_list(ids)
        ),
        ids.len() as i64,
    );
}

fn subscriber_ids() -> Vec<&'static str> {
    SUBSCRIBERS.iter().map(|(_, id, _)| *id).collect()
}

#[test]
fn kill9_mid_stream_loses_no_acknowledged_qos1_qos2_message_4_3_4_4() {
    // The offline queues must hold the whole stream (2,000 > the default 1,000 per client); every
    // other setting is the default, in particular `--sync normal`.
    let mut b = Broker::start(&["--allow-anonymous", "--max-queued-messages", "100000"]);

    // Persistent sessions subscribed at QoS 1 and 2, then offline.
    for (v, id, props) in SUBSCRIBERS {
        let (s, _) = connect(b.mqtt, v, id, v.v5(), props);
        subscribe(&s, v, 1, &[("dur/q1", 1), ("dur/q2", 2)]);
        disconnect(&s, v);
    }
    await_offline_on_disk(&b, &subscriber_ids());

    let counter = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let publishers: Vec<_> = [(V::V5, "pub-v5"), (V::V311, "pub-v311")]
        .into_iter()
        .map(|(v, prefix)| {
            let (addr, counter) = (b.mqtt, counter.clone());
            thread::spawn(move || publish_stream(addr, v, prefix, N_PER_PUBLISHER, counter))
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(60);
    while counter.load(Ordering::SeqCst) < KILL_AFTER_ACKS {
        assert!(
            Instant::now() < deadline,
            "only {} acks within 60 s",
            counter.load(Ordering::SeqCst)
        );
        thread::sleep(Duration::from_millis(1));
    }
    let at_kill = counter.load(Ordering::SeqCst);
    b.kill9();
    let kill_time = started.elapsed();
    let outcomes: Vec<Outcome> = publishers
        .into_iter()
        .map(|h| h.join().expect("publisher thread"))
        .collect();
    let total_acked: usize = outcomes.iter().map(|o| o.acked.len()).sum();
    let total_sent: u32 = outcomes.iter().map(|o| o.sent).sum();
    eprintln!(
        "killed after {kill_time:?} with {at_kill} acks counted; finally acked {total_acked}, \
         sent {total_sent} of {}; ends: {:?}",
        2 * N_PER_PUBLISHER,
        outcomes.iter().map(|o| o.end.as_str()).collect::<Vec<_>>()
    );
    for o in &outcomes {
        assert!(o.refused.is_empty(), "refused publishes: {:?}", o.refused);
    }
    assert!(
        total_acked < 2 * N_PER_PUBLISHER as usize,
        "the stream finished before the kill: not a mid-stream crash"
    );

    b.crash_restart();
    assert!(
        b.wait_for_log("persistent sessions", WAIT),
        "restore logged:\n{}",
        b.log()
    );

    // Subscriptions survive: a publish after the restart reaches the offline sessions
    // (reason 0x00, not 0x10 No matching subscribers).
    let (p, _) = connect(b.mqtt, V::V5, "pub-after", true, &[]);
    assert_eq!(
        publish_acked(&p, V::V5, "dur/q1", b"after:q1", 1, false, 1),
        0x00
    );
    assert_eq!(
        publish_acked(&p, V::V5, "dur/q2", b"after:q2", 2, false, 2),
        0x00
    );

    let prefixes = ["pub-v5", "pub-v311"];
    for (v, id, props) in SUBSCRIBERS {
        let (s, present) = connect(b.mqtt, v, id, false, props);
        assert!(
            present,
            "{v:?} {id}: Session Present 1 after kill -9 + restart"
        );
        // Expected: every acknowledged message, plus the two published after the restart.
        let mut expected: HashMap<String, u8> = HashMap::new();
        for (o, prefix) in outcomes.iter().zip(prefixes) {
            for &seq in &o.acked {
                expected.insert(payload_of(prefix, seq), topic_of(seq).1);
            }
        }
        expected.insert("after:q1".into(), 1);
        expected.insert("after:q2".into(), 2);

        let t0 = Instant::now();
        let mut got: Vec<Pub> = Vec::new();
        let mut seen: HashSet<String> = HashSet::new();
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline && !expected.keys().all(|k| seen.contains(k)) {
            match next_publish(&s, v, WAIT) {
                Some(p) => {
                    seen.insert(p.payload.clone());
                    got.push(p);
                }
                None => break,
            }
        }
        // Whatever else comes (duplicates would show up here).
        got.extend(drain(&s, v, Duration::from_secs(10)));
        seen.extend(got.iter().map(|p| p.payload.clone()));
        eprintln!(
            "{v:?} {id}: {} messages in {:?} ({} expected)",
            got.len(),
            t0.elapsed(),
            expected.len()
        );

        let mut missing: Vec<&String> = expected.keys().filter(|k| !seen.contains(*k)).collect();
        missing.sort();
        assert!(
            missing.is_empty(),
            "{v:?} {id}: {} acknowledged messages lost after kill -9, e.g. {:?}",
            missing.len(),
            &missing[..missing.len().min(20)]
        );
        let mut counts: HashMap<&str, usize> = HashMap::new();
        for p in &got {
            *counts.entry(p.payload.as_str()).or_default() += 1;
            let (topic, qos) = expected_route(&p.payload);
            assert_eq!(
                (p.topic.as_str(), p.qos),
                (topic, qos),
                "{v:?} {id}: {p:?} delivered on the wrong topic or QoS"
            );
            assert!(!p.retain, "{v:?} {id}: not a retained message: {p:?}");
        }
        let dup_qos2: Vec<(&str, usize)> = counts
            .iter()
            .filter(|(payload, n)| **n > 1 && expected_route(payload).1 == 2)
            .map(|(p, n)| (*p, *n))
            .collect();
        assert!(
            dup_qos2.is_empty(),
            "{v:?} {id}: QoS 2 messages delivered more than once: {dup_qos2:?}"
        );
        let dup_qos1 = counts.values().filter(|n| **n > 1).count();
        if dup_qos1 > 0 {
            eprintln!("{v:?} {id}: {dup_qos1} QoS 1 messages delivered twice (allowed)");
        }
        // Order (§4.6): per publisher and topic, in the order published. Only the first copy
        // of each message counts.
        let mut last: BTreeMap<(String, String), u32> = BTreeMap::new();
        let mut first_copy = HashSet::new();
        for p in &got {
            if p.payload.starts_with("after:") || !first_copy.insert(p.payload.clone()) {
                continue;
            }
            let (prefix, seq) = p.payload.rsplit_once(':').unwrap();
            let seq: u32 = seq.parse().unwrap();
            let key = (prefix.to_owned(), p.topic.clone());
            if let Some(prev) = last.insert(key.clone(), seq) {
                assert!(
                    seq > prev,
                    "{v:?} {id}: {key:?}: message {seq} delivered after {prev} (MQTT-4.6.0-6)"
                );
            }
        }
        disconnect(&s, v);
    }
}

/// (topic, QoS) a payload of the kill test was published with.
fn expected_route(payload: &str) -> (&'static str, u8) {
    match payload {
        "after:q1" => ("dur/q1", 1),
        "after:q2" => ("dur/q2", 2),
        _ => {
            let seq = payload.rsplit(':').next().and_then(|s| s.parse().ok());
            topic_of(seq.unwrap_or_else(|| panic!("unexpected payload {payload:?}")))
        }
    }
}

/// A subscriber's side of delivery as an application sees it, kept across a reconnect: QoS 2 by
/// §4.3.3 method B — delivered on the first PUBLISH, its packet id remembered until PUBREL, a
/// PUBLISH with a remembered id is the same message (not delivered again).
#[derive(Debug, Default)]
struct SubState {
    /// Payloads handed to the application, in order (QoS 1 may repeat).
    delivered: Vec<String>,
    /// QoS 2: packet id → payload, PUBREC sent, PUBREL not yet received.
    pending: HashMap<u16, String>,
    /// QoS 2 payloads whose PUBCOMP was sent.
    completed: HashSet<String>,
    /// Protocol breaches seen (must stay empty).
    errors: Vec<String>,
}

impl SubState {
    /// Handles one packet from the broker. `Err` when the answer cannot be written (the broker
    /// died) or the packet is neither PUBLISH nor PUBREL (also recorded in `errors`).
    fn handle(&mut self, s: &TcpStream, v: V, pkt: &[u8]) -> Result<(), String> {
        match pkt[0] >> 4 {
            3 => {
                let qos = (pkt[0] >> 1) & 3;
                let mut i = body_start(pkt);
                let tlen = usize::from(u16_at(pkt, i));
                i += 2 + tlen;
                let id = if qos > 0 { u16_at(pkt, i) } else { 0 };
                if qos > 0 {
                    i += 2;
                }
                if v.v5() {
                    let (plen, n) = read_varint(&pkt[i..]);
                    i += n + plen;
                }
                let payload = String::from_utf8_lossy(&pkt[i..]).into_owned();
                match qos {
                    2 => {
                        match self.pending.get(&id) {
                            Some(p) if *p == payload => {} // a resend of the same message
                            Some(p) => self.errors.push(format!(
                                "packet id {id} reused for {payload} while {p} awaits PUBREL"
                            )),
                            None => {
                                if self.completed.contains(&payload) {
                                    self.errors.push(format!(
                                        "QoS 2 message {payload} delivered again after PUBCOMP"
                                    ));
                                }
                                self.delivered.push(payload.clone());
                                self.pending.insert(id, payload);
                            }
                        }
                        s.write_all_io(&packet::pubrec(id))
                            .map_err(|e| e.to_string())
                    }
                    1 => {
                        self.delivered.push(payload);
                        s.write_all_io(&packet::puback(id))
                            .map_err(|e| e.to_string())
                    }
                    _ => {
                        self.delivered.push(payload);
                        Ok(())
                    }
                }
            }
            6 => {
                let id = u16_at(pkt, body_start(pkt));
                if let Some(p) = self.pending.remove(&id) {
                    self.completed.insert(p);
                }
                s.write_all_io(&packet::pubcomp(id))
                    .map_err(|e| e.to_string())
            }
            _ => {
                let e = format!("unexpected packet {}", hex(pkt));
                self.errors.push(e.clone());
                Err(e)
            }
        }
    }
}

/// Reads (slowly: `pause` per packet) until the connection breaks or `limit` passes.
fn subscriber_loop(s: &TcpStream, v: V, state: &mut SubState, pause: Duration, limit: Duration) {
    let deadline = Instant::now() + limit;
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    for _ in 0..1_000_000 {
        if Instant::now() > deadline {
            return;
        }
        let Ok(pkt) = read_packet_io(s) else { return };
        if state.handle(s, v, &pkt).is_err() {
            return; // the broker was killed (or a protocol error, kept in `errors`)
        }
        thread::sleep(pause);
    }
}

#[test]
fn kill9_with_subscribers_online_delivers_every_acknowledged_message_once_for_qos2_4_3_3() {
    // The same stream, but the persistent sessions are connected and reading slowly (Receive
    // Maximum 10 for the 5.0 one), so that at the kill some messages are delivered, some in
    // flight (PUBLISH sent, PUBREC sent, PUBREL sent) and the rest queued.
    let mut b = Broker::start(&["--allow-anonymous", "--max-queued-messages", "100000"]);
    let receive_max_10 = [0x11, 0x00, 0x00, 0x0e, 0x10, 0x21, 0x00, 0x0a];
    let subs: [(V, &str, &[u8]); 2] = [
        (V::V5, "live-sub-v5", &receive_max_10),
        (V::V311, "live-sub-v311", &[]),
    ];
    let mut sub_threads = Vec::new();
    for (v, id, props) in subs {
        let (s, _) = connect(b.mqtt, v, id, v.v5(), props);
        subscribe(&s, v, 1, &[("dur/q1", 1), ("dur/q2", 2)]);
        sub_threads.push(thread::spawn(move || {
            let mut st = SubState::default();
            subscriber_loop(
                &s,
                v,
                &mut st,
                Duration::from_millis(1),
                Duration::from_secs(90),
            );
            st
        }));
    }
    // Connected, so not offline: wait for the four subscriptions themselves.
    b.await_db(
        "the live subscribers' subscriptions on disk",
        "SELECT count(*) FROM subscriptions WHERE client_id IN ('live-sub-v5', 'live-sub-v311')",
        4,
    );

    let counter = Arc::new(AtomicUsize::new(0));
    let publishers: Vec<_> = [(V::V5, "pub-v5"), (V::V311, "pub-v311")]
        .into_iter()
        .map(|(v, prefix)| {
            let (addr, counter) = (b.mqtt, counter.clone());
            thread::spawn(move || publish_stream(addr, v, prefix, N_PER_PUBLISHER, counter))
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(60);
    while counter.load(Ordering::SeqCst) < KILL_AFTER_ACKS {
        assert!(Instant::now() < deadline, "too few acks within 60 s");
        thread::sleep(Duration::from_millis(1));
    }
    b.kill9();
    let outcomes: Vec<Outcome> = publishers
        .into_iter()
        .map(|h| h.join().expect("publisher thread"))
        .collect();
    let states: Vec<SubState> = sub_threads
        .into_iter()
        .map(|h| h.join().expect("subscriber thread"))
        .collect();
    let acked: usize = outcomes.iter().map(|o| o.acked.len()).sum();
    assert!(
        acked < 2 * N_PER_PUBLISHER as usize,
        "stream ended before the kill"
    );
    for (st, (v, id, _)) in states.iter().zip(subs) {
        eprintln!(
            "{v:?} {id} at the kill: {} delivered, {} QoS 2 awaiting PUBREL, {} QoS 2 completed; \
             {acked} acknowledged to publishers",
            st.delivered.len(),
            st.pending.len(),
            st.completed.len()
        );
    }

    b.crash_restart();
    for (mut st, (v, id, props)) in states.into_iter().zip(subs) {
        let (s, present) = connect(b.mqtt, v, id, false, props);
        assert!(present, "{v:?} {id}: session lost");
        let expected: Vec<String> = outcomes
            .iter()
            .zip(["pub-v5", "pub-v311"])
            .flat_map(|(o, prefix)| o.acked.iter().map(move |seq| payload_of(prefix, *seq)))
            .collect();
        let deadline = Instant::now() + Duration::from_secs(60);
        for _ in 0..1_000_000 {
            let have: HashSet<&String> = st.delivered.iter().collect();
            if Instant::now() > deadline || expected.iter().all(|p| have.contains(p)) {
                break;
            }
            match try_read_packet(&s, WAIT) {
                Some(pkt) => {
                    if let Err(e) = st.handle(&s, v, &pkt) {
                        panic!("{v:?} {id}: {e}");
                    }
                }
                None => break,
            }
        }
        // Anything more (a duplicate would show up here), until quiet.
        for _ in 0..100_000 {
            match try_read_packet(&s, QUIET) {
                Some(pkt) => st.handle(&s, v, &pkt).unwrap(),
                None => break,
            }
        }
        let have: HashSet<&String> = st.delivered.iter().collect();
        let missing: Vec<&String> = expected.iter().filter(|p| !have.contains(p)).collect();
        assert!(
            missing.is_empty(),
            "{v:?} {id}: {} acknowledged messages lost, e.g. {:?}",
            missing.len(),
            &missing[..missing.len().min(20)]
        );
        assert!(st.errors.is_empty(), "{v:?} {id}: {:?}", st.errors);
        let mut counts: HashMap<&str, usize> = HashMap::new();
        for p in &st.delivered {
            *counts.entry(p.as_str()).or_default() += 1;
        }
        let dup2: Vec<_> = counts
            .iter()
            .filter(|(p, n)| **n > 1 && expected_route(p).1 == 2)
            .collect();
        assert!(
            dup2.is_empty(),
            "{v:?} {id}: QoS 2 delivered twice: {dup2:?}"
        );
        assert!(
            st.pending.is_empty(),
            "{v:?} {id}: QoS 2 flows never released: {:?}",
            st.pending
        );
        eprintln!(
            "{v:?} {id}: {} deliveries in all, {} QoS 1 repeats",
            st.delivered.len(),
            counts.values().filter(|n| **n > 1).count()
        );
        disconnect(&s, v);
    }
}

// ------------------------------------------------------------------- retained

/// What a new subscription to `ret/#` gets: (topic, payload, QoS, retain), sorted.
fn retained_snapshot(addr: SocketAddr, v: V, id: &str) -> Vec<(String, String, u8, bool)> {
    let (s, _) = connect(addr, v, id, true, &[]);
    subscribe(&s, v, 1, &[("ret/#", 2)]);
    let mut got: Vec<_> = drain(&s, v, WAIT)
        .into_iter()
        .map(|p| (p.topic, p.payload, p.qos, p.retain))
        .collect();
    got.sort();
    disconnect(&s, v);
    got
}

#[test]
fn retained_messages_survive_kill9_and_clean_stop_3_3_1_3() {
    let mut b = Broker::start(&["--allow-anonymous"]);
    let (p5, _) = connect(b.mqtt, V::V5, "ret-pub-v5", true, &[]);
    let (p3, _) = connect(b.mqtt, V::V311, "ret-pub-v311", true, &[]);
    // QoS 0: no acknowledgement, committed "within ~100 ms" (README): waited for below.
    send(
        &p5,
        &packet::publish(true, "ret/q0", b"zero", 0, None, true, false),
    );
    send(
        &p3,
        &packet::publish(false, "ret/v311/q0", b"zero-311", 0, None, true, false),
    );
    // A retained message set, then cleared (empty payload, MQTT-3.3.1-10): must stay cleared.
    publish_acked(&p5, V::V5, "ret/gone", b"soon gone", 1, true, 1);
    b.await_db(
        "the QoS 0 retained messages on disk",
        "SELECT count(*) FROM retained WHERE topic IN ('ret/q0', 'ret/v311/q0')",
        2,
    );
    // QoS 1 / 2: committed before the PUBACK / PUBREC, so the kill may follow at once.
    publish_acked(&p5, V::V5, "ret/gone", b"", 1, true, 2);
    publish_acked(&p5, V::V5, "ret/q1", b"one", 1, true, 3);
    publish_acked(&p5, V::V5, "ret/q2", b"two", 2, true, 4);
    publish_acked(&p3, V::V311, "ret/v311/q1", b"one-311", 1, true, 1);
    // A retained message replaced by a newer one: only the newer survives.
    publish_acked(&p3, V::V311, "ret/replaced", b"old", 1, true, 2);
    publish_acked(&p3, V::V311, "ret/replaced", b"new", 2, true, 3);
    let want: Vec<(String, String, u8, bool)> = [
        ("ret/q0", "zero", 0),
        ("ret/q1", "one", 1),
        ("ret/q2", "two", 2),
        ("ret/replaced", "new", 2),
        ("ret/v311/q0", "zero-311", 0),
        ("ret/v311/q1", "one-311", 1),
    ]
    .iter()
    .map(|(t, p, q)| (t.to_string(), p.to_string(), *q, true))
    .collect();
    assert_eq!(
        retained_snapshot(b.mqtt, V::V5, "ret-check-0"),
        want,
        "before any restart"
    );

    b.crash_restart();
    for v in [V::V5, V::V311] {
        assert_eq!(
            retained_snapshot(b.mqtt, v, &format!("ret-check-kill-{v:?}")),
            want,
            "{v:?}: retained messages after kill -9"
        );
    }
    let st = b.restart();
    assert!(st.success(), "clean stop: {st}");
    for v in [V::V5, V::V311] {
        assert_eq!(
            retained_snapshot(b.mqtt, v, &format!("ret-check-stop-{v:?}")),
            want,
            "{v:?}: retained messages after a clean stop"
        );
    }
    // And once more through a kill, after the clean restart.
    b.crash_restart();
    assert_eq!(retained_snapshot(b.mqtt, V::V311, "ret-check-last"), want);
}

// ------------------------------------------------------------- session expiry

fn session_expiry_across_restart(crash: bool) {
    let mut b = Broker::start(&["--allow-anonymous"]);
    for (id, props) in [("exp-2s", &EXPIRY_2), ("exp-1h", &EXPIRY_3600)] {
        let (s, _) = connect(b.mqtt, V::V5, id, true, props);
        subscribe(&s, V::V5, 1, &[("exp/t", 1)]);
        disconnect(&s, V::V5);
    }
    let (s, _) = connect(b.mqtt, V::V311, "exp-311", false, &[]);
    subscribe(&s, V::V311, 1, &[("exp/t", 1)]);
    disconnect(&s, V::V311);
    let gone_at = Instant::now();
    await_offline_on_disk(&b, &["exp-2s", "exp-1h", "exp-311"]);
    if crash {
        b.crash_restart();
    } else {
        assert!(b.restart().success());
    }
    let restarted = Instant::now();
    eprintln!("restarted {:?} after the disconnect", restarted - gone_at);
    // Routed to the two long-lived sessions, not the expired one.
    let (p, _) = connect(b.mqtt, V::V5, "exp-pub", true, &[]);
    assert_eq!(publish_acked(&p, V::V5, "exp/t", b"m", 1, false, 1), 0x00);
    let until = restarted + Duration::from_secs(3);
    thread::sleep(until.saturating_duration_since(Instant::now()));

    // Expired (2 s, counted from the disconnect before the restart): a new session, nothing
    // queued (§3.1.2.11.2, MQTT-3.2.2-3: Session Present 0).
    let (s, present) = connect(b.mqtt, V::V5, "exp-2s", false, &EXPIRY_2);
    assert!(
        !present,
        "session with expiry 2 s still present 3 s after the restart"
    );
    assert!(
        next_publish(&s, V::V5, QUIET).is_none(),
        "an expired session kept its messages"
    );
    disconnect(&s, V::V5);
    // The others are still there, with the message.
    for (v, id, props) in [
        (V::V5, "exp-1h", &EXPIRY_3600[..]),
        (V::V311, "exp-311", &[][..]),
    ] {
        let (s, present) = connect(b.mqtt, v, id, false, props);
        assert!(present, "{v:?} {id}: session lost");
        let m = next_publish(&s, v, WAIT).unwrap_or_else(|| panic!("{v:?} {id}: message lost"));
        assert_eq!(
            (m.topic.as_str(), m.payload.as_str(), m.qos),
            ("exp/t", "m", 1)
        );
        disconnect(&s, v);
    }
}

#[test]
fn session_expiry_2s_is_gone_after_clean_restart_plus_3s_3_1_2_11_2() {
    session_expiry_across_restart(false);
}

#[test]
fn session_expiry_2s_is_gone_after_kill9_restart_plus_3s_3_1_2_11_2() {
    session_expiry_across_restart(true);
}

// ---------------------------------------------------------------- sync modes

/// With `args`, 50 QoS 1 + 50 QoS 2 messages for an offline 5.0 and 3.1.1 persistent session,
/// acknowledged; `settle` later, kill -9 and restart: all are delivered, QoS 2 once.
fn sync_mode_keeps_acknowledged(args: &[&str], settle: Duration) {
    let mut b = Broker::start(args);
    for (v, id, props) in SUBSCRIBERS {
        // 5.0: Clean Start 1 with Session Expiry 3600 s; 3.1.1: Clean Session 0.
        let (s, _) = connect(b.mqtt, v, id, v.v5(), props);
        subscribe(&s, v, 1, &[("dur/q1", 1), ("dur/q2", 2)]);
        disconnect(&s, v);
    }
    await_offline_on_disk(&b, &subscriber_ids());
    let (p, _) = connect(b.mqtt, V::V5, "sync-pub", true, &[]);
    let t0 = Instant::now();
    for seq in 0..100u32 {
        let (topic, qos) = topic_of(seq);
        let r = publish_acked(
            &p,
            V::V5,
            topic,
            payload_of("sync", seq).as_bytes(),
            qos,
            false,
            u16::try_from(seq + 1).unwrap(),
        );
        assert_eq!(r, 0x00, "{args:?}: message {seq} reason 0x{r:02x}");
    }
    eprintln!(
        "{args:?}: 100 acknowledged publishes (one at a time) in {:?}",
        t0.elapsed()
    );
    thread::sleep(settle);
    b.crash_restart();
    for (v, id, props) in SUBSCRIBERS {
        let (s, present) = connect(b.mqtt, v, id, false, props);
        assert!(present, "{args:?} {v:?}: session lost");
        let got = drain(&s, v, Duration::from_secs(20));
        let mut counts: HashMap<String, usize> = HashMap::new();
        for m in &got {
            *counts.entry(m.payload.clone()).or_default() += 1;
        }
        for seq in 0..100 {
            let key = payload_of("sync", seq);
            let n = counts.get(&key).copied().unwrap_or(0);
            assert!(n >= 1, "{args:?} {v:?}: acknowledged message {key} lost");
            if seq % 2 == 1 {
                assert_eq!(
                    n, 1,
                    "{args:?} {v:?}: QoS 2 message {key} delivered {n} times"
                );
            }
        }
        disconnect(&s, v);
    }
}

#[test]
fn sync_full_keeps_every_acknowledged_message_across_kill9() {
    sync_mode_keeps_acknowledged(&["--allow-anonymous", "--sync", "full"], Duration::ZERO);
}

#[test]
fn sync_relaxed_commits_within_its_window() {
    // Relaxed acknowledges at once and commits within `sync_window`: after 10 windows the
    // messages are in the file (a kill inside the window may lose them, as documented).
    sync_mode_keeps_acknowledged(
        &[
            "--allow-anonymous",
            "--sync",
            "relaxed",
            "--sync-window",
            "100",
        ],
        // The claim under test is timed: 1 s is 10 windows, a margin that holds on a busy
        // machine (the commit is due 100 ms after the first write).
        Duration::from_secs(1),
    );
}

#[test]
fn sync_normal_explicit_keeps_every_acknowledged_message_across_kill9() {
    sync_mode_keeps_acknowledged(&["--allow-anonymous", "--sync", "normal"], Duration::ZERO);
}

#[test]
fn dup_flag_unset_on_first_delivery_from_restored_queue_3_3_1_1() {
    // Messages that were only queued (never sent) before the crash are first deliveries after
    // the restart: DUP 0 (MQTT-3.3.1-1 sets DUP only on a re-delivery attempt).
    let mut b = Broker::start(&["--allow-anonymous"]);
    let (s, _) = connect(b.mqtt, V::V5, "dup-sub", true, &EXPIRY_3600);
    subscribe(&s, V::V5, 1, &[("dup/t", 2)]);
    disconnect(&s, V::V5);
    await_offline_on_disk(&b, &["dup-sub"]);
    let (p, _) = connect(b.mqtt, V::V5, "dup-pub", true, &[]);
    publish_acked(&p, V::V5, "dup/t", b"a", 1, false, 1);
    publish_acked(&p, V::V5, "dup/t", b"b", 2, false, 2);
    b.crash_restart();
    let (s, present) = connect(b.mqtt, V::V5, "dup-sub", false, &EXPIRY_3600);
    assert!(present);
    let got = drain(&s, V::V5, WAIT);
    let summary: Vec<(&str, u8, bool)> = got
        .iter()
        .map(|m| (m.payload.as_str(), m.qos, m.dup))
        .collect();
    assert_eq!(summary, vec![("a", 1, false), ("b", 2, false)]);
}

// ---------------------------------------------------------------------- wills

/// CONNECT with Clean Start 0 (5.0: Session Expiry 3600 s) and a QoS 1 will on `topic`;
/// `delay` is the Will Delay Interval in seconds (5.0 only).
fn connect_with_will(v: V, client_id: &str, topic: &str, delay: u32) -> Vec<u8> {
    let mut body = packet::utf8("MQTT");
    body.push(if v.v5() { 5 } else { 4 });
    body.push(0x04 | 0x08); // Will Flag, Will QoS 1, Clean Start 0
    body.extend(60u16.to_be_bytes());
    if v.v5() {
        body.extend(packet::properties(&EXPIRY_3600));
    }
    body.extend(packet::utf8(client_id));
    if v.v5() {
        let mut will_props = Vec::new();
        if delay > 0 {
            will_props.push(0x18);
            will_props.extend(delay.to_be_bytes());
        }
        body.extend(packet::properties(&will_props));
    }
    body.extend(packet::utf8(topic));
    body.extend(packet::binary(b"gone"));
    packet::fixed(0x10, &body)
}

fn open_with_will(addr: SocketAddr, v: V, client_id: &str, topic: &str, delay: u32) -> TcpStream {
    let s = connect_raw(addr);
    send(&s, &connect_with_will(v, client_id, topic, delay));
    let ack = read_packet(&s);
    assert_eq!(ack[0], 0x20, "expected CONNACK, got {}", hex(&ack));
    assert_eq!(ack[body_start(&ack) + 1], 0, "{v:?}: CONNACK {}", hex(&ack));
    s
}

/// A persistent session's will outlives `kill -9`: a client connected when the broker died
/// never sent DISCONNECT, so its will is published after the restart (MQTT-3.1.2-8); one that
/// disconnected normally has none (MQTT-3.1.2-10).
fn will_of_connected_persistent_session_survives_kill9(v: V) {
    let mut b = Broker::start(&["--allow-anonymous"]);
    let (w, _) = connect(b.mqtt, v, "will-watch", false, &EXPIRY_3600);
    subscribe(&w, v, 1, &[("will/#", 1)]);
    disconnect(&w, v);
    let dev = open_with_will(b.mqtt, v, "will-dev", "will/dev", 0);
    let polite = open_with_will(b.mqtt, v, "will-polite", "will/polite", 0);
    disconnect(&polite, v);
    // will-polite offline also means its will was cleared (written just before).
    await_offline_on_disk(&b, &["will-watch", "will-polite"]);
    b.await_db(
        "will-dev's will on disk",
        "SELECT count(*) FROM wills WHERE client_id = 'will-dev'",
        1,
    );
    b.crash_restart();
    drop(dev);
    let (w, present) = connect(b.mqtt, v, "will-watch", false, &EXPIRY_3600);
    assert!(present, "{v:?}: the watcher's session was lost");
    let got = drain(&w, v, WAIT);
    let topics: Vec<&str> = got.iter().map(|p| p.topic.as_str()).collect();
    assert_eq!(
        topics,
        ["will/dev"],
        "{v:?}: the will of the client connected at the kill, and only it"
    );
    assert_eq!((got[0].payload.as_str(), got[0].qos), ("gone", 1));
    disconnect(&w, v);
}

#[test]
fn will_of_connected_persistent_session_survives_kill9_v5_3_1_2_8() {
    will_of_connected_persistent_session_survives_kill9(V::V5);
}

#[test]
fn will_of_connected_persistent_session_survives_kill9_v311_3_1_2_8() {
    will_of_connected_persistent_session_survives_kill9(V::V311);
}

/// A will waiting for its Will Delay Interval is kept across `kill -9`, and the client coming
/// back within the delay after the restart cancels it (§3.1.3.2.2); one that does not come back
/// gets its will published once the delay has passed.
#[test]
fn delayed_will_survives_kill9_and_a_return_cancels_it_3_1_3_2_2() {
    let v = V::V5;
    let mut b = Broker::start(&["--allow-anonymous"]);
    let (w, _) = connect(b.mqtt, v, "dwill-watch", false, &EXPIRY_3600);
    subscribe(&w, v, 1, &[("dwill/#", 1)]);
    disconnect(&w, v);
    let back = open_with_will(b.mqtt, v, "dwill-back", "dwill/back", 2);
    let away = open_with_will(b.mqtt, v, "dwill-away", "dwill/away", 2);
    await_offline_on_disk(&b, &["dwill-watch"]);
    b.await_db(
        "both delayed wills on disk",
        "SELECT count(*) FROM wills WHERE client_id IN ('dwill-back', 'dwill-away') AND delay = 2",
        2,
    );
    b.crash_restart();
    drop((back, away));
    let restarted = Instant::now();
    let (again, present) = connect(b.mqtt, v, "dwill-back", false, &EXPIRY_3600);
    assert!(present, "the returning client's session was lost");
    let (w, _) = connect(b.mqtt, v, "dwill-watch", false, &EXPIRY_3600);
    let early = drain(&w, v, Duration::from_millis(1000));
    assert!(
        early.is_empty() || restarted.elapsed() >= Duration::from_secs(2),
        "a will came before its delay: {:?}",
        early.iter().map(|p| &p.topic).collect::<Vec<_>>()
    );
    thread::sleep(Duration::from_secs(2).saturating_sub(restarted.elapsed()));
    let mut got: Vec<String> = early.into_iter().map(|p| p.topic).collect();
    got.extend(drain(&w, v, WAIT).into_iter().map(|p| p.topic));
    assert_eq!(
        got,
        ["dwill/away"],
        "only the will of the client that stayed away"
    );
    disconnect(&again, v);
    disconnect(&w, v);
}

// ------------------------------------------------------- refused QoS 2 deliveries

/// Receive Maximum 1 (CONNECT property 0x21): one QoS>0 message in flight at a time.
const RECEIVE_MAXIMUM_1: [u8; 3] = [0x21, 0x00, 0x01];
/// PUBREC reason 0x80, Unspecified error (§3.5.2.1).
const PUBREC_UNSPECIFIED_ERROR: u8 = 0x80;

/// An outbound QoS 2 PUBLISH as (packet id, payload); panics on anything else or on nothing
/// within `WAIT`.
fn read_qos2_publish(s: &TcpStream) -> (u16, String) {
    let pkt = try_read_packet(s, WAIT).expect("no PUBLISH within 5 s");
    assert_eq!(
        pkt[0] & 0xf6,
        0x34,
        "expected a QoS 2 PUBLISH, got {}",
        hex(&pkt)
    );
    let mut i = body_start(&pkt);
    let tlen = usize::from(u16_at(&pkt, i));
    i += 2 + tlen;
    let id = u16_at(&pkt, i);
    i += 2;
    let (plen, n) = read_varint(&pkt[i..]);
    i += n + plen;
    (id, String::from_utf8_lossy(&pkt[i..]).into_owned())
}

/// Ends a QoS 2 delivery from the receiving side: PUBREC, the broker's PUBREL, PUBCOMP.
fn complete_qos2(s: &TcpStream, id: u16) {
    send(s, &packet::pubrec(id));
    let rel = try_read_packet(s, WAIT).expect("no PUBREL within 5 s");
    let (first, rel_id, reason) = parse_ack(&rel);
    assert_eq!(
        (first, rel_id, reason),
        (0x62, id, 0x00),
        "PUBREL: {}",
        hex(&rel)
    );
    send(s, &packet::pubcomp(id));
}

/// MQTT-4.3.3 / §4.13: a PUBREC with a reason code of 0x80 or above ends the QoS 2 delivery —
/// the receiver refused the message. Its packet id is free at once (with Receive Maximum 1 the
/// next queued message follows the refusal), and the persistent session keeps nothing of it:
/// after a restart the broker neither sends PUBREL for it nor delivers it again, and new QoS 2
/// messages flow normally.
#[test]
fn mqtt_4_3_3_refused_pubrec_ends_qos2_delivery_across_restart() {
    let mut b = Broker::start(&["--allow-anonymous"]);
    let props: Vec<u8> = EXPIRY_3600
        .iter()
        .chain(&RECEIVE_MAXIMUM_1)
        .copied()
        .collect();
    let (s, _) = connect(b.mqtt, V::V5, "refuse-sub", true, &props);
    subscribe(&s, V::V5, 1, &[("refuse/t", 2)]);
    let (p, _) = connect(b.mqtt, V::V5, "refuse-pub", true, &[]);
    assert_eq!(
        publish_acked(&p, V::V5, "refuse/t", b"refused", 2, false, 1),
        0x00
    );
    assert_eq!(
        publish_acked(&p, V::V5, "refuse/t", b"second", 2, false, 2),
        0x00
    );

    let (refused_id, payload) = read_qos2_publish(&s);
    assert_eq!(payload, "refused");
    send(
        &s,
        &packet::fixed(
            0x50,
            &[
                refused_id.to_be_bytes().as_slice(),
                &[PUBREC_UNSPECIFIED_ERROR],
            ]
            .concat(),
        ),
    );
    // The refusal freed the only slot of the window: the queued message comes now.
    let (second_id, payload) = read_qos2_publish(&s);
    assert_eq!(payload, "second");
    complete_qos2(&s, second_id);
    disconnect(&s, V::V5);

    assert!(b.restart().success());
    let (s, present) = connect(b.mqtt, V::V5, "refuse-sub", false, &props);
    assert!(present, "the persistent session was lost");
    if let Some(pkt) = try_read_packet(&s, QUIET) {
        panic!(
            "the refused delivery (id {refused_id}) was resumed after the restart: {}",
            hex(&pkt)
        );
    }
    let (p, _) = connect(b.mqtt, V::V5, "refuse-pub", true, &[]);
    assert_eq!(
        publish_acked(&p, V::V5, "refuse/t", b"third", 2, false, 1),
        0x00
    );
    let (third_id, payload) = read_qos2_publish(&s);
    assert_eq!(payload, "third");
    complete_qos2(&s, third_id);
    assert!(
        try_read_packet(&s, QUIET).is_none(),
        "more arrived after the new message"
    );
    disconnect(&s, V::V5);
}

// ------------------------------------------------- shared subscription hand-off

/// §4.8.2 and the README's durability table: the messages a shared member had not finished when
/// its session ended are kept by the persistent member they are handed to, so that a `kill -9`
/// right after the hand-off loses none of them.
#[test]
fn mqtt_4_8_2_handed_off_messages_survive_kill9_at_persistent_member() {
    let mut b = Broker::start(&["--allow-anonymous"]);
    let props: Vec<u8> = RECEIVE_MAXIMUM_1.to_vec();
    let (holder, _) = connect(b.mqtt, V::V5, "ho-holder", true, &props);
    subscribe(&holder, V::V5, 1, &[("$share/g/ho/t", 1)]);
    let (p, _) = connect(b.mqtt, V::V5, "ho-pub", true, &[]);
    for (i, m) in ["h0", "h1", "h2"].iter().enumerate() {
        let id = u16::try_from(i + 1).unwrap();
        assert_eq!(
            publish_acked(&p, V::V5, "ho/t", m.as_bytes(), 1, false, id),
            0x00
        );
    }
    // The holder gets the first (left unacknowledged); the others wait in its queue.
    let first = try_read_packet(&holder, WAIT).expect("the holder's first message");
    assert_eq!(first[0] & 0xf6, 0x32, "QoS 1 PUBLISH: {}", hex(&first));
    let (keeper, _) = connect(b.mqtt, V::V5, "ho-keeper", true, &EXPIRY_3600);
    subscribe(&keeper, V::V5, 1, &[("$share/g/ho/t", 1)]);
    disconnect(&keeper, V::V5);
    assert!(b.wait_for_log("client ho-keeper disconnected from", WAIT));
    // The holder's session ends (expiry 0): its three messages go to the offline keeper.
    disconnect(&holder, V::V5);
    assert!(b.wait_for_log("client ho-holder disconnected from", WAIT));
    b.crash_restart();
    let (keeper, present) = connect(b.mqtt, V::V5, "ho-keeper", false, &EXPIRY_3600);
    assert!(present, "the keeper's session was lost");
    let mut got: Vec<String> = drain(&keeper, V::V5, WAIT)
        .into_iter()
        .map(|m| m.payload)
        .collect();
    got.sort_unstable();
    assert_eq!(
        got,
        ["h0", "h1", "h2"],
        "the handed-off messages after kill -9"
    );
    disconnect(&keeper, V::V5);
}

/// Overlapping the store (issue 17): while the commit of a retained QoS 1 message is stalled
/// (another process holds the database's write lock), its publisher's connection is still read
/// — a QoS 0 message sent next reaches a subscriber before the PUBACK — and the PUBACK goes out
/// only once the message is committed (the durability point; MQTT-4.6.0-2 keeps acks in order).
#[test]
fn mqtt_4_6_0_2_publisher_still_read_while_its_puback_waits_for_a_stalled_commit() {
    const PW: &str = "overlap-admin";
    let mut b = Broker::start(&["--allow-anonymous", "--admin-password", PW]);
    let (sub, _) = connect(b.mqtt, V::V5, "overlap-sub", true, &[]);
    subscribe(&sub, V::V5, 1, &[("live/#", 0)]);
    let (p, _) = connect(b.mqtt, V::V5, "overlap-pub", true, &[]);
    let other = rusqlite::Connection::open(b.db_path()).unwrap();
    other.execute_batch("BEGIN EXCLUSIVE").unwrap();
    send(
        &p,
        &packet::publish(true, "ret/stalled", b"kept", 1, Some(7), true, false),
    );
    // The store has taken the write and is stuck in its commit; the publisher sent nothing
    // else, so its reader now waits for that commit.
    let deadline = Instant::now() + Duration::from_secs(10);
    while metric(b.web, PW, "mqtt5_store_pending_writes") < 1.0 {
        assert!(Instant::now() < deadline, "the store never took the write");
        thread::sleep(Duration::from_millis(10));
    }
    send(
        &p,
        &packet::publish(true, "live/next", b"now", 0, None, false, false),
    );
    let got = next_publish(&sub, V::V5, Duration::from_secs(10)).expect("the QoS 0 message");
    assert_eq!(
        (got.topic.as_str(), got.payload.as_str()),
        ("live/next", "now")
    );
    // Still locked: the retained message cannot have committed, so no PUBACK may be out yet.
    assert_eq!(
        try_read_packet(&p, Duration::from_millis(1)),
        None,
        "a PUBACK before its commit, or the QoS 0 message read only after it"
    );
    other.execute_batch("COMMIT").unwrap();
    let (first, id, reason) = parse_ack(&read_packet(&p));
    assert_eq!((first, id), (0x40, 7), "the PUBACK once the lock is gone");
    assert!(reason < 0x80, "the stalled message refused: {reason:#x}");
    b.crash_restart();
    let kept = retained_snapshot(b.mqtt, V::V5, "overlap-check");
    assert_eq!(
        kept,
        [("ret/stalled".to_owned(), "kept".to_owned(), 1, true)],
        "the acknowledged retained message after kill -9"
    );
}

/// Group commit (issue 17): 200 retained QoS 1 PUBLISH packets from one 5.0 client, sent in one
/// write (a Home Assistant discovery burst), are acknowledged in the order they came
/// (MQTT-4.6.0-2), each only once committed — a `kill -9` right after the last PUBACK loses none
/// of them (§4.3.2, the README's durability promise) — and the burst rides far fewer store
/// transactions than it has messages (one commit per message before).
#[test]
fn mqtt_4_6_0_2_retained_qos1_burst_acked_in_order_after_commit_in_few_transactions() {
    const N: u16 = 200;
    const PW: &str = "burst-admin";
    let mut b = Broker::start(&["--allow-anonymous", "--admin-password", PW]);
    let (p, _) = connect(b.mqtt, V::V5, "discovery-burst", true, &[]);
    let before = metric(b.web, PW, "mqtt5_store_transactions_total");
    let mut burst = Vec::new();
    for i in 1..=N {
        let topic = format!("ret/burst/{i}");
        burst.extend(packet::publish(
            true,
            &topic,
            format!("config-{i}").as_bytes(),
            1,
            Some(i),
            true,
            false,
        ));
    }
    send(&p, &burst);
    for i in 1..=N {
        let pkt = read_packet(&p);
        let (first, id, reason) = parse_ack(&pkt);
        assert_eq!((first, id), (0x40, i), "PUBACK {i} of {N}: {}", hex(&pkt));
        assert!(reason < 0x80, "PUBACK {i} refused: {}", hex(&pkt));
    }
    let transactions = metric(b.web, PW, "mqtt5_store_transactions_total") - before;
    eprintln!("{N} retained QoS 1 messages acknowledged; {transactions} store transactions");
    assert!(
        transactions <= f64::from(N) / 4.0,
        "{transactions} store transactions for a burst of {N} retained messages"
    );
    b.crash_restart();
    let got = retained_snapshot(b.mqtt, V::V5, "burst-check");
    let want: Vec<(String, String, u8, bool)> = {
        let mut w: Vec<_> = (1..=N)
            .map(|i| (format!("ret/burst/{i}"), format!("config-{i}"), 1, true))
            .collect();
        w.sort();
        w
    };
    assert_eq!(got.len(), want.len(), "retained messages after kill -9");
    assert_eq!(got, want, "retained messages after kill -9");
}
