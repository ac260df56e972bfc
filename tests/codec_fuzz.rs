//! Deterministic fuzzing of the decoder and the frame buffer with a seeded xorshift PRNG.
//!
//! Over 100,000 random and mutated byte streams (bit flips, byte changes, truncation, insertion,
//! deletion, length-field changes, splices) are decoded under every connection state. The decoder
//! must never panic; each input is classified as packet / need-more / error; a decoded packet must
//! re-encode to something that decodes to the same packet; an error must carry an error reason
//! code. Fed through a `FrameBuffer` in random chunks, memory must stay within the Maximum Packet
//! Size plus one read chunk, even for streams claiming a huge Remaining Length.

use mqtt5_broker::protocol::frame::FrameBuffer;
use mqtt5_broker::protocol::{
    decode, encode, encoded_len, Ack, Auth, ConnAck, Connect, DecodeError, Disconnect, Packet,
    Properties, ProtocolVersion, Publish, QoS, ReasonCode, RetainHandling, SubAck, Subscribe,
    SubscriptionOptions, TopicSubscription, UnsubAck, Unsubscribe, Will,
};

/// xorshift64* (Vigna): tiny, fast, deterministic.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed | 1)
    }

    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform-ish in `0..n` (`n > 0`).
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn byte(&mut self) -> u8 {
        self.next() as u8
    }

    fn chance(&mut self, one_in: usize) -> bool {
        self.below(one_in) == 0
    }
}

fn s(x: &str) -> String {
    x.to_owned()
}

/// Valid packets of every kind, rich in properties, to mutate.
fn seed_packets(version: ProtocolVersion) -> Vec<Packet> {
    let v5 = version.is_v5();
    let props = |p: Properties| if v5 { p } else { Properties::default() };
    let mut packets = vec![
        Packet::Connect(Box::new(Connect {
            protocol: version,
            bridge: false,
            clean_start: true,
            keep_alive: 60,
            properties: props(Properties {
                session_expiry_interval: Some(10),
                receive_maximum: Some(5),
                maximum_packet_size: Some(1000),
                topic_alias_maximum: Some(3),
                request_problem_information: Some(1),
                authentication_method: Some(s("m")),
                authentication_data: Some(vec![1]),
                user_properties: vec![(s("k"), s("v"))],
                ..Properties::default()
            }),
            client_id: s("fuzz-client"),
            will: Some(Will {
                topic: s("w"),
                payload: b"bye".to_vec(),
                qos: QoS::ExactlyOnce,
                retain: true,
                properties: props(Properties {
                    will_delay_interval: Some(3),
                    payload_format_indicator: Some(1),
                    content_type: Some(s("c")),
                    correlation_data: Some(vec![9, 9]),
                    ..Properties::default()
                }),
            }),
            username: Some(s("user")),
            password: Some(b"pw".to_vec()),
        })),
        Packet::ConnAck(ConnAck {
            session_present: true,
            reason: ReasonCode::Success,
            properties: props(Properties {
                assigned_client_identifier: Some(s("id")),
                maximum_qos: Some(1),
                retain_available: Some(0),
                server_keep_alive: Some(20),
                shared_subscription_available: Some(1),
                reason_string: Some(s("hello")),
                ..Properties::default()
            }),
        }),
        Packet::Publish(Publish {
            dup: true,
            qos: QoS::AtLeastOnce,
            retain: false,
            topic: s("a/b/c"),
            packet_id: 77,
            properties: props(Properties {
                payload_format_indicator: Some(0),
                message_expiry_interval: Some(100),
                response_topic: Some(s("r/t")),
                correlation_data: Some(vec![1, 2]),
                subscription_identifiers: vec![1, 300, 70_000],
                topic_alias: Some(2),
                user_properties: vec![(s("a"), s("b")), (s("c"), s("d"))],
                ..Properties::default()
            }),
            payload: b"payload bytes".to_vec(),
        }),
        Packet::Publish(Publish {
            dup: false,
            qos: QoS::AtMostOnce,
            retain: true,
            topic: s("x"),
            packet_id: 0,
            properties: Properties::default(),
            payload: vec![0; 200],
        }),
        Packet::PubAck(Ack {
            packet_id: 1,
            reason: if v5 {
                ReasonCode::NoMatchingSubscribers
            } else {
                ReasonCode::Success
            },
            properties: props(Properties {
                reason_string: Some(s("r")),
                ..Properties::default()
            }),
        }),
        Packet::PubRec(Ack {
            packet_id: 2,
            reason: ReasonCode::Success,
            properties: Properties::default(),
        }),
        Packet::PubRel(Ack {
            packet_id: 3,
            reason: ReasonCode::Success,
            properties: Properties::default(),
        }),
        Packet::PubComp(Ack {
            packet_id: 4,
            reason: if v5 {
                ReasonCode::PacketIdentifierNotFound
            } else {
                ReasonCode::Success
            },
            properties: Properties::default(),
        }),
        Packet::Subscribe(Subscribe {
            packet_id: 5,
            properties: props(Properties {
                subscription_identifiers: vec![12],
                user_properties: vec![(s("u"), s("v"))],
                ..Properties::default()
            }),
            filters: vec![
                TopicSubscription {
                    filter: s("a/+/c"),
                    options: SubscriptionOptions {
                        qos: QoS::AtLeastOnce,
                        no_local: v5,
                        retain_as_published: v5,
                        retain_handling: if v5 {
                            RetainHandling::DoNotSend
                        } else {
                            RetainHandling::SendAtSubscribe
                        },
                    },
                },
                TopicSubscription {
                    filter: s("#"),
                    options: SubscriptionOptions::default(),
                },
            ],
        }),
        Packet::SubAck(SubAck {
            packet_id: 5,
            properties: Properties::default(),
            reasons: vec![ReasonCode::GrantedQos1, ReasonCode::UnspecifiedError],
        }),
        Packet::Unsubscribe(Unsubscribe {
            packet_id: 6,
            properties: Properties::default(),
            filters: vec![s("a/+/c"), s("#")],
        }),
        Packet::UnsubAck(UnsubAck {
            packet_id: 6,
            properties: Properties::default(),
            reasons: if v5 {
                vec![ReasonCode::Success, ReasonCode::NoSubscriptionExisted]
            } else {
                Vec::new()
            },
        }),
        Packet::PingReq,
        Packet::PingResp,
        Packet::Disconnect(Disconnect {
            reason: if v5 {
                ReasonCode::DisconnectWithWillMessage
            } else {
                ReasonCode::Success
            },
            properties: props(Properties {
                session_expiry_interval: Some(0),
                ..Properties::default()
            }),
        }),
    ];
    if v5 {
        packets.push(Packet::Auth(Auth {
            reason: ReasonCode::ContinueAuthentication,
            properties: Properties {
                authentication_method: Some(s("SCRAM")),
                authentication_data: Some(vec![5; 10]),
                ..Properties::default()
            },
        }));
    }
    packets
}

