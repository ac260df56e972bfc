//! The typed records that cross the store's boundary: what the broker saves and loads, and the
//! rows the control page and the admin commands read. Plain data, built on any thread; no
//! rusqlite type appears here. Times are milliseconds since the Unix epoch ([`now_ms`]).

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::auth::Ban;
use crate::message::Message;
use crate::protocol::Properties;
use crate::protocol::{ProtocolVersion, QoS, SubscriptionOptions, Will};

/// Milliseconds since the Unix epoch, now.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// The wall-clock time (ms) at which `at` happened, by subtracting its age from now.
pub fn instant_to_ms(at: Instant) -> i64 {
    let age = i64::try_from(at.elapsed().as_millis()).unwrap_or(i64::MAX);
    now_ms().saturating_sub(age)
}

pub(crate) fn protocol_from_level(level: i64) -> ProtocolVersion {
    match level {
        3 => ProtocolVersion::V31,
        4 => ProtocolVersion::V311,
        _ => ProtocolVersion::V5,
    }
}

/// A message as the store keeps it (retained, or queued for a persistent session).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredMessage {
    pub topic: String,
    pub payload: Vec<u8>,
    /// For a session message: the QoS it is delivered with to that subscriber.
    pub qos: QoS,
    pub retain: bool,
    /// The message properties (payload format, content type, response topic, correlation data,
    /// user properties, message expiry interval as published).
    pub properties: Properties,
    pub publisher: Option<String>,
    pub stored_at: i64,
    /// When the Message Expiry Interval runs out; `None` = never.
    pub expiry_at: Option<i64>,
}

impl StoredMessage {
    /// The record of a broker message, with `stored_at` = when the broker received it.
    pub fn from_message(msg: &Message) -> StoredMessage {
        let stored_at = instant_to_ms(msg.received);
        StoredMessage {
            topic: msg.topic.clone(),
            payload: msg.payload.clone(),
            qos: msg.qos,
            retain: msg.retain,
            properties: msg.properties.clone(),
            publisher: msg.publisher.as_deref().map(str::to_owned),
            stored_at,
            expiry_at: expiry_at(stored_at, msg.properties.message_expiry_interval),
        }
    }

    /// Rebuilds a broker message after a restart, received "now" with the remaining expiry
    /// interval, or `None` when it has expired meanwhile.
    pub fn into_message(self, now: Instant, now_ms: i64) -> Option<Message> {
        let mut properties = self.properties;
        match self.expiry_at {
            Some(at) if at <= now_ms => return None,
            Some(at) => {
                let secs = (at - now_ms + 999) / 1000;
                properties.message_expiry_interval = Some(u32::try_from(secs).unwrap_or(u32::MAX));
            }
            None => properties.message_expiry_interval = None,
        }
        Some(Message {
            topic: self.topic,
            payload: self.payload,
            qos: self.qos,
            retain: self.retain,
            properties,
            publisher: self.publisher.map(Arc::from),
            received: now,
        })
    }
}

pub(crate) fn expiry_at(stored_at: i64, interval: Option<u32>) -> Option<i64> {
    interval.map(|s| stored_at.saturating_add(i64::from(s) * 1000))
}

/// A subscription of a persistent session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscriptionRow {
    /// As subscribed, including a `$share/{group}/` prefix.
    pub filter: String,
    pub options: SubscriptionOptions,
    pub subscription_id: Option<u32>,
}

/// A persistent session as saved at CONNECT (and again whenever it changes as a whole).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionRecord {
    pub client_id: String,
    /// Seconds; `u32::MAX` = never expires.
    pub expiry_interval: u32,
    pub protocol_version: ProtocolVersion,
    pub subscriptions: Vec<SubscriptionRow>,
    /// The will with its properties (Will Delay Interval included).
    pub will: Option<Will>,
}

/// Where a session message is in the QoS flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MessageState {
    /// Not sent yet.
    Queued,
    /// PUBLISH sent; waiting for PUBACK (QoS 1) or PUBREC (QoS 2).
    Inflight,
    /// PUBREL sent; waiting for PUBCOMP.
    Released,
}

impl MessageState {
    pub fn as_str(self) -> &'static str {
        match self {
            MessageState::Queued => "queued",
            MessageState::Inflight => "inflight",
            MessageState::Released => "released",
        }
    }

    pub(crate) fn parse(s: &str) -> Option<MessageState> {
        match s {
            "queued" => Some(MessageState::Queued),
            "inflight" => Some(MessageState::Inflight),
            "released" => Some(MessageState::Released),
            _ => None,
        }
    }
}

/// A message a persistent session kept, as loaded at start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionMessage {
    pub seq: u64,
    pub message: StoredMessage,
    pub packet_id: Option<u16>,
    pub state: MessageState,
}

