//! Every SQL statement of the broker outside `schema.sql`: one function per statement (or per
//! small group run together), each with `prepare_cached` and `params!`. The functions take a
//! `&Connection` (a transaction derefs to one) and return rusqlite results; the caller decides
//! what an error means (see `error::is_transient`).
//!
//! Runs on the `store` thread, and on the main thread for the admin command line.

use std::collections::{HashMap, HashSet};

use rusqlite::{params, Connection, OptionalExtension, Row};

use super::codec::{properties_from_json, properties_to_json};
use super::types::{
    protocol_from_level, qos_from, BanRow, ClientRecord, ClientRow, MessageRow, MessageState,
    QueuedMessageRow, SessionMessage, SessionRecord, SessionSnapshot, Snapshot, StoredMessage,
    SubscriptionRow, TopicRow, UserRow,
};
use crate::auth::{AclAccess, AclRule, AclSet, Ban, BanKind};
use crate::protocol::{Properties, QoS, RetainHandling, SubscriptionOptions, Will};

/// The fields of a message to write, borrowed from a broker message or a [`StoredMessage`].
pub(crate) struct MsgFields<'a> {
    pub topic: &'a str,
    pub payload: &'a [u8],
    pub qos: QoS,
    pub retain: bool,
    pub properties: &'a Properties,
    pub publisher: Option<&'a str>,
    pub stored_at: i64,
    pub expiry_at: Option<i64>,
}

fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn to_u64(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

// ---------------------------------------------------------------- retained

pub(crate) fn retained_set(conn: &Connection, m: &MsgFields<'_>) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "INSERT INTO retained (topic, payload, qos, properties, publisher, stored_at, expiry_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
         ON CONFLICT (topic) DO UPDATE SET payload = excluded.payload, qos = excluded.qos,
             properties = excluded.properties, publisher = excluded.publisher,
             stored_at = excluded.stored_at, expiry_at = excluded.expiry_at",
    )?
    .execute(params![
        m.topic,
        m.payload,
        m.qos as u8,
        properties_to_json(m.properties),
        m.publisher,
        m.stored_at,
        m.expiry_at
    ])?;
    Ok(())
}

pub(crate) fn retained_clear(conn: &Connection, topic: &str) -> rusqlite::Result<()> {
    conn.prepare_cached("DELETE FROM retained WHERE topic = ?1")?
        .execute(params![topic])?;
    Ok(())
}

pub(crate) fn expired_delete(conn: &Connection, now: i64) -> rusqlite::Result<usize> {
    let a = conn
        .prepare_cached("DELETE FROM retained WHERE expiry_at IS NOT NULL AND expiry_at <= ?1")?
        .execute(params![now])?;
    let b = conn
        .prepare_cached(
            "DELETE FROM session_messages WHERE expiry_at IS NOT NULL AND expiry_at <= ?1
                 AND state = 'queued'",
        )?
        .execute(params![now])?;
    Ok(a + b)
}

// ---------------------------------------------------------------- sessions

pub(crate) fn session_save(
    conn: &Connection,
    rec: &SessionRecord,
    now: i64,
) -> rusqlite::Result<()> {
    // An upsert, never REPLACE: REPLACE deletes the row and the cascade would drop the
    // session's kept messages.
    conn.prepare_cached(
        "INSERT INTO sessions (client_id, expiry_interval, protocol_version, updated,
                               disconnected_at)
         VALUES (?1, ?2, ?3, ?4, NULL)
         ON CONFLICT (client_id) DO UPDATE SET expiry_interval = excluded.expiry_interval,
             protocol_version = excluded.protocol_version, updated = excluded.updated,
             disconnected_at = NULL",
    )?
    .execute(params![
        rec.client_id,
        rec.expiry_interval,
        rec.protocol_version.level(),
        now
    ])?;
    conn.prepare_cached("DELETE FROM subscriptions WHERE client_id = ?1")?
        .execute(params![rec.client_id])?;
    for sub in &rec.subscriptions {
        subscription_save(conn, &rec.client_id, sub)?;
    }
    will_set(conn, &rec.client_id, rec.will.as_ref())
}

