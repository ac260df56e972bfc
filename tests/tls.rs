//! MQTT over TLS (issue 14), with real clients and real handshakes: Debian's `mosquitto_pub` /
//! `mosquitto_sub` (OpenSSL) in both protocol versions, rumqttc (rustls 0.22, an independent
//! implementation) for the write path under load, and raw sockets for what no client does
//! (plaintext on the TLS port, a handshake that never starts). Every certificate is made here
//! with rcgen, in a temporary directory: a CA, a server certificate for 127.0.0.1 and
//! localhost, a client certificate (CN `sensor-1`), one signed by another CA (untrusted), an
//! expired one, and a second CA the clients may wrongly trust. Also: certificate reload on
//! SIGHUP (a new CA's certificate for new clients, open connections kept, a bad file kept
//! out), each client's transport and certificate CN in the API, `/metrics` and `$SYS`, and the
//! bounded issue's hostile clients (idle sockets and stalled handshakes, a slowloris CONNECT,
//! a QoS 1 flooder that never reads) on the TLS listener.

mod common;

use common::{connect_raw, packet, send, Broker};
use rcgen::{
    BasicConstraints, Certificate, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};
use std::io::Read;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::thread;
use std::time::{Duration, Instant};

/// A CA: its certificate and key.
struct Ca {
    cert: Certificate,
    key: KeyPair,
}

fn ca(name: &str) -> Ca {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    Ca {
        cert: params.self_signed(&key).unwrap(),
        key,
    }
}

/// A leaf certificate signed by `ca`: (certificate PEM, key PEM).
fn leaf(ca: &Ca, cn: &str, sans: &[&str], server: bool, expired: bool) -> (String, String) {
    let key = KeyPair::generate().unwrap();
    let sans: Vec<String> = sans.iter().map(|s| s.to_string()).collect();
    let mut params = CertificateParams::new(sans).unwrap();
    params.distinguished_name.push(DnType::CommonName, cn);
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = vec![if server {
        ExtendedKeyUsagePurpose::ServerAuth
    } else {
        ExtendedKeyUsagePurpose::ClientAuth
    }];
    if expired {
        params.not_before = rcgen::date_time_ymd(2020, 1, 1);
        params.not_after = rcgen::date_time_ymd(2021, 1, 1);
    }
    let cert = params.signed_by(&key, &ca.cert, &ca.key).unwrap();
    (cert.pem(), key.serialize_pem())
}

/// Every file the tests use, in a temporary directory.
struct Pki {
    _dir: tempfile::TempDir,
    ca: PathBuf,
    other_ca: PathBuf,
    server_cert: PathBuf,
    server_key: PathBuf,
    client_cert: PathBuf,
    client_key: PathBuf,
    untrusted_cert: PathBuf,
    untrusted_key: PathBuf,
    expired_cert: PathBuf,
    expired_key: PathBuf,
}

