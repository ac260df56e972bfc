//! Faults of the network and of clients against the real `mqtt5-broker` binary (issue 7):
//!
//! * a client that vanishes without FIN (half-open TCP), simulated by a socket that stays open
//!   but never sends again and never reads — while messages keep arriving for it, so the
//!   broker's writes to it stall as they would towards a vanished peer. The broker must close it
//!   within 1.5 × Keep Alive (MQTT-3.1.2-24, we allow + 1 s), publish its will (MQTT-3.1.2-8),
//!   and give back the connection's threads and file descriptors;
//! * subscribers that never read: the publisher and a healthy subscriber are not held back and
//!   the broker's VmRSS stays bounded (MQTT 5.0 §4.9 leaves the policy to the server);
//! * 1,000 clients connecting at once (`--max-clients 1100`): all get CONNACK, the broker stays
//!   responsive, and `clients_connected` in `GET /api/status` returns to 0 with the threads.
//!
//! A real half-open connection (peer gone, no RST) needs packet filtering, which a test cannot
//! do without privileges; a silent, non-reading peer is what the broker observes either way:
//! no bytes in, and writes that stop draining.
//!
//! The 1,000-client test needs about 3,200 file descriptors (the broker, which inherits this
//! process's limits, uses three per connection): it raises the soft RLIMIT_NOFILE to the hard
//! limit with `prlimit --pid <own pid>` when needed, and is skipped with a message only when the
//! hard limit is below that.

mod common;

use std::collections::HashSet;
use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Barrier, Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

use common::procfs::{
    ensure_nofile, fds, rss_kb, thread_names, thread_wakeups, threads, threads_not_parked,
};
use common::{api_status, hex, packet, read_packet_within, Broker};

const ANON: &str = "--allow-anonymous";

/// The tests here are heavy (a thousand connections, floods) and timed (keep alive): they run
/// one at a time so that none skews another's timing.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

// ------------------------------------------------------------------ process figures

/// The broker's thread count once it is steady (two reads 300 ms apart agree; at most 3 s):
/// some threads (the HTTP server's pool) start just after the listening lines are logged.
fn steady_threads(pid: u32) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(3);
    let mut last = threads(pid);
    loop {
        thread::sleep(Duration::from_millis(300));
        let now = threads(pid);
        if now == last || Instant::now() >= deadline {
            return now;
        }
        last = now;
    }
}

/// Waits (≤ `within`) until `f()` ≤ `limit`; returns the last value.
fn settle(within: Duration, limit: u64, f: impl Fn() -> u64) -> u64 {
    let deadline = Instant::now() + within;
    loop {
        let v = f();
        if v <= limit || Instant::now() >= deadline {
            return v;
        }
        thread::sleep(Duration::from_millis(50));
    }
}

fn clients_connected(b: &Broker) -> u64 {
    api_status(b.web)["clients_connected"]
        .as_u64()
        .expect("clients_connected")
}

// ------------------------------------------------------------------ raw client

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum V {
    V5,
    V311,
}

fn expect_packet(s: &TcpStream, what: &str) -> Vec<u8> {
    read_packet_within(s, Duration::from_secs(5))
        .unwrap_or_else(|| panic!("{what}: no packet within 5 s"))
}

fn send(s: &TcpStream, bytes: &[u8]) {
    let mut w = s;
    w.write_all(bytes)
        .unwrap_or_else(|e| panic!("send {}: {e}", hex(bytes)));
}

/// TCP connect with retries (a burst of SYNs may overflow the listen backlog; the kernel
/// retries a dropped SYN after 1 s, 3 s, …), bounded by `within`.
fn tcp_connect(addr: SocketAddr, within: Duration) -> TcpStream {
    let deadline = Instant::now() + within;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match TcpStream::connect_timeout(&addr, left.max(Duration::from_millis(10))) {
            Ok(s) => {
                s.set_nodelay(true).unwrap();
                return s;
            }
            Err(e) if Instant::now() >= deadline => panic!("connect to {addr}: {e}"),
            Err(_) => thread::sleep(Duration::from_millis(20)),
        }
    }
}

/// Connected and CONNACK Success checked.
fn client(addr: SocketAddr, v: V, id: &str, keep_alive: u16) -> TcpStream {
    let s = tcp_connect(addr, Duration::from_secs(5));
    send(
        &s,
        &match v {
            V::V5 => packet::connect_v5(id, keep_alive, true),
            V::V311 => packet::connect_v311(id, keep_alive, true),
        },
    );
    let p = expect_packet(&s, &format!("CONNACK for {id}"));
    assert!(
        p[0] == 0x20 && p.get(3) == Some(&0),
        "CONNACK for {id}: {}",
        hex(&p)
    );
    s
}