fn corpus() -> Vec<(ProtocolVersion, Vec<u8>)> {
    let mut corpus = Vec::new();
    for version in [
        ProtocolVersion::V5,
        ProtocolVersion::V311,
        ProtocolVersion::V31,
    ] {
        for p in seed_packets(version) {
            let mut bytes = Vec::new();
            encode(&p, version, &mut bytes);
            corpus.push((version, bytes));
        }
    }
    corpus
}

/// Applies one to three random mutations.
fn mutate(rng: &mut Rng, input: &mut Vec<u8>, corpus: &[(ProtocolVersion, Vec<u8>)]) {
    for _ in 0..=rng.below(3) {
        let len = input.len();
        match rng.below(10) {
            // Flip one bit.
            0 | 1 if len > 0 => {
                let i = rng.below(len);
                input[i] ^= 1 << rng.below(8);
            }
            // Replace a byte.
            2 if len > 0 => {
                let i = rng.below(len);
                input[i] = rng.byte();
            }
            // Truncate.
            3 if len > 0 => input.truncate(rng.below(len)),
            // Insert random bytes.
            4 => {
                let at = rng.below(len + 1);
                let n = 1 + rng.below(4);
                for _ in 0..n {
                    input.insert(at, rng.byte());
                }
            }
            // Delete a range.
            5 if len > 1 => {
                let at = rng.below(len);
                let n = 1 + rng.below((len - at).min(4));
                input.drain(at..at + n);
            }
            // Change the remaining length (byte 1), often by a small amount.
            6 if len > 1 => {
                input[1] = if rng.chance(2) {
                    input[1].wrapping_add(rng.byte() % 5).wrapping_sub(2)
                } else {
                    rng.byte()
                };
            }
            // Change an internal two-byte length field's low byte (strings, binary data) or a
            // property length.
            7 if len > 3 => {
                let i = 2 + rng.below(len - 2);
                input[i] = input[i].wrapping_add(1 + rng.byte() % 3);
            }
            // Splice another packet on (streams of several packets).
            8 => {
                let (_, other) = &corpus[rng.below(corpus.len())];
                let take = rng.below(other.len() + 1);
                input.extend_from_slice(&other[..take]);
            }
            // Set a high bit somewhere (continuation bits, reserved flags, wildcards…).
            _ if len > 0 => {
                let i = rng.below(len);
                input[i] |= 0x80 >> rng.below(8);
            }
            _ => input.push(rng.byte()),
        }
    }
}

