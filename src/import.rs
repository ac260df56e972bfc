//! `mqtt5-broker import mosquitto`: carries a Mosquitto installation over — the accounts of its
//! `password_file` (hashes stored as they are, see [`crate::auth`]), the rules of its
//! `acl_file`, and the settings of its `mosquitto.conf` that this broker shares — and says,
//! line by line (`file:line`), what it could not carry over and why.
//!
//! Runs on the main thread of a short-lived process. Everything is read and checked first; then
//! accounts and rules go into the database in one transaction
//! ([`crate::store::admin::import`]) and the settings into a NEW config file (never over an
//! existing one), checked by the broker's own parser before it is put in place. A fatal error
//! (a file that cannot be read, the database, the output file) stores nothing. `--dry-run`
//! reads and reports only.
//!
//! # ACL mapping (Mosquitto 2.0's `acl_file`)
//! - `user NAME` then `topic [read|write|readwrite|deny] T` → a rule for NAME (no access word:
//!   readwrite); `deny` → a deny rule for read and write.
//! - `pattern [ACCESS] T` → a rule for every client (`%u` / `%c` must be whole levels, as here).
//! - `topic` lines before the first `user` line apply, in Mosquitto, to anonymous clients only:
//!   this broker's rules have no "anonymous only" form (a rule without a user applies to
//!   everyone), so those lines are reported and not carried over.
//! - Differences that remain (README "Coming from Mosquitto"): Mosquitto accepts every
//!   SUBSCRIBE and filters each message on delivery, this broker refuses a subscription that
//!   no read rule covers; in Mosquitto a `deny` line only takes precedence within its own list
//!   (a user's `topic` allow beats a `pattern deny`), here a deny rule that applies always wins.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use crate::auth::{check_stored_hash, AclAccess, AclRule, HashKind};
use crate::config;
use crate::store::admin;

/// What to import, from the command line.
#[derive(Debug, Clone, Default)]
pub struct Options {
    pub conf: Option<PathBuf>,
    pub passwd: Option<PathBuf>,
    pub acl: Option<PathBuf>,
    pub dry_run: bool,
    /// Our config file to write; `None`: print it.
    pub config_out: Option<PathBuf>,
    pub db: PathBuf,
}

/// A fatal error: nothing was stored.
#[derive(Debug)]
pub enum ImportError {
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The config file to write exists already.
    Exists(PathBuf),
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The config file made from mosquitto.conf does not pass our own parser.
    BadConfig(String),
    Store(crate::store::StoreError),
}

impl std::fmt::Display for ImportError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ImportError::Read { path, source } => {
                write!(f, "cannot read {}: {source}", path.display())
            }
            ImportError::Exists(p) => write!(
                f,
                "{} exists already: it is never replaced (give --config a new file, or none to \
                 print the settings)",
                p.display()
            ),
            ImportError::Write { path, source } => {
                write!(f, "cannot write {}: {source}", path.display())
            }
            ImportError::BadConfig(e) => write!(f, "the settings made do not check: {e}"),
            ImportError::Store(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for ImportError {}

/// Where a line came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct At {
    pub file: PathBuf,
    pub line: usize,
}

impl std::fmt::Display for At {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.file.display(), self.line)
    }
}

/// Everything read, before anything is stored.
#[derive(Debug, Default)]
pub struct Plan {
    /// (name, stored hash, kind).
    pub users: Vec<(String, String, HashKind)>,
    pub rules: Vec<AclRule>,
    /// Lines of our config file.
    pub settings: Vec<String>,
    /// What was carried over (one line each).
    pub carried: Vec<String>,
    /// What was not, and why.
    pub skipped: Vec<(At, String)>,
}

impl Plan {
    fn skip(&mut self, file: &Path, line: usize, why: impl Into<String>) {
        self.skipped.push((
            At {
                file: file.to_path_buf(),
                line,
            },
            why.into(),
        ));
    }
}

