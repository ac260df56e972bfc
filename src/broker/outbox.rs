//! A connection's outbound side: the outbox (control packets waiting to go, a wake-up flag, the
//! close request) and the writer thread, which is the only code that writes to the socket.
//!
//! Anyone may queue a control packet or wake the writer: the reader thread (acks, SUBACK,
//! PINGRESP), publishers (after queueing into the session), a takeover or a server stop (close).
//! The writer coalesces everything waiting into one buffer and writes it with as few syscalls as
//! possible. A client that stops reading blocks only its own writer; the session queue in front
//! of it is bounded, so publishers never wait for it.

use std::collections::HashMap;
use std::io::{self, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

use super::session::{Outgoing, Session};
use super::stats::Stats;
use crate::protocol::{self, publish, Packet, ProtocolVersion, PublishOut, QoS};

/// How many messages the writer takes from the session per batch: bounds the time the session
/// lock is held and the size of one write.
const MAX_BATCH: usize = 256;

/// How often a writer blocked on a full socket looks at the close flag.
const WRITE_POLL: Duration = Duration::from_millis(500);

pub struct Outbox {
    /// Identifies the connection, for logs and for telling a stale outbox from the live one.
    pub conn_id: u64,
    pub version: ProtocolVersion,
    inner: Mutex<Inner>,
    cv: Condvar,
}

struct Inner {
    /// Encoded control packets (acks, SUBACK, PINGRESP, …), in the order they were queued.
    control: Vec<u8>,
    /// The session may have something new to send.
    dirty: bool,
    /// Write what is queued, then shut the socket down and stop.
    closing: bool,
}

impl Outbox {
    pub fn new(conn_id: u64, version: ProtocolVersion) -> Outbox {
        Outbox {
            conn_id,
            version,
            inner: Mutex::new(Inner {
                control: Vec::new(),
                dirty: false,
                closing: false,
            }),
            cv: Condvar::new(),
        }
    }

    /// Queues a control packet for the client.
    pub fn send(&self, packet: &Packet) {
        let mut inner = self.inner.lock();
        if inner.closing {
            return;
        }
        protocol::encode(packet, self.version, &mut inner.control);
        drop(inner);
        self.cv.notify_one();
    }

    /// Tells the writer that the session may have messages for it.
    pub fn wake(&self) {
        let mut inner = self.inner.lock();
        if inner.dirty {
            return;
        }
        inner.dirty = true;
        drop(inner);
        self.cv.notify_one();
    }

    /// Asks the writer to send `last` (a DISCONNECT, a refusing CONNACK) after what is already
    /// queued, then close the connection. Later sends are ignored.
    pub fn close(&self, last: Option<&Packet>) {
        let mut inner = self.inner.lock();
        if inner.closing {
            return;
        }
        if let Some(packet) = last {
            protocol::encode(packet, self.version, &mut inner.control);
        }
        inner.closing = true;
        drop(inner);
        self.cv.notify_one();
    }

    pub fn is_closing(&self) -> bool {
        self.inner.lock().closing
    }

    /// Waits for work; returns the control bytes (appended to `buf`) and whether to close.
    fn wait_for_work(&self, buf: &mut Vec<u8>, more: bool) -> bool {
        let mut inner = self.inner.lock();
        while !more && !inner.dirty && inner.control.is_empty() && !inner.closing {
            self.cv.wait(&mut inner);
        }
        inner.dirty = false;
        buf.append(&mut inner.control);
        inner.closing
    }
}

/// Outbound topic aliases of one connection (§3.3.2.3.4): the first `maximum` distinct topics
/// get an alias; later messages on them carry only the alias. Per connection, so an alias never
/// leaks from one client to another.
struct Aliases {
    maximum: u16,
    map: HashMap<String, u16>,
}

impl Aliases {
    /// (topic to write, alias to write, whether the alias is new) for `topic`, without
    /// recording anything: the caller commits a new alias only once the packet is really sent.
    fn choose<'a>(&self, topic: &'a str) -> (&'a str, Option<u16>, bool) {
        if self.maximum == 0 {
            return (topic, None, false);
        }
        if let Some(&alias) = self.map.get(topic) {
            return ("", Some(alias), false);
        }
        match u16::try_from(self.map.len() + 1) {
            Ok(alias) if alias <= self.maximum => (topic, Some(alias), true),
            _ => (topic, None, false),
        }
    }

    fn commit(&mut self, topic: &str, alias: u16) {
        self.map.insert(topic.to_owned(), alias);
    }
}

/// Everything the writer thread needs; moved into it.
pub struct Writer {
    pub outbox: Arc<Outbox>,
    pub session: Arc<Session>,
    pub stream: Arc<TcpStream>,
    pub stats: Arc<Stats>,
    pub outbound_topic_aliases: bool,
}

