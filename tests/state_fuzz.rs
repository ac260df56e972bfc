//! Fuzzing the connection state machine of the real `mqtt5-broker` binary (issue 7): random
//! sequences of valid and invalid packets from several concurrent connections against ONE broker
//! process.
//!
//! Each case is one connection: usually a valid CONNECT (5.0 or 3.1.1, random flags, properties
//! and will; client ids from a small shared pool, so takeovers happen across threads), then up to
//! 30 random packets — PUBLISH at QoS 0/1/2 with topic aliases and properties, SUBSCRIBE (also
//! shared and wildcard filters), UNSUBSCRIBE, acks with small packet ids that collide with the
//! broker's, PINGREQ, AUTH, a second CONNECT, DISCONNECT — built with the crate's own encoder
//! (`mqtt5_broker::protocol::encode`); about one packet in eight is then mutated (bit flips,
//! truncation, garbage, a rewritten Remaining Length, a changed type nibble). Writes are split at
//! random points with short pauses; the case ends with DISCONNECT, an abrupt close, a half close
//! or a stall. A reader thread per case answers the broker's QoS flows at random and checks that
//! everything the broker sends on a connection with an unmutated CONNECT decodes cleanly with
//! the codec and respects the client's Maximum Packet Size (MQTT-3.1.2-24).
//!
//! After every batch (one case per worker thread) a control client must get PINGRESP within 2 s
//! and the broker must still be running; at the end fresh 5.0 and 3.1.1 clients connect, publish
//! and receive, and `clients_connected` returns to the control client alone.
//!
//! Bounded for CI: 480 cases (6 threads × 80 batches) or 40 s, whichever comes first. Environment:
//! * `STATE_FUZZ_CASES=N` — run N cases instead (e.g. 100000 for a long run; the time cap then
//!   grows to N / 10 seconds unless `STATE_FUZZ_SECS` is set);
//! * `STATE_FUZZ_SECS=S` — time cap in seconds;
//! * `STATE_FUZZ_SEED=X` — the seed (printed at start and in every failure) to replay a run;
//!   timing still varies, so a replay exercises the same inputs, not the same interleaving.

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::procfs::rss_kb;
use common::{hex, packet, read_packet_within, Broker};
use mqtt5_broker::protocol::frame::FrameBuffer;
use mqtt5_broker::protocol::{
    self, Ack, Auth, Connect, Disconnect, Packet, Properties, ProtocolVersion, Publish, QoS,
    ReasonCode, RetainHandling, Subscribe, SubscriptionOptions, TopicSubscription, Unsubscribe,
    Will,
};

const THREADS: usize = 6;
const DEFAULT_CASES: u64 = 480;
const DEFAULT_SECS: u64 = 40;
/// The control client's PINGRESP deadline after each batch.
const PING_DEADLINE: Duration = Duration::from_secs(2);

// ------------------------------------------------------------------ PRNG

/// SplitMix64: tiny, seedable, good enough for input generation.
#[derive(Clone)]
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.below(hi - lo + 1)
    }
    /// True with probability `pct` percent.
    fn pct(&mut self, pct: u64) -> bool {
        self.below(100) < pct
    }
    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

// ------------------------------------------------------------------ generation

const TOPICS: &[&str] = &[
    "fz/a",
    "fz/b",
    "fz/a/b",
    "fz/c/d/e",
    "fz/retained",
    "$SYS/fz",
    "fz/ü/€",
    "fz//x",
];
const FILTERS: &[&str] = &[
    "fz/#",
    "fz/+",
    "fz/a/+",
    "+/+",
    "#",
    "fz/a/b",
    "$share/g1/fz/#",
    "$share/g2/fz/a",
    "$SYS/#",
    "fz/+/b",
    "fz/a/#/b",
    "fz/a+",
    "$share/g3",
];

fn qos(r: &mut Rng) -> QoS {
    *r.pick(&[QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce])
}

fn user_props(r: &mut Rng) -> Vec<(String, String)> {
    (0..r.below(3))
        .map(|i| (format!("k{i}"), "v".repeat(r.below(20) as usize)))
        .collect()
}