fn read(path: &Path) -> Result<String, ImportError> {
    std::fs::read_to_string(path).map_err(|source| ImportError::Read {
        path: path.to_path_buf(),
        source,
    })
}

/// Meaningful lines: (1-based number, trimmed text), comments and blank lines left out.
fn lines(text: &str) -> impl Iterator<Item = (usize, &str)> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    text.lines()
        .enumerate()
        .map(|(i, l)| (i + 1, l.trim()))
        .filter(|(_, l)| !l.is_empty() && !l.starts_with('#'))
}

/// A `mosquitto_passwd` file: `name:hash` lines.
pub fn parse_passwd(path: &Path, text: &str, plan: &mut Plan) {
    let before = plan.users.len();
    for (n, line) in lines(text) {
        let Some((name, hash)) = line.split_once(':') else {
            plan.skip(path, n, "not a name:hash line");
            continue;
        };
        if name.is_empty() || name.chars().any(char::is_control) {
            plan.skip(path, n, "the user name is empty or has control characters");
            continue;
        }
        if plan.users.iter().any(|(u, _, _)| u == name) {
            plan.skip(
                path,
                n,
                format!("user {name:?} appears twice: the first line is kept"),
            );
            continue;
        }
        match check_stored_hash(hash) {
            Ok(kind) => plan.users.push((name.to_owned(), hash.to_owned(), kind)),
            Err(_) if !hash.starts_with('$') => plan.skip(
                path,
                n,
                format!(
                    "user {name:?}: the password is not hashed (run mosquitto_passwd -U on the \
                     file first)"
                ),
            ),
            Err(why) => plan.skip(path, n, format!("user {name:?}: {why}")),
        }
    }
    for (name, _, kind) in &plan.users[before..] {
        plan.carried.push(format!(
            "user {name} ({kind}; argon2id from its next login)"
        ));
    }
}

/// A Mosquitto `acl_file`.
pub fn parse_acl(path: &Path, text: &str, plan: &mut Plan) {
    let mut user: Option<String> = None;
    for (n, line) in lines(text) {
        let (word, rest) = line.split_once(char::is_whitespace).unwrap_or((line, ""));
        let rest = rest.trim_start();
        match word {
            "user" => {
                if rest.is_empty() {
                    plan.skip(path, n, "'user' without a name");
                    // What follows would otherwise land on the previous user.
                    user = Some(String::new());
                } else {
                    user = Some(rest.to_owned());
                }
            }
            "topic" | "pattern" => {
                let (access, deny, topic) = match split_access(rest) {
                    Ok(v) => v,
                    Err(why) => {
                        plan.skip(path, n, why);
                        continue;
                    }
                };
                let username = if word == "pattern" {
                    None
                } else {
                    match &user {
                        None => {
                            plan.skip(
                                path,
                                n,
                                "a topic line before the first 'user' line applies to \
                                 anonymous clients only in Mosquitto; here a rule without a \
                                 user applies to every client, so it is not carried over (add \
                                 it with 'acl add' if every client should have it)",
                            );
                            continue;
                        }
                        Some(u) if u.is_empty() => {
                            plan.skip(path, n, "belongs to a 'user' line without a name");
                            continue;
                        }
                        Some(u) => Some(u.as_str()),
                    }
                };
                if let Err(why) = crate::auth::validate_pattern(topic) {
                    plan.skip(path, n, why);
                    continue;
                }
                if word == "topic" && (topic.contains("%u") || topic.contains("%c")) {
                    // Mosquitto substitutes only in `pattern` lines: keep it literal.
                    plan.skip(
                        path,
                        n,
                        "%u / %c in a 'topic' line are literal text in Mosquitto and here a \
                         substitution: not carried over (use 'pattern')",
                    );
                    continue;
                }
                let rule = if deny {
                    AclRule::deny(username, topic, access)
                } else {
                    AclRule::allow(username, topic, access)
                };
                plan.carried.push(format!(
                    "ACL {} {} {} {}",
                    username.unwrap_or("*"),
                    if deny { "deny" } else { "allow" },
                    access,
                    topic
                ));
                plan.rules.push(rule);
            }
            other => plan.skip(
                path,
                n,
                format!("unknown line {other:?} (expected user, topic or pattern)"),
            ),
        }
    }
}

