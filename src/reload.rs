//! Config reload without a restart: SIGHUP (the `sighup` thread in `main`) and the page's
//! "Reload config" button (`POST /api/config/reload`) both call [`Reloader::reload`], which
//! reads the config file again with the same command line and environment as at start
//! ([`config::reread`]: flags and environment still win over the file), applies what can
//! change while clients are connected, keeps the rest as it was and logs one line per changed
//! setting:
//!
//! - `config reload: max_clients 20 -> 50` — applied;
//! - `config reload: listen 0.0.0.0:1883 -> 0.0.0.0:1884 needs a restart; not applied`;
//! - `config reload: 1 applied, 1 need a restart` — the last line, when something changed;
//! - `config reload: no setting changed` — the last line, when nothing did;
//! - `config reload: FILE not applied, nothing changed: <why>` — a file that does not parse
//!   (or a value out of range): nothing changes, not even the certificates.
//!
//! Then the TLS certificates are re-read as before ([`TlsContext::reload`], its own line).
//!
//! What "applied" means: the broker's settings are swapped at once ([`Broker::set_config`]);
//! admission (`max_clients`, the pending-socket bounds, `allow_anonymous`, the connect rate),
//! queue limits, `sys_interval`, `persistent_client_expiration` and the history bounds (sent to
//! the store) act from then on for everyone; what a connection negotiated in its CONNACK
//! (packet size, Receive Maximum, topic aliases, keep alive) and the per-packet limits apply to
//! the connections accepted after the reload, as each connection keeps the settings it was
//! accepted under. Nobody is disconnected: lowering `max_clients` below the number connected
//! only refuses new clients until enough leave.

use std::path::PathBuf;
use std::sync::Arc;

use parking_lot::Mutex;
use serde_json::{json, Value};

use crate::broker::tls::TlsContext;
use crate::broker::Broker;
use crate::certs::LiveConfig;
use crate::config::{self, Config};

/// Puts a setting's old value (the second `Config`) back into the re-read one (the first).
type KeepOld = fn(&mut Config, &Config);

/// Settings that only take effect at start: listeners and their certificate files (the
/// certificates' contents do reload), the database and how it is written, the page's password
/// and HTTPS, the bridges. Each with how to keep its old value in a re-read [`Config`].
const RESTART_ONLY: &[(&str, KeepOld)] = &[
    ("listen", |n, o| n.listen = o.listen.clone()),
    ("web_listen", |n, o| n.web_listen = o.web_listen),
    ("tls_listen", |n, o| n.tls_listen = o.tls_listen.clone()),
    ("ws_listen", |n, o| n.ws_listen = o.ws_listen.clone()),
    ("wss_listen", |n, o| n.wss_listen = o.wss_listen.clone()),
    ("certfile", |n, o| n.certfile.clone_from(&o.certfile)),
    ("keyfile", |n, o| n.keyfile.clone_from(&o.keyfile)),
    ("cafile", |n, o| n.cafile.clone_from(&o.cafile)),
    ("require_certificate", |n, o| {
        n.require_certificate = o.require_certificate;
    }),
    ("use_identity_as_username", |n, o| {
        n.use_identity_as_username = o.use_identity_as_username;
    }),
    ("db", |n, o| n.db.clone_from(&o.db)),
    ("sync", |n, o| n.sync = o.sync),
    ("sync_window", |n, o| n.sync_window = o.sync_window),
    ("db_max_bytes", |n, o| n.db_max_bytes = o.db_max_bytes),
    ("admin_password", |n, o| {
        n.admin_password.clone_from(&o.admin_password);
    }),
    ("web_certfile", |n, o| {
        n.web_certfile.clone_from(&o.web_certfile)
    }),
    ("web_keyfile", |n, o| {
        n.web_keyfile.clone_from(&o.web_keyfile)
    }),
    ("web_tls_from_mqtt", |n, o| {
        n.web_tls_from_mqtt = o.web_tls_from_mqtt;
    }),
    ("bridges", |n, o| n.bridges.clone_from(&o.bridges)),
];

