//! HTTPS for the control page, against the real binary with a certificate made by its own
//! `tls init`: curl (an independent TLS client, checking the chain with `--cacert`) fetches the
//! page and the API and logs in (the cookie is `Secure`, and not over plain HTTP); plain HTTP to
//! the HTTPS port gets no page; a stalled or trickled handshake is closed by the 10 s request
//! deadline; handshaking sockets count in the per-address pool; `web_tls_from_mqtt` uses
//! `certfile`/`keyfile`; bad files stop the start with one line and exit 2.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::thread;
use std::time::{Duration, Instant};

use common::Broker;

const PASSWORD: &str = "https-test-pw";

/// `tls init` into `dir` (by the real binary); the directory.
fn make_certs(dir: &Path) -> PathBuf {
    let out = Command::new(env!("CARGO_BIN_EXE_mqtt5-broker"))
        .args(["tls", "init", "--dir"])
        .arg(dir)
        .output()
        .expect("run tls init");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    dir.to_path_buf()
}

fn s(p: &Path) -> String {
    p.to_str().unwrap().to_string()
}

fn curl(args: &[&str]) -> Output {
    Command::new("curl")
        .args(["-sS", "--max-time", "10"])
        .args(args)
        .output()
        .expect("curl (scripts/test installs it)")
}

/// curl that must succeed: its stdout.
fn curl_ok(args: &[&str]) -> String {
    let out = curl(args);
    assert!(
        out.status.success(),
        "curl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn https_broker(certs: &Path) -> Broker {
    Broker::start(&[
        "--web-certfile",
        &s(&certs.join("server.crt")),
        "--web-keyfile",
        &s(&certs.join("server.key")),
        "--admin-password",
        PASSWORD,
    ])
}

fn status(ca: &str, web: SocketAddr) -> serde_json::Value {
    let url = format!("https://127.0.0.1:{}/api/status", web.port());
    serde_json::from_str(&curl_ok(&["--cacert", ca, &url])).expect("status JSON")
}

/// Reads until the broker closes the socket; what it sent and when it closed. Panics if it is
/// still open after `limit`.
fn until_closed(mut sock: TcpStream, limit: Duration) -> (Vec<u8>, Instant) {
    sock.set_read_timeout(Some(limit)).unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match sock.read(&mut buf) {
            Ok(0) => return (got, Instant::now()),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {
                return (got, Instant::now())
            }
            Err(e) => panic!("socket still open after {limit:?}: {e}"),
        }
    }
}

#[test]
fn page_and_api_over_https_with_a_secure_cookie() {
    let tmp = tempfile::tempdir().unwrap();
    let certs = make_certs(&tmp.path().join("tls"));
    let ca = s(&certs.join("ca.crt"));
    let broker = https_broker(&certs);
    let port = broker.web.port();
    let log = broker.log();
    assert!(
        log.contains(&format!("web page on https://127.0.0.1:{port}/")),
        "{log}"
    );
    assert!(!log.contains("web page on http://"), "{log}");

    // The page, by name and by address (both are in the certificate), chain checked by curl.
    for host in ["localhost", "127.0.0.1"] {
        let page = curl_ok(&["--cacert", &ca, &format!("https://{host}:{port}/")]);
        assert!(
            page.contains("<html") || page.contains("<!DOCTYPE"),
            "{page}"
        );
    }
    let st = status(&ca, broker.web);
    assert_eq!(st["running"], true, "{st}");
    // Without the CA, curl does not trust it: the page really is served with that certificate.
    let untrusted = curl(&[&format!("https://127.0.0.1:{port}/api/status")]);
    assert_eq!(untrusted.status.code(), Some(60), "{untrusted:?}");

    // Log in: the cookie is Secure (and still HttpOnly, SameSite=Strict), and works.
    let url = format!("https://127.0.0.1:{port}/api/login");
    let body = format!("{{\"password\":\"{PASSWORD}\"}}");
    let head = curl_ok(&[
        "--cacert",
        &ca,
        "-D",
        "-",
        "-o",
        "/dev/null",
        "-H",
        "Content-Type: application/json",
        "-d",
        &body,
        &url,
    ]);
    let cookie_line = head
        .lines()
        .find(|l| l.to_ascii_lowercase().starts_with("set-cookie:"))
        .unwrap_or_else(|| panic!("no Set-Cookie in {head}"));
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    for attr in ["; Secure", "HttpOnly", "SameSite=Strict"] {
        assert!(cookie_line.contains(attr), "{attr} missing: {cookie_line}");
    }
    let value = cookie_line
        .split_once(':')
        .and_then(|(_, v)| v.trim().split(';').next())
        .unwrap()
        .to_string();
    let session = curl_ok(&[
        "--cacert",
        &ca,
        "-H",
        &format!("Cookie: {value}"),
        &format!("https://127.0.0.1:{port}/api/session"),
    ]);
    assert!(session.contains("\"auth\":\"session\""), "{session}");
    // HTTP Basic over HTTPS, as scripts do.
    let topics = curl_ok(&[
        "--cacert",
        &ca,
        "-u",
        &format!("admin:{PASSWORD}"),
        &format!("https://127.0.0.1:{port}/api/topics"),
    ]);
    assert!(topics.contains("\"items\""), "{topics}");
}

