//! Routing: which sessions receive a published message (§4.7 topic matching, §4.8 shared
//! subscriptions, §3.3.4 overlapping subscriptions).
//!
//! The subscription trie sits behind one `RwLock`: publishers take the read lock only long enough
//! to collect their targets, then enqueue with the lock released.

use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use parking_lot::RwLock;

use super::session::{Delivery, Session};
use super::topic_tree::TopicTree;
use crate::message::Message;
use crate::protocol::SubscriptionOptions;

/// One subscription as the control page lists it: (filter, client id, shared filter, entry).
pub type SubscriptionView = (String, Arc<str>, Option<Arc<str>>, SubEntry);

/// A session as a map key: compared by identity, not by content.
#[derive(Clone)]
pub struct SessionRef(pub Arc<Session>);

impl PartialEq for SessionRef {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}
impl Eq for SessionRef {}
impl Hash for SessionRef {
    fn hash<H: Hasher>(&self, state: &mut H) {
        (Arc::as_ptr(&self.0) as usize).hash(state);
    }
}

/// A subscription's key in the trie: the session, and for a shared subscription the full
/// `$share/{group}/{filter}` that identifies its group.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct SubKey {
    pub session: SessionRef,
    pub share: Option<Arc<str>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SubEntry {
    pub options: SubscriptionOptions,
    pub subscription_id: Option<u32>,
}

#[derive(Default)]
pub struct Router {
    tree: RwLock<TopicTree<SubKey, SubEntry>>,
    /// Round-robin position for choosing a shared subscription member.
    next_member: AtomicUsize,
}

/// A publishing thread's buffers for [`Router::route`]: the direct and the shared matches of
/// one message, empty between messages.
#[derive(Default)]
pub struct RouteScratch {
    direct: Vec<Match>,
    shared: Vec<Match>,
}

/// Matches a [`RouteScratch`] keeps room for between messages: a message to more subscribers
/// than this gives the rest back, so one burst to many does not stay resident with the thread.
const KEEP_MATCHES: usize = 1024;

impl RouteScratch {
    fn trim(&mut self) {
        for v in [&mut self.direct, &mut self.shared] {
            if v.capacity() > KEEP_MATCHES {
                *v = Vec::new();
            }
        }
    }
}

/// One matching subscription, collected under the read lock.
struct Match {
    session: Arc<Session>,
    share: Option<Arc<str>>,
    entry: SubEntry,
}

impl Router {
    pub fn new() -> Router {
        Router::default()
    }

    /// Adds or replaces a subscription; returns true when it replaced an existing one.
    /// `filter` is the inner filter (without `$share/{group}/`).
    pub fn subscribe(
        &self,
        session: &Arc<Session>,
        share: Option<Arc<str>>,
        filter: &str,
        entry: SubEntry,
    ) -> bool {
        let key = SubKey {
            session: SessionRef(session.clone()),
            share,
        };
        self.tree.write().insert(filter, key, entry).is_some()
    }

    /// Removes a subscription; returns true when it existed.
    pub fn unsubscribe(
        &self,
        session: &Arc<Session>,
        share: Option<Arc<str>>,
        filter: &str,
    ) -> bool {
        let key = SubKey {
            session: SessionRef(session.clone()),
            share,
        };
        self.tree.write().remove(filter, &key).is_some()
    }