pub(crate) fn session_disconnected(
    conn: &Connection,
    client_id: &str,
    at: i64,
) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "UPDATE sessions SET disconnected_at = ?2, updated = ?2 WHERE client_id = ?1",
    )?
    .execute(params![client_id, at])?;
    Ok(())
}

pub(crate) fn session_delete(conn: &Connection, client_id: &str) -> rusqlite::Result<()> {
    conn.prepare_cached("DELETE FROM sessions WHERE client_id = ?1")?
        .execute(params![client_id])?;
    Ok(())
}

pub(crate) fn subscription_save(
    conn: &Connection,
    client_id: &str,
    sub: &SubscriptionRow,
) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "INSERT INTO subscriptions (client_id, filter, qos, no_local, retain_as_published,
                                    retain_handling, subscription_id)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
         ON CONFLICT (client_id, filter) DO UPDATE SET qos = excluded.qos,
             no_local = excluded.no_local, retain_as_published = excluded.retain_as_published,
             retain_handling = excluded.retain_handling,
             subscription_id = excluded.subscription_id",
    )?
    .execute(params![
        client_id,
        sub.filter,
        sub.options.qos as u8,
        sub.options.no_local,
        sub.options.retain_as_published,
        sub.options.retain_handling as u8,
        sub.subscription_id
    ])?;
    Ok(())
}

pub(crate) fn subscription_remove(
    conn: &Connection,
    client_id: &str,
    filter: &str,
) -> rusqlite::Result<()> {
    conn.prepare_cached("DELETE FROM subscriptions WHERE client_id = ?1 AND filter = ?2")?
        .execute(params![client_id, filter])?;
    Ok(())
}

pub(crate) fn will_set(
    conn: &Connection,
    client_id: &str,
    will: Option<&Will>,
) -> rusqlite::Result<()> {
    match will {
        None => {
            conn.prepare_cached("DELETE FROM wills WHERE client_id = ?1")?
                .execute(params![client_id])?;
        }
        Some(w) => {
            conn.prepare_cached(
                "INSERT INTO wills (client_id, topic, payload, qos, retain, properties, delay)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
                 ON CONFLICT (client_id) DO UPDATE SET topic = excluded.topic,
                     payload = excluded.payload, qos = excluded.qos, retain = excluded.retain,
                     properties = excluded.properties, delay = excluded.delay",
            )?
            .execute(params![
                client_id,
                w.topic,
                w.payload,
                w.qos as u8,
                w.retain,
                properties_to_json(&w.properties),
                w.properties.will_delay_interval.unwrap_or(0)
            ])?;
        }
    }
    Ok(())
}

pub(crate) fn message_persist(
    conn: &Connection,
    client_id: &str,
    seq: u64,
    m: &MsgFields<'_>,
) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "INSERT INTO session_messages (client_id, seq, topic, payload, qos, retain, properties,
                                       publisher, packet_id, state, stored_at, expiry_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, NULL, 'queued', ?9, ?10)
         ON CONFLICT (client_id, seq) DO UPDATE SET topic = excluded.topic,
             payload = excluded.payload, qos = excluded.qos, retain = excluded.retain,
             properties = excluded.properties, publisher = excluded.publisher,
             stored_at = excluded.stored_at, expiry_at = excluded.expiry_at",
    )?
    .execute(params![
        client_id,
        to_i64(seq),
        m.topic,
        m.payload,
        m.qos as u8,
        m.retain,
        properties_to_json(m.properties),
        m.publisher,
        m.stored_at,
        m.expiry_at
    ])?;
    Ok(())
}

/// Moves a kept message along its flow; never back from `released` to `inflight` (the write
/// turn sends `inflight` after releasing its locks, so it may arrive after the PUBREC's
/// `released`).
pub(crate) fn message_state(
    conn: &Connection,
    client_id: &str,
    seq: u64,
    packet_id: Option<u16>,
    state: MessageState,
) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "UPDATE session_messages SET packet_id = ?3, state = ?4 WHERE client_id = ?1 AND seq = ?2
           AND NOT (state = 'released' AND ?4 = 'inflight')",
    )?
    .execute(params![client_id, to_i64(seq), packet_id, state.as_str()])?;
    Ok(())
}

