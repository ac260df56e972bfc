//! Who may use the control page and its API: the single `admin` account, owned by the `web`
//! thread (no lock: only that thread touches it).
//!
//! - **The password**: `--admin-password` / `MQTT5_BROKER_ADMIN_PASSWORD` when given; else the
//!   argon2id hash stored in the database (`web_admin` table); else one is generated at first
//!   start (20 characters from the OS random source, the kernel CSPRNG behind /dev/urandom),
//!   stored hashed and printed once: `admin password (generated, shown once): …`.
//! - **Sessions**: `POST /api/login` sets the cookie `mqtt5_session` (256-bit random token,
//!   `HttpOnly; SameSite=Strict; Path=/`, and `Secure` when served over HTTPS), valid for 8 h
//!   without use and 24 h at most. Each
//!   session has its own random CSRF token, which every state-changing (POST) call made with
//!   the cookie must carry in `X-CSRF-Token`.
//! - **HTTP Basic** with user `admin` for scripts: no CSRF token needed (a browser never sends
//!   it on its own: we do not challenge the page's own requests). A verified header is
//!   remembered for 60 s by a keyed 128-bit hash (never the header itself), so polling costs
//!   no argon2 verification (~5 ms) per request.
//! - **Every POST**, however authenticated, is refused when the browser says it is cross-site
//!   (`Origin` not this host, or `Sec-Fetch-Site: cross-site`).
//! - **Wrong passwords** (login or Basic) are counted per client address (per /64 for IPv6):
//!   after 3 in a row, that address must wait 1 s, then 2, 4, … up to 60 s before the next
//!   attempt is even checked (429 with `Retry-After`); nothing sleeps, so the page stays
//!   responsive for everyone else. A success clears the count; it is forgotten after 15 min.

use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::hash::BuildHasher;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use argon2::password_hash::rand_core::{OsRng, RngCore};
use serde_json::json;

use super::http::{Method, Reply, Req};
use crate::auth::{hash_password, verify_password};
use crate::login::Backoff;
use crate::store::StoreHandle;

/// The session cookie's name.
pub const COOKIE: &str = "mqtt5_session";
/// The only user name.
pub const ADMIN_USER: &str = "admin";
/// A session unused for this long ends.
pub const SESSION_IDLE: Duration = Duration::from_secs(8 * 3600);
/// A session ends this long after login whatever happens.
pub const SESSION_MAX: Duration = Duration::from_secs(24 * 3600);
/// Most sessions at once; the least recently used goes first.
const MAX_SESSIONS: usize = 256;
/// How long a verified Basic header is remembered.
const BASIC_CACHE_TTL: Duration = Duration::from_secs(60);
const MAX_BASIC_CACHE: usize = 64;
/// Length of a generated admin password.
const GENERATED_LEN: usize = 20;
/// Characters of a generated password (no 0/O, 1/l/I look-alikes).
const ALPHABET: &[u8] = b"abcdefghijkmnpqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789";

/// How a request proved it is the admin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Who {
    /// The session cookie (the page); carries the session's token.
    Session(String),
    /// HTTP Basic (scripts).
    Basic,
}

struct WebSession {
    csrf: String,
    created: Instant,
    last_seen: Instant,
}

/// Where the admin password came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PasswordSource {
    /// `--admin-password` / the environment / the config file: it cannot be changed from the page.
    Config,
    /// The database (set earlier, or generated now).
    Stored,
}

/// The admin account, its sessions and the failed-attempt counts.
pub struct AdminAuth {
    hash: String,
    source: PasswordSource,
    sessions: HashMap<String, WebSession>,
    basic_cache: HashMap<(u64, u64), Instant>,
    keys: (RandomState, RandomState),
    failures: Backoff,
}

/// `n` random bytes from the OS.
fn random_bytes(n: usize) -> Vec<u8> {
    let mut b = vec![0u8; n];
    OsRng.fill_bytes(&mut b);
    b
}