/// One changed setting: its name and both values in the settings' own syntax.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub setting: &'static str,
    pub from: String,
    pub to: String,
}

/// What one reload did, for the log and the page.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Outcome {
    /// The config file read (`None`: the broker was started without one).
    pub file: Option<PathBuf>,
    /// Applied.
    pub changed: Vec<Change>,
    /// Changed in the file but kept as they are until a restart.
    pub restart: Vec<Change>,
    /// Why nothing changed: the file did not parse or a value was refused.
    pub error: Option<String>,
}

impl Outcome {
    /// The page's answer: `{"file", "changed": [{"setting","from","to"}], "restart": [...],
    /// "error"}`.
    pub fn to_json(&self) -> Value {
        let list = |changes: &[Change]| -> Vec<Value> {
            changes
                .iter()
                .map(|c| json!({ "setting": c.setting, "from": c.from, "to": c.to }))
                .collect()
        };
        json!({
            "file": self.file.as_ref().map(|f| f.display().to_string()),
            "changed": list(&self.changed),
            "restart": list(&self.restart),
            "error": self.error,
        })
    }
}

/// Splits the differences between `old` and the re-read `new` into what is applied and what
/// needs a restart, and makes `new` keep the old values of the latter.
pub fn classify(old: &Config, new: &mut Config) -> (Vec<Change>, Vec<Change>) {
    let (mut changed, mut restart) = (Vec::new(), Vec::new());
    for (setting, from, to) in config::differences(old, new) {
        let change = Change { setting, from, to };
        match RESTART_ONLY.iter().find(|(name, _)| *name == setting) {
            Some((_, keep_old)) => {
                keep_old(new, old);
                restart.push(change);
            }
            None => changed.push(change),
        }
    }
    (changed, restart)
}

/// Re-reads the config and the certificates; shared by the `sighup` thread and the page.
pub struct Reloader {
    broker: Arc<Broker>,
    tls: Option<Arc<TlsContext>>,
    web_tls: Option<Arc<LiveConfig>>,
    /// One reload at a time (a SIGHUP while the page's runs waits), so that each compares
    /// against the settings the one before it set.
    running: Mutex<()>,
}

impl Reloader {
    /// A reloader that reads the config as the broker did at start ([`config::reread`]).
    pub fn new(
        broker: Arc<Broker>,
        tls: Option<Arc<TlsContext>>,
        web_tls: Option<Arc<LiveConfig>>,
    ) -> Reloader {
        Reloader {
            broker,
            tls,
            web_tls,
            running: Mutex::new(()),
        }
    }

