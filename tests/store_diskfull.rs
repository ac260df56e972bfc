//! A full disk while the store runs: durable writes wait in memory, the store keeps answering,
//! and writes resume when space returns. Needs a small file system, so it runs only when
//! `MQTT5_BROKER_SMALL_FS` names a directory on one, e.g. as root:
//! `mkdir -p /tmp/smallfs && mount -t tmpfs -o size=2m tmpfs /tmp/smallfs &&
//!  MQTT5_BROKER_SMALL_FS=/tmp/smallfs cargo test --test store_diskfull`.

use std::io::Write as _;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mqtt5_broker::message::Message;
use mqtt5_broker::protocol::{Properties, QoS};
use mqtt5_broker::store::{Store, StoreError, StoreOptions};

fn msg(topic: &str, size: usize) -> Arc<Message> {
    Arc::new(Message {
        topic: topic.into(),
        payload: vec![0x5a; size],
        qos: QoS::AtLeastOnce,
        retain: true,
        properties: Properties::default(),
        publisher: None,
        received: Instant::now(),
    })
}

#[test]
fn a_full_disk_keeps_durable_writes_in_memory_and_resumes_when_space_returns() {
    let Some(dir) = std::env::var_os("MQTT5_BROKER_SMALL_FS").map(PathBuf::from) else {
        eprintln!("skipped: set MQTT5_BROKER_SMALL_FS to a directory on a small file system");
        return;
    };
    let db = dir.join("full.db");
    let filler = dir.join("filler");
    for f in ["full.db", "full.db-wal", "full.db-shm", "filler"] {
        let _ = std::fs::remove_file(dir.join(f));
    }
    let store = Store::open(
        &db,
        StoreOptions {
            retry_interval: Duration::from_millis(100),
            ..StoreOptions::default()
        },
    )
    .unwrap();
    store
        .set_retained("warm/up", Some(&msg("warm/up", 10)))
        .wait()
        .unwrap();

    // Fill the file system.
    let mut f = std::fs::File::create(&filler).unwrap();
    let chunk = vec![0u8; 16 * 1024];
    while f.write_all(&chunk).and_then(|()| f.sync_all()).is_ok() {}
    drop(f);

    let tickets: Vec<_> = (0..20)
        .map(|i| {
            let topic = format!("big/{i}");
            store.set_retained(&topic, Some(&msg(&topic, 64 * 1024)))
        })
        .collect();
    let end = Instant::now() + Duration::from_secs(10);
    while store.stats().failed_commits == 0 {
        assert!(Instant::now() < end, "no failed commit on a full disk");
        std::thread::sleep(Duration::from_millis(20));
    }
    let stats = store.stats();
    println!("while full: {stats:?}");
    assert!(stats.last_error.is_some());
    assert!(stats.pending > 0);
    // Still serving: queries answer, history does not block.
    assert!(store.topics(0, 10).is_ok());
    store.record_message(&msg("h", 10));

    // Nobody may acknowledge on these: every ticket says the database cannot commit.
    for t in tickets {
        assert!(
            matches!(t.wait(), Err(StoreError::Unavailable { .. })),
            "a ticket fired as committed on a full disk"
        );
    }
    assert!(stats.failing_since_ms.is_some(), "{stats:?}");

    std::fs::remove_file(&filler).unwrap();
    // The writes were kept: they commit once space returns.
    let end = Instant::now() + Duration::from_secs(10);
    while store.stats().pending > 0 {
        assert!(Instant::now() < end, "the backlog never committed");
        std::thread::sleep(Duration::from_millis(20));
    }
    store.flush().wait().unwrap();
    let stats = store.stats();
    assert_eq!(stats.failing_since_ms, None);
    println!("after: {stats:?}");
    assert_eq!(stats.last_error, None);
    assert_eq!(store.load().unwrap().retained.len(), 21);
    store.shutdown();
}