fn connect(r: &mut Rng, v5: bool) -> Connect {
    let mut properties = Properties::default();
    if v5 {
        properties.session_expiry_interval = *r.pick(&[None, Some(0), Some(2), Some(60)]);
        properties.receive_maximum = *r.pick(&[None, Some(1), Some(3), Some(100)]);
        properties.maximum_packet_size = *r.pick(&[None, Some(128), Some(600), Some(65_536)]);
        properties.topic_alias_maximum = *r.pick(&[None, Some(0), Some(3)]);
        properties.request_response_information = *r.pick(&[None, Some(0), Some(1)]);
        properties.user_properties = user_props(r);
    }
    let will = r.pct(30).then(|| {
        let mut wp = Properties::default();
        if v5 {
            wp.will_delay_interval = *r.pick(&[None, Some(0), Some(1)]);
            wp.message_expiry_interval = *r.pick(&[None, Some(5)]);
        }
        Will {
            topic: r.pick(TOPICS).to_string(),
            payload: b"will".to_vec(),
            qos: qos(r),
            retain: r.pct(30),
            properties: wp,
        }
    });
    let id = if r.pct(5) {
        String::new()
    } else {
        format!("fz-{}", r.below(10))
    };
    Connect {
        protocol: if v5 {
            ProtocolVersion::V5
        } else {
            ProtocolVersion::V311
        },
        bridge: false,
        // An empty 3.1.1 client id needs Clean Session 1 (else CONNACK 0x02, also fine).
        clean_start: r.pct(60) || (id.is_empty() && r.pct(80)),
        keep_alive: *r.pick(&[0, 1, 5, 60]),
        properties,
        client_id: id,
        will,
        username: r.pct(10).then(|| "user".to_string()),
        password: None,
    }
}

/// `aliases`: the topic aliases this connection has set so far; mostly only those are used
/// alone, and only now and then one above the broker's maximum of 10.
fn publish(r: &mut Rng, v5: bool, aliases: &mut Vec<u16>) -> Packet {
    let q = qos(r);
    let mut properties = Properties::default();
    let mut topic = r.pick(TOPICS).to_string();
    if v5 && r.pct(30) {
        if !aliases.is_empty() && r.pct(60) {
            properties.topic_alias = Some(*r.pick(aliases));
            topic.clear();
        } else {
            let alias = if r.pct(3) { 11 } else { r.range(1, 10) as u16 };
            properties.topic_alias = Some(alias);
            if r.pct(3) {
                topic.clear(); // probably unknown: Protocol Error
            } else {
                aliases.push(alias);
            }
        }
    }
    if v5 {
        properties.message_expiry_interval = *r.pick(&[None, None, Some(0), Some(3)]);
        properties.payload_format_indicator = *r.pick(&[None, None, Some(0), Some(1)]);
        properties.response_topic = r.pct(10).then(|| "fz/resp".to_string());
        properties.correlation_data = r.pct(10).then(|| r.bytes(4));
        properties.content_type = r.pct(10).then(|| "text/plain".to_string());
        properties.user_properties = user_props(r);
    }
    let len = if r.pct(3) {
        r.range(1000, 8000)
    } else {
        r.below(200)
    } as usize;
    Packet::Publish(Publish {
        dup: q != QoS::AtMostOnce && r.pct(20),
        qos: q,
        retain: r.pct(15),
        topic,
        packet_id: if q == QoS::AtMostOnce {
            0
        } else {
            r.range(1, 8) as u16
        },
        properties,
        payload: r.bytes(len),
    })
}

fn subscribe(r: &mut Rng, v5: bool) -> Packet {
    let mut properties = Properties::default();
    if v5 && r.pct(30) {
        properties.subscription_identifiers = vec![r.range(1, 5) as u32];
    }
    let filters = (0..r.range(1, 3))
        .map(|_| (r.pick(FILTERS).to_string(), r.pct(95)))
        .collect::<Vec<_>>()
        .into_iter()
        .map(|(filter, sane)| TopicSubscription {
            // No Local on a shared subscription is a Protocol Error (MQTT-3.8.3-4): rarely.
            options: SubscriptionOptions {
                no_local: v5 && r.pct(15) && (!sane || !filter.starts_with("$share/")),
                qos: qos(r),
                retain_as_published: v5 && r.pct(30),
                retain_handling: if v5 {
                    *r.pick(&[
                        RetainHandling::SendAtSubscribe,
                        RetainHandling::SendAtSubscribeIfNew,
                        RetainHandling::DoNotSend,
                    ])
                } else {
                    RetainHandling::SendAtSubscribe
                },
            },
            filter,
        })
        .collect();
    Packet::Subscribe(Subscribe {
        packet_id: r.range(1, 8) as u16,
        properties,
        filters,
    })
}