/// `[read|write|readwrite|deny] TOPIC` → (access, deny, topic). The topic is the rest of the
/// line (Mosquitto allows spaces in it).
fn split_access(rest: &str) -> Result<(AclAccess, bool, &str), String> {
    let (first, after) = rest.split_once(char::is_whitespace).unwrap_or((rest, ""));
    let after = after.trim_start();
    let (access, deny, topic) = match first {
        "read" => (AclAccess::Read, false, after),
        "write" => (AclAccess::Write, false, after),
        "readwrite" => (AclAccess::ReadWrite, false, after),
        "deny" => (AclAccess::ReadWrite, true, after),
        _ => (AclAccess::ReadWrite, false, rest),
    };
    if topic.is_empty() {
        return Err("no topic".into());
    }
    Ok((access, deny, topic))
}

/// Mosquitto settings with the same name and meaning here.
const SAME: &[&str] = &[
    "allow_anonymous",
    "max_keepalive",
    "max_queued_messages",
    "max_queued_bytes",
    "persistent_client_expiration",
    "sys_interval",
    "retain_available",
    "queue_qos0_messages",
];
/// Keys of a listener block that this broker takes in its config file as they are.
const LISTENER_KEYS: &[&str] = &[
    "certfile",
    "keyfile",
    "cafile",
    "require_certificate",
    "use_identity_as_username",
];

/// Settings this broker has no use for, and why (the rest get a generic reason).
fn no_equivalent(key: &str) -> Option<&'static str> {
    Some(match key {
        "persistence"
        | "persistence_location"
        | "persistence_file"
        | "autosave_interval"
        | "autosave_on_changes" => {
            "sessions and messages are always kept in the SQLite database (--db)"
        }
        "log_dest"
        | "log_type"
        | "log_timestamp"
        | "log_timestamp_format"
        | "connection_messages" => {
            "the log goes to stderr (the journal under systemd); RUST_LOG sets its level"
        }
        "pid_file" | "user" => "scripts/install's systemd unit runs the broker as its own user",
        "per_listener_settings" => "settings here are for the whole broker",
        "include_dir" => "files in include_dir are not read: import them with --conf one by one",
        "bind_address" => "give the address in the listener line instead",
        _ => return None,
    })
}

/// A listener block being read.
struct Block {
    value: String,
    /// (our key, value, line).
    keys: Vec<(String, String, usize)>,
    websockets: bool,
}

