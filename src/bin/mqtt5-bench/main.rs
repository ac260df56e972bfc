//! `mqtt5-bench`: the project's MQTT load generator (MQTT 5.0 and 3.1.1), for any broker on
//! 127.0.0.1. This file owns the command line, the scenario presets and the report; the work is
//! in [`pubsub`] (fan-in, fan-out, latency, round trip), [`connections`], [`client`] (a minimal
//! blocking client on the crate's codec), [`transport`] (tcp, TLS, WebSockets, wss under it),
//! [`accounting`] (payload format and loss / duplicate /
//! reorder / corrupt counting) and [`procfs`] (CPU and RSS from `/proc`). The main thread parses
//! the command line, runs one scenario and prints its result.
//!
//! Every payload carries publisher id, sequence number and send time, padded to `--payload`
//! bytes. Each subscriber checks every message; a run with loss at QoS ≥ 1, a duplicate at QoS 2,
//! any reorder (per publisher), any corrupt payload or any protocol error is FAILED and exits
//! with status 1 — fast but wrong is not fast.
//!
//! Output: one JSON object per line on stdout (the machine-readable result) and a human summary
//! on stderr. Exit status: 0 passed, 1 failed, 2 bad usage (clap) or setup error.

mod accounting;
mod client;
mod connections;
mod procfs;
mod pubsub;
mod transport;

use std::net::{Ipv4Addr, SocketAddr};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::{Parser, ValueEnum};
use mqtt5_broker::protocol::{ProtocolVersion, QoS};
use serde_json::{json, Value};

use crate::pubsub::{Fan, Fault};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Scenario {
    /// N publishers (default 10) → 1 subscriber on a wildcard filter.
    FanIn,
    /// 1 publisher → N subscribers (default 10) on its exact topic.
    FanOut,
    /// 1 publisher → 1 subscriber at a fixed rate (--rate) for --duration seconds.
    Latency,
    /// 1 publisher → 1 subscriber, at most --window messages published but not yet received
    /// (QoS 1 unless --qos says otherwise).
    Roundtrip,
    /// --clients clients connect and subscribe, then each must receive one probe.
    Connections,
}

