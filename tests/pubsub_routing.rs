//! Publish/subscribe routing against the real broker binary: topic wildcards (§4.7), `$`
//! topics (MQTT-4.7.2-1) and `$SYS`, overlapping subscriptions with Subscription Identifiers
//! (§3.3.4), subscription options (§3.8.3.1), SUBACK / UNSUBACK reason codes (§3.9, §3.11),
//! shared subscriptions (§4.8.2), 3.1.1 ⇄ 5.0 interoperation and per-publisher ordering (§4.6).
//!
//! rumqttc 0.24 is the independent client wherever the exact bytes do not matter; raw sockets
//! (the `common` harness) are used where they do: flags, packet ids, properties, reason codes.
//! Every test starts its own broker on 127.0.0.1 with OS-chosen ports; every wait is bounded.

mod common;

use common::flow::*;
use common::*;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// Upper bound for one expected event.
const WAIT: Duration = Duration::from_secs(5);
/// How long "nothing more arrives" is watched for.
const QUIET: Duration = Duration::from_millis(500);

// Subscription Options bits (§3.8.3.1).
const NO_LOCAL: u8 = 0x04;
const RETAIN_AS_PUBLISHED: u8 = 0x08;
const RETAIN_HANDLING_IF_NEW: u8 = 0x10;
const RETAIN_HANDLING_NEVER: u8 = 0x20;

// ---------------------------------------------------------- rumqttc wrapper

/// A received application message, independent of the protocol version.
#[derive(Debug, Clone)]
struct Msg {
    topic: String,
    payload: Vec<u8>,
    qos: u8,
    retain: bool,
}

enum Ev {
    ConnAck(bool),
    SubAck(Vec<u8>),
    Publish(Msg),
    /// PUBACK or PUBCOMP for our own publish.
    Done,
    Other,
    Error(String),
}

enum Handle {
    V5(rumqttc::v5::Client),
    V4(rumqttc::Client),
}

/// A rumqttc sync client whose `Connection` is polled by a thread that forwards what arrives.
struct Peer {
    handle: Handle,
    rx: mpsc::Receiver<Ev>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    backlog: VecDeque<Msg>,
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

fn convert_v5(p: rumqttc::v5::mqttbytes::v5::Packet) -> Ev {
    use rumqttc::v5::mqttbytes::v5::{Packet, SubscribeReasonCode as R};
    match p {
        Packet::ConnAck(c) => {
            Ev::ConnAck(c.code == rumqttc::v5::mqttbytes::v5::ConnectReturnCode::Success)
        }
        Packet::SubAck(s) => Ev::SubAck(
            s.return_codes
                .iter()
                .map(|r| match r {
                    R::Success(q) => *q as u8,
                    R::TopicFilterInvalid => 0x8f,
                    R::NotAuthorized => 0x87,
                    R::SharedSubscriptionsNotSupported => 0x9e,
                    R::QuotaExceeded => 0x97,
                    _ => 0x80,
                })
                .collect(),
        ),
        Packet::Publish(p) => Ev::Publish(Msg {
            topic: String::from_utf8(p.topic.to_vec()).expect("UTF-8 topic"),
            payload: p.payload.to_vec(),
            qos: p.qos as u8,
            retain: p.retain,
        }),
        Packet::PubAck(_) | Packet::PubComp(_) => Ev::Done,
        _ => Ev::Other,
    }
}

fn convert_v4(p: rumqttc::Packet) -> Ev {
    use rumqttc::{Packet, SubscribeReasonCode as R};
    match p {
        Packet::ConnAck(c) => Ev::ConnAck(c.code == rumqttc::ConnectReturnCode::Success),
        Packet::SubAck(s) => Ev::SubAck(
            s.return_codes
                .iter()
                .map(|r| match r {
                    R::Success(q) => *q as u8,
                    R::Failure => 0x80,
                })
                .collect(),
        ),
        Packet::Publish(p) => Ev::Publish(Msg {
            topic: p.topic.clone(),
            payload: p.payload.to_vec(),
            qos: p.qos as u8,
            retain: p.retain,
        }),
        Packet::PubAck(_) | Packet::PubComp(_) => Ev::Done,
        _ => Ev::Other,
    }
}

impl Peer {
    /// A 5.0 rumqttc client with Clean Start 1, connected (CONNACK Success awaited).
    fn v5(addr: SocketAddr, client_id: &str) -> Peer {
        let mut opts = rumqttc::v5::MqttOptions::new(client_id, "127.0.0.1", addr.port());
        opts.set_keep_alive(Duration::from_secs(30));
        opts.set_clean_start(true);
        let (client, mut conn) = rumqttc::v5::Client::new(opts, 1024);
        Self::spawn(Handle::V5(client), move |tx, stop| {
            while !stop.load(Ordering::Relaxed) {
                match conn.recv_timeout(Duration::from_millis(100)) {
                    Ok(Ok(rumqttc::v5::Event::Incoming(p))) => {
                        if tx.send(convert_v5(p)).is_err() {
                            return;
                        }
                    }
                    Ok(Ok(_)) => {}
                    Ok(Err(e)) => {
                        let _ = tx.send(Ev::Error(e.to_string()));
                        return;
                    }
                    // rumqttc::v5 does not export its RecvTimeoutError type.
                    Err(e) if format!("{e:?}") == "Timeout" => {}
                    Err(_) => return,
                }
            }
        })
    }