/// A `mosquitto.conf`: settings into `plan.settings`; returns the `password_file` and
/// `acl_file` it names (relative paths from the conf's directory).
pub fn parse_conf(path: &Path, text: &str, plan: &mut Plan) -> (Option<PathBuf>, Option<PathBuf>) {
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut passwd = None;
    let mut acl = None;
    let mut seen: Vec<(String, usize)> = Vec::new();
    let mut blocks: Vec<Block> = Vec::new();
    let mut current: Option<Block> = None;
    for (n, line) in lines(text) {
        let (key, value) = line.split_once(char::is_whitespace).unwrap_or((line, ""));
        let value = value.trim();
        let mut take = |ours: &str, value: String, plan: &mut Plan| {
            if let Some((_, first)) = seen.iter().find(|(k, _)| k == ours) {
                plan.skip(path, n, format!("{ours} was set at line {first} already (here it is one value for the whole broker)"));
                return;
            }
            if let Err(why) = config::check_file_setting(ours, &value) {
                plan.skip(path, n, format!("{key} {value}: {why}"));
                return;
            }
            seen.push((ours.to_owned(), n));
            plan.carried.push(format!("{line} → {ours} {value}"));
            plan.settings.push(format!("{ours} {value}"));
        };
        match key {
            "listener" | "port" => {
                if let Some(b) = current.take() {
                    blocks.push(b);
                }
                if let Err(why) = config::check_file_setting("listener", value) {
                    plan.skip(path, n, format!("{key} {value}: {why}"));
                    continue;
                }
                current = Some(Block {
                    value: value.to_owned(),
                    keys: Vec::new(),
                    websockets: false,
                });
            }
            "protocol" => match current.as_mut() {
                Some(b) if value.eq_ignore_ascii_case("websockets") => b.websockets = true,
                Some(_) if value.eq_ignore_ascii_case("mqtt") => {}
                _ => plan.skip(
                    path,
                    n,
                    format!("protocol {value}: not in a listener block, or unknown"),
                ),
            },
            k if LISTENER_KEYS.contains(&k) => match current.as_mut() {
                Some(b) => b.keys.push((k.to_owned(), value.to_owned(), n)),
                None => take(k, value.to_owned(), plan),
            },
            "password_file" => passwd = Some(dir.join(value)),
            "acl_file" => acl = Some(dir.join(value)),
            "max_connections" => match value {
                "-1" => take("max_clients", "100000".into(), plan),
                v => take("max_clients", v.to_owned(), plan),
            },
            "max_packet_size" if value == "0" => plan.skip(
                path,
                n,
                "max_packet_size 0 (no limit) has no equivalent: the largest here is 268435455",
            ),
            "max_packet_size" => take("max_packet_size", value.to_owned(), plan),
            "max_inflight_messages" if value == "0" => {
                take("max_inflight_messages", "65535".into(), plan)
            }
            "max_inflight_messages" => take("max_inflight_messages", value.to_owned(), plan),
            k if SAME.contains(&k) => take(k, value.to_owned(), plan),
            k => match no_equivalent(k) {
                Some(why) => plan.skip(path, n, format!("{k}: {why}")),
                None => plan.skip(path, n, format!("{k}: this broker has no such setting")),
            },
        }
    }
    if let Some(b) = current.take() {
        blocks.push(b);
    }
    let mut tls_keys: Vec<(String, String, usize)> = Vec::new();
    for b in &blocks {
        let tls = b.keys.iter().any(|(k, _, _)| k == "certfile");
        let kind = match (b.websockets, tls) {
            (true, true) => "websockets over TLS",
            (true, false) => "websockets",
            (false, true) => "TLS",
            (false, false) => "plain",
        };
        let mut out = vec![format!("listener {}", b.value)];
        if b.websockets {
            out.push("protocol websockets".to_string());
        }
        for (k, v, line) in &b.keys {
            // Every block gets the shared value (a TLS block needs its `certfile` line to be
            // one); a different one is reported.
            let shared = match tls_keys.iter().find(|(key, _, _)| key == k) {
                Some((_, before, first)) => {
                    if before != v {
                        plan.skip(
                            path,
                            *line,
                            format!(
                                "{k} differs from line {first}: every TLS listener here shares one"
                            ),
                        );
                    }
                    before.clone()
                }
                None => {
                    tls_keys.push((k.clone(), v.clone(), *line));
                    v.clone()
                }
            };
            out.push(format!("{k} {}", file_value(k, &shared, dir)));
        }
        plan.carried.push(format!("listener {} ({kind})", b.value));
        plan.settings.extend(out);
    }
    if blocks.is_empty() {
        plan.carried.push(
            "no listener: Mosquitto 2 then listens on 127.0.0.1:1883 only → listen 127.0.0.1:1883"
                .into(),
        );
        plan.settings.push("listen 127.0.0.1:1883".into());
    }
    (passwd, acl)
}

/// Relative TLS file names are taken from the conf's directory.
fn file_value(key: &str, value: &str, dir: &Path) -> String {
    if matches!(key, "certfile" | "keyfile" | "cafile") && Path::new(value).is_relative() {
        return dir.join(value).display().to_string();
    }
    value.to_owned()
}

