//! Config reload without a restart (issue 16) against the real binary, with a real config file
//! given by `--config`: a real SIGHUP to the broker's PID and the page's
//! `POST /api/config/reload` (HTTP Basic as admin). What can change live changes for the
//! clients that come after, the clients already connected stay connected, a setting that needs
//! a restart is named and not applied, a file that does not parse changes nothing, and flags
//! still win over the file.

mod common;

use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::raw::parse_connack;
use common::web::{basic, request};
use common::*;

const ADMIN_PW: &str = "reload-admin";
const LOG_WAIT: Duration = Duration::from_secs(10);
const HTTP_WAIT: Duration = Duration::from_secs(20);

/// CONNACK reason codes (§3.2.2.2).
const SUCCESS: u8 = 0x00;
const NOT_AUTHORIZED: u8 = 0x87;
const QUOTA_EXCEEDED: u8 = 0x97;

/// A config file in its own temp dir, rewritten in place as an admin would.
struct ConfigFile {
    _dir: tempfile::TempDir,
    path: PathBuf,
}

impl ConfigFile {
    fn new(text: &str) -> ConfigFile {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("mqtt5-broker.conf");
        std::fs::write(&path, text).unwrap();
        ConfigFile { _dir: dir, path }
    }

    fn write(&self, text: &str) {
        std::fs::write(&self.path, text).unwrap();
    }

    fn arg(&self) -> &str {
        self.path.to_str().unwrap()
    }
}

fn start(conf: &ConfigFile, extra: &[&str]) -> Broker {
    let mut args = vec!["--config", conf.arg(), "--admin-password", ADMIN_PW];
    args.extend_from_slice(extra);
    Broker::start(&args)
}

/// A 5.0 CONNECT without credentials: the socket and the CONNACK's reason code.
fn connect(addr: SocketAddr, id: &str) -> (TcpStream, u8) {
    let s = connect_raw(addr);
    send(&s, &packet::connect_v5(id, 60, true));
    let (_, reason, _) = parse_connack(&read_packet(&s));
    (s, reason)
}

/// The client is still connected: PINGREQ answered with PINGRESP.
fn assert_connected(s: &TcpStream, who: &str) {
    send(s, &packet::pingreq());
    let p = read_packet_within(s, Duration::from_secs(5))
        .unwrap_or_else(|| panic!("{who}: no PINGRESP: disconnected?"));
    assert_eq!(p, packet::pingresp(), "{who}");
}

fn page_reload(b: &Broker) -> common::web::Answer {
    request(
        b.web,
        "POST",
        "/api/config/reload",
        &[basic("admin", ADMIN_PW)],
        HTTP_WAIT,
    )
}