impl Writer {
    /// The writer thread's body: runs until the outbox is closed or the socket fails.
    pub fn run(mut self) {
        let _ = self.stream.set_write_timeout(Some(WRITE_POLL));
        let link = self.session.state.lock().link;
        let mut aliases = Aliases {
            maximum: if self.outbound_topic_aliases && link.protocol.is_v5() {
                link.topic_alias_maximum
            } else {
                0
            },
            map: HashMap::new(),
        };
        // Grown by what is written: an idle connection holds no write buffer to speak of.
        let mut buf: Vec<u8> = Vec::new();
        let mut batch: Vec<Outgoing> = Vec::new();
        let mut more = false;
        loop {
            let closing = self.outbox.wait_for_work(&mut buf, more);
            more = false;
            if !closing {
                let mut st = self.session.state.lock();
                let live = st
                    .outbox
                    .as_ref()
                    .is_some_and(|o| Arc::ptr_eq(o, &self.outbox));
                if live {
                    st.take_sendable(Instant::now(), MAX_BATCH, &mut batch);
                    more = st.has_sendable();
                }
            }
            if !batch.is_empty() {
                self.encode_batch(&mut batch, &mut aliases, link.max_packet_size, &mut buf);
            }
            if !buf.is_empty() {
                if let Err(e) = self.write_all(&buf) {
                    log::debug!("conn {}: write failed: {e}", self.outbox.conn_id);
                    break;
                }
                self.stats
                    .bytes_sent
                    .fetch_add(buf.len() as u64, Ordering::Relaxed);
                buf.clear();
            }
            if closing {
                break;
            }
        }
        let _ = (&*self.stream).flush();
        let _ = self.stream.shutdown(Shutdown::Both);
    }

    fn encode_batch(
        &self,
        batch: &mut Vec<Outgoing>,
        aliases: &mut Aliases,
        max_packet_size: u32,
        buf: &mut Vec<u8>,
    ) {
        let now = Instant::now();
        let version = self.outbox.version;
        let mut too_large: Vec<u16> = Vec::new();
        let mut sent = 0u64;
        for item in batch.drain(..) {
            match item {
                Outgoing::PubRel { packet_id } => {
                    let rel = Packet::PubRel(protocol::Ack {
                        packet_id,
                        reason: protocol::ReasonCode::Success,
                        properties: Default::default(),
                    });
                    protocol::encode(&rel, version, buf);
                }
                Outgoing::Publish {
                    delivery,
                    packet_id,
                    dup,
                } => {
                    let msg = &delivery.msg;
                    let expiry = match msg.remaining_expiry(now) {
                        Ok(e) => e,
                        // Expired while in flight: it was sent once already, so resend as is.
                        Err(_) => Some(1),
                    };
                    let full = PublishOut {
                        dup,
                        qos: delivery.qos,
                        retain: delivery.retain,
                        topic: &msg.topic,
                        packet_id,
                        properties: &msg.properties,
                        message_expiry_interval: expiry,
                        topic_alias: None,
                        subscription_identifiers: &delivery.sub_ids,
                        payload: &msg.payload,
                    };
                    let fits = |out: &PublishOut| {
                        u32::try_from(publish::out_len(version, out))
                            .is_ok_and(|l| l <= max_packet_size)
                    };
                    let (topic, topic_alias, new_alias) = aliases.choose(&msg.topic);
                    let aliased = PublishOut {
                        topic,
                        topic_alias,
                        ..full
                    };
                    // A new alias is recorded only with a packet that goes out; if the alias
                    // property is what makes it too large, send it without one.
                    let out = if fits(&aliased) {
                        if let (true, Some(alias)) = (new_alias, topic_alias) {
                            aliases.commit(&msg.topic, alias);
                        }
                        aliased
                    } else {
                        full
                    };
                    if !fits(&out) {
                        // MQTT-3.1.2-24: never send a packet above the client's maximum.
                        self.stats.dropped.fetch_add(1, Ordering::Relaxed);
                        if delivery.qos != QoS::AtMostOnce {
                            too_large.push(packet_id);
                        }
                        continue;
                    }
                    publish::write_out(buf, version, &out);
                    sent += 1;
                }
            }
        }
        self.stats.messages_sent.fetch_add(sent, Ordering::Relaxed);
        if !too_large.is_empty() {
            let mut st = self.session.state.lock();
            for id in too_large {
                st.discard_inflight(id);
            }
        }
    }

    /// Writes everything, polling the close flag while the client does not read.
    fn write_all(&mut self, mut data: &[u8]) -> io::Result<()> {
        while !data.is_empty() {
            match (&*self.stream).write(data) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => data = &data[n..],
                Err(e)
                    if e.kind() == io::ErrorKind::WouldBlock
                        || e.kind() == io::ErrorKind::TimedOut =>
                {
                    if self.outbox.is_closing() {
                        return Err(io::ErrorKind::TimedOut.into());
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}
