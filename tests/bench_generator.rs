//! Correctness of the load generator `mqtt5-bench` (src/bin/mqtt5-bench/): its own accounting,
//! not the broker's speed. Owned by the benchmark work (issue 6).
//!
//! * The accounting module (payload format, loss / duplicate / reorder / corrupt counting and
//!   the pass / fail rules) is compiled in here with `#[path]` and fed crafted sequences.
//! * The binary runs tiny scenarios against the real broker (started by `common::Broker` on
//!   127.0.0.1:0) and its JSON line is checked; faults injected into the subscriber's stream
//!   (`--inject`) must turn a run into FAILED with exit status 1, so a generator that stopped
//!   checking would fail these tests.
//!
//! Every run is small and bounded (the generator's `--timeout` and a harness deadline).

mod common;

#[allow(dead_code)]
#[path = "../src/bin/mqtt5-bench/accounting.rs"]
mod accounting;

use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use accounting::{decode_payload, encode_payload, Arrival, Corrupt, Stamp, Summary, Tracker};
use common::Broker;
use serde_json::Value;

// ---------------------------------------------------------------- accounting, crafted input

fn stamp(publisher: u32, seq: u64) -> Stamp {
    Stamp {
        publisher,
        seq,
        sent_ns: 1_000 + seq,
    }
}

fn payload(publisher: u32, seq: u64, size: usize) -> Vec<u8> {
    let mut p = Vec::new();
    encode_payload(&mut p, size, stamp(publisher, seq));
    p
}

/// Records `seqs` from publisher 0 and returns the summary for `sent` messages.
fn run_seq(seqs: &[u64], sent: u64) -> (Vec<Arrival>, Summary) {
    let mut t = Tracker::new(1, 64);
    let arrivals = seqs.iter().map(|&s| t.record(0, s)).collect();
    (arrivals, t.summary(&[sent]))
}

#[test]
fn payload_round_trips_at_64_bytes_and_16_kib() {
    for size in [32, 64, 1000, 16 * 1024] {
        let p = payload(7, 123_456, size);
        assert_eq!(p.len(), size);
        assert_eq!(&p[..4], b"MQB1");
        assert_eq!(decode_payload(&p, size), Ok(stamp(7, 123_456)));
    }
    // Asking for less than the stamp still makes a whole stamp.
    assert_eq!(payload(0, 0, 10).len(), accounting::HEADER_LEN);
}

#[test]
fn every_kind_of_damage_is_detected() {
    let good = payload(3, 42, 64);
    let damaged = |i: usize| {
        let mut p = good.clone();
        p[i] ^= 0x01;
        decode_payload(&p, 64)
    };
    assert_eq!(damaged(0), Err(Corrupt::Magic));
    assert_eq!(damaged(5), Err(Corrupt::Check)); // publisher id
    assert_eq!(damaged(12), Err(Corrupt::Check)); // sequence number
    assert_eq!(damaged(20), Err(Corrupt::Check)); // send time
    assert_eq!(damaged(26), Err(Corrupt::LengthField));
    assert_eq!(damaged(30), Err(Corrupt::Check)); // the check itself
    assert_eq!(damaged(32), Err(Corrupt::Padding));
    assert_eq!(damaged(63), Err(Corrupt::Padding));
    assert_eq!(decode_payload(&good[..63], 64), Err(Corrupt::Size));
    assert_eq!(decode_payload(&good, 65), Err(Corrupt::Size));
    assert_eq!(decode_payload(&[], 64), Err(Corrupt::Size));
    // Another message's padding under a valid header: padding depends on the sequence number.
    let mut spliced = payload(3, 43, 64);
    spliced[..32].copy_from_slice(&good[..32]);
    assert_eq!(decode_payload(&spliced, 64), Err(Corrupt::Padding));
}

#[test]
fn in_order_stream_is_clean() {
    let (arrivals, s) = run_seq(&[0, 1, 2, 3, 4], 5);
    assert!(arrivals.iter().all(|a| *a == Arrival::InOrder));
    assert_eq!(
        s,
        Summary {
            received: 5,
            unique: 5,
            ..Summary::default()
        }
    );
    for qos in 0..=2 {
        assert!(s.failures(qos).is_empty());
    }
}

