//! Passwords and access rules: argon2id hashing and verification, and [`AclSet`], the in-memory
//! snapshot of accounts, ACL rules and bans that the broker checks on CONNECT, SUBSCRIBE and
//! PUBLISH without touching the database.
//!
//! Threads: [`hash_password`] runs on the caller's thread (the admin command line, the web
//! thread, a reader thread upgrading a hash) — never on the `store` thread; [`verify_password`]
//! runs on a client's reader thread at CONNECT, through [`crate::login::Logins`]. An [`AclSet`]
//! is built by the `store` thread and shared read-only (`Arc`) with every other thread.
//!
//! # Hashing
//! argon2id (RFC 9106) from RustCrypto's `argon2` crate, stored as a PHC string
//! (`$argon2id$v=19$m=…,t=…,p=…$salt$hash`) with a 16-byte salt from the OS random source. The
//! cost parameters live in the string, so verification keeps working for old hashes when
//! [`ARGON2_M_COST_KIB`] / [`ARGON2_T_COST`] change. Comparison of the derived key is constant
//! time (done by the crate).
//!
//! # Mosquitto's hashes (carried over by `import mosquitto`)
//! A `mosquitto_passwd` file holds `$7$ITERATIONS$SALT$HASH` (PBKDF2-HMAC-SHA512, 64-byte key;
//! `mosquitto_passwd`'s default, 101 iterations) or `$6$SALT$HASH` (SHA-512 of the password
//! followed by the salt; `-H sha512`, Mosquitto 1.6's default), salt and hash in padded base64.
//! They are stored as they are and verified here natively ([`verify_password`]), with a constant
//! time comparison; [`needs_rehash`] is true for them, so the user's next successful login
//! replaces them with argon2id. They are much cheaper to check than argon2id, so a check also
//! verifies the dummy argon2id hash used for unknown users (a wrong password for an imported
//! account is not refused faster than an unknown name), and they go through the same login
//! throttles ([`crate::login::Logins`]) as any other hash.
//!
//! # ACL semantics (Mosquitto's `acl_file`, made explicit)
//! - **No rule at all** → every client may publish and subscribe to everything (like Mosquitto
//!   without an ACL file).
//! - Otherwise access is **denied unless a rule grants it**. The rules that apply to a client are
//!   those with no username (for everyone, like Mosquitto's `pattern` lines) and those whose
//!   username equals the client's (like `user` + `topic` lines).
//! - In a pattern, a level that is exactly `%u` is replaced by the client's username and one that
//!   is exactly `%c` by its client id (as in Mosquitto 2, the substitution must be the whole
//!   level). A rule using `%u` does not apply to a client without a username; a rule does not
//!   apply when the substituted value contains `/`, `+` or `#`.
//! - `deny` rules (`allow = false`) win: if an applicable deny rule for the operation matches,
//!   access is refused whatever the allow rules say (Mosquitto's `deny` access).
//! - **Publish** (`write`): the pattern, used as a topic filter, matches the topic
//!   ([`crate::protocol::topic::filter_matches`], so `#`/`+` do not match `$` topics).
//! - **Subscribe** (`read`): an allow rule's pattern must *cover* the filter — every topic the
//!   filter can match must be matched by the pattern ([`pattern_covers`]): a filter level `+`
//!   needs `+` or `#` in the pattern, a filter `#` needs `#`, a literal level needs the same
//!   literal or `+`; a pattern `#` covers everything below it. A deny rule refuses the
//!   subscription when it covers the filter. A deny rule that only overlaps a wider subscription
//!   (deny `a/secret`, subscribe `a/#`) is enforced per message by [`AclSet::can_read`], which the
//!   broker calls on delivery when [`AclSet::has_deny_rules`] is true. `$share/{group}/` is
//!   stripped first: the rules apply to the real filter.
//! - Bans are exact matches on the client id or on the username ([`AclSet::is_banned`]).

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;
use std::sync::OnceLock;

use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};

use crate::protocol::topic::filter_matches;