/// PUBACK / PUBREC / PUBREL / PUBCOMP with a small id; 5.0 reasons valid for the kind, and
/// now and then one that is not (Malformed).
fn ack(r: &mut Rng, v5: bool) -> Packet {
    let kind = r.below(4);
    let reason = if !v5 || r.pct(75) {
        ReasonCode::Success
    } else if r.pct(5) {
        ReasonCode::ServerBusy
    } else if kind < 2 {
        *r.pick(&[
            ReasonCode::NoMatchingSubscribers,
            ReasonCode::UnspecifiedError,
            ReasonCode::QuotaExceeded,
        ])
    } else {
        ReasonCode::PacketIdentifierNotFound
    };
    let a = Ack {
        packet_id: r.range(1, 8) as u16,
        reason,
        properties: Properties::default(),
    };
    match kind {
        0 => Packet::PubAck(a),
        1 => Packet::PubRec(a),
        2 => Packet::PubRel(a),
        _ => Packet::PubComp(a),
    }
}

/// One packet after CONNECT; the bool says whether it ends the sequence (DISCONNECT).
fn next_packet(r: &mut Rng, v5: bool, aliases: &mut Vec<u16>) -> (Packet, bool) {
    match r.below(100) {
        0..=39 => (publish(r, v5, aliases), false),
        40..=54 => (subscribe(r, v5), false),
        55..=61 => (
            Packet::Unsubscribe(Unsubscribe {
                packet_id: r.range(1, 8) as u16,
                properties: Properties::default(),
                filters: vec![r.pick(FILTERS).to_string()],
            }),
            false,
        ),
        62..=84 => (ack(r, v5), false),
        85..=91 => (Packet::PingReq, false),
        92 if r.pct(50) => (Packet::Connect(Box::new(connect(r, v5))), false),
        93 if v5 && r.pct(50) => (
            Packet::Auth(Auth {
                reason: ReasonCode::ReAuthenticate,
                properties: Properties::default(),
            }),
            false,
        ),
        94..=96 => (
            Packet::Disconnect(Disconnect {
                reason: if v5 && r.pct(50) {
                    ReasonCode::DisconnectWithWillMessage
                } else {
                    ReasonCode::Success
                },
                properties: Properties::default(),
            }),
            true,
        ),
        _ => (Packet::PingReq, false),
    }
}

/// Damages an encoded packet.
fn mutate(r: &mut Rng, mut b: Vec<u8>) -> Vec<u8> {
    if b.is_empty() {
        return r.bytes(4);
    }
    match r.below(8) {
        0 => {
            let i = r.below(b.len() as u64) as usize;
            b[i] ^= 1 << r.below(8);
        }
        1 => {
            let i = r.below(b.len() as u64) as usize;
            b[i] = r.next() as u8;
        }
        2 => b.truncate(r.below(b.len() as u64) as usize),
        3 => {
            let i = r.below(b.len() as u64 + 1) as usize;
            let n = r.range(1, 16) as usize;
            let junk = r.bytes(n);
            b.splice(i..i, junk);
        }
        4 => {
            // Rewrite the Remaining Length: small, large, huge or 5 bytes long.
            let mut i = 1;
            while i < b.len() && b[i] & 0x80 != 0 && i < 4 {
                i += 1;
            }
            let rest = b.split_off((i + 1).min(b.len()));
            b.truncate(1);
            match r.below(4) {
                0 => b.extend(packet::varint(r.below(128) as u32)),
                1 => b.extend(packet::varint(r.range(128, 70_000) as u32)),
                2 => b.extend(packet::varint(r.range(1 << 20, 268_435_455) as u32)),
                _ => b.extend([0xff, 0xff, 0xff, 0xff, 0x01]),
            }
            b.extend(rest);
        }
        5 => b[0] = (b[0] & 0x0f) | ((r.below(16) as u8) << 4),
        6 => b[0] = (b[0] & 0xf0) | (r.below(16) as u8),
        _ => {
            let n = r.below(b.len() as u64) as usize;
            let dup = b[..n].to_vec();
            b.extend(dup);
        }
    }
    b
}