#[test]
fn loss_is_counted_and_fails_only_at_qos_1_and_2() {
    let (arrivals, s) = run_seq(&[0, 1, 3, 4], 6); // 2 and 5 never arrive
    assert_eq!(arrivals[2], Arrival::Gap);
    assert_eq!((s.lost, s.reorders, s.duplicates), (2, 0, 0));
    assert!(s.failures(0).is_empty(), "loss is allowed at QoS 0");
    assert_eq!(s.failures(1), vec!["2 lost at QoS 1".to_string()]);
    assert_eq!(s.failures(2), vec!["2 lost at QoS 2".to_string()]);
    // Nothing at all received: everything lost.
    let (_, s) = run_seq(&[], 3);
    assert_eq!(s.lost, 3);
}

#[test]
fn duplicate_is_counted_and_fails_only_at_qos_2() {
    let (arrivals, s) = run_seq(&[0, 1, 1, 2, 0], 3);
    assert_eq!(arrivals[2], Arrival::Duplicate);
    assert_eq!(arrivals[4], Arrival::Duplicate);
    assert_eq!((s.received, s.unique, s.duplicates), (5, 3, 2));
    assert_eq!((s.lost, s.reorders), (0, 0), "a duplicate is not a reorder");
    assert!(s.failures(0).is_empty());
    assert!(s.failures(1).is_empty(), "QoS 1 may duplicate");
    assert_eq!(s.failures(2), vec!["2 duplicates at QoS 2".to_string()]);
}

#[test]
fn reorder_is_counted_and_always_fails() {
    let (arrivals, s) = run_seq(&[0, 2, 1, 3], 4);
    assert_eq!(
        arrivals,
        vec![
            Arrival::InOrder,
            Arrival::Gap,
            Arrival::Late,
            Arrival::InOrder
        ]
    );
    assert_eq!((s.lost, s.reorders, s.duplicates), (0, 1, 0));
    for qos in 0..=2 {
        assert_eq!(s.failures(qos), vec!["1 reordered".to_string()]);
    }
    // Far behind: every late one counts.
    let (_, s) = run_seq(&[5, 0, 1, 2, 3, 4], 6);
    assert_eq!((s.reorders, s.lost), (5, 0));
}

#[test]
fn publishers_are_tracked_separately() {
    // Interleaving two publishers is not a reorder; a reorder within one is.
    let mut t = Tracker::new(2, 64);
    for (p, s) in [(0, 0), (1, 0), (1, 1), (0, 1), (1, 2), (0, 2)] {
        assert_ne!(t.record(p, s), Arrival::Late);
    }
    assert_eq!(t.record(1, 4), Arrival::Gap);
    assert_eq!(t.record(1, 3), Arrival::Late);
    let s = t.summary(&[3, 5]);
    assert_eq!((s.unique, s.lost, s.reorders), (8, 0, 1));
    // Publisher 1 claims to have sent only 4: its message 4 was never sent.
    let s = t.summary(&[3, 4]);
    assert_eq!(s.unsent, 1);
    assert!(!s.failures(0).is_empty());
}

#[test]
fn corrupt_payloads_fail_at_every_qos() {
    let mut t = Tracker::new(2, 64);
    assert_eq!(
        t.record_payload(&payload(0, 0, 64)).0,
        Arrival::InOrder,
        "a good payload"
    );
    let mut bad = payload(0, 1, 64);
    bad[40] ^= 0xff;
    assert_eq!(t.record_payload(&bad).0, Arrival::Corrupt(Corrupt::Padding));
    assert_eq!(
        t.record_payload(&payload(5, 0, 64)).0,
        Arrival::Corrupt(Corrupt::UnknownPublisher)
    );
    assert_eq!(
        t.record(1, accounting::MAX_SEQ),
        Arrival::Corrupt(Corrupt::SeqOutOfRange)
    );
    assert_eq!(
        t.record_payload(&payload(1, 0, 100)).0,
        Arrival::Corrupt(Corrupt::Size)
    );
    assert_eq!(t.first_corrupt(), Some(Corrupt::Padding));
    let s = t.summary(&[2, 0]);
    assert_eq!((s.received, s.unique, s.corrupt, s.lost), (5, 1, 4, 1));
    for qos in 0..=2 {
        assert!(s.failures(qos).contains(&"4 corrupt payloads".to_string()));
    }
}

