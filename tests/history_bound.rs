//! The topic history is bounded (`history_max_topics`): a device that puts an id or a time
//! into its topic names fills neither memory nor the disk. The least recently seen topics are
//! forgotten first, with their messages; `/api/status` and `/metrics` count what is kept and
//! what was forgotten.

mod common;

use std::io::Write;
use std::net::TcpStream;
use std::thread;
use std::time::{Duration, Instant};

use common::procfs::rss_kb;
use common::{api_status, packet, read_packet, send, Broker};

/// Topics the store has taken: kept, forgotten, or shed from its queue (a QoS 0 message per
/// topic here, so each shed message is one topic never recorded).
fn topics_taken(b: &Broker) -> u64 {
    let st = api_status(b.web);
    ["history_topics", "history_topics_forgotten", "history_shed"]
        .iter()
        .map(|f| st[*f].as_u64().unwrap_or(0))
        .sum()
}

/// Publishes one QoS 0 message on each of `prefix/0000000` … `prefix/{n-1}`, in order, then
/// waits for a PINGRESP: the broker has read them all. When `new` (none of them published
/// before), it also waits after every `STEP` topics until the store has taken them, as a
/// device publishing one reading at a time would let it: the history's queue is bounded
/// (bytes), and a publisher faster than the database would have some topics shed unrecorded.
fn publish_distinct_topics(b: &Broker, prefix: &str, n: usize, new: bool) {
    const STEP: usize = 5_000;
    let start = if new { topics_taken(b) } else { 0 };
    let s = TcpStream::connect(b.mqtt).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    send(&s, &packet::connect_v311("topics", 60, true));
    assert_eq!(read_packet(&s), packet::connack_v311(false, 0));
    let mut buf = Vec::with_capacity(1 << 16);
    let mut w = &s;
    for i in 0..n {
        buf.extend_from_slice(&packet::publish(
            false,
            &format!("{prefix}/{i:07}"),
            b"payload-of-20-bytes.",
            0,
            None,
            false,
            false,
        ));
        let step_done = (i + 1) % STEP == 0 || i + 1 == n;
        if buf.len() > 60_000 || step_done {
            w.write_all(&buf).expect("publish");
            buf.clear();
        }
        if new && step_done {
            send(&s, &packet::pingreq());
            assert_eq!(read_packet(&s), packet::pingresp());
            let want = start + i as u64 + 1;
            let deadline = Instant::now() + Duration::from_secs(30);
            while topics_taken(b) < want {
                assert!(
                    Instant::now() < deadline,
                    "the store took {} of {want} topics in 30 s",
                    topics_taken(b)
                );
                thread::sleep(Duration::from_millis(20));
            }
        }
    }
    send(&s, &packet::pingreq());
    assert_eq!(read_packet(&s), packet::pingresp());
}

/// Polls `/api/status` until `field` equals `want` (60 s at most).
fn await_status(b: &Broker, field: &str, want: u64) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let st = api_status(b.web);
        if st[field].as_u64() == Some(want) {
            return st;
        }
        assert!(
            Instant::now() < deadline,
            "{field} is {} after 60 s, not {want}\n{}",
            st[field],
            b.log()
        );
        thread::sleep(Duration::from_millis(50));
    }
}

fn db_and_wal_bytes(b: &Broker) -> u64 {
    let size = |p: std::path::PathBuf| std::fs::metadata(p).map_or(0, |m| m.len());
    let mut wal = b.db_path().as_os_str().to_owned();
    wal.push("-wal");
    size(b.db_path().to_path_buf()) + size(wal.into())
}

/// 300,000 distinct topics published once each, with the defaults (10,000 topics, 100
/// messages each): the newest 10,000 are kept, 290,000 forgotten; the database and its WAL
/// stay under 16 MiB (measured: 9.7 MiB; without the bound 44 MiB), and the broker's RSS comes
/// back within 16 MiB of its level at start (measured: 8 → 12 MiB; without giving freed heap
/// back, 139 MiB for good).
#[test]
fn three_hundred_thousand_topics_keep_the_newest_ten_thousand_in_bounded_memory_and_disk() {
    let b = Broker::start(&["--allow-anonymous", "--sys-interval", "0"]);
    let base = rss_kb(b.pid());
    publish_distinct_topics(&b, "dev", 300_000, true);
    let st = await_status(&b, "history_topics_forgotten", 290_000);
    assert_eq!(st["history_topics"], 10_000, "{st}");
    assert_eq!(st["history_shed"], 0, "{st}");
    b.await_db(
        "newest topics kept",
        "SELECT count(*) FROM topics WHERE topic >= 'dev/0290000'",
        10_000,
    );
    b.await_db(
        "their messages kept",
        "SELECT count(*) FROM messages",
        10_000,
    );
    let db = db_and_wal_bytes(&b);
    assert!(db < 16 << 20, "database + WAL {db} bytes");

    // Freed heap is given back within a few trim periods (5 s each).
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut rss = rss_kb(b.pid());
    while rss > base + 16 * 1024 && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(200));
        rss = rss_kb(b.pid());
    }
    eprintln!("VmRSS {base} kB at start, {rss} kB after; database + WAL {db} bytes");
    assert!(
        rss <= base + 16 * 1024,
        "VmRSS {rss} kB, {base} kB at start"
    );
}

