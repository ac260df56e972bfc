//! Broker configuration: turns command-line flags, `MQTT5_BROKER_*`
//! environment variables and an optional Mosquitto-style config file into one
//! validated [`Config`] with defaults. Used by `main` only; the rest of the
//! broker is handed the finished `Config` (or parts of it).
//!
//! Every setting is declared once, in the `settings!` table below: its
//! `Config` field, type and default, how its flag takes a value, its `--help`
//! text, what a bad value's error says is expected, its parser and (where the
//! value's `Display` is not the setting's syntax) how it is shown. The flag
//! (`--max-clients`), the environment variable (`MQTT5_BROKER_MAX_CLIENTS`)
//! and the file key (`max_clients`) all come from the field name; the field's
//! doc comment is its line in the README's settings table (a test keeps the
//! two equal).
//!
//! Precedence, lowest to highest:
//!
//! 1. built-in defaults ([`Config::default`]);
//! 2. the config file named by `--config FILE`, or else by the environment
//!    variable `MQTT5_BROKER_CONFIG`;
//! 3. environment variables `MQTT5_BROKER_<SETTING>` (the setting name
//!    upper-cased, e.g. `MQTT5_BROKER_MAX_CLIENTS`); an empty variable counts
//!    as unset;
//! 4. command-line flags (`--max-clients 50`).
//!
//! Every source is validated, even a value that a higher source overrides.
//!
//! Config file format (close to `mosquitto.conf`): one `setting value` per
//! line, `setting = value` also accepted; blank lines and lines starting
//! with `#` are ignored; the value is the rest of the line (so paths may
//! contain spaces; there are no inline comments). Setting names are the
//! snake_case field names of [`Config`]. Mosquitto's listener blocks are
//! accepted: `listener PORT [ADDR]`, then `protocol` and the TLS keys of that
//! listener (see `apply_file`), and Mosquitto's bridges: `connection NAME`,
//! then that bridge's keys ([`crate::bridge::config`]). A setting may appear
//! once per file (a TLS key once per value), except the listen settings (`listen`,
//! `tls_listen`, `ws_listen`, `wss_listen`): each line or `listener` block of one adds a
//! listener, as a repeated flag does. Relative paths are relative to the working directory.
//!
//! Booleans accept `true/false`, `yes/no`, `on/off`, `1/0` (any case).
//! `persistent_client_expiration` takes Mosquitto's `<n>h|d|w|m|y`
//! (m = 30 days, y = 365 days) plus `<n>s`, plain seconds, or `never`.

use std::ffi::OsString;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::auth::{AclAccess, BanKind};
use crate::bridge::{self, config::BridgeBlock, config::BridgeConfig};
use clap::{value_parser, Arg, ArgMatches, FromArgMatches, Subcommand};

/// Prefix of every environment variable this module reads.
const ENV_PREFIX: &str = "MQTT5_BROKER_";
/// Environment variable naming the config file (`--config` wins over it).
const CONFIG_ENV: &str = "MQTT5_BROKER_CONFIG";
/// Longest accepted persistent client expiration: one second below the MQTT
/// Session Expiry Interval value that means "never" (0xFFFF_FFFF).
const MAX_EXPIRATION_SECS: u64 = 0xFFFF_FFFE;

/// A bare port listens on every IPv4 interface.
const ANY_IPV4: IpAddr = IpAddr::V4(Ipv4Addr::UNSPECIFIED);
const ADDR_EXPECTED: &str = "an IP address and port such as 0.0.0.0:1883 or [::]:1883 (port 0 picks a free port), or just a port";
const LISTENER_EXPECTED: &str =
    "a port, optionally followed by an IP address, e.g. 'listener 1883 127.0.0.1'";
const BOOL_EXPECTED: &str = "true or false (or yes/no, on/off, 1/0)";