fn subscribe(s: &TcpStream, v: V, filter: &str, qos: u8) {
    send(s, &packet::subscribe(v == V::V5, 1, filter, qos));
    let p = expect_packet(s, "SUBACK");
    assert_eq!(p[0], 0x90, "SUBACK: {}", hex(&p));
    assert!(*p.last().unwrap() < 0x80, "SUBACK refused: {}", hex(&p));
}

/// (qos, packet id, topic, payload) of a PUBLISH from the broker.
fn parse_publish(p: &[u8], v: V) -> (u8, u16, String, Vec<u8>) {
    let mut i = 1;
    while p[i] & 0x80 != 0 {
        i += 1;
    }
    let body = &p[i + 1..];
    assert_eq!(p[0] & 0xf0, 0x30, "not a PUBLISH: {}", hex(p));
    let qos = (p[0] >> 1) & 3;
    let tlen = usize::from(u16::from_be_bytes([body[0], body[1]]));
    let topic = String::from_utf8(body[2..2 + tlen].to_vec()).unwrap();
    let mut rest = &body[2 + tlen..];
    let mut id = 0;
    if qos > 0 {
        id = u16::from_be_bytes([rest[0], rest[1]]);
        rest = &rest[2..];
    }
    if v == V::V5 {
        let mut plen = 0usize;
        let mut k = 0;
        loop {
            plen |= usize::from(rest[k] & 0x7f) << (7 * k);
            k += 1;
            if rest[k - 1] & 0x80 == 0 {
                break;
            }
        }
        rest = &rest[k + plen..];
    }
    (qos, id, topic, rest.to_vec())
}

/// A fresh 5.0 subscriber receives a QoS 1 message from a fresh 3.1.1 publisher.
fn health(b: &Broker, tag: &str) {
    let topic = format!("health/{tag}");
    let sub = client(b.mqtt, V::V5, &format!("hs-{tag}"), 30);
    subscribe(&sub, V::V5, &topic, 1);
    let publisher = client(b.mqtt, V::V311, &format!("hp-{tag}"), 30);
    send(
        &publisher,
        &packet::publish(false, &topic, b"alive", 1, Some(1), false, false),
    );
    let ack = expect_packet(&publisher, "PUBACK");
    assert_eq!(ack, packet::puback(1), "PUBACK");
    let p = expect_packet(&sub, "health PUBLISH");
    let (_, _, t, payload) = parse_publish(&p, V::V5);
    assert_eq!(
        (t.as_str(), payload.as_slice()),
        (topic.as_str(), &b"alive"[..])
    );
    send(&sub, &packet::disconnect_v311());
    send(&publisher, &packet::disconnect_v311());
}

// ------------------------------------------------------------------ half-open clients

