//! `mqtt5-broker tls init` run as the real binary into temporary directories: the four files
//! and their modes, the chain and names checked by the `openssl` command line (an independent
//! X.509 implementation), the validity periods, the key types, the default directory beside
//! the database, refusal to overwrite and `--force`; and the printed config lines put to use:
//! a broker started with them, and mosquitto clients trusting it with the printed CA.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output};

const FILES: [&str; 4] = ["ca.crt", "ca.key", "server.crt", "server.key"];

fn tls_init(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_mqtt5-broker"))
        .args(["tls", "init"])
        .args(args)
        .env("RUST_LOG", "info")
        .output()
        .expect("run mqtt5-broker tls init")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn openssl(args: &[&str]) -> Output {
    Command::new("openssl")
        .args(args)
        .output()
        .expect("the openssl command line (scripts/test installs it)")
}

fn openssl_ok(args: &[&str]) -> String {
    let out = openssl(args);
    assert!(
        out.status.success(),
        "openssl {args:?} failed: {}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    text(&out.stdout)
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn makes_a_ca_and_a_server_certificate_that_openssl_verifies() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("certs");
    let out = tls_init(&[
        "--dir",
        s(&dir),
        "--name",
        "broker.example.lan",
        "--ip",
        "10.1.2.3",
        "--ip",
        "fd12::34",
    ]);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", text(&out.stderr));
    // It is an admin command: the broker does not start.
    assert!(!stdout.contains("MQTT listening"), "{stdout}");

    for f in FILES {
        assert!(dir.join(f).is_file(), "{f} missing");
    }
    assert_eq!(mode(&dir.join("ca.key")), 0o600);
    assert_eq!(mode(&dir.join("server.key")), 0o600);
    assert_eq!(mode(&dir.join("ca.crt")) & 0o600, 0o600);
    let ca = dir.join("ca.crt");
    let server = dir.join("server.crt");

    // The chain, for the TLS server purpose.
    let verified = openssl_ok(&[
        "verify",
        "-purpose",
        "sslserver",
        "-CAfile",
        s(&ca),
        s(&server),
    ]);
    assert!(verified.trim_end().ends_with("OK"), "{verified}");

    // The names: localhost, the host name, loopback, the extra ones given.
    let sans = openssl_ok(&[
        "x509",
        "-in",
        s(&server),
        "-noout",
        "-ext",
        "subjectAltName",
    ]);
    for want in [
        "DNS:localhost",
        "DNS:broker.example.lan",
        "IP Address:127.0.0.1",
        "IP Address:0:0:0:0:0:0:0:1",
        "IP Address:10.1.2.3",
        "IP Address:FD12:0:0:0:0:0:0:34",
    ] {
        assert!(sans.contains(want), "{want} not in {sans}");
    }
    if let Some(host) = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_ascii_lowercase())
        .filter(|h| !h.is_empty() && h != "localhost")
    {
        assert!(
            sans.contains(&format!("DNS:{host}")),
            "{host} not in {sans}"
        );
    }
    // Every address printed as in the certificate was also written there.
    assert!(stdout.contains("10.1.2.3") && stdout.contains("broker.example.lan"));

    // ECDSA P-256 keys, each matching its certificate.
    for (cert, key) in [("ca.crt", "ca.key"), ("server.crt", "server.key")] {
        let info = openssl_ok(&["x509", "-in", s(&dir.join(cert)), "-noout", "-text"]);
        assert!(
            info.contains("id-ecPublicKey") && info.contains("prime256v1"),
            "{info}"
        );
        let from_cert = openssl_ok(&["x509", "-in", s(&dir.join(cert)), "-noout", "-pubkey"]);
        let from_key = openssl_ok(&["pkey", "-in", s(&dir.join(key)), "-pubout"]);
        assert_eq!(from_cert, from_key, "{key} is not the key of {cert}");
    }
    let ca_info = openssl_ok(&["x509", "-in", s(&ca), "-noout", "-text"]);
    assert!(ca_info.contains("CA:TRUE"), "{ca_info}");

    // Validity: the server certificate about 2 years, the CA about 10.
    let valid_for = |cert: &Path, days: u64| {
        openssl(&[
            "x509",
            "-in",
            s(cert),
            "-noout",
            "-checkend",
            &(days * 86_400).to_string(),
        ])
        .status
        .success()
    };
    assert!(valid_for(&server, 725) && !valid_for(&server, 735));
    assert!(valid_for(&ca, 3645) && !valid_for(&ca, 3655));

    // What to do next: the config lines and the CA file for clients.
    let cert_line = format!("certfile {}", s(&std::fs::canonicalize(&server).unwrap()));
    assert!(stdout.contains(&cert_line), "{stdout}");
    assert!(
        stdout.contains("tls_listen 0.0.0.0:8883")
            && stdout.contains("keyfile ")
            && stdout.contains("web_tls_from_mqtt true"),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!(
            "--cafile {}",
            s(&std::fs::canonicalize(&ca).unwrap())
        )),
        "{stdout}"
    );
}

