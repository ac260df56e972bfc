//! The subscription trie: maps MQTT topic filters to subscribers and finds
//! every subscription matching a PUBLISH topic name (MQTT 5.0 §4.7, §4.8).
//!
//! This module owns only the trie data structure. It does not validate
//! filters or topics (the caller does that before inserting or matching) and
//! does not know about `$share/{group}/{filter}`: the caller stores shared
//! subscriptions under the inner filter with a key type that tells group
//! members from plain subscribers (e.g. an enum `K`), so that one
//! [`TopicTree::for_each_match`] call yields everything and the caller picks
//! one member per group.
//!
//! Threads: the tree is plain data (`Send + Sync` when `K` and `V` are). The
//! broker keeps it under its `RwLock`; client threads take the read lock to
//! route PUBLISH packets and the write lock to SUBSCRIBE / UNSUBSCRIBE.
//!
//! Layout: each node holds its literal children in a `HashMap<Box<str>, Node>`,
//! the `+` child in a dedicated field, the subscribers whose filter ends at the
//! node, and the subscribers whose filter ends with `#` below the node
//! (`#` is always the last level, so it needs no node of its own).
//!
//! Depth: insert, remove, match, [`TopicTree::entries`] and drop are all
//! iterative, so filters and topics with any number of levels cannot overflow
//! the stack. Matching does not allocate unless more than
//! `INLINE_FRAMES` `+` branches are pending at once.

use std::collections::HashMap;
use std::fmt;
use std::hash::Hash;

/// Pending `+` branches kept on the stack during matching before spilling
/// into a heap `Vec`.
const INLINE_FRAMES: usize = 32;

/// A node of the trie. The root stands for "no level consumed yet".
struct Node<K, V> {
    /// Literal levels (including the empty level and, for filters the caller
    /// failed to validate, a literal `#` that is not the last level).
    children: HashMap<Box<str>, Node<K, V>>,
    /// The `+` child.
    plus: Option<Box<Node<K, V>>>,
    /// Subscriptions whose filter ends exactly at this node.
    subs: HashMap<K, V>,
    /// Subscriptions whose filter is this node's filter followed by `/#`
    /// (or `#` alone, at the root).
    hash_subs: HashMap<K, V>,
}

impl<K, V> Node<K, V> {
    fn new() -> Self {
        Node {
            children: HashMap::new(),
            plus: None,
            subs: HashMap::new(),
            hash_subs: HashMap::new(),
        }
    }

    /// The child for filter level `level` (`+` is the dedicated child).
    fn child(&self, level: &str) -> Option<&Node<K, V>> {
        if level == "+" {
            self.plus.as_deref()
        } else {
            self.children.get(level)
        }
    }

    fn child_mut(&mut self, level: &str) -> Option<&mut Node<K, V>> {
        if level == "+" {
            self.plus.as_deref_mut()
        } else {
            self.children.get_mut(level)
        }
    }

    fn child_count(&self) -> usize {
        self.children.len() + usize::from(self.plus.is_some())
    }

    fn has_subs(&self) -> bool {
        !self.subs.is_empty() || !self.hash_subs.is_empty()
    }

    fn is_empty(&self) -> bool {
        !self.has_subs() && self.child_count() == 0
    }
}

impl<K, V> Drop for Node<K, V> {
    /// Iterative drop, so that a filter with 100,000 levels does not recurse
    /// 100,000 destructors deep.
    fn drop(&mut self) {
        if self.child_count() == 0 {
            return;
        }
        let mut stack: Vec<Node<K, V>> = Vec::new();
        stack.extend(self.children.drain().map(|(_, n)| n));
        stack.extend(self.plus.take().map(|b| *b));
        while let Some(mut n) = stack.pop() {
            stack.extend(n.children.drain().map(|(_, c)| c));
            stack.extend(n.plus.take().map(|b| *b));
            // `n` drops here with no children left.
        }
    }
}

/// Releases the allocation of a map that churn has left mostly empty, so
/// memory does not grow with subscribe/unsubscribe cycles.
fn shrink<M, T>(map: &mut HashMap<M, T>)
where
    M: Eq + Hash,
{
    if map.is_empty() {
        *map = HashMap::new();
    } else if map.capacity() > 4 * map.len() + 16 {
        map.shrink_to_fit();
    }
}

/// Splits a filter into the levels before a trailing `#` and whether it ends
/// with `#`: `"a/b"` → `(Some("a/b"), false)`, `"a/#"` → `(Some("a"), true)`,
/// `"#"` → `(None, true)`.
fn split_filter(filter: &str) -> (Option<&str>, bool) {
    if filter == "#" {
        (None, true)
    } else if let Some(prefix) = filter.strip_suffix("/#") {
        (Some(prefix), true)
    } else {
        (Some(filter), false)
    }
}

