//! Retained messages (§3.3.1.3): the last retained message per topic, replaced by a newer one
//! and deleted by an empty one, handed to new subscriptions per Retain Handling.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use parking_lot::RwLock;

use crate::message::Message;
use crate::protocol::topic::filter_matches;

#[derive(Default)]
pub struct RetainStore {
    map: RwLock<HashMap<String, Arc<Message>>>,
}

impl RetainStore {
    pub fn new() -> RetainStore {
        RetainStore::default()
    }

    /// Stores `msg` as the topic's retained message, or deletes it when the payload is empty
    /// (MQTT-3.3.1-6, -7). Returns the number of retained messages afterwards.
    pub fn set(&self, msg: &Arc<Message>) -> usize {
        let mut map = self.map.write();
        if msg.payload.is_empty() {
            map.remove(&msg.topic);
        } else {
            map.insert(msg.topic.clone(), msg.clone());
        }
        map.len()
    }

    /// Deletes a topic's retained message; true when there was one.
    pub fn remove(&self, topic: &str) -> bool {
        self.map.write().remove(topic).is_some()
    }

    /// Live retained messages matching `filter`; expired ones are removed on the way
    /// (MQTT-3.3.2-5).
    pub fn matching(&self, filter: &str, now: Instant) -> Vec<Arc<Message>> {
        let mut found = Vec::new();
        let mut expired = Vec::new();
        {
            let map = self.map.read();
            if !filter.contains(['+', '#']) {
                if let Some(m) = map.get(filter) {
                    found.push(m.clone());
                }
            } else {
                for (topic, m) in map.iter() {
                    if filter_matches(filter, topic) {
                        found.push(m.clone());
                    }
                }
            }
        }
        found.retain(|m| {
            let live = m.remaining_expiry(now).is_ok();
            if !live {
                expired.push(m.topic.clone());
            }
            live
        });
        if !expired.is_empty() {
            let mut map = self.map.write();
            for topic in expired {
                if map
                    .get(&topic)
                    .is_some_and(|m| m.remaining_expiry(now).is_err())
                {
                    map.remove(&topic);
                }
            }
        }
        found
    }

    pub fn len(&self) -> usize {
        self.map.read().len()
    }

    /// Retained messages published by clients: the broker's own `$SYS/` ones left out.
    pub fn client_len(&self) -> usize {
        let map = self.map.read();
        map.len() - map.keys().filter(|t| t.starts_with("$SYS/")).count()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Every retained message, for the control page and the store.
    pub fn all(&self) -> Vec<Arc<Message>> {
        self.map.read().values().cloned().collect()
    }
}