/// Two clients (5.0 and 3.1.1) with Keep Alive 2 and a will subscribe to a busy topic, then
/// vanish: they never send again and never read, so the broker's writes to them stall. Each is
/// closed within 1.5 × 2 s + 1 s of its last packet — not before 2.5 s — and its will reaches a
/// watcher (MQTT-3.1.2-24, MQTT-3.1.2-8); 5.0 gets DISCONNECT 0x8D first when there is room
/// for it. The broker's threads and descriptors return to their level before the clients.
#[test]
fn mqtt_3_1_2_24_half_open_client_closed_within_one_and_a_half_keep_alive_will_published() {
    let _serial = serial();
    let b = Broker::start(&[ANON]);
    let watcher = client(b.mqtt, V::V5, "watcher", 60);
    subscribe(&watcher, V::V5, "faults/will/#", 0);
    let base_threads = steady_threads(b.pid());
    let base_fds = fds(b.pid());

    let mut vanished = Vec::new();
    for (v, id) in [(V::V5, "vanish5"), (V::V311, "vanish4")] {
        let s = tcp_connect(b.mqtt, Duration::from_secs(5));
        let topic = format!("faults/will/{id}");
        let connect = match v {
            V::V5 => packet::connect_v5_will(id, 2, true, &topic, b"vanished", 1, false, &[]),
            V::V311 => {
                // 3.1.1 CONNECT with a QoS 1 will (flags: clean 0x02 | will 0x04 | QoS 1 0x08).
                let mut body = packet::utf8("MQTT");
                body.extend([4, 0x0e, 0, 2]);
                body.extend(packet::utf8(id));
                body.extend(packet::utf8(&topic));
                body.extend(packet::binary(b"vanished"));
                packet::fixed(0x10, &body)
            }
        };
        send(&s, &connect);
        let _ = expect_packet(&s, "CONNACK");
        subscribe(&s, v, "faults/busy", 0);
        // Last packet sent: from here on this client is silent and never reads.
        vanished.push((v, id, topic, s, Instant::now()));
    }
    assert!(
        threads(b.pid()) > base_threads,
        "no threads for the clients?"
    );

    // Keep the broker writing to the vanished clients until their sockets stop draining.
    let stop = Arc::new(AtomicBool::new(false));
    let flood = {
        let (addr, stop) = (b.mqtt, stop.clone());
        thread::spawn(move || {
            let p = client(addr, V::V5, "busy-publisher", 60);
            let msg = packet::publish(true, "faults/busy", &[b'b'; 1024], 0, None, false, false);
            let mut sent = 0u64;
            while !stop.load(Ordering::Relaxed) && sent < 200_000 {
                send(&p, &msg);
                sent += 1;
                if sent.is_multiple_of(64) {
                    thread::sleep(Duration::from_millis(2));
                }
            }
            send(&p, &packet::disconnect_v311());
            sent
        })
    };

    let mut wills = HashSet::new();
    let deadline = Instant::now() + Duration::from_secs(8);
    while wills.len() < 2 && Instant::now() < deadline {
        if let Some(p) = read_packet_within(&watcher, Duration::from_millis(200)) {
            let (_, _, topic, payload) = parse_publish(&p, V::V5);
            assert_eq!(payload, b"vanished");
            let (_, id, _, _, last) = vanished
                .iter()
                .find(|(_, _, t, _, _)| *t == topic)
                .unwrap_or_else(|| panic!("will on unexpected topic {topic}"));
            let after = last.elapsed();
            eprintln!("will of {id} after {after:?}");
            // Measured 3.0–3.26 s (1.5 × 2 s, then the ticker), also with both cores of a 2-core
            // machine kept busy by four spinning processes: the 4 s ceiling (+ 1 s over the spec's
            // 3 s) leaves 0.7 s of margin; 2.5 s below is the spec's own floor.
            assert!(
                after >= Duration::from_millis(2500) && after <= Duration::from_secs(4),
                "will of {id} published {after:?} after its last packet; expected within \
                 1.5 × Keep Alive 2 s (+ 1 s), not before 2.5 s"
            );
            wills.insert(topic);
        }
    }
    stop.store(true, Ordering::Relaxed);
    let sent = flood.join().unwrap();
    assert_eq!(wills.len(), 2, "wills received: {wills:?}");
    eprintln!("busy publisher sent {sent} messages");

    // Now drain what the broker wrote before it closed: the stream ends (no reset needed to
    // find out), 5.0 with DISCONNECT 0x8D as its last packet if it fit into the socket.
    for (v, id, _, s, _) in &vanished {
        let mut last = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(10);
        while let Some(p) = read_packet_within(s, Duration::from_secs(2)) {
            last = p;
            assert!(
                Instant::now() < deadline,
                "{id}: still receiving after 10 s"
            );
        }
        if *v == V::V5 && last.first() == Some(&0xe0) {
            assert_eq!(last, packet::server_disconnect(0x8d), "{id}: last packet");
        }
    }
    drop(vanished);
    // Reader threads of gone clients may park for the next socket (a bounded few).
    let t = settle(Duration::from_secs(10), base_threads + 1, || {
        threads_not_parked(b.pid())
    });
    assert!(
        t <= base_threads + 1,
        "broker threads {t}, {base_threads} before the vanished clients: {}\n--- broker log (tail) ---\n{}",
        thread_names(b.pid()),
        tail(&b.log(), 30)
    );
    let f = settle(Duration::from_secs(10), base_fds + 1, || fds(b.pid()));
    assert!(f <= base_fds + 1, "broker fds {f}, {base_fds} before");
    let log = b.log();
    for id in ["vanish5", "vanish4"] {
        assert!(
            log.lines()
                .any(|l| l.contains(&format!("client {id} disconnected"))
                    && l.contains("keep alive")),
            "no keep alive disconnect logged for {id}\n{log}"
        );
    }
    health(&b, "after-vanish");
}

// ------------------------------------------------------------------ subscribers that never read

