//! How the broker ends a connection it decided to end (§4.13): the client must be able to read
//! why — the DISCONNECT (5.0) or refusing CONNACK — even while it is still sending. The broker
//! shuts only its write side after its last packet and keeps reading (and discarding) until the
//! client closes or a short linger passes; closing with the client's data unread, or with more
//! of it arriving, makes the kernel answer with a reset, which fails the client's next write and
//! makes most client libraries drop the connection without reading the reason.
//!
//! Each test has the client keep writing after the broker's decision, as a real client in the
//! middle of a burst does, and then read: every write must succeed and the reason must be there,
//! followed by a clean end of file.

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::*;

/// Writes `packet` `times` times, one write each, as a client still in a burst would; panics
/// naming the write that failed (a reset from the broker shows up here first).
fn keep_sending(s: &TcpStream, packet: &[u8], times: usize) {
    let mut w = s;
    for i in 0..times {
        if let Err(e) = w.write_all(packet) {
            panic!(
                "write {} of {times} after the broker's close failed: {e}",
                i + 1
            );
        }
        // Give a reset (if the broker sends one) time to arrive before the next write.
        let _ = s.peek(&mut [0u8; 1]);
    }
}

/// Reads whole packets until end of file (≤ 5 s); panics on a reset or any read error, showing
/// what had arrived.
fn read_until_eof(s: &TcpStream) -> Vec<Vec<u8>> {
    let mut r = s;
    let mut bytes = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = Instant::now() + IO_TIMEOUT;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(
            !left.is_zero(),
            "no end of file within {IO_TIMEOUT:?}; received {}",
            hex(&bytes)
        );
        s.set_read_timeout(Some(left)).unwrap();
        match r.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => bytes.extend_from_slice(&buf[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::Interrupted | ErrorKind::WouldBlock) => {}
            Err(e) => panic!(
                "read failed ({e}) instead of a clean end of file; received before: {}",
                hex(&bytes)
            ),
        }
    }
    split_packets(&bytes)
}

/// Splits a byte stream into MQTT packets by their fixed headers.
fn split_packets(mut b: &[u8]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    while !b.is_empty() {
        let mut len = 0usize;
        let mut i = 1;
        loop {
            assert!(i < b.len() && i <= 4, "truncated header in {}", hex(b));
            len |= usize::from(b[i] & 0x7f) << (7 * (i - 1));
            i += 1;
            if b[i - 1] & 0x80 == 0 {
                break;
            }
        }
        assert!(b.len() >= i + len, "truncated packet in {}", hex(b));
        out.push(b[..i + len].to_vec());
        b = &b[i + len..];
    }
    out
}

/// The reason code of a 5.0 DISCONNECT (`e0 00` means 0x00).
fn disconnect_reason(p: &[u8]) -> Option<u8> {
    (p[0] == 0xe0).then(|| p.get(2).copied().unwrap_or(0))
}

#[test]
fn mqtt_3_3_4_9_client_over_receive_maximum_still_sending_reads_its_pubrecs_and_0x93() {
    let b = Broker::start(&["--allow-anonymous", "--receive-maximum", "5"]);
    let s = connect_raw(b.mqtt);
    send(&s, &packet::connect_v5("rmburst", 60, true));
    assert_eq!(read_packet(&s)[0], 0x20, "CONNACK");
    // Six QoS 2 messages, none released: one more than Receive Maximum, without reading.
    let mut burst = Vec::new();
    for id in 1..=6u16 {
        burst.extend(packet::publish(
            true,
            "rm/t",
            b"x",
            2,
            Some(id),
            false,
            false,
        ));
    }
    send(&s, &burst);
    assert!(
        b.wait_for_log("ReceiveMaximumExceeded", IO_TIMEOUT),
        "the broker never refused the sixth message:\n{}",
        b.log()
    );
    // The client is still in its burst when the broker closes.
    keep_sending(
        &s,
        &packet::publish(true, "rm/t", b"y", 0, None, false, false),
        3,
    );
    let got = read_until_eof(&s);
    let pubrecs = got.iter().filter(|p| p[0] == 0x50).count();
    assert_eq!(pubrecs, 5, "PUBREC for each accepted message: {got:02x?}");
    assert_eq!(
        got.last().and_then(|p| disconnect_reason(p)),
        Some(0x93),
        "the last packet is DISCONNECT 0x93 Receive Maximum exceeded: {got:02x?}"
    );
}

#[test]
fn mqtt_3_1_4_3_taken_over_client_still_sending_reads_disconnect_0x8e() {
    let b = Broker::start(&["--allow-anonymous"]);
    let old = connect_raw(b.mqtt);
    send(&old, &packet::connect_v5("twin", 60, true));
    assert_eq!(read_packet(&old)[0], 0x20, "CONNACK");
    let new = connect_raw(b.mqtt);
    send(&new, &packet::connect_v5("twin", 60, true));
    assert_eq!(read_packet(&new)[0], 0x20, "CONNACK of the new connection");
    // The old connection keeps publishing, not yet aware it was replaced.
    keep_sending(
        &old,
        &packet::publish(true, "tw/t", b"z", 0, None, false, false),
        3,
    );
    let got = read_until_eof(&old);
    assert_eq!(
        got.last().and_then(|p| disconnect_reason(p)),
        Some(0x8e),
        "the old connection reads DISCONNECT 0x8E Session taken over: {got:02x?}"
    );
    // The new connection is unaffected.
    send(&new, &packet::pingreq());
    expect_bytes(&new, &packet::pingresp());
}

#[test]
fn mqtt_3_2_2_2_refused_client_still_sending_reads_its_connack() {
    let b = Broker::start(&[]); // anonymous clients refused
    let s = connect_raw(b.mqtt);
    send(&s, &packet::connect_v311("nobody", 60, true));
    assert!(
        b.wait_for_log("refused", IO_TIMEOUT),
        "the anonymous CONNECT was not refused:\n{}",
        b.log()
    );
    keep_sending(&s, &packet::pingreq(), 3);
    let got = read_until_eof(&s);
    assert_eq!(
        got,
        vec![packet::connack_v311(false, 0x05)],
        "CONNACK 0x05 Not authorized, then end of file"
    );
}

#[test]
fn a_silent_client_is_let_go_one_linger_after_the_broker_closes_it() {
    // A client that neither reads nor closes must not keep its reader thread and its
    // max_clients slot: after the linger the broker lets go of the socket.
    let b = Broker::start(&["--allow-anonymous", "--max-clients", "2"]);
    let old = connect_raw(b.mqtt);
    send(&old, &packet::connect_v5("quiet", 0, true)); // Keep Alive 0: no read deadline
    assert_eq!(read_packet(&old)[0], 0x20, "CONNACK");
    let new = connect_raw(b.mqtt);
    send(&new, &packet::connect_v5("quiet", 0, true)); // takes over; `old` stays silent
    assert_eq!(read_packet(&new)[0], 0x20, "CONNACK of the new connection");
    // The old connection's slot comes back within the linger (1 s) plus slack.
    let deadline = Instant::now() + Duration::from_secs(4);
    loop {
        let s = connect_raw(b.mqtt);
        send(&s, &packet::connect_v5("third", 60, true));
        let connack = read_packet(&s);
        if connack.get(3) == Some(&0x00) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "max_clients slot still held by the silent, replaced client: {}",
            hex(&connack)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    drop(old);
}
