//! MQTT over WebSockets (issue 14, MQTT 5.0 §6): tungstenite's own client (its handshake and
//! framing, an independent implementation of RFC 6455) for the ordinary path over ws and wss,
//! and raw frames — built with tungstenite's `FrameHeader`, masked or not as each test needs —
//! for what no well-behaved client does: fragmented messages, two packets in one frame, a
//! packet split across frames, unmasked, oversize and text frames, a close mid-packet, ping,
//! a wrong path, no `mqtt` subprotocol and a handshake that never comes.

mod common;

use common::{api_status, packet, Broker};
use std::io::{Cursor, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tungstenite::client::IntoClientRequest;
use tungstenite::protocol::frame::coding::{Control, Data, OpCode};
use tungstenite::protocol::frame::FrameHeader;
use tungstenite::Message;

const ANON: &str = "--allow-anonymous";

fn ws_broker(extra: &[&str]) -> Broker {
    let mut args = vec![ANON, "--ws-listen", "127.0.0.1:0"];
    args.extend_from_slice(extra);
    let b = Broker::start(&args);
    assert!(b.ws.is_some(), "no ws listening line:\n{}", b.log());
    b
}

/// A raw WebSocket client: the upgrade request as text, frames made with `FrameHeader`.
struct Raw {
    s: TcpStream,
    buf: Vec<u8>,
    /// MQTT bytes from binary frames not yet returned as packets.
    mqtt: Vec<u8>,
}

impl Raw {
    /// Connects and sends the upgrade for `path` offering `protocol` (none: no header); the
    /// answer's status line and the client.
    fn open(addr: SocketAddr, path: &str, protocol: Option<&str>) -> (String, Raw) {
        Raw::open_on(common::connect_raw(addr), path, protocol)
    }

    /// [`Raw::open`] over a socket connected already (e.g. with a small receive buffer).
    fn open_on(s: TcpStream, path: &str, protocol: Option<&str>) -> (String, Raw) {
        let addr = s.peer_addr().unwrap();
        let proto = protocol
            .map(|p| format!("Sec-WebSocket-Protocol: {p}\r\n"))
            .unwrap_or_default();
        let req = format!(
            "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{proto}\r\n"
        );
        (&s).write_all(req.as_bytes()).unwrap();
        let mut raw = Raw {
            s,
            buf: Vec::new(),
            mqtt: Vec::new(),
        };
        let head = raw.read_head();
        (head, raw)
    }

    /// The upgrade with `mqtt`, which must be accepted.
    fn mqtt(addr: SocketAddr) -> Raw {
        Raw::mqtt_on(common::connect_raw(addr))
    }

    /// [`Raw::mqtt`] over a socket connected already.
    fn mqtt_on(s: TcpStream) -> Raw {
        let (head, raw) = Raw::open_on(s, "/mqtt", Some("mqtt"));
        assert!(head.starts_with("HTTP/1.1 101"), "{head}");
        assert!(
            head.to_ascii_lowercase()
                .contains("sec-websocket-protocol: mqtt\r\n"),
            "{head}"
        );
        // RFC 6455 §1.3's sample key and accept value.
        assert!(head.contains("s3pPLMBiTxaQ9kYGzzhZRbK+xOo="), "{head}");
        raw
    }

    fn fill(&mut self, wait: Duration) -> bool {
        self.s.set_read_timeout(Some(wait)).unwrap();
        let mut chunk = [0u8; 4096];
        match self.s.read(&mut chunk) {
            Ok(0) | Err(_) => false,
            Ok(n) => {
                self.buf.extend_from_slice(&chunk[..n]);
                true
            }
        }
    }

    /// The HTTP answer head (up to the blank line); empty when the socket closed first.
    fn read_head(&mut self) -> String {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            if let Some(i) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&self.buf[..i + 4]).to_string();
                self.buf.drain(..i + 4);
                return head;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() || !self.fill(left) {
                return String::from_utf8_lossy(&self.buf).to_string();
            }
        }
    }

    /// Sends one frame; masked as clients must, unless `masked` is false.
    fn frame(&self, opcode: OpCode, fin: bool, payload: &[u8], masked: bool) {
        (&self.s)
            .write_all(&Raw::encode(opcode, fin, payload, masked))
            .unwrap();
    }

    fn binary(&self, payload: &[u8]) {
        (&self.s).write_all(&Raw::masked_binary(payload)).unwrap();
    }

    /// One final binary frame carrying `payload`, masked as a client's must be.
    fn masked_binary(payload: &[u8]) -> Vec<u8> {
        Raw::encode(OpCode::Data(Data::Binary), true, payload, true)
    }

    /// One frame's bytes; masked (with a fixed key) unless `masked` is false.
    fn encode(opcode: OpCode, fin: bool, payload: &[u8], masked: bool) -> Vec<u8> {
        let mask = [0x37, 0xfa, 0x21, 0x3d];
        let header = FrameHeader {
            is_final: fin,
            rsv1: false,
            rsv2: false,
            rsv3: false,
            opcode,
            mask: masked.then_some(mask),
        };
        let mut out = Vec::new();
        header.format(payload.len() as u64, &mut out).unwrap();
        out.extend(
            payload
                .iter()
                .enumerate()
                .map(|(i, b)| if masked { b ^ mask[i % 4] } else { *b }),
        );
        out
    }

    /// The next server frame within `wait`: (opcode, fin, payload); `None` when the socket
    /// closed or nothing came. Server frames must be unmasked.
    fn next_frame(&mut self, wait: Duration) -> Option<(OpCode, bool, Vec<u8>)> {
        let deadline = Instant::now() + wait;
        loop {
            let mut c = Cursor::new(&self.buf[..]);
            if let Some((h, len)) = FrameHeader::parse(&mut c).unwrap() {
                let start = c.position() as usize;
                let end = start + len as usize;
                if self.buf.len() >= end {
                    assert!(h.mask.is_none(), "server frame masked");
                    let payload = self.buf[start..end].to_vec();
                    self.buf.drain(..end);
                    return Some((h.opcode, h.is_final, payload));
                }
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() || !self.fill(left) {
                return None;
            }
        }
    }

    /// The next MQTT packet, from the payloads of binary frames (a frame may hold several).
    fn packet(&mut self, wait: Duration) -> Option<Vec<u8>> {
        let deadline = Instant::now() + wait;
        loop {
            let data = &self.mqtt;
            if data.len() >= 2 {
                let (mut len, mut mult, mut i) = (0usize, 1usize, 1);
                while i < data.len() && i <= 4 {
                    len += (data[i] & 0x7f) as usize * mult;
                    mult *= 128;
                    if data[i] & 0x80 == 0 {
                        break;
                    }
                    i += 1;
                }
                if i < data.len() && data.len() >= i + 1 + len {
                    return Some(self.mqtt.drain(..i + 1 + len).collect());
                }
            }
            let left = deadline.saturating_duration_since(Instant::now());
            let (op, _, payload) = self.next_frame(left)?;
            assert_eq!(op, OpCode::Data(Data::Binary), "{payload:02x?}");
            self.mqtt.extend_from_slice(&payload);
        }
    }

    /// Waits for the server's close frame: its status code.
    fn close_status(&mut self) -> Option<u16> {
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            let (op, _, payload) = self.next_frame(Duration::from_secs(5))?;
            if op == OpCode::Control(Control::Close) {
                return Some(u16::from_be_bytes([*payload.first()?, *payload.get(1)?]));
            }
        }
        None
    }

    /// True when the server closed the TCP connection within 5 s.
    fn closed(&mut self) -> bool {
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            self.s
                .set_read_timeout(Some(Duration::from_millis(200)))
                .unwrap();
            let mut chunk = [0u8; 1024];
            match self.s.read(&mut chunk) {
                Ok(0) => return true,
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {}
                Err(_) => return true,
            }
        }
        false
    }
}

