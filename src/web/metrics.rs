//! Live figures for the control page and `/metrics`, on the `web` thread: [`Rates`] samples the
//! broker's message counters once a second (between requests) into a ring of the last 10
//! minutes, from which the status line's messages per second and the page's chart come; and
//! [`prometheus`] renders every counter in the Prometheus text exposition format (0.0.4).

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crate::broker::server::Server;
use crate::broker::stats::Stats;
use crate::store::now_ms;

/// How often the counters are sampled.
pub const SAMPLE_EVERY: Duration = Duration::from_secs(1);
/// Samples kept: 10 minutes.
pub const KEEP_SAMPLES: usize = 600;
/// The status line's rates average over this many seconds.
const RATE_WINDOW: usize = 5;

#[derive(Debug, Clone, Copy)]
struct Sample {
    at: Instant,
    wall_ms: i64,
    received: u64,
    sent: u64,
}

/// One point of the chart: messages per second in and out over the second ending at `t`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RatePoint {
    /// Milliseconds since the Unix epoch.
    pub t: i64,
    pub msgs_in: f64,
    pub msgs_out: f64,
}

/// The sampled message counters.
#[derive(Debug, Default)]
pub struct Rates {
    samples: VecDeque<Sample>,
}

fn per_second(a: &Sample, b: &Sample) -> (f64, f64) {
    let secs = b.at.saturating_duration_since(a.at).as_secs_f64();
    if secs <= 0.0 {
        return (0.0, 0.0);
    }
    (
        b.received.saturating_sub(a.received) as f64 / secs,
        b.sent.saturating_sub(a.sent) as f64 / secs,
    )
}

impl Rates {
    /// Records the counters now.
    pub fn sample(&mut self, stats: &Stats, now: Instant) {
        self.push(
            now,
            now_ms(),
            Stats::get(&stats.messages_received),
            Stats::get(&stats.messages_sent),
        );
    }

    fn push(&mut self, at: Instant, wall_ms: i64, received: u64, sent: u64) {
        if self.samples.len() > KEEP_SAMPLES {
            self.samples.pop_front();
        }
        self.samples.push_back(Sample {
            at,
            wall_ms,
            received,
            sent,
        });
    }

    /// Messages per second in and out, over the last few seconds (0 before two samples).
    pub fn current(&self) -> (f64, f64) {
        let n = self.samples.len();
        if n < 2 {
            return (0.0, 0.0);
        }
        let first = &self.samples[n.saturating_sub(RATE_WINDOW + 1)];
        let last = &self.samples[n - 1];
        per_second(first, last)
    }

    /// One point per sample interval over the last `seconds`, oldest first.
    pub fn series(&self, seconds: usize) -> Vec<RatePoint> {
        let n = self.samples.len();
        let start = n.saturating_sub(seconds.saturating_add(1));
        let window: Vec<&Sample> = self.samples.iter().skip(start).collect();
        window
            .windows(2)
            .map(|w| {
                let (msgs_in, msgs_out) = per_second(w[0], w[1]);
                RatePoint {
                    t: w[1].wall_ms,
                    msgs_in,
                    msgs_out,
                }
            })
            .collect()
    }
}

fn metric(out: &mut String, name: &str, kind: &str, help: &str, value: impl std::fmt::Display) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
    let _ = writeln!(out, "{name} {value}");
}

/// A label value as the text format writes it: a bridge name comes from the config file and may
/// hold `\` or `"` (and a future label from a client, a newline), which unescaped would end the
/// value early and make the whole scrape unparseable.
struct LabelValue<'a>(&'a str);

impl std::fmt::Display for LabelValue<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for c in self.0.chars() {
            match c {
                '\\' => f.write_str("\\\\")?,
                '"' => f.write_str("\\\"")?,
                '\n' => f.write_str("\\n")?,
                c => f.write_char(c)?,
            }
        }
        Ok(())
    }
}