fn pki() -> Pki {
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, text: &str| {
        let p = dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        p
    };
    let root = ca("mqtt5-broker test CA");
    let other = ca("another CA");
    let (sc, sk) = leaf(&root, "localhost", &["localhost", "127.0.0.1"], true, false);
    let (cc, ck) = leaf(&root, "sensor-1", &[], false, false);
    let (uc, uk) = leaf(&other, "intruder", &[], false, false);
    let (ec, ek) = leaf(&root, "old-sensor", &[], false, true);
    Pki {
        ca: write("ca.pem", &root.cert.pem()),
        other_ca: write("other-ca.pem", &other.cert.pem()),
        server_cert: write("server.pem", &sc),
        server_key: write("server.key", &sk),
        client_cert: write("client.pem", &cc),
        client_key: write("client.key", &ck),
        untrusted_cert: write("untrusted.pem", &uc),
        untrusted_key: write("untrusted.key", &uk),
        expired_cert: write("expired.pem", &ec),
        expired_key: write("expired.key", &ek),
        _dir: dir,
    }
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// A broker with a TLS listener on 127.0.0.1:0 and `extra` arguments.
fn tls_broker(pki: &Pki, extra: &[&str]) -> Broker {
    let mut args = vec![
        "--tls-listen",
        "127.0.0.1:0",
        "--certfile",
        s(&pki.server_cert),
        "--keyfile",
        s(&pki.server_key),
    ];
    args.extend_from_slice(extra);
    let b = Broker::start(&args);
    assert!(b.tls.is_some(), "no TLS listening line:\n{}", b.log());
    b
}

fn tls_addr(b: &Broker) -> SocketAddr {
    b.tls.expect("TLS listener")
}

/// Runs a mosquitto client to completion (bounded by its own `-W` or by 20 s).
fn mosquitto(bin: &str, args: &[&str]) -> Output {
    let mut child = Command::new(bin)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {bin} (Debian's mosquitto-clients): {e}"));
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if child.try_wait().unwrap().is_some() {
            return child.wait_with_output().unwrap();
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            return child.wait_with_output().unwrap();
        }
        thread::sleep(Duration::from_millis(20));
    }
}

fn text(o: &Output) -> String {
    format!(
        "status {:?}\nstdout: {}\nstderr: {}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// `mosquitto_pub` of one retained QoS 1 message.
fn publish(addr: SocketAddr, version: &str, topic: &str, msg: &str, tls: &[&str]) -> Output {
    let port = addr.port().to_string();
    let mut args = vec![
        "-h",
        "127.0.0.1",
        "-p",
        &port,
        "-V",
        version,
        "-q",
        "1",
        "-r",
        "-t",
        topic,
        "-m",
        msg,
        "-i",
    ];
    let id = format!("pub-{}", topic.replace('/', "-"));
    args.push(&id);
    args.extend_from_slice(tls);
    mosquitto("mosquitto_pub", &args)
}

/// `mosquitto_sub` for one (retained) message on `topic`, within 5 s.
fn receive(addr: SocketAddr, version: &str, topic: &str, tls: &[&str]) -> Output {
    let port = addr.port().to_string();
    let mut args = vec![
        "-h",
        "127.0.0.1",
        "-p",
        &port,
        "-V",
        version,
        "-t",
        topic,
        "-C",
        "1",
        "-W",
        "5",
    ];
    args.extend_from_slice(tls);
    mosquitto("mosquitto_sub", &args)
}

/// Issue 14: mosquitto_pub/mosquitto_sub with `--cafile` on the TLS listener, MQTT 5.0 and
/// 3.1.1, each way with a plain-TCP client: a message published over TLS is received over
/// TCP and the other way round (retained, so no subscription race).
#[test]
fn mosquitto_clients_round_trip_over_tls_and_tcp_in_both_versions() {
    let pki = pki();
    let b = tls_broker(&pki, &["--allow-anonymous"]);
    let ca = ["--cafile", s(&pki.ca)];
    for version in ["mqttv5", "mqttv311"] {
        let t1 = format!("tls/{version}/from-tls");
        let out = publish(tls_addr(&b), version, &t1, "over tls", &ca);
        assert!(out.status.success(), "{}\n{}", text(&out), b.log());
        let out = receive(b.mqtt, version, &t1, &[]);
        assert_eq!(
            String::from_utf8_lossy(&out.stdout).trim(),
            "over tls",
            "{}",
            text(&out)
        );

        let t2 = format!("tls/{version}/from-tcp");
        let out = publish(b.mqtt, version, &t2, "over tcp", &[]);
        assert!(out.status.success(), "{}", text(&out));
        let out = receive(tls_addr(&b), version, &t2, &ca);
        assert_eq!(
            String::from_utf8_lossy(&out.stdout).trim(),
            "over tcp",
            "{}",
            text(&out)
        );
    }
    assert!(b.log().contains("(tls)"));
}

/// `--require-certificate` with `--cafile`: a client certificate signed by the CA is let in;
/// no certificate, one signed by another CA, or an expired one fails the handshake.
#[test]
fn required_client_certificate_admits_only_valid_certificates_from_the_ca() {
    let pki = pki();
    let b = tls_broker(
        &pki,
        &[
            "--allow-anonymous",
            "--cafile",
            s(&pki.ca),
            "--require-certificate",
        ],
    );
    let addr = tls_addr(&b);
    let ca = s(&pki.ca);
    let ok = publish(
        addr,
        "mqttv311",
        "req/ok",
        "x",
        &[
            "--cafile",
            ca,
            "--cert",
            s(&pki.client_cert),
            "--key",
            s(&pki.client_key),
        ],
    );
    assert!(ok.status.success(), "{}\n{}", text(&ok), b.log());

    let none = publish(addr, "mqttv311", "req/none", "x", &["--cafile", ca]);
    assert!(!none.status.success(), "no certificate: {}", text(&none));
    let untrusted = publish(
        addr,
        "mqttv5",
        "req/untrusted",
        "x",
        &[
            "--cafile",
            ca,
            "--cert",
            s(&pki.untrusted_cert),
            "--key",
            s(&pki.untrusted_key),
        ],
    );
    assert!(
        !untrusted.status.success(),
        "untrusted: {}",
        text(&untrusted)
    );
    let expired = publish(
        addr,
        "mqttv5",
        "req/expired",
        "x",
        &[
            "--cafile",
            ca,
            "--cert",
            s(&pki.expired_cert),
            "--key",
            s(&pki.expired_key),
        ],
    );
    assert!(!expired.status.success(), "expired: {}", text(&expired));
    // Only the valid one published: the refused ones' retained messages do not exist.
    let out = receive(b.mqtt, "mqttv5", "req/#", &[]);
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "x");
    let out = receive(b.mqtt, "mqttv5", "req/untrusted", &[]);
    assert!(out.stdout.is_empty(), "{}", text(&out));
    assert!(b.wait_for_log("TLS connection from", Duration::from_secs(5)));
}

/// A client that trusts another CA refuses our certificate: nothing gets through.
#[test]
fn client_trusting_another_ca_fails_the_handshake() {
    let pki = pki();
    let b = tls_broker(&pki, &["--allow-anonymous"]);
    let out = publish(
        tls_addr(&b),
        "mqttv5",
        "wrong/ca",
        "x",
        &["--cafile", s(&pki.other_ca)],
    );
    assert!(!out.status.success(), "{}", text(&out));
    let out = receive(b.mqtt, "mqttv5", "wrong/ca", &[]);
    assert!(out.stdout.is_empty(), "{}", text(&out));
}

/// Plaintext MQTT on the TLS port gets no CONNACK (at most a TLS alert) and is closed; a
/// socket that never starts its handshake is closed by `connect_timeout`, and counted as
/// pending meanwhile.
#[test]
fn plaintext_and_stalled_handshakes_on_the_tls_port_are_closed() {
    let pki = pki();
    let b = tls_broker(&pki, &["--allow-anonymous", "--connect-timeout", "1"]);
    let addr = tls_addr(&b);

    let plain = connect_raw(addr);
    send(&plain, &packet::connect_v311("plain-on-tls", 30, true));
    let got = read_to_end_within(&plain, Duration::from_secs(5));
    assert!(
        got.first() != Some(&0x20),
        "a CONNACK came back over plaintext: {got:02x?}"
    );
    // A TLS alert record (content type 21) at most.
    assert!(got.is_empty() || got[0] == 0x15, "{got:02x?}");

    let started = Instant::now();
    let stalled = connect_raw(addr);
    let got = read_to_end_within(&stalled, Duration::from_secs(5));
    let took = started.elapsed();
    assert!(got.is_empty(), "{got:02x?}");
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(4),
        "closed after {took:?}, connect_timeout is 1 s"
    );
    assert!(b.wait_for_log("no CONNECT within", Duration::from_secs(5)));
}

/// Reads until the peer closes (or resets) the socket; panics if it is still open at `wait`.
fn read_to_end_within(s: &std::net::TcpStream, wait: Duration) -> Vec<u8> {
    s.set_read_timeout(Some(wait)).unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    loop {
        match (&*s).read(&mut buf) {
            Ok(0) => return got,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                panic!("still open after {wait:?} (got {got:02x?})")
            }
            Err(_) => return got,
        }
    }
}

