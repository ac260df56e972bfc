//! Opening the database: migrations from an older schema, refusal of newer, corrupt, locked and
//! unusable files, and the start-up repair of what a crash left behind. Real SQLite files in
//! temporary directories; runs on the test threads.

use std::time::Duration;

use mqtt5_broker::protocol::ProtocolVersion;
use mqtt5_broker::store::schema::latest_version;
use mqtt5_broker::store::{ClientRecord, Store, StoreError, StoreOptions};
use rusqlite::Connection;

const SCHEMA: &str = include_str!("../schema.sql");

fn opts() -> StoreOptions {
    StoreOptions {
        busy_timeout: Duration::from_millis(200),
        ..StoreOptions::default()
    }
}

/// The text of migration 1 exactly as released: everything before the second marker.
fn schema_v1() -> &'static str {
    let end = SCHEMA
        .find("-- migration 2")
        .expect("schema.sql has a second migration");
    &SCHEMA[..end]
}

fn user_version(path: &std::path::Path) -> u32 {
    Connection::open(path)
        .unwrap()
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .unwrap()
}

#[test]
fn a_new_file_gets_the_latest_schema() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("new.db");
    let store = Store::open(&path, opts()).unwrap();
    store.shutdown();
    assert_eq!(user_version(&path), latest_version());
    assert!(latest_version() >= 2);
    let mode: String = Connection::open(&path)
        .unwrap()
        .pragma_query_value(None, "journal_mode", |r| r.get(0))
        .unwrap();
    assert_eq!(mode, "wal");
}

#[test]
fn migration_from_v1_keeps_the_data() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("v1.db");
    {
        let conn = Connection::open(&path).unwrap();
        conn.execute_batch(schema_v1()).unwrap();
        conn.pragma_update(None, "user_version", 1).unwrap();
        conn.execute(
            "INSERT INTO users (name, password_hash, created) VALUES ('alice', 'h', 1)",
            [],
        )
        .unwrap();
        conn.execute(
            "INSERT INTO retained (topic, payload, qos, properties, publisher, stored_at)
             VALUES ('a/b', x'6869', 1, '{\"content_type\":\"text/plain\"}', 'pub', 5)",
            [],
        )
        .unwrap();
        assert!(conn.prepare("SELECT * FROM sessions").is_err());
    }
    let store = Store::open(&path, opts()).unwrap();
    assert_eq!(store.user_hash("alice").unwrap().as_deref(), Some("h"));
    let snap = store.load().unwrap();
    assert_eq!(snap.retained.len(), 1);
    assert_eq!(snap.retained[0].payload, b"hi");
    assert_eq!(
        snap.retained[0].properties.content_type.as_deref(),
        Some("text/plain")
    );
    assert!(snap.sessions.is_empty());
    store.shutdown();
    assert_eq!(user_version(&path), latest_version());
    let conn = Connection::open(&path).unwrap();
    let n: i64 = conn
        .query_row("SELECT count(*) FROM sessions", [], |r| r.get(0))
        .unwrap();
    assert_eq!(n, 0, "the v2 tables exist");
}

#[test]
fn a_newer_schema_version_is_refused_and_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("newer.db");
    Store::open(&path, opts()).unwrap().shutdown();
    Connection::open(&path)
        .unwrap()
        .pragma_update(None, "user_version", 99)
        .unwrap();
    match Store::open(&path, opts()) {
        Err(StoreError::NewerSchema {
            found, supported, ..
        }) => {
            assert_eq!(found, 99);
            assert_eq!(supported, latest_version());
        }
        other => panic!("expected NewerSchema, got {other:?}"),
    }
    assert_eq!(user_version(&path), 99);
}

#[test]
fn a_corrupt_file_is_refused_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("garbage.db");
    let garbage: Vec<u8> = (0..8192u32).map(|i| (i * 7 + 3) as u8).collect();
    std::fs::write(&path, &garbage).unwrap();
    let err = Store::open(&path, opts()).unwrap_err();
    assert!(matches!(err, StoreError::Corrupt { .. }), "{err:?}");
    let text = err.to_string();
    assert!(
        text.contains("garbage.db") && text.contains("not a valid SQLite"),
        "{text}"
    );
    assert_eq!(
        std::fs::read(&path).unwrap(),
        garbage,
        "the file is untouched"
    );
}

#[test]
fn a_directory_or_missing_parent_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let err = Store::open(dir.path(), opts()).unwrap_err();
    assert!(matches!(err, StoreError::Open { .. }), "{err:?}");
    let err = Store::open(dir.path().join("no/such/dir/x.db"), opts()).unwrap_err();
    assert!(matches!(err, StoreError::Open { .. }), "{err:?}");
}

#[test]
fn a_file_locked_by_another_process_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("locked.db");
    Store::open(&path, opts()).unwrap().shutdown();
    let other = Connection::open(&path).unwrap();
    other.execute_batch("BEGIN EXCLUSIVE").unwrap();
    let err = Store::open(&path, opts()).unwrap_err();
    assert!(matches!(err, StoreError::Locked { .. }), "{err:?}");
    other.execute_batch("COMMIT").unwrap();
    Store::open(&path, opts()).unwrap().shutdown();
}

#[test]
fn connected_flag_left_by_a_crash_is_reset_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("crash.db");
    let store = Store::open(&path, opts()).unwrap();
    store.client_connected(ClientRecord {
        client_id: "c1".into(),
        username: Some("alice".into()),
        protocol_version: ProtocolVersion::V5,
        address: "127.0.0.1:5000".into(),
        time: 1_000,
    });
    store.flush().wait().unwrap();
    let rows = store.clients(0, 10).unwrap();
    assert!(rows[0].connected);
    // No client_disconnected: as after kill -9.
    store.shutdown();

    let store = Store::open(&path, opts()).unwrap();
    let rows = store.clients(0, 10).unwrap();
    assert_eq!(rows.len(), 1);
    assert!(!rows[0].connected);
    assert_eq!(
        rows[0].last_disconnect_reason.as_deref(),
        Some("broker restarted")
    );
    assert_eq!(rows[0].username.as_deref(), Some("alice"));
    store.shutdown();
}
