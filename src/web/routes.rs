//! Every URL of the control page and its API, as plain functions from a request to a reply,
//! run on the `web` thread with its [`Ctx`].
//!
//! Public (no login): the page's static files (`/`, `/app.js`, `/style.css`: the same for
//! everyone, no data in them), `POST /api/login`, and `GET /api/status` — counters only, never
//! a string that came from a client, kept open for health checks and monitoring scripts (the
//! same figures every client may read from `$SYS/broker/...`). Everything else needs the admin
//! (see [`super::auth`]): 401 without, 405 for a known path with the wrong method, 404 for an
//! unknown path; every POST passes the cross-site and CSRF checks first.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::api::{self, bad, store_error};
use super::auth::{AdminAuth, PasswordSource, Who, ADMIN_USER};
use super::http::{Method, Reply, Req};
use super::metrics::{self, Rates};
use crate::auth::{AclAccess, AclRule, BanKind};
use crate::broker::server::Server;
use crate::broker::stats::Stats;
use crate::broker::view;
use crate::message::Message;
use crate::protocol::topic::valid_topic_name;
use crate::protocol::{Properties, QoS, ReasonCode};

/// How long an admin action waits for the database to commit its change.
const COMMIT_WAIT: Duration = Duration::from_secs(5);

/// What the `web` thread keeps between requests.
pub struct Ctx {
    pub server: Arc<Server>,
    pub auth: AdminAuth,
    pub rates: Rates,
    /// When the MQTT listener last started (`None` while stopped).
    pub listener_since: Option<Instant>,
    /// The HTTP connections' bounds and counts.
    pub http: Arc<super::conn::Listener>,
    /// Re-reads the config file (the "Reload config" button).
    pub reloader: Arc<crate::reload::Reloader>,
    /// The one backup download at a time.
    pub backups: super::download::Slot,
}

type Handler = fn(&mut Ctx, &Req, &Who) -> Reply;

/// The routes that need the admin.
const ROUTES: &[(Method, &str, Handler)] = &[
    (Method::Get, "/api/session", session),
    (Method::Post, "/api/logout", logout),
    (Method::Post, "/api/admin/password", admin_password),
    (Method::Post, "/api/server/start", server_start),
    (Method::Post, "/api/server/stop", server_stop),
    (Method::Post, "/api/config/reload", config_reload),
    (Method::Get, "/api/backup", backup_download),
    (Method::Get, "/api/rates", rates),
    (Method::Get, "/api/topics", topics),
    (Method::Get, "/api/messages", messages),
    (Method::Get, "/api/clients", clients),
    (Method::Post, "/api/clients/disconnect", disconnect),
    (Method::Get, "/api/subscriptions", subscriptions),
    (Method::Get, "/api/qos-messages", qos_messages),
    (Method::Get, "/api/retained", retained),
    (Method::Post, "/api/retained/delete", retained_delete),
    (Method::Get, "/api/users", users),
    (Method::Post, "/api/users", user_add),
    (Method::Post, "/api/users/delete", user_del),
    (Method::Post, "/api/users/password", user_passwd),
    (Method::Get, "/api/acl", acl),
    (Method::Post, "/api/acl", acl_add),
    (Method::Post, "/api/acl/delete", acl_del),
    (Method::Get, "/api/bans", bans),
    (Method::Post, "/api/bans", ban_add),
    (Method::Post, "/api/bans/delete", ban_del),
    (Method::Post, "/api/publish", publish),
    (Method::Get, "/api/bridges", bridges),
    (Method::Post, "/api/bridges/start", bridge_start),
    (Method::Post, "/api/bridges/stop", bridge_stop),
    (Method::Get, "/metrics", metrics_text),
];

const INDEX_HTML: &str = include_str!("../../assets/index.html");
const APP_JS: &str = include_str!("../../assets/app.js");
const STYLE_CSS: &str = include_str!("../../assets/style.css");

fn asset(body: &'static str, content_type: &'static str) -> Reply {
    Reply::new(200, content_type, body).with_header("Cache-Control", "no-cache")
}