/// `use_identity_as_username`: the certificate's CN is the username, so an ACL rule with `%u`
/// lets `sensor-1` publish under `devices/sensor-1/` only; a TLS client without a certificate
/// gets CONNACK 0x87 Not authorized (5.0) / 0x05 (3.1.1), whatever username it sends.
#[test]
fn identity_as_username_feeds_acl_percent_u_and_refuses_clients_without_certificate() {
    let pki = pki();
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("broker.db");
    for (access, pattern) in [("readwrite", "devices/%u/#"), ("read", "#")] {
        let st = Command::new(env!("CARGO_BIN_EXE_mqtt5-broker"))
            .args(["acl", "add", access, pattern, "--db"])
            .arg(&db)
            .output()
            .unwrap();
        assert!(st.status.success(), "{}", text(&st));
    }
    let b = Broker::start_with_db(
        &db,
        &[
            "--allow-anonymous",
            "--tls-listen",
            "127.0.0.1:0",
            "--certfile",
            s(&pki.server_cert),
            "--keyfile",
            s(&pki.server_key),
            "--cafile",
            s(&pki.ca),
            "--use-identity-as-username",
        ],
    );
    let addr = tls_addr(&b);
    let ca = s(&pki.ca);
    let cert = [
        "--cafile",
        ca,
        "--cert",
        s(&pki.client_cert),
        "--key",
        s(&pki.client_key),
    ];
    let own = publish(addr, "mqttv5", "devices/sensor-1/temp", "21", &cert);
    assert!(own.status.success(), "{}\n{}", text(&own), b.log());
    // Not its own subtree: PUBACK 0x87, so nothing retained there.
    let _ = publish(addr, "mqttv5", "devices/sensor-2/temp", "99", &cert);
    let out = receive(b.mqtt, "mqttv5", "devices/sensor-1/temp", &[]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "21",
        "{}",
        text(&out)
    );
    let out = receive(b.mqtt, "mqttv5", "devices/sensor-2/temp", &[]);
    assert!(out.stdout.is_empty(), "{}", text(&out));
    assert!(b.log().contains("connected from"));

    for (version, code) in [("mqttv5", "0x87"), ("mqttv311", "0x05")] {
        let out = publish(
            addr,
            version,
            "devices/anon/x",
            "x",
            &["--cafile", ca, "-u", "sensor-1"],
        );
        assert!(!out.status.success(), "{}", text(&out));
        let said = text(&out).to_lowercase();
        assert!(said.contains("not authori"), "{version} ({code}): {said}");
    }
    assert!(b.wait_for_log("no client certificate", Duration::from_secs(5)));
}