/// argon2id memory cost in KiB (7 MiB), with [`ARGON2_T_COST`] 5 passes: one of OWASP's
/// equivalent minimum settings for argon2id (m = 7 MiB, t = 5, p = 1), the one that needs the
/// least memory, which a Raspberry Pi has little of. At most [`crate::login::max_verifying`]
/// verifications run at once. Hashes made with smaller parameters (6 MiB, 1 pass before) still
/// verify, and are replaced at the user's next successful login ([`needs_rehash`]).
pub const ARGON2_M_COST_KIB: u32 = 7 * 1024;
/// argon2id passes over memory.
pub const ARGON2_T_COST: u32 = 5;
/// argon2id lanes. One lane: verification runs on the client's own thread.
pub const ARGON2_P_COST: u32 = 1;

/// A password could not be hashed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthError {
    /// Empty passwords are refused: they are almost always a mistake in a script.
    EmptyPassword,
    /// The hashing crate refused (bad parameters, salt generation failed).
    Hash(String),
}

impl fmt::Display for AuthError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AuthError::EmptyPassword => write!(f, "the password is empty"),
            AuthError::Hash(e) => write!(f, "cannot hash the password: {e}"),
        }
    }
}

impl std::error::Error for AuthError {}

fn hasher() -> Result<Argon2<'static>, AuthError> {
    let params = Params::new(ARGON2_M_COST_KIB, ARGON2_T_COST, ARGON2_P_COST, None)
        .map_err(|e| AuthError::Hash(e.to_string()))?;
    Ok(Argon2::new(Algorithm::Argon2id, Version::V0x13, params))
}

/// Hashes `password` with argon2id and a fresh random salt; returns the PHC string to store.
/// Costs one hash (a few ms): call it on the caller's thread, never on the `store` thread.
pub fn hash_password(password: &str) -> Result<String, AuthError> {
    if password.is_empty() {
        return Err(AuthError::EmptyPassword);
    }
    let salt = SaltString::generate(&mut OsRng);
    let hash = hasher()?
        .hash_password(password.as_bytes(), &salt)
        .map_err(|e| AuthError::Hash(e.to_string()))?;
    Ok(hash.to_string())
}

/// The most PBKDF2 iterations a `$7$` hash may ask for: a password file could otherwise make
/// every login cost seconds. Mosquitto writes 101; this is a thousand times that.
pub const MAX_PBKDF2_ITERATIONS: u32 = 101_000;

/// The kinds of stored password hash that [`verify_password`] understands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HashKind {
    /// `$argon2id$…` (ours).
    Argon2id,
    /// Mosquitto's `$7$iterations$salt$hash`.
    MosquittoPbkdf2Sha512,
    /// Mosquitto's `$6$salt$hash`.
    MosquittoSha512,
}

impl fmt::Display for HashKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            HashKind::Argon2id => "argon2id",
            HashKind::MosquittoPbkdf2Sha512 => "PBKDF2-SHA512 ($7$)",
            HashKind::MosquittoSha512 => "salted SHA-512 ($6$)",
        })
    }
}

/// A Mosquitto hash taken apart.
struct MosquittoHash {
    /// `None` for `$6$` (one SHA-512), else PBKDF2's iteration count.
    iterations: Option<u32>,
    salt: Vec<u8>,
    hash: Vec<u8>,
}

fn parse_mosquitto(stored: &str) -> Result<MosquittoHash, String> {
    use base64ct::{Base64, Encoding};
    let (iterations, rest) = if let Some(rest) = stored.strip_prefix("$7$") {
        let (n, rest) = rest
            .split_once('$')
            .ok_or("a $7$ hash needs $iterations$salt$hash")?;
        let n: u32 = n
            .parse()
            .map_err(|_| format!("the iteration count {n:?} is not a number"))?;
        if n == 0 || n > MAX_PBKDF2_ITERATIONS {
            return Err(format!(
                "{n} PBKDF2 iterations: at least 1 and at most {MAX_PBKDF2_ITERATIONS} are accepted"
            ));
        }
        (Some(n), rest)
    } else if let Some(rest) = stored.strip_prefix("$6$") {
        (None, rest)
    } else {
        return Err("not a $6$ or $7$ hash".into());
    };
    let (salt, hash) = rest
        .split_once('$')
        .ok_or("the salt and the hash must be separated by $")?;
    let salt = Base64::decode_vec(salt).map_err(|_| "the salt is not base64".to_owned())?;
    let hash = Base64::decode_vec(hash).map_err(|_| "the hash is not base64".to_owned())?;
    if salt.is_empty() {
        return Err("the salt is empty".into());
    }
    if hash.len() != 64 {
        return Err(format!(
            "the hash is {} bytes, SHA-512 makes 64",
            hash.len()
        ));
    }
    Ok(MosquittoHash {
        iterations,
        salt,
        hash,
    })
}

