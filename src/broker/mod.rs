//! The broker: shared state and the operations every thread uses.
//!
//! [`Broker`] is shared by `Arc` between client threads, the ticker and the web thread. It owns
//! the session registry, the subscription router, the retained store, the live-connection table
//! and the counters. Client threads call it to open and close sessions and to publish; the web
//! thread reads it for the control page and uses the same calls to act.
//!
//! The lock order every file here follows is written once, in the crate's documentation
//! (`lib.rs`).

pub mod connection;
pub mod conns;
pub mod error;
pub mod handle;
pub mod loopback;
pub mod outbox;
pub mod packet_ids;
pub mod pending;
pub mod pipe;
pub mod publish;
mod rate_limit;
pub mod readers;
pub mod registry;
pub mod restore;
pub mod retain;
pub mod router;
pub mod server;
pub mod session;
pub(crate) mod socket;
mod stack;
pub mod stats;
pub mod sys;
pub mod ticker;
pub mod tls;
pub mod topic_tree;
pub mod view;
pub mod wills;
pub mod writer;
pub mod ws;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use parking_lot::{Mutex, RwLock};

use crate::config::Config;
use crate::store::{StoreError, StoreHandle};
use conns::LiveConn;
use retain::RetainStore;
use router::Router;
use session::{QueueLimits, Session};
use stats::Stats;

/// The broker's shared state. Its operations are spread over the files of this module, one per
/// concern: [`conns`], [`registry`], [`publish`], [`wills`] and `rate_limit`.
pub struct Broker {
    /// The settings as last loaded: those given at start, then each config reload's
    /// ([`crate::reload`]). Read through [`Broker::config`]; see there for who reads it when.
    config: RwLock<Arc<Config>>,
    pub stats: Arc<Stats>,
    pub router: Router,
    pub retained: RetainStore,
    /// The session registry ([`registry`]).
    sessions: Mutex<HashMap<Arc<str>, Arc<Session>>>,
    /// The connection table ([`conns`]).
    conns: Mutex<HashMap<u64, LiveConn>>,
    /// Connections whose CONNECT was accepted and that have not ended: the number
    /// `max_clients` limits (see [`ClientSlot`]).
    pub active_connections: AtomicUsize,
    /// Sockets that have not yet sent a whole CONNECT ([`pending`]).
    pending: Mutex<pending::Pending>,
    next_conn_id: AtomicU64,
    pub started: Instant,
    /// The database thread's handle: history, client records, retained messages and
    /// persistent sessions go there; accounts and ACLs come from there.
    pub store: StoreHandle,
    /// Recent CONNECT times per client id, for `connect_rate_limit` (`rate_limit`).
    connect_times: Mutex<HashMap<String, Vec<Instant>>>,
    /// The writer thread, for sockets that were full.
    pub writer: Arc<writer::Writer>,
    /// Password logins: per-address backoff, verification slots, recently verified passwords.
    pub logins: crate::login::Logins,
    /// The bridges to other brokers (set once, by `main`, after the listeners start; empty
    /// for a broker without `connection` blocks).
    pub bridges: std::sync::OnceLock<Arc<crate::bridge::Bridges>>,
    /// The reader threads parked for the next accepted socket ([`readers`]).
    pub readers: Arc<readers::ReaderPool>,
}

impl Broker {
    /// The broker over `store`, with the retained messages and persistent sessions it kept
    /// restored (see [`restore`]).
    pub fn with_store(
        config: Config,
        store: StoreHandle,
        writer: Arc<writer::Writer>,
    ) -> Result<Arc<Broker>, StoreError> {
        let broker = Arc::new(Broker {
            config: RwLock::new(Arc::new(config)),
            stats: Arc::new(Stats::default()),
            router: Router::new(),
            retained: RetainStore::new(),
            sessions: Mutex::new(HashMap::new()),
            conns: Mutex::new(HashMap::new()),
            active_connections: AtomicUsize::new(0),
            pending: Mutex::new(pending::Pending::default()),
            next_conn_id: AtomicU64::new(1),
            started: Instant::now(),
            store,
            connect_times: Mutex::new(HashMap::new()),
            writer,
            logins: crate::login::Logins::default(),
            bridges: std::sync::OnceLock::new(),
            readers: Arc::default(),
        });
        let snapshot = broker.store.load()?;
        restore::restore(&broker, snapshot);
        Ok(broker)
    }

    /// The current settings. A connection takes them once, when its socket is accepted, and
    /// keeps them ([`connection::Client::cfg`]): what its CONNACK told the client (packet size,
    /// Receive Maximum, topic aliases, keep alive) never changes under it, and its packets are
    /// handled without this lock. What is not per connection (admission, queue limits, history,
    /// $SYS, expiry) reads it when it acts — once per routed message — a short leaf read lock
    /// that only clones the `Arc`, like the ACL snapshot's.
    pub fn config(&self) -> Arc<Config> {
        self.config.read().clone()
    }

    /// Makes `config` the current settings (a config reload); connections already accepted
    /// keep theirs.
    pub fn set_config(&self, config: Arc<Config>) {
        *self.config.write() = config;
    }

    /// The ACL snapshot to check deliveries against, or `None` when no rule exists.
    pub(crate) fn delivery_acl(&self) -> Option<Arc<crate::auth::AclSet>> {
        let acl = self.store.acl();
        acl.has_rules().then_some(acl)
    }

    /// Takes one of the `max_clients` places, for a connection whose CONNECT is being
    /// accepted; `None` when all are taken. The place is given back when the slot is dropped.
    pub fn take_client_slot(self: &Arc<Self>) -> Option<ClientSlot> {
        let taken = self.active_connections.fetch_add(1, Ordering::AcqRel);
        if taken >= self.config().max_clients {
            self.active_connections.fetch_sub(1, Ordering::AcqRel);
            return None;
        }
        Some(ClientSlot {
            broker: self.clone(),
        })
    }

    pub fn queue_limits(&self) -> QueueLimits {
        queue_limits(&self.config())
    }
}

/// The per-client queue bounds in `cfg`.
fn queue_limits(cfg: &Config) -> QueueLimits {
    QueueLimits {
        max_messages: cfg.max_queued_messages,
        max_bytes: cfg.max_queued_bytes,
        queue_qos0_offline: cfg.queue_qos0_messages,
    }
}

/// One of the `max_clients` places, held by a connected client's reader thread from its
/// accepted CONNECT to its end, however the thread ends.
pub struct ClientSlot {
    broker: Arc<Broker>,
}

impl Drop for ClientSlot {
    fn drop(&mut self) {
        self.broker
            .active_connections
            .fetch_sub(1, Ordering::AcqRel);
    }
}