#[test]
fn large_sequence_numbers_stay_cheap() {
    let mut t = Tracker::new(1, 64);
    for seq in (0..200_000u64).rev().step_by(1000) {
        t.record(0, seq);
    }
    let s = t.summary(&[200_000]);
    assert_eq!(s.unique, 200);
    assert_eq!(s.lost, 200_000 - 200);
    assert_eq!(s.reorders, 199);
}

// ---------------------------------------------------------------- the binary, real broker

/// Runs `mqtt5-bench` with `args` against port `port`, bounded by 30 s; returns (exit code,
/// the JSON line, stderr).
fn bench(port: u16, args: &[&str]) -> (i32, Value, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_mqtt5-bench"))
        .arg("--port")
        .arg(port.to_string())
        .args(["--timeout", "20"])
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start mqtt5-bench");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if child.try_wait().expect("wait").is_some() {
            break;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("mqtt5-bench {args:?} did not finish within 30 s");
        }
        thread::sleep(Duration::from_millis(10));
    }
    let out = child.wait_with_output().expect("collect output");
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    let line = stdout
        .lines()
        .find(|l| l.starts_with('{'))
        .unwrap_or_else(|| panic!("no JSON line; stdout:\n{stdout}\nstderr:\n{stderr}"));
    let v: Value = serde_json::from_str(line).expect("valid JSON");
    (out.status.code().unwrap_or(-1), v, stderr)
}

fn broker() -> Broker {
    Broker::start(&["--allow-anonymous", "--max-clients", "200"])
}

fn n(v: &Value, key: &str) -> u64 {
    v[key]
        .as_u64()
        .unwrap_or_else(|| panic!("{key} missing or not a count in {v}"))
}

#[test]
fn clean_fan_in_passes_with_exact_counts() {
    let b = broker();
    for (qos, protocol) in [("0", "5"), ("1", "5"), ("2", "3.1.1")] {
        let (code, v, err) = bench(
            b.mqtt.port(),
            &[
                "--scenario",
                "fan-in",
                "--publishers",
                "3",
                "--messages",
                "300",
                "--qos",
                qos,
                "--protocol",
                protocol,
            ],
        );
        assert_eq!(code, 0, "QoS {qos} {protocol}: {v}\n{err}");
        assert_eq!(v["status"], "ok");
        assert_eq!(n(&v, "sent"), 900);
        assert_eq!(n(&v, "expected"), 900);
        assert_eq!(n(&v, "unique"), 900);
        for k in ["lost", "duplicates", "reordered", "corrupt", "unsent"] {
            assert_eq!(n(&v, k), 0, "{k} in {v}");
        }
        assert!(v["delivered_per_s"].as_f64().unwrap_or(0.0) > 0.0);
        assert!(v["gen_cpu_pct"].is_number(), "generator CPU reported: {v}");
        assert!(err.contains("ok"), "human summary on stderr: {err}");
    }
}

/// `--sub-port`: publishers on one broker, the subscriber on another that the first bridges to
/// (the bridge benchmark's layout); with no bridge between them nothing arrives, so the run fails
/// with every message lost: the subscriber really is where `--sub-port` says.
#[test]
fn sub_port_puts_the_subscriber_on_a_second_broker_behind_a_bridge() {
    let remote = broker();
    let dir = tempfile::tempdir().expect("temp dir");
    let conf = dir.path().join("bridge.conf");
    std::fs::write(
        &conf,
        format!(
            "connection t\naddress {}\ntopic bench/# out 1\nbridge_protocol_version mqttv50\n",
            remote.mqtt
        ),
    )
    .expect("write config");
    let bridging = Broker::start(&["--allow-anonymous", "--config", conf.to_str().unwrap()]);
    assert!(
        bridging.wait_for_log("bridge t: connected to", Duration::from_secs(10)),
        "{}",
        bridging.log()
    );
    let sub = remote.mqtt.port().to_string();
    let args = [
        "--scenario",
        "fan-in",
        "--publishers",
        "3",
        "--messages",
        "200",
        "--qos",
        "1",
        "--drain-timeout",
        "1",
        "--sub-port",
        &sub,
    ];
    let (code, v, err) = bench(bridging.mqtt.port(), &args);
    assert_eq!(code, 0, "{v}\n{err}");
    assert_eq!(n(&v, "sub_port"), u64::from(remote.mqtt.port()));
    assert_eq!(n(&v, "unique"), 600, "{v}");
    assert_eq!(n(&v, "lost"), 0, "{v}");

    let alone = broker();
    let (code, v, err) = bench(alone.mqtt.port(), &args);
    assert_eq!(code, 1, "{v}\n{err}");
    assert_eq!(v["status"], "FAILED");
    assert_eq!(n(&v, "unique"), 0, "{v}");
    assert_eq!(n(&v, "lost"), 600, "{v}");
}