fn connack_ok(p: &[u8]) {
    assert_eq!(p.first(), Some(&0x20), "{p:02x?}");
    assert_eq!(p.get(3), Some(&0x00), "{p:02x?}");
}

/// A raw client that connected (5.0) and subscribed to `topic`.
fn raw_subscriber(addr: SocketAddr, id: &str, topic: &str) -> Raw {
    let mut c = Raw::mqtt(addr);
    c.binary(&packet::connect_v5(id, 30, true));
    connack_ok(&c.packet(Duration::from_secs(5)).expect("CONNACK"));
    c.binary(&packet::subscribe(true, 1, topic, 0));
    let suback = c.packet(Duration::from_secs(5)).expect("SUBACK");
    assert_eq!(suback[0], 0x90, "{suback:02x?}");
    c
}

fn tungstenite_client(addr: SocketAddr) -> tungstenite::WebSocket<TcpStream> {
    let mut req = format!("ws://{addr}/mqtt").into_client_request().unwrap();
    req.headers_mut()
        .insert("Sec-WebSocket-Protocol", "mqtt".parse().unwrap());
    let s = common::connect_raw(addr);
    let (ws, resp) = tungstenite::client(req, s).expect("WebSocket handshake");
    assert_eq!(
        resp.headers()
            .get("Sec-WebSocket-Protocol")
            .map(|v| v.to_str().unwrap()),
        Some("mqtt")
    );
    ws
}

