//! Framing: a stream of several packets, cut at every split point (two and three pieces) and fed
//! one byte at a time, always yields exactly the same packets from `FrameBuffer`.

use mqtt5_broker::protocol::frame::{FrameBuffer, KEEP_WHEN_DRAINED};
use mqtt5_broker::protocol::{
    encode, Ack, Connect, DecodeError, Disconnect, Packet, Properties, ProtocolVersion, Publish,
    QoS, ReasonCode, Subscribe, SubscriptionOptions, TopicSubscription, Unsubscribe, Will,
};

const MAX: u32 = 1 << 20;

fn s(x: &str) -> String {
    x.to_owned()
}

/// A session's worth of packets, starting with CONNECT.
fn packets(version: ProtocolVersion) -> Vec<Packet> {
    let v5 = version.is_v5();
    let props = |p: Properties| if v5 { p } else { Properties::default() };
    vec![
        Packet::Connect(Box::new(Connect {
            protocol: version,
            bridge: false,
            clean_start: true,
            keep_alive: 30,
            properties: props(Properties {
                session_expiry_interval: Some(60),
                receive_maximum: Some(10),
                ..Properties::default()
            }),
            client_id: s("framing"),
            will: Some(Will {
                topic: s("will/t"),
                payload: b"gone".to_vec(),
                qos: QoS::AtLeastOnce,
                retain: false,
                properties: props(Properties {
                    will_delay_interval: Some(1),
                    ..Properties::default()
                }),
            }),
            username: Some(s("u")),
            password: Some(b"p".to_vec()),
        })),
        Packet::Subscribe(Subscribe {
            packet_id: 1,
            properties: props(Properties {
                subscription_identifiers: vec![7],
                ..Properties::default()
            }),
            filters: vec![TopicSubscription {
                filter: s("a/#"),
                options: SubscriptionOptions {
                    qos: QoS::ExactlyOnce,
                    ..SubscriptionOptions::default()
                },
            }],
        }),
        Packet::PingReq,
        Packet::Publish(Publish {
            dup: false,
            qos: QoS::AtMostOnce,
            retain: false,
            topic: s("a/b"),
            packet_id: 0,
            properties: Properties::default(),
            payload: Vec::new(),
        }),
        Packet::Publish(Publish {
            dup: false,
            qos: QoS::ExactlyOnce,
            retain: true,
            topic: s("a/long/topic/name"),
            packet_id: 2,
            properties: props(Properties {
                message_expiry_interval: Some(10),
                user_properties: vec![(s("k"), s("v"))],
                ..Properties::default()
            }),
            // Over 127 bytes: a two-byte remaining length.
            payload: (0..=150u8).collect(),
        }),
        Packet::PubRel(Ack {
            packet_id: 2,
            reason: ReasonCode::Success,
            properties: Properties::default(),
        }),
        Packet::PubAck(Ack {
            packet_id: 3,
            reason: ReasonCode::Success,
            properties: Properties::default(),
        }),
        Packet::Unsubscribe(Unsubscribe {
            packet_id: 4,
            properties: Properties::default(),
            filters: vec![s("a/#")],
        }),
        Packet::PingReq,
        Packet::Disconnect(Disconnect {
            reason: ReasonCode::Success,
            properties: Properties::default(),
        }),
    ]
}

fn stream(version: ProtocolVersion) -> (Vec<Packet>, Vec<u8>) {
    let packets = packets(version);
    let mut bytes = Vec::new();
    for p in &packets {
        encode(p, version, &mut bytes);
    }
    (packets, bytes)
}

/// Decodes like a connection: no version until CONNECT, then the CONNECT's.
struct Conn {
    frames: FrameBuffer,
    version: Option<ProtocolVersion>,
    got: Vec<Packet>,
}

impl Conn {
    fn new() -> Conn {
        Conn {
            frames: FrameBuffer::new(),
            version: None,
            got: Vec::new(),
        }
    }

    fn drain(&mut self) {
        loop {
            let before = self.frames.buffered();
            match self.frames.next_packet(self.version, MAX) {
                Ok(Some(packet)) => {
                    assert!(self.frames.buffered() < before, "a packet consumes bytes");
                    if let Packet::Connect(c) = &packet {
                        self.version = Some(c.protocol);
                    }
                    self.got.push(packet);
                }
                Ok(None) => return,
                Err(e) => panic!("unexpected decode error: {e}"),
            }
        }
    }

    fn feed(&mut self, piece: &[u8]) {
        self.frames.extend(piece);
        self.drain();
    }

    fn feed_via_read(&mut self, piece: &[u8]) {
        let slot = self.frames.buffer_mut_for_read(piece.len() + 7);
        slot[..piece.len()].copy_from_slice(piece);
        self.frames.commit(piece.len());
        self.drain();
    }
}

const VERSIONS: [ProtocolVersion; 3] = [
    ProtocolVersion::V5,
    ProtocolVersion::V311,
    ProtocolVersion::V31,
];

#[test]
fn whole_stream_in_one_read_yields_every_packet() {
    for version in VERSIONS {
        let (expected, bytes) = stream(version);
        let mut conn = Conn::new();
        conn.feed(&bytes);
        assert_eq!(conn.got, expected);
        assert_eq!(conn.frames.buffered(), 0);
    }
}

#[test]
fn every_two_piece_split_yields_the_same_packets() {
    for version in VERSIONS {
        let (expected, bytes) = stream(version);
        for cut in 0..=bytes.len() {
            let mut conn = Conn::new();
            conn.feed(&bytes[..cut]);
            conn.feed(&bytes[cut..]);
            assert_eq!(conn.got, expected, "{version:?} cut at {cut}");
            assert_eq!(conn.frames.buffered(), 0);
        }
    }
}

