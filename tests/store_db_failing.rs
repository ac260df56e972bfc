//! A database that cannot commit degrades the broker, never wedges it (issue #12, part 3), with
//! real faults: the database on a small tmpfs that fills up, and one whose `db_max_bytes`
//! (`PRAGMA max_page_count`) is reached. Every step has a deadline. While the database fails,
//! CONNECT, PING, QoS 0, QoS 1 to non-persistent sessions and `/api/status` answer at once, and
//! a QoS 1 message that must be stored is answered at once without being acknowledged as
//! received (PUBACK 0x80); once the database recovers, every message that was acknowledged
//! with 0x00 is there after a restart.
//!
//! The tmpfs test mounts a file system, so it needs root (CI runs as root); without it, it
//! says why and skips.

mod common;

use std::collections::BTreeSet;
use std::io::Write as _;
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::packet;
use common::raw;
use common::{api_status, read_packet_within, send, Broker};

const PUBACK: u8 = 0x40;
const SUCCESS: u8 = 0x00;
const NO_MATCHING_SUBSCRIBERS: u8 = 0x10;
const UNSPECIFIED_ERROR: u8 = 0x80;
/// Session Expiry Interval (§3.1.2.11.2) of one hour: a persistent session.
const EXPIRY: u8 = 0x11;
/// How long any one answer may take while the database fails.
const ANSWER: Duration = Duration::from_secs(3);

/// A tmpfs mounted on a fresh temporary directory, unmounted when dropped.
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    /// `None` (with the reason printed) when this process may not mount.
    fn mount(size: &str) -> Option<Tmpfs> {
        let dir = tempfile::tempdir().expect("temp dir");
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .output();
        match out {
            Ok(o) if o.status.success() => Some(Tmpfs { dir }),
            Ok(o) => {
                eprintln!(
                    "skipped: cannot mount a tmpfs (needs root): {}",
                    String::from_utf8_lossy(&o.stderr).trim()
                );
                None
            }
            Err(e) => {
                eprintln!("skipped: cannot run mount: {e}");
                None
            }
        }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.dir.path()).status();
    }
}

/// Writes zeros to `file` until the file system is full (bounded by its size).
fn fill(file: &Path) {
    let mut f = std::fs::File::create(file).expect("create filler");
    let chunk = vec![0u8; 64 * 1024];
    for _ in 0..100_000 {
        if f.write_all(&chunk).and_then(|()| f.sync_all()).is_err() {
            return;
        }
    }
    panic!("the file system never filled up");
}

/// 200 persistent sessions subscribed to `d/#` at QoS 1, then offline.
fn offline_sessions(addr: SocketAddr, n: usize) {
    for i in 0..n {
        let (s, _) = raw::open(
            addr,
            &format!("p{i}"),
            false,
            &raw::prop_u32(EXPIRY, 3600),
            None,
        );
        raw::sub(&s, 1, "d/#", 1);
        send(&s, &packet::disconnect_v5(0));
    }
}

/// Publishes QoS 1 and returns the PUBACK reason code, answered within `ANSWER`.
fn publish_qos1(s: &TcpStream, topic: &str, payload: &[u8], id: u16, retain: bool) -> u8 {
    let started = Instant::now();
    send(
        s,
        &packet::publish(true, topic, payload, 1, Some(id), retain, false),
    );
    let ack = read_packet_within(s, ANSWER).unwrap_or_else(|| {
        panic!("no PUBACK for {topic} #{id} within {ANSWER:?} (the broker is wedged)")
    });
    assert_eq!(ack[0], PUBACK, "expected PUBACK: {}", common::hex(&ack));
    assert_eq!(u16::from_be_bytes([ack[2], ack[3]]), id);
    let reason = if ack[1] >= 3 { ack[4] } else { SUCCESS };
    assert!(started.elapsed() <= ANSWER);
    reason
}

