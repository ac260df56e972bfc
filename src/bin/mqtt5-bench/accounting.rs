//! The load generator's message accounting: the payload format every benchmark message carries
//! and the per-subscriber [`Tracker`] that counts losses, duplicates, reorders and corrupt
//! payloads. Owned by the `mqtt5-bench` binary; runs on each subscriber thread (one `Tracker`
//! per subscriber, never shared).
//!
//! Pure std, no I/O and no clock, so that `tests/bench_generator.rs` can include this file with
//! `#[path]` and feed it crafted sequences.
//!
//! # Payload format (big-endian), padded to the requested size
//! | bytes | field |
//! |---|---|
//! | 0..4 | magic `MQB1` |
//! | 4..8 | publisher id (u32) |
//! | 8..16 | sequence number (u64), from 0 per publisher |
//! | 16..24 | send time (u64, ns since the generator's start) |
//! | 24..28 | total payload length (u32) |
//! | 28..32 | check: FNV-1a over bytes 0..28 |
//! | 32.. | padding: byte `i` is `(seq + i) as u8 ^ pub_id as u8` |
//!
//! Any deviation (size, magic, check, padding) makes the payload corrupt.

/// The four bytes every benchmark payload starts with.
pub const MAGIC: [u8; 4] = *b"MQB1";
/// Smallest payload: the header alone.
pub const HEADER_LEN: usize = 32;
/// Highest sequence number the tracker accepts per publisher; larger ones are corrupt (keeps a
/// damaged payload from allocating a huge bitmap).
pub const MAX_SEQ: u64 = 1 << 32;

/// What a payload says about itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    pub publisher: u32,
    pub seq: u64,
    pub sent_ns: u64,
}

/// Why a payload was rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Corrupt {
    /// Not the requested size, or shorter than the header.
    Size,
    Magic,
    /// The length field disagrees with the payload's length.
    LengthField,
    Check,
    Padding,
    /// A publisher id the run does not have.
    UnknownPublisher,
    /// A sequence number beyond what a publisher can have sent.
    SeqOutOfRange,
}

fn fnv1a(bytes: &[u8]) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    for &b in bytes {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    h
}

fn pad_byte(publisher: u32, seq: u64, i: usize) -> u8 {
    (seq as u8).wrapping_add(i as u8) ^ (publisher as u8)
}

/// Writes a payload of `size` bytes (at least [`HEADER_LEN`]) into `out` (cleared first).
pub fn encode_payload(out: &mut Vec<u8>, size: usize, stamp: Stamp) {
    let size = size.max(HEADER_LEN);
    out.clear();
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&stamp.publisher.to_be_bytes());
    out.extend_from_slice(&stamp.seq.to_be_bytes());
    out.extend_from_slice(&stamp.sent_ns.to_be_bytes());
    out.extend_from_slice(&u32::try_from(size).unwrap_or(u32::MAX).to_be_bytes());
    let check = fnv1a(out.get(..28).unwrap_or_default());
    out.extend_from_slice(&check.to_be_bytes());
    out.extend((0..size - HEADER_LEN).map(|i| pad_byte(stamp.publisher, stamp.seq, i)));
}

fn be_u32(b: &[u8]) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(b);
    u32::from_be_bytes(a)
}

fn be_u64(b: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(b);
    u64::from_be_bytes(a)
}

