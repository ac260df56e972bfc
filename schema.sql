-- mqtt5-broker database schema: the only DDL of the project.
--
-- This file is an append-only list of migration steps. Each step starts with a marker line
-- `-- migration N: what it does` (N = 1, 2, 3, … in order) and runs once, in order, inside the
-- single exclusive transaction of `store::schema::migrate`; PRAGMA user_version holds the number
-- of the last step applied. Rules (as in cargo's sqlite migrations):
--   * never edit or remove a step that has been released: append a new one;
--   * never make a backwards-incompatible change (an older broker refuses a newer file anyway).
--
-- Conventions: times are INTEGER milliseconds since the Unix epoch (UTC); booleans are INTEGER
-- 0/1; QoS is 0..2; `properties` columns hold the message's MQTT 5 properties as a JSON object
-- (NULL when none): payload_format_indicator, message_expiry_interval, content_type,
-- response_topic, correlation_data (hex), user_properties ([[key, value], …]).

-- migration 1: accounts, access rules, bans, client and topic history, retained messages

-- Accounts. password_hash is a PHC string ($argon2id$v=19$m=…,t=…,p=…$salt$hash).
CREATE TABLE users (
    name          TEXT PRIMARY KEY NOT NULL,
    password_hash TEXT NOT NULL,
    created       INTEGER NOT NULL
);

-- ACL rules (Mosquitto acl_file semantics, see src/auth.rs). username NULL = a rule for every
-- client; pattern is a topic filter in which whole levels %u / %c are substituted;
-- allow = 0 makes a deny rule. No rule at all = everything allowed; else default deny.
CREATE TABLE acl (
    id       INTEGER PRIMARY KEY AUTOINCREMENT,
    username TEXT,
    pattern  TEXT NOT NULL,
    access   TEXT NOT NULL CHECK (access IN ('read', 'write', 'readwrite')),
    allow    INTEGER NOT NULL DEFAULT 1 CHECK (allow IN (0, 1)),
    created  INTEGER NOT NULL
);

-- Bans: exact match on a client id or a username.
CREATE TABLE bans (
    kind    TEXT NOT NULL CHECK (kind IN ('client_id', 'username')),
    value   TEXT NOT NULL,
    created INTEGER NOT NULL,
    PRIMARY KEY (kind, value)
);

-- Every client id ever seen (history: writes may be shed under load). connected is reset to 0
-- at start (a crash leaves it set). banned mirrors a client_id ban.
CREATE TABLE clients (
    client_id              TEXT PRIMARY KEY NOT NULL,
    username               TEXT,
    protocol_version       INTEGER NOT NULL,
    address                TEXT NOT NULL,
    first_seen             INTEGER NOT NULL,
    last_connect           INTEGER NOT NULL,
    last_disconnect        INTEGER,
    last_disconnect_reason TEXT,
    connected              INTEGER NOT NULL DEFAULT 0 CHECK (connected IN (0, 1)),
    banned                 INTEGER NOT NULL DEFAULT 0 CHECK (banned IN (0, 1))
);

-- Every topic ever published to (history).
CREATE TABLE topics (
    topic         TEXT PRIMARY KEY NOT NULL,
    first_seen    INTEGER NOT NULL,
    last_seen     INTEGER NOT NULL,
    message_count INTEGER NOT NULL DEFAULT 0
);

-- The last N messages of each topic (history; N = StoreOptions::history_per_topic, older rows
-- pruned after each batch). payload may be truncated to a limit; payload_len is the real size.
CREATE TABLE messages (
    id          INTEGER PRIMARY KEY,
    topic       TEXT NOT NULL,
    payload     BLOB NOT NULL,
    payload_len INTEGER NOT NULL,
    qos         INTEGER NOT NULL CHECK (qos BETWEEN 0 AND 2),
    retain      INTEGER NOT NULL CHECK (retain IN (0, 1)),
    publisher   TEXT,
    properties  TEXT,
    time        INTEGER NOT NULL
);
CREATE INDEX messages_topic_id ON messages (topic, id);

-- Retained messages (durable), one per topic. expiry_at NULL = never expires.
CREATE TABLE retained (
    topic      TEXT PRIMARY KEY NOT NULL,
    payload    BLOB NOT NULL,
    qos        INTEGER NOT NULL CHECK (qos BETWEEN 0 AND 2),
    properties TEXT,
    publisher  TEXT,
    stored_at  INTEGER NOT NULL,
    expiry_at  INTEGER
);
CREATE INDEX retained_expiry ON retained (expiry_at) WHERE expiry_at IS NOT NULL;

-- migration 2: persistent sessions, their subscriptions, wills and queued QoS 1/2 messages

-- Sessions that outlive their connection (durable). expiry_interval in seconds, 4294967295 =
-- never; disconnected_at NULL while connected (set to the start time after a crash).
CREATE TABLE sessions (
    client_id        TEXT PRIMARY KEY NOT NULL,
    expiry_interval  INTEGER NOT NULL,
    protocol_version INTEGER NOT NULL,
    updated          INTEGER NOT NULL,
    disconnected_at  INTEGER
);

CREATE TABLE subscriptions (
    client_id           TEXT NOT NULL REFERENCES sessions (client_id) ON DELETE CASCADE,
    filter              TEXT NOT NULL,
    qos                 INTEGER NOT NULL CHECK (qos BETWEEN 0 AND 2),
    no_local            INTEGER NOT NULL DEFAULT 0 CHECK (no_local IN (0, 1)),
    retain_as_published INTEGER NOT NULL DEFAULT 0 CHECK (retain_as_published IN (0, 1)),
    retain_handling     INTEGER NOT NULL DEFAULT 0 CHECK (retain_handling BETWEEN 0 AND 2),
    subscription_id     INTEGER,
    PRIMARY KEY (client_id, filter)
);

-- A session's will. properties as for messages; delay = Will Delay Interval in seconds.
CREATE TABLE wills (
    client_id  TEXT PRIMARY KEY NOT NULL REFERENCES sessions (client_id) ON DELETE CASCADE,
    topic      TEXT NOT NULL,
    payload    BLOB NOT NULL,
    qos        INTEGER NOT NULL CHECK (qos BETWEEN 0 AND 2),
    retain     INTEGER NOT NULL CHECK (retain IN (0, 1)),
    properties TEXT,
    delay      INTEGER NOT NULL DEFAULT 0
);

-- QoS 1/2 messages a persistent session must keep: 'queued' (not sent yet), 'inflight'
-- (PUBLISH sent with packet_id, no PUBACK/PUBREC yet), 'released' (PUBREL sent, no PUBCOMP yet).
-- seq is the broker's per-session order. qos/retain are as delivered to this subscriber.
CREATE TABLE session_messages (
    client_id  TEXT NOT NULL REFERENCES sessions (client_id) ON DELETE CASCADE,
    seq        INTEGER NOT NULL,
    topic      TEXT NOT NULL,
    payload    BLOB NOT NULL,
    qos        INTEGER NOT NULL CHECK (qos BETWEEN 0 AND 2),
    retain     INTEGER NOT NULL CHECK (retain IN (0, 1)),
    properties TEXT,
    publisher  TEXT,
    packet_id  INTEGER CHECK (packet_id BETWEEN 1 AND 65535),
    state      TEXT NOT NULL DEFAULT 'queued' CHECK (state IN ('queued', 'inflight', 'released')),
    stored_at  INTEGER NOT NULL,
    expiry_at  INTEGER,
    PRIMARY KEY (client_id, seq)
);
CREATE INDEX session_messages_expiry ON session_messages (expiry_at) WHERE expiry_at IS NOT NULL;

-- migration 3: the control page's admin password

-- One row at most (id = 1): the argon2id PHC hash of the admin password, generated at first
-- start unless --admin-password is given (see src/web/auth.rs).
CREATE TABLE web_admin (
    id            INTEGER PRIMARY KEY CHECK (id = 1),
    password_hash TEXT NOT NULL,
    updated       INTEGER NOT NULL
);

-- migration 4: topic history forgets its least recently seen topics first

-- The history keeps at most history_max_topics topics (see src/store/worker.rs): this index finds
-- the least recently seen ones (rowid, the order of first insertion, breaks ties).
CREATE INDEX topics_last_seen ON topics (last_seen);