#[derive(Debug, Parser)]
#[command(
    name = "mqtt5-bench",
    about = "Load generator for MQTT brokers on 127.0.0.1: checks every message (loss, \
             duplicates, reorders, corruption) and reports one JSON line per result",
    after_help = "Exit status: 0 passed, 1 FAILED (loss at QoS>=1, duplicate at QoS 2, any \
                  reorder or corrupt payload, protocol errors), 2 usage or setup error."
)]
struct Cli {
    /// The broker's MQTT port on 127.0.0.1 (no default: never 1883 by accident); with --tls,
    /// --ws or both, its TLS, WebSocket or secure WebSocket listener.
    #[arg(long)]
    port: u16,
    /// The subscribers' port on 127.0.0.1 (default: --port), for a second broker that the
    /// first forwards to (a bridge): publishers connect to --port, subscribers here, with the
    /// same transport. --broker-pid then names the broker that does the forwarding.
    #[arg(long, value_name = "PORT")]
    sub_port: Option<u16>,
    /// MQTT over TLS (1.2 or 1.3, rustls with ring; the server certificate must be valid for
    /// 127.0.0.1 under --cafile; no session resumption: every connection is a full handshake).
    /// With --ws: secure WebSockets (wss).
    #[arg(long, requires = "cafile")]
    tls: bool,
    /// PEM file of the CA certificates that --tls trusts.
    #[arg(long, value_name = "FILE", requires = "tls")]
    cafile: Option<std::path::PathBuf>,
    /// MQTT over WebSockets: path /mqtt, subprotocol `mqtt`, one binary frame per write (a
    /// publisher's batch of up to 32 KiB of PUBLISH packets, or one packet).
    #[arg(long)]
    ws: bool,
    #[arg(long, value_enum)]
    scenario: Scenario,
    /// MQTT version: 5 or 3.1.1.
    #[arg(long, default_value = "5", value_parser = parse_version)]
    protocol: ProtocolVersion,
    /// QoS of publications and subscriptions (default: 1 for roundtrip, else 0).
    #[arg(long, value_parser = clap::value_parser!(u8).range(0..=2))]
    qos: Option<u8>,
    /// Payload size in bytes (at least 32, the stamp).
    #[arg(long, default_value_t = 64)]
    payload: usize,
    /// Publishers (default: 10 for fan-in, else 1).
    #[arg(long)]
    publishers: Option<usize>,
    /// Subscribers (default: 10 for fan-out, else 1).
    #[arg(long)]
    subscribers: Option<usize>,
    /// Messages per publisher (fan-in, fan-out, roundtrip); latency sends rate × duration.
    #[arg(long, default_value_t = 10_000)]
    messages: u64,
    /// Latency: total messages per second (spread over the publishers).
    #[arg(long, default_value_t = 1_000.0)]
    rate: f64,
    /// Seconds of sending at most (latency: exactly).
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Roundtrip: messages published but not yet received.
    #[arg(long, default_value_t = 10)]
    window: usize,
    /// Connections: number of clients.
    #[arg(long, default_value_t = 1_000)]
    clients: usize,
    /// Connections: threads connecting clients in parallel.
    #[arg(long, default_value_t = 4)]
    connectors: usize,
    /// Receive Maximum the subscribers announce (5.0; default: none, i.e. 65,535).
    #[arg(long)]
    receive_maximum: Option<u16>,
    /// A publisher's QoS >= 1 in-flight window at most N. By default it is the broker's Receive
    /// Maximum (CONNACK), and 65,535 from a broker that announces none (rumqttd 0.20), which
    /// would give that broker a far larger window than one that does.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..))]
    max_publisher_window: Option<u16>,
    /// Keep Alive every client announces in CONNECT, in seconds. 0 (the default) asks for none;
    /// rumqttd 0.20 refuses that (ZeroKeepAlive), so scripts/bench gives every broker 60. No
    /// client sends PINGREQ: a run must finish within the broker's 1.5 × keep-alive.
    #[arg(long, value_name = "SECS", default_value_t = 0)]
    keep_alive: u16,
    /// Broker process id: its CPU use and RSS (from /proc) go into the report.
    #[arg(long)]
    broker_pid: Option<u32>,
    /// Free text copied into the JSON (e.g. the broker's name).
    #[arg(long, default_value = "")]
    label: String,
    /// Seconds the whole run may take, connects included.
    #[arg(long, default_value_t = 120.0)]
    timeout: f64,
    /// Seconds a subscriber waits for more after the publishers are done.
    #[arg(long, default_value_t = 2.0)]
    drain_timeout: f64,
    /// For the generator's own tests: damage subscriber 0's stream (publisher 0, message 1)
    /// before accounting, to prove the fault is reported.
    #[arg(long, value_enum)]
    inject: Option<Fault>,
    /// Write every message's send time and latency as seen by subscriber 0 to FILE (CSV), to
    /// find out when the slow ones happen.
    #[arg(long, value_name = "FILE")]
    latency_log: Option<std::path::PathBuf>,
}

fn parse_version(s: &str) -> Result<ProtocolVersion, String> {
    match s {
        "5" | "5.0" | "v5" => Ok(ProtocolVersion::V5),
        "3.1.1" | "311" | "4" | "v311" => Ok(ProtocolVersion::V311),
        _ => Err(format!("unknown MQTT version '{s}' (use 5 or 3.1.1)")),
    }
}

fn qos_of(n: u8) -> QoS {
    QoS::from_u8(n).unwrap_or(QoS::AtMostOnce)
}

fn secs(s: f64) -> Duration {
    Duration::try_from_secs_f64(s.max(0.0)).unwrap_or(Duration::MAX)
}

fn round(x: f64, digits: i32) -> f64 {
    let m = 10f64.powi(digits);
    (x * m).round() / m
}