#[test]
fn refuses_to_overwrite_and_force_replaces() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("tls");
    assert!(tls_init(&["--dir", s(&dir)]).status.success());
    let before: Vec<Vec<u8>> = FILES
        .iter()
        .map(|f| std::fs::read(dir.join(f)).unwrap())
        .collect();

    let again = tls_init(&["--dir", s(&dir)]);
    assert_eq!(again.status.code(), Some(1));
    let err = text(&again.stderr);
    assert!(
        err.starts_with("mqtt5-broker: ")
            && err.contains("already exist")
            && err.contains("--force")
            && err.trim_end().lines().count() == 1,
        "{err}"
    );
    for (f, old) in FILES.iter().zip(&before) {
        assert_eq!(&std::fs::read(dir.join(f)).unwrap(), old, "{f} changed");
    }

    // One file alone is enough to refuse, and nothing else is written then.
    let other = tmp.path().join("other");
    std::fs::create_dir(&other).unwrap();
    std::fs::write(other.join("server.key"), "mine").unwrap();
    let refused = tls_init(&["--dir", s(&other)]);
    assert_eq!(refused.status.code(), Some(1));
    assert_eq!(std::fs::read(other.join("server.key")).unwrap(), b"mine");
    assert!(!other.join("ca.crt").exists());

    // --force: four new files, keys still 0600 even if the old file was not.
    std::fs::set_permissions(
        dir.join("server.key"),
        std::fs::Permissions::from_mode(0o644),
    )
    .unwrap();
    let forced = tls_init(&["--dir", s(&dir), "--force"]);
    assert!(forced.status.success(), "{}", text(&forced.stderr));
    for (f, old) in FILES.iter().zip(&before) {
        assert_ne!(
            &std::fs::read(dir.join(f)).unwrap(),
            old,
            "{f} not replaced"
        );
    }
    assert_eq!(mode(&dir.join("server.key")), 0o600);
    assert_eq!(mode(&dir.join("ca.key")), 0o600);
    let ca = dir.join("ca.crt");
    let verified = openssl_ok(&["verify", "-CAfile", s(&ca), s(&dir.join("server.crt"))]);
    assert!(verified.trim_end().ends_with("OK"), "{verified}");
    // The old CA does not vouch for the new server certificate.
    let old_ca = tmp.path().join("old-ca.crt");
    std::fs::write(&old_ca, &before[0]).unwrap();
    assert!(
        !openssl(&["verify", "-CAfile", s(&old_ca), s(&dir.join("server.crt"))])
            .status
            .success()
    );
}