/// Reads binary messages until one whole MQTT packet of type `first` is in; panics after 5 s.
fn ws_expect<S: Read + Write>(ws: &mut tungstenite::WebSocket<S>, first: u8) -> Vec<u8> {
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        match ws.read().expect("read") {
            Message::Binary(b) if b.first() == Some(&first) => return b.to_vec(),
            Message::Binary(_) | Message::Ping(_) | Message::Pong(_) => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    panic!("no packet 0x{first:02x}");
}

/// [MQTT-6.0.0-4]: the server selects `mqtt`; tungstenite's client connects, subscribes and
/// gets what a plain TCP client publishes, in 5.0 and in 3.1.1.
#[test]
fn mqtt_6_0_0_4_tungstenite_client_pubsub_over_ws_in_5_and_3_1_1() {
    let b = ws_broker(&[]);
    let addr = b.ws.unwrap();
    for v5 in [true, false] {
        let mut ws = tungstenite_client(addr);
        let connect = if v5 {
            packet::connect_v5("ws-sub", 30, true)
        } else {
            packet::connect_v311("ws-sub", 30, true)
        };
        ws.send(Message::binary(connect)).unwrap();
        ws_expect(&mut ws, 0x20);
        ws.send(Message::binary(packet::subscribe(v5, 1, "ws/t", 0)))
            .unwrap();
        ws_expect(&mut ws, 0x90);
        let p = common::connect_raw(b.mqtt);
        common::send(&p, &packet::connect_v311("tcp-pub", 30, true));
        common::read_packet(&p);
        common::send(
            &p,
            &packet::publish(false, "ws/t", b"hello ws", 0, None, false, false),
        );
        let got = ws_expect(&mut ws, 0x30);
        assert!(got.ends_with(b"hello ws"), "{got:02x?}");
        ws.close(None).unwrap();
    }
    assert!(b.wait_for_log("(ws)", Duration::from_secs(1)));
}

/// [MQTT-6.0.0-2]: one packet across several frames — a fragmented message (binary +
/// continuation frames) and a packet split over two whole messages — both arrive.
#[test]
fn mqtt_6_0_0_2_a_packet_split_across_frames_and_fragments() {
    let b = ws_broker(&[]);
    let addr = b.ws.unwrap();
    let mut sub = raw_subscriber(addr, "sub", "split/#");
    let mut c = Raw::mqtt(addr);
    let connect = packet::connect_v5("splitter", 30, true);
    // CONNECT as a fragmented message: 3 frames.
    c.frame(OpCode::Data(Data::Binary), false, &connect[..3], true);
    c.frame(OpCode::Data(Data::Continue), false, &connect[3..7], true);
    c.frame(OpCode::Data(Data::Continue), true, &connect[7..], true);
    connack_ok(&c.packet(Duration::from_secs(5)).expect("CONNACK"));
    // A PUBLISH split across two messages, a ping between them.
    let publish = packet::publish(true, "split/a", b"across frames", 0, None, false, false);
    c.binary(&publish[..5]);
    c.frame(OpCode::Control(Control::Ping), true, b"hi", true);
    c.binary(&publish[5..]);
    let (op, _, payload) = c.next_frame(Duration::from_secs(5)).expect("pong");
    assert_eq!(op, OpCode::Control(Control::Pong));
    assert_eq!(payload, b"hi");
    let got = sub.packet(Duration::from_secs(5)).expect("PUBLISH");
    assert!(got.ends_with(b"across frames"), "{got:02x?}");
}

/// [MQTT-6.0.0-2]: several packets in one frame are all handled.
#[test]
fn mqtt_6_0_0_2_two_packets_in_one_frame() {
    let b = ws_broker(&[]);
    let addr = b.ws.unwrap();
    let mut sub = raw_subscriber(addr, "sub", "two/#");
    let mut c = Raw::mqtt(addr);
    let mut both = packet::connect_v5("two", 30, true);
    both.extend(packet::publish(
        true, "two/a", b"first", 0, None, false, false,
    ));
    both.extend(packet::publish(
        true, "two/b", b"second", 0, None, false, false,
    ));
    c.binary(&both);
    connack_ok(&c.packet(Duration::from_secs(5)).expect("CONNACK"));
    let first = sub.packet(Duration::from_secs(5)).expect("first");
    assert!(first.ends_with(b"first"), "{first:02x?}");
    let second = sub.packet(Duration::from_secs(5)).expect("second");
    assert!(second.ends_with(b"second"), "{second:02x?}");
}

/// RFC 6455 §5.1: a client frame without a mask is closed with 1002 (protocol error).
#[test]
fn unmasked_client_frame_is_closed_with_1002() {
    let b = ws_broker(&[]);
    let mut c = Raw::mqtt(b.ws.unwrap());
    c.frame(
        OpCode::Data(Data::Binary),
        true,
        &packet::connect_v5("bare", 30, true),
        false,
    );
    assert_eq!(c.close_status(), Some(1002));
    assert!(c.closed());
}

/// A frame larger than max_packet_size (and the header slack) is closed with 1009 as soon as
/// its header arrives, before its payload is read.
#[test]
fn oversize_frame_is_closed_with_1009_before_its_payload() {
    let b = ws_broker(&["--max-packet-size", "1024"]);
    let mut c = Raw::mqtt(b.ws.unwrap());
    c.binary(&packet::connect_v5("big", 30, true));
    connack_ok(&c.packet(Duration::from_secs(5)).expect("CONNACK"));
    // Only the header of a 10 MB frame: the close must come without the payload.
    let header = FrameHeader {
        is_final: true,
        rsv1: false,
        rsv2: false,
        rsv3: false,
        opcode: OpCode::Data(Data::Binary),
        mask: Some([1, 2, 3, 4]),
    };
    let mut out = Vec::new();
    header.format(10_000_000, &mut out).unwrap();
    (&c.s).write_all(&out).unwrap();
    assert_eq!(c.close_status(), Some(1009));
    assert!(c.closed());
}

/// [MQTT-6.0.0-1]: a text frame closes the connection (1003: unsupported data).
#[test]
fn mqtt_6_0_0_1_text_frame_closes_the_connection() {
    let b = ws_broker(&[]);
    let mut c = Raw::mqtt(b.ws.unwrap());
    c.frame(OpCode::Data(Data::Text), true, b"hello", true);
    assert_eq!(c.close_status(), Some(1003));
    assert!(c.closed());
}

/// A close frame in the middle of a packet: the server answers with a close frame carrying
/// the client's status, ends the connection, and publishes the will (no DISCONNECT came).
#[test]
fn close_frame_mid_packet_is_answered_and_the_will_published() {
    let b = ws_broker(&[]);
    let addr = b.ws.unwrap();
    let mut sub = raw_subscriber(addr, "sub", "wills/#");
    let mut c = Raw::mqtt(addr);
    c.binary(&packet::connect_v5_will(
        "dying",
        30,
        true,
        "wills/dying",
        b"gone",
        0,
        false,
        &[],
    ));
    connack_ok(&c.packet(Duration::from_secs(5)).expect("CONNACK"));
    let publish = packet::publish(true, "x/y", b"never finished", 0, None, false, false);
    c.binary(&publish[..4]);
    c.frame(
        OpCode::Control(Control::Close),
        true,
        &1001u16.to_be_bytes(),
        true,
    );
    assert_eq!(c.close_status(), Some(1001));
    assert!(c.closed());
    let will = sub.packet(Duration::from_secs(5)).expect("will");
    assert!(will.ends_with(b"gone"), "{will:02x?}");
}

/// Only `/mqtt` and `/` are served: another path gets 404 and is closed.
#[test]
fn wrong_path_gets_404() {
    let b = ws_broker(&[]);
    let (head, mut c) = Raw::open(b.ws.unwrap(), "/chat", Some("mqtt"));
    assert!(head.starts_with("HTTP/1.1 404"), "{head}");
    assert!(c.closed());
    // `/` works too.
    let (head, _c) = Raw::open(b.ws.unwrap(), "/", Some("mqtt"));
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
}

/// [MQTT-6.0.0-3]: a client must offer `mqtt`; one that offers another protocol or none is
/// refused with 400.
#[test]
fn mqtt_6_0_0_3_upgrade_without_the_mqtt_subprotocol_is_refused() {
    let b = ws_broker(&[]);
    for offer in [None, Some("chat, superchat")] {
        let (head, mut c) = Raw::open(b.ws.unwrap(), "/mqtt", offer);
        assert!(head.starts_with("HTTP/1.1 400"), "{offer:?}: {head}");
        assert!(c.closed());
    }
    let (head, _c) = Raw::open(b.ws.unwrap(), "/mqtt", Some("chat, mqtt"));
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
}

/// A handshake that never comes (or stops half way) counts as pending and is closed at
/// connect_timeout.
#[test]
fn stalled_handshake_is_pending_and_closed_at_connect_timeout() {
    let b = ws_broker(&["--connect-timeout", "1"]);
    let addr = b.ws.unwrap();
    let started = Instant::now();
    let idle = common::connect_raw(addr);
    let half = common::connect_raw(addr);
    (&half)
        .write_all(b"GET /mqtt HTTP/1.1\r\nHost: x\r\n")
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(3);
    let mut pending = 0;
    while Instant::now() < deadline && pending < 2 {
        pending = api_status(b.web)["pending_connections"]
            .as_u64()
            .unwrap_or(0);
    }
    assert_eq!(pending, 2, "pending_connections");
    for s in [&idle, &half] {
        let mut raw = Raw {
            s: s.try_clone().unwrap(),
            buf: Vec::new(),
            mqtt: Vec::new(),
        };
        assert!(raw.closed(), "still open");
    }
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(5),
        "closed after {took:?}, connect_timeout is 1 s"
    );
    assert!(b.wait_for_log("no CONNECT within", Duration::from_secs(5)));
}