/// Two subscribers (5.0 and 3.1.1, QoS 1, Keep Alive 0) stop reading while a publisher sends
/// 8,000 QoS 1 messages of 2 KiB (16 MiB, twice the per-client queue byte limit) and waits for
/// each PUBACK: the publisher finishes in bounded time with no PUBACK slower than 2 s, a healthy
/// subscriber receives every message in order, the broker's VmRSS stays within 64 MiB of its
/// start, and the broker counts the shed messages.
#[test]
fn spec_4_9_subscribers_that_never_read_hold_back_nobody_and_memory_stays_bounded() {
    let _serial = serial();
    const N: u32 = 8_000;
    const SIZE: usize = 2048;
    const RSS_BOUND_KB: u64 = 64 * 1024;
    let b = Broker::start(&[ANON]);
    let pid = b.pid();
    let base = rss_kb(pid);
    let stalled: Vec<TcpStream> = [(V::V5, "stall5"), (V::V311, "stall4")]
        .into_iter()
        .map(|(v, id)| {
            let s = client(b.mqtt, v, id, 0);
            subscribe(&s, v, "faults/never/+", 1);
            s
        })
        .collect();

    // Healthy subscriber: reads and acknowledges everything on its own thread.
    let healthy = client(b.mqtt, V::V5, "healthy", 60);
    subscribe(&healthy, V::V5, "faults/never/+", 1);
    let received = Arc::new(AtomicU64::new(0));
    let reader = {
        let received = received.clone();
        thread::spawn(move || {
            let mut expect = 0u32;
            let deadline = Instant::now() + Duration::from_secs(60);
            while expect < N && Instant::now() < deadline {
                let Some(p) = read_packet_within(&healthy, Duration::from_secs(5)) else {
                    break;
                };
                let (qos, id, _, payload) = parse_publish(&p, V::V5);
                let seq = u32::from_be_bytes(payload[..4].try_into().unwrap());
                assert_eq!(seq, expect, "healthy subscriber: out of order or lost");
                expect += 1;
                received.store(u64::from(expect), Ordering::Relaxed);
                if qos > 0 {
                    send(&healthy, &packet::puback(id));
                }
            }
            expect
        })
    };

    // RSS sampler.
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = {
        let stop = stop.clone();
        thread::spawn(move || {
            let mut peak = 0;
            while !stop.load(Ordering::Relaxed) {
                peak = peak.max(rss_kb(pid));
                thread::sleep(Duration::from_millis(25));
            }
            peak
        })
    };

    let publisher = client(b.mqtt, V::V5, "publisher", 60);
    let start = Instant::now();
    let mut slowest = Duration::ZERO;
    for i in 0..N {
        let id = (i % 65_000 + 1) as u16;
        let mut payload = vec![b'p'; SIZE];
        payload[..4].copy_from_slice(&i.to_be_bytes());
        let t = Instant::now();
        send(
            &publisher,
            &packet::publish(
                true,
                &format!("faults/never/{}", i % 4),
                &payload,
                1,
                Some(id),
                false,
                false,
            ),
        );
        let ack = expect_packet(&publisher, "PUBACK");
        assert_eq!(
            &ack[..4],
            &[0x40, ack[1], (id >> 8) as u8, id as u8][..],
            "PUBACK {}",
            hex(&ack)
        );
        slowest = slowest.max(t.elapsed());
    }
    let publish_time = start.elapsed();
    let got = reader.join().unwrap();
    stop.store(true, Ordering::Relaxed);
    let peak = sampler.join().unwrap();
    let status = api_status(b.web);
    eprintln!(
        "published {N} × {SIZE} B in {publish_time:?} (slowest PUBACK {slowest:?}); healthy \
         subscriber got {got}; VmRSS {base} kB → peak {peak} kB; status {status}"
    );
    assert_eq!(got, N, "healthy subscriber received {got} of {N}");
    // Measured (both cores kept busy by four spinning processes): slowest PUBACK 13 ms, publishing
    // 1.5 s, VmRSS + 19 MB. The bounds (2 s, 40 s, + 64 MiB) are 150×, 25× and 3× that: what they
    // catch is a publisher blocked behind a stalled socket (a PUBACK waiting for a write timeout)
    // and an unbounded queue (16 MiB per stalled client, and growing).
    assert!(
        slowest < Duration::from_secs(2),
        "a PUBACK took {slowest:?}: the publisher was held back"
    );
    assert!(
        publish_time < Duration::from_secs(40),
        "publishing took {publish_time:?}"
    );
    assert!(
        peak <= base + RSS_BOUND_KB,
        "VmRSS peaked at {peak} kB, start {base} kB (bound + {RSS_BOUND_KB} kB)"
    );
    assert!(
        status["messages_dropped"].as_u64().unwrap_or(0) > 0,
        "nothing was shed for the stalled subscribers: {status}"
    );
    drop(stalled);
    health(&b, "after-stall");
}

