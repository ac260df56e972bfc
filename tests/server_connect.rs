//! Connection life cycle of the real `mqtt5-broker` binary: CONNECT / CONNACK (5.0, 3.1.1
//! and 3.1), limits (max clients, keep alive, connect timeout, maximum packet size), protocol
//! violations around CONNECT, and process shutdown on SIGTERM / SIGINT.
//!
//! Test names cite the conformance statement (`mqtt_3_1_2_24_…` = [MQTT-3.1.2-24]) or, where
//! the spec has no numbered statement, the section (`spec_3_2_2_3_6_…` = §3.2.2.3.6). Ids are
//! MQTT 5.0 unless the name says `v311`, in which case they are MQTT 3.1.1 ids.
//!
//! rumqttc (sync `Client` + `Connection::recv_timeout`) is the independent client where whole
//! sessions matter; raw bytes where the exact bytes matter.

mod common;

use std::net::{SocketAddr, TcpStream};
use std::thread;
use std::time::{Duration, Instant};

use common::*;

const ANON: &str = "--allow-anonymous";

// ------------------------------------------------------------------ helpers

/// Variable Byte Integer at the start of `b`: (value, bytes used).
fn varint_at(b: &[u8]) -> (u32, usize) {
    let mut value = 0u32;
    for (i, byte) in b.iter().enumerate().take(4) {
        value |= u32::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return (value, i + 1);
        }
    }
    panic!("malformed varint in {}", hex(b));
}

/// A decoded CONNACK / DISCONNECT property value.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Prop {
    Int(u32),
    Str(String),
    Bin(Vec<u8>),
    Pair(String, String),
}

/// Decodes a property block body (without its Property Length), MQTT 5.0 §2.2.2.
fn parse_props(mut b: &[u8]) -> Vec<(u8, Prop)> {
    fn take<'a>(b: &mut &'a [u8], n: usize) -> &'a [u8] {
        assert!(b.len() >= n, "property truncated: {}", hex(b));
        let (head, tail) = b.split_at(n);
        *b = tail;
        head
    }
    fn string(b: &mut &[u8]) -> String {
        let len = u16::from_be_bytes(take(b, 2).try_into().unwrap()) as usize;
        String::from_utf8(take(b, len).to_vec()).expect("UTF-8 property")
    }
    let mut out = Vec::new();
    while !b.is_empty() {
        let (id, n) = varint_at(b);
        b = &b[n..];
        let id = u8::try_from(id).expect("property id fits a byte");
        let value = match id {
            0x01 | 0x17 | 0x19 | 0x24 | 0x25 | 0x28 | 0x29 | 0x2a => {
                Prop::Int(u32::from(take(&mut b, 1)[0]))
            }
            0x13 | 0x21 | 0x22 | 0x23 => Prop::Int(u32::from(u16::from_be_bytes(
                take(&mut b, 2).try_into().unwrap(),
            ))),
            0x02 | 0x11 | 0x18 | 0x27 => {
                Prop::Int(u32::from_be_bytes(take(&mut b, 4).try_into().unwrap()))
            }
            0x0b => {
                let (v, n) = varint_at(b);
                b = &b[n..];
                Prop::Int(v)
            }
            0x03 | 0x08 | 0x12 | 0x15 | 0x1a | 0x1c | 0x1f => Prop::Str(string(&mut b)),
            0x09 | 0x16 => {
                let len = u16::from_be_bytes(take(&mut b, 2).try_into().unwrap()) as usize;
                Prop::Bin(take(&mut b, len).to_vec())
            }
            0x26 => {
                let k = string(&mut b);
                Prop::Pair(k, string(&mut b))
            }
            other => panic!("unknown property id 0x{other:02x}"),
        };
        out.push((id, value));
    }
    out
}

/// A decoded MQTT 5.0 CONNACK.
#[derive(Debug)]
struct ConnAck {
    session_present: bool,
    reason: u8,
    props: Vec<(u8, Prop)>,
}

impl ConnAck {
    fn int(&self, id: u8) -> Option<u32> {
        self.props
            .iter()
            .find(|(i, _)| *i == id)
            .map(|(_, v)| match v {
                Prop::Int(n) => *n,
                other => panic!("property 0x{id:02x} is not an integer: {other:?}"),
            })
    }
    fn string(&self, id: u8) -> Option<String> {
        self.props
            .iter()
            .find(|(i, _)| *i == id)
            .map(|(_, v)| match v {
                Prop::Str(s) => s.clone(),
                other => panic!("property 0x{id:02x} is not a string: {other:?}"),
            })
    }
}

/// Parses a whole 5.0 CONNACK packet (§3.2), checking its framing.
fn parse_connack_v5(pkt: &[u8]) -> ConnAck {
    assert_eq!(pkt.first(), Some(&0x20), "not a CONNACK: {}", hex(pkt));
    let (rl, n) = varint_at(&pkt[1..]);
    let body = &pkt[1 + n..];
    assert_eq!(body.len(), rl as usize, "CONNACK length: {}", hex(pkt));
    assert!(body.len() >= 3, "5.0 CONNACK too short: {}", hex(pkt));
    // MQTT-3.2.2-1: bits 7-1 of the Connect Acknowledge Flags are reserved, 0.
    assert_eq!(
        body[0] & 0xfe,
        0,
        "reserved CONNACK flags set: {}",
        hex(pkt)
    );
    let (plen, m) = varint_at(&body[2..]);
    let props = &body[2 + m..];
    assert_eq!(props.len(), plen as usize, "property length: {}", hex(pkt));
    let props = parse_props(props);
    let mut ids: Vec<u8> = props
        .iter()
        .map(|(i, _)| *i)
        .filter(|i| *i != 0x26)
        .collect();
    ids.sort_unstable();
    let before = ids.len();
    ids.dedup();
    assert_eq!(
        before,
        ids.len(),
        "duplicate CONNACK property: {}",
        hex(pkt)
    );
    ConnAck {
        session_present: body[0] & 1 == 1,
        reason: body[1],
        props,
    }
}

/// The reason code of a whole 5.0 DISCONNECT packet (§3.14; no reason byte means 0x00).
fn disconnect_reason(pkt: &[u8]) -> u8 {
    assert_eq!(pkt.first(), Some(&0xe0), "not a DISCONNECT: {}", hex(pkt));
    let (rl, n) = varint_at(&pkt[1..]);
    let body = &pkt[1 + n..];
    assert_eq!(body.len(), rl as usize, "DISCONNECT length: {}", hex(pkt));
    body.first().copied().unwrap_or(0)
}

/// Expects exactly one DISCONNECT with `reason`, then the close (MQTT-3.14.4-1/-2: nothing
/// after DISCONNECT, and the sender closes).
fn expect_disconnect_then_close(s: &TcpStream, reason: u8, timeout: Duration) {
    let bytes = expect_closed(s, timeout);
    assert!(
        !bytes.is_empty(),
        "connection closed without the DISCONNECT 0x{reason:02x} first"
    );
    assert_eq!(
        disconnect_reason(&bytes),
        reason,
        "DISCONNECT reason (received {})",
        hex(&bytes)
    );
}

/// Expects the connection to be closed without a single byte from the broker.
fn expect_silent_close(s: &TcpStream, timeout: Duration, what: &str) {
    let bytes = expect_closed(s, timeout);
    assert!(
        bytes.is_empty(),
        "{what}: expected a close without any bytes, received {}",
        hex(&bytes)
    );
}

/// Raw 5.0 CONNECT; returns the socket and the decoded CONNACK.
fn connect_v5(addr: SocketAddr, id: &str, keep_alive: u16) -> (TcpStream, ConnAck) {
    let s = connect_raw(addr);
    send(&s, &packet::connect_v5(id, keep_alive, true));
    let ack = parse_connack_v5(&read_packet(&s));
    (s, ack)
}