/// wss: tungstenite's client over a rustls client connection, trusting a certificate made
/// here; the listener uses the TLS listener's certfile/keyfile.
#[test]
fn wss_tungstenite_client_pubsub_with_the_tls_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let params =
        rcgen::CertificateParams::new(vec!["localhost".into(), "127.0.0.1".into()]).unwrap();
    let cert = params.self_signed(&key).unwrap();
    let (cf, kf) = (dir.path().join("c.pem"), dir.path().join("k.pem"));
    std::fs::write(&cf, cert.pem()).unwrap();
    std::fs::write(&kf, key.serialize_pem()).unwrap();
    let b = Broker::start(&[
        ANON,
        "--wss-listen",
        "127.0.0.1:0",
        "--certfile",
        cf.to_str().unwrap(),
        "--keyfile",
        kf.to_str().unwrap(),
    ]);
    let addr = b.wss.expect("wss listener");
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert.der().clone()).unwrap();
    let provider = mqtt5_broker::certs::provider();
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let conn = rustls::ClientConnection::new(Arc::new(config), name).unwrap();
    let tls = rustls::StreamOwned::new(conn, common::connect_raw(addr));
    let mut req = format!("wss://localhost:{}/mqtt", addr.port())
        .into_client_request()
        .unwrap();
    req.headers_mut()
        .insert("Sec-WebSocket-Protocol", "mqtt".parse().unwrap());
    let (mut ws, _) = tungstenite::client(req, tls).expect("wss handshake");
    ws.send(Message::binary(packet::connect_v5("wss-sub", 30, true)))
        .unwrap();
    ws_expect(&mut ws, 0x20);
    ws.send(Message::binary(packet::subscribe(true, 1, "wss/t", 0)))
        .unwrap();
    ws_expect(&mut ws, 0x90);
    let p = common::connect_raw(b.mqtt);
    common::send(&p, &packet::connect_v311("tcp-pub", 30, true));
    common::read_packet(&p);
    common::send(
        &p,
        &packet::publish(false, "wss/t", b"over wss", 0, None, false, false),
    );
    let got = ws_expect(&mut ws, 0x30);
    assert!(got.ends_with(b"over wss"), "{got:02x?}");
}