/// Where the body of a request comes from: called only once the request may be served (see
/// [`super::http::PREREAD_BODY`]).
pub type BodySource<'a> = dyn FnMut() -> Result<Vec<u8>, Reply> + 'a;

/// Answers one request; `body` fills `req.body` once the request is allowed.
pub fn handle(ctx: &mut Ctx, req: &mut Req, now: Instant, body: &mut BodySource<'_>) -> Reply {
    match (req.method, req.path.as_str()) {
        (Method::Get, "/" | "/index.html") => return asset(INDEX_HTML, "text/html; charset=utf-8"),
        (Method::Get, "/app.js") => return asset(APP_JS, "text/javascript; charset=utf-8"),
        (Method::Get, "/style.css") => return asset(STYLE_CSS, "text/css; charset=utf-8"),
        (Method::Get, "/api/status") => return Reply::json(&status(ctx)),
        (Method::Post, "/api/login") => {
            if !req.small_body {
                return Reply::error(413, "request body too large");
            }
            match body() {
                Ok(b) => req.body = b,
                Err(reply) => return reply,
            }
            return login(ctx, req, now);
        }
        _ => {}
    }
    let who = match ctx.auth.authenticate(req, now) {
        Ok(w) => w,
        Err(reply) => return reply,
    };
    let mut known = false;
    for (method, path, handler) in ROUTES {
        if *path != req.path {
            continue;
        }
        known = true;
        if *method == req.method {
            if let Err(reply) = ctx.auth.check_post(req, &who) {
                return reply;
            }
            match body() {
                Ok(b) => req.body = b,
                Err(reply) => return reply,
            }
            return handler(ctx, req, &who);
        }
    }
    if known {
        let allow: Vec<&str> = ROUTES
            .iter()
            .filter(|(_, p, _)| *p == req.path)
            .map(|(m, _, _)| if *m == Method::Get { "GET" } else { "POST" })
            .collect();
        return Reply::error(405, "method not allowed").with_header("Allow", allow.join(", "));
    }
    Reply::error(404, "not found")
}

// ---------------------------------------------------------------- status and session

/// `GET /api/status`.
pub fn status(ctx: &Ctx) -> Value {
    let server = &ctx.server;
    let b = server.broker();
    let s = &b.stats;
    let (msgs_in, msgs_out) = ctx.rates.current();
    let store = b.store.stats();
    let running = server.addr();
    json!({
        "running": running.is_some(),
        "mqtt_address": running.map(|a| a.to_string()),
        // Every MQTT listener as bound (port 0 resolved); empty while stopped.
        "listeners": server
            .listeners()
            .into_iter()
            .map(|(t, a)| json!({ "transport": t.name(), "address": a.to_string() }))
            .collect::<Vec<Value>>(),
        "uptime_seconds": b.started.elapsed().as_secs(),
        "running_seconds": running.and(ctx.listener_since).map(|t| t.elapsed().as_secs()),
        "clients_connected": b.connection_count(),
        "pending_connections": b.pending_count(),
        "pending_closed": Stats::get(&s.pending_closed),
        "http_connections": ctx.http.open(),
        "http_closed": ctx.http.closed.load(Ordering::Relaxed),
        "sessions": b.session_count(),
        "subscriptions": b.router.len(),
        // As the Retained tab counts them, without the broker's own `$SYS/` topics.
        "retained_messages": b.retained.client_len(),
        "messages_received": Stats::get(&s.messages_received),
        "messages_sent": Stats::get(&s.messages_sent),
        "messages_dropped": s.dropped.load(Ordering::Relaxed),
        "clients_not_reading_disconnected": Stats::get(&s.not_reading_disconnects),
        "messages_in_per_second": (msgs_in * 10.0).round() / 10.0,
        "messages_out_per_second": (msgs_out * 10.0).round() / 10.0,
        "bytes_received": Stats::get(&s.bytes_received),
        "bytes_sent": Stats::get(&s.bytes_sent),
        "db_bytes": store.db_bytes,
        "store_pending_writes": store.pending,
        "history_shed": store.shed,
        "history_topics": store.history_topics,
        "history_topics_forgotten": store.history_topics_forgotten,
        // The database cannot commit (disk full, max size, read-only): since when and why.
        // Null again once a commit succeeds, with the backlog saved.
        "store_failing_since": store.failing_since_ms,
        "store_error": store.last_error,
        "store_refused_writes": store.refused,
        "messages_not_stored": Stats::get(&s.unstored),
        "version": crate::broker::sys::VERSION,
    })
}

