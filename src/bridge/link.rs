//! A running bridge: its `bridge-NAME` thread holds two MQTT client connections ([`Conn`]) —
//! one to the remote broker, one to this broker over a private loopback pair
//! ([`crate::broker::loopback`], a real persistent session named `local_clientid`) — and
//! forwards between them: `out` topics are subscribed locally and published remotely, `in`
//! topics subscribed remotely and published here, prefixes swapped. The thread reads both
//! connections itself, waiting in `poll(2)` (`Link::next_event` is its only wait besides
//! the backoff): what one side sends is forwarded by the thread that read it, with no hand-off.
//!
//! **Nothing acknowledged before the other side has it**: a QoS 1/2 message is acknowledged to
//! the side it came from only once the other side acknowledged it (PUBACK, or PUBCOMP for QoS
//! 2). The local session may have [`WINDOW`] messages in flight to the bridge, the remote
//! broker as many as its own Receive Maximum allows (at most [`WINDOW`]); what the local session
//! sent beyond the remote's window waits here, in order and still unacknowledged, so that a
//! slow acknowledgement round over the loopback never leaves the remote's window idle.
//!
//! **Nothing lost while the link is down**: the local session is disconnected whenever the
//! remote is unreachable, so the broker queues the `out` messages in that persistent session
//! (kept in SQLite, restored after a crash, bounded by `max_queued_messages`) and hands them
//! over, in order, once the remote is back and the session reconnects. Messages the bridge had
//! received but not yet got acknowledged stay in flight in the session and are sent again.
//!
//! **No loops**: both subscriptions carry No Local and Retain As Published (5.0 remote), or the
//! remote treats the connection as a bridge by the Protocol Level bit (`try_private`, 3.1.1),
//! so what the bridge publishes on one side never comes back to it.

use std::collections::{HashMap, VecDeque};
use std::io::{self, Read};
use std::net::{TcpStream, ToSocketAddrs};
use std::os::unix::io::AsRawFd;
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use crossbeam_channel::{Receiver, RecvTimeoutError, TryRecvError};
use rustls::ClientConfig;

use super::backoff::Backoff;
use super::config::{BridgeConfig, BridgeProtocol, BridgeTopic, StartType};
use super::conn::{Conn, Event, Side};
use super::status::{BridgeStatus, LinkState};
use crate::broker::{loopback, socket, Broker};
use crate::protocol::topic::filter_matches;
use crate::protocol::{
    Ack, ConnAck, Connect, ConnectReturnCode, Disconnect, Packet, Properties, ProtocolVersion,
    Publish, QoS, ReasonCode, RetainHandling, Subscribe, SubscriptionOptions, TopicSubscription,
    Will,
};

/// Messages in flight through the bridge in each direction: the Receive Maximum it gives the
/// local session and the remote broker (5.0); towards the remote, lowered to what it allows.
pub const WINDOW: u16 = 100;

