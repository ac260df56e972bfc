//! The JSON API's data shapes (DTOs), in one place so that their names stay stable (they are
//! documented in the README's "Control page and API" section): how each broker or store record
//! becomes JSON, how request bodies and paging parameters are read, and how store errors become
//! replies that name the problem without SQL or internals.
//!
//! Conventions: times are milliseconds since the Unix epoch; lists are
//! `{"items": [...], "offset", "limit", "total"}`; a payload is `payload` (text when it is
//! UTF-8, else hex) with `payload_format` `"text"` or `"hex"`.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Map, Value};

use super::http::{Reply, Req};
use crate::auth::{AclRule, BanKind};
use crate::broker::view::{Acknowledged, ClientView, QosView, SubEntry};
use crate::message::Message;
use crate::protocol::{QoS, RetainHandling};
use crate::store::{instant_to_ms, now_ms, BanRow, MessageRow, QueuedMessageRow, StoreError};
use crate::store::{TopicRow, UserRow};

/// The most rows one list call returns (`limit` is capped to it).
pub const MAX_LIMIT: usize = 1000;
/// `limit` when none is given.
pub const DEFAULT_LIMIT: usize = 100;
/// The largest `offset` accepted.
pub const MAX_OFFSET: usize = 100_000_000;
/// Payloads in lists are cut to this many bytes (`payload_len` keeps the real size).
pub const PAYLOAD_PREVIEW: usize = 4096;

// ---------------------------------------------------------------- parameters

/// A non-negative integer parameter: missing → `default`; digits → the value, capped at `max`
/// (however many digits); anything else → 400.
pub fn uint_param(req: &Req, name: &str, default: usize, max: usize) -> Result<usize, Reply> {
    let Some(v) = req.param(name) else {
        return Ok(default);
    };
    let v = v.trim();
    if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) {
        return Err(Reply::error(
            400,
            &format!("{name} must be a non-negative integer"),
        ));
    }
    Ok(v.parse::<usize>().unwrap_or(usize::MAX).min(max))
}

/// `offset` and `limit` (at least 1, at most [`MAX_LIMIT`]).
pub fn paging(req: &Req, default_limit: usize) -> Result<(usize, usize), Reply> {
    let offset = uint_param(req, "offset", 0, MAX_OFFSET)?;
    let limit = uint_param(req, "limit", default_limit, MAX_LIMIT)?.max(1);
    Ok((offset, limit))
}

/// A list reply.
pub fn list(items: Vec<Value>, offset: usize, limit: usize, total: Option<usize>) -> Value {
    json!({ "items": items, "offset": offset, "limit": limit, "total": total })
}

/// The page of `all` at `offset`/`limit`, as a list reply.
pub fn page_of(all: Vec<Value>, offset: usize, limit: usize) -> Value {
    let total = all.len();
    let items = all.into_iter().skip(offset).take(limit).collect();
    list(items, offset, limit, Some(total))
}

// ---------------------------------------------------------------- bodies

/// The body's JSON object (`{}` for an empty body).
pub fn object(req: &Req) -> Result<Map<String, Value>, Reply> {
    match req.json()? {
        Value::Null => Ok(Map::new()),
        Value::Object(m) => Ok(m),
        _ => Err(Reply::error(400, "the body must be a JSON object")),
    }
}

pub fn bad(msg: impl AsRef<str>) -> Reply {
    Reply::error(400, msg.as_ref())
}

/// A required string field.
pub fn str_field<'a>(body: &'a Map<String, Value>, name: &str) -> Result<&'a str, Reply> {
    match body.get(name) {
        Some(Value::String(s)) => Ok(s),
        Some(_) => Err(bad(format!("\"{name}\" must be a string"))),
        None => Err(bad(format!("\"{name}\" is missing"))),
    }
}

/// An optional string field (`null` = absent).
pub fn opt_str<'a>(body: &'a Map<String, Value>, name: &str) -> Result<Option<&'a str>, Reply> {
    match body.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(bad(format!("\"{name}\" must be a string"))),
    }
}