/// Each bridge's figures, labelled `bridge="NAME"` (nothing without bridges).
fn bridge_metrics(out: &mut String, b: &crate::broker::Broker) {
    let Some(bridges) = b.bridges.get() else {
        return;
    };
    let all = bridges.snapshot(b);
    if all.is_empty() {
        return;
    }
    type Figure = fn(&crate::bridge::status::BridgeSnapshot) -> u64;
    let figures: [(&str, &str, &str, Figure); 6] = [
        ("mqtt5_bridge_up", "gauge", "1 while the bridge's link to its remote broker is up.", |s| u64::from(s.state == "up")),
        ("mqtt5_bridge_queued", "gauge", "Messages for the remote broker waiting in the bridge's local session (queued and in flight).", |s| s.queued as u64),
        ("mqtt5_bridge_queue_dropped_total", "counter", "Messages the bridge's local session dropped (queue full, QoS 0 shed first, expired).", |s| s.queue_dropped),
        ("mqtt5_bridge_forwarded_in_total", "counter", "Messages from the remote broker published here.", |s| s.forwarded_in),
        ("mqtt5_bridge_forwarded_out_total", "counter", "Messages from here published on the remote broker.", |s| s.forwarded_out),
        ("mqtt5_bridge_dropped_total", "counter", "Messages the other side refused, or no topic line mapped.", |s| s.dropped),
    ];
    for (name, kind, help, value) in figures {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} {kind}");
        for s in &all {
            let _ = writeln!(
                out,
                "{name}{{bridge=\"{}\"}} {}",
                LabelValue(&s.name),
                value(s)
            );
        }
    }
}

