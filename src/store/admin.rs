//! The admin command line: `user add|del|list|passwd`, `acl add|del|list`, `ban|unban|bans`.
//!
//! Runs on the main thread of a short-lived `mqtt5-broker <subcommand>` process. It opens the
//! database file directly (not through a running broker), with WAL and a busy timeout, so it
//! works whether or not a broker is running on the same file; a running broker picks the change
//! up within about a second (it watches `PRAGMA data_version`). It refuses, with a clear
//! [`StoreError`], a file that is locked for longer than the busy timeout, corrupt, read-only or
//! from a newer schema. A missing file is created (so accounts can be set up before the first
//! start).
//!
//! Passwords never come from the command line (they would show in `ps` and shell history): the
//! caller passes a closure, normally [`read_password`], which prompts without echo on a terminal
//! and reads one line from stdin otherwise (`echo secret | mqtt5-broker user add alice`).

use std::fmt::Write as _;
use std::io::{self, BufRead, IsTerminal};
use std::path::Path;
use std::time::Duration;

use rusqlite::{Connection, TransactionBehavior};

use super::error::{is_transient, open_error, sql_error, StoreError};
use super::schema;
use super::worker::{apply_admin, AdminFailure, AdminWrite};
use super::{check_name, check_rule, queries};
use crate::auth::{self, AclAccess, AclRule, Ban, BanKind};

/// How long the command waits for a broker's transaction to finish.
const ADMIN_BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// One admin command; the lead maps the clap subcommands onto it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AdminCommand {
    /// `user add NAME` (password from the closure).
    UserAdd { name: String },
    /// `user del NAME`.
    UserDel { name: String },
    /// `user list`.
    UserList,
    /// `user passwd NAME` (password from the closure).
    UserPasswd { name: String },
    /// `acl add [--user NAME] [--deny] ACCESS PATTERN`; no user = a rule for everyone.
    AclAdd {
        username: Option<String>,
        pattern: String,
        access: AclAccess,
        deny: bool,
    },
    /// `acl del ID`.
    AclDel { id: i64 },
    /// `acl list`.
    AclList,
    /// `ban client_id|username VALUE`.
    Ban { kind: BanKind, value: String },
    /// `unban client_id|username VALUE`.
    Unban { kind: BanKind, value: String },
    /// `bans` (list).
    BanList,
}

/// Runs `cmd` on the database at `db` and returns the text to print on stdout, without a
/// final newline (the caller ends the line).
/// `password` is called only by `user add` / `user passwd`.
pub fn run(
    db: &Path,
    cmd: AdminCommand,
    password: impl FnOnce() -> io::Result<String>,
) -> Result<String, StoreError> {
    // Check and hash before touching the file: a bad name or an empty password changes nothing.
    let change = match &cmd {
        AdminCommand::UserAdd { name } | AdminCommand::UserPasswd { name } => {
            check_name("user name", name)?;
            let pw = password().map_err(|source| StoreError::Io {
                context: "cannot read the password",
                source,
            })?;
            let hash = auth::hash_password(&pw)?;
            Some(match &cmd {
                AdminCommand::UserAdd { .. } => AdminWrite::UserAdd {
                    name: name.clone(),
                    hash,
                },
                _ => AdminWrite::UserPasswd {
                    name: name.clone(),
                    hash,
                },
            })
        }
        AdminCommand::UserDel { name } => Some(AdminWrite::UserDel(name.clone())),
        AdminCommand::AclAdd {
            username,
            pattern,
            access,
            deny,
        } => {
            let rule = AclRule {
                id: 0,
                username: username.clone(),
                pattern: pattern.clone(),
                access: *access,
                allow: !deny,
            };
            check_rule(&rule)?;
            Some(AdminWrite::AclAdd(rule))
        }
        AdminCommand::AclDel { id } => Some(AdminWrite::AclDel(*id)),
        AdminCommand::Ban { kind, value } => {
            check_name(kind.as_str(), value)?;
            Some(AdminWrite::Ban(Ban {
                kind: *kind,
                value: value.clone(),
            }))
        }
        AdminCommand::Unban { kind, value } => Some(AdminWrite::Unban(Ban {
            kind: *kind,
            value: value.clone(),
        })),
        AdminCommand::UserList | AdminCommand::AclList | AdminCommand::BanList => None,
    };
    let mut conn = schema::open(
        db,
        schema::OpenOptions {
            busy_timeout: ADMIN_BUSY_TIMEOUT,
            full_sync: true,
            max_bytes: 0,
        },
    )?;
    match change {
        Some(change) => {
            let id = write(&mut conn, db, &change)?;
            Ok(done_message(&cmd, id))
        }
        None => list(&conn, &cmd),
    }
}

/// A failed admin write: a lock or busy file is about the file (another process holds it),
/// anything else about what was being done.
fn write_error(db: &Path, context: &'static str, e: rusqlite::Error) -> StoreError {
    if is_transient(&e) {
        open_error(db, e)
    } else {
        sql_error(context, e)
    }
}

fn write(conn: &mut Connection, db: &Path, change: &AdminWrite) -> Result<i64, StoreError> {
    let locked = |e| write_error(db, "changing users, ACL or bans", e);
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(locked)?;
    let id = match apply_admin(&tx, change) {
        Ok(id) => id,
        Err(AdminFailure::Refused(e)) => return Err(e),
        Err(AdminFailure::Db(e)) => return Err(locked(e)),
    };
    tx.commit().map_err(locked)?;
    Ok(id)
}