/// An optional boolean field.
pub fn bool_field(body: &Map<String, Value>, name: &str, default: bool) -> Result<bool, Reply> {
    match body.get(name) {
        None | Some(Value::Null) => Ok(default),
        Some(Value::Bool(b)) => Ok(*b),
        Some(_) => Err(bad(format!("\"{name}\" must be true or false"))),
    }
}

/// An optional integer field, within `0..=max`.
pub fn uint_field(
    body: &Map<String, Value>,
    name: &str,
    default: u64,
    max: u64,
) -> Result<u64, Reply> {
    match body.get(name) {
        None | Some(Value::Null) => Ok(default),
        Some(v) => match v.as_u64() {
            Some(n) if n <= max => Ok(n),
            _ => Err(bad(format!(
                "\"{name}\" must be an integer from 0 to {max}"
            ))),
        },
    }
}

pub fn ban_kind(s: &str) -> Result<BanKind, Reply> {
    match s {
        "client_id" => Ok(BanKind::ClientId),
        "username" => Ok(BanKind::Username),
        _ => Err(bad("\"kind\" must be \"client_id\" or \"username\"")),
    }
}

/// A hex string (spaces allowed) as bytes.
pub fn hex_decode(s: &str) -> Result<Vec<u8>, Reply> {
    let digits: Vec<u8> = s.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
    if !digits.len().is_multiple_of(2) {
        return Err(bad("the hex payload has an odd number of digits"));
    }
    digits
        .chunks(2)
        .map(|p| {
            std::str::from_utf8(p)
                .ok()
                .and_then(|t| u8::from_str_radix(t, 16).ok())
                .ok_or_else(|| bad("the hex payload has a character that is not a hex digit"))
        })
        .collect()
}

// ---------------------------------------------------------------- errors

/// A store error as a reply: the person's mistakes (a user that exists, a rule that does not…)
/// are 4xx with the store's own sentence, which names only what was sent; anything about the
/// database itself is 503 with a fixed sentence, and the detail goes to the log only.
pub fn store_error(e: &StoreError) -> Reply {
    match e {
        StoreError::UserExists(_) | StoreError::NotBanned { .. } => {
            Reply::error(409, &e.to_string())
        }
        StoreError::NoSuchUser(_) | StoreError::NoSuchRule(_) => Reply::error(404, &e.to_string()),
        StoreError::Invalid(_) | StoreError::Auth(_) => Reply::error(400, &e.to_string()),
        _ => {
            log::error!("web: database error: {e}");
            Reply::error(
                503,
                "the database cannot answer right now; see the broker log",
            )
        }
    }
}

// ---------------------------------------------------------------- payloads

/// `payload` and `payload_format` of at most `limit` bytes of `bytes`, plus whether it was cut.
/// Text when the bytes are UTF-8; when they were cut (here, or before: `cut_before`) a
/// character left incomplete at the very end does not make them binary.
pub fn payload(bytes: &[u8], limit: usize, cut_before: bool) -> (String, &'static str, bool) {
    let cut = bytes.len() > limit;
    let shown = &bytes[..bytes.len().min(limit)];
    match std::str::from_utf8(shown) {
        Ok(s) => (s.to_owned(), "text", cut),
        // An incomplete character at the very end (a truncated history row): text up to it.
        Err(e) if (cut || cut_before) && e.error_len().is_none() => (
            String::from_utf8_lossy(&shown[..e.valid_up_to()]).into_owned(),
            "text",
            true,
        ),
        Err(_) => (
            shown.iter().map(|b| format!("{b:02x}")).collect(),
            "hex",
            cut,
        ),
    }
}

fn qos_num(q: QoS) -> u8 {
    q as u8
}

fn retain_handling(r: RetainHandling) -> u8 {
    r as u8
}

fn options(e: &SubEntry) -> Value {
    json!({
        "qos": qos_num(e.options.qos),
        "no_local": e.options.no_local,
        "retain_as_published": e.options.retain_as_published,
        "retain_handling": retain_handling(e.options.retain_handling),
        "subscription_id": e.subscription_id,
    })
}