/// The most this machine's loopback TCP can hold for one connection: the largest send buffer
/// plus the largest receive buffer (the third figure of `tcp_wmem` / `tcp_rmem`).
fn socket_buffer_ceiling() -> usize {
    let max = |f: &str| -> usize {
        std::fs::read_to_string(f)
            .ok()
            .and_then(|s| s.split_whitespace().nth(2).and_then(|v| v.parse().ok()))
            .unwrap_or(8 << 20)
    };
    max("/proc/sys/net/ipv4/tcp_wmem") + max("/proc/sys/net/ipv4/tcp_rmem")
}

/// A subscriber (5.0 and 3.1.1, QoS 0) stops reading while twice what its socket can hold is
/// published to it, so the broker's sends would block and the rest waits in its queue (the
/// writer thread finishes such sockets); meanwhile the publisher and a fresh client are served
/// at once. When the subscriber reads again it gets every message, once, in order (§4.6).
#[test]
fn spec_4_6_subscriber_that_pauses_until_its_socket_is_full_then_reads_gets_every_message_in_order()
{
    let _serial = serial();
    const SIZE: usize = 16 * 1024;
    let volume = (2 * socket_buffer_ceiling()).clamp(8 << 20, 48 << 20);
    let n = u32::try_from(volume / SIZE).unwrap();
    let limit = (n + 100).to_string();
    let b = Broker::start(&[
        ANON,
        "--max-queued-messages",
        &limit,
        "--max-queued-bytes",
        "0",
    ]);
    for (v, id) in [(V::V5, "pause5"), (V::V311, "pause4")] {
        let topic = format!("faults/pause/{id}");
        let sub = client(b.mqtt, v, id, 0);
        subscribe(&sub, v, &topic, 0);
        let publisher = client(b.mqtt, V::V5, &format!("{id}-pub"), 60);
        let start = Instant::now();
        for i in 0..n {
            let mut payload = vec![b'q'; SIZE];
            payload[..4].copy_from_slice(&i.to_be_bytes());
            send(
                &publisher,
                &packet::publish(true, &topic, &payload, 0, None, false, false),
            );
        }
        // The publisher's own thread did the routing: it must still answer at once.
        send(&publisher, &packet::pingreq());
        let pong = expect_packet(&publisher, "PINGRESP after the burst");
        assert_eq!(pong, packet::pingresp(), "{}", hex(&pong));
        let burst = start.elapsed();
        health(&b, "while a subscriber's socket is full");

        let mut expect = 0u32;
        let deadline = Instant::now() + Duration::from_secs(60);
        while expect < n && Instant::now() < deadline {
            let Some(p) = read_packet_within(&sub, Duration::from_secs(5)) else {
                break;
            };
            let (qos, _, t, payload) = parse_publish(&p, v);
            assert_eq!((qos, t.as_str()), (0, topic.as_str()));
            let seq = u32::from_be_bytes(payload[..4].try_into().unwrap());
            assert_eq!(seq, expect, "{id}: message {seq} where {expect} was due");
            assert_eq!(payload.len(), SIZE, "{id}: message {seq} cut short");
            expect += 1;
        }
        eprintln!("{id}: {n} × {SIZE} B published in {burst:?}, {expect} received");
        assert_eq!(expect, n, "{id}: received {expect} of {n}");
        assert!(
            read_packet_within(&sub, Duration::from_millis(300)).is_none(),
            "{id}: a packet after the last message"
        );
    }
    let status = api_status(b.web);
    assert_eq!(status["messages_dropped"].as_u64(), Some(0), "{status}");
}

/// CPU time (user + system) the process has used, from /proc/<pid>/stat, in clock ticks.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let after_name = stat.rsplit_once(')').unwrap().1;
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line: 12 and 13 after the name.
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