fn login(ctx: &mut Ctx, req: &Req, now: Instant) -> Reply {
    // Cross-site checks only: there is no session (and no CSRF token) yet.
    if let Err(r) = ctx.auth.check_post(req, &Who::Basic) {
        return r;
    }
    let body = match api::object(req) {
        Ok(b) => b,
        Err(r) => return r,
    };
    let password = match api::str_field(&body, "password") {
        Ok(p) => p,
        Err(r) => return r,
    };
    match ctx.auth.login(req, password, now) {
        Ok(r) | Err(r) => r,
    }
}

fn session(ctx: &mut Ctx, _req: &Req, who: &Who) -> Reply {
    Reply::json(&json!({
        "user": ADMIN_USER,
        "auth": match who { Who::Session(_) => "session", Who::Basic => "basic" },
        "csrf_token": ctx.auth.csrf_token(who),
        "password_source": match ctx.auth.source() {
            PasswordSource::Config => "config",
            PasswordSource::Stored => "stored",
        },
    }))
}

fn logout(ctx: &mut Ctx, req: &Req, who: &Who) -> Reply {
    ctx.auth.logout(req, who)
}

fn admin_password(ctx: &mut Ctx, req: &Req, who: &Who) -> Reply {
    let body = match api::object(req) {
        Ok(b) => b,
        Err(r) => return r,
    };
    let (current, new) = match (
        api::str_field(&body, "current"),
        api::str_field(&body, "new"),
    ) {
        (Ok(c), Ok(n)) => (c, n),
        (Err(r), _) | (_, Err(r)) => return r,
    };
    let store = ctx.server.broker().store.clone();
    match ctx
        .auth
        .change_password(req, who, current, new, &store, Instant::now())
    {
        Ok(()) => Reply::json(&json!({ "ok": true })),
        Err(r) => r,
    }
}

// ---------------------------------------------------------------- server controls

fn server_start(ctx: &mut Ctx, _req: &Req, _who: &Who) -> Reply {
    let was_running = ctx.server.addr().is_some();
    match ctx.server.start() {
        Ok(addr) => {
            if !was_running {
                log::info!("web: the admin started the MQTT listener on {addr}");
                ctx.listener_since = Some(Instant::now());
            }
            Reply::json(&status(ctx))
        }
        Err(e) => {
            log::error!("web: cannot start the MQTT listener: {e}");
            Reply::error(500, &format!("cannot start the MQTT listener: {e}"))
        }
    }
}

fn server_stop(ctx: &mut Ctx, _req: &Req, _who: &Who) -> Reply {
    if ctx.server.addr().is_some() {
        log::info!("web: the admin stops the MQTT listener");
        ctx.server.stop();
    }
    ctx.listener_since = None;
    Reply::json(&status(ctx))
}

/// `POST /api/config/reload`: the same reload as SIGHUP; the summary as JSON (see
/// [`crate::reload::Outcome::to_json`]), with 422 when the file was not applied.
fn config_reload(ctx: &mut Ctx, _req: &Req, _who: &Who) -> Reply {
    let outcome = ctx.reloader.reload("the page");
    let status = if outcome.error.is_some() { 422 } else { 200 };
    Reply::json_status(status, &outcome.to_json())
}

