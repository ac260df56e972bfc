//! Bridges (issue #15): links from this broker to other brokers, configured with Mosquitto's
//! `connection NAME` blocks. Each concern has its own file:
//! - [`config`]: the `connection` blocks of the config file → [`config::BridgeConfig`], checked
//!   (anything Mosquitto has that we do not is refused with the file and line).
//! - [`backoff`]: the delays between reconnection attempts (`restart_timeout`).
//! - [`tls`]: the rustls client configuration of a bridge over TLS (`bridge_cafile`, …), built
//!   before anything starts so a bad file is a bad setting.
//! - [`conn`]: one MQTT client connection (remote, or this broker's loopback) and its reader
//!   thread.
//! - [`link`]: a bridge's thread: connect, fail over, back off, forward both ways.
//! - [`status`]: each bridge's state and counts, for the log and the page.
//!
//! [`Bridges`] starts one `bridge-NAME` thread per configured bridge and stops them.

pub mod backoff;
pub mod config;
pub mod conn;
pub mod link;
pub mod status;
pub mod tls;

use std::sync::Arc;
use std::thread::{self, JoinHandle};

use crossbeam_channel::Sender;

use crate::broker::Broker;
use conn::Event;
use status::BridgeStatus;

/// What a checked configuration may still hold that this build cannot run: `start_type lazy`
/// (Mosquitto's lazy start is driven by `threshold` and `idle_timeout`, which we refuse; a
/// lazily started link would gain nothing here, where the queue for a down link is on disk).
pub fn check(cfg: &config::BridgeConfig) -> Result<(), String> {
    if cfg.start_type == config::StartType::Lazy {
        return Err(format!(
            "bridge '{}' (config file line {}): start_type lazy is not supported (Mosquitto \
             drives it with threshold and idle_timeout, which this build does not have); use \
             automatic or once: messages for a down link are queued in the database either way",
            cfg.name, cfg.line
        ));
    }
    Ok(())
}

/// One running bridge.
struct Running {
    stop: Sender<Event>,
    thread: JoinHandle<()>,
}

/// The bridges of a broker: their threads and their status.
pub struct Bridges {
    running: Vec<Running>,
    pub status: Vec<Arc<BridgeStatus>>,
}

impl Bridges {
    /// Starts every bridge of the broker's configuration. The error names the bridge whose
    /// thread or TLS configuration could not be made.
    pub fn start(broker: &Arc<Broker>) -> Result<Bridges, String> {
        let hostname = crate::tls_init::hostname().unwrap_or_else(|| "localhost".to_owned());
        let mut bridges = Bridges {
            running: Vec::new(),
            status: Vec::new(),
        };
        for cfg in &broker.config.bridges {
            check(cfg)?;
            let tls = tls::client_config(cfg)?;
            let status = Arc::new(BridgeStatus::new(&cfg.name));
            let channel = crossbeam_channel::unbounded();
            let stop = channel.0.clone();
            let link = link::Link::new(
                cfg.clone(),
                broker.clone(),
                tls,
                status.clone(),
                channel,
                &hostname,
            );
            let thread = thread::Builder::new()
                .name(format!("bridge-{}", cfg.name))
                .spawn(move || link.run())
                .map_err(|e| format!("bridge '{}': cannot start its thread: {e}", cfg.name))?;
            bridges.running.push(Running { stop, thread });
            bridges.status.push(status);
        }
        Ok(bridges)
    }

    /// Stops every bridge: each says its link is down, disconnects both sides and ends.
    pub fn stop(&mut self) {
        for r in &self.running {
            let _ = r.stop.send(Event::Stop);
        }
        for r in self.running.drain(..) {
            if r.thread.join().is_err() {
                log::error!("a bridge thread panicked");
            }
        }
    }
}
