//! The connections scenario of the load generator: N clients connect and subscribe (spread over
//! a few `bench-conn-<k>` connector threads, each owning its share of the sockets), the broker's
//! RSS is read, then one probe is published and every client must receive it.
//!
//! Measures connections per second (CONNECT to SUBACK, all clients), the broker's RSS when idle
//! and with every client connected (per connection: the difference over N), and the time for the
//! probe to reach every client. Every wait is bounded by the run deadline.

use std::thread;
use std::time::{Duration, Instant};

use crossbeam_channel::{bounded, Receiver, Sender};
use mqtt5_broker::protocol::publish::write_out;
use mqtt5_broker::protocol::{Packet, Properties, ProtocolVersion, PublishOut, QoS};

use crate::accounting::{decode_payload, encode_payload, Stamp};
use crate::client::{ack, Conn, ConnectOpts, Error};
use crate::procfs;

/// How long after the probe is published every client must have it.
const PROBE_WAIT: Duration = Duration::from_secs(15);

/// What to run.
#[derive(Debug, Clone)]
pub struct Plan {
    pub endpoint: crate::transport::Endpoint,
    pub version: ProtocolVersion,
    pub topic_base: String,
    pub client_prefix: String,
    pub clients: usize,
    pub connectors: usize,
    pub qos: QoS,
    pub payload: usize,
    pub broker_pid: Option<u32>,
    pub timeout: Duration,
    /// Keep Alive every client announces (seconds).
    pub keep_alive: u16,
}

/// What it measured.
#[derive(Debug, Clone, Default)]
pub struct Outcome {
    pub connected: usize,
    pub connect_duration: Duration,
    pub rss_idle_kib: Option<u64>,
    pub rss_connected_kib: Option<u64>,
    pub broker_threads: Option<u64>,
    pub probes_received: usize,
    pub probes_corrupt: usize,
    /// Probe published → last client got it.
    pub probe_duration: Duration,
    pub errors: Vec<String>,
}

/// A connector thread's report after connecting its share.
struct Connected {
    ok: usize,
    errors: Vec<String>,
}

/// A connector thread's report after reading the probe.
struct Probed {
    received: usize,
    corrupt: usize,
    last: Option<Instant>,
    errors: Vec<String>,
}

pub fn run(plan: &Plan) -> Result<Outcome, Error> {
    let deadline = Instant::now() + plan.timeout;
    let probe_topic = format!("{}/probe", plan.topic_base);
    let mut out = Outcome::default();
    let pid = plan.broker_pid.map(|p| p.to_string());
    out.rss_idle_kib = pid.as_deref().and_then(|p| procfs::status_kib(p, "VmRSS"));

    let connectors = plan.connectors.clamp(1, plan.clients.max(1));
    let (report_tx, report_rx) = bounded::<Connected>(connectors);
    // One message per connector after the probe: whether there is a probe to wait for.
    let (go, go_rx) = bounded::<bool>(connectors);
    let t0 = Instant::now();
    let mut handles = Vec::new();
    for k in 0..connectors {
        let (plan, report_tx, go_rx, topic) = (
            plan.clone(),
            report_tx.clone(),
            go_rx.clone(),
            probe_topic.clone(),
        );
        let h = thread::Builder::new()
            .name(format!("bench-conn-{k}"))
            .stack_size(256 * 1024)
            .spawn(move || connector(k, connectors, &plan, &topic, deadline, &report_tx, &go_rx))
            .map_err(|e| Error(format!("spawn connector: {e}")))?;
        handles.push(h);
    }
    drop(report_tx);
    for _ in 0..connectors {
        let left = deadline.saturating_duration_since(Instant::now());
        match report_rx.recv_timeout(left) {
            Ok(c) => {
                out.connected += c.ok;
                out.errors.extend(c.errors);
            }
            Err(_) => {
                out.errors
                    .push("connector did not report before the deadline".into());
                break;
            }
        }
    }
    out.connect_duration = t0.elapsed();
    // Let the broker settle (threads started, buffers allocated) before reading its RSS.
    thread::sleep(Duration::from_millis(300));
    out.rss_connected_kib = pid.as_deref().and_then(|p| procfs::status_kib(p, "VmRSS"));
    out.broker_threads = pid.as_deref().and_then(procfs::threads);

    let probe_start = Instant::now();
    let probed = match publish_probe(plan, &probe_topic) {
        Ok(()) => true,
        Err(e) => {
            out.errors.push(format!("probe: {e}"));
            false
        }
    };
    for _ in 0..connectors {
        let _ = go.send(probed);
    }
    let mut last = probe_start;
    for h in handles {
        match h.join() {
            Ok(p) => {
                out.probes_received += p.received;
                out.probes_corrupt += p.corrupt;
                out.errors.extend(p.errors);
                if let Some(l) = p.last {
                    last = last.max(l);
                }
            }
            Err(_) => out.errors.push("connector panicked".into()),
        }
    }
    out.probe_duration = last.saturating_duration_since(probe_start);
    Ok(out)
}