/// Which kind of hash `stored` is, when [`verify_password`] can check it; else why not. Used
/// by `import mosquitto` to refuse a line before anything is stored.
pub fn check_stored_hash(stored: &str) -> Result<HashKind, String> {
    if stored.starts_with("$7$") || stored.starts_with("$6$") {
        let parsed = parse_mosquitto(stored)?;
        return Ok(if parsed.iterations.is_some() {
            HashKind::MosquittoPbkdf2Sha512
        } else {
            HashKind::MosquittoSha512
        });
    }
    let parsed = PasswordHash::new(stored).map_err(|e| format!("not a PHC string: {e}"))?;
    if parsed.algorithm != argon2::ARGON2ID_IDENT {
        return Err(format!(
            "the algorithm {} is not one this broker verifies (argon2id, $6$, $7$)",
            parsed.algorithm
        ));
    }
    Params::try_from(&parsed).map_err(|e| format!("bad argon2id parameters: {e}"))?;
    if parsed.hash.is_none() {
        return Err("the argon2id string has no hash".into());
    }
    Ok(HashKind::Argon2id)
}

fn verify_mosquitto(password: &str, stored: &str) -> bool {
    use sha2::{Digest, Sha512};
    use subtle::ConstantTimeEq;
    let Ok(m) = parse_mosquitto(stored) else {
        return false;
    };
    let mut key = [0u8; 64];
    match m.iterations {
        Some(n) => {
            pbkdf2::pbkdf2_hmac::<Sha512>(password.as_bytes(), &m.salt, n, &mut key);
        }
        None => {
            let mut d = Sha512::new();
            d.update(password.as_bytes());
            d.update(&m.salt);
            key.copy_from_slice(&d.finalize());
        }
    }
    bool::from(key.ct_eq(m.hash.as_slice()))
}

/// True when `password` matches the stored `hash`: a PHC argon2id string (the parameters come
/// from the string) or a Mosquitto `$7$` / `$6$` hash. A malformed string or another algorithm
/// never matches. The key comparison is constant time.
pub fn verify_password(password: &str, hash: &str) -> bool {
    if hash.starts_with("$7$") || hash.starts_with("$6$") {
        let ok = verify_mosquitto(password, hash);
        // A Mosquitto hash takes well under a millisecond, an unknown user costs an argon2id
        // check of the dummy hash: without this one too, a fast refusal would tell that the
        // account exists. Paid until the account's first login replaces its hash.
        let _ = verify_argon2id(password, dummy_hash());
        return ok;
    }
    verify_argon2id(password, hash)
}

fn verify_argon2id(password: &str, hash: &str) -> bool {
    let Ok(parsed) = PasswordHash::new(hash) else {
        return false;
    };
    if parsed.algorithm != argon2::ARGON2ID_IDENT {
        return false;
    }
    Argon2::default()
        .verify_password(password.as_bytes(), &parsed)
        .is_ok()
}

/// True when the PHC string `hash` was made with weaker parameters than [`hash_password`] uses
/// now (or is not one of ours, as Mosquitto's `$6$` / `$7$`): the caller re-hashes the password
/// once it has verified it.
pub fn needs_rehash(hash: &str) -> bool {
    if !hash.starts_with("$argon2id$") {
        return true;
    }
    let Ok(parsed) = PasswordHash::new(hash) else {
        return true;
    };
    let Ok(params) = Params::try_from(&parsed) else {
        return true;
    };
    parsed.algorithm != argon2::ARGON2ID_IDENT
        || params.m_cost() < ARGON2_M_COST_KIB
        || params.t_cost() < ARGON2_T_COST
}