/// With clients connected (one just after a burst that went through the writer thread) and
/// nothing to do, the broker sleeps: under 0.25 s of CPU in 3 s (a thread that spins takes a
/// whole core, 3 s). Keep Alive 0, so no PINGREQ either.
#[test]
fn idle_broker_with_clients_connected_uses_almost_no_cpu() {
    let _serial = serial();
    let b = Broker::start(&[ANON, "--sys-interval", "0"]);
    let pid = b.pid();
    let subs: Vec<TcpStream> = (0..10)
        .map(|i| {
            let s = client(b.mqtt, V::V5, &format!("idle{i}"), 0);
            subscribe(&s, V::V5, "faults/idle", 0);
            s
        })
        .collect();
    let publisher = client(b.mqtt, V::V311, "idle-pub", 0);
    for _ in 0..200 {
        send(
            &publisher,
            &packet::publish(false, "faults/idle", &[7u8; 8192], 0, None, false, false),
        );
    }
    // Drain what each subscriber got, so that every socket is quiet again.
    for s in &subs {
        while read_packet_within(s, Duration::from_millis(300)).is_some() {}
    }
    // The last work the burst leaves is the `store` thread's history commit: once all 200 are
    // counted in the file, nothing is pending anywhere.
    b.await_db(
        "the burst's history committed",
        "SELECT coalesce(sum(message_count), 0) FROM topics WHERE topic = 'faults/idle'",
        200,
    );
    let ticks_per_s = 100; // USER_HZ on Linux
    let before = cpu_ticks(pid);
    thread::sleep(Duration::from_secs(3));
    let used = cpu_ticks(pid) - before;
    eprintln!("idle broker used {used} ticks in 3 s");
    // Measured 0 ticks, also with both cores of a 2-core machine kept busy by four spinning
    // processes (an idle broker's CPU is its own, whatever the load). The bound, 25 ticks, is what
    // a thread waking every few milliseconds would pass; a spinning one would use 300.
    assert!(
        used * 4 < ticks_per_s,
        "an idle broker used {used} ticks (1/{ticks_per_s} s) of CPU in 3 s"
    );
    health(&b, "after idling");
}

/// Topic history is recorded without waking the `store` thread for every message: 1,000
/// messages published one at a time, 1 ms apart (each its own history batch), wake it fewer
/// than 500 times (it collects history on its own every few milliseconds), and all of them are
/// counted in the topic's history.
#[test]
fn recording_history_does_not_wake_the_store_thread_for_each_message() {
    let _serial = serial();
    const N: usize = 1000;
    let b = Broker::start(&[ANON, "--sys-interval", "0"]);
    let pid = b.pid();
    let publisher = client(b.mqtt, V::V5, "hist-pub", 0);
    // The connection's own history record committed, so that it is not counted below.
    b.await_db(
        "hist-pub's connection recorded",
        "SELECT count(*) FROM clients WHERE client_id = 'hist-pub'",
        1,
    );
    let before = thread_wakeups(pid, "store");
    assert!(before > 0, "no wake-up count read for the store thread");
    for i in 0..N {
        let payload = format!("{i}");
        send(
            &publisher,
            &packet::publish(
                true,
                "faults/history",
                payload.as_bytes(),
                0,
                None,
                false,
                false,
            ),
        );
        thread::sleep(Duration::from_millis(1));
    }
    let wakeups = thread_wakeups(pid, "store") - before;
    let db = rusqlite::Connection::open(b.db_path()).unwrap();
    let count = || -> i64 {
        db.query_row(
            "SELECT message_count FROM topics WHERE topic = 'faults/history'",
            [],
            |r| r.get(0),
        )
        .unwrap_or(0)
    };
    let end = Instant::now() + Duration::from_secs(10);
    while count() < N as i64 && Instant::now() < end {
        thread::sleep(Duration::from_millis(20));
    }
    eprintln!("{N} messages: the store thread woke {wakeups} times");
    assert_eq!(count(), N as i64, "every message counted in the history");
    // Measured 120–144 wake-ups, idle or with both cores kept busy by four spinning processes (a
    // busy machine spaces the publishes out, which can only add wake-ups). The bound, 500, is 3.5×
    // that and still half of one wake-up per message.
    assert!(
        wakeups * 2 < N as u64,
        "the store thread woke {wakeups} times for {N} messages"
    );
    health(&b, "after recording history");
}

/// (size kB, Rss kB, kernel page size kB) of every mapping in /proc/<pid>/smaps.
fn smaps(pid: u32) -> Vec<(u64, u64, u64)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/smaps")).unwrap();
    let mut out: Vec<(u64, u64, u64)> = Vec::new();
    let kb = |line: &str| -> u64 {
        line.split_whitespace()
            .nth(1)
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    for line in text.lines() {
        if line.starts_with("Size:") {
            out.push((kb(line), 0, 4));
        } else if let Some(last) = out.last_mut() {
            if line.starts_with("Rss:") {
                last.1 = kb(line);
            } else if line.starts_with("KernelPageSize:") {
                last.2 = kb(line);
            }
        }
    }
    out
}

