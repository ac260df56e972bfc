//! Data representations of §1.5: Two and Four Byte Integers, Variable Byte Integers, UTF-8 Encoded
//! Strings, Binary Data and String Pairs, with a bounds-checked [`Reader`] and matching writers.
//!
//! Every read is checked; running past the end of the slice is [`DecodeError::Truncated`], which a
//! caller that holds a complete packet reports as a Malformed Packet.
//!
//! Writers never fail. Strings and binary data longer than 65,535 bytes cannot be represented;
//! they are cut to the longest prefix that fits (on a character boundary for strings), and
//! [`string_len`] / [`binary_len`] account for the same cut, so lengths always agree with bytes
//! written. Callers are expected not to produce such values.

use super::{DecodeError, MAX_REMAINING_LENGTH};

/// The longest UTF-8 string or binary field: its length is a Two Byte Integer.
pub const MAX_FIELD_LEN: usize = u16::MAX as usize;

/// Why a Variable Byte Integer is invalid (§1.5.5).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VarintError {
    /// The fourth byte has its continuation bit set: a fifth byte would be needed.
    TooLong,
    /// More bytes than necessary were used (MQTT-1.5.5-1).
    NotMinimal,
}

/// Parses a Variable Byte Integer at the start of `buf`.
///
/// `Ok(None)` when `buf` ends before the integer does; `Ok(Some((value, bytes_used)))` otherwise.
/// An integer whose fourth byte has the continuation bit set is rejected at once, and so is any
/// encoding that is not minimal (a multi-byte encoding whose last byte is 0).
pub fn parse_varint(buf: &[u8]) -> Result<Option<(u32, usize)>, VarintError> {
    const CONTINUATION: u8 = 0x80;
    const VALUE_BITS: u8 = 0x7F;
    let mut value: u32 = 0;
    for index in 0..4 {
        let Some(&byte) = buf.get(index) else {
            return Ok(None);
        };
        // index ≤ 3, so the shift is at most 21 and the value at most 2^28 - 1: no overflow.
        value |= u32::from(byte & VALUE_BITS) << (7 * index);
        if byte & CONTINUATION == 0 {
            if index > 0 && byte == 0 {
                return Err(VarintError::NotMinimal);
            }
            return Ok(Some((value, index + 1)));
        }
    }
    Err(VarintError::TooLong)
}

/// Number of bytes the Variable Byte Integer encoding of `n` takes (values above the maximum
/// are written as the maximum, see [`write_varint`]).
pub fn varint_len(n: u32) -> usize {
    match n {
        0..=127 => 1,
        128..=16_383 => 2,
        16_384..=2_097_151 => 3,
        _ => 4,
    }
}

/// Appends `n` as a Variable Byte Integer. Values above 268,435,455 cannot be represented and
/// are written as 268,435,455; callers keep packets within the limit.
pub fn write_varint(out: &mut Vec<u8>, n: u32) {
    let mut n = n.min(MAX_REMAINING_LENGTH);
    loop {
        // Truncation to the low seven bits is the point here.
        let mut byte = (n & 0x7F) as u8;
        n >>= 7;
        if n > 0 {
            byte |= 0x80;
        }
        out.push(byte);
        if n == 0 {
            break;
        }
    }
}

/// Checks a UTF-8 Encoded String's bytes: well-formed UTF-8 (which excludes surrogates and
/// overlong forms, MQTT-1.5.4-1) without U+0000 (MQTT-1.5.4-2).
pub fn check_utf8<'a>(bytes: &'a [u8], what: &'static str) -> Result<&'a str, DecodeError> {
    let s = std::str::from_utf8(bytes).map_err(|_| DecodeError::InvalidUtf8 { what })?;
    if s.contains('\0') {
        return Err(DecodeError::InvalidUtf8 { what });
    }
    Ok(s)
}