/// Raw 5.0 CONNECT that must be accepted.
fn connect_v5_ok(addr: SocketAddr, id: &str, keep_alive: u16) -> TcpStream {
    let (s, ack) = connect_v5(addr, id, keep_alive);
    assert_eq!(ack.reason, 0, "CONNACK for {id:?}: {ack:?}");
    s
}

/// Raw 3.1.1 CONNECT that must be accepted with exactly `20 02 00 00`.
fn connect_v311_ok(addr: SocketAddr, id: &str, keep_alive: u16) -> TcpStream {
    let s = connect_raw(addr);
    send(&s, &packet::connect_v311(id, keep_alive, true));
    expect_bytes(&s, &packet::connack_v311(false, 0));
    s
}

/// One whole packet, or `None` if the connection is closed or reset first (5 s timeout).
fn read_packet_or_close(s: &TcpStream) -> Option<Vec<u8>> {
    use std::io::{ErrorKind, Read};
    let read_byte = || -> Option<u8> {
        let mut stream = s;
        let mut byte = [0u8; 1];
        loop {
            match stream.read(&mut byte) {
                Ok(0) => return None,
                Ok(_) => return Some(byte[0]),
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e)
                    if matches!(
                        e.kind(),
                        ErrorKind::ConnectionReset | ErrorKind::ConnectionAborted
                    ) =>
                {
                    return None
                }
                Err(e) => panic!("read error: {e}"),
            }
        }
    };
    let mut pkt = vec![read_byte()?];
    loop {
        let b = read_byte()?;
        pkt.push(b);
        if b & 0x80 == 0 {
            break;
        }
        assert!(pkt.len() < 5, "malformed Remaining Length: {}", hex(&pkt));
    }
    let (len, _) = varint_at(&pkt[1..]);
    for _ in 0..len {
        pkt.push(read_byte()?);
    }
    Some(pkt)
}

/// What became of a 5.0 CONNECT.
enum Outcome {
    Accepted(TcpStream),
    /// CONNACK with this reason (>= 0x80), and the connection then closed.
    Refused(u8),
    /// Closed without CONNACK: allowed when the broker is too busy to even answer
    /// over-limit connections (it answers at most 16 at a time).
    ClosedSilently,
}

fn try_connect_v5(addr: SocketAddr, id: &str) -> Outcome {
    let s = connect_raw(addr);
    send(&s, &packet::connect_v5(id, 30, true));
    let Some(pkt) = read_packet_or_close(&s) else {
        return Outcome::ClosedSilently;
    };
    let ack = parse_connack_v5(&pkt);
    if ack.reason == 0 {
        return Outcome::Accepted(s);
    }
    assert!(!ack.session_present, "MQTT-3.2.2-6: {ack:?}");
    expect_silent_close(&s, Duration::from_secs(3), "after a refusing CONNACK");
    Outcome::Refused(ack.reason)
}

/// A 5.0 client admitted within `within`, retrying while the broker still refuses (a closed
/// connection is counted out shortly after the close, not at once). A count that drifted for
/// good still fails after `within`.
fn connect_v5_admitted_within(addr: SocketAddr, id: &str, within: Duration) -> TcpStream {
    let deadline = Instant::now() + within;
    loop {
        match try_connect_v5(addr, id) {
            Outcome::Accepted(s) => return s,
            Outcome::Refused(0x97) | Outcome::ClosedSilently => {}
            Outcome::Refused(r) => panic!("unexpected CONNACK 0x{r:02x} for {id:?}"),
        }
        assert!(
            Instant::now() < deadline,
            "{id:?} still refused after {within:?}: connection count drifted"
        );
        thread::sleep(Duration::from_millis(50));
    }
}

/// The limit is reached: a 5.0 CONNECT is refused with 0x97 (retrying only while the broker
/// is too busy to answer at all); being admitted fails the test.
fn expect_v5_refused_within(addr: SocketAddr, id: &str, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        match try_connect_v5(addr, id) {
            Outcome::Refused(0x97) => return,
            Outcome::Refused(r) => panic!("CONNACK 0x{r:02x} for {id:?}, expected 0x97"),
            Outcome::Accepted(_) => panic!("{id:?} admitted beyond max_clients"),
            Outcome::ClosedSilently => {}
        }
        assert!(
            Instant::now() < deadline,
            "{id:?} never got CONNACK 0x97 within {within:?}"
        );
        thread::sleep(Duration::from_millis(50));
    }
}

/// Expects the 5.0 CONNECT of `id` to be refused with 0x97 Quota exceeded and closed
/// (MQTT-3.2.2-6: Session Present 0; MQTT-3.2.2-7: close after a reason >= 0x80).
fn expect_v5_quota_exceeded(addr: SocketAddr, id: &str) {
    let (s, ack) = connect_v5(addr, id, 30);
    assert_eq!(
        ack.reason, 0x97,
        "CONNACK for {id:?} over max_clients: {ack:?}"
    );
    assert!(!ack.session_present, "MQTT-3.2.2-6: {ack:?}");
    expect_silent_close(&s, Duration::from_secs(3), "after CONNACK 0x97");
}

/// A CONNECT body with an arbitrary protocol name / level / flags.
fn connect_custom(name: &str, level: u8, flags: u8, props_v5: bool, client_id: &str) -> Vec<u8> {
    let mut body = packet::utf8(name);
    body.push(level);
    body.push(flags);
    body.extend(30u16.to_be_bytes());
    if props_v5 {
        body.extend(packet::properties(&[]));
    }
    body.extend(packet::utf8(client_id));
    packet::fixed(0x10, &body)
}

/// The `ADDR:PORT` after `from ` in a log line.
fn peer_in(line: &str) -> String {
    let rest = &line[line.find(" from ").expect("' from ' in line") + 6..];
    rest.split_whitespace().next().unwrap().to_string()
}

/// The one log line containing all of `needles`, waiting up to 5 s for it.
fn log_line(b: &Broker, needles: &[&str]) -> String {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let log = b.log();
        if let Some(l) = log.lines().find(|l| needles.iter().all(|n| l.contains(n))) {
            return l.to_string();
        }
        assert!(
            Instant::now() < deadline,
            "no log line with {needles:?}\n--- broker log ---\n{log}"
        );
        thread::sleep(Duration::from_millis(10));
    }
}

/// Checks the connect and disconnect log lines of `id`: same peer address, protocol version,
/// and the disconnect reason.
fn check_connect_disconnect_log(b: &Broker, id: &str, version: &str, reason: &str) {
    let connected = log_line(b, &[&format!("client {id} connected from 127.0.0.1:")]);
    assert!(
        connected.contains(&format!("(MQTT {version},")),
        "connect line lacks the version: {connected}"
    );
    let gone = log_line(b, &[&format!("client {id} disconnected from 127.0.0.1:")]);
    assert!(
        gone.contains(&format!("(MQTT {version})")),
        "disconnect line lacks the version: {gone}"
    );
    assert!(
        gone.contains(reason),
        "disconnect line lacks {reason:?}: {gone}"
    );
    assert_eq!(
        peer_in(&connected),
        peer_in(&gone),
        "connect / disconnect lines name different addresses"
    );
}

// ------------------------------------------------- rumqttc: whole sessions

