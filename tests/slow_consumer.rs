//! A subscriber that stops reading must cost only itself (MQTT 5.0 §4.9 leaves the policy to the
//! server; this broker sheds that subscriber's queue): the publisher keeps its send rate, a
//! healthy subscriber on the same topic keeps receiving, the broker's memory stays bounded and
//! the drops are counted in `/api/status`.
//!
//! The stalled subscriber is a raw socket that subscribes and then never reads again; the
//! healthy one is rumqttc (an independent client), drained on its own thread.

mod common;

use common::{hex, read_packet, send, Broker};
use raw::*;
use rumqttc::v5::mqttbytes::v5::Packet;
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::Event;
use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

const TOPIC: &str = "load/t";
/// Payload size of every load message.
const PAYLOAD: usize = 64;
/// Upper bound on the broker's resident memory during the run.
const RSS_LIMIT_KB: u64 = 200 * 1024;

/// VmRSS of `pid` in kB.
fn rss_kb(pid: u32) -> u64 {
    let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) else {
        return 0; // exited
    };
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .expect("VmRSS line")
}

/// Samples the broker's RSS every 50 ms until `stop`; returns the peak in kB.
fn rss_sampler(pid: u32, stop: Arc<AtomicBool>) -> thread::JoinHandle<u64> {
    thread::spawn(move || {
        let mut peak = 0;
        while !stop.load(Ordering::Relaxed) {
            peak = peak.max(rss_kb(pid));
            thread::sleep(Duration::from_millis(50));
        }
        peak.max(rss_kb(pid))
    })
}

/// A 64-byte payload carrying `seq` in its first 8 bytes.
fn payload(seq: u64) -> Vec<u8> {
    let mut p = vec![b'.'; PAYLOAD];
    p[..8].copy_from_slice(&seq.to_be_bytes());
    p
}

fn seq_of(payload: &[u8]) -> u64 {
    u64::from_be_bytes(payload[..8].try_into().expect("8-byte sequence number"))
}

/// The healthy subscriber: rumqttc on its own thread, recording sequence numbers until it has
/// `expect` of them, or it has been idle for 2 s after `publisher_done`, or 30 s have passed.
fn healthy_subscriber(
    b: &Broker,
    qos: QoS,
    expect: Arc<AtomicU64>,
    publisher_done: Arc<AtomicBool>,
) -> thread::JoinHandle<Vec<u64>> {
    let (client, mut conn) = rq5::subscriber(b.mqtt, "healthy", TOPIC, qos);
    thread::spawn(move || {
        let _keep = client;
        let mut seqs = Vec::new();
        let hard = Instant::now() + Duration::from_secs(30);
        let mut last = Instant::now();
        while Instant::now() < hard {
            let target = expect.load(Ordering::Relaxed);
            if target > 0 && seqs.len() as u64 >= target {
                break;
            }
            if publisher_done.load(Ordering::Relaxed) && last.elapsed() > Duration::from_secs(2) {
                break;
            }
            match conn.recv_timeout(Duration::from_millis(200)) {
                Ok(Ok(Event::Incoming(Packet::Publish(p)))) => {
                    seqs.push(seq_of(&p.payload));
                    last = Instant::now();
                }
                Ok(Ok(_)) => {}
                Ok(Err(e)) => panic!("healthy subscriber lost its connection: {e:?}"),
                Err(_) => {}
            }
        }
        seqs
    })
}

/// A subscriber that reads its SUBACK and then never reads (nor acknowledges) again.
fn stalled_subscriber(b: &Broker, options: u8, connect_props: &[u8]) -> std::net::TcpStream {
    let (s, _) = open(b.mqtt, "stalled", true, connect_props, None);
    sub(&s, 1, TOPIC, options);
    s
}