/// CONNECT + PING, QoS 0 through, QoS 1 between non-persistent sessions, and `/api/status`,
/// each within [`ANSWER`]; returns the status.
fn still_serving(b: &Broker, tag: &str) -> serde_json::Value {
    let t = Instant::now();
    let (sub, _) = raw::open(b.mqtt, &format!("fresh-sub-{tag}"), true, &[], None);
    raw::sub(&sub, 1, "q/#", 1);
    let (publ, _) = raw::open(b.mqtt, &format!("fresh-pub-{tag}"), true, &[], None);
    send(&publ, &packet::pingreq());
    let pong = read_packet_within(&publ, ANSWER).expect("PINGRESP while the database fails");
    assert_eq!(pong, packet::pingresp());
    send(
        &publ,
        &packet::publish(true, "q/0", b"zero", 0, None, false, false),
    );
    let got = raw::next_publish(&sub, true);
    assert_eq!(got.payload, b"zero");
    // Nobody persistent subscribes to q/#: QoS 1 needs no commit and is acknowledged.
    assert_eq!(publish_qos1(&publ, "q/1", b"one", 7, false), SUCCESS);
    let got = raw::next_publish(&sub, true);
    assert_eq!(got.payload, b"one");
    send(&sub, &packet::puback(got.packet_id));
    let status = api_status(b.web);
    assert!(
        t.elapsed() < ANSWER * 3,
        "serving took {:?} while the database fails",
        t.elapsed()
    );
    status
}

