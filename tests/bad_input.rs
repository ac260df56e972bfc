//! Hostile and malformed input over real TCP against the real `mqtt5-broker` binary, in MQTT 5.0
//! and 3.1.1 (issue 7): length fields that disagree with the Remaining Length, huge Remaining
//! Length claims followed by a stall, 5-byte Variable Byte Integers, MQTT 5 property abuse,
//! packets in the wrong state or direction, reserved flag bits, empty fields, QoS 3, packet id 0,
//! invalid topics and filters, QoS state abuse, bad wills, client id takeover races and
//! slowloris senders.
//!
//! Most cases live in tables (`Vec<Case>`): each row is a name citing the spec (`mqtt_3_1_2_3_…`
//! = conformance statement [MQTT-3.1.2-3]; `spec_3_3_2_3_4_…` = section §3.3.2.3.4; a `v311_`
//! prefix means the MQTT 3.1.1 statement / section), the raw bytes, and the reaction the spec
//! requires: CONNACK / DISCONNECT with a reason code, a plain close, or specific replies with the
//! connection still open (proved by a PINGREQ → PINGRESP round trip). One broker serves a whole
//! table; after EVERY case a fresh 5.0 and a fresh 3.1.1 client connect, subscribe, publish and
//! receive, and the broker's VmRSS must stay within [`RSS_GROWTH_KB`] of its level after start.
//! All failures of a table are collected and reported together, each by case name.
//!
//! Where the spec only says MAY (e.g. "MAY send a CONNACK with reason code … before closing",
//! §4.13.1), the case accepts both the packet with the listed reason codes and a plain close;
//! where it says SHOULD send DISCONNECT (§4.13.1, errors after CONNECT), the DISCONNECT is
//! required. MQTT 3.1.1 has no server DISCONNECT: every protocol violation must be answered by
//! closing the connection (3.1.1 §4.8, [MQTT-4.8.0-1]).
//!
//! Every case "stalls" after its bytes: the client sends nothing more and keeps the socket open.
//! Reactions are awaited for at most [`WAIT`] (3 s), well below the keep alive (60 s) and the
//! connect timeout (10 s), so a close proves the broker decided from the bytes it had — for the
//! huge Remaining Length claims, from the fixed header alone, before buffering any body.

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

use common::procfs::rss_kb;
use common::{api_status, connect_raw, hex, packet, Broker};

const ANON: &str = "--allow-anonymous";
/// How long a reaction may take.
const WAIT: Duration = Duration::from_secs(3);
/// Allowed growth of the broker's VmRSS over its level after start and one health check.
const RSS_GROWTH_KB: u64 = 16 * 1024;

// ------------------------------------------------------------------ byte builders

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum V {
    V5,
    V311,
}

fn cat(parts: &[&[u8]]) -> Vec<u8> {
    parts.concat()
}

/// UTF-8 Encoded String (§1.5.4).
fn s(x: &str) -> Vec<u8> {
    packet::utf8(x)
}

/// A length-prefixed field with arbitrary (possibly invalid UTF-8) bytes.
fn raw(b: &[u8]) -> Vec<u8> {
    packet::binary(b)
}

/// Property block: Property Length + properties.
fn props(p: &[u8]) -> Vec<u8> {
    packet::properties(p)
}

/// CONNECT with explicit Protocol Name, Level and Connect Flags, Keep Alive 60, then `rest`
/// (5.0: the property block and payload; 3.1.1: the payload).
fn connect_bytes(name: &str, level: u8, flags: u8, rest: &[u8]) -> Vec<u8> {
    let mut body = s(name);
    body.push(level);
    body.push(flags);
    body.extend(60u16.to_be_bytes());
    body.extend_from_slice(rest);
    packet::fixed(0x10, &body)
}

/// 5.0 CONNECT: flags, CONNECT properties, payload.
fn c5(flags: u8, connect_props: &[u8], payload: &[u8]) -> Vec<u8> {
    connect_bytes("MQTT", 5, flags, &cat(&[&props(connect_props), payload]))
}

/// 3.1.1 CONNECT: flags, payload.
fn c4(flags: u8, payload: &[u8]) -> Vec<u8> {
    connect_bytes("MQTT", 4, flags, payload)
}

/// 5.0 CONNECT payload with a will: client id, Will Properties, Will Topic, Will Payload.
fn will5(id: &str, will_props: &[u8], topic: &[u8], payload: &[u8]) -> Vec<u8> {
    cat(&[&s(id), &props(will_props), &raw(topic), &raw(payload)])
}

/// 3.1.1 CONNECT payload with a will.
fn will4(id: &str, topic: &[u8], payload: &[u8]) -> Vec<u8> {
    cat(&[&s(id), &raw(topic), &raw(payload)])
}

/// 5.0 PUBLISH with a raw first byte, raw topic bytes, optional packet id and properties.
fn p5(first: u8, topic: &[u8], id: Option<u16>, properties: &[u8], payload: &[u8]) -> Vec<u8> {
    let mut body = raw(topic);
    if let Some(id) = id {
        body.extend(id.to_be_bytes());
    }
    body.extend(props(properties));
    body.extend_from_slice(payload);
    packet::fixed(first, &body)
}

/// 3.1.1 PUBLISH.
fn p4(first: u8, topic: &[u8], id: Option<u16>, payload: &[u8]) -> Vec<u8> {
    let mut body = raw(topic);
    if let Some(id) = id {
        body.extend(id.to_be_bytes());
    }
    body.extend_from_slice(payload);
    packet::fixed(first, &body)
}

/// SUBSCRIBE with a raw first byte and one (filter, options) entry; `properties` only for 5.0.
fn sub(first: u8, id: u16, properties: Option<&[u8]>, filter: &[u8], options: u8) -> Vec<u8> {
    let mut body = id.to_be_bytes().to_vec();
    if let Some(p) = properties {
        body.extend(props(p));
    }
    body.extend(raw(filter));
    body.push(options);
    packet::fixed(first, &body)
}

/// UNSUBSCRIBE with a raw first byte and one filter; `properties` only for 5.0.
fn unsub(first: u8, id: u16, properties: Option<&[u8]>, filter: &[u8]) -> Vec<u8> {
    let mut body = id.to_be_bytes().to_vec();
    if let Some(p) = properties {
        body.extend(props(p));
    }
    body.extend(raw(filter));
    packet::fixed(first, &body)
}

/// A fixed header claiming `remaining` bytes, and nothing after it.
fn header_only(first: u8, remaining: u32) -> Vec<u8> {
    let mut v = vec![first];
    v.extend(packet::varint(remaining));
    v
}

/// The Remaining Length that makes a whole packet exactly `total` bytes.
fn remaining_for_total(total: u32) -> u32 {
    (1..=4)
        .map(|n| total - 1 - n)
        .find(|rl| packet::varint(*rl).len() as u32 == total - 1 - rl)
        .expect("representable size")
}

// ------------------------------------------------------------------ expectations

/// A packet the broker must send before the end state.
#[derive(Debug, Clone)]
enum Reply {
    /// PUBACK / PUBREC / PUBREL / PUBCOMP: exact first byte, packet id, and the accepted 5.0
    /// reason codes (3.1.1 acks carry none; a 5.0 ack of length 2 means 0x00).
    Ack(u8, u16, &'static [u8]),
    /// SUBACK for a one-filter SUBSCRIBE: packet id and accepted reason / return codes.
    SubAck(u16, &'static [u8]),
}

/// How the exchange must end.
#[derive(Debug, Clone)]
enum End {
    /// The connection is still open: a PINGREQ is answered with PINGRESP and nothing else.
    Open,
    /// Closed without a byte.
    Closed,
    /// 5.0 DISCONNECT with one of these reasons, then closed.
    Disconnect(&'static [u8]),
    /// 5.0 CONNACK (Session Present 0) with one of these reasons, then closed.
    Connack(&'static [u8]),
    /// Either [`End::Connack`] or a plain close (the spec says MAY send CONNACK).
    ConnackOrClose(&'static [u8]),
    /// 3.1.1 CONNACK `20 02 00 rc`, then closed.
    ConnackV311(u8),
    /// 3.1.1 CONNACK with a non-zero return code then closed, or just closed.
    ConnackV311RefusedOrClose,
    /// CONNACK Success (5.0 reason 0x00 / 3.1.1 `20 02 00 00`), then open.
    Accepted,
}

/// Alternatives; the first that matches wins.
#[derive(Debug, Clone)]
struct Expect(Vec<(Vec<Reply>, End)>);

fn end(e: End) -> Expect {
    Expect(vec![(vec![], e)])
}

fn replies(r: Vec<Reply>, e: End) -> Expect {
    Expect(vec![(r, e)])
}

fn disc(codes: &'static [u8]) -> Expect {
    end(End::Disconnect(codes))
}

fn closed() -> Expect {
    end(End::Closed)
}

fn connack(codes: &'static [u8]) -> Expect {
    end(End::Connack(codes))
}

fn connack_or_close(codes: &'static [u8]) -> Expect {
    end(End::ConnackOrClose(codes))
}

impl Expect {
    fn or(mut self, other: Expect) -> Expect {
        self.0.extend(other.0);
        self
    }
}

/// One table row.
struct Case {
    name: String,
    v: V,
    /// Send a valid CONNECT (and expect CONNACK Success) before the case bytes.
    connect: bool,
    bytes: Vec<u8>,
    expect: Expect,
}

fn pre(name: &str, v: V, bytes: Vec<u8>, expect: Expect) -> Case {
    Case {
        name: name.to_string(),
        v,
        connect: false,
        bytes,
        expect,
    }
}

fn post(name: &str, v: V, bytes: Vec<u8>, expect: Expect) -> Case {
    Case {
        name: name.to_string(),
        v,
        connect: true,
        bytes,
        expect,
    }
}

// ------------------------------------------------------------------ reading

/// What the broker did next.
#[derive(Debug, Clone)]
enum Ev {
    Pkt(Vec<u8>),
    Closed,
    Timeout,
    /// Bytes that do not frame as an MQTT packet (a broker bug).
    Garbage(Vec<u8>),
}

fn describe(e: &Ev) -> String {
    match e {
        Ev::Pkt(p) => format!("packet {}", hex(p)),
        Ev::Closed => "a close".into(),
        Ev::Timeout => format!("nothing within {WAIT:?} (connection still open)"),
        Ev::Garbage(b) => format!("unframeable bytes {}", hex(b)),
    }
}

fn read_some(s: &TcpStream, buf: &mut [u8], deadline: Instant) -> Result<usize, Ev> {
    let mut r = s;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(Ev::Timeout);
        }
        s.set_read_timeout(Some(left)).map_err(|_| Ev::Closed)?;
        match r.read(buf) {
            Ok(0) => return Err(Ev::Closed),
            Ok(n) => return Ok(n),
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                return Err(Ev::Timeout)
            }
            Err(_) => return Err(Ev::Closed), // reset / aborted
        }
    }
}

fn read_exact_by(s: &TcpStream, n: usize, deadline: Instant) -> Result<Vec<u8>, Ev> {
    let mut buf = vec![0u8; n];
    let mut got = 0;
    while got < n {
        got += read_some(s, &mut buf[got..], deadline)?;
    }
    Ok(buf)
}

/// The next whole packet (or close / timeout) within `wait`; once its first byte is in, the
/// rest gets at least 5 s, so a slow moment never cuts a packet in two.
fn read_event(s: &TcpStream, wait: Duration) -> Ev {
    let mut pkt = match read_exact_by(s, 1, Instant::now() + wait) {
        Ok(b) => b,
        Err(e) => return e,
    };
    let deadline = Instant::now() + wait.max(Duration::from_secs(5));
    let mut len = 0usize;
    for i in 0..4 {
        let b = match read_exact_by(s, 1, deadline) {
            Ok(b) => b[0],
            Err(e) => return e,
        };
        pkt.push(b);
        len |= usize::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            break;
        }
        if i == 3 {
            return Ev::Garbage(pkt);
        }
    }
    match read_exact_by(s, len, deadline) {
        Ok(body) => {
            pkt.extend(body);
            Ev::Pkt(pkt)
        }
        Err(e) => e,
    }
}

/// Splits a whole packet into (first byte, body).
fn split(p: &[u8]) -> (u8, &[u8]) {
    let mut i = 1;
    while i < p.len() && p[i] & 0x80 != 0 {
        i += 1;
    }
    (p[0], p.get(i + 1..).unwrap_or_default())
}

/// Skips a Variable Byte Integer and the bytes it counts (a property block).
fn skip_props(b: &[u8]) -> Option<&[u8]> {
    let mut len = 0usize;
    for i in 0..4 {
        let byte = *b.get(i)?;
        len |= usize::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return b.get(i + 1 + len..);
        }
    }
    None
}