/// rumqttc v5 with Keep Alive 5 against `--max-keepalive 2`: the CONNACK carries Server Keep
/// Alive 2, the client uses it (MQTT-3.2.2-21) and pings; the broker keeps the connection for
/// more than two periods (it would close after 3 s of silence, MQTT-3.1.2-24), then a clean
/// DISCONNECT is logged with client id, address, version and reason.
#[test]
fn mqtt_3_1_2_24_rumqttc_v5_connect_ping_disconnect_with_server_keep_alive() {
    use rumqttc::v5::mqttbytes::v5::{ConnectReturnCode, Packet};
    use rumqttc::v5::{Client, Event, MqttOptions};
    use rumqttc::Outgoing;

    let b = Broker::start(&[ANON, "--max-keepalive", "2"]);
    let mut opts = MqttOptions::new("rumqttc-v5", "127.0.0.1", b.mqtt.port());
    opts.set_keep_alive(Duration::from_secs(5));
    let (client, mut conn) = Client::new(opts, 10);

    let start = Instant::now();
    let stay = Duration::from_millis(5_000);
    let (mut connacks, mut pings) = (0, 0);
    while start.elapsed() < stay {
        match conn.recv_timeout(
            stay.saturating_sub(start.elapsed())
                .max(Duration::from_millis(1)),
        ) {
            Ok(Ok(Event::Incoming(Packet::ConnAck(ack)))) => {
                assert_eq!(ack.code, ConnectReturnCode::Success);
                assert!(!ack.session_present);
                let props = ack.properties.expect("CONNACK properties");
                assert_eq!(props.server_keep_alive, Some(2), "Server Keep Alive");
                connacks += 1;
            }
            Ok(Ok(Event::Incoming(Packet::PingResp(_)))) => pings += 1,
            Ok(Ok(_)) => {}
            Ok(Err(e)) => panic!(
                "connection failed after {:?}: {e}\n--- broker log ---\n{}",
                start.elapsed(),
                b.log()
            ),
            Err(_) => {}
        }
    }
    assert_eq!(connacks, 1, "exactly one CONNACK (MQTT-3.2.0-2)");
    assert!(
        pings >= 2,
        "expected >= 2 PINGRESP in 5 s at keep alive 2, got {pings}"
    );

    client.disconnect().unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        assert!(Instant::now() < deadline, "DISCONNECT was not sent");
        match conn.recv_timeout(Duration::from_millis(500)) {
            Ok(Ok(Event::Outgoing(Outgoing::Disconnect))) => break,
            Ok(Ok(_)) | Err(_) => {}
            Ok(Err(e)) => panic!("connection failed before DISCONNECT: {e}"),
        }
    }
    check_connect_disconnect_log(&b, "rumqttc-v5", "5.0", "client disconnected");
    let connected = log_line(&b, &["client rumqttc-v5 connected"]);
    assert!(connected.contains("keep alive 2s"), "{connected}");
}

/// rumqttc 3.1.1 with Keep Alive 1 s: pings keep it connected for 3 s (> 2 periods; silence
/// would be closed after 1.5 s, v311 MQTT-3.1.2-24), then a clean DISCONNECT is logged.
#[test]
fn v311_mqtt_3_1_2_24_rumqttc_v311_connect_ping_disconnect() {
    use rumqttc::{Client, ConnectReturnCode, Event, MqttOptions, Outgoing, Packet};

    let b = Broker::start(&[ANON]);
    let mut opts = MqttOptions::new("rumqttc-v4", "127.0.0.1", b.mqtt.port());
    opts.set_keep_alive(Duration::from_secs(1));
    let (client, mut conn) = Client::new(opts, 10);

    let start = Instant::now();
    let stay = Duration::from_millis(3_000);
    let (mut connacks, mut pings) = (0, 0);
    while start.elapsed() < stay {
        match conn.recv_timeout(
            stay.saturating_sub(start.elapsed())
                .max(Duration::from_millis(1)),
        ) {
            Ok(Ok(Event::Incoming(Packet::ConnAck(ack)))) => {
                assert_eq!(ack.code, ConnectReturnCode::Success);
                assert!(!ack.session_present);
                connacks += 1;
            }
            Ok(Ok(Event::Incoming(Packet::PingResp))) => pings += 1,
            Ok(Ok(_)) => {}
            Ok(Err(e)) => panic!(
                "connection failed after {:?}: {e}\n--- broker log ---\n{}",
                start.elapsed(),
                b.log()
            ),
            Err(_) => {}
        }
    }
    assert_eq!(connacks, 1, "exactly one CONNACK");
    assert!(
        pings >= 2,
        "expected >= 2 PINGRESP in 3 s at keep alive 1, got {pings}"
    );

    client.disconnect().unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        assert!(Instant::now() < deadline, "DISCONNECT was not sent");
        match conn.recv_timeout(Duration::from_millis(500)) {
            Ok(Ok(Event::Outgoing(Outgoing::Disconnect))) => break,
            Ok(Ok(_)) | Err(_) => {}
            Ok(Err(e)) => panic!("connection failed before DISCONNECT: {e}"),
        }
    }
    check_connect_disconnect_log(&b, "rumqttc-v4", "3.1.1", "client disconnected");
}

// ------------------------------------------------------------ CONNACK bytes

/// 5.0 CONNACK: Success, Session Present 0 for Clean Start 1 (MQTT-3.2.2-2), and the
/// capability properties reflect the flags given (§3.2.2.3).
#[test]
fn mqtt_3_2_2_2_connack_v5_success_with_capabilities_from_flags() {
    let b = Broker::start(&[
        ANON,
        "--receive-maximum",
        "7",
        "--max-packet-size",
        "5000",
        "--max-topic-alias",
        "3",
        "--retain-available",
        "false",
    ]);
    let (_s, ack) = connect_v5(b.mqtt, "caps", 30);
    assert_eq!(ack.reason, 0, "{ack:?}");
    assert!(!ack.session_present, "MQTT-3.2.2-2: {ack:?}");
    assert_eq!(ack.int(0x21), Some(7), "Receive Maximum: {ack:?}");
    assert_eq!(ack.int(0x27), Some(5000), "Maximum Packet Size: {ack:?}");
    assert_eq!(ack.int(0x22), Some(3), "Topic Alias Maximum: {ack:?}");
    assert_eq!(ack.int(0x25), Some(0), "Retain Available: {ack:?}");
    assert_eq!(
        ack.int(0x28),
        Some(1),
        "Wildcard Subscription Available: {ack:?}"
    );
    assert_eq!(
        ack.int(0x29),
        Some(1),
        "Subscription Identifier Available: {ack:?}"
    );
    assert_eq!(
        ack.int(0x2a),
        Some(1),
        "Shared Subscription Available: {ack:?}"
    );
    // Keep Alive 30 is within the default maximum: no Server Keep Alive (MQTT-3.2.2-22);
    // the client chose its id: no Assigned Client Identifier.
    assert_eq!(ack.int(0x13), None, "Server Keep Alive: {ack:?}");
    assert_eq!(
        ack.string(0x12),
        None,
        "Assigned Client Identifier: {ack:?}"
    );
}

/// 5.0 CONNACK with the default settings: Receive Maximum absent (= 65535, §3.2.2.3.3),
/// Maximum Packet Size 1048576, Topic Alias Maximum 10, Retain Available absent (= available,
/// §3.2.2.3.5).
#[test]
fn mqtt_3_2_2_2_connack_v5_default_capabilities() {
    let b = Broker::start(&[ANON]);
    let (_s, ack) = connect_v5(b.mqtt, "defaults", 30);
    assert_eq!(ack.reason, 0, "{ack:?}");
    assert!(!ack.session_present);
    assert_eq!(ack.int(0x21), None, "Receive Maximum: {ack:?}");
    assert_eq!(
        ack.int(0x27),
        Some(1_048_576),
        "Maximum Packet Size: {ack:?}"
    );
    assert_eq!(ack.int(0x22), Some(10), "Topic Alias Maximum: {ack:?}");
    assert_eq!(ack.int(0x25), None, "Retain Available: {ack:?}");
    assert_eq!(
        ack.int(0x24),
        None,
        "Maximum QoS (QoS 2 supported): {ack:?}"
    );
    assert_eq!(ack.int(0x28), Some(1));
    assert_eq!(ack.int(0x29), Some(1));
    assert_eq!(ack.int(0x2a), Some(1));
}