/// Each connection's reader thread has a 256 KiB stack of which only the touched pages are
/// resident. Handling CONNECT and SUBSCRIBE reaches deeper than waiting does; once its client
/// is quiet, a reader keeps at most 2 pages of stack resident (it gives the rest back): the
/// top one holds glibc's thread block and TLS (about 4.4 KB), the second the frames down to the
/// blocking `recv` (7.8 KB below the top).
#[test]
fn quiet_connections_keep_at_most_two_stack_pages_each() {
    let _serial = serial();
    const N: usize = 60;
    let b = Broker::start(&[ANON, "--max-clients", "100"]);
    let pid = b.pid();
    let clients: Vec<TcpStream> = (0..N)
        .map(|i| {
            let v = if i % 2 == 0 { V::V5 } else { V::V311 };
            let s = client(b.mqtt, v, &format!("quiet{i}"), 0);
            subscribe(&s, v, &format!("faults/quiet/{i}/#"), 1);
            s
        })
        .collect();
    // Each reader trims as it goes back to waiting, right after its SUBACK: poll for that
    // state (all readers there, none above 2 pages) rather than waiting a fixed time.
    let deadline = Instant::now() + Duration::from_secs(10);
    let (stacks, worst) = loop {
        let stacks: Vec<(u64, u64, u64)> = smaps(pid).into_iter().filter(|m| m.0 == 256).collect();
        let worst = stacks.iter().map(|m| (m.1, m.2)).max().unwrap_or((0, 4));
        if (stacks.len() >= N && worst.0 <= 2 * worst.1) || Instant::now() >= deadline {
            break (stacks, worst);
        }
        thread::sleep(Duration::from_millis(50));
    };
    assert!(
        stacks.len() >= N,
        "{} reader stacks (256 kB mappings) for {N} clients",
        stacks.len()
    );
    let total: u64 = stacks.iter().map(|m| m.1).sum();
    // Measured: every stack 8 kB (2 pages), idle or under load; with the trim stopping a page
    // too low (a 1 KiB margin below the trimming frame) every stack kept 12 kB (3 pages), and
    // without the trimming the largest is 16 kB (4 pages).
    eprintln!(
        "{} reader stacks: {total} kB resident in all, the largest {} kB",
        stacks.len(),
        worst.0
    );
    assert!(
        worst.0 <= 2 * worst.1,
        "a quiet reader thread keeps {} kB of stack (page {} kB)",
        worst.0,
        worst.1
    );
    drop(clients);
}

// ------------------------------------------------------------------ 1,000 clients at once