#[derive(Default, Debug)]
struct Tally {
    packets: usize,
    need_more: usize,
    errors: usize,
    /// Error variant names (of the cause, for errors inside CONNECT) and their counts.
    kinds: std::collections::BTreeMap<String, usize>,
}

/// Decodes `input` and checks the invariants.
fn classify(input: &[u8], version: Option<ProtocolVersion>, max: u32, tally: &mut Tally) {
    match decode(input, version, max) {
        Ok(Some((packet, consumed))) => {
            tally.packets += 1;
            assert!(consumed >= 2 && consumed <= input.len());
            assert!(consumed <= max as usize);
            // A decoded packet is valid: it re-encodes to bytes that decode to itself.
            let enc_version = match &packet {
                Packet::Connect(c) => c.protocol,
                _ => version.unwrap_or(ProtocolVersion::V5),
            };
            let mut out = Vec::new();
            encode(&packet, enc_version, &mut out);
            assert_eq!(encoded_len(&packet, enc_version), out.len());
            let again = decode(&out, Some(enc_version), u32::MAX);
            assert_eq!(
                again,
                Ok(Some((packet.clone(), out.len()))),
                "re-encoding of {input:02X?}"
            );
        }
        Ok(None) => tally.need_more += 1,
        Err(e) => {
            tally.errors += 1;
            let name = format!("{:?}", e.cause());
            let name = name
                .split(|c: char| !c.is_alphanumeric())
                .next()
                .unwrap_or_default()
                .to_owned();
            *tally.kinds.entry(name).or_default() += 1;
            assert!(e.reason_code().is_error(), "{e:?}");
            assert!(!e.to_string().is_empty());
        }
    }
}

const VERSIONS: [Option<ProtocolVersion>; 4] = [
    None,
    Some(ProtocolVersion::V5),
    Some(ProtocolVersion::V311),
    Some(ProtocolVersion::V31),
];

#[test]
fn decoder_survives_mutated_and_random_inputs() {
    let corpus = corpus();
    let mut rng = Rng::new(0x5EED_F0C0_DEC0);
    let mut tally = Tally::default();
    let mut inputs = 0;
    for round in 0..120_000 {
        let mut input = if round % 10 == 0 {
            // Pure noise, biased towards plausible first bytes half of the time.
            let n = rng.below(40);
            let mut v: Vec<u8> = (0..n).map(|_| rng.byte()).collect();
            if rng.chance(2) && !v.is_empty() {
                v[0] = (1 + rng.below(15) as u8) << 4;
            }
            v
        } else {
            corpus[rng.below(corpus.len())].1.clone()
        };
        if round % 10 != 0 {
            mutate(&mut rng, &mut input, &corpus);
        }
        let version = VERSIONS[rng.below(VERSIONS.len())];
        let max = if rng.chance(4) { 64 } else { u32::MAX };
        classify(&input, version, max, &mut tally);
        inputs += 1;
    }
    eprintln!("{inputs} inputs: {tally:?}");
    assert!(inputs >= 100_000);
    // Every class shows up, so the mutations reach past the fixed header.
    assert!(tally.packets > 1_000, "{tally:?}");
    assert!(tally.need_more > 1_000, "{tally:?}");
    assert!(tally.errors > 10_000, "{tally:?}");
    assert!(tally.kinds.len() >= 20, "{:?}", tally.kinds);
}

#[test]
fn every_truncation_of_every_seed_packet_needs_more() {
    for (version, bytes) in corpus() {
        for cut in 0..bytes.len() {
            assert_eq!(decode(&bytes[..cut], Some(version), u32::MAX), Ok(None));
        }
    }
}

