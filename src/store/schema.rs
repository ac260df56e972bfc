//! Opening the database file: PRAGMAs (WAL, foreign keys, synchronous, busy timeout), the checks
//! that refuse a file we must not touch (corrupt, read-only, locked, newer schema), the
//! migrations read from `schema.sql`, and the start-up repairs after a crash.
//!
//! Runs on the thread that calls `Store::open` (before the `store` thread takes the connection)
//! and on the main thread for the admin command line.
//!
//! Migrations follow cargo's `util/sqlite.rs`: a list of steps, applied in order inside ONE
//! exclusive transaction that also sets `PRAGMA user_version` to the number of steps applied.
//! The steps are the `-- migration N:` sections of `schema.sql`. Never remove or edit a released
//! step; append a new one (a step that must transform data in code adds a variant to
//! `Migration`).

use std::path::Path;
use std::time::Duration;

use rusqlite::{params, Connection, OpenFlags, TransactionBehavior};

use super::error::{open_error, StoreError};

/// The schema, embedded at build time.
pub(crate) const SCHEMA_SQL: &str = include_str!("../../schema.sql");

const MARKER: &str = "-- migration ";

/// One schema step.
pub(crate) enum Migration {
    /// A `-- migration N:` section of `schema.sql`.
    Sql(&'static str),
}

/// The steps of `schema.sql`, in order. Panics in tests only if the markers are out of order
/// (checked by `schema_markers_are_numbered_in_order`).
pub(crate) fn migrations() -> Vec<Migration> {
    sections(SCHEMA_SQL)
        .into_iter()
        .map(|(_, sql)| Migration::Sql(sql))
        .collect()
}

/// The schema version this build writes: the number of migration steps.
pub fn latest_version() -> u32 {
    u32::try_from(migrations().len()).unwrap_or(u32::MAX)
}

/// Splits the file at marker lines; returns (number, text of the section).
fn sections(text: &'static str) -> Vec<(u32, &'static str)> {
    let mut out = Vec::new();
    let mut starts: Vec<(u32, usize)> = Vec::new();
    let mut offset = 0;
    for line in text.split_inclusive('\n') {
        if let Some(rest) = line.strip_prefix(MARKER) {
            let number: String = rest.chars().take_while(char::is_ascii_digit).collect();
            if let Ok(n) = number.parse() {
                starts.push((n, offset));
            }
        }
        offset += line.len();
    }
    for (i, &(n, start)) in starts.iter().enumerate() {
        let end = starts.get(i + 1).map_or(text.len(), |&(_, s)| s);
        out.push((n, &text[start..end]));
    }
    out
}

/// How the file is opened.
#[derive(Debug, Clone, Copy)]
pub(crate) struct OpenOptions {
    pub busy_timeout: Duration,
    /// `synchronous = FULL` (fsync every commit) instead of NORMAL.
    pub full_sync: bool,
    /// `PRAGMA max_page_count` from this many bytes; 0 = no limit. Not stored in the file:
    /// set at every open.
    pub max_bytes: u64,
}

/// Opens (creating if needed) and migrates the database. Refuses corrupt, read-only, locked and
/// newer files with a typed error; never starts silently on an empty database instead.
pub(crate) fn open(path: &Path, opts: OpenOptions) -> Result<Connection, StoreError> {
    if path.is_dir() {
        return Err(StoreError::Open {
            path: path.to_path_buf(),
            detail: "it is a directory".into(),
        });
    }
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
        | OpenFlags::SQLITE_OPEN_CREATE
        | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let mut conn = Connection::open_with_flags(path, flags).map_err(|e| open_error(path, e))?;
    if conn
        .is_readonly(rusqlite::DatabaseName::Main)
        .unwrap_or(false)
    {
        return Err(StoreError::ReadOnly {
            path: path.to_path_buf(),
            detail: "SQLite opened it read-only".into(),
        });
    }
    conn.busy_timeout(opts.busy_timeout)
        .map_err(|e| open_error(path, e))?;
    conn.set_prepared_statement_cache_capacity(64);
    // Reading the journal mode reads the header: a garbage file fails here with NOTADB.
    let mode: String = conn
        .pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get(0))
        .map_err(|e| open_error(path, e))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(StoreError::Open {
            path: path.to_path_buf(),
            detail: format!("cannot switch to WAL journal mode (got {mode})"),
        });
    }
    // After a checkpoint, cut a WAL that a large batch made big back to this size.
    conn.pragma_update(None, "journal_size_limit", 16 * 1024 * 1024)
        .map_err(|e| open_error(path, e))?;
    conn.pragma_update(None, "foreign_keys", true)
        .map_err(|e| open_error(path, e))?;
    let sync = if opts.full_sync { "FULL" } else { "NORMAL" };
    conn.pragma_update(None, "synchronous", sync)
        .map_err(|e| open_error(path, e))?;
    migrate(&mut conn, path)?;
    if opts.max_bytes > 0 {
        set_max_bytes(&conn, opts.max_bytes).map_err(|e| open_error(path, e))?;
    }
    Ok(conn)
}