/// `GET /api/backup`: the database as a download (see [`super::download`]); 409 while another
/// backup is being made or sent. Not for a cross-site request: each one costs a copy of the
/// database.
fn backup_download(ctx: &mut Ctx, req: &Req, _who: &Who) -> Reply {
    if req
        .header("sec-fetch-site")
        .is_some_and(|s| s.eq_ignore_ascii_case("cross-site"))
    {
        return Reply::error(403, "cross-site request refused");
    }
    let Some(slot) = ctx.backups.take() else {
        return Reply::new(
            409,
            "text/plain; charset=utf-8",
            "a backup is already being made or downloaded; try again when it is done\n",
        );
    };
    let db = ctx.server.broker().config().db.clone();
    let mut reply = Reply::new(200, "application/vnd.sqlite3", Vec::new());
    reply.download = Some(Arc::new(super::download::Backup::new(db, slot)));
    reply
}

fn rates(ctx: &mut Ctx, req: &Req, _who: &Who) -> Reply {
    let seconds = match api::uint_param(req, "seconds", 120, metrics::KEEP_SAMPLES) {
        Ok(s) => s,
        Err(r) => return r,
    };
    let points: Vec<Value> = ctx
        .rates
        .series(seconds)
        .iter()
        .map(|p| json!({ "t": p.t, "in": p.msgs_in, "out": p.msgs_out }))
        .collect();
    Reply::json(&json!({
        "interval_seconds": metrics::SAMPLE_EVERY.as_secs(),
        "points": points,
    }))
}

fn metrics_text(ctx: &mut Ctx, _req: &Req, _who: &Who) -> Reply {
    Reply::new(
        200,
        "text/plain; version=0.0.4; charset=utf-8",
        metrics::prometheus(&ctx.server, ctx.auth.session_count()),
    )
}

// ---------------------------------------------------------------- the five tabs

fn topics(ctx: &mut Ctx, req: &Req, _who: &Who) -> Reply {
    let (offset, limit) = match api::paging(req, api::DEFAULT_LIMIT) {
        Ok(p) => p,
        Err(r) => return r,
    };
    let store = &ctx.server.broker().store;
    let off = u32::try_from(offset).unwrap_or(u32::MAX);
    let lim = u32::try_from(limit).unwrap_or(u32::MAX);
    let rows = match store.topics(off, lim) {
        Ok(r) => r,
        Err(e) => return store_error(&e),
    };
    let more = if rows.len() >= limit {
        match store.topics(off.saturating_add(lim), 1) {
            Ok(next) => !next.is_empty(),
            Err(e) => return store_error(&e),
        }
    } else {
        false
    };
    let total = (!more).then_some(offset + rows.len());
    let mut v = api::list(rows.iter().map(api::topic).collect(), offset, limit, total);
    v["more"] = json!(more);
    let stats = store.stats();
    v["topics_kept"] = json!(stats.history_topics);
    v["topics_forgotten"] = json!(stats.history_topics_forgotten);
    v["max_topics"] = json!(ctx.server.broker().config().history_max_topics);
    Reply::json(&v)
}

fn messages(ctx: &mut Ctx, req: &Req, _who: &Who) -> Reply {
    let Some(topic) = req.param("topic") else {
        return bad("the topic parameter is missing (/api/messages?topic=T)");
    };
    let limit = match api::uint_param(req, "limit", 10, api::MAX_LIMIT) {
        Ok(l) => l.max(1),
        Err(r) => return r,
    };
    let lim = u32::try_from(limit).unwrap_or(u32::MAX);
    match ctx.server.broker().store.messages(topic, lim) {
        Ok(rows) => Reply::json(&json!({
            "topic": topic,
            "limit": limit,
            "items": rows.iter().map(api::message).collect::<Vec<_>>(),
        })),
        Err(e) => store_error(&e),
    }
}

/// Case-insensitive substring match for the `q` parameter.
fn matches(q: &Option<String>, fields: &[&str]) -> bool {
    match q {
        None => true,
        Some(q) => fields.iter().any(|f| f.to_lowercase().contains(q)),
    }
}

fn query(req: &Req) -> Option<String> {
    req.param("q")
        .map(str::trim)
        .filter(|q| !q.is_empty())
        .map(str::to_lowercase)
}