/// What a rule grants or refuses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AclAccess {
    /// Subscribe and receive.
    Read,
    /// Publish.
    Write,
    ReadWrite,
}

impl AclAccess {
    /// The name stored in the database and shown to people.
    pub fn as_str(self) -> &'static str {
        match self {
            AclAccess::Read => "read",
            AclAccess::Write => "write",
            AclAccess::ReadWrite => "readwrite",
        }
    }

    fn reads(self) -> bool {
        matches!(self, AclAccess::Read | AclAccess::ReadWrite)
    }

    fn writes(self) -> bool {
        matches!(self, AclAccess::Write | AclAccess::ReadWrite)
    }
}

impl FromStr for AclAccess {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "read" => Ok(AclAccess::Read),
            "write" => Ok(AclAccess::Write),
            "readwrite" => Ok(AclAccess::ReadWrite),
            other => Err(format!(
                "unknown access {other:?} (expected read, write or readwrite)"
            )),
        }
    }
}

impl fmt::Display for AclAccess {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One ACL rule. `id` is 0 for a rule not yet stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AclRule {
    pub id: i64,
    /// `None`: applies to every client (Mosquitto's `pattern`); else only to this username.
    pub username: Option<String>,
    /// A topic filter; whole levels `%u` / `%c` are substituted.
    pub pattern: String,
    pub access: AclAccess,
    /// `false` makes it a deny rule, which wins over allow rules.
    pub allow: bool,
}

impl AclRule {
    /// A new allow rule (not yet stored).
    pub fn allow(username: Option<&str>, pattern: &str, access: AclAccess) -> AclRule {
        AclRule {
            id: 0,
            username: username.map(str::to_owned),
            pattern: pattern.to_owned(),
            access,
            allow: true,
        }
    }

    /// A new deny rule (not yet stored).
    pub fn deny(username: Option<&str>, pattern: &str, access: AclAccess) -> AclRule {
        AclRule {
            allow: false,
            ..AclRule::allow(username, pattern, access)
        }
    }

    fn applies_to(&self, username: Option<&str>) -> bool {
        match &self.username {
            None => true,
            Some(u) => username == Some(u.as_str()),
        }
    }

    /// The pattern with `%u` / `%c` levels substituted, or `None` when it cannot apply.
    fn resolved(&self, username: Option<&str>, client_id: &str) -> Option<String> {
        if !self.pattern.contains('%') {
            return Some(self.pattern.clone());
        }
        let mut out = String::with_capacity(self.pattern.len() + 16);
        for (i, level) in self.pattern.split('/').enumerate() {
            if i > 0 {
                out.push('/');
            }
            let value = match level {
                "%u" => username?,
                "%c" => client_id,
                other => other,
            };
            if (level == "%u" || level == "%c") && value.contains(['/', '+', '#']) {
                return None;
            }
            out.push_str(value);
        }
        Some(out)
    }
}

/// Checks that a rule pattern is a valid topic filter: not empty, no NUL, `+` and `#` only as
/// whole levels, `#` only last.
pub fn validate_pattern(pattern: &str) -> Result<(), String> {
    if pattern.is_empty() {
        return Err("the topic pattern is empty".into());
    }
    if pattern.contains('\0') {
        return Err("the topic pattern contains NUL".into());
    }
    let levels: Vec<&str> = pattern.split('/').collect();
    for (i, level) in levels.iter().enumerate() {
        if level.contains('#') && (*level != "#" || i + 1 != levels.len()) {
            return Err(format!(
                "{pattern:?}: '#' must be a whole level and the last one"
            ));
        }
        if level.contains('+') && *level != "+" {
            return Err(format!("{pattern:?}: '+' must be a whole level"));
        }
    }
    Ok(())
}

/// True when every topic that `filter` can match is also matched by `pattern` (both topic
/// filters). Used for subscriptions; see the module docs.
pub fn pattern_covers(pattern: &str, filter: &str) -> bool {
    if filter.starts_with('$') && (pattern.starts_with('+') || pattern.starts_with('#')) {
        return false; // MQTT-4.7.2-1: wildcards at the first level never match `$` topics
    }
    let mut p = pattern.split('/');
    let mut f = filter.split('/');
    loop {
        match (p.next(), f.next()) {
            (Some("#"), _) => return true,
            (Some("+"), Some(fl)) if fl != "#" => {}
            (Some(pl), Some(fl)) if pl == fl && fl != "+" && fl != "#" => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

/// What a ban matches on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BanKind {
    ClientId,
    Username,
}

impl BanKind {
    /// The name stored in the database.
    pub fn as_str(self) -> &'static str {
        match self {
            BanKind::ClientId => "client_id",
            BanKind::Username => "username",
        }
    }
}

impl FromStr for BanKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "client_id" | "client-id" | "client" => Ok(BanKind::ClientId),
            "username" | "user" => Ok(BanKind::Username),
            other => Err(format!(
                "unknown ban kind {other:?} (expected client_id or username)"
            )),
        }
    }
}