/// The levels of a filter prefix from [`split_filter`].
fn levels(prefix: Option<&str>) -> impl Iterator<Item = &str> {
    prefix.into_iter().flat_map(|p| p.split('/'))
}

/// Splits off the first level of a non-exhausted topic remainder.
#[inline]
fn next_level(rest: &str) -> (&str, Option<&str>) {
    match rest.find('/') {
        Some(i) => (&rest[..i], Some(&rest[i + 1..])),
        None => (rest, None),
    }
}

/// A pending match branch: a node and the topic levels still to consume
/// (`None` when every level has been consumed).
type Frame<'a, K, V> = (&'a Node<K, V>, Option<&'a str>);

/// LIFO of pending branches: inline up to `INLINE_FRAMES`, then a heap
/// `Vec` that is only allocated if needed.
struct FrameStack<'a, K, V> {
    inline: [Option<Frame<'a, K, V>>; INLINE_FRAMES],
    len: usize,
    spill: Vec<Frame<'a, K, V>>,
}

impl<'a, K, V> FrameStack<'a, K, V> {
    fn new() -> Self {
        FrameStack {
            inline: [None; INLINE_FRAMES],
            len: 0,
            spill: Vec::new(),
        }
    }

    #[inline]
    fn push(&mut self, frame: Frame<'a, K, V>) {
        if self.len < INLINE_FRAMES {
            self.inline[self.len] = Some(frame);
            self.len += 1;
        } else {
            self.spill.push(frame);
        }
    }

    #[inline]
    fn pop(&mut self) -> Option<Frame<'a, K, V>> {
        // Pushes only go to `spill` while `inline` is full, so `spill` is
        // always the top of the stack.
        if let Some(frame) = self.spill.pop() {
            return Some(frame);
        }
        if self.len == 0 {
            return None;
        }
        self.len -= 1;
        self.inline[self.len].take()
    }
}

/// Topic filter → subscriber trie.
///
/// `K` identifies a subscriber (e.g. `Arc<str>` client id, a session id, or
/// an enum that also covers shared-subscription group members); `V` is the
/// subscription data (options, subscription identifier). A key has at most
/// one subscription per filter; a key with several overlapping filters is
/// reported once per matching filter and the caller merges.
///
/// Filters must be valid (MQTT 5.0 §4.7.1, §4.7.3), checked by the caller.
/// A `#` that is not the last level is stored as a literal level, which no
/// valid topic name matches.
pub struct TopicTree<K, V> {
    root: Node<K, V>,
    len: usize,
}

impl<K, V> Default for TopicTree<K, V> {
    fn default() -> Self {
        Self::new()
    }
}

impl<K, V> TopicTree<K, V> {
    /// An empty tree.
    pub fn new() -> Self {
        TopicTree {
            root: Node::new(),
            len: 0,
        }
    }

    /// Number of (filter, key) subscriptions.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True if there are no subscriptions.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Removes every subscription.
    #[cfg(test)]
    pub fn clear(&mut self) {
        self.root = Node::new();
        self.len = 0;
    }

    /// Every subscription as `(filter, key, value)`, in no particular order.
    /// For the control page and diagnostics, not the hot path: it builds one
    /// `String` per subscription. Iterative, so deep filters are safe.
    pub fn entries(&self) -> Vec<(String, &K, &V)> {
        let mut out = Vec::with_capacity(self.len);
        // Depth-first over (node, its level name, length of its parent's
        // filter in `path`, depth class: 0 root, 1 first level, 2 deeper).
        // `path` is shared and rebuilt from the parent's length on each
        // visit, so memory stays linear in the deepest filter.
        let mut path = String::new();
        let mut stack: Vec<(&Node<K, V>, &str, usize, u8)> = vec![(&self.root, "", 0, 0)];
        while let Some((node, name, parent_len, class)) = stack.pop() {
            path.truncate(parent_len);
            if class == 2 {
                path.push('/');
            }
            path.push_str(name);
            let len = path.len();
            for (k, v) in &node.subs {
                out.push((path.clone(), k, v));
            }
            for (k, v) in &node.hash_subs {
                let mut f = String::with_capacity(len + 2);
                f.push_str(&path);
                if class != 0 {
                    f.push('/');
                }
                f.push('#');
                out.push((f, k, v));
            }
            let child_class = if class == 0 { 1 } else { 2 };
            for (child_name, child) in &node.children {
                stack.push((child, child_name, len, child_class));
            }
            if let Some(p) = &node.plus {
                stack.push((p, "+", len, child_class));
            }
        }
        out
    }

    /// Every subscription as `(filter, key, value)`; see [`Self::entries`].
    #[cfg(test)]
    pub fn iter(&self) -> impl Iterator<Item = (String, &K, &V)> {
        self.entries().into_iter()
    }