fn encode(p: &Packet, v5: bool) -> Vec<u8> {
    let mut out = Vec::new();
    let v = if v5 {
        ProtocolVersion::V5
    } else {
        ProtocolVersion::V311
    };
    protocol::encode(p, v, &mut out);
    out
}

// ------------------------------------------------------------------ one case

/// What the reader thread checks and answers.
struct ReadCheck {
    /// Decode the broker's bytes with this version (only when our CONNECT was not mutated).
    version: Option<ProtocolVersion>,
    /// Our Maximum Packet Size (MQTT-3.1.2-24: the broker must not send larger packets).
    max_packet: Option<u32>,
}

/// Reads everything the broker sends until EOF; answers its QoS flows at random; returns a
/// problem found, if any.
fn reader(s: TcpStream, w: Arc<Mutex<TcpStream>>, check: ReadCheck, seed: u64) -> Option<String> {
    let mut r = Rng(seed);
    let mut frames = FrameBuffer::new();
    let mut buf = [0u8; 4096];
    let mut rd = &s;
    let deadline = Instant::now() + Duration::from_secs(15);
    let _ = s.set_read_timeout(Some(Duration::from_secs(3)));
    let mut total = 0usize;
    loop {
        if Instant::now() > deadline {
            return None; // the case is long over; the broker may keep sending (fine)
        }
        let n = match rd.read(&mut buf) {
            Ok(0) => return None,
            Ok(n) => n,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(_) => return None,
        };
        total += n;
        let Some(version) = check.version else {
            continue;
        };
        frames.extend(&buf[..n]);
        loop {
            let before = frames.buffered();
            match frames.next_packet(Some(version), u32::MAX) {
                Ok(Some(p)) => {
                    let size = before - frames.buffered();
                    if let Some(max) = check.max_packet {
                        if size as u64 > u64::from(max) {
                            return Some(format!(
                                "broker sent a {size}-byte {:?} over the client's Maximum \
                                 Packet Size {max} (MQTT-3.1.2-24)",
                                p.packet_type()
                            ));
                        }
                    }
                    let reply = match &p {
                        Packet::Publish(p) if p.qos == QoS::AtLeastOnce && r.pct(70) => {
                            Some(Packet::PubAck(ok_ack(p.packet_id)))
                        }
                        Packet::Publish(p) if p.qos == QoS::ExactlyOnce && r.pct(70) => {
                            Some(Packet::PubRec(ok_ack(p.packet_id)))
                        }
                        Packet::PubRel(a) if r.pct(80) => {
                            Some(Packet::PubComp(ok_ack(a.packet_id)))
                        }
                        _ => None,
                    };
                    if let Some(reply) = reply {
                        let bytes = encode(&reply, version.is_v5());
                        let _ = w.lock().unwrap().write_all(&bytes);
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    return Some(format!(
                        "broker sent bytes the codec rejects after {total} bytes: {e}"
                    ))
                }
            }
        }
    }
}

fn ok_ack(packet_id: u16) -> Ack {
    Ack {
        packet_id,
        reason: ReasonCode::Success,
        properties: Properties::default(),
    }
}

/// Runs one case; returns a problem found by the reader, if any.
fn run_case(addr: SocketAddr, seed: u64) -> Option<String> {
    let mut r = Rng(seed);
    let Ok(s) = TcpStream::connect_timeout(&addr, Duration::from_secs(5)) else {
        return Some("cannot connect to the broker".into());
    };
    let _ = s.set_nodelay(true);
    let _ = s.set_write_timeout(Some(Duration::from_secs(3)));
    let w = Arc::new(Mutex::new(s.try_clone().expect("clone socket")));

    let v5 = r.pct(65);
    let mut plan: Vec<Vec<u8>> = Vec::new();
    let mut check = ReadCheck {
        version: None,
        max_packet: None,
    };
    if r.pct(97) {
        let c = connect(&mut r, v5);
        let bytes = encode(&Packet::Connect(Box::new(c.clone())), v5);
        if r.pct(10) {
            plan.push(mutate(&mut r, bytes));
        } else {
            check.version = Some(c.protocol);
            check.max_packet = c.properties.maximum_packet_size;
            plan.push(bytes);
        }
    }
    let mut aliases = Vec::new();
    for _ in 0..r.range(0, 30) {
        let (p, last) = next_packet(&mut r, v5, &mut aliases);
        let mut bytes = encode(&p, v5);
        if r.pct(6) {
            bytes = mutate(&mut r, bytes);
        } else if r.pct(1) {
            let n = r.range(1, 64) as usize;
            bytes = r.bytes(n);
        }
        plan.push(bytes);
        if last {
            break;
        }
    }

    let read_half = s.try_clone().expect("clone socket");
    let reader_seed = r.next();
    let acks = w.clone();
    let reader = thread::spawn(move || reader(read_half, acks, check, reader_seed));
    // Writes go through the same mutex as the reader's acks, so packets never interleave.
    'send: for bytes in &plan {
        // Split each packet at a random point now and then.
        let cut = if r.pct(20) && bytes.len() > 1 {
            r.range(1, bytes.len() as u64 - 1) as usize
        } else {
            bytes.len()
        };
        for part in [&bytes[..cut], &bytes[cut..]] {
            if part.is_empty() {
                continue;
            }
            if w.lock().unwrap().write_all(part).is_err() {
                break 'send;
            }
            if r.pct(30) {
                thread::sleep(Duration::from_millis(r.below(15)));
            }
        }
    }
    match r.below(4) {
        0 => thread::sleep(Duration::from_millis(r.below(300))), // stall, then close
        1 => {
            let _ = s.shutdown(Shutdown::Write); // half close
            thread::sleep(Duration::from_millis(r.below(100)));
        }
        _ => thread::sleep(Duration::from_millis(r.below(30))),
    }
    let _ = s.shutdown(Shutdown::Both);
    drop(s);
    reader
        .join()
        .unwrap_or(Some("reader thread panicked".into()))
}

