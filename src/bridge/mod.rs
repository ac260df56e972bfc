//! Bridges (issue #15): links from this broker to other brokers, configured with Mosquitto's
//! `connection NAME` blocks. Each concern has its own file:
//! - [`config`]: the `connection` blocks of the config file → [`config::BridgeConfig`], checked
//!   (anything Mosquitto has that we do not is refused with the file and line).
//! - [`backoff`]: the delays between reconnection attempts (`restart_timeout`).
//! - [`tls`]: the rustls client configuration of a bridge over TLS (`bridge_cafile`, …), built
//!   before anything starts so a bad file is a bad setting.
//! - [`conn`]: one MQTT client connection (remote, or this broker's loopback), read and written
//!   by the bridge's thread.
//! - [`link`]: a bridge's thread: connect, fail over, back off, forward both ways; it waits in
//!   `poll(2)` on both connections and a wake-up socket that [`Bridges::stop`] writes to.
//! - [`status`]: each bridge's state and counts, for the log and the page.
//!
//! [`Bridges`], held by the broker, starts one `bridge-NAME` thread per configured bridge and
//! stops them.

pub mod backoff;
pub mod config;
pub mod conn;
pub mod link;
pub mod status;
pub mod tls;

use std::io::Write;
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::thread::{self, JoinHandle};

use crossbeam_channel::Sender;
use parking_lot::Mutex;

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

/// One bridge: its settings, its status, and its thread while it runs.
struct Entry {
    cfg: config::BridgeConfig,
    tls: Option<Arc<rustls::ClientConfig>>,
    status: Arc<BridgeStatus>,
    /// A leaf lock: taken alone, never across a join.
    running: Mutex<Option<Running>>,
}

/// A bridge's thread and the way to tell it to stop.
struct Running {
    stop: Sender<Event>,
    /// Written after a stop: ends the thread's wait in `poll(2)`.
    wake: UnixStream,
    thread: JoinHandle<()>,
}

impl Running {
    fn stop(&self) {
        let _ = self.stop.send(Event::Stop);
        let _ = (&self.wake).write(&[1]);
    }
}

/// The broker's bridges (held by [`Broker::bridges`]): each one's status, and starting and
/// stopping its `bridge-NAME` thread (at start and shutdown, and from the page).
pub struct Bridges {
    entries: Vec<Entry>,
    hostname: String,
}

impl Bridges {
    /// The configured bridges, not yet started. The error is one line naming the bridge and
    /// its bad setting (a TLS file, `start_type lazy`).
    pub fn new(configs: &[config::BridgeConfig]) -> Result<Bridges, String> {
        let mut entries = Vec::new();
        for cfg in configs {
            check(cfg)?;
            entries.push(Entry {
                tls: tls::client_config(cfg)?,
                status: Arc::new(BridgeStatus::new(&cfg.name)),
                cfg: cfg.clone(),
                running: Mutex::new(None),
            });
        }
        Ok(Bridges {
            entries,
            hostname: crate::tls_init::hostname().unwrap_or_else(|| "localhost".to_owned()),
        })
    }

    /// Every bridge's status, in the order of the config file.
    pub fn status(&self) -> Vec<Arc<BridgeStatus>> {
        self.entries.iter().map(|e| e.status.clone()).collect()
    }

    /// Every bridge's status now, with its local session's backlog, in config file order.
    pub fn snapshot(&self, broker: &Broker) -> Vec<status::BridgeSnapshot> {
        self.entries
            .iter()
            .map(|e| {
                let local = e.cfg.local_client_id(&self.hostname);
                let backlog = crate::broker::view::session_backlog(broker, &local);
                e.status
                    .snapshot(self.is_running(&e.cfg.name), local, backlog)
            })
            .collect()
    }

    /// Whether `name`'s thread is running.
    pub fn is_running(&self, name: &str) -> bool {
        self.entries
            .iter()
            .find(|e| e.cfg.name == name)
            .is_some_and(|e| {
                e.running
                    .lock()
                    .as_ref()
                    .is_some_and(|r| !r.thread.is_finished())
            })
    }

    /// Starts every bridge.
    pub fn start_all(&self, broker: &Arc<Broker>) -> Result<(), String> {
        for e in &self.entries {
            self.start(broker, &e.cfg.name)?;
        }
        Ok(())
    }

    /// Starts `name`'s thread; nothing when it runs already. The error says why not (no such
    /// bridge, no thread).
    pub fn start(&self, broker: &Arc<Broker>, name: &str) -> Result<(), String> {
        let e = self
            .entries
            .iter()
            .find(|e| e.cfg.name == name)
            .ok_or_else(|| format!("no bridge named '{name}'"))?;
        let mut running = e.running.lock();
        if running.as_ref().is_some_and(|r| !r.thread.is_finished()) {
            return Ok(());
        }
        let (stop, events) = crossbeam_channel::unbounded();
        let (wake, waker) = UnixStream::pair()
            .and_then(|(wake, waker)| {
                // Neither end ever waits: a full pipe already holds a wake-up.
                wake.set_nonblocking(true)?;
                waker.set_nonblocking(true)?;
                Ok((wake, waker))
            })
            .map_err(|err| format!("bridge '{name}': cannot make its wake-up pair: {err}"))?;
        let link = link::Link::new(
            e.cfg.clone(),
            broker.clone(),
            e.tls.clone(),
            e.status.clone(),
            (events, waker),
            &self.hostname,
        );
        let thread = thread::Builder::new()
            .name(format!("bridge-{name}"))
            .spawn(move || link.run())
            .map_err(|err| format!("bridge '{name}': cannot start its thread: {err}"))?;
        // A thread that ended (stopped, `once`) is replaced; its join is immediate.
        if let Some(old) = running.replace(Running { stop, wake, thread }) {
            let _ = old.thread.join();
        }
        log::info!("bridge {name}: started");
        Ok(())
    }

    /// Tells `name`'s thread to stop, without waiting (it says locally that the link is down
    /// and disconnects both sides as soon as it is not blocked in a connect or a write).
    pub fn stop(&self, name: &str) -> Result<(), String> {
        let e = self
            .entries
            .iter()
            .find(|e| e.cfg.name == name)
            .ok_or_else(|| format!("no bridge named '{name}'"))?;
        if let Some(r) = e.running.lock().as_ref() {
            r.stop();
        }
        log::info!("bridge {name}: stop asked");
        Ok(())
    }

    /// Stops every bridge and waits for their threads (shutdown).
    pub fn stop_all(&self) {
        let running: Vec<Running> = self
            .entries
            .iter()
            .filter_map(|e| e.running.lock().take())
            .collect();
        for r in &running {
            r.stop();
        }
        for r in running {
            if r.thread.join().is_err() {
                log::error!("a bridge thread panicked");
            }
        }
    }
}
