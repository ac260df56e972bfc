//! The `mqtt5-broker` command line and configuration sources, against the real binary:
//! `--help`, errors (one `mqtt5-broker: …` line on stderr, exit code 2), the config file,
//! `MQTT5_BROKER_<SETTING>` environment variables, their precedence (defaults < file < env <
//! flags), and the `MQTT listening on …` / `web page on http://…/` log lines with the real
//! ports.
//!
//! Settings are observed from outside: `max_clients` through CONNACK 0x97 (MQTT 5.0
//! §3.2.2.2), the others through the CONNACK properties Receive Maximum, Topic Alias Maximum
//! and Server Keep Alive (§3.2.2.3).

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use common::*;

const BIN: &str = env!("CARGO_BIN_EXE_mqtt5-broker");
const ANON: &str = "--allow-anonymous";

/// Every setting's file key and flag, from the README's settings table (which a unit test in
/// src/config.rs keeps equal to the broker's own table): `(max_clients, --max-clients)`.
fn readme_settings() -> Vec<(String, String)> {
    const MARKER: &str = "<!-- settings table:";
    let readme = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md"))
        .expect("read README.md");
    let table = &readme[readme.find(MARKER).expect("settings table marker")..];
    table
        .lines()
        .skip(3) // marker, header, separator
        .take_while(|line| line.starts_with('|'))
        .map(|row| {
            let cell: Vec<&str> = row.split('`').collect();
            (cell[1].to_string(), cell[3].to_string())
        })
        .collect()
}

// ------------------------------------------------------------------ processes

/// A command for the binary with a clean `MQTT5_BROKER_*` environment plus `env`.
fn command(args: &[&str], env: &[(&str, &str)]) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.args(args);
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("MQTT5_BROKER_") {
            cmd.env_remove(key);
        }
    }
    cmd.envs(env.iter().copied())
        .env("RUST_LOG", "info")
        .env("RUST_LOG_STYLE", "never")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd
}

fn collect<R: Read + Send + 'static>(src: R, into: Arc<Mutex<String>>) -> JoinHandle<()> {
    thread::spawn(move || {
        let mut r = BufReader::new(src);
        let mut line = Vec::new();
        while matches!(r.read_until(b'\n', &mut line), Ok(n) if n > 0) {
            into.lock()
                .unwrap()
                .push_str(&String::from_utf8_lossy(&line));
            line.clear();
        }
    })
}

/// How a run that is expected to end ended.
struct Exit {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

/// Runs the binary to its exit (≤ 5 s, else it is killed and the test fails). Listeners are
/// pinned to 127.0.0.1:0 and the database to a temp dir in case it unexpectedly starts.
fn run_to_exit(args: &[&str], env: &[(&str, &str)]) -> Exit {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("broker.db");
    let mut all = vec![
        "--listen",
        "127.0.0.1:0",
        "--web-listen",
        "127.0.0.1:0",
        "--db",
        db.to_str().unwrap(),
    ];
    all.extend_from_slice(args);
    let mut child = command(&all, env).spawn().expect("start broker");
    let (out, err) = (Arc::default(), Arc::default());
    let readers = [
        collect(child.stdout.take().unwrap(), Arc::clone(&out)),
        collect(child.stderr.take().unwrap(), Arc::clone(&err)),
    ];
    let deadline = Instant::now() + Duration::from_secs(5);
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "{args:?} did not exit within 5 s\nstdout: {}\nstderr: {}",
                out.lock().unwrap(),
                err.lock().unwrap()
            );
        }
        thread::sleep(Duration::from_millis(10));
    };
    for r in readers {
        let _ = r.join();
    }
    let stdout = out.lock().unwrap().clone();
    let stderr = err.lock().unwrap().clone();
    Exit {
        code: status.code(),
        stdout,
        stderr,
    }
}

/// A broker started with extra environment variables (the shared harness inherits the test
/// process's environment, which parallel tests must not change). Killed, by PID, on drop.
struct EnvBroker {
    mqtt: SocketAddr,
    child: Child,
    log: Arc<Mutex<String>>,
    _dir: tempfile::TempDir,
}

