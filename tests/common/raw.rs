//! Byte-level MQTT 5.0 builders and parsers on top of `common`.
//! Shared by the byte-level 5.0 tests (properties, retain and will, slow consumers).

use super::packet::{binary, fixed, properties, utf8};
pub use super::try_read_packet;
use super::{self as common, hex, send};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

// Property identifiers (§2.2.2.2).
pub const PAYLOAD_FORMAT: u8 = 0x01;
pub const MESSAGE_EXPIRY: u8 = 0x02;
pub const CONTENT_TYPE: u8 = 0x03;
pub const RESPONSE_TOPIC: u8 = 0x08;
pub const CORRELATION_DATA: u8 = 0x09;
pub const SESSION_EXPIRY: u8 = 0x11;
pub const REQUEST_PROBLEM_INFO: u8 = 0x17;
pub const WILL_DELAY: u8 = 0x18;
pub const REQUEST_RESPONSE_INFO: u8 = 0x19;
pub const RESPONSE_INFO: u8 = 0x1A;
pub const REASON_STRING: u8 = 0x1F;
pub const TOPIC_ALIAS_MAXIMUM: u8 = 0x22;
pub const TOPIC_ALIAS: u8 = 0x23;
pub const RETAIN_AVAILABLE: u8 = 0x25;
pub const USER_PROPERTY: u8 = 0x26;
pub const MAXIMUM_PACKET_SIZE: u8 = 0x27;

pub fn prop_u8(id: u8, v: u8) -> Vec<u8> {
    vec![id, v]
}
pub fn prop_u16(id: u8, v: u16) -> Vec<u8> {
    let mut p = vec![id];
    p.extend(v.to_be_bytes());
    p
}
pub fn prop_u32(id: u8, v: u32) -> Vec<u8> {
    let mut p = vec![id];
    p.extend(v.to_be_bytes());
    p
}
pub fn prop_str(id: u8, s: &str) -> Vec<u8> {
    let mut p = vec![id];
    p.extend(utf8(s));
    p
}
pub fn prop_bin(id: u8, b: &[u8]) -> Vec<u8> {
    let mut p = vec![id];
    p.extend(binary(b));
    p
}
pub fn prop_pair(k: &str, v: &str) -> Vec<u8> {
    let mut p = vec![USER_PROPERTY];
    p.extend(utf8(k));
    p.extend(utf8(v));
    p
}

/// A will for [`connect`].
pub struct Will<'a> {
    pub topic: &'a str,
    pub payload: &'a [u8],
    pub qos: u8,
    pub retain: bool,
    pub props: Vec<u8>,
}

/// MQTT 5.0 CONNECT (§3.1) with raw CONNECT properties and an optional will.
pub fn connect(
    client_id: &str,
    keep_alive: u16,
    clean_start: bool,
    props: &[u8],
    will: Option<&Will>,
) -> Vec<u8> {
    let mut flags = if clean_start { 0x02 } else { 0 };
    if let Some(w) = will {
        flags |= 0x04 | (w.qos << 3) | if w.retain { 0x20 } else { 0 };
    }
    let mut body = utf8("MQTT");
    body.push(5);
    body.push(flags);
    body.extend(keep_alive.to_be_bytes());
    body.extend(properties(props));
    body.extend(utf8(client_id));
    if let Some(w) = will {
        body.extend(properties(&w.props));
        body.extend(utf8(w.topic));
        body.extend(binary(w.payload));
    }
    fixed(0x10, &body)
}

/// MQTT 5.0 PUBLISH (§3.3) with raw properties.
pub fn publish(
    topic: &str,
    payload: &[u8],
    qos: u8,
    packet_id: u16,
    retain: bool,
    props: &[u8],
) -> Vec<u8> {
    let mut body = utf8(topic);
    if qos > 0 {
        body.extend(packet_id.to_be_bytes());
    }
    body.extend(properties(props));
    body.extend_from_slice(payload);
    fixed(0x30 | (qos << 1) | retain as u8, &body)
}

/// MQTT 5.0 SUBSCRIBE (§3.8) to one filter with a full Subscription Options byte:
/// QoS bits 0-1, No Local bit 2, Retain As Published bit 3, Retain Handling bits 4-5.
pub fn subscribe(packet_id: u16, filter: &str, options: u8) -> Vec<u8> {
    let mut body = packet_id.to_be_bytes().to_vec();
    body.extend(properties(&[]));
    body.extend(utf8(filter));
    body.push(options);
    fixed(0x82, &body)
}

/// (value, bytes used) of a Variable Byte Integer at the start of `b`.
pub fn varint_at(b: &[u8]) -> (u32, usize) {
    let mut v = 0u32;
    for (i, byte) in b.iter().enumerate().take(4) {
        v |= u32::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return (v, i + 1);
        }
    }
    panic!("bad varint {}", hex(b));
}

/// Splits a property block body into (identifier, raw value) in wire order.
pub fn parse_props(mut b: &[u8]) -> Vec<(u8, Vec<u8>)> {
    let mut out = Vec::new();
    while !b.is_empty() {
        let id = b[0];
        b = &b[1..];
        let n = match id {
            0x01 | 0x17 | 0x19 | 0x24 | 0x25 | 0x28 | 0x29 | 0x2A => 1,
            0x13 | 0x21 | 0x22 | 0x23 => 2,
            0x02 | 0x11 | 0x18 | 0x27 => 4,
            0x0B => varint_at(b).1,
            0x03 | 0x08 | 0x09 | 0x12 | 0x15 | 0x16 | 0x1A | 0x1C | 0x1F => {
                2 + usize::from(u16::from_be_bytes([b[0], b[1]]))
            }
            0x26 => {
                let k = 2 + usize::from(u16::from_be_bytes([b[0], b[1]]));
                k + 2 + usize::from(u16::from_be_bytes([b[k], b[k + 1]]))
            }
            other => panic!("unknown property id {other:#04x} in {}", hex(b)),
        };
        out.push((id, b[..n].to_vec()));
        b = &b[n..];
    }
    out
}