#[test]
fn mqtt_4_9_qos0_stalled_subscriber_costs_only_itself_publisher_and_healthy_subscriber_keep_going()
{
    let b = Broker::start(&["--allow-anonymous", "--sys-interval", "0"]);
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = rss_sampler(b.pid(), stop.clone());
    let _stalled = stalled_subscriber(&b, 0x00, &[]);
    let expect = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicBool::new(false));
    let healthy = healthy_subscriber(&b, QoS::AtMostOnce, expect.clone(), done.clone());

    // Publisher: QoS 0, 64-byte payloads, written in batches of 500 for ~3 s (≤ 200k).
    const MAX_MESSAGES: u64 = 200_000;
    const BATCH: u64 = 500;
    let (p, _) = open(b.mqtt, "publisher", true, &[], None);
    let start = Instant::now();
    let mut sent = 0u64;
    let mut slowest_batch = Duration::ZERO;
    while sent < MAX_MESSAGES && start.elapsed() < Duration::from_secs(3) {
        let mut buf = Vec::with_capacity((BATCH as usize) * (PAYLOAD + 12));
        for seq in sent..sent + BATCH {
            buf.extend(publish(TOPIC, &payload(seq), 0, 0, false, &[]));
        }
        let t = Instant::now();
        // connect_raw's 5 s write timeout: a blocked publisher fails here.
        send(&p, &buf);
        slowest_batch = slowest_batch.max(t.elapsed());
        sent += BATCH;
    }
    let elapsed = start.elapsed();
    // Every message has reached the broker's routing once a PINGRESP comes back.
    send(&p, &common::packet::pingreq());
    common::expect_bytes(&p, &common::packet::pingresp());
    let routed = start.elapsed();
    expect.store(sent, Ordering::Relaxed);
    done.store(true, Ordering::Relaxed);
    let seqs = healthy.join().expect("healthy subscriber thread");
    stop.store(true, Ordering::Relaxed);
    let peak_kb = sampler.join().unwrap();

    let rate = sent as f64 / elapsed.as_secs_f64();
    let status = api_status(b.web);
    let dropped = status["messages_dropped"].as_u64().unwrap();
    let unique: HashSet<u64> = seqs.iter().copied().collect();
    eprintln!(
        "sent {sent} in {elapsed:?} ({rate:.0}/s, slowest batch {slowest_batch:?}, all routed \
         after {routed:?}); healthy got {} ({} unique); dropped {dropped}; peak RSS {} MB",
        seqs.len(),
        unique.len(),
        peak_kb / 1024
    );

    assert!(
        slowest_batch < Duration::from_secs(1),
        "publisher stalled: a batch of {BATCH} took {slowest_batch:?}"
    );
    assert!(
        sent >= 20_000 && rate >= 10_000.0,
        "publisher rate too low: {sent} messages in {elapsed:?}"
    );
    assert!(
        routed < Duration::from_secs(8),
        "broker took {routed:?} to take in what was sent in {elapsed:?}"
    );
    assert_eq!(unique.len(), seqs.len(), "duplicates at QoS 0");
    assert!(
        seqs.len() as u64 * 10 >= sent * 9,
        "healthy subscriber got {} of {sent} (< 90%)",
        seqs.len()
    );
    assert!(
        seqs.windows(2).all(|w| w[0] < w[1]),
        "healthy subscriber: order kept"
    );
    assert!(peak_kb < RSS_LIMIT_KB, "broker RSS peaked at {peak_kb} kB");
    assert!(
        dropped > 0,
        "messages_dropped must count the stalled subscriber's losses"
    );
    // The broker still serves a new client promptly.
    let (c, _) = open(b.mqtt, "after", true, &[], None);
    send(&c, &common::packet::pingreq());
    common::expect_bytes(&c, &common::packet::pingresp());
}