    /// Calls `f(key, value)` once for every subscription whose filter
    /// matches the topic name `topic` (MQTT 5.0 §4.7):
    ///
    /// * levels are compared exactly and empty levels are levels
    ///   (§4.7.3, §4.7.1.1);
    /// * `+` matches exactly one level, which may be empty (§4.7.1.3);
    /// * `#` matches its parent level and any number of child levels
    ///   (§4.7.1.2);
    /// * a topic starting with `$` is not matched by a filter starting with
    ///   `+` or `#` (MQTT-4.7.2-1).
    ///
    /// Does not allocate (unless more than `INLINE_FRAMES` `+` branches are
    /// pending at once). Work is proportional to the number of trie nodes
    /// visited, at most two per topic level per matching wildcard path.
    pub fn for_each_match(&self, topic: &str, mut f: impl FnMut(&K, &V)) {
        let root = &self.root;
        let dollar = topic.starts_with('$');
        let (level, rest) = next_level(topic);
        let mut stack = FrameStack::new();
        // Root: `#` and `+` at the first level do not match `$` topics.
        if !dollar {
            for (k, v) in &root.hash_subs {
                f(k, v);
            }
            if let Some(p) = root.plus.as_deref() {
                stack.push((p, rest));
            }
        }
        let mut cur: Option<Frame<'_, K, V>> = root.children.get(level).map(|n| (n, rest));
        loop {
            let (node, rest) = match cur.take() {
                Some(frame) => frame,
                None => match stack.pop() {
                    Some(frame) => frame,
                    None => return,
                },
            };
            // `#` below this node matches this level and anything after it,
            // including nothing (`sport/#` matches `sport`).
            for (k, v) in &node.hash_subs {
                f(k, v);
            }
            match rest {
                None => {
                    for (k, v) in &node.subs {
                        f(k, v);
                    }
                }
                Some(rest) => {
                    let (level, next) = next_level(rest);
                    cur = node.children.get(level).map(|n| (n, next));
                    if let Some(p) = node.plus.as_deref() {
                        if cur.is_none() {
                            cur = Some((p, next));
                        } else {
                            stack.push((p, next));
                        }
                    }
                }
            }
        }
    }

    /// True if some subscription matches `topic` (same rules as
    /// [`Self::for_each_match`]).
    #[cfg(test)]
    pub fn has_match(&self, topic: &str) -> bool {
        // Not short-circuiting, but allocation-free and rarely hot.
        let mut found = false;
        self.for_each_match(topic, |_, _| found = true);
        found
    }
}

impl<K: Eq + Hash, V> TopicTree<K, V> {
    /// Inserts or replaces the subscription of `key` to `filter`. Returns the
    /// previous value if there was one: a SUBSCRIBE with a filter identical
    /// to an existing subscription replaces it (MQTT-3.8.4-3).
    pub fn insert(&mut self, filter: &str, key: K, value: V) -> Option<V> {
        let (prefix, hash) = split_filter(filter);
        let mut node = &mut self.root;
        for level in levels(prefix) {
            node = if level == "+" {
                node.plus.get_or_insert_with(|| Box::new(Node::new()))
            } else if node.children.contains_key(level) {
                node.children.get_mut(level).expect("checked")
            } else {
                node.children
                    .entry(Box::from(level))
                    .or_insert_with(Node::new)
            };
        }
        let map = if hash {
            &mut node.hash_subs
        } else {
            &mut node.subs
        };
        let old = map.insert(key, value);
        if old.is_none() {
            self.len += 1;
        }
        old
    }

    /// The value of `key`'s subscription to exactly `filter` (no wildcard
    /// matching: `filter` is compared as a filter).
    #[cfg(test)]
    pub fn get(&self, filter: &str, key: &K) -> Option<&V> {
        let (prefix, hash) = split_filter(filter);
        let mut node = &self.root;
        for level in levels(prefix) {
            node = node.child(level)?;
        }
        if hash {
            node.hash_subs.get(key)
        } else {
            node.subs.get(key)
        }
    }

    /// Mutable access to `key`'s subscription to exactly `filter`.
    #[cfg(test)]
    pub fn get_mut(&mut self, filter: &str, key: &K) -> Option<&mut V> {
        let (prefix, hash) = split_filter(filter);
        let mut node = &mut self.root;
        for level in levels(prefix) {
            node = node.child_mut(level)?;
        }
        if hash {
            node.hash_subs.get_mut(key)
        } else {
            node.subs.get_mut(key)
        }
    }

