//! QoS flows, flow control and sessions against the real broker binary: the QoS 1 / QoS 2
//! exchanges byte by byte (§4.3), exactly-once on the inbound side (MQTT-4.3.3-10 / -12),
//! redelivery on session resume (MQTT-4.4.0-1), Receive Maximum in both directions (§4.9,
//! §3.3.4), Clean Start / Session Expiry / offline queues (§3.1.2.4, §3.1.2.11.2, §4.1),
//! session takeover (MQTT-3.1.4-3) and the offline queue limit with its drop counter.
//!
//! Raw sockets (the `common` harness) are used where the exact packet matters; rumqttc 0.24 is
//! the independent publisher elsewhere. Every test starts its own broker on 127.0.0.1 with
//! OS-chosen ports; every wait is bounded.

mod common;

use common::flow::*;
use common::*;
use std::collections::VecDeque;
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// Upper bound for one expected event.
const WAIT: Duration = Duration::from_secs(5);
/// How long "nothing more arrives" is watched for.
const QUIET: Duration = Duration::from_millis(500);

// ---------------------------------------------------------- rumqttc wrapper

/// What the rumqttc poller thread reports.
enum Ev {
    ConnAck(bool),
    /// PUBACK or PUBCOMP for our own publish.
    Done,
    Other,
    Error(String),
}

enum Handle {
    V5(rumqttc::v5::Client),
    V4(rumqttc::Client),
}

/// A rumqttc sync client used as an independent publisher; its `Connection` is polled by a
/// thread that forwards what arrives.
struct Peer {
    handle: Handle,
    rx: mpsc::Receiver<Ev>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

fn qos5(q: u8) -> rumqttc::v5::mqttbytes::QoS {
    use rumqttc::v5::mqttbytes::QoS;
    match q {
        0 => QoS::AtMostOnce,
        1 => QoS::AtLeastOnce,
        _ => QoS::ExactlyOnce,
    }
}

fn qos4(q: u8) -> rumqttc::QoS {
    match q {
        0 => rumqttc::QoS::AtMostOnce,
        1 => rumqttc::QoS::AtLeastOnce,
        _ => rumqttc::QoS::ExactlyOnce,
    }
}

impl Peer {
    /// A 5.0 rumqttc client with Clean Start 1, connected (CONNACK Success awaited).
    fn v5(addr: SocketAddr, client_id: &str) -> Peer {
        use rumqttc::v5::mqttbytes::v5::{ConnectReturnCode, Packet};
        let mut opts = rumqttc::v5::MqttOptions::new(client_id, "127.0.0.1", addr.port());
        opts.set_keep_alive(Duration::from_secs(30));
        opts.set_clean_start(true);
        let (client, mut conn) = rumqttc::v5::Client::new(opts, 1024);
        Self::spawn(Handle::V5(client), move |tx, stop| {
            while !stop.load(Ordering::Relaxed) {
                let ev = match conn.recv_timeout(Duration::from_millis(100)) {
                    Ok(Ok(rumqttc::v5::Event::Incoming(p))) => match p {
                        Packet::ConnAck(c) => Ev::ConnAck(c.code == ConnectReturnCode::Success),
                        Packet::PubAck(_) | Packet::PubComp(_) => Ev::Done,
                        _ => Ev::Other,
                    },
                    Ok(Ok(_)) => continue,
                    Ok(Err(e)) => {
                        let _ = tx.send(Ev::Error(e.to_string()));
                        return;
                    }
                    // rumqttc::v5 does not export its RecvTimeoutError type.
                    Err(e) if format!("{e:?}") == "Timeout" => continue,
                    Err(_) => return,
                };
                if tx.send(ev).is_err() {
                    return;
                }
            }
        })
    }

    /// A 3.1.1 rumqttc client with Clean Session 1, connected.
    fn v311(addr: SocketAddr, client_id: &str) -> Peer {
        use rumqttc::{ConnectReturnCode, Packet};
        let mut opts = rumqttc::MqttOptions::new(client_id, "127.0.0.1", addr.port());
        opts.set_keep_alive(Duration::from_secs(30));
        opts.set_clean_session(true);
        let (client, mut conn) = rumqttc::Client::new(opts, 1024);
        Self::spawn(Handle::V4(client), move |tx, stop| {
            while !stop.load(Ordering::Relaxed) {
                let ev = match conn.recv_timeout(Duration::from_millis(100)) {
                    Ok(Ok(rumqttc::Event::Incoming(p))) => match p {
                        Packet::ConnAck(c) => Ev::ConnAck(c.code == ConnectReturnCode::Success),
                        Packet::PubAck(_) | Packet::PubComp(_) => Ev::Done,
                        _ => Ev::Other,
                    },
                    Ok(Ok(_)) => continue,
                    Ok(Err(e)) => {
                        let _ = tx.send(Ev::Error(e.to_string()));
                        return;
                    }
                    Err(rumqttc::RecvTimeoutError::Timeout) => continue,
                    Err(_) => return,
                };
                if tx.send(ev).is_err() {
                    return;
                }
            }
        })
    }

    fn spawn<F>(handle: Handle, poll: F) -> Peer
    where
        F: FnOnce(mpsc::Sender<Ev>, Arc<AtomicBool>) + Send + 'static,
    {
        let (tx, rx) = mpsc::channel();
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = stop.clone();
        let thread = thread::spawn(move || poll(tx, stop2));
        let peer = Peer {
            handle,
            rx,
            stop,
            thread: Some(thread),
        };
        match peer.rx.recv_timeout(WAIT) {
            Ok(Ev::ConnAck(true)) => {}
            Ok(Ev::ConnAck(false)) => panic!("rumqttc: CONNACK refused"),
            Ok(Ev::Error(e)) => panic!("rumqttc: connection error {e}"),
            Ok(_) => panic!("rumqttc: first packet was not CONNACK"),
            Err(_) => panic!("rumqttc: no CONNACK within {WAIT:?}"),
        }
        peer
    }

    fn publish(&self, topic: &str, qos: u8, retain: bool, payload: &[u8]) {
        match &self.handle {
            Handle::V5(c) => c
                .publish(topic, qos5(qos), retain, payload.to_vec())
                .unwrap(),
            Handle::V4(c) => c
                .publish(topic, qos4(qos), retain, payload.to_vec())
                .unwrap(),
        }
    }