/// What the `n`th config reload (from 1) logged, from its `config reload (…): reading` line
/// to its last line (`… applied, … need a restart`, `no setting changed` or `… not applied,
/// nothing changed: …`), once that last line has arrived.
fn reload_log(b: &Broker, n: usize) -> String {
    let deadline = std::time::Instant::now() + LOG_WAIT;
    loop {
        let log = b.log();
        if let Some((start, _)) = log.match_indices("config reload (").nth(n - 1) {
            let text = &log[start..];
            let end = text.lines().position(|l| {
                l.contains(" need a restart")
                    || l.contains("config reload: no setting changed")
                    || l.contains("not applied, nothing changed")
            });
            if let Some(end) = end {
                return text.lines().take(end + 1).collect::<Vec<_>>().join("\n");
            }
        }
        assert!(
            std::time::Instant::now() < deadline,
            "config reload {n} not logged whole within {LOG_WAIT:?}: {log}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn setting_names(list: &serde_json::Value) -> Vec<String> {
    list.as_array()
        .expect("a list")
        .iter()
        .map(|c| c["setting"].as_str().unwrap().to_string())
        .collect()
}

fn path_text(p: &Path) -> String {
    p.display().to_string()
}

#[test]
fn sighup_raises_max_clients_a_client_beyond_the_old_limit_connects_and_none_is_dropped() {
    let conf = ConfigFile::new("max_clients 2\nmax_keepalive 60\n");
    // The flag wins over the file, at start and at each reload.
    let b = start(&conf, &["--allow-anonymous", "--max-keepalive", "30"]);
    let (first, r1) = connect(b.mqtt, "first");
    let (second, r2) = connect(b.mqtt, "second");
    assert_eq!((r1, r2), (SUCCESS, SUCCESS));
    let (_, refused) = connect(b.mqtt, "third-too-early");
    assert_eq!(
        refused, QUOTA_EXCEEDED,
        "max_clients 2 holds before the reload"
    );

    conf.write("max_clients 3\nmax_keepalive 90\n");
    b.sighup();
    let log = reload_log(&b, 1);
    assert!(
        log.contains(&format!(
            "config reload (SIGHUP): reading '{}'",
            path_text(&conf.path)
        )),
        "{log}"
    );
    assert!(log.contains("config reload: max_clients 2 -> 3"), "{log}");
    assert!(
        log.contains("config reload: 1 applied, 0 need a restart"),
        "{log}"
    );
    assert!(
        !log.contains("max_keepalive"),
        "--max-keepalive wins over the file: {log}"
    );

    let (third, r3) = connect(b.mqtt, "third");
    assert_eq!(r3, SUCCESS, "a client beyond the old limit: {}", b.log());
    assert_connected(&first, "first");
    assert_connected(&second, "second");
    assert_connected(&third, "third");
    let (_, over) = connect(b.mqtt, "fourth");
    assert_eq!(over, QUOTA_EXCEEDED, "the new limit holds too");
}

#[test]
fn page_reload_turns_allow_anonymous_on_and_answers_the_change_as_json() {
    let conf = ConfigFile::new("allow_anonymous false\n");
    let b = start(&conf, &[]);
    let (_, refused) = connect(b.mqtt, "anon-before");
    assert_eq!(refused, NOT_AUTHORIZED);

    conf.write("allow_anonymous true\n");
    let stranger = request(b.web, "POST", "/api/config/reload", &[], HTTP_WAIT);
    assert_eq!(stranger.status, 401, "{}", stranger.text());
    let wrong = request(
        b.web,
        "POST",
        "/api/config/reload",
        &[basic("admin", "not-the-password")],
        HTTP_WAIT,
    );
    assert_eq!(wrong.status, 401, "{}", wrong.text());
    let (_, still) = connect(b.mqtt, "anon-not-yet");
    assert_eq!(still, NOT_AUTHORIZED, "only the admin reloads");

    let r = page_reload(&b);
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    assert_eq!(
        v["changed"],
        serde_json::json!([{ "setting": "allow_anonymous", "from": "false", "to": "true" }]),
        "{v}"
    );
    assert_eq!(v["restart"], serde_json::json!([]));
    assert_eq!(v["error"], serde_json::Value::Null);
    assert_eq!(v["file"], serde_json::json!(path_text(&conf.path)));
    let log = reload_log(&b, 1);
    assert!(
        log.contains("config reload: allow_anonymous false -> true"),
        "{log}"
    );
    let (anon, ok) = connect(b.mqtt, "anon-after");
    assert_eq!(ok, SUCCESS, "{}", b.log());
    assert_connected(&anon, "anon-after");
}

#[test]
fn a_listener_change_is_named_as_needing_a_restart_and_not_applied() {
    let conf = ConfigFile::new("allow_anonymous true\nmax_clients 5\n");
    let b = start(&conf, &[]);
    let (client, ok) = connect(b.mqtt, "stays");
    assert_eq!(ok, SUCCESS);

    conf.write("allow_anonymous true\nmax_clients 6\nws_listen 127.0.0.1:0\nsync full\n");
    let r = page_reload(&b);
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    assert_eq!(setting_names(&v["changed"]), ["max_clients"], "{v}");
    assert_eq!(setting_names(&v["restart"]), ["ws_listen", "sync"], "{v}");
    assert_eq!(v["restart"][0]["from"], "off");
    assert_eq!(v["restart"][0]["to"], "127.0.0.1:0");
    let log = reload_log(&b, 1);
    assert!(
        log.contains("config reload: ws_listen off -> 127.0.0.1:0 needs a restart; not applied"),
        "{log}"
    );
    assert!(
        log.contains("config reload: sync normal -> full needs a restart; not applied"),
        "{log}"
    );
    assert!(
        !b.log().contains("(ws)"),
        "no WebSocket listener was started: {}",
        b.log()
    );
    assert_connected(&client, "stays");

    // A second reload of the same file reports the listener again: it is still not applied.
    let again = page_reload(&b).json();
    assert_eq!(setting_names(&again["changed"]), Vec::<String>::new());
    assert_eq!(setting_names(&again["restart"]), ["ws_listen", "sync"]);
    let log = reload_log(&b, 2);
    assert!(
        log.contains("config reload: 0 applied, 2 need a restart"),
        "{log}"
    );
}

#[test]
fn a_config_file_that_does_not_parse_changes_nothing() {
    let conf = ConfigFile::new("allow_anonymous true\nmax_clients 1\n");
    let b = start(&conf, &[]);
    let (first, ok) = connect(b.mqtt, "first");
    assert_eq!(ok, SUCCESS);

    conf.write("allow_anonymous true\nmax_clients 5\nno_such_setting 1\n");
    b.sighup();
    let log = reload_log(&b, 1);
    assert!(log.contains("not applied, nothing changed"), "{log}");
    assert!(log.contains("no_such_setting"), "the line says why: {log}");
    assert!(!log.contains("max_clients 1 -> 5"), "{log}");
    let (_, refused) = connect(b.mqtt, "second");
    assert_eq!(refused, QUOTA_EXCEEDED, "max_clients is still 1");

    // A value out of range is refused the same way, by the page too.
    conf.write("allow_anonymous true\nmax_clients 0\n");
    let r = page_reload(&b);
    assert_eq!(r.status, 422, "{}", r.text());
    let v = r.json();
    let error = v["error"].as_str().expect("an error");
    assert!(error.contains("max_clients"), "{error}");
    assert_eq!(setting_names(&v["changed"]), Vec::<String>::new());
    let (_, refused) = connect(b.mqtt, "third");
    assert_eq!(refused, QUOTA_EXCEEDED, "max_clients is still 1");
    assert_connected(&first, "first");
}