#[test]
fn mqtt_4_5_0_1_qos1_stalled_subscriber_with_max_queued_messages_100_healthy_subscriber_gets_every_message(
) {
    let b = Broker::start(&[
        "--allow-anonymous",
        "--sys-interval",
        "0",
        "--max-queued-messages",
        "100",
    ]);
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = rss_sampler(b.pid(), stop.clone());
    // Receive Maximum 10: at most 10 unacknowledged PUBLISHes for it (§4.9); the rest queue,
    // and the queue holds at most 100.
    let _stalled = stalled_subscriber(&b, 0x01, &prop_u16(0x21, 10));
    const N: u64 = 30_000;
    let expect = Arc::new(AtomicU64::new(N));
    let done = Arc::new(AtomicBool::new(false));
    let healthy = healthy_subscriber(&b, QoS::AtLeastOnce, expect, done.clone());

    // Publisher: QoS 1 with at most Receive Maximum (CONNACK) PUBLISHes unacknowledged.
    let (p, (_, _, props)) = open(b.mqtt, "publisher", true, &[], None);
    let window = props
        .iter()
        .find(|(id, _)| *id == 0x21)
        .map(|(_, v)| u16::from_be_bytes([v[0], v[1]]))
        .unwrap_or(u16::MAX)
        .min(20);
    let start = Instant::now();
    let mut in_flight = 0u16;
    let mut acked = 0u64;
    let mut refused: Vec<String> = Vec::new();
    let mut on_ack = |ack: Vec<u8>, acked: &mut u64| {
        assert_eq!(ack[0], 0x40, "PUBACK expected: {}", hex(&ack));
        if ack.len() > 4 && ack[4] != 0x00 {
            refused.push(hex(&ack));
        }
        *acked += 1;
    };
    for seq in 0..N {
        if seq == 11 {
            // The stalled subscriber has taken its 10 and holds one more: once it has taken
            // nothing for STALL_GRACE (2 s) it counts as stalled and its queue is capped.
            thread::sleep(STALLED_AFTER);
        }
        if in_flight == window {
            on_ack(read_packet(&p), &mut acked);
            in_flight -= 1;
        }
        let pid = (seq % 60_000) as u16 + 1;
        send(&p, &publish(TOPIC, &payload(seq), 1, pid, false, &[]));
        in_flight += 1;
    }
    while in_flight > 0 {
        on_ack(read_packet(&p), &mut acked);
        in_flight -= 1;
    }
    let elapsed = start.elapsed();
    done.store(true, Ordering::Relaxed);
    let seqs = healthy.join().expect("healthy subscriber thread");
    stop.store(true, Ordering::Relaxed);
    let peak_kb = sampler.join().unwrap();
    let dropped = api_status(b.web)["messages_dropped"].as_u64().unwrap();
    let unique: HashSet<u64> = seqs.iter().copied().collect();
    eprintln!(
        "QoS 1: {acked} acked in {elapsed:?}; healthy got {} ({} unique); dropped {dropped}; \
         peak RSS {} MB",
        seqs.len(),
        unique.len(),
        peak_kb / 1024
    );

    assert_eq!(acked, N);
    assert!(
        elapsed < Duration::from_secs(20),
        "publisher took {elapsed:?}"
    );
    // MQTT-4.5.0-1: every PUBACKed message belongs to the healthy subscriber's session.
    let missing: Vec<u64> = (0..N).filter(|s| !unique.contains(s)).take(10).collect();
    assert!(
        missing.is_empty(),
        "healthy QoS 1 subscriber is missing {} of {N} acknowledged messages, e.g. {missing:?}; \
         the publisher got {} PUBACKs with a non-Success reason, e.g. {:?}",
        N - unique.len() as u64,
        refused.len(),
        &refused[..refused.len().min(3)]
    );
    assert!(refused.is_empty(), "non-Success PUBACKs: {refused:?}");
    assert!(peak_kb < RSS_LIMIT_KB, "broker RSS peaked at {peak_kb} kB");
    assert!(
        dropped > 0,
        "the stalled subscriber's queue is capped at 100: drops must be counted"
    );
}