#[test]
fn fan_out_counts_every_subscriber() {
    let b = broker();
    let pid = b.pid().to_string();
    let (code, v, err) = bench(
        b.mqtt.port(),
        &[
            "--scenario",
            "fan-out",
            "--subscribers",
            "4",
            "--messages",
            "250",
            "--qos",
            "1",
            "--payload",
            "16384",
            "--broker-pid",
            &pid,
        ],
    );
    assert_eq!(code, 0, "{v}\n{err}");
    assert_eq!(
        (n(&v, "sent"), n(&v, "expected"), n(&v, "unique")),
        (250, 1000, 1000)
    );
    assert_eq!(n(&v, "payload"), 16384);
    assert!(n(&v, "broker_rss_kib") > 0, "broker RSS from /proc: {v}");
    assert!(v["broker_cpu_pct"].is_number(), "{v}");
}

/// Runs a small fan-in with `fault` injected into subscriber 0's stream.
fn injected(b: &Broker, fault: &str, qos: &str) -> (i32, Value, String) {
    bench(
        b.mqtt.port(),
        &[
            "--scenario",
            "fan-in",
            "--publishers",
            "2",
            "--messages",
            "50",
            "--qos",
            qos,
            "--inject",
            fault,
            "--drain-timeout",
            "0.5",
        ],
    )
}

#[test]
fn injected_faults_are_reported_as_failed() {
    let b = broker();
    // (fault, qos, counter that must be 1)
    for (fault, qos, key) in [
        ("drop", "1", "lost"),
        ("dup", "2", "duplicates"),
        ("reorder", "0", "reordered"),
        ("corrupt", "0", "corrupt"),
    ] {
        let (code, v, err) = injected(&b, fault, qos);
        assert_eq!(code, 1, "{fault} at QoS {qos} must fail: {v}\n{err}");
        assert_eq!(v["status"], "FAILED", "{v}");
        assert_eq!(n(&v, key), 1, "{fault}: {v}");
        assert!(
            !v["failures"].as_array().is_none_or(|f| f.is_empty()),
            "failures listed: {v}"
        );
        assert!(err.contains("FAILED"), "{err}");
    }
}

#[test]
fn tolerated_faults_are_counted_but_pass() {
    let b = broker();
    // Loss at QoS 0 and a duplicate at QoS 1 are allowed by the protocol: counted, not failed.
    for (fault, qos, key) in [("drop", "0", "lost"), ("dup", "1", "duplicates")] {
        let (code, v, err) = injected(&b, fault, qos);
        assert_eq!(code, 0, "{fault} at QoS {qos} passes: {v}\n{err}");
        assert_eq!(n(&v, key), 1, "{v}");
    }
}

