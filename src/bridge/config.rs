//! A bridge's settings, read from Mosquitto's `connection NAME` blocks of the config file: the
//! keys after a `connection` line belong to that bridge until the next `connection` line.
//! [`BridgeBlock`] collects one block and checks it when it ends; [`crate::config`] feeds it the
//! lines and turns its errors (one line, a message without the place) into errors naming the
//! file and line. Keys Mosquitto has and we do not ([`UNSUPPORTED_KEYS`]) are refused, never
//! ignored. Owns no thread and no state.

use std::path::PathBuf;
use std::time::Duration;

use crate::protocol::topic::{has_wildcard, valid_topic_filter};
use crate::protocol::QoS;

/// The port of an `address` given without one (Mosquitto's default too, with or without TLS).
pub const DEFAULT_PORT: u16 = 1883;

/// The keys of a `connection` block that we understand.
pub const KEYS: &[&str] = &[
    "address",
    "addresses",
    "topic",
    "bridge_protocol_version",
    "remote_clientid",
    "remote_username",
    "remote_password",
    "local_clientid",
    "cleansession",
    "keepalive_interval",
    "restart_timeout",
    "try_private",
    "notifications",
    "notification_topic",
    "start_type",
    "bridge_cafile",
    "bridge_certfile",
    "bridge_keyfile",
    "bridge_insecure",
];

/// Mosquitto's bridge keys that this build does not have: a file using one is refused (its
/// meaning would otherwise be silently lost).
pub const UNSUPPORTED_KEYS: &[&str] = &[
    "bridge_alpn",
    "bridge_attempt_unsubscribe",
    "bridge_bind_address",
    "bridge_capath",
    "bridge_ciphers",
    "bridge_ciphers_tls1.3",
    "bridge_identity",
    "bridge_max_packet_size",
    "bridge_max_topic_alias",
    "bridge_outgoing_retain",
    "bridge_psk",
    "bridge_receive_maximum",
    "bridge_reload_type",
    "bridge_require_ocsp",
    "bridge_session_expiry_interval",
    "bridge_tls_version",
    "idle_timeout",
    "local_cleansession",
    "local_password",
    "local_username",
    "notifications_local_only",
    "round_robin",
    "threshold",
];

/// Which way a `topic` line forwards.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Subscribed locally, published to the remote broker.
    Out,
    /// Subscribed on the remote broker, published locally.
    In,
    /// Both of the above.
    Both,
}

impl Direction {
    pub fn name(self) -> &'static str {
        match self {
            Direction::Out => "out",
            Direction::In => "in",
            Direction::Both => "both",
        }
    }

    /// Whether messages go from here to the remote broker.
    pub fn outgoing(self) -> bool {
        matches!(self, Direction::Out | Direction::Both)
    }

    /// Whether messages come from the remote broker to here.
    pub fn incoming(self) -> bool {
        matches!(self, Direction::In | Direction::Both)
    }
}

/// One `topic PATTERN [in|out|both [QOS [LOCAL_PREFIX REMOTE_PREFIX]]]` line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BridgeTopic {
    /// The filter without prefixes; empty when a prefix is the whole topic (Mosquitto's `""`).
    pub pattern: String,
    pub direction: Direction,
    /// The QoS of the subscriptions (local for `out`, remote for `in`).
    pub qos: QoS,
    pub local_prefix: String,
    pub remote_prefix: String,
}

impl BridgeTopic {
    /// The filter on this broker.
    pub fn local_filter(&self) -> String {
        format!("{}{}", self.local_prefix, self.pattern)
    }

    /// The filter on the remote broker.
    pub fn remote_filter(&self) -> String {
        format!("{}{}", self.remote_prefix, self.pattern)
    }
}

/// `bridge_protocol_version`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BridgeProtocol {
    V311,
    V5,
}

/// `start_type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartType {
    /// Connected when the broker starts and reconnected whenever the link drops.
    Automatic,
    /// Mosquitto's lazy start: connected once messages wait for the remote.
    Lazy,
    /// Connected when the broker starts, never reconnected.
    Once,
}

/// `restart_timeout BASE [CAP]`: with a cap, the delay before a reconnection grows from BASE
/// up to CAP (Mosquitto's backoff); with BASE alone it is constant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RestartTimeout {
    pub base: Duration,
    pub cap: Option<Duration>,
}

