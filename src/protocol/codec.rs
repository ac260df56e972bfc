//! Whole-packet decode and encode: the fixed header, then the packet kind's own `read` / `write`.

use super::header::{packet_len, parse_fixed_header};
use super::{
    ack, auth, connack, connect, disconnect, publish, suback, subscribe, unsuback, unsubscribe,
};
use super::{DecodeError, Packet, PacketType, ProtocolVersion};

/// Decodes one packet from the start of `buf`.
///
/// * `Ok(None)`: `buf` holds only part of a packet (never an error by itself).
/// * `Ok(Some((packet, consumed)))`: one packet, which took exactly `consumed` bytes.
/// * `Err(_)`: the bytes can never form a valid packet; the connection must be closed.
///
/// `version` is the connection's version, `None` before CONNECT: a CONNECT carries its own
/// version, any other packet is then decoded as 5.0 (the broker rejects it anyway). A packet whose
/// total size exceeds `max_packet_size` is rejected as soon as its fixed header is complete, as is
/// AUTH on a 3.1.1 / 3.1 connection (a reserved packet type there).
pub fn decode(
    buf: &[u8],
    version: Option<ProtocolVersion>,
    max_packet_size: u32,
) -> Result<Option<(Packet, usize)>, DecodeError> {
    let Some(header) = parse_fixed_header(buf, max_packet_size)? else {
        return Ok(None);
    };
    let version_or_v5 = version.unwrap_or(ProtocolVersion::V5);
    if header.packet_type == PacketType::Auth && !version_or_v5.is_v5() {
        return Err(DecodeError::InvalidPacketType(PacketType::Auth as u8));
    }
    let total = header.packet_len();
    let Some(body) = buf.get(header.header_len..total) else {
        return Ok(None);
    };
    let packet = decode_body(header.packet_type, header.flags, body, version_or_v5)?;
    Ok(Some((packet, total)))
}

fn decode_body(
    packet_type: PacketType,
    flags: u8,
    body: &[u8],
    version: ProtocolVersion,
) -> Result<Packet, DecodeError> {
    let empty = |packet: Packet| {
        if body.is_empty() {
            Ok(packet)
        } else {
            Err(DecodeError::LengthMismatch {
                packet_type,
                remaining_length: body.len(),
            })
        }
    };
    Ok(match packet_type {
        PacketType::Connect => Packet::Connect(Box::new(connect::read(body)?)),
        PacketType::ConnAck => Packet::ConnAck(connack::read(body, version)?),
        PacketType::Publish => Packet::Publish(publish::read(flags, body, version)?),
        PacketType::PubAck => Packet::PubAck(ack::read(packet_type, body, version)?),
        PacketType::PubRec => Packet::PubRec(ack::read(packet_type, body, version)?),
        PacketType::PubRel => Packet::PubRel(ack::read(packet_type, body, version)?),
        PacketType::PubComp => Packet::PubComp(ack::read(packet_type, body, version)?),
        PacketType::Subscribe => Packet::Subscribe(subscribe::read(body, version)?),
        PacketType::SubAck => Packet::SubAck(suback::read(body, version)?),
        PacketType::Unsubscribe => Packet::Unsubscribe(unsubscribe::read(body, version)?),
        PacketType::UnsubAck => Packet::UnsubAck(unsuback::read(body, version)?),
        PacketType::PingReq => empty(Packet::PingReq)?,
        PacketType::PingResp => empty(Packet::PingResp)?,
        PacketType::Disconnect => Packet::Disconnect(disconnect::read(body, version)?),
        PacketType::Auth => Packet::Auth(auth::read(body)?),
    })
}

/// Remaining Length of `packet` in `version`; `None` when the packet has no form in that version
/// (AUTH in 3.1.1).
fn remaining_len(packet: &Packet, version: ProtocolVersion) -> Option<usize> {
    Some(match packet {
        Packet::Connect(c) => connect::len(c),
        Packet::ConnAck(c) => connack::len(c, version),
        Packet::Publish(p) => publish::len(p, version),
        Packet::PubAck(a) => ack::len(PacketType::PubAck, a, version),
        Packet::PubRec(a) => ack::len(PacketType::PubRec, a, version),
        Packet::PubRel(a) => ack::len(PacketType::PubRel, a, version),
        Packet::PubComp(a) => ack::len(PacketType::PubComp, a, version),
        Packet::Subscribe(s) => subscribe::len(s, version),
        Packet::SubAck(s) => suback::len(s, version),
        Packet::Unsubscribe(u) => unsubscribe::len(u, version),
        Packet::UnsubAck(u) => unsuback::len(u, version),
        Packet::PingReq | Packet::PingResp => 0,
        Packet::Disconnect(d) => disconnect::len(d, version),
        Packet::Auth(a) if version.is_v5() => auth::len(a),
        Packet::Auth(_) => return None,
    })
}

/// Appends `packet` encoded for a connection of `version`.
///
/// 3.1.1 / 3.1 forms omit properties and reason codes (CONNACK and SUBACK map reasons to return
/// codes). A CONNECT is written in the version it names (`Connect::protocol`). AUTH has no
/// 3.1.1 form and writes nothing there. Strings over 65,535 bytes and packets over the maximum
/// Remaining Length cannot be represented; callers must not produce them.
pub fn encode(packet: &Packet, version: ProtocolVersion, out: &mut Vec<u8>) {
    if let Some(remaining) = remaining_len(packet, version) {
        out.reserve(packet_len(remaining));
    }
    match packet {
        Packet::Connect(c) => connect::write(out, c),
        Packet::ConnAck(c) => connack::write(out, c, version),
        Packet::Publish(p) => publish::write(out, p, version),
        Packet::PubAck(a) => ack::write(out, PacketType::PubAck, a, version),
        Packet::PubRec(a) => ack::write(out, PacketType::PubRec, a, version),
        Packet::PubRel(a) => ack::write(out, PacketType::PubRel, a, version),
        Packet::PubComp(a) => ack::write(out, PacketType::PubComp, a, version),
        Packet::Subscribe(s) => subscribe::write(out, s, version),
        Packet::SubAck(s) => suback::write(out, s, version),
        Packet::Unsubscribe(u) => unsubscribe::write(out, u, version),
        Packet::UnsubAck(u) => unsuback::write(out, u, version),
        Packet::PingReq => write_empty(out, PacketType::PingReq),
        Packet::PingResp => write_empty(out, PacketType::PingResp),
        Packet::Disconnect(d) => disconnect::write(out, d, version),
        Packet::Auth(a) if version.is_v5() => auth::write(out, a),
        Packet::Auth(_) => {}
    }
}

fn write_empty(out: &mut Vec<u8>, packet_type: PacketType) {
    super::header::write_fixed_header(out, packet_type, 0, 0);
}

/// Exact number of bytes [`encode`] appends for `packet` (fixed header included).
pub fn encoded_len(packet: &Packet, version: ProtocolVersion) -> usize {
    remaining_len(packet, version).map_or(0, packet_len)
}