    /// Reads the config again and applies it (see the module docs); `by` names who asked
    /// (`SIGHUP`, `the page`) in the first log line.
    pub fn reload(&self, by: &str) -> Outcome {
        let _one = self.running.lock();
        let (file, read) = config::reread();
        let shown = file.as_ref().map_or_else(
            || "no config file (--config / MQTT5_BROKER_CONFIG)".to_string(),
            |f| format!("'{}'", f.display()),
        );
        log::info!("config reload ({by}): reading {shown}");
        let mut outcome = Outcome {
            file,
            ..Outcome::default()
        };
        let mut new = match read {
            Ok(c) => c,
            Err(e) => {
                let why = e.to_string();
                log::warn!("config reload: {shown} not applied, nothing changed: {why}");
                outcome.error = Some(why);
                return outcome;
            }
        };
        let old = self.broker.config();
        let (changed, restart) = classify(&old, &mut new);
        for c in &changed {
            log::info!("config reload: {} {} -> {}", c.setting, c.from, c.to);
        }
        for c in &restart {
            log::warn!(
                "config reload: {} {} -> {} needs a restart; not applied",
                c.setting,
                c.from,
                c.to
            );
        }
        if changed.is_empty() && restart.is_empty() {
            log::info!("config reload: no setting changed");
        } else {
            log::info!(
                "config reload: {} applied, {} need a restart",
                changed.len(),
                restart.len()
            );
        }
        if !changed.is_empty() {
            self.broker
                .store
                .set_history_limits(new.history_per_topic, new.history_max_topics);
            self.broker.set_config(Arc::new(new));
        }
        if let Some(t) = &self.tls {
            let _ = t.reload();
        }
        if let Some(w) = &self.web_tls {
            let _ = w.reload();
        }
        outcome.changed = changed;
        outcome.restart = restart;
        outcome
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restart_only_settings_keep_their_old_value_and_live_ones_change() {
        let old = Config::default();
        let mut new = Config {
            max_clients: 50,
            allow_anonymous: true,
            listen: vec!["127.0.0.1:1999".parse().unwrap()],
            db: PathBuf::from("other.db"),
            admin_password: Some("new secret".into()),
            ..Config::default()
        };
        let (changed, restart) = classify(&old, &mut new);
        let names = |c: &[Change]| c.iter().map(|c| c.setting).collect::<Vec<_>>();
        assert_eq!(names(&changed), ["max_clients", "allow_anonymous"]);
        assert_eq!(names(&restart), ["listen", "db", "admin_password"]);
        assert_eq!(new.listen, old.listen);
        assert_eq!(new.db, old.db);
        assert_eq!(new.admin_password, None);
        assert_eq!(new.max_clients, 50);
        // The password is never shown, changed or not.
        assert!(restart
            .iter()
            .all(|c| !c.from.contains("secret") && !c.to.contains("secret")));
    }

    #[test]
    fn readme_lists_the_restart_only_settings() {
        let readme = include_str!("../README.md");
        let marker = "<!-- restart-only settings";
        let at = readme.find(marker).expect("the README's restart-only list");
        let line = readme[at..]
            .lines()
            .nth(1)
            .expect("the list after the marker");
        let listed: Vec<&str> = line.split('`').skip(1).step_by(2).collect();
        let ours: Vec<&str> = RESTART_ONLY.iter().map(|(n, _)| *n).collect();
        assert_eq!(listed, ours);
    }

    /// A new setting must be placed here or in [`RESTART_ONLY`]: one that is read only at
    /// start (a listener, say) would otherwise be reported as applied and silently not be.
    #[test]
    fn every_setting_is_either_live_or_restart_only() {
        const LIVE: &[&str] = &[
            "max_clients",
            "allow_anonymous",
            "read_chunk_size",
            "connect_timeout",
            "max_pending_connections",
            "max_pending_per_address",
            "max_keepalive",
            "max_packet_size",
            "max_inflight_messages",
            "receive_maximum",
            "max_queued_messages",
            "max_queued_bytes",
            "queue_qos0_messages",
            "max_topic_alias",
            "outbound_topic_aliases",
            "retain_available",
            "persistent_client_expiration",
            "sys_interval",
            "max_topic_levels",
            "max_client_id_len",
            "max_subscriptions",
            "max_filters_per_subscribe",
            "max_topic_len",
            "max_user_properties",
            "connect_rate_limit",
            "history_per_topic",
            "history_max_topics",
        ];
        for (name, _) in Config::default().summary() {
            let live = LIVE.contains(&name);
            let restart = RESTART_ONLY.iter().any(|(n, _)| *n == name);
            assert!(
                live != restart,
                "{name}: classify it as live (read where it acts) or restart-only"
            );
        }
    }

    #[test]
    fn every_restart_only_name_is_a_setting() {
        let names: Vec<&str> = Config::default()
            .summary()
            .into_iter()
            .map(|(n, _)| n)
            .collect();
        for (name, _) in RESTART_ONLY {
            assert!(
                names.contains(name) || *name == "bridges",
                "{name} is not a setting"
            );
        }
    }
}