/// How long a CONNACK or SUBACK may take.
const REPLY_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a TCP connect to one address may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Packets queued while forwarding are written after at most this many packets (so that a
/// steady stream still has its acknowledgements go out promptly) ...
const FLUSH_EVERY: u32 = 16;
/// ... or once this many bytes are queued for one side.
const FLUSH_BYTES: usize = 64 * 1024;

/// How often the thread wakes, at most, when nothing arrives (keep-alive checks).
const TICK: Duration = Duration::from_millis(500);

/// Why a phase of the link stopped.
enum Stop {
    /// The broker stops the bridge.
    Asked,
    /// The link failed; the bridge retries (`start_type automatic`).
    Failed(String),
}

/// The state of one link session (one remote connection and one local one).
struct Live {
    remote: Conn,
    local: Conn,
    /// Remote packet id of a message from here → (local packet id, QoS).
    to_remote: HashMap<u16, (u16, QoS)>,
    /// Local packet id of a message from the remote → (remote packet id, QoS).
    to_local: HashMap<u16, (u16, QoS)>,
    /// Messages from here (topic already mapped) that wait for a place in the remote's window,
    /// in the order the local session sent them; unacknowledged here until they are through.
    waiting: VecDeque<Publish>,
    /// The remote's Receive Maximum (at most [`WINDOW`]): QoS 1/2 messages in `to_remote`.
    remote_window: usize,
    next_remote_id: u16,
    next_local_id: u16,
    remote_keep_alive: Duration,
    local_keep_alive: Duration,
    remote_sent: Instant,
    remote_heard: Instant,
    local_sent: Instant,
    local_heard: Instant,
}

/// One bridge's thread.
pub struct Link {
    cfg: BridgeConfig,
    broker: Arc<Broker>,
    tls: Option<Arc<ClientConfig>>,
    status: Arc<BridgeStatus>,
    /// The broker's stop; with a byte on `waker` so that a wait in `poll(2)` ends.
    events: Receiver<Event>,
    waker: UnixStream,
    gen: u64,
    remote_client_id: String,
    local_client_id: String,
    /// Events that arrived while the thread waited for a particular reply.
    stash: VecDeque<Event>,
    /// Events read from the connections and not handled yet, in order.
    inbox: VecDeque<Event>,
    /// The next address to try first (fail-over goes round them).
    address: usize,
    random: u64,
}

impl Link {
    pub fn new(
        cfg: BridgeConfig,
        broker: Arc<Broker>,
        tls: Option<Arc<ClientConfig>>,
        status: Arc<BridgeStatus>,
        (events, waker): (Receiver<Event>, UnixStream),
        hostname: &str,
    ) -> Link {
        let seed = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64)
            | 1;
        Link {
            remote_client_id: cfg.remote_client_id(hostname),
            local_client_id: cfg.local_client_id(hostname),
            cfg,
            broker,
            tls,
            status,
            events,
            waker,
            gen: 0,
            stash: VecDeque::new(),
            inbox: VecDeque::new(),
            address: 0,
            random: seed,
        }
    }

    /// The thread's body: until stopped (or, with `start_type once`, until the first link
    /// ends), connect, forward, and after a loss wait out the backoff.
    pub fn run(mut self) {
        let name = self.cfg.name.clone();
        if let Err(Stop::Asked) = self.prime() {
            self.stopped("stopped");
            return;
        }
        let mut backoff = Backoff::new(self.cfg.restart_timeout);
        loop {
            self.status.set(LinkState::Connecting);
            let why = match self.connect_remote() {
                Ok((remote, connack, address)) => {
                    backoff.reset();
                    match self.forward(remote, &connack, &address) {
                        Stop::Asked => {
                            self.stopped("stopped");
                            return;
                        }
                        Stop::Failed(why) => why,
                    }
                }
                Err(Stop::Asked) => {
                    self.stopped("stopped");
                    return;
                }
                Err(Stop::Failed(why)) => why,
            };
            self.status.down(&why);
            if self.cfg.start_type == StartType::Once {
                log::warn!("bridge {name}: link down ({why}); start_type once: not reconnecting");
                self.stopped(&format!("start_type once: {why}"));
                return;
            }
            let delay = backoff.next_delay(self.next_random());
            log::info!(
                "bridge {name}: link down ({why}); next attempt in {} ms",
                delay.as_millis()
            );
            if self.pause(delay).is_err() {
                self.stopped("stopped");
                return;
            }
        }
    }

    fn stopped(&self, why: &str) {
        self.status.set(LinkState::Stopped {
            since: SystemTime::now(),
            why: why.to_owned(),
        });
    }

    fn next_random(&mut self) -> u32 {
        // xorshift64: only the spread of reconnection times depends on it.
        let mut x = self.random;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.random = x;
        (x >> 32) as u32
    }

    /// Waits `delay`, or until asked to stop (`Err`). Packets of closed connections are
    /// dropped.
    fn pause(&mut self, delay: Duration) -> Result<(), ()> {
        let until = Instant::now() + delay;
        self.stash.clear();
        self.inbox.clear();
        loop {
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(());
            }
            match self.events.recv_timeout(left) {
                Ok(Event::Stop) => return Err(()),
                Ok(_) => {}
                Err(RecvTimeoutError::Timeout) => return Ok(()),
                Err(RecvTimeoutError::Disconnected) => return Err(()),
            }
        }
    }

    /// Makes the local session exist and hold the `out` subscriptions before the remote is
    /// ever reached, so that what is published meanwhile is queued; and says locally that the
    /// link is down. Retried (with `restart_timeout`'s base) until it works or the bridge stops.
    fn prime(&mut self) -> Result<(), Stop> {
        loop {
            let result = self.connect_local(WINDOW).and_then(|(mut local, _)| {
                self.subscribe_local(&mut local)?;
                self.notify_local(&mut local, false);
                self.stash.clear();
                self.inbox.clear();
                disconnect(&mut local);
                Ok(())
            });
            match result {
                Ok(()) => return Ok(()),
                Err(Stop::Asked) => return Err(Stop::Asked),
                Err(Stop::Failed(why)) => {
                    log::error!(
                        "bridge {}: cannot open its local session: {why}",
                        self.cfg.name
                    );
                    self.status.down(&format!("local session: {why}"));
                    if self.pause(self.cfg.restart_timeout.base).is_err() {
                        return Err(Stop::Asked);
                    }
                }
            }
        }
    }

    fn new_gen(&mut self) -> u64 {
        self.gen += 1;
        self.gen
    }

    /// Connects the local session (clean start 0, never expiring) over the loopback.
    fn connect_local(&mut self, receive_maximum: u16) -> Result<(Conn, ConnAck), Stop> {
        let socket = loopback::connect(&self.broker)
            .map_err(|e| Stop::Failed(format!("loopback connection: {e}")))?;
        let gen = self.new_gen();
        let mut local = Conn::start(socket, None, ProtocolVersion::V5, Side::Local, gen)
            .map_err(|e| Stop::Failed(format!("local connection: {e}")))?;
        let connect = Connect {
            protocol: ProtocolVersion::V5,
            bridge: false,
            clean_start: false,
            keep_alive: 0,
            properties: Properties {
                session_expiry_interval: Some(crate::broker::session::NEVER_EXPIRES),
                receive_maximum: Some(receive_maximum),
                ..Properties::default()
            },
            client_id: self.local_client_id.clone(),
            will: None,
            // The name ACL rules know the bridge by (no password: the loopback is trusted).
            username: Some(self.local_client_id.clone()),
            password: None,
        };
        send(&mut local, &Packet::Connect(Box::new(connect)))?;
        let connack = self.await_connack(&mut local)?;
        if connack.reason.is_error() {
            return Err(Stop::Failed(format!(
                "local session refused: {}",
                connack.reason.name()
            )));
        }
        Ok((local, connack))
    }

    /// Tries the addresses from the current one, round the list once; the first that accepts
    /// the CONNECT is the link. Its address stays first for the next attempt.
    fn connect_remote(&mut self) -> Result<(Conn, ConnAck, String), Stop> {
        let count = self.cfg.addresses.len();
        let mut last = String::from("no address");
        for i in 0..count {
            let index = (self.address + i) % count;
            let (host, port) = self.cfg.addresses[index].clone();
            let address = format!("{host}:{port}");
            let mut bridge_bit = self.cfg.try_private && self.cfg.protocol == BridgeProtocol::V311;
            loop {
                match self.connect_to(&host, port, bridge_bit) {
                    Ok((conn, connack)) => {
                        self.address = index;
                        return Ok((conn, connack, address));
                    }
                    Err(Stop::Asked) => return Err(Stop::Asked),
                    // Mosquitto's fallback: a broker that does not know the bridge bit
                    // refuses the level; the same address is tried once without it.
                    Err(Stop::Failed(why)) if bridge_bit && why.contains("protocol version") => {
                        log::info!(
                            "bridge {}: {address} refused the bridge protocol level; trying \
                             without try_private",
                            self.cfg.name
                        );
                        bridge_bit = false;
                    }
                    Err(Stop::Failed(why)) => {
                        log::warn!(
                            "bridge {}: cannot connect to {address}: {why}",
                            self.cfg.name
                        );
                        self.status.down(&format!("{address}: {why}"));
                        last = format!("{address}: {why}");
                        break;
                    }
                }
            }
        }
        Err(Stop::Failed(last))
    }

    fn connect_to(
        &mut self,
        host: &str,
        port: u16,
        bridge_bit: bool,
    ) -> Result<(Conn, ConnAck), Stop> {
        let addrs = (host, port)
            .to_socket_addrs()
            .map_err(|e| Stop::Failed(format!("cannot resolve: {e}")))?;
        let mut socket = None;
        let mut error = String::from("no address found");
        for addr in addrs {
            match TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT) {
                Ok(s) => {
                    socket = Some(s);
                    break;
                }
                Err(e) => error = e.to_string(),
            }
        }
        let socket = socket.ok_or(Stop::Failed(error))?;
        let version = match self.cfg.protocol {
            BridgeProtocol::V5 => ProtocolVersion::V5,
            BridgeProtocol::V311 => ProtocolVersion::V311,
        };
        let gen = self.new_gen();
        let tls = self.tls.clone().map(|c| (c, host));
        let mut remote = Conn::start(socket, tls, version, Side::Remote, gen)
            .map_err(|e| Stop::Failed(e.to_string()))?;
        let will = self.cfg.notifications.then(|| Will {
            topic: self.cfg.notification_topic(),
            payload: b"0".to_vec(),
            qos: QoS::AtLeastOnce,
            retain: true,
            properties: Properties::default(),
        });
        let mut properties = Properties::default();
        if version.is_v5() {
            // What the remote sends is published here within this broker's own Receive
            // Maximum, so the remote is held to it too.
            properties.receive_maximum = Some(WINDOW.min(self.broker.config().receive_maximum));
            if !self.cfg.cleansession {
                properties.session_expiry_interval = Some(crate::broker::session::NEVER_EXPIRES);
            }
        }
        let connect = Connect {
            protocol: version,
            bridge: bridge_bit,
            clean_start: self.cfg.cleansession,
            keep_alive: self.cfg.keepalive,
            properties,
            client_id: self.remote_client_id.clone(),
            will,
            username: self.cfg.remote_username.clone(),
            password: self.cfg.remote_password.clone().map(String::into_bytes),
        };
        send(&mut remote, &Packet::Connect(Box::new(connect)))?;
        let connack = self.await_connack(&mut remote)?;
        if connack.reason.is_error() {
            let why = if version.is_v5() {
                connack.reason.name().to_owned()
            } else {
                format!("{:?}", ConnectReturnCode::from_reason(connack.reason))
            };
            let why = match connack.reason {
                ReasonCode::UnsupportedProtocolVersion => {
                    format!("refused: protocol version ({why})")
                }
                ReasonCode::BadUserNameOrPassword | ReasonCode::NotAuthorized => {
                    format!("refused: bad remote_username / remote_password ({why})")
                }
                _ => format!("refused: {why}"),
            };
            return Err(Stop::Failed(why));
        }
        Ok((remote, connack))
    }

    /// The next event of `conn`, within `REPLY_TIMEOUT`, keeping the others for later.
    fn await_reply(
        &mut self,
        conn: &mut Conn,
        wanted: impl Fn(&Packet) -> bool,
    ) -> Result<Packet, Stop> {
        let deadline = Instant::now() + REPLY_TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.next_event(&mut [&mut *conn], left) {
                Some(Event::Stop) => return Err(Stop::Asked),
                Some(Event::Packets(side, gen, packets))
                    if side == conn.side && gen == conn.gen =>
                {
                    let mut packets = packets.into_iter();
                    let mut before = Vec::new();
                    let mut reply = None;
                    for p in packets.by_ref() {
                        if wanted(&p) {
                            reply = Some(p);
                            break;
                        }
                        before.push(p);
                    }
                    let after: Vec<Packet> = packets.collect();
                    // The others keep their order for whoever reads the stash next.
                    for rest in [before, after] {
                        if !rest.is_empty() {
                            self.stash.push_back(Event::Packets(side, gen, rest));
                        }
                    }
                    if let Some(p) = reply {
                        return Ok(p);
                    }
                }
                Some(Event::Closed(side, gen, why)) if side == conn.side && gen == conn.gen => {
                    return Err(Stop::Failed(why));
                }
                Some(other) => self.stash.push_back(other),
                None => return Err(Stop::Failed("no answer within 10 s".into())),
            }
        }
    }

    /// The next event: one read before and not handled yet, the broker's stop, or what
    /// `conns` have now — waiting in `poll(2)` for at most `timeout` (`None`: nothing came).
    /// What a connection delivers is read here, by this thread: no reader thread hands it on.
    fn next_event(&mut self, conns: &mut [&mut Conn], timeout: Duration) -> Option<Event> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(e) = self.inbox.pop_front() {
                return Some(e);
            }
            match self.events.try_recv() {
                Ok(e) => return Some(e),
                Err(TryRecvError::Disconnected) => return Some(Event::Stop),
                Err(TryRecvError::Empty) => {}
            }
            let left = deadline.saturating_duration_since(Instant::now());
            let mut fds: Vec<libc::pollfd> = conns
                .iter()
                .map(|c| socket::pollfd(c.fd(), libc::POLLIN))
                .collect();
            fds.push(socket::pollfd(self.waker.as_raw_fd(), libc::POLLIN));
            // Rounded up: a wait cut short of its deadline would spin.
            let ms = i32::try_from(left.as_micros().div_ceil(1000)).unwrap_or(i32::MAX);
            match socket::poll(&mut fds, ms) {
                Ok(0) => return None,
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    log::error!("bridge {}: poll failed: {e}", self.cfg.name);
                    return None;
                }
            }
            for (conn, fd) in conns.iter_mut().zip(&fds) {
                if fd.revents == 0 {
                    continue;
                }
                let mut packets = Vec::new();
                let ended = conn.read_ready(&mut packets);
                if !packets.is_empty() {
                    self.inbox
                        .push_back(Event::Packets(conn.side, conn.gen, packets));
                }
                if let Err(why) = ended {
                    self.inbox
                        .push_back(Event::Closed(conn.side, conn.gen, why));
                }
            }
            if fds.last().is_some_and(|w| w.revents != 0) {
                // The stop itself is in the channel, looked at above.
                let mut drained = [0u8; 64];
                while matches!((&self.waker).read(&mut drained), Ok(n) if n > 0) {}
            }
        }
    }

    fn await_connack(&mut self, conn: &mut Conn) -> Result<ConnAck, Stop> {
        match self.await_reply(conn, |p| matches!(p, Packet::ConnAck(_)))? {
            Packet::ConnAck(c) => Ok(c),
            _ => Err(Stop::Failed("no CONNACK".into())),
        }
    }

    /// Subscribes `filters` and waits for the SUBACK; refused filters are logged.
    fn subscribe(&mut self, conn: &mut Conn, filters: Vec<TopicSubscription>) -> Result<(), Stop> {
        if filters.is_empty() {
            return Ok(());
        }
        let names: Vec<String> = filters.iter().map(|f| f.filter.clone()).collect();
        send(
            conn,
            &Packet::Subscribe(Subscribe {
                packet_id: 1,
                properties: Properties::default(),
                filters,
            }),
        )?;
        let reply =
            self.await_reply(conn, |p| matches!(p, Packet::SubAck(a) if a.packet_id == 1))?;
        if let Packet::SubAck(ack) = reply {
            for (filter, reason) in names.iter().zip(&ack.reasons) {
                if reason.is_error() {
                    let side = match conn.side {
                        Side::Remote => "the remote broker",
                        Side::Local => "this broker",
                    };
                    log::warn!(
                        "bridge {}: {side} refused the subscription to {filter:?}: {}",
                        self.cfg.name,
                        reason.name()
                    );
                }
            }
        }
        Ok(())
    }

    fn subscribe_local(&mut self, local: &mut Conn) -> Result<(), Stop> {
        let filters = self
            .cfg
            .topics
            .iter()
            .filter(|t| t.direction.outgoing())
            .map(|t| TopicSubscription {
                filter: t.local_filter(),
                options: SubscriptionOptions {
                    qos: t.qos,
                    no_local: true,
                    retain_as_published: true,
                    // The session persists: retained messages only with its first subscription,
                    // not again at every reconnection.
                    retain_handling: RetainHandling::SendAtSubscribeIfNew,
                },
            })
            .collect();
        self.subscribe(local, filters)
    }

    fn subscribe_remote(&mut self, remote: &mut Conn) -> Result<(), Stop> {
        let v5 = remote.version.is_v5();
        let filters = self
            .cfg
            .topics
            .iter()
            .filter(|t| t.direction.incoming())
            .map(|t| TopicSubscription {
                filter: t.remote_filter(),
                options: SubscriptionOptions {
                    qos: t.qos,
                    no_local: v5,
                    retain_as_published: v5,
                    retain_handling: RetainHandling::SendAtSubscribe,
                },
            })
            .collect();
        self.subscribe(remote, filters)
    }

    /// `notifications`: the link's state, retained, here.
    fn notify_local(&self, local: &mut Conn, up: bool) {
        if self.cfg.notifications {
            let _ = local.send(&notification(&self.cfg.notification_topic(), up, 0));
        }
    }

    /// One link session: subscribe both sides, then forward until a side closes.
    fn forward(&mut self, mut remote: Conn, connack: &ConnAck, address: &str) -> Stop {
        let name = self.cfg.name.clone();
        let window = connack
            .properties
            .receive_maximum
            .unwrap_or(u16::MAX)
            .min(WINDOW);
        let (mut local, local_ack) = match self.connect_local(WINDOW) {
            Ok(l) => l,
            Err(e) => {
                disconnect(&mut remote);
                return e;
            }
        };
        let setup = self
            .subscribe_remote(&mut remote)
            .and_then(|()| self.subscribe_local(&mut local));
        if let Err(e) = setup {
            disconnect(&mut remote);
            disconnect(&mut local);
            return e;
        }
        let remote_keep_alive = connack
            .properties
            .server_keep_alive
            .unwrap_or(self.cfg.keepalive);
        let now = Instant::now();
        let mut live = Live {
            remote,
            local,
            to_remote: HashMap::new(),
            to_local: HashMap::new(),
            waiting: VecDeque::new(),
            remote_window: usize::from(window.max(1)),
            next_remote_id: 1,
            next_local_id: 1,
            remote_keep_alive: Duration::from_secs(u64::from(remote_keep_alive)),
            local_keep_alive: Duration::from_secs(u64::from(
                local_ack.properties.server_keep_alive.unwrap_or(0),
            )),
            remote_sent: now,
            remote_heard: now,
            local_sent: now,
            local_heard: now,
        };
        if self.cfg.notifications {
            let id = live.remote_id();
            // It takes a place in the remote's window until acknowledged; local id 0 (never a
            // message's) says there is nothing to pass on.
            live.to_remote.insert(id, (0, QoS::AtLeastOnce));
            let _ = live
                .remote
                .send(&notification(&self.cfg.notification_topic(), true, id));
        }
        self.notify_local(&mut live.local, true);
        self.status.set(LinkState::Up {
            since: SystemTime::now(),
            address: address.to_owned(),
        });
        log::info!(
            "bridge {name}: connected to {address} (MQTT {}) as {}; local session {}",
            live.remote.version.name(),
            self.remote_client_id,
            self.local_client_id
        );
        let ended = self.pump(&mut live);
        // Unacknowledged messages stay in flight in the local session; the rest queue there.
        self.notify_local(&mut live.local, false);
        disconnect(&mut live.local);
        disconnect(&mut live.remote);
        ended
    }

    fn pump(&mut self, live: &mut Live) -> Stop {
        let mut unflushed = 0u32;
        loop {
            let event = match self.stash.pop_front() {
                Some(e) => e,
                None => match self.next_event(&mut [&mut live.remote, &mut live.local], TICK) {
                    Some(e) => e,
                    None => {
                        if let Err(e) = live.keep_alive() {
                            return e;
                        }
                        continue;
                    }
                },
            };
            let result = match event {
                Event::Stop => return Stop::Asked,
                Event::Packets(side, gen, packets)
                    if (side == Side::Remote && gen == live.remote.gen)
                        || (side == Side::Local && gen == live.local.gen) =>
                {
                    match side {
                        Side::Remote => live.remote_heard = Instant::now(),
                        Side::Local => live.local_heard = Instant::now(),
                    }
                    packets.into_iter().try_for_each(|p| {
                        match side {
                            Side::Remote => self.on_remote(live, p)?,
                            Side::Local => self.on_local(live, p)?,
                        }
                        unflushed += 1;
                        if unflushed >= FLUSH_EVERY {
                            unflushed = 0;
                            flush(&mut live.remote).and_then(|()| flush(&mut live.local))?;
                        }
                        Ok(())
                    })
                }
                Event::Closed(Side::Remote, gen, why) if gen == live.remote.gen => {
                    Err(Stop::Failed(format!("remote connection lost: {why}")))
                }
                Event::Closed(Side::Local, gen, why) if gen == live.local.gen => {
                    Err(Stop::Failed(format!("local session closed: {why}")))
                }
                // A connection already replaced.
                Event::Packets(..) | Event::Closed(..) => Ok(()),
            };
            if let Err(e) = result {
                return e;
            }
            // Written before the thread may wait in `poll(2)`.
            if self.stash.is_empty() && self.inbox.is_empty() {
                unflushed = 0;
                if let Err(e) = flush(&mut live.remote).and_then(|()| flush(&mut live.local)) {
                    return e;
                }
            }
            if let Err(e) = live.keep_alive() {
                return e;
            }
        }
    }

    /// A packet from this broker's session.
    fn on_local(&mut self, live: &mut Live, packet: Packet) -> Result<(), Stop> {
        match packet {
            Packet::Publish(p) => {
                let Some(topic) = map_topic(&self.cfg.topics, &p.topic, Side::Local) else {
                    BridgeStatus::count(&self.status.dropped);
                    return ack_dropped(&mut live.local, &p, &mut live.local_sent);
                };
                // Carries the local session's packet id until it gets a remote one.
                let local_id = p.packet_id;
                live.waiting.push_back(carried(p, topic, local_id));
                self.send_waiting(live)
            }
            // Acknowledgements of what the bridge published here, for the remote.
            Packet::PubAck(a) => {
                let Some((remote_id, _)) = live.to_local.remove(&a.packet_id) else {
                    return Ok(());
                };
                self.counted_in(&a);
                live.remote_sent = Instant::now();
                post(&mut live.remote, &Packet::PubAck(ack(remote_id)))
            }
            Packet::PubRec(a) => {
                if a.reason.is_error() {
                    let Some((remote_id, _)) = live.to_local.remove(&a.packet_id) else {
                        return Ok(());
                    };
                    self.counted_in(&a);
                    return post(&mut live.remote, &Packet::PubRec(ack(remote_id)));
                }
                live.local_sent = Instant::now();
                post(&mut live.local, &Packet::PubRel(ack(a.packet_id)))
            }
            Packet::PubComp(a) => {
                let Some((remote_id, _)) = live.to_local.remove(&a.packet_id) else {
                    return Ok(());
                };
                self.counted_in(&a);
                live.remote_sent = Instant::now();
                post(&mut live.remote, &Packet::PubRec(ack(remote_id)))
            }
            // QoS 2 from here: PUBREC was sent only once the remote had it; finish at once.
            Packet::PubRel(a) => {
                live.local_sent = Instant::now();
                post(&mut live.local, &Packet::PubComp(ack(a.packet_id)))
            }
            Packet::Disconnect(d) => Err(Stop::Failed(format!(
                "this broker closed the local session: {}",
                d.reason.name()
            ))),
            _ => Ok(()),
        }
    }

    /// A packet from the remote broker.
    fn on_remote(&mut self, live: &mut Live, packet: Packet) -> Result<(), Stop> {
        match packet {
            Packet::Publish(p) => {
                let Some(topic) = map_topic(&self.cfg.topics, &p.topic, Side::Remote) else {
                    BridgeStatus::count(&self.status.dropped);
                    return ack_dropped(&mut live.remote, &p, &mut live.remote_sent);
                };
                let qos = p.qos;
                let remote_id = p.packet_id;
                if qos != QoS::AtMostOnce && live.to_local.values().any(|(r, _)| *r == remote_id) {
                    // Sent again (DUP) while still on its way here: once is enough.
                    return Ok(());
                }
                let local_id = if qos == QoS::AtMostOnce {
                    0
                } else {
                    let id = live.local_id();
                    live.to_local.insert(id, (remote_id, qos));
                    id
                };
                let out = carried(p, topic, local_id);
                live.local_sent = Instant::now();
                post(&mut live.local, &Packet::Publish(out))?;
                if qos == QoS::AtMostOnce {
                    BridgeStatus::count(&self.status.forwarded_in);
                }
                Ok(())
            }
            Packet::PubAck(a) => {
                let Some((local_id, _)) = live.to_remote.remove(&a.packet_id) else {
                    return Ok(());
                };
                if local_id == 0 {
                    // The link's own notification.
                    return self.send_waiting(live);
                }
                self.counted_out(&a);
                live.local_sent = Instant::now();
                post(&mut live.local, &Packet::PubAck(ack(local_id)))?;
                self.send_waiting(live)
            }
            Packet::PubRec(a) => {
                if a.reason.is_error() {
                    let Some((local_id, _)) = live.to_remote.remove(&a.packet_id) else {
                        return Ok(());
                    };
                    self.counted_out(&a);
                    post(&mut live.local, &Packet::PubRec(ack(local_id)))?;
                    return self.send_waiting(live);
                }
                live.remote_sent = Instant::now();
                post(&mut live.remote, &Packet::PubRel(ack(a.packet_id)))
            }
            Packet::PubComp(a) => {
                let Some((local_id, _)) = live.to_remote.remove(&a.packet_id) else {
                    return Ok(());
                };
                self.counted_out(&a);
                live.local_sent = Instant::now();
                post(&mut live.local, &Packet::PubRec(ack(local_id)))?;
                self.send_waiting(live)
            }
            Packet::PubRel(a) => {
                live.remote_sent = Instant::now();
                post(&mut live.remote, &Packet::PubComp(ack(a.packet_id)))
            }
            Packet::Disconnect(d) => Err(Stop::Failed(format!(
                "the remote broker disconnected: {}",
                d.reason.name()
            ))),
            _ => Ok(()),
        }
    }

    /// Publishes on the remote what waits, in order, while its window has room (QoS 0 waits
    /// behind the others only to keep the order).
    fn send_waiting(&self, live: &mut Live) -> Result<(), Stop> {
        while let Some(next) = live.waiting.front() {
            if next.qos != QoS::AtMostOnce && live.to_remote.len() >= live.remote_window {
                return Ok(());
            }
            let Some(mut out) = live.waiting.pop_front() else {
                return Ok(());
            };
            if out.qos != QoS::AtMostOnce {
                let id = live.remote_id();
                // The local session's id travelled in `packet_id` until now.
                live.to_remote.insert(id, (out.packet_id, out.qos));
                out.packet_id = id;
            }
            let qos = out.qos;
            live.remote_sent = Instant::now();
            post(&mut live.remote, &Packet::Publish(out))?;
            if qos == QoS::AtMostOnce {
                BridgeStatus::count(&self.status.forwarded_out);
            }
        }
        Ok(())
    }

    fn counted_in(&self, a: &Ack) {
        if a.reason.is_error() {
            BridgeStatus::count(&self.status.dropped);
        } else {
            BridgeStatus::count(&self.status.forwarded_in);
        }
    }

    fn counted_out(&self, a: &Ack) {
        if a.reason.is_error() {
            log::warn!(
                "bridge {}: the remote broker refused a message: {}",
                self.cfg.name,
                a.reason.name()
            );
            BridgeStatus::count(&self.status.dropped);
        } else {
            BridgeStatus::count(&self.status.forwarded_out);
        }
    }
}