fn clients(ctx: &mut Ctx, req: &Req, _who: &Who) -> Reply {
    let (offset, limit) = match api::paging(req, api::DEFAULT_LIMIT) {
        Ok(p) => p,
        Err(r) => return r,
    };
    let q = query(req);
    let all: Vec<Value> = view::clients(ctx.server.broker())
        .iter()
        .filter(|c| {
            let addr = c.peer.to_string();
            let user = c.username.as_deref().unwrap_or_default();
            matches(&q, &[&c.client_id, user, &addr])
        })
        .map(api::client)
        .collect();
    Reply::json(&api::page_of(all, offset, limit))
}

fn subscriptions(ctx: &mut Ctx, req: &Req, _who: &Who) -> Reply {
    let (offset, limit) = match api::paging(req, api::DEFAULT_LIMIT) {
        Ok(p) => p,
        Err(r) => return r,
    };
    let q = query(req);
    let mut by_filter: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    for (filter, client_id, share, entry) in ctx.server.broker().router.entries() {
        let shown = share.as_deref().map_or(filter, str::to_owned);
        if !matches(&q, &[&shown, &client_id]) {
            continue;
        }
        by_filter.entry(shown).or_default().push(api::subscriber(
            &client_id,
            share.as_deref(),
            &entry,
        ));
    }
    let all: Vec<Value> = by_filter
        .into_iter()
        .map(|(filter, mut subs)| {
            subs.sort_by(|a, b| a["client_id"].as_str().cmp(&b["client_id"].as_str()));
            json!({ "filter": filter, "count": subs.len(), "subscribers": subs })
        })
        .collect();
    Reply::json(&api::page_of(all, offset, limit))
}

fn qos_messages(ctx: &mut Ctx, req: &Req, _who: &Who) -> Reply {
    let (offset, limit) = match api::paging(req, api::DEFAULT_LIMIT) {
        Ok(p) => p,
        Err(r) => return r,
    };
    let broker = ctx.server.broker();
    let (live, total) = view::qos_messages(broker, offset, limit);
    let lim = u32::try_from(limit).unwrap_or(u32::MAX);
    let stored = match broker.store.qos_messages(lim) {
        Ok(rows) => rows,
        Err(e) => return store_error(&e),
    };
    let mut v = api::list(
        live.iter().map(api::qos_live).collect(),
        offset,
        limit,
        Some(total),
    );
    v["stored"] = json!(stored.iter().map(api::qos_stored).collect::<Vec<_>>());
    let acked = view::acknowledged(broker, limit);
    v["acknowledged"] = json!(acked
        .iter()
        .map(|(id, a)| api::qos_acknowledged(id, a))
        .collect::<Vec<_>>());
    Reply::json(&v)
}

// ---------------------------------------------------------------- retained

fn retained(ctx: &mut Ctx, req: &Req, _who: &Who) -> Reply {
    let (offset, limit) = match api::paging(req, api::DEFAULT_LIMIT) {
        Ok(p) => p,
        Err(r) => return r,
    };
    let q = query(req);
    // The broker's own `$SYS/...` messages only on request: they are rewritten every interval.
    let sys = matches!(req.param("sys"), Some("true" | "1"));
    let mut all = ctx.server.broker().retained.all();
    all.retain(|m| (sys || !m.topic.starts_with("$SYS/")) && matches(&q, &[&m.topic]));
    all.sort_by(|a, b| a.topic.cmp(&b.topic));
    let total = all.len();
    let items = all
        .iter()
        .skip(offset)
        .take(limit)
        .map(api::retained)
        .collect();
    Reply::json(&api::list(items, offset, limit, Some(total)))
}

fn retained_delete(ctx: &mut Ctx, req: &Req, _who: &Who) -> Reply {
    let body = match api::object(req) {
        Ok(b) => b,
        Err(r) => return r,
    };
    let topic = match api::str_field(&body, "topic") {
        Ok(t) => t,
        Err(r) => return r,
    };
    let broker = ctx.server.broker();
    if !broker.retained.remove(topic) {
        return Reply::error(404, "no retained message on that topic");
    }
    log::info!("web: the admin deleted the retained message of {topic:?}");
    if !topic.starts_with("$SYS/") {
        let mut ticket = broker.store.set_retained(topic, None);
        if let Err(e) = ticket.wait_timeout(COMMIT_WAIT) {
            return store_error(&e);
        }
    }
    Reply::json(&json!({ "deleted": true }))
}