/// Declares the settings: the [`Config`] struct, its `Default` and [`SETTINGS`], from one
/// entry per setting:
///
/// ```text
/// /// README "meaning" cell (also the field's doc)
/// field: Type = default, Style("VALUE_NAME"), parse,   // parse: fn(&str) -> Option<Type>
///     show fn(&Type) -> String,   // optional, else Display; in the syntax parse accepts
///     help "--help text",         // "[default: …] [env: …]" are appended
///     expected "…";               // completes "invalid value 'x' for field: expected …"
/// ```
///
/// The value given to `parse` is trimmed (except for `Secret`); `Style` says how the flag
/// takes it.
macro_rules! settings {
    ($(
        $(#[doc = $doc:literal])+
        $field:ident: $ty:ty = $default:expr, $style:ident($value_name:literal), $parse:expr,
            $(show $show:expr,)?
            help $help:literal,
            expected $expected:expr;
    )+) => {
        /// The broker's effective settings after defaults, file, environment and
        /// flags have been merged and validated.
        #[derive(Debug, Clone, PartialEq, Eq)]
        pub struct Config {
            $($(#[doc = $doc])+ pub $field: $ty,)+
            /// The bridges: Mosquitto's `connection NAME` blocks of the config file, in order
            /// (only the file gives them).
            pub bridges: Vec<BridgeConfig>,
        }

        impl Default for Config {
            fn default() -> Self {
                Config { $($field: $default,)+ bridges: Vec::new() }
            }
        }

        /// Every setting, in declaration order (that of `--help`, the README and
        /// [`Config::summary`]).
        const SETTINGS: &[Setting] = &[$(Setting {
            name: stringify!($field),
            style: Style::$style,
            value_name: $value_name,
            help: $help,
            expected: $expected,
            doc: &[$($doc),+],
            parse: |config, text| {
                let parse: fn(&str) -> Option<$ty> = $parse;
                parse(text).map(|value| config.$field = value).is_some()
            },
            show: |config| show!(&config.$field, $ty $(, $show)?),
        },)+];
    };
}

/// A setting's value in its own syntax: `Display` unless the entry gives `show`.
macro_rules! show {
    ($value:expr, $ty:ty) => {
        $value.to_string()
    };
    ($value:expr, $ty:ty, $show:expr) => {{
        let show: fn(&$ty) -> String = $show;
        show($value)
    }};
}

settings! {
    /// MQTT address; port 0 picks a free port. Repeats (flag given again, comma-separated in the
    /// environment, key or Mosquitto's `listener PORT [ADDR]` block again in the file): one plain
    /// listener per address
    listen: Vec<SocketAddr> = vec![SocketAddr::new(ANY_IPV4, 1883)], Repeat("ADDR:PORT"), parse_listen,
        show |a| show_addrs(a),
        help "MQTT listen address; port 0 picks a free port; repeat the flag (or comma-separate) for more plain listeners",
        expected "an IP address and port such as 0.0.0.0:1883 or [::]:1883 (port 0 picks a free port), or just a port; several separated by commas";
    /// control page address
    web_listen: SocketAddr = SocketAddr::new(ANY_IPV4, 8082), Number("ADDR:PORT"), parse_addr,
        help "Control page (HTTP) listen address",
        expected ADDR_EXPECTED;
    /// MQTT over TLS address (`off`: none); needs `certfile` and `keyfile`. Repeats like `listen`:
    /// one TLS listener per address, all with the same certificate settings
    tls_listen: Vec<SocketAddr> = Vec::new(), Repeat("ADDR:PORT"), parse_addrs,
        show |a| show_addrs(a),
        help "MQTT over TLS listen address (off: none); needs --certfile and --keyfile; repeat the flag (or comma-separate) for more",
        expected "an IP address and port such as 0.0.0.0:8883 (port 0 picks a free port), just a port, or off; several separated by commas";
    /// MQTT over WebSockets address (`off`: none): subprotocol `mqtt` on path `/mqtt` or `/`.
    /// Repeats like `listen`
    ws_listen: Vec<SocketAddr> = Vec::new(), Repeat("ADDR:PORT"), parse_addrs,
        show |a| show_addrs(a),
        help "MQTT over WebSockets listen address (off: none); path /mqtt or /, subprotocol mqtt; repeat the flag (or comma-separate) for more",
        expected "an IP address and port such as 0.0.0.0:8080 (port 0 picks a free port), just a port, or off; several separated by commas";
    /// MQTT over secure WebSockets address (`off`: none); uses the TLS listener's certificate
    /// settings (`certfile`, `keyfile`, `cafile`, `require_certificate`). Repeats like `listen`
    wss_listen: Vec<SocketAddr> = Vec::new(), Repeat("ADDR:PORT"), parse_addrs,
        show |a| show_addrs(a),
        help "MQTT over secure WebSockets (wss) listen address (off: none); needs --certfile and --keyfile, like --tls-listen; repeat the flag (or comma-separate) for more",
        expected "an IP address and port such as 0.0.0.0:8081 (port 0 picks a free port), just a port, or off; several separated by commas";
    /// PEM file: the TLS listener's certificate chain, the server's first (also usable by the
    /// page, see `web_tls_from_mqtt`); `none` = unset
    certfile: Option<PathBuf> = None, Plain("FILE"), parse_file,
        show show_file,
        help "PEM certificate chain of the MQTT TLS listener (server certificate first; also usable by the page), or none",
        expected FILE_EXPECTED;
    /// PEM file: the private key of `certfile`'s certificate (PKCS#8, PKCS#1 or SEC1)
    keyfile: Option<PathBuf> = None, Plain("FILE"), parse_file,
        show show_file,
        help "PEM private key of --certfile's certificate, or none",
        expected FILE_EXPECTED;
    /// PEM file of CA certificates: TLS clients may present a certificate signed by one (checked);
    /// none: client certificates are not asked for
    cafile: Option<PathBuf> = None, Plain("FILE"), parse_file,
        show show_file,
        help "PEM CA certificates that client certificates are verified against, or none",
        expected FILE_EXPECTED;
    /// TLS clients must present a certificate valid under `cafile` (else the handshake fails)
    require_certificate: bool = false, Bool("BOOL"), parse_bool,
        help "Refuse TLS clients without a certificate valid under --cafile",
        expected BOOL_EXPECTED;
    /// a TLS client's certificate CN is its username (ACL `%u`), no password asked; a client
    /// without a certificate gets CONNACK 0x87 / 0x05
    use_identity_as_username: bool = false, Bool("BOOL"), parse_bool,
        help "Use the TLS client certificate's CN as the username (needs --cafile); clients without one are refused",
        expected BOOL_EXPECTED;
    /// SQLite file
    db: PathBuf = PathBuf::from("mqtt5-broker.db"), Path("FILE"), |v| (!v.is_empty()).then(|| PathBuf::from(v)),
        show |p| p.display().to_string(),
        help "SQLite database file",
        expected "a file path";
    /// most connected clients (CONNECT accepted) at once; the next gets CONNACK 0x97 (5.0) / 0x03
    /// (3.1.1)
    max_clients: usize = 20, Number("N"), |v| uint(v, 1, 100_000),
        help "Most connected clients, 1..=100000",
        expected "a whole number from 1 to 100000";
    /// accept clients without credentials
    allow_anonymous: bool = false, BoolEq("BOOL"), parse_bool,
        help "Accept clients without a username; --allow-anonymous=false turns it off",
        expected BOOL_EXPECTED;
    /// bytes per socket read into the framing buffer
    read_chunk_size: usize = 512, Number("BYTES"), |v| uint(v, 16, 1_048_576),
        help "Bytes read from a socket at a time, 16..=1048576",
        expected "a whole number of bytes from 16 to 1048576";
    /// seconds a new socket has to send CONNECT
    connect_timeout: Duration = Duration::from_secs(10), Number("SECONDS"), |v| uint(v, 1, 3600).map(Duration::from_secs),
        show |d| d.as_secs().to_string(),
        help "Seconds a new connection has to send CONNECT, 1..=3600",
        expected "a whole number of seconds from 1 to 3600";
    /// sockets at once that have not yet sent a whole CONNECT (not clients: `max_clients` does not
    /// count them); a new socket beyond it closes the oldest one that is waiting on its client
    max_pending_connections: usize = 100, Number("N"), |v| uint(v, 1, 100_000),
        help "Most sockets that have not yet sent CONNECT, 1..=100000; beyond it the oldest idle one is closed",
        expected "a whole number from 1 to 100000";
    /// of those, from one source address; a new socket beyond it closes that address's oldest
    /// idle one
    max_pending_per_address: usize = 10, Number("N"), |v| uint(v, 1, 100_000),
        help "Most sockets from one address that have not yet sent CONNECT, 1..=100000; beyond it that address's oldest idle one is closed",
        expected "a whole number from 1 to 100000";
    /// largest keep alive in seconds; 5.0 clients asking more get Server Keep Alive
    max_keepalive: u16 = 65535, Number("SECONDS"), |v| uint(v, 0, 65535),
        help "Largest keep-alive granted to clients, 0..=65535 seconds",
        expected "a whole number of seconds from 0 to 65535";
    /// largest packet accepted, in bytes (checked before the body is buffered)
    max_packet_size: u32 = 1_048_576, Number("BYTES"), |v| uint(v, 20, 268_435_455),
        help "Largest packet accepted, 20..=268435455",
        expected "a whole number of bytes from 20 to 268435455";
    /// QoS 1/2 messages in flight *to* a 3.1.1 client (Mosquitto's meaning; a 5.0 client's own
    /// Receive Maximum sets its window); never limits what a client sends
    max_inflight_messages: u16 = 20, Number("N"), |v| uint(v, 1, 65535),
        help "QoS 1/2 messages in flight to each 3.1.1 client (the outbound window; 5.0 clients set theirs), 1..=65535",
        expected "a whole number from 1 to 65535";
    /// our Receive Maximum: QoS 2 messages a 5.0 client may have awaiting PUBREL (more: DISCONNECT
    /// 0x93); advertised in CONNACK unless 65535. 3.1.1 clients are bounded only by the packet-id
    /// space
    receive_maximum: u16 = 65535, Number("N"), |v| uint(v, 1, 65535),
        help "Receive Maximum: QoS 2 messages a 5.0 client may have awaiting PUBREL (more get DISCONNECT 0x93), 1..=65535; 3.1.1 clients are bounded by the packet-id space only",
        expected "a whole number from 1 to 65535";
    /// messages queued per client (0 = no limit)
    max_queued_messages: usize = 1000, Number("N"), |v| v.parse().ok(),
        help "Messages queued per client, 0 = no limit",
        expected "a whole number, 0 for no limit";
    /// bytes queued per client (0 = no limit)
    max_queued_bytes: usize = 8 * 1024 * 1024, Number("BYTES"), |v| v.parse().ok(),
        help "Bytes queued per client, 0 = no limit",
        expected "a whole number of bytes, 0 for no limit";
    /// queue QoS 0 for offline persistent sessions
    queue_qos0_messages: bool = false, Bool("BOOL"), parse_bool,
        help "Queue QoS 0 messages for offline persistent clients",
        expected BOOL_EXPECTED;
    /// inbound Topic Alias Maximum
    max_topic_alias: u16 = 10, Number("N"), |v| uint(v, 0, 65535),
        help "Inbound Topic Alias Maximum, 0..=65535",
        expected "a whole number from 0 to 65535";
    /// send topic aliases to 5.0 clients that allow them
    outbound_topic_aliases: bool = true, Bool("BOOL"), parse_bool,
        help "Use topic aliases when sending to clients",
        expected BOOL_EXPECTED;
    /// support retained messages
    retain_available: bool = true, Bool("BOOL"), parse_bool,
        help "Support retained messages",
        expected BOOL_EXPECTED;
    /// cap on how long an offline persistent session is kept (`2h`, `1d`, `1w`, …)
    persistent_client_expiration: Option<Duration> = None, Hyphen("DURATION"), parse_expiration,
        show |d| d.map_or_else(|| "never".to_string(), format_expiration),
        help "Forget persistent clients absent this long: a number with s, h, d, w, m (30 days) or y, plain seconds, or never",
        expected "a duration like 3600, 90s, 2h, 1d, 1w, 1m (30 days) or 1y (365 days), from 1 second to 4294967294 seconds, or 'never'";
    /// seconds between `$SYS/broker/...` updates (0 = off)
    sys_interval: Duration = Duration::from_secs(10), Number("SECONDS"), |v| uint(v, 0, 86_400).map(Duration::from_secs),
        show |d| d.as_secs().to_string(),
        help "Seconds between $SYS updates, 0 disables $SYS, at most 86400",
        expected "a whole number of seconds from 0 (disables $SYS) to 86400";
    /// most levels in a topic or filter
    max_topic_levels: usize = 128, Number("N"), |v| uint(v, 1, 65535),
        help "Most levels in a topic name or filter, 1..=65535",
        expected "a whole number from 1 to 65535";
    /// longest client id in bytes
    max_client_id_len: usize = 256, Number("BYTES"), |v| uint(v, 23, 65535),
        help "Longest client identifier, 23..=65535 bytes",
        expected "a whole number of bytes from 23 to 65535";
    /// subscriptions per client (0 = no limit); more get SUBACK 0x97 (5.0) / 0x80
    max_subscriptions: usize = 1000, Number("N"), |v| uint(v, 0, u64::from(u32::MAX)),
        help "Most subscriptions per client, 0 = no limit",
        expected "a whole number, 0 for no limit";
    /// filters in one SUBSCRIBE; the rest get 0x97 (5.0) / 0x80
    max_filters_per_subscribe: usize = 100, Number("N"), |v| uint(v, 1, 65535),
        help "Most topic filters in one SUBSCRIBE (the rest get 0x97), 1..=65535",
        expected "a whole number from 1 to 65535";
    /// longest topic name or filter in bytes
    max_topic_len: usize = 65535, Number("BYTES"), |v| uint(v, 1, 65535),
        help "Longest topic name or filter, 1..=65535 bytes",
        expected "a whole number of bytes from 1 to 65535";
    /// user properties on one PUBLISH / CONNECT
    max_user_properties: usize = 100, Number("N"), |v| uint(v, 0, 65535),
        help "Most user properties on one packet, 0..=65535",
        expected "a whole number from 0 to 65535";
    /// CONNECTs per client id per minute (0 = no limit); more get CONNACK 0x9F (5.0) / 0x03
    connect_rate_limit: u32 = 60, Number("N"), |v| uint(v, 0, 1_000_000),
        help "Most CONNECTs per client id per minute (more get 0x9F), 0 = no limit",
        expected "a whole number of connects per minute, 0 for no limit";
    /// durability of acknowledged QoS 1/2 messages: `normal`, `full`, `relaxed` (see below)
    sync: Sync = Sync::Normal, Plain("MODE"), |v| match v.to_ascii_lowercase().as_str() {
                "normal" => Some(Sync::Normal),
                "full" => Some(Sync::Full),
                "relaxed" => Some(Sync::Relaxed),
                _ => None,
            },
        help "Durability of acknowledged QoS 1/2 messages: normal (survives kill -9), full (fsync: survives power loss), relaxed (committed within --sync-window)",
        expected "normal, full or relaxed";
    /// with `sync relaxed`: longest an acknowledged message waits for its commit, in milliseconds
    sync_window: Duration = Duration::from_millis(100), Number("MS"), |v| uint(v, 1, 60_000).map(Duration::from_millis),
        show |d| d.as_millis().to_string(),
        help "With --sync relaxed: most milliseconds before an acked message is committed, 1..=60000",
        expected "a whole number of milliseconds from 1 to 60000";
    /// messages kept per topic for the page (0 = no history recording)
    history_per_topic: u32 = 100, Number("N"), |v| uint(v, 0, 100_000),
        help "History messages kept per topic, 0 = no history recording, at most 100000",
        expected "a whole number from 0 (no history) to 100000";
    /// topics the history keeps at most; the least recently seen are forgotten first
    history_max_topics: u64 = 10_000, Number("N"), |v| uint(v, 1, 10_000_000),
        help "Topics the history keeps at most (least recently seen forgotten first), 1..=10000000",
        expected "a whole number from 1 to 10000000";
    /// largest size of the database file in bytes (0 = no limit); past it, writes fail as on a
    /// full disk
    db_max_bytes: u64 = 0, Number("BYTES"), |v| v.parse().ok(),
        help "Largest size of the database file in bytes (SQLite max_page_count), 0 = no limit; past it writes fail as on a full disk",
        expected "a whole number of bytes, 0 for no limit";
    /// the control page's admin password; `(stored)`: the one in the database, else one generated
    /// and logged once
    admin_password: Option<String> = None, Secret("PASSWORD"), |v| (!v.is_empty()).then(|| Some(v.to_string())),
        show |p| if p.is_some() { "(set)" } else { "(stored)" }.to_string(),
        help "Control page admin password (else the stored one, else one generated and logged once)",
        expected "a non-empty password";
    /// HTTPS for the page: its PEM certificate chain (with `web_keyfile`; both or neither); the
    /// page is then served over HTTPS only
    web_certfile: Option<PathBuf> = None, Plain("FILE"), parse_file,
        show show_file,
        help "Serve the page over HTTPS only, with this PEM certificate chain (needs --web-keyfile), or none",
        expected FILE_EXPECTED;
    /// the private key of `web_certfile`
    web_keyfile: Option<PathBuf> = None, Plain("FILE"), parse_file,
        show show_file,
        help "PEM private key of --web-certfile, or none",
        expected FILE_EXPECTED;
    /// HTTPS for the page with `certfile` / `keyfile` (instead of `web_certfile` / `web_keyfile`)
    web_tls_from_mqtt: bool = false, Bool("BOOL"), parse_bool,
        help "Serve the page over HTTPS only, with --certfile and --keyfile",
        expected BOOL_EXPECTED;
}

const FILE_EXPECTED: &str = "a file path, or none";

/// A file setting: a path, or `none` for unset (`./none` is a file named so).
fn parse_file(v: &str) -> Option<Option<PathBuf>> {
    if v.is_empty() {
        None
    } else if v.eq_ignore_ascii_case("none") {
        Some(None)
    } else {
        Some(Some(PathBuf::from(v)))
    }
}

fn show_file(p: &Option<PathBuf>) -> String {
    p.as_ref()
        .map_or_else(|| "none".to_string(), |p| p.display().to_string())
}

/// How a setting's flag takes its value on the command line (kept as it was when each flag
/// was a clap derive field, since scripts rely on it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Style {
    /// `--flag VALUE`; a VALUE starting with `-` is taken for another flag.
    Plain,
    /// `--flag VALUE`, VALUE may be a negative number (so our range check reports it).
    Number,
    /// `--flag VALUE`, VALUE may start with `-`.
    Hyphen,
    /// Like `Number`, and the flag may be given again: the values add up (joined with commas,
    /// as the environment gives several).
    Repeat,
    /// `--flag [VALUE]`: alone it means true.
    Bool,
    /// `--flag[=VALUE]`: alone it means true; a value only after `=`.
    BoolEq,
    /// `--flag PATH`: any bytes but empty, used as given (not trimmed); only `--db`, which
    /// [`resolve`] reads as a path.
    Path,
    /// Like `Plain`, but never shown (no `[default]` in `--help`), and not trimmed.
    Secret,
}

/// One setting, made by [`settings!`].
struct Setting {
    /// The field and file key; the flag and environment variable derive from it.
    name: &'static str,
    style: Style,
    value_name: &'static str,
    help: &'static str,
    /// Completes "invalid value 'x' for name: expected …".
    expected: &'static str,
    /// The doc comment's lines: the README's "meaning" cell (read by the README test).
    #[cfg_attr(not(test), allow(dead_code))]
    doc: &'static [&'static str],
    /// Parses a value into the field; false if the value is not allowed.
    parse: fn(&mut Config, &str) -> bool,
    show: fn(&Config) -> String,
}

impl Setting {
    fn flag(&self) -> String {
        format!("--{}", self.name.replace('_', "-"))
    }

    fn env_var(&self) -> String {
        format!("{ENV_PREFIX}{}", self.name.to_ascii_uppercase())
    }

    /// Parses `value` (trimmed, unless secret) into `config`.
    fn apply(&self, config: &mut Config, value: &str, origin: Origin) -> Result<(), ConfigError> {
        let text = if self.style == Style::Secret {
            value
        } else {
            value.trim()
        };
        if (self.parse)(config, text) {
            Ok(())
        } else {
            Err(invalid(self.name, self.expected, value, origin))
        }
    }

    fn arg(&self) -> Arg {
        let mut help = self.help.to_string();
        if self.style != Style::Secret {
            help += &format!(" [default: {}]", (self.show)(&Config::default()));
        }
        help += &format!(" [env: {}]", self.env_var());
        let arg = Arg::new(self.name)
            .long(self.name.replace('_', "-"))
            .value_name(self.value_name)
            .help(help)
            .global(true);
        match self.style {
            Style::Plain | Style::Secret => arg,
            Style::Number => arg.allow_negative_numbers(true),
            Style::Repeat => arg
                .allow_negative_numbers(true)
                .action(clap::ArgAction::Append),
            Style::Hyphen => arg.allow_hyphen_values(true),
            Style::Bool => arg.num_args(0..=1).default_missing_value("true"),
            Style::BoolEq => arg
                .num_args(0..=1)
                .require_equals(true)
                .default_missing_value("true"),
            Style::Path => arg.value_parser(value_parser!(PathBuf)),
        }
    }
}

/// The `sync` setting: how durable an acknowledged QoS 1/2 message is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sync {
    /// Committed (WAL, `synchronous=NORMAL`) before the ack: survives `kill -9`.
    Normal,
    /// Committed and fsynced before the ack: survives power loss.
    Full,
    /// Acked at once, committed within `sync_window`.
    Relaxed,
}