fn nproc() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    pubsub::now_ns(); // start the payload clock
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, cli.port));
    let tls = match cli.cafile.as_deref().filter(|_| cli.tls) {
        Some(cafile) => match transport::tls_config(cafile) {
            Ok(c) => Some(c),
            Err(e) => {
                eprintln!("mqtt5-bench: {e}");
                return ExitCode::from(2);
            }
        },
        None => None,
    };
    let endpoint = transport::Endpoint {
        addr,
        tls,
        ws: cli.ws,
    };
    let sub_endpoint = transport::Endpoint {
        addr: SocketAddr::from((Ipv4Addr::LOCALHOST, cli.sub_port.unwrap_or(cli.port))),
        ..endpoint.clone()
    };
    let broker_pid = cli.broker_pid.map(|p| p.to_string());
    let tag = format!("{}-{}", std::process::id(), now_tag());
    let scenario_name = cli
        .scenario
        .to_possible_value()
        .map_or_else(String::new, |v| v.get_name().to_owned());
    let qos = qos_of(cli.qos.unwrap_or(if cli.scenario == Scenario::Roundtrip {
        1
    } else {
        0
    }));
    let payload = cli.payload.max(accounting::HEADER_LEN);

    let gen_cpu = procfs::CpuMeter::start("self");
    let broker_cpu = broker_pid.as_deref().map(procfs::CpuMeter::start);
    let wall = Instant::now();

    let mut report = json!({
        "bench": "mqtt5-bench",
        "label": cli.label,
        "scenario": scenario_name,
        "protocol": cli.protocol.name(),
        "transport": endpoint.name(),
        "qos": qos as u8,
        "payload": payload,
        "nproc": nproc(),
    });
    if let Some(p) = cli.sub_port {
        report["sub_port"] = json!(p);
    }
    let (ok, human) = match cli.scenario {
        Scenario::Connections => run_connections(&cli, &endpoint, &tag, qos, payload, &mut report),
        _ => run_pubsub(
            &cli,
            &endpoint,
            &sub_endpoint,
            &tag,
            qos,
            payload,
            &mut report,
        ),
    };

    let wall_s = wall.elapsed().as_secs_f64();
    if let Some((used, pct)) = gen_cpu.stop("self", wall_s) {
        report["gen_cpu_s"] = json!(round(used, 2));
        report["gen_cpu_pct"] = json!(round(pct, 1));
    }
    if let (Some(m), Some(p)) = (broker_cpu, broker_pid.as_deref()) {
        if let Some((used, pct)) = m.stop(p, wall_s) {
            report["broker_cpu_s"] = json!(round(used, 2));
            report["broker_cpu_pct"] = json!(round(pct, 1));
        }
        report["broker_rss_kib"] = json!(procfs::status_kib(p, "VmRSS"));
        report["broker_hwm_kib"] = json!(procfs::status_kib(p, "VmHWM"));
    }
    report["wall_s"] = json!(round(wall_s, 3));
    let status = match ok {
        Some(true) => "ok",
        Some(false) => "FAILED",
        None => "ERROR",
    };
    report["status"] = json!(status);

    eprintln!(
        "[{}] {} {} {} QoS {} {} B: {}{}",
        if cli.label.is_empty() {
            "-"
        } else {
            &cli.label
        },
        scenario_name,
        endpoint.name(),
        cli.protocol.name(),
        qos as u8,
        payload,
        status,
        human
    );
    if let (Some(g), Some(b)) = (report.get("gen_cpu_pct"), report.get("broker_cpu_pct")) {
        eprintln!(
            "  cpu: generator {g}%  broker {b}%  (of one core; {} cores)",
            nproc()
        );
    } else if let Some(g) = report.get("gen_cpu_pct") {
        eprintln!("  cpu: generator {g}% (of one core; {} cores)", nproc());
    }
    println!("{report}");
    match ok {
        Some(true) => ExitCode::SUCCESS,
        Some(false) => ExitCode::from(1),
        None => ExitCode::from(2),
    }
}

/// A short per-run suffix for topics and client ids (two runs never share one).
fn now_tag() -> String {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() % 1_000_000);
    format!("{t}")
}

