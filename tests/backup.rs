//! `mqtt5-broker backup FILE` and the page's `GET /api/backup` (issue 16) against a running
//! broker under publish load: the copy is taken while QoS 1 messages keep being committed, and
//! holds every message acknowledged before it started, the accounts and the persistent
//! sessions; the broker is not held up. The download is the admin's only, one at a time.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use common::raw;
use common::*;

const LIMIT: Duration = Duration::from_secs(60);
const ADMIN_PW: &str = "backup-admin";

/// Waits until `f` holds, or panics after `limit` naming `what`.
fn wait_for(limit: Duration, what: &str, f: impl Fn() -> bool) {
    let deadline = Instant::now() + limit;
    while !f() {
        assert!(Instant::now() < deadline, "{what}: not within {limit:?}");
        thread::sleep(Duration::from_millis(10));
    }
}

/// A broker under publish load: an offline persistent session (`keeper`) keeping every
/// message, and a QoS 1 publisher, one message in flight at a time, each on its own retained
/// topic `load/N` with payload `mN`; `acked` counts the acknowledged ones.
struct Load {
    acked: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    thread: Option<thread::JoinHandle<()>>,
}

impl Load {
    fn start(b: &Broker) -> Load {
        let expiry = raw::prop_u32(0x11, 3600);
        let (keeper, _) = raw::open(b.mqtt, "keeper", true, &expiry, None);
        raw::sub(&keeper, 1, "load/#", 1);
        send(&keeper, &packet::disconnect_v311());
        drop(keeper);

        let (publisher, _) = raw::open(b.mqtt, "loader", true, &[], None);
        let acked = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
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
        let load = Load {
            acked,
            stop,
            thread: Some(thread),
        };
        wait_for(LIMIT, "2,000 acknowledged", || load.acked() >= 2_000);
        load
    }

    fn acked(&self) -> usize {
        self.acked.load(Ordering::Relaxed)
    }

    /// Waits until 100 more are acknowledged: the broker went on while the copy was made.
    fn goes_on_after(&self, at: usize) {
        wait_for(LIMIT, "the publisher going on", || self.acked() >= at + 100);
    }

    fn stop(mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            t.join().unwrap();
        }
    }
}

/// The copy: one file (no WAL to carry), checked, with the account `alice`, the session
/// `keeper` and the first `before` messages of the load, retained and kept for `keeper`; and
/// a database the broker opens and serves.
fn check_copy(copy: &std::path::Path, before: usize) {
    {
        let conn =
            rusqlite::Connection::open_with_flags(copy, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
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
    let restored = Broker::start_with_db(copy, &["--allow-anonymous"]);
    let (s, _) = raw::open(restored.mqtt, "reader", true, &[], None);
    raw::sub(&s, 1, "load/0", 1);
    let p = raw::next_publish(&s, true);
    assert_eq!(p.payload, b"m0");
}

/// A database with the account `alice` and a broker on it, without a queue bound (the offline
/// session keeps every message of the load), with the page's admin password `ADMIN_PW`.
fn broker_with_alice(dir: &std::path::Path) -> Broker {
    let db = dir.join("broker.db");
    let out = run_admin(&db, &["user", "add", "alice"], Some("s3cret\n"), LIMIT);
    assert!(out.status.success(), "{out:?}");
    Broker::start_with_db(
        &db,
        &[
            "--allow-anonymous",
            "--max-queued-messages",
            "0",
            "--admin-password",
            ADMIN_PW,
        ],
    )
}

#[test]
fn backup_under_publish_load_holds_every_acknowledged_message_account_and_session() {
    let dir = tempfile::tempdir().unwrap();
    let b = broker_with_alice(dir.path());
    let load = Load::start(&b);

    let before = load.acked();
    let copy = dir.path().join("copy.db");
    let started = Instant::now();
    let out = run_admin(
        b.db_path(),
        &["backup", copy.to_str().unwrap()],
        None,
        LIMIT,
    );
    let took = started.elapsed();
    let at_end = load.acked();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.starts_with("backed up to "), "{stdout}");
    load.goes_on_after(at_end);
    load.stop();
    eprintln!(
        "backup took {took:?}: {before} acknowledged before it, {at_end} at its end; {stdout}"
    );
    // Owner-only: the copy holds the password hashes.
    assert_eq!(
        std::fs::metadata(&copy).unwrap().permissions().mode() & 0o777,
        0o600
    );
    check_copy(&copy, before);
}

/// The page's "Download backup" (`GET /api/backup`) under the same load: the same consistent
/// copy, streamed, and nothing left beside the database.
#[test]
fn page_backup_download_under_publish_load_holds_every_acknowledged_message_account_and_session() {
    let dir = tempfile::tempdir().unwrap();
    let b = broker_with_alice(dir.path());
    let load = Load::start(&b);

    let before = load.acked();
    let r = web::request(b.web, "GET", "/api/backup", &[admin()], LIMIT);
    let at_end = load.acked();
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        r.header("Content-Type").as_deref(),
        Some("application/vnd.sqlite3")
    );
    let disposition = r.header("Content-Disposition").unwrap_or_default();
    assert!(
        disposition.starts_with("attachment; filename=\"broker-") && disposition.ends_with(".db\""),
        "{disposition}"
    );
    let length: usize = r.header("Content-Length").unwrap().parse().unwrap();
    assert_eq!(r.body.len(), length);
    load.goes_on_after(at_end);
    load.stop();
    assert!(
        b.wait_for_log(
            "web: the admin downloads a backup: backed up to ",
            Duration::from_secs(10)
        ),
        "{}",
        b.log()
    );

    let copy = dir.path().join("downloaded.db");
    std::fs::write(&copy, &r.body).unwrap();
    assert_no_download_left(dir.path());
    check_copy(&copy, before);
}