impl fmt::Display for Sync {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Sync::Normal => "normal",
            Sync::Full => "full",
            Sync::Relaxed => "relaxed",
        })
    }
}

impl Config {
    /// Every setting name with its effective value, in a fixed order, for
    /// logs and the control page. Values use the syntax the file, the
    /// environment and the flags accept (durations in seconds, except
    /// `persistent_client_expiration`, shown as `never` or e.g. `2h`, and
    /// `sync_window`, in milliseconds); the admin password is masked.
    pub fn summary(&self) -> Vec<(&'static str, String)> {
        SETTINGS.iter().map(|s| (s.name, (s.show)(self))).collect()
    }
}

/// Where a rejected value came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// A command-line flag, e.g. `--max-clients`.
    Flag(String),
    /// An environment variable, e.g. `MQTT5_BROKER_MAX_CLIENTS`.
    Env(String),
    /// A line of a config file (line numbers start at 1).
    File { path: PathBuf, line: usize },
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::Flag(flag) => write!(f, "from {flag}"),
            Origin::Env(var) => write!(f, "from environment variable {var}"),
            Origin::File { path, line } => write!(f, "in {} line {line}", path.display()),
        }
    }
}

/// Why no [`Config`] could be made. `Display` is one line for a person
/// (except [`ConfigError::Help`], which is the help or version text).
#[derive(Debug)]
pub enum ConfigError {
    /// `--help` or `--version` was asked for; holds the text to print on
    /// stdout before exiting with code 0. Only [`load_from`] returns this
    /// ([`load_command`] prints it and exits).
    Help(String),
    /// The command line itself is wrong (unknown flag, missing flag value…);
    /// clap's first error line, without its `error: ` prefix.
    Usage(String),
    /// A setting's value is not allowed.
    InvalidValue {
        setting: String,
        value: String,
        expected: String,
        origin: Origin,
    },
    /// The config file names a setting that does not exist.
    UnknownSetting {
        path: PathBuf,
        line: usize,
        setting: String,
    },
    /// A config file line is malformed (no value, setting repeated).
    Syntax {
        path: PathBuf,
        line: usize,
        message: String,
    },
    /// The config file could not be read.
    ReadFile {
        path: PathBuf,
        source: std::io::Error,
    },
    /// Settings that are fine alone but not together.
    Conflict(String),
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigError::Help(text) => f.write_str(text.trim_end()),
            ConfigError::Usage(message) => f.write_str(message),
            ConfigError::InvalidValue {
                setting,
                value,
                expected,
                origin,
            } => write!(
                f,
                "invalid value '{}' for {setting}: expected {expected} ({origin})",
                printable(value)
            ),
            ConfigError::UnknownSetting {
                path,
                line,
                setting,
            } => {
                write!(
                    f,
                    "unknown setting '{}' in {} line {line}",
                    printable(setting),
                    path.display()
                )?;
                let normalized = setting.trim().replace('-', "_").to_ascii_lowercase();
                if SETTINGS.iter().any(|s| s.name == normalized) {
                    write!(f, " (did you mean '{normalized}'?)")
                } else {
                    write!(f, " (see --help for the setting names)")
                }
            }
            ConfigError::Syntax {
                path,
                line,
                message,
            } => write!(f, "{message} in {} line {line}", path.display()),
            ConfigError::ReadFile { path, source } => {
                write!(f, "cannot read config file '{}': {source}", path.display())
            }
            ConfigError::Conflict(message) => f.write_str(message),
        }
    }
}

impl std::error::Error for ConfigError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ConfigError::ReadFile { source, .. } => Some(source),
            _ => None,
        }
    }
}

/// Where the command line asked to go. `None` means [`Command::Run`].
///
/// The setting flags are global, so `mqtt5-broker user add NAME --db FILE` works;
/// [`load_command`] builds the `Config` for any subcommand (the admin commands use only its `db`).
#[derive(Subcommand, Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// Run the broker (the default when no subcommand is given)
    Run,
    /// Manage MQTT users; passwords are read from a prompt, or from stdin when it is not a terminal
    User {
        #[command(subcommand)]
        action: UserAction,
    },
    /// Manage topic access rules (like Mosquitto's ACL file; patterns may use +, #, %u, %c)
    Acl {
        #[command(subcommand)]
        action: AclAction,
    },
    /// Refuse a client id or username (CONNACK 0x8A / 0x05)
    Ban {
        /// client_id or username
        kind: BanKind,
        value: String,
    },
    /// Lift a ban
    Unban {
        /// client_id or username
        kind: BanKind,
        value: String,
    },
    /// List the bans
    Bans,
    /// TLS certificates for MQTT over TLS and HTTPS on the page
    Tls {
        #[command(subcommand)]
        action: TlsAction,
    },
    /// Copy the database to FILE, consistently, while the broker runs (SQLite's online backup);
    /// FILE must not exist
    Backup {
        /// The new file
        file: PathBuf,
    },
    /// Carry accounts, access rules and settings over from another broker
    Import {
        #[command(subcommand)]
        from: ImportFrom,
    },
}

/// `mqtt5-broker import ...`
#[derive(Subcommand, Debug, Clone, PartialEq, Eq)]
pub enum ImportFrom {
    /// Read a mosquitto.conf (and the password_file and acl_file it names), or just a password
    /// file and/or an ACL file: accounts and rules go into the database (--db), settings into a
    /// new config file written at --config (printed when --config is not given; an existing
    /// file is never replaced). Prints what was carried over and, line by line, what was not
    Mosquitto {
        /// mosquitto.conf to read (relative paths in it are taken from its directory)
        #[arg(long, value_name = "FILE", required_unless_present_any = ["passwd", "acl"])]
        conf: Option<PathBuf>,
        /// A mosquitto_passwd file (instead of, or overriding, the conf's password_file)
        #[arg(long, value_name = "FILE")]
        passwd: Option<PathBuf>,
        /// A Mosquitto acl_file (instead of, or overriding, the conf's acl_file)
        #[arg(long, value_name = "FILE")]
        acl: Option<PathBuf>,
        /// Read and report everything, change nothing (no database, no config file)
        #[arg(long)]
        dry_run: bool,
        /// Where our config file goes: the global --config (not read by this command)
        #[arg(skip)]
        config_out: Option<PathBuf>,
    },
}

/// Checks one line of our config file (`listener` / `protocol` or a setting) as `apply_file`
/// would, without applying it: `import mosquitto` uses it to report a value this broker would
/// refuse at its line in the Mosquitto file.
pub fn check_file_setting(name: &str, value: &str) -> Result<(), String> {
    match name {
        "listener" => parse_listener(value)
            .map(|_| ())
            .ok_or_else(|| format!("expected {LISTENER_EXPECTED}")),
        "protocol" => match value.to_ascii_lowercase().as_str() {
            "mqtt" | "websockets" => Ok(()),
            _ => Err("expected mqtt or websockets".into()),
        },
        _ => {
            let entry = SETTINGS
                .iter()
                .find(|s| s.name == name)
                .ok_or_else(|| format!("this build has no setting {name}"))?;
            let mut scratch = Config::default();
            entry
                .apply(&mut scratch, value, Origin::Flag(entry.flag()))
                .map_err(|e| e.to_string())
        }
    }
}

/// Parses a config file as the broker would at start (defaults, then the file only): how
/// `import mosquitto` proves the file it writes is one this broker accepts.
pub fn check_file(path: &Path) -> Result<Config, ConfigError> {
    let mut config = Config::default();
    apply_file(&mut config, path)?;
    check_conflicts(&config)?;
    Ok(config)
}

/// `mqtt5-broker tls ...`
#[derive(Subcommand, Debug, Clone, PartialEq, Eq)]
pub enum TlsAction {
    /// Make a local CA and a server certificate for this host's names and addresses: ca.crt,
    /// ca.key, server.crt, server.key (existing files are kept unless --force)
    Init {
        /// Directory for the files [default: tls/ beside the database]
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
        /// Another DNS name for the server certificate (repeatable)
        #[arg(long = "name", value_name = "NAME")]
        names: Vec<String>,
        /// Another IP address for the server certificate (repeatable)
        #[arg(long = "ip", value_name = "IP")]
        ips: Vec<IpAddr>,
        /// Replace existing files (and so the CA: clients then need the new ca.crt)
        #[arg(long)]
        force: bool,
    },
}

/// `mqtt5-broker user ...`
#[derive(Subcommand, Debug, Clone, PartialEq, Eq)]
pub enum UserAction {
    /// Add a user (password from a prompt or stdin)
    Add { name: String },
    /// Delete a user
    Del { name: String },
    /// Change a user's password (from a prompt or stdin)
    Passwd { name: String },
    /// List the users
    List,
}

/// `mqtt5-broker acl ...`
#[derive(Subcommand, Debug, Clone, PartialEq, Eq)]
pub enum AclAction {
    /// Add a rule: ACCESS is read, write or readwrite; without --user it applies to everyone
    Add {
        /// The user the rule is for (default: every client)
        #[arg(long)]
        user: Option<String>,
        /// Deny instead of allow
        #[arg(long)]
        deny: bool,
        access: AclAccess,
        pattern: String,
    },
    /// Delete the rule with this id (see `acl list`)
    Del { id: i64 },
    /// List the rules
    List,
}

const AFTER_HELP: &str = "\
Sources, lowest to highest precedence: defaults < config file (--config or \
MQTT5_BROKER_CONFIG) < environment variables MQTT5_BROKER_<SETTING> (e.g. \
MQTT5_BROKER_MAX_CLIENTS=50) < flags.

Config file: one 'setting value' (or 'setting = value') per line with the \
snake_case setting names (listen 0.0.0.0:1883, allow_anonymous true, \
max_queued_messages 1000); '#' comment lines and blank lines are ignored; \
the listen settings may repeat (one listener each), as may their flags; \
Mosquitto's 'listener PORT [ADDR]' blocks add listeners too. SIGHUP (or the page's \
Reload config) reads the file again and applies what can change live; the \
log names each change and each setting that needs a restart.

Booleans: true/false, yes/no, on/off, 1/0.";

/// The command line: `--config`, one flag per setting (all global, so they also follow a
/// subcommand) and the subcommands.
fn cli() -> clap::Command {
    let config = Arg::new("config")
        .long("config")
        .value_name("FILE")
        .help(format!(
            "Read settings from FILE ('setting value' lines); SIGHUP reads it again [env: {CONFIG_ENV}]"
        ))
        .value_parser(value_parser!(PathBuf))
        .global(true);
    // After the subcommands, which bring [`Command`]'s doc comment as about text.
    Command::augment_subcommands(clap::Command::new("mqtt5-broker"))
        .bin_name("mqtt5-broker")
        .version(crate::version())
        .about("An MQTT 5.0 / 3.1.1 broker for LAN hosts, with SQLite storage and a control page")
        .long_about(None)
        .after_help(AFTER_HELP)
        .arg(config)
        .args(SETTINGS.iter().map(Setting::arg))
}

/// The config file named by `--config`, else by `MQTT5_BROKER_CONFIG`.
fn config_file(matches: &ArgMatches, env: &dyn Fn(&str) -> Option<String>) -> Option<PathBuf> {
    matches
        .get_one::<PathBuf>("config")
        .cloned()
        .or_else(|| env_value(env, CONFIG_ENV).map(PathBuf::from))
}