/// Runs fan-in / fan-out / latency / roundtrip. Returns (passed, human text); `None` for a
/// setup error (nothing measured).
fn run_pubsub(
    cli: &Cli,
    endpoint: &transport::Endpoint,
    sub_endpoint: &transport::Endpoint,
    tag: &str,
    qos: QoS,
    payload: usize,
    report: &mut Value,
) -> (Option<bool>, String) {
    let (fan, def_pubs, def_subs) = match cli.scenario {
        Scenario::FanIn => (Fan::In, 10, 1),
        Scenario::FanOut => (Fan::Out, 1, 10),
        _ => (Fan::Out, 1, 1),
    };
    let publishers = cli.publishers.unwrap_or(def_pubs).max(1);
    let mut subscribers = cli.subscribers.unwrap_or(def_subs).max(1);
    let (mut messages, mut rate, mut e2e_window) = (cli.messages, None, None);
    match cli.scenario {
        Scenario::Latency => {
            let total = (cli.rate * cli.duration).ceil().max(1.0);
            messages = (total / publishers as f64).ceil() as u64;
            rate = Some(cli.rate / publishers as f64);
        }
        Scenario::Roundtrip => {
            subscribers = 1;
            e2e_window = Some(cli.window.max(1));
        }
        _ => {}
    }
    let plan = pubsub::Plan {
        endpoint: endpoint.clone(),
        sub_endpoint: sub_endpoint.clone(),
        version: cli.protocol,
        topic_base: format!("bench/{tag}"),
        client_prefix: format!("bench-{tag}"),
        fan,
        publishers,
        subscribers,
        qos,
        payload,
        messages,
        rate,
        // Latency: a little slack so that a late schedule still sends every message.
        send_for: if rate.is_some() {
            secs(cli.duration * 1.5 + 1.0)
        } else {
            secs(cli.duration)
        },
        e2e_window,
        sub_receive_maximum: cli.receive_maximum,
        max_publisher_window: cli.max_publisher_window,
        keep_alive: cli.keep_alive,
        timeout: secs(cli.timeout),
        drain: secs(cli.drain_timeout),
        inject: cli.inject,
        latency_log: cli.latency_log.clone(),
    };
    report["publishers"] = json!(publishers);
    report["subscribers"] = json!(subscribers);
    if let Some(r) = rate {
        report["rate"] = json!(r * publishers as f64);
    }
    if let Some(w) = e2e_window {
        report["window"] = json!(w);
    }
    if let Some(w) = cli.max_publisher_window {
        report["max_publisher_window"] = json!(w);
    }
    let out = match pubsub::run(&plan) {
        Ok(o) => o,
        Err(e) => {
            report["errors"] = json!([e.0.clone()]);
            return (None, format!(" setup failed: {e}"));
        }
    };
    let s = &out.summary;
    let sent: u64 = out.sent.iter().sum();
    let dur = out.duration.as_secs_f64();
    let pub_dur = out.publish_duration.as_secs_f64();
    let delivered_per_s = if dur > 0.0 {
        s.unique as f64 / dur
    } else {
        0.0
    };
    let sent_per_s = if pub_dur > 0.0 {
        sent as f64 / pub_dur
    } else {
        0.0
    };
    let mut failures = s.failures(qos as u8);
    failures.extend(out.errors.iter().cloned());
    if sent == 0 {
        failures.push("nothing was sent".into());
    }
    let short_send = cli.scenario != Scenario::Latency
        && out.sent.iter().any(|&n| n < messages)
        && out.errors.is_empty();
    report["sent"] = json!(sent);
    report["expected"] = json!(out.expected);
    report["received"] = json!(s.received);
    report["unique"] = json!(s.unique);
    report["lost"] = json!(s.lost);
    report["duplicates"] = json!(s.duplicates);
    report["reordered"] = json!(s.reorders);
    report["corrupt"] = json!(s.corrupt);
    report["unsent"] = json!(s.unsent);
    report["duration_s"] = json!(round(dur, 4));
    report["publish_s"] = json!(round(pub_dur, 4));
    report["sent_per_s"] = json!(round(sent_per_s, 1));
    report["delivered_per_s"] = json!(round(delivered_per_s, 1));
    report["send_time_capped"] = json!(short_send);
    if let Some(l) = out.latency {
        report["latency_us"] = json!({
            "count": l.count, "p50": l.p50, "p90": l.p90, "p99": l.p99,
            "p999": l.p999, "max": l.max,
        });
    }
    report["failures"] = json!(failures);
    let mut human = format!(
        "\n  sent {sent} ({sent_per_s:.0}/s), delivered {} of {} ({delivered_per_s:.0}/s over {dur:.3} s); \
         lost {}, duplicates {}, reordered {}, corrupt {}",
        s.unique, out.expected, s.lost, s.duplicates, s.reorders, s.corrupt
    );
    if let Some(l) = out.latency {
        human.push_str(&format!(
            "\n  latency µs: p50 {} p99 {} p99.9 {} max {} ({} samples)",
            l.p50, l.p99, l.p999, l.max, l.count
        ));
    }
    for f in failures.iter().take(10) {
        human.push_str(&format!("\n  FAILURE: {f}"));
    }
    (Some(failures.is_empty()), human)
}