#[test]
fn mqtt_3_4_2_1_puback_does_not_claim_no_matching_subscribers_when_a_subscriber_queue_is_full() {
    // §3.4.2.1: 0x10 means "accepted but there are no subscribers". Here there is one; its
    // queue is full (Receive Maximum 1, --max-queued-messages 5). The broker may accept the
    // message (0x00) or refuse it (0x97 Quota exceeded), but must not say nobody matches.
    let b = Broker::start(&[
        "--allow-anonymous",
        "--sys-interval",
        "0",
        "--max-queued-messages",
        "5",
    ]);
    let _stalled = stalled_subscriber(&b, 0x01, &prop_u16(0x21, 1));
    let (p, _) = open(b.mqtt, "publisher", true, &[], None);
    let mut reasons = Vec::new();
    for pid in 1..=20u16 {
        if pid == 3 {
            // One message in flight, one queued: wait until the subscriber counts as stalled.
            thread::sleep(STALLED_AFTER);
        }
        send(
            &p,
            &publish(TOPIC, &payload(u64::from(pid)), 1, pid, false, &[]),
        );
        let ack = read_packet(&p);
        assert_eq!(&ack[..4], &[0x40, ack[1], 0x00, pid as u8], "{}", hex(&ack));
        reasons.push(if ack.len() > 4 { ack[4] } else { 0x00 });
    }
    assert!(api_status(b.web)["messages_dropped"].as_u64().unwrap() > 0);
    assert!(
        reasons.iter().all(|r| *r == 0x00 || *r == 0x97),
        "PUBACK reasons with a matching (full) subscriber: {reasons:02x?}"
    );
}
/// A connected client that has taken nothing for this long is held to `--max-queued-messages`
/// (the broker's STALL_GRACE, 2 s, plus a margin); before that only `--max-queued-bytes` bounds
/// its queue, so a subscriber that is merely scheduled late loses nothing.
const STALLED_AFTER: Duration = Duration::from_millis(2600);

// ------------------------------------------------------------------ local helpers

/// Byte-level MQTT 5.0 builders and parsers on top of `common` (kept local to this file).
#[allow(dead_code)]
mod raw {
    use super::common::packet::{binary, fixed, properties, utf8};
    use super::common::{self, hex, recv_exact, send, IO_TIMEOUT};
    use std::io::{ErrorKind, Read};
    use std::net::{SocketAddr, TcpStream};
    use std::time::Duration;

    // Property identifiers (§2.2.2.2).
    pub const PAYLOAD_FORMAT: u8 = 0x01;
    pub const MESSAGE_EXPIRY: u8 = 0x02;
    pub const CONTENT_TYPE: u8 = 0x03;
    pub const RESPONSE_TOPIC: u8 = 0x08;
    pub const CORRELATION_DATA: u8 = 0x09;
    pub const SESSION_EXPIRY: u8 = 0x11;
    pub const REQUEST_PROBLEM_INFO: u8 = 0x17;
    pub const WILL_DELAY: u8 = 0x18;
    pub const REQUEST_RESPONSE_INFO: u8 = 0x19;
    pub const RESPONSE_INFO: u8 = 0x1A;
    pub const REASON_STRING: u8 = 0x1F;
    pub const TOPIC_ALIAS_MAXIMUM: u8 = 0x22;
    pub const TOPIC_ALIAS: u8 = 0x23;
    pub const RETAIN_AVAILABLE: u8 = 0x25;
    pub const USER_PROPERTY: u8 = 0x26;
    pub const MAXIMUM_PACKET_SIZE: u8 = 0x27;

    pub fn prop_u8(id: u8, v: u8) -> Vec<u8> {
        vec![id, v]
    }
    pub fn prop_u16(id: u8, v: u16) -> Vec<u8> {
        let mut p = vec![id];
        p.extend(v.to_be_bytes());
        p
    }
    pub fn prop_u32(id: u8, v: u32) -> Vec<u8> {
        let mut p = vec![id];
        p.extend(v.to_be_bytes());
        p
    }
    pub fn prop_str(id: u8, s: &str) -> Vec<u8> {
        let mut p = vec![id];
        p.extend(utf8(s));
        p
    }
    pub fn prop_bin(id: u8, b: &[u8]) -> Vec<u8> {
        let mut p = vec![id];
        p.extend(binary(b));
        p
    }
    pub fn prop_pair(k: &str, v: &str) -> Vec<u8> {
        let mut p = vec![USER_PROPERTY];
        p.extend(utf8(k));
        p.extend(utf8(v));
        p
    }