impl fmt::Display for BanKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A ban on a client id or a username (exact match).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Ban {
    pub kind: BanKind,
    pub value: String,
}

/// The in-memory snapshot of accounts (name → PHC hash), ACL rules and bans. Cheap to share by
/// `Arc`; the store rebuilds it after every change (see `StoreHandle::acl`).
#[derive(Debug, Clone, Default)]
pub struct AclSet {
    rules: Vec<AclRule>,
    bans: Vec<Ban>,
    users: HashMap<String, String>,
}

#[derive(Clone, Copy)]
enum Op {
    Read,
    Write,
}

/// A hash of a password no one knows, verified when the username is unknown so that the answer
/// takes as long as for a known user.
pub(crate) fn dummy_hash() -> &'static str {
    static DUMMY: OnceLock<String> = OnceLock::new();
    DUMMY.get_or_init(|| hash_password("no such user: constant-time filler").unwrap_or_default())
}

impl AclSet {
    pub fn new(rules: Vec<AclRule>, bans: Vec<Ban>, users: HashMap<String, String>) -> AclSet {
        AclSet { rules, bans, users }
    }

    pub fn rules(&self) -> &[AclRule] {
        &self.rules
    }

    pub fn bans(&self) -> &[Ban] {
        &self.bans
    }

    /// False when no rule exists, which means everything is allowed.
    pub fn has_rules(&self) -> bool {
        !self.rules.is_empty()
    }

    /// True when some deny rule exists: then the broker should check [`AclSet::can_read`] on
    /// each delivery, because a deny rule may cut into a wider subscription.
    pub fn has_deny_rules(&self) -> bool {
        self.rules.iter().any(|r| !r.allow)
    }

    /// Number of accounts.
    pub fn user_count(&self) -> usize {
        self.users.len()
    }

    pub fn has_user(&self, name: &str) -> bool {
        self.users.contains_key(name)
    }

    /// The stored PHC hash of `name`'s password.
    pub fn password_hash(&self, name: &str) -> Option<&str> {
        self.users.get(name).map(String::as_str)
    }

    /// May this client publish to `topic`?
    pub fn can_publish(&self, username: Option<&str>, client_id: &str, topic: &str) -> bool {
        self.check(Op::Write, username, client_id, |p| filter_matches(p, topic))
    }

    /// May this client receive a message on `topic`? (Per-delivery check.)
    pub fn can_read(&self, username: Option<&str>, client_id: &str, topic: &str) -> bool {
        self.check(Op::Read, username, client_id, |p| filter_matches(p, topic))
    }

    /// May this client subscribe to `filter`? `$share/{group}/` is stripped first.
    pub fn can_subscribe(&self, username: Option<&str>, client_id: &str, filter: &str) -> bool {
        let filter = strip_share(filter);
        self.check(Op::Read, username, client_id, |p| pattern_covers(p, filter))
    }

    /// Is this client id or username banned?
    pub fn is_banned(&self, client_id: &str, username: Option<&str>) -> bool {
        self.bans.iter().any(|b| match b.kind {
            BanKind::ClientId => b.value == client_id,
            BanKind::Username => username == Some(b.value.as_str()),
        })
    }