/// Checks a received payload against the format and the run's payload size.
pub fn decode_payload(payload: &[u8], expected_size: usize) -> Result<Stamp, Corrupt> {
    if payload.len() < HEADER_LEN || payload.len() != expected_size.max(HEADER_LEN) {
        return Err(Corrupt::Size);
    }
    let (header, pad) = payload.split_at(HEADER_LEN);
    if header[..4] != MAGIC {
        return Err(Corrupt::Magic);
    }
    if usize::try_from(be_u32(&header[24..28])).ok() != Some(payload.len()) {
        return Err(Corrupt::LengthField);
    }
    if fnv1a(&header[..28]) != be_u32(&header[28..32]) {
        return Err(Corrupt::Check);
    }
    let stamp = Stamp {
        publisher: be_u32(&header[4..8]),
        seq: be_u64(&header[8..16]),
        sent_ns: be_u64(&header[16..24]),
    };
    // OR of differences rather than an early exit: the loop vectorises.
    let diff = pad.iter().enumerate().fold(0u8, |acc, (i, &b)| {
        acc | (b ^ pad_byte(stamp.publisher, stamp.seq, i))
    });
    if diff != 0 {
        return Err(Corrupt::Padding);
    }
    Ok(stamp)
}

/// How one received message relates to what came before from the same publisher.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arrival {
    /// The next sequence number expected.
    InOrder,
    /// Ahead of the next expected: the ones skipped are late or lost.
    Gap,
    /// Behind the highest seen and never seen before: a reorder.
    Late,
    /// Seen before.
    Duplicate,
    Corrupt(Corrupt),
}

/// One publisher's messages as one subscriber saw them.
#[derive(Debug, Clone, Default)]
struct PublisherTrack {
    /// Bit `seq` is set once `seq` has been received.
    seen: Vec<u64>,
    /// One past the highest sequence number seen (0: nothing yet).
    next: u64,
    unique: u64,
    duplicates: u64,
    reorders: u64,
    gaps: u64,
}

impl PublisherTrack {
    fn record(&mut self, seq: u64) -> Arrival {
        let word = usize::try_from(seq / 64).unwrap_or(usize::MAX);
        let bit = 1u64 << (seq % 64);
        if word >= self.seen.len() {
            self.seen.resize(word.saturating_add(1), 0);
        }
        let Some(slot) = self.seen.get_mut(word) else {
            return Arrival::Corrupt(Corrupt::SeqOutOfRange);
        };
        if *slot & bit != 0 {
            self.duplicates += 1;
            return Arrival::Duplicate;
        }
        *slot |= bit;
        self.unique += 1;
        if seq == self.next {
            self.next = seq + 1;
            Arrival::InOrder
        } else if seq > self.next {
            self.gaps += 1;
            self.next = seq + 1;
            Arrival::Gap
        } else {
            self.reorders += 1;
            Arrival::Late
        }
    }

    /// Sequence numbers below `sent` never received.
    fn missing_below(&self, sent: u64) -> u64 {
        let mut received_below = 0u64;
        for (w, &bits) in self.seen.iter().enumerate() {
            let base = (w as u64) * 64;
            if base >= sent {
                break;
            }
            let in_range = sent - base;
            let mask = if in_range >= 64 {
                u64::MAX
            } else {
                (1u64 << in_range) - 1
            };
            received_below += u64::from((bits & mask).count_ones());
        }
        sent.saturating_sub(received_below)
    }

    /// Received sequence numbers at or above `sent` (the publisher never sent them).
    fn unsent_received(&self, sent: u64) -> u64 {
        let below = sent - self.missing_below(sent);
        self.unique.saturating_sub(below)
    }
}

/// Counts for one subscriber, built message by message. See [`Tracker::summary`].
#[derive(Debug, Clone)]
pub struct Tracker {
    publishers: Vec<PublisherTrack>,
    payload_size: usize,
    received: u64,
    corrupt: u64,
    first_corrupt: Option<Corrupt>,
}

/// A subscriber's final counts against what the publishers sent.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Summary {
    /// Every message received, corrupt ones included.
    pub received: u64,
    /// Distinct (publisher, sequence) pairs received.
    pub unique: u64,
    /// Sent but never received.
    pub lost: u64,
    pub duplicates: u64,
    /// Messages that arrived after a higher sequence number of the same publisher.
    pub reorders: u64,
    pub corrupt: u64,
    /// Well-formed, but with a sequence number the publisher never sent.
    pub unsent: u64,
}