/// A persistent session as loaded at start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionSnapshot {
    pub record: SessionRecord,
    /// When the client went away (the start time if the broker stopped while it was connected);
    /// the session expires `expiry_interval` seconds after it.
    pub disconnected_at: Option<i64>,
    /// In `seq` order.
    pub messages: Vec<SessionMessage>,
}

impl SessionSnapshot {
    /// The next `seq` to use for this session.
    pub fn next_seq(&self) -> u64 {
        self.messages.last().map_or(1, |m| m.seq + 1)
    }

    /// Time left before the session expires, from `now_ms`; `None` = never expires.
    pub fn remaining_expiry(&self, now_ms: i64) -> Option<Duration> {
        if self.record.expiry_interval == u32::MAX {
            return None;
        }
        let since = self.disconnected_at.unwrap_or(now_ms);
        let end = since + i64::from(self.record.expiry_interval) * 1000;
        Some(Duration::from_millis(
            u64::try_from(end - now_ms).unwrap_or(0),
        ))
    }
}

/// Everything the broker restores at start.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Snapshot {
    /// Unexpired retained messages.
    pub retained: Vec<StoredMessage>,
    /// Unexpired persistent sessions.
    pub sessions: Vec<SessionSnapshot>,
}

/// A client's connection, for the history (`clients` table).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientRecord {
    pub client_id: String,
    pub username: Option<String>,
    pub protocol_version: ProtocolVersion,
    /// The peer address, e.g. `192.168.1.7:50412`.
    pub address: String,
    pub time: i64,
}

/// A row of the `clients` table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientRow {
    pub client_id: String,
    pub username: Option<String>,
    pub protocol_version: ProtocolVersion,
    pub address: String,
    pub first_seen: i64,
    pub last_connect: i64,
    pub last_disconnect: Option<i64>,
    pub last_disconnect_reason: Option<String>,
    pub connected: bool,
    pub banned: bool,
}

/// A row of the `topics` table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicRow {
    pub topic: String,
    pub first_seen: i64,
    pub last_seen: i64,
    pub message_count: u64,
}

/// A message of the history (`messages` table).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageRow {
    pub id: i64,
    pub topic: String,
    /// Possibly truncated to `StoreOptions::history_payload_limit`.
    pub payload: Vec<u8>,
    /// The real payload size.
    pub payload_len: u64,
    pub qos: QoS,
    pub retain: bool,
    pub publisher: Option<String>,
    pub properties: Properties,
    pub time: i64,
}

/// A message kept for a persistent session, for the control page (no payload).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueuedMessageRow {
    pub client_id: String,
    pub seq: u64,
    pub topic: String,
    pub payload_len: u64,
    pub qos: QoS,
    pub retain: bool,
    pub state: MessageState,
    pub packet_id: Option<u16>,
    pub stored_at: i64,
    pub expiry_at: Option<i64>,
}

/// An account (the hash is not listed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserRow {
    pub name: String,
    pub created: i64,
}

/// A ban and when it was made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BanRow {
    pub ban: Ban,
    pub created: i64,
}

/// Counters of the `store` thread, read without asking it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StoreStats {
    /// Commands applied (committed), history included.
    pub commands: u64,
    /// Transactions committed.
    pub transactions: u64,
    /// Session messages acknowledged by their subscriber before the commit that would have
    /// stored them: removed in the same transaction, so neither written nor deleted.
    pub settled: u64,
    /// History commands dropped because the history queue was full or the database unavailable.
    pub shed: u64,
    /// Commit attempts that failed (then retried).
    pub failed_commits: u64,
    /// Durable writes waiting in memory for the database (non-zero while it is unavailable).
    pub pending: u64,
    /// Of `pending`, the writes the `store` thread has taken into its next transaction.
    pub held: u64,
    /// Topics in the history (at most `history_max_topics`).
    pub history_topics: u64,
    /// Topics forgotten since start, least recently seen first, to stay within that bound.
    pub history_topics_forgotten: u64,
    /// Kept and retained messages refused because too many durable writes were waiting (their
    /// publishers were not acknowledged).
    pub refused: u64,
    /// Since when (ms since the Unix epoch) the database cannot be written; `None` while it can.
    pub failing_since_ms: Option<i64>,
    /// Size of the database file plus its WAL.
    pub db_bytes: u64,
    /// The last error, until the next successful commit.
    pub last_error: Option<String>,
}

/// The store's QoS (a stored 0..2), never panicking on a bad value.
pub(crate) fn qos_from(v: i64) -> Option<QoS> {
    u8::try_from(v).ok().and_then(QoS::from_u8)
}