/// A bridge over TLS: `bridge_cafile` and optionally a client certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BridgeTls {
    pub cafile: PathBuf,
    pub certfile: Option<PathBuf>,
    pub keyfile: Option<PathBuf>,
    /// `bridge_insecure`: the remote's certificate must still chain to the CA, but its name is
    /// not checked against the address (Mosquitto's meaning).
    pub insecure: bool,
}

/// One `connection NAME` block, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BridgeConfig {
    pub name: String,
    /// The line of `connection NAME`, for messages.
    pub line: usize,
    /// Host and port, tried in order (fail-over).
    pub addresses: Vec<(String, u16)>,
    pub topics: Vec<BridgeTopic>,
    pub protocol: BridgeProtocol,
    /// `None`: Mosquitto's default, `HOSTNAME.NAME`.
    pub remote_clientid: Option<String>,
    pub remote_username: Option<String>,
    pub remote_password: Option<String>,
    /// `None`: Mosquitto's default, `local.` and the remote client id.
    pub local_clientid: Option<String>,
    pub cleansession: bool,
    pub keepalive: u16,
    pub restart_timeout: RestartTimeout,
    pub try_private: bool,
    pub notifications: bool,
    /// `None`: `$SYS/broker/connection/NAME/state`.
    pub notification_topic: Option<String>,
    pub start_type: StartType,
    pub tls: Option<BridgeTls>,
}

impl BridgeConfig {
    /// The client id on the remote broker, given this host's name.
    pub fn remote_client_id(&self, hostname: &str) -> String {
        self.remote_clientid
            .clone()
            .unwrap_or_else(|| format!("{hostname}.{}", self.name))
    }

    /// The client id the bridge has on this broker (what ACL rules name).
    pub fn local_client_id(&self, hostname: &str) -> String {
        self.local_clientid
            .clone()
            .unwrap_or_else(|| format!("local.{}", self.remote_client_id(hostname)))
    }

    /// Where the link's state is published (1 up, 0 down, retained).
    pub fn notification_topic(&self) -> String {
        self.notification_topic
            .clone()
            .unwrap_or_else(|| format!("$SYS/broker/connection/{}/state", self.name))
    }
}

/// A `connection` block being read; [`BridgeBlock::finish`] checks it as a whole.
pub struct BridgeBlock {
    config: BridgeConfig,
    /// Line of each single-valued key seen, to refuse a repeat.
    seen: Vec<(&'static str, usize)>,
    address_line: Option<usize>,
    cafile: Option<PathBuf>,
    certfile: Option<PathBuf>,
    keyfile: Option<PathBuf>,
    insecure: bool,
}

/// An error in a block: the line it is about and the message.
pub type BlockError = (usize, String);

impl BridgeBlock {
    /// Starts the block of `connection NAME` on `line`.
    pub fn new(name: &str, line: usize) -> Result<BridgeBlock, String> {
        // The name becomes part of topics and client ids: one word, no topic syntax.
        if name.is_empty()
            || name.contains(char::is_whitespace)
            || name.contains(['/', '+', '#', '\0'])
        {
            return Err(format!(
                "invalid bridge name '{name}': expected one word without '/', '+' or '#', e.g. \
                 'connection garage'"
            ));
        }
        Ok(BridgeBlock {
            config: BridgeConfig {
                name: name.to_string(),
                line,
                addresses: Vec::new(),
                topics: Vec::new(),
                protocol: BridgeProtocol::V311,
                remote_clientid: None,
                remote_username: None,
                remote_password: None,
                local_clientid: None,
                cleansession: false,
                keepalive: 60,
                restart_timeout: RestartTimeout {
                    base: Duration::from_secs(5),
                    cap: Some(Duration::from_secs(30)),
                },
                try_private: true,
                notifications: true,
                notification_topic: None,
                start_type: StartType::Automatic,
                tls: None,
            },
            seen: Vec::new(),
            address_line: None,
            cafile: None,
            certfile: None,
            keyfile: None,
            insecure: false,
        })
    }

    /// The bridge's name.
    pub fn name(&self) -> &str {
        &self.config.name
    }