/// Reads, checks, stores (unless dry-run) and returns the report to print.
pub fn run(opts: &Options) -> Result<String, ImportError> {
    let mut plan = Plan::default();
    let (mut passwd, mut acl) = (None, None);
    if let Some(conf) = &opts.conf {
        let text = read(conf)?;
        (passwd, acl) = parse_conf(conf, &text, &mut plan);
    }
    // The flags win over the conf's files.
    let passwd = opts.passwd.clone().or(passwd);
    let acl = opts.acl.clone().or(acl);
    if let Some(p) = &passwd {
        parse_passwd(p, &read(p)?, &mut plan);
    }
    if let Some(p) = &acl {
        parse_acl(p, &read(p)?, &mut plan);
    }
    let settings = if opts.conf.is_some() {
        let mut text = String::from(
            "# Made by `mqtt5-broker import mosquitto` from the settings this broker shares.\n",
        );
        for l in &plan.settings {
            let _ = writeln!(text, "{l}");
        }
        Some(text)
    } else {
        None
    };

    let mut report = String::new();
    let mut outcome = String::new();
    if let (Some(text), Some(out)) = (&settings, &opts.config_out) {
        if out.exists() {
            return Err(ImportError::Exists(out.clone()));
        }
        check_settings(out, text)?;
    }
    if !opts.dry_run && (passwd.is_some() || acl.is_some()) {
        let users: Vec<(String, String)> = plan
            .users
            .iter()
            .map(|(u, h, _)| (u.clone(), h.clone()))
            .collect();
        let done = admin::import(&opts.db, &users, &plan.rules).map_err(ImportError::Store)?;
        let _ = writeln!(
            outcome,
            "stored in {}: {} users, {} ACL rules",
            opts.db.display(),
            done.users,
            done.rules
        );
        for name in done.existing {
            let _ = writeln!(
                outcome,
                "user {name} exists already in the database: kept as it was, not imported"
            );
        }
    }
    if let Some(text) = &settings {
        match (&opts.config_out, opts.dry_run) {
            (Some(out), false) => {
                write_new(out, text)?;
                let _ = writeln!(outcome, "settings written to {}", out.display());
            }
            (Some(out), true) => {
                let _ = writeln!(
                    outcome,
                    "dry run: {} not written; it would hold:",
                    out.display()
                );
                outcome.push_str(text);
            }
            (None, _) => {
                outcome
                    .push_str("settings for our config file (give --config FILE to write them):\n");
                outcome.push_str(text);
            }
        }
    }
    if opts.dry_run {
        outcome.push_str("dry run: nothing was changed\n");
    }
    let _ = writeln!(report, "carried over:");
    for c in &plan.carried {
        let _ = writeln!(report, "  {c}");
    }
    if !plan.skipped.is_empty() {
        let _ = writeln!(report, "not carried over:");
        for (at, why) in &plan.skipped {
            let _ = writeln!(report, "  {at}: {why}");
        }
    }
    report.push_str(&outcome);
    Ok(report.trim_end().to_owned())
}

/// The broker's own parser must accept the file: checked on a scratch copy beside `out`.
fn check_settings(out: &Path, text: &str) -> Result<(), ImportError> {
    let dir = out
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let scratch = tempfile_in(dir, text).map_err(|source| ImportError::Write {
        path: dir.to_path_buf(),
        source,
    })?;
    let checked = config::check_file(&scratch);
    let _ = std::fs::remove_file(&scratch);
    checked
        .map(|_| ())
        .map_err(|e| ImportError::BadConfig(e.to_string()))
}

fn tempfile_in(dir: &Path, text: &str) -> std::io::Result<PathBuf> {
    use std::io::Write;
    let path = dir.join(format!(".mqtt5-broker-import-{}.conf", std::process::id()));
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&path)?;
    f.write_all(text.as_bytes())?;
    Ok(path)
}