/// Only the admin downloads; one download at a time (a second while the first is being sent
/// gets 409 and a plain message); the next one after it is served again.
#[test]
fn page_backup_is_for_the_admin_only_and_one_at_a_time() {
    let dir = tempfile::tempdir().unwrap();
    let b = broker_with_alice(dir.path());
    let stranger = web::request(b.web, "GET", "/api/backup", &[], LIMIT);
    assert_eq!(stranger.status, 401, "{}", stranger.text());
    let wrong = web::request(
        b.web,
        "GET",
        "/api/backup",
        &[web::basic("admin", "guess")],
        LIMIT,
    );
    assert_eq!(wrong.status, 401, "{}", wrong.text());
    assert!(!wrong.head.contains("application/vnd.sqlite3"));

    // A database larger than what the sockets buffer (~20 MB), so that the first download
    // stays in progress while it is not read.
    let (publisher, _) = raw::open(b.mqtt, "big", true, &[], None);
    let payload = vec![b'x'; 900_000];
    for i in 0..24u16 {
        send(
            &publisher,
            &raw::publish(&format!("big/{i}"), &payload, 1, i + 1, true, &[]),
        );
        let ack = read_packet(&publisher);
        assert_eq!(&ack[..1], &[0x40], "PUBACK expected");
    }

    let mut first = web::send_request(b.web, "GET", "/api/backup", &[admin()], LIMIT);
    // Its head: the copy is made and being sent.
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        assert!(head.len() < 4096, "no end of head");
        std::io::Read::read_exact(&mut first, &mut byte).expect("the first download's head");
        head.push(byte[0]);
    }
    assert!(
        head.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&head)
    );

    let second = web::request(b.web, "GET", "/api/backup", &[admin()], LIMIT);
    assert_eq!(second.status, 409, "{}", second.text());
    assert!(second.head.contains("text/plain"), "{}", second.head);
    assert!(
        second.text().contains("already being made or downloaded"),
        "{}",
        second.text()
    );

    let mut rest = Vec::new();
    std::io::Read::read_to_end(&mut first, &mut rest).expect("the first download");
    let head = String::from_utf8_lossy(&head).into_owned();
    let length: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("Content-Length: "))
        .and_then(|v| v.trim().parse().ok())
        .expect("Content-Length");
    assert_eq!(rest.len(), length);
    assert!(length > 20_000_000, "{length}");
    assert!(rest.starts_with(b"SQLite format 3\0"));

    // Given back once sent.
    wait_for(LIMIT, "the slot given back", || {
        web::request(b.web, "HEAD", "/api/backup", &[admin()], LIMIT).status == 200
    });
    assert_no_download_left(dir.path());
}

fn admin() -> (&'static str, String) {
    web::basic("admin", ADMIN_PW)
}

/// No copy left beside the database.
fn assert_no_download_left(dir: &std::path::Path) {
    wait_for(LIMIT, "the downloaded copy removed", || {
        std::fs::read_dir(dir).unwrap().all(|e| {
            !e.unwrap()
                .file_name()
                .to_string_lossy()
                .contains(".download-")
        })
    });
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