    /// Applies `key value` from `line`; `key` is one of [`KEYS`].
    pub fn apply(&mut self, key: &'static str, value: &str, line: usize) -> Result<(), String> {
        let bridge_name = self.config.name.clone();
        let invalid = |expected: &str| {
            format!(
                "invalid value '{value}' for {key} in bridge '{bridge_name}': expected {expected}"
            )
        };
        if key != "topic" {
            let canonical = if key == "addresses" { "address" } else { key };
            if let Some((_, first)) = self.seen.iter().find(|(k, _)| *k == canonical) {
                return Err(format!(
                    "setting '{key}' repeats '{canonical}' from line {first} in bridge '{}'",
                    self.config.name
                ));
            }
            self.seen.push((canonical, line));
        }
        let c = &mut self.config;
        match key {
            "address" | "addresses" => {
                for word in value.split_whitespace() {
                    let addr = parse_address(word).ok_or_else(|| {
                        invalid("HOST[:PORT] [HOST[:PORT] ...], e.g. 'address 192.168.1.2:1883'")
                    })?;
                    c.addresses.push(addr);
                }
                self.address_line = Some(line);
            }
            "topic" => {
                let topic = parse_topic(value).map_err(|why| {
                    format!(
                        "invalid value '{value}' for topic in bridge '{}': {why}",
                        c.name
                    )
                })?;
                c.topics.push(topic);
            }
            "bridge_protocol_version" => {
                c.protocol = match value {
                    "mqttv311" => BridgeProtocol::V311,
                    "mqttv50" => BridgeProtocol::V5,
                    _ => return Err(invalid("mqttv311 or mqttv50 (mqttv31 is not supported)")),
                }
            }
            "remote_clientid" | "local_clientid" => {
                if value.contains(char::is_whitespace) || value.len() > 65535 {
                    return Err(invalid("one word"));
                }
                let v = Some(value.to_string());
                if key == "remote_clientid" {
                    c.remote_clientid = v;
                } else {
                    c.local_clientid = v;
                }
            }
            "remote_username" => c.remote_username = Some(value.to_string()),
            "remote_password" => c.remote_password = Some(value.to_string()),
            "cleansession" => c.cleansession = parse_bool(value).ok_or_else(|| invalid(BOOL))?,
            "try_private" => c.try_private = parse_bool(value).ok_or_else(|| invalid(BOOL))?,
            "notifications" => c.notifications = parse_bool(value).ok_or_else(|| invalid(BOOL))?,
            "bridge_insecure" => self.insecure = parse_bool(value).ok_or_else(|| invalid(BOOL))?,
            "keepalive_interval" => {
                c.keepalive = value
                    .parse::<u16>()
                    .ok()
                    .filter(|k| *k >= 5)
                    .ok_or_else(|| invalid("seconds from 5 to 65535"))?
            }
            "restart_timeout" => {
                let secs = |s: &str| s.parse::<u32>().ok().filter(|n| (1..=86_400).contains(n));
                let words: Vec<&str> = value.split_whitespace().collect();
                let expected = "BASE [CAP] in seconds (1 to 86400, CAP not below BASE), e.g. \
                                'restart_timeout 5 30'";
                c.restart_timeout = match words[..] {
                    [base] => RestartTimeout {
                        base: Duration::from_secs(
                            secs(base).ok_or_else(|| invalid(expected))?.into(),
                        ),
                        cap: None,
                    },
                    [base, cap] => {
                        let (base, cap) = secs(base)
                            .zip(secs(cap))
                            .filter(|(b, c)| c >= b)
                            .ok_or_else(|| invalid(expected))?;
                        RestartTimeout {
                            base: Duration::from_secs(base.into()),
                            cap: Some(Duration::from_secs(cap.into())),
                        }
                    }
                    _ => return Err(invalid(expected)),
                };
            }
            "notification_topic" => {
                if !crate::protocol::topic::valid_topic_name(value) {
                    return Err(invalid("a topic name without wildcards"));
                }
                c.notification_topic = Some(value.to_string());
            }
            "start_type" => {
                c.start_type = match value {
                    "automatic" => StartType::Automatic,
                    "lazy" => StartType::Lazy,
                    "once" => StartType::Once,
                    _ => return Err(invalid("automatic, lazy or once")),
                }
            }
            "bridge_cafile" => self.cafile = Some(PathBuf::from(value)),
            "bridge_certfile" => self.certfile = Some(PathBuf::from(value)),
            "bridge_keyfile" => self.keyfile = Some(PathBuf::from(value)),
            _ => return Err(format!("'{key}' is not a bridge setting")),
        }
        Ok(())
    }