    /// Waits for `n` PUBACK/PUBCOMP (completions of our own QoS 1/2 publishes).
    fn wait_done(&mut self, n: usize) {
        let deadline = Instant::now() + WAIT;
        let mut done = 0;
        while done < n {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.rx.recv_timeout(left) {
                Ok(Ev::Done) => done += 1,
                Ok(Ev::Error(e)) => panic!("rumqttc: connection error: {e}"),
                Ok(_) => {}
                Err(_) => panic!("rumqttc: {done} of {n} publishes completed within {WAIT:?}"),
            }
        }
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        match &self.handle {
            Handle::V5(c) => {
                let _ = c.try_disconnect();
            }
            Handle::V4(c) => {
                let _ = c.try_disconnect();
            }
        }
        if let Some(t) = self.thread.take() {
            // The poller checks `stop` every 100 ms; wait a bounded time for it.
            let deadline = Instant::now() + Duration::from_secs(2);
            while !t.is_finished() && Instant::now() < deadline {
                thread::sleep(Duration::from_millis(10));
            }
            if t.is_finished() {
                let _ = t.join();
            }
        }
    }
}

fn broker() -> Broker {
    Broker::start(&["--allow-anonymous"])
}

/// Properties of a 5.0 CONNACK as (identifier, value bytes).
fn connack_props(ack: &[u8]) -> Vec<(u8, Vec<u8>)> {
    let mut i = body_start(ack) + 2;
    let (plen, n) = read_varint(&ack[i..]);
    i += n;
    let end = i + plen;
    let mut out = Vec::new();
    while i < end {
        let id = ack[i];
        i += 1;
        let len = match id {
            0x24 | 0x25 | 0x28 | 0x29 | 0x2a => 1,
            0x21 | 0x22 | 0x13 => 2,
            0x11 | 0x27 => 4,
            0x12 | 0x1a | 0x1c | 0x1f | 0x15 | 0x16 => 2 + usize::from(u16_at(ack, i)),
            0x26 => {
                let k = 2 + usize::from(u16_at(ack, i));
                k + 2 + usize::from(u16_at(ack, i + k))
            }
            other => panic!("unexpected CONNACK property 0x{other:02x}: {}", hex(ack)),
        };
        out.push((id, ack[i..i + len].to_vec()));
        i += len;
    }
    out
}

/// Waits until the broker logged `needle` at least `n` times.
fn wait_log_count(b: &Broker, needle: &str, n: usize) {
    let deadline = Instant::now() + WAIT;
    while b.log().matches(needle).count() < n {
        assert!(
            Instant::now() < deadline,
            "broker did not log {needle:?} {n} times within {WAIT:?}\n--- log ---\n{}",
            b.log()
        );
        thread::sleep(Duration::from_millis(10));
    }
}

/// Sends DISCONNECT (normal) and waits until the broker has detached the session (its
/// "client <id> disconnected" log line, the `n`-th one for this id).
fn disconnect_and_wait(b: &Broker, s: TcpStream, v5: bool, client_id: &str, n: usize) {
    send(
        &s,
        &if v5 {
            packet::disconnect_v5(0)
        } else {
            packet::disconnect_v311()
        },
    );
    expect_closed(&s, WAIT);
    wait_log_count(b, &format!("client {client_id} disconnected from"), n);
}

fn expiry(secs: u32) -> Vec<u8> {
    let mut v = vec![0x11];
    v.extend(secs.to_be_bytes());
    v
}

fn payload_index(p: &Pub) -> u32 {
    u32::from_be_bytes(p.payload.as_slice().try_into().expect("4-byte payload"))
}

// ======================================================================= tests

/// MQTT-3.3.4-1, §3.4.2.1: QoS 1 PUBLISH → PUBACK with the same id; 0x10 (No matching
/// subscribers) when nobody subscribed, 0x00 once someone has; the subscriber gets it at QoS 1.
#[test]
fn mqtt_3_4_2_1_qos1_puback_no_matching_subscribers_0x10_then_success() {
    let b = broker();
    let (p, _) = raw_v5(b.mqtt, "q1-pub", true, &[]);
    send(
        &p,
        &packet::publish(true, "q1/t", b"nobody", 1, Some(1), false, false),
    );
    expect_bytes(&p, &[0x40, 0x03, 0x00, 0x01, 0x10]);
    let (s, _) = raw_v5(b.mqtt, "q1-sub", true, &[]);
    assert_eq!(sub_v5(&s, 1, None, &[("q1/t", 1)]), vec![1]);
    send(
        &p,
        &packet::publish(true, "q1/t", b"someone", 1, Some(0xabcd), false, false),
    );
    expect_ack(&p, 0x40, 0xabcd, 0x00);
    let m = read_publish(&s, true);
    assert_eq!(
        (m.qos, m.dup, m.payload.as_slice()),
        (1, false, &b"someone"[..])
    );
    assert!(!m.retain, "RETAIN 0 on a live delivery");
    send(&s, &packet::puback(m.packet_id.unwrap()));
    expect_silence(&s, QUIET);
    expect_silence(&p, Duration::from_millis(100));
}

/// §4.3.3 from the publisher's side: PUBLISH → PUBREC (0x10 without subscribers, 0x00 with) →
/// PUBREL → PUBCOMP; and towards a QoS 2 subscriber: PUBLISH → PUBREC → PUBREL → PUBCOMP.
#[test]
fn mqtt_4_3_3_qos2_flow_pubrec_pubrel_pubcomp_both_sides() {
    let b = broker();
    let (p, _) = raw_v5(b.mqtt, "q2-pub", true, &[]);
    send(
        &p,
        &packet::publish(true, "q2/t", b"nobody", 2, Some(1), false, false),
    );
    expect_bytes(&p, &[0x50, 0x03, 0x00, 0x01, 0x10]);
    send(&p, &packet::pubrel(1));
    expect_ack(&p, 0x70, 1, 0x00);
    let (s, _) = raw_v5(b.mqtt, "q2-sub", true, &[]);
    assert_eq!(sub_v5(&s, 1, None, &[("q2/t", 2)]), vec![2]);
    send(
        &p,
        &packet::publish(true, "q2/t", b"someone", 2, Some(2), false, false),
    );
    expect_ack(&p, 0x50, 2, 0x00);
    send(&p, &packet::pubrel(2));
    expect_ack(&p, 0x70, 2, 0x00);
    let m = read_publish(&s, true);
    assert_eq!(
        (m.qos, m.dup, m.payload.as_slice()),
        (2, false, &b"someone"[..])
    );
    let id = m.packet_id.unwrap();
    send(&s, &packet::pubrec(id));
    expect_ack(&s, 0x62, id, 0x00); // PUBREL, fixed header flags 0010
    send(&s, &packet::pubcomp(id));
    expect_silence(&s, QUIET);
}

/// §3.7.2.1: a PUBREL for a packet id the broker does not know → PUBCOMP 0x92 (Packet
/// Identifier not found) in 5.0; the connection stays up.
#[test]
fn mqtt_3_7_2_1_pubrel_unknown_packet_id_pubcomp_0x92() {
    let b = broker();
    let (p, _) = raw_v5(b.mqtt, "relunknown", true, &[]);
    send(&p, &packet::pubrel(0x004d));
    expect_bytes(&p, &[0x70, 0x03, 0x00, 0x4d, 0x92]);
    send(&p, &packet::pingreq());
    expect_bytes(&p, &packet::pingresp());
}

/// 3.1.1 has no reason codes: PUBACK `40 02 id` without subscribers, and a PUBREL for an
/// unknown id still gets `70 02 id`.
#[test]
fn mqtt_3_1_1_acks_carry_no_reason_code() {
    let b = broker();
    let p = raw_v311(b.mqtt, "acks311", true);
    send(
        &p,
        &packet::publish(false, "a/t", b"x", 1, Some(3), false, false),
    );
    expect_bytes(&p, &[0x40, 0x02, 0x00, 0x03]);
    send(
        &p,
        &packet::publish(false, "a/t", b"x", 2, Some(4), false, false),
    );
    expect_bytes(&p, &[0x50, 0x02, 0x00, 0x04]);
    send(&p, &packet::pubrel(4));
    expect_bytes(&p, &[0x70, 0x02, 0x00, 0x04]);
    send(&p, &packet::pubrel(0x4d));
    expect_bytes(&p, &[0x70, 0x02, 0x00, 0x4d]);
}

/// MQTT-4.3.3-10: the same QoS 2 PUBLISH sent again (DUP=1, same id) before PUBREL is
/// acknowledged with PUBREC again but delivered only once.
#[test]
fn mqtt_4_3_3_10_qos2_publish_resent_before_pubrel_delivered_once() {
    let b = broker();
    let (s, _) = raw_v5(b.mqtt, "once-sub", true, &[]);
    assert_eq!(sub_v5(&s, 1, None, &[("once/t", 0)]), vec![0]);
    let (p, _) = raw_v5(b.mqtt, "once-pub", true, &[]);
    send(
        &p,
        &packet::publish(true, "once/t", b"x", 2, Some(5), false, false),
    );
    expect_ack(&p, 0x50, 5, 0x00);
    send(
        &p,
        &packet::publish(true, "once/t", b"x", 2, Some(5), false, true),
    );
    expect_ack(&p, 0x50, 5, 0x00);
    send(
        &p,
        &packet::publish(true, "once/t", b"x", 2, Some(5), false, true),
    );
    expect_ack(&p, 0x50, 5, 0x00);
    send(&p, &packet::pubrel(5));
    expect_ack(&p, 0x70, 5, 0x00);
    let got = drain_publishes(&s, true, QUIET);
    assert_eq!(got.len(), 1, "deliveries: {got:?}");
    assert_eq!(got[0].payload, b"x");
}

/// MQTT-4.3.3-12: after PUBCOMP, a PUBLISH reusing the packet id is a new message.
#[test]
fn mqtt_4_3_3_12_same_packet_id_after_pubcomp_is_new_message() {
    let b = broker();
    let (s, _) = raw_v5(b.mqtt, "reuse-sub", true, &[]);
    assert_eq!(sub_v5(&s, 1, None, &[("reuse/t", 0)]), vec![0]);
    let (p, _) = raw_v5(b.mqtt, "reuse-pub", true, &[]);
    for payload in [&b"first"[..], b"second", b"third"] {
        send(
            &p,
            &packet::publish(true, "reuse/t", payload, 2, Some(9), false, false),
        );
        expect_ack(&p, 0x50, 9, 0x00);
        send(&p, &packet::pubrel(9));
        expect_ack(&p, 0x70, 9, 0x00);
        let m = read_publish(&s, true);
        assert_eq!(m.payload, payload);
    }
    expect_silence(&s, QUIET);
}

/// MQTT-4.4.0-1 / MQTT-3.3.1-1: unacknowledged QoS 1 and QoS 2 PUBLISHes are resent on resume
/// (Clean Start 0, Session Expiry > 0) with DUP=1 and their original packet ids, in order;
/// CONNACK has Session Present 1.
#[test]
fn mqtt_4_4_0_1_unacked_publishes_resent_with_dup_and_same_ids_on_resume() {
    let b = broker();
    let (s, sp) = raw_v5(b.mqtt, "resend", true, &expiry(60));
    assert!(!sp);
    assert_eq!(sub_v5(&s, 1, None, &[("rs/#", 2)]), vec![2]);
    let (p, _) = raw_v5(b.mqtt, "resend-pub", true, &[]);
    assert_eq!(publish_qos1_v5(&p, "rs/a", b"one", 1, false), 0x00);
    send(
        &p,
        &packet::publish(true, "rs/b", b"two", 2, Some(2), false, false),
    );
    expect_ack(&p, 0x50, 2, 0x00);
    let first = read_publish(&s, true);
    let second = read_publish(&s, true);
    assert_eq!(
        (first.qos, first.dup, first.payload.as_slice()),
        (1, false, &b"one"[..])
    );
    assert_eq!(
        (second.qos, second.dup, second.payload.as_slice()),
        (2, false, &b"two"[..])
    );
    assert_ne!(first.packet_id, second.packet_id);
    // No acknowledgements; the connection goes away, the session stays (expiry 60 s).
    disconnect_and_wait(&b, s, true, "resend", 1);
    let (s, sp) = raw_v5(b.mqtt, "resend", false, &expiry(60));
    assert!(sp, "Session Present after resume");
    let r1 = read_publish(&s, true);
    let r2 = read_publish(&s, true);
    for (orig, again) in [(&first, &r1), (&second, &r2)] {
        assert!(again.dup, "DUP set on redelivery: {again:?}");
        assert_eq!(again.packet_id, orig.packet_id, "same packet id");
        assert_eq!(
            (again.qos, again.topic.as_str(), again.payload.as_slice()),
            (orig.qos, orig.topic.as_str(), orig.payload.as_slice())
        );
    }
    send(&s, &packet::puback(r1.packet_id.unwrap()));
    send(&s, &packet::pubrec(r2.packet_id.unwrap()));
    expect_ack(&s, 0x62, r2.packet_id.unwrap(), 0x00);
    send(&s, &packet::pubcomp(r2.packet_id.unwrap()));
    expect_silence(&s, QUIET);
}

/// MQTT-4.4.0-1 / MQTT-4.3.3-6: once PUBREC was received, resume resends PUBREL (same id), not
/// the PUBLISH; after PUBCOMP nothing is resent at the next resume.
#[test]
fn mqtt_4_4_0_1_pubrel_resent_on_resume_after_pubrec() {
    let b = broker();
    let (s, _) = raw_v5(b.mqtt, "resendrel", true, &expiry(60));
    assert_eq!(sub_v5(&s, 1, None, &[("rr/t", 2)]), vec![2]);
    let (p, _) = raw_v5(b.mqtt, "resendrel-pub", true, &[]);
    send(
        &p,
        &packet::publish(true, "rr/t", b"q2", 2, Some(1), false, false),
    );
    expect_ack(&p, 0x50, 1, 0x00);
    let m = read_publish(&s, true);
    let id = m.packet_id.unwrap();
    send(&s, &packet::pubrec(id));
    expect_ack(&s, 0x62, id, 0x00);
    disconnect_and_wait(&b, s, true, "resendrel", 1);
    let (s, sp) = raw_v5(b.mqtt, "resendrel", false, &expiry(60));
    assert!(sp);
    let pkt = read_packet(&s);
    assert_eq!(
        parse_ack(&pkt),
        (0x62, id, 0x00),
        "PUBREL resent: {}",
        hex(&pkt)
    );
    expect_silence(&s, QUIET);
    send(&s, &packet::pubcomp(id));
    disconnect_and_wait(&b, s, true, "resendrel", 2);
    let (s, sp) = raw_v5(b.mqtt, "resendrel", false, &expiry(60));
    assert!(sp);
    expect_silence(&s, QUIET);
}

/// MQTT-4.9.0-2 / MQTT-3.3.4-9: with Receive Maximum 2 a subscriber that does not acknowledge
/// gets exactly 2 of 10 QoS 1 messages, then one more per PUBACK, in order; other packets
/// still flow while the quota is 0 (MQTT-4.9.0-3).
#[test]
fn mqtt_4_9_0_2_receive_maximum_2_limits_unacknowledged_publishes() {
    let b = broker();
    let (s, _) = raw_v5(b.mqtt, "flow", true, &[0x21, 0x00, 0x02]);
    assert_eq!(sub_v5(&s, 1, None, &[("fc/t", 1)]), vec![1]);
    let (p, _) = raw_v5(b.mqtt, "flow-pub", true, &[]);
    for i in 0..10u32 {
        assert_eq!(
            publish_qos1_v5(&p, "fc/t", &i.to_be_bytes(), 100 + i as u16, false),
            0
        );
    }
    let mut inflight: VecDeque<Pub> = VecDeque::new();
    inflight.push_back(read_publish(&s, true));
    inflight.push_back(read_publish(&s, true));
    expect_silence(&s, QUIET);
    send(&s, &packet::pingreq());
    expect_bytes(&s, &packet::pingresp());
    let mut received: Vec<u32> = inflight.iter().map(payload_index).collect();
    while let Some(oldest) = inflight.pop_front() {
        send(&s, &packet::puback(oldest.packet_id.unwrap()));
        if received.len() < 10 {
            let next = read_publish(&s, true);
            assert!(
                inflight.iter().all(|m| m.packet_id != next.packet_id),
                "packet id {:?} still in flight",
                next.packet_id
            );
            received.push(payload_index(&next));
            inflight.push_back(next);
            expect_silence(&s, Duration::from_millis(200));
        }
    }
    assert_eq!(received, (0..10).collect::<Vec<_>>());
    expect_silence(&s, QUIET);
}

/// MQTT-4.9.0-2 with MQTT-4.4.0-1: the send quota is re-initialised from the Receive Maximum
/// of each new connection (§4.9), and resent PUBLISHes count against it: 5 unacknowledged
/// QoS 1 messages, resumed with Receive Maximum 2, come back 2 at a time.
#[test]
fn mqtt_4_9_0_2_resend_on_resume_respects_new_receive_maximum() {
    let b = broker();
    let (s, _) = raw_v5(b.mqtt, "rmresume", true, &expiry(60));
    assert_eq!(sub_v5(&s, 1, None, &[("rmr/t", 1)]), vec![1]);
    let (p, _) = raw_v5(b.mqtt, "rmresume-pub", true, &[]);
    for i in 0..5u32 {
        assert_eq!(
            publish_qos1_v5(&p, "rmr/t", &i.to_be_bytes(), 1 + i as u16, false),
            0
        );
    }
    let sent: Vec<Pub> = (0..5).map(|_| read_publish(&s, true)).collect();
    assert_eq!(
        sent.iter().map(payload_index).collect::<Vec<_>>(),
        vec![0, 1, 2, 3, 4]
    );
    disconnect_and_wait(&b, s, true, "rmresume", 1);
    let mut props = expiry(60);
    props.extend([0x21, 0x00, 0x02]); // Receive Maximum 2
    let (s, sp) = raw_v5(b.mqtt, "rmresume", false, &props);
    assert!(sp);
    let mut inflight: VecDeque<Pub> = (0..2).map(|_| read_publish(&s, true)).collect();
    expect_silence(&s, QUIET);
    let mut order: Vec<u32> = inflight.iter().map(payload_index).collect();
    while let Some(oldest) = inflight.pop_front() {
        send(&s, &packet::puback(oldest.packet_id.unwrap()));
        if order.len() < 5 {
            let next = read_publish(&s, true);
            assert!(next.dup, "a resend: {next:?}");
            order.push(payload_index(&next));
            inflight.push_back(next);
            expect_silence(&s, Duration::from_millis(200));
        }
    }
    assert_eq!(order, vec![0, 1, 2, 3, 4]);
}

/// MQTT-4.3.3-10 across connections: inbound QoS 2 state (PUBREC sent, PUBREL not yet
/// received) is part of the session (§4.1): after resuming, the resent PUBLISH is not
/// delivered again and the PUBREL is answered with PUBCOMP Success.
#[test]
fn mqtt_4_3_3_10_inbound_qos2_state_survives_session_resume() {
    let b = broker();
    let (s, _) = raw_v5(b.mqtt, "in2-sub", true, &[]);
    assert_eq!(sub_v5(&s, 1, None, &[("in2/t", 0)]), vec![0]);
    let (p, _) = raw_v5(b.mqtt, "in2-pub", true, &expiry(60));
    send(
        &p,
        &packet::publish(true, "in2/t", b"x", 2, Some(42), false, false),
    );
    expect_ack(&p, 0x50, 42, 0x00);
    disconnect_and_wait(&b, p, true, "in2-pub", 1);
    let (p, sp) = raw_v5(b.mqtt, "in2-pub", false, &expiry(60));
    assert!(sp);
    send(
        &p,
        &packet::publish(true, "in2/t", b"x", 2, Some(42), false, true),
    );
    expect_ack(&p, 0x50, 42, 0x00);
    send(&p, &packet::pubrel(42));
    expect_ack(&p, 0x70, 42, 0x00);
    let got = drain_publishes(&s, true, QUIET);
    assert_eq!(got.len(), 1, "deliveries: {got:?}");
}

/// MQTT-4.3.2-5: after PUBACK, a QoS 1 PUBLISH with the same packet id is a new message,
/// whatever its DUP flag.
#[test]
fn mqtt_4_3_2_5_qos1_same_packet_id_after_puback_is_new_message() {
    let b = broker();
    let (s, _) = raw_v5(b.mqtt, "q1new-sub", true, &[]);
    assert_eq!(sub_v5(&s, 1, None, &[("q1n/t", 0)]), vec![0]);
    let (p, _) = raw_v5(b.mqtt, "q1new-pub", true, &[]);
    send(
        &p,
        &packet::publish(true, "q1n/t", b"a", 1, Some(3), false, false),
    );
    expect_ack(&p, 0x40, 3, 0x00);
    send(
        &p,
        &packet::publish(true, "q1n/t", b"b", 1, Some(3), false, true),
    );
    expect_ack(&p, 0x40, 3, 0x00);
    let got: Vec<Vec<u8>> = drain_publishes(&s, true, QUIET)
        .into_iter()
        .map(|m| m.payload)
        .collect();
    assert_eq!(got, vec![b"a".to_vec(), b"b".to_vec()]);
}

/// MQTT-3.3.4-9 / §4.9: with `--receive-maximum 5` CONNACK announces Receive Maximum 5
/// (§3.2.2.3.3), and a 5.0 client that sends a sixth QoS 2 PUBLISH while five await PUBREL is
/// disconnected with 0x93 (Receive Maximum exceeded); the five before it get PUBREC.
#[test]
fn mqtt_3_3_4_9_sixth_unreleased_qos2_over_receive_maximum_5_disconnect_0x93() {
    let b = Broker::start(&["--allow-anonymous", "--receive-maximum", "5"]);
    let s = connect_raw(b.mqtt);
    send(&s, &connect_v5_props("greedy", true, &[]));
    let ack = read_packet(&s);
    assert_eq!(ack[0], 0x20, "{}", hex(&ack));
    let props = connack_props(&ack);
    assert!(
        props.contains(&(0x21, vec![0x00, 0x05])),
        "CONNACK Receive Maximum 5: {}",
        hex(&ack)
    );
    for id in 1..=6u16 {
        send(
            &s,
            &packet::publish(true, "greedy/t", b"x", 2, Some(id), false, false),
        );
    }
    let seen = expect_closed(&s, WAIT);
    let mut want: Vec<u8> = (1..=5u8)
        .flat_map(|id| [0x50, 0x03, 0x00, id, 0x10])
        .collect();
    want.extend(packet::server_disconnect(0x93));
    assert_eq!(seen, want, "\n{}", hex_diff(&want, &seen));
}

/// §3.2.2.3.3: by default CONNACK carries no Receive Maximum (absent = 65535), and a 5.0
/// client may then hold hundreds of QoS 2 messages awaiting PUBREL (as MQTT.js does in a
/// burst) even with a small outbound window (`--max-inflight-messages 10`): every one gets
/// PUBREC, every PUBREL its PUBCOMP, and the connection stays up.
#[test]
fn mqtt_3_2_2_3_3_default_receive_maximum_absent_and_300_unreleased_qos2_accepted() {
    let b = Broker::start(&["--allow-anonymous", "--max-inflight-messages", "10"]);
    let s = connect_raw(b.mqtt);
    send(&s, &connect_v5_props("bursty", true, &[]));
    let ack = read_packet(&s);
    assert_eq!(ack[0], 0x20, "{}", hex(&ack));
    assert_eq!(ack[body_start(&ack) + 1], 0x00, "CONNACK: {}", hex(&ack));
    assert!(
        !connack_props(&ack).iter().any(|(id, _)| *id == 0x21),
        "no Receive Maximum in CONNACK by default: {}",
        hex(&ack)
    );
    qos2_burst_acknowledged(&s, true, 300);
}

/// 3.1.1 has no Receive Maximum: a 3.1.1 client is bounded only by the packet-id space, so
/// even with `--receive-maximum 5 --max-inflight-messages 10` one holding 300 QoS 2 messages
/// awaiting PUBREL is never disconnected (paho's `max_inflight_messages_set(200)` does this).
#[test]
fn v311_client_never_disconnected_for_unreleased_qos2_whatever_receive_maximum() {
    let b = Broker::start(&[
        "--allow-anonymous",
        "--receive-maximum",
        "5",
        "--max-inflight-messages",
        "10",
    ]);
    let s = raw_v311(b.mqtt, "bursty311", true);
    qos2_burst_acknowledged(&s, false, 300);
}

/// Sends `n` QoS 2 PUBLISHes (ids 1..=n) without PUBREL and expects a PUBREC for each, then
/// PUBRELs them all and expects a PUBCOMP for each and a PINGRESP: still connected.
fn qos2_burst_acknowledged(s: &TcpStream, v5: bool, n: u16) {
    let burst: Vec<u8> = (1..=n)
        .flat_map(|id| packet::publish(v5, "burst/t", b"x", 2, Some(id), false, false))
        .collect();
    send(s, &burst);
    // 5.0: PUBREC 0x10 (no matching subscribers); 3.1.1: no reason code.
    let pubrec = |id: u16| -> Vec<u8> {
        let [hi, lo] = id.to_be_bytes();
        if v5 {
            vec![0x50, 0x03, hi, lo, 0x10]
        } else {
            vec![0x50, 0x02, hi, lo]
        }
    };
    let want: Vec<u8> = (1..=n).flat_map(pubrec).collect();
    expect_bytes(s, &want);
    let release: Vec<u8> = (1..=n).flat_map(packet::pubrel).collect();
    send(s, &release);
    let comps: Vec<u8> = (1..=n).flat_map(packet::pubcomp).collect();
    expect_bytes(s, &comps);
    send(s, &packet::pingreq());
    expect_bytes(s, &packet::pingresp());
}

/// MQTT-3.1.2-4 / MQTT-3.2.2-2: Clean Start 1 discards the stored session: Session Present 0
/// and its subscriptions are gone.
#[test]
fn mqtt_3_2_2_2_clean_start_1_session_present_0_and_subscriptions_gone() {
    let b = broker();
    let (s, _) = raw_v5(b.mqtt, "cs1", false, &expiry(60));
    assert_eq!(sub_v5(&s, 1, None, &[("cs/t", 1)]), vec![1]);
    disconnect_and_wait(&b, s, true, "cs1", 1);
    let (s, sp) = raw_v5(b.mqtt, "cs1", true, &expiry(60));
    assert!(!sp, "Session Present must be 0 with Clean Start 1");
    let (p, _) = raw_v5(b.mqtt, "cs1-pub", true, &[]);
    assert_eq!(
        publish_qos1_v5(&p, "cs/t", b"x", 1, false),
        0x10,
        "no subscription left"
    );
    expect_silence(&s, QUIET);
}

/// MQTT-3.1.2-5 / MQTT-3.2.2-3: Clean Start 0 with a stored session (expiry > 0) resumes it:
/// Session Present 1 and the subscriptions still deliver.
#[test]
fn mqtt_3_2_2_3_clean_start_0_resumes_session_present_1_subscriptions_kept() {
    let b = broker();
    let (s, sp) = raw_v5(b.mqtt, "cs0", false, &expiry(60));
    assert!(!sp, "no session existed yet");
    assert_eq!(sub_v5(&s, 1, Some(4), &[("keep/t", 1)]), vec![1]);
    disconnect_and_wait(&b, s, true, "cs0", 1);
    let (s, sp) = raw_v5(b.mqtt, "cs0", false, &expiry(60));
    assert!(sp, "Session Present must be 1");
    let (p, _) = raw_v5(b.mqtt, "cs0-pub", true, &[]);
    assert_eq!(publish_qos1_v5(&p, "keep/t", b"still", 1, false), 0x00);
    let m = read_publish(&s, true);
    assert_eq!(
        (m.payload.as_slice(), m.qos, m.sub_ids.as_slice()),
        (&b"still"[..], 1, &[4][..])
    );
}

/// MQTT-3.1.2-23 / MQTT-4.5.0-1: QoS 1 messages published while a persistent subscriber is
/// offline are delivered when it resumes, in order, as first deliveries (DUP=0).
#[test]
fn mqtt_3_1_2_23_offline_qos1_messages_delivered_in_order_on_resume() {
    let b = broker();
    let (s, _) = raw_v5(b.mqtt, "offline", true, &expiry(60));
    assert_eq!(sub_v5(&s, 1, None, &[("off/t", 1)]), vec![1]);
    disconnect_and_wait(&b, s, true, "offline", 1);
    let mut publisher = Peer::v5(b.mqtt, "offline-pub");
    for i in 0..20u32 {
        publisher.publish("off/t", 1, false, &i.to_be_bytes());
    }
    publisher.wait_done(20);
    let (s, sp) = raw_v5(b.mqtt, "offline", false, &expiry(60));
    assert!(sp);
    let mut got = Vec::new();
    for _ in 0..20 {
        let m = read_publish(&s, true);
        assert_eq!((m.qos, m.dup), (1, false), "{m:?}");
        send(&s, &packet::puback(m.packet_id.unwrap()));
        got.push(payload_index(&m));
    }
    assert_eq!(got, (0..20).collect::<Vec<_>>());
    expect_silence(&s, QUIET);
}

/// Sets up a persistent session subscribed to `q0/#` at QoS 0 and `mark/#` at QoS 1, takes it
/// offline, publishes 3 QoS 0 messages then a QoS 1 marker, resumes, and returns the topics
/// received (the marker last) and the drop counter.
fn offline_qos0_round(b: &Broker) -> (Vec<String>, u64) {
    let (s, _) = raw_v5(b.mqtt, "q0off", true, &expiry(60));
    assert_eq!(
        sub_v5(&s, 1, None, &[("q0/#", 0), ("mark/#", 1)]),
        vec![0, 1]
    );
    disconnect_and_wait(b, s, true, "q0off", 1);
    let (p, _) = raw_v5(b.mqtt, "q0off-pub", true, &[]);
    for i in 0..3u8 {
        send(
            &p,
            &packet::publish(true, "q0/t", &[i], 0, None, false, false),
        );
    }
    assert_eq!(publish_qos1_v5(&p, "mark/t", b"end", 1, false), 0x00);
    let (s, sp) = raw_v5(b.mqtt, "q0off", false, &expiry(60));
    assert!(sp);
    let got = drain_publishes(&s, true, QUIET);
    let dropped = api_status(b.web)["messages_dropped"]
        .as_u64()
        .expect("messages_dropped");
    let topics = got
        .iter()
        .map(|m| format!("{}:{}", m.topic, hex(&m.payload)))
        .collect();
    (topics, dropped)
}

/// By default QoS 0 messages are not queued for an offline session (and count as dropped);
/// QoS 1 messages are.
#[test]
fn offline_qos0_messages_not_queued_by_default() {
    let b = broker();
    let (got, dropped) = offline_qos0_round(&b);
    assert_eq!(got, vec!["mark/t:65 6e 64".to_string()]);
    assert_eq!(dropped, 3, "messages_dropped");
}

/// `--queue-qos0-messages true` queues QoS 0 messages for an offline session, in order.
#[test]
fn offline_qos0_messages_queued_with_queue_qos0_messages_true() {
    let b = Broker::start(&["--allow-anonymous", "--queue-qos0-messages", "true"]);
    let (got, dropped) = offline_qos0_round(&b);
    assert_eq!(
        got,
        vec!["q0/t:00", "q0/t:01", "q0/t:02", "mark/t:65 6e 64"]
    );
    assert_eq!(dropped, 0, "messages_dropped");
}

/// MQTT-4.1.0-2 / §3.1.2.11.2: with Session Expiry Interval 1 s the session is gone 2.5 s after
/// the disconnect: its subscription no longer matches and resuming finds Session Present 0.
#[test]
fn mqtt_4_1_0_2_session_discarded_after_expiry_interval() {
    let b = broker();
    let (s, _) = raw_v5(b.mqtt, "expire", true, &expiry(1));
    assert_eq!(sub_v5(&s, 1, None, &[("exp/t", 1)]), vec![1]);
    disconnect_and_wait(&b, s, true, "expire", 1);
    thread::sleep(Duration::from_millis(2500));
    let (p, _) = raw_v5(b.mqtt, "expire-pub", true, &[]);
    assert_eq!(
        publish_qos1_v5(&p, "exp/t", b"late", 1, false),
        0x10,
        "subscription expired"
    );
    let (s, sp) = raw_v5(b.mqtt, "expire", false, &expiry(1));
    assert!(!sp, "Session Present must be 0 after expiry");
    expect_silence(&s, QUIET);
}

/// §3.14.2.2.2: a DISCONNECT setting a non-zero Session Expiry Interval when CONNECT had 0 is a
/// Protocol Error: the server answers DISCONNECT 0x82 (without a Session Expiry Interval,
/// MQTT-3.14.2-2) and the session is not kept.
#[test]
fn mqtt_3_14_2_2_disconnect_expiry_after_connect_zero_is_protocol_error_0x82() {
    let b = broker();
    let (s, _) = raw_v5(b.mqtt, "disexp", true, &[]);
    assert_eq!(sub_v5(&s, 1, None, &[("de/t", 1)]), vec![1]);
    // DISCONNECT: reason 0x00, Property Length 5, Session Expiry Interval 10.
    send(&s, &[0xe0, 0x07, 0x00, 0x05, 0x11, 0x00, 0x00, 0x00, 0x0a]);
    let seen = expect_closed(&s, WAIT);
    assert_eq!(seen, packet::server_disconnect(0x82), "{}", hex(&seen));
    wait_log_count(&b, "client disexp disconnected from", 1);
    let (_s, sp) = raw_v5(b.mqtt, "disexp", false, &[]);
    assert!(!sp, "the session must have ended with the connection");
}

/// §3.14.2.2.2: a DISCONNECT may change a non-zero Session Expiry Interval, e.g. to 0, which
/// ends the session at once.
#[test]
fn mqtt_3_14_2_2_disconnect_may_lower_nonzero_expiry_to_zero() {
    let b = broker();
    let (s, _) = raw_v5(b.mqtt, "lower", true, &expiry(60));
    assert_eq!(sub_v5(&s, 1, None, &[("lw/t", 1)]), vec![1]);
    send(&s, &[0xe0, 0x07, 0x00, 0x05, 0x11, 0x00, 0x00, 0x00, 0x00]);
    let seen = expect_closed(&s, WAIT);
    assert!(seen.is_empty(), "no DISCONNECT expected: {}", hex(&seen));
    wait_log_count(&b, "client lower disconnected from", 1);
    let (_s, sp) = raw_v5(b.mqtt, "lower", false, &expiry(60));
    assert!(!sp, "expiry 0 from DISCONNECT ends the session");
}

/// 3.1.1 §3.1.2.4: Clean Session 0 keeps the session: CONNACK `20 02 01 00`, the subscription
/// and the QoS 1 message published meanwhile; Clean Session 1 then discards it.
#[test]
fn mqtt_3_1_1_clean_session_0_persists_subscriptions_and_messages() {
    let b = broker();
    let s = raw_v311(b.mqtt, "p311", false);
    send(&s, &subscribe_v311(1, &[("p/t", 1)]));
    assert_eq!(read_suback(&s, false, 1), vec![1]);
    disconnect_and_wait(&b, s, false, "p311", 1);
    let mut publisher = Peer::v311(b.mqtt, "p311-pub");
    publisher.publish("p/t", 1, false, b"kept");
    publisher.wait_done(1);
    let s = connect_raw(b.mqtt);
    send(&s, &packet::connect_v311("p311", 60, false));
    expect_bytes(&s, &packet::connack_v311(true, 0));
    let m = read_publish(&s, false);
    assert_eq!(
        (m.topic.as_str(), m.qos, m.payload.as_slice()),
        ("p/t", 1, &b"kept"[..])
    );
    send(&s, &packet::puback(m.packet_id.unwrap()));
    disconnect_and_wait(&b, s, false, "p311", 2);
    let s = connect_raw(b.mqtt);
    send(&s, &packet::connect_v311("p311", 60, true));
    expect_bytes(&s, &packet::connack_v311(false, 0));
    publisher.publish("p/t", 1, false, b"not for a clean session");
    publisher.wait_done(1);
    expect_silence(&s, QUIET);
}

/// MQTT-3.1.4-3: a second 5.0 connection with the same client id takes over: the first gets
/// DISCONNECT 0x8E (Session taken over) and is closed; the second resumes the session (Clean
/// Start 0) and works.
#[test]
fn mqtt_3_1_4_3_takeover_v5_old_connection_gets_disconnect_0x8e() {
    let b = broker();
    let (first, _) = raw_v5(b.mqtt, "taken", true, &expiry(60));
    assert_eq!(sub_v5(&first, 1, None, &[("tk/t", 1)]), vec![1]);
    let (second, sp) = raw_v5(b.mqtt, "taken", false, &expiry(60));
    assert!(sp, "the live session is resumed");
    let seen = expect_closed(&first, WAIT);
    assert_eq!(seen, packet::server_disconnect(0x8e), "{}", hex(&seen));
    send(&second, &packet::pingreq());
    expect_bytes(&second, &packet::pingresp());
    let (p, _) = raw_v5(b.mqtt, "taken-pub", true, &[]);
    assert_eq!(publish_qos1_v5(&p, "tk/t", b"after", 1, false), 0x00);
    let m = read_publish(&second, true);
    assert_eq!(m.payload, b"after");
}

/// MQTT-3.14.2-3: the Reason String the broker puts on its DISCONNECT is left out when it
/// would make the packet larger than the client's Maximum Packet Size (here 10 bytes): the
/// taken-over client still gets the reason 0x8E, with an empty property block.
#[test]
fn mqtt_3_14_2_3_disconnect_reason_string_left_out_beyond_client_maximum_packet_size() {
    let b = broker();
    let (first, _) = raw_v5(b.mqtt, "small", true, &[0x27, 0x00, 0x00, 0x00, 0x0a]);
    let (_second, _) = raw_v5(b.mqtt, "small", true, &[]);
    let seen = expect_closed(&first, WAIT);
    assert_eq!(seen, [0xe0, 0x02, 0x8e, 0x00], "{}", hex(&seen));
}

/// MQTT-3.1.4-3 for 3.1.1: the first connection is just closed (3.1.1 has no server
/// DISCONNECT); the second one works.
#[test]
fn mqtt_3_1_4_3_takeover_v311_old_connection_closed() {
    let b = broker();
    let first = raw_v311(b.mqtt, "taken311", true);
    let second = connect_raw(b.mqtt);
    send(&second, &packet::connect_v311("taken311", 60, true));
    expect_bytes(&second, &packet::connack_v311(false, 0));
    let seen = expect_closed(&first, WAIT);
    assert!(seen.is_empty(), "3.1.1 gets no DISCONNECT: {}", hex(&seen));
    send(&second, &packet::pingreq());
    expect_bytes(&second, &packet::pingresp());
    send(&second, &subscribe_v311(1, &[("tk3/t", 1)]));
    assert_eq!(read_suback(&second, false, 1), vec![1]);
}

/// MQTT-4.4.0-1 with MQTT-4.6.0-5: after the broker's packet ids wrap (65535 → 1), messages
/// resent on resume keep their original order (same topic, QoS and publisher) and ids.
#[test]
fn mqtt_4_6_0_5_resend_after_packet_id_wrap_keeps_original_order() {
    let b = broker();
    // 1000 retained messages under w/ and 533 under x/: every SUBSCRIBE with Retain Handling 0
    // makes the broker allocate one packet id per retained message.
    let (p, _) = raw_v5(b.mqtt, "wrap-pub", true, &[]);
    let mut batch = Vec::new();
    let mut id = 0u16;
    for (prefix, n) in [("w", 1000u32), ("x", 533)] {
        for i in 0..n {
            id += 1;
            batch.extend(packet::publish(
                true,
                &format!("{prefix}/{i}"),
                b"r",
                1,
                Some(id),
                true,
                false,
            ));
        }
    }
    send(&p, &batch);
    for want in 1..=id {
        let pkt = read_packet(&p);
        assert_eq!(parse_ack(&pkt).1, want, "PUBACK {}", hex(&pkt));
    }
    let (s, _) = raw_v5(b.mqtt, "wrap", true, &expiry(60));
    let mut allocated = 0u32;
    let mut sub_pid = 1u16;
    let rounds: Vec<(&str, u32)> = std::iter::repeat_n(("w/#", 1000), 65)
        .chain([("x/#", 533)])
        .collect();
    for (filter, n) in rounds {
        send(&s, &subscribe_v5(sub_pid, None, &[(filter, 1)]));
        assert_eq!(read_suback(&s, true, sub_pid), vec![1]);
        sub_pid += 1;
        let mut acks = Vec::with_capacity(n as usize * 4);
        for _ in 0..n {
            let m = read_publish(&s, true);
            allocated += 1;
            assert_eq!(
                m.packet_id,
                Some(allocated as u16),
                "ids are handed out in sequence"
            );
            acks.extend(packet::puback(m.packet_id.unwrap()));
        }
        send(&s, &acks);
    }
    assert_eq!(allocated, 65_533);
    // Four live messages take ids 65534, 65535 and (wrapping, 0 is never used) 1, 2.
    assert_eq!(sub_v5(&s, sub_pid, None, &[("z/t", 1)]), vec![1]);
    for i in 0..4u32 {
        assert_eq!(
            publish_qos1_v5(&p, "z/t", &i.to_be_bytes(), 5000 + i as u16, false),
            0
        );
    }
    let first: Vec<Pub> = (0..4).map(|_| read_publish(&s, true)).collect();
    let ids: Vec<Option<u16>> = first.iter().map(|m| m.packet_id).collect();
    assert_eq!(ids, vec![Some(65534), Some(65535), Some(1), Some(2)]);
    assert_eq!(
        first.iter().map(payload_index).collect::<Vec<_>>(),
        vec![0, 1, 2, 3]
    );
    disconnect_and_wait(&b, s, true, "wrap", 1);
    let (s, sp) = raw_v5(b.mqtt, "wrap", false, &expiry(60));
    assert!(sp);
    let again: Vec<Pub> = (0..4).map(|_| read_publish(&s, true)).collect();
    let seen: Vec<(u32, Option<u16>, bool)> = again
        .iter()
        .map(|m| (payload_index(m), m.packet_id, m.dup))
        .collect();
    assert_eq!(
        seen,
        vec![
            (0, Some(65534), true),
            (1, Some(65535), true),
            (2, Some(1), true),
            (3, Some(2), true)
        ],
        "(payload, packet id, DUP) of the resent messages, in the order received"
    );
}

/// `--max-queued-messages 5`: of 10 QoS 1 messages for an offline session at most 5 are kept
/// and delivered on resume, in order; `/api/status` `messages_dropped` counts the rest.
#[test]
fn offline_queue_limit_max_queued_messages_drops_excess_and_counts_drops() {
    let b = Broker::start(&["--allow-anonymous", "--max-queued-messages", "5"]);
    let (s, _) = raw_v5(b.mqtt, "limited", true, &expiry(60));
    assert_eq!(sub_v5(&s, 1, None, &[("lim/t", 1)]), vec![1]);
    disconnect_and_wait(&b, s, true, "limited", 1);
    let (p, _) = raw_v5(b.mqtt, "limited-pub", true, &[]);
    for i in 0..10u32 {
        publish_qos1_v5(&p, "lim/t", &i.to_be_bytes(), 1 + i as u16, false);
    }
    let (s, sp) = raw_v5(b.mqtt, "limited", false, &expiry(60));
    assert!(sp);
    let got = drain_publishes(&s, true, QUIET);
    let idx: Vec<u32> = got.iter().map(payload_index).collect();
    assert!(
        (1..=5).contains(&idx.len()),
        "delivered {} messages: {idx:?}",
        idx.len()
    );
    assert!(idx.windows(2).all(|w| w[0] < w[1]), "in order: {idx:?}");
    for m in &got {
        send(&s, &packet::puback(m.packet_id.unwrap()));
    }
    let dropped = api_status(b.web)["messages_dropped"]
        .as_u64()
        .expect("messages_dropped");
    assert_eq!(
        dropped,
        10 - idx.len() as u64,
        "messages_dropped, delivered {idx:?}"
    );
}