pub(crate) fn message_remove(conn: &Connection, client_id: &str, seq: u64) -> rusqlite::Result<()> {
    conn.prepare_cached("DELETE FROM session_messages WHERE client_id = ?1 AND seq = ?2")?
        .execute(params![client_id, to_i64(seq)])?;
    Ok(())
}

// ---------------------------------------------------------------- history

/// Appends to the history of the message's topic; `payload_limit` truncates the kept payload.
/// Adds one message to the history; its topic's row is [`topic_seen`]'s job.
pub(crate) fn history_message(
    conn: &Connection,
    m: &MsgFields<'_>,
    payload_limit: usize,
) -> rusqlite::Result<()> {
    let kept = &m.payload[..m.payload.len().min(payload_limit)];
    conn.prepare_cached(
        "INSERT INTO messages (topic, payload, payload_len, qos, retain, publisher, properties,
                               time)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
    )?
    .execute(params![
        m.topic,
        kept,
        to_i64(m.payload.len() as u64),
        m.qos as u8,
        m.retain,
        m.publisher,
        properties_to_json(m.properties),
        m.stored_at
    ])?;
    Ok(())
}

/// Counts `count` more messages on `topic`, seen between `first` and `last` (ms). Returns
/// whether the topic is new to the history (so that the store can keep its count of topics
/// without asking) and its count of messages ever recorded, which bounds the rows it holds.
pub(crate) fn topic_seen(
    conn: &Connection,
    topic: &str,
    count: u64,
    first: i64,
    last: i64,
) -> rusqlite::Result<(bool, u64)> {
    let inserted = conn
        .prepare_cached(
            "INSERT OR IGNORE INTO topics (topic, first_seen, last_seen, message_count)
             VALUES (?1, ?2, ?3, ?4)",
        )?
        .execute(params![topic, first, last, to_i64(count)])?;
    if inserted > 0 {
        return Ok((true, count));
    }
    let total: i64 = conn
        .prepare_cached(
            "UPDATE topics SET last_seen = max(last_seen, ?2), message_count = message_count + ?3
             WHERE topic = ?1 RETURNING message_count",
        )?
        .query_row(params![topic, last, to_i64(count)], |r| r.get(0))?;
    Ok((false, u64::try_from(total).unwrap_or(u64::MAX)))
}

/// Forgets the `n` least recently seen topics of the history, with their messages.
pub(crate) fn history_forget(conn: &Connection, n: u64) -> rusqlite::Result<()> {
    let n = to_i64(n);
    conn.prepare_cached(
        "DELETE FROM messages WHERE topic IN (
             SELECT topic FROM topics ORDER BY last_seen, rowid LIMIT ?1)",
    )?
    .execute(params![n])?;
    conn.prepare_cached(
        "DELETE FROM topics WHERE rowid IN (
             SELECT rowid FROM topics ORDER BY last_seen, rowid LIMIT ?1)",
    )?
    .execute(params![n])?;
    Ok(())
}

/// How many topics the history holds.
pub(crate) fn topic_count(conn: &Connection) -> rusqlite::Result<u64> {
    conn.query_row("SELECT count(*) FROM topics", [], |r| r.get::<_, i64>(0))
        .map(|n| u64::try_from(n).unwrap_or(0))
}

/// Keeps only the newest `keep` history messages of `topic`.
pub(crate) fn history_prune(conn: &Connection, topic: &str, keep: u32) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "DELETE FROM messages WHERE topic = ?1 AND id <= (
             SELECT id FROM messages WHERE topic = ?1 ORDER BY id DESC LIMIT 1 OFFSET ?2)",
    )?
    .execute(params![topic, keep])?;
    Ok(())
}

pub(crate) fn client_connected(conn: &Connection, c: &ClientRecord) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "INSERT INTO clients (client_id, username, protocol_version, address, first_seen,
                              last_connect, connected, banned)
         VALUES (?1, ?2, ?3, ?4, ?5, ?5, 1,
                 EXISTS (SELECT 1 FROM bans WHERE kind = 'client_id' AND value = ?1))
         ON CONFLICT (client_id) DO UPDATE SET username = excluded.username,
             protocol_version = excluded.protocol_version, address = excluded.address,
             last_connect = excluded.last_connect, connected = 1, banned = excluded.banned",
    )?
    .execute(params![
        c.client_id,
        c.username,
        c.protocol_version.level(),
        c.address,
        c.time
    ])?;
    Ok(())
}