#[test]
fn latency_and_roundtrip_report_percentiles() {
    let b = broker();
    let (code, v, err) = bench(
        b.mqtt.port(),
        &[
            "--scenario",
            "latency",
            "--rate",
            "1000",
            "--duration",
            "0.3",
        ],
    );
    assert_eq!(code, 0, "{v}\n{err}");
    assert_eq!(n(&v, "sent"), 300);
    let lat = &v["latency_us"];
    assert_eq!(lat["count"].as_u64(), Some(300), "{v}");
    let (p50, p99, max) = (n(lat, "p50"), n(lat, "p99"), n(lat, "max"));
    assert!(p50 <= p99 && p99 <= max, "{lat}");
    // Paced: 300 messages at 1,000/s take about 0.3 s, not a burst.
    assert!(v["publish_s"].as_f64().unwrap_or(0.0) >= 0.25, "{v}");

    let (code, v, err) = bench(
        b.mqtt.port(),
        &[
            "--scenario",
            "roundtrip",
            "--window",
            "4",
            "--messages",
            "500",
        ],
    );
    assert_eq!(code, 0, "{v}\n{err}");
    assert_eq!(
        (n(&v, "qos"), n(&v, "window"), n(&v, "unique")),
        (1, 4, 500)
    );
    assert!(v["latency_us"]["p99"].is_number(), "{v}");
}

#[test]
fn connections_scenario_probes_every_client() {
    let b = broker();
    let pid = b.pid().to_string();
    let (code, v, err) = bench(
        b.mqtt.port(),
        &[
            "--scenario",
            "connections",
            "--clients",
            "60",
            "--broker-pid",
            &pid,
        ],
    );
    assert_eq!(code, 0, "{v}\n{err}");
    assert_eq!((n(&v, "connected"), n(&v, "probes_received")), (60, 60));
    assert!(v["connections_per_s"].as_f64().unwrap_or(0.0) > 0.0, "{v}");
    assert!(v["rss_per_conn_kib"].is_number(), "{v}");
    assert!(n(&v, "broker_rss_idle_kib") > 0, "{v}");

    // More clients than the broker admits: reported as FAILED, not as a fast run.
    let small = Broker::start(&["--allow-anonymous", "--max-clients", "5"]);
    let (code, v, err) = bench(
        small.mqtt.port(),
        &[
            "--scenario",
            "connections",
            "--clients",
            "8",
            "--connectors",
            "1",
        ],
    );
    assert_eq!(code, 1, "{v}\n{err}");
    assert_eq!(n(&v, "connected"), 5, "{v}");
}

#[test]
fn usage_errors_exit_2() {
    let out = Command::new(env!("CARGO_BIN_EXE_mqtt5-bench"))
        .args(["--scenario", "fan-in"])
        .output()
        .expect("run mqtt5-bench");
    assert_eq!(out.status.code(), Some(2), "--port is required");
    // Nothing listening: a setup error (2), not a pass.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").port()
    };
    let (code, v, _) = bench(port, &["--scenario", "fan-in", "--messages", "10"]);
    assert_eq!(code, 2, "{v}");
    assert_eq!(v["status"], "ERROR");
}

// ---------------------------------------------------------------- transports (issue 14)

/// A throwaway CA and server certificate for 127.0.0.1, made by the broker's own `tls init`
/// in a temporary directory: (directory, CA file, certificate, key).
fn tls_files() -> (tempfile::TempDir, String, String, String) {
    let dir = tempfile::tempdir().expect("temp dir");
    let out = Command::new(env!("CARGO_BIN_EXE_mqtt5-broker"))
        .args(["tls", "init", "--ip", "127.0.0.1", "--dir"])
        .arg(dir.path())
        .output()
        .expect("run tls init");
    assert!(out.status.success(), "tls init: {out:?}");
    let file = |name: &str| dir.path().join(name).to_string_lossy().into_owned();
    let (ca, cert, key) = (file("ca.crt"), file("server.crt"), file("server.key"));
    (dir, ca, cert, key)
}

/// A broker with a TLS listener on 127.0.0.1:0 besides its plain one.
fn tls_broker(cert: &str, key: &str) -> (Broker, u16) {
    let b = Broker::start(&[
        "--allow-anonymous",
        "--max-clients",
        "200",
        "--tls-listen",
        "127.0.0.1:0",
        "--certfile",
        cert,
        "--keyfile",
        key,
    ]);
    let port = b
        .tls
        .unwrap_or_else(|| panic!("no TLS listening line:\n{}", b.log()))
        .port();
    (b, port)
}

