//! Bridges (issue #15): links from this broker to other brokers, configured with Mosquitto's
//! `connection NAME` blocks. Each concern has its own file:
//! - [`config`]: the `connection` blocks of the config file → [`config::BridgeConfig`], checked
//!   (anything Mosquitto has that we do not is refused with the file and line).
//! - [`backoff`]: the delays between reconnection attempts (`restart_timeout`).
//! - [`tls`]: the rustls client configuration of a bridge over TLS (`bridge_cafile`, …), built
//!   before anything starts so a bad file is a bad setting.

pub mod backoff;
pub mod config;
pub mod tls;