    /// Removes `key`'s subscription to exactly `filter` and returns its
    /// value. Nodes left without subscriptions or children are pruned, so
    /// memory does not grow with subscribe/unsubscribe churn.
    pub fn remove(&mut self, filter: &str, key: &K) -> Option<V> {
        let (prefix, hash) = split_filter(filter);

        // Pass 1: find the node and remove the subscription.
        let mut node = &mut self.root;
        for level in levels(prefix) {
            node = node.child_mut(level)?;
        }
        let map = if hash {
            &mut node.hash_subs
        } else {
            &mut node.subs
        };
        let value = map.remove(key)?;
        shrink(map);
        self.len -= 1;
        if !node.is_empty() || prefix.is_none() {
            return Some(value);
        }

        // Pass 2: the deepest node on the path that must stay (the root, or a
        // node with subscriptions or another child). Everything below its
        // path child is now a chain of empty nodes.
        let mut keep_depth = 0;
        let mut node = &self.root;
        for (depth, level) in levels(prefix).enumerate() {
            if depth > 0 && (node.has_subs() || node.child_count() > 1) {
                keep_depth = depth;
            }
            node = node.child(level).expect("path exists");
        }

        // Pass 3: cut the edge below the kept node (the chain drops
        // iteratively, see `Drop for Node`).
        let mut node = &mut self.root;
        let mut path = levels(prefix);
        for level in path.by_ref().take(keep_depth) {
            node = node.child_mut(level).expect("path exists");
        }
        let level = path.next().expect("edge below the kept node");
        if level == "+" {
            node.plus = None;
        } else {
            node.children.remove(level);
            shrink(&mut node.children);
        }
        Some(value)
    }

    /// Number of trie nodes, root included (for pruning tests).
    #[cfg(test)]
    fn node_count(&self) -> usize {
        let mut count = 0;
        let mut stack = vec![&self.root];
        while let Some(node) = stack.pop() {
            count += 1;
            stack.extend(node.children.values());
            stack.extend(node.plus.as_deref());
        }
        count
    }
}

