//! mqtt5-broker: an MQTT 5.0 and 3.1.1 broker for a LAN host, with its data in one SQLite file
//! and a control page in the browser.
//!
//! # Layout
//! The layers point one way: `web` → `broker` → `store` / `auth` / `login` → [`message`] →
//! [`protocol`] (and [`config`], read by `broker` and `web`).
//! - [`protocol`]: the pure codec — bytes in, typed packets out, and back — and the topic rules
//!   (validity, filter matching, `$share/` syntax). No I/O, no clock.
//! - [`message`]: the application message every layer above carries.
//! - [`broker`]: sessions ([`broker::registry`]), connections ([`broker::conns`]), the publish
//!   path and routing ([`broker::publish`], [`broker::router`], [`broker::topic_tree`]),
//!   retained messages, wills and expiry ([`broker::wills`]), `$SYS`, and the threads that serve
//!   clients ([`broker::server`], [`broker::connection`], [`broker::outbox`],
//!   [`broker::writer`], [`broker::ticker`]); [`broker::view`] is what `web` reads of it.
//! - [`store`]: the `store` thread owning the SQLite connection, and its handle.
//! - [`auth`]: password hashing, ACL matching and bans.
//! - [`login`]: what a password login costs: per-address backoff, verification slots, recently
//!   verified passwords (MQTT and the page).
//! - [`web`]: the threads serving the control page and its JSON.
//! - [`config`]: flags, environment and config file → [`config::Config`].
//! - [`bridge`]: bridges to other brokers: their settings (Mosquitto's `connection` blocks, read
//!   by [`config`]), their TLS client configuration, and the threads that run them — a client
//!   of the remote broker, and a persistent session of this one over a private loopback pair
//!   ([`broker::loopback`]); their status is held by the broker ([`broker::Broker::bridges`]).
//! - [`certs`]: the PEM files of the TLS settings read into rustls types (MQTT over TLS and
//!   HTTPS share it).
//! - [`tls_init`]: `mqtt5-broker tls init`, the local CA and server certificate (no broker runs).
//!
//! # Threads and what crosses between them
//! | thread | owns | receives | stops by |
//! |---|---|---|---|
//! | main | config, the other threads' handles | a signal over a crossbeam channel | SIGINT / SIGTERM |
//! | `sighup` (with TLS or HTTPS; in `main.rs`) | nothing (SIGHUP is blocked in every other thread) | `sigwait` for SIGHUP: re-reads the certificates ([`certs::LiveConfig`]) | the process ending |
//! | `acceptor` (one per `listen` address) | its `TcpListener` | sockets from `accept()` | stop flag + a connection to itself |
//! | `acceptor-tls` (one per `tls_listen` address) | the TLS listener's `TcpListener`; gives each socket a rustls `ServerConnection` (the handshake runs on the socket's own thread) | sockets from `accept()` | the same stop flag + a connection to itself |
//! | `acceptor-ws`, `acceptor-wss` (one per `ws_listen` / `wss_listen` address) | the WebSocket listeners' `TcpListener`s; gives each socket a WebSocket pipe, over a rustls `ServerConnection` for wss (the upgrade runs on the socket's own thread) | sockets from `accept()` | the same stop flag + a connection to itself |
//! | `client-<id>` (one per socket) | reading the socket, framing buffer, inbound topic aliases; writing to its own and to subscribers' sockets while it holds their outbox's write turn | bytes | socket closed or shut down; then it parks as `reader-idle` for the next socket (at most 32 park, each for at most 30 s: [`broker::readers`]) |
//! | `writer` (one) | outboxes whose socket was full or whose flush ran out of rounds, until they have nothing left; the end of each linger | [`broker::outbox::Outbox`] hand-overs and lingers, `poll(2)` for room | the broker going away |
//! | `ticker` | nothing | a tick every 250 ms | its channel closed |
//! | `store` | the rusqlite `Connection` | durable writes, history, queries over crossbeam channels | shutdown after a final commit |
//! | `web-accept` | the web `TcpListener`, the HTTP connection pool (at most 64, 8 per address) | `accept()` | a stop flag, then a connection to itself |
//! | `web-conn` (one per HTTP connection, short-lived) | the TLS handshake with HTTPS and reading one request (10 s for both), writing its answer | the `web-accept` thread | the answer written, or the deadline |
//! | `web` | the page's state (logins, rates) | requests from `web-conn` threads (bounded channel) | a stop message |
//! | `bridge-NAME` (one per `connection` block) | the bridge's two client connections' writing ends (remote broker; this broker over a loopback pair served by a `client-<id>` thread), packet ids in flight each way, the backoff | [`bridge::conn::Event`]s from its two reader threads and a stop, over one crossbeam channel | a stop event (shutdown, the page) |
//! | `bridge-NAME-read` (two per running bridge) | reading one of those connections, its framing buffer; a TLS connection's rustls state under a short leaf lock shared with the writes (never held across the blocking read) | the socket | the socket closing |
//!
//! Only typed values cross threads: decoded packets stay on the reader; messages travel as
//! `Arc<Message>` into session queues and to the store; counters are atomics. No `TcpStream`
//! (nor [`broker::pipe::Pipe`], a connection's plain, TLS or WebSocket bytes) leaves `broker/`, no rusqlite type leaves `store/`.
//!
//! # Lock order
//! A thread that holds one of these locks takes another only in the direction of an arrow, so
//! no two threads can wait on each other:
//!
//! - `Broker::conns` (the connection table) → an outbox's locks: closing a connection (server
//!   stop, the page) queues its DISCONNECT and flushes it under the table lock.
//! - `Broker::sessions` (the registry) → one `Session::state`, and → `Outbox::inner`: a CONNECT
//!   queues its CONNACK and swaps the session's outbox under the registry lock.
//! - `Outbox::out` (held only by the thread with the outbox's write turn) → `Outbox::inner`,
//!   → one `Session::state` (taking a batch of messages, dropping one too large), →
//!   `Writer::lingering` (a server close starting its linger). `Outbox::inner` is never held
//!   while another lock is taken.
//! - After a flush, still under `conns` when a close started it: → `Writer::handed`.
//!
//! In short: conns → outbox (`out` → `inner`) → session state; sessions → session state. One
//! session's state is never held with another's, nor while taking the registry or an outbox
//! lock (the outbox to wake is cloned out and flagged after the state is released). Taken alone:
//! the router's `RwLock<TopicTree>`, the retained store's `RwLock`, the store's ACL snapshot
//! (`RwLock<Arc<AclSet>>`, read only to clone the `Arc`), `connect_times`, `Broker::pending`, the reader-thread cache (`broker::readers`), the broker's settings (`Broker::config`, `RwLock<Arc<Config>>`, read only to clone the `Arc`; written by a config reload), the current TLS `ServerConfig` of the MQTT listener and of the page (`certs::LiveConfig`, read only to clone the `Arc`),
//! the web listener's connection pool, a bridge's running thread (`Bridges`' per-bridge `running`) and a bridge's status, a bridge connection's TLS state, the writer's `handed` and `lingering` lists (as leaves
//! of the chains above), `Server::running` → `Server::last_addr`, and a TLS connection's
//! `TlsPipe::state` (its rustls state and unsent records), a leaf taken under `Outbox::out`
//! by the write turn and alone by the reader, never while `Outbox::inner` is held. A WebSocket
//! connection's `WsPipe::read` (the reader's frame state, only ever taken by the reader) →
//! `WsPipe::state` (its unsent frames) → the inner `TlsPipe::state` for wss: the reader takes
//! `state` to queue a pong or close frame, the write turn (under `Outbox::out`) to frame data.
//!
//! No lock is held across a blocking socket call. Three are held across a non-blocking
//! `send(2)`: `Outbox::out`, which only the write-turn holder takes, `conns` while a close
//! flushes, and `TlsPipe::state`, so that TLS records reach the socket in the order rustls made
//! them whichever thread made them (the reader's handshake or alert records, the write turn's
//! application records); likewise `WsPipe::state`, so that WebSocket frames (a pong, a close,
//! data) reach the socket whole and in order.
//!
//! No store call is made while any of these locks is held: what the store must hear is
//! collected under the lock and sent once it is released (a session's kept-message changes in
//! `broker::session::StoreOps`, the registry's session records, the write turn's changes after
//! the outbox's locks). A send to the store never blocks anyway (its durable channel is
//! unbounded; what waits is bounded by refusing kept and retained messages), so a database that
//! cannot commit slows nothing but the acknowledgements that wait for a commit.

/// `--version`'s text: the release and the database schema it writes (a backup or a database
/// from a newer schema is refused by an older build).
pub fn version() -> String {
    format!(
        "{} (database schema {})",
        env!("CARGO_PKG_VERSION"),
        store::schema::latest_version()
    )
}

pub mod auth;
pub mod bridge;
pub mod broker;
pub mod certs;
pub mod config;
pub mod import;
pub mod login;
pub mod message;
pub mod protocol;
pub mod reload;
pub mod store;
pub mod tls_init;
pub mod web;