pub(crate) fn client_disconnected(
    conn: &Connection,
    client_id: &str,
    reason: &str,
    time: i64,
) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "UPDATE clients SET connected = 0, last_disconnect = ?2, last_disconnect_reason = ?3
         WHERE client_id = ?1",
    )?
    .execute(params![client_id, time, reason])?;
    Ok(())
}

// ---------------------------------------------------------------- users, ACL, bans

/// False when the user already exists.
pub(crate) fn user_add(
    conn: &Connection,
    name: &str,
    hash: &str,
    now: i64,
) -> rusqlite::Result<bool> {
    let n = conn
        .prepare_cached(
            "INSERT INTO users (name, password_hash, created) VALUES (?1, ?2, ?3)
             ON CONFLICT (name) DO NOTHING",
        )?
        .execute(params![name, hash, now])?;
    Ok(n == 1)
}

/// False when there is no such user.
pub(crate) fn user_del(conn: &Connection, name: &str) -> rusqlite::Result<bool> {
    let n = conn
        .prepare_cached("DELETE FROM users WHERE name = ?1")?
        .execute(params![name])?;
    Ok(n == 1)
}

/// False when there is no such user.
pub(crate) fn user_passwd(conn: &Connection, name: &str, hash: &str) -> rusqlite::Result<bool> {
    let n = conn
        .prepare_cached("UPDATE users SET password_hash = ?2 WHERE name = ?1")?
        .execute(params![name, hash])?;
    Ok(n == 1)
}

/// Replaces `name`'s hash by `new` only while it is still `old`; true when it did.
pub(crate) fn user_rehash(
    conn: &Connection,
    name: &str,
    old: &str,
    new: &str,
) -> rusqlite::Result<bool> {
    let n = conn
        .prepare_cached(
            "UPDATE users SET password_hash = ?3 WHERE name = ?1 AND password_hash = ?2",
        )?
        .execute(params![name, old, new])?;
    Ok(n == 1)
}

pub(crate) fn user_list(conn: &Connection) -> rusqlite::Result<Vec<UserRow>> {
    conn.prepare_cached("SELECT name, created FROM users ORDER BY name")?
        .query_map([], |r| {
            Ok(UserRow {
                name: r.get(0)?,
                created: r.get(1)?,
            })
        })?
        .collect()
}

pub(crate) fn user_hash(conn: &Connection, name: &str) -> rusqlite::Result<Option<String>> {
    conn.prepare_cached("SELECT password_hash FROM users WHERE name = ?1")?
        .query_row(params![name], |r| r.get(0))
        .optional()
}

/// The new rule's id.
pub(crate) fn acl_add(conn: &Connection, rule: &AclRule, now: i64) -> rusqlite::Result<i64> {
    conn.prepare_cached(
        "INSERT INTO acl (username, pattern, access, allow, created) VALUES (?1, ?2, ?3, ?4, ?5)",
    )?
    .execute(params![
        rule.username,
        rule.pattern,
        rule.access.as_str(),
        rule.allow,
        now
    ])?;
    Ok(conn.last_insert_rowid())
}

/// False when there is no such rule.
pub(crate) fn acl_del(conn: &Connection, id: i64) -> rusqlite::Result<bool> {
    let n = conn
        .prepare_cached("DELETE FROM acl WHERE id = ?1")?
        .execute(params![id])?;
    Ok(n == 1)
}

pub(crate) fn acl_list(conn: &Connection) -> rusqlite::Result<Vec<AclRule>> {
    let rows = conn
        .prepare_cached("SELECT id, username, pattern, access, allow FROM acl ORDER BY id")?
        .query_map([], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, Option<String>>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, String>(3)?,
                r.get::<_, bool>(4)?,
            ))
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(rows
        .into_iter()
        .filter_map(
            |(id, username, pattern, access, allow)| match access.parse::<AclAccess>() {
                Ok(access) => Some(AclRule {
                    id,
                    username,
                    pattern,
                    access,
                    allow,
                }),
                Err(e) => {
                    log::warn!("store: skipping ACL rule {id}: {e}");
                    None
                }
            },
        )
        .collect())
}

