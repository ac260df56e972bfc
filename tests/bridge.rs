//! Bridges (issue #15) against real brokers on 127.0.0.1: Debian's Mosquitto (started by the
//! test with its own config, see `common::mosquitto`) and our own binary, configured with
//! Mosquitto's `connection` blocks. Clients are raw sockets, so every delivery is counted: a
//! loop or a duplicate shows as an extra PUBLISH, a loss as a missing one.

mod common;

use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::flow::{parse_publish, raw_v311, raw_v5, sub_v5, subscribe_v311, Pub};
use common::mosquitto::Mosquitto;
use common::{finish_packet, packet, read_packet, send, Broker};

/// How long a message may take across a bridge here.
const CROSSING: Duration = Duration::from_secs(10);
/// Silence that says nothing more is coming (a loop would show well within it).
const QUIET: Duration = Duration::from_millis(1500);

/// A config file for our broker: anonymous access and `bridge`, in a temp dir kept alive by
/// the returned guard.
fn our_config(bridge: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mqtt5-broker.conf");
    std::fs::write(&path, format!("allow_anonymous true\n{bridge}\n")).unwrap();
    (dir, path)
}

/// Our broker bridged by `block` (a `connection` block).
fn bridged(block: &str) -> (Broker, tempfile::TempDir) {
    let (dir, conf) = our_config(block);
    let broker = Broker::start(&["--config", conf.to_str().unwrap()]);
    (broker, dir)
}

fn await_log(b: &Broker, needle: &str) {
    assert!(
        b.wait_for_log(needle, CROSSING),
        "no {needle:?} in our log:\n{}",
        b.log()
    );
}

/// Reads PUBLISHes, acknowledging each as its QoS asks (and answering PUBREL), until `n` have
/// arrived and then nothing more for [`QUIET`] (bounded by `CROSSING` + `QUIET`).
fn collect(s: &TcpStream, v5: bool, n: usize) -> Vec<Pub> {
    let mut got = Vec::new();
    let deadline = Instant::now() + CROSSING;
    loop {
        let now = Instant::now();
        let wait = if got.len() >= n {
            QUIET
        } else if now >= deadline {
            return got;
        } else {
            deadline - now
        };
        s.set_read_timeout(Some(wait)).unwrap();
        let mut first = [0u8; 1];
        let r = std::io::Read::read(&mut &*s, &mut first);
        s.set_read_timeout(Some(common::IO_TIMEOUT)).unwrap();
        match r {
            Ok(1) => {}
            _ if got.len() >= n => return got,
            Ok(_) => panic!("connection closed after {} publishes", got.len()),
            Err(_) => continue,
        }
        let pkt = finish_packet(s, first[0]);
        match pkt[0] >> 4 {
            3 => {
                let p = parse_publish(&pkt, v5);
                match (p.qos, p.packet_id) {
                    (1, Some(id)) => send(s, &packet::puback(id)),
                    (2, Some(id)) => send(s, &packet::pubrec(id)),
                    _ => {}
                }
                got.push(p);
            }
            6 => {
                let id = u16::from_be_bytes([pkt[2], pkt[3]]);
                send(s, &packet::pubcomp(id));
            }
            _ => {}
        }
    }
}

/// Publishes with `qos`, completing its acknowledgement flow.
fn publish(s: &TcpStream, v5: bool, topic: &str, payload: &str, qos: u8, id: u16, retain: bool) {
    let pid = (qos > 0).then_some(id);
    send(
        s,
        &packet::publish(v5, topic, payload.as_bytes(), qos, pid, retain, false),
    );
    match qos {
        1 => assert_eq!(read_packet(s)[0], 0x40, "PUBACK"),
        2 => {
            assert_eq!(read_packet(s)[0], 0x50, "PUBREC");
            send(s, &packet::pubrel(id));
            assert_eq!(read_packet(s)[0], 0x70, "PUBCOMP");
        }
        _ => {}
    }
}

/// A raw 3.1.1 subscriber to `filters` (requested QoS 2) on `addr`.
fn subscriber_v311(addr: SocketAddr, id: &str, clean: bool, filters: &[&str]) -> TcpStream {
    let s = raw_v311(addr, id, clean);
    let f: Vec<(&str, u8)> = filters.iter().map(|f| (*f, 2)).collect();
    send(&s, &subscribe_v311(1, &f));
    assert_eq!(read_packet(&s)[0], 0x90, "SUBACK");
    s
}

/// A raw 5.0 subscriber to `filters` (QoS 2) on `addr`.
fn subscriber_v5(addr: SocketAddr, id: &str, filters: &[&str]) -> TcpStream {
    let (s, _) = raw_v5(addr, id, true, &[]);
    let f: Vec<(&str, u8)> = filters.iter().map(|f| (*f, 2)).collect();
    sub_v5(&s, 1, None, &f);
    s
}