#[test]
fn default_directory_is_beside_the_database() {
    let tmp = tempfile::tempdir().unwrap();
    let db = tmp.path().join("data").join("broker.db");
    std::fs::create_dir(tmp.path().join("data")).unwrap();
    let out = tls_init(&["--db", s(&db)]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    for f in FILES {
        assert!(tmp.path().join("data/tls").join(f).is_file(), "{f}");
    }
    // No database was made: `tls init` does not open it.
    assert!(!db.exists());
}

#[test]
fn bad_arguments_are_usage_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tls_init(&["--dir", s(tmp.path()), "--ip", "not-an-ip"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).starts_with("mqtt5-broker: "));
    let out = tls_init(&["--dir", s(tmp.path()), "--name", "bad name"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("not a DNS name"));
    assert!(!tmp.path().join("ca.crt").exists());
}

/// The lines `tls init` prints, put as they are into a config file, start a TLS listener that
/// Debian's mosquitto clients (OpenSSL) trust with the printed CA file, by the address
/// `127.0.0.1` and by the name `localhost`; the page is then served over HTTPS. Only the
/// listen addresses are moved to free loopback ports by flags (flags win over the file).
#[test]
fn printed_config_lines_start_a_tls_listener_mosquitto_clients_trust_with_the_ca() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("tls");
    let out = tls_init(&["--dir", s(&dir)]);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", text(&out.stderr));
    // The indented lines after "Add to the config file", up to the line that is not indented.
    let lines: Vec<&str> = stdout
        .lines()
        .skip_while(|l| !l.starts_with("Add to the config file"))
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .map(str::trim)
        .chain(["web_tls_from_mqtt true"])
        .collect();
    assert!(
        lines.iter().any(|l| l.starts_with("tls_listen "))
            && lines.iter().any(|l| l.starts_with("certfile "))
            && lines.iter().any(|l| l.starts_with("keyfile ")),
        "{stdout}"
    );
    let config = tmp.path().join("broker.conf");
    std::fs::write(&config, lines.join("\n") + "\n").unwrap();
    let b = common::Broker::start(&[
        "--config",
        s(&config),
        "--tls-listen",
        "127.0.0.1:0",
        "--allow-anonymous",
    ]);
    let tls = b.tls.expect("the TLS listener from the printed lines");
    assert!(b.log().contains("web page on https://"), "{}", b.log());

    let ca = dir.join("ca.crt");
    let port = tls.port().to_string();
    for (host, version) in [("127.0.0.1", "mqttv5"), ("localhost", "mqttv311")] {
        let topic = format!("tls-init/{version}");
        let common = [
            "-h",
            host,
            "-p",
            &port,
            "-V",
            version,
            "--cafile",
            s(&ca),
            "-t",
            &topic,
        ];
        // Bounded by coreutils' timeout: mosquitto_pub has no wait limit of its own.
        let publish = Command::new("timeout")
            .arg("20")
            .arg("mosquitto_pub")
            .args(common)
            .args(["-q", "1", "-r", "-m", "over tls"])
            .output()
            .expect("mosquitto_pub (scripts/test installs mosquitto-clients)");
        assert!(
            publish.status.success(),
            "{host}: {}{}",
            text(&publish.stdout),
            text(&publish.stderr)
        );
        let receive = Command::new("timeout")
            .arg("20")
            .arg("mosquitto_sub")
            .args(common)
            .args(["-C", "1", "-W", "5"])
            .output()
            .expect("mosquitto_sub");
        assert_eq!(
            text(&receive.stdout).trim_end(),
            "over tls",
            "{host}: {}",
            text(&receive.stderr)
        );
    }
    // A client trusting another `tls init`'s CA is refused by its own check.
    let other = tmp.path().join("other");
    assert!(tls_init(&["--dir", s(&other)]).status.success());
    let untrusted = Command::new("timeout")
        .args(["20", "mosquitto_pub", "-h", "127.0.0.1", "-p", &port])
        .args(["--cafile", s(&other.join("ca.crt"))])
        .args(["-t", "x", "-m", "y"])
        .output()
        .expect("mosquitto_pub");
    assert!(!untrusted.status.success());
}