    pub fn len(&self) -> usize {
        self.tree.read().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Every subscription: (filter, client id, shared filter, entry), for the control page.
    pub fn entries(&self) -> Vec<SubscriptionView> {
        self.tree
            .read()
            .entries()
            .into_iter()
            .map(|(filter, key, entry)| {
                (
                    filter,
                    key.session.0.client_id.clone(),
                    key.share.clone(),
                    *entry,
                )
            })
            .collect()
    }

    /// The members of the shared subscription group `share` (inner filter `filter`) other than
    /// `except`, to hand its unfinished messages on to (§4.8.2); `None` when none is left.
    /// Each message offered to it takes [`Router::next_round`] as its start.
    pub fn share_group(
        &self,
        filter: &str,
        share: &Arc<str>,
        except: &Arc<Session>,
    ) -> Option<SharedGroup> {
        let mut members = Vec::new();
        for (f, key, entry) in self.tree.read().entries() {
            if f == filter
                && key.share.as_ref() == Some(share)
                && !Arc::ptr_eq(&key.session.0, except)
            {
                members.push((key.session.0.clone(), *entry));
            }
        }
        if members.is_empty() {
            return None;
        }
        members.sort_by_key(|(s, _)| Arc::as_ptr(s) as usize);
        Some(SharedGroup {
            share: share.clone(),
            members,
            start: 0,
        })
    }

    /// The next round-robin position for choosing a shared subscription member.
    pub fn next_round(&self) -> usize {
        self.next_member.fetch_add(1, Ordering::Relaxed)
    }

    /// Works out every delivery of `msg`: one per subscribed session at the highest granted QoS
    /// with all matching Subscription Identifiers (MQTT-3.3.4-2, -3) into `out`, and each
    /// matching shared subscription group into `groups`, for the message to be offered to one
    /// of its members (§4.8.2). No Local subscriptions of the publisher are skipped
    /// (MQTT-3.8.3-3). `scratch` holds the matches meanwhile: the caller's, reused from one
    /// message to the next, so that routing allocates nothing once it is warm.
    pub fn route(
        &self,
        msg: &Arc<Message>,
        out: &mut Vec<(Arc<Session>, Delivery)>,
        groups: &mut Vec<SharedGroup>,
        scratch: &mut RouteScratch,
    ) {
        let RouteScratch { direct, shared } = scratch;
        direct.clear();
        shared.clear();
        {
            let tree = self.tree.read();
            tree.for_each_match(&msg.topic, |key, entry| {
                if key.share.is_none()
                    && entry.options.no_local
                    && msg.publisher.as_deref() == Some(&*key.session.0.client_id)
                {
                    return;
                }
                let m = Match {
                    session: key.session.0.clone(),
                    share: key.share.clone(),
                    entry: *entry,
                };
                if m.share.is_some() {
                    shared.push(m);
                } else {
                    direct.push(m);
                }
            });
        }
        if direct.len() > 1 {
            direct.sort_by_key(|m| Arc::as_ptr(&m.session) as usize);
        }
        let mut iter = direct.drain(..).peekable();
        while let Some(first) = iter.next() {
            let mut delivery = delivery_for(msg, &first.entry, None);
            while let Some(next) = iter.next_if(|n| Arc::ptr_eq(&n.session, &first.session)) {
                let granted = next.entry.options.qos.min(msg.qos);
                delivery.qos = delivery.qos.max(granted);
                delivery.retain |= next.entry.options.retain_as_published && msg.retain;
                if let Some(id) = next.entry.subscription_id {
                    delivery.sub_ids.push(id);
                }
            }
            out.push((first.session, delivery));
        }
        drop(iter);
        if !shared.is_empty() {
            self.shared_groups(shared, groups);
            shared.clear();
        }
        scratch.trim();
    }

    fn shared_groups(&self, shared: &mut [Match], groups: &mut Vec<SharedGroup>) {
        // Grouped by share name, each group's members in a fixed order for the round robin.
        shared.sort_by(|a, b| {
            a.share.cmp(&b.share).then_with(|| {
                (Arc::as_ptr(&a.session) as usize).cmp(&(Arc::as_ptr(&b.session) as usize))
            })
        });
        let mut rest = &*shared;
        while let Some(first) = rest.first() {
            let n = rest.iter().take_while(|m| m.share == first.share).count();
            let (group, tail) = rest.split_at(n);
            rest = tail;
            let Some(share) = first.share.clone() else {
                continue;
            };
            groups.push(SharedGroup {
                share,
                members: group.iter().map(|m| (m.session.clone(), m.entry)).collect(),
                start: self.next_round(),
            });
        }
    }
}

/// A shared subscription group a message is for, and its members in round-robin order: the
/// message goes to one of them (MQTT-4.8.2-4). [`SharedGroup::offer`] chooses which.
pub struct SharedGroup {
    pub share: Arc<str>,
    members: Vec<(Arc<Session>, SubEntry)>,
    /// Where this message's round robin starts (taken modulo the number of members).
    pub start: usize,
}

impl SharedGroup {
    /// Offers a message to the members in turn until one takes it: from the round-robin start,
    /// online members first, then offline ones (their queue keeps it for their return). `take`
    /// tries one member and returns `None` when it refuses (its queue is full, the ACL does not
    /// let it read the topic, an offline one cannot queue QoS 0): the next member is tried.
    /// Returns what the taker's `take` returned, `None` when every member refused.
    pub fn offer<T>(
        &self,
        mut take: impl FnMut(&Arc<Session>, &SubEntry) -> Option<T>,
    ) -> Option<T> {
        let n = self.members.len();
        // Offline members are tried only after every online one refused; most messages find an
        // online member at once, so this list usually stays unallocated.
        let mut offline: Vec<usize> = Vec::new();
        for i in 0..n {
            let at = (self.start + i) % n;
            let (session, entry) = &self.members[at];
            if !session.is_online() {
                offline.push(at);
                continue;
            }
            if let Some(t) = take(session, entry) {
                return Some(t);
            }
        }
        for at in offline {
            let (session, entry) = &self.members[at];
            if let Some(t) = take(session, entry) {
                return Some(t);
            }
        }
        None
    }
}

/// The delivery of `msg` through one subscription.
pub fn delivery_for(msg: &Arc<Message>, entry: &SubEntry, share: Option<Arc<str>>) -> Delivery {
    Delivery {
        msg: msg.clone(),
        qos: entry.options.qos.min(msg.qos),
        retain: entry.options.retain_as_published && msg.retain,
        sub_ids: entry.subscription_id.into_iter().collect(),
        share,
        seq: 0,
    }
}