    /// The block as a whole: an address, a topic, TLS keys that go together.
    pub fn finish(self) -> Result<BridgeConfig, BlockError> {
        let mut c = self.config;
        let at = |line: usize, message: String| Err((line, message));
        if c.addresses.is_empty() {
            return at(
                c.line,
                format!("bridge '{}' has no 'address HOST[:PORT]'", c.name),
            );
        }
        if c.topics.is_empty() {
            return at(
                c.line,
                format!(
                    "bridge '{}' has no 'topic' line: it would forward nothing",
                    c.name
                ),
            );
        }
        if c.remote_password.is_some() && c.remote_username.is_none() {
            return at(
                c.line,
                format!(
                    "bridge '{}' has remote_password without remote_username",
                    c.name
                ),
            );
        }
        if self.certfile.is_some() != self.keyfile.is_some() {
            return at(
                c.line,
                format!(
                    "bridge '{}': bridge_certfile and bridge_keyfile go together",
                    c.name
                ),
            );
        }
        match self.cafile {
            Some(cafile) => {
                c.tls = Some(BridgeTls {
                    cafile,
                    certfile: self.certfile,
                    keyfile: self.keyfile,
                    insecure: self.insecure,
                })
            }
            None if self.certfile.is_some() || self.insecure => {
                return at(
                    c.line,
                    format!(
                        "bridge '{}': TLS needs bridge_cafile (the CA that signed the remote \
                         broker's certificate; bridge_capath is not supported)",
                        c.name
                    ),
                )
            }
            None => {}
        }
        Ok(c)
    }
}

const BOOL: &str = "true or false";

fn parse_bool(v: &str) -> Option<bool> {
    match v {
        "true" => Some(true),
        "false" => Some(false),
        _ => None,
    }
}

/// `HOST`, `HOST:PORT`, `[V6]:PORT` or a bare IPv6 address.
fn parse_address(word: &str) -> Option<(String, u16)> {
    let port = |p: &str| p.parse::<u16>().ok().filter(|p| *p != 0);
    let (host, port) = if let Some(rest) = word.strip_prefix('[') {
        let (host, after) = rest.split_once(']')?;
        match after {
            "" => (host, DEFAULT_PORT),
            _ => (host, port(after.strip_prefix(':')?)?),
        }
    } else if word.matches(':').count() == 1 {
        let (host, p) = word.split_once(':')?;
        (host, port(p)?)
    } else {
        (word, DEFAULT_PORT)
    };
    (!host.is_empty() && !host.contains(['/', '[', ']'])).then(|| (host.to_string(), port))
}

/// `PATTERN [in|out|both [QOS [LOCAL_PREFIX REMOTE_PREFIX]]]`; `""` is an empty word.
fn parse_topic(value: &str) -> Result<BridgeTopic, &'static str> {
    let words: Vec<&str> = value
        .split_whitespace()
        .map(|w| if w == "\"\"" { "" } else { w })
        .collect();
    let (pattern, rest) = words.split_first().ok_or("no pattern")?;
    let direction = match rest.first().copied() {
        None | Some("out") => Direction::Out,
        Some("in") => Direction::In,
        Some("both") => Direction::Both,
        Some(_) => return Err("the direction is in, out or both"),
    };
    let qos = match rest.get(1) {
        None => QoS::AtMostOnce,
        Some(q) => q
            .parse::<u8>()
            .ok()
            .and_then(QoS::from_u8)
            .ok_or("the QoS is 0, 1 or 2")?,
    };
    let (local_prefix, remote_prefix) = match rest.len() {
        0..=2 => ("", ""),
        4 => (rest[2], rest[3]),
        3 => return Err("give both prefixes, LOCAL_PREFIX REMOTE_PREFIX (\"\" for none)"),
        _ => {
            return Err("too many words: PATTERN [in|out|both [QOS [LOCAL_PREFIX REMOTE_PREFIX]]]")
        }
    };
    if has_wildcard(local_prefix) || has_wildcard(remote_prefix) {
        return Err("a prefix has no wildcards");
    }
    let topic = BridgeTopic {
        pattern: pattern.to_string(),
        direction,
        qos,
        local_prefix: local_prefix.to_string(),
        remote_prefix: remote_prefix.to_string(),
    };
    if pattern.is_empty() && (local_prefix.is_empty() || remote_prefix.is_empty()) {
        return Err("an empty pattern (\"\") needs both prefixes: they are then the topics");
    }
    if !valid_topic_filter(&topic.local_filter()) || !valid_topic_filter(&topic.remote_filter()) {
        return Err("not a valid topic filter with its prefixes");
    }
    Ok(topic)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn block(lines: &[(&'static str, &str)]) -> Result<BridgeConfig, String> {
        let mut b = BridgeBlock::new("garage", 1)?;
        for (i, (k, v)) in lines.iter().enumerate() {
            b.apply(k, v, i + 2)?;
        }
        b.finish().map_err(|(_, m)| m)
    }

    #[test]
    fn defaults_are_mosquittos() {
        let c = block(&[("address", "10.0.0.2"), ("topic", "sensors/#")]).unwrap();
        assert_eq!(c.addresses, vec![("10.0.0.2".to_string(), 1883)]);
        assert_eq!(c.protocol, BridgeProtocol::V311);
        assert!(c.try_private && c.notifications && !c.cleansession);
        assert_eq!(c.keepalive, 60);
        assert_eq!(c.start_type, StartType::Automatic);
        assert_eq!(c.remote_client_id("pi"), "pi.garage");
        assert_eq!(c.local_client_id("pi"), "local.pi.garage");
        assert_eq!(
            c.notification_topic(),
            "$SYS/broker/connection/garage/state"
        );
        let t = &c.topics[0];
        assert_eq!((t.direction, t.qos), (Direction::Out, QoS::AtMostOnce));
        assert_eq!(
            (t.local_filter(), t.remote_filter()),
            ("sensors/#".into(), "sensors/#".into())
        );
        assert!(c.tls.is_none());
    }

    #[test]
    fn topic_forms() {
        let c = block(&[
            ("address", "h"),
            ("topic", "a/# in"),
            ("topic", "b/+ both 2"),
            ("topic", "c out 1 house/ garage/"),
            ("topic", "\"\" in 1 local/x remote/y"),
        ])
        .unwrap();
        let t: Vec<_> = c
            .topics
            .iter()
            .map(|t| (t.direction, t.qos, t.local_filter(), t.remote_filter()))
            .collect();
        assert_eq!(
            t,
            vec![
                (Direction::In, QoS::AtMostOnce, "a/#".into(), "a/#".into()),
                (
                    Direction::Both,
                    QoS::ExactlyOnce,
                    "b/+".into(),
                    "b/+".into()
                ),
                (
                    Direction::Out,
                    QoS::AtLeastOnce,
                    "house/c".into(),
                    "garage/c".into()
                ),
                (
                    Direction::In,
                    QoS::AtLeastOnce,
                    "local/x".into(),
                    "remote/y".into()
                ),
            ]
        );
    }

    #[test]
    fn bad_topics_are_refused() {
        for bad in [
            "a sideways",
            "a in 3",
            "a in 1 onlyone",
            "a in 1 p/ q/ extra",
            "a in 1 p/+/ q/",
            "\"\" in 1 \"\" q",
            "a/#/b",
        ] {
            let e = block(&[("address", "h"), ("topic", bad)]).unwrap_err();
            assert!(e.contains("for topic in bridge 'garage'"), "{bad}: {e}");
        }
    }

    #[test]
    fn addresses_fail_over_list() {
        let c = block(&[
            ("address", "a.example:1884 192.168.1.9 [::1]:2883 ::1"),
            ("topic", "t"),
        ])
        .unwrap();
        assert_eq!(
            c.addresses,
            vec![
                ("a.example".into(), 1884),
                ("192.168.1.9".into(), 1883),
                ("::1".into(), 2883),
                ("::1".into(), 1883)
            ]
        );
        for bad in ["h:0", "h:x", ":1883", "[::1", "h:70000"] {
            let e = block(&[("address", bad), ("topic", "t")]).unwrap_err();
            assert!(e.contains("for address"), "{bad}: {e}");
        }
    }

    #[test]
    fn every_setting() {
        let c = block(&[
            ("addresses", "h:1"),
            ("topic", "t"),
            ("bridge_protocol_version", "mqttv50"),
            ("remote_clientid", "rc"),
            ("remote_username", "u"),
            ("remote_password", "p w"),
            ("local_clientid", "lc"),
            ("cleansession", "true"),
            ("keepalive_interval", "30"),
            ("restart_timeout", "2 60"),
            ("try_private", "false"),
            ("notifications", "false"),
            ("notification_topic", "bridges/garage"),
            ("start_type", "once"),
            ("bridge_cafile", "/ca.pem"),
            ("bridge_certfile", "/c.pem"),
            ("bridge_keyfile", "/k.pem"),
            ("bridge_insecure", "true"),
        ])
        .unwrap();
        assert_eq!(c.protocol, BridgeProtocol::V5);
        assert_eq!(c.remote_client_id("x"), "rc");
        assert_eq!(c.local_client_id("x"), "lc");
        assert_eq!(c.remote_username.as_deref(), Some("u"));
        assert_eq!(c.remote_password.as_deref(), Some("p w"));
        assert!(c.cleansession && !c.try_private && !c.notifications);
        assert_eq!(c.keepalive, 30);
        assert_eq!(
            c.restart_timeout,
            RestartTimeout {
                base: Duration::from_secs(2),
                cap: Some(Duration::from_secs(60))
            }
        );
        assert_eq!(c.notification_topic(), "bridges/garage");
        assert_eq!(c.start_type, StartType::Once);
        assert_eq!(
            c.tls,
            Some(BridgeTls {
                cafile: "/ca.pem".into(),
                certfile: Some("/c.pem".into()),
                keyfile: Some("/k.pem".into()),
                insecure: true
            })
        );
        let c = block(&[("address", "h"), ("topic", "t"), ("restart_timeout", "7")]).unwrap();
        assert_eq!(c.restart_timeout.cap, None);
    }

    #[test]
    fn bad_values_and_blocks_are_refused() {
        let cases: &[(&[(&'static str, &str)], &str)] = &[
            (&[("topic", "t")], "has no 'address"),
            (&[("address", "h")], "has no 'topic'"),
            (
                &[("address", "h"), ("address", "g"), ("topic", "t")],
                "repeats 'address' from line 2",
            ),
            (
                &[("address", "h"), ("addresses", "g"), ("topic", "t")],
                "repeats 'address'",
            ),
            (
                &[
                    ("address", "h"),
                    ("topic", "t"),
                    ("bridge_protocol_version", "mqttv31"),
                ],
                "mqttv311 or mqttv50",
            ),
            (
                &[("address", "h"), ("topic", "t"), ("cleansession", "yes")],
                "true or false",
            ),
            (
                &[
                    ("address", "h"),
                    ("topic", "t"),
                    ("keepalive_interval", "2"),
                ],
                "5 to 65535",
            ),
            (
                &[
                    ("address", "h"),
                    ("topic", "t"),
                    ("restart_timeout", "30 5"),
                ],
                "CAP not below BASE",
            ),
            (
                &[
                    ("address", "h"),
                    ("topic", "t"),
                    ("restart_timeout", "1 2 3"),
                ],
                "BASE [CAP]",
            ),
            (
                &[("address", "h"), ("topic", "t"), ("start_type", "never")],
                "automatic, lazy or once",
            ),
            (
                &[
                    ("address", "h"),
                    ("topic", "t"),
                    ("notification_topic", "a/#"),
                ],
                "without wildcards",
            ),
            (
                &[("address", "h"), ("topic", "t"), ("remote_password", "p")],
                "without remote_username",
            ),
            (
                &[("address", "h"), ("topic", "t"), ("bridge_certfile", "/c")],
                "go together",
            ),
            (
                &[
                    ("address", "h"),
                    ("topic", "t"),
                    ("bridge_insecure", "true"),
                ],
                "needs bridge_cafile",
            ),
            (
                &[("address", "h"), ("topic", "t"), ("remote_clientid", "a b")],
                "one word",
            ),
        ];
        for (lines, want) in cases {
            let e = block(lines).unwrap_err();
            assert!(e.contains(want), "{lines:?}: {e}");
        }
        for bad in ["", "a/b", "a b", "#"] {
            assert!(BridgeBlock::new(bad, 1).is_err(), "{bad}");
        }
    }
}