#[test]
fn tls_runs_check_every_message_over_the_tls_listener() {
    let (_dir, ca, cert, key) = tls_files();
    let (b, port) = tls_broker(&cert, &key);
    let tls = ["--tls", "--cafile", ca.as_str()];
    for (scenario, qos) in [("fan-in", "1"), ("fan-out", "2")] {
        let mut args = vec!["--scenario", scenario, "--messages", "300", "--qos", qos];
        args.extend_from_slice(&tls);
        let (code, v, err) = bench(port, &args);
        assert_eq!(
            code,
            0,
            "{scenario} QoS {qos} over TLS: {v}\n{err}\n{}",
            b.log()
        );
        assert_eq!(v["transport"], "tls");
        // 10 publishers × 300 to one subscriber, or 300 to 10 subscribers.
        assert_eq!(n(&v, "unique"), 3000, "{v}");
        for k in ["lost", "duplicates", "reordered", "corrupt"] {
            assert_eq!(n(&v, k), 0, "{k} in {v}");
        }
    }
    // The accounting still runs under TLS: a dropped message fails the run.
    let mut args = vec!["--scenario", "fan-in", "--messages", "50", "--qos", "1"];
    args.extend_from_slice(&["--inject", "drop"]);
    args.extend_from_slice(&tls);
    let (code, v, _) = bench(port, &args);
    assert_eq!((code, v["status"].as_str()), (1, Some("FAILED")), "{v}");
    // Connections: every client makes a full handshake and gets the probe.
    let pid = b.pid().to_string();
    let mut args = vec![
        "--scenario",
        "connections",
        "--clients",
        "40",
        "--broker-pid",
        pid.as_str(),
    ];
    args.extend_from_slice(&tls);
    let (code, v, err) = bench(port, &args);
    assert_eq!(code, 0, "connections over TLS: {v}\n{err}");
    assert_eq!(
        (n(&v, "connected"), n(&v, "probes_received")),
        (40, 40),
        "{v}"
    );
    assert!(v["rss_per_conn_kib"].is_number(), "{v}");
}

#[test]
fn tls_refuses_a_broker_whose_certificate_the_cafile_does_not_sign() {
    let (_dir, _ca, cert, key) = tls_files();
    let (_other_dir, other_ca, _, _) = tls_files();
    let (b, port) = tls_broker(&cert, &key);
    let (code, v, err) = bench(
        port,
        &[
            "--scenario",
            "fan-in",
            "--messages",
            "10",
            "--tls",
            "--cafile",
            other_ca.as_str(),
        ],
    );
    assert_eq!(code, 2, "{v}\n{err}");
    assert_eq!(v["status"], "ERROR");
    assert!(
        v["errors"].to_string().contains("certificate"),
        "the reason is named: {v}"
    );
    // Plain MQTT on the TLS port is not mistaken for a broker either.
    let (code, _, _) = bench(port, &["--scenario", "fan-in", "--messages", "10"]);
    assert_ne!(code, 0, "{}", b.log());
}

#[test]
fn tls_flag_needs_a_cafile_and_a_readable_one() {
    let (code, _, _) = run_usage(&["--port", "1", "--scenario", "fan-in", "--tls"]);
    assert_eq!(code, 2);
    let (code, _, err) = run_usage(&[
        "--port",
        "1",
        "--scenario",
        "fan-in",
        "--tls",
        "--cafile",
        "/nonexistent/ca.crt",
    ]);
    assert_eq!(code, 2);
    assert!(err.contains("--cafile"), "{err}");
}