/// wss_listen without certfile/keyfile is a bad setting: one line, exit code 2.
#[test]
fn wss_listen_without_certificate_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_mqtt5-broker"))
        .args(["--wss-listen", "127.0.0.1:0", "--listen", "127.0.0.1:0"])
        .args(["--web-listen", "127.0.0.1:0", "--db"])
        .arg(dir.path().join("b.db"))
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("wss_listen"), "{err}");
}

/// A ws client is counted under its own transport in `/metrics` (and, for wss, `wss`): the
/// per-listener counts of issue 14.
#[test]
fn metrics_count_a_ws_client_under_its_transport() {
    let b = ws_broker(&["--admin-password", "ws-admin"]);
    let mut ws = tungstenite_client(b.ws.unwrap());
    ws.send(Message::binary(packet::connect_v5("ws-counted", 30, true)))
        .unwrap();
    ws_expect(&mut ws, 0x20);
    let url = format!("http://127.0.0.1:{}/metrics", b.web.port());
    let want = "mqtt5_clients_connected_by_transport{transport=\"ws\"} 1";
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let out = std::process::Command::new("curl")
            .args(["-sS", "--max-time", "10", "-u", "admin:ws-admin"])
            .arg(&url)
            .output()
            .expect("curl (scripts/test installs it)");
        let metrics = String::from_utf8_lossy(&out.stdout).into_owned();
        if metrics.lines().any(|l| l == want) {
            assert!(
                metrics
                    .lines()
                    .any(|l| l == "mqtt5_clients_connected_by_transport{transport=\"tcp\"} 0"),
                "{metrics}"
            );
            break;
        }
        assert!(Instant::now() < deadline, "no {want}:\n{metrics}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The bounded issue's never-reading flooder, over a ws listener: a WebSocket client (4 KiB
/// receive buffer) that publishes QoS 1 in binary frames as fast as the socket takes them and
/// never reads its PUBACKs is disconnected once, logged `client ws-flooder disconnected from …:
/// not reading (… bytes unsent for 10s)` and counted; the broker's RSS stays within 24 MiB of
/// what it was; a ws subscriber keeps getting what a TCP client publishes meanwhile (MQTT-4.13:
/// the server may close a connection that does not let it send).
#[test]
fn mqtt_4_13_ws_qos1_flooder_that_never_reads_is_disconnected_rss_bounded_others_served() {
    use common::procfs::rss_kb;
    use std::io::ErrorKind;
    const FLOOD_FOR: Duration = Duration::from_secs(40);
    const GROWTH_LIMIT_KB: u64 = 24 * 1024;
    let b = ws_broker(&["--sys-interval", "0"]);
    let addr = b.ws.unwrap();
    let mut watcher = raw_subscriber(addr, "ws-watcher", "rt/t");
    let publisher = common::connect_raw(b.mqtt);
    common::send(&publisher, &packet::connect_v311("tcp-other", 30, true));
    assert_eq!(common::read_packet(&publisher)[0], 0x20, "CONNACK");
    let mut round_trip = |n: u32, wait: Duration| {
        let body = n.to_be_bytes();
        common::send(
            &publisher,
            &packet::publish(false, "rt/t", &body, 0, None, false, false),
        );
        let got = watcher
            .packet(wait)
            .unwrap_or_else(|| panic!("round trip {n}: nothing within {wait:?}"));
        assert!(got.ends_with(&body), "round trip {n}: {got:02x?}");
    };
    round_trip(0, Duration::from_secs(5));
    let idle_kb = rss_kb(b.pid());

    let mut flood = Raw::mqtt_on(common::connect_raw_rcvbuf(addr, 4096));
    flood.binary(&packet::connect_v5("ws-flooder", 0, true));
    connack_ok(&flood.packet(Duration::from_secs(5)).expect("CONNACK"));
    // The flooder's 1,000 QoS 1 PUBLISH in one frame, written over and over.
    let frame = Raw::masked_binary(&common::qos1_flood_burst("flood/t"));
    let sock = flood.s.try_clone().unwrap();
    sock.set_write_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let started = Instant::now();
    let flooder = std::thread::spawn(move || {
        let (mut at, mut sent) = (0usize, 0u64);
        while started.elapsed() < FLOOD_FOR {
            match (&sock).write(&frame[at..]) {
                Ok(n) => {
                    at = (at + n) % frame.len();
                    sent += n as u64;
                }
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                Err(_) => break,
            }
        }
        sent
    });

    // Others are served while the flooder is connected.
    let gone = "client ws-flooder disconnected from";
    let (mut trips, mut peak_kb) = (0u32, idle_kb);
    while !b.log().contains(gone) && started.elapsed() < FLOOD_FOR {
        trips += 1;
        round_trip(trips, Duration::from_secs(2));
        peak_kb = peak_kb.max(rss_kb(b.pid()));
        std::thread::sleep(Duration::from_millis(100));
    }
    let disconnected_after = started.elapsed();
    assert!(
        b.wait_for_log(gone, Duration::from_secs(5)),
        "the ws flooder was not disconnected within {FLOOD_FOR:?}\n{}",
        b.log()
    );
    peak_kb = peak_kb.max(rss_kb(b.pid()));
    let sent = flooder.join().unwrap();
    let status = api_status(b.web);
    eprintln!(
        "ws flooder disconnected after {disconnected_after:?} (the broker read {} PUBLISH; \
         the flooder wrote {sent} bytes, those discarded in the linger after the close included); {trips} round trips; RSS idle {idle_kb} kB, peak {peak_kb} kB",
        status["messages_received"]
    );
    common::assert_cut_as_not_reading(&b.log(), gone, &status, (idle_kb, peak_kb, GROWTH_LIMIT_KB));
    // And the others are still served after it.
    round_trip(trips + 1, Duration::from_secs(5));
}