/// 3.1.1 CONNACK is exactly `20 02 00 00` (v311 §3.2, MQTT-3.2.2-2: Session Present 0 for
/// Clean Session 1).
#[test]
fn v311_mqtt_3_2_2_2_connack_is_exactly_20_02_00_00() {
    let b = Broker::start(&[ANON]);
    let s = connect_raw(b.mqtt);
    send(&s, &packet::connect_v311("v311", 30, true));
    expect_bytes(&s, &[0x20, 0x02, 0x00, 0x00]);
    send(&s, &packet::pingreq());
    expect_bytes(&s, &packet::pingresp());
}

/// MQTT 3.1 (`MQIsdp`, level 3) CONNECT is accepted with CONNACK `20 02 00 00`.
#[test]
fn v31_mqisdp_level_3_connect_gets_connack_20_02_00_00() {
    let b = Broker::start(&[ANON]);
    let s = connect_raw(b.mqtt);
    send(&s, &connect_custom("MQIsdp", 3, 0x02, false, "v31client"));
    expect_bytes(&s, &[0x20, 0x02, 0x00, 0x00]);
    send(&s, &packet::pingreq());
    expect_bytes(&s, &packet::pingresp());
    let line = log_line(&b, &["client v31client connected"]);
    assert!(line.contains("(MQTT 3.1,"), "{line}");
}

/// A Mosquitto bridge (`try_private true`) sets bit 7 of the Protocol Level: `MQTT` 0x84 and
/// `MQIsdp` 0x83 are accepted with `20 02 00 00` and logged as a bridge.
#[test]
fn bridge_bit_in_protocol_level_is_accepted_as_a_bridge() {
    let b = Broker::start(&[ANON]);
    for (name, level, id, version) in [
        ("MQTT", 0x84u8, "bridge311", "3.1.1"),
        ("MQIsdp", 0x83, "bridge31", "3.1"),
    ] {
        let s = connect_raw(b.mqtt);
        send(&s, &connect_custom(name, level, 0x02, false, id));
        expect_bytes(&s, &packet::connack_v311(false, 0));
        send(&s, &packet::pingreq());
        expect_bytes(&s, &packet::pingresp());
        let line = log_line(&b, &[&format!("client {id} connected")]);
        assert!(
            line.contains(&format!("(MQTT {version}, bridge,")),
            "{line}"
        );
    }
    // 5.0 with the bit: a 5.0 CONNACK.
    let s = connect_raw(b.mqtt);
    send(&s, &connect_custom("MQTT", 0x85, 0x02, true, "bridge5"));
    let ack = parse_connack_v5(&read_packet(&s));
    assert_eq!(ack.reason, 0, "{ack:?}");
    let line = log_line(&b, &["client bridge5 connected"]);
    assert!(line.contains("(MQTT 5.0, bridge,"), "{line}");
}

/// A 3.1.1 bridge's subscriptions behave as Mosquitto makes them: what the bridge publishes is
/// not sent back to it (No Local, so `both` topics do not loop) and a retained message is
/// delivered with RETAIN as published (Retain As Published), though 3.1.1 cannot ask for
/// either. A plain 3.1.1 subscriber on the same filter is the control: it gets both messages,
/// the live retained one with RETAIN 0 (MQTT-3.3.1-9).
#[test]
fn bridge_subscription_gets_no_local_and_retain_as_published() {
    let b = Broker::start(&[ANON]);
    let bridge = connect_raw(b.mqtt);
    send(&bridge, &packet::connect_v311_bridge("bridge", 30, true));
    expect_bytes(&bridge, &packet::connack_v311(false, 0));
    send(&bridge, &packet::subscribe(false, 1, "t/#", 0));
    expect_bytes(&bridge, &[0x90, 0x03, 0x00, 0x01, 0x00]);
    let plain = connect_v311_ok(b.mqtt, "plain", 30);
    send(&plain, &packet::subscribe(false, 1, "t/#", 0));
    expect_bytes(&plain, &[0x90, 0x03, 0x00, 0x01, 0x00]);

    // The bridge publishes t/1 at QoS 1: routed before its PUBACK, so an echo would come
    // before the retained message published after that PUBACK.
    send(
        &bridge,
        &packet::publish(false, "t/1", b"from-bridge", 1, Some(7), false, false),
    );
    expect_bytes(&bridge, &packet::puback(7));
    expect_bytes(
        &plain,
        &packet::publish(false, "t/1", b"from-bridge", 0, None, false, false),
    );
    let other = connect_v311_ok(b.mqtt, "other", 30);
    send(
        &other,
        &packet::publish(false, "t/2", b"kept", 1, Some(1), true, false),
    );
    expect_bytes(&other, &packet::puback(1));
    // The next thing the bridge gets is t/2, retained as published; t/1 never came back.
    expect_bytes(
        &bridge,
        &packet::publish(false, "t/2", b"kept", 0, None, true, false),
    );
    expect_bytes(
        &plain,
        &packet::publish(false, "t/2", b"kept", 0, None, false, false),
    );
    // A later subscription of the bridge gets the stored message with RETAIN (MQTT-3.3.1-8).
    send(&bridge, &packet::subscribe(false, 2, "t/2", 0));
    expect_bytes(&bridge, &[0x90, 0x03, 0x00, 0x02, 0x00]);
    expect_bytes(
        &bridge,
        &packet::publish(false, "t/2", b"kept", 0, None, true, false),
    );
    send(&bridge, &packet::pingreq());
    expect_bytes(&bridge, &packet::pingresp());
}

/// A Mosquitto bridge (default `notifications true`) sets its will on, and publishes its state
/// to, `$SYS/broker/connection/<id>/state`: accepted from any client (a 5.0 bridge sends no
/// bridge bit), while a will elsewhere under `$SYS` is still refused with 0x90.
#[test]
fn bridge_connection_state_under_sys_is_accepted_as_will_and_publish() {
    let b = Broker::start(&[ANON]);
    let state = "$SYS/broker/connection/edge/state";
    let s = connect_raw(b.mqtt);
    send(
        &s,
        &packet::connect_v5_will("edge", 30, true, state, b"0", 1, true, &[]),
    );
    assert_eq!(parse_connack_v5(&read_packet(&s)).reason, 0);
    let watcher = connect_v311_ok(b.mqtt, "watcher", 30);
    send(
        &watcher,
        &packet::subscribe(false, 1, "$SYS/broker/connection/#", 0),
    );
    expect_bytes(&watcher, &[0x90, 0x03, 0x00, 0x01, 0x00]);
    send(
        &s,
        &packet::publish(true, state, b"1", 1, Some(3), true, false),
    );
    let ack = read_packet(&s);
    assert_eq!(
        ack[..4],
        [0x40, 0x02, 0x00, 0x03],
        "PUBACK success: {}",
        hex(&ack)
    );
    expect_bytes(
        &watcher,
        &packet::publish(false, state, b"1", 0, None, false, false),
    );

    let s = connect_raw(b.mqtt);
    send(
        &s,
        &packet::connect_v5_will("spoof", 30, true, "$SYS/broker/uptime", b"0", 0, false, &[]),
    );
    assert_eq!(parse_connack_v5(&read_packet(&s)).reason, 0x90);
}

// ------------------------------------------------------------- max_clients

/// With `--max-clients 2` and two clients connected, a third 5.0 client gets CONNACK 0x97
/// (Quota exceeded) and the close (MQTT-3.2.2-7).
#[test]
fn mqtt_3_2_2_7_max_clients_third_v5_client_gets_0x97_then_close() {
    let b = Broker::start(&[ANON, "--max-clients", "2"]);
    let _a = connect_v5_ok(b.mqtt, "a", 30);
    let _b = connect_v311_ok(b.mqtt, "b", 30);
    expect_v5_quota_exceeded(b.mqtt, "c");
}