/// The write path under partial writes: rumqttc over TLS (rustls 0.22) subscribes at QoS 1;
/// a plain-TCP rumqttc publisher sends a 200 KiB QoS 1 message and then 10,000 small ones
/// as fast as it can. The TLS subscriber gets every one, in order, intact: the outbox seals
/// and sends through socket-full waits (writer thread) without losing or reordering records.
#[test]
fn tls_subscriber_receives_a_large_message_and_a_10000_message_burst_intact() {
    use rumqttc::{Client, Event, MqttOptions, Packet, QoS, TlsConfiguration, Transport};
    let pki = pki();
    let b = tls_broker(&pki, &["--allow-anonymous", "--max-queued-messages", "0"]);
    let addr = tls_addr(&b);

    let mut sub_opts = MqttOptions::new("tls-sub", "127.0.0.1", addr.port());
    sub_opts.set_max_packet_size(1024 * 1024, 1024 * 1024);
    sub_opts.set_keep_alive(Duration::from_secs(30));
    sub_opts.set_transport(Transport::Tls(TlsConfiguration::Simple {
        ca: std::fs::read(&pki.ca).unwrap(),
        alpn: None,
        client_auth: None,
    }));
    let (sub, mut sub_conn) = Client::new(sub_opts, 100);
    sub.subscribe("load/#", QoS::AtLeastOnce).unwrap();
    const SMALL: usize = 10_000;
    let big: Vec<u8> = (0..200 * 1024).map(|i| (i % 251) as u8).collect();
    let expect_big = big.clone();
    let receiver = thread::spawn(move || {
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut subscribed = false;
        let mut big_ok = false;
        let mut next_small = 0usize;
        for event in sub_conn.iter() {
            assert!(Instant::now() < deadline, "timed out at {next_small}");
            match event {
                Ok(Event::Incoming(Packet::SubAck(_))) => subscribed = true,
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    if p.topic == "load/big" {
                        assert_eq!(&p.payload[..], &expect_big[..], "big payload differs");
                        big_ok = true;
                    } else {
                        let n: usize = std::str::from_utf8(&p.payload).unwrap().parse().unwrap();
                        assert_eq!(n, next_small, "out of order or lost");
                        next_small += 1;
                        if next_small == SMALL {
                            return (subscribed, big_ok, next_small);
                        }
                    }
                }
                Ok(_) => {}
                Err(e) => panic!("TLS subscriber: {e}"),
            }
        }
        (subscribed, big_ok, next_small)
    });
    // Publish once the subscription is in place: the broker's subscription count says so.
    let deadline = Instant::now() + Duration::from_secs(10);
    while common::api_status(b.web)["subscriptions"]
        .as_u64()
        .is_none_or(|n| n < 1)
    {
        assert!(Instant::now() < deadline, "no subscription");
        thread::sleep(Duration::from_millis(20));
    }

    let mut pub_opts = MqttOptions::new("tcp-pub", "127.0.0.1", b.mqtt.port());
    pub_opts.set_max_packet_size(1024 * 1024, 1024 * 1024);
    let (publisher, mut pub_conn) = Client::new(pub_opts, 1000);
    let pub_thread = thread::spawn(move || {
        for event in pub_conn.iter() {
            if event.is_err() {
                return;
            }
        }
    });
    publisher
        .publish("load/big", QoS::AtLeastOnce, false, big)
        .unwrap();
    for i in 0..SMALL {
        publisher
            .publish("load/small", QoS::AtLeastOnce, false, i.to_string())
            .unwrap();
    }
    let (subscribed, big_ok, got) = receiver.join().expect("receiver");
    assert!(
        subscribed && big_ok,
        "subscribed {subscribed}, big {big_ok}"
    );
    assert_eq!(got, SMALL);
    let _ = publisher.disconnect();
    let _ = pub_thread.join();
}