/// A bounds-checked cursor over the bytes of one packet (or one part of it).
#[derive(Debug, Clone)]
pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub fn new(buf: &'a [u8]) -> Reader<'a> {
        Reader { buf, pos: 0 }
    }

    /// Bytes not yet read.
    pub fn remaining(&self) -> usize {
        self.buf.len().saturating_sub(self.pos)
    }

    pub fn is_empty(&self) -> bool {
        self.remaining() == 0
    }

    /// Bytes read so far.
    pub fn position(&self) -> usize {
        self.pos
    }

    /// The next `n` bytes.
    pub fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], DecodeError> {
        let end = self
            .pos
            .checked_add(n)
            .ok_or(DecodeError::Truncated { what })?;
        let bytes = self
            .buf
            .get(self.pos..end)
            .ok_or(DecodeError::Truncated { what })?;
        self.pos = end;
        Ok(bytes)
    }

    /// Everything not yet read (e.g. a PUBLISH payload).
    pub fn rest(&mut self) -> &'a [u8] {
        let rest = self.buf.get(self.pos..).unwrap_or_default();
        self.pos = self.buf.len();
        rest
    }

    pub fn u8(&mut self, what: &'static str) -> Result<u8, DecodeError> {
        let bytes = self.take(1, what)?;
        bytes
            .first()
            .copied()
            .ok_or(DecodeError::Truncated { what })
    }

    /// A Two Byte Integer (big-endian, §1.5.2).
    pub fn u16(&mut self, what: &'static str) -> Result<u16, DecodeError> {
        let bytes = self.take(2, what)?;
        let array: [u8; 2] = bytes
            .try_into()
            .map_err(|_| DecodeError::Truncated { what })?;
        Ok(u16::from_be_bytes(array))
    }

    /// A Four Byte Integer (big-endian, §1.5.3).
    pub fn u32(&mut self, what: &'static str) -> Result<u32, DecodeError> {
        let bytes = self.take(4, what)?;
        let array: [u8; 4] = bytes
            .try_into()
            .map_err(|_| DecodeError::Truncated { what })?;
        Ok(u32::from_be_bytes(array))
    }

    /// A Variable Byte Integer (§1.5.5), minimal encoding required.
    pub fn varint(&mut self, what: &'static str) -> Result<u32, DecodeError> {
        let rest = self.buf.get(self.pos..).unwrap_or_default();
        match parse_varint(rest) {
            Ok(Some((value, used))) => {
                self.pos = self.pos.saturating_add(used);
                Ok(value)
            }
            Ok(None) => Err(DecodeError::Truncated { what }),
            Err(_) => Err(DecodeError::MalformedVarint { what }),
        }
    }

    /// Binary Data (§1.5.6): a Two Byte length and that many bytes.
    pub fn binary(&mut self, what: &'static str) -> Result<&'a [u8], DecodeError> {
        let len = self.u16(what)?;
        self.take(usize::from(len), what)
    }

    /// A UTF-8 Encoded String (§1.5.4).
    pub fn string(&mut self, what: &'static str) -> Result<&'a str, DecodeError> {
        let bytes = self.binary(what)?;
        check_utf8(bytes, what)
    }

    /// A UTF-8 String Pair (§1.5.7).
    pub fn string_pair(&mut self, what: &'static str) -> Result<(&'a str, &'a str), DecodeError> {
        let name = self.string(what)?;
        let value = self.string(what)?;
        Ok((name, value))
    }
}

/// The part of `s` that is written: at most 65,535 bytes, cut on a character boundary.
pub fn capped_str(s: &str) -> &str {
    if s.len() <= MAX_FIELD_LEN {
        return s;
    }
    let mut end = MAX_FIELD_LEN;
    while end > 0 && !s.is_char_boundary(end) {
        end -= 1;
    }
    s.get(..end).unwrap_or_default()
}

/// The part of `b` that is written: at most 65,535 bytes.
pub fn capped_bytes(b: &[u8]) -> &[u8] {
    b.get(..MAX_FIELD_LEN).unwrap_or(b)
}

pub fn write_u8(out: &mut Vec<u8>, v: u8) {
    out.push(v);
}

pub fn write_u16(out: &mut Vec<u8>, v: u16) {
    out.extend_from_slice(&v.to_be_bytes());
}

pub fn write_u32(out: &mut Vec<u8>, v: u32) {
    out.extend_from_slice(&v.to_be_bytes());
}

/// Appends Binary Data (see [`capped_bytes`] for over-long input).
pub fn write_binary(out: &mut Vec<u8>, b: &[u8]) {
    let b = capped_bytes(b);
    write_u16(out, u16::try_from(b.len()).unwrap_or(u16::MAX));
    out.extend_from_slice(b);
}

/// Appends a UTF-8 Encoded String (see [`capped_str`] for over-long input).
pub fn write_string(out: &mut Vec<u8>, s: &str) {
    write_binary(out, capped_str(s).as_bytes());
}

/// Appends a UTF-8 String Pair.
pub fn write_string_pair(out: &mut Vec<u8>, name: &str, value: &str) {
    write_string(out, name);
    write_string(out, value);
}

/// Bytes [`write_string`] appends for `s`.
pub fn string_len(s: &str) -> usize {
    2 + capped_str(s).len()
}

/// Bytes [`write_binary`] appends for `b`.
pub fn binary_len(b: &[u8]) -> usize {
    2 + capped_bytes(b).len()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varint_boundaries_round_trip() {
        for n in [
            0u32,
            127,
            128,
            16_383,
            16_384,
            2_097_151,
            2_097_152,
            MAX_REMAINING_LENGTH,
        ] {
            let mut out = Vec::new();
            write_varint(&mut out, n);
            assert_eq!(out.len(), varint_len(n));
            assert_eq!(parse_varint(&out), Ok(Some((n, out.len()))));
        }
    }

    #[test]
    fn mqtt_1_5_5_1_non_minimal_varint_is_rejected() {
        assert_eq!(parse_varint(&[0x80, 0x00]), Err(VarintError::NotMinimal));
        assert_eq!(
            parse_varint(&[0xFF, 0x80, 0x00]),
            Err(VarintError::NotMinimal)
        );
        assert_eq!(
            parse_varint(&[0x80, 0x80, 0x80, 0x80]),
            Err(VarintError::TooLong)
        );
        assert_eq!(parse_varint(&[0x80, 0x80]), Ok(None));
    }

    #[test]
    fn capped_str_cuts_on_char_boundary() {
        let s = "é".repeat(40_000); // 80,000 bytes, two per char
        let c = capped_str(&s);
        assert!(c.len() <= MAX_FIELD_LEN);
        assert_eq!(c.len(), 65_534);
        assert_eq!(string_len(&s), 2 + 65_534);
    }
}