impl Live {
    fn remote_id(&mut self) -> u16 {
        next_free(&mut self.next_remote_id, &self.to_remote)
    }

    fn local_id(&mut self) -> u16 {
        next_free(&mut self.next_local_id, &self.to_local)
    }

    /// PINGREQ where keep-alive asks for one; a side silent for one and a half keep-alive
    /// periods is lost.
    fn keep_alive(&mut self) -> Result<(), Stop> {
        let now = Instant::now();
        for side in [Side::Remote, Side::Local] {
            let (period, sent, heard, conn) = match side {
                Side::Remote => (
                    self.remote_keep_alive,
                    &mut self.remote_sent,
                    self.remote_heard,
                    &mut self.remote,
                ),
                Side::Local => (
                    self.local_keep_alive,
                    &mut self.local_sent,
                    self.local_heard,
                    &mut self.local,
                ),
            };
            if period.is_zero() {
                continue;
            }
            if now.duration_since(heard) > period + period / 2 {
                return Err(Stop::Failed(format!(
                    "keep alive: nothing heard for {} s",
                    now.duration_since(heard).as_secs()
                )));
            }
            if now.duration_since(*sent) >= period / 2 {
                *sent = now;
                send(conn, &Packet::PingReq)?;
            }
        }
        Ok(())
    }
}