/// Reads a property block (length + body) at the start of `b`: (properties, bytes used).
pub fn props_at(b: &[u8]) -> (Vec<(u8, Vec<u8>)>, usize) {
    let (len, used) = varint_at(b);
    let end = used + len as usize;
    (parse_props(&b[used..end]), end)
}

/// A decoded PUBLISH as a subscriber receives it.
#[derive(Debug)]
pub struct Pub {
    pub qos: u8,
    pub retain: bool,
    pub dup: bool,
    pub topic: String,
    pub packet_id: u16,
    pub props: Vec<(u8, Vec<u8>)>,
    pub payload: Vec<u8>,
}

impl Pub {
    pub fn prop(&self, id: u8) -> Option<&[u8]> {
        self.props
            .iter()
            .find(|(i, _)| *i == id)
            .map(|(_, v)| v.as_slice())
    }
    pub fn expiry(&self) -> Option<u32> {
        self.prop(MESSAGE_EXPIRY)
            .map(|v| u32::from_be_bytes([v[0], v[1], v[2], v[3]]))
    }
    pub fn alias(&self) -> Option<u16> {
        self.prop(TOPIC_ALIAS)
            .map(|v| u16::from_be_bytes([v[0], v[1]]))
    }
    pub fn user_properties(&self) -> Vec<(String, String)> {
        self.props
            .iter()
            .filter(|(i, _)| *i == USER_PROPERTY)
            .map(|(_, v)| {
                let k = usize::from(u16::from_be_bytes([v[0], v[1]]));
                let key = String::from_utf8(v[2..2 + k].to_vec()).unwrap();
                let val = String::from_utf8(v[2 + k + 2..].to_vec()).unwrap();
                (key, val)
            })
            .collect()
    }
}

/// Decodes a whole PUBLISH packet (as returned by `read_packet`).
pub fn parse_publish(pkt: &[u8], v5: bool) -> Pub {
    assert_eq!(pkt[0] >> 4, 3, "expected PUBLISH, got {}", hex(pkt));
    let flags = pkt[0] & 0x0f;
    let (_, used) = varint_at(&pkt[1..]);
    let body = &pkt[1 + used..];
    let tlen = usize::from(u16::from_be_bytes([body[0], body[1]]));
    let topic = String::from_utf8(body[2..2 + tlen].to_vec()).unwrap();
    let mut i = 2 + tlen;
    let qos = (flags >> 1) & 3;
    let mut packet_id = 0;
    if qos > 0 {
        packet_id = u16::from_be_bytes([body[i], body[i + 1]]);
        i += 2;
    }
    let mut props = Vec::new();
    if v5 {
        let (p, used) = props_at(&body[i..]);
        props = p;
        i += used;
    }
    Pub {
        qos,
        retain: flags & 1 != 0,
        dup: flags & 8 != 0,
        topic,
        packet_id,
        props,
        payload: body[i..].to_vec(),
    }
}

/// Asserts that nothing arrives within `wait`.
pub fn expect_silence(s: &TcpStream, wait: Duration, what: &str) {
    if let Some(p) = try_read_packet(s, wait) {
        panic!("{what}: expected nothing, received {}", hex(&p));
    }
}

/// Reads the next packet and decodes it as a PUBLISH (5.0 unless `v5` is false).
pub fn next_publish(s: &TcpStream, v5: bool) -> Pub {
    parse_publish(&common::read_packet(s), v5)
}

/// Properties as (identifier, raw value) in wire order.
pub type Props = Vec<(u8, Vec<u8>)>;
/// (session present, reason code, properties) of a 5.0 CONNACK.
pub type ConnAck = (bool, u8, Props);

/// Decodes a 5.0 CONNACK.
pub fn parse_connack(pkt: &[u8]) -> ConnAck {
    assert_eq!(pkt[0], 0x20, "expected CONNACK, got {}", hex(pkt));
    let (_, used) = varint_at(&pkt[1..]);
    let body = &pkt[1 + used..];
    let (props, _) = props_at(&body[2..]);
    (body[0] & 1 == 1, body[1], props)
}

/// Connects a 5.0 client and checks CONNACK Success; returns the socket and the CONNACK.
pub fn open(
    addr: SocketAddr,
    client_id: &str,
    clean_start: bool,
    props: &[u8],
    will: Option<&Will>,
) -> (TcpStream, ConnAck) {
    open_on(
        common::connect_raw(addr),
        client_id,
        clean_start,
        props,
        will,
    )
}

/// [`open`] on a socket already connected (e.g. by [`common::connect_raw_rcvbuf`]).
pub fn open_on(
    s: TcpStream,
    client_id: &str,
    clean_start: bool,
    props: &[u8],
    will: Option<&Will>,
) -> (TcpStream, ConnAck) {
    send(&s, &connect(client_id, 60, clean_start, props, will));
    let ack = parse_connack(&common::read_packet(&s));
    assert_eq!(ack.1, 0x00, "CONNACK reason for {client_id}");
    (s, ack)
}

/// SUBSCRIBE to one filter and check the SUBACK grants the requested QoS.
pub fn sub(s: &TcpStream, packet_id: u16, filter: &str, options: u8) {
    send(s, &subscribe(packet_id, filter, options));
    let ack = common::read_packet(s);
    let mut want = vec![0x90, 0x04];
    want.extend(packet_id.to_be_bytes());
    want.extend([0x00, options & 3]);
    assert_eq!(ack, want, "SUBACK for {filter}: {}", hex(&ack));
}