    /// A will for [`connect`].
    pub struct Will<'a> {
        pub topic: &'a str,
        pub payload: &'a [u8],
        pub qos: u8,
        pub retain: bool,
        pub props: Vec<u8>,
    }

    /// MQTT 5.0 CONNECT (§3.1) with raw CONNECT properties and an optional will.
    pub fn connect(
        client_id: &str,
        keep_alive: u16,
        clean_start: bool,
        props: &[u8],
        will: Option<&Will>,
    ) -> Vec<u8> {
        let mut flags = if clean_start { 0x02 } else { 0 };
        if let Some(w) = will {
            flags |= 0x04 | (w.qos << 3) | if w.retain { 0x20 } else { 0 };
        }
        let mut body = utf8("MQTT");
        body.push(5);
        body.push(flags);
        body.extend(keep_alive.to_be_bytes());
        body.extend(properties(props));
        body.extend(utf8(client_id));
        if let Some(w) = will {
            body.extend(properties(&w.props));
            body.extend(utf8(w.topic));
            body.extend(binary(w.payload));
        }
        fixed(0x10, &body)
    }

    /// MQTT 5.0 PUBLISH (§3.3) with raw properties.
    pub fn publish(
        topic: &str,
        payload: &[u8],
        qos: u8,
        packet_id: u16,
        retain: bool,
        props: &[u8],
    ) -> Vec<u8> {
        let mut body = utf8(topic);
        if qos > 0 {
            body.extend(packet_id.to_be_bytes());
        }
        body.extend(properties(props));
        body.extend_from_slice(payload);
        fixed(0x30 | (qos << 1) | retain as u8, &body)
    }

    /// MQTT 5.0 SUBSCRIBE (§3.8) to one filter with a full Subscription Options byte:
    /// QoS bits 0-1, No Local bit 2, Retain As Published bit 3, Retain Handling bits 4-5.
    pub fn subscribe(packet_id: u16, filter: &str, options: u8) -> Vec<u8> {
        let mut body = packet_id.to_be_bytes().to_vec();
        body.extend(properties(&[]));
        body.extend(utf8(filter));
        body.push(options);
        fixed(0x82, &body)
    }

    /// (value, bytes used) of a Variable Byte Integer at the start of `b`.
    pub fn varint_at(b: &[u8]) -> (u32, usize) {
        let mut v = 0u32;
        for (i, byte) in b.iter().enumerate().take(4) {
            v |= u32::from(byte & 0x7f) << (7 * i);
            if byte & 0x80 == 0 {
                return (v, i + 1);
            }
        }
        panic!("bad varint {}", hex(b));
    }

    /// Splits a property block body into (identifier, raw value) in wire order.
    pub fn parse_props(mut b: &[u8]) -> Vec<(u8, Vec<u8>)> {
        let mut out = Vec::new();
        while !b.is_empty() {
            let id = b[0];
            b = &b[1..];
            let n = match id {
                0x01 | 0x17 | 0x19 | 0x24 | 0x25 | 0x28 | 0x29 | 0x2A => 1,
                0x13 | 0x21 | 0x22 | 0x23 => 2,
                0x02 | 0x11 | 0x18 | 0x27 => 4,
                0x0B => varint_at(b).1,
                0x03 | 0x08 | 0x09 | 0x12 | 0x15 | 0x16 | 0x1A | 0x1C | 0x1F => {
                    2 + usize::from(u16::from_be_bytes([b[0], b[1]]))
                }
                0x26 => {
                    let k = 2 + usize::from(u16::from_be_bytes([b[0], b[1]]));
                    k + 2 + usize::from(u16::from_be_bytes([b[k], b[k + 1]]))
                }
                other => panic!("unknown property id {other:#04x} in {}", hex(b)),
            };
            out.push((id, b[..n].to_vec()));
            b = &b[n..];
        }
        out
    }

    /// Reads a property block (length + body) at the start of `b`: (properties, bytes used).
    pub fn props_at(b: &[u8]) -> (Vec<(u8, Vec<u8>)>, usize) {
        let (len, used) = varint_at(b);
        let end = used + len as usize;
        (parse_props(&b[used..end]), end)
    }

    /// A decoded PUBLISH as a subscriber receives it.
    #[derive(Debug)]
    pub struct Pub {
        pub qos: u8,
        pub retain: bool,
        pub dup: bool,
        pub topic: String,
        pub packet_id: u16,
        pub props: Vec<(u8, Vec<u8>)>,
        pub payload: Vec<u8>,
    }

    impl Pub {
        pub fn prop(&self, id: u8) -> Option<&[u8]> {
            self.props
                .iter()
                .find(|(i, _)| *i == id)
                .map(|(_, v)| v.as_slice())
        }
        pub fn expiry(&self) -> Option<u32> {
            self.prop(MESSAGE_EXPIRY)
                .map(|v| u32::from_be_bytes([v[0], v[1], v[2], v[3]]))
        }
        pub fn alias(&self) -> Option<u16> {
            self.prop(TOPIC_ALIAS)
                .map(|v| u16::from_be_bytes([v[0], v[1]]))
        }
        pub fn user_properties(&self) -> Vec<(String, String)> {
            self.props
                .iter()
                .filter(|(i, _)| *i == USER_PROPERTY)
                .map(|(_, v)| {
                    let k = usize::from(u16::from_be_bytes([v[0], v[1]]));
                    let key = String::from_utf8(v[2..2 + k].to_vec()).unwrap();
                    let val = String::from_utf8(v[2 + k + 2..].to_vec()).unwrap();
                    (key, val)
                })
                .collect()
        }
    }

    /// Decodes a whole PUBLISH packet (as returned by `read_packet`).
    pub fn parse_publish(pkt: &[u8], v5: bool) -> Pub {
        assert_eq!(pkt[0] >> 4, 3, "expected PUBLISH, got {}", hex(pkt));
        let flags = pkt[0] & 0x0f;
        let (_, used) = varint_at(&pkt[1..]);
        let body = &pkt[1 + used..];
        let tlen = usize::from(u16::from_be_bytes([body[0], body[1]]));
        let topic = String::from_utf8(body[2..2 + tlen].to_vec()).unwrap();
        let mut i = 2 + tlen;
        let qos = (flags >> 1) & 3;
        let mut packet_id = 0;
        if qos > 0 {
            packet_id = u16::from_be_bytes([body[i], body[i + 1]]);
            i += 2;
        }
        let mut props = Vec::new();
        if v5 {
            let (p, used) = props_at(&body[i..]);
            props = p;
            i += used;
        }
        Pub {
            qos,
            retain: flags & 1 != 0,
            dup: flags & 8 != 0,
            topic,
            packet_id,
            props,
            payload: body[i..].to_vec(),
        }
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
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                return None
            }
            Err(e) => panic!("read error: {e}"),
        }
        let mut pkt = first.to_vec();
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
        Some(pkt)
    }

    /// Asserts that nothing arrives within `wait`.
    pub fn expect_silence(s: &TcpStream, wait: Duration, what: &str) {
        if let Some(p) = try_read_packet(s, wait) {
            panic!("{what}: expected nothing, received {}", hex(&p));
        }
    }

    /// Reads the next packet and decodes it as a PUBLISH (5.0 unless `v5` is false).
    pub fn next_publish(s: &TcpStream, v5: bool) -> Pub {
        parse_publish(&common::read_packet(s), v5)
    }

    /// Properties as (identifier, raw value) in wire order.
    pub type Props = Vec<(u8, Vec<u8>)>;
    /// (session present, reason code, properties) of a 5.0 CONNACK.
    pub type ConnAck = (bool, u8, Props);

    /// Decodes a 5.0 CONNACK.
    pub fn parse_connack(pkt: &[u8]) -> ConnAck {
        assert_eq!(pkt[0], 0x20, "expected CONNACK, got {}", hex(pkt));
        let (_, used) = varint_at(&pkt[1..]);
        let body = &pkt[1 + used..];
        let (props, _) = props_at(&body[2..]);
        (body[0] & 1 == 1, body[1], props)
    }

    /// Connects a 5.0 client and checks CONNACK Success; returns the socket and the CONNACK.
    pub fn open(
        addr: SocketAddr,
        client_id: &str,
        clean_start: bool,
        props: &[u8],
        will: Option<&Will>,
    ) -> (TcpStream, ConnAck) {
        let s = common::connect_raw(addr);
        send(&s, &connect(client_id, 60, clean_start, props, will));
        let ack = parse_connack(&common::read_packet(&s));
        assert_eq!(ack.1, 0x00, "CONNACK reason for {client_id}");
        (s, ack)
    }

    /// SUBSCRIBE to one filter and check the SUBACK grants the requested QoS.
    pub fn sub(s: &TcpStream, packet_id: u16, filter: &str, options: u8) {
        send(s, &subscribe(packet_id, filter, options));
        let ack = common::read_packet(s);
        let mut want = vec![0x90, 0x04];
        want.extend(packet_id.to_be_bytes());
        want.extend([0x00, options & 3]);
        assert_eq!(ack, want, "SUBACK for {filter}: {}", hex(&ack));
    }
}