/// The next packet id after `next` that `used` does not hold (never 0).
fn next_free<T>(next: &mut u16, used: &HashMap<u16, T>) -> u16 {
    loop {
        let id = *next;
        *next = next.checked_add(1).unwrap_or(1);
        if id != 0 && !used.contains_key(&id) {
            return id;
        }
    }
}

fn send(conn: &mut Conn, packet: &Packet) -> Result<(), Stop> {
    conn.send(packet).map_err(|e| {
        let side = match conn.side {
            Side::Remote => "remote",
            Side::Local => "local",
        };
        Stop::Failed(format!("{side} connection: {e}"))
    })
}

/// Queues a packet while forwarding; written when the events run out for a moment, every
/// [`FLUSH_EVERY`] packets handled, or once [`FLUSH_BYTES`] are queued.
fn post(conn: &mut Conn, packet: &Packet) -> Result<(), Stop> {
    conn.queue(packet);
    if conn.queued() >= FLUSH_BYTES {
        return flush(conn);
    }
    Ok(())
}

fn flush(conn: &mut Conn) -> Result<(), Stop> {
    conn.flush().map_err(|e| {
        let side = match conn.side {
            Side::Remote => "remote",
            Side::Local => "local",
        };
        Stop::Failed(format!("{side} connection: {e}"))
    })
}