/// Feeds `stream` in random chunks of at most `chunk` bytes, draining packets after each read,
/// and checks the buffer's capacity bound. Returns true if the stream ended in an error.
fn feed_stream(
    rng: &mut Rng,
    stream: &[u8],
    version: Option<ProtocolVersion>,
    max: u32,
    chunk: usize,
) -> bool {
    let mut frames = FrameBuffer::new();
    let mut version = version;
    let mut rest = stream;
    while !rest.is_empty() {
        let n = (1 + rng.below(chunk)).min(rest.len());
        if rng.chance(2) {
            frames.extend(&rest[..n]);
        } else {
            let slot = frames.buffer_mut_for_read(chunk);
            slot[..n].copy_from_slice(&rest[..n]);
            frames.commit(n);
        }
        rest = &rest[n..];
        loop {
            assert!(
                frames.capacity() <= max as usize + chunk,
                "capacity {} > max {max} + chunk {chunk}",
                frames.capacity()
            );
            match frames.next_packet(version, max) {
                Ok(Some(packet)) => {
                    if let Packet::Connect(c) = packet {
                        version = Some(c.protocol);
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    assert!(e.reason_code().is_error());
                    return true;
                }
            }
        }
    }
    false
}

#[test]
fn frame_buffer_survives_mutated_streams_within_its_memory_bound() {
    let corpus = corpus();
    let mut rng = Rng::new(0xF4A3_E5F4);
    for _ in 0..4_000 {
        let mut stream = Vec::new();
        for _ in 0..1 + rng.below(6) {
            let (_, bytes) = &corpus[rng.below(corpus.len())];
            let mut bytes = bytes.clone();
            if rng.chance(3) {
                mutate(&mut rng, &mut bytes, &corpus);
            }
            stream.extend(bytes);
        }
        let max = [64u32, 128, 300, 4096][rng.below(4)];
        let chunk = 1 + rng.below(64);
        let version = VERSIONS[rng.below(VERSIONS.len())];
        feed_stream(&mut rng, &stream, version, max, chunk);
    }
}

#[test]
fn frame_buffer_never_reserves_for_a_claimed_remaining_length() {
    let mut rng = Rng::new(42);
    let max = 4096u32;
    let chunk = 512;
    // PUBLISH claiming the maximum remaining length (268,435,455), then a flood of bytes.
    let mut stream = vec![0x30, 0xFF, 0xFF, 0xFF, 0x7F];
    stream.extend((0..100_000).map(|_| rng.byte()));
    assert!(feed_stream(
        &mut rng,
        &stream,
        Some(ProtocolVersion::V5),
        max,
        chunk
    ));

    // A CONNECT before any version, claiming 2 MB.
    let mut stream = vec![0x10, 0x80, 0x80, 0x80, 0x01];
    stream.extend(std::iter::repeat_n(0, 100_000));
    assert!(feed_stream(&mut rng, &stream, None, max, chunk));

    // A packet just under the limit, delivered in small reads, is buffered within the bound and
    // decoded.
    let payload_len = max as usize - 3 - 3 - 2; // header 3, topic 3, property length 1 + id 2
    let p = Packet::Publish(Publish {
        dup: false,
        qos: QoS::AtLeastOnce,
        retain: false,
        topic: s("t"),
        packet_id: 1,
        properties: Properties::default(),
        payload: vec![7; payload_len - 1],
    });
    let mut bytes = Vec::new();
    encode(&p, ProtocolVersion::V5, &mut bytes);
    assert!(bytes.len() <= max as usize);
    let mut frames = FrameBuffer::new();
    let mut got = None;
    for piece in bytes.chunks(100) {
        frames.extend(piece);
        assert!(frames.capacity() <= max as usize + 100);
        if let Some(packet) = frames.next_packet(Some(ProtocolVersion::V5), max).unwrap() {
            got = Some(packet);
        }
    }
    assert_eq!(got, Some(p));
}

#[test]
fn decode_errors_in_connect_keep_the_version() {
    // Every single-bit flip of a valid 5.0 CONNECT after its protocol level either decodes or
    // fails; failures past the level byte report the version so the broker can answer.
    let (_, bytes) = &corpus()[0];
    let header_len = if bytes[1] & 0x80 == 0 { 2 } else { 3 };
    let level_at = header_len + 6; // after the fixed header and the "MQTT" string
    for i in level_at + 1..bytes.len() {
        for bit in 0..8 {
            let mut input = bytes.clone();
            input[i] ^= 1 << bit;
            if let Err(e) = decode(&input, None, u32::MAX) {
                if !matches!(e, DecodeError::PacketTooLarge { .. }) {
                    assert_eq!(e.connect_version(), Some(ProtocolVersion::V5), "{e:?}");
                }
            }
        }
    }
}