/// Writes `text` to `out`, which must not exist (create_new: never over a file that appeared
/// meanwhile either).
fn write_new(out: &Path, text: &str) -> Result<(), ImportError> {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(out)
        .map_err(|source| {
            if source.kind() == std::io::ErrorKind::AlreadyExists {
                ImportError::Exists(out.to_path_buf())
            } else {
                ImportError::Write {
                    path: out.to_path_buf(),
                    source,
                }
            }
        })?;
    f.write_all(text.as_bytes())
        .and_then(|()| f.sync_all())
        .map_err(|source| ImportError::Write {
            path: out.to_path_buf(),
            source,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conf(text: &str) -> (Plan, Option<PathBuf>, Option<PathBuf>) {
        let mut plan = Plan::default();
        let (p, a) = parse_conf(Path::new("/etc/mosquitto/mosquitto.conf"), text, &mut plan);
        (plan, p, a)
    }

    fn skipped_lines(plan: &Plan) -> Vec<usize> {
        plan.skipped.iter().map(|(at, _)| at.line).collect()
    }

    #[test]
    fn listener_blocks_every_one_carried_and_shared_tls_keys() {
        let (plan, passwd, acl) = conf(
            "listener 1883\n\
             listener 8883\ncertfile a.crt\nkeyfile /k/a.key\n\
             listener 1884 127.0.0.1\n\
             listener 8884\ncertfile b.crt\nkeyfile /k/a.key\n\
             listener 9001\nprotocol websockets\n\
             listener 9002\nprotocol websockets\n\
             password_file pw\nacl_file /etc/mosquitto/acl\n",
        );
        assert_eq!(
            plan.settings,
            [
                "listener 1883",
                "listener 8883",
                "certfile /etc/mosquitto/a.crt",
                "keyfile /k/a.key",
                "listener 1884 127.0.0.1",
                "listener 8884",
                // The second TLS block keeps the shared certificate (b.crt is reported).
                "certfile /etc/mosquitto/a.crt",
                "keyfile /k/a.key",
                "listener 9001",
                "protocol websockets",
                "listener 9002",
                "protocol websockets"
            ]
        );
        assert_eq!(skipped_lines(&plan), [7], "{:?}", plan.skipped);
        assert_eq!(passwd, Some(PathBuf::from("/etc/mosquitto/pw")));
        assert_eq!(acl, Some(PathBuf::from("/etc/mosquitto/acl")));
    }

    #[test]
    fn shared_settings_are_renamed_checked_and_reported() {
        let (plan, _, _) = conf(
            "port 1885\nmax_connections -1\nmax_keepalive 70000\nmax_inflight_messages 0\n\
             persistent_client_expiration 2w\nsys_interval 30\nsys_interval 40\n\
             persistence true\nmax_packet_size 0\nlog_dest syslog\nfoo bar\n",
        );
        assert_eq!(
            plan.settings,
            [
                "max_clients 100000",
                "max_inflight_messages 65535",
                "persistent_client_expiration 2w",
                "sys_interval 30",
                "listener 1885"
            ]
        );
        assert_eq!(
            skipped_lines(&plan),
            [3, 7, 8, 9, 10, 11],
            "{:?}",
            plan.skipped
        );
    }

    #[test]
    fn no_listener_means_localhost_as_in_mosquitto_2() {
        let (plan, _, _) = conf("allow_anonymous true\n");
        assert_eq!(
            plan.settings,
            ["allow_anonymous true", "listen 127.0.0.1:1883"]
        );
    }

    #[test]
    fn acl_lines_map_to_rules() {
        let mut plan = Plan::default();
        parse_acl(
            Path::new("acl"),
            "topic read anon/#\nuser alice\ntopic alice/#\ntopic deny alice/x\n\
             topic read my/%u\npattern write c/%c/#\nuser\ntopic x\n",
            &mut plan,
        );
        assert_eq!(
            plan.rules,
            [
                AclRule::allow(Some("alice"), "alice/#", AclAccess::ReadWrite),
                AclRule::deny(Some("alice"), "alice/x", AclAccess::ReadWrite),
                AclRule::allow(None, "c/%c/#", AclAccess::Write),
            ]
        );
        assert_eq!(skipped_lines(&plan), [1, 5, 7, 8], "{:?}", plan.skipped);
    }
}