/// Merges defaults < config file < environment (read through `env`) < the
/// flags in `matches` into a validated [`Config`].
fn resolve(
    matches: &ArgMatches,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Config, ConfigError> {
    let mut config = Config::default();

    if let Some(path) = config_file(matches, env) {
        apply_file(&mut config, &path)?;
    }

    for setting in SETTINGS {
        let var = setting.env_var();
        if let Some(value) = env_value(env, &var) {
            setting.apply(&mut config, &value, Origin::Env(var))?;
        }
    }

    // A path flag is taken as the bytes given (clap already refused an empty one).
    if let Some(db) = matches.get_one::<PathBuf>("db") {
        config.db = db.clone();
    }
    for setting in SETTINGS.iter().filter(|s| s.style != Style::Path) {
        let Some(values) = matches.get_many::<String>(setting.name) else {
            continue;
        };
        // Each value checked alone first, so that an error quotes the one at fault.
        let values: Vec<&String> = values.collect();
        for value in &values {
            setting.apply(&mut config, value, Origin::Flag(setting.flag()))?;
        }
        if values.len() > 1 {
            let joined = values
                .iter()
                .map(|v| v.as_str())
                .collect::<Vec<_>>()
                .join(",");
            setting.apply(&mut config, &joined, Origin::Flag(setting.flag()))?;
        }
    }

    check_conflicts(&config)?;
    Ok(config)
}

/// The subcommand (`Command::Run` when none was given) and the [`Config`] from
/// `args` (program name first) and the environment read through `env`. Never
/// prints or exits: `--help` and `--version` give [`ConfigError::Help`], a bad
/// command line [`ConfigError::Usage`].
fn parse<I, T>(
    args: I,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<(Command, Config), ConfigError>
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let matches = cli().try_get_matches_from(args).map_err(clap_error)?;
    let mut command = match matches.subcommand_name() {
        Some(_) => Command::from_arg_matches(&matches).map_err(clap_error)?,
        None => Command::Run,
    };
    if let Command::Import {
        from: ImportFrom::Mosquitto { config_out, .. },
    } = &mut command
    {
        // For `import` the config file is the output: it is written, not read. Only the
        // database path matters.
        *config_out = config_file(&matches, env);
        let mut config = Config::default();
        if let Some(db) = matches.get_one::<PathBuf>("db") {
            config.db = db.clone();
        } else if let Some(db) = env_value(env, "MQTT5_BROKER_DB") {
            config.db = PathBuf::from(db);
        }
        return Ok((command, config));
    }
    Ok((command, resolve(&matches, env)?))
}

/// The [`Config`] from `args` (program name first) and the environment
/// supplied by the caller; never prints or exits (see [`ConfigError::Help`]).
pub fn load_from<I, T>(args: I, env: &dyn Fn(&str) -> Option<String>) -> Result<Config, ConfigError>
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    parse(args, env).map(|(_, config)| config)
}

/// Reads the real command line, environment and config file: the subcommand
/// (`Command::Run` when none was given) and the [`Config`]. `--help` and
/// `--version` print on stdout and exit with code 0 here; every problem,
/// including a malformed command line ([`ConfigError::Usage`]), is returned
/// for `main` to print as one line and exit 2. Unknown `MQTT5_BROKER_*`
/// environment variables are logged as warnings (visible if logging is set
/// up first).
pub fn load_command() -> Result<(Command, Config), ConfigError> {
    warn_unknown_env_vars();
    let env = |name: &str| std::env::var_os(name).map(|v| v.to_string_lossy().into_owned());
    match parse(std::env::args_os(), &env) {
        Err(ConfigError::Help(text)) => {
            print!("{text}");
            std::process::exit(0);
        }
        other => other,
    }
}

/// A config reload's reading: the config file the broker was started with (`--config`, else
/// `MQTT5_BROKER_CONFIG`; `None` without one) and the settings from the same command line,
/// environment and that file read again now, merged as at start (flags and environment still
/// win over the file).
pub fn reread() -> (Option<PathBuf>, Result<Config, ConfigError>) {
    let env = |name: &str| std::env::var_os(name).map(|v| v.to_string_lossy().into_owned());
    let matches = match cli().try_get_matches_from(std::env::args_os()) {
        Ok(m) => m,
        Err(e) => return (None, Err(clap_error(e))),
    };
    (config_file(&matches, &env), resolve(&matches, &env))
}

/// Every setting whose value differs between `old` and `new`, in declaration order, with both
/// values as [`Config::summary`] shows them (the admin password masked), then `bridges` when
/// the bridge blocks differ.
pub fn differences(old: &Config, new: &Config) -> Vec<(&'static str, String, String)> {
    let mut out: Vec<_> = SETTINGS
        .iter()
        .filter_map(|s| {
            let (was, now) = ((s.show)(old), (s.show)(new));
            let secret_changed =
                s.style == Style::Secret && old.admin_password != new.admin_password;
            (was != now || secret_changed).then_some((s.name, was, now))
        })
        .collect();
    if old.bridges != new.bridges {
        let names = |c: &Config| {
            let names: Vec<&str> = c.bridges.iter().map(|b| b.name.as_str()).collect();
            if names.is_empty() {
                "none".to_string()
            } else {
                names.join(", ")
            }
        };
        out.push(("bridges", names(old), names(new)));
    }
    out
}

/// Converts clap's error into ours: help/version text as is, anything else
/// as clap's first line plus its tip, on one line.
fn clap_error(error: clap::Error) -> ConfigError {
    use clap::error::ErrorKind;
    let text = error.to_string();
    match error.kind() {
        ErrorKind::DisplayHelp
        | ErrorKind::DisplayVersion
        | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => ConfigError::Help(text),
        _ => {
            let mut lines = text.lines().map(str::trim).filter(|l| !l.is_empty());
            let first = lines.next().unwrap_or("invalid command line");
            let mut message = first.strip_prefix("error: ").unwrap_or(first).to_string();
            if let Some(tip) = lines.find_map(|l| l.strip_prefix("tip: ")) {
                message.push_str(&format!(" ({tip})"));
            }
            message.push_str("; see --help");
            ConfigError::Usage(message)
        }
    }
}

fn warn_unknown_env_vars() {
    for (key, _) in std::env::vars_os() {
        let key = key.to_string_lossy();
        if let Some(rest) = key.strip_prefix(ENV_PREFIX) {
            let known =
                key == CONFIG_ENV || SETTINGS.iter().any(|s| s.name.eq_ignore_ascii_case(rest));
            if !known {
                log::warn!("ignoring unknown environment variable {key}");
            }
        }
    }
}

/// An environment value, with empty (or blank) counting as unset.
fn env_value(env: &dyn Fn(&str) -> Option<String>, name: &str) -> Option<String> {
    env(name).filter(|value| !value.trim().is_empty())
}

/// The error for a rejected value of `setting`.
fn invalid(setting: &str, expected: &str, value: &str, origin: Origin) -> ConfigError {
    ConfigError::InvalidValue {
        setting: setting.to_string(),
        value: value.to_string(),
        expected: expected.to_string(),
        origin,
    }
}

/// Digits only (no sign), within `min..=max`, as the field's type.
fn uint<T: TryFrom<u64>>(v: &str, min: u64, max: u64) -> Option<T> {
    if !v.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n = v.parse::<u64>().ok().filter(|n| (min..=max).contains(n))?;
    T::try_from(n).ok()
}

fn parse_bool(v: &str) -> Option<bool> {
    match v.to_ascii_lowercase().as_str() {
        "true" | "yes" | "on" | "1" => Some(true),
        "false" | "no" | "off" | "0" => Some(false),
        _ => None,
    }
}

/// `ADDR:PORT` with a numeric IP (IPv6 in brackets), or a bare port meaning
/// all IPv4 interfaces.
fn parse_addr(v: &str) -> Option<SocketAddr> {
    if let Ok(addr) = v.parse::<SocketAddr>() {
        return Some(addr);
    }
    let port: u16 = uint(v, 0, 65535)?;
    Some(SocketAddr::new(ANY_IPV4, port))
}

/// Addresses separated by commas (each as [`parse_addr`]), or `off` / `none` for none.
fn parse_addrs(v: &str) -> Option<Vec<SocketAddr>> {
    if v.eq_ignore_ascii_case("off") || v.eq_ignore_ascii_case("none") {
        return Some(Vec::new());
    }
    v.split(',').map(|a| parse_addr(a.trim())).collect()
}

/// [`parse_addrs`] without `off`: the broker always has a plain listener.
fn parse_listen(v: &str) -> Option<Vec<SocketAddr>> {
    parse_addrs(v).filter(|a| !a.is_empty())
}

/// Addresses as [`parse_addrs`] reads them back: comma-separated, or `off`.
fn show_addrs(addrs: &[SocketAddr]) -> String {
    if addrs.is_empty() {
        return "off".to_string();
    }
    addrs
        .iter()
        .map(|a| a.to_string())
        .collect::<Vec<_>>()
        .join(",")
}

/// Mosquitto's `listener PORT [ADDR]` arguments.
fn parse_listener(v: &str) -> Option<SocketAddr> {
    let mut parts = v.split_whitespace();
    let port: u16 = uint(parts.next()?, 0, 65535)?;
    let ip = match parts.next() {
        None => ANY_IPV4,
        Some(addr) => {
            let bare = addr
                .strip_prefix('[')
                .and_then(|a| a.strip_suffix(']'))
                .unwrap_or(addr);
            bare.parse().ok()?
        }
    };
    if parts.next().is_some() {
        return None;
    }
    Some(SocketAddr::new(ip, port))
}

/// `never`/`none`, plain seconds, or `<n>` followed by one of s, h, d, w,
/// m (30 days), y (365 days) as in Mosquitto.
fn parse_expiration(v: &str) -> Option<Option<Duration>> {
    if v.eq_ignore_ascii_case("never") || v.eq_ignore_ascii_case("none") {
        return Some(None);
    }
    let (number, unit) = match v.char_indices().last()? {
        (i, c) if c.is_ascii_alphabetic() => (&v[..i], c.to_ascii_lowercase()),
        _ => (v, 's'),
    };
    let multiplier: u64 = match unit {
        's' => 1,
        'h' => 3600,
        'd' => 86_400,
        'w' => 7 * 86_400,
        'm' => 30 * 86_400,
        'y' => 365 * 86_400,
        _ => return None,
    };
    let seconds = uint::<u64>(number, 1, u64::MAX)?.checked_mul(multiplier)?;
    (seconds <= MAX_EXPIRATION_SECS).then(|| Some(Duration::from_secs(seconds)))
}

/// The shortest exact spelling of an expiration: `2w`, `3d`, `5h` or `90s`.
fn format_expiration(d: Duration) -> String {
    let secs = d.as_secs();
    for (unit, size) in [('w', 7 * 86_400), ('d', 86_400), ('h', 3600)] {
        if secs > 0 && secs.is_multiple_of(size) {
            return format!("{}{unit}", secs / size);
        }
    }
    format!("{secs}s")
}

/// A value as shown in an error: control characters escaped, long values cut.
fn printable(value: &str) -> String {
    const LIMIT: usize = 100;
    let mut out: String = value
        .chars()
        .take(LIMIT)
        .flat_map(|c| {
            let escaped: Vec<char> = if c.is_control() {
                c.escape_default().collect()
            } else {
                vec![c]
            };
            escaped
        })
        .collect();
    if value.chars().count() > LIMIT {
        out.push_str("...");
    }
    out
}

/// Settings that Mosquitto's config file gives per listener: after a `listener` line they
/// belong to that listener's block. Here they are shared by every TLS listener, so a file may
/// repeat one in several blocks only with the same value.
const LISTENER_KEYS: [&str; 5] = [
    "certfile",
    "keyfile",
    "cafile",
    "require_certificate",
    "use_identity_as_username",
];

/// A Mosquitto `listener PORT [ADDR]` block being read: which of our listen settings it sets
/// is known only at its end (`protocol websockets`, a `certfile` in the block).
struct ListenerBlock {
    line: usize,
    addr: SocketAddr,
    websockets: bool,
    protocol_line: Option<usize>,
    tls: bool,
}

impl ListenerBlock {
    /// `listen`, `tls_listen`, `ws_listen` or `wss_listen`.
    fn setting(&self) -> &'static str {
        match (self.websockets, self.tls) {
            (false, false) => "listen",
            (false, true) => "tls_listen",
            (true, false) => "ws_listen",
            (true, true) => "wss_listen",
        }
    }
}