impl EnvBroker {
    fn start(args: &[&str], env: &[(&str, &str)]) -> EnvBroker {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("broker.db");
        let mut all = vec![
            "--listen",
            "127.0.0.1:0",
            "--web-listen",
            "127.0.0.1:0",
            "--db",
            db.to_str().unwrap(),
        ];
        all.extend_from_slice(args);
        let mut child = command(&all, env).spawn().expect("start broker");
        let log: Arc<Mutex<String>> = Arc::default();
        collect(child.stdout.take().unwrap(), Arc::clone(&log));
        collect(child.stderr.take().unwrap(), Arc::clone(&log));
        let mut b = EnvBroker {
            mqtt: "127.0.0.1:0".parse().unwrap(),
            child,
            log,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let text = b.log.lock().unwrap().clone();
            let web = addr_after(&text, "web page on http://");
            if let (Some(m), Some(_)) = (addr_after(&text, "MQTT listening on "), web) {
                b.mqtt = m;
                return b;
            }
            if let Some(st) = b.child.try_wait().unwrap() {
                panic!("broker exited with {st} before listening\n{text}");
            }
            assert!(
                Instant::now() < deadline,
                "broker not listening within 10 s\n{text}"
            );
            thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for EnvBroker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The `ADDR:PORT` following `marker` in the log (e.g. `web page on http://127.0.0.1:1/`).
fn addr_after(log: &str, marker: &str) -> Option<SocketAddr> {
    let line = log.lines().find(|l| l.contains(marker))?;
    let rest = &line[line.find(marker)? + marker.len()..];
    let token: String = rest
        .chars()
        .take_while(|c| !c.is_whitespace() && *c != '/')
        .collect();
    token.parse().ok()
}

/// Checks a failed start: exit code 2, nothing on stdout, exactly one stderr line that starts
/// with `mqtt5-broker:` and mentions `mentions`.
fn expect_usage_error(exit: &Exit, mentions: &str) {
    assert_eq!(
        exit.code,
        Some(2),
        "exit code\nstdout: {}\nstderr: {}",
        exit.stdout,
        exit.stderr
    );
    assert_eq!(exit.stdout, "", "nothing on stdout");
    let lines: Vec<&str> = exit.stderr.lines().collect();
    assert_eq!(lines.len(), 1, "one stderr line, got {:?}", exit.stderr);
    assert!(
        lines[0].starts_with("mqtt5-broker: "),
        "stderr line {:?}",
        lines[0]
    );
    assert!(
        lines[0].contains(mentions),
        "stderr line {:?} should mention {mentions:?}",
        lines[0]
    );
}

/// A config file in a temp dir (kept alive by the returned guard).
fn config_file(contents: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("broker.conf");
    std::fs::write(&path, contents).unwrap();
    (dir, path)
}

fn path_str(p: &Path) -> &str {
    p.to_str().expect("UTF-8 temp path")
}

// ---------------------------------------------------------------- MQTT bits

/// Variable Byte Integer at the start of `b`: (value, bytes used).
fn varint_at(b: &[u8]) -> (u32, usize) {
    let mut value = 0u32;
    for (i, byte) in b.iter().enumerate().take(4) {
        value |= u32::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return (value, i + 1);
        }
    }
    panic!("malformed varint in {}", hex(b));
}

/// 5.0 CONNACK reason code and its integer properties (id, value); other properties skipped.
fn connack_v5(pkt: &[u8]) -> (u8, Vec<(u8, u32)>) {
    assert_eq!(pkt.first(), Some(&0x20), "not a CONNACK: {}", hex(pkt));
    let (_, n) = varint_at(&pkt[1..]);
    let body = &pkt[1 + n..];
    let reason = body[1];
    let (plen, m) = varint_at(&body[2..]);
    let mut p = &body[2 + m..2 + m + plen as usize];
    let mut ints = Vec::new();
    while !p.is_empty() {
        let id = p[0];
        p = &p[1..];
        let size = match id {
            0x24 | 0x25 | 0x28 | 0x29 | 0x2a => 1,
            0x13 | 0x21 | 0x22 => 2,
            0x11 | 0x27 => 4,
            0x12 | 0x1a | 0x1c | 0x1f | 0x15 | 0x16 => {
                let len = u16::from_be_bytes([p[0], p[1]]) as usize;
                p = &p[2 + len..];
                continue;
            }
            0x26 => {
                for _ in 0..2 {
                    let len = u16::from_be_bytes([p[0], p[1]]) as usize;
                    p = &p[2 + len..];
                }
                continue;
            }
            other => panic!("unexpected CONNACK property 0x{other:02x}: {}", hex(pkt)),
        };
        let value = p[..size]
            .iter()
            .fold(0u32, |acc, b| (acc << 8) | u32::from(*b));
        ints.push((id, value));
        p = &p[size..];
    }
    (reason, ints)
}

/// Raw 5.0 CONNECT: the socket, the CONNACK reason and its integer properties.
fn connect_v5(addr: SocketAddr, id: &str, keep_alive: u16) -> (TcpStream, u8, Vec<(u8, u32)>) {
    let s = connect_raw(addr);
    send(&s, &packet::connect_v5(id, keep_alive, true));
    let (reason, props) = connack_v5(&read_packet(&s));
    (s, reason, props)
}

fn prop(props: &[(u8, u32)], id: u8) -> Option<u32> {
    props.iter().find(|(i, _)| *i == id).map(|(_, v)| *v)
}

/// `n` clients are admitted and the next gets CONNACK 0x97 then the close: `max_clients == n`.
fn expect_max_clients(addr: SocketAddr, n: usize) -> Vec<TcpStream> {
    expect_max_clients_after(addr, 0, n)
}

/// Like [`expect_max_clients`] with `already` clients connected beforehand.
fn expect_max_clients_after(addr: SocketAddr, already: usize, n: usize) -> Vec<TcpStream> {
    let mut admitted = Vec::new();
    for i in already..n {
        let (s, reason, _) = connect_v5(addr, &format!("c{i}"), 30);
        assert_eq!(reason, 0, "client {} of {n} refused", i + 1);
        admitted.push(s);
    }
    let (s, reason, _) = connect_v5(addr, "one-too-many", 30);
    assert_eq!(reason, 0x97, "client {} should get Quota exceeded", n + 1);
    let rest = expect_closed(&s, Duration::from_secs(3));
    assert!(rest.is_empty(), "bytes after CONNACK 0x97: {}", hex(&rest));
    admitted
}

// ---------------------------------------------------------------- help / errors

/// `--help` lists `--config` and every setting of the README's table with its flag and its
/// environment variable, on stdout, exit 0.
#[test]
fn help_lists_every_readme_setting_and_exits_0() {
    let exit = run_to_exit(&["--help"], &[]);
    assert_eq!(exit.code, Some(0), "stderr: {}", exit.stderr);
    let settings = readme_settings();
    assert!(settings.len() >= 30, "README settings table: {settings:?}");
    assert!(exit.stdout.contains("--config <FILE>"), "{}", exit.stdout);
    for (name, flag) in settings {
        assert_eq!(
            flag,
            format!("--{}", name.replace('_', "-")),
            "README row {name}"
        );
        let env = format!("[env: MQTT5_BROKER_{}]", name.to_ascii_uppercase());
        let line = exit.stdout.lines().position(|l| {
            // `      --max-clients <N>` or `      --allow-anonymous[=<BOOL>]`
            l.trim_start().split([' ', '[']).next() == Some(flag.as_str())
        });
        let help = line
            .and_then(|i| exit.stdout.lines().nth(i + 1))
            .unwrap_or("");
        assert!(
            help.contains(&env),
            "--help for {flag}: {help:?}\n{}",
            exit.stdout
        );
    }
    assert!(!exit.stdout.contains("MQTT listening on"));
}

/// An unknown flag: one `mqtt5-broker:` line naming it, exit code 2.
#[test]
fn unknown_flag_prints_one_line_and_exits_2() {
    let exit = run_to_exit(&["--no-such-flag"], &[]);
    expect_usage_error(&exit, "--no-such-flag");
}

/// `--max-clients abc`, `--max-clients 0` (range 1..=100000) and a missing value: one
/// `mqtt5-broker:` line, exit code 2.
#[test]
fn bad_max_clients_values_print_one_line_and_exit_2() {
    expect_usage_error(&run_to_exit(&["--max-clients", "abc"], &[]), "abc");
    expect_usage_error(&run_to_exit(&["--max-clients", "0"], &[]), "max_clients");
    expect_usage_error(
        &run_to_exit(&["--max-clients", "100001"], &[]),
        "max_clients",
    );
    expect_usage_error(&run_to_exit(&["--max-clients"], &[]), "--max-clients");
}

/// Bad values from the environment and the config file, an unknown file setting and a
/// missing config file are reported the same way: one line, exit code 2.
#[test]
fn bad_env_and_file_values_print_one_line_and_exit_2() {
    expect_usage_error(
        &run_to_exit(&[], &[("MQTT5_BROKER_MAX_CLIENTS", "abc")]),
        "MQTT5_BROKER_MAX_CLIENTS",
    );
    let (_d1, bad_value) = config_file("max_clients 0\n");
    expect_usage_error(
        &run_to_exit(&["--config", path_str(&bad_value)], &[]),
        "line 1",
    );
    let (_d2, unknown) = config_file("# ok\nmax_client 5\n");
    expect_usage_error(
        &run_to_exit(&["--config", path_str(&unknown)], &[]),
        "max_client",
    );
    expect_usage_error(
        &run_to_exit(&["--config", "/nonexistent/mqtt5-broker.conf"], &[]),
        "/nonexistent/mqtt5-broker.conf",
    );
}

/// Two listeners on one address cannot both bind: refused at start in one line naming both
/// settings and addresses, exit 2 — from repeated flags (of one kind and of two), and from a
/// config file's two `listener` blocks on one port.
#[test]
fn two_listeners_on_one_address_print_one_line_and_exit_2() {
    expect_usage_error(
        &run_to_exit(
            &[
                "--ws-listen",
                "127.0.0.1:9001",
                "--ws-listen",
                "127.0.0.1:9001",
            ],
            &[],
        ),
        "ws_listen has 127.0.0.1:9001 and 127.0.0.1:9001, which use the same port",
    );
    expect_usage_error(
        // After the harness's own `--listen 127.0.0.1:0`: a second plain listener.
        &run_to_exit(
            &[
                "--listen",
                "127.0.0.1:9002",
                "--ws-listen",
                "127.0.0.1:9002",
            ],
            &[],
        ),
        "listen (127.0.0.1:9002) and ws_listen (127.0.0.1:9002) use the same port",
    );
    let (_d, conf) = config_file(
        "listener 9003 127.0.0.1\nprotocol websockets\nlistener 9003\nprotocol websockets\n",
    );
    expect_usage_error(
        &run_to_exit(&["--config", path_str(&conf)], &[]),
        "ws_listen has 127.0.0.1:9003 and 0.0.0.0:9003",
    );
}

/// Bridge settings (Mosquitto's `connection` blocks): a key we do not have, a bad value, a
/// TLS file that cannot be read — one line, exit 2, never a broker that silently forwards
/// nothing.
#[test]
fn bad_bridge_settings_print_one_line_and_exit_2() {
    let block = "connection garage\naddress 127.0.0.1:1\ntopic t/# both 1\n";
    let (_d1, unsupported) = config_file(&format!("{block}round_robin true\n"));
    expect_usage_error(
        &run_to_exit(&["--config", path_str(&unsupported)], &[]),
        "bridge setting 'round_robin' is not supported by this build",
    );
    let (_d2, bad) = config_file(&format!("{block}restart_timeout 30 5\n"));
    let exit = run_to_exit(&["--config", path_str(&bad)], &[]);
    expect_usage_error(&exit, "line 4");
    expect_usage_error(&exit, path_str(&bad));
    let (_d3, cafile) = config_file(&format!("{block}bridge_cafile /nonexistent/ca.pem\n"));
    expect_usage_error(
        &run_to_exit(&["--config", path_str(&cafile), ANON], &[]),
        "bridge 'garage': cannot read bridge_cafile '/nonexistent/ca.pem'",
    );
    // Parsed, but not run: Mosquitto's lazy start needs threshold and idle_timeout.
    let (_d4, lazy) = config_file(&format!("{block}start_type lazy\n"));
    expect_usage_error(
        &run_to_exit(&["--config", path_str(&lazy), ANON], &[]),
        "bridge 'garage' (config file line 1): start_type lazy is not supported",
    );
}

// ------------------------------------------------------------- sources honoured

/// `max_clients 1` in the `--config` file: the second client gets CONNACK 0x97.
#[test]
fn config_file_max_clients_1_refuses_second_client() {
    let (_d, path) = config_file("# test config\nmax_clients 1\nallow_anonymous true\n");
    let b = Broker::start(&["--config", path_str(&path)]);
    expect_max_clients(b.mqtt, 1);
}

/// `MQTT5_BROKER_MAX_CLIENTS=1` (and `MQTT5_BROKER_ALLOW_ANONYMOUS=true`) are honoured.
#[test]
fn env_max_clients_1_refuses_second_client() {
    let b = EnvBroker::start(
        &[],
        &[
            ("MQTT5_BROKER_MAX_CLIENTS", "1"),
            ("MQTT5_BROKER_ALLOW_ANONYMOUS", "true"),
        ],
    );
    expect_max_clients(b.mqtt, 1);
}

/// `MQTT5_BROKER_CONFIG` names the config file when `--config` is absent; `--config` wins
/// over it.
#[test]
fn env_config_names_file_and_config_flag_wins() {
    let (_d1, one) = config_file("max_clients 1\n");
    let (_d2, two) = config_file("max_clients = 2\n");
    let env_only = EnvBroker::start(&[ANON], &[("MQTT5_BROKER_CONFIG", path_str(&one))]);
    expect_max_clients(env_only.mqtt, 1);
    let flag_wins = EnvBroker::start(
        &[ANON, "--config", path_str(&two)],
        &[("MQTT5_BROKER_CONFIG", path_str(&one))],
    );
    expect_max_clients(flag_wins.mqtt, 2);
}

/// Precedence defaults < file < environment < flags, per setting:
/// * receive_maximum only in the file (an empty env variable counts as unset) → 11;
/// * max_topic_alias file 12, env 22 → 22;
/// * max_keepalive file 13, env 23, flag 33 → 33 (Server Keep Alive for a client asking 60);
/// * max_clients file 1, env 1, flag 2 → 2.
#[test]
fn flags_override_env_override_file() {
    let (_d, path) = config_file(
        "# precedence\n\
         receive_maximum 11\n\
         max_topic_alias = 12\n\
         max_keepalive 13\n\
         max_clients 1\n\
         allow_anonymous true\n",
    );
    let b = EnvBroker::start(
        &[
            "--config",
            path_str(&path),
            "--max-keepalive",
            "33",
            "--max-clients",
            "2",
        ],
        &[
            ("MQTT5_BROKER_RECEIVE_MAXIMUM", ""),
            ("MQTT5_BROKER_MAX_TOPIC_ALIAS", "22"),
            ("MQTT5_BROKER_MAX_KEEPALIVE", "23"),
            ("MQTT5_BROKER_MAX_CLIENTS", "1"),
        ],
    );
    let (s, reason, props) = connect_v5(b.mqtt, "precedence", 60);
    assert_eq!(reason, 0, "{props:?}");
    assert_eq!(prop(&props, 0x21), Some(11), "Receive Maximum (file)");
    assert_eq!(prop(&props, 0x22), Some(22), "Topic Alias Maximum (env)");
    assert_eq!(prop(&props, 0x13), Some(33), "Server Keep Alive (flag)");
    // max_clients 2: "precedence" plus one more are admitted, the next is refused.
    let _others = expect_max_clients_after(b.mqtt, 1, 2);
    drop(s);
}

// ------------------------------------------------------------------ listeners

/// One HTTP/1.1 GET; returns (status code, lower-cased headers, body).
fn http_get(addr: SocketAddr, path: &str) -> (u16, String, String) {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).expect("read HTTP response");
    let text = String::from_utf8(raw).expect("UTF-8 response");
    let (head, body) = text.split_once("\r\n\r\n").expect("header / body split");
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .expect("status code");
    let headers = head.to_ascii_lowercase();
    let body = if headers.contains("transfer-encoding: chunked") {
        let mut out = String::new();
        let mut rest = body;
        while let Some((size, tail)) = rest.split_once("\r\n") {
            let n = usize::from_str_radix(size.trim(), 16).expect("chunk size");
            if n == 0 {
                break;
            }
            out.push_str(&tail[..n]);
            rest = &tail[n + 2..];
        }
        out
    } else {
        body.to_string()
    };
    (status, headers, body)
}

/// The log names both listeners with the ports really bound (the harness asks for port 0):
/// MQTT answers CONNECT on the logged port, and `GET /api/status` on the logged web port
/// returns JSON describing this broker.
#[test]
fn listening_log_lines_name_real_ports_and_both_answer() {
    let b = Broker::start(&[ANON]);
    let log = b.log();
    assert_ne!(b.mqtt.port(), 0);
    assert_ne!(b.web.port(), 0);
    assert_ne!(b.mqtt.port(), b.web.port());
    assert!(
        log.contains(&format!("MQTT listening on 127.0.0.1:{}", b.mqtt.port())),
        "{log}"
    );
    assert!(
        log.contains(&format!("web page on http://127.0.0.1:{}/", b.web.port())),
        "{log}"
    );

    let s = connect_raw(b.mqtt);
    send(&s, &packet::connect_v311("status-probe", 30, true));
    expect_bytes(&s, &packet::connack_v311(false, 0));

    let (status, headers, body) = http_get(b.web, "/api/status");
    assert_eq!(status, 200, "{headers}\n{body}");
    assert!(
        headers.contains("content-type: application/json"),
        "{headers}"
    );
    let json: serde_json::Value = serde_json::from_str(&body).expect("JSON body");
    assert_eq!(json["running"], serde_json::json!(true), "{json}");
    assert_eq!(
        json["mqtt_address"],
        serde_json::json!(b.mqtt.to_string()),
        "{json}"
    );
    assert_eq!(json["clients_connected"], serde_json::json!(1), "{json}");
}