/// Runs `mqtt5-bench` with `args` that must be refused before connecting: (code, stdout, stderr).
fn run_usage(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_mqtt5-bench"))
        .args(args)
        .output()
        .expect("run mqtt5-bench");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// What the WebSocket bridge saw.
#[derive(Default)]
struct BridgeSeen {
    /// Handshakes on path /mqtt offering the `mqtt` subprotocol.
    good_handshakes: std::sync::atomic::AtomicUsize,
    /// Anything else: another path, no `mqtt` subprotocol, a text frame.
    bad: std::sync::atomic::AtomicUsize,
    binary_frames: std::sync::atomic::AtomicUsize,
}

/// A WebSocket server (tungstenite, on 127.0.0.1:0) that carries each connection's binary
/// frames to and from the broker's plain MQTT port: a real WebSocket peer for `--ws` while the
/// broker has no WebSocket listener of its own. Serves at most `max_conns` connections, each
/// until either side closes or 60 s pass. Returns its port and what it saw.
fn ws_bridge(broker: std::net::SocketAddr, max_conns: usize) -> (u16, std::sync::Arc<BridgeSeen>) {
    use std::io::{ErrorKind, Read, Write};
    use std::sync::atomic::Ordering;
    use tungstenite::handshake::server::{Request, Response};
    use tungstenite::Message;

    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind bridge");
    let port = listener.local_addr().expect("addr").port();
    let seen = std::sync::Arc::new(BridgeSeen::default());
    let seen2 = seen.clone();
    thread::spawn(move || {
        for tcp in listener.incoming().take(max_conns) {
            let Ok(tcp) = tcp else { continue };
            let seen = seen2.clone();
            thread::spawn(move || {
                let _ = tcp.set_read_timeout(Some(Duration::from_millis(5)));
                let check = |req: &Request, mut resp: Response| {
                    let offers_mqtt = req
                        .headers()
                        .get("Sec-WebSocket-Protocol")
                        .and_then(|v| v.to_str().ok())
                        .is_some_and(|v| v.split(',').any(|p| p.trim() == "mqtt"));
                    if req.uri().path() == "/mqtt" && offers_mqtt {
                        seen.good_handshakes.fetch_add(1, Ordering::Relaxed);
                        resp.headers_mut()
                            .insert("Sec-WebSocket-Protocol", "mqtt".parse().unwrap());
                    } else {
                        seen.bad.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(resp)
                };
                // The handshake may meet the short read timeout: retry until it is done.
                let mut round = tungstenite::accept_hdr(tcp, check);
                let deadline = Instant::now() + Duration::from_secs(60);
                let mut ws = loop {
                    match round {
                        Ok(ws) => break ws,
                        Err(tungstenite::HandshakeError::Interrupted(mid))
                            if Instant::now() < deadline =>
                        {
                            round = mid.handshake()
                        }
                        Err(_) => return,
                    }
                };
                let Ok(mut up) = std::net::TcpStream::connect(broker) else {
                    return;
                };
                let _ = up.set_read_timeout(Some(Duration::from_millis(5)));
                let mut buf = vec![0u8; 64 * 1024];
                while Instant::now() < deadline {
                    match ws.read() {
                        Ok(Message::Binary(b)) => {
                            seen.binary_frames.fetch_add(1, Ordering::Relaxed);
                            if up.write_all(&b).is_err() {
                                break;
                            }
                        }
                        Ok(Message::Text(_)) => {
                            seen.bad.fetch_add(1, Ordering::Relaxed);
                            break;
                        }
                        Ok(Message::Close(_)) => break,
                        Ok(_) => {}
                        Err(tungstenite::Error::Io(e))
                            if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                        Err(_) => break,
                    }
                    match up.read(&mut buf) {
                        Ok(0) => break,
                        Ok(n) => {
                            if ws.send(Message::binary(buf[..n].to_vec())).is_err() {
                                break;
                            }
                        }
                        Err(e)
                            if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                        Err(_) => break,
                    }
                }
                let _ = ws.close(None);
                let _ = ws.flush();
            });
        }
    });
    (port, seen)
}

#[test]
fn ws_runs_speak_mqtt_in_binary_frames_on_path_mqtt() {
    use std::sync::atomic::Ordering;
    let b = broker();
    // 10 publishers and 1 subscriber.
    let (port, seen) = ws_bridge(b.mqtt, 11);
    let (code, v, err) = bench(
        port,
        &[
            "--scenario",
            "fan-in",
            "--messages",
            "200",
            "--qos",
            "1",
            "--ws",
        ],
    );
    assert_eq!(code, 0, "fan-in over ws: {v}\n{err}");
    assert_eq!(v["transport"], "ws");
    assert_eq!(n(&v, "unique"), 2000, "{v}");
    assert_eq!(seen.good_handshakes.load(Ordering::Relaxed), 11);
    assert_eq!(seen.bad.load(Ordering::Relaxed), 0);
    // CONNECT, SUBSCRIBE and the publishers' batches at least.
    assert!(seen.binary_frames.load(Ordering::Relaxed) >= 22);
}