/// A topic published again is seen again: it outlives topics first seen after it but not seen
/// since. And a bound lowered at restart applies at once, to the least recently seen.
#[test]
fn least_recently_seen_topics_are_forgotten_first_and_a_lowered_bound_applies_at_start() {
    let mut b = Broker::start(&["--allow-anonymous", "--history-max-topics", "100"]);
    publish_distinct_topics(&b, "a", 100, true);
    await_status(&b, "history_topics", 100);
    // a/0000000 is seen again (after the first batch's commit, so in a later millisecond than
    // any of them), then 50 new topics push out the 50 least recently seen.
    publish_distinct_topics(&b, "a", 1, false);
    b.await_db(
        "a/0000000 seen twice",
        "SELECT message_count FROM topics WHERE topic = 'a/0000000'",
        2,
    );
    publish_distinct_topics(&b, "b", 50, true);
    let st = await_status(&b, "history_topics_forgotten", 50);
    assert_eq!(st["history_topics"], 100, "{st}");
    b.await_db(
        "a/0000000 kept",
        "SELECT count(*) FROM topics WHERE topic = 'a/0000000'",
        1,
    );
    b.await_db(
        "a/0000001..50 forgotten, with their messages",
        "SELECT count(*) FROM messages WHERE topic BETWEEN 'a/0000001' AND 'a/0000050'",
        0,
    );
    b.await_db(
        "a/0000051.. kept",
        "SELECT count(*) FROM topics WHERE topic BETWEEN 'a/0000051' AND 'a/0000099'",
        49,
    );

    let db = b.db_path().to_path_buf();
    b.terminate();
    let b = Broker::start_with_db(&db, &["--allow-anonymous", "--history-max-topics", "10"]);
    assert_eq!(api_status(b.web)["history_topics"], 10);
    b.await_db(
        "the 10 newest (b/…) kept",
        "SELECT count(*) FROM topics WHERE topic >= 'b/0000040'",
        10,
    );
    assert!(
        b.log().contains("above history_max_topics (10)"),
        "{}",
        b.log()
    );
}

/// A publisher faster than the database (one topic, QoS 0, as fast as loopback goes): the
/// history queue between the readers and the store thread is bounded in bytes, so what the
/// store cannot take in time is shed and counted, not held. Measured: 2,000,000 messages, RSS
/// 8 → 18 MiB; when the queue was bounded only in commands (4,096 readers' chunks) a QoS 1
/// publisher at 250,000 messages a second took the broker to 640 MiB.
#[test]
fn history_queue_holds_bounded_bytes_under_a_publisher_faster_than_the_database() {
    const MESSAGES: usize = 2_000_000;
    const GROWTH_LIMIT_KB: u64 = 32 * 1024;
    let b = Broker::start(&["--allow-anonymous", "--sys-interval", "0"]);
    let base = rss_kb(b.pid());
    let s = TcpStream::connect(b.mqtt).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    send(&s, &packet::connect_v311("fast", 60, true));
    assert_eq!(read_packet(&s), packet::connack_v311(false, 0));
    let one = packet::publish(false, "fast/t", &[b'x'; 64], 0, None, false, false);
    let chunk: Vec<u8> = one.repeat(1000);
    let pid = b.pid();
    let mut peak = base;
    let mut w = &s;
    let deadline = Instant::now() + Duration::from_secs(120);
    for i in 0..MESSAGES / 1000 {
        w.write_all(&chunk).expect("publish");
        if i % 50 == 0 {
            peak = peak.max(rss_kb(pid));
            assert!(
                Instant::now() < deadline,
                "2,000,000 messages took over 120 s"
            );
        }
    }
    send(&s, &packet::pingreq());
    assert_eq!(read_packet(&s), packet::pingresp());
    peak = peak.max(rss_kb(pid));
    let st = api_status(b.web);
    eprintln!(
        "RSS {base} kB at start, peak {peak} kB; history shed {}",
        st["history_shed"]
    );
    assert!(
        st["messages_received"].as_u64() >= Some(MESSAGES as u64),
        "{st}"
    );
    assert!(
        peak < base + GROWTH_LIMIT_KB,
        "broker RSS grew from {base} kB to {peak} kB"
    );
}
