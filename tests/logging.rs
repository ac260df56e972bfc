//! The log's format (issue 16, "readable logs for a service"): level, module and message, never
//! colour codes when stderr is not a terminal; under systemd, when stderr is the journal
//! (`JOURNAL_STREAM` names it), `<N>LEVEL module: message` without a time (the journal stamps
//! it) so that the journal knows each line's priority.

use std::fs::File;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

/// Starts the broker with stderr into `log` and the environment `env`, waits for its listen
/// line (bounded), stops it (our own child, by its handle) and returns the log.
fn log_of(dir: &Path, log: &Path, env: &[(&str, String)]) -> String {
    let stderr = File::options().append(true).open(log).unwrap();
    let mut child: Child = Command::new(env!("CARGO_BIN_EXE_mqtt5-broker"))
        .args([
            "--listen",
            "127.0.0.1:0",
            "--web-listen",
            "127.0.0.1:0",
            "--db",
        ])
        .arg(dir.join("broker.db"))
        .env_remove("RUST_LOG")
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(stderr)
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let text = loop {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        if text.contains("web page on") {
            break text;
        }
        if Instant::now() >= deadline || child.try_wait().unwrap().is_some() {
            let _ = child.kill();
            let _ = child.wait();
            panic!("no start within 20 s:\n{text}");
        }
        thread::sleep(Duration::from_millis(10));
    };
    let _ = child.kill();
    let _ = child.wait();
    text
}

#[test]
fn journal_lines_carry_the_syslog_priority_and_no_time() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("journal.log");
    File::create(&log).unwrap();
    let meta = std::fs::metadata(&log).unwrap();
    let stream = format!("{}:{}", meta.dev(), meta.ino());
    let text = log_of(dir.path(), &log, &[("JOURNAL_STREAM", stream)]);
    let listen = text
        .lines()
        .find(|l| l.contains("MQTT listening on"))
        .unwrap_or_else(|| panic!("{text}"));
    assert!(
        listen.starts_with("<6>INFO mqtt5_broker::broker::server: MQTT listening on 127.0.0.1:"),
        "{listen}"
    );
    // The generated admin password is a warning: priority 4.
    assert!(
        text.lines()
            .any(|l| l.starts_with("<4>WARN mqtt5_broker::web::auth: admin password")),
        "{text}"
    );
    assert!(
        !text.contains('\u{1b}') && !text.contains("Z INFO"),
        "{text}"
    );
}

#[test]
fn a_redirected_stderr_gets_time_level_module_and_no_colour() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("plain.log");
    File::create(&log).unwrap();
    // Inherited from a unit whose stderr was the journal, but stderr is now a file.
    let text = log_of(dir.path(), &log, &[("JOURNAL_STREAM", "1:2".to_string())]);
    let listen = text
        .lines()
        .find(|l| l.contains("MQTT listening on"))
        .unwrap_or_else(|| panic!("{text}"));
    // [2026-12-05T23:09:17Z INFO  mqtt5_broker::broker::server] MQTT listening on ...
    assert!(listen.starts_with('['), "{listen}");
    assert!(
        listen.contains("Z INFO  mqtt5_broker::broker::server] MQTT listening on 127.0.0.1:"),
        "{listen}"
    );
    assert!(!text.contains('\u{1b}'), "colour codes in a file: {text:?}");
}