/// The one log line for a client refused at `max_clients` says how to raise the limit.
#[test]
fn max_clients_refusal_log_line_names_the_max_clients_flag() {
    let b = Broker::start(&[ANON, "--max-clients", "1"]);
    let _a = connect_v5_ok(b.mqtt, "a", 30);
    expect_v5_quota_exceeded(b.mqtt, "over");
    let line = log_line(&b, &["\"over\"", "refused: max_clients (1) reached"]);
    assert!(line.contains("--max-clients"), "{line}");
}

/// With `--max-clients 2` full, a third 3.1.1 client gets exactly `20 02 00 03` (Server
/// unavailable) and the close (v311 MQTT-3.2.2-5).
#[test]
fn v311_mqtt_3_2_2_5_max_clients_third_client_gets_20_02_00_03_then_close() {
    let b = Broker::start(&[ANON, "--max-clients", "2"]);
    let _a = connect_v311_ok(b.mqtt, "a", 30);
    let _b = connect_v5_ok(b.mqtt, "b", 30);
    let s = connect_raw(b.mqtt);
    send(&s, &packet::connect_v311("c", 30, true));
    expect_bytes(&s, &[0x20, 0x02, 0x00, 0x03]);
    expect_silent_close(&s, Duration::from_secs(3), "after CONNACK 03");
}

/// The count of connected clients does not drift: after the two clients disconnect, two new
/// ones are admitted and a third refused; after 20 sockets that connect and close silently
/// or send garbage, the limit still admits exactly `max_clients`.
#[test]
fn mqtt_3_2_2_7_max_clients_count_does_not_drift() {
    let b = Broker::start(&[ANON, "--max-clients", "2"]);
    let a = connect_v5_ok(b.mqtt, "a", 30);
    let c = connect_v311_ok(b.mqtt, "b", 30);
    expect_v5_quota_exceeded(b.mqtt, "refused-1");

    send(&a, &packet::disconnect_v5(0));
    send(&c, &packet::disconnect_v311());
    expect_silent_close(&a, Duration::from_secs(3), "after DISCONNECT");
    expect_silent_close(&c, Duration::from_secs(3), "after DISCONNECT");
    let d = connect_v5_admitted_within(b.mqtt, "d", Duration::from_secs(3));
    let e = connect_v5_admitted_within(b.mqtt, "e", Duration::from_secs(3));
    expect_v5_quota_exceeded(b.mqtt, "refused-2");
    drop(d);
    drop(e);

    // 20 sockets: half close without a byte, half send garbage (not MQTT) and close.
    let junk: Vec<TcpStream> = (0..20).map(|_| connect_raw(b.mqtt)).collect();
    for (i, s) in junk.iter().enumerate() {
        if i % 2 == 1 {
            let _ = std::io::Write::write_all(&mut &*s, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
        }
    }
    drop(junk);

    let g = connect_v5_admitted_within(b.mqtt, "g", Duration::from_secs(5));
    let h = connect_v5_admitted_within(b.mqtt, "h", Duration::from_secs(5));
    expect_v5_refused_within(b.mqtt, "refused-3", Duration::from_secs(5));
    // Both admitted clients are really live.
    for s in [&g, &h] {
        send(s, &packet::pingreq());
        expect_bytes(s, &packet::pingresp());
    }
}

// --------------------------------------------------------------- keep alive

/// Keep Alive 1 s and silence after CONNACK: the broker closes within 1.5 × Keep Alive
/// (window 1.4–2.6 s) and, for 5.0, sends DISCONNECT 0x8D (Keep Alive timeout) first.
#[test]
fn mqtt_3_1_2_24_keep_alive_expiry_v5_gets_disconnect_0x8d_then_close() {
    let b = Broker::start(&[ANON]);
    let s = connect_v5_ok(b.mqtt, "silent5", 1);
    let t0 = Instant::now();
    expect_disconnect_then_close(&s, 0x8d, Duration::from_secs(4));
    let waited = t0.elapsed();
    eprintln!("keep alive 1 s: closed after {waited:?}");
    // Measured 1.51–1.54 s, also with both cores busy (2-core machine, spinning processes): 1 s of
    // margin above; the floor, 1.4 s, is 1.5 × Keep Alive less 0.1 s.
    assert!(
        waited >= Duration::from_millis(1400) && waited <= Duration::from_millis(2600),
        "closed after {waited:?}, expected 1.4–2.6 s"
    );
    let line = log_line(&b, &["client silent5 disconnected"]);
    assert!(line.contains("keep alive"), "{line}");
}

/// 3.1.1 client with Keep Alive 1 s that stays silent is closed (no DISCONNECT exists in
/// 3.1.1) within 1.4–2.6 s (v311 MQTT-3.1.2-24).
#[test]
fn v311_mqtt_3_1_2_24_keep_alive_expiry_closes_connection() {
    let b = Broker::start(&[ANON]);
    let s = connect_v311_ok(b.mqtt, "silent4", 1);
    let t0 = Instant::now();
    expect_silent_close(&s, Duration::from_secs(4), "keep alive expiry");
    let waited = t0.elapsed();
    eprintln!("keep alive 1 s: closed after {waited:?}");
    // Measured 1.51–1.54 s, also with both cores busy (2-core machine, spinning processes): 1 s of
    // margin above; the floor, 1.4 s, is 1.5 × Keep Alive less 0.1 s.
    assert!(
        waited >= Duration::from_millis(1400) && waited <= Duration::from_millis(2600),
        "closed after {waited:?}, expected 1.4–2.6 s"
    );
}

/// A client with Keep Alive 1 s that sends PINGREQ every 0.5 s stays connected (3.5 s), and
/// every PINGREQ is answered (MQTT-3.12.4-1).
#[test]
fn mqtt_3_1_2_24_keep_alive_client_pinging_every_500ms_stays_connected() {
    let b = Broker::start(&[ANON]);
    let s5 = connect_v5_ok(b.mqtt, "pinger5", 1);
    let s4 = connect_v311_ok(b.mqtt, "pinger4", 1);
    for _ in 0..7 {
        thread::sleep(Duration::from_millis(500));
        for s in [&s5, &s4] {
            send(s, &packet::pingreq());
            expect_bytes(s, &packet::pingresp());
        }
    }
    assert!(!b.log().contains("client pinger5 disconnected"));
    assert!(!b.log().contains("client pinger4 disconnected"));
}

/// `--max-keepalive 10`: a 5.0 client asking for 60 (or 0 = none) gets Server Keep Alive 10;
/// one asking for 5 keeps 5 and gets no Server Keep Alive (MQTT-3.2.2-21, MQTT-3.2.2-22).
#[test]
fn mqtt_3_2_2_21_server_keep_alive_caps_client_keep_alive() {
    let b = Broker::start(&[ANON, "--max-keepalive", "10"]);
    let (_a, ack) = connect_v5(b.mqtt, "ka60", 60);
    assert_eq!(ack.reason, 0);
    assert_eq!(ack.int(0x13), Some(10), "Server Keep Alive for 60: {ack:?}");
    let (_b, ack) = connect_v5(b.mqtt, "ka0", 0);
    assert_eq!(ack.reason, 0);
    assert_eq!(ack.int(0x13), Some(10), "Server Keep Alive for 0: {ack:?}");
    let (_c, ack) = connect_v5(b.mqtt, "ka5", 5);
    assert_eq!(ack.reason, 0);
    assert_eq!(ack.int(0x13), None, "no Server Keep Alive for 5: {ack:?}");
}

/// PINGREQ gets PINGRESP `d0 00`, on 5.0 and 3.1.1 connections (MQTT-3.12.4-1).
#[test]
fn mqtt_3_12_4_1_pingreq_gets_pingresp_d0_00() {
    let b = Broker::start(&[ANON]);
    let s5 = connect_v5_ok(b.mqtt, "ping5", 30);
    let s4 = connect_v311_ok(b.mqtt, "ping4", 30);
    for s in [&s5, &s4] {
        for _ in 0..3 {
            send(s, &[0xc0, 0x00]);
            expect_bytes(s, &[0xd0, 0x00]);
        }
    }
}

// ---------------------------------------------------------- connect timeout

/// `--connect-timeout 1`: a socket that sends nothing, and one that sends half a CONNECT and
/// stalls, are both closed without a byte after about 1 s (§3.1.4: a Server SHOULD close a
/// connection that does not send CONNECT within a reasonable time).
#[test]
fn spec_3_1_4_connect_timeout_closes_silent_and_stalled_sockets() {
    let b = Broker::start(&[ANON, "--connect-timeout", "1"]);
    let t0 = Instant::now();
    let silent = connect_raw(b.mqtt);
    let stalled = connect_raw(b.mqtt);
    let connect = packet::connect_v5("half", 30, true);
    send(&stalled, &connect[..connect.len() / 2]);

    let silent_thread = thread::spawn(move || {
        expect_silent_close(&silent, Duration::from_secs(4), "silent socket");
        t0.elapsed()
    });
    expect_silent_close(&stalled, Duration::from_secs(4), "half CONNECT");
    let stalled_after = t0.elapsed();
    let silent_after = silent_thread.join().unwrap();
    for (what, t) in [("silent", silent_after), ("half CONNECT", stalled_after)] {
        eprintln!("connect timeout 1 s: {what} socket closed after {t:?}");
        // Measured 1.03 s, also with both cores busy (2-core machine, spinning processes); 1.5 s of
        // margin.
        assert!(
            t >= Duration::from_millis(900) && t <= Duration::from_millis(2500),
            "{what} socket closed after {t:?}, expected ~1–2.5 s"
        );
    }
    log_line(&b, &["closed: no CONNECT within"]);
}

// ------------------------------------------------------ protocol violations

/// A first packet other than CONNECT (PINGREQ, PUBLISH, SUBSCRIBE, DISCONNECT) closes the
/// connection without any byte from the broker (MQTT-3.1.0-1).
#[test]
fn mqtt_3_1_0_1_packet_before_connect_closes_without_bytes() {
    let b = Broker::start(&[ANON]);
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("PINGREQ", packet::pingreq()),
        (
            "PUBLISH 5.0",
            packet::publish(true, "t", b"x", 0, None, false, false),
        ),
        (
            "PUBLISH 3.1.1",
            packet::publish(false, "t/u", b"hello", 1, Some(1), false, false),
        ),
        ("SUBSCRIBE", packet::subscribe(true, 1, "t/#", 0)),
        ("DISCONNECT", packet::disconnect_v5(0)),
    ];
    for (what, bytes) in cases {
        let s = connect_raw(b.mqtt);
        send(&s, &bytes);
        expect_silent_close(&s, Duration::from_secs(3), what);
    }
}