#[test]
fn every_three_piece_split_yields_the_same_packets() {
    for version in VERSIONS {
        let (expected, bytes) = stream(version);
        for a in 0..=bytes.len() {
            for b in a..=bytes.len() {
                let mut conn = Conn::new();
                conn.feed(&bytes[..a]);
                conn.feed(&bytes[a..b]);
                conn.feed(&bytes[b..]);
                assert_eq!(conn.got, expected, "{version:?} cuts at {a}, {b}");
            }
        }
    }
}

#[test]
fn one_byte_at_a_time_yields_the_same_packets() {
    for version in VERSIONS {
        let (expected, bytes) = stream(version);
        let mut conn = Conn::new();
        for byte in &bytes {
            conn.feed(std::slice::from_ref(byte));
        }
        assert_eq!(conn.got, expected);
        // And through the read-slice API.
        let mut conn = Conn::new();
        for byte in &bytes {
            conn.feed_via_read(std::slice::from_ref(byte));
        }
        assert_eq!(conn.got, expected);
    }
}

#[test]
fn read_slice_api_with_every_two_piece_split() {
    let (expected, bytes) = stream(ProtocolVersion::V5);
    for cut in 0..=bytes.len() {
        let mut conn = Conn::new();
        conn.feed_via_read(&bytes[..cut]);
        conn.feed_via_read(&bytes[cut..]);
        assert_eq!(conn.got, expected, "cut at {cut}");
    }
}

#[test]
fn a_long_stream_keeps_memory_bounded() {
    // Thousands of packets in 100-byte reads: the consumed prefix must be dropped, so the
    // capacity stays near one packet plus one read, not the stream's length.
    let (_, one) = stream(ProtocolVersion::V5);
    let connect_len = {
        let mut v = Vec::new();
        encode(
            &packets(ProtocolVersion::V5)[0],
            ProtocolVersion::V5,
            &mut v,
        );
        v.len()
    };
    let mut bytes = one[..connect_len].to_vec();
    for _ in 0..2_000 {
        bytes.extend_from_slice(&one[connect_len..]);
    }
    let mut conn = Conn::new();
    for piece in bytes.chunks(100) {
        conn.feed(piece);
        assert!(
            conn.frames.capacity() <= 1024,
            "capacity {}",
            conn.frames.capacity()
        );
        conn.got.clear();
    }
    assert_eq!(conn.frames.buffered(), 0);
}

#[test]
fn mqtt_3_1_2_24_frame_buffer_rejects_a_too_large_packet_before_its_body() {
    let mut frames = FrameBuffer::new();
    // PUBLISH claiming 1,000,000 bytes with a 1,000-byte limit: the header alone decides.
    frames.extend(&[0x30, 0xC0, 0x84, 0x3D]);
    let e = frames
        .next_packet(Some(ProtocolVersion::V5), 1_000)
        .unwrap_err();
    assert_eq!(
        e,
        DecodeError::PacketTooLarge {
            size: 1_000_004,
            max: 1_000
        }
    );
    assert!(frames.capacity() < 64);
    // A partial header is not an error yet.
    let mut frames = FrameBuffer::new();
    frames.extend(&[0x30, 0xC0]);
    assert_eq!(
        frames.next_packet(Some(ProtocolVersion::V5), 1_000),
        Ok(None)
    );
}

#[test]
fn a_buffer_grown_for_a_large_packet_lets_it_go_once_drained() {
    // One 1 MiB PUBLISH arriving in 512-byte reads (the design card's chunk), then silence:
    // the buffer must not keep the packet's size for the rest of the connection.
    let publish = |payload: usize| {
        let mut v = Vec::new();
        encode(
            &Packet::Publish(Publish {
                dup: false,
                qos: QoS::AtMostOnce,
                retain: false,
                topic: s("big"),
                packet_id: 0,
                properties: Properties::default(),
                payload: vec![7; payload],
            }),
            ProtocolVersion::V5,
            &mut v,
        );
        v
    };
    let mut frames = FrameBuffer::new();
    let max = 2 << 20;
    for (payload, kept) in [(1 << 20, false), (16 * 1024, true)] {
        let bytes = publish(payload);
        let mut got = 0;
        for piece in bytes.chunks(512) {
            frames.extend(piece);
            while let Some(p) = frames.next_packet(Some(ProtocolVersion::V5), max).unwrap() {
                assert!(matches!(p, Packet::Publish(ref p) if p.payload.len() == payload));
                got += 1;
            }
        }
        assert_eq!((got, frames.buffered()), (1, 0));
        if kept {
            // A packet within the kept size leaves its capacity for the next one.
            assert!(frames.capacity() >= bytes.len(), "{}", frames.capacity());
        } else {
            assert!(
                frames.capacity() <= KEEP_WHEN_DRAINED,
                "capacity {} after a drained {}-byte packet",
                frames.capacity(),
                bytes.len()
            );
        }
    }
}

#[test]
fn shrink_releases_memory_but_keeps_buffered_bytes() {
    let (expected, bytes) = stream(ProtocolVersion::V311);
    let mut conn = Conn::new();
    conn.feed(&bytes[..bytes.len() - 1]);
    assert_eq!(conn.frames.buffered(), 1);
    conn.frames.shrink();
    assert!(conn.frames.capacity() <= 16);
    assert_eq!(conn.frames.buffered(), 1);
    conn.feed(&bytes[bytes.len() - 1..]);
    assert_eq!(conn.got, expected);
}