/// A random token: 32 bytes as 64 hex digits.
fn token() -> String {
    random_bytes(32)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A random password of `GENERATED_LEN` characters from `ALPHABET` (rejection sampling, so
/// every character is equally likely: about 116 bits).
pub fn generate_password() -> String {
    let limit = 256 - 256 % ALPHABET.len();
    let mut out = String::with_capacity(GENERATED_LEN);
    // Each round yields on average 56/64 of its bytes; 16 rounds of 32 cannot all fall short.
    for _ in 0..16 {
        for b in random_bytes(32) {
            if usize::from(b) < limit && out.len() < GENERATED_LEN {
                out.push(char::from(ALPHABET[usize::from(b) % ALPHABET.len()]));
            }
        }
        if out.len() == GENERATED_LEN {
            break;
        }
    }
    out
}

/// Equality that takes the same time wherever the inputs differ.
pub fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Standard base64 (with or without padding); `None` on anything else.
pub fn base64_decode(s: &str) -> Option<Vec<u8>> {
    let val = |c: u8| -> Option<u32> {
        Some(u32::from(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        }))
    };
    let s = s.trim().trim_end_matches('=').as_bytes();
    if s.len() % 4 == 1 {
        return None;
    }
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    for chunk in s.chunks(4) {
        let mut n = 0u32;
        for (i, &c) in chunk.iter().enumerate() {
            n |= val(c)? << (18 - 6 * i);
        }
        let bytes = n.to_be_bytes();
        out.extend_from_slice(&bytes[1..chunk.len()]);
    }
    Some(out)
}

impl AdminAuth {
    /// The admin password in force: `configured` when given, else the stored hash, else a newly
    /// generated password (stored hashed, printed once). Errors are for the start-up log.
    pub fn setup(configured: Option<&str>, store: &StoreHandle) -> Result<AdminAuth, String> {
        if let Some(p) = configured {
            let hash = hash_password(p).map_err(|e| format!("admin password: {e}"))?;
            return Ok(AdminAuth::new(hash, PasswordSource::Config));
        }
        let stored = store
            .admin_password_hash()
            .map_err(|e| format!("cannot read the admin password: {e}"))?;
        if let Some(hash) = stored {
            return Ok(AdminAuth::new(hash, PasswordSource::Stored));
        }
        let password = generate_password();
        let hash = hash_password(&password).map_err(|e| format!("admin password: {e}"))?;
        let kept = store
            .init_admin_password_hash(&hash)
            .map_err(|e| format!("cannot store the admin password: {e}"))?;
        if kept == hash {
            let line = format!(
                "admin password (generated, shown once): {password}  \
                 (log in as \"admin\"; set another with --admin-password or from the page)"
            );
            log::warn!("{line}");
            if !log::log_enabled!(log::Level::Warn) {
                eprintln!("{line}");
            }
        }
        Ok(AdminAuth::new(kept, PasswordSource::Stored))
    }

    /// An account with the given PHC hash.
    pub fn new(hash: String, source: PasswordSource) -> AdminAuth {
        AdminAuth {
            hash,
            source,
            sessions: HashMap::new(),
            basic_cache: HashMap::new(),
            keys: (RandomState::new(), RandomState::new()),
            failures: Backoff::default(),
        }
    }

    pub fn source(&self) -> PasswordSource {
        self.source
    }

    /// Number of live sessions (for `/metrics`).
    pub fn session_count(&self) -> usize {
        self.sessions.len()
    }

    // ------------------------------------------------------------ failed attempts

    /// `Err(429 reply)` while `peer` must wait before its next attempt.
    fn check_lockout(&mut self, peer: Option<IpAddr>, now: Instant) -> Result<(), Reply> {
        let Some(wait) = peer.and_then(|ip| self.failures.wait(ip, now)) else {
            return Ok(());
        };
        let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
        Err(Reply::error(
            429,
            &format!("too many wrong passwords: try again in {secs} s"),
        )
        .with_header("Retry-After", secs.to_string()))
    }

    fn failed(&mut self, peer: Option<IpAddr>, now: Instant) {
        let Some(ip) = peer else {
            return;
        };
        let (count, wait) = self.failures.failed(ip, now);
        log::warn!(
            "web: wrong admin password from {ip} ({count} in a row; next attempt allowed in {} s)",
            wait.as_secs()
        );
    }

    fn succeeded(&mut self, peer: Option<IpAddr>) {
        if let Some(ip) = peer {
            self.failures.succeeded(ip);
        }
    }

    /// Checks `password` for `peer`, counting failures. `Err` is the 401/429 to send.
    fn check_password(
        &mut self,
        peer: Option<IpAddr>,
        password: &str,
        now: Instant,
    ) -> Result<(), Reply> {
        self.check_lockout(peer, now)?;
        if verify_password(password, &self.hash) {
            self.succeeded(peer);
            Ok(())
        } else {
            self.failed(peer, now);
            Err(Reply::error(401, "wrong password"))
        }
    }

    // ------------------------------------------------------------ sessions

    /// Logs in with `password`: a new session, its cookie and CSRF token.
    pub fn login(&mut self, req: &Req, password: &str, now: Instant) -> Result<Reply, Reply> {
        self.check_password(req.peer, password, now)?;
        self.expire_sessions(now);
        if self.sessions.len() >= MAX_SESSIONS {
            let oldest = self
                .sessions
                .iter()
                .min_by_key(|(_, s)| s.last_seen)
                .map(|(t, _)| t.clone());
            if let Some(t) = oldest {
                self.sessions.remove(&t);
            }
        }
        let t = token();
        let csrf = token();
        self.sessions.insert(
            t.clone(),
            WebSession {
                csrf: csrf.clone(),
                created: now,
                last_seen: now,
            },
        );
        log::info!(
            "web: admin logged in from {}",
            req.peer.map_or_else(|| "?".to_string(), |p| p.to_string())
        );
        let cookie = format!(
            "{COOKIE}={t}; Path=/; HttpOnly; SameSite=Strict; Max-Age={}{}",
            SESSION_MAX.as_secs(),
            secure_attr(req)
        );
        Ok(Reply::json(&json!({
            "user": ADMIN_USER,
            "csrf_token": csrf,
        }))
        .with_header("Set-Cookie", cookie))
    }

    /// Ends the session `token` (no-op for Basic).
    pub fn logout(&mut self, req: &Req, who: &Who) -> Reply {
        if let Who::Session(t) = who {
            self.sessions.remove(t);
        }
        Reply::json(&json!({ "ok": true })).with_header(
            "Set-Cookie",
            format!(
                "{COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0{}",
                secure_attr(req)
            ),
        )
    }

    /// The CSRF token of a session.
    pub fn csrf_token(&self, who: &Who) -> Option<&str> {
        match who {
            Who::Session(t) => self.sessions.get(t).map(|s| s.csrf.as_str()),
            Who::Basic => None,
        }
    }

    fn expire_sessions(&mut self, now: Instant) {
        self.sessions.retain(|_, s| {
            now.saturating_duration_since(s.last_seen) < SESSION_IDLE
                && now.saturating_duration_since(s.created) < SESSION_MAX
        });
        self.basic_cache.retain(|_, at| *at > now);
    }

    // ------------------------------------------------------------ requests

    /// Who sent `req`, or the 401/429 reply. Basic credentials win over a cookie.
    pub fn authenticate(&mut self, req: &Req, now: Instant) -> Result<Who, Reply> {
        if let Some(value) = req.header("authorization") {
            let (scheme, rest) = value.trim().split_once(' ').unwrap_or((value, ""));
            if scheme.eq_ignore_ascii_case("basic") {
                return self.basic(req, rest.trim(), now);
            }
            return Err(unauthorized(
                req,
                "unsupported Authorization scheme: use Basic",
            ));
        }
        if let Some(t) = session_cookie(req) {
            if let Some(s) = self.sessions.get_mut(t) {
                let fresh = now.saturating_duration_since(s.last_seen) < SESSION_IDLE
                    && now.saturating_duration_since(s.created) < SESSION_MAX;
                if fresh {
                    s.last_seen = now;
                    return Ok(Who::Session(t.to_owned()));
                }
                self.sessions.remove(t);
                return Err(unauthorized(req, "the session has expired: log in again"));
            }
        }
        Err(unauthorized(req, "log in first"))
    }

    fn basic(&mut self, req: &Req, encoded: &str, now: Instant) -> Result<Who, Reply> {
        let key = (self.keys.0.hash_one(encoded), self.keys.1.hash_one(encoded));
        if self.basic_cache.get(&key).is_some_and(|until| *until > now) {
            return Ok(Who::Basic);
        }
        self.check_lockout(req.peer, now)?;
        let decoded = base64_decode(encoded).and_then(|b| String::from_utf8(b).ok());
        let Some((user, password)) = decoded.as_deref().and_then(|d| d.split_once(':')) else {
            return Err(unauthorized(req, "malformed Basic credentials"));
        };
        if !ct_eq(user.as_bytes(), ADMIN_USER.as_bytes()) {
            self.failed(req.peer, now);
            return Err(unauthorized(req, "wrong user or password"));
        }
        match self.check_password(req.peer, password, now) {
            Ok(()) => {
                if self.basic_cache.len() >= MAX_BASIC_CACHE {
                    self.expire_sessions(now);
                    if self.basic_cache.len() >= MAX_BASIC_CACHE {
                        self.basic_cache.clear();
                    }
                }
                self.basic_cache.insert(key, now + BASIC_CACHE_TTL);
                Ok(Who::Basic)
            }
            Err(r) if r.status == 429 => Err(r),
            Err(_) => Err(unauthorized(req, "wrong user or password")),
        }
    }

    /// For a POST: refuses cross-site requests, and cookie requests without the session's
    /// CSRF token in `X-CSRF-Token` (403).
    pub fn check_post(&self, req: &Req, who: &Who) -> Result<(), Reply> {
        if req.method != Method::Post {
            return Ok(());
        }
        if req
            .header("sec-fetch-site")
            .is_some_and(|s| s.eq_ignore_ascii_case("cross-site"))
        {
            return Err(Reply::error(403, "cross-site request refused"));
        }
        if let Some(origin) = req.header("origin") {
            let host = req.header("host").unwrap_or_default();
            let same = origin
                .strip_prefix("http://")
                .or_else(|| origin.strip_prefix("https://"))
                .is_some_and(|o| o.eq_ignore_ascii_case(host));
            if !same {
                return Err(Reply::error(403, "cross-site request refused"));
            }
        }
        if let Who::Session(_) = who {
            let expected = self.csrf_token(who).unwrap_or_default();
            let sent = req.header("x-csrf-token").unwrap_or_default();
            if expected.is_empty() || !ct_eq(sent.as_bytes(), expected.as_bytes()) {
                return Err(Reply::error(
                    403,
                    "missing or wrong CSRF token (X-CSRF-Token header)",
                ));
            }
        }
        Ok(())
    }

    /// Changes the stored password after checking the current one; ends every other session
    /// and forgets cached Basic credentials.
    pub fn change_password(
        &mut self,
        req: &Req,
        who: &Who,
        current: &str,
        new: &str,
        store: &StoreHandle,
        now: Instant,
    ) -> Result<(), Reply> {
        if self.source == PasswordSource::Config {
            return Err(Reply::error(
                409,
                "the admin password is set by --admin-password (or its environment variable / \
                 config line) and cannot be changed here",
            ));
        }
        if new.chars().count() < 8 {
            return Err(Reply::error(
                400,
                "the new password needs at least 8 characters",
            ));
        }
        self.check_password(req.peer, current, now)
            .map_err(|r| match r.status {
                401 => Reply::error(403, "the current password is wrong"),
                _ => r,
            })?;
        let hash = hash_password(new).map_err(|e| Reply::error(400, &e.to_string()))?;
        store.set_admin_password_hash(&hash).map_err(|e| {
            log::error!("web: cannot store the admin password: {e}");
            Reply::error(503, "the database cannot store the password now")
        })?;
        self.hash = hash;
        let keep = match who {
            Who::Session(t) => Some(t.clone()),
            Who::Basic => None,
        };
        self.sessions.retain(|t, _| Some(t) == keep.as_ref());
        self.basic_cache.clear();
        log::info!("web: admin password changed");
        Ok(())
    }
}

/// `; Secure` for a request that came over HTTPS: the browser then never sends the cookie in
/// clear.
fn secure_attr(req: &Req) -> &'static str {
    if req.secure {
        "; Secure"
    } else {
        ""
    }
}