/// An independent 5.0 client (rumqttc) that subscribed to `filter` and saw its SUBACK.
#[allow(dead_code)]
mod rq5 {
    use rumqttc::v5::mqttbytes::v5::{Packet, Publish, SubscribeReasonCode};
    use rumqttc::v5::mqttbytes::QoS;
    use rumqttc::v5::{Client, Connection, Event, MqttOptions};
    use std::net::SocketAddr;
    use std::time::{Duration, Instant};

    pub fn options(addr: SocketAddr, id: &str) -> MqttOptions {
        let mut o = MqttOptions::new(id, addr.ip().to_string(), addr.port());
        o.set_keep_alive(Duration::from_secs(30));
        o
    }

    /// Polls until CONNACK Success (≤ 5 s).
    pub fn connect(o: MqttOptions) -> (Client, Connection) {
        let (client, mut conn) = Client::new(o, 64);
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match conn.recv_timeout(left) {
                Ok(Ok(Event::Incoming(Packet::ConnAck(ack)))) => {
                    assert_eq!(
                        ack.code,
                        rumqttc::v5::mqttbytes::v5::ConnectReturnCode::Success
                    );
                    return (client, conn);
                }
                Ok(Ok(_)) => {}
                other => panic!("rumqttc connect failed: {other:?}"),
            }
        }
    }

    /// Connects and subscribes; returns after SUBACK (≤ 5 s).
    pub fn subscriber(addr: SocketAddr, id: &str, filter: &str, qos: QoS) -> (Client, Connection) {
        let (client, mut conn) = connect(options(addr, id));
        client.subscribe(filter, qos).unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match conn.recv_timeout(left) {
                Ok(Ok(Event::Incoming(Packet::SubAck(ack)))) => {
                    assert!(
                        ack.return_codes
                            .iter()
                            .all(|c| matches!(c, SubscribeReasonCode::Success(_))),
                        "{ack:?}"
                    );
                    return (client, conn);
                }
                Ok(Ok(_)) => {}
                other => panic!("rumqttc subscribe failed: {other:?}"),
            }
        }
    }

    /// The next PUBLISH within `wait`, or `None`.
    pub fn next_publish(conn: &mut Connection, wait: Duration) -> Option<Publish> {
        let deadline = Instant::now() + wait;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return None;
            }
            match conn.recv_timeout(left) {
                Ok(Ok(Event::Incoming(Packet::Publish(p)))) => return Some(p),
                Ok(Ok(_)) => {}
                Ok(Err(e)) => panic!("rumqttc connection error: {e:?}"),
                Err(_) => return None,
            }
        }
    }
}

/// `GET /api/status` on the broker's web listener, as JSON.
#[allow(dead_code)]
fn api_status(web: std::net::SocketAddr) -> serde_json::Value {
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