#[test]
fn plain_http_cookie_is_not_secure() {
    let broker = Broker::start(&["--admin-password", PASSWORD]);
    let head = curl_ok(&[
        "-D",
        "-",
        "-o",
        "/dev/null",
        "-H",
        "Content-Type: application/json",
        "-d",
        &format!("{{\"password\":\"{PASSWORD}\"}}"),
        &format!("http://127.0.0.1:{}/api/login", broker.web.port()),
    ]);
    let cookie_line = head
        .lines()
        .find(|l| l.to_ascii_lowercase().starts_with("set-cookie:"))
        .unwrap_or_else(|| panic!("no Set-Cookie in {head}"));
    assert!(
        cookie_line.contains("HttpOnly") && !cookie_line.contains("Secure"),
        "{cookie_line}"
    );
}

#[test]
fn plain_http_stalled_and_trickled_handshakes_get_no_page() {
    let tmp = tempfile::tempdir().unwrap();
    let certs = make_certs(&tmp.path().join("tls"));
    let ca = s(&certs.join("ca.crt"));
    let broker = https_broker(&certs);
    let web = broker.web;

    // Plain HTTP to the HTTPS port: a TLS alert at most, never an HTTP answer, then the close.
    let mut plain = common::connect_raw(web);
    plain
        .write_all(b"GET /api/status HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let (got, _) = until_closed(plain, Duration::from_secs(5));
    assert!(
        !String::from_utf8_lossy(&got).contains("HTTP/"),
        "{:?}",
        String::from_utf8_lossy(&got)
    );
    let out = curl(&[&format!("http://127.0.0.1:{}/", web.port())]);
    assert!(!out.status.success());

    // A socket that never starts its handshake, and one that trickles a ClientHello's record
    // header a byte every 2 s (each read returns something: only a deadline over the whole
    // handshake closes it), from another address so the pool leaves them alone. Both closed
    // by the 10 s deadline, not sooner.
    let t0 = Instant::now();
    let silent = common::connect_raw_from(web, "127.0.0.2".parse().unwrap());
    let trickle = common::connect_raw_from(web, "127.0.0.2".parse().unwrap());
    let mut writer = trickle.try_clone().unwrap();
    let feeder = thread::spawn(move || {
        // TLS record header of a handshake (22, version 3.1, length 512), then body bytes.
        let bytes = [0x16u8, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc];
        for b in bytes {
            if writer.write_all(&[b]).is_err() {
                return;
            }
            thread::sleep(Duration::from_secs(2));
        }
    });
    let silent = thread::spawn(move || until_closed(silent, Duration::from_secs(20)));
    let (_, trickle_closed) = until_closed(trickle, Duration::from_secs(20));
    let (_, silent_closed) = silent.join().unwrap();
    feeder.join().unwrap();
    for (what, at) in [("silent", silent_closed), ("trickled", trickle_closed)] {
        let after = at - t0;
        assert!(
            after >= Duration::from_secs(9) && after <= Duration::from_secs(13),
            "{what} handshake closed after {after:?}"
        );
    }
    // The page still answers.
    assert_eq!(status(&ca, web)["running"], true);
}

#[test]
fn handshaking_sockets_count_in_the_pool() {
    let tmp = tempfile::tempdir().unwrap();
    let certs = make_certs(&tmp.path().join("tls"));
    let ca = s(&certs.join("ca.crt"));
    let broker = https_broker(&certs);
    let web = broker.web;
    // 8 sockets from one address that never handshake fill that address's share...
    let idle: Vec<TcpStream> = (0..8)
        .map(|_| common::connect_raw_from(web, "127.0.0.3".parse().unwrap()))
        .collect();
    thread::sleep(Duration::from_millis(300));
    let before = status(&ca, web);
    assert!(
        before["http_connections"].as_u64().unwrap() >= 8,
        "{before}"
    );
    // ...so a 9th from it closes the oldest, at once, not at its deadline.
    let ninth = common::connect_raw_from(web, "127.0.0.3".parse().unwrap());
    let t0 = Instant::now();
    let mut idle = idle.into_iter();
    let (_, closed) = until_closed(idle.next().unwrap(), Duration::from_secs(5));
    assert!(closed - t0 < Duration::from_secs(3));
    let after = status(&ca, web);
    assert!(
        after["http_closed"].as_u64().unwrap() > before["http_closed"].as_u64().unwrap(),
        "{before} → {after}"
    );
    drop(ninth);
}

#[test]
fn web_tls_from_mqtt_uses_certfile_and_keyfile() {
    let tmp = tempfile::tempdir().unwrap();
    let certs = make_certs(&tmp.path().join("tls"));
    let ca = s(&certs.join("ca.crt"));
    let broker = Broker::start(&[
        "--certfile",
        &s(&certs.join("server.crt")),
        "--keyfile",
        &s(&certs.join("server.key")),
        "--web-tls-from-mqtt",
    ]);
    assert!(broker.log().contains("web page on https://"));
    assert_eq!(status(&ca, broker.web)["running"], true);
}

#[test]
fn bad_certificate_files_stop_the_start_with_one_line() {
    let tmp = tempfile::tempdir().unwrap();
    let a = make_certs(&tmp.path().join("a"));
    let b = make_certs(&tmp.path().join("b"));
    let db = tmp.path().join("broker.db");
    let run = |cert: &Path, key: &Path| {
        Command::new(env!("CARGO_BIN_EXE_mqtt5-broker"))
            .args(["--listen", "127.0.0.1:0", "--web-listen", "127.0.0.1:0"])
            .arg("--db")
            .arg(&db)
            .arg("--web-certfile")
            .arg(cert)
            .arg("--web-keyfile")
            .arg(key)
            .output()
            .expect("run the broker")
    };
    let cases = [
        (
            a.join("server.crt"),
            b.join("server.key"),
            "is not the key of",
        ),
        (a.join("missing.crt"), a.join("server.key"), "cannot read"),
        (
            a.join("server.key"),
            a.join("server.key"),
            "no PEM certificate",
        ),
        (a.join("server.crt"), a.join("ca.crt"), "no PEM private key"),
    ];
    for (cert, key, want) in cases {
        let out = run(&cert, &key);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{err}");
        let lines: Vec<&str> = err.lines().collect();
        assert_eq!(lines.len(), 1, "{err}");
        assert!(
            lines[0].starts_with("mqtt5-broker: ") && lines[0].contains(want),
            "{err}"
        );
    }
    // Refused before anything started: no database was made.
    assert!(!db.exists());
}
