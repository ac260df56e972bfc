//! `$SYS/broker/...` topics: the broker's figures as retained messages, with Mosquitto's topic
//! names where Mosquitto has one. Published by the ticker every `sys_interval`.

use super::stats::Stats;
use super::Broker;

pub const VERSION: &str = concat!("mqtt5-broker ", env!("CARGO_PKG_VERSION"));

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

pub fn publish(broker: &Broker) {
    for (topic, value) in snapshot(broker) {
        broker.publish_internal(topic, value.into_bytes(), true);
    }
}
