//! mqtt5-broker: an MQTT 5.0 and 3.1.1 broker for a LAN host, with its data in one SQLite file
//! and a control page in the browser.
//!
//! # Layout
//! - [`protocol`]: the pure codec — bytes in, typed packets out, and back. No I/O, no clock.
//! - [`broker`]: sessions, routing, the subscription trie, retained messages, wills, `$SYS`, and
//!   the threads that serve clients ([`broker::server`], [`broker::connection`],
//!   [`broker::outbox`], [`broker::ticker`]).
//! - [`store`]: the `store` thread owning the SQLite connection, and its handle.
//! - [`auth`]: password hashing, ACL matching and bans.
//! - [`web`]: the tiny_http thread serving the control page and its JSON.
//! - [`config`]: flags, environment and config file → [`config::Config`].
//!
//! # Threads and what crosses between them
//! | thread | owns | receives | stops by |
//! |---|---|---|---|
//! | main | config, the other threads' handles | a signal over a crossbeam channel | SIGINT / SIGTERM |
//! | `acceptor` | the `TcpListener` | sockets from `accept()` | stop flag + a connection to itself |
//! | `client-<id>` (one per socket) | reading the socket, framing buffer, inbound topic aliases | bytes | socket closed or shut down |
//! | `client-<id>-w` (one per client) | writing the socket, outbound topic aliases | wake-ups via its [`broker::outbox::Outbox`] | outbox closed |
//! | `ticker` | nothing | a tick every 250 ms | its channel closed |
//! | `store` | the rusqlite `Connection` | durable writes, history, queries over crossbeam channels | shutdown after a final commit |
//! | `web` | the `tiny_http::Server` | HTTP requests | `unblock()` |
//! | `web-drain` (short-lived, a few at most) | one unauthenticated request with a body | handed over by `web` | body read (bounded) and answered |
//!
//! Only typed values cross threads: decoded packets stay on the reader; messages travel as
//! `Arc<Message>` into session queues and to the store; counters are atomics. No `TcpStream`
//! leaves `broker/`, no rusqlite type leaves `store/`.
//! Locks are held only for in-memory work, never across a socket write.

pub mod auth;
pub mod broker;
pub mod config;
pub mod message;
pub mod protocol;
pub mod store;
pub mod web;