    fn check(
        &self,
        op: Op,
        username: Option<&str>,
        client_id: &str,
        matches: impl Fn(&str) -> bool,
    ) -> bool {
        if self.rules.is_empty() {
            return true;
        }
        let mut allowed = false;
        for rule in &self.rules {
            let grants = match op {
                Op::Read => rule.access.reads(),
                Op::Write => rule.access.writes(),
            };
            if !grants || !rule.applies_to(username) || (rule.allow && allowed) {
                continue;
            }
            let Some(pattern) = rule.resolved(username, client_id) else {
                continue;
            };
            if matches(&pattern) {
                if !rule.allow {
                    return false;
                }
                allowed = true;
            }
        }
        allowed
    }
}

/// `$share/{group}/{filter}` → `{filter}`; anything else unchanged.
fn strip_share(filter: &str) -> &str {
    filter
        .strip_prefix("$share/")
        .and_then(|rest| rest.split_once('/'))
        .map_or(filter, |(_, f)| f)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(rules: Vec<AclRule>) -> AclSet {
        AclSet::new(rules, Vec::new(), HashMap::new())
    }

    #[test]
    fn hash_and_verify_round_trip_and_wrong_password_fails() {
        let h = hash_password("s3cret").unwrap();
        assert!(h.starts_with("$argon2id$v=19$m=7168,t=5,p=1$"), "{h}");
        assert!(!needs_rehash(&h));
        assert!(verify_password("s3cret", &h));
        assert!(!verify_password("s3creT", &h));
        assert!(!verify_password("", &h));
        assert!(!verify_password("s3cret", "not a phc string"));
        assert_ne!(h, hash_password("s3cret").unwrap(), "salts differ");
        assert_eq!(hash_password(""), Err(AuthError::EmptyPassword));
    }

    #[test]
    fn hashes_with_the_old_parameters_verify_and_need_a_rehash() {
        let params = Params::new(6 * 1024, 1, 1, None).unwrap();
        let old = Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
            .hash_password(b"pw", &SaltString::generate(&mut OsRng))
            .unwrap()
            .to_string();
        assert!(old.starts_with("$argon2id$v=19$m=6144,t=1,p=1$"), "{old}");
        assert!(verify_password("pw", &old));
        assert!(needs_rehash(&old));
        assert!(needs_rehash("not a phc string"));
    }

    /// Lines written by Debian bookworm's `mosquitto_passwd` 2.0.11 (`-H sha512-pbkdf2`, its
    /// default, and `-H sha512`) for the passwords `secret1` and `secret2`.
    const MOSQ_PBKDF2: &str = "$7$101$r3rJbtKJcCWNiHa0$m5xFsHslIinhwNdyoaKzwdcglu1Hyyj7z0JKGflEUSC+UK3+XrzAaIP1iPyi4iS2AvxMtmMmIpCNeU1d8HajOA==";
    const MOSQ_SHA512: &str = "$6$0GV8eh9EgQ9siNLX$SnfthI6DZjM4X8Oou8luufPLAuFDmpbtqZQXcID04IyLFXuPVaMEramaeqHTjrGIRue0X43Ka1+2mDqzQe7k1w==";

    #[test]
    fn mosquitto_hashes_verify_natively_and_need_a_rehash() {
        assert!(verify_password("secret1", MOSQ_PBKDF2));
        assert!(!verify_password("secret2", MOSQ_PBKDF2));
        assert!(!verify_password("", MOSQ_PBKDF2));
        assert!(verify_password("secret2", MOSQ_SHA512));
        assert!(!verify_password("secret1", MOSQ_SHA512));
        assert!(needs_rehash(MOSQ_PBKDF2));
        assert!(needs_rehash(MOSQ_SHA512));
        assert_eq!(
            check_stored_hash(MOSQ_PBKDF2),
            Ok(HashKind::MosquittoPbkdf2Sha512)
        );
        assert_eq!(
            check_stored_hash(MOSQ_SHA512),
            Ok(HashKind::MosquittoSha512)
        );
        let ours = hash_password("x").unwrap();
        assert_eq!(check_stored_hash(&ours), Ok(HashKind::Argon2id));
    }

    #[test]
    fn malformed_mosquitto_hashes_are_refused_and_never_verify() {
        let too_many = MOSQ_PBKDF2.replacen("$101$", "$999999999$", 1);
        let truncated = &MOSQ_SHA512[..MOSQ_SHA512.len() - 8];
        for bad in [
            too_many.as_str(),
            "$7$0$r3rJbtKJcCWNiHa0$m5xF",
            "$7$x$r3rJbtKJcCWNiHa0$m5xF",
            "$6$only-one-part",
            "$6$!!!$SnfthI6DZjM4",
            truncated,
            "$2y$10$bcrypt",
            "plain text",
        ] {
            assert!(check_stored_hash(bad).is_err(), "{bad}");
            assert!(!verify_password("secret2", bad), "{bad}");
        }
    }

    #[test]
    fn no_rules_allows_everything() {
        let acl = set(Vec::new());
        assert!(acl.can_publish(None, "c", "a/b"));
        assert!(acl.can_subscribe(None, "c", "#"));
    }

    #[test]
    fn any_rule_makes_default_deny() {
        let acl = set(vec![AclRule::allow(
            Some("alice"),
            "a/#",
            AclAccess::ReadWrite,
        )]);
        assert!(acl.can_publish(Some("alice"), "c", "a/b"));
        assert!(!acl.can_publish(Some("bob"), "c", "a/b"));
        assert!(!acl.can_publish(None, "c", "a/b"));
        assert!(!acl.can_publish(Some("alice"), "c", "b"));
    }

    #[test]
    fn read_and_write_are_separate() {
        let acl = set(vec![
            AclRule::allow(None, "r/#", AclAccess::Read),
            AclRule::allow(None, "w/#", AclAccess::Write),
        ]);
        assert!(acl.can_subscribe(None, "c", "r/x"));
        assert!(!acl.can_publish(None, "c", "r/x"));
        assert!(acl.can_publish(None, "c", "w/x"));
        assert!(!acl.can_subscribe(None, "c", "w/x"));
    }

    #[test]
    fn percent_u_and_c_are_substituted_as_whole_levels() {
        let acl = set(vec![
            AclRule::allow(None, "users/%u/#", AclAccess::ReadWrite),
            AclRule::allow(None, "clients/%c/+", AclAccess::Write),
            AclRule::allow(None, "x%u/y", AclAccess::Write),
        ]);
        assert!(acl.can_publish(Some("alice"), "c1", "users/alice/status"));
        assert!(!acl.can_publish(Some("alice"), "c1", "users/bob/status"));
        assert!(
            !acl.can_publish(None, "c1", "users/alice/status"),
            "%u needs a username"
        );
        assert!(acl.can_publish(None, "c1", "clients/c1/temp"));
        assert!(!acl.can_publish(None, "c2", "clients/c1/temp"));
        assert!(
            acl.can_publish(None, "c1", "x%u/y"),
            "not a whole level: literal"
        );
        assert!(!acl.can_publish(Some("alice"), "c1", "xalice/y"));
        assert!(acl.can_subscribe(Some("alice"), "c1", "users/alice/+"));
        assert!(acl.can_subscribe(Some("alice"), "c1", "users/alice/#"));
        assert!(!acl.can_subscribe(Some("alice"), "c1", "users/+/x"));
    }

    #[test]
    fn substituted_values_with_wildcards_or_slashes_never_match() {
        let acl = set(vec![AclRule::allow(
            None,
            "users/%u/#",
            AclAccess::ReadWrite,
        )]);
        assert!(!acl.can_publish(Some("a/b"), "c", "users/a/b/x"));
        assert!(!acl.can_subscribe(Some("+"), "c", "users/+/x"));
        assert!(!acl.can_subscribe(Some("#"), "c", "users/#"));
    }

    #[test]
    fn subscription_must_be_covered_by_a_read_pattern() {
        let acl = set(vec![
            AclRule::allow(None, "a/+/c", AclAccess::Read),
            AclRule::allow(None, "b/#", AclAccess::Read),
        ]);
        assert!(acl.can_subscribe(None, "c", "a/x/c"));
        assert!(acl.can_subscribe(None, "c", "a/+/c"));
        assert!(!acl.can_subscribe(None, "c", "a/#"));
        assert!(!acl.can_subscribe(None, "c", "a/+/+"));
        assert!(acl.can_subscribe(None, "c", "b"));
        assert!(acl.can_subscribe(None, "c", "b/#"));
        assert!(acl.can_subscribe(None, "c", "b/+/z/#"));
        assert!(!acl.can_subscribe(None, "c", "#"));
        assert!(!acl.can_subscribe(None, "c", "+/x/c"));
        assert!(acl.can_subscribe(None, "c", "$share/g/b/1"));
        assert!(!acl.can_subscribe(None, "c", "$share/g/z"));
    }

    #[test]
    fn pattern_covers_table() {
        for (p, f, want) in [
            ("#", "#", true),
            ("#", "a/+/#", true),
            ("#", "$SYS/x", false),
            ("$SYS/#", "$SYS/broker/+", true),
            ("+", "a", true),
            ("+", "+", true),
            ("+", "#", false),
            ("+/#", "#", false),
            ("a/#", "a", true),
            ("a/+/#", "a/#", false),
            ("a/b", "a/b", true),
            ("a/b", "a/+", false),
            ("a/+", "a/b/c", false),
            ("a/b/c", "a/b", false),
        ] {
            assert_eq!(pattern_covers(p, f), want, "{p} covers {f}");
        }
    }

    #[test]
    fn deny_rules_win_over_allow_rules() {
        let acl = set(vec![
            AclRule::allow(None, "#", AclAccess::ReadWrite),
            AclRule::deny(Some("bob"), "secret/#", AclAccess::ReadWrite),
            AclRule::deny(None, "ro/#", AclAccess::Write),
        ]);
        assert!(acl.can_publish(Some("alice"), "c", "secret/x"));
        assert!(!acl.can_publish(Some("bob"), "c", "secret/x"));
        assert!(!acl.can_subscribe(Some("bob"), "c", "secret/+"));
        assert!(
            acl.can_subscribe(Some("bob"), "c", "#"),
            "overlap only: checked per message"
        );
        assert!(!acl.can_read(Some("bob"), "c", "secret/x"));
        assert!(acl.can_read(Some("bob"), "c", "public/x"));
        assert!(!acl.can_publish(None, "c", "ro/x"));
        assert!(acl.can_subscribe(None, "c", "ro/x"));
        assert!(acl.has_deny_rules());
    }

    #[test]
    fn wildcard_rules_do_not_reach_dollar_topics() {
        let acl = set(vec![AclRule::allow(None, "#", AclAccess::ReadWrite)]);
        assert!(!acl.can_publish(None, "c", "$SYS/x"));
        assert!(!acl.can_subscribe(None, "c", "$SYS/#"));
    }

    #[test]
    fn bans_match_client_id_or_username_exactly() {
        let acl = AclSet::new(
            Vec::new(),
            vec![
                Ban {
                    kind: BanKind::ClientId,
                    value: "evil".into(),
                },
                Ban {
                    kind: BanKind::Username,
                    value: "mallory".into(),
                },
            ],
            HashMap::new(),
        );
        assert!(acl.is_banned("evil", None));
        assert!(!acl.is_banned("evil2", None));
        assert!(acl.is_banned("c", Some("mallory")));
        assert!(
            !acl.is_banned("mallory", None),
            "a client id is not a username"
        );
        assert!(!acl.is_banned("c", Some("alice")));
    }

    #[test]
    fn validate_pattern_rejects_misplaced_wildcards() {
        assert!(validate_pattern("a/+/#").is_ok());
        assert!(validate_pattern("users/%u/#").is_ok());
        assert!(validate_pattern("").is_err());
        assert!(validate_pattern("a/#/b").is_err());
        assert!(validate_pattern("a/b#").is_err());
        assert!(validate_pattern("a+/b").is_err());
    }

    #[test]
    fn access_and_ban_kind_parse() {
        assert_eq!("readwrite".parse::<AclAccess>(), Ok(AclAccess::ReadWrite));
        assert!("rw".parse::<AclAccess>().is_err());
        assert_eq!("client_id".parse::<BanKind>(), Ok(BanKind::ClientId));
        assert_eq!("username".parse::<BanKind>(), Ok(BanKind::Username));
    }
}