fn match_reply(r: &Reply, p: &[u8], v: V) -> Result<(), String> {
    let (first, body) = split(p);
    let bad = || format!("expected {r:?}, got packet {}", hex(p));
    match r {
        Reply::Ack(f, id, reasons) => {
            if first != *f || body.len() < 2 || u16::from_be_bytes([body[0], body[1]]) != *id {
                return Err(bad());
            }
            match v {
                V::V311 if body.len() != 2 => Err(bad()),
                V::V311 => Ok(()),
                V::V5 => {
                    let reason = body.get(2).copied().unwrap_or(0);
                    if reasons.contains(&reason) {
                        Ok(())
                    } else {
                        Err(bad())
                    }
                }
            }
        }
        Reply::SubAck(id, reasons) => {
            if first != 0x90 || body.len() < 3 || u16::from_be_bytes([body[0], body[1]]) != *id {
                return Err(bad());
            }
            let codes = match v {
                V::V5 => skip_props(&body[2..]).ok_or_else(bad)?,
                V::V311 => &body[2..],
            };
            if codes.len() == 1 && reasons.contains(&codes[0]) {
                Ok(())
            } else {
                Err(bad())
            }
        }
    }
}

/// A connection under test: events are cached so that alternatives can be matched in turn.
struct Peer {
    s: TcpStream,
    seen: Vec<Ev>,
    pos: usize,
}

impl Peer {
    fn new(s: TcpStream) -> Peer {
        Peer {
            s,
            seen: Vec::new(),
            pos: 0,
        }
    }

    fn next(&mut self) -> Ev {
        if let Some(e) = self.seen.get(self.pos) {
            self.pos += 1;
            return e.clone();
        }
        if let Some(last @ (Ev::Closed | Ev::Timeout | Ev::Garbage(_))) = self.seen.last() {
            return last.clone();
        }
        let e = read_event(&self.s, WAIT);
        self.seen.push(e.clone());
        self.pos += 1;
        e
    }

    fn expect_closed_next(&mut self, what: &str) -> Result<(), String> {
        match self.next() {
            Ev::Closed => Ok(()),
            other => Err(format!(
                "after {what}: expected a close, got {}",
                describe(&other)
            )),
        }
    }

    fn expect_open(&mut self) -> Result<(), String> {
        let mut w = &self.s;
        if let Err(e) = w.write_all(&packet::pingreq()) {
            return Err(format!(
                "expected the connection open, but PINGREQ failed: {e}"
            ));
        }
        match self.next() {
            Ev::Pkt(p) if p == packet::pingresp() => Ok(()),
            other => Err(format!(
                "expected the connection open (PINGRESP to PINGREQ), got {}",
                describe(&other)
            )),
        }
    }

    fn eval(&mut self, v: V, replies: &[Reply], end: &End) -> Result<(), String> {
        for r in replies {
            match self.next() {
                Ev::Pkt(p) => match_reply(r, &p, v)?,
                other => return Err(format!("expected {r:?}, got {}", describe(&other))),
            }
        }
        match end {
            End::Open => self.expect_open(),
            End::Closed => self.expect_closed_next("the bad input"),
            End::Disconnect(codes) => match self.next() {
                Ev::Pkt(p) if p[0] == 0xe0 => {
                    let (_, body) = split(&p);
                    let reason = body.first().copied().unwrap_or(0);
                    if !codes.contains(&reason) {
                        return Err(format!(
                            "DISCONNECT reason 0x{reason:02x}, expected one of {}",
                            hex(codes)
                        ));
                    }
                    self.expect_closed_next("DISCONNECT")
                }
                other => Err(format!(
                    "expected DISCONNECT {} then close, got {}",
                    hex(codes),
                    describe(&other)
                )),
            },
            End::Connack(codes) | End::ConnackOrClose(codes) => match self.next() {
                Ev::Closed if matches!(end, End::ConnackOrClose(_)) => Ok(()),
                Ev::Pkt(p) if p[0] == 0x20 => {
                    let (_, body) = split(&p);
                    if body.len() < 2 || !codes.contains(&body[1]) {
                        return Err(format!(
                            "CONNACK {}, expected reason one of {}",
                            hex(&p),
                            hex(codes)
                        ));
                    }
                    if body[0] != 0 {
                        return Err(format!(
                            "refusing CONNACK with Session Present (MQTT-3.2.2-6): {}",
                            hex(&p)
                        ));
                    }
                    self.expect_closed_next("a refusing CONNACK (MQTT-3.2.2-7)")
                }
                other => Err(format!(
                    "expected CONNACK {} then close, got {}",
                    hex(codes),
                    describe(&other)
                )),
            },
            End::ConnackV311(rc) => match self.next() {
                Ev::Pkt(p) if p == [0x20, 0x02, 0x00, *rc] => {
                    self.expect_closed_next("a refusing CONNACK")
                }
                other => Err(format!(
                    "expected CONNACK 20 02 00 {rc:02x} then close, got {}",
                    describe(&other)
                )),
            },
            End::ConnackV311RefusedOrClose => match self.next() {
                Ev::Closed => Ok(()),
                Ev::Pkt(p) if p.len() == 4 && p[..3] == [0x20, 0x02, 0x00] && p[3] != 0 => {
                    self.expect_closed_next("a refusing CONNACK")
                }
                other => Err(format!(
                    "expected a refusing CONNACK or a close, got {}",
                    describe(&other)
                )),
            },
            End::Accepted => match self.next() {
                Ev::Pkt(p) if p[0] == 0x20 && split(&p).1.get(1) == Some(&0) => {
                    if v == V::V311 && p != [0x20, 0x02, 0x00, 0x00] {
                        return Err(format!("3.1.1 CONNACK {}", hex(&p)));
                    }
                    self.expect_open()
                }
                other => Err(format!(
                    "expected CONNACK Success, got {}",
                    describe(&other)
                )),
            },
        }
    }

    fn check(&mut self, v: V, expect: &Expect) -> Result<(), String> {
        let mut errors = Vec::new();
        for (replies, end) in &expect.0 {
            self.pos = 0;
            match self.eval(v, replies, end) {
                Ok(()) => return Ok(()),
                Err(e) => errors.push(e),
            }
        }
        Err(errors.join("; or: "))
    }
}

// ------------------------------------------------------------------ clients

fn write_r(s: &TcpStream, bytes: &[u8]) -> Result<(), String> {
    let mut w = s;
    w.write_all(bytes)
        .map_err(|e| format!("send {}: {e}", hex(&bytes[..bytes.len().min(32)])))
}

fn next_packet(s: &TcpStream, what: &str) -> Result<Vec<u8>, String> {
    match read_event(s, WAIT) {
        Ev::Pkt(p) => Ok(p),
        other => Err(format!("{what}: got {}", describe(&other))),
    }
}

/// A connected client (CONNACK Success checked), clean start, keep alive 60.
fn client(b: &Broker, v: V, id: &str) -> Result<TcpStream, String> {
    let s = connect_raw(b.mqtt);
    let connect = match v {
        V::V5 => packet::connect_v5(id, 60, true),
        V::V311 => packet::connect_v311(id, 60, true),
    };
    write_r(&s, &connect)?;
    let p = next_packet(&s, &format!("CONNACK for {id}"))?;
    let ok = match v {
        V::V5 => p[0] == 0x20 && split(&p).1.get(1) == Some(&0),
        V::V311 => p == [0x20, 0x02, 0x00, 0x00],
    };
    if ok {
        Ok(s)
    } else {
        Err(format!("CONNACK for {id}: {}", hex(&p)))
    }
}

/// A received PUBLISH: (qos, packet id, topic, payload).
fn parse_publish(p: &[u8], v: V) -> Option<(u8, u16, String, Vec<u8>)> {
    let (first, body) = split(p);
    if first & 0xf0 != 0x30 {
        return None;
    }
    let qos = (first >> 1) & 3;
    let tlen = usize::from(u16::from_be_bytes([*body.first()?, *body.get(1)?]));
    let topic = String::from_utf8(body.get(2..2 + tlen)?.to_vec()).ok()?;
    let mut rest = body.get(2 + tlen..)?;
    let mut id = 0;
    if qos > 0 {
        id = u16::from_be_bytes([*rest.first()?, *rest.get(1)?]);
        rest = rest.get(2..)?;
    }
    if v == V::V5 {
        rest = skip_props(rest)?;
    }
    Some((qos, id, topic, rest.to_vec()))
}