fn publish_probe(plan: &Plan, topic: &str) -> Result<(), Error> {
    let opts = ConnectOpts {
        client_id: format!("{}-probe", plan.client_prefix),
        version: plan.version,
        receive_maximum: None,
        keep_alive: plan.keep_alive,
    };
    let mut conn = Conn::connect(&plan.endpoint, &opts, Duration::from_secs(10))?;
    let mut payload = Vec::new();
    encode_payload(
        &mut payload,
        plan.payload,
        Stamp {
            publisher: 0,
            seq: 0,
            sent_ns: crate::pubsub::now_ns(),
        },
    );
    let mut buf = Vec::new();
    write_out(
        &mut buf,
        plan.version,
        &PublishOut {
            dup: false,
            qos: plan.qos,
            retain: false,
            topic,
            packet_id: if plan.qos == QoS::AtMostOnce { 0 } else { 1 },
            properties: &Properties::default(),
            message_expiry_interval: None,
            topic_alias: None,
            subscription_identifiers: &[],
            payload: &payload,
        },
    );
    conn.writer().write_all(&buf)?;
    // Wait for the acknowledgement flow to end (QoS ≥ 1) so the probe is surely routed.
    let deadline = Instant::now() + Duration::from_secs(10);
    match plan.qos {
        QoS::AtMostOnce => {}
        QoS::AtLeastOnce => while !matches!(conn.wait_packet(deadline)?, Packet::PubAck(_)) {},
        QoS::ExactlyOnce => {
            while !matches!(conn.wait_packet(deadline)?, Packet::PubRec(_)) {}
            conn.queue(&Packet::PubRel(ack(1)));
            conn.flush()?;
            while !matches!(conn.wait_packet(deadline)?, Packet::PubComp(_)) {}
        }
    }
    conn.disconnect();
    Ok(())
}

fn connector(
    k: usize,
    connectors: usize,
    plan: &Plan,
    topic: &str,
    deadline: Instant,
    report: &Sender<Connected>,
    go: &Receiver<bool>,
) -> Probed {
    let mut conns = Vec::new();
    let mut errors = Vec::new();
    let mut i = k;
    while i < plan.clients {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            errors.push("deadline reached while connecting".into());
            break;
        }
        let timeout = left.min(Duration::from_secs(10));
        let opts = ConnectOpts {
            client_id: format!("{}-c{i}", plan.client_prefix),
            version: plan.version,
            receive_maximum: None,
            keep_alive: plan.keep_alive,
        };
        let r = Conn::connect(&plan.endpoint, &opts, timeout)
            .and_then(|mut c| c.subscribe(topic, plan.qos, 1, timeout).map(|()| c));
        match r {
            Ok(c) => conns.push(c),
            Err(e) => {
                // Report the first few; count the rest.
                if errors.len() < 3 {
                    errors.push(format!("client {i}: {e}"));
                }
                if errors.len() == 3 {
                    errors.push("(further connect errors not shown)".into());
                }
            }
        }
        i += connectors;
    }
    let _ = report.send(Connected {
        ok: conns.len(),
        errors: std::mem::take(&mut errors),
    });
    let probe_sent = go
        .recv_timeout(deadline.saturating_duration_since(Instant::now()))
        .unwrap_or(false);
    // The probe must arrive within PROBE_WAIT of being published (or by the run deadline).
    let deadline = deadline.min(Instant::now() + PROBE_WAIT);
    let mut probed = Probed {
        received: 0,
        corrupt: 0,
        last: None,
        errors,
    };
    let mut missing = 0usize;
    // Every client is read before any disconnects, so that the probe time is not mixed with
    // the broker ending connections.
    let mut done = Vec::with_capacity(conns.len());
    for mut c in conns {
        if !probe_sent {
            done.push(c);
            continue;
        }
        // At least one read per client (a probe already buffered counts even after the
        // deadline), each at most client::POLL.
        let got = loop {
            match c.poll_packet() {
                Ok(Some(Packet::Publish(p))) => {
                    match p.qos {
                        QoS::AtMostOnce => {}
                        QoS::AtLeastOnce => c.queue(&Packet::PubAck(ack(p.packet_id))),
                        QoS::ExactlyOnce => c.queue(&Packet::PubRec(ack(p.packet_id))),
                    }
                    break Some(p.payload);
                }
                Ok(Some(_)) | Ok(None) => {
                    if Instant::now() >= deadline {
                        break None;
                    }
                }
                Err(e) => {
                    if probed.errors.len() < 3 {
                        probed.errors.push(format!("waiting for the probe: {e}"));
                    }
                    break None;
                }
            }
        };
        match got {
            Some(payload) => {
                probed.last = Some(Instant::now());
                if decode_payload(&payload, plan.payload).is_ok() {
                    probed.received += 1;
                } else {
                    probed.corrupt += 1;
                }
            }
            None => missing += 1,
        }
        done.push(c);
    }
    for c in done {
        c.disconnect();
    }
    if missing > 0 {
        probed.errors.push(format!(
            "connector {k}: {missing} clients did not get the probe"
        ));
    }
    probed
}