/// A TLS listener without certificate or key, with a key that is not the certificate's, with
/// an unreadable file, or `require_certificate` without `cafile`: one line
/// `mqtt5-broker: …` and exit code 2, before anything listens.
#[test]
fn bad_tls_settings_are_one_line_and_exit_code_2() {
    let pki = pki();
    let missing = pki.ca.with_file_name("missing.pem");
    let cases: Vec<Vec<&str>> = vec![
        vec!["--tls-listen", "127.0.0.1:0"],
        vec![
            "--tls-listen",
            "127.0.0.1:0",
            "--certfile",
            s(&pki.server_cert),
        ],
        vec![
            "--tls-listen",
            "127.0.0.1:0",
            "--certfile",
            s(&pki.server_cert),
            "--keyfile",
            s(&pki.client_key),
        ],
        vec![
            "--tls-listen",
            "127.0.0.1:0",
            "--certfile",
            s(&missing),
            "--keyfile",
            s(&pki.server_key),
        ],
        vec![
            "--tls-listen",
            "127.0.0.1:0",
            "--certfile",
            s(&pki.server_cert),
            "--keyfile",
            s(&pki.server_key),
            "--require-certificate",
        ],
    ];
    let dir = tempfile::tempdir().unwrap();
    for args in cases {
        let out = Command::new(env!("CARGO_BIN_EXE_mqtt5-broker"))
            .args([
                "--listen",
                "127.0.0.1:0",
                "--web-listen",
                "127.0.0.1:0",
                "--db",
            ])
            .arg(dir.path().join("b.db"))
            .args(&args)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        let lines: Vec<&str> = err
            .lines()
            .filter(|l| l.starts_with("mqtt5-broker: "))
            .collect();
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", text(&out));
        assert_eq!(lines.len(), 1, "{args:?}: {err}");
        assert!(!String::from_utf8_lossy(&out.stdout).contains("MQTT listening"));
    }
}

/// `kill -HUP` to the broker.
fn sighup(b: &Broker) {
    b.sighup();
}

/// `curl` of the page's status over HTTPS trusting `ca`: did the handshake and request succeed.
fn page_trusts(web: SocketAddr, ca: &Path) -> bool {
    let url = format!("https://127.0.0.1:{}/api/status", web.port());
    Command::new("curl")
        .args([
            "-sS",
            "--max-time",
            "10",
            "-o",
            "/dev/null",
            "--cacert",
            s(ca),
        ])
        .arg(&url)
        .stderr(Stdio::null())
        .status()
        .expect("curl (scripts/test installs it)")
        .success()
}