// ---------------------------------------------------------------- DTOs

pub fn topic(t: &TopicRow) -> Value {
    json!({
        "topic": t.topic,
        "message_count": t.message_count,
        "first_seen": t.first_seen,
        "last_seen": t.last_seen,
    })
}

pub fn message(m: &MessageRow) -> Value {
    let cut_before = (m.payload.len() as u64) < m.payload_len;
    let (text, format, cut) = payload(&m.payload, usize::MAX, cut_before);
    let truncated = cut || cut_before;
    json!({
        "id": m.id,
        "topic": m.topic,
        "time": m.time,
        "qos": qos_num(m.qos),
        "retain": m.retain,
        "publisher": m.publisher,
        "payload": text,
        "payload_format": format,
        "payload_len": m.payload_len,
        "truncated": truncated,
        "content_type": m.properties.content_type,
    })
}

pub fn client(c: &ClientView) -> Value {
    let connected_ms = i64::try_from(c.connected_for.as_millis()).unwrap_or(i64::MAX);
    let subs: Vec<Value> = c
        .subscriptions
        .iter()
        .map(|(filter, e)| {
            let mut o = options(e);
            o["filter"] = json!(filter);
            o
        })
        .collect();
    json!({
        "conn_id": c.conn_id,
        "client_id": c.client_id,
        "username": c.username,
        "address": c.peer.to_string(),
        "transport": c.transport,
        "certificate_cn": c.certificate_cn,
        "protocol": c.protocol.map(|p| p.name()),
        "keep_alive": c.keep_alive,
        "bridge": c.bridge,
        "connected_since": now_ms().saturating_sub(connected_ms),
        "state": if c.protocol.is_some() { "connected" } else { "connecting" },
        "subscriptions": subs,
        "queued": c.queued,
        "inflight": c.inflight,
        "dropped": c.dropped,
    })
}

/// One subscriber of a filter, from `router.entries()`.
pub fn subscriber(client_id: &str, share: Option<&str>, e: &SubEntry) -> Value {
    let mut o = options(e);
    o["client_id"] = json!(client_id);
    o["shared"] = json!(share.is_some());
    o
}

fn secs(d: Option<Duration>) -> Value {
    d.map_or(Value::Null, |d| json!(d.as_secs_f64()))
}

pub fn qos_live(q: &QosView) -> Value {
    json!({
        "client_id": q.client_id.as_ref(),
        "online": q.online,
        "persistent": q.persistent,
        "packet_id": q.packet_id,
        "topic": q.topic,
        "qos": qos_num(q.qos),
        "retain": q.retain,
        "payload_len": q.payload_len,
        "age_seconds": secs(q.age),
        "state": q.state.as_str(),
    })
}

/// A QoS 1/2 message its subscriber acknowledged.
pub fn qos_acknowledged(client_id: &str, a: &Acknowledged) -> Value {
    let state = match (a.qos, a.complete) {
        (QoS::ExactlyOnce, true) => "PUBCOMP received",
        (QoS::ExactlyOnce, false) => "PUBREC received",
        _ => "PUBACK received",
    };
    json!({
        "client_id": client_id,
        "packet_id": a.packet_id,
        "topic": a.topic,
        "qos": qos_num(a.qos),
        "retain": a.retain,
        "payload_len": a.payload_len,
        "state": state,
        "acknowledged_at": instant_to_ms(a.at),
    })
}

pub fn qos_stored(q: &QueuedMessageRow) -> Value {
    json!({
        "client_id": q.client_id,
        "seq": q.seq,
        "topic": q.topic,
        "qos": qos_num(q.qos),
        "retain": q.retain,
        "payload_len": q.payload_len,
        "state": q.state.as_str(),
        "packet_id": q.packet_id,
        "stored_at": q.stored_at,
        "expiry_at": q.expiry_at,
    })
}