// ---------------------------------------------------------------- clients: disconnect, ban

/// Disconnects every live connection matching `pick`; returns how many.
fn disconnect_where(ctx: &Ctx, pick: impl Fn(&view::ClientView) -> bool) -> usize {
    let broker = ctx.server.broker();
    view::clients(broker)
        .iter()
        .filter(|c| pick(c))
        .filter(|c| broker.disconnect_conn(c.conn_id, ReasonCode::AdministrativeAction))
        .count()
}

fn disconnect(ctx: &mut Ctx, req: &Req, _who: &Who) -> Reply {
    let body = match api::object(req) {
        Ok(b) => b,
        Err(r) => return r,
    };
    let conn_id = match body.get("conn_id") {
        None | Some(Value::Null) => None,
        Some(v) => match v.as_u64() {
            Some(n) => Some(n),
            None => return bad("\"conn_id\" must be a non-negative integer"),
        },
    };
    let client_id = match api::opt_str(&body, "client_id") {
        Ok(c) => c,
        Err(r) => return r,
    };
    let n = match (conn_id, client_id) {
        (Some(id), None) => disconnect_where(ctx, |c| c.conn_id == id),
        (None, Some(cid)) => disconnect_where(ctx, |c| c.client_id == cid),
        _ => return bad("give exactly one of \"conn_id\" and \"client_id\""),
    };
    if n == 0 {
        return Reply::error(404, "no such connected client");
    }
    log::info!("web: the admin disconnected {n} connection(s) ({conn_id:?} {client_id:?})");
    Reply::json(&json!({ "disconnected": n }))
}

fn bridges(ctx: &mut Ctx, _req: &Req, _who: &Who) -> Reply {
    let broker = ctx.server.broker();
    let items: Vec<Value> = broker
        .bridges
        .get()
        .map(|b| b.snapshot(broker).iter().map(api::bridge).collect())
        .unwrap_or_default();
    Reply::json(&json!({ "items": items }))
}

/// `POST /api/bridges/start` and `/stop` with `{"name": NAME}`.
fn bridge_action(ctx: &mut Ctx, req: &Req, start: bool) -> Reply {
    let body = match api::object(req) {
        Ok(b) => b,
        Err(r) => return r,
    };
    let name = match api::str_field(&body, "name") {
        Ok(n) => n,
        Err(r) => return r,
    };
    let broker = ctx.server.broker();
    let Some(bridges) = broker.bridges.get() else {
        return Reply::error(404, &format!("no bridge named '{name}'"));
    };
    let result = if start {
        bridges.start(broker, name)
    } else {
        bridges.stop(name)
    };
    match result {
        Ok(()) => {
            log::info!(
                "web: the admin {} bridge {name}",
                if start { "started" } else { "stopped" }
            );
            Reply::json(&json!({ "name": name, "running": start }))
        }
        Err(e) if e.starts_with("no bridge") => Reply::error(404, &e),
        Err(e) => Reply::error(500, &e),
    }
}

fn bridge_start(ctx: &mut Ctx, req: &Req, _who: &Who) -> Reply {
    bridge_action(ctx, req, true)
}

fn bridge_stop(ctx: &mut Ctx, req: &Req, _who: &Who) -> Reply {
    bridge_action(ctx, req, false)
}

fn bans(ctx: &mut Ctx, _req: &Req, _who: &Who) -> Reply {
    match ctx.server.broker().store.bans() {
        Ok(rows) => Reply::json(&json!({ "items": rows.iter().map(api::ban).collect::<Vec<_>>() })),
        Err(e) => store_error(&e),
    }
}

fn kind_value(req: &Req) -> Result<(BanKind, String), Reply> {
    let body = api::object(req)?;
    let kind = api::ban_kind(api::str_field(&body, "kind")?)?;
    let value = api::str_field(&body, "value")?.to_owned();
    Ok((kind, value))
}