/// False when it was already banned.
pub(crate) fn ban_add(conn: &Connection, ban: &Ban, now: i64) -> rusqlite::Result<bool> {
    let n = conn
        .prepare_cached(
            "INSERT INTO bans (kind, value, created) VALUES (?1, ?2, ?3)
             ON CONFLICT (kind, value) DO NOTHING",
        )?
        .execute(params![ban.kind.as_str(), ban.value, now])?;
    set_client_banned(conn, ban, true)?;
    Ok(n == 1)
}

/// False when it was not banned.
pub(crate) fn ban_remove(conn: &Connection, ban: &Ban) -> rusqlite::Result<bool> {
    let n = conn
        .prepare_cached("DELETE FROM bans WHERE kind = ?1 AND value = ?2")?
        .execute(params![ban.kind.as_str(), ban.value])?;
    set_client_banned(conn, ban, false)?;
    Ok(n == 1)
}

fn set_client_banned(conn: &Connection, ban: &Ban, banned: bool) -> rusqlite::Result<()> {
    if ban.kind == BanKind::ClientId {
        conn.prepare_cached("UPDATE clients SET banned = ?2 WHERE client_id = ?1")?
            .execute(params![ban.value, banned])?;
    }
    Ok(())
}

pub(crate) fn ban_list(conn: &Connection) -> rusqlite::Result<Vec<BanRow>> {
    let rows = conn
        .prepare_cached("SELECT kind, value, created FROM bans ORDER BY kind, value")?
        .query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, i64>(2)?,
            ))
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(rows
        .into_iter()
        .filter_map(|(kind, value, created)| match kind.parse::<BanKind>() {
            Ok(kind) => Some(BanRow {
                ban: Ban { kind, value },
                created,
            }),
            Err(e) => {
                log::warn!("store: skipping ban of {value:?}: {e}");
                None
            }
        })
        .collect())
}

/// Accounts, rules and bans in one in-memory snapshot.
pub(crate) fn acl_set(conn: &Connection) -> rusqlite::Result<AclSet> {
    let users = conn
        .prepare_cached("SELECT name, password_hash FROM users")?
        .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))?
        .collect::<rusqlite::Result<HashMap<_, _>>>()?;
    let rules = acl_list(conn)?;
    let bans = ban_list(conn)?.into_iter().map(|b| b.ban).collect();
    Ok(AclSet::new(rules, bans, users))
}

// ---------------------------------------------------------------- control page

pub(crate) fn topics(
    conn: &Connection,
    offset: u32,
    limit: u32,
) -> rusqlite::Result<Vec<TopicRow>> {
    conn.prepare_cached(
        "SELECT topic, first_seen, last_seen, message_count FROM topics
         ORDER BY last_seen DESC, topic LIMIT ?1 OFFSET ?2",
    )?
    .query_map(params![limit, offset], |r| {
        Ok(TopicRow {
            topic: r.get(0)?,
            first_seen: r.get(1)?,
            last_seen: r.get(2)?,
            message_count: to_u64(r.get(3)?),
        })
    })?
    .collect()
}