/// Issue 14, certificate reload: the server certificate and key are replaced by ones from a
/// new CA and the broker gets SIGHUP. It logs `TLS listener: certificate reloaded …` and
/// `web page (HTTPS): certificate reloaded …`; a new mosquitto client trusting the new CA
/// connects and one trusting the old CA fails; the page (web_tls_from_mqtt) likewise; a
/// rumqttc connection opened before the reload keeps publishing and receiving. Then a broken
/// certificate file and SIGHUP: one line `… certificate not reloaded, still using the previous
/// one: …` per server, and new clients still get the last good certificate.
#[test]
fn sighup_reloads_certificates_for_new_clients_and_keeps_open_connections() {
    use rumqttc::{Client, Event, MqttOptions, Packet, QoS, TlsConfiguration, Transport};
    let pki = pki();
    let b = tls_broker(&pki, &["--allow-anonymous", "--web-tls-from-mqtt"]);
    let addr = tls_addr(&b);
    assert!(page_trusts(b.web, &pki.ca), "{}", b.log());

    // The connection that must survive: subscribed before the reload.
    let mut opts = MqttOptions::new("old-conn", "127.0.0.1", addr.port());
    opts.set_keep_alive(Duration::from_secs(30));
    opts.set_transport(Transport::Tls(TlsConfiguration::Simple {
        ca: std::fs::read(&pki.ca).unwrap(),
        alpn: None,
        client_auth: None,
    }));
    let (old, mut old_conn) = Client::new(opts, 10);
    old.subscribe("reload/to-old", QoS::AtLeastOnce).unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let events = thread::spawn(move || {
        for event in old_conn.iter() {
            match event {
                Ok(Event::Incoming(p @ (Packet::SubAck(_) | Packet::Publish(_)))) => {
                    if tx.send(p).is_err() {
                        return;
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    let _ = tx.send(Packet::Disconnect);
                    eprintln!("old connection: {e}");
                    return;
                }
            }
        }
    });
    let first = rx.recv_timeout(Duration::from_secs(10)).expect("SUBACK");
    assert!(matches!(first, Packet::SubAck(_)), "{first:?}");

    let new_root = ca("renewed CA");
    let (sc, sk) = leaf(
        &new_root,
        "localhost",
        &["localhost", "127.0.0.1"],
        true,
        false,
    );
    let new_ca = pki.ca.with_file_name("new-ca.pem");
    std::fs::write(&new_ca, new_root.cert.pem()).unwrap();
    std::fs::write(&pki.server_cert, sc).unwrap();
    std::fs::write(&pki.server_key, sk).unwrap();
    sighup(&b);
    assert!(
        b.wait_for_log(
            "TLS listener: certificate reloaded from certfile",
            Duration::from_secs(10)
        ),
        "{}",
        b.log()
    );
    assert!(b.wait_for_log(
        "web page (HTTPS): certificate reloaded from certfile",
        Duration::from_secs(10)
    ));

    // New clients: the new certificate only.
    let out = receive(addr, "mqttv5", "reload/none", &["--cafile", s(&pki.ca)]);
    assert!(
        !out.status.success(),
        "old CA still trusted: {}",
        text(&out)
    );
    assert!(
        !page_trusts(b.web, &pki.ca),
        "page still has the old certificate"
    );
    assert!(page_trusts(b.web, &new_ca), "{}", b.log());

    // The old connection publishes to a new client and receives from one.
    old.publish("reload/from-old", QoS::AtLeastOnce, true, "still here")
        .unwrap();
    let out = receive(addr, "mqttv5", "reload/from-old", &["--cafile", s(&new_ca)]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "still here",
        "{}\n{}",
        text(&out),
        b.log()
    );
    let out = publish(
        addr,
        "mqttv311",
        "reload/to-old",
        "hello old",
        &["--cafile", s(&new_ca)],
    );
    assert!(out.status.success(), "{}", text(&out));
    match rx.recv_timeout(Duration::from_secs(10)).expect("publish") {
        Packet::Publish(p) => assert_eq!(&p.payload[..], b"hello old"),
        other => panic!("old connection got {other:?}"),
    }

    // A broken file: the last good certificate stays, and the log says so once per server.
    std::fs::write(&pki.server_cert, "not a certificate\n").unwrap();
    sighup(&b);
    assert!(
        b.wait_for_log(
            "TLS listener: certificate not reloaded, still using the previous one: cannot read certfile",
            Duration::from_secs(10)
        ),
        "{}",
        b.log()
    );
    assert!(b.wait_for_log(
        "web page (HTTPS): certificate not reloaded, still using the previous one: cannot read certfile",
        Duration::from_secs(10)
    ));
    let out = publish(
        addr,
        "mqttv5",
        "reload/after-bad",
        "ok",
        &["--cafile", s(&new_ca)],
    );
    assert!(out.status.success(), "{}\n{}", text(&out), b.log());
    assert!(page_trusts(b.web, &new_ca));
    assert!(b.exit_status().is_none(), "broker exited: {}", b.log());

    let _ = old.disconnect();
    drop(rx);
    let _ = events.join();
}

/// A GET on the page with the admin password (`--admin-password tls-admin`), by curl.
fn admin_get(web: SocketAddr, path: &str) -> String {
    let url = format!("http://127.0.0.1:{}{path}", web.port());
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "10", "-u", "admin:tls-admin"])
        .arg(&url)
        .output()
        .expect("curl (scripts/test installs it)");
    assert!(out.status.success(), "{}", text(&out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Issue 14, the page and the API show each client's transport, and the certificate subject
/// for certificate clients: a raw TCP client, a rumqttc TLS client with the `sensor-1`
/// certificate and one without are listed in `/api/clients` as tcp / tls (CN sensor-1) / tls;
/// `/metrics` counts `mqtt5_clients_connected_by_transport{transport="tls"} 2` and tcp 1, and
/// `$SYS/broker/clients/connected/tls` says 2.
#[test]
fn api_metrics_and_sys_show_each_clients_transport_and_certificate_cn() {
    use rumqttc::{Client, MqttOptions, TlsConfiguration, Transport};
    let pki = pki();
    let b = tls_broker(
        &pki,
        &[
            "--allow-anonymous",
            "--cafile",
            s(&pki.ca),
            "--admin-password",
            "tls-admin",
            "--sys-interval",
            "1",
        ],
    );
    let addr = tls_addr(&b);
    let tcp = connect_raw(b.mqtt);
    send(&tcp, &packet::connect_v5("plain-client", 60, true));
    assert_eq!(common::read_packet(&tcp)[0], 0x20, "CONNACK");

    let mut threads = Vec::new();
    let mut clients = Vec::new();
    for (id, auth) in [
        ("cert-client", Some((&pki.client_cert, &pki.client_key))),
        ("tls-client", None),
    ] {
        let mut opts = MqttOptions::new(id, "127.0.0.1", addr.port());
        opts.set_keep_alive(Duration::from_secs(30));
        opts.set_transport(Transport::Tls(TlsConfiguration::Simple {
            ca: std::fs::read(&pki.ca).unwrap(),
            alpn: None,
            client_auth: auth.map(|(c, k)| (std::fs::read(c).unwrap(), std::fs::read(k).unwrap())),
        }));
        let (client, mut conn) = Client::new(opts, 10);
        threads.push(thread::spawn(move || {
            for event in conn.iter() {
                if event.is_err() {
                    return;
                }
            }
        }));
        clients.push(client);
    }

    let deadline = Instant::now() + Duration::from_secs(10);
    let items = loop {
        let v: serde_json::Value =
            serde_json::from_str(&admin_get(b.web, "/api/clients")).expect("clients JSON");
        let items = v["items"].as_array().cloned().unwrap_or_default();
        if items.iter().filter(|c| c["state"] == "connected").count() == 3 {
            break items;
        }
        assert!(Instant::now() < deadline, "clients: {v}\n{}", b.log());
        thread::sleep(Duration::from_millis(50));
    };
    let by_id = |id: &str| {
        items
            .iter()
            .find(|c| c["client_id"] == id)
            .unwrap_or_else(|| panic!("{id} not listed: {items:?}"))
            .clone()
    };
    let plain = by_id("plain-client");
    assert_eq!(plain["transport"], "tcp");
    assert!(plain["certificate_cn"].is_null());
    let cert = by_id("cert-client");
    assert_eq!(cert["transport"], "tls");
    assert_eq!(cert["certificate_cn"], "sensor-1");
    let tls = by_id("tls-client");
    assert_eq!(tls["transport"], "tls");
    assert!(tls["certificate_cn"].is_null());

    let metrics = admin_get(b.web, "/metrics");
    for line in [
        "mqtt5_clients_connected_by_transport{transport=\"tcp\"} 1",
        "mqtt5_clients_connected_by_transport{transport=\"tls\"} 2",
        "mqtt5_clients_connected 3",
    ] {
        assert!(metrics.lines().any(|l| l == line), "no {line}:\n{metrics}");
    }

    // $SYS, read over TCP: the reader itself is a second tcp client, the tls count stays 2.
    let mut last = String::new();
    for _ in 0..20 {
        let out = receive(b.mqtt, "mqttv5", "$SYS/broker/clients/connected/tls", &[]);
        last = String::from_utf8_lossy(&out.stdout).trim().to_string();
        if last == "2" {
            break;
        }
        thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(last, "2", "{}", b.log());

    for c in &clients {
        let _ = c.disconnect();
    }
    for t in threads {
        let _ = t.join();
    }
}

/// A TLS client (rustls, trusting `ca`) with its handshake done.
fn tls_client(
    addr: SocketAddr,
    ca: &Path,
) -> rustls::StreamOwned<rustls::ClientConnection, std::net::TcpStream> {
    tls_client_over(connect_raw(addr), ca)
}

/// [`tls_client`] over a socket already connected.
fn tls_client_over(
    mut sock: std::net::TcpStream,
    ca: &Path,
) -> rustls::StreamOwned<rustls::ClientConnection, std::net::TcpStream> {
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls::pki_types::CertificateDer::pem_file_iter(ca).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    #[allow(deprecated)]
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let mut conn = rustls::ClientConnection::new(std::sync::Arc::new(config), name).unwrap();
    while conn.is_handshaking() {
        conn.complete_io(&mut sock).expect("TLS handshake");
    }
    rustls::StreamOwned::new(conn, sock)
}

/// The bounded issue's slowloris, over TLS: a client that completes its handshake, then sends
/// its CONNECT a byte every 300 ms, is closed at `connect_timeout` (2 s) without a CONNACK
/// (MQTT-3.1.4: the server may close a network connection that sends no CONNECT in time).
#[test]
fn mqtt_3_1_4_slowloris_connect_over_tls_is_closed_at_connect_timeout() {
    use std::io::Write;
    let pki = pki();
    let b = tls_broker(&pki, &["--allow-anonymous", "--connect-timeout", "2"]);
    let mut tls = tls_client(tls_addr(&b), &pki.ca);
    let started = Instant::now();
    let connect = packet::connect_v5("slow-tls", 30, true);
    let mut closed_at = None;
    // All but its last byte (≈ 6.6 s at this pace): the CONNECT is never whole.
    for byte in &connect[..connect.len() - 1] {
        // Each byte its own TLS record: the plaintext trickles in as a slowloris's would.
        if tls.write_all(&[*byte]).and_then(|()| tls.flush()).is_err() {
            closed_at = Some(started.elapsed());
            break;
        }
        thread::sleep(Duration::from_millis(300));
        // What the broker sent (an alert, a close): read without waiting.
        tls.sock
            .set_read_timeout(Some(Duration::from_millis(1)))
            .unwrap();
        let mut buf = [0u8; 256];
        match tls.read(&mut buf) {
            Ok(0) => {
                closed_at = Some(started.elapsed());
                break;
            }
            Ok(n) => panic!("the broker sent {n} bytes of plaintext to a CONNECT not yet whole"),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {}
            Err(_) => {
                closed_at = Some(started.elapsed());
                break;
            }
        }
    }
    let closed_at = closed_at.expect("the slowloris over TLS was never closed");
    assert!(
        closed_at >= Duration::from_millis(1500) && closed_at < Duration::from_secs(5),
        "closed after {closed_at:?}, connect_timeout 2 s"
    );
    assert!(b.exit_status().is_none());
}

/// The bounded issue's idle-socket test, on the TLS port: 60 idle sockets and 30 stalled
/// handshakes (half a ClientHello) from 9 loopback addresses, with `max_pending_connections
/// 40`, then as many again in their place: they are pending sockets, the pool stays bounded,
/// and a real TLS client (mosquitto_pub with `--cafile`, from 127.0.0.1) still connects.
#[test]
fn mqtt_3_1_4_idle_sockets_and_stalled_handshakes_on_the_tls_port_do_not_lock_out_a_tls_client() {
    let pki = pki();
    let b = tls_broker(
        &pki,
        &["--allow-anonymous", "--max-pending-connections", "40"],
    );
    let addr = tls_addr(&b);
    let mut held = Vec::new();
    // A ClientHello record header announcing 512 bytes, and only 20 of them.
    let mut half_hello = vec![
        0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03,
    ];
    half_hello.extend_from_slice(&[7u8; 9]);
    for round in 0..2 {
        for i in 0..90u8 {
            let from = std::net::Ipv4Addr::new(127, 0, 3 + round, 1 + i / 10);
            let s = common::connect_raw_from(addr, from);
            if i >= 60 {
                send(&s, &half_hello);
            }
            held.push(s);
        }
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut most = 0;
    while Instant::now() < deadline {
        let pending = common::api_status(b.web)["pending_connections"]
            .as_u64()
            .unwrap_or(0);
        most = most.max(pending);
        if pending >= 30 {
            break;
        }
        thread::sleep(Duration::from_millis(20));
    }
    let t = Instant::now();
    let out = publish(addr, "mqttv5", "held/real", "in", &["--cafile", s(&pki.ca)]);
    assert!(out.status.success(), "{}\n{}", text(&out), b.log());
    assert!(
        t.elapsed() < Duration::from_secs(5),
        "took {:?}",
        t.elapsed()
    );
    let status = common::api_status(b.web);
    assert!(most <= 40 + 10, "{most} pending, bound 40");
    assert!(
        status["pending_closed"].as_u64().unwrap_or(0) > 0,
        "the pool was full, yet nothing was closed: {status}"
    );
    drop(held);
}

/// The bounded issue's never-reading flooder, over TLS: a client (4 KiB receive buffer) that
/// publishes QoS 1 as fast as TLS lets it and never reads its PUBACKs is disconnected once,
/// logged `client tls-flooder disconnected from …: not reading (… bytes unsent for 10s)`, and
/// the broker's RSS stays within 24 MiB of what it was (MQTT-4.13: the server may close a
/// connection that does not let it send).
#[test]
fn mqtt_4_13_tls_qos1_flooder_that_never_reads_is_disconnected_rss_bounded() {
    use common::procfs::rss_kb;
    use std::io::{ErrorKind, Write};
    const FLOOD_FOR: Duration = Duration::from_secs(40);
    const GROWTH_LIMIT_KB: u64 = 24 * 1024;
    let pki = pki();
    let b = tls_broker(&pki, &["--allow-anonymous"]);
    let idle_kb = rss_kb(b.pid());
    let sock = common::connect_raw_rcvbuf(tls_addr(&b), 4096);
    let mut tls = tls_client_over(sock, &pki.ca);
    tls.write_all(&packet::connect_v5("tls-flooder", 0, true))
        .unwrap();
    tls.flush().unwrap();
    let mut ack = [0u8; 64];
    let n = tls.read(&mut ack).expect("CONNACK");
    assert!(
        n >= 4 && ack[0] == 0x20 && ack[3] == 0,
        "CONNACK {:?}",
        &ack[..n]
    );

    let (mut conn, mut sock) = (tls.conn, tls.sock);
    sock.set_write_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let burst = common::qos1_flood_burst("flood/t");
    let gone = "client tls-flooder disconnected from";
    let started = Instant::now();
    let (mut at, mut peak_kb, mut sent_bytes) = (0usize, idle_kb, 0u64);
    let mut rounds = 0u64;
    // Only writes: rustls seals, write_tls sends; nothing ever reads the socket.
    'flood: while started.elapsed() < FLOOD_FOR && !b.log().contains(gone) {
        rounds += 1;
        if rounds.is_multiple_of(16) {
            peak_kb = peak_kb.max(rss_kb(b.pid()));
        }
        let n = conn.writer().write(&burst[at..]).unwrap_or(0);
        at = (at + n) % burst.len();
        sent_bytes += n as u64;
        while conn.wants_write() {
            match conn.write_tls(&mut sock) {
                Ok(_) => {}
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => break,
                Err(_) => break 'flood,
            }
        }
    }
    // The broker has let go: wait for its line (the socket may have failed first).
    assert!(
        b.wait_for_log(gone, Duration::from_secs(15)),
        "the TLS flooder was not disconnected (sealed {sent_bytes} bytes)\n{}",
        b.log()
    );
    peak_kb = peak_kb.max(rss_kb(b.pid()));
    eprintln!(
        "TLS flooder disconnected after {:?}: RSS idle {idle_kb} kB, peak {peak_kb} kB",
        started.elapsed()
    );
    common::assert_cut_as_not_reading(
        &b.log(),
        gone,
        &common::api_status(b.web),
        (idle_kb, peak_kb, GROWTH_LIMIT_KB),
    );
}