// ------------------------------------------------------------------ the test

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.trim().parse().ok())
}

fn connected(addr: SocketAddr, v5: bool, id: &str) -> TcpStream {
    let s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).expect("connect");
    s.set_nodelay(true).unwrap();
    let connect = if v5 {
        packet::connect_v5(id, 60, true)
    } else {
        packet::connect_v311(id, 60, true)
    };
    (&s).write_all(&connect).unwrap();
    let p = read_packet_within(&s, Duration::from_secs(5)).expect("CONNACK");
    assert!(p[0] == 0x20 && p[3] == 0, "CONNACK for {id}: {}", hex(&p));
    s
}

fn api_clients_connected(b: &Broker) -> u64 {
    let Ok(mut s) = TcpStream::connect_timeout(&b.web, Duration::from_secs(5)) else {
        return u64::MAX;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
    let _ = write!(s, "GET /api/status HTTP/1.0\r\nHost: {}\r\n\r\n", b.web);
    let mut text = String::new();
    let _ = s.read_to_string(&mut text);
    text.split("\r\n\r\n")
        .nth(1)
        .and_then(|body| serde_json::from_str::<serde_json::Value>(body).ok())
        .and_then(|v| v["clients_connected"].as_u64())
        .unwrap_or(u64::MAX)
}

#[test]
fn connection_state_machine_survives_random_valid_and_invalid_packet_sequences() {
    let cases = env_u64("STATE_FUZZ_CASES").unwrap_or(DEFAULT_CASES);
    let secs = env_u64("STATE_FUZZ_SECS").unwrap_or(if cases > DEFAULT_CASES {
        cases / 10
    } else {
        DEFAULT_SECS
    });
    let seed = env_u64("STATE_FUZZ_SEED").unwrap_or_else(|| {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1)
    });
    eprintln!("state fuzz: STATE_FUZZ_SEED={seed} cases={cases} time cap={secs}s");

    let mut b = Broker::start(&[
        "--allow-anonymous",
        "--max-clients",
        "64",
        "--connect-rate-limit",
        "0",
        "--connect-timeout",
        "3",
    ]);
    let control = connected(b.mqtt, true, "fz-control");
    let base_rss = rss_kb(b.pid());
    let mut peak_rss = base_rss;
    let start = Instant::now();
    let mut problems: Vec<String> = Vec::new();
    let mut done = 0u64;
    let mut slowest_ping = Duration::ZERO;
    while done < cases && start.elapsed() < Duration::from_secs(secs) {
        let batch: Vec<u64> = (done..(done + THREADS as u64).min(cases)).collect();
        let addr = b.mqtt;
        let results: Vec<(u64, Option<String>)> = thread::scope(|scope| {
            let hs: Vec<_> = batch
                .iter()
                .map(|&case| {
                    let case_seed = Rng(seed ^ case.wrapping_mul(0x2545_f491_4f6c_dd1d)).next();
                    scope.spawn(move || (case, run_case(addr, case_seed)))
                })
                .collect();
            hs.into_iter().map(|h| h.join().unwrap()).collect()
        });
        for (case, problem) in results {
            if let Some(p) = problem {
                problems.push(format!("case {case} (STATE_FUZZ_SEED={seed}): {p}"));
            }
        }
        done += batch.len() as u64;
        if let Some(st) = b.try_exit() {
            panic!(
                "broker died ({st}) in the batch ending at case {done} (STATE_FUZZ_SEED={seed})\n\
                 --- broker log (tail) ---\n{}",
                tail(&b.log(), 80)
            );
        }
        let t = Instant::now();
        (&control)
            .write_all(&packet::pingreq())
            .unwrap_or_else(|e| {
                panic!("control client lost after case {done} (STATE_FUZZ_SEED={seed}): {e}")
            });
        let p = read_packet_within(&control, PING_DEADLINE);
        let took = t.elapsed();
        slowest_ping = slowest_ping.max(took);
        assert_eq!(
            p.as_deref(),
            Some(&packet::pingresp()[..]),
            "control client: no PINGRESP within {PING_DEADLINE:?} after case {done} \
             (STATE_FUZZ_SEED={seed}); the broker stalled\n--- broker log (tail) ---\n{}",
            tail(&b.log(), 80)
        );
        peak_rss = peak_rss.max(rss_kb(b.pid()));
    }

    // Fresh clients work at the end, in both versions.
    let sub5 = connected(b.mqtt, true, "fz-end-sub5");
    let sub4 = connected(b.mqtt, false, "fz-end-sub4");
    for (s, v5) in [(&sub5, true), (&sub4, false)] {
        let mut w = s;
        w.write_all(&packet::subscribe(v5, 1, "fz-end/t", 1))
            .unwrap();
        let p = read_packet_within(s, Duration::from_secs(5)).expect("SUBACK");
        assert_eq!(p[0], 0x90, "SUBACK {}", hex(&p));
    }
    let publisher = connected(b.mqtt, false, "fz-end-pub");
    (&publisher)
        .write_all(&packet::publish(
            false,
            "fz-end/t",
            b"end",
            1,
            Some(1),
            false,
            false,
        ))
        .unwrap();
    assert_eq!(
        read_packet_within(&publisher, Duration::from_secs(5)).as_deref(),
        Some(&packet::puback(1)[..])
    );
    for s in [&sub5, &sub4] {
        let p = read_packet_within(s, Duration::from_secs(5)).expect("PUBLISH at the end");
        assert_eq!(p[0] & 0xf0, 0x30, "PUBLISH {}", hex(&p));
        assert!(p.ends_with(b"end"), "payload: {}", hex(&p));
    }
    drop((sub5, sub4, publisher));
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut n = api_clients_connected(&b);
    while n != 1 && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(100));
        n = api_clients_connected(&b);
    }
    eprintln!(
        "state fuzz: {done} cases in {:?}; slowest control PINGRESP {slowest_ping:?}; VmRSS \
         {base_rss} kB → peak {peak_rss} kB; {} problems",
        start.elapsed(),
        problems.len()
    );
    assert_eq!(
        n, 1,
        "clients_connected at the end (only the control client should remain)"
    );
    assert!(
        problems.is_empty(),
        "{} problems:\n{}",
        problems.len(),
        problems.join("\n")
    );
}

fn tail(log: &str, n: usize) -> String {
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}
