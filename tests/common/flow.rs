//! Raw-socket MQTT flows for the QoS, session and routing tests: CONNECT with properties,
//! SUBSCRIBE with several filters and a Subscription Identifier, PUBLISH parsing into [`Pub`],
//! acks, and reads that wait for a packet or for silence.

use std::io::{ErrorKind, Read};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use super::{connect_raw, hex, packet, read_packet, send, IO_TIMEOUT};

/// MQTT 5.0 CONNECT with keep alive 60 s and the given raw CONNECT properties.
pub fn connect_v5_props(client_id: &str, clean_start: bool, props: &[u8]) -> Vec<u8> {
    let mut body = packet::utf8("MQTT");
    body.push(5);
    body.push(if clean_start { 0x02 } else { 0 });
    body.extend(60u16.to_be_bytes());
    body.extend(packet::properties(props));
    body.extend(packet::utf8(client_id));
    packet::fixed(0x10, &body)
}

/// 5.0 SUBSCRIBE with an optional Subscription Identifier (property 0x0B) and several
/// (filter, options byte) pairs.
pub fn subscribe_v5(packet_id: u16, sub_id: Option<u32>, filters: &[(&str, u8)]) -> Vec<u8> {
    let mut props = Vec::new();
    if let Some(id) = sub_id {
        props.push(0x0b);
        props.extend(packet::varint(id));
    }
    let mut body = packet_id.to_be_bytes().to_vec();
    body.extend(packet::properties(&props));
    for (filter, options) in filters {
        body.extend(packet::utf8(filter));
        body.push(*options);
    }
    packet::fixed(0x82, &body)
}

/// 3.1.1 SUBSCRIBE with several (filter, requested QoS) pairs.
pub fn subscribe_v311(packet_id: u16, filters: &[(&str, u8)]) -> Vec<u8> {
    let mut body = packet_id.to_be_bytes().to_vec();
    for (filter, qos) in filters {
        body.extend(packet::utf8(filter));
        body.push(*qos);
    }
    packet::fixed(0x82, &body)
}

/// UNSUBSCRIBE with several filters.
pub fn unsubscribe_many(v5: bool, packet_id: u16, filters: &[&str]) -> Vec<u8> {
    let mut body = packet_id.to_be_bytes().to_vec();
    if v5 {
        body.extend(packet::properties(&[]));
    }
    for f in filters {
        body.extend(packet::utf8(f));
    }
    packet::fixed(0xa2, &body)
}

/// Index of the first byte after the fixed header (type byte + Remaining Length).
pub fn body_start(pkt: &[u8]) -> usize {
    let mut i = 1;
    while pkt[i] & 0x80 != 0 {
        i += 1;
    }
    i + 1
}

/// A Variable Byte Integer at the start of `b`: (value, bytes used).
pub fn read_varint(b: &[u8]) -> (usize, usize) {
    let mut value = 0usize;
    for (i, byte) in b.iter().enumerate().take(4) {
        value |= usize::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return (value, i + 1);
        }
    }
    panic!("malformed varint {}", hex(b));
}

pub fn u16_at(b: &[u8], i: usize) -> u16 {
    u16::from_be_bytes([b[i], b[i + 1]])
}

/// A PUBLISH as received from the broker.
#[derive(Debug, Clone)]
pub struct Pub {
    pub dup: bool,
    pub qos: u8,
    pub retain: bool,
    pub topic: String,
    pub packet_id: Option<u16>,
    pub sub_ids: Vec<u32>,
    pub payload: Vec<u8>,
}

pub fn parse_publish(pkt: &[u8], v5: bool) -> Pub {
    assert_eq!(pkt[0] >> 4, 3, "expected PUBLISH, got {}", hex(pkt));
    let flags = pkt[0] & 0x0f;
    let qos = (flags >> 1) & 0x03;
    let mut i = body_start(pkt);
    let tlen = usize::from(u16_at(pkt, i));
    i += 2;
    let topic = String::from_utf8(pkt[i..i + tlen].to_vec()).expect("UTF-8 topic");
    i += tlen;
    let packet_id = if qos > 0 {
        i += 2;
        Some(u16_at(pkt, i - 2))
    } else {
        None
    };
    let mut sub_ids = Vec::new();
    if v5 {
        let (plen, n) = read_varint(&pkt[i..]);
        i += n;
        let end = i + plen;
        while i < end {
            let id = pkt[i];
            i += 1;
            match id {
                0x01 => i += 1, // Payload Format Indicator
                0x02 => i += 4, // Message Expiry Interval
                0x23 => i += 2, // Topic Alias
                0x03 | 0x08 | 0x09 => i += 2 + usize::from(u16_at(pkt, i)), // strings / binary
                0x26 => {
                    i += 2 + usize::from(u16_at(pkt, i));
                    i += 2 + usize::from(u16_at(pkt, i));
                }
                0x0b => {
                    let (v, n) = read_varint(&pkt[i..]);
                    sub_ids.push(v as u32);
                    i += n;
                }
                other => panic!("unexpected PUBLISH property 0x{other:02x} in {}", hex(pkt)),
            }
        }
        assert_eq!(i, end, "property block overran: {}", hex(pkt));
    }
    Pub {
        dup: flags & 0x08 != 0,
        qos,
        retain: flags & 0x01 != 0,
        topic,
        packet_id,
        sub_ids,
        payload: pkt[i..].to_vec(),
    }
}