fn disconnect(conn: &mut Conn) {
    let _ = conn.send(&Packet::Disconnect(Disconnect {
        reason: ReasonCode::Success,
        properties: Properties::default(),
    }));
    conn.close();
}

fn ack(packet_id: u16) -> Ack {
    Ack {
        packet_id,
        reason: ReasonCode::Success,
        properties: Properties::default(),
    }
}

/// A message no `topic` line maps (cannot happen with the bridge's own subscriptions, but a
/// remote may send anything): acknowledged so it is not sent again, and dropped.
fn ack_dropped(conn: &mut Conn, p: &Publish, sent: &mut Instant) -> Result<(), Stop> {
    *sent = Instant::now();
    match p.qos {
        QoS::AtMostOnce => Ok(()),
        QoS::AtLeastOnce => post(conn, &Packet::PubAck(ack(p.packet_id))),
        QoS::ExactlyOnce => post(conn, &Packet::PubRec(ack(p.packet_id))),
    }
}

/// The message as published on the other side: its topic there, the same QoS and retain
/// flag, and the properties that belong to the message (expiry as it stands now, content
/// type, response topic, correlation data, user properties); not the connection's own (topic
/// alias, subscription identifiers).
fn carried(p: Publish, topic: String, packet_id: u16) -> Publish {
    let properties = Properties {
        payload_format_indicator: p.properties.payload_format_indicator,
        message_expiry_interval: p.properties.message_expiry_interval,
        content_type: p.properties.content_type,
        response_topic: p.properties.response_topic,
        correlation_data: p.properties.correlation_data,
        user_properties: p.properties.user_properties,
        ..Properties::default()
    };
    Publish {
        dup: false,
        qos: p.qos,
        retain: p.retain,
        topic,
        packet_id,
        properties,
        payload: p.payload,
    }
}