pub(crate) fn messages(
    conn: &Connection,
    topic: &str,
    limit: u32,
) -> rusqlite::Result<Vec<MessageRow>> {
    let rows = conn
        .prepare_cached(
            "SELECT id, topic, payload, payload_len, qos, retain, publisher, properties, time
             FROM messages WHERE topic = ?1 ORDER BY id DESC LIMIT ?2",
        )?
        .query_map(params![topic, limit], |r| {
            Ok((
                MessageRow {
                    id: r.get(0)?,
                    topic: r.get(1)?,
                    payload: r.get(2)?,
                    payload_len: to_u64(r.get(3)?),
                    qos: QoS::AtMostOnce,
                    retain: r.get(5)?,
                    publisher: r.get(6)?,
                    properties: properties_from_json(r.get::<_, Option<String>>(7)?.as_deref()),
                    time: r.get(8)?,
                },
                r.get::<_, i64>(4)?,
            ))
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(rows
        .into_iter()
        .filter_map(|(mut m, qos)| {
            m.qos = qos_from(qos)?;
            Some(m)
        })
        .collect())
}

pub(crate) fn qos_messages(
    conn: &Connection,
    limit: u32,
) -> rusqlite::Result<Vec<QueuedMessageRow>> {
    let rows = conn
        .prepare_cached(
            "SELECT client_id, seq, topic, length(payload), qos, retain, state, packet_id,
                    stored_at, expiry_at
             FROM session_messages ORDER BY stored_at DESC, client_id, seq LIMIT ?1",
        )?
        .query_map(params![limit], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, i64>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, i64>(3)?,
                r.get::<_, i64>(4)?,
                r.get::<_, bool>(5)?,
                r.get::<_, String>(6)?,
                r.get::<_, Option<u16>>(7)?,
                r.get::<_, i64>(8)?,
                r.get::<_, Option<i64>>(9)?,
            ))
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(rows
        .into_iter()
        .filter_map(
            |(client_id, seq, topic, len, qos, retain, state, packet_id, stored_at, expiry_at)| {
                Some(QueuedMessageRow {
                    client_id,
                    seq: to_u64(seq),
                    topic,
                    payload_len: to_u64(len),
                    qos: qos_from(qos)?,
                    retain,
                    state: MessageState::parse(&state)?,
                    packet_id,
                    stored_at,
                    expiry_at,
                })
            },
        )
        .collect())
}

pub(crate) fn clients(
    conn: &Connection,
    offset: u32,
    limit: u32,
) -> rusqlite::Result<Vec<ClientRow>> {
    conn.prepare_cached(
        "SELECT client_id, username, protocol_version, address, first_seen, last_connect,
                last_disconnect, last_disconnect_reason, connected, banned
         FROM clients ORDER BY connected DESC, last_connect DESC, client_id
         LIMIT ?1 OFFSET ?2",
    )?
    .query_map(params![limit, offset], |r| {
        Ok(ClientRow {
            client_id: r.get(0)?,
            username: r.get(1)?,
            protocol_version: protocol_from_level(r.get(2)?),
            address: r.get(3)?,
            first_seen: r.get(4)?,
            last_connect: r.get(5)?,
            last_disconnect: r.get(6)?,
            last_disconnect_reason: r.get(7)?,
            connected: r.get(8)?,
            banned: r.get(9)?,
        })
    })?
    .collect()
}

// ---------------------------------------------------------------- load at start

fn stored_message(r: &Row<'_>, first: usize) -> rusqlite::Result<Option<StoredMessage>> {
    // Columns from `first`: topic, payload, qos, retain, properties, publisher, stored_at,
    // expiry_at.
    let qos: i64 = r.get(first + 2)?;
    let Some(qos) = qos_from(qos) else {
        return Ok(None);
    };
    Ok(Some(StoredMessage {
        topic: r.get(first)?,
        payload: r.get(first + 1)?,
        qos,
        retain: r.get(first + 3)?,
        properties: properties_from_json(r.get::<_, Option<String>>(first + 4)?.as_deref()),
        publisher: r.get(first + 5)?,
        stored_at: r.get(first + 6)?,
        expiry_at: r.get(first + 7)?,
    }))
}

/// Unexpired retained messages and persistent sessions, for the broker's start.
pub(crate) fn load(conn: &Connection, now: i64) -> rusqlite::Result<Snapshot> {
    let mut snapshot = Snapshot::default();
    let retained = conn
        .prepare_cached(
            "SELECT topic, payload, qos, 1, properties, publisher, stored_at, expiry_at
             FROM retained WHERE expiry_at IS NULL OR expiry_at > ?1 ORDER BY topic",
        )?
        .query_map(params![now], |r| stored_message(r, 0))?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    snapshot.retained = retained.into_iter().flatten().collect();

    let sessions = conn
        .prepare_cached(
            "SELECT client_id, expiry_interval, protocol_version, disconnected_at FROM sessions
             WHERE expiry_interval >= 4294967295 OR disconnected_at IS NULL
                OR disconnected_at + expiry_interval * 1000 > ?1
             ORDER BY client_id",
        )?
        .query_map(params![now], |r| {
            Ok(SessionSnapshot {
                record: SessionRecord {
                    client_id: r.get(0)?,
                    expiry_interval: u32::try_from(r.get::<_, i64>(1)?).unwrap_or(u32::MAX),
                    protocol_version: protocol_from_level(r.get(2)?),
                    subscriptions: Vec::new(),
                    will: None,
                },
                disconnected_at: r.get(3)?,
                messages: Vec::new(),
            })
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    let index: HashMap<String, usize> = sessions
        .iter()
        .enumerate()
        .map(|(i, s)| (s.record.client_id.clone(), i))
        .collect();
    snapshot.sessions = sessions;

    let subs = conn
        .prepare_cached(
            "SELECT client_id, filter, qos, no_local, retain_as_published, retain_handling,
                    subscription_id
             FROM subscriptions ORDER BY client_id, filter",
        )?
        .query_map([], |r| {
            let qos = qos_from(r.get(2)?);
            let handling = match r.get::<_, i64>(5)? {
                0 => Some(RetainHandling::SendAtSubscribe),
                1 => Some(RetainHandling::SendAtSubscribeIfNew),
                2 => Some(RetainHandling::DoNotSend),
                _ => None,
            };
            let row = match (qos, handling) {
                (Some(qos), Some(retain_handling)) => Some(SubscriptionRow {
                    filter: r.get(1)?,
                    options: SubscriptionOptions {
                        qos,
                        no_local: r.get(3)?,
                        retain_as_published: r.get(4)?,
                        retain_handling,
                    },
                    subscription_id: r.get(6)?,
                }),
                _ => None,
            };
            Ok((r.get::<_, String>(0)?, row))
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    for (client_id, row) in subs {
        if let (Some(&i), Some(row)) = (index.get(&client_id), row) {
            snapshot.sessions[i].record.subscriptions.push(row);
        }
    }

    let wills = conn
        .prepare_cached(
            "SELECT client_id, topic, payload, qos, retain, properties, delay FROM wills",
        )?
        .query_map([], |r| {
            let will = qos_from(r.get(3)?).map(|qos| -> rusqlite::Result<Will> {
                let mut properties =
                    properties_from_json(r.get::<_, Option<String>>(5)?.as_deref());
                let delay: u32 = r.get(6)?;
                properties.will_delay_interval = (delay > 0).then_some(delay);
                Ok(Will {
                    topic: r.get(1)?,
                    payload: r.get(2)?,
                    qos,
                    retain: r.get(4)?,
                    properties,
                })
            });
            Ok((r.get::<_, String>(0)?, will.transpose()?))
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    for (client_id, will) in wills {
        if let Some(&i) = index.get(&client_id) {
            snapshot.sessions[i].record.will = will;
        }
    }

    let kept = conn
        .prepare_cached(
            "SELECT client_id, seq, packet_id, state,
                    topic, payload, qos, retain, properties, publisher, stored_at, expiry_at
             FROM session_messages ORDER BY client_id, seq",
        )?
        .query_map([], |r| {
            let state = MessageState::parse(&r.get::<_, String>(3)?);
            let msg = stored_message(r, 4)?;
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, i64>(1)?,
                r.get::<_, Option<u16>>(2)?,
                state,
                msg,
            ))
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    let mut skipped = HashSet::new();
    for (client_id, seq, packet_id, state, msg) in kept {
        let Some(&i) = index.get(&client_id) else {
            continue;
        };
        match (state, msg) {
            (Some(state), Some(message)) => snapshot.sessions[i].messages.push(SessionMessage {
                seq: to_u64(seq),
                message,
                packet_id,
                state,
            }),
            _ => {
                skipped.insert(client_id);
            }
        }
    }
    if !skipped.is_empty() {
        log::warn!("store: skipped unreadable kept messages of sessions {skipped:?}");
    }
    Ok(snapshot)
}