pub fn read_publish(s: &TcpStream, v5: bool) -> Pub {
    parse_publish(&read_packet(s), v5)
}

/// (first byte, packet id, reason code) of PUBACK/PUBREC/PUBREL/PUBCOMP; a missing reason is 0.
pub fn parse_ack(pkt: &[u8]) -> (u8, u16, u8) {
    let i = body_start(pkt);
    let reason = if pkt.len() - i >= 3 { pkt[i + 2] } else { 0 };
    (pkt[0], u16_at(pkt, i), reason)
}

pub fn expect_ack(s: &TcpStream, first: u8, packet_id: u16, reason: u8) {
    let pkt = read_packet(s);
    assert_eq!(
        parse_ack(&pkt),
        (first, packet_id, reason),
        "ack (first byte, id, reason) differs: {}",
        hex(&pkt)
    );
}

/// Reads a SUBACK, checks its packet id and returns the reason codes.
pub fn read_suback(s: &TcpStream, v5: bool, packet_id: u16) -> Vec<u8> {
    let pkt = read_packet(s);
    assert_eq!(pkt[0], 0x90, "expected SUBACK, got {}", hex(&pkt));
    let mut i = body_start(&pkt);
    assert_eq!(u16_at(&pkt, i), packet_id, "SUBACK id: {}", hex(&pkt));
    i += 2;
    if v5 {
        let (plen, n) = read_varint(&pkt[i..]);
        i += n + plen;
    }
    pkt[i..].to_vec()
}

/// A connected raw 5.0 client (CONNACK Success checked); returns the socket and Session Present.
pub fn raw_v5(
    addr: SocketAddr,
    client_id: &str,
    clean_start: bool,
    props: &[u8],
) -> (TcpStream, bool) {
    let s = connect_raw(addr);
    send(&s, &connect_v5_props(client_id, clean_start, props));
    let ack = read_packet(&s);
    assert_eq!(ack[0], 0x20, "expected CONNACK, got {}", hex(&ack));
    let i = body_start(&ack);
    assert_eq!(ack[i + 1], 0x00, "CONNACK reason: {}", hex(&ack));
    (s, ack[i] & 1 == 1)
}

pub fn raw_v311(addr: SocketAddr, client_id: &str, clean_session: bool) -> TcpStream {
    let s = connect_raw(addr);
    send(&s, &packet::connect_v311(client_id, 60, clean_session));
    let ack = read_packet(&s);
    assert_eq!(&ack[..2], &[0x20, 0x02], "CONNACK: {}", hex(&ack));
    assert_eq!(ack[3], 0, "CONNACK return code: {}", hex(&ack));
    s
}

/// Sends a 5.0 SUBSCRIBE and returns the SUBACK reason codes.
pub fn sub_v5(
    s: &TcpStream,
    packet_id: u16,
    sub_id: Option<u32>,
    filters: &[(&str, u8)],
) -> Vec<u8> {
    send(s, &subscribe_v5(packet_id, sub_id, filters));
    read_suback(s, true, packet_id)
}

pub use super::finish_packet;

/// Asserts that nothing arrives on `s` for `d` (and that it stays open).
pub fn expect_silence(s: &TcpStream, d: Duration) {
    s.set_read_timeout(Some(d)).unwrap();
    let mut b = [0u8; 1];
    let r = (&mut &*s).read(&mut b);
    s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    match r {
        Ok(0) => panic!("connection closed while expecting silence"),
        Ok(_) => {
            let pkt = finish_packet(s, b[0]);
            panic!("expected nothing for {d:?}, received {}", hex(&pkt));
        }
        Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
        Err(e) => panic!("read error while expecting silence: {e}"),
    }
}

/// Reads PUBLISH packets until nothing arrives for `quiet` (bounded by 10 s in total).
pub fn drain_publishes(s: &TcpStream, v5: bool, quiet: Duration) -> Vec<Pub> {
    let mut out = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        assert!(Instant::now() < deadline, "still receiving after 10 s");
        s.set_read_timeout(Some(quiet)).unwrap();
        let mut b = [0u8; 1];
        let r = (&mut &*s).read(&mut b);
        s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        match r {
            Ok(0) => panic!("connection closed while draining"),
            Ok(_) => out.push(parse_publish(&finish_packet(s, b[0]), v5)),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                return out
            }
            Err(e) => panic!("read error while draining: {e}"),
        }
    }
}

/// Raw 5.0 QoS 1 PUBLISH, waiting for its PUBACK; returns the PUBACK reason code.
pub fn publish_qos1_v5(
    s: &TcpStream,
    topic: &str,
    payload: &[u8],
    packet_id: u16,
    retain: bool,
) -> u8 {
    send(
        s,
        &packet::publish(true, topic, payload, 1, Some(packet_id), retain, false),
    );
    let pkt = read_packet(s);
    let (first, id, reason) = parse_ack(&pkt);
    assert_eq!((first, id), (0x40, packet_id), "PUBACK: {}", hex(&pkt));
    reason
}