impl<K: fmt::Debug, V: fmt::Debug> fmt::Debug for TopicTree<K, V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(self.entries().iter().map(|(filter, k, v)| (filter, k, v)))
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Sorted (key, value) pairs reported for `topic`.
    fn matches<V: Clone + Ord>(tree: &TopicTree<u32, V>, topic: &str) -> Vec<(u32, V)> {
        let mut out = Vec::new();
        tree.for_each_match(topic, |k, v| out.push((*k, v.clone())));
        out.sort();
        out
    }

    /// Does a single-filter tree match `topic`?
    fn filter_matches(filter: &str, topic: &str) -> bool {
        let mut tree = TopicTree::new();
        tree.insert(filter, 1u32, ());
        tree.has_match(topic)
    }

    // §4.7.1.2 Multi-level wildcard.

    #[test]
    fn mqtt_4_7_1_2_multi_level_wildcard_spec_examples() {
        // "sport/tennis/player1/#" would receive messages published using
        // these Topic Names: "sport/tennis/player1",
        // "sport/tennis/player1/ranking", "sport/tennis/player1/score/wimbledon".
        for topic in [
            "sport/tennis/player1",
            "sport/tennis/player1/ranking",
            "sport/tennis/player1/score/wimbledon",
        ] {
            assert!(filter_matches("sport/tennis/player1/#", topic), "{topic}");
        }
        assert!(!filter_matches("sport/tennis/player1/#", "sport/tennis"));
        assert!(!filter_matches(
            "sport/tennis/player1/#",
            "sport/tennis/player2"
        ));
        assert!(!filter_matches(
            "sport/tennis/player1/#",
            "sport/tennis/player10"
        ));
        // "sport/#" also matches the singular "sport", since # includes the
        // parent level.
        assert!(filter_matches("sport/#", "sport"));
        assert!(filter_matches("sport/#", "sport/"));
        assert!(filter_matches("sport/#", "sport/tennis/player1"));
        assert!(!filter_matches("sport/#", "sports"));
        assert!(!filter_matches("sport/#", "/sport"));
        // "#" is valid and will receive every Application Message.
        for topic in ["sport", "/", "a/b/c", "/finance", "a//b", " "] {
            assert!(filter_matches("#", topic), "{topic}");
        }
        // "sport/tennis/#" is valid.
        assert!(filter_matches("sport/tennis/#", "sport/tennis"));
        assert!(filter_matches("sport/tennis/#", "sport/tennis/x/y/z"));
    }

    #[test]
    fn mqtt_4_7_1_2_invalid_hash_positions_are_literal_and_never_match() {
        // "sport/tennis#" and "sport/tennis/#/ranking" are invalid; the caller
        // rejects them, but if stored they behave as literals.
        assert!(!filter_matches("sport/tennis#", "sport/tennis"));
        assert!(!filter_matches("sport/tennis#", "sport/tennis/x"));
        assert!(!filter_matches(
            "sport/tennis/#/ranking",
            "sport/tennis/x/ranking"
        ));
        assert!(!filter_matches("sport/tennis/#/ranking", "sport/tennis"));
        let mut tree = TopicTree::new();
        tree.insert("sport/tennis/#/ranking", 1u32, ());
        assert_eq!(tree.entries()[0].0, "sport/tennis/#/ranking");
        assert_eq!(tree.remove("sport/tennis/#/ranking", &1), Some(()));
        assert_eq!(tree.node_count(), 1);
    }

    // §4.7.1.3 Single-level wildcard.

    #[test]
    fn mqtt_4_7_1_3_single_level_wildcard_spec_examples() {
        // "sport/tennis/+" matches "sport/tennis/player1" and
        // "sport/tennis/player2", but not "sport/tennis/player1/ranking".
        assert!(filter_matches("sport/tennis/+", "sport/tennis/player1"));
        assert!(filter_matches("sport/tennis/+", "sport/tennis/player2"));
        assert!(!filter_matches(
            "sport/tennis/+",
            "sport/tennis/player1/ranking"
        ));
        // "sport/+" does not match "sport" but it does match "sport/".
        assert!(!filter_matches("sport/+", "sport"));
        assert!(filter_matches("sport/+", "sport/"));
        // "+" is valid; "+/tennis/#" is valid; "sport/+/player1" is valid.
        assert!(filter_matches("+", "sport"));
        assert!(!filter_matches("+", "sport/tennis"));
        assert!(filter_matches("+/tennis/#", "sport/tennis"));
        assert!(filter_matches("+/tennis/#", "sport/tennis/player1/ranking"));
        assert!(!filter_matches("+/tennis/#", "sport/golf"));
        assert!(filter_matches("sport/+/player1", "sport/tennis/player1"));
        assert!(!filter_matches("sport/+/player1", "sport/tennis/player2"));
        // "/finance" matches "+/+" and "/+", but not "+".
        assert!(filter_matches("+/+", "/finance"));
        assert!(filter_matches("/+", "/finance"));
        assert!(!filter_matches("+", "/finance"));
    }

    #[test]
    fn mqtt_4_7_1_3_plus_matches_empty_level() {
        assert!(filter_matches("a/+/c", "a//c"));
        assert!(filter_matches("+/+", "/"));
        assert!(filter_matches("a/+", "a/"));
        assert!(!filter_matches("a/+/c", "a/c"));
        // "sport+" is invalid; stored as a literal level it matches only itself.
        assert!(!filter_matches("sport+", "sport"));
        assert!(!filter_matches("sport+", "sportx"));
    }

    // §4.7.2 Topics beginning with $.

    #[test]
    fn mqtt_4_7_2_1_wildcard_does_not_match_dollar_topics() {
        // A subscription to "#" will not receive any messages published to a
        // topic beginning with a $.
        assert!(!filter_matches("#", "$SYS"));
        assert!(!filter_matches("#", "$SYS/broker/load"));
        assert!(!filter_matches("#", "$"));
        assert!(!filter_matches("+", "$SYS"));
        assert!(!filter_matches("+/#", "$SYS/x"));
        // A subscription to "+/monitor/Clients" will not receive any messages
        // published to "$SYS/monitor/Clients".
        assert!(!filter_matches("+/monitor/Clients", "$SYS/monitor/Clients"));
        assert!(!filter_matches("+/monitor", "$SYS/monitor"));
    }

    #[test]
    fn mqtt_4_7_2_1_dollar_filters_match_dollar_topics() {
        // A subscription to "$SYS/#" will receive messages published to
        // topics beginning with "$SYS/".
        assert!(filter_matches("$SYS/#", "$SYS/x"));
        assert!(filter_matches("$SYS/#", "$SYS"));
        assert!(filter_matches("$SYS/#", "$SYS/broker/clients/connected"));
        // A subscription to "$SYS/monitor/+" will receive messages published
        // to "$SYS/monitor/Clients".
        assert!(filter_matches("$SYS/monitor/+", "$SYS/monitor/Clients"));
        // Only the first level is special.
        assert!(filter_matches("a/+", "a/$x"));
        assert!(filter_matches("a/#", "a/$x/y"));
        assert!(filter_matches("$x/+/#", "$x/$y/z"));
    }

    #[test]
    fn mqtt_4_7_2_1_subscribing_to_hash_and_sys_hash_gets_both() {
        // For a Client to receive messages from topics that begin with $SYS/
        // and from topics that don't begin with a $, it has to subscribe to
        // both "#" and "$SYS/#".
        let mut tree = TopicTree::new();
        tree.insert("#", 1u32, 'a');
        tree.insert("$SYS/#", 1u32, 'b');
        assert_eq!(matches(&tree, "$SYS/load"), vec![(1, 'b')]);
        assert_eq!(matches(&tree, "home/load"), vec![(1, 'a')]);
    }

    // §4.7.3 Topic semantic and usage.

    #[test]
    fn mqtt_4_7_3_levels_are_case_sensitive_and_exact() {
        // "ACCOUNTS" and "Accounts" are two different Topic Names.
        assert!(!filter_matches("ACCOUNTS", "Accounts"));
        assert!(filter_matches("Accounts", "Accounts"));
        // "Accounts payable" is a valid Topic Name containing a space.
        assert!(filter_matches("Accounts payable", "Accounts payable"));
        assert!(filter_matches("+", "Accounts payable"));
        // "/finance" is different from "finance".
        assert!(!filter_matches("/finance", "finance"));
        assert!(!filter_matches("finance", "/finance"));
        // Empty levels are levels: "a//b" has three.
        assert!(filter_matches("a/+/b", "a//b"));
        assert!(!filter_matches("a/b", "a//b"));
        assert!(filter_matches("a//b", "a//b"));
        assert!(!filter_matches("+/+", "a//b"));
        assert!(filter_matches("+/+/+", "a//b"));
        assert!(filter_matches("a/b/", "a/b/"));
        assert!(!filter_matches("a/b", "a/b/"));
        // Non-ASCII levels are compared as strings.
        assert!(filter_matches("ß/ü/+", "ß/ü/日本"));
    }

    // Tree semantics.

    #[test]
    fn mqtt_3_8_4_3_identical_filter_replaces_subscription() {
        let mut tree = TopicTree::new();
        assert_eq!(tree.insert("a/+", 7u32, 1u8), None);
        assert_eq!(tree.insert("a/+", 7u32, 2u8), Some(1));
        assert_eq!(tree.len(), 1);
        assert_eq!(tree.get("a/+", &7), Some(&2));
        assert_eq!(matches(&tree, "a/b"), vec![(7, 2)]);
        *tree.get_mut("a/+", &7).unwrap() = 3;
        assert_eq!(matches(&tree, "a/b"), vec![(7, 3)]);
        // "a/#" and "a/+" are different filters for the same key.
        assert_eq!(tree.insert("a/#", 7u32, 9u8), None);
        assert_eq!(tree.len(), 2);
        assert_eq!(tree.get("a/#", &7), Some(&9));
        assert_eq!(tree.get("a", &7), None);
        assert_eq!(tree.get("a/b", &7), None);
    }

    #[test]
    fn overlapping_filters_report_once_per_filter() {
        let mut tree = TopicTree::new();
        for (i, f) in ["a/b", "a/+", "+/b", "#", "a/#", "+/+", "a/b/#", "b/#"]
            .into_iter()
            .enumerate()
        {
            tree.insert(f, 1u32, i);
        }
        tree.insert("a/b", 2u32, 100);
        assert_eq!(
            matches(&tree, "a/b"),
            vec![
                (1, 0),
                (1, 1),
                (1, 2),
                (1, 3),
                (1, 4),
                (1, 5),
                (1, 6),
                (2, 100)
            ]
        );
        assert_eq!(matches(&tree, "b"), vec![(1, 3), (1, 7)]);
        assert_eq!(matches(&tree, "$a/b"), vec![]);
    }

    #[test]
    fn many_keys_on_one_filter() {
        let mut tree = TopicTree::new();
        for k in 0..5000u32 {
            tree.insert("#", k, k * 2);
            tree.insert("x/y", k, k * 3);
        }
        assert_eq!(tree.len(), 10_000);
        let mut n = 0;
        let mut sum = 0u64;
        tree.for_each_match("x/y", |k, v| {
            n += 1;
            sum += u64::from(*v) - u64::from(*k);
        });
        assert_eq!(n, 10_000);
        assert_eq!(sum, (0..5000u64).map(|k| k + 2 * k).sum::<u64>());
        for k in 0..5000u32 {
            assert_eq!(tree.remove("#", &k), Some(k * 2));
            assert_eq!(tree.remove("x/y", &k), Some(k * 3));
        }
        assert!(tree.is_empty());
        assert_eq!(tree.node_count(), 1);
        assert_eq!(tree.root.hash_subs.capacity(), 0);
    }

    #[test]
    fn remove_missing_returns_none_and_keeps_tree() {
        let mut tree = TopicTree::new();
        tree.insert("a/b/c", 1u32, ());
        assert_eq!(tree.remove("a/b/c", &2), None);
        assert_eq!(tree.remove("a/b", &1), None);
        assert_eq!(tree.remove("a/b/c/d", &1), None);
        assert_eq!(tree.remove("a/+/c", &1), None);
        assert_eq!(tree.remove("a/b/#", &1), None);
        assert_eq!(tree.remove("#", &1), None);
        assert_eq!(tree.len(), 1);
        assert_eq!(tree.node_count(), 4);
        assert_eq!(tree.remove("a/b/c", &1), Some(()));
        assert_eq!(tree.remove("a/b/c", &1), None);
        assert_eq!(tree.len(), 0);
        assert_eq!(tree.node_count(), 1);
    }

    #[test]
    fn remove_prunes_only_unshared_nodes() {
        let mut tree = TopicTree::new();
        tree.insert("a/b/c/d", 1u32, ());
        tree.insert("a/b", 1u32, ());
        tree.insert("a/+/x", 1u32, ());
        tree.insert("a/b/#", 2u32, ());
        // root, a, b, c, d, +, x
        assert_eq!(tree.node_count(), 7);
        tree.remove("a/b/c/d", &1);
        assert_eq!(tree.node_count(), 5);
        assert!(filter_tree_matches(&tree, "a/b", 1));
        tree.remove("a/b", &1);
        // "b" still holds the "a/b/#" subscription.
        assert_eq!(tree.node_count(), 5);
        tree.remove("a/b/#", &2);
        assert_eq!(tree.node_count(), 4);
        tree.remove("a/+/x", &1);
        assert_eq!(tree.node_count(), 1);
        assert!(tree.is_empty());
    }

    fn filter_tree_matches(tree: &TopicTree<u32, ()>, topic: &str, key: u32) -> bool {
        let mut found = false;
        tree.for_each_match(topic, |k, _| found |= *k == key);
        found
    }

    #[test]
    fn insert_and_remove_10000_distinct_filters_leaves_only_root() {
        let mut tree = TopicTree::new();
        let filters: Vec<String> = (0..10_000)
            .map(|i| match i % 4 {
                0 => format!("dev/{i}/temp"),
                1 => format!("dev/+/{i}/#"),
                2 => format!("{}/x/{i}", i % 7),
                _ => format!("/{i}//+"),
            })
            .collect();
        for (i, f) in filters.iter().enumerate() {
            assert_eq!(tree.insert(f, i as u32, i), None);
        }
        assert_eq!(tree.len(), 10_000);
        assert!(tree.node_count() > 10_000);
        assert_eq!(matches(&tree, "dev/8/temp"), vec![(8, 8)]);
        assert_eq!(matches(&tree, "dev/q/9/z"), vec![(9, 9)]);
        for (i, f) in filters.iter().enumerate() {
            assert_eq!(tree.remove(f, &(i as u32)), Some(i), "{f}");
        }
        assert!(tree.is_empty());
        assert_eq!(tree.node_count(), 1);
        assert_eq!(tree.root.children.capacity(), 0);
    }

    #[test]
    fn entries_reconstruct_filters() {
        let mut tree = TopicTree::new();
        let filters = [
            "#", "+", "/", "//", "", "a", "a/#", "+/#", "/+", "+/+", "/a/", "$SYS/#", "a//b",
        ];
        for (i, f) in filters.iter().enumerate() {
            tree.insert(f, i as u32, ());
        }
        let mut got: Vec<(String, u32)> = tree.iter().map(|(f, k, _)| (f, *k)).collect();
        got.sort_by_key(|e| e.1);
        let want: Vec<(String, u32)> = filters
            .iter()
            .enumerate()
            .map(|(i, f)| (f.to_string(), i as u32))
            .collect();
        assert_eq!(got, want);
        assert!(format!("{tree:?}").contains("\"$SYS/#\""));
    }

    #[test]
    fn clear_and_default() {
        let mut tree: TopicTree<u32, ()> = TopicTree::default();
        assert!(tree.is_empty());
        tree.insert("a/b", 1, ());
        tree.clear();
        assert!(tree.is_empty());
        assert_eq!(tree.node_count(), 1);
        assert!(!tree.has_match("a/b"));
    }

    // Depth: nothing may recurse per level.

    #[test]
    fn deep_filters_and_topics_do_not_overflow_the_stack() {
        const DEPTH: usize = 100_000;
        let exact = vec!["a"; DEPTH].join("/");
        let plus = vec!["+"; DEPTH].join("/");
        // Alternating literal and "+" levels: every level branches, so the
        // match stack spills to the heap.
        let mixed_filter = (0..DEPTH)
            .map(|i| if i % 2 == 0 { "a" } else { "+" })
            .collect::<Vec<_>>()
            .join("/");
        let mut tree = TopicTree::new();
        tree.insert(&exact, 1u32, ());
        tree.insert(&plus, 2u32, ());
        tree.insert(&format!("{exact}/#"), 3u32, ());
        tree.insert(&mixed_filter, 4u32, ());
        assert_eq!(
            matches(&tree, &exact),
            vec![(1, ()), (2, ()), (3, ()), (4, ())]
        );
        assert_eq!(matches(&tree, &format!("{exact}/b")), vec![(3, ())]);
        let entries = tree.entries();
        assert_eq!(entries.len(), 4);
        assert!(entries
            .iter()
            .any(|(f, k, _)| **k == 4 && *f == mixed_filter));
        assert_eq!(tree.remove(&exact, &1), Some(()));
        assert_eq!(tree.remove(&plus, &2), Some(()));
        assert_eq!(tree.remove(&format!("{exact}/#"), &3), Some(()));
        // Only the mixed chain is left (it shares no node with the others
        // beyond the first level).
        assert_eq!(tree.node_count(), DEPTH + 1);
        // Drop with a deep chain still present.
        drop(tree);
    }

    // Property test against a naive matcher.

    /// Reference matcher straight from §4.7 (allocates, recursion-free).
    fn naive_matches(filter: &str, topic: &str) -> bool {
        if topic.starts_with('$') && (filter.starts_with('+') || filter.starts_with('#')) {
            return false;
        }
        let f: Vec<&str> = filter.split('/').collect();
        let t: Vec<&str> = topic.split('/').collect();
        for (i, level) in f.iter().enumerate() {
            if *level == "#" && i == f.len() - 1 {
                return true;
            }
            if i >= t.len() || (*level != "+" && *level != t[i]) {
                return false;
            }
        }
        f.len() == t.len()
    }

    /// SplitMix64: tiny deterministic PRNG.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        }

        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }

        fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
            items[self.below(items.len())]
        }
    }

    const LEVELS: [&str; 4] = ["a", "b", "", "$x"];

    fn random_topic(rng: &mut Rng) -> String {
        let n = 1 + rng.below(4);
        (0..n)
            .map(|_| rng.pick(&LEVELS))
            .collect::<Vec<_>>()
            .join("/")
    }

    fn random_filter(rng: &mut Rng) -> String {
        let n = 1 + rng.below(4);
        let mut levels: Vec<&str> = (0..n)
            .map(|_| rng.pick(&["a", "b", "", "$x", "+", "+"]))
            .collect();
        if rng.below(3) == 0 {
            *levels.last_mut().unwrap() = "#";
        }
        levels.join("/")
    }

    #[test]
    fn naive_matcher_agrees_with_spec_examples() {
        assert!(naive_matches("sport/#", "sport"));
        assert!(naive_matches("+/+", "/finance"));
        assert!(!naive_matches("+", "/finance"));
        assert!(!naive_matches("#", "$SYS/x"));
        assert!(naive_matches("$SYS/#", "$SYS"));
        assert!(!naive_matches("sport/+", "sport"));
    }

    #[test]
    fn property_trie_matches_naive_reference() {
        let mut rng = Rng(0x5EED_1234_ABCD_0001);
        for _round in 0..40 {
            let mut tree = TopicTree::new();
            let mut reference: HashMap<(String, u32), u64> = HashMap::new();
            for _op in 0..400 {
                let filter = random_filter(&mut rng);
                let key = rng.below(5) as u32;
                if rng.below(3) == 0 {
                    let want = reference.remove(&(filter.clone(), key));
                    assert_eq!(tree.remove(&filter, &key), want, "remove {filter}");
                } else {
                    let value = rng.next();
                    let want = reference.insert((filter.clone(), key), value);
                    assert_eq!(tree.insert(&filter, key, value), want, "insert {filter}");
                }
                assert_eq!(tree.len(), reference.len());
                let topic = random_topic(&mut rng);
                let mut want: Vec<(u32, u64)> = reference
                    .iter()
                    .filter(|((f, _), _)| naive_matches(f, &topic))
                    .map(|((_, k), v)| (*k, *v))
                    .collect();
                want.sort();
                assert_eq!(matches(&tree, &topic), want, "topic {topic:?}");
            }
            let mut got: Vec<(String, u32, u64)> = tree
                .entries()
                .into_iter()
                .map(|(f, k, v)| (f, *k, *v))
                .collect();
            got.sort();
            let mut want: Vec<(String, u32, u64)> = reference
                .iter()
                .map(|((f, k), v)| (f.clone(), *k, *v))
                .collect();
            want.sort();
            assert_eq!(got, want);
            for ((f, k), v) in reference.drain() {
                assert_eq!(tree.remove(&f, &k), Some(v));
            }
            assert!(tree.is_empty());
            assert_eq!(tree.node_count(), 1);
        }
    }

    #[test]
    fn property_every_topic_level_combination() {
        // Exhaustive over all filters and topics of up to 3 levels.
        let filter_levels = ["a", "b", "", "$x", "+", "#"];
        let mut filters = Vec::new();
        for n in 1..=3 {
            let mut idx = vec![0usize; n];
            loop {
                let f: Vec<&str> = idx.iter().map(|&i| filter_levels[i]).collect();
                if !f[..n - 1].contains(&"#") {
                    filters.push(f.join("/"));
                }
                let mut j = 0;
                while j < n {
                    idx[j] += 1;
                    if idx[j] < filter_levels.len() {
                        break;
                    }
                    idx[j] = 0;
                    j += 1;
                }
                if j == n {
                    break;
                }
            }
        }
        let mut tree = TopicTree::new();
        for (i, f) in filters.iter().enumerate() {
            tree.insert(f, i as u32, ());
        }
        let mut rng = Rng(42);
        for _ in 0..2000 {
            let topic = random_topic(&mut rng);
            let got: Vec<u32> = matches(&tree, &topic).into_iter().map(|e| e.0).collect();
            let want: Vec<u32> = (0..filters.len() as u32)
                .filter(|&i| naive_matches(&filters[i as usize], &topic))
                .collect();
            assert_eq!(got, want, "topic {topic:?}");
        }
    }
}