/// The session token from the `Cookie` header(s).
fn session_cookie(req: &Req) -> Option<&str> {
    req.headers
        .iter()
        .filter(|(n, _)| n == "cookie")
        .flat_map(|(_, v)| v.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        .map(|(_, v)| v.trim())
        .filter(|v| !v.is_empty())
}

/// The 401 reply. Scripts get the `WWW-Authenticate: Basic` challenge; the page, which marks its calls
/// with `X-Requested-With`, does not, so the browser never shows its own password dialog or
/// keeps Basic credentials around.
fn unauthorized(req: &Req, message: &str) -> Reply {
    let reply = Reply::error(401, message);
    if req.header("x-requested-with").is_some() {
        reply
    } else {
        reply.with_header(
            "WWW-Authenticate",
            "Basic realm=\"mqtt5-broker admin\", charset=\"UTF-8\"",
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn auth() -> AdminAuth {
        AdminAuth::new(hash_password("pw-123").unwrap(), PasswordSource::Stored)
    }

    fn req(method: Method) -> Req {
        let mut r = Req::new(method, "/api/topics");
        r.peer = Some("192.0.2.7".parse().unwrap());
        r
    }

    fn basic(user_pw: &str) -> String {
        const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        let b = user_pw.as_bytes();
        let mut out = String::new();
        for c in b.chunks(3) {
            let n = (u32::from(c[0]) << 16)
                | (u32::from(*c.get(1).unwrap_or(&0)) << 8)
                | u32::from(*c.get(2).unwrap_or(&0));
            for i in 0..4 {
                if i <= c.len() {
                    out.push(char::from(T[((n >> (18 - 6 * i)) & 63) as usize]));
                } else {
                    out.push('=');
                }
            }
        }
        format!("Basic {out}")
    }

    #[test]
    fn base64_round_trips_what_clients_send() {
        assert_eq!(base64_decode("YWRtaW46cHc=").unwrap(), b"admin:pw");
        assert_eq!(base64_decode("YWRtaW46cHc").unwrap(), b"admin:pw");
        assert_eq!(base64_decode("").unwrap(), b"");
        assert!(base64_decode("a").is_none());
        assert!(base64_decode("@@@@").is_none());
        assert_eq!(basic("admin:pw"), "Basic YWRtaW46cHc=");
    }

    #[test]
    fn generated_passwords_are_long_random_and_from_the_alphabet() {
        let a = generate_password();
        let b = generate_password();
        assert_eq!(a.len(), GENERATED_LEN);
        assert_ne!(a, b);
        assert!(a.bytes().all(|c| ALPHABET.contains(&c)));
    }

    #[test]
    fn basic_auth_and_lockout_after_repeated_failures() {
        let mut a = auth();
        let now = Instant::now();
        let mut r = req(Method::Get);
        assert_eq!(a.authenticate(&r, now).unwrap_err().status, 401);
        r.headers
            .push(("authorization".into(), basic("admin:pw-123")));
        assert_eq!(a.authenticate(&r, now).unwrap(), Who::Basic);
        // Cached: a second call is the same.
        assert_eq!(a.authenticate(&r, now).unwrap(), Who::Basic);

        let mut bad = req(Method::Get);
        bad.headers
            .push(("authorization".into(), basic("admin:nope")));
        for _ in 0..crate::login::FREE_FAILURES {
            assert_eq!(a.authenticate(&bad, now).unwrap_err().status, 401);
        }
        // Locked out now: any uncached attempt waits; the cache still serves.
        let mut good = req(Method::Get);
        good.headers
            .push(("authorization".into(), basic("admin:pw-1234")));
        let e = a.authenticate(&good, now).unwrap_err();
        assert_eq!(e.status, 429);
        assert!(e
            .headers
            .iter()
            .any(|(n, v)| n == "Retry-After" && v == "1"));
        assert_eq!(a.authenticate(&r, now).unwrap(), Who::Basic);
        // Another address is not affected.
        let mut other = req(Method::Get);
        other.peer = Some("192.0.2.8".parse().unwrap());
        other
            .headers
            .push(("authorization".into(), basic("admin:pw-123")));
        assert_eq!(a.authenticate(&other, now).unwrap(), Who::Basic);
        // After the wait, the right password works and clears the count.
        let later = now + Duration::from_millis(1100);
        a.basic_cache.clear();
        assert_eq!(a.authenticate(&r, later).unwrap(), Who::Basic);
        assert_eq!(a.failures.tracked(), 0);
        // Wrong user name.
        let mut u = req(Method::Get);
        u.headers
            .push(("authorization".into(), basic("root:pw-123")));
        assert_eq!(a.authenticate(&u, later).unwrap_err().status, 401);
    }

    #[test]
    fn sessions_need_the_csrf_token_on_post() {
        let mut a = auth();
        let now = Instant::now();
        let r = req(Method::Post);
        assert_eq!(a.login(&r, "wrong", now).unwrap_err().status, 401);
        let ok = a.login(&r, "pw-123", now).unwrap();
        let cookie = ok
            .headers
            .iter()
            .find(|(n, _)| n == "Set-Cookie")
            .map(|(_, v)| v.clone())
            .unwrap();
        assert!(cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"));
        let token = cookie
            .split(';')
            .next()
            .and_then(|c| c.split_once('='))
            .map(|(_, v)| v.to_owned())
            .unwrap();
        let body: serde_json::Value = serde_json::from_slice(&ok.body).unwrap();
        let csrf = body["csrf_token"].as_str().unwrap().to_owned();

        let mut p = req(Method::Post);
        p.headers
            .push(("cookie".into(), format!("other=1; {COOKIE}={token}")));
        let who = a.authenticate(&p, now).unwrap();
        assert_eq!(a.check_post(&p, &who).unwrap_err().status, 403);
        p.headers.push(("x-csrf-token".into(), "0".repeat(64)));
        assert_eq!(a.check_post(&p, &who).unwrap_err().status, 403);
        p.headers.pop();
        p.headers.push(("x-csrf-token".into(), csrf.clone()));
        assert!(a.check_post(&p, &who).is_ok());
        // Cross-site, even with the token.
        p.headers
            .push(("origin".into(), "http://evil.example".into()));
        p.headers.push(("host".into(), "192.0.2.1:8082".into()));
        assert_eq!(a.check_post(&p, &who).unwrap_err().status, 403);
        p.headers[2].1 = "http://192.0.2.1:8082".into();
        assert!(a.check_post(&p, &who).is_ok());
        // Idle sessions end.
        let late = now + SESSION_IDLE + Duration::from_secs(1);
        assert_eq!(a.authenticate(&p, late).unwrap_err().status, 401);
        // Logout ends it at once.
        let who = {
            let ok = a.login(&r, "pw-123", now).unwrap();
            let c = ok.headers[0].1.split(';').next().unwrap().to_owned();
            let mut q = req(Method::Get);
            q.headers.push(("cookie".into(), c));
            let w = a.authenticate(&q, now).unwrap();
            let out = a.logout(&q, &w);
            assert!(!out.headers[0].1.contains("Secure"));
            (q, w)
        };
        assert_eq!(a.authenticate(&who.0, now).unwrap_err().status, 401);
    }

    #[test]
    fn the_cookie_is_secure_over_https() {
        let mut a = auth();
        let now = Instant::now();
        let mut r = req(Method::Post);
        r.secure = true;
        let ok = a.login(&r, "pw-123", now).unwrap();
        let cookie = &ok.headers[0].1;
        assert!(
            cookie.ends_with("; Secure") && cookie.contains("HttpOnly"),
            "{cookie}"
        );
        let token = cookie.split(';').next().unwrap().to_owned();
        let mut q = req(Method::Get);
        q.secure = true;
        q.headers.push(("cookie".into(), token));
        let w = a.authenticate(&q, now).unwrap();
        assert!(a.logout(&q, &w).headers[0].1.ends_with("; Secure"));
    }

    #[test]
    fn the_page_gets_no_basic_challenge() {
        let mut a = auth();
        let mut r = req(Method::Get);
        let e = a.authenticate(&r, Instant::now()).unwrap_err();
        assert!(e.headers.iter().any(|(n, _)| n == "WWW-Authenticate"));
        r.headers.push(("x-requested-with".into(), "fetch".into()));
        let e = a.authenticate(&r, Instant::now()).unwrap_err();
        assert!(!e.headers.iter().any(|(n, _)| n == "WWW-Authenticate"));
    }
}