/// A second CONNECT on a 5.0 connection is a Protocol Error: DISCONNECT 0x82, then close
/// (MQTT-3.1.0-2).
#[test]
fn mqtt_3_1_0_2_second_connect_v5_gets_disconnect_0x82_then_close() {
    let b = Broker::start(&[ANON]);
    let s = connect_v5_ok(b.mqtt, "twice5", 30);
    send(&s, &packet::connect_v5("twice5", 30, true));
    expect_disconnect_then_close(&s, 0x82, Duration::from_secs(3));
}

/// A second CONNECT on a 3.1.1 connection closes it, without any byte (v311 MQTT-3.1.0-2).
#[test]
fn v311_mqtt_3_1_0_2_second_connect_closes_connection() {
    let b = Broker::start(&[ANON]);
    let s = connect_v311_ok(b.mqtt, "twice4", 30);
    send(&s, &packet::connect_v311("twice4", 30, true));
    expect_silent_close(&s, Duration::from_secs(3), "second CONNECT");
}

/// A Protocol Level this server does not speak, whatever its Protocol Name (`MQTT` 0x7F or 6,
/// `MQIsdp` 5, `MQTT` 0x86 which is 6 with the bridge bit), gets return code 0x01 in the 3.1.1
/// form, exactly `20 02 00 01`, then the close (MQTT-3.1.2-2). A 5.0-form CONNACK 0x84
/// (`20 03 00 84 00`) is what 5.0 allows, but a client of an unknown level cannot read it.
#[test]
fn mqtt_3_1_2_2_unknown_level_gets_connack_0x01_in_3_1_1_form() {
    let b = Broker::start(&[ANON]);
    for (name, level, props_v5) in [
        ("MQTT", 0x7Fu8, false),
        ("MQTT", 6, true),
        ("MQIsdp", 5, true),
        ("MQTT", 0x86, false),
    ] {
        let s = connect_raw(b.mqtt);
        send(&s, &connect_custom(name, level, 0x02, props_v5, "unknown"));
        expect_bytes(&s, &packet::connack_v311(false, 0x01));
        expect_silent_close(
            &s,
            Duration::from_secs(3),
            &format!("after CONNACK 0x01 to {name} level {level:#04x}"),
        );
    }
}

/// An unsupported level below 5 (`MQTT` level 2, `MQTT` level 3 which is 3.1's level under
/// 3.1.1's name, `MQIsdp` level 4) gets `20 02 00 01` and the close (v311 MQTT-3.1.2-2).
#[test]
fn v311_mqtt_3_1_2_2_unacceptable_protocol_level_gets_20_02_00_01() {
    let b = Broker::start(&[ANON]);
    for (name, level) in [("MQTT", 2u8), ("MQTT", 3), ("MQIsdp", 4)] {
        let s = connect_raw(b.mqtt);
        send(&s, &connect_custom(name, level, 0x02, false, "lvl"));
        expect_bytes(&s, &[0x20, 0x02, 0x00, 0x01]);
        expect_silent_close(&s, Duration::from_secs(3), &format!("{name} level {level}"));
    }
}

/// An invalid Protocol Name closes the connection without CONNACK (MQTT-3.1.2-1 / v311
/// MQTT-3.1.2-1: the server MUST NOT continue processing it as MQTT).
#[test]
fn mqtt_3_1_2_1_invalid_protocol_name_closes_without_connack() {
    let b = Broker::start(&[ANON]);
    for (name, level, v5) in [
        ("MQTX", 5u8, true),
        ("mqtt", 4, false),
        ("MQIsdq", 3, false),
    ] {
        let s = connect_raw(b.mqtt);
        send(&s, &connect_custom(name, level, 0x02, v5, "badname"));
        expect_silent_close(
            &s,
            Duration::from_secs(3),
            &format!("protocol name {name:?}"),
        );
    }
}

/// 5.0 CONNECT with the reserved flag (bit 0) set is a Malformed Packet (MQTT-3.1.2-3): the
/// broker may answer CONNACK 0x81 (§4.13) and MUST close (MQTT-4.13.1-1). This broker sends
/// the CONNACK; if any byte arrives it must be exactly that CONNACK.
#[test]
fn mqtt_3_1_2_3_v5_reserved_connect_flag_gets_connack_0x81_or_close() {
    let b = Broker::start(&[ANON]);
    let s = connect_raw(b.mqtt);
    send(&s, &connect_custom("MQTT", 5, 0x03, true, "reserved5"));
    let bytes = expect_closed(&s, Duration::from_secs(3));
    if !bytes.is_empty() {
        let ack = parse_connack_v5(&bytes);
        assert_eq!(ack.reason, 0x81, "{ack:?}");
        assert!(!ack.session_present);
    }
    assert!(!b.log().contains("client reserved5 connected"));
}

