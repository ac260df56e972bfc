//! Framing: turns the byte chunks a connection reads into whole packets.
//!
//! A [`FrameBuffer`] holds the bytes received but not yet decoded. It yields every complete
//! packet whether one packet spans many reads or one read holds many packets. Consumed bytes are
//! skipped by advancing an offset; the live bytes are moved to the front only when that is cheap
//! in amortised terms (at least half the capacity is dead, or the buffer would otherwise grow).
//!
//! Memory is bounded by the Maximum Packet Size: the size check runs as soon as a fixed header
//! is complete, before the body is buffered, and growth never reserves on the strength of a
//! claimed Remaining Length — capacity only follows bytes actually received, with doubling capped
//! at the Maximum Packet Size last passed to [`FrameBuffer::next_packet`]. A caller that reads at
//! most `chunk` bytes between calls to `next_packet` thus keeps the capacity within
//! `max_packet_size + chunk`. Once every byte is consumed, a buffer that grew beyond
//! [`KEEP_WHEN_DRAINED`] for a large packet lets that memory go: a connection that sent one big
//! message and went quiet does not hold its size for the rest of its life.

use super::{codec, DecodeError, Packet, ProtocolVersion};

/// Capacity a drained buffer may keep. Packets up to this size (the 16 KiB ones of the
/// benchmarks among them) are framed without ever giving memory back and growing it again.
pub const KEEP_WHEN_DRAINED: usize = 64 * 1024;

/// Received bytes awaiting decoding. See the module documentation.
#[derive(Debug, Default)]
pub struct FrameBuffer {
    /// `buf[start..end]` are the live bytes; `buf.len() >= end` (the tail may hold bytes handed
    /// out by [`FrameBuffer::buffer_mut_for_read`] but not committed).
    buf: Vec<u8>,
    start: usize,
    end: usize,
    /// Doubling stops here (the last Maximum Packet Size seen); 0 until `next_packet` is called,
    /// which makes growth exact.
    growth_cap: usize,
}

impl FrameBuffer {
    pub fn new() -> FrameBuffer {
        FrameBuffer::default()
    }

    /// A buffer with room for `capacity` bytes up front (e.g. one read chunk).
    pub fn with_capacity(capacity: usize) -> FrameBuffer {
        FrameBuffer {
            buf: Vec::with_capacity(capacity),
            ..FrameBuffer::default()
        }
    }

    /// Bytes received and not yet returned as packets.
    pub fn buffered(&self) -> usize {
        self.end.saturating_sub(self.start)
    }

    /// Bytes currently allocated.
    pub fn capacity(&self) -> usize {
        self.buf.capacity()
    }

    /// Appends received bytes.
    pub fn extend(&mut self, data: &[u8]) {
        self.make_room(data.len());
        self.buf.truncate(self.end);
        self.buf.extend_from_slice(data);
        self.end = self.buf.len();
    }

    /// A writable slice of `chunk` bytes after the buffered data, to read into; follow with
    /// [`FrameBuffer::commit`] with the number of bytes actually read.
    pub fn buffer_mut_for_read(&mut self, chunk: usize) -> &mut [u8] {
        self.make_room(chunk);
        let new_len = self.end.saturating_add(chunk);
        if self.buf.len() < new_len {
            self.buf.resize(new_len, 0);
        }
        let end = self.end;
        self.buf.get_mut(end..new_len).unwrap_or_default()
    }

    /// Marks `n` bytes of the slice from [`FrameBuffer::buffer_mut_for_read`] as received.
    pub fn commit(&mut self, n: usize) {
        self.end = self.end.saturating_add(n).min(self.buf.len());
    }

    /// The next complete packet, `Ok(None)` if more bytes are needed. On `Err` the connection
    /// must be closed; the buffer is left as it was.
    pub fn next_packet(
        &mut self,
        version: Option<ProtocolVersion>,
        max_packet_size: u32,
    ) -> Result<Option<Packet>, DecodeError> {
        self.growth_cap = usize::try_from(max_packet_size).unwrap_or(usize::MAX);
        let live = self.buf.get(self.start..self.end).unwrap_or_default();
        match codec::decode(live, version, max_packet_size)? {
            Some((packet, consumed)) => {
                self.start = self.start.saturating_add(consumed).min(self.end);
                if self.start == self.end {
                    self.start = 0;
                    self.end = 0;
                    if self.buf.capacity() > KEEP_WHEN_DRAINED {
                        self.buf = Vec::new();
                    }
                }
                Ok(Some(packet))
            }
            None => Ok(None),
        }
    }

    /// Frees memory beyond the bytes still buffered (e.g. after a large packet on a connection
    /// that is now idle).
    pub fn shrink(&mut self) {
        self.compact();
        self.buf.truncate(self.end);
        self.buf.shrink_to_fit();
    }

    /// Moves the live bytes to the front.
    fn compact(&mut self) {
        if self.start == 0 {
            return;
        }
        if self.start < self.end {
            self.buf.copy_within(self.start..self.end, 0);
        }
        self.end = self.end.saturating_sub(self.start);
        self.start = 0;
    }

    /// Ensures `additional` bytes fit after the live bytes, compacting first when worthwhile.
    fn make_room(&mut self, additional: usize) {
        let capacity = self.buf.capacity();
        let needed = self.end.saturating_add(additional);
        if self.start > 0 && (needed > capacity || self.start >= capacity / 2) {
            self.compact();
        }
        let needed = self.end.saturating_add(additional);
        if needed > capacity {
            let doubled = capacity.saturating_mul(2).min(self.growth_cap);
            let target = needed.max(doubled);
            self.buf
                .reserve_exact(target.saturating_sub(self.buf.len()));
        }
    }
}
