//! The application message as it travels through the broker: decoded once from the publisher's
//! PUBLISH, shared by `Arc` with every subscriber queue, the retained store and the database.
//!
//! It sits below `broker`, `store` and `web`, which all carry it, and depends only on the
//! codec's types. No thread owns it: it is built on the publisher's reader thread (a will on
//! the ticker or at a session's end, a page publish on `web`) and then only read.

use std::sync::Arc;
use std::time::Instant;

use crate::protocol::{Properties, Publish, QoS};

/// One application message. Immutable once built; per-subscriber differences (QoS, retain flag,
/// subscription identifiers, topic alias, remaining expiry) live in the broker's
/// [`Delivery`](crate::broker::session::Delivery).
#[derive(Debug, Clone)]
pub struct Message {
    pub topic: String,
    pub payload: Vec<u8>,
    pub qos: QoS,
    pub retain: bool,
    /// As published, less Topic Alias and Subscription Identifiers, which never travel on.
    pub properties: Properties,
    /// Client id of the publisher, for No Local; `None` for messages the broker makes itself.
    pub publisher: Option<Arc<str>>,
    /// When the broker received it; the Message Expiry Interval counts from here.
    pub received: Instant,
}

/// The message has outlived its Message Expiry Interval (§3.3.2.3.3).
#[derive(Debug, PartialEq, Eq)]
pub struct Expired;

impl Message {
    /// Builds the shared message from an inbound PUBLISH whose topic alias is already resolved.
    pub fn from_publish(publish: Publish, publisher: Option<Arc<str>>, now: Instant) -> Message {
        let mut properties = publish.properties;
        properties.topic_alias = None;
        properties.subscription_identifiers.clear();
        Message {
            topic: publish.topic,
            payload: publish.payload,
            qos: publish.qos,
            retain: publish.retain,
            properties,
            publisher,
            received: now,
        }
    }

    /// The Message Expiry Interval to forward at `now`: the original less the time spent here
    /// (MQTT-3.3.2-6), or [`Expired`] once it has run out (MQTT-3.3.2-5).
    pub fn remaining_expiry(&self, now: Instant) -> Result<Option<u32>, Expired> {
        match self.properties.message_expiry_interval {
            None => Ok(None),
            Some(interval) => {
                let waited = now.saturating_duration_since(self.received).as_secs();
                let waited = u32::try_from(waited).unwrap_or(u32::MAX);
                if waited >= interval {
                    Err(Expired)
                } else {
                    Ok(Some(interval - waited))
                }
            }
        }
    }

    /// The same message received at `now`: a delayed will is published when its delay ends, so
    /// its Message Expiry Interval counts from then, not from the disconnect.
    pub fn received_at(&self, now: Instant) -> Message {
        Message {
            received: now,
            ..self.clone()
        }
    }

    /// Bytes this message holds, for queue limits.
    pub fn size(&self) -> usize {
        self.topic.len() + self.payload.len()
    }
}
