//! An independent 5.0 client (rumqttc) that subscribed to `filter` and saw its SUBACK.

use rumqttc::v5::mqttbytes::v5::{Packet, Publish, SubscribeReasonCode};
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::{Client, Connection, Event, MqttOptions};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

pub fn options(addr: SocketAddr, id: &str) -> MqttOptions {
    let mut o = MqttOptions::new(id, addr.ip().to_string(), addr.port());
    o.set_keep_alive(Duration::from_secs(30));
    o
}

/// Polls until CONNACK Success (≤ 5 s).
pub fn connect(o: MqttOptions) -> (Client, Connection) {
    let (client, mut conn) = Client::new(o, 64);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match conn.recv_timeout(left) {
            Ok(Ok(Event::Incoming(Packet::ConnAck(ack)))) => {
                assert_eq!(
                    ack.code,
                    rumqttc::v5::mqttbytes::v5::ConnectReturnCode::Success
                );
                return (client, conn);
            }
            Ok(Ok(_)) => {}
            other => panic!("rumqttc connect failed: {other:?}"),
        }
    }
}

/// Connects and subscribes; returns after SUBACK (≤ 5 s).
pub fn subscriber(addr: SocketAddr, id: &str, filter: &str, qos: QoS) -> (Client, Connection) {
    let (client, mut conn) = connect(options(addr, id));
    client.subscribe(filter, qos).unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match conn.recv_timeout(left) {
            Ok(Ok(Event::Incoming(Packet::SubAck(ack)))) => {
                assert!(
                    ack.return_codes
                        .iter()
                        .all(|c| matches!(c, SubscribeReasonCode::Success(_))),
                    "{ack:?}"
                );
                return (client, conn);
            }
            Ok(Ok(_)) => {}
            other => panic!("rumqttc subscribe failed: {other:?}"),
        }
    }
}

/// The next PUBLISH within `wait`, or `None`.
pub fn next_publish(conn: &mut Connection, wait: Duration) -> Option<Publish> {
    let deadline = Instant::now() + wait;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return None;
        }
        match conn.recv_timeout(left) {
            Ok(Ok(Event::Incoming(Packet::Publish(p)))) => return Some(p),
            Ok(Ok(_)) => {}
            Ok(Err(e)) => panic!("rumqttc connection error: {e:?}"),
            Err(_) => return None,
        }
    }
}