/// Reads the config file at `path` and applies its settings to `config`.
///
/// Mosquitto's listener blocks are understood: `listener PORT [ADDR]`, then `protocol
/// mqtt|websockets` and the TLS keys of [`LISTENER_KEYS`] for that listener. A block with a
/// `certfile` is a TLS listener; the block adds its address to `listen`, `tls_listen`,
/// `ws_listen` or `wss_listen`, as a repeated `tls_listen ADDR` line does.
fn apply_file(config: &mut Config, path: &Path) -> Result<(), ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::ReadFile {
        path: path.to_path_buf(),
        source,
    })?;
    let text = text.strip_prefix('\u{feff}').unwrap_or(&text);
    // Line and value where each setting was first seen (a listener block counts as the
    // setting it sets).
    let mut seen: Vec<(&str, usize, String)> = Vec::new();
    // The values so far of each repeatable setting (the listen addresses).
    let mut lists: Lists = Vec::new();
    let mut block: Option<ListenerBlock> = None;
    let mut bridge: Option<BridgeBlock> = None;

    for (index, raw) in text.lines().enumerate() {
        let line_no = index + 1;
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let end = line
            .find(|c: char| c.is_whitespace() || c == '=')
            .unwrap_or(line.len());
        let (name, rest) = line.split_at(end);
        let rest = rest.trim_start();
        let value = rest.strip_prefix('=').unwrap_or(rest).trim();
        let syntax = |message: String| ConfigError::Syntax {
            path: path.to_path_buf(),
            line: line_no,
            message,
        };
        let origin = Origin::File {
            path: path.to_path_buf(),
            line: line_no,
        };
        if value.is_empty() {
            return Err(syntax(format!("setting '{name}' has no value")));
        }

        match name {
            "listener" => {
                if let Some(done) = block.take() {
                    end_listener_block(config, path, done, &mut lists)?;
                }
                let addr = parse_listener(value)
                    .ok_or_else(|| invalid("listener", LISTENER_EXPECTED, value, origin))?;
                block = Some(ListenerBlock {
                    line: line_no,
                    addr,
                    websockets: false,
                    protocol_line: None,
                    tls: false,
                });
                continue;
            }
            "protocol" => {
                let Some(b) = block.as_mut() else {
                    return Err(syntax(
                        "'protocol' belongs to a listener: put it after a 'listener PORT' line"
                            .to_string(),
                    ));
                };
                if let Some(first) = b.protocol_line {
                    return Err(syntax(format!(
                        "setting 'protocol' repeats 'protocol' from line {first}"
                    )));
                }
                b.websockets = match value.to_ascii_lowercase().as_str() {
                    "mqtt" => false,
                    "websockets" => true,
                    _ => return Err(invalid("protocol", "mqtt or websockets", value, origin)),
                };
                b.protocol_line = Some(line_no);
                continue;
            }
            "config" => {
                return Err(syntax(
                    "'config' cannot be set inside a config file".to_string(),
                ))
            }
            "connection" => {
                if let Some(done) = bridge.take() {
                    end_bridge_block(config, path, done)?;
                }
                bridge = Some(BridgeBlock::new(value, line_no).map_err(syntax)?);
                continue;
            }
            _ => {}
        }
        if let Some(key) = bridge::config::KEYS.iter().find(|k| **k == name) {
            let Some(b) = bridge.as_mut() else {
                return Err(syntax(format!(
                    "'{name}' belongs to a bridge: put it after a 'connection NAME' line"
                )));
            };
            b.apply(key, value, line_no).map_err(syntax)?;
            continue;
        }
        if bridge::config::UNSUPPORTED_KEYS.contains(&name) {
            return Err(syntax(format!(
                "bridge setting '{name}' is not supported by this build (see README, Bridges)"
            )));
        }
        let Some(entry) = SETTINGS.iter().find(|s| s.name == name) else {
            return Err(ConfigError::UnknownSetting {
                path: path.to_path_buf(),
                line: line_no,
                setting: name.to_string(),
            });
        };
        if entry.style == Style::Repeat {
            add_to_list(config, &mut lists, entry, value, origin)?;
            continue;
        }
        let in_block = LISTENER_KEYS.contains(&entry.name);
        if let (true, Some(b)) = (in_block, block.as_mut()) {
            b.tls |= entry.name == "certfile";
        }
        if let Some((_, first, before)) = seen.iter().find(|(s, _, _)| *s == entry.name) {
            if in_block && before == value {
                continue;
            }
            let why = if in_block {
                " (every TLS listener shares one certificate and client policy: give the same \
                 value in each listener block)"
            } else {
                ""
            };
            return Err(syntax(format!(
                "setting '{name}' repeats '{}' from line {first}{why}",
                entry.name
            )));
        }
        seen.push((entry.name, line_no, value.to_string()));
        entry.apply(config, value, origin)?;
    }
    if let Some(done) = block.take() {
        end_listener_block(config, path, done, &mut lists)?;
    }
    if let Some(done) = bridge.take() {
        end_bridge_block(config, path, done)?;
    }
    Ok(())
}

/// Checks a finished `connection` block and adds its bridge (names are unique).
fn end_bridge_block(
    config: &mut Config,
    path: &Path,
    block: BridgeBlock,
) -> Result<(), ConfigError> {
    let syntax = |line: usize, message: String| ConfigError::Syntax {
        path: path.to_path_buf(),
        line,
        message,
    };
    if let Some(first) = config.bridges.iter().find(|b| b.name == block.name()) {
        let name = block.name().to_string();
        let line = block.finish().map(|b| b.line).unwrap_or_else(|(l, _)| l);
        return Err(syntax(
            line,
            format!(
                "bridge '{name}' repeats the connection from line {}",
                first.line
            ),
        ));
    }
    let bridge = block
        .finish()
        .map_err(|(line, message)| syntax(line, message))?;
    config.bridges.push(bridge);
    Ok(())
}