fn await_status(b: &Broker, what: &str, within: Duration, ok: impl Fn(&serde_json::Value) -> bool) {
    let deadline = Instant::now() + within;
    loop {
        let s = api_status(b.web);
        if ok(&s) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{what} not seen within {within:?}: {s}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Reads every message a resumed persistent session is sent (acknowledging each), until
/// 2 s pass without one; bounded.
fn drain_session(addr: SocketAddr, client_id: &str) -> BTreeSet<Vec<u8>> {
    let (s, ack) = raw::open(addr, client_id, false, &raw::prop_u32(EXPIRY, 3600), None);
    assert!(ack.0, "session {client_id} not present after the restart");
    let mut got = BTreeSet::new();
    for _ in 0..100_000 {
        let Some(pkt) = read_packet_within(&s, Duration::from_secs(2)) else {
            break;
        };
        if pkt[0] & 0xf0 != 0x30 {
            continue;
        }
        let p = raw::parse_publish(&pkt, true);
        if p.qos > 0 {
            send(&s, &packet::puback(p.packet_id));
        }
        got.insert(p.payload);
    }
    got
}

#[test]
fn full_disk_with_offline_persistent_sessions_never_wedges_and_loses_no_acknowledged_message() {
    let Some(fs) = Tmpfs::mount("32m") else {
        return;
    };
    let db: PathBuf = fs.path().join("broker.db");
    let filler = fs.path().join("filler");
    let mut b = Broker::start_with_db(&db, &["--allow-anonymous", "--max-clients", "500"]);
    offline_sessions(b.mqtt, 200);
    let (publ, _) = raw::open(b.mqtt, "publisher", true, &[], None);
    let mut acked: BTreeSet<Vec<u8>> = BTreeSet::new();
    for i in 0..5u16 {
        let payload = format!("before-{i}").into_bytes();
        assert_eq!(publish_qos1(&publ, "d/x", &payload, i + 1, false), SUCCESS);
        acked.insert(payload);
    }

    fill(&filler);
    let started = Instant::now();
    let mut answered = 0;
    let mut refused = 0;
    for i in 0..100u16 {
        let payload = format!("full-{i}").into_bytes();
        match publish_qos1(&publ, "d/x", &payload, 100 + i, false) {
            SUCCESS => {
                acked.insert(payload);
            }
            UNSPECIFIED_ERROR => refused += 1,
            other => panic!("PUBACK reason {other:#04x}"),
        }
        answered += 1;
    }
    let took = started.elapsed();
    println!(
        "disk full: {answered} of 100 QoS 1 publishes answered in {took:?}, {refused} with 0x80"
    );
    assert!(refused > 0, "the full disk was never noticed");
    let status = still_serving(&b, "full");
    assert!(
        status["store_failing_since"].is_i64(),
        "the page does not say the database fails: {status}"
    );
    assert!(status["store_error"].is_string(), "{status}");
    // 3.1.1 has no failure ack: the publisher is disconnected without a PUBACK, so that it
    // sends the message again.
    let old = common::connect_raw(b.mqtt);
    send(&old, &packet::connect_v311("old-publisher", 60, true));
    assert_eq!(
        read_packet_within(&old, ANSWER).expect("CONNACK"),
        packet::connack_v311(false, 0)
    );
    send(
        &old,
        &packet::publish(false, "d/x", b"v311", 1, Some(1), false, false),
    );
    let before_close = common::expect_closed(&old, ANSWER);
    assert!(
        before_close.is_empty(),
        "a 3.1.1 message that could not be stored was answered: {}",
        common::hex(&before_close)
    );
    assert!(b.log().matches("store: cannot write the database").count() == 1);

    std::fs::remove_file(&filler).expect("free the disk");
    await_status(&b, "the database recovered", Duration::from_secs(15), |s| {
        s["store_failing_since"].is_null() && s["store_pending_writes"] == 0
    });
    assert!(b.wait_for_log("store: writes resumed", Duration::from_secs(5)));

    b.restart();
    for id in ["p0", "p199"] {
        let got = drain_session(b.mqtt, id);
        let lost: Vec<String> = acked
            .difference(&got)
            .map(|p| String::from_utf8_lossy(p).into_owned())
            .collect();
        assert!(lost.is_empty(), "{id} lost acknowledged messages: {lost:?}");
    }
    b.terminate();
}

/// A broker whose database may grow to 384 KiB, with no history (so the retained and kept
/// messages alone reach the cap).
fn start_size_capped(db: &Path) -> Broker {
    Broker::start_with_db(
        db,
        &[
            "--allow-anonymous",
            "--db-max-bytes",
            "393216",
            "--history-per-topic",
            "0",
        ],
    )
}

#[test]
fn db_max_bytes_reached_answers_at_once_and_keeps_every_acknowledged_retained_message() {
    let dir = tempfile::tempdir().expect("temp dir");
    let db = dir.path().join("broker.db");
    let mut b = start_size_capped(&db);
    let (publ, _) = raw::open(b.mqtt, "publisher", true, &[], None);
    let payload = vec![b'r'; 8 * 1024];
    let mut acked: Vec<String> = Vec::new();
    let mut refused = 0;
    for i in 0..120u16 {
        let topic = format!("r/{i}");
        match publish_qos1(&publ, &topic, &payload, i + 1, true) {
            SUCCESS | NO_MATCHING_SUBSCRIBERS => acked.push(topic),
            UNSPECIFIED_ERROR => refused += 1,
            other => panic!("PUBACK reason {other:#04x}"),
        }
    }
    println!(
        "max size: {} retained messages acknowledged, {refused} refused",
        acked.len()
    );
    assert!(refused > 0, "db_max_bytes was never reached");
    assert!(!acked.is_empty());
    let status = still_serving(&b, "max");
    assert!(status["store_failing_since"].is_i64(), "{status}");

    // The "disk" recovers: a larger limit.
    b.terminate();
    let b = Broker::start_with_db(&db, &["--allow-anonymous", "--db-max-bytes", "0"]);
    let (sub, _) = raw::open(b.mqtt, "reader", true, &[], None);
    raw::sub(&sub, 1, "r/#", 0);
    let mut got = BTreeSet::new();
    for _ in 0..1000 {
        let Some(pkt) = read_packet_within(&sub, Duration::from_secs(2)) else {
            break;
        };
        got.insert(raw::parse_publish(&pkt, true).topic);
    }
    let lost: Vec<&String> = acked.iter().filter(|t| !got.contains(*t)).collect();
    assert!(
        lost.is_empty(),
        "acknowledged retained messages lost: {lost:?}"
    );
}

/// Sends `n` QoS 1 PUBLISH packets pipelined (packet ids 1..=n, groups of 10 per write, a few
/// ms apart so that they ride several commits): every third one is retained (`db/r/{i}`, it
/// must be committed before its ack), the others are not (`db/q/{i}`, answered at once).
fn pipelined_burst(s: &TcpStream, v5: bool, n: u16, payload: &[u8]) {
    for group in (1..=n).collect::<Vec<_>>().chunks(10) {
        let mut bytes = Vec::new();
        for &id in group {
            let retain = id % 3 == 0;
            let topic = if retain {
                format!("db/r/{id}")
            } else {
                format!("db/q/{id}")
            };
            bytes.extend(packet::publish(
                v5,
                &topic,
                payload,
                1,
                Some(id),
                retain,
                false,
            ));
        }
        send(s, &bytes);
        std::thread::sleep(Duration::from_millis(3));
    }
}

/// Retained messages under `db/r/#` found after a restart on `db`.
fn retained_after_restart(db: &Path) -> BTreeSet<String> {
    let b = Broker::start_with_db(db, &["--allow-anonymous", "--db-max-bytes", "0"]);
    let (sub, _) = raw::open(b.mqtt, "reader", true, &[], None);
    raw::sub(&sub, 1, "db/r/#", 0);
    let mut got = BTreeSet::new();
    while let Some(pkt) = read_packet_within(&sub, Duration::from_secs(2)) {
        got.insert(raw::parse_publish(&pkt, true).topic);
    }
    got
}

/// The acks of pipelined PUBLISH packets leave in the order the packets came (MQTT-4.6.0-2,
/// -3) while the store queues those whose commits end and the reader answers the rest: across
/// many commits, with refusals (0x80) once `db_max_bytes` is reached, and with acks that need
/// no commit queued behind ones that do. Every retained message acknowledged as received is
/// there after a restart, and one not stored is never acknowledged as received.
#[test]
fn pipelined_acks_stay_in_order_across_commits_and_refusals_4_6_0_2() {
    let dir = tempfile::tempdir().expect("temp dir");
    let db = dir.path().join("broker.db");
    let mut b = start_size_capped(&db);
    let (publ, _) = raw::open(b.mqtt, "publisher", true, &[], None);
    let n = 300u16;
    pipelined_burst(&publ, true, n, &vec![b'p'; 4 * 1024]);
    let mut acked = Vec::new();
    let mut refused = 0;
    for id in 1..=n {
        let ack = read_packet_within(&publ, ANSWER)
            .unwrap_or_else(|| panic!("no PUBACK for #{id} within {ANSWER:?}"));
        assert_eq!(ack[0], PUBACK, "expected PUBACK: {}", common::hex(&ack));
        let got = u16::from_be_bytes([ack[2], ack[3]]);
        assert_eq!(got, id, "PUBACK out of order (MQTT-4.6.0-2)");
        let reason = if ack[1] >= 3 { ack[4] } else { SUCCESS };
        match (id % 3 == 0, reason) {
            (true, SUCCESS | NO_MATCHING_SUBSCRIBERS) => acked.push(format!("db/r/{id}")),
            (true, UNSPECIFIED_ERROR) => refused += 1,
            (false, SUCCESS | NO_MATCHING_SUBSCRIBERS) => {}
            (retained, other) => panic!("#{id} (retained: {retained}): reason {other:#04x}"),
        }
    }
    println!(
        "5.0: {} retained acknowledged, {refused} refused",
        acked.len()
    );
    assert!(refused > 0, "db_max_bytes was never reached");
    assert!(!acked.is_empty(), "nothing was stored before the limit");
    b.terminate();
    let got = retained_after_restart(&db);
    let lost: Vec<&String> = acked.iter().filter(|t| !got.contains(*t)).collect();
    assert!(
        lost.is_empty(),
        "acknowledged retained messages lost: {lost:?}"
    );

    // 3.1.1 has no failure ack: the acks before the first refusal come in order, then the
    // connection ends without acknowledging it or anything after it.
    let dir = tempfile::tempdir().expect("temp dir");
    let db = dir.path().join("broker.db");
    let mut b = start_size_capped(&db);
    let publ = common::flow::raw_v311(b.mqtt, "publisher-311", true);
    pipelined_burst(&publ, false, n, &vec![b'p'; 4 * 1024]);
    let mut last = 0u16;
    while let Some(ack) = read_packet_within(&publ, ANSWER) {
        assert_eq!(ack[0], PUBACK, "expected PUBACK: {}", common::hex(&ack));
        let got = u16::from_be_bytes([ack[2], ack[3]]);
        assert_eq!(got, last + 1, "PUBACK out of order (MQTT-4.6.0-2)");
        last = got;
    }
    common::expect_closed(&publ, ANSWER);
    assert!(
        last < n,
        "every message acknowledged: db_max_bytes never reached"
    );
    assert_eq!(
        (last + 1) % 3,
        0,
        "the first message not acknowledged (#{}) is not one that needed storing",
        last + 1
    );
    b.terminate();
    let got = retained_after_restart(&db);
    let lost: Vec<String> = (1..=last)
        .filter(|id| id % 3 == 0)
        .map(|id| format!("db/r/{id}"))
        .filter(|t| !got.contains(t))
        .collect();
    assert!(
        lost.is_empty(),
        "acknowledged retained messages lost: {lost:?}"
    );
}