fn done_message(cmd: &AdminCommand, id: i64) -> String {
    match cmd {
        AdminCommand::UserAdd { name } => format!("added user {name}"),
        AdminCommand::UserPasswd { name } => format!("changed the password of {name}"),
        AdminCommand::UserDel { name } => format!("deleted user {name}"),
        AdminCommand::AclAdd { .. } => format!("added ACL rule {id}"),
        AdminCommand::AclDel { id } => format!("deleted ACL rule {id}"),
        AdminCommand::Ban { kind, value } => format!("banned {kind} {value}"),
        AdminCommand::Unban { kind, value } => format!("unbanned {kind} {value}"),
        AdminCommand::UserList | AdminCommand::AclList | AdminCommand::BanList => String::new(),
    }
}

fn list(conn: &Connection, cmd: &AdminCommand) -> Result<String, StoreError> {
    let mut out = String::new();
    match cmd {
        AdminCommand::UserList => {
            let users = queries::user_list(conn).map_err(|e| sql_error("listing users", e))?;
            if users.is_empty() {
                out.push_str("(no users)\n");
            }
            for u in users {
                let _ = writeln!(out, "{}\tcreated {}", u.name, format_time(u.created));
            }
        }
        AdminCommand::AclList => {
            let rules = queries::acl_list(conn).map_err(|e| sql_error("listing ACL rules", e))?;
            if rules.is_empty() {
                out.push_str("(no ACL rules: every client may publish and subscribe anywhere)\n");
            } else {
                out.push_str("ID\tUSER\tACCESS\tRULE\tPATTERN\n");
            }
            for r in rules {
                let _ = writeln!(
                    out,
                    "{}\t{}\t{}\t{}\t{}",
                    r.id,
                    r.username.as_deref().unwrap_or("*"),
                    r.access,
                    if r.allow { "allow" } else { "deny" },
                    r.pattern
                );
            }
        }
        AdminCommand::BanList => {
            let bans = queries::ban_list(conn).map_err(|e| sql_error("listing bans", e))?;
            if bans.is_empty() {
                out.push_str("(no bans)\n");
            }
            for b in bans {
                let _ = writeln!(
                    out,
                    "{}\t{}\tsince {}",
                    b.ban.kind,
                    b.ban.value,
                    format_time(b.created)
                );
            }
        }
        _ => {}
    }
    Ok(out.trim_end().to_owned())
}

/// What [`import`] stored.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Imported {
    /// Accounts added.
    pub users: usize,
    /// Names skipped because an account of that name already exists (it is kept as it is).
    pub existing: Vec<String>,
    /// ACL rules added.
    pub rules: usize,
}

/// Adds accounts (name, stored hash, both already checked by the caller) and ACL rules in ONE
/// transaction (`import mosquitto`): on any error nothing is stored. An account whose name
/// exists already is left as it is and named in [`Imported::existing`].
pub fn import(
    db: &Path,
    users: &[(String, String)],
    rules: &[AclRule],
) -> Result<Imported, StoreError> {
    for (name, _) in users {
        check_name("user name", name)?;
    }
    for rule in rules {
        check_rule(rule)?;
    }
    let mut conn = schema::open(
        db,
        schema::OpenOptions {
            busy_timeout: ADMIN_BUSY_TIMEOUT,
            full_sync: true,
            max_bytes: 0,
        },
    )?;
    let locked = |e| write_error(db, "importing users and ACL rules", e);
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(locked)?;
    let mut done = Imported::default();
    for (name, hash) in users {
        let add = AdminWrite::UserAdd {
            name: name.clone(),
            hash: hash.clone(),
        };
        match apply_admin(&tx, &add) {
            Ok(_) => done.users += 1,
            Err(AdminFailure::Refused(StoreError::UserExists(n))) => done.existing.push(n),
            Err(AdminFailure::Refused(e)) => return Err(e),
            Err(AdminFailure::Db(e)) => return Err(locked(e)),
        }
    }
    for rule in rules {
        match apply_admin(&tx, &AdminWrite::AclAdd(rule.clone())) {
            Ok(_) => done.rules += 1,
            Err(AdminFailure::Refused(e)) => return Err(e),
            Err(AdminFailure::Db(e)) => return Err(locked(e)),
        }
    }
    tx.commit().map_err(locked)?;
    Ok(done)
}

/// Reads a password: on a terminal, prompts twice without echo (they must match); otherwise
/// reads one line from stdin (without its line ending).
pub fn read_password(prompt: &str) -> io::Result<String> {
    if io::stdin().is_terminal() {
        let first = rpassword::prompt_password(prompt)?;
        let again = rpassword::prompt_password("Again: ")?;
        if first != again {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "the passwords do not match",
            ));
        }
        return Ok(first);
    }
    let mut line = String::new();
    io::stdin().lock().read_line(&mut line)?;
    Ok(line.trim_end_matches(['\r', '\n']).to_owned())
}

/// `2024-05-01 12:34:56Z` for milliseconds since the epoch (UTC; no time zone database).
pub fn format_time(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::format_time;

    #[test]
    fn format_time_is_utc_civil_time() {
        assert_eq!(format_time(0), "1970-01-01 00:00:00Z");
        assert_eq!(format_time(951_782_400_000), "2000-02-29 00:00:00Z");
        assert_eq!(format_time(1_714_566_896_000), "2024-05-01 12:34:56Z");
    }
}