/// 1,000 clients (half 5.0, half 3.1.1) connect at once, released together by a barrier: every
/// one gets CONNACK Success within 30 s; meanwhile and afterwards a fresh client works;
/// `clients_connected` reads 1,000; when they all close it returns to 0 and the broker's threads
/// and descriptors return to their level before.
#[test]
fn thousand_clients_connecting_at_once_all_get_connack_and_the_count_returns_to_zero() {
    let _serial = serial();
    const N: usize = 1000;
    // This process holds N sockets, the broker (which inherits the limit) one per connection;
    // with room to spare.
    const NOFILE: u64 = 3 * N as u64 + 200;
    let nofile = ensure_nofile(NOFILE);
    if nofile < NOFILE {
        eprintln!(
            "SKIPPED: RLIMIT_NOFILE soft limit {nofile} < {NOFILE} and the hard limit does not \
             allow more (raise it, e.g. `ulimit -Hn 8192`, to run this test)"
        );
        return;
    }
    // All from 127.0.0.1 at once: raised as for 1,000 devices behind one address, else the
    // per-address pending bound closes those that connected and had not yet sent CONNECT.
    let b = Broker::start(&[
        ANON,
        "--max-clients",
        "1100",
        "--max-pending-connections",
        "1100",
        "--max-pending-per-address",
        "1100",
    ]);
    let pid = b.pid();
    health(&b, "before");
    let base_threads = steady_threads(pid);
    let base_fds = fds(pid);
    let base_rss = rss_kb(pid);

    let barrier = Arc::new(Barrier::new(N + 1));
    let handles: Vec<_> = (0..N)
        .map(|i| {
            let (addr, barrier) = (b.mqtt, barrier.clone());
            thread::Builder::new()
                .stack_size(128 * 1024)
                .spawn(move || {
                    let v = if i % 2 == 0 { V::V5 } else { V::V311 };
                    let id = format!("many-{i}");
                    barrier.wait();
                    let t = Instant::now();
                    let s = tcp_connect(addr, Duration::from_secs(30));
                    send(
                        &s,
                        &match v {
                            V::V5 => packet::connect_v5(&id, 120, true),
                            V::V311 => packet::connect_v311(&id, 120, true),
                        },
                    );
                    let p =
                        read_packet_within(&s, Duration::from_secs(30).saturating_sub(t.elapsed()));
                    (i, v, s, p, t.elapsed())
                })
                .expect("spawn client thread")
        })
        .collect();
    barrier.wait();
    let started = Instant::now();
    let mut socks = Vec::with_capacity(N);
    let mut slowest = Duration::ZERO;
    let mut failures = Vec::new();
    for h in handles {
        let (i, v, s, p, took) = h.join().unwrap();
        slowest = slowest.max(took);
        match p {
            Some(p) if p[0] == 0x20 && p.get(3) == Some(&0) => {}
            Some(p) => failures.push(format!("client {i} ({v:?}): CONNACK {}", hex(&p))),
            None => failures.push(format!("client {i} ({v:?}): no CONNACK within 30 s")),
        }
        socks.push(s);
    }
    let all_in = started.elapsed();
    assert!(
        failures.is_empty(),
        "{} of {N} clients failed:\n{}",
        failures.len(),
        failures[..failures.len().min(20)].join("\n")
    );
    let peak_threads = threads(pid);
    let peak_rss = rss_kb(pid);
    let t = Instant::now();
    health(&b, "with-1000");
    let health_time = t.elapsed();
    // The health check's own clients have sent DISCONNECT; the count drops once their threads
    // end, a moment later.
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut connected = clients_connected(&b);
    while connected != N as u64 && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(50));
        connected = clients_connected(&b);
    }
    eprintln!(
        "{N} CONNACKs in {all_in:?} (slowest {slowest:?}); broker threads {base_threads} → \
         {peak_threads}, fds {base_fds} → {}, VmRSS {base_rss} → {peak_rss} kB; health check \
         {health_time:?}; clients_connected {connected}",
        fds(pid)
    );
    assert_eq!(connected, N as u64, "clients_connected with {N} clients");
    // Measured: all CONNACKs within 1.1–1.5 s and a health check of 1–11 ms, also with both cores
    // kept busy by four spinning processes; the bounds (30 s, 5 s) only catch a broker that stopped
    // accepting or answering.
    assert!(
        health_time < Duration::from_secs(5),
        "a fresh client took {health_time:?} with {N} connected"
    );
    // A ping on a few of them: the early ones are still served.
    for s in socks.iter().step_by(97) {
        send(s, &packet::pingreq());
        assert_eq!(expect_packet(s, "PINGRESP"), packet::pingresp());
    }

    drop(socks);
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut n = clients_connected(&b);
    while n != 0 && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(100));
        n = clients_connected(&b);
    }
    assert_eq!(n, 0, "clients_connected after all {N} closed");
    // Reader threads of gone clients may park for the next socket (at most 32).
    let t = settle(Duration::from_secs(10), base_threads, || {
        threads_not_parked(pid)
    });
    assert!(
        t <= base_threads,
        "broker threads {t}, {base_threads} before"
    );
    let f = settle(Duration::from_secs(10), base_fds, || fds(pid));
    assert!(f <= base_fds, "broker fds {f}, {base_fds} before");
    health(&b, "after-1000");
}

fn tail(log: &str, n: usize) -> String {
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// The process figures the bounds above rely on cannot pass by reading a process that is gone:
/// a killed broker (reaped) and an exited, not yet reaped child (a zombie, whose
/// `/proc/PID/status` still exists but has no memory) both make every reader panic.
#[test]
fn process_figures_fail_once_the_process_is_gone() {
    let mut b = Broker::start(&[]);
    let pid = b.pid();
    assert!(rss_kb(pid) > 0 && threads(pid) > 0 && fds(pid) > 0);
    b.kill9();
    for (what, read) in [
        ("rss_kb", rss_kb as fn(u32) -> u64),
        ("threads", threads),
        ("fds", fds),
    ] {
        let r = std::panic::catch_unwind(|| read(pid));
        assert!(r.is_err(), "{what} of a killed broker returned {r:?}");
    }

    let mut child = std::process::Command::new("true")
        .spawn()
        .expect("spawn true");
    let zpid = child.id();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !std::fs::read_to_string(format!("/proc/{zpid}/stat")).is_ok_and(|s| {
        s.rsplit(')')
            .next()
            .is_some_and(|t| t.trim_start().starts_with('Z'))
    }) {
        assert!(Instant::now() < deadline, "`true` did not exit within 10 s");
        thread::sleep(Duration::from_millis(10));
    }
    let r = std::panic::catch_unwind(|| rss_kb(zpid));
    child.wait().expect("reap true");
    assert!(r.is_err(), "rss_kb of a zombie returned {r:?}");
}
