//! `mqtt5-broker backup FILE`: a consistent copy of the database while a broker may be writing
//! it, made by SQLite's online backup API in a short-lived process (like the admin commands).
//!
//! The copy is taken in ONE backup step, so it is the database as of one read transaction: in
//! WAL mode the broker keeps committing meanwhile (a reader never blocks a writer), whereas a
//! copy in several steps would restart each time the broker commits and, under load, never
//! finish. It is written to a hidden temporary file beside FILE, switched to a single-file
//! journal (no `-wal` to carry along), checked with `PRAGMA quick_check`, synced and only then
//! renamed to FILE: FILE is never half-written, and an existing FILE is never replaced. It is
//! made with mode 0600, as it holds the accounts' password hashes.

use std::fs::{self, File};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rusqlite::backup::{Backup, StepResult};
use rusqlite::{Connection, OpenFlags};

use super::error::{open_error, sql_error, StoreError};

/// How long the copy may wait for locks (a checkpoint or a migration in the broker).
const BUSY_FOR: Duration = Duration::from_secs(30);

/// What the copy holds, for the person who asked for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupReport {
    pub path: PathBuf,
    pub bytes: u64,
    /// `PRAGMA user_version`: the schema step the copy is at.
    pub schema: u32,
    pub users: i64,
    pub sessions: i64,
    pub messages: i64,
    pub retained: i64,
}

impl std::fmt::Display for BackupReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "backed up to {} ({} bytes, schema {}): {} users, {} persistent sessions, {} \
             messages, {} retained",
            self.path.display(),
            self.bytes,
            self.schema,
            self.users,
            self.sessions,
            self.messages,
            self.retained
        )
    }
}

/// Copies the database at `db` to `dest`, which must not exist yet.
pub fn backup(db: &Path, dest: &Path) -> Result<BackupReport, StoreError> {
    if !db.is_file() {
        return Err(StoreError::Open {
            path: db.to_path_buf(),
            detail: "no database file there (check --db or the config file)".into(),
        });
    }
    if dest.exists() {
        return Err(StoreError::Invalid(format!(
            "{} exists: a backup never replaces a file, give a new name",
            dest.display()
        )));
    }
    let name = dest
        .file_name()
        .ok_or_else(|| StoreError::Invalid(format!("{} is not a file name", dest.display())))?;
    let tmp = dest.with_file_name(format!(
        ".{}.tmp-{}",
        name.to_string_lossy(),
        std::process::id()
    ));
    let result = copy_to(db, &tmp).and_then(|report| {
        fs::rename(&tmp, dest).map_err(|source| StoreError::Io {
            context: "renaming the finished backup",
            source,
        })?;
        if let Some(dir) = dest.parent().filter(|d| !d.as_os_str().is_empty()) {
            // The rename itself survives a power cut only once the directory is synced.
            let _ = File::open(dir).and_then(|d| d.sync_all());
        }
        Ok(BackupReport {
            path: dest.to_path_buf(),
            ..report
        })
    });
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// The copy itself, into `tmp`; the report's path is filled in by the caller.
fn copy_to(db: &Path, tmp: &Path) -> Result<BackupReport, StoreError> {
    let src = Connection::open_with_flags(
        db,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|e| open_error(db, e))?;
    src.busy_timeout(BUSY_FOR).map_err(|e| open_error(db, e))?;
    // Made first, readable by the owner only: the copy holds the password hashes.
    fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(tmp)
        .map_err(|source| StoreError::Io {
            context: "creating the backup file",
            source,
        })?;
    let mut dst = Connection::open(tmp).map_err(|e| open_error(tmp, e))?;
    {
        let copy = Backup::new(&src, &mut dst).map_err(|e| sql_error("starting the backup", e))?;
        let deadline = Instant::now() + BUSY_FOR;
        loop {
            match copy
                .step(-1)
                .map_err(|e| sql_error("copying the database", e))?
            {
                StepResult::Done => break,
                // A step of every page that returns More was restarted by a commit: go again.
                StepResult::More => {}
                StepResult::Busy | StepResult::Locked => {
                    if Instant::now() >= deadline {
                        return Err(StoreError::Locked {
                            path: db.to_path_buf(),
                        });
                    }
                    std::thread::sleep(Duration::from_millis(50));
                }
                // StepResult is non-exhaustive; anything new is treated as "try again".
                _ => {}
            }
        }
    }
    let mode: String = dst
        .pragma_update_and_check(None, "journal_mode", "DELETE", |row| row.get(0))
        .map_err(|e| sql_error("making the backup one file", e))?;
    if !mode.eq_ignore_ascii_case("delete") {
        return Err(StoreError::Sqlite {
            context: "making the backup one file",
            detail: format!("journal mode stayed {mode}"),
        });
    }
    let check: String = dst
        .query_row("PRAGMA quick_check", [], |row| row.get(0))
        .map_err(|e| sql_error("checking the backup", e))?;
    if check != "ok" {
        return Err(StoreError::Corrupt {
            path: tmp.to_path_buf(),
            detail: check,
        });
    }
    let count = |table: &str| -> Result<i64, StoreError> {
        dst.query_row(&format!("SELECT count(*) FROM {table}"), [], |row| {
            row.get(0)
        })
        .map_err(|e| sql_error("counting the backup's rows", e))
    };
    let report = BackupReport {
        path: PathBuf::new(),
        bytes: 0,
        schema: dst
            .pragma_query_value(None, "user_version", |row| row.get(0))
            .map_err(|e| sql_error("reading the backup's schema", e))?,
        users: count("users")?,
        sessions: count("sessions")?,
        messages: count("messages")?,
        retained: count("retained")?,
    };
    drop(dst);
    let file = File::open(tmp).map_err(|source| StoreError::Io {
        context: "opening the backup to sync it",
        source,
    })?;
    file.sync_all().map_err(|source| StoreError::Io {
        context: "syncing the backup",
        source,
    })?;
    let bytes = file.metadata().map(|m| m.len()).unwrap_or(0);
    Ok(BackupReport { bytes, ..report })
}
