//! Topic Name and Topic Filter rules (§4.7), matching a filter against a name, and Shared
//! Subscription syntax (§4.8.2), as pure functions the broker, the ACL and the retained store
//! call. The codec itself only rejects wildcards in topic names; filter syntax is checked by the
//! broker so that it can answer 0x8F per filter in SUBACK.

/// The multi-level wildcard (§4.7.1.2).
pub const MULTI_LEVEL_WILDCARD: char = '#';
/// The single-level wildcard (§4.7.1.3).
pub const SINGLE_LEVEL_WILDCARD: char = '+';
/// The topic level separator (§4.7.1.1).
pub const LEVEL_SEPARATOR: char = '/';
/// The prefix of a Shared Subscription filter (§4.8.2).
pub const SHARED_PREFIX: &str = "$share/";

/// Whether `s` contains `+` or `#`.
pub fn has_wildcard(s: &str) -> bool {
    s.contains([MULTI_LEVEL_WILDCARD, SINGLE_LEVEL_WILDCARD])
}

/// A valid Topic Name: at least one character (MQTT-4.7.3-1), no wildcard (MQTT-4.7.0-1,
/// MQTT-3.3.2-2), no U+0000 (MQTT-4.7.3-2).
pub fn valid_topic_name(s: &str) -> bool {
    !s.is_empty() && !has_wildcard(s) && !s.contains('\0')
}

/// A valid Topic Filter: at least one character, no U+0000, `#` only as the whole last level
/// (MQTT-4.7.1-1), `+` only as a whole level (MQTT-4.7.1-2).
pub fn valid_topic_filter(s: &str) -> bool {
    if s.is_empty() || s.contains('\0') {
        return false;
    }
    let mut levels = s.split(LEVEL_SEPARATOR).peekable();
    while let Some(level) = levels.next() {
        let is_last = levels.peek().is_none();
        if level.contains(MULTI_LEVEL_WILDCARD) && !(level.len() == 1 && is_last) {
            return false;
        }
        if level.contains(SINGLE_LEVEL_WILDCARD) && level.len() != 1 {
            return false;
        }
    }
    true
}

/// A `$share/` filter that breaks the Shared Subscription syntax (§4.8.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InvalidShare;

/// Splits a Shared Subscription filter `$share/{ShareName}/{filter}` (§4.8.2).
///
/// `None` when `filter` does not start with `$share/` (an ordinary filter); `Some(Ok((group,
/// filter)))` for a valid one; `Some(Err(InvalidShare))` when the ShareName is empty or contains
/// `/`, `+` or `#` (MQTT-4.8.2-1), or no valid Topic Filter follows it (MQTT-4.8.2-2).
pub fn parse_shared(filter: &str) -> Option<Result<(&str, &str), InvalidShare>> {
    let rest = filter.strip_prefix(SHARED_PREFIX)?;
    let Some((group, inner)) = rest.split_once(LEVEL_SEPARATOR) else {
        return Some(Err(InvalidShare));
    };
    if group.is_empty() || has_wildcard(group) || !valid_topic_filter(inner) {
        return Some(Err(InvalidShare));
    }
    Some(Ok((group, inner)))
}

/// Whether a (valid) topic filter matches a (valid) topic name, for one-off checks such as
/// retained messages at subscribe time and ACLs (§4.7).
pub fn filter_matches(filter: &str, topic: &str) -> bool {
    if topic.starts_with('$') && (filter.starts_with('+') || filter.starts_with('#')) {
        return false; // MQTT-4.7.2-1
    }
    let mut f = filter.split('/');
    let mut t = topic.split('/');
    loop {
        match (f.next(), t.next()) {
            (Some("#"), _) => return true,
            (Some("+"), Some(_)) => {}
            (Some(a), Some(b)) if a == b => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_names() {
        assert!(valid_topic_name("a/b"));
        assert!(valid_topic_name("/"));
        assert!(valid_topic_name("$SYS/x"));
        assert!(!valid_topic_name(""));
        assert!(!valid_topic_name("a/+"));
        assert!(!valid_topic_name("a/#"));
        assert!(!valid_topic_name("a\0b"));
    }

    #[test]
    fn mqtt_4_7_1_topic_filters() {
        for ok in [
            "#", "+", "a/#", "a/+/b", "+/+", "/", "a//b", "/#", "+/#", "sport/+",
        ] {
            assert!(valid_topic_filter(ok), "{ok}");
        }
        for bad in ["", "a#", "a/#/b", "#/a", "a+", "a/b+", "+a/b", "##", "a/\0"] {
            assert!(!valid_topic_filter(bad), "{bad}");
        }
    }

    #[test]
    fn mqtt_4_8_2_shared_filters() {
        assert_eq!(parse_shared("a/b"), None);
        assert_eq!(parse_shared("$share"), None);
        assert_eq!(parse_shared("$sharex/g/a"), None);
        assert_eq!(parse_shared("$share/g/a/b"), Some(Ok(("g", "a/b"))));
        assert_eq!(parse_shared("$share/g/#"), Some(Ok(("g", "#"))));
        assert_eq!(parse_shared("$share/g//"), Some(Ok(("g", "/"))));
        assert_eq!(parse_shared("$share//a"), Some(Err(InvalidShare)));
        assert_eq!(parse_shared("$share/g"), Some(Err(InvalidShare)));
        assert_eq!(parse_shared("$share/g/"), Some(Err(InvalidShare)));
        assert_eq!(parse_shared("$share/g+/a"), Some(Err(InvalidShare)));
        assert_eq!(parse_shared("$share/#/a"), Some(Err(InvalidShare)));
        assert_eq!(parse_shared("$share/g/a#"), Some(Err(InvalidShare)));
    }

    #[test]
    fn mqtt_4_7_1_filter_matching_examples() {
        assert!(filter_matches(
            "sport/tennis/player1/#",
            "sport/tennis/player1"
        ));
        assert!(filter_matches(
            "sport/tennis/player1/#",
            "sport/tennis/player1/ranking"
        ));
        assert!(filter_matches("sport/#", "sport"));
        assert!(filter_matches("#", "a/b"));
        assert!(filter_matches("sport/tennis/+", "sport/tennis/player1"));
        assert!(!filter_matches(
            "sport/tennis/+",
            "sport/tennis/player1/ranking"
        ));
        assert!(!filter_matches("sport/+", "sport"));
        assert!(filter_matches("sport/+", "sport/"));
        assert!(filter_matches("+/+", "/finance"));
        assert!(filter_matches("/+", "/finance"));
        assert!(!filter_matches("+", "/finance"));
    }

    #[test]
    fn mqtt_4_7_2_1_leading_wildcards_do_not_match_dollar_topics() {
        assert!(!filter_matches("#", "$SYS/uptime"));
        assert!(!filter_matches("+/monitor/Clients", "$SYS/monitor/Clients"));
        assert!(filter_matches("$SYS/#", "$SYS/monitor/Clients"));
        assert!(filter_matches("$SYS/monitor/+", "$SYS/monitor/Clients"));
    }
}