/// A fresh 5.0 and a fresh 3.1.1 subscriber both receive a QoS 1 message from a fresh 5.0 and
/// from a fresh 3.1.1 publisher.
fn health(b: &Broker, tag: &str) -> Result<(), String> {
    let topic = format!("health/{tag}");
    let subs = [
        (V::V5, client(b, V::V5, &format!("hs5-{tag}"))?),
        (V::V311, client(b, V::V311, &format!("hs4-{tag}"))?),
    ];
    for (v, s) in &subs {
        write_r(s, &packet::subscribe(*v == V::V5, 1, &topic, 1))?;
        let p = next_packet(s, "SUBACK")?;
        match_reply(&Reply::SubAck(1, &[0x01]), &p, *v)?;
    }
    for v in [V::V5, V::V311] {
        let p = client(b, v, &format!("hp{}-{tag}", v == V::V5))?;
        let payload = format!("{v:?}");
        write_r(
            &p,
            &packet::publish(
                v == V::V5,
                &topic,
                payload.as_bytes(),
                1,
                Some(1),
                false,
                false,
            ),
        )?;
        let ack = next_packet(&p, "PUBACK")?;
        match_reply(&Reply::Ack(0x40, 1, &[0x00]), &ack, v)?;
        write_r(&p, &packet::disconnect_v311())?;
    }
    for (v, s) in &subs {
        let mut got = Vec::new();
        for _ in 0..2 {
            let p = next_packet(s, "health PUBLISH")?;
            let (qos, id, t, payload) =
                parse_publish(&p, *v).ok_or_else(|| format!("not a PUBLISH: {}", hex(&p)))?;
            if t != topic || qos != 1 {
                return Err(format!("unexpected PUBLISH {}", hex(&p)));
            }
            write_r(s, &packet::puback(id))?;
            got.push(String::from_utf8_lossy(&payload).to_string());
        }
        got.sort();
        if got != ["V311", "V5"] {
            return Err(format!("{v:?} subscriber received {got:?}"));
        }
        write_r(s, &packet::disconnect_v311())?;
    }
    Ok(())
}

fn run_case(b: &Broker, c: &Case, idx: usize) -> Result<(), String> {
    let s = if c.connect {
        client(b, c.v, &format!("case-{idx}"))?
    } else {
        connect_raw(b.mqtt)
    };
    // A write may fail when the broker already closed (e.g. after a header): what it sent
    // before is still readable, so judge by the reaction.
    let mut w = &s;
    let _ = w.write_all(&c.bytes);
    Peer::new(s).check(c.v, &c.expect)
}

/// Runs every case against one broker; after each, a health check and the RSS bound. Panics
/// with every failure, by case name.
fn run_table(args: &[&str], cases: Vec<Case>) {
    let mut b = Broker::start(args);
    health(&b, "baseline").unwrap_or_else(|e| panic!("baseline health check: {e}"));
    let base = rss_kb(b.pid());
    let mut peak = base;
    let mut failures = Vec::new();
    for (i, c) in cases.iter().enumerate() {
        if let Err(e) = run_case(&b, c, i) {
            failures.push(format!(
                "{}: {e}\n    bytes: {}",
                c.name,
                short_hex(&c.bytes)
            ));
        }
        if let Some(st) = b.try_exit() {
            panic!(
                "broker died ({st}) after case {}\n{}\n--- broker log ---\n{}",
                c.name,
                failures.join("\n"),
                b.log()
            );
        }
        if let Err(e) = health(&b, &format!("{i}")) {
            failures.push(format!("{}: afterwards a fresh client failed: {e}", c.name));
        }
        let rss = rss_kb(b.pid());
        peak = peak.max(rss);
        if rss > base + RSS_GROWTH_KB {
            failures.push(format!(
                "{}: broker VmRSS {rss} kB exceeds {base} kB + {RSS_GROWTH_KB} kB",
                c.name
            ));
        }
    }
    eprintln!(
        "{} cases, {} failed; broker VmRSS {base} kB at start, peak {peak} kB",
        cases.len(),
        failures.len()
    );
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}\n--- broker log (tail) ---\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n"),
        tail(&b.log(), 60)
    );
}

fn short_hex(b: &[u8]) -> String {
    if b.len() <= 48 {
        hex(b)
    } else {
        format!("{} … ({} bytes)", hex(&b[..48]), b.len())
    }
}