fn ban_add(ctx: &mut Ctx, req: &Req, _who: &Who) -> Reply {
    let (kind, value) = match kind_value(req) {
        Ok(kv) => kv,
        Err(r) => return r,
    };
    if let Err(e) = ctx.server.broker().store.ban(kind, &value) {
        return store_error(&e);
    }
    log::info!("web: the admin banned {} {value:?}", kind.as_str());
    let n = disconnect_where(ctx, |c| match kind {
        BanKind::ClientId => c.client_id == value,
        BanKind::Username => c.username.as_deref() == Some(value.as_str()),
    });
    Reply::json(&json!({ "ok": true, "disconnected": n }))
}

fn ban_del(ctx: &mut Ctx, req: &Req, _who: &Who) -> Reply {
    let (kind, value) = match kind_value(req) {
        Ok(kv) => kv,
        Err(r) => return r,
    };
    match ctx.server.broker().store.unban(kind, &value) {
        Ok(()) => {
            log::info!(
                "web: the admin lifted the ban on {} {value:?}",
                kind.as_str()
            );
            Reply::json(&json!({ "ok": true }))
        }
        Err(e) => store_error(&e),
    }
}

// ---------------------------------------------------------------- users and ACL

fn users(ctx: &mut Ctx, _req: &Req, _who: &Who) -> Reply {
    match ctx.server.broker().store.user_list() {
        Ok(rows) => {
            Reply::json(&json!({ "items": rows.iter().map(api::user).collect::<Vec<_>>() }))
        }
        Err(e) => store_error(&e),
    }
}

fn name_password(req: &Req) -> Result<(String, String), Reply> {
    let body = api::object(req)?;
    let name = api::str_field(&body, "name")?.to_owned();
    let password = api::str_field(&body, "password")?.to_owned();
    Ok((name, password))
}

fn user_add(ctx: &mut Ctx, req: &Req, _who: &Who) -> Reply {
    let (name, password) = match name_password(req) {
        Ok(np) => np,
        Err(r) => return r,
    };
    match ctx.server.broker().store.user_add(&name, &password) {
        Ok(()) => {
            log::info!("web: the admin added the user {name:?}");
            Reply::json(&json!({ "ok": true }))
        }
        Err(e) => store_error(&e),
    }
}

fn user_passwd(ctx: &mut Ctx, req: &Req, _who: &Who) -> Reply {
    let (name, password) = match name_password(req) {
        Ok(np) => np,
        Err(r) => return r,
    };
    match ctx.server.broker().store.user_passwd(&name, &password) {
        Ok(()) => {
            log::info!("web: the admin changed the password of {name:?}");
            Reply::json(&json!({ "ok": true }))
        }
        Err(e) => store_error(&e),
    }
}

fn user_del(ctx: &mut Ctx, req: &Req, _who: &Who) -> Reply {
    let body = match api::object(req) {
        Ok(b) => b,
        Err(r) => return r,
    };
    let name = match api::str_field(&body, "name") {
        Ok(n) => n.to_owned(),
        Err(r) => return r,
    };
    if let Err(e) = ctx.server.broker().store.user_del(&name) {
        return store_error(&e);
    }
    log::info!("web: the admin deleted the user {name:?}");
    // The account is gone: so are its connections.
    let n = disconnect_where(ctx, |c| c.username.as_deref() == Some(name.as_str()));
    Reply::json(&json!({ "ok": true, "disconnected": n }))
}

fn acl(ctx: &mut Ctx, _req: &Req, _who: &Who) -> Reply {
    match ctx.server.broker().store.acl_list() {
        Ok(rows) => {
            Reply::json(&json!({ "items": rows.iter().map(api::acl_rule).collect::<Vec<_>>() }))
        }
        Err(e) => store_error(&e),
    }
}