/// The file's values so far of each repeatable setting.
type Lists = Vec<(&'static str, Vec<String>)>;

/// Adds `value`, read from the file, to the repeatable setting `entry`: checked alone (so an
/// error quotes it, at its line), then the file's values so far become the setting's value
/// (replacing the default). `off` empties the list.
fn add_to_list(
    config: &mut Config,
    lists: &mut Lists,
    entry: &Setting,
    value: &str,
    origin: Origin,
) -> Result<(), ConfigError> {
    entry.apply(config, value, origin.clone())?;
    let index = match lists.iter().position(|(name, _)| *name == entry.name) {
        Some(i) => i,
        None => {
            lists.push((entry.name, Vec::new()));
            lists.len() - 1
        }
    };
    let list = &mut lists[index].1;
    if parse_addrs(value.trim()).is_some_and(|a| a.is_empty()) {
        list.clear();
        return Ok(());
    }
    list.push(value.trim().to_string());
    entry.apply(config, &list.join(","), origin)
}

/// Adds a finished listener block's address to the setting it stands for.
fn end_listener_block(
    config: &mut Config,
    path: &Path,
    block: ListenerBlock,
    lists: &mut Lists,
) -> Result<(), ConfigError> {
    let setting = block.setting();
    let Some(entry) = SETTINGS.iter().find(|s| s.name == setting) else {
        return Err(ConfigError::Syntax {
            path: path.to_path_buf(),
            line: block.line,
            message: format!("this listener needs '{setting}', which this build does not have"),
        });
    };
    let origin = Origin::File {
        path: path.to_path_buf(),
        line: block.line,
    };
    add_to_list(config, lists, entry, &block.addr.to_string(), origin)
}

/// Rejects settings that cannot work together.
fn check_conflicts(config: &Config) -> Result<(), ConfigError> {
    if config.web_certfile.is_some() != config.web_keyfile.is_some() {
        return Err(ConfigError::Conflict(
            "web_certfile and web_keyfile go together: give both (HTTPS for the page) or neither"
                .to_string(),
        ));
    }
    if config.web_tls_from_mqtt {
        if config.web_certfile.is_some() {
            return Err(ConfigError::Conflict(
                "web_tls_from_mqtt and web_certfile / web_keyfile both choose the page's \
                 certificate: give one or the other"
                    .to_string(),
            ));
        }
        if config.certfile.is_none() || config.keyfile.is_none() {
            return Err(ConfigError::Conflict(
                "web_tls_from_mqtt needs certfile and keyfile (the MQTT TLS certificate and key)"
                    .to_string(),
            ));
        }
    }
    // Every listener, MQTT and the page: two on one port and overlapping addresses cannot both
    // bind (port 0 picks a free port each time, so it never clashes).
    let mut listeners: Vec<(&str, SocketAddr)> = Vec::new();
    listeners.extend(config.listen.iter().map(|a| ("listen", *a)));
    listeners.push(("web_listen", config.web_listen));
    listeners.extend(config.tls_listen.iter().map(|a| ("tls_listen", *a)));
    listeners.extend(config.ws_listen.iter().map(|a| ("ws_listen", *a)));
    listeners.extend(config.wss_listen.iter().map(|a| ("wss_listen", *a)));
    for (i, (name, addr)) in listeners.iter().enumerate() {
        for (other_name, other) in &listeners[i + 1..] {
            let overlapping = addr.ip() == other.ip()
                || addr.ip().is_unspecified()
                || other.ip().is_unspecified();
            if addr.port() == 0 || addr.port() != other.port() || !overlapping {
                continue;
            }
            return Err(ConfigError::Conflict(if name == other_name {
                format!(
                    "{name} has {addr} and {other}, which use the same port: give each listener \
                     its own address"
                )
            } else {
                format!(
                    "{name} ({addr}) and {other_name} ({other}) use the same port: give them \
                     different ports"
                )
            }));
        }
    }
    for (name, addrs) in [
        ("tls_listen", &config.tls_listen),
        ("wss_listen", &config.wss_listen),
    ] {
        if let (Some(addr), true) = (
            addrs.first(),
            config.certfile.is_none() || config.keyfile.is_none(),
        ) {
            return Err(ConfigError::Conflict(format!(
                "{name} ({addr}) needs both certfile and keyfile (PEM files)"
            )));
        }
    }
    if config.cafile.is_none() {
        for (name, on) in [
            ("require_certificate", config.require_certificate),
            ("use_identity_as_username", config.use_identity_as_username),
        ] {
            if on {
                return Err(ConfigError::Conflict(format!(
                    "{name} needs cafile (the CA certificates client certificates are checked against)"
                )));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A config file in the temp directory, removed on drop.
    struct TempFile(PathBuf);

    impl TempFile {
        fn new(contents: &str) -> TempFile {
            static COUNTER: AtomicUsize = AtomicUsize::new(0);
            let path = std::env::temp_dir().join(format!(
                "mqtt5-broker-config-test-{}-{}.conf",
                std::process::id(),
                COUNTER.fetch_add(1, Ordering::Relaxed)
            ));
            std::fs::write(&path, contents).unwrap();
            TempFile(path)
        }

        fn arg(&self) -> String {
            self.0.to_str().unwrap().to_string()
        }
    }

    impl Drop for TempFile {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }

    fn addrs(list: &[&str]) -> Vec<SocketAddr> {
        list.iter().map(|a| a.parse().unwrap()).collect()
    }

    fn no_env(_: &str) -> Option<String> {
        None
    }

    fn env_of(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |name| map.get(name).cloned()
    }

    fn args(extra: &[&str]) -> Vec<String> {
        std::iter::once("mqtt5-broker")
            .chain(extra.iter().copied())
            .map(String::from)
            .collect()
    }

    /// The flag of a setting, by the rule the module doc gives (not through [`Setting::flag`]).
    fn flag_name(setting: &str) -> String {
        format!("--{}", setting.replace('_', "-"))
    }

    fn env_var_name(setting: &str) -> String {
        format!("MQTT5_BROKER_{}", setting.to_ascii_uppercase())
    }

    fn from_flags(extra: &[&str]) -> Result<Config, ConfigError> {
        load_from(args(extra), &no_env)
    }

    fn from_env(pairs: &[(&str, &str)]) -> Result<Config, ConfigError> {
        load_from(args(&[]), &env_of(pairs))
    }

    fn from_file(contents: &str) -> Result<Config, ConfigError> {
        let file = TempFile::new(contents);
        load_from(args(&["--config", &file.arg()]), &no_env)
    }

    /// A non-default value for every setting, and the Config it gives.
    fn sample() -> (Vec<(&'static str, &'static str)>, Config) {
        let values = vec![
            ("listen", "127.0.0.1:11883"),
            ("web_listen", "[::1]:18082"),
            ("tls_listen", "127.0.0.1:18883"),
            ("ws_listen", "127.0.0.1:18080"),
            ("wss_listen", "127.0.0.1:18081"),
            ("certfile", "/etc/mqtt5/server.pem"),
            ("keyfile", "/etc/mqtt5/server.key"),
            ("cafile", "/etc/mqtt5/ca.pem"),
            ("require_certificate", "true"),
            ("use_identity_as_username", "true"),
            ("db", "/var/lib/mqtt5/broker.db"),
            ("max_clients", "500"),
            ("allow_anonymous", "true"),
            ("read_chunk_size", "4096"),
            ("connect_timeout", "30"),
            ("max_pending_connections", "400"),
            ("max_pending_per_address", "4"),
            ("max_keepalive", "120"),
            ("max_packet_size", "65536"),
            ("max_inflight_messages", "100"),
            ("receive_maximum", "300"),
            ("max_queued_messages", "0"),
            ("max_queued_bytes", "1024"),
            ("queue_qos0_messages", "true"),
            ("max_topic_alias", "0"),
            ("outbound_topic_aliases", "false"),
            ("retain_available", "false"),
            ("persistent_client_expiration", "2d"),
            ("sys_interval", "0"),
            ("max_topic_levels", "16"),
            ("max_client_id_len", "64"),
            ("max_subscriptions", "50"),
            ("max_filters_per_subscribe", "8"),
            ("max_topic_len", "200"),
            ("max_user_properties", "5"),
            ("connect_rate_limit", "0"),
            ("sync", "relaxed"),
            ("sync_window", "250"),
            ("history_per_topic", "0"),
            ("history_max_topics", "2500"),
            ("db_max_bytes", "0"),
            ("admin_password", "s3cret"),
            ("web_certfile", "/etc/mqtt5/web.crt"),
            ("web_keyfile", "/etc/mqtt5/web key.pem"),
            // Not true: it conflicts with web_certfile (tested on its own).
            ("web_tls_from_mqtt", "false"),
        ];
        let config = Config {
            listen: addrs(&["127.0.0.1:11883"]),
            web_listen: "[::1]:18082".parse().unwrap(),
            tls_listen: addrs(&["127.0.0.1:18883"]),
            ws_listen: addrs(&["127.0.0.1:18080"]),
            wss_listen: addrs(&["127.0.0.1:18081"]),
            certfile: Some(PathBuf::from("/etc/mqtt5/server.pem")),
            keyfile: Some(PathBuf::from("/etc/mqtt5/server.key")),
            cafile: Some(PathBuf::from("/etc/mqtt5/ca.pem")),
            require_certificate: true,
            use_identity_as_username: true,
            db: PathBuf::from("/var/lib/mqtt5/broker.db"),
            max_clients: 500,
            allow_anonymous: true,
            read_chunk_size: 4096,
            connect_timeout: Duration::from_secs(30),
            max_pending_connections: 400,
            max_pending_per_address: 4,
            max_keepalive: 120,
            max_packet_size: 65536,
            max_inflight_messages: 100,
            receive_maximum: 300,
            max_queued_messages: 0,
            max_queued_bytes: 1024,
            queue_qos0_messages: true,
            max_topic_alias: 0,
            outbound_topic_aliases: false,
            retain_available: false,
            persistent_client_expiration: Some(Duration::from_secs(2 * 86_400)),
            sys_interval: Duration::ZERO,
            max_topic_levels: 16,
            max_client_id_len: 64,
            max_subscriptions: 50,
            max_filters_per_subscribe: 8,
            max_topic_len: 200,
            max_user_properties: 5,
            connect_rate_limit: 0,
            sync: Sync::Relaxed,
            sync_window: Duration::from_millis(250),
            history_per_topic: 0,
            history_max_topics: 2500,
            db_max_bytes: 0,
            admin_password: Some("s3cret".to_string()),
            web_certfile: Some(PathBuf::from("/etc/mqtt5/web.crt")),
            web_keyfile: Some(PathBuf::from("/etc/mqtt5/web key.pem")),
            web_tls_from_mqtt: false,
            bridges: Vec::new(),
        };
        (values, config)
    }

    fn flag_args(values: &[(&str, &str)]) -> Vec<String> {
        values
            .iter()
            .flat_map(|(name, value)| {
                if *name == "allow_anonymous" {
                    vec![format!("{}={value}", flag_name(name))]
                } else {
                    vec![flag_name(name), value.to_string()]
                }
            })
            .collect()
    }

    fn message(result: Result<Config, ConfigError>) -> String {
        result.expect_err("expected an error").to_string()
    }

    #[test]
    fn clap_definition_is_valid() {
        cli().debug_assert();
    }

    #[test]
    fn defaults() {
        let c = Config::default();
        assert_eq!(c.listen, addrs(&["0.0.0.0:1883"]));
        assert_eq!(c.web_listen, "0.0.0.0:8082".parse().unwrap());
        assert_eq!(c.db, PathBuf::from("mqtt5-broker.db"));
        assert_eq!(c.max_clients, 20);
        assert!(!c.allow_anonymous);
        assert_eq!(c.read_chunk_size, 512);
        assert_eq!(c.connect_timeout, Duration::from_secs(10));
        assert_eq!(c.max_keepalive, 65535);
        assert_eq!(c.max_packet_size, 1_048_576);
        assert_eq!(c.max_inflight_messages, 20);
        assert_eq!(c.receive_maximum, 65535);
        assert_eq!(c.max_queued_messages, 1000);
        assert_eq!(c.max_queued_bytes, 8_388_608);
        assert!(!c.queue_qos0_messages);
        assert_eq!(c.max_topic_alias, 10);
        assert!(c.outbound_topic_aliases);
        assert!(c.retain_available);
        assert_eq!(c.persistent_client_expiration, None);
        assert_eq!(c.sys_interval, Duration::from_secs(10));
        assert_eq!(c.max_topic_levels, 128);
        assert_eq!(c.max_client_id_len, 256);
        assert_eq!(from_flags(&[]).unwrap(), c);
    }

    #[test]
    fn every_setting_from_flags() {
        let (values, expected) = sample();
        let extra = flag_args(&values);
        let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
        assert_eq!(from_flags(&extra).unwrap(), expected);
    }

    #[test]
    fn every_setting_from_env() {
        let (values, expected) = sample();
        let vars: Vec<(String, &str)> = values
            .iter()
            .map(|(name, value)| (env_var_name(name), *value))
            .collect();
        let vars: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (k.as_str(), *v)).collect();
        assert_eq!(from_env(&vars).unwrap(), expected);
    }

    #[test]
    fn every_setting_from_file() {
        let (values, expected) = sample();
        let mut text = String::from("# sample\n\n");
        for (i, (name, value)) in values.iter().enumerate() {
            // Alternate the two accepted forms.
            if i % 2 == 0 {
                text.push_str(&format!("{name} {value}\n"));
            } else {
                text.push_str(&format!("  {name} = {value}\r\n"));
            }
        }
        assert_eq!(from_file(&text).unwrap(), expected);
    }

    #[test]
    fn precedence_default_file_env_flag() {
        let file = TempFile::new("max_clients 30\nmax_topic_alias 5\nlisten 127.0.0.1:1000\n");
        let env = env_of(&[
            ("MQTT5_BROKER_MAX_CLIENTS", "40"),
            ("MQTT5_BROKER_MAX_TOPIC_ALIAS", "6"),
        ]);
        let c = load_from(args(&["--config", &file.arg()]), &env).unwrap();
        assert_eq!(c.listen, addrs(&["127.0.0.1:1000"])); // file over default
        assert_eq!(c.max_clients, 40); // env over file
        assert_eq!(c.max_topic_alias, 6);
        assert_eq!(c.max_inflight_messages, 20); // default untouched

        let c = load_from(
            args(&["--config", &file.arg(), "--max-clients", "50"]),
            &env,
        )
        .unwrap();
        assert_eq!(c.max_clients, 50); // flag over env
        assert_eq!(c.max_topic_alias, 6);
    }

    #[test]
    fn config_file_from_env_and_flag_wins() {
        let a = TempFile::new("max_clients 31\n");
        let b = TempFile::new("max_clients 32\n");
        let env = env_of(&[("MQTT5_BROKER_CONFIG", &a.arg())]);
        assert_eq!(load_from(args(&[]), &env).unwrap().max_clients, 31);
        let c = load_from(args(&["--config", &b.arg()]), &env).unwrap();
        assert_eq!(c.max_clients, 32);
    }

    #[test]
    fn empty_env_counts_as_unset() {
        let c = from_env(&[
            ("MQTT5_BROKER_MAX_CLIENTS", ""),
            ("MQTT5_BROKER_CONFIG", " "),
        ])
        .unwrap();
        assert_eq!(c, Config::default());
    }

    #[test]
    fn overridden_bad_value_is_still_an_error() {
        let e = load_from(
            args(&["--max-clients", "5"]),
            &env_of(&[("MQTT5_BROKER_MAX_CLIENTS", "lots")]),
        );
        assert!(message(e).contains("MQTT5_BROKER_MAX_CLIENTS"));
    }

    #[test]
    fn bad_values_name_setting_value_and_source() {
        let cases: &[(&str, &[&str])] = &[
            (
                "listen",
                &["abc", "localhost:1883", "1.2.3.4", "1.2.3.4:70000", "-1"],
            ),
            ("web_listen", &["abc", "::1:80"]),
            ("max_clients", &["abc", "0", "100001", "-1", "1.5", "+3"]),
            ("allow_anonymous", &["maybe", "2"]),
            ("read_chunk_size", &["abc", "15", "1048577"]),
            ("connect_timeout", &["abc", "0", "3601", "10s"]),
            ("max_keepalive", &["abc", "65536", "-1"]),
            ("max_packet_size", &["abc", "19", "268435456"]),
            ("max_inflight_messages", &["abc", "0", "65536"]),
            ("receive_maximum", &["abc", "0", "65536", "-1"]),
            (
                "max_queued_messages",
                &["abc", "-1", "99999999999999999999999"],
            ),
            ("max_queued_bytes", &["abc", "-1", "8MiB"]),
            ("queue_qos0_messages", &["nope"]),
            ("max_topic_alias", &["abc", "65536"]),
            ("outbound_topic_aliases", &["nope"]),
            ("retain_available", &["nope"]),
            (
                "persistent_client_expiration",
                &[
                    "abc",
                    "0",
                    "0h",
                    "5x",
                    "h",
                    "1.5h",
                    "-1d",
                    "200y",
                    "99999999999999999999w",
                ],
            ),
            ("sys_interval", &["abc", "-1", "86401"]),
            ("max_topic_levels", &["abc", "0", "65536"]),
            ("max_client_id_len", &["abc", "22", "65536"]),
            ("web_tls_from_mqtt", &["nope"]),
        ];
        for (name, bad_values) in cases {
            for bad in *bad_values {
                let var = env_var_name(name);
                let flag = if name.contains("anonymous") {
                    vec![format!("{}={bad}", flag_name(name))]
                } else {
                    vec![flag_name(name), bad.to_string()]
                };
                let flag: Vec<&str> = flag.iter().map(String::as_str).collect();
                let results = [
                    (from_flags(&flag), flag_name(name)),
                    (from_env(&[(&var, bad)]), var.clone()),
                    (
                        from_file(&format!("\n{name} {bad}\n")),
                        "line 2".to_string(),
                    ),
                ];
                for (result, source) in results {
                    let e = result.expect_err(&format!("{name}={bad} accepted"));
                    assert!(matches!(e, ConfigError::InvalidValue { .. }), "{e:?}");
                    let text = e.to_string();
                    let want = format!("invalid value '{bad}' for {name}: expected ");
                    assert!(text.starts_with(&want), "{text}");
                    assert!(text.contains(&source), "{text}");
                    assert!(!text.contains('\n'), "{text}");
                }
            }
        }
    }

    #[test]
    fn empty_values_are_rejected() {
        assert!(matches!(
            from_flags(&["--db", ""]),
            Err(ConfigError::Usage(_))
        ));
        assert!(message(from_flags(&["--listen", ""])).contains("for listen"));
        let text = message(from_file("max_clients\n"));
        assert!(
            text.contains("'max_clients' has no value") && text.contains("line 1"),
            "{text}"
        );
        assert!(message(from_file("max_clients =\n")).contains("no value"));
    }

    #[test]
    fn example_error_message() {
        let text = message(from_flags(&["--max-clients", "abc"]));
        assert_eq!(
            text,
            "invalid value 'abc' for max_clients: expected a whole number from 1 to 100000 (from --max-clients)"
        );
    }

    #[test]
    fn unknown_file_setting_names_file_and_line() {
        let file = TempFile::new("# comment\n\nmax_clients 5\nper_listener_settings true\n");
        let e = load_from(args(&["--config", &file.arg()]), &no_env).unwrap_err();
        match &e {
            ConfigError::UnknownSetting {
                path,
                line,
                setting,
            } => {
                assert_eq!(path, &file.0);
                assert_eq!(*line, 4);
                assert_eq!(setting, "per_listener_settings");
            }
            other => panic!("unexpected {other:?}"),
        }
        let text = e.to_string();
        assert!(
            text.contains(&file.arg()) && text.contains("line 4"),
            "{text}"
        );
        assert!(text.contains("'per_listener_settings'"), "{text}");
        assert!(message(from_file("max-clients 5\n")).contains("did you mean 'max_clients'"));
        assert!(message(from_file("config other.conf\n")).contains("cannot be set"));
    }

    #[test]
    fn unreadable_file() {
        let path = std::env::temp_dir().join("mqtt5-broker-config-test-missing.conf");
        let e = load_from(args(&["--config", path.to_str().unwrap()]), &no_env).unwrap_err();
        assert!(matches!(e, ConfigError::ReadFile { .. }));
        assert!(std::error::Error::source(&e).is_some());
        let text = e.to_string();
        assert!(
            text.starts_with("cannot read config file") && text.contains(path.to_str().unwrap()),
            "{text}"
        );
    }

    #[test]
    fn repeated_file_setting_is_an_error() {
        let text = message(from_file("max_clients 5\nmax_clients 6\n"));
        assert!(
            text.contains("line 2") && text.contains("from line 1"),
            "{text}"
        );
    }

    /// `--tls-listen` (and the other listen settings) repeat: flags given again, a
    /// comma-separated environment variable, keys or `listener` blocks again in the file; a
    /// higher source replaces the whole list, as for any setting.
    #[test]
    fn listen_settings_repeat_in_flags_env_and_file() {
        let tls = ["--certfile", "/a.crt", "--keyfile", "/a.key"];
        let mut flags = vec![
            "--tls-listen",
            "127.0.0.1:8883",
            "--tls-listen",
            "127.0.0.1:8884,127.0.0.1:0",
            "--ws-listen",
            "9001",
            "--ws-listen",
            "127.0.0.1:0",
            "--wss-listen",
            "127.0.0.1:0",
            "--wss-listen",
            "127.0.0.1:0",
            "--listen",
            "127.0.0.1:1883",
            "--listen",
            "127.0.0.2:1883",
        ];
        flags.extend(tls);
        let c = from_flags(&flags).unwrap();
        let want_tls = addrs(&["127.0.0.1:8883", "127.0.0.1:8884", "127.0.0.1:0"]);
        assert_eq!(c.tls_listen, want_tls);
        assert_eq!(c.ws_listen, addrs(&["0.0.0.0:9001", "127.0.0.1:0"]));
        assert_eq!(c.wss_listen, addrs(&["127.0.0.1:0", "127.0.0.1:0"]));
        assert_eq!(c.listen, addrs(&["127.0.0.1:1883", "127.0.0.2:1883"]));
        let summary = c.summary();
        let shown = |name: &str| summary.iter().find(|(n, _)| *n == name).unwrap().1.clone();
        assert_eq!(
            shown("tls_listen"),
            "127.0.0.1:8883,127.0.0.1:8884,127.0.0.1:0"
        );
        assert_eq!(shown("listen"), "127.0.0.1:1883,127.0.0.2:1883");
        assert_eq!(from_flags(&[]).unwrap().summary()[2].1, "off");

        let c =
            from_env(&[("MQTT5_BROKER_WS_LISTEN", " 127.0.0.1:9001 , 127.0.0.1:9002")]).unwrap();
        assert_eq!(c.ws_listen, addrs(&["127.0.0.1:9001", "127.0.0.1:9002"]));
        let text = message(from_env(&[("MQTT5_BROKER_WS_LISTEN", "127.0.0.1:9001,x")]));
        assert!(text.contains("for ws_listen"), "{text}");

        let file = "ws_listen 127.0.0.1:9001\n\
                    ws_listen 127.0.0.1:9002\n\
                    listener 1883\n\
                    listener 1884 127.0.0.1\n\
                    listener 9003 127.0.0.1\nprotocol websockets\n\
                    listener 8883\ncertfile /a.crt\nkeyfile /a.key\n\
                    listener 8884\ncertfile /a.crt\n\
                    listener 9443\nprotocol websockets\ncertfile /a.crt\n\
                    listener 9444\nprotocol websockets\ncertfile /a.crt\n";
        let c = from_file(file).unwrap();
        assert_eq!(c.listen, addrs(&["0.0.0.0:1883", "127.0.0.1:1884"]));
        assert_eq!(
            c.ws_listen,
            addrs(&["127.0.0.1:9001", "127.0.0.1:9002", "127.0.0.1:9003"])
        );
        assert_eq!(c.tls_listen, addrs(&["0.0.0.0:8883", "0.0.0.0:8884"]));
        assert_eq!(c.wss_listen, addrs(&["0.0.0.0:9443", "0.0.0.0:9444"]));
        // `off` empties what the file gave so far; a bad value is quoted at its line.
        let c = from_file("ws_listen 127.0.0.1:9001\nws_listen off\nws_listen 9002\n").unwrap();
        assert_eq!(c.ws_listen, addrs(&["0.0.0.0:9002"]));
        let text = message(from_file("ws_listen 127.0.0.1:9001\nws_listen 9x\n"));
        assert!(
            text.contains("'9x' for ws_listen") && text.contains("line 2"),
            "{text}"
        );
        // The flag replaces the file's list.
        let f = TempFile::new("ws_listen 127.0.0.1:9001\nws_listen 127.0.0.1:9002\n");
        let c = from_flags(&["--config", &f.arg(), "--ws-listen", "127.0.0.1:9005"]).unwrap();
        assert_eq!(c.ws_listen, addrs(&["127.0.0.1:9005"]));
        // The plain listener is never off.
        assert!(message(from_flags(&["--listen", "off"])).contains("for listen"));
    }

    /// Two listeners on one address (same port, overlapping IPs) cannot both bind: refused in
    /// one line naming both, whatever their kinds; port 0 never clashes.
    #[test]
    fn two_listeners_on_one_address_are_refused() {
        let tls = ["--certfile", "/a.crt", "--keyfile", "/a.key"];
        let cases: [(&[&str], &str); 5] = [
            (
                &[
                    "--ws-listen",
                    "127.0.0.1:9001",
                    "--ws-listen",
                    "127.0.0.1:9001",
                ],
                "ws_listen has 127.0.0.1:9001 and 127.0.0.1:9001, which use the same port",
            ),
            (
                &[
                    "--tls-listen",
                    "0.0.0.0:8883",
                    "--tls-listen",
                    "127.0.0.1:8883",
                ],
                "tls_listen has 0.0.0.0:8883 and 127.0.0.1:8883, which use the same port",
            ),
            (
                &[
                    "--tls-listen",
                    "127.0.0.1:8883",
                    "--wss-listen",
                    "127.0.0.1:8883",
                ],
                "tls_listen (127.0.0.1:8883) and wss_listen (127.0.0.1:8883) use the same port",
            ),
            (
                &[
                    "--listen",
                    "127.0.0.1:1884",
                    "--ws-listen",
                    "127.0.0.1:9001,1884",
                ],
                "listen (127.0.0.1:1884) and ws_listen (0.0.0.0:1884) use the same port",
            ),
            (
                &["--listen", "1883", "--listen", "127.0.0.1:1883"],
                "listen has 0.0.0.0:1883 and 127.0.0.1:1883, which use the same port",
            ),
        ];
        for (flags, want) in cases {
            let mut args = flags.to_vec();
            args.extend(tls);
            let text = message(from_flags(&args));
            assert!(text.contains(want), "{flags:?}: {text}");
        }
        let text = message(from_file("listener 1883\nlistener 1883\n"));
        assert!(
            text.contains("listen has 0.0.0.0:1883 and 0.0.0.0:1883"),
            "{text}"
        );
        // Different addresses, or port 0 (a free port each), are fine.
        let mut args = vec![
            "--tls-listen",
            "127.0.0.1:0,127.0.0.1:0",
            "--ws-listen",
            "127.0.0.1:9001,127.0.0.2:9001",
        ];
        args.extend(tls);
        assert!(from_flags(&args).is_ok());
    }

    #[test]
    fn listener_alias() {
        let c = from_file("listener 1883\n").unwrap();
        assert_eq!(c.listen, addrs(&["0.0.0.0:1883"]));
        let c = from_file("listener 1884 127.0.0.1\n").unwrap();
        assert_eq!(c.listen, addrs(&["127.0.0.1:1884"]));
        let c = from_file("listener = 1885 ::1\n").unwrap();
        assert_eq!(c.listen, addrs(&["[::1]:1885"]));
        let c = from_file("listener 1886 [::]\n").unwrap();
        assert_eq!(c.listen, addrs(&["[::]:1886"]));
        for bad in ["abc", "1883 localhost", "1883 127.0.0.1 extra", "70000"] {
            let text = message(from_file(&format!("listener {bad}\n")));
            assert!(text.contains(&format!("'{bad}' for listener")), "{text}");
        }
    }

    /// A Mosquitto config with listener blocks: the block with a `certfile` is the TLS
    /// listener, its keys are the (shared) TLS settings.
    #[test]
    fn mosquitto_listener_blocks_set_the_plain_and_tls_listeners() {
        let c = from_file(
            "allow_anonymous false\n\
             listener 1883\n\
             protocol mqtt\n\
             listener 8883 127.0.0.1\n\
             certfile /etc/mqtt5/server.crt\n\
             keyfile /etc/mqtt5/server.key\n\
             cafile /etc/mqtt5/ca.crt\n\
             require_certificate true\n\
             use_identity_as_username true\n",
        )
        .unwrap();
        assert_eq!(c.listen, addrs(&["0.0.0.0:1883"]));
        assert_eq!(c.tls_listen, addrs(&["127.0.0.1:8883"]));
        assert_eq!(c.certfile, Some(PathBuf::from("/etc/mqtt5/server.crt")));
        assert_eq!(c.keyfile, Some(PathBuf::from("/etc/mqtt5/server.key")));
        assert_eq!(c.cafile, Some(PathBuf::from("/etc/mqtt5/ca.crt")));
        assert!(c.require_certificate && c.use_identity_as_username);
        // The TLS block first, the plain one after it: the same.
        let c =
            from_file("listener 8883\ncertfile /a.crt\nkeyfile /a.key\nlistener 1884\n").unwrap();
        assert_eq!(c.tls_listen, addrs(&["0.0.0.0:8883"]));
        assert_eq!(c.listen, addrs(&["0.0.0.0:1884"]));
    }

    /// `protocol websockets` blocks: without a `certfile` the ws listener, with one wss.
    #[test]
    fn mosquitto_websockets_blocks_set_the_ws_and_wss_listeners() {
        let c = from_file(
            "listener 1883\n\
             listener 9001 127.0.0.1\n\
             protocol websockets\n\
             listener 9443\n\
             protocol websockets\n\
             certfile /a.crt\n\
             keyfile /a.key\n",
        )
        .unwrap();
        assert_eq!(c.listen, addrs(&["0.0.0.0:1883"]));
        assert_eq!(c.ws_listen, addrs(&["127.0.0.1:9001"]));
        assert_eq!(c.wss_listen, addrs(&["0.0.0.0:9443"]));
        assert_eq!(c.tls_listen, addrs(&[]));
        assert_eq!(c.certfile, Some(PathBuf::from("/a.crt")));
    }

    #[test]
    fn listener_blocks_share_one_certificate() {
        let tls = "certfile /a.crt\nkeyfile /a.key\n";
        let c = from_file(&format!("listener 8883\n{tls}listener 8884\n{tls}")).unwrap();
        assert_eq!(c.tls_listen, addrs(&["0.0.0.0:8883", "0.0.0.0:8884"]));
        let text = message(from_file(&format!(
            "listener 8883\n{tls}listener 9001\nprotocol websockets\ncertfile /b.crt\n"
        )));
        assert!(
            text.contains("line 6") && text.contains("shares one certificate"),
            "{text}"
        );
        let text = message(from_file("protocol websockets\nlistener 9001\n"));
        assert!(
            text.contains("line 1") && text.contains("after a 'listener PORT'"),
            "{text}"
        );
        let text = message(from_file("listener 9001\nprotocol http\n"));
        assert!(text.contains("'http' for protocol"), "{text}");
        let text = message(from_file("listener 9001\nprotocol mqtt\nprotocol mqtt\n"));
        assert!(text.contains("line 3"), "{text}");
    }

    /// Mosquitto's bridge blocks: keys belong to the last `connection` line, global settings
    /// may sit between them, each block is checked when it ends.
    #[test]
    fn mosquitto_connection_blocks_are_bridges() {
        let c = from_file(
            "max_clients 5\n\
             connection garage\n\
             address 10.0.0.2:1884 10.0.0.3\n\
             topic sensors/# out 1\n\
             topic cmd/# in 2 house/ garage/\n\
             bridge_protocol_version mqttv50\n\
             allow_anonymous true\n\
             connection cloud\n\
             address = cloud.example\n\
             topic \"\" both 1 up/x down/y\n",
        )
        .unwrap();
        assert_eq!(c.max_clients, 5);
        assert!(c.allow_anonymous);
        let names: Vec<_> = c
            .bridges
            .iter()
            .map(|b| (b.name.as_str(), b.line))
            .collect();
        assert_eq!(names, vec![("garage", 2), ("cloud", 8)]);
        assert_eq!(c.bridges[0].addresses.len(), 2);
        assert_eq!(c.bridges[0].topics.len(), 2);
        assert_eq!(
            c.bridges[0].protocol,
            crate::bridge::config::BridgeProtocol::V5
        );
        assert_eq!(c.bridges[1].topics[0].local_filter(), "up/x");
    }

    #[test]
    fn bridge_errors_name_file_and_line() {
        let cases = [
            ("address h\n", "line 1", "belongs to a bridge"),
            (
                "connection a\naddress h\ntopic t\nround_robin true\n",
                "line 4",
                "'round_robin' is not supported",
            ),
            (
                "connection a\naddress h\ntopic t\nlocal_username u\n",
                "line 4",
                "not supported",
            ),
            (
                "connection a\naddress h\ntopic t in 7\n",
                "line 3",
                "QoS is 0, 1 or 2",
            ),
            ("connection a\naddress h\n", "line 1", "no 'topic'"),
            (
                "connection a\naddress h\ntopic t\nconnection a\naddress g\ntopic t\n",
                "line 4",
                "repeats the connection from line 1",
            ),
            ("connection a/b\n", "line 1", "invalid bridge name"),
            (
                "connection a\naddress h\ntopic t\nbridge_capath /etc/ssl\n",
                "line 4",
                "not supported",
            ),
        ];
        for (text, line, why) in cases {
            let e = message(from_file(text));
            assert!(e.contains(line) && e.contains(why), "{text:?}: {e}");
        }
    }

    #[test]
    fn listen_accepts_bare_port_and_port_zero() {
        assert_eq!(
            from_flags(&["--listen", "1999"]).unwrap().listen,
            addrs(&["0.0.0.0:1999"])
        );
        let c = from_flags(&["--listen", "127.0.0.1:0", "--web-listen", "127.0.0.1:0"]).unwrap();
        assert_eq!(c.listen[0].port(), 0);
    }

    #[test]
    fn same_port_for_both_listeners_is_a_conflict() {
        let e = from_flags(&["--listen", "0.0.0.0:8082"]).unwrap_err();
        assert!(matches!(e, ConfigError::Conflict(_)));
        assert!(e.to_string().contains("web_listen"));
        // Different addresses on the same port are fine.
        from_flags(&[
            "--listen",
            "127.0.0.1:9000",
            "--web-listen",
            "127.0.0.2:9000",
        ])
        .unwrap();
    }

    #[test]
    fn web_https_settings_go_together() {
        let c = from_flags(&["--web-certfile", "c.pem", "--web-keyfile", "k.pem"]).unwrap();
        assert_eq!(c.web_certfile, Some(PathBuf::from("c.pem")));
        assert_eq!(c.web_keyfile, Some(PathBuf::from("k.pem")));
        for alone in [
            &["--web-certfile", "c.pem"][..],
            &["--web-keyfile", "k.pem"][..],
        ] {
            let e = from_flags(alone).unwrap_err();
            assert!(matches!(e, ConfigError::Conflict(_)), "{e:?}");
            assert!(e.to_string().contains("go together"), "{e}");
        }
        let c = from_file("certfile s.crt\nkeyfile s.key\nweb_tls_from_mqtt true\n").unwrap();
        assert!(c.web_tls_from_mqtt && c.certfile == Some(PathBuf::from("s.crt")));
        let c = from_env(&[
            ("MQTT5_BROKER_CERTFILE", "s.crt"),
            ("MQTT5_BROKER_KEYFILE", "s.key"),
            ("MQTT5_BROKER_WEB_TLS_FROM_MQTT", "yes"),
        ])
        .unwrap();
        assert!(c.web_tls_from_mqtt);
        let e = from_flags(&["--web-tls-from-mqtt"]).unwrap_err();
        assert!(e.to_string().contains("needs certfile and keyfile"), "{e}");
        let e = from_flags(&[
            "--web-tls-from-mqtt",
            "--certfile",
            "s.crt",
            "--keyfile",
            "s.key",
            "--web-certfile",
            "c.pem",
            "--web-keyfile",
            "k.pem",
        ])
        .unwrap_err();
        assert!(e.to_string().contains("one or the other"), "{e}");
        // `none` unsets a file set by a lower source.
        let c = load_from(
            args(&["--web-certfile", "none", "--web-keyfile", "NONE"]),
            &env_of(&[
                ("MQTT5_BROKER_WEB_CERTFILE", "c.pem"),
                ("MQTT5_BROKER_WEB_KEYFILE", "k.pem"),
            ]),
        )
        .unwrap();
        assert_eq!((c.web_certfile, c.web_keyfile), (None, None));
        assert_eq!(
            from_flags(&["--certfile", "./none", "--keyfile", "k"])
                .unwrap()
                .certfile,
            Some(PathBuf::from("./none"))
        );
    }

    #[test]
    fn bool_spellings() {
        for (text, want) in [
            ("true", true),
            ("TRUE", true),
            ("yes", true),
            ("Yes", true),
            ("on", true),
            ("ON", true),
            ("1", true),
            ("false", false),
            ("False", false),
            ("no", false),
            ("NO", false),
            ("off", false),
            ("Off", false),
            ("0", false),
        ] {
            let c = from_env(&[("MQTT5_BROKER_RETAIN_AVAILABLE", text)]).unwrap();
            assert_eq!(c.retain_available, want, "{text}");
            let c = from_file(&format!("allow_anonymous {text}\n")).unwrap();
            assert_eq!(c.allow_anonymous, want, "{text}");
            let c = from_flags(&["--queue-qos0-messages", text]).unwrap();
            assert_eq!(c.queue_qos0_messages, want, "{text}");
        }
    }

    #[test]
    fn bool_flag_forms() {
        let c = from_flags(&["--allow-anonymous"]).unwrap();
        assert!(c.allow_anonymous);
        let env = env_of(&[("MQTT5_BROKER_ALLOW_ANONYMOUS", "true")]);
        let c = load_from(args(&["--allow-anonymous=false"]), &env).unwrap();
        assert!(!c.allow_anonymous);
        // A bare boolean flag followed by another flag means true.
        let c = from_flags(&["--queue-qos0-messages", "--retain-available", "off"]).unwrap();
        assert!(c.queue_qos0_messages && !c.retain_available);
        let c = from_flags(&["--outbound-topic-aliases=no"]).unwrap();
        assert!(!c.outbound_topic_aliases);
    }

    #[test]
    fn duration_parsing() {
        let cases = [
            ("90", 90),
            ("90s", 90),
            ("2h", 7200),
            ("1d", 86_400),
            ("1w", 604_800),
            ("1m", 30 * 86_400),
            ("1y", 365 * 86_400),
            ("3H", 3 * 3600),
            ("4294967294", 4_294_967_294),
        ];
        for (text, secs) in cases {
            assert_eq!(
                parse_expiration(text),
                Some(Some(Duration::from_secs(secs))),
                "{text}"
            );
            let c = from_flags(&["--persistent-client-expiration", text]).unwrap();
            assert_eq!(
                c.persistent_client_expiration,
                Some(Duration::from_secs(secs))
            );
        }
        assert_eq!(parse_expiration("never"), Some(None));
        assert_eq!(parse_expiration("4294967295"), None);
        // "never" lets a higher source undo a lower one.
        let c = load_from(
            args(&["--persistent-client-expiration", "never"]),
            &env_of(&[("MQTT5_BROKER_PERSISTENT_CLIENT_EXPIRATION", "1d")]),
        )
        .unwrap();
        assert_eq!(c.persistent_client_expiration, None);
        let c = from_file("connect_timeout 5\nsys_interval 60\n").unwrap();
        assert_eq!(c.connect_timeout, Duration::from_secs(5));
        assert_eq!(c.sys_interval, Duration::from_secs(60));
    }

    #[test]
    fn help_version_and_usage_errors_are_returned() {
        let e = from_flags(&["--help"]).unwrap_err();
        match &e {
            ConfigError::Help(text) => {
                assert!(text.contains("Usage: mqtt5-broker"), "{text}");
                assert!(text.contains("--max-clients"), "{text}");
            }
            other => panic!("unexpected {other:?}"),
        }
        assert!(matches!(
            from_flags(&["--version"]),
            Err(ConfigError::Help(_))
        ));
        let e = from_flags(&["--no-such-flag"]).unwrap_err();
        let text = e.to_string();
        assert!(matches!(e, ConfigError::Usage(_)));
        assert!(
            text.contains("--no-such-flag") && !text.contains('\n'),
            "{text}"
        );
        assert!(!text.starts_with("error:"), "{text}");
        assert!(matches!(
            from_flags(&["--max-clients"]),
            Err(ConfigError::Usage(_))
        ));
    }

    #[test]
    fn help_lists_every_setting_with_default_and_env() {
        let command = cli();
        for (name, default) in Config::default().summary() {
            let long = name.replace('_', "-");
            let secret = name == "admin_password";
            let arg = command
                .get_arguments()
                .find(|a| a.get_long() == Some(long.as_str()))
                .unwrap_or_else(|| panic!("no flag --{long}"));
            let help = arg.get_help().map(ToString::to_string).unwrap_or_default();
            assert!(
                secret || help.contains(&format!("[default: {default}]")),
                "--{long}: {help}"
            );
            assert!(
                help.contains(&format!("[env: {}]", env_var_name(name))),
                "--{long}: {help}"
            );
        }
    }

    #[test]
    fn run_subcommand_and_global_flags() {
        let (command, _) = parse(args(&[]), &no_env).unwrap();
        assert_eq!(command, Command::Run);
        let (command, c) = parse(args(&["run", "--max-clients", "7"]), &no_env).unwrap();
        assert_eq!((command, c.max_clients), (Command::Run, 7));
        let c = from_flags(&["--max-clients", "8", "run"]).unwrap();
        assert_eq!(c.max_clients, 8);
        let (command, c) =
            parse(args(&["ban", "username", "eve", "--db", "x.db"]), &no_env).unwrap();
        let ban = Command::Ban {
            kind: BanKind::Username,
            value: "eve".to_string(),
        };
        assert_eq!((command, c.db), (ban, PathBuf::from("x.db")));
    }

    #[test]
    fn summary_lists_every_setting_and_round_trips() {
        let (values, config) = sample();
        let summary = config.summary();
        let names: Vec<&str> = summary.iter().map(|(n, _)| *n).collect();
        let sample_names: Vec<&str> = values.iter().map(|(n, _)| *n).collect();
        assert_eq!(names, sample_names);
        assert_eq!(summary.len(), values.len());
        // The admin password is shown masked, so it does not round-trip.
        let public = |(n, _): &&(&str, String)| *n != "admin_password";
        let text: String = summary
            .iter()
            .filter(public)
            .map(|(n, v)| format!("{n} {v}\n"))
            .collect();
        let secret = Config {
            admin_password: None,
            ..config
        };
        assert_eq!(from_file(&text).unwrap(), secret);
        let text: String = Config::default()
            .summary()
            .iter()
            .filter(public)
            .map(|(n, v)| format!("{n} = {v}\n"))
            .collect();
        assert_eq!(from_file(&text).unwrap(), Config::default());
        assert_eq!(format_expiration(Duration::from_secs(90)), "90s");
        assert_eq!(format_expiration(Duration::from_secs(7200)), "2h");
        assert_eq!(format_expiration(Duration::from_secs(14 * 86_400)), "2w");
    }

    /// README.md's settings table, one row per [`SETTINGS`] entry.
    fn readme_table() -> String {
        let defaults = Config::default();
        let mut table =
            String::from("| setting (file / flag) | default | meaning |\n|---|---|---|\n");
        for s in SETTINGS {
            let meaning: Vec<&str> = s.doc.iter().map(|line| line.trim()).collect();
            table += &format!(
                "| `{}` / `{}` | `{}` | {} |\n",
                s.name,
                s.flag(),
                (s.show)(&defaults),
                meaning.join(" ")
            );
        }
        table
    }

    #[test]
    fn readme_settings_table_is_the_settings_table() {
        const BEGIN: &str =
            "<!-- settings table: made from src/config.rs's settings! (see its test) -->\n";
        let readme = include_str!("../README.md");
        let start = readme
            .find(BEGIN)
            .expect("README.md has the settings table marker")
            + BEGIN.len();
        let len = readme[start..]
            .find("\n\n")
            .expect("a blank line after the table")
            + 1;
        let table = readme_table();
        assert!(
            readme[start..start + len] == table,
            "README.md's settings table is not src/config.rs's; replace it with:\n{table}"
        );
    }

    #[test]
    fn error_values_are_printable_on_one_line() {
        let text = message(from_env(&[("MQTT5_BROKER_MAX_CLIENTS", "1\n2")]));
        assert!(!text.contains('\n') && text.contains("1\\n2"), "{text}");
        let long = "9".repeat(500);
        let text = message(from_env(&[("MQTT5_BROKER_MAX_CLIENTS", &long)]));
        assert!(text.len() < 300, "{text}");
    }
}