/// Caps the file at `max_bytes` (rounded down to whole pages, at least one). SQLite never sets
/// the cap below the file's current size; writes past it fail with `SQLITE_FULL`, as on a full
/// disk.
fn set_max_bytes(conn: &Connection, max_bytes: u64) -> rusqlite::Result<()> {
    let page_size: u64 = conn.pragma_query_value(None, "page_size", |r| r.get(0))?;
    let pages = (max_bytes / page_size.max(1)).max(1);
    let set: i64 = conn.pragma_update_and_check(None, "max_page_count", pages, |r| r.get(0))?;
    log::debug!("store: at most {set} pages of {page_size} bytes");
    Ok(())
}

/// Applies the missing migration steps in one exclusive transaction.
pub(crate) fn migrate(conn: &mut Connection, path: &Path) -> Result<u32, StoreError> {
    migrate_with(conn, path, &migrations())
}

fn migrate_with(
    conn: &mut Connection,
    path: &Path,
    steps: &[Migration],
) -> Result<u32, StoreError> {
    let latest = u32::try_from(steps.len()).unwrap_or(u32::MAX);
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Exclusive)
        .map_err(|e| open_error(path, e))?;
    let found: u32 = tx
        .pragma_query_value(None, "user_version", |row| row.get(0))
        .map_err(|e| open_error(path, e))?;
    if found > latest {
        return Err(StoreError::NewerSchema {
            path: path.to_path_buf(),
            found,
            supported: latest,
        });
    }
    if found == latest {
        return Ok(latest);
    }
    for (i, step) in steps.iter().enumerate().skip(found as usize) {
        let number = u32::try_from(i + 1).unwrap_or(u32::MAX);
        let result = match step {
            Migration::Sql(sql) => tx.execute_batch(sql),
        };
        result.map_err(|e| match open_error(path, e) {
            StoreError::Open { detail, .. } => StoreError::Migration {
                path: path.to_path_buf(),
                step: number,
                detail,
            },
            other => other,
        })?;
    }
    tx.pragma_update(None, "user_version", latest)
        .map_err(|e| open_error(path, e))?;
    tx.commit().map_err(|e| open_error(path, e))?;
    if found > 0 {
        log::info!(
            "database {}: upgraded schema {found} → {latest}",
            path.display()
        );
    }
    Ok(latest)
}

/// What the start-up repair changed.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Repairs {
    pub clients_reset: usize,
    pub sessions_expired: usize,
    pub retained_expired: usize,
}

/// Repairs after an unclean stop, run by the broker (not the admin commands) at open: clients
/// left `connected` are marked disconnected, sessions left connected get `disconnected_at = now`
/// (their expiry counts from this start), and expired sessions and retained messages are removed.
pub(crate) fn repair_at_start(conn: &mut Connection, now: i64) -> rusqlite::Result<Repairs> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let clients_reset = tx.execute(
        "UPDATE clients SET connected = 0, last_disconnect = ?1,
             last_disconnect_reason = 'broker restarted'
         WHERE connected = 1",
        params![now],
    )?;
    tx.execute(
        "UPDATE sessions SET disconnected_at = ?1 WHERE disconnected_at IS NULL",
        params![now],
    )?;
    let sessions_expired = tx.execute(
        "DELETE FROM sessions
         WHERE expiry_interval < 4294967295 AND disconnected_at + expiry_interval * 1000 <= ?1",
        params![now],
    )?;
    let retained_expired = tx.execute(
        "DELETE FROM retained WHERE expiry_at IS NOT NULL AND expiry_at <= ?1",
        params![now],
    )?;
    tx.commit()?;
    Ok(Repairs {
        clients_reset,
        sessions_expired,
        retained_expired,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schema_markers_are_numbered_in_order() {
        let s = sections(SCHEMA_SQL);
        assert!(s.len() >= 2);
        for (i, (n, text)) in s.iter().enumerate() {
            assert_eq!(*n as usize, i + 1, "migration markers must be 1, 2, 3, …");
            assert!(text.contains("CREATE") || text.contains("ALTER"));
        }
    }

    #[test]
    fn migrate_twice_is_a_no_op() {
        let mut conn = Connection::open_in_memory().unwrap();
        let p = Path::new(":memory:");
        assert_eq!(migrate(&mut conn, p).unwrap(), latest_version());
        assert_eq!(migrate(&mut conn, p).unwrap(), latest_version());
        let v: u32 = conn
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .unwrap();
        assert_eq!(v, latest_version());
    }

    #[test]
    fn a_failing_step_leaves_the_file_unchanged() {
        let mut conn = Connection::open_in_memory().unwrap();
        let p = Path::new(":memory:");
        let steps = [
            Migration::Sql("CREATE TABLE a (x);"),
            Migration::Sql("CREATE TABLE b (x); THIS IS NOT SQL;"),
        ];
        let err = migrate_with(&mut conn, p, &steps).unwrap_err();
        assert!(
            matches!(err, StoreError::Migration { step: 2, .. }),
            "{err}"
        );
        let v: u32 = conn
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .unwrap();
        assert_eq!(v, 0);
        assert!(conn.prepare("SELECT x FROM a").is_err());
    }
}