impl Summary {
    /// Adds another subscriber's counts.
    pub fn add(&mut self, o: &Summary) {
        self.received += o.received;
        self.unique += o.unique;
        self.lost += o.lost;
        self.duplicates += o.duplicates;
        self.reorders += o.reorders;
        self.corrupt += o.corrupt;
        self.unsent += o.unsent;
    }

    /// Why this run must be reported as failed at `qos` (empty: it passed). Loss counts only at
    /// QoS ≥ 1, duplicates only at QoS 2; reorders, corrupt and unsent payloads always.
    pub fn failures(&self, qos: u8) -> Vec<String> {
        let mut f = Vec::new();
        if qos >= 1 && self.lost > 0 {
            f.push(format!("{} lost at QoS {qos}", self.lost));
        }
        if qos == 2 && self.duplicates > 0 {
            f.push(format!("{} duplicates at QoS 2", self.duplicates));
        }
        if self.reorders > 0 {
            f.push(format!("{} reordered", self.reorders));
        }
        if self.corrupt > 0 {
            f.push(format!("{} corrupt payloads", self.corrupt));
        }
        if self.unsent > 0 {
            f.push(format!(
                "{} never-sent sequence numbers received",
                self.unsent
            ));
        }
        f
    }
}

impl Tracker {
    /// A tracker for a run with `publishers` publishers (ids `0..publishers`) and payloads of
    /// `payload_size` bytes.
    pub fn new(publishers: usize, payload_size: usize) -> Tracker {
        Tracker {
            publishers: vec![PublisherTrack::default(); publishers],
            payload_size,
            received: 0,
            corrupt: 0,
            first_corrupt: None,
        }
    }

    /// Decodes and records one received payload; returns the stamp when it was well-formed.
    pub fn record_payload(&mut self, payload: &[u8]) -> (Arrival, Option<Stamp>) {
        match decode_payload(payload, self.payload_size) {
            Ok(stamp) => (self.record(stamp.publisher, stamp.seq), Some(stamp)),
            Err(c) => {
                self.received += 1;
                (self.corrupt(c), None)
            }
        }
    }

    /// Records one message by its publisher and sequence number.
    pub fn record(&mut self, publisher: u32, seq: u64) -> Arrival {
        self.received += 1;
        if seq >= MAX_SEQ {
            return self.corrupt(Corrupt::SeqOutOfRange);
        }
        let track = usize::try_from(publisher)
            .ok()
            .and_then(|p| self.publishers.get_mut(p));
        match track {
            Some(t) => match t.record(seq) {
                Arrival::Corrupt(c) => self.corrupt(c),
                a => a,
            },
            None => self.corrupt(Corrupt::UnknownPublisher),
        }
    }

    fn corrupt(&mut self, c: Corrupt) -> Arrival {
        self.corrupt += 1;
        self.first_corrupt.get_or_insert(c);
        Arrival::Corrupt(c)
    }

    /// Distinct messages received so far (corrupt ones excluded).
    pub fn unique(&self) -> u64 {
        self.publishers.iter().map(|t| t.unique).sum()
    }

    /// The first corruption seen, for the report.
    pub fn first_corrupt(&self) -> Option<Corrupt> {
        self.first_corrupt
    }

    /// Final counts given how many messages each publisher sent (`sent[i]` for publisher `i`;
    /// publishers whose messages this subscriber was not meant to get are passed as 0 and then
    /// count any message from them as unsent).
    pub fn summary(&self, sent: &[u64]) -> Summary {
        let mut s = Summary {
            received: self.received,
            corrupt: self.corrupt,
            ..Summary::default()
        };
        for (i, t) in self.publishers.iter().enumerate() {
            let n = sent.get(i).copied().unwrap_or(0);
            s.unique += t.unique;
            s.duplicates += t.duplicates;
            s.reorders += t.reorders;
            s.lost += t.missing_below(n);
            s.unsent += t.unsent_received(n);
        }
        s
    }
}