/// A notification of the link's state: `1` up, `0` down, retained (QoS 1 with `packet_id`,
/// else QoS 0).
fn notification(topic: &str, up: bool, packet_id: u16) -> Packet {
    Packet::Publish(Publish {
        dup: false,
        qos: if packet_id == 0 {
            QoS::AtMostOnce
        } else {
            QoS::AtLeastOnce
        },
        retain: true,
        topic: topic.to_owned(),
        packet_id,
        properties: Properties::default(),
        payload: if up { b"1".to_vec() } else { b"0".to_vec() },
    })
}

/// The topic on the other side of a message that arrived on `from`'s side: the first `topic`
/// line of that direction whose filter matches, with its prefix swapped (Mosquitto's rule).
pub fn map_topic(topics: &[BridgeTopic], topic: &str, from: Side) -> Option<String> {
    topics.iter().find_map(|t| {
        let (wanted, filter, from_prefix, to_prefix) = match from {
            Side::Local => (
                t.direction.outgoing(),
                t.local_filter(),
                &t.local_prefix,
                &t.remote_prefix,
            ),
            Side::Remote => (
                t.direction.incoming(),
                t.remote_filter(),
                &t.remote_prefix,
                &t.local_prefix,
            ),
        };
        if !wanted || !filter_matches(&filter, topic) {
            return None;
        }
        let rest = topic.strip_prefix(from_prefix.as_str())?;
        Some(format!("{to_prefix}{rest}"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bridge::config::Direction;

    fn topic(pattern: &str, direction: Direction, local: &str, remote: &str) -> BridgeTopic {
        BridgeTopic {
            pattern: pattern.into(),
            direction,
            qos: QoS::AtLeastOnce,
            local_prefix: local.into(),
            remote_prefix: remote.into(),
        }
    }

    #[test]
    fn prefixes_are_swapped_per_direction() {
        let topics = vec![
            topic("sensors/#", Direction::Out, "house/", "site1/"),
            topic("cmd/#", Direction::In, "", "ctl/"),
        ];
        assert_eq!(
            map_topic(&topics, "house/sensors/t", Side::Local).as_deref(),
            Some("site1/sensors/t")
        );
        assert_eq!(
            map_topic(&topics, "ctl/cmd/x", Side::Remote).as_deref(),
            Some("cmd/x")
        );
        // `out` lines do not map what comes from the remote, nor `in` lines the local.
        assert_eq!(map_topic(&topics, "site1/sensors/t", Side::Remote), None);
        assert_eq!(map_topic(&topics, "cmd/x", Side::Local), None);
    }

    #[test]
    fn packet_ids_skip_those_in_flight_and_zero() {
        let mut used = HashMap::new();
        used.insert(1u16, ());
        used.insert(u16::MAX, ());
        let mut next = u16::MAX;
        assert_eq!(next_free(&mut next, &used), 2);
    }
}