fn summary(got: &[Pub]) -> Vec<(String, String, u8, bool)> {
    got.iter()
        .map(|p| {
            (
                p.topic.clone(),
                String::from_utf8_lossy(&p.payload).into_owned(),
                p.qos,
                p.retain,
            )
        })
        .collect()
}

/// `out`, `in` and `both` topics with prefixes and every QoS, between our broker and a
/// Mosquitto remote speaking `protocol`. Each message arrives once on the other side, with its
/// QoS and retain flag; `both` with the same topic on both sides loops nowhere (each side's
/// subscriber sees each message once).
fn forwards_every_direction(protocol: &str) {
    let remote = Mosquitto::start("allow_anonymous true\npersistence false");
    let block = format!(
        "connection garage\naddress {}\nbridge_protocol_version {protocol}\n\
         topic sensors/# out 2 house/ site1/\ntopic cmd/# in 2 house/ ctl/\ntopic shared/# both 2\n\
         restart_timeout 1\nnotifications false",
        remote.addr
    );
    let (ours, _conf) = bridged(&block);
    await_log(&ours, "bridge garage: connected to");
    let r_sub = subscriber_v311(
        remote.addr,
        "r-sub",
        true,
        &["site1/#", "shared/#", "house/#"],
    );
    let o_sub = subscriber_v5(
        ours.mqtt,
        "o-sub",
        &["house/cmd/#", "shared/#", "ctl/#", "site1/#"],
    );
    let r_pub = raw_v311(remote.addr, "r-pub", true);
    let (o_pub, _) = raw_v5(ours.mqtt, "o-pub", true, &[]);

    for qos in 0..=2u8 {
        publish(
            &o_pub,
            true,
            "house/sensors/t",
            &format!("out{qos}"),
            qos,
            10 + u16::from(qos),
            false,
        );
        publish(
            &r_pub,
            false,
            "ctl/cmd/light",
            &format!("in{qos}"),
            qos,
            20 + u16::from(qos),
            false,
        );
    }
    publish(&o_pub, true, "shared/a", "from-ours", 1, 30, false);
    publish(&r_pub, false, "shared/b", "from-mosquitto", 1, 31, false);

    let at_remote = summary(&collect(&r_sub, false, 5));
    let at_ours = summary(&collect(&o_sub, true, 5));
    let msg = |t: &str, p: &str, q: u8| (t.to_owned(), p.to_owned(), q, false);
    let mut want_remote = vec![
        msg("site1/sensors/t", "out0", 0),
        msg("site1/sensors/t", "out1", 1),
        msg("site1/sensors/t", "out2", 2),
        msg("shared/a", "from-ours", 1),
        msg("shared/b", "from-mosquitto", 1),
    ];
    let mut want_ours = vec![
        msg("house/cmd/light", "in0", 0),
        msg("house/cmd/light", "in1", 1),
        msg("house/cmd/light", "in2", 2),
        msg("shared/a", "from-ours", 1),
        msg("shared/b", "from-mosquitto", 1),
    ];
    let (mut at_remote, mut at_ours) = (at_remote, at_ours);
    for v in [
        &mut at_remote,
        &mut at_ours,
        &mut want_remote,
        &mut want_ours,
    ] {
        v.sort();
    }
    assert_eq!(
        at_remote,
        want_remote,
        "at Mosquitto\n--- our log ---\n{}",
        ours.log()
    );
    assert_eq!(
        at_ours,
        want_ours,
        "at ours\n--- our log ---\n{}",
        ours.log()
    );

    // Retained: carried as retained, and given to a subscriber arriving later.
    publish(&o_pub, true, "house/sensors/kept", "r-out", 1, 40, true);
    publish(&r_pub, false, "ctl/cmd/kept", "r-in", 1, 41, true);
    let _ = collect(&r_sub, false, 1);
    let _ = collect(&o_sub, true, 1);
    let late_r = subscriber_v311(remote.addr, "late-r", true, &["site1/sensors/kept"]);
    let late_o = subscriber_v5(ours.mqtt, "late-o", &["house/cmd/kept"]);
    assert_eq!(
        summary(&collect(&late_r, false, 1)),
        vec![("site1/sensors/kept".to_owned(), "r-out".to_owned(), 1, true)]
    );
    assert_eq!(
        summary(&collect(&late_o, true, 1)),
        vec![("house/cmd/kept".to_owned(), "r-in".to_owned(), 1, true)]
    );
}

#[test]
fn bridge_forwards_out_in_both_with_prefixes_qos_0_1_2_and_retain_to_a_5_0_mosquitto() {
    forwards_every_direction("mqttv50");
}

#[test]
fn bridge_forwards_out_in_both_with_prefixes_qos_0_1_2_and_retain_to_a_3_1_1_mosquitto() {
    forwards_every_direction("mqttv311");
}