pub fn retained(m: &Arc<Message>) -> Value {
    let (text, format, truncated) = payload(&m.payload, PAYLOAD_PREVIEW, false);
    json!({
        "topic": m.topic,
        "qos": qos_num(m.qos),
        "publisher": m.publisher.as_deref(),
        "received": instant_to_ms(m.received),
        "payload": text,
        "payload_format": format,
        "payload_len": m.payload.len(),
        "truncated": truncated,
    })
}

pub fn user(u: &UserRow) -> Value {
    json!({ "name": u.name, "created": u.created })
}

pub fn acl_rule(r: &AclRule) -> Value {
    json!({
        "id": r.id,
        "username": r.username,
        "pattern": r.pattern,
        "access": r.access.as_str(),
        "allow": r.allow,
    })
}

/// A bridge, as `/api/bridges` lists it.
pub fn bridge(b: &crate::bridge::status::BridgeSnapshot) -> Value {
    json!({
        "name": b.name,
        "state": b.state,
        "address": b.address,
        "since": b.since_ms,
        "why": b.why,
        "running": b.running,
        "local_client_id": b.local_client_id,
        "queued": b.queued,
        "queue_dropped": b.queue_dropped,
        "forwarded_in": b.forwarded_in,
        "forwarded_out": b.forwarded_out,
        "dropped": b.dropped,
    })
}

pub fn ban(b: &BanRow) -> Value {
    json!({ "kind": b.ban.kind.as_str(), "value": b.ban.value, "created": b.created })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::web::http::Method;

    #[test]
    fn payloads_are_text_when_utf8_else_hex() {
        let p = |b: &[u8], limit, before| payload(b, limit, before);
        assert_eq!(
            p(b"<b>hi</b>", 100, false),
            ("<b>hi</b>".into(), "text", false)
        );
        assert_eq!(
            p(&[0xff, 0x00, 0x10], 100, false),
            ("ff0010".into(), "hex", false)
        );
        assert_eq!(p(b"abcdef", 3, false), ("abc".into(), "text", true));
        // "é" is c3 a9: cut in the middle, still text; whole but ending early, binary.
        assert_eq!(p("aé".as_bytes(), 2, false), ("a".into(), "text", true));
        assert_eq!(p(&[b'a', 0xc3], 10, true), ("a".into(), "text", true));
        assert_eq!(p(&[b'a', 0xc3], 10, false), ("61c3".into(), "hex", false));
    }

    #[test]
    fn limits_are_capped_and_garbage_refused() {
        let mut r = Req::new(
            Method::Get,
            "/api/topics?limit=99999999999999999999999&offset=5",
        );
        assert_eq!(paging(&r, 100).ok(), Some((5, MAX_LIMIT)));
        r = Req::new(Method::Get, "/api/topics?limit=0");
        assert_eq!(paging(&r, 100).ok(), Some((0, 1)));
        r = Req::new(Method::Get, "/api/topics");
        assert_eq!(paging(&r, 100).ok(), Some((0, 100)));
        for bad in ["-1", "abc", "1.5", ""] {
            let r = Req::new(Method::Get, &format!("/api/topics?limit={bad}"));
            assert_eq!(paging(&r, 100).err().map(|e| e.status), Some(400), "{bad}");
        }
    }

    #[test]
    fn hex_payloads_decode() {
        assert_eq!(hex_decode("00 ff 10").ok(), Some(vec![0, 255, 16]));
        assert!(hex_decode("0").is_err());
        assert!(hex_decode("zz").is_err());
    }

    #[test]
    fn database_errors_never_reach_the_client() {
        let e = StoreError::Sqlite {
            context: "listing topics",
            detail: "near \"SELEC\": syntax error in SELEC * FROM topics".into(),
        };
        let r = store_error(&e);
        assert_eq!(r.status, 503);
        assert!(!r.text().contains("SELEC"));
        let r = store_error(&StoreError::NoSuchUser("bob".into()));
        assert_eq!((r.status, r.text().contains("bob")), (404, true));
    }
}