fn tail(log: &str, n: usize) -> String {
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

// ------------------------------------------------------------------ the 5.0 table

#[rustfmt::skip]
fn v5_cases() -> Vec<Case> {
    use V::V5;
    let id = |x: &str| s(x);
    let too_big = remaining_for_total(1_048_577);
    let mut qos2_flood = Vec::new();
    let mut qos2_acks = Vec::new();
    for i in 1..=21u16 {
        qos2_flood.extend(p5(0x34, b"flood", Some(i), &[], b"x"));
        if i <= 20 {
            qos2_acks.push(Reply::Ack(0x50, i, &[0x00, 0x10]));
        }
    }
    vec![
        // ---- CONNECT: lengths, Variable Byte Integers, huge claims
        pre("mqtt_3_1_4_1_v5_connect_client_id_length_overruns_remaining_length", V5,
            c5(0x02, &[], &[0x00, 0x10, b'a', b'b']), connack_or_close(&[0x81])),
        pre("mqtt_3_1_4_1_v5_connect_bytes_left_after_payload", V5,
            c5(0x02, &[], &cat(&[&id("p2"), &[0x00]])), connack_or_close(&[0x81])),
        pre("mqtt_3_1_4_1_v5_connect_remaining_length_ends_inside_protocol_name", V5,
            vec![0x10, 0x03, 0x00, 0x04, 0x4d], connack_or_close(&[0x81])),
        pre("mqtt_3_1_4_1_v5_connect_ends_inside_keep_alive", V5,
            vec![0x10, 0x08, 0x00, 0x04, b'M', b'Q', b'T', b'T', 0x05, 0x02],
            connack_or_close(&[0x81])),
        pre("mqtt_1_5_5_1_v5_connect_remaining_length_of_five_bytes", V5,
            vec![0x10, 0xff, 0xff, 0xff, 0xff, 0x01], connack_or_close(&[0x81])),
        pre("spec_3_2_2_3_6_v5_connect_claiming_268_mb_then_stall_is_refused_at_header", V5,
            header_only(0x10, 268_435_455), connack_or_close(&[0x95, 0x81])),
        pre("spec_2_2_2_1_v5_connect_property_length_overruns_packet", V5,
            connect_bytes("MQTT", 5, 0x02, &cat(&[&[0x14, 0x11, 0, 0, 0, 10], &id("p19")])),
            connack_or_close(&[0x81])),
        // ---- CONNECT: flags
        pre("mqtt_3_1_2_3_v5_connect_reserved_flag_set", V5,
            c5(0x03, &[], &id("p6")), connack_or_close(&[0x81])),
        pre("mqtt_3_1_2_11_v5_will_qos_without_will_flag", V5,
            c5(0x0a, &[], &id("p7")), connack_or_close(&[0x81])),
        pre("mqtt_3_1_2_13_v5_will_retain_without_will_flag", V5,
            c5(0x22, &[], &id("p8")), connack_or_close(&[0x81])),
        pre("mqtt_3_1_2_12_v5_will_qos_3", V5,
            c5(0x1e, &[], &will5("p9", &[], b"w/t", b"x")), connack_or_close(&[0x81])),
        // ---- CONNECT: property abuse
        pre("spec_3_1_2_11_2_v5_duplicate_session_expiry_interval", V5,
            c5(0x02, &[0x11, 0, 0, 0, 10, 0x11, 0, 0, 0, 10], &id("p10")), connack_or_close(&[0x82])),
        pre("spec_3_1_2_11_3_v5_receive_maximum_0", V5,
            c5(0x02, &[0x21, 0, 0], &id("p11")), connack_or_close(&[0x82])),
        pre("spec_3_1_2_11_3_v5_duplicate_receive_maximum", V5,
            c5(0x02, &[0x21, 0, 5, 0x21, 0, 5], &id("p12")), connack_or_close(&[0x82])),
        pre("spec_3_1_2_11_4_v5_maximum_packet_size_0", V5,
            c5(0x02, &[0x27, 0, 0, 0, 0], &id("p13")), connack_or_close(&[0x82])),
        pre("spec_3_1_2_11_7_v5_request_problem_information_2", V5,
            c5(0x02, &[0x17, 2], &id("p14")), connack_or_close(&[0x82])),
        pre("spec_3_1_2_11_6_v5_request_response_information_2", V5,
            c5(0x02, &[0x19, 2], &id("p15")), connack_or_close(&[0x82])),
        pre("spec_2_2_2_2_v5_topic_alias_not_allowed_in_connect", V5,
            c5(0x02, &[0x23, 0, 1], &id("p16")), connack_or_close(&[0x81])),
        pre("spec_2_2_2_2_v5_undefined_property_id_0x7f", V5,
            c5(0x02, &[0x7f, 0], &id("p17")), connack_or_close(&[0x81])),
        pre("spec_2_2_2_2_v5_property_id_0", V5,
            c5(0x02, &[0x00], &id("p18")), connack_or_close(&[0x81])),
        pre("mqtt_1_5_4_1_v5_connect_user_property_invalid_utf8", V5,
            c5(0x02, &[0x26, 0, 2, 0xc3, 0x28, 0, 1, b'v'], &id("p20")), connack_or_close(&[0x81])),
        pre("mqtt_1_5_4_2_v5_connect_user_property_with_u0000", V5,
            c5(0x02, &[0x26, 0, 1, 0x00, 0, 1, b'v'], &id("p21")), connack_or_close(&[0x81])),
        pre("mqtt_1_5_4_1_v5_client_id_utf16_surrogate", V5,
            c5(0x02, &[], &raw(&[0xed, 0xa0, 0x80])), connack_or_close(&[0x81])),
        pre("spec_3_1_2_11_10_v5_authentication_data_without_method", V5,
            c5(0x02, &[0x16, 0, 1, 0], &id("p23")), connack_or_close(&[0x82])),
        pre("spec_3_1_2_11_9_v5_unsupported_authentication_method", V5,
            c5(0x02, &[0x15, 0, 3, b'x', b'y', b'z'], &id("p24")), connack(&[0x8c, 0x87])),
        pre("spec_3_1_3_2_v5_session_expiry_not_allowed_in_will_properties", V5,
            c5(0x06, &[], &will5("p25", &[0x11, 0, 0, 0, 10], b"w/t", b"x")), connack_or_close(&[0x81])),
        pre("spec_3_1_3_2_2_v5_duplicate_will_delay_interval", V5,
            c5(0x06, &[], &will5("p26", &[0x18, 0, 0, 0, 1, 0x18, 0, 0, 0, 1], b"w/t", b"x")),
            connack_or_close(&[0x82])),
        // ---- CONNECT: wills and identifiers
        pre("mqtt_3_3_2_2_v5_will_topic_with_wildcard", V5,
            c5(0x06, &[], &will5("p27", &[], b"w/#", b"x")), connack_or_close(&[0x90, 0x81])),
        pre("mqtt_4_7_3_1_v5_empty_will_topic", V5,
            c5(0x06, &[], &will5("p28", &[], b"", b"x")), connack_or_close(&[0x81, 0x82, 0x90])),
        pre("spec_3_1_3_2_3_v5_will_payload_not_utf8_with_payload_format_1", V5,
            c5(0x06, &[], &will5("p29", &[0x01, 0x01], b"w/t", &[0xff, 0xfe])), connack(&[0x99])),
        pre("mqtt_3_1_2_1_v5_unknown_protocol_name_closed_without_connack", V5,
            connect_bytes("MQTX", 5, 0x02, &cat(&[&props(&[]), &id("p35")])), closed()),
        pre("mqtt_3_1_2_2_v5_protocol_level_6_gets_3_1_1_return_code_1", V5,
            connect_bytes("MQTT", 6, 0x02, &cat(&[&props(&[]), &id("p36")])),
            end(End::ConnackV311(0x01))),
        pre("spec_3_1_3_1_v5_client_id_longer_than_max_client_id_len", V5,
            c5(0x02, &[], &id(&"x".repeat(300))), connack(&[0x85])),
        pre("spec_3_1_2_9_v5_password_without_user_name_is_allowed", V5,
            c5(0x42, &[], &cat(&[&id("p39"), &raw(b"pw")])), end(End::Accepted)),
        pre("spec_3_1_3_1_v5_empty_client_id_with_clean_start_0_is_assigned_one", V5,
            c5(0x00, &[], &id("")), end(End::Accepted)),
        // ---- wrong state: before CONNECT (no DISCONNECT before CONNACK, MQTT-3.14.0-1)
        pre("mqtt_3_1_0_1_v5_publish_before_connect", V5,
            packet::publish(true, "a", b"x", 0, None, false, false), closed()),
        pre("mqtt_3_1_0_1_v5_pingreq_before_connect", V5, packet::pingreq(), closed()),
        pre("mqtt_3_1_0_1_v5_subscribe_before_connect", V5,
            packet::subscribe(true, 1, "a", 0), closed()),
        pre("mqtt_3_1_0_1_v5_client_sends_connack_before_connect", V5,
            vec![0x20, 0x03, 0x00, 0x00, 0x00], closed()),
        pre("spec_2_1_2_v5_reserved_packet_type_0_before_connect", V5, vec![0x00, 0x00], closed()),
        pre("mqtt_3_1_0_1_v5_auth_before_connect", V5, vec![0xf0, 0x00], closed()),
        pre("mqtt_3_1_2_2_v5_protocol_name_mqisdp_with_level_5_gets_3_1_1_return_code_1", V5,
            connect_bytes("MQIsdp", 5, 0x02, &cat(&[&props(&[]), &id("p41")])),
            end(End::ConnackV311(0x01))),

        // ---- after CONNECT: lengths that disagree with the Remaining Length
        post("spec_4_13_1_v5_publish_topic_length_overruns_remaining_length", V5,
            vec![0x30, 0x05, 0x00, 0x10, b'a', b'b', b'c'], disc(&[0x81])),
        post("spec_4_13_1_v5_publish_qos1_packet_id_cut_by_remaining_length", V5,
            vec![0x32, 0x04, 0x00, 0x01, b'a', 0x00], disc(&[0x81])),
        post("spec_3_4_2_v5_puback_remaining_length_1", V5, vec![0x40, 0x01, 0x00], disc(&[0x81])),
        post("spec_3_6_2_v5_pubrel_remaining_length_0", V5, vec![0x62, 0x00], disc(&[0x81])),
        post("spec_3_12_v5_pingreq_remaining_length_1", V5, vec![0xc0, 0x01, 0x00], disc(&[0x81])),
        post("spec_3_8_3_v5_subscribe_filter_length_overruns", V5,
            vec![0x82, 0x07, 0x00, 0x01, 0x00, 0x00, 0x10, b'a', b'b'], disc(&[0x81])),
        post("spec_3_8_3_1_v5_subscribe_options_byte_missing", V5,
            vec![0x82, 0x06, 0x00, 0x01, 0x00, 0x00, 0x01, b'a'], disc(&[0x81])),
        post("spec_3_14_2_2_v5_disconnect_property_length_overruns", V5,
            vec![0xe0, 0x02, 0x00, 0x05], disc(&[0x81])),
        post("mqtt_1_5_5_1_v5_publish_remaining_length_of_five_bytes", V5,
            vec![0x30, 0xff, 0xff, 0xff, 0xff, 0x01], disc(&[0x81])),
        post("mqtt_1_5_5_1_v5_remaining_length_not_minimal", V5, vec![0xc0, 0x80, 0x00], disc(&[0x81])),
        post("mqtt_1_5_5_1_v5_property_length_of_five_bytes", V5,
            vec![0x30, 0x08, 0x00, 0x01, b'a', 0xff, 0xff, 0xff, 0xff, 0x01], disc(&[0x81])),
        post("mqtt_1_5_5_1_v5_subscription_identifier_not_minimal", V5,
            sub(0x82, 1, Some(&[0x0b, 0x80, 0x00]), b"a", 0), disc(&[0x81])),
        post("spec_3_2_2_3_6_v5_publish_claiming_268_mb_then_stall_is_refused_at_header", V5,
            header_only(0x30, 268_435_455), disc(&[0x95])),
        post("spec_3_2_2_3_6_v5_publish_one_byte_over_max_packet_size_then_stall", V5,
            header_only(0x30, too_big), disc(&[0x95])),
        // ---- PUBLISH property abuse
        post("spec_3_3_2_3_2_v5_duplicate_payload_format_indicator", V5,
            p5(0x30, b"a", None, &[0x01, 0, 0x01, 0], b"x"), disc(&[0x82])),
        post("mqtt_3_3_2_8_v5_topic_alias_0", V5,
            p5(0x30, b"a", None, &[0x23, 0, 0], b"x"), disc(&[0x94])),
        post("mqtt_3_3_2_9_v5_topic_alias_above_topic_alias_maximum", V5,
            p5(0x30, b"a", None, &[0x23, 0, 11], b"x"), disc(&[0x94])),
        post("spec_3_3_2_3_4_v5_unknown_topic_alias_with_empty_topic", V5,
            p5(0x30, b"", None, &[0x23, 0, 3], b"x"), disc(&[0x82])),
        post("spec_3_3_2_1_v5_empty_topic_without_topic_alias", V5,
            p5(0x30, b"", None, &[], b"x"), disc(&[0x82])),
        post("spec_2_2_2_2_v5_session_expiry_not_allowed_in_publish", V5,
            p5(0x30, b"a", None, &[0x11, 0, 0, 0, 1], b"x"), disc(&[0x81])),
        post("mqtt_1_5_4_1_v5_publish_content_type_invalid_utf8", V5,
            p5(0x30, b"a", None, &[0x03, 0, 1, 0xff], b"x"), disc(&[0x81])),
        post("mqtt_1_5_4_2_v5_publish_topic_with_u0000", V5,
            p5(0x30, b"a\0b", None, &[], b"x"), disc(&[0x81])),
        post("mqtt_1_5_4_1_v5_publish_topic_invalid_utf8", V5,
            p5(0x30, &[b'a', 0xc0, 0xaf], None, &[], b"x"), disc(&[0x81])),
        post("mqtt_1_5_4_1_v5_publish_user_property_invalid_utf8", V5,
            p5(0x30, b"a", None, &[0x26, 0, 1, b'k', 0, 1, 0xfe], b"x"), disc(&[0x81])),
        post("mqtt_3_3_4_6_v5_client_publish_with_subscription_identifier", V5,
            p5(0x30, b"a", None, &[0x0b, 0x01], b"x"), disc(&[0x82])),
        post("mqtt_3_3_2_14_v5_response_topic_with_wildcard", V5,
            p5(0x30, b"a", None, &cat(&[&[0x08], &s("r/#")]), b"x"), disc(&[0x82, 0x90, 0x81])),
        post("spec_3_3_2_3_5_v5_duplicate_response_topic", V5,
            p5(0x30, b"a", None, &cat(&[&[0x08], &s("r"), &[0x08], &s("r")]), b"x"), disc(&[0x82])),
        post("spec_3_3_2_3_4_v5_duplicate_topic_alias", V5,
            p5(0x30, b"a", None, &[0x23, 0, 1, 0x23, 0, 2], b"x"), disc(&[0x82])),
        post("spec_3_3_2_3_6_v5_duplicate_correlation_data", V5,
            p5(0x30, b"a", None, &[0x09, 0, 1, 7, 0x09, 0, 1, 7], b"x"), disc(&[0x82])),
        post("spec_3_3_2_3_3_v5_duplicate_message_expiry_interval", V5,
            p5(0x30, b"a", None, &[0x02, 0, 0, 0, 9, 0x02, 0, 0, 0, 9], b"x"), disc(&[0x82])),
        post("spec_3_4_2_1_v5_puback_with_reason_code_not_defined_for_puback", V5,
            vec![0x40, 0x03, 0x00, 0x01, 0x92], disc(&[0x81])),
        post("spec_3_6_2_1_v5_pubrel_with_reason_code_not_defined_for_pubrel", V5,
            vec![0x62, 0x03, 0x00, 0x01, 0x10], disc(&[0x81])),
        // Accepted, or refused by the max_user_properties limit (PUBACK 0x97) or by ending the
        // connection; either way memory stays bounded.
        post("spec_3_3_2_3_7_v5_fifty_thousand_user_properties_bounded", V5,
            p5(0x32, b"up", Some(1), &[0x26, 0, 0, 0, 0].repeat(50_000), b"x"),
            replies(vec![Reply::Ack(0x40, 1, &[0x00, 0x10, 0x97])], End::Open)
                .or(disc(&[0x95, 0x97, 0x83, 0x82]))),
        post("spec_3_3_2_3_2_v5_payload_not_utf8_with_payload_format_1_qos1", V5,
            p5(0x32, b"pfi", Some(1), &[0x01, 0x01], &[0xff, 0xfe]),
            replies(vec![Reply::Ack(0x40, 1, &[0x99])], End::Open).or(disc(&[0x99]))),
        // ---- SUBSCRIBE / UNSUBSCRIBE / acks property abuse
        post("spec_3_8_2_1_2_v5_subscription_identifier_0", V5,
            sub(0x82, 1, Some(&[0x0b, 0x00]), b"a", 0), disc(&[0x82])),
        post("spec_3_8_2_1_2_v5_two_subscription_identifiers", V5,
            sub(0x82, 1, Some(&[0x0b, 0x01, 0x0b, 0x02]), b"a", 0), disc(&[0x82])),
        post("spec_2_2_2_2_v5_topic_alias_not_allowed_in_subscribe", V5,
            sub(0x82, 1, Some(&[0x23, 0, 1]), b"a", 0), disc(&[0x81])),
        post("spec_2_2_2_2_v5_subscription_identifier_not_allowed_in_unsubscribe", V5,
            unsub(0xa2, 1, Some(&[0x0b, 0x01]), b"a"), disc(&[0x81])),
        post("spec_2_2_2_2_v5_topic_alias_not_allowed_in_puback", V5,
            vec![0x40, 0x07, 0x00, 0x01, 0x00, 0x03, 0x23, 0x00, 0x01], disc(&[0x81])),
        post("mqtt_3_14_2_2_v5_disconnect_sets_session_expiry_after_connect_had_0", V5,
            vec![0xe0, 0x07, 0x00, 0x05, 0x11, 0, 0, 0, 10], disc(&[0x82])),
        post("spec_3_14_2_1_v5_disconnect_with_undefined_reason_code", V5,
            vec![0xe0, 0x01, 0x03], disc(&[0x81])),
        // ---- wrong state / wrong direction
        post("mqtt_3_1_0_2_v5_second_connect", V5,
            packet::connect_v5("again", 60, true), disc(&[0x82])),
        post("spec_4_12_v5_auth_without_authentication_method", V5, vec![0xf0, 0x00], disc(&[0x82])),
        post("spec_2_1_2_v5_client_sends_connack", V5,
            vec![0x20, 0x03, 0x00, 0x00, 0x00], disc(&[0x82])),
        post("spec_2_1_2_v5_client_sends_suback", V5,
            vec![0x90, 0x04, 0x00, 0x01, 0x00, 0x00], disc(&[0x82])),
        post("spec_2_1_2_v5_client_sends_unsuback", V5,
            vec![0xb0, 0x04, 0x00, 0x01, 0x00, 0x00], disc(&[0x82])),
        post("spec_2_1_2_v5_client_sends_pingresp", V5, vec![0xd0, 0x00], disc(&[0x82])),
        post("spec_2_1_2_v5_reserved_packet_type_0", V5, vec![0x00, 0x00], disc(&[0x81])),
        // ---- reserved flag bits
        post("mqtt_3_8_1_1_v5_subscribe_fixed_header_flags_0000", V5,
            sub(0x80, 1, Some(&[]), b"a", 0), disc(&[0x81])),
        post("mqtt_3_10_1_1_v5_unsubscribe_fixed_header_flags_0000", V5,
            unsub(0xa0, 1, Some(&[]), b"a"), disc(&[0x81])),
        post("mqtt_3_6_1_1_v5_pubrel_fixed_header_flags_0000", V5,
            vec![0x60, 0x02, 0x00, 0x01], disc(&[0x81])),
        post("mqtt_2_1_3_1_v5_pingreq_flags_0001", V5, vec![0xc1, 0x00], disc(&[0x81])),
        post("mqtt_2_1_3_1_v5_disconnect_flags_1111", V5, vec![0xef, 0x00], disc(&[0x81])),
        post("mqtt_3_3_1_2_v5_qos0_publish_with_dup", V5,
            p5(0x38, b"a", None, &[], b"x"), disc(&[0x81])),
        post("mqtt_3_8_3_5_v5_subscription_options_reserved_bits", V5,
            sub(0x82, 1, Some(&[]), b"a", 0xc0), disc(&[0x81])),
        post("spec_3_8_3_1_v5_retain_handling_3", V5,
            sub(0x82, 1, Some(&[]), b"a", 0x30), disc(&[0x82])),
        // ---- QoS 3, empty fields, packet id 0
        post("mqtt_3_3_1_4_v5_publish_qos_3", V5,
            p5(0x36, b"a", Some(1), &[], b"x"), disc(&[0x81])),
        post("spec_3_8_3_1_v5_subscribe_maximum_qos_3", V5,
            sub(0x82, 1, Some(&[]), b"a", 0x03), disc(&[0x82])),
        post("mqtt_3_8_3_2_v5_subscribe_without_topic_filters", V5,
            vec![0x82, 0x03, 0x00, 0x01, 0x00], disc(&[0x82])),
        post("mqtt_3_10_3_2_v5_unsubscribe_without_topic_filters", V5,
            vec![0xa2, 0x03, 0x00, 0x01, 0x00], disc(&[0x82])),
        post("mqtt_4_7_3_1_v5_subscribe_empty_topic_filter", V5,
            sub(0x82, 1, Some(&[]), b"", 0),
            disc(&[0x82, 0x81]).or(replies(vec![Reply::SubAck(1, &[0x8f])], End::Open))),
        post("mqtt_2_2_1_3_v5_publish_qos1_packet_id_0", V5,
            p5(0x32, b"a", Some(0), &[], b"x"), disc(&[0x82, 0x81])),
        post("mqtt_2_2_1_3_v5_subscribe_packet_id_0", V5,
            sub(0x82, 0, Some(&[]), b"a", 0), disc(&[0x82, 0x81])),
        post("mqtt_2_2_1_3_v5_unsubscribe_packet_id_0", V5,
            unsub(0xa2, 0, Some(&[]), b"a"), disc(&[0x82, 0x81])),
        post("mqtt_2_2_1_3_v5_pubrel_packet_id_0", V5,
            vec![0x62, 0x02, 0x00, 0x00], disc(&[0x82, 0x81])),
        // ---- invalid and deep topics
        post("mqtt_3_3_2_2_v5_publish_topic_with_plus", V5,
            p5(0x30, b"a/+", None, &[], b"x"), disc(&[0x90])),
        post("mqtt_3_3_2_2_v5_publish_topic_hash", V5,
            p5(0x30, b"#", None, &[], b"x"), disc(&[0x90])),
        post("mqtt_4_7_1_1_v5_subscribe_hash_not_last", V5,
            sub(0x82, 1, Some(&[]), b"a/#/b", 1), replies(vec![Reply::SubAck(1, &[0x8f])], End::Open)),
        post("mqtt_4_7_1_2_v5_subscribe_plus_not_a_whole_level", V5,
            sub(0x82, 1, Some(&[]), b"a+", 1), replies(vec![Reply::SubAck(1, &[0x8f])], End::Open)),
        post("mqtt_4_8_2_2_v5_shared_subscription_without_filter", V5,
            sub(0x82, 1, Some(&[]), b"$share/g", 1), replies(vec![Reply::SubAck(1, &[0x8f])], End::Open)),
        post("mqtt_4_8_2_1_v5_shared_subscription_empty_share_name", V5,
            sub(0x82, 1, Some(&[]), b"$share//a", 1), replies(vec![Reply::SubAck(1, &[0x8f])], End::Open)),
        post("mqtt_3_8_3_4_v5_no_local_on_shared_subscription", V5,
            sub(0x82, 1, Some(&[]), b"$share/g/a", 0x04), disc(&[0x82])),
        post("spec_4_7_v5_subscribe_filter_of_200_levels_over_max_topic_levels", V5,
            sub(0x82, 1, Some(&[]), "+/".repeat(199).as_bytes(), 1),
            replies(vec![Reply::SubAck(1, &[0x8f])], End::Open)),
        post("spec_4_7_v5_publish_topic_of_65535_slashes_over_max_topic_levels", V5,
            p5(0x30, "/".repeat(65535).as_bytes(), None, &[], b"x"), disc(&[0x90])),
        // ---- QoS state abuse (§4.3)
        post("spec_3_7_2_1_v5_pubrel_for_unknown_packet_id_gets_pubcomp_0x92", V5,
            packet::pubrel(7), replies(vec![Reply::Ack(0x70, 7, &[0x92])], End::Open)),
        post("spec_4_3_2_v5_puback_for_never_sent_packet_id_is_ignored", V5,
            packet::puback(8), end(End::Open)),
        post("spec_3_6_2_1_v5_pubrec_for_never_sent_packet_id_gets_pubrel_0x92", V5,
            packet::pubrec(9), replies(vec![Reply::Ack(0x62, 9, &[0x92])], End::Open)),
        post("spec_4_3_3_v5_pubcomp_for_never_sent_packet_id_is_ignored", V5,
            packet::pubcomp(10), end(End::Open)),
        post("mqtt_4_3_3_9_v5_duplicate_qos2_packet_id_before_pubrel", V5,
            cat(&[&p5(0x34, b"dq", Some(5), &[], b"1"), &p5(0x34, b"dq", Some(5), &[], b"2"),
                  &packet::pubrel(5)]),
            replies(vec![Reply::Ack(0x50, 5, &[0x00, 0x10]), Reply::Ack(0x50, 5, &[0x00, 0x10]),
                         Reply::Ack(0x70, 5, &[0x00])], End::Open)),
        post("mqtt_3_3_4_9_v5_more_unreleased_qos2_than_receive_maximum", V5,
            qos2_flood, replies(qos2_acks, End::Disconnect(&[0x93]))),
    ]
}

// ------------------------------------------------------------------ the 3.1.1 table

#[rustfmt::skip]
fn v311_cases() -> Vec<Case> {
    use V::V311;
    let id = |x: &str| s(x);
    let too_big = remaining_for_total(1_048_577);
    vec![
        // ---- CONNECT
        pre("v311_mqtt_3_1_4_1_connect_client_id_length_overruns", V311,
            c4(0x02, &[0x00, 0x10, b'a']), closed()),
        pre("v311_mqtt_3_1_4_1_connect_bytes_left_after_payload", V311,
            c4(0x02, &cat(&[&id("q2"), &[0x00]])), closed()),
        pre("v311_mqtt_3_1_4_1_connect_ends_inside_keep_alive", V311,
            vec![0x10, 0x08, 0x00, 0x04, b'M', b'Q', b'T', b'T', 0x04, 0x02], closed()),
        pre("v311_spec_2_2_3_connect_remaining_length_of_five_bytes", V311,
            vec![0x10, 0xff, 0xff, 0xff, 0xff, 0x01], closed()),
        pre("v311_connect_claiming_268_mb_then_stall_is_refused_at_header", V311,
            header_only(0x10, 268_435_455), closed()),
        pre("v311_mqtt_3_1_2_3_connect_reserved_flag_set", V311, c4(0x03, &id("q5")), closed()),
        pre("v311_mqtt_3_1_2_11_will_qos_without_will_flag", V311, c4(0x0a, &id("q6")), closed()),
        pre("v311_mqtt_3_1_2_15_will_retain_without_will_flag", V311, c4(0x22, &id("q7")), closed()),
        pre("v311_mqtt_3_1_2_14_will_qos_3", V311,
            c4(0x1e, &will4("q8", b"w/t", b"x")), closed()),
        pre("v311_mqtt_3_1_2_22_password_without_user_name", V311,
            c4(0x42, &cat(&[&id("q9"), &raw(b"pw")])), closed()),
        pre("v311_mqtt_3_1_3_8_empty_client_id_with_clean_session_0", V311,
            c4(0x00, &id("")), end(End::ConnackV311(0x02))),
        pre("v311_mqtt_3_1_3_7_empty_client_id_with_clean_session_1_is_accepted", V311,
            c4(0x02, &id("")), end(End::Accepted)),
        pre("v311_mqtt_3_1_2_2_protocol_level_2_gets_return_code_1", V311,
            connect_bytes("MQTT", 2, 0x02, &id("q11")), end(End::ConnackV311(0x01))),
        pre("v311_mqtt_3_1_2_1_unknown_protocol_name_closed", V311,
            connect_bytes("MQTX", 4, 0x02, &id("q12")), closed()),
        pre("v311_mqtt_1_5_3_1_client_id_invalid_utf8", V311,
            c4(0x02, &raw(&[b'a', 0xff])), closed()),
        pre("v311_mqtt_1_5_3_2_client_id_with_u0000", V311,
            c4(0x02, &raw(b"a\0b")), closed()),
        pre("v311_mqtt_3_1_3_8_client_id_longer_than_max_client_id_len", V311,
            c4(0x02, &id(&"y".repeat(300))), end(End::ConnackV311(0x02))),
        pre("v311_mqtt_4_7_1_1_will_topic_with_wildcard", V311,
            c4(0x06, &will4("q15", b"w/+", b"x")), end(End::ConnackV311RefusedOrClose)),
        pre("v311_mqtt_4_7_3_1_empty_will_topic", V311,
            c4(0x06, &will4("q16", b"", b"x")), end(End::ConnackV311RefusedOrClose)),
        pre("v311_mqtt_3_1_0_1_publish_before_connect", V311,
            packet::publish(false, "a", b"x", 0, None, false, false), closed()),
        pre("v311_mqtt_3_1_0_1_pingreq_before_connect", V311, packet::pingreq(), closed()),
        // ---- after CONNECT: lengths
        post("v311_mqtt_4_8_0_1_publish_topic_length_overruns", V311,
            vec![0x30, 0x05, 0x00, 0x10, b'a', b'b', b'c'], closed()),
        post("v311_mqtt_4_8_0_1_publish_qos1_packet_id_cut", V311,
            vec![0x32, 0x04, 0x00, 0x01, b'a', 0x00], closed()),
        post("v311_spec_3_4_puback_remaining_length_1", V311, vec![0x40, 0x01, 0x00], closed()),
        post("v311_spec_3_6_pubrel_remaining_length_0", V311, vec![0x62, 0x00], closed()),
        post("v311_spec_3_12_pingreq_remaining_length_1", V311, vec![0xc0, 0x01, 0x00], closed()),
        post("v311_spec_3_8_3_subscribe_filter_length_overruns", V311,
            vec![0x82, 0x06, 0x00, 0x01, 0x00, 0x10, b'a', b'b'], closed()),
        post("v311_spec_3_8_3_subscribe_requested_qos_missing", V311,
            vec![0x82, 0x05, 0x00, 0x01, 0x00, 0x01, b'a'], closed()),
        post("v311_spec_3_14_disconnect_remaining_length_1", V311, vec![0xe0, 0x01, 0x00], closed()),
        post("v311_spec_2_2_3_remaining_length_of_five_bytes", V311,
            vec![0x30, 0xff, 0xff, 0xff, 0xff, 0x01], closed()),
        post("v311_spec_2_2_3_remaining_length_not_minimal", V311, vec![0xc0, 0x80, 0x00], closed()),
        post("v311_publish_claiming_268_mb_then_stall_is_refused_at_header", V311,
            header_only(0x30, 268_435_455), closed()),
        post("v311_publish_one_byte_over_max_packet_size_then_stall", V311,
            header_only(0x30, too_big), closed()),
        // ---- wrong state / direction
        post("v311_mqtt_3_1_0_2_second_connect", V311,
            packet::connect_v311("again4", 60, true), closed()),
        post("v311_mqtt_2_2_2_2_reserved_packet_type_15", V311, vec![0xf0, 0x00], closed()),
        post("v311_mqtt_2_2_2_2_reserved_packet_type_0", V311, vec![0x00, 0x00], closed()),
        post("v311_spec_2_2_1_client_sends_connack", V311, vec![0x20, 0x02, 0x00, 0x00], closed()),
        post("v311_spec_2_2_1_client_sends_suback", V311,
            vec![0x90, 0x03, 0x00, 0x01, 0x00], closed()),
        post("v311_spec_2_2_1_client_sends_unsuback", V311, vec![0xb0, 0x02, 0x00, 0x01], closed()),
        post("v311_spec_2_2_1_client_sends_pingresp", V311, vec![0xd0, 0x00], closed()),
        // ---- reserved flag bits
        post("v311_mqtt_3_8_1_1_subscribe_flags_0000", V311, sub(0x80, 1, None, b"a", 0), closed()),
        post("v311_mqtt_3_10_1_1_unsubscribe_flags_0000", V311, unsub(0xa0, 1, None, b"a"), closed()),
        post("v311_mqtt_3_6_1_1_pubrel_flags_0000", V311, vec![0x60, 0x02, 0x00, 0x01], closed()),
        post("v311_mqtt_2_2_2_2_pingreq_flags_0001", V311, vec![0xc1, 0x00], closed()),
        post("v311_mqtt_3_14_1_1_disconnect_flags_1111", V311, vec![0xef, 0x00], closed()),
        post("v311_mqtt_3_3_1_2_qos0_publish_with_dup", V311, p4(0x38, b"a", None, b"x"), closed()),
        post("v311_mqtt_3_8_3_4_requested_qos_reserved_bits", V311,
            sub(0x82, 1, None, b"a", 0x04), closed()),
        // ---- QoS 3, empty fields, packet id 0
        post("v311_mqtt_3_3_1_4_publish_qos_3", V311, p4(0x36, b"a", Some(1), b"x"), closed()),
        post("v311_mqtt_3_8_3_4_subscribe_qos_3", V311, sub(0x82, 1, None, b"a", 0x03), closed()),
        post("v311_mqtt_3_8_3_3_subscribe_without_topic_filters", V311,
            vec![0x82, 0x02, 0x00, 0x01], closed()),
        post("v311_mqtt_3_10_3_2_unsubscribe_without_topic_filters", V311,
            vec![0xa2, 0x02, 0x00, 0x01], closed()),
        post("v311_mqtt_4_7_3_1_publish_empty_topic", V311, p4(0x30, b"", None, b"x"), closed()),
        post("v311_mqtt_4_7_3_1_subscribe_empty_topic_filter", V311,
            sub(0x82, 1, None, b"", 0),
            closed().or(replies(vec![Reply::SubAck(1, &[0x80])], End::Open))),
        post("v311_mqtt_2_3_1_1_publish_qos1_packet_id_0", V311,
            p4(0x32, b"a", Some(0), b"x"), closed()),
        post("v311_mqtt_2_3_1_1_subscribe_packet_id_0", V311, sub(0x82, 0, None, b"a", 0), closed()),
        post("v311_mqtt_2_3_1_1_unsubscribe_packet_id_0", V311, unsub(0xa2, 0, None, b"a"), closed()),
        post("v311_mqtt_2_3_1_1_pubrel_packet_id_0", V311, vec![0x62, 0x02, 0x00, 0x00], closed()),
        // ---- invalid topics
        post("v311_mqtt_3_3_2_2_publish_topic_with_plus", V311, p4(0x30, b"a/+", None, b"x"), closed()),
        post("v311_mqtt_3_3_2_2_publish_topic_hash", V311, p4(0x30, b"#", None, b"x"), closed()),
        post("v311_mqtt_1_5_3_2_publish_topic_with_u0000", V311,
            p4(0x30, b"a\0b", None, b"x"), closed()),
        post("v311_mqtt_1_5_3_1_publish_topic_invalid_utf8", V311,
            p4(0x30, &[b'a', 0xed, 0xa0, 0x80], None, b"x"), closed()),
        post("v311_mqtt_4_7_1_2_subscribe_hash_not_last", V311,
            sub(0x82, 1, None, b"a/#/b", 1),
            replies(vec![Reply::SubAck(1, &[0x80])], End::Open).or(closed())),
        post("v311_mqtt_4_7_1_3_subscribe_plus_not_a_whole_level", V311,
            sub(0x82, 1, None, b"a+", 1),
            replies(vec![Reply::SubAck(1, &[0x80])], End::Open).or(closed())),
        post("v311_publish_topic_of_65535_slashes_over_max_topic_levels", V311,
            p4(0x30, "/".repeat(65535).as_bytes(), None, b"x"), closed()),
        // ---- QoS state abuse
        post("v311_mqtt_4_3_3_pubrel_for_unknown_packet_id_gets_pubcomp", V311,
            packet::pubrel(7), replies(vec![Reply::Ack(0x70, 7, &[])], End::Open)),
        post("v311_spec_4_3_2_puback_for_never_sent_packet_id_is_ignored", V311,
            packet::puback(8), end(End::Open)),
        post("v311_spec_4_3_3_pubrec_for_never_sent_packet_id_gets_pubrel", V311,
            packet::pubrec(9), replies(vec![Reply::Ack(0x62, 9, &[])], End::Open)),
        post("v311_spec_4_3_3_pubcomp_for_never_sent_packet_id_is_ignored", V311,
            packet::pubcomp(10), end(End::Open)),
        post("v311_spec_4_3_3_duplicate_qos2_packet_id_before_pubrel", V311,
            cat(&[&p4(0x34, b"dq", Some(5), b"1"), &p4(0x34, b"dq", Some(5), b"2"),
                  &packet::pubrel(5)]),
            replies(vec![Reply::Ack(0x50, 5, &[]), Reply::Ack(0x50, 5, &[]),
                         Reply::Ack(0x70, 5, &[])], End::Open)),
    ]
}

// ------------------------------------------------------------------ table tests

/// MQTT 5.0: every row of [`v5_cases`] against one broker (§4.13 error handling).
#[test]
fn spec_4_13_v5_bad_input_table() {
    // Receive Maximum 20, so the QoS 2 flood case can exceed it.
    run_table(&[ANON, "--receive-maximum", "20"], v5_cases());
}

/// MQTT 3.1.1: every row of [`v311_cases`] against one broker (3.1.1 §4.8: close on any
/// protocol violation).
#[test]
fn v311_spec_4_8_bad_input_table() {
    run_table(&[ANON], v311_cases());
}

/// `--retain-available false`: a will with Will Retain is refused (5.0 §3.2.2.3.5: CONNACK
/// 0x9A) and a retained PUBLISH ends the connection (§3.3.1.3: DISCONNECT 0x9A); 3.1.1, which
/// cannot be told, is refused / closed.
#[test]
fn spec_3_2_2_3_5_retain_not_supported_table() {
    use V::{V311, V5};
    run_table(
        &[ANON, "--retain-available", "false"],
        vec![
            pre(
                "spec_3_2_2_3_5_v5_will_retain_when_retain_unavailable",
                V5,
                c5(0x26, &[], &will5("r1", &[], b"w/r", b"x")),
                connack(&[0x9a]),
            ),
            post(
                "spec_3_3_1_3_v5_retained_publish_when_retain_unavailable",
                V5,
                p5(0x31, b"r/t", None, &[], b"x"),
                disc(&[0x9a]),
            ),
            pre(
                "v311_will_retain_when_retain_unavailable",
                V311,
                c4(0x26, &will4("r3", b"w/r", b"x")),
                end(End::ConnackV311RefusedOrClose),
            ),
            post(
                "v311_retained_publish_when_retain_unavailable",
                V311,
                p4(0x31, b"r/t", None, b"x"),
                closed(),
            ),
        ],
    );
}

/// `--max-packet-size 2048`: a packet one byte over is refused from its fixed header while the
/// client stalls (5.0 DISCONNECT 0x95, §3.2.2.3.6 / 3.1.1 close); a packet of exactly 2048
/// bytes is accepted; a CONNECT over the limit is refused before CONNACK.
#[test]
fn spec_3_2_2_3_6_max_packet_size_setting_table() {
    use V::{V311, V5};
    let over = remaining_for_total(2049);
    let exact5 = {
        // 2048-byte QoS 1 PUBLISH: 1 + 2 (RL) + 2+1 (topic "m") + 2 (id) + 1 (props) + payload
        let p = p5(0x32, b"m", Some(1), &[], &vec![b'z'; 2048 - 9]);
        assert_eq!(p.len(), 2048);
        p
    };
    let exact4 = {
        let p = p4(0x32, b"m", Some(1), &vec![b'z'; 2048 - 8]);
        assert_eq!(p.len(), 2048);
        p
    };
    let big_connect5 = c5(
        0x02,
        &cat(&[&[0x26], &s("k"), &s(&"v".repeat(2100))]),
        &s("m5"),
    );
    let big_connect4 = c4(0x02, &s(&"c".repeat(2100)));
    run_table(
        &[ANON, "--max-packet-size", "2048"],
        vec![
            post(
                "spec_3_2_2_3_6_v5_header_one_byte_over_limit_then_stall",
                V5,
                header_only(0x30, over),
                disc(&[0x95]),
            ),
            post(
                "spec_3_2_2_3_6_v5_subscribe_header_over_limit_then_stall",
                V5,
                header_only(0x82, 100_000),
                disc(&[0x95]),
            ),
            post(
                "spec_3_2_2_3_6_v5_packet_of_exactly_max_packet_size_accepted",
                V5,
                exact5,
                replies(vec![Reply::Ack(0x40, 1, &[0x00, 0x10])], End::Open),
            ),
            pre(
                "spec_3_1_2_11_4_v5_connect_over_limit",
                V5,
                big_connect5,
                connack_or_close(&[0x95]),
            ),
            post(
                "v311_header_one_byte_over_limit_then_stall",
                V311,
                header_only(0x30, over),
                closed(),
            ),
            post(
                "v311_packet_of_exactly_max_packet_size_accepted",
                V311,
                exact4,
                replies(vec![Reply::Ack(0x40, 1, &[])], End::Open),
            ),
            pre("v311_connect_over_limit", V311, big_connect4, closed()),
        ],
    );
}

// ------------------------------------------------------------------ huge claims en masse

/// 200 connections (100 per version, half before CONNECT) each claim a 268 MB packet and stall:
/// all are closed within [`WAIT`] (refused from the fixed header, not waiting for the body), the
/// broker's VmRSS stays within [`RSS_GROWTH_KB`], and fresh clients work.
#[test]
fn spec_3_2_2_3_6_two_hundred_huge_claims_refused_before_allocating() {
    let b = Broker::start(&[ANON, "--max-clients", "300"]);
    health(&b, "before").unwrap();
    let base = rss_kb(b.pid());
    let mut socks = Vec::new();
    for i in 0..200 {
        let v = if i % 2 == 0 { V::V5 } else { V::V311 };
        let s = if i % 4 < 2 {
            client(&b, v, &format!("huge-{i}")).unwrap()
        } else {
            connect_raw(b.mqtt)
        };
        let first = if i % 4 < 2 { 0x30 } else { 0x10 };
        let mut bytes = header_only(first, 268_435_455);
        bytes.extend(vec![0x41; 1000]);
        let mut w = &s;
        let _ = w.write_all(&bytes);
        socks.push((i, v, i % 4 < 2, s));
    }
    let peak = rss_kb(b.pid());
    let mut failures = Vec::new();
    for (i, v, connected, s) in socks {
        let mut peer = Peer::new(s);
        let want = match (v, connected) {
            (V::V5, true) => disc(&[0x95]),
            (V::V5, false) => connack_or_close(&[0x95, 0x81]),
            (V::V311, _) => closed(),
        };
        if let Err(e) = peer.check(v, &want) {
            failures.push(format!(
                "connection {i} ({v:?}, connected {connected}): {e}"
            ));
        }
    }
    health(&b, "after").unwrap();
    let after = rss_kb(b.pid());
    eprintln!("VmRSS: {base} kB before, {peak} kB with 200 huge claims, {after} kB after");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert!(
        peak.max(after) <= base + RSS_GROWTH_KB,
        "VmRSS grew from {base} kB to {} kB",
        peak.max(after)
    );
}

// ------------------------------------------------------------------ slowloris

/// Sends `bytes` one byte per second until the broker closes; returns (when it closed
/// relative to the first byte, bytes sent, bytes received before the close).
fn trickle(s: &TcpStream, bytes: &[u8], limit: Duration) -> (Option<Duration>, usize, Vec<u8>) {
    let start = Instant::now();
    let mut received = Vec::new();
    let mut sent = 0;
    let mut buf = [0u8; 256];
    while start.elapsed() < limit {
        if sent < bytes.len() {
            let mut w = s;
            if w.write_all(&bytes[sent..sent + 1]).is_err() {
                return (Some(start.elapsed()), sent, received);
            }
            sent += 1;
        }
        // Wait out the rest of this second, watching for the close.
        let tick = start + Duration::from_secs(sent as u64);
        loop {
            let left = tick.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            s.set_read_timeout(Some(left)).unwrap();
            let mut r = s;
            match r.read(&mut buf) {
                Ok(0) => return (Some(start.elapsed()), sent, received),
                Ok(n) => received.extend_from_slice(&buf[..n]),
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => return (Some(start.elapsed()), sent, received),
            }
        }
    }
    (None, sent, received)
}

/// A CONNECT sent one byte per second is cut off by the connect timeout (2 s here), counted
/// from the connection, not from the last byte; nothing is answered (no CONNACK, since no
/// CONNECT arrived; the spec asks a server to close a connection that sends no CONNECT within
/// a reasonable time). Both versions, 20 slowloris connections at once, while a fresh client
/// still connects and works.
#[test]
fn slowloris_connect_one_byte_per_second_is_closed_by_connect_timeout() {
    let b = Broker::start(&[ANON, "--connect-timeout", "2", "--max-clients", "60"]);
    let barrier = Arc::new(Barrier::new(21));
    let handles: Vec<_> = (0..20)
        .map(|i| {
            let addr = b.mqtt;
            let barrier = barrier.clone();
            thread::spawn(move || {
                let s = connect_raw(addr);
                let bytes = if i % 2 == 0 {
                    packet::connect_v5(&format!("slow-{i}"), 60, true)
                } else {
                    packet::connect_v311(&format!("slow-{i}"), 60, true)
                };
                barrier.wait();
                let r = trickle(&s, &bytes, Duration::from_secs(8));
                (i, bytes.len(), r)
            })
        })
        .collect();
    barrier.wait();
    // Scenario pacing, not a synchronisation: the probe goes 0.5 s into the 2 s connect
    // timeout, while all 20 are open and trickling (their TCP connects completed before the
    // barrier; the broker logs nothing before a CONNECT, so there is no state to wait on).
    thread::sleep(Duration::from_millis(500));
    let t = Instant::now();
    health(&b, "during-slowloris").unwrap();
    eprintln!("health check during slowloris: {:?}", t.elapsed());
    // Measured 17 ms, also with both cores busy (2-core machine, spinning processes).
    assert!(
        t.elapsed() < Duration::from_secs(2),
        "a fresh client took {:?} while slowloris connections were open",
        t.elapsed()
    );
    for h in handles {
        let (i, total, (closed_at, sent, received)) = h.join().unwrap();
        let closed_at = closed_at
            .unwrap_or_else(|| panic!("slowloris {i}: still open after 8 s ({sent} bytes sent)"));
        eprintln!("slowloris {i}: closed after {closed_at:?}");
        // Measured 2.01–2.04 s for all 20, also with both cores busy (2-core machine, spinning
        // processes): 1.5 s of margin; a timeout counted from the last byte would close after 8 s.
        assert!(
            closed_at <= Duration::from_millis(3500),
            "slowloris {i}: closed only after {closed_at:?} (connect timeout 2 s)"
        );
        assert!(sent < total, "slowloris {i}: the whole CONNECT went out");
        assert!(
            received.is_empty(),
            "slowloris {i}: broker answered {}",
            hex(&received)
        );
    }
    health(&b, "after-slowloris").unwrap();
}

/// After CONNECT with Keep Alive 2, a PUBLISH trickled one byte per second is not a Control
/// Packet: the broker closes after 1.5 × Keep Alive (MQTT-3.1.2-24; 5.0 DISCONNECT 0x8D first,
/// 3.1.1 just closes), long before the packet would be complete.
#[test]
fn mqtt_3_1_2_24_slowloris_packet_trickle_closed_at_one_and_a_half_keep_alive() {
    let b = Broker::start(&[ANON]);
    let handles: Vec<_> = [V::V5, V::V311]
        .into_iter()
        .map(|v| {
            let addr = b.mqtt;
            thread::spawn(move || {
                let s = connect_raw(addr);
                let connect = match v {
                    V::V5 => packet::connect_v5("trickle5", 2, true),
                    V::V311 => packet::connect_v311("trickle4", 2, true),
                };
                send_all(&s, &connect);
                let _ = read_event(&s, WAIT); // CONNACK
                let publish = packet::publish(
                    v == V::V5,
                    "trickle/topic",
                    &[b'p'; 30],
                    0,
                    None,
                    false,
                    false,
                );
                (
                    v,
                    publish.len(),
                    trickle(&s, &publish, Duration::from_secs(10)),
                )
            })
        })
        .collect();
    for h in handles {
        let (v, total, (closed_at, sent, received)) = h.join().unwrap();
        let closed_at = closed_at.unwrap_or_else(|| panic!("{v:?}: still open after 10 s"));
        eprintln!("{v:?} trickle: closed after {closed_at:?}");
        // Measured 3.02 s, also with both cores busy (2-core machine, spinning processes): 1 s of
        // margin.
        assert!(
            closed_at <= Duration::from_secs(4),
            "{v:?}: closed after {closed_at:?}, expected within 1.5 × 2 s + 1 s"
        );
        assert!(sent < total, "{v:?}: the whole PUBLISH went out");
        match v {
            V::V5 => assert_eq!(
                received,
                packet::server_disconnect(0x8d),
                "5.0: DISCONNECT 0x8D"
            ),
            V::V311 => assert!(received.is_empty(), "3.1.1: {}", hex(&received)),
        }
    }
    health(&b, "after-trickle").unwrap();
}

fn send_all(s: &TcpStream, bytes: &[u8]) {
    write_r(s, bytes).unwrap();
}

// ------------------------------------------------------------------ takeover races

fn wait_clients_connected(b: &Broker, want: u64, within: Duration) -> u64 {
    let deadline = Instant::now() + within;
    loop {
        let n = api_status(b.web)["clients_connected"]
            .as_u64()
            .unwrap_or(u64::MAX);
        if n == want || Instant::now() >= deadline {
            return n;
        }
        thread::sleep(Duration::from_millis(50));
    }
}

/// 10 rounds of 8 simultaneous CONNECTs with one client id (5.0 and 3.1.1 mixed): every one is
/// answered by CONNACK Success first (MQTT-3.2.0-1; no DISCONNECT before CONNACK, MQTT-3.14.0-1);
/// all but one are then taken over (MQTT-3.1.4-3: 5.0 DISCONNECT 0x8E, then close; 3.1.1 close);
/// exactly one stays open, answering PINGREQ; the connection count settles at 1 per round and at
/// 0 at the end; fresh clients work.
#[test]
fn mqtt_3_1_4_3_client_id_takeover_race_leaves_exactly_one_connection() {
    let b = Broker::start(&[ANON, "--max-clients", "40", "--connect-rate-limit", "0"]);
    for round in 0..10 {
        let id = format!("race-{round}");
        let barrier = Arc::new(Barrier::new(8));
        let handles: Vec<_> = (0..8)
            .map(|i| {
                let (addr, id, barrier) = (b.mqtt, id.clone(), barrier.clone());
                thread::spawn(move || {
                    let v = if i % 2 == 0 { V::V5 } else { V::V311 };
                    let s = connect_raw(addr);
                    let connect = match v {
                        V::V5 => packet::connect_v5(&id, 60, i % 3 == 0),
                        V::V311 => packet::connect_v311(&id, 60, i % 3 == 0),
                    };
                    barrier.wait();
                    send_all(&s, &connect);
                    (v, s)
                })
            })
            .collect();
        let conns: Vec<(V, TcpStream)> = handles.into_iter().map(|h| h.join().unwrap()).collect();
        let mut peers = Vec::new();
        for (i, (v, s)) in conns.into_iter().enumerate() {
            let mut peer = Peer::new(s);
            match peer.next() {
                Ev::Pkt(p) if p[0] == 0x20 && split(&p).1.get(1) == Some(&0) => {
                    peer.seen.clear();
                    peer.pos = 0;
                    peers.push((v, peer));
                }
                other => panic!(
                    "round {round} #{i} ({v:?}): expected CONNACK Success, got {}",
                    describe(&other)
                ),
            }
        }
        let n = wait_clients_connected(&b, 1, Duration::from_secs(5));
        assert_eq!(n, 1, "round {round}: clients_connected after the race");
        // Every connection but one is already closed; a PINGREQ tells which one is open.
        let mut open = 0;
        for (i, (v, peer)) in peers.iter_mut().enumerate() {
            let mut w = &peer.s;
            let _ = w.write_all(&packet::pingreq());
            match peer.next() {
                Ev::Pkt(p) if p == packet::pingresp() => open += 1,
                Ev::Pkt(p) if *v == V::V5 && p == packet::server_disconnect(0x8e) => {
                    peer.expect_closed_next("DISCONNECT 0x8E")
                        .unwrap_or_else(|e| panic!("round {round} #{i}: {e}"));
                }
                Ev::Closed if *v == V::V311 => {}
                other => panic!(
                    "round {round} #{i} ({v:?}): expected PINGRESP, or the takeover \
                     (5.0: DISCONNECT 0x8E, 3.1.1: close), got {}",
                    describe(&other)
                ),
            }
        }
        assert_eq!(open, 1, "round {round}: connections left open");
    }
    let n = wait_clients_connected(&b, 0, Duration::from_secs(5));
    assert_eq!(n, 0, "clients_connected after every connection closed");
    health(&b, "after-races").unwrap();
}

// ------------------------------------------------------------------ wills and QoS 2 state

/// A client with a will that breaks the protocol has its will published (MQTT-3.1.2-8: the
/// connection closed without DISCONNECT 0x00); both versions.
#[test]
fn mqtt_3_1_2_8_will_published_after_protocol_violation() {
    let b = Broker::start(&[ANON]);
    let watcher = client(&b, V::V5, "will-watcher").unwrap();
    send_all(&watcher, &packet::subscribe(true, 1, "wills/#", 0));
    let p = next_packet(&watcher, "SUBACK").unwrap();
    match_reply(&Reply::SubAck(1, &[0x00]), &p, V::V5).unwrap();
    for (v, id) in [(V::V5, "bad5"), (V::V311, "bad4")] {
        let s = connect_raw(b.mqtt);
        let topic = format!("wills/{id}");
        let connect = match v {
            V::V5 => packet::connect_v5_will(id, 60, true, &topic, b"gone", 0, false, &[]),
            V::V311 => c4(0x06, &will4(id, topic.as_bytes(), b"gone")),
        };
        send_all(&s, &connect);
        let _ = next_packet(&s, "CONNACK").unwrap();
        send_all(&s, &[0x36, 0x02, 0x00, 0x00]); // QoS 3: malformed
        let p = next_packet(&watcher, "will").unwrap();
        let (_, _, t, payload) = parse_publish(&p, V::V5).unwrap();
        assert_eq!(
            (t.as_str(), payload.as_slice()),
            (topic.as_str(), &b"gone"[..])
        );
    }
    health(&b, "after-wills").unwrap();
}

/// A QoS 2 PUBLISH repeated with the same packet id before PUBREL is acknowledged again but
/// delivered once (MQTT-4.3.3-9 / 3.1.1 §4.3.3 method B); the id is free again after PUBCOMP.
#[test]
fn mqtt_4_3_3_9_duplicate_qos2_packet_id_delivered_once() {
    let b = Broker::start(&[ANON]);
    for v in [V::V5, V::V311] {
        let topic = format!("dq2/{v:?}");
        let subscriber = client(&b, V::V5, &format!("dq-sub-{v:?}")).unwrap();
        send_all(&subscriber, &packet::subscribe(true, 1, &topic, 0));
        next_packet(&subscriber, "SUBACK").unwrap();
        let s = client(&b, v, &format!("dq-pub-{v:?}")).unwrap();
        let v5 = v == V::V5;
        let mut bytes = packet::publish(v5, &topic, b"first", 2, Some(9), false, false);
        bytes.extend(packet::publish(
            v5,
            &topic,
            b"first",
            2,
            Some(9),
            false,
            true,
        ));
        bytes.extend(packet::publish(
            v5,
            &topic,
            b"first",
            2,
            Some(9),
            false,
            false,
        ));
        send_all(&s, &bytes);
        for _ in 0..3 {
            let p = next_packet(&s, "PUBREC").unwrap();
            match_reply(&Reply::Ack(0x50, 9, &[0x00]), &p, v).unwrap();
        }
        send_all(&s, &packet::pubrel(9));
        let p = next_packet(&s, "PUBCOMP").unwrap();
        match_reply(&Reply::Ack(0x70, 9, &[0x00]), &p, v).unwrap();
        // The id is free again: a new message with id 9 is a new message.
        send_all(
            &s,
            &packet::publish(v5, &topic, b"second", 2, Some(9), false, false),
        );
        let p = next_packet(&s, "PUBREC").unwrap();
        match_reply(&Reply::Ack(0x50, 9, &[0x00]), &p, v).unwrap();
        send_all(&s, &packet::pubrel(9));
        next_packet(&s, "PUBCOMP").unwrap();
        let mut got = Vec::new();
        loop {
            match read_event(&subscriber, Duration::from_millis(700)) {
                Ev::Pkt(p) => got.push(parse_publish(&p, V::V5).unwrap().3),
                Ev::Timeout => break,
                other => panic!("subscriber: {}", describe(&other)),
            }
        }
        assert_eq!(
            got,
            vec![b"first".to_vec(), b"second".to_vec()],
            "{v:?}: deliveries"
        );
    }
}
