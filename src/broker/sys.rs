//! `$SYS/broker/...` topics: the broker's figures as retained messages, with Mosquitto's topic
//! names where Mosquitto has one. Published by the ticker every `sys_interval`. Clients may
//! not publish under `$SYS`, except bridges' connection states ([`client_may_publish`]).

use super::stats::Stats;
use super::Broker;

pub const VERSION: &str = concat!("mqtt5-broker ", env!("CARGO_PKG_VERSION"));

/// Where a Mosquitto bridge (with its default `notifications true`) publishes its connection
/// state, retained, and sets its will: `$SYS/broker/connection/<client id>/state`. The broker
/// publishes nothing under it, so a client writing there overwrites none of the broker's figures.
const BRIDGE_NOTIFICATIONS: &str = "$SYS/broker/connection/";

/// Whether a client may publish (or set its will) on `topic`: anything outside `$SYS`, and a
/// bridge's connection state under `BRIDGE_NOTIFICATIONS` — refusing that will would refuse
/// the whole bridge connection. Open to any client, not only those with the bridge bit: a 5.0
/// Mosquitto bridge sends no bit, and sets the same will.
pub fn client_may_publish(topic: &str) -> bool {
    !topic.starts_with("$SYS") || topic.starts_with(BRIDGE_NOTIFICATIONS)
}

/// Every `$SYS` topic and its current value.
pub fn snapshot(broker: &Broker) -> Vec<(&'static str, String)> {
    let s = &broker.stats;
    vec![
        ("$SYS/broker/version", VERSION.to_owned()),
        (
            "$SYS/broker/uptime",
            format!("{} seconds", broker.started.elapsed().as_secs()),
        ),
        (
            "$SYS/broker/clients/connected",
            Stats::get(&s.clients_connected).to_string(),
        ),
        (
            "$SYS/broker/clients/total",
            broker.session_count().to_string(),
        ),
        (
            "$SYS/broker/clients/maximum",
            Stats::get(&s.clients_maximum).to_string(),
        ),
        (
            "$SYS/broker/messages/received",
            Stats::get(&s.messages_received).to_string(),
        ),
        (
            "$SYS/broker/messages/sent",
            Stats::get(&s.messages_sent).to_string(),
        ),
        (
            "$SYS/broker/bytes/received",
            Stats::get(&s.bytes_received).to_string(),
        ),
        (
            "$SYS/broker/bytes/sent",
            Stats::get(&s.bytes_sent).to_string(),
        ),
        (
            "$SYS/broker/publish/messages/dropped",
            Stats::get(&s.dropped).to_string(),
        ),
        (
            "$SYS/broker/retained messages/count",
            broker.retained.len().to_string(),
        ),
        (
            "$SYS/broker/subscriptions/count",
            broker.router.len().to_string(),
        ),
    ]
}

/// `$SYS/broker/clients/connected/<transport>` for every transport (`tcp`, `tls`, …), as
/// `$SYS/broker/clients/connected` counts: the per-listener figures.
pub fn per_transport(broker: &Broker) -> Vec<(String, String)> {
    broker
        .connection_count_by_transport()
        .into_iter()
        .map(|(t, n)| (format!("$SYS/broker/clients/connected/{t}"), n.to_string()))
        .collect()
}

/// `$SYS/broker/bridges/<name>/{queued,forwarded/in,forwarded/out,dropped}` for every bridge
/// (its state is the bridge's own notification, `$SYS/broker/connection/<name>/state`).
pub fn per_bridge(broker: &Broker) -> Vec<(String, String)> {
    let Some(bridges) = broker.bridges.get() else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for b in bridges.snapshot(broker) {
        let at = format!("$SYS/broker/bridges/{}", b.name);
        out.push((format!("{at}/queued"), b.queued.to_string()));
        out.push((format!("{at}/forwarded/in"), b.forwarded_in.to_string()));
        out.push((format!("{at}/forwarded/out"), b.forwarded_out.to_string()));
        out.push((format!("{at}/dropped"), b.dropped.to_string()));
    }
    out
}

pub fn publish(broker: &Broker) {
    for (topic, value) in snapshot(broker) {
        broker.publish_internal(topic, value.into_bytes(), true);
    }
    for (topic, value) in per_transport(broker).into_iter().chain(per_bridge(broker)) {
        broker.publish_internal(&topic, value.into_bytes(), true);
    }
}

#[cfg(test)]
mod tests {
    use super::client_may_publish;

    #[test]
    fn clients_may_publish_only_bridge_connection_states_under_sys() {
        assert!(client_may_publish("$SYS/broker/connection/vm.ours/state"));
        assert!(!client_may_publish("$SYS/broker/uptime"));
        assert!(!client_may_publish("$SYS/broker/connections"));
        assert!(!client_may_publish("$SYSTEM/x"));
        assert!(client_may_publish("a/$SYS"));
    }
}