/// Every counter in the Prometheus text format; names start with `mqtt5_`.
pub fn prometheus(server: &Server, web_sessions: usize) -> String {
    let b = server.broker();
    let s = &b.stats;
    let st = b.store.stats();
    let mut out = String::with_capacity(4096);
    let g = "gauge";
    let c = "counter";
    let up = u8::from(server.addr().is_some());
    metric(
        &mut out,
        "mqtt5_up",
        g,
        "1 while the MQTT listener is running.",
        up,
    );
    metric(
        &mut out,
        "mqtt5_uptime_seconds",
        g,
        "Seconds since the process started.",
        b.started.elapsed().as_secs(),
    );
    metric(
        &mut out,
        "mqtt5_clients_connected",
        g,
        "Connected clients (CONNECT accepted; see mqtt5_pending_connections for the rest).",
        b.connection_count(),
    );
    let name = "mqtt5_clients_connected_by_transport";
    let _ = writeln!(
        out,
        "# HELP {name} Connected clients per listener transport (tcp, tls, ...); they sum to mqtt5_clients_connected."
    );
    let _ = writeln!(out, "# TYPE {name} {g}");
    for (transport, n) in b.connection_count_by_transport() {
        let _ = writeln!(out, "{name}{{transport=\"{}\"}} {n}", LabelValue(transport));
    }
    bridge_metrics(&mut out, b);
    metric(
        &mut out,
        "mqtt5_pending_connections",
        g,
        "Sockets that have not yet sent a whole CONNECT.",
        b.pending_count(),
    );
    metric(
        &mut out,
        "mqtt5_pending_closed_total",
        c,
        "Sockets closed before their CONNECT to make room for new ones (max_pending_connections, max_pending_per_address).",
        Stats::get(&s.pending_closed),
    );
    metric(
        &mut out,
        "mqtt5_clients_maximum",
        g,
        "Most clients connected at once since start.",
        Stats::get(&s.clients_maximum),
    );
    metric(
        &mut out,
        "mqtt5_clients_total",
        c,
        "Clients that completed CONNECT since start.",
        Stats::get(&s.clients_total),
    );
    metric(
        &mut out,
        "mqtt5_clients_not_reading_disconnected_total",
        c,
        "Clients disconnected because they read nothing of what they were owed for the grace.",
        Stats::get(&s.not_reading_disconnects),
    );
    metric(
        &mut out,
        "mqtt5_sessions",
        g,
        "Sessions, online and offline.",
        b.session_count(),
    );
    metric(
        &mut out,
        "mqtt5_subscriptions",
        g,
        "Subscriptions.",
        b.router.len(),
    );
    metric(
        &mut out,
        "mqtt5_retained_messages",
        g,
        "Retained messages.",
        b.retained.len(),
    );
    metric(
        &mut out,
        "mqtt5_messages_received_total",
        c,
        "Application messages received from clients.",
        Stats::get(&s.messages_received),
    );
    metric(
        &mut out,
        "mqtt5_messages_sent_total",
        c,
        "Application messages sent to clients.",
        Stats::get(&s.messages_sent),
    );
    metric(
        &mut out,
        "mqtt5_messages_dropped_total",
        c,
        "Messages not delivered to a subscriber (queue full, offline QoS 0, too large, expired).",
        s.dropped.load(Ordering::Relaxed),
    );
    metric(
        &mut out,
        "mqtt5_bytes_received_total",
        c,
        "Bytes received from clients.",
        Stats::get(&s.bytes_received),
    );
    metric(
        &mut out,
        "mqtt5_bytes_sent_total",
        c,
        "Bytes sent to clients.",
        Stats::get(&s.bytes_sent),
    );
    metric(
        &mut out,
        "mqtt5_store_db_bytes",
        g,
        "Size of the database file and its WAL.",
        st.db_bytes,
    );
    metric(
        &mut out,
        "mqtt5_store_commands_total",
        c,
        "Database commands committed.",
        st.commands,
    );
    metric(
        &mut out,
        "mqtt5_store_transactions_total",
        c,
        "Database transactions committed.",
        st.transactions,
    );
    metric(
        &mut out,
        "mqtt5_store_messages_settled_total",
        c,
        "Session messages acknowledged before the commit that would have stored them, so never written.",
        st.settled,
    );
    metric(
        &mut out,
        "mqtt5_store_history_shed_total",
        c,
        "History records dropped because the database was busy or unavailable.",
        st.shed,
    );
    metric(
        &mut out,
        "mqtt5_history_topics",
        g,
        "Topics kept in the topic history (at most history_max_topics).",
        st.history_topics,
    );
    metric(
        &mut out,
        "mqtt5_history_topics_forgotten_total",
        c,
        "Topics forgotten since start, least recently seen first, to stay within history_max_topics.",
        st.history_topics_forgotten,
    );
    metric(
        &mut out,
        "mqtt5_store_failed_commits_total",
        c,
        "Database commits that failed (and were retried).",
        st.failed_commits,
    );
    metric(
        &mut out,
        "mqtt5_store_pending_writes",
        g,
        "Durable writes waiting in memory for the database.",
        st.pending,
    );
    metric(
        &mut out,
        "mqtt5_store_failing",
        g,
        "1 while the database cannot commit (disk full, max size reached, read-only).",
        u8::from(st.failing_since_ms.is_some()),
    );
    metric(
        &mut out,
        "mqtt5_store_refused_writes_total",
        c,
        "Kept or retained messages refused because the database backlog was full.",
        st.refused,
    );
    metric(
        &mut out,
        "mqtt5_messages_not_stored_total",
        c,
        "QoS 1/2 messages not acknowledged as received because the database could not store them.",
        Stats::get(&s.unstored),
    );
    metric(
        &mut out,
        "mqtt5_web_sessions",
        g,
        "Logged-in control page sessions.",
        web_sessions,
    );
    let _ = writeln!(out, "# HELP mqtt5_build_info The broker's version.");
    let _ = writeln!(out, "# TYPE mqtt5_build_info gauge");
    let _ = writeln!(
        out,
        "mqtt5_build_info{{version=\"{}\"}} 1",
        LabelValue(env!("CARGO_PKG_VERSION"))
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_come_from_counter_differences() {
        let mut r = Rates::default();
        assert_eq!(r.current(), (0.0, 0.0));
        let t0 = Instant::now();
        for i in 0..10u64 {
            r.push(
                t0 + Duration::from_secs(i),
                1000 * i as i64,
                i * 100,
                i * 50,
            );
        }
        assert_eq!(r.current(), (100.0, 50.0));
        let s = r.series(3);
        assert_eq!(s.len(), 3);
        assert_eq!(s[2].t, 9000);
        assert_eq!((s[0].msgs_in, s[0].msgs_out), (100.0, 50.0));
        assert_eq!(r.series(1000).len(), 9);
    }

    #[test]
    fn prometheus_label_values_escape_backslash_double_quote_and_newline() {
        assert_eq!(
            LabelValue("we\"ird\\name\nx").to_string(),
            "we\\\"ird\\\\name\\nx"
        );
        assert_eq!(LabelValue("garage").to_string(), "garage");
    }

    #[test]
    fn the_ring_is_bounded() {
        let mut r = Rates::default();
        let t0 = Instant::now();
        for i in 0..(KEEP_SAMPLES as u64 * 2) {
            r.push(t0 + Duration::from_secs(i), 0, i, i);
        }
        assert_eq!(r.samples.len(), KEEP_SAMPLES + 1);
        assert_eq!(r.series(usize::MAX).len(), KEEP_SAMPLES);
    }
}