/// Runs the connections scenario. Returns (passed, human text).
fn run_connections(
    cli: &Cli,
    endpoint: &transport::Endpoint,
    tag: &str,
    qos: QoS,
    payload: usize,
    report: &mut Value,
) -> (Option<bool>, String) {
    let need = cli.clients as u64 + 64;
    if let Some(limit) = procfs::open_files_limit() {
        if limit < need {
            let msg = format!(
                "open-file limit {limit} is below the {need} this run needs: raise it (ulimit -n)"
            );
            report["errors"] = json!([msg.clone()]);
            return (None, format!(" {msg}"));
        }
    }
    let plan = connections::Plan {
        endpoint: endpoint.clone(),
        version: cli.protocol,
        topic_base: format!("bench/{tag}"),
        client_prefix: format!("bench-{tag}"),
        clients: cli.clients,
        connectors: cli.connectors,
        qos,
        payload,
        broker_pid: cli.broker_pid,
        timeout: secs(cli.timeout),
        keep_alive: cli.keep_alive,
    };
    let out = match connections::run(&plan) {
        Ok(o) => o,
        Err(e) => {
            report["errors"] = json!([e.0.clone()]);
            return (None, format!(" setup failed: {e}"));
        }
    };
    let cd = out.connect_duration.as_secs_f64();
    let per_s = if cd > 0.0 {
        out.connected as f64 / cd
    } else {
        0.0
    };
    let per_conn = match (out.rss_idle_kib, out.rss_connected_kib) {
        (Some(a), Some(b)) if out.connected > 0 => {
            Some(b.saturating_sub(a) as f64 / out.connected as f64)
        }
        _ => None,
    };
    let mut failures = out.errors.clone();
    if out.connected < cli.clients {
        failures.push(format!(
            "{} of {} clients failed to connect",
            cli.clients - out.connected,
            cli.clients
        ));
    }
    if out.probes_received < out.connected {
        failures.push(format!(
            "{} connected clients did not receive the probe",
            out.connected - out.probes_received
        ));
    }
    if out.probes_corrupt > 0 {
        failures.push(format!("{} corrupt probes", out.probes_corrupt));
    }
    report["clients"] = json!(cli.clients);
    report["connected"] = json!(out.connected);
    report["connect_s"] = json!(round(cd, 4));
    report["connections_per_s"] = json!(round(per_s, 1));
    report["broker_rss_idle_kib"] = json!(out.rss_idle_kib);
    report["broker_rss_connected_kib"] = json!(out.rss_connected_kib);
    report["rss_per_conn_kib"] = json!(per_conn.map(|v| round(v, 2)));
    report["broker_threads"] = json!(out.broker_threads);
    report["probes_received"] = json!(out.probes_received);
    report["probe_ms"] = json!(round(out.probe_duration.as_secs_f64() * 1000.0, 2));
    report["failures"] = json!(failures);
    let mut human = format!(
        "\n  {} of {} connected in {cd:.3} s ({per_s:.0}/s); probe reached {} in {:.1} ms",
        out.connected,
        cli.clients,
        out.probes_received,
        out.probe_duration.as_secs_f64() * 1000.0
    );
    if let (Some(a), Some(b), Some(p)) = (out.rss_idle_kib, out.rss_connected_kib, per_conn) {
        human.push_str(&format!(
            "\n  broker RSS: idle {a} KiB, connected {b} KiB, {p:.1} KiB per connection"
        ));
    }
    for f in failures.iter().take(10) {
        human.push_str(&format!("\n  FAILURE: {f}"));
    }
    (Some(failures.is_empty()), human)
}