    /// A 3.1.1 rumqttc client with Clean Session 1, connected.
    fn v311(addr: SocketAddr, client_id: &str) -> Peer {
        let mut opts = rumqttc::MqttOptions::new(client_id, "127.0.0.1", addr.port());
        opts.set_keep_alive(Duration::from_secs(30));
        opts.set_clean_session(true);
        let (client, mut conn) = rumqttc::Client::new(opts, 1024);
        Self::spawn(Handle::V4(client), move |tx, stop| {
            while !stop.load(Ordering::Relaxed) {
                match conn.recv_timeout(Duration::from_millis(100)) {
                    Ok(Ok(rumqttc::Event::Incoming(p))) => {
                        if tx.send(convert_v4(p)).is_err() {
                            return;
                        }
                    }
                    Ok(Ok(_)) => {}
                    Ok(Err(e)) => {
                        let _ = tx.send(Ev::Error(e.to_string()));
                        return;
                    }
                    Err(rumqttc::RecvTimeoutError::Timeout) => {}
                    Err(_) => return,
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
            backlog: VecDeque::new(),
        };
        match peer.next_event(WAIT) {
            Some(Ev::ConnAck(true)) => {}
            Some(Ev::ConnAck(false)) => panic!("rumqttc: CONNACK refused"),
            Some(Ev::Error(e)) => panic!("rumqttc: connection error {e}"),
            Some(_) => panic!("rumqttc: first packet was not CONNACK"),
            None => panic!("rumqttc: no CONNACK within {WAIT:?}"),
        }
        peer
    }

    fn next_event(&self, timeout: Duration) -> Option<Ev> {
        self.rx.recv_timeout(timeout).ok()
    }

    /// Waits for the next event that `want` accepts; PUBLISHes seen meanwhile are kept.
    fn wait_for<T>(&mut self, what: &str, mut want: impl FnMut(Ev) -> Option<T>) -> T {
        let deadline = Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.next_event(left) {
                None => panic!("rumqttc: no {what} within {WAIT:?}"),
                Some(Ev::Error(e)) => {
                    panic!("rumqttc: connection error while waiting for {what}: {e}")
                }
                Some(Ev::Publish(m)) => {
                    if let Some(t) = want(Ev::Publish(m.clone())) {
                        return t;
                    }
                    self.backlog.push_back(m);
                }
                Some(ev) => {
                    if let Some(t) = want(ev) {
                        return t;
                    }
                }
            }
        }
    }

    /// SUBSCRIBE to one filter; returns the SUBACK reason codes.
    fn subscribe(&mut self, filter: &str, qos: u8) -> Vec<u8> {
        match &self.handle {
            Handle::V5(c) => c.subscribe(filter, qos5(qos)).unwrap(),
            Handle::V4(c) => c.subscribe(filter, qos4(qos)).unwrap(),
        }
        self.wait_for("SUBACK", |ev| match ev {
            Ev::SubAck(codes) => Some(codes),
            _ => None,
        })
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
        for _ in 0..n {
            self.wait_for("PUBACK/PUBCOMP", |ev| match ev {
                Ev::Done => Some(()),
                _ => None,
            });
        }
    }

    /// The next application message, if one arrives within `timeout`.
    fn recv(&mut self, timeout: Duration) -> Option<Msg> {
        if let Some(m) = self.backlog.pop_front() {
            return Some(m);
        }
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.next_event(left)? {
                Ev::Publish(m) => return Some(m),
                Ev::Error(e) => panic!("rumqttc: connection error while receiving: {e}"),
                _ => {}
            }
        }
    }

    /// Exactly `n` messages (each within `WAIT`), panicking with what arrived otherwise.
    fn recv_n(&mut self, n: usize) -> Vec<Msg> {
        let mut out = Vec::with_capacity(n);
        while out.len() < n {
            match self.recv(WAIT) {
                Some(m) => out.push(m),
                None => panic!(
                    "expected {n} messages, got {} within the wait: {:?}",
                    out.len(),
                    out.iter().map(|m| &m.topic).collect::<Vec<_>>()
                ),
            }
        }
        out
    }

    /// Messages until nothing arrives for `quiet`.
    fn drain(&mut self, quiet: Duration) -> Vec<Msg> {
        let mut out = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(10);
        while let Some(m) = self.recv(quiet) {
            out.push(m);
            assert!(Instant::now() < deadline, "still receiving after 10 s");
        }
        out
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

// ======================================================================= tests

/// The filters of the §4.7.1 examples, each on its own subscriber, receive exactly the topics
/// the spec says they match.
#[test]
fn mqtt_4_7_1_wildcard_filters_route_per_spec_examples() {
    let b = broker();
    let filters = [
        "sport/tennis/player1/#",
        "sport/#",
        "sport/tennis/+",
        "sport/+",
        "+/+",
        "/+",
        "+",
        "#",
        "+/tennis/#",
        "sport/tennis/player1",
        "/#",
        "+/#",
    ];
    let topics = [
        "sport/tennis/player1",
        "sport/tennis/player1/ranking",
        "sport/tennis/player1/score/wimbledon",
        "sport",
        "sport/",
        "/finance",
        "sport/tennis/player2",
        "other/x/y",
        "Sport/tennis/player1",
        "/",
    ];
    // filter → the topics it matches (§4.7.1.2, §4.7.1.3 and their non-normative examples).
    let expected: [&[&str]; 12] = [
        &[
            "sport/tennis/player1",
            "sport/tennis/player1/ranking",
            "sport/tennis/player1/score/wimbledon",
        ],
        &[
            "sport/tennis/player1",
            "sport/tennis/player1/ranking",
            "sport/tennis/player1/score/wimbledon",
            "sport",
            "sport/",
            "sport/tennis/player2",
        ],
        &["sport/tennis/player1", "sport/tennis/player2"],
        &["sport/"],
        &["sport/", "/finance", "/"],
        &["/finance", "/"],
        &["sport"],
        &topics,
        &[
            "sport/tennis/player1",
            "sport/tennis/player1/ranking",
            "sport/tennis/player1/score/wimbledon",
            "sport/tennis/player2",
            "Sport/tennis/player1",
        ],
        &["sport/tennis/player1"],
        &["/finance", "/"],
        &topics,
    ];
    let subs: Vec<TcpStream> = filters
        .iter()
        .enumerate()
        .map(|(i, f)| {
            let (s, _) = raw_v5(b.mqtt, &format!("wild-{i}"), true, &[]);
            assert_eq!(sub_v5(&s, 1, None, &[(f, 0)]), vec![0x00], "SUBACK for {f}");
            s
        })
        .collect();
    let mut publisher = Peer::v5(b.mqtt, "wild-pub");
    for t in topics {
        publisher.publish(t, 1, false, t.as_bytes());
    }
    // PUBACK comes after routing, so every delivery is queued once all are acknowledged.
    publisher.wait_done(topics.len());
    for ((filter, s), want) in filters.iter().zip(&subs).zip(expected) {
        let got: Vec<String> = drain_publishes(s, true, QUIET)
            .into_iter()
            .map(|p| {
                assert_eq!(p.payload, p.topic.as_bytes(), "payload intact");
                p.topic
            })
            .collect();
        let want: Vec<String> = want.iter().map(|t| t.to_string()).collect();
        assert_eq!(got, want, "topics delivered for filter {filter:?}");
    }
}

/// MQTT-4.7.2-1: `#` and `+/…` do not match topics starting with `$`; a filter naming the `$`
/// level does.
#[test]
fn mqtt_4_7_2_1_dollar_topics_not_matched_by_leading_wildcards() {
    let b = broker();
    let cases: [(&str, &[&str]); 6] = [
        ("#", &["app/monitor/Clients"]),
        ("+/monitor/Clients", &["app/monitor/Clients"]),
        ("+/+/+", &["app/monitor/Clients"]),
        ("$app/#", &["$app/monitor/Clients"]),
        ("$app/monitor/+", &["$app/monitor/Clients"]),
        ("$share/g/#", &["app/monitor/Clients"]),
    ];
    let subs: Vec<TcpStream> = cases
        .iter()
        .enumerate()
        .map(|(i, (f, _))| {
            let (s, _) = raw_v5(b.mqtt, &format!("dollar-{i}"), true, &[]);
            assert_eq!(sub_v5(&s, 1, None, &[(f, 1)]), vec![0x01], "SUBACK for {f}");
            s
        })
        .collect();
    let mut publisher = Peer::v5(b.mqtt, "dollar-pub");
    publisher.publish("$app/monitor/Clients", 1, false, b"dollar");
    publisher.publish("app/monitor/Clients", 1, false, b"plain");
    publisher.wait_done(2);
    for ((filter, want), s) in cases.iter().zip(&subs) {
        let got: Vec<String> = drain_publishes(s, true, QUIET)
            .into_iter()
            .map(|p| p.topic)
            .collect();
        assert_eq!(got, *want, "topics delivered for filter {filter:?}");
    }
}

/// With `--sys-interval 1` a `$SYS/#` subscriber receives `$SYS/broker/uptime`, `…/version`
/// and the counters; `#` and `+/broker/uptime` subscribers receive none of them (MQTT-4.7.2-1),
/// neither live nor as retained messages at subscribe.
#[test]
fn mqtt_4_7_2_1_sys_topics_reach_sys_subscriber_but_not_hash() {
    let b = Broker::start(&["--allow-anonymous", "--sys-interval", "1"]);
    let mut sys = Peer::v5(b.mqtt, "sys-sub");
    let mut hash = Peer::v5(b.mqtt, "hash-sub");
    let mut plus = Peer::v311(b.mqtt, "plus-sub");
    assert_eq!(sys.subscribe("$SYS/#", 0), vec![0]);
    assert_eq!(hash.subscribe("#", 0), vec![0]);
    assert_eq!(plus.subscribe("+/broker/uptime", 0), vec![0]);
    let mut seen = BTreeMap::new();
    let deadline = Instant::now() + Duration::from_secs(6);
    // At least two rounds, so that live publishes (not only retained ones) are covered.
    let mut uptime_count = 0;
    while Instant::now() < deadline && uptime_count < 2 {
        if let Some(m) = sys.recv(Duration::from_millis(500)) {
            assert!(m.topic.starts_with("$SYS/"), "{}", m.topic);
            if m.topic == "$SYS/broker/uptime" {
                uptime_count += 1;
            }
            seen.insert(m.topic, String::from_utf8_lossy(&m.payload).into_owned());
        }
    }
    assert!(
        uptime_count >= 2,
        "uptime received {uptime_count} times: {seen:?}"
    );
    let uptime = &seen["$SYS/broker/uptime"];
    let secs = uptime
        .strip_suffix(" seconds")
        .unwrap_or_else(|| panic!("uptime payload {uptime:?}"));
    assert!(secs.parse::<u64>().is_ok(), "uptime payload {uptime:?}");
    assert!(
        seen["$SYS/broker/version"].starts_with("mqtt5-broker"),
        "{seen:?}"
    );
    for t in [
        "$SYS/broker/clients/connected",
        "$SYS/broker/messages/received",
        "$SYS/broker/subscriptions/count",
    ] {
        assert!(seen.contains_key(t), "{t} missing from {seen:?}");
    }
    let leaked: Vec<String> = hash.drain(QUIET).into_iter().map(|m| m.topic).collect();
    assert!(leaked.is_empty(), "`#` received $SYS topics: {leaked:?}");
    let leaked: Vec<String> = plus.drain(QUIET).into_iter().map(|m| m.topic).collect();
    assert!(leaked.is_empty(), "`+/broker/uptime` received: {leaked:?}");
}

/// MQTT-3.3.4-2/-3/-4: a client whose subscriptions overlap gets one PUBLISH, at the highest
/// QoS granted by the matching subscriptions, carrying every matching Subscription Identifier.
#[test]
fn mqtt_3_3_4_2_overlapping_subscriptions_one_delivery_max_qos_all_subscription_ids() {
    let b = broker();
    let (s, _) = raw_v5(b.mqtt, "overlap", true, &[]);
    assert_eq!(sub_v5(&s, 1, Some(1), &[("ov/+", 0)]), vec![0]);
    assert_eq!(sub_v5(&s, 2, Some(2), &[("ov/#", 1)]), vec![1]);
    assert_eq!(sub_v5(&s, 3, Some(300), &[("+/b", 2)]), vec![2]);
    assert_eq!(sub_v5(&s, 4, None, &[("#", 0)]), vec![0]);
    assert_eq!(sub_v5(&s, 5, Some(268_435_455), &[("ov/c", 0)]), vec![0]);
    let (p, _) = raw_v5(b.mqtt, "overlap-pub", true, &[]);
    // QoS 2 publish to ov/b: matches ov/+ (0), ov/# (1), +/b (2), # (0).
    send(
        &p,
        &packet::publish(true, "ov/b", b"x", 2, Some(9), false, false),
    );
    expect_ack(&p, 0x50, 9, 0x00);
    let m = read_publish(&s, true);
    assert_eq!(
        (m.topic.as_str(), m.qos, m.payload.as_slice()),
        ("ov/b", 2, &b"x"[..])
    );
    let ids: BTreeSet<u32> = m.sub_ids.iter().copied().collect();
    assert_eq!(m.sub_ids.len(), 3, "ids {:?}", m.sub_ids);
    assert_eq!(ids, BTreeSet::from([1, 2, 300]));
    expect_silence(&s, QUIET);
    // QoS 1 publish to ov/c: ov/+ (0), ov/# (1), # (0), ov/c (0) → QoS 1, ids {1, 2, max}.
    send(
        &p,
        &packet::publish(true, "ov/c", b"y", 1, Some(10), false, false),
    );
    expect_ack(&p, 0x40, 10, 0x00);
    let m = read_publish(&s, true);
    assert_eq!((m.topic.as_str(), m.qos), ("ov/c", 1));
    let ids: BTreeSet<u32> = m.sub_ids.iter().copied().collect();
    assert_eq!(m.sub_ids.len(), 3, "ids {:?}", m.sub_ids);
    assert_eq!(ids, BTreeSet::from([1, 2, 268_435_455]));
    expect_silence(&s, QUIET);
    // Only the identifier-less `#` matches: no Subscription Identifier at all.
    send(
        &p,
        &packet::publish(true, "zz", b"z", 0, None, false, false),
    );
    let m = read_publish(&s, true);
    assert_eq!((m.topic.as_str(), m.qos), ("zz", 0));
    assert!(m.sub_ids.is_empty(), "ids {:?}", m.sub_ids);
}

/// MQTT-3.8.4-8: messages go out at min(published QoS, granted QoS).
#[test]
fn mqtt_3_8_4_8_delivery_qos_is_min_of_publish_and_subscription_qos() {
    let b = broker();
    let mut subs: Vec<Peer> = (0..3)
        .map(|q| {
            let mut p = Peer::v5(b.mqtt, &format!("down-{q}"));
            assert_eq!(p.subscribe("down/t", q), vec![q]);
            p
        })
        .collect();
    let mut publisher = Peer::v5(b.mqtt, "down-pub");
    for pub_qos in 0..3u8 {
        publisher.publish("down/t", pub_qos, false, &[pub_qos]);
        let got: Vec<u8> = subs
            .iter_mut()
            .map(|s| {
                let m = s.recv_n(1).remove(0);
                assert_eq!(m.payload, vec![pub_qos]);
                m.qos
            })
            .collect();
        assert_eq!(
            got,
            (0..3u8).map(|sq| sq.min(pub_qos)).collect::<Vec<_>>(),
            "QoS received by subscriptions 0/1/2 for a QoS {pub_qos} publish"
        );
    }
    // publisher's QoS 1 and 2 publishes completed
    publisher.wait_done(2);
}

/// MQTT-3.3.1-3: the DUP flag of a forwarded PUBLISH is set only by whether the broker's own
/// send is a retransmission, not copied from the incoming PUBLISH.
#[test]
fn mqtt_3_3_1_3_outgoing_dup_flag_independent_of_incoming() {
    let b = broker();
    let (s, _) = raw_v5(b.mqtt, "dup-sub", true, &[]);
    assert_eq!(sub_v5(&s, 1, None, &[("dup/t", 2)]), vec![2]);
    let (p, _) = raw_v5(b.mqtt, "dup-pub", true, &[]);
    send(
        &p,
        &packet::publish(true, "dup/t", b"d1", 1, Some(1), false, true),
    );
    expect_ack(&p, 0x40, 1, 0x00);
    send(
        &p,
        &packet::publish(true, "dup/t", b"d2", 2, Some(2), false, true),
    );
    expect_ack(&p, 0x50, 2, 0x00);
    for (payload, qos) in [(&b"d1"[..], 1), (&b"d2"[..], 2)] {
        let m = read_publish(&s, true);
        assert_eq!((m.payload.as_slice(), m.qos, m.dup), (payload, qos, false));
    }
}

/// MQTT-3.8.3-3: with No Local the publisher's own messages are not sent back to it; other
/// subscribers still get them, and it still gets messages from other clients.
#[test]
fn mqtt_3_8_3_3_no_local_not_delivered_to_publisher() {
    let b = broker();
    let (me, _) = raw_v5(b.mqtt, "nolocal", true, &[]);
    assert_eq!(sub_v5(&me, 1, None, &[("nl/t", 1 | NO_LOCAL)]), vec![1]);
    let (other, _) = raw_v5(b.mqtt, "nolocal-other", true, &[]);
    assert_eq!(sub_v5(&other, 1, None, &[("nl/t", 1)]), vec![1]);
    // `other` is a subscriber, so the PUBACK reports Success.
    assert_eq!(publish_qos1_v5(&me, "nl/t", b"mine", 7, false), 0x00);
    let m = read_publish(&other, true);
    assert_eq!(m.payload, b"mine");
    expect_silence(&me, QUIET);
    // Messages from another client still reach the No Local subscriber.
    let mut third = Peer::v5(b.mqtt, "nolocal-third");
    third.publish("nl/t", 1, false, b"theirs");
    third.wait_done(1);
    let m = read_publish(&me, true);
    assert_eq!(m.payload, b"theirs");
    let m = read_publish(&other, true);
    assert_eq!(m.payload, b"theirs");
}

/// MQTT-3.3.1-12 / -13: Retain As Published 0 clears RETAIN on forwarded messages, 1 keeps the
/// publisher's flag.
#[test]
fn mqtt_3_3_1_12_13_retain_as_published_controls_forwarded_retain_flag() {
    let b = broker();
    let (rap0, _) = raw_v5(b.mqtt, "rap0", true, &[]);
    assert_eq!(sub_v5(&rap0, 1, None, &[("rap/t", 1)]), vec![1]);
    let (rap1, _) = raw_v5(b.mqtt, "rap1", true, &[]);
    assert_eq!(
        sub_v5(&rap1, 1, None, &[("rap/t", 1 | RETAIN_AS_PUBLISHED)]),
        vec![1]
    );
    let (p, _) = raw_v5(b.mqtt, "rap-pub", true, &[]);
    assert_eq!(publish_qos1_v5(&p, "rap/t", b"kept", 1, true), 0x00);
    assert_eq!(publish_qos1_v5(&p, "rap/t", b"plain", 2, false), 0x00);
    let (a, b1) = (read_publish(&rap0, true), read_publish(&rap0, true));
    assert_eq!((a.payload.as_slice(), a.retain), (&b"kept"[..], false));
    assert_eq!((b1.payload.as_slice(), b1.retain), (&b"plain"[..], false));
    let (a, b1) = (read_publish(&rap1, true), read_publish(&rap1, true));
    assert_eq!((a.payload.as_slice(), a.retain), (&b"kept"[..], true));
    assert_eq!((b1.payload.as_slice(), b1.retain), (&b"plain"[..], false));
}

/// Publishes a retained message on `rh/t` and waits until it is stored.
fn retained_fixture(b: &Broker) {
    let (p, _) = raw_v5(b.mqtt, "rh-pub", true, &[]);
    assert_eq!(publish_qos1_v5(&p, "rh/t", b"stored", 1, true), 0x10);
}

/// MQTT-3.3.1-9: Retain Handling 0 sends the retained message at every SUBSCRIBE, including a
/// repeated one, with RETAIN set (MQTT-3.3.1-8 in §3.3.1.3).
#[test]
fn mqtt_3_3_1_9_retain_handling_0_sends_retained_at_every_subscribe() {
    let b = broker();
    retained_fixture(&b);
    let (s, _) = raw_v5(b.mqtt, "rh0", true, &[]);
    for pid in 1..=2 {
        assert_eq!(sub_v5(&s, pid, None, &[("rh/t", 1)]), vec![1]);
        let m = read_publish(&s, true);
        assert_eq!(
            (m.payload.as_slice(), m.retain, m.qos),
            (&b"stored"[..], true, 1)
        );
        send(&s, &packet::puback(m.packet_id.unwrap()));
    }
    expect_silence(&s, QUIET);
}

/// §3.8.3.1 Retain Handling 1: retained messages only when the subscription is new; a repeated
/// SUBSCRIBE of the same filter gets none.
#[test]
fn mqtt_3_3_1_10_retain_handling_1_sends_retained_only_for_new_subscription() {
    let b = broker();
    retained_fixture(&b);
    let (s, _) = raw_v5(b.mqtt, "rh1", true, &[]);
    assert_eq!(
        sub_v5(&s, 1, None, &[("rh/t", 1 | RETAIN_HANDLING_IF_NEW)]),
        vec![1]
    );
    let m = read_publish(&s, true);
    assert_eq!((m.payload.as_slice(), m.retain), (&b"stored"[..], true));
    send(&s, &packet::puback(m.packet_id.unwrap()));
    assert_eq!(
        sub_v5(&s, 2, None, &[("rh/t", 1 | RETAIN_HANDLING_IF_NEW)]),
        vec![1]
    );
    expect_silence(&s, QUIET);
    // A different filter matching the same retained message is a new subscription.
    assert_eq!(
        sub_v5(&s, 3, None, &[("rh/+", RETAIN_HANDLING_IF_NEW)]),
        vec![0]
    );
    let m = read_publish(&s, true);
    assert_eq!(
        (m.payload.as_slice(), m.retain, m.qos),
        (&b"stored"[..], true, 0)
    );
}

/// MQTT-3.3.1-11: Retain Handling 2 never sends retained messages at subscribe, but live
/// messages still flow.
#[test]
fn mqtt_3_3_1_11_retain_handling_2_never_sends_retained() {
    let b = broker();
    retained_fixture(&b);
    let (s, _) = raw_v5(b.mqtt, "rh2", true, &[]);
    assert_eq!(
        sub_v5(&s, 1, None, &[("rh/t", 1 | RETAIN_HANDLING_NEVER)]),
        vec![1]
    );
    expect_silence(&s, QUIET);
    let (p, _) = raw_v5(b.mqtt, "rh2-pub", true, &[]);
    assert_eq!(publish_qos1_v5(&p, "rh/t", b"live", 1, false), 0x00);
    let m = read_publish(&s, true);
    assert_eq!((m.payload.as_slice(), m.retain), (&b"live"[..], false));
}

/// MQTT-3.8.4-6 / MQTT-3.9.3-1: one reason code per filter, in order; invalid filters get 0x8F
/// (Topic Filter invalid) while the valid ones in the same SUBSCRIBE are granted and work.
#[test]
fn mqtt_3_9_3_1_suback_reason_per_filter_in_order_invalid_0x8f_v5() {
    let b = broker();
    let (s, _) = raw_v5(b.mqtt, "suback5", true, &[]);
    send(
        &s,
        &subscribe_v5(
            0x1234,
            None,
            &[
                ("ok/a", 0),
                ("a/#/b", 1),
                ("ok/+", 1),
                ("a+", 2),
                ("ok/#", 2),
            ],
        ),
    );
    // 90, Remaining Length 8, packet id, Property Length 0, five reason codes.
    expect_bytes(
        &s,
        &[0x90, 0x08, 0x12, 0x34, 0x00, 0x00, 0x8f, 0x01, 0x8f, 0x02],
    );
    let (p, _) = raw_v5(b.mqtt, "suback5-pub", true, &[]);
    send(
        &p,
        &packet::publish(true, "ok/b/c", b"deep", 2, Some(1), false, false),
    );
    expect_ack(&p, 0x50, 1, 0x00);
    let m = read_publish(&s, true);
    assert_eq!((m.topic.as_str(), m.qos), ("ok/b/c", 2));
    send(
        &p,
        &packet::publish(true, "ok/b", b"one", 2, Some(2), false, false),
    );
    expect_ack(&p, 0x50, 2, 0x00);
    let m = read_publish(&s, true);
    assert_eq!((m.topic.as_str(), m.qos), ("ok/b", 2));
    // The invalid `a/#/b` subscribed nothing.
    send(
        &p,
        &packet::publish(true, "a/x/b", b"x", 1, Some(3), false, false),
    );
    expect_ack(&p, 0x40, 3, 0x10);
    expect_silence(&s, QUIET);
}

/// 3.1.1 §3.9.3: a failed filter gets 0x80 in SUBACK, the others their granted QoS.
#[test]
fn mqtt_3_1_1_suback_failure_0x80_per_invalid_filter() {
    let b = broker();
    let s = raw_v311(b.mqtt, "suback311", true);
    send(
        &s,
        &subscribe_v311(
            0x0102,
            &[
                ("ok/a", 0),
                ("a/#/b", 1),
                ("ok/+", 1),
                ("a+", 2),
                ("ok/#", 2),
            ],
        ),
    );
    expect_bytes(&s, &[0x90, 0x07, 0x01, 0x02, 0x00, 0x80, 0x01, 0x80, 0x02]);
    let mut publisher = Peer::v311(b.mqtt, "suback311-pub");
    publisher.publish("ok/x", 1, false, b"v");
    publisher.wait_done(1);
    let m = read_publish(&s, false);
    assert_eq!(
        (m.topic.as_str(), m.qos, m.payload.as_slice()),
        ("ok/x", 1, &b"v"[..])
    );
}

/// MQTT-3.8.4-3: a SUBSCRIBE repeating a filter replaces the subscription: one delivery, at the
/// new QoS.
#[test]
fn mqtt_3_8_4_3_repeated_filter_replaces_subscription() {
    let b = broker();
    let (s, _) = raw_v5(b.mqtt, "replace", true, &[]);
    assert_eq!(sub_v5(&s, 1, Some(5), &[("rep/t", 2)]), vec![2]);
    assert_eq!(sub_v5(&s, 2, Some(6), &[("rep/t", 1)]), vec![1]);
    let (p, _) = raw_v5(b.mqtt, "replace-pub", true, &[]);
    send(
        &p,
        &packet::publish(true, "rep/t", b"once", 2, Some(1), false, false),
    );
    expect_ack(&p, 0x50, 1, 0x00);
    let m = read_publish(&s, true);
    assert_eq!((m.payload.as_slice(), m.qos), (&b"once"[..], 1));
    assert_eq!(
        m.sub_ids,
        vec![6],
        "the replacing subscription's identifier"
    );
    expect_silence(&s, QUIET);
}

/// MQTT-3.11.3-1 / -2, MQTT-3.10.4-1 / -2: UNSUBACK carries 0x00 for each removed
/// subscription and 0x11 (No subscription existed) otherwise, in order; nothing is delivered
/// for the removed filters afterwards.
#[test]
fn mqtt_3_11_3_1_unsuback_success_or_no_subscription_existed_per_filter() {
    let b = broker();
    let (s, _) = raw_v5(b.mqtt, "unsub5", true, &[]);
    assert_eq!(
        sub_v5(&s, 1, None, &[("u/a", 1), ("u/b", 1), ("u/keep", 1)]),
        vec![1, 1, 1]
    );
    send(
        &s,
        &unsubscribe_many(true, 0x0a0b, &["u/a", "u/none", "u/b", "u/+"]),
    );
    expect_bytes(&s, &[0xb0, 0x07, 0x0a, 0x0b, 0x00, 0x00, 0x11, 0x00, 0x11]);
    let (p, _) = raw_v5(b.mqtt, "unsub5-pub", true, &[]);
    assert_eq!(publish_qos1_v5(&p, "u/a", b"a", 1, false), 0x10);
    assert_eq!(publish_qos1_v5(&p, "u/b", b"b", 2, false), 0x10);
    assert_eq!(publish_qos1_v5(&p, "u/keep", b"k", 3, false), 0x00);
    let m = read_publish(&s, true);
    assert_eq!(m.topic, "u/keep");
    expect_silence(&s, QUIET);
    send(&s, &unsubscribe_many(true, 7, &["u/a"]));
    expect_bytes(&s, &[0xb0, 0x04, 0x00, 0x07, 0x00, 0x11]);
}

/// 3.1.1 §3.11: UNSUBACK is `b0 02 id` (no payload) and delivery stops.
#[test]
fn mqtt_3_1_1_unsuback_has_no_payload_and_stops_delivery() {
    let b = broker();
    let s = raw_v311(b.mqtt, "unsub311", true);
    send(&s, &subscribe_v311(1, &[("u3/a", 1), ("u3/b", 0)]));
    assert_eq!(read_suback(&s, false, 1), vec![1, 0]);
    send(&s, &unsubscribe_many(false, 0x0203, &["u3/a", "u3/none"]));
    expect_bytes(&s, &[0xb0, 0x02, 0x02, 0x03]);
    let mut publisher = Peer::v311(b.mqtt, "unsub311-pub");
    publisher.publish("u3/a", 1, false, b"gone");
    publisher.publish("u3/b", 1, false, b"still");
    publisher.wait_done(2);
    let got = drain_publishes(&s, false, QUIET);
    let topics: Vec<&str> = got.iter().map(|p| p.topic.as_str()).collect();
    assert_eq!(topics, vec!["u3/b"]);
}

/// §4.8.2: 100 messages to a group of two: each message reaches exactly one member, both
/// members get some, and a non-shared subscriber on the same topic gets all 100.
#[test]
fn mqtt_4_8_2_shared_subscription_delivers_each_message_to_one_member() {
    let b = broker();
    let mut m1 = Peer::v5(b.mqtt, "share-m1");
    let mut m2 = Peer::v5(b.mqtt, "share-m2");
    let mut plain = Peer::v5(b.mqtt, "share-plain");
    assert_eq!(m1.subscribe("$share/g/sh/#", 1), vec![1]);
    assert_eq!(m2.subscribe("$share/g/sh/#", 1), vec![1]);
    assert_eq!(plain.subscribe("sh/#", 1), vec![1]);
    let mut publisher = Peer::v5(b.mqtt, "share-pub");
    for i in 0..100u32 {
        publisher.publish("sh/x", 1, false, &i.to_be_bytes());
    }
    publisher.wait_done(100);
    let ids = |msgs: Vec<Msg>| -> Vec<u32> {
        msgs.iter()
            .map(|m| {
                assert_eq!(m.topic, "sh/x");
                u32::from_be_bytes(m.payload.as_slice().try_into().unwrap())
            })
            .collect()
    };
    let all = ids(plain.recv_n(100));
    assert_eq!(
        all,
        (0..100).collect::<Vec<_>>(),
        "non-shared subscriber, in order"
    );
    let a = ids(m1.drain(QUIET));
    let c = ids(m2.drain(QUIET));
    assert!(
        !a.is_empty() && !c.is_empty(),
        "member 1 got {}, member 2 got {}",
        a.len(),
        c.len()
    );
    let mut union: Vec<u32> = a.iter().chain(&c).copied().collect();
    union.sort_unstable();
    assert_eq!(
        union,
        (0..100).collect::<Vec<_>>(),
        "each message exactly once in the group"
    );
    assert!(plain.drain(Duration::from_millis(100)).is_empty());
}

/// §4.8.2: every share group receives every message, once per group.
#[test]
fn mqtt_4_8_2_two_share_groups_each_receive_every_message() {
    let b = broker();
    let mut g1a = Peer::v5(b.mqtt, "g1a");
    let mut g1b = Peer::v5(b.mqtt, "g1b");
    let mut g2 = Peer::v311(b.mqtt, "g2");
    assert_eq!(g1a.subscribe("$share/g1/grp/+", 1), vec![1]);
    assert_eq!(g1b.subscribe("$share/g1/grp/+", 1), vec![1]);
    assert_eq!(g2.subscribe("$share/g2/grp/+", 0), vec![0]);
    let mut publisher = Peer::v5(b.mqtt, "groups-pub");
    for i in 0..50u32 {
        publisher.publish("grp/t", 1, false, &i.to_be_bytes());
    }
    publisher.wait_done(50);
    let ids = |msgs: Vec<Msg>| -> Vec<u32> {
        msgs.iter()
            .map(|m| u32::from_be_bytes(m.payload.as_slice().try_into().unwrap()))
            .collect()
    };
    let in_g2 = ids(g2.drain(QUIET));
    assert_eq!(
        in_g2,
        (0..50).collect::<Vec<_>>(),
        "group g2 (single member)"
    );
    let mut in_g1: Vec<u32> = ids(g1a.drain(QUIET));
    in_g1.extend(ids(g1b.drain(QUIET)));
    in_g1.sort_unstable();
    assert_eq!(
        in_g1,
        (0..50).collect::<Vec<_>>(),
        "group g1, once per message"
    );
}

/// Member A of `$share/g/ho/t` holds a QoS `qos` message it has not acknowledged; member B
/// joins; A's session ends (expiry 0, DISCONNECT). Returns what B receives within `QUIET` and
/// checks that B does get later messages.
fn shared_member_leaves_with_unacked(qos: u8) -> Vec<Pub> {
    let b = broker();
    let (a, _) = raw_v5(b.mqtt, "handoff-a", true, &[]);
    assert_eq!(sub_v5(&a, 1, None, &[("$share/g/ho/t", qos)]), vec![qos]);
    let (p, _) = raw_v5(b.mqtt, "handoff-pub", true, &[]);
    send(
        &p,
        &packet::publish(true, "ho/t", b"held", qos, Some(1), false, false),
    );
    expect_ack(&p, if qos == 1 { 0x40 } else { 0x50 }, 1, 0x00);
    if qos == 2 {
        send(&p, &packet::pubrel(1));
        expect_ack(&p, 0x70, 1, 0x00);
    }
    let m = read_publish(&a, true);
    assert_eq!((m.payload.as_slice(), m.qos), (&b"held"[..], qos));
    // A neither acknowledges nor receives more: it is "in the process of" getting it.
    let (bm, _) = raw_v5(b.mqtt, "handoff-b", true, &[]);
    assert_eq!(sub_v5(&bm, 1, None, &[("$share/g/ho/t", qos)]), vec![qos]);
    send(&a, &packet::disconnect_v5(0));
    expect_closed(&a, WAIT);
    assert!(
        b.wait_for_log("client handoff-a disconnected from", WAIT),
        "A's disconnect not logged"
    );
    let handed = drain_publishes(&bm, true, QUIET);
    for h in &handed {
        if let Some(id) = h.packet_id {
            send(
                &bm,
                &if qos == 1 {
                    packet::puback(id)
                } else {
                    packet::pubrec(id)
                },
            );
        }
    }
    if qos == 2 {
        for _ in &handed {
            let pkt = read_packet(&bm);
            let (first, id, _) = parse_ack(&pkt);
            assert_eq!(first, 0x62, "PUBREL expected: {}", hex(&pkt));
            send(&bm, &packet::pubcomp(id));
        }
    }
    // B is now the group's only member and gets new messages.
    send(
        &p,
        &packet::publish(true, "ho/t", b"later", 1, Some(2), false, false),
    );
    expect_ack(&p, 0x40, 2, 0x00);
    let m = read_publish(&bm, true);
    assert_eq!(m.payload, b"later");
    handed
}

/// MQTT-4.8.2-4 / -5: a QoS 2 message the server was in the process of sending to its chosen
/// member must not be sent to any other member when that member's session ends.
#[test]
fn mqtt_4_8_2_5_unfinished_qos2_shared_message_not_sent_to_other_member() {
    let handed = shared_member_leaves_with_unacked(2);
    assert!(
        handed.is_empty(),
        "the other member received the unfinished QoS 2 message: {handed:?}"
    );
}

/// §4.8.2: an unacknowledged QoS 1 message SHOULD go to another member of the group when the
/// chosen member's session ends.
#[test]
fn mqtt_4_8_2_unacknowledged_qos1_shared_message_goes_to_other_member() {
    let handed = shared_member_leaves_with_unacked(1);
    let payloads: Vec<&[u8]> = handed.iter().map(|p| p.payload.as_slice()).collect();
    assert_eq!(payloads, vec![&b"held"[..]]);
}

/// Receive Maximum 1 (CONNECT property 0x21): one unacknowledged QoS>0 message at a time, so
/// that later ones wait in the broker's queue for this client.
const RECEIVE_MAXIMUM_1: [u8; 3] = [0x21, 0x00, 0x01];
/// Session Expiry Interval 3600 s (CONNECT property 0x11).
const EXPIRY_3600: [u8; 5] = [0x11, 0x00, 0x00, 0x0e, 0x10];
/// A queue holds two of the small test messages and not three: each counts its topic, payload
/// and about 100 bytes (README, `max_queued_bytes`).
const QUEUE_OF_TWO: &str = "250";

/// Payloads `prefix0`, `prefix1`, … `prefix{n-1}`.
fn payloads(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}{i}")).collect()
}

/// Publishes each payload on `topic` at QoS 1, each one acknowledged with Success.
fn publish_all(p: &TcpStream, topic: &str, payloads: &[String]) {
    for (i, m) in payloads.iter().enumerate() {
        let id = u16::try_from(i + 1).expect("fewer than 65,535 messages");
        assert_eq!(publish_qos1_v5(p, topic, m.as_bytes(), id, false), 0x00);
    }
}

/// The payloads of `msgs`, as text.
fn texts(msgs: &[Pub]) -> Vec<String> {
    msgs.iter()
        .map(|m| String::from_utf8_lossy(&m.payload).into_owned())
        .collect()
}

/// Every PUBLISH until nothing arrives for `QUIET`, each QoS 1 one acknowledged (PUBACK) as it
/// comes, so that a client with a small Receive Maximum is sent what waits for it. At most 50.
fn drain_acking(s: &TcpStream) -> Vec<Pub> {
    let mut got = Vec::new();
    for _ in 0..50 {
        let batch = drain_publishes(s, true, QUIET);
        if batch.is_empty() {
            return got;
        }
        for m in &batch {
            if let (1, Some(id)) = (m.qos, m.packet_id) {
                send(s, &packet::puback(id));
            }
        }
        got.extend(batch);
    }
    panic!("still receiving after 50 rounds");
}

/// A shared member `id` with Receive Maximum 1 holding `n` QoS 1 messages on `topic` (the only
/// member when they were published): the first unacknowledged on the wire, the rest queued.
/// Returns its socket and the payloads.
fn member_holding(
    b: &Broker,
    p: &TcpStream,
    id: &str,
    filter: &str,
    topic: &str,
    n: usize,
) -> (TcpStream, Vec<String>) {
    let (a, _) = raw_v5(b.mqtt, id, true, &RECEIVE_MAXIMUM_1);
    assert_eq!(sub_v5(&a, 1, None, &[(filter, 1)]), vec![1]);
    let sent = payloads(&format!("{id}-"), n);
    fill_window_then_queue(p, &a, topic, &sent);
    (a, sent)
}

/// Publishes `sent` on `topic` for `member` (Receive Maximum 1, the only receiver): the first,
/// once `member` has it on the wire (unacknowledged), then the rest, which stay queued. Waiting
/// for the first keeps it out of the queue, whose byte limit the tests count on. Returns the
/// first one's packet id.
fn fill_window_then_queue(p: &TcpStream, member: &TcpStream, topic: &str, sent: &[String]) -> u16 {
    publish_all(p, topic, &sent[..1]);
    let first = read_publish(member, true);
    assert_eq!(first.payload, sent[0].as_bytes());
    publish_all(p, topic, &sent[1..]);
    expect_silence(member, Duration::from_millis(100));
    first.packet_id.expect("a QoS 1 PUBLISH has a packet id")
}

/// Ends the session of `a` (Session Expiry 0, DISCONNECT) and waits until the broker has (its
/// shared messages are handed on before the disconnect is logged).
/// Two online members `<prefix>-c` and `<prefix>-d` join `filter`, then member `<prefix>-a`'s
/// session ends: what it held is handed to both in turn (round robin). Everything they got,
/// sorted, and the two members (kept connected, so they stay online).
fn handed_to_two_online_members(
    b: &Broker,
    a: TcpStream,
    prefix: &str,
    filter: &str,
) -> (Vec<String>, [TcpStream; 2]) {
    let (c, _) = raw_v5(b.mqtt, &format!("{prefix}-c"), true, &[]);
    let (d, _) = raw_v5(b.mqtt, &format!("{prefix}-d"), true, &[]);
    for s in [&c, &d] {
        assert_eq!(sub_v5(s, 1, None, &[(filter, 1)]), vec![1]);
    }
    end_session(b, a, &format!("{prefix}-a"));
    let at_c = texts(&drain_publishes(&c, true, QUIET));
    let at_d = texts(&drain_publishes(&d, true, QUIET));
    assert!(
        !at_c.is_empty() && !at_d.is_empty(),
        "not round robin: C got {at_c:?}, D got {at_d:?}"
    );
    let mut all: Vec<String> = at_c.into_iter().chain(at_d).collect();
    all.sort_unstable();
    (all, [c, d])
}

fn end_session(b: &Broker, a: TcpStream, id: &str) {
    send(&a, &packet::disconnect_v5(0));
    expect_closed(&a, WAIT);
    assert!(
        b.wait_for_log(&format!("client {id} disconnected from"), WAIT),
        "{id}: disconnect not logged"
    );
}

/// §4.8.2: the messages a member had not finished when its session ends go to the other members
/// chosen like any routing pick — round robin, online members before offline ones — not all to
/// one member, and not to an offline member while online ones remain.
#[test]
fn mqtt_4_8_2_ended_members_messages_go_round_robin_to_online_members() {
    let b = broker();
    let (p, _) = raw_v5(b.mqtt, "rr-pub", true, &[]);
    let (a, held) = member_holding(&b, &p, "rr-a", "$share/g/rr/t", "rr/t", 7);
    let (off, _) = raw_v5(b.mqtt, "rr-offline", true, &EXPIRY_3600);
    assert_eq!(sub_v5(&off, 1, None, &[("$share/g/rr/t", 1)]), vec![1]);
    end_session(&b, off, "rr-offline");
    let (all, _members) = handed_to_two_online_members(&b, a, "rr", "$share/g/rr/t");
    let mut want = held.clone();
    want.sort_unstable();
    assert_eq!(
        all, want,
        "each handed-on message once, to the online members"
    );
    let (off, present) = raw_v5(b.mqtt, "rr-offline", false, &EXPIRY_3600);
    assert!(present);
    let at_offline = texts(&drain_publishes(&off, true, QUIET));
    assert!(
        at_offline.is_empty(),
        "the offline member was given {at_offline:?} while online members had room"
    );
}

/// §4.8.2, publish path: a member whose queue is full (`max_queued_bytes`) passes the message to
/// the next member instead of dropping it.
#[test]
fn mqtt_4_8_2_member_with_full_queue_passes_message_to_next_member() {
    let b = Broker::start(&["--allow-anonymous", "--max-queued-bytes", QUEUE_OF_TWO]);
    let (slow, _) = raw_v5(b.mqtt, "qf-slow", true, &RECEIVE_MAXIMUM_1);
    let (fast, _) = raw_v5(b.mqtt, "qf-fast", true, &[]);
    for s in [&slow, &fast] {
        assert_eq!(sub_v5(s, 1, None, &[("$share/g/qf/t", 1)]), vec![1]);
    }
    let (p, _) = raw_v5(b.mqtt, "qf-pub", true, &[]);
    let sent = payloads("qf-", 10);
    publish_all(&p, "qf/t", &sent);
    let at_fast = texts(&drain_publishes(&fast, true, QUIET));
    // The slow member holds one on the wire and two queued; it gets those once it acknowledges.
    let at_slow = texts(&drain_acking(&slow));
    assert!(
        at_slow.len() <= 3,
        "the slow member's queue held more than it may: {at_slow:?}"
    );
    let mut all: Vec<String> = at_fast.into_iter().chain(at_slow).collect();
    all.sort_unstable();
    let mut want = sent.clone();
    want.sort_unstable();
    assert_eq!(all, want, "every message once in the group, none dropped");
}

/// §4.8.2, hand-off: when a member's session ends, a member whose queue is full passes each of
/// its messages on to the next member; the others share them round robin.
#[test]
fn mqtt_4_8_2_handoff_skips_member_with_full_queue() {
    let b = Broker::start(&["--allow-anonymous", "--max-queued-bytes", QUEUE_OF_TWO]);
    let (p, _) = raw_v5(b.mqtt, "hf-pub", true, &[]);
    let (a, held) = member_holding(&b, &p, "hf-a", "$share/g/hf/t", "hf/t", 3);
    // A member whose queue is filled through a subscription of its own: one message on the
    // wire, two queued.
    let (full, _) = raw_v5(b.mqtt, "hf-full", true, &RECEIVE_MAXIMUM_1);
    assert_eq!(
        sub_v5(&full, 1, None, &[("$share/g/hf/t", 1), ("hf-fill", 1)]),
        vec![1, 1]
    );
    let first_fill = fill_window_then_queue(&p, &full, "hf-fill", &payloads("fill-", 3));
    let (all, _members) = handed_to_two_online_members(&b, a, "hf", "$share/g/hf/t");
    assert_eq!(all, held, "each handed-on message once");
    // The first fill message is already read: acknowledge it to be sent the rest.
    send(&full, &packet::puback(first_fill));
    let at_full = texts(&drain_acking(&full));
    assert_eq!(
        at_full,
        payloads("fill-", 3)[1..],
        "the full member got only its own messages"
    );
}

/// MQTT-3.8.3-4: No Local on a shared subscription is a Protocol Error: DISCONNECT 0x82, then
/// the connection closes.
#[test]
fn mqtt_3_8_3_4_no_local_on_shared_subscription_disconnect_0x82() {
    let b = broker();
    let (s, _) = raw_v5(b.mqtt, "share-nolocal", true, &[]);
    send(
        &s,
        &subscribe_v5(1, None, &[("$share/g/nl/t", 1 | NO_LOCAL)]),
    );
    let seen = expect_closed(&s, WAIT);
    assert!(seen.len() >= 3, "expected DISCONNECT, got {}", hex(&seen));
    assert_eq!(seen[0], 0xe0, "expected DISCONNECT, got {}", hex(&seen));
    assert_eq!(seen[2], 0x82, "reason, in {}", hex(&seen));
    assert_eq!(
        seen.len(),
        2 + usize::from(seen[1]),
        "only the DISCONNECT: {}",
        hex(&seen)
    );
}

/// MQTT-4.8.2-1 / -2: a ShareName must be non-empty, contain no `/`, `+`, `#`, and be followed
/// by `/` and a valid filter; otherwise SUBACK 0x8F, and the connection stays usable.
#[test]
fn mqtt_4_8_2_1_invalid_share_names_get_0x8f() {
    let b = broker();
    let (s, _) = raw_v5(b.mqtt, "share-invalid", true, &[]);
    let codes = sub_v5(
        &s,
        1,
        None,
        &[
            ("$share/g", 1),
            ("$share//x", 1),
            ("$share/g+/x", 1),
            ("$share/g#/x", 1),
            ("$share/g/", 1),
            ("$share/g/a#", 1),
            ("$share/ok/x", 1),
        ],
    );
    assert_eq!(codes, vec![0x8f, 0x8f, 0x8f, 0x8f, 0x8f, 0x8f, 0x01]);
    send(&s, &packet::pingreq());
    expect_bytes(&s, &packet::pingresp());
    let (p, _) = raw_v5(b.mqtt, "share-invalid-pub", true, &[]);
    assert_eq!(publish_qos1_v5(&p, "x", b"to-share", 1, false), 0x00);
    let m = read_publish(&s, true);
    assert_eq!(
        (m.topic.as_str(), m.payload.as_slice()),
        ("x", &b"to-share"[..])
    );
}

/// Sends one message per QoS from `publisher` and checks what `subscriber` receives: topic and
/// payload intact, QoS = min(published, granted). The subscriber holds `xv/#` at QoS 2 and
/// `xg/#` at QoS 1.
fn cross_version_round(publisher: &mut Peer, subscriber: &mut Peer) {
    assert_eq!(subscriber.subscribe("xv/#", 2), vec![2]);
    assert_eq!(subscriber.subscribe("xg/#", 1), vec![1]);
    let payloads: [&[u8]; 3] = [
        b"zero\x00\xff",
        "ein€s".as_bytes(),
        &[0xde, 0xad, 0xbe, 0xef],
    ];
    for q in 0..3u8 {
        publisher.publish(
            &format!("xv/q{q}/ümlaut"),
            q,
            false,
            payloads[usize::from(q)],
        );
    }
    publisher.publish("xg/q2", 2, false, b"granted");
    publisher.wait_done(3);
    let mut got: BTreeMap<String, Msg> = BTreeMap::new();
    for m in subscriber.recv_n(4) {
        got.insert(m.topic.clone(), m);
    }
    for q in 0..3u8 {
        let topic = format!("xv/q{q}/ümlaut");
        let m = got
            .get(&topic)
            .unwrap_or_else(|| panic!("{topic} missing: {got:?}"));
        assert_eq!(m.payload, payloads[usize::from(q)], "{topic}");
        assert_eq!(m.qos, q, "{topic}");
        assert!(!m.retain);
    }
    let m = &got["xg/q2"];
    assert_eq!((m.payload.as_slice(), m.qos), (&b"granted"[..], 1));
    assert!(subscriber.drain(Duration::from_millis(200)).is_empty());
}

/// A 3.1.1 publisher and a 5.0 subscriber interoperate at QoS 0, 1 and 2.
#[test]
fn cross_version_v311_publisher_to_v5_subscriber_qos_0_1_2() {
    let b = broker();
    let mut sub = Peer::v5(b.mqtt, "xv-sub5");
    let mut publisher = Peer::v311(b.mqtt, "xv-pub311");
    cross_version_round(&mut publisher, &mut sub);
}

/// A 5.0 publisher and a 3.1.1 subscriber interoperate at QoS 0, 1 and 2.
#[test]
fn cross_version_v5_publisher_to_v311_subscriber_qos_0_1_2() {
    let b = broker();
    let mut sub = Peer::v311(b.mqtt, "xv-sub311");
    let mut publisher = Peer::v5(b.mqtt, "xv-pub5");
    cross_version_round(&mut publisher, &mut sub);
}

/// MQTT-4.6.0-5 / -6: 500 QoS 1 messages from one publisher reach a QoS 1 subscriber in the
/// order they were sent.
#[test]
fn mqtt_4_6_0_6_per_publisher_order_kept_for_500_qos1_messages() {
    let b = broker();
    let mut sub = Peer::v5(b.mqtt, "order-sub");
    assert_eq!(sub.subscribe("order/t", 1), vec![1]);
    let mut publisher = Peer::v5(b.mqtt, "order-pub");
    for i in 0..500u32 {
        publisher.publish("order/t", 1, false, &i.to_be_bytes());
    }
    let got: Vec<u32> = sub
        .recv_n(500)
        .iter()
        .map(|m| {
            assert_eq!(m.qos, 1);
            u32::from_be_bytes(m.payload.as_slice().try_into().unwrap())
        })
        .collect();
    publisher.wait_done(500);
    let first_bad = got.iter().enumerate().find(|(i, v)| **v != *i as u32);
    assert!(first_bad.is_none(), "out of order at {first_bad:?}");
    assert!(sub.drain(Duration::from_millis(200)).is_empty());
}
