//! `mqtt5-broker backup FILE` (issue 16) against a running broker under publish load: the copy
//! is taken while QoS 1 messages keep being committed, and holds every message acknowledged
//! before it started, the accounts and the persistent sessions; the broker is not held up.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use common::raw;
use common::*;

const LIMIT: Duration = Duration::from_secs(60);

/// Waits until `f` holds, or panics after `limit` naming `what`.
fn wait_for(limit: Duration, what: &str, f: impl Fn() -> bool) {
    let deadline = Instant::now() + limit;
    while !f() {
        assert!(Instant::now() < deadline, "{what}: not within {limit:?}");
        thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn backup_under_publish_load_holds_every_acknowledged_message_account_and_session() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("broker.db");
    let out = run_admin(&db, &["user", "add", "alice"], Some("s3cret\n"), LIMIT);
    assert!(out.status.success(), "{out:?}");
    // No queue bound: the offline session keeps every message of the load.
    let b = Broker::start_with_db(&db, &["--allow-anonymous", "--max-queued-messages", "0"]);

    // An offline persistent session that keeps every message published below.
    let expiry = raw::prop_u32(0x11, 3600);
    let (keeper, _) = raw::open(b.mqtt, "keeper", true, &expiry, None);
    raw::sub(&keeper, 1, "load/#", 1);
    send(&keeper, &packet::disconnect_v311());
    drop(keeper);

    // A QoS 1 publisher, one message in flight at a time, each on its own retained topic.
    let (publisher, _) = raw::open(b.mqtt, "loader", true, &[], None);
    let acked = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let load = {
        let (acked, stop) = (acked.clone(), stop.clone());
        thread::spawn(move || {
            let deadline = Instant::now() + LIMIT;
            for i in 0..1_000_000usize {
                if stop.load(Ordering::Relaxed) || Instant::now() >= deadline {
                    break;
                }
                let id = (i % 65_535) as u16 + 1;
                let topic = format!("load/{i}");
                send(
                    &publisher,
                    &raw::publish(&topic, format!("m{i}").as_bytes(), 1, id, true, &[]),
                );
                let ack = read_packet(&publisher);
                assert_eq!(&ack[..1], &[0x40], "PUBACK expected");
                assert_eq!(ack.get(4).copied().unwrap_or(0), 0, "PUBACK reason");
                acked.store(i + 1, Ordering::Relaxed);
            }
        })
    };
    wait_for(LIMIT, "2,000 acknowledged", || {
        acked.load(Ordering::Relaxed) >= 2_000
    });

    let before = acked.load(Ordering::Relaxed);
    let copy = dir.path().join("copy.db");
    let started = Instant::now();
    let out = run_admin(&db, &["backup", copy.to_str().unwrap()], None, LIMIT);
    let took = started.elapsed();
    let at_end = acked.load(Ordering::Relaxed);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.starts_with("backed up to "), "{stdout}");
    // The broker kept acknowledging while and after the copy was made.
    wait_for(LIMIT, "the publisher going on", || {
        acked.load(Ordering::Relaxed) >= at_end + 100
    });
    stop.store(true, Ordering::Relaxed);
    load.join().unwrap();
    eprintln!(
        "backup took {took:?}: {before} acknowledged before it, {at_end} at its end; {stdout}"
    );

    // The copy: one file (no WAL to carry), owner-only, checked, with everything committed
    // before it started.
    assert_eq!(
        std::fs::metadata(&copy).unwrap().permissions().mode() & 0o777,
        0o600
    );
    {
        let conn = rusqlite::Connection::open_with_flags(
            &copy,
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
        )
        .unwrap();
        let text = |sql: &str| -> String { conn.query_row(sql, [], |r| r.get(0)).unwrap() };
        let number = |sql: &str| -> i64 { conn.query_row(sql, [], |r| r.get(0)).unwrap() };
        assert_eq!(text("PRAGMA journal_mode"), "delete");
        assert_eq!(text("PRAGMA integrity_check"), "ok");
        assert_eq!(number("SELECT count(*) FROM users WHERE name = 'alice'"), 1);
        assert_eq!(
            number("SELECT count(*) FROM sessions WHERE client_id = 'keeper'"),
            1
        );
        let mut retained = conn
            .prepare("SELECT payload FROM retained WHERE topic = ?1")
            .unwrap();
        let mut kept = conn
            .prepare(
                "SELECT count(*) FROM session_messages WHERE client_id = 'keeper' AND topic = ?1",
            )
            .unwrap();
        for i in 0..before {
            let topic = format!("load/{i}");
            let payload: Vec<u8> = retained
                .query_row([&topic], |r| r.get(0))
                .unwrap_or_else(|e| panic!("{topic}, acknowledged before the backup: {e}"));
            assert_eq!(payload, format!("m{i}").into_bytes());
            let n: i64 = kept.query_row([&topic], |r| r.get(0)).unwrap();
            assert_eq!(n, 1, "{topic} kept for the offline session");
        }
    }
    // It is a database the broker opens and serves.
    let restored = Broker::start_with_db(&copy, &["--allow-anonymous"]);
    let (s, _) = raw::open(restored.mqtt, "reader", true, &[], None);
    raw::sub(&s, 1, "load/0", 1);
    let p = raw::next_publish(&s, true);
    assert_eq!(p.payload, b"m0");
}

#[test]
fn backup_refuses_an_existing_file_and_a_missing_database_with_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("broker.db");
    let copy = dir.path().join("copy.db");
    std::fs::write(&copy, b"mine").unwrap();
    // No database yet.
    let out = run_admin(&db, &["backup", copy.to_str().unwrap()], None, LIMIT);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("no database file"), "{err}");
    assert!(!db.exists(), "a backup made a database");
    // An existing file is never replaced.
    let out = run_admin(&db, &["user", "add", "alice"], Some("pw\n"), LIMIT);
    assert!(out.status.success());
    let out = run_admin(&db, &["backup", copy.to_str().unwrap()], None, LIMIT);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("never replaces"), "{err}");
    assert_eq!(std::fs::read(&copy).unwrap(), b"mine");
    // Nothing left behind beside it.
    let names: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains("tmp"))
        .collect();
    assert!(names.is_empty(), "{names:?}");
}

/// `--version` names the database schema this build writes.
#[test]
fn version_names_the_release_and_the_schema() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_mqtt5-broker"))
        .arg("--version")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    let want = format!(
        "mqtt5-broker {} (database schema ",
        env!("CARGO_PKG_VERSION")
    );
    assert!(text.starts_with(&want), "{text}");
    let schema: u32 = text[want.len()..]
        .trim_end()
        .trim_end_matches(')')
        .parse()
        .unwrap_or_else(|e| panic!("{text}: {e}"));
    assert!(schema >= 4, "{text}");
}