/// 3.1.1 CONNECT with the reserved flag set: the server MUST disconnect the client (v311
/// MQTT-3.1.2-3). No 3.1.1 return code describes a malformed CONNECT, so no CONNACK may be
/// sent (v311 MQTT-3.2.2-6: "If none of the return codes ... are deemed applicable, then the
/// Server MUST close the Network Connection without sending a CONNACK").
#[test]
fn v311_mqtt_3_1_2_3_reserved_connect_flag_closes_without_connack() {
    let b = Broker::start(&[ANON]);
    let s = connect_raw(b.mqtt);
    send(&s, &connect_custom("MQTT", 4, 0x03, false, "reserved4"));
    expect_silent_close(&s, Duration::from_secs(3), "reserved CONNECT flag (3.1.1)");
}

/// Other malformed 3.1.1 CONNECTs (Will QoS 3, v311 MQTT-3.1.2-14; Will QoS without the Will
/// Flag, v311 MQTT-3.1.2-13; Password without User Name, v311 MQTT-3.1.2-22) are closed without
/// a CONNACK: no return code applies (v311 MQTT-3.2.2-6), and 0x03 "Server unavailable" would
/// be false.
#[test]
fn v311_mqtt_3_2_2_6_malformed_connect_closes_without_connack() {
    let b = Broker::start(&[ANON]);
    let mut will_qos3 = packet::utf8("MQTT");
    will_qos3.extend([4, 0x02 | 0x04 | 0x18, 0, 30]);
    will_qos3.extend(packet::utf8("wq3"));
    will_qos3.extend(packet::utf8("will/topic"));
    will_qos3.extend(packet::binary(b"bye"));
    let cases = [
        ("Will QoS 3", packet::fixed(0x10, &will_qos3)),
        (
            "Will QoS 1 without Will Flag",
            connect_custom("MQTT", 4, 0x02 | 0x08, false, "wq1"),
        ),
        ("Password without User Name", {
            let mut body = packet::utf8("MQTT");
            body.extend([4, 0x02 | 0x40, 0, 30]);
            body.extend(packet::utf8("pwonly"));
            body.extend(packet::binary(b"secret"));
            packet::fixed(0x10, &body)
        }),
    ];
    let mut failures = Vec::new();
    for (what, bytes) in cases {
        let s = connect_raw(b.mqtt);
        send(&s, &bytes);
        let got = expect_closed(&s, Duration::from_secs(3));
        if !got.is_empty() {
            failures.push(format!("{what}: received {} before the close", hex(&got)));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// 3.1.1: empty Client Identifier with Clean Session 0 gets `20 02 00 02` and the close (v311
/// MQTT-3.1.3-8); with Clean Session 1 it is accepted (v311 MQTT-3.1.3-6).
#[test]
fn v311_mqtt_3_1_3_8_empty_client_id_without_clean_session_gets_20_02_00_02() {
    let b = Broker::start(&[ANON]);
    let s = connect_raw(b.mqtt);
    send(&s, &packet::connect_v311("", 30, false));
    expect_bytes(&s, &[0x20, 0x02, 0x00, 0x02]);
    expect_silent_close(&s, Duration::from_secs(3), "after CONNACK 02");

    let ok = connect_v311_ok(b.mqtt, "", 30);
    send(&ok, &packet::pingreq());
    expect_bytes(&ok, &packet::pingresp());
}

/// 5.0 empty Client Identifier: CONNACK carries an Assigned Client Identifier, not used by
/// any other session (MQTT-3.2.2-16): two such clients get different ids and both stay
/// connected (neither takes over the other).
#[test]
fn mqtt_3_2_2_16_v5_empty_client_id_gets_unique_assigned_client_identifier() {
    let b = Broker::start(&[ANON]);
    let (s1, ack1) = connect_v5(b.mqtt, "", 30);
    let (s2, ack2) = connect_v5(b.mqtt, "", 30);
    assert_eq!(ack1.reason, 0, "{ack1:?}");
    assert_eq!(ack2.reason, 0, "{ack2:?}");
    let id1 = ack1.string(0x12).expect("Assigned Client Identifier (1)");
    let id2 = ack2.string(0x12).expect("Assigned Client Identifier (2)");
    assert!(!id1.is_empty() && !id2.is_empty());
    assert_ne!(id1, id2, "assigned ids must be unique");
    for s in [&s1, &s2] {
        send(s, &packet::pingreq());
        expect_bytes(s, &packet::pingresp());
    }
    log_line(&b, &[&format!("client {id1} connected")]);
    log_line(&b, &[&format!("client {id2} connected")]);
}

/// Without `--allow-anonymous`, a 5.0 CONNECT without credentials gets CONNACK 0x87 (Not
/// authorized) and the close (MQTT-3.1.4-2, MQTT-3.2.2-7).
#[test]
fn mqtt_3_1_4_2_anonymous_off_v5_gets_connack_0x87() {
    let b = Broker::start(&[]);
    let (s, ack) = connect_v5(b.mqtt, "anon5", 30);
    assert_eq!(ack.reason, 0x87, "{ack:?}");
    assert!(!ack.session_present, "MQTT-3.2.2-6");
    expect_silent_close(&s, Duration::from_secs(3), "after CONNACK 0x87");
}

/// Without `--allow-anonymous`, a 3.1.1 CONNECT without credentials gets exactly
/// `20 02 00 05` (Not authorized) and the close (v311 MQTT-3.2.2-5).
#[test]
fn v311_mqtt_3_2_2_5_anonymous_off_gets_return_code_5() {
    let b = Broker::start(&[]);
    let s = connect_raw(b.mqtt);
    send(&s, &packet::connect_v311("anon4", 30, true));
    expect_bytes(&s, &[0x20, 0x02, 0x00, 0x05]);
    expect_silent_close(&s, Duration::from_secs(3), "after CONNACK 05");
}

/// Without `--allow-anonymous`, a CONNECT with an unknown User Name / Password is refused:
/// 5.0 CONNACK 0x86 (Bad User Name or Password), 3.1.1 `20 02 00 04`, then the close.
#[test]
fn mqtt_3_1_4_2_unknown_user_is_refused_with_bad_user_name_or_password() {
    let b = Broker::start(&[]);
    let with_login = |level: u8, id: &str| {
        let mut body = packet::utf8("MQTT");
        body.extend([level, 0x02 | 0x80 | 0x40, 0, 30]);
        if level == 5 {
            body.extend(packet::properties(&[]));
        }
        body.extend(packet::utf8(id));
        body.extend(packet::utf8("nobody"));
        body.extend(packet::binary(b"wrong"));
        packet::fixed(0x10, &body)
    };
    let s5 = connect_raw(b.mqtt);
    send(&s5, &with_login(5, "user5"));
    let ack = parse_connack_v5(&read_packet(&s5));
    assert_eq!(ack.reason, 0x86, "{ack:?}");
    assert!(!ack.session_present);
    expect_silent_close(&s5, Duration::from_secs(3), "after CONNACK 0x86");

    let s4 = connect_raw(b.mqtt);
    send(&s4, &with_login(4, "user4"));
    expect_bytes(&s4, &[0x20, 0x02, 0x00, 0x04]);
    expect_silent_close(&s4, Duration::from_secs(3), "after CONNACK 04");
}

/// A second connection with the same Client Identifier takes over: the new one gets CONNACK
/// Success, the old 5.0 connection gets DISCONNECT 0x8E (Session taken over) and is closed
/// (MQTT-3.1.4-3); an old 3.1.1 connection is just closed (v311 MQTT-3.1.4-2).
#[test]
fn mqtt_3_1_4_3_same_client_id_takes_over_existing_connection() {
    let b = Broker::start(&[ANON]);
    let old5 = connect_v5_ok(b.mqtt, "dup5", 30);
    let new5 = connect_v5_ok(b.mqtt, "dup5", 30);
    expect_disconnect_then_close(&old5, 0x8e, Duration::from_secs(3));
    send(&new5, &packet::pingreq());
    expect_bytes(&new5, &packet::pingresp());

    let old4 = connect_v311_ok(b.mqtt, "dup4", 30);
    let new4 = connect_v311_ok(b.mqtt, "dup4", 30);
    expect_silent_close(&old4, Duration::from_secs(3), "taken-over 3.1.1 connection");
    send(&new4, &packet::pingreq());
    expect_bytes(&new4, &packet::pingresp());
}

// --------------------------------------------------------- packet size / framing

/// `--max-packet-size 100`: the CONNACK says Maximum Packet Size 100, and a 200-byte PUBLISH
/// gets DISCONNECT 0x95 (Packet too large) then the close (§3.2.2.3.6, MQTT-4.13.1-1).
#[test]
fn spec_3_2_2_3_6_publish_over_maximum_packet_size_gets_disconnect_0x95() {
    let b = Broker::start(&[ANON, "--max-packet-size", "100"]);
    let (s, ack) = connect_v5(b.mqtt, "big", 30);
    assert_eq!(ack.reason, 0);
    assert_eq!(ack.int(0x27), Some(100), "Maximum Packet Size: {ack:?}");
    let publish = packet::publish(true, "big/topic", &[b'x'; 185], 0, None, false, false);
    assert_eq!(publish.len(), 200);
    send(&s, &publish);
    expect_disconnect_then_close(&s, 0x95, Duration::from_secs(3));
}

/// The size check uses the Remaining Length alone: a fixed header claiming 10 MB, with no
/// body sent, gets DISCONNECT 0x95 and the close at once (§3.2.2.3.6).
#[test]
fn spec_3_2_2_3_6_oversize_remaining_length_rejected_before_body() {
    let b = Broker::start(&[ANON, "--max-packet-size", "100"]);
    let s = connect_v5_ok(b.mqtt, "claims10mb", 30);
    let mut header = vec![0x30];
    header.extend(packet::varint(10 * 1024 * 1024));
    send(&s, &header);
    let t0 = Instant::now();
    expect_disconnect_then_close(&s, 0x95, Duration::from_secs(3));
    eprintln!("10 MB claim refused in {:?}", t0.elapsed());
    // Measured under 0.1 ms, also under load: the 2 s bound catches waiting for the body.
    assert!(
        t0.elapsed() < Duration::from_secs(2),
        "took {:?}",
        t0.elapsed()
    );
}

/// 3.1.1 has no DISCONNECT from the server: an oversize packet just closes the connection.
#[test]
fn v311_oversize_remaining_length_closes_connection() {
    let b = Broker::start(&[ANON, "--max-packet-size", "100"]);
    let s = connect_v311_ok(b.mqtt, "big4", 30);
    let mut header = vec![0x30];
    header.extend(packet::varint(10 * 1024 * 1024));
    send(&s, &header);
    expect_silent_close(&s, Duration::from_secs(3), "oversize 3.1.1 packet");
}

/// A Remaining Length of 5 bytes is malformed (§1.5.5: at most 4 bytes): the connection is
/// closed (MQTT-4.13.1-1); a DISCONNECT, if sent to a 5.0 client, carries 0x81. A 3.1.1
/// client gets only the close. Before CONNECT nothing may be sent at all (MQTT-3.14.0-1).
#[test]
fn mqtt_4_13_1_1_five_byte_remaining_length_closes_connection() {
    let b = Broker::start(&[ANON]);
    let bad = [0x30, 0xff, 0xff, 0xff, 0xff, 0x01];

    let s5 = connect_v5_ok(b.mqtt, "varint5", 30);
    send(&s5, &bad);
    let bytes = expect_closed(&s5, Duration::from_secs(3));
    if !bytes.is_empty() {
        assert_eq!(disconnect_reason(&bytes), 0x81, "received {}", hex(&bytes));
    }

    let s4 = connect_v311_ok(b.mqtt, "varint4", 30);
    send(&s4, &bad);
    expect_silent_close(&s4, Duration::from_secs(3), "5-byte varint (3.1.1)");

    let s0 = connect_raw(b.mqtt);
    send(&s0, &[0x10, 0xff, 0xff, 0xff, 0xff, 0x01]);
    expect_silent_close(&s0, Duration::from_secs(3), "5-byte varint before CONNECT");
}

/// A Remaining Length not in its minimal encoding (`c0 80 00`: PINGREQ with a 2-byte zero) is
/// malformed (MQTT-1.5.5-1): close, with DISCONNECT 0x81 if anything is sent.
#[test]
fn mqtt_1_5_5_1_non_minimal_remaining_length_closes_connection() {
    let b = Broker::start(&[ANON]);
    let s = connect_v5_ok(b.mqtt, "nonminimal", 30);
    send(&s, &[0xc0, 0x80, 0x00]);
    let bytes = expect_closed(&s, Duration::from_secs(3));
    if !bytes.is_empty() {
        assert_eq!(disconnect_reason(&bytes), 0x81, "received {}", hex(&bytes));
    }
}

// ------------------------------------------------------------------ signals

/// SIGTERM: the process exits with status 0 within 5 s and logs a clean stop; a connected 5.0
/// client gets DISCONNECT 0x8B (Server shutting down) and the close, a 3.1.1 client the close.
#[test]
fn sigterm_exits_0_within_5s_and_v5_client_gets_disconnect_0x8b() {
    let mut b = Broker::start(&[ANON]);
    let s5 = connect_v5_ok(b.mqtt, "stay5", 30);
    let s4 = connect_v311_ok(b.mqtt, "stay4", 30);
    let t0 = Instant::now();
    let status = b.terminate();
    let took = t0.elapsed();
    eprintln!("stopped by a signal in {took:?}");
    // Measured 1.04 s, also with both cores busy (2-core machine, spinning processes).
    assert_eq!(
        status.code(),
        Some(0),
        "exit status {status:?}\n{}",
        b.log()
    );
    assert!(took < Duration::from_secs(5), "exit took {took:?}");
    expect_disconnect_then_close(&s5, 0x8b, Duration::from_secs(2));
    expect_silent_close(&s4, Duration::from_secs(2), "3.1.1 client at shutdown");
    let log = b.log();
    assert!(log.contains("shutting down"), "{log}");
    let last = log.lines().last().unwrap_or_default();
    assert!(last.ends_with("stopped"), "last log line {last:?}\n{log}");
    assert!(!log.contains("panicked"), "{log}");
}

/// SIGINT (Ctrl-C) stops the broker the same way: exit 0 within 5 s, clean stop logged.
#[test]
fn sigint_exits_0_within_5s_and_logs_clean_stop() {
    let mut b = Broker::start(&[ANON]);
    let s4 = connect_v311_ok(b.mqtt, "stay4", 30);
    let t0 = Instant::now();
    let status = b.interrupt();
    let took = t0.elapsed();
    eprintln!("stopped by a signal in {took:?}");
    // Measured 1.04 s, also with both cores busy (2-core machine, spinning processes).
    assert_eq!(
        status.code(),
        Some(0),
        "exit status {status:?}\n{}",
        b.log()
    );
    assert!(took < Duration::from_secs(5), "exit took {took:?}");
    expect_silent_close(&s4, Duration::from_secs(2), "3.1.1 client at shutdown");
    let log = b.log();
    assert!(log.contains("shutting down"), "{log}");
    let last = log.lines().last().unwrap_or_default();
    assert!(last.ends_with("stopped"), "last log line {last:?}\n{log}");
}