fn acl_add(ctx: &mut Ctx, req: &Req, _who: &Who) -> Reply {
    let rule = match (|| -> Result<AclRule, Reply> {
        let body = api::object(req)?;
        let username = api::opt_str(&body, "username")?
            .filter(|u| !u.is_empty())
            .map(str::to_owned);
        let pattern = api::str_field(&body, "pattern")?.to_owned();
        let access: AclAccess = api::str_field(&body, "access")?
            .parse()
            .map_err(|_| bad("\"access\" must be \"read\", \"write\" or \"readwrite\""))?;
        let allow = api::bool_field(&body, "allow", true)?;
        Ok(AclRule {
            id: 0,
            username,
            pattern,
            access,
            allow,
        })
    })() {
        Ok(r) => r,
        Err(r) => return r,
    };
    match ctx.server.broker().store.acl_add(rule.clone()) {
        Ok(id) => {
            log::info!(
                "web: the admin added ACL rule {id}: {} {} {:?} for {:?}",
                if rule.allow { "allow" } else { "deny" },
                rule.access.as_str(),
                rule.pattern,
                rule.username
            );
            Reply::json(&json!({ "ok": true, "id": id }))
        }
        Err(e) => store_error(&e),
    }
}

fn acl_del(ctx: &mut Ctx, req: &Req, _who: &Who) -> Reply {
    let body = match api::object(req) {
        Ok(b) => b,
        Err(r) => return r,
    };
    let id = match body.get("id").and_then(Value::as_i64) {
        Some(id) => id,
        None => return bad("\"id\" must be an integer"),
    };
    match ctx.server.broker().store.acl_del(id) {
        Ok(()) => {
            log::info!("web: the admin deleted ACL rule {id}");
            Reply::json(&json!({ "ok": true }))
        }
        Err(e) => store_error(&e),
    }
}

// ---------------------------------------------------------------- publish

fn publish(ctx: &mut Ctx, req: &Req, _who: &Who) -> Reply {
    let broker = ctx.server.broker().clone();
    let cfg = broker.config();
    let msg = match (|| -> Result<Message, Reply> {
        let body = api::object(req)?;
        let topic = api::str_field(&body, "topic")?;
        if !valid_topic_name(topic) {
            return Err(bad(
                "the topic must be non-empty, without + or # and without NUL",
            ));
        }
        if topic.starts_with('$') {
            return Err(bad("topics starting with $ are reserved for the broker"));
        }
        if topic.len() > cfg.max_topic_len {
            return Err(bad(format!(
                "the topic is longer than {} bytes",
                cfg.max_topic_len
            )));
        }
        if topic.split('/').count() > cfg.max_topic_levels {
            return Err(bad(format!(
                "the topic has more than {} levels",
                cfg.max_topic_levels
            )));
        }
        let text = api::opt_str(&body, "payload")?.unwrap_or_default();
        let payload = if api::bool_field(&body, "payload_hex", false)? {
            api::hex_decode(text)?
        } else {
            text.as_bytes().to_vec()
        };
        if payload.len() > cfg.max_packet_size as usize {
            return Err(bad(format!(
                "the payload is larger than max_packet_size ({} bytes)",
                cfg.max_packet_size
            )));
        }
        let qos = QoS::from_u8(api::uint_field(&body, "qos", 0, 2)? as u8).unwrap_or_default();
        let retain = api::bool_field(&body, "retain", false)?;
        Ok(Message {
            topic: topic.to_owned(),
            payload,
            qos,
            retain,
            properties: Properties::default(),
            publisher: None,
            received: Instant::now(),
        })
    })() {
        Ok(m) => m,
        Err(r) => return r,
    };
    log::info!(
        "web: the admin published to {:?} (QoS {}, retain {}, {} bytes)",
        msg.topic,
        msg.qos as u8,
        msg.retain,
        msg.payload.len()
    );
    let mut tickets = Vec::new();
    let matched = broker.publish_alone(Arc::new(msg), &mut tickets);
    let deadline = Instant::now() + COMMIT_WAIT;
    for mut t in tickets {
        let left = deadline.saturating_duration_since(Instant::now());
        if let Err(e) = t.wait_timeout(left) {
            return store_error(&e);
        }
    }
    Reply::json(&json!({ "ok": true, "matched": matched }))
}
