//! [`StoreError`]: every way the store can fail, with the file and the operation in the message,
//! and the mapping from SQLite's error codes to those variants. Used on every thread that talks
//! to the store; no rusqlite type appears in the public variants.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

use crate::auth::AuthError;

/// A store failure. `Display` names the file or the operation; callers log it once.
#[derive(Debug)]
#[non_exhaustive]
pub enum StoreError {
    /// The file could not be opened or created (missing directory, permissions, a directory).
    Open { path: PathBuf, detail: String },
    /// The file is not an SQLite database, or SQLite found it damaged.
    Corrupt { path: PathBuf, detail: String },
    /// The file was written by a newer version of the broker.
    NewerSchema {
        path: PathBuf,
        found: u32,
        supported: u32,
    },
    /// The file (or its directory, needed for the WAL) cannot be written.
    ReadOnly { path: PathBuf, detail: String },
    /// Another process holds a lock on the file for longer than the busy timeout.
    Locked { path: PathBuf },
    /// A migration step failed; the file is unchanged (the whole migration is one transaction).
    Migration {
        path: PathBuf,
        step: u32,
        detail: String,
    },
    /// The database cannot take writes right now (disk full, I/O error, locked); the broker keeps
    /// durable writes in memory and retries. Returned to callers who wait for an answer.
    Unavailable { detail: String },
    /// The database refused one write (a constraint, e.g. a kept message for an unsaved
    /// session); the rest of its batch committed.
    Refused(String),
    /// Any other SQLite failure, with what was being done.
    Sqlite {
        context: &'static str,
        detail: String,
    },
    /// The `store` thread has stopped (after `shutdown`, or it could not start).
    Closed,
    /// The `store` thread did not answer in time.
    Timeout { what: &'static str },
    /// The `store` thread could not be spawned.
    Spawn(io::Error),
    /// A user name that already exists.
    UserExists(String),
    /// A user name that does not exist.
    NoSuchUser(String),
    /// An ACL rule id that does not exist.
    NoSuchRule(i64),
    /// An unban of something that is not banned.
    NotBanned { kind: &'static str, value: String },
    /// Bad input from a person or a client (empty name, bad topic pattern, …).
    Invalid(String),
    /// Hashing the password failed.
    Auth(AuthError),
    /// Reading the password (terminal or stdin).
    Io {
        context: &'static str,
        source: io::Error,
    },
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreError::Open { path, detail } => {
                write!(f, "cannot open the database {}: {detail}", path.display())
            }
            StoreError::Corrupt { path, detail } => write!(
                f,
                "the database {} is not a valid SQLite file or is damaged ({detail}); \
                 move it away or restore a backup",
                path.display()
            ),
            StoreError::NewerSchema {
                path,
                found,
                supported,
            } => write!(
                f,
                "the database {} has schema version {found}, newer than this broker \
                 supports ({supported}); use a newer broker",
                path.display()
            ),
            StoreError::ReadOnly { path, detail } => write!(
                f,
                "the database {} cannot be written ({detail}); the file and its directory \
                 must be writable",
                path.display()
            ),
            StoreError::Locked { path } => write!(
                f,
                "the database {} is locked by another process; try again later",
                path.display()
            ),
            StoreError::Migration { path, step, detail } => write!(
                f,
                "cannot upgrade the database {} (migration {step}): {detail}; \
                 the file was left unchanged",
                path.display()
            ),
            StoreError::Unavailable { detail } => {
                write!(f, "the database cannot be written now: {detail}")
            }
            StoreError::Refused(why) => write!(f, "the database refused a write: {why}"),
            StoreError::Sqlite { context, detail } => {
                write!(f, "database error {context}: {detail}")
            }
            StoreError::Closed => write!(f, "the store has stopped"),
            StoreError::Timeout { what } => {
                write!(f, "the store did not answer in time ({what})")
            }
            StoreError::Spawn(e) => write!(f, "cannot start the store thread: {e}"),
            StoreError::UserExists(name) => write!(f, "user {name:?} already exists"),
            StoreError::NoSuchUser(name) => write!(f, "no user {name:?}"),
            StoreError::NoSuchRule(id) => write!(f, "no ACL rule with id {id}"),
            StoreError::NotBanned { kind, value } => write!(f, "{kind} {value:?} is not banned"),
            StoreError::Invalid(why) => f.write_str(why),
            StoreError::Auth(e) => e.fmt(f),
            StoreError::Io { context, source } => write!(f, "{context}: {source}"),
        }
    }
}

impl std::error::Error for StoreError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            StoreError::Spawn(e) | StoreError::Io { source: e, .. } => Some(e),
            StoreError::Auth(e) => Some(e),
            _ => None,
        }
    }
}

impl From<AuthError> for StoreError {
    fn from(e: AuthError) -> Self {
        StoreError::Auth(e)
    }
}

/// SQLite failures that may go away by themselves (full disk, lock, I/O): the worker keeps the
/// batch and retries. Everything else (constraint, type, misuse) is a problem of one command.
pub(crate) fn is_transient(e: &rusqlite::Error) -> bool {
    use rusqlite::ErrorCode::*;
    match e {
        rusqlite::Error::SqliteFailure(err, _) => !matches!(
            err.code,
            ConstraintViolation | TypeMismatch | ApiMisuse | TooBig | ParameterOutOfRange
        ),
        _ => false,
    }
}

/// Maps an error met while opening or migrating `path` to the variant a person can act on.
pub(crate) fn open_error(path: &Path, e: rusqlite::Error) -> StoreError {
    use rusqlite::ErrorCode::*;
    let path = path.to_path_buf();
    let detail = e.to_string();
    match &e {
        rusqlite::Error::SqliteFailure(err, _) => match err.code {
            NotADatabase | DatabaseCorrupt => StoreError::Corrupt { path, detail },
            DatabaseBusy | DatabaseLocked => StoreError::Locked { path },
            ReadOnly => StoreError::ReadOnly { path, detail },
            CannotOpen | PermissionDenied | NotFound => StoreError::Open { path, detail },
            _ => StoreError::Open { path, detail },
        },
        _ => StoreError::Open { path, detail },
    }
}

/// Wraps a runtime SQLite error with what was being done.
pub(crate) fn sql_error(context: &'static str, e: rusqlite::Error) -> StoreError {
    if is_transient(&e) {
        StoreError::Unavailable {
            detail: format!("{context}: {e}"),
        }
    } else {
        StoreError::Sqlite {
            context,
            detail: e.to_string(),
        }
    }
}
